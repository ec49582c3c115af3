"""The `shmbroker` command line: `serve` (the supervisor), Kafka's tools with their
flag names and output layouts (`topics`, `produce`, `consume`, `get-offsets`, `perf`)
and host checks (`gc`, `doctor`). Commands parse, call the clients, and print; a
user's mistake is one line on stderr (exit 1, or 2 for a bad flag), never a traceback.
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
from datetime import datetime
from typing import IO, Any, TypeVar

import click
import msgspec

from shmbroker import (
    Admin,
    Consumer,
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
from shmbroker.client.consumer import OffsetReset
from shmbroker.config import BrokerConfig, TopicConfig, default_data_dir

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
              "shm.prefix, [topic] defaults")  # fmt: skip
@click.option("--shm-prefix", help="start of every shared-memory name [shmb.]")
@click.option("--num-partitions", type=int, help="of auto-created topics [1]")
@click.option("--auto-create-topics/--no-auto-create-topics", default=None,
              help="create a topic on its first produce [on]")  # fmt: skip
@click.option("--topic-config", multiple=True, metavar="KEY=VALUE",
              help="default topic config, e.g. ring.bytes=4194304")  # fmt: skip
def serve(
    data_dir: str | None,
    config_file: str | None,
    shm_prefix: str | None,
    num_partitions: int | None,
    auto_create_topics: bool | None,
    topic_config: tuple[str, ...],
) -> None:
    """Run the broker supervisor on a data directory until SIGTERM or Ctrl-C."""
    from shmbroker.broker.supervisor import serve as run

    config = BrokerConfig.load(
        config_file,
        data_dir=data_dir,
        shm_prefix=shm_prefix,
        num_partitions=num_partitions,
        auto_create_topics_enable=auto_create_topics,
        topic_defaults=_key_values(topic_config, "--topic-config") or None,
    )
    run(config)


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
@click.option("--group", help="a consumer group (not yet: issue 5)")
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
    a record, or on Ctrl-C. Values are written as raw bytes."""
    if group is not None:
        raise click.UsageError(
            "consumer groups come with issue 5; for now read partitions directly "
            "(--partition, --offset)"
        )
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
    props = _properties(properties, CONSUME_PROPERTIES, "--property")
    reset: OffsetReset = "earliest" if from_beginning else "latest"
    out = sys.stdout.buffer
    with Consumer(
        _data_dir(data_dir), auto_offset_reset=reset, client_id="console-consumer"
    ) as consumer:
        meta = consumer.connection.topic(topic)
        formatter = _Formatter(props, meta.configs.get("message.timestamp.type", ""))
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
        stat = msgspec.structs.asdict(ring.stat())
    if fmt == "json":
        click.echo(json.dumps(stat))
        return
    for key, value in stat.items():
        click.echo(f"{key:24} {value}")
    unspilled = stat["tail_position"] - stat["spill_position"]
    click.echo(
        f"{'fill':24} {unspilled}/{stat['capacity_bytes']} bytes not yet spilled"
    )
