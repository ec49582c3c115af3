"""IncrementalAlterConfigs (key 44), v0-v1 (v1 is flexible): SET and DELETE (back
to the default) on a topic's configs, through the supervisor; validate_only checks
without changing. APPEND and SUBTRACT are for list configs, which topics here do
not have: INVALID_CONFIG. Broker configs are static: INVALID_REQUEST."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway.apis import register
from shmbroker.gateway.apis.alter_configs import answer
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader

if TYPE_CHECKING:
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.session import Session

API_KEY = 44
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


@register(API_KEY, "IncrementalAlterConfigs", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    return answer(session, API_KEY, version, request, _changes)


def _changes(
    gateway: Gateway, name: str, configs: Any
) -> tuple[dict[str, str], list[str]]:
    set_: dict[str, str] = {}
    delete: list[str] = []
    for c in configs:
        if c.config_operation == SET and c.value is not None:
            set_[c.name] = c.value
        elif c.config_operation == DELETE:
            delete.append(c.name)
        else:
            raise errors.ConfigError(
                f"{c.name}: operation {c.config_operation} is not served (SET=0 and "
                f"DELETE=1 are; APPEND and SUBTRACT are for list configs)"
            )
    return set_, delete
