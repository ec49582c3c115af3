"""Leaked shared memory: broker objects in /dev/shm that nothing owns any more.

A ring is owned while its broker's info object names a data directory whose topic
registry has the ring's topic id and partition; an info object is owned while its data
directory exists. Everything else a broker named is garbage. Names a broker did not
make (`shm.parse_broker_name` is None) are never touched, and when a registry cannot be
read we keep that broker's rings: a wrong "garbage" would delete unspilled data.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from shmbroker import counters, shm
from shmbroker.broker import registry
from shmbroker.broker.registry import BrokerInfo, TopicEntry
from shmbroker.errors import ConfigError, CorruptError, InvalidArgument

log = logging.getLogger(__name__)

# A starting broker replaces its info object (unlink, create, write): a scan in that
# gap sees no info. So an info that looks missing is read once more after this pause
# before its broker's rings count as garbage.
INFO_RECHECK_S = 0.1


class Removal(msgspec.Struct, frozen=True):
    name: str  # '/shmb....'
    reason: str  # why nothing owns it, in plain words
    bytes: int  # size of the object: what removing it frees


def orphans(base: str, topics: Mapping[str, TopicEntry]) -> list[Removal]:
    """The rings under one broker's base name (`shm.broker_base`) that no topic in
    `topics` owns: unknown topic id, or partition beyond the topic's count. Removes
    nothing: the caller (the supervisor at start, holding its lock) unlinks them."""
    by_id = _topics_by_id(topics)
    found = []
    for name, match in _broker_names(shm.list_names(base.removeprefix("/"))):
        if _base_of(match) != base or match["topic_id"] is None:
            continue
        reason = _unowned_ring(match, by_id)
        size = _size(name)
        if reason is not None and size is not None:
            found.append(Removal(name, reason, size))
    return found


def dead_counter_pages(names: Iterable[str]) -> list[Removal]:
    """The counter pages (counters.py) among names whose process is gone."""
    found = []
    for name in names:
        reason = counters.dead_owner(name)
        size = _size(name)
        if reason is not None and size is not None:
            found.append(Removal(name, f"a counter page: {reason}", size))
    return found


def collect(dry_run: bool = False, prefix: str = shm.NAME_PREFIX) -> list[Removal]:
    """Find (and unless dry_run, unlink) the leaked objects of every broker whose names
    start with `/<prefix>`. Objects of another user are left to that user (logged).

    Pauses INFO_RECHECK_S when some broker's info object is missing or unreadable."""
    if not prefix.startswith(shm.NAME_PREFIX) or "/" in prefix:
        raise InvalidArgument(
            f"gc prefix {prefix!r} must start with {shm.NAME_PREFIX!r}: shmbroker "
            f"never removes names it did not make"
        )
    # List first, read registries after: a topic enters its registry before its rings
    # exist, so every ring listed here is in a registry read later, unless deleted.
    brokers: dict[str, list[tuple[str, re.Match[str]]]] = {}
    for name, match in _broker_names(shm.list_names(prefix)):
        brokers.setdefault(_base_of(match), []).append((name, match))
    for base, names in list(brokers.items()):
        not_ours = [name for name, _ in names if not _is_ours(name)]
        if not_ours:
            log.info(
                "gc: leaving %d objects of broker %s to their owner: %s",
                len(not_ours),
                base,
                ", ".join(not_ours),
            )
            del brokers[base]

    infos = {base: _read_info(base) for base in brokers}
    if any(info is None for info in infos.values()):
        time.sleep(INFO_RECHECK_S)
        infos = {
            base: _read_info(base) if info is None else info
            for base, info in infos.items()
        }

    found: list[Removal] = []
    for base, names in brokers.items():
        found += _broker_garbage(base, names, infos[base])
        found += dead_counter_pages(n for n, m in names if m["pid"] is not None)
    if not dry_run:
        for removal in found:
            if shm.unlink(removal.name):
                log.info(
                    "removed %s (%d bytes): %s",
                    removal.name,
                    removal.bytes,
                    removal.reason,
                )
    return found


def _broker_garbage(
    base: str,
    names: list[tuple[str, re.Match[str]]],
    info: BrokerInfo | None,
) -> list[Removal]:
    """One broker's garbage: its rings first, its info object last."""
    info_name = shm.broker_info_name(base)
    rings = [(name, match) for name, match in names if match["topic_id"] is not None]
    ring_names = [name for name, _ in rings]
    has_info = any(match["info"] is not None for _, match in names)
    if info is None:
        why = "unreadable" if has_info else "missing"
        found = _removals(
            ring_names,
            f"its broker's info object {info_name} is {why}, so no broker owns it",
        )
        if has_info:
            found += _removals([info_name], "not readable as a broker info object")
        return found

    state = _data_dir_state(info.data_dir)
    if state == "unknown":
        if rings:
            log.warning(
                "gc: keeping %d rings of broker %s: cannot look into its data "
                "directory %s",
                len(rings),
                base,
                info.data_dir,
            )
        return []
    if state == "gone":
        gone = f"its broker's data directory {info.data_dir} no longer exists"
        return _removals(ring_names, gone) + _removals([info_name], gone)
    if state == "empty":
        return _removals(
            ring_names,
            f"its broker's data directory {info.data_dir} has no "
            f"{registry.REGISTRY_FILE} and no partition directories",
        )
    if state == "no-registry":
        if rings:
            log.warning(
                "gc: keeping %d rings of broker %s: %s has partition directories but "
                "no %s; restore the registry, or unlink the rings by hand",
                len(rings),
                base,
                info.data_dir,
                registry.REGISTRY_FILE,
            )
        return []
    try:
        topics = registry.load(info.data_dir)
    except (CorruptError, ConfigError, OSError) as exc:
        if rings:
            log.warning(
                "gc: keeping %d rings of broker %s: cannot read its topic registry: %s",
                len(rings),
                base,
                exc,
            )
        return []
    by_id = _topics_by_id(topics)
    found = []
    for name, match in rings:
        reason = _unowned_ring(match, by_id, info.data_dir)
        size = _size(name)
        if reason is not None and size is not None:
            found.append(Removal(name, reason, size))
    return found


def _broker_names(
    names: Iterable[str],
) -> Iterable[tuple[str, re.Match[str]]]:
    for name in names:
        match = shm.parse_broker_name(name)
        if match is not None:
            yield name, match


def _base_of(match: re.Match[str]) -> str:
    return shm.broker_base(match["prefix"], match["broker_id"])


def _topics_by_id(topics: Mapping[str, TopicEntry]) -> dict[str, tuple[str, int]]:
    return {entry.topic_id: (name, entry.partitions) for name, entry in topics.items()}


def _unowned_ring(
    match: re.Match[str],
    by_id: Mapping[str, tuple[str, int]],
    data_dir: str | None = None,
) -> str | None:
    """Why no topic owns this ring, or None if one does."""
    where = f" in {data_dir}" if data_dir else ""
    topic_id, partition = match["topic_id"], match["partition"]
    owner = by_id.get(topic_id)
    if owner is None:
        return f"no topic{where} has id {topic_id} (deleted or re-created)"
    topic, partitions = owner
    # compare as text: '07' or a non-ASCII digit is no name a broker gives partition 7
    if partition != str(int(partition)) or int(partition) >= partitions:
        return f"topic {topic!r}{where} has {partitions} partitions; no {partition}"
    return None


def _removals(names: Iterable[str], reason: str) -> list[Removal]:
    found = []
    for name in names:
        size = _size(name)
        if size is not None:  # None: someone else removed it meanwhile
            found.append(Removal(name, reason, size))
    return found


def _read_info(base: str) -> BrokerInfo | None:
    return registry.read_broker_info(shm.broker_info_name(base))


def _path(name: str) -> str:
    return os.path.join(shm.SHM_DIR, name.removeprefix("/"))


def _size(name: str) -> int | None:
    try:
        return os.stat(_path(name)).st_size
    except FileNotFoundError:
        return None


def _is_ours(name: str) -> bool:
    """Whether we may unlink it: /dev/shm is sticky, so only its owner (or root)."""
    euid = os.geteuid()
    try:
        return euid == 0 or os.stat(_path(name)).st_uid == euid
    except FileNotFoundError:
        return True  # gone already: nothing to leave to anyone


def _data_dir_state(
    path: str,
) -> Literal["gone", "empty", "no-registry", "present", "unknown"]:
    """'gone', 'empty' (no registry, no subdirectories), 'no-registry' (but
    subdirectories), 'present', or 'unknown' (we may not look)."""
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return "gone"
        try:
            os.stat(os.path.join(path, registry.REGISTRY_FILE))
            return "present"
        except FileNotFoundError:
            pass
        with os.scandir(path) as entries:
            has_subdirs = any(e.is_dir(follow_symlinks=False) for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return "gone"
    except OSError:
        return "unknown"
    return "no-registry" if has_subdirs else "empty"
