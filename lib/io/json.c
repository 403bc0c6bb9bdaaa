/* json.c - the small JSON reader of json.h.  Recursive descent over a length-bounded
 * buffer; every read checks the end first.  Follows RFC 8259 (strict: no comments, no
 * trailing commas, no NaN). */
#include "utf8.h"
#include "json.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t n, pos;
    const char *what;
} jp;

static int jp_fail(jp *p, const char *why)
{
    return err_set(ERR_FORMAT, "%s: bad JSON at byte %zu: %s", p->what, p->pos, why);
}

static void jp_ws(jp *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int hex4(jp *p, unsigned *out)
{
    if (p->n - p->pos < 4)
        return jp_fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return jp_fail(p, "bad \\u escape");
    }
    *out = v;
    return 0;
}

/* At the opening quote.  Output is never longer than the input span. */
static int jp_string(jp *p, char **out, size_t *out_len)
{
    p->pos++;
    size_t start = p->pos, end = start;
    while (end < p->n && p->s[end] != '"') {
        if (p->s[end] == '\\') end++;
        end++;
    }
    if (end >= p->n)
        return jp_fail(p, "unterminated string");
    char *o = malloc(end - start + 1);
    if (!o)
        return err_set(ERR_INTERNAL, "out of memory");
    size_t k = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) { free(o); return jp_fail(p, "control character in string"); }
        if (c != '\\') { o[k++] = (char)c; p->pos++; continue; }
        p->pos++;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp)) { free(o); return ERR_FORMAT; }
            if (cp >= 0xD800 && cp < 0xDC00 && end - p->pos >= 6 && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                unsigned lo;
                p->pos += 2;
                if (hex4(p, &lo)) { free(o); return ERR_FORMAT; }
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else { free(o); return jp_fail(p, "bad surrogate pair"); }
            }
            k += utf8_put(o + k, cp);
            break;
        }
        default: free(o); return jp_fail(p, "bad escape");
        }
        if (p->pos > end) { free(o); return jp_fail(p, "bad escape"); }
    }
    o[k] = 0;
    p->pos = end + 1;
    *out = o;
    *out_len = k;
    return 0;
}

static int jp_value(jp *p, json *v, int depth);

static int push_item(json *v, size_t *cap)
{
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        json *ni = realloc(v->items, nc * sizeof *ni);
        if (!ni) return err_set(ERR_INTERNAL, "out of memory");
        v->items = ni;
        if (v->type == JSON_OBJ) {
            char **nk = realloc(v->keys, nc * sizeof *nk);
            if (!nk) return err_set(ERR_INTERNAL, "out of memory");
            v->keys = nk;
        }
        *cap = nc;
    }
    memset(&v->items[v->n], 0, sizeof v->items[0]);
    return 0;
}

static int jp_number(jp *p, json *v)
{
    size_t st = p->pos;
    if (p->pos < p->n && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return jp_fail(p, "bad number");
    if (p->s[p->pos] == '0') p->pos++;
    else while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    bool is_int = true;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        is_int = false;
        p->pos++;
        size_t d = p->pos;
        while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == d) return jp_fail(p, "bad number");
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        is_int = false;
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        size_t d = p->pos;
        while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == d) return jp_fail(p, "bad number");
    }
    char buf[64];
    size_t len = p->pos - st;
    if (len >= sizeof buf) return jp_fail(p, "number too long");
    memcpy(buf, p->s + st, len);
    buf[len] = 0;
    v->type = JSON_NUM;
    v->num = strtod(buf, NULL);
    if (is_int && len <= 18) {
        v->is_int = true;
        v->i = strtoll(buf, NULL, 10);
    }
    return 0;
}

static int jp_lit(jp *p, const char *lit)
{
    size_t l = strlen(lit);
    if (p->n - p->pos < l || memcmp(p->s + p->pos, lit, l)) return jp_fail(p, "unexpected token");
    p->pos += l;
    return 0;
}

static int jp_value(jp *p, json *v, int depth)
{
    if (depth > JSON_MAX_DEPTH) return jp_fail(p, "nested too deeply");
    jp_ws(p);
    if (p->pos >= p->n) return jp_fail(p, "unexpected end");
    char c = p->s[p->pos];
    if (c == '"') {
        v->type = JSON_STR;
        return jp_string(p, &v->str, &v->len);
    }
    if (c == 't') { v->type = JSON_BOOL; v->b = true; return jp_lit(p, "true"); }
    if (c == 'f') { v->type = JSON_BOOL; return jp_lit(p, "false"); }
    if (c == 'n') { v->type = JSON_NULL; return jp_lit(p, "null"); }
    if (c == '[' || c == '{') {
        bool obj = c == '{';
        v->type = obj ? JSON_OBJ : JSON_ARR;
        size_t cap = 0;
        p->pos++;
        jp_ws(p);
        if (p->pos < p->n && p->s[p->pos] == (obj ? '}' : ']')) { p->pos++; return 0; }
        for (;;) {
            int rc = push_item(v, &cap);
            if (rc) return rc;
            if (obj) {
                jp_ws(p);
                if (p->pos >= p->n || p->s[p->pos] != '"') return jp_fail(p, "expected a key");
                size_t kl;
                v->keys[v->n] = NULL;
                if ((rc = jp_string(p, &v->keys[v->n], &kl))) return rc;
                jp_ws(p);
                if (p->pos >= p->n || p->s[p->pos] != ':') {
                    free(v->keys[v->n]);
                    return jp_fail(p, "expected ':'");
                }
                p->pos++;
            }
            v->n++; /* counted now so json_free releases a partial item */
            if ((rc = jp_value(p, &v->items[v->n - 1], depth + 1))) return rc;
            jp_ws(p);
            if (p->pos >= p->n) return jp_fail(p, "unexpected end");
            if (p->s[p->pos] == ',') { p->pos++; continue; }
            if (p->s[p->pos] == (obj ? '}' : ']')) { p->pos++; return 0; }
            return jp_fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    return jp_number(p, v);
}

static void json_clear(json *j)
{
    free(j->str);
    for (size_t k = 0; k < j->n; k++) {
        json_clear(&j->items[k]);
        if (j->keys) free(j->keys[k]);
    }
    free(j->items);
    free(j->keys);
}

json *json_parse(const char *text, size_t len, const char *what)
{
    json *j = calloc(1, sizeof *j);
    if (!j) { err_set(ERR_INTERNAL, "out of memory"); return NULL; }
    jp p = {text, len, 0, what ? what : "JSON"};
    if (jp_value(&p, j, 0)) { json_free(j); return NULL; }
    jp_ws(&p);
    if (p.pos != p.n) { jp_fail(&p, "trailing characters"); json_free(j); return NULL; }
    return j;
}

void json_free(json *j)
{
    if (!j) return;
    json_clear(j);
    free(j);
}

const json *json_get(const json *j, const char *key)
{
    if (!j || j->type != JSON_OBJ) return NULL;
    for (size_t k = 0; k < j->n; k++)
        if (!strcmp(j->keys[k], key)) return &j->items[k];
    return NULL;
}

int json_get_int(const json *j, const char *key, int64_t *out)
{
    const json *v = json_get(j, key);
    if (!v || v->type != JSON_NUM || !v->is_int) return -1;
    *out = v->i;
    return 0;
}
