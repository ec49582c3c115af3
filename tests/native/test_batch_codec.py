"""RecordBatch v2 codec (shmb_batch.c) checked against kafka-python's independent codec.

Our encoder's batches must read back through kafka-python's DefaultRecordBatch, and
batches built by kafka-python's DefaultRecordBatchBuilder must decode through our
Decoded; the error cases corrupt one field at a time and re-seal the CRC where the
test means to reach a check behind it.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmbroker import _native
from shmbroker.errors import CorruptError, InvalidArgument
from tests.native.kafka_python import DefaultRecordBatch, DefaultRecordBatchBuilder
from tests.native.kafka_python import crc as kafka_crc32c

# Batch header offsets (Kafka's DefaultRecordBatch; shmb_layout.h SHMB_BATCH_OFF_*).
OFF_BASE_OFFSET = 0
OFF_LENGTH = 8
OFF_MAGIC = 16
OFF_CRC = 17
OFF_ATTRIBUTES = 21
OFF_LAST_OFFSET_DELTA = 23
OFF_RECORD_COUNT = 57
HEADER_BYTES = 61
ATTR_GZIP = 0x01
ATTR_LOG_APPEND_TIME = 0x08
ATTR_CONTROL = 0x20

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# timestampDelta is a varlong from the first record's timestamp: keep every timestamp
# of a batch within this window of the first, so the delta cannot overflow int64
TS_WINDOW = 2**40

Record = tuple[
    int, int, "bytes | None", "bytes | None", list[tuple[str, "bytes | None"]]
]

keys = st.none() | st.binary(max_size=40)
values = st.none() | st.binary(max_size=120)
headers = st.lists(
    st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=20)), max_size=3
)
records = st.lists(st.tuples(keys, values, headers), min_size=1, max_size=200)
base_offsets = st.integers(0, INT64_MAX - 1000)
# first timestamp anywhere in int64 (but not INT64_MIN, which means "now")
first_timestamps = st.integers(INT64_MIN + TS_WINDOW + 1, INT64_MAX - TS_WINDOW)
timestamp_deltas = st.integers(-TS_WINDOW, TS_WINDOW)


@st.composite
def timestamped_records(draw: Any) -> tuple[list[Any], list[int]]:
    recs = draw(records)
    first = draw(first_timestamps)
    deltas = draw(
        st.lists(timestamp_deltas, min_size=len(recs) - 1, max_size=len(recs) - 1)
    )
    return recs, [first, *(first + d for d in deltas)]


def encode(recs: list[Any], timestamps: list[int], base_offset: int = 0) -> bytes:
    arrays = _native.RecordArrays(
        values=[v for _, v, _ in recs],
        keys=[k for k, _, _ in recs],
        timestamps=timestamps,
        headers=[h for _, _, h in recs],
    )
    return _native.batch_encode(arrays, base_offset)


def simple_batch(
    n: int = 3,
    base_offset: int = 0,
    timestamp: int = 1_700_000_000_000,
    tag: bytes = b"v",
) -> bytes:
    arrays = _native.RecordArrays(
        values=[tag + b"%d" % i for i in range(n)],
        keys=[b"k%d" % i for i in range(n)],
        timestamp=timestamp,
        headers=[[("h", b"x%d" % i)] for i in range(n)],
    )
    return _native.batch_encode(arrays, base_offset)


def reseal(batch: bytes | bytearray) -> bytes:
    """Recompute the CRC (kafka-python's CRC32C) after editing covered bytes."""
    b = bytearray(batch)
    struct.pack_into(">I", b, OFF_CRC, kafka_crc32c(bytes(b[OFF_ATTRIBUTES:])))
    return bytes(b)


def with_attributes(batch: bytes, attributes: int) -> bytes:
    b = bytearray(batch)
    struct.pack_into(">h", b, OFF_ATTRIBUTES, attributes)
    return reseal(b)


def kafka_read(batch: bytes) -> list[Record]:
    kb = DefaultRecordBatch(batch)
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in kb]


def native_read(
    buf: bytes, decoded: _native.Decoded | None = None, verify_crc: bool = False
) -> list[Record]:
    d = decoded if decoded is not None else _native.Decoded()
    n = d.decode(buf, 0, len(buf), verify_crc=verify_crc)
    rows, hrows = d.record_rows(), d.header_rows()
    assert len(rows) == n * _native.RECORD_FIELDS

    def cut(pos: int, end: int) -> bytes | None:
        assert (pos < 0) == (end < 0), "a null has pos = end = -1"
        return None if end < 0 else buf[pos:end]

    out: list[Record] = []
    h = 0
    for i in range(n):
        offset, ts, kp, ke, vp, ve, hcount, first = rows[8 * i : 8 * i + 8]
        assert first == h
        hs = []
        for _ in range(hcount):
            hkey = cut(hrows[4 * h], hrows[4 * h + 1])
            assert hkey is not None, "header keys are non-null strings"
            hs.append((hkey.decode(), cut(hrows[4 * h + 2], hrows[4 * h + 3])))
            h += 1
        out.append((offset, ts, cut(kp, ke), cut(vp, ve), hs))
    assert h * _native.HEADER_FIELDS == len(hrows)
    assert d.null_keys == sum(r[2] is None for r in out)
    assert d.null_values == sum(r[3] is None for r in out)
    return out


def expected(recs: list[Any], timestamps: list[int], base_offset: int) -> list[Record]:
    return [
        (base_offset + i, ts, k, v, list(h))
        for i, ((k, v, h), ts) in enumerate(zip(recs, timestamps, strict=True))
    ]


def kafka_build(
    recs: list[Any],
    timestamps: list[int],
    base_offset: int = 0,
    compression_type: int = 0,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression_type,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, ((k, v, h), ts) in enumerate(zip(recs, timestamps, strict=True)):
        assert builder.append(i, timestamp=ts, key=k, value=v, headers=h) is not None
    batch = bytearray(builder.build())
    # the broker assigns the base offset; it is outside the CRC
    struct.pack_into(">q", batch, OFF_BASE_OFFSET, base_offset)
    return bytes(batch)


# ---- our encoder, kafka-python's decoder ---------------------------------------------


@settings(deadline=None)
@given(timestamped_records(), base_offsets)
def test_encoded_batch_reads_back_through_kafka_python(
    data: Any, base_offset: int
) -> None:
    recs, timestamps = data
    batch = encode(recs, timestamps, base_offset)
    kb = DefaultRecordBatch(batch)
    assert kb.validate_crc()
    assert (kb.magic, kb.compression_type, kb.timestamp_type) == (2, 0, 0)
    assert kb.base_offset == base_offset
    assert kb.records_count == len(recs)
    assert kb.last_offset_delta == len(recs) - 1
    assert kb.size_in_bytes == len(batch)
    assert kb.first_timestamp == timestamps[0]
    assert kb.max_timestamp == max(timestamps)
    assert (kb.producer_id, kb.producer_epoch, kb.base_sequence) == (-1, -1, -1)
    assert not kb.is_transactional
    assert not kb.is_control_batch
    assert kafka_read(batch) == expected(recs, timestamps, base_offset)


@settings(deadline=None)
@given(timestamped_records(), base_offsets)
def test_encoded_batch_decodes_and_validates_natively(
    data: Any, base_offset: int
) -> None:
    recs, timestamps = data
    batch = encode(recs, timestamps, base_offset)
    assert _native.batch_validate(batch, records=True) == len(recs)
    assert _native.batch_validate(batch, records=False) == len(recs)
    assert native_read(batch, verify_crc=True) == expected(
        recs, timestamps, base_offset
    )


@settings(deadline=None)
@given(st.integers(1, 200), st.integers(INT64_MIN + 1, INT64_MAX))
def test_single_timestamp_applies_to_every_record(n: int, timestamp: int) -> None:
    arrays = _native.RecordArrays(values=[b"v"] * n, timestamp=timestamp)
    batch = _native.batch_encode(arrays, 7)
    assert [r[1] for r in kafka_read(batch)] == [timestamp] * n
    assert DefaultRecordBatch(batch).max_timestamp == timestamp


def test_default_timestamp_now_is_the_wall_clock() -> None:
    before = time.time_ns() // 1_000_000
    batch = _native.batch_encode(_native.RecordArrays(values=[b"a", b"b"]))
    after = time.time_ns() // 1_000_000
    stamps = [r[1] for r in kafka_read(batch)]
    assert stamps[0] == stamps[1]
    assert before <= stamps[0] <= after


def test_timestamp_now_among_per_record_timestamps_is_the_wall_clock() -> None:
    """If a per-record timestamp is TIMESTAMP_NOW, then that record gets the wall
    clock, as with the single `timestamp`, and the others keep theirs."""
    now = _native.TIMESTAMP_NOW
    before = time.time_ns() // 1_000_000
    arrays = _native.RecordArrays(values=[b"a", b"b", b"c"], timestamps=[now, 5, now])
    batch = _native.batch_encode(arrays)
    after = time.time_ns() // 1_000_000
    stamps = [r[1] for r in kafka_read(batch)]
    assert stamps[1] == 5
    assert before <= stamps[0] <= after, f"record 0 timestamp {stamps[0]}"
    assert before <= stamps[2] <= after, f"record 2 timestamp {stamps[2]}"
    assert DefaultRecordBatch(batch).max_timestamp == max(stamps)


def test_batch_timed_relative_to_now_is_always_valid() -> None:
    """If the first timestamp is TIMESTAMP_NOW and a later one is fixed, then the batch
    is valid even when the clock ticks during encoding: the sizing pass and the writing
    pass must use the same "now" (a delta of 64 needs 2 varint bytes, 63 needs 1)."""
    corrupt = []
    for i in range(300_000):  # the clock ticks between the passes ~1 in 2,000 tries
        later = time.time_ns() // 1_000_000 + 64
        arrays = _native.RecordArrays(
            [b"a", b"b"], timestamps=[_native.TIMESTAMP_NOW, later]
        )
        try:
            _native.batch_validate(_native.batch_encode(arrays))
        except (CorruptError, InvalidArgument) as exc:
            corrupt.append((i, later, str(exc)))
    assert not corrupt, f"{len(corrupt)} bad batches, first: {corrupt[:3]}"


def test_null_key_round_trips_through_kafka_python() -> None:
    batch = encode([(None, b"v", [])], [5])
    assert kafka_read(batch) == [(0, 5, None, b"v", [])]


def test_keys_omitted_encode_as_null_keys() -> None:
    batch = _native.batch_encode(_native.RecordArrays(values=[b"a", b"b"], timestamp=1))
    assert [r[2] for r in kafka_read(batch)] == [None, None]


def test_null_value_and_empty_bytes_stay_distinct() -> None:
    recs = [
        (b"", None, []),
        (None, b"", []),
        (b"", b"", [("", b"")]),
        (None, None, [("n", None)]),
    ]
    batch = encode(recs, [1, 2, 3, 4])
    want = expected(recs, [1, 2, 3, 4], 0)
    assert kafka_read(batch) == want
    assert native_read(batch) == want


@pytest.mark.parametrize(
    "ts",
    [
        [-TS_WINDOW, -1, -TS_WINDOW - 7],
        [INT64_MIN + 1, INT64_MIN + 3, INT64_MIN + 2],
        [INT64_MAX, INT64_MAX - TS_WINDOW, INT64_MAX - 1],
    ],
)
def test_extreme_timestamps_round_trip(ts: list[int]) -> None:
    recs: list[Any] = [(None, b"a", []), (None, b"b", []), (None, b"c", [])]
    batch = encode(recs, ts)
    assert [r[1] for r in kafka_read(batch)] == ts
    assert [r[1] for r in native_read(batch)] == ts
    assert DefaultRecordBatch(batch).max_timestamp == max(ts)


def test_non_ascii_header_keys_round_trip_as_utf8() -> None:
    recs = [(b"k", b"v", [("ключ", b"1"), ("鍵", None), ("🔑", b"")])]
    batch = encode(recs, [0])
    assert kafka_read(batch) == expected(recs, [0], 0)
    assert native_read(batch) == expected(recs, [0], 0)


# ---- kafka-python's encoder, our decoder ---------------------------------------------


@settings(deadline=None)
@given(timestamped_records(), base_offsets)
def test_kafka_python_batch_decodes_natively(data: Any, base_offset: int) -> None:
    recs, timestamps = data
    batch = kafka_build(recs, timestamps, base_offset)
    assert _native.batch_validate(batch, records=True) == len(recs)
    assert native_read(batch, verify_crc=True) == expected(
        recs, timestamps, base_offset
    )


def columns_read(data: bytes, min_offset: int = -1) -> list[Any]:
    """shmb_batches_columns' view of the batches, as native_read's tuples without
    headers (offset, timestamp, key, value)."""
    columns = _native.Columns(4096, min_offset)
    columns.decode(data, 0, len(data), verify_crc=True)
    assert columns.bytes_consumed == len(data)
    col = columns.column

    def cell(pos: int, n: int) -> bytes | None:
        return None if n < 0 else data[pos : pos + n]

    keys = [cell(p, n) for p, n in zip(col("key_pos"), col("key_lens"), strict=True)]
    values = [
        cell(p, n) for p, n in zip(col("value_pos"), col("value_lens"), strict=True)
    ]
    rows = zip(col("offsets"), col("timestamps"), keys, values, strict=True)
    return [list(row) for row in rows]


@settings(deadline=None)
@given(timestamped_records(), base_offsets, st.integers(0, 30))
def test_columns_hold_what_kafka_pythons_batches_hold(
    data: Any, base_offset: int, skip: int
) -> None:
    """If a kafka-python batch (twice in a row) is decoded into columns from an
    offset inside it, then each column holds what kafka-python wrote from there."""
    recs, timestamps = data
    batch = kafka_build(recs, timestamps, base_offset)
    more = kafka_build(recs, timestamps, base_offset + len(recs))
    want = [
        [offset, ts, key, value]
        for offset, ts, key, value, _ in (
            expected(recs, timestamps, base_offset)
            + expected(recs, timestamps, base_offset + len(recs))
        )
    ]
    assert columns_read(batch + more, base_offset + skip) == want[skip:]


def test_columns_carry_arrow_views_and_validity_bits() -> None:
    batch = encode(
        [(None, b"short", []), (b"k", None, []), (None, b"x" * 20, [])], [5] * 3
    )
    columns = _native.Columns(3)
    assert columns.decode(batch, 0, len(batch), verify_crc=True) == 3
    views = columns.column("value_views").tobytes()
    assert views[:16] == struct.pack("<i", 5) + b"short" + bytes(7)  # inline
    assert views[16:32] == bytes(16)  # a null: length 0
    at = batch.index(b"x" * 20)
    assert views[32:48] == struct.pack("<i4sii", 20, b"xxxx", 0, at)  # buffer 0, at
    assert columns.column("value_valid").tolist() == [0b101]
    assert columns.column("key_valid").tolist() == [0b010]
    assert (columns.null_keys, columns.null_values) == (2, 1)


def test_log_append_time_batch_gives_every_record_the_max_timestamp() -> None:
    recs: list[Any] = [(None, b"a", []), (None, b"b", []), (None, b"c", [])]
    batch = with_attributes(encode(recs, [10, 30, 20]), ATTR_LOG_APPEND_TIME)
    assert [r[1] for r in kafka_read(batch)] == [30, 30, 30]
    assert [r[1] for r in native_read(batch)] == [30, 30, 30]


def test_gzip_batch_from_kafka_python_validates_but_does_not_decode() -> None:
    recs: list[Any] = [(None, b"x" * 1000, [])] * 5
    batch = kafka_build(recs, [1] * 5, compression_type=ATTR_GZIP)
    assert DefaultRecordBatch(batch).compression_type == ATTR_GZIP  # really compressed
    assert _native.batch_validate(batch, records=True) == 5
    with pytest.raises(InvalidArgument, match="decode batches: compressed batch"):
        native_read(batch)


# ---- validation ----------------------------------------------------------------------


def test_empty_batch_is_rejected_by_the_encoder() -> None:
    with pytest.raises(InvalidArgument, match="encode batch: invalid argument"):
        _native.batch_encode(_native.RecordArrays(values=[]))


def test_encoding_rejects_mismatched_column_lengths() -> None:
    with pytest.raises(InvalidArgument, match="1 keys for 2 values"):
        _native.RecordArrays(values=[b"a", b"b"], keys=[b"k"])


def test_corrupted_crc_is_rejected() -> None:
    batch = bytearray(simple_batch())
    batch[OFF_CRC] ^= 0x01
    assert not DefaultRecordBatch(bytes(batch)).validate_crc()
    with pytest.raises(CorruptError, match="validate batch: corrupt record batch"):
        _native.batch_validate(bytes(batch))


def test_flipped_record_byte_fails_the_crc() -> None:
    batch = bytearray(simple_batch())
    batch[-1] ^= 0x40  # inside the last header value, covered by the CRC
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(bytes(batch), records=False)


@pytest.mark.parametrize("keep", [0, 11, 12, HEADER_BYTES - 1, HEADER_BYTES, -1])
def test_truncated_batch_is_rejected(keep: int) -> None:
    batch = simple_batch()
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(batch[:keep])


def test_batch_with_trailing_bytes_is_rejected() -> None:
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(simple_batch() + b"\0")


@pytest.mark.parametrize("magic", [0, 1, 3])
def test_wrong_magic_is_rejected(magic: int) -> None:
    batch = bytearray(simple_batch())
    batch[OFF_MAGIC] = magic  # magic is outside the CRC
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(bytes(batch))


def test_last_offset_delta_mismatch_is_rejected() -> None:
    batch = bytearray(simple_batch(3))
    struct.pack_into(">i", batch, OFF_LAST_OFFSET_DELTA, 5)
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(reseal(batch), records=False)


def test_record_count_disagreeing_with_records_is_rejected() -> None:
    batch = bytearray(simple_batch(3))
    struct.pack_into(">i", batch, OFF_RECORD_COUNT, 2)
    struct.pack_into(">i", batch, OFF_LAST_OFFSET_DELTA, 1)
    batch = bytearray(reseal(batch))
    assert _native.batch_validate(bytes(batch), records=False) == 2
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(bytes(batch), records=True)


def test_unknown_compression_codec_is_rejected() -> None:
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(with_attributes(simple_batch(), 5))


def test_record_length_past_the_end_fails_record_validation() -> None:
    batch = bytearray(simple_batch(1))
    # the only record's length varint is the first byte after the header; 0x7e is
    # zig-zag 63, more than the few bytes that follow
    assert batch[HEADER_BYTES] < 0x7E
    batch[HEADER_BYTES] = 0x7E
    sealed = reseal(batch)
    assert _native.batch_validate(sealed, records=False) == 1
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(sealed, records=True)
    with pytest.raises(CorruptError, match="decode batches"):
        native_read(sealed)


def test_record_length_varint_without_an_end_is_rejected() -> None:
    batch = bytearray(simple_batch(1))
    batch[HEADER_BYTES:] = b"\xff" * (len(batch) - HEADER_BYTES)
    with pytest.raises(CorruptError, match="validate batch"):
        _native.batch_validate(reseal(batch), records=True)


# ---- decoding ------------------------------------------------------------------------


def test_decode_with_crc_check_rejects_a_flipped_byte() -> None:
    batch = bytearray(simple_batch(3))
    batch[-1] ^= 0x40
    assert len(native_read(bytes(batch))) == 3  # without the check it decodes
    with pytest.raises(CorruptError, match="decode batches: corrupt record batch"):
        native_read(bytes(batch), verify_crc=True)


def test_decode_reads_concatenated_batches_in_order() -> None:
    b1, b2, b3 = simple_batch(2, 0), simple_batch(3, 2), simple_batch(1, 100)
    buf = b1 + b2 + b3
    d = _native.Decoded()
    got = native_read(buf, d)
    assert [r[0] for r in got] == [0, 1, 2, 3, 4, 100]
    assert got == kafka_read(b1) + kafka_read(b2) + kafka_read(b3)
    assert d.bytes_consumed == len(buf)
    assert d.struct.batches == 3


@pytest.mark.parametrize("tail", [1, 11, 12, HEADER_BYTES, -1])
def test_partial_trailing_batch_is_left_for_the_next_call(tail: int) -> None:
    b1, b2 = simple_batch(2, 0), simple_batch(3, 2)
    buf = b1 + b2[:tail]
    d = _native.Decoded()
    assert [r[0] for r in native_read(buf, d)] == [0, 1]
    assert d.bytes_consumed == len(b1)


def test_control_batch_is_skipped() -> None:
    control = with_attributes(simple_batch(1, 0), ATTR_CONTROL)
    data = simple_batch(2, 1)
    d = _native.Decoded()
    assert native_read(control + data, d) == kafka_read(data)
    assert d.bytes_consumed == len(control) + len(data)


def test_compressed_first_batch_is_unsupported() -> None:
    batch = with_attributes(simple_batch(), ATTR_GZIP)
    with pytest.raises(InvalidArgument, match="decode batches: compressed batch"):
        native_read(batch)


def test_decode_stops_before_a_compressed_batch_after_the_first() -> None:
    plain = simple_batch(2, 0)
    compressed = with_attributes(simple_batch(2, 2), ATTR_GZIP)
    d = _native.Decoded()
    assert [r[0] for r in native_read(plain + compressed, d)] == [0, 1]
    assert d.bytes_consumed == len(plain)


def test_wrong_magic_fails_decoding() -> None:
    batch = bytearray(simple_batch())
    batch[OFF_MAGIC] = 1
    with pytest.raises(CorruptError, match="decode batches"):
        native_read(bytes(batch))


def test_batch_length_below_the_header_fails_decoding() -> None:
    batch = bytearray(simple_batch())
    struct.pack_into(">i", batch, OFF_LENGTH, 10)
    with pytest.raises(CorruptError, match="decode batches"):
        native_read(bytes(batch))


def test_batch_larger_than_the_arrays_still_decodes() -> None:
    recs = [(b"k%d" % i, b"v%d" % i, [("a", b"1"), ("b", None)]) for i in range(50)]
    ts = list(range(50))
    batch = encode(recs, ts, 1000)
    d = _native.Decoded(max_records=4, max_headers=4)
    assert native_read(batch, d) == expected(recs, ts, 1000)
    assert d.struct.max_records >= 50
    assert d.struct.max_headers >= 100


def test_decode_stops_at_the_batch_that_no_longer_fits() -> None:
    b1, b2 = simple_batch(3, 0), simple_batch(3, 3)
    d = _native.Decoded(max_records=4, max_headers=4)
    assert [r[0] for r in native_read(b1 + b2, d)] == [0, 1, 2]
    assert d.bytes_consumed == len(b1)


def test_batch_with_more_headers_than_max_headers_zero_still_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If Decoded holds no headers and a batch has some, then decode grows the header
    arrays (not only the record arrays) until the batch fits."""
    guard_resize(monkeypatch)
    batch = simple_batch(2)
    d = _native.Decoded(max_records=16, max_headers=0)
    assert native_read(batch, d) == kafka_read(batch)


def test_record_count_beyond_what_the_bytes_hold_is_corrupt_not_grown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If a batch claims more records than its bytes can hold (a record takes at least
    7 bytes), then decode says CorruptError instead of growing its arrays to the
    claimed count (2**31 - 1 records would be 77 GiB of arrays)."""
    guard_resize(monkeypatch)
    batch = bytearray(simple_batch(1))
    struct.pack_into(">i", batch, OFF_RECORD_COUNT, 2**31 - 1)
    with pytest.raises(CorruptError, match="decode batches"):
        native_read(bytes(batch), _native.Decoded(max_records=4, max_headers=4))


def guard_resize(monkeypatch: pytest.MonkeyPatch, max_records: int = 1 << 20) -> None:
    """Fail, rather than exhaust memory or loop forever, if decode keeps growing."""
    original = _native.Decoded.resize
    calls = []

    def resize(self: _native.Decoded, records: int, headers: int) -> None:
        calls.append((records, headers))
        if records > max_records or len(calls) > 20:
            pytest.fail(f"Decoded kept growing its arrays: resize calls {calls}")
        original(self, records, headers)

    monkeypatch.setattr(_native.Decoded, "resize", resize)
