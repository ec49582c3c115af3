"""`shmbroker doctor`: what on this host would stop a broker or lose its data, each as
a Finding with what was found and what to do.

It only looks: nothing here changes a file or an object. Every path it reads is a
keyword argument, so tests point them at their own files.
"""

from __future__ import annotations

import glob
import mmap
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from shmbroker import errors, protocol, shm
from shmbroker.broker import registry
from shmbroker.broker.registry import TopicEntry
from shmbroker.config import BrokerConfig
from shmbroker.errors import ConfigError, CorruptError
from shmbroker.ring import Ring

Status = Literal["ok", "warn", "error"]

DOCKER_DEFAULT_SHM_BYTES = 64 << 20  # `docker run` without --shm-size
# logind spares the shared memory of users up to this uid (systemd's build default)
SYSTEM_UID_MAX = 999
MOUNTS = "/proc/self/mounts"
SYSTEMD_RUN_DIR = "/run/systemd/system"  # exists iff booted with systemd (sd_booted)
# systemd's search path for logind.conf and its drop-ins, highest priority first
LOGIND_DIRS = (
    "/etc/systemd",
    "/run/systemd",
    "/usr/local/lib/systemd",
    "/usr/lib/systemd",
)


class Finding(msgspec.Struct):
    check: str  # short name: "shm-space", "data-dir", "remove-ipc", ...
    status: Status
    message: str  # what was found, and what to do about it


def disk_space(path: str) -> tuple[int, int]:
    """(size, free bytes for an unprivileged writer) of the filesystem holding path."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def config_for(
    data_dir: str,
    config_file: str | None = None,
    shm_prefix: str | None = None,
    access_group: str | None = None,
) -> BrokerConfig:
    """The config of the broker of a data directory as `doctor` checks it: its
    config file, the prefix and topic defaults its registry wrote, then the
    given prefix and access group."""
    defaults: dict[str, Any] = {}
    try:  # the broker's own prefix and topic defaults, if its registry says
        written = protocol.load_registry(data_dir)
        defaults = {"shm_prefix": written.shm_prefix}
        if written.topic_defaults:
            defaults["topic_defaults"] = written.topic_defaults
    except (errors.ShmbrokerError, OSError):  # the registry check reports it
        pass
    if shm_prefix is not None:
        defaults["shm_prefix"] = shm_prefix
    return BrokerConfig.load(
        config_file, data_dir=data_dir, access_group=access_group, **defaults
    )


def check(
    config: BrokerConfig,
    *,
    shm_dir: str | os.PathLike[str] = shm.SHM_DIR,
    mounts_path: str | os.PathLike[str] = MOUNTS,
    logind_paths: Sequence[str | os.PathLike[str]] | None = None,
    systemd_run_dir: str | os.PathLike[str] = SYSTEMD_RUN_DIR,
    uid: int | None = None,
    free_space: Callable[[str], tuple[int, int]] = disk_space,
) -> list[Finding]:
    """Every finding about the broker of `config` on this host, in a fixed order.

    logind_paths None means systemd's own: logind.conf, then logind.conf.d/*.conf by
    file name; uid None means this process's effective uid."""
    uid = os.geteuid() if uid is None else uid
    shm_dir = os.fspath(shm_dir)
    data_dir = os.path.abspath(config.data_dir)
    base = shm.broker_base(config.shm_prefix, shm.broker_id(data_dir))
    findings: list[Finding] = []
    gid = _check_access_group(config, findings)
    registry_findings: list[Finding] = []
    topics = _check_registry(config, data_dir, registry_findings)
    if _check_shm_dir(shm_dir, findings):
        _check_tmpfs(shm_dir, os.fspath(mounts_path), findings)
        _check_shm_space(config, topics, shm_dir, base, free_space, findings)
        _check_shm_objects(shm_dir, base, uid, gid, findings)
        if os.path.realpath(shm_dir) == os.path.realpath(shm.SHM_DIR):
            _check_ring_headers(shm_dir, base, findings)
    _check_remove_ipc(
        logind_paths if logind_paths is not None else default_logind_paths(),
        os.path.isdir(systemd_run_dir),
        uid,
        findings,
    )
    findings.extend(check_data_dir(data_dir, uid, gid))
    findings.extend(registry_findings)
    _check_data_disk(config, topics, data_dir, free_space, findings)
    _check_control_socket(os.path.abspath(config.control_socket), uid, gid, findings)
    return findings


# ---- shared memory -----------------------------------------------------------------


def _check_shm_dir(shm_dir: str, findings: list[Finding]) -> bool:
    if os.path.isdir(shm_dir):
        findings.append(Finding("shm-dir", "ok", f"{shm_dir} exists"))
        return True
    findings.append(
        Finding(
            "shm-dir",
            "error",
            f"{shm_dir} does not exist, so no ring can be created: mount a tmpfs "
            f"there (mount -t tmpfs -o size=1g,mode=1777 tmpfs {shm_dir})",
        )
    )
    return False


def _check_tmpfs(shm_dir: str, mounts_path: str, findings: list[Finding]) -> None:
    fstype = _filesystem_type(shm_dir, mounts_path)
    if fstype == "tmpfs":
        findings.append(Finding("shm-tmpfs", "ok", f"{shm_dir} is a tmpfs"))
    elif fstype is None:
        findings.append(
            Finding(
                "shm-tmpfs",
                "warn",
                f"could not tell which filesystem holds {shm_dir} ({mounts_path} "
                f"unreadable): rings need it to be a tmpfs (memory), check with "
                f"`df -T {shm_dir}`",
            )
        )
    else:
        findings.append(
            Finding(
                "shm-tmpfs",
                "warn",
                f"{shm_dir} is on a {fstype} filesystem, not a tmpfs: rings would be "
                f"ordinary files, and appends could wait for the disk; mount a tmpfs "
                f"there (mount -t tmpfs -o size=1g,mode=1777 tmpfs {shm_dir})",
            )
        )


def _filesystem_type(path: str, mounts_path: str) -> str | None:
    """The type of the mount that holds path (the longest mount point above it)."""
    try:
        with open(mounts_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, fstype = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        # >=: a later mount on the same point hides the earlier one
        if inside and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype


def _unescape_mount(field: str) -> str:
    r"""The kernel writes ' ', tab, newline and '\' in mount points as octal
    escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n")):
        field = field.replace(escaped, char)
    return field.replace("\\134", "\\")


def _check_shm_space(
    config: BrokerConfig,
    topics: dict[str, TopicEntry],
    shm_dir: str,
    base: str,
    free_space: Callable[[str], tuple[int, int]],
    findings: list[Finding],
) -> None:
    size, free = free_space(shm_dir)
    existing = set(os.listdir(shm_dir))
    rings = need = need_new = 0
    for entry in topics.values():
        try:
            ring_bytes = _ring_object_bytes(config, entry.configs)
        except ConfigError:
            continue  # the registry check names it
        for p in range(entry.partitions):
            rings += 1
            need += ring_bytes
            if shm.ring_name(base, entry.topic_id, p)[1:] not in existing:
                need_new += ring_bytes
    default_ring = _ring_object_bytes(config, {})
    problems = []
    if size < need:
        problems.append(
            Finding(
                "shm-space",
                "error",
                f"{shm_dir} holds {_size(size)}, but this broker's {rings} rings need "
                f"{_size(need)}: give it more shared memory (Docker: --shm-size; a "
                f"tmpfs: mount -o remount,size=...) or give topics a smaller "
                f"ring.bytes",
            )
        )
    elif free < need_new:
        problems.append(
            Finding(
                "shm-space",
                "error",
                f"{shm_dir} has {_size(free)} free, but the rings this broker has not "
                f"created yet need {_size(need_new)}: free space there (`shmbroker "
                f"gc` removes leaked rings), give it more, or give topics a smaller "
                f"ring.bytes",
            )
        )
    if size <= DOCKER_DEFAULT_SHM_BYTES:
        problems.append(
            Finding(
                "shm-space",
                "warn",
                f"{shm_dir} is only {_size(size)} (Docker's default is 64 MiB): "
                f"{size // default_ring} rings of {_size(default_ring)} fit in it; "
                f"give it more (Docker: --shm-size=1g) or set a smaller ring.bytes "
                f"in the [topic] table of the config file",
            )
        )
    if size >= need and free >= need_new and free - need_new < default_ring:
        problems.append(
            Finding(
                "shm-space",
                "warn",
                f"{shm_dir} has {_size(free)} free: after this broker's rings there "
                f"is no room for one more partition's ring of {_size(default_ring)}; "
                f"new topics will fail until space is freed (`shmbroker gc`)",
            )
        )
    findings.extend(problems)
    if not problems:
        findings.append(
            Finding(
                "shm-space",
                "ok",
                f"{shm_dir}: {_size(size)}, {_size(free)} free; this broker's "
                f"{rings} rings need {_size(need)} ({_size(need_new)} of it not "
                f"created yet); room for {(free - need_new) // default_ring} more "
                f"rings of {_size(default_ring)}",
            )
        )


def _ring_object_bytes(config: BrokerConfig, overrides: dict[str, str]) -> int:
    # the ring's data area plus its header page
    return config.topic_config(overrides).ring_bytes + mmap.PAGESIZE


def _check_access_group(config: BrokerConfig, findings: list[Finding]) -> int | None:
    """access.group's gid (None without one, or if the host has no such group)."""
    try:
        gid = config.access_gid()
    except ConfigError as exc:
        findings.append(Finding("access-group", "error", str(exc)))
        return None
    if gid is not None:
        findings.append(
            Finding(
                "access-group",
                "ok",
                f"group {config.access_group} (gid {gid}) may use the broker: data "
                f"directory 0750, control socket and shared memory 0660",
            )
        )
    return gid


def _expected(gid: int | None, private: int, shared: int) -> tuple[int, str]:
    """The mode to expect, and how to say it (with the group when there is one)."""
    if gid is None:
        return private, f"{private:04o}"
    return shared, f"{shared:04o} with gid {gid}"


def _check_shm_objects(
    shm_dir: str, base: str, uid: int, gid: int | None, findings: list[Finding]
) -> None:
    names = sorted(n for n in os.listdir(shm_dir) if n.startswith(base[1:]))
    expected, said = _expected(gid, 0o600, 0o660)
    wrong = []
    for name in names:
        try:
            st = os.lstat(os.path.join(shm_dir, name))
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if (
            st.st_uid != uid
            or mode != expected
            or (gid is not None and st.st_gid != gid)
        ):
            group = "" if gid is None else f", gid {st.st_gid}"
            wrong.append(f"{name} (uid {st.st_uid}{group}, mode {mode:04o})")
    if wrong:
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        shown = ", ".join(wrong[:5]) + more
        findings.append(
            Finding(
                "shm-objects",
                "warn",
                f"{len(wrong)} of this broker's objects in {shm_dir} are not uid "
                f"{uid}'s with mode {said}: {shown}; other users may read or change "
                f"them (or the group cannot use them): chmod {expected:04o} and chown "
                f"them, or restart the broker (it sets them), or stop it and run "
                f"`shmbroker gc`",
            )
        )
    elif names:
        findings.append(
            Finding(
                "shm-objects",
                "ok",
                f"{len(names)} objects of this broker in {shm_dir}, all uid {uid}'s "
                f"with mode {said}",
            )
        )
    else:
        findings.append(
            Finding(
                "shm-objects",
                "ok",
                f"no objects of this broker in {shm_dir} (named {base}*): no broker "
                f"has run on this data directory since boot",
            )
        )


def _check_ring_headers(shm_dir: str, base: str, findings: list[Finding]) -> None:
    """Every ring's header invariants (a process that scribbled on them)."""
    damaged = []
    names = sorted(n for n in os.listdir(shm_dir) if n.startswith(base[1:]))
    for name in names:
        if name.endswith(".broker"):
            continue
        try:
            with Ring.open("/" + name) as ring:
                damage = ring.check()
        except (errors.ShmbrokerError, OSError) as exc:
            damage = str(exc)
        if damage is not None:
            damaged.append(f"/{name}: {damage}")
    if damaged:
        findings.append(
            Finding(
                "ring-headers",
                "error",
                f"{len(damaged)} rings have damaged headers, appends to them are "
                f"refused: {'; '.join(damaged[:5])}",
            )
        )


# ---- systemd-logind ------------------------------------------------------------------


def default_logind_paths() -> list[str]:
    """logind.conf, then every logind.conf.d/*.conf sorted by file name, as systemd
    reads them (for one name, the file in the first directory of LOGIND_DIRS wins)."""
    main = [
        path
        for d in LOGIND_DIRS
        if os.path.isfile(path := os.path.join(d, "logind.conf"))
    ][:1]
    dropins: dict[str, str] = {}
    for d in LOGIND_DIRS:
        for path in glob.glob(os.path.join(d, "logind.conf.d", "*.conf")):
            dropins.setdefault(os.path.basename(path), path)
    return main + [dropins[name] for name in sorted(dropins)]


def remove_ipc_setting(
    paths: Sequence[str | os.PathLike[str]],
) -> tuple[bool, str | None]:
    """(RemoveIPC, the file that set it or None for logind's default of yes); the
    last file that sets it wins."""
    value, source = True, None
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            key, eq, setting = line.partition("=")
            if section != "Login" or not eq or key.strip() != "RemoveIPC":
                continue
            parsed = _boolean(setting.strip())
            if parsed is not None:  # logind ignores a value it cannot parse
                value, source = parsed, os.fspath(path)
    return value, source


def _boolean(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("1", "yes", "y", "true", "t", "on"):
        return True
    if lowered in ("0", "no", "n", "false", "f", "off"):
        return False
    return None


def _check_remove_ipc(
    paths: Sequence[str | os.PathLike[str]],
    booted_with_systemd: bool,
    uid: int,
    findings: list[Finding],
) -> None:
    if not booted_with_systemd:
        findings.append(
            Finding(
                "remove-ipc",
                "ok",
                "not booted with systemd: no systemd-logind removes shared memory here",
            )
        )
        return
    remove, source = remove_ipc_setting(paths)
    where = f"set in {source}" if source else "logind's default"
    if not remove:
        findings.append(Finding("remove-ipc", "ok", f"RemoveIPC=no ({where})"))
    elif uid <= SYSTEM_UID_MAX:
        findings.append(
            Finding(
                "remove-ipc",
                "ok",
                f"RemoveIPC=yes ({where}), but uid {uid} is a system user, whose "
                f"shared memory logind keeps",
            )
        )
    else:
        findings.append(
            Finding(
                "remove-ipc",
                "warn",
                f"RemoveIPC=yes ({where}) and uid {uid} is not a system user: "
                f"systemd-logind removes a user's shared memory when their last "
                f"session ends, and the broker's rings would vanish with it (with "
                f"every batch not yet spilled). Run the broker as a system user "
                f"(uid <= {SYSTEM_UID_MAX}, e.g. `useradd --system`), or set "
                f"RemoveIPC=no in /etc/systemd/logind.conf.d/shmbroker.conf "
                f"([Login] section) and restart systemd-logind",
            )
        )


# ---- data directory ------------------------------------------------------------------


def _check_registry(
    config: BrokerConfig, data_dir: str, findings: list[Finding]
) -> dict[str, TopicEntry]:
    path = os.path.join(data_dir, registry.REGISTRY_FILE)
    try:
        topics = registry.load(data_dir)
    except (CorruptError, ConfigError) as exc:
        findings.append(
            Finding(
                "registry",
                "error",
                f"{exc}: the broker will not start; restore {path} from a backup",
            )
        )
        return {}
    except OSError as exc:
        findings.append(
            Finding("registry", "error", f"cannot read {path}: {exc.strerror}")
        )
        return {}
    if not os.path.exists(path):
        findings.append(
            Finding("registry", "ok", f"no {path} yet: the broker has no topics")
        )
        return topics
    bad = []
    for name, entry in topics.items():
        try:
            config.topic_config(entry.configs)
        except ConfigError as exc:
            bad.append(f"topic {name!r}: {exc}")
    if bad:
        findings.append(
            Finding(
                "registry",
                "error",
                f"{path} has topic configs this shmbroker rejects: {'; '.join(bad)}",
            )
        )
    partitions = sum(entry.partitions for entry in topics.values())
    findings.append(
        Finding(
            "registry",
            "ok",
            f"{path}: {len(topics)} topics, {partitions} partitions",
        )
    )
    return topics


def check_data_dir(data_dir: str, uid: int, gid: int | None = None) -> list[Finding]:
    """Whether the broker can make and use the data directory: `serve` asks this
    before it starts, and says the first error in one line."""
    findings: list[Finding] = []
    _check_data_dir(data_dir, uid, gid, findings)
    return findings


def _check_data_dir(
    data_dir: str, uid: int, gid: int | None, findings: list[Finding]
) -> None:
    try:
        st = os.stat(data_dir)
    except (FileNotFoundError, NotADirectoryError):
        blocker = _creation_blocker(data_dir, uid)
        findings.append(
            Finding("data-dir", "error", blocker)
            if blocker
            else Finding(
                "data-dir",
                "warn",
                f"{data_dir} does not exist yet: `shmbroker serve` creates it with "
                f"mode 0700",
            )
        )
        return
    except OSError as exc:
        findings.append(
            Finding("data-dir", "error", f"cannot look at {data_dir}: {exc.strerror}")
        )
        return
    if not stat.S_ISDIR(st.st_mode):
        findings.append(
            Finding(
                "data-dir",
                "error",
                f"{data_dir} is not a directory: move it away or use another "
                f"--data-dir",
            )
        )
        return
    if uid == os.geteuid() and not _can_write(data_dir):
        findings.append(
            Finding(
                "data-dir",
                "error",
                f"uid {uid} cannot write in {data_dir}: use another --data-dir, or "
                f"give uid {uid} the directory (chown -R {uid} {data_dir})",
            )
        )
        return
    if st.st_uid != uid:
        findings.append(
            Finding(
                "data-dir",
                "error" if uid != 0 else "warn",
                f"{data_dir} belongs to uid {st.st_uid}, not to uid {uid} that runs "
                f"this: run the broker as uid {st.st_uid}, or chown -R {uid} "
                f"{data_dir}",
            )
        )
    else:
        findings.append(Finding("data-dir", "ok", f"{data_dir} is uid {uid}'s"))
    mode = stat.S_IMODE(st.st_mode)
    if gid is not None:
        if mode != 0o750 or st.st_gid != gid:
            findings.append(
                Finding(
                    "data-dir-mode",
                    "warn",
                    f"{data_dir} has mode {mode:04o} and gid {st.st_gid}, not 0750 "
                    f"and gid {gid} (access.group): restart the broker, which sets "
                    f"them, or chgrp {gid} {data_dir} && chmod 0750 {data_dir}",
                )
            )
        else:
            findings.append(
                Finding("data-dir-mode", "ok", f"{data_dir} has mode 0750, gid {gid}")
            )
        return
    if mode & 0o077:
        findings.append(
            Finding(
                "data-dir-mode",
                "warn",
                f"{data_dir} has mode {mode:04o}: other users can read topic data or "
                f"reach the control socket; chmod 0700 {data_dir}",
            )
        )
    elif mode & 0o700 != 0o700:
        findings.append(
            Finding(
                "data-dir-mode",
                "error",
                f"{data_dir} has mode {mode:04o}: its owner cannot read, write and "
                f"enter it; chmod 0700 {data_dir}",
            )
        )
    else:
        findings.append(Finding("data-dir-mode", "ok", f"{data_dir} has mode 0700"))


def _can_write(directory: str) -> bool:
    """Whether this process (its effective uid, as the broker will use it) can make
    files in the directory."""
    return os.access(
        directory,
        os.R_OK | os.W_OK | os.X_OK,
        effective_ids=os.access in os.supports_effective_ids,
    )


def _creation_blocker(data_dir: str, uid: int) -> str | None:
    """Why a data directory that is not there cannot be made (its nearest existing
    ancestor is a file, or not writable), or None."""
    ancestor = os.path.dirname(data_dir)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return (
            f"{data_dir} cannot be created: {ancestor} is a file, not a directory; "
            f"use another --data-dir"
        )
    if uid == os.geteuid() and not _can_write(ancestor):
        return (
            f"{data_dir} cannot be created: uid {uid} cannot write in {ancestor}; "
            f"use another --data-dir"
        )
    return None


def _check_data_disk(
    config: BrokerConfig,
    topics: dict[str, TopicEntry],
    data_dir: str,
    free_space: Callable[[str], tuple[int, int]],
    findings: list[Finding],
) -> None:
    where = data_dir
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)  # the filesystem it will be created on
    _, free = free_space(where)
    segment = config.topic_config({}).segment_bytes
    for entry in topics.values():
        try:
            segment = max(segment, config.topic_config(entry.configs).segment_bytes)
        except ConfigError:
            continue
    if free < segment:
        findings.append(
            Finding(
                "data-disk",
                "warn",
                f"the filesystem of {where} has {_size(free)} free, less than one log "
                f"segment ({_size(segment)}, segment.bytes): spilling stops when the "
                f"disk fills and producers then block on full rings; free space or "
                f"lower retention.bytes / retention.ms",
            )
        )
    else:
        findings.append(
            Finding(
                "data-disk",
                "ok",
                f"the filesystem of {where} has {_size(free)} free",
            )
        )


def _check_control_socket(
    path: str, uid: int, gid: int | None, findings: list[Finding]
) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        findings.append(
            Finding(
                "control-socket",
                "ok",
                f"no {path}: no broker serves this data directory now",
            )
        )
        return
    except OSError as exc:
        findings.append(
            Finding("control-socket", "error", f"cannot look at {path}: {exc.strerror}")
        )
        return
    if not stat.S_ISSOCK(st.st_mode):
        findings.append(
            Finding(
                "control-socket",
                "error",
                f"{path} is not a socket, so a broker cannot listen there: remove it "
                f"(while no broker runs)",
            )
        )
        return
    mode = stat.S_IMODE(st.st_mode)
    expected, said = _expected(gid, 0o600, 0o660)
    if mode != expected or st.st_uid != uid or (gid is not None and st.st_gid != gid):
        findings.append(
            Finding(
                "control-socket",
                "warn",
                f"{path} has mode {mode:04o} and uid {st.st_uid} (gid {st.st_gid}), "
                f"not {said} and uid {uid}: whoever may connect can create and delete "
                f"topics (or the group cannot); chmod {expected:04o} {path}, or "
                f"restart the broker, which sets it",
            )
        )
    else:
        findings.append(
            Finding("control-socket", "ok", f"{path} is a socket with mode {said}")
        )


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(n) >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"
