"""CreateTopics (key 19), v2-v4 (v4, the same format, says a replication factor of
-1 is understood: librdkafka's AdminClient needs it for a topic without one):
through the supervisor, one topic at a time.

-1 partitions (kafkajs sends it when omitted) is the broker's num.partitions; the
replication factor must be -1 or 1 (one broker), and manual assignments may name
only broker 0 (their count is the partition count). validate_only checks without
creating. Errors per topic, with Kafka's codes and our message; a topic named twice
in one request is refused (INVALID_REQUEST), once, as Kafka does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.config import validate_topic_name
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.session import Session

API_KEY = 19


@register(API_KEY, "CreateTopics", 2, 4)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    names = (t.name for t in request.topics)
    denied = authorizer.denied_topics(session, names, "create")
    return _answer(session.gateway, version, request, denied)


async def _answer(
    gateway: Gateway, version: int, request: Any, denied: set[str]
) -> Body:
    results = await gateway.blocking(_create_all, gateway, request, denied)
    response = codec.response_type(API_KEY, version)
    result = codec.nested(response, "CreatableTopicResult")
    topics = tuple(
        codec.build(result, name=name, error_code=code, error_message=message)
        for name, code, message in results
    )
    return [codec.encode(codec.build(response, throttle_time=0, topics=topics))]


def _create_all(
    gateway: Gateway, request: Any, denied: set[str]
) -> list[tuple[str, Code, str | None]]:
    """Blocking: each topic's (name, code, message)."""
    out: list[tuple[str, Code, str | None]] = []
    names = [t.name for t in request.topics]
    for topic in request.topics:
        if topic.name in denied:
            why = f"not allowed to create topic {topic.name!r}"
            out.append((topic.name, Code.TOPIC_AUTHORIZATION_FAILED, why))
            continue
        if names.count(topic.name) > 1:  # as Kafka: once in the answer, refused
            if all(name != topic.name for name, _, _ in out):
                why = f"topic {topic.name!r} is named more than once"
                out.append((topic.name, Code.INVALID_REQUEST, why))
            continue
        try:
            _create(gateway, topic, bool(request.validate_only))
            out.append((topic.name, Code.NONE, None))
        except _Refused as exc:
            out.append((topic.name, exc.code, str(exc)))
        except errors.ShmbrokerError as exc:
            out.append((topic.name, code_for(exc), str(exc)))
    return out


class _Refused(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


def _create(gateway: Gateway, topic: Any, validate_only: bool) -> None:
    try:
        validate_topic_name(topic.name)
    except errors.InvalidArgument as exc:
        raise _Refused(Code.INVALID_TOPIC_EXCEPTION, str(exc)) from None
    if topic.replication_factor not in (-1, 1):
        raise _Refused(
            Code.INVALID_REPLICATION_FACTOR,
            f"replication factor {topic.replication_factor}: one broker holds every "
            f"partition, so it is 1",
        )
    partitions = topic.num_partitions
    if topic.assignments:
        if partitions != -1:
            raise _Refused(
                Code.INVALID_REQUEST,
                "give either a partition count or replica assignments, not both",
            )
        if any(set(a.broker_ids) - {0} for a in topic.assignments):
            raise _Refused(
                Code.INVALID_REPLICATION_FACTOR,
                "replica assignments may name only broker 0, the one broker",
            )
        partitions = len(topic.assignments)
    elif partitions == -1:
        partitions = gateway.config.num_partitions
    configs = {c.name: c.value for c in topic.configs if c.value is not None}
    try:
        gateway.admin.create_topic(
            topic.name, partitions, configs, validate_only=validate_only
        )
    except errors.ConfigError:
        raise
    except errors.InvalidArgument as exc:  # the name passed: the count did not
        raise _Refused(Code.INVALID_PARTITIONS, str(exc)) from None
