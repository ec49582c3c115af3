/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of Kafka's
 * RecordBatch v2. Uses the SSE4.2 crc32 instruction when the CPU has it (chosen once,
 * at first call) and a slicing-by-8 table otherwise. */
#include "shmb.h"

#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static int table_ready;

static void table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_table(uint32_t c, const uint8_t *p, size_t n) {
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE)) table_init(); /* idempotent */
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
            table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
            table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
/* One stream: bytes at a time to 8-byte alignment, then 8 bytes per instruction. */
__attribute__((target("sse4.2"))) static uint32_t crc_sse42_1(uint32_t c, const uint8_t *p,
                                                              size_t n) {
    uint64_t c64 = c;
    while (n && ((uintptr_t)p & 7)) {
        c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    while (n--) c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
    return (uint32_t)c64;
}

/* The crc32 instruction has a latency of 3 cycles and a throughput of 1: one stream
 * runs at a third of the speed. Large buffers go as three interleaved streams over
 * consecutive blocks of STREAM_BLOCK bytes, joined with
 *   crc(c, A|B) = shift(crc(c, A)) ^ crc(0, B),  shift(x) = crc(x, STREAM_BLOCK zeros)
 * where shift is linear in x, so four 256-entry tables hold it. */
#define STREAM_BLOCK 4096
static uint32_t shift_table[4][256];
static int shift_ready;

__attribute__((target("sse4.2"))) static void shift_init(void) {
    static const uint8_t zeros[STREAM_BLOCK];
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++)
            shift_table[k][b] = crc_sse42_1(b << (8 * k), zeros, STREAM_BLOCK);
    __atomic_store_n(&shift_ready, 1, __ATOMIC_RELEASE); /* idempotent if raced */
}

static inline uint32_t shift_block(uint32_t x) {
    return shift_table[0][x & 0xff] ^ shift_table[1][(x >> 8) & 0xff] ^
           shift_table[2][(x >> 16) & 0xff] ^ shift_table[3][x >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const uint8_t *p,
                                                            size_t n) {
    if (n < 3 * STREAM_BLOCK) return crc_sse42_1(c, p, n);
    if (!__atomic_load_n(&shift_ready, __ATOMIC_ACQUIRE)) shift_init();
    while (n >= 3 * STREAM_BLOCK) {
        uint64_t a = c, b = 0, d = 0;
        const uint8_t *pa = p, *pb = p + STREAM_BLOCK, *pd = p + 2 * STREAM_BLOCK;
        for (size_t i = 0; i < STREAM_BLOCK; i += 8) {
            uint64_t wa, wb, wd;
            memcpy(&wa, pa + i, 8);
            memcpy(&wb, pb + i, 8);
            memcpy(&wd, pd + i, 8);
            a = __builtin_ia32_crc32di(a, wa);
            b = __builtin_ia32_crc32di(b, wb);
            d = __builtin_ia32_crc32di(d, wd);
        }
        c = shift_block(shift_block((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)d;
        p += 3 * STREAM_BLOCK;
        n -= 3 * STREAM_BLOCK;
    }
    return crc_sse42_1(c, p, n);
}
#endif

static int hw = -1; /* -1 unknown, 0 table, 1 sse4.2 */

int shmb_crc32c_hardware(void) {
    int h = __atomic_load_n(&hw, __ATOMIC_RELAXED);
    if (h < 0) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        h = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
        h = 0;
#endif
        __atomic_store_n(&hw, h, __ATOMIC_RELAXED);
    }
    return h;
}

uint32_t shmb_crc32c(uint32_t crc, const uint8_t *buf, size_t len) {
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (shmb_crc32c_hardware()) return ~crc_sse42(c, buf, len);
#endif
    return ~crc_table(c, buf, len);
}
