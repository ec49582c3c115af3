"""How fast a waiting consumer wakes, and what its waiting costs: one producer process
-> a bare ring, or a topic of 1 or 8 partitions of a running broker -> one consumer
process, idle and at `--rate` records/s (default 10,000).

Rows (100 B values):
  - ring: `Ring.append(value)` -> `ring.reader().poll(timeout)`, reader defaults (the
    consumer advances the spill position itself: nothing else spills);
  - topic, 1 and 8 partitions: a real supervisor (`EmbeddedBroker`) spills them;
    `Producer(linger_ms=0).send(topic, value, partition=p)`, p drawn at random (seeded)
    from the partitions, -> a `Consumer` assigned all of them, `poll_batch(timeout=..)`
    (Kafka's poll: records of every partition with data).
Phases, per row:
  1. idle: the consumer blocks in one poll for `--idle` seconds while nothing is
     produced; its CPU-seconds per second (getrusage), and the supervisor's;
  2. load: `--seconds` of records at `--rate`/s; one-way latency (the producer stamps
     CLOCK_MONOTONIC into the value just before the send, the consumer subtracts it
     from its own clock when the poll returns; the first 1,000 dropped) p50 / p99 /
     p99.9, and CPU-seconds per second of the consumer and the supervisor.
The producer paces itself by sleeping to each record's due time (busy-waiting would
hold a core that the consumer and the spill need on a 2-core machine); producer and
consumer are pinned to a core each when there are two, the supervisor is not.
Each row is the run with the median p50 of `--repeat` runs (round-robin), the
others' p50 beside it. `--before DIR` also runs every row against the shmbroker
package in DIR (an export of an older commit, its C core built in place), alternating
row by row with this tree, and prints both. `--sweep` adds bare-ring rows for several
idle strategies (spins, yields): the latency bought with CPU. Rows during which other
processes used > 10% of the cores are marked '*'.

Left out: keys, headers, acks=all, consumer groups (a member's poll also looks for a
rebalance every 10 ms), more than one producer or consumer, and coordinated omission
(the stamp is taken at the actual send, so a producer behind schedule hides that
delay). Raw results go to benchmarks/results/ (git-ignored); `--json` prints them.

    .venv/bin/python benchmarks/bench_consumer_wait.py          # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_consumer_wait.py --smoke  # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from bench_ring import CLOCK, BenchRing, _percentiles, header, run_pair
from machine import before_env, publish

import shmbroker
from shmbroker.client.admin import Admin
from shmbroker.client.consumer import Consumer
from shmbroker.client.producer import Producer
from shmbroker.embedded import EmbeddedBroker
from shmbroker.ring import Ring

ROOT = Path(__file__).resolve().parent.parent
SHM_PREFIX = "shmb.bench."
SIZE = 100
STAMP = struct.Struct("<q")
WARMUP_SAMPLES = 1_000
STALL_S = 20.0  # a consumer that sees nothing this long reports the run as hung
SEED = 9
ROWS = ("ring", "topic-1", "topic-8")
# (max_spins, max_yields) of the --sweep rows
SWEEP = ((0, 0), (1_000, 0), (2_000, 100), (5_000, 0), (5_000, 500), (10_000, 0))
OTHER_CPU_WARN = 0.10

# Targets, checked below and printed PASS/MISS.
TARGET_P50_NS = 20_000  # ring and topic-1 at 10k records/s
TARGET_8_VS_1 = 2.0  # topic-8 p50 / topic-1 p50
TARGET_IDLE_CPU = 0.01  # consumer CPU-s per s while nothing comes: 1% of a core


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Supervisor:
    """CPU-seconds of the supervisor process, if there is one."""

    def __init__(self, pid: int | None) -> None:
        self.proc = None if pid is None else psutil.Process(pid)

    def cpu_s(self) -> float:
        if self.proc is None:
            return 0.0
        t = self.proc.cpu_times()
        return float(t.user + t.system)


# ---- producer and consumer processes ------------------------------------------------


def produce(
    barrier: Any,
    go: Any,
    target: tuple[str, str, int],
    n: int,
    rate: float,
) -> dict[str, Any]:
    """Send n stamped values at rate/s, sleeping to each one's due time."""
    kind, where, partitions = target
    pad = b"x" * (SIZE - STAMP.size)
    pack, rng = STAMP.pack, random.Random(SEED)
    if kind == "ring":
        ring = Ring.open(where)
        append = ring.append

        def send(value: bytes) -> None:
            append(value)

    else:
        producer = Producer(where.split("|")[0], linger_ms=0)
        topic = where.split("|")[1]
        producer.partitions_for(topic)  # attach to the rings before the clock starts
        psend = producer.send

        def send(value: bytes) -> None:
            psend(topic, value, partition=rng.randrange(partitions))

    barrier.wait()
    go.wait()  # the consumer has measured its idle phase
    period_ns = 1e9 / rate
    t0 = CLOCK() + 1_000_000
    late = 0
    for i in range(n):
        due = t0 + int(i * period_ns)
        now = CLOCK()
        if now > due + period_ns:
            late += 1
        elif now < due:
            time.sleep((due - now) / 1e9)
        send(pack(CLOCK()) + pad)
    if kind == "ring":
        ring.close()
    else:
        producer.close()
    return {"late": late}


def consume(
    barrier: Any,
    go: Any,
    target: tuple[str, str, int],
    n: int,
    idle_s: float,
    supervisor_pid: int | None,
    idle: tuple[int, int] | None,
) -> dict[str, Any]:
    kind, where, partitions = target
    supervisor = _Supervisor(supervisor_pid)
    ring = consumer = None
    if kind == "ring":
        ring = Ring.open(where)
        if idle is None:
            reader = ring.reader()
        else:  # a --sweep row: needs this tree's RingReader
            from shmbroker.ring import BackoffIdleStrategy, RingReader

            reader = RingReader(
                ring,
                ring.stat().tail_position,
                topic=where,
                idle=BackoffIdleStrategy(*idle),
            )
        spill_advance = ring.spill_advance

        def poll(timeout: float) -> list[Any]:
            records = reader.poll(timeout)
            spill_advance(reader.position)  # nothing else spills this ring
            return records

    else:
        consumer = Consumer(where.split("|")[0], auto_offset_reset="latest")
        topic = where.split("|")[1]
        consumer.assign([(topic, p) for p in range(partitions)])

        def poll(timeout: float) -> list[Any]:
            return consumer.poll_batch(None, timeout)

    unpack = STAMP.unpack_from
    lat = array("q")
    barrier.wait()
    cpu0, sup0, t0 = _cpu_s(), supervisor.cpu_s(), time.monotonic()
    if poll(idle_s):
        raise RuntimeError("records came while nothing was produced")
    cpu1, sup1, t1 = _cpu_s(), supervisor.cpu_s(), time.monotonic()
    go.wait()
    cpu2, sup2, t2 = _cpu_s(), supervisor.cpu_s(), time.monotonic()
    while len(lat) < n:
        records = poll(STALL_S)
        now = CLOCK()
        if not records:
            raise RuntimeError(f"no records for {STALL_S}s after {len(lat)} of {n}")
        for r in records:
            lat.append(now - unpack(r.value)[0])
    cpu3, sup3, t3 = _cpu_s(), supervisor.cpu_s(), time.monotonic()
    if ring is not None:
        ring.close()
    if consumer is not None:
        consumer.close()
    return {
        **_percentiles(lat, WARMUP_SAMPLES),
        "idle_s": round(t1 - t0, 3),
        "idle_cpu": (cpu1 - cpu0) / (t1 - t0),
        "idle_supervisor_cpu": (sup1 - sup0) / (t1 - t0),
        "load_s": round(t3 - t2, 3),
        "load_cpu": (cpu3 - cpu2) / (t3 - t2),
        "load_supervisor_cpu": (sup3 - sup2) / (t3 - t2),
    }


# ---- runs ---------------------------------------------------------------------------


def run_row(
    ctx: Any,
    row: str,
    broker: EmbeddedBroker | None,
    args: argparse.Namespace,
    idle: tuple[int, int] | None = None,
) -> dict[str, Any]:
    n = int(args.rate * args.seconds) + WARMUP_SAMPLES
    timeout = args.idle + args.seconds + 120
    go = ctx.Barrier(2)
    if row == "ring":
        with BenchRing(16 << 20) as name:
            p, c = run_pair(
                ctx,
                produce,
                (go, ("ring", name, 1), n, args.rate),
                consume,
                (go, ("ring", name, 1), n, args.idle, None, idle),
                timeout,
            )
    else:
        assert broker is not None
        partitions = int(row.split("-")[1])
        data_dir = str(broker.data_dir)
        topic = f"wait-{row}-{os.getpid()}-{time.monotonic_ns()}"
        with Admin(data_dir, client_id="bench") as admin:
            admin.create_topic(topic, partitions)
            try:
                target = ("topic", f"{data_dir}|{topic}", partitions)
                p, c = run_pair(
                    ctx,
                    produce,
                    (go, target, n, args.rate),
                    consume,
                    (go, target, n, args.idle, broker.pid, None),
                    timeout,
                )
            finally:
                admin.delete_topic(topic)
    out = {"row": row if idle is None else f"ring {idle[0]}/{idle[1]}", **c}
    out["late"] = p["late"]
    out["other_cpu"] = round(c["other_cpu"], 3)
    for key in ("idle_cpu", "idle_supervisor_cpu", "load_cpu", "load_supervisor_cpu"):
        out[key] = round(out[key], 4)
    return out


def run_here(
    args: argparse.Namespace, rows: list[str], sweep: bool = False
) -> list[dict[str, Any]]:
    """The rows (and the sweep) against the shmbroker this interpreter imports."""
    ctx = mp.get_context("fork")
    out = []
    if not any(r.startswith("topic") for r in rows):
        return [run_row(ctx, r, None, args) for r in rows] + [
            run_row(ctx, "ring", None, args, idle) for idle in (SWEEP if sweep else ())
        ]
    with EmbeddedBroker(shm_prefix=SHM_PREFIX) as broker:
        for row in rows:
            out.append(run_row(ctx, row, broker, args))
    return out + run_here(args, [], sweep)


def run_before(args: argparse.Namespace, row: str) -> dict[str, Any]:
    """One row against the package in args.before, in a fresh interpreter."""
    env = before_env(args.before)
    cmd = [sys.executable, __file__, "--json", "--only", row, "--inner", "--repeat=1"]
    cmd += ["--rate", str(args.rate), "--seconds", str(args.seconds)]
    cmd += ["--idle", str(args.idle)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"before run of {row} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    return dict(result["rows"][0], package=result["header"]["package"])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median p50, with every run's p50 beside it."""
    ordered = sorted(runs, key=lambda r: r["p50_ns"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs_p50_us"] = [round(r["p50_ns"] / 1e3, 1) for r in runs]
    return row


# ---- report -------------------------------------------------------------------------


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    by = {r["row"]: r for r in rows}

    def check(what: str, got: float, want: float, unit: str) -> None:
        out.append(
            {
                "target": what,
                "got": got,
                "want": want,
                "unit": unit,
                "pass": got <= want,
            }
        )

    for row in ("ring", "topic-1"):
        if row in by:
            check(f"{row}: p50 at the rate", by[row]["p50_ns"], TARGET_P50_NS, "ns")
    if "topic-1" in by and "topic-8" in by:
        check(
            "topic-8 p50 / topic-1 p50",
            by["topic-8"]["p50_ns"] / by["topic-1"]["p50_ns"],
            TARGET_8_VS_1,
            "x",
        )
    for row in ROWS:
        if row in by:
            check(f"{row}: consumer CPU idle", by[row]["idle_cpu"], TARGET_IDLE_CPU, "")
    return out


def _flag(row: dict[str, Any]) -> str:
    return " *" if row.get("other_cpu", 0) > OTHER_CPU_WARN else ""


def _header() -> None:
    print(
        f"  {'':>6} {'row':14} {'idle cpu':>8} {'sup':>6}   {'p50 us':>7} "
        f"{'p99':>7} {'p99.9':>7} {'max':>8}  {'cpu':>5} {'sup':>5} {'late':>5}  "
        f"p50 of each run"
    )


def _line(r: dict[str, Any], label: str) -> None:
    print(
        f"  {label:>6} {r['row']:14} {r['idle_cpu']:>8.3f} "
        f"{r['idle_supervisor_cpu']:>6.3f}   {r['p50_ns'] / 1e3:>7.1f} "
        f"{r['p99_ns'] / 1e3:>7.1f} {r['p999_ns'] / 1e3:>7.1f} "
        f"{r['max_ns'] / 1e3:>8.1f}  {r['load_cpu']:>5.2f} "
        f"{r['load_supervisor_cpu']:>5.2f} {r['late']:>5}  "
        f"{' '.join(map(str, r.get('runs_p50_us', [])))}{_flag(r)}"
    )


def print_report(result: dict[str, Any]) -> None:
    head = result["header"]
    print("bench_consumer_wait: producer process -> ring / topic -> consumer process")
    for k, v in head.items():
        print(f"  {k:16} {v}")
    print()
    print(
        f"CPU-seconds per second (idle: one poll of {result['idle_s']} s, nothing "
        f"produced; load: {result['rate']:,.0f} records/s for {result['seconds']} s), "
        f"one-way latency in us"
    )
    after = result["rows"]
    before = result.get("before") or []
    if before:
        print(f"  before: the shmbroker in {result['before_package']}")
    _header()
    for r in after:
        _line(r, "after" if before else "")
        b = next((x for x in before if x["row"] == r["row"]), None)
        if b:
            _line(b, "before")
    if any(_flag(r) for r in [*after, *before]):
        print(
            f"\n  * other processes used > {OTHER_CPU_WARN:.0%} of the cores during "
            f"this row: rerun on a quiet machine"
        )
    print()
    print("targets")
    for t in result["targets"]:
        if t["unit"] == "ns":
            got, want = f"{t['got'] / 1e3:.1f} us", f"{t['want'] / 1e3:.0f} us"
        elif t["unit"] == "x":
            got, want = f"{t['got']:.2f}x", f"{t['want']:.1f}x"
        else:
            got, want = f"{t['got']:.3f}", f"{t['want']:.3f}"
        print(
            f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:34} {got:>10}  "
            f"(want <= {want})"
        )


# ---- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rate", type=float, default=10_000, help="records/s (10,000)")
    ap.add_argument("--seconds", type=float, help="of load per row (3; smoke 0.3)")
    ap.add_argument("--idle", type=float, help="seconds idle per row (2; smoke 0.2)")
    ap.add_argument("--only", choices=ROWS, action="append", help="run these rows")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the median p50 is shown"
    )
    ap.add_argument("--sweep", action="store_true", help="idle strategies, bare ring")
    ap.add_argument("--before", help="also run the rows on the shmbroker in DIR")
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the benchmark still runs",
    )
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (0.3 if args.smoke else 3.0)
    args.idle = args.idle or (0.2 if args.smoke else 2.0)
    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the broker and clean up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = args.only or list(ROWS)
    head = header()
    head["package"] = str(Path(shmbroker.__file__).resolve().parent)
    head["pinning"] = (
        "producer cpu 0, consumer cpu 1, supervisor unpinned"
        if len(os.sched_getaffinity(0)) >= 2
        else "none (fewer than 2 cores)"
    )
    repeat = 1 if args.smoke or args.inner else args.repeat
    runs: dict[str, list[dict[str, Any]]] = {}
    runs_before: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeat):  # round-robin: a burst of noise hits one run of several
        for row in rows:
            runs.setdefault(row, []).extend(run_here(args, [row]))
            if args.before:  # row by row: noise hits both sides alike
                runs_before.setdefault(row, []).append(run_before(args, row))
        for r in run_here(args, [], args.sweep):
            runs.setdefault(r["row"], []).append(r)
    after = [_median_run(v) for v in runs.values()]
    before = [_median_run(v) for v in runs_before.values()]
    result = {
        "header": head,
        "smoke": args.smoke,
        "rate": args.rate,
        "seconds": args.seconds,
        "idle_s": args.idle,
        "rows": after,
        "before": before,
        "before_package": before[0]["package"] if before else None,
        "targets": targets(after),
    }
    publish(
        "bench_consumer_wait",
        result,
        smoke=args.smoke or args.inner,
        as_json=args.json,
        print_report=lambda: print_report(result),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
