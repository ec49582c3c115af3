"""The supervisor's /metrics and the counter pages of clients and gateways, with a
real supervisor, real clients and real Kafka clients through the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shmbroker import Consumer, EmbeddedBroker, Producer, TopicPartition, counters, shm
from shmbroker.broker import gc
from shmbroker.config import BrokerConfig
from shmbroker.errors import ConfigError
from tests.conftest import SMALL_RING, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_counter_page_counts_and_goes_with_its_last_user(shm_prefix: str) -> None:
    """If two users of a process count into its page, then a reader sees their sums
    by name and labels, and the page goes when the last one releases it."""
    base = f"/{shm_prefix}b{'0' * 12}."
    first = counters.CounterPage.acquire(base)
    second = counters.CounterPage.acquire(base)
    assert first is second  # one page per process
    first.counter("sent_total", topic="a").add(3)
    second.counter("sent_total", topic="a").add(4)
    second.counter("sent_total", topic="b").add(1)
    gauge = first.gauge("connections")
    gauge.add(2)
    gauge.add(-1)
    first.histogram("time_seconds", bounds=(0.01, 0.1), request="Fetch").observe(0.05)
    snapshot = counters.read_page(counters.page_name(base, os.getpid()))
    assert snapshot is not None
    assert snapshot.pid == os.getpid()
    assert snapshot.alive()
    got = {(s.kind, s.name, s.labels): s.value for s in snapshot.samples}
    assert got[("counter", "sent_total", (("topic", "a"),))] == 7
    assert got[("counter", "sent_total", (("topic", "b"),))] == 1
    assert got[("gauge", "connections", ())] == 1
    fetch = (("le", "0.1"), ("request", "Fetch"))
    assert got[("bucket", "time_seconds", fetch)] == 1
    assert got[("sum", "time_seconds", (("request", "Fetch"),))] == 50_000_000
    first.release()
    assert list(counters.page_names(base))  # the second user still has it
    second.release()
    assert not list(counters.page_names(base))


def test_metrics_of_partitions_groups_and_clients(broker: EmbeddedBroker) -> None:
    """If records are produced and a group commits part of them, then /metrics
    shows Kafka's log offsets, the group's lag and the clients' counts."""
    topic = f"m-{uuid.uuid4().hex[:8]}"
    with Producer(str(broker.data_dir), linger_ms=0) as producer:
        for _ in range(10):
            producer.send(topic, b"x" * 100, partition=0)
        producer.flush()
        with Consumer(
            str(broker.data_dir), group_id="g1", enable_auto_commit=False,
            auto_offset_reset="earliest", subscribe=[topic],
        ) as consumer:  # fmt: skip
            got: list[object] = []
            wait_until(lambda: got.extend(consumer.poll_batch(4, 0.1)) or len(got) >= 4,
                       10, "4 records")  # fmt: skip
            consumer.commit({TopicPartition(topic, 0): 4})
            samples = scrape(broker.metrics_url())
    part = {"topic": topic, "partition": "0"}
    assert value(samples, "kafka_log_log_logendoffset", **part) == 10
    assert value(samples, "kafka_log_log_logstartoffset", **part) == 0
    assert value(samples, "kafka_log_log_numlogsegments", **part) == 1
    assert value(samples, "kafka_log_log_size", **part) > 1000
    assert value(samples, "shmbroker_ring_capacity_bytes", **part) == SMALL_RING
    assert value(samples, "shmbroker_spill_lag_bytes", **part) is not None
    assert 0 <= value(samples, "shmbroker_ring_fill_ratio", **part) <= 1
    group = {"consumergroup": "g1", **part}
    assert value(samples, "kafka_consumergroup_current_offset", **group) == 4
    assert value(samples, "kafka_consumergroup_lag", **group) == 6
    assert value(samples, "kafka_producer_topic_record_send_total", topic=topic) == 10
    consumed = "kafka_consumer_fetch_manager_records_consumed_total"
    assert value(samples, consumed, topic=topic) >= 4
    # the clients closed, their page went: their counts stay (counters never drop)
    assert not list(counters.page_names(broker.shm_base))
    again = scrape(broker.metrics_url())
    assert value(again, "kafka_producer_topic_record_send_total", topic=topic) == 10


def test_fsync_times_are_a_histogram(broker: EmbeddedBroker) -> None:
    """If a topic fsyncs every record, then the fsync histogram counts them."""
    topic = f"f-{uuid.uuid4().hex[:8]}"
    with Producer(str(broker.data_dir), acks="all") as producer:
        producer.send(topic, b"x").get(timeout=10)
    name = "kafka_log_logflushstats_logflush_seconds_count"
    wait_until(lambda: (value(scrape(broker.metrics_url()), name) or 0) >= 1, 10,
               "an fsync counted")  # fmt: skip
    samples = scrape(broker.metrics_url())
    inf = value(samples, "kafka_log_logflushstats_logflush_seconds_bucket", le="+Inf")
    assert inf == value(samples, name)


KILLED_CLIENT = """
import sys, time
from shmbroker import Producer
producer = Producer(sys.argv[1], linger_ms=0)
for _ in range(7):
    producer.send(sys.argv[2], b"r")
producer.flush()
print("sent", flush=True)
time.sleep(60)
"""


def test_a_killed_clients_page_is_reaped_and_its_counts_kept(
    broker: EmbeddedBroker,
) -> None:
    """If a client process dies without closing, then the supervisor removes its
    counter page and /metrics still counts what it sent."""
    topic = f"k-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, str(broker.data_dir), topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "sent\n"
        page = counters.page_name(broker.shm_base, child.pid)
        assert page in shm.list_names(broker.shm_base.removeprefix("/"))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    wait_until(lambda: page not in shm.list_names(broker.shm_base.removeprefix("/")),
               10, f"the supervisor to remove {page}")  # fmt: skip
    samples = scrape(broker.metrics_url())
    assert value(samples, "kafka_producer_topic_record_send_total", topic=topic) == 7


HOLD_PAGE = """
import sys, time
from shmbroker.counters import CounterPage
CounterPage.acquire(sys.argv[1]).counter("x_total").add(1)
print("ready", flush=True)
time.sleep(60)
"""


def test_gc_removes_the_page_of_a_dead_process(shm_prefix: str) -> None:
    """If a process dies with no supervisor running, then `shmbroker gc` removes
    its counter page, and leaves the page of a live one."""
    base = f"/{shm_prefix}b{'1' * 12}."
    live = counters.CounterPage.acquire(base)
    child = subprocess.Popen([sys.executable, "-c", HOLD_PAGE, base],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    dead = counters.page_name(base, child.pid)
    try:
        removed = gc.collect(prefix=shm_prefix)
        assert [r.name for r in removed] == [dead]
        assert "exited" in removed[0].reason
        assert list(counters.page_names(base)) == [live.name]
    finally:
        live.release()


def test_gateway_requests_bytes_and_connections(
    tmp_path: Path, shm_prefix: str
) -> None:
    """If a Kafka client produces through the gateway, then /metrics counts its
    requests per API with their times, the bytes in and out and the connection."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    with EmbeddedBroker(
        tmp_path / "data", shm_prefix=shm_prefix, remove=True, gateway=True,
        topic_defaults={"ring.bytes": SMALL_RING},
    ) as broker:  # fmt: skip
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": broker.bootstrap_servers}
        )
        for _ in range(5):
            producer.produce("gw-metrics", b"hello")
        assert producer.flush(30) == 0
        prefix = "kafka_server_socket_server_metrics_"
        samples = scrape(broker.metrics_url())
        requests = "kafka_network_requestmetrics_requests_total"
        assert value(samples, requests, request="Produce") >= 1
        assert value(samples, requests, request="ApiVersions") >= 1
        time_count = "kafka_network_requestmetrics_totaltime_seconds_count"
        assert value(samples, time_count, request="Produce") >= 1
        assert value(samples, prefix + "incoming_byte_total") > 0
        assert value(samples, prefix + "outgoing_byte_total") > 0
        assert value(samples, prefix + "connection_count") >= 1
        assert value(samples, prefix + "connection_creation_total") >= 1
        assert value(samples, prefix + "failed_authentication_total") == 0
        del producer  # librdkafka closes its connections
        connections = prefix + "connection_count"
        wait_until(lambda: value(scrape(broker.metrics_url()), connections) == 0,
                   30, "the gateway to count the connections closed")  # fmt: skip


def test_no_metrics_flag_serves_none(tmp_path: Path, shm_prefix: str) -> None:
    """If serve gets --no-metrics, then it writes no metrics state and a bad
    metrics listener is refused by name."""
    embedded = EmbeddedBroker(
        tmp_path / "data", shm_prefix=shm_prefix, remove=True, metrics_listener=None
    )
    with embedded:
        assert not (embedded.data_dir / "metrics.json").exists()
    with pytest.raises(ConfigError, match=r"metrics\.listener"):
        BrokerConfig(metrics_listener="nowhere")


def test_metrics_port_taken_is_a_clear_error(tmp_path: Path, shm_prefix: str) -> None:
    """If the metrics port is taken, then serve exits at once naming it."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        embedded = EmbeddedBroker(
            tmp_path / "data",
            shm_prefix=shm_prefix,
            remove=True,
            metrics_listener=f"127.0.0.1:{port}",
        )
        with pytest.raises(Exception, match=str(port)):
            embedded.start()
        embedded.cleanup()


def test_endpoint_is_gone_after_stop(broker: EmbeddedBroker) -> None:
    url = broker.metrics_url()
    broker.stop()
    assert not (broker.data_dir / "metrics.json").exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_a_process_that_exits_without_closing_leaves_no_page(shm_prefix: str) -> None:
    """If a process ends without releasing its page (no close, just the end of the
    script), then its exit removes it: no supervisor or gc needed."""
    base = f"/{shm_prefix}b{'3' * 12}."
    script = (
        "import sys\n"
        "from shmbroker.counters import CounterPage, page_names\n"
        "CounterPage.acquire(sys.argv[1]).counter('x_total').add(1)\n"
        "print(len(list(page_names(sys.argv[1]))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, base], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == "1"  # it had its page
    assert not list(counters.page_names(base))
