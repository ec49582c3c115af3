/* Kafka RecordBatch v2: encode N records as one uncompressed batch, validate a batch
 * from a producer, and decode batches into flat arrays for Python.
 *
 * Batch header (61 bytes, big-endian): see shmb_layout.h SHMB_BATCH_OFF_*. Record:
 *   length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
 *   keyLength varint (-1 null) | key | valueLength varint (-1 null) | value |
 *   headerCount varint | { keyLength varint | key | valueLength varint | value }*
 * The CRC32C covers attributes..end, not baseOffset or partitionLeaderEpoch, so the
 * ring patches those two without recomputing it. */
#define _POSIX_C_SOURCE 200809L
#include "shmb.h"

#include <time.h>

#include "shmb_codec.h"
#include "shmb_layout.h"

int64_t shmb_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *shmb_strerror(int rc) {
    switch (rc) {
    case SHMB_OK: return "ok";
    case SHMB_FULL: return "ring full: no room above the spill position";
    case SHMB_EMPTY: return "no new data";
    case SHMB_EINVAL: return "invalid argument";
    case SHMB_ECORRUPT: return "corrupt record batch";
    case SHMB_ESYS: return "system call failed";
    case SHMB_LAPPED: return "position overwritten by the writer";
    case SHMB_ETIMEDOUT: return "timed out waiting for the writer lock";
    case SHMB_ELAYOUT: return "not a ring of this layout version";
    case SHMB_ETOOBIG: return "batch too large";
    case SHMB_EUNSUPPORTED: return "compressed batch";
    case SHMB_NOTFOUND: return "offset not in the ring";
    case SHMB_EDELETED: return "the ring was deleted: its topic is gone";
    case SHMB_EINTR: return "interrupted by a signal";
    default: return "unknown error";
    }
}

/* length, attributes, timestampDelta, offsetDelta, keyLength, valueLength, headerCount:
 * one byte each at least */
#define MIN_RECORD_BYTES 7

/* Per-record walk over shmb_records_t, shared by the sizing and encoding passes so
 * that both agree byte for byte. */
typedef struct {
    const shmb_records_t *r;
    int64_t value_at, key_at, hkey_at, hvalue_at;
    int32_t header_at;
    int64_t now_ms; /* what SHMB_TIMESTAMP_NOW means: read once, so sizing and
                     * encoding agree on every varint */
    int64_t base_timestamp;
} walk_t;

static inline int64_t record_timestamp(const walk_t *w, int32_t i) {
    int64_t ts = w->r->timestamps ? w->r->timestamps[i] : w->r->timestamp;
    return ts == SHMB_TIMESTAMP_NOW ? w->now_ms : ts;
}

/* Body size of record i (without its length prefix), or -1 for a bad length. */
static inline int64_t record_body_bytes(const walk_t *w, int32_t i) {
    const shmb_records_t *r = w->r;
    int32_t kl = r->keys ? r->key_lens[i] : -1;
    int32_t vl = r->value_lens[i];
    if (kl < -1 || vl < -1) return -1;
    int64_t n = 1 + shmb_varint_bytes(record_timestamp(w, i) - w->base_timestamp) +
                shmb_varint_bytes(i) + shmb_varint_bytes(kl) + (kl > 0 ? kl : 0) +
                shmb_varint_bytes(vl) + (vl > 0 ? vl : 0);
    int32_t hc = r->header_counts ? r->header_counts[i] : 0;
    if (hc < 0) return -1;
    n += shmb_varint_bytes(hc);
    for (int32_t h = w->header_at; h < w->header_at + hc; h++) {
        int32_t hk = r->header_key_lens[h], hv = r->header_value_lens[h];
        if (hk < 0 || hv < -1) return -1; /* header keys are non-null strings */
        n += shmb_varint_bytes(hk) + hk + shmb_varint_bytes(hv) + (hv > 0 ? hv : 0);
    }
    return n;
}

static inline void walk_init(walk_t *w, const shmb_records_t *r, int64_t now_ms) {
    w->r = r;
    w->value_at = w->key_at = w->hkey_at = w->hvalue_at = 0;
    w->header_at = 0;
    w->now_ms = now_ms;
    w->base_timestamp = record_timestamp(w, 0);
}

int64_t shmb_batch_encoded_bytes(const shmb_records_t *r, int64_t now_ms) {
    if (!r || r->count <= 0 || !r->value_lens || (r->keys && !r->key_lens)) return SHMB_EINVAL;
    walk_t w;
    walk_init(&w, r, now_ms);
    int64_t total = SHMB_BATCH_HEADER_BYTES;
    for (int32_t i = 0; i < r->count; i++) {
        int64_t body = record_body_bytes(&w, i);
        if (body < 0) return SHMB_EINVAL;
        total += shmb_varint_bytes(body) + body;
        w.header_at += r->header_counts ? r->header_counts[i] : 0;
    }
    if (total - SHMB_BATCH_LOG_OVERHEAD > INT32_MAX) return SHMB_ETOOBIG;
    return total;
}

static inline uint8_t *put_bytes(uint8_t *p, const uint8_t *src, int64_t *at, int32_t len) {
    p = shmb_put_varint(p, len);
    if (len > 0) {
        memcpy(p, src + *at, (size_t)len);
        p += len;
        *at += len;
    }
    return p;
}

void shmb_batch_seal(uint8_t *out, int64_t total, int64_t base_offset, int32_t count,
                     int64_t base_ts, int64_t max_ts) {
    shmb_put_be64(out + SHMB_BATCH_OFF_BASE_OFFSET, (uint64_t)base_offset);
    shmb_put_be32(out + SHMB_BATCH_OFF_LENGTH, (uint32_t)(total - SHMB_BATCH_LOG_OVERHEAD));
    shmb_put_be32(out + SHMB_BATCH_OFF_LEADER_EPOCH, 0);
    out[SHMB_BATCH_OFF_MAGIC] = 2;
    shmb_put_be16(out + SHMB_BATCH_OFF_ATTRIBUTES, 0); /* no compression, CreateTime */
    shmb_put_be32(out + SHMB_BATCH_OFF_LAST_OFFSET_DELTA, (uint32_t)(count - 1));
    shmb_put_be64(out + SHMB_BATCH_OFF_BASE_TIMESTAMP, (uint64_t)base_ts);
    shmb_put_be64(out + SHMB_BATCH_OFF_MAX_TIMESTAMP, (uint64_t)max_ts);
    shmb_put_be64(out + SHMB_BATCH_OFF_PRODUCER_ID, UINT64_MAX); /* -1: no producer id */
    shmb_put_be16(out + SHMB_BATCH_OFF_PRODUCER_EPOCH, 0xffff);
    shmb_put_be32(out + SHMB_BATCH_OFF_BASE_SEQUENCE, UINT32_MAX);
    shmb_put_be32(out + SHMB_BATCH_OFF_RECORD_COUNT, (uint32_t)count);
    shmb_put_be32(out + SHMB_BATCH_OFF_CRC,
                  shmb_crc32c(0, out + SHMB_BATCH_OFF_ATTRIBUTES,
                              (size_t)(total - SHMB_BATCH_OFF_ATTRIBUTES)));
}

int64_t shmb_batch_encode(const shmb_records_t *r, int64_t now_ms, int64_t base_offset,
                          uint8_t *out, int64_t out_len) {
    int64_t total = shmb_batch_encoded_bytes(r, now_ms);
    if (total < 0) return total;
    if (!out || out_len < total) return SHMB_ETOOBIG;
    walk_t w;
    walk_init(&w, r, now_ms);
    uint8_t *p = out + SHMB_BATCH_HEADER_BYTES;
    int64_t max_ts = INT64_MIN;
    for (int32_t i = 0; i < r->count; i++) {
        int64_t ts = record_timestamp(&w, i);
        if (ts > max_ts) max_ts = ts;
        p = shmb_put_varint(p, record_body_bytes(&w, i));
        *p++ = 0; /* record attributes: unused */
        p = shmb_put_varint(p, ts - w.base_timestamp);
        p = shmb_put_varint(p, i);
        p = put_bytes(p, r->keys, &w.key_at, r->keys ? r->key_lens[i] : -1);
        p = put_bytes(p, r->values, &w.value_at, r->value_lens[i]);
        int32_t hc = r->header_counts ? r->header_counts[i] : 0;
        p = shmb_put_varint(p, hc);
        for (int32_t h = w.header_at; h < w.header_at + hc; h++) {
            p = put_bytes(p, r->header_keys, &w.hkey_at, r->header_key_lens[h]);
            p = put_bytes(p, r->header_values, &w.hvalue_at, r->header_value_lens[h]);
        }
        w.header_at += hc;
    }
    shmb_batch_seal(out, total, base_offset, r->count, w.base_timestamp, max_ts);
    return total;
}

/* Parses one record at p. Returns the end of the record or NULL if malformed. */
typedef struct {
    int64_t ts_delta, offset_delta, key_len, value_len, header_count;
    const uint8_t *key, *value, *headers;
} record_view_t;

static const uint8_t *parse_record(const uint8_t *p, const uint8_t *end, record_view_t *v) {
    int64_t len;
    if (!(p = shmb_get_varint(p, end, 5, &len)) || len < 0 || len > end - p) return NULL;
    const uint8_t *rend = p + len;
    if (p >= rend) return NULL;
    p++; /* attributes */
    if (!(p = shmb_get_varint(p, rend, 10, &v->ts_delta))) return NULL;
    if (!(p = shmb_get_varint(p, rend, 5, &v->offset_delta))) return NULL;
    if (!(p = shmb_get_varint(p, rend, 5, &v->key_len)) || v->key_len < -1 ||
        v->key_len > rend - p)
        return NULL;
    v->key = p;
    if (v->key_len > 0) p += v->key_len;
    if (!(p = shmb_get_varint(p, rend, 5, &v->value_len)) || v->value_len < -1 ||
        v->value_len > rend - p)
        return NULL;
    v->value = p;
    if (v->value_len > 0) p += v->value_len;
    if (!(p = shmb_get_varint(p, rend, 5, &v->header_count)) || v->header_count < 0)
        return NULL;
    v->headers = p;
    for (int64_t h = 0; h < v->header_count; h++) {
        int64_t kl, vl;
        if (!(p = shmb_get_varint(p, rend, 5, &kl)) || kl < 0 || kl > rend - p) return NULL;
        p += kl;
        if (!(p = shmb_get_varint(p, rend, 5, &vl)) || vl < -1 || vl > rend - p) return NULL;
        if (vl > 0) p += vl;
    }
    return p == rend ? rend : NULL;
}

int shmb_batch_validate(const uint8_t *b, int64_t len, int flags) {
    if (!b || len < SHMB_BATCH_HEADER_BYTES) return SHMB_ECORRUPT;
    if ((int64_t)shmb_be32(b + SHMB_BATCH_OFF_LENGTH) + SHMB_BATCH_LOG_OVERHEAD != len ||
        b[SHMB_BATCH_OFF_MAGIC] != 2)
        return SHMB_ECORRUPT;
    if (!(flags & SHMB_VALIDATE_SEALED) &&
        shmb_crc32c(0, b + SHMB_BATCH_OFF_ATTRIBUTES,
                    (size_t)(len - SHMB_BATCH_OFF_ATTRIBUTES)) !=
            shmb_be32(b + SHMB_BATCH_OFF_CRC))
        return SHMB_ECORRUPT;
    int32_t count = (int32_t)shmb_be32(b + SHMB_BATCH_OFF_RECORD_COUNT);
    int32_t last_delta = (int32_t)shmb_be32(b + SHMB_BATCH_OFF_LAST_OFFSET_DELTA);
    if (count <= 0 || last_delta != count - 1) return SHMB_ECORRUPT;
    /* an uncompressed record takes at least MIN_RECORD_BYTES */
    if ((shmb_be16(b + SHMB_BATCH_OFF_ATTRIBUTES) & 7) == 0 &&
        count > (len - SHMB_BATCH_HEADER_BYTES) / MIN_RECORD_BYTES)
        return SHMB_ECORRUPT;
    uint16_t attributes = shmb_be16(b + SHMB_BATCH_OFF_ATTRIBUTES);
    if ((attributes & 7) > 4) return SHMB_ECORRUPT; /* codecs: none gzip snappy lz4 zstd */
    if ((flags & SHMB_VALIDATE_RECORDS) && (attributes & 7) == 0) {
        const uint8_t *p = b + SHMB_BATCH_HEADER_BYTES, *end = b + len;
        for (int32_t i = 0; i < count; i++) {
            record_view_t v;
            if (!(p = parse_record(p, end, &v)) || v.offset_delta != i) return SHMB_ECORRUPT;
        }
        if (p != end) return SHMB_ECORRUPT;
    }
    return count;
}

/* The whole batch at b, avail bytes available: its total bytes, 0 when it is partial
 * (the next call gets it), or SHMB_ECORRUPT (length, magic, with
 * SHMB_DECODE_VERIFY_CRC the CRC). Both decoders walk batches with it. */
static int64_t whole_batch(const uint8_t *b, int64_t avail, int flags) {
    if (avail < SHMB_BATCH_LOG_OVERHEAD) return 0;
    int64_t total = (int64_t)shmb_be32(b + SHMB_BATCH_OFF_LENGTH) + SHMB_BATCH_LOG_OVERHEAD;
    if (total < SHMB_BATCH_HEADER_BYTES) return SHMB_ECORRUPT;
    if (total > avail) return 0;
    if (b[SHMB_BATCH_OFF_MAGIC] != 2) return SHMB_ECORRUPT;
    if ((flags & SHMB_DECODE_VERIFY_CRC) &&
        shmb_crc32c(0, b + SHMB_BATCH_OFF_ATTRIBUTES,
                    (size_t)(total - SHMB_BATCH_OFF_ATTRIBUTES)) !=
            shmb_be32(b + SHMB_BATCH_OFF_CRC))
        return SHMB_ECORRUPT;
    return total;
}

/* What a decoder reads of a whole batch's header before its records. */
typedef struct {
    int32_t count;
    int64_t base_offset;
    int64_t base_ts;
    int64_t max_ts;
    int log_append_time;
} batch_info_t;

#define BATCH_RECORDS 0 /* decode its records */
#define BATCH_SKIP 1    /* a control batch (transaction markers): not for users */
#define BATCH_STOP 2    /* leave it for the next call */

/* The whole batch at b (total bytes) for a decode that has `batches` batches and
 * `records` of its max_records: BATCH_RECORDS with info, BATCH_SKIP, BATCH_STOP
 * (compressed, or over max_records, after others), or a negative rc for the first
 * batch (SHMB_EUNSUPPORTED, SHMB_ETOOBIG) or a bad count. */
static int batch_info(const uint8_t *b, int64_t total, int32_t batches, int64_t records,
                      int32_t max_records, batch_info_t *info) {
    uint16_t attributes = shmb_be16(b + SHMB_BATCH_OFF_ATTRIBUTES);
    if (attributes & 0x20) return BATCH_SKIP;
    if (attributes & 7) return batches == 0 ? SHMB_EUNSUPPORTED : BATCH_STOP;
    int32_t count = (int32_t)shmb_be32(b + SHMB_BATCH_OFF_RECORD_COUNT);
    if (count < 0 || count > (total - SHMB_BATCH_HEADER_BYTES) / MIN_RECORD_BYTES)
        return SHMB_ECORRUPT;
    if (records + (int64_t)count > max_records) return batches == 0 ? SHMB_ETOOBIG : BATCH_STOP;
    info->count = count;
    info->base_offset = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_BASE_OFFSET);
    info->base_ts = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_BASE_TIMESTAMP);
    info->max_ts = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_MAX_TIMESTAMP);
    info->log_append_time = (attributes & 0x08) != 0;
    return BATCH_RECORDS;
}

int shmb_batches_decode(const uint8_t *buf, int64_t start, int64_t end, shmb_decoded_t *o,
                        int flags) {
    if (!buf || !o || start < 0 || end < start) return SHMB_EINVAL;
    o->records = o->headers = o->batches = o->null_keys = o->null_values = 0;
    o->bytes_consumed = 0;
    int64_t at = start;
    while (end - at >= SHMB_BATCH_LOG_OVERHEAD) {
        const uint8_t *b = buf + at;
        int64_t total = whole_batch(b, end - at, flags);
        if (total < 0) return (int)total;
        if (total == 0) break; /* partial batch: the next call gets it */
        batch_info_t info;
        int kind = batch_info(b, total, o->batches, o->records, o->max_records, &info);
        if (kind < 0) return kind;
        if (kind == BATCH_STOP) break;
        if (kind == BATCH_SKIP) {
            at += total;
            o->batches++;
            o->bytes_consumed = at - start;
            continue;
        }
        int64_t base_offset = info.base_offset, base_ts = info.base_ts, max_ts = info.max_ts;
        int log_append_time = info.log_append_time;
        const uint8_t *p = b + SHMB_BATCH_HEADER_BYTES, *bend = b + total;
        int32_t n = o->records, h = o->headers, null_keys = 0, null_values = 0;
        for (int32_t i = 0; i < info.count; i++, n++) {
            record_view_t v;
            if (!(p = parse_record(p, bend, &v))) return SHMB_ECORRUPT;
            if (h + v.header_count > o->max_headers) {
                if (o->batches == 0) return SHMB_ETOOBIG;
                goto full; /* this batch's rows are dropped: counts not yet advanced */
            }
            int64_t *row = o->record_rows + (int64_t)n * SHMB_DECODED_RECORD_FIELDS;
            row[0] = base_offset + v.offset_delta;
            row[1] = log_append_time ? max_ts : base_ts + v.ts_delta;
            if (v.key_len < 0) {
                row[2] = row[3] = -1;
                null_keys++;
            } else {
                row[2] = v.key - buf;
                row[3] = row[2] + v.key_len;
            }
            if (v.value_len < 0) {
                row[4] = row[5] = -1;
                null_values++;
            } else {
                row[4] = v.value - buf;
                row[5] = row[4] + v.value_len;
            }
            row[6] = v.header_count;
            row[7] = h;
            const uint8_t *q = v.headers;
            for (int64_t k = 0; k < v.header_count; k++, h++) {
                int64_t kl = 0, vl = -1;
                int64_t *hrow = o->header_rows + (int64_t)h * SHMB_DECODED_HEADER_FIELDS;
                q = shmb_get_varint(q, bend, 5, &kl); /* parse_record checked these */
                hrow[0] = q - buf;
                hrow[1] = hrow[0] + kl;
                q += kl;
                q = shmb_get_varint(q, bend, 5, &vl);
                hrow[2] = vl < 0 ? -1 : q - buf;
                hrow[3] = vl < 0 ? -1 : hrow[2] + vl;
                if (vl > 0) q += vl;
            }
        }
        if (p != bend) return SHMB_ECORRUPT;
        o->records = n;
        o->headers = h;
        o->null_keys += null_keys;
        o->null_values += null_values;
        o->batches++;
        at += total;
        o->bytes_consumed = at - start;
    }
full:
    return o->records;
}

/* An Arrow binary view (Arrow's columnar format, "Variable-size Binary View
 * Layout"): length i32, then up to 12 bytes inline, else a 4-byte prefix, buffer
 * index 0 and the offset in that buffer (buf). Zeroed first: Arrow wants the unused
 * inline bytes 0. */
static inline void put_view(uint8_t *view, const uint8_t *buf, int64_t pos, int64_t len) {
    memset(view, 0, 16);
    if (len <= 0) return; /* a null or an empty value: length 0 */
    int32_t n = (int32_t)len, index = 0, offset = (int32_t)pos;
    memcpy(view, &n, 4);
    if (len <= 12) {
        memcpy(view + 4, buf + pos, (size_t)len);
        return;
    }
    memcpy(view + 4, buf + pos, 4);
    memcpy(view + 8, &index, 4);
    memcpy(view + 12, &offset, 4);
}

static inline void put_column(const uint8_t *buf, const uint8_t *at, int64_t len, int32_t i,
                              int32_t *pos, int32_t *lens, uint8_t *views, uint8_t *valid,
                              int32_t *nulls) {
    int64_t p = len < 0 ? 0 : at - buf;
    pos[i] = (int32_t)p;
    lens[i] = (int32_t)len;
    if (len < 0) (*nulls)++;
    if (views) put_view(views + (int64_t)i * 16, buf, p, len);
    if (valid) {
        uint8_t bit = (uint8_t)(1u << (i & 7));
        if (len < 0)
            valid[i >> 3] &= (uint8_t)~bit;
        else
            valid[i >> 3] |= bit;
    }
}

int shmb_batches_columns(const uint8_t *buf, int64_t start, int64_t end, shmb_columns_t *o,
                         int flags) {
    /* positions are int32 in the columns, as in Arrow's views */
    if (!buf || !o || start < 0 || end < start || end > INT32_MAX) return SHMB_EINVAL;
    o->records = o->headers = o->batches = o->null_keys = o->null_values = 0;
    o->bytes_consumed = 0;
    int64_t at = start;
    while (end - at >= SHMB_BATCH_LOG_OVERHEAD) {
        const uint8_t *b = buf + at;
        int64_t total = whole_batch(b, end - at, flags);
        if (total < 0) return (int)total;
        if (total == 0) break;
        batch_info_t info;
        int kind = batch_info(b, total, o->batches, o->records, o->max_records, &info);
        if (kind < 0) return kind;
        if (kind == BATCH_STOP) break;
        if (kind == BATCH_RECORDS) {
            const uint8_t *p = b + SHMB_BATCH_HEADER_BYTES, *bend = b + total;
            int32_t n = o->records, null_keys = 0, null_values = 0, headers = 0;
            for (int32_t i = 0; i < info.count; i++) {
                record_view_t v;
                if (!(p = parse_record(p, bend, &v))) return SHMB_ECORRUPT;
                int64_t offset = info.base_offset + v.offset_delta;
                if (offset < o->min_offset) continue;
                o->offsets[n] = offset;
                o->timestamps[n] =
                    info.log_append_time ? info.max_ts : info.base_ts + v.ts_delta;
                put_column(buf, v.key, v.key_len, n, o->key_pos, o->key_lens, o->key_views,
                           o->key_valid, &null_keys);
                put_column(buf, v.value, v.value_len, n, o->value_pos, o->value_lens,
                           o->value_views, o->value_valid, &null_values);
                o->header_counts[n] = (int32_t)v.header_count;
                headers += (int32_t)v.header_count;
                n++;
            }
            if (p != bend) return SHMB_ECORRUPT;
            o->records = n;
            o->null_keys += null_keys;
            o->null_values += null_values;
            o->headers += headers;
        }
        o->batches++;
        at += total;
        o->bytes_consumed = at - start;
    }
    return o->records;
}

int shmb_batches_scan(const uint8_t *buf, int64_t start, int64_t end, shmb_scan_t *o,
                      int flags) {
    if (!buf || !o || start < 0 || end < start) return SHMB_EINVAL;
    o->batches = 0;
    o->stop = 0;
    o->bytes_consumed = 0;
    int64_t at = start;
    while (at < end) {
        if (o->batches >= o->max_batches) {
            o->stop = 2;
            break;
        }
        const uint8_t *b = buf + at;
        if (end - at < SHMB_BATCH_HEADER_BYTES) {
            o->stop = 1;
            break;
        }
        int64_t total = (int64_t)shmb_be32(b + SHMB_BATCH_OFF_LENGTH) + SHMB_BATCH_LOG_OVERHEAD;
        if (total < SHMB_BATCH_HEADER_BYTES || b[SHMB_BATCH_OFF_MAGIC] != 2) {
            o->stop = SHMB_ECORRUPT;
            break;
        }
        if (total > end - at) {
            o->stop = 1;
            break;
        }
        if ((flags & SHMB_SCAN_VERIFY) && shmb_batch_validate(b, total, SHMB_VALIDATE_RECORDS) < 0) {
            o->stop = SHMB_ECORRUPT;
            break;
        }
        int64_t *row = o->rows + (int64_t)o->batches * SHMB_SCAN_FIELDS;
        int64_t base = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_BASE_OFFSET);
        row[0] = at;
        row[1] = total;
        row[2] = base;
        row[3] = base + (int32_t)shmb_be32(b + SHMB_BATCH_OFF_LAST_OFFSET_DELTA);
        row[4] = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_MAX_TIMESTAMP);
        row[5] = (int32_t)shmb_be32(b + SHMB_BATCH_OFF_RECORD_COUNT);
        o->batches++;
        at += total;
        o->bytes_consumed = at - start;
    }
    return o->batches;
}
