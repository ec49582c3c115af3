"""shmbroker dump-log (tools/dump_log.py), Kafka's DumpLogSegments for our
segments: run on real segment files written by a PartitionLog, checked against
kafka-python's decoder."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shmbroker import shm
from shmbroker.config import TopicConfig
from shmbroker.log import dump as dump_log
from shmbroker.log.partition import PartitionLog
from tests.native.kafka_python import DefaultRecordBatch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "dump_log.py"
T0 = 1_700_000_000_000  # CreateTime of the first batch; batch i has T0 + i
BATCHES = 40  # of 5 records each, then one batch of 2 with a key and headers
CONFIG = TopicConfig(
    ring_bytes=1 << 16,
    segment_bytes=1 << 17,
    index_interval_bytes=1024,
    segment_ms=100 * 365 * 86_400_000,  # old timestamps must not roll segments
)
LOG, INDEX, TIME_INDEX = (
    "00000000000000000000.log",
    "00000000000000000000.index",
    "00000000000000000000.timeindex",
)


@pytest.fixture
def segment(tmp_path: Path, ring_name: str) -> Path:
    """A partition directory with one segment: 41 batches, 202 records, and
    offset and time index entries every ~1 KiB."""
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, ring_name, CONFIG, topic="t", partition=0)
    try:
        for i in range(BATCHES):
            values = [b"%08d" % (i * 5 + j) for j in range(5)]
            log.ring.append_batch(values, timestamp=T0 + i, timeout=10)
        log.ring.append_batch(
            [b"hello", None],
            [b"k", None],
            timestamp=T0 + 100,
            headers=[[("h1", b"x"), ("h2", None)], []],
            timeout=10,
        )
        while log.spill(0):
            pass
        assert len(log.segments()) == 1
    finally:
        log.close()
        shm.unlink(ring_name)
    return directory


def run(
    capsys: pytest.CaptureFixture[str], *argv: object
) -> tuple[int, list[str], list[str]]:
    """main(argv) -> (exit code, stdout lines, stderr lines)."""
    code = dump_log.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+): (\S+)", line))


def kafka_batches(path: Path) -> list[tuple[int, Any, int]]:
    """(position, DefaultRecordBatch, size) of each whole batch, by kafka-python."""
    data, position = path.read_bytes(), 0
    out: list[tuple[int, Any, int]] = []
    while position + 12 <= len(data):
        size = int.from_bytes(data[position + 8 : position + 12], "big") + 12
        if position + size > len(data):
            break
        out.append(
            (position, DefaultRecordBatch(data[position : position + size]), size)
        )
        position += size
    return out


def flip_bit(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(data)


def test_batch_lines_match_the_segment(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--files", segment / LOG)
    assert (code, err) == (0, [])
    assert out[:2] == [f"Dumping {segment / LOG}", "Log starting offset: 0"]
    expected = kafka_batches(segment / LOG)
    assert len(out) - 2 == len(expected) == BATCHES + 1
    for line, (position, batch, size) in zip(out[2:], expected, strict=True):
        assert fields(line) == {
            "baseOffset": str(batch.base_offset),
            "lastOffset": str(batch.base_offset + batch.last_offset_delta),
            "count": str(batch.records_count),
            "baseSequence": "-1",
            "lastSequence": "-1",
            "producerId": "-1",
            "producerEpoch": "-1",
            "partitionLeaderEpoch": "0",
            "isTransactional": "false",
            "isControl": "false",
            "deleteHorizonMs": "OptionalLong.empty",
            "position": str(position),
            "CreateTime": str(batch.max_timestamp),
            "size": str(size),
            "magic": "2",
            "compresscodec": "none",
            "crc": str(batch.crc),
            "isvalid": "true",
        }
    assert out[2].startswith("baseOffset: 0 lastOffset: 4 count: 5 baseSequence: -1")
    assert f"position: 0 CreateTime: {T0} size: " in out[2]


def test_print_data_log_shows_every_record_with_keys_and_headers(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--files", segment / LOG, "--print-data-log")
    records = [line for line in out if line.startswith("| ")]
    assert code == 0
    assert len(records) == BATCHES * 5 + 2
    assert records[0] == (
        f"| offset: 0 CreateTime: {T0} keySize: -1 valueSize: 8 sequence: -1 "
        "headerKeys: [] payload: 00000000"
    )
    for i, line in enumerate(records[: BATCHES * 5]):
        assert line.startswith(f"| offset: {i} CreateTime: {T0 + i // 5} ")
        assert line.endswith(f" payload: {i:08d}")
    assert records[-2:] == [
        f"| offset: 200 CreateTime: {T0 + 100} keySize: 1 valueSize: 5 sequence: -1 "
        "headerKeys: [h1,h2] key: k payload: hello",
        f"| offset: 201 CreateTime: {T0 + 100} keySize: -1 valueSize: -1 sequence: -1 "
        "headerKeys: []",
    ]


def test_deep_iteration_prints_record_metadata_without_payloads(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--files", segment / LOG, "--deep-iteration")
    records = [line for line in out if line.startswith("| ")]
    assert code == 0
    assert len(records) == BATCHES * 5 + 2
    assert not [line for line in records if "payload" in line or "key:" in line]


def test_a_flipped_byte_makes_that_batch_invalid_and_exits_1(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = kafka_batches(segment / LOG)[1]
    flip_bit(segment / LOG, second[0] + second[2] - 3)  # in its last record's value
    code, out, _ = run(capsys, "--files", segment / LOG)
    valid = [fields(line)["isvalid"] for line in out[2:]]
    assert code == 1
    assert valid == ["true", "false"] + ["true"] * (BATCHES - 1)


def test_a_torn_tail_is_reported_as_invalid_trailing_bytes(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = (segment / LOG).stat().st_size
    last_size = kafka_batches(segment / LOG)[-1][2]
    os.truncate(segment / LOG, size - 30)
    code, out, _ = run(capsys, "--files", segment / LOG)
    assert code == 1
    assert len([line for line in out if line.startswith("baseOffset")]) == BATCHES
    assert out[-1] == f"Found {last_size - 30} invalid bytes at the end of {LOG}"


def test_a_corrupt_batch_length_stops_the_walk_and_says_where(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    third = kafka_batches(segment / LOG)[2][0]
    data = bytearray((segment / LOG).read_bytes())
    data[third + 8 : third + 12] = (5).to_bytes(4, "big")
    (segment / LOG).write_bytes(data)
    code, out, err = run(capsys, "--files", segment / LOG)
    assert code == 1
    assert len([line for line in out if line.startswith("baseOffset")]) == 2
    assert out[-1] == f"Found {len(data) - third} invalid bytes at the end of {LOG}"
    assert err == [
        f"{segment / LOG}: no valid batch at position {third} (batchLength 5, "
        "magic 2): the batches after it cannot be found"
    ]


def test_max_bytes_reads_only_the_whole_batches_within_it(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = [size for _, _, size in kafka_batches(segment / LOG)]
    limit = sizes[0] + sizes[1] + sizes[2] // 2
    code, out, _ = run(capsys, "--files", segment / LOG, "--max-bytes", limit)
    assert code == 0  # the window ending inside a batch is not a problem
    assert [fields(line)["baseOffset"] for line in out[2:]] == ["0", "5"]


def index_entries(path: Path) -> list[tuple[int, int]]:
    return [(o, p) for o, p in struct.iter_unpack(">ii", path.read_bytes())]


def test_index_entries_are_printed_and_match_the_log(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--files", f"{segment / INDEX},{segment / TIME_INDEX}")
    entries = index_entries(segment / INDEX)
    time_entries = list(struct.iter_unpack(">qi", (segment / TIME_INDEX).read_bytes()))
    assert len(entries) >= 4
    assert (code, err) == (0, [])
    assert out == [
        f"Dumping {segment / INDEX}",
        *(f"offset: {o} position: {p}" for o, p in entries),
        f"Dumping {segment / TIME_INDEX}",
        *(f"timestamp: {t} offset: {o}" for t, o in time_entries),
    ]
    starts = {position for position, _, _ in kafka_batches(segment / LOG)}
    assert all(position in starts for _, position in entries)


def test_a_corrupt_index_entry_is_reported_as_a_mismatch(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = index_entries(segment / INDEX)
    (offset0, position0), (offset1, _) = entries[0], entries[1]
    data = bytearray((segment / INDEX).read_bytes())
    data[12:16] = position0.to_bytes(4, "big")  # entry 1 points at entry 0's batch
    (segment / INDEX).write_bytes(data)
    code, out, err = run(capsys, "--files", segment / INDEX, "--verify-index-only")
    assert code == 1
    assert out == [f"Dumping {segment / INDEX}"]  # only the problems, on stderr
    assert err == [
        f"Mismatches in :{segment / INDEX}",
        f"  Index offset: {offset1}, log offset: {offset0}",
    ]


def test_a_corrupt_time_index_timestamp_is_reported(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = segment / TIME_INDEX
    timestamp, _ = struct.unpack_from(">qi", path.read_bytes(), 12)
    data = bytearray(path.read_bytes())
    data[12:20] = (timestamp + 7).to_bytes(8, "big")
    path.write_bytes(data)
    code, _, err = run(capsys, "--files", path, "--verify-index-only")
    assert code == 1
    assert err == [
        f"Found timestamp mismatch in :{path}",
        f"  Index timestamp: {timestamp + 7}, log timestamp: {timestamp}",
    ]


def test_index_sanity_check_passes_and_fails_like_the_broker(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index, time_index = segment / INDEX, segment / TIME_INDEX
    code, out, _ = run(
        capsys, "--files", f"{index},{time_index}", "--index-sanity-check"
    )
    assert code == 0
    assert out == [
        f"Dumping {index}",
        f"{index} passed sanity check.",
        f"Dumping {time_index}",
        f"{time_index} passed sanity check.",
    ]
    data = bytearray(index.read_bytes())
    data[8:16] = data[0:8]  # entry 1 repeats entry 0: offsets no longer increase
    index.write_bytes(data)
    code, out, _ = run(capsys, "--files", index, "--index-sanity-check")
    assert code == 1
    assert out[1].startswith(f"{index} failed sanity check: offset index {index}: ")
    assert "does not increase" in out[1]


def test_a_torn_index_entry_is_reported_and_no_file_is_changed(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(segment / INDEX, "ab") as f:
        f.write(b"\x00\x00\x01")
    before = {p.name: p.read_bytes() for p in segment.iterdir()}
    code, out, _ = run(capsys, "--files", segment / INDEX)
    assert code == 1
    assert out[-1] == f"Found 3 invalid bytes at the end of {INDEX}"
    for flags in ([], ["--index-sanity-check"], ["--print-data-log"]):
        run(capsys, "--files", f"{segment / LOG},{segment / INDEX}", *flags)
    assert {p.name: p.read_bytes() for p in segment.iterdir()} == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --files"),
        (["--files"], "argument --files: expected one argument"),
        (["--files", "{dir}/00000000000000000099.log"], "No such file or directory"),
        (["--files", "{dir}/recovery-point-offset-checkpoint"], "not a .log, .index"),
        (["--files", "{dir}/" + LOG, "--max-bytes", "0"], "must be positive, not 0"),
        (["--files", "{dir}/" + LOG, "--max-bytes", "ten"], "not an integer: 'ten'"),
        (["--files", "{dir}/" + LOG, "--no-such-flag"], "unrecognized arguments"),
        (["--files", "{dir}/" + LOG + ","], "--files has an empty file name"),
        (["--files", "{dir}"], "not a .log, .index"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    segment: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.format(dir=segment) for a in argv]
    code, out, err = run(capsys, *argv)
    assert (code, out, len(err)) == (2, [], 1)
    assert err[0].startswith("dump-log: error: ")
    assert message in err[0]


def test_an_index_without_its_log_is_a_usage_error(
    segment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (segment / LOG).unlink()
    code, out, err = run(capsys, "--files", segment / INDEX)
    assert (code, out) == (2, [])
    assert err == [f"dump-log: error: {segment / LOG}: No such file or directory"]


def test_the_script_runs_on_its_own(segment: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL), "--files", str(segment / LOG), "--print-data-log"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"Dumping {segment / LOG}"
    assert lines[-1].endswith("headerKeys: []")
    assert "key: k payload: hello" in lines[-2]


def test_help_exits_0_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--help")
    assert (code, err) == (0, [])
    assert out[0].startswith("usage: dump-log [-h] --files FILE1,FILE2,...")
