"""The durable log with real processes: the spilling process killed under load, and a
disk that fills up and frees again."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time

import pytest

from shmbroker import shm
from shmbroker.config import TopicConfig
from shmbroker.log.partition import PartitionLog
from tests.conftest import run_on_small_tmpfs, wait_until
from tests.system.ring_worker import RECORD
from tests.system.test_ring_processes import ROOT, finish, worker

pytestmark = pytest.mark.system


def spiller(directory, ring_name):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.system.spill_worker",
            str(directory),
            ring_name,
            str(1 << 18),
            str(1 << 20),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line != "spilling\n":
        proc.kill()
        pytest.fail(f"spill worker did not start: {proc.communicate()[1]}")
    return proc


def test_killing_the_spilling_process_under_load_loses_and_duplicates_nothing(
    tmp_path, ring_name
):
    """If the process spilling a partition is SIGKILLed again and again while three
    producers append, then after a restart every record is in the log once, with
    dense offsets and every producer's records in order."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    directory = tmp_path / "t-0"
    proc = spiller(directory, ring_name)
    producers = [
        worker("produce", ring_name, i, 100_000, "mixed", "--batch", 50)
        for i in range(3)
    ]
    try:
        for _ in range(10):
            until = time.perf_counter() + rng.uniform(0.02, 0.2)
            while time.perf_counter() < until:  # a random moment under load
                pass
            proc.kill()
            proc.communicate()
            proc = spiller(directory, ring_name)  # recovers, catches the ring up
        for p in producers:
            finish(p, 120)
        proc.terminate()
        finish(proc, 60)
        log = PartitionLog.open(
            directory,
            ring_name,
            TopicConfig(ring_bytes=1 << 18),
            topic="t",
            partition=0,
        )
        try:
            reader, next_seq, offset = log.reader(0), {}, 0
            assert log.log_end_offset == log.high_watermark == 300_000
            while offset < 300_000:
                for r in reader.poll(5):
                    assert r.offset == offset, f"seed {seed}"
                    pid, seq = RECORD.unpack_from(r.value)
                    assert seq == next_seq.get(pid, 0), f"seed {seed}: producer {pid}"
                    next_seq[pid], offset = seq + 1, offset + 1
            assert next_seq == {0: 100_000, 1: 100_000, 2: 100_000}
        finally:
            log.close()
    finally:
        for p in [*producers, proc]:
            if p.poll() is None:
                p.kill()
                p.communicate()
        shm.unlink(ring_name)


def test_a_reader_process_reads_old_records_from_segments_then_new_ones_from_the_ring(
    tmp_path, ring_name
):
    """If another process owns and spills the log, then a consumer process with a
    PartitionReader reads every record once, in order, from offset 0: the first ones
    from the segment files (long gone from the 256 KiB ring), the rest from the ring
    while producers still append."""
    directory = tmp_path / "t-0"
    owner = spiller(directory, ring_name)
    producers = [
        worker("produce", ring_name, i, 100_000, "mixed", "--batch", 50)
        for i in range(2)
    ]
    try:
        wait_until(  # two segments: offset 0 is long gone from the ring
            lambda: (
                len(list(directory.glob("*.log"))) >= 2
                or producers[0].poll() is not None
            ),
            60,
            "a second segment",
        )
        consumer = worker("consume-log", directory, ring_name, 200_000)
        for p in producers:
            finish(p, 120)
        result = json.loads(finish(consumer, 120))
        assert result["problems"] == []
        assert result["records"] == 200_000
        assert result["next_seq"] == {"0": 100_000, "1": 100_000}
    finally:
        for p in [*producers, owner]:
            if p.poll() is None:
                p.terminate()
                p.communicate()
        shm.unlink(ring_name)


def test_full_disk_pauses_the_spill_and_producers_get_a_clear_error(
    tmp_path, shm_prefix
):
    """If the data directory's filesystem fills (a 2 MiB tmpfs in a private mount
    namespace), then the spill pauses, a producer's append times out naming the
    disk error, nothing written is corrupted, and once space returns the spill
    resumes and every record is there."""
    mount = tmp_path / "small"
    mount.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os
        from shmbroker import RingFull
        from shmbroker.config import TopicConfig
        from shmbroker.log.partition import PartitionLog
        filler = "{mount}/filler"
        with open(filler, "wb") as f:
            f.write(b"x" * (1536 << 10))        # leave ~0.5 MiB free
        log = PartitionLog.open("{mount}/t-0", "/{shm_prefix}disk",
                                TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 20),
                                topic="t", partition=0)
        log.start()
        out = {{"appended": 0}}
        def batch():
            return [b"%07d" % (out["appended"] + i) for i in range(100)]
        try:
            while True:
                log.ring.append_batch(batch(), timeout=1)
                out["appended"] += 100
        except RingFull as exc:
            out["error"] = str(exc)
        out["spill_error"] = str(log.spill_error)
        os.unlink(filler)                        # space returns
        for _ in range(20):
            log.ring.append_batch(batch(), timeout=10)
            out["appended"] += 100
        reader, values = log.reader(0), []
        while len(values) < out["appended"]:
            values += [r.value for r in reader.poll(10)]
        out["dense"] = values == [b"%07d" % i for i in range(out["appended"])]
        log.close()
        log = PartitionLog.open("{mount}/t-0", "/{shm_prefix}disk",
                                topic="t", partition=0)
        out["reopened_end"] = log.log_end_offset
        log.ring.unlink()
        log.close()
        print(json.dumps(out))
    """)
    )
    result = run_on_small_tmpfs(mount, "2m", script)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "the spill is failing: No space left on device" in out["error"]
    assert "No space left on device" in out["spill_error"]
    assert out["dense"] is True
    assert out["reopened_end"] == out["appended"]
