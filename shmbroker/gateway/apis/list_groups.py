"""ListGroups (key 16), v0-v2: every group with live members or committed offsets
(`kafka-consumer-groups --list`), of those the user may use (gateway/authorizer.py):
as in Kafka, the others are left out, not refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors, protocol
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import group_code, line
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 16


@register(API_KEY, "ListGroups", 0, 2)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    codec.decode_request(API_KEY, header.api_version, frame, header.body_offset)
    return _answer(session, header)


async def _answer(session: Session, header: RequestHeader) -> Body:
    code, groups = Code.NONE, []
    try:
        reply = await line(session).request(
            protocol.ListGroups(), protocol.ListGroupsReply
        )
        groups = [
            g
            for g in reply.groups
            if authorizer.group_code(session, g.group_id) == Code.NONE
        ]
    except errors.ShmbrokerError as exc:
        code = group_code(exc)
    response = codec.response_type(API_KEY, header.api_version)
    listed = codec.nested(response, "ListedGroup")
    body = codec.build(
        response,
        throttle_time=0,
        error_code=code,
        groups=tuple(
            codec.build(listed, group_id=g.group_id, protocol_type=g.protocol_type)
            for g in groups
        ),
    )
    return [codec.encode(body)]
