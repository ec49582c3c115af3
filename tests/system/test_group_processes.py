"""Consumer groups with real processes: members (tests/system/group_worker.py) that
log what they own in each generation and every record they get, while producer
processes write; members killed, closed and started under load; the supervisor
killed under a running group; and requests the coordinator must refuse."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shmbroker import (
    Admin,
    Consumer,
    OffsetOutOfRange,
    Producer,
    TopicPartition,
    errors,
)
from shmbroker import protocol as proto
from shmbroker.client.assignors import Subscription
from shmbroker.client.connection import Connection
from shmbroker.client.group import encode_subscription
from tests.conftest import wait_until

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
TOPIC = "events"
KILL_BOUND_S = 10.0  # loose: the benchmark measures the real failover time


# ---- processes ----------------------------------------------------------------------


class Fleet:
    """Worker processes of one test; every one is killed and waited for at the end."""

    def __init__(self, broker, tmp_path: Path) -> None:
        self.data_dir = str(broker.data_dir)
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: dict[str, Path] = {}  # member name -> its log
        self.killed: set[str] = set()

    def spawn(self, *args: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.system.group_worker", *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def producer(self, pid: int, count: int, rate: float = 0) -> subprocess.Popen[str]:
        return self.spawn("produce", self.data_dir, TOPIC, pid, count, "--rate", rate)

    def member(self, name: str, group: str, *opts: str) -> subprocess.Popen[str]:
        self.logs[name] = self.tmp_path / f"{name}.log"
        return self.spawn(
            "consume", self.data_dir, TOPIC, group, self.logs[name],
            "--client-id", name, *opts,
        )  # fmt: skip

    def settle(
        self, condition: Callable[[], object], timeout: float, what: str
    ) -> None:
        """wait_until, checking every 20 ms (each check asks the supervisor, and the
        workers keep the cores busy); fails at once, with its stderr, if a worker
        died."""

        def paced() -> object:
            for p in self.procs:
                if p.returncode is None and p.poll() not in (None, 0):
                    pytest.fail(
                        f"waiting for {what}: worker {p.args[3:5]} exited "
                        f"{p.returncode}: {p.communicate()[1]}"
                    )
            if condition():
                return True
            time.sleep(0.02)
            return False

        wait_until(paced, timeout, what)

    def close(self, proc: subprocess.Popen[str]) -> dict:
        """SIGTERM: the member commits, leaves and exits 0."""
        proc.send_signal(signal.SIGTERM)
        return finish(proc, 30)

    def kill(self, name: str, proc: subprocess.Popen[str]) -> int:
        """SIGKILL; returns CLOCK_MONOTONIC ns just before it."""
        self.killed.add(name)
        t = time.monotonic_ns()
        proc.kill()
        proc.wait(10)
        return t

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.communicate()


@contextlib.contextmanager
def fleet(broker, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(broker, tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


def finish(proc: subprocess.Popen[str], timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


# ---- what the group and the logs say ------------------------------------------------


def high_watermarks(admin: Admin) -> dict[int, int]:
    (described,) = admin.describe_topics([TOPIC])
    return {p.partition: p.high_watermark for p in described.partitions}


def all_committed(admin: Admin, *groups: str) -> Callable[[], bool]:
    """True once every group has committed the high watermark of every partition."""

    def check() -> bool:
        ends = high_watermarks(admin)
        for group in groups:
            committed = admin.list_group_offsets(group)
            got = {tp.partition: o.offset for tp, o in committed.items()}
            if got != ends:
                return False
        return True

    return check


def stable(admin: Admin, group: str, members: int, partitions: int) -> Callable:
    """True once the group is Stable with this many members, each owning some of
    the partitions, all of them owned."""

    def check() -> bool:
        try:
            info = admin.describe_group(group)
        except errors.GroupIdNotFound:  # no member has joined yet
            return False
        owned = [tp.partition for m in info.members for tp in m.assignment]
        return (
            info.state == "Stable"
            and len(info.members) == members
            and all(m.assignment for m in info.members)
            and sorted(owned) == list(range(partitions))
        )

    return check


@dataclass
class Run:
    """A consecutive run of one partition's records, as one member got them."""

    worker: str
    key: tuple[int, int]  # (incarnation, generation)
    member: str
    partition: int
    first: int
    last: int
    t_ns: int


@dataclass
class Logs:
    """Every member log of a test, merged."""

    owned: dict[tuple[int, int], dict[str, set[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    runs: list[Run] = field(default_factory=list)
    starts: list[tuple[str, tuple[int, int], int, int]] = field(default_factory=list)
    commits: dict[str, dict[int, int]] = field(default_factory=dict)  # last per p

    @classmethod
    def read(cls, paths: dict[str, Path], torn_ok: set[str]) -> Logs:
        """torn_ok: workers killed with -9, whose last line may be cut short."""
        logs = cls()
        for worker, path in paths.items():
            text = path.read_text() if path.exists() else ""
            lines = text.split("\n")
            if lines[-1]:  # cut short: only a kill -9 may do that
                assert worker in torn_ok, f"{worker}: torn last line {lines[-1]!r}"
            commits = logs.commits.setdefault(worker, {})
            for line in lines[:-1]:
                kind, *f = line.split()
                if kind == "C":
                    commits[int(f[0])] = int(f[1])
                    continue
                if kind == "E":
                    continue
                key = (int(f[0]), int(f[1]))
                if kind == "O":
                    if f[3] != "-":
                        logs.owned[key][f[2]].update(map(int, f[3].split(",")))
                    else:
                        logs.owned[key].setdefault(f[2], set())  # owns nothing
                elif kind == "P":
                    logs.starts.append((worker, key, int(f[3]), int(f[4])))
                elif kind == "R":
                    logs.runs.append(Run(worker, key, f[2], *map(int, f[3:7])))
                else:
                    pytest.fail(f"{worker}: unknown log line {line!r}")
        return logs

    def check_one_owner_per_generation(self) -> int:
        """No partition owned by two members in one generation, and every record
        consumed by an owner of its partition in that generation. Returns the
        number of generations seen."""
        for key, members in self.owned.items():
            seen: dict[int, str] = {}
            for member, parts in members.items():
                for p in parts:
                    assert p not in seen, (
                        f"generation {key}: partition {p} owned by {seen[p]} and "
                        f"{member}"
                    )
                    seen[p] = member
        for run in self.runs:
            assert run.partition in self.owned[run.key][run.member], (
                f"{run.worker} consumed partition {run.partition} in generation "
                f"{run.key} without owning it"
            )
        return len(self.owned)

    def deliveries(self, ends: dict[int, int]) -> dict[int, list[int]]:
        """Per partition, how many times each offset below its end was delivered."""
        diff = {p: [0] * (end + 1) for p, end in ends.items()}
        for run in self.runs:
            assert run.last < ends[run.partition], f"{run} beyond the log end {ends}"
            diff[run.partition][run.first] += 1
            diff[run.partition][run.last + 1] -= 1
        counts = {}
        for p, d in diff.items():
            total, out = 0, []
            for x in d[:-1]:
                total += x
                out.append(total)
            counts[p] = out
        return counts

    def check_every_record_once(self, ends: dict[int, int]) -> None:
        for p, counts in self.deliveries(ends).items():
            wrong = [(o, n) for o, n in enumerate(counts) if n != 1]
            assert not wrong, f"partition {p}: (offset, deliveries) {wrong[:10]}"

    def check_no_loss(self, ends: dict[int, int]) -> dict[int, list[int]]:
        """Every record delivered at least once; returns the offsets delivered more
        than once, per partition."""
        dups = {}
        for p, counts in self.deliveries(ends).items():
            lost = [o for o, n in enumerate(counts) if n == 0]
            assert not lost, f"partition {p}: offsets never delivered {lost[:10]}"
            dups[p] = [o for o, n in enumerate(counts) if n > 1]
        return dups

    def check_duplicates_only_from_killed_tails(
        self, dups: dict[int, list[int]], killed: set[str]
    ) -> int:
        """A record delivered twice was first delivered by a member killed with -9,
        at or after the last offset that member committed for the partition, and
        every delivery but the last was by such a member. Returns the count."""
        n = 0
        for p, offsets in dups.items():
            runs = [r for r in self.runs if r.partition == p]
            for o in offsets:
                n += 1
                # in generation order (one incarnation: generations only grow)
                got = sorted((r for r in runs if r.first <= o <= r.last), key=_key)
                by = [(r.worker, r.key) for r in got]
                for r in got[:-1]:
                    committed = self.commits.get(r.worker, {}).get(p, 0)
                    what = f"partition {p} offset {o}, delivered by {by}"
                    assert r.worker in killed, f"{what}: {r.worker} was not killed"
                    assert o >= committed, f"{what}: {r.worker} committed {committed}"
        return n


def _key(run: Run) -> tuple[int, int]:
    return run.key


# ---- tests --------------------------------------------------------------------------


def test_every_record_reaches_exactly_one_member_and_every_group(broker, tmp_path):
    """If four member processes of group "a" and two of group "b" subscribe to an
    8-partition topic while two producer processes write 200k records, then within
    each group every record is delivered exactly once, no partition has two owners
    in any generation, and group "a" ends with two partitions per member."""
    producers, per_producer = 2, 100_000
    with Admin(broker.data_dir) as admin, fleet(broker, tmp_path) as f:
        admin.create_topic(TOPIC, 8)
        a = [f.member(f"a{i}", "a") for i in range(4)]
        b = [f.member(f"b{i}", "b") for i in range(2)]
        writers = [f.producer(i, per_producer, rate=50_000) for i in range(producers)]
        for w in writers:
            assert finish(w, 60) == {"sent": per_producer}
        f.settle(all_committed(admin, "a", "b"), 60, "both groups at the log end")
        f.settle(stable(admin, "a", 4, 8), 30, "group a stable with four members")
        assert {len(m.assignment) for m in admin.describe_group("a").members} == {2}
        ends = high_watermarks(admin)
        counts = [f.close(p)["records"] for p in a + b]
    assert sum(ends.values()) == producers * per_producer
    assert sum(counts[:4]) == sum(counts[4:]) == producers * per_producer
    for group in ("a", "b"):
        logs = Logs.read({n: p for n, p in f.logs.items() if n[0] == group}, set())
        assert logs.check_one_owner_per_generation() >= 1
        logs.check_every_record_once(ends)


def test_a_killed_members_partitions_resume_from_its_last_commit(broker, tmp_path):
    """If one of three members is killed with -9 while records flow, then its
    partitions move to the others, who resume from its last committed offsets
    within KILL_BOUND_S: no record is lost, and the only records delivered twice
    are those it consumed after its last commit."""
    with Admin(broker.data_dir) as admin, fleet(broker, tmp_path) as f:
        admin.create_topic(TOPIC, 6)
        members = {
            f"m{i}": f.member(f"m{i}", "g", "--commit", "manual") for i in range(3)
        }
        writer = f.producer(0, 60_000, rate=15_000)
        f.settle(stable(admin, "g", 3, 6), 30, "three members stable")

        def well_under_way() -> bool:
            committed = admin.list_group_offsets("g").values()
            return len(committed) == 6 and min(o.offset for o in committed) >= 1000

        f.settle(well_under_way, 30, "1000 records of each partition committed")
        info = admin.describe_group("g")
        victim = next(m for m in info.members if m.client_id == "m0")
        moved = {tp.partition for tp in victim.assignment}
        t_kill = f.kill("m0", members.pop("m0"))
        f.settle(stable(admin, "g", 2, 6), KILL_BOUND_S, "the two survivors stable")
        assert finish(writer, 60) == {"sent": 60_000}
        f.settle(all_committed(admin, "g"), 60, "the group at the log end")
        ends = high_watermarks(admin)
        for proc in members.values():
            f.close(proc)
    logs = Logs.read(f.logs, torn_ok={"m0"})
    logs.check_one_owner_per_generation()
    dups = logs.check_no_loss(ends)
    logs.check_duplicates_only_from_killed_tails(dups, {"m0"})
    last_generation = max(k for k, ms in logs.owned.items() for m in ms if "m0-" in m)
    for p in range(6):
        if p not in moved:
            assert dups[p] == [], f"partition {p} was not m0's"
            continue
        # the new owner starts at m0's last commit (it may have committed once more
        # than it logged), and within what m0 consumed: nothing is skipped
        worker, key, _, start = min(
            (s for s in logs.starts if s[2] == p and s[1] > last_generation),
            key=lambda s: s[1],
        )
        consumed = max(
            r.last + 1 for r in logs.runs if r.worker == "m0" and r.partition == p
        )
        assert logs.commits["m0"][p] <= start <= consumed, f"partition {p}"
        assert dups[p] == list(range(start, consumed)), f"partition {p}"
        first = min(
            r.t_ns for r in logs.runs if r.partition == p and r.key == key
            and r.worker == worker
        )  # fmt: skip
        assert (first - t_kill) / 1e9 < KILL_BOUND_S, f"partition {p}"


def test_members_joining_and_leaving_under_load_lose_nothing(broker, tmp_path):
    """If, for ten seconds while a producer writes, member processes keep joining
    a group of two and leaving it (every second one with close(), the others with
    kill -9), then no partition has two owners in any generation, no record is
    lost, and the only records delivered twice are the killed members' uncommitted
    tails."""
    rate, seconds = 8_000, 10
    with Admin(broker.data_dir) as admin, fleet(broker, tmp_path) as f:
        admin.create_topic(TOPIC, 8)
        base = [f.member(f"base{i}", "g", "--commit", "manual") for i in range(2)]
        writer = f.producer(0, rate * seconds, rate=rate)
        live: list[tuple[str, subprocess.Popen[str]]] = []
        rounds = closed = 0
        while writer.poll() is None:
            name = f"churn{rounds}"
            live.append((name, f.member(name, "g", "--commit", "manual")))
            rounds += 1
            log = f.logs[name]

            def owns_partitions(log: Path = log) -> bool:
                return log.exists() and any(
                    line.startswith("O ") and not line.endswith(" -")
                    for line in log.read_text().splitlines()
                )

            f.settle(owns_partitions, 30, f"{name} owning partitions")
            if len(live) >= 2:  # keep one or two churners besides the base
                old, proc = live.pop(0)
                if rounds % 2:
                    f.close(proc)
                    closed += 1
                else:
                    f.kill(old, proc)
        assert finish(writer, 10) == {"sent": rate * seconds}
        for _, proc in live:
            f.close(proc)
            closed += 1
        f.settle(all_committed(admin, "g"), 60, "the group at the log end")
        ends = high_watermarks(admin)
        for proc in base:
            f.close(proc)
    assert rounds >= 6, "members started"
    assert len(f.killed) >= 2, "members killed"
    assert closed >= 3, "members closed"
    logs = Logs.read(f.logs, torn_ok=f.killed)
    assert logs.check_one_owner_per_generation() >= rounds
    dups = logs.check_no_loss(ends)
    logs.check_duplicates_only_from_killed_tails(dups, f.killed)


def test_a_group_reforms_after_the_supervisor_is_killed(broker, tmp_path):
    """If the supervisor is killed with -9 and started again while a group of two
    consumes, then the members rejoin by themselves, the committed offsets are
    those from before the kill (or later ones), and consumption goes on with
    nothing lost and nothing committed before the kill delivered again."""
    with Admin(broker.data_dir) as admin, fleet(broker, tmp_path) as f:
        admin.create_topic(TOPIC, 4)
        members = [  # one of each commit mode: both must ride out the restart
            f.member("m0", "g", "--commit", "manual"),
            f.member("m1", "g", "--commit", "auto"),
        ]
        writer = f.producer(0, 40_000, rate=10_000)
        f.settle(stable(admin, "g", 2, 4), 30, "two members stable")

        def under_way() -> bool:
            committed = admin.list_group_offsets("g").values()
            return len(committed) == 4 and min(o.offset for o in committed) >= 500

        f.settle(under_way, 30, "500 records of each partition committed")
        before = admin.list_group_offsets("g")
        broker.kill()
        broker.start()
        after = admin.list_group_offsets("g")
        assert after.keys() == before.keys()
        for tp, o in before.items():
            assert after[tp].offset >= o.offset, tp
        f.settle(stable(admin, "g", 2, 4), 30, "the two members stable again")
        assert finish(writer, 60) == {"sent": 40_000}
        f.settle(all_committed(admin, "g"), 60, "the group at the log end")
        ends = high_watermarks(admin)
        for proc in members:
            f.close(proc)
    logs = Logs.read(f.logs, torn_ok=set())
    incarnations = {key[0] for key in logs.owned}
    assert len(incarnations) == 2, incarnations
    logs.check_one_owner_per_generation()
    dups = logs.check_no_loss(ends)
    for p, offsets in dups.items():
        committed = before[TopicPartition(TOPIC, p)].offset
        assert all(o >= committed for o in offsets), f"partition {p}: {offsets[:5]}"


def polling(consumer: Consumer, condition: Callable[[], object], what: str) -> None:
    """wait_until condition, the consumer polling meanwhile (its rebalances run in
    its poll)."""
    wait_until(lambda: (consumer.poll_batch(timeout=0.01), condition())[1], 10, what)


def test_bad_group_requests_are_refused_with_kafkas_errors(broker):
    """If a client asks for what the coordinator must refuse, then it gets Kafka's
    error for it, and the committed offsets stay as they were: an unknown group
    (GroupIdNotFound), a commit beyond the log end (OffsetOutOfRange), a negative
    offset (InvalidArgument), offsets altered or a group deleted while it has a
    live member (GroupNotEmpty), and a commit from a generation the group has left
    behind, sent raw on the control socket (IllegalGeneration)."""
    tp = TopicPartition(TOPIC, 0)
    with Admin(broker.data_dir) as admin, Producer(broker.data_dir) as producer:
        admin.create_topic(TOPIC, 1)
        producer.send_batch(TOPIC, [b"x"] * 10, partition=0)
        with pytest.raises(errors.GroupIdNotFound, match="no group 'nope'"):
            admin.describe_group("nope")

        with Consumer(broker.data_dir, group_id="manual") as manual:
            manual.assign([tp])
            manual.commit({tp: 10})
            with pytest.raises(OffsetOutOfRange, match="ends at 10"):
                manual.commit({tp: 11})
            with pytest.raises(errors.InvalidArgument, match=">= 0"):
                manual.commit({tp: -1})
        with pytest.raises(errors.InvalidArgument, match=">= 0"):
            admin.alter_group_offsets("manual", {tp: -1})
        with pytest.raises(OffsetOutOfRange, match="ends at 10"):
            admin.alter_group_offsets("manual", {tp: 11})
        assert admin.list_group_offsets("manual")[tp].offset == 10

        member = Consumer(
            broker.data_dir,
            group_id="live",
            subscribe=[TOPIC],
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        raw = Connection(broker.data_dir, client_id="raw")
        try:
            polling(member, member.assignment, "the member's assignment")
            member.commit({tp: 3})
            with pytest.raises(errors.GroupNotEmpty, match="live members"):
                admin.alter_group_offsets("live", {tp: 0})
            with pytest.raises(errors.GroupNotEmpty, match="live members"):
                admin.delete_group("live")
            with pytest.raises(OffsetOutOfRange, match="ends at 10"):
                member.commit({tp: 11})
            old = admin.describe_group("live")
            (member_id,) = [m.member_id for m in old.members]

            # a second member joins raw; the first rejoins in its poll: generation+1
            subscription = encode_subscription(Subscription([TOPIC], [], -1))
            join = proto.JoinGroup(
                "live", "", "consumer", [("range", subscription)], 30_000, 30_000
            )
            with ThreadPoolExecutor(1) as pool:
                joined = pool.submit(raw.request, join, proto.JoinResult, 30)
                polling(member, joined.done, "the raw member's join")
                result = joined.result()
                sync = proto.SyncGroup("live", result.generation, result.member_id)
                raw.request(sync, proto.SyncResult, 30)
            assert result.generation == old.generation + 1
            for who in (member_id, result.member_id):
                stale = proto.OffsetCommit(
                    "live", old.generation, who, [proto.CommittedOffset(TOPIC, 0, 5)]
                )
                with pytest.raises(errors.IllegalGeneration, match="generation"):
                    raw.request(stale, proto.Done)
            assert admin.list_group_offsets("live")[tp].offset == 3
        finally:
            raw.close()
            member.close()


def test_members_rejoining_at_once_never_wait_for_a_session_timeout(broker):
    """If eight members (raw connections, one thread each) rejoin as soon as each
    join returns, twenty times, then every join returns within seconds: a join the
    last phase answered is not lost when the next rebalance starts before its
    thread took the answer (that member was left waiting, counted as not joined,
    until session.timeout.ms removed it)."""
    members, rounds = 8, 20
    subscription = encode_subscription(Subscription([TOPIC], [], -1))
    with Admin(broker.data_dir) as admin:
        admin.create_topic(TOPIC, members)
    conns = [Connection(broker.data_dir, client_id=f"m{i}") for i in range(members)]
    generations: list[list[int]] = [[] for _ in range(members)]

    def rejoin(i: int) -> None:
        member_id = ""
        for _ in range(rounds):
            join = proto.JoinGroup(
                "storm", member_id, "consumer", [("range", subscription)],
                30_000, 30_000,
            )  # fmt: skip
            result = conns[i].request(join, proto.JoinResult, 60)
            member_id = result.member_id
            generations[i].append(result.generation)
        conns[i].request(proto.LeaveGroup("storm", member_id), proto.Done)

    try:
        with ThreadPoolExecutor(members) as pool:
            try:
                done = [pool.submit(rejoin, i) for i in range(members)]
                wait_until(
                    lambda: all(d.done() for d in done), 10, "every member's joins"
                )
                for d in done:
                    d.result()
            finally:
                for conn in conns:
                    conn.abort()  # a join still waiting ends now
    finally:
        for conn in conns:
            conn.close()
    for gens in generations:  # one phase after another, none skipped
        assert gens == sorted(set(gens)), gens
    assert generations[0][-1] >= rounds
