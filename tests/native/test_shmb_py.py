"""csrc/shmb_py.c. The producer's BatchBuilder: records encoded one call each must
make the batch kafka-python's independent decoder reads back, timestamps as the
module says, and the per-record call must refuse what it must leave to the caller.
build_records: Records of a decode, headers included, as kafka-python reads them,
and a bad row refused, never read past the buffer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmbroker import _native
from shmbroker.records import Record, build_records
from tests.native.kafka_python import DefaultRecordBatch

HEADER = _native.BATCH_HEADER_BYTES

records = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=40),  # value
        st.none() | st.binary(max_size=20),  # key
        st.none() | st.integers(0, 2**41),  # timestamp
        st.lists(
            st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)),
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=30,
)


def sealed(builder: Any) -> bytes:
    view = builder.seal()
    try:
        return bytes(view)
    finally:
        view.release()


def kafka_read(batch: bytes) -> list[Any]:
    kb = DefaultRecordBatch(batch)
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in kb]


@settings(deadline=None)
@given(records)
def test_built_batch_reads_back_through_kafka_python(recs: list[Any]) -> None:
    """If records go in one call each, then kafka-python reads each back with its
    fields; a record sent without a timestamp reads back as the base timestamp (the
    first given one if it came first, else the clock) or, once that is fixed, the
    clock when it came."""
    b = _native.BatchBuilder(10_000, 1 << 20, 1 << 20)
    before = int(time.time() * 1000)
    for i, (value, key, ts, headers) in enumerate(recs):
        assert b.append(value, key, ts, headers or None) == i
    batch = sealed(b)
    after = int(time.time() * 1000)
    assert _native.batch_validate(batch) == len(recs)
    got = kafka_read(batch)
    assert [(o, k, v, h) for o, _, k, v, h in got] == [
        (i, key, value, [(hk, hv) for hk, hv in headers])
        for i, (value, key, _, headers) in enumerate(recs)
    ]
    for (_, stamp, *_), (_, _, ts, _) in zip(got, recs, strict=True):
        if ts is not None:
            assert stamp == ts
        else:  # the clock, some time between the first append and the seal
            assert before - 1 <= stamp <= after + 1


def test_records_without_timestamps_are_stamped_when_sealed() -> None:
    b = _native.BatchBuilder(10, 1 << 20, 1 << 20)
    b.append(b"a")
    b.append(b"b")
    time.sleep(0.02)  # not a synchronisation: a gap the stamps must show
    at_seal = int(time.time() * 1000)
    stamps = [r[1] for r in kafka_read(sealed(b))]
    assert stamps[0] == stamps[1] >= at_seal - 1


def test_append_value_leaves_first_and_filling_records_to_the_caller() -> None:
    b = _native.BatchBuilder(3, 1 << 20, 1 << 20)
    assert b.append_value(b"x") is None  # a batch starts: the caller times linger
    assert b.append(b"x") == 0
    assert b.append_value(b"y") == 1
    assert b.append_value(b"z") is None  # it would fill the batch: the caller flushes
    assert b.append_value(bytearray(b"z")) is None  # not bytes: the slow way
    small = _native.BatchBuilder(100, 30, 1 << 20)
    small.append(b"a")
    assert small.append_value(b"v" * 20) is None  # over batch_bytes
    assert len(small) == 1


def test_a_sealed_batch_takes_no_record_until_cleared_or_unsealed() -> None:
    b = _native.BatchBuilder(100, 1 << 20, 1 << 20, None, "first")
    b.append(b"a")
    b.append(b"b")
    view = b.seal()
    assert b.append(b"c") == -1
    assert b.append_value(b"c") is None
    view.release()
    b.unseal()
    assert b.append_value(b"c") == 2
    sealed(b)
    b.clear("second")
    assert (len(b), b.records_bytes, b.token) == (0, 0, "second")


def test_a_full_batch_refuses_the_record_and_drop_last_takes_one_back() -> None:
    b = _native.BatchBuilder(100, 1 << 20, 100)
    b.append(b"v" * 40)
    b.append(b"v" * 40)
    assert b.append(b"v" * 40) == -1  # over limit_bytes: into the next batch
    assert len(b) == 2
    b.drop_last()
    assert [r[3] for r in kafka_read(sealed(b))] == [b"v" * 40]
    alone = _native.BatchBuilder(100, 1 << 20, 100)
    assert alone.append(b"v" * 500) == 0  # alone it is taken: the caller decides
    assert alone.records_bytes > 100


def test_append_value_makes_the_future_of_its_type_and_token() -> None:
    b = _native.BatchBuilder(100, 1 << 20, 1 << 20, lambda t, i: (t, i), "batch-1")
    b.append(b"a")
    assert b.append_value(b"b") == ("batch-1", 1)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"v", "key"), TypeError),
        ((b"v", None, None, [("k",)]), TypeError),
        ((b"v", None, None, [(1, b"v")]), TypeError),
        ((b"v", None, "now"), TypeError),
        ((b"v", None, None, [("h", b"")] * 65), ValueError),
    ],
)
def test_bad_fields_raise_and_add_nothing(args: tuple[Any, ...], error: type) -> None:
    b = _native.BatchBuilder(100, 1 << 20, 1 << 20)
    with pytest.raises(error):
        b.append(*args)
    assert (len(b), b.records_bytes) == (0, 0)


def test_build_records_makes_the_records_of_a_decode_and_refuses_bad_rows() -> None:
    batch = _native.batch_encode(
        _native.RecordArrays([b"a", None, b"ccc"], [None, b"k", b""], timestamp=9)
    )
    decoded = _native.Decoded()
    decoded.decode(batch, 0, len(batch))
    rows = decoded.rows_buffer()
    assert _native.build_records(batch, rows, 3, "t", 2, Record) == [
        Record("t", 2, 0, 9, None, b"a"),
        Record("t", 2, 1, 9, b"k", None),
        Record("t", 2, 2, 9, b"", b"ccc"),
    ]
    with pytest.raises(ValueError, match="row 0 is not a record in 5 bytes"):
        _native.build_records(batch[:5], rows, 1, "t", 2, Record)  # past the end
    with pytest.raises(ValueError, match="4096 rows"):
        _native.build_records(batch, rows[:64], 4096, "t", 2, Record)


@settings(deadline=None)
@given(records)
def test_build_records_reads_headers_as_kafka_python(recs: list[Any]) -> None:
    """If a batch holds records with and without headers (null header values, empty
    and repeated keys, non-ASCII keys), then build_records makes each Record with
    the fields and headers kafka-python's decoder reads."""
    b = _native.BatchBuilder(10_000, 1 << 20, 1 << 20)
    for value, key, ts, headers in recs:
        b.append(value, key, ts, headers or None)
    batch = sealed(b)
    decoded = _native.Decoded(4, 2)  # small: the decode grows its arrays
    decoded.decode(batch, 0, len(batch))
    got = build_records(decoded, batch, "t", 1)
    assert [
        (r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in got
    ] == kafka_read(batch)


def test_build_records_refuses_header_rows_outside_the_buffer() -> None:
    b = _native.BatchBuilder(100, 1 << 20, 1 << 20)
    b.append(b"v", None, 5, [("k", b"hv"), ("k2", None)])
    batch = sealed(b)
    decoded = _native.Decoded()
    decoded.decode(batch, 0, len(batch))
    rows, headers = decoded.rows_buffer(), decoded.header_rows_buffer()
    assert _native.build_records(batch, rows, 1, "t", 0, Record, headers, 2) == [
        Record("t", 0, 0, 5, None, b"v", (("k", b"hv"), ("k2", None)))
    ]
    with pytest.raises(ValueError, match="row 0 is not a record"):  # 1 of its 2
        _native.build_records(batch, rows, 1, "t", 0, Record, headers, 1)
    with pytest.raises(ValueError, match="header row 0 is not a header"):
        _native.build_records(batch[:-8], rows, 1, "t", 0, Record, headers, 2)


def test_extend_encodes_a_list_in_one_call() -> None:
    b = _native.BatchBuilder(2**31 - 1, 2**62, 2**62)
    assert b.extend([b"a", None, b"c"], [b"k", None, None], 77) == 3
    assert [(o, ts, k, v) for o, ts, k, v, _ in kafka_read(sealed(b))] == [
        (0, 77, b"k", b"a"),
        (1, 77, None, None),
        (2, 77, None, b"c"),
    ]
    b.clear(None)
    with pytest.raises(ValueError, match="1 keys for 2 values"):
        b.extend([b"a", b"b"], [b"k"])
    small = _native.BatchBuilder(100, 1 << 20, 60)  # a record of 20 B takes 27
    assert small.extend([b"v" * 20] * 5) == 2  # the third is over limit_bytes
