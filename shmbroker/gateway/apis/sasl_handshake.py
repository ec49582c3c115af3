"""SaslHandshake (key 17), v0-v1: the client names its SASL mechanism and learns the
enabled ones. After v0 the client's next frames are raw SASL tokens (gateway/sasl.py);
after v1 they come in SaslAuthenticate requests. A second handshake on a logged-in
connection starts a new login (KIP-368). On a listener without SASL every mechanism
is UNSUPPORTED_SASL_MECHANISM, with an empty list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.sasl import IllegalState, UnsupportedMechanism
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 17


@register(API_KEY, "SaslHandshake", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Body:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    auth = session.auth
    code = Code.NONE
    try:
        auth.handshake(request.mechanism, version)
    except UnsupportedMechanism as exc:
        code = Code.UNSUPPORTED_SASL_MECHANISM
        session.close_after_answers(str(exc))
    except IllegalState as exc:
        code = Code.ILLEGAL_SASL_STATE
        session.close_after_answers(str(exc))
    response = codec.build(
        codec.response_type(API_KEY, version),
        error_code=code,
        mechanisms=tuple(auth.mechanisms),
    )
    return [codec.encode(response)]
