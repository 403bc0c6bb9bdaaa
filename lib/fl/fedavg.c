/* fedavg.c - weighted tensor averaging and finiteness checks (see fedavg.h). */
#include "fedavg.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int same_layout(const tensor *a, const tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

int fedavg_check_layout(record *const *in, int n)
{
    const record *r0 = in[0];
    for (int k = 1; k < n; k++) {
        if (in[k]->n_tensors != r0->n_tensors)
            return err_set(ERR_FORMAT, "%s has %d tensors but %s has %d: another architecture?",
                           in[k]->src, in[k]->n_tensors, r0->src, r0->n_tensors);
        for (int i = 0; i < r0->n_tensors; i++) {
            const tensor *t = rec_find(in[k], r0->tensors[i].name);
            if (!t || !same_layout(t, &r0->tensors[i]))
                return err_set(ERR_FORMAT,
                               "%s (record %ld, field tensors.%s): %s in %s: another architecture?",
                               in[k]->src, in[k]->index, r0->tensors[i].name,
                               t ? "dtype or shape differs from the one" : "missing, but present",
                               r0->src);
        }
    }
    return 0;
}

int fedavg_records(record *out, record *const *in, const double *w, int n)
{
    if (n <= 0)
        return err_set(ERR_USAGE, "nothing to average");
    double total = 0;
    for (int k = 0; k < n; k++) {
        if (!(w[k] >= 0))
            return err_set(ERR_USAGE, "negative weight for %s", in[k]->src);
        total += w[k];
    }
    if (!(total > 0))
        return err_set(ERR_RUNTIME, "the weights sum to zero (no samples?)");
    int rc = fedavg_check_layout(in, n);
    if (rc)
        return rc;
    const record *r0 = in[0];
    double *acc = NULL;
    size_t acc_n = 0;
    for (int i = 0; i < r0->n_tensors; i++) {
        const tensor *t0 = &r0->tensors[i];
        int64_t numel = tensor_numel(t0);
        void *dst = rec_add_new(out, t0->name, t0->dtype, t0->ndim, t0->shape);
        if (!dst) {
            free(acc);
            return err_last();
        }
        if (t0->dtype == DT_F32) {
            if ((size_t)numel > acc_n) {
                free(acc);
                acc_n = (size_t)numel;
                acc = malloc(acc_n * sizeof *acc);
                if (!acc)
                    return err_set(ERR_INTERNAL, "out of memory");
            }
            memset(acc, 0, (size_t)numel * sizeof *acc);
            for (int k = 0; k < n; k++) {
                const float *src = rec_find(in[k], t0->name)->data;
                double wk = w[k] / total;
                for (int64_t j = 0; j < numel; j++)
                    acc[j] += wk * src[j];
            }
            float *d = dst;
            for (int64_t j = 0; j < numel; j++)
                d[j] = (float)acc[j];
        } else if (t0->dtype == DT_I64 || t0->dtype == DT_I32) {
            for (int64_t j = 0; j < numel; j++) {
                int64_t mx = INT64_MIN;
                for (int k = 0; k < n; k++) {
                    const tensor *t = rec_find(in[k], t0->name);
                    int64_t v = t->dtype == DT_I64 ? ((const int64_t *)t->data)[j]
                                                   : ((const int32_t *)t->data)[j];
                    mx = v > mx ? v : mx;
                }
                if (t0->dtype == DT_I64)
                    ((int64_t *)dst)[j] = mx;
                else
                    ((int32_t *)dst)[j] = (int32_t)mx;
            }
        } else {
            free(acc);
            return err_set(ERR_FORMAT, "%s (field tensors.%s): cannot average %s tensors",
                           r0->src, t0->name, dtype_str(t0->dtype));
        }
    }
    free(acc);
    return 0;
}

int check_finite(const record *r, const char *who)
{
    for (int i = 0; i < r->n_tensors; i++) {
        const tensor *t = &r->tensors[i];
        if (t->dtype != DT_F32)
            continue;
        const float *p = t->data;
        int64_t n = tensor_numel(t), bad = 0;
        for (int64_t j = 0; j < n; j++)
            bad += !isfinite(p[j]);
        if (bad)
            return err_set(ERR_RUNTIME, "%s holds %lld NaN/Inf values in tensor %s (stream %s)",
                           who, (long long)bad, t->name, r->src);
    }
    return 0;
}
