"""The gateway as a process: started by `shmbroker serve`, restarted on the same
port when it dies, kept serving when the supervisor dies (and adopted by the next
one), stopped with the supervisor; `shmbroker gateway` run by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shmbroker import Admin, EmbeddedBroker, shm
from tests.conftest import wait_until
from tests.gateway.conftest import RING, kcat

pytestmark = pytest.mark.system


@pytest.fixture
def own_broker(tmp_path: Path, shm_prefix: str) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: the test kills its processes."""
    embedded = EmbeddedBroker(
        tmp_path / "data", shm_prefix=shm_prefix,
        topic_defaults={"ring.bytes": RING}, remove=True, gateway=True,
    )  # fmt: skip
    embedded.start()
    try:
        embedded.gateway_address()
        yield embedded
    finally:
        if embedded.process is not None:
            code = embedded.stop()
            assert code == 0, embedded.log_tail()
        embedded.cleanup()


def read_state(path: Path) -> int | None:
    """The pid in a gateway state file (None while it is being replaced)."""
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def listed_topics(broker: EmbeddedBroker) -> set[str]:
    return {t["topic"] for t in json.loads(kcat(broker, "-L", "-J").stdout)["topics"]}


def test_a_killed_gateway_is_restarted_on_the_same_port(
    own_broker: EmbeddedBroker,
) -> None:
    with Admin(str(own_broker.data_dir)) as admin:
        admin.create_topic("kept", 1)
    port, pid = own_broker.gateway_port, own_broker.gateway_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: own_broker.gateway_pid() not in (None, pid), 60, "a new gateway")
    assert own_broker.gateway_port == port
    assert "kept" in listed_topics(own_broker)


def test_the_gateway_stops_with_the_supervisor(own_broker: EmbeddedBroker) -> None:
    pid = own_broker.gateway_pid()
    assert pid is not None
    gateway = psutil.Process(pid)
    assert own_broker.stop() == 0
    assert not gateway.is_running() or gateway.status() == psutil.STATUS_ZOMBIE


def test_the_gateway_outlives_a_killed_supervisor_and_is_adopted(
    own_broker: EmbeddedBroker,
) -> None:
    """If the supervisor is SIGKILLed, Kafka clients keep producing to existing
    topics (acks=1: nothing spills, so acks=all waits for the next supervisor);
    the next supervisor keeps that gateway instead of starting another."""
    with Admin(str(own_broker.data_dir)) as admin:
        admin.create_topic("t", 1)
    pid, port = own_broker.gateway_pid(), own_broker.gateway_port
    own_broker.kill()
    kcat(own_broker, "-P", "-t", "t", "-p", "0", "-X", "acks=1", stdin=b"acks=1\n")
    durable = subprocess.Popen(
        ["kcat", "-b", own_broker.bootstrap_servers, "-P", "-t", "t", "-p", "0"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    durable.stdin.write(b"acks=all\n")
    durable.stdin.close()
    own_broker.start()
    with durable.stderr:
        err = durable.stderr.read()
    assert durable.wait(60) == 0, err.decode()
    out = kcat(own_broker, "-C", "-t", "t", "-o", "beginning", "-e", "-q")
    assert out.stdout == b"acks=1\nacks=all\n"
    assert (own_broker.gateway_pid(), own_broker.gateway_port) == (pid, port)


def test_no_gateway_runs_by_default_in_embedded_brokers(
    broker_without_gateway: EmbeddedBroker,
) -> None:
    assert not (broker_without_gateway.data_dir / "gateway.json").exists()
    with pytest.raises(ValueError, match="no gateway"):
        broker_without_gateway.gateway_address()


@pytest.fixture
def broker_without_gateway(tmp_path: Path, shm_prefix: str) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path / "d", shm_prefix=shm_prefix, remove=True) as b:
        yield b


def test_gateway_command_by_hand(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """`shmbroker gateway` serves the same data directory on another port, says
    where in its state file, and exits 0 on SIGTERM."""
    state = f"gateway-by-hand-{uuid.uuid4().hex[:6]}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shmbroker", "gateway",
         "--data-dir", str(own_broker.data_dir),
         "--listen", "127.0.0.1:0", "--state-file", state],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        path = own_broker.data_dir / state
        wait_until(path.exists, 60, "the hand-run gateway's state file")
        port = json.loads(path.read_text())["port"]
        assert port != own_broker.gateway_port
        with Admin(str(own_broker.data_dir)) as admin:
            admin.create_topic("by-hand", 1)
        out = subprocess.run(
            ["kcat", "-b", f"127.0.0.1:{port}", "-L", "-J"],
            capture_output=True,
            timeout=60,
        )
        assert "by-hand" in {t["topic"] for t in json.loads(out.stdout)["topics"]}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


def test_no_shared_memory_of_a_gateway_broker_is_left(tmp_path: Path) -> None:
    """The gateway maps rings; stopping everything leaves nothing in /dev/shm."""
    prefix = f"{shm.NAME_PREFIX}t{os.getpid()}.{uuid.uuid4().hex[:10]}."
    with EmbeddedBroker(tmp_path / "d", shm_prefix=prefix, remove=True, gateway=True,
                        topic_defaults={"ring.bytes": RING}) as broker:  # fmt: skip
        kcat(broker, "-P", "-t", "x", stdin=b"1\n2\n")
        assert (
            kcat(broker, "-C", "-t", "x", "-o", "beginning", "-e", "-q").stdout
            == b"1\n2\n"
        )
    assert list(shm.list_names(prefix)) == []


def test_two_gateway_processes_share_the_port(tmp_path: Path, shm_prefix: str) -> None:
    """gateway.processes = 2: two processes listen on one port (SO_REUSEPORT); a
    killed one is restarted on it while the other keeps serving."""
    with EmbeddedBroker(
        tmp_path / "d", shm_prefix=shm_prefix, remove=True, gateway=True,
        topic_defaults={"ring.bytes": RING},
        gateway_options={"--gateway-processes": "2"},
    ) as broker:  # fmt: skip
        port = broker.gateway_port
        second = broker.data_dir / "gateway-1.json"
        wait_until(second.exists, 60, "the second gateway process")
        state = json.loads(second.read_text())
        assert state["port"] == port
        assert state["pid"] != broker.gateway_pid()
        os.kill(state["pid"], signal.SIGKILL)
        for i in range(20):  # connections land on either process
            kcat(broker, "-P", "-t", "shared", "-p", "0", stdin=b"%d\n" % i)
        wait_until(
            lambda: read_state(second) not in (None, state["pid"]), 60,
            "the killed gateway process restarted",
        )  # fmt: skip
        assert json.loads(second.read_text())["port"] == port
        out = kcat(broker, "-C", "-t", "shared", "-o", "beginning", "-e", "-q").stdout
        assert out.split() == [b"%d" % i for i in range(20)]


def test_a_gateway_waiting_for_its_supervisor_stops_at_once(tmp_path: Path) -> None:
    """If a starting gateway gets SIGTERM while no supervisor answers yet (it waits
    up to 30 s for one), then it exits 0 at once: a supervisor stopped right after
    it started one waits for it (and kills it after 10 s)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shmbroker", "gateway", "--data-dir", str(data_dir),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with proc.stderr:
            # its loop is up (signal handlers set) once it asked for the supervisor
            wait_until(lambda: psutil.Process(proc.pid).num_threads() > 2, 60,
                       "the gateway to ask for its supervisor")  # fmt: skip
            started = time.monotonic()
            proc.terminate()
            assert proc.wait(20) == 0
            assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
