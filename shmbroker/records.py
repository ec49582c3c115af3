"""The record a consumer receives: topic, partition, offset, timestamp, key, value,
headers. A frozen msgspec Struct: about 3x cheaper to build than a NamedTuple, which
matters because the consumer builds one per record."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import Any, NamedTuple, TypeVar

import msgspec

from shmbroker import _native, errors
from shmbroker.compression import CODEC_MASK, decompress_batches

Header = tuple[str, "bytes | None"]
SMALL_POLL = 8  # up to this many records, build them row by row


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
    """Records of the last decode; buf is what was decoded, and its slices are bytes.

    Columns come from strided slices of the C rows (only the fields used become
    Python ints) and Records from map(): most of the cost is the value copy."""
    b, n = buf, decoded.records
    if n <= SMALL_POLL:
        return _build_few(decoded, decoded.record_rows(), b, topic, partition)
    column = decoded.record_column
    vp, ve = column(4), column(5)
    if decoded.null_values:
        values = [b[p:e] if e >= 0 else None for p, e in zip(vp, ve, strict=True)]
    else:
        values = [b[p:e] for p, e in zip(vp, ve, strict=True)]
    keys: Iterable[bytes | None]
    if decoded.null_keys == n:
        keys = repeat(None)
    else:
        kp, ke = column(2), column(3)
        keys = [b[p:e] if e >= 0 else None for p, e in zip(kp, ke, strict=True)]
    topics, partitions = repeat(topic), repeat(partition)
    offsets, timestamps = column(0), column(1)
    if not decoded.headers:
        return list(map(Record, topics, partitions, offsets, timestamps, keys, values))
    headers = _headers(decoded, b, column(6), column(7))
    return list(
        map(Record, topics, partitions, offsets, timestamps, keys, values, headers)
    )


def _build_few(
    decoded: _native.Decoded, rows: list[int], b: Any, topic: str, partition: int
) -> list[Record]:
    """Row by row: for a handful of records the column machinery costs more than it
    saves (a one-record poll is what a latency-bound consumer sees)."""
    out = []
    for i in range(0, len(rows), 8):
        offset, ts, kp, ke, vp, ve, hcount, first = rows[i : i + 8]
        key = b[kp:ke] if ke >= 0 else None
        value = b[vp:ve] if ve >= 0 else None
        if hcount:
            headers = _headers(decoded, b, [hcount], [first])[0]
            out.append(Record(topic, partition, offset, ts, key, value, headers))
        else:
            out.append(Record(topic, partition, offset, ts, key, value))
    return out


def _headers(
    decoded: _native.Decoded, b: Any, counts: list[int], firsts: list[int]
) -> list[tuple[Header, ...]]:
    it = iter(decoded.header_rows())
    flat = [
        (b[kp:ke].decode(errors="replace"), b[vp:ve] if ve >= 0 else None)
        for kp, ke, vp, ve in zip(it, it, it, it, strict=False)
    ]
    return [tuple(flat[f : f + c]) for c, f in zip(counts, firsts, strict=True)]
