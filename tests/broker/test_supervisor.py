"""The supervisor process (`shmbroker serve`): one per data directory, private files,
restarts that keep everything, cleanup of rings nobody owns, and a control socket that
survives bad clients."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from shmbroker import (
    Admin,
    BrokenError,
    BrokerUnavailable,
    Consumer,
    EmbeddedBroker,
    Producer,
    ProtocolError,
    Ring,
    TopicPartition,
    protocol,
    shm,
)
from shmbroker.config import CONTROL_SOCKET
from tests.conftest import SMALL_RING, wait_until

ROOT = Path(__file__).resolve().parents[2]


def drain(consumer, idle=0.1):
    got = []
    while records := consumer.poll_batch(timeout=idle):
        got += records
    return got


def serve(data_dir, shm_prefix, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shmbroker", "serve", "--data-dir", str(data_dir),
         "--shm-prefix", shm_prefix, "--topic-config", f"ring.bytes={SMALL_RING}",
         "--no-gateway"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def answers(data_dir, proc: subprocess.Popen[str]) -> bool:
    assert proc.poll() is None, f"the supervisor exited: {proc.communicate()[1]}"
    try:
        with Admin(data_dir) as admin:
            admin.list_topics()
    except BrokerUnavailable:
        return False
    return True


def test_a_second_supervisor_on_the_same_data_dir_exits_naming_the_first(
    broker, shm_prefix
):
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    before = set(shm.list_names(shm_prefix))
    second = serve(broker.data_dir, shm_prefix)
    try:
        _, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()
    assert second.returncode != 0
    assert f"another supervisor (pid {broker.pid}) is serving" in err, err
    # the first one lost nothing and still answers
    assert set(shm.list_names(shm_prefix)) == before
    assert (broker.data_dir / CONTROL_SOCKET).exists()
    with Admin(broker.data_dir) as admin:
        assert admin.list_topics()["t"].partitions == 2
        assert admin.connection.hello is not None
        assert admin.connection.hello.pid == broker.pid


def test_an_embedded_broker_on_a_served_data_dir_fails_to_start(broker, shm_prefix):
    """If another supervisor serves the directory, then EmbeddedBroker.start raises
    naming it, rather than taking the other's answers for its own."""
    second = EmbeddedBroker(broker.data_dir, shm_prefix=shm_prefix)
    with pytest.raises(
        BrokenError, match=rf"another supervisor \(pid {broker.pid}\) is serving"
    ):
        second.start()
    assert second.process is not None
    assert second.process.poll() == 1
    with Admin(broker.data_dir) as admin:
        admin.list_topics()
        assert admin.connection.hello.pid == broker.pid


def test_embedded_brokers_run_side_by_side_each_with_its_own_metrics(
    shm_prefix, monkeypatch
):
    """If two EmbeddedBrokers run at once (two scripts, two test sessions) and no
    metrics listener is configured, then both start, each serving /metrics on a
    port of its own (before: both took 127.0.0.1:9644, and the second failed)."""
    monkeypatch.delenv("SHMBROKER_METRICS_LISTENER", raising=False)
    with (
        EmbeddedBroker(shm_prefix=shm_prefix) as first,
        EmbeddedBroker(shm_prefix=shm_prefix) as second,
    ):
        assert first.metrics_url() != second.metrics_url()
        for broker in (first, second):
            with Admin(broker.data_dir) as admin:
                assert admin.list_topics() == {}


def test_an_embedded_broker_that_fails_to_start_leaves_nothing_behind(shm_prefix):
    """If the supervisor of a temporary EmbeddedBroker exits while starting (here:
    its metrics port is taken), then `with` raises naming why, and neither its
    data directory nor its shared memory is left (before: both were, and gc
    keeps a stopped broker's objects for its next start)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(
            shm_prefix=shm_prefix, metrics_listener=f"127.0.0.1:{port}"
        )
        with pytest.raises(BrokenError, match="Address already in use"), broker:
            pass
    assert not broker.data_dir.exists()
    assert list(shm.list_names(shm_prefix)) == []


def hello_pid(data_dir) -> int | None:
    """The pid of the supervisor answering on data_dir, or None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(data_dir / CONTROL_SOCKET))
            reply = exchange(sock, encode(protocol.Hello(1, "probe", os.getpid())))
    except OSError:
        return None
    assert isinstance(reply, protocol.HelloReply), reply
    return reply.pid


def test_a_stop_signalled_the_moment_it_answers_is_graceful(tmp_path, shm_prefix):
    """If SIGTERM comes as soon as the control socket first answers (as
    EmbeddedBroker.stop right after start), then the supervisor still stops
    gracefully and exits 0, every time."""
    data_dir = tmp_path / "data"
    try:
        for attempt in range(12):
            proc = serve(data_dir, shm_prefix)
            try:
                deadline = time.monotonic() + 30
                while hello_pid(data_dir) != proc.pid:  # no sleep: the first answer
                    assert proc.poll() is None, proc.communicate()[1]
                    assert time.monotonic() < deadline, "the supervisor never answered"
                proc.terminate()
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert proc.returncode == 0, f"attempt {attempt}: {proc.returncode} {err}"
    finally:
        for name in shm.list_names(shm_prefix):
            shm.unlink(name)


def test_its_data_directory_control_socket_and_rings_are_private(tmp_path, shm_prefix):
    """If the supervisor makes its data directory itself, under a umask that would
    let everyone in, then the directory and partition directories are 0700 and the
    control socket and rings 0600."""
    data_dir = tmp_path / "fresh"
    proc = serve(data_dir, shm_prefix, umask=0)
    try:
        wait_until(lambda: answers(data_dir, proc), 30, "the supervisor to answer")
        with Admin(data_dir) as admin, Producer(data_dir) as producer:
            admin.create_topic("t", 2)
            producer.send("t", b"x", partition=0).get()  # a segment file too
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_ISSOCK((data_dir / CONTROL_SOCKET).stat().st_mode)
        modes = {
            os.path.relpath(os.path.join(root, name), data_dir): stat.S_IMODE(
                os.stat(os.path.join(root, name)).st_mode
            )
            for root, dirs, files in os.walk(data_dir)
            for name in dirs + files
        }
        assert modes[CONTROL_SOCKET] == 0o600
        assert (modes["t-0"], modes["t-1"]) == (0o700, 0o700)
        assert "t-0/00000000000000000000.log" in modes
        world = {n: oct(m) for n, m in modes.items() if m & 0o077}
        assert world == {}, f"open to others: {world}"
        names = list(shm.list_names(shm_prefix))
        assert len(names) == 3  # the broker's info object and two rings
        for name in names:
            assert stat.S_IMODE(os.stat(shm.SHM_DIR + name).st_mode) == 0o600, name
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        for name in shm.list_names(shm_prefix):
            shm.unlink(name)
    assert proc.returncode == 0, err


def test_a_graceful_restart_keeps_topics_configs_and_records(broker):
    with Admin(broker.data_dir) as admin:
        a = admin.create_topic("a", 2, {"retention.ms": 60_000})
        b = admin.create_topic("b", 1)
        admin.alter_configs("b", {"segment.bytes": 1 << 20})
        with Producer(broker.data_dir) as producer:
            for i in range(1000):
                producer.send(
                    "a",
                    b"v%d" % i,
                    key=b"k%d" % i,
                    headers=[("h", b"%d" % i)],
                    timestamp=10_000 + i,
                    partition=i % 2,
                )
            producer.send_batch("b", [b"b%d" % i for i in range(500)])
        before_topics = admin.list_topics()
        before_description = admin.describe_topics()
    survivor = Admin(broker.data_dir)  # connected across the restart
    assert survivor.list_topics() == before_topics
    first_pid = broker.pid
    broker.restart()
    assert broker.pid != first_pid
    with survivor:  # reconnects by itself
        assert survivor.list_topics() == before_topics
        assert survivor.connection.hello.pid == broker.pid
    with Admin(broker.data_dir) as admin:
        assert admin.list_topics() == before_topics
        after = admin.describe_topics()
        assert [t.configs for t in after] == [t.configs for t in before_description]
        assert after[0].configs["retention.ms"] == "60000"
        assert after[1].configs["segment.bytes"] == str(1 << 20)
        assert [
            (t.topic_id, [p.high_watermark for p in t.partitions]) for t in after
        ] == [
            (a.topic_id, [500, 500]),
            (b.topic_id, [500]),
        ]
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("a", 0), ("a", 1), ("b", 0)])
        records = drain(consumer)
    a_records = sorted(
        (r for r in records if r.topic == "a"), key=lambda r: r.timestamp
    )
    assert [(r.partition, r.offset, r.key, r.value, r.headers) for r in a_records] == [
        (i % 2, i // 2, b"k%d" % i, b"v%d" % i, (("h", b"%d" % i),))
        for i in range(1000)
    ]
    assert [r.value for r in records if r.topic == "b"] == [
        b"b%d" % i for i in range(500)
    ]
    with Producer(broker.data_dir) as producer:  # offsets go on densely
        assert producer.send("b", b"after").get().offset == 500


def test_clients_use_existing_topics_while_no_supervisor_runs(broker):
    """If the supervisor is stopped, then admin requests fail naming what to start,
    but producers and consumers still use the topics it made; after it starts again,
    what they wrote is in the log."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 1)
    broker.stop()
    with (
        Admin(broker.data_dir) as admin,
        pytest.raises(BrokerUnavailable, match=r"start one with `shmbroker serve"),
    ):
        admin.list_topics()
    with Producer(broker.data_dir) as producer:
        assert producer.send("t", b"offline").get().offset == 0
        with pytest.raises(BrokerUnavailable):
            producer.send("needs-a-broker", b"x")  # cannot auto-create now
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("t", 0)])
        assert [r.value for r in drain(consumer)] == [b"offline"]
    broker.start()
    with Admin(broker.data_dir) as admin:
        (described,) = admin.describe_topics(["t"])
        assert described.partitions[0].log_end_offset == 1  # spilled at start
        assert list(admin.list_topics()) == ["t"]


def test_a_start_removes_rings_of_its_broker_that_no_topic_owns(broker, shm_prefix):
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("t", 1)
    owned = shm.ring_name(broker.shm_base, meta.topic_id, 0)
    orphan = shm.ring_name(broker.shm_base, "0" * 32, 0)
    beyond = shm.ring_name(broker.shm_base, meta.topic_id, 5)  # t has 1 partition
    others = shm.ring_name(shm.broker_base(shm_prefix, "f" * 12), "0" * 32, 0)
    for name in (orphan, beyond, others):
        Ring.create(name, 1 << 16).close()
    try:
        broker.restart()
        names = set(shm.list_names(shm_prefix))
        assert orphan not in names
        assert beyond not in names
        assert owned in names
        assert others in names, "removed another broker's ring"
        assert f"removing ring {orphan}" in broker.log_path.read_text()
    finally:
        shm.unlink(others)
    with Producer(broker.data_dir) as producer:
        assert producer.send("t", b"x").get().offset == 0


def test_a_start_finishes_a_delete_the_last_supervisor_did_not(broker):
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 1)
    broker.stop()
    leftover = broker.data_dir / f"t-0.{'a' * 32}-delete"
    (broker.data_dir / "t-0").rename(leftover)  # as a crash mid-delete leaves it
    broker.start()
    assert not leftover.exists()
    assert "finishing the deletion" in broker.log_path.read_text()


# ---- the control socket ----------------------------------------------------------


def connect(broker) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(broker.data_dir / CONTROL_SOCKET))
    return sock


def exchange(sock: socket.socket, body: bytes) -> protocol.Reply:
    sock.sendall(struct.pack(">I", len(body)) + body)
    reply = protocol.receive(sock)
    assert reply is not None, "the supervisor closed the connection"
    return protocol.reply_decoder.decode(reply)


def encode(message: protocol.Request | protocol.Reply) -> bytes:
    return msgspec.msgpack.encode(message)


def test_a_client_of_another_protocol_version_is_refused_clearly(broker):
    with connect(broker) as sock:
        reply = exchange(sock, encode(protocol.Hello(99, "future-client", os.getpid())))
        assert protocol.receive(sock) is None, "it should hang up"
    assert isinstance(reply, protocol.ErrorReply)
    assert reply.kind == "ProtocolError"
    assert reply.message == (
        f"client speaks control protocol 99, this supervisor "
        f"{protocol.PROTOCOL_VERSION}: upgrade one of them"
    )
    with pytest.raises(ProtocolError, match=r"control protocol 99"):
        protocol.raise_error(reply)
    with Admin(broker.data_dir) as admin:  # the right version still gets in
        assert admin.list_topics() == {}


def test_malformed_frames_do_not_stop_the_supervisor_serving_others(broker):
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 1)  # its connection stays open through the abuse
        stuck = connect(broker)
        stuck.sendall(struct.pack(">I", 100) + b"half")  # and then nothing
        cut = connect(broker)
        cut.sendall(struct.pack(">I", 100) + b"half")
        cut.close()
        with connect(broker) as sock:
            hello = protocol.Hello(protocol.PROTOCOL_VERSION, "abuser", os.getpid())
            assert isinstance(exchange(sock, encode(hello)), protocol.HelloReply)
            for body in [
                b"",
                b"\xc1 not msgpack",
                encode(protocol.Done()),  # a reply is no request
                msgspec.msgpack.encode(
                    {"type": "CreateTopic", "name": "x", "partitions": "two"}
                ),
                msgspec.msgpack.encode(
                    {"type": "Hello", "version": 1, "client_id": 7, "pid": 1}
                ),
                msgspec.msgpack.encode(["a", "list"]),
            ]:
                reply = exchange(sock, body)
                assert isinstance(reply, protocol.ErrorReply), body
                assert reply.kind == "ProtocolError", (body, reply)
            # the same connection still answers good requests
            reply = exchange(sock, encode(protocol.Metadata(["t"])))
            assert isinstance(reply, protocol.MetadataReply)
            reply = exchange(
                sock, encode(protocol.Metadata(["../escape"], auto_create=True))
            )
            assert isinstance(reply, protocol.ErrorReply)
            assert reply.kind == "InvalidArgument"
        with connect(broker) as sock:  # too large a frame: that client is cut off
            sock.sendall(struct.pack(">I", protocol.MAX_FRAME_BYTES + 1))
            assert sock.recv(1) == b""
        assert broker.process.poll() is None, broker.log_tail()
        assert list(admin.list_topics()) == ["t"]
        with Admin(broker.data_dir) as other:
            other.create_topic("u", 1)
            assert other.list_offsets({TopicPartition("t", 0): "latest"}) == {
                TopicPartition("t", 0): 0
            }
        stuck.close()
    assert not (broker.data_dir.parent / "escape-0").exists()


def test_a_damaged_active_segment_does_not_keep_the_broker_down(broker):
    """If bytes of a partition's active segment are flipped after a clean stop (its
    ring still in /dev/shm), then the broker starts again and every record is
    readable and correct (before: `advance durable offset: invalid argument` at
    every start)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("d", 1)
    with Producer(broker.data_dir) as producer:
        for i in range(50):
            producer.send_batch("d", [b"%05d" % (i * 20 + j) for j in range(20)])
    broker.stop()
    segment = broker.data_dir / "d-0" / "00000000000000000000.log"
    with open(segment, "r+b") as f:
        f.seek(segment.stat().st_size // 2)
        f.write(b"\xff\xff\xff\xff")
    broker.start()
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("d", 0)])
        values = [r.value for r in drain(consumer)]
    assert values == [b"%05d" % i for i in range(1000)]
