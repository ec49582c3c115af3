"""The Admin client against a real supervisor: create (names, configs, validate
only), list, describe, alter configs, add partitions, delete, list offsets, and the
auto-creation of topics on their first produce."""

from __future__ import annotations

import pytest

from shmbroker import (
    Admin,
    ConfigError,
    Consumer,
    EmbeddedBroker,
    InvalidArgument,
    NewTopic,
    NoSpace,
    Producer,
    TopicExists,
    TopicPartition,
    UnknownTopic,
    shm,
)
from shmbroker.broker.supervisor import OFFSETS_DIR
from shmbroker.config import TopicConfig
from tests.conftest import SMALL_RING, wait_until


def rings(shm_prefix: str, topic_id: str) -> list[str]:
    """The /dev/shm names of a topic's rings."""
    return [n for n in shm.list_names(shm_prefix) if f".{topic_id}." in n]


def drain(consumer, idle=0.1):
    got = []
    while records := consumer.poll_batch(timeout=idle):
        got += records
    return got


def partition_dirs(broker):
    """The data directory's partition directories (not the groups' offsets)."""
    return [
        p for p in broker.data_dir.iterdir() if p.is_dir() and p.name != OFFSETS_DIR
    ]


def test_create_topics_with_partitions_and_configs(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("orders", 3, {"retention.ms": 5000})
        more = admin.create_topics(
            [NewTopic("a", 1), NewTopic("b", 2, {"segment.bytes": "1048576"})]
        )
        topics = admin.list_topics()
    assert (meta.name, meta.partitions, meta.configs["retention.ms"]) == (
        "orders",
        3,
        "5000",
    )
    assert meta.configs["segment.ms"] == str(TopicConfig().segment_ms)  # a default
    assert sorted(topics) == ["a", "b", "orders"]
    assert [m.partitions for m in more] == [1, 2]
    assert topics["b"].configs["segment.bytes"] == "1048576"
    assert topics["orders"].topic_id == meta.topic_id
    assert len(rings(shm_prefix, meta.topic_id)) == 3
    assert sorted(p.name for p in partition_dirs(broker)) == [
        "a-0",
        "b-0",
        "b-1",
        "orders-0",
        "orders-1",
        "orders-2",
    ]


def test_creating_an_existing_topic_raises_topic_exists(broker):
    with Admin(broker.data_dir) as admin:
        first = admin.create_topic("t", 2)
        with pytest.raises(TopicExists, match=r"topic 't' already exists"):
            admin.create_topic("t", 5, {"retention.ms": 1})
        with pytest.raises(TopicExists):
            admin.create_topic("t", validate_only=True)
        after = admin.list_topics()["t"]
    assert (after.topic_id, after.partitions) == (first.topic_id, 2)
    assert after.configs["retention.ms"] == str(TopicConfig().retention_ms)


ILLEGAL_NAMES = [
    ("", "must be a non-empty string"),
    (".", "'.' is not allowed"),
    ("..", "'..' is not allowed"),
    ("a/b", "contains '/': legal characters are ASCII letters, digits"),
    ("a b", "contains ' ': legal characters are ASCII letters, digits"),
    ("x" * 250, "250 characters: at most 249 allowed"),
    ("caf\u00e9", "legal characters are ASCII letters"),
]


def test_illegal_topic_names_are_refused_naming_the_rule(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        for name, rule in ILLEGAL_NAMES:
            with pytest.raises(InvalidArgument, match=rule):
                admin.create_topic(name)
        admin.create_topic("x" * 249)  # the longest legal name
        admin.create_topic("Legal-name_1.0")
        assert sorted(admin.list_topics()) == ["Legal-name_1.0", "x" * 249]
    assert sorted(p.name for p in partition_dirs(broker)) == [
        "Legal-name_1.0-0",
        "x" * 249 + "-0",
    ]


def test_a_topic_with_the_longest_legal_name_lives_and_dies_cleanly(broker, shm_prefix):
    """If a topic's name has 249 characters, then its partitions are created, used
    and deleted like any other's, and a new topic of that name starts empty."""
    name = "x" * 249
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic(name, 2)
        with Producer(broker.data_dir) as producer:
            producer.send(name, b"old", partition=1).get()
        admin.delete_topic(name)
        assert admin.list_topics() == {}
        assert [p.name for p in partition_dirs(broker)] == []
        assert rings(shm_prefix, meta.topic_id) == []
        admin.create_topic(name, 2)
        ends = admin.list_offsets({(name, 0): "latest", (name, 1): "latest"})
        assert list(ends.values()) == [0, 0], "the deleted topic's records came back"


def test_a_ring_larger_than_free_shared_memory_is_refused(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        with pytest.raises(NoSpace, match=r"/dev/shm has \d+ bytes free, a ring needs"):
            admin.create_topic("huge", 1, {"ring.bytes": 1 << 50})
        assert admin.list_topics() == {}
    assert not (broker.data_dir / "huge-0").exists()


def test_bad_configs_are_refused_naming_the_key(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        with pytest.raises(
            ConfigError, match=r"unknown topic config 'retention.hours'"
        ):
            admin.create_topic("t", 1, {"retention.hours": 1})
        with pytest.raises(
            ConfigError, match=r"retention.ms: 'soon' is not an integer"
        ):
            admin.create_topic("t", 1, {"retention.ms": "soon"})
        with pytest.raises(
            ConfigError, match=r"ring.bytes: 1000 must be a power of two"
        ):
            admin.create_topic("t", 1, {"ring.bytes": 1000})
        with pytest.raises(ConfigError, match=r"message.timestamp.type: 'Now'"):
            admin.create_topic("t", 1, {"message.timestamp.type": "Now"})
        with pytest.raises(
            InvalidArgument, match=r"partitions must be 1..10000, not 0"
        ):
            admin.create_topic("t", 0)
        assert admin.list_topics() == {}
    assert [n for n in shm.list_names(shm_prefix) if not n.endswith(".broker")] == []


def test_validate_only_checks_everything_and_creates_nothing(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("t", 4, {"retention.ms": 60_000}, validate_only=True)
        assert (meta.name, meta.partitions, meta.configs["retention.ms"]) == (
            "t",
            4,
            "60000",
        )
        with pytest.raises(ConfigError, match=r"'bogus'"):
            admin.create_topic("t", 1, {"bogus": 1}, validate_only=True)
        with pytest.raises(InvalidArgument, match=r"'a b'"):
            admin.create_topic("a b", validate_only=True)
        assert admin.list_topics() == {}
        assert rings(shm_prefix, meta.topic_id) == []
        assert not (broker.data_dir / "t-0").exists()
        real = admin.create_topic("t", 4)  # the name is still free
        assert real.partitions == 4


def test_describe_reports_offsets_ring_fill_disk_and_changed_configs(broker):
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2, {"retention.ms": 60_000})
        with Producer(broker.data_dir) as producer:
            producer.send_batch("t", [b"x" * 100] * 1000, partition=0)

        def described():
            (topic,) = admin.describe_topics(["t"])
            return topic

        wait_until(
            lambda: described().partitions[0].ring_unspilled_bytes == 0,
            10,
            "the ring to be spilled",
        )
        topic = described()
        p0, p1 = topic.partitions
        assert (topic.name, [p.partition for p in topic.partitions]) == ("t", [0, 1])
        assert (p0.log_start_offset, p0.high_watermark, p0.log_end_offset) == (
            0,
            1000,
            1000,
        )
        assert p0.ring_capacity_bytes == SMALL_RING
        assert p0.disk_bytes > 100 * 1000
        assert p0.segments == 1
        assert p0.spill_error is None
        assert (p1.high_watermark, p1.ring_unspilled_bytes) == (0, 0)
        assert p1.disk_bytes == 0
        # only what differs from the defaults (the test broker's ring.bytes does)
        assert topic.configs == {"retention.ms": "60000", "ring.bytes": str(SMALL_RING)}
        assert [t.name for t in admin.describe_topics()] == ["t"]
        with pytest.raises(UnknownTopic, match=r"'nope' does not exist"):
            admin.describe_topics(["nope"])


def test_alter_configs_sets_and_deletes_back_to_the_default(broker):
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2, {"retention.ms": 60_000})
        meta = admin.alter_configs("t", {"max.message.bytes": 1000})
        assert meta.configs["max.message.bytes"] == "1000"
        assert meta.configs["retention.ms"] == "60000"  # incremental: kept
        (described,) = admin.describe_topics(["t"])
        assert described.configs["max.message.bytes"] == "1000"
        with (
            Producer(broker.data_dir) as producer,  # a new producer obeys it
            pytest.raises(InvalidArgument, match=r"max.message.bytes \(1000\)"),
        ):
            producer.send("t", b"x" * 2000)
        meta = admin.alter_configs("t", delete=["max.message.bytes", "retention.ms"])
        assert meta.configs["max.message.bytes"] == str(TopicConfig().max_message_bytes)
        assert meta.configs["retention.ms"] == str(TopicConfig().retention_ms)
        (described,) = admin.describe_topics(["t"])
        assert described.configs == {"ring.bytes": str(SMALL_RING)}
        with Producer(broker.data_dir) as producer:
            assert producer.send("t", b"x" * 2000, partition=1).get().offset == 0


def test_alter_configs_refuses_ring_bytes_and_unknown_keys(broker):
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 1, {"retention.ms": 60_000})
        with pytest.raises(ConfigError, match=r"ring.bytes of topic 't' cannot change"):
            admin.alter_configs("t", {"ring.bytes": 1 << 16})
        with pytest.raises(ConfigError, match=r"unknown topic config 'bogus'"):
            admin.alter_configs("t", {"bogus": 1, "segment.bytes": 1 << 20})
        with pytest.raises(ConfigError, match=r"unknown topic config 'bogus'"):
            admin.alter_configs("t", delete=["bogus"])
        with pytest.raises(
            ConfigError, match=r"segment.bytes: 0 must be an integer in \[14, "
        ):
            admin.alter_configs("t", {"segment.bytes": 0})
        with pytest.raises(UnknownTopic, match=r"'nope' does not exist"):
            admin.alter_configs("nope", {"retention.ms": 1})
        (described,) = admin.describe_topics(["t"])
        assert described.configs == {  # nothing changed
            "retention.ms": "60000",
            "ring.bytes": str(SMALL_RING),
        }
        assert admin.alter_configs("t", {"ring.bytes": SMALL_RING}).configs[
            "ring.bytes"
        ] == str(SMALL_RING)  # the same size is no change


def test_create_partitions_grows_and_the_new_partitions_are_used(broker, shm_prefix):
    with Admin(broker.data_dir) as admin, Producer(broker.data_dir) as producer:
        meta = admin.create_topic("t", 2)
        producer.send("t", b"before", partition=1).get()
        grown = admin.create_partitions("t", 4)
        assert (grown.partitions, grown.topic_id) == (4, meta.topic_id)
        with pytest.raises(InvalidArgument, match=r"has 4 partitions.* not 3"):
            admin.create_partitions("t", 3)
        with pytest.raises(InvalidArgument, match=r"has 4 partitions.* not 4"):
            admin.create_partitions("t", 4)
        with pytest.raises(UnknownTopic, match=r"'nope' does not exist"):
            admin.create_partitions("nope", 4)
        assert admin.list_topics()["t"].partitions == 4
        assert len(rings(shm_prefix, meta.topic_id)) == 4
        # a producer that knew 2 partitions can send to the new ones
        assert producer.send("t", b"p3", partition=3).get().offset == 0
        with Producer(broker.data_dir) as fresh:
            assert fresh.partitions_for("t") == [0, 1, 2, 3]
            fresh.send("t", b"p2", partition=2).get()
            keyed = {
                fresh.send("t", b"k", key=b"%d" % i).get().partition for i in range(100)
            }
        assert keyed == {0, 1, 2, 3}
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("t", 1), ("t", 2), ("t", 3)])
        got = {(r.partition, r.value) for r in drain(consumer) if r.value != b"k"}
    assert got == {(1, b"before"), (2, b"p2"), (3, b"p3")}


def test_delete_removes_the_rings_files_and_name(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("t", 3)
        with Producer(broker.data_dir) as producer:
            for p in range(3):
                producer.send_batch("t", [b"x"] * 100, partition=p)
        assert len(rings(shm_prefix, meta.topic_id)) == 3
        admin.delete_topic("t")
        assert rings(shm_prefix, meta.topic_id) == []
        assert admin.list_topics() == {}
        assert [p.name for p in partition_dirs(broker)] == []
        with pytest.raises(UnknownTopic, match=r"'t' does not exist"):
            admin.delete_topic("t")
        again = admin.create_topic("t", 1)  # a new topic: new id, empty
        assert again.topic_id != meta.topic_id
        assert admin.list_offsets({("t", 0): "latest"}) == {TopicPartition("t", 0): 0}
        admin.delete_topics(["t"])
        assert admin.list_topics() == {}
    assert [n for n in shm.list_names(shm_prefix) if not n.endswith(".broker")] == []


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
        with Producer(broker.data_dir) as producer:
            for i in range(10):
                producer.send("t", b"v", partition=0, timestamp=5_000 + 100 * i)
        assert admin.list_offsets({t0: "earliest", t1: "earliest"}) == {t0: 0, t1: 0}
        assert admin.list_offsets({t0: "latest", t1: "latest"}) == {t0: 10, t1: 0}
        assert admin.list_offsets({t0: 5_250, t1: 0}) == {t0: 3, t1: None}
        assert admin.list_offsets({t0: 0}) == {t0: 0}
        assert admin.list_offsets({t0: 5_901}) == {t0: None}
        with pytest.raises(UnknownTopic, match=r"'nope' does not exist"):
            admin.list_offsets({("nope", 0): "latest"})
        with pytest.raises(UnknownTopic, match=r"partitions 0..1, not 2"):
            admin.list_offsets({("t", 2): "latest"})


def test_a_first_produce_creates_the_topic(broker):
    with Producer(broker.data_dir) as producer:
        meta = producer.send("new-topic", b"hello").get()
    assert (meta.topic, meta.partition, meta.offset) == ("new-topic", 0, 0)
    with Admin(broker.data_dir) as admin:
        topics = admin.list_topics()
    assert list(topics) == ["new-topic"]
    assert topics["new-topic"].partitions == 1  # the broker's num.partitions


def test_without_auto_creation_a_produce_to_a_missing_topic_fails(tmp_path, shm_prefix):
    with EmbeddedBroker(
        tmp_path / "no-auto",
        shm_prefix=shm_prefix,
        auto_create_topics=False,
        topic_defaults={"ring.bytes": SMALL_RING},
        remove=True,
    ) as broker:
        with (
            Producer(broker.data_dir) as producer,
            pytest.raises(
                UnknownTopic, match=r"'t' does not exist.*auto.create.topics.enable"
            ),
        ):
            producer.send("t", b"x")
        with Admin(broker.data_dir) as admin:
            assert admin.list_topics() == {}
            admin.create_topic("t")
        with Producer(broker.data_dir) as producer:
            assert producer.send("t", b"x").get().offset == 0
