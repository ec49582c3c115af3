"""A client's per-topic counters (records sent, records consumed) in its process's
counter page (counters.py) for the broker it talks to, which the supervisor serves
at /metrics. Counting never fails a client: without a page (a full /dev/shm) the
counts stay in the process."""

from __future__ import annotations

import logging

from shmbroker import counters, errors
from shmbroker.client.connection import Connection

log = logging.getLogger(__name__)

# the names of Kafka's client metrics (producer-topic-metrics record-send-total,
# consumer-fetch-manager-metrics records-consumed-total) as its JMX exporter spells them
RECORDS_SENT = "kafka_producer_topic_record_send_total"
RECORDS_CONSUMED = "kafka_consumer_fetch_manager_records_consumed_total"


class TopicCounters:
    """One counter family with a `topic` label. Thread-safe; a count is a store."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        self._page: counters.CounterPage | None = None
        self._by_topic: dict[str, counters.Counter] = {}
        self._closed = False

    def add(self, topic: str, n: int) -> None:
        counter = self._by_topic.get(topic)
        if counter is None:
            counter = self._by_topic[topic] = self._open().counter(
                self.name, topic=topic
            )
        counter.add(n)

    def _open(self) -> counters.CounterPage:
        if self._page is None:
            try:
                self._page = counters.CounterPage.acquire(self.connection.shm_base())
            except (OSError, errors.ShmbrokerError) as exc:
                log.warning("no counter page, so no client metrics: %s", exc)
                self._page = counters.CounterPage.detached()
        return self._page

    def close(self) -> None:
        if self._page is not None and not self._closed:
            self._closed = True
            self._page.release()
