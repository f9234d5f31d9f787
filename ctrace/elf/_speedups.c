/* Optional C versions of ctrace's three hottest loops (issue "Speed").
 *
 * Each function returns exactly what its Python twin returns (the tests compare
 * them on every fixture, the system binaries and fuzzed files); without a
 * compiler ctrace runs the Python ones:
 *   functions  -> ctrace.elf.symtab.functions (a symbol table's FUNC/IFUNC entries)
 *   listing    -> the rows of `ctrace symbols FILE` (ctrace.elf.listing): elf.inspect's
 *                 merge of every source, then render.json_rows or render.text_rows
 *   cxa_demangle -> the loop of ctrace.elf.demangle._cxa (libstdc++'s __cxa_demangle)
 *   name_kinds -> ctrace.elf._kinds (which names may be C++ or Rust, in one pass)
 *   cxa_address -> where _cxa finds __cxa_demangle through ctypes (dlopen, dlsym)
 *
 * ctrace runs as root on binaries from container images, so every read is
 * checked against the length of the buffer it comes from: a table is read as
 * whole records inside its buffer, and a name runs at most to the end of the
 * string table. Nothing here follows an offset it has not checked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A growing bytes object: the rows are returned without a copy (10 MB on dockerd). */
typedef struct {
    PyObject *obj; /* a bytes object of ``cap`` bytes, the first ``len`` in use */
    Py_ssize_t len, cap;
} Buf;

#define BUF_DATA(b) PyBytes_AS_STRING((b)->obj)

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    if (b->obj == NULL) {
        b->obj = PyBytes_FromStringAndSize(NULL, cap);
        if (b->obj == NULL)
            return -1;
    } else if (_PyBytes_Resize(&b->obj, cap) < 0) {
        return -1; /* b->obj is freed and NULL */
    }
    b->cap = cap;
    return 0;
}

/* The bytes written so far; the Buf is spent. */
static PyObject *buf_finish(Buf *b) {
    if (b->obj == NULL)
        return PyBytes_FromStringAndSize("", 0);
    if (_PyBytes_Resize(&b->obj, b->len) < 0)
        return NULL;
    PyObject *out = b->obj;
    b->obj = NULL;
    return out;
}

static int buf_add(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(BUF_DATA(b) + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define BUF_LIT(b, s) buf_add((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* ``v`` in decimal, or (base 16) in hex zero-padded to ``width`` digits, as Python's format. */
static int buf_u64(Buf *b, unsigned long long v, int base, int width) {
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = "0123456789abcdef"[v % (unsigned)base];
        v /= (unsigned)base;
    } while (v);
    while (n < width && n < (int)sizeof tmp)
        tmp[sizeof tmp - 1 - n++] = '0';
    return buf_add(b, tmp + sizeof tmp - n, n);
}

static int buf_pad(Buf *b, Py_ssize_t n) {
    if (n <= 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memset(BUF_DATA(b) + b->len, ' ', (size_t)n);
    b->len += n;
    return 0;
}

static uint32_t get32(const unsigned char *p, int swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

static uint64_t get64(const unsigned char *p, int swap) {
    uint64_t v;
    memcpy(&v, p, 8);
    return swap ? __builtin_bswap64(v) : v;
}

/* The name at ``off``: to the first NUL or the end of the table; "" past its end. */
static PyObject *name_at(const unsigned char *strtab, Py_ssize_t len, uint64_t off) {
    if (off >= (uint64_t)len)
        return PyUnicode_FromStringAndSize("", 0);
    const unsigned char *start = strtab + off;
    const unsigned char *end = memchr(start, 0, (size_t)(len - (Py_ssize_t)off));
    Py_ssize_t n = end ? (Py_ssize_t)(end - start) : len - (Py_ssize_t)off;
    return PyUnicode_DecodeUTF8((const char *)start, n, "surrogateescape");
}

static PyObject *record(PyTypeObject *cls, PyObject *name, uint64_t value, uint64_t size, PyObject *source) {
    PyObject *v = PyLong_FromUnsignedLongLong(value);
    PyObject *z = PyLong_FromUnsignedLongLong(size);
    PyObject *t = (v && z) ? cls->tp_alloc(cls, 4) : NULL;
    if (t == NULL) {
        Py_XDECREF(v);
        Py_XDECREF(z);
        Py_DECREF(name);
        return NULL;
    }
    Py_INCREF(source);
    PyTuple_SET_ITEM(t, 0, name);
    PyTuple_SET_ITEM(t, 1, v);
    PyTuple_SET_ITEM(t, 2, z);
    PyTuple_SET_ITEM(t, 3, source);
    return t;
}

PyDoc_STRVAR(functions_doc, "functions(table, strtab, is64, swap, source, cls) -> list of cls(name, value, size, source)");

static PyObject *functions(PyObject *self, PyObject *args) {
    Py_buffer table, strtab;
    int is64, swap;
    PyObject *source;
    PyTypeObject *cls;
    if (!PyArg_ParseTuple(args, "y*y*ppUO!", &table, &strtab, &is64, &swap, &source, &PyType_Type, &cls))
        return NULL;
    PyObject *out = NULL;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a tuple type");
        goto done;
    }
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    const Py_ssize_t entsize = is64 ? 24 : 16;
    const unsigned char *p = table.buf, *s = strtab.buf;
    for (Py_ssize_t i = 0; i + entsize <= table.len; i += entsize) {
        const unsigned char *e = p + i;
        uint32_t st_name = get32(e, swap);
        unsigned char info = e[is64 ? 4 : 12];
        uint64_t value = is64 ? get64(e + 8, swap) : get32(e + 4, swap);
        uint64_t size = is64 ? get64(e + 16, swap) : get32(e + 8, swap);
        int type = info & 0xF;
        if ((type != 2 && type != 10) || value == 0) /* STT_FUNC, STT_GNU_IFUNC */
            continue;
        PyObject *name = name_at(s, strtab.len, st_name);
        PyObject *t = name ? record(cls, name, value, size, source) : NULL;
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(t);
    }
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&strtab);
    return out;
}

/* A str JSON carries as it is: printable ASCII without '"' or '\'. */
static int plain(PyObject *s) {
    if (!PyUnicode_IS_ASCII(s))
        return 0;
    const unsigned char *c = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (c[i] < 0x20 || c[i] > 0x7e || c[i] == '"' || c[i] == '\\')
            return 0;
    return 1;
}

static int add_ascii(Buf *b, PyObject *s) {
    return buf_add(b, (const char *)PyUnicode_1BYTE_DATA(s), PyUnicode_GET_LENGTH(s));
}

/* ``s`` as a JSON string: quoted as it is when plain, else through ``escape``
 * (json's encode_basestring_ascii, whose result is ASCII). */
static int add_json_string(Buf *b, PyObject *s, PyObject *escape) {
    if (plain(s))
        return BUF_LIT(b, "\"") < 0 || add_ascii(b, s) < 0 ? -1 : BUF_LIT(b, "\"");
    PyObject *q = PyObject_CallOneArg(escape, s);
    if (q == NULL)
        return -1;
    int rc = PyUnicode_Check(q) && PyUnicode_IS_ASCII(q) ? add_ascii(b, q) : -1;
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "escape must return an ASCII str");
    Py_DECREF(q);
    return rc;
}

/* ``s`` as UTF-8, lone surrogates back to the bytes they stand for (surrogateescape). */
static int add_text(Buf *b, PyObject *s) {
    if (PyUnicode_IS_ASCII(s))
        return add_ascii(b, s);
    PyObject *raw = PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape");
    if (raw == NULL)
        return -1;
    int rc = buf_add(b, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
    Py_DECREF(raw);
    return rc;
}

/* demangled.get(name) (borrowed, a str) or NULL; *err is set on an error. */
static PyObject *lookup(PyObject *demangled, PyObject *name, int *err) {
    *err = 0;
    PyObject *v = PyDict_GetItemWithError(demangled, name);
    if (v == NULL && PyErr_Occurred())
        *err = 1;
    else if (v != NULL && !PyUnicode_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "demangled names must be str");
        *err = 1;
    }
    return v;
}

/* ---- listing: every source merged as elf.inspect merges them, rendered as render does ---- */

typedef struct {
    uint64_t addr, size;
    const char *name; /* UTF-8, inside a buffer or object the Collection keeps */
    Py_ssize_t len, seq;
    Py_ssize_t src;    /* index into labels */
    int own;           /* from the binary's own tables, not a debug file or the Go table */
    PyObject *str;     /* the name as a str (new reference) once needed, else NULL */
} Rec;

typedef struct {
    Rec *recs;
    Py_ssize_t n, cap;
    Py_buffer *bufs;
    Py_ssize_t nbufs, capbufs;
    PyObject *labels; /* list of the source labels */
    PyObject *keep;   /* list of objects whose bytes records point into */
    int inexact;      /* a name whose order or rendering Python decides differently */
} Coll;

static void coll_free(Coll *c) {
    for (Py_ssize_t i = 0; i < c->n; i++)
        Py_XDECREF(c->recs[i].str);
    for (Py_ssize_t i = 0; i < c->nbufs; i++)
        PyBuffer_Release(&c->bufs[i]);
    PyMem_Free(c->recs);
    PyMem_Free(c->bufs);
    Py_XDECREF(c->labels);
    Py_XDECREF(c->keep);
}

/* Room for one more of ``size``-byte items in the array at *items (doubling from ``first``). */
static int grow(void **items, Py_ssize_t n, Py_ssize_t *cap, size_t size, Py_ssize_t first) {
    if (n < *cap)
        return 0;
    Py_ssize_t more = *cap ? *cap * 2 : first;
    void *moved = (size_t)more <= PY_SSIZE_T_MAX / size ? PyMem_Realloc(*items, (size_t)more * size) : NULL;
    if (moved == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *items = moved;
    *cap = more;
    return 0;
}

/* Room for ``extra`` more records in one realloc: a table's size is known before it is read. */
static int coll_reserve(Coll *c, Py_ssize_t extra) {
    if (extra <= 0 || c->n + extra <= c->cap)
        return 0;
    if ((size_t)(c->n + extra) > PY_SSIZE_T_MAX / sizeof(Rec)) {
        PyErr_NoMemory();
        return -1;
    }
    Rec *moved = PyMem_Realloc(c->recs, (size_t)(c->n + extra) * sizeof(Rec));
    if (moved == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->recs = moved;
    c->cap = c->n + extra;
    return 0;
}

static Rec *coll_add(Coll *c) {
    if (grow((void **)&c->recs, c->n, &c->cap, sizeof(Rec), 4096) < 0)
        return NULL;
    Rec *r = &c->recs[c->n];
    memset(r, 0, sizeof *r);
    r->seq = c->n++;
    return r;
}

static Py_buffer *coll_buffer(Coll *c, PyObject *obj) {
    if (grow((void **)&c->bufs, c->nbufs, &c->capbufs, sizeof(Py_buffer), 8) < 0)
        return NULL;
    if (PyObject_GetBuffer(obj, &c->bufs[c->nbufs], PyBUF_SIMPLE) < 0)
        return NULL;
    return &c->bufs[c->nbufs++];
}

static Py_ssize_t coll_label(Coll *c, PyObject *label) {
    Py_ssize_t n = PyList_GET_SIZE(c->labels);
    for (Py_ssize_t i = 0; i < n; i++) {
        int eq = PyObject_RichCompareBool(PyList_GET_ITEM(c->labels, i), label, Py_EQ);
        if (eq != 0)
            return eq < 0 ? -1 : i;
    }
    if (!PyUnicode_Check(label) || !PyUnicode_IS_ASCII(label)) {
        PyErr_SetString(PyExc_TypeError, "source labels must be ASCII str");
        return -1;
    }
    return PyList_Append(c->labels, label) < 0 ? -1 : n;
}

/* Names Python orders by code point: that is byte order only for valid UTF-8. */
static void check_utf8(Coll *c, const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    uint64_t high = 0, w;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        high |= w;
    }
    for (; i < n; i++)
        high |= (unsigned char)s[i];
    if (!(high & 0x8080808080808080ULL))
        return;
    PyObject *u = PyUnicode_DecodeUTF8(s, n, NULL);
    if (u == NULL) {
        PyErr_Clear();
        c->inexact = 1;
    }
    Py_XDECREF(u);
}

/* ("table", data, strtab, is64, swap, label): its FUNC/IFUNC entries, as functions() keeps them. */
static int add_table(Coll *c, PyObject *item) {
    PyObject *kind, *data, *strtab, *label;
    int is64, swap;
    if (!PyArg_ParseTuple(item, "OOOppO", &kind, &data, &strtab, &is64, &swap, &label))
        return -1;
    Py_buffer *t = coll_buffer(c, data), *s = t ? coll_buffer(c, strtab) : NULL;
    Py_ssize_t src = s ? coll_label(c, label) : -1;
    if (src < 0)
        return -1;
    const Py_ssize_t entsize = is64 ? 24 : 16;
    const unsigned char *p = t->buf, *names = s->buf;
    if (coll_reserve(c, t->len / entsize) < 0) /* at most one record an entry */
        return -1;
    for (Py_ssize_t i = 0; i + entsize <= t->len; i += entsize) {
        const unsigned char *e = p + i;
        uint32_t off = get32(e, swap);
        int type = e[is64 ? 4 : 12] & 0xF;
        uint64_t value = is64 ? get64(e + 8, swap) : get32(e + 4, swap);
        if ((type != 2 && type != 10) || value == 0)
            continue;
        Rec *r = coll_add(c);
        if (r == NULL)
            return -1;
        r->addr = value;
        r->size = is64 ? get64(e + 16, swap) : get32(e + 8, swap);
        r->src = src;
        r->name = "";
        if ((Py_ssize_t)off < s->len && off < (uint64_t)s->len) {
            const char *start = (const char *)names + off;
            const char *end = memchr(start, 0, (size_t)(s->len - (Py_ssize_t)off));
            r->name = start;
            r->len = end ? (Py_ssize_t)(end - start) : s->len - (Py_ssize_t)off;
            check_utf8(c, r->name, r->len);
        }
    }
    return 0;
}

/* ("symbols", [Symbol, ...]): tuples of (name, address, size, source) made in Python. */
static int add_symbols(Coll *c, PyObject *item) {
    PyObject *kind, *list;
    if (!PyArg_ParseTuple(item, "OO!", &kind, &PyList_Type, &list) || PyList_Append(c->keep, list) < 0 ||
        coll_reserve(c, PyList_GET_SIZE(list)) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *t = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4 || !PyUnicode_Check(PyTuple_GET_ITEM(t, 0))) {
            PyErr_SetString(PyExc_TypeError, "symbols must be (str, int, int, str) tuples");
            return -1;
        }
        Rec *r = coll_add(c);
        if (r == NULL)
            return -1;
        r->addr = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 1));
        r->size = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 2));
        if (PyErr_Occurred() || (r->src = coll_label(c, PyTuple_GET_ITEM(t, 3))) < 0)
            return -1;
        r->name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 0), &r->len);
        if (r->name == NULL) { /* lone surrogates: bytes that were not UTF-8 */
            PyErr_Clear();
            c->inexact = 1;
            r->name = "";
            r->len = 0;
        }
    }
    return 0;
}

/* ("functab", data, nfunc, funcs, start, end, text, swap): a Go 1.18+ function table
 * (pclntab.source), decoded as pclntab._functab32 decodes it. Where that returns None
 * (a _func not 4-aligned, a nameOff outside its table, a name table without its final
 * NUL) or a number would not fit (an entry past 2**64, a size below 0), the listing is
 * marked inexact and elf.inspect's per-entry path decides. */
static int add_functab(Coll *c, PyObject *item) {
    PyObject *kind, *data, *label = NULL;
    Py_ssize_t nfunc, funcs, start, end;
    unsigned long long text;
    int swap;
    if (!PyArg_ParseTuple(item, "OOnnnnKp", &kind, &data, &nfunc, &funcs, &start, &end, &text, &swap))
        return -1;
    Py_buffer *t = coll_buffer(c, data);
    label = t ? PyUnicode_FromString("pclntab") : NULL;
    Py_ssize_t src = label ? coll_label(c, label) : -1;
    Py_XDECREF(label);
    if (src < 0)
        return -1;
    const unsigned char *p = t->buf;
    const Py_ssize_t len = t->len;
    if (nfunc <= 0 || funcs < 0 || start < 0 || end < start || end > len || nfunc > (len - funcs) / 8 - 1) {
        c->inexact = 1; /* pclntab.source checked these: not a table it hands over */
        return 0;
    }
    if (end == start || p[end - 1] != 0) {
        c->inexact = 1;
        return 0;
    }
    const unsigned char *tab = p + funcs;
    if (coll_reserve(c, nfunc) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < nfunc; i++) {
        uint32_t entry = get32(tab + 8 * i, swap), funcoff = get32(tab + 8 * i + 4, swap);
        uint32_t next = get32(tab + 8 * (i + 1), swap);
        /* the nameOff: the int32 at funcs + 4 + funcoff, inside the table */
        if (funcoff % 4 || (uint64_t)funcs + 8 + funcoff > (uint64_t)len || next < entry ||
            text + entry < text) {
            c->inexact = 1;
            return 0;
        }
        int32_t nameoff = (int32_t)get32(p + funcs + 4 + funcoff, swap);
        if (nameoff < 0 || nameoff >= end - start) {
            c->inexact = 1;
            return 0;
        }
        Rec *r = coll_add(c);
        if (r == NULL)
            return -1;
        r->addr = text + entry;
        r->size = next - entry;
        r->src = src;
        r->name = (const char *)p + start + nameoff;
        r->len = (Py_ssize_t)strlen(r->name); /* ends inside the table: its last byte is NUL */
        check_utf8(c, r->name, r->len);
    }
    return 0;
}

/* Records are sorted through these 16-byte keys, not moved themselves: the same
 * order for a fraction of the memory traffic. */
typedef struct {
    uint64_t addr;
    Py_ssize_t at; /* index into recs: the order of appearance */
} Key;

#define AHEAD 16 /* records ahead whose name is prefetched: a name is a cache miss away */

static int key_cmp(const void *a, const void *b) {
    const Key *x = a, *y = b;
    if (x->addr != y->addr)
        return x->addr < y->addr ? -1 : 1;
    return x->at < y->at ? -1 : (x->at > y->at);
}

static int name_cmp(const Rec *x, const Rec *y) {
    Py_ssize_t n = x->len < y->len ? x->len : y->len;
    int d = memcmp(x->name, y->name, (size_t)n);
    return d ? d : (x->len > y->len) - (x->len < y->len);
}

/* Sort by (address, name, order of appearance) and keep the first of each (name, address). */
static int coll_unique(Coll *c) {
    Key *keys = PyMem_Malloc((size_t)(c->n ? c->n : 1) * sizeof(Key));
    Rec *sorted = keys ? PyMem_Malloc((size_t)(c->n ? c->n : 1) * sizeof(Rec)) : NULL;
    if (sorted == NULL) {
        PyMem_Free(keys);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < c->n; i++)
        keys[i] = (Key){c->recs[i].addr, i};
    qsort(keys, (size_t)c->n, sizeof(Key), key_cmp);
    Py_ssize_t kept = 0;
    for (Py_ssize_t lo = 0, hi; lo < c->n; lo = hi) {
        /* the records and names ahead are at random places: ask for them early */
        if (lo + 2 * AHEAD < c->n)
            __builtin_prefetch(&c->recs[keys[lo + 2 * AHEAD].at]);
        if (lo + AHEAD < c->n)
            __builtin_prefetch(c->recs[keys[lo + AHEAD].at].name);
        for (hi = lo + 1; hi < c->n && keys[hi].addr == keys[lo].addr; hi++)
            ;
        /* one address: by name, then order of appearance (insertion sort: runs are short) */
        for (Py_ssize_t i = lo + 1; i < hi; i++) {
            Key k = keys[i];
            Py_ssize_t j = i;
            while (j > lo && name_cmp(&c->recs[keys[j - 1].at], &c->recs[k.at]) > 0) {
                keys[j] = keys[j - 1];
                j--;
            }
            keys[j] = k;
        }
        for (Py_ssize_t i = lo; i < hi; i++)
            if (i == lo || name_cmp(&c->recs[keys[i - 1].at], &c->recs[keys[i].at]) != 0)
                sorted[kept++] = c->recs[keys[i].at];
    }
    PyMem_Free(keys);
    PyMem_Free(c->recs); /* no record holds a reference yet: candidates() makes them */
    c->recs = sorted;
    c->n = c->cap = kept;
    return 0;
}

static int prefixed(const Rec *r, const char *p) {
    size_t n = strlen(p);
    return (size_t)r->len >= n && !memcmp(r->name, p, n);
}

/* Names that may be mangled, as elf.language and the demangler look for them: all of
 * them, and (``own``) those of the binary's own tables, which alone decide its language. */
static PyObject *candidates(Coll *c, PyObject *own) {
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out && i < c->n; i++) {
        Rec *r = &c->recs[i];
        int rust_end = r->len == 17 && !memcmp(r->name, "rust_begin_unwind", 17);
        if (!prefixed(r, "_Z") && !prefixed(r, "_R") && !prefixed(r, "__rust_") && !rust_end)
            continue;
        r->str = PyUnicode_DecodeUTF8(r->name, r->len, "surrogateescape");
        if (r->str == NULL || PyList_Append(out, r->str) < 0 || (r->own && PyList_Append(own, r->str) < 0))
            Py_CLEAR(out);
    }
    return out;
}

static int plain_bytes(const char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\')
            return 0;
    }
    return 1;
}

static int json_name(Buf *b, Rec *r, PyObject *escape) {
    if (plain_bytes(r->name, r->len))
        return BUF_LIT(b, "\"") < 0 || buf_add(b, r->name, r->len) < 0 ? -1 : BUF_LIT(b, "\"");
    PyObject *s = r->str ? (Py_INCREF(r->str), r->str) : PyUnicode_DecodeUTF8(r->name, r->len, "surrogateescape");
    if (s == NULL)
        return -1;
    int rc = add_json_string(b, s, escape);
    Py_DECREF(s);
    return rc;
}

/* The records' names demangled in C (listing's fused path): out[i] for record i, or NULL. */
typedef struct {
    char **out;
    Py_ssize_t *lens;
} Fused;

/* The demangled text of record ``i`` as a new str, or NULL (none, or *err on an error): from
 * the dict, or from the fused results as demangle._cxa's loop decodes them ("replace"). */
static PyObject *demangled_of(Rec *r, PyObject *demangled, const Fused *f, Py_ssize_t i, int *err) {
    *err = 0;
    if (f != NULL) {
        if (f->out[i] == NULL)
            return NULL;
        PyObject *s = PyUnicode_DecodeUTF8(f->out[i], f->lens[i], "replace");
        *err = s == NULL;
        return s;
    }
    if (r->str == NULL || PyDict_GET_SIZE(demangled) == 0)
        return NULL;
    PyObject *v = lookup(demangled, r->str, err);
    Py_XINCREF(v);
    return v;
}

/* Bytes that add_json_string would write as they are: printable ASCII but " and \. */
static int fused_plain(const Fused *f, Py_ssize_t i) {
    return f != NULL && f->out[i] != NULL && plain_bytes(f->out[i], f->lens[i]);
}

static int fused_ascii(const Fused *f, Py_ssize_t i) {
    if (f == NULL || f->out[i] == NULL)
        return 0;
    for (Py_ssize_t k = 0; k < f->lens[i]; k++)
        if ((unsigned char)f->out[i][k] >= 0x80)
            return 0;
    return 1;
}

static int json_all(Coll *c, Buf *b, PyObject *demangled, const Fused *f, PyObject *escape) {
    for (Py_ssize_t i = 0; i < c->n; i++) {
        Rec *r = &c->recs[i];
        if (i + AHEAD < c->n)
            __builtin_prefetch(c->recs[i + AHEAD].name);
        int err = 0, direct = fused_plain(f, i);
        PyObject *dm = direct ? NULL : demangled_of(r, demangled, f, i, &err);
        int rc = err || buf_add(b, i ? ",\n    {\"name\": " : "\n    {\"name\": ", i ? 15 : 14) < 0 ||
                         json_name(b, r, escape) < 0 || BUF_LIT(b, ", \"address\": ") < 0 ||
                         buf_u64(b, r->addr, 10, 0) < 0 || BUF_LIT(b, ", \"size\": ") < 0 ||
                         buf_u64(b, r->size, 10, 0) < 0 || BUF_LIT(b, ", \"source\": \"") < 0 ||
                         add_ascii(b, PyList_GET_ITEM(c->labels, r->src)) < 0 || BUF_LIT(b, "\", \"demangled\": ") < 0;
        if (!rc)
            rc = direct ? (BUF_LIT(b, "\"") < 0 || buf_add(b, f->out[i], f->lens[i]) < 0 || BUF_LIT(b, "\"") < 0)
                        : ((dm ? add_json_string(b, dm, escape) : BUF_LIT(b, "null")) < 0);
        Py_XDECREF(dm);
        if (rc || BUF_LIT(b, "}") < 0)
            return -1;
    }
    return c->n ? BUF_LIT(b, "\n  ") : 0;
}

static int ascii_space(unsigned char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1c && ch <= 0x1f); }

/* str.rstrip() of the row that starts at ``start``; a non-ASCII space there is left to Python. */
static void rstrip_row(Coll *c, Buf *b, Py_ssize_t start) {
    while (b->len > start) {
        unsigned char ch = (unsigned char)BUF_DATA(b)[b->len - 1];
        if (ch < 0x80) {
            if (!ascii_space(ch))
                return;
            b->len--;
            continue;
        }
        Py_ssize_t at = b->len - 1;
        while (at > start && ((unsigned char)BUF_DATA(b)[at] & 0xC0) == 0x80)
            at--;
        PyObject *u = PyUnicode_DecodeUTF8(BUF_DATA(b) + at, b->len - at, "surrogateescape");
        if (u == NULL || PyUnicode_GET_LENGTH(u) != 1 || Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(u, 0)))
            c->inexact = 1;
        PyErr_Clear();
        Py_XDECREF(u);
        return;
    }
}

static int text_all(Coll *c, Buf *b, PyObject *demangled, const Fused *f) {
    uint64_t widest = 0;
    Py_ssize_t source_w = 0;
    for (Py_ssize_t i = 0; i < c->n; i++) {
        Py_ssize_t w = PyUnicode_GET_LENGTH(PyList_GET_ITEM(c->labels, c->recs[i].src));
        widest = c->recs[i].size > widest ? c->recs[i].size : widest;
        source_w = w > source_w ? w : source_w;
    }
    char tmp[32];
    Py_ssize_t size_w = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)widest);
    for (Py_ssize_t i = 0; i < c->n; i++) {
        Rec *r = &c->recs[i];
        if (i + AHEAD < c->n)
            __builtin_prefetch(c->recs[i + AHEAD].name);
        PyObject *label = PyList_GET_ITEM(c->labels, r->src);
        int err = 0, direct = fused_ascii(f, i);
        PyObject *dm = direct ? NULL : demangled_of(r, demangled, f, i, &err);
        Py_ssize_t start = b->len, mark;
        int rc = err || buf_u64(b, r->addr, 16, 16) < 0 || BUF_LIT(b, "  ") < 0;
        mark = b->len;
        rc = rc || buf_u64(b, r->size, 10, 0) < 0 || buf_pad(b, size_w - (b->len - mark)) < 0 ||
             BUF_LIT(b, "  ") < 0 || add_ascii(b, label) < 0 ||
             buf_pad(b, source_w - PyUnicode_GET_LENGTH(label)) < 0 || BUF_LIT(b, "  ") < 0;
        if (!rc && (dm || direct))
            rc = (direct ? buf_add(b, f->out[i], f->lens[i]) : add_text(b, dm)) < 0 || BUF_LIT(b, "  [") < 0 ||
                 buf_add(b, r->name, r->len) < 0 || BUF_LIT(b, "]") < 0;
        else if (!rc)
            rc = buf_add(b, r->name, r->len) < 0;
        Py_XDECREF(dm);
        if (rc)
            return -1;
        rstrip_row(c, b, start);
        if (BUF_LIT(b, "\n") < 0)
            return -1;
    }
    return 0;
}

/* Functions per source, in order of first appearance (ElfInfo.sources). */
static PyObject *source_counts(Coll *c) {
    Py_ssize_t nl = PyList_GET_SIZE(c->labels);
    Py_ssize_t *counts = PyMem_Calloc((size_t)(nl ? nl : 1), sizeof(Py_ssize_t));
    Py_ssize_t *order = PyMem_Calloc((size_t)(nl ? nl : 1), sizeof(Py_ssize_t));
    PyObject *out = counts && order ? PyDict_New() : NULL;
    Py_ssize_t seen = 0;
    for (Py_ssize_t i = 0; out && i < c->n; i++)
        if (counts[c->recs[i].src]++ == 0)
            order[seen++] = c->recs[i].src;
    for (Py_ssize_t i = 0; out && i < seen; i++) {
        PyObject *n = PyLong_FromSsize_t(counts[order[i]]);
        if (n == NULL || PyDict_SetItem(out, PyList_GET_ITEM(c->labels, order[i]), n) < 0)
            Py_CLEAR(out);
        Py_XDECREF(n);
    }
    if (!counts || !order)
        PyErr_NoMemory();
    PyMem_Free(counts);
    PyMem_Free(order);
    return out;
}

typedef char *(*demangle_fn)(const char *, char *, size_t *, int *);
static void demangle_all_ranges(demangle_fn fn, const char **in, Py_ssize_t *lens, char **out, Py_ssize_t *out_lens,
                                Py_ssize_t n);

/* listing's fused path for a C++ binary: every candidate name starting _Z demangled by
 * __cxa_demangle (at ``address``) in a few threads, as demangle._cxa does for the same names
 * (their bytes are what the str's surrogateescape encoding gives back), without a str or a
 * dict entry per name. */
static int fuse(Coll *c, PyObject *address, Fused *f) {
    demangle_fn fn = (demangle_fn)(uintptr_t)PyLong_AsUnsignedLongLong(address);
    if (PyErr_Occurred())
        return -1;
    if (fn == NULL) {
        PyErr_SetString(PyExc_ValueError, "no __cxa_demangle");
        return -1;
    }
    Py_ssize_t n = c->n ? c->n : 1, total = 0;
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->recs[i].str != NULL && prefixed(&c->recs[i], "_Z"))
            total += c->recs[i].len + 1;
    const char **in = PyMem_Calloc(n, sizeof(char *));
    Py_ssize_t *lens = PyMem_Calloc(n, sizeof(Py_ssize_t));
    char *arena = PyMem_Malloc(total ? total : 1); /* NUL-ended copies: a strtab name may end at the table's end */
    f->out = PyMem_Calloc(n, sizeof(char *));
    f->lens = PyMem_Calloc(n, sizeof(Py_ssize_t));
    if (!in || !lens || !arena || !f->out || !f->lens) {
        PyMem_Free(in);
        PyMem_Free(lens);
        PyMem_Free(arena);
        PyErr_NoMemory();
        return -1;
    }
    char *at = arena;
    for (Py_ssize_t i = 0; i < c->n; i++) {
        Rec *r = &c->recs[i];
        if (r->str == NULL || !prefixed(r, "_Z"))
            continue;
        memcpy(at, r->name, r->len);
        at[r->len] = 0;
        in[i] = at;
        lens[i] = r->len;
        at += r->len + 1;
    }
    Py_BEGIN_ALLOW_THREADS
    demangle_all_ranges(fn, in, lens, f->out, f->lens, c->n);
    Py_END_ALLOW_THREADS
    PyMem_Free(in);
    PyMem_Free(lens);
    PyMem_Free(arena);
    return 0;
}

static void fused_free(Fused *f, Py_ssize_t n) {
    if (f->out != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            free(f->out[i]);
    PyMem_Free(f->out);
    PyMem_Free(f->lens);
}

PyDoc_STRVAR(listing_doc,
             "listing(sources, own, fmt, escape, classify) -> (rows, counts, functions, language) or None\n\n"
             "sources: ('table', data, strtab, is64, swap, label) and ('symbols', [Symbol, ...]) in the order\n"
             "elf.inspect merges them, the first ``own`` being the binary's own tables. classify(candidates, own)\n"
             "-> (language, demangled) gets the names that may be mangled, all and the own tables'. rows is bytes, UTF-8 (fmt 'text') or ASCII (fmt 'json'). None: a name Python orders or\n"
             "strips differently (not UTF-8, ending in a non-ASCII space): run the Python pipeline.");

static PyObject *listing(PyObject *self, PyObject *args) {
    PyObject *sources, *escape, *classify;
    Py_ssize_t own;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "O!nsOO", &PyList_Type, &sources, &own, &fmt, &escape, &classify))
        return NULL;
    Coll c = {0};
    Buf b = {NULL, 0, 0};
    Fused fused = {NULL, NULL};
    PyObject *rows = NULL;
    PyObject *cands = NULL, *own_cands = PyList_New(0), *verdict = NULL, *counts = NULL, *result = NULL;
    c.labels = PyList_New(0);
    c.keep = PyList_New(0);
    if (c.labels == NULL || c.keep == NULL || own_cands == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(sources); i++) {
        Py_ssize_t first = c.n;
        PyObject *item = PyList_GET_ITEM(sources, i);
        PyObject *kind = PyTuple_Check(item) && PyTuple_GET_SIZE(item) ? PyTuple_GET_ITEM(item, 0) : NULL;
        int rc = -1;
        if (kind && PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "table") == 0)
            rc = add_table(&c, item);
        else if (kind && PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "functab") == 0)
            rc = add_functab(&c, item);
        else if (kind && PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "symbols") == 0)
            rc = add_symbols(&c, item);
        else
            PyErr_SetString(PyExc_TypeError, "a source is ('table', ...), ('functab', ...) or ('symbols', [...])");
        if (rc < 0)
            goto done;
        for (Py_ssize_t j = first; j < c.n; j++)
            c.recs[j].own = i < own;
    }
    if (c.inexact) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (coll_unique(&c) < 0)
        goto done;
    cands = candidates(&c, own_cands);
    verdict = cands ? PyObject_CallFunctionObjArgs(classify, cands, own_cands, NULL) : NULL;
    PyObject *language, *demangled;
    if (verdict == NULL || !PyArg_ParseTuple(verdict, "UO", &language, &demangled))
        goto done;
    if (PyLong_Check(demangled)) { /* __cxa_demangle's address: demangle the C++ names here */
        if (fuse(&c, demangled, &fused) < 0)
            goto done;
    } else if (!PyDict_Check(demangled)) {
        PyErr_SetString(PyExc_TypeError, "classify returns (language, {mangled: text} or __cxa_demangle's address)");
        goto done;
    }
    Fused *f = fused.out ? &fused : NULL;
    int json = strcmp(fmt, "json") == 0;
    if (buf_reserve(&b, c.n * (json ? 160 : 100)) < 0)
        goto done;
    int rc = json ? json_all(&c, &b, demangled, f, escape) : text_all(&c, &b, demangled, f);
    if (rc < 0)
        goto done;
    if (c.inexact) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    counts = source_counts(&c);
    rows = counts ? buf_finish(&b) : NULL;
    if (rows)
        result = Py_BuildValue("(OOnO)", rows, counts, c.n, language);
done:
    Py_XDECREF(b.obj);
    Py_XDECREF(rows);
    Py_XDECREF(cands);
    Py_XDECREF(own_cands);
    Py_XDECREF(verdict);
    Py_XDECREF(counts);
    fused_free(&fused, c.n);
    coll_free(&c);
    return result;
}

/* ---- cxa_demangle: demangle._cxa's loop, without a ctypes call per name ----
 *
 * __cxa_demangle keeps no state between calls, so a long list (libLLVM: 30k names, most
 * of a cold listing's time) is cut into ranges demangled by a few threads at once, the
 * GIL released; the names are read and the results made into str with the GIL held. */

typedef struct {
    demangle_fn fn;
    const char **in;   /* the names' UTF-8 */
    Py_ssize_t *lens;  /* their lengths: a NUL inside means skip (ctypes would have cut the name there) */
    char **out;        /* each result's copy (malloc), or NULL */
    Py_ssize_t *out_lens;
    Py_ssize_t lo, hi;
} DemangleJob;

static void *demangle_range(void *arg) {
    DemangleJob *j = arg;
    size_t size = 256;
    char *buf = malloc(size); /* grown by __cxa_demangle itself (realloc) */
    for (Py_ssize_t i = j->lo; buf && i < j->hi; i++) {
        int status = 0;
        char *got = j->in[i] && strlen(j->in[i]) == (size_t)j->lens[i] ? j->fn(j->in[i], buf, &size, &status) : NULL;
        if (got == NULL)
            continue;
        buf = got;
        if (status != 0)
            continue;
        size_t n = strlen(got);
        if ((j->out[i] = malloc(n + 1)) != NULL) {
            memcpy(j->out[i], got, n + 1);
            j->out_lens[i] = (Py_ssize_t)n;
        }
    }
    free(buf);
    return NULL;
}

#define DEMANGLE_THREADS 4
#define DEMANGLE_PER_THREAD 2048 /* fewer names are not worth a thread */

static void demangle_all_ranges(demangle_fn fn, const char **in, Py_ssize_t *lens, char **out, Py_ssize_t *out_lens,
                                Py_ssize_t n) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    Py_ssize_t k = n / DEMANGLE_PER_THREAD + 1;
    if (k > DEMANGLE_THREADS)
        k = DEMANGLE_THREADS;
    if (cpus > 0 && k > cpus)
        k = cpus;
    DemangleJob jobs[DEMANGLE_THREADS];
    pthread_t threads[DEMANGLE_THREADS];
    int started[DEMANGLE_THREADS] = {0};
    for (Py_ssize_t t = 0; t < k; t++) {
        jobs[t] = (DemangleJob){fn, in, lens, out, out_lens, n * t / k, n * (t + 1) / k};
        /* the last range runs here; a thread that cannot start runs here too */
        if (t + 1 < k && pthread_create(&threads[t], NULL, demangle_range, &jobs[t]) == 0)
            started[t] = 1;
    }
    for (Py_ssize_t t = 0; t < k; t++)
        if (!started[t])
            demangle_range(&jobs[t]);
    for (Py_ssize_t t = 0; t < k; t++)
        if (started[t])
            pthread_join(threads[t], NULL);
}

PyDoc_STRVAR(cxa_demangle_doc,
             "cxa_demangle(names, fn) -> {name: text} for the names __cxa_demangle (at address fn) demangles;\n"
             "as ctrace.elf.demangle._cxa's loop, in a few threads for a long list");

static PyObject *cxa_demangle(PyObject *self, PyObject *args) {
    PyObject *names;
    unsigned long long address;
    if (!PyArg_ParseTuple(args, "O!K", &PyList_Type, &names, &address))
        return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "no __cxa_demangle");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(names);
    const char **in = PyMem_Calloc(n ? n : 1, sizeof(char *));
    char **out = PyMem_Calloc(n ? n : 1, sizeof(char *));
    Py_ssize_t *lens = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    Py_ssize_t *out_lens = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    PyObject *keep = PyList_New(0); /* the encoded bytes of names that are not ASCII */
    PyObject *result = NULL;
    if (in == NULL || out == NULL || lens == NULL || out_lens == NULL || keep == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            goto done;
        }
        const char *text;
        Py_ssize_t len;
        if (PyUnicode_IS_ASCII(name)) {
            text = PyUnicode_AsUTF8AndSize(name, &len); /* an ASCII str's own bytes: no copy */
        } else {
            PyObject *raw = PyUnicode_AsEncodedString(name, "utf-8", "surrogateescape");
            if (raw == NULL || PyList_Append(keep, raw) < 0) {
                Py_XDECREF(raw);
                goto done;
            }
            Py_DECREF(raw);
            text = PyBytes_AS_STRING(raw);
            len = PyBytes_GET_SIZE(raw);
        }
        if (text == NULL)
            goto done;
        in[i] = text;
        lens[i] = len;
    }
    demangle_fn fn = (demangle_fn)(uintptr_t)address;
    Py_BEGIN_ALLOW_THREADS
    demangle_all_ranges(fn, in, lens, out, out_lens, n);
    Py_END_ALLOW_THREADS
    result = PyDict_New();
    for (Py_ssize_t i = 0; result && i < n; i++) {
        if (out[i] == NULL)
            continue;
        PyObject *text = PyUnicode_DecodeUTF8(out[i], out_lens[i], "replace");
        if (text == NULL || PyDict_SetItem(result, PyList_GET_ITEM(names, i), text) < 0)
            Py_CLEAR(result);
        Py_XDECREF(text);
    }
done:
    if (out != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            free(out[i]);
    PyMem_Free(out);
    PyMem_Free(in);
    PyMem_Free(lens);
    PyMem_Free(out_lens);
    Py_XDECREF(keep);
    return result;
}

/* ---- name_kinds: elf._kinds, one pass over the names that may be mangled ---- */

static int u_has(int kind, const void *data, Py_ssize_t at, const char *p) {
    for (Py_ssize_t i = 0; p[i]; i++)
        if (PyUnicode_READ(kind, data, at + i) != (Py_UCS4)(unsigned char)p[i])
            return 0;
    return 1;
}

PyDoc_STRVAR(name_kinds_doc,
             "name_kinds(names) -> (itanium, v0, legacy, runtime): the names starting _Z and _R, the Rust\n"
             "legacy ones (_ZN...17h<16>E), and whether one is Rust's runtime's; as ctrace.elf._kinds");

static PyObject *name_kinds(PyObject *self, PyObject *args) {
    PyObject *names;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &names))
        return NULL;
    PyObject *itanium = PyList_New(0), *v0 = PyList_New(0), *legacy = PyList_New(0);
    int runtime = 0, ok = itanium && v0 && legacy;
    for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(names); i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            ok = 0;
            break;
        }
        Py_ssize_t n = PyUnicode_GET_LENGTH(name);
        int kind = PyUnicode_KIND(name);
        const void *data = PyUnicode_DATA(name);
        if (n >= 2 && u_has(kind, data, 0, "_Z")) {
            ok = PyList_Append(itanium, name) == 0;
            if (ok && n > 20 && u_has(kind, data, 0, "_ZN") && u_has(kind, data, n - 20, "17h") &&
                u_has(kind, data, n - 1, "E"))
                ok = PyList_Append(legacy, name) == 0;
        } else if (n >= 2 && u_has(kind, data, 0, "_R")) {
            ok = PyList_Append(v0, name) == 0;
        } else if ((n >= 7 && u_has(kind, data, 0, "__rust_")) || (n == 17 && u_has(kind, data, 0, "rust_begin_unwind"))) {
            runtime = 1;
        }
    }
    PyObject *out = ok ? Py_BuildValue("(OOOO)", itanium, v0, legacy, runtime ? Py_True : Py_False) : NULL;
    Py_XDECREF(itanium);
    Py_XDECREF(v0);
    Py_XDECREF(legacy);
    return out;
}

PyDoc_STRVAR(cxa_address_doc,
             "cxa_address() -> the address of libstdc++'s __cxa_demangle, or 0 where libstdc++.so.6 is missing;\n"
             "as demangle._cxa finds it through ctypes, without importing ctypes");

static PyObject *cxa_address(PyObject *self, PyObject *args) {
    void *lib = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL); /* kept open: the address must stay valid */
    void *fn = lib ? dlsym(lib, "__cxa_demangle") : NULL;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)fn);
}

static PyMethodDef methods[] = {
    {"cxa_address", cxa_address, METH_NOARGS, cxa_address_doc},
    {"name_kinds", name_kinds, METH_VARARGS, name_kinds_doc},
    {"functions", functions, METH_VARARGS, functions_doc},
    {"listing", listing, METH_VARARGS, listing_doc},
    {"cxa_demangle", cxa_demangle, METH_VARARGS, cxa_demangle_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ctrace.elf._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
