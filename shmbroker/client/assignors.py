"""Consumer partition assignors of Kafka's classic group protocol: the group leader maps
each member's subscription and the topics' partition counts to an assignment. Pure
functions with no I/O and no state between calls; the result depends only on the inputs
(never on mapping order), lists every member, and sorts each member's partitions.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping

from shmbroker.kafka.consumer_protocol import Subscription
from shmbroker.records import TopicPartition

__all__ = [
    "ASSIGNORS",
    "Assignor",
    "Subscription",
    "assignor_for",
    "cooperative_sticky_assign",
    "protocol_names",
    "range_assign",
    "revoked",
    "round_robin_assign",
]


Assignment = dict[str, list[TopicPartition]]
Assignor = Callable[[Mapping[str, Subscription], Mapping[str, int]], Assignment]


def range_assign(
    subscriptions: Mapping[str, Subscription], partitions: Mapping[str, int]
) -> Assignment:
    """Kafka's "range": topic by topic, its subscribers in Kafka's member order each get
    a contiguous run of partitions, the first (partitions % subscribers) one extra.

    Topics are independent, so with several topics the first members get more in total
    (2 members, 2 topics of 3 partitions: 4 and 2), and topics of equal partition
    count and subscribers put partition i on one member (what co-partitioned joins
    need)."""
    result: dict[str, list[TopicPartition]] = {m: [] for m in subscriptions}
    subscribers: dict[str, list[str]] = defaultdict(list)
    for member in _kafka_order(subscriptions):
        for topic in dict.fromkeys(subscriptions[member].topics):
            subscribers[topic].append(member)
    for topic, members in subscribers.items():
        count = partitions.get(topic, 0)
        if count <= 0:
            continue
        each, extra = divmod(count, len(members))
        start = 0
        for i, member in enumerate(members):
            end = start + each + (i < extra)
            result[member].extend(TopicPartition(topic, p) for p in range(start, end))
            start = end
    return {m: sorted(tps) for m, tps in result.items()}


def round_robin_assign(
    subscriptions: Mapping[str, Subscription], partitions: Mapping[str, int]
) -> Assignment:
    """Kafka's "roundrobin": every partition of every subscribed topic, sorted, dealt
    in turn to the members in Kafka's member order, skipping a member not subscribed to
    the partition's topic. Balanced within one when all subscriptions are equal, and
    possibly far from it when they differ (Kafka documents the same)."""
    result: dict[str, list[TopicPartition]] = {m: [] for m in subscriptions}
    order = _kafka_order(subscriptions)
    topics_of = {m: set(subscriptions[m].topics) for m in order}
    topics = sorted({t for ts in topics_of.values() for t in ts})
    turn = 0
    for topic in topics:
        for p in range(partitions.get(topic, 0)):
            # ends within one lap: the topic came from some member's subscription
            while topic not in topics_of[order[turn % len(order)]]:
                turn += 1
            result[order[turn % len(order)]].append(TopicPartition(topic, p))
            turn += 1
    return {m: sorted(tps) for m, tps in result.items()}


def cooperative_sticky_assign(
    subscriptions: Mapping[str, Subscription], partitions: Mapping[str, int]
) -> Assignment:
    """Kafka's "cooperative-sticky": balanced, moves an owned partition only when
    balance needs it, and never hands a member a partition another member still owns.

    Balanced: the counts have the least sum of squares the subscriptions allow, so
    members with the same subscriptions differ by at most one, and with different ones
    no partition (nor chain of them) could go from a member to one with two fewer.
    Sticky: a member keeps what it owns unless balance needs it elsewhere; when
    membership and subscriptions are unchanged and ownership is balanced, nothing
    moves. A partition claimed by several members stays with the claimant of the
    highest generation; a tie at the top leaves it to none of them.

    Cooperative, in two rebalances: a partition that must move from member A to member
    B is NOT given to B in this assignment; it is left out of everyone's list. A sees
    it in `revoked(...)`, stops consuming and commits, then rejoins; the group's next
    rebalance finds it owned by no one and gives it to B. So no two members consume a
    partition at once, and members that lose nothing keep consuming throughout.

    Differs from Kafka: which partitions go where (the invariants are Kafka's; its
    general-case balancing is a heuristic, ours reaches the optimum); a claim from a
    member below the group's highest generation still counts when no newer member
    contests it (Kafka's equal-subscriptions path drops all such claims); the
    generation is a field, not read from user_data; no rack awareness.
    """
    members = sorted(subscriptions)
    topics_of = {
        m: frozenset(t for t in subscriptions[m].topics if partitions.get(t, 0) > 0)
        for m in members
    }
    claimants = _claimants(subscriptions, partitions)
    kept = _keepers(subscriptions, topics_of, claimants)
    target = _Balancer(members, topics_of, partitions, kept).assign()

    def may_have(member: str, tp: TopicPartition) -> bool:
        # no one else owns it, or it stays where its winning claimant already has it
        return kept.get(tp) == member or not claimants.get(tp, set()) - {member}

    return {m: sorted(tp for tp in target[m] if may_have(m, tp)) for m in members}


def revoked(
    subscription: Subscription, assignment: Iterable[TopicPartition]
) -> list[TopicPartition]:
    """What the member owned and must give up: owned, but not in its new assignment."""
    assigned = set(assignment)
    return sorted({TopicPartition(*tp) for tp in subscription.owned} - assigned)


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assign,
    "roundrobin": round_robin_assign,
    "cooperative-sticky": cooperative_sticky_assign,
}

# Other clients' names for Kafka's assignors: the same assignment in Kafka's
# ConsumerProtocol bytes, under the client's own protocol name. A group's protocol must
# be one every member names (issue 11), so a member offers these after Kafka's name:
# kafkajs offers only its "RoundRobinAssigner" (kafkajs/src/consumer/assigners).
# They are protocol names, not assignors: partition.assignment.strategy takes Kafka's.
CLIENT_NAMES: dict[str, tuple[str, ...]] = {"roundrobin": ("RoundRobinAssigner",)}


def protocol_names(assignors: Iterable[str]) -> list[str]:
    """The protocols a member offers for its assignors (Kafka's names), in its order
    of preference: each assignor's name, then other clients' names for it."""
    return [name for a in assignors for name in (a, *CLIENT_NAMES.get(a, ()))]


def assignor_for(protocol: str) -> Assignor:
    """The assignor of a group's protocol, named by Kafka or by another client."""
    kafka_name = next(
        (kafka for kafka, names in CLIENT_NAMES.items() if protocol in names), protocol
    )
    return ASSIGNORS[kafka_name]


def _kafka_order(subscriptions: Mapping[str, Subscription]) -> list[str]:
    """Kafka's MemberInfo order: static members first, by group.instance.id, then
    dynamic members by member id. Static members so keep their partitions across a
    restart, which gives them a new member id."""

    def key(member: str) -> tuple[bool, str, str]:
        instance_id = subscriptions[member].group_instance_id
        if instance_id is None:
            return (True, member, member)
        return (False, instance_id, member)

    return sorted(subscriptions, key=key)


def _claimants(
    subscriptions: Mapping[str, Subscription], partitions: Mapping[str, int]
) -> dict[TopicPartition, set[str]]:
    """Every existing partition some member says it owns -> the members saying so,
    subscribed to its topic or not: until they revoke it, they may be consuming it."""
    claimants: dict[TopicPartition, set[str]] = defaultdict(set)
    for member, subscription in subscriptions.items():
        for topic, p in subscription.owned:
            if 0 <= p < partitions.get(topic, 0):
                claimants[TopicPartition(topic, p)].add(member)
    return claimants


def _keepers(
    subscriptions: Mapping[str, Subscription],
    topics_of: Mapping[str, frozenset[str]],
    claimants: Mapping[TopicPartition, set[str]],
) -> dict[TopicPartition, str]:
    """Partition -> the claimant that may keep it: subscribed to its topic and of a
    generation higher than every other subscribed claimant's. An equal top generation
    means two members consumed it at once; trusting neither, Kafka drops both claims."""
    kept: dict[TopicPartition, str] = {}
    for tp, members in claimants.items():
        eligible = [m for m in members if tp.topic in topics_of[m]]
        if not eligible:
            continue
        top = max(subscriptions[m].generation for m in eligible)
        winners = [m for m in eligible if subscriptions[m].generation == top]
        if len(winners) == 1:
            kept[tp] = winners[0]
    return kept


class _Balancer:
    """The target assignment, before the cooperative step takes out moved partitions.

    Each member keeps what it may keep; the rest are dealt, those with the fewest
    possible takers first, each to its least loaded subscriber. Then, while some
    member x has at least two more than some member a and a chain x -> ... -> a
    exists (each one handing a partition to the next, who subscribes to its topic),
    shift one partition along it: x loses one, a gains one, the middle stays. Each
    shift lowers the sum of squared counts, so this ends; it ends with no such chain,
    which (convex min-cost flow) is the least sum of squares any assignment reaches,
    so two members with equal subscriptions differ by at most one.

    Sticky: chains that move only partitions away from their keeper cost nothing,
    and are taken before any chain that takes a partition from its keeper (fewest
    such first). That is also why the cooperative second round revokes nothing: the
    partitions the first round left out can reach that same least sum of squares on
    their own, so no chain there needs an owned partition.
    """

    def __init__(
        self,
        members: list[str],
        topics_of: Mapping[str, frozenset[str]],
        partitions: Mapping[str, int],
        kept: Mapping[TopicPartition, str],
    ) -> None:
        self.members = members
        self.topics_of = topics_of
        self.sorted_topics = {m: sorted(topics_of[m]) for m in members}
        self.partitions = partitions
        self.kept = kept
        self.held: dict[str, set[TopicPartition]] = {m: set() for m in members}
        # per member and topic: partitions held, and those of them at their keeper
        self.n_held: dict[str, Counter[str]] = {m: Counter() for m in members}
        self.n_home: dict[str, Counter[str]] = {m: Counter() for m in members}
        for tp, member in kept.items():
            self._add(tp, member)

    def assign(self) -> dict[str, set[TopicPartition]]:
        self._deal()
        while True:
            chain = self._find_chain(max_cost=0) or self._find_chain(max_cost=_FAR)
            if chain is None:
                return self.held
            for giver, taker in itertools.pairwise(chain):
                tp = self._pick(giver, taker)
                self._remove(tp, giver)
                self._add(tp, taker)

    def _add(self, tp: TopicPartition, member: str) -> None:
        self.held[member].add(tp)
        self.n_held[member][tp.topic] += 1
        if self.kept.get(tp) == member:
            self.n_home[member][tp.topic] += 1

    def _remove(self, tp: TopicPartition, member: str) -> None:
        self.held[member].remove(tp)
        self.n_held[member][tp.topic] -= 1
        if self.kept.get(tp) == member:
            self.n_home[member][tp.topic] -= 1

    def _deal(self) -> None:
        takers: dict[str, list[str]] = defaultdict(list)
        for member in self.members:
            for topic in self.topics_of[member]:
                takers[topic].append(member)
        unplaced = [
            TopicPartition(topic, p)
            for topic in takers
            for p in range(self.partitions[topic])
            if TopicPartition(topic, p) not in self.kept
        ]
        unplaced.sort(key=lambda tp: (len(takers[tp.topic]), tp))
        for tp in unplaced:
            self._add(tp, min(takers[tp.topic], key=lambda m: (len(self.held[m]), m)))

    def _find_chain(self, max_cost: int) -> list[str] | None:
        """Members giver -> ... -> taker along which one shift lowers the imbalance,
        costing at most max_cost partitions taken from their keepers; the emptiest
        taker first, then the cheapest chain, then the fullest giver."""
        count = {m: len(self.held[m]) for m in self.members}
        fullest = max(count.values(), default=0)
        holders: dict[str, list[str]] = defaultdict(list)
        for member in self.members:
            for topic, n in self.n_held[member].items():
                if n:
                    holders[topic].append(member)
        # every member that can reach a taker has at most one more than the taker,
        # and so at most one more than anyone it can reach: skip those
        settled: set[str] = set()
        for taker in sorted(self.members, key=lambda m: (count[m], m)):
            if count[taker] + 2 > fullest:
                return None
            if taker in settled or not self.topics_of[taker]:
                continue
            cost, gives_to = self._chains_into(taker, holders, max_cost)
            givers = [m for m in cost if count[m] >= count[taker] + 2]
            if givers:
                giver = min(givers, key=lambda m: (cost[m], -count[m], m))
                chain = [giver]
                while chain[-1] != taker:
                    chain.append(gives_to[chain[-1]])
                return chain
            settled.update(cost)
        return None

    def _chains_into(
        self, taker: str, holders: Mapping[str, list[str]], max_cost: int
    ) -> tuple[dict[str, int], dict[str, str]]:
        """0-1 breadth-first search backwards from taker: every member that can reach
        it -> the fewest partitions taken from their keepers on the way, and the next
        member on that cheapest chain. A step's cost depends only on the giver and the
        topic, so each topic is expanded once, from the first (cheapest) member that
        takes it: O(members x topics) a search."""
        cost = {taker: 0}
        gives_to: dict[str, str] = {}
        queue = deque([taker])
        done: set[str] = set()
        expanded: set[str] = set()
        while queue:
            member = queue.popleft()
            if member in done:
                continue
            done.add(member)
            for topic in self.sorted_topics[member]:  # sorted: set order varies by run
                if topic in expanded:
                    continue
                expanded.add(topic)
                for giver in holders.get(topic, ()):
                    away = self.n_held[giver][topic] > self.n_home[giver][topic]
                    step = 0 if away else 1
                    if step > max_cost or cost[member] + step >= cost.get(giver, _FAR):
                        continue
                    cost[giver] = cost[member] + step
                    gives_to[giver] = member
                    if away:
                        queue.appendleft(giver)
                    else:
                        queue.append(giver)
        return cost, gives_to

    def _pick(self, giver: str, taker: str) -> TopicPartition:
        """The partition to hand on: one away from its keeper if the giver has one,
        best one going back to its keeper (the taker); else the giver's own."""
        topics = self.topics_of[taker]
        return max(
            (tp for tp in self.held[giver] if tp.topic in topics),
            key=lambda tp: (self.kept.get(tp) != giver, self.kept.get(tp) == taker, tp),
        )


_FAR = 1 << 30  # a cost no chain reaches
