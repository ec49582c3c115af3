"""The gateway process: a Kafka-protocol TCP server on asyncio (uvloop when there),
one `Protocol` per connection that cuts the byte stream into frames and hands them
to its Session, and the state every connection shares (`Gateway`).

Bounds: a frame larger than `socket.request.max.bytes` (before a SASL login:
`sasl.server.max.receive.size`) or smaller than a request header closes its
connection before any of it is buffered; connections beyond `max.connections` are
closed as they come. SSL and SASL_SSL listeners are TLS (asyncio's ssl=); a
listener that is not loopback and has no authentication gets a WARNING at start.
The bound address goes to `<data-dir>/gateway.json` once the socket listens (the
supervisor and tests read the port from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import psutil

from shmbroker import errors, protocol
from shmbroker.client.admin import Admin
from shmbroker.client.connection import Connection
from shmbroker.config import BrokerConfig, Listener
from shmbroker.counters import CounterPage
from shmbroker.errors import ConfigError
from shmbroker.gateway.metrics import GatewayMetrics
from shmbroker.gateway.producer_ids import ProducerIds
from shmbroker.gateway.sasl import Authenticator
from shmbroker.gateway.session import Session
from shmbroker.gateway.topics import Partition, Topics
from shmbroker.kafka import codec
from shmbroker.users import UserStore

log = logging.getLogger(__name__)

T = TypeVar("T")
STATE_FILE = "gateway.json"
BLOCKING_THREADS = 32  # appends waiting for room, fsync waits, control requests


class Gateway:
    """What every connection of one gateway process shares."""

    def __init__(self, config: BrokerConfig, advertised: Listener) -> None:
        self.config = config
        self.advertised = advertised
        self.connection = Connection(config.data_dir, client_id="shmbroker-gateway")
        self.admin = Admin(config.data_dir, client_id="shmbroker-gateway-admin")
        self.topics = Topics(self.connection)
        self.producer_ids = ProducerIds(config.data_dir)
        self.sessions: set[Session] = set()
        self.users = UserStore(config.data_dir)
        self.executor = ThreadPoolExecutor(
            BLOCKING_THREADS, thread_name_prefix="gateway-blocking"
        )
        self.cluster_id = ""
        self.metrics = GatewayMetrics(CounterPage.detached())  # the real one: at hello

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a thread: for calls that may block (the control socket,
        an append waiting for room, a wait for fsync)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, fn, *args
        )

    async def blocking_on(
        self, partitions: list[Partition], fn: Callable[..., T], *args: Any
    ) -> T:
        """fn(*args) in a thread that calls into the partitions' rings: they are
        held until the thread is done, even if the request is cancelled before
        (a closed connection), so that no ring is unmapped under C code."""
        loop = asyncio.get_running_loop()
        for partition in partitions:
            partition.acquire()

        def release(_: object) -> None:
            for partition in partitions:
                partition.release()

        done = self.executor.submit(fn, *args)
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(release, f))
        return await asyncio.shield(asyncio.wrap_future(done))

    def authenticator(
        self, transport: asyncio.BaseTransport, peer: str
    ) -> Authenticator:
        """A new connection's: its principal is its client certificate's CN, if
        it gave one, until a SASL login."""
        principal = None
        certificate = transport.get_extra_info("peercert")
        if certificate:
            for rdn in certificate.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        principal = value
        return Authenticator(self.config, self.users, peer, principal)

    def missing(self, wanted: dict[str, int]) -> list[str]:
        """Topics of wanted (name -> highest partition asked for) not mapped."""
        return [
            name
            for name, index in wanted.items()
            if self.topics.partition(name, max(index, 0)) is None
        ]

    async def load(self, names: list[str]) -> None:
        """Map the named topics (those that exist) from the supervisor."""
        metas = await self.blocking(self.topics.fetch_metadata, names)
        self.topics.update(metas, open_new=True)

    def close(self) -> None:
        for session in list(self.sessions):
            session.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.topics.close()
        self.connection.close()
        self.admin.close()
        self.metrics.close()


class KafkaProtocol(asyncio.Protocol):
    """Cuts the stream into frames; a read's complete frames go to the session."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.max_frame = gateway.config.socket_request_max_bytes
        self.max_frame_before_login = gateway.config.sasl_server_max_receive_size
        self.session: Session | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.gateway.sessions) >= self.gateway.config.max_connections:
            log.warning(
                "gateway: refusing %s: %d connections is max.connections",
                where,
                len(self.gateway.sessions),
            )
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=0)  # see session.py: flow control
        self.session = Session(self.gateway, transport, where)
        self.gateway.sessions.add(self.session)
        self.gateway.metrics.connected()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        self.gateway.metrics.bytes_in.add(len(data))
        try:
            self._frames(session, data)
        except Exception:  # a bug of ours: this connection goes, the gateway stays
            log.exception("gateway: reading from %s failed", session.peer)
            session.close("internal error")

    def _frames(self, session: Session, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            buf: bytes | bytearray = self._buffer
        else:
            buf = data  # the usual case: frames are views of the read, not copies
        view = memoryview(buf)
        at, end = 0, len(buf)
        frames: list[codec.Buffer] = []
        if session.auth.authenticated:
            low, high = codec.MIN_REQUEST_BYTES, self.max_frame
            key = "socket.request.max.bytes"
        else:  # a raw SASL token may be shorter than any request
            low, high = 0, self.max_frame_before_login
            key = "before a login: sasl.server.max.receive.size"
        while end - at >= 4:
            (size,) = codec.FRAME_SIZE.unpack_from(buf, at)
            if not low <= size <= high:
                if frames:  # those before it are answered
                    session.received(frames)
                session.close(
                    f"request of {size} bytes: must be {low} to {high} ({key})"
                )
                return
            if end - at - 4 < size:
                break
            # the buffer is reused, so its frames are copied out (and no view of
            # it may outlive this loop); the frames of a read are views of it
            if buf is self._buffer:
                frames.append(bytes(view[at + 4 : at + 4 + size]))
            else:
                frames.append(view[at + 4 : at + 4 + size])
            at += 4 + size
        if frames:
            session.received(frames)
        view.release()
        if buf is self._buffer:
            del self._buffer[:at]
        elif at < end:
            self._buffer += data[at:]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.gateway.metrics.disconnected()
            self.session.lost()

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_writing()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_writing()


# ---- the process ---------------------------------------------------------------------


def ssl_context(config: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS server context of an SSL or SASL_SSL listener (None for the others).
    ConfigError naming the keys if the files do not load."""
    if config.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(
            config.ssl_certificate_location,
            config.ssl_key_location,
            config.ssl_key_password or None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ssl.certificate.location {config.ssl_certificate_location!r} and "
            f"ssl.key.location {config.ssl_key_location!r}: cannot load them as a PEM "
            f"certificate and its key: {exc}"
        ) from exc
    if config.ssl_client_auth != "none":
        try:
            context.load_verify_locations(config.ssl_ca_location)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"ssl.ca.location {config.ssl_ca_location!r}: cannot load it as PEM "
                f"CA certificates: {exc}"
            ) from exc
        context.verify_mode = (
            ssl.CERT_REQUIRED
            if config.ssl_client_auth == "required"
            else ssl.CERT_OPTIONAL
        )
    return context


def warn_if_open(config: BrokerConfig, listener: Listener) -> None:
    """A WARNING for a listener other hosts may reach that lets anyone in."""
    protocol = config.security_protocol
    if protocol.startswith("SASL_") or (
        protocol == "SSL" and config.ssl_client_auth == "required"
    ):
        return
    try:
        loopback = ipaddress.ip_address(listener.host).is_loopback
    except ValueError:
        loopback = listener.host == "localhost"
    if not loopback:
        log.warning(
            "gateway: the %s listener on %s:%d is not loopback and has no "
            "authentication: any host that reaches it may read, write and delete "
            "every topic. Use SASL_SSL or SASL_PLAINTEXT (listeners, "
            "sasl.enabled.mechanisms, `shmbroker users add`), or bind 127.0.0.1",
            protocol, listener.host, listener.port,
        )  # fmt: skip


def state_path(data_dir: str | os.PathLike[str], name: str = STATE_FILE) -> Path:
    return Path(data_dir) / name


def write_state(path: Path, listener: Listener, advertised: Listener) -> None:
    """Say where this gateway listens, atomically (rename)."""
    me = psutil.Process()
    document = {
        "pid": me.pid,
        "create_time": me.create_time(),
        "host": listener.host,
        "port": listener.port,
        "advertised_host": advertised.host,
        "advertised_port": advertised.port,
    }
    tmp = path.with_name(f".{path.name}.{me.pid}")
    tmp.write_text(json.dumps(document))
    tmp.rename(path)


def read_state(path: Path) -> dict[str, Any] | None:
    """A gateway's state file, if there is one and its process is alive."""
    try:
        document: dict[str, Any] = json.loads(path.read_text())
        process = psutil.Process(document["pid"])
        if abs(process.create_time() - document["create_time"]) > 0.01:
            return None  # the pid was reused
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return document


async def serve_async(
    config: BrokerConfig,
    listener: Listener,
    advertised: Listener | None = None,
    *,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    state_file: str = STATE_FILE,
) -> None:
    """Serve until stop is set (or SIGTERM/SIGINT when stop is None)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    context = ssl_context(config)
    warn_if_open(config, listener)
    gateway = Gateway(config, Listener(listener.host, listener.port))
    server = await loop.create_server(
        lambda: KafkaProtocol(gateway),
        listener.host,
        listener.port,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=1024,
        ssl=context,
        start_serving=False,  # not before the advertised address and cluster id
    )
    bound = Listener(listener.host, server.sockets[0].getsockname()[1])
    gateway.advertised = Listener(
        advertised.host if advertised else bound.host,
        advertised.port if advertised and advertised.port else bound.port,
    )
    advertised = gateway.advertised
    try:
        # the supervisor first, but a stop while waiting for it stops at once
        cancelled = threading.Event()
        hello = asyncio.ensure_future(
            gateway.blocking(_hello, gateway.connection, cancelled)
        )
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({hello, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            cancelled.set()
            await asyncio.wait({hello})
            if hello.exception() is not None:  # retrieved: we stop anyway
                log.info(
                    "gateway %d stopped before the supervisor answered", os.getpid()
                )
            return
        gateway.cluster_id = hello.result()
        gateway.metrics = GatewayMetrics(
            CounterPage.acquire(gateway.connection.shm_base())
        )
        await server.start_serving()
        write_state(state_path(config.data_dir, state_file), bound, advertised)
        log.info(
            "gateway %d listening on %s %s:%d (advertised %s:%d) for %s",
            os.getpid(),
            config.security_protocol,
            bound.host,
            bound.port,
            advertised.host,
            advertised.port,
            config.data_dir,
        )
        await stop.wait()
    finally:
        server.close()
        gateway.close()
        await server.wait_closed()
        log.info("gateway %d stopped", os.getpid())


def _hello(connection: Connection, cancelled: threading.Event) -> str:
    """The broker's id (Kafka's cluster id), once the supervisor answers; "" if
    cancelled first. Blocking: a thread's."""
    deadline = time.monotonic() + 30
    while not cancelled.is_set():
        try:
            connection.request(protocol.Metadata([]), protocol.MetadataReply)
            assert connection.hello is not None
            return connection.hello.broker_id
        except errors.BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            cancelled.wait(0.05)
    return ""


def serve(
    config: BrokerConfig,
    listener: Listener,
    advertised: Listener | None = None,
    *,
    reuse_port: bool = False,
    state_file: str = STATE_FILE,
) -> None:
    """`shmbroker gateway`: run one gateway process until SIGTERM or Ctrl-C."""
    import uvloop

    uvloop.run(
        serve_async(
            config, listener, advertised, reuse_port=reuse_port, state_file=state_file
        )
    )
