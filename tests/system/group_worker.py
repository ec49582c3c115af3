"""Producer and consumer-group member processes for the group system tests.

    python -m tests.system.group_worker produce DATA_DIR TOPIC ID COUNT [--rate R]
    python -m tests.system.group_worker consume DATA_DIR TOPIC GROUP LOG
        [--commit auto|manual] [--commit-interval-ms MS] [--strategy NAME]...

A record's value is (producer id, sequence number). The producer sends COUNT records
in send_batch calls of BATCH, each to the next partition in turn, at most R records/s
(0: as fast as it can); it prints "producing" after its first batch, and a JSON line
{"sent": n} at the end.

The member subscribes to TOPIC in GROUP (auto.offset.reset earliest) and polls until
SIGTERM, then commits (manual mode), closes (which leaves the group) and exits 0. It
appends one line per event to LOG with one unbuffered write, so that what it wrote
before a kill -9 is on disk and anything it committed had been written first:

    O <incarnation> <generation> <member> <p,p,...|->  partitions owned after a change
    P <incarnation> <generation> <member> <p> <position>  a new partition's start
    R <incarnation> <generation> <member> <p> <first> <last> <t_ns>  records consumed
    C <p> <offset>                         a commit (manual mode) that succeeded
    E <ErrorClass>                         a commit the group refused

incarnation is the supervisor's pid (generations start again when it restarts), t_ns
CLOCK_MONOTONIC when poll returned. "O" is also logged when a poll finds the
generation changed without a callback (a member that kept its partitions).
An error ends the process with exit status 1 and "<ErrorClass>: <message>" on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from shmbroker import Consumer, Producer, ShmbrokerError, TopicPartition, errors
from tests.system.ring_worker import RECORD

BATCH = 50  # records per send_batch


def produce(args: argparse.Namespace) -> None:
    with Producer(
        args.data_dir, client_id=f"producer-{args.id}", auto_create_topics=False
    ) as producer:
        partitions = len(producer.partitions_for(args.topic))
        t0, seq, batches = time.monotonic(), 0, 0
        while seq < args.count:
            n = min(BATCH, args.count - seq)
            values = [RECORD.pack(args.id, s) for s in range(seq, seq + n)]
            producer.send_batch(args.topic, values, partition=batches % partitions)
            seq += n
            batches += 1
            if batches == 1:
                print("producing", flush=True)
            if args.rate > 0:  # pace: the records go out over count / rate seconds
                ahead = t0 + seq / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    print(json.dumps({"sent": seq}), flush=True)


class Member:
    """The consumer and its log."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.manual = args.commit == "manual"
        self.commit_interval = args.commit_interval_ms / 1000
        self.fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.consumer = Consumer(
            args.data_dir,
            client_id=args.client_id,
            group_id=args.group,
            auto_offset_reset="earliest",
            enable_auto_commit=not self.manual,
            auto_commit_interval_ms=args.commit_interval_ms,
            partition_assignment_strategy=args.strategy or ["range"],
            max_poll_records=1000,
        )
        self.generation = -1
        self.current = "0 -1 -"  # incarnation, generation, member id of the last O
        self.consumer.subscribe(
            [args.topic], on_assign=self.on_assign, on_revoke=self.on_revoke
        )

    def write(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def log_owned(self, owned: set[TopicPartition]) -> None:
        """Log what this member owns now, in the generation the group last gave it
        (read right after the join: the connection's supervisor is the one that
        gave it)."""
        group = self.consumer._group  # the worker peeks: tests check generations
        assert group is not None
        hello = self.consumer.connection.hello
        incarnation = hello.pid if hello else 0
        self.generation = group.generation
        self.current = f"{incarnation} {group.generation} {group.member_id or '-'}"
        parts = ",".join(str(tp.partition) for tp in sorted(owned)) or "-"
        self.write(f"O {self.current} {parts}")

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.log_owned(self.consumer.assignment())
        for tp in partitions:
            position = self.consumer.position(tp)
            self.write(f"P {self.current} {tp.partition} {position}")

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self.manual:  # as Kafka advises: commit what was consumed before it goes
            self.commit(partitions)
        self.log_owned(self.consumer.assignment() - set(partitions))

    def commit(self, partitions: list[TopicPartition] | set[TopicPartition]) -> None:
        offsets = {tp: self.consumer.position(tp) for tp in partitions}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except (errors.GroupError, errors.BrokerUnavailable) as exc:
            self.write(f"E {type(exc).__name__}")
            return
        for tp, offset in sorted(offsets.items()):
            self.write(f"C {tp.partition} {offset}")

    def run(self, stopping: list[bool]) -> int:
        consumer, records = self.consumer, 0
        next_commit = time.monotonic() + self.commit_interval
        while not stopping:
            batch = consumer.poll_batch(timeout=0.05)
            now = time.monotonic_ns()
            group = consumer._group
            assert group is not None
            if group.generation != self.generation:  # no callback told us
                self.log_owned(consumer.assignment())
            if batch:
                records += len(batch)
                who = self.current
                lines, first = [], batch[0]
                for prev, r in zip(batch, [*batch[1:], None], strict=True):
                    if (
                        r is None
                        or r.partition != prev.partition
                        or (r.offset != prev.offset + 1)
                    ):
                        lines.append(
                            f"R {who} {first.partition} {first.offset} "
                            f"{prev.offset} {now}\n"
                        )
                        first = r
                os.write(self.fd, "".join(lines).encode())
            if self.manual and time.monotonic() >= next_commit:
                next_commit = time.monotonic() + self.commit_interval
                self.commit(consumer.assignment())
        if self.manual:
            self.commit(consumer.assignment())
        consumer.close()
        os.close(self.fd)
        return records


def consume(args: argparse.Namespace) -> None:
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    member = Member(args)
    print("consuming", flush=True)
    records = member.run(stopping)
    print(json.dumps({"records": records}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("data_dir")
    pr.add_argument("topic")
    pr.add_argument("id", type=int)
    pr.add_argument("count", type=int)
    pr.add_argument("--rate", type=float, default=0, help="records/s; 0: no limit")
    co = sub.add_parser("consume")
    co.add_argument("data_dir")
    co.add_argument("topic")
    co.add_argument("group")
    co.add_argument("log")
    co.add_argument("--client-id", default="member")
    co.add_argument("--commit", choices=("auto", "manual"), default="auto")
    co.add_argument("--commit-interval-ms", type=int, default=100)
    co.add_argument("--strategy", action="append")
    args = p.parse_args()
    try:
        {"produce": produce, "consume": consume}[args.cmd](args)
    except ShmbrokerError as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
