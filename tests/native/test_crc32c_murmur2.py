"""CRC32C (shmb_crc32c.c) and Kafka's murmur2 partitioner (shmb_murmur2.c), checked
against published vectors and kafka-python's pure-Python implementations."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmbroker import _native
from shmbroker.errors import InvalidArgument
from tests.native import kafka_python

# ---- CRC32C --------------------------------------------------------------------------

# RFC 3720 (iSCSI) appendix B.4, plus the "check" value of the CRC-32C catalogue entry
CRC32C_VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize(
    ("data", "crc"),
    CRC32C_VECTORS,
    ids=["empty", "123456789", "32x00", "32xff", "0..31", "31..0"],
)
def test_crc32c_matches_published_vectors(data: bytes, crc: int) -> None:
    assert _native.crc32c(data) == crc
    assert kafka_python.crc(data) == crc  # the reference agrees too


def test_crc32c_hardware_reports_a_bool() -> None:
    assert _native.crc32c_hardware() in (True, False)


@settings(deadline=None)
@given(st.binary(max_size=4096))
def test_crc32c_equals_kafka_pythons_pure_python_crc(data: bytes) -> None:
    assert _native.crc32c(data) == kafka_python.crc(data)


@settings(deadline=None)
@given(st.binary(max_size=1024), st.binary(max_size=1024))
def test_crc32c_chains_like_zlib(a: bytes, b: bytes) -> None:
    chained = _native.crc32c(b, _native.crc32c(a))
    assert chained == _native.crc32c(a + b)
    assert chained == kafka_python.crc_update(kafka_python.crc(a), b)


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=256), st.data())
def test_crc32c_of_any_split_equals_the_whole(data: bytes, draw: Any) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=5)))
    crc = 0
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        crc = _native.crc32c(data[start:end], crc)
    assert crc == _native.crc32c(data)


def test_crc32c_result_is_an_unsigned_32_bit_int() -> None:
    # a CRC with the top bit set comes back positive, as Kafka's header stores it
    assert _native.crc32c(b"123456789") == 0xE3069283 >= 2**31


# ---- murmur2 -------------------------------------------------------------------------

# Kafka's UtilsTest.testMurmur2 (clients/src/test/java/.../utils/UtilsTest.java):
# Java ints, so signed
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "hash_"), MURMUR2_VECTORS)
def test_murmur2_matches_kafka_java_client_vectors(key: bytes, hash_: int) -> None:
    assert _native.murmur2(key) == hash_


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_murmur2_equals_kafka_python_murmur2(key: bytes) -> None:
    # kafka-python returns the same 32 bits as an unsigned int; ours is Java's signed
    ours = _native.murmur2(key)
    assert -(2**31) <= ours < 2**31
    assert ours & 0xFFFFFFFF == kafka_python.murmur2(key)


class _OneTopicCluster:
    """The three ClusterMetadata methods DefaultPartitioner calls."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, set(range(partitions))

    def topics(self) -> set[str]:
        return {self.topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@settings(deadline=None)
@given(st.binary(max_size=100), st.integers(1, 10_000))
def test_partition_for_key_matches_kafka_python_default_partitioner(
    key: bytes, partitions: int
) -> None:
    ours = _native.partition_for_key(key, partitions)
    assert ours == (_native.murmur2(key) & 0x7FFFFFFF) % partitions
    cluster = _OneTopicCluster("t", partitions)
    theirs = kafka_python.DefaultPartitioner().partition(
        "t", key, key, None, None, cluster
    )
    assert ours == theirs


def test_partition_for_key_masks_the_sign_bit_rather_than_taking_abs() -> None:
    # murmur2(b"21") is negative: Java's toPositive gives 0x7fffffff & h, not -h
    h = _native.murmur2(b"21")
    assert h < 0
    assert _native.partition_for_key(b"21", 1000) == (h & 0x7FFFFFFF) % 1000
    assert _native.partition_for_key(b"21", 1000) != (-h) % 1000


def test_partition_for_key_with_max_int_partitions() -> None:
    key = b"foobar"
    assert _native.partition_for_key(key, 2**31 - 1) == (
        (_native.murmur2(key) & 0x7FFFFFFF) % (2**31 - 1)
    )


@pytest.mark.parametrize("partitions", [0, -1, -(2**31)])
def test_partition_for_key_rejects_no_partitions(partitions: int) -> None:
    with pytest.raises(InvalidArgument, match=f"{partitions} partitions, want 1 to"):
        _native.partition_for_key(b"key", partitions)


@pytest.mark.parametrize(
    "size", [3 * 4096 - 1, 3 * 4096, 3 * 4096 + 1, 6 * 4096 + 9, 65536, 200_003]
)
def test_crc32c_of_large_buffers_in_three_streams_equals_kafka_python(
    size: int,
) -> None:
    """If a buffer is long enough for the three-stream path, then the result is still
    the plain CRC32C, also when chained from a non-zero CRC."""
    data = random.Random(size).randbytes(size)
    assert _native.crc32c(data) == kafka_python.crc(data)
    head = data[: size // 5]
    assert _native.crc32c(data[size // 5 :], _native.crc32c(head)) == _native.crc32c(
        data
    )
