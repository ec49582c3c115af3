"""Consumer groups through the API against a real supervisor: assignment, commits,
generations, liveness, incremental rebalancing, static membership. Each consumer
polls on its own thread, as each would in its own process (a join waits for every
member to rejoin, and a member rejoins from its poll)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shmbroker import (
    Admin,
    Consumer,
    EmbeddedBroker,
    Producer,
    TopicPartition,
    errors,
    protocol,
)
from shmbroker.client.assignors import Subscription
from shmbroker.client.connection import Connection
from shmbroker.client.group import encode_subscription
from tests.conftest import wait_until


class Member:
    """A Consumer polling on its own thread; what it got and owns, for the test."""

    def __init__(self, data_dir, topics, pattern=None, **config) -> None:
        self.values: list[bytes] = []
        self.assigned: set[TopicPartition] = set()
        self.revocations: list[list[TopicPartition]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._config = config
        self.consumer = Consumer(data_dir, auto_offset_reset="earliest", **config)
        self.consumer.subscribe(
            topics,
            pattern,
            on_revoke=self.revocations.append,
            on_assign=lambda tps: None,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for record in self.consumer.poll_batch(1000, 0.01):
                    self.values.append(record.value)
                self.assigned = self.consumer.assignment()
        except BaseException as exc:
            self.error = exc

    def stop(self, close: bool = True) -> None:
        self._stop.set()
        self._thread.join(10)
        if close:
            self.consumer.close()
        assert self.error is None, repr(self.error)


@contextmanager
def members(*ms: Member) -> Iterator[None]:
    try:
        yield
    finally:
        for m in ms:
            if m._thread.is_alive() or not m.consumer._closed:
                m.stop()


def produce(data_dir, topic: str, values: list[bytes]) -> None:
    with Producer(data_dir) as producer:
        for i, v in enumerate(values):
            producer.send(topic, v, partition=i % len(producer.partitions_for(topic)))


def test_a_group_splits_partitions_and_delivers_each_record_once(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 4)
    a = Member(broker.data_dir, ["t"], group_id="g", client_id="a")
    b = Member(broker.data_dir, ["t"], group_id="g", client_id="b")
    with members(a, b):
        wait_until(
            lambda: len(a.assigned) == 2 and len(b.assigned) == 2,
            10,
            "two members owning two partitions each",
        )
        assert not a.assigned & b.assigned
        values = [b"%d" % i for i in range(4000)]
        produce(broker.data_dir, "t", values)
        wait_until(lambda: len(a.values) + len(b.values) >= 4000, 20, "all records")
        assert sorted(a.values + b.values) == sorted(values)
        with Admin(broker.data_dir) as admin:
            info = admin.describe_group("g")
        assert info.state == "Stable"
        assert info.assignor == "range"
        owned = sorted(tp for m in info.members for tp in m.assignment)
        assert owned == [TopicPartition("t", p) for p in range(4)]
        b.stop()
        wait_until(lambda: len(a.assigned) == 4, 10, "a owning all after b left")


def test_two_groups_each_receive_every_record(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    a = Member(broker.data_dir, ["t"], group_id="g1")
    b = Member(broker.data_dir, ["t"], group_id="g2")
    with members(a, b):
        wait_until(lambda: a.assigned and b.assigned, 10, "both groups assigned")
        values = [b"%d" % i for i in range(1000)]
        produce(broker.data_dir, "t", values)
        wait_until(
            lambda: len(a.values) >= 1000 and len(b.values) >= 1000, 20, "records"
        )
        assert sorted(a.values) == sorted(b.values) == sorted(values)


def test_a_new_member_resumes_from_the_committed_offsets(
    broker: EmbeddedBroker,
) -> None:
    produce(broker.data_dir, "t", [b"%d" % i for i in range(100)])
    with Consumer(
        broker.data_dir,
        group_id="g",
        subscribe=["t"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    ) as consumer:
        got: list = []
        while len(got) < 30:
            got += consumer.poll_batch(30 - len(got), 5)
        consumer.commit({TopicPartition("t", 0): (30, "checkpoint 1")})
        assert consumer.committed([("t", 0)]) == {TopicPartition("t", 0): 30}
    with Admin(broker.data_dir) as admin:
        offsets = admin.list_group_offsets("g")
        assert offsets[TopicPartition("t", 0)].metadata == "checkpoint 1"
    with Consumer(broker.data_dir, group_id="g", subscribe=["t"]) as consumer:
        first = consumer.poll(5)
        assert first is not None
        assert first.offset == 30


def test_auto_commit_commits_positions_on_close(broker: EmbeddedBroker) -> None:
    produce(broker.data_dir, "t", [b"x"] * 50)
    with Consumer(
        broker.data_dir, group_id="g", subscribe=["t"], auto_offset_reset="earliest"
    ) as consumer:
        n = 0
        while n < 50:
            n += len(consumer.poll_batch(100, 5))
    with Admin(broker.data_dir) as admin:
        assert admin.list_group_offsets("g")[TopicPartition("t", 0)].offset == 50
        (row,) = admin.lag("g")
        assert (row.committed, row.log_end_offset, row.lag) == (50, 50, 0)


def raw_member(
    data_dir, group: str, topics: list[str], session_timeout_ms: int = 10_000
) -> tuple[Connection, protocol.JoinResult]:
    """...whose rebalance timeout is 1 s: a rebalance waits that long for it."""
    """A member speaking the protocol by hand: join, sync (as leader), no heartbeat."""
    connection = Connection(data_dir, client_id="raw")
    subscription = encode_subscription(Subscription(topics))
    joined = connection.request(
        protocol.JoinGroup(
            group, "", "consumer", [("range", subscription)], session_timeout_ms,
            1000, client_id="raw",
        ),
        protocol.JoinResult,
    )  # fmt: skip
    connection.request(
        protocol.SyncGroup(group, joined.generation, joined.member_id, {}),
        protocol.SyncResult,
    )
    return connection, joined


def test_a_commit_from_an_old_generation_is_refused(broker: EmbeddedBroker) -> None:
    produce(broker.data_dir, "t", [b"x"] * 10)
    # it never rejoins: after its session.timeout.ms the group goes on without it
    connection, joined = raw_member(broker.data_dir, "g", ["t"], 1000)
    with connection:
        commit = protocol.OffsetCommit(
            "g", joined.generation, joined.member_id,
            [protocol.CommittedOffset("t", 0, 5)],
        )  # fmt: skip
        connection.request(commit, protocol.Done)  # the current generation: fine
        other = Member(broker.data_dir, ["t"], group_id="g")  # a rebalance
        with members(other):
            # the raw member never rejoins: the group moves on without it
            wait_until(lambda: other.assigned, 20, "the newcomer assigned")
            with pytest.raises(errors.UnknownMemberId):
                connection.request(commit, protocol.Done)
        stale = protocol.OffsetCommit(
            "g", joined.generation - 1, joined.member_id,
            [protocol.CommittedOffset("t", 0, 7)],
        )  # fmt: skip
        with pytest.raises(errors.UnknownMemberId):  # an empty group now
            connection.request(stale, protocol.Done)


def test_commits_beyond_the_log_end_or_negative_are_refused(
    broker: EmbeddedBroker,
) -> None:
    produce(broker.data_dir, "t", [b"x"] * 10)
    with Consumer(broker.data_dir, group_id="g") as consumer:
        with pytest.raises(errors.OffsetOutOfRange, match="the log ends at 10"):
            consumer.commit({("t", 0): 11})
        with pytest.raises(errors.InvalidArgument):
            consumer.commit({("t", 0): -1})
        with pytest.raises(errors.UnknownTopic):
            consumer.commit({("nope", 0): 1})
        consumer.commit({("t", 0): 10})  # the log end itself is fine
        assert consumer.committed([("t", 0)]) == {TopicPartition("t", 0): 10}


def test_a_member_whose_connection_closes_is_gone_at_once(
    broker: EmbeddedBroker,
) -> None:
    """If a member's process dies (its control connection closes), then the group
    rebalances at once, not after session.timeout.ms (here 10 minutes)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    connection, joined = raw_member(broker.data_dir, "g", ["t"], 600_000)
    with Admin(broker.data_dir) as admin:
        assert admin.describe_group("g").members[0].member_id == joined.member_id
        connection.close()
        wait_until(
            lambda: admin.describe_group("g").state == "Empty", 5, "the group empty"
        )


def test_a_member_that_stops_heartbeating_times_out(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 1)
        connection, _ = raw_member(broker.data_dir, "g", ["t"], 300)
        with connection:  # open, but silent: a hung process
            wait_until(lambda: admin.describe_group("g").state == "Empty", 10, "expiry")
    wait_until(
        lambda: "session.timeout.ms (300)" in broker.log_path.read_text(),
        5,
        "the log naming session.timeout.ms",
    )


def test_a_consumer_that_stops_polling_leaves_the_group(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 1)
        consumer = Consumer(
            broker.data_dir,
            group_id="g",
            subscribe=["t"],
            max_poll_interval_ms=300,
            heartbeat_interval_ms=50,
        )
        with consumer:
            consumer.poll_batch(timeout=0.1)
            assert admin.describe_group("g").state == "Stable"
            wait_until(  # no poll for 300 ms: the heartbeat thread leaves
                lambda: admin.describe_group("g").state == "Empty", 10, "leaving"
            )
            consumer.poll_batch(timeout=0.1)  # polling again rejoins
            assert admin.describe_group("g").state == "Stable"


def test_cooperative_sticky_moves_only_what_must_move(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 4)
    config = {"group_id": "g", "partition_assignment_strategy": ["cooperative-sticky"]}
    a = Member(broker.data_dir, ["t"], **config)
    with members(a):
        wait_until(lambda: len(a.assigned) == 4, 10, "a owning all four")
        b = Member(broker.data_dir, ["t"], **config)
        with members(b):
            wait_until(
                lambda: len(a.assigned) == 2 and len(b.assigned) == 2, 10, "2 + 2"
            )
            # incremental: a gave up exactly the two b took, never all four
            assert [len(r) for r in a.revocations] == [2]
            assert b.revocations == []


def test_a_pattern_subscription_picks_up_new_topics_and_partitions(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("metrics.cpu", 1)
        m = Member(broker.data_dir, None, pattern=r"metrics\..*", group_id="g")
        with members(m):
            wait_until(lambda: len(m.assigned) == 1, 10, "metrics.cpu assigned")
            admin.create_topic("metrics.disk", 1)
            admin.create_topic("logs", 1)  # does not match
            wait_until(lambda: len(m.assigned) == 2, 10, "metrics.disk assigned")
            admin.create_partitions("metrics.cpu", 3)
            wait_until(lambda: len(m.assigned) == 4, 10, "new partitions assigned")
            assert {tp.topic for tp in m.assigned} == {"metrics.cpu", "metrics.disk"}


def test_a_static_member_comes_back_without_a_rebalance(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
        leader = Member(broker.data_dir, ["t"], group_id="g", client_id="leader")
        with members(leader):
            wait_until(lambda: len(leader.assigned) == 2, 10, "the leader assigned")
            static = Member(
                broker.data_dir, ["t"], group_id="g", group_instance_id="host-1"
            )
            wait_until(lambda: len(static.assigned) == 1, 10, "static assigned")
            generation = admin.describe_group("g").generation
            static.stop()  # close: a static member does not leave
            assert len(admin.describe_group("g").members) == 2
            again = Member(
                broker.data_dir, ["t"], group_id="g", group_instance_id="host-1"
            )
            with members(again):
                wait_until(lambda: len(again.assigned) == 1, 10, "back in place")
                assert admin.describe_group("g").generation == generation


def test_reset_and_delete_are_refused_while_the_group_is_live(
    broker: EmbeddedBroker,
) -> None:
    produce(broker.data_dir, "t", [b"x"] * 10)
    m = Member(broker.data_dir, ["t"], group_id="g")
    with Admin(broker.data_dir) as admin, members(m):
        wait_until(lambda: m.assigned, 10, "assigned")
        with pytest.raises(errors.GroupNotEmpty, match="live members"):
            admin.alter_group_offsets("g", {("t", 0): 0})
        with pytest.raises(errors.GroupNotEmpty):
            admin.delete_group("g")
        m.stop()
        admin.alter_group_offsets("g", {("t", 0): 3})
        assert admin.list_group_offsets("g")[TopicPartition("t", 0)].offset == 3
        admin.delete_group("g")
        with pytest.raises(errors.GroupIdNotFound):
            admin.describe_group("g")


def test_no_committed_offset_and_reset_none_is_a_clear_error(
    broker: EmbeddedBroker,
) -> None:
    produce(broker.data_dir, "t", [b"x"])
    with (
        Consumer(
            broker.data_dir, group_id="g", subscribe=["t"], auto_offset_reset="none"
        ) as consumer,
        pytest.raises(errors.OffsetOutOfRange, match=r"auto\.offset\.reset"),
    ):
        consumer.poll_batch(timeout=5)


def test_an_assignment_whose_offsets_could_not_be_fetched_is_taken_again(
    broker: EmbeddedBroker,
) -> None:
    """If the supervisor goes between the sync and the committed-offset fetch, then
    the consumer gives those partitions back and takes them at its next rejoin."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    with Consumer(broker.data_dir, group_id="g", subscribe=["t"]) as consumer:
        calls: list[list[TopicPartition]] = []
        assign = consumer._assigned_more

        def supervisor_gone_once(partitions: list[TopicPartition]) -> None:
            calls.append(partitions)
            if len(calls) == 1:
                raise errors.BrokerUnavailable("the supervisor is restarting")
            assign(partitions)

        consumer._assigned_more = supervisor_gone_once  # type: ignore[method-assign]
        wait_until(
            lambda: (
                consumer.poll_batch(timeout=0.01) == []
                and len(consumer.assignment()) == 2
            ),
            10,
            "both partitions assigned after the failed first try",
        )
        assert [len(c) for c in calls] == [2, 2]


def test_a_member_without_coordinator_warns_once_and_rejoins_when_it_is_back(
    broker, caplog
):
    """If the supervisor (the coordinator) is down, then a group member's polls
    return nothing without raising, one WARNING says so (not one a poll), and once
    the supervisor is back the member joins and reads."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("w", 1)
    consumer = Consumer(
        broker.data_dir, group_id="g", subscribe=["w"], auto_offset_reset="earliest"
    )
    try:
        broker.kill()
        with caplog.at_level(logging.INFO, logger="shmbroker.client.group"):
            for _ in range(30):
                assert consumer.poll_batch(timeout=0.01) == []
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1, caplog.text
            assert "group g: no coordinator" in warnings[0].getMessage()
            broker.start()
            with Producer(broker.data_dir) as producer:
                producer.send_batch("w", [b"back"], partition=0)
            got: list[bytes] = []
            wait_until(
                lambda: (
                    got.extend(r.value for r in consumer.poll_batch(timeout=0.05))
                    or got
                ),
                30,
                "the member to rejoin and read",
            )
            assert got == [b"back"]
            assert "group g: the coordinator is back" in caplog.text
    finally:
        consumer.close()
