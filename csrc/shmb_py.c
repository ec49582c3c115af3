/* The C core's CPython-API half: what runs once per record and must cost less than a
 * cffi call (~130 ns, and it releases the GIL). Everything else stays in cffi.
 *
 * BatchBuilder, the producer's open batch: records encoded one call each into a
 * RecordBatch v2 buffer, sealed (header, CRC32C) when it goes to the ring. Holding
 * the GIL makes each call atomic, so threads append without a lock and a record's
 * future gets its batch and index in the same step.
 *
 * Record timestamps: while every record came without one, they are all delta 0 and
 * the batch is stamped when sealed (the wall clock when it goes, as before). The
 * first record with a timestamp fixes the base: its own if it is first, else the
 * clock then (what the records before it get); later records without one are
 * stamped with the clock as they come.
 *
 * Sealed: between seal() and clear()/unseal() the bytes are being appended (the GIL
 * is released meanwhile) and every append refuses (-1 / None): the caller's flush
 * holds its lock, and a refused sender waits for that lock.
 *
 * build_records: the consumer's Records of a decode (shmb_batches_decode's rows),
 * one vectorcall each, headers included. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "shmb.h"
#include "shmb_codec.h"
#include "shmb_layout.h"

#define UNRESOLVED INT64_MIN /* base timestamp not yet fixed: stamped at seal */
#define FIRST_BYTES 4096

typedef struct {
    PyObject_HEAD
    uint8_t *buf;
    Py_ssize_t cap;
    Py_ssize_t len; /* header bytes included */
    int32_t count;
    int32_t batch_records;   /* a batch with this many records goes at once */
    Py_ssize_t batch_bytes;  /* ... and one whose records take this many bytes */
    Py_ssize_t limit_bytes;  /* the most record bytes a batch of two or more takes */
    int64_t base_ts;         /* UNRESOLVED, or the batch's base timestamp */
    int64_t max_ts;          /* largest resolved timestamp (INT64_MIN: none) */
    Py_ssize_t undo_len;     /* before the last append: drop_last restores these */
    int64_t undo_base_ts, undo_max_ts;
    int sealed;
    Py_ssize_t exports;
    PyObject *token;       /* what futures of this batch's records point at */
    PyObject *future_type; /* None: append_value returns the index */
} Builder;

static void reset(Builder *b) {
    b->len = SHMB_BATCH_HEADER_BYTES;
    b->count = 0;
    b->base_ts = UNRESOLVED;
    b->max_ts = INT64_MIN;
    b->sealed = 0;
}

static int builder_init(Builder *b, PyObject *args, PyObject *kwds) {
    static char *names[] = {"batch_records", "batch_bytes", "limit_bytes", "future_type",
                            "token", NULL};
    int batch_records;
    Py_ssize_t batch_bytes, limit_bytes;
    PyObject *future_type = Py_None, *token = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "inn|OO", names, &batch_records,
                                     &batch_bytes, &limit_bytes, &future_type, &token))
        return -1;
    if (batch_records < 1 || batch_bytes < 0 || limit_bytes < 0) {
        PyErr_Format(PyExc_ValueError,
                     "batch builder: batch_records %d must be >= 1, batch_bytes %zd and "
                     "limit_bytes %zd >= 0",
                     batch_records, batch_bytes, limit_bytes);
        return -1;
    }
    if (!b->buf) {
        b->buf = PyMem_Malloc(FIRST_BYTES);
        if (!b->buf) {
            PyErr_NoMemory();
            return -1;
        }
        b->cap = FIRST_BYTES;
    }
    b->batch_records = batch_records;
    b->batch_bytes = batch_bytes;
    b->limit_bytes = limit_bytes;
    Py_INCREF(future_type);
    Py_XSETREF(b->future_type, future_type);
    Py_INCREF(token);
    Py_XSETREF(b->token, token);
    reset(b);
    return 0;
}

static void builder_dealloc(Builder *b) {
    PyMem_Free(b->buf);
    Py_XDECREF(b->token);
    Py_XDECREF(b->future_type);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* A bytes-like or None, as (pointer, length; -1 for None). */
typedef struct {
    Py_buffer view;
    int held;
} bytes_arg;

static void release(bytes_arg *a) {
    if (a->held) PyBuffer_Release(&a->view);
}

static int get_bytes(PyObject *o, bytes_arg *a, const uint8_t **p, int64_t *n, const char *what) {
    a->held = 0;
    if (o == Py_None) {
        *p = NULL;
        *n = -1;
        return 0;
    }
    if (PyBytes_CheckExact(o)) {
        *p = (const uint8_t *)PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
    } else {
        if (PyObject_GetBuffer(o, &a->view, PyBUF_SIMPLE) < 0) {
            PyErr_Format(PyExc_TypeError, "%s must be bytes or None, not %.100s", what,
                         Py_TYPE(o)->tp_name);
            return -1;
        }
        a->held = 1;
        *p = a->view.buf;
        *n = a->view.len;
    }
    if (*n > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s of %lld bytes: a record's fields are < 2 GiB",
                     what, (long long)*n);
        release(a);
        a->held = 0;
        return -1;
    }
    return 0;
}

static int grow(Builder *b, Py_ssize_t need) {
    if (need <= b->cap) return 0;
    if (b->exports) {
        PyErr_SetString(PyExc_BufferError, "batch builder: a view of it is still held");
        return -1;
    }
    Py_ssize_t cap = b->cap * 2 > need ? b->cap * 2 : need;
    uint8_t *buf = PyMem_Realloc(b->buf, (size_t)cap);
    if (!buf) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = buf;
    b->cap = cap;
    return 0;
}

static inline uint8_t *put_field(uint8_t *p, const uint8_t *src, int64_t n) {
    p = shmb_put_varint(p, n);
    if (n > 0) {
        memcpy(p, src, (size_t)n);
        p += n;
    }
    return p;
}

#define MAX_HEADERS 64 /* on the stack; more go the slow way, one at a time */

/* Appends one record. Returns its index, -1 if it does not fit the batch (over
 * limit_bytes with records already there, or a timestamp too far from the base),
 * -2 with an exception set. fast: only if the batch neither starts nor fills with
 * it (the caller has nothing to do then but return). */
static int append(Builder *b, PyObject *value, PyObject *key, PyObject *timestamp,
                  PyObject *headers, int fast) {
    if (b->sealed) return -1;
    if (fast && (b->count == 0 || b->count + 1 >= b->batch_records)) return -1;
    bytes_arg va, ka;
    const uint8_t *vp, *kp;
    int64_t vl, kl, ts = 0;
    int has_ts = timestamp != Py_None;
    if (has_ts) {
        ts = PyLong_AsLongLong(timestamp);
        if (ts == -1 && PyErr_Occurred()) return -2;
    }
    if (get_bytes(value, &va, &vp, &vl, "value") < 0) return -2;
    if (get_bytes(key, &ka, &kp, &kl, "key") < 0) {
        release(&va);
        return -2;
    }
    int rc = -2;
    PyObject *hseq = NULL;
    Py_ssize_t hc = 0;
    const char *hk[MAX_HEADERS];
    Py_ssize_t hkl[MAX_HEADERS];
    bytes_arg hva[MAX_HEADERS];
    const uint8_t *hvp[MAX_HEADERS];
    int64_t hvl[MAX_HEADERS];
    Py_ssize_t held = 0;
    if (headers != Py_None) {
        hseq = PySequence_Fast(headers, "headers must be a sequence of (key, value)");
        if (!hseq) goto out;
        hc = PySequence_Fast_GET_SIZE(hseq);
        if (hc > MAX_HEADERS) {
            PyErr_Format(PyExc_ValueError, "%zd headers on one record: at most %d", hc,
                         MAX_HEADERS);
            goto out;
        }
        for (Py_ssize_t i = 0; i < hc; i++, held++) {
            PyObject *kv = PySequence_Fast_GET_ITEM(hseq, i);
            if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2 ||
                !PyUnicode_Check(PyTuple_GET_ITEM(kv, 0))) {
                PyErr_SetString(PyExc_TypeError, "a header must be a (str, bytes | None)");
                goto out;
            }
            hk[i] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(kv, 0), &hkl[i]);
            if (!hk[i]) goto out;
            if (get_bytes(PyTuple_GET_ITEM(kv, 1), &hva[i], &hvp[i], &hvl[i],
                          "a header value") < 0)
                goto out;
        }
    }
    /* the timestamp delta; fixing the base if this record brings the first one */
    int64_t base = b->base_ts, delta = 0, stamp = 0;
    if (has_ts || base != UNRESOLVED) {
        stamp = has_ts ? ts : shmb_now_ms();
        if (base == UNRESOLVED) base = b->count == 0 ? stamp : shmb_now_ms();
        if (__builtin_sub_overflow(stamp, base, &delta)) {
            rc = -1; /* a batch of its own: base = its timestamp */
            goto out;
        }
    }
    int64_t body = 1 + shmb_varint_bytes(delta) + shmb_varint_bytes(b->count) +
                   shmb_varint_bytes(kl) + (kl > 0 ? kl : 0) + shmb_varint_bytes(vl) +
                   (vl > 0 ? vl : 0) + shmb_varint_bytes(hc);
    for (Py_ssize_t i = 0; i < hc; i++)
        body += shmb_varint_bytes(hkl[i]) + hkl[i] + shmb_varint_bytes(hvl[i]) +
                (hvl[i] > 0 ? hvl[i] : 0);
    int64_t total = shmb_varint_bytes(body) + body;
    int64_t records_bytes = b->len - SHMB_BATCH_HEADER_BYTES + total;
    if ((b->count > 0 && records_bytes > b->limit_bytes) ||
        (fast && records_bytes >= b->batch_bytes) ||
        body > INT32_MAX || b->len + total > INT32_MAX) {
        rc = -1;
        goto out;
    }
    if (grow(b, b->len + (Py_ssize_t)total) < 0) goto out;
    uint8_t *p = b->buf + b->len;
    p = shmb_put_varint(p, body);
    *p++ = 0; /* record attributes: unused */
    p = shmb_put_varint(p, delta);
    p = shmb_put_varint(p, b->count);
    p = put_field(p, kp, kl);
    p = put_field(p, vp, vl);
    p = shmb_put_varint(p, hc);
    for (Py_ssize_t i = 0; i < hc; i++) {
        p = put_field(p, (const uint8_t *)hk[i], hkl[i]);
        p = put_field(p, hvp[i], hvl[i]);
    }
    b->undo_len = b->len;
    b->undo_base_ts = b->base_ts;
    b->undo_max_ts = b->max_ts;
    b->len += (Py_ssize_t)total;
    b->base_ts = base;
    if (base != UNRESOLVED && stamp > b->max_ts) b->max_ts = stamp;
    if (base != UNRESOLVED && base > b->max_ts) b->max_ts = base; /* the delta-0 ones */
    rc = b->count++;
out:
    for (Py_ssize_t i = 0; i < held; i++) release(&hva[i]);
    Py_XDECREF(hseq);
    release(&ka);
    release(&va);
    return rc;
}

static PyObject *builder_append(Builder *b, PyObject *args, PyObject *kwds) {
    static char *names[] = {"value", "key", "timestamp", "headers", NULL};
    PyObject *value, *key = Py_None, *timestamp = Py_None, *headers = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOO", names, &value, &key, &timestamp,
                                     &headers))
        return NULL;
    int rc = append(b, value, key, timestamp, headers, 0);
    return rc == -2 ? NULL : PyLong_FromLong(rc);
}

/* extend(values, keys=None, timestamp=None) -> how many went in: the records in
 * order, until one does not fit (send_batch's path: no list of lengths). On an
 * error the ones before it stay: the caller clears. */
static PyObject *builder_extend(Builder *b, PyObject *args) {
    PyObject *values, *keys = Py_None, *timestamp = Py_None;
    if (!PyArg_ParseTuple(args, "O|OO", &values, &keys, &timestamp)) return NULL;
    PyObject *vs = PySequence_Fast(values, "values must be a sequence");
    if (!vs) return NULL;
    PyObject *ks = NULL;
    if (keys != Py_None) {
        ks = PySequence_Fast(keys, "keys must be a sequence or None");
        if (!ks) {
            Py_DECREF(vs);
            return NULL;
        }
        if (PySequence_Fast_GET_SIZE(ks) != PySequence_Fast_GET_SIZE(vs)) {
            PyErr_Format(PyExc_ValueError, "%zd keys for %zd values",
                         PySequence_Fast_GET_SIZE(ks), PySequence_Fast_GET_SIZE(vs));
            Py_DECREF(ks);
            Py_DECREF(vs);
            return NULL;
        }
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(vs), taken = 0;
    for (; taken < n; taken++) {
        PyObject *key = ks ? PySequence_Fast_GET_ITEM(ks, taken) : Py_None;
        int rc = append(b, PySequence_Fast_GET_ITEM(vs, taken), key, timestamp, Py_None, 0);
        if (rc == -2) {
            taken = -1;
            break;
        }
        if (rc < 0) break;
    }
    Py_XDECREF(ks);
    Py_DECREF(vs);
    return taken < 0 ? NULL : PyLong_FromSsize_t(taken);
}

/* The per-record path: append_value(value, key=None, headers=None, timestamp=None),
 * a record into the middle of a batch. The record's future (future_type(token,
 * index)), or its index without a future_type; None when the caller must take the
 * slow way (the batch starts or fills with it, it is sealed, value or key is not
 * bytes, its timestamp is too far from the batch's). */
static PyObject *builder_append_value(Builder *b, PyObject *const *args, Py_ssize_t n) {
    if (n < 1 || n > 4) {
        PyErr_Format(PyExc_TypeError, "append_value takes 1 to 4 arguments, not %zd", n);
        return NULL;
    }
    PyObject *value = args[0], *key = n > 1 ? args[1] : Py_None;
    PyObject *headers = n > 2 ? args[2] : Py_None, *timestamp = n > 3 ? args[3] : Py_None;
    if ((value != Py_None && !PyBytes_CheckExact(value)) ||
        (key != Py_None && !PyBytes_CheckExact(key)))
        Py_RETURN_NONE;
    int rc = append(b, value, key, timestamp, headers, 1);
    if (rc == -2) return NULL;
    if (rc < 0) Py_RETURN_NONE;
    PyObject *index = PyLong_FromLong(rc);
    if (!index || b->future_type == Py_None) return index;
    PyObject *call[2] = {b->token, index};
    PyObject *future = PyObject_Vectorcall(b->future_type, call, 2, NULL);
    Py_DECREF(index);
    return future;
}

static PyObject *builder_drop_last(Builder *b, PyObject *unused) {
    if (b->count == 0 || b->sealed) {
        PyErr_SetString(PyExc_ValueError, "batch builder: no record to drop");
        return NULL;
    }
    b->count--;
    b->len = b->undo_len;
    b->base_ts = b->undo_base_ts;
    b->max_ts = b->undo_max_ts;
    if (b->count == 0) reset(b);
    Py_RETURN_NONE;
}

/* Seal: header and CRC written; a memoryview of the whole batch, valid until clear
 * or unseal. Appends refuse meanwhile. */
static PyObject *builder_seal(Builder *b, PyObject *unused) {
    if (b->count == 0 || b->sealed) {
        PyErr_SetString(PyExc_ValueError, "batch builder: nothing to seal");
        return NULL;
    }
    int64_t base = b->base_ts, max_ts = b->max_ts;
    if (base == UNRESOLVED) base = max_ts = shmb_now_ms();
    shmb_batch_seal(b->buf, b->len, 0, b->count, base, max_ts);
    b->sealed = 1;
    return PyMemoryView_FromObject((PyObject *)b);
}

/* The sealed batch was appended: start the next one, its futures pointing at token. */
static PyObject *builder_clear(Builder *b, PyObject *token) {
    reset(b);
    Py_INCREF(token);
    Py_XSETREF(b->token, token);
    Py_RETURN_NONE;
}

/* The sealed batch was not appended: its records stay, appends may go on. */
static PyObject *builder_unseal(Builder *b, PyObject *unused) {
    b->sealed = 0;
    Py_RETURN_NONE;
}

static int builder_getbuffer(Builder *b, Py_buffer *view, int flags) {
    if (PyBuffer_FillInfo(view, (PyObject *)b, b->buf, b->len, 1, flags) < 0) return -1;
    b->exports++;
    return 0;
}

static void builder_releasebuffer(Builder *b, Py_buffer *view) { b->exports--; }

static Py_ssize_t builder_length(Builder *b) { return b->count; }

static PyObject *builder_records_bytes(Builder *b, void *closure) {
    return PyLong_FromSsize_t(b->len - SHMB_BATCH_HEADER_BYTES);
}

static PyObject *builder_is_sealed(Builder *b, void *closure) {
    return PyBool_FromLong(b->sealed);
}

static PyMethodDef builder_methods[] = {
    {"append", (PyCFunction)(void (*)(void))builder_append, METH_VARARGS | METH_KEYWORDS,
     "append(value, key=None, timestamp=None, headers=None) -> index, or -1 if it does "
     "not fit this batch"},
    {"append_value", (PyCFunction)(void (*)(void))builder_append_value, METH_FASTCALL,
     "append_value(value, key=None, headers=None, timestamp=None) -> future (or index), "
     "or None: take the slow way"},
    {"extend", (PyCFunction)builder_extend, METH_VARARGS,
     "extend(values, keys=None, timestamp=None) -> how many records went in"},
    {"drop_last", (PyCFunction)builder_drop_last, METH_NOARGS, "undo the last append"},
    {"seal", (PyCFunction)builder_seal, METH_NOARGS,
     "seal() -> memoryview of the whole batch; appends refuse until clear or unseal"},
    {"clear", (PyCFunction)builder_clear, METH_O, "clear(token): start the next batch"},
    {"unseal", (PyCFunction)builder_unseal, METH_NOARGS, "the sealed batch stays open"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef builder_getset[] = {
    {"records_bytes", (getter)builder_records_bytes, NULL, "bytes of the records", NULL},
    {"sealed", (getter)builder_is_sealed, NULL, "between seal and clear/unseal", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef builder_members[] = {
    {"token", T_OBJECT, offsetof(Builder, token), READONLY, "what futures point at"},
    {"batch_records", T_INT, offsetof(Builder, batch_records), READONLY, NULL},
    {"batch_bytes", T_PYSSIZET, offsetof(Builder, batch_bytes), READONLY, NULL},
    {"limit_bytes", T_PYSSIZET, offsetof(Builder, limit_bytes), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods builder_sequence = {.sq_length = (lenfunc)builder_length};
static PyBufferProcs builder_buffer = {
    .bf_getbuffer = (getbufferproc)builder_getbuffer,
    .bf_releasebuffer = (releasebufferproc)builder_releasebuffer,
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmbroker._shmb_py.BatchBuilder",
    .tp_doc = "A producer's open RecordBatch v2 (csrc/shmb_py.c)",
    .tp_basicsize = sizeof(Builder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)builder_init,
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_methods = builder_methods,
    .tp_getset = builder_getset,
    .tp_members = builder_members,
    .tp_as_sequence = &builder_sequence,
    .tp_as_buffer = &builder_buffer,
};

/* A decoder's span within a buffer of len bytes: pos = end = -1 is a null. Positions
 * come from the decoder over this buffer: checked anyway, a bad row must not read
 * outside it. */
static inline int span_ok(int64_t pos, int64_t end, Py_ssize_t len) {
    return end < 0 ? pos == end : 0 <= pos && pos <= end && end <= len;
}

static inline PyObject *bytes_or_none(const uint8_t *b, int64_t pos, int64_t end) {
    return end < 0 ? Py_NewRef(Py_None)
                   : PyBytes_FromStringAndSize((const char *)b + pos, end - pos);
}

/* Header keys are few and repeat record after record (a trace id, a content type):
 * one build_records call decodes each distinct key once. */
#define KEY_CACHE 16
typedef struct {
    int n;
    const uint8_t *at[KEY_CACHE];
    int64_t len[KEY_CACHE];
    PyObject *str[KEY_CACHE];
} key_cache;

static PyObject *header_key(key_cache *c, const uint8_t *p, int64_t n) {
    for (int i = 0; i < c->n; i++)
        if (c->len[i] == n && memcmp(c->at[i], p, (size_t)n) == 0)
            return Py_NewRef(c->str[i]);
    PyObject *key = PyUnicode_DecodeUTF8((const char *)p, n, "replace");
    if (key && c->n < KEY_CACHE) {
        c->at[c->n] = p;
        c->len[c->n] = n;
        c->str[c->n++] = Py_NewRef(key);
    }
    return key;
}

static void key_cache_clear(key_cache *c) {
    for (int i = 0; i < c->n; i++) Py_DECREF(c->str[i]);
    c->n = 0;
}

/* A record's headers: a tuple of (key as str, undecodable bytes replaced, value bytes
 * or None), from its header rows. */
static PyObject *build_headers(key_cache *keys, const uint8_t *b, Py_ssize_t len,
                               const int64_t *rows, int64_t count) {
    PyObject *out = PyTuple_New(count);
    if (!out) return NULL;
    for (int64_t j = 0; j < count; j++) {
        int64_t h[SHMB_DECODED_HEADER_FIELDS];
        memcpy(h, rows + j * SHMB_DECODED_HEADER_FIELDS, sizeof h);
        if (h[1] < 0 || !span_ok(h[0], h[1], len) || !span_ok(h[2], h[3], len)) {
            PyErr_Format(PyExc_ValueError, "build_records: header row %lld is not a "
                         "header in %zd bytes", (long long)j, len);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *key = header_key(keys, b + h[0], h[1] - h[0]);
        PyObject *value = bytes_or_none(b, h[2], h[3]);
        PyObject *pair = key && value ? PyTuple_Pack(2, key, value) : NULL;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (!pair) {
            Py_DECREF(out);
            return NULL;
        }
        PyObject_GC_UnTrack(pair); /* (str, bytes): no cycle; see below */
        PyTuple_SET_ITEM(out, j, pair);
    }
    /* Only str, bytes and None inside: as CPython untracks such tuples itself, but
     * only once a collection has looked at them. Tracked, a poll's thousands of them
     * made the cyclic GC most of the consumer's time. */
    PyObject_GC_UnTrack(out);
    return out;
}

/* build_records(buf, rows, count, topic, partition, record_type[, header_rows,
 * headers]) -> list: rows is a buffer of int64 record rows (SHMB_DECODED_RECORD_FIELDS
 * each: offset, timestamp, key_pos, key_end, value_pos, value_end, header_count,
 * first_header) indexing buf, header_rows one of `headers` header rows; each record
 * is record_type(topic, partition, offset, timestamp, key, value[, headers]). */
static PyObject *build_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "build_records(buf, rows, count, topic, "
                        "partition, record_type[, header_rows, headers])");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    if (count == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t headers = 0;
    if (nargs == 8) {
        headers = PyLong_AsSsize_t(args[7]);
        if (headers == -1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer buf, rows, hrows = {0};
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &rows, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *out = NULL;
    key_cache keys = {0};
    if (nargs == 8 && PyObject_GetBuffer(args[6], &hrows, PyBUF_SIMPLE) < 0) goto done;
    if (count < 0 || rows.len < count * SHMB_DECODED_RECORD_FIELDS * (Py_ssize_t)8 ||
        headers < 0 || hrows.len < headers * SHMB_DECODED_HEADER_FIELDS * (Py_ssize_t)8) {
        PyErr_Format(PyExc_ValueError, "build_records: %zd rows of %zd bytes, %zd header "
                     "rows of %zd", count, rows.len, headers, hrows.len);
        goto done;
    }
    out = PyList_New(count);
    if (!out) goto done;
    const uint8_t *b = buf.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t row[SHMB_DECODED_RECORD_FIELDS];
        memcpy(row, (const uint8_t *)rows.buf + i * (Py_ssize_t)sizeof row, sizeof row);
        if (!span_ok(row[2], row[3], buf.len) || !span_ok(row[4], row[5], buf.len) ||
            row[6] < 0 || (row[6] > 0 && (row[7] < 0 || row[7] > headers - row[6]))) {
            PyErr_Format(PyExc_ValueError, "build_records: row %zd is not a record in %zd "
                         "bytes with %zd headers", i, buf.len, headers);
            Py_CLEAR(out);
            goto done;
        }
        PyObject *key = bytes_or_none(b, row[2], row[3]);
        PyObject *value = bytes_or_none(b, row[4], row[5]);
        PyObject *offset = PyLong_FromLongLong(row[0]);
        PyObject *timestamp = PyLong_FromLongLong(row[1]);
        PyObject *hs = row[6] == 0 ? NULL
                                   : build_headers(&keys, b, buf.len,
                                                   (const int64_t *)hrows.buf +
                                                       row[7] * SHMB_DECODED_HEADER_FIELDS,
                                                   row[6]);
        PyObject *record = NULL;
        if (key && value && offset && timestamp && (row[6] == 0 || hs)) {
            PyObject *call[7] = {args[3], args[4], offset, timestamp, key, value, hs};
            record = PyObject_Vectorcall(args[5], call, hs ? 7 : 6, NULL);
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(offset);
        Py_XDECREF(timestamp);
        Py_XDECREF(hs);
        if (!record) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, record);
    }
done:
    key_cache_clear(&keys);
    if (hrows.obj) PyBuffer_Release(&hrows);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&buf);
    return out;
}

/* partition_for_key(key, partitions): Kafka's default partitioner (murmur2), here
 * because a keyed send calls it once per record: a cffi call costs ~130 ns. */
static PyObject *partition_for_key(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    if (n != 2) {
        PyErr_Format(PyExc_TypeError, "partition_for_key takes 2 arguments, not %zd", n);
        return NULL;
    }
    long partitions = PyLong_AsLong(args[1]);
    if (partitions == -1 && PyErr_Occurred()) return NULL;
    if (partitions < 1 || partitions > INT32_MAX) {
        /* the package's InvalidArgument (a ValueError), as every _native call */
        PyObject *errors = PyImport_ImportModule("shmbroker.errors");
        if (!errors) return NULL;
        PyObject *cls = PyObject_GetAttrString(errors, "InvalidArgument");
        Py_DECREF(errors);
        if (!cls) return NULL;
        PyErr_Format(cls, "partition_for_key: %ld partitions, want 1 to %d", partitions,
                     INT32_MAX);
        Py_DECREF(cls);
        return NULL;
    }
    bytes_arg ka;
    const uint8_t *kp;
    int64_t kl;
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "partition_for_key: a key is bytes, not None");
        return NULL;
    }
    if (get_bytes(args[0], &ka, &kp, &kl, "key") < 0) return NULL;
    int32_t p = shmb_partition_for_key(kp, (size_t)kl, (int32_t)partitions);
    release(&ka);
    return PyLong_FromLong(p);
}

static PyMethodDef module_methods[] = {
    {"build_records", (PyCFunction)(void (*)(void))build_records, METH_FASTCALL,
     "build_records(buf, rows, count, topic, partition, record_type[, header_rows, "
     "headers]) -> list"},
    {"partition_for_key", (PyCFunction)(void (*)(void))partition_for_key, METH_FASTCALL,
     "partition_for_key(key, partitions) -> Kafka's default partition of a key"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shmbroker._shmb_py",
    "The C core's CPython-API half (csrc/shmb_py.c)", -1, module_methods, NULL, NULL, NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__shmb_py(void) {
    if (PyType_Ready(&BuilderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "BatchBuilder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
