"""Durable log throughput: the spill from a partition's ring to Kafka-format segment
files, durable appends (flush=always), catch-up reads from the segments, and what the
spill costs a producer. Plain file writes and fsyncs on the same filesystem run
alongside as the baseline.

Measured, on the filesystem of a temp dir (`--dir`, default benchmarks/results/):
  1. spill: a producer process calls `ring.append_batch` (1000 x 100 B or 100 x 4 KiB
     records a batch) into a PartitionLog's ring (64 MiB; segment 1 GiB,
     flush.ms=-1) while its spill thread runs. MB/s of batch bytes in the segments,
     from the first append until the segments hold the last record. Rows: that; the
     same with the producer calling `wait_durable` on its last record, so the run ends
     with the spill thread's fsync; the spill alone (ring filled first, producer idle,
     only `spill()` timed); and a dd-style write of the same bytes, `os.write` of
     1 MiB blocks to a new file, without and with `fdatasync` at the end. One more
     dd row, without a target, writes blocks from a source as large as the ring,
     which is not in the CPU cache, as the ring's bytes are not when they spill.
  2. flush=always (`flush_messages=1`): one producer appends a batch of 1, 100 or
     10,000 records of 100 B, then `ring.wait_durable(last + 1)`, in a loop for
     `--durable-seconds`. Next to the disk's raw fsync rate: 4 KiB `os.write` + `fsync`
     in a loop on one file (appending, as the log does).
  3. catch-up reads: a log of `--log-bytes` (100 B and 4 KiB records) behind a 4 MiB
     ring, so every read comes from the segments. Times `LogReader.read_batches` and
     `LogReader.poll` from offset 0 to the end. The data is in the page cache, and
     cannot be dropped from it without root: these are page-cache reads, not disk.
     Each read pass also counts this process's minor page faults: a read path that
     gets fresh memory from the kernel on every call faults on every page it reads.
  4. producer cost of the spill: 100 B records, `RecordAccumulator.send` per record
     and `append_batch` x1000, into (a) a bare 64 MiB ring whose spill position a
     thread advances as soon as bytes commit (no disk), and (b) a PartitionLog whose
     spill thread writes segments. Records/s from the first append until the last
     record is spilled (the sustained rate: the ring cannot buffer the difference).

The producer process is pinned to one core and this process (spill thread, dd, reads)
to the other, when there are two. Each timed run starts with a freshly synced
filesystem and a warm-up: on a VM that returns freed memory to the host (virtio-balloon
free page reporting), the first touch of each page costs ~2 us and makes the first
GiB written run at ~0.5 GB/s instead of ~5. The warm-up writes the run's size to a
scratch file and deletes it, so the run gets warm pages (`--no-warm` to see the
difference). Runs longer than a second or so still meet cold pages now and then,
which is why 1 writes 512 MiB, not 1 GiB. Rows are the median of `--repeat` runs,
run round-robin, with the range.

Left out: keys, headers, compression, more than one producer or partition, the
broker, reads from disk (see 3), retention (nothing expires), periodic fsync
(flush.ms=-1 except where a producer waits for durability), and index lookups beyond
the one per read. Every run uses fresh `/shmb.bench.*` rings and a fresh directory,
removed in a `finally` (also on Ctrl-C or SIGTERM). Raw results go to
benchmarks/results/ (git-ignored); `--json` prints them instead of the table.

    .venv/bin/python benchmarks/bench_log.py            # full run, ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_log.py --smoke    # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from array import array
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from machine import cpu_busy, cpu_model, fmt_size, git, others_cpu_seconds, publish

from shmbroker import _native, errors, shm
from shmbroker.accumulator import RecordAccumulator
from shmbroker.config import TopicConfig
from shmbroker.log.partition import PartitionLog
from shmbroker.ring import Ring

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SIZES = (100, 4096)
BATCH = {100: 1000, 4096: 100}  # records per append_batch in 1 and 3
DURABLE_BATCHES = (1, 100, 10_000)
PRODUCER_BATCH = 1000  # 4: RecordAccumulator batch_records and append_batch size
RING_BYTES = 64 * MiB
CATCHUP_RING_BYTES = 4 * MiB
SEGMENT_BYTES = 1 * GiB
DD_BLOCK = 1 * MiB
OTHER_CPU_WARN = 0.10  # share of the cores other processes may use during a run
STALL_S = 60.0  # an append or wait blocked this long fails the run
CLOCK = time.monotonic_ns  # CLOCK_MONOTONIC: the same clock in every process

# Targets, checked below and printed PASS/MISS.
TARGET_SPILL_VS_DD = 0.80  # spill MB/s / dd MB/s, each comparison
TARGET_CATCHUP_BYTES_PER_S = 1e9  # read_batches from the segments
TARGET_SPILL_COST = 0.20  # producer records/s lost to the spill, at most

PRODUCER_CPU: int | None = None  # set in main when there are two cores
PARENT_CPU: int | None = None


# ---- header -------------------------------------------------------------------------


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def _filesystem(path: Path) -> dict[str, Any]:
    """The mount holding path, its block device's queue settings, and free space."""
    best = ("?", "", "?", "?")
    where = str(path.resolve())
    for line in _read("/proc/mounts").splitlines():
        dev, mnt, fstype, opts = line.split()[:4]
        mnt = mnt.replace("\\040", " ")
        inside = where == mnt or where.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best[1]):
            best = (dev, mnt, fstype, opts)
    dev, mnt, fstype, opts = best
    queue = Path("/sys/class/block") / Path(dev).name / "queue"
    if not queue.exists():  # a partition: the queue is its disk's
        queue = (Path("/sys/class/block") / Path(dev).name).resolve().parent / "queue"
    st = os.statvfs(path)
    return {
        "dir": str(path),
        "device": dev,
        "mount": mnt,
        "fstype": fstype,
        "mount_options": opts,
        "rotational": _read(queue / "rotational"),
        "scheduler": _read(queue / "scheduler"),
        "free_gb": round(st.f_bavail * st.f_frsize / 1e9, 1),
    }


def header(directory: Path, warm: bool, usable: int) -> dict[str, Any]:
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    balloon = Path("/sys/bus/virtio/drivers/virtio_balloon")
    vm = "/proc/sys/vm/"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "commit": commit,
        "crc32c_hardware": _native.crc32c_hardware(),
        **_filesystem(directory),
        "vm_dirty": (
            f"ratio {_read(vm + 'dirty_ratio')}%, background "
            f"{_read(vm + 'dirty_background_ratio')}%, bytes "
            f"{_read(vm + 'dirty_bytes')}, expire "
            f"{_read(vm + 'dirty_expire_centisecs')} cs"
        ),
        "virtio_balloon": balloon.exists()
        and any(p.name.startswith("virtio") for p in balloon.iterdir()),
        "warm_up": warm,
        "pinning": (
            f"producer cpu {PRODUCER_CPU}, log/spill/dd cpu {PARENT_CPU}"
            if PRODUCER_CPU is not None
            else "none (fewer than 2 cores)"
        ),
        "cpu_busy_before": round(cpu_busy(), 3),
    }


# ---- scratch space: rings, directories, child processes -----------------------------


class Scratch:
    """Everything the benchmark creates: one temp dir, ring names under
    /shmb.bench.*, and child processes. close() removes them all; each run also
    removes its own as it ends."""

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="tmp.bench_log.", dir=parent))
        self.names: list[str] = []
        self.procs: list[Any] = []

    def ring_name(self) -> str:
        name = f"/shmb.bench.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return name

    def subdir(self) -> Path:
        return self.dir / uuid.uuid4().hex[:8]

    def stop_producers(self) -> None:
        """After a failed or interrupted run: a producer still appending would keep
        the closing log spilling."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        self.procs = [p for p in self.procs if p.is_alive()]

    def close(self) -> None:
        try:
            self.stop_producers()
        finally:
            for name in self.names:
                shm.unlink(name)
            shutil.rmtree(self.dir, ignore_errors=True)

    @contextmanager
    def partition_log(self, config: TopicConfig) -> Iterator[PartitionLog]:
        """A fresh PartitionLog (topic "bench", partition 0); closed, its ring unlinked
        and its files deleted on exit."""
        directory, name = self.subdir(), self.ring_name()
        log = PartitionLog.open(directory, name, config, topic="bench", partition=0)
        try:
            yield log
        finally:
            try:
                self.stop_producers()
                log.close()  # spills what is left and fsyncs it, as Kafka's shutdown
            finally:
                shm.unlink(name)
                shutil.rmtree(directory, ignore_errors=True)

    @contextmanager
    def ring(self, capacity_bytes: int) -> Iterator[Ring]:
        name = self.ring_name()
        ring = Ring.create(name, capacity_bytes)
        try:
            yield ring
        finally:
            try:
                self.stop_producers()
                ring.close()
            finally:
                shm.unlink(name)


def prepare(scratch: Scratch, nbytes: int, warm: bool) -> None:
    """Before a timed run: write back what is dirty, then (warm) write nbytes to a
    scratch file and delete it, so the run's page cache and ring get pages this VM
    has just used (freed memory goes back to the host within ~1 s; its next first
    touch costs ~2 us a page). Deleting dirty pages writes nothing."""
    os.sync()
    if not warm:
        return
    path = scratch.dir / "warm.tmp"
    block = b"\0" * DD_BLOCK
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for _ in range(-(-nbytes // DD_BLOCK)):
            os.write(fd, block)
    finally:
        os.close(fd)
        os.unlink(path)


# ---- process plumbing ---------------------------------------------------------------


def _worker(fn: Callable[..., dict[str, Any]], conn: Any, *args: Any) -> None:
    """Child entry: pin, run fn, send its result (or the traceback) to the parent."""
    try:
        if PRODUCER_CPU is not None:
            os.sched_setaffinity(0, {PRODUCER_CPU})
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        result = fn(*args)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        result["producer_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (
            ru0.ru_utime + ru0.ru_stime
        )
        result["producer_minor_faults"] = ru1.ru_minflt - ru0.ru_minflt
        conn.send(result)
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


class Producer:
    """fn(barrier, *args) in a forked process on the producer's core. Fork it before
    this process starts threads; `go()` lines both sides up, `result()` waits."""

    def __init__(self, ctx: Any, scratch: Scratch, fn: Callable[..., Any], *args: Any):
        self.barrier = ctx.Barrier(2)
        self.conn, w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_worker, args=(fn, w, self.barrier, *args), daemon=True
        )
        self.proc.start()
        scratch.procs.append(self.proc)
        w.close()
        self.name = fn.__name__

    def go(self) -> None:
        self.barrier.wait(STALL_S)

    def result(self) -> dict[str, Any]:
        if not self.conn.poll(STALL_S * 2):  # blocks without holding the GIL
            raise RuntimeError(f"{self.name} sent nothing within {STALL_S * 2:.0f}s")
        try:
            res: dict[str, Any] = self.conn.recv()
        except EOFError:
            res = {"error": "the producer process died without a result"}
        self.proc.join(10)
        if "error" in res:
            raise RuntimeError(f"{self.name} failed:\n{res['error']}")
        return res


class OtherCpu:
    """Share of all cores that other processes used while the block ran: they
    competed with ours for two cores. Rows over OTHER_CPU_WARN are marked '*'."""

    def __enter__(self) -> OtherCpu:
        self.t0, self.before = time.monotonic(), others_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        after, wall = others_cpu_seconds(), time.monotonic() - self.t0
        used = sum(t - self.before.get(pid, 0.0) for pid, t in after.items())
        self.share = max(0.0, used / (max(wall, 1e-9) * (os.cpu_count() or 1)))


def _thread_cpu_s(tid: int | None) -> float:
    for t in psutil.Process().threads():
        if t.id == tid:
            return float(t.user_time + t.system_time)
    return float("nan")


def _spill_tid(log: PartitionLog) -> int | None:
    for t in threading.enumerate():
        if t.name == f"spill-{log.name}":
            return t.native_id
    return None


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STALL_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {STALL_S:.0f}s waiting for {what}")
        time.sleep(0.0005)


def _all_spilled(ring: Ring) -> bool:
    s = ring.stat()
    return s.spill_position == s.tail_position


def _values(size: int, count: int) -> list[bytes]:
    pad = b"x" * (size - 4)
    return [i.to_bytes(4, "little") + pad for i in range(count)]


def encoded_batch(size: int, count: int) -> bytes:
    return _native.batch_encode(_native.RecordArrays(_values(size, count)))


# ---- 1. spill throughput ------------------------------------------------------------


def produce_batches(
    barrier: Any, name: str, size: int, batch: int, batches: int, durable_end: bool
) -> dict[str, Any]:
    ring = Ring.open(name)
    values = _values(size, batch)
    append_batch = ring.append_batch
    barrier.wait(STALL_S)
    t0 = CLOCK()
    for _ in range(batches):
        last = append_batch(values, timeout=STALL_S) + batch - 1
    t1 = CLOCK()
    if durable_end and not ring.wait_durable(last + 1, STALL_S):
        raise RuntimeError(f"offset {last} not durable within {STALL_S}s")
    t2 = CLOCK()
    full_waits = ring.stat().full_waits
    ring.close()
    return {
        "start_ns": t0,
        "appended_ns": t1,
        "durable_ns": t2,
        "end_offset": last + 1,
        "full_waits": full_waits,
    }


def spill_config(ring_bytes: int, flush_messages: int = -1) -> TopicConfig:
    """Segments of 1 GiB, no timed fsync (flush.ms=-1)."""
    return TopicConfig(
        ring_bytes=ring_bytes,
        segment_bytes=SEGMENT_BYTES,
        flush_ms=-1,
        flush_messages=flush_messages,
    )


def spill_run(
    ctx: Any,
    scratch: Scratch,
    size: int,
    batches: int,
    ring_bytes: int,
    warm: bool,
    durable_end: bool,
) -> dict[str, Any]:
    """A producer process appends; the spill thread writes segments."""
    batch = BATCH[size]
    prepare(scratch, batches * len(encoded_batch(size, batch)) + ring_bytes, warm)
    with scratch.partition_log(spill_config(ring_bytes)) as log:
        producer = Producer(
            ctx,
            scratch,
            produce_batches,
            log.ring.name,
            size,
            batch,
            batches,
            durable_end,
        )
        log.start()
        tid = _spill_tid(log)
        with OtherCpu() as other:
            producer.go()
            cpu0 = _thread_cpu_s(tid)
            p = producer.result()
            if not durable_end:
                _wait_for(lambda: _all_spilled(log.ring), "the spill")
            end = CLOCK() if not durable_end else p["durable_ns"]
            cpu1 = _thread_cpu_s(tid)
        written = sum(s.size for s in log.segments())
        segments = len(log.segments())
    seconds = (end - p["start_ns"]) / 1e9
    return {
        "kind": "spill+fsync" if durable_end else "spill",
        "size": size,
        "batch": batch,
        "bytes": written,
        "segments": segments,
        "seconds": seconds,
        "bytes_per_s": written / seconds,
        "producer_s": (p["appended_ns"] - p["start_ns"]) / 1e9,
        "producer_busy": p["producer_cpu_s"] / seconds,
        "spill_busy": (cpu1 - cpu0) / seconds,
        "full_waits": p["full_waits"],
        "producer_minor_faults": p["producer_minor_faults"],
        "other_cpu": other.share,
    }


def fill_and_spill(log: PartitionLog, batch: bytes, batches: int) -> tuple[float, int]:
    """Append pre-encoded batches until the ring is full, spill it all, repeat, until
    `batches` are in the segments. No spill thread. Returns (seconds in spill(),
    bytes spilled)."""
    ring, spill = log.ring, log.spill
    spill_ns = moved = appended = 0
    while appended < batches:
        while appended < batches:
            try:
                ring.append_encoded(batch, timeout=0, validate_records=False)
            except errors.RingFull:
                break
            appended += 1
        t0 = CLOCK()
        while n := spill(0):
            moved += n
        spill_ns += CLOCK() - t0
    return spill_ns / 1e9, moved


def spill_alone(
    scratch: Scratch, size: int, batches: int, ring_bytes: int, warm: bool
) -> dict[str, Any]:
    """The spill's own speed: ring filled first, then spill() timed, ring by ring."""
    batch = encoded_batch(size, BATCH[size])
    prepare(scratch, batches * len(batch) + ring_bytes, warm)
    config = spill_config(ring_bytes)
    with scratch.partition_log(config) as log, OtherCpu() as other:
        seconds, moved = fill_and_spill(log, batch, batches)
    return {
        "kind": "spill alone",
        "size": size,
        "batch": BATCH[size],
        "bytes": moved,
        "seconds": seconds,
        "bytes_per_s": moved / seconds,
        "other_cpu": other.share,
    }


def dd_run(
    scratch: Scratch, nbytes: int, sync: bool, warm: bool, source_bytes: int = DD_BLOCK
) -> dict[str, Any]:
    """`dd bs=1M` of nbytes to a new file with os.write, fdatasync at the end if
    sync; the time includes open and close. The 1 MiB blocks come from a source of
    source_bytes: one block stays in the CPU cache, a source as large as the ring
    does not, as the ring's bytes do not when the spill writes them."""
    prepare(scratch, nbytes + source_bytes, warm)
    source = memoryview(bytes([0xA5]) * source_bytes)
    blocks = [source[i : i + DD_BLOCK] for i in range(0, source_bytes, DD_BLOCK)]
    path = scratch.dir / "dd.tmp"
    try:
        with OtherCpu() as other:
            t0 = CLOCK()
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            try:
                left, i = nbytes, 0
                while left > 0:
                    block = blocks[i % len(blocks)]
                    left -= os.write(fd, block if left >= DD_BLOCK else block[:left])
                    i += 1
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            seconds = (CLOCK() - t0) / 1e9
    finally:
        path.unlink(missing_ok=True)
    kind = "dd+fdatasync" if sync else "dd" if source_bytes == DD_BLOCK else "dd cold"
    return {
        "kind": kind,
        "bytes": nbytes,
        "seconds": seconds,
        "bytes_per_s": nbytes / seconds,
        "other_cpu": other.share,
    }


def bench_spill(
    ctx: Any,
    scratch: Scratch,
    sizes: tuple[int, ...],
    spill_bytes: int,
    ring_bytes: int,
    repeat: int,
    warm: bool,
) -> list[dict[str, Any]]:
    configs: list[tuple[str, int, int]] = []
    for size in sizes:
        batch_bytes = len(encoded_batch(size, BATCH[size]))
        batches = max(1, spill_bytes // batch_bytes)
        kinds = ("spill", "spill+fsync", "spill alone", "dd", "dd+fdatasync", "dd cold")
        for kind in kinds:
            configs.append((kind, size, batches))
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(repeat):
        for c in configs:
            kind, size, batches = c
            nbytes = batches * len(encoded_batch(size, BATCH[size]))
            if kind.startswith("dd"):
                source = ring_bytes if kind == "dd cold" else DD_BLOCK
                row = dd_run(scratch, nbytes, kind == "dd+fdatasync", warm, source)
                row["size"] = size
            elif kind == "spill alone":
                row = spill_alone(scratch, size, batches, ring_bytes, warm)
            else:
                row = spill_run(
                    ctx, scratch, size, batches, ring_bytes, warm, kind != "spill"
                )
            runs[c].append(row)
    return [_median(runs[c], "bytes_per_s") for c in configs]


def _median(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs"] = [r[key] for r in runs]
    return row


# ---- 2. flush=always ----------------------------------------------------------------


def produce_durable(
    barrier: Any, name: str, batch: int, seconds: float
) -> dict[str, Any]:
    ring = Ring.open(name)
    values = _values(100, batch)
    value = values[0]
    lat = array("q")
    barrier.wait(STALL_S)
    t0 = now = CLOCK()
    deadline = t0 + int(seconds * 1e9)
    while now < deadline:
        if batch == 1:
            last = ring.append(value, timeout=STALL_S)
        else:
            last = ring.append_batch(values, timeout=STALL_S) + batch - 1
        if not ring.wait_durable(last + 1, STALL_S):
            raise RuntimeError(f"offset {last} not durable within {STALL_S}s")
        t = CLOCK()
        lat.append(t - now)
        now = t
    ring.close()
    return {"seconds": (now - t0) / 1e9, **_latency(lat)}


def _latency(lat: array[int]) -> dict[str, Any]:
    s = sorted(lat)

    def at(q: float) -> float:  # nearest rank
        return s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))] / 1e6

    return {
        "count": len(s),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": s[-1] / 1e6,
    }


def durable_run(
    ctx: Any, scratch: Scratch, batch: int, seconds: float, ring_bytes: int
) -> dict[str, Any]:
    prepare(scratch, 0, False)
    config = spill_config(ring_bytes, flush_messages=1)
    with scratch.partition_log(config) as log:
        producer = Producer(
            ctx, scratch, produce_durable, log.ring.name, batch, seconds
        )
        log.start()
        tid = _spill_tid(log)
        with OtherCpu() as other:
            producer.go()
            cpu0 = _thread_cpu_s(tid)
            p = producer.result()
            cpu1 = _thread_cpu_s(tid)
    return {
        "kind": "durable",
        "batch": batch,
        "appends": p["count"],
        "records": p["count"] * batch,
        "seconds": p["seconds"],
        "appends_per_s": p["count"] / p["seconds"],
        "records_per_s": p["count"] * batch / p["seconds"],
        "p50_ms": p["p50_ms"],
        "p99_ms": p["p99_ms"],
        "max_ms": p["max_ms"],
        "producer_busy": p["producer_cpu_s"] / p["seconds"],
        "spill_busy": (cpu1 - cpu0) / p["seconds"],
        "other_cpu": other.share,
    }


def fsync_rate(scratch: Scratch, seconds: float) -> dict[str, Any]:
    """The disk's raw durable-write rate: append 4 KiB, fsync, repeat."""
    prepare(scratch, 0, False)
    path = scratch.dir / "fsync.tmp"
    block = b"\xa5" * 4096
    lat = array("q")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with OtherCpu() as other:
            t0 = now = CLOCK()
            deadline = t0 + int(seconds * 1e9)
            while now < deadline:
                os.write(fd, block)
                os.fsync(fd)
                t = CLOCK()
                lat.append(t - now)
                now = t
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    s = (now - t0) / 1e9
    stats = _latency(lat)
    return {
        "kind": "fsync",
        "seconds": s,
        "per_s": stats["count"] / s,
        **stats,
        "other_cpu": other.share,
    }


def bench_durable(
    ctx: Any,
    scratch: Scratch,
    seconds: float,
    ring_bytes: int,
    batches: tuple[int, ...],
) -> dict[str, Any]:
    raw = fsync_rate(scratch, seconds)
    rows = [durable_run(ctx, scratch, b, seconds, ring_bytes) for b in batches]
    return {"fsync": raw, "rows": rows}


# ---- 3. catch-up reads --------------------------------------------------------------


def read_all(log: PartitionLog, end: int) -> dict[str, Any]:
    """One pass of LogReader.read_batches from offset 0 to end."""
    reader = log.reader(0)
    read_batches, got, calls = reader.read_batches, 0, 0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = CLOCK()
    while reader.offset < end:
        data = read_batches(0)
        if not data:
            raise RuntimeError(f"read_batches gave nothing at offset {reader.offset}")
        got += len(data)
        calls += 1
    seconds = (CLOCK() - t0) / 1e9
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {
        "bytes": got,
        "calls": calls,
        "seconds": seconds,
        "bytes_per_s": got / seconds,
        "minor_faults": faults,
    }


def poll_all(log: PartitionLog, end: int) -> float:
    """Seconds for LogReader.poll to return every record from offset 0 to end."""
    reader = log.reader(0)
    poll, count = reader.poll, 0
    t0 = CLOCK()
    while reader.offset < end:
        count += len(poll(0))
    seconds = (CLOCK() - t0) / 1e9
    if count != end:
        raise RuntimeError(f"poll gave {count} records of {end}")
    return seconds


def catchup(
    scratch: Scratch, size: int, log_bytes: int, repeat: int, warm: bool
) -> dict[str, Any]:
    """Fill a log through a small ring (untimed), then read it all back."""
    batch = encoded_batch(size, BATCH[size])
    batches = max(1, log_bytes // len(batch))
    prepare(scratch, batches * len(batch), warm)
    with scratch.partition_log(spill_config(CATCHUP_RING_BYTES)) as log:
        fill_and_spill(log, batch, batches)
        end = log.high_watermark
        if log.log_end_offset != end:
            raise RuntimeError("the fill left records in the ring only")
        stored = sum(s.size for s in log.segments())
        os.sync()  # no writeback while we read
        with OtherCpu() as other:
            reads = [read_all(log, end) for _ in range(repeat)]
            poll_s = poll_all(log, end)
        segments = len(log.segments())
    if any(r["bytes"] != stored for r in reads):
        raise RuntimeError(f"read {reads[0]['bytes']} bytes; the log holds {stored}")
    median = _median(reads, "bytes_per_s")
    return {
        "size": size,
        "batch": BATCH[size],
        "bytes": stored,
        "records": end,
        "segments": segments,
        "read_calls": median["calls"],
        "read_seconds": median["seconds"],
        "read_bytes_per_s": median["bytes_per_s"],
        "read_runs_bytes_per_s": median["runs"],
        "read_runs_minor_faults": [r["minor_faults"] for r in reads],
        "poll_seconds": poll_s,
        "poll_records_per_s": end / poll_s,
        "poll_value_bytes_per_s": end * size / poll_s,
        "seconds": poll_s + sum(r["seconds"] for r in reads),
        "other_cpu": other.share,
    }


# ---- 4. what the spill costs a producer ---------------------------------------------


def produce_records(
    barrier: Any, name: str, api: str, n: int, batch: int
) -> dict[str, Any]:
    ring = Ring.open(name)
    values = _values(100, batch)
    value = values[0]
    barrier.wait(STALL_S)
    t0 = CLOCK()
    if api == "accumulator":
        acc = RecordAccumulator(ring, batch_records=batch, timeout=STALL_S)
        send = acc.send
        for _ in range(n):
            send(value)
        acc.flush()
    else:
        append_batch = ring.append_batch
        for _ in range(n // batch):
            append_batch(values, timeout=STALL_S)
    t1 = CLOCK()
    stat = ring.stat()
    ring.close()
    return {
        "start_ns": t0,
        "appended_ns": t1,
        "end_offset": stat.next_offset,
        "full_waits": stat.full_waits,
    }


def _advance_spill(ring: Ring, stop: threading.Event) -> None:
    """Stands in for the spill without a disk: frees bytes as soon as they commit."""
    native = ring.native
    position = ring.stat().spill_position
    while not stop.is_set():
        tail = native.wait(position, 100, 0)
        if tail > position:  # EMPTY, after the timeout, is negative
            ring.spill_advance(tail)
            position = tail


def producer_run(
    ctx: Any,
    scratch: Scratch,
    api: str,
    n: int,
    spill: bool,
    ring_bytes: int,
    warm: bool,
) -> dict[str, Any]:
    """n records from a producer process; spill: a PartitionLog spills them to a
    segment, else a thread frees the ring's bytes as soon as they commit."""
    n -= n % PRODUCER_BATCH
    batch_bytes = len(encoded_batch(100, PRODUCER_BATCH))
    prepare(
        scratch, ring_bytes + (n // PRODUCER_BATCH * batch_bytes if spill else 0), warm
    )
    with ExitStack() as stack:
        if spill:
            log = stack.enter_context(scratch.partition_log(spill_config(ring_bytes)))
            ring = log.ring
        else:
            ring = stack.enter_context(scratch.ring(ring_bytes))
        # forked before this process starts a thread
        producer = Producer(
            ctx, scratch, produce_records, ring.name, api, n, PRODUCER_BATCH
        )
        if spill:
            log.start()
            tid = _spill_tid(log)
        else:
            stop = threading.Event()
            thread = threading.Thread(target=_advance_spill, args=(ring, stop))
            thread.start()
            stack.callback(thread.join)
            stack.callback(stop.set)
            tid = thread.native_id
        with OtherCpu() as other:
            producer.go()
            cpu0 = _thread_cpu_s(tid)
            p = producer.result()
            _wait_for(lambda: _all_spilled(ring), "the spill")
            end, cpu1 = CLOCK(), _thread_cpu_s(tid)
    seconds = (end - p["start_ns"]) / 1e9
    producer_s = (p["appended_ns"] - p["start_ns"]) / 1e9
    return {
        "api": api,
        "spill": spill,
        "records": n,
        "seconds": seconds,
        "records_per_s": n / seconds,
        "producer_records_per_s": n / producer_s,
        "producer_busy": p["producer_cpu_s"] / seconds,
        "spill_busy": (cpu1 - cpu0) / seconds,
        "full_waits": p["full_waits"],
        "other_cpu": other.share,
    }


def bench_producer(
    ctx: Any, scratch: Scratch, n: int, ring_bytes: int, repeat: int, warm: bool
) -> list[dict[str, Any]]:
    configs = [(api, s) for api in ("accumulator", "append_batch") for s in (0, 1)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(repeat):
        for api, s in configs:
            runs[(api, s)].append(
                producer_run(ctx, scratch, api, n, bool(s), ring_bytes, warm)
            )
    return [_median(runs[c], "records_per_s") for c in configs]


# ---- targets and report -------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def check(
        what: str, got: float, want: float, unit: str, higher: bool = True
    ) -> None:
        ok = got >= want if higher else got <= want
        out.append({"target": what, "got": got, "want": want, "unit": unit, "pass": ok})

    spill = result.get("spill") or []

    def find(kind: str, size: int) -> dict[str, Any] | None:
        return next((r for r in spill if (r["kind"], r["size"]) == (kind, size)), None)

    for size in sorted({r["size"] for r in spill}):
        s, sf = find("spill", size), find("spill+fsync", size)
        dd, dds = find("dd", size), find("dd+fdatasync", size)
        label = fmt_size(size)
        for name, ours, base in (
            (f"1. spill {label} vs dd (page cache)", s, dd),
            (f"1. spill {label} vs dd+fdatasync", s, dds),
            (f"1. spill+fsync {label} vs dd+fdatasync", sf, dds),
        ):
            if ours and base:
                check(
                    name,
                    ours["bytes_per_s"] / base["bytes_per_s"],
                    TARGET_SPILL_VS_DD,
                    "x",
                )
    for r in result.get("catchup") or []:
        check(
            f"3. catch-up read_batches {fmt_size(r['size'])}",
            r["read_bytes_per_s"],
            TARGET_CATCHUP_BYTES_PER_S,
            "B/s",
        )
    prod = result.get("producer") or []
    for api in ("accumulator", "append_batch"):
        bare = next((r for r in prod if r["api"] == api and not r["spill"]), None)
        disk = next((r for r in prod if r["api"] == api and r["spill"]), None)
        if bare and disk:
            check(
                f"4. spill cost, {api}",
                1 - disk["records_per_s"] / bare["records_per_s"],
                TARGET_SPILL_COST,
                "%",
                higher=False,
            )
    return out


def _mb(b: float) -> str:
    return f"{b / 1e6:,.0f}"


def _busy(x: float | None) -> str:
    return "" if x is None else f"{x:.0%}"


def _range(row: dict[str, Any], scale: float = 1e6, digits: int = 0) -> str:
    runs = row.get("runs") or []
    if len(runs) < 2:
        return ""
    return f"{min(runs) / scale:,.{digits}f}..{max(runs) / scale:,.{digits}f}"


BUSY = 0.85  # a side this busy (CPU time / wall time) is what bounds the run


def _bound(row: dict[str, Any]) -> str:
    if "producer_busy" not in row:
        return ""
    sides = [
        name
        for name, key in (("producer", "producer_busy"), ("spill", "spill_busy"))
        if row[key] >= BUSY
    ]
    if len(sides) == 2:
        return "both"
    if sides:
        return sides[0]
    return "fsync" if row.get("kind") == "spill+fsync" else "neither"


def _flag(row: dict[str, Any]) -> str:
    """'*' when other processes used the cores during the run (psutil counts CPU in
    10 ms ticks: too coarse to judge a run much shorter than a second)."""
    long_enough = row.get("seconds", 0) >= 0.3
    return " *" if long_enough and row.get("other_cpu", 0) > OTHER_CPU_WARN else ""


def print_report(result: dict[str, Any]) -> None:
    head = result["header"]
    print("bench_log: the durable partition log, next to plain writes and fsyncs")
    for k, v in head.items():
        print(f"  {k:16} {v}")
    if head["cpu_busy_before"] > 0.10:
        print(
            f"  WARNING: {head['cpu_busy_before']:.0%} of the CPUs were busy before "
            f"the run; other processes skew these figures"
        )
    spill = result.get("spill")
    if spill:
        print()
        print(
            f"1. spill: producer process -> append_batch -> ring "
            f"({result['ring_bytes'] // MiB} MiB) -> spill thread -> segment "
            f"({SEGMENT_BYTES // GiB} GiB), flush.ms=-1; MB = 1e6 B of batches; "
            f"median of {result['repeat']}, range MB/s"
        )
        print(
            f"  {'size':>6} {'batch':>6}  {'what':34} {'MB':>6} {'s':>6} {'MB/s':>7}"
            f" {'vs dd':>6} {'vs dd+sync':>10} {'prod cpu':>8} {'spill cpu':>9}"
            f" {'full waits':>10} {'bound':>8}  {'range':>11}"
        )
        what = {
            "spill": "spill, producer running",
            "spill+fsync": "spill + fsync (producer waits)",
            "spill alone": "spill() alone, ring pre-filled",
            "dd": "dd 1 MiB os.write, page cache",
            "dd+fdatasync": "dd 1 MiB os.write + fdatasync",
            "dd cold": "dd, ring-sized source (no target)",
        }
        for r in spill:
            dd = next(x for x in spill if x["kind"] == "dd" and x["size"] == r["size"])
            dds = next(
                x
                for x in spill
                if x["kind"] == "dd+fdatasync" and x["size"] == r["size"]
            )
            vs_dd = vs_sync = ""
            if not r["kind"].startswith("dd"):
                vs_dd = f"{r['bytes_per_s'] / dd['bytes_per_s']:.2f}x"
                vs_sync = f"{r['bytes_per_s'] / dds['bytes_per_s']:.2f}x"
            batch = f"x{r['batch']}" if "batch" in r else ""
            print(
                f"  {fmt_size(r['size']):>6} {batch:>6}  {what[r['kind']]:34} "
                f"{_mb(r['bytes']):>6} {r['seconds']:>6.2f} {_mb(r['bytes_per_s']):>7}"
                f" {vs_dd:>6} {vs_sync:>10} {_busy(r.get('producer_busy')):>8}"
                f" {_busy(r.get('spill_busy')):>9} {r.get('full_waits', ''):>10}"
                f" {_bound(r):>8}  {_range(r):>11}{_flag(r)}"
            )
        print(
            "  cpu = CPU time / wall time of the producer process and of the spill "
            "thread; full waits = appends that found the ring full; bound = the side "
            f"over {BUSY:.0%} busy (fsync: neither, the run ends in the spill's fsync)"
        )
    durable = result.get("durable")
    if durable:
        raw = durable["fsync"]
        print()
        print(
            "2. flush=always (flush.messages=1): append a batch of 100 B records, "
            "then ring.wait_durable(last + 1); one producer"
        )
        print(
            f"  {'batch':>7} {'appends/s':>10} {'records/s':>11} {'MB/s':>6} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'vs fsync/s':>10} "
            f"{'prod cpu':>8} {'spill cpu':>9}"
        )
        for r in durable["rows"]:
            print(
                f"  {r['batch']:>7,} {r['appends_per_s']:>10,.0f} "
                f"{r['records_per_s']:>11,.0f} {_mb(r['records_per_s'] * 100):>6} "
                f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['max_ms']:>7.1f} "
                f"{r['appends_per_s'] / raw['per_s']:>9.2f}x "
                f"{_busy(r['producer_busy']):>8} {_busy(r['spill_busy']):>9}{_flag(r)}"
            )
        print(
            f"  raw disk: 4 KiB os.write + fsync, one file: {raw['per_s']:,.0f}/s, "
            f"p50 {raw['p50_ms']:.3f} ms, p99 {raw['p99_ms']:.3f} ms, max "
            f"{raw['max_ms']:.1f} ms{_flag(raw)}"
        )
    catch = result.get("catchup")
    if catch:
        print()
        print(
            f"3. catch-up reads from offset 0 to the end, from the segments (ring "
            f"{CATCHUP_RING_BYTES // MiB} MiB holds none of it); PAGE-CACHE reads: "
            f"the page cache cannot be dropped without root"
        )
        print(
            f"  {'size':>6} {'batch':>6} {'MB':>6} {'records':>11} "
            f"{'read_batches GB/s':>17} {'range':>11} {'faults/run':>21}  "
            f"{'poll records/s':>14} {'poll value MB/s':>15}"
        )
        for r in catch:
            runs = r["read_runs_bytes_per_s"]
            faults = "/".join(str(f) for f in r["read_runs_minor_faults"])
            rng = (
                f"{min(runs) / 1e9:.2f}..{max(runs) / 1e9:.2f}" if len(runs) > 1 else ""
            )
            print(
                f"  {fmt_size(r['size']):>6} {'x' + str(r['batch']):>6} "
                f"{_mb(r['bytes']):>6} {r['records']:>11,} "
                f"{r['read_bytes_per_s'] / 1e9:>17.2f} {rng:>11} {faults:>21}  "
                f"{r['poll_records_per_s']:>14,.0f} "
                f"{_mb(r['poll_value_bytes_per_s']):>15}"
                f"{_flag(r)}"
            )
        print(
            "  faults/run = minor page faults of this process in each read_batches "
            "pass: a pass that gets fresh memory for every read faults on every "
            "4 KiB page it reads"
        )
    prod = result.get("producer")
    if prod:
        print()
        print(
            f"4. producer, 100 B records, batches of {PRODUCER_BATCH}: ring "
            f"({result['ring_bytes'] // MiB} MiB) freed by a thread (no disk) vs "
            f"PartitionLog spilling to a segment; records/s until all is spilled; "
            f"median of {result['repeat']}"
        )
        print(
            f"  {'api':22} {'spill':22} {'records':>10} {'records/s':>11} "
            f"{'producer-side':>13} {'range (M/s)':>11} {'prod cpu':>8} "
            f"{'spill cpu':>9} {'full waits':>10} {'cost':>6}"
        )
        for r in prod:
            bare = next(x for x in prod if x["api"] == r["api"] and not x["spill"])
            cost = (
                f"{1 - r['records_per_s'] / bare['records_per_s']:.0%}"
                if r["spill"]
                else ""
            )
            api = (
                "RecordAccumulator.send"
                if r["api"] == "accumulator"
                else f"append_batch x{PRODUCER_BATCH}"
            )
            how = "segments (spill thread)" if r["spill"] else "none (thread frees)"
            print(
                f"  {api:22} {how:22} {r['records']:>10,} {r['records_per_s']:>11,.0f}"
                f" {r['producer_records_per_s']:>13,.0f} {_range(r, 1e6, 2):>11} "
                f"{_busy(r['producer_busy']):>8} {_busy(r['spill_busy']):>9} "
                f"{r['full_waits']:>10} {cost:>6}{_flag(r)}"
            )
        print(
            "  producer-side = records / time to the last append (the ring may still "
            "hold up to its size unspilled)"
        )
    rows = [
        *(result.get("spill") or []),
        *(result.get("durable", {}).get("rows") or []),
        *(result.get("catchup") or []),
        *(result.get("producer") or []),
    ]
    if any(_flag(r) for r in rows):
        print(
            f"\n  * other processes used > {OTHER_CPU_WARN:.0%} of the cores during "
            f"this row: rerun on a quiet machine"
        )
    tg = result["targets"]
    if tg:
        print()
        print("targets")
        for t in tg:
            unit = t["unit"]
            if unit == "B/s":
                got, want = (
                    f"{t['got'] / 1e9:.2f} GB/s",
                    f">= {t['want'] / 1e9:.1f} GB/s",
                )
                ratio = f"{t['got'] / t['want']:.3f} of target"
            elif unit == "%":
                got, want = f"{t['got']:.0%}", f"<= {t['want']:.0%}"
                ratio = f"producer keeps {1 - t['got']:.0%}"
            else:
                got, want = f"{t['got']:.3f}x", f">= {t['want']:.2f}x"
                ratio = f"{t['got'] / t['want']:.3f} of target"
            verdict = "PASS" if t["pass"] else "MISS"
            print(f"  {verdict}  {t['target']:40} {got:>10}  (want {want}; {ratio})")


# ---- main ---------------------------------------------------------------------------


PARTS = ("spill", "durable", "catchup", "producer")


def main(argv: list[str] | None = None) -> int:
    global PRODUCER_CPU, PARENT_CPU
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--dir",
        type=Path,
        default=RESULTS,
        help="make the temp dir here: the filesystem measured (default %(default)s)",
    )
    ap.add_argument(
        "--spill-bytes", type=int, default=512 * MiB, help="1: batch bytes a run"
    )
    ap.add_argument(
        "--durable-seconds", type=float, default=2.0, help="2: seconds a batch size"
    )
    ap.add_argument(
        "--log-bytes", type=int, default=1 * GiB, help="3: size of the log read"
    )
    ap.add_argument(
        "--records", type=int, default=4_000_000, help="4: records a producer run"
    )
    ap.add_argument(
        "--ring-bytes", type=int, default=RING_BYTES, help="ring of 1, 2 and 4"
    )
    ap.add_argument("--repeat", type=int, default=5, help="runs a row in 1, 3, 4")
    ap.add_argument(
        "--size",
        type=int,
        action="append",
        help="record size for 1 and 3 (repeatable; default 100 and 4096)",
    )
    ap.add_argument(
        "--only", action="append", choices=PARTS, help="run only these parts"
    )
    ap.add_argument(
        "--no-warm", action="store_true", help="no warm-up write before each run"
    )
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the benchmark still runs",
    )
    args = ap.parse_args(argv)
    sizes = tuple(args.size or SIZES)
    for size in sizes:
        BATCH.setdefault(size, max(1, 400_000 // size))
    if args.smoke:
        args.spill_bytes, args.log_bytes = 4 * MiB, 4 * MiB
        args.records, args.durable_seconds = 50_000, 0.2
        args.ring_bytes, args.repeat = 4 * MiB, 1
    parts = tuple(args.only or PARTS)
    durable_batches = (1, 100) if args.smoke else DURABLE_BATCHES

    # SIGTERM unwinds like Ctrl-C, so the finally blocks unlink rings and files
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        PRODUCER_CPU, PARENT_CPU = cpus[0], cpus[1]
        os.sched_setaffinity(0, {PARENT_CPU})  # before any thread: they inherit it
    ctx = mp.get_context("fork")
    warm = not args.no_warm
    scratch = Scratch(args.dir)
    try:
        result: dict[str, Any] = {
            "header": header(scratch.dir, warm, len(cpus)),
            "smoke": args.smoke,
            "repeat": args.repeat,
            "ring_bytes": args.ring_bytes,
        }
        if "spill" in parts:
            result["spill"] = bench_spill(
                ctx,
                scratch,
                sizes,
                args.spill_bytes,
                args.ring_bytes,
                args.repeat,
                warm,
            )
        if "durable" in parts:
            result["durable"] = bench_durable(
                ctx, scratch, args.durable_seconds, args.ring_bytes, durable_batches
            )
        if "catchup" in parts:
            result["catchup"] = [
                catchup(scratch, size, args.log_bytes, args.repeat, warm)
                for size in sizes
            ]
        if "producer" in parts:
            result["producer"] = bench_producer(
                ctx, scratch, args.records, args.ring_bytes, args.repeat, warm
            )
    finally:
        scratch.close()
    result["targets"] = targets(result)
    publish(
        "bench_log",
        result,
        smoke=args.smoke,
        as_json=args.json,
        print_report=lambda: print_report(result),
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have removed rings and files
        print("interrupted", file=sys.stderr)
        sys.exit(130)
