/* mixup.c - FedSM pseudo-features: guided selection of local features and mix-up with the
 * global prototypes (docs/algorithms.md sections 5.2, 5.4 step 3, 5.6).  See mixup.h.
 * Not here: feature extraction and prototypes (proto.c). */
#include "mixup.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void mixup_opts_default(mixup_opts *o)
{
    o->select = MIXUP_PROB;
    o->temp = 0;
    o->per_class = 100;
    o->lam_lo = 0.35;
    o->lam_hi = 0.95;
    o->seed = 7;
    o->round = 0;
    o->client = 0;
}

int mixup_select_parse(const char *s)
{
    return !strcmp(s, "prob") ? MIXUP_PROB : !strcmp(s, "det") ? MIXUP_DET
                                         : !strcmp(s, "uniform") ? MIXUP_UNIFORM : -1;
}

const char *mixup_select_name(mixup_select s)
{
    return s == MIXUP_PROB ? "prob" : s == MIXUP_DET ? "det" : s == MIXUP_UNIFORM ? "uniform" : "?";
}

typedef struct skey {
    double k1, k2; /* sorted descending by k1, then k2, then ascending index */
    int64_t i;
} skey;

static int skey_cmp(const void *pa, const void *pb)
{
    const skey *a = pa, *b = pb;
    if (a->k1 != b->k1)
        return a->k1 > b->k1 ? -1 : 1;
    if (a->k2 != b->k2)
        return a->k2 > b->k2 ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* uniform in (0, 1): never 0 or 1, so the Gumbel noise is finite */
static double open_uniform(rng *r)
{
    return ((double)(rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

int mixup_select_indices(int64_t *idx, int64_t k, const double *logw, int64_t n,
                         mixup_select mode, rng *r)
{
    if (n <= 0 || k < 0)
        return err_set(ERR_USAGE, "mixup: cannot select %lld of %lld local features",
                       (long long)k, (long long)n);
    skey *key = malloc((size_t)n * sizeof *key);
    if (!key)
        return err_set(ERR_INTERNAL, "mixup: out of memory");
    for (int64_t taken = 0; taken < k;) { /* one pass: a full random order, its prefix used */
        for (int64_t i = 0; i < n; i++) {
            double lw = mode == MIXUP_UNIFORM ? 0.0 : logw[i];
            double u = open_uniform(r);
            key[i].i = i;
            if (isnan(lw) || lw == -INFINITY) { /* weight 0: after every positive weight */
                key[i].k1 = -INFINITY;
                key[i].k2 = u;
            } else if (mode == MIXUP_DET) {
                key[i].k1 = lw;
                key[i].k2 = u;
            } else { /* Gumbel-top-k == sequential draws proportional to the weights */
                key[i].k1 = lw - log(-log(u));
                key[i].k2 = 0;
            }
        }
        qsort(key, (size_t)n, sizeof *key, skey_cmp);
        for (int64_t j = 0; j < n && taken < k; j++)
            idx[taken++] = key[j].i;
    }
    free(key);
    return 0;
}

static int check_finite_f(const float *a, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return err_set(ERR_FORMAT, "mixup: %s holds a non-finite value (%g at %zu)", what,
                           a[i], i);
    return 0;
}

int mixup_generate(float *out, int32_t *labels, const float *feats, const int32_t *y, int64_t n,
                   int D, const float *S, const float *P, int C, const mixup_opts *o,
                   int64_t *picked, float *lam)
{
    if (n <= 0)
        return err_set(ERR_USAGE, "mixup: the client has no local features to mix");
    if (D <= 0 || C <= 0 || o->per_class < 0 || !(o->lam_lo >= 0 && o->lam_lo <= o->lam_hi &&
                                                  o->lam_hi <= 1) ||
        !(o->temp >= 0) || !isfinite(o->temp) ||
        (o->select != MIXUP_PROB && o->select != MIXUP_DET && o->select != MIXUP_UNIFORM))
        return err_set(ERR_USAGE, "mixup: bad sizes or options (D %d, C %d, per_class %d, "
                                  "lambda [%g, %g], temp %g)",
                       D, C, o->per_class, o->lam_lo, o->lam_hi, o->temp);
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= C)
            return err_set(ERR_USAGE, "mixup: label %d of local feature %lld is outside [0, %d)",
                           y[i], (long long)i, C);
    int rc;
    if ((rc = check_finite_f(S, (size_t)C * C, "the relevance matrix")) ||
        (rc = check_finite_f(P, (size_t)C * D, "the prototypes")) ||
        (rc = check_finite_f(feats, (size_t)n * D, "the local features")))
        return rc;
    float *fn = malloc((size_t)n * (size_t)D * sizeof *fn);
    double *logw = malloc((size_t)n * sizeof *logw);
    int64_t k = o->per_class;
    int64_t *idx = malloc((size_t)(k ? k : 1) * sizeof *idx);
    if (!fn || !logw || !idx) {
        rc = err_set(ERR_INTERNAL, "mixup: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) { /* f / max(|f|, 1e-12) */
        const float *f = feats + (size_t)i * D;
        double s = 0;
        for (int d = 0; d < D; d++)
            s += (double)f[d] * f[d];
        double inv = 1.0 / fmax(sqrt(s), 1e-12);
        for (int d = 0; d < D; d++)
            fn[(size_t)i * D + d] = (float)(f[d] * inv);
    }
    rng rs, rl;
    rng_init(&rs, o->seed, "mixup-select", o->round, o->client);
    rng_init(&rl, o->seed, "mixup-lambda", o->round, o->client);
    for (int c = 0; c < C; c++) {
        const float *Sc = S + (size_t)c * C;
        for (int64_t i = 0; i < n; i++) {
            double s = Sc[y[i]];
            if (o->select == MIXUP_PROB && o->temp > 0)
                logw[i] = s / o->temp; /* log softmax(S/T) up to a constant */
            else
                logw[i] = s > 0 ? log(s) : -INFINITY;
        }
        if ((rc = mixup_select_indices(idx, k, logw, n, o->select, &rs)))
            goto done;
        const float *Pc = P + (size_t)c * D;
        for (int64_t j = 0; j < k; j++) {
            size_t row = (size_t)c * (size_t)k + (size_t)j;
            double l = rint((o->lam_lo + (o->lam_hi - o->lam_lo) * rng_uniform(&rl)) * 100.0) / 100.0;
            float lf = (float)l, mf = (float)(1.0 - l);
            const float *f = fn + (size_t)idx[j] * D;
            float *x = out + row * D;
            for (int d = 0; d < D; d++)
                x[d] = lf * Pc[d] + mf * f[d];
            labels[row] = c;
            if (picked)
                picked[row] = idx[j];
            if (lam)
                lam[row] = lf;
        }
    }
done:
    free(fn);
    free(logw);
    free(idx);
    return rc;
}
