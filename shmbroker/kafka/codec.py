"""The Kafka wire format: request headers, kio (pinned) behind one face for the
control-plane messages, and the hand-framed Produce and Fetch responses.

A frame is `int32 size` then the header and body. Request header v1: api_key i16,
api_version i16, correlation_id i32, client_id nullable string; v2 (flexible
requests) adds tagged fields. Every response header here is v0: the correlation
id alone (ApiVersions' too, by KIP-511).

kio copies every field it decodes and costs ~10-25 us to write a response with
records, so the two hot responses are framed by hand around the records' buffers
(memoryviews of a ring copy-out or of a segment read): no record byte is copied
into the response.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import sys
from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from typing import Any, NamedTuple

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from shmbroker import errors

Buffer = bytes | bytearray | memoryview
FRAME_SIZE = struct.Struct(">i")
_HEAD = struct.Struct(">hhi")  # api_key, api_version, correlation_id
_RESPONSE_HEAD = struct.Struct(">ii")  # size, correlation_id
MIN_REQUEST_BYTES = _HEAD.size + 2  # and a client id's length


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int  # where the body starts in the frame


def peek_header(frame: Buffer) -> tuple[int, int, int]:
    """api_key, api_version, correlation_id: enough to answer or refuse a request
    whose version we do not know (and so whose header we cannot fully parse)."""
    if len(frame) < _HEAD.size:
        raise errors.ProtocolError(
            f"request of {len(frame)} bytes: shorter than a header ({_HEAD.size})"
        )
    api_key, api_version, correlation_id = _HEAD.unpack_from(frame, 0)
    return api_key, api_version, correlation_id


def parse_header(frame: Buffer, flexible: bool) -> RequestHeader:
    """The whole request header; flexible: header v2 (tagged fields after the
    client id)."""
    api_key, api_version, correlation_id = peek_header(frame)
    at = _HEAD.size
    if len(frame) < at + 2:
        raise errors.ProtocolError("request header ends before its client id")
    (n,) = struct.unpack_from(">h", frame, at)
    at += 2
    client_id = None
    if n >= 0:
        if at + n > len(frame):
            raise errors.ProtocolError(
                f"client id of {n} bytes runs past the {len(frame)}-byte request"
            )
        client_id = bytes(frame[at : at + n]).decode("utf-8", "replace")
        at += n
    elif n != -1:
        raise errors.ProtocolError(f"client id length {n}")
    if flexible:
        at = skip_tagged_fields(frame, at)
    return RequestHeader(api_key, api_version, correlation_id, client_id, at)


def _uvarint(buf: Buffer, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf):
            raise errors.ProtocolError("request ends inside a varint")
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7
        if shift > 28:
            raise errors.ProtocolError("varint longer than 5 bytes")


def skip_tagged_fields(buf: Buffer, at: int) -> int:
    count, at = _uvarint(buf, at)
    if count > len(buf) - at:  # each takes 2 bytes at least
        raise errors.ProtocolError(f"{count} tagged fields in {len(buf) - at} bytes")
    for _ in range(count):
        _, at = _uvarint(buf, at)
        size, at = _uvarint(buf, at)
        at += size
        if at > len(buf):
            raise errors.ProtocolError("a tagged field runs past the request")
    return at


# ---- kio: the control-plane messages ----------------------------------------------


@cache
def request_type(api_key: int, version: int) -> Any:
    return load_request_schema(api_key, version)


@cache
def response_type(api_key: int, version: int) -> Any:
    return load_response_schema(api_key, version)


@cache
def _reader(cls: Any) -> Any:
    return entity_reader(cls)


@cache
def _writer(cls: Any) -> Any:
    return entity_writer(cls)


@cache
def is_flexible(api_key: int, version: int) -> bool:
    """Whether the request uses header v2 (False for what kio does not know)."""
    try:
        return bool(request_type(api_key, version).__flexible__)
    except Exception:  # kio's UnknownAPIKey / UnknownEntity
        return False


def decode_request(api_key: int, version: int, frame: Buffer, offset: int) -> Any:
    """The request body as kio's dataclass; trailing bytes are ignored (librdkafka
    sends some). ProtocolError for a body that does not parse."""
    cls = request_type(api_key, version)
    if cls.__flexible__:  # kio allocates a compact array's length before reading
        check_compact(cls, memoryview(frame), offset)
    return _decode(cls, frame, offset)


def decode_response(api_key: int, version: int, body: Buffer, offset: int = 0) -> Any:
    return _decode(response_type(api_key, version), body, offset)


def _decode(cls: Any, buf: Buffer, offset: int) -> Any:
    try:
        value, _ = _reader(cls)(memoryview(buf), offset)
    except Exception as exc:  # kio raises its own and builtin errors: all malformed
        raise errors.ProtocolError(
            f"malformed {cls.__name__} v{cls.__version__}: {type(exc).__name__}: {exc}"
        ) from exc
    return value


# ---- the compact lengths of flexible messages, checked before kio sees them --------
# kio 0.6.5 reserves memory for a compact array's declared length before reading its
# elements: a 5-byte varint claiming 2^32 elements aborts the process (Rust's OOM).
# So the lengths of a flexible message are walked first, by its kio schema: no array,
# string or tagged field may claim more bytes than the frame has left.

_FIXED = {
    "int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4, "int64": 8, "uint64": 8,
    "float64": 8, "timedelta_i64": 8, "datetime_i64": 8, "uuid": 16,
}  # fmt: skip
_SIZED = ("string", "bytes", "records")


def check_compact(cls: Any, buf: memoryview, at: int) -> int:
    """Walk a flexible entity from at; the offset after it. ProtocolError if a
    length claims more than the bytes left."""
    for f in dataclasses.fields(cls):
        if "tag" in f.metadata:
            continue  # in the tagged fields, after the others
        at = _check_value(f.type, f.metadata.get("kafka_type"), buf, at)
    return _check_tagged(buf, at)


def _check_value(kind: Any, kafka_type: str | None, buf: memoryview, at: int) -> int:
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    if getattr(kind, "__origin__", None) is tuple:  # a compact array
        count, at = _compact_length(buf, at)
        if args and dataclasses.is_dataclass(args[0]):
            for _ in range(count):
                at = check_compact(args[0], buf, at)
            return at
        for _ in range(count):
            at = _check_value(None, kafka_type, buf, at)
        return at
    if kafka_type in _FIXED:
        at += _FIXED[kafka_type]
    elif kafka_type in _SIZED:
        size, at = _compact_length(buf, at)
        at += size
    elif args and dataclasses.is_dataclass(args[0]):  # a nullable nested entity
        return check_compact(args[0], buf, at)
    elif dataclasses.is_dataclass(kind):
        return check_compact(kind, buf, at)
    if at > len(buf):
        raise errors.ProtocolError(f"request ends inside a {kafka_type or kind} field")
    return at


def _compact_length(buf: memoryview, at: int) -> tuple[int, int]:
    """A compact length (varint n + 1; 0 is null), no more than the bytes left."""
    n, at = _uvarint(buf, at)
    if n - 1 > len(buf) - at:
        raise errors.ProtocolError(
            f"a length of {n - 1} at byte {at} is more than the {len(buf) - at} "
            f"bytes left"
        )
    return max(n - 1, 0), at


def _check_tagged(buf: memoryview, at: int) -> int:
    return skip_tagged_fields(buf, at)


def encode(message: Any) -> bytes:
    """A kio request or response body."""
    out = io.BytesIO()
    cls: Any = type(message)
    _writer(cls)(out, message)
    return out.getvalue()


@cache
def _fields(cls: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple(
        (f.name, f.metadata.get("kafka_type")) for f in dataclasses.fields(cls)
    )


def build(cls: Any, **values: Any) -> Any:
    """A kio message of type cls from plain values: the fields this version does
    not have are left out, error codes and *_ms durations (ints) converted, and
    fields not given take their defaults. One call site serves every version."""
    kwargs = {}
    for name, kind in _fields(cls):
        if name not in values:
            continue
        value = values[name]
        if kind == "error_code":
            value = ErrorCode(value)
        elif kind in ("timedelta_i32", "timedelta_i64") and isinstance(value, int):
            value = timedelta(milliseconds=value)
        kwargs[name] = value
    return cls(**kwargs)


def nested(cls: Any, name: str) -> Any:
    """The class `name` of the same kio module (and so version) as cls."""
    return getattr(sys.modules[cls.__module__], name)


def milliseconds(value: timedelta | int) -> int:
    """A kio duration field (a timedelta) as Kafka's milliseconds."""
    if isinstance(value, timedelta):
        return int(value / timedelta(milliseconds=1))
    return int(value)


def frame_response(
    correlation_id: int, body: Sequence[Buffer], flexible: bool = False
) -> list[Buffer]:
    """A response frame around body's buffers, which are not copied: header v0,
    or v1 (no tagged fields) for a flexible response."""
    size = 4 + sum(len(b) for b in body) + flexible
    head = _RESPONSE_HEAD.pack(size, correlation_id)
    return [head + b"\x00" if flexible else head, *body]


def frame_request(
    api_key: int, version: int, correlation_id: int, body: bytes,
    client_id: str | None = "shmbroker",
) -> bytes:  # fmt: skip
    """A whole request frame (for tests and tools)."""
    cid = b"\xff\xff" if client_id is None else _string(client_id)
    head = _HEAD.pack(api_key, version, correlation_id) + cid
    if is_flexible(api_key, version):
        head += b"\x00"  # no tagged fields
    return FRAME_SIZE.pack(len(head) + len(body)) + head + body


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


# ---- Produce response (v3-v7), by hand ---------------------------------------------


class PartitionProduced(NamedTuple):
    partition: int
    error_code: int
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1


_PRODUCED = struct.Struct(">ihqqq")


def encode_produce_response(
    version: int, topics: Sequence[tuple[str, Sequence[PartitionProduced]]]
) -> bytes:
    parts = [struct.pack(">i", len(topics))]
    for name, partitions in topics:
        parts.append(_string(name))
        parts.append(struct.pack(">i", len(partitions)))
        for p in partitions:
            if version >= 5:
                parts.append(_PRODUCED.pack(*p))
            else:  # no log_start_offset before v5
                parts.append(_PRODUCED.pack(*p)[:-8])
    parts.append(b"\x00\x00\x00\x00")  # throttle_time_ms
    return b"".join(parts)


# ---- Fetch response (v4-v11), by hand ----------------------------------------------


class PartitionFetched(NamedTuple):
    partition: int
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: Buffer  # whole batches, not copied


_FETCHED = struct.Struct(">ihqqq")  # index, error, hw, last stable offset, log start


def encode_fetch_response(
    version: int,
    topics: Sequence[tuple[str, Sequence[PartitionFetched]]],
    error: int = 0,
) -> list[Buffer]:
    """The body as buffers: the records of each partition go in as they are."""
    head = b"\x00\x00\x00\x00"  # throttle_time_ms
    if version >= 7:
        head += struct.pack(">hi", error, 0)  # error_code, session_id: sessionless
    out: list[Buffer] = []
    parts = [head, struct.pack(">i", len(topics))]
    for name, partitions in topics:
        parts.append(_string(name))
        parts.append(struct.pack(">i", len(partitions)))
        for p in partitions:
            fixed = _FETCHED.pack(
                p.partition, p.error_code, p.high_watermark, p.high_watermark,
                p.log_start_offset,
            )  # fmt: skip
            if version < 5:
                fixed = fixed[:-8]  # no log_start_offset
            parts.append(fixed)
            parts.append(b"\x00\x00\x00\x00")  # aborted_transactions: none
            if version >= 11:
                parts.append(b"\xff\xff\xff\xff")  # preferred_read_replica: none
            parts.append(struct.pack(">i", len(p.records)))
            if p.records:
                out.append(b"".join(parts))
                out.append(p.records)
                parts = []
    out.append(b"".join(parts))
    return out


# ---- DescribeConfigs v0 response, by hand (kio has no v0) ---------------------------


class DescribedResource(NamedTuple):
    error_code: int
    error_message: str | None
    resource_type: int
    resource_name: str
    read_only: bool
    configs: Sequence[Any]  # each with name, value, source (5: the default)


DEFAULT_CONFIG_SOURCE = 5


def encode_describe_configs_v0(results: Sequence[DescribedResource]) -> bytes:
    parts = [b"\x00\x00\x00\x00", struct.pack(">i", len(results))]  # throttle, count
    for r in results:
        parts.append(struct.pack(">h", r.error_code))
        parts.append(_nullable_string(r.error_message))
        parts.append(struct.pack(">b", r.resource_type))
        parts.append(_string(r.resource_name))
        parts.append(struct.pack(">i", len(r.configs)))
        for c in r.configs:
            parts.append(_string(c.name))
            parts.append(_nullable_string(c.value))
            is_default = c.source == DEFAULT_CONFIG_SOURCE
            parts.append(struct.pack(">???", r.read_only, is_default, False))
    return b"".join(parts)


def _nullable_string(s: str | None) -> bytes:
    return b"\xff\xff" if s is None else _string(s)
