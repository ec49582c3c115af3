"""Producer and consumer processes that use the client API against a broker, for the
broker system tests.

    python -m tests.system.broker_worker produce DATA_DIR TOPIC ID COUNT
    python -m tests.system.broker_worker consume DATA_DIR TOPIC PARTITIONS COUNT

A record's value is (producer id, sequence number). A producer alternates runs of
per-record sends (keyless: sticky partitioning spreads them over the partitions) and
of send_batch calls, and prints "producing" once its first records are appended. The
consumer reads every partition from the earliest offset and checks what a user would:
each partition's offsets dense from 0, each producer's sequence numbers increasing
within a partition, no record twice, none missing; it prints a JSON summary.
COUNT -1 produces or consumes until an error. An error ends the process with exit
status 1 and "<ErrorClass>: <message>" on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from shmbroker import Consumer, Producer, ShmbrokerError
from tests.system.ring_worker import RECORD

RUN = 1000  # records per run of one kind of send
BATCH = 100  # records per send_batch


def produce(args: argparse.Namespace) -> None:
    with Producer(
        args.data_dir, client_id=f"producer-{args.id}", auto_create_topics=False
    ) as producer:
        seq = 0
        while args.count < 0 or seq < args.count:
            if (seq // RUN) % 2 == 0:
                producer.send(args.topic, RECORD.pack(args.id, seq))
                seq += 1
            else:
                n = BATCH if args.count < 0 else min(BATCH, args.count - seq)
                producer.send_batch(
                    args.topic, [RECORD.pack(args.id, s) for s in range(seq, seq + n)]
                )
                seq += n
            if seq == RUN + BATCH:  # the first send_batch appended: we are going
                print("producing", flush=True)
    print(json.dumps({"sent": seq}), flush=True)


def consume(args: argparse.Namespace) -> None:
    partitions = list(range(args.partitions))
    next_offset = dict.fromkeys(partitions, 0)
    last_seq: dict[tuple[int, int], int] = {}  # (producer, partition) -> seq
    seen: dict[int, bytearray] = {}  # producer -> a flag per sequence number
    records, problems = 0, []
    with Consumer(
        args.data_dir,
        client_id="checker",
        auto_offset_reset="earliest",
        max_poll_records=10_000,
    ) as consumer:
        consumer.assign([(args.topic, p) for p in partitions])
        print("consuming", flush=True)
        while args.count < 0 or records < args.count:
            batch = consumer.poll_batch(timeout=args.idle)
            if not batch:
                problems.append(f"no record for {args.idle}s after {records}")
                break
            for r in batch:
                p = r.partition
                if r.offset != next_offset[p]:
                    problems.append(f"partition {p}: offset {r.offset}, expected "
                                    f"{next_offset[p]}")  # fmt: skip
                next_offset[p] = r.offset + 1
                pid, seq = RECORD.unpack(r.value)
                if seq <= last_seq.get((pid, p), -1):
                    problems.append(f"partition {p}: producer {pid} seq {seq} after "
                                    f"{last_seq[pid, p]}")  # fmt: skip
                last_seq[pid, p] = seq
                flags = seen.setdefault(pid, bytearray())
                if seq >= len(flags):
                    flags.extend(bytes(seq + 1 - len(flags) + 4096))
                if flags[seq]:
                    problems.append(f"producer {pid} seq {seq} twice")
                flags[seq] = 1
            records += len(batch)
    counts = {pid: sum(flags) for pid, flags in seen.items()}
    highest = {
        pid: max(s for (q, _), s in last_seq.items() if q == pid) for pid in seen
    }
    missing = {pid: highest[pid] + 1 - counts[pid] for pid in seen}
    json.dump(
        {
            "records": records,
            "per_producer": counts,
            "missing": {pid: n for pid, n in missing.items() if n},
            "next_offsets": next_offset,
            "problems": problems[:20],
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
    pr.add_argument("count", type=int, help="-1: until an error")
    co = sub.add_parser("consume")
    co.add_argument("data_dir")
    co.add_argument("topic")
    co.add_argument("partitions", type=int)
    co.add_argument("count", type=int, help="-1: until an error or idle")
    co.add_argument("--idle", type=float, default=60)
    args = p.parse_args()
    try:
        {"produce": produce, "consume": consume}[args.cmd](args)
    except ShmbrokerError as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
