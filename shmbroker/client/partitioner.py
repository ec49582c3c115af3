"""Kafka's default partitioner for keyed records: murmur2 of the key, made positive,
modulo the partition count, as Java's, kafka-python's and librdkafka's
murmur2_random put keys (keyless records go stickily: the producer's choice)."""

from __future__ import annotations

from shmbroker import _native


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of 0..partitions-1 that a record with this key goes to."""
    return _native.partition_for_key(key, partitions)
