"""Consumer groups: how soon a killed member's partitions are read again, what group
membership costs a consumer's throughput, and what one commit costs.

A real supervisor runs (`EmbeddedBroker` on a temp dir, under a shm prefix of this
run's own); the members are processes forked from this one, each with its own
`Consumer`. Library defaults throughout (range assignor, eager rebalancing, auto
commit every 5 s, heartbeat 3 s, max_poll_records 500), except
auto_offset_reset="earliest".

Measured:
  1. failover: a 4-partition topic, a producer process appending one record to each
     partition every 1 ms, and a group of two members. Per trial a fresh member A
     joins (the group rebalances to 2+2), consumes, and is SIGKILLed; the time is
     from just before the kill (CLOCK_MONOTONIC, this process) to the survivor's
     first poll that returns a record of each of A's partitions (its clock, the
     same clock). Records carry their send time. Shown: the first of A's
     partitions, and all of them (the row judged), p50 and max over --trials; where
     the time goes, from the survivor's own stamps: the kill until its on_revoke
     runs (the supervisor sees A's control connection close, rebalances, and wakes
     the survivor's long-poll heartbeat; its poll notices within GROUP_WAIT and
     commits before revoking), until on_assign (join, leader-side assignment,
     sync, committed offsets, opening the partitions), until the record; and how
     long before the kill the first record read again was sent (what A read since
     its last auto-commit is delivered twice: A lives ~10 ms per trial here).
  2. throughput: 8 consumer processes over a 16-partition topic filled beforehand
     (--records-per-partition, 100 B values), as one group (2 partitions each by
     the range assignor), next to the same 8 processes with `assign()` of 2
     partitions each and no group. The clock starts when every member holds its
     final assignment (paused until then) and runs until the last one has read its
     partitions to the end (a member that is done stays in the group until all
     are: one leaving would make the others rebalance); records/s = all records /
     that window. Median of --repeat runs, alternating the modes; a row during
     which other processes used > 10% of the cores is marked '*'.
  3. commit latency: `Consumer.commit({tp: offset})` of one partition by a group
     member, --commits times, each timed alone (rows measured together take
     turns, 1/10 of the calls at a time); next to what it is made of: the same
     OffsetCommit on a raw `Connection` (no Consumer); the cheapest control request
     (`Metadata([])`: the control socket and the supervisor's dispatch); a
     ping-pong of the same frames between two processes over a socketpair, with
     the control socket's idle strategy (the floor of any request/response); and,
     in this process with no socket, a Supervisor answering the OffsetCommit
     (`Supervisor.handle`), `GroupCoordinator.commit` (its checks, then the store),
     and the two parts of that: `Ring.stat()` (the high watermark a commit is
     checked against) and `OffsetStore.commit` (one frame, one write()).

Left out: fsync of the offsets (the store fsyncs on a timer), session-timeout
failover (a killed local member's control connection closes, so the supervisor
knows at once; a hung member is found after session.timeout.ms, 45 s by default,
as in Kafka), cooperative rebalancing, process start-up (members are forked before
a trial), and consumers that do work per record. Raw results go to
benchmarks/results/ (git-ignored); `--json` prints them instead of the report.

    .venv/bin/python benchmarks/bench_groups.py            # full run, ~15 s on 2 cores
    .venv/bin/python benchmarks/bench_groups.py --smoke    # ~5 s (CI)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_ring import CLOCK, header
from machine import others_cpu_seconds, publish

from shmbroker import errors, protocol, shm
from shmbroker.broker.control import ControlConnection
from shmbroker.broker.offsets import OffsetAndMetadata
from shmbroker.broker.supervisor import Supervisor
from shmbroker.client.admin import Admin
from shmbroker.client.connection import Connection
from shmbroker.client.consumer import Consumer
from shmbroker.client.producer import Producer
from shmbroker.config import BrokerConfig
from shmbroker.embedded import EmbeddedBroker
from shmbroker.records import TopicPartition

ROOT = Path(__file__).resolve().parent.parent
SHM_PREFIX = f"shmb.bench.{os.getpid()}."  # this run's own: checked for leaks at exit
STALL_S = 20.0  # a member that sees nothing this long reports the run as hung
FAILOVER_PARTITIONS = 4
TICK_S = 0.001  # the failover producer appends a record to every partition this often
MEMBERS, PARTITIONS = 8, 16  # throughput
VALUE = b"v" * 100
STAMP = struct.Struct("<q")  # failover records start with their send time
OTHER_CPU_WARN = 0.10  # share of the cores other processes used during a run

# Targets, checked below and printed PASS/MISS.
TARGET_FAILOVER_S = 0.100  # kill -9 -> every partition of the member read again
TARGET_GROUP_VS_ASSIGN = 0.80  # group throughput / manual assignment throughput
TARGET_COMMIT_P50_NS = 50_000


# ---- process plumbing ---------------------------------------------------------------


class Children:
    """Processes forked for one section, each with a pipe to report on (its own: a
    process killed while writing to a shared Queue would leave its lock held);
    every one is killed and joined on exit."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.procs: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        """Runs target(*args, out); the process's `reader` receives what it sends."""
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child, args=(target, *args, writer))
        proc.daemon = True
        proc.start()
        writer.close()  # ours: the child's end closing is how its death shows
        proc.reader = reader
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(10)
            p.reader.close()


def _child(target: Callable[..., None], *args: Any) -> None:
    """Child entry: run target; a failure goes to the parent on its pipe."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        target(*args)
    except BaseException:
        args[-1].send(("error", os.getpid(), traceback.format_exc()))


def _expect(procs: list[Any], deadline: float, what: str) -> tuple[Any, ...]:
    """The next message from one of procs; fails on a child's error or death, or
    at deadline."""
    left = deadline - time.monotonic()
    ready = mp_connection.wait([p.reader for p in procs], max(0.0, left))
    if not ready:
        raise RuntimeError(f"timed out waiting for {what}")
    reader: Any = ready[0]
    try:
        msg = reader.recv()
    except EOFError:
        raise RuntimeError(f"a child exited while waiting for {what}") from None
    if msg[0] == "error":
        raise RuntimeError(f"child {msg[1]} failed while waiting for {what}:\n{msg[2]}")
    return tuple(msg)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def _percentiles(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)

    def at(q: float) -> float:  # nearest rank
        return float(s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))])

    return {
        "samples": len(s),
        "p50_ns": at(0.50),
        "p99_ns": at(0.99),
        "p999_ns": at(0.999),
        "max_ns": float(s[-1]),
    }


# ---- 1. failover --------------------------------------------------------------------


def paced_producer(data_dir: str, topic: str, stop: Any, out: Any) -> None:
    """One record per partition per TICK_S until stop."""
    with Producer(data_dir, linger_ms=0) as producer:
        partitions = producer.partitions_for(topic)
        t = time.monotonic()
        while not stop.is_set():
            for p in partitions:
                stamp = STAMP.pack(CLOCK())  # when it was sent
                producer.send_batch(topic, [stamp + VALUE[STAMP.size :]], partition=p)
            t += TICK_S
            ahead = t - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            else:
                t = time.monotonic()  # fell behind: no burst to catch up


def failover_member(data_dir: str, topic: str, group: str, name: str, out: Any) -> None:
    """Reports ("revoke", name, t), ("assign", name, t) and, after each
    assignment, ("first", name, partition, t) on the first record of each."""
    waiting: set[int] = set()

    def on_revoke(partitions: list[TopicPartition]) -> None:
        out.send(("revoke", name, CLOCK()))

    def on_assign(partitions: list[TopicPartition]) -> None:
        out.send(("assign", name, CLOCK()))
        waiting.update(tp.partition for tp in partitions)

    consumer = Consumer(
        data_dir, client_id=name, group_id=group, auto_offset_reset="earliest"
    )
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while True:
        records = consumer.poll_batch(timeout=0.1)
        if records and waiting:
            now = CLOCK()
            for r in records:
                if r.partition in waiting:
                    (sent,) = STAMP.unpack_from(r.value or b"")
                    out.send(("first", name, r.partition, now, sent))
                    waiting.discard(r.partition)


def failover(broker: EmbeddedBroker, admin: Admin, ctx: Any, trials: int) -> dict:
    topic, group = f"failover-{uuid.uuid4().hex[:8]}", "failover"
    admin.create_topic(topic, FAILOVER_PARTITIONS)
    data_dir = str(broker.data_dir)
    stop = ctx.Event()
    rows = []
    with Children(ctx) as children:
        children.start(paced_producer, data_dir, topic, stop)
        survivor = children.start(failover_member, data_dir, topic, group, "survivor")
        for trial in range(trials):
            name = f"victim{trial}"
            victim = children.start(failover_member, data_dir, topic, group, name)

            def both_consuming() -> bool:
                try:
                    info = admin.describe_group(group)
                except errors.GroupIdNotFound:  # nobody joined yet
                    return False
                return (
                    info.state == "Stable"
                    and len(info.members) == 2
                    and all(len(m.assignment) == 2 for m in info.members)
                )

            _wait_for(both_consuming, 30, f"trial {trial}: the group stable with 2")
            info = admin.describe_group(group)
            (mine,) = [m for m in info.members if m.client_id == name]
            moved = {tp.partition for tp in mine.assignment}
            # the survivor's and the victim's first records of this generation
            deadline = time.monotonic() + 30
            firsts = {"survivor": 0, name: 0}  # since the member's last assignment
            while min(firsts.values()) < 2:
                msg = _expect(
                    [survivor, victim], deadline, f"trial {trial}: both reading"
                )
                if msg[0] == "first":
                    firsts[msg[1]] += 1
                elif msg[0] in ("revoke", "assign"):
                    firsts[msg[1]] = 0
            t_kill = CLOCK()
            os.kill(victim.pid, signal.SIGKILL)
            victim.join()
            got: dict[int, int] = {}
            sent: dict[int, int] = {}
            stamps: dict[str, int] = {}
            deadline = time.monotonic() + STALL_S
            while len(got) < len(moved):
                msg = _expect([survivor], deadline, f"trial {trial}: the survivor")
                if msg[0] in ("revoke", "assign"):
                    stamps.setdefault(msg[0], msg[2])
                elif msg[2] in moved and "assign" in stamps:
                    got[msg[2]] = msg[3]
                    sent[msg[2]] = msg[4]
            rows.append(
                {
                    "first_ns": min(got.values()) - t_kill,
                    "all_ns": max(got.values()) - t_kill,
                    "to_revoke_ns": stamps["revoke"] - t_kill,
                    "revoke_to_assign_ns": stamps["assign"] - stamps["revoke"],
                    "assign_to_all_ns": max(got.values()) - stamps["assign"],
                    # how far back the new owner started: the victim's records
                    # since its last auto-commit are delivered again
                    "replayed_ns": t_kill - min(sent.values()),
                }
            )
        stop.set()
    return {
        "trials": rows,
        **{
            f"{k}_{stat}": fn([r[k] for r in rows])
            for k in rows[0]
            for stat, fn in (("p50", statistics.median), ("max", max))
        },
    }


# ---- 2. throughput ------------------------------------------------------------------


def throughput_member(
    data_dir: str,
    topic: str,
    group: str | None,
    index: int,
    status: Any,
    go: Any,
    finish: Any,
    out: Any,
) -> None:
    """Hold the final assignment, paused, until go; then read it to its end.
    status[2*index:2*index+2] = (generation, partitions held) for the parent."""
    if group is None:
        consumer = Consumer(data_dir, auto_offset_reset="earliest")
        consumer.assign([(topic, 2 * index), (topic, 2 * index + 1)])
        status[2 * index + 1] = 2
        go.wait()
    else:
        consumer = Consumer(
            data_dir,
            client_id=f"member{index}",
            group_id=group,
            auto_offset_reset="earliest",
        )

        def on_assign(partitions: list[TopicPartition]) -> None:
            if not go.is_set():
                consumer.pause(*partitions)

        consumer.subscribe([topic], on_assign=on_assign)
        member = consumer._group  # peeked at: the parent must know the generation
        assert member is not None
        while not go.is_set():
            consumer.poll_batch(timeout=0.005)
            status[2 * index] = member.generation
            status[2 * index + 1] = len(consumer.assignment())
    t0, cpu0 = CLOCK(), time.process_time()
    mine = sorted(consumer.assignment())
    consumer.resume(*mine)
    ends = consumer.end_offsets(mine)
    left = sum(ends[tp] - consumer.position(tp) for tp in mine)
    count = polls = 0
    while count < left:
        records = consumer.poll_batch(timeout=STALL_S)
        if not records:
            raise RuntimeError(f"member {index}: no record for {STALL_S}s")
        count += len(records)
        polls += 1
    t1 = CLOCK()
    out.send(("done", index, t0, t1, count, time.process_time() - cpu0, polls))
    finish.wait()  # a member leaving sooner would make the others rebalance
    consumer.close()


def throughput_run(
    broker: EmbeddedBroker, admin: Admin, ctx: Any, topic: str, mode: str
) -> dict[str, Any]:
    group = f"throughput-{uuid.uuid4().hex[:8]}" if mode == "group" else None
    go, finish = ctx.Event(), ctx.Event()
    status = ctx.Array("i", [-1, 0] * MEMBERS)
    data_dir = str(broker.data_dir)
    with Children(ctx) as children:
        members = [
            children.start(
                throughput_member, data_dir, topic, group, i, status, go, finish
            )
            for i in range(MEMBERS)
        ]

        def ready() -> bool:
            if mp_connection.wait([m.reader for m in members], 0):
                _expect(members, time.monotonic() + 1, "a member")  # its error
            held = status[1::2]
            if group is None:
                return all(n == 2 for n in held)
            try:
                info = admin.describe_group(group)
            except errors.GroupIdNotFound:  # nobody joined yet
                return False
            return (
                info.state == "Stable"
                and len(info.members) == MEMBERS
                and all(len(m.assignment) == 2 for m in info.members)
                and all(g == info.generation for g in status[::2])
                and all(n == 2 for n in held)
            )

        _wait_for(ready, 60, f"{mode}: every member holding 2 partitions")
        others0, t_go = others_cpu_seconds(), CLOCK()
        go.set()
        done = []
        deadline = time.monotonic() + STALL_S * 3
        while len(done) < MEMBERS:
            reading = [
                m for i, m in enumerate(members) if i not in {d[1] for d in done}
            ]
            done.append(_expect(reading, deadline, f"{mode}: the members reading"))
        finish.set()
        t_done = CLOCK()
        # CPU time other processes used meanwhile: they competed for our cores
        ours = {p.pid for p in children.procs} | {broker.pid}
        others = sum(
            t - others0.get(pid, 0.0)
            for pid, t in others_cpu_seconds().items()
            if pid not in ours
        )
    records = sum(d[4] for d in done)
    window = max(d[3] for d in done) - min(d[2] for d in done)
    return {
        "mode": mode,
        "records": records,
        "window_s": window / 1e9,
        "records_per_s": records / (window / 1e9),
        "member_records_per_s": [d[4] / ((d[3] - d[2]) / 1e9) for d in done],
        "other_cpu": max(0.0, others / ((t_done - t_go) / 1e9 * os.cpu_count())),
        "cpu_s": sum(d[5] for d in done),
        "polls": sum(d[6] for d in done),
    }


def throughput(
    broker: EmbeddedBroker, admin: Admin, ctx: Any, per_partition: int, repeat: int
) -> dict[str, Any]:
    topic = f"throughput-{uuid.uuid4().hex[:8]}"
    admin.create_topic(topic, PARTITIONS)
    batch = [VALUE] * 1000
    with Producer(str(broker.data_dir), linger_ms=0) as producer:
        for p in range(PARTITIONS):
            for start in range(0, per_partition, len(batch)):
                producer.send_batch(
                    topic, batch[: min(len(batch), per_partition - start)], partition=p
                )
    runs: dict[str, list[dict[str, Any]]] = {"group": [], "assign": []}
    for _ in range(repeat):
        for mode in ("assign", "group"):
            runs[mode].append(throughput_run(broker, admin, ctx, topic, mode))
    rows = {}
    for mode, rs in runs.items():
        ordered = sorted(rs, key=lambda r: r["records_per_s"])
        rows[mode] = dict(ordered[(len(ordered) - 1) // 2])
        rows[mode]["runs_records_per_s"] = [round(r["records_per_s"]) for r in rs]
    return {
        "records_per_partition": per_partition,
        **rows,
        "ratio": rows["group"]["records_per_s"] / rows["assign"]["records_per_s"],
    }


# ---- 3. commit latency --------------------------------------------------------------


def _timed(n: int, call: Callable[[int], object]) -> dict[str, float]:
    return _percentiles(_samples(n, call))


def _samples(n: int, call: Callable[[int], object]) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        call(i)
        samples.append(clock() - t0)
    return samples


def _round_robin(
    n: int, calls: dict[str, Callable[[int], object]], rounds: int = 10
) -> dict[str, dict[str, float]]:
    """n timed calls of each, in turns of n / rounds, so that a burst of noise
    hits every row alike; a warm-up turn first."""
    samples: dict[str, list[int]] = {name: [] for name in calls}
    for call in calls.values():
        _samples(min(n, 1000), call)
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name] += _samples(max(1, n // rounds), call)
    return {name: _percentiles(s) for name, s in samples.items()}


def commit_member(data_dir: str, topic: str, n: int, out: Any) -> None:
    """The rows through the supervisor, in this (forked) process: the parent must
    not run a Consumer's heartbeat thread before it forks others."""
    tp = TopicPartition(topic, 0)
    consumer = Consumer(
        data_dir,
        group_id=f"commit-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment():
        consumer.poll_batch(timeout=0.01)
        if time.monotonic() > deadline:
            raise RuntimeError("no assignment within 30 s")
    end = consumer.end_offsets([tp])[tp]
    member = consumer._group  # the same request a member sends, on a raw connection
    assert member is not None
    raw = Connection(data_dir, client_id="raw")

    def raw_commit(i: int) -> None:
        entry = protocol.CommittedOffset(topic, 0, i % (end + 1))
        request = protocol.OffsetCommit(
            member.group_id, member.generation, member.member_id, [entry]
        )
        raw.request(request, protocol.Done)

    empty = protocol.Metadata([])
    rows = _round_robin(
        n,
        {
            "Consumer.commit": lambda i: consumer.commit({tp: i % (end + 1)}),
            "Connection.request(OffsetCommit)": raw_commit,
            "Connection.request(Metadata([]))": lambda i: raw.request(
                empty, protocol.MetadataReply
            ),
        },
    )
    raw.close()
    consumer.close()
    out.send(("rows", rows))


def echo_server(sock: socket.socket, out: Any) -> None:
    sock.setblocking(False)  # as the supervisor's: spin, then poll
    while (body := protocol.receive(sock)) is not None:
        protocol.request_decoder.decode(body)
        protocol.send(sock, protocol.Done())


def socket_ping_pong(ctx: Any, n: int) -> dict[str, float]:
    """An OffsetCommit request and a Done reply, framed and encoded as on the
    control socket (non-blocking sockets, the same spin), over a socketpair to a
    process that answers at once."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with Children(ctx) as children:
        children.start(echo_server, theirs)
        theirs.close()
        ours.setblocking(False)
        entry = protocol.CommittedOffset("commits", 0, 0)

        def ping(i: int) -> None:
            protocol.send(ours, protocol.OffsetCommit("g", 1, "member-1", [entry]))
            protocol.reply_decoder.decode(protocol.receive(ours) or b"")

        _samples(min(n, 1000), ping)
        row = _timed(n, ping)
        ours.close()
    return row


def in_process(n: int) -> dict[str, dict[str, float]]:
    """The supervisor's share, without a socket or a thread hop: a Supervisor in
    this process (started last: it runs threads, and nothing is forked after it)
    answering the same OffsetCommit, and the parts of that answer."""
    rows = {}
    tp = TopicPartition("t", 0)
    prefix = f"{SHM_PREFIX}inproc."
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as tmp:
        supervisor = Supervisor(
            # no /metrics: 9644 may be a running broker's
            BrokerConfig(
                data_dir=str(Path(tmp) / "data"), shm_prefix=prefix, metrics_listener=""
            )
        )
        supervisor.start()
        try:
            supervisor.create_topic("t", 1, {}, False)
            conn = ControlConnection(socket.socket(socket.AF_UNIX), 0)
            request = protocol.OffsetCommit(
                "g", -1, "", [protocol.CommittedOffset("t", 0, 0)]
            )
            coordinator = supervisor.coordinator
            assert coordinator is not None
            ring = supervisor.logs["t", 0].ring
            offsets = {tp: OffsetAndMetadata(0, "", 0)}
            conn.sock.close()
            rows = _round_robin(
                n,
                {
                    "Supervisor.handle(OffsetCommit)": lambda i: supervisor.handle(
                        request, conn
                    ),
                    "GroupCoordinator.commit": lambda i: coordinator.commit(
                        "g", -1, "", offsets
                    ),
                    "  Ring.stat() (the high watermark)": lambda i: ring.stat(),
                    "  OffsetStore.commit": lambda i: coordinator.store.commit(
                        "g", offsets
                    ),
                },
            )
        finally:
            supervisor.stop()
            for name in shm.list_names(prefix):
                shm.unlink(name)  # a stopped supervisor leaves its rings, by design
    return rows


def commit_latency(
    broker: EmbeddedBroker, admin: Admin, ctx: Any, n: int
) -> dict[str, Any]:
    topic = f"commits-{uuid.uuid4().hex[:8]}"
    admin.create_topic(topic, 1)
    with Producer(str(broker.data_dir), linger_ms=0) as producer:
        producer.send_batch(topic, [VALUE] * 1000, partition=0)
    with Children(ctx) as children:
        member = children.start(commit_member, str(broker.data_dir), topic, n)
        deadline = time.monotonic() + 60 + n / 1000
        (_, rows) = _expect([member], deadline, "the commit rows")
    rows["socketpair ping-pong (2 processes)"] = socket_ping_pong(ctx, n)
    rows.update(in_process(n))
    return rows


# ---- report -------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def check(what: str, got: float, want: float, unit: str, higher: bool) -> None:
        out.append(
            {
                "target": what,
                "got": got,
                "want": want,
                "unit": unit,
                "pass": got >= want if higher else got <= want,
            }
        )

    f = result.get("failover")
    if f:
        for stat in ("p50", "max"):
            check(f"failover, every partition read again: {stat}",
                  f[f"all_ns_{stat}"] / 1e9, TARGET_FAILOVER_S, "s", False)  # fmt: skip
    t = result.get("throughput")
    if t:
        check("group / assign() throughput", t["ratio"], TARGET_GROUP_VS_ASSIGN, "x",
              True)  # fmt: skip
    c = result.get("commit")
    if c:
        check("Consumer.commit, 1 partition: p50", c["Consumer.commit"]["p50_ns"],
              TARGET_COMMIT_P50_NS, "ns", False)  # fmt: skip
    return out


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def print_report(result: dict[str, Any]) -> None:
    head = result["header"]
    print(
        f"bench_groups  {head['date']}  commit {head['commit']}\n"
        f"  {head['cpu']}, {head['cores_usable']}/{head['cores']} cores usable, "
        f"{head['python']}, Linux {head['kernel']}\n"
        f"  cpu busy before: {head['cpu_busy_before']:.0%}"
    )
    f = result.get("failover")
    if f:
        print(f"\n1. failover after kill -9 of a member ({len(f['trials'])} trials)")
        print(f"  {'':40} {'p50':>10} {'max':>10}")
        for key, label in (
            ("first_ns", "first of its partitions read again"),
            ("all_ns", "all of its partitions read again"),
            ("to_revoke_ns", "  kill -> survivor's on_revoke"),
            ("revoke_to_assign_ns", "  on_revoke -> on_assign"),
            ("assign_to_all_ns", "  on_assign -> last partition's record"),
            ("replayed_ns", "sent before the kill, first record again"),
        ):
            print(f"  {label:40} {_ms(f[key + '_p50']):>10} {_ms(f[key + '_max']):>10}")
    t = result.get("throughput")
    if t:
        print(
            f"\n2. throughput: {MEMBERS} consumer processes, {PARTITIONS} partitions "
            f"x {t['records_per_partition']:,} records of {len(VALUE)} B"
        )
        for mode, label in (("group", "one group"), ("assign", "assign() x2 each")):
            row = t[mode]
            runs = row["runs_records_per_s"]
            spread = f"  ({min(runs):,}..{max(runs):,})" if len(runs) > 1 else ""
            flag = " *" if row["other_cpu"] > OTHER_CPU_WARN else ""
            print(
                f"  {label:20} {row['records_per_s']:>14,.0f} records/s "
                f"in {row['window_s']:.2f} s, {row['cpu_s']:.2f} CPU-s{flag}{spread}"
            )
        print(f"  group / assign(): {t['ratio']:.2f}")
        if any(t[m]["other_cpu"] > OTHER_CPU_WARN for m in ("group", "assign")):
            print(
                f"  * other processes used > {OTHER_CPU_WARN:.0%} of the cores during "
                f"this run: rerun on a quiet machine"
            )
    c = result.get("commit")
    if c:
        print("\n3. commit latency, one partition (us)")
        print(f"  {'':40} {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>8}")
        for label, row in c.items():
            print(
                f"  {label:40} {row['p50_ns'] / 1e3:>8.1f} {row['p99_ns'] / 1e3:>8.1f}"
                f" {row['p999_ns'] / 1e3:>8.1f} {row['max_ns'] / 1e3:>8.1f}"
            )
    print("\ntargets")
    for tg in result["targets"]:
        unit = tg["unit"]
        if unit == "s":
            got, want = _ms(tg["got"] * 1e9), _ms(tg["want"] * 1e9)
        elif unit == "ns":
            got, want = f"{tg['got'] / 1e3:.1f} us", f"{tg['want'] / 1e3:.0f} us"
        else:
            got, want = f"{tg['got']:.2f}x", f"{tg['want']:.2f}x"
        cmp = ">=" if unit == "x" else "<="
        print(
            f"  {'PASS' if tg['pass'] else 'MISS'}  {tg['target']:44} {got:>10}  "
            f"(want {cmp} {want})"
        )
    if result["leaked_shm"]:
        print(
            f"\nLEAK: shared memory left behind (now removed): {result['leaked_shm']}"
        )


# ---- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--trials", type=int, help="failover trials (default 20; smoke 3)")
    ap.add_argument(
        "--records-per-partition",
        type=int,
        help="throughput: records per partition (default 100,000; smoke 2,000)",
    )
    ap.add_argument(
        "--repeat", type=int, default=5, help="throughput runs per mode; the median"
    )
    ap.add_argument(
        "--commits", type=int, help="commits timed per row (default 10,000; smoke 500)"
    )
    ap.add_argument(
        "--only", choices=("failover", "throughput", "commit"), action="append"
    )
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the benchmark still runs",
    )
    args = ap.parse_args(argv)

    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the children and the broker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("fork")
    trials = args.trials or (3 if args.smoke else 20)
    per_partition = args.records_per_partition or (2_000 if args.smoke else 100_000)
    commits = args.commits or (500 if args.smoke else 10_000)
    repeat = 1 if args.smoke else args.repeat
    only = set(args.only or ("failover", "throughput", "commit"))
    result: dict[str, Any] = {"header": header(), "smoke": args.smoke}
    try:
        with (
            EmbeddedBroker(shm_prefix=SHM_PREFIX) as broker,
            Admin(broker.data_dir) as admin,
        ):
            if "failover" in only:
                result["failover"] = failover(broker, admin, ctx, trials)
            if "throughput" in only:
                result["throughput"] = throughput(
                    broker, admin, ctx, per_partition, repeat
                )
            if "commit" in only:
                result["commit"] = commit_latency(broker, admin, ctx, commits)
    finally:
        leaked = list(shm.list_names(SHM_PREFIX))
        for name in leaked:
            shm.unlink(name)
        result["leaked_shm"] = leaked
    result["targets"] = targets(result)
    publish(
        "bench_groups",
        result,
        smoke=args.smoke,
        as_json=args.json,
        print_report=lambda: print_report(result),
    )
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
