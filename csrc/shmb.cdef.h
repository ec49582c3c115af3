/* What Python may call: the cffi view of shmb.h, made by tools/gen_cdef.py.
 * Plain declarations only; set_source() compiles shmb.h against these, so any
 * line that disagrees with it fails the build. */
typedef enum {
    SHMB_OK = 0,
    SHMB_FULL = -1,
    SHMB_EMPTY = -2,
    SHMB_EINVAL = -3,
    SHMB_ECORRUPT = -4,
    SHMB_ESYS = -5,
    SHMB_LAPPED = -6,
    SHMB_ETIMEDOUT = -7,
    SHMB_ELAYOUT = -8,
    SHMB_ETOOBIG = -9,
    SHMB_EUNSUPPORTED = -10,
    SHMB_NOTFOUND = -11,
    SHMB_EDELETED = -12,
    SHMB_EINTR = -13
} shmb_rc;

const char *shmb_strerror(int rc);

uint32_t shmb_crc32c(uint32_t crc, const uint8_t *buf, size_t len);
int shmb_crc32c_hardware(void);

int32_t shmb_murmur2(const uint8_t *key, size_t len);

int32_t shmb_partition_for_key(const uint8_t *key, size_t len, int32_t partitions);

#define SHMB_TIMESTAMP_NOW ...

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

int64_t shmb_now_ms(void);

int64_t shmb_batch_encoded_bytes(const shmb_records_t *records, int64_t now_ms);

int64_t shmb_batch_encode(const shmb_records_t *records, int64_t now_ms,
                          int64_t base_offset, uint8_t *out, int64_t out_len);

#define SHMB_VALIDATE_RECORDS ...
#define SHMB_VALIDATE_SEALED ...

int shmb_batch_validate(const uint8_t *batch, int64_t len, int flags);

#define SHMB_DECODED_RECORD_FIELDS ...
#define SHMB_DECODED_HEADER_FIELDS ...
typedef struct shmb_decoded {
    int32_t max_records;
    int32_t max_headers;
    int64_t *record_rows;
    int64_t *header_rows;

    int32_t records;
    int32_t headers;
    int32_t batches;
    int32_t null_keys;
    int32_t null_values;
    int64_t bytes_consumed;
} shmb_decoded_t;

#define SHMB_DECODE_VERIFY_CRC ...

int shmb_batches_decode(const uint8_t *buf, int64_t start, int64_t end, shmb_decoded_t *out,
                        int flags);

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
        int32_t records;
    int32_t batches;
    int32_t headers;
    int32_t null_keys;
    int32_t null_values;
    int64_t bytes_consumed;
} shmb_columns_t;

int shmb_batches_columns(const uint8_t *buf, int64_t start, int64_t end, shmb_columns_t *out,
                         int flags);

#define SHMB_SCAN_FIELDS ...
typedef struct shmb_scan {
    int32_t max_batches;
    int64_t *rows;

    int32_t batches;
    int32_t stop;
    int64_t bytes_consumed;
} shmb_scan_t;

#define SHMB_SCAN_VERIFY ...

int shmb_batches_scan(const uint8_t *buf, int64_t start, int64_t end, shmb_scan_t *out,
                      int flags);

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

int64_t shmb_ring_object_bytes(int64_t capacity_bytes);

int shmb_ring_map(int fd, int create, int64_t capacity_bytes, int64_t base_offset,
                  int32_t partition_leader_epoch, shmb_ring_t **out);
void shmb_ring_unmap(shmb_ring_t *ring);

int64_t shmb_ring_append_batch(shmb_ring_t *ring, const uint8_t *batch, int64_t len,
                               int flags, int32_t timeout_ms);
int64_t shmb_ring_append_records(shmb_ring_t *ring, const shmb_records_t *records,
                                 int32_t timeout_ms);

int64_t shmb_ring_append_record(shmb_ring_t *ring, const uint8_t *key, int32_t key_len,
                                const uint8_t *value, int32_t value_len, int64_t timestamp,
                                int32_t timeout_ms);

#define SHMB_APPEND_VALUE_WAIT_MS ...
int64_t shmb_ring_append_value(shmb_ring_t *ring, const uint8_t *value, int32_t value_len);

typedef struct shmb_idle {
    int64_t max_spins;
    int64_t max_yields;
    int64_t min_park_period_ns;
    int64_t max_park_period_ns;
} shmb_idle_t;
#define SHMB_IDLE_MAX_SPINS ...
#define SHMB_IDLE_MAX_YIELDS ...
#define SHMB_IDLE_MIN_PARK_PERIOD_NS ...
#define SHMB_IDLE_MAX_PARK_PERIOD_NS ...

int64_t shmb_ring_read(shmb_ring_t *ring, int64_t *position, uint8_t *buf,
                       int64_t buf_len, int32_t timeout_ms, const shmb_idle_t *idle);

int64_t shmb_ring_batch_bytes(shmb_ring_t *ring, int64_t position);

int shmb_ring_seek(shmb_ring_t *ring, int64_t offset, int64_t *position);

#define SHMB_RINGS_WAITV_MAX ...
#define SHMB_RINGS_TURNS ...
int shmb_rings_wait(shmb_ring_t *const *rings, const int64_t *offsets, int32_t count,
                    uint8_t *ready, int32_t timeout_ms, const shmb_idle_t *idle, int flags);

int64_t shmb_ring_wait(shmb_ring_t *ring, int64_t position, int32_t timeout_ms,
                       int64_t spin_ns);

int64_t shmb_ring_unspilled(shmb_ring_t *ring, int64_t position, const uint8_t **data);

int shmb_ring_spill_advance(shmb_ring_t *ring, int64_t position, int64_t offset);
int64_t shmb_ring_spilled_offset(shmb_ring_t *ring);
int shmb_ring_spill_rewind(shmb_ring_t *ring, int64_t position, int64_t offset);

void shmb_ring_set_spill_errno(shmb_ring_t *ring, int32_t err);

int shmb_ring_durable_advance(shmb_ring_t *ring, int64_t offset);

int shmb_ring_wait_durable(shmb_ring_t *ring, int64_t offset, int32_t timeout_ms);
int shmb_ring_set_log_start_offset(shmb_ring_t *ring, int64_t offset);

int shmb_ring_mark_deleted(shmb_ring_t *ring);
void shmb_ring_wake(shmb_ring_t *ring);
void shmb_ring_stat(shmb_ring_t *ring, shmb_ring_stat_t *out);
int64_t shmb_ring_high_watermark(shmb_ring_t *ring);
int64_t shmb_ring_log_start_offset(shmb_ring_t *ring);
int64_t shmb_ring_tail_position(shmb_ring_t *ring);
#define SHMB_CHECK_SPILL_TAIL ...
#define SHMB_CHECK_TAIL_CLAIM ...
#define SHMB_CHECK_UNSPILLED ...
#define SHMB_CHECK_NEXT_OFFSET ...
#define SHMB_CHECK_CLAIM_AHEAD ...
int shmb_ring_check(shmb_ring_t *ring, int64_t *found, int64_t *expected);
