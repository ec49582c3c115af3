"""Produce (key 0), v3-v7 served, v0-v7 advertised (librdkafka before 2.11.1
compresses only when v0 is in range, and enables zstd only when v7 is); v0-v2
(message format v0/v1) close the connection.

Each partition's batch is checked (one whole batch, magic 2, no control or
transactional bit, at most max.message.bytes: MESSAGE_TOO_LARGE), then the C core
validates it (CRC-32C, record count, codec <= 4, every record of an uncompressed
batch) and appends the client's bytes as they came: compressed batches stay
compressed, and only baseOffset and partitionLeaderEpoch (outside the CRC) change.
An append that finds the ring full of unspilled bytes waits for room in a thread,
up to the request's timeout. acks=0 gets no response (an error closes the
connection, as Kafka does); acks=1 is answered at append; acks=-1 once the batch is
fsynced (a waiting request makes the spill fsync at once, and concurrent requests
share it), or at append with gateway.acks.all.fsync = false.
An idempotent producer's batches are checked against the last 5 of its
(gateway/sequences.py): a retry gets the first answer, a gap
OUT_OF_ORDER_SEQUENCE_NUMBER.
Differs from Kafka: a LogAppendTime topic's batch gets its maxTimestamp set and its
CRC recomputed here (the only batch we rewrite); no transactions.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from shmbroker import _native, errors
from shmbroker.gateway import authorizer
from shmbroker.gateway.apis import Body, Deferred, Reply, register
from shmbroker.gateway.sequences import ProducerBatch
from shmbroker.kafka import codec
from shmbroker.kafka.codec import Buffer, PartitionProduced, RequestHeader
from shmbroker.kafka.errors import Code, code_for

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session
    from shmbroker.gateway.topics import Partition

API_KEY = 0
MAGIC_AT, ATTRIBUTES_AT, MAX_TIMESTAMP_AT, CRC_AT = 16, 21, 35, 17
CONTROL, TRANSACTIONAL, LOG_APPEND_TIME = 0x20, 0x10, 0x08
_I32 = struct.Struct(">i")


@register(API_KEY, "Produce", 0, 7)
def handle(session: Session, header: RequestHeader, frame: Buffer) -> Any:
    version = header.api_version
    if version < 3:
        raise errors.ProtocolError(
            f"Produce v{version} carries message format v0/v1, which is not served: "
            f"a client of Kafka 0.11 or later sends v3+"
        )
    request = codec.decode_request(API_KEY, version, frame, header.body_offset)
    work = _Produce(session, version, request)
    wanted = {
        t.name: max((p.index for p in t.partition_data), default=0)
        for t in request.topic_data
    }
    missing = session.gateway.missing(wanted)
    if missing:
        return work.after_loading(missing)
    return work.run(0)


class _Produce:
    """One Produce request: its partitions appended in order, then answered."""

    def __init__(self, session: Session, version: int, request: Any) -> None:
        self.session = session
        self.gateway = session.gateway
        self.version = version
        self.acks = request.acks
        self.timeout = max(0, codec.milliseconds(request.timeout)) / 1000
        self.transactional = request.transactional_id is not None
        # (topic, index, records) in request order, and their answers
        self.items = [
            (t.name, p.index, p.records)
            for t in request.topic_data
            for p in t.partition_data
        ]
        self.results: list[PartitionProduced] = []
        self.appended: list[tuple[int, Partition, int]] = []  # result #, partition, end

    async def after_loading(self, names: list[str]) -> Body | Deferred:
        await self.gateway.load(names)
        return await _settle(self.run(0))

    def run(self, start: int) -> Reply:
        """Append items from start on; an awaitable if one must wait for room."""
        topics = self.gateway.topics
        for i in range(start, len(self.items)):
            name, index, records = self.items[i]
            denied = authorizer.topic_code(self.session, name, "write")
            if denied != Code.NONE:
                self.results.append(PartitionProduced(index, denied))
                continue
            partition = topics.partition(name, index)
            if partition is None:
                self.results.append(
                    PartitionProduced(index, Code.UNKNOWN_TOPIC_OR_PARTITION)
                )
                continue
            code, batch = self._check(partition, records)
            if code != Code.NONE:
                self.results.append(PartitionProduced(index, code))
                continue
            producer = ProducerBatch.of(batch)
            if producer.producer_id >= 0:
                code, duplicate = partition.sequences.check(
                    producer,
                    partition.reader,
                    search=not self.gateway.producer_ids.is_ours(producer.producer_id),
                )
                if code != Code.NONE:
                    self.results.append(PartitionProduced(index, code))
                    continue
                if duplicate >= 0:  # a retry: answered as the first time
                    self._appended(partition, index, batch, duplicate, None)
                    continue
            try:
                base = partition.ring.append_encoded(batch, timeout=0)
            except errors.RingFull:  # the spill is behind: wait for room in a thread
                return self._append_waiting(i, partition, batch, producer)
            except errors.ShmbrokerError as exc:
                self._failed(partition, index, exc)
                continue
            self._appended(partition, index, batch, base, producer)
        return self._answer()

    async def _append_waiting(
        self, i: int, partition: Partition, batch: bytes, producer: ProducerBatch
    ) -> Body | Deferred:
        try:
            base = await self.gateway.blocking_on(
                [partition],
                lambda: partition.ring.append_encoded(batch, timeout=self.timeout),
            )
        except errors.ShmbrokerError as exc:
            self._failed(partition, partition.index, exc)
        else:
            self._appended(partition, partition.index, batch, base, producer)
        return await _settle(self.run(i + 1))

    def _check(self, partition: Partition, records: bytes | None) -> tuple[Code, bytes]:
        """What the C core does not check; the batch to append (rewritten only for
        a LogAppendTime topic)."""
        if records is None or len(records) < _native.BATCH_HEADER_BYTES:
            return Code.CORRUPT_MESSAGE, b""
        size = len(records)
        if records[MAGIC_AT] != 2:
            return Code.UNSUPPORTED_FOR_MESSAGE_FORMAT, b""
        length = _I32.unpack_from(records, 8)[0] + 12
        if length < size:
            return Code.INVALID_RECORD, b""  # Kafka's rule: one batch per partition
        if length > size:
            return Code.CORRUPT_MESSAGE, b""  # cut short
        attributes = records[ATTRIBUTES_AT + 1]
        if attributes & CONTROL:
            return Code.INVALID_RECORD, b""
        if attributes & TRANSACTIONAL or self.transactional:
            return Code.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, b""
        topic = partition.topic
        if (
            size > topic.config.max_message_bytes
            or size > partition.ring.capacity_bytes
        ):
            return Code.MESSAGE_TOO_LARGE, b""
        if self.acks not in (0, 1, -1):
            return Code.INVALID_REQUIRED_ACKS, b""
        if topic.log_append_time:
            return Code.NONE, _log_append_time(records)
        return Code.NONE, records

    def _appended(
        self,
        partition: Partition,
        index: int,
        batch: bytes,
        base: int,
        producer: ProducerBatch | None,
    ) -> None:
        """Answer the batch appended at base (producer None: a retry found)."""
        if producer is not None:
            partition.waker.notify()
            if producer.producer_id >= 0:
                partition.sequences.appended(producer, base)
        append_time = -1
        if partition.topic.log_append_time:
            append_time = struct.unpack_from(">q", batch, MAX_TIMESTAMP_AT)[0]
        last = base + _I32.unpack_from(batch, 23)[0]
        self.appended.append((len(self.results), partition, last + 1))
        log_start = partition.reader.log_start_offset if self.version >= 5 else -1
        self.results.append(
            PartitionProduced(index, Code.NONE, base, append_time, log_start)
        )

    def _failed(
        self, partition: Partition, index: int, exc: errors.ShmbrokerError
    ) -> None:
        if isinstance(exc, errors.UnknownTopic):  # deleted: forget its rings
            self.gateway.topics.drop(partition.topic.name, partition.topic.topic_id)
        code = (
            Code.CORRUPT_MESSAGE
            if isinstance(exc, errors.InvalidArgument)
            else code_for(exc)
        )
        self.results.append(PartitionProduced(index, code))

    def _answer(self) -> Body | Deferred:
        if self.acks == 0:
            failed = [r for r in self.results if r.error_code != Code.NONE]
            if failed:  # as Kafka: the client learns of it by the closed connection
                raise errors.ProtocolError(
                    f"acks=0 produce failed with {Code(failed[0].error_code).name}"
                )
            return None
        if (
            self.acks == -1
            and self.appended
            and self.gateway.config.gateway_acks_all_fsync
        ):
            return Deferred(self._answer_durable())
        return self._body()

    async def _answer_durable(self) -> Body:
        waits = [(partition, end) for _, partition, end in self.appended]
        codes = await self.gateway.blocking_on(
            [p for p, _ in waits], _wait_durable, waits, self.timeout
        )
        for (i, _, _), code in zip(self.appended, codes, strict=True):
            if code != Code.NONE:
                self.results[i] = self.results[i]._replace(error_code=code)
        return self._body()

    def _body(self) -> Body:
        topics: dict[str, list[PartitionProduced]] = {}
        for (name, _, _), result in zip(self.items, self.results, strict=True):
            topics.setdefault(name, []).append(result)
        return [codec.encode_produce_response(self.version, list(topics.items()))]


async def _settle(reply: Reply) -> Body | Deferred:
    """The reply of a produce that waited before its appends, or its Deferred."""
    if isinstance(reply, list | Deferred) or reply is None:
        return reply
    return await reply


def _wait_durable(waits: list[tuple[Partition, int]], timeout: float) -> list[Code]:
    """In a thread: wait until each partition is fsynced up to its end offset."""
    deadline = time.monotonic() + timeout
    codes = []
    for partition, end in waits:
        try:
            left = max(0.0, deadline - time.monotonic())
            durable = partition.ring.wait_durable(end, left)
            codes.append(Code.NONE if durable else Code.REQUEST_TIMED_OUT)
        except errors.ShmbrokerError as exc:
            codes.append(code_for(exc))
    return codes


def _log_append_time(records: bytes) -> bytes:
    """The batch with its timestamp type LogAppendTime and maxTimestamp now (Kafka
    rewrites the same two fields), and so a new CRC."""
    batch = bytearray(records)
    batch[ATTRIBUTES_AT + 1] |= LOG_APPEND_TIME
    struct.pack_into(">q", batch, MAX_TIMESTAMP_AT, int(time.time() * 1000))
    crc = _native.crc32c(bytes(batch[ATTRIBUTES_AT:]))
    struct.pack_into(">I", batch, CRC_AT, crc)
    return bytes(batch)
