"""Small files replaced whole or not at all (Kafka's CheckpointFile): the recovery
point and log start of a partition, the topic registry. Written to a temp file,
fsynced, renamed over the old one, then the directory fsynced, so a crash at any
instant leaves the old content or the new, never a mix."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_offset(path: Path) -> int | None:
    """The offset in the file; None if there is none, or (with a WARNING) if the
    file holds something else: the caller then assumes the safe default."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        log.warning("%s holds no offset (%r): ignored", path, text[:40])
        return None
    return value


def write_offset(path: Path, value: int) -> None:
    write_atomically(path, f"{value}\n".encode())
