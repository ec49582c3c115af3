"""OffsetCommit (key 8), v2-v3: a member of the current generation commits (or,
with generation -1 and no member id, anyone to a group without live members: a
consumer using assign()). Stored durably by the supervisor's offset store.

Differs from Kafka: a request is committed whole or not at all (the coordinator
checks every partition first), so one error is answered for each partition; the
retention time is ignored (offsets are kept until the group or topic is deleted).
Partitions of a topic the user may not read are TOPIC_AUTHORIZATION_FAILED and left
out; the rest are committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import protocol
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.groups import outcome, partition_code, readable
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 8


@register(API_KEY, "OffsetCommit", 2, 3)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    request = codec.decode_request(
        API_KEY, header.api_version, frame, header.body_offset
    )
    return _answer(session, header, request)


async def _answer(session: Session, header: RequestHeader, request: Any) -> Body:
    allowed = set(
        readable(session, [(t.name, p.partition_index) for t in request.topics
                           for p in t.partitions])
    )  # fmt: skip
    offsets = [
        protocol.CommittedOffset(
            t.name, p.partition_index, p.committed_offset, p.committed_metadata or ""
        )
        for t in request.topics
        for p in t.partitions
        if (t.name, p.partition_index) in allowed
    ]
    message = protocol.OffsetCommit(
        request.group_id,
        request.generation_id_or_member_epoch,
        request.member_id,
        offsets,
    )
    code = await outcome(session, message)
    response = codec.response_type(API_KEY, header.api_version)
    topic_type = codec.nested(response, "OffsetCommitResponseTopic")
    partition_type = codec.nested(response, "OffsetCommitResponsePartition")
    topics = tuple(
        codec.build(
            topic_type,
            name=t.name,
            partitions=tuple(
                codec.build(
                    partition_type,
                    partition_index=p.partition_index,
                    error_code=partition_code(session, code, t.name),
                )
                for p in t.partitions
            ),
        )
        for t in request.topics
    )
    return [codec.encode(codec.build(response, throttle_time=0, topics=topics))]
