"""AlterConfigs (key 33), v0-v1: replace a topic's overrides with the ones given
(a config left out, or with a null value, goes back to its default), through the
supervisor; validate_only checks without changing. Broker configs are static (the
config file): refused with INVALID_REQUEST."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.topics import alter_topic_configs, topic_overrides
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.session import Session

API_KEY = 33
TOPIC = 2


@register(API_KEY, "AlterConfigs", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    return answer(session, API_KEY, version, request, _changes)


def _changes(
    gateway: Gateway, name: str, configs: Any
) -> tuple[dict[str, str], list[str]]:
    """Blocking: (set, delete) that make the topic's overrides exactly configs."""
    given = {c.name: c.value for c in configs}
    current = topic_overrides(gateway.connection, name)
    set_ = {k: v for k, v in given.items() if v is not None}
    return set_, [k for k in current if k not in set_]


async def answer(
    session: Session, api_key: int, version: int, request: Any, changes: Any
) -> Body:
    """AlterConfigs and IncrementalAlterConfigs: the same answer, changes differ."""
    gateway = session.gateway
    topics = (r.resource_name for r in request.resources if r.resource_type == TOPIC)
    denied = authorizer.denied_topics(session, topics, "create")
    results = await gateway.blocking(_alter_all, gateway, request, changes, denied)
    gateway.topics.update([m for *_, m in results if m is not None], open_new=False)
    response = codec.response_type(api_key, version)
    result = codec.nested(response, "AlterConfigsResourceResponse")
    responses = tuple(
        codec.build(
            result, error_code=code, error_message=message, resource_type=kind,
            resource_name=name,
        )
        for kind, name, code, message, _ in results
    )  # fmt: skip
    return [codec.encode(codec.build(response, throttle_time=0, responses=responses))]


def _alter_all(
    gateway: Gateway, request: Any, changes: Any, denied: set[str]
) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for resource in request.resources:
        kind, name = resource.resource_type, resource.resource_name
        if kind == TOPIC and name in denied:
            why = f"not allowed to change the configs of topic {name!r}"
            out.append((kind, name, Code.TOPIC_AUTHORIZATION_FAILED, why, None))
            continue
        try:
            if kind != TOPIC:
                raise errors.InvalidArgument(
                    f"resource type {kind}: only topic configs (2) change at run "
                    f"time; the broker's are in its config file"
                )
            set_, delete = changes(gateway, name, resource.configs)
            meta = alter_topic_configs(
                gateway.admin, name, set_, delete, bool(request.validate_only)
            )
            out.append((kind, name, Code.NONE, None, meta))
        except errors.ShmbrokerError as exc:
            out.append((kind, name, code_for(exc), str(exc), None))
    return out
