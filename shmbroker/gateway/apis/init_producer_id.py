"""InitProducerId (key 22), v0-v1: a new producer id, epoch 0, for an idempotent
producer (librdkafka before 2.11.1 needs v0 in range for idempotence; kafka-python 3
is idempotent by default).

Ids come from blocks of the data directory's counter (gateway/producer_ids.py),
unique across gateway processes and restarts. Differs from Kafka: no transactions,
so a transactional id is TRANSACTIONAL_ID_AUTHORIZATION_FAILED; producer ids never
expire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 22


@register(API_KEY, "InitProducerId", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Body:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    response = codec.response_type(API_KEY, version)
    if request.transactional_id is not None:
        body = codec.build(
            response, throttle_time=0, producer_id=-1, producer_epoch=-1,
            error_code=Code.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        )  # fmt: skip
    else:
        body = codec.build(
            response, throttle_time=0, error_code=Code.NONE, producer_epoch=0,
            producer_id=session.gateway.producer_ids.allocate(),
        )  # fmt: skip
    return [codec.encode(body)]
