/* ops.c - the readable layer of nn.h: BatchNorm2d, ReLU, the residual add, pooling, linear,
 * softmax cross-entropy, distillation loss, SGD.  Plain loops over raw pointers (16-lane
 * vectors where a row is long), one _forward/_backward pair per op.
 * What it is not: convolution (conv.c) or products of large matrices (gemm.c, OpenBLAS).
 * Follows PyTorch's CPU semantics (docs/algorithms.md 1.5-1.6, 4.2): BatchNorm (batch stats,
 * unbiased running_var, momentum 0.1, eps 1e-5), CrossEntropyLoss (mean), kl_div(batchmean)
 * and SGD (dampening 0, no Nesterov).  BatchNorm runs on the pool, split by channel; the
 * others on the calling thread. */
#include "nn_impl.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* BatchNorm2d                                                                           */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    float *out, *din, *dgamma, *dbeta, *mean, *rstd, *rmean, *rvar;
    const float *in, *outc, *dout, *gamma, *beta, *meanc, *rstdc;
    int n, c, hw, train, relu;
    float momentum, eps;
} bn_task;

/* sum of (x - m)^2 */
static float row_ssd(const float *x, size_t n, float m)
{
    v16 a = vsplat(0), vm = vsplat(m);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        v16 e = vld(x + j) - vm;
        a += e * e;
    }
    float s = vhsum(a);
    for (; j < n; j++)
        s += (x[j] - m) * (x[j] - m);
    return s;
}

/* y = x * scale + shift, then max(0, .) when relu */
static void row_affine(float *y, const float *x, size_t n, float scale, float shift, int relu)
{
    v16 vs = vsplat(scale), vb = vsplat(shift), z = vsplat(0);
    size_t j = 0;
    if (relu) {
        for (; j + 16 <= n; j += 16) {
            v16 v = vld(x + j) * vs + vb;
            vst(y + j, vsel(v > z, v));
        }
    } else {
        for (; j + 16 <= n; j += 16)
            vst(y + j, vld(x + j) * vs + vb);
    }
    for (; j < n; j++) {
        float v = x[j] * scale + shift;
        y[j] = relu && !(v > 0) ? 0.0f : v;
    }
}

static void bn_forward_task(void *ctx, int tid, int nt)
{
    const bn_task *t = ctx;
    int lo, hi;
    split(t->c, tid, nt, &lo, &hi);
    const size_t hw = (size_t)t->hw, cstride = (size_t)t->c * hw;
    for (int ch = lo; ch < hi; ch++) {
        float mean, rstd;
        if (t->train) {
            double s = 0;
            for (int i = 0; i < t->n; i++)
                s += row_sum(t->in + i * cstride + ch * hw, hw);
            double cnt = (double)t->n * hw, m = s / cnt, v = 0;
            for (int i = 0; i < t->n; i++)
                v += row_ssd(t->in + i * cstride + ch * hw, hw, (float)m);
            double var = v / cnt;
            mean = (float)m;
            rstd = (float)(1.0 / sqrt(var + t->eps));
            double unb = cnt > 1 ? v / (cnt - 1) : var;
            t->rmean[ch] = (float)((1.0 - t->momentum) * t->rmean[ch] + t->momentum * m);
            t->rvar[ch] = (float)((1.0 - t->momentum) * t->rvar[ch] + t->momentum * unb);
        } else {
            mean = t->rmean[ch];
            rstd = (float)(1.0 / sqrt((double)t->rvar[ch] + t->eps));
        }
        t->mean[ch] = mean;
        t->rstd[ch] = rstd;
        float scale = t->gamma[ch] * rstd, shift = t->beta[ch] - mean * scale;
        for (int i = 0; i < t->n; i++)
            row_affine(t->out + i * cstride + ch * hw, t->in + i * cstride + ch * hw, hw, scale,
                       shift, t->relu);
    }
}

void nn_batchnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                          const float *beta, float *running_mean, float *running_var, int n, int c,
                          int hw, int train, float momentum, float eps, int relu)
{
    bn_task t = {.out = out,
                 .mean = mean,
                 .rstd = rstd,
                 .in = in,
                 .gamma = gamma,
                 .beta = beta,
                 .rmean = running_mean,
                 .rvar = running_var,
                 .n = n,
                 .c = c,
                 .hw = hw,
                 .train = train,
                 .momentum = momentum,
                 .eps = eps,
                 .relu = relu};
    pool_run(bn_forward_task, &t);
}

/* *a += sum g, *b += sum g (x - mean), g = dy (masked by y > 0 when y) */
static void row_bn_sums(const float *x, const float *dy, const float *y, size_t n, float mean,
                        double *a, double *b)
{
    v16 va = vsplat(0), vb = vsplat(0), vm = vsplat(mean), z = vsplat(0);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        v16 g = vld(dy + j);
        if (y)
            g = vsel(vld(y + j) > z, g);
        va += g;
        vb += g * (vld(x + j) - vm);
    }
    float sa = vhsum(va), sb = vhsum(vb);
    for (; j < n; j++) {
        float g = (!y || y[j] > 0) ? dy[j] : 0.0f;
        sa += g;
        sb += g * (x[j] - mean);
    }
    *a += sa;
    *b += sb;
}

/* dx = (g - gm - (x - mean) k) gr, g = dy (masked by y > 0 when y) */
static void row_bn_dx(float *dx, const float *x, const float *dy, const float *y, size_t n,
                      float mean, float gm, float k, float gr)
{
    v16 vm = vsplat(mean), vgm = vsplat(gm), vk = vsplat(k), vgr = vsplat(gr), z = vsplat(0);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        v16 g = vld(dy + j);
        if (y)
            g = vsel(vld(y + j) > z, g);
        vst(dx + j, (g - vgm - (vld(x + j) - vm) * vk) * vgr);
    }
    for (; j < n; j++) {
        float g = (!y || y[j] > 0) ? dy[j] : 0.0f;
        dx[j] = (g - gm - (x[j] - mean) * k) * gr;
    }
}

static void bn_backward_task(void *ctx, int tid, int nt)
{
    const bn_task *t = ctx;
    int lo, hi;
    split(t->c, tid, nt, &lo, &hi);
    const size_t hw = (size_t)t->hw, cstride = (size_t)t->c * hw;
    for (int ch = lo; ch < hi; ch++) {
        const float mean = t->meanc[ch], rstd = t->rstdc[ch];
        double sdy = 0, sdyx = 0;
        for (int i = 0; i < t->n; i++) {
            size_t o = i * cstride + ch * hw;
            row_bn_sums(t->in + o, t->dout + o, t->relu ? t->outc + o : NULL, hw, mean, &sdy,
                        &sdyx);
        }
        t->dgamma[ch] += (float)(sdyx * rstd);
        t->dbeta[ch] += (float)sdy;
        float gr = t->gamma[ch] * rstd, gm = 0, k = 0;
        if (t->train) { /* eval mode: the statistics are constants, gm = k = 0 */
            double cnt = (double)t->n * hw;
            gm = (float)(sdy / cnt);
            k = (float)(sdyx * rstd * rstd / cnt);
        }
        for (int i = 0; i < t->n; i++) {
            size_t o = i * cstride + ch * hw;
            row_bn_dx(t->din + o, t->in + o, t->dout + o, t->relu ? t->outc + o : NULL, hw, mean,
                      gm, k, gr);
        }
    }
}

void nn_batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *out, const float *mean, const float *rstd,
                           const float *gamma, int n, int c, int hw, int train, int relu)
{
    bn_task t = {.din = din,
                 .dgamma = dgamma,
                 .dbeta = dbeta,
                 .dout = dout,
                 .in = in,
                 .outc = out,
                 .meanc = mean,
                 .rstdc = rstd,
                 .gamma = gamma,
                 .n = n,
                 .c = c,
                 .hw = hw,
                 .train = train,
                 .relu = relu && out};
    pool_run(bn_backward_task, &t);
}

/* ------------------------------------------------------------------------------------ */
/* elementwise                                                                           */
/* ------------------------------------------------------------------------------------ */

void nn_relu_forward(float *out, const float *in, size_t n)
{
    row_affine(out, in, n, 1.0f, 0.0f, 1);
}

void nn_relu_backward(float *din, const float *dout, const float *out, size_t n)
{
    v16 z = vsplat(0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        vst(din + i, vsel(vld(out + i) > z, vld(dout + i)));
    for (; i < n; i++)
        din[i] = out[i] > 0 ? dout[i] : 0.0f;
}

void nn_add_forward(float *out, const float *a, const float *b, size_t n, int relu)
{
    v16 z = vsplat(0);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 v = vld(a + i) + vld(b + i);
        vst(out + i, relu ? vsel(v > z, v) : v);
    }
    for (; i < n; i++) {
        float v = a[i] + b[i];
        out[i] = relu && !(v > 0) ? 0.0f : v;
    }
}

/* ------------------------------------------------------------------------------------ */
/* pooling                                                                               */
/* ------------------------------------------------------------------------------------ */

void nn_avgpool_forward(float *out, const float *in, int n, int c, int hw)
{
    for (size_t i = 0; i < (size_t)n * c; i++) {
        const float *x = in + i * hw;
        float acc = 0;
        for (int j = 0; j < hw; j++)
            acc += x[j];
        out[i] = acc / (float)hw;
    }
}

void nn_avgpool_backward(float *din, const float *dout, int n, int c, int hw)
{
    for (size_t i = 0; i < (size_t)n * c; i++) {
        float g = dout[i] / (float)hw;
        float *dx = din + i * hw;
        for (int j = 0; j < hw; j++)
            dx[j] = g;
    }
}

void nn_maxpool_forward(float *out, int32_t *argmax, const float *in, int n, int c, int h, int w,
                        int k, int stride, int pad, int ho, int wo)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        const float *x = in + p * h * w;
        float *y = out + p * ho * wo;
        int32_t *am = argmax + p * ho * wo;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float best = -INFINITY;
                int32_t bi = -1;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * stride - pad + kx;
                        if (ix < 0 || ix >= w)
                            continue;
                        float v = x[iy * w + ix];
                        if (v > best || bi < 0 || isnan(v)) {
                            best = v;
                            bi = iy * w + ix;
                        }
                    }
                }
                y[oy * wo + ox] = best;
                am[oy * wo + ox] = bi;
            }
    }
}

void nn_maxpool_backward(float *din, const float *dout, const int32_t *argmax, int n, int c, int h,
                         int w, int ho, int wo)
{
    memset(din, 0, sizeof(float) * n * c * h * w);
    for (size_t p = 0; p < (size_t)n * c; p++) {
        float *dx = din + p * h * w;
        const float *dy = dout + p * ho * wo;
        const int32_t *am = argmax + p * ho * wo;
        for (int i = 0; i < ho * wo; i++)
            if (am[i] >= 0)
                dx[am[i]] += dy[i];
    }
}

/* ------------------------------------------------------------------------------------ */
/* linear                                                                                */
/* ------------------------------------------------------------------------------------ */

void nn_linear_forward(float *out, const float *in, const float *w, const float *b, int n,
                       int in_dim, int out_dim)
{
    if (b)
        for (int i = 0; i < n; i++)
            memcpy(out + (size_t)i * out_dim, b, sizeof(float) * out_dim);
    pool_blas_single();
    /* out (N, O) = in (N, I) @ w^T (I, O) (+ out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out_dim, in_dim, 1.0f, in, in_dim, w,
                in_dim, b ? 1.0f : 0.0f, out, out_dim);
}

void nn_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int in_dim, int out_dim)
{
    pool_blas_single();
    /* dw (O, I) += dout^T (O, N) @ in (N, I) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_dim, in_dim, n, 1.0f, dout, out_dim,
                in, in_dim, 1.0f, dw, in_dim);
    if (db)
        for (int o = 0; o < out_dim; o++) {
            float acc = 0;
            for (int i = 0; i < n; i++)
                acc += dout[(size_t)i * out_dim + o];
            db[o] += acc;
        }
    if (din) /* din (N, I) = dout (N, O) @ w (O, I) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in_dim, out_dim, 1.0f, dout,
                    out_dim, w, in_dim, 0.0f, din, in_dim);
}

/* ------------------------------------------------------------------------------------ */
/* losses                                                                                */
/* ------------------------------------------------------------------------------------ */

/* p (C) = softmax(x / t); returns log(sum exp((x - max)/t)) + max/t, i.e. logsumexp(x/t). */
static double softmax_row(float *p, const float *x, int c, float t)
{
    float mx = x[0];
    for (int j = 1; j < c; j++)
        if (x[j] > mx)
            mx = x[j];
    double s = 0;
    for (int j = 0; j < c; j++) {
        double e = exp(((double)x[j] - mx) / t);
        if (p)
            p[j] = (float)e;
        s += e;
    }
    if (p)
        for (int j = 0; j < c; j++)
            p[j] = (float)(p[j] / s);
    return log(s) + (double)mx / t;
}

float nn_cross_entropy_forward(float *probs, const float *logits, const int32_t *labels, int n,
                               int c)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        const float *x = logits + (size_t)i * c;
        double lse = softmax_row(probs ? probs + (size_t)i * c : NULL, x, c, 1.0f);
        loss += lse - x[labels[i]];
    }
    return n > 0 ? (float)(loss / n) : 0.0f;
}

void nn_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels, int n,
                               int c, float scale)
{
    float k = scale / (float)n;
    for (int i = 0; i < n; i++) {
        float *d = dlogits + (size_t)i * c;
        const float *p = probs + (size_t)i * c;
        for (int j = 0; j < c; j++)
            d[j] += k * (p[j] - (j == labels[i] ? 1.0f : 0.0f));
    }
}

float nn_kd_forward(const float *student, const float *teacher, int n, int c, float t, float alpha)
{
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *s = student + (size_t)i * c, *q = teacher + (size_t)i * c;
        double lse_s = softmax_row(NULL, s, c, t), lse_t = softmax_row(NULL, q, c, t);
        double kl = 0;
        for (int j = 0; j < c; j++) {
            double lpt = q[j] / (double)t - lse_t, lps = s[j] / (double)t - lse_s;
            double pt = exp(lpt);
            if (pt > 0)
                kl += pt * (lpt - lps);
        }
        total += kl;
    }
    return n > 0 ? (float)(alpha * (double)t * t * total / n) : 0.0f;
}

void nn_kd_backward(float *dlogits, const float *student, const float *teacher, int n, int c,
                    float t, float alpha)
{
    float k = alpha * t / (float)n;
    for (int i = 0; i < n; i++) {
        const float *s = student + (size_t)i * c, *q = teacher + (size_t)i * c;
        double lse_s = softmax_row(NULL, s, c, t), lse_t = softmax_row(NULL, q, c, t);
        float *d = dlogits + (size_t)i * c;
        for (int j = 0; j < c; j++) {
            double ps = exp(s[j] / (double)t - lse_s), pt = exp(q[j] / (double)t - lse_t);
            d[j] += (float)(k * (ps - pt));
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* optimizer                                                                             */
/* ------------------------------------------------------------------------------------ */

void nn_sgd_step(float *p, float *buf, const float *g, size_t n, float lr, float momentum, float wd)
{
    if (momentum != 0.0f && buf) {
        for (size_t i = 0; i < n; i++) {
            float gi = wd != 0.0f ? g[i] + wd * p[i] : g[i];
            buf[i] = momentum * buf[i] + gi;
            p[i] -= lr * buf[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float gi = wd != 0.0f ? g[i] + wd * p[i] : g[i];
            p[i] -= lr * gi;
        }
    }
}
