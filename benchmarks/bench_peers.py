"""shmbroker next to the local peers users compare it with: one producer process ->
one consumer process, the same values, every record checked, in one run.

A real supervisor runs (`EmbeddedBroker`; its spill thread writes the topic to
segment files as the records flow). Each shmbroker run gets a fresh 1-partition
topic (the defaults: 16 MiB ring), created before the clock starts. Paths, at
100 B, 4 KiB and 64 KiB values (B = values a batch: 1000, but at most 1 MiB of
them, as Kafka's batch.size: 256 at 4 KiB, 16 at 64 KiB):
  shmbroker  Producer.send -> Consumer.poll_batch (per record: Records)
             Producer.send_batch xB -> Consumer.poll_batch (Records)
             Producer.send_batch xB -> Consumer.poll_columns (RecordColumns)
  Queue      multiprocessing.Queue put/get of one value, and of lists of B
  fifo       faster-fifo put/get of one value, and put_many/get_many of B
  zmq        pyzmq PUSH/PULL over ipc://, one value a message, and B values a
             message (two frames: their lengths, the values packed)
Each pair lines up on a barrier; the time is from the producer's first send to
the consumer holding the last record (records/s, value MB/s with MB = 1e6 B), and
the consumer's CPU seconds are shown beside it. The queues hold a ring's worth of
bytes. Every consumer checks every record: offsets (or arrival order) dense from 0,
each value's length and its first 4 bytes (its index in the producer's list);
columnar polls slice those 4 bytes out of the buffer (peers.Check.columns).
Rounds are interleaved (each round runs every path once), so drift on a shared
machine hits all paths alike; rows are medians, and the targets' ratios are
printed for each round as well.

Targets (issue 13), as ratios within the run:
  100 B  send -> poll_batch >= 2x pyzmq one value a message;
  100 B  send_batch -> poll_columns >= 2x the best batched peer;
  4 KiB and 64 KiB: the best shmbroker path >= 1.5x the best peer.
Left out: keys, headers, acks=all, several partitions or processes, TCP, process
start-up. Raw results go to benchmarks/results/ (git-ignored); `--json` prints them.
`--before DIR` also runs the shmbroker paths, in every round, against the shmbroker
package in DIR (an export of an older commit, its C core built in place; as in
bench_calls.py) in a fresh interpreter with its own broker, and prints them beside
this tree's, with the targets' ratios over the same round's peers: the baseline in
the same run.

    .venv/bin/python benchmarks/bench_peers.py            # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_peers.py --smoke    # a few seconds (CI)
    .venv/bin/python benchmarks/bench_peers.py --size 4096 --before /tmp/old
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from bench_ring import header, queue_produce, run_pair
from machine import fmt_size, publish, run_child
from peers import (
    STALL_S,
    KiB,
    MiB,
    batch_for,
    broker_consume,
    broker_consume_columns,
    broker_produce,
    fifo_consume,
    fifo_produce,
    queue_consume,
    zmq_consume,
    zmq_consume_each,
    zmq_produce,
    zmq_produce_each,
)

# imported here, so that the forked consumers do not pay it in their CPU time
with contextlib.suppress(ImportError):
    import pyarrow.compute  # noqa: F401  (peers.Check.columns' kernels)

from shmbroker.client.admin import Admin
from shmbroker.config import TopicConfig
from shmbroker.embedded import EmbeddedBroker

SHM_PREFIX = "shmb.bench."
RING_BYTES = TopicConfig().ring_bytes
SIZES = (100, 4 * KiB, 64 * KiB)
RECORDS, SMOKE_RECORDS = 300_000, 20_000  # at 100 B
LARGE_MIB, SMOKE_LARGE_MIB = 512, 8  # of values a run at 4 and 64 KiB
WATCHDOG_S = STALL_S + 10

# (kind, api): what each row is, and which rows are batched
PATHS = {
    ("shmbroker", "send"): "Producer.send -> poll_batch",
    ("shmbroker", "send_batch"): "send_batch xB -> poll_batch",
    ("shmbroker", "columns"): "send_batch xB -> poll_columns",
    ("queue", "each"): "mp.Queue put/get",
    ("queue", "batch"): "mp.Queue put/get list xB",
    ("fifo", "each"): "faster-fifo put/get",
    ("fifo", "batch"): "faster-fifo put_many/get_many xB",
    ("zmq", "each"): "pyzmq PUSH/PULL",
    ("zmq", "batch"): "pyzmq PUSH/PULL xB a message",
}
TARGET_PER_RECORD = 2.0  # 100 B send -> poll_batch over pyzmq per message
TARGET_BATCHED = 2.0  # 100 B send_batch -> poll_columns over the best batched peer
TARGET_LARGE = 1.5  # 4 and 64 KiB: best shmbroker path over the best peer


class Runner:
    def __init__(self, broker: EmbeddedBroker, ctx: Any, timeout: float) -> None:
        self.data_dir = str(broker.data_dir)
        self.admin = Admin(self.data_dir, client_id="bench-peers")
        self.ctx = ctx
        self.timeout = timeout
        self.runs = 0
        self.supervisor = psutil.Process(broker.pid)

    def supervisor_cpu_s(self) -> float:
        t = self.supervisor.cpu_times()
        return float(t.user + t.system)

    def run(self, kind: str, api: str, size: int, n: int) -> dict[str, Any]:
        self.runs += 1
        batch = batch_for(size)
        extra: dict[str, Any] = {}
        if kind == "shmbroker":
            topic = f"peers-{api}-{self.runs}"
            self.admin.create_topic(topic, 1)
            stall = (str(Path(self.data_dir) / f"{topic}.stall"), WATCHDOG_S)
            consume = broker_consume_columns if api == "columns" else broker_consume
            cpu0 = self.supervisor_cpu_s()
            try:
                p, c = run_pair(
                    self.ctx,
                    broker_produce,
                    (self.data_dir, topic, "send" if api == "send" else "send_batch",
                     size, n, batch),
                    consume,
                    (self.data_dir, topic, size, n, batch, False, stall),
                    self.timeout,
                )  # fmt: skip
                extra = {
                    "supervisor_cpu_s": round(self.supervisor_cpu_s() - cpu0, 3),
                    "polls": c["polls"],
                    "segment_polls": c["segment_polls"],
                }
            finally:
                self.admin.delete_topic(topic)
        elif kind == "queue":
            per = 1 if api == "each" else batch
            q = self.ctx.Queue(maxsize=max(2, RING_BYTES // (size * per)))
            p, c = run_pair(
                self.ctx, queue_produce, (q, size, n, per),
                queue_consume, (q, size, n, per), self.timeout,
            )  # fmt: skip
        elif kind == "fifo":
            from faster_fifo import Queue

            q = Queue(max_size_bytes=RING_BYTES)
            many = api == "batch"
            p, c = run_pair(
                self.ctx, fifo_produce, (q, size, n, batch, many),
                fifo_consume, (q, size, n, batch, many), self.timeout,
            )  # fmt: skip
        else:
            address = f"ipc://{self.data_dir}/peers-zmq-{self.runs}.sock"
            per = 1 if api == "each" else batch
            hwm = max(1, RING_BYTES // (size * per) // 2)  # a ring's worth in flight
            produce, consume = (
                (zmq_produce_each, zmq_consume_each)
                if api == "each"
                else (zmq_produce, zmq_consume)
            )
            p, c = run_pair(
                self.ctx, produce, (address, size, n, batch, hwm),
                consume, (address, size, n, batch, hwm), self.timeout,
            )  # fmt: skip
        seconds = (c["end_ns"] - p["start_ns"]) / 1e9
        return extra | {
            "kind": kind,
            "api": api,
            "size": size,
            "records": n,
            "seconds": seconds,
            "records_per_s": n / seconds,
            "bytes_per_s": n * size / seconds,
            "consumer_cpu_s": round(c["cpu_s"], 3),
            "producer_cpu_s": round(p["cpu_s"], 3),
            "other_cpu": round(c["other_cpu"], 3),
        }


def rows_before(directory: str, argv: list[str]) -> dict[tuple[str, str, int], Any]:
    """One round of the shmbroker paths with the shmbroker package in directory."""
    rows = run_child(__file__, ["--rounds", "1", *argv], directory)
    return {(r["kind"], r["api"], r["size"]): r for r in rows}


def median_rate(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["records_per_s"] for r in runs)


def ratios(
    rounds: list[dict[tuple[str, str, int], dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Each target's ratio in every round (None where a row of it is missing), and
    over the medians."""

    def rate(table: dict[Any, Any], kind: str, api: str, size: int) -> float | None:
        row = table.get((kind, api, size))
        return None if row is None else float(row["records_per_s"])

    def over(ours: list[float | None], theirs: list[float | None]) -> float | None:
        a = [x for x in ours if x is not None]
        b = [x for x in theirs if x is not None]
        return max(a) / max(b) if a and b else None

    peers = [(k, a) for k, a in PATHS if k != "shmbroker"]
    batched = [(k, a) for k, a in peers if a == "batch"]
    mine = [(k, a) for k, a in PATHS if k == "shmbroker"]
    targets = [
        ("100 B send -> poll_batch / pyzmq per message", TARGET_PER_RECORD,
         [("shmbroker", "send")], [("zmq", "each")], 100),
        ("100 B send_batch -> poll_columns / best batched peer", TARGET_BATCHED,
         [("shmbroker", "columns")], batched, 100),
        *(
            (f"{fmt_size(size)} best shmbroker path / best peer", TARGET_LARGE,
             mine, peers, size)
            for size in SIZES[1:]
        ),
    ]  # fmt: skip
    medians: dict[Any, dict[str, float]] = {}
    for key in {k for table in rounds for k in table}:
        runs = [table[key] for table in rounds if key in table]
        medians[key] = {"records_per_s": median_rate(runs)}
    out = []
    sizes_run = {size for _, _, size in medians}
    for what, want, ours, theirs, size in targets:
        if size not in sizes_run:  # --size left it out
            continue
        per_round = [
            over(
                [rate(t, k, a, size) for k, a in ours],
                [rate(t, k, a, size) for k, a in theirs],
            )
            for t in rounds
        ]
        median = over(
            [rate(medians, k, a, size) for k, a in ours],
            [rate(medians, k, a, size) for k, a in theirs],
        )
        best = max(
            (k for k in theirs if (*k, size) in medians),
            key=lambda k: medians[(*k, size)]["records_per_s"],
            default=None,
        )
        out.append({
            "target": what, "want": want, "ratio": median, "rounds": per_round,
            "pass": median is not None and median >= want,
            "best_peer": None if best is None else PATHS[best],
        })  # fmt: skip
    return out


def print_report(result: dict[str, Any]) -> None:
    print("bench_peers: 1 producer process -> 1 consumer process, every record checked")
    for k, v in result["header"].items():
        print(f"  {k:16} {v}")
    print(
        f"\nmedian of {result['rounds']} interleaved rounds (first send -> last record"
        f" held); cons CPU = the consumer's CPU seconds; range = slowest..fastest"
    )
    print(
        f"  {'size':>6}  {'path':43} {'records':>8} {'records/s':>11} {'MB/s':>7} "
        f"{'cons CPU':>8}  {'range, records/s':>21}"
    )
    for row in result["rows"]:
        runs = row["runs_records_per_s"]
        spread = f"{min(runs):,}..{max(runs):,}" if len(runs) > 1 else ""
        busy = " *" if row["other_cpu"] > 0.10 else ""
        label = PATHS[row["kind"], row["api"]].replace(
            "xB", f"x{batch_for(row['size'])}"
        )
        print(
            f"  {fmt_size(row['size']):>6}  {row['kind']:10}{label:33} "
            f"{row['records']:>8} {row['records_per_s']:>11,.0f} "
            f"{row['bytes_per_s'] / 1e6:>7,.0f} {row['consumer_cpu_s']:>8.2f}  "
            f"{spread:>21}{busy}"
        )
    print(
        "\n  shmbroker rows: the supervisor's CPU seconds (its spill copies every byte"
        " into the page cache), and the consumer's polls served from the segment"
        " files (a producer more than a ring ahead laps it: the ring waits for the"
        " spill, never for readers)"
    )
    for row in result["rows"]:
        if row["kind"] == "shmbroker":
            label = PATHS[row["kind"], row["api"]]
            print(
                f"  {fmt_size(row['size']):>6}  {label:33} supervisor "
                f"{row['supervisor_cpu_s']:5.2f} CPU-s, {row['segment_polls']} of "
                f"{row['polls']} polls from segments"
            )
    if result["before_package"]:
        print(
            f"\n  shmbroker rows against the package in {result['before_package']}"
            f" (the same rounds; this tree / before: records/s, the consumer's CPU-s)"
        )
        for row in result["rows"]:
            old = result["before"].get(f"{row['kind']}/{row['api']}/{row['size']}")
            if old is not None:
                label = PATHS[row["kind"], row["api"]]
                rate = old["records_per_s"]
                print(
                    f"  {fmt_size(row['size']):>6}  {label:33} "
                    f"{row['records_per_s']:>11,.0f} / {rate:>11,.0f} "
                    f"{row['records_per_s'] / rate:5.2f}x   "
                    f"{row['consumer_cpu_s']:.2f} / {old['consumer_cpu_s']:.2f}"
                )
    print("\ntargets (ratios within this run; per round in brackets)")
    for t in result["targets"]:
        got = "no run" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        rounds = ", ".join("-" if r is None else f"{r:.2f}" for r in t["rounds"])
        verdict = "PASS" if t["pass"] else "MISS"
        print(
            f"  {verdict}  {t['target']:52} {got:>7} (want >= {t['want']:.1f}x; "
            f"best peer: {t['best_peer']}) [{rounds}]"
        )
    for t in result["targets_before"]:
        got = "no run" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        rounds = ", ".join("-" if r is None else f"{r:.2f}" for r in t["rounds"])
        print(f"  before  {t['target']:50} {got:>7} [{rounds}]")
    if result["failures"]:
        print(f"\nFAILED: {len(result['failures'])} run(s)")
        for f in result["failures"]:
            print(f"  {f['config']} (round {f['round']}): {f['error'][-600:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--records", type=int, help=f"records at 100 B (default {RECORDS:,})"
    )
    ap.add_argument(
        "--large-mib", type=int, help=f"MiB a large run (default {LARGE_MIB})"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (default 3)"
    )
    ap.add_argument("--size", type=int, action="append", help="only these sizes")
    ap.add_argument("--json", action="store_true", help="print raw results as JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    ap.add_argument("--before", help="also run the shmbroker paths on the one in DIR")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("fork")
    rounds = 1 if args.smoke else args.rounds
    small = args.records or (SMOKE_RECORDS if args.smoke else RECORDS)
    large_mib = args.large_mib or (SMOKE_LARGE_MIB if args.smoke else LARGE_MIB)
    configs = []
    for size in args.size or SIZES:
        batch = batch_for(size)
        n = small if size < KiB else large_mib * MiB // size
        n = max(batch, n - n % batch)
        configs += [
            (kind, api, size, n)
            for kind, api in PATHS
            if kind == "shmbroker" or not args.child
        ]
    child_argv = [f"--size={size}" for size in args.size or SIZES]
    child_argv += [f"--records={small}", f"--large-mib={large_mib}"]
    child_argv += ["--smoke"] if args.smoke else []
    failures: list[dict[str, Any]] = []
    tables: list[dict[tuple[str, str, int], dict[str, Any]]] = []
    before: list[dict[tuple[str, str, int], dict[str, Any]]] = []

    def before_round(k: int) -> None:
        try:
            before.append(rows_before(args.before, child_argv))
        except RuntimeError as exc:
            failures.append({"config": "before", "round": k, "error": str(exc)})
            print(f"bench_peers: before FAILED: {exc}", file=sys.stderr)

    for k in range(rounds):
        # who goes first alternates: the first shmbroker run after a pause writes
        # page-cache pages the VM gave back to its host, at ~8x the CPU of pages
        # freed a moment before (benchmarks/README.md, "Issue 13")
        if args.before and k % 2 == 1:
            before_round(k)
        table = {}
        with EmbeddedBroker(shm_prefix=SHM_PREFIX) as broker:
            runner = Runner(broker, ctx, 60.0 if args.smoke else 300.0)
            try:
                for kind, api, size, n in configs:
                    try:
                        table[kind, api, size] = runner.run(kind, api, size, n)
                    except RuntimeError as exc:  # reported; the others go on
                        name = f"{kind}/{api}/{size}"
                        failures.append({"config": name, "round": k, "error": str(exc)})
                        print(f"bench_peers: {name} FAILED: {exc}", file=sys.stderr)
            finally:
                runner.admin.close()
        tables.append(table)
        # when this tree's broker is stopped (one metrics port); first in odd rounds
        if args.before and k % 2 == 0:
            before_round(k)
    if args.child:  # the rows of the one round, for rows_before
        print(json.dumps(list(tables[0].values())))
        return 1 if failures else 0
    rows = []
    for kind, api, size, _ in configs:
        runs = [t[kind, api, size] for t in tables if (kind, api, size) in t]
        if runs:
            row = dict(
                sorted(runs, key=lambda r: r["records_per_s"])[(len(runs) - 1) // 2]
            )
            row["runs_records_per_s"] = [round(r["records_per_s"]) for r in runs]
            rows.append(row)
    result = {
        "header": header(),
        "smoke": args.smoke,
        "rounds": rounds,
        "rows": rows,
        "runs": [list(t.values()) for t in tables],
        "targets": ratios(tables),
        "before_package": args.before,
        "before": {
            f"{kind}/{api}/{size}": {
                "records_per_s": median_rate(runs),
                "consumer_cpu_s": statistics.median(r["consumer_cpu_s"] for r in runs),
            }
            for (kind, api, size) in {k for b in before for k in b}
            if (runs := [b[kind, api, size] for b in before if (kind, api, size) in b])
        },
        "runs_before": [list(b.values()) for b in before],
        # the peers of each round against the baseline's shmbroker rows of that round
        "targets_before": ratios(
            [
                {k: v for k, v in t.items() if k[0] != "shmbroker"} | b
                for t, b in zip(tables, before, strict=False)
            ]
        )
        if before
        else [],
        "failures": failures,
    }
    publish(
        "bench_peers",
        result,
        smoke=args.smoke,
        as_json=args.json,
        print_report=lambda: print_report(result),
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
