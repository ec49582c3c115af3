/* Partition ring: one writer at a time (robust process-shared mutex), any number of
 * readers, no reader state in shared memory. See shmb_layout.h for the bytes.
 *
 * Invariants:
 *   spill_position <= tail_position <= claim_position (claim is the highest end ever
 *   claimed, also by a writer that died), and claim - capacity <= spill: an appender
 *   never overwrites bytes the durable log has not persisted.
 *   Bytes in [tail, claim) are never visible: tail moves only after a whole batch is in
 *   place, so a writer killed at any instruction leaves nothing torn behind; the next
 *   lock holder writes over its bytes.
 *   A reader's copy of [p, p + n) is good if claim - capacity <= p after the copy
 *   (seqlock): no writer reached those ring bytes on its next lap.
 *   The deleted flag is stored holding the writer lock and never cleared: an append
 *   commits wholly before it or fails after it, so no append succeeds into a ring
 *   whose topic is gone, and a reader drains every batch committed before it. (The
 *   one exception: a lock holder stopped past LOCK_NOWAIT_BOUND_MS.) */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shmb.h"
#include "shmb_atomic.h"
#include "shmb_codec.h"
#include "shmb_layout.h"

struct shmb_ring {
    shmb_ring_header_t *hdr;
    uint8_t *data; /* capacity bytes, then the same bytes again */
    int64_t capacity;
    int64_t mask;
    int slot_shift; /* index slot of position p: (p >> slot_shift) % SLOTS */
    size_t reserved_bytes;
};

/* Bound on waiting for the writer lock when the caller asked not to wait for space,
 * and when marking a ring deleted: the lock is held only while copying one batch, so
 * this is reached only when the holder is stopped (SIGSTOP, debugger), never when it
 * died. */
#define LOCK_NOWAIT_BOUND_MS 1000

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t deadline_ns(int32_t timeout_ms) {
    return timeout_ms < 0 ? INT64_MAX : mono_ns() + (int64_t)timeout_ms * 1000000;
}

/* Sleep while *word == expected, until deadline; SHMB_EINTR if a signal came, else
 * SHMB_OK (woken, the word changed, or the deadline passed: the caller looks). Shared
 * (not private) futex: the word lives in memory mapped by other processes. */
static int futex_wait(uint32_t *word, uint32_t expected, int64_t deadline) {
    struct timespec ts, *tsp = NULL;
    if (deadline != INT64_MAX) {
        int64_t left = deadline - mono_ns();
        if (left <= 0) return SHMB_OK;
        ts.tv_sec = left / 1000000000;
        ts.tv_nsec = left % 1000000000;
        tsp = &ts;
    }
    /* Python installs its SIGINT handler without SA_RESTART, so Ctrl-C ends the sleep
     * here; the caller must return to let the interpreter run the handler */
    if (syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, NULL, 0) < 0 && errno == EINTR)
        return SHMB_EINTR;
    return SHMB_OK;
}

static void futex_wake_all(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int64_t shmb_ring_object_bytes(int64_t capacity) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || page > SHMB_RING_HEADER_BYTES) return SHMB_EINVAL;
    if (capacity < SHMB_RING_HEADER_BYTES || (capacity & (capacity - 1)) ||
        capacity % page || capacity > ((int64_t)1 << 40))
        return SHMB_EINVAL;
    return SHMB_RING_HEADER_BYTES + capacity;
}

static int init_header(shmb_ring_header_t *h, int64_t capacity, int64_t base_offset,
                       int32_t epoch) {
    memset(h, 0, sizeof *h);
    h->meta.layout_version = SHMB_RING_LAYOUT_VERSION;
    h->meta.header_bytes = SHMB_RING_HEADER_BYTES;
    h->meta.capacity_bytes = capacity;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->meta.created_unix_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    h->meta.partition_leader_epoch = epoch;
    h->meta.creator_pid = (uint32_t)getpid();
    h->offsets.next_offset = h->offsets.log_start_offset = base_offset;
    h->offsets.ring_start_offset = base_offset;
    h->durable.durable_offset = base_offset; /* the ring starts where the log ends */
    h->spill.hint.base_offset = base_offset; /* ... and so does what was spilled */
    for (int i = 0; i < SHMB_RING_INDEX_SLOTS; i++) h->index[i].position = -1;
    pthread_mutexattr_t attr;
    int e = pthread_mutexattr_init(&attr);
    /* robust: the kernel hands the lock on (EOWNERDEAD) when its holder dies, by the
     * futex's owner tid, so a reused pid can never pass for the dead owner */
    if (!e) e = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!e) e = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!e) e = pthread_mutex_init(&h->lock.mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    if (e) {
        errno = e;
        return SHMB_ESYS;
    }
    /* magic goes last, with release: an opener that sees it sees an initialised header */
    shmb_store_release(&h->meta.magic, SHMB_RING_MAGIC);
    return SHMB_OK;
}

int shmb_ring_map(int fd, int create, int64_t capacity, int64_t base_offset, int32_t epoch,
                  shmb_ring_t **out) {
    if (!out) return SHMB_EINVAL;
    *out = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) return SHMB_ESYS;
    if (!create) {
        if (st.st_size < SHMB_RING_HEADER_BYTES) return SHMB_ELAYOUT;
        shmb_ring_header_t *h = mmap(NULL, SHMB_RING_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0);
        if (h == MAP_FAILED) return SHMB_ESYS;
        int ok = shmb_load_acquire(&h->meta.magic) == SHMB_RING_MAGIC &&
                 h->meta.layout_version == SHMB_RING_LAYOUT_VERSION &&
                 h->meta.header_bytes == SHMB_RING_HEADER_BYTES;
        capacity = h->meta.capacity_bytes;
        munmap(h, SHMB_RING_HEADER_BYTES);
        if (!ok) return SHMB_ELAYOUT;
    }
    int64_t object_bytes = shmb_ring_object_bytes(capacity);
    if (object_bytes < 0) return create ? SHMB_EINVAL : SHMB_ELAYOUT;
    if (st.st_size != object_bytes) return create ? SHMB_EINVAL : SHMB_ELAYOUT;

    /* reserve header + 2 x capacity, then map the data area twice into it */
    size_t reserved = (size_t)(SHMB_RING_HEADER_BYTES + 2 * capacity);
    uint8_t *base = mmap(NULL, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
    if (base == MAP_FAILED) return SHMB_ESYS;
    if (mmap(base, (size_t)object_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
             0) == MAP_FAILED ||
        mmap(base + object_bytes, (size_t)capacity, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_FIXED, fd, SHMB_RING_HEADER_BYTES) == MAP_FAILED) {
        int saved = errno;
        munmap(base, reserved);
        errno = saved;
        return SHMB_ESYS;
    }
    shmb_ring_t *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(base, reserved);
        errno = ENOMEM;
        return SHMB_ESYS;
    }
    r->hdr = (shmb_ring_header_t *)base;
    r->data = base + SHMB_RING_HEADER_BYTES;
    r->capacity = capacity;
    r->mask = capacity - 1;
    r->slot_shift = __builtin_ctzll((uint64_t)capacity) - __builtin_ctz(SHMB_RING_INDEX_SLOTS);
    r->reserved_bytes = reserved;
    if (create) {
        int rc = init_header(r->hdr, capacity, base_offset, epoch);
        if (rc < 0) {
            shmb_ring_unmap(r);
            return rc;
        }
    }
    *out = r;
    return SHMB_OK;
}

void shmb_ring_unmap(shmb_ring_t *r) {
    if (!r) return;
    munmap(r->hdr, r->reserved_bytes);
    free(r);
}

/* ---- writer side ------------------------------------------------------------------- */

static inline shmb_ring_index_entry_t *slot_of(shmb_ring_t *r, int64_t position) {
    return &r->hdr->index[(position >> r->slot_shift) & (SHMB_RING_INDEX_SLOTS - 1)];
}

/* -1 first, so a reader never pairs the new position with the old offset */
static void entry_store(shmb_ring_index_entry_t *e, int64_t position, int64_t offset) {
    shmb_store_relaxed(&e->position, -1);
    shmb_fence_release();
    shmb_store_relaxed(&e->base_offset, offset);
    shmb_store_release(&e->position, position);
}

/* A consistent (position, offset) of an entry, or position -1. */
static shmb_ring_index_entry_t entry_load(shmb_ring_index_entry_t *e) {
    shmb_ring_index_entry_t out;
    out.position = shmb_load_acquire(&e->position);
    out.base_offset = shmb_load_relaxed(&e->base_offset);
    shmb_fence_acquire();
    if (out.position != shmb_load_relaxed(&e->position)) out.position = -1;
    return out;
}

/* The first batch that starts in a slot's stretch of the ring on this lap records
 * itself there. Stateless, so lock recovery applies the same rule. */
static void index_note(shmb_ring_t *r, int64_t position, int64_t base_offset) {
    shmb_ring_index_entry_t *e = slot_of(r, position);
    int64_t old = shmb_load_relaxed(&e->position);
    if (old >= 0 && (old >> r->slot_shift) == (position >> r->slot_shift)) return;
    entry_store(e, position, base_offset);
}

/* Called with the lock just taken over from a dead holder. tail is the truth; the dead
 * writer may have published tail but died before next_offset or the index. */
static void recover_dead_writer(shmb_ring_t *r) {
    shmb_ring_header_t *h = r->hdr;
    int64_t tail = shmb_load_relaxed(&h->tail.tail_position);
    int64_t start = h->writer.start_position, end = h->writer.end_position;
    if (end == tail && start < tail) {
        const uint8_t *b = r->data + (start & r->mask);
        int64_t base = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_BASE_OFFSET);
        int64_t next = base + (int32_t)shmb_be32(b + SHMB_BATCH_OFF_LAST_OFFSET_DELTA) + 1;
        shmb_store_release(&h->offsets.next_offset, next);
        index_note(r, start, base);
    }
    h->counters.lock_recoveries++;
    /* the dead writer may have published without waking anyone */
    shmb_fetch_add(&h->data.futex_word, 1);
    futex_wake_all(&h->data.futex_word);
}

/* Take the writer lock, waiting until *deadline. A *deadline < 0 is computed from
 * timeout_ms when a wait begins, so that the common append never reads the clock. */
static int lock_writer(shmb_ring_t *r, int32_t timeout_ms, int64_t *deadline_p) {
    pthread_mutex_t *m = &r->hdr->lock.mutex;
    int e = pthread_mutex_trylock(m);
    if (e == EBUSY) {
        if (*deadline_p < 0) *deadline_p = deadline_ns(timeout_ms);
        int64_t deadline = *deadline_p;
        if (deadline == INT64_MAX) {
            e = pthread_mutex_lock(m);
        } else {
            /* timedlock wants CLOCK_REALTIME; convert the monotonic deadline */
            int64_t left = deadline - mono_ns();
            if (left < 0) left = 0;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t abs_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + left;
            ts.tv_sec = abs_ns / 1000000000;
            ts.tv_nsec = abs_ns % 1000000000;
            e = pthread_mutex_timedlock(m, &ts);
        }
    }
    if (e == 0) return SHMB_OK;
    if (e == EOWNERDEAD) {
        recover_dead_writer(r);
        pthread_mutex_consistent(m);
        return SHMB_OK;
    }
    if (e == ETIMEDOUT) return SHMB_ETIMEDOUT;
    if (e == EINVAL) return SHMB_ELAYOUT; /* not a mutex any more: scribbled on */
    errno = e;
    return SHMB_ESYS;
}

static inline void unlock_writer(shmb_ring_t *r) { pthread_mutex_unlock(&r->hdr->lock.mutex); }

/* Sleep until *value >= need, *stop is set, or the deadline passes; returns the last
 * value seen (values are never negative), or SHMB_EINTR. The waiter count goes up
 * before the value is checked, pairing with the advancer's store(value); bump(word);
 * load(waiters): one of the two sees the other, so no wake-up is lost. The stopper
 * stores *stop, bumps the word and wakes all without looking at the count: a sleeper
 * that read the word before the bump fails its futex_wait or is woken, and one that
 * read it after sees *stop. kick, if not NULL: a futex word to bump and wake once the
 * count is up, for a thread that acts on the count but sleeps on that word. */
static int64_t sleep_until_at_least(int64_t *value, const uint32_t *stop, uint32_t *word,
                                    uint32_t *waiters, uint32_t *kick, int64_t need,
                                    int64_t deadline) {
    int64_t seen;
    shmb_fetch_add(waiters, 1);
    if (kick != NULL) {
        shmb_fetch_add(kick, 1);
        futex_wake_all(kick);
    }
    for (;;) {
        uint32_t w = shmb_load_acquire(word);
        /* acquire, and before the value: a value read after a set *stop is at least
         * what it was when *stop was stored */
        int stopped = shmb_load_acquire(stop) != 0;
        if ((seen = shmb_load_acquire(value)) >= need || stopped || mono_ns() >= deadline)
            break;
        if (futex_wait(word, w, deadline) == SHMB_EINTR) {
            seen = SHMB_EINTR;
            break;
        }
    }
    shmb_fetch_add(waiters, (uint32_t)-1);
    return seen;
}

/* Sleep until spill_position >= need, the ring is deleted, or the deadline passes. */
static int wait_for_spill(shmb_ring_t *r, int64_t need, int64_t deadline) {
    shmb_ring_header_t *h = r->hdr;
    int64_t seen = sleep_until_at_least(&h->spill.spill_position, &h->offsets.deleted,
                                        &h->spill.futex_word, &h->spill.waiters, NULL,
                                        need, deadline);
    if (seen == SHMB_EINTR) return SHMB_EINTR;
    if (seen >= need) return SHMB_OK; /* claim checks the flag again under the lock */
    /* relaxed: it only picks the error; the sleep read it with acquire */
    return shmb_load_relaxed(&h->offsets.deleted) ? SHMB_EDELETED : SHMB_FULL;
}

/* The header invariants an append relies on, read holding the writer lock (or
 * racily, for a report): 0, or which one fails with its two values. A process that
 * scribbles on the header must not make appends land where readers cannot find
 * them, or offsets stop being dense. */
static int check_header(shmb_ring_t *r, int64_t *a, int64_t *b) {
    shmb_ring_header_t *h = r->hdr;
    int64_t spill = shmb_load_acquire(&h->spill.spill_position);
    int64_t tail = shmb_load_relaxed(&h->tail.tail_position);
    int64_t claimed = shmb_load_relaxed(&h->claim.claim_position);
    int64_t next = shmb_load_relaxed(&h->offsets.next_offset);
    int64_t start = h->writer.start_position, end = h->writer.end_position;
    if (spill > tail) return *a = spill, *b = tail, SHMB_CHECK_SPILL_TAIL;
    if (tail > claimed) return *a = tail, *b = claimed, SHMB_CHECK_TAIL_CLAIM;
    /* a claim runs ahead of the tail by one batch at most (a writer died in it) */
    if (claimed - tail > r->capacity) return *a = claimed - tail, *b = r->capacity,
                                             SHMB_CHECK_CLAIM_AHEAD;
    if (tail - spill > r->capacity) return *a = tail - spill, *b = r->capacity,
                                           SHMB_CHECK_UNSPILLED;
    if (end == tail && start < tail && tail - start >= SHMB_BATCH_HEADER_BYTES &&
        start >= claimed - r->capacity) {
        /* the last batch appended: next_offset follows its last offset */
        const uint8_t *batch = r->data + (start & r->mask);
        int64_t last = (int64_t)shmb_be64(batch + SHMB_BATCH_OFF_BASE_OFFSET) +
                       (int32_t)shmb_be32(batch + SHMB_BATCH_OFF_LAST_OFFSET_DELTA);
        if (next != last + 1) return *a = next, *b = last + 1, SHMB_CHECK_NEXT_OFFSET;
    }
    return 0;
}

int shmb_ring_check(shmb_ring_t *r, int64_t *found, int64_t *expected) {
    return check_header(r, found, expected);
}

/* Take the lock with room for len bytes at the tail; returns with the lock held and
 * the claim stored, or an error with the lock released. */
static int claim(shmb_ring_t *r, int64_t len, int32_t timeout_ms, int64_t *position) {
    shmb_ring_header_t *h = r->hdr;
    if (len > r->capacity) return SHMB_ETOOBIG;
    /* not waiting for space still waits (boundedly) for the lock */
    int32_t lock_timeout_ms = timeout_ms == 0 ? LOCK_NOWAIT_BOUND_MS : timeout_ms;
    int64_t deadline = -1; /* read from the clock when a wait begins */
    int waited = 0;
    for (;;) {
        int rc = lock_writer(r, lock_timeout_ms, &deadline);
        if (rc < 0) return rc;
        /* relaxed: the marker stores the flag holding this lock. It shares a line with
         * next_offset, which the append reads next, so it costs no extra miss */
        if (shmb_load_relaxed(&h->offsets.deleted)) {
            unlock_writer(r);
            return SHMB_EDELETED;
        }
        int64_t found, expected;
        if (check_header(r, &found, &expected)) {
            unlock_writer(r);
            return SHMB_ECORRUPT; /* shmb_ring_check says which field */
        }
        int64_t tail = shmb_load_relaxed(&h->tail.tail_position);
        int64_t end = tail + len;
        if (end - r->capacity <= shmb_load_acquire(&h->spill.spill_position)) {
            h->writer.start_position = tail;
            h->writer.end_position = end;
            if (end > shmb_load_relaxed(&h->claim.claim_position))
                shmb_store_relaxed(&h->claim.claim_position, end);
            /* claim before the bytes: a reader that sees new bytes then sees the claim */
            shmb_fence_release();
            *position = tail;
            return SHMB_OK;
        }
        unlock_writer(r);
        if (!waited) {
            __atomic_fetch_add(&h->counters.full_waits, 1, __ATOMIC_RELAXED);
            waited = 1;
        }
        if (timeout_ms == 0) return SHMB_FULL;
        if (deadline < 0) deadline = deadline_ns(timeout_ms);
        if ((rc = wait_for_spill(r, end - r->capacity, deadline)) < 0) return rc;
    }
}

/* Publish the batch at position (whose baseOffset is already patched), release the
 * lock, wake sleeping readers. */
static void commit(shmb_ring_t *r, int64_t position, int64_t len, int64_t base_offset,
                   int64_t records) {
    shmb_ring_header_t *h = r->hdr;
    /* tail goes with release: a reader that sees the new tail sees the whole batch */
    shmb_store_release(&h->tail.tail_position, position + len);
    shmb_store_release(&h->offsets.next_offset, base_offset + records);
    index_note(r, position, base_offset);
    h->counters.batches_appended++;
    h->counters.records_appended += (uint64_t)records;
    h->counters.bytes_appended += (uint64_t)len;
    unlock_writer(r);
    /* store(tail) ; full fence ; load(waiters) pairs with the reader's
     * add(waiters) ; load(tail): one of the two sees the other, so no lost wake-up */
    shmb_fence_seq_cst();
    if (shmb_load_relaxed(&h->data.waiters)) {
        shmb_fetch_add(&h->data.futex_word, 1);
        futex_wake_all(&h->data.futex_word);
    }
}

static inline void patch_batch(shmb_ring_t *r, uint8_t *b, int64_t base_offset) {
    shmb_put_be64(b + SHMB_BATCH_OFF_BASE_OFFSET, (uint64_t)base_offset);
    shmb_put_be32(b + SHMB_BATCH_OFF_LEADER_EPOCH, (uint32_t)r->hdr->meta.partition_leader_epoch);
}

int64_t shmb_ring_append_batch(shmb_ring_t *r, const uint8_t *batch, int64_t len, int flags,
                               int32_t timeout_ms) {
    if (!r) return SHMB_EINVAL;
    int rc = shmb_batch_validate(batch, len, flags);
    if (rc < 0) return rc;
    /* offsets come from lastOffsetDelta: compressed batches are not opened */
    int64_t records = (int32_t)shmb_be32(batch + SHMB_BATCH_OFF_LAST_OFFSET_DELTA) + 1;
    int64_t pos;
    if ((rc = claim(r, len, timeout_ms, &pos)) < 0) return rc;
    uint8_t *dst = r->data + (pos & r->mask);
    int64_t base = shmb_load_relaxed(&r->hdr->offsets.next_offset);
    memcpy(dst, batch, (size_t)len);
    patch_batch(r, dst, base);
    commit(r, pos, len, base, records);
    return base;
}

int64_t shmb_ring_append_records(shmb_ring_t *r, const shmb_records_t *records,
                                 int32_t timeout_ms) {
    if (!r) return SHMB_EINVAL;
    int64_t now_ms = shmb_now_ms();
    int64_t len = shmb_batch_encoded_bytes(records, now_ms);
    if (len < 0) return len;
    int64_t pos;
    int rc = claim(r, len, timeout_ms, &pos);
    if (rc < 0) return rc;
    /* encode in place: one copy of every value, straight into the ring */
    uint8_t *dst = r->data + (pos & r->mask);
    int64_t base = shmb_load_relaxed(&r->hdr->offsets.next_offset);
    shmb_batch_encode(records, now_ms, base, dst, len); /* same now_ms: exactly len */
    patch_batch(r, dst, base);
    commit(r, pos, len, base, records->count);
    return base;
}

int64_t shmb_ring_append_record(shmb_ring_t *r, const uint8_t *key, int32_t key_len,
                                const uint8_t *value, int32_t value_len, int64_t timestamp,
                                int32_t timeout_ms) {
    shmb_records_t one = {
        .count = 1,
        .values = value,
        .value_lens = &value_len,
        .keys = key,
        .key_lens = key ? &key_len : NULL,
        .timestamp = timestamp,
    };
    if (!key) key_len = -1;
    if (!value) value_len = -1;
    return shmb_ring_append_records(r, &one, timeout_ms);
}

int64_t shmb_ring_append_value(shmb_ring_t *r, const uint8_t *value, int32_t value_len) {
    return shmb_ring_append_record(r, NULL, -1, value, value_len, SHMB_TIMESTAMP_NOW,
                                   SHMB_APPEND_VALUE_WAIT_MS);
}

int shmb_ring_spill_advance(shmb_ring_t *r, int64_t position, int64_t offset) {
    shmb_ring_header_t *h = r->hdr;
    int64_t spill = shmb_load_relaxed(&h->spill.spill_position);
    if (position < spill || position > shmb_load_acquire(&h->tail.tail_position))
        return SHMB_EINVAL;
    if (offset >= 0) entry_store(&h->spill.hint, position, offset);
    shmb_store_release(&h->spill.spill_position, position);
    shmb_fetch_add(&h->spill.futex_word, 1);
    shmb_fence_seq_cst(); /* the store above, then the waiters: see sleep_until_at_least */
    if (shmb_load_relaxed(&h->spill.waiters)) futex_wake_all(&h->spill.futex_word);
    return SHMB_OK;
}

int shmb_ring_spill_rewind(shmb_ring_t *r, int64_t position, int64_t offset) {
    shmb_ring_header_t *h = r->hdr;
    if (position < 0 || offset < 0) return SHMB_EINVAL;
    int64_t deadline = -1;
    int rc = lock_writer(r, LOCK_NOWAIT_BOUND_MS, &deadline);
    if (rc != SHMB_OK) return rc;
    /* under the lock no append is in flight, so claim is the end of what was written
     * and everything from claim - capacity on is intact */
    if (position > shmb_load_relaxed(&h->spill.spill_position)) {
        rc = SHMB_EINVAL;
    } else if (position < shmb_load_relaxed(&h->claim.claim_position) - r->capacity) {
        rc = SHMB_LAPPED;
    } else {
        /* the hint first: segment readers must not read past offset from now on */
        entry_store(&h->spill.hint, position, offset);
        shmb_store_release(&h->spill.spill_position, position);
    }
    unlock_writer(r);
    return rc;
}

int64_t shmb_ring_spilled_offset(shmb_ring_t *r) {
    for (;;) {
        shmb_ring_index_entry_t e = entry_load(&r->hdr->spill.hint);
        if (e.position >= 0) return e.base_offset;
        sched_yield(); /* the spill is between its two stores: a few instructions */
    }
}

void shmb_ring_set_spill_errno(shmb_ring_t *r, int32_t err) {
    shmb_store_relaxed(&r->hdr->durable.spill_errno, err);
}

int64_t shmb_ring_unspilled(shmb_ring_t *r, int64_t position, const uint8_t **data) {
    shmb_ring_header_t *h = r->hdr;
    int64_t tail = shmb_load_acquire(&h->tail.tail_position);
    if (!data || position < shmb_load_relaxed(&h->spill.spill_position) || position > tail)
        return SHMB_EINVAL;
    /* appenders never pass spill + capacity, so these bytes hold still until the
     * spill position moves past them; the double mapping keeps them contiguous */
    *data = r->data + (position & r->mask);
    return tail - position;
}

int shmb_ring_durable_advance(shmb_ring_t *r, int64_t offset) {
    shmb_ring_header_t *h = r->hdr;
    if (offset < shmb_load_relaxed(&h->durable.durable_offset)) return SHMB_EINVAL;
    shmb_store_release(&h->durable.durable_offset, offset);
    shmb_fetch_add(&h->durable.futex_word, 1);
    shmb_fence_seq_cst();
    if (shmb_load_relaxed(&h->durable.waiters)) futex_wake_all(&h->durable.futex_word);
    return SHMB_OK;
}

int shmb_ring_wait_durable(shmb_ring_t *r, int64_t offset, int32_t timeout_ms) {
    shmb_ring_header_t *h = r->hdr;
    if (shmb_load_acquire(&h->durable.durable_offset) >= offset) return SHMB_OK;
    /* the waiter count tells the spill thread to fsync at once, and the kick wakes
     * it to look: it sleeps on new data, and the data came before this wait (an
     * acks=all send waited out its 100 ms idle wake, IDLE_WAKE_MS, before) */
    int64_t seen = sleep_until_at_least(&h->durable.durable_offset, &h->offsets.deleted,
                                        &h->durable.futex_word, &h->durable.waiters,
                                        &h->data.futex_word, offset, deadline_ns(timeout_ms));
    if (seen == SHMB_EINTR) return SHMB_EINTR;
    if (seen >= offset) return SHMB_OK;
    /* relaxed: it only picks the error; the sleep read it with acquire */
    return shmb_load_relaxed(&h->offsets.deleted) ? SHMB_EDELETED : SHMB_EMPTY;
}

int shmb_ring_set_log_start_offset(shmb_ring_t *r, int64_t offset) {
    if (offset < 0) return SHMB_EINVAL;
    shmb_store_release(&r->hdr->offsets.log_start_offset, offset);
    return SHMB_OK;
}

void shmb_ring_wake(shmb_ring_t *r) {
    /* bump, then wake all whatever the count: see sleep_until_at_least */
    shmb_fetch_add(&r->hdr->data.futex_word, 1);
    futex_wake_all(&r->hdr->data.futex_word);
}

int shmb_ring_mark_deleted(shmb_ring_t *r) {
    shmb_ring_header_t *h = r->hdr;
    /* holding the writer lock: an append that has it commits before the flag, and
     * every later one finds the flag in claim(). Bounded, so that a holder stopped
     * (SIGSTOP, debugger) cannot stall the broker's delete: past the bound the flag
     * goes in anyway, and only that holder's batch may still land */
    int64_t deadline = -1;
    int locked = lock_writer(r, LOCK_NOWAIT_BOUND_MS, &deadline) == SHMB_OK;
    /* release: a reader that sees the flag then sees every batch committed before it */
    shmb_store_release(&h->offsets.deleted, 1u);
    if (locked) unlock_writer(r);
    /* bump and wake every futex, whatever the waiter counts: see sleep_until_at_least */
    uint32_t *words[] = {&h->data.futex_word, &h->spill.futex_word, &h->durable.futex_word};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        shmb_fetch_add(words[i], 1);
        futex_wake_all(words[i]);
    }
    return SHMB_OK;
}

/* ---- reader side ------------------------------------------------------------------- */

static inline int is_lapped(shmb_ring_t *r, int64_t position) {
    shmb_fence_acquire(); /* the copy (or header reads) above happen before this load */
    return shmb_load_relaxed(&r->hdr->claim.claim_position) - r->capacity > position;
}

/* The tail, or SHMB_EDELETED when the ring is deleted and holds nothing past position. */
static int64_t tail_unless_deleted(shmb_ring_t *r, int64_t position) {
    shmb_ring_header_t *h = r->hdr;
    /* the flag first, with acquire, then the tail: a set flag shows every batch
     * committed before it, so none is cut off from the reader */
    uint32_t deleted = shmb_load_acquire(&h->offsets.deleted);
    int64_t tail = shmb_load_acquire(&h->tail.tail_position);
    return deleted && tail == position ? SHMB_EDELETED : tail;
}

/* Idle as Aeron's BackoffIdleStrategy (shmb_idle_t) while ready(ctx) says no: spin,
 * then yield, never past the deadline. 1 once ready; 0 when it is time to park (or
 * the deadline passed: the park looks at it). static inline with a constant ready():
 * the compiler inlines the poll into the loops. */
static inline int idle_until(int (*ready)(const void *), const void *ctx,
                             const shmb_idle_t *idle, int64_t deadline) {
    if (!idle) return 0;
    for (int64_t i = 1; i <= idle->max_spins; i++) {
        shmb_cpu_relax();
        if (ready(ctx)) return 1;
        if ((i & 63) == 0 && mono_ns() >= deadline) return 0;
    }
    for (int64_t i = 1; i <= idle->max_yields; i++) {
        sched_yield();
        if (ready(ctx)) return 1;
        if ((i & 7) == 0 && mono_ns() >= deadline) return 0;
    }
    return 0;
}

typedef struct {
    shmb_ring_t *ring;
    int64_t position;
} tail_past_t;

static int tail_is_past(const void *ctx) {
    const tail_past_t *t = ctx;
    return shmb_load_acquire(&t->ring->hdr->tail.tail_position) > t->position;
}

/* Wait until tail > position: idle, then sleep on the data futex. Returns the tail, or
 * SHMB_EDELETED (see tail_unless_deleted), or SHMB_EINTR. */
static int64_t wait_for_data(shmb_ring_t *r, int64_t position, int32_t timeout_ms,
                             const shmb_idle_t *idle) {
    shmb_ring_header_t *h = r->hdr;
    int64_t tail = shmb_load_acquire(&h->tail.tail_position);
    if (tail > position) return tail;
    if (timeout_ms == 0) return tail_unless_deleted(r, position);
    int64_t deadline = deadline_ns(timeout_ms);
    tail_past_t past = {r, position};
    if (idle_until(tail_is_past, &past, idle, deadline))
        return shmb_load_acquire(&h->tail.tail_position);
    tail = sleep_until_at_least(&h->tail.tail_position, &h->offsets.deleted,
                                &h->data.futex_word, &h->data.waiters, NULL, position + 1,
                                deadline);
    return tail > position || tail == SHMB_EINTR ? tail : tail_unless_deleted(r, position);
}

/* Size of the batch at position, read from ring bytes that may be under rewrite:
 * a bad size is either a lap (caller checks) or corruption. */
static inline int64_t batch_total(shmb_ring_t *r, int64_t position) {
    return (int64_t)shmb_be32(r->data + (position & r->mask) + SHMB_BATCH_OFF_LENGTH) +
           SHMB_BATCH_LOG_OVERHEAD;
}

int64_t shmb_ring_read(shmb_ring_t *r, int64_t *position, uint8_t *buf, int64_t buf_len,
                       int32_t timeout_ms, const shmb_idle_t *idle) {
    if (!r || !position || !buf || buf_len <= 0) return SHMB_EINVAL;
    int64_t pos = *position;
    int64_t tail = wait_for_data(r, pos, timeout_ms, idle);
    if (tail == SHMB_EDELETED || tail == SHMB_EINTR) return tail;
    if (pos > tail || pos < 0) return SHMB_EINVAL;
    if (pos == tail) return SHMB_EMPTY;
    if (tail - pos > r->capacity) return SHMB_LAPPED;
    int64_t p = pos;
    while (p < tail) {
        int64_t total = batch_total(r, p);
        if (total < SHMB_BATCH_HEADER_BYTES || p + total > tail)
            return is_lapped(r, pos) ? SHMB_LAPPED : SHMB_ECORRUPT;
        if (p + total - pos > buf_len) break;
        p += total;
    }
    if (p == pos) return is_lapped(r, pos) ? SHMB_LAPPED : SHMB_ETOOBIG;
    /* one copy: the double mapping makes [pos, p) contiguous even across the end */
    memcpy(buf, r->data + (pos & r->mask), (size_t)(p - pos));
    if (is_lapped(r, pos)) return SHMB_LAPPED;
    *position = p;
    return p - pos;
}

int64_t shmb_ring_wait(shmb_ring_t *r, int64_t position, int32_t timeout_ms, int64_t spin_ns) {
    shmb_ring_header_t *h = r->hdr;
    int64_t tail = shmb_load_acquire(&h->tail.tail_position);
    for (int64_t spin_end = mono_ns() + spin_ns; tail <= position && spin_ns > 0;) {
        shmb_cpu_relax();
        tail = shmb_load_acquire(&h->tail.tail_position);
        if (mono_ns() >= spin_end) break;
    }
    if (tail <= position && timeout_ms != 0) {
        /* one sleep, not a loop: any bump of the word ends it, so shmb_ring_wake
         * reaches a spill thread. Waiters up, then the word, then the tail: the
         * appender stores tail, bumps, reads waiters (see sleep_until_at_least) */
        shmb_fetch_add(&h->data.waiters, 1);
        uint32_t w = shmb_load_acquire(&h->data.futex_word);
        if (shmb_load_acquire(&h->tail.tail_position) <= position &&
            !shmb_load_acquire(&h->offsets.deleted))
            futex_wait(&h->data.futex_word, w, deadline_ns(timeout_ms));
        shmb_fetch_add(&h->data.waiters, (uint32_t)-1);
        tail = shmb_load_acquire(&h->tail.tail_position);
    }
    if (tail > position) return tail;
    return shmb_load_acquire(&h->offsets.deleted) ? SHMB_EDELETED : SHMB_EMPTY;
}

int64_t shmb_ring_batch_bytes(shmb_ring_t *r, int64_t position) {
    int64_t tail = shmb_load_acquire(&r->hdr->tail.tail_position);
    if (position < 0 || position > tail) return SHMB_EINVAL;
    if (position == tail) return SHMB_EMPTY;
    int64_t total = batch_total(r, position);
    if (is_lapped(r, position)) return SHMB_LAPPED;
    if (total < SHMB_BATCH_HEADER_BYTES || position + total > tail) return SHMB_ECORRUPT;
    return total;
}

int shmb_ring_seek(shmb_ring_t *r, int64_t offset, int64_t *position) {
    shmb_ring_header_t *h = r->hdr;
    for (int attempt = 0; attempt < 4; attempt++) {
        /* tail before next_offset: a batch committed in between is then scanned past
         * (the writer stores tail first), never skipped */
        int64_t tail = shmb_load_acquire(&h->tail.tail_position);
        int64_t next = shmb_load_acquire(&h->offsets.next_offset);
        if (offset > next || offset < h->offsets.ring_start_offset) return SHMB_NOTFOUND;
        int64_t oldest = shmb_load_acquire(&h->claim.claim_position) - r->capacity;
        /* the best start: the index entry with the highest base offset <= offset;
         * position 0 is a batch boundary for ring_start_offset while not overwritten */
        int64_t start = -1, start_offset = -1;
        if (oldest <= 0) {
            start = 0;
            start_offset = h->offsets.ring_start_offset;
        }
        for (int i = 0; i <= SHMB_RING_INDEX_SLOTS; i++) {
            shmb_ring_index_entry_t e =
                entry_load(i < SHMB_RING_INDEX_SLOTS ? &h->index[i] : &h->spill.hint);
            if (e.position >= oldest && e.position <= tail && e.base_offset <= offset &&
                e.base_offset > start_offset) {
                start = e.position;
                start_offset = e.base_offset;
            }
        }
        if (start < 0) return SHMB_NOTFOUND;
        int64_t p = start;
        int found = 0;
        while (p < tail) {
            const uint8_t *b = r->data + (p & r->mask);
            int64_t total = batch_total(r, p);
            if (total < SHMB_BATCH_HEADER_BYTES || p + total > tail) break; /* lapped */
            int64_t base = (int64_t)shmb_be64(b + SHMB_BATCH_OFF_BASE_OFFSET);
            int64_t last = base + (int32_t)shmb_be32(b + SHMB_BATCH_OFF_LAST_OFFSET_DELTA);
            if (offset <= last) {
                found = base <= offset;
                break;
            }
            p += total;
        }
        if (p == tail) found = 1; /* offset is the next one to be appended */
        if (is_lapped(r, start)) continue;
        if (!found) return SHMB_NOTFOUND;
        *position = p;
        return SHMB_OK;
    }
    return SHMB_NOTFOUND;
}

/* ---- waiting on several rings ----------------------------------------------------- */

/* futex_waitv(2) (Linux 5.16) by number and ABI, so that older headers still build:
 * the number is the same on every architecture. */
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
typedef struct {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags; /* 2 = FUTEX_32; no FUTEX2_PRIVATE: the words are in shared memory */
    uint32_t reserved;
} futex_waitv_t;
_Static_assert(sizeof(futex_waitv_t) == 24, "struct futex_waitv ABI");
#define FUTEX_WAITV_SIZE_U32 2

/* Set once the kernel said ENOSYS: from then on every wait sleeps in turns. */
static int waitv_missing;

typedef struct {
    shmb_ring_t *const *rings;
    const int64_t *offsets;
    int32_t count;
    uint8_t *ready;
} rings_t;

/* Mark the rings with a record past their reader's offset, or deleted; how many. */
static int rings_ready(const void *ctx) {
    const rings_t *w = ctx;
    int n = 0;
    for (int32_t i = 0; i < w->count; i++) {
        shmb_ring_header_t *h = w->rings[i]->hdr;
        /* acquire: a reader that sees next_offset past its offset sees the batch, as
         * commit stores tail before next_offset */
        uint8_t r = shmb_load_acquire(&h->offsets.next_offset) > w->offsets[i] ||
                    shmb_load_acquire(&h->offsets.deleted);
        w->ready[i] = r;
        n += r;
    }
    return n;
}

/* One sleep on every data futex word at once; SHMB_EINTR, SHMB_ESYS (no futex_waitv
 * here), or SHMB_OK (woken, a word changed, or the deadline passed: the caller looks). */
static int sleep_on_all(const rings_t *w, const uint32_t *words, int64_t deadline) {
    futex_waitv_t v[SHMB_RINGS_WAITV_MAX];
    for (int32_t i = 0; i < w->count; i++) {
        v[i].val = words[i];
        v[i].uaddr = (uint64_t)(uintptr_t)&w->rings[i]->hdr->data.futex_word;
        v[i].flags = FUTEX_WAITV_SIZE_U32;
        v[i].reserved = 0;
    }
    struct timespec ts, *tsp = NULL; /* futex_waitv takes an absolute time */
    if (deadline != INT64_MAX) {
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
        tsp = &ts;
    }
    if (syscall(SYS_futex_waitv, v, (unsigned)w->count, 0, tsp, CLOCK_MONOTONIC) >= 0)
        return SHMB_OK;
    if (errno == EINTR) return SHMB_EINTR;
    /* EAGAIN: a word moved; ETIMEDOUT. Anything else (ENOSYS: an older kernel) means
     * this wait cannot work here: returning OK would spin */
    return errno == EAGAIN || errno == ETIMEDOUT ? SHMB_OK : SHMB_ESYS;
}

/* Registered as a waiter on every ring, sleep until one is ready. The lost-wakeup
 * argument of sleep_until_at_least, per ring: the count goes up before the words are
 * read, and the words before the offsets, so an append that this look misses sees the
 * count and bumps its word, which fails or ends the sleep. */
static int park_on_rings(const rings_t *w, const shmb_idle_t *idle, int flags,
                         int64_t deadline) {
    uint32_t words[SHMB_RINGS_WAITV_MAX];
    int turns = (flags & SHMB_RINGS_TURNS) || w->count > SHMB_RINGS_WAITV_MAX ||
                shmb_load_relaxed(&waitv_missing);
    /* no strategy: Aeron's park periods; never under 1 us, which would spin in syscalls */
    int64_t park = idle ? idle->min_park_period_ns : SHMB_IDLE_MIN_PARK_PERIOD_NS;
    int64_t max_park = idle ? idle->max_park_period_ns : SHMB_IDLE_MAX_PARK_PERIOD_NS;
    if (park < 1000) park = 1000;
    if (max_park < park) max_park = park;
    int rc = SHMB_EMPTY;
    for (int32_t i = 0; i < w->count; i++) shmb_fetch_add(&w->rings[i]->hdr->data.waiters, 1);
    for (uint32_t turn = 0;; turn++) {
        if (!turns)
            for (int32_t i = 0; i < w->count; i++)
                words[i] = shmb_load_acquire(&w->rings[i]->hdr->data.futex_word);
        uint32_t *word = &w->rings[turn % (uint32_t)w->count]->hdr->data.futex_word;
        uint32_t seen = turns ? shmb_load_acquire(word) : 0;
        int n = rings_ready(w);
        if (n) {
            rc = n;
            break;
        }
        int64_t now = mono_ns();
        if (now >= deadline) break;
        if (!turns) {
            int slept = sleep_on_all(w, words, deadline);
            if (slept == SHMB_ESYS) { /* no futex_waitv (ENOSYS): turns for good */
                shmb_store_relaxed(&waitv_missing, 1);
                turns = 1;
            } else if (slept == SHMB_EINTR) {
                rc = SHMB_EINTR;
                break;
            }
            continue;
        }
        /* one ring's word, bounded, then the next ring's, as Aeron's parkNanos backs off */
        int64_t until = park < deadline - now ? now + park : deadline;
        park = park < max_park / 2 ? park * 2 : max_park;
        if (futex_wait(word, seen, until) == SHMB_EINTR) {
            rc = SHMB_EINTR;
            break;
        }
    }
    for (int32_t i = 0; i < w->count; i++)
        shmb_fetch_add(&w->rings[i]->hdr->data.waiters, (uint32_t)-1);
    return rc;
}

int shmb_rings_wait(shmb_ring_t *const *rings, const int64_t *offsets, int32_t count,
                    uint8_t *ready, int32_t timeout_ms, const shmb_idle_t *idle, int flags) {
    if (!rings || !offsets || !ready || count <= 0) return SHMB_EINVAL;
    for (int32_t i = 0; i < count; i++)
        if (!rings[i]) return SHMB_EINVAL;
    rings_t w = {rings, offsets, count, ready};
    int n = rings_ready(&w);
    if (n || timeout_ms == 0) return n ? n : SHMB_EMPTY;
    int64_t deadline = deadline_ns(timeout_ms);
    if (idle_until(rings_ready, &w, idle, deadline)) return rings_ready(&w);
    return park_on_rings(&w, idle, flags, deadline);
}

void shmb_ring_stat(shmb_ring_t *r, shmb_ring_stat_t *o) {
    shmb_ring_header_t *h = r->hdr;
    o->capacity_bytes = r->capacity;
    o->tail_position = shmb_load_acquire(&h->tail.tail_position);
    o->claim_position = shmb_load_acquire(&h->claim.claim_position);
    o->spill_position = shmb_load_acquire(&h->spill.spill_position);
    o->next_offset = shmb_load_acquire(&h->offsets.next_offset);
    o->log_start_offset = shmb_load_acquire(&h->offsets.log_start_offset);
    o->ring_start_offset = h->offsets.ring_start_offset;
    o->batches_appended = shmb_load_relaxed(&h->counters.batches_appended);
    o->records_appended = shmb_load_relaxed(&h->counters.records_appended);
    o->bytes_appended = shmb_load_relaxed(&h->counters.bytes_appended);
    o->full_waits = shmb_load_relaxed(&h->counters.full_waits);
    o->lock_recoveries = shmb_load_relaxed(&h->counters.lock_recoveries);
    o->data_waiters = shmb_load_relaxed(&h->data.waiters);
    o->spill_waiters = shmb_load_relaxed(&h->spill.waiters);
    o->partition_leader_epoch = h->meta.partition_leader_epoch;
    o->layout_version = h->meta.layout_version;
    o->creator_pid = h->meta.creator_pid;
    o->created_unix_ns = h->meta.created_unix_ns;
    o->durable_offset = shmb_load_acquire(&h->durable.durable_offset);
    o->durable_waiters = shmb_load_relaxed(&h->durable.waiters);
    o->spill_errno = shmb_load_relaxed(&h->durable.spill_errno);
    o->deleted = shmb_load_acquire(&h->offsets.deleted);
}

/* acquire, as in shmb_ring_stat: what a reader does with the value (seek to it, read
 * up to it) must see the batches below it */
int64_t shmb_ring_high_watermark(shmb_ring_t *r) {
    return shmb_load_acquire(&r->hdr->offsets.next_offset);
}

int64_t shmb_ring_log_start_offset(shmb_ring_t *r) {
    return shmb_load_acquire(&r->hdr->offsets.log_start_offset);
}

int64_t shmb_ring_tail_position(shmb_ring_t *r) {
    return shmb_load_acquire(&r->hdr->tail.tail_position);
}
