/* bpe.c - CLIP byte-level BPE (see bpe.h).  Sections: unicode helpers, clean-up,
 * vocabulary and merge tables (open-addressing hashes), BPE merge loop, pre-tokenizer. */
#include "utf8.h"
#include "bpe.h"

#include "err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bpe_unicode.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- unicode ---- */

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (c < r[m][0]) hi = m;
        else if (c > r[m][1]) lo = m + 1;
        else return true;
    }
    return false;
}
static bool is_letter(uint32_t c) { return in_ranges(bpe_letter_ranges, NELEM(bpe_letter_ranges), c); }
static bool is_number(uint32_t c) { return in_ranges(bpe_number_ranges, NELEM(bpe_number_ranges), c); }
static bool is_space(uint32_t c) { return in_ranges(bpe_space_ranges, NELEM(bpe_space_ranges), c); }

/* Writes lower(c) to out (1..3 code points); returns the count. */
static int to_lower(uint32_t c, uint32_t *out)
{
    for (size_t k = 0; k < NELEM(bpe_lower_special); k++)
        if (bpe_lower_special[k][0] == c) {
            int n = 0;
            for (int q = 1; q < 4 && bpe_lower_special[k][q]; q++) out[n++] = bpe_lower_special[k][q];
            return n;
        }
    size_t lo = 0, hi = NELEM(bpe_lower_runs);
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if ((int32_t)c < bpe_lower_runs[m][0]) hi = m;
        else if ((int32_t)c > bpe_lower_runs[m][1]) lo = m + 1;
        else {
            if (((int32_t)c - bpe_lower_runs[m][0]) % bpe_lower_runs[m][2] == 0) c = (uint32_t)((int32_t)c + bpe_lower_runs[m][3]);
            break;
        }
    }
    out[0] = c;
    return 1;
}

/* Decodes UTF-8; invalid bytes become U+FFFD (as Python's errors='replace' would). */
static uint32_t *utf8_decode(const char *s, size_t len, size_t *n_out)
{
    uint32_t *o = malloc((len + 1) * sizeof *o);
    if (!o) return NULL;
    size_t n = 0, i = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (i < len) {
        uint32_t c = p[i];
        int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (extra == 0) { o[n++] = c; i++; continue; }
        if (extra < 0 || i + (size_t)extra >= len) { o[n++] = 0xFFFD; i++; continue; }
        uint32_t v = c & (0x3Fu >> extra);
        bool ok = true;
        for (int k = 1; k <= extra && ok; k++) {
            ok = (p[i + (size_t)k] & 0xC0) == 0x80;
            v = v << 6 | (p[i + (size_t)k] & 0x3F);
        }
        if (!ok) { o[n++] = 0xFFFD; i++; continue; }
        o[n++] = v;
        i += (size_t)extra + 1;
    }
    *n_out = n;
    return o;
}

/* ---- clean-up: html unescape (subset), whitespace, lower ---- */

static bool cp_eq(const uint32_t *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n < l) return false;
    for (size_t k = 0; k < l; k++)
        if (s[k] != (unsigned char)lit[k]) return false;
    return true;
}

/* In place; returns the new length. */
static size_t html_unescape(uint32_t *s, size_t n)
{
    static const struct { const char *name; uint32_t cp; } ent[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''},
        {"&nbsp;", 0xA0},
    };
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] == '&') {
            bool done = false;
            for (size_t k = 0; k < NELEM(ent) && !done; k++)
                if (cp_eq(s + i, n - i, ent[k].name)) {
                    s[o++] = ent[k].cp;
                    i += strlen(ent[k].name);
                    done = true;
                }
            if (!done && i + 2 < n && s[i + 1] == '#') {
                size_t j = i + 2;
                bool hex = j < n && (s[j] == 'x' || s[j] == 'X');
                if (hex) j++;
                uint32_t v = 0;
                size_t d0 = j;
                while (j < n && j - d0 < 7 &&
                       ((s[j] >= '0' && s[j] <= '9') ||
                        (hex && ((s[j] | 32) >= 'a' && (s[j] | 32) <= 'f')))) {
                    uint32_t dv = s[j] <= '9' ? s[j] - '0' : (s[j] | 32) - 'a' + 10;
                    v = v * (hex ? 16 : 10) + dv;
                    j++;
                }
                if (j > d0 && j < n && s[j] == ';' && v > 0 && v < 0x110000 &&
                    !(v >= 0xD800 && v < 0xE000)) {
                    s[o++] = v;
                    i = j + 1;
                    done = true;
                }
            }
            if (done) continue;
        }
        s[o++] = s[i++];
    }
    return o;
}

/* whitespace_clean(basic_clean(text)).lower() on code points; returns owned array. */
static uint32_t *clean_text(const char *text, size_t *n_out)
{
    size_t n;
    uint32_t *s = utf8_decode(text, strlen(text), &n);
    if (!s) return NULL;
    n = html_unescape(s, n);
    n = html_unescape(s, n);
    uint32_t *o = malloc((3 * n + 1) * sizeof *o);
    if (!o) { free(s); return NULL; }
    size_t m = 0;
    bool pending_space = false;
    for (size_t i = 0; i < n; i++) {
        if (is_space(s[i])) { pending_space = m > 0; continue; }
        if (pending_space) { o[m++] = ' '; pending_space = false; }
        m += (size_t)to_lower(s[i], o + m);
    }
    free(s);
    *n_out = m;
    return o;
}

/* ---- vocabulary ---- */

typedef struct { char *s; int32_t id; } str_slot;
typedef struct { uint64_t key; int32_t rank, merged; } pair_slot;

struct bpe {
    char **vocab;
    int n_vocab;
    str_slot *strs;       /* string -> id */
    size_t str_cap;
    pair_slot *pairs;     /* (left id, right id) -> merge rank and merged id */
    size_t pair_cap;
    int32_t byte_id[256]; /* id of each byte's symbol (add 256 for the "</w>" form) */
    int32_t sot, eot;
};

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void str_put(bpe *b, char *s, int32_t id)
{
    size_t m = b->str_cap - 1, k = fnv(s) & m;
    while (b->strs[k].s && strcmp(b->strs[k].s, s)) k = (k + 1) & m;
    b->strs[k].s = s; /* later entries win, as dict(zip(vocab, range)) */
    b->strs[k].id = id;
}

static int32_t str_get(const bpe *b, const char *s)
{
    size_t m = b->str_cap - 1, k = fnv(s) & m;
    while (b->strs[k].s) {
        if (!strcmp(b->strs[k].s, s)) return b->strs[k].id;
        k = (k + 1) & m;
    }
    return -1;
}

static uint64_t pair_key(int32_t a, int32_t c) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)c; }
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb3fe1a85ec53ull;
    return x ^ (x >> 33);
}

static const pair_slot *pair_get(const bpe *b, int32_t a, int32_t c)
{
    uint64_t key = pair_key(a, c);
    size_t m = b->pair_cap - 1, k = mix64(key) & m;
    while (b->pairs[k].rank >= 0) {
        if (b->pairs[k].key == key) return &b->pairs[k];
        k = (k + 1) & m;
    }
    return NULL;
}

static void pair_put(bpe *b, int32_t a, int32_t c, int32_t rank, int32_t merged)
{
    uint64_t key = pair_key(a, c);
    size_t m = b->pair_cap - 1, k = mix64(key) & m;
    while (b->pairs[k].rank >= 0 && b->pairs[k].key != key) k = (k + 1) & m;
    if (b->pairs[k].rank >= 0) return; /* duplicate merge: the first (lowest) rank wins */
    b->pairs[k] = (pair_slot){key, rank, merged};
}

static int add_vocab(bpe *b, const char *s, size_t len)
{
    char *c = malloc(len + 1);
    if (!c) return err_set(ERR_INTERNAL, "out of memory");
    memcpy(c, s, len);
    c[len] = 0;
    b->vocab[b->n_vocab] = c;
    str_put(b, c, b->n_vocab);
    b->n_vocab++;
    return 0;
}

static char *read_all(const char *path, size_t *len)
{
    gzFile g = gzopen(path, "rb"); /* reads plain files too */
    if (!g) {
        err_set(ERR_IO, "cannot open %s: %s", path, strerror(errno ? errno : ENOENT));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { gzclose(g); err_set(ERR_INTERNAL, "out of memory"); return NULL; }
        if (cap - n < 65536) {
            char *nb = cap > ((size_t)256 << 20) ? NULL : realloc(buf, cap * 2);
            if (!nb) { free(buf); gzclose(g); err_set(ERR_FORMAT, "%s: too large for a BPE merges file", path); return NULL; }
            buf = nb;
            cap *= 2;
        }
        int r = gzread(g, buf + n, 65536);
        if (r < 0) {
            int ze;
            const char *m = gzerror(g, &ze);
            err_set(ERR_FORMAT, "%s: cannot decompress: %s", path, m);
            free(buf);
            gzclose(g);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    /* CLIP's vocabulary is a gzip file (bpe_simple_vocab_16e6.txt.gz): plain text (which
     * gzread passes through) or a gzip stream that ends early is refused, since a cut
     * vocabulary tokenizes every later merge differently, silently */
    int direct = gzdirect(g), zerr = Z_OK;
    gzerror(g, &zerr);
    int crc = gzclose(g);
    if (direct || zerr != Z_OK || crc != Z_OK) {
        free(buf);
        return (void)err_set(ERR_FORMAT, "%s: %s", path,
                             direct ? "not gzip data (CLIP's BPE vocabulary is a gzip file, "
                                      "bpe_simple_vocab_16e6.txt.gz)"
                                    : "the gzip stream ends early or is damaged (a truncated "
                                      "download?)"),
               NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

bpe *bpe_load(const char *path)
{
    size_t len;
    char *text = read_all(path, &len);
    if (!text) return NULL;
    bpe *b = calloc(1, sizeof *b);
    if (!b) { free(text); err_set(ERR_INTERNAL, "out of memory"); return NULL; }
    b->str_cap = 1 << 17;
    b->pair_cap = 1 << 17;
    b->strs = calloc(b->str_cap, sizeof *b->strs);
    b->pairs = malloc(b->pair_cap * sizeof *b->pairs);
    b->vocab = calloc(512 + BPE_MAX_MERGES + 2, sizeof *b->vocab);
    if (!b->strs || !b->pairs || !b->vocab) { err_set(ERR_INTERNAL, "out of memory"); goto fail; }
    for (size_t k = 0; k < b->pair_cap; k++) b->pairs[k].rank = -1;

    /* bytes_to_unicode: printable bytes keep their code point, the rest get 256 + n */
    uint32_t cs[256];
    int order[256], n_ord = 0, extra = 0;
    for (int c = 0; c < 256; c++) {
        bool keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
        if (keep) { cs[c] = (uint32_t)c; order[n_ord++] = c; }
    }
    for (int c = 0; c < 256; c++) {
        bool keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
        if (!keep) { cs[c] = (uint32_t)(256 + extra++); order[n_ord++] = c; }
    }
    for (int w = 0; w < 2; w++)
        for (int k = 0; k < 256; k++) {
            char s[16];
            size_t l = utf8_put(s, cs[order[k]]);
            if (w) { memcpy(s + l, "</w>", 4); l += 4; }
            if (add_vocab(b, s, l)) goto fail;
            if (!w) b->byte_id[order[k]] = k;
        }

    /* merges: lines 2 .. 48895 */
    char *p = text, *end = text + len;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) { err_set(ERR_FORMAT, "%s: no merge lines (is this a CLIP BPE vocabulary?)", path); goto fail; }
    p = nl + 1;
    int line = 2, n_merges = 0;
    while (p < end && n_merges < BPE_MAX_MERGES) {
        nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        if (le == p && !nl) break;
        char *sp = memchr(p, ' ', (size_t)(le - p));
        if (le > p && le[-1] == '\r') le--;
        if (!sp || sp == p || sp + 1 >= le || memchr(sp + 1, ' ', (size_t)(le - sp - 1))) {
            err_set(ERR_FORMAT, "%s: line %d: expected two symbols separated by one space", path, line);
            goto fail;
        }
        char a[256], c[256], ac[512];
        size_t la = (size_t)(sp - p), lc = (size_t)(le - sp - 1);
        if (la >= sizeof a || lc >= sizeof c) { err_set(ERR_FORMAT, "%s: line %d: symbol too long", path, line); goto fail; }
        memcpy(a, p, la); a[la] = 0;
        memcpy(c, sp + 1, lc); c[lc] = 0;
        int32_t ia = str_get(b, a), ic = str_get(b, c);
        if (ia < 0 || ic < 0) {
            err_set(ERR_FORMAT, "%s: line %d: merge of '%s' which is not in the vocabulary yet", path,
                    line, ia < 0 ? a : c);
            goto fail;
        }
        memcpy(ac, a, la);
        memcpy(ac + la, c, lc + 1);
        if (add_vocab(b, ac, la + lc)) goto fail;
        pair_put(b, ia, ic, n_merges, -1);
        n_merges++;
        line++;
        p = nl ? nl + 1 : end;
    }
    if (add_vocab(b, "<|startoftext|>", 15) || add_vocab(b, "<|endoftext|>", 13)) goto fail;
    b->sot = b->n_vocab - 2;
    b->eot = b->n_vocab - 1;
    /* merged ids, after all strings are in (a later duplicate string wins, as in CLIP) */
    for (size_t k = 0; k < b->pair_cap; k++)
        if (b->pairs[k].rank >= 0) {
            int32_t ia = (int32_t)(b->pairs[k].key >> 32), ic = (int32_t)(uint32_t)b->pairs[k].key;
            char ac[512];
            snprintf(ac, sizeof ac, "%s%s", b->vocab[ia], b->vocab[ic]);
            b->pairs[k].merged = str_get(b, ac);
        }
    free(text);
    return b;
fail:
    free(text);
    bpe_free(b);
    return NULL;
}

void bpe_free(bpe *b)
{
    if (!b) return;
    for (int k = 0; k < b->n_vocab; k++) free(b->vocab[k]);
    free(b->vocab);
    free(b->strs);
    free(b->pairs);
    free(b);
}

int bpe_vocab_size(const bpe *b) { return b->n_vocab; }
int32_t bpe_sot(const bpe *b) { return b->sot; }
int32_t bpe_eot(const bpe *b) { return b->eot; }
const char *bpe_token_str(const bpe *b, int32_t id) { return id >= 0 && id < b->n_vocab ? b->vocab[id] : NULL; }

/* ---- BPE on one pre-token ---- */

typedef struct { int32_t *v; int n, cap; } ids_buf;

static int ids_push(ids_buf *o, int32_t id)
{
    if (o->n == o->cap) {
        int nc = o->cap ? o->cap * 2 : 64;
        int32_t *nv = realloc(o->v, (size_t)nc * sizeof *nv);
        if (!nv) return err_set(ERR_INTERNAL, "out of memory");
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = id;
    return 0;
}

/* Merges the byte symbols of one word (bytes s[0..n)) and appends the ids to o. */
static int bpe_word(const bpe *b, const unsigned char *s, size_t n, ids_buf *o)
{
    int32_t stack[64], *w = n <= 64 ? stack : malloc(n * sizeof *w);
    if (!w) return err_set(ERR_INTERNAL, "out of memory");
    size_t m = n;
    for (size_t k = 0; k < n; k++) w[k] = b->byte_id[s[k]];
    w[n - 1] += 256; /* last symbol carries "</w>" */
    while (m > 1) {
        int32_t best = INT32_MAX, a = 0, c = 0, merged = 0;
        for (size_t k = 0; k + 1 < m; k++) {
            const pair_slot *ps = pair_get(b, w[k], w[k + 1]);
            if (ps && ps->rank < best) { best = ps->rank; a = w[k]; c = w[k + 1]; merged = ps->merged; }
        }
        if (best == INT32_MAX) break;
        size_t q = 0;
        for (size_t k = 0; k < m;) {
            if (k + 1 < m && w[k] == a && w[k + 1] == c) { w[q++] = merged; k += 2; }
            else w[q++] = w[k++];
        }
        m = q;
    }
    int rc = 0;
    for (size_t k = 0; k < m && !rc; k++) rc = ids_push(o, w[k]);
    if (w != stack) free(w);
    return rc;
}

/* ---- pre-tokenizer and encode ---- */

int bpe_encode(const bpe *b, const char *text, int32_t **ids, int *n)
{
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t len;
    uint32_t *s = clean_text(text, &len);
    if (!s) return err_set(ERR_INTERNAL, "out of memory");
    ids_buf o = {0};
    unsigned char *bytes = malloc(4 * len + 1);
    int rc = bytes ? 0 : err_set(ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < len && !rc;) {
        size_t j = i;
        if (cp_eq(s + i, len - i, "<|startoftext|>")) { rc = ids_push(&o, b->sot); i += 15; continue; }
        if (cp_eq(s + i, len - i, "<|endoftext|>")) { rc = ids_push(&o, b->eot); i += 13; continue; }
        for (size_t k = 0; k < NELEM(contractions) && j == i; k++)
            if (cp_eq(s + i, len - i, contractions[k])) j = i + strlen(contractions[k]);
        if (j == i && is_letter(s[i]))
            while (j < len && is_letter(s[j])) j++;
        if (j == i && is_number(s[i])) j = i + 1;
        if (j == i && !is_space(s[i]))
            while (j < len && !is_space(s[j]) && !is_letter(s[j]) && !is_number(s[j])) j++;
        if (j == i) { i++; continue; } /* whitespace */
        size_t nb = 0;
        for (size_t k = i; k < j; k++) nb += utf8_put((char *)bytes + nb, s[k]);
        rc = bpe_word(b, bytes, nb, &o);
        i = j;
    }
    free(bytes);
    free(s);
    if (rc) { free(o.v); return rc; }
    *ids = o.v ? o.v : malloc(sizeof(int32_t));
    *n = o.n;
    return *ids ? 0 : err_set(ERR_INTERNAL, "out of memory");
}

int bpe_tokenize(const bpe *b, const char *text, int32_t *out, int context)
{
    if (context < 2) return err_set(ERR_USAGE, "context length %d is too short", context);
    int32_t *ids;
    int n;
    int rc = bpe_encode(b, text, &ids, &n);
    if (rc) return rc;
    memset(out, 0, (size_t)context * sizeof *out);
    out[0] = b->sot;
    int k = 0;
    for (; k < n && k + 1 < context; k++) out[k + 1] = ids[k];
    int eot_pos = k + 1 < context ? k + 1 : context - 1;
    out[eot_pos] = b->eot;
    free(ids);
    return eot_pos;
}
