"""The only importer of the compiled C core (shmbroker._shmb, and the producer's
BatchBuilder and build_records, shmbroker._shmb_py: csrc/shmb_py.c, the per-record
calls that must cost less than a cffi call).

C returns >= 0 for success or a count, and a negative shmb_rc otherwise; `_check` turns
those codes into exceptions, here and nowhere else. Everything else in the package
calls the typed wrappers below and never touches `ffi` or `lib`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from shmbroker import errors
from shmbroker._shmb import ffi, lib
from shmbroker._shmb_py import BatchBuilder as BatchBuilder  # csrc/shmb_py.c
from shmbroker._shmb_py import build_records as build_records
from shmbroker._shmb_py import partition_for_key as _partition_for_key

TIMESTAMP_NOW: int = lib.SHMB_TIMESTAMP_NOW
VALIDATE_RECORDS: int = lib.SHMB_VALIDATE_RECORDS
VALIDATE_SEALED: int = lib.SHMB_VALIDATE_SEALED
DECODE_VERIFY_CRC: int = lib.SHMB_DECODE_VERIFY_CRC
LAYOUT_HEADER_BYTES = 4096
BATCH_HEADER_BYTES = 61

_RAISES: dict[int, type[errors.ShmbrokerError]] = {
    lib.SHMB_FULL: errors.RingFull,
    lib.SHMB_EMPTY: errors.WouldBlock,
    lib.SHMB_EINVAL: errors.InvalidArgument,
    lib.SHMB_ECORRUPT: errors.CorruptError,
    lib.SHMB_LAPPED: errors.Lapped,
    lib.SHMB_ETIMEDOUT: errors.LockTimeout,
    lib.SHMB_ELAYOUT: errors.CorruptError,
    lib.SHMB_ETOOBIG: errors.InvalidArgument,
    lib.SHMB_EUNSUPPORTED: errors.InvalidArgument,
    lib.SHMB_NOTFOUND: errors.OffsetOutOfRange,
    lib.SHMB_EDELETED: errors.UnknownTopic,
}

# what shmb_ring_check finds wrong, as (field, the rule it breaks)
HEADER_CHECKS = {
    lib.SHMB_CHECK_SPILL_TAIL: ("spill_position", "above tail_position"),
    lib.SHMB_CHECK_TAIL_CLAIM: ("tail_position", "above claim_position"),
    lib.SHMB_CHECK_UNSPILLED: ("tail_position - spill_position", "above capacity"),
    lib.SHMB_CHECK_NEXT_OFFSET: ("next_offset", "not one past the last batch's offset"),
    lib.SHMB_CHECK_CLAIM_AHEAD: ("claim_position - tail_position", "above capacity"),
}
FULL: int = lib.SHMB_FULL
EMPTY: int = lib.SHMB_EMPTY
LAPPED: int = lib.SHMB_LAPPED
ETOOBIG: int = lib.SHMB_ETOOBIG
CORRUPT: int = lib.SHMB_ECORRUPT
LAYOUT: int = lib.SHMB_ELAYOUT
DELETED: int = lib.SHMB_EDELETED
EINTR: int = lib.SHMB_EINTR  # never leaves this module: the waits below retry it
ETIMEDOUT: int = lib.SHMB_ETIMEDOUT


def strerror(rc: int) -> str:
    return str(ffi.string(lib.shmb_strerror(rc)).decode())


def error(rc: int, what: str) -> errors.ShmbrokerError | OSError:
    """The exception for a negative C result, with `what` naming the action."""
    if rc == lib.SHMB_ESYS:  # errno saved by cffi right after the call
        return OSError(ffi.errno, f"{what}: {os.strerror(ffi.errno)}")
    return _RAISES.get(rc, errors.ShmbrokerError)(f"{what}: {strerror(rc)}")


def _check(rc: int, what: str) -> int:
    if rc >= 0:
        return rc
    raise error(rc, what)


# ---- CRC32C and murmur2 -------------------------------------------------------------


def crc32c(data: bytes, crc: int = 0) -> int:
    return int(lib.shmb_crc32c(crc, data, len(data)))


def crc32c_hardware() -> bool:
    return bool(lib.shmb_crc32c_hardware())


def murmur2(key: bytes) -> int:
    return int(lib.shmb_murmur2(key, len(key)))


# murmur2 of the key, as Java's producer: a keyed send calls it per record, and a cffi
# call costs ~130 ns (it releases the GIL). InvalidArgument for partitions < 1.
partition_for_key: Callable[[bytes, int], int] = _partition_for_key


# ---- RecordBatch v2 codec -----------------------------------------------------------


Header = tuple[str, "bytes | None"]


class RecordArrays:
    """N records as the flat arrays of shmb_records_t; keeps every buffer alive."""

    __slots__ = ("_keep", "count", "struct")

    def __init__(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        timestamps: Sequence[int] | None = None,
        timestamp: int = TIMESTAMP_NOW,
        headers: Sequence[Sequence[Header]] | None = None,
    ) -> None:
        n = len(values)
        s = ffi.new("shmb_records_t *")
        s.count = n
        keep: list[Any] = []

        def column(items: Sequence[bytes | None]) -> tuple[Any, Any]:
            if None in items:
                lens = ffi.new(
                    "int32_t[]", [-1 if b is None else len(b) for b in items]
                )
                blob = ffi.from_buffer(b"".join([b for b in items if b]))
            else:  # the common case, at C speed: ~20 ns a record less
                lens = ffi.new("int32_t[]", list(map(len, items)))  # type: ignore[arg-type]
                blob = ffi.from_buffer(b"".join(items))  # type: ignore[arg-type]
            keep.extend((lens, blob))
            return blob, lens

        s.values, s.value_lens = column(values)
        if keys is not None:
            if len(keys) != n:
                raise errors.InvalidArgument(f"{len(keys)} keys for {n} values")
            s.keys, s.key_lens = column(keys)
        if timestamps is not None:
            if len(timestamps) != n:
                raise errors.InvalidArgument(
                    f"{len(timestamps)} timestamps for {n} values"
                )
            ts = ffi.new("int64_t[]", timestamps)
            keep.append(ts)
            s.timestamps = ts
        s.timestamp = timestamp
        if headers is not None:
            if len(headers) != n:
                raise errors.InvalidArgument(
                    f"{len(headers)} header lists for {n} values"
                )
            counts = ffi.new("int32_t[]", [len(h) for h in headers])
            flat = [kv for h in headers for kv in h]
            s.header_keys, s.header_key_lens = column([k.encode() for k, _ in flat])
            s.header_values, s.header_value_lens = column([v for _, v in flat])
            keep.append(counts)
            s.header_counts = counts
        self.struct = s
        self.count = n
        self._keep = keep


def batch_encode(records: RecordArrays, base_offset: int = 0) -> bytes:
    now_ms = lib.shmb_now_ms()  # once: sizing and encoding must agree
    size = _check(lib.shmb_batch_encoded_bytes(records.struct, now_ms), "encode batch")
    out = ffi.new("uint8_t[]", size)
    _check(
        lib.shmb_batch_encode(records.struct, now_ms, base_offset, out, size),
        "encode batch",
    )
    return bytes(ffi.buffer(out, size))


def batch_validate(batch: bytes, records: bool = True) -> int:
    """Validate one whole batch; returns its record count."""
    flags = VALIDATE_RECORDS if records else 0
    return _check(lib.shmb_batch_validate(batch, len(batch), flags), "validate batch")


RECORD_FIELDS: int = lib.SHMB_DECODED_RECORD_FIELDS
HEADER_FIELDS: int = lib.SHMB_DECODED_HEADER_FIELDS


class _DecodeCounts:
    """What a decode found, from its C struct: shmb_decoded_t's and shmb_columns_t's
    result fields share these names."""

    __slots__ = ()
    struct: Any

    @property
    def records(self) -> int:
        return int(self.struct.records)

    @property
    def headers(self) -> int:
        return int(self.struct.headers)

    @property
    def null_keys(self) -> int:
        return int(self.struct.null_keys)

    @property
    def null_values(self) -> int:
        return int(self.struct.null_values)

    @property
    def bytes_consumed(self) -> int:
        return int(self.struct.bytes_consumed)


class Decoded(_DecodeCounts):
    """The row-major arrays shmb_batches_decode fills, reused call after call.

    A record row: offset, timestamp, key_pos, key_end, value_pos, value_end,
    header_count, first_header; a header row: key_pos, key_end, value_pos, value_end.
    A null key or value has pos = end = -1."""

    def __init__(self, max_records: int = 4096, max_headers: int = 4096) -> None:
        self.resize(max_records, max_headers)

    def resize(self, max_records: int, max_headers: int) -> None:
        d = ffi.new("shmb_decoded_t *")
        d.max_records, d.max_headers = max_records, max_headers
        records = ffi.new("int64_t[]", max(max_records, 1) * RECORD_FIELDS)
        headers = ffi.new("int64_t[]", max(max_headers, 1) * HEADER_FIELDS)
        d.record_rows, d.header_rows = records, headers
        # memoryviews over the C arrays: .tolist() of a slice is the cheap way out
        self._records = memoryview(ffi.buffer(records)).cast("q")
        self._headers = memoryview(ffi.buffer(headers)).cast("q")
        self._keep = (records, headers)
        self.struct = d

    def decode(self, buf: Any, start: int, end: int, verify_crc: bool = False) -> int:
        """Decode whole batches of buf[start:end]; returns the records decoded.

        buf is bytes or a buffer from `new_buffer`. Grows the arrays when a single
        batch does not fit them."""
        flags = DECODE_VERIFY_CRC if verify_crc else 0
        cbuf = buf if isinstance(buf, ffi.CData) else ffi.from_buffer(buf)
        while True:
            rc = lib.shmb_batches_decode(cbuf, start, end, self.struct, flags)
            if rc != lib.SHMB_ETOOBIG:
                return _check(rc, "decode batches")
            d = self.struct
            self.resize(max(d.max_records * 4, 64), max(d.max_headers * 4, 64))

    def rows_buffer(self) -> Any:
        """The record rows as bytes over the C array (what build_records reads)."""
        return ffi.buffer(self._keep[0])

    def header_rows_buffer(self) -> Any:
        """The header rows as bytes over the C array (what build_records reads)."""
        return ffi.buffer(self._keep[1])

    def record_rows(self) -> list[int]:
        """All record rows of the last decode, flat: RECORD_FIELDS ints a record."""
        return self._records[: self.struct.records * RECORD_FIELDS].tolist()

    def record_column(self, field: int) -> list[int]:
        """One field of every record row (a strided slice: only what is used
        becomes Python ints)."""
        n = self.struct.records * RECORD_FIELDS
        return self._records[field:n:RECORD_FIELDS].tolist()

    def header_rows(self) -> list[int]:
        """All header rows of the last decode, flat: HEADER_FIELDS ints a header."""
        return self._headers[: self.struct.headers * HEADER_FIELDS].tolist()


class Columns(_DecodeCounts):
    """What shmb_batches_columns writes: records as columns in C arrays made for
    this one decode, so the columnar batch that holds them can hand them out (to
    Arrow too) without a copy. See csrc/shmb.h for each column."""

    __slots__ = ("_arrays", "struct")

    def __init__(self, max_records: int, min_offset: int = -1) -> None:
        n = max(max_records, 1)
        c = ffi.new("shmb_columns_t *")
        c.max_records, c.min_offset = n, min_offset
        arrays = {
            "offsets": ffi.new("int64_t[]", n),
            "timestamps": ffi.new("int64_t[]", n),
            "key_pos": ffi.new("int32_t[]", n),
            "key_lens": ffi.new("int32_t[]", n),
            "value_pos": ffi.new("int32_t[]", n),
            "value_lens": ffi.new("int32_t[]", n),
            "header_counts": ffi.new("int32_t[]", n),
            "key_views": ffi.new("uint8_t[]", 16 * n),
            "value_views": ffi.new("uint8_t[]", 16 * n),
            "key_valid": ffi.new("uint8_t[]", (n + 7) // 8),
            "value_valid": ffi.new("uint8_t[]", (n + 7) // 8),
        }
        for name, array in arrays.items():
            setattr(c, name, array)
        self._arrays = arrays
        self.struct = c

    def decode(self, buf: Any, start: int, end: int, verify_crc: bool) -> int:
        """Decode whole batches of buf[start:end] (bytes: the columns point into
        it); returns the records decoded. InvalidArgument (EUNSUPPORTED) if the
        first batch is compressed; the decode stops before a later one."""
        flags = DECODE_VERIFY_CRC if verify_crc else 0
        rc = lib.shmb_batches_columns(
            ffi.from_buffer(buf), start, end, self.struct, flags
        )
        return _check(rc, "decode batches into columns")

    def column(self, name: str) -> memoryview:
        """One column of the decoded records, as a memoryview of its C array
        (int64 'q', int32 'i', or bytes 'B' for the views and bitmaps)."""
        array = self._arrays[name]
        n = int(self.struct.records)
        item = ffi.sizeof(ffi.typeof(array).item)
        if name.endswith("_views"):
            size = 16 * n
        elif name.endswith("_valid"):
            size = (n + 7) // 8
        else:
            size = n * item
        view = memoryview(ffi.buffer(array, size))
        return view.cast("q") if item == 8 else view.cast("i" if item == 4 else "B")


SCAN_FIELDS: int = lib.SHMB_SCAN_FIELDS
# the fields of a scan row, in order: rows are flat lists, so rows[i + LAST_OFFSET]
POSITION, BYTES, BASE_OFFSET, LAST_OFFSET, MAX_TIMESTAMP, RECORDS = range(SCAN_FIELDS)
SCAN_PARTIAL = 1  # Scan.stop: a partial batch at the end (2: the rows were full)


class Scan:
    """Batch headers of a run of batches (shmb_batches_scan), reused call after call.

    A row: position, bytes, base_offset, last_offset, max_timestamp, record_count."""

    def __init__(self, max_batches: int = 4096) -> None:
        self._rows = ffi.new("int64_t[]", max_batches * SCAN_FIELDS)
        self._view = memoryview(ffi.buffer(self._rows)).cast("q")
        s = ffi.new("shmb_scan_t *")
        s.max_batches, s.rows = max_batches, self._rows
        self.struct = s

    def scan(self, buf: Any, start: int, end: int, verify: bool = False) -> list[int]:
        """Rows of the whole batches of buf[start:end], flat; see `stop` and
        `bytes_consumed` for where and why it stopped."""
        cbuf = buf if isinstance(buf, ffi.CData) else ffi.from_buffer(buf)
        n = _check(
            lib.shmb_batches_scan(cbuf, start, end, self.struct, int(verify)), "scan"
        )
        return self._view[: n * SCAN_FIELDS].tolist()

    @property
    def stop(self) -> int:
        """0 end of buffer, SCAN_PARTIAL, SCAN_FULL, or a negative rc (corrupt)."""
        return int(self.struct.stop)

    @property
    def bytes_consumed(self) -> int:
        return int(self.struct.bytes_consumed)


# ---- waiting ------------------------------------------------------------------------

# The longest one C wait lasts before Python regains control. Python runs signal
# handlers in the main thread, between bytecodes; a C wait (GIL released) returns
# SHMB_EINTR when the signal ends its sleep, but not when the signal comes just before
# the sleep or lands in another thread. Slices bound that case: Ctrl-C raises
# KeyboardInterrupt from a blocked call within WAIT_SLICE_MS (the C appender without a
# timeout argument waits the same bound: SHMB_APPEND_VALUE_WAIT_MS).
WAIT_SLICE_MS: int = lib.SHMB_APPEND_VALUE_WAIT_MS


def _first_slice(timeout_ms: int) -> int:
    """What a wait's first C call may take: all of timeout_ms if it fits a slice.
    The callers make that first call inline, so a wait that ends at once (the
    common case: data there, room there) costs no closure and no clock."""
    return timeout_ms if 0 <= timeout_ms <= WAIT_SLICE_MS else WAIT_SLICE_MS


def _rest(
    rc: int,
    call: Callable[[int], int],
    timeout_ms: int,
    first: int,
    retry: tuple[int, ...],
) -> int:
    """The rest of a wait whose first call (first ms) returned rc < 0: call(ms)
    until it returns a code not in `retry` (its "not yet") nor EINTR, or timeout_ms
    (-1: never) passes, each call waiting at most WAIT_SLICE_MS.

    Between calls the interpreter runs pending signal handlers (the loop's backward
    jump checks for them), so KeyboardInterrupt comes out of here. The later calls
    park at once: only the first one idles (spins, yields)."""
    if rc != EINTR and (rc not in retry or first == timeout_ms):
        return rc
    deadline = -1
    if timeout_ms >= 0:  # a "not yet" waited its whole slice; EINTR came early
        left_ms = timeout_ms - (0 if rc == EINTR else first)
        deadline = time.monotonic_ns() + max(0, left_ms) * 1_000_000
    while True:
        left = WAIT_SLICE_MS
        if deadline >= 0:
            left = min(left, max(0, -((time.monotonic_ns() - deadline) // 1_000_000)))
        rc = call(left)
        if rc == EINTR or (rc in retry and (deadline < 0 or left > 0)):
            continue
        return rc


class BackoffIdleStrategy:
    """How a waiter idles before it sleeps: Aeron's BackoffIdleStrategy (shmb_idle_t).

    It polls max_spins times with a CPU pause between (~20-140 ns each), then
    max_yields times with sched_yield() between, then parks: asleep on the ring's futex
    until an append wakes it, on every ring of a consumer at once (futex_waitv); where
    that syscall is missing, on each ring in turn for min_park_period_ns, doubling up
    to max_park_period_ns. A wake-up from a park costs the appender a syscall and the
    reader the kernel's wake-up latency (~20 us on a VM whose idle vCPUs halt), so
    spins and yields buy latency with CPU. The defaults, and why: csrc/shmb.h."""

    __slots__ = ("struct",)

    def __init__(
        self,
        max_spins: int = lib.SHMB_IDLE_MAX_SPINS,
        max_yields: int = lib.SHMB_IDLE_MAX_YIELDS,
        min_park_period_ns: int = lib.SHMB_IDLE_MIN_PARK_PERIOD_NS,
        max_park_period_ns: int = lib.SHMB_IDLE_MAX_PARK_PERIOD_NS,
    ) -> None:
        if min(max_spins, max_yields, min_park_period_ns) < 0 or (
            max_park_period_ns < min_park_period_ns
        ):
            raise errors.InvalidArgument(
                f"idle strategy: spins {max_spins}, yields {max_yields} and park "
                f"periods {min_park_period_ns}..{max_park_period_ns} ns must be >= 0, "
                f"the minimum park period no more than the maximum"
            )
        s = ffi.new("shmb_idle_t *")
        s.max_spins, s.max_yields = max_spins, max_yields
        s.min_park_period_ns, s.max_park_period_ns = (
            min_park_period_ns,
            max_park_period_ns,
        )
        self.struct = s

    @property
    def max_spins(self) -> int:
        return int(self.struct.max_spins)

    @property
    def max_yields(self) -> int:
        return int(self.struct.max_yields)

    @property
    def min_park_period_ns(self) -> int:
        return int(self.struct.min_park_period_ns)

    @property
    def max_park_period_ns(self) -> int:
        return int(self.struct.max_park_period_ns)

    def __repr__(self) -> str:
        return (
            f"BackoffIdleStrategy(max_spins={self.max_spins}, "
            f"max_yields={self.max_yields}, "
            f"min_park_period_ns={self.min_park_period_ns}, "
            f"max_park_period_ns={self.max_park_period_ns})"
        )


# ---- rings --------------------------------------------------------------------------


def ring_object_bytes(capacity_bytes: int) -> int:
    rc = lib.shmb_ring_object_bytes(capacity_bytes)
    if rc < 0:
        raise errors.InvalidArgument(
            f"ring capacity {capacity_bytes} bytes: must be a power of two, at least "
            f"{LAYOUT_HEADER_BYTES} and a multiple of the page size"
        )
    return int(rc)


class RingMap:
    """A ring mapped into this process. The mapping lives until this object dies."""

    # no scratch space shared between calls: threads may share one RingMap, and the
    # GIL is released during every C call
    __slots__ = ("_ptr", "capacity_bytes")

    def __init__(
        self,
        fd: int,
        create: bool,
        capacity_bytes: int = 0,
        base_offset: int = 0,
        partition_leader_epoch: int = 0,
        what: str = "ring",
    ) -> None:
        out = ffi.new("shmb_ring_t **")
        _check(
            lib.shmb_ring_map(
                fd,
                int(create),
                capacity_bytes,
                base_offset,
                partition_leader_epoch,
                out,
            ),
            f"map {what}",
        )
        self._ptr = ffi.gc(out[0], lib.shmb_ring_unmap)
        self.capacity_bytes = self.stat()["capacity_bytes"]

    def unmap(self) -> None:
        ffi.release(self._ptr)

    # appends return the offset, or a negative shmb_rc instead of raising, so that
    # the caller can name the ring and its positions in the error. One that waits for
    # space (or the lock) waits in slices: see WAIT_SLICE_MS
    def append_record(
        self, key: bytes | None, value: bytes | None, timestamp: int, timeout_ms: int
    ) -> int:
        args = (
            self._ptr,
            ffi.NULL if key is None else key,
            -1 if key is None else len(key),
            ffi.NULL if value is None else value,
            -1 if value is None else len(value),
            timestamp,
        )
        first = _first_slice(timeout_ms)
        rc: int = lib.shmb_ring_append_record(*args, first)
        if rc >= 0:
            return rc
        return _rest(
            rc,
            lambda ms: lib.shmb_ring_append_record(*args, ms),
            timeout_ms,
            first,
            _APPEND_RETRY,
        )

    def append_value(self, value: bytes) -> int:
        """append_record(None, value, now, wait forever), with 3 arguments, not 7."""
        rc: int = lib.shmb_ring_append_value(self._ptr, value, len(value))
        if rc >= 0 or rc not in _APPEND_RETRY_OR_EINTR:
            return rc
        return self.append_record(None, value, TIMESTAMP_NOW, -1)

    def append_records(self, records: RecordArrays, timeout_ms: int) -> int:
        first = _first_slice(timeout_ms)
        rc = int(lib.shmb_ring_append_records(self._ptr, records.struct, first))
        if rc >= 0:
            return rc
        return _rest(
            rc,
            lambda ms: lib.shmb_ring_append_records(self._ptr, records.struct, ms),
            timeout_ms,
            first,
            _APPEND_RETRY,
        )

    def append_batch(
        self, batch: bytes | memoryview, flags: int, timeout_ms: int
    ) -> int:
        data = batch if isinstance(batch, bytes) else ffi.from_buffer(batch)
        args = (self._ptr, data, len(batch), flags)
        first = _first_slice(timeout_ms)
        rc = int(lib.shmb_ring_append_batch(*args, first))
        if rc >= 0:
            return rc
        return _rest(
            rc,
            lambda ms: lib.shmb_ring_append_batch(*args, ms),
            timeout_ms,
            first,
            _APPEND_RETRY,
        )

    def read(
        self,
        cell: Any,
        position: int,
        buf: Any,
        timeout_ms: int,
        idle: BackoffIdleStrategy | None,
    ) -> int:
        """Copy whole batches at position into buf; returns bytes or a negative rc.
        The new position is position + bytes. cell: the caller's `new_cell()`, one per
        reader (allocating one a call would cost a one-record poll 10%). idle: how to
        wait (None: sleep at once)."""
        cell[0] = position
        first = _first_slice(timeout_ms)
        strategy = ffi.NULL if idle is None else idle.struct
        rc = int(lib.shmb_ring_read(self._ptr, cell, buf, len(buf), first, strategy))
        if rc >= 0:
            return rc
        return _rest(
            rc,
            lambda ms: lib.shmb_ring_read(self._ptr, cell, buf, len(buf), ms, ffi.NULL),
            timeout_ms,
            first,
            (EMPTY,),
        )

    def batch_bytes(self, position: int) -> int:
        return int(lib.shmb_ring_batch_bytes(self._ptr, position))

    def seek(self, offset: int) -> int:
        cell = ffi.new("int64_t *")
        rc = lib.shmb_ring_seek(self._ptr, offset, cell)
        return rc if rc < 0 else int(cell[0])

    # ---- the durable log's side: one spiller per ring

    def wait(self, position: int, timeout_ms: int, spin_ns: int) -> int:
        """The tail once it is past position; EMPTY after timeout_ms, or earlier when
        woken (shmb_ring_wake) or interrupted: one sleep, not sliced, so a spill
        thread asleep for long is woken by `wake` and costs nothing meanwhile (the
        caller loops; a signal brings it back to the interpreter). spin_ns 0 (the
        spill) sleeps at once: no CPU while nothing comes."""
        return int(lib.shmb_ring_wait(self._ptr, position, timeout_ms, spin_ns))

    def unspilled(self, position: int) -> memoryview:
        """The committed bytes from position (>= spill) to the tail, in place: valid
        until the spill position passes them."""
        data = ffi.new("const uint8_t **")
        n = _check(
            lib.shmb_ring_unspilled(self._ptr, position, data), "unspilled bytes"
        )
        return memoryview(ffi.buffer(data[0], n))

    def spill_rewind(self, position: int, offset: int) -> int:
        """0, or a negative rc: LAPPED when the bytes are overwritten."""
        return int(lib.shmb_ring_spill_rewind(self._ptr, position, offset))

    def spilled_offset(self) -> int:
        return int(lib.shmb_ring_spilled_offset(self._ptr))

    def set_spill_errno(self, err: int) -> None:
        lib.shmb_ring_set_spill_errno(self._ptr, err)

    def durable_advance(self, offset: int) -> None:
        _check(
            lib.shmb_ring_durable_advance(self._ptr, offset), "advance durable offset"
        )

    def wait_durable(self, offset: int, timeout_ms: int) -> int:
        """0 once durable, or a negative rc: EMPTY after timeout_ms, DELETED."""
        first = _first_slice(timeout_ms)
        rc = int(lib.shmb_ring_wait_durable(self._ptr, offset, first))
        if rc >= 0:
            return rc
        return _rest(
            rc,
            lambda ms: lib.shmb_ring_wait_durable(self._ptr, offset, ms),
            timeout_ms,
            first,
            (EMPTY,),
        )

    def spill_advance(self, position: int, offset: int = -1) -> None:
        _check(
            lib.shmb_ring_spill_advance(self._ptr, position, offset),
            "advance spill position",
        )

    def set_log_start_offset(self, offset: int) -> None:
        _check(lib.shmb_ring_set_log_start_offset(self._ptr, offset), "set log start")

    # ---- the broker's side

    def check(self) -> tuple[int, int, int]:
        """(which header invariant fails or 0, the value found, the one expected)."""
        found, expected = ffi.new("int64_t *"), ffi.new("int64_t *")
        which = lib.shmb_ring_check(self._ptr, found, expected)
        return int(which), int(found[0]), int(expected[0])

    def wake(self) -> None:
        lib.shmb_ring_wake(self._ptr)

    def mark_deleted(self) -> None:
        _check(lib.shmb_ring_mark_deleted(self._ptr), "mark ring deleted")

    # one load each, for the readers that want only these: stat() costs ~10 us more
    def high_watermark(self) -> int:
        return int(lib.shmb_ring_high_watermark(self._ptr))

    def log_start_offset(self) -> int:
        return int(lib.shmb_ring_log_start_offset(self._ptr))

    def tail_position(self) -> int:
        return int(lib.shmb_ring_tail_position(self._ptr))

    def stat(self) -> dict[str, int]:
        s = ffi.new("shmb_ring_stat_t *")
        lib.shmb_ring_stat(self._ptr, s)
        return {name: int(getattr(s, name)) for name in STAT_FIELDS}


STAT_FIELDS = tuple(name for name, _ in ffi.typeof("shmb_ring_stat_t").fields)
_APPEND_RETRY = (FULL, ETIMEDOUT)  # within the timeout: no room yet, lock still held
_APPEND_RETRY_OR_EINTR = (*_APPEND_RETRY, EINTR)


class RingWaiter:
    """Waits for the first record on any of several rings (shmb_rings_wait): all at
    once with futex_waitv, else in turns (turns=True forces that, for tests).

    It holds the rings' raw addresses: use it only while they are all mapped, and make
    a new one when the set changes. Not thread-safe."""

    __slots__ = ("_keep", "_offsets", "_ready", "_rings", "_view", "count", "flags")

    def __init__(self, rings: Sequence[RingMap], *, turns: bool = False) -> None:
        if not rings:
            raise errors.InvalidArgument("wait on no rings")
        self.count = len(rings)
        self._rings = ffi.new("shmb_ring_t *[]", [r._ptr for r in rings])
        self._keep = tuple(rings)
        self._offsets = ffi.new("int64_t[]", self.count)
        self._ready = ffi.new("uint8_t[]", self.count)
        self._view = ffi.buffer(self._ready)
        self.flags = lib.SHMB_RINGS_TURNS if turns else 0

    def wait(
        self, offsets: Sequence[int], timeout_ms: int, idle: BackoffIdleStrategy | None
    ) -> bytes:
        """One byte per ring: 1 where the ring has a record at or past offsets[i] (the
        next offset its reader wants) or was deleted. All 0 after timeout_ms (0: look
        once, -1: forever)."""
        n = self.count
        if len(offsets) != n:
            raise errors.InvalidArgument(f"{len(offsets)} offsets for {n} rings")
        self._offsets[0:n] = offsets
        args = (self._rings, self._offsets, n, self._ready)
        first = _first_slice(timeout_ms)
        strategy = ffi.NULL if idle is None else idle.struct
        rc = int(lib.shmb_rings_wait(*args, first, strategy, self.flags))
        if rc < 0:
            rc = _rest(
                rc,
                lambda ms: lib.shmb_rings_wait(*args, ms, ffi.NULL, self.flags),
                timeout_ms,
                first,
                (EMPTY,),
            )
        if rc == EMPTY:
            return bytes(n)
        _check(rc, f"wait on {n} rings")
        return self._view[:]  # type: ignore[no-any-return]


def new_cell() -> Any:
    """An int64 the C library may write (a reader's position)."""
    return ffi.new("int64_t *")


def new_buffer(size: int) -> Any:
    """A C-owned byte buffer for ring reads; bytes(ffi.buffer(...)) copies it out."""
    return ffi.new("uint8_t[]", size)


def buffer_over(data: bytearray) -> Any:
    """A C buffer over data's own memory, as new_buffer's (what the decoders take,
    and buffer_bytes slices): data cannot be resized while it lives."""
    return ffi.from_buffer(data)


def buffer_bytes(buf: Any) -> Any:
    """The buffer's bytes as an object whose slices are `bytes` copies."""
    return ffi.buffer(buf)
