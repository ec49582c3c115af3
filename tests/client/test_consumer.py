"""The Consumer against a real supervisor: iteration, seeks, positions, offsets by
time, flow control, reading older offsets than the ring holds, auto.offset.reset,
deleted topics, close."""

from __future__ import annotations

import threading
import time

import pytest

from shmbroker import (
    Admin,
    ClosedError,
    ConfigError,
    Consumer,
    EmbeddedBroker,
    InvalidArgument,
    OffsetOutOfRange,
    Producer,
    Ring,
    TopicPartition,
    UnknownTopic,
)
from tests.conftest import wait_until

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


def produce(broker, topic, values, partition=0, timestamps=None):
    with Producer(broker.data_dir) as producer:
        for i, value in enumerate(values):
            ts = None if timestamps is None else timestamps[i]
            producer.send(topic, value, partition=partition, timestamp=ts)


def values(n, start=0):
    return [b"v%d" % i for i in range(start, start + n)]


def drain(consumer, idle=0.1):
    """Every record polled until none comes for idle seconds."""
    got = []
    while records := consumer.poll_batch(timeout=idle):
        got += records
    return got


@pytest.fixture
def two_partitions(broker: EmbeddedBroker) -> EmbeddedBroker:
    """Topic t: 10 records in partition 0, 5 in partition 1."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    produce(broker, "t", values(10), partition=0)
    produce(broker, "t", values(5, 100), partition=1)
    return broker


def test_iteration_yields_every_record_and_ends_after_consumer_timeout(
    two_partitions,
):
    with Consumer(
        two_partitions.data_dir, auto_offset_reset="earliest", consumer_timeout_ms=200
    ) as consumer:
        consumer.assign([T0, T1])
        started = time.monotonic()
        records = list(consumer)
        elapsed = time.monotonic() - started
    by_partition = {
        p: [(r.offset, r.value) for r in records if r.partition == p] for p in (0, 1)
    }
    assert by_partition[0] == list(enumerate(values(10)))
    assert by_partition[1] == list(enumerate(values(5, 100)))
    assert 0.2 <= elapsed < 10, f"iteration ended after {elapsed:.3f}s"


def test_poll_returns_one_record_and_poll_batch_at_most_max_records(broker):
    produce(broker, "t", values(10))
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("t", 0)])
        first = consumer.poll(timeout=5)
        assert (first.topic, first.partition, first.offset, first.value) == (
            "t",
            0,
            0,
            b"v0",
        )
        batch = consumer.poll_batch(3, timeout=5)
        assert [r.offset for r in batch] == [1, 2, 3]
        assert [r.value for r in drain(consumer)] == values(6, 4)
        assert consumer.poll_batch(timeout=0) == []
        assert consumer.poll(timeout=0.05) is None
        assert consumer.position(("t", 0)) == 10


def test_seek_and_position_move_the_next_record_returned(two_partitions):
    with Consumer(two_partitions.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([T0])
        assert consumer.position(T0) == 0
        consumer.seek(T0, 7)
        assert consumer.position(T0) == 7
        assert [r.offset for r in drain(consumer)] == [7, 8, 9]
        consumer.seek(T0, 3)
        assert consumer.poll(timeout=5).value == b"v3"
        assert consumer.position(T0) == 4
        consumer.seek(T0, 10)  # the high watermark: the next record to come
        assert consumer.poll_batch(timeout=0) == []
        with pytest.raises(OffsetOutOfRange, match=r"valid offsets are \[0, 10\)"):
            consumer.seek(T0, 11)
        with pytest.raises(InvalidArgument, match=r"t-1 is not assigned"):
            consumer.seek(T1, 0)


def test_seek_to_beginning_and_end(two_partitions):
    with Consumer(two_partitions.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([T0, T1])
        consumer.seek_to_end()
        assert (consumer.position(T0), consumer.position(T1)) == (10, 5)
        assert consumer.poll_batch(timeout=0.05) == []
        produce(two_partitions, "t", [b"new"], partition=1)
        (record,) = consumer.poll_batch(timeout=5)
        assert (record.partition, record.offset, record.value) == (1, 5, b"new")
        consumer.seek_to_beginning(T1)
        assert (consumer.position(T0), consumer.position(T1)) == (10, 0)
        assert [r.value for r in drain(consumer)] == [*values(5, 100), b"new"]
        consumer.seek_to_beginning()
        assert consumer.position(T0) == 0


def test_offsets_for_times_finds_the_first_record_at_or_after(broker):
    stamps = [1_000 + 10 * i for i in range(10)]
    produce(broker, "t", values(10), timestamps=stamps)
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([T0])
        assert consumer.offsets_for_times({T0: 0}) == {T0: 0}
        assert consumer.offsets_for_times({T0: 1_040}) == {T0: 4}
        assert consumer.offsets_for_times({T0: 1_041}) == {T0: 5}
        assert consumer.offsets_for_times({T0: 1_090}) == {T0: 9}
        assert consumer.offsets_for_times({T0: 1_091}) == {T0: None}
        with pytest.raises(InvalidArgument, match=r"timestamp -5 < 0"):
            consumer.offsets_for_times({T0: -5})
        consumer.seek(T0, consumer.offsets_for_times({T0: 1_075})[T0])
        assert consumer.poll(timeout=5).timestamp == 1_080


def test_beginning_and_end_offsets_of_assigned_and_other_partitions(two_partitions):
    with Consumer(two_partitions.data_dir) as consumer:
        consumer.assign([T0])
        assert consumer.beginning_offsets([T0, T1]) == {T0: 0, T1: 0}
        assert consumer.end_offsets([T0, T1]) == {T0: 10, T1: 5}
        assert consumer.assignment() == {T0}
        with pytest.raises(UnknownTopic, match=r"partitions 0..1, not 2"):
            consumer.end_offsets([("t", 2)])


def test_a_paused_partition_returns_nothing_until_resumed(two_partitions):
    with Consumer(two_partitions.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([T0, T1])
        consumer.pause(T0)
        assert consumer.paused() == {T0}
        got = drain(consumer)
        assert [(r.partition, r.value) for r in got] == [(1, v) for v in values(5, 100)]
        assert consumer.position(T0) == 0
        consumer.pause(T1)
        assert consumer.poll_batch(timeout=0.05) == []
        consumer.resume(T0, T1)
        assert consumer.paused() == set()
        got = drain(consumer)
        assert [(r.partition, r.value) for r in got] == [(0, v) for v in values(10)]


def test_reads_offsets_older_than_the_ring_from_segments_then_the_ring(broker):
    """If a partition holds far more than its 64 KiB ring (100k records), then a
    consumer from offset 0 reads every record once and in order: the old ones from
    the segment files, then the new ones from the ring, and records produced while
    it reads."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("old", 1, {"ring.bytes": 1 << 16, "segment.bytes": 1 << 20})
        expected = [b"%06d" % i for i in range(100_000)]
        with Producer(broker.data_dir) as producer:
            for value in expected:
                producer.send("old", value)
        (described,) = admin.describe_topics(["old"])
    assert described.partitions[0].high_watermark == 100_000
    assert described.partitions[0].segments >= 2
    assert described.partitions[0].disk_bytes > 10 * (1 << 16)  # not in the ring
    got = []
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("old", 0)])
        while len(got) < 50_000:
            got += consumer.poll_batch(10_000, timeout=5) or pytest.fail("stalled")
        more = [b"%06d" % i for i in range(100_000, 101_000)]
        produce(broker, "old", more)
        expected += more
        while len(got) < len(expected):
            got += consumer.poll_batch(10_000, timeout=5) or pytest.fail("stalled")
        assert consumer.poll_batch(timeout=0.05) == []
    assert [r.offset for r in got] == list(range(len(expected)))
    assert [r.value for r in got] == expected


def test_records_polled_keep_their_bytes_after_later_polls_of_a_lapped_consumer(
    broker,
):
    """If a consumer is lapped again and again by producers (plain and gzip, keys,
    null values, headers), so that it reads the segment files (and the ring, when
    it gets there before the spill), then every record it polled still holds its
    own key, value and headers after all the later polls have overwritten the
    buffers they were decoded in (poll decodes where the read landed;
    tests/log/test_reader_poll.py reads each source for sure)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("lap", 1, {"ring.bytes": 1 << 16, "segment.bytes": 1 << 18})
    expected, kept, polls = [], [], 0
    with (
        Producer(broker.data_dir) as plain,
        Producer(broker.data_dir, compression_type="gzip") as gz,
        Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer,
    ):
        consumer.assign([("lap", 0)])

        def send(n):
            """n records, in runs of 50 from one producer (flushed: in order)."""
            for run in range(0, n, 50):
                producer = gz if len(expected) % 200 == 0 else plain
                for _ in range(min(50, n - run)):
                    i = len(expected)
                    key = None if i % 5 == 0 else b"k%d" % i
                    value = None if i % 11 == 3 else b"v%d-%s" % (i, b"x" * 200)
                    headers = (("i", b"%d" % i), ("none", None)) if i % 3 else ()
                    producer.send("lap", value, key, headers)
                    expected.append((key, value, headers))
                producer.flush()

        for _ in range(4):
            send(4000)  # ~900 KB: 14 rings' worth, so the consumer is lapped
            for _ in range(5):
                send(50)
                while len(kept) < len(expected):
                    kept += consumer.poll_batch(10_000, timeout=5) or pytest.fail(
                        f"stalled at {len(kept)} of {len(expected)} records"
                    )
                    polls += 1
    assert polls > 20
    assert [r.offset for r in kept] == list(range(len(expected)))
    assert [(r.key, r.value, r.headers) for r in kept] == expected
    assert {type(r.value) for r in kept} == {bytes, type(None)}


def test_auto_offset_reset_earliest_and_latest(broker):
    produce(broker, "t", values(5))
    with (
        Consumer(broker.data_dir, auto_offset_reset="earliest") as earliest,
        Consumer(broker.data_dir, auto_offset_reset="latest") as latest,
    ):
        earliest.assign([T0])
        latest.assign([T0])
        assert (earliest.position(T0), latest.position(T0)) == (0, 5)
        assert latest.poll_batch(timeout=0.05) == []
        produce(broker, "t", [b"after"])
        assert [r.value for r in latest.poll_batch(timeout=5)] == [b"after"]
        assert [r.value for r in drain(earliest)] == [*values(5), b"after"]


def test_auto_offset_reset_none_needs_a_seek_before_reading(broker):
    """If auto_offset_reset is none, then assigning works but reading a partition
    without a position raises a clear error, until seek() gives it one."""
    produce(broker, "t", values(5))
    with Consumer(broker.data_dir, auto_offset_reset="none") as consumer:
        consumer.assign([T0])
        with pytest.raises(OffsetOutOfRange, match=r"auto.offset.reset is none"):
            consumer.poll(timeout=0)
        with pytest.raises(OffsetOutOfRange, match=r"auto.offset.reset is none"):
            consumer.position(T0)
        assert consumer.end_offsets([T0]) == {T0: 5}
        consumer.seek(T0, 3)
        assert [r.offset for r in drain(consumer)] == [3, 4]


def test_a_position_deleted_by_retention_goes_by_auto_offset_reset(broker):
    """If retention deletes the records at a consumer's position (here after the
    topic's retention.bytes is lowered), then its next poll resets to the new log
    start (earliest) or the end (latest), or raises naming both (none)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("r", 1, {"segment.bytes": 1 << 16})
        with Producer(broker.data_dir) as producer:
            for i in range(20):
                producer.send_batch(
                    "r", [b"%04d" % (i * 100 + j) * 25 for j in range(100)]
                )
        consumers = {
            reset: Consumer(broker.data_dir, auto_offset_reset=reset)
            for reset in ("earliest", "latest", "none")
        }
        try:
            for consumer in consumers.values():
                consumer.assign([("r", 0)])
                consumer.seek(("r", 0), 0)
            admin.alter_configs("r", {"retention.bytes": 1 << 17})

            def log_start():  # as readers see it
                return admin.list_offsets({("r", 0): "earliest"})[("r", 0)]

            wait_until(lambda: log_start() > 0, 30, "retention to delete segments")
            start = log_start()
            assert consumers["earliest"].poll(timeout=5).offset == start
            assert consumers["latest"].poll_batch(timeout=0.05) == []
            assert consumers["latest"].position(("r", 0)) == 2000
            with pytest.raises(
                OffsetOutOfRange,
                match=rf"offset 0 .* deleted by retention: the log starts at {start}",
            ):
                consumers["none"].poll(timeout=5)
        finally:
            for consumer in consumers.values():
                consumer.close()


def test_bad_consumer_settings_name_the_setting(broker):
    with pytest.raises(ConfigError, match=r"auto.offset.reset: 'oldest'"):
        Consumer(broker.data_dir, auto_offset_reset="oldest")
    with Consumer(broker.data_dir) as consumer:
        with pytest.raises(UnknownTopic, match=r"'nope' does not exist"):
            consumer.assign([("nope", 0)])
        assert consumer.assignment() == set()
    with Admin(broker.data_dir) as admin:
        assert "nope" not in admin.list_topics(), "a consumer created a topic"


def test_deleting_a_topic_under_a_consumer_blocked_in_poll_raises_unknown_topic(
    two_partitions,
):
    with (
        Consumer(two_partitions.data_dir, auto_offset_reset="latest") as consumer,
        Admin(two_partitions.data_dir) as admin,
    ):
        consumer.assign([T0])
        deleter = threading.Thread(target=admin.delete_topic, args=("t",))
        started = time.monotonic()
        deleter.start()
        try:
            with pytest.raises(UnknownTopic):
                consumer.poll(timeout=30)
        finally:
            deleter.join()
        assert time.monotonic() - started < 10, "poll slept through the deletion"


def test_deleting_a_topic_under_a_consumer_reading_old_records_raises_unknown_topic(
    two_partitions,
):
    """If the topic goes while the consumer reads records the segments hold, then
    its next poll raises UnknownTopic (not a file error)."""
    with (
        Consumer(two_partitions.data_dir, auto_offset_reset="earliest") as consumer,
        Admin(two_partitions.data_dir) as admin,
    ):
        consumer.assign([T0, T1])
        assert consumer.poll(timeout=5) is not None
        consumer.seek_to_beginning()
        admin.delete_topic("t")

        def poll_until_error():
            for _ in range(100):  # records read ahead may come first
                consumer.poll_batch(timeout=0.01)

        with pytest.raises(UnknownTopic):
            poll_until_error()


def test_a_closed_consumer_refuses_to_poll(two_partitions):
    consumer = Consumer(two_partitions.data_dir, auto_offset_reset="earliest")
    consumer.assign([T0])
    assert consumer.poll(timeout=5).offset == 0
    consumer.close()
    consumer.close()  # twice is fine
    assert consumer.assignment() == set()
    with pytest.raises(ClosedError, match=r"closed"):
        consumer.poll(timeout=0)
    with pytest.raises(ClosedError, match=r"closed"):
        consumer.poll_batch()


# ---- poll_batch as Kafka's poll, and waiting on every partition at once -------------


def test_poll_batch_returns_records_of_every_partition_with_data(two_partitions):
    """If several partitions hold records, then one poll_batch returns them all (up to
    max_records), each partition's in offset order: the README's example."""
    with Consumer(two_partitions.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([T0, T1])
        got = consumer.poll_batch(1000, timeout=5)
        assert len(got) == 15
        assert [r.value for r in got if r.partition == 0] == values(10)
        assert [r.value for r in got if r.partition == 1] == values(5, 100)
        assert consumer.poll_batch(1000, timeout=0) == []


def test_poll_batch_rotates_so_a_busy_partition_starves_none(broker):
    """If partition 0 holds 1000 records and partitions 1 and 2 five each, then with
    max_records 100 the first call takes 100 of partition 0 and the second starts
    with partition 1: all of 1 and 2 come in the first two calls, full ones; every
    record comes once, in order per partition."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("busy", 3)
    with Producer(broker.data_dir) as producer:
        producer.send_batch("busy", values(1000), partition=0)
        producer.send_batch("busy", values(5, 100), partition=1)
        producer.send_batch("busy", values(5, 200), partition=2)
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("busy", p) for p in range(3)])
        first = consumer.poll_batch(100, timeout=5)
        second = consumer.poll_batch(100, timeout=5)
        assert [r.partition for r in first] == [0] * 100
        assert len(second) == 100
        assert [r.partition for r in second[:10]] == [1] * 5 + [2] * 5
        got = first + second + drain(consumer)
    for p, expected in ((0, values(1000)), (1, values(5, 100)), (2, values(5, 200))):
        assert [r.value for r in got if r.partition == p] == expected
        assert [r.offset for r in got if r.partition == p] == list(range(len(expected)))


def test_read_batches_rotates_over_the_partitions(broker):
    """read_batches returns one partition's batches a call, and the next call starts
    with the next partition: one with many batches does not starve another."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("raw", 2, {"ring.bytes": 1 << 20})
    with Producer(broker.data_dir) as producer:
        for i in range(40):  # 40 batches of 50 KB: more than one read's 1 MiB
            producer.send_batch("raw", [b"%05d" % i * 10_000], partition=0)
        producer.send_batch("raw", [b"one"], partition=1)
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("raw", 0), ("raw", 1)])
        partitions = [consumer.read_batches(timeout=5)[0].partition for _ in range(3)]
    assert partitions == [0, 1, 0]


def test_a_consumer_of_several_partitions_sleeps_on_all_rings_at_once(broker):
    """If a consumer of 4 partitions waits in poll, then it is registered as a waiter
    on every partition's ring at the same time (beside each spill thread), and a
    record to any of them wakes it."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("w", 4)
        rings = [
            Ring.open(admin.connection.ring_name(admin.connection.topic("w"), p))
            for p in range(4)
        ]
    try:
        with Consumer(broker.data_dir) as consumer:
            consumer.assign([("w", p) for p in range(4)])
            for p in (3, 0):
                got: list = []
                poller = threading.Thread(
                    target=lambda got=got: got.extend(consumer.poll_batch(timeout=30))
                )
                poller.start()
                try:
                    wait_until(  # each ring's spill thread, asleep, is the other
                        lambda: all(r.stat().data_waiters == 2 for r in rings),
                        10,
                        "the consumer to sleep on every ring",
                    )
                    produce(broker, "w", [b"to %d" % p], partition=p)
                finally:
                    poller.join(30)
                assert [(r.partition, r.value) for r in got] == [(p, b"to %d" % p)]
    finally:
        for ring in rings:
            ring.close()


def test_an_idle_consumer_of_several_partitions_spends_no_cpu(broker):
    """If nothing comes to its 8 partitions for 1 s, then a consumer blocked in poll
    spends under 1% of a core: it sleeps on the rings, it does not visit them."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("quiet", 8)
    with Consumer(broker.data_dir) as consumer:
        consumer.assign([("quiet", p) for p in range(8)])
        cpu = time.thread_time()
        assert consumer.poll_batch(timeout=1.0) == []
        cpu = time.thread_time() - cpu
    assert cpu < 0.010, f"{cpu * 1e3:.1f} ms of CPU in a 1 s idle poll"
