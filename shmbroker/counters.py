"""Counters in shared memory (Aeron's counters): each process that talks to a broker
keeps its named 64-bit counters in one page of its own, `/<broker base>c<pid>`, and the
supervisor scans the pages to serve them as metrics. Counting is a store into mapped
memory, never a call that publishes. A page lives while its process has users of it:
the last `release()` (or the process's exit) unlinks it; the supervisor and
`shmbroker gc` unlink the page of a process that died.

Page layout (version 1), native byte order, values 8-byte aligned:

| offset | bytes | field                                                    |
|--------|-------|----------------------------------------------------------|
| 0      | 8     | magic b"SHMBCNT1"                                        |
| 8      | 4     | layout version                                           |
| 12     | 4     | slots used (written after the slot's name: a reader      |
|        |       | reads no slot beyond it)                                 |
| 16     | 8     | owner pid                                                |
| 24     | 8     | owner start time, f64 seconds (psutil): tells a reused pid |
| 64+512i| 512   | slot i: value i64, kind u8, name u8 length, labels u16   |
|        |       | length, name at +16 (80 bytes), labels JSON at +96       |
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import json
import mmap
import os
import struct
import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import psutil

from shmbroker import shm

MAGIC = b"SHMBCNT1"
VERSION = 1
HEADER_BYTES = 64
SLOT_BYTES = 512
PAGE_BYTES = 256 << 10  # 511 counters: a gateway's per-API histograms use ~300
SLOTS = (PAGE_BYTES - HEADER_BYTES) // SLOT_BYTES
NAME_BYTES = 80
LABELS_BYTES = SLOT_BYTES - 96
_HEADER = struct.Struct("=8sIIqd")
_SLOT = struct.Struct("=qBBH")
_USED_AT = 12

Kind = Literal["counter", "gauge", "bucket", "sum"]
_KINDS: tuple[Kind, ...] = ("counter", "gauge", "bucket", "sum")
# a histogram is one "bucket" slot per upper bound (counts not cumulative, label
# "le"), the last "+Inf", and a "sum" slot in nanoseconds
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                  1.0, 2.5)  # fmt: skip


def page_name(base: str, pid: int) -> str:
    """The page of process pid for the broker whose names start with base."""
    return shm.validate_name(f"{base}c{pid}")


class Counter:
    """One 64-bit value: `add` and `set` are stores into the page."""

    __slots__ = ("_at", "_lock", "_values")

    def __init__(self, values: memoryview, at: int, lock: threading.Lock) -> None:
        self._values = values
        self._at = at
        self._lock = lock

    def add(self, n: int = 1) -> None:
        # the lock: a read-modify-write from two threads would lose one of them
        with self._lock:
            self._values[self._at] += n

    def set(self, value: int) -> None:
        self._values[self._at] = value

    @property
    def value(self) -> int:
        return int(self._values[self._at])


class Histogram:
    """Latencies in seconds into buckets of fixed upper bounds."""

    __slots__ = ("_bounds", "_buckets", "_lock", "_sum", "_values")

    def __init__(self, values: memoryview, buckets: Sequence[int], sum_at: int,
                 bounds: Sequence[float], lock: threading.Lock) -> None:  # fmt: skip
        self._values = values
        self._buckets = tuple(buckets)  # where each bucket's count is, then +Inf's
        self._sum = sum_at
        self._bounds = tuple(bounds)
        self._lock = lock

    def observe(self, seconds: float) -> None:
        i = self._buckets[bisect.bisect_left(self._bounds, seconds)]
        with self._lock:
            self._values[i] += 1
            self._values[self._sum] += int(seconds * 1e9)

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """(cumulative (le, count) pairs ending with "+Inf", sum in seconds)."""
        out, total = [], 0
        for k, le in enumerate([*map(str, self._bounds), "+Inf"]):
            total += int(self._values[self._buckets[k]])
            out.append((le, total))
        return out, int(self._values[self._sum]) / 1e9


def local_histogram(bounds: Sequence[float] = LATENCY_BOUNDS) -> Histogram:
    """A histogram in this process's memory only (its owner reads it itself)."""
    values = memoryview(array("q", bytes(8 * (len(bounds) + 2)))).cast("B").cast("q")
    n = len(bounds) + 1
    return Histogram(values, range(n), n, bounds, threading.Lock())


def _share_as_broker(fd: int, base: str) -> None:
    """A broker of access.group (its info object 0660, owned by the group): give the
    page the same owner group and mode, so that the supervisor, of the broker's user,
    reads the pages of the group's other users."""
    try:
        info = os.stat(shm.path_of(shm.broker_info_name(base)))
    except OSError:
        return
    if info.st_mode & 0o060:
        # a group this process is a member of if it got this far; if not, the page
        # stays its own (0600) and only its counts go unserved
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, info.st_gid)
            os.fchmod(fd, 0o660)


class CounterPage:
    """This process's page for one broker: `CounterPage.acquire(base)` shares it
    among the users of the process (a producer, a consumer, the gateway) and the
    last `release()` unlinks it. Counters are allocated once per (name, labels)
    and found again by that key."""

    _pages: ClassVar[dict[str, CounterPage]] = {}  # base -> this process's page
    _pages_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, base: str, shared: bool = True) -> None:
        self.base = base
        self.name = page_name(base, os.getpid()) if shared else ""
        if shared:
            shm.unlink(self.name)  # a page of a dead process that had our pid
            fd = shm.create(self.name, PAGE_BYTES)
            try:
                _share_as_broker(fd, base)
                self._map = mmap.mmap(fd, PAGE_BYTES)
            finally:
                os.close(fd)
        else:
            self._map = mmap.mmap(-1, PAGE_BYTES)
        me = psutil.Process()
        _HEADER.pack_into(self._map, 0, MAGIC, VERSION, 0, me.pid, me.create_time())
        self.values = memoryview(self._map).cast("q")
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], int] = {}
        self._users = 0
        self._spare: memoryview | None = None  # where counters go once the page is full

    @classmethod
    def acquire(cls, base: str) -> CounterPage:
        with cls._pages_lock:
            page = cls._pages.get(base)
            if page is None or page.name != page_name(base, os.getpid()):  # forked
                page = cls._pages[base] = CounterPage(base)
            page._users += 1
            return page

    @classmethod
    def detached(cls) -> CounterPage:
        """A page in this process's memory only, that nobody scans: where counts go
        when no shared page can be made."""
        page = cls("", shared=False)
        page._users = 1
        return page

    def release(self) -> None:
        if not self.name:
            return
        with self._pages_lock:
            self._users -= 1
            if self._users > 0:
                return
            if self._pages.get(self.base) is self:
                del self._pages[self.base]
        # the mapping stays until the last Counter goes: a late add lands in it
        shm.unlink(self.name)

    def _slot(self, name: str, labels: Mapping[str, str], kind: Kind) -> int:
        key = (name, json.dumps(dict(labels), sort_keys=True, separators=(",", ":")))
        with self._lock:
            at = self._slots.get(key)
            if at is not None:
                return at
            used = len(self._slots)
            name_b, labels_b = key[0].encode(), key[1].encode()
            if len(name_b) > NAME_BYTES or len(labels_b) > LABELS_BYTES:
                raise ValueError(
                    f"counter {key[0]}{key[1]}: name at most {NAME_BYTES} bytes, "
                    f"labels at most {LABELS_BYTES}"
                )
            if used >= SLOTS:
                return -1
            offset = HEADER_BYTES + used * SLOT_BYTES
            _SLOT.pack_into(self._map, offset, 0, _KINDS.index(kind), len(name_b),
                            len(labels_b))  # fmt: skip
            self._map[offset + 16 : offset + 16 + len(name_b)] = name_b
            self._map[offset + 96 : offset + 96 + len(labels_b)] = labels_b
            # the count goes last: a reader sees no slot before its name
            struct.pack_into("=I", self._map, _USED_AT, used + 1)
            at = self._slots[key] = offset // 8
            return at

    def _values_for(self, at: int) -> tuple[memoryview, int]:
        if at >= 0:
            return self.values, at
        if self._spare is None:  # a full page: counted here, not served
            self._spare = memoryview(array("q", bytes(8 * 64))).cast("B").cast("q")
        return self._spare, 0

    def counter(self, name: str, **labels: str) -> Counter:
        values, at = self._values_for(self._slot(name, labels, "counter"))
        return Counter(values, at, self._lock)

    def gauge(self, name: str, **labels: str) -> Counter:
        values, at = self._values_for(self._slot(name, labels, "gauge"))
        return Counter(values, at, self._lock)

    def histogram(self, name: str, bounds: Sequence[float] = LATENCY_BOUNDS,
                  **labels: str) -> Histogram:  # fmt: skip
        slots = [
            self._slot(name, {**labels, "le": le}, "bucket")
            for le in [*map(str, bounds), "+Inf"]
        ]
        total = self._slot(name, labels, "sum")
        if min(slots) < 0 or total < 0:
            return local_histogram(bounds)
        return Histogram(self.values, slots, total, bounds, self._lock)


@atexit.register
def _unlink_pages() -> None:
    for page in list(CounterPage._pages.values()):
        if page.name == page_name(page.base, os.getpid()):  # not a forked parent's
            shm.unlink(page.name)


# ---- reading pages (the supervisor, gc) ---------------------------------------------


@dataclass(frozen=True)
class Sample:
    kind: Kind
    name: str
    labels: tuple[tuple[str, str], ...]
    value: int


@dataclass(frozen=True)
class PageSnapshot:
    name: str
    pid: int
    start_time: float
    samples: list[Sample]

    def alive(self) -> bool:
        """Whether the process that owns the page still runs (not a reused pid)."""
        try:
            process = psutil.Process(self.pid)
            return bool(
                abs(process.create_time() - self.start_time) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def read_page(name: str) -> PageSnapshot | None:
    """A page's counters, or None if it is gone, not a page, or not readable."""
    try:
        fd = shm.open_fd(name)
    except (OSError, ValueError):
        return None
    try:
        if os.fstat(fd).st_size < PAGE_BYTES:
            return None
        page = mmap.mmap(fd, PAGE_BYTES, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    with contextlib.closing(page):
        magic, version, used, pid, start = _HEADER.unpack_from(page, 0)
        if magic != MAGIC or version != VERSION:
            return None
        samples = []
        for i in range(min(used, SLOTS)):
            offset = HEADER_BYTES + i * SLOT_BYTES
            value, kind, name_len, labels_len = _SLOT.unpack_from(page, offset)
            try:
                labels = json.loads(page[offset + 96 : offset + 96 + labels_len])
                samples.append(Sample(
                    _KINDS[kind],
                    page[offset + 16 : offset + 16 + name_len].decode(),
                    tuple(sorted(labels.items())),
                    value,
                ))  # fmt: skip
            except (ValueError, IndexError, AttributeError):
                continue  # a damaged slot: skip it, serve the rest
    return PageSnapshot(name, pid, start, samples)


def page_names(base: str) -> Iterator[str]:
    """The counter pages of the broker whose names start with base."""
    for name in shm.list_names(base.removeprefix("/") + "c"):
        if name.removeprefix(base + "c").isdigit():
            yield name


def dead_owner(name: str) -> str | None:
    """Why the page's process is gone (so the page is garbage), or None if it runs."""
    pid = int(name.rpartition("c")[2])
    if not psutil.pid_exists(pid):
        return f"its process {pid} exited"
    snapshot = read_page(name)
    if snapshot is not None and not snapshot.alive():
        return f"its process {pid} exited (the pid is another process's now)"
    return None
