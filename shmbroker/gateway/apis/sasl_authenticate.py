"""SaslAuthenticate (key 36), v0-v1: one SASL token each way, after a v1
SaslHandshake; also the raw tokens that follow a v0 handshake (`handle_raw`).

A failed login is answered SASL_AUTHENTICATION_FAILED with Kafka's message (the same
for an unknown user and a wrong password) and the connection closes; after a raw
token it just closes (there is no error to send). v1 gives session_lifetime_ms
(KIP-368): connections.max.reauth.ms, 0 for no limit. Differs from Kafka: v2
(flexible) is not served; clients fall back to v1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmbroker.gateway.apis import Body, register
from shmbroker.gateway.sasl import AuthenticationFailed, IllegalState
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, RequestHeader
from shmbroker.kafka.errors import Code

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

API_KEY = 36


@register(API_KEY, "SaslAuthenticate", 0, 1)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    return _answer(session, version, bytes(request.auth_bytes))


async def _answer(session: Session, version: int, token: bytes) -> Body:
    auth = session.auth
    code, message, answer, lifetime_ms = Code.NONE, None, b"", 0
    try:
        answer, done = await _step(session, token)
    except (AuthenticationFailed, IllegalState) as exc:
        code = (
            Code.ILLEGAL_SASL_STATE
            if isinstance(exc, IllegalState)
            else Code.SASL_AUTHENTICATION_FAILED
        )
        message = str(exc)
        session.close_after_answers(f"SaslAuthenticate: {exc}")
    else:
        if done and auth.lifetime_ms:
            lifetime_ms = auth.lifetime_ms
    response = codec.build(
        codec.response_type(API_KEY, version),
        error_code=code,
        error_message=message,
        auth_bytes=answer,
        session_lifetime=lifetime_ms,
    )
    return [codec.encode(response)]


async def handle_raw(session: Session, token: bytes) -> Body:
    """A raw token after a v0 handshake: the raw answer (the session frames it
    without a header). A failed login closes the connection."""
    try:
        answer, _ = await _step(session, token)
    except (AuthenticationFailed, IllegalState) as exc:
        session.close_after_answers(f"SASL token after SaslHandshake v0: {exc}")
        return None
    return [answer]


async def _step(session: Session, token: bytes) -> tuple[bytes, bool]:
    """One token of the login, in a thread (hashing blocks); a failed login is
    counted for /metrics."""
    try:
        return await session.gateway.blocking(session.auth.authenticate, token)
    except AuthenticationFailed:
        session.gateway.metrics.failed_authentication.add()
        raise
