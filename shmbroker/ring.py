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
from shmbroker.records import Header, Record

DEFAULT_SPIN = 50e-6  # seconds a reader spins before sleeping on the futex
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


def _timeout_ms(timeout: float | None) -> int:
    """Python timeouts are float seconds (None = forever); C takes ms (-1 = forever)."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise errors.InvalidArgument(f"timeout must be >= 0 or None, not {timeout}")
    return min(int(timeout * 1000), 2**31 - 1)


class Ring:
    """A mapped partition ring. Create with `Ring.create`, attach with `Ring.open`."""

    def __init__(self, name: str, native: _native.RingMap) -> None:
        self.name = name
        self._native: _native.RingMap | None = native
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
    def open(cls, name: str) -> Ring:
        """Attach to an existing ring; CorruptError if it is not a ring of ours."""
        fd = shm.open_fd(name)
        try:
            return cls(name, _native.RingMap(fd, False, what=f"ring {name}"))
        finally:
            os.close(fd)

    @property
    def native(self) -> _native.RingMap:
        if self._native is None:
            raise errors.ClosedError(f"ring {self.name} is closed")
        return self._native

    def close(self) -> None:
        """Unmap. Readers made from this ring stop working."""
        if self._native is not None:
            self._native.unmap()
            self._native = None

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
        if headers:
            return self.append_batch(
                [value],
                None if key is None else [key],
                timestamp=timestamp,
                headers=[headers],
                timeout=timeout,
            )
        ts = _native.TIMESTAMP_NOW if timestamp is None else timestamp
        rc = self.native.append_record(key, value, ts, _timeout_ms(timeout))
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
        batch: bytes,
        *,
        timeout: float | None = None,
        validate_records: bool = True,
    ) -> int:
        """Append one pre-encoded RecordBatch v2 as is (baseOffset and
        partitionLeaderEpoch patched); returns its base offset."""
        flags = _native.VALIDATE_RECORDS if validate_records else 0
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
            return errors.RingFull(
                f"ring {self.name} full: {s.tail_position - s.spill_position}/"
                f"{s.capacity_bytes} bytes not yet spilled (tail {s.tail_position}, "
                f"spill position {s.spill_position}); append {waited}. Is the broker "
                f"spilling this partition?"
            )
        if rc == _native.ETOOBIG:
            what = f"{size} bytes" if size is not None else "the batch"
            return errors.InvalidArgument(
                f"append to ring {self.name}: {what} larger than the ring "
                f"({self.capacity_bytes} bytes) or than a batch may be"
            )
        return _native.error(rc, f"append to ring {self.name}")

    # ---- the durable log's side ------------------------------------------------------

    def spill_advance(self, position: int) -> None:
        """Everything below position is persisted; appenders may reuse that space."""
        self.native.spill_advance(position)

    def set_log_start_offset(self, offset: int) -> None:
        self.native.set_log_start_offset(offset)

    def stat(self) -> RingStat:
        return RingStat(**self.native.stat())

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
            self.stat().tail_position,
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
    decodes them into Records."""

    def __init__(
        self,
        ring: Ring,
        position: int,
        *,
        topic: str,
        partition: int = 0,
        spin: float = DEFAULT_SPIN,
        buffer_bytes: int = READ_BUFFER_BYTES,
        max_records: int = 8192,
        check_crcs: bool = False,
    ) -> None:
        self.ring = ring
        self.position = position
        self.topic = topic
        self.partition = partition
        self._spin_ns = int(spin * 1e9)
        self._check_crcs = (
            check_crcs  # appends were validated; this re-checks the bytes
        )
        self._buf = _native.new_buffer(buffer_bytes)
        self._decoded = _native.Decoded(max_records, max_records)
        self._chunk = b""  # bytes read but not yet decoded into records
        self._chunk_at = 0
        self._skip_below = -1  # after a seek into a batch: drop its earlier records

    def _read(self, timeout: float | None) -> int:
        native = self.ring.native
        while True:
            n = native.read(
                self.position, self._buf, _timeout_ms(timeout), self._spin_ns
            )
            if n >= 0:
                return n
            if n == _native.ETOOBIG:  # a batch larger than our buffer: grow and retry
                self._buf = _native.new_buffer(2 * native.batch_bytes(self.position))
                continue
            if n == _native.EMPTY:
                return 0
            if n == _native.LAPPED:
                s = self.ring.stat()
                raise errors.Lapped(
                    f"reader of ring {self.ring.name} at position {self.position} was "
                    f"overwritten: the ring holds positions from "
                    f"{s.claim_position - s.capacity_bytes} to {s.tail_position}"
                )
            raise _native.error(n, f"read ring {self.ring.name}")

    def read_batches(self, timeout: float | None = None) -> bytes:
        """The next whole batches as bytes (b'' if none came within timeout)."""
        if self._chunk_at < len(self._chunk):  # batches poll() has not finished
            out, self._chunk, self._chunk_at = self._chunk[self._chunk_at :], b"", 0
            return out
        n = self._read(timeout)
        self.position += n
        return bytes(_native.buffer_view(self._buf, n))

    def poll(self, timeout: float | None = None) -> list[Record]:
        """The next records (at least one batch's worth), or [] after timeout."""
        if self._chunk_at >= len(self._chunk):
            n = self._read(timeout)
            if n == 0:
                return []
            self.position += n
            self._chunk = bytes(_native.buffer_view(self._buf, n))
            self._chunk_at = 0
        chunk, at = self._chunk, self._chunk_at
        view = memoryview(chunk)[at:]
        d = self._decoded
        d.decode(view, len(view), self._check_crcs)
        self._chunk_at = at + d.bytes_consumed
        offsets, timestamps, kpos, klen, vpos, vlen, hcount = d.columns()
        topic, part = self.topic, self.partition
        keys = [
            None if n < 0 else chunk[at + p : at + p + n]
            for p, n in zip(kpos, klen, strict=True)
        ]
        values = [
            None if n < 0 else chunk[at + p : at + p + n]
            for p, n in zip(vpos, vlen, strict=True)
        ]
        if any(hcount):
            headers = self._headers(chunk, at, hcount)
        else:
            headers = [()] * len(offsets)
        records = [
            Record(topic, part, o, t, k, v, h)
            for o, t, k, v, h in zip(
                offsets, timestamps, keys, values, headers, strict=True
            )
        ]
        if self._skip_below >= 0:
            records = [r for r in records if r.offset >= self._skip_below]
            self._skip_below = -1
        return records

    def _headers(self, chunk: bytes, at: int, counts: list[int]) -> list[Any]:
        kpos, klen, vpos, vlen = self._decoded.header_columns()
        flat = [
            (
                chunk[at + kp : at + kp + kl].decode(errors="replace"),
                None if vl < 0 else chunk[at + vp : at + vp + vl],
            )
            for kp, kl, vp, vl in zip(kpos, klen, vpos, vlen, strict=True)
        ]
        out, i = [], 0
        for c in counts:
            out.append(tuple(flat[i : i + c]))
            i += c
        return out

    def __iter__(self) -> Iterator[Record]:
        while True:
            yield from self.poll(None)

    def seek(self, offset: int) -> None:
        """Continue from offset; poll drops the records before it in its batch."""
        self.position = self.ring.seek(offset)
        self._chunk, self._chunk_at = b"", 0
        self._skip_below = offset
