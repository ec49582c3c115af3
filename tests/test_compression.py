"""Compressed batches against kafka-python's codec, an independent encoder and
decoder: its gzip, snappy (xerial and raw), lz4 and zstd batches decompress to the same
records, header fields and all; ours read back through it; corrupt payloads and
decompression bombs give CorruptError."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zlib
from typing import Any

import cramjam
import pytest

from shmbroker import _native
from shmbroker.compression import (
    CODECS,
    XERIAL_MAGIC,
    compress_batch,
    decompress_batches,
    max_uncompressed_bytes,
)
from shmbroker.errors import CorruptError, InvalidArgument
from shmbroker.records import build_records
from tests.native.kafka_python import DefaultRecordBatch, DefaultRecordBatchBuilder

import kafka.codec as kafka_codec  # isort: skip  (after the helper silences its warning)
import kafka.record.default_records as kafka_records  # isort: skip

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes,
# lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch,
# baseSequence, recordsCount
HEADER = struct.Struct(">qiibIhiqqqhii")
CODEC_NAMES = ["gzip", "snappy", "lz4", "zstd"]
TS = 1_700_000_000_000


def sample_records(n: int = 200, seed: int = 1) -> list[tuple[Any, ...]]:
    """(key, value, headers, timestamp): nulls, empties, headers, timestamps out of
    order, and enough repetition that every codec shrinks them."""
    rng = random.Random(seed)
    recs: list[tuple[Any, ...]] = [
        (None, b"v0", [], TS),
        (b"k1", None, [("h", b"x")], TS + 5),
        (b"", b"", [("a", None), ("b", b"")], TS - 3),
    ]
    for i in range(3, n):
        value = b'{"id":%d,"user":"u%d","ok":true}' % (i, rng.randrange(20))
        headers = [("trace", b"%d" % rng.randrange(5))] if i % 3 == 0 else []
        recs.append((b"key-%d" % (i % 7), value, headers, TS + rng.randrange(1000)))
    return recs


def kafka_build(
    recs: list[tuple[Any, ...]],
    codec: str = "none",
    base_offset: int = 0,
    producer: tuple[int, int, int] = (4242, 7, 100),
    transactional: bool = False,
    leader_epoch: int = 3,
) -> bytes:
    producer_id, epoch, sequence = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS[codec],
        is_transactional=int(transactional),
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        batch_size=1 << 30,
    )
    for i, (k, v, h, ts) in enumerate(recs):
        assert builder.append(i, timestamp=ts, key=k, value=v, headers=h) is not None
    batch = bytearray(builder.build())
    # the broker sets these two; they are outside the CRC
    struct.pack_into(">q", batch, 0, base_offset)
    struct.pack_into(">i", batch, 12, leader_epoch)
    assert DefaultRecordBatch(bytes(batch)).compression_type == CODECS[codec]
    return bytes(batch)


def expected(recs: list[tuple[Any, ...]], base_offset: int = 0) -> list[tuple]:
    return [
        (base_offset + i, ts, k, v, list(h)) for i, (k, v, h, ts) in enumerate(recs)
    ]


def decode(data: bytes) -> list[tuple]:
    """Every record of data through our C decoder."""
    d, at, out = _native.Decoded(16, 16), 0, []
    while at < len(data):
        d.decode(data, at, len(data))
        assert d.bytes_consumed > 0
        at += d.bytes_consumed
        out += [
            (r.offset, r.timestamp, r.key, r.value, list(r.headers))
            for r in build_records(d, data, "t", 0)
        ]
    return out


def kafka_read(batch: bytes) -> list[tuple]:
    return [
        (r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers])
        for r in DefaultRecordBatch(batch)
    ]


def our_batch(recs: list[tuple[Any, ...]]) -> bytes:
    arrays = _native.RecordArrays(
        [v for _, v, _, _ in recs],
        [k for k, _, _, _ in recs],
        [ts for _, _, _, ts in recs],
        headers=[h for _, _, h, _ in recs],
    )
    return _native.batch_encode(arrays)


@pytest.fixture
def raw_snappy(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python writes xerial-framed snappy, as the Java client; librdkafka
    writes a raw snappy block: make kafka-python write that instead."""
    monkeypatch.setattr(
        kafka_records,
        "snappy_encode",
        lambda data: kafka_codec.snappy_encode(data, xerial_compatible=False),
    )


def check_same_batch(original: bytes, out: bytes) -> None:
    """out is original uncompressed: every header field kept but the codec bits,
    batchLength and CRC, which are right for out."""
    a, b = HEADER.unpack_from(original), HEADER.unpack_from(out)
    assert b[1] == len(out) - 12  # batchLength
    assert b[5] == a[5] & ~7  # attributes: codec cleared, the rest kept
    kept = [0, 2, 3, 6, 7, 8, 9, 10, 11, 12]
    assert [b[i] for i in kept] == [a[i] for i in kept]
    assert _native.batch_validate(out, records=True) == a[12]  # CRC and records


@pytest.mark.parametrize("codec", [*CODEC_NAMES, "raw-snappy"])
def test_kafka_python_batch_decompresses_to_the_same_records(
    codec: str, request: pytest.FixtureRequest
) -> None:
    if codec == "raw-snappy":
        request.getfixturevalue("raw_snappy")
    recs = sample_records()
    batch = kafka_build(recs, codec.removeprefix("raw-"), base_offset=1000)
    payload = batch[61:]
    if codec == "snappy":
        assert payload.startswith(XERIAL_MAGIC)
    if codec == "raw-snappy":
        assert not payload.startswith(XERIAL_MAGIC)
    out = decompress_batches(batch)
    check_same_batch(batch, out)
    assert decode(out) == expected(recs, 1000)
    assert kafka_read(out) == expected(recs, 1000)  # and so does kafka-python


def test_transactional_bit_and_producer_fields_survive() -> None:
    recs = sample_records(50)
    batch = kafka_build(recs, "zstd", transactional=True, producer=(9, 2, 31))
    out = decompress_batches(batch)
    check_same_batch(batch, out)
    assert HEADER.unpack_from(out)[5] & 0x10


def test_a_run_of_mixed_batches_keeps_order_and_uncompressed_bytes() -> None:
    """If compressed and uncompressed batches come in one run (bytes or a
    memoryview), then each compressed one is replaced in place and the others are
    copied byte for byte."""
    parts, offset, recs_all = [], 0, []
    for codec, seed in [("none", 1), ("gzip", 2), ("zstd", 3), ("none", 4), ("lz4", 5)]:
        recs = sample_records(40, seed)
        parts.append(kafka_build(recs, codec, base_offset=offset))
        recs_all += expected(recs, offset)
        offset += len(recs)
    data = b"".join(parts)
    out = decompress_batches(memoryview(bytearray(data)))
    assert decode(out) == recs_all
    assert out.startswith(parts[0])
    assert parts[3] in out
    assert decompress_batches(parts[0] + parts[3]) == parts[0] + parts[3]


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_our_compressed_batch_reads_back_through_kafka_python(codec: str) -> None:
    recs = sample_records()
    batch = our_batch(recs)
    compressed = compress_batch(batch, codec)
    assert len(compressed) < len(batch)
    assert HEADER.unpack_from(compressed)[5] & 7 == CODECS[codec]
    assert _native.batch_validate(compressed, records=True) == len(recs)  # CRC
    assert DefaultRecordBatch(compressed).compression_type == CODECS[codec]
    assert kafka_read(compressed) == expected(recs)
    assert decompress_batches(compressed) == batch  # the same bytes, round trip


def test_lz4_frames_have_independent_blocks_as_kafka_requires() -> None:
    """Kafka's Java client refuses an LZ4 frame whose blocks are linked."""
    batch = our_batch([(None, os.urandom(50) * 4000, [], TS)])  # several blocks
    payload = compress_batch(batch, "lz4")[61:]
    flags = payload[4]
    assert flags >> 6 == 1, f"FLG {flags:#04x}: LZ4 frame version 1"
    assert flags & 0x20, f"FLG {flags:#04x}: block independence"


def test_snappy_is_written_raw_as_librdkafka_does() -> None:
    payload = compress_batch(our_batch(sample_records()), "snappy")[61:]
    assert not payload.startswith(XERIAL_MAGIC)
    assert kafka_codec.snappy_decode(payload) == our_batch(sample_records())[61:]


@pytest.mark.parametrize("codec", [*CODEC_NAMES, "raw-snappy"])
def test_corrupt_payload_names_codec_and_base_offset(
    codec: str, request: pytest.FixtureRequest
) -> None:
    """If a compressed payload is damaged (its CRC made right again, so only the
    codec can tell) or cut short, then CorruptError names the codec, the base
    offset and the sizes."""
    if codec == "raw-snappy":
        request.getfixturevalue("raw_snappy")
    name = codec.removeprefix("raw-")
    batch = kafka_build(sample_records(), name, base_offset=77)
    damaged = bytearray(batch)
    for i in range(61 + 20, len(batch), 9):
        damaged[i] ^= 0x5A
    cut = batch[: 61 + (len(batch) - 61) // 2]
    cut = struct.pack(">q", 77) + struct.pack(">i", len(cut) - 12) + cut[12:]
    for bad in (reseal(damaged), reseal(cut)):
        with pytest.raises(CorruptError, match=rf"{name} batch at base offset 77 .*"):
            decompress_batches(bad)


def reseal(batch: bytes | bytearray) -> bytes:
    """The batch with its CRC32C made right for its bytes."""
    b = bytearray(batch)
    struct.pack_into(">I", b, 17, _native.crc32c(bytes(b[21:])))
    return bytes(b)


def test_verify_crc_catches_a_bad_crc_before_opening_the_payload() -> None:
    batch = bytearray(kafka_build(sample_records(), "gzip", base_offset=5))
    batch[17] ^= 1
    assert decode(decompress_batches(bytes(batch)))  # not checked by default
    with pytest.raises(CorruptError, match=r"base offset 5.*CRC32C"):
        decompress_batches(bytes(batch), verify_crc=True)


def test_a_partial_batch_at_the_end_is_an_error_naming_the_position() -> None:
    batch = kafka_build(sample_records(10), "gzip")
    with pytest.raises(CorruptError, match=rf"byte {len(batch)}.*only 61 are left"):
        decompress_batches(batch + batch[:30] + bytes(31))
    with pytest.raises(CorruptError, match="magic 0"):
        decompress_batches(bytes(100))


def test_compress_batch_refuses_what_it_cannot_compress() -> None:
    batch = our_batch(sample_records(5))
    with pytest.raises(InvalidArgument, match="'brotli'"):
        compress_batch(batch, "brotli")
    with pytest.raises(InvalidArgument, match="already compressed"):
        compress_batch(compress_batch(batch, "zstd"), "gzip")
    with pytest.raises(InvalidArgument, match="batchLength"):
        compress_batch(batch + b"x", "gzip")
    assert compress_batch(batch, "none") == batch


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_incompressible_batches_within_the_bound_fit_the_limit(codec: str) -> None:
    """If an uncompressed batch is within max_uncompressed_bytes(codec, L), then
    compressed it fits L, even when its records are random bytes."""
    limit = 100_000
    room = max_uncompressed_bytes(codec, limit)
    assert 0.8 * limit < room <= limit
    rng = random.Random(3)
    values = [rng.randbytes(1000) for _ in range(200)]
    while len(batch := our_batch([(None, v, [], TS) for v in values])) > room:
        values.pop()
    assert room - len(batch) < 1100
    assert len(compress_batch(batch, codec)) <= limit


# ---- decompression bombs -------------------------------------------------------------

BOMB_BYTES = 256 << 20  # what a bomb inflates to
LIMIT = 8 << 20  # what the decompressing process allows


def bomb_payload(codec: str) -> bytes:
    """Records of BOMB_BYTES zeros, compressed without ever holding them."""
    record = b"\x00" * (1 << 20)
    if codec == "gzip":
        z = zlib.compressobj(1, zlib.DEFLATED, 31)
        return b"".join(z.compress(record) for _ in range(256)) + z.flush()
    if codec in ("lz4", "zstd"):
        c: Any = (
            cramjam.lz4.Compressor(block_linked=False)
            if codec == "lz4"
            else cramjam.zstd.Compressor()
        )
        for _ in range(256):
            c.compress(record)
        return bytes(c.finish())
    # raw snappy, written by hand: a length, one literal zero, then copies of the
    # bytes before (tag 0xfe: a copy of 64 bytes with a 2-byte offset, here 1; 0xfa
    # the same with 63 bytes)
    n = BOMB_BYTES
    length = bytearray()
    while n >= 0x80:
        length.append(n & 0x7F | 0x80)
        n >>= 7
    length.append(n)
    copies, rest = divmod(BOMB_BYTES - 1, 64)
    assert rest == 63
    return bytes(length) + b"\x00\x00" + b"\xfe\x01\x00" * copies + b"\xfa\x01\x00"


def bomb_batch(codec: str, payload: bytes) -> bytes:
    header = bytearray(our_batch([(None, b"x", [], TS)])[:61])
    struct.pack_into(">i", header, 8, 49 + len(payload))
    struct.pack_into(">h", header, 21, CODECS[codec])
    return reseal(bytes(header) + payload)


@pytest.mark.parametrize("codec", [*CODEC_NAMES, "xerial-snappy"])
def test_a_decompression_bomb_is_refused_without_eating_memory(
    codec: str, tmp_path: Any
) -> None:
    """If a batch inflates to 256 MiB and the caller allows 8 MiB, then the process
    that decompresses it gets CorruptError saying so, and its peak memory grows by
    far less than the bomb."""
    name = codec.removeprefix("xerial-")
    payload = bomb_payload(name)
    if codec == "xerial-snappy":  # one xerial block holding the whole raw block
        payload = XERIAL_MAGIC + struct.pack(">iii", 1, 1, len(payload)) + payload
    assert len(payload) < BOMB_BYTES // 20
    path = tmp_path / "bomb"
    path.write_bytes(bomb_batch(name, payload))
    script = f"""
import resource
from shmbroker.compression import decompress_batches
from shmbroker.errors import CorruptError
data = open({str(path)!r}, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decompress_batches(data, max_bytes={LIMIT})
    print("no error")
except CorruptError as exc:
    print(exc)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    message, grown_mib = done.stdout.strip().rsplit("\n", 1)
    assert f"decompress {name} batch at base offset 0" in message
    assert f"past max_bytes ({LIMIT} bytes" in message
    assert int(grown_mib) < 3 * LIMIT >> 20, f"peak memory grew {grown_mib} MiB"


def test_within_the_limit_a_large_batch_decompresses() -> None:
    batch = our_batch([(None, b"\x00" * (3 << 20), [], TS)])
    for codec in CODEC_NAMES:
        compressed = compress_batch(batch, codec)
        assert decompress_batches(compressed, max_bytes=4 << 20) == batch
        with pytest.raises(CorruptError, match="max_bytes"):
            decompress_batches(compressed, max_bytes=2 << 20)
