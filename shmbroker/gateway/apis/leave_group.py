"""LeaveGroup (key 13), v0-v1: the member goes at once and the group rebalances
without it (no session timeout to wait out): a clean close hands its partitions
over in the time the others take to rejoin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import protocol
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import outcome
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 13


@register(API_KEY, "LeaveGroup", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, request)


async def _answer(session: Session, header: RequestHeader, request: Any) -> Body:
    message = protocol.LeaveGroup(request.group_id, request.member_id)
    code = await outcome(session, message)
    response = codec.response_type(API_KEY, header.api_version)
    return [codec.encode(codec.build(response, throttle_time=0, error_code=code))]
