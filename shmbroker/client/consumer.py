"""The Consumer: Kafka's consumer API over the partition rings and segment files.

Each assigned partition has a LogReader (recent offsets from the ring, older ones from
the segments) and a position: the offset of the next record `poll` returns. Either the
application assigns partitions itself (`assign`), or, with a `group_id`, it
subscribes and the group's rebalances assign them (`subscribe`; client/group.py).
A new partition starts at the group's committed offset, else where
`auto_offset_reset` says; offsets deleted by retention under a reader go by the same
policy, as in Kafka. With enable_auto_commit, poll commits the positions every
auto_commit_interval_ms, and before partitions are revoked, and on close.

Waiting: poll_batch, like Kafka's poll, returns records of every partition with data,
up to max_records in all, the partitions in turn: each call starts with the one after
the partition the last call served last, so a busy partition never starves the others.
With nothing to return it waits on all its partitions' rings at once (a RingWaiter:
futex_waitv), so the first record of any of them wakes it, idling as IDLE_STRATEGY
says first; with one partition, in that ring reader's read. Ctrl-C raises
KeyboardInterrupt from a wait within _native.WAIT_SLICE_MS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from shmbroker import _native, errors, protocol
from shmbroker.client.connection import Connection
from shmbroker.client.group import GroupMember, Listener
from shmbroker.client.metrics import RECORDS_CONSUMED, TopicCounters
from shmbroker.log.reader import LogReader, PartitionReader
from shmbroker.records import PartitionKey, Record, RecordColumns, TopicPartition
from shmbroker.ring import DEFAULT_IDLE

log = logging.getLogger(__name__)

IDLE_STRATEGY = DEFAULT_IDLE  # how poll idles before it sleeps on the rings
GROUP_WAIT = 0.01  # a group member's poll looks for a rebalance at least this often
OffsetReset = Literal["earliest", "latest", "none"]
EARLIEST, LATEST = -2, -1  # Kafka's ListOffsets timestamps
T = TypeVar("T")
R = TypeVar("R")


class _Assigned:
    """One assigned partition: where to read next, and what was read ahead."""

    def __init__(self, reader: PartitionReader, check_crcs: bool = True) -> None:
        self.reader = reader
        self.check_crcs = check_crcs
        self.log_reader: LogReader | None = None
        self.buffer: list[Record] = []  # fetched, not yet returned, in order
        self.at = 0  # index of the next record in buffer to return
        self.columns: RecordColumns | None = None  # poll_columns' read ahead
        self.paused = False

    def seek(self, offset: int) -> None:
        self.log_reader = self.reader.reader(offset, check_crcs=self.check_crcs)
        self.buffer, self.at, self.columns = [], 0, None

    @property
    def position(self) -> int:
        if self.at < len(self.buffer):
            return self.buffer[self.at].offset
        if self.columns is not None:
            return int(self.columns.offsets[0])
        return self.require_reader().offset

    def read_ahead(self) -> bool:
        """Records were read ahead by the other kind of poll than this one."""
        return self.at < len(self.buffer) or self.columns is not None

    def require_reader(self) -> LogReader:
        if self.log_reader is None:  # auto.offset.reset none, and no seek yet
            raise errors.OffsetOutOfRange(
                f"{self.reader.name}: no position to start from and "
                f"auto.offset.reset is none: seek() first"
            )
        return self.log_reader


def offset_for(reader: PartitionReader, spec: int) -> int | None:
    """Kafka's ListOffsets for one partition: EARLIEST, LATEST, or the first offset
    with a timestamp >= spec (None if there is none)."""
    if spec == EARLIEST:
        return reader.log_start_offset
    if spec == LATEST:
        return reader.high_watermark
    return reader.offset_for_time(spec)


class Consumer:
    """Reads assigned partitions of topics of the broker on data_dir. Not
    thread-safe (as Kafka's consumer): one thread polls."""

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        client_id: str = "shmbroker-consumer",
        group_id: str | None = None,
        subscribe: Iterable[str] | None = None,
        pattern: str | None = None,
        auto_offset_reset: OffsetReset = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3000,
        max_poll_interval_ms: int = 300_000,
        partition_assignment_strategy: Iterable[str] = ("range", "cooperative-sticky"),
        group_instance_id: str | None = None,
        max_poll_records: int = 500,
        consumer_timeout_ms: float | None = None,
        check_crcs: bool = True,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise errors.ConfigError(
                f"auto.offset.reset: {auto_offset_reset!r} must be earliest, latest "
                f"or none"
            )
        self.auto_offset_reset = auto_offset_reset
        self.max_poll_records = max_poll_records
        self.check_crcs = check_crcs  # Kafka's check.crcs: each batch, as decoded
        self.consumer_timeout = (
            None if consumer_timeout_ms is None else consumer_timeout_ms / 1000
        )
        self.connection = Connection(data_dir, client_id=client_id)
        self.records_consumed = TopicCounters(self.connection, RECORDS_CONSUMED)
        self._assigned: dict[TopicPartition, _Assigned] = {}
        self._order: list[_Assigned] = []  # unpaused, in the order poll visits them
        self._next = 0
        # the partition the last poll() returned a record of, with the _order it was
        # in (a new one after an assignment or a pause: then it is stale), and how
        # many more of its records poll() may return before the next partition's
        self._polled: tuple[list[_Assigned], _Assigned] | None = None
        self._polled_left = 0
        # waits on the rings of _order (which it was made for): see _visit_assigned
        self._waiter: tuple[list[_Assigned], _native.RingWaiter] | None = None
        self._closed = False
        self.group_id = group_id
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self._next_auto_commit = time.monotonic() + self.auto_commit_interval
        self._group: GroupMember | None = None
        self._on_assign: Listener | None = None
        self._on_revoke: Listener | None = None
        self._committer: ThreadPoolExecutor | None = None  # for commit(asynchronous)
        if group_id is not None:
            self._group = GroupMember(
                self.connection,
                Connection(data_dir, client_id=client_id),
                group_id,
                client_id=client_id,
                assignors=list(partition_assignment_strategy),
                session_timeout_ms=session_timeout_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                group_instance_id=group_instance_id,
            )
        if subscribe is not None or pattern is not None:
            self.subscribe(None if subscribe is None else list(subscribe), pattern)

    # ---- assignment -----------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions (replacing the previous assignment); new
        ones start at the group's committed offset (with a group_id), else where
        auto_offset_reset says."""
        if self._group is not None and self._group.topics:
            raise errors.InvalidArgument(
                "assign() after subscribe(): unsubscribe first"
            )
        wanted = [TopicPartition(*tp) for tp in partitions]
        committed = self._committed_offsets(
            [tp for tp in wanted if tp not in self._assigned]
        )
        opened: dict[TopicPartition, _Assigned] = {}
        try:
            for tp in wanted:
                if tp in self._assigned:
                    opened[tp] = self._assigned[tp]
                elif tp not in opened:
                    opened[tp] = self._open(tp, committed.get(tp))
        except BaseException:
            for tp, a in opened.items():
                if tp not in self._assigned:
                    a.reader.close()
            raise
        for tp, a in self._assigned.items():
            if tp not in opened:
                a.reader.close()
        self._assigned = opened
        self._reorder()

    def _open(self, tp: TopicPartition, committed: int | None = None) -> _Assigned:
        meta = self.connection.topic(tp.topic)
        if not 0 <= tp.partition < meta.partitions:
            raise errors.UnknownTopic(
                f"topic {tp.topic!r} has partitions 0..{meta.partitions - 1}, not "
                f"{tp.partition}"
            )
        reader = PartitionReader.open(
            self.connection.partition_dir(*tp),
            self.connection.ring_name(meta, tp.partition),
            topic=tp.topic,
            partition=tp.partition,
        )
        assigned = _Assigned(reader, self.check_crcs)
        try:
            if committed is not None:
                try:
                    assigned.seek(committed)
                    return assigned
                except errors.OffsetOutOfRange as exc:
                    if self.auto_offset_reset == "none":
                        raise
                    log.warning("%s; resetting to %s", exc, self.auto_offset_reset)
            if self.auto_offset_reset == "none":
                return assigned  # no position until seek(): reading it raises
            self._reset(assigned, tp)
        except BaseException:
            reader.close()
            raise
        return assigned

    def _reset(self, assigned: _Assigned, tp: TopicPartition) -> None:
        if self.auto_offset_reset == "none":
            raise errors.OffsetOutOfRange(
                f"{tp.topic}-{tp.partition}: no position to start from and "
                f"auto.offset.reset is none: seek() first"
            )
        reader = assigned.reader
        assigned.seek(
            reader.log_start_offset
            if self.auto_offset_reset == "earliest"
            else reader.high_watermark
        )

    def _reorder(self) -> None:
        self._order = [a for a in self._assigned.values() if not a.paused]
        self._next = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def _get(self, tp: TopicPartition | tuple[str, int]) -> _Assigned:
        try:
            return self._assigned[TopicPartition(*tp)]
        except KeyError:
            raise errors.InvalidArgument(
                f"partition {tp[0]}-{tp[1]} is not assigned to this consumer"
            ) from None

    # ---- groups ---------------------------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        pattern: str | None = None,
        *,
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
    ) -> None:
        """Join the group for these topics (or every topic matching the regex
        pattern, now or later); the group assigns the partitions at the next poll.
        on_revoke runs before partitions go (commit there if not auto-committing),
        on_assign after new ones come."""
        if self._group is None:
            raise errors.ConfigError("subscribe() needs a group_id")
        if self._assigned and not self._group.topics:
            self.assign([])  # manual assignment ends
        self._group.subscribe(None if topics is None else list(topics), pattern)
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def unsubscribe(self) -> None:
        """Give up every partition (committing if auto-committing) and leave."""
        if self._group is None:
            return
        self._revoked(list(self._assigned))
        self._group.close()
        self._group = GroupMember(
            self.connection,
            Connection(self.connection.data_dir, client_id=self.connection.client_id),
            self._group.group_id,
            client_id=self._group.client_id,
            assignors=self._group.assignors,
            session_timeout_ms=self._group.session_timeout_ms,
            max_poll_interval_ms=self._group.max_poll_interval_ms,
            heartbeat_interval_ms=self._group.heartbeat_interval_ms,
            group_instance_id=self._group.group_instance_id,
        )

    def _rebalance(self) -> None:
        group = self._group
        if group is None or (not group.topics and group.pattern is None):
            return
        group.poll_started()
        group.ensure_active(self._revoked, self._assigned_more)

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        if self.enable_auto_commit and partitions:
            try:
                self.commit(
                    {
                        tp: self.position(tp)
                        for tp in partitions
                        if tp in self._assigned
                        and self._assigned[tp].log_reader is not None
                    }
                )
            except errors.ShmbrokerError as exc:
                log.warning(
                    "group %s: commit before revoking failed: %s", self.group_id, exc
                )
        if self._on_revoke is not None:
            self._on_revoke(partitions)
        for tp in partitions:
            a = self._assigned.pop(tp, None)
            if a is not None:
                a.reader.close()
        self._reorder()

    def _assigned_more(self, partitions: list[TopicPartition]) -> None:
        committed = self._committed_offsets(partitions)
        for tp in partitions:
            try:
                self._assigned[tp] = self._open(tp, committed.get(tp))
            except errors.UnknownTopic as exc:
                log.warning("group %s: %s", self.group_id, exc)
        self._reorder()
        if self._on_assign is not None:
            self._on_assign(partitions)

    def _committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        if self.group_id is None or not partitions:
            return {}
        reply = self.connection.request(
            protocol.OffsetFetch(self.group_id, [(tp[0], tp[1]) for tp in partitions]),
            protocol.OffsetFetchReply,
        )
        return {TopicPartition(o.topic, o.partition): o.offset for o in reply.offsets}

    def commit(
        self,
        offsets: Mapping[PartitionKey, int | tuple[int, str]] | None = None,
        *,
        asynchronous: bool = False,
    ) -> Future[None] | None:
        """Commit offsets (the next offset to read, with optional metadata), by
        default the positions of every assigned partition. asynchronous: returns a
        Future at once. IllegalGeneration / UnknownMemberId / RebalanceInProgress if
        this member no longer owns the partitions in the group's eyes."""
        if self.group_id is None:
            raise errors.ConfigError("commit() needs a group_id")
        items: Iterable[tuple[tuple[str, int], int | tuple[int, str]]] = (
            offsets.items()
            if offsets is not None
            else [
                (tp, a.position)
                for tp, a in self._assigned.items()
                if a.log_reader is not None
            ]
        )
        entries = []
        for tp, value in items:
            offset, metadata = value if isinstance(value, tuple) else (value, "")
            entries.append(protocol.CommittedOffset(tp[0], tp[1], offset, metadata))
        if not entries:
            return None
        if asynchronous:
            if self._committer is None:
                self._committer = ThreadPoolExecutor(1, "commit")
            return self._committer.submit(self._commit, entries)
        self._commit(entries)
        return None

    def _commit(self, entries: list[protocol.CommittedOffset]) -> None:
        group = self._group
        if group is not None and group.member_id:
            group.commit(entries)
        else:  # manual assignment: commits to a group without members
            self.connection.request(
                protocol.OffsetCommit(self.group_id or "", -1, "", entries),
                protocol.Done,
            )

    def committed(
        self, partitions: Iterable[TopicPartition | tuple[str, int]]
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where it has none)."""
        wanted = [TopicPartition(*tp) for tp in partitions]
        found = self._committed_offsets(wanted)
        return {tp: found.get(tp) for tp in wanted}

    def _auto_commit(self) -> None:
        now = time.monotonic()
        if self.enable_auto_commit and now >= self._next_auto_commit:
            self._next_auto_commit = now + self.auto_commit_interval
            try:
                self.commit()
            # a rebalance under way, or the supervisor restarting: the next one
            except (errors.GroupError, errors.BrokerUnavailable) as exc:
                log.info("group %s: auto-commit skipped: %s", self.group_id, exc)

    # ---- positions ------------------------------------------------------------------

    def seek(self, tp: TopicPartition | tuple[str, int], offset: int) -> None:
        """The next poll returns offset next (OffsetOutOfRange names the valid
        range)."""
        self._get(tp).seek(offset)

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions or list(self._assigned):
            a = self._get(tp)
            a.seek(a.reader.log_start_offset)

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions or list(self._assigned):
            a = self._get(tp)
            a.seek(a.reader.high_watermark)

    def position(self, tp: TopicPartition | tuple[str, int]) -> int:
        return self._get(tp).position

    def beginning_offsets(
        self, partitions: Iterable[TopicPartition | tuple[str, int]]
    ) -> dict[TopicPartition, int]:
        return {
            tp: off
            for tp, off in self._list(partitions, EARLIEST).items()
            if off is not None
        }

    def end_offsets(
        self, partitions: Iterable[TopicPartition | tuple[str, int]]
    ) -> dict[TopicPartition, int]:
        return {
            tp: off
            for tp, off in self._list(partitions, LATEST).items()
            if off is not None
        }

    def offsets_for_times(
        self, timestamps: Mapping[PartitionKey, int]
    ) -> dict[TopicPartition, int | None]:
        """The first offset with a timestamp >= the given one (ms), per partition;
        None where no record is that new."""
        out: dict[TopicPartition, int | None] = {}
        for tp, ts in timestamps.items():
            if ts < 0:
                raise errors.InvalidArgument(f"timestamp {ts} < 0")
            out.update(self._list([tp], ts))
        return out

    def _list(
        self, partitions: Iterable[TopicPartition | tuple[str, int]], spec: int
    ) -> dict[TopicPartition, int | None]:
        out = {}
        for tp in map(TopicPartition._make, partitions):
            assigned = self._assigned.get(tp)
            if assigned is not None:
                out[tp] = offset_for(assigned.reader, spec)
            else:
                temporary = self._open(tp)
                try:
                    out[tp] = offset_for(temporary.reader, spec)
                finally:
                    temporary.reader.close()
        return out

    # ---- flow control ---------------------------------------------------------------

    def pause(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions:
            self._get(tp).paused = True
        self._reorder()

    def resume(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions:
            self._get(tp).paused = False
        self._reorder()

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, a in self._assigned.items() if a.paused}

    # ---- reading --------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> Record | None:
        """The next record, or None if none came within timeout (None: wait). Up to
        max_poll_records records a partition's read fetched come one a call without
        a visit of the partitions (~0.2 us, where a visit costs ~1.5), as Kafka's
        consumer returns up to max.poll.records of a fetch; then the next partition
        in turn."""
        polled, group = self._polled, self._group
        if (
            polled is not None
            and self._polled_left > 0
            and polled[0] is self._order
            and (group is None or not group.needs_rejoin)
        ):
            a = polled[1]
            if a.at < len(a.buffer):
                if group is not None:
                    group.poll_started()
                    self._auto_commit()
                self._polled_left -= 1
                a.at += 1
                return a.buffer[a.at - 1]
        records = self.poll_batch(1, timeout)
        if not records:
            return None
        order = self._order
        self._polled = (order, order[(self._next - 1) % len(order)])
        self._polled_left = self.max_poll_records - 1
        return records[0]

    def poll_batch(
        self, max_records: int | None = None, timeout: float | None = 0
    ) -> list[Record]:
        """Up to max_records records (default max_poll_records) of every partition
        with data, in offset order per partition, the partitions in turn; [] if
        none came within timeout (None: wait)."""
        limit = self.max_poll_records if max_records is None else max_records
        if limit < 1:
            raise errors.InvalidArgument(f"max_records must be >= 1, not {limit}")

        def take(ready: bytes, wait: float | None) -> list[Record] | None:
            out: list[Record] = []
            for i, a in self._in_turn():
                if a.columns is not None:  # poll_columns read ahead: from the first
                    a.seek(a.position)
                if a.at >= len(a.buffer):
                    if not ready[i]:
                        continue
                    records = self._read(a, LogReader.poll, wait)
                    if not records:
                        continue
                    self.records_consumed.add(a.reader.topic, len(records))
                    a.buffer, a.at = records, 0
                part = a.buffer[a.at : a.at + limit - len(out)]
                a.at += len(part)
                out += part
                self._served(i)
                if len(out) >= limit:
                    break
            return out

        return self._visit(take, timeout) or []

    def poll_columns(
        self, max_records: int | None = None, timeout: float | None = 0
    ) -> list[RecordColumns]:
        """As poll_batch, but each partition's records as one RecordColumns (offsets,
        timestamps, keys and values as columns over one buffer; `to_arrow()`
        without a copy): no Python object per record. [] if none came within
        timeout (None: wait)."""
        limit = self.max_poll_records if max_records is None else max_records
        if limit < 1:
            raise errors.InvalidArgument(f"max_records must be >= 1, not {limit}")

        def take(ready: bytes, wait: float | None) -> list[RecordColumns] | None:
            out: list[RecordColumns] = []
            count = 0
            for i, a in self._in_turn():
                if a.at < len(a.buffer):  # poll_batch read ahead: from the first
                    a.seek(a.position)
                columns = a.columns
                if columns is None:
                    if not ready[i]:
                        continue
                    columns = self._read(a, LogReader.poll_columns, wait)
                    if not columns:  # none, or control batches only
                        continue
                    self.records_consumed.add(a.reader.topic, len(columns))
                part, rest = columns.split(limit - count)
                a.columns = rest if len(rest) else None
                out.append(part)
                count += len(part)
                self._served(i)
                if count >= limit:
                    break
            return out

        return self._visit(take, timeout) or []

    def read_batches(
        self, timeout: float | None = 0
    ) -> tuple[TopicPartition, bytes] | None:
        """The fastest path: whole RecordBatch v2 batches of one partition as raw
        bytes (what Kafka's Fetch returns), partitions in turn; None after timeout.
        As in a Fetch, the first batch may begin before the position (after a
        seek); the position moves past the last batch. No Record is built."""

        def take(
            ready: bytes, wait: float | None
        ) -> tuple[TopicPartition, bytes] | None:
            for i, a in self._in_turn():
                if a.read_ahead():  # records polled ahead: go on from the first
                    a.seek(a.position)
                elif not ready[i]:
                    continue
                data = self._read(a, LogReader.read_batches, wait)
                if data:
                    self._served(i)
                    return TopicPartition(a.reader.topic, a.reader.partition), data
            return None

        return self._visit(take, timeout)

    def _in_turn(self) -> Iterator[tuple[int, _Assigned]]:
        """The unpaused partitions with their index in self._order, in turn: from
        the one after the partition the last call served last (_served)."""
        order = self._order
        n, start = len(order), self._next
        for k in range(n):
            i = (start + k) % n
            yield i, order[i]

    def _served(self, i: int) -> None:
        """Records of partition i were returned: the next call starts after it."""
        self._next = (i + 1) % len(self._order)

    def _visit(
        self, take: Callable[[bytes, float | None], T | None], timeout: float | None
    ) -> T | None:
        """What take(ready, wait) gets from the partitions (ready: a byte each, in
        self._order, set where the ring has records past the reader's offset; wait:
        how long the reads of ready partitions may wait) within timeout; a group
        member rebalances and auto-commits on the way."""
        if self._closed:
            raise errors.ClosedError("the consumer is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._group is None:
            if not self._order and timeout is None:
                raise errors.InvalidArgument("poll with no (unpaused) assignment")
            return self._visit_assigned(take, deadline)
        while True:  # in slices of GROUP_WAIT: a rebalance never waits for timeout
            self._auto_commit()
            self._rebalance()
            left = None if deadline is None else deadline - time.monotonic()
            wait = GROUP_WAIT if left is None else max(0.0, min(left, GROUP_WAIT))
            got = self._visit_assigned(take, time.monotonic() + wait)
            if got:
                return got
            if left is not None and left <= 0:
                return None

    def _visit_assigned(
        self, take: Callable[[bytes, float | None], T | None], deadline: float | None
    ) -> T | None:
        """take() from the partitions with records past their readers' offsets; if
        it gets nothing, wait until a record comes to any of them (all rings at once)
        or deadline passes, and go again."""
        order = self._order
        if not order:  # nothing assigned (yet: a group decides): wait out the slice
            if deadline is not None:  # _visit sets one whenever nothing is assigned
                time.sleep(max(0.0, deadline - time.monotonic()))
            return None
        if len(order) == 1:
            # one ring: its reader's read waits and copies the batch out in one C
            # call; a RingWaiter would add a C call and the reader's bookkeeping
            # (~8 us) between the wake-up and the record
            wait: float | None = 0.0  # a look first: no clock if records are there
            while True:
                got = take(b"\1", wait)
                if got:
                    return got
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
        waiter = self._waiter
        if waiter is None or waiter[0] is not order:  # assignment or pauses changed
            # Any: a closed ring's stand-in, which raises ClosedError here
            rings: list[Any] = [a.reader.ring.native for a in order]
            waiter = self._waiter = (order, _native.RingWaiter(rings))
        timeout_ms = 0
        while True:
            # a reader without a position (auto.offset.reset none) raises here
            offsets = [a.require_reader().offset for a in order]
            got = take(waiter[1].wait(offsets, timeout_ms, IDLE_STRATEGY), 0)
            if got:
                return got
            if deadline is None:
                timeout_ms = -1
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                timeout_ms = max(1, int(left * 1000))

    def _read(
        self,
        a: _Assigned,
        read: Callable[[LogReader, float | None], R],
        timeout: float | None,
    ) -> R | None:
        """read from the partition's reader; an offset deleted by retention under
        it goes by auto_offset_reset, as in Kafka."""
        try:
            return read(a.require_reader(), timeout)
        except errors.OffsetOutOfRange as exc:
            if self.auto_offset_reset == "none":
                raise
            log.warning("%s; resetting to %s", exc, self.auto_offset_reset)
            self._reset(a, TopicPartition(a.reader.topic, a.reader.partition))
            return None
        except FileNotFoundError as exc:
            # the partition directory went under a segment read: if the topic was
            # deleted (its ring says so), say that, as a ring read would
            if (
                isinstance(exc, errors.ShmbrokerError)
                or not a.reader.ring.stat().deleted
            ):
                raise
            raise errors.UnknownTopic(
                f"partition {a.reader.name}: its topic was deleted"
            ) from exc

    def __iter__(self) -> Iterator[Record]:
        """Records until consumer_timeout_ms passes without one (forever if None)."""
        while True:
            records = self.poll_batch(timeout=self.consumer_timeout)
            if not records:
                return
            yield from records

    def close(self) -> None:
        """Commit (if auto-committing), leave the group, release everything."""
        if self._closed:
            return
        if self._group is not None:
            if self.enable_auto_commit and self._group.member_id:
                try:
                    self.commit()
                except errors.ShmbrokerError as exc:
                    log.warning("group %s: final commit failed: %s", self.group_id, exc)
            self._group.close()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        self._closed = True
        for a in self._assigned.values():
            a.reader.close()
        self._assigned.clear()
        self._order = []
        self.records_consumed.close()
        self.connection.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
