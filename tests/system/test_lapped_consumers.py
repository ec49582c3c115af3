"""Consumers lapped by their producers read every record once (issue 9): two producer
processes send 4 MiB batches to a running broker while two consumer processes, started
after the ring has been overwritten, read the whole topic from offset 0, from the
segment files the spill is still writing and then from the ring.

`make test` produces for PRODUCE_S seconds; `make soak` sets SHMB_SOAK_SECONDS=30 (or
more). Every wait has a deadline: a consumer that stops moving while the log holds
records it has not read fails the test with its Python stacks, and is killed."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shmbroker import Admin, Ring, RingStat, shm
from tests.conftest import wait_until
from tests.system.lapped_worker import BATCH, PROGRESS, SIZE

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
PRODUCE_S = float(os.environ.get("SHMB_SOAK_SECONDS") or 3)
STALL_S = 15.0  # no progress this long, with records left to read: hung
CATCH_UP_S = 60 + 2 * PRODUCE_S  # after the producers end, for the consumers to finish
TOPIC = "lapped"
RING_BYTES = 16 << 20  # the default: holds three of these batches
CONFIG = {
    "ring.bytes": RING_BYTES,
    "max.message.bytes": 8 << 20,  # a batch of BATCH x SIZE values is 4.2 MB
    "segment.bytes": 256 << 20,  # the reads cross segment rolls too
}
MODES = {"poll": "Consumer.poll_batch", "raw": "Consumer.read_batches + Decoded"}


class Worker:
    """A worker process whose stdout and stderr go to files (a pipe nobody reads
    could fill up and stop it)."""

    def __init__(self, tmp_path: Path, name: str, *args: object) -> None:
        self.name = name
        stem = name.split()[0]  # "consumer-poll (Consumer.poll_batch)": consumer-poll
        self.out = tmp_path / f"{stem}.out"
        self.err = tmp_path / f"{stem}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.system.lapped_worker", *map(str, args)],
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")[-4000:]

    def result(self) -> dict:
        """The JSON line a worker that exited 0 printed."""
        code = self.proc.poll()
        if code != 0:
            pytest.fail(f"{self.name} exited with {code}: {self.stderr()}")
        return json.loads(self.out.read_text().splitlines()[-1])

    def stacks_and_kill(self) -> str:
        """Its Python stacks (SIGUSR1 makes faulthandler print them), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 5
            # the main thread's stack ends in runpy (python -m): the dump is whole
            while "runpy" not in self.stderr() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.proc.kill()
            self.proc.wait(10)
        return self.stderr()


class ConsumerWorker(Worker):
    """A consumer worker and the progress (records read, next offset) it maps."""

    def __init__(self, tmp_path: Path, data_dir: Path, mode: str, expect: Path):
        progress = tmp_path / f"consumer-{mode}.progress"
        progress.write_bytes(bytes(PROGRESS.size))
        super().__init__(
            tmp_path,
            f"consumer-{mode} ({MODES[mode]})",
            "consume", data_dir, TOPIC, mode, progress, expect, "--stall", STALL_S,
        )  # fmt: skip
        with open(progress, "rb") as f:
            self._map = mmap.mmap(f.fileno(), PROGRESS.size, access=mmap.ACCESS_READ)
        self.seen = (0, 0)
        self.moved_at = time.monotonic()
        self.lapped = 0  # times seen to need an offset the ring no longer holds
        self._in_ring = True

    def progress(self) -> tuple[int, int]:
        return PROGRESS.unpack(self._map)

    def note_lapped(self, stat: RingStat) -> None:
        """Count the times it fell more than a ring behind (sampled): its next batch
        was overwritten, so it reads the segment files."""
        batch_bytes = stat.bytes_appended / max(stat.batches_appended, 1)
        behind = (stat.next_offset - self.progress()[1]) / BATCH * batch_bytes
        in_ring = behind <= stat.capacity_bytes
        self.lapped += self._in_ring and not in_ring
        self._in_ring = in_ring


def fail_if_exited_badly(workers: list[Worker]) -> None:
    for w in workers:
        code = w.proc.poll()
        if code not in (None, 0):
            pytest.fail(f"{w.name} exited with {code}: {w.stderr()}")


def consumer_failure(c: ConsumerWorker, high: int, now: float) -> str | None:
    """Why this consumer failed, if it did: it exited with an error or stopped at
    a problem it found, or it made no progress for STALL_S while the log held
    records it had not read (then it is killed, after dumping its stacks)."""
    code = c.proc.poll()
    if code is not None:
        if code != 0:
            return f"exited with {code}: {c.stderr()}"
        return c.result()["problem"]  # None: it read everything
    progress = c.progress()
    if progress != c.seen:
        c.seen, c.moved_at = progress, now
        return None
    records, offset = progress
    if offset < high and now - c.moved_at > STALL_S:
        return (
            f"made no progress for {STALL_S:.0f}s: it waits for offset {offset} of "
            f"{TOPIC}-0 ({records} records read, lapped {c.lapped} times), and the "
            f"log holds offsets up to {high - 1}. Its stacks:\n{c.stacks_and_kill()}"
        )
    return None


def watch(
    ring: Ring, producers: list[Worker], consumers: list[ConsumerWorker], expect: Path
) -> tuple[dict[int, int], dict[str, str]]:
    """Until every worker is done, with a deadline on each phase: the producers end
    after PRODUCE_S, then the test writes what they sent to `expect`, and the
    consumers finish within CATCH_UP_S. Returns what each producer sent, and why
    each consumer that failed did (all of them, not only the first)."""
    producers_deadline = time.monotonic() + PRODUCE_S + 60
    consumers_deadline = float("inf")
    sent: dict[int, int] | None = None
    failures: dict[str, str] = {}
    while True:
        fail_if_exited_badly(producers)
        now = time.monotonic()
        if sent is None and all(p.proc.poll() == 0 for p in producers):
            sent = {i: p.result()["sent"] for i, p in enumerate(producers)}
            expect.write_text(json.dumps(sent))
            consumers_deadline = now + CATCH_UP_S
        if sent is None and now > producers_deadline:
            pytest.fail(
                f"producers still running {PRODUCE_S + 60:.0f}s after they started "
                f"(they send for {PRODUCE_S:.0f}s): "
                + "; ".join(f"{p.name}: {p.stacks_and_kill()}" for p in producers)
            )
        stat = ring.stat()
        high = stat.next_offset
        for c in consumers:
            c.note_lapped(stat)
            if c.name not in failures:
                failure = consumer_failure(c, high, now)
                if failure is not None:
                    failures[c.name] = failure
        running = [c for c in consumers if c.proc.poll() is None]
        if sent is not None and not running:
            return sent, failures
        if now > consumers_deadline:
            for c in running:
                failures[c.name] = (
                    f"not done {CATCH_UP_S:.0f}s after the producers ended: read "
                    f"{c.progress()[0]} of {sum(sent or {})} records. Its stacks:\n"
                    f"{c.stacks_and_kill()}"
                )
            return sent or {}, failures
        time.sleep(0.05)  # a watchdog's tick, not a synchronisation


@pytest.mark.timeout(PRODUCE_S + 60 + CATCH_UP_S + 60)
def test_lapped_consumers_read_every_record_once_in_order(broker, tmp_path):
    """If two producer processes send 4 MiB batches (1024 x 4 KiB values) while two
    consumer processes, started once the ring has been overwritten twice, read the
    topic from offset 0 (so they read the segment files the spill is still
    writing, and are lapped again whenever they fall a ring behind), then each
    consumer, by poll_batch or by read_batches, gets every record exactly once:
    offsets dense from 0, each producer's records in order with no gap, every
    value whole, and never a batch cut short; and none of them hangs."""
    expect = tmp_path / "expect.json"
    workers: list[Worker] = []
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic(TOPIC, 1, CONFIG)
    ring = Ring.open(shm.ring_name(broker.shm_base, meta.topic_id, 0))
    try:
        args = ("produce", broker.data_dir, TOPIC)
        producers = [
            Worker(tmp_path, f"producer-{i}", *args, i, PRODUCE_S) for i in range(2)
        ]
        workers += producers

        def two_rings_written() -> bool:
            fail_if_exited_badly(producers)
            return ring.stat().next_offset * SIZE > 2 * RING_BYTES

        wait_until(two_rings_written, 30, "the producers to write two rings")
        consumers = [
            ConsumerWorker(tmp_path, broker.data_dir, mode, expect) for mode in MODES
        ]
        workers += consumers
        sent, failures = watch(ring, producers, consumers, expect)
        high = ring.stat().next_offset
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(10)
        ring.close()
    if failures:
        pytest.fail("\n\n".join(f"{name}: {why}" for name, why in failures.items()))
    total = sum(sent.values())
    assert all(n > 0 and n % BATCH == 0 for n in sent.values()), sent
    assert high == total
    for c in consumers:
        assert c.lapped >= 1, f"{c.name} was never lapped: the test tested nothing"
        got = c.result()
        assert got["next_seq"] == {str(i): n for i, n in sent.items()}, c.name
        assert (got["records"], got["next_offset"]) == (total, total), c.name
