"""The group coordinator, driven directly (no sockets): joins park in threads as the
control server's do, and every outcome is what a member would see."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shmbroker import EmbeddedBroker, errors, protocol
from shmbroker.broker.coordinator import GroupCoordinator
from shmbroker.broker.offsets import OffsetAndMetadata, OffsetStore
from shmbroker.client.connection import Connection
from shmbroker.kafka.consumer_protocol import Subscription, encode_subscription
from shmbroker.protocol import JoinResult
from shmbroker.records import TopicPartition
from tests.conftest import wait_until

HIGH_WATERMARK = 100


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[GroupCoordinator]:
    c = GroupCoordinator(
        OffsetStore(tmp_path / "offsets"),
        lambda tp: HIGH_WATERMARK,
        min_session_timeout_ms=50,
        max_session_timeout_ms=60_000,
    )
    yield c
    c.close()
    c.store.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def subscription(*topics: str) -> bytes:
    return encode_subscription(Subscription(list(topics)))


def join(
    c: GroupCoordinator,
    group: str = "g",
    member_id: str = "",
    *,
    protocols: tuple[str, ...] = ("range",),
    topics: tuple[str, ...] = ("t",),
    session_timeout_ms: int = 10_000,
    **kwargs: object,
) -> JoinResult:
    return c.join(
        group,
        member_id,
        protocol_type="consumer",
        protocols=[(p, subscription(*topics)) for p in protocols],
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=10_000,
        **kwargs,  # type: ignore[arg-type]
    )


def form(
    c: GroupCoordinator, pool: ThreadPoolExecutor, count: int, **kwargs: Any
) -> list[JoinResult]:
    """count members in one generation: the first joins, the others join (parked:
    a rebalance), then the first rejoins, as its heartbeat would make it."""
    first = join(c, conn_id=1, **kwargs)
    if count == 1:
        return [first]
    others = [pool.submit(join, c, conn_id=i, **kwargs) for i in range(2, count + 1)]
    wait_until(lambda: len(c.describe("g").members) == count, 5, f"{count} members")
    return [
        join(c, member_id=first.member_id, conn_id=1, **kwargs),
        *(f.result(timeout=5) for f in others),
    ]


def test_a_group_forms_with_one_leader_who_alone_sees_the_subscriptions(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor
) -> None:
    results = form(coordinator, pool, 3)
    assert len({r.generation for r in results}) == 1
    leaders = [r for r in results if r.member_id == r.leader]
    assert len(leaders) == 1
    assert {m.member_id for m in leaders[0].members} == {r.member_id for r in results}
    assert all(not r.members for r in results if r is not leaders[0])
    # the leader's sync hands each member its own assignment
    plan = {r.member_id: r.member_id.encode() for r in results}
    syncs = [
        pool.submit(coordinator.sync, "g", r.generation, r.member_id)
        for r in results
        if r is not leaders[0]
    ]
    leader = leaders[0]
    assert coordinator.sync("g", leader.generation, leader.member_id, plan) == (
        leader.member_id.encode()
    )
    others = [r for r in results if r is not leader]
    for r, sync in zip(others, syncs, strict=True):
        assert sync.result(timeout=5) == r.member_id.encode()
    assert coordinator.describe("g").state == "Stable"


def test_a_remote_member_outlives_its_connection_and_a_local_one_does_not(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor
) -> None:
    """If the control connection a member joined on closes, then a local member is
    gone at once, and a remote one (a Kafka client) stays: it lives by heartbeats."""
    first = join(coordinator, conn_id=1, remote=True)
    local = pool.submit(join, coordinator, conn_id=2)
    wait_until(lambda: len(coordinator.describe("g").members) == 2, 5, "2 members")
    join(coordinator, member_id=first.member_id, conn_id=1, remote=True)
    second = local.result(timeout=5)
    coordinator.connection_closed(1)
    coordinator.connection_closed(2)
    members = [m.member_id for m in coordinator.describe("g").members]
    assert members == [first.member_id]
    assert second.member_id not in members


def test_a_member_that_stops_heartbeating_is_removed_after_its_session_timeout(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor
) -> None:
    stays, gone = form(coordinator, pool, 2, remote=True, session_timeout_ms=300)
    coordinator.sync("g", stays.generation, stays.member_id, {})  # the leader
    coordinator.sync("g", gone.generation, gone.member_id)
    start = time.monotonic()
    # the live member heartbeats (a long poll); the quiet one does not: removed
    with pytest.raises(errors.RebalanceInProgress):
        coordinator.heartbeat("g", stays.generation, stays.member_id, wait=5.0)
    waited = time.monotonic() - start
    assert 0.25 < waited < 2, f"removed after {waited:.2f}s, session.timeout.ms 300"
    again = join(coordinator, member_id=stays.member_id, conn_id=2, remote=True)
    assert [m.member_id for m in coordinator.describe("g").members] == [stays.member_id]
    assert again.generation > stays.generation
    with pytest.raises(errors.UnknownMemberId):
        coordinator.heartbeat("g", again.generation, gone.member_id)


def test_a_first_join_that_requires_a_member_id_gets_one_to_rejoin_with(
    coordinator: GroupCoordinator,
) -> None:
    """JoinGroup v4+ (KIP-394): the first join only hands out an id; the rejoin
    with it joins; an id never handed out is refused; an unused one expires."""
    first = join(coordinator, require_member_id=True, client_id="rdkafka")
    assert first.member_id_required
    assert first.member_id.startswith("rdkafka-")
    assert first.generation == -1
    assert not coordinator.describe("g").members
    joined = join(coordinator, member_id=first.member_id, require_member_id=True)
    assert not joined.member_id_required
    assert joined.member_id == first.member_id == joined.leader
    with pytest.raises(errors.UnknownMemberId, match="no member made-up"):
        join(coordinator, member_id="made-up", require_member_id=True)
    unused = join(coordinator, require_member_id=True, session_timeout_ms=100)
    wait_until(
        lambda: unused.member_id not in coordinator._groups["g"].pending,
        5,
        "the unused member id to expire",
    )
    with pytest.raises(errors.UnknownMemberId):
        join(coordinator, member_id=unused.member_id, require_member_id=True)


def test_a_session_timeout_outside_the_brokers_bounds_is_refused_naming_them(
    coordinator: GroupCoordinator,
) -> None:
    with pytest.raises(errors.InvalidSessionTimeout, match=r"10 is outside.*\[50, "):
        join(coordinator, session_timeout_ms=10)
    with pytest.raises(errors.GroupIdNotFound):  # nothing was made of it
        coordinator.describe("g")


def test_the_protocol_is_one_every_member_names(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor
) -> None:
    """kafkajs names RoundRobinAssigner, librdkafka range and roundrobin: a group
    forms on what all name, and a member naming none of it is refused."""
    librdkafka = ("range", "roundrobin")
    a = join(coordinator, conn_id=1, protocols=librdkafka)
    assert a.protocol_name == "range"  # alone, its first choice
    b = pool.submit(
        join, coordinator, conn_id=2, protocols=("RoundRobinAssigner", "roundrobin")
    )
    wait_until(lambda: len(coordinator.describe("g").members) == 2, 5, "2 members")
    a = join(coordinator, member_id=a.member_id, conn_id=1, protocols=librdkafka)
    assert a.protocol_name == b.result(timeout=5).protocol_name == "roundrobin"
    with pytest.raises(errors.InconsistentGroupProtocol, match="RoundRobinAssigner"):
        join(coordinator, protocols=("RoundRobinAssigner",))


def test_commits_need_the_current_generation_and_are_fetched_back(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor
) -> None:
    (member,) = form(coordinator, pool, 1)
    coordinator.sync("g", member.generation, member.member_id, {})
    tp = TopicPartition("t", 0)
    coordinator.commit(
        "g", member.generation, member.member_id, {tp: OffsetAndMetadata(7)}
    )
    with pytest.raises(errors.IllegalGeneration, match="generation 0"):
        coordinator.commit("g", 0, member.member_id, {tp: OffsetAndMetadata(9)})
    with pytest.raises(errors.UnknownMemberId, match="only its live members"):
        coordinator.commit("g", -1, "", {tp: OffsetAndMetadata(9)})
    assert coordinator.fetch("g", [tp])[tp].offset == 7


def test_offsets_of_subscribed_topics_stay_and_the_rest_are_deleted(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    """Kafka's OffsetDelete: a live group keeps the offsets of topics it subscribes
    to (GROUP_SUBSCRIBED_TO_TOPIC); the others go, durably."""
    old, kept = TopicPartition("old", 0), TopicPartition("t", 0)
    offsets = {old: OffsetAndMetadata(3), kept: OffsetAndMetadata(4)}
    coordinator.commit("g", -1, "", offsets)
    (member,) = form(coordinator, pool, 1, topics=("t",))
    assert coordinator.delete_offsets("g", [old, kept]) == [kept]
    assert coordinator.fetch("g") == {kept: OffsetAndMetadata(4, "", 0)}
    coordinator.leave("g", member.member_id)
    assert coordinator.delete_offsets("g", [kept]) == []
    assert coordinator.fetch("g") == {}
    with pytest.raises(errors.GroupIdNotFound, match="no group 'nope'"):
        coordinator.delete_offsets("nope", [kept])
    coordinator.store.close()
    with OffsetStore(tmp_path / "offsets") as reopened:
        assert reopened.fetch("g") == {}


def test_a_parked_join_holds_no_other_group(
    coordinator: GroupCoordinator, pool: ThreadPoolExecutor
) -> None:
    """If a join waits for a member that does not rejoin, then another group's
    join, heartbeat and commit go on meanwhile."""
    (first,) = form(coordinator, pool, 1)
    coordinator.sync("g", first.generation, first.member_id, {})
    parked = pool.submit(join, coordinator, conn_id=9)  # waits for `first` to rejoin
    wait_until(
        lambda: coordinator.describe("g").state == "PreparingRebalance",
        5,
        "the rebalance",
    )
    other = join(coordinator, "other")
    coordinator.sync("other", other.generation, other.member_id, {})
    coordinator.heartbeat("other", other.generation, other.member_id)
    assert not parked.done()
    join(coordinator, member_id=first.member_id, conn_id=1)
    assert parked.result(timeout=5).generation == first.generation + 1


def test_the_brokers_session_timeout_bounds_come_from_its_config(
    tmp_path: Path, shm_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If `serve` runs with group.min.session.timeout.ms 6000 (Kafka's default, here
    from SHMBROKER_GROUP_MIN_SESSION_TIMEOUT_MS), then a join asking for 1000 ms is
    refused (INVALID_SESSION_TIMEOUT) naming the bound, and 6000 ms joins."""
    monkeypatch.setenv("SHMBROKER_GROUP_MIN_SESSION_TIMEOUT_MS", "6000")
    broker = EmbeddedBroker(tmp_path / "data", shm_prefix=shm_prefix, remove=True)
    broker.start()
    try:
        with Connection(broker.data_dir) as connection:

            def join(session_timeout_ms: int) -> JoinResult:
                return connection.request(
                    protocol.JoinGroup(
                        "g", "", "consumer", [("range", subscription("t"))],
                        session_timeout_ms, 10_000,
                    ),
                    JoinResult,
                )  # fmt: skip

            with pytest.raises(errors.InvalidSessionTimeout, match=r"\[6000, "):
                join(1000)
            assert join(6000).generation == 1
    finally:
        assert broker.stop() == 0
        broker.cleanup()
