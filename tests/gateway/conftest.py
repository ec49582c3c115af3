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
import trustme

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


def pem_files(directory: Path, *clients: str) -> dict[str, str]:
    """A CA made here (trustme), the gateway's certificate for 127.0.0.1 and one
    per client (CN: its name), as PEM files: "ca", "<name>.cert", "<name>.key"
    ("server" for the gateway's)."""
    ca = trustme.CA()
    issued = {"server": ca.issue_cert("127.0.0.1", "localhost")}
    for name in clients:
        issued[name] = ca.issue_cert(f"{name}@example.org", common_name=name)
    paths = {"ca": str(directory / "ca.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    for name, cert in issued.items():
        paths[f"{name}.cert"] = str(directory / f"{name}.cert.pem")
        paths[f"{name}.key"] = str(directory / f"{name}.key.pem")
        cert.cert_chain_pems[0].write_to_path(paths[f"{name}.cert"])
        cert.private_key_pem.write_to_path(paths[f"{name}.key"])
    return paths
