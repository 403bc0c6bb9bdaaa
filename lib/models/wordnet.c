/* wordnet.c - WordNet 3.0 nouns from index.noun / data.noun and NLTK's Wu-Palmer
 * similarity (docs/algorithms.md section 5.2; the rules and their NLTK origin are in
 * wordnet.h).  index.noun is read whole at open; data.noun is read into memory and its
 * lines are parsed only when a synset is first needed, then cached by offset.
 * Not here: which synset a class name should map to (lib/fl/relevance.c and the
 * data/wordnet-*.map files), morphology, other parts of speech. */
#include "wordnet.h"

#include "err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WN_MAX_FILE (256u << 20) /* data.noun of WordNet 3.0 is 15 MB */
#define WN_MAX_LEMMA 256         /* the longest noun lemma of WordNet 3.0 has 71 bytes */
#define WN_MAX_SENSES 4096       /* per lemma (33 at most in 3.0) */
#define WN_MAX_WORDS 255         /* w_cnt is two hex digits */
#define WN_MAX_PTRS 9999         /* p_cnt is three digits; 4 digits tolerated */
#define WN_MAX_ANCESTORS 4096    /* hypernym closure of one synset (about 20 in 3.0) */
#define WN_MAX_DEPTH 512         /* longest hypernym chain followed (18 in 3.0) */

typedef struct {
    const char *lemma; /* into idx, not NUL-terminated */
    size_t len;
    size_t first; /* offsets[first .. first + n) */
    uint32_t n;
} wn_entry;

typedef struct {
    const char *p; /* into dat */
    size_t len;
    int lex_id;
} wn_word;

typedef struct {
    uint32_t off;
    int lexfile;
    int n_words, n_hyp;
    wn_word *words;
    uint32_t *hyp; /* synset indices (into db->syn) of '@' then '@i' targets */
    int min_d, max_d, state; /* state: 0 depths unknown, 1 computing, 2 known */
    char *name;              /* NLTK name, made on demand */
} wn_syn;

struct wn_db {
    char *dir;
    char *idx, *dat;
    size_t idx_len, dat_len;
    wn_entry *ent;
    size_t n_ent;
    uint32_t *offs;
    wn_syn *syn;
    size_t n_syn, cap_syn;
    uint32_t *ht_off; /* offset + 1 (0: empty) -> syn index */
    uint32_t *ht_idx;
    size_t ht_cap;
};

/* ---- files ---- */

static int slurp(const char *dir, const char *name, char **out, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(ERR_IO, "cannot open %s: %s (the WordNet 3.0 database: Debian package wordnet-base, or --wordnet-dir)",
                       path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode) || sb.st_size <= 0 || (uint64_t)sb.st_size > WN_MAX_FILE) {
        fclose(f);
        return err_set(ERR_FORMAT, "%s: not a WordNet file (empty, not a regular file, or over %u MB)", path,
                       WN_MAX_FILE >> 20);
    }
    size_t n = (size_t)sb.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    size_t got = fread(b, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (got != n || bad) {
        free(b);
        return err_set(ERR_IO, "%s: read error", path);
    }
    if (b[n - 1] != '\n') {
        free(b);
        return err_set(ERR_FORMAT, "%s: truncated (the last line has no newline)", path);
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
}

/* ---- tokens ---- */

/* The next space-separated token of [*p, end): 1 with *t, *n; 0 at the end. */
static int next_tok(const char **p, const char *end, const char **t, size_t *n)
{
    const char *s = *p;
    while (s < end && *s == ' ') s++;
    if (s >= end) {
        *p = s;
        return 0;
    }
    const char *e = s;
    while (e < end && *e != ' ') e++;
    *t = s;
    *n = (size_t)(e - s);
    *p = e;
    return 1;
}

/* Unsigned number of base 10 or 16 in t[0, n), at most max; -1 when not one. */
static long long parse_num(const char *t, size_t n, int base, long long max)
{
    if (!n || n > 12) return -1;
    long long v = 0;
    for (size_t k = 0; k < n; k++) {
        int d;
        char c = t[k];
        if (c >= '0' && c <= '9') d = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * base + d;
    }
    return v <= max ? v : -1;
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

/* ---- index.noun ---- */

static int cmp_mem(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static int cmp_entry(const void *x, const void *y)
{
    const wn_entry *a = x, *b = y;
    return cmp_mem(a->lemma, a->len, b->lemma, b->len);
}

static const wn_entry *find_entry(const wn_db *db, const char *lemma, size_t len)
{
    size_t lo = 0, hi = db->n_ent;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_mem(db->ent[mid].lemma, db->ent[mid].len, lemma, len);
        if (!c) return &db->ent[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int index_error(const wn_db *db, size_t line, const char *what)
{
    return err_set(ERR_FORMAT, "%s/index.noun line %zu: %s; corrupt WordNet database?", db->dir, line, what);
}

static int read_index(wn_db *db)
{
    /* upper bounds for the arrays: a line per entry, an offset per 9 bytes */
    size_t lines = 0;
    for (size_t k = 0; k < db->idx_len; k++) lines += db->idx[k] == '\n';
    db->ent = malloc((lines + 1) * sizeof *db->ent);
    db->offs = malloc((db->idx_len / 9 + 1) * sizeof *db->offs);
    if (!db->ent || !db->offs) return err_set(ERR_INTERNAL, "out of memory");
    size_t n_offs = 0, line = 0;
    const char *p = db->idx, *end = db->idx + db->idx_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p)), *q = p;
        line++;
        p = eol + 1;
        if (*q == ' ' || q == eol) continue; /* the licence header; blank lines */
        const char *t;
        size_t n;
        wn_entry e = {0};
        if (!next_tok(&q, eol, &e.lemma, &e.len)) return index_error(db, line, "no lemma");
        if (e.len > WN_MAX_LEMMA) return index_error(db, line, "lemma too long");
        if (!next_tok(&q, eol, &t, &n) || n != 1 || *t != 'n') return index_error(db, line, "part of speech is not n");
        long long cnt, pc, sc;
        if (!next_tok(&q, eol, &t, &n) || (cnt = parse_num(t, n, 10, WN_MAX_SENSES)) < 1)
            return index_error(db, line, "bad synset_cnt");
        if (!next_tok(&q, eol, &t, &n) || (pc = parse_num(t, n, 10, 64)) < 0) return index_error(db, line, "bad p_cnt");
        for (long long k = 0; k < pc; k++)
            if (!next_tok(&q, eol, &t, &n)) return index_error(db, line, "fewer pointer symbols than p_cnt");
        if (!next_tok(&q, eol, &t, &n) || (sc = parse_num(t, n, 10, WN_MAX_SENSES)) != cnt)
            return index_error(db, line, "sense_cnt differs from synset_cnt");
        if (!next_tok(&q, eol, &t, &n) || parse_num(t, n, 10, WN_MAX_SENSES) < 0)
            return index_error(db, line, "bad tagsense_cnt");
        e.first = n_offs;
        e.n = (uint32_t)cnt;
        for (long long k = 0; k < cnt; k++) {
            long long o;
            if (!next_tok(&q, eol, &t, &n) || n != 8 || (o = parse_num(t, n, 10, (long long)db->dat_len - 1)) < 0)
                return index_error(db, line, "bad or missing synset offset (8 digits inside data.noun)");
            if (n_offs > db->idx_len / 9) return index_error(db, line, "too many offsets");
            db->offs[n_offs++] = (uint32_t)o;
        }
        if (next_tok(&q, eol, &t, &n)) return index_error(db, line, "more offsets than synset_cnt");
        db->ent[db->n_ent++] = e;
    }
    if (!db->n_ent) return err_set(ERR_FORMAT, "%s/index.noun: no entries; corrupt WordNet database?", db->dir);
    qsort(db->ent, db->n_ent, sizeof *db->ent, cmp_entry);
    for (size_t k = 1; k < db->n_ent; k++)
        if (!cmp_entry(&db->ent[k - 1], &db->ent[k]))
            return err_set(ERR_FORMAT, "%s/index.noun: lemma '%.*s' appears twice; corrupt WordNet database?", db->dir,
                           (int)db->ent[k].len, db->ent[k].lemma);
    return 0;
}

/* ---- data.noun, parsed on demand ---- */

static int data_error(const wn_db *db, uint32_t off, const char *what)
{
    return err_set(ERR_FORMAT, "%s/data.noun offset %08u: %s; corrupt WordNet database?", db->dir, off, what);
}

static size_t ht_slot(const wn_db *db, uint32_t off)
{
    size_t h = (size_t)(off * 2654435761u) & (db->ht_cap - 1);
    while (db->ht_off[h] && db->ht_off[h] != off + 1) h = (h + 1) & (db->ht_cap - 1);
    return h;
}

static int ht_grow(wn_db *db)
{
    size_t cap = db->ht_cap ? db->ht_cap * 2 : 1024;
    uint32_t *ko = db->ht_off, *ki = db->ht_idx;
    size_t oc = db->ht_cap;
    db->ht_off = calloc(cap, sizeof *db->ht_off);
    db->ht_idx = malloc(cap * sizeof *db->ht_idx);
    if (!db->ht_off || !db->ht_idx) {
        free(db->ht_off);
        free(db->ht_idx);
        db->ht_off = ko, db->ht_idx = ki;
        return err_set(ERR_INTERNAL, "out of memory");
    }
    db->ht_cap = cap;
    for (size_t k = 0; k < oc; k++)
        if (ko[k]) {
            size_t h = ht_slot(db, ko[k] - 1);
            db->ht_off[h] = ko[k];
            db->ht_idx[h] = ki[k];
        }
    free(ko);
    free(ki);
    return 0;
}

/* Parses the synset line at off (not its hypernyms) into a new cache slot. */
static int parse_synset(wn_db *db, uint32_t off, uint32_t **hyp_off, int *n_hyp_off, wn_syn *s)
{
    if (off >= db->dat_len || (off && db->dat[off - 1] != '\n')) return data_error(db, off, "not the start of a line");
    const char *q = db->dat + off, *eol = memchr(q, '\n', db->dat_len - off), *t;
    const char *bar = memchr(q, '|', (size_t)(eol - q));
    if (bar) eol = bar; /* the gloss is not read */
    size_t n;
    long long v;
    if (!next_tok(&q, eol, &t, &n) || n != 8 || parse_num(t, n, 10, 99999999) != off)
        return data_error(db, off, "the line does not start with its own offset");
    if (!next_tok(&q, eol, &t, &n) || (v = parse_num(t, n, 10, 99)) < 0) return data_error(db, off, "bad lex_filenum");
    s->lexfile = (int)v;
    if (!next_tok(&q, eol, &t, &n) || n != 1 || *t != 'n') return data_error(db, off, "ss_type is not n");
    if (!next_tok(&q, eol, &t, &n) || n != 2 || (v = parse_num(t, n, 16, WN_MAX_WORDS)) < 1)
        return data_error(db, off, "bad w_cnt");
    s->n_words = (int)v;
    if (!(s->words = calloc((size_t)v, sizeof *s->words))) return err_set(ERR_INTERNAL, "out of memory");
    for (int k = 0; k < s->n_words; k++) {
        if (!next_tok(&q, eol, &t, &n) || n > WN_MAX_LEMMA) return data_error(db, off, "missing or overlong word");
        const char *par = memchr(t, '(', n); /* adjective syntactic markers, as NLTK strips them */
        s->words[k].p = t;
        s->words[k].len = par && par > t && t[n - 1] == ')' ? (size_t)(par - t) : n;
        if (!next_tok(&q, eol, &t, &n) || (v = parse_num(t, n, 16, 15)) < 0 || n != 1)
            return data_error(db, off, "bad lex_id");
        s->words[k].lex_id = (int)v;
    }
    long long pc;
    if (!next_tok(&q, eol, &t, &n) || n < 3 || (pc = parse_num(t, n, 10, WN_MAX_PTRS)) < 0)
        return data_error(db, off, "bad p_cnt");
    if (!(*hyp_off = malloc((size_t)(pc + 1) * sizeof **hyp_off))) return err_set(ERR_INTERNAL, "out of memory");
    int nh = 0;
    for (long long k = 0; k < pc; k++) {
        const char *sym, *o, *pos, *st;
        size_t ns, no, np, nst;
        if (!next_tok(&q, eol, &sym, &ns) || !next_tok(&q, eol, &o, &no) || !next_tok(&q, eol, &pos, &np) ||
            !next_tok(&q, eol, &st, &nst))
            return data_error(db, off, "fewer pointers than p_cnt");
        if (no != 8 || (v = parse_num(o, no, 10, (long long)db->dat_len - 1)) < 0 || np != 1 || nst != 4 ||
            parse_num(st, nst, 16, 0xffff) < 0)
            return data_error(db, off, "bad pointer (offset, part of speech or source/target)");
        bool hyper = (ns == 1 && sym[0] == '@') || (ns == 2 && sym[0] == '@' && sym[1] == 'i');
        if (hyper && *pos == 'n') (*hyp_off)[nh++] = (uint32_t)v; /* '@' and '@i', file order */
    }
    *n_hyp_off = nh;
    return 0;
}

static void syn_free(wn_syn *s)
{
    free(s->words);
    free(s->hyp);
    free(s->name);
}

/* The cache index of the synset at off, parsing it and (recursively) its hypernyms. */
static int get_syn(wn_db *db, uint32_t off, uint32_t *idx, int depth)
{
    if (depth > WN_MAX_DEPTH) return data_error(db, off, "hypernym chain too long (a cycle?)");
    if (db->ht_cap) {
        size_t h = ht_slot(db, off);
        if (db->ht_off[h]) {
            *idx = db->ht_idx[h];
            return db->syn[*idx].state == 3 ? data_error(db, off, "unreadable hypernyms") : 0;
        }
    }
    if ((db->n_syn + 1) * 2 > db->ht_cap) {
        int rc = ht_grow(db);
        if (rc) return rc;
    }
    if (db->n_syn == db->cap_syn) {
        size_t cap = db->cap_syn ? db->cap_syn * 2 : 256;
        wn_syn *ns = realloc(db->syn, cap * sizeof *ns);
        if (!ns) return err_set(ERR_INTERNAL, "out of memory");
        db->syn = ns;
        db->cap_syn = cap;
    }
    uint32_t *hoff = NULL;
    wn_syn s = {.off = off};
    int nh = 0, rc = parse_synset(db, off, &hoff, &nh, &s);
    if (rc) {
        syn_free(&s);
        free(hoff);
        return rc;
    }
    if (nh && !(s.hyp = malloc((size_t)nh * sizeof *s.hyp))) {
        syn_free(&s);
        free(hoff);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    uint32_t me = (uint32_t)db->n_syn;
    db->syn[db->n_syn++] = s;
    size_t h = ht_slot(db, off);
    db->ht_off[h] = off + 1;
    db->ht_idx[h] = me;
    /* hypernyms after registering this one: a cycle ends at the depth bound, not in a loop */
    for (int k = 0; k < nh; k++) {
        uint32_t hi;
        if ((rc = get_syn(db, hoff[k], &hi, depth + 1))) break;
        db->syn[me].hyp[k] = hi;
        db->syn[me].n_hyp = k + 1;
    }
    if (rc) db->syn[me].state = 3; /* broken: never used */
    *idx = me;
    free(hoff);
    return rc;
}

/* ---- depths and closures ---- */

static int depths(wn_db *db, uint32_t i, int level)
{
    wn_syn *s = &db->syn[i];
    if (s->state == 2) return 0;
    if (s->state == 3) return data_error(db, s->off, "unreadable hypernyms");
    if (s->state == 1 || level > WN_MAX_DEPTH) return data_error(db, s->off, "hypernym cycle");
    s->state = 1;
    int mn = 0, mx = 0;
    for (int k = 0; k < db->syn[i].n_hyp; k++) {
        uint32_t h = db->syn[i].hyp[k];
        int rc = depths(db, h, level + 1);
        if (rc) {
            db->syn[i].state = 0;
            return rc;
        }
        int a = db->syn[h].min_d + 1, b = db->syn[h].max_d + 1;
        if (!k || a < mn) mn = a;
        if (!k || b > mx) mx = b;
    }
    s = &db->syn[i];
    s->min_d = mn;
    s->max_d = mx;
    s->state = 2;
    return 0;
}

typedef struct {
    uint32_t *idx;
    int *dist;
    int n;
} closure;

/* Breadth-first hypernym closure of i with shortest distances (NLTK's
 * _shortest_hypernym_paths; its keys are common_hypernyms' sets). */
static int bfs(wn_db *db, uint32_t i, closure *c)
{
    c->idx = malloc(WN_MAX_ANCESTORS * sizeof *c->idx);
    c->dist = malloc(WN_MAX_ANCESTORS * sizeof *c->dist);
    if (!c->idx || !c->dist) return err_set(ERR_INTERNAL, "out of memory");
    c->n = 1;
    c->idx[0] = i;
    c->dist[0] = 0;
    for (int head = 0; head < c->n; head++) {
        const wn_syn *s = &db->syn[c->idx[head]];
        for (int k = 0; k < s->n_hyp; k++) {
            bool seen = false;
            for (int j = 0; j < c->n && !seen; j++) seen = c->idx[j] == s->hyp[k];
            if (seen) continue;
            if (c->n == WN_MAX_ANCESTORS) return data_error(db, db->syn[i].off, "too many hypernyms");
            c->idx[c->n] = s->hyp[k];
            c->dist[c->n++] = c->dist[head] + 1;
        }
    }
    return 0;
}

static void closure_free(closure *c)
{
    free(c->idx);
    free(c->dist);
}

static int find_in(const closure *c, uint32_t i)
{
    for (int j = 0; j < c->n; j++)
        if (c->idx[j] == i) return j;
    return -1;
}

/* NLTK's shortest_path_distance(a, b): min over common ancestors x of d_a(x) + d_b(x). */
static int path_dist(const closure *a, const closure *b)
{
    if (a->idx[0] == b->idx[0]) return 0;
    int best = -1;
    for (int j = 0; j < a->n; j++) {
        int k = find_in(b, a->idx[j]);
        if (k >= 0 && (best < 0 || a->dist[j] + b->dist[k] < best)) best = a->dist[j] + b->dist[k];
    }
    return best;
}

/* ---- names ---- */

static int make_name(wn_db *db, uint32_t i)
{
    wn_syn *s = &db->syn[i];
    if (s->name) return 0;
    char lem[WN_MAX_LEMMA + 1];
    size_t n = s->words[0].len;
    for (size_t k = 0; k < n; k++) lem[k] = lower(s->words[0].p[k]);
    lem[n] = 0;
    const wn_entry *e = find_entry(db, lem, n);
    uint32_t sense = 0;
    for (uint32_t k = 0; e && k < e->n && !sense; k++)
        if (db->offs[e->first + k] == s->off) sense = k + 1;
    if (!sense) return data_error(db, s->off, "its first word is not indexed with this synset in index.noun");
    char buf[WN_MAX_LEMMA + 16];
    snprintf(buf, sizeof buf, "%s.n.%02u", lem, sense);
    if (!(s->name = strdup(buf))) return err_set(ERR_INTERNAL, "out of memory");
    return 0;
}

/* ---- API ---- */

wn_db *wn_open(const char *dir)
{
    if (!dir) dir = getenv("WNSEARCHDIR");
    if (!dir || !*dir) dir = "/usr/share/wordnet";
    wn_db *db = calloc(1, sizeof *db);
    if (!db || !(db->dir = strdup(dir))) {
        free(db);
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    int rc = slurp(dir, "index.noun", &db->idx, &db->idx_len);
    if (!rc) rc = slurp(dir, "data.noun", &db->dat, &db->dat_len);
    if (!rc) rc = read_index(db);
    if (rc) {
        wn_close(db);
        return NULL;
    }
    return db;
}

void wn_close(wn_db *db)
{
    if (!db) return;
    for (size_t k = 0; k < db->n_syn; k++) syn_free(&db->syn[k]);
    free(db->syn);
    free(db->ht_off);
    free(db->ht_idx);
    free(db->ent);
    free(db->offs);
    free(db->idx);
    free(db->dat);
    free(db->dir);
    free(db);
}

const char *wn_dir(const wn_db *db) { return db->dir; }

static int lookup(wn_db *db, uint32_t off, uint32_t *idx)
{
    return get_syn(db, off, idx, 0);
}

int wn_resolve(wn_db *db, const char *spec, uint32_t *syn)
{
    char buf[WN_MAX_LEMMA + 64];
    size_t n = strlen(spec);
    while (n && (spec[n - 1] == ' ' || spec[n - 1] == '\t')) n--;
    while (n && (*spec == ' ' || *spec == '\t')) spec++, n--;
    if (!n) {
        err_set(ERR_FORMAT, "an empty name");
        return 1;
    }
    if (n >= sizeof buf) {
        err_set(ERR_FORMAT, "'%.40s...' is longer than any WordNet lemma", spec);
        return 1;
    }
    for (size_t k = 0; k < n; k++) buf[k] = spec[k] == ' ' ? '_' : lower(spec[k]);
    buf[n] = 0;
    const char *pct = strchr(buf, '%');
    if (pct) { /* sense key lemma%ss_type:lex_filenum:lex_id:head_word:head_id */
        size_t ln = (size_t)(pct - buf);
        int ss, lf, li, used = 0;
        if (sscanf(pct + 1, "%1d:%2d:%2d::%n", &ss, &lf, &li, &used) != 3 || pct[1 + used] || !used) {
            err_set(ERR_FORMAT, "'%s' is not a noun sense key (lemma%%1:NN:NN::)", buf);
            return 1;
        }
        if (ss != 1) {
            err_set(ERR_FORMAT, "sense key '%s' is not a noun's (ss_type %d, nouns are 1)", buf, ss);
            return 1;
        }
        const wn_entry *e = find_entry(db, buf, ln);
        for (uint32_t k = 0; e && k < e->n; k++) {
            uint32_t i;
            int rc = lookup(db, db->offs[e->first + k], &i);
            if (rc) return rc;
            const wn_syn *s = &db->syn[i];
            if (s->lexfile != lf) continue;
            for (int w = 0; w < s->n_words; w++) {
                bool same = s->words[w].len == ln && s->words[w].lex_id == li;
                for (size_t c = 0; same && c < ln; c++) same = lower(s->words[w].p[c]) == buf[c];
                if (same) {
                    *syn = s->off;
                    return 0;
                }
            }
        }
        err_set(ERR_FORMAT, "no noun with sense key '%s'", buf);
        return 1;
    }
    /* NLTK synset name lemma.n.NN (rsplit on the last two dots) */
    const char *d2 = strrchr(buf, '.'), *d1 = NULL;
    for (const char *p = d2 ? d2 - 1 : NULL; p && p >= buf && !d1; p--)
        if (*p == '.') d1 = p;
    size_t ln = n;
    uint32_t sense = 1;
    if (d1 && d1 > buf && d2[1] && strspn(d2 + 1, "0123456789") == strlen(d2 + 1) && d2 - d1 == 2) {
        if (d1[1] != 'n') {
            err_set(ERR_FORMAT, "'%s' is not a noun synset (only .n. synsets have Wu-Palmer relevance here)", buf);
            return 1;
        }
        long long s = parse_num(d2 + 1, strlen(d2 + 1), 10, WN_MAX_SENSES);
        if (s < 1) {
            err_set(ERR_FORMAT, "'%s': sense numbers start at 1", buf);
            return 1;
        }
        sense = (uint32_t)s;
        ln = (size_t)(d1 - buf);
    }
    const wn_entry *e = find_entry(db, buf, ln);
    if (!e) {
        err_set(ERR_FORMAT, "no noun '%.*s' in WordNet", (int)ln, buf);
        return 1;
    }
    if (sense > e->n) {
        err_set(ERR_FORMAT, "'%s': noun '%.*s' has only %u sense%s", buf, (int)ln, buf, e->n, e->n == 1 ? "" : "s");
        return 1;
    }
    uint32_t i;
    int rc = lookup(db, db->offs[e->first + sense - 1], &i);
    if (rc) return rc;
    *syn = db->syn[i].off;
    return 0;
}

int wn_synset_name(wn_db *db, uint32_t syn, char *buf, size_t cap)
{
    uint32_t i;
    int rc = lookup(db, syn, &i);
    if (!rc) rc = make_name(db, i);
    if (rc) return rc;
    if (strlen(db->syn[i].name) >= cap) return err_set(ERR_INTERNAL, "synset name longer than %zu bytes", cap);
    strcpy(buf, db->syn[i].name);
    return 0;
}

int wn_depths(wn_db *db, uint32_t syn, int *min_depth, int *max_depth)
{
    uint32_t i;
    int rc = lookup(db, syn, &i);
    if (!rc) rc = depths(db, i, 0);
    if (rc) return rc;
    *min_depth = db->syn[i].min_d;
    *max_depth = db->syn[i].max_d;
    return 0;
}

int wn_wup(wn_db *db, uint32_t a, uint32_t b, double *sim)
{
    uint32_t ia, ib;
    int rc = lookup(db, a, &ia);
    if (!rc) rc = lookup(db, b, &ib);
    if (rc) return rc;
    closure ca = {0}, cb = {0}, cs = {0};
    if ((rc = bfs(db, ia, &ca)) || (rc = bfs(db, ib, &cb))) goto out;
    /* the lowest common hypernyms by minimum depth (NLTK: use_min_depth=True) */
    int best = -1;
    uint32_t sub = 0;
    bool self = false;
    for (int j = 0; j < ca.n; j++) {
        uint32_t x = ca.idx[j];
        if (find_in(&cb, x) < 0) continue;
        if ((rc = depths(db, x, 0))) goto out;
        int d = db->syn[x].min_d;
        if (d < best) continue;
        if (d > best) {
            best = d;
            sub = x;
            self = x == ia;
            continue;
        }
        if (x == ia) self = true, sub = x;
        if (self) continue;
        if ((rc = make_name(db, x)) || (rc = make_name(db, sub))) goto out;
        if (strcmp(db->syn[x].name, db->syn[sub].name) < 0) sub = x;
    }
    if (best < 0) {
        rc = err_set(ERR_FORMAT, "%s/data.noun: synsets %08u and %08u share no hypernym; corrupt WordNet database?",
                     db->dir, a, b);
        goto out;
    }
    if ((rc = depths(db, sub, 0)) || (rc = bfs(db, sub, &cs))) goto out;
    int depth = db->syn[sub].max_d + 1, len1 = path_dist(&ca, &cs), len2 = path_dist(&cb, &cs);
    if (len1 < 0 || len2 < 0) {
        rc = err_set(ERR_INTERNAL, "wordnet: no path to a subsumer");
        goto out;
    }
    len1 += depth;
    len2 += depth;
    *sim = (2.0 * depth) / (len1 + len2);
out:
    closure_free(&ca);
    closure_free(&cb);
    closure_free(&cs);
    return rc;
}
