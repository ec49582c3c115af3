"""confluent-kafka (librdkafka 2.x) against the gateway: its producer with the
default acks=all and every codec, its consumer with assign(), and the same records
seen by the local clients, keys, headers, timestamps and offsets alike."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka import Producer as KafkaProducer

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, Ring, _native
from tests.conftest import wait_until

pytestmark = pytest.mark.system
N = 5000


def kafka_producer(broker: EmbeddedBroker, **config: object) -> KafkaProducer:
    return KafkaProducer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, **config}
    )


def produce(
    producer: KafkaProducer, topic: str, messages: list[dict]
) -> list[tuple[int, int]]:
    """Send every message; their (partition, offset), in order of sending."""
    reports: dict[int, tuple[int, int]] = {}
    problems: list[str] = []

    def delivered(err: KafkaError | None, msg, i: int) -> None:
        if err is not None:
            problems.append(str(err))
        else:
            reports[i] = (msg.partition(), msg.offset())

    for i, m in enumerate(messages):
        while True:
            try:
                producer.produce(
                    topic, **m, on_delivery=lambda e, msg, i=i: delivered(e, msg, i)
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still unsent after 60 s"
    assert problems == []
    return [reports[i] for i in range(len(messages))]


def kafka_consumer(broker: EmbeddedBroker, **config: object) -> KafkaConsumer:
    return KafkaConsumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "unused",  # required by the client; assign() uses no group
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **config,
        }
    )


def consume_all(
    broker: EmbeddedBroker, topic: str, partitions: int, **config: object
) -> list:
    """Every record of the topic's partitions, until each says end of partition."""
    consumer = kafka_consumer(broker, **config)
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, ended = [], set()
        deadline = time.monotonic() + 60
        while len(ended) < partitions:
            assert time.monotonic() < deadline, (
                f"partitions {ended} of {partitions} ended"
            )
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is None:
                    out.append(msg)
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition())
                else:
                    pytest.fail(f"consumer error: {msg.error()}")
        return out
    finally:
        consumer.close()


def test_producer_with_default_acks_all_is_read_by_the_local_consumer(
    broker: EmbeddedBroker, topic: str
) -> None:
    """If confluent-kafka produces keyed records (murmur2, Java's partitioner), then
    the local Consumer reads each where the local partitioner puts its key, with
    its key, value, headers, timestamp and the offset the producer was told."""
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic(topic, 3)
    messages = [
        {"key": b"key-%d" % i, "value": b"value-%d" % i,
         "headers": [("n", b"%d" % i)], "timestamp": 1_700_000_000_000 + i}
        for i in range(N)
    ]  # fmt: skip
    placed = produce(
        kafka_producer(broker, partitioner="murmur2_random"), topic, messages
    )
    assert [p for p, _ in placed] == [
        _native.partition_for_key(m["key"], 3) for m in messages
    ]
    with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, p) for p in range(3)])
        records = []
        deadline = time.monotonic() + 30
        while len(records) < N and time.monotonic() < deadline:
            records += consumer.poll_batch(N, timeout=1)
    assert len(records) == N
    by_key = {r.key: r for r in records}
    for m, (p, offset) in zip(messages, placed, strict=True):
        r = by_key[m["key"]]
        assert (r.partition, r.offset, r.value, r.timestamp, r.headers) == (
            p,
            offset,
            m["value"],
            m["timestamp"],
            (("n", m["headers"][0][1]),),
        )


def test_local_producer_is_read_by_the_consumer_with_assign(
    broker: EmbeddedBroker, topic: str
) -> None:
    with Producer(str(broker.data_dir)) as producer:
        for i in range(N):
            producer.send(
                topic, b"v%d" % i, key=b"k%d" % i, partition=0,
                timestamp=1_600_000_000_000 + i, headers=[("h", b"x")],
            )  # fmt: skip
        producer.flush()
    records = consume_all(broker, topic, 1)
    assert [m.offset() for m in records] == list(range(N))
    assert [(m.key(), m.value(), m.timestamp()[1], m.headers()) for m in records] == [
        (b"k%d" % i, b"v%d" % i, 1_600_000_000_000 + i, [("h", b"x")]) for i in range(N)
    ]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_codec_round_trips(
    broker: EmbeddedBroker, topic: str, codec: str
) -> None:
    messages = [{"value": b"%d " % i + b"x" * (i % 300)} for i in range(2000)]
    placed = produce(
        kafka_producer(broker, **{"compression.type": codec}), topic, messages
    )
    records = consume_all(broker, topic, 1)
    assert [m.value() for m in records] == [m["value"] for m in messages]
    assert [(0, m.offset()) for m in records] == placed


@pytest.mark.parametrize("acks", [0, 1])
def test_acks_0_and_1(broker: EmbeddedBroker, topic: str, acks: int) -> None:
    messages = [{"value": b"r%d" % i} for i in range(1000)]
    produce(kafka_producer(broker, acks=acks), topic, messages)
    # acks=0: flush() returns once the requests are sent, not appended
    with Admin(str(broker.data_dir)) as admin:
        wait_until(
            lambda: admin.list_offsets({(topic, 0): "latest"})[(topic, 0)] >= 1000,
            30, "the acks=0 records appended",
        )  # fmt: skip
    records = consume_all(broker, topic, 1)
    assert [m.value() for m in records] == [m["value"] for m in messages]


def test_a_waiting_fetch_wakes_on_a_local_append(
    broker: EmbeddedBroker, topic: str
) -> None:
    """If a consumer's fetch waits up to 10 s and the local Producer appends, then
    the record arrives long before the wait is up: the ring wakes the fetch."""
    with Admin(str(broker.data_dir)) as admin:
        meta = admin.create_topic(topic, 1)
        ring = Ring.open(admin.connection.ring_name(meta, 0))
    consumer = kafka_consumer(broker, **{"fetch.wait.max.ms": 10_000})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        while not ring.stat().data_waiters:  # the gateway sleeps on the ring
            assert consumer.consume(1, timeout=0.05) == []
            assert time.monotonic() < deadline, "no fetch parked on the ring in 30 s"
        with Producer(str(broker.data_dir)) as producer:
            sent = time.monotonic()
            producer.send(topic, b"wake up", partition=0).get(10)
        got = consumer.consume(1, timeout=10)
        waited = time.monotonic() - sent
    finally:
        consumer.close()
        ring.close()
    assert [m.value() for m in got] == [b"wake up"]
    assert waited < 5, f"the record came {waited:.2f} s after it was appended"
