/* The shared-memory layout of a partition ring. Another process depends on every byte
 * here: change anything and bump SHMB_RING_LAYOUT_VERSION.
 *
 *   offset  size      what
 *   0       4096      shmb_ring_header_t (this file)
 *   4096    capacity  data area, mapped a second time right after itself so that a
 *                     batch crossing the end is contiguous in memory
 *
 * Header, one cache line per writer so that hot cursors don't false-share:
 *   line  0  immutable after create: magic, layout version, capacity, epoch
 *   line  1  tail_position   committed end of data (release-stored by the appender)
 *   line  2  claim_position  highest end ever claimed (stored before writing bytes)
 *   line  3  spill_position  bytes persisted by the durable log; appenders never write
 *                            below spill + capacity. spill futex word + waiters, and
 *                            (position, offset) of the batch at the spill position
 *   line  4  data futex word + waiters (readers sleeping for new data)
 *   line  5  next_offset, log_start_offset, ring_start_offset, and the deleted flag
 *            (set once, when the topic is deleted; every appender reads this line)
 *   line  6  writer lock (robust process-shared pthread mutex)
 *   line  7  current claim start/end/offset: what the lock holder is writing (recovery)
 *   line  8  counters
 *   line  9  durability: offsets below durable_offset are fsynced; futex word +
 *            waiters (producers waiting for durability); the spill's last errno
 *   lines 16..31  offset index: SHMB_RING_INDEX_SLOTS entries of (position, base offset),
 *                 the first batch starting in each capacity/SLOTS bytes of the ring
 */
#ifndef SHMB_LAYOUT_H
#define SHMB_LAYOUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define SHMB_RING_MAGIC 0x474e4952424d4853ULL /* "SHMBRING" little-endian */
#define SHMB_RING_LAYOUT_VERSION 3u /* 2: durability line; 3: deleted flag */
#define SHMB_RING_HEADER_BYTES 4096
#define SHMB_CACHE_LINE 64
#define SHMB_RING_INDEX_SLOTS 64

#define SHMB_LINE(n) _Alignas(SHMB_CACHE_LINE) struct

typedef struct shmb_ring_index_entry {
    int64_t position;    /* -1 while being rewritten */
    int64_t base_offset;
} shmb_ring_index_entry_t;

typedef struct shmb_ring_header {
    SHMB_LINE(0) {
        uint64_t magic;            /* stored last at create, with release */
        uint32_t layout_version;
        uint32_t header_bytes;
        int64_t capacity_bytes;
        int64_t created_unix_ns;
        int32_t partition_leader_epoch; /* patched into every appended batch */
        uint32_t creator_pid;
    } meta;
    SHMB_LINE(1) { int64_t tail_position; } tail;
    SHMB_LINE(2) { int64_t claim_position; } claim;
    SHMB_LINE(3) {
        int64_t spill_position;
        uint32_t futex_word;       /* bumped on every spill advance */
        uint32_t waiters;          /* appenders sleeping for space */
        /* the offset of the batch at the spill position, as a seek hint: unspilled
         * batches are always found even where the index has no entry for them */
        shmb_ring_index_entry_t hint;
    } spill;
    SHMB_LINE(4) {
        uint32_t futex_word;       /* bumped on every commit */
        uint32_t waiters;          /* readers sleeping for data */
    } data;
    SHMB_LINE(5) {
        int64_t next_offset;       /* high watermark: offset of the next appended record */
        int64_t log_start_offset;  /* set by the durable log's retention */
        int64_t ring_start_offset; /* offset of the first batch this ring ever held */
        uint32_t deleted;          /* 1 once the topic is deleted: appends fail. Here
                                    * because every append reads next_offset anyway */
    } offsets;
    SHMB_LINE(6) { pthread_mutex_t mutex; } lock;
    SHMB_LINE(7) {
        int64_t start_position;    /* batch the lock holder claimed: [start, end) */
        int64_t end_position;
    } writer;
    SHMB_LINE(8) {
        uint64_t batches_appended;
        uint64_t records_appended;
        uint64_t bytes_appended;
        uint64_t full_waits;       /* appends that found the ring full (a long wait
                                    * counts once per SHMB_APPEND_VALUE_WAIT_MS slice) */
        uint64_t lock_recoveries;  /* writer locks taken over from a dead process */
    } counters;
    SHMB_LINE(9) {
        int64_t durable_offset;    /* every offset below this is fsynced to a segment */
        uint32_t futex_word;       /* bumped on every durable_offset advance */
        uint32_t waiters;          /* producers waiting for durability */
        int32_t spill_errno;       /* 0, or why the last spill attempt failed */
    } durable;
    _Alignas(SHMB_CACHE_LINE * 16) shmb_ring_index_entry_t index[SHMB_RING_INDEX_SLOTS];
} shmb_ring_header_t;

_Static_assert(sizeof(pthread_mutex_t) <= SHMB_CACHE_LINE, "mutex fits its line");
_Static_assert(offsetof(shmb_ring_header_t, tail) == 1 * SHMB_CACHE_LINE, "tail line");
_Static_assert(offsetof(shmb_ring_header_t, claim) == 2 * SHMB_CACHE_LINE, "claim line");
_Static_assert(offsetof(shmb_ring_header_t, spill) == 3 * SHMB_CACHE_LINE, "spill line");
_Static_assert(offsetof(shmb_ring_header_t, data) == 4 * SHMB_CACHE_LINE, "data line");
_Static_assert(offsetof(shmb_ring_header_t, offsets) == 5 * SHMB_CACHE_LINE, "offsets");
_Static_assert(offsetof(shmb_ring_header_t, lock) == 6 * SHMB_CACHE_LINE, "lock line");
_Static_assert(offsetof(shmb_ring_header_t, writer) == 7 * SHMB_CACHE_LINE, "writer");
_Static_assert(offsetof(shmb_ring_header_t, counters) == 8 * SHMB_CACHE_LINE, "counters");
_Static_assert(offsetof(shmb_ring_header_t, durable) == 9 * SHMB_CACHE_LINE, "durable");
_Static_assert(offsetof(shmb_ring_header_t, index) == 16 * SHMB_CACHE_LINE, "index");
_Static_assert(sizeof(shmb_ring_header_t) <= SHMB_RING_HEADER_BYTES, "header page");

/* RecordBatch v2 header, big-endian on the wire (DESIGN.md "One byte format"). */
#define SHMB_BATCH_HEADER_BYTES 61
#define SHMB_BATCH_OFF_BASE_OFFSET 0
#define SHMB_BATCH_OFF_LENGTH 8
#define SHMB_BATCH_OFF_LEADER_EPOCH 12
#define SHMB_BATCH_OFF_MAGIC 16
#define SHMB_BATCH_OFF_CRC 17
#define SHMB_BATCH_OFF_ATTRIBUTES 21
#define SHMB_BATCH_OFF_LAST_OFFSET_DELTA 23
#define SHMB_BATCH_OFF_BASE_TIMESTAMP 27
#define SHMB_BATCH_OFF_MAX_TIMESTAMP 35
#define SHMB_BATCH_OFF_PRODUCER_ID 43
#define SHMB_BATCH_OFF_PRODUCER_EPOCH 51
#define SHMB_BATCH_OFF_BASE_SEQUENCE 53
#define SHMB_BATCH_OFF_RECORD_COUNT 57
/* batchLength counts from after itself: total = batchLength + 12 */
#define SHMB_BATCH_LOG_OVERHEAD 12

#endif
