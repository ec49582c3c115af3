"""OffsetFetch (key 9), v1-v3: a group's committed offsets. Every requested
partition is answered, with offset -1 where nothing is committed (kafkajs crashes
on a partition left out); null topics (v2+) asks for all the group has.
v2+ carries a top-level error code too. A topic the user may not read is
TOPIC_AUTHORIZATION_FAILED where asked for, and left out of "all".
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

API_KEY = 9


@register(API_KEY, "OffsetFetch", 1, 3)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, request)


async def _answer(session: Session, header: RequestHeader, request: Any) -> Body:
    wanted = (
        None
        if request.topics is None
        else [(t.name, p) for t in request.topics for p in t.partition_indexes]
    )
    code, found = Code.NONE, {}
    try:
        reply = await line(session).request(
            protocol.OffsetFetch(
                request.group_id, None if wanted is None else readable(session, wanted)
            ),
            protocol.OffsetFetchReply,
        )
        found = {(o.topic, o.partition): o for o in reply.offsets}
        shown = set(readable(session, list(found)))  # "all" leaves the rest out
        found = {tp: o for tp, o in found.items() if tp in shown}
    except errors.ShmbrokerError as exc:
        code = group_code(exc)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(found) if wanted is None else wanted:
        by_topic.setdefault(topic, []).append(partition)
    response = codec.response_type(API_KEY, header.api_version)
    topic_type = codec.nested(response, "OffsetFetchResponseTopic")
    partition_type = codec.nested(response, "OffsetFetchResponsePartition")
    topics = []
    for topic, partitions in by_topic.items():
        answers = []
        for p in partitions:
            committed = found.get((topic, p))
            answers.append(
                codec.build(
                    partition_type, partition_index=p,
                    error_code=partition_code(session, code, topic),
                    committed_offset=-1 if committed is None else committed.offset,
                    metadata="" if committed is None else committed.metadata,
                )
            )  # fmt: skip
        topics.append(codec.build(topic_type, name=topic, partitions=tuple(answers)))
    body = codec.build(response, throttle_time=0, error_code=code, topics=tuple(topics))
    return [codec.encode(body)]
