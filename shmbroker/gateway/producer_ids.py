"""Producer ids for InitProducerId: unique across every gateway process and restart
of a data directory, as Kafka's controller hands out blocks of them.

`<data-dir>/producer-ids` holds the first id no process has taken, as decimal text.
A process takes BLOCK ids at a time under an exclusive flock, and fsyncs the new
value before it gives out any of them, so that no crash can hand an id out twice.
The blocks taken by this process are remembered: a batch from one of those ids has
no history before this process, so its sequence state needs no search of the log.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

FILE = "producer-ids"
BLOCK = 1000


class ProducerIds:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / FILE
        self._next = self._end = 0
        self._blocks: list[tuple[int, int]] = []  # [start, end) taken by us

    def allocate(self) -> int:
        """A new producer id (a short file lock and fsync once per BLOCK ids)."""
        if self._next == self._end:
            self._next = self._take_block()
            self._end = self._next + BLOCK
            self._blocks.append((self._next, self._end))
        pid = self._next
        self._next += 1
        return pid

    def _take_block(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            start = int(text) if text.isdigit() else 0
            new = f"{start + BLOCK}\n".encode()
            os.pwrite(fd, new, 0)
            os.ftruncate(fd, len(new))
            os.fsync(fd)
            return start
        finally:
            os.close(fd)  # releases the lock

    def is_ours(self, producer_id: int) -> bool:
        """Given out by this process (so it has no batches from before it)."""
        return any(start <= producer_id < end for start, end in self._blocks)
