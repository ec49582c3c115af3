"""A consumer's membership in a group: Kafka's classic protocol from the member's
side, speaking Kafka's ConsumerProtocol (so that our consumers and, through the
gateway, Kafka's can share one group).

`GroupMember.ensure_active()` runs in the consumer's poll: (re)join, and if this
member is the leader, assign with the chosen assignor; sync; report what was revoked
and assigned. A heartbeat thread long-polls the coordinator on its own connection, so
a rebalance is known at once; it also leaves the group when the application stops
polling for max.poll.interval.ms, as Kafka's consumer does.

The ConsumerProtocol bytes are kafka/consumer_protocol.py's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable

from shmbroker import errors, protocol
from shmbroker.client.assignors import ASSIGNORS, assignor_for, protocol_names
from shmbroker.client.connection import Connection
from shmbroker.kafka.consumer_protocol import (
    PROTOCOL_TYPE,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from shmbroker.records import TopicPartition

log = logging.getLogger(__name__)

METADATA_MAX_AGE = 1.0  # seconds between checks for new topics and partitions
CONTROL_SLACK = 10.0  # seconds a blocking group request may take beyond its own wait


# ---- the member --------------------------------------------------------------------

Listener = Callable[[list[TopicPartition]], None]


class GroupMember:
    """One consumer's membership. `ensure_active` runs on the polling thread; the
    heartbeat thread only sets flags. Not thread-safe otherwise."""

    def __init__(
        self,
        connection: Connection,
        heartbeat_connection: Connection,
        group_id: str,
        *,
        client_id: str,
        assignors: list[str],
        session_timeout_ms: int,
        max_poll_interval_ms: int,
        heartbeat_interval_ms: int,
        group_instance_id: str | None = None,
    ) -> None:
        unknown = [a for a in assignors if a not in ASSIGNORS]
        if unknown or not assignors:
            raise errors.ConfigError(
                f"partition.assignment.strategy: {unknown or assignors} unknown; "
                f"known: {', '.join(ASSIGNORS)}"
            )
        self.connection = connection
        self.heartbeat_connection = heartbeat_connection
        self.group_id = group_id
        self.client_id = client_id
        self.assignors = assignors
        # Kafka's rule: incremental (cooperative) rebalancing only when every
        # assignor the member offers supports it; otherwise eager (revoke all first)
        self.cooperative = all(a == "cooperative-sticky" for a in assignors)
        self.session_timeout_ms = session_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.group_instance_id = group_instance_id
        self.member_id = ""
        self.generation = -1
        self.protocol = ""
        self.owned: list[TopicPartition] = []
        self.topics: list[str] = []  # the subscription, resolved
        self.pattern: re.Pattern[str] | None = None
        self._partition_counts: dict[str, int] = {}  # what the last assignment saw
        self._rejoin = threading.Event()
        self._joined = threading.Event()  # a generation is on: heartbeat it
        self._stop = threading.Event()
        self._last_poll = time.monotonic()
        self._last_metadata = 0.0
        self._coordinator_lost = False  # warned once; said again when it is back
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{group_id}", daemon=True
        )
        self._thread.start()

    # ---- subscription ---------------------------------------------------------------

    def subscribe(self, topics: list[str] | None, pattern: str | None) -> None:
        if (topics is None) == (pattern is None):
            raise errors.InvalidArgument(
                "subscribe to topics or to a pattern, not both"
            )
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.topics = sorted(set(topics)) if topics is not None else []
        self._rejoin.set()

    def _resolve(self) -> dict[str, int]:
        """Subscribed topic -> partition count, as the broker knows them now."""
        if self.pattern is not None:
            reply = self.connection.request(
                protocol.Metadata(None), protocol.MetadataReply
            )
            metas = [t for t in reply.topics if self.pattern.fullmatch(t.name)]
            self.topics = sorted(t.name for t in metas)
            return {t.name: t.partitions for t in metas}
        counts = {}
        for topic in self.topics:
            try:
                counts[topic] = self.connection.topic(topic).partitions
            except errors.UnknownTopic:
                continue  # subscribed but not there (yet): nothing to assign
        return counts

    # ---- the rebalance --------------------------------------------------------------

    def poll_started(self) -> None:
        self._last_poll = time.monotonic()

    @property
    def needs_rejoin(self) -> bool:
        return self._rejoin.is_set() or not self._joined.is_set()

    def ensure_active(self, on_revoke: Listener, on_assign: Listener) -> bool:
        """Rejoin if needed; calls on_revoke before giving partitions up and
        on_assign after receiving new ones. False if no rebalance ran."""
        now = time.monotonic()
        if now - self._last_metadata >= METADATA_MAX_AGE and self._joined.is_set():
            self._last_metadata = now
            if self._resolve() != self._partition_counts:
                log.info(
                    "group %s: subscribed topics or partitions changed", self.group_id
                )
                self._rejoin.set()
        if not self.needs_rejoin:
            return False
        while self.needs_rejoin and not self._stop.is_set():
            self._rejoin.clear()
            if not self.cooperative and self.owned:
                on_revoke(list(self.owned))  # eager: give everything up first
                self.owned = []
            try:
                assignment = self._join_and_sync()
            except (errors.RebalanceInProgress, errors.IllegalGeneration):
                self._rejoin.set()
                continue
            except errors.UnknownMemberId:
                self.member_id, self.generation = "", -1
                self._rejoin.set()
                continue
            except errors.BrokerUnavailable as exc:  # restarting: a later poll retries
                if not self._coordinator_lost:  # once an outage, not once a poll
                    self._coordinator_lost = True
                    log.warning(
                        "group %s: no coordinator (%s); retrying until it is back",
                        self.group_id,
                        exc,
                    )
                self._rejoin.set()
                return False
            if self._coordinator_lost:
                self._coordinator_lost = False
                log.info("group %s: the coordinator is back", self.group_id)
            revoked = [tp for tp in self.owned if tp not in set(assignment)]
            added = [tp for tp in assignment if tp not in set(self.owned)]
            if revoked:
                on_revoke(revoked)
            self.owned = assignment
            self._joined.set()
            if added:
                try:
                    on_assign(added)
                except errors.BrokerUnavailable as exc:
                    # the supervisor went between the sync and the committed
                    # offsets: give those back and take them again next time
                    log.info("group %s: assignment deferred: %s", self.group_id, exc)
                    self.owned = [tp for tp in self.owned if tp not in added]
                    self._rejoin.set()
                    return True
            if revoked and self.cooperative:
                self._rejoin.set()  # cooperative: a second round hands them over
        return True

    def _join_and_sync(self) -> list[TopicPartition]:
        self._joined.clear()
        counts = self._resolve()
        subscription = Subscription(self.topics, list(self.owned), self.generation)
        metadata = encode_subscription(subscription)
        result = self.connection.request(
            protocol.JoinGroup(
                self.group_id,
                self.member_id,
                PROTOCOL_TYPE,
                [(name, metadata) for name in protocol_names(self.assignors)],
                self.session_timeout_ms,
                self.max_poll_interval_ms,
                self.group_instance_id,
                self.client_id,
            ),
            protocol.JoinResult,
            timeout=self.max_poll_interval_ms / 1000 + CONTROL_SLACK,
        )
        self.member_id, self.generation = result.member_id, result.generation
        self.protocol = result.protocol_name
        assignments = None
        if result.leader == result.member_id:
            subscriptions = {
                m.member_id: decode_subscription(m.metadata, m.group_instance_id)
                for m in result.members
            }
            wanted = {t for s in subscriptions.values() for t in s.topics}
            for topic in wanted - set(counts):
                try:
                    counts[topic] = self.connection.topic(topic).partitions
                except errors.UnknownTopic:
                    continue
            plan = assignor_for(result.protocol_name)(subscriptions, counts)
            assignments = {m: encode_assignment(tps) for m, tps in plan.items()}
        self._partition_counts = {t: c for t, c in counts.items() if t in self.topics}
        sync = self.connection.request(
            protocol.SyncGroup(
                self.group_id, self.generation, self.member_id, assignments
            ),
            protocol.SyncResult,
            timeout=self.max_poll_interval_ms / 1000 + CONTROL_SLACK,
        )
        return decode_assignment(sync.assignment)

    # ---- heartbeats -----------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            if not self._joined.wait(0.1):
                continue
            if time.monotonic() - self._last_poll > self.max_poll_interval_ms / 1000:
                log.warning(
                    "group %s: member %s leaves: poll() was not called within "
                    "max.poll.interval.ms (%d); the next poll rejoins",
                    self.group_id,
                    self.member_id,
                    self.max_poll_interval_ms,
                )
                self._leave_quietly()
                continue
            generation, member_id = self.generation, self.member_id
            try:
                self.heartbeat_connection.request(
                    protocol.Heartbeat(
                        self.group_id,
                        generation,
                        member_id,
                        self.heartbeat_interval_ms,
                    ),
                    protocol.Done,
                    timeout=self.heartbeat_interval_ms / 1000 + CONTROL_SLACK,
                )
            except errors.GroupError:
                # only news about the generation we are in: a rebalance this
                # member started itself (or finished since) needs no other
                if self._joined.is_set() and generation == self.generation:
                    self._joined.clear()
                    self._rejoin.set()
            except errors.ShmbrokerError as exc:  # the supervisor restarts: retry
                log.debug("group %s: heartbeat failed: %s", self.group_id, exc)
                self._stop.wait(0.1)

    def _leave_quietly(self) -> None:
        self._joined.clear()
        self._rejoin.set()
        with contextlib.suppress(errors.ShmbrokerError):  # removed already: fine
            self.heartbeat_connection.request(
                protocol.LeaveGroup(self.group_id, self.member_id), protocol.Done
            )
        self.member_id, self.generation = "", -1

    # ---- offsets --------------------------------------------------------------------

    def commit(self, offsets: list[protocol.CommittedOffset]) -> None:
        self.connection.request(
            protocol.OffsetCommit(
                self.group_id, self.generation, self.member_id, offsets
            ),
            protocol.Done,
        )

    def committed(
        self, partitions: list[TopicPartition] | None
    ) -> dict[TopicPartition, protocol.CommittedOffset]:
        reply = self.connection.request(
            protocol.OffsetFetch(
                self.group_id,
                None if partitions is None else [(tp[0], tp[1]) for tp in partitions],
            ),
            protocol.OffsetFetchReply,
        )
        return {TopicPartition(o.topic, o.partition): o for o in reply.offsets}

    def close(self) -> None:
        """Leave the group; a static member does not (as Kafka's): its place and
        partitions wait session.timeout.ms for it to come back."""
        self._stop.set()
        self.heartbeat_connection.abort()  # its long poll ends now
        self._thread.join()
        if self.member_id and self.group_instance_id is None:
            try:
                self.connection.request(
                    protocol.LeaveGroup(self.group_id, self.member_id), protocol.Done
                )
            except errors.ShmbrokerError as exc:
                log.debug("group %s: leave failed: %s", self.group_id, exc)
        self.heartbeat_connection.close()
