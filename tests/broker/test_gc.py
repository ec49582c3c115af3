"""Leaked shared memory: which broker objects `shmbroker gc` removes and which it keeps.
Real shm objects under the test's own prefix, real data directories and registries."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmbroker import InvalidArgument, shm
from shmbroker.broker import gc, registry
from shmbroker.broker.registry import BrokerInfo, TopicEntry

ORDERS = TopicEntry(registry.new_topic_id(), partitions=2)
RING_BYTES = 8192


@pytest.fixture
def made(shm_prefix: str) -> Iterator[list[str]]:
    """Names the test creates on purpose; whatever gc kept is unlinked afterwards, so
    shm_prefix's leak check still catches anything else."""
    names: list[str] = []
    yield names
    for name in names:
        shm.unlink(name)


@pytest.fixture(autouse=True)
def no_recheck_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "INFO_RECHECK_S", 0.0)


def make_object(made: list[str], name: str, size: int = RING_BYTES) -> str:
    os.close(shm.create(name, size))
    made.append(name)
    return name


def make_broker(
    made: list[str],
    data_dir: Path,
    prefix: str,
    topics: dict[str, TopicEntry],
    *,
    info: bool = True,
) -> str:
    """A broker's data directory with a registry of topics, and its info object;
    returns its base name."""
    data_dir.mkdir(mode=0o700)
    registry.save(data_dir, topics)
    base = shm.broker_base(prefix, shm.broker_id(data_dir))
    if info:
        write_info(made, base, data_dir)
    return base


def write_info(made: list[str], base: str, data_dir: Path) -> None:
    name = shm.broker_info_name(base)
    registry.write_broker_info(
        name, BrokerInfo(str(data_dir.resolve()), os.getpid(), int(time.time() * 1e3))
    )
    made.append(name)


def make_ring(made: list[str], base: str, topic_id: str, partition: int) -> str:
    return make_object(made, shm.ring_name(base, topic_id, partition))


def exists(name: str) -> bool:
    return os.path.exists(shm.SHM_DIR + name)


def test_rings_of_a_live_topic_and_the_info_object_are_kept(made, shm_prefix, tmp_path):
    base = make_broker(made, tmp_path / "data", shm_prefix, {"orders": ORDERS})
    rings = [make_ring(made, base, ORDERS.topic_id, p) for p in range(2)]

    assert gc.collect(prefix=shm_prefix) == []
    assert all(exists(name) for name in rings)
    assert exists(shm.broker_info_name(base))


def test_ring_of_an_unknown_topic_id_is_removed(made, shm_prefix, tmp_path):
    base = make_broker(made, tmp_path / "data", shm_prefix, {"orders": ORDERS})
    live = make_ring(made, base, ORDERS.topic_id, 0)
    stale_id = registry.new_topic_id()
    stale = make_ring(made, base, stale_id, 0)

    removed = gc.collect(prefix=shm_prefix)

    assert [(r.name, r.bytes) for r in removed] == [(stale, RING_BYTES)]
    assert f"no topic in {(tmp_path / 'data').resolve()} has id {stale_id}" in (
        removed[0].reason
    )
    assert not exists(stale)
    assert exists(live)
    assert exists(shm.broker_info_name(base))


def test_ring_of_a_partition_beyond_the_topic_count_is_removed(
    made, shm_prefix, tmp_path
):
    """If a topic has 2 partitions, then ring 2 (left by an older, larger topic of
    the same id, or written by hand) is garbage and rings 0 and 1 are not."""
    base = make_broker(made, tmp_path / "data", shm_prefix, {"orders": ORDERS})
    kept = [make_ring(made, base, ORDERS.topic_id, p) for p in range(2)]
    beyond = make_ring(made, base, ORDERS.topic_id, 2)

    removed = gc.collect(prefix=shm_prefix)

    assert [r.name for r in removed] == [beyond]
    assert "topic 'orders'" in removed[0].reason
    assert "has 2 partitions; no 2" in removed[0].reason
    assert all(exists(name) for name in kept)


def test_broker_whose_data_dir_was_deleted_loses_its_rings_then_its_info(
    made, shm_prefix, tmp_path
):
    data_dir = tmp_path / "data"
    base = make_broker(made, data_dir, shm_prefix, {"orders": ORDERS})
    rings = [make_ring(made, base, ORDERS.topic_id, p) for p in range(2)]
    info = shm.broker_info_name(base)
    info_bytes = os.stat(shm.SHM_DIR + info).st_size
    shutil.rmtree(data_dir)

    removed = gc.collect(prefix=shm_prefix)

    assert [(r.name, r.bytes) for r in removed] == [
        (rings[0], RING_BYTES),
        (rings[1], RING_BYTES),
        (info, info_bytes),
    ]
    assert all("no longer exists" in r.reason for r in removed)
    assert str(data_dir.resolve()) in removed[0].reason
    assert not any(exists(name) for name in [*rings, info])


def test_dry_run_removes_nothing_and_reports_what_a_real_run_removes(
    made, shm_prefix, tmp_path
):
    gone = tmp_path / "gone"
    base_gone = make_broker(made, gone, shm_prefix, {"orders": ORDERS})
    make_ring(made, base_gone, ORDERS.topic_id, 0)
    shutil.rmtree(gone)
    base = make_broker(made, tmp_path / "data", shm_prefix, {"orders": ORDERS})
    make_ring(made, base, ORDERS.topic_id, 0)
    make_ring(made, base, registry.new_topic_id(), 0)
    before = sorted(shm.list_names(shm_prefix))

    planned = gc.collect(dry_run=True, prefix=shm_prefix)

    assert len(planned) == 3
    assert sorted(shm.list_names(shm_prefix)) == before
    assert gc.collect(prefix=shm_prefix) == planned
    assert sorted(shm.list_names(shm_prefix)) == sorted(
        set(before) - {r.name for r in planned}
    )


def test_names_a_broker_did_not_make_are_never_touched(made, shm_prefix, tmp_path):
    """If a name under the prefix does not parse as a broker's object, then gc
    leaves it alone even though nothing could own it."""
    broker = shm.broker_id(tmp_path / "never-existed")
    topic_id = registry.new_topic_id()
    others = [
        make_object(made, f"/{shm_prefix}whatever"),
        make_object(made, f"/{shm_prefix}b{broker}.broker.old"),
        make_object(made, f"/{shm_prefix}b{broker}.{topic_id}.0.bak"),
        make_object(made, f"/{shm_prefix}b{broker[:-1]}.{topic_id}.0"),
        make_object(made, f"/{shm_prefix}b{broker}.{topic_id[:-1]}.0"),
        make_object(made, f"/{shm_prefix}b{'x' * 12}.broker"),
    ]

    assert gc.collect(prefix=shm_prefix) == []
    assert gc.orphans(shm.broker_base(shm_prefix, broker), {}) == []
    assert all(exists(name) for name in others)


def test_rings_whose_info_object_is_missing_are_removed(made, shm_prefix, tmp_path):
    base = make_broker(
        made, tmp_path / "data", shm_prefix, {"orders": ORDERS}, info=False
    )
    ring = make_ring(made, base, ORDERS.topic_id, 0)

    removed = gc.collect(prefix=shm_prefix)

    assert [r.name for r in removed] == [ring]
    assert f"info object {shm.broker_info_name(base)} is missing" in removed[0].reason
    assert not exists(ring)


def test_rings_whose_info_object_is_unreadable_are_removed_with_it(
    made, shm_prefix, tmp_path
):
    base = make_broker(
        made, tmp_path / "data", shm_prefix, {"orders": ORDERS}, info=False
    )
    ring = make_ring(made, base, ORDERS.topic_id, 0)
    info = shm.broker_info_name(base)
    fd = shm.create(info, 64)  # zeros: not JSON
    os.close(fd)
    made.append(info)

    removed = gc.collect(prefix=shm_prefix)

    assert [(r.name, r.bytes) for r in removed] == [(ring, RING_BYTES), (info, 64)]
    assert "is unreadable" in removed[0].reason
    assert not exists(ring)
    assert not exists(info)


def test_info_written_while_gc_looks_again_saves_the_rings(
    made, shm_prefix, tmp_path, monkeypatch
):
    """If a starting broker writes its info object (unlink, create, write) while gc
    scans, then gc's second look finds it and keeps the broker's rings."""
    data_dir = tmp_path / "data"
    base = make_broker(made, data_dir, shm_prefix, {"orders": ORDERS}, info=False)
    ring = make_ring(made, base, ORDERS.topic_id, 0)
    pauses = []

    def broker_starts(seconds: float) -> None:
        pauses.append(seconds)
        write_info(made, base, data_dir)

    monkeypatch.setattr(gc.time, "sleep", broker_starts)

    assert gc.collect(prefix=shm_prefix) == []
    assert pauses == [gc.INFO_RECHECK_S]
    assert exists(ring)


def test_data_dir_with_no_registry_and_no_subdirectories_owns_no_rings(
    made, shm_prefix, tmp_path
):
    data_dir = tmp_path / "data"
    base = make_broker(made, data_dir, shm_prefix, {"orders": ORDERS})
    ring = make_ring(made, base, ORDERS.topic_id, 0)
    (data_dir / registry.REGISTRY_FILE).unlink()
    (data_dir / "supervisor.lock").write_text("1\n")  # files do not count

    removed = gc.collect(prefix=shm_prefix)

    assert [r.name for r in removed] == [ring]
    assert "has no topics.json and no partition directories" in removed[0].reason
    assert exists(shm.broker_info_name(base)), "the data directory still exists"


def test_registry_missing_beside_partition_directories_keeps_rings_and_warns(
    made, shm_prefix, tmp_path, caplog
):
    data_dir = tmp_path / "data"
    base = make_broker(made, data_dir, shm_prefix, {"orders": ORDERS})
    ring = make_ring(made, base, ORDERS.topic_id, 0)
    (data_dir / registry.REGISTRY_FILE).unlink()
    (data_dir / "orders-0").mkdir()

    with caplog.at_level(logging.WARNING, logger="shmbroker.broker.gc"):
        assert gc.collect(prefix=shm_prefix) == []

    assert exists(ring)
    assert "keeping 1 rings" in caplog.text
    assert "has partition directories but no topics.json" in caplog.text


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "topic registry"),
        (b'{"version": 99, "topics": {}}', "has version 99"),
    ],
)
def test_unreadable_registry_keeps_the_brokers_rings_and_warns(
    made, shm_prefix, tmp_path, caplog, content, why
):
    data_dir = tmp_path / "data"
    base = make_broker(made, data_dir, shm_prefix, {"orders": ORDERS})
    unknown = make_ring(made, base, registry.new_topic_id(), 0)
    (data_dir / registry.REGISTRY_FILE).write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="shmbroker.broker.gc"):
        assert gc.collect(prefix=shm_prefix) == []

    assert exists(unknown)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "cannot read its topic registry" in record.getMessage()
    assert why in record.getMessage()


def test_prefix_outside_ours_is_refused():
    with pytest.raises(InvalidArgument, match=r"must start with 'shmb\.'"):
        gc.collect(dry_run=True, prefix="")


def test_orphans_names_unowned_rings_of_one_base_and_removes_nothing(
    made, shm_prefix, tmp_path
):
    """orphans() judges only the given base against the given topics (the
    supervisor's own, at start), and leaves unlinking to its caller."""
    base = make_broker(made, tmp_path / "data", shm_prefix, {"orders": ORDERS})
    other = make_broker(made, tmp_path / "other", shm_prefix, {})
    owned = make_ring(made, base, ORDERS.topic_id, 1)
    beyond = make_ring(made, base, ORDERS.topic_id, 2)
    padded = make_object(made, f"{base}{ORDERS.topic_id}.01")  # not partition 1's name
    unknown_id = registry.new_topic_id()
    unknown = make_ring(made, base, unknown_id, 0)
    elsewhere = make_ring(made, other, unknown_id, 0)

    found = gc.orphans(base, {"orders": ORDERS})

    assert {r.name: r.bytes for r in found} == {
        beyond: RING_BYTES,
        padded: RING_BYTES,
        unknown: RING_BYTES,
    }
    reasons = {r.name: r.reason for r in found}
    assert reasons[beyond] == "topic 'orders' has 2 partitions; no 2"
    assert reasons[unknown] == f"no topic has id {unknown_id} (deleted or re-created)"
    assert all(exists(name) for name in [owned, beyond, padded, unknown, elsewhere])
    assert gc.orphans(base, {}) == sorted(
        [
            gc.Removal(
                name, f"no topic has id {tid} (deleted or re-created)", RING_BYTES
            )
            for name, tid in [
                (owned, ORDERS.topic_id),
                (beyond, ORDERS.topic_id),
                (padded, ORDERS.topic_id),
                (unknown, unknown_id),
            ]
        ],
        key=lambda r: r.name,
    )
