"""What bench_broker.py and bench_peers.py share: the check every consumer makes of
every record, and the producer and consumer processes of each path (through a
running broker, the bare ring, `multiprocessing.Queue`, pyzmq PUSH/PULL).

Imported by the bench_*.py scripts from their own directory (they run as scripts)."""

from __future__ import annotations

import operator
import os
import queue
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

from bench_ring import CLOCK, _values

from shmbroker import _native
from shmbroker.accumulator import RecordAccumulator
from shmbroker.client.consumer import Consumer
from shmbroker.client.producer import Producer
from shmbroker.records import RecordColumns
from shmbroker.ring import Ring

KiB, MiB = 1024, 1 << 20
BATCH = 1000  # records per send_batch call, and per Queue list...
BATCH_BYTES = MiB  # ...but at most this many value bytes, as Kafka's batch.size
STALL_S = 20.0  # a consumer that sees nothing this long reports the run as hung
# pyarrow's kernels cost ~10 us a call whatever the length: below this many records
# a poll (large values) is checked faster one by one in Python
ARROW_MIN_RECORDS = 256


def batch_for(size: int) -> int:
    """Records per send_batch, Queue list and pyzmq message at this value size."""
    return max(1, min(BATCH, BATCH_BYTES // size))


# ---- what every consumer checks -----------------------------------------------------


class Check:
    """Every record a consumer counts: offsets (or the arrival order) dense from 0,
    and each value the one the producer sent there: `size` bytes whose first 4 hold
    its index in the producer's list of `batch` values (bench_ring's `_values`),
    the producer sending that list over and over."""

    def __init__(self, size: int, batch: int) -> None:
        self.size, self.batch, self.next = size, batch, 0
        heads = [i.to_bytes(4, "little") for i in range(batch)]
        self._heads = heads * (8192 // batch + 2)
        self._span = len(self._heads) - batch  # values checked against one slice

    def __call__(
        self, values: list[Any], offsets: list[int] | None = None, size: int = 0
    ) -> None:
        """size: every value is `size` bytes (a columnar poll's heads: 4)."""
        start, n = self.next, len(values)
        size = size or self.size
        if offsets is not None:
            self.offsets(offsets)
        for at in range(0, n, self._span):
            chunk = values[at : at + self._span]
            k = (start + at) % self.batch
            want = self._heads[k : k + len(chunk)]
            if [v[:4] for v in chunk] != want or set(map(len, chunk)) != {size}:
                i = next(
                    i for i, v in enumerate(chunk) if v[:4] != want[i] or len(v) != size
                )
                v = chunk[i]
                raise RuntimeError(
                    f"record {start + at + i}: a value of {len(v)} bytes starting "
                    f"{bytes(v[:4])!r}; sent: {self.size} bytes starting {want[i]!r}"
                )
        self.next = start + n

    def columns(self, cols: RecordColumns) -> None:
        """A columnar poll's records, checked without a Python object per value (as
        a pipeline into Arrow would): offsets, value lengths, and each value's first
        4 bytes, with pyarrow's compute kernels over the columns; without pyarrow,
        for a poll of a few records, or to name what is wrong, one by one. The CRC,
        checked as decoded, covers the rest."""
        ok = self._columns_ok(cols) if len(cols) >= ARROW_MIN_RECORDS else None
        if not ok:
            self._columns_slowly(cols, arrow_failed=ok is False)
        self.next += len(cols)

    def _columns_ok(self, cols: RecordColumns) -> bool | None:
        """True if every record is right, False if not, None without pyarrow."""
        try:
            import pyarrow as pa
            import pyarrow.compute as pc
        except ImportError:
            return None
        n, start = len(cols), self.next
        if not n:
            return True
        if cols.offsets[0] != start:
            return False
        offsets = pa.Array.from_buffers(
            pa.int64(), n, [None, pa.py_buffer(cols.offsets)]
        )
        if n > 1 and pc.min_max(pc.pairwise_diff(offsets)[1:]).as_py() != {
            "min": 1,
            "max": 1,
        }:
            return False
        lengths = pa.Array.from_buffers(
            pa.int32(), n, [None, pa.py_buffer(cols.value_lengths)]
        )
        if pc.min_max(lengths).as_py() != {"min": self.size, "max": self.size}:
            return False
        # a binary array whose element i starts where value i does: its first 4
        # bytes are that value's head
        starts = array("i")
        starts.frombytes(cols.value_positions.cast("B"))
        starts.append(len(cols.buffer))
        from_values = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(starts), pa.py_buffer(cols.buffer)]
        )
        heads = pc.binary_slice(from_values, 0, 4)
        k = start % self.batch
        want = self._arrow_heads(pa, k + n).slice(k, n)
        return bool(pc.all(pc.equal(heads, want)).as_py())

    def prepare_columns(self, n: int = 1 << 17) -> None:
        """Import pyarrow and make the heads up to n records, if it is there."""
        try:
            import pyarrow as pa
            import pyarrow.compute
        except ImportError:
            return
        self._arrow_heads(pa, n)

    def _arrow_heads(self, pa: Any, n: int) -> Any:
        """The heads the producer sends, in turn, at least n of them, as Arrow."""
        have = getattr(self, "_heads_arrow", None)
        if have is None or len(have) < n:
            heads = self._heads[: self.batch] * (n // self.batch + 2)
            have = self._heads_arrow = pa.array(heads, pa.binary())
        return have

    def _columns_slowly(self, cols: RecordColumns, arrow_failed: bool) -> None:
        """Check.columns one by one: raises naming the first bad record."""
        lengths = cols.value_lengths.tolist()
        if lengths.count(self.size) != len(lengths):
            i = next(i for i, n in enumerate(lengths) if n != self.size)
            raise RuntimeError(
                f"offset {cols.offsets[i]}: a value of {lengths[i]} bytes; sent: "
                f"{self.size}"
            )
        b = cols.buffer
        heads = [b[p : p + 4] for p in cols.value_positions.tolist()]
        start = self.next
        self(heads, cols.offsets.tolist(), 4)
        self.next = start  # columns() moves it
        if arrow_failed:
            raise RuntimeError(
                f"records {start}..{start + len(cols) - 1}: pyarrow's check failed, "
                f"the one by one check did not"
            )

    def offsets(self, offsets: list[int]) -> None:
        """Offsets dense from self.next (and self.next moved past them, when only
        offsets are checked)."""
        start = self.next
        if offsets != list(range(start, start + len(offsets))):
            i = next(i for i, o in enumerate(offsets) if o != start + i)
            raise RuntimeError(
                f"offset {offsets[i]} where {start + i} was due: a record "
                f"{'repeated' if offsets[i] < start + i else 'missing'}"
            )

    def batches(self, decoded: _native.Decoded, data: bytes) -> int:
        """Decode raw batches in C, CRCs checked; check offsets and value lengths
        (the CRC covers the rest). Every byte must belong to a whole batch."""
        at = count = 0
        while at < len(data):
            decoded.decode(data, at, len(data), verify_crc=True)
            if decoded.bytes_consumed == 0:
                raise RuntimeError(
                    f"read_batches returned a torn batch: {len(data)} bytes, of which "
                    f"the last {len(data) - at} (from byte {at}, offset {self.next}) "
                    f"are not a whole batch: {data[at : at + 24]!r}"
                )
            offsets = decoded.record_column(0)
            self.offsets(offsets)
            sizes = set(
                map(operator.sub, decoded.record_column(5), decoded.record_column(4))
            )
            if sizes != {self.size}:
                raise RuntimeError(
                    f"offsets {offsets[0]}..{offsets[-1]}: values of {sorted(sizes)} "
                    f"bytes; sent: {self.size}"
                )
            self.next += len(offsets)
            count += len(offsets)
            at += decoded.bytes_consumed
        return count


class Watchdog:
    """Ends this process, the main thread's stack written to `path`, when `moves`
    has not changed for `seconds` while armed: a read that never returns (issue 9:
    a decode that makes no progress, looping) becomes a failed run, not a hung
    benchmark. A thread can do it: that loop runs Python code, which gives up the
    GIL."""

    def __init__(self, path: str, seconds: float) -> None:
        self.moves = 0
        self.armed = False
        self._path, self._seconds = path, seconds
        self._main = threading.get_ident()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        seen, since = -1, time.monotonic()
        while True:
            time.sleep(0.25)  # a watchdog's tick, not a synchronisation
            now = time.monotonic()
            if not self.armed or self.moves != seen:
                seen, since = self.moves, now
            elif now - since > self._seconds:
                stack = traceback.format_stack(sys._current_frames()[self._main])
                Path(self._path).write_text(
                    f"a read did not return for {now - since:.0f}s; where it was:\n"
                    + "".join(stack)
                )
                os._exit(70)


# ---- producer and consumer processes ------------------------------------------------


def broker_produce(
    barrier: Any, data_dir: str, topic: str, api: str, size: int, n: int, batch: int
) -> dict[str, Any]:
    producer = Producer(data_dir)
    producer.partitions_for(topic)  # attach to the ring before the clock starts
    values = _values(size, batch)
    barrier.wait()
    t0 = CLOCK()
    if api == "send":
        send = producer.send
        for _ in range(n // batch):
            for value in values:  # distinct values: the consumer checks each one
                send(topic, value)
        producer.flush()
    else:
        send_batch = producer.send_batch
        for _ in range(n // batch):
            send_batch(topic, values, partition=0)
    t1 = CLOCK()
    # the same ring, opened again, for its counters
    ring = Ring.open(producer.connection.ring_name(producer.connection.topic(topic), 0))
    full_waits = ring.stat().full_waits
    ring.close()
    producer.close()
    return {"start_ns": t0, "sent_ns": t1, "full_waits": full_waits}


def _wait_lapped(consumer: Consumer, topic: str) -> int:
    """Until the producer has appended more bytes than the ring holds (offset 0 is
    no longer in it); the high watermark then."""
    conn = consumer.connection
    ring = Ring.open(conn.ring_name(conn.topic(topic), 0))
    try:
        deadline = time.monotonic() + STALL_S
        while (stat := ring.stat()).bytes_appended <= stat.capacity_bytes:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the producer appended {stat.bytes_appended} bytes in {STALL_S}s; "
                    f"the lapped consumer waits for more than the ring's "
                    f"{stat.capacity_bytes}"
                )
            time.sleep(0.001)
        return stat.next_offset
    finally:
        ring.close()


def broker_consume(
    barrier: Any,
    data_dir: str,
    topic: str,
    size: int,
    n: int,
    batch: int,
    lapped: bool,
    stall: tuple[str, float],
) -> dict[str, Any]:
    """Consumer.poll_batch (its max_poll_records): Records, each checked."""
    check = Check(size, batch)

    def step(consumer: Consumer) -> int:
        records = consumer.poll_batch(None, STALL_S)
        check([r.value for r in records], [r.offset for r in records])
        return len(records)

    return _consume(barrier, data_dir, topic, n, lapped, stall, step)


def broker_consume_columns(
    barrier: Any,
    data_dir: str,
    topic: str,
    size: int,
    n: int,
    batch: int,
    lapped: bool,
    stall: tuple[str, float],
) -> dict[str, Any]:
    """Consumer.poll_columns (max_records: a ring's worth): no Record, no value
    object; Check.columns checks each record."""
    check = Check(size, batch)
    check.prepare_columns()  # pyarrow's import (~0.2 s) before the clock

    def step(consumer: Consumer) -> int:
        count = 0
        for cols in consumer.poll_columns(1 << 20, STALL_S):
            check.columns(cols)
            count += len(cols)
        return count

    return _consume(barrier, data_dir, topic, n, lapped, stall, step)


def broker_consume_raw(
    barrier: Any,
    data_dir: str,
    topic: str,
    size: int,
    n: int,
    batch: int,
    lapped: bool,
    stall: tuple[str, float],
) -> dict[str, Any]:
    """Consumer.read_batches: raw batches, no Record built; decoded in C to check
    them (CRCs, offsets, value lengths)."""
    check, decoded = Check(size, batch), _native.Decoded()

    def step(consumer: Consumer) -> int:
        got = consumer.read_batches(STALL_S)
        return 0 if got is None else check.batches(decoded, got[1])

    return _consume(barrier, data_dir, topic, n, lapped, stall, step)


def _consume(
    barrier: Any,
    data_dir: str,
    topic: str,
    n: int,
    lapped: bool,
    stall: tuple[str, float],
    step: Callable[[Consumer], int],
) -> dict[str, Any]:
    """What every broker consumer does around its polls: step(consumer) polls once,
    checks what came and returns how many records (0: none within STALL_S)."""
    consumer = Consumer(data_dir, auto_offset_reset="earliest")
    consumer.assign([(topic, 0)])
    dog = Watchdog(*stall)
    count = polls = segment_polls = 0
    barrier.wait()
    start_offset = _wait_lapped(consumer, topic) if lapped else 0
    t0 = CLOCK()
    dog.armed = True
    while count < n:
        got = step(consumer)
        dog.moves += 1
        if not got:
            raise RuntimeError(f"no records for {STALL_S}s after {count} of {n}")
        count += got
        polls += 1
        segment_polls += _on_segments(consumer)
    t1 = CLOCK()
    if count != n:
        raise RuntimeError(f"got {count} records; want {n}")
    consumer.close()
    return {
        "consumer_start_ns": t0,
        "end_ns": t1,
        "start_offset": start_offset,
        "count": count,
        "polls": polls,
        "segment_polls": segment_polls,
    }


def _on_segments(consumer: Consumer) -> bool:
    """Whether the consumer now reads the segment files, not the ring: the producer
    lapped it (the ring waits for the spill, never for readers), so it reads what
    was spilled. Private state, read for this report only; False if it moved."""
    try:
        reader = next(iter(consumer._assigned.values())).log_reader
        return reader is not None and reader._ring_reader is None
    except (AttributeError, StopIteration):
        return False


def ring_produce(
    barrier: Any, name: str, api: str, size: int, n: int, batch: int
) -> dict[str, Any]:
    """bench_ring's producer (`RecordAccumulator.send` per record, or `append_batch`),
    sending the `batch` distinct values in turn, as broker_produce does."""
    ring = Ring.open(name)
    values = _values(size, batch)
    barrier.wait()
    t0 = CLOCK()
    if api == "send":
        acc = RecordAccumulator(ring)
        send = acc.send
        for _ in range(n // batch):
            for value in values:
                send(value)
        acc.flush()
    else:
        append_batch = ring.append_batch
        for _ in range(n // batch):
            append_batch(values)
    t1 = CLOCK()
    full_waits = ring.stat().full_waits
    ring.close()
    return {"start_ns": t0, "sent_ns": t1, "full_waits": full_waits}


def ring_consume(
    barrier: Any, name: str, size: int, n: int, batch: int, stall: tuple[str, float]
) -> dict[str, Any]:
    """The bare ring's consumer (bench_ring's, checking every record): it advances
    the spill position itself, standing in for the durable log."""
    ring = Ring.open(name)
    reader = ring.reader()
    poll, spill_advance = reader.poll, ring.spill_advance
    check, dog = Check(size, batch), Watchdog(*stall)
    count = polls = 0
    barrier.wait()
    dog.armed = True
    while count < n:
        records = poll(STALL_S)
        dog.moves += 1
        if not records:
            raise RuntimeError(f"no records for {STALL_S}s after {count} of {n}")
        check([r.value for r in records], [r.offset for r in records])
        count += len(records)
        polls += 1
        spill_advance(reader.position)
    t1 = CLOCK()
    ring.close()
    return {"end_ns": t1, "count": count, "polls": polls}


def queue_consume(
    barrier: Any, q: Any, size: int, n: int, batch: int
) -> dict[str, Any]:
    """bench_ring's Queue consumer, checking every record."""
    get, check = q.get, Check(size, batch)
    count = 0
    barrier.wait()
    while count < n:
        try:
            got = get(timeout=STALL_S)
        except queue.Empty:
            raise RuntimeError(
                f"no message for {STALL_S}s after {count} of {n}"
            ) from None
        values = got if batch > 1 else [got]
        check(values)
        count += len(values)
    return {"end_ns": CLOCK(), "count": count}


def zmq_socket(kind: str, address: str, hwm: int) -> tuple[Any, Any]:
    """A PUSH socket connected to address, or a PULL socket bound there, holding
    hwm messages, its sends lingering and its receives waiting up to STALL_S."""
    import zmq

    context = zmq.Context()
    if kind == "push":
        sock = context.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, int(STALL_S * 1000))
        sock.connect(address)
    else:
        sock = context.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.RCVTIMEO, int(STALL_S * 1000))
        sock.bind(address)
    return context, sock


def zmq_produce(
    barrier: Any, address: str, size: int, n: int, batch: int, hwm: int
) -> dict[str, Any]:
    """PUSH: a batch a message, two frames: the values' lengths, the values packed
    (one join: the copy the ring's append makes too; zero-copy send)."""

    context, sock = zmq_socket("push", address, hwm)
    values = _values(size, batch)
    send = sock.send_multipart
    barrier.wait()
    t0 = CLOCK()
    for _ in range(n // batch):
        send([array("I", map(len, values)).tobytes(), b"".join(values)], copy=False)
    t1 = CLOCK()
    sock.close()  # waits (up to LINGER) until the consumer has taken everything
    context.term()
    return {"start_ns": t0, "sent_ns": t1}


def zmq_consume(
    barrier: Any, address: str, size: int, n: int, batch: int, hwm: int
) -> dict[str, Any]:
    """PULL: each message unpacked into its values (a bytes object each, as
    poll_batch makes), every one checked."""
    import zmq

    context, sock = zmq_socket("pull", address, hwm)
    check = Check(size, batch)
    count = 0
    barrier.wait()
    while count < n:
        try:
            head, body = sock.recv_multipart()
        except zmq.Again:
            raise RuntimeError(
                f"no message for {STALL_S}s after {count} of {n}"
            ) from None
        lengths = array("I")
        lengths.frombytes(head)
        ends = list(accumulate(lengths))
        values = [body[a:b] for a, b in zip([0, *ends], ends, strict=False)]
        check(values)
        count += len(values)
    t1 = CLOCK()
    sock.close()
    context.term()
    return {"end_ns": t1, "count": count}


def zmq_produce_each(
    barrier: Any, address: str, size: int, n: int, batch: int, hwm: int
) -> dict[str, Any]:
    """PUSH: one value a message (the `batch` distinct values in turn)."""

    context, sock = zmq_socket("push", address, hwm)
    values = _values(size, batch)
    send = sock.send
    barrier.wait()
    t0 = CLOCK()
    for _ in range(n // batch):
        for value in values:
            send(value, copy=size < 4 * KiB)  # pyzmq's advice: copy small frames
    t1 = CLOCK()
    sock.close()
    context.term()
    return {"start_ns": t0, "sent_ns": t1}


def zmq_consume_each(
    barrier: Any, address: str, size: int, n: int, batch: int, hwm: int
) -> dict[str, Any]:
    """PULL: one value a message, as bytes, each checked (in lists of `batch`)."""
    import zmq

    context, sock = zmq_socket("pull", address, hwm)
    check, recv = Check(size, batch), sock.recv
    count = 0
    barrier.wait()
    while count < n:
        try:
            values = [recv() for _ in range(batch)]
        except zmq.Again:
            raise RuntimeError(
                f"no message for {STALL_S}s after {count} of {n}"
            ) from None
        check(values)
        count += len(values)
    t1 = CLOCK()
    sock.close()
    context.term()
    return {"end_ns": t1, "count": count}


def fifo_produce(
    barrier: Any, q: Any, size: int, n: int, batch: int, many: bool
) -> dict[str, Any]:
    """faster-fifo: put one value a message, or put_many of `batch` values (its
    batched API: one lock and one wake-up for the lot)."""
    values = _values(size, batch)
    barrier.wait()
    t0 = CLOCK()
    if many:
        put_many = q.put_many
        for _ in range(n // batch):
            put_many(values, timeout=STALL_S)
    else:
        put = q.put
        for _ in range(n // batch):
            for value in values:
                put(value, timeout=STALL_S)
    t1 = CLOCK()
    return {"start_ns": t0, "sent_ns": t1}


def fifo_consume(
    barrier: Any, q: Any, size: int, n: int, batch: int, many: bool
) -> dict[str, Any]:
    """get one message at a time, or get_many (up to `batch` a call, as many as
    are there), each value checked."""
    check, count = Check(size, batch), 0
    barrier.wait()
    try:
        if many:
            get_many = q.get_many
            while count < n:
                values = get_many(timeout=STALL_S, max_messages_to_get=batch)
                check(values)
                count += len(values)
        else:
            get = q.get
            while count < n:
                values = [get(timeout=STALL_S) for _ in range(min(batch, n - count))]
                check(values)
                count += len(values)
    except queue.Empty:  # faster-fifo's is the stdlib's
        raise RuntimeError(f"no message for {STALL_S}s after {count} of {n}") from None
    return {"end_ns": CLOCK(), "count": count}
