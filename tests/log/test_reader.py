"""Every reader of a partition (log/reader.py): whole batches only, however a
segment file is caught mid-write; a clear error where bytes are no batch; read_slice
for a Fetch; offset_for_time from any process. Real rings, real files."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random

import pytest

from shmbroker import CorruptError, OffsetOutOfRange, Ring, shm
from shmbroker.config import TopicConfig
from shmbroker.log.reader import LogReader, PartitionReader, read_segments
from shmbroker.log.segment import STALE_INDEX_BYTES, LogSegment
from tests.native.kafka_python import DefaultRecordBatch

LOG = "00000000000000000000.log"


@pytest.fixture
def big_ring(ring_name):
    r = Ring.create(ring_name, 1 << 20)
    yield r
    r.close()
    shm.unlink(ring_name)


@pytest.fixture
def partition_dir(tmp_path):
    d = tmp_path / "t-0"
    d.mkdir()
    return d


def batches_of(data):
    """(base offset, bytes) of each whole batch in data."""
    out, at = [], 0
    while at < len(data):
        total = int.from_bytes(data[at + 8 : at + 12], "big") + 12
        out.append(
            (int.from_bytes(data[at : at + 8], "big"), bytes(data[at : at + total]))
        )
        at += total
    return out


def test_a_segment_caught_mid_write_gives_nothing_until_the_batch_is_whole(
    big_ring, partition_dir, ring_name
):
    """If a reader in another process finds a large batch half written (the spill's
    pwrite grows the file while it copies), then at every byte of it the reader gets
    nothing yet, never a batch cut short; once the whole batch is written and the
    spill has published its offset, it gets that batch whole."""
    big_ring.append_batch([b"s%d" % i for i in range(5)])
    big_ring.append_batch([bytes([i]) * 1000 for i in range(40)])
    ring_bytes = bytes(big_ring.unspilled(0))
    (_, small), (_, large) = batches_of(ring_bytes)
    with open(partition_dir / LOG, "wb") as f:
        f.write(small)
    big_ring.spill_advance(len(small), 5)  # the spill wrote the first batch
    reader = PartitionReader.open(partition_dir, ring_name, topic="t", partition=0)
    segment = LogSegment(partition_dir, 0, readonly=True)
    try:
        assert read_segments(reader, 0, 1 << 20)[0] == small
        fd = os.open(partition_dir / LOG, os.O_WRONLY | os.O_APPEND)
        try:
            for cut in range(len(large)):
                os.write(fd, large[cut : cut + 1])
                segment.refresh()
                whole = cut + 1 == len(large)
                # without the spill's bound the segment itself refuses a partial batch
                for max_bytes in (1 << 20, 100):  # KIP-74: one batch above max_bytes
                    # into fresh bytes, and into a reader's buffer (grown if small)
                    for buffer in (None, bytearray(64)):
                        got = segment.read(len(small), max_bytes, 2**62, buffer)
                        assert got == (large if whole else b""), (cut, max_bytes)
                # the spill has not published offset 45 yet: not for readers
                assert read_segments(reader, 5, 1 << 20) == (b"", None), cut
        finally:
            os.close(fd)
        big_ring.spill_advance(len(ring_bytes), 45)
        data, after = read_segments(reader, 5, 1 << 20)
        assert data == large
        assert after.position == len(ring_bytes)
    finally:
        segment.close()
        reader.close()


def test_bytes_that_are_no_batch_raise_naming_the_partition_and_position(
    big_ring, partition_dir, ring_name
):
    """If the segment holds bytes that are no batch where the spill said batches
    are, then a reader raises CorruptError naming the file and position: it never
    loops or skips them silently."""
    big_ring.append_batch([b"x" * 100] * 10)
    data = bytearray(big_ring.unspilled(0))
    data[16] = 7  # magic
    (partition_dir / LOG).write_bytes(bytes(data))
    big_ring.spill_advance(len(data), 10)
    reader = PartitionReader.open(partition_dir, ring_name, topic="t", partition=0)
    try:
        log_reader = reader.reader(0)
        with pytest.raises(CorruptError, match=r"t-0/0+\.log.*offset 0.*position 0"):
            log_reader.poll(0)
        with pytest.raises(CorruptError, match="position 0"):
            LogSegment(partition_dir, 0, readonly=True).read(0, 1 << 20, 2**62)
    finally:
        reader.close()


def spill_all(log):
    while log.spill(0):
        pass


def check_slice(view, offset, max_bytes):
    """A Fetch answer: whole batches, the first holding offset, within max_bytes
    unless the first alone is larger; returns the offset after the last."""
    data = bytes(view)
    batches = [DefaultRecordBatch(batch) for _, batch in batches_of(data)]
    assert batches, "no batch"
    first = batches[0]
    assert first.base_offset <= offset <= first.last_offset
    for batch in batches:
        assert batch.validate_crc()
    sizes = [b.size_in_bytes for b in batches]
    assert sum(sizes) == len(view)
    assert sum(sizes) <= max_bytes or len(batches) == 1
    for before, after in itertools.pairwise(batches):
        assert after.base_offset == before.last_offset + 1
    return batches[-1].last_offset + 1


def test_a_read_of_more_than_4096_batches_is_whole_batches(open_log):
    """If more batches wait than one scan holds rows for (4096: a producer with
    linger.ms 0 writes one a record), then a read returns them all as whole
    batches, not a CorruptError about the first 4096 (bench_consumer_wait found
    it)."""
    log = open_log(TopicConfig(ring_bytes=1 << 20, segment_bytes=1 << 20))
    for i in range(5000):
        log.ring.append(b"v%d" % i)
    reader = LogReader(log, 0)
    records = reader.poll(0)
    assert [r.value for r in records] == [b"v%d" % i for i in range(5000)]
    assert reader.offset == 5000
    columns = LogReader(log, 0).poll_columns(0)
    assert columns is not None
    assert columns.offsets.tolist() == list(range(5000))


@pytest.mark.parametrize("where", ["segments", "ring"])
def test_read_slice_returns_whole_batches_within_max_bytes(open_log, where):
    """If a Fetch asks for an offset inside a batch, then read_slice starts at that
    batch; it fills max_bytes with whole batches, returns one batch larger than
    max_bytes whole (KIP-74), goes on at the next offset without a seek, and is
    empty at the high watermark."""
    log = open_log(TopicConfig(ring_bytes=1 << 20, segment_bytes=1 << 16))
    rng = random.Random(3)
    for n in range(200):
        size = 1000 if n % 17 == 0 else rng.randrange(1, 100)  # some above 4 KiB
        log.ring.append_batch([b"v" * rng.randrange(1, 30)] * size)
    if where == "segments":
        spill_all(log)
        assert log.log_end_offset == log.high_watermark
    reader = LogReader(log, 0)
    offset, high = 7, log.high_watermark
    while offset < high:
        max_bytes = rng.choice([1, 100, 4096, 20_000])
        offset = check_slice(reader.read_slice(offset, max_bytes), offset, max_bytes)
        if rng.random() < 0.2 and offset < high:
            offset = rng.randrange(offset, high)  # a jump: a seek inside
    assert len(reader.read_slice(high, 4096)) == 0


def test_offset_for_time_from_another_process_matches_the_writer(
    open_log, tmp_path, ring_name
):
    """If a PartitionReader looks up a timestamp, then it finds what the writer
    finds (the first offset with a timestamp >= it), also after segments it had
    opened while they were active were rolled and sealed."""
    rng = random.Random(11)
    log = open_log(TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 12))
    reader = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    stamps: list[int] = []
    try:
        for round_ in range(4):
            for _ in range(60):
                ts = [rng.randrange(1000, 3000) for _ in range(rng.randrange(1, 6))]
                log.ring.append_batch([b"x" * 20] * len(ts), timestamps=ts)
                stamps += ts
                if rng.random() < 0.9:
                    spill_all(log)
            assert len(log.segments()) > round_ + 1
            for target in [*range(990, 3010, 37), 2999, 3000]:
                want = next((o for o, t in enumerate(stamps) if t >= target), None)
                assert log.offset_for_time(target) == want, target
                assert reader.offset_for_time(target) == want, target
    finally:
        reader.close()


def follow(view, offset, until, hint=None, max_bytes=4096):
    """Read offset..until from the segments as a LogReader does (each read's hint
    is the one before's); returns the base offsets of the batches read, and the
    hint for the next read."""
    bases, buffer = [], bytearray()
    while offset < until:
        data, after = read_segments(view, offset, max_bytes, hint, buffer)
        assert data, f"nothing read at offset {offset} (spilled up to {until})"
        if isinstance(data.obj, bytearray):
            buffer = data.obj
        batches = [DefaultRecordBatch(b) for _, b in batches_of(data)]
        bases += [b.base_offset for b in batches]
        offset = batches[-1].last_offset + 1
        hint = after._replace(offset=offset)
    return bases, hint


def test_a_reader_following_the_active_segment_lists_the_directory_only_at_rolls(
    open_log, tmp_path, ring_name, monkeypatch
):
    """If another process reads a partition sequentially while its owner spills and
    rolls, then it reads every batch whole and in order across each roll, and lists
    the segment directory only when a segment runs out (a roll), not on every
    read."""
    log = open_log(TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 14))
    view = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(
        os, "listdir", lambda path: listings.append(path) or real_listdir(path)
    )
    try:
        bases, offset, hint = [], 0, None
        for _ in range(60):  # follow the spill closely: the active segment grows
            for _ in range(10):
                log.ring.append_batch([b"%08d" % i for i in range(20)])
            spill_all(log)
            got, hint = follow(view, offset, log.spilled_offset(), hint)
            bases += got
            offset = log.spilled_offset()
        rolls = len(log.segments()) - 1
        assert rolls >= 3
        assert bases == list(range(0, offset, 20))
        reads = offset // 20 // 10  # at least one read per follow()
        assert len(listings) <= 2 * rolls + 2 < reads, (len(listings), rolls)
        # each segment once the active, now sealed: opened again from its files
        sealed = view.segments()[:-1]
        assert all(s.largest_timestamp > 0 for s in sealed)
    finally:
        view.close()


def test_retention_under_a_sequential_reader_moves_it_on_or_names_the_start(
    open_log, tmp_path, ring_name
):
    """If the owner's retention deletes segments under a reader in another process,
    then a reader whose offset went with them gets OffsetOutOfRange naming the new
    log start, and one at the start of the first segment kept reads on from it,
    every batch whole (not the deleted file it still holds open)."""
    log = open_log(TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 14))
    for _ in range(200):
        log.ring.append_batch([b"%08d" % i for i in range(20)])
        spill_all(log)
    view = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    try:
        behind, at_boundary = view.reader(0), view.reader(0)
        behind.max_bytes = at_boundary.max_bytes = 1024
        assert behind.poll(0)[0].offset == 0  # now in the middle of segment 0
        second = log.segments()[1].base_offset
        while at_boundary.offset < second:  # a read never crosses a segment's end
            at_boundary.poll(0)
        assert at_boundary.offset == second
        sizes = [s.size for s in log.segments()]
        log.config = dataclasses.replace(
            log.config, retention_bytes=sum(sizes) - sizes[0]
        )
        assert log.enforce_retention() == 1
        with pytest.raises(OffsetOutOfRange, match=f"log starts at {second}"):
            behind.poll(0)
        offsets = []
        while at_boundary.offset < log.high_watermark:
            offsets += [r.offset for r in at_boundary.poll(0)]
        assert offsets == list(range(second, log.high_watermark))
    finally:
        view.close()


def poll_on(reader, offsets, polls=100):
    """Poll, adding the offsets read to offsets (each poll moves on or raises)."""
    for _ in range(polls):
        offsets += [r.offset for r in reader.poll(0)]


def test_a_segment_truncated_under_a_reader_raises_naming_the_missing_offsets(
    open_log, tmp_path, ring_name
):
    """If a segment file is cut shorter under a reader in another process (recovery
    cuts a damaged tail), then the reader returns the whole batches still there and
    then raises CorruptError naming the offsets missing from the log: never a hang
    (it was a BrokenError after 1000 passes) or bytes past the cut."""
    log = open_log(TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 17))
    for _ in range(600):
        log.ring.append_batch([b"%08d" % i for i in range(20)])
        spill_all(log)
    first = log.segments()[0]
    assert len(log.segments()) > 1
    assert first.size > 5 * 4096
    view = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    try:
        reader = view.reader(0)
        reader.max_bytes = 4096
        offsets = [r.offset for r in reader.poll(0)]  # learns the file's size
        cut = 3 * 4096 + 100  # ahead of the reader: it has not read these pages
        os.truncate(first.path, cut)
        with pytest.raises(CorruptError, match=r"offsets? \d+.* missing from the log"):
            poll_on(reader, offsets)
        assert offsets == list(range(len(offsets)))
        assert 2 * 4096 < len(offsets) // 20 * 300 <= cut  # a batch: ~300 bytes
    finally:
        view.close()


@pytest.mark.parametrize(
    ("values", "counts", "batches", "reloads"),
    [(b"v" * 1000, [1, 3, 100, 300], 60, False), (b"v" * 100, [30, 100], 1400, True)],
    ids=["large batches", "small batches past the stale index bound"],
)
def test_a_lapped_reader_finds_offsets_its_index_snapshot_lacks(
    open_log, tmp_path, ring_name, values, counts, batches, reloads
):
    """If a reader in another process opened the active segment while it was short
    (its offset index a snapshot; the owner writes entries through a page at a
    time) and the segment then grew by batches larger than a scan's chunk and small
    ones, then a lookup of any offset lands on the batch holding it, as the owner's
    own lookup does, and a read there (a lapped reader's: no hint) starts with it."""
    log = open_log(TopicConfig(ring_bytes=1 << 20, segment_bytes=1 << 30))
    log.ring.append_batch([b"first"] * 10)
    spill_all(log)
    view = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    try:
        assert read_segments(view, 0, 4096)[0]  # opens the segment: a snapshot
        rng = random.Random(5)
        for _ in range(batches):
            log.ring.append_batch([values] * rng.choice(counts))
            spill_all(log)
        (mine,) = view.segments()
        assert mine.offset_index.entries == 0  # the snapshot
        for offset in [*rng.sample(range(log.spilled_offset()), 200), 10]:
            row = mine.find(offset)
            assert row == log.active.find(offset), offset
            data, _ = read_segments(view, offset, 1)
            (base, batch), *_ = batches_of(data)
            assert base <= offset <= DefaultRecordBatch(batch).last_offset
        # far enough behind, the index is loaded again: its entries were used
        assert (mine.size > STALE_INDEX_BYTES) == reloads
        assert (mine.offset_index.entries > 0) == reloads
    finally:
        view.close()
