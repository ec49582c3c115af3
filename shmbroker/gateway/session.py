"""One client connection: its requests handled strictly in order, its answers sent
in the same order, its readers.

Every complete frame of a read is queued and the queue is worked through at once;
the answers of a burst go out in one `writelines`. Each request gets a slot in the
order it came; a slot is written once it and every slot before it are answered.
A handler that must wait before its effect (a long-poll Fetch, an append waiting for
room, metadata from the supervisor) holds the requests behind it, as Kafka does.
One whose effect is done and whose answer only waits (`Deferred`: an acks=all
Produce waiting for fsync) does not: the next appends go on, so the batches a
client pipelines share one fsync, and their answers still go out in order.

Write flow control at a high-water mark of 0: the transport says `pause_writing`
as soon as anything stays unsent, and no request is worked on until it has all
gone to the kernel. That bounds what a slow reader costs us, and it keeps every
memoryview a Fetch answer holds (a reader's buffer) intact until it is sent: the
reader is not read again before then. An answer with views that has to wait behind
an earlier one is copied instead.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway.apis import APIS, Api, Body, Deferred, sasl_authenticate
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer
from shmbroker.log.reader import LogReader

if TYPE_CHECKING:
    from shmbroker.gateway.groups import GroupLine
    from shmbroker.gateway.server import Gateway
    from shmbroker.gateway.topics import Partition

log = logging.getLogger(__name__)

PENDING_BYTES = 64 << 20  # stop reading from a client with this much queued
PENDING_FRAMES = 4096
MAX_SLOTS = 1024  # answers waiting to be sent: beyond this, stop taking requests
MAX_READERS = 64  # partition readers a connection keeps
API_VERSIONS = 18  # answered in its v0 format at any version (KIP-511)


class Close(Exception):
    """Close the connection; the message says why (logged, not sent)."""


def _raw_token(session: Session, header: codec.RequestHeader, frame: Buffer) -> Any:
    return sasl_authenticate.handle_raw(session, bytes(frame))


# the raw SASL tokens after a SaslHandshake v0: no header in, none out
RAW_TOKEN = Api(-1, "SASL token", 0, 0, _raw_token, False)


class _Slot:
    """A request's place in the order of answers."""

    __slots__ = ("api", "body", "correlation_id", "done", "flexible", "started")

    def __init__(self, correlation_id: int | None, api: Api, flexible: bool) -> None:
        self.correlation_id = correlation_id  # None: a raw SASL token's answer
        self.api = api
        self.flexible = flexible  # response header v1
        self.body: Body = None
        self.done = False
        self.started = time.perf_counter()  # for the request time metric


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
        self._slots: deque[_Slot] = deque()
        self._blocked = False  # a handler waits before its effect: the rest waits
        self._paused = False  # the transport has unsent bytes
        self._reading_paused = False
        self.closed = False
        self._lost = False  # the client went: finish its requests, send nothing
        # this connection's readers, least recently used first: each may hold a
        # ring copy-out buffer (1 MiB), so a client touring partitions is bounded
        self._readers: OrderedDict[str, tuple[Partition, LogReader]] = OrderedDict()
        self._tasks: dict[asyncio.Future[Any], _Slot] = {}  # cancelled on close
        self.auth = gateway.authenticator(transport, peer)  # gateway/sasl.py
        self._closing: str | None = None  # close once what is answered is sent
        self.group_line: GroupLine | None = None  # gateway/groups.py makes it

    # ---- requests in, responses out -------------------------------------------------

    def received(self, frames: list[Buffer]) -> None:
        """The complete frames of one read."""
        self._pending.extend(frames)
        self._pending_bytes += sum(map(len, frames))
        self._work()
        if (
            self._pending_bytes > PENDING_BYTES or len(self._pending) > PENDING_FRAMES
        ) and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _work(self) -> None:
        while (
            self._pending
            and not self._blocked
            and not self._paused
            and not self.closed
            and self._closing is None
            and len(self._slots) < MAX_SLOTS
        ):
            frame = self._pending.popleft()
            self._pending_bytes -= len(frame)
            try:
                slot, reply = self._dispatch(frame)
            except Close as exc:
                self.close(str(exc))
                return
            self._slots.append(slot)
            self._settle(slot, reply)
            if slot.done and slot.api.holds_views:
                self._flush()  # before any reader reads again
        self._flush()
        if (
            self._reading_paused
            and not self._pending
            and not self.closed
            and not self._paused
            and not self._lost
        ):
            self._reading_paused = False
            self.transport.resume_reading()

    def _settle(self, slot: _Slot, reply: Any) -> None:
        """Fill slot with reply, or with what its awaitable gives later."""
        if isinstance(reply, Deferred):
            task = asyncio.ensure_future(reply.answer)
            self._tasks[task] = slot
            task.add_done_callback(
                functools.partial(self._completed, slot=slot, blocking=False)
            )
        elif inspect.isawaitable(reply):
            self._blocked = True
            task = asyncio.ensure_future(reply)
            self._tasks[task] = slot
            task.add_done_callback(
                functools.partial(self._completed, slot=slot, blocking=True)
            )
        else:
            self._answered(slot, reply)

    def _answered(self, slot: _Slot, body: Body) -> None:
        if body is not None and slot.api.holds_views and self._slots[0] is not slot:
            body = [b if isinstance(b, bytes) else bytes(b) for b in body]
        slot.body = body
        slot.done = True

    def _completed(
        self, task: asyncio.Future[Any], slot: _Slot, blocking: bool
    ) -> None:
        self._tasks.pop(task, None)
        if blocking:
            self._blocked = False
        if self.closed:
            if not task.cancelled():
                task.exception()  # retrieved: the connection is gone anyway
            return
        if task.cancelled():  # a fetch of a client that went: no answer
            self._answered(slot, None)
            self._flush()
            self._work()
            return
        try:
            result = task.result()
        except errors.ProtocolError as exc:
            self.close(f"{slot.api.name}: {exc}")
            return
        except Exception as exc:
            log.error(
                "gateway: %s from %s failed", slot.api.name, self.peer, exc_info=exc
            )
            self.close(f"{slot.api.name} failed: {exc!r}")
            return
        if isinstance(result, Deferred):  # the effect is done now; the answer waits
            self._settle(slot, result)
        else:
            self._answered(slot, result)
        self._flush()
        self._work()

    def _flush(self) -> None:
        """Write every answered slot at the head of the order."""
        out: list[Buffer] = []
        slots = self._slots
        while slots and slots[0].done:
            slot = slots.popleft()
            self.gateway.metrics.answered(slot.api.name, slot.started)
            if slot.body is None:
                continue
            if slot.correlation_id is None:  # a raw SASL token
                out.append(codec.FRAME_SIZE.pack(sum(map(len, slot.body))))
                out += slot.body
            else:
                out += codec.frame_response(
                    slot.correlation_id, slot.body, slot.flexible
                )
        if out and not self.closed and not self._lost:
            self.transport.writelines(out)
            self.gateway.metrics.bytes_out.add(sum(map(len, out)))
        if self._closing is not None and not slots:
            self.close(self._closing)
        if self._lost and not self._pending and not self._slots:
            self.close()

    def _dispatch(self, frame: Buffer) -> tuple[_Slot, Any]:
        if self.auth.raw_tokens:  # after a SaslHandshake v0: no header
            answer = sasl_authenticate.handle_raw(self, bytes(frame))
            return _Slot(None, RAW_TOKEN, False), answer
        try:
            key, version, correlation_id = codec.peek_header(frame)
        except errors.ProtocolError as exc:
            raise Close(str(exc)) from None
        refused = self.auth.refuses(key)
        if refused is not None:
            raise Close(refused)
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
            flexible = False
        else:
            flexible = codec.is_flexible(key, version)
            try:
                header = codec.parse_header(frame, flexible)
            except errors.ProtocolError as exc:
                raise Close(f"{api.name} v{version}: {exc}") from None
            self.client_id = header.client_id
        # every response header is v0 but for flexible APIs' (ApiVersions' too)
        slot = _Slot(correlation_id, api, flexible and key != API_VERSIONS)
        try:
            return slot, api.handler(self, header, frame)
        except errors.ProtocolError as exc:
            raise Close(f"{api.name} v{version}: {exc}") from None
        except Exception as exc:
            log.exception(
                "gateway: %s v%d from %s failed", api.name, version, self.peer
            )
            raise Close(f"{api.name} v{version} failed: {exc!r}") from None

    # ---- flow control ---------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if not self.closed:
            self._work()

    # ---- what requests share --------------------------------------------------------

    def reader(self, partition: Partition, offset: int) -> LogReader:
        """This connection's reader of the partition (a consumer reads on where
        its last fetch ended, without a seek)."""
        held = self._readers.get(partition.name)
        if held is None or held[0] is not partition:
            if len(self._readers) >= MAX_READERS:
                self._readers.popitem(last=False)
            held = self._readers[partition.name] = (
                partition,
                LogReader(partition.reader, offset),
            )
        else:
            self._readers.move_to_end(partition.name)
        return held[1]

    def forget_reader(self, partition: Partition) -> None:
        self._readers.pop(partition.name, None)

    def lost(self) -> None:
        """The client closed the connection: the requests it sent are still
        carried out (a client may send acks=0 batches and close at once, as Kafka
        carries them out too), but fetches are dropped and nothing is sent."""
        if self.closed or self._lost:
            return
        self._lost = True
        for task, slot in list(self._tasks.items()):
            if slot.api.holds_views:  # a parked fetch: nobody to answer
                task.cancel()
        self._paused = False
        self._work()

    def close_after_answers(self, why: str) -> None:
        """Take no more requests; close once every answer so far is sent (a
        failed login's error reaches the client before the close)."""
        if self._closing is None:
            self._closing = why
            self._pending.clear()

    def close(self, why: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if why:
            log.info("gateway: closing connection from %s: %s", self.peer, why)
        self._pending.clear()
        self._readers.clear()
        for task in list(self._tasks):  # a parked fetch would wait out max_wait_ms
            task.cancel()
        self.transport.close()
        if self.group_line is not None:
            self.group_line.close()
        self.gateway.sessions.discard(self)
