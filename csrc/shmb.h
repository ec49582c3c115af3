/* shmbroker C core: partition rings in shared memory, the Kafka RecordBatch v2 codec,
 * CRC32C and Kafka's murmur2 partitioner.
 *
 * Return convention: an int >= 0 is success or a count; a negative int is a shmb_rc.
 * SHMB_FULL, SHMB_EMPTY and SHMB_LAPPED are normal outcomes to retry or redirect; the
 * rest are errors. After SHMB_ESYS, errno says why. */
#ifndef SHMB_H
#define SHMB_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SHMB_OK = 0,
    SHMB_FULL = -1,         /* no room above the spill position within the timeout */
    SHMB_EMPTY = -2,        /* no new data within the timeout */
    SHMB_EINVAL = -3,       /* bad argument */
    SHMB_ECORRUPT = -4,     /* batch fails validation: length, magic, CRC, records */
    SHMB_ESYS = -5,         /* a system call failed; errno says why */
    SHMB_LAPPED = -6,       /* the writer overwrote the reader's position */
    SHMB_ETIMEDOUT = -7,    /* writer lock not acquired within the timeout */
    SHMB_ELAYOUT = -8,      /* not a ring, or a ring of another layout version */
    SHMB_ETOOBIG = -9,      /* batch larger than the ring, or than the caller's buffer */
    SHMB_EUNSUPPORTED = -10, /* compressed batch where records are needed */
    SHMB_NOTFOUND = -11,    /* offset no longer (or not yet) in the ring */
    SHMB_EDELETED = -12,    /* the ring was deleted: its topic is gone */
    SHMB_EINTR = -13        /* a signal came while waiting: let the caller run its
                             * handlers (Python's Ctrl-C), then call again */
} shmb_rc;

const char *shmb_strerror(int rc);

/* ---- CRC32C (Castagnoli), as Kafka's RecordBatch uses it ---------------------------
 * zlib-style chaining: shmb_crc32c(0, buf, n) is the CRC of buf. */
uint32_t shmb_crc32c(uint32_t crc, const uint8_t *buf, size_t len);
int shmb_crc32c_hardware(void); /* 1 if the SSE4.2 instruction is used */

/* ---- Kafka's murmur2 partitioner ----------------------------------------------------- */
int32_t shmb_murmur2(const uint8_t *key, size_t len);
/* toPositive(murmur2(key)) % partitions, as the Java client and librdkafka's "murmur2" */
int32_t shmb_partition_for_key(const uint8_t *key, size_t len, int32_t partitions);

/* ---- RecordBatch v2 codec ------------------------------------------------------------ */
#define SHMB_TIMESTAMP_NOW INT64_MIN /* "use the wall clock now", in ms */

/* N records as flat arrays. Values (and keys) are concatenated in one buffer each, with
 * one length per record; a length of -1 is a null. keys == NULL: all keys null.
 * timestamps == NULL: every record gets `timestamp`. header_counts == NULL: no headers;
 * otherwise header keys/values are concatenated over all records in order. */
typedef struct shmb_records {
    int32_t count;
    const uint8_t *values;
    const int32_t *value_lens;
    const uint8_t *keys;
    const int32_t *key_lens;
    const int64_t *timestamps;
    int64_t timestamp;
    const int32_t *header_counts;
    const uint8_t *header_keys;
    const int32_t *header_key_lens;
    const uint8_t *header_values;
    const int32_t *header_value_lens;
} shmb_records_t;

/* The wall clock in ms, as SHMB_TIMESTAMP_NOW resolves it. */
int64_t shmb_now_ms(void);
/* Size of the batch shmb_batch_encode would write with the same now_ms, or a negative
 * shmb_rc. now_ms stands in for every SHMB_TIMESTAMP_NOW, so both calls agree. */
int64_t shmb_batch_encoded_bytes(const shmb_records_t *records, int64_t now_ms);
/* Encode one uncompressed batch (CreateTime, no producer id) into out. Returns bytes. */
int64_t shmb_batch_encode(const shmb_records_t *records, int64_t now_ms,
                          int64_t base_offset, uint8_t *out, int64_t out_len);

#define SHMB_VALIDATE_RECORDS 1 /* also parse every record of an uncompressed batch */
/* the caller sealed the batch itself (shmb_batch_seal, or the codec after it): its
 * CRC32C was computed from these bytes, so it is not computed again */
#define SHMB_VALIDATE_SEALED 2
/* Validate one batch that is exactly len bytes: sizes, magic 2, CRC32C, counts.
 * Returns its record count. */
int shmb_batch_validate(const uint8_t *batch, int64_t len, int flags);

/* Decoded records as flat row-major arrays that the caller owns (it sets the two
 * capacities): one row of SHMB_DECODED_RECORD_FIELDS int64 per record,
 *   offset | timestamp | key_pos | key_end | value_pos | value_end | header_count |
 *   first_header
 * and one row of SHMB_DECODED_HEADER_FIELDS per header,
 *   key_pos | key_end | value_pos | value_end
 * Positions index the buffer given to decode, so buf[pos:end] is the bytes; a null key
 * or value has pos = end = -1. Row-major, so Python turns a whole call's output into
 * one list with a single tolist(). */
#define SHMB_DECODED_RECORD_FIELDS 8
#define SHMB_DECODED_HEADER_FIELDS 4
typedef struct shmb_decoded {
    int32_t max_records;
    int32_t max_headers;
    int64_t *record_rows;
    int64_t *header_rows;
    /* results */
    int32_t records;
    int32_t headers;
    int32_t batches;
    int32_t null_keys;
    int32_t null_values;
    int64_t bytes_consumed; /* from start: whole batches decoded; the rest did not fit
                             * the arrays or is a partial batch */
} shmb_decoded_t;

#define SHMB_DECODE_VERIFY_CRC 1
/* Decode as many whole batches of buf[start:end] as the arrays hold. Returns the record
 * count. A partial batch at the end is left for the next call. Control batches are
 * skipped. SHMB_EUNSUPPORTED if the first batch is compressed, SHMB_ETOOBIG if the first
 * batch alone does not fit the arrays. */
int shmb_batches_decode(const uint8_t *buf, int64_t start, int64_t end, shmb_decoded_t *out,
                        int flags);

/* Decoded records as columns the caller owns (column-major, max_records entries
 * each), for polls that build no Python object per record and for Arrow: offset,
 * timestamp, header count, and key and value as position in buf and length (-1: a
 * null; position 0 then). key_views / value_views, when not NULL, get each record's
 * Arrow binary view (16 bytes: the length, then up to 12 bytes inline, else a 4-byte
 * prefix, buffer index 0 and the position in buf), and key_valid / value_valid,
 * when not NULL, Arrow's validity bitmap (bit i set: not null). Records below
 * min_offset (before where a seek landed in its batch) are left out. buf may hold
 * up to INT32_MAX bytes: positions are int32, as Arrow's. */
typedef struct shmb_columns {
    int32_t max_records;
    int64_t min_offset;
    int64_t *offsets;
    int64_t *timestamps;
    int32_t *key_pos;
    int32_t *key_lens;
    int32_t *value_pos;
    int32_t *value_lens;
    int32_t *header_counts;
    uint8_t *key_views;
    uint8_t *value_views;
    uint8_t *key_valid;
    uint8_t *value_valid;
    /* results */
    int32_t records;
    int32_t batches;
    int32_t headers;
    int32_t null_keys;
    int32_t null_values;
    int64_t bytes_consumed;
} shmb_columns_t;

/* shmb_batches_decode's walk, into columns: the same returns and flags. */
int shmb_batches_columns(const uint8_t *buf, int64_t start, int64_t end, shmb_columns_t *out,
                         int flags);

/* Batch headers of a run of batches, row-major, one row of SHMB_SCAN_FIELDS int64:
 *   position (index into the scanned buffer) | bytes | base_offset | last_offset |
 *   max_timestamp | record_count
 * for writing segments and their indexes without decoding records. */
#define SHMB_SCAN_FIELDS 6
typedef struct shmb_scan {
    int32_t max_batches;
    int64_t *rows;
    /* results */
    int32_t batches;
    int32_t stop;           /* why it stopped: 0 end of buffer, 1 partial batch,
                             * 2 rows full, SHMB_ECORRUPT invalid batch */
    int64_t bytes_consumed; /* from start: the whole valid batches scanned */
} shmb_scan_t;

#define SHMB_SCAN_VERIFY 1 /* validate each batch: CRC and, if uncompressed, records */
/* Scan the batch headers of buf[start:end]. Returns the number of batches. */
int shmb_batches_scan(const uint8_t *buf, int64_t start, int64_t end, shmb_scan_t *out,
                      int flags);

/* ---- Partition ring in shared memory -------------------------------------------------- */
typedef struct shmb_ring shmb_ring_t;

typedef struct shmb_ring_stat {
    int64_t capacity_bytes;
    int64_t tail_position;
    int64_t claim_position;
    int64_t spill_position;
    int64_t next_offset;
    int64_t log_start_offset;
    int64_t ring_start_offset;
    uint64_t batches_appended;
    uint64_t records_appended;
    uint64_t bytes_appended;
    uint64_t full_waits;
    uint64_t lock_recoveries;
    uint32_t data_waiters;
    uint32_t spill_waiters;
    int32_t partition_leader_epoch;
    uint32_t layout_version;
    uint32_t creator_pid;
    int64_t created_unix_ns;
    int64_t durable_offset;
    uint32_t durable_waiters;
    int32_t spill_errno;
    uint32_t deleted;
} shmb_ring_stat_t;

/* Bytes the shared-memory object of a ring needs (header + data), or SHMB_EINVAL when
 * capacity is not a power of two multiple of the page size. */
int64_t shmb_ring_object_bytes(int64_t capacity_bytes);
/* Map a ring from a shared-memory fd (the caller keeps or closes the fd). create != 0
 * initialises a new ring whose first offset is base_offset; otherwise the header is
 * checked (SHMB_ELAYOUT) and capacity_bytes / base_offset are ignored. */
int shmb_ring_map(int fd, int create, int64_t capacity_bytes, int64_t base_offset,
                  int32_t partition_leader_epoch, shmb_ring_t **out);
void shmb_ring_unmap(shmb_ring_t *ring);

/* Appends return the offset given to the first record (>= 0) or a shmb_rc.
 * timeout_ms: 0 = don't wait for space, < 0 = wait forever. The batch is in place and
 * visible to readers when this returns. SHMB_EDELETED once the ring is marked deleted,
 * also for an append waiting for space then; SHMB_EINTR when a signal interrupts the
 * wait for space (nothing was appended). */
int64_t shmb_ring_append_batch(shmb_ring_t *ring, const uint8_t *batch, int64_t len,
                               int flags, int32_t timeout_ms);
int64_t shmb_ring_append_records(shmb_ring_t *ring, const shmb_records_t *records,
                                 int32_t timeout_ms);
/* One record, no headers: the per-record fast path. */
int64_t shmb_ring_append_record(shmb_ring_t *ring, const uint8_t *key, int32_t key_len,
                                const uint8_t *value, int32_t value_len, int64_t timestamp,
                                int32_t timeout_ms);
/* One value, no key, the wall clock, waiting up to SHMB_APPEND_VALUE_WAIT_MS for space
 * or the lock (then SHMB_FULL or SHMB_ETIMEDOUT: call again, or
 * shmb_ring_append_record with a timeout): the commonest call, with the fewest
 * arguments, because each costs ~40 ns to convert in cffi. Bounded, so a caller waiting
 * for a full ring regains control often enough to run its signal handlers. */
#define SHMB_APPEND_VALUE_WAIT_MS 50
int64_t shmb_ring_append_value(shmb_ring_t *ring, const uint8_t *value, int32_t value_len);

/* How a reader idles while it waits for data: Aeron's BackoffIdleStrategy. It polls
 * max_spins times with a CPU pause between, then max_yields times with sched_yield()
 * between, then parks: registered as a waiter, it sleeps on the ring's futex until an
 * append wakes it. Parking costs the appender a wake-up syscall and the reader the
 * kernel's wake-up latency, so spins and yields buy latency with CPU. A park that
 * cannot cover every ring at once (shmb_rings_wait without futex_waitv) sleeps on each
 * ring in turn, for min_park_period_ns, doubling up to max_park_period_ns. A NULL
 * strategy parks at once. */
typedef struct shmb_idle {
    int64_t max_spins;
    int64_t max_yields;
    int64_t min_park_period_ns;
    int64_t max_park_period_ns;
} shmb_idle_t;
/* The default (RingReader's, the Consumer's): about 100 us of spins and 100 us of yields
 * (pause ~20 ns, uncontended sched_yield ~0.2 us on a 2020s x86 VM), longer than the gap
 * between records at 10k/s: a steady stream is caught spinning (p50 ~5 us) and never
 * pays a wake-up (~20 us on a VM, ~40 us through Python), at ~0.8 of a core; an idle
 * reader sleeps after ~0.2 ms. benchmarks/bench_consumer_wait.py --sweep shows the
 * trade. Park periods are Aeron's defaults. */
#define SHMB_IDLE_MAX_SPINS 5000
#define SHMB_IDLE_MAX_YIELDS 500
#define SHMB_IDLE_MIN_PARK_PERIOD_NS 1000
#define SHMB_IDLE_MAX_PARK_PERIOD_NS 1000000

/* Every wait below returns SHMB_EINTR when a signal interrupts its sleep. */

/* Copy whole committed batches from *position into buf, at most buf_len bytes, and
 * advance *position. Waits up to timeout_ms for data, idling as `idle` says. Returns
 * bytes copied, SHMB_EMPTY, SHMB_LAPPED (*position was overwritten: read it from the
 * segments), or SHMB_ETOOBIG (the next batch is larger than buf_len; *position is
 * unchanged and the return says nothing more: use shmb_ring_batch_bytes to size the
 * buffer). SHMB_EDELETED instead of SHMB_EMPTY when the ring is marked deleted:
 * batches committed before are still returned first. */
int64_t shmb_ring_read(shmb_ring_t *ring, int64_t *position, uint8_t *buf,
                       int64_t buf_len, int32_t timeout_ms, const shmb_idle_t *idle);
/* Total size of the committed batch at position, or SHMB_LAPPED / SHMB_EMPTY. */
int64_t shmb_ring_batch_bytes(shmb_ring_t *ring, int64_t position);
/* Position of the batch that holds offset, or of the tail when offset == next_offset.
 * SHMB_NOTFOUND when the ring no longer (or does not yet) hold it. */
int shmb_ring_seek(shmb_ring_t *ring, int64_t offset, int64_t *position);

/* Wait for the first record on any of count rings: until some ring's next_offset is
 * past offsets[i] (the next offset its reader wants: the reader may be on the segment
 * files, with no ring position) or the ring is deleted. Sets ready[i] to 1 for each
 * such ring, 0 for the others, and returns how many there are; SHMB_EMPTY after
 * timeout_ms (0: look once). Idles as `idle` says, then parks on every ring at once
 * with futex_waitv (Linux >= 5.16, up to SHMB_RINGS_WAITV_MAX rings), else sleeps on
 * each in turn (see shmb_idle_t): without the syscall, with more rings, or with
 * flags SHMB_RINGS_TURNS. */
#define SHMB_RINGS_WAITV_MAX 128
#define SHMB_RINGS_TURNS 1
int shmb_rings_wait(shmb_ring_t *const *rings, const int64_t *offsets, int32_t count,
                    uint8_t *ready, int32_t timeout_ms, const shmb_idle_t *idle, int flags);

/* ---- the durable log's side ---- */
/* Wait until tail > position (spin_ns, then one futex sleep); returns the tail, or
 * SHMB_EMPTY after timeout_ms or when woken without new data (shmb_ring_wake: the
 * caller looks at why), or SHMB_EDELETED when the ring is deleted with nothing past
 * position. */
int64_t shmb_ring_wait(shmb_ring_t *ring, int64_t position, int32_t timeout_ms,
                       int64_t spin_ns);
/* Committed, unspilled bytes at position (spill <= position <= tail): *data points at
 * them in the mapping; returns how many (up to the tail). They stay unchanged until the
 * spill position passes them, so they can be written to a file as they are. */
int64_t shmb_ring_unspilled(shmb_ring_t *ring, int64_t position, const uint8_t **data);
/* The durable log has persisted everything below position: appenders may reuse it.
 * offset: the offset of the batch at position (the log end offset), a seek hint, or -1
 * if the caller does not know it. */
int shmb_ring_spill_advance(shmb_ring_t *ring, int64_t position, int64_t offset);
/* Every offset below this is in the segment files as whole batches: the spill
 * publishes it (spill_advance's offset) only after writing them. Segment readers
 * in other processes bound their reads by it, never by the file size. */
int64_t shmb_ring_spilled_offset(shmb_ring_t *ring);
/* Recovery cut the segments below what was spilled (damaged after the spill wrote
 * them): move the spill position back to position, the batch at offset, so the
 * ring's bytes from there are spilled again. SHMB_LAPPED if appends overwrote
 * them since; SHMB_EINVAL above the spill position. Takes the writer lock. */
int shmb_ring_spill_rewind(shmb_ring_t *ring, int64_t position, int64_t offset);
/* errno of the last failed spill attempt (0 when it works again), for producers' errors. */
void shmb_ring_set_spill_errno(shmb_ring_t *ring, int32_t err);
/* Every offset below `offset` is fsynced: wake producers waiting for durability. */
int shmb_ring_durable_advance(shmb_ring_t *ring, int64_t offset);
/* Wait until durable_offset >= offset. 0, or SHMB_EMPTY after timeout_ms, or
 * SHMB_EDELETED when the ring is deleted first, or SHMB_EINTR. */
int shmb_ring_wait_durable(shmb_ring_t *ring, int64_t offset, int32_t timeout_ms);
int shmb_ring_set_log_start_offset(shmb_ring_t *ring, int64_t offset);

/* ---- the broker's side ---- */
/* The ring's topic was deleted: every append from now on returns SHMB_EDELETED, and so
 * do reads and waits with nothing left to return; every appender, reader and
 * durability waiter asleep on the ring wakes at once. Takes the writer lock (for up to
 * 1 s: longer only if its holder is stopped), so an append in progress commits first
 * and stays readable. The broker calls this before unlinking the ring. */
int shmb_ring_mark_deleted(shmb_ring_t *ring);
/* Wake every reader and spiller asleep on the ring's data, to look again (a
 * spill thread asked to stop). */
void shmb_ring_wake(shmb_ring_t *ring);
void shmb_ring_stat(shmb_ring_t *ring, shmb_ring_stat_t *out);
/* The fields a reader asks for often, each one load (shmb_ring_stat fills 22, which
 * costs a Python caller ~10 us more): the high watermark (the offset the next append
 * gets), the log start offset (retention's), and the tail position. */
int64_t shmb_ring_high_watermark(shmb_ring_t *ring);
int64_t shmb_ring_log_start_offset(shmb_ring_t *ring);
int64_t shmb_ring_tail_position(shmb_ring_t *ring);
/* The header invariants appends rely on (spill <= tail <= claim, tail - spill <=
 * capacity, next_offset just past the last batch): 0, or which fails, with the
 * value found and the one expected (an append returns SHMB_ECORRUPT then). */
#define SHMB_CHECK_SPILL_TAIL 1
#define SHMB_CHECK_TAIL_CLAIM 2
#define SHMB_CHECK_UNSPILLED 3
#define SHMB_CHECK_NEXT_OFFSET 4
#define SHMB_CHECK_CLAIM_AHEAD 5
int shmb_ring_check(shmb_ring_t *ring, int64_t *found, int64_t *expected);

#endif
