"""FindCoordinator (key 10), v0-v1: always COORDINATOR_NOT_AVAILABLE for now.

Advertised because clients key features on it: librdkafka before 2.11.1 enables
LZ4 only when FindCoordinator v0 is in the broker's range, and `kcat -G` waits for
it. Consumer groups over the gateway are not served yet, so no coordinator is
found: clients using assign() are not affected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 10


@register(API_KEY, "FindCoordinator", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Body:
    version = header.api_version
    codec.decode_request(API_KEY, version, frame, header.body_offset)
    response = codec.build(
        codec.response_type(API_KEY, version),
        throttle_time=0,
        error_code=Code.COORDINATOR_NOT_AVAILABLE,
        error_message="consumer groups are not served over the Kafka protocol yet",
        node_id=-1,
        host="",
        port=-1,
    )
    return [codec.encode(response)]
