"""Fixtures shared by every test: unique shm names, and a check that nothing leaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shmbroker import EmbeddedBroker, Ring, shm

# `shmbroker serve` runs the Kafka gateway on 127.0.0.1:9092 by default: tests that
# start it by hand get none (a shared port), those that want one ask for a free port
# (EmbeddedBroker(gateway=True) passes --gateway-listen, which beats this)
os.environ["SHMBROKER_LISTENERS"] = ""
# ... and /metrics on 127.0.0.1:9644: tests' brokers serve theirs on a free port
# (the supervisor writes it to <data-dir>/metrics.json)
os.environ["SHMBROKER_METRICS_LISTENER"] = "127.0.0.1:0"


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll condition until it is true; fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def run_on_small_tmpfs(
    mount: str | Path, size: str, script: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a Python script with a fresh tmpfs of `size` mounted at `mount`, in a
    private mount namespace (so /dev/shm or a data directory can really fill up);
    skips the test where this machine does not allow it."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    mount_and_run = f"mount -t tmpfs -o size={size} tmpfs {mount} && "
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            mount_and_run + f"{sys.executable} {script}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[1],
    )


@pytest.fixture(scope="session", autouse=True)
def no_shm_left_by_this_session() -> Iterator[None]:
    """Objects named by this test process (tests and state machines) must be gone."""
    yield
    mine = [
        n
        for n in shm.list_names()
        if f".{os.getpid()}." in n
        or n.startswith(f"/{shm.NAME_PREFIX}t{os.getpid()}.")
        or n.endswith(f".c{os.getpid()}")  # a counter page of ours (counters.py)
    ]
    for name in mine:
        shm.unlink(name)
    assert not mine, f"the tests left shared memory behind: {mine}"


@pytest.fixture
def shm_prefix() -> Iterator[str]:
    """A unique name prefix; the test fails if it leaves any /dev/shm entry behind."""
    prefix = f"{shm.NAME_PREFIX}t{os.getpid()}.{uuid.uuid4().hex[:10]}."
    yield prefix
    leaked = list(shm.list_names(prefix))
    for name in leaked:
        shm.unlink(name)
    assert not leaked, f"test left shared memory behind: {leaked}"


@pytest.fixture
def ring_name(shm_prefix: str) -> str:
    return f"/{shm_prefix}ring"


@pytest.fixture
def ring(ring_name: str) -> Iterator[Ring]:
    """A fresh 64 KiB ring, unlinked afterwards."""
    r = Ring.create(ring_name, 1 << 16)
    yield r
    r.unlink()
    r.close()


SMALL_RING = 1 << 20  # tests' topics default to 1 MiB rings: /dev/shm may be small


@pytest.fixture
def broker(tmp_path: Path, shm_prefix: str) -> Iterator[EmbeddedBroker]:
    """A real supervisor process on a fresh data directory, with this test's shm
    prefix; stopped gracefully afterwards (the test fails if it does not exit 0), its
    rings removed."""
    embedded = EmbeddedBroker(
        tmp_path / "data",
        shm_prefix=shm_prefix,
        topic_defaults={"ring.bytes": SMALL_RING},
        remove=True,
    )
    embedded.start()
    try:
        yield embedded
    finally:
        if embedded.process is not None:
            code = embedded.stop()
            embedded.cleanup()
            assert code == 0, f"supervisor exited {code}: {embedded.log_tail()}"
        else:
            embedded.cleanup()
