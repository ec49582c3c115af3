"""Deep verification of a partition's segment files, as Kafka's `kafka-dump-log
--deep-iteration` over a whole log: every batch's length, CRC32C and records, offsets
dense within and across segments, every offset and time index entry. Each problem
comes with the repair it suggests. Read-only: safe while a broker runs, except that
the newest segment's last batch may be caught mid-write then (run it again)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from shmbroker import _native, errors, protocol
from shmbroker.log.segment import LOG_SUFFIX, LogSegment

POSITION, BYTES, BASE_OFFSET = _native.POSITION, _native.BYTES, _native.BASE_OFFSET
LAST_OFFSET, MAX_TIMESTAMP = _native.LAST_OFFSET, _native.MAX_TIMESTAMP
RESTART = "stop the broker and start it again: recovery"


class Problem(msgspec.Struct, frozen=True):
    file: str
    position: int  # byte position in the file, or -1
    message: str
    repair: str


class PartitionReport(msgspec.Struct):
    directory: str
    segments: int = 0
    batches: int = 0
    records: int = 0
    problems: list[Problem] = msgspec.field(default_factory=list)


def verify_data_dir(
    directory: str | os.PathLike[str], topics: Sequence[str] = ()
) -> list[PartitionReport]:
    """Every partition of the data directory's topics (or of these), as its
    registry lists them; ShmbrokerError names a topic it does not have."""
    directory = Path(directory)
    registry = protocol.load_registry(directory)
    for name in topics:
        if name not in registry.topics:
            raise errors.ShmbrokerError(f"topic {name!r} does not exist in {directory}")
    return [
        verify_partition(directory / f"{name}-{p}")
        for name, entry in sorted(registry.topics.items())
        if not topics or name in topics
        for p in range(entry.partitions)
        if (directory / f"{name}-{p}").is_dir()
    ]


def verify_partition(directory: Path) -> PartitionReport:
    report = PartitionReport(str(directory))
    bases = sorted(
        int(name[: -len(LOG_SUFFIX)])
        for name in os.listdir(directory)
        if name.endswith(LOG_SUFFIX)
    )
    expected: int | None = None  # the next segment's first offset
    for base in bases:
        segment = LogSegment(directory, base, readonly=True)
        try:
            expected = _verify_segment(segment, expected, report)
        finally:
            segment.close()
        report.segments += 1
    return report


def _verify_segment(
    segment: LogSegment, expected: int | None, report: PartitionReport
) -> int:
    """Check one segment; returns the offset the next segment must start at."""
    name = str(segment.path)
    problems = report.problems
    if expected is not None and segment.base_offset != expected:
        kind = "missing" if segment.base_offset > expected else "duplicated"
        problems.append(
            Problem(
                name,
                -1,
                f"offsets {min(expected, segment.base_offset)}.."
                f"{max(expected, segment.base_offset) - 1} are {kind}: the segment "
                f"before ends at {expected}, this one begins at {segment.base_offset}",
                "restore the segment files from a backup; otherwise readers stop "
                "there with an error",
            )
        )
    next_offset, end, boundaries = segment.base_offset, 0, {}
    for row in segment.batches(0, verify=True):
        if row[BASE_OFFSET] != next_offset:
            problems.append(
                Problem(
                    name,
                    row[POSITION],
                    f"a batch of offsets {row[BASE_OFFSET]}..{row[LAST_OFFSET]} "
                    f"where offset {next_offset} was due",
                    f"{RESTART} cuts the segment here, dropping what follows",
                )
            )
            break
        boundaries[row[POSITION]] = row
        report.batches += 1
        report.records += row[LAST_OFFSET] - row[BASE_OFFSET] + 1
        next_offset, end = row[LAST_OFFSET] + 1, row[POSITION] + row[BYTES]
    else:
        if end < segment.size:
            why = (
                "a batch whose CRC or records are bad"
                if segment.scan_stop < 0
                else "a partial batch (a torn write)"
            )
            problems.append(
                Problem(
                    name,
                    end,
                    f"{why}; {segment.size - end} bytes from here to the end are "
                    f"not readable",
                    f"{RESTART} cuts the segment here; offsets from {next_offset} on "
                    f"in this segment are lost unless the ring still holds them",
                )
            )
    _verify_indexes(segment, boundaries, problems)
    return next_offset


def _verify_indexes(
    segment: LogSegment, boundaries: dict[int, list[int]], problems: list[Problem]
) -> None:
    repair = "delete the index files; the next start rebuilds them from the log"
    for entry in segment.offset_index.all_entries():
        row = boundaries.get(entry.position)
        if row is None or row[LAST_OFFSET] != entry.offset:
            problems.append(
                Problem(
                    str(segment.offset_index.path),
                    -1,
                    f"entry (offset {entry.offset}, position {entry.position}) "
                    f"points at no batch ending at that offset",
                    repair,
                )
            )
            break
    last_offsets = {row[LAST_OFFSET]: row for row in boundaries.values()}
    for entry in segment.time_index.all_entries():
        row = last_offsets.get(entry.offset)
        if row is None or row[MAX_TIMESTAMP] != entry.timestamp:
            problems.append(
                Problem(
                    str(segment.time_index.path),
                    -1,
                    f"entry (timestamp {entry.timestamp}, offset {entry.offset}) "
                    f"matches no batch ending at that offset with that largest "
                    f"timestamp",
                    repair,
                )
            )
            break
