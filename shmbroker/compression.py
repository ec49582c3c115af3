"""Compressed record batches: Kafka's gzip, snappy, lz4 and zstd codecs.

A compressed RecordBatch v2 keeps its 61-byte header (offsets, timestamps, producer
id, epoch and sequence, record count) and compresses everything after it, the
records, as one payload; attributes bits 0-2 name the codec. So converting a batch
either way changes only the payload, batchLength, the codec bits and the CRC32C.

    | codec  | bits | payload                                                       |
    |--------|------|---------------------------------------------------------------|
    | gzip   | 1    | a gzip stream (zlib's too, on decode)                         |
    | snappy | 2    | a raw snappy block (librdkafka, and ours), or xerial framing: |
    |        |      | b"\\x82SNAPPY\\x00", version, compat (i32 each), then         |
    |        |      | [i32 length, raw snappy block]... (the Java client)           |
    | lz4    | 3    | an LZ4 frame with independent blocks (KIP-57)                 |
    | zstd   | 4    | a zstd frame                                                  |

Decompression is bounded: one call never makes more than max_bytes, so a small batch
that inflates to gigabytes (a decompression bomb) is refused, not held in memory.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

import cramjam

from shmbroker import _native, errors

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
NAMES = {bits: name for name, bits in CODECS.items()}
CODEC_MASK = 0x07

# One call's output bound: far above any real batch (max.message.bytes is 1 MiB by
# default, and real payloads compress 2-20x), far below what would hurt the host.
DEFAULT_MAX_DECOMPRESSED_BYTES = 256 << 20

GZIP_LEVEL = 6  # Kafka's compression.gzip.level default (zlib's)
ZSTD_LEVEL = 3  # Kafka's compression.zstd.level default (zstd's)
# lz4's fast mode, librdkafka's default: cramjam's own default (4) is a high-compression
# level, 6x slower here (1000 x 100 B records: 490 us vs 77 us) for 16% smaller output
LZ4_LEVEL = 0

HEADER = _native.BATCH_HEADER_BYTES  # 61
LOG_OVERHEAD = 12  # baseOffset and batchLength: batchLength counts the rest
_OFF_LENGTH, _OFF_MAGIC, _OFF_CRC, _OFF_ATTRIBUTES = 8, 16, 17, 21
_LENGTH = struct.Struct(">i")
_CRC = struct.Struct(">I")

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, then version and compatible version (i32 each)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
# what cramjam's *_into functions say when the output buffer is too small
_OUTPUT_FULL = "failed to write whole buffer"
_FIRST_GUESS = 64 << 10  # bytes: a first output buffer when the size is not declared


def codec_bits(name: str) -> int:
    """The attributes bits of a codec named as Kafka's compression.type."""
    bits = CODECS.get(name)
    if bits is None:
        raise errors.InvalidArgument(
            f"compression codec {name!r}: must be one of {', '.join(CODECS)}"
        )
    return bits


# ---- compress --------------------------------------------------------------------


def _gzip(data: Any) -> bytes:
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 16 + 15: gzip
    return z.compress(data) + z.flush()


def _lz4(data: Any) -> bytes:
    # independent blocks: Kafka's Java client refuses a linked-block frame; no content
    # checksum, as Kafka's own writer
    c = cramjam.lz4.Compressor(
        level=LZ4_LEVEL, block_linked=False, content_checksum=False
    )
    c.compress(bytes(data))  # this one call takes bytes only, not a memoryview
    return bytes(c.finish())


_COMPRESS: dict[int, Callable[[Any], bytes]] = {
    1: _gzip,
    2: lambda data: bytes(cramjam.snappy.compress_raw(data)),
    3: _lz4,
    4: lambda data: bytes(cramjam.zstd.compress(data, level=ZSTD_LEVEL)),
}


def compress_batch(batch: bytes | memoryview, codec: str) -> bytes:
    """The batch with its records compressed by codec (Kafka's compression.type
    name; "none" returns it as is). The batch must be one whole uncompressed
    batch."""
    bits = codec_bits(codec)
    view = memoryview(batch)
    base, length, attributes = _check_header(view, 0, len(view))
    if length != len(view):
        raise errors.InvalidArgument(
            f"compress batch at base offset {base}: {len(view)} bytes given, its "
            f"batchLength says {length}"
        )
    if attributes & CODEC_MASK:
        raise errors.InvalidArgument(
            f"compress batch at base offset {base}: it is already compressed "
            f"({_name(attributes)})"
        )
    if not bits:
        return bytes(view)
    return _seal(view[:HEADER], _COMPRESS[bits](view[HEADER:]), attributes | bits)


def max_uncompressed_bytes(codec: str, limit: int) -> int:
    """The largest uncompressed batch whose compressed batch is sure to fit limit
    bytes, whatever its records: each codec's worst case for incompressible data
    (snappy's 32 + n + n/6; zlib's, lz4's and zstd's compress bounds, well under
    n/200 + 128, with their framing)."""
    bits = codec_bits(codec)
    if not bits:
        return limit
    ratio, constant = (6, 64) if bits == 2 else (200, 128)
    room = limit - HEADER - constant
    return HEADER + max(0, room * ratio // (ratio + 1))


# ---- decompress ------------------------------------------------------------------


class _TooLarge(Exception):
    """Internal: the output would pass the bound."""


def _gunzip(payload: memoryview, limit: int) -> bytes:
    out: list[bytes] = []
    total, data = 0, payload
    while True:  # a gzip stream may hold several members
        z = zlib.decompressobj(47)  # wbits 32 + 15: gzip or zlib header
        chunk = z.decompress(data, limit - total + 1)
        total += len(chunk)
        if total > limit:
            raise _TooLarge
        if not z.eof:
            raise zlib.error("truncated stream")
        out.append(chunk)
        data = memoryview(z.unused_data)
        if not data:
            return b"".join(out)


def _unsnappy(payload: memoryview, limit: int) -> bytes:
    if payload[: len(XERIAL_MAGIC)] != XERIAL_MAGIC:
        return _snappy_block(payload, limit)
    out, pos, total = [], _XERIAL_HEADER, 0
    while pos < len(payload):
        if pos + 4 > len(payload):
            raise ValueError(f"xerial block length cut at payload byte {pos}")
        (n,) = _LENGTH.unpack_from(payload, pos)
        pos += 4
        if n < 0 or pos + n > len(payload):
            raise ValueError(
                f"xerial block of {n} bytes at payload byte {pos} runs past the "
                f"payload's {len(payload)}"
            )
        block = _snappy_block(payload[pos : pos + n], limit - total)
        total += len(block)
        out.append(block)
        pos += n
    return b"".join(out)


def _snappy_block(block: memoryview, limit: int) -> bytes:
    # a raw block starts with its uncompressed length: check it before allocating
    if int(cramjam.snappy.decompress_raw_len(block)) > limit:
        raise _TooLarge
    return bytes(cramjam.snappy.decompress_raw(block))


def _declared_size(payload: memoryview, bits: int) -> int:
    """The content size an lz4 or zstd frame header declares, or 0 when absent."""
    p = payload
    if bits == 3 and len(p) >= 14 and p[:4] == _LZ4_MAGIC and p[4] & 0x08:
        return int.from_bytes(p[6:14], "little")
    if bits == 4 and len(p) >= 6 and p[:4] == _ZSTD_MAGIC:
        descriptor = p[4]
        single_segment = descriptor >> 5 & 1
        field = (single_segment, 2, 4, 8)[descriptor >> 6]
        at = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
        if field and len(p) >= at + field:
            size = int.from_bytes(p[at : at + field], "little")
            return size + 256 if field == 2 else size
    return 0


def _bounded(bits: int) -> Callable[[memoryview, int], bytes]:
    """lz4 or zstd into an output buffer that grows (x4) up to the limit: the frame
    may not declare its size (the Java client's do not), and the library never
    writes past the buffer it is given."""
    into = cramjam.lz4.decompress_into if bits == 3 else cramjam.zstd.decompress_into

    def decompress(payload: memoryview, limit: int) -> bytes:
        size = _declared_size(payload, bits) or max(_FIRST_GUESS, 8 * len(payload))
        if size > limit:
            if _declared_size(payload, bits):
                raise _TooLarge
            size = limit
        while True:
            out = bytearray(size)
            try:
                n = int(into(payload, out))
            except cramjam.DecompressionError as exc:
                if _OUTPUT_FULL not in str(exc):
                    raise
                if size >= limit:
                    raise _TooLarge from None
                size = min(limit, size * 4)
                continue
            return bytes(memoryview(out)[:n])

    return decompress


_DECOMPRESS: dict[int, Callable[[memoryview, int], bytes]] = {
    1: _gunzip,
    2: _unsnappy,
    3: _bounded(3),
    4: _bounded(4),
}


def decompress_batches(
    data: bytes | bytearray | memoryview,
    max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    verify_crc: bool = False,
) -> bytes:
    """A run of whole batches with every compressed one replaced by the same batch
    uncompressed (header fields kept, codec bits cleared, batchLength and CRC32C
    recomputed); uncompressed batches are copied as they are.

    CorruptError, naming the batch's codec, base offset and sizes, for a payload the
    codec cannot read, or when the decompressed records of the call would pass
    max_bytes; verify_crc checks each compressed batch's CRC before opening it."""
    view = memoryview(data).cast("B")
    out: list[bytes | memoryview] = []
    pos = run = 0  # run: start of the uncompressed batches not yet copied out
    budget = max_bytes  # decompressed bytes this call may still make
    while pos < len(view):
        base, length, attributes = _check_header(view, pos, len(view) - pos)
        end = pos + length
        if end > len(view):
            raise errors.CorruptError(
                f"decompress batches: the batch at byte {pos} (base offset {base}) "
                f"is {length} bytes, but only {len(view) - pos} are left"
            )
        bits = attributes & CODEC_MASK
        if not bits:
            pos = end
            continue
        if run < pos:
            out.append(view[run:pos])
        batch = view[pos:end]
        if verify_crc:
            _verify_crc(batch, base, pos)
        records = _decompress(batch, bits, base, pos, budget, max_bytes)
        budget -= len(records)
        out.append(_seal(batch[:HEADER], records, attributes & ~CODEC_MASK))
        pos = run = end
    if not out:
        return bytes(view)
    if run < pos:
        out.append(view[run:pos])
    return b"".join(out)


def _decompress(
    batch: memoryview, bits: int, base: int, pos: int, limit: int, max_bytes: int
) -> bytes:
    payload = batch[HEADER:]
    what = (
        f"decompress {_name(bits)} batch at base offset {base} (byte {pos}, "
        f"{len(batch)} bytes, payload {len(payload)})"
    )
    if bits not in _DECOMPRESS:
        raise errors.CorruptError(f"{what}: unknown codec {bits}")
    try:
        return _DECOMPRESS[bits](payload, limit)
    except _TooLarge:
        raise errors.CorruptError(
            f"{what}: it inflates past max_bytes ({max_bytes} bytes for the call): a "
            f"decompression bomb, or pass a larger max_bytes"
        ) from None
    except (zlib.error, cramjam.DecompressionError, ValueError) as exc:
        raise errors.CorruptError(f"{what}: corrupt payload: {exc}") from exc


def _check_header(view: memoryview, pos: int, available: int) -> tuple[int, int, int]:
    """(base offset, total bytes, attributes) of the batch at pos."""
    if available < HEADER:
        raise errors.CorruptError(
            f"batch at byte {pos}: {available} bytes, less than a batch header "
            f"({HEADER})"
        )
    base = int.from_bytes(view[pos : pos + 8], "big", signed=True)
    (length,) = _LENGTH.unpack_from(view, pos + _OFF_LENGTH)
    magic = view[pos + _OFF_MAGIC]
    if magic != 2 or length < HEADER - LOG_OVERHEAD:
        raise errors.CorruptError(
            f"batch at byte {pos} (base offset {base}): magic {magic}, batchLength "
            f"{length}: not a RecordBatch v2"
        )
    at = pos + _OFF_ATTRIBUTES
    attributes = int.from_bytes(view[at : at + 2], "big")
    return base, length + LOG_OVERHEAD, attributes


def _verify_crc(batch: memoryview, base: int, pos: int) -> None:
    (stored,) = _CRC.unpack_from(batch, _OFF_CRC)
    crc = _native.crc32c(bytes(batch[_OFF_ATTRIBUTES:]))
    if crc != stored:
        raise errors.CorruptError(
            f"batch at byte {pos} (base offset {base}, {len(batch)} bytes): CRC32C "
            f"{crc:#010x}, the header says {stored:#010x}"
        )


def _seal(header: memoryview, records: bytes, attributes: int) -> bytes:
    """A batch of header (61 bytes, copied) and records, with batchLength,
    attributes and the CRC32C set for them."""
    h = bytearray(header)
    _LENGTH.pack_into(h, _OFF_LENGTH, HEADER - LOG_OVERHEAD + len(records))
    h[_OFF_ATTRIBUTES : _OFF_ATTRIBUTES + 2] = attributes.to_bytes(2, "big")
    # the CRC covers attributes..end: the header's tail, then the records
    crc = _native.crc32c(records, _native.crc32c(bytes(h[_OFF_ATTRIBUTES:])))
    _CRC.pack_into(h, _OFF_CRC, crc)
    return bytes(h) + records


def _name(attributes: int) -> str:
    return NAMES.get(attributes & CODEC_MASK, f"codec {attributes & CODEC_MASK}")
