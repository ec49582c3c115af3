"""Per-record sends gathered into batches, as Kafka's producer does (its
RecordAccumulator): `send` only queues the record in Python lists; one C call appends
all queued records to the ring as one batch when `batch_records` or `batch_bytes` are
reached, or on `flush`. A cffi call costs more than queueing a record, so this is the
per-record path that runs at batch speed; `Ring.append` is the one that returns each
record's offset at once.

Records sent without a timestamp get the wall clock when their batch is appended.
"""

from __future__ import annotations

from collections.abc import Sequence

from shmbroker import _native
from shmbroker.records import Header
from shmbroker.ring import Ring

DEFAULT_BATCH_RECORDS = 1000
DEFAULT_BATCH_BYTES = 1 << 20


class RecordAccumulator:
    """Queues records for one ring and appends them in batches. Not thread-safe."""

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
        self._values: list[bytes | None] = []
        self._keys: list[bytes | None] = []
        self._timestamps: list[int] | None = None  # made on first explicit timestamp
        self._headers: list[Sequence[Header]] | None = None  # made on first use
        self._bytes = 0
        self._any_key = False

    def send(
        self,
        value: bytes | None,
        key: bytes | None = None,
        timestamp: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> None:
        """Queue one record; appends the batch when it is full. If that append fails
        (RingFull after the timeout), this record is not queued and the error is
        raised; the records queued before it stay queued for the next flush."""
        values = self._values
        values.append(value)
        self._keys.append(key)
        if key is not None:
            self._any_key = True
        if timestamp is not None:
            if self._timestamps is None:
                self._timestamps = [_native.TIMESTAMP_NOW] * (len(values) - 1)
            self._timestamps.append(timestamp)
        elif self._timestamps is not None:
            self._timestamps.append(_native.TIMESTAMP_NOW)
        if headers:
            if self._headers is None:
                self._headers = [()] * (len(values) - 1)
            self._headers.append(headers)
        elif self._headers is not None:
            self._headers.append(())
        if value is not None:
            self._bytes += len(value)
        if len(values) >= self.batch_records or self._bytes >= self.batch_bytes:
            try:
                self.flush()
            except BaseException:
                self._unqueue_last()  # so that a caller who retries send() sends once
                raise

    def _unqueue_last(self) -> None:
        value = self._values.pop()
        self._keys.pop()
        self._any_key = any(k is not None for k in self._keys)
        for column in (self._timestamps, self._headers):
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
        base = self.ring.append_batch(
            values,
            self._keys if self._any_key else None,
            timestamps=self._timestamps,
            headers=self._headers,
            timeout=self.timeout,
        )
        n = len(values)
        self._values, self._keys, self._timestamps = [], [], None
        self._headers, self._bytes, self._any_key = None, 0, False
        return base + n

    def __enter__(self) -> RecordAccumulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
