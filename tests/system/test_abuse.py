"""A running broker abused as a hostile or buggy local process would (issue 14):
descriptor floods past its limit, too many clients, requests before Hello, silent or
stalled connections. The supervisor keeps answering everyone else."""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from shmbroker import Admin, BrokerBusy, BrokerUnavailable, protocol, shm
from shmbroker.broker.control import FRAME_TIMEOUT, HELLO_TIMEOUT
from shmbroker.config import CONTROL_SOCKET
from tests.conftest import SMALL_RING, wait_until

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def serve(tmp_path, shm_prefix):
    """Start `shmbroker serve` with extra environment and a preexec hook; stopped
    gracefully afterwards (the test fails if it does not exit 0)."""
    procs = []
    data_dir = tmp_path / "data"
    log = tmp_path / "supervisor.log"  # a file: a pipe nobody reads fills and blocks

    def start(env=None, preexec_fn=None):
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shmbroker", "serve", "--data-dir",
                 str(data_dir), "--shm-prefix", shm_prefix,
                 "--topic-config", f"ring.bytes={SMALL_RING}", "--no-gateway"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, **(env or {})}, preexec_fn=preexec_fn,
            )  # fmt: skip
        procs.append(proc)
        wait_until(lambda: answers(data_dir, proc), 30, "the supervisor to answer")
        return data_dir, proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=60)
        assert proc.returncode == 0, log.read_text()[-3000:]
    for name in shm.list_names(shm_prefix):  # the broker's info object stays
        shm.unlink(name)


def answers(data_dir, proc) -> bool:
    assert proc.poll() is None, f"the supervisor exited with {proc.returncode}"
    try:
        with Admin(data_dir) as admin:
            admin.list_topics()
    except BrokerUnavailable:
        return False
    return True


def raw(data_dir) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(data_dir / CONTROL_SOCKET))
    return sock


def exchange(sock, message) -> protocol.Reply:
    body = msgspec.msgpack.encode(message)
    sock.sendall(struct.pack(">I", len(body)) + body)
    reply = protocol.receive(sock)
    assert reply is not None, "the supervisor closed the connection"
    return protocol.reply_decoder.decode(reply)


def hello() -> protocol.Hello:
    return protocol.Hello(protocol.PROTOCOL_VERSION, "abuser", os.getpid())


def closed_within(sock, seconds) -> float:
    """Seconds until the peer hangs up (asserting it does within `seconds`)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    assert sock.recv(1) == b""
    return time.monotonic() - start


def test_a_descriptor_flood_past_its_limit_leaves_the_supervisor_answering(serve):
    """If clients open more control connections than the supervisor has file
    descriptors (RLIMIT_NOFILE 256 here) and then all go, then it answers again
    within 1 s (before: its accept loop ended at EMFILE, and it never answered
    again)."""

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    data_dir, proc = serve(preexec_fn=low_limit)
    flood: list[socket.socket] = []

    def flooded() -> bool:
        """One more connection; True once far more than it can accept are open."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(data_dir / CONTROL_SOCKET))
        except BlockingIOError:  # its backlog is full: let it accept
            sock.close()
            return False
        flood.append(sock)
        return len(flood) >= 256 + 128 + 50  # its limit, its backlog, and more

    wait_until(flooded, 30, "connections past the supervisor's descriptor limit")
    for sock in flood:
        sock.close()
    start = time.monotonic()
    wait_until(lambda: answers(data_dir, proc), 5, "an answer after the flood")
    assert time.monotonic() - start < 1.0


def test_clients_beyond_max_connections_are_refused_clearly(serve):
    """If max.connections clients are connected, then the next one is refused
    with BrokerBusy naming the limit, and is served once one of them leaves."""
    data_dir, _ = serve(env={"SHMBROKER_CONTROL_MAX_CONNECTIONS": "4"})
    admins = [Admin(data_dir) for _ in range(5)]
    try:
        for admin in admins[:4]:
            admin.list_topics()
        with pytest.raises(BrokerBusy, match=r"serves 4 control connections already"):
            admins[4].list_topics()
        admins.pop().close()
        admins.pop().close()
        with Admin(data_dir) as late:
            wait_until(lambda: _lists(late), 10, "a free connection")
    finally:
        for admin in admins:
            admin.close()


def _lists(admin) -> bool:
    try:
        admin.list_topics()
    except BrokerBusy:
        return False
    return True


def test_a_request_before_hello_is_refused_and_not_served(serve):
    """If a client sends a request before Hello, then it gets an error naming the
    rule and is hung up on; the request is not served (before: it created a
    topic)."""
    data_dir, _ = serve()
    with raw(data_dir) as sock:
        reply = exchange(sock, protocol.CreateTopic("sneaky", 1))
        assert isinstance(reply, protocol.ErrorReply)
        assert reply.kind == "ProtocolError"
        assert "CreateTopic before Hello" in reply.message
        assert closed_within(sock, 5) < 5
    with Admin(data_dir) as admin:
        assert "sneaky" not in admin.list_topics()


def test_silent_and_stalled_connections_are_closed(serve):
    """If a client says nothing after connecting, or stops inside a frame, then
    the supervisor hangs up on it within its timeouts; others are served all
    along."""
    data_dir, proc = serve()
    silent = raw(data_dir)
    stalled = raw(data_dir)
    assert isinstance(exchange(stalled, hello()), protocol.HelloReply)
    stalled.sendall(struct.pack(">I", 50)[:2])  # half a length, then nothing
    with Admin(data_dir) as admin:
        admin.create_topic("others", 1)  # served meanwhile
    assert closed_within(silent, HELLO_TIMEOUT + 5) < HELLO_TIMEOUT + 5
    assert closed_within(stalled, FRAME_TIMEOUT + 5) < FRAME_TIMEOUT + 5
    for sock in (silent, stalled):
        sock.close()
    assert answers(data_dir, proc)


def test_a_client_that_never_reads_its_replies_holds_nothing(serve):
    """If a client sends requests but never reads the replies (its socket buffer
    fills), then the supervisor gives up on it within FRAME_TIMEOUT and serves
    others meanwhile."""
    data_dir, proc = serve()
    greedy = raw(data_dir)
    try:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert isinstance(exchange(greedy, hello()), protocol.HelloReply)
        body = msgspec.msgpack.encode(protocol.Metadata(None))
        frames = (struct.pack(">I", len(body)) + body) * 1_000_000  # ~15 MB
        outcome: list[BaseException] = []

        def send_all() -> None:  # blocks once the supervisor stops reading
            try:
                greedy.sendall(frames)
            except OSError as exc:
                outcome.append(exc)

        greedy.settimeout(None)
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        with Admin(data_dir) as admin:
            admin.create_topic("meanwhile", 1)
        sender.join(FRAME_TIMEOUT + 20)
        assert not sender.is_alive(), "the supervisor never gave up on it"
        assert [type(e) for e in outcome] in (
            [BrokenPipeError],
            [ConnectionResetError],
        ), outcome
    finally:
        greedy.close()
    assert answers(data_dir, proc)


def test_a_create_of_2000_partitions_blocks_no_one_and_no_stop(serve, tmp_path):
    """If a client creates a topic of 2,000 partitions (seconds of work), then
    other requests are answered meanwhile, the topic shows only once whole, and a
    SIGTERM during such a create stops the broker promptly (before: every control
    request waited ~80 s, clients said 'the broker went away', and so did
    SIGTERM)."""
    data_dir, proc = serve(env={"SHMBROKER_CONTROL_MAX_CONNECTIONS": "100"})

    def create(name, errors):
        try:
            with Admin(data_dir) as admin:
                admin.connection.timeout = 300
                admin.create_topic(name, 2000, {"ring.bytes": 1 << 16})
        except Exception as exc:
            errors.append(exc)

    def opened(name) -> int:
        return sum(1 for _ in data_dir.glob(f"{name}-*"))

    errors: list[Exception] = []
    creator = threading.Thread(target=create, args=("big", errors))
    creator.start()
    wait_until(lambda: opened("big") > 20, 60, "the create to begin")
    with Admin(data_dir) as admin:
        served = 0
        while opened("big") < 1900 and creator.is_alive():
            start = time.monotonic()
            assert "big" not in admin.list_topics()  # not shown half made
            admin.create_topic(f"small{served}", 1)
            assert time.monotonic() - start < 1.0
            served += 1
        assert served > 3
    creator.join(120)
    assert not errors, errors
    with Admin(data_dir) as admin:
        assert admin.list_topics()["big"].partitions == 2000
    creator = threading.Thread(target=create, args=("bigger", errors))
    creator.start()
    wait_until(lambda: opened("bigger") > 20, 60, "the second create to begin")
    start = time.monotonic()
    proc.terminate()
    proc.wait(30)
    assert time.monotonic() - start < 10
    creator.join(30)
    assert [type(e).__name__ for e in errors] in (["BrokerUnavailable"], [])
