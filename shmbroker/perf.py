"""Throughput and latency of the producer and the consumer, measured as Kafka's
kafka-producer-perf-test and kafka-consumer-perf-test measure them; `shmbroker perf`
prints the results.

Producer latency is the time from the send (a `send_batch` call) to the append of its
batch: every record of a batch gets its batch's latency, as Kafka's callback gives every
record of a request the request's. With `acks="all"` the time includes the fsync.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shmbroker.errors import InvalidArgument
from shmbroker.records import Record

REPORT_INTERVAL = 5.0  # seconds between progress windows (Kafka's reportingInterval)
PROGRESS_INTERVAL = 0.1  # seconds between calls of on_progress (a progress bar)
SAMPLE_RECORDS = 16  # time one send per this many records at least: two clock reads
# cost ~5% of a one-record append, nothing next to a batch of 16
MAX_SAMPLES = 500_000  # latency samples kept for the percentiles (Kafka keeps 500k)
PERCENTILES = (0.5, 0.95, 0.99, 0.999)
PERCENTILE_NAMES = ("50th", "95th", "99th", "99.9th")
MB = 1024 * 1024


class BatchSender(Protocol):
    """What produce() asks of a producer: Producer, or one over the Kafka protocol."""

    def partitions_for(self, topic: str) -> list[int]: ...

    def send_batch(
        self, topic: str, values: Sequence[bytes | None], *, partition: int | None
    ) -> object: ...


class BatchPoller(Protocol):
    """What consume() asks of a consumer: Consumer, or one over the Kafka protocol."""

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None: ...

    def poll_batch(self, max_records: int, timeout: float | None) -> list[Record]: ...


@dataclass(frozen=True)
class Window:
    """One progress report: the records sent since the previous one."""

    records: int
    bytes: int
    elapsed: float  # seconds
    avg_latency_ms: float
    max_latency_ms: float

    @property
    def records_per_sec(self) -> float:
        return self.records / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_sec(self) -> float:
        return self.bytes / MB / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class ProduceResult:
    records: int
    bytes: int  # of values
    elapsed: float  # seconds, first send to the last append
    avg_latency_ms: float
    max_latency_ms: float
    percentiles_us: dict[str, float]  # "50th" ... "99.9th" -> microseconds

    @property
    def records_per_sec(self) -> float:
        return self.records / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_sec(self) -> float:
        return self.bytes / MB / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def percentiles_ms(self) -> dict[str, int]:
        """Kafka prints whole milliseconds (truncated)."""
        return {k: int(v // 1000) for k, v in self.percentiles_us.items()}


@dataclass
class _Latencies:
    """Sampled latencies: each sample stands for `weight` records."""

    samples_ns: list[int] = field(default_factory=list)
    total_ns: int = 0  # sum over the records the samples stand for
    records: int = 0
    max_ns: int = 0

    def add(self, latency_ns: int, weight: int) -> None:
        if len(self.samples_ns) < MAX_SAMPLES:
            self.samples_ns.append(latency_ns)
        self.total_ns += latency_ns * weight
        self.records += weight
        if latency_ns > self.max_ns:
            self.max_ns = latency_ns

    @property
    def avg_ms(self) -> float:
        return self.total_ns / self.records / 1e6 if self.records else 0.0


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    """Kafka's way: sort, take the value at index int(p * n)."""
    ordered = sorted(samples_ns)
    if not ordered:
        return dict.fromkeys(PERCENTILE_NAMES, 0.0)
    return {
        name: ordered[min(int(p * len(ordered)), len(ordered) - 1)] / 1000
        for name, p in zip(PERCENTILE_NAMES, PERCENTILES, strict=True)
    }


def payload(size: int, seed: int = 0) -> bytes:
    """Random capital letters, as Kafka's perf test sends."""
    rng = random.Random(seed)
    return bytes(rng.choices(range(65, 91), k=size))


def produce(
    producer: BatchSender,
    topic: str,
    num_records: int,
    record_size: int,
    *,
    throughput: float = -1,
    batch: int = 1000,
    partition: int | None = None,
    on_window: Callable[[Window], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceResult:
    """Send num_records values of record_size bytes in batches of `batch` records,
    at most `throughput` records/s (-1: as fast as possible). Without a partition, the
    batches go round the topic's partitions. Calls on_window every REPORT_INTERVAL,
    on_progress (records sent since its last call) every PROGRESS_INTERVAL."""
    if num_records <= 0:
        raise InvalidArgument(f"--num-records: {num_records} must be greater than 0")
    if record_size <= 0:
        raise InvalidArgument(f"--record-size: {record_size} must be greater than 0")
    if batch <= 0:
        raise InvalidArgument(f"--batch: {batch} must be greater than 0")
    value = payload(record_size)
    sample_every = max(1, SAMPLE_RECORDS // batch)  # in batches
    partitions = producer.partitions_for(topic) if partition is None else [partition]
    full = [value] * batch
    total, window = _Latencies(), _Latencies()
    window_sent = 0
    sent, i = 0, 0
    start = window_start = progress_at = time.perf_counter()
    progress_sent = 0
    while sent < num_records:
        n = min(batch, num_records - sent)
        values = full if n == batch else full[:n]
        p = partitions[i % len(partitions)]
        if i % sample_every:
            producer.send_batch(topic, values, partition=p)
        else:
            t0 = time.perf_counter_ns()
            producer.send_batch(topic, values, partition=p)
            latency = time.perf_counter_ns() - t0
            weight = n * sample_every
            total.add(latency, weight)
            window.add(latency, weight)
        sent += n
        window_sent += n
        i += 1
        now = time.perf_counter()
        if throughput > 0:
            ahead = sent / throughput - (now - start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the load, not synchronising
                now = time.perf_counter()
        if on_progress is not None and now - progress_at >= PROGRESS_INTERVAL:
            on_progress(sent - progress_sent)  # not per batch: a bar costs time
            progress_at, progress_sent = now, sent
        if on_window is not None and now - window_start >= REPORT_INTERVAL:
            on_window(
                Window(
                    window_sent,
                    window_sent * record_size,
                    now - window_start,
                    window.avg_ms,
                    window.max_ns / 1e6,
                )
            )
            window, window_sent, window_start = _Latencies(), 0, now
    elapsed = time.perf_counter() - start
    if on_progress is not None:
        on_progress(sent - progress_sent)
    return ProduceResult(
        records=sent,
        bytes=sent * record_size,
        elapsed=elapsed,
        avg_latency_ms=total.avg_ms,
        max_latency_ms=total.max_ns / 1e6,
        percentiles_us=percentiles_us(total.samples_ns),
    )


@dataclass(frozen=True)
class ConsumeResult:
    start_ms: int  # wall clock, ms since the epoch
    end_ms: int
    messages: int
    bytes: int  # keys and values
    rebalance_ms: int  # no group yet: always 0 (Kafka's join time)
    timed_out: bool  # stopped on the timeout before `messages` came

    @property
    def elapsed(self) -> float:
        return max(self.end_ms - self.start_ms, 1) / 1000

    @property
    def fetch_ms(self) -> int:
        return self.end_ms - self.start_ms - self.rebalance_ms

    @property
    def mb(self) -> float:
        return self.bytes / MB

    @property
    def mb_per_sec(self) -> float:
        return self.mb / self.elapsed

    @property
    def messages_per_sec(self) -> float:
        return self.messages / self.elapsed

    @property
    def fetch_mb_per_sec(self) -> float:
        return self.mb / (max(self.fetch_ms, 1) / 1000)

    @property
    def fetch_messages_per_sec(self) -> float:
        return self.messages / (max(self.fetch_ms, 1) / 1000)


def consume(
    consumer: BatchPoller,
    topic: str,
    partitions: int,
    messages: int,
    *,
    timeout_ms: int = 10_000,
    on_progress: Callable[[int], None] | None = None,
) -> ConsumeResult:
    """Read up to `messages` records from every partition of the topic (from where
    the consumer's auto_offset_reset says); stop early when timeout_ms passes
    without a record. on_progress gets the count of each poll's records."""
    if messages <= 0:
        raise InvalidArgument(f"--messages: {messages} must be greater than 0")
    start_ms = time.time_ns() // 1_000_000
    consumer.assign([(topic, p) for p in range(partitions)])
    count = size = 0
    timeout = timeout_ms / 1000
    timed_out = False
    while count < messages:
        records = consumer.poll_batch(min(messages - count, 1 << 16), timeout=timeout)
        if not records:
            timed_out = True
            break
        count += len(records)
        if on_progress is not None:
            on_progress(len(records))
        size += sum([len(r.value) for r in records if r.value is not None])
        size += sum([len(r.key) for r in records if r.key is not None])
    end_ms = time.time_ns() // 1_000_000
    return ConsumeResult(start_ms, end_ms, count, size, 0, timed_out)
