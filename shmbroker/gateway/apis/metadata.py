"""Metadata (key 3), v0-v7: one broker (node 0, the advertised address), every
partition led by it.

A null topic list (v1+; an empty one at v0) means every topic and creates none.
Named topics that do not exist are created when the request allows it (v4+, always
before) and the broker's auto.create.topics.enable does; an illegal name is
INVALID_TOPIC_EXCEPTION. Differs from Kafka: leader epochs are -1 (v7), there are
no offline replicas (v5+), and a just-created topic is ready at once (no
LEADER_NOT_AVAILABLE first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors, protocol
from shmbroker.config import TopicConfig, validate_topic_name
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.client.connection import Connection
    from shmbroker.gateway.session import Session

API_KEY = 3
NODE_ID = 0  # the one broker


@register(API_KEY, "Metadata", 0, 7)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    names: list[str] | None = None
    if request.topics is not None:
        names = [t.name for t in request.topics]
    if version == 0 and not names:
        names = None  # v0 has no null: an empty list means every topic
    auto_create = version < 4 or bool(request.allow_auto_topic_creation)
    return _answer(session, version, names, auto_create)


async def _answer(
    session: Session, version: int, names: list[str] | None, auto_create: bool
) -> Body:
    gateway = session.gateway
    denied: set[str] = set()
    if names is not None:
        denied = authorizer.denied_topics(session, names, authorizer.DESCRIBE)
        names = [n for n in names if n not in denied]
        # auto-creation is the creating user's (Kafka: CREATE on the topic)
        auto_create = auto_create and all(
            authorizer.topic_allowed(session, n, "create") for n in names
        )
    found = await gateway.blocking(_lookup, gateway.connection, names, auto_create)
    if names is None:  # every topic: only those the principal may see
        found = {
            n: m
            for n, m in found.items()
            if authorizer.topic_allowed(session, n, authorizer.DESCRIBE)
        }
    found.update(dict.fromkeys(denied, Code.TOPIC_AUTHORIZATION_FAILED))
    gateway.topics.update(
        [m for m in found.values() if isinstance(m, protocol.TopicMetadata)],
        open_new=False,
    )
    response = codec.response_type(API_KEY, version)
    broker = codec.nested(response, "MetadataResponseBroker")
    topic = codec.nested(response, "MetadataResponseTopic")
    partition = codec.nested(response, "MetadataResponsePartition")
    topics = []
    for name, meta in found.items():
        if isinstance(meta, protocol.TopicMetadata):
            partitions = tuple(
                codec.build(
                    partition, error_code=Code.NONE, partition_index=p,
                    leader_id=NODE_ID, leader_epoch=-1, replica_nodes=(NODE_ID,),
                    isr_nodes=(NODE_ID,), offline_replicas=(),
                )
                for p in range(meta.partitions)
            )  # fmt: skip
            code = Code.NONE
        else:
            partitions, code = (), meta
        topics.append(
            codec.build(
                topic, error_code=code, name=name, is_internal=False,
                partitions=partitions,
            )
        )  # fmt: skip
    advertised = gateway.advertised
    body = codec.build(
        response,
        throttle_time=0,
        brokers=(
            codec.build(
                broker,
                node_id=NODE_ID,
                host=advertised.host,
                port=advertised.port,
                rack=None,
            ),
        ),
        cluster_id=gateway.cluster_id or None,
        controller_id=NODE_ID,
        topics=tuple(topics),
    )
    return [codec.encode(body)]


def _lookup(
    connection: Connection, names: list[str] | None, auto_create: bool
) -> dict[str, protocol.TopicMetadata | Code]:
    """Blocking: each topic's metadata or error code, creating what may be."""
    try:
        reply = connection.request(protocol.Metadata(None), protocol.MetadataReply)
        every = {t.name: t for t in reply.topics}
    except errors.BrokerUnavailable:
        # restarting: the registry file still lists the topics; none is created
        # now, but LEADER_NOT_AVAILABLE makes clients ask again
        registry = protocol.load_registry(connection.data_dir)
        every = {
            name: protocol.TopicMetadata(
                name,
                entry.topic_id,
                entry.partitions,
                TopicConfig.from_kafka(
                    {**registry.topic_defaults, **entry.configs}
                ).to_kafka(),
            )
            for name, entry in registry.topics.items()
        }
        auto_create = False
        missing: Code = Code.LEADER_NOT_AVAILABLE
    else:
        missing = Code.UNKNOWN_TOPIC_OR_PARTITION
    if names is None:
        return dict(sorted(every.items()))
    out: dict[str, protocol.TopicMetadata | Code] = {}
    for name in names:
        if name in every:
            out[name] = every[name]
            continue
        try:
            validate_topic_name(name)
            if not auto_create:
                out[name] = missing
                continue
            out[name] = connection.topic(name, auto_create=True)
        except errors.InvalidArgument:
            out[name] = Code.INVALID_TOPIC_EXCEPTION
        except errors.ShmbrokerError as exc:
            out[name] = code_for(exc)
    return out
