/* test_record.c - unit tests of the record codec, meta trees and file endpoints (record.h,
 * endpoint.h): round trips of every dtype through memory and files, scalars, empty and many
 * tensors, meta of every value type, rec_get checks and messages, end records, concatenated
 * streams, borrowed/owned/copied tensors, alignment, raw msgpack edge cases, limits, digests;
 * end counts in both directions, keys at and one byte over every key buffer, zstd skippable
 * frames, stale temporaries of killed writers, and where-messages (no empty stream name, no
 * "record -1").  References: the formulas of testgen.h and hand-written msgpack bytes. */
#include "endpoint.h"
#include "err.h"
#include "sha256.h"
#include "testgen.h"
#include "testlib.h"

#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

static char dir[64];
static char why[256];

static char *path(const char *name)
{
    static char buf[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static record *roundtrip(const record *r)
{
    void *buf = NULL;
    size_t len = 0;
    if (rec_encode_mem(r, 3, &buf, &len))
        return NULL;
    record *o = rec_decode_mem(buf, len, NULL, "mem", 0);
    free(buf);
    return o;
}

/* One zstd frame of raw bytes; content_size 0 leaves it out of the header (as streaming
 * compressors do). */
static void *zframe(const void *raw, size_t n, int content_size, size_t *len)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, content_size);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    size_t cap = ZSTD_compressBound(n);
    void *out = malloc(cap);
    *len = ZSTD_compress2(c, out, cap, raw, n);
    ZSTD_freeCCtx(c);
    return out;
}

static record *decode_raw(const char *raw, size_t n, int content_size)
{
    size_t len;
    void *f = zframe(raw, n, content_size, &len);
    record *r = rec_decode_mem(f, len, NULL, "raw", 7);
    free(f);
    return r;
}

static void write_file(const char *p, const void *d, size_t n)
{
    FILE *f = fopen(p, "wb");
    fwrite(d, 1, n, f);
    fclose(f);
}

static void *read_file(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *d = malloc(*n + 1);
    *n = fread(d, 1, *n, f);
    fclose(f);
    return d;
}

static int no_tmp_files(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int bad = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp."))
            bad++;
    closedir(d);
    return bad == 0;
}

static void test_dtypes_memory(void)
{
    for (size_t huge = 0; huge <= 300000; huge += 300000) { /* 300 kB: the direct-read path */
        record *r = tg_make(2, 5, huge);
        CHECK(r);
        record *o = roundtrip(r);
        CHECK_MSG(o, "%s", err_msg());
        if (o) {
            CHECK_MSG(tg_check(o, huge, why, sizeof why) == 0, "%s", why);
            CHECK(strcmp(o->src, "mem") == 0 && o->index == 0);
        }
        rec_free(o);
        rec_free(r);
    }
}

static void test_dtypes_files(void)
{
    rec_writer *w = ep_open_writer(path("a.mpk.zst"), NULL);
    CHECK(w);
    CHECK(access(path("a.mpk.zst"), F_OK) != 0); /* only the temp file exists until commit */
    for (int q = 0; q < 3; q++) {
        record *r = tg_make(1, q, q == 1 ? 200000 : 0);
        CHECK(rec_write(w, r) == 0);
        rec_free(r);
    }
    CHECK(rec_writer_close(w, true) == 0);
    CHECK(no_tmp_files());
    rec_reader *rd = ep_open_reader(path("a.mpk.zst"), NULL);
    CHECK(rd);
    record *r;
    int n = 0, rc;
    while ((rc = rec_read(rd, &r)) == 1) {
        CHECK_MSG(tg_check(r, n == 1 ? 200000 : 0, why, sizeof why) == 0, "%s", why);
        CHECK(r->index == n);
        n++;
        rec_free(r);
    }
    CHECK_MSG(rc == 0 && n == 3, "rc %d n %d: %s", rc, n, err_msg());
    CHECK(rec_read(rd, &r) == 0); /* stays at the end */
    rec_reader_close(rd);

    /* an aborted writer leaves nothing */
    w = ep_open_writer(path("b.mpk.zst"), NULL);
    record *x = tg_make(0, 0, 0);
    CHECK(rec_write(w, x) == 0);
    CHECK(rec_writer_close(w, false) == 0);
    CHECK(access(path("b.mpk.zst"), F_OK) != 0 && no_tmp_files());
    /* ep_write_one / ep_read_one */
    CHECK(ep_write_one(path("one.mpk.zst"), x, NULL) == 0);
    record *y = ep_read_one(path("one.mpk.zst"), "update", NULL);
    CHECK(y && tg_check(y, 0, why, sizeof why) == 0);
    rec_free(y);
    CHECK(ep_read_one(path("one.mpk.zst"), "model", NULL) == NULL);
    CHECK(strstr(err_msg(), "expected model, got update"));
    CHECK(ep_read_one(path("a.mpk.zst"), NULL, NULL) == NULL);
    CHECK(strstr(err_msg(), "more than one record"));
    rec_free(x);
    /* missing file and directory: I/O errors naming the path */
    CHECK(ep_open_reader(path("missing.mpk.zst"), NULL) == NULL && err_last() == ERR_IO);
    CHECK(strstr(err_msg(), "missing.mpk.zst"));
    CHECK(ep_open_reader(dir, NULL) == NULL && err_last() == ERR_IO);
    CHECK(strstr(err_msg(), "directory"));
    CHECK(ep_open_writer(dir, NULL) == NULL && err_last() == ERR_IO);
}

static void test_scalars_empty_many(void)
{
    record *r = rec_new("model");
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%04d", i);
        int ndim = i % 4;
        int64_t shape[3] = {i % 3, 2, i % 5 + 1}; /* i % 3 == 0: an empty tensor */
        dtype_t dt = (dtype_t)(i % DT_COUNT);
        uint8_t *p = rec_add_new(r, name, dt, ndim, shape);
        CHECK(p);
        const tensor *t = rec_find(r, name);
        for (size_t b = 0; b < t->nbytes; b++)
            p[b] = (uint8_t)(b * 31 + (size_t)i);
    }
    CHECK(r->n_tensors == N);
    record *o = roundtrip(r);
    CHECK_MSG(o && o->n_tensors == N, "%s", err_msg());
    for (int i = 0; o && i < N; i++) {
        const tensor *a = &r->tensors[i], *b = &o->tensors[i];
        CHECK(strcmp(a->name, b->name) == 0); /* stable order */
        CHECK(a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes);
        CHECK(memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0);
        CHECK(b->data && (uintptr_t)b->data % 64 == 0 && b->owned);
        CHECK(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0);
        CHECK(tensor_numel(b) * (int64_t)dtype_size(b->dtype) == (int64_t)b->nbytes);
        if (a->ndim == 0)
            CHECK(b->nbytes == dtype_size(b->dtype)); /* a scalar holds one element */
    }
    rec_free(o);
    rec_free(r);
}

static int mv_equal(const mval *a, const mval *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case MV_NIL: return 1;
    case MV_BOOL: return a->u.b == b->u.b;
    case MV_INT: return a->u.i == b->u.i;
    case MV_FLOAT: return memcmp(&a->u.f, &b->u.f, sizeof(double)) == 0; /* NaN, -0.0 too */
    case MV_STR:
        return a->u.str.len == b->u.str.len && memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0 &&
               b->u.str.s[b->u.str.len] == 0;
    case MV_ARRAY:
        if (a->u.arr.n != b->u.arr.n)
            return 0;
        for (size_t i = 0; i < a->u.arr.n; i++)
            if (!mv_equal(&a->u.arr.items[i], &b->u.arr.items[i]))
                return 0;
        return 1;
    case MV_MAP:
        if (a->u.map.n != b->u.map.n)
            return 0;
        for (size_t i = 0; i < a->u.map.n; i++)
            if (strcmp(a->u.map.keys[i], b->u.map.keys[i]) ||
                !mv_equal(&a->u.map.vals[i], &b->u.map.vals[i]))
                return 0;
        return 1;
    }
    return 0;
}

static void test_meta(void)
{
    record *r = rec_new("metrics");
    const int64_t ints[] = {0, -1, -32, -33, 127, 128, 255, 256, 65535, 65536, -129, -32769,
                            INT32_MAX, INT32_MIN, (int64_t)INT32_MAX + 1, INT64_MAX, INT64_MIN};
    const double fl[] = {0.0, -0.0, 1.5, -1e300, 1e-310, NAN, INFINITY, -INFINITY, 0.1};
    const char *strs[] = {"", "plain", TG_UTF8, "quote\"back\\slash", "tab\tnl\n"};
    CHECK(rec_set_ints(r, "ints", ints, sizeof ints / sizeof *ints) == 0);
    CHECK(rec_set_floats(r, "floats", fl, sizeof fl / sizeof *fl) == 0);
    CHECK(rec_set_strs(r, "strs", strs, sizeof strs / sizeof *strs) == 0);
    CHECK(rec_set_bool(r, "t", true) == 0 && rec_set_bool(r, "f", false) == 0);
    CHECK(rec_set_str(r, "long", "x") == 0);
    char big[5000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK(rec_set_str(r, "long", big) == 0); /* replaces */
    mval nil = {0}, empty_a = mv_array(), empty_m = mv_map();
    CHECK(mv_map_put(r->meta, "nil", &nil) == 0 && mv_map_put(r->meta, "ea", &empty_a) == 0 &&
          mv_map_put(r->meta, "em", &empty_m) == 0);
    mval deep = mv_int(42); /* 20 levels of alternating maps and arrays */
    for (int d = 0; d < 20; d++) {
        mval c = d % 2 ? mv_map() : mv_array();
        CHECK((d % 2 ? mv_map_put(&c, "k", &deep) : mv_arr_push(&c, &deep)) == 0);
        deep = c;
    }
    CHECK(mv_map_put(r->meta, "deep", &deep) == 0);
    mval many = mv_array();
    for (int i = 0; i < 70000; i++) { /* array32 on the wire */
        mval v = mv_int(i);
        mv_arr_push(&many, &v);
    }
    CHECK(mv_map_put(r->meta, "many", &many) == 0);
    mval copy;
    CHECK(mv_copy(&copy, r->meta) == 0 && mv_equal(&copy, r->meta));
    mv_clear(&copy);
    record *o = roundtrip(r);
    CHECK_MSG(o, "%s", err_msg());
    if (o) {
        CHECK(mv_equal(o->meta, r->meta));
        CHECK(strcmp(o->kind, "metrics") == 0 && o->n_tensors == 0);
        const char **s;
        size_t n;
        CHECK(rec_get_strs(o, "strs", &s, &n) == 0 && n == 5 && strcmp(s[2], TG_UTF8) == 0);
        free(s);
        CHECK(rec_get_strs(o, "ints", &s, &n) == ERR_FORMAT);
        int64_t i;
        double f;
        const char *str;
        CHECK(rec_get_int(o, "t", &i) == ERR_FORMAT);
        CHECK(strstr(err_msg(), "field meta.t") && strstr(err_msg(), "expected an integer"));
        CHECK(rec_get_int(o, "absent", &i) == ERR_FORMAT && strstr(err_msg(), "missing"));
        i = 5;
        CHECK(rec_opt_int(o, "absent", &i) == 0 && i == 5);
        CHECK(rec_opt_str(o, "long", &str) == 0 && strlen(str) == sizeof big - 1);
        CHECK(rec_get_float(o, "t", &f) == ERR_FORMAT);
        CHECK(rec_opt_float(o, "absent", &f) == 0);
    }
    rec_free(o);
    /* integral floats read as ints; NaN, inf and 2^63 do not (and are not UB) */
    CHECK(rec_set_float(r, "x", 3.0) == 0);
    int64_t i = 0;
    CHECK(rec_get_int(r, "x", &i) == 0 && i == 3);
    const double nonint[] = {NAN, INFINITY, -INFINITY, 0x1p63, -0x1p64, 2.5};
    for (size_t k = 0; k < sizeof nonint / sizeof *nonint; k++) {
        CHECK(rec_set_float(r, "x", nonint[k]) == 0);
        CHECK(rec_get_int(r, "x", &i) == ERR_FORMAT);
    }
    CHECK(rec_set_float(r, "x", -0x1p63) == 0);
    CHECK(rec_get_int(r, "x", &i) == 0 && i == INT64_MIN);
    CHECK(rec_set_int(r, "x", 7) == 0);
    double f = 0;
    CHECK(rec_get_float(r, "x", &f) == 0 && f == 7.0);
    char sum[64];
    mv_summary(r->meta, sum, sizeof sum);
    CHECK(strlen(sum) < sizeof sum && strncmp(sum, "ints=[17 items]", 15) == 0);
    rec_free(r);
}

static void test_rec_get(void)
{
    record *r = tg_make(0, 0, 0);
    record *o = roundtrip(r);
    int64_t ok[] = {3, 5}, any[] = {-1, 5}, wrong[] = {3, 6};
    CHECK(rec_get(o, "f4", DT_F32, 2, ok) && rec_get(o, "f4", DT_F32, 2, any) &&
          rec_get(o, "f4", DT_F32, 2, NULL));
    CHECK(!rec_get(o, "nope", DT_F32, 2, NULL) && err_last() == ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "missing tensor (mem, record 0, field tensors.nope)"), "%s",
              err_msg());
    CHECK(!rec_get(o, "f4", DT_I32, 2, ok));
    CHECK_MSG(strstr(err_msg(), "wrong dtype (mem, record 0, field tensors.f4): expected <i4, got <f4"),
              "%s", err_msg());
    CHECK(!rec_get(o, "f4", DT_F32, 2, wrong));
    CHECK_MSG(strstr(err_msg(), "field tensors.f4): expected [3,6], got [3,5]"), "%s", err_msg());
    int64_t any2[] = {-1, 6};
    CHECK(!rec_get(o, "f4", DT_F32, 2, any2));
    CHECK_MSG(strstr(err_msg(), "expected [*,6], got [3,5]"), "%s", err_msg());
    CHECK(!rec_get(o, "f4", DT_F32, 3, NULL));
    CHECK_MSG(strstr(err_msg(), "expected 3 dims, got [3,5]"), "%s", err_msg());
    CHECK(!rec_get(r, "f4", DT_F32, 1, NULL)); /* a built record names its kind */
    CHECK_MSG(strstr(err_msg(), "(update record, field tensors.f4)"), "%s", err_msg());
    CHECK(rec_remove(o, "f4") == 0 && rec_remove(o, "f4") == -1 && !rec_find(o, "f4"));
    CHECK(rec_find(o, "e") && o->n_tensors == 6);
    rec_free(o);
    rec_free(r);
}

static void test_end_records(void)
{
    /* end record counts that do not match: an error naming the stream */
    rec_writer *w = ep_open_writer(path("bad.mpk.zst"), NULL);
    record *r = tg_make(0, 0, 0), *e = rec_new("end");
    CHECK(rec_write(w, r) == 0);
    rec_set_int(e, "count", 2);
    CHECK(rec_write(w, e) == 0);
    CHECK(rec_writer_close(w, true) == 0);
    rec_reader *rd = ep_open_reader(path("bad.mpk.zst"), NULL);
    record *x;
    CHECK(rec_read(rd, &x) == 1);
    rec_free(x);
    CHECK(rec_read(rd, &x) == ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "bad.mpk.zst is incomplete: its end record counts 2 records, 1 read"),
              "%s", err_msg());
    rec_reader_close(rd);
    /* `cat a b`: two streams, each with its own end record, read as one */
    size_t na, nb;
    CHECK(ep_write_one(path("c1.mpk.zst"), r, NULL) == 0);
    w = ep_open_writer(path("c2.mpk.zst"), NULL);
    for (int q = 1; q < 4; q++) {
        record *y = tg_make(0, q, 0);
        rec_write(w, y);
        rec_free(y);
    }
    CHECK(rec_writer_close(w, true) == 0);
    char *a = read_file(path("c1.mpk.zst"), &na), *b = read_file(path("c2.mpk.zst"), &nb);
    char *ab = malloc(na + nb);
    memcpy(ab, a, na);
    memcpy(ab + na, b, nb);
    write_file(path("cat.mpk.zst"), ab, na + nb);
    rd = ep_open_reader(path("cat.mpk.zst"), NULL);
    int n = 0, rc;
    while ((rc = rec_read(rd, &x)) == 1) {
        int64_t seq = -1;
        CHECK(rec_get_int(x, "seq", &seq) == 0 && seq == n && x->index == n);
        CHECK_MSG(tg_check(x, 0, why, sizeof why) == 0, "%s", why);
        rec_free(x);
        n++;
    }
    CHECK_MSG(rc == 0 && n == 4, "rc %d n %d %s", rc, n, err_msg());
    rec_reader_close(rd);
    /* the same bytes cut short at a frame boundary inside the second stream (a lost end) */
    write_file(path("cut.mpk.zst"), ab, na + nb - 10);
    rd = ep_open_reader(path("cut.mpk.zst"), NULL);
    while ((rc = rec_read(rd, &x)) == 1)
        rec_free(x);
    CHECK(rc == ERR_FORMAT && strstr(err_msg(), "truncated"));
    rec_reader_close(rd);
    /* a single zstd frame per record: two frames are not one message */
    CHECK(rec_decode_mem(ab, na + nb, NULL, "msg", 3) == NULL && err_last() == ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "(stream msg, record 3): trailing bytes after the record's frame"),
              "%s", err_msg());
    CHECK(rec_decode_mem(ab, 0, NULL, "msg", 0) == NULL && strstr(err_msg(), "empty message"));
    free(a);
    free(b);
    free(ab);
    rec_free(e);
    rec_free(r);
}

/* More records than the end record declares (the other direction of the count check). */
static void test_end_count_over(void)
{
    rec_writer *w = ep_open_writer(path("over.mpk.zst"), NULL);
    record *e = rec_new("end");
    for (int q = 0; q < 3; q++) {
        record *y = tg_make(0, q, 0);
        CHECK(rec_write(w, y) == 0);
        rec_free(y);
    }
    rec_set_int(e, "count", 2);
    CHECK(rec_write(w, e) == 0);
    CHECK(rec_writer_close(w, true) == 0);
    rec_reader *rd = ep_open_reader(path("over.mpk.zst"), NULL);
    record *x;
    int n = 0, rc;
    while ((rc = rec_read(rd, &x)) == 1) {
        rec_free(x);
        n++;
    }
    CHECK_MSG(rc == ERR_FORMAT && n == 3 &&
                  strstr(err_msg(), "over.mpk.zst holds more records than it declares: its end "
                                    "record counts 2 records, 3 read") &&
                  !strchr(err_msg(), '\n'),
              "rc %d n %d: %s", rc, n, err_msg());
    rec_reader_close(rd);
    rec_free(e);
}

/* Appends the msgpack str header and bytes of an n-byte key of 'k's. */
static size_t put_key(uint8_t *b, size_t n)
{
    size_t at = 0;
    if (n < 32)
        b[at++] = (uint8_t)(0xa0 | n);
    else {
        b[at++] = 0xd9;
        b[at++] = (uint8_t)n;
    }
    memset(b + at, 'k', n);
    return at + n;
}

/* Keys of exactly the reader's buffer size and one byte over, in every fixed key buffer
 * (record key 32, kind 32, tensor name 128, tensor key 16, dtype string 16): the longest
 * that fits (size - 1, for the NUL) is read, size and size + 1 are refused with a message,
 * never written past the buffer. */
static void test_key_buffers(void)
{
    enum { REC_KEY, KIND, TNAME, TKEY, DTYPE };
    static const struct {
        int where;
        size_t cap;
        const char *fits; /* NULL: decodes; else the message the fitting key gives */
        const char *what;
    } cases[] = {
        {REC_KEY, 32, NULL, "record key"},
        {KIND, 32, NULL, "kind"},
        {TNAME, TENSOR_NAME_MAX, NULL, "tensor name"},
        {TKEY, 16, "unknown tensor key \"kkkkkkkkkkkkkkk\"", "tensor key"},
        {DTYPE, 16, "unknown dtype 'kkkkkkkkkkkkkkk'", "unknown dtype (longer than 15 bytes)"},
    };
#define LIT(s) (memcpy(b + at, s, sizeof s - 1), at += sizeof s - 1)
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (size_t n = cases[c].cap - 1; n <= cases[c].cap + 1; n++) {
            uint8_t b[512];
            size_t at = 0;
            int w = cases[c].where;
            b[at++] = w == REC_KEY ? 0x85 : 0x84;
            LIT("\xa5" "fedsm\x01\xa4kind");
            if (w == KIND)
                at += put_key(b + at, n);
            else
                LIT("\xa1x");
            LIT("\xa4meta\x80\xa7tensors\x81");
            if (w == TNAME)
                at += put_key(b + at, n);
            else
                LIT("\xa1w");
            b[at++] = 0x84;
            if (w == TKEY) {
                at += put_key(b + at, n);
                b[at++] = 0xc0;
            } else
                LIT("\xa2nd\xc3");
            LIT("\xa4type");
            if (w == DTYPE)
                at += put_key(b + at, n);
            else
                LIT("\xa3<f4");
            LIT("\xa5shape\x91\x01\xa4" "data\xc4\x04\0\0\x80\x3f");
            if (w == REC_KEY) {
                at += put_key(b + at, n);
                b[at++] = 0xc0;
            }
#undef LIT
            record *r = decode_raw((const char *)b, at, 1);
            if (n == cases[c].cap - 1 && !cases[c].fits) {
                const tensor *t = r ? rec_find(r, w == TNAME ? "" : "w") : NULL;
                if (w == TNAME && r)
                    t = r->n_tensors == 1 && strlen(r->tensors[0].name) == n ? &r->tensors[0] : NULL;
                CHECK_MSG(r && t && t->nbytes == 4 && ((float *)t->data)[0] == 1.0f &&
                              (w != KIND || strlen(r->kind) == n),
                          "%s of %zu bytes: %s", cases[c].what, n, err_msg());
            } else if (n == cases[c].cap - 1) {
                CHECK_MSG(!r && strstr(err_msg(), cases[c].fits), "%s of %zu bytes: %s",
                          cases[c].what, n, err_msg());
            } else {
                char want[96];
                if (w == DTYPE)
                    snprintf(want, sizeof want, "%s", cases[c].what);
                else
                    snprintf(want, sizeof want, "%s is %zu bytes long (at most %zu)",
                             cases[c].what, n, cases[c].cap - 1);
                CHECK_MSG(!r && err_last() == ERR_FORMAT && strstr(err_msg(), want) &&
                              strstr(err_msg(), "(stream raw, record 7"),
                          "%s of %zu bytes: %s", cases[c].what, n, err_msg());
            }
            rec_free(r);
        }
}

/* A zstd skippable frame: magic 0x184D2A5v, 4-byte LE size, size bytes. */
static size_t skippable(uint8_t *b, unsigned variant, uint32_t size)
{
    uint32_t magic = 0x184D2A50u + variant;
    for (int i = 0; i < 4; i++) {
        b[i] = (uint8_t)(magic >> 8 * i);
        b[4 + i] = (uint8_t)(size >> 8 * i);
    }
    memset(b + 8, 0xa5, size);
    return 8 + size;
}

/* Skippable frames hold no record: passed over (as `zstd -d` does) before, between and
 * after records, in files and in messages; a cut one is a truncated stream. */
static void test_skippable_frames(void)
{
    record *r = tg_make(1, 0, 0);
    void *f;
    size_t flen;
    CHECK(rec_encode_mem(r, 3, &f, &flen) == 0);
    record *e = rec_new("end");
    rec_set_int(e, "count", 2);
    void *ef;
    size_t eflen;
    CHECK(rec_encode_mem(e, 3, &ef, &eflen) == 0);
    uint8_t *b = malloc(3 * flen + 100000);
    size_t at = skippable(b, 0, 5);
    memcpy(b + at, f, flen), at += flen;
    at += skippable(b + at, 15, 0);
    at += skippable(b + at, 7, 70000); /* larger than the reader's input buffer */
    memcpy(b + at, f, flen), at += flen;
    memcpy(b + at, ef, eflen), at += eflen;
    at += skippable(b + at, 3, 9);
    write_file(path("skip.mpk.zst"), b, at);
    rec_reader *rd = ep_open_reader(path("skip.mpk.zst"), NULL);
    record *x;
    int n = 0, rc;
    while ((rc = rec_read(rd, &x)) == 1) {
        CHECK_MSG(tg_check(x, 0, why, sizeof why) == 0 && x->index == n, "%s", why);
        rec_free(x);
        n++;
    }
    CHECK_MSG(rc == 0 && n == 2, "rc %d n %d: %s", rc, n, err_msg());
    rec_reader_close(rd);
    /* cut inside the last skippable frame's data, then inside its header */
    for (size_t cut = 4; cut <= 12; cut += 8) {
        write_file(path("skipcut.mpk.zst"), b, at - cut);
        rd = ep_open_reader(path("skipcut.mpk.zst"), NULL);
        while ((rc = rec_read(rd, &x)) == 1)
            rec_free(x);
        CHECK_MSG(rc == ERR_FORMAT && strstr(err_msg(), "skipcut.mpk.zst") &&
                      strstr(err_msg(), "truncated stream: a zstd skippable frame") &&
                      !strstr(err_msg(), "record truncated"),
                  "cut %zu: %s", cut, err_msg());
        rec_reader_close(rd);
    }
    /* one message: skippable frames around one record frame are fine; alone, no record */
    at = skippable(b, 1, 3);
    memcpy(b + at, f, flen), at += flen;
    at += skippable(b + at, 2, 4);
    x = rec_decode_mem(b, at, NULL, "msg", 0);
    CHECK_MSG(x && tg_check(x, 0, why, sizeof why) == 0, "%s", x ? why : err_msg());
    rec_free(x);
    CHECK(!rec_decode_mem(b, 7, NULL, "msg", 0) && strstr(err_msg(), "skippable frame's header"));
    CHECK(!rec_decode_mem(b, skippable(b, 1, 3), NULL, "msg", 0) &&
          strstr(err_msg(), "(stream msg, record 0): empty message"));
    free(b);
    free(f);
    free(ef);
    rec_free(e);
    rec_free(r);
}

/* A SIGKILLed writer leaves NAME.tmp.PID: the next writer of NAME removes it when PID is
 * dead and the file is ours, and leaves everything else alone. */
static void test_stale_temporaries(void)
{
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    char n[48];
    const char *keep[] = {"x.mpk.zst.tmp.1", /* init: alive */
                          "y.mpk.zst.tmp.%d", /* another output's */
                          "x.mpk.zst.tmp.%dz", "x.mpk.zst.tmp.0%d", "x.mpk.zst.tmp.-%d",
                          "x.mpk.zst.tmp.%d99999999999", "x.mpk.zsttmp.%d"};
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) {
        snprintf(n, sizeof n, keep[i], (int)dead);
        write_file(path(n), "z", 1);
    }
    snprintf(n, sizeof n, "x.mpk.zst.tmp.%d", (int)dead);
    write_file(path(n), "stale", 5);
    char other[48];
    snprintf(other, sizeof other, "x.mpk.zst.tmp.%d", (int)dead + 1);
    bool foreign = false;
    if (geteuid() == 0 && kill(dead + 1, 0) != 0) { /* as root: a dead PID's file of another user */
        write_file(path(other), "z", 1);
        foreign = chown(path(other), 65534, 65534) == 0;
    }
    rec_writer *w = ep_open_writer(path("x.mpk.zst"), NULL);
    CHECK_MSG(w, "%s", err_msg());
    CHECK_MSG(access(path(n), F_OK) != 0, "stale %s not removed", n);
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) {
        char k[48];
        snprintf(k, sizeof k, keep[i], (int)dead);
        CHECK_MSG(access(path(k), F_OK) == 0, "%s removed", k);
        unlink(path(k));
    }
    if (foreign) {
        CHECK_MSG(access(path(other), F_OK) == 0, "another user's %s removed", other);
        unlink(path(other));
    }
    CHECK(rec_writer_close(w, true) == 0);
    CHECK(no_tmp_files());
    unlink(path("x.mpk.zst"));
}

/* No message names an empty stream or a record -1. */
static void test_origins(void)
{
    CHECK(!ep_open_reader("", NULL) && err_last() == ERR_USAGE &&
          strstr(err_msg(), "empty input endpoint"));
    CHECK(!ep_open_writer("", NULL) && err_last() == ERR_USAGE &&
          strstr(err_msg(), "empty output endpoint"));
    CHECK(ep_write_one("", NULL, NULL) == ERR_USAGE);
    record *r = rec_new("model");
    char buf[300];
    CHECK(strcmp(rec_origin(r, buf, sizeof buf), "model record") == 0);
    int64_t v;
    CHECK(rec_get_int(r, "round", &v) == ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "(model record, field meta.round)"), "%s", err_msg());
    snprintf(r->src, sizeof r->src, "a.mpk.zst"); /* a source but no position */
    CHECK(strcmp(rec_origin(r, buf, sizeof buf), "stream a.mpk.zst") == 0);
    CHECK(!rec_get(r, "w", DT_F32, 1, NULL));
    CHECK_MSG(strstr(err_msg(), "(a.mpk.zst, field tensors.w)") && !strstr(err_msg(), "-1"),
              "%s", err_msg());
    r->index = 4;
    CHECK(strcmp(rec_origin(r, buf, sizeof buf), "stream a.mpk.zst, record 4") == 0);
    rec_free(r);
}

static void test_ownership(void)
{
    float *borrowed = malloc(4 * sizeof(float)), src[4] = {1, 2, 3, 4};
    memcpy(borrowed, src, sizeof src);
    float *owned = aligned_alloc64(4 * sizeof(float));
    memcpy(owned, src, sizeof src);
    int64_t shape[] = {4};
    record *r = rec_new("model");
    CHECK(rec_add(r, "b", DT_F32, 1, shape, borrowed, REC_BORROW) == 0);
    CHECK(rec_add(r, "o", DT_F32, 1, shape, owned, REC_OWN) == 0);
    CHECK(rec_add(r, "c", DT_F32, 1, shape, src, REC_COPY) == 0);
    CHECK(rec_add(r, "c", DT_F32, 1, shape, src, REC_COPY) < 0); /* unique names */
    int64_t neg[] = {-1};
    CHECK(rec_add(r, "n", DT_F32, 1, neg, src, REC_BORROW) < 0);
    CHECK(rec_add(r, "d", (dtype_t)9, 1, shape, src, REC_BORROW) < 0);
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(rec_add(r, longname, DT_F32, 1, shape, src, REC_BORROW) < 0);
    const tensor *b = rec_find(r, "b"), *o = rec_find(r, "o"), *c = rec_find(r, "c");
    CHECK(b->data == borrowed && !b->owned);
    CHECK(o->data == owned && o->owned);
    CHECK(c->data != src && c->owned && (uintptr_t)c->data % 64 == 0);
    /* nothing is copied for borrowed data: the encoder sees the caller's current values */
    borrowed[0] = 42;
    src[0] = 99;
    record *x = roundtrip(r);
    CHECK(x && ((float *)rec_find(x, "b")->data)[0] == 42);
    CHECK(x && ((float *)rec_find(x, "c")->data)[0] == 1);
    rec_free(x);
    rec_free(r); /* frees o and c, not b (ASan checks both ways) */
    CHECK(borrowed[3] == 4);
    free(borrowed);
    record *z = rec_new("model");
    CHECK(rec_add(z, "empty", DT_U8, 1, (int64_t[]){0}, NULL, REC_BORROW) == 0);
    x = roundtrip(z);
    CHECK(x && rec_find(x, "empty")->nbytes == 0 && rec_find(x, "empty")->data);
    rec_free(x);
    rec_free(z);
}

/* Raw msgpack: what Python and other writers may send. */
#define HDR "\x84\xa5" "fedsm\x01\xa4kind\xa5model\xa4meta"
static void test_raw(void)
{
    /* msgpack-numpy's bytes keys, "<u1", no content size in the frame header */
    static const char ok[] = HDR "\x80\xa7tensors\x81\xa1w\x85\xc4\x02nd\xc3\xc4\x04type\xa3<u1"
                                 "\xc4\x04kind\xc4\x00\xc4\x05shape\x92\x01\x02\xc4\x04" "data\xc4\x02\x07\x08";
    for (int cs = 0; cs < 2; cs++) {
        record *r = decode_raw(ok, sizeof ok - 1, cs);
        CHECK_MSG(r, "%s", err_msg());
        const tensor *t = r ? rec_get(r, "w", DT_U8, 2, (int64_t[]){1, 2}) : NULL;
        CHECK(t && ((uint8_t *)t->data)[1] == 8 && (uintptr_t)t->data % 64 == 0);
        rec_free(r);
    }
    /* unknown top-level keys are skipped (forward compatible within a version) */
    static const char extra[] = "\x85\xa5" "fedsm\x01\xa4kind\xa1x\xa5later\x92\x81\xa1k\xc4\x01z\xc0"
                                "\xa4meta\x80\xa7tensors\x80";
    record *r = decode_raw(extra, sizeof extra - 1, 1);
    CHECK_MSG(r && strcmp(r->kind, "x") == 0, "%s", err_msg());
    rec_free(r);
    struct { const char *raw; size_t n; const char *msg; } bad[] = {
#define B(s, m) {s, sizeof s - 1, m}
        B(HDR "\x81\xa1u\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xa7tensors\x80", "out of range"),
        B(HDR "\x81\xa3" "a\0b\x01\xa7tensors\x80", "NUL"),
        B(HDR "\x81\xc4\x03" "a\0b\x01\xa7tensors\x80", "map key contains a NUL byte"),
        B(HDR "\x81\xa1s\xa3x\0y\xa7tensors\x80", "string contains a NUL byte"),
        B(HDR "\x81\xa1\n\xd4\x01\x02\xa7tensors\x80", "extension types"),
        B(HDR "\x80\xa7tensors\x81\xa2w\n\x80", "field tensors.w?): tensor map lacks"),
        B(HDR "\x80\xa7tensors\x81\xa1w\x85\xa2nd\xc3\xa4type\xa3<f4\xa4kind\xa0"
              "\xa5shape\x91\xcf\x40\0\0\0\0\0\0\0\xa4" "data\xc4\0", "overflows"),
        B(HDR "\x80\xa7tensors\x81\xa1w\x85\xa2nd\xc3\xa4type\xa3<f8\xa4kind\xa0"
              "\xa5shape\x91\x01\xa4" "data\xc4\x08\0\0\0\0\0\0\0\0", "unknown dtype '<f8'"),
        B("\x83\xa5" "fedsm\x02\xa4kind\xa1x\xa4meta\x80", "format version 2 is not supported"),
        B("\x82\xa4kind\xa1x\xa4meta\x80", "no \"fedsm\" version key"),
        B("\x81\xa5" "fedsm\x01", "no \"kind\""),
        B(HDR "\xc1", "invalid msgpack byte 0xc1"),
        B(HDR "\x80\xa7tensors\x80\xc0", "trailing bytes"),
        B(HDR "\x81\xa1s\xdb\xff\xff\xff\xf0xyz", "more than the record holds"),
        B(HDR "\x81\xa1" "a\x93\x01\x02\xc1", "0xc1"), /* bad element head (was a bad free) */
#undef B
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        for (int cs = 0; cs < 2; cs++) {
            r = decode_raw(bad[i].raw, bad[i].n, cs);
            const char *msg = bad[i].msg;
            if (!cs && strcmp(msg, "more than the record holds") == 0)
                msg = "truncated"; /* without a content size: found when data runs out */
            CHECK_MSG(!r && err_last() == ERR_FORMAT && strstr(err_msg(), msg) &&
                          strstr(err_msg(), "(stream raw, record 7") && !strchr(err_msg(), '\n'),
                      "case %zu cs %d: %s", i, cs, err_msg());
            rec_free(r);
        }
}

typedef struct sink_buf {
    uint8_t *p;
    size_t len;
} sink_buf;

static int collect(void *ctx, const void *b, size_t k)
{
    sink_buf *s = ctx;
    s->p = realloc(s->p, s->len + k);
    memcpy(s->p + s->len, b, k);
    s->len += k;
    return 0;
}

static void test_limits_and_digest(void)
{
    record *r = tg_make(3, 1, 0);
    void *buf;
    size_t len;
    CHECK(rec_encode_mem(r, 1, &buf, &len) == 0);
    rec_limits l;
    rec_limits_default(&l);
    l.max_tensors = 3;
    CHECK(!rec_decode_mem(buf, len, &l, "m", 0) && strstr(err_msg(), "7 tensors (at most 3)"));
    rec_limits_default(&l);
    l.max_depth = 2; /* meta.nested is {a: {b: [..]}} */
    CHECK(!rec_decode_mem(buf, len, &l, "m", 0) && strstr(err_msg(), "nesting deeper than 2"));
    rec_limits_default(&l);
    l.max_record_bytes = 100;
    CHECK(!rec_decode_mem(buf, len, &l, "m", 0) && strstr(err_msg(), "exceeds the limit"));
    rec_limits_default(&l);
    l.max_items = 2;
    CHECK(!rec_decode_mem(buf, len, &l, "m", 0) && strstr(err_msg(), "declares"));
    /* the digest is the SHA-256 of the uncompressed msgpack bytes */
    uint8_t dg[32], want[32];
    unsigned long long n = ZSTD_getFrameContentSize(buf, len);
    CHECK(n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN);
    void *raw = malloc(n);
    CHECK(ZSTD_decompress(raw, n, buf, len) == n);
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, raw, n);
    sha256_final(&c, want);
    sink_buf sb = {0};
    CHECK(rec_encode(r, 1, collect, &sb, dg) == 0);
    CHECK(memcmp(dg, want, 32) == 0);
    CHECK(sb.len == len && memcmp(sb.p, buf, len) == 0); /* deterministic */
    free(sb.p);
    free(raw);
    free(buf);
    rec_free(r);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/fedsm-test-record.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    test_dtypes_memory();
    test_dtypes_files();
    test_scalars_empty_many();
    test_meta();
    test_rec_get();
    test_end_records();
    test_end_count_over();
    test_key_buffers();
    test_skippable_frames();
    test_stale_temporaries();
    test_origins();
    test_ownership();
    test_raw();
    test_limits_and_digest();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd))
        return 1;
    TEST_MAIN_END();
}
