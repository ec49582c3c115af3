"""The codec: request headers, kio behind one face, and the hand-framed Produce and
Fetch responses checked by kio's decoder."""

from __future__ import annotations

import struct

import pytest

from shmbroker import _native, errors
from shmbroker.kafka import codec
from shmbroker.kafka.codec import PartitionFetched, PartitionProduced


def test_header_v1_and_v2() -> None:
    frame = codec.frame_request(3, 7, 42, b"body", client_id="me")[4:]
    header = codec.parse_header(frame, flexible=False)
    assert header[:4] == (3, 7, 42, "me")
    assert frame[header.body_offset :] == b"body"
    flexible = codec.frame_request(18, 3, 43, b"body", client_id=None)[4:]
    header = codec.parse_header(flexible, flexible=True)
    assert header[:4] == (18, 3, 43, None)
    assert flexible[header.body_offset :] == b"body"


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x03",
        struct.pack(">hhih", 3, 1, 1, 50) + b"short",
        struct.pack(">hhih", 3, 1, 1, -7),
    ],
)
def test_bad_headers_are_protocol_errors(frame: bytes) -> None:
    with pytest.raises(errors.ProtocolError, match=r"request|client id"):
        codec.parse_header(frame, flexible=False)


def test_tagged_fields_past_the_end_are_protocol_errors() -> None:
    frame = struct.pack(">hhih", 18, 3, 1, -1) + b"\x01\x00\x7f"
    with pytest.raises(errors.ProtocolError, match="tagged field"):
        codec.parse_header(frame, flexible=True)


def test_a_body_that_does_not_parse_is_a_protocol_error() -> None:
    with pytest.raises(errors.ProtocolError, match="MetadataRequest v1"):
        codec.decode_request(3, 1, b"\x00\x00\x00\x05", 0)


def test_trailing_bytes_after_a_body_are_ignored() -> None:
    body = codec.encode(codec.build(codec.request_type(3, 1), topics=None))
    assert codec.decode_request(3, 1, body + b"\x00\x00\x00", 0).topics is None


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7])
def test_produce_response_by_hand_reads_as_kafka_s(version: int) -> None:
    body = codec.encode_produce_response(
        version,
        [("t", [PartitionProduced(0, 0, 10, -1, 3), PartitionProduced(1, 3)])],
    )
    response = codec.decode_response(0, version, body)
    [t] = response.responses
    assert t.name == "t"
    rows = [(p.index, p.error_code, p.base_offset) for p in t.partition_responses]
    assert rows == [(0, 0, 10), (1, 3, -1)]
    if version >= 5:
        assert [p.log_start_offset for p in t.partition_responses] == [3, -1]


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8, 9, 10, 11])
def test_fetch_response_by_hand_reads_as_kafka_s_without_copying(version: int) -> None:
    batch = _native.batch_encode(_native.RecordArrays([b"a", b"b"]))
    records = memoryview(bytearray(batch))
    parts = codec.encode_fetch_response(
        version,
        [
            (
                "t",
                [
                    PartitionFetched(0, 0, 2, 0, records),
                    PartitionFetched(1, 1, -1, -1, b""),
                ],
            ),
            ("u", [PartitionFetched(4, 0, 9, 5, b"")]),
        ],
    )
    assert any(p is records for p in parts)  # the view itself, not a copy
    response = codec.decode_response(1, version, b"".join(parts))
    got = [
        (t.topic, p.partition_index, p.error_code, p.high_watermark, p.records)
        for t in response.responses
        for p in t.partitions
    ]
    assert got == [("t", 0, 0, 2, batch), ("t", 1, 1, -1, b""), ("u", 4, 0, 9, b"")]
    if version >= 5:
        assert [
            p.log_start_offset for t in response.responses for p in t.partitions
        ] == [0, -1, 5]


def test_build_fills_what_a_version_has() -> None:
    v0 = codec.build(
        codec.response_type(18, 0), error_code=35, api_keys=(), throttle_time=7
    )
    v1 = codec.build(
        codec.response_type(18, 1), error_code=0, api_keys=(), throttle_time=7
    )
    assert not hasattr(v0, "throttle_time")
    assert codec.milliseconds(v1.throttle_time) == 7


def test_a_compact_array_claiming_more_than_the_frame_is_refused_before_kio() -> None:
    """kio reserves memory for a compact array's claimed length before reading it:
    2^32 elements aborted the process. The claim is checked against the bytes left
    first (the sweep in tests/gateway/test_fuzz.py covers every position)."""
    body = b"\xff\xff\xff\xff\x0f"  # IncrementalAlterConfigs v1: 2^32 - 2 resources
    cls = codec.request_type(44, 1)
    with pytest.raises(errors.ProtocolError, match=r"length of 4294967294"):
        codec.check_compact(cls, memoryview(body), 0)
    with pytest.raises(errors.ProtocolError, match=r"length of"):
        codec.decode_request(44, 1, body, 0)
    # a well-formed flexible body passes the check and decodes
    config = codec.nested(cls, "AlterableConfig")
    resource = codec.nested(cls, "AlterConfigsResource")
    good = codec.encode(
        codec.build(cls, validate_only=True, resources=(resource(
            resource_type=2, resource_name="t",
            configs=(config(name="a", config_operation=0, value=None),)),))
    )  # fmt: skip
    assert codec.check_compact(cls, memoryview(good), 0) == len(good)
    assert codec.decode_request(44, 1, good, 0).resources[0].resource_name == "t"
