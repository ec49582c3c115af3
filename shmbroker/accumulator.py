"""Per-record sends gathered into batches, as Kafka's producer does (its
RecordAccumulator): `send` only queues the record in Python lists; one C call appends
all queued records to the ring as one batch when `batch_records` or `batch_bytes` are
reached, or on `flush`. A cffi call costs more than queueing a record, so this is the
per-record path that runs at batch speed; `Ring.append` is the one that returns each
record's offset at once.

Records sent without a timestamp get the wall clock when their batch is appended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from shmbroker import _native
from shmbroker.records import Header
from shmbroker.ring import Ring

DEFAULT_BATCH_RECORDS = 1000
DEFAULT_BATCH_BYTES = 1 << 20


class RecordAccumulator:
    """Queues records for one ring and appends them in batches. Not thread-safe.

    Keys, timestamps and headers are columns made on first use in a batch, so a
    value-only send is one list append and two checks."""

    def __init__(
        self,
        ring: Ring,
        *,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        timeout: float | None = None,
    ) -> None:
        self.ring = ring
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.timeout = timeout
        self.since = 0.0  # time.monotonic() of the first queued record (linger.ms)
        self._new_batch()

    def _new_batch(self) -> None:
        self._values: list[bytes | None] = []
        self._keys: list[bytes | None] | None = None
        self._timestamps: list[int] | None = None
        self._headers: list[Sequence[Header]] | None = None
        self._columns = False  # any of the three exists
        self._bytes = 0

    def send(
        self,
        value: bytes | None,
        key: bytes | None = None,
        timestamp: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> int:
        """Queue one record; returns its index in the batch being queued. Appends
        the batch when it is full; if that append fails (RingFull after the
        timeout), this record is not queued and the error is raised; the records
        queued before it stay queued for the next flush."""
        values = self._values
        index = len(values)
        if not index:
            self.since = time.monotonic()
        values.append(value)
        if key is not None or timestamp is not None or headers or self._columns:
            self._add_columns(index, key, timestamp, headers)
        if value is not None:
            self._bytes += len(value)
        if index >= self.batch_records - 1 or self._bytes >= self.batch_bytes:
            try:
                self.flush()
            except BaseException:
                self._unqueue_last()  # so that a caller who retries send() sends once
                raise
        return index

    def _add_columns(
        self,
        index: int,
        key: bytes | None,
        timestamp: int | None,
        headers: Sequence[Header] | None,
    ) -> None:
        if key is not None and self._keys is None:
            self._keys = [None] * index
        if timestamp is not None and self._timestamps is None:
            self._timestamps = [_native.TIMESTAMP_NOW] * index
        if headers and self._headers is None:
            self._headers = [()] * index
        self._columns = True
        if self._keys is not None:
            self._keys.append(key)
        if self._timestamps is not None:
            self._timestamps.append(
                _native.TIMESTAMP_NOW if timestamp is None else timestamp
            )
        if self._headers is not None:
            self._headers.append(headers or ())

    def _unqueue_last(self) -> None:
        value = self._values.pop()
        for column in (self._keys, self._timestamps, self._headers):
            if column is not None:
                column.pop()
        if value is not None:
            self._bytes -= len(value)

    def __len__(self) -> int:
        return len(self._values)

    def flush(self) -> int:
        """Append what is queued; returns the offset of the next record to be sent
        (-1 if nothing was queued)."""
        values = self._values
        if not values:
            return -1
        keys = self._keys
        base = self.ring.append_batch(
            values,
            keys if keys is not None and any(k is not None for k in keys) else None,
            timestamps=self._timestamps,
            headers=self._headers,
            timeout=self.timeout,
        )
        n = len(values)
        self._new_batch()
        return base + n

    def __enter__(self) -> RecordAccumulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
