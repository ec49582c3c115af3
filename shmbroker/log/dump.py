"""Segment files printed and checked as Kafka's DumpLogSegments (kafka-dump-log.sh).

    python tools/dump_log.py --files F1[,F2...] [--print-data-log] [--deep-iteration]
        [--verify-index-only] [--index-sanity-check] [--max-bytes N]

A `.log` prints one line per batch (CRC checked: `isvalid`), with --deep-iteration one
`| offset: ...` line per record, and with --print-data-log its key and payload too; a
torn or corrupt tail shows as "Found N invalid bytes at the end of ...". An `.index` or
`.timeindex` prints its entries and checks each one against its segment's `.log`.
Problems go to stderr at the end, in Kafka's words. Every file is only read, never
written: LogSegment and OffsetIndex.open open read-write (and create or cut files).
Exit status: 0 clean, 1 problems found, 2 usage error (one line on stderr).

Where the output differs from Kafka's, on purpose:
- isvalid is batch_validate with records: false also for a batch whose CRC matches but
  whose header or records are malformed (Kafka checks the CRC only).
- A batch whose length or magic cannot be right ends the walk with a line on stderr
  and counts as invalid trailing bytes (Kafka throws CorruptRecordException).
- Non-consecutive offsets are checked between batches without --deep-iteration too
  (Kafka checks records only), and are listed in file order (Kafka: reversed).
- The records of control batches and of compressed batches are not decoded: one
  `| ...` line says so instead (we never write either).
- An offset index entry whose position starts no batch reports `log offset: -1`, and
  index entries are all checked (Kafka stops at a zeroed entry: its files are
  preallocated, ours are not). The time index check compares the batch header's max
  timestamp (Kafka takes the max over the records) and finds batches by scanning the
  log, not through the .index.
- An unknown file type, a missing file or an index without its .log is a usage error
  (Kafka skips unknown files). A torn index tail is reported like a log's.
- Not supported: decoders (--key/value-decoder-class, --offsets-decoder, ...),
  --max-message-size, --skip-record-metadata, .snapshot and .txnindex files.
"""

from __future__ import annotations

import argparse
import os
import stat
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, NoReturn, TextIO, TypeVar

from shmbroker import _native
from shmbroker.errors import CorruptError, InvalidArgument, ShmbrokerError
from shmbroker.log.index import NO_TIMESTAMP, OffsetIndex, TimeIndex
from shmbroker.records import build_records

PROG = "dump-log"
LOG_SUFFIX = ".log"
INDEX_SUFFIX, TIME_INDEX_SUFFIX = OffsetIndex.SUFFIX, TimeIndex.SUFFIX
SCAN_CHUNK_BYTES = 1 << 20
F = _native.SCAN_FIELDS
INT32_MAX = 2**31 - 1


class BatchHeader(NamedTuple):
    """The 61-byte RecordBatch v2 header, for the fields a scan row does not hold."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int


HEADER = struct.Struct(">qiibIhiqqqhii")  # BatchHeader's fields, big-endian
if HEADER.size != _native.BATCH_HEADER_BYTES:
    raise ImportError(f"batch header struct is {HEADER.size} bytes, not 61")
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
LOG_APPEND_TIME, TRANSACTIONAL, CONTROL, DELETE_HORIZON = 0x08, 0x10, 0x20, 0x40


class UsageError(Exception):
    """A bad argument or file: one line on stderr, exit 2."""


class Batch(NamedTuple):
    position: int
    size: int
    base_offset: int
    last_offset: int
    max_timestamp: int
    records: int
    data: bytes


class LogFile:
    """The whole batches of a .log file up to `end`, read-only.

    After batches() is exhausted, `valid_bytes` is where the last whole batch ends and
    `corrupt` says why the walk stopped early at a batch that cannot be read, if it
    did (a partial batch at the end only leaves valid_bytes short)."""

    def __init__(self, path: Path, end: int | None = None) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.end = self.size if end is None else min(end, self.size)
        self.valid_bytes = 0
        self.corrupt: str | None = None

    def batches(self) -> Iterator[Batch]:
        scan = _native.Scan()
        with open(self.path, "rb") as f:
            fd = f.fileno()
            position = 0
            while position < self.end:
                chunk = os.pread(
                    fd, min(SCAN_CHUNK_BYTES, self.end - position), position
                )
                rows = scan.scan(chunk, 0, len(chunk))
                yield from self._batches(rows, chunk, position)
                consumed, stop = scan.bytes_consumed, scan.stop
                if stop == _native.SCAN_PARTIAL and consumed == 0 and len(chunk) >= 12:
                    # a batch larger than the chunk: read it whole
                    total = int.from_bytes(chunk[8:12], "big") + 12
                    if len(chunk) < total <= self.end - position:
                        whole = os.pread(fd, total, position)
                        rows = scan.scan(whole, 0, len(whole))
                        if rows:
                            yield from self._batches(rows, whole, position)
                            position += total
                            continue
                        stop = scan.stop
                if stop < 0:
                    self.corrupt = self._why_corrupt(fd, position + consumed)
                    return
                if stop == _native.SCAN_PARTIAL and consumed == 0:
                    return
                position += consumed

    def _batches(self, rows: list[int], buf: bytes, at: int) -> Iterator[Batch]:
        for i in range(0, len(rows), F):
            pos, size, base, last, max_ts, count = rows[i : i + F]
            self.valid_bytes = at + pos + size
            yield Batch(
                at + pos, size, base, last, max_ts, count, buf[pos : pos + size]
            )

    def _why_corrupt(self, fd: int, position: int) -> str:
        head = os.pread(fd, 17, position)
        length, magic = int.from_bytes(head[8:12], "big", signed=True), head[16]
        return (
            f"{self.path}: no valid batch at position {position} (batchLength "
            f"{length}, magic {magic}): the batches after it cannot be found"
        )


@dataclass
class Problems:
    """What the checks found, printed to stderr at the end as Kafka does."""

    index_mismatches: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    time_mismatches: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    out_of_order: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    not_found: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    non_consecutive: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    other: bool = False  # a problem already printed (CRC, trailing bytes, sanity)

    def add(
        self, kind: dict[str, list[tuple[int, int]]], path: Path, pair: tuple[int, int]
    ) -> None:
        kind.setdefault(str(path.absolute()), []).append(pair)

    def found(self) -> bool:
        return self.other or any(
            (
                self.index_mismatches,
                self.time_mismatches,
                self.out_of_order,
                self.not_found,
                self.non_consecutive,
            )
        )

    def print(self, err: TextIO) -> None:
        for name, pairs in self.index_mismatches.items():
            print(f"Mismatches in :{name}", file=err)
            for index_offset, log_offset in pairs:
                print(
                    f"  Index offset: {index_offset}, log offset: {log_offset}",
                    file=err,
                )
        for name, pairs in self.time_mismatches.items():
            print(f"Found timestamp mismatch in :{name}", file=err)
            for index_ts, log_ts in pairs:
                print(
                    f"  Index timestamp: {index_ts}, log timestamp: {log_ts}", file=err
                )
        for name, pairs in self.out_of_order.items():
            print(f"Found out of order timestamp in :{name}", file=err)
            for ts, prev in pairs:
                print(
                    f"  Index timestamp: {ts}, Previously indexed timestamp: {prev}",
                    file=err,
                )
        for pairs in self.not_found.values():
            print("The following indexed offsets are not found in the log.", file=err)
            for index_offset, log_offset in pairs:
                print(
                    f"Indexed offset: {index_offset}, found log offset: {log_offset}",
                    file=err,
                )
        for name, pairs in self.non_consecutive.items():
            print(f"Non-consecutive offsets in {name}", file=err)
            for first, second in pairs:
                print(f"  {first} is followed by {second}", file=err)


# ---- .log ---------------------------------------------------------------------------


def increment_sequence(sequence: int, increment: int) -> int:
    """Kafka's DefaultRecordBatch.incrementSequence: sequences wrap at INT32_MAX."""
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def batch_line(batch: Batch) -> tuple[str, bool, BatchHeader]:
    """Kafka's printBatchLevel line, isvalid, and the header."""
    h = BatchHeader._make(HEADER.unpack_from(batch.data))
    attributes, base_sequence = h.attributes, h.base_sequence
    try:
        _native.batch_validate(batch.data, records=True)
        is_valid = True
    except ShmbrokerError:
        is_valid = False
    last_sequence = (
        -1
        if base_sequence == -1
        else increment_sequence(base_sequence, h.last_offset_delta)
    )
    horizon = (
        f"OptionalLong[{h.base_timestamp}]"
        if attributes & DELETE_HORIZON
        else "OptionalLong.empty"
    )
    ts_type = timestamp_type(attributes)
    codec = attributes & 7
    line = (
        f"baseOffset: {batch.base_offset} lastOffset: {batch.last_offset} "
        f"count: {batch.records} baseSequence: {base_sequence} "
        f"lastSequence: {last_sequence} producerId: {h.producer_id} "
        f"producerEpoch: {h.producer_epoch} "
        f"partitionLeaderEpoch: {h.partition_leader_epoch} "
        f"isTransactional: {str(bool(attributes & TRANSACTIONAL)).lower()} "
        f"isControl: {str(bool(attributes & CONTROL)).lower()} "
        f"deleteHorizonMs: {horizon} position: {batch.position} "
        f"{ts_type}: {batch.max_timestamp} size: {batch.size} magic: {h.magic} "
        f"compresscodec: {CODECS[codec] if codec < len(CODECS) else codec} "
        f"crc: {h.crc} isvalid: {str(is_valid).lower()}"
    )
    return line, is_valid, h


def timestamp_type(attributes: int) -> str:
    return "LogAppendTime" if attributes & LOG_APPEND_TIME else "CreateTime"


def text(data: bytes) -> str:
    """Kafka's StringDecoder: UTF-8, with U+FFFD for bytes that are not."""
    return data.decode("utf-8", errors="replace")


def record_lines(
    batch: Batch, header: BatchHeader, print_data: bool, decoded: _native.Decoded
) -> Iterator[tuple[int, str]]:
    """(offset, Kafka's `| offset: ...` line) for each record of the batch; offset -1
    for a line that stands for records not decoded."""
    attributes, base_sequence = header.attributes, header.base_sequence
    ts_type = timestamp_type(attributes)
    if attributes & CONTROL:
        yield -1, "| control batch: records not decoded"
        return
    try:
        decoded.decode(batch.data, 0, len(batch.data))
    except InvalidArgument:  # compressed: the C codec reads only uncompressed batches
        yield -1, f"| {CODECS[attributes & 7]} batch: records not decoded"
        return
    for r in build_records(decoded, batch.data, "", -1):
        sequence = (
            -1
            if base_sequence == -1
            else increment_sequence(base_sequence, r.offset - batch.base_offset)
        )
        line = (
            f"| offset: {r.offset} {ts_type}: {r.timestamp} "
            f"keySize: {-1 if r.key is None else len(r.key)} "
            f"valueSize: {-1 if r.value is None else len(r.value)} "
            f"sequence: {sequence} headerKeys: [{','.join(k for k, _ in r.headers)}]"
        )
        if print_data:
            if r.key is not None:
                line += f" key: {text(r.key)}"
            if r.value is not None:
                line += f" payload: {text(r.value)}"
        yield r.offset, line


def dump_log(
    path: Path,
    args: argparse.Namespace,
    problems: Problems,
    out: TextIO,
    err: TextIO,
) -> None:
    print(f"Log starting offset: {base_offset_of(path)}", file=out)
    deep = args.deep_iteration or args.print_data_log
    log = LogFile(path, args.max_bytes)
    decoded = _native.Decoded()
    last_offset = -1  # the previous record's (deep) or batch's offset; -1: none yet
    for batch in log.batches():
        line, is_valid, header = batch_line(batch)
        print(line, file=out)
        problems.other |= not is_valid
        if not deep:
            if last_offset != -1 and batch.base_offset != last_offset + 1:
                problems.add(
                    problems.non_consecutive, path, (last_offset, batch.base_offset)
                )
            last_offset = batch.last_offset
            continue
        try:
            for offset, record in record_lines(
                batch, header, args.print_data_log, decoded
            ):
                if offset == -1:  # records not decoded: go on from the batch's end
                    offset = batch.last_offset
                elif last_offset != -1 and offset != last_offset + 1:
                    problems.add(problems.non_consecutive, path, (last_offset, offset))
                last_offset = offset
                print(record, file=out)
        except CorruptError as exc:
            print(f"| records not decoded: {exc}", file=out)
            problems.other = True
            last_offset = batch.last_offset
    if log.corrupt is not None:
        print(log.corrupt, file=err)
        problems.other = True
    trailing = log.end - log.valid_bytes
    # With --max-bytes the window may end inside a batch: only a real corruption counts.
    if trailing > 0 and (args.max_bytes is None or log.corrupt is not None):
        print(f"Found {trailing} invalid bytes at the end of {path.name}", file=out)
        problems.other = True


# ---- .index and .timeindex ----------------------------------------------------------

_IndexT = TypeVar("_IndexT", OffsetIndex, TimeIndex)


def open_index(
    cls: type[_IndexT], path: Path
) -> tuple[_IndexT, list[tuple[int, int]], int]:
    """The index opened read-only, its entries as absolute (offset, position) or
    (timestamp, offset) pairs, and the bytes of a torn last entry.

    Uses the index's private entry size and columns: index.py has no read-only open
    and no way to list entries (Kafka's entry(n)); until it does, this is the one
    place that knows them."""
    base = base_offset_of(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(fd, "rb", closefd=False) as f:
            data = f.read()
        torn = len(data) % cls._ENTRY.size
        index = cls(str(path), base, fd, data[: len(data) - torn])
    except BaseException:
        os.close(fd)
        raise
    keys, values = index._columns
    if cls is OffsetIndex:
        entries = [(base + k, v) for k, v in zip(keys, values, strict=True)]
    else:
        entries = [(k, base + v) for k, v in zip(keys, values, strict=True)]
    return index, entries, torn


def sanity_check(index: OffsetIndex | TimeIndex, path: Path, out: TextIO) -> bool:
    try:
        index.sanity_check()
    except CorruptError as exc:
        print(f"{path} failed sanity check: {exc}", file=out)
        return False
    print(f"{path} passed sanity check.", file=out)
    return True


def report_torn(path: Path, torn: int, problems: Problems, out: TextIO) -> None:
    if torn:
        print(f"Found {torn} invalid bytes at the end of {path.name}", file=out)
        problems.other = True


def log_batches(path: Path) -> list[Batch]:
    """The batches of the index's segment, whole file, without their bytes."""
    log = LogFile(path.with_name(path.name.split(".")[0] + LOG_SUFFIX))
    return [b._replace(data=b"") for b in log.batches()]


def dump_index(
    path: Path, args: argparse.Namespace, problems: Problems, out: TextIO
) -> None:
    index, entries, torn = open_index(OffsetIndex, path)
    with index:
        if not entries:
            print(f"{path} is empty.", file=out)
            report_torn(path, torn, problems, out)
            return
        if args.index_sanity_check:
            problems.other |= not sanity_check(index, path, out)
            report_torn(path, torn, problems, out)
            return
    starts = {b.position: b for b in log_batches(path)}
    for offset, position in entries:
        batch = starts.get(position)
        log_offset = -1 if batch is None else batch.last_offset
        if log_offset != offset:
            problems.add(problems.index_mismatches, path, (offset, log_offset))
        if not args.verify_index_only:
            print(f"offset: {offset} position: {position}", file=out)
    report_torn(path, torn, problems, out)


def dump_time_index(
    path: Path, args: argparse.Namespace, problems: Problems, out: TextIO
) -> None:
    index, entries, torn = open_index(TimeIndex, path)
    with index:
        if args.index_sanity_check:
            problems.other |= not sanity_check(index, path, out)
            report_torn(path, torn, problems, out)
            return
    batches = log_batches(path)
    by_last = {b.last_offset: b for b in batches}
    previous = NO_TIMESTAMP
    for timestamp, offset in entries:
        batch = by_last.get(offset)
        if batch is None:  # Kafka's answer: the first batch reaching past the offset
            later = (b.last_offset for b in batches if b.last_offset >= offset)
            problems.add(problems.not_found, path, (offset, next(later, -1)))
        else:
            if batch.max_timestamp != timestamp:
                problems.add(
                    problems.time_mismatches, path, (timestamp, batch.max_timestamp)
                )
            if previous >= timestamp:
                problems.add(problems.out_of_order, path, (timestamp, previous))
        if not args.verify_index_only:
            print(f"timestamp: {timestamp} offset: {offset}", file=out)
        previous = timestamp
    report_torn(path, torn, problems, out)


# ---- command line -------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {n}")
    return n


def parser() -> Parser:
    p = Parser(
        prog=PROG,
        description="Print and check segment files (.log, .index, .timeindex), "
        "like Kafka's kafka-dump-log.sh.",
    )
    p.add_argument(
        "--files",
        required=True,
        metavar="FILE1,FILE2,...",
        help="REQUIRED: comma-separated .log, .index and .timeindex files",
    )
    p.add_argument(
        "--print-data-log",
        action="store_true",
        help="print each record's key and payload (implies --deep-iteration)",
    )
    p.add_argument(
        "--deep-iteration", action="store_true", help="print each record's metadata"
    )
    p.add_argument(
        "--verify-index-only",
        action="store_true",
        help="check index entries against the .log without printing them",
    )
    p.add_argument(
        "--index-sanity-check",
        action="store_true",
        help="only run the check the broker runs at startup on each index",
    )
    p.add_argument(
        "--max-bytes",
        type=positive_int,
        metavar="N",
        help="read only the batches within the first N bytes of each .log",
    )
    return p


def base_offset_of(path: Path) -> int:
    return int(path.name.split(".")[0])


def check_file(name: str, args: argparse.Namespace) -> Path:
    """The path of a file we can dump, or UsageError naming what is wrong."""
    if not name:
        raise UsageError("--files has an empty file name")
    path = Path(name)
    suffix = path.name[path.name.rfind(".") :] if "." in path.name else ""
    if suffix not in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        raise UsageError(f"{name}: not a .log, .index or .timeindex file")
    if not path.name.split(".")[0].isdigit():
        raise UsageError(f"{name}: the name must start with the base offset (digits)")
    needed = [path]
    if suffix != LOG_SUFFIX and not args.index_sanity_check:
        needed.append(path.with_name(path.name.split(".")[0] + LOG_SUFFIX))
    for p in needed:
        try:
            st = p.stat()
        except OSError as exc:
            raise UsageError(f"{p}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{p}: not a regular file")
        if not os.access(p, os.R_OK):
            raise UsageError(f"{p}: permission denied")
    return path


def main(argv: list[str] | None = None) -> int:
    """Dump the files; 0 if all is well, 1 if problems were found, 2 on bad usage."""
    out, err = sys.stdout, sys.stderr
    try:
        args = parser().parse_args(argv)
        paths = [check_file(name, args) for name in args.files.split(",")]
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    problems = Problems()
    for path in paths:
        print(f"Dumping {path}", file=out)
        try:
            if path.suffix == LOG_SUFFIX:
                dump_log(path, args, problems, out, err)
            elif path.suffix == INDEX_SUFFIX:
                dump_index(path, args, problems, out)
            else:
                dump_time_index(path, args, problems, out)
        except OSError as exc:
            print(f"{PROG}: reading {path}: {exc}", file=err)
            problems.other = True
    out.flush()
    problems.print(err)
    return 1 if problems.found() else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head` closed the pipe: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
