"""One client connection: its requests answered strictly in order, its readers.

Every complete frame of a read is queued; the queue is worked through at once, and
the responses of a burst go out in one `writelines`. A handler that must wait (a
long-poll Fetch, an fsync, the supervisor) holds the requests behind it, as Kafka
does: clients pipeline, and expect their answers in order.

Write flow control at a high-water mark of 0: the transport says `pause_writing`
as soon as anything stays unsent, and no request is worked on until it has all
gone to the kernel. That bounds what a slow reader costs us, and it keeps every
memoryview a Fetch answer holds (a reader's buffer) intact until it is sent: the
reader is not read again before then.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway.apis import APIS, Api, Body
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer
from shmbroker.log.reader import LogReader

if TYPE_CHECKING:
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.topics import Partition

log = logging.getLogger(__name__)

PENDING_BYTES = 64 << 20  # stop reading from a client with this much queued
PENDING_FRAMES = 4096
API_VERSIONS = 18  # answered in its v0 format at any version (KIP-511)


class Close(Exception):
    """Close the connection; the message says why (logged, not sent)."""


class Session:
    def __init__(
        self, gateway: Gateway, transport: asyncio.Transport, peer: str
    ) -> None:
        self.gateway = gateway
        self.transport = transport
        self.peer = peer
        self.client_id: str | None = None
        self._pending: deque[Buffer] = deque()
        self._pending_bytes = 0
        self._busy = False  # a handler is waiting: the rest stays queued
        self._paused = False  # the transport has unsent bytes
        self._reading_paused = False
        self.closed = False
        self._readers: dict[str, tuple[Partition, LogReader]] = {}

    # ---- requests in, responses out -------------------------------------------------

    def received(self, frames: list[Buffer]) -> None:
        """The complete frames of one read."""
        self._pending.extend(frames)
        self._pending_bytes += sum(map(len, frames))
        if not self._busy and not self._paused:
            self._work()
        if (
            self._pending_bytes > PENDING_BYTES or len(self._pending) > PENDING_FRAMES
        ) and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _work(self) -> None:
        out: list[Buffer] = []
        while self._pending and not self._busy and not self._paused:
            frame = self._pending.popleft()
            self._pending_bytes -= len(frame)
            try:
                correlation_id, api, reply = self._dispatch(frame)
            except Close as exc:
                self.close(str(exc))
                return
            if inspect.isawaitable(reply):
                self._busy = True
                task = asyncio.ensure_future(reply)
                task.add_done_callback(
                    functools.partial(
                        self._resume, correlation_id=correlation_id, api=api
                    )
                )
                break
            if reply is not None:
                out += codec.frame_response(correlation_id, reply)
            if api.holds_views and out:  # send before any reader reads again
                self._write(out)
                out = []
        if out:
            self._write(out)
        if self._reading_paused and not self._pending and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def _dispatch(self, frame: Buffer) -> tuple[int, Api, Any]:
        try:
            key, version, correlation_id = codec.peek_header(frame)
        except errors.ProtocolError as exc:
            raise Close(str(exc)) from None
        api = APIS.get(key)
        if api is None:
            raise Close(f"unknown API key {key} (v{version})")
        if not api.min_version <= version <= api.max_version:
            if key != API_VERSIONS or version < 0:
                raise Close(
                    f"{api.name} v{version} is not supported (we serve "
                    f"v{api.min_version}-v{api.max_version})"
                )
            header = codec.RequestHeader(key, version, correlation_id, None, -1)
        else:
            try:
                header = codec.parse_header(frame, codec.is_flexible(key, version))
            except errors.ProtocolError as exc:
                raise Close(f"{api.name} v{version}: {exc}") from None
            self.client_id = header.client_id
        try:
            return correlation_id, api, api.handler(self, header, frame)
        except errors.ProtocolError as exc:
            raise Close(f"{api.name} v{version}: {exc}") from None
        except Exception as exc:
            log.exception(
                "gateway: %s v%d from %s failed", api.name, version, self.peer
            )
            raise Close(f"{api.name} v{version} failed: {exc!r}") from None

    def _resume(
        self, task: asyncio.Future[Body], correlation_id: int, api: Api
    ) -> None:
        self._busy = False
        if self.closed:
            if not task.cancelled():
                task.exception()  # retrieved: the connection is gone anyway
            return
        try:
            reply = task.result()
        except errors.ProtocolError as exc:
            self.close(f"{api.name}: {exc}")
            return
        except Exception as exc:
            log.error("gateway: %s from %s failed", api.name, self.peer, exc_info=exc)
            self.close(f"{api.name} failed: {exc!r}")
            return
        if reply is not None:
            self._write(codec.frame_response(correlation_id, reply))
        self._work()

    def _write(self, buffers: list[Buffer]) -> None:
        if not self.closed:
            self.transport.writelines(buffers)

    # ---- flow control ---------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if not self._busy and not self.closed:
            self._work()

    # ---- what requests share --------------------------------------------------------

    def reader(self, partition: Partition, offset: int) -> LogReader:
        """This connection's reader of the partition (a consumer reads on where
        its last fetch ended, without a seek)."""
        held = self._readers.get(partition.name)
        if held is None or held[0] is not partition:
            if len(self._readers) > 4096:  # a client touring many topics
                self._readers.clear()
            held = self._readers[partition.name] = (
                partition,
                LogReader(partition.reader, offset),
            )
        return held[1]

    def forget_reader(self, partition: Partition) -> None:
        self._readers.pop(partition.name, None)

    def run(self, awaitable: Awaitable[Body]) -> Awaitable[Body]:
        return awaitable

    def close(self, why: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if why:
            log.info("gateway: closing connection from %s: %s", self.peer, why)
        self._pending.clear()
        self._readers.clear()
        self.transport.close()
        self.gateway.sessions.discard(self)
