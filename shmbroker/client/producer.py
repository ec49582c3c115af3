"""The Producer: Kafka's producer API over the partition rings, no broker hop.

`send` queues a record for its partition (murmur2 of the key, as Kafka's Java client;
sticky partitioning for keyless records: one partition until its batch goes, then
another) and returns a RecordFuture. A partition's queue goes to its ring as one batch
when it holds `batch_records` records or `batch_size` bytes, after `linger_ms` (a
background thread; 0 appends every record at once, as Kafka), or on `flush`.
`send_batch` appends a list of records to one partition at once: the fast path. With
acks="all" a record counts as sent only once it is fsynced, and a wait for that ends
`delivery_timeout_ms` after its batch was appended (Kafka's delivery.timeout.ms) with
an error that says why: the broker is down, or its spill is failing.

No batch is larger than the topic's max.message.bytes (a list over it goes as several
batches; a record over it alone is refused with RecordTooLarge). `compression_type`
(Kafka's: gzip, snappy, lz4, zstd) compresses every batch; the limit applies to the
compressed batch, as in Kafka.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence

import msgspec

from shmbroker import _native, compression, errors, protocol
from shmbroker.accumulator import RecordAccumulator
from shmbroker.client.connection import Connection
from shmbroker.client.metrics import RECORDS_SENT, TopicCounters
from shmbroker.config import TopicConfig
from shmbroker.records import Header, RecordMetadata
from shmbroker.ring import Ring, partition_label

log = logging.getLogger(__name__)

PING_TIMEOUT = 2.0  # seconds the supervisor has to answer when a delivery timed out


class _Batch:
    """The records queued together for one partition; base_offset once appended."""

    __slots__ = ("appended_at", "base_offset", "error", "queue")

    def __init__(self, queue: _PartitionQueue) -> None:
        self.queue = queue
        self.base_offset = -1
        self.appended_at = 0.0  # time.monotonic(): delivery.timeout.ms counts from it
        self.error: errors.ShmbrokerError | None = None  # why it was never appended


class RecordFuture(msgspec.Struct, frozen=True, gc=False):
    """Where a sent record will be, once its batch is appended (kafka-python's
    FutureRecordMetadata). A Struct: one is made per send, and this is the
    cheapest object to make."""

    batch: _Batch
    index: int

    def done(self) -> bool:
        return self.batch.base_offset >= 0

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Append the record's batch now if it still waits, then its metadata (with
        acks="all", after it is fsynced: WouldBlock after timeout, or the reason
        after delivery_timeout_ms)."""
        batch = self.batch
        queue = batch.queue
        if batch.base_offset < 0:
            with queue.producer._lock:
                if batch.base_offset < 0 and batch.error is None:
                    queue.flush()
        if batch.error is not None:
            raise batch.error
        offset = batch.base_offset + self.index
        if queue.producer.durable:
            queue.wait_durable(offset + 1, timeout, batch.appended_at)
        return RecordMetadata(queue.topic.name, queue.partition, offset)


class _PartitionQueue(RecordAccumulator):
    def __init__(self, producer: Producer, ring: Ring, topic: _Topic, partition: int,
                 batch_bytes: int) -> None:  # fmt: skip
        self.producer = producer
        self.topic = topic
        self.partition = partition
        self.next_offset = -1  # one past the last record appended
        self.appended_at = 0.0  # time.monotonic() of the last append
        super().__init__(
            ring,
            # linger.ms 0: every send appends its record at once (the open batch
            # takes no record without the producer's lock then)
            batch_records=producer.batch_records if producer.linger else 1,
            batch_bytes=batch_bytes,
            timeout=producer.max_block_ms / 1000,
            max_batch_bytes=topic.max_message_bytes,
            compression_type=producer.compression_type,
            what=f"topic {topic.name!r} partition {partition}",
            future_type=RecordFuture,
        )

    @property
    def batch(self) -> _Batch:
        """The open batch's: its records' futures point at it."""
        batch: _Batch = self.open.token
        return batch

    def next_token(self) -> _Batch:
        return _Batch(self)

    def batch_appended(self, base_offset: int, records: int) -> _Batch:
        self.appended(base_offset + records)
        self.producer.records_sent.add(self.topic.name, records)
        self.batch.base_offset = base_offset
        self.batch.appended_at = self.appended_at
        if self.topic.sticky is self:
            self.topic.stick_elsewhere()
        return _Batch(self)

    def fail(self, error: errors.ShmbrokerError) -> None:
        """The queued records can never be appended (their topic was deleted):
        drop them; their futures raise error."""
        self.batch.error = error
        self.open.clear(_Batch(self))

    def appended(self, next_offset: int) -> None:
        self.next_offset = next_offset
        self.appended_at = time.monotonic()

    def wait_durable(self, offset: int, timeout: float | None, since: float) -> None:
        """Wait until the records below offset are fsynced: up to timeout (then
        WouldBlock), and no later than delivery_timeout_ms after since (then the
        error that says why)."""
        left = since + self.producer.delivery_timeout - time.monotonic()
        wait = max(0.0, left if timeout is None else min(timeout, left))
        if self.ring.wait_durable(offset, wait):
            return
        if timeout is not None and timeout < left:
            raise errors.WouldBlock(
                f"{self.topic.name}-{self.partition}: offset {offset - 1} not "
                f"fsynced within {timeout}s"
            )
        raise self._undelivered(offset)

    def _undelivered(self, offset: int) -> errors.ShmbrokerError:
        """Why the records below offset were not fsynced in time."""
        producer = self.producer
        what = (
            f"{self.topic.name}-{self.partition}: offset {offset - 1} not fsynced "
            f"{producer.delivery_timeout * 1000:.0f} ms (delivery.timeout.ms) after "
            f"it was appended"
        )
        s = self.ring.stat()
        durable = f"records are fsynced up to offset {s.durable_offset - 1}"
        if s.spill_errno:  # the supervisor's spill thread sets it on each failure
            return errors.BrokenError(
                f"{what}: the spill of this partition is failing: "
                f"{os.strerror(s.spill_errno)}; {durable}"
            )
        try:  # the spill runs in the supervisor: is it there?
            producer.connection.request(
                protocol.Metadata([]), protocol.MetadataReply, timeout=PING_TIMEOUT
            )
        except errors.BrokerUnavailable as exc:
            return errors.BrokerUnavailable(f"{what}: the broker is down: {exc}")
        return errors.WouldBlock(
            f"{what}: the broker answers, but {durable}; is its disk that slow?"
        )


class _Topic:
    def __init__(self, producer: Producer, meta: protocol.TopicMetadata) -> None:
        self.name = meta.name
        self.topic_id = meta.topic_id
        self.config = TopicConfig.from_kafka(meta.configs)
        self.max_message_bytes = self.config.max_message_bytes  # every batch fits
        self.log_append_time = self.config.message_timestamp_type == "LogAppendTime"
        batch_bytes = min(producer.batch_size, self.config.max_message_bytes // 2)
        self.batch_bytes = batch_bytes
        self.queues: list[_PartitionQueue] = []
        try:
            for p in range(meta.partitions):
                ring = Ring.open(
                    producer.connection.ring_name(meta, p),
                    label=partition_label(meta.name, p),
                )
                self.queues.append(
                    _PartitionQueue(producer, ring, self, p, batch_bytes)
                )
        except BaseException:
            self.close()
            raise
        self.sticky = self.queues[random.randrange(len(self.queues))]

    def stick_elsewhere(self) -> None:
        """Sticky partitioning (KIP-480): a batch went, the next go to another."""
        n = len(self.queues)
        if n > 1:
            p = self.sticky.partition + random.randrange(1, n)
            self.sticky = self.queues[p % n]

    def grow(self, producer: Producer, meta: protocol.TopicMetadata) -> None:
        """The topic got more partitions (CreatePartitions): map their rings."""
        for p in range(len(self.queues), meta.partitions):
            ring = Ring.open(
                producer.connection.ring_name(meta, p),
                label=partition_label(meta.name, p),
            )
            self.queues.append(
                _PartitionQueue(producer, ring, self, p, self.batch_bytes)
            )

    def close(self) -> None:
        for queue in self.queues:
            queue.ring.close()


class Producer:
    """Sends records to topics of the broker on data_dir. Thread-safe."""

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        client_id: str = "shmbroker-producer",
        acks: int | str = 1,
        batch_size: int = 1 << 20,
        batch_records: int = 1000,
        linger_ms: float = 5,
        max_block_ms: int = 60_000,
        auto_create_topics: bool = True,
        compression_type: str = "none",
        delivery_timeout_ms: int = 120_000,
    ) -> None:
        if acks not in (0, 1, -1, "all", "0", "1", "-1"):
            raise errors.ConfigError(f"acks: {acks!r} must be 0, 1, -1 or 'all'")
        if linger_ms < 0:
            raise errors.ConfigError(f"linger.ms: {linger_ms} must be >= 0")
        if compression_type not in compression.CODECS:
            raise errors.ConfigError(
                f"compression.type: {compression_type!r} must be one of "
                f"{', '.join(compression.CODECS)}"
            )
        self.compression_type = compression_type
        if delivery_timeout_ms <= 0:
            raise errors.ConfigError(
                f"delivery.timeout.ms: {delivery_timeout_ms} must be > 0"
            )
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.durable = acks in (-1, "all", "-1")
        self.batch_size = batch_size
        self.batch_records = batch_records
        self.linger = linger_ms / 1000
        self.max_block_ms = max_block_ms
        self.auto_create_topics = auto_create_topics
        self.connection = Connection(data_dir, client_id=client_id)
        self.records_sent = TopicCounters(self.connection, RECORDS_SENT)
        self._topics: dict[str, _Topic] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._linger_thread: threading.Thread | None = None
        if self.linger > 0:
            self._linger_thread = threading.Thread(
                target=self._linger_loop, name="producer-linger", daemon=True
            )
            self._linger_thread.start()

    def _topic(self, name: str) -> _Topic:
        """The topic's rings, mapped on first use (the one control-socket call)."""
        with self._lock:
            topic = self._topics.get(name)
            if topic is None:
                if self._closed.is_set():
                    raise errors.ClosedError("the producer is closed")
                meta = self.connection.topic(name, auto_create=self.auto_create_topics)
                topic = self._topics[name] = _Topic(self, meta)
            return topic

    def partitions_for(self, topic: str) -> list[int]:
        return list(range(len(self._topic(topic).queues)))

    def _queue(
        self, topic: _Topic, key: bytes | None, partition: int | None
    ) -> _PartitionQueue:
        queues = topic.queues
        if partition is not None:
            if partition >= len(queues):  # as Kafka: refresh metadata, then decide
                meta = self.connection.topic(topic.name)
                if meta.topic_id == topic.topic_id:
                    topic.grow(self, meta)
            if not 0 <= partition < len(queues):
                raise errors.UnknownTopic(
                    f"topic {topic.name!r} has partitions 0..{len(queues) - 1}, "
                    f"not {partition}"
                )
            return queues[partition]
        if key is None:
            return topic.sticky
        return queues[_native.partition_for_key(key, len(queues))]

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[Header] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordFuture:
        """Queue one record; returns a future of its metadata. Blocks (up to
        max_block_ms, then RingFull) only when its ring is full of unspilled data.
        RecordTooLarge, and nothing queued, if its batch alone (key, value and
        headers; compressed, with compression_type) is over max.message.bytes."""
        t = self._topics.get(topic) or self._topic(topic)
        # the commonest sends: a record into the middle of its partition's open batch,
        # one C call and no lock (it holds the GIL); None: the locked way. A value
        # alone first, with the fewest tests (bench_calls: ~60 ns less than below)
        future: RecordFuture | None
        if key is None and partition is None and timestamp is None and not headers:
            future = t.sticky.open.append_value(value)
            if future is None:
                return self._send_locked(t, value, key, headers, partition, timestamp)
            return future
        if timestamp is not None and t.log_append_time:
            timestamp = None  # the append stamps it
        if partition is None:
            queues = t.queues
            queue = (
                t.sticky
                if key is None
                else queues[_native.partition_for_key(key, len(queues))]
            )
        elif 0 <= partition < len(t.queues):
            queue = t.queues[partition]
        else:  # as Kafka: refresh the metadata, then decide
            return self._send_locked(t, value, key, headers, partition, timestamp)
        future = queue.open.append_value(value, key, headers, timestamp)
        if future is None:
            return self._send_locked(t, value, key, headers, partition, timestamp)
        return future

    def _send_locked(
        self,
        t: _Topic,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[Header] | None,
        partition: int | None,
        timestamp: int | None,
    ) -> RecordFuture:
        """send, when its record starts or fills a batch, or does not fit it."""
        with self._lock:
            try:
                queue = self._queue(t, key, partition)
                index = queue.send(value, key, timestamp, headers)
                batch = queue.sent_to
                if not self.linger:
                    queue.flush()
            except errors.UnknownTopic:
                self._forget(t.name)
                raise
        return RecordFuture(batch, index)

    def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Sequence[Sequence[Header]] | None = None,
    ) -> RecordMetadata:
        """Append the records to one partition now, as one batch (the fast path),
        or as several in order when they are over the topic's max.message.bytes;
        returns the first record's metadata. Keys do not choose the partition here:
        pass partition, or the topic's sticky partition is used (and the next
        batch goes to another). RecordTooLarge,
        and nothing sent, if one record's batch alone is over the limit."""
        t = self._topics.get(topic) or self._topic(topic)
        with self._lock:
            queue = self._queue(t, None, partition)
            queue.flush()  # keep the partition's records in send order
            try:
                spans = queue.append_now(
                    values,
                    keys,
                    timestamp=None if t.log_append_time else timestamp,
                    headers=headers,
                )
            except errors.UnknownTopic:
                self._forget(topic)
                raise
            last_base, last_count = spans[-1]
            queue.appended(last_base + last_count)
            end, appended_at = queue.next_offset, queue.appended_at
            if t.sticky is queue:  # KIP-480: a batch went, the next goes elsewhere
                t.stick_elsewhere()  # (as flush() does when a send()'s batch goes)
        if self.durable:
            queue.wait_durable(end, None, appended_at)
        return RecordMetadata(topic, queue.partition, spans[0][0])

    def flush(self, timeout: float | None = None) -> None:
        """Append every queued record; with acks="all", wait until all are fsynced
        (each partition up to timeout, then WouldBlock; or the reason, after
        delivery_timeout_ms)."""
        gone: dict[str, errors.UnknownTopic] = {}
        with self._lock:
            queues = [q for t in self._topics.values() for q in t.queues]
            for queue in queues:
                try:
                    queue.flush()
                except errors.UnknownTopic as exc:  # deleted: those records fail
                    queue.fail(exc)
                    gone[queue.topic.name] = exc
            for name in gone:
                self._forget(name)
            waits = [
                (q, q.next_offset, q.appended_at)
                for q in queues
                if q.topic.name not in gone
            ]
        if self.durable:
            for queue, offset, since in waits:
                if offset >= 0:
                    queue.wait_durable(offset, timeout, since)
        if gone:  # after the other topics' records are delivered
            raise next(iter(gone.values()))

    def _forget(self, topic: str) -> None:
        """The topic was deleted: drop its rings; the next send looks it up again."""
        t = self._topics.pop(topic, None)
        if t is not None:
            t.close()

    def _linger_loop(self) -> None:
        while not self._closed.wait(self.linger):
            now = time.monotonic()
            with self._lock:
                for t in list(self._topics.values()):
                    for queue in t.queues:
                        if len(queue) and now - queue.since >= self.linger:
                            try:
                                queue.flush()
                            except errors.ShmbrokerError as exc:
                                # stays queued: the next send or flush raises it
                                log.debug("linger flush of %s failed: %s", t.name, exc)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the rings and the connection."""
        if self._closed.is_set():
            return
        try:
            self.flush(timeout)
        except errors.UnknownTopic as exc:  # their futures say so; close completes
            log.warning("producer closed: records to a deleted topic failed: %s", exc)
        finally:
            self._closed.set()
            if self._linger_thread is not None:
                self._linger_thread.join()
            with self._lock:
                for t in self._topics.values():
                    t.close()
                self._topics.clear()
            self.records_sent.close()
            self.connection.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
