"""RecordAccumulator: per-record sends appended as batches."""

from __future__ import annotations

import random
import struct

import pytest

from shmbroker import RingFull
from shmbroker._native import Decoded
from shmbroker.accumulator import RecordAccumulator
from shmbroker.compression import CODECS, decompress_batches
from shmbroker.errors import RecordTooLarge
from shmbroker.records import build_records


def test_sends_become_batches_with_dense_offsets_and_all_fields(ring):
    acc = RecordAccumulator(ring, batch_records=3)
    acc.send(b"a")
    acc.send(b"b", key=b"k", timestamp=7)
    assert ring.stat().next_offset == 0  # still queued
    acc.send(None, headers=[("h", b"1")])  # the third: appended as one batch
    acc.send(b"d")
    assert acc.flush() == 4
    records = ring.reader(0).poll(0)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, None, b"a"),
        (1, b"k", b"b"),
        (2, None, None),
        (3, None, b"d"),
    ]
    assert records[1].timestamp == 7
    assert records[2].headers == (("h", b"1"),)
    assert ring.stat().batches_appended == 2


def test_a_send_whose_batch_does_not_fit_is_not_queued(ring):
    acc = RecordAccumulator(ring, batch_records=10, timeout=0)
    with pytest.raises(RingFull):  # noqa: PT012
        for i in range(10_000):
            acc.send(b"%05d" % i + b"x" * 200)
    queued = len(acc)
    assert queued == 9  # the tenth was taken back out
    ring.spill_advance(ring.stat().tail_position)
    acc.send(b"retried")  # the caller's retry goes in once
    appended = ring.stat().next_offset
    values = [r.value for r in ring.reader(appended - 10).poll(0)]
    assert values[-1] == b"retried"
    assert len(values) == 10


def batch_sizes(data: bytes) -> list[int]:
    """Sizes of the batches in data, from their batchLength fields."""
    sizes, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        sizes.append(12 + length)
        pos += 12 + length
    return sizes


def test_batches_stay_within_max_batch_bytes_with_keys_and_headers(ring):
    """If records with keys and headers are queued without a record or byte count
    that would flush them, then each batch still fits max_batch_bytes."""
    acc = RecordAccumulator(
        ring, batch_records=100_000, batch_bytes=1 << 20, max_batch_bytes=2000
    )
    for i in range(300):
        acc.send(b"%d" % i, key=b"k" * 20, headers=[("h", b"x" * 10)])
    assert acc.flush() == 300
    sizes = batch_sizes(ring.reader(0).read_batches(0))
    assert max(sizes) <= 2000, sizes
    assert len(sizes) > 1
    records = ring.reader(0).poll(0)
    while len(records) < 300 and (more := ring.reader(records[-1].offset + 1).poll(0)):
        records += more
    assert [r.value for r in records] == [b"%d" % i for i in range(300)]


def test_a_record_over_max_batch_bytes_is_refused_and_not_queued(ring):
    acc = RecordAccumulator(ring, max_batch_bytes=1000)
    acc.send(b"a")
    with pytest.raises(RecordTooLarge, match=r"max\.message\.bytes \(1000\)"):
        acc.send(b"v" * 600, key=b"k" * 400)
    assert len(acc) == 1
    assert acc.flush() == 1


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_fit_max_batch_bytes_compressed(ring, codec):
    """If the accumulator compresses, then every batch is stored compressed and fits
    max_batch_bytes, even of incompressible records; a record too large even
    compressed is refused and not queued."""
    rng = random.Random(5)
    acc = RecordAccumulator(
        ring, batch_records=100_000, max_batch_bytes=3000, compression_type=codec
    )
    values = [rng.randbytes(rng.randrange(1, 400)) for _ in range(100)]
    for v in values:
        acc.send(v)
    with pytest.raises(RecordTooLarge, match=f"compressed with {codec}"):
        acc.send(rng.randbytes(3000))
    acc.flush()
    stored = ring.reader(0).read_batches(0)
    sizes = batch_sizes(stored)
    assert max(sizes) <= 3000, sizes
    pos = 0
    for size in sizes:
        assert stored[pos + 22] & 7 == CODECS[codec]
        pos += size
    out = decompress_batches(stored)
    d = Decoded()
    d.decode(out, 0, len(out))
    assert d.bytes_consumed == len(out)
    assert [r.value for r in build_records(d, out, "t", 0)] == values
