/*
 * mpfault._runtime._fastrec: the recorder's hot path in C (optional).
 *
 * The event history's records are written by the process doing the queue
 * operation (see events.py for the format).  In pure Python, recording a put or
 * a get costs ~1.7 us per operation, a fifth of what a multiprocessing queue
 * costs: the producer of a busy queue loses a quarter of its throughput.  This
 * module does the same work in ~0.2 us:
 *
 *   Log   an append-only memory-mapped log: the file events.Recorder opened,
 *         mapped MAP_SHARED (records survive the process being killed), grown
 *         in place with mremap(2), plus the recorder's sequence numbers.
 *   Op    a queue operation with its BEGIN and END records: the callable that
 *         FaultQueue puts in place of ``put``/``get``/... when no fault is
 *         planned for it.  Byte for byte the records of Recorder.begin/end.
 *   Method  instrumentation's patched class methods (instrument.py): the shadow
 *         lookup, session check, current queue and calls in flight, in C.
 *
 * It formats the common items itself (ints, None, bools, floats, plain-ASCII str
 * and bytes, and from their repr tuples, lists and dicts of those, functions,
 * classes and objects with object's repr) and asks events.item_payload for the
 * others.  Everything runs under the GIL
 * (the module is not used on free-threaded builds): a record is reserved,
 * filled and published with no Python code running in between; its length is
 * written last, so a reader never sees a half-written record.
 *
 * Standard library only: the child-side runtime depends on nothing else.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* fallocate, mremap (as pyconfig.h defines it) */
#endif
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if !defined(__linux__)
#error "mpfault._fastrec needs Linux (mremap); the pure-Python recorder is used elsewhere"
#endif
#if PY_BIG_ENDIAN
#error "mpfault._fastrec writes little-endian records on a little-endian machine only"
#endif

/* The record layout is defined in layout.py; these are its numbers, which the C
 * module exports as LAYOUT and tests/test_recorder.py checks against layout.py. */
#define OFF_LENGTH 0
#define OFF_KIND 4
#define OFF_OP 5
#define OFF_OUTCOME 6
#define OFF_FLAGS 7
#define OFF_FAULT 8
#define OFF_QLEN 10
#define OFF_ALEN 12
#define OFF_BLEN 14
#define OFF_PAD 16
#define OFF_TIME_NS 18
#define OFF_SEQ 26
#define REC_SIZE 30
#define KIND_BEGIN 1
#define KIND_END 2
#define OUT_PENDING 0
#define OUT_OK 1
#define KEY_INT 1
#define KEY_TAIL 2
/* events._MAX: the head of a long str/bytes shown in its short repr */
#define HEAD 40
#define TAIL 32
/* the longest payload formatted here: a short repr (60), a type's name (100), a key (~200) */
#define FAST_CAP 512

static PyTypeObject OpType;

/* Incremented in the child of every fork(): an Op or a Trampoline made before the
 * last fork belongs to the parent (its log, its recorder). */
static long long fork_generation = 0;

/* instrumentation's calls in flight (see Method): none in a forked child */
static long inflight = 0;

static void
on_fork_child(void)
{
    fork_generation++;
    inflight = 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
/* Pages are faulted in ahead of the writes, this many bytes at a time: one
 * madvise() instead of a page fault every 4 KiB (4x cheaper on ext4 here). */
#define AHEAD (64 * 1024)
static size_t page_size = 4096;

/* -- Log ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int fd;
    char *base; /* NULL once closed */
    size_t size;
    size_t pos;
    size_t ahead; /* pages below this offset are faulted in (0: no MADV_POPULATE_WRITE) */
    unsigned long long seq; /* the last sequence number given out */
    PyObject *path; /* the file's path, for OSError messages (or None) */
} LogObject;

/* Fault in the pages from log->ahead on, before the writes reach them. */
static void
log_populate(LogObject *log)
{
    size_t end = log->ahead + (AHEAD > page_size ? AHEAD : page_size);
    if (end > log->size) {
        end = log->size;
    }
    if (end <= log->ahead) {
        return;
    }
    if (madvise(log->base + log->ahead, end - log->ahead, MADV_POPULATE_WRITE) != 0) {
        log->ahead = 0; /* not supported (or no memory): page faults as they come */
        return;
    }
    log->ahead = end;
}

static int
log_closed(LogObject *log)
{
    if (log->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the event log is closed");
        return 1;
    }
    return 0;
}

/* OSError from errno, naming the log's file (a full disk says which). */
static void
log_error(LogObject *log)
{
    if (log->path != NULL && log->path != Py_None) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, log->path);
    }
    else {
        PyErr_SetFromErrno(PyExc_OSError);
    }
}

/* Make room for n more bytes (and a zero length after them). */
static int
log_reserve(LogObject *log, size_t n)
{
    if (log_closed(log)) {
        return -1;
    }
    if (log->pos + n + 4 <= log->size) {
        if (log->ahead && log->pos + n > log->ahead) {
            log_populate(log);
        }
        return 0;
    }
    size_t nsize = log->size;
    while (nsize - log->pos < n + 4) {
        nsize *= 2;
    }
    /* Space allocated now: a full disk is an OSError here, not a SIGBUS at a write
     * into the mapping later.  ftruncate where the file system has no fallocate. */
    int r;
    do {
        r = fallocate(log->fd, 0, (off_t)log->size, (off_t)(nsize - log->size));
    } while (r != 0 && errno == EINTR);
    if (r != 0) {
        if (errno != EOPNOTSUPP && errno != EINVAL) {
            log_error(log);
            return -1;
        }
        do {
            r = ftruncate(log->fd, (off_t)nsize);
        } while (r != 0 && errno == EINTR);
        if (r != 0) {
            log_error(log);
            return -1;
        }
    }
    void *p = mremap(log->base, log->size, nsize, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) {
        log_error(log);
        return -1;
    }
    log->base = (char *)p;
    log->size = nsize;
    if (log->ahead) {
        log_populate(log);
    }
    return 0;
}

/* Store a record's length, after everything else of it: a release fence, then a
 * plain copy (records are not aligned: an atomic store could fault on some CPUs). */
static inline void
publish(char *p, uint32_t length)
{
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(p, &length, 4);
}

static inline void
put_u16(char *p, unsigned v)
{
    uint16_t x = (uint16_t)v;
    memcpy(p, &x, 2);
}

/* Append one record: the fixed part, the queue's name, then payload (la + lb
 * bytes: the fields a and b).  The length goes in last. */
static int
log_record(LogObject *log, int kind, int op, int outcome, int flags, PyObject *qb,
           const char *payload, Py_ssize_t la, Py_ssize_t lb, unsigned long long seq)
{
    Py_ssize_t lq = PyBytes_GET_SIZE(qb);
    size_t length = REC_SIZE + (size_t)lq + (size_t)la + (size_t)lb;
    struct timespec ts;
    if (log_reserve(log, length) < 0) {
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    uint32_t seq32 = (uint32_t)seq;
    int16_t fault = -1;
    char *p = log->base + log->pos;
    log->pos += length;
    p[OFF_KIND] = (char)kind;
    p[OFF_OP] = (char)op;
    p[OFF_OUTCOME] = (char)outcome;
    p[OFF_FLAGS] = (char)flags;
    memcpy(p + OFF_FAULT, &fault, 2);
    put_u16(p + OFF_QLEN, (unsigned)lq);
    put_u16(p + OFF_ALEN, (unsigned)la);
    put_u16(p + OFF_BLEN, (unsigned)lb);
    put_u16(p + OFF_PAD, 0);
    memcpy(p + OFF_TIME_NS, &t, 8);
    memcpy(p + OFF_SEQ, &seq32, 4);
    memcpy(p + REC_SIZE, PyBytes_AS_STRING(qb), (size_t)lq);
    if (la + lb) {
        memcpy(p + REC_SIZE + lq, payload, (size_t)(la + lb));
    }
    uint32_t len32 = (uint32_t)length;
    publish(p, len32);
    return 0;
}

static PyObject *
Log_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "size", "pos", "path", NULL};
    int fd;
    Py_ssize_t size, pos;
    PyObject *path = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "inn|O:Log", kwlist, &fd, &size, &pos, &path)) {
        return NULL;
    }
    if (size < 4096 || pos < 0 || pos + 4 > size) {
        PyErr_SetString(PyExc_ValueError, "Log: need 4096 <= size and 0 <= pos < size - 4");
        return NULL;
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    LogObject *self = (LogObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        munmap(p, (size_t)size);
        return NULL;
    }
    self->fd = fd;
    self->base = (char *)p;
    self->size = (size_t)size;
    self->pos = (size_t)pos;
    self->ahead = (size_t)pos / page_size * page_size;
    self->seq = 0;
    Py_INCREF(path);
    self->path = path;
    if (self->ahead == 0) { /* 0 means "off": start past the header's page */
        self->ahead = page_size;
    }
    log_populate(self);
    return (PyObject *)self;
}

static void
Log_dealloc(LogObject *self)
{
    if (self->base != NULL) {
        munmap(self->base, self->size);
        self->base = NULL;
    }
    Py_CLEAR(self->path);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Log_write(LogObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len < OFF_KIND || log_reserve(self, (size_t)view.len) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "a record has at least 4 bytes");
        }
        PyBuffer_Release(&view);
        return NULL;
    }
    char *p = self->base + self->pos;
    const char *d = (const char *)view.buf;
    self->pos += (size_t)view.len;
    memcpy(p + OFF_KIND, d + OFF_KIND, (size_t)view.len - OFF_KIND);
    uint32_t len32;
    memcpy(&len32, d, 4);
    publish(p, len32);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
Log_next_seq(LogObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(++self->seq);
}

static PyObject *
Log_close(LogObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base != NULL) {
        munmap(self->base, self->size);
        self->base = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Log_get_seq(LogObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->seq);
}

static PyObject *Log_wrap(LogObject *self, PyObject *args, PyObject *kwds);

static PyMethodDef Log_methods[] = {
    {"write", (PyCFunction)Log_write, METH_O,
     "write(record)\n--\n\nAppend one record (bytes-like, built in full)."},
    {"next_seq", (PyCFunction)Log_next_seq, METH_NOARGS,
     "next_seq()\n--\n\nThe next operation's sequence number (1, 2, ...)."},
    {"close", (PyCFunction)Log_close, METH_NOARGS,
     "close()\n--\n\nUnmap the log (the file stays; writing then raises ValueError)."},
    {"wrap", (PyCFunction)(void (*)(void))Log_wrap, METH_VARARGS | METH_KEYWORDS,
     "wrap(queue, op, call, has_item, current, end_raised, fields, slow)\n--\n\n"
     "A recording Op around call (see Recorder.wrap)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Log_getset[] = {
    {"seq", (getter)Log_get_seq, NULL, "The last sequence number given out (0: none).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LogType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpfault._runtime._fastrec.Log",
    .tp_basicsize = sizeof(LogObject),
    .tp_dealloc = (destructor)Log_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Log(fd, size, pos)\n--\n\nAn append-only event log mapped from file descriptor fd "
              "(size bytes, records from pos on).",
    .tp_methods = Log_methods,
    .tp_getset = Log_getset,
    .tp_new = Log_new,
};

/* -- items ------------------------------------------------------------------------ */

/* Whether repr() shows these bytes as they are: printable ASCII but ' and \ .
 * 16 bytes at a time where SSE2 is there (every x86-64): the check runs on the
 * head and the tail of every str/bytes item put or got. */
static int
plain(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    const __m128i lo = _mm_set1_epi8(0x1f), hi = _mm_set1_epi8(0x7f);
    const __m128i quote = _mm_set1_epi8('\''), backslash = _mm_set1_epi8('\\');
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        /* signed compares: 0x80..0xff are negative, so not > 0x1f */
        __m128i ok = _mm_and_si128(_mm_cmpgt_epi8(v, lo), _mm_cmplt_epi8(v, hi));
        __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        if (_mm_movemask_epi8(_mm_andnot_si128(bad, ok)) != 0xFFFF) {
            return 0;
        }
    }
#endif
    for (; i < n; i++) {
        unsigned char c = s[i];
        if (c < 0x20 || c >= 0x7F || c == '\'' || c == '\\') {
            return 0;
        }
    }
    return 1;
}

/* Append helpers: each returns the position after what it wrote. */
static inline char *
put_mem(char *p, const char *s, Py_ssize_t n)
{
    memcpy(p, s, (size_t)n);
    return p + n;
}

static const char DIGITS2[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                               "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                               "8081828384858687888990919293949596979899";

/* The decimal digits of v (as "%lld"). */
static char *
put_int(char *p, long long v)
{
    char tmp[24];
    char *t = tmp + sizeof(tmp);
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        *--t = DIGITS2[d + 1];
        *--t = DIGITS2[d];
    }
    if (u >= 10) {
        *--t = DIGITS2[u * 2 + 1];
        *--t = DIGITS2[u * 2];
    }
    else {
        *--t = (char)('0' + (int)u);
    }
    if (v < 0) {
        *--t = '-';
    }
    return put_mem(p, t, tmp + sizeof(tmp) - t);
}

/* prefix'text' (prefix "b" for bytes, "" for str) */
static inline char *
put_quoted(char *p, int is_bytes, const char *s, Py_ssize_t n)
{
    if (is_bytes) {
        *p++ = 'b';
    }
    *p++ = '\'';
    p = put_mem(p, s, n);
    *p++ = '\'';
    return p;
}

/* events.item_payload for str/bytes whose repr shows their text.
 * Returns 1 with the payload in buf, 0 if not plain. */
static int
text_payload(const char *s, Py_ssize_t n, int is_bytes, char *buf, Py_ssize_t *la,
             Py_ssize_t *lb, int *flags)
{
    const char *tname = is_bytes ? "bytes:" : "str:";
    Py_ssize_t ltname = is_bytes ? 6 : 4;
    char *p = buf;
    if (n <= HEAD) {
        if (!plain((const unsigned char *)s, n)) {
            return 0;
        }
        p = put_quoted(p, is_bytes, s, n);
        *la = p - buf;
        p = put_mem(p, tname, ltname);
        p = put_mem(p, buf, *la);
        *lb = p - buf - *la;
        return 1;
    }
    const char *tail = s + n - TAIL;
    if (!plain((const unsigned char *)s, HEAD) || !plain((const unsigned char *)tail, TAIL)) {
        return 0;
    }
    p = put_quoted(p, is_bytes, s, HEAD);
    p = put_mem(p, "\xe2\x80\xa6(", 4);
    p = put_int(p, (long long)n);
    *p++ = ')';
    *la = p - buf;
    if (n <= HEAD + TAIL - 8) { /* n <= 64: the key is the whole text */
        p = put_mem(p, tname, ltname);
        p = put_quoted(p, is_bytes, s, n);
    }
    else { /* the key is rebuilt from the short repr and the tail */
        p = put_mem(p, tail, TAIL);
        *flags = KEY_TAIL;
    }
    *lb = p - buf - *la;
    return 1;
}

/* -- items by their repr ------------------------------------------------------------ */

/* events._item_fields of any other item is built from repr(item): the short repr
 * (its first 60 characters), and the key (the type's name, and the repr without its
 * memory addresses, head and tail if long).  The repr of the common composite items
 * is written here, into a buffer, as CPython writes it: tuples, lists and dicts of
 * formattable things, ints, bools, None, floats, str and bytes, functions (by their
 * qualified name and address), classes, and objects whose type keeps object's repr
 * (``<mod.Class object at 0x...>``: the executor's call items).  Anything else in the
 * item, or a repr that is not plain ASCII or does not fit, and the whole item goes to
 * events.item_payload (tests/test_recorder.py compares the two). */

#define REPR_CAP 2048
#define REPR_DEPTH 12
#define SHORT_MAX 60
#define KEY_MAX 200
#define KEY_HALF 96
#define TNAME_MAX 100

typedef struct {
    char *p;
    char *end;
} Out;

static inline int
out_mem(Out *o, const char *s, Py_ssize_t n)
{
    if (o->end - o->p < n) {
        return 0;
    }
    memcpy(o->p, s, (size_t)n);
    o->p += n;
    return 1;
}

#define OUT_LIT(o, s) out_mem((o), (s), (Py_ssize_t)(sizeof(s) - 1))

/* A str object's text, if it is ASCII (else NULL). */
static const char *
ascii_text(PyObject *s, Py_ssize_t *n)
{
    if (!PyUnicode_Check(s)) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) {
        PyErr_Clear();
        return NULL;
    }
#endif
    if (!PyUnicode_IS_ASCII(s)) {
        return NULL;
    }
    *n = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_1BYTE_DATA(s);
}

static int
out_str(Out *o, PyObject *s)
{
    Py_ssize_t n;
    const char *t = ascii_text(s, &n);
    return t != NULL && out_mem(o, t, n);
}

/* The result of a C repr that runs no Python code (float, str, bytes, int, type). */
static int
out_c_repr(Out *o, reprfunc f, PyObject *obj)
{
    PyObject *r = f(obj);
    if (r == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ok = out_str(o, r);
    Py_DECREF(r);
    return ok;
}

/* " at %p" as PyUnicode_FromFormat writes it: glibc's "%p", "0x" and lowercase hex
 * digits (never NULL here). */
static int
out_address(Out *o, const void *ptr)
{
    char num[2 + 2 * sizeof(void *)];
    char *t = num + sizeof(num);
    uintptr_t u = (uintptr_t)ptr;
    do {
        *--t = "0123456789abcdef"[u & 0xf];
        u >>= 4;
    } while (u);
    *--t = 'x';
    *--t = '0';
    return OUT_LIT(o, " at ") && out_mem(o, t, num + sizeof(num) - t);
}

static PyObject *str_module, *str_qualname, *str_builtins;

/* Whether the str s is "builtins". */
static int
is_builtins(PyObject *s)
{
    return s == str_builtins || (PyUnicode_GET_LENGTH(s) == 8 &&
                                 PyUnicode_CompareWithASCIIString(s, "builtins") == 0);
}

static int out_repr(Out *o, PyObject *obj, int depth);

static int
out_items(Out *o, PyObject *const *items, Py_ssize_t n, int depth)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i && !OUT_LIT(o, ", ")) {
            return 0;
        }
        if (!out_repr(o, items[i], depth)) {
            return 0;
        }
    }
    return 1;
}

/* repr(obj) into o, as CPython writes it; 0: not one of the types written here, or
 * it does not fit. */
static int
out_repr(Out *o, PyObject *obj, int depth)
{
    PyTypeObject *t = Py_TYPE(obj);
    if (depth > REPR_DEPTH) {
        return 0;
    }
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (overflow) {
            return out_c_repr(o, PyLong_Type.tp_repr, obj); /* the digit limit: fails */
        }
        char tmp[24];
        return out_mem(o, tmp, put_int(tmp, v) - tmp);
    }
    if (obj == Py_None) {
        return OUT_LIT(o, "None");
    }
    if (obj == Py_True) {
        return OUT_LIT(o, "True");
    }
    if (obj == Py_False) {
        return OUT_LIT(o, "False");
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = ascii_text(obj, &n);
        if (s == NULL) {
            return 0;
        }
        if (plain((const unsigned char *)s, n)) {
            return OUT_LIT(o, "'") && out_mem(o, s, n) && OUT_LIT(o, "'");
        }
        return out_c_repr(o, PyUnicode_Type.tp_repr, obj);
    }
    if (t == &PyBytes_Type) {
        const char *s = PyBytes_AS_STRING(obj);
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        if (plain((const unsigned char *)s, n)) {
            return OUT_LIT(o, "b'") && out_mem(o, s, n) && OUT_LIT(o, "'");
        }
        return out_c_repr(o, PyBytes_Type.tp_repr, obj);
    }
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        return OUT_LIT(o, "(") && out_items(o, &PyTuple_GET_ITEM(obj, 0), n, depth + 1) &&
               (n != 1 || OUT_LIT(o, ",")) && OUT_LIT(o, ")");
    }
    if (t == &PyList_Type) {
        /* nothing written here runs Python code: the list stays as it is */
        return OUT_LIT(o, "[") &&
               out_items(o, ((PyListObject *)obj)->ob_item, PyList_GET_SIZE(obj), depth + 1) &&
               OUT_LIT(o, "]");
    }
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        int first = 1;
        if (!OUT_LIT(o, "{")) {
            return 0;
        }
        while (PyDict_Next(obj, &pos, &k, &v)) {
            if (!first && !OUT_LIT(o, ", ")) {
                return 0;
            }
            first = 0;
            if (!out_repr(o, k, depth + 1) || !OUT_LIT(o, ": ") || !out_repr(o, v, depth + 1)) {
                return 0;
            }
        }
        return OUT_LIT(o, "}");
    }
    if (t == &PyFloat_Type) {
        return out_c_repr(o, PyFloat_Type.tp_repr, obj);
    }
    if (t == &PyFunction_Type) { /* "<function %U at %p>" */
        return OUT_LIT(o, "<function ") &&
               out_str(o, ((PyFunctionObject *)obj)->func_qualname) && out_address(o, obj) &&
               OUT_LIT(o, ">");
    }
    if (t == &PyType_Type) { /* a class (of metaclass type): its repr has no address */
        return out_c_repr(o, PyType_Type.tp_repr, obj);
    }
    if (t->tp_repr == PyBaseObject_Type.tp_repr && Py_TYPE(t) == &PyType_Type) {
        /* object_repr: "<%U.%U object at %p>" (module, qualified name), or
         * "<%s object at %p>" (tp_name) for a builtin */
        int ok = 0;
        PyObject *mod;
        if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) { /* type_module: the dict's __module__ */
            mod = PyDict_GetItemWithError(t->tp_dict, str_module);
            Py_XINCREF(mod);
        }
        else {
            mod = PyObject_GetAttr((PyObject *)t, str_module);
        }
        if (mod == NULL) {
            PyErr_Clear();
        }
        else if (!PyUnicode_Check(mod)) {
            Py_CLEAR(mod);
        }
        if (mod != NULL && !is_builtins(mod)) {
            PyObject *qn = (t->tp_flags & Py_TPFLAGS_HEAPTYPE)
                               ? (Py_XNewRef(((PyHeapTypeObject *)t)->ht_qualname))
                               : PyObject_GetAttr((PyObject *)t, str_qualname);
            if (qn == NULL) {
                PyErr_Clear();
            }
            else {
                ok = OUT_LIT(o, "<") && out_str(o, mod) && OUT_LIT(o, ".") && out_str(o, qn);
                Py_DECREF(qn);
            }
        }
        else {
            const char *tn = t->tp_name;
            ok = OUT_LIT(o, "<") && plain((const unsigned char *)tn, (Py_ssize_t)strlen(tn)) &&
                 out_mem(o, tn, (Py_ssize_t)strlen(tn));
        }
        Py_XDECREF(mod);
        return ok && OUT_LIT(o, " object") && out_address(o, obj) && OUT_LIT(o, ">");
    }
    return 0;
}

static inline int
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* events._no_addresses: s without every " at 0x<hex digits>" (re.sub, left to right). */
static Py_ssize_t
strip_addresses(const char *s, Py_ssize_t n, char *dst)
{
    Py_ssize_t i = 0, j = 0;
    while (i < n) {
        if (s[i] == ' ' && i + 7 <= n && memcmp(s + i, " at 0x", 6) == 0 && is_hex(s[i + 6])) {
            i += 7;
            while (i < n && is_hex(s[i])) {
                i++;
            }
            continue;
        }
        dst[j++] = s[i++];
    }
    return j;
}

/* type(obj).__name__ (type_name: a heap type's name, else tp_name after its last dot) */
static const char *
type_short_name(PyTypeObject *t, Py_ssize_t *n)
{
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        return ascii_text(((PyHeapTypeObject *)t)->ht_name, n);
    }
    const char *s = strrchr(t->tp_name, '.');
    s = s ? s + 1 : t->tp_name;
    *n = (Py_ssize_t)strlen(s);
    return s;
}

/* The payload of an item of any other type, from its repr (see above).
 * Returns 1 (done, in buf: at least FAST_CAP bytes), 0 (ask Python). */
static int
repr_payload(PyObject *obj, char *buf, Py_ssize_t *la, Py_ssize_t *lb)
{
    char text[REPR_CAP];
    char bare[REPR_CAP];
    Py_ssize_t ltn;
    const char *tname = type_short_name(Py_TYPE(obj), &ltn);
    if (tname == NULL || ltn > TNAME_MAX || !plain((const unsigned char *)tname, ltn)) {
        return 0;
    }
    Out o = {text, text + REPR_CAP};
    if (!out_repr(&o, obj, 0)) {
        return 0;
    }
    Py_ssize_t n = o.p - text;
    char *p = buf;
    if (n <= SHORT_MAX) {
        p = put_mem(p, text, n);
    }
    else {
        p = put_mem(p, text, SHORT_MAX - 3);
        p = put_mem(p, "...", 3);
    }
    *la = p - buf;
    p = put_mem(p, tname, ltn);
    *p++ = ':';
    Py_ssize_t m = strip_addresses(text, n, bare);
    if (m <= KEY_MAX) {
        p = put_mem(p, bare, m);
    }
    else {
        p = put_int(p, (long long)m);
        *p++ = ':';
        p = put_mem(p, bare, KEY_HALF);
        *p++ = ':';
        p = put_mem(p, bare + m - KEY_HALF, KEY_HALF);
    }
    *lb = p - buf - *la;
    return 1;
}

/* The payload of obj (events.item_payload) for the common types.
 * Returns 1 (done, in buf), 0 (ask Python), -1 (error). */
static int
fast_payload(PyObject *obj, char *buf, Py_ssize_t *la, Py_ssize_t *lb, int *flags)
{
    *flags = 0;
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow) {
            return 0;
        }
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        char *p = put_int(buf, v);
        *la = p - buf;
        *lb = 0; /* the key, "int:" and the digits, is rebuilt by the reader */
        *flags = KEY_INT;
        return 1;
    }
    if (obj == Py_None) {
        memcpy(buf, "NoneNoneType:None", 17);
        *la = 4;
        *lb = 13;
        return 1;
    }
    if (PyBytes_CheckExact(obj)) {
        return text_payload(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj), 1, buf, la, lb,
                            flags);
    }
    if (PyUnicode_CheckExact(obj)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(obj) < 0) {
            return -1;
        }
#endif
        if (!PyUnicode_IS_ASCII(obj)) {
            return 0;
        }
        return text_payload((const char *)PyUnicode_1BYTE_DATA(obj), PyUnicode_GET_LENGTH(obj), 0,
                            buf, la, lb, flags);
    }
    PyTypeObject *t = Py_TYPE(obj);
    if (t == &PyBool_Type || t == &PyFloat_Type) { /* repr, and "bool:" / "float:" and repr */
        Out o = {buf, buf + FAST_CAP / 2};
        if (!out_repr(&o, obj, 0)) {
            return 0;
        }
        *la = o.p - buf;
        const char *tn = t == &PyBool_Type ? "bool:" : "float:";
        char *p = put_mem(o.p, tn, (Py_ssize_t)strlen(tn));
        p = put_mem(p, buf, *la);
        *lb = p - buf - *la;
        return 1;
    }
    if (t == &PyLong_Type) { /* beyond 64 bits: the digit limit is Python's business */
        return 0;
    }
    return repr_payload(obj, buf, la, lb);
}

/* -- Op --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    LogObject *log;
    PyObject *qb;         /* the queue's name, utf-8 */
    int op;
    int has_item;
    PyObject *call;       /* the wrapped operation */
    long long fork_gen;   /* fork_generation when it was made */
    PyObject *current;    /* () -> the Op of the current process */
    PyObject *end_raised; /* (seq, exception) -> records the END of a call that raised */
    PyObject *fields;     /* events.item_payload */
    PyObject *slow;       /* the pure-Python wrapper, for calls this one does not take */
    PyObject *next;       /* in a forked child: the child's operation, or NULL */
    long long next_gen;   /* the fork_generation next belongs to */
} OpObject;

/* Record the END of a call that raised; the exception stays set. */
static PyObject *
op_raised(OpObject *self, unsigned long long seq)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(exc, tb);
    }
#endif
    PyObject *seqo = PyLong_FromUnsignedLongLong(seq);
    PyObject *r = NULL;
    if (seqo != NULL) {
        r = PyObject_CallFunctionObjArgs(self->end_raised, seqo, exc, NULL);
        Py_DECREF(seqo);
    }
    if (r == NULL) { /* the recorder failed: its error, in the context of the queue's */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *err = PyErr_GetRaisedException();
        PyException_SetContext(err, exc);
        PyErr_SetRaisedException(err);
#else
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
        PyErr_NormalizeException(&et, &ev, &etb);
        PyException_SetContext(ev, exc);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        PyErr_Restore(et, ev, etb);
#endif
        return NULL;
    }
    Py_DECREF(r);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(type, exc, tb);
#endif
    return NULL;
}

/* The payload of obj, in buf or in *held (a bytes object the caller releases). */
static int
op_payload(OpObject *self, PyObject *obj, char *buf, const char **payload, Py_ssize_t *la,
           Py_ssize_t *lb, int *flags, PyObject **held)
{
    int r = fast_payload(obj, buf, la, lb, flags);
    if (r < 0) {
        return -1;
    }
    if (r == 1) {
        *payload = buf;
        return 0;
    }
    PyObject *t = PyObject_CallOneArg(self->fields, obj);
    if (t == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 4 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 0))) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "item_payload must return (bytes, int, int, int)");
        return -1;
    }
    PyObject *p = PyTuple_GET_ITEM(t, 0);
    *la = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
    *lb = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 2));
    long f = PyLong_AsLong(PyTuple_GET_ITEM(t, 3));
    if (PyErr_Occurred() || *la < 0 || *lb < 0 || *la > 65535 || *lb > 65535 ||
        *la + *lb != PyBytes_GET_SIZE(p) || f < 0 || f > 255) {
        Py_DECREF(t);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "item_payload: inconsistent fields");
        }
        return -1;
    }
    *flags = (int)f;
    Py_INCREF(p);
    Py_DECREF(t);
    *held = p;
    *payload = PyBytes_AS_STRING(p);
    return 0;
}

static PyObject *
op_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    OpObject *self = (OpObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (self->call == NULL) { /* cleared by the garbage collector (all or none) */
        PyErr_SetString(PyExc_RuntimeError, "mpfault: this queue operation was torn down");
        return NULL;
    }
    if (self->fork_gen != fork_generation) { /* a forked child: its own recorder */
        /* the child's operation, asked for once per fork (a caller may keep this
         * one in a variable across a fork) */
        PyObject *fn = self->next;
        if (fn == NULL || self->next_gen != fork_generation) {
            fn = PyObject_CallNoArgs(self->current);
            if (fn == NULL) {
                return NULL;
            }
            if (fn == callable) { /* the runtime says this one is current after all */
                Py_DECREF(fn);
                self->fork_gen = fork_generation;
                goto record;
            }
            Py_XSETREF(self->next, fn);
            self->next_gen = fork_generation;
        }
        Py_INCREF(fn);
        PyObject *res = PyObject_Vectorcall(fn, args, nargsf, kwnames);
        Py_DECREF(fn);
        return res;
    }
record:;
    LogObject *log = self->log;
    char buf[FAST_CAP];
    const char *payload = NULL;
    Py_ssize_t la = 0, lb = 0;
    int flags = 0;
    PyObject *held = NULL;
    unsigned long long seq;
    PyObject *res;
    if (self->has_item) {
        if (nargs < 1) { /* put(obj=...) and the like */
            return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
        }
        if (op_payload(self, args[0], buf, &payload, &la, &lb, &flags, &held) < 0) {
            return NULL;
        }
        seq = ++log->seq;
        int w = log_record(log, KIND_BEGIN, self->op, OUT_PENDING, flags, self->qb, payload, la,
                           lb, seq);
        Py_XDECREF(held);
        if (w < 0) {
            return NULL;
        }
        res = PyObject_Vectorcall(self->call, args, nargsf, kwnames);
        if (res == NULL) {
            return op_raised(self, seq);
        }
        if (log_record(log, KIND_END, self->op, OUT_OK, 0, self->qb, NULL, 0, 0, seq) < 0) {
            Py_DECREF(res);
            return NULL;
        }
        return res;
    }
    seq = ++log->seq;
    if (log_record(log, KIND_BEGIN, self->op, OUT_PENDING, 0, self->qb, NULL, 0, 0, seq) < 0) {
        return NULL;
    }
    res = PyObject_Vectorcall(self->call, args, nargsf, kwnames);
    if (res == NULL) {
        return op_raised(self, seq);
    }
    if (op_payload(self, res, buf, &payload, &la, &lb, &flags, &held) < 0 ||
        log_record(log, KIND_END, self->op, OUT_OK, flags, self->qb, payload, la, lb, seq) < 0) {
        Py_XDECREF(held);
        Py_DECREF(res);
        return NULL;
    }
    Py_XDECREF(held);
    return res;
}

static PyObject *
Log_wrap(LogObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"queue", "op",         "call",   "has_item", "current",
                             "end_raised", "fields", "slow", NULL};
    PyObject *qb, *call, *current, *end_raised, *fields, *slow;
    int op, has_item;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SiOpOOOO:wrap", kwlist, &qb, &op, &call,
                                     &has_item, &current, &end_raised, &fields, &slow)) {
        return NULL;
    }
    if (op < 1 || op > 255 || PyBytes_GET_SIZE(qb) > 65535) {
        PyErr_SetString(PyExc_ValueError, "wrap: op must be 1..255, the name at most 65535 bytes");
        return NULL;
    }
    OpObject *o = PyObject_GC_New(OpObject, &OpType);
    if (o == NULL) {
        return NULL;
    }
    o->vectorcall = op_vectorcall;
    o->dict = NULL;
    Py_INCREF(self);
    o->log = self;
    Py_INCREF(qb);
    o->qb = qb;
    o->op = op;
    o->has_item = has_item;
    Py_INCREF(call);
    o->call = call;
    o->fork_gen = fork_generation;
    o->next = NULL;
    o->next_gen = 0;
    Py_INCREF(current);
    o->current = current;
    Py_INCREF(end_raised);
    o->end_raised = end_raised;
    Py_INCREF(fields);
    o->fields = fields;
    Py_INCREF(slow);
    o->slow = slow;
    PyObject_GC_Track(o);
    return (PyObject *)o;
}

static int
Op_traverse(OpObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->call);
    Py_VISIT(self->current);
    Py_VISIT(self->end_raised);
    Py_VISIT(self->fields);
    Py_VISIT(self->slow);
    Py_VISIT(self->next);
    return 0;
}

/* The log and the name hold no references: they stay until the Op goes. */
static int
Op_clear(OpObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->call);
    Py_CLEAR(self->current);
    Py_CLEAR(self->end_raised);
    Py_CLEAR(self->fields);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->next);
    return 0;
}

static void
Op_dealloc(OpObject *self)
{
    PyObject_GC_UnTrack(self);
    Op_clear(self);
    Py_CLEAR(self->qb);
    Py_CLEAR(self->log);
    PyObject_GC_Del(self);
}

static PyObject *
Op_get_call(OpObject *self, void *Py_UNUSED(closure))
{
    PyObject *c = self->call ? self->call : Py_None;
    Py_INCREF(c);
    return c;
}

static PyGetSetDef Op_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"__wrapped__", (getter)Op_get_call, NULL, "The operation this one records.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* repr of an Op or a Trampoline: the queue operation it stands in for, by the
 * qualified name FaultQueue gives it ("q1.get"), not the C type's address. */
static PyObject *
queue_op_repr(PyObject *self, PyObject *dict, const char *kind)
{
    if (dict != NULL) {
        PyObject *q = PyDict_GetItemString(dict, "__qualname__"); /* borrowed */
        if (q == NULL || !PyUnicode_Check(q)) {
            q = PyDict_GetItemString(dict, "__name__");
        }
        if (q != NULL && PyUnicode_Check(q)) {
            return PyUnicode_FromFormat("<queue operation %U>", q);
        }
    }
    return PyUnicode_FromFormat("<mpfault queue operation (%s) at %p>", kind, self);
}

static PyObject *
Op_repr(OpObject *self)
{
    return queue_op_repr((PyObject *)self, self->dict, "Op");
}

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpfault._runtime._fastrec.Op",
    .tp_basicsize = sizeof(OpObject),
    .tp_dealloc = (destructor)Op_dealloc,
    .tp_vectorcall_offset = offsetof(OpObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A queue operation that records its BEGIN and END events (made by Log.wrap).",
    .tp_traverse = (traverseproc)Op_traverse,
    .tp_clear = (inquiry)Op_clear,
    .tp_getset = Op_getset,
    .tp_dictoffset = offsetof(OpObject, dict),
    .tp_repr = (reprfunc)Op_repr,
};

/* -- Trampoline ------------------------------------------------------------------- */

/* The operation as FaultQueue first shows it (``q.put``, which a caller may keep in
 * a variable): it hands every call to the Op of the current process, made on the
 * first call by current() and made again in a forked child. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *current; /* () -> this process's Op */
    PyObject *fn;      /* the Op made since the last fork, or NULL */
    long long fork_gen;
} TrampolineObject;

static PyObject *
tramp_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TrampolineObject *self = (TrampolineObject *)callable;
    if (self->current == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "mpfault: this queue operation was torn down");
        return NULL;
    }
    PyObject *fn = self->fn;
    if (fn == NULL || self->fork_gen != fork_generation) {
        fn = PyObject_CallNoArgs(self->current);
        if (fn == NULL) {
            return NULL;
        }
        Py_XSETREF(self->fn, fn);
        self->fork_gen = fork_generation;
    }
    Py_INCREF(fn); /* the call may replace self->fn */
    PyObject *res = PyObject_Vectorcall(fn, args, nargsf, kwnames);
    Py_DECREF(fn);
    return res;
}

static PyObject *
Trampoline_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"current", NULL};
    PyObject *current;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Trampoline", kwlist, &current)) {
        return NULL;
    }
    TrampolineObject *self = (TrampolineObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = tramp_vectorcall;
    Py_INCREF(current);
    self->current = current;
    self->fn = NULL;
    self->fork_gen = fork_generation;
    return (PyObject *)self;
}

static int
Trampoline_traverse(TrampolineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->current);
    Py_VISIT(self->fn);
    return 0;
}

static int
Trampoline_clear(TrampolineObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->current);
    Py_CLEAR(self->fn);
    return 0;
}

static void
Trampoline_dealloc(TrampolineObject *self)
{
    PyObject_GC_UnTrack(self);
    Trampoline_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyGetSetDef Trampoline_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
Trampoline_repr(TrampolineObject *self)
{
    return queue_op_repr((PyObject *)self, self->dict, "Trampoline");
}

static PyTypeObject TrampolineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpfault._runtime._fastrec.Trampoline",
    .tp_basicsize = sizeof(TrampolineObject),
    .tp_dealloc = (destructor)Trampoline_dealloc,
    .tp_vectorcall_offset = offsetof(TrampolineObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Trampoline(current)\n--\n\nA queue operation that hands its calls to the "
              "operation current() returns (asked again after a fork).",
    .tp_traverse = (traverseproc)Trampoline_traverse,
    .tp_clear = (inquiry)Trampoline_clear,
    .tp_getset = Trampoline_getset,
    .tp_dictoffset = offsetof(TrampolineObject, dict),
    .tp_new = Trampoline_new,
    .tp_repr = (reprfunc)Trampoline_repr,
};

/* -- Method ------------------------------------------------------------------------ */

/* Instrumentation (instrument.py): what a patched class has for a queue operation or
 * a connection operation.  A descriptor (bound like a function), whose call:
 *
 *   - finds the instance's shadow (its __dict__'s "_mpfault_shadow") of the session
 *     installed now (set_session), else calls the original function (a thread that
 *     outlives the test, an object mpfault leaves alone);
 *   - calls the original too inside an operation of the same queue (the queue's own
 *     use of its methods and pipe: the "current queue" of this thread);
 *   - else counts the call in flight, makes the queue the current one, and calls
 *     the shadow's operation (shadow.<op>, the recording Op or the faulted path).
 *     When the last call in flight ends and set_pending(True) was said, on_idle()
 *     is called (it closes the logs of ended sessions).
 *
 * A connection's send/recv on the pipe of a queue ("_mpfault_owner") are the queue's
 * put/get; its other operations there are the queue's own business. */

static PyObject *cur_session = NULL;   /* the installed session (instrument._Session) */
static PyObject *on_idle = NULL;       /* () -> None, when in-flight calls drop to 0 */
static int idle_pending = 0;
static _Thread_local PyObject *cur_queue = NULL; /* borrowed: for identity only */
static PyObject *str_shadow, *str_owner, *str_session;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *orig;   /* the original function */
    PyObject *op;     /* the shadow's operation called (str) */
    PyObject *as_op;  /* a connection's: the owner queue's operation (str), or NULL */
    int conn;         /* a connection's operation */
} MethodObject;

/* The value of key in obj's __dict__ (borrowed, from a dict the caller holds in *d),
 * or NULL (no error). */
static PyObject *
inst_get(PyObject *obj, PyObject **d, PyObject *key)
{
    if (*d == NULL) {
        *d = PyObject_GenericGetDict(obj, NULL);
        if (*d == NULL) {
            PyErr_Clear();
            return NULL;
        }
    }
    if (!PyDict_CheckExact(*d)) {
        return NULL;
    }
    PyObject *v = PyDict_GetItemWithError(*d, key);
    if (v == NULL) {
        PyErr_Clear();
    }
    return v;
}

/* obj's attribute key as object.__getattribute__ finds it (a new reference), or NULL
 * (no error).  Not through obj.__dict__: on CPython 3.11 an object whose __dict__ was
 * asked for loses its inline attribute values, and every attribute access of its
 * methods gets slower (instrument.py sets these attributes with object.__setattr__). */
static PyObject *
own_attr(PyObject *obj, PyObject *key)
{
    PyObject *v = _PyObject_GenericGetAttrWithDict(obj, key, NULL, 1);
    if (v == NULL) {
        PyErr_Clear();
    }
    return v;
}

/* Whether sh belongs to the session installed now (its _mpf_session, an attribute
 * of the instance: read from its __dict__, held in *shd). */
static int
of_session(PyObject *sh, PyObject **shd)
{
    if (cur_session == NULL) {
        return 0;
    }
    PyObject *s = inst_get(sh, shd, str_session);
    if (s != NULL) {
        return s == cur_session;
    }
    s = PyObject_GetAttr(sh, str_session);
    if (s == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = s == cur_session;
    Py_DECREF(s);
    return r;
}

static PyObject *
method_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MethodObject *self = (MethodObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (self->orig == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "mpfault: this method was torn down");
        return NULL;
    }
    if (nargs < 1 || cur_session == NULL) {
        return PyObject_Vectorcall(self->orig, args, nargsf, kwnames);
    }
    PyObject *obj = args[0];
    PyObject *shd = NULL;
    PyObject *o = NULL;
    if (self->conn) {
        o = own_attr(obj, str_owner);
        if (o != NULL && self->as_op == NULL) {
            /* send_bytes, recv_bytes, poll of a queue's pipe: always the queue's own use */
            Py_DECREF(o);
            return PyObject_Vectorcall(self->orig, args, nargsf, kwnames);
        }
    }
    PyObject *sh = own_attr(obj, str_shadow);
    if (sh == NULL || !of_session(sh, &shd)) {
        Py_XDECREF(shd);
        Py_XDECREF(sh);
        Py_XDECREF(o);
        return PyObject_Vectorcall(self->orig, args, nargsf, kwnames);
    }
    PyObject *prev = cur_queue;
    PyObject *owner = obj;
    PyObject *name = self->op;
    if (o != NULL) { /* send, recv on a queue's pipe: the queue's put, get */
        owner = o;
        name = self->as_op;
    }
    if (prev == owner) { /* inside an operation of this queue: its own business */
        Py_XDECREF(shd);
        Py_DECREF(sh);
        Py_XDECREF(o);
        return PyObject_Vectorcall(self->orig, args, nargsf, kwnames);
    }
    Py_INCREF(owner);
    Py_XDECREF(o);
    PyObject *res;
    inflight++; /* under the GIL: the session cannot end between the check and this */
    /* getattr(sh, name): the operation the shadow put on itself, else as Python finds it */
    PyObject *fn = inst_get(sh, &shd, name);
    if (fn != NULL) {
        Py_INCREF(fn);
    }
    else {
        fn = PyObject_GetAttr(sh, name);
    }
    Py_XDECREF(shd);
    if (fn == NULL) {
        res = NULL;
    }
    else {
        cur_queue = owner;
        res = PyObject_Vectorcall(fn, args + 1, (size_t)(nargs - 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                  kwnames);
        cur_queue = prev;
        Py_DECREF(fn);
    }
    Py_DECREF(owner);
    Py_DECREF(sh);
    if (inflight > 0) { /* 0 in a child forked during the call */
        inflight--;
    }
    if (inflight == 0 && idle_pending && on_idle != NULL) {
        PyObject *cb = on_idle;
        Py_INCREF(cb);
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
#else
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
#endif
        PyObject *r = PyObject_CallNoArgs(cb);
        if (r == NULL) {
            PyErr_WriteUnraisable(cb);
        }
        Py_XDECREF(r);
        Py_DECREF(cb);
#if PY_VERSION_HEX >= 0x030C0000
        PyErr_SetRaisedException(exc);
#else
        PyErr_Restore(et, ev, etb);
#endif
    }
    return res;
}

static PyObject *
Method_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"orig", "op", "as_op", "conn", NULL};
    PyObject *orig, *op, *as_op = Py_None;
    int conn = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OU|Op:Method", kwlist, &orig, &op, &as_op,
                                     &conn)) {
        return NULL;
    }
    if (as_op != Py_None && !PyUnicode_Check(as_op)) {
        PyErr_SetString(PyExc_TypeError, "Method: as_op must be a str or None");
        return NULL;
    }
    MethodObject *self = (MethodObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = method_vectorcall;
    Py_INCREF(orig);
    self->orig = orig;
    Py_INCREF(op);
    PyUnicode_InternInPlace(&op);
    self->op = op;
    if (as_op != Py_None) {
        Py_INCREF(as_op);
        PyUnicode_InternInPlace(&as_op);
        self->as_op = as_op;
    }
    self->conn = conn;
    return (PyObject *)self;
}

static PyObject *
Method_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static int
Method_traverse(MethodObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->orig);
    return 0;
}

static int
Method_clear(MethodObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->orig);
    return 0;
}

static void
Method_dealloc(MethodObject *self)
{
    PyObject_GC_UnTrack(self);
    Method_clear(self);
    Py_CLEAR(self->op);
    Py_CLEAR(self->as_op);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Method_repr(MethodObject *self)
{
    if (self->dict != NULL) {
        PyObject *q = PyDict_GetItemString(self->dict, "__qualname__"); /* borrowed */
        if (q != NULL && PyUnicode_Check(q)) {
            return PyUnicode_FromFormat("<mpfault instrumented method %U>", q);
        }
    }
    return PyUnicode_FromFormat("<mpfault instrumented method %U>", self->op);
}

static PyGetSetDef Method_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpfault._runtime._fastrec.Method",
    .tp_basicsize = sizeof(MethodObject),
    .tp_dealloc = (destructor)Method_dealloc,
    .tp_vectorcall_offset = offsetof(MethodObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "Method(orig, op, as_op=None, conn=False)\n--\n\nAn instrumented class's "
              "operation: calls go to the instance's shadow (see instrument.py).",
    .tp_traverse = (traverseproc)Method_traverse,
    .tp_clear = (inquiry)Method_clear,
    .tp_getset = Method_getset,
    .tp_dictoffset = offsetof(MethodObject, dict),
    .tp_descr_get = Method_descr_get,
    .tp_new = Method_new,
    .tp_repr = (reprfunc)Method_repr,
};

static PyObject *
set_session_py(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *session, *idle;
    if (!PyArg_ParseTuple(args, "OO:set_session", &session, &idle)) {
        return NULL;
    }
    Py_INCREF(idle);
    Py_XSETREF(on_idle, idle);
    if (session == Py_None) {
        Py_CLEAR(cur_session);
    }
    else {
        Py_INCREF(session);
        Py_XSETREF(cur_session, session);
    }
    Py_RETURN_NONE;
}

static PyObject *
set_pending_py(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int v = PyObject_IsTrue(arg);
    if (v < 0) {
        return NULL;
    }
    idle_pending = v;
    Py_RETURN_NONE;
}

static PyObject *
inflight_py(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(inflight);
}

/* -- module ---------------------------------------------------------------------- */

static PyObject *
fast_payload_py(PyObject *Py_UNUSED(module), PyObject *obj)
{
    char buf[FAST_CAP];
    Py_ssize_t la = 0, lb = 0;
    int flags = 0;
    int r = fast_payload(obj, buf, &la, &lb, &flags);
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(y#nni)", buf, la + lb, la, lb, flags);
}

/* prctl(PR_SET_PDEATHSIG, sig): here, so that a child need not load ctypes (~1 ms) */
static PyObject *
set_pdeathsig_py(PyObject *Py_UNUSED(module), PyObject *arg)
{
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_session", set_session_py, METH_VARARGS,
     "set_session(session, on_idle)\n--\n\nThe instrumentation session installed now (None: "
     "none), and what to call when no call is in flight any more."},
    {"set_pending", set_pending_py, METH_O,
     "set_pending(flag)\n--\n\nWhether to call on_idle when no call is in flight any more."},
    {"inflight", inflight_py, METH_NOARGS,
     "inflight()\n--\n\nThe number of instrumented calls in flight in this process."},
    {"set_pdeathsig", set_pdeathsig_py, METH_O,
     "set_pdeathsig(sig)\n--\n\nHave the kernel send this process sig when its parent dies."},
    {"fast_payload", fast_payload_py, METH_O,
     "fast_payload(obj)\n--\n\n(payload, la, lb, flags) as events.item_payload gives it, for the "
     "items formatted in C; None for the others."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mpfault._runtime._fastrec",
    .m_doc = "The recorder's hot path in C (optional; see events.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastrec(void)
{
    if (PyType_Ready(&LogType) < 0 || PyType_Ready(&OpType) < 0 ||
        PyType_Ready(&TrampolineType) < 0 || PyType_Ready(&MethodType) < 0) {
        return NULL;
    }
    str_shadow = PyUnicode_InternFromString("_mpfault_shadow");
    str_owner = PyUnicode_InternFromString("_mpfault_owner");
    str_session = PyUnicode_InternFromString("_mpf_session");
    str_module = PyUnicode_InternFromString("__module__");
    str_qualname = PyUnicode_InternFromString("__qualname__");
    str_builtins = PyUnicode_InternFromString("builtins");
    if (str_shadow == NULL || str_owner == NULL || str_session == NULL || str_module == NULL ||
        str_qualname == NULL || str_builtins == NULL) {
        return NULL;
    }
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) {
        page_size = (size_t)ps;
    }
    static int atfork_done = 0;
    if (!atfork_done) {
        int err = pthread_atfork(NULL, NULL, on_fork_child);
        if (err != 0) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        atfork_done = 1;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&LogType);
    if (PyModule_AddObject(m, "Log", (PyObject *)&LogType) < 0) {
        Py_DECREF(&LogType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&OpType);
    if (PyModule_AddObject(m, "Op", (PyObject *)&OpType) < 0) {
        Py_DECREF(&OpType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TrampolineType);
    if (PyModule_AddObject(m, "Trampoline", (PyObject *)&TrampolineType) < 0) {
        Py_DECREF(&TrampolineType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&MethodType);
    if (PyModule_AddObject(m, "Method", (PyObject *)&MethodType) < 0) {
        Py_DECREF(&MethodType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "RECORD_SIZE", REC_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* the numbers of the layout this module writes (checked against layout.py) */
    PyObject *layout = Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}",
        "length", OFF_LENGTH, "kind", OFF_KIND, "op", OFF_OP, "outcome", OFF_OUTCOME,
        "flags", OFF_FLAGS, "fault", OFF_FAULT, "qlen", OFF_QLEN, "alen", OFF_ALEN,
        "blen", OFF_BLEN, "pad", OFF_PAD, "time_ns", OFF_TIME_NS, "seq", OFF_SEQ,
        "SIZE", REC_SIZE, "KIND_BEGIN", KIND_BEGIN, "KIND_END", KIND_END,
        "OUT_PENDING", OUT_PENDING, "OUT_OK", OUT_OK, "KEY_INT", KEY_INT, "KEY_TAIL", KEY_TAIL,
        "HEAD", HEAD, "TAIL", TAIL);
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
