"""Per-record sends gathered into batches, as Kafka's producer does (its
RecordAccumulator): `send` only queues the record in Python lists; one C call appends
all queued records to the ring as one batch when `batch_records` or `batch_bytes` are
reached, or on `flush`. A cffi call costs more than queueing a record, so this is the
per-record path that runs at batch speed; `Ring.append` is the one that returns each
record's offset at once.

No batch is larger than `max_batch_bytes` (the topic's max.message.bytes, counted on the
encoded batch, header, keys and headers included, as Kafka counts it): a queue that a
record would take over it is appended first, `append_now` cuts a long list into batches
that fit, and a record whose batch alone is over it is refused with RecordTooLarge
before anything is appended. With a `compression_type` codec, batches are encoded,
compressed and appended as they are; the limit applies to the compressed batch, and a
batch of records within the codec's worst case always fits it, so only a record alone
is ever compressed to find out.

Records sent without a timestamp get the wall clock when their batch is appended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from shmbroker import _native, compression, errors
from shmbroker.records import Header
from shmbroker.ring import Ring

DEFAULT_BATCH_RECORDS = 1000
DEFAULT_BATCH_BYTES = 1 << 20

# Most bytes a record adds to a batch beside its key, value and header bytes: length
# varint 5, attributes 1, timestamp delta 10, offset delta 5, key and value lengths 5
# each, header count 5. Counting this bound instead of the exact encoding keeps the
# per-record path to one addition; only a record near the limit is sized exactly.
RECORD_BOUND = 36
HEADER_BOUND = 10  # a header's two varint lengths


def record_bound(
    value: bytes | None, key: bytes | None, headers: Sequence[Header] | None
) -> int:
    """At least the bytes the record takes in any batch."""
    n = RECORD_BOUND if value is None else RECORD_BOUND + len(value)
    if key is not None:
        n += len(key)
    if headers:
        n += _header_bytes(headers)
    return n


def _header_bytes(headers: Sequence[Header]) -> int:
    return sum(HEADER_BOUND + len(k.encode()) + _len(v) for k, v in headers)


def _varint_bytes(n: int) -> int:
    """Size of n as a zigzag varint (-1 for a null length is one byte)."""
    return max(1, (((n << 1) ^ (n >> 63)).bit_length() + 6) // 7)


def _bytes_field(b: bytes | None) -> int:
    return 1 if b is None else _varint_bytes(len(b)) + len(b)


def single_record_batch_bytes(
    value: bytes | None, key: bytes | None, headers: Sequence[Header] | None
) -> int:
    """The exact size of a batch holding only this record, as the C encoder (and
    Kafka's) writes it: its timestamp and offset deltas are 0, one byte each."""
    body = 3 + _bytes_field(key) + _bytes_field(value)  # attributes, the two deltas
    headers = headers or ()
    body += _varint_bytes(len(headers))
    for k, v in headers:
        body += _bytes_field(k.encode()) + _bytes_field(v)
    return _native.BATCH_HEADER_BYTES + _varint_bytes(body) + body


class RecordAccumulator:
    """Queues records for one ring and appends them in batches. Not thread-safe.

    Keys, timestamps and headers are columns made on first use in a batch, so a
    value-only send is one list append and two checks. `what` names the ring in
    errors (the producer passes its topic and partition)."""

    def __init__(
        self,
        ring: Ring,
        *,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        timeout: float | None = None,
        max_batch_bytes: int | None = None,
        compression_type: str = "none",
        what: str | None = None,
    ) -> None:
        self.ring = ring
        self.what = f"ring {ring.name}" if what is None else what
        # no batch can be larger than the ring anyway
        self.max_batch_bytes = (
            ring.capacity_bytes if max_batch_bytes is None else max_batch_bytes
        )
        self.compression_type = compression_type
        self.compressed = compression.codec_bits(compression_type) != 0
        # the records' bytes (record_bound() each) that a batch may hold, so that
        # it fits max_batch_bytes, compressed too
        self.room = (
            compression.max_uncompressed_bytes(compression_type, self.max_batch_bytes)
            - _native.BATCH_HEADER_BYTES
        )
        self.batch_records = batch_records
        self.batch_bytes = min(batch_bytes, self.room)
        self.timeout = timeout
        self.since = 0.0  # time.monotonic() of the first queued record (linger.ms)
        self._new_batch()

    def _new_batch(self) -> None:
        self._values: list[bytes | None] = []
        self._keys: list[bytes | None] | None = None
        self._timestamps: list[int] | None = None
        self._headers: list[Sequence[Header]] | None = None
        self._columns = False  # any of the three exists
        self._bytes = 0  # record_bound() of every queued record

    def send(
        self,
        value: bytes | None,
        key: bytes | None = None,
        timestamp: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> int:
        """Queue one record; returns its index in the batch being queued. Appends
        the batch when it is full; if that append fails (RingFull after the
        timeout), this record is not queued and the error is raised; the records
        queued before it stay queued for the next flush. RecordTooLarge, and
        nothing queued, if the record's batch alone is over max_batch_bytes."""
        size = record_bound(value, key, headers)
        if self._bytes + size > self.room:
            self._make_room(value, key, headers, size)
        values = self._values
        index = len(values)
        if not index:
            self.since = time.monotonic()
        values.append(value)
        if key is not None or timestamp is not None or headers or self._columns:
            self._add_columns(index, key, timestamp, headers)
        self._bytes += size
        if index >= self.batch_records - 1 or self._bytes >= self.batch_bytes:
            try:
                self.flush()
            except BaseException:
                self._unqueue_last(size)  # so that a caller who retries sends once
                raise
        return index

    def _make_room(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[Header] | None,
        size: int,
    ) -> None:
        """The record does not fit the queued batch: check that it fits a batch of
        its own, then append the queued ones. (Compressed, only compressing it can
        tell: the flush right after it is queued does, in append.)"""
        if size > self.room and not self.compressed:  # maybe not: size it exactly
            self.check_alone(value, key, headers)
        self.flush()

    def check_alone(
        self, value: bytes | None, key: bytes | None, headers: Sequence[Header] | None
    ) -> None:
        exact = single_record_batch_bytes(value, key, headers)
        if exact > self.max_batch_bytes:
            raise self.too_large(exact, value, key, headers)

    def too_large(
        self,
        batch_bytes: int,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[Header] | None,
        how: str = "",
    ) -> errors.RecordTooLarge:
        header_bytes = _header_bytes(headers or ()) - HEADER_BOUND * len(headers or ())
        return errors.RecordTooLarge(
            f"send to {self.what}: a record of value {_len(value)}, key {_len(key)} "
            f"and headers {header_bytes} bytes makes a batch of {batch_bytes} "
            f"bytes{how}, larger than the topic's max.message.bytes "
            f"({self.max_batch_bytes}); nothing was sent: raise max.message.bytes "
            f"(`shmbroker topics alter --add-config max.message.bytes=N`) or send "
            f"smaller records"
        )

    def _add_columns(
        self,
        index: int,
        key: bytes | None,
        timestamp: int | None,
        headers: Sequence[Header] | None,
    ) -> None:
        if key is not None and self._keys is None:
            self._keys = [None] * index
        if timestamp is not None and self._timestamps is None:
            self._timestamps = [_native.TIMESTAMP_NOW] * index
        if headers and self._headers is None:
            self._headers = [()] * index
        self._columns = True
        if self._keys is not None:
            self._keys.append(key)
        if self._timestamps is not None:
            self._timestamps.append(
                _native.TIMESTAMP_NOW if timestamp is None else timestamp
            )
        if self._headers is not None:
            self._headers.append(headers or ())

    def _unqueue_last(self, size: int) -> None:
        self._values.pop()
        for column in (self._keys, self._timestamps, self._headers):
            if column is not None:
                column.pop()
        self._bytes -= size

    def __len__(self) -> int:
        return len(self._values)

    def flush(self) -> int:
        """Append what is queued; returns the offset of the next record to be sent
        (-1 if nothing was queued)."""
        values = self._values
        if not values:
            return -1
        keys = self._keys
        base = self.append(
            values,
            keys if keys is not None and any(k is not None for k in keys) else None,
            self._timestamps,
            _native.TIMESTAMP_NOW,
            self._headers,
        )
        n = len(values)
        self._new_batch()
        return base + n

    def append(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        timestamps: Sequence[int] | None,
        timestamp: int,
        headers: Sequence[Sequence[Header]] | None,
    ) -> int:
        """Append the records as one batch, which the caller made fit (but for a
        compressed record alone: RecordTooLarge if it does not); returns its base
        offset."""
        if not self.compressed:  # encoded straight into the ring
            return self.ring.append_batch(
                values,
                keys,
                timestamps=timestamps,
                timestamp=timestamp,
                headers=headers,
                timeout=self.timeout,
            )
        arrays = _native.RecordArrays(values, keys, timestamps, timestamp, headers)
        return self.append_encoded(self._compress(arrays, values, keys, headers))

    def append_encoded(self, batch: bytes) -> int:
        # records need no check: we encoded them, and a compressed batch's are not
        # parsed anyway (the C validator looks at its header and CRC)
        return self.ring.append_encoded(
            batch, timeout=self.timeout, validate_records=False
        )

    def _compress(
        self,
        arrays: _native.RecordArrays,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        headers: Sequence[Sequence[Header]] | None,
    ) -> bytes:
        plain = _native.batch_encode(arrays)
        batch = compression.compress_batch(plain, self.compression_type)
        if len(batch) > self.max_batch_bytes:  # within room it cannot: one record
            raise self.too_large(
                len(batch),
                values[0],
                None if keys is None else keys[0],
                None if headers is None else headers[0],
                f" compressed with {self.compression_type} ({len(plain)} uncompressed)",
            )
        return batch

    def append_now(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        *,
        timestamp: int | None = None,
        headers: Sequence[Sequence[Header]] | None = None,
    ) -> list[tuple[int, int]]:
        """Append the records now, after nothing (flush the queue first): as one
        batch, or as several in order when they are over max_batch_bytes. Returns
        (base offset, records) of each batch. A record whose batch alone is over
        the limit is refused (RecordTooLarge) before anything is appended."""
        n = len(values)
        if not n:
            raise errors.InvalidArgument(f"send to {self.what}: no records")
        for name, column in (("keys", keys), ("header lists", headers)):
            if column is not None and len(column) != n:
                raise errors.InvalidArgument(
                    f"send to {self.what}: {len(column)} {name} for {n} values"
                )
        ts = _native.TIMESTAMP_NOW if timestamp is None else timestamp
        if _payload_bound(values, keys, headers) <= self.room:  # the common call
            return [(self.append(values, keys, None, ts, headers), n)]
        spans: list[tuple[int, int]] = []
        for lo, hi, alone in self._cut(values, keys, headers, ts):
            try:
                if alone is not None:
                    base = self.append_encoded(alone)
                else:
                    base = self.append(
                        values[lo:hi],
                        None if keys is None else keys[lo:hi],
                        None,
                        ts,
                        None if headers is None else headers[lo:hi],
                    )
            except errors.ShmbrokerError as exc:
                if not spans:
                    raise
                # say what went, so that a retry does not send it twice
                first, last = spans[0][0], spans[-1][0] + spans[-1][1] - 1
                raise type(exc)(
                    f"send to {self.what}: records 0..{lo - 1} of {n} were appended "
                    f"(offsets {first}..{last}), the rest were not: {exc}"
                ) from exc
            spans.append((base, hi - lo))
        return spans

    def _cut(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        headers: Sequence[Sequence[Header]] | None,
        timestamp: int,
    ) -> list[tuple[int, int, bytes | None]]:
        """[lo, hi) ranges of records whose batches fit, greedily, each with its
        batch when it had to be compressed to know; every record is checked before
        any batch is appended."""
        cuts: list[tuple[int, int, bytes | None]] = []
        lo, used, room = 0, 0, self.room
        for i, value in enumerate(values):
            key = None if keys is None else keys[i]
            hs = None if headers is None else headers[i]
            size = record_bound(value, key, hs)
            if used + size > room and i > lo:
                cuts.append((lo, i, None))
                lo, used = i, 0
            used += size
            if used > room:  # alone over the bound: a batch of its own, if it fits
                alone = None
                if self.compressed:
                    arrays = _native.RecordArrays(
                        [value], None if key is None else [key], None, timestamp,
                        None if hs is None else [hs],
                    )  # fmt: skip
                    alone = self._compress(arrays, [value], [key], [hs or ()])
                else:
                    self.check_alone(value, key, hs)
                cuts.append((i, i + 1, alone))
                lo, used = i + 1, 0
        if lo < len(values):
            cuts.append((lo, len(values), None))
        return cuts

    def __enter__(self) -> RecordAccumulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _len(b: bytes | None) -> int:
    return 0 if b is None else len(b)


def _payload_bound(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[Header]] | None,
) -> int:
    """record_bound() summed over a list, the cheap way for the common list."""
    n = RECORD_BOUND * len(values) + _column_bytes(values)
    if keys is not None:
        n += _column_bytes(keys)
    if headers is not None:
        n += sum(_header_bytes(h) for h in headers if h)
    return n


def _column_bytes(items: Sequence[bytes | None]) -> int:
    try:
        return sum(map(len, items))  # type: ignore[arg-type]
    except TypeError:  # a None among them
        return sum(len(b) for b in items if b is not None)
