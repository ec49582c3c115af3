"""DeleteTopics (key 20), v1: through the supervisor, one topic at a time; the
gateway forgets the topic's rings at once. Differs from Kafka: v0 is not served
(kio, our codec, has no v0; clients ask v1 or later)."""

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

API_KEY = 20


@register(API_KEY, "DeleteTopics", 1, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    names = list(request.topic_names)
    denied = authorizer.denied_topics(session, names, "delete")
    return _answer(session.gateway, version, names, denied)


async def _answer(
    gateway: Gateway, version: int, names: list[str], denied: set[str]
) -> Body:
    codes = await gateway.blocking(_delete_all, gateway, names, denied)
    for name, code in zip(names, codes, strict=True):
        if code == Code.NONE:
            gateway.topics.drop(name)
    response = codec.response_type(API_KEY, version)
    result = codec.nested(response, "DeletableTopicResult")
    responses = tuple(
        codec.build(result, name=name, error_code=code)
        for name, code in zip(names, codes, strict=True)
    )
    return [codec.encode(codec.build(response, throttle_time=0, responses=responses))]


def _delete_all(gateway: Gateway, names: list[str], denied: set[str]) -> list[Code]:
    out = []
    for name in names:
        if name in denied:
            out.append(Code.TOPIC_AUTHORIZATION_FAILED)
            continue
        try:
            gateway.admin.delete_topic(name)
            out.append(Code.NONE)
        except errors.ShmbrokerError as exc:
            out.append(code_for(exc))
    return out
