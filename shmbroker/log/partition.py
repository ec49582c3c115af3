"""A partition's durable log: its ring plus its directory `<data-dir>/<topic>-<part>/`
of Kafka-format segments, driven by one spill thread.

- Spill: committed ring bytes [spill, tail) go to the active segment as they are, one
  pwrite per run of batches, then the spill position moves so appenders may reuse the
  space. A producer blocks only when its ring is full of unspilled bytes.
- Flush: fsync by flush.messages / flush.ms, and at once when a producer waits for
  durability; then the ring's durable offset moves and wakes it.
- Retention: whole old segments go (never the active one); the log start moves.
- Recovery: segments from the recovery point on are validated batch by batch and cut
  at a torn or corrupt tail; a surviving ring's unspilled batches are spilled first;
  a lost ring is recreated at the log end offset.
- Reads: log/reader.py; the writer is a `PartitionView` of its own for them.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
import time
from pathlib import Path

from shmbroker import _native, counters, errors
from shmbroker.config import TopicConfig
from shmbroker.log.checkpoint import read_offset, write_offset
from shmbroker.log.index import NO_TIMESTAMP
from shmbroker.log.reader import LogReader, offset_for_time
from shmbroker.log.segment import DELETED_SUFFIX, LOG_SUFFIX, LogSegment
from shmbroker.ring import DEFAULT_SPIN, Ring

log = logging.getLogger(__name__)

F = _native.SCAN_FIELDS
POSITION, BYTES, BASE_OFFSET = _native.POSITION, _native.BYTES, _native.BASE_OFFSET
LAST_OFFSET, MAX_TIMESTAMP, RECORDS = (
    _native.LAST_OFFSET,
    _native.MAX_TIMESTAMP,
    _native.RECORDS,
)
RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
CHECKPOINT_INTERVAL = 1.0  # seconds between recovery-point writes (Kafka: 60 s)
FLUSH_TIMES = counters.local_histogram()  # the process's fsyncs: broker/metrics.py
MAX_INDEX_RELATIVE = 2**31 - 1  # an index entry holds offset - base as int32
IDLE_WAKE_MS = 100  # the spill thread wakes this often while it has to flush
RETENTION_INTERVAL = 30.0  # seconds between retention checks (Kafka: 300). With
# nothing to flush, the spill thread sleeps this long on the ring's futex (new bytes
# wake it): 2,000 idle partitions waking every 100 ms kept the GIL so busy that
# control requests took seconds
SPILL_RETRY_MAX = 1.0  # seconds between retries of a failing spill, at most
# After a small spill (a trickle of batches), while no producer waits on it (for
# room or for an fsync) and the ring is less than half full, the spill thread lets
# the batches gather this long instead of sleeping on the ring's futex: woken by
# every append, at 10k records/s it took 0.2 of a core and every append a wake-up
# syscall, and the consumer's latency 4-6 us (bench_consumer_wait: p50 19.7-21.9 ->
# 15.1-15.7 us, the supervisor 0.20 -> 0.07 CPU-s/s). Not after a large one: at full
# speed the wake-ups are few, and a producer freed of them laps its consumer
# sooner (bench_peers, 100 B per record: 0.85x). An fsync waited on comes at most
# this late.
SPILL_LINGER = 0.001
SPILL_LINGER_BYTES = 64 << 10  # a spill this large or larger is not a trickle


class PartitionLog:
    """Open with `PartitionLog.open`; `start()` runs the spill thread, or call
    `spill()` yourself. Thread-safe: readers may run while the spill writes."""

    def __init__(
        self,
        directory: Path,
        ring: Ring,
        segments: list[LogSegment],
        config: TopicConfig,
        topic: str,
        partition: int,
        log_start_offset: int,
    ) -> None:
        self.directory = directory
        self.ring = ring
        self.config = config
        self.topic = topic
        self.partition = partition
        self.name = f"{topic}-{partition}"
        self._segments = segments
        self._lock = threading.Lock()  # guards the segment list
        self.log_start_offset = log_start_offset
        stat = ring.stat()
        self._spill_position = stat.spill_position
        self._durable_offset = stat.durable_offset  # only this log moves it
        self._scan = _native.Scan()
        self._unflushed: list[LogSegment] = []
        self._unflushed_records = 0
        self._last_flush = time.monotonic()
        self._last_checkpoint = 0.0
        self._checkpointed = read_offset(directory / RECOVERY_POINT_FILE)
        self._last_retention = 0.0
        self.recovery_point = self.log_end_offset
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.spill_error: OSError | None = None

    # ---- open and recover -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        ring_name: str,
        config: TopicConfig | None = None,
        *,
        topic: str,
        partition: int,
    ) -> PartitionLog:
        """Open (or create) the partition, recovering what a crash left behind."""
        config = config or TopicConfig()
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in directory.glob(f"*{DELETED_SUFFIX}"):
            leftover.unlink()  # a retention that died between rename and unlink
        bases = sorted(
            int(p.name[: -len(LOG_SUFFIX)]) for p in directory.glob(f"*{LOG_SUFFIX}")
        )
        log_start = read_offset(directory / LOG_START_FILE) or 0
        recovery_point = read_offset(directory / RECOVERY_POINT_FILE) or 0
        started = time.monotonic()
        checked, cut = 0, 0  # segments validated batch by batch, bytes they lost
        segments: list[LogSegment] = []
        for i, base in enumerate(bases):
            segment = LogSegment(directory, base, config.index_interval_bytes)
            segments.append(segment)
            later = bases[i + 1] if i + 1 < len(bases) else None
            if later is not None and later <= recovery_point:
                segment.load()  # flushed before the crash: trust it
                continue
            checked += 1
            lost = segment.recover()
            cut += lost
            if lost and i + 1 < len(bases):
                for base_after in bases[i + 1 :]:  # nothing may follow a corrupt tail
                    log.warning(
                        "recovery of %s: deleting segment %d after a corrupt one",
                        directory,
                        base_after,
                    )
                    LogSegment(directory, base_after).delete()
                break
        if not segments:
            segments.append(
                LogSegment(directory, log_start, config.index_interval_bytes)
            )
        for segment, after in itertools.pairwise(segments):
            segment.seal()  # a rebuilt index lacks the largest timestamp: time
            # lookups skip segments by it
            if segment.next_offset != after.base_offset:
                log.error(
                    "partition %s: offsets %d..%d are missing from the log: %s ends "
                    "at offset %d and the next segment begins at %d (truncated or "
                    "deleted while the broker was stopped?); readers reaching them "
                    "get an error",
                    directory,
                    segment.next_offset,
                    after.base_offset - 1,
                    segment.path,
                    segment.next_offset,
                    after.base_offset,
                )
        log_start = max(log_start, segments[0].base_offset)
        log_end = segments[-1].next_offset
        if log_end > recovery_point or cut:  # written past the last checkpoint
            log.log(
                logging.WARNING if cut else logging.INFO,
                "recovered %s after an unclean stop: %d records written after the "
                "recovery point (offset %d) kept, %d segments checked batch by "
                "batch, %d bytes of a torn or corrupt tail cut, in %.1f ms",
                directory,
                max(0, log_end - recovery_point),
                recovery_point,
                checked,
                cut,
                (time.monotonic() - started) * 1000,
            )
        for segment in segments:
            segment.flush()  # what recovery kept is now durable
        ring = cls._attach_ring(ring_name, config, log_end)
        partition_log = cls(
            directory, ring, segments, config, topic, partition, log_start
        )
        partition_log._catch_up_ring()
        ring.set_log_start_offset(log_start)
        partition_log.flush()
        partition_log._checkpoint(force=True)
        return partition_log

    @staticmethod
    def _attach_ring(ring_name: str, config: TopicConfig, log_end: int) -> Ring:
        try:
            ring = Ring.open(ring_name)
        except errors.NotFound:
            return Ring.create(ring_name, config.ring_bytes, base_offset=log_end)
        stat = ring.stat()
        if stat.next_offset < log_end:  # a ring older than the log: not ours to keep
            log.warning(
                "ring %s ends at offset %d, before the log's end %d: recreating",
                ring_name,
                stat.next_offset,
                log_end,
            )
            ring.unlink()
            ring.close()
            return Ring.create(ring_name, config.ring_bytes, base_offset=log_end)
        spilled = ring.spilled_offset()
        if spilled <= log_end:
            return ring
        # recovery cut batches the spill had written (damaged on disk since): the
        # ring spills them again if it still holds them
        try:
            ring.spill_rewind(ring.seek(log_end), log_end)
        except (errors.OffsetOutOfRange, errors.Lapped):
            log.error(
                "ring %s: offsets %d..%d are lost: damaged in the segments and no "
                "longer in the ring; the partition goes on from offset %d",
                ring_name,
                log_end,
                spilled - 1,
                log_end,
            )
            ring.mark_deleted()  # attached clients learn it and map the new ring
            ring.unlink()
            ring.close()
            return Ring.create(ring_name, config.ring_bytes, base_offset=log_end)
        log.warning(
            "ring %s: the segments end at offset %d but the spill had written up to "
            "%d: spilling offsets %d..%d again from the ring",
            ring_name,
            log_end,
            spilled,
            log_end,
            spilled - 1,
        )
        return ring

    def _catch_up_ring(self) -> None:
        """The ring survived a crash: skip what the segments already hold (a spill
        that wrote but died before moving the spill position), spill the rest."""
        log_end = self.log_end_offset
        view = self.ring.unspilled(self._spill_position)
        position = 0  # of the first batch the segments lack
        while position < len(view):
            rows = self._scan.scan(view, position, len(view))
            if not rows:  # committed ring bytes are whole batches: cannot happen
                raise errors.CorruptError(
                    f"partition {self.name}: no whole batch at ring position "
                    f"{self._spill_position + position}"
                )
            ahead = [
                i for i in range(0, len(rows), F) if rows[i + LAST_OFFSET] >= log_end
            ]
            if ahead:
                base = rows[ahead[0] + BASE_OFFSET]
                if base != log_end:
                    raise errors.CorruptError(
                        f"partition {self.name}: the ring continues at offset {base} "
                        f"but the log ends at {log_end}: the records between are lost"
                    )
                position = rows[ahead[0] + POSITION]
                break
            position += self._scan.bytes_consumed
        self._spill_position += position
        self.ring.spill_advance(self._spill_position, log_end)
        while self.spill(0) > 0:
            pass

    # ---- properties -----------------------------------------------------------------

    @property
    def active(self) -> LogSegment:
        return self._segments[-1]

    @property
    def log_end_offset(self) -> int:
        """One past the last offset in the segments (spilled)."""
        return self._segments[-1].next_offset

    @property
    def high_watermark(self) -> int:
        """One past the last offset appended (in the ring, maybe not yet spilled)."""
        return self.ring.high_watermark()

    def segments(self) -> list[LogSegment]:
        with self._lock:
            return list(self._segments)

    def disk_usage(self) -> int:
        """Bytes of the segment files and their indexes (not the checkpoints)."""
        total = 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith((LOG_SUFFIX, ".index", ".timeindex")):
                total += entry.stat().st_size
        return total

    # ---- the spill ------------------------------------------------------------------

    def spill(self, timeout: float = 0.0) -> int:
        """Move committed ring bytes to the segments; returns the bytes moved.

        Waits up to timeout for new bytes. Raises OSError (ENOSPC, EIO) with nothing
        half-written left behind; the next call retries the same bytes."""
        ring = self.ring
        # a producer that began to wait for an fsync while this thread was busy or
        # lingering kicked a futex nobody slept on: look at the waiters before sleeping
        self._maybe_flush()
        if ring.wait_committed(self._spill_position, timeout) is None:
            if ring.stat().deleted:  # its topic is going: wait to be closed
                self._stop.wait(timeout)
            self._maybe_flush()
            return 0
        view = ring.unspilled(self._spill_position)
        rows = self._scan.scan(view, 0, len(view))
        moved = 0
        i = 0
        while i < len(rows):
            self._maybe_roll(
                rows[i + BYTES], rows[i + LAST_OFFSET], rows[i + MAX_TIMESTAMP]
            )
            active, start, run = self.active, rows[i + POSITION], 0
            j = i
            while j < len(rows) and (
                run == 0
                or active.size + run + rows[j + BYTES] <= self.config.segment_bytes
            ):
                run += rows[j + BYTES]
                j += F
            active.append(view[start : start + run], rows[i:j])
            if not self._unflushed or self._unflushed[-1] is not active:
                self._unflushed.append(active)
            self._unflushed_records += sum(rows[i + RECORDS : j : F])
            self._spill_position += run
            moved += run
            # after the write: segment readers elsewhere read up to this offset
            ring.spill_advance(self._spill_position, active.next_offset)
            i = j
        self._maybe_flush()
        return moved

    def _maybe_roll(self, batch_bytes: int, last_offset: int, timestamp: int) -> None:
        """Kafka's LogSegment.shouldRoll: size, index range, or segment.ms between the
        segment's first batch timestamp and this batch's (wall clock if none)."""
        active = self.active
        if active.size == 0:
            return
        if active.first_timestamp != NO_TIMESTAMP:
            waited = timestamp - active.first_timestamp
        else:
            waited = int(time.time() * 1000) - active.created_ms
        if (
            active.size + batch_bytes > self.config.segment_bytes
            or waited > self.config.segment_ms
            or last_offset - active.base_offset > MAX_INDEX_RELATIVE
        ):
            self.roll()

    def roll(self) -> LogSegment:
        """Start a new active segment at the log end offset."""
        old = self.active
        old.seal()
        segment = LogSegment(
            self.directory, old.next_offset, self.config.index_interval_bytes
        )
        with self._lock:
            self._segments.append(segment)
        log.info("rolled %s at offset %d", self.name, segment.base_offset)
        return segment

    def _maybe_flush(self) -> None:
        if not self._unflushed_records:
            return
        c = self.config
        if (
            (0 < c.flush_messages <= self._unflushed_records)
            or (
                c.flush_ms >= 0
                and time.monotonic() - self._last_flush >= c.flush_ms / 1000
            )
            or self.ring.stat().durable_waiters
        ):
            self.flush()

    def flush(self) -> None:
        """fsync everything spilled, then tell waiting producers it is durable."""
        for segment in self._unflushed:
            began = time.perf_counter()
            segment.flush()
            FLUSH_TIMES.observe(time.perf_counter() - began)
        self._unflushed = []
        self._unflushed_records = 0
        self._last_flush = time.monotonic()
        self.recovery_point = self.log_end_offset
        # below the ring's durable offset while batches damaged on disk are spilled
        # again (recovery): what was promised durable is not yet again
        if self.recovery_point > self._durable_offset:
            self.ring.durable_advance(self.recovery_point)
            self._durable_offset = self.recovery_point
        self._checkpoint()

    def _checkpoint(self, force: bool = False) -> None:
        """Write the recovery point (two fsyncs) if it moved since the last write:
        closing thousands of idle partitions must not cost thousands of fsyncs."""
        if self.recovery_point == self._checkpointed:
            return
        now = time.monotonic()
        if force or now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
            write_offset(self.directory / RECOVERY_POINT_FILE, self.recovery_point)
            self._last_checkpoint = now
            self._checkpointed = self.recovery_point

    # ---- retention ------------------------------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete old segments by retention.ms and retention.bytes (never the active
        one); returns how many went."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        c = self.config
        deleted = []
        with self._lock:
            size = sum(s.size for s in self._segments)
            while len(self._segments) > 1:
                oldest = self._segments[0]
                by_time = 0 <= c.retention_ms < now_ms - oldest.max_timestamp and (
                    oldest.max_timestamp != NO_TIMESTAMP
                )
                by_size = 0 <= c.retention_bytes <= size - oldest.size
                if not (by_time or by_size):
                    break
                deleted.append(self._segments.pop(0))
                size -= oldest.size
            if deleted:
                self.log_start_offset = self._segments[0].base_offset
        if deleted:
            self._unflushed = [s for s in self._unflushed if s not in deleted]
            # readers see the new start before the files go (the checkpoint's fsync
            # takes a while); a crash before the checkpoint keeps the old files
            self.ring.set_log_start_offset(self.log_start_offset)
            write_offset(self.directory / LOG_START_FILE, self.log_start_offset)
            for segment in deleted:
                segment.delete()
            log.info(
                "retention deleted %d segments of %s; log start now %d",
                len(deleted),
                self.name,
                self.log_start_offset,
            )
        return len(deleted)

    # ---- the spill thread -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"spill-{self.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.01
        while not self._stop.is_set():
            try:
                busy = self._unflushed_records or self.spill_error is not None
                moved = self.spill(IDLE_WAKE_MS / 1000 if busy else RETENTION_INTERVAL)
                if 0 < moved < SPILL_LINGER_BYTES and not self._awaited():
                    self._stop.wait(SPILL_LINGER)
                now = time.monotonic()
                if now - self._last_retention >= RETENTION_INTERVAL:
                    self._last_retention = now
                    self.enforce_retention()
                if self.spill_error is not None:
                    log.warning("spill of %s works again", self.name)
                    self.spill_error = None
                    self.ring.set_spill_errno(0)
                backoff = 0.01
            except Exception as exc:
                if self.spill_error is None:
                    log.error(
                        "spill of %s failed, retrying: %s",
                        self.name,
                        exc,
                        exc_info=not isinstance(exc, OSError),
                    )
                self.spill_error = (
                    exc if isinstance(exc, OSError) else OSError(errno.EIO, str(exc))
                )
                self.ring.set_spill_errno(self.spill_error.errno or errno.EIO)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, SPILL_RETRY_MAX)

    def _awaited(self) -> bool:
        """Whether a producer waits on the spill (for room or for an fsync), or the
        ring is half full of unspilled bytes: no time to let batches gather."""
        s = self.ring.stat()
        unspilled = s.tail_position - s.spill_position
        return bool(s.spill_waiters or s.durable_waiters) or (
            2 * unspilled >= s.capacity_bytes
        )

    def reconfigure(self, config: TopicConfig) -> None:
        """New topic configs (alter): retention is checked again at once."""
        self.config = config
        self._last_retention = 0.0
        self.ring.wake()

    def request_stop(self) -> None:
        """Tell the spill thread to stop (closing many logs: tell them all first,
        then close each)."""
        self._stop.set()
        self.ring.wake()  # it may sleep on the ring up to RETENTION_INTERVAL

    def close(self) -> None:
        """Stop the spill thread, spill and fsync what is left, close the files."""
        if self._closed:
            return
        self._closed = True
        self.request_stop()
        if self._thread is not None:
            self._thread.join()
        try:
            while self.spill(0):
                pass
            self.flush()
            self._checkpoint(force=True)
        finally:
            self.active.seal()  # its largest timestamp into the time index, as Kafka
            for segment in self._segments:
                segment.close()
            self.ring.close()

    # ---- reads ----------------------------------------------------------------------

    def _check_range(self, offset: int) -> int:
        high = self.high_watermark
        if not self.log_start_offset <= offset <= high:
            raise errors.OffsetOutOfRange(
                f"offset {offset} of partition {self.name} is out of range: valid "
                f"offsets are [{self.log_start_offset}, {high})"
            )
        return high

    def spilled_offset(self) -> int:
        return self.log_end_offset

    def reader(
        self, offset: int, *, spin: float = DEFAULT_SPIN, check_crcs: bool = True
    ) -> LogReader:
        self._check_range(offset)
        return LogReader(self, offset, spin=spin, check_crcs=check_crcs)

    def offset_for_time(self, timestamp: int) -> int | None:
        """The first offset whose record timestamp is >= timestamp (Kafka's
        offsetsForTimes), or None if there is none."""
        return offset_for_time(self, timestamp)
