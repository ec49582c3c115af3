"""The Producer against a real supervisor: partitioning, futures, batches, durability,
record size limits, deleted topics."""

from __future__ import annotations

import pytest

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, TopicPartition
from shmbroker.errors import InvalidArgument, UnknownTopic

# (key, partitions, partition) as Kafka's Java client puts them:
# Utils.toPositive(Utils.murmur2(key)) % partitions, with the murmur2 values of
# Kafka's UtilsTest.testMurmur2 (e.g. "foobar" -> -790332482)
KAFKA_PARTITIONS = [
    (b"21", 10, 0),
    (b"foobar", 10, 6),
    (b"a-little-bit-long-string", 10, 2),
    (b"a-little-bit-longer-string", 10, 9),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 10, 7),
    (b"abc", 10, 7),
    (b"a-little-bit-long-string", 3, 2),
]


def read_all(data_dir: str, topic: str, partitions: int) -> list:
    with Consumer(data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        out = []
        while records := consumer.poll_batch(10_000, timeout=0.2):
            out += records
        return out


def test_keys_go_to_the_partition_kafkas_java_client_picks(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("k10", 10)
        admin.create_topic("k3", 3)
    with Producer(broker.data_dir) as producer:
        for key, partitions, expected in KAFKA_PARTITIONS:
            meta = producer.send(f"k{partitions}", b"v", key=key).get(timeout=5)
            assert meta.partition == expected, key


def test_send_returns_dense_offsets_per_partition(broker: EmbeddedBroker) -> None:
    with Producer(broker.data_dir) as producer:
        futures = [producer.send("dense", b"%d" % i, partition=0) for i in range(2500)]
        producer.flush()
        assert [f.get().offset for f in futures] == list(range(2500))
    records = read_all(broker.data_dir, "dense", 1)
    assert [r.value for r in records] == [b"%d" % i for i in range(2500)]


def test_oversized_record_is_refused_and_nothing_is_sent(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("small", 1, {"max.message.bytes": 1000})
    with Producer(broker.data_dir) as producer:
        with pytest.raises(InvalidArgument, match=r"max\.message\.bytes"):
            producer.send("small", b"x" * 2000)
        producer.send("small", b"ok").get()
    assert [r.value for r in read_all(broker.data_dir, "small", 1)] == [b"ok"]


def test_send_to_a_deleted_topic_fails_clearly(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("gone", 1)
        with Producer(broker.data_dir, auto_create_topics=False) as producer:
            producer.send("gone", b"a").get()
            admin.delete_topic("gone")
            with pytest.raises(UnknownTopic):
                producer.send_batch("gone", [b"b"])
            with pytest.raises(UnknownTopic, match="does not exist"):
                producer.send("gone", b"c")


def test_acks_all_returns_after_fsync(broker: EmbeddedBroker) -> None:
    with Producer(broker.data_dir, acks="all") as producer:
        meta = producer.send("durable", b"x", partition=0).get(timeout=10)
    with Admin(broker.data_dir) as admin:
        (described,) = admin.describe_topics(["durable"])
    assert described.partitions[0].recovery_point >= meta.offset + 1


def test_log_append_time_topic_ignores_producer_timestamps(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("lat", 1, {"message.timestamp.type": "LogAppendTime"})
    with Producer(broker.data_dir) as producer:
        producer.send("lat", b"x", timestamp=1000).get()
    (record,) = read_all(broker.data_dir, "lat", 1)
    assert record.timestamp > 1_600_000_000_000


def test_keyless_records_stick_to_one_partition_per_batch(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("sticky", 4)
    with Producer(broker.data_dir, batch_records=100) as producer:
        futures = [producer.send("sticky", b"v") for _ in range(1000)]
        producer.flush()
        partitions = [f.get().partition for f in futures]
    runs = [partitions[i : i + 100] for i in range(0, 1000, 100)]
    assert all(len(set(run)) == 1 for run in runs), "a batch split across partitions"
    assert len(set(partitions)) > 1, "sticky never moved on"
    assert TopicPartition("sticky", 0) == ("sticky", 0)
