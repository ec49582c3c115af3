"""The topic registry: every topic's id, partition count and config overrides, in
`<data-dir>/topics.json`, rewritten atomically (temp file, fsync, rename, fsync of the
directory) on every change, so a crash leaves the old or the new registry, never a mix.

Clients read the file directly when the supervisor is not there (its rings and segment
files are enough to produce and consume), so its format is versioned.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import msgspec

from shmbroker import shm
from shmbroker.errors import ConfigError, CorruptError, NotFound
from shmbroker.log.checkpoint import write_atomically

REGISTRY_FILE = "topics.json"
REGISTRY_VERSION = 1


class TopicEntry(msgspec.Struct, frozen=True):
    topic_id: str  # 32 hex digits, new for every creation (Kafka's topic id)
    partitions: int
    configs: dict[str, str] = {}  # Kafka-named overrides of the broker's defaults


class RegistryFile(msgspec.Struct):
    version: int = REGISTRY_VERSION
    topics: dict[str, TopicEntry] = {}


def new_topic_id() -> str:
    return uuid.uuid4().hex


def load(data_dir: str | os.PathLike[str]) -> dict[str, TopicEntry]:
    """The topics of a data directory ({} if it has no registry yet)."""
    path = Path(data_dir) / REGISTRY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        registry = msgspec.json.decode(raw, type=RegistryFile)
    except msgspec.DecodeError as exc:
        raise CorruptError(f"topic registry {path}: {exc}") from exc
    if registry.version != REGISTRY_VERSION:
        raise ConfigError(
            f"topic registry {path} has version {registry.version}; this shmbroker "
            f"reads version {REGISTRY_VERSION}"
        )
    return registry.topics


def save(data_dir: str | os.PathLike[str], topics: dict[str, TopicEntry]) -> None:
    registry = RegistryFile(topics=dict(sorted(topics.items())))
    data = msgspec.json.format(msgspec.json.encode(registry), indent=2)
    write_atomically(Path(data_dir) / REGISTRY_FILE, data)


class BrokerInfo(msgspec.Struct, frozen=True):
    """What a broker's info object in /dev/shm says: whose its rings are."""

    data_dir: str  # real path
    pid: int
    started_unix_ms: int


def write_broker_info(name: str, info: BrokerInfo) -> None:
    """Replace the broker's info object in /dev/shm."""
    data = msgspec.json.encode(info)
    shm.unlink(name)
    fd = shm.create(name, len(data))
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
