"""Consumer groups through the gateway with real Kafka clients: confluent-kafka,
kafka-python and aiokafka members in one group (one SIGKILLed under load), kcat's
balanced consumer, a local Consumer and a Kafka client in one group, and the group
admin APIs. Members run as processes where one must die; session.timeout.ms is
short (1000 ms, which the broker's group.min.session.timeout.ms allows)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import AdminClient
from kio.schema.errors import ErrorCode

from shmbroker import Admin, Consumer, EmbeddedBroker, GroupIdNotFound
from shmbroker.gateway.apis import APIS
from shmbroker.kafka import codec
from shmbroker.kafka.consumer_protocol import encode_assignment
from shmbroker.records import TopicPartition
from tests.conftest import wait_until
from tests.gateway.conftest import KCAT

with warnings.catch_warnings():  # as tests/native/kafka_python.py: its import warns
    warnings.filterwarnings(
        "ignore", r"(read_text|open_text) is deprecated", DeprecationWarning
    )
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as PythonTopicPartition

pytestmark = pytest.mark.system

SESSION_MS = 1000
HEARTBEAT_MS = 200

# A group member in a process of its own: prints "rec PARTITION OFFSET VALUE" for
# each record, then commits what it printed and prints "commit PARTITION OFFSET"
# once the commit is acknowledged; stops cleanly (leaving the group) on SIGTERM.
MEMBER = r"""
import asyncio, signal, sys, warnings
client, bootstrap, topic, group, session_ms, heartbeat_ms = sys.argv[1:7]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
common = dict(session_ms=int(session_ms), heartbeat_ms=int(heartbeat_ms))

if client == "confluent":
    from confluent_kafka import Consumer, KafkaException
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "client.id": client, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False,
                  "session.timeout.ms": common["session_ms"],
                  "heartbeat.interval.ms": common["heartbeat_ms"]})
    c.subscribe([topic])
    while not stop:
        records = [m for m in c.consume(50, 0.2) if not m.error()]
        for m in records:
            out(f"rec {m.partition()} {m.offset()} {m.value().decode()}")
        if records:
            try:
                for tp in c.commit(asynchronous=False):
                    if tp.offset >= 0 and not tp.error:
                        out(f"commit {tp.partition} {tp.offset}")
            except KafkaException:
                pass  # a rebalance: the next owner reads them again
    c.close()
elif client == "kafka-python":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      client_id=client, auto_offset_reset="earliest",
                      enable_auto_commit=False,
                      session_timeout_ms=common["session_ms"],
                      heartbeat_interval_ms=common["heartbeat_ms"])
    while not stop:
        offsets = {}
        for tp, records in c.poll(timeout_ms=200, max_records=50).items():
            for r in records:
                out(f"rec {tp.partition} {r.offset} {r.value.decode()}")
                offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        if offsets:
            try:
                c.commit(offsets)
                for tp, om in offsets.items():
                    out(f"commit {tp.partition} {om.offset}")
            except KafkaError:
                pass
    c.close()
else:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError
    async def main():
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             client_id=client, auto_offset_reset="earliest",
                             enable_auto_commit=False,
                             session_timeout_ms=common["session_ms"],
                             heartbeat_interval_ms=common["heartbeat_ms"])
        await c.start()
        while not stop:
            offsets = {}
            batch = await c.getmany(timeout_ms=200, max_records=50)
            for tp, records in batch.items():
                for r in records:
                    out(f"rec {tp.partition} {r.offset} {r.value.decode()}")
                    offsets[tp] = r.offset + 1
            if offsets:
                try:
                    await c.commit(offsets)
                    for tp, offset in offsets.items():
                        out(f"commit {tp.partition} {offset}")
                except KafkaError:
                    pass
        await c.stop()
    asyncio.run(main())
"""


class Member:
    """A member process and what it printed, read by a thread as it comes."""

    def __init__(self, client: str, broker: EmbeddedBroker, topic: str, group: str,
                 session_ms: int = SESSION_MS) -> None:  # fmt: skip
        self.client = client
        self.process = subprocess.Popen(
            [sys.executable, "-c", MEMBER, client, broker.bootstrap_servers, topic,
             group, str(session_ms), str(HEARTBEAT_MS)],
            # stderr: pytest's capture (shown if the test fails)
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.records: list[tuple[int, int, str]] = []  # partition, offset, value
        self.commits: list[tuple[int, int]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            kind, *fields = line.split()
            if kind == "rec":
                self.records.append((int(fields[0]), int(fields[1]), fields[2]))
            elif kind == "commit":
                self.commits.append((int(fields[0]), int(fields[1])))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def stable(admin: Admin, group: str, count: int, assigned: bool = False) -> bool:
    """The group is Stable with count members (each with partitions, if
    assigned)."""
    try:
        d = admin.describe_group(group)
    except GroupIdNotFound:
        return False
    return (
        d.state == "Stable"
        and len(d.members) == count
        and (not assigned or all(m.assignment for m in d.members))
    )


@pytest.fixture
def members() -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for member in started:
        member.stop()


def create(broker: EmbeddedBroker, topic: str, partitions: int) -> None:
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic(topic, partitions)


def produce(broker: EmbeddedBroker, topic: str, values: range, partitions: int,
            pause_every: int = 0) -> None:  # fmt: skip
    """values as records, dealt over the partitions in turn; a short pause every
    pause_every records keeps the load on while members come and go."""
    producer = KafkaProducer({"bootstrap.servers": broker.bootstrap_servers})
    for v in values:
        producer.produce(topic, str(v).encode(), partition=v % partitions)
        if pause_every and v % pause_every == 0:
            producer.flush()
            time.sleep(0.01)  # the load's pace, not a synchronisation
    assert producer.flush(30) == 0


def test_confluent_kafka_python_and_aiokafka_share_a_group_and_survive_a_sigkill(
    broker: EmbeddedBroker, topic: str, members: list[Member]
) -> None:
    """If one of three members of different clients is killed with SIGKILL under
    load, then after its session.timeout.ms the others take its partitions over,
    resume from its last commit (never before it), and no record is lost."""
    partitions, total, group = 6, 3000, f"g-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    for client in ("confluent", "kafka-python", "aiokafka"):
        members.append(Member(client, broker, topic, group))
    with Admin(str(broker.data_dir)) as admin:
        wait_until(lambda: stable(admin, group, 3), 60, "a stable group of three")
    load = threading.Thread(
        target=produce, args=(broker, topic, range(total), partitions, 50)
    )
    load.start()
    victim = members[0]  # librdkafka: the most common client
    wait_until(lambda: len(victim.commits) >= 2, 60, "the victim's commits")
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    load.join()
    survivors = members[1:]

    def consumed() -> set[str]:
        return {v for m in members for _, _, v in m.records}

    wait_until(lambda: len(consumed()) == total, 60, f"all {total} records consumed")
    assert consumed() == {str(v) for v in range(total)}
    # what the victim read after its last commit may be read again; nothing before
    last_commit: dict[int, int] = {}
    for p, offset in victim.commits:
        last_commit[p] = max(offset, last_commit.get(p, 0))
    victim_read = {(p, o) for p, o, _ in victim.records}
    again = {(p, o) for m in survivors for p, o, _ in m.records} & victim_read
    for p, o in again:
        assert o >= last_commit.get(p, 0), (
            f"partition {p} offset {o} read again, before the victim's last commit "
            f"{last_commit.get(p)}"
        )
    taken_over = {p for p, _ in victim_read} & {
        p for m in survivors for p, _, _ in m.records
    }
    assert taken_over, "no partition of the killed member was consumed by another"


def test_kcat_balanced_consumers_split_the_partitions(
    broker: EmbeddedBroker, topic: str
) -> None:
    """Two `kcat -G` members of one group share the partitions; each record is
    printed by exactly one of them."""
    if KCAT is None:
        pytest.fail("kcat is not installed: `make test` installs it with apt")
    partitions, total, group = 4, 400, f"kcat-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    command = [
        KCAT, "-b", broker.bootstrap_servers, "-G", group, topic, "-u", "-q",
        "-f", "%p %o %s\n", "-X", "auto.offset.reset=earliest",
        "-X", f"session.timeout.ms={SESSION_MS * 6}",
        "-X", f"heartbeat.interval.ms={HEARTBEAT_MS}",
    ]  # fmt: skip
    kcats = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    lines: list[list[str]] = [[], []]
    readers = [
        threading.Thread(
            target=lambda i=i: lines[i].extend(kcats[i].stdout), daemon=True
        )  # type: ignore[union-attr]
        for i in range(2)
    ]
    for reader in readers:
        reader.start()
    try:
        with Admin(str(broker.data_dir)) as admin:
            wait_until(
                lambda: stable(admin, group, 2, assigned=True),
                60,
                "two kcat members with partitions each",
            )
        produce(broker, topic, range(total), partitions)
        wait_until(
            lambda: sum(map(len, lines)) >= total, 60, f"{total} records printed"
        )
    finally:
        for k in kcats:
            k.terminate()
            k.wait(20)
        for k, reader in zip(kcats, readers, strict=True):
            reader.join(5)
            k.stdout.close()  # type: ignore[union-attr]
    values = [line.split()[2] for out in lines for line in out]
    assert sorted(values, key=int) == [str(v) for v in range(total)]
    split = [{line.split()[0] for line in out} for out in lines]
    assert all(split), f"a member had no partition: {split}"
    assert not split[0] & split[1], f"a partition went to both: {split}"


@pytest.mark.parametrize("leader", ["local", "remote"])
def test_a_local_consumer_and_a_kafka_client_split_a_group(
    broker: EmbeddedBroker, topic: str, leader: str
) -> None:
    """A shared-memory Consumer and a confluent-kafka consumer in one group agree
    on a protocol (range), split the partitions, and consume each record once,
    whichever of them is the leader (the first to join: it decodes the other's
    ConsumerProtocol subscription and encodes its assignment)."""
    partitions, total, group = 4, 400, f"mixed-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    seen: dict[str, list[str]] = {"local": [], "remote": []}
    stop = threading.Event()

    def run(kind: str) -> None:
        """A member on a thread of its own, as it would be in its own process: a
        poll blocked in a rebalance must not keep the other from its own."""
        if kind == "local":
            local = Consumer(
                str(broker.data_dir), client_id="local", group_id=group,
                subscribe=[topic], auto_offset_reset="earliest",
                session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
            )  # fmt: skip
            while not stop.is_set():
                record = local.poll(0.02)
                if record is not None:
                    seen[kind].append(record.value.decode())  # type: ignore[union-attr]
            local.close()
            return
        remote = KafkaConsumer({
            "bootstrap.servers": broker.bootstrap_servers, "group.id": group,
            "client.id": "remote", "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS,
        })  # fmt: skip
        remote.subscribe([topic])
        while not stop.is_set():
            message = remote.poll(0.02)
            if message is not None and not message.error():
                seen[kind].append(message.value().decode())  # type: ignore[union-attr]
        remote.close()

    follower = "remote" if leader == "local" else "local"
    threads = [threading.Thread(target=run, args=(k,)) for k in (leader, follower)]
    try:
        with Admin(str(broker.data_dir)) as admin:
            threads[0].start()
            wait_until(
                lambda: stable(admin, group, 1, assigned=True),
                30,
                f"the {leader} member alone in the group",
            )
            threads[1].start()
            wait_until(
                lambda: stable(admin, group, 2, assigned=True),
                30,
                "both members with partitions",
            )
            described = admin.describe_group(group)
            produce(broker, topic, range(total), partitions)
            wait_until(
                lambda: len(seen["local"]) + len(seen["remote"]) >= total,
                60,
                f"all {total} records consumed",
            )
    finally:
        stop.set()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(30)
    assert described.assignor == "range"
    (first,) = [m for m in described.members if m.member_id == described.leader]
    assert first.client_id == leader
    values = seen["local"] + seen["remote"]
    assert sorted(values, key=int) == [str(v) for v in range(total)]
    assert seen["local"], "the local member consumed nothing"
    assert seen["remote"], "the Kafka member consumed nothing"


def committed(
    admin: AdminClient, group: str, partitions: list[ConfluentTopicPartition] | None
) -> dict[int, int]:
    """partition -> committed offset, by OffsetFetch through confluent-kafka."""
    request = ConsumerGroupTopicPartitions(group, partitions)
    (future,) = admin.list_consumer_group_offsets([request]).values()
    return {tp.partition: tp.offset for tp in future.result(30).topic_partitions}


def test_group_admin_apis_list_describe_fetch_and_delete(
    broker: EmbeddedBroker, topic: str
) -> None:
    """ListGroups, DescribeGroups, OffsetFetch (every requested partition, null =
    all), OffsetDelete and DeleteGroups answer as Kafka's do, through
    kafka-python's admin client and confluent-kafka's."""
    group = f"admin-{uuid.uuid4().hex[:6]}"
    create(broker, topic, 3)
    produce(broker, topic, range(30), 3)
    member = KafkaConsumer({
        "bootstrap.servers": broker.bootstrap_servers, "group.id": group,
        "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS,
        "enable.auto.commit": False,
    })  # fmt: skip
    member.subscribe([topic])
    wait_until(
        lambda: member.poll(0.05) is None and len(member.assignment()) == 3,
        30,
        "the member's assignment",
    )
    member.commit(offsets=[ConfluentTopicPartition(topic, 0, 5)], asynchronous=False)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        assert {"group_id": group, "protocol_type": "consumer"} in admin.list_groups()
        described = admin.describe_groups([group])[group]
        assert (described["group_state"], described["protocol_data"]) == (
            "Stable",
            "range",
        )
        assert [m["client_host"] for m in described["members"]] == ["/127.0.0.1"]
        confluent = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        two = [ConfluentTopicPartition(topic, 0), ConfluentTopicPartition(topic, 2)]
        assert committed(confluent, group, two) == {0: 5, 2: -1001}  # librdkafka's -1
        assert committed(confluent, group, None) == {0: 5}  # null topics: all
        # a live member subscribes to the topic: its offsets stay (Kafka's rule)
        refused = admin.delete_group_offsets(group, [PythonTopicPartition(topic, 0)])
        assert [e.__name__ for e in refused.values()] == [
            "GroupSubscribedToTopicError"
        ], refused
        member.close()
        wait_until(
            lambda: admin.describe_groups([group])[group]["group_state"] == "Empty",
            30,
            "the group to be empty",
        )
        deleted = admin.delete_group_offsets(group, [PythonTopicPartition(topic, 0)])
        assert [e.__name__ for e in deleted.values()] == ["NoError"], deleted
        assert committed(confluent, group, None) == {}
        futures = confluent.delete_consumer_groups([group, "no-such-group"])
        outcome = {}
        for name, future in futures.items():
            try:
                future.result(30)
                outcome[name] = "ok"
            except KafkaException as exc:
                outcome[name] = exc.args[0].name()
        assert outcome == {group: "ok", "no-such-group": "GROUP_ID_NOT_FOUND"}
    finally:
        admin.close()


# ---- the protocol by hand ------------------------------------------------------------


def call(sock: socket.socket, key: int, version: int, **fields: Any) -> Any:
    """One request on a raw connection; its decoded response."""
    body = codec.encode(codec.build(codec.request_type(key, version), **fields))
    sock.sendall(codec.frame_request(key, version, 1, body))
    size = struct.unpack(">i", receive(sock, 4))[0]
    response = receive(sock, size)
    return codec.decode_response(key, version, response, 4)  # after correlation id


def receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the gateway closed the connection"
        data += chunk
    return data


def join(
    sock: socket.socket, group: str, member_id: str = "", instance: str | None = None
) -> Any:
    protocols = codec.nested(codec.request_type(11, 5), "JoinGroupRequestProtocol")
    return call(
        sock, 11, 5, group_id=group, session_timeout=10_000,
        rebalance_timeout=30_000, member_id=member_id, group_instance_id=instance,
        protocol_type="consumer",
        protocols=(protocols(name="range", metadata=b"\x00\x00\x00\x00\x00\x00"),),
    )  # fmt: skip


def test_the_group_apis_are_advertised_at_the_versions_clients_need() -> None:
    wanted = {
        10: (0, 1), 11: (0, 5), 14: (0, 3), 12: (0, 1), 13: (0, 1), 8: (2, 3),
        9: (1, 3), 16: (0, 2), 15: (0, 2), 42: (0, 1), 47: (0, 0),
    }  # fmt: skip
    assert {k: (APIS[k].min_version, APIS[k].max_version) for k in wanted} == wanted


def test_a_parked_join_holds_neither_other_connections_nor_the_member_id_dance(
    broker: EmbeddedBroker,
) -> None:
    """JoinGroup v5 without a member id gets MEMBER_ID_REQUIRED and an id; with it,
    the member joins. A second member's join then parks until the first rejoins,
    and meanwhile other connections are answered and the first's heartbeat says
    REBALANCE_IN_PROGRESS."""
    group = f"raw-{uuid.uuid4().hex[:6]}"
    host, port = broker.gateway_address()
    with contextlib.ExitStack() as stack:
        a, b, c = (
            stack.enter_context(socket.create_connection((host, port), timeout=30))
            for _ in range(3)
        )
        first = join(a, group)
        assert first.error_code == ErrorCode.member_id_required
        joined = join(a, group, first.member_id)
        assert joined.error_code == ErrorCode.none
        assert joined.member_id == joined.leader == first.member_id
        call(a, 14, 3, group_id=group, generation_id=joined.generation_id,
             member_id=joined.member_id, group_instance_id=None,
             assignments=())  # fmt: skip
        parked = concurrent.futures.ThreadPoolExecutor(1)
        stack.callback(parked.shutdown)
        second = parked.submit(lambda: join(b, group, join(b, group).member_id))
        with Admin(str(broker.data_dir)) as admin:
            wait_until(
                lambda: admin.describe_group(group).state == "PreparingRebalance",
                10,
                "the second member's join",
            )
        started = time.monotonic()
        versions = call(c, 18, 3, client_software_name="t",
                        client_software_version="1")  # fmt: skip
        assert versions.error_code == ErrorCode.none
        assert time.monotonic() - started < 5
        beat = call(a, 12, 1, group_id=group, generation_id=joined.generation_id,
                    member_id=joined.member_id)  # fmt: skip
        assert beat.error_code == ErrorCode.rebalance_in_progress
        assert not second.done()
        again = join(a, group, joined.member_id)
        assert second.result(30).generation_id == again.generation_id


def sync(sock: socket.socket, group: str, joined: Any, **plan: bytes) -> Any:
    assignment = codec.nested(codec.request_type(14, 3), "SyncGroupRequestAssignment")
    return call(
        sock, 14, 3, group_id=group, generation_id=joined.generation_id,
        member_id=joined.member_id, group_instance_id=None,
        assignments=tuple(
            assignment(member_id=m, assignment=a) for m, a in plan.items()
        ),
    )  # fmt: skip


def test_a_static_member_that_comes_back_keeps_its_place_without_a_rebalance(
    broker: EmbeddedBroker,
) -> None:
    """JoinGroup v5's group.instance.id: a static member needs no
    MEMBER_ID_REQUIRED round, and when it restarts (a new connection, no member
    id) it gets its old member id and assignment back in the same generation."""
    group = f"static-{uuid.uuid4().hex[:6]}"
    mine, theirs = (encode_assignment([TopicPartition("t", p)]) for p in (0, 1))
    host, port = broker.gateway_address()
    with contextlib.ExitStack() as stack:
        a, s, again = (
            stack.enter_context(socket.create_connection((host, port), timeout=30))
            for _ in range(3)
        )
        leader = join(a, group, join(a, group).member_id)
        sync(a, group, leader, **{leader.member_id: theirs})
        parked = concurrent.futures.ThreadPoolExecutor(1)
        stack.callback(parked.shutdown)
        static = parked.submit(join, s, group, "", "instance-1")
        with Admin(str(broker.data_dir)) as admin:
            wait_until(
                lambda: admin.describe_group(group).state == "PreparingRebalance",
                10,
                "the static member's join",
            )
            leader = join(a, group, leader.member_id)
            member = static.result(30)
            assert member.error_code == ErrorCode.none
            plan = {leader.member_id: theirs, member.member_id: mine}
            sync(a, group, leader, **plan)
            assert sync(s, group, member).assignment == mine
            generation = admin.describe_group(group).generation
            back = join(again, group, "", "instance-1")  # restarted: no member id
            assert (back.error_code, back.member_id) == (
                ErrorCode.none,
                member.member_id,
            )
            assert sync(again, group, back).assignment == mine
            described = admin.describe_group(group)
        assert (described.state, described.generation) == ("Stable", generation)
