"""tools/deploy: the example config against config.py, the systemd unit (verified by
systemd-analyze, and the READY=1 that `serve` sends), the container recipe."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shmbroker import EmbeddedBroker, protocol
from shmbroker.broker import progress
from shmbroker.config import BrokerConfig, TopicConfig, _flatten, kafka_name
from tests.conftest import wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEPLOY = Path(__file__).resolve().parents[1] / "tools" / "deploy"
EXAMPLE = DEPLOY / "shmbroker.toml.example"
UNIT = DEPLOY / "shmbroker.service"


def test_example_config_names_every_key_with_its_default() -> None:
    """If config.py gains a key or changes a default, then this fails until the
    example says so too."""
    document = tomllib.loads(EXAMPLE.read_text())
    topic = document.pop("topic")

    broker = _flatten(document)
    expected = {
        kafka_name(f.name): f.default
        for f in dataclasses.fields(BrokerConfig)
        if f.name != "topic_defaults"
    }
    assert broker == expected
    assert _flatten(topic) == {
        kafka_name(f.name): f.default for f in dataclasses.fields(TopicConfig)
    }


def test_example_config_loads_as_the_defaults() -> None:
    loaded = BrokerConfig.load(EXAMPLE, env={})
    assert dataclasses.replace(loaded, topic_defaults={}) == BrokerConfig()
    assert BrokerConfig().topic_config(loaded.topic_defaults) == TopicConfig()


def test_example_config_gives_every_key_a_comment_with_its_unit() -> None:
    """Every key line follows a comment; numbers in bytes or ms say so."""
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"
            key = line.split("=")[0].strip()
            if key.endswith(".bytes"):
                assert "bytes" in lines[i - 1], f"{key}: no unit"
            if key.endswith(".ms"):
                assert "milliseconds" in lines[i - 1], f"{key}: no unit"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """If systemd-analyze is here, then it finds nothing wrong with the unit (with
    ExecStart pointing at this checkout's shmbroker)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert "\nRemoveIPC=no\n" in text
    shmbroker = Path(sys.executable).with_name("shmbroker")
    unit = tmp_path / "shmbroker.service"
    unit.write_text(text.replace("/opt/shmbroker/bin/shmbroker", str(shmbroker)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_serve_says_ready_to_systemd(
    tmp_path: Path, shm_prefix: str, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    """If NOTIFY_SOCKET names a socket, then `serve` sends READY=1 there once its
    control socket answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        if abstract:
            name = f"shmbroker-test-{uuid.uuid4().hex}"
            listener.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            path = tmp_path / "notify.sock"
            listener.bind(str(path))
            monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        listener.settimeout(30)
        with EmbeddedBroker(tmp_path / "data", shm_prefix=shm_prefix, remove=True):
            message = listener.recv(4096).decode()
    assert "READY=1" in message.split("\n")
    assert f"STATUS=serving {tmp_path / 'data'}" in message.split("\n")


def test_slow_start_is_logged_and_told_to_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If opening the partitions takes longer than the report interval, then each
    interval logs how far it got and tells systemd (extending its timeout)."""
    monkeypatch.setattr(progress, "REPORT_INTERVAL", 0.0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify.sock"))
        listener.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
        with caplog.at_level(logging.INFO, logger="shmbroker.broker.progress"):
            started = progress.StartProgress("recovery", 2)
            started.step("orders-0")
            started.step("orders-1")
            started.finish()
        message = listener.recv(4096).decode()
    assert "recovery: 1 of 2 partitions (last orders-0)" in caplog.text
    assert "recovery: 2 partitions in" in caplog.text
    assert "STATUS=recovery: 1 of 2 partitions" in message
    assert "EXTEND_TIMEOUT_USEC=" in message


def test_compose_sets_shm_size_and_publishes_the_gateway() -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "\n    shm_size: " in compose
    assert '"9092:9092"' in compose
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "EXPOSE 9092 9644" in dockerfile
    assert '"--gateway-listen", "0.0.0.0:9092"' in dockerfile
    assert "--shm-size" in dockerfile


def _docker_unavailable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed here"
    probe = subprocess.run([docker, "info"], capture_output=True, text=True,
                           timeout=30)  # fmt: skip
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no Docker daemon here: {reason}"
    return None


def test_container_recipe_builds_and_serves(tmp_path: Path) -> None:
    """If Docker works here, then the image builds, and a container with
    --shm-size serves /metrics and the gateway on the published ports."""
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    root = DEPLOY.parents[1]
    tag = f"shmbroker-test:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag,
                    str(root)], check=True, timeout=900)  # fmt: skip
    name = f"shmbroker-test-{uuid.uuid4().hex[:8]}"
    try:
        run = ["docker", "run", "-d", "--rm", "--name", name, "--shm-size=256m",
               "-p", "127.0.0.1::9092", "-p", "127.0.0.1::9644", tag]  # fmt: skip
        subprocess.run(run, check=True, timeout=60)

        def port(inner: int) -> int:
            out = subprocess.run(
                ["docker", "port", name, str(inner)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            return int(out.stdout.split(":")[-1])

        import urllib.request

        def metrics() -> bool:
            try:
                url = f"http://127.0.0.1:{port(9644)}/metrics"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return b"kafka_controller_kafkacontroller_globaltopiccount" in (
                        answer.read()
                    )
            except OSError:
                return False

        wait_until(metrics, 60, "the container's /metrics")
        with socket.create_connection(("127.0.0.1", port(9092)), timeout=10):
            pass
    finally:
        subprocess.run(["docker", "stop", "-t", "60", name], capture_output=True)
        subprocess.run(["docker", "rmi", tag], capture_output=True)


def test_metrics_state_names_the_serving_supervisor(
    tmp_path: Path, shm_prefix: str
) -> None:
    """`shmbroker top` finds the endpoint through metrics.json: it names the
    supervisor that serves it and goes when it stops."""
    data_dir = tmp_path / "data"
    with EmbeddedBroker(data_dir, shm_prefix=shm_prefix, remove=True) as broker:
        url = broker.metrics_url()  # waits until it serves
        state = protocol.load_metrics_state(broker.data_dir)
        assert state is not None
        assert state.pid == broker.pid
        assert state.url == url
        assert os.stat(broker.data_dir / protocol.METRICS_FILE).st_mode & 0o077 == 0
        broker.stop()
        assert protocol.load_metrics_state(data_dir) is None
