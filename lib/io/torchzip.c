/* torchzip.c - the PyTorch zip checkpoint reader of torchzip.h.  Follows PKWARE's
 * APPNOTE.TXT (4.3.7 local header, 4.3.12 central directory, 4.3.14-16 zip64 end of
 * central directory record and locator, 4.5.3 zip64 extra field), the pickle opcodes of
 * CPython's Lib/pickletools.py, and torch/serialization.py (_save: persistent ids
 * ('storage', storage type, key, location, numel)) with torch/_utils.py
 * (_rebuild_tensor_v2/_v3).
 *
 * The pickle machine only builds values: GLOBAL resolves names against a fixed table,
 * REDUCE applies one of its entries, anything else is an error naming the opcode or the
 * global.  Its stack, marks, memo, object count and container sizes are capped.
 * Why one file of ~1,300 lines: the zip walk, the pickle machine and the storage mapping
 * are one security boundary (an untrusted checkpoint in, bounded tensors out); its limits
 * and their interplay are easier to audit and to fuzz (fuzz_weights) in one place. */
#include "torchzip.h"

#include "err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define PK_MAX_NODES (1u << 21) /* objects a pickle may create */
#define PK_MAX_ITEMS (1u << 24) /* slots of all its tuples, lists and dicts together */
#define PK_MAX_STACK (1u << 20)
#define PK_MAX_MARKS (1u << 16)
#define PK_MAX_MEMO (1u << 22)
#define TZ_MAX_DIM ((int64_t)1 << 40) /* one dimension, as safetensors.c */

/* Grows arr (cap entries of sz bytes) to at least want entries, at most max.  Returns the
 * (maybe moved) array, or NULL with the error set and arr untouched. */
static void *grow(void *arr, size_t *cap, size_t want, size_t sz, size_t max, const char *what)
{
    if (want <= *cap)
        return arr;
    if (want > max) {
        err_set(ERR_FORMAT, "more than %zu %s", max, what);
        return NULL;
    }
    size_t c = *cap ? *cap : 16;
    while (c < want)
        c *= 2;
    if (c > max)
        c = max;
    void *q = realloc(arr, c * sz);
    if (!q) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    *cap = c;
    return q;
}

static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t rd32(const unsigned char *p)
{
    return rd16(p) | (uint32_t)rd16(p + 2) << 16;
}
static uint64_t rd64(const unsigned char *p)
{
    return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* ---- zip ---- */

typedef struct {
    const char *name; /* into the mapping, not terminated */
    size_t name_len;
    uint64_t lho, size, csize; /* local header offset, sizes */
    uint32_t crc;
    unsigned method, flags;
} zentry;

typedef struct {
    const char *path;
    const unsigned char *p;
    size_t len;
    uint64_t cd_off; /* entry data lies before the central directory */
    zentry *e;       /* sorted by name */
    size_t n;
} zarchive;

bool tz_is_zip(const void *map, size_t len)
{
    return len >= 4 && !memcmp(map, "PK\3\4", 4);
}

/* Offset of the end of central directory record (the last one whose comment fits), or -1. */
static int64_t zip_find_eocd(const unsigned char *p, size_t len)
{
    if (len < 22)
        return -1;
    size_t lo = len - 22 > 0xFFFF ? len - 22 - 0xFFFF : 0;
    for (size_t k = len - 22 + 1; k-- > lo;)
        if (!memcmp(p + k, "PK\5\6", 4) && rd16(p + k + 20) <= len - 22 - k)
            return (int64_t)k;
    return -1;
}

/* Reads the end records: where the central directory lies and how many entries it has. */
static int zip_end(zarchive *z, uint64_t *cd_size, uint64_t *count)
{
    int64_t at = zip_find_eocd(z->p, z->len);
    if (at < 0)
        return err_set(ERR_FORMAT, "%s: no zip end of central directory record; truncated file?",
                       z->path);
    const unsigned char *q = z->p + at;
    uint64_t disk = rd16(q + 4), cd_disk = rd16(q + 6), here = rd16(q + 8), n = rd16(q + 10);
    uint64_t size = rd32(q + 12), off = rd32(q + 16), end = (uint64_t)at;
    if (at >= 20 && !memcmp(q - 20, "PK\6\7", 4)) { /* zip64 locator */
        uint64_t z64 = rd64(q - 20 + 8);
        if (rd32(q - 20 + 4) != 0 || rd32(q - 20 + 16) > 1)
            return err_set(ERR_FORMAT, "%s: multi-part zip archives are not supported", z->path);
        if (z64 > (uint64_t)at - 20 || (uint64_t)at - 20 - z64 < 56 ||
            memcmp(z->p + z64, "PK\6\6", 4))
            return err_set(ERR_FORMAT, "%s: bad zip64 end of central directory record", z->path);
        q = z->p + z64;
        disk = rd32(q + 16), cd_disk = rd32(q + 20), here = rd64(q + 24), n = rd64(q + 32);
        size = rd64(q + 40), off = rd64(q + 48), end = z64;
    } else if (n == 0xFFFF || size == 0xFFFFFFFF || off == 0xFFFFFFFF) {
        return err_set(ERR_FORMAT,
                       "%s: zip64 archive without its zip64 end record; truncated file?", z->path);
    }
    if (disk || cd_disk || here != n)
        return err_set(ERR_FORMAT, "%s: multi-part zip archives are not supported", z->path);
    if (off > end || size > end - off)
        return err_set(ERR_FORMAT,
                       "%s: zip central directory (%llu bytes at %llu) lies outside the file",
                       z->path, (unsigned long long)size, (unsigned long long)off);
    if (n > size / 46)
        return err_set(ERR_FORMAT,
                       "%s: zip central directory of %llu bytes cannot hold %llu entries", z->path,
                       (unsigned long long)size, (unsigned long long)n);
    z->cd_off = off;
    *cd_size = size;
    *count = n;
    return 0;
}

/* Reads a zip64 extra field (id 1): the 8-byte values of the fields saturated at 2^32-1. */
static int zip_extra64(const unsigned char *x, size_t xl, zentry *e)
{
    while (xl >= 4) {
        size_t id = rd16(x), sz = rd16(x + 2);
        if (sz > xl - 4)
            return -1;
        if (id == 1) {
            const unsigned char *v = x + 4;
            size_t left = sz;
            uint64_t *f[3] = {&e->size, &e->csize, &e->lho};
            for (int k = 0; k < 3; k++) {
                if (*f[k] != 0xFFFFFFFF)
                    continue;
                if (left < 8)
                    return -1;
                *f[k] = rd64(v);
                v += 8, left -= 8;
            }
        }
        x += 4 + sz, xl -= 4 + sz;
    }
    return 0;
}

/* Parses the central directory entry at c (avail bytes left); *used gets its length. */
static int zip_entry(const zarchive *z, const unsigned char *c, size_t avail, zentry *e,
                     size_t *used)
{
    if (avail < 46 || memcmp(c, "PK\1\2", 4))
        return err_set(ERR_FORMAT, "%s: bad zip central directory entry at %llu", z->path,
                       (unsigned long long)(c - z->p));
    size_t nl = rd16(c + 28), xl = rd16(c + 30), cl = rd16(c + 32);
    if (nl + xl + cl > avail - 46)
        return err_set(ERR_FORMAT,
                       "%s: zip central directory entry at %llu runs past the directory", z->path,
                       (unsigned long long)(c - z->p));
    e->flags = rd16(c + 8);
    e->method = rd16(c + 10);
    e->crc = rd32(c + 16);
    e->csize = rd32(c + 20);
    e->size = rd32(c + 24);
    e->lho = rd32(c + 42);
    e->name = (const char *)c + 46;
    e->name_len = nl;
    if (zip_extra64(c + 46 + nl, xl, e))
        return err_set(ERR_FORMAT, "%s: zip entry '%.*s': bad extra field", z->path, (int)nl,
                       e->name);
    *used = 46 + nl + xl + cl;
    return 0;
}

static int cmp_name(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

static int cmp_entry(const void *a, const void *b)
{
    const zentry *x = a, *y = b;
    return cmp_name(x->name, x->name_len, y->name, y->name_len);
}

/* Reads the central directory into z->e, sorted by name; names must be unique. */
static int zip_open(zarchive *z)
{
    uint64_t size = 0, n = 0;
    int rc = zip_end(z, &size, &n);
    if (rc)
        return rc;
    z->e = calloc(n ? n : 1, sizeof *z->e);
    if (!z->e)
        return err_set(ERR_INTERNAL, "out of memory");
    const unsigned char *c = z->p + z->cd_off;
    size_t left = (size_t)size;
    for (z->n = 0; z->n < n; z->n++) {
        size_t used = 0;
        if ((rc = zip_entry(z, c, left, &z->e[z->n], &used)))
            return rc;
        c += used, left -= used;
    }
    qsort(z->e, z->n, sizeof *z->e, cmp_entry);
    for (size_t k = 1; k < z->n; k++)
        if (!cmp_entry(&z->e[k - 1], &z->e[k]))
            return err_set(ERR_FORMAT, "%s: zip entry '%.*s' appears twice", z->path,
                           (int)z->e[k].name_len, z->e[k].name);
    return 0;
}

static const zentry *zip_find(const zarchive *z, const char *name, size_t len)
{
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_name(z->e[mid].name, z->e[mid].name_len, name, len);
        if (!c)
            return &z->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The bytes of entry e: stored (not compressed or encrypted), its local header matching,
 * its data before the central directory. */
static int zip_data(const zarchive *z, const zentry *e, const unsigned char **data)
{
    int nl = (int)e->name_len;
    if (e->flags & 1)
        return err_set(ERR_FORMAT, "%s: zip entry '%.*s' is encrypted", z->path, nl, e->name);
    if (e->method != 0)
        return err_set(ERR_FORMAT,
                       "%s: zip entry '%.*s' is compressed (method %u); torch.save stores entries "
                       "uncompressed: re-save the checkpoint with torch.save",
                       z->path, nl, e->name, e->method);
    if (e->csize != e->size || e->lho > z->cd_off || z->cd_off - e->lho < 30 ||
        memcmp(z->p + e->lho, "PK\3\4", 4))
        return err_set(ERR_FORMAT, "%s: zip entry '%.*s': bad local header", z->path, nl, e->name);
    const unsigned char *l = z->p + e->lho;
    uint64_t start = e->lho + 30 + rd16(l + 26) + rd16(l + 28);
    if (start > z->cd_off || e->size > z->cd_off - start)
        return err_set(
            ERR_FORMAT,
            "%s: zip entry '%.*s' (%llu bytes) runs past the end of the data; truncated file?",
            z->path, nl, e->name, (unsigned long long)e->size);
    if (rd16(l + 26) != e->name_len || memcmp(l + 30, e->name, e->name_len))
        return err_set(ERR_FORMAT, "%s: zip entry '%.*s': local header names another file", z->path,
                       nl, e->name);
    *data = z->p + start;
    return 0;
}

/* ---- pickle values ---- */

typedef enum {
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_FLOAT,
    PV_STR,
    PV_BYTES,
    PV_TUPLE,
    PV_LIST,
    PV_DICT,
    PV_GLOBAL,
    PV_STORAGE,
    PV_TENSOR
} pv_kind;

static const char *const pv_names[] = {"None",  "bool", "int",  "float",  "str",     "bytes",
                                       "tuple", "list", "dict", "global", "storage", "tensor"};

typedef enum { G_ODICT, G_REBUILD_V2, G_REBUILD_V3, G_PARAM, G_STORAGE, G_DTYPE } g_kind;

/* The globals a tensor state dict uses; everything else is refused. */
static const struct {
    const char *mod, *name;
    g_kind what;
    int dtype;
} globals[] = {
    {"collections", "OrderedDict", G_ODICT, -1},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, -1},
    {"torch._utils", "_rebuild_tensor_v3", G_REBUILD_V3, -1},
    {"torch._utils", "_rebuild_parameter", G_PARAM, -1},
    {"torch._utils", "_rebuild_parameter_with_state", G_PARAM, -1},
    {"torch", "FloatStorage", G_STORAGE, ST_F32},
    {"torch", "HalfStorage", G_STORAGE, ST_F16},
    {"torch", "BFloat16Storage", G_STORAGE, ST_BF16},
    {"torch", "DoubleStorage", G_STORAGE, ST_F64},
    {"torch", "LongStorage", G_STORAGE, ST_I64},
    {"torch", "IntStorage", G_STORAGE, ST_I32},
    {"torch", "ShortStorage", G_STORAGE, ST_I16},
    {"torch", "CharStorage", G_STORAGE, ST_I8},
    {"torch", "ByteStorage", G_STORAGE, ST_U8},
    {"torch", "BoolStorage", G_STORAGE, ST_BOOL},
    {"torch", "UntypedStorage", G_STORAGE, ST_U8}, /* newer torch: bytes, dtype in _v3 */
    {"torch.storage", "UntypedStorage", G_STORAGE, ST_U8},
    {"torch", "float32", G_DTYPE, ST_F32},
    {"torch", "float", G_DTYPE, ST_F32},
    {"torch", "float16", G_DTYPE, ST_F16},
    {"torch", "half", G_DTYPE, ST_F16},
    {"torch", "bfloat16", G_DTYPE, ST_BF16},
    {"torch", "float64", G_DTYPE, ST_F64},
    {"torch", "double", G_DTYPE, ST_F64},
    {"torch", "int64", G_DTYPE, ST_I64},
    {"torch", "long", G_DTYPE, ST_I64},
    {"torch", "int32", G_DTYPE, ST_I32},
    {"torch", "int", G_DTYPE, ST_I32},
    {"torch", "int16", G_DTYPE, ST_I16},
    {"torch", "short", G_DTYPE, ST_I16},
    {"torch", "int8", G_DTYPE, ST_I8},
    {"torch", "uint8", G_DTYPE, ST_U8},
    {"torch", "bool", G_DTYPE, ST_BOOL},
};

typedef struct {
    st_dtype dtype;
    int ndim;
    int64_t off; /* in elements */
    int64_t shape[ST_MAX_DIMS], stride[ST_MAX_DIMS];
    const struct pv *sto;
} ptensor;

typedef struct pv pv;
struct pv {
    pv_kind kind;
    int dtype; /* GLOBAL (storage types, dtypes), STORAGE: st_dtype */
    union {
        int64_t i; /* BOOL, INT; GLOBAL: index into globals */
        double d;
        struct {
            const char *s; /* STR, BYTES: into the pickle, not terminated */
            size_t len;
        } str;
        struct {
            pv **v; /* TUPLE, LIST; DICT: key, value, key, value, ... */
            size_t n, cap;
        } seq;
        struct {
            const char *key; /* into the pickle */
            int key_len;
            const unsigned char *data;
            uint64_t nbytes; /* numel times the storage type's item size */
        } sto;
        ptensor *t;
    } u;
};

typedef struct {
    const zarchive *z;
    const char *dir; /* "archive/" of "archive/data.pkl" */
    size_t dir_len;
    const unsigned char *p;
    size_t len, pos;
    pv **stack;
    size_t sp, stack_cap;
    size_t *marks; /* stack heights at each MARK */
    size_t nmarks, marks_cap;
    pv **memo;
    size_t memo_cap, memo_len;
    pv **nodes; /* every object made, freed together */
    size_t n_nodes, nodes_cap, items;
} pk;

static pv *pv_new(pk *I, pv_kind kind)
{
    pv **a =
        grow(I->nodes, &I->nodes_cap, I->n_nodes + 1, sizeof *a, PK_MAX_NODES, "pickle objects");
    if (!a)
        return NULL;
    I->nodes = a;
    pv *v = calloc(1, sizeof *v);
    if (!v) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    v->kind = kind;
    I->nodes[I->n_nodes++] = v;
    return v;
}

static void pk_free(pk *I)
{
    for (size_t k = 0; k < I->n_nodes; k++) {
        pv *v = I->nodes[k];
        if (v->kind == PV_TUPLE || v->kind == PV_LIST || v->kind == PV_DICT)
            free(v->u.seq.v);
        if (v->kind == PV_TENSOR)
            free(v->u.t);
        free(v);
    }
    free(I->nodes);
    free(I->stack);
    free(I->marks);
    free(I->memo);
}

/* Appends x to the tuple, list or dict c. */
static int seq_add(pk *I, pv *c, pv *x)
{
    if (I->items >= PK_MAX_ITEMS)
        return err_set(ERR_FORMAT, "more than %u container items", PK_MAX_ITEMS);
    pv **v =
        grow(c->u.seq.v, &c->u.seq.cap, c->u.seq.n + 1, sizeof *v, PK_MAX_ITEMS, "container items");
    if (!v)
        return err_last();
    c->u.seq.v = v;
    v[c->u.seq.n++] = x;
    I->items++;
    return 0;
}

/* ---- pickle machine: stack, marks, memo ---- */

static int push(pk *I, pv *v)
{
    if (!v)
        return err_last();
    pv **s = grow(I->stack, &I->stack_cap, I->sp + 1, sizeof *s, PK_MAX_STACK, "stack entries");
    if (!s)
        return err_last();
    I->stack = s;
    s[I->sp++] = v;
    return 0;
}

static size_t stack_floor(const pk *I)
{
    return I->nmarks ? I->marks[I->nmarks - 1] : 0;
}

static pv *pop(pk *I)
{
    if (I->sp <= stack_floor(I)) {
        err_set(ERR_FORMAT, "stack underflow");
        return NULL;
    }
    return I->stack[--I->sp];
}

static pv *top(pk *I)
{
    if (I->sp <= stack_floor(I)) {
        err_set(ERR_FORMAT, "stack underflow");
        return NULL;
    }
    return I->stack[I->sp - 1];
}

static int mark(pk *I)
{
    size_t *m =
        grow(I->marks, &I->marks_cap, I->nmarks + 1, sizeof *m, PK_MAX_MARKS, "nested MARKs");
    if (!m)
        return err_last();
    I->marks = m;
    m[I->nmarks++] = I->sp;
    return 0;
}

/* Drops the last MARK; the items above it are stack[*start, sp). */
static int pop_mark(pk *I, size_t *start)
{
    if (!I->nmarks)
        return err_set(ERR_FORMAT, "no MARK to pop to");
    *start = I->marks[--I->nmarks];
    return 0;
}

static int memo_put(pk *I, uint64_t idx)
{
    pv *v = top(I);
    if (!v)
        return err_last();
    if (idx >= PK_MAX_MEMO)
        return err_set(ERR_FORMAT, "memo index %llu too large", (unsigned long long)idx);
    size_t old = I->memo_cap;
    pv **m = grow(I->memo, &I->memo_cap, (size_t)idx + 1, sizeof *m, PK_MAX_MEMO, "memo entries");
    if (!m)
        return err_last();
    I->memo = m;
    memset(m + old, 0, (I->memo_cap - old) * sizeof *m);
    if (!m[idx])
        I->memo_len++;
    m[idx] = v;
    return 0;
}

static int memo_get(pk *I, uint64_t idx)
{
    if (idx >= I->memo_cap || !I->memo[idx])
        return err_set(ERR_FORMAT, "memo entry %llu is not set", (unsigned long long)idx);
    return push(I, I->memo[idx]);
}

/* n argument bytes of the current opcode, or NULL past the end. */
static const unsigned char *take(pk *I, uint64_t n)
{
    if (n > I->len - I->pos) {
        err_set(ERR_FORMAT, "truncated: an argument of %llu bytes runs past the end",
                (unsigned long long)n);
        return NULL;
    }
    const unsigned char *q = I->p + I->pos;
    I->pos += (size_t)n;
    return q;
}

/* ---- pickle machine: opcodes ---- */

static int push_int(pk *I, pv_kind kind, int64_t i)
{
    pv *v = pv_new(I, kind);
    if (v)
        v->u.i = i;
    return push(I, v);
}

static int op_string(pk *I, pv_kind kind, uint64_t n)
{
    const unsigned char *q = take(I, n);
    if (!q)
        return err_last();
    pv *v = pv_new(I, kind);
    if (v)
        v->u.str.s = (const char *)q, v->u.str.len = (size_t)n;
    return push(I, v);
}

/* LONG1/LONG4: n bytes of little-endian two's complement; at most 8. */
static int op_long(pk *I, uint64_t n)
{
    if (n > 8)
        return err_set(ERR_FORMAT, "integer of %llu bytes is too large", (unsigned long long)n);
    const unsigned char *q = take(I, n);
    if (!q)
        return err_last();
    uint64_t u = 0;
    for (uint64_t k = n; k-- > 0;)
        u = u << 8 | q[k];
    if (n && n < 8 && (q[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n);
    int64_t i;
    memcpy(&i, &u, sizeof i);
    return push_int(I, PV_INT, i);
}

static int op_float(pk *I)
{
    const unsigned char *q = take(I, 8);
    if (!q)
        return err_last();
    uint64_t u = 0;
    for (int k = 0; k < 8; k++)
        u = u << 8 | q[k]; /* big-endian */
    pv *v = pv_new(I, PV_FLOAT);
    if (v)
        memcpy(&v->u.d, &u, sizeof u);
    return push(I, v);
}

static int push_global(pk *I, const char *mod, size_t ml, const char *name, size_t nl)
{
    for (size_t k = 0; k < sizeof globals / sizeof *globals; k++)
        if (strlen(globals[k].mod) == ml && !memcmp(globals[k].mod, mod, ml) &&
            strlen(globals[k].name) == nl && !memcmp(globals[k].name, name, nl)) {
            pv *v = pv_new(I, PV_GLOBAL);
            if (v)
                v->u.i = (int64_t)k, v->dtype = globals[k].dtype;
            return push(I, v);
        }
    return err_set(
        ERR_FORMAT,
        "unsupported global '%.*s.%.*s' (only tensor state dicts are read; nothing is executed)",
        (int)(ml > 200 ? 200 : ml), mod, (int)(nl > 200 ? 200 : nl), name);
}

/* GLOBAL: "module\nname\n". */
static int op_global(pk *I)
{
    const char *s = (const char *)I->p + I->pos;
    size_t left = I->len - I->pos;
    const char *nl1 = memchr(s, '\n', left);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', left - (size_t)(nl1 + 1 - s)) : NULL;
    if (!nl2)
        return err_set(ERR_FORMAT, "truncated GLOBAL");
    I->pos += (size_t)(nl2 + 1 - s);
    return push_global(I, s, (size_t)(nl1 - s), nl1 + 1, (size_t)(nl2 - nl1 - 1));
}

static int op_stack_global(pk *I)
{
    pv *name = pop(I), *mod = name ? pop(I) : NULL;
    if (!mod)
        return err_last();
    if (mod->kind != PV_STR || name->kind != PV_STR)
        return err_set(ERR_FORMAT, "STACK_GLOBAL on non-strings");
    return push_global(I, mod->u.str.s, mod->u.str.len, name->u.str.s, name->u.str.len);
}

/* A container of kind from stack[start, sp), which it replaces. */
static int op_collect(pk *I, pv_kind kind, size_t start)
{
    size_t n = I->sp - start;
    if (kind == PV_DICT && n % 2)
        return err_set(ERR_FORMAT, "DICT with an odd number of items");
    pv *v = pv_new(I, kind);
    if (!v)
        return err_last();
    if (n) {
        if (I->items + n > PK_MAX_ITEMS)
            return err_set(ERR_FORMAT, "more than %u container items", PK_MAX_ITEMS);
        v->u.seq.v = malloc(n * sizeof *v->u.seq.v);
        if (!v->u.seq.v)
            return err_set(ERR_INTERNAL, "out of memory");
        memcpy(v->u.seq.v, I->stack + start, n * sizeof *v->u.seq.v);
        v->u.seq.n = v->u.seq.cap = n;
        I->items += n;
    }
    I->sp = start;
    return push(I, v);
}

static int op_tuple_n(pk *I, size_t n)
{
    if (I->sp < stack_floor(I) + n)
        return err_set(ERR_FORMAT, "stack underflow");
    return op_collect(I, PV_TUPLE, I->sp - n);
}

static int op_mark_collect(pk *I, pv_kind kind)
{
    size_t start = 0;
    int rc = pop_mark(I, &start);
    return rc ? rc : op_collect(I, kind, start);
}

/* SETITEMS / APPENDS: the items above the last MARK go into the container below it. */
static int op_add_items(pk *I, pv_kind kind)
{
    size_t start = 0;
    int rc = pop_mark(I, &start);
    if (rc)
        return rc;
    size_t n = I->sp - start;
    I->sp = start;
    pv *c = top(I);
    if (!c)
        return err_last();
    if (c->kind != kind)
        return err_set(ERR_FORMAT, "%s on a %s", kind == PV_DICT ? "SETITEMS" : "APPENDS",
                       pv_names[c->kind]);
    if (kind == PV_DICT && n % 2)
        return err_set(ERR_FORMAT, "SETITEMS with an odd number of items");
    for (size_t k = 0; k < n; k++)
        if ((rc = seq_add(I, c, I->stack[start + k])))
            return rc;
    return 0;
}

static int op_setitem(pk *I)
{
    pv *v = pop(I), *k = v ? pop(I) : NULL, *d = k ? top(I) : NULL;
    if (!d)
        return err_last();
    if (d->kind != PV_DICT)
        return err_set(ERR_FORMAT, "SETITEM on a %s", pv_names[d->kind]);
    int rc = seq_add(I, d, k);
    return rc ? rc : seq_add(I, d, v);
}

static int op_append(pk *I)
{
    pv *v = pop(I), *l = v ? top(I) : NULL;
    if (!l)
        return err_last();
    if (l->kind != PV_LIST)
        return err_set(ERR_FORMAT, "APPEND on a %s", pv_names[l->kind]);
    return seq_add(I, l, v);
}

static bool is_str(const pv *v, const char *s)
{
    return v->kind == PV_STR && v->u.str.len == strlen(s) && !memcmp(v->u.str.s, s, v->u.str.len);
}

/* BINPERSID: ('storage', storage type, key, location, numel) -> the bytes of data/<key>. */
static int op_persid(pk *I)
{
    pv *pid = pop(I);
    if (!pid)
        return err_last();
    pv **a = pid->kind == PV_TUPLE ? pid->u.seq.v : NULL;
    if (!a || pid->u.seq.n != 5 || !is_str(a[0], "storage") || a[1]->kind != PV_GLOBAL ||
        globals[a[1]->u.i].what != G_STORAGE || a[2]->kind != PV_STR || a[2]->u.str.len > 200 ||
        a[3]->kind != PV_STR || a[4]->kind != PV_INT || a[4]->u.i < 0)
        return err_set(ERR_FORMAT, "persistent id is not ('storage', type, key, location, numel)");
    int key_len = (int)a[2]->u.str.len;
    const char *key = a[2]->u.str.s;
    size_t item = st_dtype_size((st_dtype)a[1]->dtype);
    if ((uint64_t)a[4]->u.i > UINT64_MAX / item)
        return err_set(ERR_FORMAT, "storage '%.*s': %lld elements is too many", key_len, key,
                       (long long)a[4]->u.i);
    char name[512];
    int nl = snprintf(name, sizeof name, "%.*sdata/%.*s", (int)I->dir_len, I->dir, key_len, key);
    const zentry *e = nl > 0 && (size_t)nl < sizeof name ? zip_find(I->z, name, (size_t)nl) : NULL;
    if (!e)
        return err_set(ERR_FORMAT, "storage '%.*s': no zip entry '%s'", key_len, key, name);
    const unsigned char *data;
    int rc = zip_data(I->z, e, &data);
    if (rc)
        return err_wrap(rc, "storage '%.*s'", key_len, key);
    uint64_t nbytes = (uint64_t)a[4]->u.i * item;
    if (nbytes > e->size)
        return err_set(
            ERR_FORMAT,
            "storage '%.*s' of %llu bytes, but zip entry '%s' holds %llu; truncated file?", key_len,
            key, (unsigned long long)nbytes, name, (unsigned long long)e->size);
    pv *v = pv_new(I, PV_STORAGE);
    if (v) {
        v->dtype = a[1]->dtype;
        v->u.sto.key = key, v->u.sto.key_len = key_len;
        v->u.sto.data = data, v->u.sto.nbytes = nbytes;
    }
    return push(I, v);
}

/* Reads a tuple of at most ST_MAX_DIMS ints into out; *n gets its length. */
static int int_tuple(const pv *t, int64_t *out, int *n, const char *what)
{
    if (t->kind != PV_TUPLE)
        return err_set(ERR_FORMAT, "tensor %s is a %s, not a tuple", what, pv_names[t->kind]);
    if (t->u.seq.n > ST_MAX_DIMS)
        return err_set(ERR_FORMAT, "tensor with %zu dimensions (at most %d)", t->u.seq.n,
                       ST_MAX_DIMS);
    for (size_t k = 0; k < t->u.seq.n; k++) {
        if (t->u.seq.v[k]->kind != PV_INT)
            return err_set(ERR_FORMAT, "tensor %s holds a non-integer", what);
        out[k] = t->u.seq.v[k]->u.i;
    }
    *n = (int)t->u.seq.n;
    return 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) and
 * _v3(..., hooks, dtype[, metadata]).  Checks against the storage wait for the name. */
static pv *rebuild_tensor(pk *I, const pv *args, bool v3)
{
    size_t n = args->u.seq.n;
    pv **a = args->u.seq.v;
    if (n < 6u + v3 || n > 7u + v3 || a[0]->kind != PV_STORAGE || a[1]->kind != PV_INT ||
        a[1]->u.i < 0 || (v3 && (a[6]->kind != PV_GLOBAL || globals[a[6]->u.i].what != G_DTYPE))) {
        err_set(ERR_FORMAT,
                "_rebuild_tensor_v%d: arguments are not (storage, offset, size, stride, ...)",
                v3 ? 3 : 2);
        return NULL;
    }
    ptensor t = {
        .dtype = (st_dtype)(v3 ? a[6]->dtype : a[0]->dtype), .off = a[1]->u.i, .sto = a[0]};
    int ns;
    if (int_tuple(a[2], t.shape, &t.ndim, "size") || int_tuple(a[3], t.stride, &ns, "stride"))
        return NULL;
    if (ns != t.ndim) {
        err_set(ERR_FORMAT, "tensor size has %d entries, stride %d", t.ndim, ns);
        return NULL;
    }
    for (int k = 0; k < t.ndim; k++)
        if (t.shape[k] < 0 || t.shape[k] > TZ_MAX_DIM) {
            err_set(ERR_FORMAT, "tensor size entry %lld is out of range", (long long)t.shape[k]);
            return NULL;
        }
    pv *v = pv_new(I, PV_TENSOR);
    if (!v)
        return NULL;
    if (!(v->u.t = malloc(sizeof t))) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    *v->u.t = t;
    return v;
}

/* REDUCE: only the callables of the globals table. */
static int op_reduce(pk *I)
{
    pv *args = pop(I), *fn = args ? pop(I) : NULL;
    if (!fn)
        return err_last();
    if (fn->kind != PV_GLOBAL)
        return err_set(ERR_FORMAT, "REDUCE calls a %s", pv_names[fn->kind]);
    const char *name = globals[fn->u.i].name;
    if (args->kind != PV_TUPLE)
        return err_set(ERR_FORMAT, "REDUCE of %s with a %s for arguments", name,
                       pv_names[args->kind]);
    size_t n = args->u.seq.n;
    switch (globals[fn->u.i].what) {
    case G_ODICT:
        if (n)
            return err_set(ERR_FORMAT, "OrderedDict called with arguments");
        return push(I, pv_new(I, PV_DICT));
    case G_REBUILD_V2:
    case G_REBUILD_V3: {
        pv *t = rebuild_tensor(I, args, globals[fn->u.i].what == G_REBUILD_V3);
        return t ? push(I, t) : err_last();
    }
    case G_PARAM:
        if (n < 3 || n > 4 || args->u.seq.v[0]->kind != PV_TENSOR)
            return err_set(ERR_FORMAT, "%s: arguments are not (tensor, requires_grad, hooks)",
                           name);
        return push(I, args->u.seq.v[0]);
    default:
        return err_set(ERR_FORMAT, "REDUCE calls torch.%s, which is not a function", name);
    }
}

/* BUILD: state for an OrderedDict (its _metadata) or a parameter; ignored. */
static int op_build(pk *I)
{
    pv *state = pop(I), *obj = state ? top(I) : NULL;
    if (!obj)
        return err_last();
    if (obj->kind != PV_DICT && obj->kind != PV_TENSOR)
        return err_set(ERR_FORMAT, "BUILD on a %s", pv_names[obj->kind]);
    return 0;
}

/* The opcodes read, named as in CPython's pickletools. */
enum {
    OP_PROTO = 0x80,
    OP_FRAME = 0x95,
    OP_STOP = '.',
    OP_GLOBAL = 'c',
    OP_STACK_GLOBAL = 0x93,
    OP_EMPTY_DICT = '}',
    OP_EMPTY_TUPLE = ')',
    OP_EMPTY_LIST = ']',
    OP_MARK = '(',
    OP_TUPLE = 't',
    OP_TUPLE1 = 0x85,
    OP_TUPLE2 = 0x86,
    OP_TUPLE3 = 0x87,
    OP_LIST = 'l',
    OP_DICT = 'd',
    OP_BINUNICODE = 'X',
    OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d,
    OP_SHORT_BINSTRING = 'U',
    OP_BINSTRING = 'T',
    OP_SHORT_BINBYTES = 'C',
    OP_BINBYTES = 'B',
    OP_BINBYTES8 = 0x8e,
    OP_BININT = 'J',
    OP_BININT1 = 'K',
    OP_BININT2 = 'M',
    OP_LONG1 = 0x8a,
    OP_LONG4 = 0x8b,
    OP_BINFLOAT = 'G',
    OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89,
    OP_NONE = 'N',
    OP_BINPUT = 'q',
    OP_LONG_BINPUT = 'r',
    OP_MEMOIZE = 0x94,
    OP_BINGET = 'h',
    OP_LONG_BINGET = 'j',
    OP_BINPERSID = 'Q',
    OP_REDUCE = 'R',
    OP_BUILD = 'b',
    OP_SETITEM = 's',
    OP_SETITEMS = 'u',
    OP_APPEND = 'a',
    OP_APPENDS = 'e',
    OP_POP = '0',
    OP_POP_MARK = '1',
    OP_DUP = '2',
};

/* Bytes of the little-endian integer argument (a value or a length) of op; 0 for none. */
static int arg_size(int op)
{
    switch (op) {
    case OP_PROTO:
    case OP_SHORT_BINUNICODE:
    case OP_SHORT_BINSTRING:
    case OP_SHORT_BINBYTES:
    case OP_BININT1:
    case OP_LONG1:
    case OP_BINPUT:
    case OP_BINGET:
        return 1;
    case OP_BININT2:
        return 2;
    case OP_BINUNICODE:
    case OP_BINSTRING:
    case OP_BINBYTES:
    case OP_BININT:
    case OP_LONG4:
    case OP_LONG_BINPUT:
    case OP_LONG_BINGET:
        return 4;
    case OP_FRAME:
    case OP_BINUNICODE8:
    case OP_BINBYTES8:
        return 8;
    default:
        return 0;
    }
}

/* Runs one opcode; *result set at STOP. */
static int step(pk *I, int op, pv **result)
{
    uint64_t a = 0;
    size_t start = 0;
    int n = arg_size(op);
    const unsigned char *q = n ? take(I, (uint64_t)n) : NULL;
    if (n && !q)
        return err_last();
    while (n-- > 0)
        a = a << 8 | q[n];
    switch (op) {
    case OP_PROTO:
        if (a < 2 || a > 5)
            return err_set(ERR_FORMAT, "pickle protocol %llu (2 to 5 are read)",
                           (unsigned long long)a);
        return 0;
    case OP_FRAME:
        return 0; /* a length hint */
    case OP_STOP:
        if (I->sp != 1 || I->nmarks)
            return err_set(ERR_FORMAT, "STOP with %zu objects on the stack", I->sp);
        *result = I->stack[0];
        return 0;
    case OP_GLOBAL:
        return op_global(I);
    case OP_STACK_GLOBAL:
        return op_stack_global(I);
    case OP_EMPTY_DICT:
        return push(I, pv_new(I, PV_DICT));
    case OP_EMPTY_TUPLE:
        return push(I, pv_new(I, PV_TUPLE));
    case OP_EMPTY_LIST:
        return push(I, pv_new(I, PV_LIST));
    case OP_MARK:
        return mark(I);
    case OP_TUPLE:
        return op_mark_collect(I, PV_TUPLE);
    case OP_LIST:
        return op_mark_collect(I, PV_LIST);
    case OP_DICT:
        return op_mark_collect(I, PV_DICT);
    case OP_TUPLE1:
        return op_tuple_n(I, 1);
    case OP_TUPLE2:
        return op_tuple_n(I, 2);
    case OP_TUPLE3:
        return op_tuple_n(I, 3);
    case OP_BINUNICODE:
    case OP_SHORT_BINUNICODE:
    case OP_BINUNICODE8:
    case OP_SHORT_BINSTRING:
    case OP_BINSTRING:
        return op_string(I, PV_STR, a);
    case OP_SHORT_BINBYTES:
    case OP_BINBYTES:
    case OP_BINBYTES8:
        return op_string(I, PV_BYTES, a);
    case OP_BININT:
        return push_int(I, PV_INT, (int32_t)(uint32_t)a);
    case OP_BININT1:
    case OP_BININT2:
        return push_int(I, PV_INT, (int64_t)a);
    case OP_LONG1:
    case OP_LONG4:
        return op_long(I, a);
    case OP_BINFLOAT:
        return op_float(I);
    case OP_NEWTRUE:
        return push_int(I, PV_BOOL, 1);
    case OP_NEWFALSE:
        return push_int(I, PV_BOOL, 0);
    case OP_NONE:
        return push(I, pv_new(I, PV_NONE));
    case OP_BINPUT:
    case OP_LONG_BINPUT:
        return memo_put(I, a);
    case OP_MEMOIZE:
        return memo_put(I, I->memo_len);
    case OP_BINGET:
    case OP_LONG_BINGET:
        return memo_get(I, a);
    case OP_BINPERSID:
        return op_persid(I);
    case OP_REDUCE:
        return op_reduce(I);
    case OP_BUILD:
        return op_build(I);
    case OP_SETITEM:
        return op_setitem(I);
    case OP_SETITEMS:
        return op_add_items(I, PV_DICT);
    case OP_APPEND:
        return op_append(I);
    case OP_APPENDS:
        return op_add_items(I, PV_LIST);
    case OP_POP:
        return pop(I) ? 0 : err_last();
    case OP_POP_MARK:
        return pop_mark(I, &start) ? err_last() : (I->sp = start, 0);
    case OP_DUP: {
        pv *v = top(I);
        return v ? push(I, v) : err_last();
    }
    default:
        if (op >= 0x20 && op < 0x7f)
            return err_set(ERR_FORMAT, "unsupported pickle opcode 0x%02x ('%c')", (unsigned)op, op);
        return err_set(ERR_FORMAT, "unsupported pickle opcode 0x%02x", (unsigned)op);
    }
}

/* Runs data.pkl to its STOP; the result stays owned by I. */
static int pk_run(pk *I, pv **result)
{
    *result = NULL;
    while (!*result) {
        size_t at = I->pos;
        if (I->pos >= I->len)
            return err_set(ERR_FORMAT, "%.*sdata.pkl ends without STOP; truncated?",
                           (int)I->dir_len, I->dir);
        int rc = step(I, I->p[I->pos++], result);
        if (rc)
            return err_wrap(rc, "%.*sdata.pkl at byte %zu", (int)I->dir_len, I->dir, at);
    }
    return 0;
}

/* ---- the state dict ---- */

/* Fills o from the tensor t called name: contiguous, inside its storage. */
static int to_st(const char *path, const char *name, const ptensor *t, st_tensor *o)
{
    uint64_t numel = 1, expect = 1;
    for (int k = 0; k < t->ndim; k++) {
        if (t->shape[k] && numel > UINT64_MAX / 8 / (uint64_t)t->shape[k])
            return err_set(ERR_FORMAT, "%s: tensor '%s': shape too large", path, name);
        numel *= (uint64_t)t->shape[k];
    }
    for (int k = t->ndim - 1; k >= 0 && numel; k--) {
        if (t->shape[k] != 1 && (uint64_t)t->stride[k] != expect) {
            char sh[256] = "", st[256] = ""; /* 8 entries of at most 20 characters */
            for (int q = 0, a = 0, b = 0; q < t->ndim; q++) {
                a += snprintf(sh + a, sizeof sh - (size_t)a, "%s%lld", q ? "," : "",
                              (long long)t->shape[q]);
                b += snprintf(st + b, sizeof st - (size_t)b, "%s%lld", q ? "," : "",
                              (long long)t->stride[q]);
            }
            return err_set(ERR_FORMAT,
                           "%s: tensor '%s' is not contiguous (shape [%s], stride [%s]); save "
                           "tensor.contiguous() instead",
                           path, name, sh, st);
        }
        expect *= (uint64_t)t->shape[k];
    }
    size_t item = st_dtype_size(t->dtype);
    uint64_t cap = t->sto->u.sto.nbytes / item, off = (uint64_t)t->off;
    if (off > cap || numel > cap - off)
        return err_set(ERR_FORMAT,
                       "%s: tensor '%s': offset %llu + %llu elements runs past the end of storage "
                       "'%.*s' (%llu bytes)",
                       path, name, (unsigned long long)off, (unsigned long long)numel,
                       t->sto->u.sto.key_len, t->sto->u.sto.key,
                       (unsigned long long)t->sto->u.sto.nbytes);
    o->dtype = t->dtype;
    o->ndim = t->ndim;
    memcpy(o->shape, t->shape, sizeof o->shape);
    o->numel = (int64_t)numel;
    o->data = t->sto->u.sto.data + off * item;
    o->nbytes = (size_t)(numel * item);
    return 0;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* The tensors of the dict d (other values skipped), in file order; names unique. */
static int dict_tensors(const char *path, const pv *d, st_tensor **out, int *n_out)
{
    if (d->kind != PV_DICT)
        return err_set(ERR_FORMAT, "%s: the pickle holds a %s, not a state dict", path,
                       pv_names[d->kind]);
    size_t n = 0;
    for (size_t k = 0; k + 1 < d->u.seq.n; k += 2)
        n += d->u.seq.v[k + 1]->kind == PV_TENSOR;
    if (!n)
        return err_set(ERR_FORMAT,
                       "%s: the state dict holds no tensors (a training checkpoint? save "
                       "model.state_dict() itself)",
                       path);
    st_tensor *t = calloc(n, sizeof *t);
    if (!t)
        return err_set(ERR_INTERNAL, "out of memory");
    int m = 0, rc = 0;
    for (size_t k = 0; k + 1 < d->u.seq.n && !rc; k += 2) {
        const pv *key = d->u.seq.v[k], *val = d->u.seq.v[k + 1];
        if (val->kind != PV_TENSOR)
            continue;
        if (key->kind != PV_STR || memchr(key->u.str.s, 0, key->u.str.len)) {
            rc = err_set(ERR_FORMAT, "%s: a tensor's key is a %s, not a name", path,
                         pv_names[key->kind]);
            break;
        }
        if (!(t[m].name = strndup(key->u.str.s, key->u.str.len))) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        rc = to_st(path, t[m].name, val->u.t, &t[m]);
        m++;
    }
    if (!rc) { /* duplicates, looked for in a sorted copy */
        st_tensor *s = malloc(n * sizeof *s);
        if (!s)
            rc = err_set(ERR_INTERNAL, "out of memory");
        else {
            memcpy(s, t, n * sizeof *s);
            qsort(s, n, sizeof *s, cmp_tensor);
            for (size_t k = 1; k < n && !rc; k++)
                if (!strcmp(s[k - 1].name, s[k].name))
                    rc = err_set(ERR_FORMAT, "%s: tensor '%s' appears twice in the state dict",
                                 path, s[k].name);
            free(s);
        }
    }
    if (rc) {
        for (int k = 0; k < m; k++)
            free(t[k].name);
        free(t);
        return rc;
    }
    *out = t;
    *n_out = (int)n;
    return 0;
}

/* torch.save(tensor, f): one tensor, named after the archive's folder ("<dir>/" less the
 * slash), which torch.save takes from the file name. */
static int bare_tensor(const char *path, const pv *v, const char *dir, size_t dir_len, st_tensor **out,
                       int *n_out)
{
    st_tensor *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strndup(dir, dir_len ? dir_len - 1 : 0))) {
        free(t);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    int rc = to_st(path, t->name, v->u.t, t);
    if (rc) {
        free(t->name);
        free(t);
        return rc;
    }
    *out = t;
    *n_out = 1;
    return 0;
}

/* The one <dir>/data.pkl entry; *dir_len gets the length of "<dir>/". */
static const zentry *find_pickle(const zarchive *z, size_t *dir_len)
{
    const zentry *found = NULL;
    for (size_t k = 0; k < z->n; k++) {
        const zentry *e = &z->e[k];
        const char *sl = memchr(e->name, '/', e->name_len);
        if (!sl || sl == e->name || e->name + e->name_len - (sl + 1) != 8 ||
            memcmp(sl + 1, "data.pkl", 8))
            continue;
        if (found) {
            err_set(ERR_FORMAT, "%s: more than one */data.pkl in the archive", z->path);
            return NULL;
        }
        found = e;
        *dir_len = (size_t)(sl + 1 - e->name);
    }
    if (!found)
        err_set(ERR_FORMAT, "%s: a zip archive without <dir>/data.pkl; not a torch.save checkpoint",
                z->path);
    return found;
}

/* <dir>/byteorder, written by newer torch: must say little. */
static int check_byteorder(const zarchive *z, const char *dir, size_t dir_len)
{
    char name[512];
    int nl = snprintf(name, sizeof name, "%.*sbyteorder", (int)dir_len, dir);
    const zentry *e = nl > 0 && (size_t)nl < sizeof name ? zip_find(z, name, (size_t)nl) : NULL;
    const unsigned char *d;
    if (!e)
        return 0;
    int rc = zip_data(z, e, &d);
    if (rc)
        return rc;
    if (e->size != 6 || memcmp(d, "little", 6))
        return err_set(ERR_FORMAT,
                       "%s: a big-endian checkpoint (%s); re-save it on a little-endian machine",
                       z->path, name);
    return 0;
}

int tz_read(const char *path, const void *map, size_t len, st_tensor **t, int *n)
{
    zarchive z = {.path = path, .p = map, .len = len};
    pk I = {.z = &z};
    *t = NULL;
    *n = 0;
    int rc = zip_open(&z);
    const zentry *pe = rc ? NULL : find_pickle(&z, &I.dir_len);
    if (!pe)
        goto done;
    I.dir = pe->name;
    if ((rc = check_byteorder(&z, I.dir, I.dir_len)) || (rc = zip_data(&z, pe, &I.p)))
        goto done;
    I.len = (size_t)pe->size;
    if (crc32_z(0, I.p, I.len) != pe->crc) {
        rc = err_set(ERR_FORMAT, "%s: %.*s: CRC mismatch; corrupt file?", path, (int)pe->name_len,
                     pe->name);
        goto done;
    }
    pv *result;
    if ((rc = pk_run(&I, &result))) {
        err_wrap(rc, "%s", path);
        goto done;
    }
    rc = result->kind == PV_TENSOR ? bare_tensor(path, result, I.dir, I.dir_len, t, n)
                                   : dict_tensors(path, result, t, n);
done:
    if (!rc && !pe)
        rc = err_last();
    pk_free(&I);
    free(z.e);
    return rc;
}
