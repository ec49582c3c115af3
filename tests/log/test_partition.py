"""The durable partition log: spill, reads across ring and segments, recovery,
retention, seeks by time, durability. Real rings, real files."""

from __future__ import annotations

import os
import random
import re
import shutil
import threading
import time

import pytest

from shmbroker import OffsetOutOfRange, Ring, shm
from shmbroker.config import TopicConfig
from shmbroker.log.reader import PartitionReader
from shmbroker.log.segment import LogSegment
from tests.native.kafka_python import DefaultRecordBatch


def read_all(log, start=0, until=None):
    until = log.high_watermark if until is None else until
    reader, out = log.reader(start), []
    while not out or out[-1].offset < until - 1:
        got = reader.poll(5)
        assert got, f"no records after offset {out[-1].offset if out else start}"
        out += got
    return out


def produce(ring, batches, size=20, timestamp=None, spill=None):
    """Append batches of consecutive numbers; spill=log spills after each one (for
    tests that run no spill thread)."""
    for i in range(batches):
        ring.append_batch(
            [b"%08d" % (i * size + j) for j in range(size)],
            timestamp=timestamp,
            timeout=30,
        )
        if spill is not None:
            spill_all(spill)


def test_round_trip_through_a_ring_much_smaller_than_the_data(open_log):
    log = open_log()
    log.start()
    produce(log.ring, 5000)  # ~1.2 MB through a 64 KiB ring
    records = read_all(log)
    assert [r.offset for r in records] == list(range(100_000))
    assert [r.value for r in records] == [b"%08d" % i for i in range(100_000)]
    assert len(log.segments()) > 5


def test_reader_moves_from_segments_into_the_ring_while_producers_run(open_log):
    log = open_log()
    log.start()
    produce(log.ring, 500)  # spilled before the reader starts
    producer = threading.Thread(target=produce, args=(log.ring, 3000))
    producer.start()
    try:
        records = read_all(log, until=70_000)
    finally:
        producer.join()
    assert [r.offset for r in records][:70_000] == list(range(70_000))


def test_offsets_outside_the_log_name_the_valid_range(open_log):
    log = open_log()
    produce(log.ring, 1)
    with pytest.raises(OffsetOutOfRange, match=r"valid offsets are \[0, 20\)"):
        log.reader(21)


def spill_all(log):
    while log.spill(0):
        pass


def test_cut_anywhere_in_the_last_batch_recovery_keeps_exactly_the_rest(
    open_log, tmp_path, ring_name
):
    log = open_log()
    produce(log.ring, 5, size=3, spill=log)
    last_start = log.active.find(12)[0]
    size = log.active.size
    log.close()
    shm.unlink(ring_name)  # a reboot: only the files remain
    original = tmp_path / "t-0"
    for cut in range(last_start, size):
        copy = tmp_path / f"cut{cut}"
        shutil.copytree(original, copy)
        os.truncate(copy / "00000000000000000000.log", cut)
        recovered = open_log(directory=copy)
        assert recovered.log_end_offset == 12
        assert [r.value for r in read_all(recovered)] == [
            b"%08d" % i for i in range(12)
        ]
        recovered.close()
        shm.unlink(ring_name)


def test_random_byte_flips_keep_the_batches_before_the_flip(
    open_log, tmp_path, ring_name
):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    log = open_log()
    produce(log.ring, 8, size=4, spill=log)
    starts = [row[0] for row in log.active.batches()]
    size = log.active.size
    log.close()
    shm.unlink(ring_name)
    for trial in range(40):
        copy = tmp_path / f"flip{trial}"
        shutil.copytree(tmp_path / "t-0", copy)
        at = rng.randrange(size)
        path = copy / "00000000000000000000.log"
        data = bytearray(path.read_bytes())
        data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(data)
        batch = max(i for i, s in enumerate(starts) if s <= at)
        unchecked = 12 <= at - starts[batch] < 16  # partitionLeaderEpoch: no CRC
        recovered = open_log(directory=copy)
        kept = 32 if unchecked else 4 * batch
        assert recovered.log_end_offset == kept, f"seed {seed}, byte {at}"
        recovered.close()
        shm.unlink(ring_name)


def test_missing_index_files_are_rebuilt(open_log, tmp_path, ring_name):
    log = open_log()
    produce(log.ring, 1000, spill=log)
    assert len(log.segments()) >= 3
    log.close()
    for index in (tmp_path / "t-0").glob("*.index"):
        index.unlink()
    reopened = open_log()
    assert reopened.reader(15555).poll(0)[0].offset == 15555


def test_segment_files_are_kafka_record_batches(open_log, tmp_path):
    log = open_log()
    produce(log.ring, 300, spill=log)
    log.close()
    expected = 0
    for path in sorted((tmp_path / "t-0").glob("*.log")):
        data, pos = path.read_bytes(), 0
        assert int(path.name[:20]) == expected
        while pos < len(data):
            size = int.from_bytes(data[pos + 8 : pos + 12], "big") + 12
            batch = DefaultRecordBatch(data[pos : pos + size])
            assert batch.validate_crc()
            offsets = [r.offset for r in batch]
            assert offsets == list(range(expected, expected + len(offsets)))
            expected += len(offsets)
            pos += size
    assert expected == 6000


def test_retention_by_time_deletes_old_segments_but_never_the_active_one(open_log):
    log = open_log(
        TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 14, retention_ms=60_000)
    )
    now = int(time.time() * 1000)
    produce(log.ring, 200, timestamp=now - 3_600_000, spill=log)  # an hour old
    old_end = log.log_end_offset
    old_segments = len(log.segments()) - 1
    assert old_segments > 0
    assert log.enforce_retention() == old_segments
    assert log.log_start_offset == log.active.base_offset
    log.roll()  # the old records' last segment stops being active
    produce(log.ring, 10, spill=log)
    assert log.enforce_retention() == 1
    assert log.log_start_offset == old_end
    with pytest.raises(OffsetOutOfRange, match=rf"valid offsets are \[{old_end}, "):
        log.reader(0)
    assert log.ring.stat().log_start_offset == old_end


def test_retention_by_size_keeps_the_log_under_the_limit(open_log):
    config = TopicConfig(
        ring_bytes=1 << 16, segment_bytes=1 << 14, retention_bytes=1 << 15
    )
    log = open_log(config)
    produce(log.ring, 300, spill=log)
    log.enforce_retention()
    sizes = [s.size for s in log.segments()]
    assert sum(sizes) - sizes[0] < config.retention_bytes
    assert [r.offset for r in read_all(log, log.log_start_offset)][-1] == 5999


def test_offset_for_time_matches_a_brute_force_scan(open_log):
    rng = random.Random(7)
    log = open_log(TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 13))
    stamps = []
    for _ in range(150):
        ts = [rng.randrange(1000, 2000) for _ in range(rng.randrange(1, 6))]
        log.ring.append_batch([b"x"] * len(ts), timestamps=ts)
        stamps += ts
        if rng.random() < 0.9:
            spill_all(log)
    log.ring.append_batch([b"x"], timestamps=[1999])  # the newest only in the ring
    stamps.append(1999)
    assert log.log_end_offset < len(stamps)
    for target in [*range(990, 2010, 7), 2000, 2001]:
        want = next((o for o, t in enumerate(stamps) if t >= target), None)
        assert log.offset_for_time(target) == want, target


def test_producer_waiting_for_durability_is_woken_after_fsync(open_log):
    log = open_log(TopicConfig(ring_bytes=1 << 16, flush_ms=-1))  # no timed fsync
    log.start()
    offset = log.ring.append(b"must survive a power cut")
    assert log.ring.wait_durable(offset + 1, timeout=10)
    assert log.recovery_point >= offset + 1


def test_reopen_after_clean_close_continues_the_offsets(open_log, ring_name):
    log = open_log()
    produce(log.ring, 10)
    log.close()
    again = open_log()
    assert again.high_watermark == 200
    assert again.ring.append(b"next") == 200
    with Ring.open(ring_name) as ring:
        assert ring.stat().durable_offset == 200


def test_segment_ms_rolls_a_segment_whose_first_batch_is_old(open_log):
    log = open_log(TopicConfig(ring_bytes=1 << 16, segment_ms=60_000))
    log.ring.append(b"old", timestamp=int(time.time() * 1000) - 3_600_000)
    log.spill(0)
    log.ring.append(b"new")
    log.spill(0)
    assert [s.base_offset for s in log.segments()] == [0, 1]


def test_flush_messages_fsyncs_every_n_records(open_log):
    log = open_log(TopicConfig(ring_bytes=1 << 16, flush_messages=50, flush_ms=-1))
    produce(log.ring, 2, size=20, spill=log)
    assert log.recovery_point == 0  # 40 records: not yet
    produce(log.ring, 1, size=20, spill=log)
    assert log.recovery_point == 60
    assert log.ring.stat().durable_offset == 60


def test_reopening_validates_only_segments_past_the_recovery_point(
    open_log, monkeypatch
):
    """If the log was flushed, then a reopen scans only the active segment batch by
    batch: recovery time follows the unflushed tail, not the log size."""
    log = open_log()
    produce(log.ring, 1000, spill=log)
    segments = len(log.segments())
    assert segments >= 3
    log.close()
    recovered = []
    original = LogSegment.recover

    def counting_recover(segment):
        recovered.append(segment.base_offset)
        return original(segment)

    monkeypatch.setattr(LogSegment, "recover", counting_recover)
    reopened = open_log()
    assert recovered == [reopened.active.base_offset]
    assert len(reopened.segments()) == segments
    assert reopened.reader(20_000 - 1).poll(0)[0].offset == 19_999


def test_a_partition_reader_reads_everything_and_writes_nothing(
    open_log, tmp_path, ring_name
):
    """If a process that does not own the log reads it, then it sees every record
    from the segments and the ring, and leaves the files as they were (no index
    created, no tail cut) even where an index is missing."""
    log = open_log()
    produce(log.ring, 1000, spill=log)
    produce(log.ring, 5)  # these only in the ring
    for index in (tmp_path / "t-0").glob("0000000000000000000*.index"):
        index.unlink()
    files = {p.name: p.read_bytes() for p in (tmp_path / "t-0").iterdir()}
    view = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    try:
        records = read_all(view)
        assert [r.offset for r in records] == list(range(20_100))
        assert view.reader(12_345).poll(0)[0].offset == 12_345
        assert {p.name: p.read_bytes() for p in (tmp_path / "t-0").iterdir()} == files
        log.enforce_retention(now_ms=2**62)  # the owner deletes old segments
        with pytest.raises(OffsetOutOfRange, match="valid offsets are"):
            view.reader(0)
    finally:
        view.close()


def test_reader_threads_sharing_a_log_each_see_every_record(open_log):
    """If several threads read one PartitionLog from the segments at once, then each
    gets every record in order: segments share no scratch space between threads."""
    log = open_log()
    produce(log.ring, 1000, spill=log)
    problems = []

    def read_all():
        reader, expected = log.reader(0), 0
        reader.max_bytes = 2048  # many small reads, so the threads interleave
        while expected < 20_000:
            for r in reader.poll(0):
                if r.offset != expected:
                    problems.append((r.offset, expected))
                    return
                expected += 1

    threads = [threading.Thread(target=read_all) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert problems == []


def test_reopening_after_an_unclean_stop_logs_what_was_recovered(
    open_log, tmp_path, ring_name, caplog
):
    """The files a kill -9 leaves (spilled past the last recovery point, a torn
    last batch) and a reboot: one line says what recovery kept, cut and took."""
    log = open_log(TopicConfig(ring_bytes=1 << 16, flush_ms=-1))
    produce(log.ring, 5, size=3, spill=log)
    assert log.recovery_point == 0  # nothing fsynced: all 15 are past it
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "t-0", crashed)  # the files as a crash leaves them
    os.truncate(crashed / "00000000000000000000.log", log.active.size - 5)
    log.close()
    shm.unlink(ring_name)
    with caplog.at_level("INFO", logger="shmbroker.log.partition"):
        recovered = open_log(directory=crashed)
    assert recovered.log_end_offset == 12
    (line,) = [r for r in caplog.records if "unclean stop" in r.getMessage()]
    assert line.levelname == "WARNING"  # bytes were cut
    assert re.fullmatch(
        rf"recovered {crashed} after an unclean stop: 12 records written after the "
        rf"recovery point \(offset 0\) kept, 1 segments checked batch by batch, "
        rf"\d+ bytes of a torn or corrupt tail cut, in \d+\.\d ms",
        line.getMessage(),
    ), line.getMessage()


def test_reopening_after_a_clean_close_logs_no_recovery(open_log, caplog):
    log = open_log()
    produce(log.ring, 5, spill=log)
    log.close()
    with caplog.at_level("INFO", logger="shmbroker.log.partition"):
        open_log()
    assert not [r for r in caplog.records if "unclean stop" in r.getMessage()]


def test_files_of_a_group_shared_directory_are_group_readable(tmp_path):
    """If the partition directory is the access.group's (0750, setgid), then the
    segments and indexes made in it are 0640 (the group's consumers read them);
    else 0600."""
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir(mode=0o700)
    shared.chmod(0o2750)
    own.mkdir(mode=0o700)
    for directory, mode in ((shared, 0o640), (own, 0o600)):
        segment = LogSegment(directory, 0)
        segment.close()
        made = sorted(p.name for p in directory.iterdir())
        assert made == [
            "00000000000000000000.index",
            "00000000000000000000.log",
            "00000000000000000000.timeindex",
        ]
        for path in directory.iterdir():
            assert os.stat(path).st_mode & 0o777 == mode, path
