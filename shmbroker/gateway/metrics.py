"""The gateway process's counters in its counter page (counters.py), under the names
Kafka's broker gives them (as its JMX exporter spells them): requests and their
total time per API, bytes in and out, connections, failed authentications. The
supervisor serves them at /metrics, summed over gateway processes."""

from __future__ import annotations

import time

from shmbroker import counters

PREFIX = "kafka_server_socket_server_metrics_"  # Kafka's socket-server-metrics
REQUESTS = "kafka_network_requestmetrics_requests_total"  # label request=<API name>
REQUEST_TIME = "kafka_network_requestmetrics_totaltime_seconds"  # a histogram
# counted by SASL authentication when a login fails (label: mechanism, if known)
FAILED_AUTHENTICATION = PREFIX + "failed_authentication_total"


class GatewayMetrics:
    def __init__(self, page: counters.CounterPage) -> None:
        self.page = page
        self.connections = page.gauge(PREFIX + "connection_count")
        self.connections_created = page.counter(PREFIX + "connection_creation_total")
        self.bytes_in = page.counter(PREFIX + "incoming_byte_total")
        self.bytes_out = page.counter(PREFIX + "outgoing_byte_total")
        self.failed_authentication = page.counter(FAILED_AUTHENTICATION)
        self._apis: dict[str, tuple[counters.Counter, counters.Histogram]] = {}

    def connected(self) -> None:
        self.connections.add(1)
        self.connections_created.add(1)

    def disconnected(self) -> None:
        self.connections.add(-1)

    def answered(self, api: str, started: float) -> None:
        """A request of api is answered (or done, if it gets no answer); started:
        time.perf_counter() when it was read."""
        pair = self._apis.get(api)
        if pair is None:
            pair = self._apis[api] = (
                self.page.counter(REQUESTS, request=api),
                self.page.histogram(REQUEST_TIME, request=api),
            )
        pair[0].add(1)
        pair[1].observe(time.perf_counter() - started)

    def close(self) -> None:
        self.page.release()
