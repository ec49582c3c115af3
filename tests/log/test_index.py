"""Offset and time index behaviour: lookups against models, Kafka's bytes on disk,
reopening, torn tails, corruption, truncation, bad input and concurrent readers."""

from __future__ import annotations

import bisect
import logging
import stat
import struct
import sys
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shmbroker import ClosedError, CorruptError, InvalidArgument
from shmbroker.log.index import (
    INT32_MAX,
    INT64_MAX,
    NO_TIMESTAMP,
    WRITE_BUFFER_BYTES,
    OffsetIndex,
    OffsetPosition,
    TimeIndex,
    TimestampOffset,
)

# tmp_path is shared by all examples of a test, so each example takes a fresh subdir.
SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

bases = st.integers(0, INT64_MAX - INT32_MAX)


def strictly_increasing(lo, hi, size):
    return st.lists(st.integers(lo, hi), unique=True, min_size=size, max_size=size).map(
        sorted
    )


# (base offset, [(offset, position)]): both columns strictly increase.
offset_entries = st.tuples(bases, st.integers(0, 40)).flatmap(
    lambda b_n: st.tuples(
        st.just(b_n[0]),
        st.tuples(
            strictly_increasing(0, INT32_MAX, b_n[1]),
            strictly_increasing(0, INT32_MAX, b_n[1]),
        ).map(lambda c: [(b_n[0] + rel, pos) for rel, pos in zip(*c, strict=True)]),
    )
)

# (base offset, [(timestamp, offset)]): both columns strictly increase.
time_entries = st.tuples(bases, st.integers(0, 40)).flatmap(
    lambda b_n: st.tuples(
        st.just(b_n[0]),
        st.tuples(
            strictly_increasing(-(2**63), 2**63 - 1, b_n[1]),
            strictly_increasing(0, INT32_MAX, b_n[1]),
        ).map(lambda c: [(ts, b_n[0] + rel) for ts, rel in zip(*c, strict=True)]),
    )
)


def fresh_dir(tmp_path):
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    return d


def offset_index_path(directory, base):
    return directory / f"{base:020d}.index"


def time_index_path(directory, base):
    return directory / f"{base:020d}.timeindex"


def offset_model_lookup(base, entries, target):
    i = bisect.bisect_right([o for o, _ in entries], target)
    return entries[i - 1] if i else (base, 0)


def time_model_lookup(base, entries, target):
    qualifying = [e for e in entries if e[0] <= target]
    return max(qualifying) if qualifying else (NO_TIMESTAMP, base)


def around(values):
    """Every value, its neighbours, and the extremes: where lookups go wrong."""
    return sorted({v + d for v in values for d in (-1, 0, 1)} | {-(2**63), 2**63})


# --- lookups against models --------------------------------------------------------


@SETTINGS
@given(offset_entries, st.lists(st.integers(-(2**64), 2**64)))
def test_offset_lookup_returns_largest_offset_at_or_below_target(
    tmp_path, base_entries, extra_targets
):
    base, entries = base_entries
    with OffsetIndex.open(offset_index_path(fresh_dir(tmp_path), base), base) as index:
        for offset, position in entries:
            index.append(offset, position)
        for target in around([o for o, _ in entries] + [base]) + extra_targets:
            expected = offset_model_lookup(base, entries, target)
            assert index.lookup(target) == OffsetPosition(*expected), target


@SETTINGS
@given(time_entries, st.lists(st.integers(-(2**64), 2**64)))
def test_time_lookup_returns_largest_timestamp_at_or_below_target(
    tmp_path, base_entries, extra_targets
):
    base, entries = base_entries
    with TimeIndex.open(time_index_path(fresh_dir(tmp_path), base), base) as index:
        for timestamp, offset in entries:
            assert index.append(timestamp, offset) is True
        for target in around([t for t, _ in entries]) + extra_targets:
            expected = time_model_lookup(base, entries, target)
            assert index.lookup(target) == TimestampOffset(*expected), target


def test_empty_indexes_point_lookups_at_the_segment_start(tmp_path):
    with (
        OffsetIndex.open(offset_index_path(tmp_path, 50), 50) as offsets,
        TimeIndex.open(time_index_path(tmp_path, 50), 50) as times,
    ):
        assert offsets.entries == times.entries == 0
        assert offsets.lookup(10**6) == offsets.last_entry == (50, 0)
        assert times.lookup(10**6) == times.last_entry == (NO_TIMESTAMP, 50)


def test_time_lookup_starts_before_a_timestamp_reached_between_entries(tmp_path):
    """If the largest timestamp rose between two entries, then a search for it starts
    at the earlier entry: the first entry >= target would skip offset 1."""
    with TimeIndex.open(time_index_path(tmp_path, 0), 0) as index:
        index.append(10, 0)
        index.append(100, 3)  # offset 1 (timestamp 50) and 2 were not indexed
        assert index.lookup(50) == (10, 0)
        assert index.lookup(100) == (100, 3)
        assert index.lookup(9) == (NO_TIMESTAMP, 0)


# Batches of record timestamps, and whether the segment adds index entries after each.
segments = st.lists(
    st.tuples(st.lists(st.integers(0, 100), min_size=1, max_size=4), st.booleans()),
    min_size=1,
    max_size=30,
)


@SETTINGS
@given(bases, segments)
def test_time_lookup_offset_is_where_a_timestamp_search_must_start(
    tmp_path, base, batches
):
    """If the segment indexes (max timestamp so far, last offset of the batch that
    first reached it) as Kafka does, then scanning batches from the batch holding the
    looked-up offset finds the same first record >= target as a scan of everything."""
    records = []  # (offset, timestamp, batch number)
    with TimeIndex.open(time_index_path(fresh_dir(tmp_path), base), base) as index:
        max_timestamp, offset_of_max = None, None
        for number, (timestamps, indexed) in enumerate(batches):
            first = base + len(records)
            records += [(first + i, ts, number) for i, ts in enumerate(timestamps)]
            if max_timestamp is None or max(timestamps) > max_timestamp:
                max_timestamp, offset_of_max = max(timestamps), records[-1][0]
            if indexed:
                index.append(max_timestamp, offset_of_max)

        for target in range(-1, 102):
            everything = next((o for o, ts, _ in records if ts >= target), None)
            start = index.lookup(target).offset
            start_batch = records[start - base][2]
            found = next(
                (o for o, ts, b in records if b >= start_batch and ts >= target), None
            )
            assert found == everything, (target, start)


# --- bytes on disk, reopening, torn tails ------------------------------------------


def test_offset_index_bytes_are_kafkas_relative_offset_and_position(tmp_path):
    path = offset_index_path(tmp_path, 50)
    with OffsetIndex.open(path, 50) as index:
        index.append(50, 0)
        index.append(55, 4096)  # Kafka's example: base 50, offset 55 is stored as 5
        index.append(50 + INT32_MAX, INT32_MAX)
        index.flush()
        assert path.read_bytes() == (
            struct.pack(">ii", 0, 0)
            + struct.pack(">ii", 5, 4096)
            + struct.pack(">ii", INT32_MAX, INT32_MAX)
        )


def test_time_index_bytes_are_kafkas_timestamp_and_relative_offset(tmp_path):
    path = time_index_path(tmp_path, 50)
    with TimeIndex.open(path, 50) as index:
        index.append(-5, 50)
        index.append(1_700_000_000_000, 55)
        index.append(2**63 - 1, 50 + INT32_MAX)
        index.fsync()
        assert path.read_bytes() == (
            struct.pack(">qi", -5, 0)
            + struct.pack(">qi", 1_700_000_000_000, 5)
            + struct.pack(">qi", 2**63 - 1, INT32_MAX)
        )


def test_appends_beyond_the_write_buffer_reach_the_file_without_flush(tmp_path):
    path = offset_index_path(tmp_path, 0)
    count = WRITE_BUFFER_BYTES // 8 + 1
    with OffsetIndex.open(path, 0) as index:
        for i in range(count):
            index.append(i, i * 100)
        assert path.stat().st_size >= WRITE_BUFFER_BYTES
    assert path.stat().st_size == count * 8  # close flushed the rest


@SETTINGS
@given(offset_entries, time_entries)
def test_reopened_indexes_have_the_same_entries_and_lookups(
    tmp_path, offset_base_entries, time_base_entries
):
    directory = fresh_dir(tmp_path)
    base, entries = offset_base_entries
    path = offset_index_path(directory, base)
    with OffsetIndex.open(path, base) as index:
        for offset, position in entries:
            index.append(offset, position)
    with OffsetIndex.open(path, base) as index:
        assert index.entries == len(entries)
        assert path.stat().st_size == 8 * len(entries)
        assert index.sanity_check() is None
        assert index.last_entry == (entries[-1] if entries else (base, 0))
        for target in around([o for o, _ in entries] + [base]):
            assert index.lookup(target) == offset_model_lookup(base, entries, target)

    base, entries = time_base_entries
    path = time_index_path(directory, base)
    with TimeIndex.open(path, base) as index:
        for timestamp, offset in entries:
            index.append(timestamp, offset)
    with TimeIndex.open(path, base) as index:
        assert index.entries == len(entries)
        assert path.stat().st_size == 12 * len(entries)
        assert index.sanity_check() is None
        assert index.last_entry == (entries[-1] if entries else (NO_TIMESTAMP, base))
        for target in around([t for t, _ in entries]):
            assert index.lookup(target) == time_model_lookup(base, entries, target)


KINDS = {
    "offset": (OffsetIndex, offset_index_path, [(100, 0), (110, 4096), (120, 8192)]),
    "time": (TimeIndex, time_index_path, [(1000, 100), (2000, 110), (3000, 120)]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_file_cut_inside_the_last_entry_reopens_with_whole_entries_only(
    tmp_path, caplog, kind
):
    cls, make_path, entries = KINDS[kind]
    path = make_path(tmp_path, 100)
    with cls.open(path, 100) as index:
        for entry in entries:
            index.append(*entry)
    whole = path.read_bytes()
    size = len(whole) // len(entries)
    for cut in range(1, size):
        path.write_bytes(whole[: 2 * size + cut])
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="shmbroker.log.index"),
            cls.open(path, 100) as index,
        ):
            assert index.entries == 2
            assert index.last_entry == entries[1]
            assert index.lookup(10**6) == entries[1]
            index.append(*entries[2])  # lands right after the whole entries
        assert path.read_bytes() == whole
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        assert str(path) in record.getMessage()
        assert f"dropped {cut} trailing bytes" in record.getMessage()


def test_index_files_are_created_owner_only(tmp_path):
    for cls, make_path, _ in KINDS.values():
        path = make_path(tmp_path, 0)
        cls.open(path, 0).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- sanity_check ------------------------------------------------------------------


def test_sanity_check_names_the_offset_index_entry_out_of_order(tmp_path):
    path = offset_index_path(tmp_path, 100)
    path.write_bytes(
        b"".join(struct.pack(">ii", *e) for e in [(0, 0), (5, 10), (3, 20)])
    )
    with (
        OffsetIndex.open(path, 100) as index,
        pytest.raises(
            CorruptError,
            match=rf"{path}: entry 2 \(relative offset 3, position 20\) does not "
            rf"increase on entry 1 \(relative offset 5, position 10\)",
        ),
    ):
        index.sanity_check()


def test_sanity_check_catches_an_offset_index_position_going_backwards(tmp_path):
    path = offset_index_path(tmp_path, 0)
    path.write_bytes(b"".join(struct.pack(">ii", *e) for e in [(0, 50), (1, 40)]))
    with (
        OffsetIndex.open(path, 0) as index,
        pytest.raises(
            CorruptError, match=r"entry 1 \(relative offset 1, position 40\)"
        ),
    ):
        index.sanity_check()


def test_sanity_check_catches_a_zero_filled_tail(tmp_path):
    """If a crash left zeros after the entries (a preallocated Kafka file), then the
    first zero entry fails the check."""
    path = time_index_path(tmp_path, 0)
    path.write_bytes(struct.pack(">qi", 1000, 7) + bytes(24))
    with (
        TimeIndex.open(path, 0) as index,
        pytest.raises(
            CorruptError, match=r"entry 1 \(timestamp 0, relative offset 0\)"
        ),
    ):
        index.sanity_check()


@pytest.mark.parametrize(
    ("cls", "make_path", "entry"),
    [
        (OffsetIndex, offset_index_path, struct.pack(">ii", -1, 0)),
        (TimeIndex, time_index_path, struct.pack(">qi", 5, -1)),
    ],
)
def test_sanity_check_catches_a_negative_relative_offset(
    tmp_path, cls, make_path, entry
):
    path = make_path(tmp_path, 100)
    path.write_bytes(entry)
    with (
        cls.open(path, 100) as index,
        pytest.raises(
            CorruptError, match=rf"{path}: entry 0 .* negative relative offset"
        ),
    ):
        index.sanity_check()


def test_sanity_check_catches_time_index_timestamps_out_of_order(tmp_path):
    path = time_index_path(tmp_path, 0)
    path.write_bytes(struct.pack(">qi", 2000, 1) + struct.pack(">qi", 1000, 2))
    with (
        TimeIndex.open(path, 0) as index,
        pytest.raises(
            CorruptError,
            match=r"entry 1 \(timestamp 1000, relative offset 2\) does not increase "
            r"on entry 0 \(timestamp 2000, relative offset 1\)",
        ),
    ):
        index.sanity_check()


# --- truncate_to -------------------------------------------------------------------


@SETTINGS
@given(offset_entries, time_entries, st.data())
def test_truncate_to_keeps_exactly_the_entries_below_the_offset(
    tmp_path, offset_base_entries, time_base_entries, data
):
    directory = fresh_dir(tmp_path)
    for cls, make_path, (base, entries), offset_of, model_lookup, on_disk in [
        (
            OffsetIndex,
            offset_index_path,
            offset_base_entries,
            0,
            offset_model_lookup,
            lambda base, o, p: struct.pack(">ii", o - base, p),
        ),
        (
            TimeIndex,
            time_index_path,
            time_base_entries,
            1,
            time_model_lookup,
            lambda base, t, o: struct.pack(">qi", t, o - base),
        ),
    ]:
        offsets = [e[offset_of] for e in entries]
        # Cuts at, next to and far from the entries; two in a row, in either order.
        cuts = data.draw(
            st.lists(
                st.sampled_from(around([*offsets, base])) | st.integers(0, 2**64),
                min_size=1,
                max_size=2,
            )
        )
        kept = [e for e in entries if e[offset_of] < min(cuts)]
        path = make_path(directory, base)
        with cls.open(path, base) as index:
            for entry in entries:
                index.append(*entry)
            for cut in cuts:
                index.truncate_to(cut)
            assert index.entries == len(kept)
        with cls.open(path, base) as index:
            assert index.entries == len(kept)
            assert path.read_bytes() == b"".join(on_disk(base, *e) for e in kept)
            # The key (offset or timestamp) comes first in both kinds of entry.
            for target in around([e[0] for e in kept]):
                assert index.lookup(target) == model_lookup(base, kept, target)


@pytest.mark.parametrize("kind", KINDS)
def test_truncate_to_drops_entries_at_and_above_the_offset(tmp_path, kind):
    cls, make_path, entries = KINDS[kind]  # offsets 100, 110, 120
    path = make_path(tmp_path, 100)
    with cls.open(path, 100) as index:
        for entry in entries:
            index.append(*entry)
        index.truncate_to(121)
        assert index.entries == 3
        index.truncate_to(110)
        assert index.entries == 1
        assert index.last_entry == entries[0]
        assert index.lookup(10**6) == entries[0]
        index.append(*entries[1])  # the writer carries on after recovery
    with cls.open(path, 100) as index:
        assert index.entries == 2
        assert index.last_entry == entries[1]
        index.truncate_to(0)
        assert index.entries == 0
    assert path.stat().st_size == 0


# --- bad input, closing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "position", "match"),
    [
        (
            110,
            5000,
            r"entry \(offset 110, position 5000\) does not increase on the "
            r"last entry \(offset 110, position 4096\)",
        ),
        (109, 5000, r"offset 109.* does not increase"),
        (111, 4096, r"position 4096\) does not increase"),
        (111, 4000, r"position 4000\) does not increase"),
        (
            99,
            5000,
            r"offset 99, .* does not fit: offset must be in \[100, 2147483747\]",
        ),
        (100 + 2**31, 5000, r"does not fit"),
        (111, 2**31, r"does not fit: .* position in \[0, 2147483647\]"),
        (111, -1, r"does not fit"),
    ],
)
def test_offset_index_rejects_appends_that_break_its_order(
    tmp_path, offset, position, match
):
    with OffsetIndex.open(offset_index_path(tmp_path, 100), 100) as index:
        index.append(110, 4096)
        with pytest.raises(InvalidArgument, match=match):
            index.append(offset, position)
        assert index.entries == 1
        assert index.last_entry == (110, 4096)


def test_time_index_skips_an_unchanged_timestamp(tmp_path):
    path = time_index_path(tmp_path, 100)
    with TimeIndex.open(path, 100) as index:
        assert index.append(5000, 110) is True
        assert index.append(5000, 120) is False
        assert index.entries == 1
        assert index.lookup(6000) == (5000, 110)
        index.flush()
        assert path.stat().st_size == 12


@pytest.mark.parametrize(
    ("timestamp", "offset", "match"),
    [
        (
            4999,
            120,
            r"entry \(timestamp 4999, offset 120\) after the last entry "
            r"\(timestamp 5000, offset 110\)",
        ),
        (5000, 109, r"timestamp 5000, offset 109"),
        (6000, 110, r"timestamp 6000, offset 110"),
        (6000, 99, r"does not fit"),
        (6000, 100 + 2**31, r"does not fit"),
        (2**63, 120, r"does not fit: .* timestamp an int64"),
    ],
)
def test_time_index_rejects_appends_that_break_its_order(
    tmp_path, timestamp, offset, match
):
    with TimeIndex.open(time_index_path(tmp_path, 100), 100) as index:
        index.append(5000, 110)
        with pytest.raises(InvalidArgument, match=match):
            index.append(timestamp, offset)
        assert index.entries == 1


def test_offsets_past_int64_are_rejected_near_the_top_base_offset(tmp_path):
    base = INT64_MAX - 10
    with OffsetIndex.open(offset_index_path(tmp_path, base), base) as index:
        index.append(INT64_MAX, 0)
        assert index.lookup(INT64_MAX) == (INT64_MAX, 0)
        with pytest.raises(InvalidArgument, match=r"offset must be in \[.*\]"):
            index.append(INT64_MAX + 1, 10)


@pytest.mark.parametrize("base", [-1, 2**63])
def test_open_rejects_a_base_offset_outside_int64(tmp_path, base):
    path = tmp_path / "x.index"
    with pytest.raises(InvalidArgument, match=rf"base offset {base} is not in"):
        OffsetIndex.open(path, base)
    assert not path.exists()


def test_closed_index_refuses_writes_but_still_answers_lookups(tmp_path):
    path = offset_index_path(tmp_path, 0)
    with OffsetIndex.open(path, 0) as index:
        index.append(5, 100)
    index.close()  # closing twice is fine
    for write in (lambda: index.append(6, 200), index.flush, index.fsync):
        with pytest.raises(ClosedError, match=rf"offset index {path}: it is closed"):
            write()
    with pytest.raises(ClosedError, match="cannot truncate"):
        index.truncate_to(0)
    assert index.lookup(7) == (5, 100)
    assert path.read_bytes() == struct.pack(">ii", 5, 100)


# --- one writer, concurrent readers ------------------------------------------------


def test_lookups_concurrent_with_appends_and_truncations_see_whole_entries(tmp_path):
    """If the spill thread appends and truncates while readers look up, then every
    answer is an entry that was appended (position = 8 * relative offset)."""
    base = 1000
    failures, lookups = [], [0]
    done = threading.Event()
    old_interval = sys.getswitchinterval()
    index = OffsetIndex.open(offset_index_path(tmp_path, base), base)

    def reader():
        target = base
        while not done.is_set():
            target = base + (target * 7919) % 4000
            try:
                offset, position = index.lookup(target)
            except Exception as exc:
                failures.append(repr(exc))
                return
            lookups[0] += 1
            if position != 8 * (offset - base) or offset > target:
                failures.append((target, offset, position))
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    sys.setswitchinterval(1e-6)  # switch threads often, to interleave the two sides
    try:
        for t in threads:
            t.start()
        for rnd in range(20):
            for rel in range(index.last_entry.offset - base + 1, 4000, 3):
                index.append(base + rel, 8 * rel)
            index.truncate_to(base + 1000 + rnd * 100)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
        sys.setswitchinterval(old_interval)
        index.close()
    assert not [t for t in threads if t.is_alive()], "reader threads did not stop"
    assert not failures
    assert lookups[0] > 0
