"""`shmbroker doctor`: each check's finding for a host set up right and set up wrong.
Paths, the uid and free space are injected, so the tests need no root and no
particular host."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shmbroker import Admin, Producer, shm
from shmbroker.broker import doctor, registry
from shmbroker.broker.doctor import Finding
from shmbroker.broker.registry import TopicEntry
from shmbroker.cli import main
from shmbroker.config import BrokerConfig

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def config(data_dir: Path, shm_prefix: str) -> BrokerConfig:
    return BrokerConfig(data_dir=str(data_dir), shm_prefix=shm_prefix)


@pytest.fixture
def shm_dir(tmp_path: Path) -> Path:
    """A stand-in for /dev/shm: the space checks only list it and ask free_space."""
    path = tmp_path / "shm"
    path.mkdir()
    return path


def findings(config: BrokerConfig, name: str, **paths: object) -> list[Finding]:
    """The findings of one check; uid and paths default to a sane host."""
    options: dict[str, object] = {"uid": os.geteuid(), **paths}
    return [f for f in doctor.check(config, **options) if f.check == name]


def one(config: BrokerConfig, name: str, **paths: object) -> Finding:
    [finding] = findings(config, name, **paths)
    return finding


def space(size: int, free: int):
    return lambda path: (size, free)


# ---- the data directory ------------------------------------------------------------


def test_data_dir_0700_of_ours_is_ok(config):
    assert one(config, "data-dir").status == "ok"
    assert one(config, "data-dir-mode").status == "ok"


def test_data_dir_open_to_others_warns_naming_0700(config, data_dir):
    data_dir.chmod(0o755)
    finding = one(config, "data-dir-mode")
    assert finding.status == "warn"
    assert "mode 0755" in finding.message
    assert f"chmod 0700 {data_dir}" in finding.message


def test_data_dir_of_another_user_is_an_error(config, data_dir):
    finding = one(config, "data-dir", uid=os.geteuid() + 4242)
    assert finding.status == "error"
    assert f"belongs to uid {os.geteuid()}" in finding.message


def test_missing_data_dir_warns_that_serve_creates_it(tmp_path, shm_prefix):
    config = BrokerConfig(data_dir=str(tmp_path / "new"), shm_prefix=shm_prefix)
    finding = one(config, "data-dir")
    assert finding.status == "warn"
    assert "does not exist yet" in finding.message
    assert findings(config, "data-dir-mode") == []
    assert one(config, "data-disk").message.startswith(f"the filesystem of {tmp_path}")


def test_data_dir_that_is_a_file_is_an_error(tmp_path, shm_prefix):
    (tmp_path / "file").write_text("")
    config = BrokerConfig(data_dir=str(tmp_path / "file"), shm_prefix=shm_prefix)
    finding = one(config, "data-dir")
    assert finding.status == "error"
    assert "is not a directory" in finding.message


def test_data_disk_with_less_than_one_segment_free_warns(config):
    finding = one(config, "data-disk", free_space=space(100 * MiB, 10 * MiB))
    assert finding.status == "warn"
    assert "10.0 MiB free, less than one log segment (1.0 GiB" in finding.message
    assert one(config, "data-disk", free_space=space(8 << 30, 4 << 30)).status == "ok"


def test_corrupt_registry_is_an_error(config, data_dir):
    (data_dir / registry.REGISTRY_FILE).write_text("{nope")
    finding = one(config, "registry")
    assert finding.status == "error"
    assert "restore" in finding.message


def test_registry_counts_topics_and_partitions(config, data_dir):
    registry.save(data_dir, {"a": TopicEntry(registry.new_topic_id(), 3)})
    finding = one(config, "registry")
    assert (finding.status, finding.message) == (
        "ok",
        f"{data_dir}/topics.json: 1 topics, 3 partitions",
    )


# ---- the control socket --------------------------------------------------------------


@pytest.fixture
def control_socket(config: BrokerConfig) -> Iterator[Path]:
    path = config.control_socket
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


def test_absent_control_socket_is_ok(config):
    finding = one(config, "control-socket")
    assert finding.status == "ok"
    assert "no broker serves" in finding.message


def test_control_socket_0600_is_ok(config, control_socket):
    control_socket.chmod(0o600)
    assert one(config, "control-socket").status == "ok"


def test_control_socket_with_a_wider_mode_warns(config, control_socket):
    control_socket.chmod(0o666)
    finding = one(config, "control-socket")
    assert finding.status == "warn"
    assert "mode 0666" in finding.message
    assert f"chmod 0600 {control_socket}" in finding.message


def test_control_socket_that_is_not_a_socket_is_an_error(config):
    config.control_socket.write_text("")
    finding = one(config, "control-socket")
    assert finding.status == "error"
    assert "is not a socket" in finding.message


# ---- shared memory -----------------------------------------------------------------


def test_shm_objects_of_this_broker_with_a_wider_mode_warn(config, data_dir):
    """Real objects in /dev/shm under this test's prefix."""
    base = shm.broker_base(config.shm_prefix, shm.broker_id(data_dir))
    info = shm.broker_info_name(base)
    ring = shm.ring_name(base, registry.new_topic_id(), 0)
    for name in (info, ring):
        os.close(shm.create(name, PAGE))
    try:
        ok = one(config, "shm-objects")
        assert (ok.status, ok.message) == (
            "ok",
            f"2 objects of this broker in /dev/shm, all uid {os.geteuid()}'s with "
            f"mode 0600",
        )
        os.chmod(shm.SHM_DIR + ring, 0o644)
        finding = one(config, "shm-objects")
        assert finding.status == "warn"
        assert f"{ring[1:]} (uid {os.geteuid()}, mode 0644)" in finding.message
        assert info[1:] not in finding.message
    finally:
        shm.unlink(info)
        shm.unlink(ring)


def test_missing_shm_dir_is_an_error_and_skips_the_shm_checks(config, tmp_path):
    checks = doctor.check(config, shm_dir=tmp_path / "no-shm", uid=os.geteuid())
    [finding] = [f for f in checks if f.check.startswith("shm")]
    assert (finding.check, finding.status) == ("shm-dir", "error")
    assert "mount a tmpfs there" in finding.message


@pytest.mark.parametrize(
    ("mounts", "status", "words"),
    [
        ("tmpfs {shm} tmpfs rw 0 0\n", "ok", "is a tmpfs"),
        ("/dev/sda1 / ext4 rw 0 0\n", "warn", "is on a ext4 filesystem, not a tmpfs"),
        ("/dev/sda1 / ext4 rw 0 0\ntmpfs {shm} tmpfs rw 0 0\n", "ok", "is a tmpfs"),
        ("tmpfs {shm} tmpfs rw 0 0\n/dev/sdb {shm} xfs rw 0 0\n", "warn", "xfs"),
        ("tmpfs {parent} tmpfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\n", "ok", "tmpfs"),
    ],
)
def test_shm_dir_filesystem_comes_from_the_longest_mount_above_it(
    config, tmp_path, mounts, status, words
):
    shm_dir = tmp_path / "a dir"  # /proc/mounts writes the space as \040
    shm_dir.mkdir()
    escaped = str(shm_dir).replace(" ", "\\040")
    table = tmp_path / "mounts"
    table.write_text(mounts.format(shm=escaped, parent=tmp_path))
    finding = one(config, "shm-tmpfs", shm_dir=shm_dir, mounts_path=table)
    assert finding.status == status
    assert words in finding.message


def test_unreadable_mount_table_warns(config, tmp_path):
    finding = one(config, "shm-tmpfs", mounts_path=tmp_path / "none")
    assert finding.status == "warn"
    assert "could not tell" in finding.message


def registry_of_rings(config: BrokerConfig, partitions: int, ring_bytes: int) -> str:
    topic_id = registry.new_topic_id()
    registry.save(
        config.data_dir,
        {"t": TopicEntry(topic_id, partitions, {"ring.bytes": str(ring_bytes)})},
    )
    return topic_id


def test_shm_space_enough_for_the_rings_is_ok(config, shm_dir):
    registry_of_rings(config, partitions=4, ring_bytes=1 * MiB)
    finding = one(
        config, "shm-space", shm_dir=shm_dir, free_space=space(1 << 30, 1 << 30)
    )
    assert finding.status == "ok"
    need = 4 * (MiB + PAGE)
    assert f"this broker's 4 rings need {need / MiB:.1f} MiB" in finding.message


def test_shm_smaller_than_the_rings_is_an_error(config, shm_dir):
    """The one error says it all: no extra warning that no further ring fits."""
    registry_of_rings(config, partitions=200, ring_bytes=1 * MiB)  # 200 MiB + pages
    [error] = findings(
        config, "shm-space", shm_dir=shm_dir, free_space=space(128 * MiB, 128 * MiB)
    )
    assert error.status == "error"
    assert "holds 128.0 MiB, but this broker's 200 rings need 200.8 MiB" in (
        error.message
    )
    assert "--shm-size" in error.message


def test_rings_already_made_need_no_more_free_space(config, shm_dir, data_dir):
    """If a ring exists (its pages are reserved already), then only the missing
    rings count against free space."""
    topic_id = registry_of_rings(config, partitions=2, ring_bytes=32 * MiB)
    base = shm.broker_base(config.shm_prefix, shm.broker_id(data_dir))
    free = (32 * MiB + PAGE) + (16 * MiB + PAGE)  # one ring, one default ring
    options = {"shm_dir": shm_dir, "free_space": space(1 << 30, free)}

    [error] = [
        f for f in findings(config, "shm-space", **options) if f.status == "error"
    ]
    assert "not created yet need 64.0 MiB" in error.message

    (shm_dir / shm.ring_name(base, topic_id, 0)[1:]).write_bytes(b"")
    finding = one(config, "shm-space", **options)
    assert finding.status == "ok"
    assert "(32.0 MiB of it not created yet); room for 1 more rings" in (
        finding.message
    )


def test_docker_sized_shm_warns_how_many_default_rings_fit(config, shm_dir):
    [finding] = findings(
        config, "shm-space", shm_dir=shm_dir, free_space=space(64 * MiB, 64 * MiB)
    )
    assert finding.status == "warn"
    assert "only 64.0 MiB (Docker's default is 64 MiB): 3 rings of 16.0 MiB" in (
        finding.message
    )


def test_small_default_rings_count_in_the_space_checks(data_dir, shm_prefix, shm_dir):
    config = BrokerConfig(
        data_dir=str(data_dir),
        shm_prefix=shm_prefix,
        topic_defaults={"ring.bytes": str(1 * MiB)},
    )
    [finding] = findings(
        config, "shm-space", shm_dir=shm_dir, free_space=space(64 * MiB, 2 * MiB)
    )
    assert "63 rings of 1.0 MiB fit" in finding.message


def test_no_room_for_one_more_ring_warns(config, shm_dir):
    [finding] = findings(
        config, "shm-space", shm_dir=shm_dir, free_space=space(1 << 30, 8 * MiB)
    )
    assert finding.status == "warn"
    assert "no room for one more partition's ring of 16.0 MiB" in finding.message


# ---- systemd-logind RemoveIPC ------------------------------------------------------


@pytest.fixture
def systemd(tmp_path: Path) -> Path:
    """Stands for /run/systemd/system: present means booted with systemd."""
    path = tmp_path / "run-systemd-system"
    path.mkdir()
    return path


def remove_ipc(config, logind_paths, systemd, uid):
    return one(
        config,
        "remove-ipc",
        logind_paths=logind_paths,
        systemd_run_dir=systemd,
        uid=uid,
    )


def test_remove_ipc_no_is_ok(config, tmp_path, systemd):
    conf = tmp_path / "logind.conf"
    conf.write_text("[Login]\n#RemoveIPC=yes\nRemoveIPC=no\n")
    finding = remove_ipc(config, [conf], systemd, uid=1000)
    assert (finding.status, finding.message) == ("ok", f"RemoveIPC=no (set in {conf})")


@pytest.mark.parametrize(
    "text", ["[Login]\nRemoveIPC=yes\n", "[Login]\n#RemoveIPC=no\n", ""]
)
def test_remove_ipc_yes_or_default_warns_a_regular_user(
    config, tmp_path, systemd, text
):
    conf = tmp_path / "logind.conf"
    conf.write_text(text)
    finding = remove_ipc(config, [conf], systemd, uid=1000)
    assert finding.status == "warn"
    assert "uid 1000 is not a system user" in finding.message
    assert "rings would vanish" in finding.message
    assert "RemoveIPC=no" in finding.message
    assert "system user" in finding.message


def test_remove_ipc_spares_system_users(config, systemd):
    for uid in (0, 999):
        finding = remove_ipc(config, [], systemd, uid=uid)
        assert finding.status == "ok"
        assert f"uid {uid} is a system user" in finding.message


def test_remove_ipc_last_file_wins(config, tmp_path, systemd):
    main = tmp_path / "logind.conf"
    main.write_text("[Login]\nRemoveIPC=no\n")
    dropin = tmp_path / "10-yes.conf"
    dropin.write_text("[Login]\nRemoveIPC = yes\n")
    late = tmp_path / "20-no.conf"
    late.write_text("[Login]\nRemoveIPC=off\n")
    assert remove_ipc(config, [main, dropin], systemd, uid=1000).status == "warn"
    assert remove_ipc(config, [main, dropin, late], systemd, uid=1000).message == (
        f"RemoveIPC=no (set in {late})"
    )


def test_remove_ipc_outside_the_login_section_or_unparsable_is_ignored(
    config, tmp_path, systemd
):
    conf = tmp_path / "logind.conf"
    conf.write_text("[Other]\nRemoveIPC=no\n[Login]\nRemoveIPC=maybe\n")
    assert remove_ipc(config, [conf], systemd, uid=1000).status == "warn"


def test_remove_ipc_without_systemd_is_ok(config, tmp_path):
    finding = remove_ipc(config, [], tmp_path / "not-booted", uid=1000)
    assert finding.status == "ok"
    assert "not booted with systemd" in finding.message


def test_doctor_reports_a_ring_whose_header_was_scribbled_on(broker) -> None:
    """If a process overwrote a cursor in one of the broker's rings, then doctor
    reports that ring and what is wrong, and exits 1."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("s", 1)
    with Producer(broker.data_dir) as producer:
        producer.send_batch("s", [b"x"] * 5)
    name = shm.ring_name(broker.shm_base, meta.topic_id, 0)
    fd = os.open(f"/dev/shm{name}", os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<q", 2**62), 320)  # next_offset
    finally:
        os.close(fd)
    result = CliRunner().invoke(main, ["doctor", "--data-dir", str(broker.data_dir)])
    assert result.exit_code == 1
    assert "ring-headers: 1 rings have damaged headers" in result.output
    assert f"{name}: next_offset 4611686018427387904 is not one past" in result.output
