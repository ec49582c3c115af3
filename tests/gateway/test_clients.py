"""Admin, offsets and produce/consume with the other Kafka clients: confluent-kafka's
AdminClient and offsets_for_times, kafka-python (its idempotent default producer,
consumer, admin) and aiokafka (producer, assign-consume), against a real gateway."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, _native

with warnings.catch_warnings():  # as tests/native/kafka_python.py: its import warns
    warnings.filterwarnings(
        "ignore", r"(read_text|open_text) is deprecated", DeprecationWarning
    )
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka import KafkaConsumer as PythonConsumer
    from kafka import TopicPartition as PythonTopicPartition
    from kafka.admin import ConfigResource as PythonConfigResource
    from kafka.admin import ConfigResourceType
    from kafka.admin import NewPartitions as PythonNewPartitions
    from kafka.admin import NewTopic as PythonNewTopic

pytestmark = pytest.mark.system


def results(futures: dict) -> dict:
    """Each future's result, or the Kafka error's name."""
    out = {}
    for key, future in futures.items():
        try:
            out[key] = future.result(30)
        except KafkaException as exc:
            out[key] = exc.args[0].name()
    return out


def partition_counts(broker: EmbeddedBroker) -> dict[str, int]:
    with Admin(str(broker.data_dir)) as admin:
        return {name: t.partitions for name, t in admin.list_topics().items()}


# ---- confluent-kafka's AdminClient ---------------------------------------------------


def test_confluent_admin_creates_lists_grows_and_deletes_topics(
    broker: EmbeddedBroker, topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    created = results(admin.create_topics([
        NewTopic(topic, 3),  # replication factor -1: the broker's default
        NewTopic(f"{topic}.default", -1),
        NewTopic(f"{topic}.replicated", 1, replication_factor=3),
        NewTopic("bad/name", 1),
    ]))  # fmt: skip
    assert created == {
        topic: None,
        f"{topic}.default": None,
        f"{topic}.replicated": "INVALID_REPLICATION_FACTOR",
        "bad/name": "TOPIC_EXCEPTION",
    }
    assert partition_counts(broker)[topic] == 3
    assert partition_counts(broker)[f"{topic}.default"] == 1
    again = results(admin.create_topics([NewTopic(topic, 1)]))
    assert again == {topic: "TOPIC_ALREADY_EXISTS"}
    listed = admin.list_topics(timeout=30).topics
    assert len(listed[topic].partitions) == 3
    grown = results(
        admin.create_partitions(
            [NewPartitions(topic, 5), NewPartitions(f"{topic}.default", 1)]
        )
    )
    assert grown == {topic: None, f"{topic}.default": "INVALID_PARTITIONS"}
    assert partition_counts(broker)[topic] == 5
    deleted = results(admin.delete_topics([f"{topic}.default", "no-such-topic"]))
    assert deleted == {
        f"{topic}.default": None,
        "no-such-topic": "UNKNOWN_TOPIC_OR_PART",
    }
    assert f"{topic}.default" not in partition_counts(broker)


def test_confluent_admin_describes_and_alters_configs(
    broker: EmbeddedBroker, topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    results(admin.create_topics([NewTopic(topic, 1, config={"retention.ms": "60000"})]))
    resource = ConfigResource("topic", topic)

    def described() -> dict:
        [future] = admin.describe_configs([resource]).values()
        return {
            k: (v.value, v.source, v.is_default) for k, v in future.result(30).items()
        }

    configs = described()
    assert configs["retention.ms"] == (
        "60000",
        ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
        False,
    )
    assert (
        configs["ring.bytes"][1] == ConfigSource.STATIC_BROKER_CONFIG.value
    )  # broker's
    assert configs["segment.bytes"] == (
        str(1 << 30),
        ConfigSource.DEFAULT_CONFIG.value,
        True,
    )
    change = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("segment.bytes", "2000000",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None,
                    incremental_operation=AlterConfigOpType.DELETE),
    ])  # fmt: skip
    assert list(results(admin.incremental_alter_configs([change])).values()) == [None]
    configs = described()
    assert configs["segment.bytes"] == (
        "2000000",
        ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
        False,
    )
    assert configs["retention.ms"][2] is True  # back to the default
    bad = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)
    ])  # fmt: skip
    assert list(results(admin.incremental_alter_configs([bad])).values()) == [
        "INVALID_CONFIG"
    ]


def test_confluent_offsets_for_times(broker: EmbeddedBroker, topic: str) -> None:
    with Producer(str(broker.data_dir)) as producer:
        for i in range(10):
            producer.send(topic, b"v", partition=0, timestamp=5_000 + 1000 * i).get(10)
    consumer = KafkaConsumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "unused",
            "enable.auto.commit": False,
        }
    )
    try:
        asked = [ConfluentTopicPartition(topic, 0, ts) for ts in (0, 9_500)]
        found = [consumer.offsets_for_times([tp], timeout=30)[0].offset for tp in asked]
        low, high = consumer.get_watermark_offsets(
            ConfluentTopicPartition(topic, 0), 30
        )
    finally:
        consumer.close()
    assert found == [0, 5]
    assert (low, high) == (0, 10)


# ---- kafka-python --------------------------------------------------------------------


def test_kafka_python_producer_consumer_and_admin(
    broker: EmbeddedBroker, topic: str
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([PythonNewTopic(topic, 2, 1)])
        assert topic in admin.list_topics()
        admin.create_partitions({topic: PythonNewPartitions(3)})
        configs = admin.describe_configs(
            [PythonConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
        assert configs["topic"][topic]["max.message.bytes"]["value"] == str(1 << 20)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        assert producer.config["enable_idempotence"]  # kafka-python 3's default
        sent = [producer.send(topic, b"v%d" % i, key=b"k%d" % i) for i in range(300)]
        placed = [f.get(30) for f in sent]
        producer.close()
        # kafka-python partitions keys with murmur2, as Java and we do
        assert [m.partition for m in placed] == [
            _native.partition_for_key(b"k%d" % i, 3) for i in range(300)
        ]
        with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as local:
            local.assign([(topic, p) for p in range(3)])
            records = []
            deadline = time.monotonic() + 30
            while len(records) < 300 and time.monotonic() < deadline:
                records += local.poll_batch(1000, timeout=1)
        assert sorted(
            (r.partition, r.offset, r.key, r.value) for r in records
        ) == sorted(
            (m.partition, m.offset, b"k%d" % i, b"v%d" % i)
            for i, m in enumerate(placed)
        )
        consumer = PythonConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        consumer.assign([PythonTopicPartition(topic, p) for p in range(3)])
        consumer.seek_to_beginning()
        got = sorted((m.partition, m.offset, m.key, m.value) for m in consumer)
        consumer.close()
        assert got == sorted((r.partition, r.offset, r.key, r.value) for r in records)
        admin.delete_topics([topic])
        assert topic not in partition_counts(broker)
    finally:
        admin.close()


# ---- aiokafka ------------------------------------------------------------------------


def test_aiokafka_producer_and_assign_consumer(
    broker: EmbeddedBroker, topic: str
) -> None:
    async def main() -> list:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            for i in range(200):
                await producer.send(
                    topic, b"a%d" % i, partition=0, headers=[("h", b"1")]
                )
            last = await producer.send_and_wait(topic, b"last", partition=0)
        finally:
            await producer.stop()
        assert last.offset == 200
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers,
                                    enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        try:
            tp = AioTopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list = []
            deadline = time.monotonic() + 30
            while len(got) < 201 and time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=1000)).values():
                    got += messages
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(main())
    assert [(m.offset, m.value) for m in got] == [
        (i, b"a%d" % i) for i in range(200)
    ] + [(200, b"last")]
    assert got[0].headers == (("h", b"1"),)
    with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as local:
        local.assign([(topic, 0)])
        assert [r.value for r in local.poll_batch(300, timeout=10)][-1] == b"last"
