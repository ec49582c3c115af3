"""Per-record sends gathered into batches, as Kafka's producer does (its
RecordAccumulator): `send` encodes the record into the open batch in C, one call
(`_native.BatchBuilder`, csrc/shmb_py.c), and the batch is sealed and appended to
the ring when it holds `batch_records` records or `batch_bytes` bytes, or on `flush`.
A record (value, key, headers, timestamp) sent into the middle of a batch needs no
Python at all beyond the call (`BatchBuilder.append_value`: the producer's per-record
path, ~100 ns). `Ring.append`
is the path that returns each record's offset at once.

No batch is larger than `max_batch_bytes` (the topic's max.message.bytes, counted on the
encoded batch, header, keys and headers included, as Kafka counts it): a record that
would take the open batch over it goes into the next one, `append_now` cuts a long
list into batches that fit, and a record whose batch alone is over it is refused with
RecordTooLarge before anything is appended. With a `compression_type` codec, batches
are sealed, compressed and appended as they are; the limit applies to the compressed
batch, and a batch of records within the codec's worst case always fits it, so only a
record alone is ever compressed to find out.

Records sent without a timestamp get the wall clock when their batch is sealed (or,
in a batch where some record came with one, when they are sent).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

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
    """Encodes records for one ring into its open batch and appends the batches.
    `send` and `flush` are not thread-safe (the producer holds its lock around them);
    `open.append_value` is, on its own. `what` names the ring in errors (the
    producer passes its topic and partition). future_type: what `open.append_value`
    returns, made of (the open batch's token, the record's index)."""

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
        future_type: type | None = None,
    ) -> None:
        self.ring = ring
        self.what = f"ring {ring.name}" if what is None else what
        # no batch can be larger than the ring anyway
        self.max_batch_bytes = (
            ring.capacity_bytes if max_batch_bytes is None else max_batch_bytes
        )
        self.compression_type = compression_type
        self.compressed = compression.codec_bits(compression_type) != 0
        # the records' bytes a batch may hold, so that it fits max_batch_bytes,
        # compressed too
        self.room = (
            compression.max_uncompressed_bytes(compression_type, self.max_batch_bytes)
            - _native.BATCH_HEADER_BYTES
        )
        self.batch_records = batch_records
        self.batch_bytes = min(batch_bytes, self.room)
        self.timeout = timeout
        self.since = 0.0  # time.monotonic() of the first queued record (linger.ms)
        self.open = _native.BatchBuilder(
            batch_records, self.batch_bytes, self.room, future_type, self.next_token()
        )
        self.sent_to: Any = None  # the token of the batch the last send went to
        self._list: Any = None  # append_now's BatchBuilder, made on first use

    def next_token(self) -> object:
        """What the futures of the next batch's records point at (the producer's
        _Batch); called as each batch opens."""
        return None

    def send(
        self,
        value: bytes | None,
        key: bytes | None = None,
        timestamp: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> int:
        """Encode one record into the open batch; returns its index there (its
        token is `sent_to`). Appends the batch when it is full; if that append
        fails (RingFull after the timeout), this record is not queued and the error
        is raised; the records queued before it stay queued for the next flush.
        RecordTooLarge, and nothing queued, if the record's batch alone is over
        max_batch_bytes."""
        batch = self.open
        hs = headers or None
        index = batch.append(value, key, timestamp, hs)
        if index < 0:  # it does not fit the open batch: that one goes first
            if not self.compressed:  # unless it fits no batch: nothing goes then
                self.check_alone(value, key, headers)
            self.flush()
            index = batch.append(value, key, timestamp, hs)  # alone: taken if < 2 GiB
            if index < 0:
                size = single_record_batch_bytes(value, key, headers)
                raise self.too_large(size, value, key, headers)
        self.sent_to = batch.token
        if not index:
            self.since = time.monotonic()
            if batch.records_bytes > self.room:  # alone over the worst-case bound
                self._check_alone(value, key, headers)
        # full: no other thread's append_value goes in before the flush (it
        # refuses the record that fills a batch), so drop_last drops this one
        if index >= self.batch_records - 1 or batch.records_bytes >= self.batch_bytes:
            try:
                self.flush()
            except BaseException:
                batch.drop_last()  # so that a caller who retries sends once
                raise
        return int(index)

    def _check_alone(
        self, value: bytes | None, key: bytes | None, headers: Sequence[Header] | None
    ) -> None:
        """The open batch holds only this record, over room: RecordTooLarge (and the
        record dropped) if its batch, compressed with a codec, is over the limit."""
        batch = self.open
        view = batch.seal()
        try:
            size = len(view)
            how = ""
            if self.compressed:
                plain = size
                size = len(compression.compress_batch(view, self.compression_type))
                how = f" compressed with {self.compression_type} ({plain} uncompressed)"
        finally:
            view.release()
            batch.unseal()
        if size > self.max_batch_bytes:
            batch.drop_last()
            raise self.too_large(size, value, key, headers, how)

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

    def __len__(self) -> int:
        return len(self.open)

    def flush(self) -> int:
        """Append the open batch; returns the offset of the next record to be sent
        (-1 if nothing was queued). If the append fails, the records stay queued."""
        batch = self.open
        if not len(batch):
            return -1
        view = batch.seal()  # appends refuse from here until clear or unseal
        n = len(batch)
        try:
            if self.compressed:
                base = self.append_encoded(
                    compression.compress_batch(view, self.compression_type)
                )
            else:
                base = self.append_encoded(view)
        except BaseException:
            batch.unseal()
            raise
        finally:
            view.release()
        batch.clear(self.batch_appended(base, n))
        return base + n

    def batch_appended(self, base_offset: int, records: int) -> object:
        """The open batch went to the ring at base_offset; returns the next batch's
        token (appends still refuse: the producer settles its futures here)."""
        return self.next_token()

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

    def _append_built(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        timestamp: int | None,
    ) -> int | None:
        """The records as one batch encoded in C, one call for all (no list of
        lengths, as RecordArrays makes): its base offset, or None, with nothing
        appended, if they do not fit one batch (the builder counts exact sizes)."""
        if self._list is None:  # a builder of its own: send's open batch stays open
            self._list = _native.BatchBuilder(2**31 - 1, 2**62, self.room)
        batch = self._list
        try:
            if batch.extend(values, keys, timestamp) != len(values):
                return None
            if batch.records_bytes > self.room:  # one record alone over the limit
                return None
            view = batch.seal()
            try:
                return self.append_encoded(view)
            finally:
                view.release()
        finally:
            batch.clear(None)

    def append_encoded(self, batch: bytes | memoryview) -> int:
        # records and CRC need no check: we encoded them and computed it (the
        # seal, or the codec), as shmb_ring_append_records does in place
        return self.ring.append_encoded(
            batch, timeout=self.timeout, validate_records=False, sealed=True
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
        if headers is None and not self.compressed:  # the common call
            base = self._append_built(values, keys, timestamp)
            if base is not None:
                return [(base, n)]
        ts = _native.TIMESTAMP_NOW if timestamp is None else timestamp
        if _payload_bound(values, keys, headers) <= self.room:
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
