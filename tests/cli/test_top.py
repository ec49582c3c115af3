"""`shmbroker top` in a real pseudo-terminal against a real broker: what a user sees
(the topic, its rate in, its group's lag), and q and Ctrl-C leave it cleanly."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator

import pytest

from shmbroker import Consumer, EmbeddedBroker, Producer, TopicPartition
from tests.conftest import wait_until

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[a-zA-Z]|\][^\x07]*\x07|[()][0-9A-B]|[=>78])")


class Terminal:
    """A process on the slave side of a pty (its controlling terminal, so Ctrl-C
    typed there is a SIGINT), with what it wrote so far, escapes stripped."""

    def __init__(self, args: list[str]) -> None:
        # the size a user's terminal has, not whatever COLUMNS pytest's has
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        size = struct.pack("HHHH", 40, 140, 0, 0)
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (nothing of pytest's runs here)
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, size)
                os.execve(args[0], args, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.status: int | None = None

    def read(self) -> None:
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError as exc:  # EIO: the child closed the terminal
                if exc.errno != errno.EIO:
                    raise
                return
            if not chunk:
                return
            self.raw += chunk

    @property
    def screen(self) -> str:
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def shows(self, pattern: str) -> bool:
        self.read()
        return re.search(pattern, self.screen) is not None

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def exited(self) -> bool:
        self.read()
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def close(self) -> None:
        if not self.exited():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def top_on(broker: EmbeddedBroker) -> Iterator[Terminal]:
    broker.metrics_url()  # serving
    terminal = Terminal([sys.executable, "-m", "shmbroker", "top",
                         "--data-dir", str(broker.data_dir)])  # fmt: skip
    try:
        yield terminal
    finally:
        terminal.close()


def test_top_shows_topics_rates_and_group_lag_then_q_quits(
    broker: EmbeddedBroker, top_on: Terminal
) -> None:
    """If records flow into a topic and a group is behind, then top shows the topic
    with a rate in and the group's lag; q ends it with status 0 and the terminal
    back as it was."""
    topic = f"top-{uuid.uuid4().hex[:6]}"
    with Producer(str(broker.data_dir), linger_ms=0) as producer:
        producer.send(topic, b"first", partition=0).get(timeout=10)
        with Consumer(str(broker.data_dir), group_id="g-top",
                      enable_auto_commit=False) as consumer:  # fmt: skip
            consumer.commit({TopicPartition(topic, 0): 1})

        def rate_shows() -> bool:
            producer.send_batch(topic, [b"r"] * 50, partition=0)
            producer.flush()
            # the topic's row: its name, 1 partition, then a rate in above 0
            return top_on.shows(rf"{topic}\s+1\s+[0-9,]*[1-9][0-9,]*\.\d/s")

        wait_until(rate_shows, 30, f"top to show {topic} with a rate in")
    wait_until(lambda: top_on.shows(rf"g-top\s+{topic}\s+[1-9][0-9,]*"), 30,
               "top to show the group's lag")  # fmt: skip
    assert "RING-FILL" in top_on.screen
    assert "SPILL-LAG" in top_on.screen
    top_on.type(b"q")
    wait_until(top_on.exited, 10, "top to exit on q")
    assert top_on.status == 0
    assert "Traceback" not in top_on.screen


def test_ctrl_c_leaves_top_cleanly(top_on: Terminal) -> None:
    """If the user types Ctrl-C, then top exits with status 0, no traceback."""
    wait_until(lambda: top_on.shows("shmbroker top"), 30, "top's first view")
    top_on.type(b"\x03")  # the terminal turns it into SIGINT for top
    wait_until(top_on.exited, 10, "top to exit on Ctrl-C")
    assert top_on.status == 0
    assert "Traceback" not in top_on.screen


def test_top_without_a_serving_broker_says_so(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shmbroker", "top", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"no supervisor serves metrics for {tmp_path}" in result.stderr
    assert "Traceback" not in result.stderr


def test_top_once_prints_one_view(broker: EmbeddedBroker) -> None:
    with Producer(str(broker.data_dir)) as producer:
        producer.send("once-topic", b"x").get(timeout=10)
    broker.metrics_url()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "shmbroker", "top", "--once",
         "--data-dir", str(broker.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"once-topic\s+1\s+-\s+-\s+1\s", result.stdout)
    assert time.monotonic() - started < 30
