"""What the supervisor does for each control request: one handler per message type
(protocol.py), registered under that type (kfake's registry). Registering a type
twice fails at import, so two handlers can never silently compete for a message.

A handler takes the supervisor, the request and the connection it came on, and
returns the reply, or raises a ShmbrokerError that the control server sends back
as an ErrorReply. Group handlers may block (a JoinGroup parks until the rebalance's
join phase ends): each control connection has a thread of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from shmbroker import protocol
from shmbroker.broker.offsets import OffsetAndMetadata
from shmbroker.records import TopicPartition

if TYPE_CHECKING:
    from shmbroker.broker.control import ControlConnection
    from shmbroker.broker.supervisor import Supervisor

R = TypeVar("R")
Handler = Callable[["Supervisor", Any, "ControlConnection"], protocol.Reply]

HANDLERS: dict[type, Handler] = {}


def handles(
    kind: type[R],
) -> Callable[
    [Callable[[Supervisor, R, ControlConnection], protocol.Reply]],
    Callable[[Supervisor, R, ControlConnection], protocol.Reply],
]:
    """Register the decorated function as the handler of requests of type kind."""

    def add(
        handler: Callable[[Supervisor, R, ControlConnection], protocol.Reply],
    ) -> Callable[[Supervisor, R, ControlConnection], protocol.Reply]:
        if kind in HANDLERS:
            raise RuntimeError(
                f"control request {kind.__name__} registered twice: by "
                f"{HANDLERS[kind].__name__} and {handler.__name__}"
            )
        HANDLERS[kind] = handler
        return handler

    return add


# ---- the connection and topics -------------------------------------------------------


@handles(protocol.Hello)
def hello(
    s: Supervisor, request: protocol.Hello, conn: ControlConnection
) -> protocol.Reply:
    return protocol.HelloReply(
        protocol.PROTOCOL_VERSION,
        s.broker_id,
        s.shm_base,
        str(s.data_dir.resolve()),
        os.getpid(),
    )


@handles(protocol.Metadata)
def metadata(
    s: Supervisor, request: protocol.Metadata, conn: ControlConnection
) -> protocol.Reply:
    return s.metadata(request.topics, request.auto_create)


@handles(protocol.CreateTopic)
def create_topic(
    s: Supervisor, request: protocol.CreateTopic, conn: ControlConnection
) -> protocol.Reply:
    return s.create_topic(
        request.name, request.partitions, request.configs, request.validate_only
    )


@handles(protocol.DeleteTopic)
def delete_topic(
    s: Supervisor, request: protocol.DeleteTopic, conn: ControlConnection
) -> protocol.Reply:
    s.delete_topic(request.name)
    return protocol.Done()


@handles(protocol.AlterConfigs)
def alter_configs(
    s: Supervisor, request: protocol.AlterConfigs, conn: ControlConnection
) -> protocol.Reply:
    return s.alter_configs(request.name, request.set, request.delete)


@handles(protocol.CreatePartitions)
def create_partitions(
    s: Supervisor, request: protocol.CreatePartitions, conn: ControlConnection
) -> protocol.Reply:
    return s.create_partitions(request.name, request.total)


@handles(protocol.DescribeTopics)
def describe_topics(
    s: Supervisor, request: protocol.DescribeTopics, conn: ControlConnection
) -> protocol.Reply:
    return s.describe(request.names)


# ---- groups ------------------------------------------------------------------------


@handles(protocol.JoinGroup)
def join_group(
    s: Supervisor, request: protocol.JoinGroup, conn: ControlConnection
) -> protocol.Reply:
    return s.group_coordinator().join(
        request.group_id,
        request.member_id,
        protocol_type=request.protocol_type,
        protocols=request.protocols,
        session_timeout_ms=request.session_timeout_ms,
        rebalance_timeout_ms=request.rebalance_timeout_ms,
        group_instance_id=request.group_instance_id,
        client_id=request.client_id or conn.client_id,
        # no space: awk-friendly tables
        client_host=request.client_host or f"pid-{conn.pid}",
        conn_id=conn.conn_id,
        remote=request.remote,
        require_member_id=request.require_member_id,
    )


@handles(protocol.SyncGroup)
def sync_group(
    s: Supervisor, request: protocol.SyncGroup, conn: ControlConnection
) -> protocol.Reply:
    assignment = s.group_coordinator().sync(
        request.group_id, request.generation, request.member_id, request.assignments
    )
    return protocol.SyncResult(assignment)


@handles(protocol.Heartbeat)
def heartbeat(
    s: Supervisor, request: protocol.Heartbeat, conn: ControlConnection
) -> protocol.Reply:
    s.group_coordinator().heartbeat(
        request.group_id, request.generation, request.member_id, request.wait_ms / 1000
    )
    return protocol.Done()


@handles(protocol.LeaveGroup)
def leave_group(
    s: Supervisor, request: protocol.LeaveGroup, conn: ControlConnection
) -> protocol.Reply:
    s.group_coordinator().leave(request.group_id, request.member_id)
    return protocol.Done()


@handles(protocol.OffsetCommit)
def offset_commit(
    s: Supervisor, request: protocol.OffsetCommit, conn: ControlConnection
) -> protocol.Reply:
    s.group_coordinator().commit(
        request.group_id,
        request.generation,
        request.member_id,
        _offsets(request.offsets),
    )
    return protocol.Done()


@handles(protocol.AlterGroupOffsets)
def alter_group_offsets(
    s: Supervisor, request: protocol.AlterGroupOffsets, conn: ControlConnection
) -> protocol.Reply:
    c = s.group_coordinator()
    c.require_empty(request.group_id, "alter the offsets")
    c.commit(request.group_id, -1, "", _offsets(request.offsets))
    return protocol.Done()


@handles(protocol.OffsetFetch)
def offset_fetch(
    s: Supervisor, request: protocol.OffsetFetch, conn: ControlConnection
) -> protocol.Reply:
    partitions = (
        None
        if request.partitions is None
        else [TopicPartition(*tp) for tp in request.partitions]
    )
    fetched = s.group_coordinator().fetch(request.group_id, partitions)
    return protocol.OffsetFetchReply(
        [
            protocol.CommittedOffset(
                tp.topic, tp.partition, om.offset, om.metadata, om.commit_timestamp_ms
            )
            for tp, om in sorted(fetched.items())
        ]
    )


@handles(protocol.ListGroups)
def list_groups(
    s: Supervisor, request: protocol.ListGroups, conn: ControlConnection
) -> protocol.Reply:
    return protocol.ListGroupsReply(s.group_coordinator().list_groups())


@handles(protocol.DescribeGroup)
def describe_group(
    s: Supervisor, request: protocol.DescribeGroup, conn: ControlConnection
) -> protocol.Reply:
    return s.group_coordinator().describe(request.group_id)


@handles(protocol.DeleteGroup)
def delete_group(
    s: Supervisor, request: protocol.DeleteGroup, conn: ControlConnection
) -> protocol.Reply:
    s.group_coordinator().delete_group(request.group_id)
    return protocol.Done()


@handles(protocol.DeleteGroupOffsets)
def delete_group_offsets(
    s: Supervisor, request: protocol.DeleteGroupOffsets, conn: ControlConnection
) -> protocol.Reply:
    kept = s.group_coordinator().delete_offsets(
        request.group_id, [TopicPartition(*tp) for tp in request.partitions]
    )
    return protocol.DeleteGroupOffsetsReply([(tp.topic, tp.partition) for tp in kept])


def _offsets(
    offsets: list[protocol.CommittedOffset],
) -> dict[TopicPartition, OffsetAndMetadata]:
    now = int(time.time() * 1000)  # as Kafka: the coordinator stamps the commit
    return {
        TopicPartition(o.topic, o.partition): OffsetAndMetadata(
            o.offset, o.metadata, now
        )
        for o in offsets
    }
