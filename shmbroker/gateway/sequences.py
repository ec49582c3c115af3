"""Idempotent producers: per (producer id, partition), the sequence ranges and base
offsets of the last 5 batches appended, as Kafka keeps them.

A batch whose range equals a remembered one is a retry of a batch already appended:
it is answered with that batch's base offset and not appended again. One that
starts right after the last is appended; a gap or an overlap is
OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch INVALID_PRODUCER_EPOCH. Sequences wrap
at 2^31 - 1 to 0, as Kafka's do.

The state is rebuilt from the log: every batch carries its producer id, epoch and
base sequence, so the first batch of a producer this process has no state for
makes it search the partition's tail (backwards, in growing spans, up to
SEARCH_BYTES) for that producer's last batches. That is what makes a retry after a
gateway kill -9 or a supervisor restart a duplicate rather than a second copy. A
producer id that this process gave out has nothing to search for.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

from shmbroker.kafka.errors import Code
from shmbroker.log.reader import LogReader, PartitionView

WINDOW = 5  # batches remembered per producer and partition (Kafka's)
SEARCH_BYTES = 16 << 20  # at most this much of a partition's tail is searched
FIRST_SPAN = 1024  # offsets of the first span searched back from the end
SEQUENCE_MOD = 1 << 31
# producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57
_PRODUCER = struct.Struct(">qhii")
_BASE = struct.Struct(">q")
_LENGTH = struct.Struct(">i")


class BatchSequence(NamedTuple):
    first: int  # base sequence
    last: int  # last sequence (wrapped)
    base_offset: int


class ProducerBatch(NamedTuple):
    """What a produced batch says about its producer (its header)."""

    producer_id: int  # -1: not idempotent
    epoch: int
    first: int  # base sequence
    records: int

    @classmethod
    def of(cls, batch: bytes) -> ProducerBatch:
        return cls(*_PRODUCER.unpack_from(batch, 43))

    @property
    def last_sequence(self) -> int:
        return (self.first + self.records - 1) % SEQUENCE_MOD


class ProducerState:
    __slots__ = ("batches", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[BatchSequence] = deque(maxlen=WINDOW)


class Sequences:
    """The idempotence state of one partition. Loop's thread only."""

    def __init__(self) -> None:
        self._producers: dict[int, ProducerState] = {}

    def check(
        self, batch: ProducerBatch, view: PartitionView, search: bool
    ) -> tuple[Code, int]:
        """(NONE, -1): append it; (NONE, offset): a retry of the batch appended
        at offset; else the error. search: look in the log for a producer we have
        no state for. A state that refuses the batch is checked against the log
        once more first: with several gateway processes, the producer may have
        gone on through another one since."""
        state = self._producers.get(batch.producer_id)
        if state is None and search:
            state = self._reload(batch.producer_id, view)
        if state is None:
            return Code.NONE, -1  # a new producer: any sequence starts it
        code, offset = _verdict(state, batch)
        if code != Code.NONE:
            fresh = self._reload(batch.producer_id, view)
            if fresh is not None:
                code, offset = _verdict(fresh, batch)
        return code, offset

    def _reload(self, producer_id: int, view: PartitionView) -> ProducerState | None:
        state = find_in_log(view, producer_id)
        if state is not None:
            self._producers[producer_id] = state
        return state

    def appended(self, batch: ProducerBatch, base_offset: int) -> None:
        state = self._producers.get(batch.producer_id)
        if state is None or batch.epoch != state.epoch:
            state = self._producers[batch.producer_id] = ProducerState(batch.epoch)
        state.batches.append(
            BatchSequence(batch.first, batch.last_sequence, base_offset)
        )

    def forget(self, producer_id: int) -> None:
        self._producers.pop(producer_id, None)


def _verdict(state: ProducerState, batch: ProducerBatch) -> tuple[Code, int]:
    if batch.epoch < state.epoch:
        return Code.INVALID_PRODUCER_EPOCH, -1
    if batch.epoch > state.epoch:  # a new epoch starts over at 0
        if batch.first == 0:
            return Code.NONE, -1
        return Code.OUT_OF_ORDER_SEQUENCE_NUMBER, -1
    for seen in state.batches:
        if seen.first == batch.first and seen.last == batch.last_sequence:
            return Code.NONE, seen.base_offset
    last = state.batches[-1].last if state.batches else None
    if last is None or batch.first == (last + 1) % SEQUENCE_MOD:
        return Code.NONE, -1
    return Code.OUT_OF_ORDER_SEQUENCE_NUMBER, -1


def find_in_log(view: PartitionView, producer_id: int) -> ProducerState | None:
    """The producer's last WINDOW batches from the partition's tail, or None if
    none is within SEARCH_BYTES of the end."""
    low, end = view.log_start_offset, view.high_watermark
    span, searched = FIRST_SPAN, 0
    found: list[tuple[int, BatchSequence]] = []  # (epoch, batch), oldest first
    while end > low and searched < SEARCH_BYTES and len(found) < WINDOW:
        start = max(low, end - span)
        spanned, searched = _batches_of(view, producer_id, start, end, searched)
        found = spanned + found
        end, span = start, span * 4
    if not found:
        return None
    epoch = found[-1][0]
    state = ProducerState(epoch)
    for batch_epoch, batch in found[-WINDOW:]:
        if batch_epoch == epoch:
            state.batches.append(batch)
    return state


def _batches_of(
    view: PartitionView, producer_id: int, start: int, end: int, searched: int
) -> tuple[list[tuple[int, BatchSequence]], int]:
    """The producer's batches with base offsets in [start, end) (the first one at
    the log start may begin before it), and the bytes searched so far."""
    out: list[tuple[int, BatchSequence]] = []
    reader = LogReader(view, start)
    offset = start
    while offset < end and searched < SEARCH_BYTES:
        data = reader.read_slice(offset, 1 << 20)
        if not data:
            break
        searched += len(data)
        at = 0
        while at < len(data):
            base = _BASE.unpack_from(data, at)[0]
            size = _LENGTH.unpack_from(data, at + 8)[0] + 12
            if base >= end:
                return out, searched
            if base >= start or start == view.log_start_offset:
                pid, epoch, first, count = _PRODUCER.unpack_from(data, at + 43)
                if pid == producer_id:
                    last = (first + count - 1) % SEQUENCE_MOD
                    out.append((epoch, BatchSequence(first, last, base)))
            at += size
        offset = reader.offset
    return out, searched
