"""The control socket `<data-dir>/control.sock` (mode 0600): one thread per client
connection reads requests (protocol.py) and answers each through the handler. A
connection's end is reported to the handler, so that the group coordinator can treat
a local consumer's closed connection as its death.

Bounded against floods and stuck peers: at most max_connections clients (more are
refused with BrokerBusy), a client must say Hello first and within HELLO_TIMEOUT, a
frame must arrive (and a reply leave) within FRAME_TIMEOUT once begun, and the accept
loop outlives running out of file descriptors (EMFILE), backing off until some close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from shmbroker import errors, protocol

log = logging.getLogger(__name__)

Handler = Callable[[protocol.Request, "ControlConnection"], protocol.Reply]
MAX_CONNECTIONS = 1000  # clients at once (a thread each)
HELLO_TIMEOUT = 5.0  # seconds a new connection has to say Hello
FRAME_TIMEOUT = 5.0  # seconds a frame may take once begun, in or out
ACCEPT_BACKOFF_MAX = 1.0  # seconds between accepts while out of descriptors


class ControlConnection:
    """One client connection, as the handler sees it."""

    def __init__(self, sock: socket.socket, conn_id: int) -> None:
        self.sock = sock
        self.conn_id = conn_id
        self.client_id = ""
        self.pid = 0


class ControlServer:
    """Serves the control socket from its own threads; `close()` stops it."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        on_close: Callable[[ControlConnection], None] | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.path = path
        self._handler = handler
        self._on_close = on_close
        self.max_connections = max_connections
        self.hello_timeout = hello_timeout
        self._stopping = threading.Event()
        # a socket file left by a killed supervisor: ours now (we hold the lock)
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: no window where others may connect
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_umask)
        self._sock.listen(128)
        self._connections: dict[int, ControlConnection] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept_loop, name="control-accept", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        backoff = 0.0
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError as exc:
                if self._closed:
                    return
                # EMFILE/ENFILE and the like: those we serve keep their descriptors,
                # and closing ones free them; never stop accepting for good
                if not backoff:
                    log.error(
                        "control socket: accept failed (%s) with %d connections "
                        "open; retrying",
                        exc,
                        len(self._connections),
                    )
                backoff = min(max(2 * backoff, 0.01), ACCEPT_BACKOFF_MAX)
                self._stopping.wait(backoff)
                continue
            if backoff:
                log.warning("control socket: accepting connections again")
                backoff = 0.0
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                if len(self._connections) >= self.max_connections:
                    self._refuse(sock)
                    continue
                self._next_id += 1
                sock.setblocking(False)  # protocol.receive spins, then polls
                conn = ControlConnection(sock, self._next_id)
                self._connections[conn.conn_id] = conn
            threading.Thread(
                target=self._serve, args=(conn,), name="control", daemon=True
            ).start()

    def _refuse(self, sock: socket.socket) -> None:
        """Say why in the Hello's place, without waiting on the peer, and hang up."""
        message = (
            f"the broker serves {self.max_connections} control connections already "
            f"(control.max.connections): close some clients, or raise it"
        )
        log.warning("control socket: refused a connection: %s", message)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            protocol.send(sock, _error("BrokerBusy", message), timeout=0)
        sock.close()

    def _serve(self, conn: ControlConnection) -> None:
        said_hello = False
        try:
            while True:
                body = protocol.receive(
                    conn.sock,
                    timeout=None if said_hello else self.hello_timeout,
                    frame_timeout=FRAME_TIMEOUT,
                )
                if body is None:
                    return
                try:
                    request = protocol.request_decoder.decode(body)
                except msgspec.DecodeError as exc:
                    log.warning("control client %s: bad request: %s", conn.pid, exc)
                    protocol.send(
                        conn.sock, _error("ProtocolError", str(exc)), FRAME_TIMEOUT
                    )
                    continue
                if not said_hello and not isinstance(request, protocol.Hello):
                    protocol.send(
                        conn.sock,
                        _error(
                            "ProtocolError",
                            f"{type(request).__name__} before Hello: a control "
                            f"connection says Hello first",
                        ),
                        FRAME_TIMEOUT,
                    )
                    return
                reply = self._answer(request, conn)
                protocol.send(conn.sock, reply, FRAME_TIMEOUT)
                if isinstance(request, protocol.Hello):
                    if isinstance(reply, protocol.ErrorReply):
                        return  # a client of another protocol version: hang up
                    said_hello = True
        except TimeoutError:
            log.info(
                "control connection %d (pid %d) closed: %s",
                conn.conn_id,
                conn.pid,
                "a frame stalled" if said_hello else "no Hello in time",
            )
        except (OSError, errors.ProtocolError) as exc:
            log.debug("control connection %d ended: %s", conn.conn_id, exc)
        finally:
            with self._lock:
                self._connections.pop(conn.conn_id, None)
            conn.sock.close()
            if self._on_close is not None:
                self._on_close(conn)

    def _answer(
        self, request: protocol.Request, conn: ControlConnection
    ) -> protocol.Reply:
        if isinstance(request, protocol.Hello):
            if request.version != protocol.PROTOCOL_VERSION:
                return _error(
                    "ProtocolError",
                    f"client speaks control protocol {request.version}, this "
                    f"supervisor {protocol.PROTOCOL_VERSION}: upgrade one of them",
                )
            conn.client_id, conn.pid = request.client_id, request.pid
        try:
            return self._handler(request, conn)
        except errors.ShmbrokerError as exc:
            return protocol.error_reply(exc)
        except Exception as exc:  # a bug: say so to the client, keep serving
            log.exception("control request %r failed", request)
            return _error("ShmbrokerError", f"internal error in the supervisor: {exc}")

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            self._closed = True
            connections = list(self._connections.values())
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in connections:
            with contextlib.suppress(OSError):  # it may be closing by itself
                conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join()
        self.path.unlink(missing_ok=True)


def _error(kind: str, message: str) -> protocol.ErrorReply:
    return protocol.ErrorReply(kind, message)
