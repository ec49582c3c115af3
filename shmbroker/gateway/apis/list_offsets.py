"""ListOffsets (key 2), v1-v2: EARLIEST (-2) is the log start offset, LATEST (-1)
the high watermark (= the last stable offset: no transactions), and a timestamp
the first offset whose record's timestamp is at or after it (the time indexes say
where to start reading), with that record's timestamp; none gives offset -1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code, code_for
from shmbroker.log.reader import LogReader

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session
    from shmbroker.gateway.topics import Partition

API_KEY = 2
EARLIEST, LATEST = -2, -1


@register(API_KEY, "ListOffsets", 1, 2)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    wanted = {
        t.name: max((p.partition_index for p in t.partitions), default=0)
        for t in request.topics
    }
    missing = session.gateway.missing(wanted)
    if missing:
        return _after_loading(session, version, request, missing)
    return _answer(session, version, request)


async def _after_loading(
    session: Session, version: int, request: Any, missing: list[str]
) -> Body:
    await session.gateway.load(missing)
    return _answer(session, version, request)


def _answer(session: Session, version: int, request: Any) -> Body:
    response = codec.response_type(API_KEY, version)
    topic_type = codec.nested(response, "ListOffsetsTopicResponse")
    partition_type = codec.nested(response, "ListOffsetsPartitionResponse")
    topics = []
    for t in request.topics:
        partitions = []
        for p in t.partitions:
            partition = session.gateway.topics.partition(t.name, p.partition_index)
            code, timestamp, offset = Code.UNKNOWN_TOPIC_OR_PARTITION, -1, -1
            if not authorizer.topic_allowed(session, t.name, "read"):
                code = Code.TOPIC_AUTHORIZATION_FAILED
            elif partition is not None:
                try:
                    code = Code.NONE
                    timestamp, offset = _lookup(partition, p.timestamp)
                except errors.ClosedError:
                    code = Code.NOT_LEADER_OR_FOLLOWER
                except errors.ShmbrokerError as exc:
                    code = code_for(exc)
            partitions.append(
                codec.build(
                    partition_type, partition_index=p.partition_index,
                    error_code=code, timestamp=timestamp, offset=offset,
                )
            )  # fmt: skip
        topics.append(
            codec.build(topic_type, name=t.name, partitions=tuple(partitions))
        )
    return [codec.encode(codec.build(response, throttle_time=0, topics=tuple(topics)))]


def _lookup(partition: Partition, spec: int) -> tuple[int, int]:
    """(timestamp, offset) for a ListOffsets timestamp spec."""
    reader = partition.reader
    if spec == EARLIEST:
        return -1, reader.log_start_offset
    if spec == LATEST:
        return -1, reader.high_watermark
    offset = reader.offset_for_time(spec)
    if offset is None:
        return -1, -1
    for record in LogReader(reader, offset).poll(0):
        if record.offset >= offset:
            return record.timestamp, record.offset
    return -1, offset
