"""The gateway's users: SCRAM credentials and allow lists in `<data-dir>/users.json`
(mode 0600; `shmbroker users add|list|delete`, Kafka's `kafka-configs --alter
--add-config SCRAM-SHA-256=[password=...]`).

No password is stored: each user has, per SCRAM mechanism, the salt, iteration count,
StoredKey and ServerKey of RFC 5802 (what Kafka keeps in ZooKeeper/KRaft), enough to
check a SCRAM proof and a PLAIN password (PLAIN's password is salted and hashed as
SCRAM's client would, then compared with the StoredKey).

Allow lists (authorization, minimal): a user without one may do everything. A user
with one may do, on a topic, the operations (read, write, create, delete) of the
patterns that match it, and use only the consumer groups its patterns match. A
pattern is a literal name, or a prefix ending in `*` (Kafka's LITERAL and PREFIXED
resource patterns); `*` alone matches every name.

    {"users": {"alice": {"scram": {"SCRAM-SHA-256": {"salt": "<base64>",
      "stored_key": "<base64>", "server_key": "<base64>", "iterations": 4096}},
      "allow": {"topics": {"orders": ["read", "write"], "logs-*": ["read"]},
                "groups": ["billing-*"]}}}}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import msgspec
import scramp

from shmbroker.errors import ConfigError, InvalidArgument

USERS_FILE = "users.json"
LOCK_FILE = "users.lock"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)  # what the gateway can verify
OPERATIONS = ("read", "write", "create", "delete")
DEFAULT_ITERATIONS = 4096  # Kafka's default and minimum for SCRAM-SHA-256/512
MAX_ITERATIONS = 16384  # Kafka's maximum
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# SCRAM escapes ',' and '=' in names, and Kafka principals are printable: keep to a
# set that needs no escaping anywhere (a file, a log line, a command line)
_LEGAL_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,255}")
RELOAD_INTERVAL = 1.0  # seconds: how stale the gateway's view of the file may be


class ScramCredential(msgspec.Struct, frozen=True):
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


class Allow(msgspec.Struct, frozen=True):
    topics: dict[str, list[str]] = {}  # pattern -> operations
    groups: list[str] = []  # patterns


class User(msgspec.Struct, frozen=True):
    scram: dict[str, ScramCredential]  # mechanism -> credential
    allow: Allow | None = None  # None: may do everything

    def allows_topic(self, topic: str, operation: str) -> bool:
        if self.allow is None:
            return True
        return any(
            operation in operations and matches(pattern, topic)
            for pattern, operations in self.allow.topics.items()
        )

    def allows_group(self, group: str) -> bool:
        if self.allow is None:
            return True
        return any(matches(pattern, group) for pattern in self.allow.groups)

    def check_password(self, password: str) -> bool:
        """Whether password is this user's (PLAIN), by any stored credential."""
        if not self.scram:
            return False
        mechanism, credential = min(self.scram.items())  # any: one password made all
        name = _HASHES[mechanism]
        salted = hashlib.pbkdf2_hmac(
            name, password.encode(), credential.salt, credential.iterations
        )
        client_key = hmac.digest(salted, b"Client Key", name)
        stored_key = hashlib.new(name, client_key).digest()
        return hmac.compare_digest(stored_key, credential.stored_key)


class _File(msgspec.Struct):
    users: dict[str, User] = {}


def matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def users_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / USERS_FILE


def load(data_dir: str | os.PathLike[str]) -> dict[str, User]:
    """Every user; none if there is no file. ConfigError for a file that does
    not parse, naming it."""
    path = users_path(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        return msgspec.json.decode(raw, type=_File).users
    except msgspec.ValidationError as exc:
        raise ConfigError(f"users file {path}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"users file {path} is not JSON: {exc}") from exc


def validate_user_name(name: str) -> str:
    if not _LEGAL_NAME.fullmatch(name):
        raise InvalidArgument(
            f"user name {name!r}: 1 to 255 of ASCII letters, digits, '.', '_', '@', "
            f"'+' and '-'"
        )
    return name


def allow_list(
    topics: Mapping[str, Sequence[str]] | None, groups: Sequence[str] | None
) -> Allow | None:
    """An allow list from patterns; None (everything allowed) if both are None."""
    if topics is None and groups is None:
        return None
    for pattern, operations in (topics or {}).items():
        _check_pattern(pattern, "topic")
        for operation in operations:
            if operation not in OPERATIONS:
                raise InvalidArgument(
                    f"topic pattern {pattern!r}: unknown operation {operation!r}; "
                    f"known: {', '.join(OPERATIONS)}"
                )
    for pattern in groups or ():
        _check_pattern(pattern, "group")
    return Allow(
        {p: sorted(set(ops)) for p, ops in (topics or {}).items()}, list(groups or ())
    )


def _check_pattern(pattern: str, kind: str) -> None:
    if not pattern or "*" in pattern[:-1]:
        raise InvalidArgument(
            f"{kind} pattern {pattern!r}: a name, or a prefix ending in '*'"
        )


def scram_credential(
    mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS
) -> ScramCredential:
    if mechanism not in SCRAM_MECHANISMS:
        raise InvalidArgument(
            f"mechanism {mechanism!r}: one of {', '.join(SCRAM_MECHANISMS)}"
        )
    if not DEFAULT_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise InvalidArgument(
            f"{iterations} SCRAM iterations: Kafka allows {DEFAULT_ITERATIONS} to "
            f"{MAX_ITERATIONS}"
        )
    salt, stored_key, server_key, count = scramp.ScramMechanism(
        mechanism
    ).make_auth_info(password, iteration_count=iterations)
    return ScramCredential(salt, stored_key, server_key, count)


def add(
    data_dir: str | os.PathLike[str],
    name: str,
    password: str,
    *,
    mechanisms: Sequence[str] = SCRAM_MECHANISMS,
    iterations: int = DEFAULT_ITERATIONS,
    allow: Allow | None = None,
    keep_allow: bool = True,
) -> bool:
    """Add the user, or set its password; True if it is new. keep_allow: an
    existing user keeps its allow list when allow is None."""
    validate_user_name(name)
    if not password:
        raise InvalidArgument(f"user {name!r}: the password is empty")
    if not mechanisms:
        raise InvalidArgument(f"user {name!r}: no SCRAM mechanism given")
    scram = {m: scram_credential(m, password, iterations) for m in mechanisms}
    with _locked(data_dir):
        users = load(data_dir)
        old = users.get(name)
        if allow is None and keep_allow and old is not None:
            allow = old.allow
        users[name] = User(scram, allow)
        _save(data_dir, users)
    return old is None


def delete(data_dir: str | os.PathLike[str], name: str) -> bool:
    """Remove the user; False if there was none."""
    with _locked(data_dir):
        users = load(data_dir)
        if users.pop(name, None) is None:
            return False
        _save(data_dir, users)
    return True


@contextlib.contextmanager
def _locked(data_dir: str | os.PathLike[str]) -> Iterator[None]:
    """One change of the file at a time (two `users add` at once lose neither)."""
    Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(
        Path(data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        _owned_like_directory(fd, data_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save(data_dir: str | os.PathLike[str], users: dict[str, User]) -> None:
    """Write the file whole and rename it over the old one: a reader sees the old
    or the new, never half; created 0600, so no window where others may read."""
    path = users_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old tmp of ours may have had another mode
        _owned_like_directory(fd, data_dir)
        os.write(fd, msgspec.json.encode(_File(dict(sorted(users.items())))))
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.rename(path)


def _owned_like_directory(fd: int, data_dir: str | os.PathLike[str]) -> None:
    """root running `users add` must not leave a file the broker's user cannot read."""
    if os.geteuid() == 0:
        st = os.stat(data_dir)
        os.fchown(fd, st.st_uid, st.st_gid)


class UserStore:
    """The gateway's view of the file, read again when it changed (looked at once
    per RELOAD_INTERVAL at most): `users add` takes effect without a restart."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = data_dir
        self._users: dict[str, User] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked = -RELOAD_INTERVAL

    def get(self, name: str) -> User | None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_INTERVAL:
            self._checked = now
            self._reload()
        return self._users.get(name)

    def _reload(self) -> None:
        try:
            st = os.stat(users_path(self.data_dir))
        except FileNotFoundError:
            self._users, self._seen = {}, None
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._users = load(self.data_dir)  # ConfigError: the file is bad
            self._seen = seen
