"""FindCoordinator (key 10), v0-v1: a group's coordinator is this broker (the
supervisor's coordinator, reached through any gateway process), at the address
Metadata advertises. Differs from Kafka: no transactions, so a transaction
coordinator (key type 1) is COORDINATOR_NOT_AVAILABLE. A group the user may not use
is GROUP_AUTHORIZATION_FAILED (gateway/authorizer.py), as in Kafka.

v0 must be in range: without it `kcat -G` hangs and librdkafka before 2.11.1 turns
LZ4 off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.apis.metadata import NODE_ID
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 10
GROUP = 0  # key_type: a group's coordinator (1 is a transaction's)


@register(API_KEY, "FindCoordinator", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Body:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    response = codec.response_type(API_KEY, version)
    if getattr(request, "key_type", GROUP) != GROUP:
        body = _refusal(response, Code.COORDINATOR_NOT_AVAILABLE,
                        "transactions are not served")  # fmt: skip
    elif authorizer.group_code(session, request.key) != Code.NONE:
        body = _refusal(
            response, Code.GROUP_AUTHORIZATION_FAILED,
            f"{session.auth.principal} may not use group {request.key!r}",
        )  # fmt: skip
    else:
        advertised = session.gateway.advertised
        body = codec.build(
            response, throttle_time=0, error_code=Code.NONE, error_message=None,
            node_id=NODE_ID, host=advertised.host, port=advertised.port,
        )  # fmt: skip
    return [codec.encode(body)]


def _refusal(response: Any, code: Code, message: str) -> Any:
    return codec.build(
        response, throttle_time=0, error_code=code, error_message=message,
        node_id=-1, host="", port=-1,
    )  # fmt: skip
