"""`top`: a live terminal view of a broker, from what its supervisor serves at
/metrics: topics and partitions with their rates in and out, ring fill and spill lag,
and each group's lag; refreshed every second until q or Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import click
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shmbroker import BrokerUnavailable, protocol
from shmbroker.cli.options import resolve_data_dir

# what the view reads, by the names broker/metrics.py serves
END = "kafka_log_log_logendoffset"
SIZE = "kafka_log_log_size"
SPILL_LAG = "shmbroker_spill_lag_bytes"
FILL = "shmbroker_ring_fill_ratio"
CONSUMED = "kafka_consumer_fetch_manager_records_consumed_total"
GROUP_LAG = "kafka_consumergroup_lag"
CONNECTIONS = "kafka_server_socket_server_metrics_connection_count"
REQUESTS = "kafka_network_requestmetrics_requests_total"


@dataclass
class TopicRow:
    partitions: int = 0
    end_offset: float = 0  # summed over partitions: its growth is the rate in
    consumed: float = 0  # records read by local consumers
    size_bytes: float = 0
    spill_lag_bytes: float = 0
    fill: float = 0  # of the fullest ring


@dataclass
class Snapshot:
    at: float
    topics: dict[str, TopicRow] = field(default_factory=lambda: defaultdict(TopicRow))
    group_lag: dict[tuple[str, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    connections: float = 0
    requests: float = 0


def scrape(url: str, timeout: float = 5.0) -> Snapshot:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            text = answer.read().decode()
    except (OSError, urllib.error.URLError) as exc:
        raise BrokerUnavailable(f"top: cannot read {url}: {exc}") from exc
    snap = Snapshot(time.monotonic())
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            topic = s.labels.get("topic", "")
            if s.name == END:
                row = snap.topics[topic]
                row.partitions += 1
                row.end_offset += s.value
            elif s.name == SIZE:
                snap.topics[topic].size_bytes += s.value
            elif s.name == SPILL_LAG:
                snap.topics[topic].spill_lag_bytes += s.value
            elif s.name == FILL:
                row = snap.topics[topic]
                row.fill = max(row.fill, s.value)
            elif s.name == CONSUMED and topic in snap.topics:
                snap.topics[topic].consumed += s.value
            elif s.name == GROUP_LAG:
                snap.group_lag[s.labels["consumergroup"], topic] += s.value
            elif s.name == CONNECTIONS:
                snap.connections += s.value
            elif s.name == REQUESTS:
                snap.requests += s.value
    return snap


def _rate(now: float, before: float | None, seconds: float) -> str:
    if before is None or seconds <= 0:
        return "-"
    return f"{max(0.0, now - before) / seconds:,.1f}/s"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def render(url: str, now: Snapshot, before: Snapshot | None) -> Group:
    seconds = now.at - before.at if before is not None else 0.0
    topics = Table(title=None, expand=False, box=None, header_style="bold")
    for name in ("TOPIC", "PARTITIONS", "IN", "OUT", "END-OFFSET", "SIZE",
                 "RING-FILL", "SPILL-LAG"):  # fmt: skip
        topics.add_column(name, justify="left" if name == "TOPIC" else "right")
    for name, row in sorted(now.topics.items()):
        old = before.topics.get(name) if before is not None else None
        topics.add_row(
            name,
            str(row.partitions),
            _rate(row.end_offset, old.end_offset if old else None, seconds),
            _rate(row.consumed, old.consumed if old else None, seconds),
            f"{row.end_offset:,.0f}",
            _bytes(row.size_bytes),
            f"{row.fill:.0%}",
            _bytes(row.spill_lag_bytes),
        )
    groups = Table(box=None, header_style="bold")
    for name in ("GROUP", "TOPIC", "LAG"):
        groups.add_column(name, justify="right" if name == "LAG" else "left")
    for (group, topic), lag in sorted(now.group_lag.items()):
        groups.add_row(group, topic, f"{lag:,.0f}")
    requests = _rate(now.requests, before.requests if before else None, seconds)
    header = Text.assemble(
        ("shmbroker top", "bold"),
        f"  {url}  {time.strftime('%H:%M:%S')}  topics {len(now.topics)}  "
        f"gateway connections {now.connections:,.0f}  requests {requests}  "
        f"(q quits)",
    )
    parts: list[Table | Text] = [header, Text(), topics]
    if now.group_lag:
        parts += [Text(), groups]
    return Group(*parts)


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin's fd in cbreak mode (keys come one at a time, Ctrl-C still signals),
    restored on the way out; None when stdin is not a terminal."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_within(fd: int | None, seconds: float) -> bool:
    """Wait up to seconds for q (or Q); True if it came."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if fd is None:
            time.sleep(left)  # nothing to read: just the refresh interval
            return False
        if select.select([fd], [], [], left)[0]:
            key = os.read(fd, 32)
            if not key or b"q" in key.lower():
                return True
    return False


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="the broker's data directory [$SHMBROKER_DATA_DIR or "
              "./shmbroker-data]")  # fmt: skip
@click.option("--url", help="the /metrics to read [the one the data directory's "
              "supervisor serves]")  # fmt: skip
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0,
              show_default=True, help="seconds between refreshes")  # fmt: skip
@click.option("--once", is_flag=True, help="print one view (rates need two) and exit")
def top(data_dir: str | None, url: str | None, interval: float, once: bool) -> None:
    """A live view of the broker: topics, partitions, rates in and out, ring fill,
    spill lag, group lag. q or Ctrl-C quits. OUT counts local consumers' reads."""
    if url is None:
        directory = resolve_data_dir(data_dir)
        state = protocol.load_metrics_state(directory)
        if state is None:
            raise BrokerUnavailable(
                f"top: no supervisor serves metrics for {directory}: start "
                f"`shmbroker serve` there (without --no-metrics), or give --url"
            )
        url = state.url
    console = Console()
    if once:
        console.print(render(url, scrape(url), None))
        return
    before: Snapshot | None = None
    try:
        with _keys() as fd, Live(console=console, screen=True,
                                 auto_refresh=False) as live:  # fmt: skip
            while True:
                now = scrape(url)
                live.update(render(url, now, before), refresh=True)
                before = now
                if _quit_within(fd, interval):
                    return
    except KeyboardInterrupt:
        return  # Ctrl-C is how a user leaves top: not an error
