"""The supervisor's Prometheus endpoint (`metrics.listener`, Redpanda's admin port
9644 by default): the partitions' offsets, sizes and rings, fsync times and group
lag read from the supervisor itself, plus the counter pages (counters.py) that clients
and gateways keep, summed over processes. Names are Kafka's (as its JMX exporter
spells them) where Kafka has the metric, `shmbroker_*` where it does not.

Counters stay monotonic when a process goes: a page whose process exited is folded
into the totals of the processes that went before, then unlinked; a page its process
unlinked itself (its last client closed) is folded at the values the last scan saw,
at most SCAN_INTERVAL old. Gauges, such as connections, go with their process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shmbroker import counters, errors, protocol, shm
from shmbroker.config import Listener
from shmbroker.log import partition as partition_log

if TYPE_CHECKING:
    from shmbroker.broker.supervisor import Supervisor

log = logging.getLogger(__name__)

SCAN_INTERVAL = 1.0  # seconds between looks for pages of processes that died

Labels = tuple[tuple[str, str], ...]
Key = tuple[counters.Kind, str, Labels]
Series = list[tuple[Labels, tuple[list[tuple[str, int]], float]]]


class CounterPages:
    """Sums the counter pages of one broker's processes; folds a dead one's counts
    into `retired` before unlinking its page."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.retired: dict[Key, int] = defaultdict(int)
        self._last: dict[str, list[counters.Sample]] = {}  # page -> what scan saw
        self._lock = threading.Lock()

    def scan(self) -> dict[Key, int]:
        """Every counter's value now: live pages plus retired counts."""
        with self._lock:
            seen: dict[str, list[counters.Sample]] = {}
            for name in counters.page_names(self.base):
                snapshot = counters.read_page(name)
                if snapshot is None:
                    continue
                if snapshot.pid == os.getpid() or snapshot.alive():
                    seen[name] = snapshot.samples
                    continue
                self._retire(snapshot.samples)  # read whole: nothing writes it now
                self._last.pop(name, None)
                if shm.unlink(name):
                    log.info("removed the counter page %s of exited pid %d", name,
                             snapshot.pid)  # fmt: skip
            for name in self._last.keys() - seen.keys():
                self._retire(self._last[name])
            self._last = seen
            totals: dict[Key, int] = defaultdict(int, self.retired)
            for samples in seen.values():
                for s in samples:
                    totals[s.kind, s.name, s.labels] += s.value
            return totals

    def _retire(self, samples: list[counters.Sample]) -> None:
        for s in samples:
            if s.kind != "gauge":
                self.retired[s.kind, s.name, s.labels] += s.value


class BrokerCollector(Collector):
    def __init__(self, supervisor: Supervisor, pages: CounterPages) -> None:
        self.supervisor = supervisor
        self.pages = pages

    def collect(self) -> Iterator[Metric]:
        yield from self._partitions()
        yield _histogram(
            "kafka_log_logflushstats_logflush_seconds",
            "Time of the fsyncs of partition logs",
            [((), partition_log.FLUSH_TIMES.snapshot())],
        )
        yield from self._groups()
        yield from _families(self.pages.scan())

    def _partitions(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        families = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, doc in (
                ("kafka_log_log_logstartoffset", "First offset of the partition"),
                ("kafka_log_log_logendoffset", "Offset after the last record"),
                ("kafka_log_log_size", "Bytes of the partition's segment files"),
                ("kafka_log_log_numlogsegments", "Segment files of the partition"),
                ("shmbroker_ring_capacity_bytes", "Size of the partition's ring"),
                ("shmbroker_spill_lag_bytes",
                 "Bytes in the ring not yet written to segment files"),
                ("shmbroker_ring_fill_ratio",
                 "Unspilled share of the ring: at 1 producers wait for the spill"),
            )
        }  # fmt: skip
        topics = GaugeMetricFamily(
            "kafka_controller_kafkacontroller_globaltopiccount", "Topics"
        )
        s = self.supervisor
        with s._lock:
            logs = sorted(s.logs.items())
            topics.add_metric([], len(s.topics))
        for (topic, p), plog in logs:
            stat = plog.ring.stat()
            lag = stat.tail_position - stat.spill_position
            values = (
                plog.log_start_offset,
                plog.log_end_offset,
                plog.disk_usage(),
                len(plog.segments()),
                stat.capacity_bytes,
                lag,
                lag / stat.capacity_bytes,
            )
            for family, value in zip(families.values(), values, strict=True):
                family.add_metric([topic, str(p)], value)
        yield topics
        yield from families.values()

    def _groups(self) -> Iterator[Metric]:
        labels = ["consumergroup", "topic", "partition"]
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Records between a group's committed offset and the partition's end",
            labels=labels,
        )
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "A group's committed offset",
            labels=labels,
        )
        coordinator = self.supervisor.coordinator
        if coordinator is not None:
            for group in coordinator.list_groups():
                for tp, committed in coordinator.fetch(group.group_id).items():
                    end = self.supervisor.logs.get((tp.topic, tp.partition))
                    if end is None:
                        continue
                    values = [group.group_id, tp.topic, str(tp.partition)]
                    high = end.ring.stat().next_offset
                    current.add_metric(values, committed.offset)
                    lag.add_metric(values, max(0, high - committed.offset))
        yield lag
        yield current


def _families(totals: dict[Key, int]) -> Iterator[Metric]:
    """Prometheus families from summed page counters."""
    by_name: dict[tuple[str, str], list[tuple[dict[str, str], int]]] = defaultdict(list)
    for (kind, name, labels), value in sorted(totals.items()):
        family_kind: str = "histogram" if kind in ("bucket", "sum") else kind
        by_name[family_kind, name].append((dict(labels), value))
    for (kind_name, name), samples in by_name.items():
        if kind_name == "histogram":
            yield _histogram(name, "", _histogram_series(samples))
            continue
        keys = sorted({k for labels, _ in samples for k in labels})
        family: CounterMetricFamily | GaugeMetricFamily
        if kind_name == "counter":
            family = CounterMetricFamily(name.removesuffix("_total"), "", labels=keys)
        else:
            family = GaugeMetricFamily(name, "", labels=keys)
        for sample_labels, value in samples:
            family.add_metric([sample_labels.get(k, "") for k in keys], value)
        yield family


def _histogram_series(samples: list[tuple[dict[str, str], int]]) -> Series:
    """Bucket and sum slots of one histogram family, per label set, cumulative."""
    buckets: dict[Labels, list[tuple[float, str, int]]] = defaultdict(list)
    sums: dict[Labels, float] = defaultdict(float)
    for labels, value in samples:
        le = labels.pop("le", None)
        key = tuple(sorted(labels.items()))
        if le is None:
            sums[key] += value / 1e9
        else:
            buckets[key].append((float(le), le, value))
    out = []
    for key, series in buckets.items():
        total, cumulative = 0, []
        for _, le, count in sorted(series):
            total += count
            cumulative.append((le, total))
        out.append((key, (cumulative, sums[key])))
    return out


def _histogram(
    name: str,
    doc: str,
    series: list[
        tuple[tuple[tuple[str, str], ...], tuple[list[tuple[str, int]], float]]
    ],
) -> HistogramMetricFamily:
    keys = sorted({k for labels, _ in series for k, _ in labels})
    family = HistogramMetricFamily(name, doc, labels=keys)
    for labels, (buckets, total) in series:
        values = dict(labels)
        family.add_metric(
            [values.get(k, "") for k in keys],
            [(le, float(count)) for le, count in buckets],
            total,
        )
    return family


class MetricsServer:
    """Serves /metrics over HTTP from a thread of the supervisor, and reaps the
    counter pages of processes that died every SCAN_INTERVAL."""

    def __init__(self, supervisor: Supervisor, listener: Listener) -> None:
        self.supervisor = supervisor
        self.listener = listener
        self.pages = CounterPages(supervisor.shm_base)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(supervisor, self.pages))
        self.state = Path(supervisor.config.data_dir) / protocol.METRICS_FILE
        self._server: object | None = None
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def start(self) -> None:
        try:
            server, _ = start_http_server(
                self.listener.port, self.listener.host, registry=self.registry
            )
        except OSError as exc:
            raise errors.ConfigError(
                f"metrics.listener: cannot serve on {self.listener.host}:"
                f"{self.listener.port}: {exc.strerror or exc}; choose another port "
                f"or --no-metrics"
            ) from exc
        self._server = server
        port = server.server_port
        state = protocol.MetricsState(os.getpid(), self.listener.host, port)
        tmp = self.state.with_name(f".{self.state.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:  # 0600 as the rest of the data directory
            file.write(msgspec.json.encode(state))
        tmp.rename(self.state)  # whole or not at all: `shmbroker top` reads it
        self._reaper = threading.Thread(
            target=self._reap, name="metrics-reaper", daemon=True
        )
        self._reaper.start()
        log.info("metrics on http://%s:%d/metrics", self.listener.host, port)

    def _reap(self) -> None:
        while not self._stop.wait(SCAN_INTERVAL):
            self.pages.scan()

    def stop(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join()
        server = self._server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()
