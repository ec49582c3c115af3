"""OffsetDelete (key 47), v0: forget a group's committed offsets of some
partitions (`kafka-consumer-groups --delete-offsets`); those of a topic a live
member subscribes to stay, with GROUP_SUBSCRIBED_TO_TOPIC, as in Kafka; those of a
topic the user may not read stay too, TOPIC_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors, protocol
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import group_code, line, partition_code, readable
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 47


@register(API_KEY, "OffsetDelete", 0, 0)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, request)


async def _answer(session: Session, header: RequestHeader, request: Any) -> Body:
    wanted = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    code, kept = Code.NONE, set()
    try:
        reply = await line(session).request(
            protocol.DeleteGroupOffsets(request.group_id, readable(session, wanted)),
            protocol.DeleteGroupOffsetsReply,
        )
        kept = {(topic, p) for topic, p in reply.subscribed}
    except errors.ShmbrokerError as exc:
        code = group_code(exc)
    response = codec.response_type(API_KEY, header.api_version)
    topic_type = codec.nested(response, "OffsetDeleteResponseTopic")
    partition_type = codec.nested(response, "OffsetDeleteResponsePartition")
    topics = tuple(
        codec.build(
            topic_type,
            name=t.name,
            partitions=tuple(
                codec.build(
                    partition_type,
                    partition_index=p.partition_index,
                    error_code=Code.GROUP_SUBSCRIBED_TO_TOPIC
                    if (t.name, p.partition_index) in kept
                    else partition_code(session, Code.NONE, t.name),
                )
                for p in t.partitions
            ),
        )
        for t in request.topics
    )
    body = codec.build(response, throttle_time=0, error_code=code, topics=topics)
    return [codec.encode(body)]
