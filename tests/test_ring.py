"""Ring behaviour seen from one process: appends, reads, seeks, wrapping, waiting,
bad input and deletion. Cross-process behaviour is in tests/system/, but for one
deletion test."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shmbroker import (
    CorruptError,
    InvalidArgument,
    Lapped,
    OffsetOutOfRange,
    Ring,
    RingFull,
    RingReader,
    UnknownTopic,
    _native,
    shm,
)
from shmbroker.ring import DEFAULT_IDLE, PARK_AT_ONCE, BackoffIdleStrategy
from tests.conftest import wait_until


def values(records):
    return [r.value for r in records]


def test_offsets_are_dense_across_record_and_batch_appends(ring):
    assert ring.append(b"a") == 0
    assert ring.append_batch([b"b", b"c", b"d"]) == 1
    assert ring.append(b"e", headers=[("h", b"1")]) == 4
    assert (
        ring.append_encoded(_native.batch_encode(_native.RecordArrays([b"f", b"g"])))
        == 5
    )
    recs = ring.reader(0).poll(0)
    assert [r.offset for r in recs] == list(range(7))
    assert values(recs) == [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    assert recs[4].headers == (("h", b"1"),)
    assert ring.stat().next_offset == 7


def test_high_watermark_and_log_start_offset_read_what_stat_reads(ring_name):
    ring = Ring.create(ring_name, 1 << 16, base_offset=40)
    try:
        assert (ring.high_watermark(), ring.log_start_offset()) == (40, 40)
        ring.append_batch([b"a", b"b", b"c"])
        ring.set_log_start_offset(41)
        s = ring.stat()
        assert (ring.high_watermark(), ring.log_start_offset()) == (43, 41)
        assert (s.next_offset, s.log_start_offset) == (43, 41)
    finally:
        ring.unlink()
        ring.close()


def test_record_fields_round_trip(ring):
    ring.append(b"v", b"k", timestamp=-1234)
    ring.append(None, None, timestamp=2**62)
    a, b = ring.reader(0, topic="orders", partition=3).poll(0)
    assert (a.topic, a.partition, a.key, a.value, a.timestamp) == (
        "orders",
        3,
        b"k",
        b"v",
        -1234,
    )
    assert (b.key, b.value, b.timestamp) == (None, None, 2**62)


def test_batch_crossing_ring_end_reads_whole(ring_name):
    with Ring.create(ring_name, 4096) as ring:
        try:
            filler = ring.append_batch([b"x" * 3800])
            reader = ring.reader(filler)
            reader.poll(0)
            ring.spill_advance(reader.position)
            start = ring.stat().tail_position
            big = [bytes([i]) * 100 for i in range(5)]
            ring.append_batch(big)  # starts near the end, wraps over position 4096
            end = ring.stat().tail_position
            assert start % 4096 + (end - start) > 4096
            assert values(reader.poll(0)) == big
        finally:
            ring.unlink()


def test_reader_sees_only_new_records_by_default(ring):
    ring.append(b"old")
    reader = ring.reader()
    ring.append(b"new")
    assert values(reader.poll(0)) == [b"new"]


def test_seek_into_a_batch_skips_its_earlier_records(ring):
    ring.append_batch([b"0", b"1", b"2", b"3"])
    assert [r.offset for r in ring.reader(2).poll(0)] == [2, 3]


def test_seek_outside_the_ring_names_the_range(ring):
    ring.append(b"a")
    with pytest.raises(OffsetOutOfRange, match=r"offset 5 is not in ring .* up to 1"):
        ring.reader(5)


def test_full_ring_refuses_without_overwriting_unspilled_bytes(ring):
    value = b"x" * 1000
    with pytest.raises(  # noqa: PT012
        RingFull, match=r"full: .* spill position 0\); append did not wait"
    ):
        for _ in range(100):
            ring.append(value, timeout=0)
    n = ring.stat().next_offset
    assert values(ring.reader(0).poll(0)) == [value] * n  # nothing was overwritten
    assert ring.stat().full_waits == 1


def test_full_ring_append_waits_until_the_spill_advances(ring):
    for value in (b"y" * 500, b"z"):  # big records, then small ones to the brim
        with pytest.raises(RingFull):  # noqa: PT012
            while True:
                ring.append(value, timeout=0)
    done = []
    appender = threading.Thread(
        target=lambda: done.append(ring.append(b"z", timeout=30))
    )
    appender.start()
    wait_until(lambda: ring.stat().spill_waiters == 1, 10, "appender to wait for space")
    ring.spill_advance(ring.stat().tail_position)
    appender.join(30)
    assert done == [ring.stat().next_offset - 1]


def test_sleeping_reader_wakes_on_append(ring):
    reader = ring.reader(spin=0)
    got = []
    thread = threading.Thread(target=lambda: got.extend(reader.poll(30)))
    thread.start()
    wait_until(
        lambda: ring.stat().data_waiters == 1, 10, "reader to sleep on the futex"
    )
    ring.append(b"wake")
    thread.join(30)
    assert values(got) == [b"wake"]


def test_poll_times_out_empty(ring):
    assert ring.reader().poll(0.01) == []


def test_lapped_reader_is_told(ring):
    reader = ring.reader(0)
    for _ in range(200):
        ring.append(b"w" * 1000)
        ring.spill_advance(ring.stat().tail_position)
    with pytest.raises(Lapped, match="was overwritten"):
        reader.poll(0)


def test_oversized_record_is_refused(ring):
    with pytest.raises(InvalidArgument, match="larger than the ring"):
        ring.append(b"x" * (1 << 17))
    assert ring.stat().next_offset == 0


def test_corrupted_crc_is_refused_and_nothing_is_appended(ring):
    batch = bytearray(_native.batch_encode(_native.RecordArrays([b"a", b"b"])))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptError, match="corrupt record batch"):
        ring.append_encoded(bytes(batch))
    assert ring.stat().tail_position == 0
    # sealed=True: the caller computed the CRC from these bytes (a producer's own
    # batch), so the ring does not compute it again; length and magic still count
    batch[-1] ^= 0xFF
    batch[batch.rindex(b"b")] = ord("c")  # a value changed: only the CRC can tell
    assert ring.append_encoded(bytes(batch), sealed=True) == 0
    with pytest.raises(CorruptError, match="corrupt record batch"):
        ring.append_encoded(bytes(batch[:-1]), sealed=True)


def test_batch_with_malformed_records_is_refused(ring):
    batch = bytearray(_native.batch_encode(_native.RecordArrays([b"abc"])))
    batch[61] = 0x7F  # record length varint far past the end
    struct.pack_into(">I", batch, 17, _native.crc32c(bytes(batch[21:])))
    with pytest.raises(CorruptError):
        ring.append_encoded(bytes(batch))


def test_wrong_layout_version_is_a_clear_error(ring):
    with open(shm.SHM_DIR + ring.name, "r+b") as f:
        f.seek(8)  # meta.layout_version
        f.write(struct.pack("<I", 999))
    with pytest.raises(CorruptError, match="not a ring of this layout version"):
        Ring.open(ring.name)


def test_object_that_is_not_a_ring_is_a_clear_error(shm_prefix):
    name = f"/{shm_prefix}zeros"
    fd = shm.create(name, 4096 + 65536)
    os.close(fd)
    try:
        with pytest.raises(CorruptError, match="layout"):
            Ring.open(name)
    finally:
        shm.unlink(name)


@pytest.mark.parametrize("capacity", [1000, 3 * 4096, 1 << 11])
def test_capacity_must_be_a_power_of_two_multiple_of_the_page(ring_name, capacity):
    with pytest.raises(InvalidArgument, match="power of two"):
        Ring.create(ring_name, capacity)


def test_closed_ring_raises_closed_error(ring_name):
    ring = Ring.create(ring_name, 1 << 16)
    ring.unlink()
    ring.close()
    with pytest.raises(Exception, match="is closed"):
        ring.append(b"late")


def fill(ring):
    """Append until the ring is full of unspilled bytes."""
    for value in (b"y" * 500, b"z"):  # big records, then small ones to the brim
        with pytest.raises(RingFull):  # noqa: PT012
            while True:
                ring.append(value, timeout=0)


def start_thread(call):
    """Run call in a thread; the function returned joins it, then returns what call
    returned or raises what it raised."""
    outcome = []

    def run():
        try:
            outcome.append((call(), None))
        except Exception as exc:
            outcome.append((None, exc))

    thread = threading.Thread(target=run, daemon=True)  # a failed test can't hang exit
    thread.start()

    def result():
        thread.join(30)
        assert outcome, f"{call} still blocked after 30s"
        value, exc = outcome[0]
        if exc is not None:
            raise exc
        return value

    return result


def mark_deleted_from_another_handle(ring):
    with Ring.open(ring.name) as other:
        other.mark_deleted()


DELETED = r"ring /\S+: the ring was deleted"


def test_every_append_after_mark_deleted_raises_unknown_topic(ring):
    ring.append(b"before")
    ring.mark_deleted()
    encoded = _native.batch_encode(_native.RecordArrays([b"e"]))
    for append in (
        lambda: ring.append(b"fast path"),
        lambda: ring.append(b"v", b"k", timeout=0),
        lambda: ring.append(b"v", headers=[("h", b"1")]),
        lambda: ring.append_batch([b"a", b"b"], timeout=1),
        lambda: ring.append_encoded(encoded),
    ):
        with pytest.raises(UnknownTopic, match=f"append to {DELETED}"):
            append()
    s = ring.stat()
    assert (s.deleted, s.next_offset, s.batches_appended) == (1, 1, 1)


def test_stat_shows_the_deleted_flag(ring):
    assert ring.stat().deleted == 0
    mark_deleted_from_another_handle(ring)
    assert ring.stat().deleted == 1


def test_appender_blocked_on_a_full_ring_wakes_when_deleted(ring):
    fill(ring)
    appended = start_thread(lambda: ring.append(b"z", timeout=None))
    wait_until(lambda: ring.stat().spill_waiters == 1, 10, "appender to wait")
    mark_deleted_from_another_handle(ring)
    with pytest.raises(UnknownTopic, match=f"append to {DELETED}"):
        appended()
    assert ring.stat().spill_waiters == 0


def test_reader_blocked_in_poll_wakes_when_deleted(ring):
    reader = ring.reader(spin=0)
    polled = start_thread(lambda: reader.poll(None))
    wait_until(lambda: ring.stat().data_waiters == 1, 10, "reader to sleep")
    mark_deleted_from_another_handle(ring)
    with pytest.raises(UnknownTopic, match=f"read {DELETED}"):
        polled()


def test_reader_gets_records_committed_before_deletion_then_unknown_topic(ring):
    ring.append_batch([b"a", b"b"])
    ring.append(b"c")
    ring.mark_deleted()
    reader = ring.reader(0, spin=0)
    assert values(reader.poll(None)) == [b"a", b"b", b"c"]
    with pytest.raises(UnknownTopic, match=f"read {DELETED}"):
        reader.poll(0)
    with pytest.raises(UnknownTopic, match=DELETED):
        ring.reader().read_batches(0)  # from the tail: nothing left to return
    assert len(ring.reader(0).read_batches(0)) == ring.stat().tail_position


def test_wait_durable_wakes_when_deleted(ring):
    last = ring.append(b"never spilled")
    waited = start_thread(lambda: ring.wait_durable(last + 1))
    wait_until(lambda: ring.stat().durable_waiters == 1, 10, "durability waiter")
    mark_deleted_from_another_handle(ring)
    with pytest.raises(UnknownTopic, match=f"durability on {DELETED}"):
        waited()
    with pytest.raises(UnknownTopic, match=DELETED):
        ring.wait_durable(last + 1, timeout=0)
    ring.native.durable_advance(last + 1)  # as the spill does
    assert ring.wait_durable(last + 1, timeout=0)  # durable is durable, deleted or not


def test_a_durability_waiter_wakes_the_spill_thread_asleep_on_the_ring(ring):
    """If the spill thread sleeps on the ring (nothing new to spill) when a producer
    starts waiting for an fsync of what it spilled already, then the waiter wakes it
    to look at the waiter count and fsync (before: it slept on until its 100 ms idle
    wake, and every synchronous acks=all send took 100 ms)."""
    last = ring.append(b"spilled, not yet fsynced")
    tail = ring.stat().tail_position
    ring.spill_advance(tail, last + 1)
    spill_woke = start_thread(lambda: ring.wait_committed(tail, 30.0))
    wait_until(lambda: ring.stat().data_waiters == 1, 10, "the spill thread asleep")
    durable = start_thread(lambda: ring.wait_durable(last + 1, 30.0))
    wait_until(lambda: ring.stat().durable_waiters == 1, 10, "the durability waiter")
    wait_until(
        lambda: ring.stat().data_waiters == 0,
        10,
        "the spill thread woken by the waiter",
    )
    assert spill_woke() is None  # woken with nothing new: it looks at why
    ring.native.durable_advance(last + 1)  # as its fsync does
    assert durable()


APPEND_UNTIL_DELETED = """
import sys
from shmbroker import Ring
ring = Ring.open(sys.argv[1])
print("appending", flush=True)
ring.append(b"z", timeout=None)  # blocks: the ring is full
"""


@pytest.mark.system
def test_process_blocked_appending_exits_with_the_error_when_deleted(ring):
    """If another process is blocked appending to a full ring when its topic is
    deleted, then it fails with UnknownTopic naming the ring, and exits."""
    fill(ring)
    proc = subprocess.Popen(
        [sys.executable, "-c", APPEND_UNTIL_DELETED, ring.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: ring.stat().spill_waiters == 1, 30, "process to block")
        ring.mark_deleted()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert out == "appending\n"
    assert proc.returncode == 1
    assert f"UnknownTopic: append to ring {ring.name}: the ring was deleted" in err, err


class RingModel(RuleBasedStateMachine):
    """A Ring next to a deque model of its batches: offsets, positions, space, laps."""

    CAPACITY = 8192

    def __init__(self):
        super().__init__()
        self.name = f"/{shm.NAME_PREFIX}sm.{os.getpid()}.{id(self):x}"
        self.batches = deque()  # (position, size, first offset, [values])
        self.tail = self.spill = self.next_offset = 0
        self.ring = Ring.create(self.name, self.CAPACITY)
        self.reader = self.ring.reader(0)  # nothing may raise after create
        self.reader_offset = 0

    def teardown(self):
        self.ring.unlink()
        self.ring.close()

    def _append(self, vals, call):
        size = len(_native.batch_encode(_native.RecordArrays(vals)))
        if self.tail + size - self.CAPACITY > self.spill:
            with pytest.raises(RingFull):
                call()
            return
        assert call() == self.next_offset
        self.batches.append((self.tail, size, self.next_offset, vals))
        self.tail += size
        self.next_offset += len(vals)

    @rule(value=st.binary(max_size=600))
    def append_one(self, value):
        self._append([value], lambda: self.ring.append(value, timeout=0))

    @rule(vals=st.lists(st.binary(max_size=300), min_size=1, max_size=20))
    def append_many(self, vals):
        self._append(vals, lambda: self.ring.append_batch(vals, timeout=0))

    @rule(fraction=st.floats(0, 1))
    def spill(self, fraction):
        boundaries = [p for p, _, _, _ in self.batches if p >= self.spill] + [self.tail]
        target = boundaries[int(fraction * (len(boundaries) - 1))]
        self.ring.spill_advance(target)
        self.spill = target

    @rule()
    def read(self):
        expect_lapped = self.reader.position < self.tail - self.CAPACITY
        if expect_lapped:
            with pytest.raises(Lapped):
                self.reader.poll(0)
            self.reader = self.ring.reader()  # start over from the tail
            self.reader_offset = self.next_offset
            return
        got = []
        while batch := self.reader.poll(0):
            got.extend(batch)
        assert [r.offset for r in got] == list(
            range(self.reader_offset, self.next_offset)
        )
        want = [
            v
            for _, _, first, vals in self.batches
            for v in vals
            if first >= self.reader_offset
        ]
        assert values(got)[-len(want) :] == want if want else got == []
        self.reader_offset = self.next_offset

    @precondition(lambda self: self.batches)
    @rule(pick=st.integers(0, 10**6))
    def seek_recent(self, pick):
        recent = [b for b in self.batches if b[0] >= self.tail - self.CAPACITY // 2]
        if not recent:
            return
        position, _, first, vals = recent[pick % len(recent)]
        offset = first + pick % len(vals)
        assert self.ring.seek(offset) == position

    @invariant()
    def stat_matches_model(self):
        s = self.ring.stat()
        assert (s.tail_position, s.spill_position, s.next_offset) == (
            self.tail,
            self.spill,
            self.next_offset,
        )


TestRingModel = RingModel.TestCase
TestRingModel.settings = settings(
    max_examples=60, stateful_step_count=60, deadline=None
)


@pytest.mark.parametrize("n", [3, 50])  # built row by row, and by columns
def test_keys_headers_and_nulls_survive_polls_small_and_large(ring, n):
    values = [None if i % 3 == 0 else b"v%d" % i for i in range(n)]
    keys = [None if i % 2 else b"k%d" % i for i in range(n)]
    headers = [[("a", b"1"), ("b", None)] if i % 4 == 0 else [] for i in range(n)]
    ring.append_batch(values, keys, headers=headers)
    got = ring.reader(0).poll(0)
    assert [r.value for r in got] == values
    assert [r.key for r in got] == keys
    assert [list(r.headers) for r in got] == headers


def test_readers_in_threads_sharing_one_ring_each_see_every_record(ring_name):
    """If several threads read one Ring object at once (each with its own reader),
    then each gets every record in order: no call shares scratch space."""
    with Ring.create(ring_name, 1 << 22) as shared:
        try:
            for i in range(2000):
                shared.append_batch([b"%d" % (i * 10 + j) for j in range(10)])
            problems = []

            def read_all():
                # a small buffer: many reads, so the threads' calls interleave
                reader = RingReader(shared, 0, topic="t", buffer_bytes=256)
                expected = 0
                while expected < 20_000:
                    for r in reader.poll(0):
                        if r.offset != expected or r.value != b"%d" % expected:
                            problems.append((r.offset, expected))
                            return
                        expected += 1
                    shared.stat()  # stat shares nothing either

            threads = [threading.Thread(target=read_all) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert problems == []
        finally:
            shared.unlink()


def test_a_reader_waiting_for_nothing_spends_no_cpu(ring):
    """If nothing comes for 1 s, then a poll spends under 1% of a core: its idle
    strategy spins and yields only at first, then it sleeps on the futex."""
    reader = ring.reader()
    cpu = time.thread_time()
    assert reader.poll(1.0) == []
    cpu = time.thread_time() - cpu
    assert cpu < 0.010, f"{cpu * 1e3:.1f} ms of CPU in a 1 s idle poll"


def test_a_reader_takes_an_idle_strategy(ring):
    """RingReader(idle=...) waits as told; spin=0 (the older knob) parks at once."""
    assert ring.reader(spin=0).idle is PARK_AT_ONCE
    assert ring.reader().idle is DEFAULT_IDLE
    strategy = BackoffIdleStrategy(max_spins=10, max_yields=5)
    reader = RingReader(ring, ring.stat().tail_position, topic="t", idle=strategy)
    got = []
    thread = threading.Thread(target=lambda: got.extend(reader.poll(30)))
    thread.start()
    wait_until(lambda: ring.stat().data_waiters == 1, 10, "the reader to sleep")
    ring.append(b"wake")
    thread.join(30)
    assert values(got) == [b"wake"]
    assert repr(strategy) == (
        "BackoffIdleStrategy(max_spins=10, max_yields=5, min_park_period_ns=1000, "
        "max_park_period_ns=1000000)"
    )


# the header's hot cursors, one cache line each (csrc/shmb_layout.h)
TAIL, CLAIM, SPILL, NEXT_OFFSET, LOCK = 64, 128, 192, 320, 384


def scribble(ring_name: str, at: int, data: bytes) -> None:
    """Write into a ring's header as a buggy process of the same user could."""
    fd = os.open(f"/dev/shm{ring_name}", os.O_RDWR)
    try:
        os.pwrite(fd, data, at)
    finally:
        os.close(fd)


def cursor(ring_name: str, at: int) -> int:
    fd = os.open(f"/dev/shm{ring_name}", os.O_RDONLY)
    try:
        return struct.unpack("<q", os.pread(fd, 8, at))[0]
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("at", "value", "damage"),
    [
        (TAIL, lambda tail: tail + 4096, r"tail_position \d+ is above claim_position"),
        (CLAIM, lambda _: 2**60, r"claim_position - tail_position \d+ is above"),
        (SPILL, lambda tail: tail + 64, r"spill_position \d+ is above tail_position"),
        (NEXT_OFFSET, lambda _: 2**62, r"next_offset 4611686018427387904 is not one "
         r"past the last batch's offset \(20\)"),
    ],
)  # fmt: skip
def test_a_scribbled_header_is_refused_naming_the_field(
    ring, ring_name, at, value, damage
):
    """If a process overwrites a cursor of the ring's header, then appends are
    refused with CorruptError naming the field and both values, instead of landing
    where readers cannot find them (or with offsets no longer dense), and
    `ring-stat` reports it and exits 1."""
    ring.append_batch([b"x"] * 20)
    tail = cursor(ring_name, TAIL)
    scribble(ring_name, at, struct.pack("<q", value(tail)))
    with pytest.raises(CorruptError, match=f"header is damaged \\({damage}"):
        ring.append(b"y")
    with pytest.raises(CorruptError, match=damage):
        ring.append_batch([b"z"] * 3)
    stat = subprocess.run(
        [sys.executable, "-m", "shmbroker", "ring-stat", ring_name],
        capture_output=True,
        text=True,
    )
    assert stat.returncode == 1
    assert "ERROR: the header is damaged" in stat.stderr


def test_a_scribbled_writer_lock_is_refused_not_an_oserror(ring, ring_name):
    """If the writer lock's bytes are overwritten, then an append raises
    CorruptError saying the lock is damaged (before: a raw OSError EINVAL)."""
    ring.append(b"x")
    scribble(ring_name, LOCK, b"\xff" * 40)
    with pytest.raises(CorruptError, match="writer lock is not a lock any more"):
        ring.append(b"y", timeout=1)
