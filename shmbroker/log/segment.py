"""A log segment: `<base offset, 20 digits>.log` holding RecordBatch v2 batches byte
for byte as Kafka stores them, with its `.index` and `.timeindex`.

The segment only ever grows at its end (one pwrite per contiguous run of batches, the
ring's bytes as they are) or is cut back to a batch boundary by recovery. Index
entries follow Kafka's LogSegment.append: when more than index_interval_bytes were
written since the last entry, the next batch gets one, (its last offset, its
position), and the time index gets (largest timestamp so far, its offset).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shmbroker import _native
from shmbroker.errors import CorruptError
from shmbroker.log.index import NO_TIMESTAMP, OffsetIndex, TimeIndex, file_mode

log = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
DELETED_SUFFIX = ".deleted"
# a lookup scans from an index entry at most index.interval.bytes (+ one batch) back
SCAN_CHUNK_BYTES = 64 << 10
LENGTH_END = 12  # a batch begins with its base offset (8 bytes) and length (4)
# a read-only offset index this far behind the log is loaded again (the owner
# writes entries through 512 at a time: ~2 MiB of log at 4 KiB intervals)
STALE_INDEX_BYTES = 8 << 20
LAST_OFFSET_DELTA_END = 27  # then leader epoch, magic, CRC, attributes, last delta
# a scan row's fields (rows are flat lists: rows[i + LAST_OFFSET])
F = _native.SCAN_FIELDS
POSITION, BYTES, LAST_OFFSET = _native.POSITION, _native.BYTES, _native.LAST_OFFSET
MAX_TIMESTAMP = _native.MAX_TIMESTAMP


_per_thread = threading.local()


def _scan() -> _native.Scan:
    """This thread's Scan: its rows are scratch space that a C call fills with the GIL
    released, so threads reading one segment must not share one."""
    scan: _native.Scan | None = getattr(_per_thread, "scan", None)
    if scan is None:
        scan = _per_thread.scan = _native.Scan()
    return scan


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class LogSegment:
    """One segment's files. One writer (the spill) at a time; reads may run
    concurrently (pread of bytes below `size`, which only grows)."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int = 4096,
        readonly: bool = False,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.path = directory / file_name(base_offset, LOG_SUFFIX)
        self.indexes_missing = not all(
            (directory / file_name(base_offset, suffix)).exists()
            for suffix in (OffsetIndex.SUFFIX, TimeIndex.SUFFIX)
        )
        # readonly: another process owns the segment and may be appending to it
        self.readonly = readonly
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        self._fd = os.open(self.path, flags | os.O_CLOEXEC, file_mode(directory))
        self.size = os.fstat(self._fd).st_size
        index_open = "load" if readonly else "open"
        self.offset_index = getattr(OffsetIndex, index_open)(
            directory / file_name(base_offset, OffsetIndex.SUFFIX), base_offset
        )
        self.time_index = getattr(TimeIndex, index_open)(
            directory / file_name(base_offset, TimeIndex.SUFFIX), base_offset
        )
        self.next_offset = base_offset  # one past the last offset written
        self.max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = base_offset
        self.first_timestamp = NO_TIMESTAMP  # rolls by segment.ms count from here
        self.created_ms = int(time.time() * 1000)
        self._bytes_since_index = 0
        self._indexes_dirty = True  # fsync them at the first flush

    # ---- writing --------------------------------------------------------------------

    def append(self, data: memoryview, rows: list[int]) -> None:
        """Write whole batches `data` (scan rows index it) at the end, and index them.
        On an OSError (ENOSPC, EIO) the file is cut back to where it was: nothing
        half-written stays behind, and the caller may retry the same bytes."""
        start = self.size
        try:
            written = 0
            while written < len(data):  # pwrite may write less than asked
                written += os.pwrite(self._fd, data[written:], start + written)
        except OSError:
            os.ftruncate(self._fd, start)
            raise
        self.size = start + len(data)
        self._note_batches(rows, start - rows[POSITION])

    def _note_batches(self, rows: list[int], shift: int) -> None:
        """Index the batches of scan rows (at file position row position + shift).
        One loop with locals, not a call a batch: with one-record batches the spill
        thread runs this for every record."""
        if self.first_timestamp == NO_TIMESTAMP:
            self.first_timestamp = rows[MAX_TIMESTAMP]
        interval, since = self.index_interval_bytes, self._bytes_since_index
        max_ts, max_ts_offset = self.max_timestamp, self._offset_of_max_timestamp
        for i in range(0, len(rows), F):
            if rows[i + MAX_TIMESTAMP] > max_ts:
                max_ts, max_ts_offset = rows[i + MAX_TIMESTAMP], rows[i + LAST_OFFSET]
            if since > interval:
                self.offset_index.append(
                    rows[i + LAST_OFFSET], rows[i + POSITION] + shift
                )
                self.time_index.append(max_ts, max_ts_offset)
                since = 0
                self._indexes_dirty = True
            since += rows[i + BYTES]
        self._bytes_since_index = since
        self.max_timestamp, self._offset_of_max_timestamp = max_ts, max_ts_offset
        self.next_offset = rows[-F + LAST_OFFSET] + 1

    def seal(self) -> None:
        """Before the segment stops being active: its largest timestamp into the time
        index, so time lookups never miss its last batches (Kafka's
        onBecomeInactive)."""
        if self.max_timestamp > self.time_index.last_entry.timestamp:
            self.time_index.append(self.max_timestamp, self._offset_of_max_timestamp)
            self._indexes_dirty = True
        # written through (not fsynced): readers in other processes open a sealed
        # segment's indexes from the files, and skip it by their last timestamp
        self.offset_index.flush()
        self.time_index.flush()

    def flush(self) -> None:
        """fsync the log, and its indexes if they changed: with flush.messages=1 an
        fsync of an unchanged index would double the cost of a durable append."""
        os.fsync(self._fd)
        if self._indexes_dirty:
            for index in (self.offset_index, self.time_index):
                index.flush()
                index.fsync()
            self._indexes_dirty = False

    # ---- reading --------------------------------------------------------------------

    def batches(self, position: int = 0, verify: bool = False) -> Iterator[list[int]]:
        """Scan rows (position in this file, bytes, base, last, max ts, records) of
        the batches from position on. Stops at the end, at a partial batch, or, when
        verify, before the first batch whose CRC or records are bad; then
        `self.scan_stop` says why."""
        size = self.size
        self.scan_stop = 0
        scan = _scan()
        while position < size:
            chunk = os.pread(self._fd, min(SCAN_CHUNK_BYTES, size - position), position)
            rows = scan.scan(chunk, 0, len(chunk), verify)
            # read before yielding: the consumer of this generator may scan too
            consumed, stop = scan.bytes_consumed, scan.stop
            for i in range(0, len(rows), F):
                row = rows[i : i + F]
                row[POSITION] += position
                yield row
            if stop == _native.SCAN_PARTIAL and consumed == 0 and len(chunk) >= 12:
                # a batch larger than the chunk: read it whole
                total = int.from_bytes(chunk[8:12], "big") + 12
                if position + total <= size and total > len(chunk):
                    whole = os.pread(self._fd, total, position)
                    rows = scan.scan(whole, 0, len(whole), verify)
                    stop = scan.stop
                    if rows:
                        rows[POSITION] += position
                        yield rows
                        position += total
                        continue
            if stop < 0 or (stop == _native.SCAN_PARTIAL and consumed == 0):
                self.scan_stop = stop
                return
            position += consumed

    def refresh(self) -> None:
        """Read-only: learn how far the owner's writes reach. Only a bound for the
        preads: a write in progress has grown the file already, so readers also cut
        at the spilled offset (log/reader.py)."""
        if self.readonly:
            self.size = os.fstat(self._fd).st_size

    def reaches(self, position: int) -> bool:
        """Whether the file holds bytes at position; an fstat (read-only) only when
        the size known does not say so already, as a sequential reader's next
        position mostly is."""
        if position < self.size:
            return True
        self.refresh()
        return position < self.size

    def find(self, offset: int) -> list[int] | None:
        """The scan row of the batch holding offset, or None if offset >= next."""
        self.refresh()
        entry = self.offset_index.lookup(offset)
        if (
            self.readonly
            and self.size - entry.position > STALE_INDEX_BYTES
            and entry == self.offset_index.last_entry
        ):
            # a snapshot from when the segment was shorter (a lapped reader's): the
            # entries the owner wrote since spare a scan of every batch after it
            index = OffsetIndex.load(self.offset_index.path, self.base_offset)
            self.offset_index, entry = index, index.lookup(offset)
        position = self._skip_large_batches(entry.position, offset)
        for row in self.batches(position):
            if row[LAST_OFFSET] >= offset:
                return row
        if self.scan_stop < 0:
            raise CorruptError(
                f"{self.path}: looking for offset {offset}, found bytes that are no "
                f"batch after position {position}: {_native.strerror(self.scan_stop)}"
            )
        return None

    def _skip_large_batches(self, position: int, offset: int) -> int:
        """Where the scan for offset may start: past the whole batches from position
        on that are larger than a scan's chunk and end below offset, by their
        headers alone. A read-only index is a snapshot, and the owner writes its
        entries through a page (512 entries) at a time: with batches of a MiB, a
        lapped reader's lookup lands hundreds of MiB back, which the scan would
        read whole."""
        while True:
            head = os.pread(self._fd, LAST_OFFSET_DELTA_END, position)
            if len(head) < LAST_OFFSET_DELTA_END:
                return position
            total = int.from_bytes(head[8:LENGTH_END], "big") + LENGTH_END
            last = int.from_bytes(head[:8], "big") + int.from_bytes(
                head[LAST_OFFSET_DELTA_END - 4 :], "big"
            )
            if (
                total <= SCAN_CHUNK_BYTES
                or last >= offset
                or position + total > self.size
            ):
                return position  # the scan checks this batch, and reads it if needed
            position += total

    def read(
        self,
        position: int,
        max_bytes: int,
        end_offset: int,
        buffer: bytearray | None = None,
    ) -> memoryview:
        """Whole batches from position whose offsets are below end_offset, at most
        max_bytes unless the first batch alone is larger: then that batch (Kafka's
        KIP-74). Empty while the first batch is not all there (a write in progress).

        The view is of buffer when one is given (a new, larger bytearray if it is too
        small: the view's obj is the one to pass next time), else of fresh bytes. A
        reused buffer spares the page faults of fresh memory on every read; the cut
        at a batch boundary is a view, never a copy.

        Read-only: the size known bounds the read, and an fstat refreshes it only
        when it leaves less than max_bytes (a reader near the owner's writes): a
        lapped reader far behind them reads without one."""
        if self.size - position < max_bytes:
            self.refresh()
        # at least a batch's length, which says how much the first batch needs
        size = max(0, min(max(max_bytes, LENGTH_END), self.size - position))
        data = self._pread(size, position, buffer)
        if len(data) < size:  # cut shorter (recovery): the next reaches() says so
            self.refresh()
        scan = _scan()
        rows = scan.scan(data, 0, len(data))
        if not rows and scan.stop == _native.SCAN_PARTIAL and len(data) >= LENGTH_END:
            total = int.from_bytes(data[8:LENGTH_END], "big") + LENGTH_END
            buffer = data.obj if isinstance(data.obj, bytearray) else None
            data = self._pread(total, position, buffer)  # short while being written
            rows = scan.scan(data, 0, len(data))
        if not rows:
            if scan.stop < 0:
                raise CorruptError(
                    f"{self.path}: no valid batch at position {position} "
                    f"({len(data)} bytes read, beginning {data[:32].hex()})"
                )
            return data[:0]
        end = 0
        for i in range(0, len(rows), F):
            if rows[i + LAST_OFFSET] >= end_offset:
                break
            end = rows[i + POSITION] + rows[i + BYTES]
        return data[:end]

    def _pread(self, size: int, position: int, buffer: bytearray | None) -> memoryview:
        """Up to size bytes from position (fewer at the file's end), into buffer (or
        a larger one in its place) or fresh bytes."""
        if buffer is None:
            return memoryview(os.pread(self._fd, size, position))
        if len(buffer) < size:  # not resized: a view of it may still be held
            buffer = bytearray(size)
        view = memoryview(buffer)
        return view[: os.preadv(self._fd, [view[:size]], position)]

    @property
    def largest_timestamp(self) -> int:
        """The largest record timestamp in the segment (read-only: as its time
        index says, exact once the segment was sealed before this opened it)."""
        if self.readonly:
            return int(self.time_index.last_entry.timestamp)
        return self.max_timestamp

    # ---- recovery -------------------------------------------------------------------

    def recover(self) -> int:
        """Validate every batch (lengths, CRC, records, increasing offsets), cut a torn
        or corrupt tail, rebuild both indexes; returns the bytes cut."""
        self._reset_indexes()
        valid, expected, why = 0, self.base_offset, "a partial or corrupt batch"
        for row in self.batches(0, verify=True):
            pos, size, base, last, _, _ = row
            if base != expected:  # offsets are dense: a jump is a corrupt baseOffset
                why = f"offset {base} where {expected} was due"
                break
            self._note_batches(row, 0)
            valid, expected = pos + size, last + 1
        cut = self.size - valid
        if cut:
            log.warning(
                "recovery of %s: %s at position %d, dropping %d bytes",
                self.path,
                why,
                valid,
                cut,
            )
            os.ftruncate(self._fd, valid)
            self.size = valid
        return cut

    def load(self) -> None:
        """Open a segment written cleanly: check its indexes (rebuild them if missing
        or inconsistent) and learn its end offset and largest timestamp from its
        tail."""
        try:
            if self.indexes_missing:
                raise CorruptError(f"{self.path}: index files missing")
            self.offset_index.sanity_check()
            self.time_index.sanity_check()
            last_indexed = self.offset_index.last_entry
            if last_indexed.position > self.size:
                raise CorruptError(f"{self.path}: index points past the log's end")
        except CorruptError as exc:
            log.warning("rebuilding the indexes of %s: %s", self.path, exc)
            self._reset_indexes()
            for row in self.batches(0):
                self._note_batches(row, 0)
            return
        self.max_timestamp, self._offset_of_max_timestamp = self.time_index.last_entry
        for _, _, _, last, max_ts, _ in self.batches(last_indexed.position):
            if max_ts > self.max_timestamp:
                self.max_timestamp, self._offset_of_max_timestamp = max_ts, last
            self.next_offset = last + 1
        self._bytes_since_index = self.size - last_indexed.position
        for row in self.batches(0):  # the first batch's timestamp, for segment.ms
            self.first_timestamp = row[MAX_TIMESTAMP]
            break

    def _reset_indexes(self) -> None:
        self.offset_index.truncate_to(self.base_offset)
        self.time_index.truncate_to(self.base_offset)
        self.next_offset = self.base_offset
        self.max_timestamp = self.first_timestamp = NO_TIMESTAMP
        self._bytes_since_index = 0
        self._indexes_dirty = True

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Idempotent. Reads after it raise EBADF (never read another file that
        got the descriptor's number)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self.offset_index.close()
        self.time_index.close()
        os.close(fd)

    def delete(self) -> None:
        """Rename the files to .deleted, then unlink them. Readers holding the fd
        keep reading until they let go (POSIX unlink semantics)."""
        self.close()
        for suffix in (LOG_SUFFIX, OffsetIndex.SUFFIX, TimeIndex.SUFFIX):
            path = self.directory / file_name(self.base_offset, suffix)
            deleted = path.with_name(path.name + DELETED_SUFFIX)
            try:
                os.rename(path, deleted)
            except FileNotFoundError:
                continue
            os.unlink(deleted)
