"""DescribeGroups (key 15), v0-v2: state, protocol, and every member with its
client id, host, subscription and assignment bytes (`kafka-consumer-groups
--describe`). A group that does not exist is "Dead" with no error, as in Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors, protocol
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import GroupLine, group_code, line
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 15
DEAD = "Dead"


@register(API_KEY, "DescribeGroups", 0, 2)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, list(request.groups))


async def _answer(session: Session, header: RequestHeader, names: list[str]) -> Body:
    response = codec.response_type(API_KEY, header.api_version)
    group_line = line(session)
    described = tuple([await _describe(group_line, response, name) for name in names])
    return [codec.encode(codec.build(response, throttle_time=0, groups=described))]


async def _describe(group_line: GroupLine, response: Any, name: str) -> Any:
    group_type = codec.nested(response, "DescribedGroup")
    member_type = codec.nested(response, "DescribedGroupMember")
    try:
        d = await group_line.request(
            protocol.DescribeGroup(name), protocol.GroupDescription
        )
    except errors.GroupIdNotFound:
        return codec.build(
            group_type, error_code=Code.NONE, group_id=name, group_state=DEAD,
            protocol_type="", protocol_data="", members=(),
        )  # fmt: skip
    except errors.ShmbrokerError as exc:
        return codec.build(
            group_type, error_code=group_code(exc), group_id=name, group_state="",
            protocol_type="", protocol_data="", members=(),
        )  # fmt: skip
    members = tuple(
        codec.build(
            member_type, member_id=m.member_id, client_id=m.client_id,
            client_host=m.client_host, member_metadata=m.metadata,
            member_assignment=m.assignment,
        )
        for m in d.members
    )  # fmt: skip
    return codec.build(
        group_type, error_code=Code.NONE, group_id=name, group_state=d.state,
        protocol_type=d.protocol_type, protocol_data=d.protocol_name,
        members=members,
    )  # fmt: skip
