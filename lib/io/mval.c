/* mval.c - meta value trees (mval.h): building, copying, lookup, JSON and summaries.
 * Not the wire codec (record.c). */
#include "mval.h"

#include "err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mval mv_int(int64_t i) { return (mval){.type = MV_INT, .u.i = i}; }
mval mv_float(double f) { return (mval){.type = MV_FLOAT, .u.f = f}; }
mval mv_bool(bool b) { return (mval){.type = MV_BOOL, .u.b = b}; }
mval mv_array(void) { return (mval){.type = MV_ARRAY}; }
mval mv_map(void) { return (mval){.type = MV_MAP}; }

mval mv_str(const char *s)
{
    mval v = {.type = MV_STR};
    size_t n = strlen(s);
    v.u.str.s = malloc(n + 1);
    if (!v.u.str.s)
        return (mval){.type = MV_NIL};
    memcpy(v.u.str.s, s, n + 1);
    v.u.str.len = n;
    return v;
}

void mv_clear(mval *v)
{
    if (!v)
        return;
    switch (v->type) {
    case MV_STR:
        free(v->u.str.s);
        break;
    case MV_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            mv_clear(&v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case MV_MAP:
        for (size_t i = 0; i < v->u.map.n; i++) {
            free(v->u.map.keys[i]);
            mv_clear(&v->u.map.vals[i]);
        }
        free(v->u.map.keys);
        free(v->u.map.vals);
        break;
    default:
        break;
    }
    memset(v, 0, sizeof *v);
}

void mv_free(mval *v)
{
    mv_clear(v);
    free(v);
}

mval *mv_new_map(void)
{
    mval *m = calloc(1, sizeof *m);
    if (m)
        m->type = MV_MAP;
    return m;
}

int mv_copy(mval *dst, const mval *src)
{
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    switch (src->type) {
    case MV_STR:
        dst->u.str.s = malloc(src->u.str.len + 1);
        if (!dst->u.str.s)
            return err_set(ERR_INTERNAL, "out of memory");
        memcpy(dst->u.str.s, src->u.str.s, src->u.str.len + 1);
        dst->u.str.len = src->u.str.len;
        return 0;
    case MV_ARRAY:
        dst->u.arr.n = 0;
        for (size_t i = 0; i < src->u.arr.n; i++) {
            mval c;
            if (mv_copy(&c, &src->u.arr.items[i]) || mv_arr_push(dst, &c)) {
                mv_clear(dst);
                return ERR_INTERNAL;
            }
        }
        return 0;
    case MV_MAP:
        for (size_t i = 0; i < src->u.map.n; i++) {
            mval c;
            if (mv_copy(&c, &src->u.map.vals[i]) || mv_map_put(dst, src->u.map.keys[i], &c)) {
                mv_clear(dst);
                return ERR_INTERNAL;
            }
        }
        return 0;
    default:
        dst->u = src->u;
        return 0;
    }
}

const mval *mv_map_get(const mval *m, const char *key)
{
    if (!m || m->type != MV_MAP)
        return NULL;
    for (size_t i = 0; i < m->u.map.n; i++)
        if (strcmp(m->u.map.keys[i], key) == 0)
            return &m->u.map.vals[i];
    return NULL;
}

int mv_map_put(mval *m, const char *key, mval *v)
{
    if (m->type != MV_MAP)
        return err_set(ERR_INTERNAL, "mv_map_put on a non-map");
    for (size_t i = 0; i < m->u.map.n; i++)
        if (strcmp(m->u.map.keys[i], key) == 0) {
            mv_clear(&m->u.map.vals[i]);
            m->u.map.vals[i] = *v;
            memset(v, 0, sizeof *v);
            return 0;
        }
    if (m->u.map.n == m->u.map.cap) {
        size_t cap = m->u.map.cap ? 2 * m->u.map.cap : 8;
        char **k = realloc(m->u.map.keys, cap * sizeof *k);
        if (!k)
            return err_set(ERR_INTERNAL, "out of memory");
        m->u.map.keys = k;
        mval *nv = realloc(m->u.map.vals, cap * sizeof *nv);
        if (!nv)
            return err_set(ERR_INTERNAL, "out of memory");
        m->u.map.vals = nv;
        m->u.map.cap = cap;
    }
    char *kc = strdup(key);
    if (!kc)
        return err_set(ERR_INTERNAL, "out of memory");
    m->u.map.keys[m->u.map.n] = kc;
    m->u.map.vals[m->u.map.n++] = *v;
    memset(v, 0, sizeof *v);
    return 0;
}

int mv_arr_push(mval *a, mval *v)
{
    if (a->type != MV_ARRAY)
        return err_set(ERR_INTERNAL, "mv_arr_push on a non-array");
    if (a->u.arr.n == a->u.arr.cap) {
        size_t cap = a->u.arr.cap ? 2 * a->u.arr.cap : 8;
        mval *ni = realloc(a->u.arr.items, cap * sizeof *ni);
        if (!ni)
            return err_set(ERR_INTERNAL, "out of memory");
        a->u.arr.items = ni;
        a->u.arr.cap = cap;
    }
    a->u.arr.items[a->u.arr.n++] = *v;
    memset(v, 0, sizeof *v);
    return 0;
}

/* ---- text forms ---- */

static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void mv_write_json(const mval *v, void *fp)
{
    FILE *f = fp;
    switch (v->type) {
    case MV_NIL:
        fputs("null", f);
        break;
    case MV_BOOL:
        fputs(v->u.b ? "true" : "false", f);
        break;
    case MV_INT:
        fprintf(f, "%lld", (long long)v->u.i);
        break;
    case MV_FLOAT:
        if (isfinite(v->u.f)) {
            char b[32];
            snprintf(b, sizeof b, "%.15g", v->u.f);
            if (strtod(b, NULL) != v->u.f)
                snprintf(b, sizeof b, "%.17g", v->u.f);
            fputs(b, f);
        }
        else
            fputs("null", f);
        break;
    case MV_STR:
        json_str(f, v->u.str.s, v->u.str.len);
        break;
    case MV_ARRAY:
        fputc('[', f);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i)
                fputc(',', f);
            mv_write_json(&v->u.arr.items[i], f);
        }
        fputc(']', f);
        break;
    case MV_MAP:
        fputc('{', f);
        for (size_t i = 0; i < v->u.map.n; i++) {
            if (i)
                fputc(',', f);
            json_str(f, v->u.map.keys[i], strlen(v->u.map.keys[i]));
            fputc(':', f);
            mv_write_json(&v->u.map.vals[i], f);
        }
        fputc('}', f);
        break;
    }
}

/* Appends a short text form of v (long lists and strings elided) to buf. */
static void summ(const mval *v, char *buf, size_t len)
{
    size_t at = strlen(buf);
    if (at + 1 >= len)
        return;
    char *p = buf + at;
    size_t room = len - at;
    switch (v->type) {
    case MV_NIL:
        snprintf(p, room, "nil");
        break;
    case MV_BOOL:
        snprintf(p, room, "%s", v->u.b ? "true" : "false");
        break;
    case MV_INT:
        snprintf(p, room, "%lld", (long long)v->u.i);
        break;
    case MV_FLOAT:
        snprintf(p, room, "%g", v->u.f);
        break;
    case MV_STR:
        if (v->u.str.len > 40)
            snprintf(p, room, "\"%.37s...\"", v->u.str.s);
        else
            snprintf(p, room, "\"%s\"", v->u.str.s);
        break;
    case MV_ARRAY:
        if (v->u.arr.n > 4) {
            snprintf(p, room, "[%zu items]", v->u.arr.n);
            break;
        }
        snprintf(p, room, "[");
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i)
                strncat(buf, ",", len - strlen(buf) - 1);
            summ(&v->u.arr.items[i], buf, len);
        }
        strncat(buf, "]", len - strlen(buf) - 1);
        break;
    case MV_MAP:
        snprintf(p, room, "{%zu keys}", v->u.map.n);
        break;
    }
}

void mv_summary(const mval *m, char *buf, size_t len)
{
    if (!len)
        return;
    buf[0] = 0;
    if (!m || m->type != MV_MAP)
        return;
    for (size_t i = 0; i < m->u.map.n; i++) {
        size_t at = strlen(buf);
        if (at + 2 >= len)
            break;
        snprintf(buf + at, len - at, "%s%s=", i ? " " : "", m->u.map.keys[i]);
        summ(&m->u.map.vals[i], buf, len);
    }
}
