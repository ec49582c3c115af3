"""What a new user runs into: a data directory serve cannot use, a ring found by its
topic, --version, serve --log-level, errors about a deleted topic, the README's
Ring example. Each says what went wrong in one line, never a traceback."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, UnknownTopic, shm
from shmbroker.cli import main
from tests.cli.test_cli import cli, fails, ok
from tests.conftest import wait_until

README = Path(__file__).parents[2] / "README.md"
NOBODY = 65534


def serve_fails(data_dir: Path) -> str:
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir)])
    err = fails(result)
    assert len(err.splitlines()) == 1, err
    return err


def test_serve_on_a_path_under_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    err = serve_fails(tmp_path / "file" / "data")
    assert err == (
        f"Error: cannot serve {tmp_path}/file/data: {tmp_path}/file/data cannot be "
        f"created: {tmp_path}/file is a file, not a directory; use another "
        f"--data-dir\n"
    )


def test_serve_on_an_existing_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    err = serve_fails(tmp_path / "file")
    assert err == (
        f"Error: cannot serve {tmp_path}/file: {tmp_path}/file is not a directory: "
        f"move it away or use another --data-dir\n"
    )


@contextlib.contextmanager
def unwritable_dir() -> Iterator[Path]:
    """A directory this process cannot write in: mode 0555, or (root writes
    anywhere) owned by root while we run as nobody."""
    directory = Path(tempfile.mkdtemp(prefix="shmb-ro-"))  # /tmp: nobody may enter
    try:
        if os.geteuid() == 0:
            directory.chmod(0o755)
            os.seteuid(NOBODY)
            try:
                yield directory
            finally:
                os.seteuid(0)
        else:
            directory.chmod(0o555)
            yield directory
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def test_serve_on_a_directory_it_cannot_write_says_so() -> None:
    with unwritable_dir() as directory:
        uid = os.geteuid()
        inside = serve_fails(directory / "data")
        itself = serve_fails(directory)
    assert inside == (
        f"Error: cannot serve {directory}/data: {directory}/data cannot be created: "
        f"uid {uid} cannot write in {directory}; use another --data-dir\n"
    )
    assert itself.startswith(
        f"Error: cannot serve {directory}: uid {uid} cannot write in {directory}: "
    )


def test_ring_stat_finds_a_partitions_ring_by_topic(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "rs", "--partitions", "2"))
    with Producer(broker.data_dir) as producer:
        producer.send_batch("rs", [b"a", b"b", b"c"], partition=1)
    by_topic = ok(cli(broker, "ring-stat", "--topic", "rs", "--partition", "1"))
    with Admin(broker.data_dir) as admin:
        name = admin.ring_name("rs", 1)
    by_name = ok(CliRunner().invoke(main, ["ring-stat", name]))

    def steady(stat: str) -> list[str]:
        """Without the waiter counts: the spill thread parks and wakes meanwhile."""
        return [line for line in stat.splitlines() if "_waiters" not in line]

    assert steady(by_topic) == steady(by_name)
    assert re.search(r"^next_offset +3$", by_topic, re.MULTILINE), by_topic
    err = fails(cli(broker, "ring-stat", "--topic", "rs", "--partition", "2"))
    assert err == "Error: topic 'rs' has partitions 0..1, not 2\n"
    assert "give a ring NAME or --topic" in fails(cli(broker, "ring-stat"), 2)


def test_version() -> None:
    from shmbroker import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert ok(result) == f"shmbroker, version {__version__}\n"


def run_serve(data_dir: Path, prefix: str, *flags: str) -> str:
    """serve until it answers, then SIGTERM: its stderr. What it leaves in shared
    memory (kept for the next serve, by design) is removed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "shmbroker", "serve", "--data-dir", str(data_dir),
         "--shm-prefix", prefix, "--no-gateway", *flags],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def answers() -> bool:
            try:
                with Admin(str(data_dir)) as admin:
                    admin.list_topics()
                return True
            except Exception:
                return False

        wait_until(answers, 30, "serve to answer on its control socket")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        for name in shm.list_names(prefix):  # a broker's objects outlive it
            shm.unlink(name)
    assert process.returncode == 0, err.decode()
    return err.decode()


def test_serve_log_level(tmp_path: Path, shm_prefix: str) -> None:
    default = run_serve(tmp_path / "a", shm_prefix)
    assert " INFO shmbroker.broker.supervisor: supervisor " in default
    quiet = run_serve(tmp_path / "b", shm_prefix, "--log-level", "warning")
    assert " INFO " not in quiet
    result = CliRunner().invoke(main, ["serve", "--log-level", "loud"])
    assert "'loud' is not one of" in fails(result, 2)


def test_errors_about_a_deleted_topic_name_the_topic(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("gone", 1)
        ring = admin.ring_name("gone", 0)
    with (
        Producer(broker.data_dir, linger_ms=0) as producer,
        Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer,
    ):
        producer.send_batch("gone", [b"x"], partition=0)
        consumer.assign([("gone", 0)])
        assert len(consumer.poll_batch(10, 5)) == 1
        with Admin(broker.data_dir) as admin:
            admin.delete_topic("gone")
        with pytest.raises(UnknownTopic) as sent:
            producer.send_batch("gone", [b"y"], partition=0)
        with pytest.raises(UnknownTopic) as read:
            consumer.poll_batch(10, 5)
    for error in (sent.value, read.value):
        assert "topic 'gone' partition 0" in str(error)
        assert ring not in str(error)


def test_the_readmes_ring_example_runs_and_leaves_nothing(ring_name: str) -> None:
    """The shm_prefix fixture fails the test if the example leaves its ring."""
    text = README.read_text()
    section = text[text.index("## Using a ring") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 10)]
    code = code.replace("/shmb.demo.orders-0", ring_name)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "0 b'key' b'value'"
