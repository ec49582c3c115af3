"""Group failover through the Kafka gateway: how soon another member reads the
partitions of a Kafka-client member that is killed with kill -9 (found after its
session.timeout.ms, as in Kafka), or that leaves cleanly (LeaveGroup: at once).

A real broker runs (`EmbeddedBroker` with its gateway, under a shm prefix of this
run's own). A 4-partition topic gets a record on every partition every 2 ms from a
shared-memory producer in this process. Per trial a fresh group of two member
processes forms (A, the one that goes, and B, the one that stays; 2 partitions
each by the range assignor); once each has read its partitions, A is killed
(SIGKILL) or stopped (SIGTERM: the client closes, which sends LeaveGroup), and the
time runs from just before the signal (CLOCK_MONOTONIC, shared by the processes)
to the first record B reads from each of A's partitions (B's stamp). Rows:
  remote kill -9:   A and B confluent-kafka (librdkafka), session.timeout.ms S,
                    heartbeat.interval.ms S/10; judged against S (the floor).
  remote leave:     A confluent-kafka leaves; B confluent-kafka with
                    heartbeat.interval.ms 50 (a Kafka client hears of a rebalance
                    at its next heartbeat, so that interval bounds this row).
  remote leave, local B: A confluent-kafka leaves; B a shared-memory Consumer
                    (its heartbeat is a long poll: it hears of it at once).
  local kill -9 (baseline): A and B shared-memory Consumers; the supervisor sees
                    A's control connection close (issue 5's path, no timeout).
Target: after a clean leave, A's partitions are read by B within 100 ms.

Left out: process start-up (members start before the clock), records A read but
did not commit (read again by B; auto-commit every 100 ms here), and the time the
signalled process takes to die. Raw results go to benchmarks/results/
(git-ignored); `--json` prints them instead of the report.

    .venv/bin/python benchmarks/bench_group_failover.py            # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_group_failover.py --smoke    # ~15 s (CI)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench_ring import header
from machine import publish

from shmbroker import shm
from shmbroker.client.admin import Admin
from shmbroker.client.producer import Producer
from shmbroker.embedded import EmbeddedBroker
from shmbroker.errors import GroupIdNotFound

SHM_PREFIX = f"shmb.bench.{os.getpid()}."  # this run's own: checked for leaks at exit
PARTITIONS = 4
TICK_S = 0.002  # the producer appends a record to every partition this often
LEAVE_HEARTBEAT_MS = 50  # the remote survivor's heartbeat.interval.ms in leave rows
LOCAL_SESSION_MS = 10_000  # local members: their connection tells the supervisor
TARGET_LEAVE_S = 0.100
STALL_S = 60.0  # a trial that takes longer is reported as hung

# ---- the member process (this file run with --member) -------------------------------


def member(kind: str, data_dir: str, bootstrap: str, topic: str, group: str,
           name: str, session_ms: int, heartbeat_ms: int) -> None:  # fmt: skip
    """Consume until SIGTERM (then close: a clean leave); print "P T" for the first
    record of partition P in each poll (T: CLOCK_MONOTONIC)."""
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def seen(partitions: set[int]) -> None:
        now = time.monotonic()
        for p in partitions:
            sys.stdout.write(f"{p} {now}\n")
        sys.stdout.flush()

    if kind == "confluent":
        from confluent_kafka import Consumer as KafkaConsumer

        consumer = KafkaConsumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
            "auto.offset.reset": "latest", "auto.commit.interval.ms": 100,
            "session.timeout.ms": session_ms, "heartbeat.interval.ms": heartbeat_ms,
            "fetch.wait.max.ms": 10, "log_level": 3,
        })  # fmt: skip
        consumer.subscribe([topic])
        while not stop:
            batch = consumer.consume(100, 0.01)
            seen({m.partition() for m in batch if not m.error()})
        consumer.close()
    else:
        from shmbroker.client.consumer import Consumer

        local = Consumer(
            data_dir, client_id=name, group_id=group, subscribe=[topic],
            auto_offset_reset="latest", auto_commit_interval_ms=100,
            session_timeout_ms=session_ms, heartbeat_interval_ms=heartbeat_ms,
        )  # fmt: skip
        while not stop:
            records = local.poll_batch(timeout=0.01)
            seen({r.partition for r in records})
        local.close()


# ---- the benchmark -------------------------------------------------------------------


class Member:
    """A member process and the partitions it has read, with the first time each
    was read after `since`."""

    def __init__(self, kind: str, broker: EmbeddedBroker, topic: str, group: str,
                 name: str, session_ms: int, heartbeat_ms: int) -> None:  # fmt: skip
        self.kind, self.name = kind, name
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--member", kind, str(broker.data_dir),
             broker.bootstrap_servers, topic, group, name, str(session_ms),
             str(heartbeat_ms)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.first_read: dict[int, float] = {}  # partition -> first time read
        self.since = 0.0
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            p, t = line.split()
            with self._lock:
                if float(t) >= self.since and int(p) not in self.first_read:
                    self.first_read[int(p)] = float(t)

    def reset(self, since: float) -> None:
        with self._lock:
            self.since = since
            self.first_read = {}

    def read(self) -> dict[int, float]:
        with self._lock:
            return dict(self.first_read)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def wait_for(condition: Any, what: str, *alive: Member) -> None:
    """Poll until condition holds; fail if it takes STALL_S or a member dies."""
    deadline = time.monotonic() + STALL_S
    while not condition():
        for m in alive:
            if m.process.poll() is not None:
                raise RuntimeError(f"member {m.name} ({m.kind}) exited while "
                                   f"waiting for {what}")  # fmt: skip
        if time.monotonic() > deadline:
            raise TimeoutError(f"hung: waited {STALL_S:g}s for {what}")
        time.sleep(0.005)


def owned(admin: Admin, group: str, name: str) -> set[int] | None:
    """The partitions member `name` holds in a stable group of two, else None."""
    try:
        d = admin.describe_group(group)
    except GroupIdNotFound:
        return None
    if d.state != "Stable" or len(d.members) != 2:
        return None
    for m in d.members:
        if m.client_id == name and m.assignment:
            return {tp.partition for tp in m.assignment}
    return None


def trial(broker: EmbeddedBroker, admin: Admin, topic: str, row: dict[str, Any]
          ) -> dict[str, float]:  # fmt: skip
    """One trial of a row: seconds from the signal to B's first record of the
    first, and of the last, of A's partitions."""
    group = f"failover-{uuid.uuid4().hex[:8]}"
    a = Member(row["a"], broker, topic, group, "A", row["session_ms"],
               row["a_heartbeat_ms"])  # fmt: skip
    wait_for(lambda: a.read(), "A reading", a)  # A joins first: then both have 2
    b = Member(row["b"], broker, topic, group, "B", row["b_session_ms"],
               row["b_heartbeat_ms"])  # fmt: skip
    try:
        wait_for(lambda: owned(admin, group, "A") is not None, "a group of two", a, b)
        theirs = owned(admin, group, "A")
        assert theirs is not None
        now = time.monotonic()
        a.reset(now)
        b.reset(now)
        wait_for(
            lambda: set(a.read()) >= theirs and set(b.read()) >= set(
                range(PARTITIONS)) - theirs,
            "both reading their partitions", a, b,
        )  # fmt: skip
        start = time.monotonic()
        b.reset(start)
        a.process.send_signal(row["signal"])
        wait_for(lambda: set(b.read()) >= theirs, "B reading A's partitions", b)
        times = [b.read()[p] - start for p in theirs]
        return {"first_s": min(times), "all_s": max(times)}
    finally:
        a.stop()
        b.stop()


def rows(session_ms: int) -> list[dict[str, Any]]:
    remote_kill = {
        "name": f"remote kill -9 (session.timeout.ms {session_ms})",
        "a": "confluent", "b": "confluent", "signal": signal.SIGKILL,
        "session_ms": session_ms, "a_heartbeat_ms": session_ms // 10,
        "b_session_ms": session_ms, "b_heartbeat_ms": session_ms // 10,
        "floor_s": session_ms / 1000,
    }  # fmt: skip
    leave = {
        "name": f"remote leave (B: heartbeat.interval.ms {LEAVE_HEARTBEAT_MS})",
        "a": "confluent", "b": "confluent", "signal": signal.SIGTERM,
        "session_ms": session_ms, "a_heartbeat_ms": session_ms // 10,
        "b_session_ms": session_ms, "b_heartbeat_ms": LEAVE_HEARTBEAT_MS,
        "target_s": TARGET_LEAVE_S,
    }  # fmt: skip
    leave_local_b = {
        **leave, "name": "remote leave, local B (long-poll heartbeat)",
        "b": "local", "b_session_ms": LOCAL_SESSION_MS, "b_heartbeat_ms": 1000,
    }  # fmt: skip
    local_kill = {
        "name": "local kill -9 (baseline: connection closes)",
        "a": "local", "b": "local", "signal": signal.SIGKILL,
        "session_ms": LOCAL_SESSION_MS, "a_heartbeat_ms": 1000,
        "b_session_ms": LOCAL_SESSION_MS, "b_heartbeat_ms": 1000,
    }  # fmt: skip
    return [remote_kill, leave, leave_local_b, local_kill]


def produce_until(broker: EmbeddedBroker, topic: str, stop: threading.Event) -> None:
    with Producer(broker.data_dir, linger_ms=0) as producer:
        while not stop.wait(TICK_S):
            for p in range(PARTITIONS):
                producer.send(topic, b"x", partition=p)
            producer.flush()


def run(trials: int, session_ms: int) -> list[dict[str, Any]]:
    results = []
    with (
        EmbeddedBroker(shm_prefix=SHM_PREFIX, gateway=True) as broker,
        Admin(broker.data_dir) as admin,
    ):
        topic = "failover"
        admin.create_topic(topic, PARTITIONS)
        stop = threading.Event()
        load = threading.Thread(target=produce_until, args=(broker, topic, stop))
        load.start()
        try:
            for row in rows(session_ms):
                times = [trial(broker, admin, topic, row) for _ in range(trials)]
                out = {k: v for k, v in row.items() if k != "signal"}
                out["signal"] = signal.Signals(row["signal"]).name
                out["trials"] = times
                for key in ("first_s", "all_s"):
                    values = [t[key] for t in times]
                    out[key] = {"p50": statistics.median(values),
                                "min": min(values), "max": max(values)}  # fmt: skip
                results.append(out)
        finally:
            stop.set()
            load.join()
    return results


def report(result: dict[str, Any]) -> None:
    h = result["header"]
    print(f"bench_group_failover  {h['date']}  commit {h['commit']}  {h['cpu']}, "
          f"{h['cores']} cores, {h['python']}, cpu busy before "
          f"{h['cpu_busy_before']:.0%}")  # fmt: skip
    trials = len(result["rows"][0]["trials"])
    print(f"{trials} trials a row; ms from the signal to B's first record of A's "
          f"first / every partition (p50, min-max)\n")  # fmt: skip
    for row in result["rows"]:
        first, every = row["first_s"], row["all_s"]
        verdict = ""
        if "target_s" in row:
            ok = every["max"] <= row["target_s"]
            verdict = f"  target <= {row['target_s'] * 1000:.0f} ms: " + (
                "PASS" if ok else "MISS")  # fmt: skip
        if "floor_s" in row:
            verdict = (f"  = session.timeout.ms + "
                       f"{(every['p50'] - row['floor_s']) * 1000:.0f} ms")  # fmt: skip
        print(f"  {row['name']:<48} {first['p50'] * 1000:8.1f} / "
              f"{every['p50'] * 1000:8.1f} ms  ({every['min'] * 1000:.1f}-"
              f"{every['max'] * 1000:.1f}){verdict}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--member"]:
        kind, data_dir, bootstrap, topic, group, name, session, heartbeat = argv[1:]
        member(kind, data_dir, bootstrap, topic, group, name, int(session),
               int(heartbeat))  # fmt: skip
        return 0
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--trials", type=int, help="trials a row (default 3; smoke 1)")
    ap.add_argument("--session-timeout-ms", type=int,
                    help="the killed remote member's (default 6000, Kafka's "
                         "group.min.session.timeout.ms; smoke 1000)")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument("--smoke", action="store_true",
                    help="one short trial a row: checks it still runs")  # fmt: skip
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    trials = args.trials or (1 if args.smoke else 3)
    session_ms = args.session_timeout_ms or (1000 if args.smoke else 6000)
    result: dict[str, Any] = {"header": header(), "smoke": args.smoke}
    try:
        result["rows"] = run(trials, session_ms)
    finally:
        leaked = list(shm.list_names(SHM_PREFIX))
        for name in leaked:
            shm.unlink(name)
        result["leaked_shm"] = leaked
    publish("bench_group_failover", result, smoke=args.smoke, as_json=args.json,
            print_report=lambda: report(result))  # fmt: skip
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
