/* relevance.c - class relevance S for FedSM from embeddings or WordNet, and the row-mean
 * diagonal (docs/algorithms.md section 5.2; interface in relevance.h).
 * Not here: the WordNet database and Wu-Palmer itself (lib/models/wordnet.c). */
#include "relevance.h"

#include "err.h"
#include "wordnet.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAP_MAX_LINE 4096
#define MAP_MAX_ENTRIES 100000

int relevance_cosine(float *S, const float *emb, int C, int E)
{
    double *nrm = malloc((size_t)(C > 0 ? C : 1) * sizeof *nrm);
    if (!nrm) return err_set(ERR_INTERNAL, "out of memory");
    for (int i = 0; i < C; i++) {
        double s = 0;
        for (int k = 0; k < E; k++) {
            double v = emb[(size_t)i * E + k];
            if (!isfinite(v)) {
                free(nrm);
                return err_set(ERR_FORMAT, "class embedding row %d holds NaN or Inf (column %d)", i, k);
            }
            s += v * v;
        }
        if (!(s > 0)) {
            free(nrm);
            return err_set(ERR_FORMAT, "class embedding row %d is zero; its cosine is undefined", i);
        }
        nrm[i] = sqrt(s);
    }
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int k = 0; k < E; k++) s += (double)emb[(size_t)i * E + k] * emb[(size_t)j * E + k];
            S[(size_t)i * C + j] = (float)(s / (nrm[i] * nrm[j]));
        }
    free(nrm);
    return 0;
}

void relevance_diag_row_mean(float *S, int C)
{
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int j = 0; j < C; j++) s += S[(size_t)c * C + j];
        S[(size_t)c * C + c] = (float)(s / C);
    }
}

/* ---- the override map ---- */

typedef struct {
    char *name; /* normalised */
    char *spec;
    int line;
} map_entry;

/* Lower-case ASCII, spaces to underscores, trimmed; owned. */
static char *norm_name(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    char *o = malloc(n + 1);
    if (!o) return NULL;
    for (size_t k = 0; k < n; k++) {
        char c = s[k] == ' ' || s[k] == '\t' ? '_' : s[k];
        o[k] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    o[n] = 0;
    return o;
}

static void map_free(map_entry *m, int n)
{
    for (int k = 0; k < n; k++) {
        free(m[k].name);
        free(m[k].spec);
    }
    free(m);
}

static int map_load(const char *path, map_entry **out, int *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f) return err_set(ERR_IO, "cannot open %s: %s", path, strerror(errno));
    map_entry *m = NULL;
    int n = 0, rc = 0, line = 0;
    char buf[MAP_MAX_LINE + 2];
    while (!rc && fgets(buf, sizeof buf, f)) {
        line++;
        size_t len = strlen(buf);
        if (len && buf[len - 1] == '\n') buf[--len] = 0;
        else if (!feof(f) || len > MAP_MAX_LINE) {
            rc = err_set(ERR_FORMAT, "%s line %d: longer than %d bytes", path, line, MAP_MAX_LINE);
            break;
        }
        if (len && buf[len - 1] == '\r') buf[--len] = 0;
        if (memchr(buf, 0, len)) {
            rc = err_set(ERR_FORMAT, "%s line %d: a NUL byte", path, line);
            break;
        }
        char *s = buf;
        while (*s == ' ' || *s == '\t') s++;
        while (len && (buf[len - 1] == ' ' || buf[len - 1] == '\t')) buf[--len] = 0;
        if (!*s || *s == '#') continue;
        char *sp = strrchr(s, ' '), *tb = strrchr(s, '\t');
        if (!sp || (tb && tb > sp)) sp = tb;
        if (!sp) {
            rc = err_set(ERR_FORMAT, "%s line %d: expected 'class-name synset' (e.g. 'maple_tree maple.n.02')", path, line);
            break;
        }
        if (n == MAP_MAX_ENTRIES) {
            rc = err_set(ERR_FORMAT, "%s: more than %d entries", path, MAP_MAX_ENTRIES);
            break;
        }
        map_entry *nm = realloc(m, (size_t)(n + 1) * sizeof *nm);
        if (!nm) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        m = nm;
        m[n].line = line;
        m[n].name = norm_name(s, (size_t)(sp - s));
        m[n].spec = strdup(sp + 1);
        n++;
        if (!m[n - 1].name || !m[n - 1].spec) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        for (int k = 0; k < n - 1; k++)
            if (!strcmp(m[k].name, m[n - 1].name))
                rc = err_set(ERR_FORMAT, "%s line %d: '%s' is mapped again (first on line %d)", path, line,
                             m[n - 1].name, m[k].line);
    }
    if (!rc && ferror(f)) rc = err_set(ERR_IO, "%s: read error", path);
    fclose(f);
    if (rc) {
        map_free(m, n);
        return rc;
    }
    *out = m;
    *n_out = n;
    return 0;
}

/* ---- WordNet S ---- */

/* Appends "what" to the list of failures in msg (bounded; counts the rest). */
static void add_failure(char *msg, size_t cap, int *shown, int *hidden, const char *what)
{
    size_t used = strlen(msg);
    if (used + strlen(what) + 40 < cap) {
        snprintf(msg + used, cap - used, "%s%s", *shown ? ", " : "", what);
        (*shown)++;
    } else (*hidden)++;
}

int relevance_wordnet(double *S, char ***synsets, const char *dir, const char *map_path,
                      const char *const *classes, int C)
{
    if (synsets) *synsets = NULL;
    map_entry *map = NULL;
    int n_map = 0, rc = 0;
    if (map_path && (rc = map_load(map_path, &map, &n_map))) return rc;
    wn_db *db = wn_open(dir);
    uint32_t *syn = malloc((size_t)(C > 0 ? C : 1) * sizeof *syn);
    char **names = calloc((size_t)(C > 0 ? C : 1), sizeof *names);
    if (!db) rc = err_last();
    else if (!syn || !names) rc = err_set(ERR_INTERNAL, "out of memory");
    char fails[720] = "";
    int shown = 0, hidden = 0;
    for (int c = 0; c < C && !rc; c++) {
        char *nm = norm_name(classes[c], strlen(classes[c]));
        if (!nm) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        const map_entry *me = NULL;
        for (int k = 0; k < n_map && !me; k++)
            if (!strcmp(map[k].name, nm)) me = &map[k];
        int r = wn_resolve(db, me ? me->spec : nm, &syn[c]);
        if (r < 0) rc = r;
        else if (r == 1) {
            char what[300];
            if (me) snprintf(what, sizeof what, "%s (map line %d: %s)", classes[c], me->line, err_msg());
            else snprintf(what, sizeof what, "%s", classes[c]);
            add_failure(fails, sizeof fails, &shown, &hidden, what);
            syn[c] = UINT32_MAX;
        } else {
            char buf[512];
            if ((rc = wn_synset_name(db, syn[c], buf, sizeof buf)) == 0 && !(names[c] = strdup(buf)))
                rc = err_set(ERR_INTERNAL, "out of memory");
        }
        free(nm);
    }
    if (!rc && (shown || hidden)) {
        char more[64] = "";
        if (hidden) snprintf(more, sizeof more, " and %d more", hidden);
        rc = err_set(ERR_FORMAT,
                     "%d class%s not resolved in WordNet (%s): %s%s; map each to a noun synset in a --wordnet-map "
                     "line 'class-name word.n.NN' (or a sense key)",
                     shown + hidden, shown + hidden == 1 ? "" : "es", db ? wn_dir(db) : "?", fails, more);
    }
    for (int i = 0; i < C && !rc; i++) /* every ordered pair: NLTK's wup is not always symmetric */
        for (int j = 0; j < C && !rc; j++) rc = wn_wup(db, syn[i], syn[j], &S[(size_t)i * C + j]);
    if (!rc && synsets) *synsets = names;
    else if (names) {
        for (int c = 0; c < C; c++) free(names[c]);
        free(names);
    }
    free(syn);
    wn_close(db);
    map_free(map, n_map);
    return rc;
}

int relevance_tensor(const record *r, const char *name, int64_t rows, int64_t cols,
                     const float **out)
{
    const tensor *t = rec_find(r, name);
    if (!t)
        return err_set(ERR_FORMAT, "%s (record %ld) has no tensor %s", r->src, r->index, name);
    if (t->dtype != DT_F32 || t->ndim != 2 || t->shape[0] != rows ||
        (cols >= 0 ? t->shape[1] != cols : t->shape[1] < 1))
        return err_set(ERR_FORMAT, "tensor %s of %s (record %ld) is not <f4 [%lld,%lld]", name,
                       r->src, r->index, (long long)rows,
                       (long long)(cols >= 0 ? cols : t->ndim == 2 ? t->shape[1] : 1));
    const float *v = t->data;
    for (int64_t i = 0; i < t->shape[0] * t->shape[1]; i++)
        if (!isfinite(v[i]))
            return err_set(ERR_FORMAT, "tensor %s of %s (record %ld) holds %g at [%lld,%lld]: not "
                                       "finite",
                           name, r->src, r->index, v[i], (long long)(i / t->shape[1]),
                           (long long)(i % t->shape[1]));
    *out = v;
    return 0;
}
