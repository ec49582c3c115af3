"""The Admin client: topics (create, delete, list, describe, describe and alter
configs, add partitions) and consumer groups (list, describe, offsets, lag, reset,
delete) through the supervisor, and offsets (Kafka's ListOffsets) read straight from
the partitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import NamedTuple, Protocol

import msgspec

from shmbroker import errors, protocol
from shmbroker.client.connection import Connection
from shmbroker.client.consumer import EARLIEST, LATEST, offset_for
from shmbroker.config import TopicConfig
from shmbroker.kafka.consumer_protocol import PROTOCOL_TYPE, decode_assignment
from shmbroker.log.reader import PartitionReader
from shmbroker.records import PartitionKey, TopicPartition


class NewTopic(msgspec.Struct, frozen=True):
    name: str
    num_partitions: int = 1
    topic_configs: dict[str, str] = {}


class ConfigSource(IntEnum):
    """Where a config's value comes from, under Kafka's names and numbers."""

    DYNAMIC_TOPIC_CONFIG = 1  # the topic's own override
    STATIC_BROKER_CONFIG = 4  # the broker's default for topics (its config file)
    DEFAULT_CONFIG = 5  # the built-in default


class ConfigEntry(msgspec.Struct, frozen=True):
    """One config of a topic, as Kafka's DescribeConfigs tells it."""

    name: str
    value: str  # the value in force
    source: ConfigSource
    synonyms: list[tuple[ConfigSource, str]]  # every layer's value, in force first


class Node(NamedTuple):
    """A broker as Kafka names one: id, host, port."""

    id: int
    host: str
    port: int


# The coordinator of a data directory's groups is its supervisor, reached by the
# control socket, not by a TCP port: Kafka's "host:port (id)" becomes this Node, id
# 0 as `topics describe` calls the one broker "Leader: 0".
LOCAL_COORDINATOR = Node(0, "localhost", 0)


class MemberInfo(msgspec.Struct, frozen=True):
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    assignment: list[TopicPartition]


class GroupInfo(msgspec.Struct, frozen=True):
    group_id: str
    state: str  # Empty, PreparingRebalance, CompletingRebalance, Stable
    protocol_type: str
    assignor: str
    generation: int | None  # None: not known (Kafka's DescribeGroups has none)
    leader: str
    members: list[MemberInfo]
    coordinator: Node = LOCAL_COORDINATOR


class PartitionLag(msgspec.Struct, frozen=True):
    """One row of kafka-consumer-groups --describe."""

    topic: str
    partition: int
    committed: int | None  # None: the group has no offset for it
    log_end_offset: int | None  # None: the partition is gone (deleted since)
    lag: int | None
    member_id: str | None = None  # who owns it now, if anyone
    client_id: str | None = None
    host: str | None = None


class Admin:
    """Administers the broker on data_dir. Thread-safe."""

    def __init__(
        self, data_dir: str | None = None, *, client_id: str = "shmbroker-admin"
    ) -> None:
        self.connection = Connection(data_dir, client_id=client_id)

    def create_topic(
        self,
        name: str,
        num_partitions: int = 1,
        configs: Mapping[str, str | int] | None = None,
        *,
        validate_only: bool = False,
    ) -> protocol.TopicMetadata:
        """TopicExists if it exists; ConfigError names a bad config key or value."""
        request = protocol.CreateTopic(
            name,
            num_partitions,
            {k: str(v) for k, v in (configs or {}).items()},
            validate_only,
        )
        return self.connection.request(request, protocol.TopicMetadata)

    def create_topics(self, topics: Iterable[NewTopic]) -> list[protocol.TopicMetadata]:
        return [
            self.create_topic(t.name, t.num_partitions, t.topic_configs) for t in topics
        ]

    def delete_topic(self, name: str) -> None:
        """Its rings and files go; clients still attached get UnknownTopic."""
        self.connection.request(protocol.DeleteTopic(name), protocol.Done)

    def delete_topics(self, names: Iterable[str]) -> None:
        for name in names:
            self.delete_topic(name)

    def list_topics(self) -> dict[str, protocol.TopicMetadata]:
        reply = self.connection.request(protocol.Metadata(None), protocol.MetadataReply)
        return {t.name: t for t in reply.topics}

    def describe_topics(
        self, names: Iterable[str] | None = None
    ) -> list[protocol.TopicDescription]:
        request = protocol.DescribeTopics(None if names is None else list(names))
        return self.connection.request(request, protocol.DescribeReply).topics

    def topic(self, name: str, auto_create: bool = False) -> protocol.TopicMetadata:
        """The topic's partition count and configs; auto_create: create it if it
        does not exist and the broker creates topics on first use."""
        return self.connection.topic(name, auto_create)

    def ring_name(self, topic: str, partition: int) -> str:
        """The shared-memory name of a partition's ring (`shmbroker ring-stat`)."""
        return self.connection.ring_name(self._partition(topic, partition), partition)

    def _partition(self, topic: str, partition: int) -> protocol.TopicMetadata:
        """The topic's metadata; UnknownTopic if it has no such partition."""
        meta = self.connection.topic(topic)
        if not 0 <= partition < meta.partitions:
            raise errors.UnknownTopic(
                f"topic {topic!r} has partitions 0..{meta.partitions - 1}, not "
                f"{partition}"
            )
        return meta

    def describe_configs(self, name: str) -> list[ConfigEntry]:
        """Every config of the topic with its value and source."""
        return topic_configs(self.connection, name)

    def alter_configs(
        self,
        name: str,
        set: Mapping[str, str | int] | None = None,
        delete: Iterable[str] = (),
    ) -> protocol.TopicMetadata:
        """Incremental: set these keys, return those in delete to the defaults."""
        request = protocol.AlterConfigs(
            name, {k: str(v) for k, v in (set or {}).items()}, list(delete)
        )
        return self.connection.request(request, protocol.TopicMetadata)

    def create_partitions(self, name: str, total: int) -> protocol.TopicMetadata:
        """Grow the topic to total partitions (never shrinks, as Kafka)."""
        return self.connection.request(
            protocol.CreatePartitions(name, total), protocol.TopicMetadata
        )

    def list_offsets(
        self, specs: Mapping[PartitionKey, int | str]
    ) -> dict[TopicPartition, int | None]:
        """Per partition, "earliest" (log start), "latest" (high watermark), or a
        timestamp in ms (the first offset at or after it; None if none)."""
        out: dict[TopicPartition, int | None] = {}
        for key, spec in specs.items():
            tp = TopicPartition(*key)
            meta = self._partition(*tp)
            at = {"earliest": EARLIEST, "latest": LATEST}.get(str(spec))
            reader = PartitionReader.open(
                self.connection.partition_dir(*tp),
                self.connection.ring_name(meta, tp.partition),
                topic=tp.topic,
                partition=tp.partition,
            )
            try:
                out[tp] = offset_for(reader, int(spec) if at is None else at)
            finally:
                reader.close()
        return out

    # ---- consumer groups ------------------------------------------------------------

    def list_groups(self) -> list[protocol.GroupListing]:
        reply = self.connection.request(protocol.ListGroups(), protocol.ListGroupsReply)
        return reply.groups

    def describe_group(self, group_id: str) -> GroupInfo:
        """GroupIdNotFound if the group has neither members nor offsets."""
        d = self.connection.request(
            protocol.DescribeGroup(group_id), protocol.GroupDescription
        )
        consumer = d.protocol_type in (PROTOCOL_TYPE, "")
        return GroupInfo(
            d.group_id,
            d.state,
            d.protocol_type,
            d.protocol_name,
            d.generation,
            d.leader,
            [
                MemberInfo(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.client_host,
                    decode_assignment(m.assignment) if consumer else [],
                )
                for m in d.members
            ],
        )

    def list_group_offsets(
        self,
        group_id: str,
        partitions: Iterable[TopicPartition | tuple[str, int]] | None = None,
    ) -> dict[TopicPartition, protocol.CommittedOffset]:
        request = protocol.OffsetFetch(
            group_id,
            None if partitions is None else [(tp[0], tp[1]) for tp in partitions],
        )
        reply = self.connection.request(request, protocol.OffsetFetchReply)
        return {TopicPartition(o.topic, o.partition): o for o in reply.offsets}

    def alter_group_offsets(
        self,
        group_id: str,
        offsets: Mapping[PartitionKey, int],
    ) -> None:
        """Set committed offsets; refused (GroupNotEmpty) while the group has live
        members, as Kafka refuses a reset."""
        entries = []
        for tp, offset in offsets.items():
            if offset < 0:
                raise errors.InvalidArgument(
                    f"offset {offset} for {tp[0]}-{tp[1]}: offsets are >= 0"
                )
            entries.append(protocol.CommittedOffset(tp[0], tp[1], offset))
        self.connection.request(
            protocol.AlterGroupOffsets(group_id, entries), protocol.Done
        )

    def delete_group(self, group_id: str) -> None:
        """Its committed offsets go; refused (GroupNotEmpty) while it has members."""
        self.connection.request(protocol.DeleteGroup(group_id), protocol.Done)

    def delete_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition | tuple[str, int]]
    ) -> list[TopicPartition]:
        """Kafka's OffsetDelete: forget the group's offsets of these partitions;
        returns those kept because a live member subscribes to their topic."""
        request = protocol.DeleteGroupOffsets(
            group_id, [(tp[0], tp[1]) for tp in partitions]
        )
        reply = self.connection.request(request, protocol.DeleteGroupOffsetsReply)
        return sorted(TopicPartition(*tp) for tp in reply.subscribed)

    def lag(self, group_id: str) -> list[PartitionLag]:
        """Per partition the group has an offset for or a member owns: committed
        offset, log end offset, lag, owner (kafka-consumer-groups --describe)."""
        return group_lag(self, group_id)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GroupAdmin(Protocol):
    """What group_lag asks of an Admin, local or over the Kafka protocol."""

    def describe_group(self, group_id: str) -> GroupInfo: ...

    def list_group_offsets(
        self, group_id: str
    ) -> Mapping[TopicPartition, protocol.CommittedOffset]: ...

    def list_offsets(
        self, specs: Mapping[TopicPartition, int | str]
    ) -> Mapping[TopicPartition, int | None]: ...


def group_lag(admin: GroupAdmin, group_id: str) -> list[PartitionLag]:
    """Admin.lag's rows, sorted: per partition the group has an offset for or a
    member owns, its committed offset, log end offset (None: the partition is gone)
    and lag, and its owner."""
    info = admin.describe_group(group_id)
    committed = admin.list_group_offsets(group_id)
    owners = {tp: m for m in info.members for tp in m.assignment}
    rows = []
    for tp in sorted(set(committed) | set(owners)):
        try:
            end = admin.list_offsets({tp: "latest"})[tp]
        except errors.UnknownTopic:
            end = None  # deleted since
        c = committed.get(tp)
        owner = owners.get(tp)
        rows.append(
            PartitionLag(
                tp.topic,
                tp.partition,
                None if c is None else c.offset,
                end,
                None if c is None or end is None else max(0, end - c.offset),
                None if owner is None else owner.member_id,
                None if owner is None else owner.client_id,
                None if owner is None else owner.host,
            )
        )
    return rows


def topic_configs(connection: Connection, name: str) -> list[ConfigEntry]:
    """Every config of the topic with its value and source: a topic override, the
    broker's default for topics (its config file), or the default. Blocking: what
    `Admin.describe_configs` and the gateway's DescribeConfigs answer."""
    meta = connection.topic(name)
    registry = protocol.load_registry(connection.data_dir)
    entry = registry.topics.get(name)
    layers = (
        (entry.configs if entry is not None else {}, ConfigSource.DYNAMIC_TOPIC_CONFIG),
        (registry.topic_defaults, ConfigSource.STATIC_BROKER_CONFIG),
        (TopicConfig().to_kafka(), ConfigSource.DEFAULT_CONFIG),
    )
    out = []
    for key, value in sorted(meta.configs.items()):
        synonyms = [
            (source, str(layer[key])) for layer, source in layers if key in layer
        ]
        source = synonyms[0][0] if synonyms else ConfigSource.DEFAULT_CONFIG
        out.append(ConfigEntry(key, value, source, synonyms))
    return out
