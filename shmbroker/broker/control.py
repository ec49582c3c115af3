"""The control socket `<data-dir>/control.sock` (mode 0600): one thread per client
connection reads requests (protocol.py) and answers each through the handler. A
connection's end is reported to the handler, so that the group coordinator can treat
a local consumer's closed connection as its death."""

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
    ) -> None:
        self.path = path
        self._handler = handler
        self._on_close = on_close
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
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._next_id += 1
                sock.setblocking(False)  # protocol.receive spins, then polls
                conn = ControlConnection(sock, self._next_id)
                self._connections[conn.conn_id] = conn
            threading.Thread(
                target=self._serve, args=(conn,), name="control", daemon=True
            ).start()

    def _serve(self, conn: ControlConnection) -> None:
        try:
            while True:
                body = protocol.receive(conn.sock)
                if body is None:
                    return
                try:
                    request = protocol.request_decoder.decode(body)
                except msgspec.DecodeError as exc:
                    log.warning("control client %s: bad request: %s", conn.pid, exc)
                    protocol.send(conn.sock, _error("ProtocolError", str(exc)))
                    continue
                reply = self._answer(request, conn)
                protocol.send(conn.sock, reply)
                if isinstance(request, protocol.Hello) and isinstance(
                    reply, protocol.ErrorReply
                ):
                    return  # a client of another protocol version: hang up
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
