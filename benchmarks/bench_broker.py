"""End to end through a topic: a Producer process -> a topic of a running broker ->
a Consumer process, next to `multiprocessing.Queue` in the same run.

A real supervisor runs (`EmbeddedBroker`: `shmbroker serve` on a temp dir), and its
spill thread writes the topic's ring to segment files while the records flow. Each
run gets a fresh 1-partition topic with the defaults (16 MiB ring, 1 GiB segments,
flush.ms 1000), created before the clock starts and deleted afterwards.

Measured, with `--size` byte values (default 100):
  1. per-record: `Producer.send(topic, value)` `--records` times, then `flush()`, with
     the producer's defaults (batch_records 1000, batch_size 1 MiB, linger_ms 5,
     acks=1); the consumer process calls `Consumer.poll_batch()` (its default
     max_poll_records, 500) until it holds all the records. Records/s = records /
     (first send -> the consumer holding the last record).
  2. batch: `Producer.send_batch(topic, values, partition=0)` with 1000 values per
     call; the consumer as in 1. Shown, not judged: the same producer with a
     consumer calling `Consumer.read_batches()` (raw batches, no `Record` built;
     records counted from the batch headers): what the transport carries when no
     Python object is made per record.
  3. baseline: `multiprocessing.Queue` put/get of one value, and of lists of 1000
     distinct values, between two processes: the same record count and size, the
     same worker code as bench_ring.py.
  4. topic creation: `Admin.create_topic` of a 1-partition topic, `--creations`
     times in a row (wall time of the call: the request, the supervisor creating
     the ring, the directory, the first segment and the registry, the reply);
     median and max.
  5. `seq 1 N | shmbroker produce --topic T --data-dir D`: lines/s over the whole
     pipeline, both processes' start-up included (the start-up alone, a 1-line run,
     is shown too), when the CLI has a `produce` command.
Rows 1-3 are the median of `--repeat` runs, run round-robin, with the range.
Producer and consumer are pinned to one core each when there are two (as in
bench_ring.py); the supervisor is not pinned, so its spill thread competes with them
for the two cores, as it would in use. Each ring row also records: the producer's
own rate (first to last send), CPU seconds of producer, consumer and supervisor,
full-ring waits, how many polls the consumer served from the segment files (the ring
waits for the spill, never for readers: a producer that laps the consumer sends it to
the segments), and how long after the last record was consumed the segments held it
(spill lag). A row during which other processes used > 10% of the cores is
marked '*'.

Left out: keys, headers, acks=all (no fsync is awaited; the supervisor fsyncs every
flush.ms), more than one partition, producer or consumer, and process start-up
(except in 5). Throughput counts value bytes only (MB = 1e6 B). Raw results go to
benchmarks/results/ (git-ignored); `--json` prints them instead of the tables.

    .venv/bin/python benchmarks/bench_broker.py            # full run, ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_broker.py --smoke    # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from bench_ring import (
    CLOCK,
    _values,
    header,
    queue_consume,
    queue_produce,
    run_pair,
)
from machine import fmt_size, publish

from shmbroker import _native
from shmbroker.client.admin import Admin
from shmbroker.client.consumer import Consumer
from shmbroker.client.producer import Producer
from shmbroker.config import TopicConfig
from shmbroker.embedded import EmbeddedBroker
from shmbroker.records import TopicPartition
from shmbroker.ring import Ring

ROOT = Path(__file__).resolve().parent.parent
SHM_PREFIX = "shmb.bench."
BATCH = 1000  # records per send_batch call, and per Queue list
DEFAULT_RECORDS = 1_000_000
SMOKE_RECORDS = 20_000
STALL_S = 20.0  # a consumer that sees nothing this long reports the run as hung
SPILL_WAIT_S = 60.0  # longest wait for the segments to hold the last record
OTHER_CPU_WARN = 0.10  # share of the cores other processes used during a run

# Targets, checked below and printed PASS/MISS (records of 100 B).
TARGET_PER_RECORD_RPS = 2e6  # Producer.send -> Consumer.poll_batch
TARGET_BATCH_RPS = 10e6  # Producer.send_batch x1000 -> Consumer.poll_batch
TARGET_CREATE_S = 0.050  # Admin.create_topic, 1 partition: median and max
TARGET_CLI_LPS = 1e6  # seq 1 N | shmbroker produce


# ---- producer and consumer processes ------------------------------------------------


def broker_produce(
    barrier: Any, data_dir: str, topic: str, api: str, size: int, n: int, batch: int
) -> dict[str, Any]:
    producer = Producer(data_dir)
    producer.partitions_for(topic)  # attach to the ring before the clock starts
    values = _values(size, batch)
    value = values[0]
    barrier.wait()
    t0 = CLOCK()
    if api == "send":
        send = producer.send
        for _ in range(n):
            send(topic, value)
        producer.flush()
    else:
        send_batch = producer.send_batch
        for _ in range(n // batch):
            send_batch(topic, values, partition=0)
    t1 = CLOCK()
    # the same ring, opened again, for its counters
    ring = Ring.open(producer.connection.ring_name(producer.connection.topic(topic), 0))
    full_waits = ring.stat().full_waits
    ring.close()
    producer.close()
    return {"start_ns": t0, "sent_ns": t1, "full_waits": full_waits}


def broker_consume(
    barrier: Any, data_dir: str, topic: str, size: int, n: int
) -> dict[str, Any]:
    consumer = Consumer(data_dir, auto_offset_reset="earliest")
    consumer.assign([(topic, 0)])
    poll_batch = consumer.poll_batch
    count = polls = segment_polls = 0
    last = None
    barrier.wait()
    while count < n:
        records = poll_batch(None, STALL_S)
        if not records:
            raise RuntimeError(f"no records for {STALL_S}s after {count} of {n}")
        count += len(records)
        polls += 1
        segment_polls += _on_segments(consumer)
        last = records[-1]
    t1 = CLOCK()
    if last is None or last.offset != n - 1 or len(last.value or b"") != size:
        raise RuntimeError(f"got {count} records, last {last!r:.200}; want {n}")
    consumer.close()
    return {
        "end_ns": t1,
        "count": count,
        "polls": polls,
        "segment_polls": segment_polls,
    }


def broker_consume_raw(
    barrier: Any, data_dir: str, topic: str, size: int, n: int
) -> dict[str, Any]:
    """Consumer.read_batches: raw batches, no Record built; records counted from
    the batch headers (shmb_batches_scan)."""
    consumer = Consumer(data_dir, auto_offset_reset="earliest")
    consumer.assign([(topic, 0)])
    read_batches, scan = consumer.read_batches, _native.Scan().scan
    fields = _native.SCAN_FIELDS  # position, bytes, base, last offset, ts, count
    count = polls = segment_polls = 0
    last = -1
    barrier.wait()
    while last < n - 1:
        got = read_batches(STALL_S)
        if got is None:
            raise RuntimeError(f"no batches for {STALL_S}s after {count} of {n}")
        rows = scan(got[1], 0, len(got[1]))
        count += sum(rows[5::fields])
        last = rows[-fields + 3]
        polls += 1
        segment_polls += _on_segments(consumer)
    t1 = CLOCK()
    if count != n or last != n - 1:
        raise RuntimeError(f"got {count} records, last offset {last}; want {n}")
    consumer.close()
    return {
        "end_ns": t1,
        "count": count,
        "polls": polls,
        "segment_polls": segment_polls,
    }


def _on_segments(consumer: Consumer) -> bool:
    """Whether the consumer now reads the segment files, not the ring: the producer
    lapped it (the ring waits for the spill, never for readers), so it reads what
    was spilled. Private state, read for this report only; False if it moved."""
    try:
        reader = next(iter(consumer._assigned.values())).log_reader
        return reader is not None and reader._ring_reader is None
    except (AttributeError, StopIteration):
        return False


# ---- runs ---------------------------------------------------------------------------


class Bench:
    """The broker, an Admin on it, and a counter for fresh topic names."""

    def __init__(self, broker: EmbeddedBroker, ctx: Any, timeout: float) -> None:
        self.broker = broker
        self.data_dir = str(broker.data_dir)
        self.admin = Admin(self.data_dir, client_id="bench")
        self.supervisor = psutil.Process(broker.pid)
        self.ctx = ctx
        self.timeout = timeout
        self.topics = 0

    def topic(self, what: str) -> str:
        self.topics += 1
        return f"bench-{what}-{self.topics}"

    def supervisor_cpu_s(self) -> float:
        t = self.supervisor.cpu_times()
        return float(t.user + t.system)

    def wait_spilled(self, topic: str, n: int) -> dict[str, Any]:
        """Until the segments hold all n records; the partition's description. Polled
        every 2 ms over the control socket: the spill lag is good to a few ms."""
        deadline = time.monotonic() + SPILL_WAIT_S
        while True:
            desc = self.admin.describe_topics([topic])[0].partitions[0]
            if desc.log_end_offset >= n or time.monotonic() > deadline:
                return {
                    "spilled_ns": CLOCK(),
                    "log_end_offset": desc.log_end_offset,
                    "disk_bytes": desc.disk_bytes,
                    "segments": desc.segments,
                    "spill_error": desc.spill_error,
                }
            time.sleep(0.002)

    def ring_run(self, api: str, size: int, n: int) -> dict[str, Any]:
        topic = self.topic(api.replace("_", "-"))
        self.admin.create_topic(topic, 1)
        try:
            cpu0 = self.supervisor_cpu_s()
            p, c = run_pair(
                self.ctx,
                broker_produce,
                (self.data_dir, topic, api, size, n, BATCH),
                broker_consume_raw if api == "send_batch_raw" else broker_consume,
                (self.data_dir, topic, size, n),
                self.timeout,
            )
            cpu1 = self.supervisor_cpu_s()  # before waiting: what the run cost it
            spill = self.wait_spilled(topic, n)
        finally:
            self.admin.delete_topic(topic)
        if spill["log_end_offset"] < n:
            raise RuntimeError(
                f"{topic}: segments hold {spill['log_end_offset']} of {n} records "
                f"{SPILL_WAIT_S:.0f}s after the run (spill error: "
                f"{spill['spill_error']})"
            )
        seconds = (c["end_ns"] - p["start_ns"]) / 1e9
        return {
            "kind": "broker",
            "api": api,
            "size": size,
            "batch": 1 if api == "send" else BATCH,
            "records": n,
            "seconds": seconds,
            "records_per_s": n / seconds,
            "bytes_per_s": n * size / seconds,
            "producer_records_per_s": n / ((p["sent_ns"] - p["start_ns"]) / 1e9),
            "spill_lag_s": max(0.0, (spill["spilled_ns"] - c["end_ns"]) / 1e9),
            "segment_bytes": spill["disk_bytes"],
            "segments": spill["segments"],
            "full_waits": p["full_waits"],
            "polls": c["polls"],
            "segment_polls": c["segment_polls"],
            "other_cpu": round(c["other_cpu"], 3),
            "wall_s": round(c["wall_s"], 3),
            "producer_cpu_s": round(p["cpu_s"], 3),
            "consumer_cpu_s": round(c["cpu_s"], 3),
            "supervisor_cpu_s": round(cpu1 - cpu0, 3),
            "producer_minor_faults": p["minor_faults"],
            "consumer_minor_faults": c["minor_faults"],
        }

    def queue_run(self, api: str, size: int, n: int) -> dict[str, Any]:
        batch = BATCH if api == "put_list" else 1
        # as much buffering as a topic's ring has, as in bench_ring.py
        q = self.ctx.Queue(maxsize=max(2, TopicConfig().ring_bytes // (size * batch)))
        p, c = run_pair(
            self.ctx,
            queue_produce,
            (q, size, n, batch),
            queue_consume,
            (q, size, n, batch),
            self.timeout,
        )
        seconds = (c["end_ns"] - p["start_ns"]) / 1e9
        return {
            "kind": "queue",
            "api": api,
            "size": size,
            "batch": batch,
            "records": n,
            "seconds": seconds,
            "records_per_s": n / seconds,
            "bytes_per_s": n * size / seconds,
            "producer_records_per_s": n / ((p["sent_ns"] - p["start_ns"]) / 1e9),
            "other_cpu": round(c["other_cpu"], 3),
            "wall_s": round(c["wall_s"], 3),
            "producer_cpu_s": round(p["cpu_s"], 3),
            "consumer_cpu_s": round(c["cpu_s"], 3),
        }

    def create_topics(self, count: int) -> dict[str, Any]:
        names = [self.topic("create") for _ in range(count)]
        seconds = []
        try:
            for name in names:
                t0 = time.perf_counter()
                self.admin.create_topic(name, 1)
                seconds.append(time.perf_counter() - t0)
        finally:
            deleted = []
            for name in names[: len(seconds)]:
                t0 = time.perf_counter()
                self.admin.delete_topic(name)
                deleted.append(time.perf_counter() - t0)
        return {
            "creations": count,
            "median_s": statistics.median(seconds),
            "max_s": max(seconds),
            "min_s": min(seconds),
            "seconds": [round(s, 6) for s in seconds],
            "delete_median_s": statistics.median(deleted),
        }

    def cli_produce(self, n: int) -> dict[str, Any] | None:
        """`seq 1 n | shmbroker produce`, if the CLI has that command; and the same
        with one line, for the start-up."""
        exe = shutil.which("shmbroker", path=str(Path(sys.executable).parent))
        cmd = [exe] if exe else [sys.executable, "-m", "shmbroker"]
        probe = subprocess.run(
            [*cmd, "produce", "--help"], capture_output=True, timeout=60
        )
        if probe.returncode != 0:
            return None

        def once(lines: int) -> float:
            topic = self.topic("cli")
            self.admin.create_topic(topic, 1)
            try:
                t0 = time.perf_counter()
                seq = subprocess.Popen(["seq", "1", str(lines)], stdout=subprocess.PIPE)
                try:
                    done = subprocess.run(
                        [
                            *cmd,
                            "produce",
                            "--topic",
                            topic,
                            "--data-dir",
                            self.data_dir,
                        ],
                        stdin=seq.stdout,
                        capture_output=True,
                        timeout=self.timeout,
                    )
                finally:
                    assert seq.stdout is not None
                    seq.stdout.close()
                    seq.wait()
                seconds = time.perf_counter() - t0
                if done.returncode != 0:
                    raise RuntimeError(
                        f"shmbroker produce exited with {done.returncode}: "
                        f"{done.stderr.decode(errors='replace')[-2000:]}"
                    )
                key = TopicPartition(topic, 0)
                end = self.admin.list_offsets({key: "latest"})[key]
                if end != lines:
                    raise RuntimeError(f"{topic}: {end} records, want {lines}")
            finally:
                self.admin.delete_topic(topic)
            return seconds

        startup = once(1)
        seconds = once(n)
        return {
            "lines": n,
            "seconds": seconds,
            "lines_per_s": n / seconds,
            "startup_s": startup,
            "lines_per_s_after_startup": n / max(seconds - startup, 1e-9),
        }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["records_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs_records_per_s"] = [round(r["records_per_s"]) for r in runs]
    return row


# ---- report -------------------------------------------------------------------------

LABELS = {
    "send": "Producer.send -> poll_batch",
    "send_batch": f"Producer.send_batch x{BATCH} -> poll_batch",
    "send_batch_raw": "  same -> read_batches (raw, not judged)",
    "put": "Queue put/get",
    "put_list": f"Queue put/get list x{BATCH}",
}
# each ring row's Queue row, and which --only group a row belongs to
BASELINE = {"send": "put", "send_batch": "put_list", "send_batch_raw": "put_list"}
GROUP = {"put": "send", "put_list": "send_batch", "send_batch_raw": "send_batch"}


def targets(
    rows: list[dict[str, Any]],
    create: dict[str, Any] | None,
    cli: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    out = []

    def check(what: str, got: float, want: float, unit: str, higher: bool) -> None:
        out.append(
            {
                "target": what,
                "got": got,
                "want": want,
                "unit": unit,
                "higher_is_better": higher,
                "pass": got >= want if higher else got < want,
                "ratio": got / want,
            }
        )

    for api, want in (
        ("send", TARGET_PER_RECORD_RPS),
        ("send_batch", TARGET_BATCH_RPS),
    ):
        row = next((r for r in rows if r["api"] == api and r["size"] == 100), None)
        if row:
            check(f"{LABELS[api]}, 100 B", row["records_per_s"], want, "rec/s", True)
    if create:
        check("create_topic, 1 partition: median", create["median_s"],
              TARGET_CREATE_S, "s", False)  # fmt: skip
        check("create_topic, 1 partition: max", create["max_s"],
              TARGET_CREATE_S, "s", False)  # fmt: skip
    if cli:
        check("seq | shmbroker produce", cli["lines_per_s"], TARGET_CLI_LPS,
              "lines/s", True)  # fmt: skip
    return out


def _range(row: dict[str, Any]) -> str:
    runs = row.get("runs_records_per_s") or []
    return f"{min(runs):,}..{max(runs):,}" if len(runs) > 1 else ""


def _flag(row: dict[str, Any]) -> str:
    long_enough = row.get("wall_s", 0) >= 0.5  # /proc/stat ticks are 10 ms
    return " *" if long_enough and row.get("other_cpu", 0) > OTHER_CPU_WARN else ""


def print_report(result: dict[str, Any]) -> None:
    head, rows = result["header"], result["throughput"]
    print("bench_broker: Producer process -> topic (supervisor spilling) -> Consumer")
    for k, v in head.items():
        print(f"  {k:16} {v}")
    if head["cpu_busy_before"] > OTHER_CPU_WARN:
        print(
            f"  WARNING: {head['cpu_busy_before']:.0%} of the CPUs were busy before "
            f"the run; other processes skew these figures"
        )
    print()
    print(
        "throughput, median of the runs (first send -> consumer holds the last record; "
        "value bytes, MB = 1e6 B; range = slowest..fastest run, records/s)"
    )
    print(
        f"  {'size':>5}  {'api':40} {'records':>9} {'s':>6} {'records/s':>12} "
        f"{'MB/s':>6} {'vs Queue':>8}  {'range':>21}"
    )
    for r in rows:
        ratio = ""
        q = next(
            (
                x
                for x in rows
                if x["api"] == BASELINE.get(r["api"]) and x["size"] == r["size"]
            ),
            None,
        )
        if q:
            ratio = f"{r['records_per_s'] / q['records_per_s']:.2f}x"
        print(
            f"  {fmt_size(r['size']):>5}  {LABELS[r['api']]:40} {r['records']:>9} "
            f"{r['seconds']:>6.2f} {r['records_per_s']:>12,.0f} "
            f"{r['bytes_per_s'] / 1e6:>6,.0f} {ratio:>8}  {_range(r):>21}{_flag(r)}"
        )
    print()
    print("  per ring row (median run): producer alone, CPU-s, waits, the spill")
    print(
        f"  {'api':40} {'producer rec/s':>14} {'prod':>5} {'cons':>5} {'sup':>5} "
        f"{'full waits':>10} {'polls':>7} {'from segs':>9} {'spill lag ms':>12} "
        f"{'segment MB':>10}"
    )
    for r in rows:
        if r["kind"] != "broker":
            continue
        print(
            f"  {LABELS[r['api']]:40} {r['producer_records_per_s']:>14,.0f} "
            f"{r['producer_cpu_s']:>5.2f} {r['consumer_cpu_s']:>5.2f} "
            f"{r['supervisor_cpu_s']:>5.2f} {r['full_waits']:>10} {r['polls']:>7} "
            f"{r['segment_polls']:>9} "
            f"{r['spill_lag_s'] * 1e3:>12.1f} {r['segment_bytes'] / 1e6:>10.1f}"
        )
    create = result.get("create_topic")
    if create:
        print()
        print(
            f"Admin.create_topic, 1 partition, {create['creations']} in a row: median "
            f"{create['median_s'] * 1e3:.1f} ms, min {create['min_s'] * 1e3:.1f}, max "
            f"{create['max_s'] * 1e3:.1f} (delete_topic median "
            f"{create['delete_median_s'] * 1e3:.1f} ms)"
        )
    cli = result.get("cli_produce")
    print()
    if cli:
        print(
            f"seq 1 {cli['lines']} | shmbroker produce: {cli['seconds']:.2f} s, "
            f"{cli['lines_per_s']:,.0f} lines/s; start-up (1 line) "
            f"{cli['startup_s'] * 1e3:.0f} ms, {cli['lines_per_s_after_startup']:,.0f} "
            f"lines/s after it"
        )
    else:
        print("seq | shmbroker produce: skipped (the CLI has no `produce` command)")
    if any(_flag(r) for r in rows):
        print(
            f"\n  * other processes used > {OTHER_CPU_WARN:.0%} of the cores during "
            f"this row: rerun on a quiet machine"
        )
    print()
    print("targets")
    for t in result["targets"]:
        if t["unit"] == "s":
            got, want = f"{t['got'] * 1e3:.1f} ms", f"{t['want'] * 1e3:.0f} ms"
        else:
            got = f"{t['got'] / 1e6:.2f}M {t['unit']}"
            want = f"{t['want'] / 1e6:.1f}M {t['unit']}"
        cmp = ">=" if t["higher_is_better"] else "<"
        print(
            f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:48} {got:>16}  "
            f"(want {cmp} {want}; {t['ratio']:.2f} of target)"
        )


# ---- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--records",
        type=int,
        help=f"records per throughput run, ring and Queue rows alike "
        f"(default {DEFAULT_RECORDS:,}; smoke {SMOKE_RECORDS:,})",
    )
    ap.add_argument("--size", type=int, default=100, help="value bytes (default 100)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs per throughput row; the median"
    )
    ap.add_argument(
        "--creations", type=int, help="topics created in a row (default 20; smoke 5)"
    )
    ap.add_argument(
        "--cli-lines",
        type=int,
        help="lines for seq | shmbroker produce (default: --records)",
    )
    ap.add_argument("--no-queue", action="store_true", help="skip the Queue baseline")
    ap.add_argument("--only", choices=("send", "send_batch", "create", "cli"))
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the benchmark still runs",
    )
    args = ap.parse_args(argv)
    if args.size < 1:
        ap.error("--size must be at least 1")

    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the broker and clean up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("fork")
    n = args.records or (SMOKE_RECORDS if args.smoke else DEFAULT_RECORDS)
    n = max(BATCH, n - n % BATCH)
    repeat = 1 if args.smoke else args.repeat
    creations = args.creations or (5 if args.smoke else 20)
    timeout = 60.0 if args.smoke else 600.0
    head = header()

    def wanted(what: str) -> bool:
        return args.only in (None, what)

    configs = [
        (kind, api)
        for kind, api in (
            ("broker", "send"),
            ("broker", "send_batch"),
            ("broker", "send_batch_raw"),
            ("queue", "put"),
            ("queue", "put_list"),
        )
        # --only send / send_batch also runs that row's Queue baseline
        if wanted(GROUP.get(api, api)) and not (kind == "queue" and args.no_queue)
    ]
    with EmbeddedBroker(shm_prefix=SHM_PREFIX) as broker:
        bench = Bench(broker, ctx, timeout)
        head["data_dir"] = bench.data_dir
        head["pinning"] = (
            "producer cpu 0, consumer cpu 1, supervisor unpinned"
            if len(os.sched_getaffinity(0)) >= 2
            else "none (fewer than 2 cores)"
        )
        try:
            # round-robin, so a burst of noise hits one run of several
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in configs}
            for _ in range(repeat):
                for kind, api in configs:
                    run = bench.ring_run if kind == "broker" else bench.queue_run
                    runs[kind, api].append(run(api, args.size, n))
            rows = [_median_run(runs[c]) for c in configs]
            create = bench.create_topics(creations) if wanted("create") else None
            cli = bench.cli_produce(args.cli_lines or n) if wanted("cli") else None
        finally:
            bench.admin.close()

    result = {
        "header": head,
        "smoke": args.smoke,
        "throughput": rows,
        "runs": {f"{k}/{a}": r for (k, a), r in runs.items()},
        "create_topic": create,
        "cli_produce": cli,
        "targets": targets(rows, create, cli),
    }
    publish(
        "bench_broker",
        result,
        smoke=args.smoke,
        as_json=args.json,
        print_report=lambda: print_report(result),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
