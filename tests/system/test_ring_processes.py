"""Rings shared by real processes: concurrent producers, independent consumers, and
producers killed with SIGKILL at random points."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shmbroker import Ring
from tests.conftest import wait_until

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]


def worker(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.system.ring_worker", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Spiller(threading.Thread):
    """Stands in for the durable log: advances the spill position behind the slowest
    consumer, so producers reuse space and no consumer is ever lapped."""

    def __init__(self, ring: Ring, position_files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.ring, self.files, self.done = ring, position_files, threading.Event()

    def _position(self, path: Path) -> int:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        return struct.unpack("<q", data)[0] if len(data) == 8 else 0

    def run(self) -> None:
        while not self.done.wait(0.0002):
            low = min(self._position(f) for f in self.files)
            if low > self.ring.stat().spill_position:
                self.ring.spill_advance(low)

    def __enter__(self) -> Spiller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def summary(proc: subprocess.Popen[str], timeout: float) -> dict:
    return json.loads(finish(proc, timeout))


def test_four_producers_two_consumers_each_see_every_record_once_in_order(
    ring_name, tmp_path
):
    ring = Ring.create(ring_name, 1 << 20)  # ~50 MB pass through: it wraps many times
    try:
        positions = [tmp_path / f"consumer{i}.pos" for i in range(2)]
        consumers = [worker("consume", ring_name, 800_000, p) for p in positions]
        with Spiller(ring, positions):
            producers = [
                worker("produce", ring_name, i, 200_000, "mixed") for i in range(4)
            ]
            for p in producers:
                finish(p, 240)
            results = [summary(c, 240) for c in consumers]
        for r in results:
            assert r["problems"] == []
            assert r["records"] == 800_000
            assert r["next_seq"] == {str(i): 200_000 for i in range(4)}
        assert ring.stat().next_offset == 800_000
    finally:
        ring.unlink()
        ring.close()


def test_producers_killed_at_random_points_never_tear_lose_or_duplicate(
    ring_name, tmp_path
):
    """If producers are SIGKILLed mid-append while two others keep appending, then
    the others go on within 1 s of each kill, and a consumer sees every batch whole
    (CRC), every producer's records gap-free and once, and dense offsets. `make test`
    kills 60 (a process start each, ~0.3 s; ~15 of them land inside an append),
    `make soak` 400."""
    seed = int(os.environ.get("SHMB_SEED", random.randrange(2**32)))
    kills = int(os.environ.get("SHMB_KILLS", 60))
    rng = random.Random(seed)
    ring = Ring.create(ring_name, 1 << 22)
    stop = tmp_path / "stop"
    position = tmp_path / "consumer.pos"
    try:
        consumer = worker("consume", ring_name, -1, position, "--idle", 3)
        with Spiller(ring, [position]):
            steady = [
                worker(
                    "produce", ring_name, i, -1, "batch", "--batch", 20, "--stop", stop
                )
                for i in range(2)
            ]
            for k in range(kills):
                victim = worker(
                    "produce",
                    ring_name,
                    100 + k,
                    -1,
                    "batch",
                    "--batch",
                    64,
                    "--pad",
                    2000,
                )
                started = victim.stdout.readline()
                until = time.perf_counter() + rng.uniform(0, 0.002)
                while time.perf_counter() < until:  # a random point in its loop
                    pass
                victim.kill()
                _, err = victim.communicate()
                assert started == "appending\n", err
                tail = ring.stat().tail_position
                wait_until(
                    lambda t=tail: ring.stat().tail_position > t,
                    1.0,
                    f"the other producers to append after kill #{k} (seed {seed})",
                )
            stop.touch()
            for p in steady:
                finish(p, 60)
            result = summary(consumer, 120)
        assert result["problems"] == [], f"seed {seed}"
        assert set(result["next_seq"]) == {"0", "1"} | {
            str(100 + k) for k in range(kills)
        }
        assert result["records"] == ring.stat().next_offset
        recoveries = ring.stat().lock_recoveries
        assert recoveries >= 1, f"no kill of {kills} landed inside an append"
    finally:
        ring.unlink()
        ring.close()
