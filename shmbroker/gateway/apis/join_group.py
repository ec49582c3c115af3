"""JoinGroup (key 11), v0-v5: through this connection's line to the supervisor's
coordinator (gateway/groups.py), parked there until the rebalance's join phase
ends; the connection's next requests wait behind it, as in Kafka.

The member is remote: it lives by session.timeout.ms and heartbeats. v0 has no
rebalance timeout: the session timeout stands for it (as in Kafka). v4+: a first
join without a member id gets MEMBER_ID_REQUIRED and an id to rejoin with
(KIP-394). v5: group.instance.id (static membership) is passed on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors, protocol
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import PARKED_WAIT_MS, group_code, line
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 11


@register(API_KEY, "JoinGroup", 0, 5)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, request)


async def _answer(session: Session, header: RequestHeader, request: Any) -> Body:
    version = header.api_version
    response = codec.response_type(API_KEY, version)
    session_ms = codec.milliseconds(request.session_timeout)
    rebalance_ms = (
        codec.milliseconds(request.rebalance_timeout) if version >= 1 else session_ms
    )
    group_line = line(session)
    message = protocol.JoinGroup(
        request.group_id,
        request.member_id,
        request.protocol_type,
        [(p.name, p.metadata) for p in request.protocols],
        session_ms,
        rebalance_ms,
        getattr(request, "group_instance_id", None),
        header.client_id or "",
        client_host="/" + session.peer.rpartition(":")[0],  # Kafka's "/127.0.0.1"
        remote=True,
        require_member_id=version >= 4,
    )
    try:
        result = await group_line.request(
            message, protocol.JoinResult, max(rebalance_ms, PARKED_WAIT_MS)
        )
    except errors.ShmbrokerError as exc:
        body = codec.build(
            response, throttle_time=0, error_code=group_code(exc), generation_id=-1,
            protocol_name="", leader="", member_id=request.member_id, members=(),
        )  # fmt: skip
        return [codec.encode(body)]
    member_type = codec.nested(response, "JoinGroupResponseMember")
    members = tuple(
        codec.build(member_type, member_id=m.member_id,
                    group_instance_id=m.group_instance_id, metadata=m.metadata)
        for m in result.members
    )  # fmt: skip
    body = codec.build(
        response,
        throttle_time=0,
        error_code=Code.MEMBER_ID_REQUIRED if result.member_id_required else Code.NONE,
        generation_id=result.generation,
        protocol_name=result.protocol_name,
        leader=result.leader,
        member_id=result.member_id,
        members=members,
    )
    return [codec.encode(body)]
