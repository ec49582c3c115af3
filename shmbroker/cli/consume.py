"""`consume`: a topic's records on stdout (kafka-console-consumer)."""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING

import click

from shmbroker import Record
from shmbroker.cli.options import is_true, kafka_properties
from shmbroker.cli.target import Target, target_options

if TYPE_CHECKING:
    from shmbroker.cli.target import AnyAdmin, AnyConsumer
from shmbroker.client.consumer import OffsetReset

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

    def __init__(
        self, props: Mapping[str, str], timestamp_type: Callable[[str], bytes]
    ) -> None:
        self.timestamp = is_true(props, "print.timestamp")
        self.partition = is_true(props, "print.partition")
        self.offset = is_true(props, "print.offset")
        self.headers = is_true(props, "print.headers")
        self.key = is_true(props, "print.key")
        self.value = props.get("print.value", "true").strip().lower() == "true"
        self.key_separator = props.get("key.separator", "\t").encode()
        self.line_separator = props.get("line.separator", "\n").encode()
        self.headers_separator = props.get("headers.separator", ",").encode()
        self.null = props.get("null.literal", "null").encode()
        self.timestamp_type = timestamp_type
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
                fields.append(b"%s:%d" % (self.timestamp_type(r.topic), r.timestamp))
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


@click.command()
@target_options
@click.option("--topic", help="the topic to read")
@click.option("--include", metavar="REGEX",
              help="read every topic whose name matches, now or later (instead of "
              "--topic)")  # fmt: skip
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
    target: Target,
    topic: str | None,
    include: str | None,
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
    if (topic is None) == (include is None):
        raise click.UsageError("Exactly one of --include/--topic is required.")
    if include is not None:
        try:
            re.compile(include)
        except re.error as exc:
            raise click.BadParameter(
                f"{include!r}: {exc}", param_hint="--include"
            ) from None
        if partition is not None:
            raise click.UsageError(
                "Options include and partition cannot be specified together."
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
    if group is not None and partition is not None:
        raise click.UsageError(
            "Options group and partition cannot be specified together."
        )
    props = kafka_properties(properties, CONSUME_PROPERTIES, "--property")
    reset: OffsetReset = "earliest" if from_beginning else "latest"
    out = sys.stdout.buffer
    # with a group, close() makes the final commit (auto-commit is on): the
    # positions are those of the records printed, never of records read ahead;
    # --include without a group gets one of its own that commits nothing (Kafka's)
    with (
        target.admin() as admin,
        target.consumer(
            auto_offset_reset=reset,
            client_id="console-consumer",
            group_id=group or (None if include is None else _random_group()),
            enable_auto_commit=group is not None,
        ) as consumer,
    ):
        formatter = _Formatter(props, _TimestampTypes(admin))
        if include is not None:
            consumer.subscribe(pattern=include)
        else:
            assert topic is not None
            # as Kafka's console consumer: a topic not there yet is created (when
            # the broker auto-creates topics) and waited on
            meta = admin.topic(topic, auto_create=True)
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


def _random_group() -> str:
    """Kafka's console consumer's group when it needs one and none is given."""
    return f"console-consumer-{random.randrange(100_000)}"


class _TimestampTypes:
    """Each topic's message.timestamp.type (CreateTime or LogAppendTime), asked of
    the broker once per topic."""

    def __init__(self, admin: AnyAdmin) -> None:
        self.admin = admin
        self.known: dict[str, bytes] = {}

    def __call__(self, topic: str) -> bytes:
        found = self.known.get(topic)
        if found is None:
            configs = self.admin.topic(topic).configs
            found = self.known[topic] = configs["message.timestamp.type"].encode()
        return found


class _RecordPrinter:
    """Polls and prints until done or Ctrl-C; `count` is what was printed."""

    def __init__(self, out: IO[bytes], formatter: _Formatter) -> None:
        self.out = out
        self.formatter = formatter
        self.count = 0
        self.interrupted = False

    def run(
        self, consumer: AnyConsumer, max_messages: int | None, timeout_ms: int | None
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
        self, consumer: AnyConsumer, max_messages: int | None, timeout_ms: int | None
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
