"""SyncGroup (key 14), v0-v3: the leader's assignments go to the coordinator; every
member's request is parked until the leader's arrives (or the group rebalances
again: the leader's session timed out), and gets its own assignment back. The
bytes are opaque here (Kafka's ConsumerProtocol for "consumer" groups).
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

API_KEY = 14


@register(API_KEY, "SyncGroup", 0, 3)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, request)


async def _answer(session: Session, header: RequestHeader, request: Any) -> Body:
    response = codec.response_type(API_KEY, header.api_version)
    group_line = line(session)
    message = protocol.SyncGroup(
        request.group_id,
        request.generation_id,
        request.member_id,
        {a.member_id: a.assignment for a in request.assignments},
    )
    try:
        result = await group_line.request(message, protocol.SyncResult, PARKED_WAIT_MS)
    except errors.ShmbrokerError as exc:
        body = codec.build(
            response, throttle_time=0, error_code=group_code(exc), assignment=b""
        )
        return [codec.encode(body)]
    body = codec.build(
        response, throttle_time=0, error_code=Code.NONE, assignment=result.assignment
    )
    return [codec.encode(body)]
