"""Kafka's ConsumerProtocol: what a consumer group's members put in JoinGroup's
metadata (their subscription) and SyncGroup's assignment, byte for byte as Kafka's
clients write them, so that local consumers and Kafka clients share one group.

Byte layouts (Kafka's ConsumerProtocolSubscription v2 / Assignment v1; big-endian,
string = int16 length + UTF-8, array = int32 count + items, bytes = int32 length):
    Subscription: version i16 | topics [string] | user_data bytes |
                  owned_partitions [topic string, partitions [i32]] | generation i32
    Assignment:   version i16 | assigned [topic string, partitions [i32]] | user_data
Any version decodes: fields a version lacks take their defaults, later ones are
ignored (Kafka's forward compatibility).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import msgspec

from shmbroker import errors
from shmbroker.records import TopicPartition

PROTOCOL_TYPE = "consumer"
SUBSCRIPTION_VERSION = 2
ASSIGNMENT_VERSION = 1

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class Subscription(msgspec.Struct, frozen=True):
    """One member's JoinGroup metadata (Kafka's ConsumerProtocol Subscription)."""

    topics: list[str]  # topic names this member subscribes to
    owned: list[TopicPartition] = []  # what it owns now (cooperative protocol)
    generation: int = -1  # generation of `owned`: the higher one wins a disputed claim
    user_data: bytes = b""  # opaque to these assignors
    group_instance_id: str | None = None  # static member: range/roundrobin sort by it


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def i16(self, v: int) -> None:
        self.parts.append(_I16.pack(v))

    def i32(self, v: int) -> None:
        self.parts.append(_I32.pack(v))

    def string(self, s: str) -> None:
        b = s.encode()
        self.i16(len(b))
        self.parts.append(b)

    def data(self, b: bytes | None) -> None:
        if b is None:
            self.i32(-1)
        else:
            self.i32(len(b))
            self.parts.append(b)

    def partitions(self, tps: Iterable[TopicPartition]) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        self.i32(len(by_topic))
        for topic, parts in sorted(by_topic.items()):
            self.string(topic)
            self.i32(len(parts))
            for p in sorted(parts):
                self.i32(p)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def _take(self, s: struct.Struct) -> int:
        if self.at + s.size > len(self.data):
            raise errors.ProtocolError("consumer protocol data cut short")
        (v,) = s.unpack_from(self.data, self.at)
        self.at += s.size
        return int(v)

    def i16(self) -> int:
        return self._take(_I16)

    def i32(self) -> int:
        return self._take(_I32)

    def raw(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise errors.ProtocolError("consumer protocol data cut short")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def string(self) -> str:
        return self.raw(self.i16()).decode()

    def data_(self) -> bytes:
        n = self.i32()
        return b"" if n < 0 else self.raw(n)

    def partitions(self) -> list[TopicPartition]:
        out = []
        for _ in range(self.i32()):
            topic = self.string()
            out += [TopicPartition(topic, self.i32()) for _ in range(self.i32())]
        return out

    def done(self) -> bool:
        return self.at >= len(self.data)


def encode_subscription(s: Subscription) -> bytes:
    w = _Writer()
    w.i16(SUBSCRIPTION_VERSION)
    w.i32(len(s.topics))
    for topic in s.topics:
        w.string(topic)
    w.data(s.user_data)
    w.partitions(s.owned)
    w.i32(s.generation)
    return b"".join(w.parts)


def decode_subscription(
    data: bytes, group_instance_id: str | None = None
) -> Subscription:
    """Any version: fields a version lacks take their defaults, later ones are
    ignored (Kafka's forward compatibility)."""
    r = _Reader(data)
    version = r.i16()
    topics = [r.string() for _ in range(r.i32())]
    user_data = r.data_()
    owned = r.partitions() if version >= 1 and not r.done() else []
    generation = r.i32() if version >= 2 and not r.done() else -1
    return Subscription(topics, owned, generation, user_data, group_instance_id)


def encode_assignment(partitions: Iterable[TopicPartition]) -> bytes:
    w = _Writer()
    w.i16(ASSIGNMENT_VERSION)
    w.partitions(partitions)
    w.data(b"")
    return b"".join(w.parts)


def decode_assignment(data: bytes) -> list[TopicPartition]:
    if not data:
        return []
    r = _Reader(data)
    r.i16()
    return r.partitions()
