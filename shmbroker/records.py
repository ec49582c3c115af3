"""The record a consumer receives: topic, partition, offset, timestamp, key, value,
headers. A frozen msgspec Struct: about 3x cheaper to build than a NamedTuple, which
matters because the consumer builds one per record.

`RecordColumns` is the other way to receive them, for pipelines that never want a
Python object per record: one poll's records of one partition as columns (offsets,
timestamps, key and value positions and lengths) over the one buffer that holds the
batches, keys and values made into bytes only when asked, and `to_arrow()` a
zero-copy pyarrow RecordBatch (binary views over that buffer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec

from shmbroker import _native, errors
from shmbroker.compression import CODEC_MASK, decompress_batches

if TYPE_CHECKING:
    import pyarrow

Header = tuple[str, "bytes | None"]


class Record(msgspec.Struct, frozen=True, gc=False):
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (CreateTime unless the topic says otherwise)
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


class TopicPartition(NamedTuple):
    topic: str
    partition: int


# a mapping's keys may be TopicPartitions or plain (topic, partition) tuples
PartitionKey = TypeVar("PartitionKey", bound=tuple[str, int])


class RecordMetadata(msgspec.Struct, frozen=True, gc=False):
    """Where a produced record went."""

    topic: str
    partition: int
    offset: int


def decode_records(
    decoded: _native.Decoded,
    buf: Any,
    data: Any,
    start: int,
    end: int,
    topic: str,
    partition: int,
    verify_crc: bool = False,
) -> tuple[list[Record], int]:
    """Records of the whole batches of buf[start:end] (at least the first one), and
    the bytes they took. data is buf's bytes to slice (buf itself, or the bytes over
    a C buffer). A compressed first batch is decompressed (compression.py) and
    decoded alone: the C decoder reads only uncompressed batches."""
    try:
        decoded.decode(buf, start, end, verify_crc)
    except errors.InvalidArgument:
        attributes = int.from_bytes(data[start + 21 : start + 23], "big")
        if not attributes & CODEC_MASK:
            raise
        size = int.from_bytes(data[start + 8 : start + 12], "big") + 12
        plain = decompress_batches(
            memoryview(data)[start : start + size], verify_crc=verify_crc
        )
        decoded.decode(plain, 0, len(plain))
        return build_records(decoded, plain, topic, partition), size
    return build_records(decoded, data, topic, partition), decoded.bytes_consumed


def build_records(
    decoded: _native.Decoded, buf: Any, topic: str, partition: int
) -> list[Record]:
    """Records of the last decode; buf is what was decoded. In C, one vectorcall a
    record (_native.build_records), headers included."""
    if not decoded.headers:
        return _native.build_records(  # type: ignore[no-any-return]
            buf, decoded.rows_buffer(), decoded.records, topic, partition, Record
        )
    return _native.build_records(  # type: ignore[no-any-return]
        buf,
        decoded.rows_buffer(),
        decoded.records,
        topic,
        partition,
        Record,
        decoded.header_rows_buffer(),
        decoded.headers,
    )


class RecordColumns:
    """One poll's records of one partition as columns over one buffer.

    `offsets` and `timestamps` (int64), `key_positions`/`key_lengths` and
    `value_positions`/`value_lengths` (int32; a length of -1 is a null) are
    memoryviews of C arrays, no Python int per record until indexed; `buffer` is
    the bytes they index (whole batches, decompressed if they were compressed).
    `values()`, `keys()`, `headers()` and `records()` build Python objects only when
    called; `to_arrow()` builds none. Immutable: keep it as long as you like."""

    __slots__ = (
        "_columns",
        "_hi",
        "_lo",
        "_verify_crc",
        "buffer",
        "header_counts",
        "key_lengths",
        "key_positions",
        "offsets",
        "partition",
        "timestamps",
        "topic",
        "value_lengths",
        "value_positions",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        buffer: bytes,
        columns: _native.Columns,
        verify_crc: bool,
        lo: int = 0,
        hi: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.buffer = buffer
        self._columns = columns
        self._verify_crc = verify_crc
        hi = columns.records if hi is None else hi
        self._lo, self._hi = lo, hi  # the records of the decode this one holds
        column = columns.column
        self.offsets = column("offsets")[lo:hi]
        self.timestamps = column("timestamps")[lo:hi]
        self.key_positions = column("key_pos")[lo:hi]
        self.key_lengths = column("key_lens")[lo:hi]
        self.value_positions = column("value_pos")[lo:hi]
        self.value_lengths = column("value_lens")[lo:hi]
        self.header_counts = column("header_counts")[lo:hi]

    def split(self, n: int) -> tuple[RecordColumns, RecordColumns]:
        """The first n records and the rest, sharing this one's arrays."""
        at = self._lo + max(0, min(n, len(self)))
        args = (self.topic, self.partition, self.buffer, self._columns)
        return (
            RecordColumns(*args, self._verify_crc, self._lo, at),
            RecordColumns(*args, self._verify_crc, at, self._hi),
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def __repr__(self) -> str:
        n = len(self)
        span = f"offsets {self.offsets[0]}..{self.offsets[-1]}" if n else "empty"
        return f"RecordColumns({self.topic}-{self.partition}, {n} records, {span})"

    def value(self, i: int) -> bytes | None:
        n = self.value_lengths[i]
        if n < 0:
            return None
        p = self.value_positions[i]
        return self.buffer[p : p + n]

    def values(self) -> list[bytes | None]:
        """Every value as bytes (None for a null): one copy each, made now."""
        return _column_bytes(
            self.buffer,
            self.value_positions,
            self.value_lengths,
            self._columns.null_values,
        )

    def keys(self) -> list[bytes | None]:
        return _column_bytes(
            self.buffer, self.key_positions, self.key_lengths, self._columns.null_keys
        )

    def records(self) -> list[Record]:
        """The same records as Records (what poll_batch returns), built now."""
        if not len(self):
            return []
        c, b = self._columns, self.buffer
        decoded = _native.Decoded(c.records + 1, c.headers + 1)
        records: list[Record] = []
        at = 0
        while at < len(b):  # records below a seek's offset take room too
            decoded.decode(b, at, len(b), self._verify_crc)
            if not decoded.bytes_consumed:  # whole batches were decoded before
                raise errors.CorruptError(
                    f"{self.topic}-{self.partition}: no batch decodes at byte {at} "
                    f"of {len(b)}"
                )
            records += build_records(decoded, b, self.topic, self.partition)
            at += decoded.bytes_consumed
        first, last = self.offsets[0], self.offsets[-1]
        return [r for r in records if first <= r.offset <= last]

    def headers(self) -> list[tuple[Header, ...]]:
        if not self._columns.headers:
            return [()] * len(self)
        return [r.headers for r in self.records()]

    def to_arrow(self) -> pyarrow.RecordBatch:
        """A pyarrow RecordBatch of offset (int64), timestamp (timestamp[ms]), key and
        value (binary_view), with no copy: its arrays are this object's C arrays and
        views into `buffer`, kept alive by the RecordBatch. Headers are left out.
        ImportError without pyarrow (`pip install shmbroker[arrow]`)."""
        import pyarrow as pa

        c = self._columns
        n, data = c.records, pa.py_buffer(self.buffer)

        def binary(views: str, valid: str, nulls: int) -> pyarrow.Array:
            bitmap = pa.py_buffer(c.column(valid)) if nulls else None
            return pa.Array.from_buffers(
                pa.binary_view(),
                n,
                [bitmap, pa.py_buffer(c.column(views)), data],
                null_count=nulls,
            )

        batch = pa.RecordBatch.from_arrays(
            [
                pa.Array.from_buffers(
                    pa.int64(), n, [None, pa.py_buffer(c.column("offsets"))]
                ),
                pa.Array.from_buffers(
                    pa.timestamp("ms"), n, [None, pa.py_buffer(c.column("timestamps"))]
                ),
                binary("key_views", "key_valid", c.null_keys),
                binary("value_views", "value_valid", c.null_values),
            ],
            names=["offset", "timestamp", "key", "value"],
        )
        return batch.slice(self._lo, len(self))


def _column_bytes(
    buffer: bytes, positions: memoryview, lengths: memoryview, nulls: int
) -> list[bytes | None]:
    b = buffer
    if not nulls:
        return [
            b[p : p + n]
            for p, n in zip(positions.tolist(), lengths.tolist(), strict=True)
        ]
    return [
        b[p : p + n] if n >= 0 else None
        for p, n in zip(positions.tolist(), lengths.tolist(), strict=True)
    ]


def decode_columns(
    data: bytes,
    records: int,
    topic: str,
    partition: int,
    min_offset: int = -1,
    verify_crc: bool = False,
) -> RecordColumns:
    """The records of data, whole batches only and `records` at most (what their
    headers count), as columns; those below min_offset left out. Compressed batches
    are decompressed first, all of data in one go (compression.py), so that the
    columns index one buffer."""
    columns = _native.Columns(records, min_offset)
    try:
        columns.decode(data, 0, len(data), verify_crc)
        whole = columns.bytes_consumed == len(data)
    except errors.InvalidArgument:
        if not int.from_bytes(data[21:23], "big") & CODEC_MASK:
            raise  # not EUNSUPPORTED (a compressed first batch)
        whole = False
    if not whole:
        data = decompress_batches(data, verify_crc=verify_crc)
        columns = _native.Columns(records, min_offset)
        columns.decode(data, 0, len(data), verify_crc)
        if columns.bytes_consumed != len(data):
            raise errors.CorruptError(
                f"{topic}-{partition}: {len(data)} bytes of batches hold more records "
                f"than their headers count ({records})"
            )
    return RecordColumns(topic, partition, data, columns, verify_crc)
