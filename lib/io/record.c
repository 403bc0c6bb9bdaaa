/* record.c - records and their wire codec (DESIGN section 2; API in record.h).
 *
 * Writing: msgpack-c packs the small parts of the map; tensor payloads are fed to the
 * zstd stream straight from the tensors (no copy), with the frame's content size pledged
 * so readers can bound every length by it.
 * Reading: a pull parser over a zstd decompression stream.  It never trusts a length:
 * every string/bin length and every map/array count is bounded by the bytes left in the
 * frame (content size from the frame header, else the configured record limit) before
 * anything is allocated; tensor payloads are decompressed straight into 64-byte aligned
 * buffers.  Not here: endpoints (endpoint.c), meta trees (mval.c).
 * Why one file of ~1,400 lines: the writer and the bounded pull parser are two views of one
 * wire layout (key names, tensor map, limits, error wording); kept together, a change to
 * the format is made and reviewed in one place, and the fuzz target covers all of it. */
#include "record.h"

#include "err.h"
#include "sha256.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* ---- dtypes and tensors ---- */

static const char *const dtype_names[DT_COUNT] = {"<f4", "<f2", "<i4", "<i8", "|u1"};
static const size_t dtype_sizes[DT_COUNT] = {4, 2, 4, 8, 1};

const char *dtype_str(dtype_t t) { return (unsigned)t < DT_COUNT ? dtype_names[t] : NULL; }
size_t dtype_size(dtype_t t) { return (unsigned)t < DT_COUNT ? dtype_sizes[t] : 0; }

int dtype_parse(const char *s, size_t len)
{
    for (int i = 0; i < DT_COUNT; i++)
        if (len == 3 && memcmp(s, dtype_names[i], 3) == 0)
            return i;
    /* numpy writes "|u1" for uint8 but some writers use "<u1" */
    if (len == 3 && memcmp(s, "<u1", 3) == 0)
        return DT_U8;
    return -1;
}

int64_t tensor_numel(const tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

void *aligned_alloc64(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64))
        return NULL;
    return p;
}

void aligned_free(void *p) { free(p); }

/* ---- records ---- */

record *rec_new(const char *kind)
{
    record *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    r->meta = mv_new_map();
    r->index = -1;
    if (!r->meta) {
        free(r);
        return NULL;
    }
    return r;
}

void rec_free(record *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_tensors; i++)
        if (r->tensors[i].owned)
            aligned_free(r->tensors[i].data);
    free(r->tensors);
    mv_free(r->meta);
    free(r);
}

/* Checked size: product(shape) * itemsize, or -1 on a negative dim or overflow. */
static int64_t shape_bytes(int ndim, const int64_t *shape, size_t itemsize)
{
    uint64_t n = itemsize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] && n > (uint64_t)INT64_MAX / (uint64_t)shape[i])
            return -1;
        n *= (uint64_t)shape[i];
    }
    return (int64_t)n;
}

static tensor *rec_slot(record *r, const char *name)
{
    if (strlen(name) >= TENSOR_NAME_MAX) {
        err_set(ERR_USAGE, "tensor name too long: %.40s...", name);
        return NULL;
    }
    if (rec_find(r, name)) {
        err_set(ERR_INTERNAL, "duplicate tensor '%s'", name);
        return NULL;
    }
    if (r->n_tensors == r->cap_tensors) {
        int cap = r->cap_tensors ? 2 * r->cap_tensors : 16;
        tensor *t = realloc(r->tensors, (size_t)cap * sizeof *t);
        if (!t) {
            err_set(ERR_INTERNAL, "out of memory");
            return NULL;
        }
        r->tensors = t;
        r->cap_tensors = cap;
    }
    tensor *t = &r->tensors[r->n_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

int rec_add(record *r, const char *name, dtype_t dt, int ndim, const int64_t *shape, void *data,
            int mode)
{
    if ((unsigned)dt >= DT_COUNT || ndim < 0 || ndim > TENSOR_MAX_DIMS)
        return err_set(ERR_INTERNAL, "rec_add '%s': bad dtype or ndim", name);
    int64_t nb = shape_bytes(ndim, shape, dtype_size(dt));
    if (nb < 0)
        return err_set(ERR_INTERNAL, "rec_add '%s': bad shape", name);
    tensor *t = rec_slot(r, name);
    if (!t)
        return err_last();
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) /* scalars may pass shape NULL; memcpy from NULL is undefined even for 0 bytes */
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->nbytes = (size_t)nb;
    t->data = data;
    t->owned = mode == REC_OWN;
    if (mode == REC_COPY) {
        t->data = aligned_alloc64(t->nbytes);
        if (!t->data)
            return err_set(ERR_INTERNAL, "out of memory for tensor '%s'", name);
        if (t->nbytes)
            memcpy(t->data, data, t->nbytes);
        t->owned = true;
    }
    r->n_tensors++;
    return 0;
}

void *rec_add_new(record *r, const char *name, dtype_t dt, int ndim, const int64_t *shape)
{
    int64_t nb = shape_bytes(ndim, shape, dtype_size(dt));
    if (nb < 0) {
        err_set(ERR_INTERNAL, "rec_add_new '%s': bad shape", name);
        return NULL;
    }
    void *p = aligned_alloc64((size_t)nb);
    if (!p) {
        err_set(ERR_INTERNAL, "out of memory for tensor '%s'", name);
        return NULL;
    }
    memset(p, 0, (size_t)nb);
    if (rec_add(r, name, dt, ndim, shape, p, REC_OWN)) {
        aligned_free(p);
        return NULL;
    }
    return p;
}

const tensor *rec_find(const record *r, const char *name)
{
    for (int i = 0; i < r->n_tensors; i++)
        if (strcmp(r->tensors[i].name, name) == 0)
            return &r->tensors[i];
    return NULL;
}

int rec_remove(record *r, const char *name)
{
    for (int i = 0; i < r->n_tensors; i++)
        if (strcmp(r->tensors[i].name, name) == 0) {
            if (r->tensors[i].owned)
                aligned_free(r->tensors[i].data);
            memmove(&r->tensors[i], &r->tensors[i + 1],
                    (size_t)(r->n_tensors - i - 1) * sizeof *r->tensors);
            r->n_tensors--;
            return 0;
        }
    return -1;
}

const char *rec_origin(const record *r, char *buf, size_t len)
{
    if (r->src[0] && r->index >= 0)
        snprintf(buf, len, "stream %s, record %ld", r->src, r->index);
    else if (r->src[0])
        snprintf(buf, len, "stream %s", r->src);
    else
        snprintf(buf, len, "%s record", r->kind[0] ? r->kind : "unnamed");
    return buf;
}

/* The "where" of messages about r (rec_origin without the "stream " of a read record, as
 * the messages have always read). */
static const char *rec_where(const record *r, char *buf, size_t len)
{
    rec_origin(r, buf, len);
    if (r->src[0])
        memmove(buf, buf + 7, strlen(buf + 7) + 1);
    return buf;
}

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    at += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

const tensor *rec_get(const record *r, const char *name, dtype_t dt, int ndim,
                      const int64_t *shape)
{
    char where[300], want[128], got[128];
    const tensor *t = rec_find(r, name);
    if (!t) {
        err_set(ERR_FORMAT, "missing tensor (%s, field tensors.%s): a %s record needs it",
                rec_where(r, where, sizeof where), name, r->kind);
        return NULL;
    }
    if (t->dtype != dt) {
        err_set(ERR_FORMAT, "wrong dtype (%s, field tensors.%s): expected %s, got %s",
                rec_where(r, where, sizeof where), name, dtype_str(dt), dtype_str(t->dtype));
        return NULL;
    }
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && shape && i < ndim; i++)
        if (shape[i] >= 0 && shape[i] != t->shape[i])
            ok = false;
    if (!ok) {
        if (shape)
            shape_text(ndim, shape, want, sizeof want);
        else
            snprintf(want, sizeof want, "%d dims", ndim);
        shape_text(t->ndim, t->shape, got, sizeof got);
        for (char *p = want; *p; p++)
            if (p[0] == '-' && p[1] == '1')
                p[0] = '*', memmove(p + 1, p + 2, strlen(p + 2) + 1);
        err_set(ERR_FORMAT, "wrong shape (%s, field tensors.%s): expected %s, got %s",
                rec_where(r, where, sizeof where), name, want, got);
        return NULL;
    }
    return t;
}

/* ---- meta helpers ---- */

static int put(record *r, const char *key, mval v)
{
    int rc = mv_map_put(r->meta, key, &v);
    if (rc)
        mv_clear(&v);
    return rc;
}

int rec_set_int(record *r, const char *key, int64_t v) { return put(r, key, mv_int(v)); }
int rec_set_float(record *r, const char *key, double v) { return put(r, key, mv_float(v)); }
int rec_set_bool(record *r, const char *key, bool v) { return put(r, key, mv_bool(v)); }
int rec_set_str(record *r, const char *key, const char *v) { return put(r, key, mv_str(v)); }

int rec_set_strs(record *r, const char *key, const char *const *v, size_t n)
{
    mval a = mv_array();
    for (size_t i = 0; i < n; i++) {
        mval s = mv_str(v[i]);
        if (mv_arr_push(&a, &s)) {
            mv_clear(&a);
            return ERR_INTERNAL;
        }
    }
    return put(r, key, a);
}

int rec_set_ints(record *r, const char *key, const int64_t *v, size_t n)
{
    mval a = mv_array();
    for (size_t i = 0; i < n; i++) {
        mval s = mv_int(v[i]);
        if (mv_arr_push(&a, &s)) {
            mv_clear(&a);
            return ERR_INTERNAL;
        }
    }
    return put(r, key, a);
}

int rec_set_floats(record *r, const char *key, const double *v, size_t n)
{
    mval a = mv_array();
    for (size_t i = 0; i < n; i++) {
        mval s = mv_float(v[i]);
        if (mv_arr_push(&a, &s)) {
            mv_clear(&a);
            return ERR_INTERNAL;
        }
    }
    return put(r, key, a);
}

static int meta_err(const record *r, const char *key, const char *why)
{
    char where[300];
    return err_set(ERR_FORMAT, "bad meta (%s, field meta.%s): %s",
                   rec_where(r, where, sizeof where), key, why);
}

int rec_get_int(const record *r, const char *key, int64_t *out)
{
    const mval *v = mv_map_get(r->meta, key);
    if (!v)
        return meta_err(r, key, "missing");
    if (v->type == MV_INT) {
        *out = v->u.i;
        return 0;
    }
    /* range check first: casting NaN, inf or |f| >= 2^63 to int64_t is undefined */
    if (v->type == MV_FLOAT && v->u.f >= -0x1p63 && v->u.f < 0x1p63 &&
        v->u.f == (double)(int64_t)v->u.f) {
        *out = (int64_t)v->u.f;
        return 0;
    }
    return meta_err(r, key, "expected an integer");
}

int rec_get_float(const record *r, const char *key, double *out)
{
    const mval *v = mv_map_get(r->meta, key);
    if (!v)
        return meta_err(r, key, "missing");
    if (v->type == MV_FLOAT)
        *out = v->u.f;
    else if (v->type == MV_INT)
        *out = (double)v->u.i;
    else
        return meta_err(r, key, "expected a number");
    return 0;
}

int rec_get_str(const record *r, const char *key, const char **out)
{
    const mval *v = mv_map_get(r->meta, key);
    if (!v)
        return meta_err(r, key, "missing");
    if (v->type != MV_STR)
        return meta_err(r, key, "expected a string");
    *out = v->u.str.s;
    return 0;
}

int rec_get_strs(const record *r, const char *key, const char ***out, size_t *n)
{
    const mval *v = mv_map_get(r->meta, key);
    if (!v)
        return meta_err(r, key, "missing");
    if (v->type != MV_ARRAY)
        return meta_err(r, key, "expected a list of strings");
    const char **a = malloc((v->u.arr.n ? v->u.arr.n : 1) * sizeof *a);
    if (!a)
        return err_set(ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < v->u.arr.n; i++) {
        if (v->u.arr.items[i].type != MV_STR) {
            free(a);
            return meta_err(r, key, "expected a list of strings");
        }
        a[i] = v->u.arr.items[i].u.str.s;
    }
    *out = a;
    *n = v->u.arr.n;
    return 0;
}

int rec_opt_int(const record *r, const char *key, int64_t *out)
{
    return mv_map_get(r->meta, key) ? rec_get_int(r, key, out) : 0;
}
int rec_opt_float(const record *r, const char *key, double *out)
{
    return mv_map_get(r->meta, key) ? rec_get_float(r, key, out) : 0;
}
int rec_opt_str(const record *r, const char *key, const char **out)
{
    return mv_map_get(r->meta, key) ? rec_get_str(r, key, out) : 0;
}

/* ---- encoding ---- */

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_mval(msgpack_packer *pk, const mval *v)
{
    switch (v->type) {
    case MV_NIL:
        return msgpack_pack_nil(pk);
    case MV_BOOL:
        return v->u.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case MV_INT:
        return msgpack_pack_int64(pk, v->u.i);
    case MV_FLOAT:
        return msgpack_pack_double(pk, v->u.f);
    case MV_STR:
        return msgpack_pack_str(pk, v->u.str.len) ||
               msgpack_pack_str_body(pk, v->u.str.s, v->u.str.len);
    case MV_ARRAY:
        if (msgpack_pack_array(pk, v->u.arr.n))
            return -1;
        for (size_t i = 0; i < v->u.arr.n; i++)
            if (pack_mval(pk, &v->u.arr.items[i]))
                return -1;
        return 0;
    case MV_MAP:
        if (msgpack_pack_map(pk, v->u.map.n))
            return -1;
        for (size_t i = 0; i < v->u.map.n; i++)
            if (pack_str(pk, v->u.map.keys[i]) || pack_mval(pk, &v->u.map.vals[i]))
                return -1;
        return 0;
    }
    return -1;
}

typedef struct enc_out {
    ZSTD_CCtx *cctx;
    rec_sink_fn sink;
    void *ctx;
    bool hash; /* only when the caller wants the digest: SHA-256 costs more than zstd -1 */
    sha256_ctx sha;
    void *obuf;
    size_t ocap;
} enc_out;

static int enc_feed(enc_out *e, const void *data, size_t len, ZSTD_EndDirective mode)
{
    if (e->hash)
        sha256_update(&e->sha, data, len);
    ZSTD_inBuffer in = {data, len, 0};
    for (;;) {
        ZSTD_outBuffer out = {e->obuf, e->ocap, 0};
        size_t rem = ZSTD_compressStream2(e->cctx, &out, &in, mode);
        if (ZSTD_isError(rem))
            return err_set(ERR_INTERNAL, "zstd: %s", ZSTD_getErrorName(rem));
        if (out.pos) {
            int rc = e->sink(e->ctx, e->obuf, out.pos);
            if (rc)
                return rc;
        }
        if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size)
            return 0;
    }
}

int rec_encode(const record *r, int level, rec_sink_fn sink, void *ctx, uint8_t digest[32])
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* seg_end[i]: sbuffer offset after which tensor i's payload follows */
    size_t *seg_end = malloc(((size_t)r->n_tensors + 1) * sizeof *seg_end);
    int rc = seg_end ? 0 : err_set(ERR_INTERNAL, "out of memory");
    uint64_t total = 0;
    if (!rc && (msgpack_pack_map(&pk, 4) || pack_str(&pk, "fedsm") ||
                msgpack_pack_int(&pk, FEDSM_FORMAT_VERSION) || pack_str(&pk, "kind") ||
                pack_str(&pk, r->kind) || pack_str(&pk, "meta") || pack_mval(&pk, r->meta) ||
                pack_str(&pk, "tensors") || msgpack_pack_map(&pk, (size_t)r->n_tensors)))
        rc = err_set(ERR_INTERNAL, "out of memory packing record");
    for (int i = 0; !rc && i < r->n_tensors; i++) {
        const tensor *t = &r->tensors[i];
        if (t->nbytes > UINT32_MAX) {
            rc = err_set(ERR_USAGE, "tensor '%s' is %zu bytes; msgpack bin holds at most 4 GiB",
                         t->name, t->nbytes);
            break;
        }
        bool bad = pack_str(&pk, t->name) || msgpack_pack_map(&pk, 5) || pack_str(&pk, "nd") ||
                   msgpack_pack_true(&pk) || pack_str(&pk, "type") ||
                   pack_str(&pk, dtype_str(t->dtype)) || pack_str(&pk, "kind") ||
                   pack_str(&pk, "") || pack_str(&pk, "shape") ||
                   msgpack_pack_array(&pk, (size_t)t->ndim);
        for (int d = 0; !bad && d < t->ndim; d++)
            bad = msgpack_pack_int64(&pk, t->shape[d]);
        bad = bad || pack_str(&pk, "data") || msgpack_pack_bin(&pk, t->nbytes);
        if (bad)
            rc = err_set(ERR_INTERNAL, "out of memory packing record");
        seg_end[i] = sb.size;
        total += t->nbytes;
    }
    total += sb.size;

    enc_out e = {0};
    e.sink = sink;
    e.ctx = ctx;
    e.hash = digest != NULL;
    sha256_init(&e.sha);
    if (!rc) {
        e.cctx = ZSTD_createCCtx();
        e.ocap = ZSTD_CStreamOutSize();
        e.obuf = malloc(e.ocap);
        if (!e.cctx || !e.obuf)
            rc = err_set(ERR_INTERNAL, "out of memory");
    }
    if (!rc) {
        ZSTD_CCtx_setParameter(e.cctx, ZSTD_c_compressionLevel, level ? level : 3);
        ZSTD_CCtx_setParameter(e.cctx, ZSTD_c_checksumFlag, 1);
        ZSTD_CCtx_setPledgedSrcSize(e.cctx, total);
        size_t at = 0;
        for (int i = 0; !rc && i < r->n_tensors; i++) {
            rc = enc_feed(&e, sb.data + at, seg_end[i] - at, ZSTD_e_continue);
            at = seg_end[i];
            const tensor *t = &r->tensors[i];
            if (!rc && t->nbytes)
                rc = enc_feed(&e, t->data, t->nbytes, ZSTD_e_continue);
        }
        if (!rc)
            rc = enc_feed(&e, sb.data + at, sb.size - at, ZSTD_e_end);
    }
    if (!rc && digest)
        sha256_final(&e.sha, digest);
    ZSTD_freeCCtx(e.cctx);
    free(e.obuf);
    free(seg_end);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
} membuf;

static int mem_sink(void *ctx, const void *buf, size_t len)
{
    membuf *m = ctx;
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap : 1 << 16;
        while (cap < m->len + len)
            cap *= 2;
        uint8_t *p = realloc(m->p, cap);
        if (!p)
            return err_set(ERR_INTERNAL, "out of memory");
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

int rec_encode_mem(const record *r, int level, void **out, size_t *out_len)
{
    membuf m = {0};
    int rc = rec_encode(r, level, mem_sink, &m, NULL);
    if (rc) {
        free(m.p);
        return rc;
    }
    *out = m.p;
    *out_len = m.len;
    return 0;
}

/* ---- decoding ---- */

void rec_limits_default(rec_limits *l)
{
    l->max_record_bytes = 64ULL << 30;
    l->max_depth = 32;
    l->max_items = 1u << 24;
    l->max_tensors = 65536;
}

struct rec_instream {
    rec_source_fn fn;
    void *ctx;
    char name[256];
    rec_limits lim;
    ZSTD_DCtx *dctx;
    uint8_t *in;
    size_t in_cap, in_pos, in_len;
    bool in_eof;
    uint8_t *out; /* decompressed window */
    size_t out_cap, out_pos, out_len;
    bool frame_done;
    uint64_t frame_left; /* decompressed bytes the frame may still hold (a bound) */
    long count;
    /* parse state for messages */
    char field[192];
    int depth;
};

rec_instream *rec_instream_new(rec_source_fn fn, void *ctx, const char *name,
                               const rec_limits *lim)
{
    rec_instream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fn = fn;
    s->ctx = ctx;
    snprintf(s->name, sizeof s->name, "%s", name);
    if (lim)
        s->lim = *lim;
    else
        rec_limits_default(&s->lim);
    s->dctx = ZSTD_createDCtx();
    s->in_cap = ZSTD_DStreamInSize();
    s->out_cap = 1 << 16;
    s->in = malloc(s->in_cap);
    s->out = malloc(s->out_cap);
    if (!s->dctx || !s->in || !s->out) {
        rec_instream_free(s);
        return NULL;
    }
    return s;
}

void rec_instream_free(rec_instream *s)
{
    if (!s)
        return;
    ZSTD_freeDCtx(s->dctx);
    free(s->in);
    free(s->out);
    free(s);
}

long rec_instream_count(const rec_instream *s) { return s->count; }

static int bad(rec_instream *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(rec_instream *s, int code, const char *fmt, ...)
{
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (s->field[0])
        return err_set(code, "bad record (stream %s, record %ld, field %s): %s", s->name,
                       s->count, s->field, why);
    return err_set(code, "bad record (stream %s, record %ld): %s", s->name, s->count, why);
}

/* Refills the compressed input buffer; keeps unread bytes.  0 ok (maybe eof). */
static int refill(rec_instream *s)
{
    if (s->in_eof)
        return 0;
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
    }
    while (s->in_len < s->in_cap) {
        long n = s->fn(s->ctx, s->in + s->in_len, s->in_cap - s->in_len);
        if (n < 0)
            return (int)n;
        if (n == 0) {
            s->in_eof = true;
            break;
        }
        s->in_len += (size_t)n;
        break; /* one read at a time: pipes and sockets deliver what they have */
    }
    return 0;
}

/* Decompresses into dst (cap bytes) until at least `need` bytes or the frame ends.
 * Returns bytes produced, or a negative error. */
static long inflate(rec_instream *s, uint8_t *dst, size_t cap, size_t need)
{
    size_t got = 0;
    while (got < need && !s->frame_done) {
        if (s->in_pos == s->in_len) {
            int rc = refill(s);
            if (rc)
                return rc;
            if (s->in_pos == s->in_len && s->in_eof)
                return bad(s, ERR_FORMAT, "truncated stream: the zstd frame ends early");
        }
        ZSTD_inBuffer in = {s->in, s->in_len, s->in_pos};
        ZSTD_outBuffer out = {dst, cap, got};
        size_t rc = ZSTD_decompressStream(s->dctx, &out, &in);
        if (ZSTD_isError(rc))
            return bad(s, ERR_FORMAT, "corrupt zstd data: %s", ZSTD_getErrorName(rc));
        s->in_pos = in.pos;
        got = out.pos;
        if (rc == 0)
            s->frame_done = true;
        if (got == cap)
            break;
    }
    return (long)got;
}

/* Reads exactly n decompressed bytes into dst. */
static int rd(rec_instream *s, void *dst, size_t n)
{
    uint8_t *d = dst;
    if ((uint64_t)n > s->frame_left)
        return bad(s, ERR_FORMAT, "record truncated (needs %zu more bytes than the frame holds)",
                   n);
    s->frame_left -= n;
    size_t have = s->out_len - s->out_pos;
    size_t take = have < n ? have : n;
    memcpy(d, s->out + s->out_pos, take);
    s->out_pos += take;
    d += take;
    n -= take;
    if (n >= s->out_cap) { /* large payloads go straight to their destination */
        long got = inflate(s, d, n, n);
        if (got < 0)
            return (int)got;
        if ((size_t)got < n)
            return bad(s, ERR_FORMAT, "record truncated inside a %zu-byte field", n);
        return 0;
    }
    while (n) {
        long got = inflate(s, s->out, s->out_cap, 1);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return bad(s, ERR_FORMAT, "record truncated: the frame ends inside the record");
        s->out_pos = 0;
        s->out_len = (size_t)got;
        take = (size_t)got < n ? (size_t)got : n;
        memcpy(d, s->out, take);
        s->out_pos = take;
        d += take;
        n -= take;
    }
    return 0;
}

static int rd_u8(rec_instream *s, uint8_t *v) { return rd(s, v, 1); }

static int rd_be(rec_instream *s, int nbytes, uint64_t *v)
{
    uint8_t b[8];
    int rc = rd(s, b, (size_t)nbytes);
    if (rc)
        return rc;
    *v = 0;
    for (int i = 0; i < nbytes; i++)
        *v = *v << 8 | b[i];
    return 0;
}

/* msgpack head: what kind of object follows and its length/value. */
typedef enum { H_NIL, H_BOOL, H_INT, H_UINT, H_FLOAT, H_STR, H_BIN, H_ARRAY, H_MAP, H_EXT } htype;
typedef struct head {
    htype t;
    uint64_t n; /* length / count / uint value */
    int64_t i;
    double f;
    bool b;
} head;

static int rd_head(rec_instream *s, head *h)
{
    uint8_t c;
    uint64_t v;
    int rc = rd_u8(s, &c);
    if (rc)
        return rc;
    memset(h, 0, sizeof *h);
    if (c <= 0x7f) {
        h->t = H_UINT, h->n = c;
        return 0;
    }
    if (c >= 0xe0) {
        h->t = H_INT, h->i = (int8_t)c;
        return 0;
    }
    if ((c & 0xf0) == 0x80) {
        h->t = H_MAP, h->n = c & 0x0f;
        return 0;
    }
    if ((c & 0xf0) == 0x90) {
        h->t = H_ARRAY, h->n = c & 0x0f;
        return 0;
    }
    if ((c & 0xe0) == 0xa0) {
        h->t = H_STR, h->n = c & 0x1f;
        return 0;
    }
    switch (c) {
    case 0xc0:
        h->t = H_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        h->t = H_BOOL, h->b = c == 0xc3;
        return 0;
    case 0xc4: case 0xc5: case 0xc6:
        h->t = H_BIN;
        return rd_be(s, 1 << (c - 0xc4), &h->n);
    case 0xd9: case 0xda: case 0xdb:
        h->t = H_STR;
        return rd_be(s, 1 << (c - 0xd9), &h->n);
    case 0xdc: case 0xdd:
        h->t = H_ARRAY;
        return rd_be(s, c == 0xdc ? 2 : 4, &h->n);
    case 0xde: case 0xdf:
        h->t = H_MAP;
        return rd_be(s, c == 0xde ? 2 : 4, &h->n);
    case 0xca: {
        if ((rc = rd_be(s, 4, &v)))
            return rc;
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, 4);
        h->t = H_FLOAT, h->f = f;
        return 0;
    }
    case 0xcb:
        if ((rc = rd_be(s, 8, &v)))
            return rc;
        h->t = H_FLOAT;
        memcpy(&h->f, &v, 8);
        return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        h->t = H_UINT;
        return rd_be(s, 1 << (c - 0xcc), &h->n);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int nb = 1 << (c - 0xd0);
        if ((rc = rd_be(s, nb, &v)))
            return rc;
        h->t = H_INT;
        h->i = nb == 8 ? (int64_t)v : (int64_t)(v << (64 - 8 * nb)) >> (64 - 8 * nb);
        return 0;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        h->t = H_EXT, h->n = 1 + (1u << (c - 0xd4));
        return 0;
    case 0xc7: case 0xc8: case 0xc9:
        h->t = H_EXT;
        if ((rc = rd_be(s, 1 << (c - 0xc7), &h->n)))
            return rc;
        h->n += 1;
        return 0;
    default:
        return bad(s, ERR_FORMAT, "invalid msgpack byte 0x%02x", c);
    }
}

/* Bounds a declared length/count against what the frame can still hold. */
static int check_len(rec_instream *s, uint64_t n, uint64_t min_each, const char *what)
{
    if (n * (min_each ? min_each : 1) > s->frame_left || (min_each && n > s->lim.max_items))
        return bad(s, ERR_FORMAT, "%s declares %llu %s, more than the record holds", what,
                   (unsigned long long)n, min_each ? "items" : "bytes");
    return 0;
}

/* Reads a declared length of n bytes into a new 64-byte aligned buffer (+ extra zeroed bytes
 * after it).  A length is only bounded by the frame's content size, which is hostile input
 * too (or 64 GiB when the header has none), so the buffer never runs more than
 * REC_ALLOC_AHEAD bytes ahead of the bytes actually decompressed: a tiny frame that declares
 * a 4 GiB field fails after a 16 MiB allocation.  Growth is by realloc (mremap for large
 * blocks, so no copy) with an aligned copy when realloc loses the alignment. */
#define REC_ALLOC_AHEAD ((size_t)16 << 20)
static int rd_alloc(rec_instream *s, uint64_t n, size_t extra, uint8_t **out)
{
    *out = NULL;
    size_t cap = n < REC_ALLOC_AHEAD ? (size_t)n : REC_ALLOC_AHEAD, have = 0;
    uint8_t *p = aligned_alloc64(cap + extra);
    if (!p)
        return bad(s, ERR_INTERNAL, "out of memory for %zu bytes", cap + extra);
    for (;;) {
        int rc = rd(s, p + have, cap - have);
        if (rc) {
            aligned_free(p);
            return rc;
        }
        have = cap;
        if (have == n)
            break;
        size_t ncap = n - cap > cap ? 2 * cap : (size_t)n;
        uint8_t *q = realloc(p, ncap + extra);
        if (q && (uintptr_t)q % 64) {
            uint8_t *a = aligned_alloc64(ncap + extra);
            if (a)
                memcpy(a, q, have);
            free(q);
            q = a;
        } else if (!q)
            aligned_free(p);
        if (!q)
            return bad(s, ERR_INTERNAL, "out of memory for %zu bytes", ncap + extra);
        p = q;
        cap = ncap;
    }
    memset(p + n, 0, extra);
    *out = p;
    return 0;
}

static int skip_n(rec_instream *s, uint64_t n)
{
    uint8_t buf[4096];
    while (n) {
        size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
        int rc = rd(s, buf, k);
        if (rc)
            return rc;
        n -= k;
    }
    return 0;
}

/* Parses any value into v (meta); depth-limited. */
static int parse_value(rec_instream *s, mval *v, int depth);

static int parse_from_head(rec_instream *s, const head *h, mval *v, int depth)
{
    int rc;
    memset(v, 0, sizeof *v);
    if (depth > s->lim.max_depth)
        return bad(s, ERR_FORMAT, "nesting deeper than %d", s->lim.max_depth);
    switch (h->t) {
    case H_NIL:
        return 0;
    case H_BOOL:
        *v = mv_bool(h->b);
        return 0;
    case H_INT:
        *v = mv_int(h->i);
        return 0;
    case H_UINT:
        if (h->n > INT64_MAX)
            return bad(s, ERR_FORMAT, "integer %llu out of range", (unsigned long long)h->n);
        *v = mv_int((int64_t)h->n);
        return 0;
    case H_FLOAT:
        *v = mv_float(h->f);
        return 0;
    case H_STR:
    case H_BIN: {
        uint8_t *b;
        if ((rc = check_len(s, h->n, 0, "string")) || (rc = rd_alloc(s, h->n, 1, &b)))
            return rc;
        char *p = (char *)b; /* NUL-terminated by rd_alloc */
        if (h->t == H_STR && memchr(p, 0, h->n)) { /* C callers see strings as char * */
            free(p);
            return bad(s, ERR_FORMAT, "string contains a NUL byte");
        }
        v->type = MV_STR;
        v->u.str.s = p;
        v->u.str.len = h->n;
        return 0;
    }
    case H_ARRAY:
        if ((rc = check_len(s, h->n, 1, "array")))
            return rc;
        v->type = MV_ARRAY;
        for (uint64_t i = 0; i < h->n; i++) {
            mval e;
            if ((rc = parse_value(s, &e, depth + 1)) || (rc = mv_arr_push(v, &e))) {
                mv_clear(&e);
                mv_clear(v);
                return rc;
            }
        }
        return 0;
    case H_MAP:
        if ((rc = check_len(s, h->n, 2, "map")))
            return rc;
        v->type = MV_MAP;
        for (uint64_t i = 0; i < h->n; i++) {
            head kh;
            mval k = {0}, e = {0};
            if ((rc = rd_head(s, &kh)))
                goto fail;
            if (kh.t != H_STR && kh.t != H_BIN) {
                rc = bad(s, ERR_FORMAT, "map key is not a string");
                goto fail;
            }
            if ((rc = parse_from_head(s, &kh, &k, depth + 1)))
                goto fail;
            if (memchr(k.u.str.s, 0, k.u.str.len)) { /* would be cut short as a C string */
                rc = bad(s, ERR_FORMAT, "map key contains a NUL byte");
                goto fail;
            }
            if ((rc = parse_value(s, &e, depth + 1)) || (rc = mv_map_put(v, k.u.str.s, &e)))
                goto fail;
            mv_clear(&k);
            continue;
        fail:
            mv_clear(&k);
            mv_clear(&e);
            mv_clear(v);
            return rc;
        }
        return 0;
    case H_EXT:
        return bad(s, ERR_FORMAT, "msgpack extension types are not allowed");
    }
    return bad(s, ERR_FORMAT, "unexpected msgpack type");
}

static int parse_value(rec_instream *s, mval *v, int depth)
{
    head h;
    memset(v, 0, sizeof *v); /* callers mv_clear it on error, also when rd_head fails */
    int rc = rd_head(s, &h);
    return rc ? rc : parse_from_head(s, &h, v, depth);
}

/* Skips one value without allocating. */
static int skip_value(rec_instream *s, int depth)
{
    head h;
    int rc = rd_head(s, &h);
    if (rc)
        return rc;
    if (depth > s->lim.max_depth)
        return bad(s, ERR_FORMAT, "nesting deeper than %d", s->lim.max_depth);
    switch (h.t) {
    case H_STR:
    case H_BIN:
    case H_EXT:
        if ((rc = check_len(s, h.n, 0, "value")))
            return rc;
        return skip_n(s, h.n);
    case H_ARRAY:
    case H_MAP: {
        uint64_t n = h.t == H_MAP ? 2 * h.n : h.n;
        if ((rc = check_len(s, n, 1, "container")))
            return rc;
        for (uint64_t i = 0; i < n; i++)
            if ((rc = skip_value(s, depth + 1)))
                return rc;
        return 0;
    }
    default:
        return 0;
    }
}

/* Reads a string (or bin) key into buf (NUL-terminated); longer keys are an error. */
static int rd_key(rec_instream *s, char *buf, size_t cap, const char *what)
{
    head h;
    int rc = rd_head(s, &h);
    if (rc)
        return rc;
    if (h.t != H_STR && h.t != H_BIN)
        return bad(s, ERR_FORMAT, "%s is not a string", what);
    if (h.n >= cap)
        return bad(s, ERR_FORMAT, "%s is %llu bytes long (at most %zu)", what,
                   (unsigned long long)h.n, cap - 1);
    if ((rc = rd(s, buf, h.n)))
        return rc;
    buf[h.n] = 0;
    if (memchr(buf, 0, h.n))
        return bad(s, ERR_FORMAT, "%s contains a NUL byte", what);
    return 0;
}

static int parse_tensor(rec_instream *s, tensor *t)
{
    head h;
    int rc = rd_head(s, &h);
    if (rc)
        return rc;
    if (h.t != H_MAP || h.n > 16)
        return bad(s, ERR_FORMAT, "a tensor must be a msgpack-numpy map");
    bool have_nd = false, have_type = false, have_shape = false, have_data = false;
    char key[16], tbuf[16];
    int dt = -1;
    for (uint64_t i = 0; i < h.n; i++) {
        if ((rc = rd_key(s, key, sizeof key, "tensor key")))
            return rc;
        head v;
        if ((rc = rd_head(s, &v)))
            return rc;
        if (strcmp(key, "nd") == 0) {
            if (v.t != H_BOOL || !v.b)
                return bad(s, ERR_FORMAT, "\"nd\" must be true");
            have_nd = true;
        } else if (strcmp(key, "type") == 0 || strcmp(key, "kind") == 0) {
            if (v.t != H_STR && v.t != H_BIN)
                return bad(s, ERR_FORMAT, "\"%s\" must be a string", key);
            if (v.n >= sizeof tbuf)
                return bad(s, ERR_FORMAT, "unknown dtype (longer than 15 bytes)");
            if ((rc = rd(s, tbuf, v.n)))
                return rc;
            if (key[0] == 't') {
                dt = dtype_parse(tbuf, v.n);
                if (dt < 0)
                    return bad(s, ERR_FORMAT, "unknown dtype '%.*s' (fedsm reads <f4 <f2 <i4 <i8 |u1)",
                               (int)v.n, tbuf);
                have_type = true;
            } else if (v.n != 0)
                return bad(s, ERR_FORMAT, "non-empty numpy \"kind\" (structured dtypes are not allowed)");
        } else if (strcmp(key, "shape") == 0) {
            if (v.t != H_ARRAY)
                return bad(s, ERR_FORMAT, "\"shape\" must be an array");
            if (v.n > TENSOR_MAX_DIMS)
                return bad(s, ERR_FORMAT, "%llu dims (at most %d)", (unsigned long long)v.n,
                           TENSOR_MAX_DIMS);
            t->ndim = (int)v.n;
            for (int d = 0; d < t->ndim; d++) {
                head e;
                if ((rc = rd_head(s, &e)))
                    return rc;
                if (e.t == H_UINT && e.n <= INT64_MAX)
                    t->shape[d] = (int64_t)e.n;
                else if (e.t == H_INT && e.i >= 0)
                    t->shape[d] = e.i;
                else
                    return bad(s, ERR_FORMAT, "shape entry %d is not a non-negative integer", d);
            }
            have_shape = true;
        } else if (strcmp(key, "data") == 0) {
            if (v.t != H_BIN && v.t != H_STR)
                return bad(s, ERR_FORMAT, "\"data\" must be bin");
            if (have_data)
                return bad(s, ERR_FORMAT, "\"data\" given twice");
            uint8_t *d;
            if ((rc = check_len(s, v.n, 0, "data")) || (rc = rd_alloc(s, v.n, 0, &d)))
                return rc;
            t->data = d;
            t->owned = true;
            t->nbytes = (size_t)v.n;
            have_data = true;
        } else {
            return bad(s, ERR_FORMAT, "unknown tensor key \"%s\"", key);
        }
    }
    if (!have_nd || !have_type || !have_shape || !have_data)
        return bad(s, ERR_FORMAT, "tensor map lacks %s", !have_nd     ? "\"nd\""
                                                         : !have_type  ? "\"type\""
                                                         : !have_shape ? "\"shape\""
                                                                       : "\"data\"");
    t->dtype = (dtype_t)dt;
    int64_t nb = shape_bytes(t->ndim, t->shape, dtype_size(t->dtype));
    char sh[128];
    shape_text(t->ndim, t->shape, sh, sizeof sh);
    if (nb < 0)
        return bad(s, ERR_FORMAT, "shape %s overflows", sh);
    if ((uint64_t)nb != t->nbytes)
        return bad(s, ERR_FORMAT, "shape %s of %s needs %lld bytes but data has %zu", sh,
                   dtype_str(t->dtype), (long long)nb, t->nbytes);
    return 0;
}

static int parse_record(rec_instream *s, record *r)
{
    head h;
    int rc = rd_head(s, &h);
    if (rc)
        return rc;
    if (h.t != H_MAP || h.n > 64)
        return bad(s, ERR_FORMAT, "a record must be a msgpack map");
    int64_t version = -1;
    bool have_kind = false;
    char key[32];
    for (uint64_t i = 0; i < h.n; i++) {
        s->field[0] = 0;
        if ((rc = rd_key(s, key, sizeof key, "record key")))
            return rc;
        snprintf(s->field, sizeof s->field, "%s", key);
        if (strcmp(key, "fedsm") == 0) {
            head v;
            if ((rc = rd_head(s, &v)))
                return rc;
            if (v.t != H_UINT && v.t != H_INT)
                return bad(s, ERR_FORMAT, "format version is not an integer");
            version = v.t == H_UINT && v.n < 1000 ? (int64_t)v.n : 0;
            if (version != FEDSM_FORMAT_VERSION)
                return bad(s, ERR_FORMAT,
                           "format version %lld is not supported (this fedsm reads version %d); "
                           "upgrade fedsm or re-create the file",
                           v.t == H_UINT ? (long long)v.n : (long long)v.i, FEDSM_FORMAT_VERSION);
        } else if (strcmp(key, "kind") == 0) {
            if ((rc = rd_key(s, r->kind, sizeof r->kind, "kind")))
                return rc;
            for (char *p = r->kind; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || *p == '_' || *p == '-' || (*p >= '0' && *p <= '9')))
                    return bad(s, ERR_FORMAT, "kind '%s' is not a lower-case name", r->kind);
            have_kind = true;
        } else if (strcmp(key, "meta") == 0) {
            mval m;
            if ((rc = parse_value(s, &m, 1)))
                return rc;
            if (m.type != MV_MAP) {
                mv_clear(&m);
                return bad(s, ERR_FORMAT, "meta must be a map");
            }
            mv_clear(r->meta);
            *r->meta = m;
        } else if (strcmp(key, "tensors") == 0) {
            head th;
            if ((rc = rd_head(s, &th)))
                return rc;
            if (th.t != H_MAP)
                return bad(s, ERR_FORMAT, "tensors must be a map");
            if (th.n > (uint64_t)s->lim.max_tensors)
                return bad(s, ERR_FORMAT, "%llu tensors (at most %d)", (unsigned long long)th.n,
                           s->lim.max_tensors);
            if ((rc = check_len(s, th.n, 2, "tensors")))
                return rc;
            for (uint64_t k = 0; k < th.n; k++) {
                char name[TENSOR_NAME_MAX];
                if ((rc = rd_key(s, name, sizeof name, "tensor name")))
                    return rc;
                snprintf(s->field, sizeof s->field, "tensors.%s", name);
                tensor *t = rec_slot(r, name);
                if (!t)
                    return bad(s, ERR_FORMAT, "%s", err_msg());
                r->n_tensors++; /* owned from now on, freed with r even on error */
                if ((rc = parse_tensor(s, t)))
                    return rc;
            }
        } else {
            if ((rc = skip_value(s, 1)))
                return rc;
        }
    }
    s->field[0] = 0;
    if (version < 0)
        return bad(s, ERR_FORMAT, "not a fedsm record (no \"fedsm\" version key)");
    if (!have_kind)
        return bad(s, ERR_FORMAT, "no \"kind\"");
    return 0;
}

/* Reads (and drops) a zstd skippable frame: 4-byte magic, 4-byte little-endian size, that
 * many bytes of user data.  zstd's own tools pass over them, and so do we: they hold no
 * record and do not count as one (docs/format.md).  0 ok, < 0 error. */
static int skip_skippable(rec_instream *s)
{
    if (s->in_len - s->in_pos < 8)
        return bad(s, ERR_FORMAT, "truncated stream: a zstd skippable frame's header is cut short");
    const uint8_t *m = s->in + s->in_pos + 4;
    uint64_t left = (uint64_t)m[0] | (uint64_t)m[1] << 8 | (uint64_t)m[2] << 16 |
                    (uint64_t)m[3] << 24;
    uint64_t size = left;
    s->in_pos += 8;
    while (left) {
        if (s->in_pos == s->in_len) {
            int rc = refill(s);
            if (rc)
                return rc;
            if (s->in_pos == s->in_len && s->in_eof)
                return bad(s, ERR_FORMAT,
                           "truncated stream: a zstd skippable frame of %llu bytes ends early",
                           (unsigned long long)size);
        }
        size_t take = s->in_len - s->in_pos;
        if (take > left)
            take = (size_t)left;
        s->in_pos += take;
        left -= take;
    }
    return 0;
}

/* Starts a frame: reads its header for the content size bound, passing over skippable
 * frames.  Returns 1 when a frame starts, 0 at clean end of input. */
static int frame_begin(rec_instream *s)
{
next:
    while (s->in_len - s->in_pos < 18 /* ZSTD_FRAMEHEADERSIZE_MAX */ && !s->in_eof) {
        size_t before = s->in_len - s->in_pos;
        int rc = refill(s);
        if (rc)
            return rc;
        if (s->in_len - s->in_pos == before && s->in_eof)
            break;
    }
    size_t avail = s->in_len - s->in_pos;
    if (avail == 0)
        return 0;
    if (avail >= 4) {
        const uint8_t *m = s->in + s->in_pos;
        uint32_t magic = (uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 |
                         (uint32_t)m[3] << 24;
        if ((magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START) {
            int rc = skip_skippable(s);
            if (rc)
                return rc;
            goto next;
        }
    }
    unsigned long long cs = ZSTD_getFrameContentSize(s->in + s->in_pos, avail);
    if (cs == ZSTD_CONTENTSIZE_ERROR) {
        if (avail < 4)
            return bad(s, ERR_FORMAT, "truncated stream (%zu stray bytes at the end)", avail);
        const uint8_t *m = s->in + s->in_pos;
        uint32_t magic = (uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 |
                         (uint32_t)m[3] << 24;
        if (magic != ZSTD_MAGICNUMBER)
            return bad(s, ERR_FORMAT,
                       "not a zstd frame (bad magic); is this a fedsm .mpk.zst stream?");
        return bad(s, ERR_FORMAT, "%s zstd frame header", s->in_eof ? "truncated" : "corrupt");
    }
    if (cs == ZSTD_CONTENTSIZE_UNKNOWN)
        s->frame_left = s->lim.max_record_bytes;
    else if (cs > s->lim.max_record_bytes)
        return bad(s, ERR_FORMAT, "record of %llu bytes exceeds the limit of %llu bytes", cs,
                   (unsigned long long)s->lim.max_record_bytes);
    else
        s->frame_left = cs;
    s->frame_done = false;
    s->out_pos = s->out_len = 0;
    ZSTD_DCtx_reset(s->dctx, ZSTD_reset_session_only);
    return 1;
}

/* After a record: the frame must end exactly here. */
static int frame_end(rec_instream *s)
{
    if (s->out_pos != s->out_len)
        return bad(s, ERR_FORMAT, "trailing bytes after the record inside its frame");
    while (!s->frame_done) {
        uint8_t b[16];
        long got = inflate(s, b, sizeof b, 1);
        if (got < 0)
            return (int)got;
        if (got > 0)
            return bad(s, ERR_FORMAT, "trailing bytes after the record inside its frame");
    }
    return 0;
}

int rec_instream_next(rec_instream *s, record **out)
{
    *out = NULL;
    s->field[0] = 0;
    int rc = frame_begin(s);
    if (rc <= 0)
        return rc;
    record *r = rec_new("");
    if (!r)
        return err_set(ERR_INTERNAL, "out of memory");
    snprintf(r->src, sizeof r->src, "%s", s->name);
    r->index = s->count;
    rc = parse_record(s, r);
    if (!rc)
        rc = frame_end(s);
    if (rc) {
        rec_free(r);
        return rc;
    }
    s->count++;
    *out = r;
    return 1;
}

typedef struct memsrc {
    const uint8_t *p;
    size_t len, pos;
} memsrc;

static long mem_read(void *ctx, void *buf, size_t cap)
{
    memsrc *m = ctx;
    size_t n = m->len - m->pos < cap ? m->len - m->pos : cap;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    return (long)n;
}

record *rec_decode_mem(const void *buf, size_t len, const rec_limits *lim, const char *name,
                       long index)
{
    memsrc m = {buf, len, 0};
    rec_instream *s = rec_instream_new(mem_read, &m, name, lim);
    if (!s) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->count = index;
    record *r = NULL;
    int rc = rec_instream_next(s, &r);
    if (rc == 0)
        bad(s, ERR_FORMAT, "empty message (no zstd frame holding a record)");
    else if (rc == 1) {
        /* exactly one record frame (skippable frames around it are passed over) */
        if (frame_begin(s) != 0) {
            rec_free(r);
            r = NULL;
            s->count = index; /* name the record just read, not the next one */
            bad(s, ERR_FORMAT, "trailing bytes after the record's frame");
        }
    }
    rec_instream_free(s);
    return rc == 1 ? r : NULL;
}
