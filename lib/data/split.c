/* split.c - long-tail selection and client splits (see split.h; docs/algorithms.md 1.2-1.3).
 *
 * Follows CReFF's Dataset/long_tailed_cifar10.py and Dataset/sample_dirichlet.py in
 * structure (described in docs/algorithms.md, not copied): same counts, same chunking, balance
 * step and equal slices; our xoshiro streams instead of numpy's RandomState.
 *
 * Not here: any I/O. */
#include "split.h"

#include "err.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int lt_counts(double n_max, int n_classes, double imb, lt_profile profile, int64_t *out)
{
    if (n_classes < 1)
        return err_set(ERR_USAGE, "long tail: no classes");
    if (!(imb >= 1.0) || !isfinite(imb))
        return err_set(ERR_USAGE, "long tail: imbalance factor %g must be >= 1", imb);
    if (!(n_max >= 0) || !isfinite(n_max))
        return err_set(ERR_USAGE, "long tail: bad class size %g", n_max);
    double ratio = 1.0 / imb; /* the reference's imb_factor = n_min/n_max */
    for (int c = 0; c < n_classes; c++) {
        double v;
        if (profile == LT_STEP)
            v = c < n_classes / 2 ? n_max : n_max * ratio;
        else
            v = n_classes == 1 ? n_max : n_max * pow(ratio, c / (n_classes - 1.0));
        out[c] = (int64_t)v; /* truncation, as Python's int() */
    }
    return 0;
}

static int check_labels(const int32_t *labels, int64_t n, int n_classes)
{
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return err_set(ERR_FORMAT, "label %d of sample %lld outside 0..%d", labels[i],
                           (long long)i, n_classes - 1);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Positions of each class, ascending: pos[start[c] .. start[c+1]).  Owned arrays. */
static int group_by_class(const int32_t *labels, const int64_t *items, int64_t n,
                          int n_classes, int64_t **pos_out, int64_t **start_out)
{
    int64_t *start = calloc((size_t)n_classes + 1, sizeof *start);
    int64_t *pos = malloc(((size_t)n + 1) * sizeof *pos);
    int64_t *fill = calloc((size_t)n_classes + 1, sizeof *fill);
    if (!start || !pos || !fill) {
        free(start);
        free(pos);
        free(fill);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    for (int64_t i = 0; i < n; i++)
        start[labels[items ? items[i] : i] + 1]++;
    for (int c = 0; c < n_classes; c++)
        start[c + 1] += start[c];
    memcpy(fill, start, (size_t)n_classes * sizeof *fill);
    for (int64_t i = 0; i < n; i++) {
        int64_t p = items ? items[i] : i;
        pos[fill[labels[p]]++] = p;
    }
    free(fill);
    *pos_out = pos;
    *start_out = start;
    return 0;
}

int lt_select(const int32_t *labels, int64_t n, int n_classes, double imb, lt_profile profile,
              uint64_t seed, int64_t **out_pos, int64_t *out_n, int64_t *kept)
{
    *out_pos = NULL;
    *out_n = 0;
    int rc = check_labels(labels, n, n_classes);
    if (rc)
        return rc;
    int64_t *target = malloc((size_t)n_classes * sizeof *target);
    if (!target)
        return err_set(ERR_INTERNAL, "out of memory");
    rc = lt_counts((double)n / n_classes, n_classes, imb, profile, target);
    if (rc) {
        free(target);
        return rc;
    }
    int64_t *pos, *start;
    rc = group_by_class(labels, NULL, n, n_classes, &pos, &start);
    if (rc) {
        free(target);
        return rc;
    }
    int64_t *out = malloc(((size_t)n + 1) * sizeof *out), m = 0;
    if (!out) {
        free(target);
        free(pos);
        free(start);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    for (int c = 0; c < n_classes; c++) {
        int64_t avail = start[c + 1] - start[c];
        int64_t take = imb == 1.0 || target[c] > avail ? avail : target[c];
        if (take < avail) {
            rng r;
            rng_init(&r, seed, "lt", 0, c);
            rng_shuffle_i64(&r, pos + start[c], (size_t)avail);
        }
        memcpy(out + m, pos + start[c], (size_t)take * sizeof *out);
        m += take;
        if (kept)
            kept[c] = take;
    }
    qsort(out, (size_t)m, sizeof *out, cmp_i64);
    free(target);
    free(pos);
    free(start);
    *out_pos = out;
    *out_n = m;
    return 0;
}

static const char *const mode_names[] = {"creff", "dirichlet", "iid", "shards"};

int split_mode_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, mode_names[i]) == 0)
            return i;
    return -1;
}

const char *split_mode_name(split_mode m)
{
    return (unsigned)m < 4 ? mode_names[m] : "?";
}

void split_opts_default(split_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = SPLIT_CREFF;
    o->clients = 20;
    o->alpha = 0.5;
    o->seed = 7;
    o->min_size = 10;
    o->max_tries = 1000;
    o->classes_per_client = 2;
}

void split_free(split_result *s)
{
    if (!s)
        return;
    free(s->offsets);
    free(s->items);
    free(s->aux_offsets);
    free(s->aux_items);
    memset(s, 0, sizeof *s);
}

/* A growable list of positions per worker. */
typedef struct ilist {
    int64_t *v;
    int64_t n, cap;
} ilist;

static int ilist_append(ilist *l, const int64_t *src, int64_t k)
{
    if (k <= 0)
        return 0;
    if (l->n + k > l->cap) {
        int64_t cap = l->cap ? l->cap : 64;
        while (cap < l->n + k)
            cap *= 2;
        int64_t *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return err_set(ERR_INTERNAL, "out of memory");
        l->v = v;
        l->cap = cap;
    }
    memcpy(l->v + l->n, src, (size_t)k * sizeof *src);
    l->n += k;
    return 0;
}

/* Cut points of n_c items by proportions p[k]: cut[j] = floor(cumsum(p)[j] * n_c) for
 * j < k-1, clamped to be non-decreasing and <= n_c; cut[k-1] = n_c. */
static void dirichlet_cuts(const double *p, int k, int64_t n_c, int64_t *cut)
{
    double cs = 0;
    int64_t prev = 0;
    for (int j = 0; j < k - 1; j++) {
        cs += p[j];
        double v = cs * (double)n_c;
        int64_t c = v >= (double)n_c ? n_c : (int64_t)v;
        if (c < prev)
            c = prev;
        cut[j] = prev = c;
    }
    cut[k - 1] = n_c;
}

/* Equal contiguous slices of a flat list (CReFF partition_balance): sizes n/K, the first
 * n mod K one larger. */
static void balance_offsets(int64_t n, int k, int64_t *off)
{
    int64_t q = n / k, r = n % k;
    off[0] = 0;
    for (int i = 0; i < k; i++)
        off[i + 1] = off[i] + q + (i < r ? 1 : 0);
}

/* One chunk of the CReFF algorithm: items[n_s] (shuffled positions) onto nw workers. */
static int creff_chunk(const int32_t *labels, const int64_t *items, int64_t n_s, int nw,
                       int n_classes, double alpha, int max_tries, rng *r, ilist *workers,
                       int *tries_out)
{
    /* the chunk's positions of each class, in chunk (shuffled) order */
    int64_t *start = calloc((size_t)n_classes + 1, sizeof *start);
    int64_t *by_class = malloc(((size_t)n_s + 1) * sizeof *by_class);
    int64_t *fill = calloc((size_t)n_classes + 1, sizeof *fill);
    double *p = malloc((size_t)nw * sizeof *p), *pb = malloc((size_t)nw * sizeof *pb);
    int64_t *cut = malloc((size_t)nw * sizeof *cut);
    int rc = 0;
    if (!start || !by_class || !fill || !p || !pb || !cut) {
        rc = err_set(ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n_s; i++)
        start[labels[items[i]] + 1]++;
    for (int c = 0; c < n_classes; c++)
        start[c + 1] += start[c];
    memcpy(fill, start, (size_t)n_classes * sizeof *fill);
    for (int64_t i = 0; i < n_s; i++)
        by_class[fill[labels[items[i]]]++] = items[i];

    int64_t need = (int64_t)(0.5 * (double)n_s / nw); /* int(0.50 * size / workers) */
    double full = (double)n_s / nw;                    /* balance: size >= N_s/workers */
    int64_t min_size = -1;
    int tries = 0;
    while (min_size < need) {
        if (tries == max_tries) {
            rc = err_set(ERR_USAGE,
                         "creff split: no draw gave every auxiliary worker >= %lld of %lld "
                         "samples in %d tries (alpha %g, %d workers)",
                         (long long)need, (long long)n_s, tries, alpha, nw);
            goto done;
        }
        tries++;
        for (int j = 0; j < nw; j++)
            workers[j].n = 0;
        for (int c = 0; c < n_classes; c++) {
            int64_t n_c = start[c + 1] - start[c];
            rng_dirichlet(r, p, nw, alpha);
            double sum = 0;
            for (int j = 0; j < nw; j++) {
                pb[j] = (double)workers[j].n < full ? p[j] : 0.0;
                sum += pb[j];
            }
            /* NaN guard: the reference divides by a zero sum here; keep the raw draw */
            const double *q = p;
            if (sum > 0) {
                for (int j = 0; j < nw; j++)
                    pb[j] /= sum;
                q = pb;
            }
            dirichlet_cuts(q, nw, n_c, cut);
            int64_t from = 0;
            for (int j = 0; j < nw; j++) {
                rc = ilist_append(&workers[j], by_class + start[c] + from, cut[j] - from);
                if (rc)
                    goto done;
                from = cut[j];
            }
        }
        min_size = workers[0].n;
        for (int j = 1; j < nw; j++)
            if (workers[j].n < min_size)
                min_size = workers[j].n;
    }
    *tries_out = tries;
done:
    free(start);
    free(by_class);
    free(fill);
    free(p);
    free(pb);
    free(cut);
    return rc;
}

static int split_creff(const int32_t *labels, int64_t n, int n_classes, const split_opts *o,
                       int64_t *flat, int64_t *aux_off, int *tries)
{
    int k = o->clients;
    rng r;
    rng_init(&r, o->seed, "split", 0, -1);
    /* (index, label) pairs ordered by class, then shuffled */
    int64_t *items, *start;
    int rc = group_by_class(labels, NULL, n, n_classes, &items, &start);
    if (rc)
        return rc;
    free(start);
    rng_shuffle_i64(&r, items, (size_t)n);

    int aux = k < 10 ? k : 10;
    int n_splits = (k + aux - 1) / aux;
    ilist *workers = calloc((size_t)aux, sizeof *workers);
    if (!workers) {
        free(items);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    int64_t from = 0, nflat = 0;
    int left = k, w = 0;
    *tries = 0;
    aux_off[0] = 0;
    for (int s = 0; s < n_splits && !rc; s++) {
        int64_t to = from + (int64_t)((double)aux / k * (double)n); /* int(10/K * N) */
        if (s == n_splits - 1)
            to = n;
        int nw = left < aux ? left : aux;
        left -= aux;
        int t = 0;
        rc = creff_chunk(labels, items + from, to - from, nw, n_classes, o->alpha,
                         o->max_tries, &r, workers, &t);
        if (t > *tries)
            *tries = t;
        for (int j = 0; j < nw && !rc; j++) {
            if (workers[j].n)
                memcpy(flat + nflat, workers[j].v, (size_t)workers[j].n * sizeof *flat);
            nflat += workers[j].n;
            aux_off[++w] = nflat;
        }
        from = to;
    }
    for (int j = 0; j < aux; j++)
        free(workers[j].v);
    free(workers);
    free(items);
    if (!rc && nflat != n)
        rc = err_set(ERR_INTERNAL, "creff split lost samples (%lld of %lld)",
                     (long long)nflat, (long long)n);
    return rc;
}

static int split_dirichlet(const int32_t *labels, int64_t n, int n_classes,
                           const split_opts *o, int64_t *flat, int64_t *off, int *tries)
{
    int k = o->clients;
    rng r;
    rng_init(&r, o->seed, "split", 0, -1);
    int64_t *pos, *start;
    int rc = group_by_class(labels, NULL, n, n_classes, &pos, &start);
    if (rc)
        return rc;
    double *p = malloc((size_t)k * sizeof *p);
    int64_t *cut = malloc((size_t)n_classes * k * sizeof *cut);
    int64_t *size = malloc((size_t)k * sizeof *size);
    if (!p || !cut || !size) {
        rc = err_set(ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int c = 0; c < n_classes; c++)
        rng_shuffle_i64(&r, pos + start[c], (size_t)(start[c + 1] - start[c]));
    for (*tries = 1;; ++*tries) {
        memset(size, 0, (size_t)k * sizeof *size);
        for (int c = 0; c < n_classes; c++) {
            int64_t *cc = cut + (size_t)c * k, from = 0;
            rng_dirichlet(&r, p, k, o->alpha);
            dirichlet_cuts(p, k, start[c + 1] - start[c], cc);
            for (int j = 0; j < k; j++) {
                size[j] += cc[j] - from;
                from = cc[j];
            }
        }
        int64_t mn = size[0];
        for (int j = 1; j < k; j++)
            mn = size[j] < mn ? size[j] : mn;
        if (mn >= o->min_size)
            break;
        if (*tries >= o->max_tries) {
            rc = err_set(ERR_USAGE,
                         "dirichlet split: no draw gave every client >= %lld samples in %d "
                         "tries (alpha %g, %d clients, %lld samples); hint: raise --alpha or "
                         "lower --min-size or --clients",
                         (long long)o->min_size, *tries, o->alpha, k, (long long)n);
            goto done;
        }
    }
    /* lay out client by client */
    off[0] = 0;
    for (int j = 0; j < k; j++)
        off[j + 1] = off[j] + size[j];
    for (int j = 0; j < k; j++) {
        int64_t w = off[j];
        for (int c = 0; c < n_classes; c++) {
            int64_t *cc = cut + (size_t)c * k;
            int64_t a = j ? cc[j - 1] : 0, b = cc[j];
            memcpy(flat + w, pos + start[c] + a, (size_t)(b - a) * sizeof *flat);
            w += b - a;
        }
    }
done:
    free(pos);
    free(start);
    free(p);
    free(cut);
    free(size);
    return rc;
}

static int split_shards(const int32_t *labels, int64_t n, int n_classes, const split_opts *o,
                        int64_t *flat, int64_t *off)
{
    int k = o->clients, per = o->classes_per_client;
    if (per < 1 || per > n_classes)
        return err_set(ERR_USAGE, "shards split: classes per client %d must be in 1..%d", per,
                       n_classes);
    if ((int64_t)k * per < n_classes)
        return err_set(ERR_USAGE,
                       "shards split: %d clients x %d classes each cannot cover %d classes; "
                       "hint: raise --classes-per-client or --clients",
                       k, per, n_classes);
    rng r;
    rng_init(&r, o->seed, "split", 0, -1);
    int64_t *pos, *start;
    int rc = group_by_class(labels, NULL, n, n_classes, &pos, &start);
    if (rc)
        return rc;
    int32_t *perm = malloc((size_t)n_classes * sizeof *perm);
    int64_t *cnt = calloc((size_t)k * n_classes, sizeof *cnt); /* [client][class] */
    int64_t *holders = calloc((size_t)n_classes, sizeof *holders);
    if (!perm || !cnt || !holders) {
        rc = err_set(ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int c = 0; c < n_classes; c++) {
        perm[c] = c;
        rng_shuffle_i64(&r, pos + start[c], (size_t)(start[c + 1] - start[c]));
    }
    rng_shuffle_i32(&r, perm, (size_t)n_classes);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < per; j++)
            holders[perm[((int64_t)i * per + j) % n_classes]]++;
    /* class c's samples: equal contiguous parts to its holders in client order */
    int64_t *seen = calloc((size_t)n_classes, sizeof *seen);
    if (!seen) {
        rc = err_set(ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int i = 0; i < k; i++)
        for (int j = 0; j < per; j++) {
            int c = perm[((int64_t)i * per + j) % n_classes];
            int64_t nc = start[c + 1] - start[c], h = seen[c]++;
            cnt[(size_t)i * n_classes + c] = nc / holders[c] + (h < nc % holders[c] ? 1 : 0);
        }
    free(seen);
    off[0] = 0;
    for (int i = 0; i < k; i++) {
        int64_t s = 0;
        for (int c = 0; c < n_classes; c++)
            s += cnt[(size_t)i * n_classes + c];
        if (s == 0) {
            rc = err_set(ERR_USAGE,
                         "shards split: client %d gets no samples (its classes are too "
                         "small); hint: raise --classes-per-client or lower --clients",
                         i);
            goto done;
        }
        off[i + 1] = off[i] + s;
    }
    int64_t *taken = calloc((size_t)n_classes, sizeof *taken);
    if (!taken) {
        rc = err_set(ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int i = 0; i < k; i++) {
        int64_t w = off[i];
        for (int c = 0; c < n_classes; c++) {
            int64_t m = cnt[(size_t)i * n_classes + c];
            memcpy(flat + w, pos + start[c] + taken[c], (size_t)m * sizeof *flat);
            taken[c] += m;
            w += m;
        }
    }
    free(taken);
done:
    free(pos);
    free(start);
    free(perm);
    free(cnt);
    free(holders);
    return rc;
}

int split_make(const int32_t *labels, int64_t n, int n_classes, const split_opts *o,
               split_result *out)
{
    memset(out, 0, sizeof *out);
    int k = o->clients;
    if (k < 1)
        return err_set(ERR_USAGE, "split: %d clients (need at least 1)", k);
    if (n_classes < 1)
        return err_set(ERR_USAGE, "split: no classes");
    if (n < k)
        return err_set(ERR_USAGE, "split: %d clients but only %lld samples", k, (long long)n);
    if ((o->mode == SPLIT_CREFF || o->mode == SPLIT_DIRICHLET) &&
        (!(o->alpha > 0) || !isfinite(o->alpha)))
        return err_set(ERR_USAGE, "split: alpha %g must be > 0", o->alpha);
    if (o->mode == SPLIT_DIRICHLET && o->min_size * k > n)
        return err_set(ERR_USAGE,
                       "dirichlet split: %d clients x min size %lld exceeds %lld samples", k,
                       (long long)o->min_size, (long long)n);
    if (o->max_tries < 1)
        return err_set(ERR_USAGE, "split: max tries %d must be >= 1", o->max_tries);
    int rc = check_labels(labels, n, n_classes);
    if (rc)
        return rc;
    out->clients = k;
    out->offsets = malloc(((size_t)k + 1) * sizeof *out->offsets);
    out->items = malloc(((size_t)n + 1) * sizeof *out->items);
    if (!out->offsets || !out->items) {
        split_free(out);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    switch (o->mode) {
    case SPLIT_CREFF:
        out->aux_offsets = malloc(((size_t)k + 1) * sizeof *out->aux_offsets);
        out->aux_items = malloc(((size_t)n + 1) * sizeof *out->aux_items);
        if (!out->aux_offsets || !out->aux_items) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        rc = split_creff(labels, n, n_classes, o, out->items, out->aux_offsets, &out->tries);
        if (!rc)
            memcpy(out->aux_items, out->items, (size_t)n * sizeof *out->items);
        balance_offsets(n, k, out->offsets);
        break;
    case SPLIT_DIRICHLET:
        rc = split_dirichlet(labels, n, n_classes, o, out->items, out->offsets, &out->tries);
        break;
    case SPLIT_IID: {
        rng r;
        rng_init(&r, o->seed, "split", 0, -1);
        for (int64_t i = 0; i < n; i++)
            out->items[i] = i;
        rng_shuffle_i64(&r, out->items, (size_t)n);
        balance_offsets(n, k, out->offsets);
        out->tries = 1;
        break;
    }
    case SPLIT_SHARDS:
        rc = split_shards(labels, n, n_classes, o, out->items, out->offsets);
        out->tries = 1;
        break;
    default:
        rc = err_set(ERR_USAGE, "split: unknown mode %d", (int)o->mode);
    }
    if (rc) {
        split_free(out);
        return rc;
    }
    for (int j = 0; j < k; j++)
        qsort(out->items + out->offsets[j], (size_t)(out->offsets[j + 1] - out->offsets[j]),
              sizeof *out->items, cmp_i64);
    return 0;
}
