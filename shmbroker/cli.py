"""The `shmbroker` command line: `serve` (the supervisor), Kafka's tools with their
flag names and output layouts (`topics`, `produce`, `consume`, `consumer-groups`,
`get-offsets`, `perf`) and host checks (`gc`, `doctor`). Commands parse, call the
clients, and print; a user's mistake is one line on stderr (exit 1, or 2 for a bad
flag), never a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, NamedTuple, TypeVar

import click
import msgspec

from shmbroker import (
    Admin,
    Consumer,
    InvalidArgument,
    Producer,
    Record,
    Ring,
    ShmbrokerError,
    TopicExists,
    TopicPartition,
    UnknownTopic,
    _native,
    protocol,
    shm,
)
from shmbroker import perf as measure
from shmbroker.client.admin import GroupInfo, MemberInfo
from shmbroker.client.consumer import OffsetReset
from shmbroker.config import BrokerConfig, TopicConfig, default_data_dir
from shmbroker.errors import GroupError, GroupIdNotFound, GroupNotEmpty

F = TypeVar("F", bound=Any)


class _Commands(click.Group):
    """Turns every ShmbrokerError into a one-line error with exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShmbrokerError as exc:
            raise click.ClickException(str(exc) or type(exc).__name__) from exc


@click.group(cls=_Commands)
def main() -> None:
    """shmbroker: Kafka's model on one host, at shared-memory speed."""


# ---- shared options -----------------------------------------------------------------


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        help="the broker's data directory [$SHMBROKER_DATA_DIR or ./shmbroker-data]",
    )(f)


def format_option(f: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON document on stdout",
    )(f)


def _data_dir(given: str | None) -> str:
    return default_data_dir() if given is None else given


def _key_values(pairs: Sequence[str], what: str) -> dict[str, str]:
    """KEY=VALUE pairs, spaces around both trimmed (Kafka's --config)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        out[key.strip()] = value.strip()
    return out


def _properties(
    pairs: Sequence[str], known: Sequence[str], what: str
) -> dict[str, str]:
    """--property KEY=VALUE, the value kept as given (a separator may be a space)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        if key not in known:
            raise click.BadParameter(
                f"unknown property {key!r}; known: {', '.join(known)}", param_hint=what
            )
        out[key] = value
    return out


def _flag(props: Mapping[str, str], key: str) -> bool:
    """Kafka's boolean properties: "true" in any case is true, anything else false."""
    return props.get(key, "false").strip().lower() == "true"


def _echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


# ---- serve --------------------------------------------------------------------------


@main.command()
@click.option("--data-dir", help="[default: ./shmbroker-data or $SHMBROKER_DATA_DIR]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file: data.dir, num.partitions, auto.create.topics.enable, "
              "shm.prefix, listeners, advertised.listeners, gateway.processes, "
              "[topic] defaults")  # fmt: skip
@click.option("--shm-prefix", help="start of every shared-memory name [shmb.]")
@click.option("--num-partitions", type=int, help="of auto-created topics [1]")
@click.option("--auto-create-topics/--no-auto-create-topics", default=None,
              help="create a topic on its first produce [on]")  # fmt: skip
@click.option("--topic-config", multiple=True, metavar="KEY=VALUE",
              help="default topic config, e.g. ring.bytes=4194304")  # fmt: skip
@click.option("--gateway-listen", metavar="HOST:PORT",
              help="where the Kafka protocol gateway listens (port 0: any free "
              "one) [127.0.0.1:9092]")  # fmt: skip
@click.option("--no-gateway", is_flag=True, help="run no Kafka protocol gateway")
@click.option("--advertised-listener", metavar="HOST:PORT",
              help="the address Metadata gives clients [the bound one]")  # fmt: skip
@click.option("--gateway-processes", type=click.IntRange(min=1),
              help="gateway processes sharing the port (SO_REUSEPORT) [1]")  # fmt: skip
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="where /metrics is served (port 0: any free one) "
              "[127.0.0.1:9644]")  # fmt: skip
@click.option("--no-metrics", is_flag=True, help="serve no Prometheus metrics")
def serve(
    data_dir: str | None,
    config_file: str | None,
    shm_prefix: str | None,
    num_partitions: int | None,
    auto_create_topics: bool | None,
    topic_config: tuple[str, ...],
    gateway_listen: str | None,
    no_gateway: bool,
    advertised_listener: str | None,
    gateway_processes: int | None,
    metrics_listen: str | None,
    no_metrics: bool,
) -> None:
    """Run the broker supervisor on a data directory until SIGTERM or Ctrl-C,
    with the Kafka protocol gateway (a process of its own, restarted if it dies)."""
    from shmbroker.broker.supervisor import serve as run

    if no_gateway and gateway_listen:
        raise click.BadParameter("--no-gateway and --gateway-listen contradict")
    if no_metrics and metrics_listen:
        raise click.BadParameter("--no-metrics and --metrics-listen contradict")
    config = BrokerConfig.load(
        config_file,
        data_dir=data_dir,
        shm_prefix=shm_prefix,
        num_partitions=num_partitions,
        auto_create_topics_enable=auto_create_topics,
        topic_defaults=_key_values(topic_config, "--topic-config") or None,
        listeners="" if no_gateway else gateway_listen,
        advertised_listeners=advertised_listener,
        gateway_processes=gateway_processes,
        metrics_listener="" if no_metrics else metrics_listen,
    )
    run(config)


@main.command()
@click.option("--data-dir", help="[default: ./shmbroker-data or $SHMBROKER_DATA_DIR]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file, as for serve")  # fmt: skip
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="where to listen (port 0: any free one) [the config's listeners]",
)
@click.option("--advertised-listener", metavar="HOST:PORT",
              help="the address Metadata gives clients [the bound one]")  # fmt: skip
@click.option(
    "--reuse-port",
    is_flag=True,
    help="share the port with other gateway processes (SO_REUSEPORT)",
)
@click.option(
    "--state-file",
    default="gateway.json",
    show_default=True,
    help="where in the data directory to say where it listens",
)
@click.option("--num-partitions", type=click.IntRange(min=1),
              help="of topics created without a count [1]")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=1))
@click.option("--socket-request-max-bytes", type=click.IntRange(min=1))
@click.option("--acks-all-fsync/--acks-all-at-append", default=None,
              help="acks=all answers once fsynced, or at append [fsynced]")  # fmt: skip
def gateway(
    data_dir: str | None,
    config_file: str | None,
    listen: str | None,
    advertised_listener: str | None,
    reuse_port: bool,
    state_file: str,
    num_partitions: int | None,
    max_connections: int | None,
    socket_request_max_bytes: int | None,
    acks_all_fsync: bool | None,
) -> None:
    """Run one Kafka protocol gateway process for the broker on a data directory
    (`serve` starts and watches one itself) until SIGTERM or Ctrl-C."""
    import logging

    from shmbroker.gateway.server import serve as run_gateway

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = BrokerConfig.load(
        config_file,
        data_dir=data_dir,
        listeners=listen,
        advertised_listeners=advertised_listener,
        num_partitions=num_partitions,
        max_connections=max_connections,
        socket_request_max_bytes=socket_request_max_bytes,
        gateway_acks_all_fsync=acks_all_fsync,
    )
    listener = config.listener
    if listener is None:
        raise click.BadParameter("no address to listen on", param_hint="--listen")
    run_gateway(
        config,
        listener,
        config.advertised_listener,
        reuse_port=reuse_port,
        state_file=state_file,
    )


# ---- topics (kafka-topics, kafka-configs) -------------------------------------------


@main.group()
def topics() -> None:
    """Create, list, describe, alter and delete topics (kafka-topics)."""


@topics.command("create")
@data_dir_option
@click.option("--topic", required=True, help="the topic's name: [a-zA-Z0-9._-]{1,249}")
@click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--replication-factor", type=int, default=1,
              help="always 1: one broker holds every partition")  # fmt: skip
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="a topic config, e.g. retention.ms=3600000; repeatable")  # fmt: skip
@click.option("--if-not-exists", is_flag=True, help="no error if the topic exists")
def topics_create(
    data_dir: str | None,
    topic: str,
    partitions: int,
    replication_factor: int,
    configs: tuple[str, ...],
    if_not_exists: bool,
) -> None:
    """Create a topic; prints `Created topic T.` as kafka-topics --create."""
    if replication_factor != 1:
        raise click.BadParameter(
            f"{replication_factor}: one broker holds every partition, so the "
            f"replication factor is 1",
            param_hint="--replication-factor",
        )
    overrides = _key_values(configs, "--config")
    with Admin(_data_dir(data_dir)) as admin:
        try:
            admin.create_topic(topic, partitions, overrides)
        except TopicExists:
            if if_not_exists:
                return
            raise
    click.echo(f"Created topic {topic}.")


@topics.command("list")
@data_dir_option
@format_option
def topics_list(data_dir: str | None, fmt: str) -> None:
    """Topic names, one a line, sorted (kafka-topics --list)."""
    with Admin(_data_dir(data_dir)) as admin:
        found = admin.list_topics()
    names = sorted(found)
    if fmt == "json":
        _echo_json(
            [
                {
                    "topic": name,
                    "topic_id": found[name].topic_id,
                    "partition_count": found[name].partitions,
                }
                for name in names
            ]
        )
        return
    for name in names:
        click.echo(name)


@topics.command("describe")
@data_dir_option
@click.option("--topic", help="only this topic [every topic]")
@format_option
def topics_describe(data_dir: str | None, topic: str | None, fmt: str) -> None:
    """Topics and their partitions in kafka-topics --describe's layout; after Kafka's
    columns, each partition's LogStartOffset, HighWatermark, RingFill (bytes not yet
    spilled / ring capacity) and DiskBytes. Configs lists the overrides only."""
    with Admin(_data_dir(data_dir)) as admin:
        described = admin.describe_topics(None if topic is None else [topic])
    described.sort(key=lambda d: d.name)
    if fmt == "json":
        _echo_json([_description_json(d) for d in described])
        return
    for d in described:
        configs = ",".join(f"{k}={v}" for k, v in sorted(d.configs.items()))
        click.echo(
            f"Topic: {d.name}\tTopicId: {d.topic_id}\tPartitionCount: "
            f"{len(d.partitions)}\tReplicationFactor: 1\tConfigs: {configs}"
        )
        for p in sorted(d.partitions, key=lambda p: p.partition):
            line = (
                f"\tTopic: {d.name}\tPartition: {p.partition}\tLeader: 0\tReplicas: 0"
                f"\tIsr: 0\tLogStartOffset: {p.log_start_offset}\tHighWatermark: "
                f"{p.high_watermark}\tRingFill: {p.ring_unspilled_bytes}/"
                f"{p.ring_capacity_bytes}\tDiskBytes: {p.disk_bytes}"
            )
            if p.spill_error:
                line += f"\tSpillError: {p.spill_error}"
            click.echo(line)


def _description_json(d: protocol.TopicDescription) -> dict[str, Any]:
    return {
        "topic": d.name,
        "topic_id": d.topic_id,
        "partition_count": len(d.partitions),
        "replication_factor": 1,
        "configs": dict(sorted(d.configs.items())),
        "partitions": [
            {"leader": 0, "replicas": [0], "isr": [0], **msgspec.structs.asdict(p)}
            for p in sorted(d.partitions, key=lambda p: p.partition)
        ],
    }


@topics.command("delete")
@data_dir_option
@click.option("--topic", required=True)
@click.option("--if-exists", is_flag=True, help="no error if there is no such topic")
def topics_delete(data_dir: str | None, topic: str, if_exists: bool) -> None:
    """Delete a topic: its rings and segment files go (kafka-topics --delete; prints
    nothing, as it)."""
    with Admin(_data_dir(data_dir)) as admin:
        try:
            admin.delete_topic(topic)
        except UnknownTopic:
            if not if_exists:
                raise


def _config_list(values: Sequence[str]) -> list[str]:
    """kafka-configs takes comma-separated lists as well as repeated flags."""
    return [item.strip() for value in values for item in value.split(",") if item]


@topics.command("alter")
@data_dir_option
@click.option("--topic", required=True)
@click.option("--add-config", "add", multiple=True, metavar="KEY=VALUE[,...]",
              help="set topic configs (repeatable, or comma-separated)")  # fmt: skip
@click.option("--delete-config", "delete", multiple=True, metavar="KEY[,...]",
              help="return topic configs to the broker's default")  # fmt: skip
@click.option("--partitions", type=click.IntRange(min=1),
              help="the new partition count (only grows)")  # fmt: skip
@click.option("--if-exists", is_flag=True, help="no error if there is no such topic")
def topics_alter(
    data_dir: str | None,
    topic: str,
    add: tuple[str, ...],
    delete: tuple[str, ...],
    partitions: int | None,
    if_exists: bool,
) -> None:
    """Change a topic's configs (kafka-configs --alter: prints `Completed updating
    config for topic T.`) and/or grow its partitions (kafka-topics --alter)."""
    to_set = _key_values(_config_list(add), "--add-config")
    to_delete = _config_list(delete)
    if not (to_set or to_delete or partitions):
        raise click.UsageError(
            "nothing to alter: give --add-config, --delete-config or --partitions"
        )
    both = sorted(set(to_set) & set(to_delete))
    if both:
        raise click.UsageError(f"--add-config and --delete-config both name {both}")
    with Admin(_data_dir(data_dir)) as admin:
        try:
            if to_set or to_delete:
                admin.alter_configs(topic, to_set, to_delete)
                click.echo(f"Completed updating config for topic {topic}.")
            if partitions is not None:
                admin.create_partitions(topic, partitions)
        except UnknownTopic:
            if not if_exists:
                raise


# ---- produce (kafka-console-producer) -----------------------------------------------

READ_BYTES = 128 << 10  # stdin is read up to this at a time: more is slower (the
# lines of a read no longer fit the CPU's cache), 64-128 KiB is the fastest here
DURABLE_READ_BYTES = 1 << 20  # ... with acks=all: fewer, larger batches, fewer fsyncs
RECORD_OVERHEAD = 16  # bytes a record adds to its key and value in a batch: varint
# length (3), attributes (1), timestamp delta (1: one timestamp a batch), offset delta
# (3), key and value lengths (3 + 3), header count (1), for records under 1 MiB
BATCH_OVERHEAD = 61  # the RecordBatch v2 header
PRODUCE_PROPERTIES = (
    "parse.key",
    "key.separator",
    "parse.headers",
    "headers.delimiter",
    "headers.separator",
    "headers.key.separator",
    "ignore.error",
    "null.marker",
)

Header = tuple[str, "bytes | None"]


class _Parsed:
    """Parsed lines: values, keys and headers; error if a line stopped the parse."""

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] = []
        self.headers: list[list[Header]] = []
        self.error: ShmbrokerError | None = None


class _LineParser:
    """Kafka's LineMessageReader, on bytes: a line is a record's value; with
    parse.key its key comes first, up to key.separator; with parse.headers, headers
    (k:v,k:v) come before that, up to headers.delimiter."""

    def __init__(self, props: Mapping[str, str]) -> None:
        self.parse_key = _flag(props, "parse.key")
        self.key_separator = props.get("key.separator", "\t").encode()
        self.parse_headers = _flag(props, "parse.headers")
        self.headers_delimiter = props.get("headers.delimiter", "\t").encode()
        self.headers_separator = props.get("headers.separator", ",").encode()
        self.headers_key_separator = props.get("headers.key.separator", ":").encode()
        self.ignore_error = _flag(props, "ignore.error")
        marker = props.get("null.marker")
        self.null_marker = None if marker is None else marker.encode()
        for name, value in (
            ("key.separator", self.key_separator),
            ("headers.delimiter", self.headers_delimiter),
            ("headers.separator", self.headers_separator),
            ("headers.key.separator", self.headers_key_separator),
        ):
            if not value:
                raise click.BadParameter(f"{name} is empty", param_hint="--property")
            if value == self.null_marker:
                raise click.BadParameter(
                    f"null.marker and {name} may not be equal", param_hint="--property"
                )
        seps = [self.headers_delimiter, self.headers_separator]
        seps.append(self.headers_key_separator)
        if self.parse_headers and len(set(seps)) < 3:
            raise click.BadParameter(
                "headers.delimiter, headers.separator and headers.key.separator must "
                "differ",
                param_hint="--property",
            )
        self.is_plain = not (self.parse_key or self.parse_headers or marker is not None)

    def parse(self, lines: list[bytes], first_line: int) -> _Parsed:
        """Records of the lines (first_line numbers them in errors); stops at the
        first line that cannot be parsed, with the error, as Kafka's reader does."""
        out = _Parsed()
        null = self.null_marker
        try:
            for number, line in enumerate(lines, first_line):
                rest = line
                headers: list[Header] = []
                if self.parse_headers:
                    text, found, after = rest.partition(self.headers_delimiter)
                    if found:
                        rest = after
                        if text != null:
                            headers = self._headers(text, number, line)
                    else:
                        self._missing("headers delimiter", number, line)
                key: bytes | None = None
                if self.parse_key:
                    k, found, after = rest.partition(self.key_separator)
                    if found:
                        key, rest = (None if k == null else k), after
                    else:
                        self._missing("key separator", number, line)
                out.keys.append(key)
                out.values.append(None if rest == null else rest)
                out.headers.append(headers)
        except ShmbrokerError as exc:
            out.error = exc
        return out

    def _headers(self, text: bytes, number: int, line: bytes) -> list[Header]:
        out: list[Header] = []
        for pair in text.split(self.headers_separator):
            k, found, v = pair.partition(self.headers_key_separator)
            if not found:
                self._missing(
                    f"header key separator in pair {pair.decode(errors='replace')!r}",
                    number,
                    line,
                )
                out.append((pair.decode(errors="replace"), None))
                continue
            if k == self.null_marker:
                raise ShmbrokerError(
                    f"line {number}: a header key may not be the null marker "
                    f"{k.decode(errors='replace')!r}"
                )
            out.append(
                (k.decode(errors="replace"), None if v == self.null_marker else v)
            )
        return out

    def _missing(self, what: str, number: int, line: bytes) -> None:
        if not self.ignore_error:
            text = line.decode(errors="replace")
            raise ShmbrokerError(
                f"No {what} found on line number {number}: {text!r} (or pass "
                f"--property ignore.error=true)"
            )


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without their newline, and "\\r\\n" as one) and the rest."""
    cut = buffer.rfind(b"\n")
    if cut < 0:
        return [], buffer
    lines = buffer[:cut].split(b"\n")
    if b"\r" in buffer:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines, buffer[cut + 1 :]


class _LineSender:
    """Sends parsed lines in batches that fit the topic's max.message.bytes and a
    quarter of its ring (so the spill can free the rest meanwhile)."""

    def __init__(self, producer: Producer, topic: str, partition: int | None) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = len(producer.partitions_for(topic))  # auto-creates it
        if partition is not None and not 0 <= partition < self.partitions:
            raise click.BadParameter(
                f"topic {topic!r} has partitions 0..{self.partitions - 1}, not "
                f"{partition}",
                param_hint="--partition",
            )
        self.partition = partition
        config = TopicConfig.from_kafka(producer.connection.topic(topic).configs)
        self.max_message_bytes = config.max_message_bytes
        self.budget = min(config.max_message_bytes, config.ring_bytes // 4)
        self.sticky = random.randrange(self.partitions)
        self.sent = 0

    def next_sticky(self) -> int:
        """Keyless records: one partition per batch, then another (Kafka's sticky
        partitioner)."""
        p = self.sticky
        if self.partitions > 1:
            self.sticky = (p + random.randrange(1, self.partitions)) % self.partitions
        return p

    def send_plain(self, lines: list[bytes], size: int) -> None:
        """Lines as values (size: their bytes, newlines included), no keys."""
        p = self.next_sticky() if self.partition is None else self.partition
        if size + RECORD_OVERHEAD * len(lines) + BATCH_OVERHEAD <= self.budget:
            self.producer.send_batch(self.topic, lines, partition=p)  # the fast path
            self.sent += len(lines)
        else:
            self.send(p, lines, None, None)

    def send_parsed(self, parsed: _Parsed, with_headers: bool) -> None:
        values, keys = parsed.values, parsed.keys
        headers = parsed.headers if with_headers else None
        if self.partition is not None:
            self.send(self.partition, values, keys, headers)
            return
        groups: dict[int, list[int]] = {}
        sticky = self.next_sticky()
        n, cache = self.partitions, dict[bytes, int]()
        for i, key in enumerate(keys):
            if key is None:
                p = sticky
            else:
                p = cache.get(key, -1)
                if p < 0:
                    p = cache[key] = _native.partition_for_key(key, n)
            groups.setdefault(p, []).append(i)
        for p, rows in groups.items():
            self.send(
                p,
                [values[i] for i in rows],
                [keys[i] for i in rows],
                None if headers is None else [headers[i] for i in rows],
            )

    def send(
        self,
        partition: int,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        headers: Sequence[list[Header]] | None,
    ) -> None:
        def size(lo: int, hi: int) -> int:
            total = sum([len(v) for v in values[lo:hi] if v is not None])
            if keys is not None:
                total += sum([len(k) for k in keys[lo:hi] if k is not None])
            if headers is not None:
                total += sum(
                    len(k) + len(v or b"") + 10 for h in headers[lo:hi] for k, v in h
                )
            return total + RECORD_OVERHEAD * (hi - lo) + BATCH_OVERHEAD

        for lo, hi in self._slices(0, len(values), size):
            if hi - lo == 1 and size(lo, hi) > self.max_message_bytes:
                raise ShmbrokerError(
                    f"record {self.sent + 1}: {size(lo, hi)} bytes, larger than topic "
                    f"{self.topic!r}'s max.message.bytes ({self.max_message_bytes})"
                )
            self.producer.send_batch(
                self.topic,
                values[lo:hi],
                None if keys is None else keys[lo:hi],
                partition=partition,
                headers=None if headers is None else headers[lo:hi],
            )
            self.sent += hi - lo

    def _slices(self, lo: int, hi: int, size: Any) -> Iterator[tuple[int, int]]:
        """Halve [lo, hi) until each part fits the budget (or is one record)."""
        if hi - lo <= 1 or size(lo, hi) <= self.budget:
            if hi > lo:
                yield lo, hi
            return
        mid = (lo + hi) // 2
        yield from self._slices(lo, mid, size)
        yield from self._slices(mid, hi, size)


def produce_lines(
    producer: Producer,
    topic: str,
    stream: IO[bytes],
    parser: _LineParser,
    partition: int | None = None,
    read_bytes: int = READ_BYTES,
) -> int:
    """Send every line of stream as a record; returns how many were sent. What is
    read (up to read_bytes) is appended at once, as one batch per partition."""
    sender = _LineSender(producer, topic, partition)
    rest = b""
    line_number = 1
    for chunk in _chunks(stream, read_bytes):
        buffer = rest + chunk if rest else chunk
        lines, rest = _split_lines(buffer)
        if not lines:
            continue
        if parser.is_plain:
            sender.send_plain(lines, len(buffer) - len(rest))
        else:
            _send_parsed(sender, parser, lines, line_number)
        line_number += len(lines)
    if rest:  # a last line without its newline is a record too
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if parser.is_plain:
            sender.send_plain([rest], len(rest))
        else:
            _send_parsed(sender, parser, [rest], line_number)
    return sender.sent


def _chunks(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """What the stream has now, up to limit bytes: from a terminal each line as it is
    typed, from a pipe or a file as much as is there."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (tests): no select
        read = getattr(stream, "read1", stream.read)
        while chunk := read(limit):
            yield chunk
        return
    with contextlib.suppress(OSError):
        # a pipe of limit bytes (Linux; 64 KiB by default): the writer keeps writing
        # while we wait on an append (acks=all: on an fsync)
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), limit)
    # os.read, not the stream's buffer: select must see all that is not yet read
    while chunk := os.read(fd, limit):
        parts, size = [chunk], len(chunk)
        while size < limit and select.select([fd], [], [], 0)[0]:
            more = os.read(fd, limit - size)
            if not more:
                break
            parts.append(more)
            size += len(more)
        yield chunk if len(parts) == 1 else b"".join(parts)


def _send_parsed(
    sender: _LineSender, parser: _LineParser, lines: list[bytes], first_line: int
) -> None:
    """Send the lines before a bad one, then raise its error (as Kafka)."""
    parsed = parser.parse(lines, first_line)
    if parsed.values:
        sender.send_parsed(parsed, parser.parse_headers)
    if parsed.error is not None:
        raise parsed.error


@main.command()
@data_dir_option
@click.option("--topic", required=True)
@click.option("--partition", type=click.IntRange(min=0),
              help="send every record here [keys choose; keyless: sticky]")  # fmt: skip
@click.option("--property", "--reader-property", "properties", multiple=True,
              metavar="KEY=VALUE",
              help="line reader: parse.key, key.separator (tab), parse.headers, "
              "headers.delimiter (tab), headers.separator (,), headers.key.separator "
              "(:), ignore.error, null.marker")  # fmt: skip
@click.option("--acks", type=click.Choice(["0", "1", "-1", "all"]), default="1",
              show_default=True,
              help="all: a batch counts as sent once it is fsynced")  # fmt: skip
def produce(
    data_dir: str | None,
    topic: str,
    partition: int | None,
    properties: tuple[str, ...],
    acks: str,
) -> None:
    """Send stdin to a topic, one record per line (kafka-console-producer).

    The value is the line's bytes without its newline. A topic that does not exist
    is created if the broker allows it."""
    parser = _LineParser(_properties(properties, PRODUCE_PROPERTIES, "--property"))
    stdin = sys.stdin.buffer
    try:
        with Producer(
            _data_dir(data_dir), acks=acks, client_id="console-producer"
        ) as p:
            read_bytes = DURABLE_READ_BYTES if p.durable else READ_BYTES
            produce_lines(p, topic, stdin, parser, partition, read_bytes)
    except KeyboardInterrupt:
        sys.exit(130)  # what was read before Ctrl-C is sent


# ---- consume (kafka-console-consumer) -----------------------------------------------

CONSUME_PROPERTIES = (
    "print.timestamp",
    "print.key",
    "print.offset",
    "print.partition",
    "print.headers",
    "print.value",
    "key.separator",
    "line.separator",
    "headers.separator",
    "null.literal",
)
POLL_TICK = 0.2  # seconds one poll waits at most, so that Ctrl-C is seen


class _Formatter:
    """Kafka's DefaultMessageFormatter: [CreateTime:ts] [Partition:p] [Offset:o]
    [headers] [key] value, each followed by key.separator, the last by
    line.separator."""

    def __init__(self, props: Mapping[str, str], timestamp_type: str) -> None:
        self.timestamp = _flag(props, "print.timestamp")
        self.partition = _flag(props, "print.partition")
        self.offset = _flag(props, "print.offset")
        self.headers = _flag(props, "print.headers")
        self.key = _flag(props, "print.key")
        self.value = props.get("print.value", "true").strip().lower() == "true"
        self.key_separator = props.get("key.separator", "\t").encode()
        self.line_separator = props.get("line.separator", "\n").encode()
        self.headers_separator = props.get("headers.separator", ",").encode()
        self.null = props.get("null.literal", "null").encode()
        self.timestamp_type = timestamp_type.encode()
        self.values_only = self.value and not (
            self.timestamp or self.partition or self.offset or self.headers or self.key
        )

    def format(self, records: Sequence[Record]) -> bytes:
        null, end = self.null, self.line_separator
        if self.values_only:
            values = [null if r.value is None else r.value for r in records]
            return end.join(values) + end
        out = []
        for r in records:
            fields = []
            if self.timestamp:
                fields.append(b"%s:%d" % (self.timestamp_type, r.timestamp))
            if self.partition:
                fields.append(b"Partition:%d" % r.partition)
            if self.offset:
                fields.append(b"Offset:%d" % r.offset)
            if self.headers:
                fields.append(
                    self.headers_separator.join(
                        [
                            k.encode() + b":" + (null if v is None else v)
                            for k, v in r.headers
                        ]
                    )
                    if r.headers
                    else b"NO_HEADERS"
                )
            if self.key:
                fields.append(null if r.key is None else r.key)
            if self.value:
                fields.append(null if r.value is None else r.value)
            out.append(self.key_separator.join(fields) + end)
        return b"".join(out)


def _offset_spec(value: str | None) -> str | int | None:
    if value is None:
        return None
    spec = value.strip().lower()
    if spec in ("earliest", "latest"):
        return spec
    try:
        offset = int(spec)
    except ValueError:
        offset = -1
    if offset < 0:
        raise click.BadParameter(
            f"the provided offset value {value!r} is incorrect. Valid values are "
            f"'earliest', 'latest', or a non-negative integer",
            param_hint="--offset",
        )
    return offset


@main.command()
@data_dir_option
@click.option("--topic", required=True)
@click.option("--partition", type=click.IntRange(min=0),
              help="read only this partition [all of them]")  # fmt: skip
@click.option("--offset", "offset_arg", metavar="N|earliest|latest",
              help="where to start in --partition [latest]")  # fmt: skip
@click.option("--from-beginning", is_flag=True, help="start at the earliest offset")
@click.option("--max-messages", type=click.IntRange(min=0),
              help="exit after this many records [never]")  # fmt: skip
@click.option("--timeout-ms", type=click.IntRange(min=0),
              help="exit when no record came for this long [never]")  # fmt: skip
@click.option("--property", "--formatter-property", "properties", multiple=True,
              metavar="KEY=VALUE",
              help="formatter: print.timestamp, print.key, print.offset, "
              "print.partition, print.headers, print.value, key.separator (tab), "
              "line.separator (newline), headers.separator (,), null.literal "
              "(null)")  # fmt: skip
@click.option("--group",
              help="join this consumer group: read the partitions it assigns, "
              "from its committed offsets, and commit as it goes")  # fmt: skip
def consume(
    data_dir: str | None,
    topic: str,
    partition: int | None,
    offset_arg: str | None,
    from_beginning: bool,
    max_messages: int | None,
    timeout_ms: int | None,
    properties: tuple[str, ...],
    group: str | None,
) -> None:
    """Print a topic's records on stdout (kafka-console-consumer), then `Processed a
    total of N messages` on stderr.

    Starts at the latest offset (only new records) unless --from-beginning or
    --offset says otherwise; stops after --max-messages, after --timeout-ms without
    a record, or on Ctrl-C. Values are written as raw bytes.

    With --group it is a member of that group, as Kafka's: the group's committed
    offsets come first (--from-beginning only decides where a partition without one
    starts), and it commits what it printed every 5 s, before a rebalance takes
    partitions away, and on exit."""
    offset = _offset_spec(offset_arg)
    if offset is not None:
        if partition is None:
            raise click.UsageError(
                "The partition is required when offset is specified."
            )
        if from_beginning:
            raise click.UsageError(
                "Options from-beginning and offset cannot be specified together."
            )
    if group is not None and partition is not None:
        raise click.UsageError(
            "Options group and partition cannot be specified together."
        )
    props = _properties(properties, CONSUME_PROPERTIES, "--property")
    reset: OffsetReset = "earliest" if from_beginning else "latest"
    out = sys.stdout.buffer
    # with a group, close() makes the final commit (auto-commit is on): the
    # positions are those of the records printed, never of records read ahead
    with Consumer(
        _data_dir(data_dir),
        auto_offset_reset=reset,
        client_id="console-consumer",
        group_id=group,
        enable_auto_commit=True,
    ) as consumer:
        # as Kafka's console consumer: a topic not there yet is created (when the
        # broker auto-creates topics) and waited on
        meta = consumer.connection.topic(topic, auto_create=True)
        formatter = _Formatter(props, meta.configs.get("message.timestamp.type", ""))
        if group is not None:
            consumer.subscribe([topic])
        else:
            wanted = range(meta.partitions) if partition is None else [partition]
            consumer.assign([(topic, p) for p in wanted])
            if offset == "earliest":
                consumer.seek_to_beginning()
            elif offset == "latest":
                consumer.seek_to_end()
            elif isinstance(offset, int):
                consumer.seek((topic, wanted[0]), offset)
        printer = _RecordPrinter(out, formatter)
        try:
            printer.run(consumer, max_messages, timeout_ms)
        except BrokenPipeError:  # `| head`: the reader has all it wants
            _quiet_stdout()
    click.echo(f"Processed a total of {printer.count} messages", err=True)


class _RecordPrinter:
    """Polls and prints until done or Ctrl-C; `count` is what was printed."""

    def __init__(self, out: IO[bytes], formatter: _Formatter) -> None:
        self.out = out
        self.formatter = formatter
        self.count = 0
        self.interrupted = False

    def run(
        self, consumer: Consumer, max_messages: int | None, timeout_ms: int | None
    ) -> None:
        """Ctrl-C ends the loop at its next poll (within POLL_TICK), never inside a
        write: the count stays exact."""

        def interrupt(signum: int, frame: object) -> None:
            self.interrupted = True

        try:
            previous = signal.signal(signal.SIGINT, interrupt)
        except ValueError:  # not the main thread: Ctrl-C is not ours to handle
            previous = None
        try:
            self._loop(consumer, max_messages, timeout_ms)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _loop(
        self, consumer: Consumer, max_messages: int | None, timeout_ms: int | None
    ) -> None:
        timeout = None if timeout_ms is None else timeout_ms / 1000
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.interrupted and (
            max_messages is None or self.count < max_messages
        ):
            wait = POLL_TICK
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            limit = 1 << 16 if max_messages is None else max_messages - self.count
            records = consumer.poll_batch(min(limit, 1 << 16), timeout=wait)
            if not records:
                continue
            if timeout is not None:
                deadline = time.monotonic() + timeout
            self.out.write(self.formatter.format(records))
            self.out.flush()
            self.count += len(records)


def _quiet_stdout() -> None:
    """After a closed pipe: output still buffered goes nowhere, not to an error at
    exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (tests): nothing to quiet
        pass


# ---- consumer-groups (kafka-consumer-groups) ----------------------------------------

MISSING = "-"  # Kafka's MISSING_COLUMN_VALUE
# Kafka's ConsumerGroupState names, in its order (for the --list --state error)
GROUP_STATES = ("PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Empty")
REBALANCING = ("PreparingRebalance", "CompletingRebalance")
# The coordinator is the supervisor: one per data directory, reached by its control
# socket, not by a TCP port. Kafka's "host:port (id)" becomes this fixed Node; id 0
# as `topics describe` calls the one broker "Leader: 0".
COORDINATOR_HOST, COORDINATOR_PORT, COORDINATOR_ID = "localhost", 0, 0
GROUP_ACTIONS = ("do_list", "describe", "delete", "reset_offsets")
RESET_SPECS = (
    "to_earliest",
    "to_latest",
    "to_offset",
    "shift_by",
    "to_datetime",
    "by_duration",
)
GROUP_OPTIONS = {  # what each action takes besides --data-dir and --format
    "do_list": ("state",),
    "describe": ("groups", "members", "offsets", "state", "verbose"),
    "delete": ("groups",),
    "reset_offsets": (
        "groups",
        "topics",
        "all_topics",
        "dry_run",
        "execute",
        *RESET_SPECS,
    ),
}


@dataclass(frozen=True)
class _GroupsCommand:
    """What `consumer-groups` was asked, as click parsed it."""

    data_dir: str | None
    do_list: bool
    describe: bool
    reset_offsets: bool
    delete: bool
    groups: tuple[str, ...]
    members: bool
    offsets: bool
    state: str | None  # None: no --state; "": --state without a value
    verbose: bool
    topics: tuple[str, ...]
    all_topics: bool
    to_earliest: bool
    to_latest: bool
    to_offset: int | None
    shift_by: int | None
    to_datetime: str | None
    by_duration: str | None
    dry_run: bool
    execute: bool
    fmt: str

    def given(self, name: str) -> bool:
        value = getattr(self, name)
        return value is not None and value is not False and value != ()


def _flag_name(name: str) -> str:
    plural = {"do_list": "list", "groups": "group", "topics": "topic"}
    return "--" + plural.get(name, name).replace("_", "-")


@main.command("consumer-groups")
@data_dir_option
@click.option("--list", "do_list", is_flag=True, help="list the consumer groups")
@click.option("--describe", is_flag=True,
              help="a group's committed offsets and lag [--offsets], its members "
              "(--members), or its state (--state)")  # fmt: skip
@click.option("--reset-offsets", is_flag=True,
              help="set an inactive group's offsets (one reset spec, a scope, "
              "--dry-run or --execute)")  # fmt: skip
@click.option("--delete", is_flag=True, help="delete inactive groups and their offsets")
@click.option("--group", "groups", multiple=True, metavar="GROUP",
              help="the group to act on; repeatable")  # fmt: skip
@click.option("--members", is_flag=True, help="--describe: one row per member")
@click.option("--offsets", is_flag=True,
              help="--describe: one row per partition (the default)")  # fmt: skip
@click.option("--state", is_flag=False, flag_value="", default=None,
              metavar="[STATE,...]",
              help="--describe: the group's state; --list: each group's state, "
              "or only groups in these states (e.g. stable,empty)")  # fmt: skip
@click.option("--verbose", is_flag=True, help="--describe --members: ASSIGNMENT too")
@click.option("--topic", "topics", multiple=True, metavar="TOPIC[:P,P...]",
              help="--reset-offsets scope: a topic, or some of its partitions; "
              "repeatable")  # fmt: skip
@click.option("--all-topics", is_flag=True,
              help="--reset-offsets scope: every partition with an offset")  # fmt: skip
@click.option("--to-earliest", is_flag=True, help="reset to the log start offset")
@click.option("--to-latest", is_flag=True, help="reset to the log end offset")
@click.option("--to-offset", type=int, metavar="N",
              help="reset to N (within [log start, log end])")  # fmt: skip
@click.option("--shift-by", type=int, metavar="N",
              help="move the committed offset by N, + or -")  # fmt: skip
@click.option("--to-datetime", metavar="YYYY-MM-DDTHH:mm:SS.sss",
              help="reset to the first record at or after this time (UTC unless "
              "it ends in Z, +hh, +hhmm or +hh:mm)")  # fmt: skip
@click.option("--by-duration", metavar="PnDTnHnMnS",
              help="reset to the first record at or after this long ago")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="only show the new offsets (the default)")
@click.option("--execute", is_flag=True, help="commit the new offsets")
@format_option
def consumer_groups(**options: Any) -> None:
    """List, describe, reset and delete consumer groups (kafka-consumer-groups), in
    Kafka's layouts; `-` marks a missing value. Offsets can only be reset, and
    groups deleted, while they have no live member."""
    cmd = _GroupsCommand(**options)
    _check_groups_command(cmd)
    with Admin(_data_dir(cmd.data_dir)) as admin:
        if cmd.do_list:
            _list_groups(admin, cmd)
        elif cmd.describe:
            _describe_groups(admin, cmd)
        elif cmd.reset_offsets:
            _reset_offsets(admin, cmd)
        else:
            _delete_groups(admin, cmd)


def _check_groups_command(cmd: _GroupsCommand) -> None:
    """Kafka's ConsumerGroupCommandOptions.checkArgs, as usage errors (exit 2)."""
    actions = [a for a in GROUP_ACTIONS if cmd.given(a)]
    if len(actions) != 1:
        raise click.UsageError(
            "Command must include exactly one action: --list, --describe, --delete, "
            "--reset-offsets"
        )
    action = actions[0]
    for field in fields(cmd):
        name = field.name
        if name in ("data_dir", "fmt", *GROUP_ACTIONS, *GROUP_OPTIONS[action]):
            continue
        if not cmd.given(name):
            continue
        if action == "delete" and name == "topics":
            raise click.UsageError(
                "The consumer does not support topic-specific offset deletion from a "
                "consumer group."
            )
        raise click.UsageError(
            f"Option {_flag_name(name)} can't be used with option {_flag_name(action)}"
        )
    if action != "do_list" and not cmd.groups:
        raise click.UsageError(f"Option {_flag_name(action)} takes the option --group")
    if action == "describe":
        if sum([cmd.members, cmd.offsets, cmd.state is not None]) > 1:
            raise click.UsageError(
                "Option --describe takes at most one of these options: --members, "
                "--offsets, --state"
            )
        if cmd.state:
            raise click.UsageError(
                "Option --describe does not take a value for --state"
            )
    if action == "reset_offsets":
        if cmd.dry_run and cmd.execute:
            raise click.UsageError(
                "Option --reset-offsets only accepts one of --execute and --dry-run"
            )
        specs = [s for s in RESET_SPECS if cmd.given(s)]
        if not specs:
            raise click.UsageError(
                "Option --reset-offsets requires one of the following scenarios: "
                + ", ".join(_flag_name(s) for s in RESET_SPECS)
            )
        if len(specs) > 1:
            raise click.UsageError(
                f"Option {_flag_name(specs[0])} can't be used with option "
                f"{_flag_name(specs[1])}"
            )
        if cmd.to_datetime is not None:  # a bad spec fails before any work
            _datetime_ms(cmd.to_datetime)
        if cmd.by_duration is not None:
            _duration_ms(cmd.by_duration)
        if not cmd.topics and not cmd.all_topics:
            raise click.UsageError(
                "One of the reset scopes should be defined: --all-topics, --topic."
            )
        if cmd.topics and cmd.all_topics:
            raise click.UsageError(
                "Option --topic can't be used with option --all-topics"
            )


def _columns(values: Sequence[object], widths: Sequence[int | None]) -> str:
    """Kafka's "%-Ns %-Ns ... %s": each value padded to its width (None: not
    padded), one space between; None values print as `-`."""
    cells = [MISSING if v is None else str(v) for v in values]
    return " ".join(
        c if w is None else c.ljust(w) for c, w in zip(cells, widths, strict=True)
    )


def _state_notice(group: str, state: str) -> None:
    """What Kafka prints on stderr before describing a group that is not Stable."""
    if state == "Empty":
        click.echo(f"\nConsumer group '{group}' has no active members.", err=True)
    elif state in REBALANCING:
        click.echo(f"\nWarning: Consumer group '{group}' is rebalancing.", err=True)


# ---- --list


def _group_states(value: str) -> set[str]:
    """Kafka's --state list: comma-separated, any case; empty: every state."""
    if not value.strip():
        return set()
    by_lower = {s.lower(): s for s in GROUP_STATES}
    states = {by_lower.get(s.strip().lower(), "") for s in value.split(",")}
    if "" in states:
        raise click.BadParameter(
            f"Invalid state list '{value}'. Valid states are: "
            f"{', '.join(GROUP_STATES)}",
            param_hint="--state",
        )
    return states


def _list_groups(admin: Admin, cmd: _GroupsCommand) -> None:
    listings = admin.list_groups()
    if cmd.state is not None:
        wanted = _group_states(cmd.state)
        listings = [g for g in listings if not wanted or g.state in wanted]
    if cmd.fmt == "json":
        _echo_json(
            [
                {
                    "group": g.group_id,
                    "state": g.state,
                    "protocol_type": g.protocol_type,
                }
                for g in listings
            ]
        )
        return
    if cmd.state is None:
        for g in listings:
            click.echo(g.group_id)
        return
    widths = [max([15, *(len(g.group_id) for g in listings)]) + 10, 20]
    click.echo(_columns(["GROUP", "STATE"], widths))
    for g in listings:
        click.echo(_columns([g.group_id, g.state], widths))


# ---- --describe


class _OffsetRow(NamedTuple):
    """One row of kafka-consumer-groups --describe --offsets (None prints `-`)."""

    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    lag: int | None
    consumer_id: str | None
    host: str | None
    client_id: str | None


def _describe_groups(admin: Admin, cmd: _GroupsCommand) -> None:
    """Each group in turn (sorted, as Kafka's TreeMap); an unknown one is an error
    after the others are shown."""
    documents: list[dict[str, Any]] = []
    missing = []
    for group in sorted(set(cmd.groups)):
        try:
            info = admin.describe_group(group)
        except GroupIdNotFound:
            click.echo(f"Error: Consumer group '{group}' does not exist.", err=True)
            missing.append(group)
            continue
        if cmd.members:
            document = _describe_members(info, cmd)
        elif cmd.state is not None:
            document = _describe_state(info, cmd)
        else:
            document = _describe_offsets(admin, info, cmd)
        documents.append(document)
    if cmd.fmt == "json":
        _echo_json(documents)
    if missing:
        sys.exit(1)


def _describe_offsets(
    admin: Admin, info: GroupInfo, cmd: _GroupsCommand
) -> dict[str, Any]:
    """Kafka's rows: members with partitions (most partitions first), each's
    partitions in order, then the partitions with an offset and no owner."""
    committed = admin.list_group_offsets(info.group_id)
    owned: list[tuple[TopicPartition, MemberInfo | None]] = []
    for m in sorted(info.members, key=lambda m: -len(m.assignment)):
        owned += [(tp, m) for tp in sorted(set(m.assignment))]
    taken = {tp for tp, _ in owned}
    owned += [(tp, None) for tp in sorted(committed) if tp not in taken]
    rows = []
    for tp, member in owned:
        c = committed.get(tp)
        current = None if c is None else c.offset
        end = _log_end_offset(admin, tp)
        rows.append(
            _OffsetRow(
                info.group_id,
                tp.topic,
                tp.partition,
                current,
                end,
                None if current is None or end is None else end - current,
                None if member is None else member.member_id,
                None if member is None else member.host,
                None if member is None else member.client_id,
            )
        )
    if cmd.fmt == "text":
        _state_notice(info.group_id, info.state)
        if rows:
            widths = [
                max(15, len(info.group_id)),
                max([15, *(len(r.topic) for r in rows)]),
                10,
                15,
                15,
                15,
                max([15, *(len(r.consumer_id or MISSING) for r in rows)]),
                max([15, *(len(r.host or MISSING) for r in rows)]),
                None,
            ]
            click.echo(
                "\n"
                + _columns(
                    [
                        "GROUP",
                        "TOPIC",
                        "PARTITION",
                        "CURRENT-OFFSET",
                        "LOG-END-OFFSET",
                        "LAG",
                        "CONSUMER-ID",
                        "HOST",
                        "CLIENT-ID",
                    ],
                    widths,
                )
            )
            for row in rows:
                click.echo(_columns(row, widths))
    return {
        "group": info.group_id,
        "state": info.state,
        "offsets": [row._asdict() for row in rows],
    }


def _log_end_offset(admin: Admin, tp: TopicPartition) -> int | None:
    """The high watermark; None (`-`, Kafka's Unknown) if the partition is gone."""
    try:
        return admin.list_offsets({tp: "latest"})[tp]
    except UnknownTopic:
        return None


def _assignment_text(assignment: Sequence[TopicPartition]) -> str:
    """Kafka's ASSIGNMENT cell: `orders(0,2), audit(1)`, topics sorted."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in assignment:
        by_topic.setdefault(topic, []).append(partition)
    parts = sorted(
        f"{topic}({','.join(str(p) for p in sorted(ps))})"
        for topic, ps in by_topic.items()
    )
    return ", ".join(parts) or MISSING


def _describe_members(info: GroupInfo, cmd: _GroupsCommand) -> dict[str, Any]:
    members = info.members
    if cmd.fmt == "text":
        _state_notice(info.group_id, info.state)
        if members:  # Kafka prints nothing more for a group without members
            static = any(m.group_instance_id for m in members)
            widths: list[int | None] = [
                max(15, len(info.group_id)),
                max([15, *(len(m.member_id) for m in members)]),
            ]
            header = ["GROUP", "CONSUMER-ID"]
            if static:
                widths.append(
                    max([17, *(len(m.group_instance_id or "") for m in members)])
                )
                header.append("GROUP-INSTANCE-ID")
            widths += [
                max([15, *(len(m.host) for m in members)]),
                max([15, *(len(m.client_id) for m in members)]),
                15,
            ]
            header += ["HOST", "CLIENT-ID", "#PARTITIONS"]
            # Kafka's format ends "%-15s " and then ASSIGNMENT (if --verbose)
            line = _columns(header, widths) + " "
            click.echo("\n" + line + ("ASSIGNMENT" if cmd.verbose else ""))
            for m in members:
                values: list[object] = [info.group_id, m.member_id]
                if static:
                    values.append(m.group_instance_id or "")
                values += [m.host, m.client_id, len(m.assignment)]
                line = _columns(values, widths) + " "
                click.echo(
                    line + (_assignment_text(m.assignment) if cmd.verbose else "")
                )
    return {
        "group": info.group_id,
        "state": info.state,
        "members": [
            {
                "consumer_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "host": m.host,
                "client_id": m.client_id,
                "partitions": len(m.assignment),
                "assignment": [
                    {"topic": t, "partition": p} for t, p in sorted(m.assignment)
                ],
            }
            for m in members
        ],
    }


def _describe_state(info: GroupInfo, cmd: _GroupsCommand) -> dict[str, Any]:
    coordinator = f"{COORDINATOR_HOST}:{COORDINATOR_PORT} ({COORDINATOR_ID})"
    if cmd.fmt == "text":
        _state_notice(info.group_id, info.state)
        widths = [max(15, len(info.group_id)), max(25, len(coordinator)), 20, 20, None]
        header = [
            "GROUP",
            "COORDINATOR (ID)",
            "ASSIGNMENT-STRATEGY",
            "STATE",
            "#MEMBERS",
        ]
        row = [
            info.group_id,
            coordinator,
            info.assignor or None,
            info.state,
            len(info.members),
        ]
        click.echo("\n" + _columns(header, widths))
        click.echo(_columns(row, widths))
    return {
        "group": info.group_id,
        "coordinator": {
            "host": COORDINATOR_HOST,
            "port": COORDINATOR_PORT,
            "id": COORDINATOR_ID,
        },
        "assignment_strategy": info.assignor or None,
        "state": info.state,
        "members": len(info.members),
        "generation": info.generation,
        "protocol_type": info.protocol_type,
    }


# ---- --reset-offsets


def _reset_offsets(admin: Admin, cmd: _GroupsCommand) -> None:
    """Kafka's resetOffsets: only for a group that is Empty (or unknown: Dead);
    a dry run unless --execute."""
    if not cmd.execute and not cmd.dry_run:
        click.echo(
            "WARN: No action will be performed as the --execute option is missing. "
            "Add --dry-run to say so and not see this warning.",
            err=True,
        )
    planned: dict[str, dict[TopicPartition, int]] = {}
    refused = []
    for group in sorted(set(cmd.groups)):
        state = _group_state(admin, group)
        if state not in ("Empty", "Dead"):
            refused.append(_not_inactive(group, state))
            continue
        offsets = _new_offsets(
            admin, group, _partitions_to_reset(admin, group, cmd), cmd
        )
        if cmd.execute:
            try:
                # a new dict: Mapping's key type is invariant, so mypy rejects
                # dict[TopicPartition, int] where the keys may also be tuples
                admin.alter_group_offsets(group, {tp: o for tp, o in offsets.items()})
            except GroupNotEmpty:  # a member joined since we looked
                refused.append(_not_inactive(group, _group_state(admin, group)))
                continue
        planned[group] = offsets
    rows = [
        (g, tp.topic, tp.partition, offset)
        for g, offsets in planned.items()
        for tp, offset in sorted(offsets.items())
    ]
    if cmd.fmt == "json":
        _echo_json(
            {
                "dry_run": not cmd.execute,
                "offsets": [
                    {"group": g, "topic": t, "partition": p, "new_offset": o}
                    for g, t, p, o in rows
                ],
            }
        )
    elif planned:
        widths = [
            max([15, *(len(g) for g in planned)]),
            max([15, *(len(t) for _, t, _, _ in rows)]),
            10,
            None,
        ]
        click.echo(
            "\n" + _columns(["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], widths)
        )
        for row in rows:
            click.echo(_columns(row, widths))
    if refused:
        raise click.ClickException("\n".join(refused))


def _group_state(admin: Admin, group: str) -> str:
    try:
        return admin.describe_group(group).state
    except GroupIdNotFound:
        return "Dead"  # Kafka's state of a group it does not know


def _not_inactive(group: str, state: str) -> str:
    return (
        f"Assignments can only be reset if the group '{group}' is inactive, but the "
        f"current state is {state}."
    )


def _partitions_to_reset(
    admin: Admin, group: str, cmd: _GroupsCommand
) -> list[TopicPartition]:
    """--all-topics: the partitions the group has offsets for; --topic t: all of
    t's partitions, --topic t:0,2: those."""
    if cmd.all_topics:
        return sorted(admin.list_group_offsets(group))
    topics = admin.list_topics()
    wanted: dict[TopicPartition, None] = {}
    for arg in cmd.topics:
        topic, sep, numbers = arg.partition(":")
        meta = topics.get(topic)
        if meta is None:
            raise UnknownTopic(f"topic {topic!r} does not exist")
        if not sep:
            wanted.update(
                dict.fromkeys(TopicPartition(topic, p) for p in range(meta.partitions))
            )
            continue
        if ":" in numbers:
            raise click.BadParameter(
                f"Invalid topic arg '{arg}', expected topic name and partitions",
                param_hint="--topic",
            )
        for number in numbers.split(","):
            try:
                partition = int(number)
            except ValueError:
                raise click.BadParameter(
                    f"Invalid partition '{number}' specified in topic arg '{arg}'",
                    param_hint="--topic",
                ) from None
            wanted[TopicPartition(topic, partition)] = None
    absent = [f"{t}-{p}" for t, p in wanted if not 0 <= p < topics[t].partitions]
    if absent:
        raise UnknownTopic(f'The partitions "{",".join(absent)}" do not exist')
    return list(wanted)


def _new_offsets(
    admin: Admin,
    group: str,
    partitions: Sequence[TopicPartition],
    cmd: _GroupsCommand,
) -> dict[TopicPartition, int]:
    """Kafka's prepareOffsetsToReset for the one reset spec given."""
    if not partitions:
        return {}
    if cmd.to_earliest or cmd.to_latest:
        spec = "earliest" if cmd.to_earliest else "latest"
        found = admin.list_offsets(dict.fromkeys(partitions, spec))
        return {tp: offset for tp, offset in found.items() if offset is not None}
    if cmd.to_offset is not None:
        return _within_log(admin, dict.fromkeys(partitions, cmd.to_offset))
    if cmd.shift_by is not None:
        committed = admin.list_group_offsets(group)
        wanted = {}
        for tp in partitions:
            if tp not in committed:
                raise click.ClickException(
                    f"Cannot shift offset for partition {tp.topic}-{tp.partition} "
                    f"since there is no current committed offset"
                )
            wanted[tp] = committed[tp].offset + cmd.shift_by
        return _within_log(admin, wanted)
    if cmd.to_datetime is not None:
        timestamp_ms = _datetime_ms(cmd.to_datetime)
    else:
        assert cmd.by_duration is not None
        timestamp_ms = int(time.time() * 1000) - _duration_ms(cmd.by_duration)
    return _offsets_at(admin, partitions, timestamp_ms)


def _within_log(
    admin: Admin, wanted: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Kafka's checkOffsetsRange: an offset past the log end becomes the log end,
    one before the log start the log start, each with a warning."""
    starts = admin.list_offsets(dict.fromkeys(wanted, "earliest"))
    ends = admin.list_offsets(dict.fromkeys(wanted, "latest"))
    out = {}
    for tp, offset in wanted.items():
        start, end = starts[tp], ends[tp]
        assert start is not None
        assert end is not None
        name = f"{tp.topic}-{tp.partition}"
        if offset > end:
            click.echo(
                f"WARN: New offset ({offset}) is higher than latest offset for "
                f"topic partition {name}. Value will be set to {end}",
                err=True,
            )
            offset = end
        elif offset < start:
            click.echo(
                f"WARN: New offset ({offset}) is lower than earliest offset for "
                f"topic partition {name}. Value will be set to {start}",
                err=True,
            )
            offset = start
        out[tp] = offset
    return out


def _offsets_at(
    admin: Admin, partitions: Sequence[TopicPartition], timestamp_ms: int
) -> dict[TopicPartition, int]:
    """The first offset at or after the time; the log end where no record is that
    new (Kafka warns "is empty" then, as here)."""
    # below 0, list_offsets would read -1/-2 as latest/earliest: 0 means the same
    found = admin.list_offsets(dict.fromkeys(partitions, max(0, timestamp_ms)))
    out = {}
    for tp in partitions:
        offset = found[tp]
        if offset is None:
            click.echo(
                f"Warn: Partition {tp.partition} from topic {tp.topic} is "
                f"empty. Falling back to latest known offset.",
                err=True,
            )
            offset = admin.list_offsets({tp: "latest"})[tp]
            assert offset is not None
        out[tp] = offset
    return out


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})(Z|[+-]\d\d(?::?\d\d)?)?"
)


def _datetime_ms(value: str) -> int:
    """Kafka's Utils.getDateTime: yyyy-MM-ddTHH:mm:ss.SSS, then Z, +hh, +hhmm or
    +hh:mm; without a zone it is UTC (Kafka appends "Z")."""
    match = _DATETIME.fullmatch(value.strip())
    try:
        if match is None:
            raise ValueError("not yyyy-MM-ddTHH:mm:ss.SSS[zone]")
        *numbers, zone = match.groups()
        year, month, day, hour, minute, second, millis = map(int, numbers)
        offset = timedelta(0)
        if zone and zone != "Z":
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            offset = -offset if zone[0] == "-" else offset
        moment = datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            millis * 1000,
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise click.BadParameter(
            f"Error parsing timestamp '{value}' ({exc}): the format is "
            f"yyyy-MM-ddTHH:mm:ss.SSS, optionally followed by Z, +hh, +hhmm or "
            f"+hh:mm (no zone: UTC)",
            param_hint="--to-datetime",
        ) from None
    return (moment - EPOCH) // timedelta(milliseconds=1)


_DURATION = re.compile(
    r"([-+]?)P(?:([-+]?\d+)D)?"
    r"(T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?",
    re.IGNORECASE,
)


def _duration_ms(value: str) -> int:
    """Java's Duration.parse (what Kafka's --by-duration takes): PnDTnHnMn.nS,
    each part optional and signed, e.g. PT15M, P1DT12H, PT0.5S."""
    match = _DURATION.fullmatch(value.strip())
    if match is not None:
        sign, days, time_part, hours, minutes, seconds, fraction = match.groups()
        has_time = hours or minutes or seconds
        if (days or has_time) and (time_part is None or has_time):
            total = timedelta(
                days=int(days or 0),
                hours=int(hours or 0),
                minutes=int(minutes or 0),
                seconds=int(seconds or 0),
            )
            if fraction:
                nanos = int(fraction.ljust(9, "0"))
                negative = (seconds or "").startswith("-")
                total += timedelta(microseconds=(-nanos if negative else nanos) / 1000)
            if sign == "-":
                total = -total
            return total // timedelta(milliseconds=1)
    raise click.BadParameter(
        f"'{value}': Text cannot be parsed to a Duration (the format is PnDTnHnMn.nS, "
        f"e.g. PT15M or P1DT12H)",
        param_hint="--by-duration",
    )


# ---- --delete


def _delete_groups(admin: Admin, cmd: _GroupsCommand) -> None:
    deleted, failed = [], {}
    for group in dict.fromkeys(cmd.groups):
        try:
            admin.delete_group(group)
            deleted.append(group)
        except (GroupError, InvalidArgument) as exc:
            failed[group] = f"{type(exc).__name__}: {exc}"
    if cmd.fmt == "json":
        _echo_json({"deleted": deleted, "failed": failed})
    elif not failed:
        names = ", ".join(f"'{g}'" for g in deleted)
        click.echo(f"Deletion of requested consumer groups ({names}) was successful.")
    elif deleted:
        names = ", ".join(f"'{g}'" for g in deleted)
        click.echo(f"These consumer groups were deleted successfully: {names}")
    if failed:
        raise click.ClickException(
            "Deletion of some consumer groups failed:\n"
            + "\n".join(
                f"* Group '{g}' could not be deleted due to: {why}"
                for g, why in failed.items()
            )
        )


# ---- get-offsets (kafka-get-offsets) ------------------------------------------------


def _time_spec(value: str) -> str | int:
    spec = value.strip().lower()
    if spec in ("-1", "latest"):
        return "latest"
    if spec in ("-2", "earliest"):
        return "earliest"
    try:
        timestamp = int(spec)
    except ValueError:
        timestamp = -3
    if timestamp < 0:
        raise click.BadParameter(
            f"Malformed time argument {value}. Please use -1 or latest / -2 or "
            f"earliest, or a timestamp in ms (max-timestamp and the tiered specs are "
            f"not supported)",
            param_hint="--time",
        )
    return timestamp


def _partition_list(value: str | None) -> set[int] | None:
    if not value:
        return None
    try:
        return {int(p) for p in value.split(",")}
    except ValueError:
        raise click.BadParameter(
            f"--partitions expects a comma separated list of numeric partition ids, "
            f"but received: {value}",
            param_hint="--partitions",
        ) from None


@main.command("get-offsets")
@data_dir_option
@click.option("--topic", help="a topic name or regular expression [every topic]")
@click.option("--partitions", help="comma-separated partition ids [all]")
@click.option("--time", "time_arg", default="latest", show_default=True,
              metavar="earliest|latest|-2|-1|MS",
              help="latest: the high watermark; earliest: the log start; a "
              "timestamp: the first offset at or after it")  # fmt: skip
@format_option
def get_offsets(
    data_dir: str | None,
    topic: str | None,
    partitions: str | None,
    time_arg: str,
    fmt: str,
) -> None:
    """Offsets of topic partitions as `topic:partition:offset` lines
    (kafka-get-offsets). A timestamp after the last record prints no line."""
    spec = _time_spec(time_arg)
    wanted = _partition_list(partitions)
    try:
        pattern = re.compile(".*" if topic is None else topic)
    except re.error as exc:
        raise click.BadParameter(f"{topic!r}: {exc}", param_hint="--topic") from None
    with Admin(_data_dir(data_dir)) as admin:
        tps = [
            TopicPartition(name, p)
            for name, meta in sorted(admin.list_topics().items())
            if pattern.fullmatch(name)
            for p in range(meta.partitions)
            if wanted is None or p in wanted
        ]
        if not tps:
            raise click.ClickException(
                "Could not match any topic-partitions with the specified filters"
            )
        offsets = admin.list_offsets(dict.fromkeys(tps, spec))
    found = [(tp, offsets[tp]) for tp in tps if offsets[tp] is not None]
    if fmt == "json":
        _echo_json([{"topic": t, "partition": p, "offset": o} for (t, p), o in found])
        return
    for (t, p), o in found:
        click.echo(f"{t}:{p}:{o}")


# ---- perf (kafka-producer-perf-test, kafka-consumer-perf-test) ----------------------


@main.group()
def perf() -> None:
    """Throughput and latency tests (kafka-producer/consumer-perf-test)."""


@perf.command("produce")
@data_dir_option
@click.option("--topic", required=True)
@click.option("--num-records", type=int, required=True)
@click.option("--record-size", type=int, default=100, show_default=True,
              help="value bytes (random capital letters)")  # fmt: skip
@click.option("--throughput", type=float, default=-1, show_default=True,
              help="at most this many records/s; -1: no limit")  # fmt: skip
@click.option("--batch", type=int, default=1000, show_default=True,
              help="records per send_batch (the unit of latency)")  # fmt: skip
@click.option("--partition", type=click.IntRange(min=0),
              help="only this partition [batches go round all]")  # fmt: skip
@click.option("--acks", type=click.Choice(["0", "1", "-1", "all"]), default="1",
              show_default=True)  # fmt: skip
@format_option
def perf_produce(
    data_dir: str | None,
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    batch: int,
    partition: int | None,
    acks: str,
    fmt: str,
) -> None:
    """Send records as fast as possible (or at --throughput) and print Kafka's
    summary line; latency is from the send to the append of its batch. A second line
    gives the percentiles in microseconds."""

    def window(w: measure.Window) -> None:
        if fmt == "text":
            click.echo(
                f"{w.records} records sent, {w.records_per_sec:.1f} records/sec "
                f"({w.mb_per_sec:.2f} MB/sec), {w.avg_latency_ms:.1f} ms avg latency, "
                f"{w.max_latency_ms:.1f} ms max latency."
            )

    r = measure.produce(
        _data_dir(data_dir),
        topic,
        num_records,
        record_size,
        throughput=throughput,
        batch=batch,
        acks=acks,
        partition=partition,
        on_window=window,
    )
    ms, us = r.percentiles_ms, r.percentiles_us
    if fmt == "json":
        _echo_json(
            {
                "records": r.records,
                "records_per_sec": r.records_per_sec,
                "mb_per_sec": r.mb_per_sec,
                "avg_latency_ms": r.avg_latency_ms,
                "max_latency_ms": r.max_latency_ms,
                "percentiles_ms": ms,
                "percentiles_us": us,
            }
        )
        return
    click.echo(
        f"{r.records} records sent, {r.records_per_sec:f} records/sec "
        f"({r.mb_per_sec:.2f} MB/sec), {r.avg_latency_ms:.2f} ms avg latency, "
        f"{r.max_latency_ms:.2f} ms max latency, {ms['50th']} ms 50th, "
        f"{ms['95th']} ms 95th, {ms['99th']} ms 99th, {ms['99.9th']} ms 99.9th."
    )
    click.echo(
        f"{us['50th']:.1f} us 50th, {us['95th']:.1f} us 95th, {us['99th']:.1f} us "
        f"99th, {us['99.9th']:.1f} us 99.9th."
    )


PERF_HEADER = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, "
    "nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
)


@perf.command("consume")
@data_dir_option
@click.option("--topic", required=True)
@click.option("--messages", type=int, required=True, help="records to read")
@click.option("--timeout", type=click.IntRange(min=0), default=10_000,
              show_default=True, help="ms allowed between records")  # fmt: skip
@click.option("--from-latest", is_flag=True, help="only new records [earliest]")
@click.option("--hide-header", is_flag=True)
@format_option
def perf_consume(
    data_dir: str | None,
    topic: str,
    messages: int,
    timeout: int,
    from_latest: bool,
    hide_header: bool,
    fmt: str,
) -> None:
    """Read records as fast as possible and print kafka-consumer-perf-test's
    columns."""
    if fmt == "text" and not hide_header:
        click.echo(PERF_HEADER)  # first, as Kafka: the run may take a while
    r = measure.consume(
        _data_dir(data_dir),
        topic,
        messages,
        timeout_ms=timeout,
        from_latest=from_latest,
    )
    if fmt == "json":
        _echo_json(
            {
                "start_ms": r.start_ms,
                "end_ms": r.end_ms,
                "mb": r.mb,
                "mb_per_sec": r.mb_per_sec,
                "messages": r.messages,
                "messages_per_sec": r.messages_per_sec,
                "rebalance_time_ms": r.rebalance_ms,
                "fetch_time_ms": r.fetch_ms,
                "fetch_mb_per_sec": r.fetch_mb_per_sec,
                "fetch_messages_per_sec": r.fetch_messages_per_sec,
                "timed_out": r.timed_out,
            }
        )
        return
    if r.timed_out:
        click.echo(
            f"WARNING: Exiting before consuming the expected number of messages: "
            f"timeout ({timeout} ms) exceeded. You can use the --timeout option to "
            f"increase the timeout."
        )
    click.echo(
        f"{_date(r.start_ms)}, {_date(r.end_ms)}, {r.mb:.4f}, {r.mb_per_sec:.4f}, "
        f"{r.messages}, {r.messages_per_sec:.4f}, {r.rebalance_ms}, {r.fetch_ms}, "
        f"{r.fetch_mb_per_sec:.4f}, {r.fetch_messages_per_sec:.4f}"
    )


def _date(ms: int) -> str:
    """Kafka's default --date-format, yyyy-MM-dd HH:mm:ss:SSS, local time."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S:") + (
        f"{ms % 1000:03d}"
    )


# ---- gc, doctor ---------------------------------------------------------------------


@main.command()
@click.option("--dry-run", is_flag=True, help="only list what would be removed")
@click.option("--shm-prefix", default=shm.NAME_PREFIX, show_default=True,
              help="look only at shared-memory names starting /<prefix>")  # fmt: skip
@format_option
def gc(dry_run: bool, shm_prefix: str, fmt: str) -> None:
    """Remove leaked shared memory: rings and broker objects of this host whose
    broker, data directory or topic is gone. Looks at every broker, not one data
    directory; never touches another user's objects or names shmbroker did not
    make."""
    from shmbroker.broker import gc as garbage

    removals = garbage.collect(dry_run=dry_run, prefix=shm_prefix)
    if fmt == "json":
        _echo_json(
            {
                "dry_run": dry_run,
                "removed": [msgspec.structs.asdict(r) for r in removals],
                "bytes": sum(r.bytes for r in removals),
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for r in removals:
        click.echo(f"{verb} {r.name} ({r.bytes} bytes): {r.reason}")
    total = sum(r.bytes for r in removals)
    click.echo(
        f"{len(removals)} objects, {total} bytes {'to free' if dry_run else 'freed'}"
    )


@main.command()
@data_dir_option
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="the broker's TOML file, if it has one")  # fmt: skip
@click.option("--shm-prefix",
              help="the broker's shm prefix [from its registry, or shmb.]")  # fmt: skip
@format_option
def doctor(
    data_dir: str | None, config_file: str | None, shm_prefix: str | None, fmt: str
) -> None:
    """Check this host for what would stop the broker of a data directory or lose its
    data: /dev/shm (tmpfs, size, free space), logind's RemoveIPC, the data directory
    and its disk, the registry, the control socket. Exit status 1 if any check
    finds an error."""
    from shmbroker.broker import doctor as checks

    directory = _data_dir(data_dir)
    defaults: dict[str, Any] = {}
    try:  # the broker's own prefix and topic defaults, if its registry says
        written = protocol.load_registry(directory)
        defaults = {"shm_prefix": written.shm_prefix}
        if written.topic_defaults:
            defaults["topic_defaults"] = written.topic_defaults
    except (ShmbrokerError, OSError):  # the registry check reports it
        pass
    if shm_prefix is not None:
        defaults["shm_prefix"] = shm_prefix
    config = BrokerConfig.load(config_file, data_dir=directory, **defaults)
    findings = checks.check(config)
    if fmt == "json":
        _echo_json([msgspec.structs.asdict(f) for f in findings])
    else:
        for f in findings:
            click.echo(f"{f.status.upper():5}  {f.check}: {f.message}")
    if any(f.status == "error" for f in findings):
        sys.exit(1)


@main.command()
@data_dir_option
@click.option("--topic", "topics", multiple=True, help="only this topic (repeatable)")
@format_option
def verify(data_dir: str | None, topics: tuple[str, ...], fmt: str) -> None:
    """Read every batch of every segment of the data directory's topics and check
    it (length, CRC32C, records), dense offsets within and across segments, and
    every index entry (Kafka's kafka-dump-log --deep-iteration over whole logs).
    Prints each problem with the repair it suggests; exit status 1 if any."""
    from shmbroker.log.verify import verify_partition

    directory = Path(_data_dir(data_dir))
    registry = protocol.load_registry(directory)
    for name in topics:
        if name not in registry.topics:
            raise ShmbrokerError(f"topic {name!r} does not exist in {directory}")
    reports = [
        verify_partition(directory / f"{name}-{p}")
        for name, entry in sorted(registry.topics.items())
        if not topics or name in topics
        for p in range(entry.partitions)
        if (directory / f"{name}-{p}").is_dir()
    ]
    problems = [p for r in reports for p in r.problems]
    if fmt == "json":
        _echo_json(msgspec.to_builtins(reports))
    else:
        for p in problems:
            where = f" at byte {p.position}" if p.position >= 0 else ""
            click.echo(f"ERROR {p.file}{where}: {p.message}\n  repair: {p.repair}")
        click.echo(
            f"{len(reports)} partitions, {sum(r.segments for r in reports)} "
            f"segments, {sum(r.batches for r in reports)} batches, "
            f"{sum(r.records for r in reports)} records checked: "
            f"{len(problems) or 'no'} problems"
        )
    if problems:
        sys.exit(1)


# ---- demo, inspectors ---------------------------------------------------------------


@main.command()
@click.option("--records", default=1_000_000, show_default=True)
@click.option("--size", default=100, show_default=True, help="value bytes")
@click.option("--batch", default=1000, show_default=True, help="records per append")
def demo(records: int, size: int, batch: int) -> None:
    """Produce records into a fresh ring while another process consumes them."""
    name = f"/{shm.NAME_PREFIX}demo.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    ring = Ring.create(name, 16 << 20)
    try:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "shmbroker", "_consume", name, str(records)],
            stdout=subprocess.PIPE,
            text=True,
        )
        click.echo(
            f"ring {name}: producing {records} records of {size} B; "
            f"consumer pid {consumer.pid}"
        )
        value = b"x" * size
        start = time.perf_counter()
        for first in range(0, records, batch):
            n = min(batch, records - first)
            ring.append_batch([value] * n, timeout=30)
        produced = time.perf_counter() - start
        out, _ = consumer.communicate(timeout=120)
        click.echo(f"producer: {records / produced:,.0f} records/s")
        click.echo(f"consumer: {out.strip()}")
        click.echo("A broker: `shmbroker serve`, then `shmbroker produce/consume`.")
    finally:
        ring.unlink()
        ring.close()


@main.command("_consume", hidden=True)
@click.argument("name")
@click.argument("records", type=int)
def consume_demo(name: str, records: int) -> None:
    with Ring.open(name) as ring:
        reader = ring.reader(0)
        count, start = 0, time.perf_counter()
        while count < records:
            got = reader.poll(timeout=10)
            if not got:
                raise click.ClickException(f"no record for 10 s after {count}")
            count += len(got)
            # no durable log here: the one consumer frees the space it has read
            ring.spill_advance(reader.position)
        elapsed = time.perf_counter() - start
        click.echo(
            f"{count} records, {count / elapsed:,.0f} records/s, offsets "
            f"{got[-1].offset - count + 1}..{got[-1].offset}"
        )


@main.command(
    "dump-log",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dump_log(args: tuple[str, ...]) -> None:
    """Print and check segment files like Kafka's kafka-dump-log (--help for more)."""
    from shmbroker.log.dump import main as dump_main

    sys.exit(dump_main(list(args)))


@main.command("ring-stat")
@click.argument("name")
@format_option
def ring_stat(name: str, fmt: str) -> None:
    """Cursors, offsets and counters of a ring (like Aeron's AeronStat)."""
    with Ring.open(name) as ring:
        stat: dict[str, Any] = msgspec.structs.asdict(ring.stat())
        stat["damage"] = ring.check()
    if fmt == "json":
        click.echo(json.dumps(stat))
        return
    for key, value in stat.items():
        if key != "damage":
            click.echo(f"{key:24} {value}")
    unspilled = stat["tail_position"] - stat["spill_position"]
    click.echo(
        f"{'fill':24} {unspilled}/{stat['capacity_bytes']} bytes not yet spilled"
    )
    click.echo(f"{'header':24} {stat['damage'] or 'sound'}")
    if stat["damage"]:
        click.echo(f"ERROR: the header is damaged: {stat['damage']}", err=True)
        sys.exit(1)
