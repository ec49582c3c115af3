"""kafkajs (Node.js, its own protocol code) against the gateway: admin, an idempotent
producer with keys and headers, offsets; the records read back by the local Consumer
where Java's partitioner puts their keys. Then kafkajs in consumer groups (issue 11):
two kafkajs members split a topic, commit, and a restart resumes from the commits; a
local Consumer and a kafkajs member share a group on kafkajs's "RoundRobinAssigner"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from shmbroker import Admin, Consumer, EmbeddedBroker, _native
from tests.conftest import wait_until
from tests.gateway.test_groups import (
    HEARTBEAT_MS,
    SESSION_MS,
    Member,
    create,
    produce,
    stable,
)

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"
CLIENT = Path(__file__).with_name("kafkajs_client.js")
MEMBER = Path(__file__).with_name("kafkajs_member.js")
NODE_ENV = {**os.environ, "NODE_PATH": str(NODE_MODULES)}


def node() -> str:
    found = shutil.which("node")
    if found is None or not (NODE_MODULES / "kafkajs").is_dir():
        pytest.fail("node or kafkajs is missing: `make test` installs them")
    return found


def kafkajs(broker: EmbeddedBroker, topic: str, count: int) -> dict:
    result = subprocess.run(
        [node(), str(CLIENT), broker.bootstrap_servers, topic, str(count)],
        env=NODE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kafkajs failed: {result.stderr}"
    return json.loads(result.stdout)


def test_kafkajs_admin_and_idempotent_producer(
    broker: EmbeddedBroker, topic: str
) -> None:
    count = 300
    out = kafkajs(broker, topic, count)
    assert out["created"] is True
    assert out["listed"] is True
    with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as local:
        local.assign([(topic, p) for p in range(3)])
        records = []
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            records += local.poll_batch(1000, timeout=1)
    assert len(records) == count
    for record in records:
        i = int(record.value[1:])
        assert record.key == b"k%d" % i
        assert record.headers == (("n", b"%d" % i),)
        # kafkajs's default partitioner is Java's murmur2, as ours
        assert record.partition == _native.partition_for_key(record.key, 3)
    per_partition = {p: sorted(r.offset for r in records if r.partition == p)
                     for p in range(3)}  # fmt: skip
    assert all(offsets == list(range(len(offsets)))
               for offsets in per_partition.values())  # fmt: skip
    assert out["ends"] == [[p, 0, len(per_partition[p])] for p in range(3)]


class KafkajsMember(Member):
    """A kafkajs member process (kafkajs_member.js): it prints test_groups' member
    lines, read and stopped (SIGTERM: it leaves the group) as those members are."""

    def __init__(self, broker: EmbeddedBroker, topic: str, group: str) -> None:
        self.client = "kafkajs"
        self.process = subprocess.Popen(
            [node(), str(MEMBER), broker.bootstrap_servers, topic, group],
            env=NODE_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.records: list[tuple[int, int, str]] = []
        self.commits: list[tuple[int, int]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def committed_to(members: list[Member], ends: dict[int, int]) -> bool:
    """The members together committed every partition up to its end."""
    highest = dict.fromkeys(ends, 0)
    for member in members:
        for partition, offset in member.commits:
            highest[partition] = max(highest[partition], offset)
    return highest == ends


def test_kafkajs_members_split_a_group_commit_and_a_restart_resumes(
    broker: EmbeddedBroker, topic: str
) -> None:
    """Two kafkajs members split a 4-partition topic, each record consumed once,
    on kafkajs's protocol; both commit and leave; a new member of the group reads
    only what was produced after the commits."""
    partitions, total, group = 4, 400, f"kafkajs-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    first: list[Member] = []
    try:
        with Admin(str(broker.data_dir)) as admin:
            first.append(KafkajsMember(broker, topic, group))
            wait_until(lambda: stable(admin, group, 1, assigned=True), 30,
                       "the first kafkajs member alone in the group")  # fmt: skip
            first.append(KafkajsMember(broker, topic, group))
            wait_until(lambda: stable(admin, group, 2, assigned=True), 30,
                       "both kafkajs members with partitions")  # fmt: skip
            described = admin.describe_group(group)
            produce(broker, topic, range(total), partitions)
            ends = {p: total // partitions for p in range(partitions)}
            wait_until(lambda: committed_to(first, ends), 60,
                       f"commits up to {ends}")  # fmt: skip
    finally:
        for member in first:
            member.stop()
    assert described.assignor == "RoundRobinAssigner"
    values = [v for m in first for _, _, v in m.records]
    assert sorted(values, key=int) == [str(v) for v in range(total)]
    owned = [{p for p, _, _ in m.records} for m in first]
    assert all(owned), "a member consumed nothing"
    assert not owned[0] & owned[1], owned

    produce(broker, topic, range(total, total + 100), partitions)
    again = KafkajsMember(broker, topic, group)
    try:
        wait_until(lambda: len(again.records) >= 100, 60,
                   "the restarted member to read the 100 new records")  # fmt: skip
    finally:
        again.stop()
    assert sorted(int(v) for _, _, v in again.records) == list(
        range(total, total + 100)
    )


@pytest.mark.parametrize("leader", ["local", "kafkajs"])
def test_a_local_consumer_and_a_kafkajs_member_split_a_group(
    broker: EmbeddedBroker, topic: str, leader: str
) -> None:
    """A local Consumer with roundrobin also offers kafkajs's name for it, so it and a
    kafkajs member (which offers only "RoundRobinAssigner") agree on a protocol,
    split the partitions, and consume each record once, whichever leads."""
    partitions, total, group = 4, 400, f"mixed-js-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    local_values: list[str] = []
    stop = threading.Event()

    def run_local() -> None:
        with Consumer(
            str(broker.data_dir), client_id="local", group_id=group,
            subscribe=[topic], auto_offset_reset="earliest",
            partition_assignment_strategy=["roundrobin"],
            session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
        ) as local:  # fmt: skip
            while not stop.is_set():
                record = local.poll(0.02)
                if record is not None:
                    local_values.append(record.value.decode())  # type: ignore[union-attr]

    local = threading.Thread(target=run_local)
    remote: KafkajsMember | None = None
    try:
        with Admin(str(broker.data_dir)) as admin:
            for kind in (leader, "kafkajs" if leader == "local" else "local"):
                if kind == "local":
                    local.start()
                else:
                    remote = KafkajsMember(broker, topic, group)
                count = 1 if kind == leader else 2
                wait_until(lambda n=count: stable(admin, group, n, assigned=True), 30,
                           f"{count} member(s) with partitions")  # fmt: skip
            described = admin.describe_group(group)
            produce(broker, topic, range(total), partitions)
            assert remote is not None
            js = remote
            wait_until(lambda: len(local_values) + len(js.records) >= total, 60,
                       f"all {total} records consumed")  # fmt: skip
    finally:
        stop.set()
        if local.ident is not None:
            local.join(30)
        if remote is not None:
            remote.stop()
    assert described.assignor == "RoundRobinAssigner"
    (first,) = [m for m in described.members if m.member_id == described.leader]
    assert first.client_id == leader
    values = local_values + [v for _, _, v in js.records]
    assert sorted(values, key=int) == [str(v) for v in range(total)]
    assert local_values, "the local member consumed nothing"
    assert js.records, "the kafkajs member consumed nothing"
