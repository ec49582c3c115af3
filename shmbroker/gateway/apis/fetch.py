"""Fetch (key 1), v4-v11: sessionless (session id 0; v7+ sessions are not kept),
every requested partition in the answer.

A partition's records start at the batch that holds the fetch offset (clients
skip the records before it) and are whole batches, straight from the connection's
reader of that partition (a view of its ring copy-out, or the bytes of a segment
read): no record byte is copied into the response. KIP-74: the first batch of the
first partition with data comes whole even above max_bytes or the partition's
max; later ones stop at the limits. With fewer than min_bytes, the request parks
on the partitions' wakers (a ring's futex, through a thread) until data comes or
max_wait_ms passes, never in a sleep loop. READ_COMMITTED reads as
READ_UNCOMMITTED: without transactions, the last stable offset is the high
watermark. A response holds at most 55 MiB (Kafka's broker fetch.max.bytes).
Differs from Kafka: no fetch sessions, no preferred read replica (-1).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shmbroker import errors
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, register
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, PartitionFetched, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session
    from shmbroker.gateway.topics import Partition

API_KEY = 1
FETCH_MAX_BYTES = 55 << 20  # a response's bytes at most, whatever the client asks
# (Kafka's broker fetch.max.bytes default): records are read into memory to send


@register(API_KEY, "Fetch", 4, 11, holds_views=True)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    fetch = _Fetch(session, version, request)
    wanted = {
        t.topic: max((p.partition for p in t.partitions), default=0)
        for t in request.topics
    }
    missing = session.gateway.missing(wanted)
    if missing:
        return fetch.after_loading(missing)
    fetch.read()
    if fetch.done():
        return fetch.body()
    return fetch.long_poll()


class _Wanted:
    """One requested partition and what was read for it so far."""

    __slots__ = (
        "chunks", "code", "high_watermark", "index", "limit", "log_start",
        "next_offset", "partition", "position", "size", "topic",
    )  # fmt: skip

    def __init__(self, topic: str, index: int, offset: int, limit: int) -> None:
        self.topic = topic
        self.index = index
        self.next_offset = offset  # where the next read starts
        self.limit = limit  # partition_max_bytes
        self.partition: Partition | None = None
        self.code = Code.NONE
        self.high_watermark = self.log_start = -1
        self.chunks: list[Buffer] = []
        self.size = 0
        self.position = -1  # the ring's tail when last read: park from there


class _Fetch:
    def __init__(self, session: Session, version: int, request: Any) -> None:
        self.session = session
        self.version = version
        self.wait = codec.milliseconds(request.max_wait) / 1000
        self.min_bytes = request.min_bytes
        self.max_bytes = min(
            request.max_bytes if request.max_bytes > 0 else FETCH_MAX_BYTES,
            FETCH_MAX_BYTES,
        )
        self.wanted = [
            _Wanted(t.topic, p.partition, p.fetch_offset, p.partition_max_bytes)
            for t in request.topics
            for p in t.partitions
        ]
        self.size = 0
        self.errors = False

    async def after_loading(self, names: list[str]) -> Body:
        await self.session.gateway.load(names)
        self.read()
        if self.done():
            return self.body()
        return await self.long_poll()

    def done(self) -> bool:
        return self.size >= self.min_bytes or self.errors or self.wait <= 0

    def read(self) -> None:
        """Read every partition that may give more (without waiting)."""
        topics = self.session.gateway.topics
        for w in self.wanted:
            if w.code != Code.NONE:
                continue
            if not authorizer.topic_allowed(self.session, w.topic, "read"):
                self._error(w, Code.TOPIC_AUTHORIZATION_FAILED)
                continue
            partition = topics.partition(w.topic, w.index)
            if partition is None or partition.retired:
                self._error(w, Code.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            w.partition = partition
            try:
                self._read(w, partition)
            except errors.UnknownTopic:  # deleted under us
                topics.drop(partition.topic.name, partition.topic.topic_id)
                self._error(w, Code.UNKNOWN_TOPIC_OR_PARTITION)
            except errors.ClosedError:  # re-created under us: refresh metadata
                self._error(w, Code.NOT_LEADER_OR_FOLLOWER)
            except errors.OffsetOutOfRange:
                self.session.forget_reader(partition)
                self._error(w, Code.OFFSET_OUT_OF_RANGE)
            except errors.ShmbrokerError as exc:
                self.session.forget_reader(partition)
                self._error(w, code_for(exc))

    def _read(self, w: _Wanted, partition: Partition) -> None:
        stat = partition.ring.stat()
        w.log_start, w.position = stat.log_start_offset, stat.tail_position
        w.high_watermark = max(w.high_watermark, stat.next_offset)
        offset = w.next_offset
        if not w.log_start <= offset <= w.high_watermark:
            raise errors.OffsetOutOfRange(f"offset {offset} of {partition.name}")
        limit = min(w.limit - w.size, self.max_bytes - self.size)
        if offset == w.high_watermark or limit <= 0:
            return
        reader = self.session.reader(partition, offset)
        view = reader.read_slice(offset, limit)
        if not view:
            return
        if len(view) > limit and self.size > 0:  # KIP-74 is for the first batch only
            reader.seek(offset)
            return
        w.chunks.append(view)
        w.size += len(view)
        self.size += len(view)
        w.next_offset = reader.offset
        w.high_watermark = max(w.high_watermark, reader.offset)

    def _error(self, w: _Wanted, code: Code) -> None:
        w.code = code
        self.errors = True

    async def long_poll(self) -> Body:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while True:
            # views of a reader's buffer would not survive its next read
            for w in self.wanted:
                w.chunks = [c if isinstance(c, bytes) else bytes(c) for c in w.chunks]
            woken: asyncio.Future[None] = loop.create_future()
            parked = [w.partition for w in self.wanted if w.partition is not None]
            for w in self.wanted:
                if w.partition is not None:
                    w.partition.waker.park(woken, w.position)
            timer = loop.call_at(deadline, _wake, woken)
            try:
                await woken
            finally:
                timer.cancel()
                for partition in parked:
                    partition.waker.unpark(woken)
            self.read()
            if self.done() or loop.time() >= deadline:
                return self.body()

    def body(self) -> Body:
        topics: dict[str, list[PartitionFetched]] = {}
        for w in self.wanted:
            records: Buffer = b""
            if w.code == Code.NONE and w.chunks:
                records = w.chunks[0] if len(w.chunks) == 1 else b"".join(w.chunks)
            topics.setdefault(w.topic, []).append(
                PartitionFetched(
                    w.index, w.code, w.high_watermark, w.log_start, records
                )
            )
        return codec.encode_fetch_response(self.version, list(topics.items()))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
