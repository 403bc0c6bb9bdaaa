/* test_nn.c - finite-difference gradient checks for every nn.h kernel with a backward
 * (conv2d in five shapes, BatchNorm2d train/eval with and without fused ReLU, ReLU, average
 * and max pool, linear, cross-entropy, distillation loss), plus SGD against PyTorch's update
 * rule written out (weight decay with and without momentum), crop/flip (imgaug.h) against a
 * direct reference, and bitwise run-to-run determinism at 2 threads.  BatchNorm runs at plane
 * widths 5, 16 and 37, so the 16-lane helpers' scalar tail, vector body and both are checked.
 *
 * Convolutions and BatchNorm run at 1 and 2 threads, and with every conv algorithm
 * (implicit GEMM, im2col + OpenBLAS, Winograd F(2x2, 3x3)); convolutions are also checked against a
 * direct double-precision convolution (forward, dx, dw, db) in odd and even sizes, N = 1..3,
 * channel counts that are not multiples of 16.
 * Method: L = sum(r * out) with a fixed random r (accumulated in double); the analytic
 * gradient is backward(dout = r); the numeric one is the fp32 central difference
 * (L(x + h) - L(x - h)) / 2h, h = 1e-2 (1e-3 for max pool, whose inputs sit on a 0.05 grid).
 * Error = max |analytic - numeric| / max |analytic| over the checked entries (up to 40
 * per tensor); tolerance 5e-3 (fp32 round-off of L over h dominates). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgaug.h"
#include "nn.h"
#include "pool.h"
#include "rng.h"
#include "testlib.h"

#define FD_TOL 5e-3

static rng R;
static float *randv(size_t n, float scale)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(scale * rng_normal(&R));
    return v;
}
static float *zerov(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

typedef double (*loss_fn)(void *ctx);

/* Checks analytic gradient g of loss(ctx) w.r.t. p[0..n). */
static double fd_check(const char *what, loss_fn f, void *ctx, float *p, const float *g, size_t n,
                       float h)
{
    double gmax = 0, dmax = 0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(g[i]));
    size_t step = n > 40 ? n / 40 : 1;
    for (size_t i = 0; i < n; i += step) {
        float keep = p[i];
        p[i] = keep + h;
        double lp = f(ctx);
        p[i] = keep - h;
        double lm = f(ctx);
        p[i] = keep;
        double num = (lp - lm) / (2.0 * h);
        dmax = fmax(dmax, fabs(num - g[i]));
    }
    double err = dmax / fmax(gmax, 1e-12);
    CHECK_MSG(err <= FD_TOL, "%s: finite-difference error %.3g", what, err);
    fprintf(stderr, "  %-36s fd err %.2e\n", what, err);
    return err;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ---- conv ---- */
typedef struct {
    nn_conv2d_dims d;
    float *x, *w, *b, *y, *r, *ws;
} conv_ctx;
static double conv_loss(void *p)
{
    conv_ctx *c = p;
    nn_conv2d_forward(c->y, c->x, c->w, c->b, &c->d, c->ws);
    return dot(c->y, c->r, (size_t)c->d.n * c->d.co * c->d.ho * c->d.wo);
}
static void test_conv(int n, int ci, int h, int w, int co, int k, int s, int pad, int bias)
{
    conv_ctx c = {.d = nn_conv2d_make(n, ci, h, w, co, k, s, pad)};
    size_t nx = (size_t)n * ci * h * w, nw = (size_t)co * ci * k * k,
           ny = (size_t)n * co * c.d.ho * c.d.wo;
    c.x = randv(nx, 1), c.w = randv(nw, 0.3f), c.b = bias ? randv(co, 0.1f) : NULL;
    c.y = zerov(ny), c.r = randv(ny, 1), c.ws = zerov(nn_conv2d_ws_floats(&c.d));
    float *dx = zerov(nx), *dw = zerov(nw), *db = zerov(co);
    nn_conv2d_backward(dx, dw, bias ? db : NULL, c.r, c.x, c.w, &c.d, c.ws);
    char name[96];
    snprintf(name, sizeof name, "conv k%d s%d p%d %dx%d %d->%d dx", k, s, pad, h, w, ci, co);
    fd_check(name, conv_loss, &c, c.x, dx, nx, 1e-2f);
    name[strlen(name) - 2] = 0;
    strcat(name, "dw");
    fd_check(name, conv_loss, &c, c.w, dw, nw, 1e-2f);
    if (bias) {
        name[strlen(name) - 2] = 0;
        strcat(name, "db");
        fd_check(name, conv_loss, &c, c.b, db, co, 1e-2f);
    }
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(c.ws), free(dx), free(dw);
    free(db);
}

/* ---- conv against a direct double-precision convolution (forward, dx, dw, db) ----
 * Error = max |ours - reference| / max |reference| per tensor; tolerance 1e-5 (fp32 sums of
 * up to Ci*9 products; Winograd adds the transforms' rounding). */
#define DIRECT_TOL 1e-5
static double rel_err(const float *a, const double *ref, size_t n)
{
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs(a[i] - ref[i])), mx = fmax(mx, fabs(ref[i]));
    return d / fmax(mx, 1e-30);
}
static void test_conv_direct(int n, int ci, int h, int w, int co, int k, int s, int pad, int bias)
{
    nn_conv2d_dims d = nn_conv2d_make(n, ci, h, w, co, k, s, pad);
    size_t nx = (size_t)n * ci * h * w, nw = (size_t)co * ci * k * k,
           ny = (size_t)n * co * d.ho * d.wo;
    float *x = randv(nx, 1), *wt = randv(nw, 0.3f), *b = bias ? randv(co, 0.1f) : NULL;
    float *dy = randv(ny, 1), *y = zerov(ny), *dx = zerov(nx), *dw = zerov(nw), *db = zerov(co);
    float *ws = zerov(nn_conv2d_ws_floats(&d));
    double *ry = calloc(ny, sizeof(double)), *rdx = calloc(nx, sizeof(double)),
           *rdw = calloc(nw, sizeof(double)), *rdb = calloc(co, sizeof(double));
    for (size_t i = 0; i < nx; i++) /* stale values must not leak into an overwritten dx */
        dx[i] = 1e30f;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < co; o++)
            for (int oy = 0; oy < d.ho; oy++)
                for (int ox = 0; ox < d.wo; ox++) {
                    size_t yi = (((size_t)i * co + o) * d.ho + oy) * d.wo + ox;
                    double acc = bias ? b[o] : 0;
                    rdb[o] += dy[yi];
                    for (int c = 0; c < ci; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s - pad + ky, ix = ox * s - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                size_t xi = (((size_t)i * ci + c) * h + iy) * w + ix;
                                size_t wi = (((size_t)o * ci + c) * k + ky) * k + kx;
                                acc += (double)x[xi] * wt[wi];
                                rdx[xi] += (double)dy[yi] * wt[wi];
                                rdw[wi] += (double)dy[yi] * x[xi];
                            }
                    ry[yi] = acc;
                }
    nn_conv2d_forward(y, x, wt, b, &d, ws);
    nn_conv2d_backward(dx, dw, bias ? db : NULL, dy, x, wt, &d, ws);
    double e[4] = {rel_err(y, ry, ny), rel_err(dx, rdx, nx), rel_err(dw, rdw, nw),
                   bias ? rel_err(db, rdb, co) : 0};
    static const char *what[4] = {"y", "dx", "dw", "db"};
    for (int j = 0; j < 4; j++)
        CHECK_MSG(e[j] <= DIRECT_TOL, "conv k%d s%d p%d %dx%d %d->%d n%d %s: direct error %.3g", k,
                  s, pad, h, w, ci, co, n, what[j], e[j]);
    fprintf(stderr, "  conv k%d s%d p%d %2dx%-2d %2d->%-2d n%d  vs direct: y %.1e dx %.1e dw %.1e\n",
            k, s, pad, h, w, ci, co, n, e[0], e[1], e[2]);
    free(x), free(wt), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(ws);
    free(ry), free(rdx), free(rdw), free(rdb);
}

/* ---- batchnorm ---- */
typedef struct {
    int n, c, hw, train, relu;
    float *x, *g, *b, *rm, *rv, *y, *mean, *rstd, *r, *rm0, *rv0;
} bn_ctx;
static double bn_loss(void *p)
{
    bn_ctx *c = p;
    memcpy(c->rm, c->rm0, sizeof(float) * c->c); /* keep running stats fixed across calls */
    memcpy(c->rv, c->rv0, sizeof(float) * c->c);
    nn_batchnorm_forward(c->y, c->mean, c->rstd, c->x, c->g, c->b, c->rm, c->rv, c->n, c->c, c->hw,
                         c->train, 0.1f, 1e-5f, c->relu);
    return dot(c->y, c->r, (size_t)c->n * c->c * c->hw);
}
/* hw: the plane width, which picks the code path of the 16-lane row helpers: 5 runs only
 * their scalar tail, 16 only the vector body, 37 both (two vectors and a tail of 5) */
static void test_bn(int train, int relu, int hw)
{
    bn_ctx c = {.n = 3, .c = 4, .hw = hw, .train = train, .relu = relu};
    size_t nx = (size_t)c.n * c.c * c.hw;
    c.x = randv(nx, 1), c.g = randv(c.c, 0.5f), c.b = randv(c.c, 0.5f);
    c.rm0 = randv(c.c, 0.2f), c.rv0 = zerov(c.c), c.rm = zerov(c.c), c.rv = zerov(c.c);
    for (int i = 0; i < c.c; i++)
        c.g[i] += 1.0f, c.rv0[i] = 0.5f + (float)i * 0.3f;
    c.y = zerov(nx), c.mean = zerov(c.c), c.rstd = zerov(c.c), c.r = randv(nx, 1);
    float *dx = zerov(nx), *dg = zerov(c.c), *db = zerov(c.c);
    float h = 1e-2f;
    if (relu) { /* keep every pre-ReLU value 0.05 away from the kink */
        h = 1e-3f;
        for (int tries = 0; tries < 1000; tries++) {
            c.relu = 0;
            bn_loss(&c);
            double mn = 1e9;
            for (size_t i = 0; i < nx; i++)
                mn = fmin(mn, fabs(c.y[i]));
            if (mn > 0.05)
                break;
            if (c.hw <= 5) { /* small planes: a fresh draw of x soon works */
                for (size_t i = 0; i < nx; i++)
                    c.x[i] = (float)rng_normal(&R);
                continue;
            }
            /* larger ones (a fresh draw almost never works): push each near-kink input away
             * from the kink, the way its output leans (dy/dx has gamma's sign) */
            for (size_t i = 0; i < nx; i++)
                if (fabs(c.y[i]) <= 0.05)
                    c.x[i] += (c.y[i] >= 0) == (c.g[(i / c.hw) % c.c] >= 0) ? 0.25f : -0.25f;
        }
        c.relu = 1;
    }
    bn_loss(&c);
    /* running-stat update (train): PyTorch's rule with the unbiased variance */
    if (train) {
        for (int ch = 0; ch < c.c; ch++) {
            double s = 0, s2 = 0, cnt = c.n * c.hw;
            for (int i = 0; i < c.n; i++)
                for (int j = 0; j < c.hw; j++)
                    s += c.x[(i * c.c + ch) * c.hw + j];
            double m = s / cnt;
            for (int i = 0; i < c.n; i++)
                for (int j = 0; j < c.hw; j++) {
                    double e = c.x[(i * c.c + ch) * c.hw + j] - m;
                    s2 += e * e;
                }
            CHECK_CLOSE(c.rm[ch], 0.9 * c.rm0[ch] + 0.1 * m, 1e-6);
            CHECK_CLOSE(c.rv[ch], 0.9 * c.rv0[ch] + 0.1 * s2 / (cnt - 1), 1e-6);
        }
    } else {
        for (int ch = 0; ch < c.c; ch++)
            CHECK(c.rm[ch] == c.rm0[ch] && c.rv[ch] == c.rv0[ch]);
    }
    nn_batchnorm_backward(dx, dg, db, c.r, c.x, c.y, c.mean, c.rstd, c.g, c.n, c.c, c.hw, train,
                          relu);
    char name[64], hws[16] = "";
    if (hw != 5) /* (the original name for the original width) */
        snprintf(hws, sizeof hws, " hw%d", hw);
    snprintf(name, sizeof name, "batchnorm %s%s%s dx", train ? "train" : "eval",
             relu ? "+relu" : "", hws);
    fd_check(name, bn_loss, &c, c.x, dx, nx, h);
    snprintf(name, sizeof name, "batchnorm %s%s%s dgamma", train ? "train" : "eval",
             relu ? "+relu" : "", hws);
    fd_check(name, bn_loss, &c, c.g, dg, c.c, h);
    snprintf(name, sizeof name, "batchnorm %s%s%s dbeta", train ? "train" : "eval",
             relu ? "+relu" : "", hws);
    fd_check(name, bn_loss, &c, c.b, db, c.c, h);
    free(c.x), free(c.g), free(c.b), free(c.rm0), free(c.rv0), free(c.rm), free(c.rv);
    free(c.y), free(c.mean), free(c.rstd), free(c.r), free(dx), free(dg), free(db);
}

/* ---- relu, pools ---- */
typedef struct {
    int kind; /* 0 relu, 1 avgpool, 2 maxpool */
    int n, c, h, w, ho, wo;
    float *x, *y, *r;
    int32_t *am;
} pool_ctx;
static double pool_loss(void *p)
{
    pool_ctx *c = p;
    size_t ny;
    if (c->kind == 0) {
        ny = (size_t)c->n * c->c * c->h * c->w;
        nn_relu_forward(c->y, c->x, ny);
    } else if (c->kind == 1) {
        ny = (size_t)c->n * c->c;
        nn_avgpool_forward(c->y, c->x, c->n, c->c, c->h * c->w);
    } else {
        ny = (size_t)c->n * c->c * c->ho * c->wo;
        nn_maxpool_forward(c->y, c->am, c->x, c->n, c->c, c->h, c->w, 3, 2, 1, c->ho, c->wo);
    }
    return dot(c->y, c->r, ny);
}
static void test_pools(void)
{
    pool_ctx c = {.n = 2, .c = 3, .h = 7, .w = 6};
    c.ho = (c.h + 2 - 3) / 2 + 1, c.wo = (c.w + 2 - 3) / 2 + 1;
    size_t nx = (size_t)c.n * c.c * c.h * c.w;
    c.x = zerov(nx), c.y = zerov(nx), c.r = randv(nx, 1);
    c.am = malloc(sizeof(int32_t) * nx);
    /* distinct values on a 0.05 grid, away from 0: no ties, no kinks within h */
    for (size_t i = 0; i < nx; i++)
        c.x[i] = 0.05f * (float)((i * 37) % nx) - 0.025f * (float)nx + 0.0125f;
    float *dx = zerov(nx);
    c.kind = 0;
    pool_loss(&c);
    nn_relu_backward(dx, c.r, c.y, nx);
    fd_check("relu dx", pool_loss, &c, c.x, dx, nx, 1e-3f);
    c.kind = 1;
    pool_loss(&c);
    nn_avgpool_backward(dx, c.r, c.n, c.c, c.h * c.w);
    fd_check("avgpool dx", pool_loss, &c, c.x, dx, nx, 1e-2f);
    c.kind = 2;
    pool_loss(&c);
    nn_maxpool_backward(dx, c.r, c.am, c.n, c.c, c.h, c.w, c.ho, c.wo);
    fd_check("maxpool 3x3 s2 p1 dx", pool_loss, &c, c.x, dx, nx, 1e-3f);
    free(c.x), free(c.y), free(c.r), free(c.am), free(dx);
}

/* ---- linear ---- */
typedef struct {
    int n, i, o;
    float *x, *w, *b, *y, *r;
} lin_ctx;
static double lin_loss(void *p)
{
    lin_ctx *c = p;
    nn_linear_forward(c->y, c->x, c->w, c->b, c->n, c->i, c->o);
    return dot(c->y, c->r, (size_t)c->n * c->o);
}
static void test_linear(void)
{
    lin_ctx c = {.n = 5, .i = 7, .o = 3};
    c.x = randv(35, 1), c.w = randv(21, 0.5f), c.b = randv(3, 0.5f), c.y = zerov(15);
    c.r = randv(15, 1);
    float *dx = zerov(35), *dw = zerov(21), *db = zerov(3);
    nn_linear_backward(dx, dw, db, c.r, c.x, c.w, c.n, c.i, c.o);
    fd_check("linear dx", lin_loss, &c, c.x, dx, 35, 1e-2f);
    fd_check("linear dw", lin_loss, &c, c.w, dw, 21, 1e-2f);
    fd_check("linear db", lin_loss, &c, c.b, db, 3, 1e-2f);
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(dx), free(dw), free(db);
}

/* ---- the packed-weight product (clip.c's matrix products) against fp64 ---- */
static void test_gemm_packb(int M, int N, int K, int n0, int n1, size_t ldc, size_t lda)
{
    float *a = randv((int)((size_t)M * lda), 1), *w = randv(N * K, 1), *c = randv((int)((size_t)M * ldc), 1);
    float *c0 = malloc((size_t)M * ldc * sizeof *c0), *bp = malloc(nn_packb_floats(N, K) * sizeof *bp);
    memcpy(c0, c, (size_t)M * ldc * sizeof *c0);
    nn_packb(bp, w, N, K);
    nn_gemm_packb(c, ldc, a, lda, bp, M, N, K, n0, n1);
    double worst = 0;
    int outside = 0;
    for (int i = 0; i < M; i++)
        for (size_t j = 0; j < ldc; j++) {
            double r = c0[i * ldc + j];
            if ((int)j >= n0 && (int)j < n1)
                for (int k = 0; k < K; k++) r += (double)a[i * lda + k] * w[j * K + k];
            else
                outside += c[i * ldc + j] != c0[i * ldc + j]; /* columns outside [n0, n1) untouched */
            worst = fmax(worst, fabs(c[i * ldc + j] - r) / sqrt((double)K));
        }
    CHECK_MSG(worst < 1e-5 && !outside, "gemm_packb %dx%dx%d cols [%d,%d): error %.2e, %d changed outside", M, N, K,
              n0, n1, worst, outside);
    free(a), free(w), free(c), free(c0), free(bp);
}

/* bf16 (round to nearest even) of x, as a float */
static double bf16_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1)) & 0xffff0000u;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

/* bf16 product: exact products of the bf16-rounded inputs, summed in fp32 */
static void test_gemm_packb_bf16(int M, int N, int K, int n0, int n1, size_t ldc, size_t lda)
{
    float *a = randv((size_t)M * lda, 1), *w = randv((size_t)N * K, 1), *c = randv((size_t)M * ldc, 1);
    float *c0 = malloc((size_t)M * ldc * sizeof *c0);
    uint16_t *bp = malloc(nn_packb_bf16_size(N, K) * sizeof *bp);
    memcpy(c0, c, (size_t)M * ldc * sizeof *c0);
    nn_packb_bf16(bp, w, N, K);
    { /* the bf16 packing made from the fp32 packing is the same */
        float *fp = malloc(nn_packb_floats(N, K) * sizeof *fp);
        uint16_t *hp = malloc(nn_packb_bf16_size(N, K) * sizeof *hp);
        nn_packb(fp, w, N, K);
        nn_packb_bf16_from_packb(hp, fp, N, K);
        CHECK(!memcmp(hp, bp, nn_packb_bf16_size(N, K) * sizeof *hp));
        free(fp), free(hp);
    }
    nn_gemm_packb_bf16(c, ldc, a, lda, bp, M, N, K, n0, n1);
    double worst = 0, plain = 0;
    int outside = 0;
    for (int i = 0; i < M; i++)
        for (size_t j = 0; j < ldc; j++) {
            double r = c0[i * ldc + j], f = r;
            if ((int)j >= n0 && (int)j < n1)
                for (int k = 0; k < K; k++) {
                    r += bf16_of(a[i * lda + k]) * bf16_of(w[j * K + k]);
                    f += (double)a[i * lda + k] * w[j * K + k];
                }
            else
                outside += c[i * ldc + j] != c0[i * ldc + j];
            worst = fmax(worst, fabs(c[i * ldc + j] - r) / sqrt((double)K));
            plain = fmax(plain, fabs(c[i * ldc + j] - f) / sqrt((double)K));
        }
    CHECK_MSG(worst < 1e-5 && !outside, "gemm_packb_bf16 %dx%dx%d cols [%d,%d): error %.2e, %d changed outside", M,
              N, K, n0, n1, worst, outside);
    /* and it is bf16, not fp32: about 2^-9 relative per product */
    CHECK_MSG(plain < 2e-2 && (K < 16 || plain > 1e-5), "gemm_packb_bf16 vs fp32: %.2e", plain);
    free(a), free(w), free(c), free(c0), free(bp);
}

/* ---- losses ---- */
typedef struct {
    int n, c, kd;
    float *s, *t;
    int32_t *lab;
} loss_ctx;
static double loss_loss(void *p)
{
    loss_ctx *c = p;
    return c->kd ? nn_kd_forward(c->s, c->t, c->n, c->c, 3.0f, 1.0f)
                 : nn_cross_entropy_forward(NULL, c->s, c->lab, c->n, c->c);
}
static void test_losses(void)
{
    loss_ctx c = {.n = 4, .c = 6};
    c.s = randv(24, 2), c.t = randv(24, 4);
    int32_t lab[4] = {0, 5, 2, 2};
    c.lab = lab;
    float probs[24], d[24] = {0};
    /* known value: uniform logits give log C */
    float zero[6] = {0};
    int32_t l0 = 3;
    CHECK_CLOSE(nn_cross_entropy_forward(NULL, zero, &l0, 1, 6), log(6.0), 1e-6);
    nn_cross_entropy_forward(probs, c.s, lab, c.n, c.c);
    nn_cross_entropy_backward(d, probs, lab, c.n, c.c, 1.0f);
    fd_check("cross-entropy dlogits", loss_loss, &c, c.s, d, 24, 1e-2f);
    c.kd = 1;
    memset(d, 0, sizeof d);
    nn_kd_backward(d, c.s, c.t, c.n, c.c, 3.0f, 1.0f);
    fd_check("kd (T=3) dstudent", loss_loss, &c, c.s, d, 24, 1e-2f);
    CHECK_CLOSE(nn_kd_forward(c.t, c.t, c.n, c.c, 3.0f, 1.0f), 0.0, 1e-6); /* KL(p||p) = 0 */
    free(c.s), free(c.t);
}

/* ---- SGD: PyTorch's update written out, two steps (the second uses the buffer) ---- */
static void test_sgd(void)
{
    float p[5], buf[5] = {0}, g[5], ref[5], rbuf[5] = {0};
    for (int i = 0; i < 5; i++)
        p[i] = ref[i] = (float)i - 2.0f, g[i] = 0.3f * (float)i - 0.5f;
    for (int step = 0; step < 2; step++) {
        nn_sgd_step(p, buf, g, 5, 0.1f, 0.9f, 5e-4f);
        for (int i = 0; i < 5; i++) {
            double gi = g[i] + 5e-4 * ref[i];
            rbuf[i] = (float)(step == 0 ? gi : 0.9 * rbuf[i] + gi);
            ref[i] = (float)(ref[i] - 0.1 * rbuf[i]);
            CHECK_CLOSE(p[i], ref[i], 1e-6);
        }
    }
    nn_sgd_step(p, NULL, g, 5, 0.1f, 0.0f, 0.0f);
    for (int i = 0; i < 5; i++)
        CHECK_CLOSE(p[i], ref[i] - 0.1 * g[i], 1e-6);
}

/* ---- SGD with weight decay, with and without momentum, three steps each against the rule
 * computed directly in double: g' = g + wd p; momentum: buf = m buf + g' (buf from zero, as
 * PyTorch's first-step copy), p -= lr buf; else p -= lr g'.  wd = 0.05: its term (about
 * 1e-2 of p per step here) is far above the 1e-6 tolerance. ---- */
static void test_sgd_wd(void)
{
    enum { N = 37 };
    for (int mom = 0; mom < 2; mom++) {
        const float lr = 0.1f, m = mom ? 0.9f : 0.0f, wd = 0.05f;
        float p[N], buf[N] = {0}, g[N];
        double rp[N], rbuf[N] = {0};
        for (int i = 0; i < N; i++)
            p[i] = (float)(rp[i] = 0.25 * i - 4.0), g[i] = (float)(0.1 * (i % 7) - 0.3);
        for (int step = 0; step < 3; step++) {
            nn_sgd_step(p, mom ? buf : NULL, g, N, lr, m, wd);
            for (int i = 0; i < N; i++) {
                double gi = g[i] + (double)wd * rp[i];
                rbuf[i] = mom ? m * rbuf[i] + gi : gi;
                rp[i] -= lr * rbuf[i];
                CHECK_MSG(fabs(p[i] - rp[i]) <= 1e-6 * fmax(1.0, fabs(rp[i])),
                          "sgd wd %g momentum %g step %d p[%d]: %.9g vs %.9g", wd, m, step, i,
                          p[i], rp[i]);
            }
        }
    }
}

/* ---- crop/flip ---- */
static void test_augment(void)
{
    const int c = 2, h = 5, w = 6, pad = 2;
    float in[60], out[60];
    for (int i = 0; i < 60; i++)
        in[i] = (float)i + 1;
    for (int dy = 0; dy <= 2 * pad; dy++)
        for (int dx = 0; dx <= 2 * pad; dx++)
            for (int flip = 0; flip < 2; flip++) {
                imgaug_crop_flip(out, in, c, h, w, pad, dy, dx, flip);
                for (int ch = 0; ch < c; ch++)
                    for (int y = 0; y < h; y++)
                        for (int x = 0; x < w; x++) {
                            int xx = flip ? w - 1 - x : x; /* flip after the crop */
                            int sy = y + dy - pad, sx = xx + dx - pad;
                            float ref = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                                            ? in[(ch * h + sy) * w + sx]
                                            : 0.0f;
                            CHECK(out[(ch * h + y) * w + x] == ref);
                        }
            }
    /* per batch: every image gets the same crop and flip */
    float batch[3 * 60], res[3 * 60];
    for (int i = 0; i < 3; i++)
        memcpy(batch + i * 60, in, sizeof in);
    rng r;
    rng_init(&r, 1, "augment", 0, 0);
    imgaug_random_crop_flip(res, batch, 3, c, h, w, pad, 0, &r);
    CHECK(!memcmp(res, res + 60, sizeof in) && !memcmp(res, res + 120, sizeof in));
    int differ = 0;
    for (int t = 0; t < 8 && !differ; t++) {
        imgaug_random_crop_flip(res, batch, 3, c, h, w, pad, 1, &r);
        differ = memcmp(res, res + 60, sizeof in) || memcmp(res, res + 120, sizeof in);
    }
    CHECK(differ); /* per sample: draws differ (8 tries) */
}

/* ---- determinism at a fixed thread count ---- */
static void test_determinism(int algo)
{
    nn_set_conv_algo(algo);
    pool_set_threads(2);
    nn_conv2d_dims d = nn_conv2d_make(6, 16, 12, 12, 24, 3, 1, 1);
    size_t nx = 6 * 16 * 144, nw = 24 * 16 * 9, ny = 6 * 24 * 144;
    float *x = randv(nx, 1), *w = randv(nw, 0.3f), *dy = randv(ny, 1),
          *ws = zerov(nn_conv2d_ws_floats(&d));
    float *y[2], *dx[2], *dw[2];
    for (int k = 0; k < 2; k++) {
        y[k] = zerov(ny), dx[k] = zerov(nx), dw[k] = zerov(nw);
        nn_conv2d_forward(y[k], x, w, NULL, &d, ws);
        nn_conv2d_backward(dx[k], dw[k], NULL, dy, x, w, &d, ws);
    }
    CHECK(!memcmp(y[0], y[1], ny * 4) && !memcmp(dx[0], dx[1], nx * 4) &&
          !memcmp(dw[0], dw[1], nw * 4));
    /* and the 2-thread result agrees with 1 thread to rounding */
    pool_set_threads(1);
    float *dw1 = zerov(nw);
    nn_conv2d_backward(dx[1], dw1, NULL, dy, x, w, &d, ws);
    double e = 0, mx = 0;
    for (size_t i = 0; i < nw; i++)
        e = fmax(e, fabs(dw1[i] - dw[0][i])), mx = fmax(mx, fabs(dw1[i]));
    CHECK(e <= 1e-5 * mx);
    for (int k = 0; k < 2; k++)
        free(y[k]), free(dx[k]), free(dw[k]);
    free(x), free(w), free(dy), free(ws), free(dw1);
    nn_set_conv_algo(NN_CONV_IGEMM);
}

int main(void)
{
    rng_init(&R, 42, "test", 0, 0);
    static const int algos[] = {NN_CONV_IGEMM, NN_CONV_BLAS, NN_CONV_WINOGRAD};
    static const char *names[] = {"igemm", "blas", "winograd"};
    for (int run = 0; run < 6; run++) { /* each algorithm at 1 and 2 threads */
        int threads = 1 + run % 2, algo = algos[run / 2];
        pool_set_threads(threads);
        int got = nn_set_conv_algo(algo);
        fprintf(stderr, "threads %d, conv %s%s\n", threads, names[run / 2],
                got != algo ? " (not in this build: blas)" : "");
        test_conv(2, 3, 6, 5, 4, 3, 1, 1, 1);
        test_conv(3, 4, 7, 7, 5, 3, 2, 1, 0);
        test_conv(2, 4, 6, 6, 3, 1, 1, 0, 0);
        test_conv(2, 4, 7, 6, 3, 1, 2, 0, 0);
        test_conv(1, 2, 11, 10, 3, 7, 2, 3, 1);
        /* 3x3 stride 1 with >= 8 channels: Winograd's shapes (odd and even sizes, pads 0-2) */
        test_conv(2, 9, 7, 6, 10, 3, 1, 1, 1);
        test_conv(1, 12, 5, 8, 9, 3, 1, 0, 0);
        test_conv(3, 8, 6, 5, 11, 3, 1, 2, 0);
        test_conv_direct(1, 9, 7, 6, 10, 3, 1, 1, 1);
        test_conv_direct(2, 13, 8, 8, 20, 3, 1, 1, 0);
        test_conv_direct(3, 20, 9, 11, 13, 3, 1, 1, 1);
        test_conv_direct(2, 24, 33, 31, 40, 3, 1, 1, 0); /* rows of 16+ tiles, block splits */
        test_conv_direct(3, 37, 16, 16, 9, 3, 1, 1, 0);
        test_conv_direct(2, 10, 4, 4, 70, 3, 1, 1, 0);   /* many tiles per 32-column strip */
        test_conv_direct(2, 11, 10, 9, 12, 3, 1, 0, 1);
        test_conv_direct(1, 16, 6, 7, 16, 3, 1, 2, 0);
        test_conv_direct(2, 8, 1, 1, 8, 3, 1, 1, 0);
        test_conv_direct(1, 9, 5, 40, 12, 3, 1, 1, 1); /* 20 tiles per row: two 16-lane chunks */
        test_conv_direct(2, 12, 70, 67, 10, 3, 1, 1, 0);
        test_conv_direct(3, 17, 13, 14, 15, 3, 1, 1, 1);
        test_conv_direct(2, 11, 15, 15, 9, 3, 1, 1, 0); /* rows of 8 and 4 tiles, 2 / 4 per vector */
        test_conv_direct(3, 10, 7, 8, 12, 3, 1, 1, 1);
        test_conv_direct(2, 5, 9, 9, 7, 3, 2, 1, 1); /* not Winograd's: the fallbacks */
        test_conv_direct(2, 3, 8, 8, 12, 3, 1, 1, 0);
        for (int train = 0; train < 2; train++)
            for (int relu = 0; relu < 2; relu++)
                test_bn(train, relu, 5);
    }
    nn_set_conv_algo(NN_CONV_IGEMM);
    pool_set_threads(1);
    test_pools();
    test_linear();
    /* ragged rows, columns and depths; column ranges; K beyond one 512 slice; M beyond a
     * 48-row block; strided rows */
    test_gemm_packb(1, 1, 1, 0, 1, 1, 1);
    test_gemm_packb(13, 37, 19, 0, 37, 37, 19);
    test_gemm_packb(50, 96, 64, 32, 96, 96, 64);
    test_gemm_packb(50, 96, 64, 0, 64, 100, 70);
    test_gemm_packb(97, 70, 1100, 64, 70, 70, 1100);
    test_gemm_packb(130, 200, 515, 0, 200, 203, 515);
    fprintf(stderr, "bf16 products: %s\n", nn_bf16_native() ? "AVX512-BF16" : "scalar fallback");
    test_gemm_packb_bf16(1, 1, 1, 0, 1, 1, 1);
    test_gemm_packb_bf16(13, 37, 19, 0, 37, 37, 19);
    test_gemm_packb_bf16(50, 96, 64, 32, 96, 96, 64);
    test_gemm_packb_bf16(97, 70, 1101, 64, 70, 70, 1101);
    test_gemm_packb_bf16(130, 200, 515, 0, 200, 203, 515);
    test_losses();
    test_sgd();
    test_sgd_wd();
    test_augment();
    test_determinism(NN_CONV_IGEMM);
    test_determinism(NN_CONV_WINOGRAD);
    /* BatchNorm at widths that run the row helpers' vector body (16) and body + tail (37), at
     * 1 and 2 threads (last, so that the draws of the tests above stay as they were) */
    for (int threads = 1; threads <= 2; threads++) {
        pool_set_threads(threads);
        fprintf(stderr, "threads %d, batchnorm widths\n", threads);
        for (int train = 0; train < 2; train++)
            for (int relu = 0; relu < 2; relu++) {
                test_bn(train, relu, 16);
                test_bn(train, relu, 37);
            }
    }
    pool_set_threads(1);
    TEST_MAIN_END();
}
