"""CreatePartitions (key 37), v0-v1: grow a topic to a new partition count through
the supervisor (never shrinks, as Kafka). Assignments may name only broker 0;
validate_only checks the count against the topic's without changing it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.session import Session

API_KEY = 37


@register(API_KEY, "CreatePartitions", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    names = (t.name for t in request.topics)
    denied = authorizer.denied_topics(session, names, "create")
    return _answer(session.gateway, version, request, denied)


async def _answer(
    gateway: Gateway, version: int, request: Any, denied: set[str]
) -> Body:
    results = await gateway.blocking(_grow_all, gateway, request, denied)
    gateway.topics.update(
        [m for _, _, _, m in results if m is not None], open_new=False
    )
    response = codec.response_type(API_KEY, version)
    result = codec.nested(response, "CreatePartitionsTopicResult")
    out = tuple(
        codec.build(result, name=name, error_code=code, error_message=message)
        for name, code, message, _ in results
    )
    return [codec.encode(codec.build(response, throttle_time=0, results=out))]


def _grow_all(
    gateway: Gateway, request: Any, denied: set[str]
) -> list[tuple[str, Code, str | None, Any]]:
    out: list[tuple[str, Code, str | None, Any]] = []
    for topic in request.topics:
        if topic.name in denied:
            why = f"not allowed to add partitions to topic {topic.name!r}"
            out.append((topic.name, Code.TOPIC_AUTHORIZATION_FAILED, why, None))
            continue
        try:
            if topic.assignments and any(
                set(a.broker_ids) - {0} for a in topic.assignments
            ):
                why = "assignments may name only broker 0, the one broker"
                out.append((topic.name, Code.INVALID_REPLICATION_FACTOR, why, None))
                continue
            if request.validate_only:
                current = gateway.connection.topic(topic.name).partitions
                if topic.count <= current:
                    raise errors.InvalidArgument(
                        f"topic {topic.name!r} has {current} partitions: the new "
                        f"count must be more than that, not {topic.count}"
                    )
                out.append((topic.name, Code.NONE, None, None))
                continue
            meta = gateway.admin.create_partitions(topic.name, topic.count)
            out.append((topic.name, Code.NONE, None, meta))
        except errors.InvalidArgument as exc:
            out.append((topic.name, Code.INVALID_PARTITIONS, str(exc), None))
        except errors.ShmbrokerError as exc:
            out.append((topic.name, code_for(exc), str(exc), None))
    return out
