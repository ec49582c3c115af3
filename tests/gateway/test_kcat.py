"""kcat (librdkafka 2.0) against the gateway: metadata, produce with every codec,
consume to the end, offsets for times; and the same records seen from the local
clients."""

from __future__ import annotations

import json

import pytest

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer
from shmbroker.log.reader import PartitionReader
from tests.gateway.conftest import kcat

pytestmark = pytest.mark.system
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def consumed(
    broker: EmbeddedBroker, topic: str, partition: int | None = None
) -> list[dict]:
    """Every record of the topic, from kcat -C -e -J."""
    where = [] if partition is None else ["-p", str(partition)]
    out = kcat(broker, "-C", "-t", topic, *where, "-o", "beginning", "-e", "-J", "-q")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def stored_codecs(broker: EmbeddedBroker, topic: str) -> list[int]:
    """The codec of every batch the partition holds (attributes bits 0-2)."""
    with Admin(str(broker.data_dir)) as admin:
        meta = admin.connection.topic(topic)
        ring_name = admin.connection.ring_name(meta, 0)
        directory = admin.connection.partition_dir(topic, 0)
    reader = PartitionReader.open(directory, ring_name, topic=topic, partition=0)
    try:
        data = reader.reader(0).read_batches(0)
    finally:
        reader.close()
    codecs, at = [], 0
    while at < len(data):
        codecs.append(data[at + 22] & 7)
        at += int.from_bytes(data[at + 8 : at + 12], "big") + 12
    return codecs


def test_metadata_lists_the_broker_and_the_topics(
    broker: EmbeddedBroker, topic: str
) -> None:
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic(topic, 3)
    meta = json.loads(kcat(broker, "-L", "-J").stdout)
    host, port = broker.gateway_address()
    assert meta["brokers"] == [{"id": 0, "name": f"{host}:{port}"}]
    [described] = [t for t in meta["topics"] if t["topic"] == topic]
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 0 for p in described["partitions"])


@pytest.mark.parametrize("codec", list(CODECS))
def test_produce_with_each_codec_stores_the_batch_as_sent(
    broker: EmbeddedBroker, topic: str, codec: str
) -> None:
    """If kcat produces with a codec, then its batches are stored compressed with
    that codec (not re-encoded) and kcat reads back every record, key and header."""
    lines = b"".join(
        b"key%d:value %d %s\n" % (i, i, codec.encode()) for i in range(500)
    )
    kcat(
        broker, "-P", "-t", topic, "-K:", "-z", codec, "-H", "source=kcat", stdin=lines
    )
    records = consumed(broker, topic)
    assert [r["offset"] for r in records] == list(range(500))
    assert [r["key"] for r in records] == [f"key{i}" for i in range(500)]
    assert [r["payload"] for r in records] == [f"value {i} {codec}" for i in range(500)]
    assert all(r["headers"] == ["source", "kcat"] for r in records)
    # librdkafka sends a batch that would not shrink uncompressed
    stored = set(stored_codecs(broker, topic))
    assert CODECS[codec] in stored
    assert stored <= {0, CODECS[codec]}


def test_records_produced_by_kcat_are_read_by_the_local_consumer(
    broker: EmbeddedBroker, topic: str
) -> None:
    lines = b"".join(b"k%d:v%d\n" % (i, i) for i in range(100))
    kcat(broker, "-P", "-t", topic, "-K:", "-H", "h=1", stdin=lines)
    seen = consumed(broker, topic)
    with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, 0)])
        records = consumer.poll_batch(1000, timeout=10)
    assert [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in records] == [
        (s["offset"], s["key"].encode(), s["payload"].encode(), (("h", b"1"),), s["ts"])
        for s in seen
    ]


def test_records_of_the_local_producer_are_read_by_kcat(
    broker: EmbeddedBroker, topic: str
) -> None:
    """Keys, values, headers, timestamps and offsets are the same on both paths."""
    with Producer(str(broker.data_dir)) as producer:
        sent = [
            producer.send(
                topic, b"value-%d" % i, key=b"key-%d" % i, partition=0,
                timestamp=1_700_000_000_000 + i, headers=[("n", b"%d" % i)],
            ).get(10)
            for i in range(200)
        ]  # fmt: skip
    records = consumed(broker, topic)
    assert [r["offset"] for r in records] == [m.offset for m in sent]
    assert [(r["key"], r["payload"], r["ts"], r["headers"]) for r in records] == [
        (f"key-{i}", f"value-{i}", 1_700_000_000_000 + i, ["n", str(i)])
        for i in range(200)
    ]


def test_consume_to_the_end_of_an_empty_partition_exits(
    broker: EmbeddedBroker, topic: str
) -> None:
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic(topic, 2)
    assert consumed(broker, topic) == []


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_offsets_for_times(
    broker: EmbeddedBroker, topic: str, compression: str
) -> None:
    """-Q: the first offset at or after a timestamp, also inside one compressed
    batch; the end for a later one."""
    with Producer(str(broker.data_dir), compression_type=compression) as producer:
        for i in range(10):
            producer.send(topic, b"v", partition=0, timestamp=1_000_000 + 1000 * i)
        producer.flush(10)
    assert stored_codecs(broker, topic) == [CODECS[compression]]

    def offset_at(ts: int) -> int:
        out = json.loads(kcat(broker, "-Q", "-t", f"{topic}:0:{ts}", "-J").stdout)
        return out[topic]["0"]["offset"]

    assert offset_at(0) == 0
    assert offset_at(1_000_000) == 0
    assert offset_at(1_004_500) == 5
    assert offset_at(1_009_000) == 9
    assert offset_at(2_000_000) == -1  # none: Kafka answers -1
