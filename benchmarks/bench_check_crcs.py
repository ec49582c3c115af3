"""What Kafka's check.crcs (on by default in our Consumer) costs `poll`: a LogReader
reads a partition's segments from offset 0 to the end with check_crcs on and off,
rounds interleaved so machine drift hits both alike; medians and the ratio.

Measured at 100 B (1000 records a batch) and 64 KiB (16 records a batch) values, data
in the page cache, one process. Left out: the ring path (it decodes the same way)
and compressed batches (their CRC is checked before decompressing).

    .venv/bin/python benchmarks/bench_check_crcs.py            # ~20 s
    .venv/bin/python benchmarks/bench_check_crcs.py --smoke    # a second
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench_ring import header

from shmbroker import shm
from shmbroker.config import TopicConfig
from shmbroker.log.partition import PartitionLog
from shmbroker.log.reader import LogReader

SHAPES = {100: 1000, 64 << 10: 16}  # value bytes -> records per batch


def fill(directory: Path, size: int, total_bytes: int) -> PartitionLog:
    ring = f"/{shm.NAME_PREFIX}bench.crc.{uuid.uuid4().hex[:8]}"
    log = PartitionLog.open(
        directory, ring, TopicConfig(ring_bytes=64 << 20), topic="t", partition=0
    )
    per_batch = SHAPES[size]
    values = [bytes([i % 251]) * size for i in range(per_batch)]
    for _ in range(max(1, total_bytes // (size * per_batch))):
        log.ring.append_batch(values, timeout=30)
        while log.spill(0):
            pass
    return log


def read_all(log: PartitionLog, check_crcs: bool) -> tuple[float, int]:
    reader = LogReader(log, 0, check_crcs=check_crcs)
    n, start = 0, time.perf_counter()
    while records := reader.poll(0):
        n += len(records)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.megabytes, args.rounds = 4, 1
    print(" ".join(f"{k}={v}" for k, v in header().items()))
    print(f"{'value':>8} {'records/s on':>14} {'records/s off':>14} {'on/off':>7}")
    for size in SHAPES:
        with tempfile.TemporaryDirectory() as tmp:
            log = fill(Path(tmp) / "t-0", size, args.megabytes << 20)
            try:
                on, off = [], []
                for _ in range(args.rounds):
                    for check, times in ((True, on), (False, off)):
                        seconds, n = read_all(log, check)
                        assert n == log.high_watermark, (n, log.high_watermark)
                        times.append(n / seconds)
                rate_on, rate_off = statistics.median(on), statistics.median(off)
                print(
                    f"{size:>8} {rate_on:>14,.0f} {rate_off:>14,.0f} "
                    f"{rate_on / rate_off:>7.2f}"
                )
            finally:
                log.close()
                log.ring.unlink()


if __name__ == "__main__":
    main()
