"""Producer and consumer processes for the lapped-consumer system test (issue 9).

    python -m tests.system.lapped_worker produce DATA_DIR TOPIC ID SECONDS
    python -m tests.system.lapped_worker consume DATA_DIR TOPIC MODE PROGRESS EXPECT

A producer calls `Producer.send_batch` with BATCH values of SIZE bytes (4 MiB a
batch) to partition 0 for SECONDS, then prints {"sent": N}. A value is (producer id,
sequence number) then PAD, so that a consumer can check every byte of it.

A consumer reads partition 0 from offset 0 with `Consumer.poll_batch` (MODE poll) or
`Consumer.read_batches`, decoding the raw batches itself with `_native.Decoded`, CRCs
checked (MODE raw). It checks what a user would: offsets dense from 0, each
producer's sequence numbers one after the other (no gap, no repeat), every value
whole, and no batch returned cut short. After each read it stores (records read,
next offset) as two int64 in the PROGRESS file (mapped, so the test can watch it
without a syscall of ours per read and see a consumer that stopped moving). Once the
EXPECT file exists (JSON: producer id -> records sent) and every producer's records
are in, it prints a JSON summary; it stops at the first problem, and also when no
record comes for --stall seconds, and says so in "problems". SIGUSR1 dumps its
Python stacks on stderr (the test asks for them before it kills a hung consumer).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import mmap
import signal
import struct
import sys
import time
from pathlib import Path

from shmbroker import Consumer, Producer, ShmbrokerError, _native
from tests.system.ring_worker import RECORD

SIZE = 4096  # bytes a value
BATCH = 1024  # values a send_batch: 4 MiB of values, a 4.2 MB batch
PAD = b"v" * (SIZE - RECORD.size)
PROGRESS = struct.Struct("<qq")  # records read, next offset
F = _native.RECORD_FIELDS  # offset, timestamp, key pos/end, value pos/end, headers


def produce(args: argparse.Namespace) -> None:
    with Producer(
        args.data_dir, client_id=f"lapped-producer-{args.id}", auto_create_topics=False
    ) as producer:
        seq, end = 0, time.monotonic() + args.seconds
        while time.monotonic() < end:
            values = [RECORD.pack(args.id, s) + PAD for s in range(seq, seq + BATCH)]
            producer.send_batch(args.topic, values, partition=0)
            seq += BATCH
    print(json.dumps({"sent": seq}), flush=True)


class Checker:
    """What a consumer has seen: the next offset, each producer's next sequence
    number, and the first problem."""

    def __init__(self, progress: memoryview) -> None:
        self.next_offset = 0
        self.next_seq: dict[int, int] = {}
        self.records = 0
        self.problem: str | None = None
        self._progress = progress

    def record(self, offset: int, value: bytes | None) -> bool:
        """Check one record; False (and self.problem set) at the first wrong one."""
        if offset != self.next_offset:
            self.problem = f"offset {offset}, expected {self.next_offset}"
            return False
        if value is None or len(value) < RECORD.size:
            self.problem = f"offset {offset}: value {value!r:.40} is no (id, seq)"
            return False
        pid, seq = RECORD.unpack_from(value)
        want = self.next_seq.get(pid, 0)
        if seq != want:
            self.problem = f"offset {offset}: producer {pid} seq {seq}, expected {want}"
            return False
        if len(value) != SIZE or not value.endswith(PAD):
            self.problem = (
                f"offset {offset}: producer {pid} seq {seq}: value of {len(value)} "
                f"bytes is not the one sent ({SIZE} bytes, ending {PAD[-8:]!r}): "
                f"{value[-16:]!r}"
            )
            return False
        self.next_seq[pid] = seq + 1
        self.next_offset = offset + 1
        self.records += 1
        return True

    def publish(self) -> None:
        self._progress[0], self._progress[1] = self.records, self.next_offset

    def done(self, expect: dict[int, int] | None) -> bool:
        return expect is not None and all(
            self.next_seq.get(pid, 0) >= sent for pid, sent in expect.items()
        )


def poll_once(consumer: Consumer, check: Checker, wait: float) -> int:
    """One Consumer.poll_batch; the records it returned."""
    records = consumer.poll_batch(timeout=wait)
    for r in records:
        if not check.record(r.offset, r.value):
            break
    return len(records)


def read_once(
    consumer: Consumer, check: Checker, wait: float, decoded: _native.Decoded
) -> int:
    """One Consumer.read_batches, decoded here with CRCs checked; the records in it.
    Every byte returned must belong to a whole batch."""
    got = consumer.read_batches(wait)
    if got is None:
        return 0
    data, at, count = got[1], 0, 0
    while at < len(data):
        first = check.next_offset
        try:
            n = decoded.decode(data, at, len(data), verify_crc=True)
        except ShmbrokerError as exc:
            check.problem = (
                f"read_batches returned {len(data)} bytes from offset {first} that do "
                f"not decode at byte {at}: {exc}; bytes there: {data[at : at + 24]!r}"
            )
            return count
        if decoded.bytes_consumed == 0:
            check.problem = (
                f"read_batches returned a torn batch: {len(data)} bytes from offset "
                f"{first}, of which the last {len(data) - at} are not a whole batch "
                f"(bytes there: {data[at : at + 24]!r})"
            )
            return count
        rows = decoded.record_rows()
        for i in range(0, n * F, F):
            if not check.record(rows[i], data[rows[i + 4] : rows[i + 5]]):
                return count
            count += 1
        at += decoded.bytes_consumed
    return count


def consume(args: argparse.Namespace) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    expect_file = Path(args.expect)
    with open(args.progress, "r+b") as f:
        progress_map = mmap.mmap(f.fileno(), PROGRESS.size)
    check = Checker(memoryview(progress_map).cast("q"))
    decoded = _native.Decoded()
    expect: dict[int, int] | None = None
    with Consumer(
        args.data_dir, client_id=f"lapped-{args.mode}", auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign([(args.topic, 0)])
        last_progress = time.monotonic()
        while check.problem is None and not check.done(expect):
            if args.mode == "poll":
                n = poll_once(consumer, check, 0.2)
            else:
                n = read_once(consumer, check, 0.2, decoded)
            check.publish()
            now = time.monotonic()
            if n:
                last_progress = now
            elif now - last_progress > args.stall:
                check.problem = (
                    f"no record for {args.stall:.0f}s: waited for offset "
                    f"{check.next_offset}"
                )
            if expect is None and expect_file.exists():
                sent = json.loads(expect_file.read_text())
                expect = {int(pid): n for pid, n in sent.items()}
    json.dump(
        {
            "mode": args.mode,
            "records": check.records,
            "next_offset": check.next_offset,
            "next_seq": check.next_seq,
            "problem": check.problem,
        },
        sys.stdout,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("data_dir")
    pr.add_argument("topic")
    pr.add_argument("id", type=int)
    pr.add_argument("seconds", type=float)
    co = sub.add_parser("consume")
    co.add_argument("data_dir")
    co.add_argument("topic")
    co.add_argument("mode", choices=["poll", "raw"])
    co.add_argument("progress", help="a file of PROGRESS.size bytes")
    co.add_argument("expect", help="written by the test when the producers are done")
    co.add_argument("--stall", type=float, default=15)
    args = p.parse_args()
    try:
        {"produce": produce, "consume": consume}[args.cmd](args)
    except ShmbrokerError as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
