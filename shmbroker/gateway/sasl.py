"""Authentication of one connection: Kafka's SASL handshake, its mechanisms (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512 by scramp) against the users file, and the session
lifetime (KIP-368).

Before a SASL listener's connection has logged in, only ApiVersions, SaslHandshake
and SaslAuthenticate are served; anything else closes the connection. After a v0
handshake the client's next frames are raw SASL tokens (no request header), answered
as raw length-prefixed tokens. With connections.max.reauth.ms, a session ends that
long after its login: the client must log in again on the same connection (a new
SaslHandshake, same mechanism and user) before it, or its next request closes the
connection. A failed login is logged with the peer and user, never the password.

The principal: the SASL user; on an SSL listener the client certificate's subject CN
(Kafka's default is the whole DN); ANONYMOUS where there is neither.
"""

from __future__ import annotations

import logging
import secrets
import time

import scramp

from shmbroker import errors
from shmbroker.config import BrokerConfig
from shmbroker.users import User, UserStore

log = logging.getLogger(__name__)

ANONYMOUS = "ANONYMOUS"  # Kafka's principal for unauthenticated connections
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
_BEFORE_LOGIN = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})


class AuthenticationFailed(errors.ShmbrokerError):
    """The login failed; the message is what the client is told."""


class UnsupportedMechanism(errors.ShmbrokerError):
    pass


class IllegalState(errors.ShmbrokerError):
    pass


class Authenticator:
    """The SASL state of one connection."""

    def __init__(
        self,
        config: BrokerConfig,
        users: UserStore,
        peer: str,
        principal: str | None = None,
    ) -> None:
        """principal: already known (a client certificate's), or None."""
        self.users = users
        self.peer = peer
        self.required = config.security_protocol.startswith("SASL_")
        self.mechanisms = config.sasl_mechanisms if self.required else []
        self.lifetime_ms = config.connections_max_reauth_ms
        self.principal = principal or ANONYMOUS
        self.authenticated = not self.required
        self.mechanism: str | None = None  # chosen by the handshake
        self.raw_tokens = False  # after a v0 handshake
        self.expires = float("inf")  # monotonic: when the session ends
        self._exchange: _Exchange | None = None

    def refuses(self, api_key: int) -> str | None:
        """Why a request of api_key may not be served now (the connection then
        closes), or None."""
        if self._exchange is not None:  # a login (or a new one) under way
            if api_key == SASL_AUTHENTICATE:
                return None
            return f"API key {api_key} in the middle of a SASL login"
        if not self.authenticated:
            if api_key not in _BEFORE_LOGIN:
                return f"API key {api_key} before authentication"
        elif self.is_expired and api_key != SASL_HANDSHAKE:
            return (
                f"the session of {self.principal} ended (connections.max.reauth.ms="
                f"{self.lifetime_ms}) without a new login; API key {api_key} refused"
            )
        return None

    @property
    def is_expired(self) -> bool:
        return time.monotonic() >= self.expires

    def handshake(self, mechanism: str, version: int) -> None:
        """SaslHandshake: start a login with mechanism. Raises UnsupportedMechanism
        or IllegalState."""
        if mechanism not in self.mechanisms:
            raise UnsupportedMechanism(
                f"SASL mechanism {mechanism!r} is not enabled; enabled: "
                f"{', '.join(self.mechanisms) or 'none (not a SASL listener)'}"
            )
        if self._exchange is not None:
            raise IllegalState("a SASL handshake in the middle of a login")
        if self.mechanism is not None and mechanism != self.mechanism:
            raise IllegalState(
                f"a new login must use the first one's mechanism, {self.mechanism}, "
                f"not {mechanism}"
            )
        self.mechanism = mechanism
        self._exchange = _exchange(mechanism, self.users)
        self.raw_tokens = version == 0

    def authenticate(self, token: bytes) -> tuple[bytes, bool]:
        """One client token: the server's answer and whether the login is done.
        Raises AuthenticationFailed (logged here), IllegalState. Blocking (PLAIN
        hashes the password): call it in a thread."""
        exchange = self._exchange
        if exchange is None:
            raise IllegalState("SaslAuthenticate without a SaslHandshake first")
        try:
            answer, user = exchange.step(token)
        except AuthenticationFailed as exc:
            self._exchange = None
            self.raw_tokens = False
            log.warning(
                "gateway: failed authentication from %s with %s: %s",
                self.peer, self.mechanism, exc.__cause__ or exc,
            )  # fmt: skip
            raise
        if user is None:
            return answer, False
        self._exchange = None
        self.raw_tokens = False
        if self.authenticated and self.required and user != self.principal:
            log.warning(
                "gateway: %s from %s logged in again as %s: refused",
                self.principal, self.peer, user,
            )  # fmt: skip
            raise AuthenticationFailed(
                f"a new login must be of the same user, {self.principal}"
            )
        self.principal = user
        self.authenticated = True
        if self.lifetime_ms:
            self.expires = time.monotonic() + self.lifetime_ms / 1000
        log.debug("gateway: %s logged in from %s with %s", user, self.peer,
                  self.mechanism)  # fmt: skip
        return answer, True


def _failed(mechanism: str) -> AuthenticationFailed:
    """What the client is told whatever went wrong (unknown user or wrong password
    alike, as Kafka: no user enumeration)."""
    return AuthenticationFailed(
        f"Authentication failed during authentication due to invalid credentials "
        f"with SASL mechanism {mechanism}"
    )


class _Exchange:
    def step(self, token: bytes) -> tuple[bytes, str | None]:
        """The answer to token, and the user once logged in."""
        raise NotImplementedError


def _exchange(mechanism: str, users: UserStore) -> _Exchange:
    if mechanism == "PLAIN":
        return _Plain(users)
    return _Scram(mechanism, users)


class _Plain(_Exchange):
    """RFC 4616: `authzid NUL authcid NUL password`, one token."""

    def __init__(self, users: UserStore) -> None:
        self.users = users

    def step(self, token: bytes) -> tuple[bytes, str | None]:
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise _failed("PLAIN") from ValueError("not authzid NUL user NUL password")
        try:
            authzid, name, password = (p.decode() for p in parts)
        except UnicodeDecodeError as exc:
            raise _failed("PLAIN") from ValueError(f"not UTF-8: {exc.reason}")
        if authzid and authzid != name:
            raise _failed("PLAIN") from ValueError(
                f"user {name!r} asked to act as {authzid!r}"
            )
        user = _user(self.users, name)
        if user is None or not user.check_password(password):
            raise _failed("PLAIN") from ValueError(
                f"user {name!r}: " + ("unknown" if user is None else "wrong password")
            )
        return b"", name


class _Scram(_Exchange):
    """RFC 5802: client-first -> server-first, client-final -> server-final."""

    def __init__(self, mechanism: str, users: UserStore) -> None:
        self.mechanism = mechanism
        self.users = users
        self.name: str | None = None
        # an alphanumeric nonce, as Kafka's: librdkafka 2.0 misreads scramp's
        # base64 one ("Server nonce doesn't match")
        self.server = scramp.ScramMechanism(mechanism).make_server(
            self._credential, s_nonce=secrets.token_hex(24)
        )

    def _credential(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        self.name = name
        user = _user(self.users, name)
        credential = None if user is None else user.scram.get(self.mechanism)
        if credential is None:
            raise scramp.ScramException(
                f"user {name!r}: no {self.mechanism} credential"
            )
        return (
            credential.salt,
            credential.stored_key,
            credential.server_key,
            credential.iterations,
        )

    def step(self, token: bytes) -> tuple[bytes, str | None]:
        try:
            text = token.decode()
            if self.name is None:
                self.server.set_client_first(text)
                return self.server.get_server_first().encode(), None
            self.server.set_client_final(text)
            return self.server.get_server_final().encode(), self.name
        except (scramp.ScramException, UnicodeDecodeError, ValueError) as exc:
            who = f"user {self.name!r}: " if self.name else ""
            raise _failed(self.mechanism) from ValueError(f"{who}{exc}")


def _user(users: UserStore, name: str) -> User | None:
    """The user, or None; a broken users file fails the login (logged), it does
    not crash the gateway."""
    try:
        return users.get(name)
    except errors.ConfigError as exc:
        log.error("gateway: cannot check logins: %s", exc)
        return None
