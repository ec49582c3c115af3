"""A Kafka connection's line to the group coordinator (the supervisor's): a control
connection and a thread of its own, made at the connection's first group request.

Own connection: the coordinator answers one request at a time per control
connection, so each Kafka connection's group requests keep their order and a
JoinGroup parked until its rebalance ends holds no one else's. Own thread: that
park blocks it, not the event loop nor the gateway's shared pool.

Members that join through here are remote: they live by session.timeout.ms and
heartbeats (the coordinator does not drop them when this line closes), as in
Kafka, where a client may reconnect and carry on as the same member.

Authorization (gateway/authorizer.py) is checked here too, on the way to the
coordinator: a request naming a group the connection's user may not use never
leaves the gateway and is answered GROUP_AUTHORIZATION_FAILED in its API's shape
(`group_code`), so no group API can forget the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from shmbroker import errors, protocol
from shmbroker.client.connection import Connection
from shmbroker.gateway import authorizer
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

T = TypeVar("T")
SLACK = 10.0  # seconds a request may take beyond the wait it asks for
# how long a parked JoinGroup or SyncGroup may wait at least: the join phase lasts up
# to the longest rebalance.timeout.ms of the group's members (not only this one's),
# 5 minutes by Kafka clients' default; a client that gives up first closes its
# connection, which ends the wait
PARKED_WAIT_MS = 5 * 60 * 1000
READ = "read"  # committing, fetching or deleting a topic's offsets needs read on it


class Refused(errors.GroupError):
    """The connection's user may not use the group its request names."""


class GroupLine:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.connection = Connection(
            session.gateway.config.data_dir,
            client_id=f"shmbroker-gateway {session.peer}",
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gateway-group")

    async def request(
        self, message: protocol.Request, kind: type[T], wait_ms: int = 0
    ) -> T:
        """The coordinator's reply to message (its error raised), from this line's
        thread; wait_ms: how long the coordinator may park it. Refused, without
        asking the coordinator, if message names a group the user may not use."""
        group_id = getattr(message, "group_id", None)  # None: ListGroups names none
        refused = (
            group_id is not None
            and authorizer.group_code(self.session, group_id) != Code.NONE
        )
        if refused:
            raise Refused(
                f"{self.session.auth.principal} may not use group {group_id!r}"
            )
        call = functools.partial(
            self.connection.request, message, kind, wait_ms / 1000 + SLACK
        )
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    def close(self) -> None:
        """The Kafka connection is gone: a parked request ends at once, and the
        control connection closes after it (on the line's own thread)."""
        self.connection.abort()
        with contextlib.suppress(RuntimeError):  # shut down already
            self._thread.submit(self.connection.close)
        self._thread.shutdown(wait=False)


def line(session: Session) -> GroupLine:
    """The session's line, made at its first group request."""
    if session.group_line is None:
        session.group_line = GroupLine(session)
    return session.group_line


async def outcome(session: Session, message: protocol.Request) -> Code:
    """NONE once the coordinator has carried message out (a Done reply), else the
    Kafka code of its error."""
    try:
        await line(session).request(message, protocol.Done)
    except errors.ShmbrokerError as exc:
        return group_code(exc)
    return Code.NONE


def group_code(exc: errors.ShmbrokerError) -> Code:
    """The Kafka error code of a group request that failed: no supervisor, or a
    line that closed, is COORDINATOR_NOT_AVAILABLE (clients find the coordinator
    again and retry), Refused GROUP_AUTHORIZATION_FAILED, the rest as in
    kafka/errors.py."""
    if isinstance(exc, Refused):
        return Code.GROUP_AUTHORIZATION_FAILED
    if isinstance(exc, errors.BrokerUnavailable | errors.ClosedError):
        return Code.COORDINATOR_NOT_AVAILABLE
    return code_for(exc)


def partition_code(session: Session, code: Code, topic: str) -> Code:
    """A partition's error code in OffsetCommit, OffsetFetch and OffsetDelete, whose
    request got code: a refused group refuses every partition (Kafka checks the
    group first), else a topic the user may not read is TOPIC_AUTHORIZATION_FAILED
    (and was left out of the request to the coordinator)."""
    if code == Code.GROUP_AUTHORIZATION_FAILED:
        return code
    return authorizer.topic_code(session, topic, READ) or code


def readable(session: Session, topics: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (topic, partition)s of topics the user may read: what an offsets request
    passes on to the coordinator."""
    denied = authorizer.denied_topics(session, {t for t, _ in topics}, READ)
    return [(t, p) for t, p in topics if t not in denied]
