"""Shared-memory objects: names, modes, space checks and clear errors."""

from __future__ import annotations

import os
import textwrap

import pytest

from shmbroker import InvalidArgument, NoSpace, NotFound, Ring, shm
from tests.conftest import run_on_small_tmpfs


def test_ring_object_is_created_mode_0600_even_with_a_permissive_umask(ring_name):
    old = os.umask(0)
    try:
        ring = Ring.create(ring_name, 1 << 16)
    finally:
        os.umask(old)
    try:
        mode = os.stat(shm.SHM_DIR + ring_name).st_mode & 0o777
        assert mode == 0o600
    finally:
        ring.unlink()
        ring.close()


def test_huge_ring_is_refused_with_free_space_and_docker_hint(ring_name):
    with pytest.raises(NoSpace, match=r"/dev/shm has \d+ bytes free.*--shm-size"):
        Ring.create(ring_name, 1 << 40)
    assert not list(shm.list_names(ring_name[1:]))


def test_full_dev_shm_gives_clear_error_and_leaves_no_object(shm_prefix, tmp_path):
    """If /dev/shm is smaller than the ring (a 1 MiB tmpfs in a private mount
    namespace), then creation fails with NoSpace and removes its half-made object."""
    script = tmp_path / "create.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys
        from shmbroker import Ring, NoSpace, shm
        try:
            Ring.create("/{shm_prefix}big", 1 << 22)   # 4 MiB > 1 MiB tmpfs
        except NoSpace as exc:
            print("NoSpace:", exc)
        print("left:", list(shm.list_names("{shm_prefix}")))
    """)
    )
    out = run_on_small_tmpfs("/dev/shm", "1m", script, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "NoSpace:" in out.stdout
    assert "--shm-size" in out.stdout
    assert "left: []" in out.stdout


@pytest.mark.parametrize("name", ["/other.ring", "/shmb.a/b", "shmb." + "x" * 300])
def test_names_outside_our_namespace_are_refused(name):
    with pytest.raises(InvalidArgument, match="shared-memory name"):
        Ring.create(name, 1 << 16)


def test_opening_a_missing_ring_raises_not_found(ring_name):
    with pytest.raises(NotFound, match="no shared-memory object"):
        Ring.open(ring_name)


def test_creating_an_existing_ring_fails_and_keeps_the_original(ring_name):
    ring = Ring.create(ring_name, 1 << 16)
    try:
        ring.append(b"keep")
        with pytest.raises(InvalidArgument, match="already exists"):
            Ring.create(ring_name, 1 << 16)
        with Ring.open(ring_name) as again:
            assert [r.value for r in again.reader(0).poll(0)] == [b"keep"]
    finally:
        ring.unlink()
        ring.close()
