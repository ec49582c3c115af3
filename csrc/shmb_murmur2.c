/* Kafka's murmur2 partitioner, bit-exact with the Java client's Utils.murmur2 and
 * librdkafka's "murmur2" partitioner: seed 0x9747b28c, little-endian 4-byte words,
 * partition = (murmur2(key) & 0x7fffffff) % partitions. */
#include "shmb.h"

int32_t shmb_murmur2(const uint8_t *key, size_t len) {
    const uint32_t seed = 0x9747b28cu, m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = seed ^ (uint32_t)len;
    size_t n4 = len / 4;
    for (size_t i = 0; i < n4; i++) {
        const uint8_t *p = key + 4 * i;
        uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = key + 4 * n4;
    switch (len & 3) {
    case 3: h ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

int32_t shmb_partition_for_key(const uint8_t *key, size_t len, int32_t partitions) {
    if (partitions <= 0) return SHMB_EINVAL;
    /* Java's toPositive masks the sign bit rather than taking abs() */
    return (int32_t)(((uint32_t)shmb_murmur2(key, len) & 0x7fffffffu) % (uint32_t)partitions);
}
