"""Ring throughput and one-way latency, Python API: one producer process -> one
consumer process over one `Ring`, next to `multiprocessing.Queue` in the same run.

Measured, per value size (100 B, 4 KiB, 64 KiB):
  - per-record API: `RecordAccumulator(ring).send(value)` per record (library defaults:
    a batch is appended every 1000 records or 1 MiB of values), `flush()` at the end;
    this is the per-record row the targets use;
  - immediate-offset path: `ring.append(value)` per record, each its own batch;
  - batch API: `ring.append_batch(values)` with `--batch` records per call, capped at
    `--batch-bytes` of values (1 MiB, as a Kafka producer's batch.size caps a batch:
    16 records at 64 KiB, 256 at 4 KiB);
  - the consumer always `reader.poll()`s and counts the Records it gets (each a
    `Record` with its value copied out to bytes);
  - baseline: `multiprocessing.Queue` put/get per message, and of lists as big as the
    ring's batches;
  - one-way latency at `--rate` records/s, 100 B, sent with `ring.append` (each record
    goes out at once), read with the reader's default idle strategy (DEFAULT_IDLE:
    spins, yields, then the futex) and parking on the futex at once (spin=0): the
    producer paces itself by busy-waiting on CLOCK_MONOTONIC and stamps the send time
    into the value, the consumer subtracts it from its own clock when poll() returns.
    Same pacing for the Queue.
Throughput is wall time from the producer's first append to the consumer holding the
last record, over value bytes only (MB = 1e6 B; keys, headers and framing not counted);
each row is the median of `--repeat` runs, with the range. A row during which other
processes used > 10% of the cores is marked '*'. Also printed: the machine's noise
floor (how often a pinned busy loop is not running), which bounds any tail latency.

Left out: keys and headers, more than one producer or reader, the spill to disk (the
consumer stands in for it and advances the spill position after every poll), process
start-up, and coordinated omission (latency is stamped at the actual send, so a
producer that falls behind its schedule hides that delay). Producer and consumer are
pinned to one core each when the machine has two. Raw results go to
benchmarks/results/ (git-ignored); `--json` prints them instead of the table.

    .venv/bin/python benchmarks/bench_ring.py            # full run, ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_ring.py --smoke    # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import platform
import resource
import signal
import struct
import sys
import time
import traceback
import uuid
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from machine import cpu_busy, cpu_model, fmt_size, git, others_cpu_seconds, publish

from shmbroker import _native
from shmbroker.accumulator import RecordAccumulator
from shmbroker.ring import DEFAULT_SPIN, Ring

ROOT = Path(__file__).resolve().parent.parent
SIZES = (100, 4096, 65536)
KiB = 1024
MiB = 1024 * 1024
# records per throughput run when --messages is not given: ~0.3-3 s each on 2 cores
DEFAULT_MESSAGES = {100: 2_000_000, 4096: 300_000, 65536: 40_000}
SMOKE_MESSAGES = {100: 2_000, 4096: 1_000, 65536: 200}
QUEUE_SHARE = 5  # the Queue runs get 1/5 of the records: they are 5-10x slower
STAMP = struct.Struct("<q")
WARMUP_SAMPLES = 1_000  # latency samples dropped while caches and predictors fill
STALL_S = 20.0  # a consumer that sees nothing this long reports the run as hung

# Targets, checked below and printed PASS/MISS.
TARGET_PER_RECORD_RPS = 2.5e6  # RecordAccumulator.send per record, 100 B
TARGET_PER_RECORD_VS_QUEUE = 10.0
TARGET_BATCH_VS_QUEUE = 2.0  # append_batch vs Queue put of lists, 100 B
TARGET_64K_BYTES_PER_S = 5e9
TARGET_P50_NS = 5_000
TARGET_P999_NS = 100_000


def _pick_clock() -> tuple[Callable[[], int], str]:
    """A clock both processes share: CLOCK_MONOTONIC is system-wide on Linux."""
    clocks: tuple[tuple[Literal["perf_counter", "monotonic"], Callable[[], int]], ...]
    clocks = (("perf_counter", time.perf_counter_ns), ("monotonic", time.monotonic_ns))
    for name, fn in clocks:
        impl = time.get_clock_info(name).implementation
        if "CLOCK_MONOTONIC" in impl:
            return fn, f"time.{name}_ns ({impl})"
    raise SystemExit("no CLOCK_MONOTONIC clock: cross-process latency would be wrong")


CLOCK, CLOCK_NAME = _pick_clock()


# ---- header -------------------------------------------------------------------------


def header() -> dict[str, Any]:
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "commit": commit,
        "crc32c_hardware": _native.crc32c_hardware(),
        "native_module": Path(sys.modules["shmbroker._shmb"].__file__ or "?").name,
        "clock": CLOCK_NAME,
        "cpu_busy_before": round(cpu_busy(), 3),
    }


# ---- process plumbing ---------------------------------------------------------------


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _worker(
    fn: Callable[..., dict[str, Any]], conn: Any, cpu: int | None, *args: Any
) -> None:
    """Child entry: pin, run fn, send its result (or the traceback) to the parent."""
    try:
        _pin(cpu)
        faults = _minor_faults()
        result = fn(*args)
        # page faults in the run: fresh big allocations (bytes, joins) show up here
        result["minor_faults"] = _minor_faults() - faults
        result["cpu_s"] = _cpu_seconds()
        conn.send(result)
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def run_pair(
    ctx: Any,
    producer: Callable[..., dict[str, Any]],
    pargs: tuple[Any, ...],
    consumer: Callable[..., dict[str, Any]],
    cargs: tuple[Any, ...],
    timeout: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run producer and consumer in their own processes; both get a Barrier(2) as
    their first argument to line up after setup. Returns their results."""
    cpus = sorted(os.sched_getaffinity(0))
    pcpu, ccpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    barrier = ctx.Barrier(2)
    others0, t0 = others_cpu_seconds(), time.monotonic()
    pr, pw = ctx.Pipe(duplex=False)
    cr, cw = ctx.Pipe(duplex=False)
    procs = [
        ctx.Process(target=_worker, args=(consumer, cw, ccpu, barrier, *cargs)),
        ctx.Process(target=_worker, args=(producer, pw, pcpu, barrier, *pargs)),
    ]
    for p in procs:
        p.start()
    pw.close()
    cw.close()
    try:
        # whichever side fails first ends the run: the other may be blocked on it
        results: dict[Any, dict[str, Any]] = {}
        names = {pr: "producer", cr: "consumer"}
        deadline = time.monotonic() + timeout
        while len(results) < 2:
            pending = [c for c in (pr, cr) if c not in results]
            ready = mp_connection.wait(pending, max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(
                    f"{' and '.join(names[c] for c in pending)} of "
                    f"{producer.__name__}/{consumer.__name__} sent nothing within "
                    f"{timeout:.0f}s"
                )
            for r in ready:
                conn: Any = pr if r is pr else cr
                try:
                    res = conn.recv()
                except EOFError:
                    res = {"error": "process died without a result"}
                if "error" in res:
                    raise RuntimeError(f"{names[conn]} failed:\n{res['error']}")
                results[conn] = res
        for p in procs:
            p.join(10)
        # CPU time other processes used meanwhile: they competed for our two cores
        ours = {p.pid for p in procs}
        others = sum(
            t - others0.get(pid, 0.0)
            for pid, t in others_cpu_seconds().items()
            if pid not in ours
        )
        other = others / ((time.monotonic() - t0) * len(cpus))
        results[cr]["other_cpu"] = max(0.0, other)
        results[cr]["wall_s"] = time.monotonic() - t0
        return results[pr], results[cr]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


class BenchRing:
    """A fresh ring under a unique /shmb.bench.* name, unlinked on exit."""

    def __init__(self, capacity_bytes: int) -> None:
        self.name = f"/shmb.bench.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self.ring = Ring.create(self.name, capacity_bytes)

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: object) -> None:
        try:
            self.ring.close()
        finally:
            self.ring.unlink()


# ---- ring workers -------------------------------------------------------------------


def _values(size: int, batch: int) -> list[bytes]:
    """batch distinct values: pickle writes an object it has seen in the same dump as
    a back-reference, so [value] * batch would let the Queue send one value, not
    batch of them."""
    pad = b"x" * (size - 4)
    return [i.to_bytes(4, "little") + pad for i in range(batch)]


def ring_produce(
    barrier: Any, name: str, api: str, size: int, n: int, batch: int
) -> dict[str, Any]:
    ring = Ring.open(name)
    values = _values(size, batch)
    value = values[0]
    barrier.wait()
    t0 = CLOCK()
    if api == "send":  # Kafka's producer model: queue per record, append in batches
        acc = RecordAccumulator(ring)
        send = acc.send
        for _ in range(n):
            send(value)
        acc.flush()
    elif api == "append":  # each record its own batch, its offset returned at once
        append = ring.append
        for _ in range(n):
            append(value)
    else:
        append_batch = ring.append_batch
        for _ in range(n // batch):
            append_batch(values)
    t1 = CLOCK()
    full_waits = ring.stat().full_waits
    ring.close()
    return {"start_ns": t0, "sent_ns": t1, "full_waits": full_waits}


def ring_consume(barrier: Any, name: str, size: int, n: int) -> dict[str, Any]:
    ring = Ring.open(name)
    reader = ring.reader()
    poll, spill_advance = reader.poll, ring.spill_advance
    count = polls = 0
    last = None
    barrier.wait()
    while count < n:
        records = poll(STALL_S)
        if not records:
            raise RuntimeError(f"no records for {STALL_S}s after {count} of {n}")
        count += len(records)
        polls += 1
        last = records[-1]
        # nothing spills here: give the space back so the producer can reuse it
        spill_advance(reader.position)
    t1 = CLOCK()
    if last is None or last.offset != n - 1 or len(last.value or b"") != size:
        raise RuntimeError(f"got {count} records, last {last!r:.200}; want {n}")
    ring.close()
    return {"end_ns": t1, "count": count, "polls": polls}


# ---- Queue workers ------------------------------------------------------------------


def queue_produce(
    barrier: Any, q: Any, size: int, n: int, batch: int
) -> dict[str, Any]:
    values = _values(size, batch)
    value = values[0]
    barrier.wait()
    t0 = CLOCK()
    put = q.put
    if batch == 1:
        for _ in range(n):
            put(value)
    else:
        for _ in range(n // batch):
            put(values)
    t1 = CLOCK()
    return {"start_ns": t0, "sent_ns": t1}


def queue_consume(
    barrier: Any, q: Any, size: int, n: int, batch: int
) -> dict[str, Any]:
    get = q.get
    count = 0
    barrier.wait()
    if batch == 1:
        while count < n:
            v = get(timeout=STALL_S)
            count += 1
    else:
        while count < n:
            vs = get(timeout=STALL_S)
            count += len(vs)
            v = vs[-1]
    t1 = CLOCK()
    assert len(v) == size
    return {"end_ns": t1, "count": count}


# ---- latency workers ----------------------------------------------------------------


def _paced_send(
    barrier: Any,
    send: Callable[[bytes], Any],
    size: int,
    n: int,
    rate: float,
    yield_gil: bool = False,
) -> dict[str, Any]:
    """Send n stamped values at rate/s, busy-waiting on the clock between them."""
    pad = b"x" * (size - STAMP.size)
    pack = STAMP.pack
    period_ns = 1e9 / rate
    barrier.wait()
    t0 = CLOCK() + 1_000_000
    late = 0
    for i in range(n):
        due = t0 + int(i * period_ns)
        now = CLOCK()
        if now > due + period_ns:
            late += 1
        while now < due:
            if yield_gil:
                time.sleep(0)
            now = CLOCK()
        send(pack(CLOCK()) + pad)
    return {"late": late, "sent_ns": CLOCK()}


def _percentiles(samples: array[int], skip: int) -> dict[str, float]:
    s = sorted(samples[skip:] if len(samples) > 2 * skip else samples)
    if not s:
        return {}

    def at(q: float) -> float:  # nearest rank
        return float(s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))])

    return {
        "samples": len(s),
        "p50_ns": at(0.50),
        "p99_ns": at(0.99),
        "p999_ns": at(0.999),
        "max_ns": float(s[-1]),
    }


def ring_latency_produce(
    barrier: Any, name: str, size: int, n: int, rate: float
) -> dict[str, Any]:
    ring = Ring.open(name)
    try:
        return _paced_send(barrier, ring.append, size, n, rate)
    finally:
        ring.close()


def ring_latency_consume(
    barrier: Any, name: str, n: int, spin: float
) -> dict[str, Any]:
    ring = Ring.open(name)
    reader = ring.reader(spin=spin)
    poll, spill_advance, unpack = reader.poll, ring.spill_advance, STAMP.unpack_from
    lat = array("q")
    barrier.wait()
    while len(lat) < n:
        records = poll(STALL_S)
        now = CLOCK()
        if not records:
            raise RuntimeError(f"no records for {STALL_S}s after {len(lat)} of {n}")
        for r in records:
            lat.append(now - unpack(r.value or b"")[0])
        spill_advance(reader.position)
    ring.close()
    return _percentiles(lat, WARMUP_SAMPLES)


def queue_latency_produce(
    barrier: Any, q: Any, size: int, n: int, rate: float, yield_gil: bool
) -> dict[str, Any]:
    return _paced_send(barrier, q.put, size, n, rate, yield_gil)


def queue_latency_consume(barrier: Any, q: Any, n: int) -> dict[str, Any]:
    get, unpack = q.get, STAMP.unpack_from
    lat = array("q")
    barrier.wait()
    while len(lat) < n:
        v = get(timeout=STALL_S)
        lat.append(CLOCK() - unpack(v)[0])
    return _percentiles(lat, WARMUP_SAMPLES)


# ---- runs ---------------------------------------------------------------------------


def ring_capacity(size: int, batch: int, ring_bytes: int) -> int:
    """At least ring_bytes, and room for two batches in flight."""
    batch_bytes = batch * (size + 16) + 61
    return _next_pow2(max(ring_bytes, 2 * batch_bytes))


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["records_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs_records_per_s"] = [round(r["records_per_s"]) for r in runs]
    return row


def throughput(
    ctx: Any,
    kind: str,
    api: str,
    size: int,
    n: int,
    batch: int,
    ring_bytes: int,
    timeout: float,
) -> dict[str, Any]:
    n -= n % batch
    cap = ring_capacity(size, batch, ring_bytes)
    if kind == "ring":
        with BenchRing(cap) as name:
            p, c = run_pair(
                ctx,
                ring_produce,
                (name, api, size, n, batch),
                ring_consume,
                (name, size, n),
                timeout,
            )
    else:
        # as much buffering as the ring has, so neither side gets more slack
        q = ctx.Queue(maxsize=max(2, cap // (size * batch)))
        p, c = run_pair(
            ctx,
            queue_produce,
            (q, size, n, batch),
            queue_consume,
            (q, size, n, batch),
            timeout,
        )
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
        "ring_bytes": cap if kind == "ring" else None,
        "full_waits": p.get("full_waits"),
        "polls": c.get("polls"),
        "other_cpu": round(c["other_cpu"], 3),
        "wall_s": round(c["wall_s"], 3),
        "producer_cpu_s": round(p["cpu_s"], 3),
        "consumer_cpu_s": round(c["cpu_s"], 3),
        "producer_minor_faults": p["minor_faults"],
        "consumer_minor_faults": c["minor_faults"],
    }


def latency(
    ctx: Any,
    kind: str,
    n: int,
    rate: float,
    timeout: float,
    *,
    spin: float = DEFAULT_SPIN,
    yield_gil: bool = False,
) -> dict[str, Any]:
    size = 100
    if kind == "ring":
        with BenchRing(_next_pow2(4 * MiB)) as name:
            p, c = run_pair(
                ctx,
                ring_latency_produce,
                (name, size, n, rate),
                ring_latency_consume,
                (name, n, spin),
                timeout,
            )
    else:
        q = ctx.Queue()
        p, c = run_pair(
            ctx,
            queue_latency_produce,
            (q, size, n, rate, yield_gil),
            queue_latency_consume,
            (q, n),
            timeout,
        )
    return {
        "kind": kind,
        "size": size,
        "rate": rate,
        "spin_s": spin,
        "yield_gil": yield_gil,
        "late_sends": p["late"],
        **c,
        "other_cpu": round(c["other_cpu"], 3),
    }


def gap_scan(barrier: Any, seconds: float) -> dict[str, Any]:
    """Busy-read the clock on one pinned CPU and count the gaps: time this process was
    not running (interrupts, the hypervisor). The floor under any tail latency."""
    counts = dict.fromkeys((10_000, 50_000, 100_000, 500_000), 0)
    limits = tuple(counts)
    barrier.wait()
    now = CLOCK()
    end, worst = now + int(seconds * 1e9), 0
    while now < end:
        t = CLOCK()
        gap, now = t - now, t
        if gap > 10_000:
            worst = max(worst, gap)
            for lim in limits:
                if gap > lim:
                    counts[lim] += 1
    return {
        "cpu": os.sched_getaffinity(0),
        "seconds": seconds,
        "max_gap_ns": worst,
        **{f"gaps_over_{lim // 1000}us": c for lim, c in counts.items()},
    }


def noise_floor(ctx: Any, seconds: float) -> list[dict[str, Any]]:
    a, b = run_pair(ctx, gap_scan, (seconds,), gap_scan, (seconds,), seconds + 60)
    return [
        {
            k: (sorted(v) if isinstance(v, set) else v)
            for k, v in r.items()
            if k not in ("minor_faults", "cpu_s", "other_cpu")
        }
        for r in (a, b)
    ]


# ---- report -------------------------------------------------------------------------


def _label(row: dict[str, Any]) -> str:
    return {
        "send": "RecordAccumulator.send",
        "append": "ring.append (immediate offset)",
        "append_batch": f"ring.append_batch x{row['batch']}",
        "put": "Queue put/get",
        "put_list": f"Queue put/get list x{row['batch']}",
    }[row["api"]]


def _pass(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(
    rows: list[dict[str, Any]], lat: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    def find(api: str, size: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["api"], r["size"]) == (api, size)), None)

    out = []

    def check(
        what: str, got: float | None, want: float, unit: str, higher: bool = True
    ) -> None:
        if got is None:
            return
        ok = got >= want if higher else got <= want
        out.append(
            {
                "target": what,
                "got": got,
                "want": want,
                "unit": unit,
                "pass": ok,
                "ratio": got / want,
            }
        )

    # the per-record API is RecordAccumulator.send; ring.append is shown, not judged
    rec, qrec = find("send", 100), find("put", 100)
    bat, qbat = find("append_batch", 100), find("put_list", 100)
    if rec:
        check(
            "per-record (send) 100 B records/s",
            rec["records_per_s"],
            TARGET_PER_RECORD_RPS,
            "rec/s",
        )
        if qrec:
            check(
                "per-record (send) 100 B vs Queue per-msg",
                rec["records_per_s"] / qrec["records_per_s"],
                TARGET_PER_RECORD_VS_QUEUE,
                "x",
            )
    if bat and qbat:
        check(
            "batch 100 B vs Queue batched",
            bat["records_per_s"] / qbat["records_per_s"],
            TARGET_BATCH_VS_QUEUE,
            "x",
        )
    for api, name in (
        ("send", "send"),
        ("append", "ring.append"),
        ("append_batch", "batch"),
    ):
        r = find(api, 65536)
        if r:
            check(
                f"64 KiB {name} bytes/s",
                r["bytes_per_s"],
                TARGET_64K_BYTES_PER_S,
                "B/s",
            )
    ours = next(
        (r for r in lat if r["kind"] == "ring" and r["spin_s"] == DEFAULT_SPIN), None
    )
    if ours:
        check("latency p50 (default idle)", ours["p50_ns"], TARGET_P50_NS, "ns", False)
        check(
            "latency p99.9 (default idle)", ours["p999_ns"], TARGET_P999_NS, "ns", False
        )
    return out


OTHER_CPU_WARN = 0.10  # share of the cores other processes used during a run


def _range(row: dict[str, Any]) -> str:
    runs = row.get("runs_records_per_s") or []
    return f"{min(runs):,}..{max(runs):,}" if len(runs) > 1 else ""


def _flag(row: dict[str, Any]) -> str:
    # /proc/stat counts in 10 ms ticks: too coarse to judge a shorter run
    long_enough = row.get("wall_s", 0) >= 0.5
    return " *" if long_enough and row.get("other_cpu", 0) > OTHER_CPU_WARN else ""


def print_report(
    head: dict[str, Any],
    rows: list[dict[str, Any]],
    lat: list[dict[str, Any]],
    noise: list[dict[str, Any]],
    tg: list[dict[str, Any]],
) -> None:
    print("bench_ring: one producer process -> one consumer process, one ring")
    for k, v in head.items():
        print(f"  {k:16} {v}")
    if head["cpu_busy_before"] > OTHER_CPU_WARN:
        print(
            f"  WARNING: {head['cpu_busy_before']:.0%} of the CPUs were busy before "
            f"the run; other processes skew these figures"
        )
    print()
    print(
        "throughput, median of the runs (value bytes only, MB = 1e6 B; vs Queue: "
        "per-record rows against Queue put/get, batch rows against Queue lists of the "
        "same size; range = slowest..fastest run, records/s)"
    )
    print(
        f"  {'size':>6}  {'api':30} {'records':>9} {'s':>6} {'records/s':>12} "
        f"{'MB/s':>9}  {'vs Queue':>8}  {'range':>21}"
    )
    for r in rows:
        ratio = ""
        if r["kind"] == "ring":
            # per-record rows against Queue per message, batches against lists
            q = next(
                (
                    x
                    for x in rows
                    if x["kind"] == "queue"
                    and x["size"] == r["size"]
                    and (x["batch"] == 1) == (r["api"] != "append_batch")
                ),
                None,
            )
            if q:
                ratio = f"{r['records_per_s'] / q['records_per_s']:.1f}x"
        print(
            f"  {fmt_size(r['size']):>6}  {_label(r):30} {r['records']:>9} "
            f"{r['seconds']:>6.2f} {r['records_per_s']:>12,.0f} "
            f"{r['bytes_per_s'] / 1e6:>9,.0f}  {ratio:>8}  {_range(r):>21}{_flag(r)}"
        )
    if lat:
        print()
        print(
            f"one-way latency, 100 B at {lat[0]['rate']:,.0f} records/s, busy-wait "
            f"pacing (us; first {WARMUP_SAMPLES} samples dropped)"
        )
        print(
            f"  {'what':44} {'samples':>8} {'p50':>8} {'p99':>8} {'p99.9':>8} "
            f"{'max':>9} {'late':>5}"
        )
        q = next((x for x in lat if x["kind"] == "queue" and not x["yield_gil"]), None)
        for r in lat:
            if r["kind"] == "ring":
                what = "ring, reader idles as DEFAULT_IDLE (the default)"
                if r["spin_s"] == 0:
                    what = "ring, reader parks on the futex at once"
            else:
                what = "Queue" + (
                    ", pacing loop yields the GIL"
                    if r["yield_gil"]
                    else ", same pacing"
                )
            ratio = ""
            if r["kind"] == "ring" and q:
                ratio = f"  p50 {q['p50_ns'] / r['p50_ns']:.0f}x lower than Queue"
            print(
                f"  {what:44} {r['samples']:>8} {r['p50_ns'] / 1e3:>8.1f} "
                f"{r['p99_ns'] / 1e3:>8.1f} {r['p999_ns'] / 1e3:>8.1f} "
                f"{r['max_ns'] / 1e3:>9.1f} {r['late_sends']:>5}{_flag(r)}{ratio}"
            )
        print("  late = sends more than one period behind schedule (producer stalled)")
    if noise:
        print()
        print(
            "machine noise floor: a pinned busy loop reading the clock, per CPU; "
            "gaps are time it did not run"
        )
        for r in noise:
            per_s = {
                k.removeprefix("gaps_over_"): v / r["seconds"]
                for k, v in r.items()
                if k.startswith("gaps_over_")
            }
            gaps = ", ".join(f"> {k} {v:,.0f}" for k, v in per_s.items())
            print(
                f"  cpu {r['cpu']}: gaps per second {gaps}; longest "
                f"{r['max_gap_ns'] / 1e3:,.0f} us"
            )
    if any(_flag(r) for r in rows + lat):
        print(
            f"\n  * other processes used > {OTHER_CPU_WARN:.0%} of the cores during "
            f"this row: rerun on a quiet machine"
        )
    if tg:
        print()
        print("targets")
        for t in tg:
            unit = t["unit"]
            if unit == "B/s":
                got, want = f"{t['got'] / 1e9:.2f} GB/s", f"{t['want'] / 1e9:.1f} GB/s"
            elif unit == "ns":
                got, want = f"{t['got'] / 1e3:.1f} us", f"{t['want'] / 1e3:.0f} us"
            elif unit == "x":
                got, want = f"{t['got']:.1f}x", f"{t['want']:.1f}x"
            else:
                got, want = (
                    f"{t['got'] / 1e6:.2f}M {unit}",
                    f"{t['want'] / 1e6:.1f}M {unit}",
                )
            cmp = ">=" if unit != "ns" else "<="
            print(
                f"  {_pass(t['pass'])}  {t['target']:42} {got:>14}  "
                f"(want {cmp} {want}; {t['ratio']:.2f} of target)"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--messages",
        type=int,
        help="records per throughput run "
        "(default: 1M at 100 B, 300k at 4 KiB, 40k at 64 KiB)",
    )
    ap.add_argument(
        "--size",
        type=int,
        action="append",
        help="value size in bytes (repeatable; default 100, 4096, 65536)",
    )
    ap.add_argument("--batch", type=int, default=1000, help="records per batch call")
    ap.add_argument(
        "--batch-bytes",
        type=int,
        default=MiB,
        help="at most this many value bytes per batch call (default 1 MiB, as a Kafka "
        "producer's batch.size; the accumulator's own default is the same)",
    )
    ap.add_argument(
        "--ring-bytes",
        type=int,
        default=16 * MiB,
        help="ring capacity (raised to hold two batches)",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs per throughput row; the median"
    )
    ap.add_argument("--latency-messages", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=10_000, help="latency: records/s")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-queue", action="store_true", help="skip the Queue baseline")
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the benchmark still runs",
    )
    args = ap.parse_args(argv)
    if args.size and any(size < 8 for size in args.size):
        ap.error("--size must be at least 8 (the latency stamp)")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks unlink the rings
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("fork")
    sizes = tuple(args.size or SIZES)
    batch = min(args.batch, 100) if args.smoke else args.batch
    lat_n = 1_500 if args.smoke else args.latency_messages
    timeout = 60.0 if args.smoke else 600.0
    head = header()

    # every configuration `repeat` times, round-robin so a burst of noise hits one
    # run of several; the row reported is the median run
    configs = []
    for size in sizes if not args.no_throughput else ():
        n = args.messages or (SMOKE_MESSAGES if args.smoke else DEFAULT_MESSAGES).get(
            size, max(1000, 4_000_000_000 // size)
        )
        # records per batch call: --batch, capped at --batch-bytes of values
        bsize = max(1, min(batch, args.batch_bytes // size))
        apis = [
            ("ring", "send", 1),
            ("ring", "append", 1),
            ("ring", "append_batch", bsize),
        ]
        if not args.no_queue:
            apis += [("queue", "put", 1), ("queue", "put_list", bsize)]
        for kind, api, b in apis:
            nk = n if args.messages or kind == "ring" else n // QUEUE_SHARE
            configs.append((kind, api, size, max(nk, 2 * b), b))
    runs: dict[tuple[Any, ...], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(1 if args.smoke else args.repeat):
        for c in configs:
            runs[c].append(throughput(ctx, *c, args.ring_bytes, timeout))
    rows = [_median_run(runs[c]) for c in configs]
    lat: list[dict[str, Any]] = []
    noise: list[dict[str, Any]] = []
    if not args.no_latency:
        lat.append(latency(ctx, "ring", lat_n, args.rate, timeout))
        lat.append(latency(ctx, "ring", lat_n, args.rate, timeout, spin=0))
        if not args.no_queue:
            lat.append(latency(ctx, "queue", lat_n, args.rate, timeout))
            lat.append(latency(ctx, "queue", lat_n, args.rate, timeout, yield_gil=True))
        noise = noise_floor(ctx, 0.2 if args.smoke else 3.0)
    tg = targets(rows, lat)

    result = {
        "header": head,
        "smoke": args.smoke,
        "throughput": rows,
        "latency": lat,
        "noise_floor": noise,
        "targets": tg,
    }
    publish(
        "bench_ring",
        result,
        smoke=args.smoke,
        as_json=args.json,
        print_report=lambda: print_report(head, rows, lat, noise, tg),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
