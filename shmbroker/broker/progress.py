"""Progress of the supervisor's start (opening and recovering every partition), for
the operator: silent when it takes under a second, else a log line each second and a
STATUS for systemd, whose start timeout it extends so a long recovery is not killed."""

from __future__ import annotations

import logging
import time

from shmbroker.broker import systemd

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds


class StartProgress:
    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.began = self._reported = time.monotonic()

    def step(self, name: str) -> None:
        """One more done; name: the one just done."""
        self.done += 1
        now = time.monotonic()
        if now - self._reported >= REPORT_INTERVAL:
            self._reported = now
            log.info("%s: %d of %d partitions (last %s), %.0fs so far", self.what,
                     self.done, self.total, name, now - self.began)  # fmt: skip
            # a few intervals more: systemd counts from this message
            systemd.notify(
                f"STATUS={self.what}: {self.done} of {self.total} partitions\n"
                f"EXTEND_TIMEOUT_USEC={int(10 * REPORT_INTERVAL * 1e6)}"
            )

    def finish(self) -> None:
        took = time.monotonic() - self.began
        if took >= REPORT_INTERVAL:
            log.info("%s: %d partitions in %.1fs", self.what, self.done, took)
