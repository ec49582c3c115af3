"""A real supervisor with its gateway process for every test module (tests name
their topics uniquely), and helpers to run the Kafka clients against it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmbroker import EmbeddedBroker, shm

RING = 4 << 20  # librdkafka sends batches up to 1 MB: room for a few
KCAT = shutil.which("kcat")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A supervisor and its gateway on a free port of 127.0.0.1, for the module."""
    with gateway_broker(tmp_path_factory.mktemp("gw")) as embedded:
        yield embedded


@contextlib.contextmanager
def gateway_broker(
    directory: Path, gateway_options: dict[str, str] | None = None
) -> Iterator[EmbeddedBroker]:
    """A supervisor on directory/data with its gateway (more `serve` flags in
    gateway_options), its rings checked and removed afterwards."""
    prefix = f"{shm.NAME_PREFIX}t{os.getpid()}.{uuid.uuid4().hex[:10]}."
    embedded = EmbeddedBroker(
        directory / "data",
        shm_prefix=prefix,
        topic_defaults={"ring.bytes": RING},
        remove=True,
        gateway=True,
        gateway_options=gateway_options,
    )
    embedded.start()
    try:
        embedded.gateway_address()
        yield embedded
    finally:
        code = embedded.stop() if embedded.process is not None else 0
        log = embedded.log_tail(200)
        embedded.cleanup()
        leaked = list(shm.list_names(prefix))
        for name in leaked:
            shm.unlink(name)
        assert code == 0, f"supervisor exited {code}: {log}"
        assert not leaked, f"left shared memory behind: {leaked}"


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name of this test's own."""
    name = request.node.name[:60].replace("[", ".").replace("]", "")
    return f"{name}-{uuid.uuid4().hex[:6]}"


def kcat(broker: EmbeddedBroker, *args: str, stdin: bytes | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """Run kcat against the broker's gateway; fails the test on a non-zero exit."""
    if KCAT is None:
        pytest.fail("kcat is not installed: `make test` installs it with apt")
    result = subprocess.run(
        [KCAT, "-b", broker.bootstrap_servers, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"kcat {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}"
    )
    return result


@contextlib.contextmanager
def secured_broker(
    directory: Path, listener: str, **keys: str | int
) -> Iterator[EmbeddedBroker]:
    """A supervisor and its gateway on a free port of 127.0.0.1 with listener's
    security protocol (e.g. "SASL_SSL"), the other keys (Kafka's names) in its
    config file; users go in with shmbroker.users before or after the start."""
    config = directory / "broker.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
    options = {"--config": str(config), "--gateway-listen": f"{listener}://127.0.0.1:0"}
    with gateway_broker(directory, options) as embedded:
        yield embedded
