"""The topic registry: every topic's id, partition count and config overrides, in
`<data-dir>/topics.json` (format in protocol.py: clients read it when the supervisor is
not there), rewritten atomically on every change, so a crash leaves the old or the new
registry, never a mix. Also the broker's info object in /dev/shm, which tells
`shmbroker gc` whose rings are whose.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import msgspec

from shmbroker import shm
from shmbroker.errors import InvalidArgument, NotFound
from shmbroker.log.checkpoint import write_atomically
from shmbroker.protocol import REGISTRY_FILE, RegistryFile, TopicEntry, load_registry

__all__ = [
    "REGISTRY_FILE",
    "BrokerInfo",
    "TopicEntry",
    "load",
    "new_topic_id",
    "read_broker_info",
    "save",
    "write_broker_info",
]


def new_topic_id() -> str:
    return uuid.uuid4().hex


def load(data_dir: str | os.PathLike[str]) -> dict[str, TopicEntry]:
    """The topics of a data directory ({} if it has no registry yet)."""
    return load_registry(data_dir).topics


def save(
    data_dir: str | os.PathLike[str],
    topics: Mapping[str, TopicEntry],
    *,
    shm_prefix: str = shm.NAME_PREFIX,
    topic_defaults: Mapping[str, str] | None = None,
) -> None:
    registry = RegistryFile(
        shm_prefix=shm_prefix,
        topic_defaults=dict(topic_defaults or {}),
        topics=dict(sorted(topics.items())),
    )
    data = msgspec.json.format(msgspec.json.encode(registry), indent=2)
    write_atomically(Path(data_dir) / REGISTRY_FILE, data)


class BrokerInfo(msgspec.Struct, frozen=True):
    """What a broker's info object in /dev/shm says: whose its rings are."""

    data_dir: str  # real path
    pid: int
    started_unix_ms: int


INFO_BYTES = 4096


def write_broker_info(name: str, info: BrokerInfo) -> None:
    """Write the broker's info object in /dev/shm, in place if it exists: never
    unlinked on the way, or `shmbroker gc` could see a broker without one."""
    data = msgspec.json.encode(info).ljust(INFO_BYTES)  # JSON allows trailing blanks
    if len(data) > INFO_BYTES:
        raise InvalidArgument(f"broker info of {len(data)} bytes: data dir too long")
    try:
        fd = shm.open_fd(name)
    except NotFound:
        fd = shm.create(name, INFO_BYTES)
    try:
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def read_broker_info(name: str) -> BrokerInfo | None:
    """None if the object is missing or not readable as an info object."""
    try:
        fd = shm.open_fd(name)
    except (NotFound, PermissionError):
        return None
    try:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)
    try:
        return msgspec.json.decode(data, type=BrokerInfo)
    except msgspec.DecodeError:
        return None
