"""Partition assignors: Kafka's documented examples for range and roundrobin, and the
invariants of all three (validity, balance, stickiness, the cooperative two-phase
handover), checked over random groups with Hypothesis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmbroker.client.assignors import (
    ASSIGNORS,
    Subscription,
    assignor_for,
    cooperative_sticky_assign,
    protocol_names,
    range_assign,
    revoked,
    round_robin_assign,
)
from shmbroker.records import TopicPartition

Assignment = dict[str, list[TopicPartition]]


def tps(*names: str) -> list[TopicPartition]:
    """tps("t0p1", "t1p0") -> [TopicPartition("t0", 1), TopicPartition("t1", 0)]."""
    out = []
    for name in names:
        topic, p = name.rsplit("p", 1)
        out.append(TopicPartition(topic, int(p)))
    return out


def subs(**topics: list[str]) -> dict[str, Subscription]:
    return {member: Subscription(ts) for member, ts in topics.items()}


# --- Kafka's documented examples ------------------------------------------------------


def test_range_kafka_example_two_consumers_two_topics():
    """RangeAssignor's javadoc: C0 [t0p0, t0p1, t1p0, t1p1], C1 [t0p2, t1p2]."""
    got = range_assign(subs(C0=["t0", "t1"], C1=["t0", "t1"]), {"t0": 3, "t1": 3})
    assert got == {"C0": tps("t0p0", "t0p1", "t1p0", "t1p1"), "C1": tps("t0p2", "t1p2")}


def test_round_robin_kafka_example_two_consumers_two_topics():
    """RoundRobinAssignor's javadoc: C0 [t0p0, t0p2, t1p1], C1 [t0p1, t1p0, t1p2]."""
    got = round_robin_assign(subs(C0=["t0", "t1"], C1=["t0", "t1"]), {"t0": 3, "t1": 3})
    assert got == {"C0": tps("t0p0", "t0p2", "t1p1"), "C1": tps("t0p1", "t1p0", "t1p2")}


MIXED = subs(C0=["t0"], C1=["t0", "t1"], C2=["t0", "t1", "t2"])
MIXED_PARTITIONS = {"t0": 1, "t1": 2, "t2": 3}


def test_round_robin_kafka_example_different_subscriptions_skips_members():
    """RoundRobinAssignor's javadoc: C0 [t0p0], C1 [t1p0], C2 [t1p1, t2p0-2]."""
    assert round_robin_assign(MIXED, MIXED_PARTITIONS) == {
        "C0": tps("t0p0"),
        "C1": tps("t1p0"),
        "C2": tps("t1p1", "t2p0", "t2p1", "t2p2"),
    }


def test_range_different_subscriptions_splits_each_topic_among_its_subscribers():
    assert range_assign(MIXED, MIXED_PARTITIONS) == {
        "C0": tps("t0p0"),
        "C1": tps("t1p0"),
        "C2": tps("t1p1", "t2p0", "t2p1", "t2p2"),
    }


def test_sticky_different_subscriptions_balances_what_can_be_balanced():
    """C2 alone takes t2 (3 partitions); C1 gets both of t1 rather than C2 a fourth."""
    assert cooperative_sticky_assign(MIXED, MIXED_PARTITIONS) == {
        "C0": tps("t0p0"),
        "C1": tps("t1p0", "t1p1"),
        "C2": tps("t2p0", "t2p1", "t2p2"),
    }


def test_range_first_members_take_the_remainder():
    got = range_assign(subs(a=["t"], b=["t"], c=["t"]), {"t": 7})
    assert got == {
        "a": tps("tp0", "tp1", "tp2"),
        "b": tps("tp3", "tp4"),
        "c": tps("tp5", "tp6"),
    }


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
def test_more_members_than_partitions_leaves_some_empty(name):
    got = ASSIGNORS[name](subs(a=["t"], b=["t"], c=["t"]), {"t": 2})
    assert sorted(got) == ["a", "b", "c"]
    assert sorted(tp for v in got.values() for tp in v) == tps("tp0", "tp1")
    assert sorted(len(v) for v in got.values()) == [0, 1, 1]


def test_range_and_round_robin_give_the_extra_to_the_first_members():
    group = subs(a=["t"], b=["t"], c=["t"])
    assert range_assign(group, {"t": 2})["c"] == []
    assert round_robin_assign(group, {"t": 2})["c"] == []


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
def test_unknown_topics_and_members_without_topics_get_nothing(name):
    group = subs(a=["t", "gone"], b=["gone"], c=[])
    got = ASSIGNORS[name](group, {"t": 2})
    assert got == {"a": tps("tp0", "tp1"), "b": [], "c": []}


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
def test_no_members_no_assignment(name):
    assert ASSIGNORS[name]({}, {"t": 3}) == {}


@pytest.mark.parametrize("assign", [range_assign, round_robin_assign])
def test_static_members_sort_first_by_group_instance_id(assign):
    """Kafka's MemberInfo order: static members by group.instance.id, then the rest by
    member id; so a static member restarting under a new member id keeps its range."""
    group = {
        "a": Subscription(["t"], group_instance_id="i2"),
        "b": Subscription(["t"], group_instance_id="i1"),
        "0": Subscription(["t"]),
    }
    assert assign(group, {"t": 3}) == {
        "b": tps("tp0"),
        "a": tps("tp1"),
        "0": tps("tp2"),
    }


def test_result_does_not_depend_on_mapping_order():
    group = subs(b=["t0", "t1"], a=["t1"], c=["t0"])
    flipped = dict(reversed(group.items()))
    for assign in ASSIGNORS.values():
        assert assign(group, {"t0": 5, "t1": 4}) == assign(flipped, {"t0": 5, "t1": 4})


def test_result_does_not_depend_on_string_hashing():
    """If two processes hash strings differently (PYTHONHASHSEED), then they still
    compute the same assignment: leader and tests must agree on it."""
    script = (
        "from shmbroker.client.assignors import Subscription as S, ASSIGNORS\n"
        "from shmbroker.records import TopicPartition as T\n"
        "g = {'a': S(['x', 'y', 'z'], [T('x', 0), T('y', 3)], 2),"
        " 'b': S(['y', 'z']), 'c': S(['x', 'z'], [T('z', 1)], 1), 'd': S(['z'])}\n"
        "for name, f in sorted(ASSIGNORS.items()):\n"
        "    print(name, f(g, {'x': 5, 'y': 7, 'z': 9}))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outputs) == 1, outputs


def test_assignors_have_kafkas_names():
    kafka = {
        "range": range_assign,
        "roundrobin": round_robin_assign,
        "cooperative-sticky": cooperative_sticky_assign,
    }
    assert kafka == ASSIGNORS


def test_members_also_offer_other_clients_names_for_the_same_assignor():
    """A member offers kafkajs's name for roundrobin after Kafka's (so it can share a
    group with kafkajs members, which offer only theirs), and a group on that protocol
    is assigned by roundrobin; the assignors keep Kafka's names only."""
    assert protocol_names(["range", "roundrobin"]) == [
        "range", "roundrobin", "RoundRobinAssigner",
    ]  # fmt: skip
    assert protocol_names(["cooperative-sticky"]) == ["cooperative-sticky"]
    assert assignor_for("RoundRobinAssigner") is round_robin_assign
    assert assignor_for("range") is range_assign
    assert "RoundRobinAssigner" not in ASSIGNORS


# --- cooperative-sticky: stickiness and the two-phase handover ------------------------

T12 = {"t": 12}
THREE_OWNERS = {
    "A": tps("tp0", "tp5", "tp7", "tp11"),
    "B": tps("tp1", "tp2", "tp9", "tp10"),
    "C": tps("tp3", "tp4", "tp6", "tp8"),
}


def test_sticky_keeps_a_balanced_ownership_as_it_is():
    """If membership is unchanged and ownership balanced, then nothing moves, however
    unlike a fresh assignment the ownership looks."""
    group = {
        m: Subscription(["t"], owned, generation=4) for m, owned in THREE_OWNERS.items()
    }
    assert cooperative_sticky_assign(group, T12) == THREE_OWNERS


def test_joiner_gets_partitions_only_in_the_rebalance_after_the_revocation():
    """3 members own 4 of 12 each; D joins. Round 1 revokes one from each and gives D
    nothing (the 3 are owned until revoked); round 2 gives D those 3 and takes nothing
    from anyone else."""
    group = {
        m: Subscription(["t"], owned, generation=4) for m, owned in THREE_OWNERS.items()
    }
    group["D"] = Subscription(["t"])

    first = cooperative_sticky_assign(group, T12)
    lost = {m: revoked(group[m], first[m]) for m in group}
    assert sum(len(v) for v in lost.values()) == 3
    assert [len(lost[m]) for m in "ABC"] == [1, 1, 1]
    assert first["D"] == []
    for m in "ABC":
        assert set(first[m]) <= set(THREE_OWNERS[m])

    second_group = {m: Subscription(["t"], first[m], generation=5) for m in group}
    second = cooperative_sticky_assign(second_group, T12)
    assert sorted(second["D"]) == sorted(tp for v in lost.values() for tp in v)
    for m in "ABC":
        assert second[m] == first[m]
        assert revoked(second_group[m], second[m]) == []


def test_leaver_partitions_go_out_at_once():
    """Nobody owns a departed member's partitions, so they are assigned in one round."""
    group = {m: Subscription(["t"], THREE_OWNERS[m], generation=4) for m in "AB"}
    got = cooperative_sticky_assign(group, T12)
    assert sorted(len(v) for v in got.values()) == [6, 6]
    for m in "AB":
        assert set(THREE_OWNERS[m]) <= set(got[m])


def test_higher_generation_keeps_a_doubly_claimed_partition():
    group = {
        "A": Subscription(["t"], tps("tp0", "tp1"), generation=7),
        "B": Subscription(["t"], tps("tp0", "tp2"), generation=6),
    }
    got = cooperative_sticky_assign(group, {"t": 4})
    assert TopicPartition("t", 0) in got["A"]
    assert revoked(group["B"], got["B"]) == tps("tp0")
    assert TopicPartition("t", 2) in got["B"]


def test_claims_of_the_same_generation_cancel_for_one_round():
    """Two members of one generation both claiming a partition: neither keeps it, and it
    is given to no one until both have revoked it."""
    group = {
        "A": Subscription(["t"], tps("tp0", "tp1"), generation=7),
        "B": Subscription(["t"], tps("tp0", "tp2"), generation=7),
    }
    first = cooperative_sticky_assign(group, {"t": 4})
    assert all(TopicPartition("t", 0) not in v for v in first.values())
    assert revoked(group["A"], first["A"]) == tps("tp0")
    assert revoked(group["B"], first["B"]) == tps("tp0")

    again = {m: Subscription(["t"], first[m], generation=8) for m in group}
    second = cooperative_sticky_assign(again, {"t": 4})
    assert sorted(tp for v in second.values() for tp in v) == tps(
        "tp0", "tp1", "tp2", "tp3"
    )


def test_partitions_of_an_unsubscribed_topic_wait_for_the_revocation():
    """A drops t1 from its subscription: B, subscribed to t1, gets t1p0 only once A has
    revoked it."""
    group = {
        "A": Subscription(["t0"], tps("t0p0", "t1p0"), generation=3),
        "B": Subscription(["t0", "t1"], tps("t0p1"), generation=3),
    }
    first = cooperative_sticky_assign(group, {"t0": 2, "t1": 1})
    assert first == {"A": tps("t0p0"), "B": tps("t0p1")}
    assert revoked(group["A"], first["A"]) == tps("t1p0")

    again = {m: Subscription(group[m].topics, first[m], generation=4) for m in group}
    second = cooperative_sticky_assign(again, {"t0": 2, "t1": 1})
    assert second == {"A": tps("t0p0"), "B": tps("t0p1", "t1p0")}


def test_claims_on_deleted_partitions_are_revoked_and_never_assigned():
    group = {"A": Subscription(["t"], tps("tp0", "tp5", "gonep0"), generation=2)}
    got = cooperative_sticky_assign(group, {"t": 2})
    assert got == {"A": tps("tp0", "tp1")}
    assert revoked(group["A"], got["A"]) == tps("gonep0", "tp5")


def test_subscription_round_trips_through_msgpack():
    sub = Subscription(
        ["t"], tps("tp1"), generation=3, user_data=b"\x00", group_instance_id="i"
    )
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(sub), type=Subscription)
    assert decoded == sub
    assert decoded.owned == [TopicPartition("t", 1)]


def test_revoked_is_owned_minus_assigned_sorted():
    sub = Subscription(["t"], tps("tp3", "tp1", "tp2"))
    assert revoked(sub, tps("tp2")) == tps("tp1", "tp3")
    assert revoked(Subscription(["t"]), tps("tp0")) == []


# --- random groups --------------------------------------------------------------------


@st.composite
def groups(draw: st.DrawFn) -> tuple[dict[str, Subscription], dict[str, int]]:
    """1-10 members, 1-4 topics of 1-16 partitions; random subscriptions (sometimes to
    a topic that doesn't exist), random previous owners (mostly one, sometimes two
    claimants) and generations, sometimes a group.instance.id."""
    partitions = {
        f"t{i}": draw(st.integers(1, 16)) for i in range(draw(st.integers(1, 4)))
    }
    members = draw(
        st.lists(
            st.text("abcxyz", min_size=1, max_size=3),
            min_size=1,
            max_size=10,
            unique=True,
        )
    )
    topic_names = [*sorted(partitions), "unknown"]
    all_tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
    owned: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for tp in all_tps:
        owner = draw(st.sampled_from([None, *members]))
        if owner is not None:
            owned[owner].append(tp)
        if draw(st.integers(0, 15)) == 0:  # now and then a second, conflicting claim
            owned[draw(st.sampled_from(members))].append(tp)
    group = {}
    for m in members:
        group[m] = Subscription(
            topics=draw(
                st.lists(st.sampled_from(topic_names), max_size=5, unique=True)
            ),
            owned=sorted(set(owned[m])),
            generation=draw(st.integers(-1, 3)),
            group_instance_id=draw(st.none() | st.sampled_from(["s1", "s2", "s3"])),
        )
    return group, partitions


def check_valid(
    group: Mapping[str, Subscription], partitions: Mapping[str, int], got: Assignment
) -> None:
    """Every member listed, sorted; every partition exists, is subscribed by its
    member, and is assigned at most once."""
    assert set(got) == set(group)
    for member, assigned in got.items():
        assert assigned == sorted(assigned)
        for tp in assigned:
            assert 0 <= tp.partition < partitions[tp.topic]
            assert tp.topic in group[member].topics
    counts = Counter(tp for assigned in got.values() for tp in assigned)
    assert all(n == 1 for n in counts.values()), counts


def subscribed_partitions(
    group: Mapping[str, Subscription], partitions: Mapping[str, int]
) -> list[TopicPartition]:
    topics = {t for s in group.values() for t in s.topics if t in partitions}
    return [TopicPartition(t, p) for t in sorted(topics) for p in range(partitions[t])]


def check_complete(
    group: Mapping[str, Subscription], partitions: Mapping[str, int], got: Assignment
) -> None:
    assigned = sorted(tp for v in got.values() for tp in v)
    assert assigned == subscribed_partitions(group, partitions)


def check_cooperative(group: Mapping[str, Subscription], got: Assignment) -> None:
    """No member gets a partition that another member owns and must revoke in this
    same round; the only shared claim one may keep is a strictly newer-generation one
    over claimants subscribed to the topic."""
    for member, assigned in got.items():
        for tp in assigned:
            others = [o for o in group if o != member and tp in group[o].owned]
            if not others:
                continue
            assert tp in group[member].owned, (member, tp, others)
            rivals = [o for o in others if tp.topic in group[o].topics]
            mine = group[member].generation
            assert all(group[o].generation < mine for o in rivals), (member, tp)


def check_balanced(
    group: Mapping[str, Subscription], partitions: Mapping[str, int], got: Assignment
) -> None:
    """Members with the same (existing) topics differ by at most one partition."""
    by_topics: dict[frozenset[str], list[int]] = {}
    for member, sub in group.items():
        key = frozenset(t for t in sub.topics if t in partitions)
        by_topics.setdefault(key, []).append(len(got[member]))
    for counts in by_topics.values():
        assert max(counts) - min(counts) <= 1, by_topics


def next_round(
    group: Mapping[str, Subscription], got: Assignment
) -> dict[str, Subscription]:
    """The group after all revoked what they lost and rejoined: owned = assignment."""
    return {
        m: Subscription(
            s.topics, got[m], s.generation + 10, s.user_data, s.group_instance_id
        )
        for m, s in group.items()
    }


@pytest.mark.parametrize("assign", [range_assign, round_robin_assign])
@settings(max_examples=300)
@given(case=groups())
def test_eager_assignors_assign_every_subscribed_partition_once(assign, case):
    group, partitions = case
    got = assign(group, partitions)
    check_valid(group, partitions, got)
    check_complete(group, partitions, got)


@settings(max_examples=500)
@given(case=groups())
def test_cooperative_sticky_two_rounds_balance_and_then_hold_still(case):
    """Round 1 from arbitrary ownership is valid and hands over nothing still owned
    elsewhere; round 2 (owned = round 1) completes a balanced assignment without
    revoking anything; round 3 changes nothing."""
    group, partitions = case
    first = cooperative_sticky_assign(group, partitions)
    check_valid(group, partitions, first)
    check_cooperative(group, first)

    second_group = next_round(group, first)
    second = cooperative_sticky_assign(second_group, partitions)
    check_valid(second_group, partitions, second)
    check_cooperative(second_group, second)
    check_complete(second_group, partitions, second)
    check_balanced(second_group, partitions, second)
    assert all(revoked(second_group[m], second[m]) == [] for m in group)

    third_group = next_round(second_group, second)
    assert cooperative_sticky_assign(third_group, partitions) == second


@settings(max_examples=300)
@given(case=groups())
def test_cooperative_sticky_keeps_what_survives_the_first_round(case):
    """What a member kept in round 1 it still has after round 2: the second round only
    places the partitions the first one took out."""
    group, partitions = case
    first = cooperative_sticky_assign(group, partitions)
    second = cooperative_sticky_assign(next_round(group, first), partitions)
    for member, assigned in first.items():
        assert set(assigned) <= set(second[member])
