"""RecordAccumulator: per-record sends appended as batches."""

from __future__ import annotations

import pytest

from shmbroker import RingFull
from shmbroker.accumulator import RecordAccumulator


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
