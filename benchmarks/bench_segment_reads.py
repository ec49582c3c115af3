"""What a lapped consumer's reads from the segment files cost, in one process: the
path issue 13's profile found under bench_peers' consumer, without a producer and a
spill competing for the two cores (which makes bench_peers' rows swing by 2x here).

A PartitionLog fills a topic of `--mib` MiB (16 MiB ring, 1 GiB segments: the
defaults) and spills all of it before the clock starts. A PartitionReader (what a
consumer in another process opens: read-only segments), which opened the segment
when it held a 16th of that (its index a snapshot, as at a consumer's first lap),
reads it from offset 0 with a LogReader, every read from the segments, as a
consumer the producer lapped does. Rows, at 100 B, 4 KiB and 64 KiB values (1000,
256, 16 a batch, as bench_peers): `read_batches` (raw batches, copied out),
`poll_columns` (columns, CRCs checked), and `read_batches` right after a seek to
each of 16 offsets spread over the log (a lap: no position, so the index lookup
and the scan). Reads of at most `--max-bytes` (the LogReader's 1 MiB: a lapped
consumer reads that much). Each row is the CPU ns per record and per read of this
process (CPU, not wall: other work on the machine shows less in it). The files are
in the page cache (just written): page-cache copies, not disk. Left out: the
producer, the spill, other processes, keys, headers. `--before DIR` runs the same
rows against the shmbroker package in DIR (an export of an older commit, its C
core built in place); each side runs in a fresh interpreter, round by round, who
goes first alternating: the baseline in the same run.

    .venv/bin/python benchmarks/bench_segment_reads.py --before /tmp/old   # ~1 min
    .venv/bin/python benchmarks/bench_segment_reads.py --smoke             # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SIZES = {100: 1000, 4096: 256, 65536: 16}  # value bytes: values a batch
MiB = 1 << 20
LAPS = 16  # seeks a row, evenly spread over the log


def fill(log: Any, values: list[bytes], until: int) -> None:
    """Append values until the log holds offsets below until, all spilled."""
    while log.ring.high_watermark() < until:
        log.ring.append_batch(values, timeout=30)
    deadline = time.monotonic() + 60
    while log.spilled_offset() < until:
        if time.monotonic() > deadline:
            raise RuntimeError(f"spilled {log.spilled_offset()} of {until}")
        time.sleep(0.01)


def rows_here(mib: int, max_bytes: int) -> dict[str, float]:
    """Every row once, with the shmbroker this interpreter imports."""
    from shmbroker import shm
    from shmbroker.config import TopicConfig
    from shmbroker.log.partition import PartitionLog
    from shmbroker.log.reader import LogReader, PartitionReader

    out: dict[str, float] = {}
    for size, batch in SIZES.items():
        values = [i.to_bytes(4, "little") + b"x" * (size - 4) for i in range(batch)]
        n = max(batch, mib * MiB // size // batch * batch)
        ring_name = f"shmb.bench.segreads.{uuid.uuid4().hex[:12]}"
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / "t-0"
            log = PartitionLog.open(
                directory, ring_name, TopicConfig(), topic="t", partition=0
            )
            try:
                log.start()
                # the reader opens the segment while it is short, as a consumer does
                # at its first lap: its offset index is a snapshot from then
                fill(log, values, n // 16 // batch * batch or batch)
                view = PartitionReader.open(
                    directory, ring_name, topic="t", partition=0
                )
                LogReader(view, 0).read_batches(0)
                fill(log, values, n)
                try:
                    for row in ("read_batches", "poll_columns"):
                        reader = LogReader(view, 0, max_bytes=max_bytes)
                        reads = count = 0
                        t0 = time.process_time_ns()
                        while reader.offset < n:
                            if row == "read_batches":
                                got = len(reader.read_batches(0)) > 0
                            else:
                                columns = reader.poll_columns(0)
                                got = columns is not None and len(columns) > 0
                                count += len(columns) if columns is not None else 0
                            if not got:
                                raise RuntimeError(f"{row}: nothing at {reader.offset}")
                            reads += 1
                        ns = time.process_time_ns() - t0
                        if row == "poll_columns" and count != n:
                            raise RuntimeError(f"poll_columns: {count} of {n}")
                        out[f"{size}/{row}/record"] = ns / n
                        out[f"{size}/{row}/read"] = ns / reads
                        out[f"{size}/{row}/reads"] = reads
                    # a lap: the reader goes on at an offset it has no position for
                    reader, ns = LogReader(view, 0, max_bytes=max_bytes), 0
                    for k in range(LAPS):
                        reader.seek(n * k // LAPS)
                        t0 = time.process_time_ns()
                        if not reader.read_batches(0):
                            raise RuntimeError(
                                f"after a seek: nothing at {reader.offset}"
                            )
                        ns += time.process_time_ns() - t0
                    out[f"{size}/after a seek/read"] = ns / LAPS
                finally:
                    view.close()
            finally:
                log.close()
                shm.unlink(ring_name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, help="MiB of values a size (default 256)")
    ap.add_argument(
        "--max-bytes", type=int, default=MiB, help="a read's max_bytes (1 MiB)"
    )
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median (5)")
    ap.add_argument("--before", help="also run the rows on the shmbroker in DIR")
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument("--smoke", action="store_true", help="a few seconds")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mib = args.mib or (24 if args.smoke else 256)
    if args.child:
        print(json.dumps(rows_here(mib, args.max_bytes)))
        return 0
    from bench_ring import header
    from machine import alternate, publish, run_child

    rounds = 1 if args.smoke else args.rounds
    sizes = [f"--mib={mib}", f"--max-bytes={args.max_bytes}"]
    after, before, runs = alternate(
        rounds,
        lambda: dict(run_child(__file__, sizes)),
        (lambda: dict(run_child(__file__, sizes, args.before)))
        if args.before
        else None,
    )
    result = {
        "header": header(),
        "mib": mib,
        "max_bytes": args.max_bytes,
        "rounds": rounds,
        "after": after,
        "before": before,
        "before_package": args.before,
        "runs": runs,
    }

    def report() -> None:
        print("bench_segment_reads: a lapped consumer's reads from the segments,")
        print("one process, CPU ns (per record; per read)")
        for k, v in result["header"].items():
            print(f"  {k:16} {v}")
        print(f"\n  median of {rounds} rounds, {mib} MiB of values a size, reads")
        print(f"  of at most {args.max_bytes:,} bytes (one batch whole if larger)")
        if args.before:
            print(f"  before: the shmbroker in {args.before}")
        print(f"  {'size':>6} {'row':13} {'reads':>6} {'ns/record':>10} {'before':>8}"
              f" {'us/read':>8} {'before':>8} {'ratio':>6}")  # fmt: skip
        a, b = result["after"], result["before"]
        for size in SIZES:
            for row in ("read_batches", "poll_columns"):
                key = f"{size}/{row}"
                ns, us = a[f"{key}/record"], a[f"{key}/read"] / 1000
                old, old_read = b.get(f"{key}/record"), b.get(f"{key}/read")
                was = "" if old is None else f"{old:.1f}"
                was_read = "" if old_read is None else f"{old_read / 1000:.1f}"
                ratio = "" if old is None else f"{old / ns:.2f}x"
                reads = a[f"{key}/reads"]
                print(f"  {size:>6} {row:13} {reads:>6.0f} {ns:>10.1f} {was:>8}"
                      f" {us:>8.1f} {was_read:>8} {ratio:>6}")  # fmt: skip
            key = f"{size}/after a seek/read"
            us, old = a[key] / 1000, b.get(key)
            was = "" if old is None else f"{old / 1000:.1f}"
            ratio = "" if old is None else f"{old / a[key]:.2f}x"
            print(f"  {size:>6} {'after a seek':13} {LAPS:>6} {'':>10} {'':>8}"
                  f" {us:>8.1f} {was:>8} {ratio:>6}")  # fmt: skip

    publish("bench_segment_reads", result, smoke=args.smoke, as_json=args.json,
            print_report=report)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
