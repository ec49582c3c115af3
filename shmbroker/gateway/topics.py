"""The topics the gateway serves: each partition's ring and segment reader, mapped
once on first use and shared by every connection.

Metadata comes from the supervisor over the control socket (a blocking call: the
caller runs it in a thread), and the rings are mapped on the event loop's thread,
so the cache changes in one thread only. A topic deleted under the gateway shows as
UnknownTopic from its ring; it is then dropped, and a topic of the same name created
again gets a new id, so it is never confused with the old one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from shmbroker import errors, protocol
from shmbroker.client.admin import Admin
from shmbroker.client.connection import Connection
from shmbroker.config import TopicConfig, validate_topic_name
from shmbroker.gateway.sequences import Sequences
from shmbroker.gateway.waker import Waker
from shmbroker.log.reader import PartitionReader
from shmbroker.ring import Ring

log = logging.getLogger(__name__)
FEW_TOPICS = 8  # more unknown names than this in a request: ask for every topic


class Partition:
    """One partition as the gateway sees it. Its ring is shared by every thread;
    its reader (segments) is for the event loop's thread only.

    A thread that calls into the ring (an append that waits for room, a wait for
    fsync) holds it with `acquire` (on the loop's thread, before handing it over):
    the ring is unmapped only once the partition is retired and nobody holds it,
    since C code running on an unmapped ring would crash the process."""

    def __init__(
        self, topic: Topic, index: int, ring: Ring, reader: PartitionReader
    ) -> None:
        self.topic = topic
        self.index = index
        self.ring = ring
        self.reader = reader
        self.waker = Waker(ring)
        self.sequences = Sequences()  # idempotent producers' last batches
        self.name = f"{topic.name}-{index}"
        self.users = 0
        self.retired = False

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.retired and not self.users:
            self._close()

    def retire(self) -> None:
        """Dropped from the cache: unmap once no thread uses the ring."""
        self.retired = True
        if not self.users:
            self._close()

    def _close(self) -> None:
        self.waker.close()  # its thread is in the ring: stop it first
        self.reader.close()  # closes the ring too


class Topic:
    def __init__(self, meta: protocol.TopicMetadata) -> None:
        self.name = meta.name
        self.topic_id = meta.topic_id
        self.configs = dict(meta.configs)
        self.config = TopicConfig.from_kafka(meta.configs)
        self.log_append_time = self.config.message_timestamp_type == "LogAppendTime"
        self.partitions: list[Partition] = []


class Topics:
    """The partitions mapped so far, by topic name."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._topics: dict[str, Topic] = {}

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def partition(self, name: str, index: int) -> Partition | None:
        """The mapped partition, or None when it is not mapped (yet)."""
        topic = self._topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    def fetch_metadata(self, names: Iterable[str]) -> list[protocol.TopicMetadata]:
        """Blocking (run it in a thread): the named topics' metadata from the
        supervisor; those that do not exist (or cannot) are left out."""
        wanted = []
        for name in names:
            try:
                wanted.append(validate_topic_name(name))
            except errors.InvalidArgument:
                continue
        if len(wanted) > FEW_TOPICS:  # one request for all, not one per name
            try:
                reply = self.connection.request(
                    protocol.Metadata(None), protocol.MetadataReply
                )
            except errors.BrokerUnavailable:
                return []
            asked = set(wanted)
            return [t for t in reply.topics if t.name in asked]
        out = []
        for name in wanted:
            try:
                out.append(self.connection.topic(name))
            except errors.ShmbrokerError:
                continue
        return out

    def update(self, metas: Iterable[protocol.TopicMetadata], open_new: bool) -> None:
        """On the loop's thread: bring cached topics up to date with metas (a topic
        re-created under its name, partitions added); with open_new, map topics not
        cached yet too."""
        for meta in metas:
            topic = self._topics.get(meta.name)
            if topic is not None and topic.topic_id != meta.topic_id:
                self.drop(meta.name)
                topic = None
            if topic is None:
                if not open_new:
                    continue
                topic = self._topics[meta.name] = Topic(meta)
            elif topic.configs != meta.configs:
                topic.configs = dict(meta.configs)
                topic.config = TopicConfig.from_kafka(meta.configs)
                topic.log_append_time = (
                    topic.config.message_timestamp_type == "LogAppendTime"
                )
            self._open(topic, meta)

    def _open(self, topic: Topic, meta: protocol.TopicMetadata) -> None:
        for p in range(len(topic.partitions), meta.partitions):
            try:
                reader = PartitionReader.open(
                    self.connection.partition_dir(topic.name, p),
                    self.connection.ring_name(meta, p),
                    topic=topic.name,
                    partition=p,
                )
            except FileNotFoundError:  # deleted since the metadata came
                log.info("partition %s-%d went before it was mapped", topic.name, p)
                return
            topic.partitions.append(Partition(topic, p, reader.ring, reader))

    def drop(self, name: str, topic_id: str | None = None) -> None:
        """Forget a topic (deleted, or re-created): its rings are unmapped."""
        topic = self._topics.get(name)
        if topic is None or (topic_id is not None and topic.topic_id != topic_id):
            return
        del self._topics[name]
        for partition in topic.partitions:
            partition.retire()
        log.info("gateway: dropped topic %s (id %s)", name, topic.topic_id)

    def close(self) -> None:
        for name in list(self._topics):
            self.drop(name)


# ---- topic configs ----------------------------------------------------------------


def topic_overrides(connection: Connection, name: str) -> dict[str, str]:
    """Blocking: the configs the topic sets itself (not the defaults)."""
    connection.topic(name)  # UnknownTopic if there is none
    entry = protocol.load_registry(connection.data_dir).topics.get(name)
    return dict(entry.configs) if entry is not None else {}


def alter_topic_configs(
    admin: Admin,
    name: str,
    set_: dict[str, str],
    delete: list[str],
    validate_only: bool,
) -> protocol.TopicMetadata | None:
    """Blocking: set and delete (back to the default) topic overrides through the
    supervisor; validate_only checks the values without changing anything."""
    if validate_only:
        connection = admin.connection
        registry = protocol.load_registry(connection.data_dir)
        overrides = topic_overrides(connection, name)
        kept = {k: v for k, v in overrides.items() if k not in delete}
        known = TopicConfig().to_kafka()
        for key in delete:
            if key not in known:
                raise errors.ConfigError(f"unknown topic config {key!r}")
        TopicConfig.from_kafka({**registry.topic_defaults, **kept, **set_})
        return None
    return admin.alter_configs(name, set_, delete)
