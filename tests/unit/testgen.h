/* testgen.h - deterministic test records shared by the unit tests and tests/helpers
 * (header only).  Record (client c, seq q) has key k = 1000*c + q and these tensors:
 *   f4 <f4 [3,5]   (i % 1000) * 0.25 - 100 + k
 *   f2 <f2 [7]     ((i + k) % 2048) - 1024           (exact in half precision)
 *   i4 <i4 [2,3,4] (i * 7 + k) % 100000 - 50000
 *   i8 <i8 [4]     (i + k) * 2^40 - 2^50
 *   u1 |u1 [10,10] (i * 13 + k) % 256
 *   s  <f4 []      k + 0.5
 *   e  <i4 [0,3]   (empty)
 *   huge |u1 [N]   (optional) bytes of splitmix64 seeded with k, little-endian
 * and meta {client, seq, name "rec-<k>", pi, neg -k-1, big INT64_MAX, small INT64_MIN,
 *   list [1,"two",3.5], nested {a: {b: [true, nil]}}, nan NaN, inf -inf, utf8 "ünï€😀"}.
 * tests/tools/gen.py holds the same formulas for Python. */
#ifndef FEDSM_TESTGEN_H
#define FEDSM_TESTGEN_H

#include "err.h"
#include "record.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define TG_UTF8 "\xc3\xbcn\xc3\xaf\xe2\x82\xac\xf0\x9f\x98\x80"

static inline uint64_t tg_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fills n pseudo-random bytes for key k starting at byte offset 0 (state in *st). */
static inline void tg_random_bytes(uint64_t *st, uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = tg_splitmix(st);
        memcpy(p + i, &v, 8); /* little-endian host */
    }
    if (i < n) {
        uint64_t v = tg_splitmix(st);
        memcpy(p + i, &v, n - i);
    }
}

/* Half bits of a small integer (|v| <= 2048). */
static inline uint16_t tg_half_of_int(int v)
{
    uint16_t sign = v < 0 ? 0x8000 : 0;
    unsigned m = (unsigned)(v < 0 ? -v : v);
    if (m == 0)
        return sign;
    int e = 0;
    while ((m >> (e + 1)) != 0)
        e++;
    return (uint16_t)(sign | (unsigned)(e + 15) << 10 | ((m << (10 - e)) & 0x3ff));
}

static inline double tg_f4(int64_t i, int64_t k) { return (double)(i % 1000) * 0.25 - 100 + (double)k; }
static inline int tg_f2(int64_t i, int64_t k) { return (int)((i + k) % 2048) - 1024; }
static inline int32_t tg_i4(int64_t i, int64_t k) { return (int32_t)((i * 7 + k) % 100000 - 50000); }
static inline int64_t tg_i8(int64_t i, int64_t k) { return (i + k) * (1LL << 40) - (1LL << 50); }
static inline uint8_t tg_u1(int64_t i, int64_t k) { return (uint8_t)((i * 13 + k) % 256); }

/* Builds record (client, seq) with an optional huge |u1 tensor of huge bytes. */
static inline record *tg_make(int64_t client, int64_t seq, size_t huge)
{
    int64_t k = 1000 * client + seq;
    record *r = rec_new("update");
    if (!r)
        return NULL;
    int64_t sf4[] = {3, 5}, sf2[] = {7}, si4[] = {2, 3, 4}, si8[] = {4}, su1[] = {10, 10},
            se[] = {0, 3};
    float *f4 = rec_add_new(r, "f4", DT_F32, 2, sf4);
    uint16_t *f2 = rec_add_new(r, "f2", DT_F16, 1, sf2);
    int32_t *i4 = rec_add_new(r, "i4", DT_I32, 3, si4);
    int64_t *i8 = rec_add_new(r, "i8", DT_I64, 1, si8);
    uint8_t *u1 = rec_add_new(r, "u1", DT_U8, 2, su1);
    float *s = rec_add_new(r, "s", DT_F32, 0, NULL);
    if (!f4 || !f2 || !i4 || !i8 || !u1 || !s || !rec_add_new(r, "e", DT_I32, 2, se)) {
        rec_free(r);
        return NULL;
    }
    for (int i = 0; i < 15; i++) f4[i] = (float)tg_f4(i, k);
    for (int i = 0; i < 7; i++) f2[i] = tg_half_of_int(tg_f2(i, k));
    for (int i = 0; i < 24; i++) i4[i] = tg_i4(i, k);
    for (int i = 0; i < 4; i++) i8[i] = tg_i8(i, k);
    for (int i = 0; i < 100; i++) u1[i] = tg_u1(i, k);
    *s = (float)k + 0.5f;
    if (huge) {
        int64_t sh[] = {(int64_t)huge};
        uint8_t *h = aligned_alloc64(huge);
        if (!h || rec_add(r, "huge", DT_U8, 1, sh, h, REC_OWN)) {
            aligned_free(h);
            rec_free(r);
            return NULL;
        }
        uint64_t st = (uint64_t)k;
        tg_random_bytes(&st, h, huge);
    }
    char name[64];
    snprintf(name, sizeof name, "rec-%lld", (long long)k);
    mval list = mv_array(), one = mv_int(1), two = mv_str("two"), three = mv_float(3.5);
    mv_arr_push(&list, &one);
    mv_arr_push(&list, &two);
    mv_arr_push(&list, &three);
    mval inner = mv_array(), t = mv_bool(true), nil = {0};
    mv_arr_push(&inner, &t);
    mv_arr_push(&inner, &nil);
    mval a = mv_map(), nested = mv_map();
    mv_map_put(&a, "b", &inner);
    mv_map_put(&nested, "a", &a);
    int rc = rec_set_int(r, "client", client) | rec_set_int(r, "seq", seq) |
             rec_set_str(r, "name", name) | rec_set_float(r, "pi", 3.141592653589793) |
             rec_set_int(r, "neg", -k - 1) | rec_set_int(r, "big", INT64_MAX) |
             rec_set_int(r, "small", INT64_MIN) | mv_map_put(r->meta, "list", &list) |
             mv_map_put(r->meta, "nested", &nested) | rec_set_float(r, "nan", NAN) |
             rec_set_float(r, "inf", -INFINITY) | rec_set_str(r, "utf8", TG_UTF8);
    if (rc) {
        rec_free(r);
        return NULL;
    }
    return r;
}

/* Checks record r against the formulas; huge: expected size of the huge tensor (0: none).
 * Returns 0, or 1 with a line in why. */
static inline int tg_check(const record *r, size_t huge, char *why, size_t len)
{
    int64_t client, seq, v;
    const char *s;
    double f;
#define TG_FAIL(...) do { snprintf(why, len, __VA_ARGS__); return 1; } while (0)
    if (rec_get_int(r, "client", &client) || rec_get_int(r, "seq", &seq))
        TG_FAIL("%s", err_msg());
    int64_t k = 1000 * client + seq;
    char name[64];
    snprintf(name, sizeof name, "rec-%lld", (long long)k);
    if (strcmp(r->kind, "update"))
        TG_FAIL("kind %s", r->kind);
    if (rec_get_str(r, "name", &s) || strcmp(s, name))
        TG_FAIL("meta.name");
    if (rec_get_float(r, "pi", &f) || f != 3.141592653589793)
        TG_FAIL("meta.pi");
    if (rec_get_int(r, "neg", &v) || v != -k - 1)
        TG_FAIL("meta.neg");
    if (rec_get_int(r, "big", &v) || v != INT64_MAX)
        TG_FAIL("meta.big");
    if (rec_get_int(r, "small", &v) || v != INT64_MIN)
        TG_FAIL("meta.small");
    if (rec_get_float(r, "nan", &f) || !isnan(f))
        TG_FAIL("meta.nan");
    if (rec_get_float(r, "inf", &f) || f != -INFINITY)
        TG_FAIL("meta.inf");
    if (rec_get_str(r, "utf8", &s) || strcmp(s, TG_UTF8))
        TG_FAIL("meta.utf8");
    const mval *l = mv_map_get(r->meta, "list");
    if (!l || l->type != MV_ARRAY || l->u.arr.n != 3 || l->u.arr.items[0].type != MV_INT ||
        l->u.arr.items[0].u.i != 1 || l->u.arr.items[1].type != MV_STR ||
        strcmp(l->u.arr.items[1].u.str.s, "two") || l->u.arr.items[2].type != MV_FLOAT ||
        l->u.arr.items[2].u.f != 3.5)
        TG_FAIL("meta.list");
    const mval *b = mv_map_get(mv_map_get(mv_map_get(r->meta, "nested"), "a"), "b");
    if (!b || b->type != MV_ARRAY || b->u.arr.n != 2 || b->u.arr.items[0].type != MV_BOOL ||
        !b->u.arr.items[0].u.b || b->u.arr.items[1].type != MV_NIL)
        TG_FAIL("meta.nested");
    int64_t sf4[] = {3, 5}, sf2[] = {7}, si4[] = {2, 3, 4}, si8[] = {4}, su1[] = {10, 10},
            se[] = {0, 3};
    const tensor *t;
    if (!(t = rec_get(r, "f4", DT_F32, 2, sf4)))
        TG_FAIL("%s", err_msg());
    for (int i = 0; i < 15; i++)
        if (((const float *)t->data)[i] != (float)tg_f4(i, k))
            TG_FAIL("f4[%d]", i);
    if (!(t = rec_get(r, "f2", DT_F16, 1, sf2)))
        TG_FAIL("%s", err_msg());
    for (int i = 0; i < 7; i++)
        if (((const uint16_t *)t->data)[i] != tg_half_of_int(tg_f2(i, k)))
            TG_FAIL("f2[%d]", i);
    if (!(t = rec_get(r, "i4", DT_I32, 3, si4)))
        TG_FAIL("%s", err_msg());
    for (int i = 0; i < 24; i++)
        if (((const int32_t *)t->data)[i] != tg_i4(i, k))
            TG_FAIL("i4[%d]", i);
    if (!(t = rec_get(r, "i8", DT_I64, 1, si8)))
        TG_FAIL("%s", err_msg());
    for (int i = 0; i < 4; i++)
        if (((const int64_t *)t->data)[i] != tg_i8(i, k))
            TG_FAIL("i8[%d]", i);
    if (!(t = rec_get(r, "u1", DT_U8, 2, su1)))
        TG_FAIL("%s", err_msg());
    for (int i = 0; i < 100; i++)
        if (((const uint8_t *)t->data)[i] != tg_u1(i, k))
            TG_FAIL("u1[%d]", i);
    if (!(t = rec_get(r, "s", DT_F32, 0, NULL)) || *(const float *)t->data != (float)k + 0.5f)
        TG_FAIL("s");
    if (!(t = rec_get(r, "e", DT_I32, 2, se)) || t->nbytes != 0 || !t->data)
        TG_FAIL("e");
    for (int i = 0; i < r->n_tensors; i++)
        if ((uintptr_t)r->tensors[i].data % 64)
            TG_FAIL("tensor %s not 64-byte aligned", r->tensors[i].name);
    t = rec_find(r, "huge");
    if (huge) {
        int64_t sh[] = {(int64_t)huge};
        if (!(t = rec_get(r, "huge", DT_U8, 1, sh)))
            TG_FAIL("%s", err_msg());
        uint64_t st = (uint64_t)k;
        const uint8_t *p = t->data;
        uint8_t buf[4096];
        for (size_t at = 0; at < huge; at += sizeof buf) {
            size_t n = huge - at < sizeof buf ? huge - at : sizeof buf;
            tg_random_bytes(&st, buf, n);
            if (memcmp(buf, p + at, n))
                TG_FAIL("huge differs near byte %zu", at);
        }
    } else if (t)
        TG_FAIL("unexpected huge tensor");
    if (r->n_tensors != 7 + (huge ? 1 : 0))
        TG_FAIL("%d tensors", r->n_tensors);
#undef TG_FAIL
    return 0;
}

#endif
