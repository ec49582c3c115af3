"""The Producer against a real supervisor: partitioning, futures, batches, durability,
record size limits, deleted topics."""

from __future__ import annotations

import json
import os
import struct
import sys
import textwrap
import threading
import time

import pytest

from shmbroker import (
    Admin,
    BrokenError,
    BrokerUnavailable,
    Consumer,
    EmbeddedBroker,
    Producer,
    Ring,
    TopicPartition,
    shm,
)
from shmbroker._native import Decoded, partition_for_key
from shmbroker.compression import CODECS, decompress_batches
from shmbroker.errors import (
    ConfigError,
    InvalidArgument,
    RecordTooLarge,
    UnknownTopic,
    WouldBlock,
)
from shmbroker.records import build_records
from tests.conftest import run_on_small_tmpfs, wait_until
from tests.native.kafka_python import DefaultRecordBatch, DefaultRecordBatchBuilder

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


def ring_batches(broker: EmbeddedBroker, topic_id: str, partition: int = 0) -> list:
    """Every batch in the partition's ring from offset 0, as stored, cut by their
    batchLength fields (read here, not by our codec)."""
    ring = Ring.open(shm.ring_name(broker.shm_base, topic_id, partition))
    try:
        reader, data = ring.reader(0), b""
        while chunk := reader.read_batches(0):
            data += chunk
    finally:
        ring.close()
    batches, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        batches.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return batches


def kafka_batch_bytes(key: bytes | None, value: bytes | None, headers: list) -> int:
    """The size of a one-record batch, as kafka-python's encoder makes it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    builder.append(0, timestamp=1, key=key, value=value, headers=headers)
    return len(builder.build())


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


def test_send_batch_over_max_message_bytes_goes_as_batches_that_fit(
    broker: EmbeddedBroker,
) -> None:
    """If send_batch gets more than max.message.bytes of records, then it appends
    them as several batches, each within the limit (keys and headers counted), in
    order with dense offsets, and returns the first record's metadata."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("split", 1, {"max.message.bytes": 10_000})
    n = 100
    values = [b"%04d" % i + b"v" * 596 for i in range(n)]
    keys = [b"k%03d" % i + b"k" * 200 for i in range(n)]
    headers = [[("trace", b"t" * 150), ("i", b"%d" % i)] for i in range(n)]
    with Producer(broker.data_dir) as producer:
        first = producer.send_batch("split", values, keys, partition=0, headers=headers)
        assert (first.partition, first.offset) == (0, 0)
        # keys and headers alone are over the limit here: values are tiny
        second = producer.send_batch(
            "split", [b"x"] * n, keys, partition=0, headers=headers
        )
        assert second.offset == n
    sizes = [len(b) for b in ring_batches(broker, meta.topic_id)]
    assert max(sizes) <= 10_000, sizes
    # not one record a batch either: the batches are more than half full
    assert len(sizes) <= 2 * -(-sum(sizes) // 10_000), sizes
    records = read_all(broker.data_dir, "split", 1)
    assert [r.offset for r in records] == list(range(2 * n))
    assert [r.value for r in records] == values + [b"x"] * n
    assert [r.key for r in records] == keys + keys
    assert [list(r.headers) for r in records] == headers + headers


def test_sends_with_big_keys_and_headers_are_batched_within_the_limit(
    broker: EmbeddedBroker,
) -> None:
    """If per-record sends carry keys and headers, then the batches the producer
    makes of them still fit max.message.bytes: not only values are counted."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("keyed", 1, {"max.message.bytes": 10_000})
    with Producer(broker.data_dir, linger_ms=1000, batch_records=10_000) as producer:
        futures = [
            producer.send(
                "keyed",
                b"v" * 300,
                key=b"k" * 300,
                headers=[("h", b"h" * 300)],
                partition=0,
            )
            for _ in range(200)
        ]
        producer.flush()
        assert [f.get().offset for f in futures] == list(range(200))
    sizes = [len(b) for b in ring_batches(broker, meta.topic_id)]
    assert max(sizes) <= 10_000, sizes
    assert sum(1 for _ in read_all(broker.data_dir, "keyed", 1)) == 200


def test_a_record_is_refused_only_when_its_own_batch_is_over_the_limit(
    broker: EmbeddedBroker,
) -> None:
    """If a record's batch alone (key, value and headers, as Kafka's encoder sizes
    it) is one byte over max.message.bytes, then send and send_batch refuse it
    with RecordTooLarge naming the topic and both sizes, and append nothing; at
    exactly the limit it goes."""
    key, value, headers = b"k" * 300, b"v" * 600, [("trace", b"t" * 100)]
    size = kafka_batch_bytes(key, value, headers)
    assert size > len(value) + 300
    with Admin(broker.data_dir) as admin:
        admin.create_topic("fits", 1, {"max.message.bytes": size})
        admin.create_topic("over", 1, {"max.message.bytes": size - 1})
    with Producer(broker.data_dir) as producer:
        producer.send("fits", value, key=key, headers=headers).get()
        producer.send_batch("fits", [value], [key], headers=[headers])
        message = rf"topic 'over'.* {size} bytes.* max\.message\.bytes \({size - 1}\)"
        with pytest.raises(RecordTooLarge, match=message):
            producer.send("over", value, key=key, headers=headers)
        with pytest.raises(RecordTooLarge, match=message):
            producer.send_batch(
                "over",
                [b"small", value, b"small"],
                [None, key, None],
                headers=[[], headers, []],
            )
        assert issubclass(RecordTooLarge, InvalidArgument)
        producer.send("over", b"ok").get()
    assert len(read_all(broker.data_dir, "fits", 1)) == 2
    assert [r.value for r in read_all(broker.data_dir, "over", 1)] == [b"ok"]


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


def test_close_after_its_topic_was_deleted_completes_failing_those_records(
    broker: EmbeddedBroker,
) -> None:
    """If records wait in a producer (linger) when their topic is deleted, then
    close() completes, delivering the other topics' records, and the futures of
    those records raise UnknownTopic (before: close() raised and stopped)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("gone", 1)
        admin.create_topic("stays", 1)
    producer = Producer(broker.data_dir, linger_ms=60_000, auto_create_topics=False)
    lost = [producer.send("gone", b"%d" % i) for i in range(10)]
    kept = [producer.send("stays", b"%d" % i) for i in range(10)]
    with Admin(broker.data_dir) as admin:
        admin.delete_topic("gone")
    producer.close()
    for future in lost:
        with pytest.raises(UnknownTopic):
            future.get()
    assert [f.get().offset for f in kept] == list(range(10))


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
    with Producer(broker.data_dir) as producer:  # into one batch: the C path too
        futures = [producer.send("lat", b"x", timestamp=1000 + i) for i in range(10)]
        producer.flush()
        assert [f.get().offset for f in futures] == list(range(10))
    records = read_all(broker.data_dir, "lat", 1)
    assert len(records) == 10
    assert all(r.timestamp > 1_600_000_000_000 for r in records)


def test_records_keep_the_timestamps_they_were_sent_with(
    broker: EmbeddedBroker,
) -> None:
    """If records of one batch come with timestamps (near, far apart, the epoch) or
    without, then each reads back with its own, or with the clock."""
    stamps = [1000, 1001, None, 5, 2**40, 1002, None, 0, 7] * 3
    before = int(time.time() * 1000)
    with Producer(broker.data_dir, linger_ms=1000) as producer:
        futures = [
            producer.send("stamps", b"%d" % i, partition=0, timestamp=ts)
            for i, ts in enumerate(stamps)
        ]
        producer.flush()
        assert [f.get().offset for f in futures] == list(range(len(stamps)))
    after = int(time.time() * 1000)
    records = read_all(broker.data_dir, "stamps", 1)
    assert [r.value for r in records] == [b"%d" % i for i in range(len(stamps))]
    for record, ts in zip(records, stamps, strict=True):
        if ts is None:
            assert before <= record.timestamp <= after, record
        else:
            assert record.timestamp == ts, record


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


# ---- compression.type --------------------------------------------------------------


def decode_all(data: bytes) -> list:
    """(offset, key, value, headers) of every record of uncompressed batches."""
    d, at, out = Decoded(), 0, []
    while at < len(data):
        d.decode(data, at, len(data))
        assert d.bytes_consumed > 0
        at += d.bytes_consumed
        out += [
            (r.offset, r.key, r.value, list(r.headers))
            for r in build_records(d, data, "t", 0)
        ]
    return out


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_compressing_producer_stores_batches_of_its_codec(
    broker: EmbeddedBroker, codec: str
) -> None:
    """If a Producer has compression_type set, then every batch it appends (by
    send_batch and by send) is stored compressed with that codec, kafka-python reads
    each one, and decompressed they hold every record with dense offsets."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("zipped", 1)
    values = [b'{"n":%d,"text":"%s"}' % (i, b"lorem ipsum " * 8) for i in range(300)]
    keys = [b"key-%d" % (i % 10) for i in range(300)]
    headers = [[("i", b"%d" % i)] for i in range(300)]
    with Producer(broker.data_dir, compression_type=codec) as producer:
        first = producer.send_batch(
            "zipped", values[:200], keys[:200], partition=0, headers=headers[:200]
        )
        assert first.offset == 0
        futures = [
            producer.send("zipped", v, key=k, headers=h, partition=0)
            for v, k, h in zip(values[200:], keys[200:], headers[200:], strict=True)
        ]
        producer.flush()
        assert [f.get().offset for f in futures] == list(range(200, 300))
    batches = ring_batches(broker, meta.topic_id)
    assert [b[22] & 7 for b in batches] == [CODECS[codec]] * len(batches)
    expected = [(i, keys[i], values[i], headers[i]) for i in range(300)]
    stored = b"".join(batches)
    assert len(stored) < sum(map(len, values))  # really compressed
    assert decode_all(decompress_batches(stored)) == expected
    kafka = [
        (r.offset, r.key, r.value, [tuple(h) for h in r.headers])
        for b in batches
        for r in DefaultRecordBatch(b)
    ]
    assert kafka == [(o, k, v, [tuple(x) for x in h]) for o, k, v, h in expected]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_consumers_read_compressed_batches_from_the_ring_and_the_segments(
    broker: EmbeddedBroker, ring: Ring, codec: str
) -> None:
    """If batches are stored compressed (by a compressing Producer, or a Kafka
    client's bytes as they came), then a ring reader and a Consumer reading the
    segments get every record, key, header and timestamp as sent."""
    values = [b"value %d " % i * 5 for i in range(300)]
    keys = [b"key-%d" % (i % 7) for i in range(300)]
    headers = [[("i", b"%d" % i)] for i in range(300)]
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS[codec],
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i in range(100):
        builder.append(i, timestamp=1000 + i, key=keys[i], value=values[i],
                       headers=headers[i])  # fmt: skip
    ring.append_encoded(bytes(builder.build()))  # as the gateway will
    reader = ring.reader(0)
    got = []
    while len(got) < 100:
        got += reader.poll(5)
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in got] == [
        (i, 1000 + i, keys[i], values[i], headers[i]) for i in range(100)
    ]
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("zipped", 1)
    with Producer(broker.data_dir, compression_type=codec) as producer:
        producer.send_batch("zipped", values, keys, partition=0, headers=headers)
    topic_ring = Ring.open(shm.ring_name(broker.shm_base, meta.topic_id, 0))
    try:
        wait_until(lambda: topic_ring.spilled_offset() == 300, 30, "the spill")
    finally:
        topic_ring.close()
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("zipped", 0)])
        records = []
        while len(records) < 300:
            records += consumer.poll_batch(timeout=5)
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in records] == [
        (i, keys[i], values[i], headers[i]) for i in range(300)
    ]


def test_max_message_bytes_limits_the_compressed_batch(broker: EmbeddedBroker) -> None:
    """If a record is over max.message.bytes uncompressed but not compressed, then a
    compressing producer sends it, as Kafka does, and an uncompressed one refuses
    it; a record over the limit even compressed is refused naming the codec."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("climit", 1, {"max.message.bytes": 10_000})
    compressible, random_bytes = b"a" * 30_000, os.urandom(30_000)
    with Producer(broker.data_dir, compression_type="zstd") as producer:
        producer.send("climit", compressible).get()
        producer.send_batch("climit", [compressible] * 3 + [b"b" * 500] * 100)
        message = (
            r"topic 'climit'.* compressed with zstd.*max\.message\.bytes \(10000\)"
        )
        with pytest.raises(RecordTooLarge, match=message):
            producer.send("climit", random_bytes)
        with pytest.raises(RecordTooLarge, match=message):
            producer.send_batch("climit", [b"x", random_bytes])
    with Producer(broker.data_dir) as producer, pytest.raises(RecordTooLarge):
        producer.send("climit", compressible)
    batches = ring_batches(broker, meta.topic_id)
    assert max(map(len, batches)) <= 10_000
    values = [v for _, _, v, _ in decode_all(decompress_batches(b"".join(batches)))]
    assert values == [compressible] * 4 + [b"b" * 500] * 100


def test_an_unknown_compression_type_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"compression\.type: 'brotli'.* zstd"):
        Producer(str(tmp_path), compression_type="brotli")


# ---- delivery.timeout.ms -----------------------------------------------------------

DELIVERY_TIMEOUT_MS = 1000
MARGIN = 2.0  # seconds a failing call may take past its delivery timeout


def test_acks_all_fails_after_delivery_timeout_when_the_broker_is_killed(
    broker: EmbeddedBroker,
) -> None:
    """If the supervisor is SIGKILLed, then an acks="all" producer's RecordFuture.get,
    flush, send_batch and close each fail within delivery_timeout_ms (and a margin)
    with BrokerUnavailable saying the broker is down, instead of waiting forever
    for an fsync that cannot come; a caller's own shorter timeout still gives
    WouldBlock."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("orphan", 1)
    producer = Producer(
        broker.data_dir, acks="all", delivery_timeout_ms=DELIVERY_TIMEOUT_MS
    )
    try:
        producer.send("orphan", b"before").get(timeout=30)  # fsynced: the broker ran
        broker.kill()
        future = producer.send("orphan", b"after")
        with pytest.raises(WouldBlock, match=r"not fsynced within 0\.1s"):
            future.get(timeout=0.1)
        down = (
            r"orphan-0: offset \d not fsynced .*delivery\.timeout\.ms.* broker is down"
        )
        calls = {
            "get": future.get,
            "flush": producer.flush,
            "send_batch": lambda: producer.send_batch("orphan", [b"x"]),
            "close": producer.close,
        }
        for name, call in calls.items():
            start = time.monotonic()
            with pytest.raises(BrokerUnavailable, match=down):
                call()
            took = time.monotonic() - start
            assert took < DELIVERY_TIMEOUT_MS / 1000 + MARGIN, f"{name} took {took}s"
    finally:
        producer.close()


def test_acks_all_names_a_failing_spill_after_delivery_timeout(
    shm_prefix: str, tmp_path
) -> None:
    """If the broker's disk is full (a 4 MiB tmpfs in a private mount namespace),
    then an acks="all" send fails after delivery_timeout_ms with BrokenError naming
    the spill's error; once there is space again, the next send is fsynced."""
    mount = tmp_path / "disk"
    mount.mkdir()
    script = tmp_path / "full.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, time
        from shmbroker import Admin, BrokenError, EmbeddedBroker, Producer
        out = {{}}
        with EmbeddedBroker("{mount}/data", shm_prefix="{shm_prefix}", remove=True,
                            topic_defaults={{"ring.bytes": 1 << 20}}) as broker:
            with Admin(broker.data_dir) as admin:
                admin.create_topic("full", 1)
            with Producer(broker.data_dir, acks="all",
                          delivery_timeout_ms={DELIVERY_TIMEOUT_MS}) as producer:
                producer.send("full", b"fits").get(timeout=30)
                with open("{mount}/filler", "wb", buffering=0) as f:  # fill the disk
                    try:
                        while True:
                            f.write(b"x" * 4096)
                    except OSError:
                        pass
                start = time.monotonic()
                try:
                    producer.send("full", b"v" * 100_000).get()
                except BrokenError as exc:
                    out["error"] = f"{{type(exc).__name__}}: {{exc}}"
                out["took"] = time.monotonic() - start
                os.unlink("{mount}/filler")
                out["after"] = producer.send("full", b"again").get(timeout=30).offset
        print(json.dumps(out))
    """)
    )
    result = run_on_small_tmpfs(mount, "4m", script)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["error"].startswith("BrokenError: full-0: offset 1 not fsynced"), out
    assert "the spill of this partition is failing: No space left" in out["error"]
    assert out["took"] < DELIVERY_TIMEOUT_MS / 1000 + MARGIN
    assert out["after"] == 2
    assert issubclass(BrokerUnavailable, BrokenError)


def test_delivery_timeout_must_be_positive(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"delivery\.timeout\.ms: 0"):
        Producer(str(tmp_path), delivery_timeout_ms=0)


def race(target, n: int) -> None:
    """target(t) on n threads at once, switching as often as they can."""
    threads = [threading.Thread(target=target, args=(t,)) for t in range(n)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


def test_futures_of_threads_sending_at_once_name_their_own_records(
    broker: EmbeddedBroker,
) -> None:
    """If several threads send value-only records at once (the per-record path that
    takes no lock) while batches fill and the linger thread appends them, then every
    future names the offset that holds its own value, and every value is there once."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("threads", 1)
    futures: dict[bytes, object] = {}
    with Producer(broker.data_dir, batch_records=7, linger_ms=1) as producer:

        def sender(t: int) -> None:
            for i in range(3000):
                value = b"%d-%d" % (t, i)
                futures[value] = producer.send("threads", value)

        race(sender, 4)
        producer.flush()
        where = {value: f.get(timeout=10).offset for value, f in futures.items()}
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("threads", 0)])
        stored: dict[int, bytes | None] = {}
        while len(stored) < len(where):
            records = consumer.poll_batch(5000, timeout=5)
            assert records, f"{len(stored)} of {len(where)} records read"
            stored.update((r.offset, r.value) for r in records)
    assert sorted(stored) == list(range(12_000))
    assert all(stored[offset] == value for value, offset in where.items())


def test_threads_sending_keyed_records_with_headers_get_their_own_futures(
    broker: EmbeddedBroker,
) -> None:
    """If several threads send records with keys and headers, some to a partition
    they name (the lock-free path takes those too) while batches fill and the
    linger thread appends them, then every future names the partition and offset
    that hold its own record, key and headers included, and a keyed record without
    a partition is where Kafka's partitioner puts its key."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("keyed-threads", 3)
    sent: dict[bytes, tuple[bytes, int | None, object]] = {}
    with Producer(broker.data_dir, batch_records=7, linger_ms=1) as producer:

        def sender(t: int) -> None:
            for i in range(2000):
                value, key = b"%d-%d" % (t, i), b"k%d" % (i % 50)
                partition = i % 3 if i % 4 == 0 else None
                future = producer.send(
                    "keyed-threads",
                    value,
                    key=key,
                    headers=[("thread", b"%d" % t), ("i", b"%d" % i)],
                    partition=partition,
                )
                sent[value] = (key, partition, future)

        race(sender, 4)
        producer.flush()
        where = {v: f.get(timeout=10) for v, (_, _, f) in sent.items()}  # type: ignore[attr-defined]
    stored = {
        (r.partition, r.offset): r
        for r in read_all(broker.data_dir, "keyed-threads", 3)
    }
    assert len(stored) == len(sent) == 8000
    for value, (key, partition, _) in sent.items():
        meta = where[value]
        record = stored[(meta.partition, meta.offset)]
        assert (record.value, record.key) == (value, key)
        t, i = value.split(b"-")
        assert record.headers == (("thread", t), ("i", i))
        want = partition if partition is not None else partition_for_key(key, 3)
        assert meta.partition == want, (value, key)
