"""`produce`: stdin to a topic, one record per line (kafka-console-producer)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, NamedTuple

import click

from shmbroker import RecordTooLarge, ShmbrokerError
from shmbroker.cli.options import is_true, kafka_properties
from shmbroker.cli.progress import progress_bar
from shmbroker.cli.target import Target, target_options
from shmbroker.client.partitioner import partition_for_key

if TYPE_CHECKING:
    from shmbroker.cli.target import AnyProducer

READ_BYTES = 128 << 10  # stdin is read up to this at a time: more is slower (the
# lines of a read no longer fit the CPU's cache), 64-128 KiB is the fastest here
DURABLE_READ_BYTES = 1 << 20  # ... with acks=all: fewer, larger batches, fewer fsyncs
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
        self.parse_key = is_true(props, "parse.key")
        self.key_separator = props.get("key.separator", "\t").encode()
        self.parse_headers = is_true(props, "parse.headers")
        self.headers_delimiter = props.get("headers.delimiter", "\t").encode()
        self.headers_separator = props.get("headers.separator", ",").encode()
        self.headers_key_separator = props.get("headers.key.separator", ":").encode()
        self.ignore_error = is_true(props, "ignore.error")
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
    """Sends parsed lines: keyless ones as one batch to the producer's sticky
    partition, keyed ones as a batch per partition by Kafka's partitioner (the
    library's), a mix record by record through the producer, in order. A record
    over the topic's max.message.bytes is reported and the others go on, as Kafka's
    console producer does."""

    def __init__(
        self, producer: AnyProducer, topic: str, partition: int | None
    ) -> None:
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
        self.sent = 0
        self.failed = 0

    def send_plain(self, lines: list[bytes], first_line: int) -> None:
        """Lines as values, no keys."""
        self._send_batch(_Lines(lines, None, None, first_line))

    def send_parsed(self, parsed: _Parsed, with_headers: bool, first_line: int) -> None:
        lines = _Lines(
            parsed.values,
            parsed.keys,
            parsed.headers if with_headers else None,
            first_line,
        )
        keyless = parsed.keys.count(None)
        if self.partition is not None or keyless == len(parsed.keys):
            self._send_batch(lines)
        elif not keyless:  # keys choose: a batch per partition
            self._send_by_key(lines)
        else:  # keyed and keyless lines: each through the producer, in order
            self._send_each(lines)

    def _send_by_key(self, lines: _Lines) -> None:
        """Every line keyed: one batch per partition, lines in order in each."""
        n, known = self.partitions, dict[bytes | None, int]()
        groups: dict[int, tuple[list[bytes | None], list[bytes | None], list[int]]] = {}
        assert lines.keys is not None
        for i, (key, value) in enumerate(zip(lines.keys, lines.values, strict=True)):
            p = known.get(key)
            if p is None:
                assert key is not None
                p = known[key] = partition_for_key(key, n)
            group = groups.get(p)
            if group is None:
                group = groups[p] = ([], [], [])
            group[0].append(value)
            group[1].append(key)
            group[2].append(i)
        headers = lines.headers
        for p, (values, keys, rows) in groups.items():
            picked = None if headers is None else [headers[i] for i in rows]
            # errors number lines from the chunk's first line
            self._send_batch(_Lines(values, keys, picked, lines.first_line), p)

    def _send_batch(self, lines: _Lines, partition: int | None = None) -> None:
        try:
            self.producer.send_batch(
                self.topic,
                lines.values,
                lines.keys,
                partition=self.partition if partition is None else partition,
                headers=lines.headers,
            )
            self.sent += len(lines.values)
        except RecordTooLarge:  # one alone is over the limit, and nothing went
            self._send_each(lines)

    def _send_each(self, lines: _Lines) -> None:
        for i, value in enumerate(lines.values):
            key = None if lines.keys is None else lines.keys[i]
            try:
                self.producer.send(
                    self.topic,
                    value,
                    key,
                    None if lines.headers is None else lines.headers[i],
                    self.partition,
                )
                self.sent += 1
            except RecordTooLarge as exc:
                self.failed += 1
                click.echo(
                    f"Error when sending line {lines.first_line + i} to topic "
                    f"{self.topic} with key: {_size(key)}, value: {_size(value)} "
                    f"with error: {exc}",
                    err=True,
                )
        self.producer.flush()


class _Lines(NamedTuple):
    """Records of consecutive lines, the first of them numbered first_line."""

    values: Sequence[bytes | None]
    keys: Sequence[bytes | None] | None
    headers: Sequence[list[Header]] | None
    first_line: int


def _size(data: bytes | None) -> str:
    """As Kafka's ErrorLoggingCallback tells a key or value: null or N bytes."""
    return "null" if data is None else f"{len(data)} bytes"


def produce_lines(
    producer: AnyProducer,
    topic: str,
    stream: IO[bytes],
    parser: _LineParser,
    partition: int | None = None,
    read_bytes: int = READ_BYTES,
    on_read: Callable[[int], None] | None = None,
) -> _LineSender:
    """Send every line of stream as a record; returns the sender, which counts
    what was sent and what failed. What is read (up to read_bytes) goes at once;
    then on_read gets its size (a progress bar)."""
    sender = _LineSender(producer, topic, partition)
    rest = b""
    line_number = 1
    for chunk in _chunks(stream, read_bytes):
        if on_read is not None:
            on_read(len(chunk))
        buffer = rest + chunk if rest else chunk
        lines, rest = _split_lines(buffer)
        if not lines:
            continue
        if parser.is_plain:
            sender.send_plain(lines, line_number)
        else:
            _send_parsed(sender, parser, lines, line_number)
        line_number += len(lines)
    if rest:  # a last line without its newline is a record too
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if parser.is_plain:
            sender.send_plain([rest], line_number)
        else:
            _send_parsed(sender, parser, [rest], line_number)
    return sender


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
        sender.send_parsed(parsed, parser.parse_headers, first_line)
    if parsed.error is not None:
        raise parsed.error


@click.command()
@target_options
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
    target: Target,
    topic: str,
    partition: int | None,
    properties: tuple[str, ...],
    acks: str,
) -> None:
    """Send stdin to a topic, one record per line (kafka-console-producer).

    The value is the line's bytes without its newline. A topic that does not exist
    is created if the broker allows it. A line over the topic's max.message.bytes
    is reported on stderr and the others are sent; the exit status is then 1."""
    parser = _LineParser(kafka_properties(properties, PRODUCE_PROPERTIES, "--property"))
    stdin = sys.stdin.buffer
    size = _file_size(stdin)  # a bar for a file: a pipe or a terminal has no end
    try:
        with (
            target.producer(acks=acks, client_id="console-producer") as p,
            progress_bar(
                f"producing to {topic}", size, "bytes", size is not None
            ) as read,
        ):
            read_bytes = DURABLE_READ_BYTES if p.durable else READ_BYTES
            sender = produce_lines(p, topic, stdin, parser, partition, read_bytes, read)
    except KeyboardInterrupt:
        sys.exit(130)  # what was read before Ctrl-C is sent
    if sender.failed:
        raise click.ClickException(
            f"{sender.failed} of {sender.sent + sender.failed} records not sent "
            f"(too large for topic {topic})"
        )


def _file_size(stream: IO[bytes]) -> int | None:
    """Bytes left in stream if it is a regular file (`< FILE`), else None: a pipe
    or a terminal has no end to show."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return max(0, st.st_size - os.lseek(fd, 0, os.SEEK_CUR))
