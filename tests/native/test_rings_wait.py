"""shmb_rings_wait through its wrapper (_native.RingWaiter): which rings are ready, a
waiter asleep on every ring at once (futex_waitv) or, forced, on each in turn, no
lost wake-ups across processes, and waits that cost no CPU while nothing comes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from shmbroker import InvalidArgument, Ring, _native
from shmbroker.ring import DEFAULT_IDLE, PARK_AT_ONCE, BackoffIdleStrategy
from tests.conftest import wait_until

MODES = pytest.mark.parametrize("turns", [False, True], ids=["waitv", "turns"])


@pytest.fixture
def rings(shm_prefix):
    """4 rings of 1 MiB: room for every record a test appends (nothing spills)."""
    made = [Ring.create(f"/{shm_prefix}r{i}", 1 << 20) for i in range(4)]
    yield made
    for ring in made:
        ring.unlink()
        ring.close()


def waiter(rings, turns=False):
    return _native.RingWaiter([r.native for r in rings], turns=turns)


def test_wait_marks_the_rings_with_records_past_their_offsets(rings):
    w = waiter(rings)
    assert w.wait([0, 0, 0, 0], 0, None) == bytes(4)
    rings[1].append(b"a")
    rings[3].append_batch([b"b", b"c"])
    assert w.wait([0, 0, 0, 0], 0, None) == b"\0\1\0\1"
    assert w.wait([0, 1, 0, 1], 0, None) == b"\0\0\0\1"  # offset 2 is still to come
    assert w.wait([0, 1, 0, 2], 0, DEFAULT_IDLE) == bytes(4)


def test_wait_times_out_with_nothing_ready(rings):
    started = time.monotonic()
    assert waiter(rings).wait([0] * 4, 120, DEFAULT_IDLE) == bytes(4)
    assert 0.12 <= time.monotonic() - started < 5
    assert [r.stat().data_waiters for r in rings] == [0] * 4


def test_a_deleted_ring_is_ready(rings):
    rings[2].mark_deleted()
    assert waiter(rings).wait([0] * 4, 5000, None) == b"\0\0\1\0"


@MODES
@pytest.mark.parametrize("k", [0, 3])
def test_a_waiter_sleeps_on_every_ring_and_wakes_on_any(rings, turns, k):
    """If a waiter sleeps on 4 rings, then it is registered on all of them at once
    and the first append to any of them wakes it."""
    w, got = waiter(rings, turns), []
    thread = threading.Thread(target=lambda: got.append(w.wait([0] * 4, 30_000, None)))
    thread.start()
    try:
        wait_until(
            lambda: all(r.stat().data_waiters == 1 for r in rings),
            10,
            "the waiter to register on every ring",
        )
        appended = time.monotonic()
        rings[k].append(b"wake")
        thread.join(10)
        woke = time.monotonic() - appended
    finally:
        rings[k].mark_deleted()  # ends the wait if the append did not
        thread.join(10)
    assert got == [bytes(1 if i == k else 0 for i in range(4))]
    assert woke < 1, f"woke {woke:.3f}s after the append"
    assert [r.stat().data_waiters for r in rings] == [0] * 4


def test_more_rings_than_futex_waitv_takes_are_waited_in_turns(shm_prefix):
    many = [Ring.create(f"/{shm_prefix}m{i}", 1 << 12) for i in range(130)]
    try:
        w, got = waiter(many), []
        thread = threading.Thread(
            target=lambda: got.append(w.wait([0] * 130, 30_000, None))
        )
        thread.start()
        wait_until(lambda: many[129].stat().data_waiters == 1, 10, "the waiter")
        many[129].append(b"last")
        thread.join(10)
        assert not thread.is_alive(), "the append to ring 129 did not wake the waiter"
        assert got[0] == bytes(129) + b"\1"
    finally:
        for ring in many:
            ring.unlink()
            ring.close()


PING = """
import random, sys
from shmbroker import Ring
names, rounds = sys.argv[1:-1], int(sys.argv[-1])
rings = [Ring.open(n) for n in names]
ack = rings.pop().reader(0)
rng = random.Random(7)
for i in range(rounds):
    rings[rng.randrange(len(rings))].append(b"%d" % i)
    for _ in range(rng.randrange(200)):  # vary where the append lands in the race
        pass
    if not ack.poll(timeout=10):
        sys.exit(f"round {i}: no ack within 10 s")
print("done", flush=True)
"""


@MODES
@pytest.mark.system
def test_no_wake_up_is_lost_across_processes(rings, turns):
    """If another process appends to a random ring of several while this one parks
    on all of them at once (no spins: every round races the append against the
    registration), then every wait ends with that record, none by a timeout."""
    rounds = 3000
    *data, ack = rings
    proc = subprocess.Popen(
        [sys.executable, "-c", PING, *[r.name for r in rings], str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        w = waiter(data, turns)
        offsets = [0] * len(data)
        for i in range(rounds):
            ready = w.wait(offsets, 5000, PARK_AT_ONCE)
            assert sum(ready) == 1, f"round {i}: {ready!r} (a lost wake-up times out)"
            k = ready.index(1)
            offsets[k] += 1
            assert data[k].stat().next_offset == offsets[k]
            ack.append(b"ack")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out) == (0, "done\n"), err
    assert sum(offsets) == rounds


def thread_cpu_of(fn):
    """CPU-seconds this thread spends in fn()."""
    before = time.thread_time()
    fn()
    return time.thread_time() - before


def test_waiting_on_idle_rings_costs_no_cpu(rings):
    """If nothing comes for 1 s, then a wait with the default idle strategy spends
    under 1% of a core: it spins and yields only at first, then sleeps."""
    cpu = thread_cpu_of(lambda: waiter(rings).wait([0] * 4, 1000, DEFAULT_IDLE))
    assert cpu < 0.010, f"{cpu * 1e3:.1f} ms of CPU in a 1 s idle wait"


def test_the_spills_wait_on_an_idle_ring_costs_no_cpu(rings):
    """The spill thread's wait (spin 0): asleep at once, no CPU while idle."""
    cpu = thread_cpu_of(lambda: rings[0].native.wait(0, 1000, 0))
    assert cpu < 0.010, f"{cpu * 1e3:.1f} ms of CPU in a 1 s idle wait"


def test_bad_waits_are_refused_naming_the_numbers(rings):
    with pytest.raises(InvalidArgument, match=r"wait on no rings"):
        _native.RingWaiter([])
    with pytest.raises(InvalidArgument, match=r"3 offsets for 4 rings"):
        waiter(rings).wait([0, 0, 0], 0, None)
    with pytest.raises(InvalidArgument, match=r"spins -1, yields 0"):
        BackoffIdleStrategy(max_spins=-1, max_yields=0)
    with pytest.raises(InvalidArgument, match=r"park periods 5..4 ns"):
        BackoffIdleStrategy(0, 0, min_park_period_ns=5, max_park_period_ns=4)


WITHOUT_FUTEX_WAITV = """
import ctypes, errno, struct, sys, threading, time
from shmbroker import Ring, _native

# seccomp: futex_waitv (449 everywhere) fails with ENOSYS, as on a kernel before 5.16
libc = ctypes.CDLL(None, use_errno=True)
program = b"".join(
    struct.pack("HBBI", *insn)
    for insn in (
        (0x20, 0, 0, 0),  # load the syscall number
        (0x15, 0, 1, 449),  # futex_waitv?
        (0x06, 0, 0, 0x00050000 | errno.ENOSYS),  # then fail with ENOSYS
        (0x06, 0, 0, 0x7FFF0000),  # else allow
    )
)
buf = ctypes.create_string_buffer(program)
fprog = struct.pack("HxxxxxxP", 4, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0  # seccomp filter
assert libc.syscall(449, None, 0, 0, None, 1) == -1
assert ctypes.get_errno() == errno.ENOSYS

rings = [Ring.open(name) for name in sys.argv[1:]]
waiter = _native.RingWaiter([r.native for r in rings])

def append_when_asleep():
    while not all(r.stat().data_waiters == 1 for r in rings):
        time.sleep(0.001)
    rings[2].append(b"wake")

threading.Thread(target=append_when_asleep).start()
print(list(waiter.wait([0] * len(rings), 10_000, None)), flush=True)
"""


@pytest.mark.system
def test_without_futex_waitv_the_wait_falls_back_to_turns(rings):
    """If the kernel has no futex_waitv (ENOSYS, here by a seccomp filter in a child
    process), then a waiter still sleeps on every ring and wakes on any of them."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FUTEX_WAITV, *[r.name for r in rings]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[0, 0, 1, 0]\n"
