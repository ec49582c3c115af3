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
     distinct values, between two processes: the same record count and size,
     bench_ring.py's producer.
  4. topic creation: `Admin.create_topic` of a 1-partition topic, `--creations`
     times in a row (wall time of the call: the request, the supervisor creating
     the ring, the directory, the first segment and the registry, the reply);
     median and max.
  5. `seq 1 N | shmbroker produce --topic T --data-dir D`: lines/s over the whole
     pipeline, both processes' start-up included (the start-up alone, a 1-line run,
     is shown too), when the CLI has a `produce` command.
  6. large values, `--large-size` bytes (default 4 KiB and 64 KiB), `--large-mib` MiB
     of values a run (default 1024), through the broker as in 1 and 2:
     - `Producer.send` -> `poll_batch`;
     - `Producer.send_batch` -> `poll_batch`, BATCH values a call but at most 1 MiB
       of them (256 at 4 KiB, 16 at 64 KiB), as a Kafka producer's batch.size
       caps a batch (and the topic's max.message.bytes allows);
     - lapped: the same, but the consumer starts only when the producer has
       appended more than the ring holds, so it reads from offset 0 in the segment
       files (which the spill may still be writing), then catches up to the ring;
     and in the same run, at the same size and batch, the bounds and baselines:
     - the bare ring (bench_ring's producer: `RecordAccumulator.send` and
       `append_batch`, a 16 MiB ring whose consumer advances the spill: no disk);
     - the disk: `dd if=/dev/zero bs=1M count=--dd-mib conv=fdatasync` into the
       data directory's file system, before and after the rows (the best counts);
     - pyzmq PUSH/PULL over ipc://, one batch a message (two frames: the values'
       lengths, then the values packed), high-water marks holding a ring's worth;
     - `multiprocessing.Queue` put/get of lists of the same batch.
     Target: each broker row >= 0.8x the lower of the bare ring's rate (same API)
     and dd's.
Every consumer checks every record it counts: offsets (for pyzmq and the Queue, the
arrival order) dense from 0, and each value the one sent there (its length, and its
index in the producer's list, which the value's first 4 bytes hold); the raw
`read_batches` consumer decodes in C with CRCs checked and checks offsets and value
lengths. Runs have deadlines: a consumer whose read has not returned for 30 s
(smoke: 10 s) is ended by a watchdog thread, which writes where it was (issue 9: a
read that loops forever), and a run past 300 s (smoke: 60 s) is stopped. Such a
run, and any that fails a check, is reported FAILED with the reason; the other runs
go on, and the exit status is 1.
Rows are the median of `--repeat` runs, run round-robin, with the range.
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
(except in 5); pyzmq's TCP transport. Throughput counts value bytes only (MB = 1e6
B). Raw results go to benchmarks/results/ (git-ignored); `--json` prints them instead
of the tables.

    .venv/bin/python benchmarks/bench_broker.py            # full run, ~4 min on 2 cores
    .venv/bin/python benchmarks/bench_broker.py --smoke    # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
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
    BenchRing,
    header,
    queue_produce,
    run_pair,
)
from machine import fmt_size, publish
from peers import (
    BATCH,
    STALL_S,
    batch_for,
    broker_consume,
    broker_consume_raw,
    broker_produce,
    queue_consume,
    ring_consume,
    ring_produce,
    zmq_consume,
    zmq_produce,
)

from shmbroker.client.admin import Admin
from shmbroker.config import TopicConfig
from shmbroker.embedded import EmbeddedBroker
from shmbroker.records import TopicPartition

ROOT = Path(__file__).resolve().parent.parent
SHM_PREFIX = "shmb.bench."
KiB, MiB = 1024, 1 << 20
DEFAULT_RECORDS = 1_000_000
SMOKE_RECORDS = 20_000
LARGE_SIZES = (4 * KiB, 64 * KiB)
LARGE_MIB, SMOKE_LARGE_MIB = 1024, 40  # value MiB a large run; smoke > 2 rings
DD_MIB, SMOKE_DD_MIB = 1024, 64
WATCHDOG_S = STALL_S + 10  # a read that has not returned this long: ended (issue 9)
SMOKE_WATCHDOG_S = 10.0
SPILL_WAIT_S = 60.0  # longest wait for the segments to hold the last record
OTHER_CPU_WARN = 0.10  # share of the cores other processes used during a run
RING_BYTES = TopicConfig().ring_bytes  # every topic here has the default ring

# Targets, checked below and printed PASS/MISS (records of 100 B).
TARGET_PER_RECORD_RPS = 2e6  # Producer.send -> Consumer.poll_batch
TARGET_BATCH_RPS = 10e6  # Producer.send_batch x1000 -> Consumer.poll_batch
TARGET_CREATE_S = 0.050  # Admin.create_topic, 1 partition: median and max
TARGET_CLI_LPS = 1e6  # seq 1 N | shmbroker produce
TARGET_VS_BOUND = 0.8  # large values: end to end vs min(bare ring, dd)


def dd_rate(directory: str, mib: int, timeout: float) -> dict[str, Any]:
    """The disk's sequential write rate with fdatasync, in `directory`'s file
    system: `dd if=/dev/zero bs=1M count=mib conv=fdatasync`, its own report parsed
    ("N bytes (...) copied, S s, R MB/s")."""
    path = Path(directory) / "bench-dd.tmp"
    cmd = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}"]
    try:
        done = subprocess.run(
            [*cmd, "conv=fdatasync"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C"},
        )
    finally:
        path.unlink(missing_ok=True)
    m = re.search(r"^(\d+) bytes .*copied, ([\d.e+-]+) s", done.stderr, re.M)
    if done.returncode != 0 or m is None:
        raise RuntimeError(f"dd failed ({done.returncode}): {done.stderr.strip()}")
    nbytes, seconds = int(m[1]), float(m[2])
    return {
        "bytes": nbytes,
        "seconds": seconds,
        "bytes_per_s": nbytes / seconds,
        "report": done.stderr.strip().splitlines()[-1],
    }


# ---- runs ---------------------------------------------------------------------------


class Bench:
    """The broker, an Admin on it, and a counter for fresh topic names."""

    def __init__(
        self, broker: EmbeddedBroker, ctx: Any, timeout: float, watchdog_s: float
    ) -> None:
        self.broker = broker
        self.watchdog_s = watchdog_s
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

    def pair(
        self,
        producer: Any,
        pargs: tuple[Any, ...],
        consumer: Any,
        cargs: tuple[Any, ...],
        stall: Path | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """run_pair, with what a consumer's watchdog wrote when it ended it."""
        try:
            return run_pair(self.ctx, producer, pargs, consumer, cargs, self.timeout)
        except RuntimeError as exc:
            if stall is not None and stall.exists():
                raise RuntimeError(f"{exc}\n{stall.read_text()}") from None
            raise

    def _stall(self, path: Path) -> tuple[str, float]:
        """A consumer's Watchdog arguments."""
        return str(path), self.watchdog_s

    def ring_run(self, api: str, size: int, n: int) -> dict[str, Any]:
        """Through a topic: api send | send_batch | send_batch_raw | lapped."""
        batch = batch_for(size)
        topic = self.topic(api.replace("_", "-"))
        stall = Path(self.data_dir) / f"{topic}.stall"
        self.admin.create_topic(topic, 1)
        try:
            cpu0 = self.supervisor_cpu_s()
            p, c = self.pair(
                broker_produce,
                (self.data_dir, topic, api, size, n, batch),
                broker_consume_raw if api == "send_batch_raw" else broker_consume,
                (
                    self.data_dir,
                    topic,
                    size,
                    n,
                    batch,
                    api == "lapped",
                    self._stall(stall),
                ),
                stall,
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
            "batch": 1 if api == "send" else batch,
            "records": n,
            "seconds": seconds,
            "records_per_s": n / seconds,
            "bytes_per_s": n * size / seconds,
            "producer_records_per_s": n / ((p["sent_ns"] - p["start_ns"]) / 1e9),
            "consumer_records_per_s": n
            / ((c["end_ns"] - c["consumer_start_ns"]) / 1e9),
            "consumer_start_offset": c["start_offset"],
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

    def bare_ring_run(self, api: str, size: int, n: int) -> dict[str, Any]:
        """The bare ring, no broker and no disk: api send | append_batch."""
        batch = batch_for(size)
        with BenchRing(RING_BYTES) as name:
            stall = Path(self.data_dir) / f"{name.strip('/')}.stall"
            p, c = self.pair(
                ring_produce,
                (name, api, size, n, batch),
                ring_consume,
                (name, size, n, batch, self._stall(stall)),
                stall,
            )
        return self._row("ring", api, size, n, 1 if api == "send" else batch, p, c)

    def queue_run(self, api: str, size: int, n: int) -> dict[str, Any]:
        batch = batch_for(size) if api == "put_list" else 1
        # as much buffering as a topic's ring has, as in bench_ring.py
        q = self.ctx.Queue(maxsize=max(2, RING_BYTES // (size * batch)))
        p, c = self.pair(
            queue_produce, (q, size, n, batch), queue_consume, (q, size, n, batch)
        )
        return self._row("queue", api, size, n, batch, p, c)

    def zmq_run(self, api: str, size: int, n: int) -> dict[str, Any]:
        batch = batch_for(size)
        address = f"ipc://{self.data_dir}/{self.topic('zmq')}.sock"
        # a ring's worth of messages in flight, split between the two ends
        hwm = max(1, RING_BYTES // (size * batch) // 2)
        p, c = self.pair(
            zmq_produce,
            (address, size, n, batch, hwm),
            zmq_consume,
            (address, size, n, batch, hwm),
        )
        return self._row("zmq", api, size, n, batch, p, c)

    @staticmethod
    def _row(
        kind: str,
        api: str,
        size: int,
        n: int,
        batch: int,
        p: dict[str, Any],
        c: dict[str, Any],
    ) -> dict[str, Any]:
        seconds = (c["end_ns"] - p["start_ns"]) / 1e9
        return {
            "kind": kind,
            "api": api,
            "size": size,
            "batch": batch,
            "records": n,
            "seconds": seconds,
            "records_per_s": n / seconds,
            "bytes_per_s": n * size / seconds,
            "producer_records_per_s": n / ((p["sent_ns"] - p["start_ns"]) / 1e9),
            "full_waits": p.get("full_waits"),
            "polls": c.get("polls"),
            "other_cpu": round(c["other_cpu"], 3),
            "wall_s": round(c["wall_s"], 3),
            "producer_cpu_s": round(p["cpu_s"], 3),
            "consumer_cpu_s": round(c["cpu_s"], 3),
        }

    def run(self, config: tuple[str, str, int, int]) -> dict[str, Any]:
        kind, api, size, n = config
        return {
            "broker": self.ring_run,
            "ring": self.bare_ring_run,
            "queue": self.queue_run,
            "zmq": self.zmq_run,
        }[kind](api, size, n)

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


def label(row: dict[str, Any]) -> str:
    b = row["batch"]
    return {
        ("broker", "send"): "Producer.send -> poll_batch",
        ("broker", "send_batch"): f"Producer.send_batch x{b} -> poll_batch",
        ("broker", "send_batch_raw"): "  same -> read_batches (raw, not judged)",
        ("broker", "lapped"): "  same, consumer lapped (starts 1 ring late)",
        ("ring", "send"): "bare ring: RecordAccumulator.send",
        ("ring", "append_batch"): f"bare ring: append_batch x{b}",
        ("zmq", "push_pull"): f"pyzmq PUSH/PULL, x{b} a message",
        ("queue", "put"): "Queue put/get",
        ("queue", "put_list"): f"Queue put/get list x{b}",
    }[row["kind"], row["api"]]


# each small ring row's Queue row, and which --only group a config belongs to
BASELINE = {"send": "put", "send_batch": "put_list", "send_batch_raw": "put_list"}
GROUP = {"put": "send", "put_list": "send_batch", "send_batch_raw": "send_batch"}
JUDGED_LARGE = ("send", "send_batch", "lapped")  # broker rows held to the bound


def find(
    rows: list[dict[str, Any]], kind: str, api: str, size: int
) -> dict[str, Any] | None:
    return next(
        (r for r in rows if (r["kind"], r["api"], r["size"]) == (kind, api, size)),
        None,
    )


def bound(
    rows: list[dict[str, Any]], dd: list[dict[str, Any]], api: str, size: int
) -> dict[str, Any] | None:
    """What a large row is held to: the lower of the bare ring's rate with the same
    API (per record or batches) and the disk's (the best dd run: noise only slows
    dd down), in value bytes/s."""
    ring = find(rows, "ring", "send" if api == "send" else "append_batch", size)
    if ring is None or not dd:
        return None
    disk = max(d["bytes_per_s"] for d in dd)
    lower = min(ring["bytes_per_s"], disk)
    return {
        "ring_bytes_per_s": ring["bytes_per_s"],
        "dd_bytes_per_s": disk,
        "bytes_per_s": lower,
        "by": "ring" if ring["bytes_per_s"] <= disk else "dd",
    }


def targets(
    rows: list[dict[str, Any]],
    large_sizes: list[int],
    dd: list[dict[str, Any]],
    create: dict[str, Any] | None,
    cli: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    out = []

    def check(
        what: str, got: float | None, want: float, unit: str, higher: bool
    ) -> None:
        out.append(
            {
                "target": what,
                "got": got,
                "want": want,
                "unit": unit,
                "higher_is_better": higher,
                # no row: every run of it failed
                "pass": got is not None and (got >= want if higher else got < want),
                "ratio": None if got is None else got / want,
            }
        )

    for api, want in (
        ("send", TARGET_PER_RECORD_RPS),
        ("send_batch", TARGET_BATCH_RPS),
    ):
        row = find(rows, "broker", api, 100)
        if row:
            check(f"{label(row)}, 100 B", row["records_per_s"], want, "rec/s", True)
    for size in large_sizes:
        for api in JUDGED_LARGE:
            row = find(rows, "broker", api, size)
            limit = bound(rows, dd, api, size)
            what = {
                "send": "Producer.send -> poll_batch",
                "send_batch": f"send_batch x{batch_for(size)} -> poll_batch",
                "lapped": "same, lapped consumer",
            }[api]
            check(
                f"{what}, {fmt_size(size)}: x of min(ring, dd)",
                None if row is None or limit is None
                else row["bytes_per_s"] / limit["bytes_per_s"],
                TARGET_VS_BOUND,
                "x",
                True,
            )  # fmt: skip
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
    failed = f" ({row['failed_runs']} run(s) FAILED)" if row.get("failed_runs") else ""
    busy = long_enough and row.get("other_cpu", 0) > OTHER_CPU_WARN
    return (" *" if busy else "") + failed


def print_report(result: dict[str, Any]) -> None:
    head, rows = result["header"], result["throughput"]
    small = [r for r in rows if r["size"] not in result["large_sizes"]]
    large = [r for r in rows if r["size"] in result["large_sizes"]]
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
    if small:
        print(
            f"  {'size':>6}  {'api':44} {'records':>9} {'s':>6} {'records/s':>12} "
            f"{'MB/s':>6} {'vs Queue':>8}  {'range':>21}"
        )
    for r in small:
        ratio = ""
        q = find(rows, "queue", BASELINE.get(r["api"], ""), r["size"])
        if q and r["kind"] == "broker":
            ratio = f"{r['records_per_s'] / q['records_per_s']:.2f}x"
        print(
            f"  {fmt_size(r['size']):>6}  {label(r):44} {r['records']:>9} "
            f"{r['seconds']:>6.2f} {r['records_per_s']:>12,.0f} "
            f"{r['bytes_per_s'] / 1e6:>6,.0f} {ratio:>8}  {_range(r):>21}{_flag(r)}"
        )
    dd = result["dd"]
    if large:
        print()
        print(
            "large values; 'vs bound' = MB/s over the lower of the bare ring's "
            "(same API) and dd's"
        )
        for d in dd:
            print(f"  dd bs=1M conv=fdatasync ({d['when']}): {d['report']}")
        print(
            f"  {'size':>6}  {'api':44} {'records':>9} {'s':>6} {'records/s':>12} "
            f"{'MB/s':>6} {'vs bound':>8}  {'range':>21}"
        )
        for r in large:
            limit = bound(rows, dd, r["api"], r["size"])
            ratio = f"{r['bytes_per_s'] / limit['bytes_per_s']:.2f}x" if limit else ""
            print(
                f"  {fmt_size(r['size']):>6}  {label(r):44} {r['records']:>9} "
                f"{r['seconds']:>6.2f} {r['records_per_s']:>12,.0f} "
                f"{r['bytes_per_s'] / 1e6:>6,.0f} {ratio:>8}  {_range(r):>21}"
                f"{_flag(r)}"
            )
    print()
    print(
        "  per broker row (median run): producer and consumer alone, CPU-s, the spill"
    )
    print(
        f"  {'size':>6}  {'api':44} {'producer rec/s':>14} {'consumer rec/s':>14} "
        f"{'prod':>5} {'cons':>5} {'sup':>5} {'full waits':>10} {'polls':>7} "
        f"{'from segs':>9} {'spill lag ms':>12} {'segment MB':>10}"
    )
    for r in rows:
        if r["kind"] != "broker":
            continue
        print(
            f"  {fmt_size(r['size']):>6}  {label(r):44} "
            f"{r['producer_records_per_s']:>14,.0f} "
            f"{r['consumer_records_per_s']:>14,.0f} "
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
    if cli:
        print()
        print(
            f"seq 1 {cli['lines']} | shmbroker produce: {cli['seconds']:.2f} s, "
            f"{cli['lines_per_s']:,.0f} lines/s; start-up (1 line) "
            f"{cli['startup_s'] * 1e3:.0f} ms, {cli['lines_per_s_after_startup']:,.0f} "
            f"lines/s after it"
        )
    elif result.get("cli_skipped"):
        print("\nseq | shmbroker produce: skipped (the CLI has no `produce` command)")
    if any(_flag(r).startswith(" *") for r in rows):
        print(
            f"\n  * other processes used > {OTHER_CPU_WARN:.0%} of the cores during "
            f"this row: rerun on a quiet machine"
        )
    print()
    print("targets")
    for t in result["targets"]:
        want = t["want"]
        if t["got"] is None:
            got = "no run"
        elif t["unit"] == "s":
            got, want = f"{t['got'] * 1e3:.1f} ms", f"{t['want'] * 1e3:.0f} ms"
        elif t["unit"] == "x":
            got, want = f"{t['got']:.2f}x", f"{t['want']:.1f}x"
        else:
            got = f"{t['got'] / 1e6:.2f}M {t['unit']}"
            want = f"{t['want'] / 1e6:.1f}M {t['unit']}"
        if t["got"] is None:
            verdict, ratio = "FAIL", "every run failed"
        else:
            verdict = "PASS" if t["pass"] else "MISS"
            ratio = f"{t['ratio']:.2f} of target"
        cmp = ">=" if t["higher_is_better"] else "<"
        print(f"  {verdict}  {t['target']:52} {got:>16}  (want {cmp} {want}; {ratio})")
    failures = result["failures"]
    if failures:
        print()
        print(f"FAILED: {len(failures)} run(s) (the whole text is in the JSON)")
        for f in failures:
            lines = f["error"].strip().splitlines()
            print(f"  {f['config']} (run {f['run']}):")
            if len(lines) > 15:  # the first lines say what, the last where
                lines = [*lines[:3], "...", *lines[-12:]]
            for line in lines:
                print(f"    {line}")


# ---- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--records",
        type=int,
        help=f"records per throughput run at --size, ring and Queue rows alike "
        f"(default {DEFAULT_RECORDS:,}; smoke {SMOKE_RECORDS:,})",
    )
    ap.add_argument("--size", type=int, default=100, help="value bytes (default 100)")
    ap.add_argument(
        "--large-size",
        type=int,
        action="append",
        help="large value bytes (repeatable; default 4096 and 65536)",
    )
    ap.add_argument(
        "--large-mib",
        type=int,
        help=f"MiB of values per large run (default {LARGE_MIB}; smoke "
        f"{SMOKE_LARGE_MIB}: a lapped consumer needs more than the 16 MiB ring)",
    )
    ap.add_argument(
        "--dd-mib",
        type=int,
        help=f"MiB dd writes, twice (default {DD_MIB}; smoke {SMOKE_DD_MIB})",
    )
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
    ap.add_argument(
        "--no-queue", action="store_true", help="skip the Queue and pyzmq baselines"
    )
    ap.add_argument("--only", choices=("send", "send_batch", "large", "create", "cli"))
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the benchmark still runs",
    )
    args = ap.parse_args(argv)
    large_sizes = sorted(set(args.large_size or LARGE_SIZES))
    if args.size < 4 or min(large_sizes) < 4:
        ap.error("sizes must be at least 4 (a value's index)")
    if args.size in large_sizes:
        ap.error("--size must not be one of the large sizes")

    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the broker and clean up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("fork")
    n = args.records or (SMOKE_RECORDS if args.smoke else DEFAULT_RECORDS)
    n = max(BATCH, n - n % BATCH)
    large_mib = args.large_mib or (SMOKE_LARGE_MIB if args.smoke else LARGE_MIB)
    dd_mib = args.dd_mib or (SMOKE_DD_MIB if args.smoke else DD_MIB)
    repeat = 1 if args.smoke else args.repeat
    creations = args.creations or (5 if args.smoke else 20)
    timeout = 60.0 if args.smoke else 300.0
    head = header()

    def wanted(what: str) -> bool:
        return args.only in (None, what)

    baseline = ("queue", "zmq")
    configs: list[tuple[str, str, int, int]] = [
        (kind, api, args.size, n)
        for kind, api in (
            ("broker", "send"),
            ("broker", "send_batch"),
            ("broker", "send_batch_raw"),
            ("queue", "put"),
            ("queue", "put_list"),
        )
        # --only send / send_batch also runs that row's Queue baseline
        if wanted(GROUP.get(api, api)) and not (kind in baseline and args.no_queue)
    ]
    for size in large_sizes if wanted("large") else ():
        batch = batch_for(size)
        records = max(2, large_mib * MiB // size // batch) * batch
        configs += [
            (kind, api, size, records)
            for kind, api in (
                ("broker", "send"),
                ("broker", "send_batch"),
                ("broker", "lapped"),
                ("ring", "send"),
                ("ring", "append_batch"),
                ("zmq", "push_pull"),
                ("queue", "put_list"),
            )
            if not (kind in baseline and args.no_queue)
        ]
    failures: list[dict[str, Any]] = []
    dd: list[dict[str, Any]] = []
    with EmbeddedBroker(shm_prefix=SHM_PREFIX) as broker:
        watchdog_s = SMOKE_WATCHDOG_S if args.smoke else WATCHDOG_S
        bench = Bench(broker, ctx, timeout, watchdog_s)
        head["data_dir"] = bench.data_dir
        head["pinning"] = (
            "producer cpu 0, consumer cpu 1, supervisor unpinned"
            if len(os.sched_getaffinity(0)) >= 2
            else "none (fewer than 2 cores)"
        )
        try:
            if wanted("large"):
                dd.append({"when": "before", **dd_rate(bench.data_dir, dd_mib, 300)})
            # round-robin, so a burst of noise hits one run of several
            runs: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {
                c: [] for c in configs
            }
            for k in range(repeat):
                for c in configs:
                    try:
                        runs[c].append(bench.run(c))
                    except RuntimeError as exc:  # reported, and the others go on
                        name = "/".join(map(str, c[:3]))
                        failures.append({"config": name, "run": k, "error": str(exc)})
                        where = str(exc).strip().splitlines()
                        print(
                            f"bench_broker: {name} FAILED: {where[0]} ... {where[-1]}",
                            file=sys.stderr,
                        )
            if wanted("large"):
                dd.append({"when": "after", **dd_rate(bench.data_dir, dd_mib, 300)})
            rows = []
            for c in configs:
                if runs[c]:
                    row = _median_run(runs[c])
                    row["failed_runs"] = repeat - len(runs[c])
                    rows.append(row)
            create = bench.create_topics(creations) if wanted("create") else None
            cli = bench.cli_produce(args.cli_lines or n) if wanted("cli") else None
        finally:
            bench.admin.close()

    result = {
        "header": head,
        "smoke": args.smoke,
        "large_sizes": large_sizes,
        "throughput": rows,
        "dd": dd,
        "runs": {"/".join(map(str, c[:3])): r for c, r in runs.items()},
        "failures": failures,
        "create_topic": create,
        "cli_produce": cli,
        "cli_skipped": wanted("cli") and cli is None,
        "targets": targets(
            rows, large_sizes if wanted("large") else [], dd, create, cli
        ),
    }
    publish(
        "bench_broker",
        result,
        smoke=args.smoke,
        as_json=args.json,
        print_report=lambda: print_report(result),
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
