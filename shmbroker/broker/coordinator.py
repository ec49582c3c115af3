"""The group coordinator: Kafka's classic consumer-group protocol, independent of the
transport (the control socket today, the Kafka gateway later call the same methods).

A group moves Empty -> PreparingRebalance -> CompletingRebalance -> Stable (and back
to PreparingRebalance when members come, go or change what they subscribe to):
- join: every member (re)joins; when all known members have, or the rebalance
  timeout passes (the missing ones are removed), the generation goes up, a protocol
  (assignor) every member supports is chosen, and one member becomes the leader: it
  alone receives the members' subscriptions.
- sync: the leader sends every member's assignment (computed client-side, as Kafka's
  clients do); each member receives its own. The group is Stable.
- heartbeat: tells a member to rejoin when a rebalance starts. It may wait (a long
  poll), so members learn of a rebalance at once instead of at their next interval.
- liveness: a local member whose control connection closes is gone at once (its
  process died); a remote one (a Kafka client through the gateway, whose control
  connection is the gateway's) lives by heartbeats alone, as in Kafka; any member
  that stops heartbeating goes after session.timeout.ms.
- member ids: a JoinGroup v4+ client first gets one to rejoin with (KIP-394's
  MEMBER_ID_REQUIRED); the id waits session.timeout.ms for that rejoin.
- commits are accepted only from members of the current generation (or, for a group
  without members, from anyone), so two consumers never both own a partition.

Methods block the calling thread (one per connection) and raise GroupError subclasses
named after Kafka's error codes.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

from shmbroker import errors
from shmbroker.broker.offsets import OffsetAndMetadata, OffsetStore
from shmbroker.kafka.consumer_protocol import PROTOCOL_TYPE, decode_subscription
from shmbroker.protocol import (
    GroupDescription,
    GroupListing,
    JoinResult,
    MemberDescription,
    MemberMetadata,
)
from shmbroker.records import TopicPartition

log = logging.getLogger(__name__)

REAPER_INTERVAL = 0.05  # seconds between session-timeout and rebalance-timeout checks
MIN_SESSION_TIMEOUT_MS = 100  # the config's defaults (group.min/max.session...)
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


class _Member:
    def __init__(
        self,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        conn_id: int,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocols: list[tuple[str, bytes]],
        remote: bool,
    ) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.conn_id = conn_id
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.protocols = protocols
        self.remote = remote  # lives by heartbeats only, not by conn_id
        self.assignment = b""
        self.joined = False  # has (re)joined in the rebalance under way
        self.join_result: JoinResult | None = None
        self.last_heartbeat = time.monotonic()

    def metadata(self, protocol: str) -> bytes:
        """Its subscription for protocol; b"" if it does not name it (it joined
        during a rebalance that may move the group to another protocol)."""
        return next((m for name, m in self.protocols if name == protocol), b"")


class _Group:
    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.generation = 0
        self.protocol_type = ""
        self.protocol_name = ""
        self.leader = ""
        self.members: dict[str, _Member] = {}
        self.static: dict[str, str] = {}  # group.instance.id -> member id
        # member ids given out (MEMBER_ID_REQUIRED) -> when they expire unused
        self.pending: dict[str, float] = {}
        self.rebalance_deadline = 0.0

    def candidates(self) -> set[str]:
        """Protocols every member supports."""
        sets = [{name for name, _ in m.protocols} for m in self.members.values()]
        return set.intersection(*sets) if sets else set()


class GroupCoordinator:
    """Every group of one broker. Thread-safe; `close()` stops its reaper thread."""

    def __init__(
        self,
        store: OffsetStore,
        high_watermark: Callable[[TopicPartition], int],
        *,
        min_session_timeout_ms: int = MIN_SESSION_TIMEOUT_MS,
        max_session_timeout_ms: int = MAX_SESSION_TIMEOUT_MS,
    ) -> None:
        """high_watermark raises UnknownTopic for a partition that does not exist."""
        self.store = store
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self._high_watermark = high_watermark
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._reaper = threading.Thread(
            target=self._reap_loop, name="group-reaper", daemon=True
        )
        self._reaper.start()

    # ---- membership -----------------------------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str,
        *,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        group_instance_id: str | None = None,
        client_id: str = "",
        client_host: str = "",
        conn_id: int = 0,
        remote: bool = False,
        require_member_id: bool = False,
    ) -> JoinResult:
        """Join (or rejoin) and wait for the join phase to end. remote: the member
        lives by heartbeats, not by conn_id. require_member_id: a first join (no
        member id, not static) only gets an id to rejoin with (member_id_required)."""
        _check_group_id(group_id)
        if not protocols:
            raise errors.InconsistentGroupProtocol("a join needs at least one protocol")
        low, high = self.min_session_timeout_ms, self.max_session_timeout_ms
        if not low <= session_timeout_ms <= high:
            raise errors.InvalidSessionTimeout(
                f"group {group_id!r}: session.timeout.ms {session_timeout_ms} is "
                f"outside the broker's [{low}, {high}] (group.min.session.timeout.ms, "
                f"group.max.session.timeout.ms)"
            )
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                group = self._groups[group_id] = _Group(group_id)
            if group.members and protocol_type != group.protocol_type:
                raise errors.InconsistentGroupProtocol(
                    f"group {group_id!r} uses protocol type {group.protocol_type!r}, "
                    f"not {protocol_type!r}"
                )
            names = {name for name, _ in protocols}
            if group.members and not names & group.candidates():
                raise errors.InconsistentGroupProtocol(
                    f"group {group_id!r}: none of {sorted(names)} is supported by "
                    f"every member (they share {sorted(group.candidates())})"
                )
            if group_instance_id is not None and group_instance_id in group.static:
                old = group.static[group_instance_id]
                if member_id not in ("", old):
                    raise errors.UnknownMemberId(
                        f"group {group_id!r}: static member {group_instance_id!r} "
                        f"is {old}, not {member_id}"
                    )
                member_id = old  # a static member restarted: same identity
                known = group.members[old]
                if (
                    group.state is GroupState.STABLE
                    and known.protocols == list(protocols)
                    and old != group.leader
                ):
                    # Kafka's static membership: a restart with the same
                    # subscription takes its old place and assignment, no rebalance
                    known.conn_id = conn_id
                    known.last_heartbeat = time.monotonic()
                    log.info(
                        "group %s: static member %s (%s) is back",
                        group_id,
                        group_instance_id,
                        old,
                    )
                    return JoinResult(
                        group.generation, group.protocol_name, group.leader, old, []
                    )
            if not member_id and require_member_id and group_instance_id is None:
                member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
                group.pending[member_id] = time.monotonic() + session_timeout_ms / 1000
                return JoinResult(-1, "", "", member_id, [], member_id_required=True)
            given = group.pending.pop(member_id, None) is not None
            if member_id and member_id not in group.members and not given:
                raise errors.UnknownMemberId(
                    f"group {group_id!r} has no member {member_id}: rejoin without it"
                )
            member = group.members.get(member_id) if member_id else None
            if member is None:
                member = _Member(
                    member_id if given else f"{client_id or 'member'}-{uuid.uuid4()}",
                    group_instance_id,
                    client_id,
                    client_host,
                    conn_id,
                    session_timeout_ms,
                    rebalance_timeout_ms,
                    list(protocols),
                    remote,
                )
                group.members[member.member_id] = member
                if group_instance_id is not None:
                    group.static[group_instance_id] = member.member_id
                if len(group.members) == 1:
                    group.protocol_type = protocol_type
                log.info(
                    "group %s: member %s joins (client %s)",
                    group_id,
                    member.member_id,
                    client_id,
                )
            else:
                member.protocols = list(protocols)
                member.conn_id = conn_id
                member.remote = remote
                member.session_timeout_ms = session_timeout_ms
                member.rebalance_timeout_ms = rebalance_timeout_ms
            if group.state is not GroupState.PREPARING_REBALANCE:
                self._prepare_rebalance(group, f"member {member.member_id} joins")
            member.joined = True
            member.join_result = None
            member.last_heartbeat = time.monotonic()
            self._maybe_complete_join(group)
            while member.join_result is None:
                if group.members.get(member.member_id) is not member:
                    raise errors.UnknownMemberId(
                        f"group {group_id!r}: member {member.member_id} was removed "
                        f"while joining"
                    )
                if self._closed:
                    raise errors.BrokenError("the coordinator is stopping")
                self._changed.wait(REAPER_INTERVAL)
            member.last_heartbeat = time.monotonic()
            return member.join_result

    def _prepare_rebalance(self, group: _Group, why: str) -> None:
        group.state = GroupState.PREPARING_REBALANCE
        timeout_ms = max(m.rebalance_timeout_ms for m in group.members.values())
        group.rebalance_deadline = time.monotonic() + timeout_ms / 1000
        for m in group.members.values():
            # join_result stays: a join the last phase answered may not have woken
            # to take it yet; wiping it left that member waiting, not joined
            m.joined = False
        log.info(
            "group %s: rebalance (generation %d): %s",
            group.group_id,
            group.generation,
            why,
        )
        self._changed.notify_all()

    def _maybe_complete_join(self, group: _Group, force: bool = False) -> None:
        """End the join phase once every member rejoined (or, forced by the
        rebalance timeout, without those that did not)."""
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        if not force and not all(m.joined for m in group.members.values()):
            return
        for m in [m for m in group.members.values() if not m.joined]:
            log.info(
                "group %s: removing member %s: it did not rejoin within the "
                "rebalance timeout (max.poll.interval.ms %d)",
                group.group_id,
                m.member_id,
                m.rebalance_timeout_ms,
            )
            self._remove(group, m)
        group.generation += 1
        if not group.members:
            group.state = GroupState.EMPTY
            group.protocol_name = group.leader = ""
            self._changed.notify_all()
            return
        group.protocol_name = self._select_protocol(group)
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = GroupState.COMPLETING_REBALANCE
        everyone = [
            MemberMetadata(
                m.member_id, m.group_instance_id, m.metadata(group.protocol_name)
            )
            for m in group.members.values()
        ]
        for m in group.members.values():
            m.assignment = b""
            m.join_result = JoinResult(
                group.generation,
                group.protocol_name,
                group.leader,
                m.member_id,
                everyone if m.member_id == group.leader else [],
            )
        log.info(
            "group %s: generation %d with %d members, protocol %s, leader %s",
            group.group_id,
            group.generation,
            len(group.members),
            group.protocol_name,
            group.leader,
        )
        self._changed.notify_all()

    @staticmethod
    def _select_protocol(group: _Group) -> str:
        """Kafka's vote: each member votes for its most preferred protocol that all
        support; the most votes win (ties: the first member's preference order)."""
        candidates = group.candidates()
        votes: dict[str, int] = {}
        for m in group.members.values():
            choice = next(name for name, _ in m.protocols if name in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        first = next(iter(group.members.values()))
        order = [name for name, _ in first.protocols if name in votes]
        return max(order, key=lambda name: votes[name])

    def sync(
        self,
        group_id: str,
        generation: int,
        member_id: str,
        assignments: Mapping[str, bytes] | None = None,
    ) -> bytes:
        """The leader passes every member's assignment; each member gets its own
        (waiting for the leader's sync)."""
        with self._lock:
            group, member = self._member(group_id, member_id)
            while True:
                self._check_current(group, member, generation)
                if group.state is GroupState.STABLE:
                    member.last_heartbeat = time.monotonic()
                    return member.assignment
                if member_id == group.leader and assignments is not None:
                    for m in group.members.values():
                        m.assignment = assignments.get(m.member_id, b"")
                    group.state = GroupState.STABLE
                    log.info(
                        "group %s: generation %d stable", group_id, group.generation
                    )
                    self._changed.notify_all()
                    continue
                if self._closed:
                    raise errors.BrokenError("the coordinator is stopping")
                member.last_heartbeat = time.monotonic()  # alive: waiting on us
                self._changed.wait(REAPER_INTERVAL)

    def heartbeat(
        self, group_id: str, generation: int, member_id: str, wait: float = 0.0
    ) -> None:
        """Keep the member alive. Raises RebalanceInProgress when it must rejoin;
        with wait > 0, returns early only for that (a long poll)."""
        deadline = time.monotonic() + wait
        with self._lock:
            group, member = self._member(group_id, member_id)
            while True:
                member.last_heartbeat = time.monotonic()
                self._check_current(group, member, generation)
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return
                self._changed.wait(min(left, REAPER_INTERVAL))

    @staticmethod
    def _check_current(group: _Group, member: _Member, generation: int) -> None:
        """The member is still in the group, which is not rebalancing, at its
        generation: else the error that makes it rejoin."""
        if group.members.get(member.member_id) is not member:
            raise errors.UnknownMemberId(
                f"group {group.group_id!r}: member {member.member_id} was removed"
            )
        if group.state is GroupState.PREPARING_REBALANCE:
            raise errors.RebalanceInProgress(
                f"group {group.group_id!r} is rebalancing: rejoin"
            )
        if generation != group.generation:
            raise errors.IllegalGeneration(
                f"group {group.group_id!r} is at generation {group.generation}, "
                f"not {generation}"
            )

    def leave(self, group_id: str, member_id: str) -> None:
        with self._lock:
            group, member = self._member(group_id, member_id)
            log.info("group %s: member %s leaves", group_id, member_id)
            self._remove(group, member)
            self._after_removal(group, f"member {member_id} left")

    def connection_closed(self, conn_id: int) -> None:
        """The process behind a control connection is gone: its dynamic local
        members leave at once (static ones keep their place until
        session.timeout.ms; remote ones live by heartbeats, as in Kafka)."""
        with self._lock:
            for group in list(self._groups.values()):
                gone = [
                    m
                    for m in group.members.values()
                    if m.conn_id == conn_id
                    and m.group_instance_id is None
                    and not m.remote
                ]
                for m in gone:
                    log.info(
                        "group %s: member %s is gone (its connection closed)",
                        group.group_id,
                        m.member_id,
                    )
                    self._remove(group, m)
                if gone:
                    self._after_removal(group, "a member's connection closed")

    def _remove(self, group: _Group, member: _Member) -> None:
        del group.members[member.member_id]
        if member.group_instance_id is not None:
            group.static.pop(member.group_instance_id, None)
        self._changed.notify_all()

    def _after_removal(self, group: _Group, why: str) -> None:
        if not group.members:
            group.state = GroupState.EMPTY
            group.generation += 1
            group.protocol_name = group.leader = ""
            self._changed.notify_all()
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, why)

    def _member(self, group_id: str, member_id: str) -> tuple[_Group, _Member]:
        group = self._groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if group is None or member is None:
            raise errors.UnknownMemberId(
                f"group {group_id!r} has no member {member_id!r}: rejoin"
            )
        return group, member

    # ---- liveness -------------------------------------------------------------------

    def _reap_loop(self) -> None:
        with self._lock:
            while not self._closed:
                self._changed.wait(REAPER_INTERVAL)
                now = time.monotonic()
                for group in list(self._groups.values()):
                    for member_id, until in list(group.pending.items()):
                        if now > until:  # the id was given, no rejoin came with it
                            del group.pending[member_id]
                    expired = [
                        m
                        for m in group.members.values()
                        if not (m.joined and m.join_result is None)  # waiting in join
                        and now - m.last_heartbeat > m.session_timeout_ms / 1000
                    ]
                    for m in expired:
                        log.info(
                            "group %s: removing member %s: no heartbeat within "
                            "session.timeout.ms (%d)",
                            group.group_id,
                            m.member_id,
                            m.session_timeout_ms,
                        )
                        self._remove(group, m)
                    if expired:
                        self._after_removal(group, "a member's session timed out")
                    if (
                        group.state is GroupState.PREPARING_REBALANCE
                        and now > group.rebalance_deadline
                    ):
                        self._maybe_complete_join(group, force=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        self._reaper.join()

    # ---- offsets --------------------------------------------------------------------

    def commit(
        self,
        group_id: str,
        generation: int,
        member_id: str,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> None:
        """Commit as a member of the current generation, or with generation -1 and
        no member id to a group that has no members (tools, manual offsets)."""
        _check_group_id(group_id)
        with self._lock:
            group = self._groups.get(group_id)
            live = group is not None and bool(group.members)
            if generation >= 0 or live:  # Kafka: only an empty group takes -1
                member = group.members.get(member_id) if group is not None else None
                if group is None or member is None:
                    raise errors.UnknownMemberId(
                        f"group {group_id!r} has no member {member_id!r}"
                        + (": only its live members may commit" if live else "")
                    )
                if group.state is GroupState.COMPLETING_REBALANCE:
                    raise errors.RebalanceInProgress(
                        f"group {group_id!r} is rebalancing: commit after the sync"
                    )
                if generation != group.generation:
                    raise errors.IllegalGeneration(
                        f"commit to group {group_id!r} from generation {generation}; "
                        f"the group is at {group.generation}: the partitions may "
                        f"have moved to another member"
                    )
                member.last_heartbeat = time.monotonic()
            for tp, om in offsets.items():
                if om.offset < 0:
                    raise errors.InvalidArgument(
                        f"commit of offset {om.offset} for {tp.topic}-{tp.partition} "
                        f"in group {group_id!r}: offsets are >= 0"
                    )
                high = self._high_watermark(tp)  # UnknownTopic for no such partition
                if not 0 <= om.offset <= high:
                    raise errors.OffsetOutOfRange(
                        f"commit of offset {om.offset} for {tp.topic}-{tp.partition} "
                        f"in group {group_id!r}: the log ends at {high}"
                    )
            self.store.commit(group_id, offsets)

    def fetch(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return self.store.fetch(group_id, partitions)

    # ---- admin ----------------------------------------------------------------------

    def list_groups(self) -> list[GroupListing]:
        """Every group with members or committed offsets."""
        with self._lock:
            out = {
                g.group_id: GroupListing(g.group_id, g.state.value, g.protocol_type)
                for g in self._groups.values()
                if g.members
            }
        for group_id in self.store.groups():
            if group_id not in out:
                out[group_id] = GroupListing(
                    group_id, GroupState.EMPTY.value, "consumer"
                )
        return [out[g] for g in sorted(out)]

    def describe(self, group_id: str) -> GroupDescription:
        with self._lock:
            group = self._groups.get(group_id)
            if group is None or not group.members:
                if group is None and group_id not in self.store.groups():
                    raise errors.GroupIdNotFound(f"no group {group_id!r}")
                return GroupDescription(
                    group_id, GroupState.EMPTY.value, "consumer", "", 0, "", []
                )
            return GroupDescription(
                group_id,
                group.state.value,
                group.protocol_type,
                group.protocol_name,
                group.generation,
                group.leader,
                [
                    MemberDescription(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.metadata(group.protocol_name) if group.protocol_name else b"",
                        m.assignment,
                    )
                    for m in group.members.values()
                ],
            )

    def delete_group(self, group_id: str) -> None:
        with self._lock:
            group = self._groups.get(group_id)
            if group is not None and group.members:
                raise errors.GroupNotEmpty(
                    f"group {group_id!r} has {len(group.members)} live members: stop "
                    f"them first"
                )
            if group is None and group_id not in self.store.groups():
                raise errors.GroupIdNotFound(f"no group {group_id!r}")
            self._groups.pop(group_id, None)
            self.store.delete_group(group_id)

    def delete_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> list[TopicPartition]:
        """Kafka's OffsetDelete: forget the group's offsets of partitions, except
        those of topics a live member subscribes to, which are returned (Kafka's
        GROUP_SUBSCRIBED_TO_TOPIC)."""
        with self._lock:
            group = self._groups.get(group_id)
            live = group is not None and bool(group.members)
            if not live and group_id not in self.store.groups():
                raise errors.GroupIdNotFound(f"no group {group_id!r}")
            subscribed = _subscribed_topics(group) if group is not None else set()
            wanted = [TopicPartition(*tp) for tp in partitions]
            kept = [tp for tp in wanted if tp.topic in subscribed]
            self.store.delete_offsets(
                group_id, [tp for tp in wanted if tp.topic not in subscribed]
            )
            return kept

    def require_empty(self, group_id: str, action: str) -> None:
        with self._lock:
            group = self._groups.get(group_id)
            if group is not None and group.members:
                raise errors.GroupNotEmpty(
                    f"cannot {action} of group {group_id!r}: it has "
                    f"{len(group.members)} live members (state {group.state.value}); "
                    f"stop them first"
                )


def _subscribed_topics(group: _Group) -> set[str]:
    """The topics a consumer group's members subscribe to (what their JoinGroup
    metadata says; a member of another protocol type subscribes to none)."""
    topics: set[str] = set()
    if group.protocol_type != PROTOCOL_TYPE:
        return topics
    for m in group.members.values():
        for _, metadata in m.protocols[:1]:  # every protocol names the same topics
            try:
                topics.update(decode_subscription(metadata).topics)
            except (errors.ProtocolError, ValueError):
                continue  # not ours to judge: it subscribes to nothing we know of
    return topics


def _check_group_id(group_id: str) -> None:
    if not group_id:
        raise errors.InvalidArgument("group.id must not be empty")
