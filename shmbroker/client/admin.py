"""The Admin client: topics (create, delete, list, describe, alter configs, add
partitions) through the supervisor, and offsets (Kafka's ListOffsets) read straight
from the partitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from shmbroker import errors, protocol
from shmbroker.client.connection import Connection
from shmbroker.client.consumer import EARLIEST, LATEST, offset_for
from shmbroker.log.partition import PartitionReader
from shmbroker.records import TopicPartition


class NewTopic(msgspec.Struct, frozen=True):
    name: str
    num_partitions: int = 1
    topic_configs: dict[str, str] = {}


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
        self, specs: Mapping[TopicPartition | tuple[str, int], int | str]
    ) -> dict[TopicPartition, int | None]:
        """Per partition, "earliest" (log start), "latest" (high watermark), or a
        timestamp in ms (the first offset at or after it; None if none)."""
        out: dict[TopicPartition, int | None] = {}
        for key, spec in specs.items():
            tp = TopicPartition(*key)
            meta = self.connection.topic(tp.topic)
            if not 0 <= tp.partition < meta.partitions:
                raise errors.UnknownTopic(
                    f"topic {tp.topic!r} has partitions 0..{meta.partitions - 1}, "
                    f"not {tp.partition}"
                )
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

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
