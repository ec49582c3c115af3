/* Ring throughput in pure C: the ceiling the Python API is measured against.
 *
 * Measured, per value size (100 B, 4 KiB, 64 KiB):
 *   two processes  the parent appends with shmb_ring_append_record (one record per
 *                  batch) or shmb_ring_append_records (--batch records per batch); a
 *                  forked consumer reads with shmb_ring_read (1 MiB buffer, default
 *                  spin 50 us), decodes every record with shmb_batches_decode (no CRC
 *                  check, as RingReader.poll) and advances the spill position after
 *                  every read. Wall time from the first append to the consumer having
 *                  decoded the last record; value bytes only (GB = 1e9 B).
 *   one process    ns per shmb_ring_append_record call (ring kept from filling by
 *                  advancing the spill whenever an append returns SHMB_FULL), and ns
 *                  per record of shmb_ring_read + shmb_batches_decode over a full ring;
 *                  plus memcpy and CRC32C speed on this machine, the two per-byte costs
 *                  an append pays (encode copies the value into the ring and checksums
 *                  the batch), for reading the 64 KiB rows.
 * Left out: keys, headers, the durable log, more than one producer or reader, and
 * anything above the C API (cffi, Records). Timestamps are SHMB_TIMESTAMP_NOW, as
 * Ring.append uses.
 *
 *   make benchmarks/bench_ring_c && benchmarks/bench_ring_c [--smoke] [--size S]
 *        [--messages N] [--batch B]
 */
#define _GNU_SOURCE
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
#define SPIN_NS 50000               /* RingReader's default spin */
#define STALL_MS 20000              /* a consumer that sees nothing this long fails */
#define MAX_SIZES 8

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

/* ---- decoding ----------------------------------------------------------------------- */

typedef struct {
    shmb_decoded_t d;
    int64_t *i64;
    int32_t *i32;
} decoder_t;

static void decoder_init(decoder_t *dec, int32_t max_records) {
    memset(dec, 0, sizeof *dec);
    dec->i64 = xmalloc(sizeof(int64_t) * 2 * (size_t)max_records);
    dec->i32 = xmalloc(sizeof(int32_t) * 9 * (size_t)max_records);
    shmb_decoded_t *d = &dec->d;
    d->max_records = d->max_headers = max_records;
    d->offsets = dec->i64;
    d->timestamps = dec->i64 + max_records;
    int32_t **cols[] = {&d->key_pos, &d->key_len, &d->value_pos, &d->value_len,
                        &d->header_count, &d->hkey_pos, &d->hkey_len, &d->hvalue_pos,
                        &d->hvalue_len};
    for (int i = 0; i < 9; i++) *cols[i] = dec->i32 + (size_t)i * (size_t)max_records;
}

static void decoder_free(decoder_t *dec) {
    free(dec->i64);
    free(dec->i32);
}

/* Decode every batch in buf[0, len); returns records, and the last record's offset
 * and value length through the pointers. */
static int64_t decode_all(decoder_t *dec, const uint8_t *buf, int64_t len,
                          int64_t *last_offset, int32_t *last_value_len) {
    int64_t records = 0, at = 0;
    while (at < len) {
        int rc = shmb_batches_decode(buf + at, len - at, &dec->d, 0);
        if (rc == SHMB_ETOOBIG) {
            int32_t grow = dec->d.max_records * 4;
            decoder_free(dec);
            decoder_init(dec, grow);
            continue;
        }
        if (rc < 0) die("shmb_batches_decode", rc);
        if (dec->d.bytes_consumed == 0) die("shmb_batches_decode: partial batch", SHMB_ECORRUPT);
        if (rc > 0) {
            *last_offset = dec->d.offsets[rc - 1];
            *last_value_len = dec->d.value_len[rc - 1];
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
    int32_t last_value_len;
    int64_t reads;
} shared_t;

static void consume(shmb_ring_t *ring, int64_t n, int64_t buf_len, shared_t *sh) {
    pin(cpu_b);
    uint8_t *buf = xmalloc((size_t)buf_len);
    memset(buf, 0, (size_t)buf_len); /* fault the pages in before the clock starts */
    decoder_t dec;
    decoder_init(&dec, 8192);
    int64_t pos = 0, count = 0, reads = 0, last_offset = -1, idle_since = 0;
    int32_t last_len = -2;
    __atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
    while (count < n) {
        int64_t got = shmb_ring_read(ring, &pos, buf, buf_len, 1000, SPIN_NS);
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
            buf_len = 2 * shmb_ring_batch_bytes(ring, pos);
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
        int rc = shmb_ring_spill_advance(ring, pos);
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
} pair_result_t;

/* One producer (this process) -> one forked consumer. batch == 1: append_record. */
static pair_result_t run_pair(int size, int64_t n, int batch, int64_t ring_bytes) {
    int64_t batch_bytes = (int64_t)batch * (size + 16) + 61;
    int64_t capacity = next_pow2(ring_bytes > 2 * batch_bytes ? ring_bytes : 2 * batch_bytes);
    int64_t buf_len = READ_BUFFER_BYTES;
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
        consume(ring, n, buf_len, sh);
    }
    pin(cpu_a);
    while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE)) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child) die("consumer died at start", SHMB_ESYS);
    }
    int64_t offset, t0 = now_ns();
    if (batch == 1) {
        for (int64_t i = 0; i < n; i++) {
            int rc = shmb_ring_append_record(ring, NULL, -1, values, size, SHMB_TIMESTAMP_NOW,
                                             -1, &offset);
            if (rc < 0) die("shmb_ring_append_record", rc);
        }
    } else {
        for (int64_t i = 0; i < n; i += batch) {
            int rc = shmb_ring_append_records(ring, &recs, -1, &offset);
            if (rc < 0) die("shmb_ring_append_records", rc);
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
                "value %d bytes; want %lld, %lld, %d\n", (long long)sh->records,
                (long long)sh->last_offset, sh->last_value_len, (long long)n,
                (long long)(n - 1), size);
        exit(1);
    }
    pair_result_t r = {.size = size, .batch = batch, .records = n, .reads = sh->reads};
    r.seconds = (double)(sh->end_ns - t0) / 1e9;
    r.records_per_s = (double)n / r.seconds;
    r.bytes_per_s = (double)n * size / r.seconds;
    munmap(sh, sizeof *sh);
    free(values);
    free(lens);
    ring_close(ring);
    return r;
}

/* ---- one process -------------------------------------------------------------------- */

/* ns per shmb_ring_append_record; the spill follows the tail whenever the ring fills. */
static double append_ns(int size, int64_t n, int64_t timestamp) {
    shmb_ring_t *ring = ring_create(next_pow2(16 * MiB > 64 * (int64_t)size ? 16 * MiB
                                                                          : 64 * (int64_t)size));
    uint8_t *value = xmalloc((size_t)size);
    memset(value, 'x', (size_t)size);
    shmb_ring_stat_t st;
    int64_t offset, t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        int rc = shmb_ring_append_record(ring, NULL, -1, value, size, timestamp, 0, &offset);
        if (rc == SHMB_FULL) {
            shmb_ring_stat(ring, &st);
            shmb_ring_spill_advance(ring, st.tail_position);
            i--;
            continue;
        }
        if (rc < 0) die("shmb_ring_append_record", rc);
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
    memset(buf, 0, READ_BUFFER_BYTES);
    decoder_t dec;
    decoder_init(&dec, 8192);
    int64_t pos = 0, read_records = 0, reads = 0, elapsed = 0, offset, last_offset;
    int32_t last_len;
    while (read_records < n) {
        int rc;
        while ((rc = shmb_ring_append_record(ring, NULL, -1, value, size, SHMB_TIMESTAMP_NOW,
                                             0, &offset)) >= 0) {
        }
        if (rc != SHMB_FULL) die("shmb_ring_append_record", rc);
        int64_t t0 = now_ns();
        for (;;) {
            int64_t got = shmb_ring_read(ring, &pos, buf, READ_BUFFER_BYTES, 0, 0);
            if (got == SHMB_EMPTY) break;
            if (got < 0) die("shmb_ring_read", (int)got);
            reads++;
            read_records += decode_all(&dec, buf, got, &last_offset, &last_len);
        }
        elapsed += now_ns() - t0;
        int e = shmb_ring_spill_advance(ring, pos);
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
    memset(dst, 0, span);
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
                    "[--batch B] [--ring-bytes N]\n");
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
        if (fgets(line, sizeof line, g)) strncat(commit, "+dirty", sizeof commit - strlen(commit) - 1);
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
    int64_t messages = 0, ring_bytes = 16 * MiB;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke"))
            smoke = 1;
        else if (!strcmp(argv[i], "--size") && i + 1 < argc && nsizes < MAX_SIZES)
            sizes[nsizes++] = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            messages = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
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
    if (batch < 1 || messages < 0) usage();
    if (smoke && batch > 100) batch = 100;
    atexit(unlink_shm);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    find_cpus();
    print_header();

    /* bytes per run: ~2-4 GB in a full run, so each takes ~0.5-3 s */
    printf("\ntwo processes (value bytes only, GB = 1e9 B)\n");
    printf("  %6s  %-34s %10s %7s %13s %8s %12s\n", "size", "api", "records", "s",
           "records/s", "GB/s", "records/read");
    char sz[32];
    for (int i = 0; i < nsizes; i++) {
        int size = sizes[i];
        int64_t n = messages ? messages
                    : smoke   ? (size >= 64 * KiB ? 300 : 3000)
                              : (size <= 100 ? 20000000 : 3000000000LL / size);
        for (int b = 0; b < 2; b++) {
            int bt = b ? batch : 1;
            int64_t nn = n < bt ? bt : n - n % bt;
            pair_result_t r = run_pair(size, nn, bt, ring_bytes);
            char api[64];
            if (bt == 1)
                snprintf(api, sizeof api, "append_record");
            else
                snprintf(api, sizeof api, "append_records x%d", bt);
            printf("  %6s  %-34s %10lld %7.2f %13.0f %8.2f %12.1f\n",
                   fmt_size(size, sz, sizeof sz), api, (long long)r.records, r.seconds,
                   r.records_per_s, r.bytes_per_s / 1e9,
                   (double)r.records / (double)r.reads);
            fflush(stdout);
        }
    }

    printf("\none process, per call\n");
    printf("  %6s  %16s %16s %16s %13s %11s %11s\n", "size", "append_record", "  ts given",
           "read+decode/rec", "records/read", "memcpy GB/s", "crc32c GB/s");
    for (int i = 0; i < nsizes; i++) {
        int size = sizes[i];
        int64_t n = smoke ? 2000 : (size <= 100 ? 5000000 : 2000000000LL / size);
        double per_read, mc, crc;
        double a = append_ns(size, n, SHMB_TIMESTAMP_NOW);
        double a_ts = append_ns(size, n, 1700000000000LL);
        double rd = read_decode_ns(size, n, &per_read);
        byte_costs(size, smoke ? 16 * MiB : 2000 * MiB, &mc, &crc);
        printf("  %6s  %13.0f ns %13.0f ns %13.0f ns %13.1f %11.1f %11.1f\n",
               fmt_size(size, sz, sizeof sz), a, a_ts, rd, per_read, mc, crc);
        fflush(stdout);
    }
    if (smoke) printf("\n(smoke run: sizes too small for the figures to mean anything)\n");
    return 0;
}
