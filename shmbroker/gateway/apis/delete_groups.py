"""DeleteGroups (key 42), v0-v1: each group and its committed offsets go, if it
has no live members (else NON_EMPTY_GROUP; an unknown one GROUP_ID_NOT_FOUND)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import protocol
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import outcome
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 42


@register(API_KEY, "DeleteGroups", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, list(request.groups_names))


async def _answer(session: Session, header: RequestHeader, names: list[str]) -> Body:
    response = codec.response_type(API_KEY, header.api_version)
    result_type = codec.nested(response, "DeletableGroupResult")
    results = []
    for name in names:
        code = await outcome(session, protocol.DeleteGroup(name))
        results.append(codec.build(result_type, group_id=name, error_code=code))
    body = codec.build(response, throttle_time=0, results=tuple(results))
    return [codec.encode(body)]
