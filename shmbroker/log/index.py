"""The offset index and the time index of a log segment, byte for byte Kafka's files.

Both are sparse (an entry every `index.interval.bytes` of log), so a lookup lands on a
batch at or before the target and the segment scans forward from there. Entries hold
offsets relative to the segment's base offset; both columns of an index strictly
increase. Entries are big-endian, with nothing before, between or after them:

    <base offset, 20 digits>.index       8 bytes an entry
    +-------+-----------------+--------------------------------------------------+
    | bytes | field           | meaning                                          |
    +-------+-----------------+--------------------------------------------------+
    | 0-3   | relative offset | int32: offset - base offset                      |
    | 4-7   | position        | int32: byte position of that batch in the .log   |
    +-------+-----------------+--------------------------------------------------+

    <base offset, 20 digits>.timeindex   12 bytes an entry
    +-------+-----------------+--------------------------------------------------+
    | 0-7   | timestamp       | int64 ms: the largest timestamp in the segment   |
    |       |                 | so far                                           |
    | 8-11  | relative offset | int32: offset - base offset, of the batch that   |
    |       |                 | first reached that timestamp                     |
    +-------+-----------------+--------------------------------------------------+

Threads: one writer (the spill thread) calls append, truncate_to, flush, fsync and
close; any thread may call lookup, entries and last_entry at the same time, and gets
an answer from a consistent prefix of the entries. This relies on array appends and
attribute stores being atomic, which the GIL provides.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import sys
from array import array
from types import TracebackType
from typing import ClassVar, NamedTuple, TypeVar

from shmbroker.errors import ClosedError, CorruptError, InvalidArgument

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NO_TIMESTAMP = -1  # Kafka's RecordBatch.NO_TIMESTAMP, the timestamp of "no entry"
# Write through once a page is pending, so an index never flushed holds little memory.
WRITE_BUFFER_BYTES = 4096

_IndexT = TypeVar("_IndexT", bound="_Index")


class OffsetPosition(NamedTuple):
    """An offset index entry (Kafka's OffsetPosition)."""

    offset: int
    position: int


class TimestampOffset(NamedTuple):
    """A time index entry (Kafka's TimestampOffset)."""

    timestamp: int
    offset: int


def file_mode(directory: str | os.PathLike[str]) -> int:
    """The mode of a new file of a partition directory: 0640 where the broker shares
    the directory with access.group (group-readable, and setgid so that new files
    get its group), else 0600."""
    return 0o640 if os.stat(directory).st_mode & 0o040 else 0o600


class _Index:
    """What both indexes share: the file, its write buffer, and two parallel columns.

    In memory, entries are two arrays in one tuple, holding what the file holds:
    (keys, values) = (relative offsets, positions) or (timestamps, relative offsets).
    The writer appends the value before the key, and a reader bounds itself by the
    length of keys, read once, so it never sees a key without its value. truncate_to
    swaps in new arrays instead of shrinking these, so a reader holding the old pair
    keeps a consistent view.
    """

    _ENTRY: ClassVar[struct.Struct]
    _KIND: ClassVar[str]  # names the index in messages: "offset index"
    SUFFIX: ClassVar[str]

    def __init__(self, path: str, base_offset: int, fd: int, data: bytes) -> None:
        self.path = path
        self.base_offset = base_offset
        self._fd = fd
        self._flushed_bytes = len(data)  # == file size; appends go here with pwrite
        self._pending = bytearray()
        self._columns: tuple[array[int], array[int]] = self._decode(data)
        # Offsets are int64 too: near the top, base + int32 would overflow them.
        self._max_rel = min(INT32_MAX, INT64_MAX - base_offset)

    @classmethod
    def open(
        cls: type[_IndexT], path: str | os.PathLike[str], base_offset: int
    ) -> _IndexT:
        """Open or create the index file and load its whole entries.

        A trailing partial entry (a write torn by a crash) is cut off the file with a
        WARNING. Entries are not checked here: call sanity_check, and rebuild the index
        from the log if it fails, as Kafka's recovery does. A new file's directory
        entry is not fsynced here: the owner of the segment directory does that.
        """
        path = os.fspath(path)
        if not 0 <= base_offset <= INT64_MAX:
            raise InvalidArgument(
                f"opening {cls._KIND} {path}: base offset {base_offset} is not in "
                f"[0, {INT64_MAX}]"
            )
        # its mode at creation; the umask can only narrow it, never widen it
        mode = file_mode(os.path.dirname(path) or ".")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        try:
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            whole = len(data) - len(data) % cls._ENTRY.size
            if whole != len(data):
                log.warning(
                    "%s %s: dropped %d trailing bytes of a partial %d-byte entry "
                    "(torn write), kept %d entries",
                    cls._KIND,
                    path,
                    len(data) - whole,
                    cls._ENTRY.size,
                    whole // cls._ENTRY.size,
                )
                os.ftruncate(fd, whole)
            return cls(path, base_offset, fd, data[:whole])
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def load(
        cls: type[_IndexT], path: str | os.PathLike[str], base_offset: int
    ) -> _IndexT:
        """A read-only snapshot of the entries, for a process that does not own the
        log: a missing file is empty, and a partial last entry (the owner is writing
        it) is left out, not cut. It is closed: lookups only."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        whole = len(data) - len(data) % cls._ENTRY.size
        return cls(path, base_offset, -1, data[:whole])

    def _decode(self, data: bytes) -> tuple[array[int], array[int]]:
        raise NotImplementedError

    @property
    def entries(self) -> int:
        return len(self._columns[0])

    def _last(self) -> tuple[int, int] | None:
        keys, values = self._columns
        n = len(keys)
        return (keys[n - 1], values[n - 1]) if n else None

    def _find(self, target: int) -> tuple[int, int] | None:
        """The entry with the largest key <= target, or None."""
        keys, values = self._columns
        i = bisect.bisect_right(keys, target, 0, len(keys))
        return (keys[i - 1], values[i - 1]) if i else None

    def _append_entry(self, key: int, value: int, entry: bytes) -> None:
        self._check_open("append to")
        keys, values = self._columns
        values.append(value)  # value first: readers bound themselves by len(keys)
        keys.append(key)
        self._pending += entry
        if len(self._pending) >= WRITE_BUFFER_BYTES:
            self.flush()

    def _keep_entries(self, keep: int) -> None:
        self._check_open("truncate")
        keys, values = self._columns
        if keep >= len(keys):
            return
        self.flush()
        os.ftruncate(self._fd, keep * self._ENTRY.size)
        self._flushed_bytes = keep * self._ENTRY.size
        # New arrays rather than del in place: a concurrent lookup keeps the old pair.
        self._columns = (keys[:keep], values[:keep])

    def _check_entries(self, names: tuple[str, str], offset_column: int) -> None:
        """Raise CorruptError at the first entry with a negative relative offset or
        with a key or value not above the previous entry's."""
        keys, values = self._columns
        rel_offsets = self._columns[offset_column]

        def entry(i: int) -> str:
            return f"entry {i} ({names[0]} {keys[i]}, {names[1]} {values[i]})"

        for i in range(len(keys)):
            if rel_offsets[i] < 0:
                problem = f"has a negative relative offset (base {self.base_offset})"
            elif i and (keys[i] <= keys[i - 1] or values[i] <= values[i - 1]):
                problem = f"does not increase on {entry(i - 1)}"
            else:
                continue
            raise CorruptError(
                f"{self._KIND} {self.path}: {entry(i)} {problem}: "
                f"rebuild the index from the log"
            )

    def _check_open(self, action: str) -> None:
        if self._fd < 0:
            raise ClosedError(f"cannot {action} {self._KIND} {self.path}: it is closed")

    def flush(self) -> None:
        """Write buffered entries to the file (the OS page cache)."""
        self._check_open("flush")
        while self._pending:
            written = os.pwrite(self._fd, self._pending, self._flushed_bytes)
            del self._pending[:written]  # pwrite may write less; keep the rest
            self._flushed_bytes += written

    def fsync(self) -> None:
        """Flush, then make the file's contents durable. Blocks on the disk."""
        self.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close the file (no fsync). Idempotent.

        lookup keeps answering from memory afterwards, so a reader racing retention
        gets a stale but consistent answer; its read of the .log decides.
        """
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self: _IndexT) -> _IndexT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} entries={self.entries}>"


class OffsetIndex(_Index):
    """Maps offsets to byte positions of batches in the segment's .log file."""

    _ENTRY = struct.Struct(">ii")
    _KIND = "offset index"
    SUFFIX = ".index"

    def _decode(self, data: bytes) -> tuple[array[int], array[int]]:
        # Whole-array decode, ~10x faster than a loop: opening a partition loads the
        # index of every segment. Entries are two int32 words, big-endian on disk.
        words = array("i", data)
        if sys.byteorder == "little":
            words.byteswap()
        return words[0::2], words[1::2]

    @property
    def last_entry(self) -> OffsetPosition:
        """The last entry, or (base offset, 0) when empty, as Kafka's lastEntry."""
        last = self._last()
        if last is None:
            return OffsetPosition(self.base_offset, 0)
        return OffsetPosition(self.base_offset + last[0], last[1])

    def all_entries(self) -> list[OffsetPosition]:
        rel_offsets, positions = self._columns
        n = len(rel_offsets)  # keys bound values: the writer appends values first
        pairs = zip(rel_offsets[:n], positions[:n], strict=True)
        return [OffsetPosition(self.base_offset + r, p) for r, p in pairs]

    def append(self, offset: int, position: int) -> None:
        """Add an entry: the batch holding offset starts at position in the .log."""
        rel = offset - self.base_offset
        if not 0 <= rel <= self._max_rel or not 0 <= position <= INT32_MAX:
            raise InvalidArgument(
                f"offset index {self.path}: entry (offset {offset}, position "
                f"{position}) does not fit: offset must be in [{self.base_offset}, "
                f"{self.base_offset + self._max_rel}] and position in "
                f"[0, {INT32_MAX}]; roll a new segment first"
            )
        last = self.last_entry
        if self.entries and (offset <= last.offset or position <= last.position):
            raise InvalidArgument(
                f"offset index {self.path}: entry (offset {offset}, position "
                f"{position}) does not increase on the last entry (offset "
                f"{last.offset}, position {last.position}): both must grow"
            )
        self._append_entry(rel, position, self._ENTRY.pack(rel, position))

    def lookup(self, target_offset: int) -> OffsetPosition:
        """The entry with the largest offset <= target_offset: where to start scanning.

        Returns (base offset, 0), the start of the segment, when no entry qualifies
        (Kafka's OffsetIndex.lookup).
        """
        found = self._find(target_offset - self.base_offset)
        if found is None:
            return OffsetPosition(self.base_offset, 0)
        return OffsetPosition(self.base_offset + found[0], found[1])

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose offset is >= offset (recovery cut the log there)."""
        rel_offsets = self._columns[0]
        rel = offset - self.base_offset
        self._keep_entries(bisect.bisect_left(rel_offsets, rel, 0, len(rel_offsets)))

    def sanity_check(self) -> None:
        """Raise CorruptError unless offsets and positions strictly increase, with
        relative offsets and positions >= 0."""
        self._check_entries(("relative offset", "position"), offset_column=0)
        rel_offsets, positions = self._columns
        # Positions strictly increase, so only the first can be negative.
        if positions and positions[0] < 0:
            raise CorruptError(
                f"offset index {self.path}: entry 0 (relative offset "
                f"{rel_offsets[0]}, position {positions[0]}) has a negative position: "
                f"rebuild the index from the log"
            )


class TimeIndex(_Index):
    """Maps timestamps to the offsets where a scan for them must start.

    An entry (T, O) says: T is the largest timestamp in the segment up to the batch
    holding O, and that batch is the first to reach T. So every batch before it has
    timestamps < T, and every batch holding a timestamp > T comes after it.
    """

    _ENTRY = struct.Struct(">qi")
    _KIND = "time index"
    SUFFIX = ".timeindex"

    def _decode(self, data: bytes) -> tuple[array[int], array[int]]:
        timestamps, rel_offsets = array("q"), array("i")
        for timestamp, rel in self._ENTRY.iter_unpack(data):
            timestamps.append(timestamp)
            rel_offsets.append(rel)
        return timestamps, rel_offsets

    @property
    def last_entry(self) -> TimestampOffset:
        """The last entry, or (NO_TIMESTAMP, base offset) when empty, as Kafka's."""
        last = self._last()
        if last is None:
            return TimestampOffset(NO_TIMESTAMP, self.base_offset)
        return TimestampOffset(last[0], self.base_offset + last[1])

    def all_entries(self) -> list[TimestampOffset]:
        timestamps, rel_offsets = self._columns
        n = len(timestamps)  # keys bound values: the writer appends values first
        pairs = zip(timestamps[:n], rel_offsets[:n], strict=True)
        return [TimestampOffset(t, self.base_offset + r) for t, r in pairs]

    def append(self, timestamp: int, offset: int) -> bool:
        """Add (timestamp, offset) if timestamp is larger than the last entry's.

        timestamp is the segment's largest timestamp so far, and offset one in the
        batch that first reached it (Kafka writes the batch's last offset). Returns
        False, writing nothing, when timestamp equals the last entry's: the largest
        timestamp did not move since (Kafka's TimeIndex.maybeAppend).
        """
        rel = offset - self.base_offset
        if not 0 <= rel <= self._max_rel or not INT64_MIN <= timestamp <= INT64_MAX:
            raise InvalidArgument(
                f"time index {self.path}: entry (timestamp {timestamp}, offset "
                f"{offset}) does not fit: offset must be in [{self.base_offset}, "
                f"{self.base_offset + self._max_rel}] and timestamp an int64"
            )
        if self.entries:
            last_timestamp, last_offset = self.last_entry
            if timestamp == last_timestamp and offset >= last_offset:
                return False
            if timestamp < last_timestamp or offset <= last_offset:
                raise InvalidArgument(
                    f"time index {self.path}: entry (timestamp {timestamp}, offset "
                    f"{offset}) after the last entry (timestamp {last_timestamp}, "
                    f"offset {last_offset}): timestamps must not decrease and a new "
                    f"timestamp needs a larger offset"
                )
        self._append_entry(timestamp, rel, self._ENTRY.pack(timestamp, rel))
        return True

    def lookup(self, target_timestamp: int) -> TimestampOffset:
        """The entry with the largest timestamp <= target_timestamp, or
        (NO_TIMESTAMP, base offset) when none qualifies: Kafka's TimeIndex.lookup.

        Its offset is where a search for the first record with a timestamp >= target
        starts (offsetsForTimes): batches before the one holding it have timestamps
        < T <= target, so the answer is in that batch or later. Like Kafka's
        LogSegment.findOffsetByTimestamp, scan batches forward from the offset index's
        position for this offset.

        Not the first entry with timestamp >= target: the largest timestamp can rise
        several times between two entries, so a record at the target can come before
        that entry. With entries (10, 0) and (100, 3) and a record at offset 1 with
        timestamp 50, a search for 50 must start at 0, not at 3.
        """
        found = self._find(target_timestamp)
        if found is None:
            return TimestampOffset(NO_TIMESTAMP, self.base_offset)
        return TimestampOffset(found[0], self.base_offset + found[1])

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose offset is >= offset (recovery cut the log there)."""
        rel_offsets = self._columns[1]
        rel = offset - self.base_offset
        self._keep_entries(bisect.bisect_left(rel_offsets, rel, 0, len(rel_offsets)))

    def sanity_check(self) -> None:
        """Raise CorruptError unless timestamps and offsets strictly increase, with
        relative offsets >= 0."""
        self._check_entries(("timestamp", "relative offset"), offset_column=1)
