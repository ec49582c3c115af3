"""Ctrl-C in every blocking call: a real child process, blocked in the call (it says
"blocking now", and the ring shows it registered as a waiter), gets SIGINT and must
raise KeyboardInterrupt from the call within 100 ms, plus a margin for a loaded
machine, then exit by it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from shmbroker import Admin, EmbeddedBroker, Ring, RingFull
from tests.conftest import wait_until

pytestmark = pytest.mark.system

BOUND_S = 0.100  # what a user may wait for Ctrl-C to work
MARGIN_S = 0.150  # scheduling on a busy 2-core machine

CHILD = """
import os, signal, sys, threading, time
from shmbroker import Consumer, Producer, Ring
args = sys.argv[1:]
{setup}
print("blocking now", flush=True)
try:
    {call}
except KeyboardInterrupt:
    print("interrupted", time.monotonic_ns(), flush=True)
    raise
print("returned", flush=True)
"""


class Child:
    """A child process running CHILD, its stdout read line by line with a timeout."""

    def __init__(self, setup: str, call: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(setup=setup, call=call), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buf = b""

    def line(self, timeout: float, what: str) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                pytest.fail(f"no {what} from the child within {timeout}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"the child exited before {what}: {err}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def interrupt(self) -> float:
        """SIGINT; seconds until the call raised KeyboardInterrupt. Checks that the
        child then exits by it."""
        sent = time.monotonic_ns()
        self.proc.send_signal(signal.SIGINT)
        word, stamp = self.line(10, "KeyboardInterrupt").split()
        assert word == "interrupted"
        return (int(stamp) - sent) / 1e9

    def exits_by_keyboard_interrupt(self) -> None:
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == -signal.SIGINT, err.decode()
        assert "KeyboardInterrupt" in err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate()


def interrupted_within_bound(
    child: Child,
    blocked: Callable[[], bool],
    then: Callable[[], None] = lambda: None,
) -> None:
    """Wait until the child is blocked, interrupt it, check how fast it raised
    KeyboardInterrupt (then: what to do before it can exit)."""
    try:
        assert child.line(30, "'blocking now'") == "blocking now"
        wait_until(blocked, 10, "the child to block")
        took = child.interrupt()
        then()
        child.exits_by_keyboard_interrupt()
    finally:
        child.kill()
    assert took < BOUND_S + MARGIN_S, f"KeyboardInterrupt {took * 1e3:.0f} ms after"


def fill(ring: Ring) -> None:
    """Append until not even a 1-byte record fits (nothing spills the ring)."""
    for value in (b"f" * 1000, b"z"):
        try:
            while True:
                ring.append(value, timeout=0)
        except RingFull:
            pass


# ---- the ring ------------------------------------------------------------------------

OPEN_RING = "ring = Ring.open(args[0])"
# signal.pthread_sigmask after starting a thread: the kernel then gives SIGINT to that
# thread, so the main thread's wait is not interrupted and must notice in a slice
SIGINT_TO_ANOTHER_THREAD = (
    "threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); "
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])"
)

READS = {
    "reader poll": ("reader = ring.reader()", "reader.poll(None)"),
    "reader iteration": ("reader = ring.reader()", "next(iter(reader))"),
    "reader read_batches": ("reader = ring.reader()", "reader.read_batches(None)"),
    "reader poll, SIGINT to another thread": (
        f"reader = ring.reader(); {SIGINT_TO_ANOTHER_THREAD}",
        "reader.poll(None)",
    ),
}


@pytest.mark.parametrize("case", READS)
def test_ctrl_c_interrupts_a_reader_waiting_for_records(ring, case):
    setup, call = READS[case]
    child = Child(f"{OPEN_RING}; {setup}", call, ring.name)
    interrupted_within_bound(child, lambda: ring.stat().data_waiters == 1)


APPENDS = {
    "append (the fast path)": "ring.append(b'z')",
    "append with a key": "ring.append(b'z', key=b'k')",
    "append_batch": "ring.append_batch([b'y', b'z'])",
    "append_encoded": "ring.append_encoded(batch)",
    "append, SIGINT to another thread": "ring.append(b'z')",
}


@pytest.mark.parametrize("case", APPENDS)
def test_ctrl_c_interrupts_an_append_blocked_on_a_full_ring(ring, case):
    fill(ring)
    setup = OPEN_RING
    if case == "append_encoded":
        setup += "; from shmbroker import _native"
        setup += "; batch = _native.batch_encode(_native.RecordArrays([b'z']))"
    if "another thread" in case:
        setup += "; " + SIGINT_TO_ANOTHER_THREAD
    child = Child(setup, APPENDS[case], ring.name)
    interrupted_within_bound(child, lambda: ring.stat().spill_waiters == 1)
    assert ring.stat().spill_waiters == 0


def test_ctrl_c_interrupts_wait_durable(ring):
    child = Child(
        f"{OPEN_RING}; last = ring.append(b'never fsynced')",
        "ring.wait_durable(last + 1)",
        ring.name,
    )
    interrupted_within_bound(child, lambda: ring.stat().durable_waiters == 1)


# ---- clients of a broker -------------------------------------------------------------


@pytest.fixture
def topic(broker: EmbeddedBroker) -> Iterator[list[Ring]]:
    """Topic "i" of 3 partitions; its rings, opened here to watch their waiters."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("i", 3)
        meta = admin.connection.topic("i")
        rings = [Ring.open(admin.connection.ring_name(meta, p)) for p in range(3)]
    yield rings
    for ring in rings:
        ring.close()


CONSUMES = {
    "poll, 1 partition": ("[('i', 0)]", "consumer.poll(timeout=None)"),
    "poll, 3 partitions": ("[('i', p) for p in range(3)]", "consumer.poll()"),
    "iteration, 3 partitions": ("[('i', p) for p in range(3)]", "next(iter(consumer))"),
    "read_batches, 3 partitions": (
        "[('i', p) for p in range(3)]",
        "consumer.read_batches(timeout=None)",
    ),
}


@pytest.mark.parametrize("case", CONSUMES)
def test_ctrl_c_interrupts_a_consumer_waiting_for_records(broker, topic, case):
    assigned, call = CONSUMES[case]
    n = 1 if "1 partition" in case else 3
    child = Child(
        f"consumer = Consumer(args[0]); consumer.assign({assigned})",
        call,
        str(broker.data_dir),
    )
    # each ring's spill thread, asleep, is the other waiter
    interrupted_within_bound(
        child, lambda: all(r.stat().data_waiters == 2 for r in topic[:n])
    )


PRODUCES = {
    "RecordFuture.get": "future.get()",
    "Producer.flush": "producer.flush()",
}


@pytest.mark.parametrize("case", PRODUCES)
def test_ctrl_c_interrupts_an_acks_all_producer_waiting_for_durability(
    broker, topic, case
):
    """The supervisor is stopped (SIGSTOP), so nothing is fsynced: the producer's
    wait for durability (Ring.wait_durable) blocks until Ctrl-C."""
    setup = (
        "producer = Producer(args[0], acks='all'); producer.partitions_for('i'); "
        "print('ready', flush=True); sys.stdin.readline(); "
        "future = producer.send('i', b'x', partition=1)"
    )
    child = Child(setup, PRODUCES[case], str(broker.data_dir))
    try:
        assert child.line(30, "'ready'") == "ready"
        os.kill(broker.pid, signal.SIGSTOP)
        assert child.proc.stdin is not None
        child.proc.stdin.write(b"go\n")
        child.proc.stdin.flush()
        interrupted_within_bound(
            child,
            lambda: topic[1].stat().durable_waiters == 1,
            then=lambda: os.kill(broker.pid, signal.SIGCONT),
        )
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        child.kill()
