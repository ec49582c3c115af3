"""The Kafka APIs the gateway answers: one module per API, each registering its
handler under its key with the versions it serves (kfake's registry). ApiVersions
advertises exactly what is registered here; registering a key twice fails at import.

A handler takes the session, the parsed request header and the whole request frame,
and returns the response body as buffers, None for no response (Produce with
acks=0), an awaitable of either when it must wait before its effect (a long-poll
Fetch, the supervisor: the connection's next requests wait too), or a `Deferred`
when its effect is done and only its answer waits (an fsync: the next requests go
on). It raises ProtocolError for a body that does not parse, and the connection is
closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from shmbroker.kafka.codec import Buffer, RequestHeader

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

Body: TypeAlias = "list[Buffer] | None"


class Deferred:
    """An answer that comes later while the connection's next requests go on."""

    __slots__ = ("answer",)

    def __init__(self, answer: Awaitable[Body]) -> None:
        self.answer = answer


Reply: TypeAlias = "Body | Awaitable[Body | Deferred] | Deferred"
Handler: TypeAlias = "Callable[[Session, RequestHeader, Buffer], Reply]"


class Api(NamedTuple):
    key: int
    name: str
    min_version: int  # advertised range, inclusive
    max_version: int
    handler: Handler
    holds_views: bool  # the reply holds views of a reader's buffer: send it at once


APIS: dict[int, Api] = {}


def register(
    key: int,
    name: str,
    min_version: int,
    max_version: int,
    *,
    holds_views: bool = False,
) -> Callable[[Handler], Handler]:
    def add(handler: Handler) -> Handler:
        if key in APIS:
            raise RuntimeError(
                f"Kafka API key {key} ({name}) registered twice: by "
                f"{APIS[key].handler.__module__} and {handler.__module__}"
            )
        APIS[key] = Api(key, name, min_version, max_version, handler, holds_views)
        return handler

    return add


# every API module registers itself on import
from shmbroker.gateway.apis import (  # noqa: E402
    alter_configs,
    api_versions,
    create_partitions,
    create_topics,
    delete_groups,
    delete_topics,
    describe_configs,
    describe_groups,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    produce,
    sasl_authenticate,
    sasl_handshake,
    sync_group,
)

__all__ = [
    "APIS",
    "Api",
    "Body",
    "Deferred",
    "Handler",
    "Reply",
    "alter_configs",
    "api_versions",
    "create_partitions",
    "create_topics",
    "delete_groups",
    "delete_topics",
    "describe_configs",
    "describe_groups",
    "fetch",
    "find_coordinator",
    "heartbeat",
    "incremental_alter_configs",
    "init_producer_id",
    "join_group",
    "leave_group",
    "list_groups",
    "list_offsets",
    "metadata",
    "offset_commit",
    "offset_delete",
    "offset_fetch",
    "produce",
    "register",
    "sasl_authenticate",
    "sasl_handshake",
    "sync_group",
]
