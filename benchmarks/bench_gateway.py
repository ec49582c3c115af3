"""Kafka clients through the gateway: confluent-kafka's producer -> gateway -> topic,
and topic -> gateway -> confluent-kafka's consumer, at 100 B and 64 KiB, next to the
local Producer/Consumer (shared memory, no gateway) and to Redis Streams in the same
run.

A real supervisor and gateway run (`EmbeddedBroker(gateway=True)`), each row on a
fresh 1-partition topic with the defaults (16 MiB ring, flush.ms 1000). Measured:
  1. kafka produce: `Producer.produce(topic, value, partition=0)` N times, then
     `flush()`, with the client's defaults (acks=all, so every answer waits for the
     batch's fsync, shared by the requests in flight: group commit; linger.ms 5,
     batch.size 1 MB). Records/s = N / (first produce -> flush returned).
  2. kafka consume: a consumer with assign() from offset 0 calls `consume(10000)`
     (fewer for large values: what 8 MB hold) until it holds the 2N records of
     row 1 (defaults: fetch.max.bytes 50 MB, max.partition.fetch.bytes 1 MiB,
     fetch.queue.backoff.ms 1000). Records/s = N /
     (first consume call -> last record held). `--tuned` adds the same with
     fetch.queue.backoff.ms=10 and queued.min.messages=1000000: with the defaults,
     when the fetcher outruns the application its queue fills and it stops fetching
     for a whole second.
     The same with acks=1 (answered at append; the spill writes and fsyncs on
     its own schedule): what the disk's fsync costs row 1.
  3. local: `Producer.send` N times + `flush()` (acks=all), and `Consumer.poll_batch`
     until it holds them: the same records without the gateway.
  4. Redis Streams baseline: a redis-server of our own (appendonly yes, appendfsync
     everysec: its nearest durability to an fsynced ack), redis-py pipelines of 1000
     `XADD s * v <value>`; a consumer group reading with `XREADGROUP COUNT 1000
     NOACK` (no XACK round trips, as a Kafka consumer acks nothing) until it has N.
For each row: the gateway's and supervisor's CPU seconds during the row and, for the
gateway, CPU seconds per GB of values. Targets (issue 10) are checked at the end.

Left out: keys, headers, compression, more than one partition or client, process
start-up. MB and GB are 1e6 and 1e9 value bytes. Raw results go to
benchmarks/results/ (git-ignored); `--json` prints them instead.

    .venv/bin/python benchmarks/bench_gateway.py            # full run, a few minutes
    .venv/bin/python benchmarks/bench_gateway.py --smoke    # seconds (CI)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psutil
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka import Producer as KafkaProducer
from machine import cpu_busy, cpu_model, fmt_size, git, publish

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer

SHM_PREFIX = "shmb.bench-gw."
SIZES = {100: 1_000_000, 64 << 10: 20_000}  # value bytes -> records of a full run
SMOKE = {100: 20_000, 64 << 10: 300}
GB = 1e9


def header() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "busy_before": cpu_busy(),
    }


class Meter:
    """CPU seconds of the gateway and supervisor processes over a row."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        pid = broker.gateway_pid()
        assert pid is not None
        self.gateway = psutil.Process(pid)
        self.supervisor = psutil.Process(broker.pid)
        self.me = psutil.Process()

    def cpu(self) -> tuple[float, float, float]:
        def seconds(p: psutil.Process) -> float:
            t = p.cpu_times()
            return t.user + t.system

        return seconds(self.gateway), seconds(self.supervisor), seconds(self.me)


def measured(
    meter: Meter, n: int, size: int, run: Callable[[], float]
) -> dict[str, Any]:
    """Run a row (run returns its seconds) and what it cost each process."""
    before = meter.cpu()
    seconds = run()
    after = meter.cpu()
    gateway, supervisor, client = (a - b for a, b in zip(after, before, strict=True))
    return {
        "records": n,
        "size": size,
        "seconds": seconds,
        "records_per_s": n / seconds,
        "gb_per_s": n * size / seconds / GB,
        "gateway_cpu_s": gateway,
        "supervisor_cpu_s": supervisor,
        "client_cpu_s": client,
        "gateway_cpu_s_per_gb": gateway / (n * size / GB),
    }


def kafka_produce(boot: str, topic: str, n: int, size: int, **config: Any) -> float:
    producer = KafkaProducer({"bootstrap.servers": boot, **config})
    producer.list_topics(topic, timeout=30)  # connected before the clock starts
    value = b"x" * size
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    produce, poll = producer.produce, producer.poll
    start = time.perf_counter()
    for _ in range(n):
        try:
            produce(topic, value, partition=0, on_delivery=delivered)
        except BufferError:  # the client's queue is full: let it drain
            while True:
                poll(0.005)
                try:
                    produce(topic, value, partition=0, on_delivery=delivered)
                    break
                except BufferError:
                    continue
    if producer.flush(600):
        raise RuntimeError("records still unsent after 600 s")
    seconds = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{len(failed)} records failed: {failed[0]}")
    return seconds


def kafka_consume(boot: str, topic: str, n: int, size: int, **config: Any) -> float:
    consumer = KafkaConsumer(
        {"bootstrap.servers": boot, "group.id": "bench", "enable.auto.commit": False,
         **config}
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = 0
        # consume(k) returns once it holds k (or after the timeout): no more than
        # the client's queue holds (queued.max.messages.kbytes, 64 MB)
        batch = max(1, min(10_000, (8 << 20) // size))
        start = time.perf_counter()
        deadline = start + 600
        while got < n:
            messages = consumer.consume(min(batch, n - got), timeout=1.0)
            got += len(messages)
            if messages and messages[-1].error() is not None:
                raise RuntimeError(f"consumer error: {messages[-1].error()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"consumed {got} of {n} in 600 s")
        return time.perf_counter() - start
    finally:
        consumer.close()


def local_produce(data_dir: str, topic: str, n: int, size: int) -> float:
    value = b"x" * size
    with Producer(data_dir, acks="all") as producer:
        producer.partitions_for(topic)
        start = time.perf_counter()
        send = producer.send
        for _ in range(n):
            send(topic, value, partition=0)
        producer.flush()
        send(topic, value, partition=0).get(600)  # and fsynced, as acks=all
        return time.perf_counter() - start


def local_consume(data_dir: str, topic: str, n: int) -> float:
    with Consumer(data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, 0)])
        got = 0
        start = time.perf_counter()
        while got < n:
            got += len(consumer.poll_batch(10_000, timeout=1.0))
        return time.perf_counter() - start


# ---- Redis Streams ------------------------------------------------------------------


class Redis:
    """A redis-server of our own: AOF with fsync every second."""

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError(
                "no redis-server: `apt-get install redis-server` (make bench does)"
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def pid(self) -> int:
        return self.proc.pid

    def produce(self, stream: str, n: int, size: int) -> float:
        value, batch = b"x" * size, 1000
        start = time.perf_counter()
        for at in range(0, n, batch):
            pipe = self.client.pipeline(transaction=False)
            for _ in range(min(batch, n - at)):
                pipe.xadd(stream, {"v": value})
            pipe.execute()
        return time.perf_counter() - start

    def consume(self, stream: str, n: int) -> float:
        self.client.xgroup_create(stream, "bench", id="0")
        got = 0
        start = time.perf_counter()
        while got < n:
            for _, entries in self.client.xreadgroup(
                "bench", "c", {stream: ">"}, count=1000, noack=True
            ):
                got += len(entries)
        return time.perf_counter() - start

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the report ---------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    h = result["header"]
    print(f"bench_gateway  {h['cpu']}, {h['cores']} cores, Python {h['python']}, "
          f"commit {h['commit']}{' (dirty)' if h['dirty'] else ''}, "
          f"{h['busy_before']:.0%} busy before")  # fmt: skip
    print(f"\n{'row':34} {'size':>7} {'records/s':>12} {'MB/s':>8} {'gw cpu s':>8} "
          f"{'sup cpu s':>9} {'client s':>8} {'gw s/GB':>8}")  # fmt: skip
    for row in result["rows"]:
        gw = f"{row['gateway_cpu_s']:.2f}" if "gateway_cpu_s" in row else "-"
        sup = f"{row['supervisor_cpu_s']:.2f}" if "supervisor_cpu_s" in row else "-"
        kafka = row["name"].startswith("kafka")
        per_gb = f"{row['gateway_cpu_s_per_gb']:.2f}" if kafka else "-"
        client = f"{row['client_cpu_s']:.2f}" if "client_cpu_s" in row else "-"
        rate, mb = row["records_per_s"], row["gb_per_s"] * 1000
        print(f"{row['name']:34} {fmt_size(row['size']):>7} {rate:>12,.0f} "
              f"{mb:>8,.0f} {gw:>8} {sup:>9} {client:>8} {per_gb:>8}")  # fmt: skip
    print()
    for t in result["targets"]:
        print(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:52} "
              f"{t['got']:>14} (want >= {t['want']})")  # fmt: skip


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["name"], r["size"]): r for r in rows}
    out = []

    def check(target: str, got: float, want: float, unit: str) -> None:
        out.append({"target": target, "got": f"{got:,.2f}{unit}",
                    "want": f"{want:,}{unit}",
                    "pass": got >= want, "ratio": got / want})  # fmt: skip

    for way in ("produce", "consume"):
        kafka = by.get((f"kafka {way}", 100))
        if kafka is None:
            continue
        check(f"100 B kafka {way} records/s", kafka["records_per_s"] / 1e6, 1, "M")
        redis = by.get((f"redis {way}", 100))
        if redis is not None:
            ratio = kafka["records_per_s"] / redis["records_per_s"]
            check(f"100 B kafka {way} vs Redis Streams", ratio, 5, "x")
        big = by.get((f"kafka {way}", 64 << 10))
        if big is not None:
            check(f"64 KiB kafka {way} GB/s", big["gb_per_s"], 1, " GB/s")
    return out


def size_rows(
    broker: EmbeddedBroker, admin: Admin, meter: Meter, size: int, n: int, tuned: bool
) -> list[dict[str, Any]]:
    """Rows 1-3 for one value size, each topic fresh."""
    boot, data_dir = broker.bootstrap_servers, str(broker.data_dir)
    kafka, local = f"bench-{size}", f"local-{size}"
    tuning = {"fetch.queue.backoff.ms": 10, "queued.min.messages": 1_000_000}
    plan: list[tuple[str, int, Callable[[], float]]] = [
        ("kafka produce", n, partial(kafka_produce, boot, kafka, n, size)),
        ("kafka produce (acks=1)", n,
         partial(kafka_produce, boot, kafka, n, size, acks=1)),
        ("kafka consume", 2 * n, partial(kafka_consume, boot, kafka, 2 * n, size)),
    ]  # fmt: skip
    if tuned:
        plan.append(("kafka consume (backoff 10 ms)", 2 * n,
                     partial(kafka_consume, boot, kafka, 2 * n, size,
                             **tuning)))  # fmt: skip
    plan += [
        (
            "local produce (acks=all)",
            n,
            partial(local_produce, data_dir, local, n, size),
        ),
        ("local consume", n, partial(local_consume, data_dir, local, n)),
    ]
    admin.create_topic(kafka, 1)
    admin.create_topic(local, 1)
    try:
        return [
            {"name": name, **measured(meter, count, size, run)}
            for name, count, run in plan
        ]
    finally:
        admin.delete_topic(kafka)
        admin.delete_topic(local)


def redis_rows(sizes: dict[int, int]) -> list[dict[str, Any]]:
    """Row 4, with the server's CPU seconds."""
    redis = Redis()
    rows = []
    try:
        server = psutil.Process(redis.pid())
        for size, n in sizes.items():
            stream = f"s{size}"
            for way, run in (
                ("produce", partial(redis.produce, stream, n, size)),
                ("consume", partial(redis.consume, stream, n)),
            ):
                before = server.cpu_times()
                seconds = run()
                after = server.cpu_times()
                rows.append({
                    "name": f"redis {way}", "records": n, "size": size,
                    "seconds": seconds, "records_per_s": n / seconds,
                    "gb_per_s": n * size / seconds / GB,
                    "server_cpu_s": after.user + after.system
                    - before.user - before.system,
                })  # fmt: skip
            redis.client.delete(stream)
    finally:
        redis.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--records", type=int, help="records of the 100 B rows [1M]")
    ap.add_argument("--big-records", type=int, help="records of the 64 KiB rows [20k]")
    ap.add_argument("--no-redis", action="store_true", help="skip the Redis rows")
    ap.add_argument("--tuned", action="store_true",
                    help="also a consumer with fetch.queue.backoff.ms=10")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: it still runs")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = dict(SMOKE if args.smoke else SIZES)
    if args.records:
        sizes[100] = args.records
    if args.big_records:
        sizes[64 << 10] = args.big_records
    use_redis = not args.no_redis and (not args.smoke or shutil.which("redis-server"))
    head = header()
    rows: list[dict[str, Any]] = []
    with EmbeddedBroker(shm_prefix=SHM_PREFIX, gateway=True) as broker:
        broker.gateway_address()  # listening
        meter = Meter(broker)
        admin = Admin(str(broker.data_dir))
        try:
            for size, n in sizes.items():
                rows += size_rows(broker, admin, meter, size, n, args.tuned)
        finally:
            admin.close()
    if use_redis:
        rows += redis_rows(sizes)
    result = {"header": head, "smoke": args.smoke, "rows": rows,
              "targets": targets(rows)}  # fmt: skip
    publish("bench_gateway", result, smoke=args.smoke, as_json=args.json,
            print_report=lambda: print_report(result))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
