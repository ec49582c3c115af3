"""A process that owns a partition log and spills it until killed, as the broker
supervisor will:  python -m tests.system.spill_worker DIR RING RING_BYTES SEGMENT_BYTES
Prints "spilling" once the log is open."""

from __future__ import annotations

import signal
import sys

from shmbroker.config import TopicConfig
from shmbroker.log.partition import PartitionLog


def main() -> None:
    directory, ring, ring_bytes, segment_bytes = sys.argv[1:5]
    config = TopicConfig(ring_bytes=int(ring_bytes), segment_bytes=int(segment_bytes))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for sigwait below
    log = PartitionLog.open(directory, ring, config, topic="t", partition=0)
    log.start()
    print("spilling", flush=True)
    signal.sigwait({signal.SIGTERM})
    log.close()


if __name__ == "__main__":
    main()
