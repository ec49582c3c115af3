/* Byte-level helpers shared by the batch codec and the ring (internal, not in cffi):
 * big-endian loads/stores and Kafka's zig-zag varints (protobuf encoding). */
#ifndef SHMB_CODEC_H
#define SHMB_CODEC_H

#include <stdint.h>
#include <string.h>

static inline uint16_t shmb_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t shmb_be32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}
static inline uint64_t shmb_be64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}
static inline void shmb_put_be16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void shmb_put_be32(uint8_t *p, uint32_t v) {
    v = __builtin_bswap32(v);
    memcpy(p, &v, 4);
}
static inline void shmb_put_be64(uint8_t *p, uint64_t v) {
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}

static inline uint64_t shmb_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline int shmb_varint_bytes(int64_t v) {
    uint64_t u = shmb_zigzag(v);
    int n = 1;
    while (u >= 0x80) {
        u >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *shmb_put_varint(uint8_t *p, int64_t v) {
    uint64_t u = shmb_zigzag(v);
    while (u >= 0x80) {
        *p++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *p++ = (uint8_t)u;
    return p;
}

/* Reads a zig-zag varint of at most max_bytes (5 for varint, 10 for varlong).
 * Returns the next position, or NULL if it runs past end or is too long. */
static inline const uint8_t *shmb_get_varint(const uint8_t *p, const uint8_t *end,
                                             int max_bytes, int64_t *out) {
    uint64_t u = 0;
    for (int i = 0; i < max_bytes && p < end; i++) {
        uint8_t b = *p++;
        u |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
            return p;
        }
    }
    return NULL;
}

/* Write the 61-byte header of the batch in out[0:total], whose records follow it,
 * CRC32C last (shmb_batch.c; the encoder and the producer's batch builder). */
void shmb_batch_seal(uint8_t *out, int64_t total, int64_t base_offset, int32_t count,
                     int64_t base_ts, int64_t max_ts);

#endif
