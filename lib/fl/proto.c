/* proto.c - FedSM class prototypes: a client's local features and per-class unit means, and
 * the server's count-weighted average (docs/algorithms.md section 5.4 steps 1-2).  See
 * proto.h.  Not here: the mix-up (mixup.c). */
#include "proto.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int proto_features(float **feats, int32_t **labels, model *m, const shard *s,
                   const float mean[3], const float std[3], int bn_train)
{
    *feats = NULL;
    *labels = NULL;
    int rc = shard_check_fits(s, s->rec && s->rec->src[0] ? s->rec->src : "shard",
                              m->cfg.num_classes, m->cfg.in_channels, m->cfg.input_size,
                              m->cfg.input_size);
    if (rc)
        return rc;
    int D = m->feat_dim, S = m->cfg.input_size;
    size_t img = s->bytes ? (size_t)3 * S * S : (size_t)s->c * (size_t)s->h * (size_t)s->w;
    int64_t n = s->n;
    float *f = malloc((size_t)(n ? n : 1) * (size_t)D * sizeof *f);
    int32_t *y = malloc((size_t)(n ? n : 1) * sizeof *y);
    float *x = aligned_alloc64((size_t)PROTO_BATCH * img * sizeof *x);
    int64_t rows[PROTO_BATCH];
    if (!f || !y || !x) {
        rc = err_set(ERR_INTERNAL, "prototypes: out of memory");
        goto fail;
    }
    for (int64_t b0 = 0; b0 < n; b0 += PROTO_BATCH) {
        int nb = (int)(n - b0 < PROTO_BATCH ? n - b0 : PROTO_BATCH);
        for (int i = 0; i < nb; i++)
            rows[i] = b0 + i;
        if (s->bytes) {
            if ((rc = shard_gather_encoded(x, s, rows, nb, S, NULL, mean, std)))
                goto fail;
        } else {
            shard_gather(x, s, rows, nb, mean, std);
        }
        const float *fb = model_forward_features(m, x, nb, bn_train);
        if (!fb) {
            rc = err_last() ? err_last() : ERR_INTERNAL;
            goto fail;
        }
        memcpy(f + (size_t)b0 * D, fb, (size_t)nb * (size_t)D * sizeof *f);
    }
    memcpy(y, s->labels, (size_t)n * sizeof *y);
    aligned_free(x);
    *feats = f;
    *labels = y;
    return 0;
fail:
    free(f);
    free(y);
    aligned_free(x);
    return rc;
}

int proto_class_means(float *means, int64_t *counts, const float *feats, const int32_t *labels,
                      int64_t n, int D, int C)
{
    double *acc = calloc((size_t)C * (size_t)D, sizeof *acc);
    if (!acc)
        return err_set(ERR_INTERNAL, "prototypes: out of memory");
    for (int c = 0; c < C; c++)
        counts[c] = 0;
    for (int64_t i = 0; i < n; i++) {
        int c = labels[i];
        if (c < 0 || c >= C) {
            free(acc);
            return err_set(ERR_USAGE, "prototypes: label %d of sample %lld is outside [0, %d)", c,
                           (long long)i, C);
        }
        counts[c]++;
        double *a = acc + (size_t)c * D;
        const float *x = feats + (size_t)i * D;
        for (int d = 0; d < D; d++)
            a[d] += x[d];
    }
    for (int c = 0; c < C; c++) {
        double *a = acc + (size_t)c * D, s = 0;
        for (int d = 0; d < D; d++) {
            a[d] = counts[c] ? a[d] / (double)counts[c] : 0.0;
            s += a[d] * a[d];
        }
        double inv = 1.0 / fmax(sqrt(s), 1e-12);
        for (int d = 0; d < D; d++)
            means[(size_t)c * D + d] = (float)(a[d] * inv);
    }
    free(acc);
    return 0;
}

int proto_to_record(record *r, const float *means, const int64_t *counts, int C, int D,
                    int64_t round, int64_t client, const char *bn)
{
    int rc;
    if ((rc = rec_add(r, "means", DT_F32, 2, (int64_t[]){C, D}, (void *)means, REC_COPY)) ||
        (rc = rec_add(r, "counts", DT_I64, 1, (int64_t[]){C}, (void *)counts, REC_COPY)))
        return rc;
    if (rec_set_int(r, "round", round) || rec_set_int(r, "client", client) ||
        rec_set_int(r, "num_classes", C) || rec_set_int(r, "feat_dim", D) ||
        rec_set_str(r, "bn", bn))
        return err_set(ERR_INTERNAL, "prototypes: out of memory");
    return 0;
}

static const char *src_of(const record *r)
{
    return r->src[0] ? r->src : "prototypes";
}

int proto_from_record(const record *r, int C, int D, const float **means,
                      const int64_t **counts)
{
    const tensor *tm = rec_get(r, "means", DT_F32, 2, (int64_t[]){C, D});
    if (!tm)
        return err_last();
    if (tm->shape[0] > INT32_MAX || tm->shape[1] > INT32_MAX) /* [2^32 + 4, 0] holds no data */
        return err_set(ERR_FORMAT, "%s, record %ld, tensor means: shape [%lld,%lld] too large",
                       src_of(r), r->index, (long long)tm->shape[0], (long long)tm->shape[1]);
    C = (int)tm->shape[0];
    D = (int)tm->shape[1];
    const tensor *tc = rec_get(r, "counts", DT_I64, 1, (int64_t[]){C});
    if (!tc)
        return err_last();
    const float *m = tm->data;
    const int64_t *n = tc->data;
    for (size_t i = 0; i < (size_t)C * D; i++)
        if (!isfinite(m[i]))
            return err_set(ERR_FORMAT, "%s, record %ld, tensor means: %g at class %zu, dim %zu",
                           src_of(r), r->index, m[i], i / (size_t)D, i % (size_t)D);
    for (int c = 0; c < C; c++)
        if (n[c] < 0)
            return err_set(ERR_FORMAT, "%s, record %ld, tensor counts: %lld for class %d",
                           src_of(r), r->index, (long long)n[c], c);
    *means = m;
    *counts = n;
    return 0;
}

void proto_aggregate(float *P, int64_t *total, const float *const *means,
                     const int64_t *const *counts, int K, int C, int D)
{
    double *acc = malloc((size_t)D * sizeof *acc);
    for (int c = 0; c < C; c++) {
        int64_t nc = 0;
        for (int d = 0; d < D; d++)
            acc[d] = 0;
        for (int k = 0; k < K; k++) {
            int64_t w = counts[k][c];
            if (w <= 0)
                continue;
            const float *mu = means[k] + (size_t)c * D;
            double s = 0;
            for (int d = 0; d < D; d++)
                s += (double)mu[d] * mu[d];
            double f = (double)w / fmax(sqrt(s), 1e-12);
            for (int d = 0; d < D; d++)
                acc[d] += f * mu[d];
            nc += w;
        }
        for (int d = 0; d < D; d++)
            P[(size_t)c * D + d] = nc ? (float)(acc[d] / (double)nc) : 0.0f;
        total[c] = nc;
    }
    free(acc);
}

int proto_aggregate_records(record *out, record *const *in, int K)
{
    if (K <= 0)
        return err_set(ERR_USAGE, "prototypes: nothing to aggregate");
    const float **mu = malloc((size_t)K * sizeof *mu);
    const int64_t **cn = malloc((size_t)K * sizeof *cn);
    int64_t *ids = malloc((size_t)K * sizeof *ids);
    float *P = NULL;
    int64_t *tot = NULL;
    int rc = 0, C = -1, D = -1;
    if (!mu || !cn || !ids) {
        rc = err_set(ERR_INTERNAL, "prototypes: out of memory");
        goto done;
    }
    for (int k = 0; k < K; k++) {
        if ((rc = proto_from_record(in[k], C, D, &mu[k], &cn[k])))
            goto done;
        const tensor *t = rec_find(in[k], "means");
        C = (int)t->shape[0];
        D = (int)t->shape[1];
        ids[k] = -1;
        rec_opt_int(in[k], "client", &ids[k]);
    }
    for (int c = 0; c < C; c++) { /* proto_aggregate sums the counts: they must fit */
        int64_t sum = 0;
        for (int k = 0; k < K; k++)
            if (__builtin_add_overflow(sum, cn[k][c], &sum)) {
                rc = err_set(ERR_FORMAT, "%s, record %ld, tensor counts: %lld for class %d makes "
                             "the class's total overflow a 64-bit count", src_of(in[k]),
                             in[k]->index, (long long)cn[k][c], c);
                goto done;
            }
    }
    P = malloc((size_t)C * (size_t)D * sizeof *P + 1);
    tot = malloc((size_t)C * sizeof *tot + 1);
    if (!P || !tot) {
        rc = err_set(ERR_INTERNAL, "prototypes: out of memory");
        goto done;
    }
    proto_aggregate(P, tot, mu, cn, K, C, D);
    int64_t round = 0;
    const char *bn = "eval";
    rec_opt_int(in[0], "round", &round);
    rec_opt_str(in[0], "bn", &bn);
    if ((rc = proto_to_record(out, P, tot, C, D, round, -1, bn)))
        goto done;
    if (rec_set_ints(out, "clients", ids, (size_t)K))
        rc = err_set(ERR_INTERNAL, "prototypes: out of memory");
done:
    free(mu);
    free(cn);
    free(ids);
    free(P);
    free(tot);
    return rc;
}
