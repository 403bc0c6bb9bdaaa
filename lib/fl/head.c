/* head.c - a fresh linear head trained with SGD on labelled features (docs/algorithms.md
 * section 3 step 7, section 5.4 step 4).  See head.h.
 *
 * Speed: one step is two small GEMMs (logits = x W^T, and W -= lr/n g^T x fused into the
 * weight update when momentum is 0) on a gathered batch, plus a softmax over (batch, C).
 * No per-step allocation, no gradient buffer on the plain-SGD path.  Not a general
 * optimiser: the models' own SGD lives in nn.h. */
#include "head.h"

#include "err.h"
#include "pool.h"
#include "record.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void head_opts_default(head_opts *o)
{
    o->epochs = 300;
    o->batch = 32;
    o->lr = 0.01f;
    o->momentum = 0.0f;
    o->wd = 0.0f;
    o->seed = 7;
    o->round = 0;
    o->client = -1;
}

void head_init(float *w, float *b, int C, int D, rng *r)
{
    double bound = 1.0 / sqrt((double)D);
    for (size_t i = 0; i < (size_t)C * (size_t)D; i++)
        w[i] = (float)((2.0 * rng_uniform(r) - 1.0) * bound);
    for (int c = 0; c < C; c++)
        b[c] = (float)((2.0 * rng_uniform(r) - 1.0) * bound);
}

/* g (n, C): logits in, (softmax - onehot) / n out; returns the summed loss (double). */
static double softmax_ce_grad(float *g, const int32_t *y, int n, int C)
{
    double loss = 0;
    float inv = 1.0f / (float)n;
    for (int i = 0; i < n; i++) {
        float *l = g + (size_t)i * C;
        float mx = l[0];
        for (int c = 1; c < C; c++)
            mx = l[c] > mx ? l[c] : mx;
        float s = 0, ly = l[y[i]] - mx;
        for (int c = 0; c < C; c++) {
            l[c] = expf(l[c] - mx);
            s += l[c];
        }
        loss += log((double)s) - (double)ly;
        float k = inv / s;
        for (int c = 0; c < C; c++)
            l[c] *= k;
        l[y[i]] -= inv;
    }
    return loss;
}

int head_train(float *w, float *b, const float *x, const int32_t *y, int64_t n, int D, int C,
               const head_opts *o, const int64_t *orders, double *loss)
{
    if (n <= 0 || D <= 0 || C <= 0 || o->batch <= 0 || o->epochs < 0 || !isfinite(o->lr) ||
        !(o->momentum >= 0) || !(o->wd >= 0))
        return err_set(ERR_USAGE, "head: bad sizes or options (n %lld, D %d, C %d, batch %d, "
                                  "epochs %d, lr %g, momentum %g, wd %g)",
                       (long long)n, D, C, o->batch, o->epochs, o->lr, o->momentum, o->wd);
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= C)
            return err_set(ERR_USAGE, "head: label %d of sample %lld is outside [0, %d)", y[i],
                           (long long)i, C);
    pool_blas_single(); /* small GEMMs: a threaded OpenBLAS only spins */
    int B = o->batch < n ? o->batch : (int)n;
    size_t wn = (size_t)C * (size_t)D;
    float *xb = aligned_alloc64((size_t)B * (size_t)D * sizeof *xb);
    float *g = aligned_alloc64((size_t)B * (size_t)C * sizeof *g);
    int32_t *yb = malloc((size_t)B * sizeof *yb);
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    int mom = o->momentum != 0.0f;
    float *gw = mom ? aligned_alloc64(wn * sizeof *gw) : NULL;
    float *bw = mom ? aligned_alloc64(wn * sizeof *bw) : NULL;
    float *gb = malloc((size_t)C * sizeof *gb), *bb = calloc((size_t)C, sizeof *bb);
    int rc = 0;
    if (!xb || !g || !yb || !perm || (mom && (!gw || !bw)) || !gb || !bb) {
        rc = err_set(ERR_INTERNAL, "head: out of memory");
        goto done;
    }
    if (mom)
        memset(bw, 0, wn * sizeof *bw);
    rng rs;
    rng_init(&rs, o->seed, "head-shuffle", o->round, o->client);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    double epoch_loss = NAN;
    float decay = 1.0f - o->lr * o->wd;
    for (int e = 0; e < o->epochs; e++) {
        if (orders) {
            const int64_t *oe = orders + (size_t)e * (size_t)n;
            for (int64_t i = 0; i < n; i++) {
                if (oe[i] < 0 || oe[i] >= n) {
                    rc = err_set(ERR_USAGE, "head: order %d holds %lld, outside [0, %lld)", e,
                                 (long long)oe[i], (long long)n);
                    goto done;
                }
                perm[i] = oe[i];
            }
        } else {
            rng_shuffle_i64(&rs, perm, (size_t)n);
        }
        double sum = 0;
        for (int64_t b0 = 0; b0 < n; b0 += B) {
            int nb = (int)(n - b0 < B ? n - b0 : B);
            for (int i = 0; i < nb; i++) {
                int64_t r = perm[b0 + i];
                memcpy(xb + (size_t)i * D, x + (size_t)r * D, (size_t)D * sizeof *xb);
                yb[i] = y[r];
            }
            /* g = logits = xb W^T + b */
            for (int i = 0; i < nb; i++)
                memcpy(g + (size_t)i * C, b, (size_t)C * sizeof *g);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, C, D, 1.0f, xb, D, w, D, 1.0f,
                        g, C);
            sum += softmax_ce_grad(g, yb, nb, C); /* g: dloss/dlogits */
            for (int c = 0; c < C; c++)
                gb[c] = 0;
            for (int i = 0; i < nb; i++)
                for (int c = 0; c < C; c++)
                    gb[c] += g[(size_t)i * C + c];
            if (!mom) { /* p -= lr (g + wd p), fused: p = (1 - lr wd) p - lr g */
                if (o->wd != 0.0f) {
                    cblas_sscal((int)wn, decay, w, 1);
                    for (int c = 0; c < C; c++)
                        b[c] *= decay;
                }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, nb, -o->lr, g, C, xb, D,
                            1.0f, w, D);
                for (int c = 0; c < C; c++)
                    b[c] -= o->lr * gb[c];
            } else { /* PyTorch SGD: g' = g + wd p; buf = m buf + g'; p -= lr buf */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, nb, 1.0f, g, C, xb, D,
                            0.0f, gw, D);
                for (size_t i = 0; i < wn; i++) {
                    bw[i] = o->momentum * bw[i] + (gw[i] + o->wd * w[i]);
                    w[i] -= o->lr * bw[i];
                }
                for (int c = 0; c < C; c++) {
                    bb[c] = o->momentum * bb[c] + (gb[c] + o->wd * b[c]);
                    b[c] -= o->lr * bb[c];
                }
            }
        }
        epoch_loss = sum / (double)n;
        if (!isfinite(epoch_loss)) {
            rc = err_set(ERR_RUNTIME, "head: the loss became %g in epoch %d of %d; lower the "
                                      "learning rate?",
                         epoch_loss, e + 1, o->epochs);
            goto done;
        }
    }
    if (loss)
        *loss = epoch_loss;
done:
    aligned_free(xb);
    aligned_free(g);
    aligned_free(gw);
    aligned_free(bw);
    free(yb);
    free(perm);
    free(gb);
    free(bb);
    return rc;
}

int head_fit(float *w, float *b, const float *x, const int32_t *y, int64_t n, int D, int C,
             const head_opts *o, double *loss)
{
    rng ri;
    rng_init(&ri, o->seed, "head-init", o->round, o->client);
    head_init(w, b, C, D, &ri);
    return head_train(w, b, x, y, n, D, C, o, NULL, loss);
}

int head_features_from_record(const record *r, int C, int D, const float **x, const int32_t **y,
                         int64_t *n)
{
    const tensor *ft = rec_get(r, "features", DT_F32, 2, NULL);
    if (!ft)
        return err_last();
    int64_t N = ft->shape[0];
    if (ft->shape[1] != D)
        return err_set(ERR_FORMAT, "features of dimension %lld (stream %s, tensor features): the "
                                   "model's feat_dim is %d (features of another model?)",
                       (long long)ft->shape[1], r->src, D);
    if (N == 0)
        return err_set(ERR_FORMAT, "no features (stream %s, tensor features): shape [0, %d]",
                       r->src, D);
    const tensor *lt = rec_get(r, "labels", DT_I32, 1, (int64_t[]){N});
    if (!lt)
        return err_last();
    int64_t fc = -1;
    int rc = rec_opt_int(r, "num_classes", &fc);
    if (rc < 0)
        return rc;
    if (fc >= 0 && fc != C)
        return err_set(ERR_FORMAT, "features for %lld classes (stream %s, meta.num_classes): the "
                                   "model has %d", (long long)fc, r->src, C);
    const int32_t *lab = lt->data;
    for (int64_t i = 0; i < N; i++)
        if (lab[i] < 0 || lab[i] >= C)
            return err_set(ERR_FORMAT, "label %d of feature %lld is outside [0, %d) (stream %s, "
                                       "tensor labels)", lab[i], (long long)i, C, r->src);
    const float *f = ft->data;
    for (int64_t i = 0; i < N * D; i++)
        if (!isfinite(f[i]))
            return err_set(ERR_FORMAT, "feature %lld, dim %lld is %g (stream %s, tensor "
                                       "features): not finite",
                           (long long)(i / D), (long long)(i % D), f[i], r->src);
    *x = f;
    *y = lab;
    *n = N;
    return 0;
}
