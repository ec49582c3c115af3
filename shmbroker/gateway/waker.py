"""Wake-ups from a ring for parked Fetch requests, with no polling.

A Fetch that must wait for data parks an asyncio future on the waker of each
partition it reads, with the ring's tail position when it last looked. While any
future is parked, one thread per ring sleeps in the ring's futex wait (the C core's,
with the GIL released) until the tail passes the lowest parked position, then
completes the futures on the event loop (`call_soon_threadsafe`). With nothing
parked the thread waits on a condition instead, so appends to the ring make no
wake-up syscall for us; it ends after IDLE seconds of that.

The gateway's own appends wake the futures directly (`notify`), without the hop
through the thread. At most MAX_THREADS rings have a thread at once: past that, a
parked Fetch is woken by this process's appends or its max_wait_ms (a thread per
ring goes once the C core can wait on several rings at once).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from shmbroker.ring import Ring

log = logging.getLogger(__name__)

IDLE = 10.0  # seconds a waker thread with nothing parked lives on: a consumer's
# next fetch usually comes within fetch.wait.max.ms, and a thread start costs ~100 us
WAIT_SLICE = 0.2  # seconds the thread sleeps on the ring at a time: how soon it
# notices that everything parked went (timed out), or that the ring is closing
MAX_THREADS = 256  # a client parking fetches on 10k partitions gets no 10k threads
_threads = 0  # waker threads running in this process
_threads_lock = threading.Lock()


class Waker:
    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self._futures: set[asyncio.Future[None]] = set()  # loop's thread only
        self._cond = threading.Condition()
        self._position: int | None = None  # wake when the tail passes it
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def park(self, future: asyncio.Future[None], position: int) -> None:
        """Complete future once the ring's tail passes position (loop's thread)."""
        self._futures.add(future)
        with self._cond:
            if self._closed:
                self._fire()
                return
            if self._position is None or position < self._position:
                self._position = position
            if self._thread is None and _take_thread(self.ring.name):
                self._loop = asyncio.get_running_loop()
                self._thread = threading.Thread(
                    target=self._run, name=f"waker-{self.ring.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def unpark(self, future: asyncio.Future[None]) -> None:
        self._futures.discard(future)
        if not self._futures:
            with self._cond:
                self._position = None

    def notify(self) -> None:
        """New data from this process (loop's thread): wake everything parked."""
        if self._futures:
            self._fire()

    def _fire(self) -> None:
        futures, self._futures = self._futures, set()
        for future in futures:
            if not future.done():
                future.set_result(None)
        with self._cond:
            if not self._futures:
                self._position = None

    def _run(self) -> None:
        try:
            self._wait_loop()
        finally:
            _give_thread()

    def _wait_loop(self) -> None:
        while True:
            with self._cond:
                if self._position is None and not self._closed:
                    self._cond.wait(IDLE)
                if self._closed or self._position is None:
                    self._thread = None
                    return
                position = self._position
            tail = self.ring.wait_committed(position, WAIT_SLICE)
            if tail is None and not self.ring.stat().deleted:
                continue  # nothing yet: look again whether anyone still waits
            with self._cond:
                self._position = None  # fired: whoever parks next says from where
                loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._fire)
            if tail is None:  # the topic was deleted: nothing more will come
                with self._cond:
                    self._thread = None
                return

    def close(self) -> None:
        """Stop the thread (before the ring is unmapped) and wake what is parked."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join()
        self._fire()


def _take_thread(ring: str) -> bool:
    global _threads
    with _threads_lock:
        if _threads >= MAX_THREADS:
            log.warning(
                "gateway: %d rings have waker threads: fetches parked on %s wait "
                "for this process's appends or their max_wait_ms",
                _threads,
                ring,
            )
            return False
        _threads += 1
        return True


def _give_thread() -> None:
    global _threads
    with _threads_lock:
        _threads -= 1
