"""A partition ring: one shared-memory object per partition that producers append
Kafka RecordBatch v2 batches to and consumers read from, with dense offsets.

Writers serialise on a crash-safe lock inside the ring; readers keep their own byte
position and never write shared memory, so any number of them cost the writer nothing.
An append never overwrites bytes below the spill position (what the durable log has
persisted); a reader that falls a whole ring behind gets `Lapped` and must continue
from the segment files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from shmbroker import _native, errors, shm
from shmbroker.records import Header, Record, decode_records

BackoffIdleStrategy = _native.BackoffIdleStrategy
DEFAULT_IDLE = BackoffIdleStrategy()  # ~0.2 ms of spins and yields: see csrc/shmb.h
PARK_AT_ONCE = BackoffIdleStrategy(max_spins=0, max_yields=0)  # least CPU
# The knob readers took before the idle strategy: 0 parks at once (PARK_AT_ONCE), any
# other value means DEFAULT_IDLE. Kept while log/ passes spin= through; pass idle=.
DEFAULT_SPIN = 200e-6
READ_BUFFER_BYTES = 1 << 20


class RingStat(msgspec.Struct, frozen=True):
    capacity_bytes: int
    tail_position: int
    claim_position: int
    spill_position: int
    next_offset: int
    log_start_offset: int
    ring_start_offset: int
    batches_appended: int
    records_appended: int
    bytes_appended: int
    full_waits: int
    lock_recoveries: int
    data_waiters: int
    spill_waiters: int
    partition_leader_epoch: int
    layout_version: int
    creator_pid: int
    created_unix_ns: int
    durable_offset: int
    durable_waiters: int
    spill_errno: int
    deleted: int


def _timeout_ms(timeout: float | None) -> int:
    """Python timeouts are float seconds (None = forever); C takes ms (-1 = forever)."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise errors.InvalidArgument(f"timeout must be >= 0 or None, not {timeout}")
    return min(int(timeout * 1000), 2**31 - 1)


def partition_label(topic: str, partition: int) -> str:
    """What errors call the ring of a topic partition: its name is for machines."""
    return f"topic {topic!r} partition {partition}"


class _ClosedRing:
    """Stands in for the mapping of a closed ring."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise errors.ClosedError(f"ring {self._name} is closed")


class Ring:
    """A mapped partition ring. Create with `Ring.create`, attach with `Ring.open`."""

    def __init__(
        self, name: str, native: _native.RingMap, label: str | None = None
    ) -> None:
        self.name = name
        # what errors call it: a client names the topic partition the ring holds
        self.label = label or f"ring {name}"
        # a plain attribute, not a property: the per-record path reads it every call;
        # close() swaps in _ClosedRing, which raises ClosedError on any use
        self.native: _native.RingMap | _ClosedRing = native
        self.capacity_bytes = native.capacity_bytes

    @classmethod
    def create(
        cls,
        name: str,
        capacity_bytes: int,
        *,
        base_offset: int = 0,
        partition_leader_epoch: int = 0,
        mode: int = 0o600,
    ) -> Ring:
        """Create and initialise a new ring; fails if the name exists."""
        size = _native.ring_object_bytes(capacity_bytes)
        if base_offset < 0:
            raise errors.InvalidArgument(f"base offset {base_offset} < 0")
        fd = shm.create(name, size, mode)
        try:
            native = _native.RingMap(
                fd,
                True,
                capacity_bytes,
                base_offset,
                partition_leader_epoch,
                what=f"ring {name}",
            )
        except BaseException:
            shm.unlink(name)
            raise
        finally:
            os.close(fd)
        return cls(name, native)

    @classmethod
    def open(cls, name: str, *, label: str | None = None) -> Ring:
        """Attach to an existing ring; CorruptError if it is not a ring of ours.
        label: what errors call it (e.g. "topic 'orders' partition 0")."""
        fd = shm.open_fd(name)
        try:
            return cls(name, _native.RingMap(fd, False, what=f"ring {name}"), label)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap. Readers made from this ring stop working."""
        native, self.native = self.native, _ClosedRing(self.name)
        if isinstance(native, _native.RingMap):
            native.unmap()

    def unlink(self) -> bool:
        """Remove the name from /dev/shm; mappings stay valid until closed."""
        return shm.unlink(self.name)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- appends ---------------------------------------------------------------------

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        *,
        timestamp: int | None = None,
        headers: Sequence[Header] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Append one record as its own batch; returns its offset.

        Blocks up to timeout (None: forever, 0: not at all) while the ring is full of
        unspilled bytes."""
        if (
            key is None
            and timestamp is None
            and timeout is None
            and value
            and not headers
        ):
            rc = self.native.append_value(value)  # the commonest call, the fewest args
            if rc < 0:
                raise self._append_error(rc, timeout)
            return rc
        if headers:
            return self.append_batch(
                [value],
                None if key is None else [key],
                timestamp=timestamp,
                headers=[headers],
                timeout=timeout,
            )
        rc = self.native.append_record(
            key,
            value,
            _native.TIMESTAMP_NOW if timestamp is None else timestamp,
            -1 if timeout is None else _timeout_ms(timeout),
        )
        if rc < 0:
            raise self._append_error(rc, timeout)
        return rc

    def append_batch(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        *,
        timestamps: Sequence[int] | None = None,
        timestamp: int | None = None,
        headers: Sequence[Sequence[Header]] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Append the records as one batch (the fast path); returns the first offset."""
        if not values:
            raise errors.InvalidArgument("append_batch needs at least one record")
        arrays = _native.RecordArrays(
            values,
            keys,
            timestamps,
            _native.TIMESTAMP_NOW if timestamp is None else timestamp,
            headers,
        )
        rc = self.native.append_records(arrays, _timeout_ms(timeout))
        if rc < 0:
            raise self._append_error(rc, timeout)
        return rc

    def append_encoded(
        self,
        batch: bytes | memoryview,
        *,
        timeout: float | None = None,
        validate_records: bool = True,
        sealed: bool = False,
    ) -> int:
        """Append one pre-encoded RecordBatch v2 as is (baseOffset and
        partitionLeaderEpoch patched); returns its base offset. sealed: this
        process just computed its CRC32C (a producer's own batch): not again."""
        flags = _native.VALIDATE_RECORDS if validate_records else 0
        if sealed:
            flags |= _native.VALIDATE_SEALED
        rc = self.native.append_batch(batch, flags, _timeout_ms(timeout))
        if rc < 0:
            raise self._append_error(rc, timeout, len(batch))
        return rc

    def _append_error(
        self, rc: int, timeout: float | None, size: int | None = None
    ) -> Exception:
        if rc == _native.FULL:
            s = self.stat()
            waited = "did not wait" if timeout == 0 else f"waited {timeout}s"
            why = (
                f"the spill is failing: {os.strerror(s.spill_errno)}"
                if s.spill_errno
                else "is the broker spilling this partition?"
            )
            return errors.RingFull(
                f"{self.label} full: {s.tail_position - s.spill_position}/"
                f"{s.capacity_bytes} bytes not yet spilled (tail {s.tail_position}, "
                f"spill position {s.spill_position}); append {waited}; {why}"
            )
        if rc in (_native.CORRUPT, _native.LAYOUT):
            damage = self.check()
            if damage is not None or rc == _native.LAYOUT:
                return errors.CorruptError(
                    f"append to {self.label} refused: its header is damaged "
                    f"({damage or 'the writer lock is not a lock any more'}); "
                    f"`shmbroker ring-stat` shows it"
                )
        if rc == _native.ETOOBIG:
            what = f"{size} bytes" if size is not None else "the batch"
            return errors.InvalidArgument(
                f"append to {self.label}: {what} larger than the ring "
                f"({self.capacity_bytes} bytes) or than a batch may be"
            )
        return _native.error(rc, f"append to {self.label}")

    # ---- the durable log's side: one spiller per ring --------------------------------

    def wait_committed(self, position: int, timeout: float | None) -> int | None:
        """The tail once it is past position (committed bytes to spill); None after
        timeout (None: none), when woken (`wake`), or at once when the ring's topic
        is deleted with nothing past it."""
        tail = self.native.wait(
            position, -1 if timeout is None else _timeout_ms(timeout), 0
        )
        return None if tail < 0 else tail

    def unspilled(self, position: int) -> memoryview:
        """The committed bytes from position (>= spill) to the tail, in place: they
        hold still until the spill position passes them."""
        return self.native.unspilled(position)

    def spill_advance(self, position: int, offset: int = -1) -> None:
        """Everything below position is persisted; appenders may reuse that space.
        offset, if known, is that of the batch at position: the log end offset of
        the segments, which segment readers are bounded by (`spilled_offset`)."""
        self.native.spill_advance(position, offset)

    def spill_rewind(self, position: int, offset: int) -> None:
        """Spill again from position (the batch at offset): recovery cut the segments
        below what the ring had spilled. Lapped if the ring no longer holds it."""
        rc = self.native.spill_rewind(position, offset)
        if rc < 0:
            raise _native.error(
                rc, f"rewind the spill of ring {self.name} to offset {offset}"
            )

    def spilled_offset(self) -> int:
        """Every offset below this is in the segment files as whole batches; a
        segment reader never reads past it (a pwrite in progress grows the file
        before its last bytes are there)."""
        return self.native.spilled_offset()

    def wake(self) -> None:
        """Wake whoever sleeps on the ring's data (the spill thread told to stop);
        sleeping readers look again and go back to sleep."""
        self.native.wake()

    def set_spill_errno(self, err: int) -> None:
        """Why the spill fails (0: it works again), for producers' RingFull errors."""
        self.native.set_spill_errno(err)

    def durable_advance(self, offset: int) -> None:
        """Every offset below offset is fsynced: wakes producers waiting for it."""
        self.native.durable_advance(offset)

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        """Wait until every record below offset is fsynced to a segment (pass the last
        appended offset + 1); False on timeout. A waiting producer makes the spill
        fsync at once. UnknownTopic if the ring is deleted first. Ctrl-C raises
        KeyboardInterrupt within _native.WAIT_SLICE_MS."""
        rc = self.native.wait_durable(
            offset, -1 if timeout is None else _timeout_ms(timeout)
        )
        if rc == _native.EMPTY:
            return False
        if rc < 0:
            raise _native.error(rc, f"wait for durability on {self.label}")
        return True

    def set_log_start_offset(self, offset: int) -> None:
        self.native.set_log_start_offset(offset)

    def mark_deleted(self) -> None:
        """Mark the ring's topic deleted; the broker calls it before unlinking a
        deleted topic's ring. From then on every append, in any process, raises
        UnknownTopic, and so do readers and `wait_durable` with nothing left to
        return; those asleep on the ring wake at once. Readers still get the records
        committed before. Waits (up to 1 s) for an append in progress to commit."""
        self.native.mark_deleted()

    def check(self) -> str | None:
        """What is wrong with the header appends rely on, or None (a process that
        scribbled on the shared memory); appends refuse a damaged ring."""
        which, found, expected = self.native.check()
        if not which:
            return None
        field, rule = _native.HEADER_CHECKS[which]
        return f"{field} {found} is {rule} ({expected})"

    def stat(self) -> RingStat:
        return RingStat(**self.native.stat())

    def high_watermark(self) -> int:
        """The offset the next appended record gets (stat().next_offset, cheaply)."""
        return self.native.high_watermark()

    def log_start_offset(self) -> int:
        """The first offset retention keeps (stat().log_start_offset, cheaply)."""
        return self.native.log_start_offset()

    # ---- reads -----------------------------------------------------------------------

    def seek(self, offset: int) -> int:
        """Byte position of the batch holding offset (or of the tail at the high
        watermark); OffsetOutOfRange if the ring no longer or not yet holds it."""
        rc = self.native.seek(offset)
        if rc < 0:
            s = self.stat()
            raise errors.OffsetOutOfRange(
                f"offset {offset} is not in ring {self.name}: it holds offsets up to "
                f"{s.next_offset} (exclusive), older ones are in the segment files"
            )
        return rc

    def reader(
        self,
        offset: int | None = None,
        *,
        topic: str | None = None,
        partition: int = 0,
        spin: float = DEFAULT_SPIN,
        check_crcs: bool = False,
    ) -> RingReader:
        """A reader from offset (None: from the tail, i.e. only new records)."""
        reader = RingReader(
            self,
            self.native.tail_position(),
            topic=self.name if topic is None else topic,
            partition=partition,
            spin=spin,
            check_crcs=check_crcs,
        )
        if offset is not None:
            reader.seek(offset)
        return reader


class RingReader:
    """Reads batches or records of a ring from a byte position. Not thread-safe.

    `read_batches` gives raw whole batches (for the gateway and the spill); `poll`
    decodes them into Records. `position` is the ring position after the bytes this
    reader has copied out; bytes copied but not yet returned wait in its buffer.
    A poll that waits idles as `idle` says (None: DEFAULT_IDLE, or PARK_AT_ONCE
    with the older knob spin=0, see DEFAULT_SPIN), then sleeps on the ring's futex;
    Ctrl-C raises KeyboardInterrupt from it within _native.WAIT_SLICE_MS."""

    def __init__(
        self,
        ring: Ring,
        position: int,
        *,
        topic: str,
        partition: int = 0,
        idle: BackoffIdleStrategy | None = None,
        spin: float = DEFAULT_SPIN,
        buffer_bytes: int = READ_BUFFER_BYTES,
        max_records: int = 8192,
        check_crcs: bool = False,
    ) -> None:
        self.ring = ring
        self.position = position
        self.topic = topic
        self.partition = partition
        # what errors call it: the topic partition, if a client named one
        self._label = (
            ring.label
            if topic == ring.name
            else f"topic {topic!r} partition {partition}"
        )
        if idle is None:
            idle = PARK_AT_ONCE if spin == 0 else DEFAULT_IDLE
        self.idle = idle
        self._check_crcs = check_crcs  # appends were validated; this re-checks bytes
        self._cell = _native.new_cell()  # this reader's own: threads may share a ring
        self._new_buffer(buffer_bytes)
        self._decoded = _native.Decoded(max_records, max_records)
        self._skip_below = -1  # after a seek into a batch: drop its earlier records
        self._scan: _native.Scan | None = None  # read_span's, made on first use

    def _new_buffer(self, size: int) -> None:
        # decoded straight from this C buffer; values are sliced out as bytes once
        self._buf = _native.new_buffer(size)
        self._bytes = _native.buffer_bytes(self._buf)
        self._have = self._at = 0  # bytes in the buffer, and how many are returned

    def _fill(self, timeout: float | None) -> bool:
        """Make sure the buffer holds bytes not yet returned; False on timeout."""
        if self._at < self._have:
            return True
        native = self.ring.native
        timeout_ms = -1 if timeout is None else _timeout_ms(timeout)
        while True:
            n = native.read(self._cell, self.position, self._buf, timeout_ms, self.idle)
            if n > 0:
                self._have, self._at = n, 0
                self.position += n
                return True
            if n == _native.EMPTY:
                return False
            if n == _native.ETOOBIG:  # a batch larger than our buffer: grow, retry
                size = native.batch_bytes(self.position)
                if size > 0:
                    self._new_buffer(2 * size)
                    continue
                n = size
            if n == _native.LAPPED:
                s = self.ring.stat()
                raise errors.Lapped(
                    f"reader of ring {self.ring.name} at position {self.position} was "
                    f"overwritten: the ring holds positions from "
                    f"{s.claim_position - s.capacity_bytes} to {s.tail_position}"
                )
            raise _native.error(n, f"read {self._label}")

    def read_batches(self, timeout: float | None = None) -> bytes:
        """The next whole batches as bytes (b'' if none came within timeout)."""
        if not self._fill(timeout):
            return b""
        out = self._bytes[self._at : self._have]
        self._at = self._have
        return bytes(out)

    @property
    def buffer(self) -> tuple[Any, Any]:
        """This reader's C buffer (what the decoders take) and its bytes (whose
        slices are bytes copies), which read_span's positions index. Each read may
        overwrite them, or put a new buffer in their place."""
        return self._buf, self._bytes

    def read_span(
        self, max_bytes: int, timeout: float | None = None
    ) -> tuple[int, int]:
        """The next whole batches, in this reader's `buffer` from start to end and
        valid until its next read: at most max_bytes unless the first batch alone
        is larger (Kafka's KIP-74); start == end if none came within timeout."""
        if not self._fill(timeout):
            return 0, 0
        start, end = self._at, min(self._have, self._at + max_bytes)
        if end < self._have:  # cut at a batch boundary
            if self._scan is None:
                self._scan = _native.Scan()
            if self._scan.scan(self._buf, start, end):
                end = start + self._scan.bytes_consumed
            else:
                length = self._bytes[start + 8 : start + 12]
                end = start + int.from_bytes(length, "big") + 12
        self._at = end
        return start, end

    def poll(self, timeout: float | None = None) -> list[Record]:
        """The next records (at least one batch's worth), or [] after timeout."""
        if not self._fill(timeout):
            return []
        records, consumed = decode_records(
            self._decoded,
            self._buf,
            self._bytes,
            self._at,
            self._have,
            self.topic,
            self.partition,
            self._check_crcs,
        )
        self._at += consumed
        if self._skip_below >= 0:
            records = [r for r in records if r.offset >= self._skip_below]
            self._skip_below = -1
        return records

    def __iter__(self) -> Iterator[Record]:
        while True:
            yield from self.poll(None)

    def seek(self, offset: int) -> None:
        """Continue from offset; poll drops the records before it in its batch."""
        self.position = self.ring.seek(offset)
        self._have = self._at = 0
        self._skip_below = offset
