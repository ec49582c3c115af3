/* Ring throughput and latency in pure C: the ceiling the Python API is measured against.
 *
 * Measured, per value size (100 B, 4 KiB, 64 KiB):
 *   two processes  the parent appends with shmb_ring_append_record (one record per
 *                  batch) or shmb_ring_append_records (--batch records per batch, at
 *                  most --batch-bytes of values: 1 MiB, as a Kafka producer's
 *                  batch.size, so 16 records at 64 KiB and 256 at 4 KiB); a
 *                  forked consumer reads with shmb_ring_read (1 MiB buffer, the
 *                  default idle strategy), decodes every record with shmb_batches_decode (no CRC
 *                  check, as RingReader.poll) and advances the spill position after
 *                  every read. Wall time from the first append to the consumer having
 *                  decoded the last record; value bytes only (GB = 1e9 B). Median of 3
 *                  runs, with the range.
 *   one process    ns per shmb_ring_append_record call (ring kept from filling by
 *                  advancing the spill whenever an append returns SHMB_FULL), and ns
 *                  per record of shmb_ring_read + shmb_batches_decode over a full ring;
 *                  plus memcpy and CRC32C speed on this machine, the two per-byte costs
 *                  an append pays (encode copies the value into the ring and checksums
 *                  the batch), for reading the 64 KiB rows. Best of 3.
 *   latency        one-way, 100 B at 10k records/s, as bench_ring.py measures it, with
 *                  the default idle strategy (spins, yields, then the futex) and
 *                  parking on the futex at once.
 * A run during which other processes used > 10% of the cores is marked '*'.
 * Left out: keys, headers, the durable log, more than one producer or reader, and
 * anything above the C API (cffi, Records). Timestamps are SHMB_TIMESTAMP_NOW, as
 * Ring.append uses.
 *
 *   make benchmarks/bench_ring_c && benchmarks/bench_ring_c [--smoke] [--size S]...
 *        [--messages N] [--batch B] [--batch-bytes N] [--ring-bytes N]
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmb.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define READ_BUFFER_BYTES (1 << 20) /* RingReader's default */
/* RingReader's default idle strategy (ring.DEFAULT_IDLE) */
static const shmb_idle_t DEFAULT_IDLE = {SHMB_IDLE_MAX_SPINS, SHMB_IDLE_MAX_YIELDS,
                                         SHMB_IDLE_MIN_PARK_PERIOD_NS,
                                         SHMB_IDLE_MAX_PARK_PERIOD_NS};
#define STALL_MS 20000              /* a consumer that sees nothing this long fails */
#define MAX_SIZES 8
#define REPEAT 3 /* runs per figure */

static char shm_name[64];
static volatile sig_atomic_t have_shm;

static void unlink_shm(void) {
    if (have_shm) {
        shm_unlink(shm_name);
        have_shm = 0;
    }
}

static void on_signal(int sig) {
    unlink_shm();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void die(const char *what, int rc) {
    if (rc == SHMB_ESYS || rc == 0)
        fprintf(stderr, "bench_ring_c: %s: %s\n", what, strerror(errno));
    else
        fprintf(stderr, "bench_ring_c: %s: %s (%d)\n", what, shmb_strerror(rc), rc);
    exit(1); /* atexit unlinks the ring */
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t next_pow2(int64_t n) {
    int64_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) die("malloc", 0);
    return p;
}

/* ---- CPUs --------------------------------------------------------------------------- */

static int cpu_a = -1, cpu_b = -1; /* producer, consumer: the first two usable CPUs */

static void find_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0) return;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        if (cpu_a < 0)
            cpu_a = c;
        else if (cpu_b < 0)
            cpu_b = c;
    }
    if (cpu_b < 0) cpu_a = -1; /* one CPU: don't pin both sides onto it */
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static void unpin(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu_a >= 0) CPU_SET(cpu_a, &set);
    if (cpu_b >= 0) CPU_SET(cpu_b, &set);
    if (cpu_a >= 0) sched_setaffinity(0, sizeof set, &set);
}

/* ---- ring lifecycle ----------------------------------------------------------------- */

/* A fresh ring under /shmb.bench.c.<pid>, reserved in /dev/shm, unlinked by
 * ring_close (and by atexit or a signal if we die first). */
static shmb_ring_t *ring_create(int64_t capacity) {
    int64_t bytes = shmb_ring_object_bytes(capacity);
    if (bytes < 0) die("ring capacity", (int)bytes);
    snprintf(shm_name, sizeof shm_name, "/shmb.bench.c.%d", (int)getpid());
    int fd = shm_open(shm_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) die("shm_open", 0);
    have_shm = 1;
    if (ftruncate(fd, bytes) < 0) die("ftruncate", 0);
    int e = posix_fallocate(fd, 0, bytes); /* a full /dev/shm fails here, not as SIGBUS */
    if (e) {
        errno = e;
        die("posix_fallocate", 0);
    }
    shmb_ring_t *ring;
    int rc = shmb_ring_map(fd, 1, capacity, 0, 0, &ring);
    close(fd);
    if (rc < 0) die("shmb_ring_map", rc);
    return ring;
}

static void ring_close(shmb_ring_t *ring) {
    shmb_ring_unmap(ring);
    unlink_shm();
}

/* ---- other processes ---------------------------------------------------------------- */

/* CPU ticks used so far by every other process, with its reaped children (from
 * /proc/<pid>/stat): another process busy during a run skews it, and a 2-core
 * machine has no spare core to absorb it. */
static int64_t others_cpu_ticks(void) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int64_t total = 0;
    pid_t me = getpid();
    struct dirent *e;
    char path[300], line[1024];
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]) || atoi(e->d_name) == me) continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t got = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[got] = 0;
        char *p = strrchr(line, ')'); /* the name may hold spaces; fields follow it */
        if (!p) continue;
        /* after ')': state(3) ... utime(14) stime(15) cutime(16) cstime(17) */
        long long v[4] = {0};
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld %lld %lld",
                   &v[0], &v[1], &v[2], &v[3]) == 4)
            total += v[0] + v[1] + v[2] + v[3];
    }
    closedir(d);
    return total;
}

/* Share of the cores other processes used since *ticks0 at *t0 (then resets both). */
static double others_share(int64_t *ticks0, int64_t *t0) {
    int64_t ticks = others_cpu_ticks(), t = now_ns();
    long hz = sysconf(_SC_CLK_TCK), cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double share = (double)(ticks - *ticks0) / (double)hz /
                   ((double)(t - *t0) / 1e9 * (double)(cpus > 0 ? cpus : 1));
    *ticks0 = ticks;
    *t0 = t;
    return share;
}

#define OTHERS_WARN 0.10

/* ---- decoding ----------------------------------------------------------------------- */

typedef struct {
    shmb_decoded_t d;
    int64_t *records; /* SHMB_DECODED_RECORD_FIELDS per record, row-major */
    int64_t *headers; /* SHMB_DECODED_HEADER_FIELDS per header */
} decoder_t;

static void decoder_init(decoder_t *dec, int32_t max_records) {
    memset(dec, 0, sizeof *dec);
    dec->records = xmalloc(sizeof(int64_t) * SHMB_DECODED_RECORD_FIELDS * (size_t)max_records);
    dec->headers = xmalloc(sizeof(int64_t) * SHMB_DECODED_HEADER_FIELDS * (size_t)max_records);
    dec->d.max_records = dec->d.max_headers = max_records;
    dec->d.record_rows = dec->records;
    dec->d.header_rows = dec->headers;
}

static void decoder_free(decoder_t *dec) {
    free(dec->records);
    free(dec->headers);
}

/* Field f of record i of the last decode; positions index the decoded buffer. */
static int64_t rec_field(const decoder_t *dec, int64_t i, int f) {
    return dec->records[i * SHMB_DECODED_RECORD_FIELDS + f];
}

/* Decode every batch in buf[0, len); returns records, and the last record's offset
 * and value length through the pointers. */
static int64_t decode_all(decoder_t *dec, const uint8_t *buf, int64_t len,
                          int64_t *last_offset, int64_t *last_value_len) {
    int64_t records = 0, at = 0;
    while (at < len) {
        int rc = shmb_batches_decode(buf, at, len, &dec->d, 0);
        if (rc == SHMB_ETOOBIG) {
            int32_t grow = dec->d.max_records * 4;
            decoder_free(dec);
            decoder_init(dec, grow);
            continue;
        }
        if (rc < 0) die("shmb_batches_decode", rc);
        if (dec->d.bytes_consumed == 0) die("shmb_batches_decode: partial batch", SHMB_ECORRUPT);
        if (rc > 0) {
            *last_offset = rec_field(dec, rc - 1, 0);
            *last_value_len = rec_field(dec, rc - 1, 5) - rec_field(dec, rc - 1, 4);
        }
        records += rc;
        at += dec->d.bytes_consumed;
    }
    return records;
}

/* ---- two processes ------------------------------------------------------------------ */

typedef struct {
    int ready;         /* consumer set up and waiting */
    int failed;        /* consumer error (rc), 0 if fine */
    int64_t end_ns;    /* consumer decoded the last record */
    int64_t records;
    int64_t last_offset;
    int64_t last_value_len;
    int64_t reads;
} shared_t;

static void consume(shmb_ring_t *ring, int64_t n, int64_t buf_len, shared_t *sh) {
    pin(cpu_b);
    uint8_t *buf = xmalloc((size_t)buf_len);
    /* fault the pages in before the clock starts; not with 0, which gcc turns into
     * calloc, whose fresh pages stay untouched */
    memset(buf, 1, (size_t)buf_len);
    decoder_t dec;
    decoder_init(&dec, 8192);
    int64_t pos = 0, count = 0, reads = 0, last_offset = -1, idle_since = 0, last_len = -2;
    __atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
    while (count < n) {
        int64_t got = shmb_ring_read(ring, &pos, buf, buf_len, 1000, &DEFAULT_IDLE);
        if (got == SHMB_EMPTY) {
            if (!idle_since) idle_since = now_ns();
            if (now_ns() - idle_since > (int64_t)STALL_MS * 1000000) {
                sh->failed = SHMB_EMPTY;
                _exit(1);
            }
            continue;
        }
        idle_since = 0;
        if (got == SHMB_ETOOBIG) { /* a batch larger than the buffer: grow, as Python does */
            int64_t need = shmb_ring_batch_bytes(ring, pos);
            if (need < 0) {
                sh->failed = (int)need;
                _exit(1);
            }
            buf_len = 2 * need;
            free(buf);
            buf = xmalloc((size_t)buf_len);
            continue;
        }
        if (got < 0) {
            sh->failed = (int)got;
            _exit(1);
        }
        reads++;
        count += decode_all(&dec, buf, got, &last_offset, &last_len);
        /* nothing spills here: give the space back so the producer can reuse it */
        int rc = shmb_ring_spill_advance(ring, pos, -1);
        if (rc < 0) {
            sh->failed = rc;
            _exit(1);
        }
    }
    sh->end_ns = now_ns();
    sh->records = count;
    sh->last_offset = last_offset;
    sh->last_value_len = last_len;
    sh->reads = reads;
    _exit(0); /* not exit(): the parent owns the shm name */
}

typedef struct {
    int size, batch;
    int64_t records;
    double seconds, records_per_s, bytes_per_s;
    int64_t reads;
    double others; /* share of the cores other processes used during the run */
} pair_result_t;

static int by_rate(const void *a, const void *b) {
    double x = ((const pair_result_t *)a)->records_per_s;
    double y = ((const pair_result_t *)b)->records_per_s;
    return (x > y) - (x < y);
}

/* One producer (this process) -> one forked consumer. batch == 1: append_record. */
static pair_result_t run_pair(int size, int64_t n, int batch, int64_t ring_bytes) {
    int64_t batch_bytes = (int64_t)batch * (size + 16) + 61;
    int64_t capacity = next_pow2(ring_bytes > 2 * batch_bytes ? ring_bytes : 2 * batch_bytes);
    int64_t buf_len = READ_BUFFER_BYTES;
    int64_t others0 = others_cpu_ticks(), w0 = now_ns();
    shmb_ring_t *ring = ring_create(capacity);
    shared_t *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
    if (sh == MAP_FAILED) die("mmap", 0);
    memset(sh, 0, sizeof *sh);

    /* the batch: values concatenated, one length each */
    uint8_t *values = xmalloc((size_t)batch * (size_t)size);
    memset(values, 'x', (size_t)batch * (size_t)size);
    int32_t *lens = xmalloc(sizeof(int32_t) * (size_t)batch);
    for (int i = 0; i < batch; i++) lens[i] = size;
    shmb_records_t recs = {.count = batch, .values = values, .value_lens = lens,
                           .timestamp = SHMB_TIMESTAMP_NOW};

    fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork", 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        have_shm = 0; /* the parent owns the name: a failing child must not unlink it */
        consume(ring, n, buf_len, sh);
    }
    pin(cpu_a);
    while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE)) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child) die("consumer died at start", SHMB_ESYS);
    }
    int64_t t0 = now_ns();
    if (batch == 1) {
        for (int64_t i = 0; i < n; i++) {
            int64_t off = shmb_ring_append_record(ring, NULL, -1, values, size,
                                                  SHMB_TIMESTAMP_NOW, -1);
            if (off < 0) die("shmb_ring_append_record", (int)off);
        }
    } else {
        for (int64_t i = 0; i < n; i += batch) {
            int64_t off = shmb_ring_append_records(ring, &recs, -1);
            if (off < 0) die("shmb_ring_append_records", (int)off);
        }
    }
    int status;
    if (waitpid(child, &status, 0) < 0) die("waitpid", 0);
    unpin();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_ring_c: consumer failed: %s (status %d)\n",
                sh->failed ? shmb_strerror(sh->failed) : "killed", status);
        exit(1);
    }
    if (sh->records != n || sh->last_offset != n - 1 || sh->last_value_len != size) {
        fprintf(stderr, "bench_ring_c: consumer got %lld records, last offset %lld, "
                "value %lld bytes; want %lld, %lld, %d\n", (long long)sh->records,
                (long long)sh->last_offset, (long long)sh->last_value_len, (long long)n,
                (long long)(n - 1), size);
        exit(1);
    }
    pair_result_t r = {.size = size, .batch = batch, .records = n, .reads = sh->reads};
    r.seconds = (double)(sh->end_ns - t0) / 1e9;
    r.records_per_s = (double)n / r.seconds;
    r.bytes_per_s = (double)n * size / r.seconds;
    r.others = others_share(&others0, &w0);
    munmap(sh, sizeof *sh);
    free(values);
    free(lens);
    ring_close(ring);
    return r;
}

/* ---- latency ------------------------------------------------------------------------ */

typedef struct {
    int ready, failed;
    int64_t samples;
    int64_t lat_ns[]; /* one per record */
} lat_shared_t;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One-way latency at `rate` records/s of `size`-byte values: the producer busy-waits
 * to each send time and stamps CLOCK_MONOTONIC into the value; the consumer reads with
 * `idle` and subtracts the stamp from its clock once the batch is decoded. The same
 * measurement as bench_ring.py's, without Python: what is left is the ring and the
 * machine. */
static void run_latency(int size, int64_t n, double rate, const shmb_idle_t *idle, int64_t skip,
                        double out[4]) {
    shmb_ring_t *ring = ring_create(4 * MiB);
    size_t shared_bytes = sizeof(lat_shared_t) + sizeof(int64_t) * (size_t)n;
    lat_shared_t *sh = mmap(NULL, shared_bytes, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) die("mmap", 0);
    memset(sh, 1, shared_bytes); /* fault in now */
    sh->ready = sh->failed = 0;
    sh->samples = 0;
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork", 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        have_shm = 0;
        pin(cpu_b);
        uint8_t *buf = xmalloc(READ_BUFFER_BYTES);
        memset(buf, 1, READ_BUFFER_BYTES);
        decoder_t dec;
        decoder_init(&dec, 8192);
        int64_t pos = 0, got_n = 0;
        __atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
        while (got_n < n) {
            int64_t got = shmb_ring_read(ring, &pos, buf, READ_BUFFER_BYTES, STALL_MS, idle);
            if (got < 0) {
                sh->failed = (int)got;
                _exit(1);
            }
            int64_t now = 0;
            for (int64_t at = 0; at < got;) { /* 8192 rows hold any read at 10k/s */
                int rc = shmb_batches_decode(buf, at, got, &dec.d, 0);
                if (rc < 0 || dec.d.bytes_consumed == 0) {
                    sh->failed = rc < 0 ? rc : SHMB_ECORRUPT;
                    _exit(1);
                }
                if (!now) now = now_ns();
                for (int i = 0; i < rc && got_n < n; i++) {
                    int64_t stamp;
                    memcpy(&stamp, buf + rec_field(&dec, i, 4), sizeof stamp);
                    sh->lat_ns[got_n++] = now - stamp;
                }
                at += dec.d.bytes_consumed;
            }
            shmb_ring_spill_advance(ring, pos, -1);
        }
        sh->samples = got_n;
        _exit(0);
    }
    pin(cpu_a);
    while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE)) {
    }
    uint8_t *value = xmalloc((size_t)size);
    memset(value, 'x', (size_t)size);
    double period = 1e9 / rate;
    int64_t t0 = now_ns() + 1000000;
    for (int64_t i = 0; i < n; i++) {
        int64_t due = t0 + (int64_t)((double)i * period), now;
        while ((now = now_ns()) < due) {
        }
        memcpy(value, &now, sizeof now);
        int64_t off = shmb_ring_append_record(ring, NULL, -1, value, size, SHMB_TIMESTAMP_NOW,
                                              -1);
        if (off < 0) die("shmb_ring_append_record", (int)off);
    }
    int status;
    if (waitpid(child, &status, 0) < 0) die("waitpid", 0);
    unpin();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || sh->samples != n) {
        fprintf(stderr, "bench_ring_c: latency consumer failed: %s (status %d)\n",
                sh->failed ? shmb_strerror(sh->failed) : "killed", status);
        exit(1);
    }
    if (skip > n / 2) skip = 0;
    int64_t *s = sh->lat_ns + skip, m = n - skip;
    qsort(s, (size_t)m, sizeof *s, cmp_i64);
    double qs[3] = {0.50, 0.99, 0.999};
    for (int k = 0; k < 3; k++) { /* nearest rank, as bench_ring.py */
        int64_t at = (int64_t)(qs[k] * (double)m + 0.5) - 1;
        out[k] = (double)s[at < 0 ? 0 : at >= m ? m - 1 : at];
    }
    out[3] = (double)s[m - 1];
    free(value);
    munmap(sh, shared_bytes);
    ring_close(ring);
}

/* ---- one process -------------------------------------------------------------------- */

/* ns per shmb_ring_append_record; the spill follows the tail whenever the ring fills. */
static double append_ns(int size, int64_t n, int64_t timestamp) {
    shmb_ring_t *ring = ring_create(next_pow2(16 * MiB > 64 * (int64_t)size ? 16 * MiB
                                                                          : 64 * (int64_t)size));
    uint8_t *value = xmalloc((size_t)size);
    memset(value, 'x', (size_t)size);
    shmb_ring_stat_t st;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        int64_t rc = shmb_ring_append_record(ring, NULL, -1, value, size, timestamp, 0);
        if (rc == SHMB_FULL) {
            shmb_ring_stat(ring, &st);
            shmb_ring_spill_advance(ring, st.tail_position, -1);
            i--;
            continue;
        }
        if (rc < 0) die("shmb_ring_append_record", (int)rc);
    }
    double ns = (double)(now_ns() - t0) / (double)n;
    free(value);
    ring_close(ring);
    return ns;
}

/* Fill a ring with one-record batches, then time shmb_ring_read + decode draining it;
 * repeat until n records are read. Returns ns per record; *per_read: records/read. */
static double read_decode_ns(int size, int64_t n, double *per_read) {
    int64_t capacity = next_pow2(16 * MiB > 64 * (int64_t)size ? 16 * MiB : 64 * (int64_t)size);
    shmb_ring_t *ring = ring_create(capacity);
    uint8_t *value = xmalloc((size_t)size);
    memset(value, 'x', (size_t)size);
    uint8_t *buf = xmalloc(READ_BUFFER_BYTES);
    memset(buf, 1, READ_BUFFER_BYTES);
    decoder_t dec;
    decoder_init(&dec, 8192);
    int64_t pos = 0, read_records = 0, reads = 0, elapsed = 0, last_offset, last_len;
    while (read_records < n) {
        int64_t rc;
        while ((rc = shmb_ring_append_record(ring, NULL, -1, value, size, SHMB_TIMESTAMP_NOW,
                                             0)) >= 0) {
        }
        if (rc != SHMB_FULL) die("shmb_ring_append_record", (int)rc);
        int64_t t0 = now_ns();
        for (;;) {
            int64_t got = shmb_ring_read(ring, &pos, buf, READ_BUFFER_BYTES, 0, 0);
            if (got == SHMB_EMPTY) break;
            if (got < 0) die("shmb_ring_read", (int)got);
            reads++;
            read_records += decode_all(&dec, buf, got, &last_offset, &last_len);
        }
        elapsed += now_ns() - t0;
        int e = shmb_ring_spill_advance(ring, pos, -1);
        if (e < 0) die("shmb_ring_spill_advance", e);
    }
    *per_read = (double)read_records / (double)reads;
    decoder_free(&dec);
    free(buf);
    free(value);
    ring_close(ring);
    return (double)elapsed / (double)read_records;
}

/* GB/s of memcpy and of shmb_crc32c over size-byte blocks streaming through a buffer
 * larger than the caches (64 MiB), as the ring's bytes are. */
static void byte_costs(int size, int64_t total, double *memcpy_gbs, double *crc_gbs) {
    size_t span = 64 * MiB;
    uint8_t *src = xmalloc(span), *dst = xmalloc(span);
    memset(src, 'x', span);
    memset(dst, 1, span); /* not 0: gcc turns malloc + memset 0 into calloc */
    int64_t blocks = total / size, per_span = (int64_t)(span / (size_t)size);
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < blocks; i++) {
        size_t at = (size_t)(i % per_span) * (size_t)size;
        memcpy(dst + at, src + at, (size_t)size);
    }
    int64_t t1 = now_ns();
    uint32_t crc = 0;
    for (int64_t i = 0; i < blocks; i++) {
        size_t at = (size_t)(i % per_span) * (size_t)size;
        crc ^= shmb_crc32c(0, src + at, (size_t)size);
    }
    int64_t t2 = now_ns();
    volatile uint8_t sink = dst[size / 2] ^ (uint8_t)crc; /* keep both loops */
    (void)sink;
    *memcpy_gbs = (double)(blocks * size) / (double)(t1 - t0);
    *crc_gbs = (double)(blocks * size) / (double)(t2 - t1);
    free(src);
    free(dst);
}

/* ---- main --------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr, "usage: bench_ring_c [--smoke] [--size BYTES]... [--messages N] "
                    "[--batch B] [--batch-bytes N] [--ring-bytes N]\n");
    exit(2);
}

static const char *fmt_size(int size, char *out, size_t len) {
    if (size >= KiB && size % KiB == 0)
        snprintf(out, len, "%d KiB", size / KiB);
    else
        snprintf(out, len, "%d B", size);
    return out;
}

static void print_header(void) {
    char model[256] = "unknown", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(model, sizeof model, "%s", c + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        }
        fclose(f);
    }
    char commit[64] = "unknown";
    FILE *g = popen("git rev-parse --short HEAD 2>/dev/null", "r");
    if (g) {
        if (fgets(commit, sizeof commit, g)) commit[strcspn(commit, "\n")] = 0;
        pclose(g);
    }
    g = popen("git status --porcelain --untracked-files=no 2>/dev/null", "r");
    if (g) {
        if (fgets(line, sizeof line, g))
            strncat(commit, "+dirty", sizeof commit - strlen(commit) - 1);
        pclose(g);
    }
    printf("bench_ring_c: one producer process -> one consumer process, one ring (C API)\n");
    printf("  %-16s %s\n", "cpu", model);
    printf("  %-16s %ld online, pinned producer %d consumer %d\n", "cores",
           sysconf(_SC_NPROCESSORS_ONLN), cpu_a, cpu_b);
    printf("  %-16s %s\n", "commit", commit);
    printf("  %-16s %s, crc32c_hardware=%d\n", "build",
#ifdef __OPTIMIZE__
           "optimised (" __VERSION__ ")",
#else
           "NOT optimised (" __VERSION__ ")",
#endif
           shmb_crc32c_hardware());
}

int main(int argc, char **argv) {
    int smoke = 0, nsizes = 0, sizes[MAX_SIZES], batch = 1000;
    int64_t messages = 0, ring_bytes = 16 * MiB, batch_bytes = MiB;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke"))
            smoke = 1;
        else if (!strcmp(argv[i], "--size") && i + 1 < argc && nsizes < MAX_SIZES)
            sizes[nsizes++] = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            messages = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch-bytes") && i + 1 < argc)
            batch_bytes = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--ring-bytes") && i + 1 < argc)
            ring_bytes = atoll(argv[++i]);
        else
            usage();
    }
    if (!nsizes) {
        sizes[0] = 100, sizes[1] = 4 * KiB, sizes[2] = 64 * KiB;
        nsizes = 3;
    }
    for (int i = 0; i < nsizes; i++)
        if (sizes[i] < 1 || sizes[i] > 64 * MiB) usage();
    if (batch < 1 || messages < 0 || batch_bytes < 1) usage();
    if (smoke && batch > 100) batch = 100;
    atexit(unlink_shm);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    find_cpus();
    print_header();

    /* every pair run `repeat` times, the median reported with the range: the 2-vCPU
     * machine this was written on varies by up to 1.7x from run to run */
    int repeat = smoke ? 1 : REPEAT, disturbed = 0;
    printf("\ntwo processes, median of %d runs (value bytes only, GB = 1e9 B; range = "
           "slowest..fastest run)\n", repeat);
    printf("  %6s  %-22s %10s %7s %13s %7s %12s  %s\n", "size", "api", "records", "s",
           "records/s", "GB/s", "records/read", "range GB/s");
    char sz[32];
    for (int i = 0; i < nsizes; i++) {
        int size = sizes[i];
        /* ~1-3 GB per run, ~0.5-2 s each */
        int64_t n = messages ? messages
                    : smoke   ? (size >= 64 * KiB ? 300 : 3000)
                              : (size <= 100 ? 10000000 : 3000000000LL / size);
        /* records per batch: --batch, at most --batch-bytes of values */
        int capped = batch_bytes / size < batch ? (int)(batch_bytes / size) : batch;
        if (capped < 1) capped = 1;
        for (int b = 0; b < 2; b++) {
            int bt = b ? capped : 1;
            int64_t nn = n < bt ? bt : n - n % bt;
            pair_result_t runs[REPEAT];
            for (int k = 0; k < repeat; k++) runs[k] = run_pair(size, nn, bt, ring_bytes);
            qsort(runs, (size_t)repeat, sizeof runs[0], by_rate);
            pair_result_t r = runs[(repeat - 1) / 2];
            const char *flag = "";
            for (int k = 0; k < repeat; k++)
                if (runs[k].others > OTHERS_WARN && runs[k].seconds >= 0.5)
                    flag = " *", disturbed = 1;
            char api[64];
            if (bt == 1)
                snprintf(api, sizeof api, "append_record");
            else
                snprintf(api, sizeof api, "append_records x%d", bt);
            printf("  %6s  %-22s %10lld %7.2f %13.0f %7.2f %12.1f  %.2f..%.2f%s\n",
                   fmt_size(size, sz, sizeof sz), api, (long long)r.records, r.seconds,
                   r.records_per_s, r.bytes_per_s / 1e9, (double)r.records / (double)r.reads,
                   runs[0].bytes_per_s / 1e9, runs[repeat - 1].bytes_per_s / 1e9, flag);
            fflush(stdout);
        }
    }

    printf("\none process, ns per record, best of %d (append: one record per batch, "
           "timestamp NOW / given; read+decode: 1 MiB reads of those batches)\n", repeat);
    printf("  %6s  %14s %14s %16s %13s %11s %11s\n", "size", "append_record", "ts given",
           "read+decode", "records/read", "memcpy GB/s", "crc32c GB/s");
    for (int i = 0; i < nsizes; i++) {
        int size = sizes[i];
        int64_t n = smoke ? 2000 : (size <= 100 ? 2000000 : 1000000000LL / size);
        double per_read = 0, a = 1e18, a_ts = 1e18, rd = 1e18, mc = 0, crc = 0;
        for (int k = 0; k < repeat; k++) {
            double x, y, pr;
            if ((x = append_ns(size, n, SHMB_TIMESTAMP_NOW)) < a) a = x;
            if ((x = append_ns(size, n, 1700000000000LL)) < a_ts) a_ts = x;
            if ((x = read_decode_ns(size, n, &pr)) < rd) rd = x, per_read = pr;
            byte_costs(size, smoke ? 16 * MiB : 1000 * MiB, &x, &y);
            if (x > mc) mc = x;
            if (y > crc) crc = y;
        }
        printf("  %6s  %11.0f ns %11.0f ns %13.0f ns %13.1f %11.1f %11.1f\n",
               fmt_size(size, sz, sizeof sz), a, a_ts, rd, per_read, mc, crc);
        fflush(stdout);
    }
    double rate = 10000;
    int64_t lat_n = smoke ? 1500 : 30000, skip = 1000;
    printf("\none-way latency, 100 B at %.0f records/s, busy-wait pacing (us; first %lld "
           "samples dropped)\n", rate, (long long)skip);
    printf("  %-34s %8s %8s %8s %8s %9s\n", "reader", "samples", "p50", "p99", "p99.9",
           "max");
    const shmb_idle_t *idles[2] = {&DEFAULT_IDLE, NULL};
    for (int k = 0; k < 2; k++) {
        double q[4];
        int64_t others0 = others_cpu_ticks(), w0 = now_ns();
        run_latency(100, lat_n, rate, idles[k], skip, q);
        int busy = others_share(&others0, &w0) > OTHERS_WARN && !smoke; /* ticks: 10 ms */
        disturbed |= busy;
        char what[64];
        if (idles[k])
            snprintf(what, sizeof what, "%lld spins, %lld yields (default)",
                     (long long)idles[k]->max_spins, (long long)idles[k]->max_yields);
        else
            snprintf(what, sizeof what, "futex at once");
        printf("  %-34s %8lld %8.1f %8.1f %8.1f %9.1f%s\n", what,
               (long long)(lat_n > 2 * skip ? lat_n - skip : lat_n), q[0] / 1e3, q[1] / 1e3,
               q[2] / 1e3, q[3] / 1e3, busy ? " *" : "");
        fflush(stdout);
    }
    if (disturbed)
        printf("\n  * other processes used > %.0f%% of the cores during a run: rerun on a "
               "quiet machine\n", OTHERS_WARN * 100);
    if (smoke) printf("\n(smoke run: sizes too small for the figures to mean anything)\n");
    return 0;
}
