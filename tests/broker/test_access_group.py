"""`serve --group NAME` (access.group): a Unix group whose users may use the broker
too. A producer running as a user of that group appends; one running as a user
outside it is refused with a clear error; `doctor` checks the modes. Needs root to
make the users and the group (removed afterwards); skipped otherwise."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from shmbroker import Consumer, EmbeddedBroker, shm
from shmbroker.cli import main
from tests.conftest import SMALL_RING

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="making a user and a group needs root and useradd/groupadd",
)

# The interpreter may live where other users cannot enter (/root/.pyenv): the child
# imports everything as root, then becomes the user before it touches the broker,
# so every access to the data directory, the socket and the rings is the user's.
AS_USER = """
import os, sys
from shmbroker import Consumer, Producer, errors
from shmbroker.client import connection, consumer, producer  # noqa: F401 (before)
uid, gid, data_dir, topic = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.setgroups(list(map(int, sys.argv[5].split(","))) if sys.argv[5] else [])
os.setgid(gid)
os.setuid(uid)
try:
{}
except (errors.ShmbrokerError, OSError) as exc:
    print(f"{{type(exc).__name__}}: {{exc}}", file=sys.stderr)
    sys.exit(1)
"""
PRODUCE_AS = AS_USER.format("""\
    with Producer(data_dir) as p:
        p.send(topic, b"from uid %d" % uid).get(10)""")
CONSUME_AS = AS_USER.format("""\
    with Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([(topic, 0)])
        record = c.poll(timeout=10)
    print(record.value.decode() if record is not None else "nothing")""")


class Account(NamedTuple):
    name: str
    uid: int
    gid: int


@pytest.fixture
def accounts() -> Iterator[tuple[str, int, Account, Account]]:
    """A new group, a user in it and a user outside it."""
    tag = uuid.uuid4().hex[:8]
    group, inside, outside = f"shmbg{tag}", f"shmbi{tag}", f"shmbo{tag}"
    made: list[list[str]] = []
    try:
        subprocess.run(["groupadd", group], check=True)
        made.append(["groupdel", group])
        for user, extra in ((inside, ["-G", group]), (outside, [])):
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 "--user-group", *extra, user],
                check=True,
            )  # fmt: skip
            made.insert(0, ["userdel", user])
        import grp
        import pwd

        gid = grp.getgrnam(group).gr_gid

        def account(name: str) -> Account:
            entry = pwd.getpwnam(name)
            return Account(name, entry.pw_uid, entry.pw_gid)

        yield group, gid, account(inside), account(outside)
    finally:
        for command in made:
            subprocess.run(command, check=False)


def _produce_as(account: Account, groups: list[int], data_dir: Path, topic: str,
                script: str = PRODUCE_AS):  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", script, str(account.uid), str(account.gid),
         str(data_dir), topic, ",".join(map(str, groups))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _mode(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_gid


def test_a_user_of_the_group_produces_and_one_outside_is_refused(
    accounts: tuple[str, int, Account, Account], shm_prefix: str
) -> None:
    group, gid, inside, outside = accounts
    # a parent every user may enter (pytest's tmp_path is root's only)
    parent = Path(tempfile.mkdtemp(prefix="shmb-access-"))
    parent.chmod(0o755)
    data_dir = parent / "data"
    broker = EmbeddedBroker(
        data_dir, shm_prefix=shm_prefix, topic_defaults={"ring.bytes": SMALL_RING},
        remove=True, gateway=True,
        gateway_options={"--group": group, "--gateway-listen": "127.0.0.1:0"},
    )  # fmt: skip
    try:
        with broker:
            topic = f"shared-{uuid.uuid4().hex[:6]}"
            ok = _produce_as(inside, [gid], data_dir, topic)
            assert ok.returncode == 0, ok.stderr
            refused = _produce_as(outside, [], data_dir, topic)
            assert refused.returncode == 1
            assert (
                f"no access to the broker of {data_dir} for uid {outside.uid}: "
                f"Permission denied"
            ) in refused.stderr, refused.stderr
            assert "serve --group NAME" in refused.stderr  # what to do
            with Consumer(str(data_dir), auto_offset_reset="earliest") as consumer:
                consumer.assign([(topic, 0)])
                record = consumer.poll(timeout=10)
            assert record is not None, "the group member's record is not there"
            assert record.value == b"from uid %d" % inside.uid
            # the group's user consumes too: the segment files are the group's
            read = _produce_as(inside, [gid], data_dir, topic, CONSUME_AS)
            assert read.returncode == 0, read.stderr
            assert read.stdout.strip() == f"from uid {inside.uid}"
            assert _mode(data_dir) == (0o750, gid)
            assert _mode(data_dir / "control.sock") == (0o660, gid)
            rings = list(shm.list_names(broker.shm_base.removeprefix("/")))
            assert rings
            for name in rings:
                assert _mode(shm.SHM_DIR + name) == (0o660, gid), name
            doctor = CliRunner().invoke(
                main, ["doctor", "--data-dir", str(data_dir), "--group", group]
            )
            for check in ("data-dir-mode", "control-socket", "shm-objects"):
                line = next(x for x in doctor.output.splitlines() if f" {check}:" in x)
                assert line.startswith("OK"), doctor.output
            without = CliRunner().invoke(main, ["doctor", "--data-dir", str(data_dir)])
            line = next(
                x for x in without.output.splitlines() if " control-socket:" in x
            )
            assert line.startswith("WARN")  # 0660 is wider than a broker without one
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_without_a_group_nothing_changes(broker: EmbeddedBroker) -> None:
    assert _mode(broker.data_dir)[0] == 0o700
    assert _mode(broker.data_dir / "control.sock")[0] == 0o600


def test_an_unknown_group_is_a_clear_error(tmp_path: Path, shm_prefix: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shmbroker", "serve", "--data-dir", str(tmp_path / "d"),
         "--shm-prefix", shm_prefix, "--no-gateway", "--group", "no-such-group-x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "access.group: no group 'no-such-group-x' on this host" in result.stderr
