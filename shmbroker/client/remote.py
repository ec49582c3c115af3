"""The clients over the Kafka protocol: RemoteAdmin, RemoteProducer and RemoteConsumer
give a broker reached at HOST:PORT (our gateway, or any Kafka broker) the faces of
Admin, Producer and Consumer, through a well-kept Kafka client (confluent-kafka, that
is librdkafka), so one caller serves both. Kafka client properties (security.protocol,
sasl.*, ssl.*, ...) pass through as given. Errors are our exceptions (the one table
in kafka/errors.py), with the broker's message.

What the Kafka protocol does not carry is not made up: a topic's id is Kafka's zero
id where the broker's Metadata gives none, and a group's generation is None
(DescribeGroups has no generation).
"""

from __future__ import annotations

import concurrent.futures
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
)
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigResource,
    NewPartitions,
    OffsetSpec,
    ResourceType,
)
from confluent_kafka.admin import ConfigEntry as KafkaConfigEntry
from confluent_kafka.admin import NewTopic as KafkaNewTopic

from shmbroker import errors, protocol
from shmbroker.client.admin import (
    ConfigEntry,
    ConfigSource,
    GroupInfo,
    MemberInfo,
    Node,
    PartitionLag,
    group_lag,
)
from shmbroker.client.consumer import OffsetReset
from shmbroker.kafka.errors import error_for
from shmbroker.records import Header, PartitionKey, Record, TopicPartition

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_TIMEOUT = 30.0  # seconds an admin request may take before BrokerUnavailable
ZERO_TOPIC_ID = "0" * 32  # Kafka's Uuid.ZERO_UUID: the broker gave no topic id
# Kafka's group state names, for confluent-kafka's ConsumerGroupState members
GROUP_STATES = {
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "STABLE": "Stable",
    "DEAD": "Dead",
    "EMPTY": "Empty",
    "UNKNOWN": "Unknown",
}
RECORD_OVERHEAD = 16 + 61  # a record's varints and its batch's header, at most: a
# record over max.message.bytes with these is refused before anything is sent
# librdkafka's own errors (negative codes) that mean the broker cannot be reached
UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
}


def error_from(error: KafkaError) -> errors.ShmbrokerError:
    """Our exception for a Kafka client's error: the broker's code through the one
    table, librdkafka's own (negative) codes by what they mean."""
    code, message = error.code(), error.str()
    if code >= 0:  # the class by the table, the words as the broker said them
        return type(error_for(code))(message)
    if code in UNREACHABLE:
        return errors.BrokerUnavailable(message)
    if code in (KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
        return errors.UnknownTopic(message)
    return errors.ShmbrokerError(message)


def _result(future: concurrent.futures.Future[Any]) -> Any:
    try:
        return future.result(timeout=REQUEST_TIMEOUT)
    except KafkaException as exc:
        raise error_from(exc.args[0]) from None
    except concurrent.futures.TimeoutError:
        raise errors.BrokerUnavailable(
            f"no answer within {REQUEST_TIMEOUT:.0f} s"
        ) from None


def _make(kind: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """A librdkafka client; a property it refuses is a ConfigError naming it."""
    try:
        return kind(config)
    except KafkaException as exc:
        raise errors.ConfigError(exc.args[0].str()) from None


def client_config(
    bootstrap_servers: str, properties: Mapping[str, str], client_id: str
) -> dict[str, Any]:
    """librdkafka's configuration: the given Kafka properties, then ours; its log
    goes to Python's logging, not to stderr."""
    return {
        "client.id": client_id,
        **properties,
        "bootstrap.servers": bootstrap_servers,
        "logger": log,
    }


def _topic_id(uuid: Any) -> str:
    """A confluent-kafka Uuid as our ids are written: 32 hex digits."""
    if uuid is None:
        return ZERO_TOPIC_ID
    most = uuid.get_most_significant_bits() & (1 << 64) - 1
    least = uuid.get_least_significant_bits() & (1 << 64) - 1
    return f"{most:016x}{least:016x}"


class PartitionOffsets(msgspec.Struct, frozen=True):
    """A partition as the Kafka protocol describes it: where its log starts and
    ends (what it has in shared memory and on disk only the host can see)."""

    partition: int
    log_start_offset: int
    high_watermark: int


class TopicSummary(msgspec.Struct, frozen=True):
    name: str
    topic_id: str
    partitions: list[PartitionOffsets]
    configs: dict[str, str]  # the topic's overrides and the broker's defaults


class RemoteAdmin:
    """Admin's face over the Kafka protocol."""

    def __init__(
        self,
        bootstrap_servers: str,
        properties: Mapping[str, str] | None = None,
        *,
        client_id: str = "shmbroker-admin",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.properties = dict(properties or {})
        self.config = client_config(bootstrap_servers, self.properties, client_id)
        self.client = _make(AdminClient, self.config)

    # ---- topics ---------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        num_partitions: int = 1,
        configs: Mapping[str, str | int] | None = None,
        *,
        validate_only: bool = False,
    ) -> None:
        topic = KafkaNewTopic(
            name,
            num_partitions,
            1,
            config={k: str(v) for k, v in (configs or {}).items()},
        )
        (future,) = self.client.create_topics(
            [topic], validate_only=validate_only, request_timeout=REQUEST_TIMEOUT
        ).values()
        _result(future)

    def delete_topic(self, name: str) -> None:
        (future,) = self.client.delete_topics(
            [name], request_timeout=REQUEST_TIMEOUT
        ).values()
        try:
            _result(future)
        except errors.UnknownTopic:  # DeleteTopics v1 carries no message
            raise errors.UnknownTopic(f"topic {name!r} does not exist") from None

    def topic(self, name: str, auto_create: bool = False) -> protocol.TopicMetadata:
        """The topic's partition count and configs; auto_create: a producer's
        Metadata request, which creates it if the broker creates topics on first
        use."""
        if auto_create:
            _make(KafkaProducer, self.config).list_topics(name, timeout=REQUEST_TIMEOUT)
        return self._metadata([name])[name]

    def list_topics(self) -> dict[str, protocol.TopicMetadata]:
        return self._metadata(None)

    def _metadata(self, names: list[str] | None) -> dict[str, protocol.TopicMetadata]:
        found = self._partition_counts(names)
        ids = self._topic_ids(sorted(found))
        configs = self._configs(sorted(found))
        return {
            name: protocol.TopicMetadata(
                name,
                ids[name],
                count,
                {c.name: c.value for c in configs[name]},
            )
            for name, count in found.items()
        }

    def _partition_counts(self, names: list[str] | None) -> dict[str, int]:
        try:  # every topic: a Metadata request naming one may create it
            md = self.client.list_topics(timeout=REQUEST_TIMEOUT)
        except KafkaException as exc:
            raise error_from(exc.args[0]) from None
        out = {}
        for name in md.topics if names is None else names:
            meta = md.topics.get(name)
            if meta is None or meta.error is not None:
                if names is None:
                    continue
                raise errors.UnknownTopic(f"topic {name!r} does not exist")
            out[name] = len(meta.partitions)
        return out

    def _topic_ids(self, names: list[str]) -> dict[str, str]:
        if not names:
            return {}
        futures = self.client.describe_topics(
            TopicCollection(names), request_timeout=REQUEST_TIMEOUT
        )
        return {name: _topic_id(_result(f).topic_id) for name, f in futures.items()}

    def _configs(self, names: list[str]) -> dict[str, list[ConfigEntry]]:
        if not names:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        futures = self.client.describe_configs(
            resources, request_timeout=REQUEST_TIMEOUT
        )
        out = {}
        for resource, future in futures.items():
            entries = []
            for entry in sorted(_result(future).values(), key=lambda e: e.name):
                source = ConfigSource(int(entry.source))
                synonyms = [(source, entry.value)]
                # confluent-kafka keys synonyms by name: of several layers under the
                # topic's own name only the last (the default) is left
                for synonym in entry.synonyms.values():
                    layer = ConfigSource(int(synonym.source))
                    if layer != source:
                        synonyms.append((layer, synonym.value))
                entries.append(ConfigEntry(entry.name, entry.value, source, synonyms))
            out[resource.name] = entries
        return out

    def describe_configs(self, name: str) -> list[ConfigEntry]:
        return self._configs([name])[name]

    def describe_topics(self, names: Iterable[str] | None = None) -> list[TopicSummary]:
        counts = self._partition_counts(None if names is None else list(names))
        ids = self._topic_ids(sorted(counts))
        configs = self._configs(sorted(counts))
        tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        starts = self.list_offsets(dict.fromkeys(tps, "earliest"))
        ends = self.list_offsets(dict.fromkeys(tps, "latest"))
        return [
            TopicSummary(
                name,
                ids[name],
                [
                    PartitionOffsets(
                        p,
                        starts[TopicPartition(name, p)] or 0,
                        ends[TopicPartition(name, p)] or 0,
                    )
                    for p in range(count)
                ],
                {
                    c.name: c.value
                    for c in configs[name]
                    if c.source != ConfigSource.DEFAULT_CONFIG
                },
            )
            for name, count in counts.items()
        ]

    def alter_configs(
        self,
        name: str,
        set: Mapping[str, str | int] | None = None,
        delete: Iterable[str] = (),
    ) -> None:
        """Incremental: set these keys, return those in delete to the defaults."""
        changes = [
            KafkaConfigEntry(k, str(v), incremental_operation=AlterConfigOpType.SET)
            for k, v in (set or {}).items()
        ]
        changes += [
            KafkaConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
            for k in delete
        ]
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=changes)
        (future,) = self.client.incremental_alter_configs(
            [resource], request_timeout=REQUEST_TIMEOUT
        ).values()
        _result(future)

    def create_partitions(self, name: str, total: int) -> None:
        (future,) = self.client.create_partitions(
            [NewPartitions(name, total)], request_timeout=REQUEST_TIMEOUT
        ).values()
        _result(future)

    def list_offsets(
        self, specs: Mapping[PartitionKey, int | str]
    ) -> dict[TopicPartition, int | None]:
        """Per partition, "earliest" (log start), "latest" (high watermark), or a
        timestamp in ms (the first offset at or after it; None if none)."""
        if not specs:
            return {}
        wanted = {}
        for key, spec in specs.items():
            if spec == "earliest":
                offset_spec = OffsetSpec.earliest()
            elif spec == "latest":
                offset_spec = OffsetSpec.latest()
            else:
                offset_spec = OffsetSpec.for_timestamp(int(spec))
            wanted[KafkaTopicPartition(key[0], key[1])] = offset_spec
        futures = self.client.list_offsets(wanted, request_timeout=REQUEST_TIMEOUT)
        out: dict[TopicPartition, int | None] = {}
        for ktp, future in futures.items():
            offset = _result(future).offset
            out[TopicPartition(ktp.topic, ktp.partition)] = (
                None if offset < 0 else offset
            )
        return out

    # ---- consumer groups ------------------------------------------------------------

    def list_groups(self) -> list[protocol.GroupListing]:
        """Sorted by id; a state ListGroups did not carry (before v4) is asked of
        DescribeGroups."""
        listed = sorted(
            _result(self.client.list_consumer_groups()).valid,
            key=lambda g: g.group_id,
        )
        unknown = [g.group_id for g in listed if g.state.name == "UNKNOWN"]
        states = {}
        if unknown:
            futures = self.client.describe_consumer_groups(
                unknown, request_timeout=REQUEST_TIMEOUT
            )
            states = {group: _result(f).state.name for group, f in futures.items()}
        return [
            protocol.GroupListing(
                g.group_id,
                GROUP_STATES.get(name, name),
                "" if g.is_simple_consumer_group else "consumer",
            )
            for g in listed
            for name in [states.get(g.group_id, g.state.name)]
        ]

    def describe_group(self, group_id: str) -> GroupInfo:
        """GroupIdNotFound if the broker knows no such group (Kafka says Dead)."""
        (future,) = self.client.describe_consumer_groups(
            [group_id], request_timeout=REQUEST_TIMEOUT
        ).values()
        d = _result(future)
        state = GROUP_STATES.get(d.state.name, d.state.name)
        if state == "Dead":
            raise errors.GroupIdNotFound(f"group {group_id!r} does not exist")
        c = d.coordinator
        return GroupInfo(
            d.group_id,
            state,
            "" if d.is_simple_consumer_group else "consumer",
            d.partition_assignor or "",
            None,
            "",
            [
                MemberInfo(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.host,
                    sorted(
                        TopicPartition(tp.topic, tp.partition)
                        for tp in (m.assignment.topic_partitions or [])
                    ),
                )
                for m in d.members
            ],
            Node(c.id, c.host, c.port),
        )

    def list_group_offsets(
        self,
        group_id: str,
        partitions: Iterable[TopicPartition | tuple[str, int]] | None = None,
    ) -> dict[TopicPartition, protocol.CommittedOffset]:
        request = ConsumerGroupTopicPartitions(
            group_id,
            None
            if partitions is None
            else [KafkaTopicPartition(t, p) for t, p in partitions],
        )
        (future,) = self.client.list_consumer_group_offsets(
            [request], request_timeout=REQUEST_TIMEOUT
        ).values()
        out = {}
        for ktp in _result(future).topic_partitions:
            if ktp.error is not None:
                raise error_from(ktp.error)
            if ktp.offset != OFFSET_INVALID:
                tp = TopicPartition(ktp.topic, ktp.partition)
                out[tp] = protocol.CommittedOffset(
                    ktp.topic, ktp.partition, ktp.offset, ktp.metadata or ""
                )
        return out

    def alter_group_offsets(
        self, group_id: str, offsets: Mapping[PartitionKey, int]
    ) -> None:
        """Set committed offsets; refused (GroupNotEmpty) while the group has live
        members."""
        request = ConsumerGroupTopicPartitions(
            group_id,
            [KafkaTopicPartition(tp[0], tp[1], o) for tp, o in offsets.items()],
        )
        (future,) = self.client.alter_consumer_group_offsets(
            [request], request_timeout=REQUEST_TIMEOUT
        ).values()
        for ktp in _result(future).topic_partitions:
            if ktp.error is not None:
                raise error_from(ktp.error)

    def delete_group(self, group_id: str) -> None:
        (future,) = self.client.delete_consumer_groups(
            [group_id], request_timeout=REQUEST_TIMEOUT
        ).values()
        _result(future)

    def delete_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition | tuple[str, int]]
    ) -> list[TopicPartition]:
        """Kafka's OffsetDelete: the partitions whose offsets stay, as a live member
        subscribes to their topic. confluent-kafka has no call for it, so this one
        goes through kafka-python's admin client."""
        with warnings.catch_warnings():  # its import uses a deprecated importlib
            warnings.simplefilter("ignore", DeprecationWarning)  # call: not ours
            import kafka
            from kafka.errors import GroupSubscribedToTopicError, NoError

        client = kafka.KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.config["client.id"],
            **{k.replace(".", "_"): v for k, v in self.properties.items()},
        )
        try:
            results = client.delete_group_offsets(
                group_id, [kafka.TopicPartition(t, p) for t, p in partitions]
            )
        except kafka.errors.KafkaError as exc:
            raise error_for(getattr(exc, "errno", -1), str(exc)) from None
        finally:
            client.close()
        kept = []
        for ktp, error in results.items():
            if error is GroupSubscribedToTopicError:
                kept.append(TopicPartition(ktp.topic, ktp.partition))
            elif error is not NoError:
                raise error_for(error.errno, error.message)
        return sorted(kept)

    def lag(self, group_id: str) -> list[PartitionLag]:
        return group_lag(self, group_id)

    def close(self) -> None:
        pass  # librdkafka's handle goes with the object

    def __enter__(self) -> RemoteAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteProducer:
    """Producer's face over the Kafka protocol: keys choose partitions by murmur2
    as Java's and our local producer do, keyless records go stickily."""

    def __init__(
        self,
        bootstrap_servers: str,
        properties: Mapping[str, str] | None = None,
        *,
        client_id: str = "shmbroker-producer",
        acks: int | str = 1,
    ) -> None:
        self.durable = str(acks) in ("-1", "all")
        config = client_config(bootstrap_servers, properties or {}, client_id)
        self.admin = RemoteAdmin(bootstrap_servers, properties, client_id=client_id)
        self.producer = _make(
            KafkaProducer,
            {
                "acks": str(acks),
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                **config,
            },
        )
        self._limits: dict[str, int] = {}
        self._errors: list[KafkaError] = []

    def partitions_for(self, topic: str) -> list[int]:
        """Creates the topic if the broker creates topics on first use."""
        return list(range(self.admin.topic(topic, auto_create=True).partitions))

    def _check_size(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[Header] | None,
    ) -> None:
        """RecordTooLarge, before anything is sent, for a record whose batch alone
        is over the topic's max.message.bytes (as the local producer refuses it)."""
        limit = self._limits.get(topic)
        if limit is None:
            configs = self.admin.topic(topic, auto_create=True).configs
            limit = self._limits[topic] = int(configs["max.message.bytes"])
        size = RECORD_OVERHEAD + len(value or b"") + len(key or b"")
        size += sum(len(k) + len(v or b"") for k, v in headers or ())
        if size > limit:
            raise errors.RecordTooLarge(
                f"a record of {size} bytes is larger than topic {topic!r}'s "
                f"max.message.bytes ({limit})"
            )

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._errors.append(error)

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[Header] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record; flush() delivers it (or raises what stopped it)."""
        self._check_size(topic, value, key, headers)
        options: dict[str, Any] = {"on_delivery": self._delivered}
        if partition is not None:
            options["partition"] = partition
        if headers:
            options["headers"] = list(headers)
        while True:
            try:
                self.producer.produce(topic, value, key, **options)
                return
            except BufferError:  # librdkafka's queue is full: let some go
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise error_from(exc.args[0]) from None

    def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[Sequence[Header]] | None = None,
    ) -> None:
        """Send the records and wait until they are delivered; RecordTooLarge, and
        nothing sent, if one of them alone is over max.message.bytes."""
        for i, value in enumerate(values):
            self._check_size(
                topic,
                value,
                None if keys is None else keys[i],
                None if headers is None else headers[i],
            )
        for i, value in enumerate(values):
            self.send(
                topic,
                value,
                None if keys is None else keys[i],
                None if headers is None else headers[i],
                partition,
            )
        self.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Deliver every queued record; raises the first error one of them got."""
        left = self.producer.flush(-1 if timeout is None else timeout)
        if left:
            raise errors.WouldBlock(f"{left} records not delivered within {timeout} s")
        if self._errors:
            error, self._errors = self._errors[0], []
            raise error_from(error)

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    def __enter__(self) -> RemoteProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _headers(headers: Any) -> tuple[Header, ...]:
    """librdkafka's (name, bytes or None) list as our records carry headers."""
    return tuple((k, None if v is None else bytes(v)) for k, v in headers or ())


class RemoteConsumer:
    """Consumer's face over the Kafka protocol: assign (then seek) or subscribe
    with a group_id, poll_batch, close (which commits, with auto commit)."""

    def __init__(
        self,
        bootstrap_servers: str,
        properties: Mapping[str, str] | None = None,
        *,
        client_id: str = "shmbroker-consumer",
        group_id: str | None = None,
        auto_offset_reset: OffsetReset = "latest",
        enable_auto_commit: bool = True,
    ) -> None:
        config = client_config(bootstrap_servers, properties or {}, client_id)
        self.reset = auto_offset_reset
        self.grouped = group_id is not None
        self.consumer = _make(
            KafkaConsumer,
            {
                # librdkafka wants a group id even to only assign; without one we
                # never commit, so the id is never used
                "group.id": group_id or f"{client_id}-unused",
                "enable.auto.commit": enable_auto_commit and self.grouped,
                "auto.offset.reset": auto_offset_reset,
                "enable.partition.eof": False,
                **config,
            },
        )
        self._starts: dict[TopicPartition, int] = {}
        self._polled = False

    def subscribe(
        self, topics: Iterable[str] | None = None, pattern: str | None = None
    ) -> None:
        """Join the group for these topics, or every topic whose whole name matches
        the regular expression pattern, now or later."""
        names = list(topics or ())
        if pattern is not None:
            names.append(f"^({pattern})$")  # librdkafka: a leading ^ marks a regex
        self.consumer.subscribe(names)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        at = OFFSET_BEGINNING if self.reset == "earliest" else OFFSET_END
        self._starts = {TopicPartition(*tp): at for tp in partitions}
        self._assign()

    def _assign(self) -> None:
        self.consumer.assign(
            [KafkaTopicPartition(t, p, o) for (t, p), o in self._starts.items()]
        )

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        if self._polled:
            self.consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
        else:  # librdkafka seeks only a partition it fetches: assign from there
            self._starts[tp] = offset
            self._assign()

    def seek(self, tp: TopicPartition | tuple[str, int], offset: int) -> None:
        self._seek(TopicPartition(*tp), offset)

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions or list(self._starts):
            self._seek(TopicPartition(*tp), OFFSET_BEGINNING)

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions or list(self._starts):
            self._seek(TopicPartition(*tp), OFFSET_END)

    def poll_batch(
        self, max_records: int, timeout: float | None = None
    ) -> list[Record]:
        self._polled = True
        messages = self.consumer.consume(
            max_records, -1 if timeout is None else timeout
        )
        out = []
        for m in messages:
            error = m.error()
            if error is not None:
                raise error_from(error)
            _, timestamp = m.timestamp()
            key, value = m.key(), m.value()
            out.append(
                Record(
                    m.topic() or "",
                    m.partition() or 0,
                    m.offset() or 0,
                    timestamp,
                    None if key is None else bytes(key),
                    None if value is None else bytes(value),
                    _headers(m.headers()),
                )
            )
        return out

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> RemoteConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
