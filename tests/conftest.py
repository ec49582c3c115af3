"""Fixtures shared by every test: unique shm names, and a check that nothing leaks."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from shmbroker import shm


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll condition until it is true; fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


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
