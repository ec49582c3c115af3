"""A client's line to the supervisor: the control socket, for metadata and admin only.

Producers and consumers need it once per topic (its id, partition count and configs);
after that they use the rings and segment files directly. When the supervisor is not
running (restarting, say), topic metadata comes from the registry file it keeps in the
data directory, so clients can still attach to existing topics.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import TypeVar

from shmbroker import errors, protocol, shm
from shmbroker.config import CONTROL_SOCKET, TopicConfig, default_data_dir

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0  # seconds a request waits for the supervisor to answer


class Connection:
    """Control-socket requests. Thread-safe; reconnects once per request after the
    supervisor restarted."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        client_id: str = "shmbroker",
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.data_dir = Path(default_data_dir() if data_dir is None else data_dir)
        self.client_id = client_id
        self.timeout = timeout
        self.hello: protocol.HelloReply | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def _connect(self) -> socket.socket:
        path = self.data_dir / CONTROL_SOCKET
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(path))
            sock.setblocking(False)  # protocol.receive spins, then polls
            self.hello = self._exchange(
                sock,
                protocol.Hello(protocol.PROTOCOL_VERSION, self.client_id, os.getpid()),
                protocol.HelloReply,
                self.timeout,
            )
        except errors.ShmbrokerError:  # its answer (BrokerBusy is an OSError too)
            sock.close()
            raise
        except TimeoutError as exc:
            sock.close()
            raise self._busy(exc) from exc
        except OSError as exc:
            sock.close()
            raise errors.BrokerUnavailable(
                f"no broker answers on {path} ({exc.strerror or exc}): start one with "
                f"`shmbroker serve --data-dir {self.data_dir}`"
            ) from exc
        except BaseException:
            sock.close()
            raise
        return sock

    def _busy(self, exc: TimeoutError) -> errors.BrokerBusy:
        return errors.BrokerBusy(
            f"the broker on {self.data_dir} is running but did not answer within "
            f"{self.timeout:g}s ({exc}): it is busy (e.g. creating many partitions); "
            f"try again"
        )

    @staticmethod
    def _exchange(
        sock: socket.socket, request: protocol.Request, kind: type[T], timeout: float
    ) -> T:
        try:
            protocol.send(sock, request, timeout)
        except (BrokenPipeError, ConnectionResetError):
            # hung up on at once (max.connections): its reason may be waiting
            body = protocol.receive(sock, 0)
            if body is None:
                raise
            reply = protocol.reply_decoder.decode(body)
            if isinstance(reply, protocol.ErrorReply):
                protocol.raise_error(reply)
            raise
        body = protocol.receive(sock, timeout)
        if body is None:
            raise ConnectionResetError("the supervisor closed the connection")
        reply = protocol.reply_decoder.decode(body)
        if isinstance(reply, protocol.ErrorReply):
            protocol.raise_error(reply)
        if not isinstance(reply, kind):
            raise errors.ProtocolError(
                f"supervisor answered {type(reply).__name__} to "
                f"{type(request).__name__}, expected {kind.__name__}"
            )
        return reply

    def request(
        self, request: protocol.Request, kind: type[T], timeout: float | None = None
    ) -> T:
        """Send a request, return its reply (of type kind), or raise the error the
        supervisor raised. BrokerUnavailable if no supervisor answers within
        timeout (default: the connection's; group joins wait longer)."""
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    self._sock = self._connect()
                # after the connect: abort() sets the flag, then shuts the socket
                # down, so it either sees this socket or we see the flag
                if self._aborted:
                    raise errors.ClosedError("the connection was aborted")
                try:
                    wait = self.timeout if timeout is None else timeout
                    return self._exchange(self._sock, request, kind, wait)
                except errors.ShmbrokerError:  # an answer; some are also OSErrors
                    raise
                except TimeoutError as exc:  # alive but slow: resending would repeat
                    self._sock.close()  # the request; its late answer must not
                    self._sock = None  # be taken for the next one's
                    raise self._busy(exc) from exc
                except OSError as exc:  # the supervisor restarted: connect again, once
                    self._sock.close()
                    self._sock = None
                    if attempt == 2:
                        raise errors.BrokerUnavailable(
                            f"the broker on {self.data_dir} went away: {exc}"
                        ) from exc
            raise AssertionError("unreachable")

    def abort(self) -> None:
        """From another thread: a request blocked on the supervisor (a long-poll
        heartbeat) ends at once with ClosedError; the connection is done."""
        self._aborted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    # ---- metadata -------------------------------------------------------------------

    def shm_base(self) -> str:
        if self.hello is not None:
            return self.hello.shm_base
        registry = protocol.load_registry(self.data_dir)
        return shm.broker_base(registry.shm_prefix, shm.broker_id(self.data_dir))

    def topic(self, name: str, auto_create: bool = False) -> protocol.TopicMetadata:
        """A topic's metadata: from the supervisor, or from its registry file when
        no supervisor runs (then a missing topic cannot be auto-created)."""
        try:
            reply = self.request(
                protocol.Metadata([name], auto_create), protocol.MetadataReply
            )
            return reply.topics[0]
        except errors.BrokerUnavailable:
            registry = protocol.load_registry(self.data_dir)
            entry = registry.topics.get(name)
            if entry is None:
                raise
            config = TopicConfig.from_kafka(
                {**registry.topic_defaults, **entry.configs}
            )
            return protocol.TopicMetadata(
                name, entry.topic_id, entry.partitions, config.to_kafka()
            )

    def ring_name(self, topic: protocol.TopicMetadata, partition: int) -> str:
        return shm.ring_name(self.shm_base(), topic.topic_id, partition)

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
