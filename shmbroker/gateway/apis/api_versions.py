"""ApiVersions (key 18), v0-v3: the keys and versions of the registry.

KIP-511: a request above v3 is answered in the v0 format with UNSUPPORTED_VERSION
and our ranges, so that the client retries at a version we serve (kafka-python
asks v4 first). The response header is v0 at every version, v3's included.
Differs from Kafka: no features (v3's tagged fields are empty).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shmbroker.gateway.apis import APIS, Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 18


@register(API_KEY, "ApiVersions", 0, 3)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Body:
    version, code = header.api_version, Code.NONE
    if version > 3:
        version, code = 0, Code.UNSUPPORTED_VERSION
    response = codec.response_type(API_KEY, version)
    api = codec.nested(response, "ApiVersion")
    keys = tuple(
        codec.build(api, api_key=a.key, min_version=a.min_version,
                    max_version=a.max_version)
        for a in sorted(APIS.values())
    )  # fmt: skip
    return [
        codec.encode(
            codec.build(response, error_code=code, api_keys=keys, throttle_time=0)
        )
    ]
