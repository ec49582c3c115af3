"""Names of shared-memory objects: create, open, unlink, list, and the free-space check.

shm.py owns the *names* (posix-ipc gives the file descriptor); the C library owns the
*mappings*. Objects are created 0600 with fchmod (shm_open's mode is masked by the
umask) and their pages are reserved with posix_fallocate, so a full /dev/shm is a clear
error at creation, not a SIGBUS in the middle of an append.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterator

import posix_ipc

from shmbroker.errors import InvalidArgument, NoSpace, NotFound

SHM_DIR = "/dev/shm"
NAME_PREFIX = "shmb."  # every object of ours starts so: `shmbroker gc` relies on it
MAX_NAME_BYTES = 255


def validate_name(name: str) -> str:
    """A POSIX shm name: '/' + one path component of ours."""
    bare = name.removeprefix("/")
    if (
        not bare.startswith(NAME_PREFIX)
        or "/" in bare
        or len(bare) > MAX_NAME_BYTES - 1
    ):
        raise InvalidArgument(
            f"shared-memory name {name!r}: must be '/{NAME_PREFIX}...' without '/' "
            f"and at most {MAX_NAME_BYTES - 1} characters"
        )
    return "/" + bare


def check_space(size_bytes: int, directory: str = SHM_DIR) -> None:
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if size_bytes > free:
        raise NoSpace(
            errno.ENOSPC,
            f"{directory} has {free} bytes free, a ring needs {size_bytes}: free space "
            f"there, use smaller rings, or give the container more shared memory "
            f"(Docker: --shm-size)",
        )


def create(name: str, size_bytes: int, mode: int = 0o600) -> int:
    """Create a new object of size_bytes; returns its fd (the caller closes it)."""
    name = validate_name(name)
    check_space(size_bytes)
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode)
    except posix_ipc.ExistentialError as exc:
        raise InvalidArgument(f"shared-memory object {name} already exists") from exc
    fd: int = shm.fd
    try:
        os.fchmod(fd, mode)
        os.posix_fallocate(fd, 0, size_bytes)
    except OSError as exc:
        os.close(fd)
        unlink(name)
        if exc.errno == errno.ENOSPC:
            raise NoSpace(
                errno.ENOSPC,
                f"{SHM_DIR} ran out of space reserving {size_bytes} bytes for {name}: "
                f"free space there or give the container more shared memory "
                f"(Docker: --shm-size)",
            ) from exc
        raise
    return fd


def path_of(name: str) -> str:
    """The object's file in /dev/shm (for its owner, group and mode)."""
    return os.path.join(SHM_DIR, validate_name(name)[1:])


def open_fd(name: str) -> int:
    """Open an existing object read-write; returns its fd (the caller closes it)."""
    name = validate_name(name)
    try:
        return int(posix_ipc.SharedMemory(name).fd)
    except posix_ipc.ExistentialError as exc:
        raise NotFound(errno.ENOENT, f"no shared-memory object {name}") from exc
    except posix_ipc.PermissionsError as exc:
        raise PermissionError(
            errno.EACCES, f"no access to shared memory {name}"
        ) from exc


def unlink(name: str) -> bool:
    """Remove the name (mappings stay valid until unmapped); False if it was gone."""
    try:
        posix_ipc.unlink_shared_memory(validate_name(name))
    except posix_ipc.ExistentialError:
        return False
    return True


def list_names(prefix: str = NAME_PREFIX) -> Iterator[str]:
    """Names in /dev/shm that start with prefix, as '/name'."""
    for entry in sorted(os.listdir(SHM_DIR)):
        if entry.startswith(prefix):
            yield "/" + entry


# ---- the names a broker gives its objects ------------------------------------------
# Every object of the broker on one data directory starts with
# `/<prefix>b<broker id>.`: the broker id is a hash of the data directory's real path,
# so two brokers never share names and a restarted one finds its rings again. A ring is
# named by its topic's id (not its name: a deleted and re-created topic gets new rings,
# and topic names can be longer than a shm name may be) and partition. The broker's
# info object holds the data directory, so that `shmbroker gc` can tell whether a
# ring's broker and topic still exist. `<base>c<pid>` is a process's counter page
# (counters.py), garbage once that process is gone.
BROKER_ID_CHARS = 12
_BROKER_NAME = re.compile(
    r"^/(?P<prefix>shmb\..*?)b(?P<broker_id>[0-9a-f]{12})\."
    r"(?:(?P<info>broker)|(?P<topic_id>[0-9a-f]{32})\.(?P<partition>\d+)"
    r"|c(?P<pid>\d+))$"
)


def broker_id(data_dir: str | os.PathLike[str]) -> str:
    real = os.path.realpath(data_dir)
    return hashlib.sha256(real.encode()).hexdigest()[:BROKER_ID_CHARS]


def broker_base(prefix: str, broker: str) -> str:
    """The name prefix of every object of one broker."""
    if not prefix.startswith(NAME_PREFIX) or "/" in prefix:
        raise InvalidArgument(f"shm prefix {prefix!r} must start with {NAME_PREFIX!r}")
    return f"/{prefix}b{broker}."


def ring_name(base: str, topic_id: str, partition: int) -> str:
    return validate_name(f"{base}{topic_id}.{partition}")


def broker_info_name(base: str) -> str:
    return validate_name(f"{base}broker")


def parse_broker_name(name: str) -> re.Match[str] | None:
    """Groups prefix, broker_id, and info, (topic_id, partition) or pid (a counter
    page); None if the name is not one a broker made."""
    return _BROKER_NAME.match(name)
