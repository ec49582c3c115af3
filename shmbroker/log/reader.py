"""Every reader of a partition: `PartitionReader` (read-only, any process),
`LogReader` (one offset onward, from the segments or the ring, whichever holds it),
and `offset_for_time` on the time indexes.

Invariant: a reader returns only whole batches that were completely written. The
segment files are read only below the spilled offset the spill publishes in the ring
header after each write (`Ring.spilled_offset`), never up to the file size, which a
multi-MB pwrite grows while it is still copying; the ring is read only up to its
tail. Bytes that hold no whole batch where one must be are `CorruptError`, naming
the partition, the position and the bytes: never a loop that makes no progress.
A sequential reader reads on in the segment it read last (`SegmentPosition`), with
no directory listing, and no fstat while the size it knows covers the read; it
lists the segments again when that one runs out (a roll) or was closed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from shmbroker import _native, errors
from shmbroker.log.segment import LOG_SUFFIX, LogSegment, file_name
from shmbroker.records import Record, RecordColumns, decode_columns, decode_records
from shmbroker.ring import DEFAULT_SPIN, Ring, RingReader, partition_label

LAST = _native.LAST_OFFSET
F = _native.SCAN_FIELDS
EMPTY = memoryview(b"")


class PartitionView(Protocol):
    """What a LogReader reads: the writer's PartitionLog or a PartitionReader."""

    topic: str
    partition: int
    name: str
    directory: Path
    ring: Ring

    @property
    def log_start_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...

    def spilled_offset(self) -> int:
        """Every offset below this is in the segments as whole batches."""
        ...

    def segments(self) -> list[LogSegment]: ...


class SegmentPosition(NamedTuple):
    """Where a sequential reader's next batch is: no index lookup and no scan for
    it (a read-only index is a snapshot: without this, a reader following the
    active segment would scan from its last index entry on every read), and no
    directory listing while the segment read last holds it."""

    base_offset: int  # of the segment
    position: int  # of the batch in the segment file
    offset: int  # the batch's base offset
    segment: LogSegment | None = None  # the one read last, while it is open


def read_segments(
    view: PartitionView,
    offset: int,
    max_bytes: int,
    hint: SegmentPosition | None = None,
    buffer: bytearray | None = None,
) -> tuple[memoryview, SegmentPosition | None]:
    """Whole batches from the segments, the first holding offset, and where the
    batch after them is; empty when offset is not (yet, or any more) in them. The
    view is of buffer (or of a larger bytearray in its place, see LogSegment.read)
    when one is given, else of fresh bytes.

    A hint naming the offset reads on in its segment without listing the segments;
    they are listed when that segment runs out (a roll: the batch is in the next),
    was closed (retention, or a listing that opened it again), or with no hint."""
    end_offset = view.spilled_offset()
    if offset >= end_offset:
        return EMPTY, None
    try:
        if hint is not None and hint.offset == offset:
            segment = hint.segment
            if segment is not None and not segment.closed:
                if segment.reaches(hint.position):
                    read = _read_from(
                        segment, hint.position, max_bytes, end_offset, buffer
                    )
                    if read[0]:
                        return read
                # ran out (a roll: the next segment has it) or was cut shorter
                hint = hint._replace(segment=None)
        segments = view.segments()
        for k in range(len(segments) - 1, -1, -1):
            if segments[k].base_offset <= offset:
                break
        else:
            return EMPTY, None
        for segment in segments[k:]:
            if segment.base_offset > offset:  # the segment before ended below offset
                raise errors.CorruptError(
                    f"partition {view.name}: offsets {offset}.."
                    f"{segment.base_offset - 1} are missing from the log: the segment "
                    f"before {segment.path} ends below them (truncated or deleted "
                    f"while the broker was stopped)"
                )
            if (
                hint is not None
                and hint.offset == offset
                and hint.base_offset == segment.base_offset
            ):
                position = hint.position if segment.reaches(hint.position) else None
            else:
                row = segment.find(offset)
                position = None if row is None else row[_native.POSITION]
            if position is not None:
                read = _read_from(segment, position, max_bytes, end_offset, buffer)
                if not read[0]:  # below the spilled offset a whole batch must be
                    raise errors.CorruptError(
                        f"partition {view.name}: offset {offset} is missing from "
                        f"the log: {segment.path} ends at byte {segment.size}, "
                        f"inside the batch at position {position}, below the "
                        f"spilled offset {end_offset} (cut shorter under the "
                        f"reader, by a recovery?)"
                    )
                return read
    except OSError as exc:  # retention closed it under us: the log start moved
        if exc.errno != errno.EBADF:
            raise
    return EMPTY, None


def _read_from(
    segment: LogSegment,
    position: int,
    max_bytes: int,
    end_offset: int,
    buffer: bytearray | None,
) -> tuple[memoryview, SegmentPosition | None]:
    """segment.read, and the position after what it read (None if it read none)."""
    data = segment.read(position, max_bytes, end_offset, buffer)
    if not data:
        return EMPTY, None
    after = position + len(data)
    return data, SegmentPosition(segment.base_offset, after, -1, segment)


class PartitionReader:
    """Read-only access to a partition from any process (consumers, the gateway):
    recent offsets from the ring, older ones from the segment files. It never writes,
    recovers or spills: the process that owns the PartitionLog does. Not thread-safe.
    """

    def __init__(self, directory: Path, ring: Ring, topic: str, partition: int) -> None:
        self.directory = directory
        self.ring = ring
        self.topic = topic
        self.partition = partition
        self.name = f"{topic}-{partition}"
        self._segments: dict[int, LogSegment] = {}  # opened read-only, by base offset
        self._active: int | None = None  # base of the one opened while it was last

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        ring_name: str,
        *,
        topic: str,
        partition: int,
    ) -> PartitionReader:
        """Attach to a partition its owner has opened (NotFound if its ring is not
        there)."""
        ring = Ring.open(ring_name, label=partition_label(topic, partition))
        return cls(Path(directory), ring, topic, partition)

    @property
    def log_start_offset(self) -> int:
        return self.ring.log_start_offset()

    @property
    def high_watermark(self) -> int:
        return self.ring.high_watermark()

    def spilled_offset(self) -> int:
        return self.ring.spilled_offset()

    def segments(self) -> list[LogSegment]:
        """The segment files there are now: retention deletes, the spill rolls. A
        segment opened while it was the last is opened again once it is not: its
        indexes were a snapshot, and the roll sealed them (its largest timestamp)."""
        bases = sorted(
            int(name[: -len(LOG_SUFFIX)])
            for name in os.listdir(self.directory)
            if name.endswith(LOG_SUFFIX)
        )
        stale = set(self._segments) - set(bases)
        if self._active is not None and bases and self._active != bases[-1]:
            stale.add(self._active)
            self._active = None
        for base in stale:
            segment = self._segments.pop(base, None)
            if segment is not None:
                segment.close()
        for base in bases:
            if base not in self._segments:
                try:
                    self._segments[base] = LogSegment(
                        self.directory, base, readonly=True
                    )
                except FileNotFoundError:  # deleted between the listing and the open
                    continue
                if base == bases[-1]:
                    self._active = base
        return [self._segments[b] for b in bases if b in self._segments]

    def reader(
        self, offset: int, *, spin: float = DEFAULT_SPIN, check_crcs: bool = True
    ) -> LogReader:
        start, high = self.log_start_offset, self.high_watermark
        if not start <= offset <= high:
            raise errors.OffsetOutOfRange(
                f"offset {offset} of partition {self.name} is out of range: valid "
                f"offsets are [{start}, {high})"
            )
        return LogReader(self, offset, spin=spin, check_crcs=check_crcs)

    def offset_for_time(self, timestamp: int) -> int | None:
        return offset_for_time(self, timestamp)

    def close(self) -> None:
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()
        self.ring.close()


class LogReader:
    """Reads a partition from an offset onward, from the segments or the ring,
    whichever holds it. Not thread-safe."""

    def __init__(
        self,
        log: PartitionView,
        offset: int,
        *,
        spin: float = DEFAULT_SPIN,
        max_bytes: int = 1 << 20,
        check_crcs: bool = True,
    ) -> None:
        self.log = log
        self.offset = offset  # the next offset this reader returns
        self.max_bytes = max_bytes
        self.check_crcs = check_crcs  # Kafka's check.crcs: poll verifies each batch
        # where the last bytes read came from, for errors: (segment base offset,
        # byte), or None for the ring; named only when an error needs it
        self._source: tuple[int, int] | None = None
        self._spin = spin
        self._ring_reader: RingReader | None = None
        self._next: SegmentPosition | None = None  # after the last segment read
        self._scan = _native.Scan()
        self._decoded = _native.Decoded()
        self._records_read = 0  # in the batches of the last read
        # segment reads land here (no page faults of fresh memory each read), and
        # poll decodes them where they are, as it does the ring reader's buffer
        self._buffer = bytearray()
        self._buffer_in = _over(self._buffer)
        # what the view the last read returned is of: a C buffer (what the decoders
        # take), its bytes (whose slices are bytes copies) and where the view starts
        # in them; None when it is of fresh bytes (read_slice from the segments)
        self._read_in: tuple[Any, Any, int] | None = None

    def seek(self, offset: int) -> None:
        """Go on from offset (the next read starts at the batch holding it)."""
        self.offset = offset
        self._ring_reader = None
        self._next = None

    def read_batches(self, timeout: float | None = 0) -> bytes:
        """Whole batches, the first holding self.offset (it may start before it);
        b'' when there is nothing new within timeout."""
        return bytes(self._read(timeout, self.max_bytes, self._buffer))

    def read_slice(self, offset: int, max_bytes: int) -> memoryview:
        """Whole batches from the one holding offset, at most max_bytes unless the
        first alone is larger (Kafka's KIP-74), without waiting: a Fetch's answer for
        this partition. Empty if offset is the high watermark. The view is of this
        reader's buffer (the ring's copy-out) or of fresh bytes read from a segment
        (the gateway may hold them until written): valid until the next read of
        this reader. A reader that is asked for the offset after its last slice
        goes on without a seek."""
        if offset != self.offset:
            self.seek(offset)
        return self._read(0, max_bytes, None)

    def _read(
        self, timeout: float | None, max_bytes: int, buffer: bytearray | None
    ) -> memoryview:
        """Whole batches from the segments (into buffer if given, else into fresh
        bytes) or the ring, as a view valid until the next read."""
        log = self.log
        for _ in range(1000):  # each pass returns, or moves to the other source
            if self.offset < log.log_start_offset:
                raise errors.OffsetOutOfRange(
                    f"offset {self.offset} of partition {log.name} was deleted by "
                    f"retention: the log starts at {log.log_start_offset}"
                )
            if self._ring_reader is None:
                data, after = read_segments(
                    log, self.offset, max_bytes, self._next, buffer
                )
                if data:
                    if isinstance(data.obj, bytearray) and data.obj is not buffer:
                        self._buffer = buffer = data.obj  # grown for a larger batch
                        self._buffer_in = _over(buffer)
                    self._read_in = None if buffer is None else self._buffer_in
                    assert after is not None
                    self._source = (after.base_offset, after.position - len(data))
                    view = self._advance(memoryview(data), "segments")
                    self._next = after and after._replace(offset=self.offset)
                    return view
                try:
                    self._ring_reader = log.ring.reader(self.offset, spin=self._spin)
                except errors.OffsetOutOfRange:
                    if self.offset > log.high_watermark:
                        raise
                    continue  # spilled between the two looks: the segments have it
            try:
                start, end = self._ring_reader.read_span(max_bytes, timeout)
            except errors.Lapped:  # lapped means spilled: read the segments
                self._ring_reader = None
                self._next = None
                continue
            if start == end:
                return EMPTY
            buf, whole = self._ring_reader.buffer
            self._read_in = (buf, whole, start)
            self._source = None
            return self._advance(memoryview(whole)[start:end], "ring")
        raise errors.BrokenError(
            f"partition {log.name}: offset {self.offset} is neither in the segments "
            f"nor in the ring"
        )

    def _advance(self, data: memoryview, source: str) -> memoryview:
        """Move self.offset past the whole batches of data, which must hold one."""
        scan, at, records, last = self._scan, 0, 0, -1
        while at < len(data):  # a scan's rows hold 4096 batches: several scans
            rows = scan.scan(data, at, len(data))
            if not rows:
                break
            records += sum(rows[_native.RECORDS :: F])
            last = rows[-F + LAST]
            at += scan.bytes_consumed
        if last < 0 or at != len(data):
            raise errors.CorruptError(
                f"partition {self.log.name}: {len(data)} bytes read from the "
                f"{source} at offset {self.offset} are not whole batches (whole: "
                f"{at} bytes); they begin {bytes(data[:32]).hex()}"
            )
        self.offset = max(self.offset, last + 1)
        self._records_read = records  # what a columnar poll of them decodes, at most
        return data

    def poll(self, timeout: float | None = 0) -> list[Record]:
        """The next records from self.offset on, or [] after timeout."""
        first = self.offset
        data = self._read(timeout, self.max_bytes, self._buffer)
        if not data:
            return []
        # decoded where the read left them, with no copy out: each key, value and
        # header becomes bytes of its own, so the records outlive the next read
        assert self._read_in is not None  # of self._buffer or the ring reader's
        buf, whole, start = self._read_in
        log, at, end = self.log, start, start + len(data)
        records: list[Record] = []
        while at < end:  # all of it: self.offset is already past it
            try:
                got, consumed = decode_records(
                    self._decoded,
                    buf,
                    whole,
                    at,
                    end,
                    log.topic,
                    log.partition,
                    self.check_crcs,
                )
            except errors.CorruptError as exc:
                bad, damage = self._damaged(data, at - start, first, exc)
                bad += start
                if not records and bad == at:
                    raise damage from exc
                while at < bad:  # the good batches before it
                    got, consumed = decode_records(
                        self._decoded, buf, whole, at, bad, log.topic,
                        log.partition, self.check_crcs,
                    )  # fmt: skip
                    records += got
                    at += consumed
                break
            if not consumed:  # whole batches by _advance: cannot happen
                raise errors.CorruptError(
                    f"partition {log.name}: no record batch decodes at byte "
                    f"{at - start} of {len(data)} read for offset {first}; the bytes "
                    f"there begin {whole[at : at + 32].hex()}"
                )
            records += got
            at += consumed
        if records and records[0].offset < first:
            records = [r for r in records if r.offset >= first]
        return records

    def poll_columns(self, timeout: float | None = 0) -> RecordColumns | None:
        """The next records from self.offset on as columns (no Python object per
        record), or None after timeout; CRCs checked and a damaged batch handled
        as poll does (the good batches before it come first)."""
        first = self.offset
        data = self.read_batches(timeout)
        if not data:
            return None
        log = self.log
        try:
            return decode_columns(
                data, self._records_read, log.topic, log.partition, first,
                self.check_crcs,
            )  # fmt: skip
        except errors.CorruptError as exc:
            bad, damage = self._damaged(data, 0, first, exc)
            if not bad:
                raise damage from exc
            return decode_columns(
                data[:bad], self._records_read, log.topic, log.partition, first,
                self.check_crcs,
            )  # fmt: skip

    def _source_name(self) -> str:
        if self._source is None:
            return f"ring {self.log.ring.name}"
        base, at = self._source
        return f"{self.log.directory / file_name(base, LOG_SUFFIX)} at byte {at}"

    def _damaged(
        self, data: bytes | memoryview, at: int, first: int, exc: errors.CorruptError
    ) -> tuple[int, errors.CorruptError]:
        """Where the damaged batch of data[at:] begins (the ones before it are good,
        and are returned first), and the error that names it. The reader goes back
        to it (to first, if that is inside it): each poll raises until a seek past
        it, as in Kafka, never skipping it and the batches after it unread."""
        self._scan.scan(data, at, len(data), verify=True)
        bad = at + self._scan.bytes_consumed
        if bad >= len(data):  # CRCs fine: a compressed payload that is not
            bad = at  # what its codec says; blame the batch that raised
        base = int.from_bytes(data[bad : bad + 8], "big")
        self.seek(max(first, base))
        return bad, errors.CorruptError(
            f"partition {self.log.name}: the batch at offset {base} ({bad} bytes "
            f"into what was read from {self._source_name()}) fails its CRC32C or "
            f"record checks: {exc}"
        )


def _over(buffer: bytearray) -> tuple[Any, Any, int]:
    """What a LogReader's reads of the segments into buffer are in (its _read_in):
    LogSegment.read's view of buffer starts at its first byte."""
    buf = _native.buffer_over(buffer)
    return buf, _native.buffer_bytes(buf), 0


def offset_for_time(view: PartitionView, timestamp: int) -> int | None:
    """The first offset whose record timestamp is >= timestamp (Kafka's
    offsetsForTimes), or None if there is none: the time index of the first segment
    that may hold one says where to start, then batches are read from there on."""
    segments = view.segments()
    start = view.log_start_offset
    for i, segment in enumerate(segments):
        # the last segment may be growing, and its newest records are in the ring
        if i + 1 < len(segments) and segment.largest_timestamp < timestamp:
            start = segments[i + 1].base_offset
            continue
        _, at = segment.time_index.lookup(timestamp)
        start = max(start, segment.offset_index.lookup(at).offset)
        break
    reader = LogReader(view, max(start, view.log_start_offset))
    while records := reader.poll(0):
        for record in records:
            if record.timestamp >= timestamp:
                return record.offset
    return None
