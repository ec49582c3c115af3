"""DescribeConfigs (key 32), v0-v1: every config of a topic with its value and
source (a topic override, the broker's default for topics, or the default) and,
with include_synonyms (v1), the values it overrides; the broker (resource type 4)
with the gateway's settings, read-only.

v0 is read as v1 with include_synonyms false (v1 only adds that field at the end)
and answered by hand (kio, our codec, has no v0). Differs from Kafka: broker
configs are the ones this gateway knows, all read-only and static.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.client.admin import ConfigEntry, ConfigSource, topic_configs
from shmbroker.config import kafka_name
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.session import Session

API_KEY = 32
TOPIC, BROKER = 2, 4  # Kafka's resource types
BROKER_KEYS = (
    "num_partitions", "auto_create_topics_enable", "listeners",
    "advertised_listeners", "socket_request_max_bytes", "max_connections",
    "gateway_acks_all_fsync",
)  # fmt: skip


@register(API_KEY, "DescribeConfigs", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    if version == 0:  # v1 is v0 and one trailing bool: include_synonyms false
        request = codec.decode_request(
            API_KEY, 1, bytes(frame) + b"\x00", header.body_offset
        )
    else:
        request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    topics = (r.resource_name for r in request.resources if r.resource_type == TOPIC)
    denied = authorizer.denied_topics(session, topics, authorizer.DESCRIBE)
    return _answer(session.gateway, version, request, denied)


async def _answer(
    gateway: Gateway, version: int, request: Any, denied: set[str]
) -> Body:
    results = await gateway.blocking(_describe_all, gateway, request.resources, denied)
    if version == 0:
        return [codec.encode_describe_configs_v0(results)]
    synonyms = bool(request.include_synonyms)
    response = codec.response_type(API_KEY, version)
    result_type = codec.nested(response, "DescribeConfigsResult")
    config_type = codec.nested(response, "DescribeConfigsResourceResult")
    synonym_type = codec.nested(response, "DescribeConfigsSynonym")
    out = []
    for r in results:
        configs = tuple(
            codec.build(
                config_type, name=c.name, value=c.value, read_only=r.read_only,
                config_source=c.source, is_sensitive=False,
                synonyms=tuple(
                    codec.build(synonym_type, name=c.name, value=v, source=s)
                    for s, v in c.synonyms
                ) if synonyms else (),
            )
            for c in r.configs
        )  # fmt: skip
        out.append(
            codec.build(
                result_type, error_code=r.error_code, error_message=r.error_message,
                resource_type=r.resource_type, resource_name=r.resource_name,
                configs=configs,
            )
        )  # fmt: skip
    return [codec.encode(codec.build(response, throttle_time=0, results=tuple(out)))]


def _describe_all(
    gateway: Gateway, resources: Any, denied: set[str]
) -> list[codec.DescribedResource]:
    out = []
    for resource in resources:
        kind, name = resource.resource_type, resource.resource_name
        keys = resource.configuration_keys
        if kind == TOPIC and name in denied:
            out.append(
                codec.DescribedResource(
                    Code.TOPIC_AUTHORIZATION_FAILED, f"not allowed: topic {name!r}",
                    kind, name, True, [],
                )
            )  # fmt: skip
            continue
        try:
            if kind == TOPIC:
                configs, read_only = topic_configs(gateway.connection, name), False
            elif kind == BROKER:
                configs, read_only = _broker_configs(gateway), True
            else:
                raise errors.InvalidArgument(
                    f"resource type {kind}: topics (2) and the broker (4) have configs"
                )
            if keys is not None:
                configs = [c for c in configs if c.name in keys]
            out.append(
                codec.DescribedResource(Code.NONE, None, kind, name, read_only, configs)
            )
        except errors.ShmbrokerError as exc:
            out.append(
                codec.DescribedResource(code_for(exc), str(exc), kind, name, True, [])
            )
    return out


def _broker_configs(gateway: Gateway) -> list[ConfigEntry]:
    config = gateway.config
    out = []
    for field in dataclasses.fields(config):
        if field.name in BROKER_KEYS:
            value = getattr(config, field.name)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            out.append(
                ConfigEntry(
                    kafka_name(field.name),
                    text,
                    ConfigSource.STATIC_BROKER_CONFIG,
                    [(ConfigSource.STATIC_BROKER_CONFIG, text)],
                )
            )
    return sorted(out, key=lambda c: c.name)
