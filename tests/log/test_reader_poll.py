"""LogReader's polls decode where its reads land (issue 13): in the ring reader's
buffer or in the reader's own segment buffer, both overwritten by the next read.
Records and columns polled keep their keys, values and headers whatever later polls
read; a damaged batch in the middle of a read comes after the good ones before it.
Real rings, real files."""

from __future__ import annotations

import random
import re

import pytest

from shmbroker import CorruptError, _native
from shmbroker.compression import compress_batch
from shmbroker.log.reader import LogReader
from tests.log.conftest import SMALL  # 64 KiB ring, 128 KiB segments


def spill_all(log):
    while log.spill(0):
        pass


def append_some(log, rng, expected):
    """One batch of a random shape (each a different way through the decoders:
    values only, keys and nulls, headers, gzip), spilled at once so appends never
    wait; expected gets (key, value, headers) for each of its records."""
    n = rng.choice([1, 2, 5, 9, 40, 100])
    first = len(expected)
    values = [
        b"v%d-" % (first + i) + rng.randbytes(rng.randrange(0, 300)) for i in range(n)
    ]
    shape = rng.choice(["values", "keys", "headers", "gzip"])
    keys = headers = None
    if shape in ("keys", "headers"):
        keys = [None if i % 3 == 0 else b"k%d" % (first + i) for i in range(n)]
        values = [None if i % 7 == 3 else v for i, v in enumerate(values)]
    if shape == "headers":
        headers = [
            [("h", b"%d" % (first + i)), ("null", None)] if i % 2 else []
            for i in range(n)
        ]
    if shape == "gzip":
        plain = _native.batch_encode(_native.RecordArrays(values))
        log.ring.append_encoded(compress_batch(plain, "gzip"))
    else:
        log.ring.append_batch(values, keys, headers=headers)
    spill_all(log)
    for i in range(n):
        key = None if keys is None else keys[i]
        hs = () if headers is None else tuple(headers[i])
        expected.append((key, values[i], hs))


def as_tuples(records):
    return [(r.key, r.value, r.headers) for r in records]


def columns_as_tuples(columns):
    return list(zip(columns.keys(), columns.values(), columns.headers(), strict=True))


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("kind", ["poll", "poll_columns"])
def test_polled_records_keep_their_bytes_after_later_polls_of_a_lapped_reader(
    open_log, kind, seed
):
    """If a reader polls a partition from the ring and from the segments (lapped
    again and again by a producer that writes more than the ring holds between its
    polls), in reads of every size, then every record it returned still holds its
    own key, value and headers as bytes after all the later polls have overwritten
    the buffers those reads landed in."""
    rng = random.Random(seed)
    log = open_log(SMALL)
    reader = LogReader(log, 0)
    expected: list[tuple] = []
    kept = []  # what each poll returned, checked only at the end
    sources = []  # where each poll read from: the ring, or a segment file

    def poll():
        reader.max_bytes = rng.choice([100, 500, 4096, 1 << 20])  # 100: a batch
        got = getattr(reader, kind)(0)
        if got:
            kept.append(got)
            sources.append("ring" if reader._source is None else "log")

    for _ in range(8):
        for _ in range(40):  # more than the ring holds: the reader is lapped
            append_some(log, rng, expected)
        for _ in range(3):
            poll()  # from the segments
        while reader.offset < log.high_watermark:
            poll()  # the rest of the segments
        assert not getattr(reader, kind)(0)  # caught up: on to the ring
        for _ in range(5):
            for _ in range(rng.randrange(1, 4)):
                append_some(log, rng, expected)
            while reader.offset < log.high_watermark:
                poll()  # from the ring, in the same buffer
    reader.max_bytes = 1 << 20
    while got := getattr(reader, kind)(0):
        kept.append(got)
    assert reader.offset == log.high_watermark == len(expected)
    assert sources.count("log") >= 10, sources  # both buffers were overwritten
    assert sources.count("ring") >= 10, sources

    if kind == "poll":
        records = [r for got in kept for r in got]
        assert [r.offset for r in records] == list(range(len(expected)))
        assert as_tuples(records) == expected
        for r in records:  # their own bytes, not views of a buffer
            assert type(r.value) in (bytes, type(None)), type(r.value)
            assert type(r.key) in (bytes, type(None)), type(r.key)
            assert all(type(v) in (bytes, type(None)) for _, v in r.headers)
    else:
        offsets = [o for c in kept for o in c.offsets.tolist()]
        assert offsets == list(range(len(expected)))
        assert [t for c in kept for t in columns_as_tuples(c)] == expected
        pa = pytest.importorskip("pyarrow")
        table = pa.Table.from_batches([c.to_arrow() for c in kept])
        assert table.column("value").to_pylist() == [v for _, v, _ in expected]


@pytest.mark.parametrize("source", ["ring", "segments"])
@pytest.mark.parametrize("kind", ["poll", "poll_columns"])
def test_a_damaged_batch_in_the_middle_of_a_read_comes_after_the_good_ones(
    open_log, source, kind
):
    """If one batch fails its CRC32C in the middle of what a read returned (past
    the start of the reader's buffer, too), then the poll returns the records of the
    good batches before it, and the next poll raises CorruptError naming the damaged
    batch's offset and where it was read; the records after it are never returned
    as good."""
    log = open_log(SMALL)
    for i in range(3):  # offsets 0-29
        log.ring.append_batch([b"good-%03d" % (i * 10 + j) for j in range(10)])
    bad = bytearray(_native.batch_encode(_native.RecordArrays([b"bad-a", b"bad-b"])))
    bad[bad.rindex(b"bad-b") + 4] = ord("c")  # after the CRC: only it can tell
    # sealed: the ring takes the CRC as its writer's own (a producer's batch)
    assert log.ring.append_encoded(bytes(bad), sealed=True) == 30
    log.ring.append_batch([b"after-%d" % j for j in range(5)])  # 32-36
    if source == "segments":
        spill_all(log)
    assert log.spilled_offset() == (37 if source == "segments" else 0)
    # the first poll takes the first batch alone (KIP-74: one batch above max_bytes),
    # so the next one's view begins inside the ring reader's buffer
    reader = LogReader(log, 0, max_bytes=1)
    poll = getattr(reader, kind)

    def offsets(got):
        if kind == "poll":
            return [r.offset for r in got]
        return got.offsets.tolist()

    assert offsets(poll(0)) == list(range(10))
    reader.max_bytes = 1 << 20
    assert offsets(poll(0)) == list(range(10, 30))  # the good ones first
    where = (
        f"ring {re.escape(log.ring.name)}"
        if source == "ring"
        else r".*/t-0/0+\.log at byte \d+"
    )
    with pytest.raises(CorruptError, match=(
        rf"partition t-0: the batch at offset 30 \(0 bytes into what was read from "
        rf"{where}\) fails its CRC32C"
    )):  # fmt: skip
        poll(0)
    assert reader.offset == 30  # and it stays there: never skipped
    with pytest.raises(CorruptError, match="the batch at offset 30"):
        poll(0)
