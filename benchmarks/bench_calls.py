"""What one call of the Python surface costs, per record, in one process: the
producer's and the consumer's hot calls, without a second process to wait for.

A real supervisor runs (`EmbeddedBroker`); each row gets a fresh topic (1 partition;
4 for the keyed and named-partition rows).
Rows, 100 B values, `--records` records (default 200,000):
  - `Producer.send(topic, value)` per record (linger_ms 5, batch_records 1000), the
    final `flush()` included: ns per send;
  - `Producer.send(topic, value, key=..., headers=[one])` to a 4-partition topic
    (murmur2 of the key picks), and `Producer.send(topic, value, partition=i % 4)`:
    ns per send, the same way;
  - `Producer.send_batch(topic, values, partition=0)`, 1000 values a call: ns per
    record;
  - `Consumer.poll_batch()` (max_poll_records 500) until it holds every record of a
    topic filled before the clock starts: ns per record, Records built;
  - `Consumer.poll(5)`, one record a call, the same way;
  - `Consumer.poll_columns(1 << 20)` the same way (RecordColumns; values not made
    into bytes): ns per record, where the package has it;
  - `Consumer.poll_batch()` of the keyed sends' records (a key and a header each,
    4 partitions).
`--before DIR` runs the same rows against the shmbroker package in DIR (an export of
an older commit, its C core built in place) in a fresh interpreter, alternating
round by round with this tree, and prints both: the baseline in the same run.
Rows are the median of `--rounds` rounds. Left out: keys, headers, other processes
(bench_peers.py has them), acks=all. `--json` prints raw results.

    .venv/bin/python benchmarks/bench_calls.py                   # ~30 s
    .venv/bin/python benchmarks/bench_calls.py --before /tmp/old  # with a baseline
    .venv/bin/python benchmarks/bench_calls.py --smoke            # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

SHM_PREFIX = "shmb.bench."
SIZE, BATCH = 100, 1000


def rows_here(n: int) -> dict[str, float]:
    """Every row once, with the shmbroker this interpreter imports."""
    from shmbroker.client.admin import Admin
    from shmbroker.client.consumer import Consumer
    from shmbroker.client.producer import Producer
    from shmbroker.embedded import EmbeddedBroker

    values = [i.to_bytes(4, "little") + b"x" * (SIZE - 4) for i in range(BATCH)]
    out: dict[str, float] = {}
    with EmbeddedBroker(shm_prefix=SHM_PREFIX) as broker:
        data_dir = str(broker.data_dir)
        with Admin(data_dir) as admin:
            for topic in ("send", "batch"):
                admin.create_topic(topic, 1)
            for topic in ("keyed", "named"):
                admin.create_topic(topic, 4)
        with Producer(data_dir) as producer:
            producer.partitions_for("send")
            send = producer.send
            t0 = time.perf_counter_ns()
            for _ in range(n // BATCH):
                for value in values:
                    send("send", value)
            producer.flush()
            out["Producer.send"] = (time.perf_counter_ns() - t0) / n
            # Kafka's commonest send: a key (murmur2 picks of 4 partitions) and a
            # header; then a partition the caller names
            keys = [b"key-%d" % i for i in range(BATCH)]
            headers = [("h", b"v")]
            for row, topic, kw in (
                ("Producer.send key + header", "keyed", {"headers": headers}),
                ("Producer.send partition=", "named", {}),
            ):
                producer.partitions_for(topic)
                t0 = time.perf_counter_ns()
                for _ in range(n // BATCH):
                    for i, value in enumerate(values):
                        if topic == "keyed":
                            send(topic, value, key=keys[i], **kw)
                        else:
                            send(topic, value, partition=i & 3)
                producer.flush()
                out[row] = (time.perf_counter_ns() - t0) / n
            producer.partitions_for("batch")
            t0 = time.perf_counter_ns()
            for _ in range(n // BATCH):
                producer.send_batch("batch", values, partition=0)
            out["Producer.send_batch x1000"] = (time.perf_counter_ns() - t0) / n
        polls = {"Consumer.poll_batch": "poll_batch", "Consumer.poll": "poll"}
        if hasattr(Consumer, "poll_columns"):
            polls["Consumer.poll_columns"] = "poll_columns"
        for row, method in polls.items():
            with Consumer(data_dir, auto_offset_reset="earliest") as consumer:
                consumer.assign([("batch", 0)])
                poll = getattr(consumer, method)
                count = 0
                t0 = time.perf_counter_ns()
                while count < n:
                    if method == "poll":  # one record a call
                        got = [poll(5)]
                        if got[0] is None:
                            got = []
                    elif method == "poll_batch":
                        got = poll(None, 5)
                    else:
                        got = poll(1 << 20, 5)
                    if not got:
                        raise RuntimeError(f"{row}: nothing for 5 s after {count}")
                    count += (
                        sum(map(len, got)) if method == "poll_columns" else len(got)
                    )
                out[row] = (time.perf_counter_ns() - t0) / n
        # the keyed sends' records: a key and a header each, on 4 partitions
        with Consumer(data_dir, auto_offset_reset="earliest") as consumer:
            consumer.assign([("keyed", p) for p in range(4)])
            count = 0
            t0 = time.perf_counter_ns()
            while count < n:
                got = consumer.poll_batch(None, 5)
                if not got:
                    raise RuntimeError(
                        f"keyed poll_batch: nothing for 5 s after {count}"
                    )
                count += len(got)
            out["Consumer.poll_batch key + header"] = (time.perf_counter_ns() - t0) / n
    return out


def rows_child(n: int, directory: str | None = None) -> dict[str, float]:
    """Every row once in a fresh interpreter: this tree's, or with directory the
    package there. Both sides alike: a long-lived parent (its heap, its imports)
    ran this tree's sends ~15% slower than a fresh child ran the same code."""
    from machine import run_child

    return dict(run_child(__file__, ["--records", str(n)], directory))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, help="records a row (default 200,000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median (5)")
    ap.add_argument("--before", help="also run the rows on the shmbroker in DIR")
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument("--smoke", action="store_true", help="a few seconds")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = args.records or (20_000 if args.smoke else 200_000)
    n = max(BATCH, n - n % BATCH)
    if args.child:
        print(json.dumps(rows_here(n)))
        return 0
    from bench_ring import header
    from machine import alternate, publish

    rounds = 1 if args.smoke else args.rounds
    after, before, runs = alternate(
        rounds,
        lambda: rows_child(n),
        (lambda: rows_child(n, args.before)) if args.before else None,
    )
    result = {
        "header": header(),
        "records": n,
        "rounds": rounds,
        "after": after,
        "before": before,
        "before_package": args.before,
        "runs": runs,
    }

    def report() -> None:
        print("bench_calls: ns per record of one call, one process, 100 B values")
        for k, v in result["header"].items():
            print(f"  {k:16} {v}")
        print(f"\n  median of {rounds} rounds, {n:,} records a row")
        if args.before:
            print(f"  before: the shmbroker in {args.before}")
        print(f"  {'call':32} {'this tree':>10} {'before':>10} {'ratio':>7}")
        for row, ns in result["after"].items():
            old = result["before"].get(row)
            ratio = f"{old / ns:.2f}x" if old else ""
            print(f"  {row:32} {ns:>10.0f} {'' if old is None else f'{old:.0f}':>10} "
                  f"{ratio:>7}")  # fmt: skip

    publish("bench_calls", result, smoke=args.smoke, as_json=args.json,
            print_report=report)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
