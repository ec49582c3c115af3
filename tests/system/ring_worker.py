"""Producer and consumer processes for the ring system tests.

    python -m tests.system.ring_worker produce RING ID COUNT MODE [--stop FILE]
    python -m tests.system.ring_worker consume RING COUNT POSITION_FILE
    python -m tests.system.ring_worker consume-log DIR RING COUNT

A record's value is (producer id, sequence number) plus padding. The consumer checks
what a user would: offsets dense from 0, every producer's sequence numbers in order
with no gap and no repeat, every batch's CRC; it prints a JSON summary and keeps its
byte position in POSITION_FILE so that the test can advance the spill behind it.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

from shmbroker import Ring

RECORD = struct.Struct("<IQ")  # producer id, sequence number


def produce(args: argparse.Namespace) -> None:
    ring = Ring.open(args.ring)
    pad = b"p" * args.pad
    seq, first = 0, True
    while args.count < 0 or seq < args.count:
        if args.stop and os.path.exists(args.stop):
            break
        # "mixed" alternates runs of per-record appends and of batches
        per_record = args.mode == "record" or (
            args.mode == "mixed" and seq % 2000 < 1000
        )
        n = 1 if per_record else args.batch
        if args.count >= 0:
            n = min(n, args.count - seq)
        if per_record:
            ring.append(RECORD.pack(args.id, seq) + pad, timeout=60)
        else:
            ring.append_batch(
                [RECORD.pack(args.id, s) + pad for s in range(seq, seq + n)], timeout=60
            )
        seq += n
        if first:  # tells a test that kills us that we are appending
            print("appending", flush=True)
            first = False
    ring.close()


def check(
    reader: Any, count: int, idle: float, after_poll: Callable[[], None] = lambda: None
) -> None:
    """Poll until count records (-1: until idle), check offsets dense from 0 and each
    producer's sequence gap-free, and print the JSON summary."""
    next_seq: dict[int, int] = {}
    expected_offset, seen, problems = 0, 0, []
    while count < 0 or seen < count:
        records = reader.poll(timeout=idle)
        if not records:
            if count >= 0:
                problems.append(f"no record for {idle}s after {seen}")
            break
        for r in records:
            if r.offset != expected_offset:
                problems.append(f"offset {r.offset}, expected {expected_offset}")
            expected_offset = r.offset + 1
            pid, seq = RECORD.unpack_from(r.value)
            if seq != next_seq.get(pid, 0):
                problems.append(
                    f"producer {pid}: seq {seq}, expected {next_seq.get(pid, 0)}"
                )
            next_seq[pid] = seq + 1
        seen += len(records)
        after_poll()
    json.dump(
        {"records": seen, "next_seq": next_seq, "problems": problems[:20]}, sys.stdout
    )


def consume(args: argparse.Namespace) -> None:
    ring = Ring.open(args.ring)
    reader = ring.reader(0, check_crcs=True)
    fd = os.open(args.position_file, os.O_RDWR | os.O_CREAT, 0o600)
    check(
        reader,
        args.count,
        args.idle,
        lambda: os.pwrite(fd, struct.pack("<q", reader.position), 0) and None,
    )
    ring.close()


def consume_log(args: argparse.Namespace) -> None:
    """As consume, through a PartitionReader: segments first, then the ring."""
    from shmbroker.log.reader import PartitionReader

    log = PartitionReader.open(args.directory, args.ring, topic="t", partition=0)
    check(log.reader(0), args.count, 30)
    log.close()


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("ring")
    pr.add_argument("id", type=int)
    pr.add_argument("count", type=int, help="-1: until --stop exists or killed")
    pr.add_argument("mode", choices=["record", "batch", "mixed"])
    pr.add_argument("--batch", type=int, default=100)
    pr.add_argument("--pad", type=int, default=0)
    pr.add_argument("--stop")
    co = sub.add_parser("consume")
    co.add_argument("ring")
    co.add_argument("count", type=int, help="-1: until idle for --idle seconds")
    co.add_argument("position_file")
    co.add_argument("--idle", type=float, default=30)
    cl = sub.add_parser("consume-log")
    cl.add_argument("directory")
    cl.add_argument("ring")
    cl.add_argument("count", type=int)
    args = p.parse_args()
    {"produce": produce, "consume": consume, "consume-log": consume_log}[args.cmd](args)


if __name__ == "__main__":
    main()
