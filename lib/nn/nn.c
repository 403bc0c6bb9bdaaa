/* nn.c - the kernels of nn.h: conv2d, BatchNorm2d, ReLU, pooling, linear, softmax
 * cross-entropy, distillation loss, SGD, crop/flip.
 *
 * Sections: thread pool; 16-lane vector helpers; conv2d (our implicit GEMM on AVX-512 builds,
 * with Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions on the same
 * micro-kernel, and im2col + OpenBLAS sgemm, grouped per ~512 output columns, everywhere);
 * BatchNorm2d; elementwise; pooling; linear; losses; SGD; augmentation.
 * Work is split over our own pool with a static split and a fixed reduction order, so results
 * are identical run to run at a fixed thread count.
 * What it is not: a library of every layout (NCHW only) or dtype (fp32 only).
 * Follows PyTorch's CPU semantics for BatchNorm (batch stats, unbiased running_var, momentum
 * 0.1, eps 1e-5), CrossEntropyLoss (mean), kl_div(batchmean) and SGD (dampening 0); the GEMM
 * blocking follows the Goto/BLIS scheme (packed panels, register-blocked micro-kernel); the
 * Winograd transforms are Lavin & Gray's ("Fast Algorithms for Convolutional Neural
 * Networks", 2016). */
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* thread pool                                                                           */
/* ------------------------------------------------------------------------------------ */

static struct {
    int n;       /* pool size including the calling thread */
    int started; /* worker threads running */
    pthread_t tid[NN_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen; /* incremented per task */
    int pending;       /* workers still running the current task */
    int quit;
    nn_task_fn fn;
    void *ctx;
} pool = {.n = 1,
          .mu = PTHREAD_MUTEX_INITIALIZER,
          .go = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static int blas_hold(void);

static void *pool_worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == seen && !pool.quit)
            pthread_cond_wait(&pool.go, &pool.mu);
        if (pool.quit)
            break;
        seen = pool.gen;
        nn_task_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int nt = pool.n;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, me, nt);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

static void pool_stop(void)
{
    if (!pool.started)
        return;
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 1; i < pool.started; i++)
        pthread_join(pool.tid[i], NULL);
    pool.started = 0;
    pool.quit = 0;
}

void nn_set_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > NN_MAX_THREADS)
        n = NN_MAX_THREADS;
    pool_stop();
    pool.n = n;
    blas_hold();
}

int nn_threads(void)
{
    return pool.n;
}

/* nn calls OpenBLAS only single-threaded (inside its own pool, or for tiny linear layers), and
 * leaves it at one thread: toggling it back and forth per call wakes OpenBLAS's workers,
 * which then spin (sched_yield) on the cores our pool uses.  Code that wants a threaded
 * OpenBLAS afterwards sets it again (nn.h says so). */
static int blas_hold(void)
{
    if (openblas_get_num_threads() != 1)
        openblas_set_num_threads(1);
    return 1;
}
static void blas_release(int blas)
{
    (void)blas;
}

/* Runs fn(ctx, tid, nt) for tid = 0..nt-1 (tid 0 on the calling thread) and waits.
 * OpenBLAS is held at one thread meanwhile. */
static void nn_run(nn_task_fn fn, void *ctx)
{
    int nt = pool.n;
    int blas = blas_hold();
    if (nt == 1) {
        fn(ctx, 0, 1);
    } else {
        pthread_mutex_lock(&pool.mu);
        if (!pool.started) {
            pool.started = 1;
            for (int i = 1; i < nt; i++) {
                if (pthread_create(&pool.tid[i], NULL, pool_worker, (void *)(intptr_t)i) != 0)
                    break; /* fewer workers: fall back below */
                pool.started = i + 1;
            }
        }
        int workers = pool.started - 1;
        if (workers != nt - 1) { /* could not start them all: run serially */
            pthread_mutex_unlock(&pool.mu);
            for (int t = 0; t < nt; t++)
                fn(ctx, t, nt);
        } else {
            pool.fn = fn;
            pool.ctx = ctx;
            pool.pending = workers;
            pool.gen++;
            pthread_cond_broadcast(&pool.go);
            pthread_mutex_unlock(&pool.mu);
            fn(ctx, 0, nt);
            pthread_mutex_lock(&pool.mu);
            while (pool.pending > 0)
                pthread_cond_wait(&pool.done, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
    }
    blas_release(blas);
}

void nn_parallel(nn_task_fn fn, void *ctx)
{
    nn_run(fn, ctx);
}

/* [*lo, *hi) = thread tid's share of 0..n (static, contiguous). */
static void split(int n, int tid, int nt, int *lo, int *hi)
{
    *lo = (int)((long)n * tid / nt);
    *hi = (int)((long)n * (tid + 1) / nt);
}

#if defined(__GNUC__) && !defined(__clang__)
/* the 64-byte vectors below only live in static inline helpers: no ABI is crossed */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* 16-lane float vectors (GCC/Clang vector extensions: AVX-512 with -march=native on this
 * machine, pairs or quads of narrower registers elsewhere).  Unaligned loads via memcpy. */
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
static inline v16 vld(const float *p)
{
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}
#define vst(p, v)                                                                                  \
    do {                                                                                           \
        v16 vst_v_ = (v);                                                                          \
        memcpy((p), &vst_v_, sizeof vst_v_);                                                       \
    } while (0)
static inline v16 vsplat(float x)
{
    return (v16){0} + x;
}
/* sum of the 16 lanes (a macro: no 64-byte vector crosses a call, whatever the ISA) */
#define vhsum(v) vhsum_(&(v))
static inline float vhsum_(const v16 *v)
{
    float s = 0;
    for (int i = 0; i < 16; i++)
        s += (*v)[i];
    return s;
}
/* v where m, else 0 */
#define vsel(m, v) ((v16)((v16i)(v) & (m)))

/* dst[0..n) = src[0..n), short rows (inline; no libc call per 8..32-float row) */
static inline void row_copy(float *dst, const float *src, int n)
{
    int j = 0;
    for (; j + 16 <= n; j += 16)
        vst(dst + j, vld(src + j));
    for (; j < n; j++)
        dst[j] = src[j];
}

/* dst[0..n) += src[0..n) */
static inline void row_acc(float *dst, const float *src, int n)
{
    int j = 0;
    for (; j + 16 <= n; j += 16)
        vst(dst + j, vld(dst + j) + vld(src + j));
    for (; j < n; j++)
        dst[j] += src[j];
}

/* sum of x[0..n) */
static float row_sum(const float *x, size_t n)
{
    v16 a = vsplat(0);
    size_t j = 0;
    for (; j + 16 <= n; j += 16)
        a += vld(x + j);
    float s = vhsum(a);
    for (; j < n; j++)
        s += x[j];
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* conv2d                                                                                */
/* ------------------------------------------------------------------------------------ */

nn_conv2d_dims nn_conv2d_make(int n, int ci, int h, int w, int co, int k, int stride, int pad)
{
    nn_conv2d_dims d = {
        .n = n, .ci = ci, .h = h, .w = w, .co = co, .kh = k, .kw = k, .stride = stride, .pad = pad};
    d.ho = (h + 2 * pad - k) / stride + 1;
    d.wo = (w + 2 * pad - k) / stride + 1;
    return d;
}

static int conv_is_pointwise(const nn_conv2d_dims *d)
{
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

/* Images per GEMM: small feature maps are batched so that one GEMM has about NN_GEMM_COLS
 * output columns (g images side by side, (K, g*HW)); big ones run one image at a time, which
 * keeps the im2col panel small. */
#define NN_GEMM_COLS 512
static int conv_group(const nn_conv2d_dims *d)
{
    int hw = d->ho * d->wo, g = (NN_GEMM_COLS + hw - 1) / hw;
    int per = (d->n + pool.n - 1) / pool.n;
    return g < 1 ? 1 : g > per ? (per > 0 ? per : 1) : g;
}

/* per-thread scratch: col (K, g*HW) and a (Co or Ci, g*HW) staging matrix */
static size_t conv_thread_floats(const nn_conv2d_dims *d)
{
    size_t g = (size_t)conv_group(d), hw = (size_t)d->ho * d->wo;
    size_t kk = (size_t)d->ci * d->kh * d->kw;
    size_t col = conv_is_pointwise(d) && g == 1 ? 0 : kk * g * hw;
    size_t stage = g > 1 ? (size_t)(d->co > d->ci ? d->co : d->ci) * g * hw : 0;
    return col + stage + 32;
}

/* ws layout: [shared packed A][per-thread scratch x nt][weight-grad partials x (nt - 1)] */
static size_t conv_shared_floats(const nn_conv2d_dims *d);
static size_t conv_tfl(const nn_conv2d_dims *d);

size_t nn_conv2d_ws_floats(const nn_conv2d_dims *d)
{
    size_t nt = (size_t)pool.n;
    size_t dw = (size_t)d->co * d->ci * d->kh * d->kw + (size_t)d->co; /* weight + bias grads */
    return conv_shared_floats(d) + nt * conv_tfl(d) + (nt - 1) * dw;
}

/* col: (Ci*KH*KW, ld) rows, this image's Ho*Wo columns, from one image x: (Ci, H, W). */
static void im2col(float *col, size_t ld, const float *x, const nn_conv2d_dims *d)
{
    for (int c = 0; c < d->ci; c++)
        for (int ky = 0; ky < d->kh; ky++)
            for (int kx = 0; kx < d->kw; kx++) {
                float *dst = col + ((size_t)(c * d->kh + ky) * d->kw + kx) * ld;
                const float *src = x + (size_t)c * d->h * d->w;
                for (int oy = 0; oy < d->ho; oy++) {
                    int iy = oy * d->stride - d->pad + ky;
                    float *row = dst + oy * d->wo;
                    if (iy < 0 || iy >= d->h) {
                        memset(row, 0, sizeof(float) * d->wo);
                        continue;
                    }
                    const float *srow = src + (size_t)iy * d->w;
                    if (d->stride == 1) {
                        int ox0 = d->pad - kx, ox;
                        for (ox = 0; ox < d->wo && ox < ox0; ox++)
                            row[ox] = 0;
                        int ixs = ox - d->pad + kx;
                        int n = d->w - ixs;
                        if (n > d->wo - ox)
                            n = d->wo - ox;
                        if (n > 0) {
                            row_copy(row + ox, srow + ixs, n);
                            ox += n;
                        }
                        for (; ox < d->wo; ox++)
                            row[ox] = 0;
                    } else {
                        for (int ox = 0; ox < d->wo; ox++) {
                            int ix = ox * d->stride - d->pad + kx;
                            row[ox] = (ix >= 0 && ix < d->w) ? srow[ix] : 0.0f;
                        }
                    }
                }
            }
}

/* x: (Ci, H, W) = 0, then += col2im(col) (col rows of stride ld, this image's columns). */
static void col2im(float *x, const float *col, size_t ld, const nn_conv2d_dims *d)
{
    memset(x, 0, sizeof(float) * d->ci * d->h * d->w);
    for (int c = 0; c < d->ci; c++)
        for (int ky = 0; ky < d->kh; ky++)
            for (int kx = 0; kx < d->kw; kx++) {
                const float *src = col + ((size_t)(c * d->kh + ky) * d->kw + kx) * ld;
                float *dst = x + (size_t)c * d->h * d->w;
                for (int oy = 0; oy < d->ho; oy++) {
                    int iy = oy * d->stride - d->pad + ky;
                    if (iy < 0 || iy >= d->h)
                        continue;
                    const float *row = src + oy * d->wo;
                    float *drow = dst + (size_t)iy * d->w;
                    if (d->stride == 1) {
                        int lo = d->pad - kx > 0 ? d->pad - kx : 0;
                        int hi = d->w + d->pad - kx < d->wo ? d->w + d->pad - kx : d->wo;
                        if (hi > lo)
                            row_acc(drow - d->pad + kx + lo, row + lo, hi - lo);
                    } else {
                        for (int ox = 0; ox < d->wo; ox++) {
                            int ix = ox * d->stride - d->pad + kx;
                            if (ix >= 0 && ix < d->w)
                                drow[ix] += row[ox];
                        }
                    }
                }
            }
}

/* (rows, g*hw) staging <-> g images of (rows, hw) at stride img */
static void stage_gather(float *dst, const float *src, int g, int rows, size_t hw, size_t img)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < g; j++)
            memcpy(dst + (size_t)r * g * hw + j * hw, src + j * img + r * hw, sizeof(float) * hw);
}
static void stage_scatter(float *dst, const float *src, int g, int rows, size_t hw, size_t img)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < g; j++)
            memcpy(dst + j * img + r * hw, src + (size_t)r * g * hw + j * hw, sizeof(float) * hw);
}

/* ---- implicit-GEMM convolution (AVX-512 builds): im2col fused into the GEMM's packing ----
 * C (M x N) = A (M x K) . B (K x N) with a register-blocked 8 x 32 micro-kernel.  Forward:
 * A = W (Co x Ci*KH*KW) packed once per call, B = im2col(x) generated straight into the
 * packed panels (no im2col matrix, no second copy).  Weight gradient: dW (Co x K) += dy
 * (Co x N*HW) . im2col(x)^T, both operands packed from the activations.  Input gradient for
 * stride 1: a forward convolution of dy with the flipped, transposed weights (pad k-1-p), so
 * no col2im.  Blocking: K in KC = 256 slices, N in NC = 512 (the B panel, 512 KB, stays in
 * L2; one 32 KB B strip stays in L1 across the M strips).  Other builds use OpenBLAS. */
#if defined(__AVX512F__)
#include "simd.h"
#define NN_IGEMM 1
#define MR 8
#define NR 32
#define KC 256
#define NC 512
#define SPAD 64 /* floats between packed strips: their starts do not alias mod 4 KB */

#define NN_CONV_DEFAULT NN_CONV_WINOGRAD
static int conv_algo = -1; /* -1: not chosen yet (conv_algo_get reads FEDSM_CONV_ALGO) */

static size_t pad_to(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

/* where C element (m, n) lives: base + (n / hw) * img + m * ldm + n % hw */
typedef struct {
    float *base;
    size_t hw, img, ldm;
} cmap;

/* c (MR x NR, row stride ldc) (+ c when acc) = a (kc x MR, packed) . b (kc x NR, packed) */
static void kernel_8x32(float *c, size_t ldc, int acc, const float *a, const float *b, int kc)
{
    for (int r = 0; r < MR; r++) { /* the C tile, written at the end: fetch it under the loop */
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
    }
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
           c70 = c00, c71 = c00;
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), av;
#define NN_ROW(r, x0, x1)                                                                          \
    av = _mm512_set1_ps(a[r]);                                                                     \
    x0 = _mm512_fmadd_ps(av, b0, x0);                                                              \
    x1 = _mm512_fmadd_ps(av, b1, x1);
        NN_ROW(0, c00, c01)
        NN_ROW(1, c10, c11)
        NN_ROW(2, c20, c21)
        NN_ROW(3, c30, c31)
        NN_ROW(4, c40, c41)
        NN_ROW(5, c50, c51)
        NN_ROW(6, c60, c61)
        NN_ROW(7, c70, c71)
#undef NN_ROW
        a += MR;
        b += NR;
    }
#define NN_ST(r, x0, x1)                                                                           \
    {                                                                                              \
        float *p = c + (r)*ldc;                                                                    \
        if (acc) {                                                                                 \
            x0 = _mm512_add_ps(x0, _mm512_loadu_ps(p));                                            \
            x1 = _mm512_add_ps(x1, _mm512_loadu_ps(p + 16));                                       \
        }                                                                                          \
        _mm512_storeu_ps(p, x0);                                                                   \
        _mm512_storeu_ps(p + 16, x1);                                                              \
    }
    NN_ST(0, c00, c01)
    NN_ST(1, c10, c11)
    NN_ST(2, c20, c21)
    NN_ST(3, c30, c31)
    NN_ST(4, c40, c41)
    NN_ST(5, c50, c51)
    NN_ST(6, c60, c61)
    NN_ST(7, c70, c71)
#undef NN_ST
}

/* C[m0 + r][n0 + j] (+ C when acc) = (a . b)[r][j], r < mr, j < nr: straight into C when the
 * tile is whole and its rows are contiguous 32-runs, else through a scratch tile. */
static void tile(const cmap *c, size_t m0, size_t n0, int mr, int nr, int acc, const float *a,
                 const float *b, int kc)
{
    size_t p = n0 % c->hw;
    if (mr == MR && nr == NR && p + NR <= c->hw) {
        kernel_8x32(c->base + (n0 / c->hw) * c->img + m0 * c->ldm + p, c->ldm, acc, a, b, kc);
        return;
    }
    float t[MR * NR];
    kernel_8x32(t, NR, 0, a, b, kc);
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            size_t n = n0 + j;
            float *dst = c->base + (n / c->hw) * c->img + (m0 + r) * c->ldm + n % c->hw;
            *dst = acc ? *dst + t[r * NR + j] : t[r * NR + j];
        }
}

/* A stretch of im2col columns inside one output row of one image: dest offset j, length len,
 * image img (-1: past the last column, zeros), output position (oy, ox) of its first column. */
typedef struct {
    int j, len, img, oy, ox;
} col_run;

/* Splits columns [n0, n0 + len) into runs; returns their number (<= len + 1). */
static int make_runs(col_run *runs, const nn_conv2d_dims *d, size_t n0, int len, size_t ntot)
{
    const size_t hw = (size_t)d->ho * d->wo;
    int nr = 0, j = 0;
    size_t n = n0;
    while (j < len) {
        col_run *r = &runs[nr++];
        r->j = j;
        if (n >= ntot) {
            r->img = -1, r->len = len - j, r->oy = r->ox = 0;
            break;
        }
        size_t p = n % hw;
        r->img = (int)(n / hw), r->oy = (int)(p / d->wo), r->ox = (int)(p % d->wo);
        r->len = d->wo - r->ox < len - j ? d->wo - r->ox : len - j;
        j += r->len;
        n += r->len;
    }
    return nr;
}

/* o[0..len) = row (c, ky, kx) of the im2col matrix over the columns described by runs.
 * Stride 1: masked vector loads (lanes outside the image are never read and come out 0). */
static void gen_row(float *o, const col_run *runs, int nr, const float *x, size_t xin,
                    const nn_conv2d_dims *d, int c, int ky, int kx)
{
    const int s = d->stride;
    for (int q = 0; q < nr; q++) {
        const col_run *r = &runs[q];
        float *dst = o + r->j;
        int iy = r->oy * s - d->pad + ky;
        if (r->img < 0 || iy < 0 || iy >= d->h) {
            for (int j = 0; j < r->len; j += 16)
                _mm512_mask_storeu_ps(dst + j, lanes(r->len - j), _mm512_setzero_ps());
            continue;
        }
        const float *row = x + r->img * xin + ((size_t)c * d->h + iy) * d->w;
        int off = r->ox * s - d->pad + kx;
        if (s == 1) {
            for (int j = 0; j < r->len; j += 16) {
                int a = off + j; /* source column of lane 0 */
                __mmask16 st = lanes(r->len - j);
                __mmask16 ld = st & lanes(d->w - a) & (__mmask16)~lanes(-a);
                __m512 v =
                    _mm512_maskz_loadu_ps(ld, (const void *)((uintptr_t)row + (intptr_t)a * 4));
                _mm512_mask_storeu_ps(dst + j, st, v);
            }
            continue;
        }
        int jlo = off >= 0 ? 0 : (-off + s - 1) / s;
        int jhi = d->w - off > 0 ? (d->w - off + s - 1) / s : 0;
        jlo = jlo > r->len ? r->len : jlo;
        jhi = jhi > r->len ? r->len : jhi < jlo ? jlo : jhi;
        for (int j = 0; j < jlo; j++)
            dst[j] = 0;
        for (int j = jlo; j < jhi; j++)
            dst[j] = row[off + j * s];
        for (int j = jhi; j < r->len; j++)
            dst[j] = 0;
    }
}

/* Fast path for strides 1 and 2 (kernel width <= 8, runs <= 32 columns): for k in [k0, k0 +
 * kn), the run's columns of im2col row k go to dst + (k - k0) * ds + run.j.  Runs outermost,
 * so the per-k work is a pointer bump and a few masked loads/stores (masks per kx
 * precomputed; lanes outside the image are never read and come out 0).  Stride 2 loads 32
 * contiguous floats per 16 outputs and keeps the even ones. */
static int pack_fast_ok(const nn_conv2d_dims *d)
{
    return (d->stride == 1 || d->stride == 2) && d->kw <= 8;
}

#define MAX_RUNS 160

static void pack_rows_fast(float *dst, size_t ds, const col_run *runs, int nr, const float *x,
                           size_t xin, const nn_conv2d_dims *d, int k0, int kn)
{
    const int kk2 = d->kh * d->kw, s = d->stride;
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    /* masks per run and kx: store (by run length), load (inside the image row) */
    __mmask16 st[MAX_RUNS][2], ld[MAX_RUNS][8][2][2];
    for (int q = 0; q < nr; q++) {
        const col_run *r = &runs[q];
        for (int ch = 0; ch < 2; ch++) {
            st[q][ch] = lanes(r->len - ch * 16);
            for (int kx = 0; kx < d->kw; kx++)
                for (int h = 0; h < 2; h++) {
                    int a = r->ox * s - d->pad + kx + ch * 16 * s + h * 16;
                    ld[q][kx][ch][h] = lanes(d->w - a) & (__mmask16)~lanes(-a);
                    if (s == 1)
                        ld[q][kx][ch][h] &= st[q][ch];
                }
        }
    }
    /* k outermost: successive runs read successive rows of one channel plane */
    int c = k0 / kk2, ky = (k0 % kk2) / d->kw, kx = k0 % d->kw;
    for (int k = 0; k < kn; k++, dst += ds) {
        for (int q = 0; q < nr; q++) {
            const col_run *r = &runs[q];
            float *o = dst + r->j;
            int iy = r->oy * s - d->pad + ky;
            if (r->img < 0 || iy < 0 || iy >= d->h) {
                _mm512_mask_storeu_ps(o, st[q][0], _mm512_setzero_ps());
                if (r->len > 16)
                    _mm512_mask_storeu_ps(o + 16, st[q][1], _mm512_setzero_ps());
                continue;
            }
            intptr_t col = ((intptr_t)c * d->h + iy) * d->w + r->ox * s - d->pad + kx;
            uintptr_t src = (uintptr_t)(x + r->img * xin) + col * 4;
            int nch = r->len > 16 ? 2 : 1;
            for (int ch = 0; ch < nch; ch++) {
                __m512 v;
                if (s == 1) {
                    v = _mm512_maskz_loadu_ps(ld[q][kx][ch][0], (const void *)(src + ch * 64));
                } else {
                    uintptr_t p = src + ch * 128;
                    __m512 v0 = _mm512_maskz_loadu_ps(ld[q][kx][ch][0], (const void *)p);
                    __m512 v1 = _mm512_maskz_loadu_ps(ld[q][kx][ch][1], (const void *)(p + 64));
                    v = _mm512_permutex2var_ps(v0, even, v1);
                }
                _mm512_mask_storeu_ps(o + ch * 16, st[q][ch], v);
            }
        }
        if (++kx == d->kw) {
            kx = 0;
            if (++ky == d->kh)
                ky = 0, c++;
        }
    }
}

/* pb [NR-strips][kc][NR]: rows k0..k0+kc of im2col(x), columns n0..n0+nc (zero past ntot) */
static void pack_b_im2col(float *pb, const float *x, size_t xin, const nn_conv2d_dims *d, int k0,
                          int kc, size_t n0, int nc, size_t ntot)
{
    col_run runs[MAX_RUNS];
    const int kk2 = d->kh * d->kw;
    if (pack_fast_ok(d) && (nc / NR + 1) * (NR / d->wo + 2) <= MAX_RUNS) {
        /* one run list over every strip (dest offsets include the strip), then k outermost */
        int nr = 0;
        for (int ns = 0; ns * NR < nc; ns++) {
            int m = make_runs(runs + nr, d, n0 + (size_t)ns * NR, NR, ntot);
            for (int q = nr; q < nr + m; q++)
                runs[q].j += ns * (kc * NR + SPAD);
            nr += m;
        }
        pack_rows_fast(pb, NR, runs, nr, x, xin, d, k0, kc);
        return;
    }
    for (int ns = 0; ns * NR < nc; ns++) {
        int nr = make_runs(runs, d, n0 + (size_t)ns * NR, NR, ntot);
        int c = k0 / kk2, ky = (k0 % kk2) / d->kw, kx = k0 % d->kw;
        for (int k = 0; k < kc; k++) {
            gen_row(pb + (size_t)ns * (kc * NR + SPAD) + (size_t)k * NR, runs, nr, x, xin, d, c, ky,
                    kx);
            if (++kx == d->kw) {
                kx = 0;
                if (++ky == d->kh)
                    ky = 0, c++;
            }
        }
    }
}

/* dst rows i < 16 (stride ldd) = column i of the 16 x 16 block at src (stride lds) */
static void transpose16(float *dst, size_t ldd, const float *src, size_t lds)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
    for (int i = 0; i < 16; i++)
        _mm512_storeu_ps(dst + i * ldd, r[i]);
}

/* pa [M/MR strips][K][MR] from a row-major (M x K) matrix (rows beyond M zero) */
static void pack_a_rows(float *pa, const float *a, int m, int k)
{
    for (int ms = 0; ms * MR < m; ms++)
        for (int r = 0; r < MR; r++) {
            int row = ms * MR + r;
            float *o = pa + (size_t)ms * k * MR + r;
            if (row < m)
                for (int j = 0; j < k; j++)
                    o[(size_t)j * MR] = a[(size_t)row * k + j];
            else
                for (int j = 0; j < k; j++)
                    o[(size_t)j * MR] = 0;
        }
}

/* pa [KK/MR strips][Co][MR] = w^T for w (Co x KK) row-major: contiguous reads of w's rows */
static void pack_a_transposed(float *pa, const float *w, int co, int kk)
{
    for (int ms = 0; ms * MR < kk; ms++)
        for (int o = 0; o < co; o++)
            for (int r = 0; r < MR; r++) {
                int m = ms * MR + r;
                pa[((size_t)ms * co + o) * MR + r] = m < kk ? w[(size_t)o * kk + m] : 0.0f;
            }
}

/* pa as pack_a_rows for the input-gradient weights: A~[ci][(co, ky, kx)] =
 * w[co][ci][kh-1-ky][kw-1-kx]  (M = Ci, K = Co*KH*KW) */
static void pack_a_flipped(float *pa, const float *w, const nn_conv2d_dims *d)
{
    const int m = d->ci, kk2 = d->kh * d->kw, k = d->co * kk2;
    for (int ms = 0; ms * MR < m; ms++)
        for (int r = 0; r < MR; r++) {
            int ci = ms * MR + r;
            float *o = pa + (size_t)ms * k * MR + r;
            for (int co = 0; co < d->co; co++)
                for (int q = 0; q < kk2; q++)
                    o[(size_t)(co * kk2 + q) * MR] =
                        ci < m ? w[((size_t)co * d->ci + ci) * kk2 + (kk2 - 1 - q)] : 0.0f;
        }
}

/* out (per image (M, Ho*Wo), mapped by cm) = pa (M x K, packed) . im2col(x) for the images at x
 * (image stride xin, ntot = images * Ho*Wo columns); pb: KC * NC floats. */
static void igemm_conv(const cmap *cm, const float *pa, int m, int k, const float *x, size_t xin,
                       const nn_conv2d_dims *d, size_t ntot, float *pb)
{
    for (size_t n0 = 0; n0 < ntot; n0 += NC) {
        int nc = ntot - n0 < NC ? (int)(ntot - n0) : NC;
        for (int k0 = 0; k0 < k; k0 += KC) {
            int kc = k - k0 < KC ? k - k0 : KC;
            pack_b_im2col(pb, x, xin, d, k0, kc, n0, nc, ntot);
            for (int ns = 0; ns * NR < nc; ns++)
                for (int ms = 0; ms * MR < m; ms++) {
                    int mr = m - ms * MR < MR ? m - ms * MR : MR;
                    int nr = nc - ns * NR < NR ? nc - ns * NR : NR;
                    tile(cm, (size_t)ms * MR, n0 + (size_t)ns * NR, mr, nr, k0 > 0,
                         pa + ((size_t)ms * k + k0) * MR, pb + (size_t)ns * (kc * NR + SPAD), kc);
                }
        }
    }
}

/* dw (Co x K) += dy (Co x R) . im2col(x)^T over the R = images * Ho*Wo columns of the images at
 * x / dy.  pa: pad(Co) * KC floats; pb: KC * NC floats. */
static void igemm_dw(float *dw, const float *dy, const float *x, const nn_conv2d_dims *d,
                     size_t rtot, float *pa, float *pb)
{
    const int m = d->co, k = d->ci * d->kh * d->kw;
    const size_t hw = (size_t)d->ho * d->wo, xin = (size_t)d->ci * d->h * d->w, yout = m * hw;
    cmap cm = {.base = dw, .hw = (size_t)-1, .img = 0, .ldm = (size_t)k};
    const int kk2 = d->kh * d->kw;
    col_run runs[KC + 1];
    float *tmp = pb + (size_t)KC * NC + (size_t)(NC / NR) * SPAD; /* NR x KC */
    /* pack_rows_fast handles runs of up to 32 columns; runs here span whole output rows */
    const int fast = pack_fast_ok(d) && d->wo <= NR && KC / d->wo + 2 <= MAX_RUNS;
    for (size_t r0 = 0; r0 < rtot; r0 += KC) {
        int rc = rtot - r0 < KC ? (int)(rtot - r0) : KC;
        int rcp = (rc + 15) / 16 * 16; /* rows padded to whole 16 x 16 blocks (zeros) */
        int nruns = make_runs(runs, d, r0, rcp, r0 + rc);
        /* pa [strip][r][MR] = dy[img(r)][co][hw(r)]: 16 rows of dy into tmp, 16 x 16
         * transposes, the halves to two strips */
        for (int m0 = 0; m0 < m; m0 += 16) {
            for (int q = 0; q < 16; q++) {
                float *row = tmp + (size_t)q * rcp;
                if (m0 + q >= m) {
                    memset(row, 0, sizeof(float) * rcp);
                    continue;
                }
                for (int u = 0; u < nruns; u++) {
                    const col_run *ru = &runs[u];
                    if (ru->img < 0)
                        memset(row + ru->j, 0, sizeof(float) * ru->len);
                    else
                        row_copy(row + ru->j,
                                 dy + ru->img * yout + (size_t)(m0 + q) * hw +
                                     (size_t)ru->oy * d->wo + ru->ox,
                                 ru->len);
                }
            }
            float *s0 = pa + (size_t)(m0 / MR) * rc * MR, *s1 = s0 + (size_t)rc * MR;
            for (int r = 0; r < rc; r += 16) {
                float blk[256];
                transpose16(blk, 16, tmp + r, rcp);
                int nrow = rc - r < 16 ? rc - r : 16;
                for (int i = 0; i < nrow; i++) {
                    memcpy(s0 + (size_t)(r + i) * MR, blk + i * 16, sizeof(float) * MR);
                    if (m0 + MR < m)
                        memcpy(s1 + (size_t)(r + i) * MR, blk + i * 16 + 8, sizeof(float) * MR);
                }
            }
        }
        for (int k0 = 0; k0 < k; k0 += NC) {
            int nc = k - k0 < NC ? k - k0 : NC;
            /* pb [kstrip][r][NR] = im2col(x)[k][r]: 32 rows into tmp, then 16 x 16 transposes */
            for (int ns = 0; ns * NR < nc; ns++) {
                int kv = k0 + nc - (k0 + ns * NR); /* valid rows in this strip */
                kv = kv > NR ? NR : kv;
                if (fast) {
                    pack_rows_fast(tmp, (size_t)rcp, runs, nruns, x, xin, d, k0 + ns * NR, kv);
                    for (int j = kv; j < NR; j++)
                        memset(tmp + (size_t)j * rcp, 0, sizeof(float) * rcp);
                } else
                    for (int j = 0; j < NR; j++) {
                        int kk = k0 + ns * NR + j;
                        if (kk < k0 + nc)
                            gen_row(tmp + (size_t)j * rcp, runs, nruns, x, xin, d, kk / kk2,
                                    (kk % kk2) / d->kw, kk % d->kw);
                        else
                            memset(tmp + (size_t)j * rcp, 0, sizeof(float) * rcp);
                    }
                float *o = pb + (size_t)ns * rcp * NR;
                for (int r = 0; r < rc; r += 16)
                    for (int h = 0; h < NR; h += 16)
                        transpose16(o + (size_t)r * NR + h, NR, tmp + (size_t)h * rcp + r, rcp);
            }
            for (int ns = 0; ns * NR < nc; ns++)
                for (int ms = 0; ms * MR < m; ms++) {
                    int mr = m - ms * MR < MR ? m - ms * MR : MR;
                    int nr = nc - ns * NR < NR ? nc - ns * NR : NR;
                    tile(&cm, (size_t)ms * MR, (size_t)(k0 + ns * NR), mr, nr, 1,
                         pa + (size_t)ms * rc * MR, pb + (size_t)ns * rcp * NR, rc);
                }
        }
    }
}

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (AVX-512 builds) ----
 * Per 2 x 2 output tile: Y = A^T [(G g G^T) . (B^T d B)] A, d the 4 x 4 input patch at
 * (2 ty - pad, 2 tx - pad), "." element-wise over the 16 transformed positions xi (Lavin &
 * Gray 2016).  Summed over input channels, the products are 16 independent GEMMs
 * M[xi] (M x tiles) = U[xi] (M x K) . V[xi] (K x tiles) on the 8x32 micro-kernel: 2.25x fewer
 * multiply-adds than the direct convolution.  Forward: M = Co, K = Ci, U from w.  Input
 * gradient: the same with dy as input, M = Ci, K = Co, U from the flipped, transposed
 * weights and pad 2 - pad.  Weight gradient: see wg_dw.  Tiles are processed in blocks of
 * whole tile rows (wg_geom.nbt tiles, V and M about 512 KB each): the input transform writes
 * V straight into the packed B strips, the GEMMs write M (rows padded to MR), the output
 * transform writes every output once.  The transforms hold 16 tiles per vector (wg_chunk).
 */
#define WG_MIN_K 8 /* smaller reductions (the 3-channel stem) stay on the implicit GEMM */

static int wg_ok(const nn_conv2d_dims *d, int k)
{
    return d->kh == 3 && d->kw == 3 && d->stride == 1 && d->pad >= 0 && d->pad <= 2 &&
           k >= WG_MIN_K;
}

/* pu [16 xi][M/MR strips][K][MR] = G g G^T, g (3 x 3) = w + m sm + k sk (flipped 180 degrees
 * when flip), rows m >= M zero.  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. */
static void wg_pack_weights(float *pu, const float *w, int m, int k, size_t sm, size_t sk, int flip)
{
    const size_t xs = pad_to((size_t)m, MR) * k;
    for (int ms = 0; ms * MR < m; ms++)
        for (int kk = 0; kk < k; kk++)
            for (int r = 0; r < MR; r++) {
                int mm = ms * MR + r;
                float *o = pu + ((size_t)ms * k + kk) * MR + r;
                if (mm >= m) {
                    for (int x = 0; x < 16; x++)
                        o[x * xs] = 0;
                    continue;
                }
                const float *g0 = w + mm * sm + kk * sk;
                float g[3][3], t[4][3];
                for (int i = 0; i < 9; i++)
                    g[i / 3][i % 3] = g0[flip ? 8 - i : i];
                for (int j = 0; j < 3; j++) { /* t = G g */
                    t[0][j] = g[0][j];
                    t[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
                    t[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
                    t[3][j] = g[2][j];
                }
                for (int i = 0; i < 4; i++) { /* U = t G^T */
                    o[(4 * i + 0) * xs] = t[i][0];
                    o[(4 * i + 1) * xs] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                    o[(4 * i + 2) * xs] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                    o[(4 * i + 3) * xs] = t[i][2];
                }
            }
}

/* geometry of one Winograd convolution: x (N, K, H, W) -> y (N, M, Ho, Wo), pad p */
typedef struct {
    int k, h, w, m, ho, wo, pad;
    int r, nx;     /* output tile size (2: F(2x2, 3x3)), (r + 2)^2 */
    int th, tw;    /* tile rows / columns per image */
    int nbt;       /* tile capacity of a block (multiple of NR) */
    size_t ss, xs; /* V: floats per packed strip, per xi */
    size_t ldc, ms_; /* M: row stride, floats per xi */
    size_t es, exs;  /* weight gradient: E's floats per strip, per xi */
    size_t ldz;      /* weight gradient: Z's row stride (K padded to NR) */
} wg_geom;

static wg_geom wg_make(int k, int h, int w, int m, int ho, int wo, int pad, int r)
{
    wg_geom g = {.k = k, .h = h, .w = w, .m = m, .ho = ho, .wo = wo, .pad = pad, .r = r};
    g.nx = (r + 2) * (r + 2);
    g.th = (ho + r - 1) / r, g.tw = (wo + r - 1) / r;
    int big = k > m ? k : m;
    int nbt = 131072 / g.nx / big / NR * NR; /* V and M blocks about 512 KB each */
    nbt = nbt < NR ? NR : nbt;
    if (nbt < g.tw)
        nbt = (int)pad_to((size_t)g.tw, NR);
    g.nbt = nbt;
    g.ss = pad_to((size_t)k, NR) * NR + SPAD; /* rows past K: read by wg_dw's transposes */
    g.es = pad_to((size_t)m, 16) * NR + SPAD;
    g.exs = (size_t)(nbt / NR) * g.es;
    g.ldz = pad_to((size_t)k, NR);
    g.xs = (size_t)(nbt / NR) * g.ss;
    g.ldc = (size_t)nbt + 16;
    g.ms_ = pad_to((size_t)m, MR) * g.ldc;
    return g;
}

static size_t wg_thread_floats(const wg_geom *g)
{
    return g->nx * (g->xs + g->ms_) + 64;
}

/* A chunk of up to 16 tiles, one per vector lane: tiles tx0..tx0+len-1 of one tile row
 * (G = 1), or whole tile rows of tw = 16 / G tiles stacked (G = 2 or 4: tw 8 or 4, so that
 * the small feature maps fill the lanes too; F(2x2) only).  Group q is tile row ty[q] of
 * image im[q] (-1: absent; the present ones come first).  Lanes map to the block's tile
 * indices t..t+len-1. */
typedef struct {
    int G, tx0, len, t;
    int im[4], ty[4];
} wg_chunk;

/* tile rows per vector for F(2x2) rows of tw tiles */
static int wg_groups(const wg_geom *g)
{
    return g->r == 2 && g->tw == 8 ? 2 : g->r == 2 && g->tw == 4 ? 4 : 1;
}

/* Runs body with wg_chunk ch set to each chunk of the block rows r0..r0+nrow-1 (row = image *
 * th + ty). */
#define WG_FOR_CHUNKS(g, r0, nrow, ch, body)                                                       \
    do {                                                                                           \
        const int G_ = wg_groups(g);                                                               \
        for (int j_ = 0; j_ < (nrow); j_ += G_)                                                    \
            for (int tx0_ = 0; tx0_ < (g)->tw; tx0_ += 16) {                                       \
                wg_chunk ch = {.G = G_, .tx0 = tx0_, .t = j_ * (g)->tw + tx0_};                    \
                for (int q_ = 0; q_ < G_; q_++) {                                                  \
                    int row_ = (r0) + j_ + q_;                                                     \
                    ch.im[q_] = j_ + q_ < (nrow) ? row_ / (g)->th : -1;                            \
                    ch.ty[q_] = row_ % (g)->th;                                                    \
                    if (ch.im[q_] >= 0)                                                            \
                        ch.len += G_ > 1 ? (g)->tw : ((g)->tw - tx0_ < 16 ? (g)->tw - tx0_ : 16);  \
                }                                                                                  \
                body;                                                                              \
            }                                                                                      \
    } while (0)

/* Lanes of vector v (0 or 1) of a pair holding 32 consecutive columns per chunk row, from
 * column col on: G = 1: the row's columns col + 16 v..; G = 2: row v's columns col..col+15;
 * G = 4: rows 2v, 2v+1's columns col..col+7 in the low / high 8 lanes.  rows[q]: the input
 * row of group q (NULL: zeros); columns outside [0, w) are never read and come out 0. */
static inline __m512 wg_gload(const float *const *rows, int G, int v, int col, int w)
{
    if (G < 4) {
        const float *r = rows[G == 1 ? 0 : v];
        int a = col + (G == 1 ? 16 * v : 0);
        if (!r)
            return _mm512_setzero_ps();
        return _mm512_maskz_loadu_ps(lanes(w - a) & (__mmask16)~lanes(-a),
                                     (const void *)((uintptr_t)r + (intptr_t)a * 4));
    }
    __m512 x = _mm512_setzero_ps();
    __mmask16 m8 = lanes(w - col) & (__mmask16)~lanes(-col) & 0xFF;
    for (int h = 0; h < 2; h++) {
        const float *r = rows[2 * v + h];
        if (r) /* lane 8 h + l reads column col + l */
            x = _mm512_mask_loadu_ps(x, (__mmask16)(m8 << (8 * h)),
                                     (const void *)((uintptr_t)r + (intptr_t)(col - 8 * h) * 4));
    }
    return x;
}

/* Stores vector lanes holding 2 output columns per tile (32 per chunk row, as wg_gload reads
 * them) to the rows: vector v (0 lo, 1 hi) of the interleaved pair; n columns per chunk row
 * from column col. */
static inline void wg_gstore(float *const *rows, int G, int v, int col, int n, __m512 x)
{
    if (G < 4) {
        float *r = rows[G == 1 ? 0 : v];
        int a = G == 1 ? 16 * v : 0;
        if (r && n - a > 0)
            _mm512_mask_storeu_ps(r + col + a, lanes(n - a), x);
        return;
    }
    for (int h = 0; h < 2; h++) {
        float *r = rows[2 * v + h];
        if (r)
            _mm512_mask_storeu_ps((void *)((uintptr_t)r + (intptr_t)(col - 8 * h) * 4),
                                  (__mmask16)((lanes(n) & 0xFF) << (8 * h)), x);
    }
}

/* V for the chunk's tiles of every channel of the images at x, into the packed strips at the
 * chunk's t */
static void wg_input_row(float *vp, const wg_geom *g, const float *x, const wg_chunk *ch)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const int c0 = 2 * ch->tx0 - g->pad, len = ch->len, t = ch->t;
    const int lane0 = t % NR, split = lane0 + len > NR;
    const __mmask16 m0 = lanes(split ? NR - lane0 : len), m1 = lanes(len) & (__mmask16)~m0;
    const __mmask16 m1c = lanes(__builtin_popcount(m1)); /* m1's lanes, compressed */
    float *p0 = vp + (size_t)(t / NR) * g->ss + lane0, *p1 = vp + (size_t)(t / NR + 1) * g->ss;
    const size_t plane = (size_t)g->h * g->w, xin = (size_t)g->k * plane;
    for (int c = 0; c < g->k; c++) {
        __m512 r[4][4]; /* row transforms of the 4 input rows */
        for (int i = 0; i < 4; i++) {
            const float *rows[4] = {NULL, NULL, NULL, NULL};
            for (int q = 0; q < ch->G; q++) {
                int y = 2 * ch->ty[q] - g->pad + i;
                if (ch->im[q] >= 0 && y >= 0 && y < g->h)
                    rows[q] = x + ch->im[q] * xin + c * plane + (size_t)y * g->w;
            }
            __m512 v0 = wg_gload(rows, ch->G, 0, c0, g->w), v1 = wg_gload(rows, ch->G, 1, c0, g->w);
            __m512 u0 = wg_gload(rows, ch->G, 0, c0 + 2, g->w),
                   u1 = wg_gload(rows, ch->G, 1, c0 + 2, g->w);
            __m512 d0 = _mm512_permutex2var_ps(v0, ev, v1), d1 = _mm512_permutex2var_ps(v0, od, v1);
            __m512 d2 = _mm512_permutex2var_ps(u0, ev, u1), d3 = _mm512_permutex2var_ps(u0, od, u1);
            r[i][0] = _mm512_sub_ps(d0, d2);
            r[i][1] = _mm512_add_ps(d1, d2);
            r[i][2] = _mm512_sub_ps(d2, d1);
            r[i][3] = _mm512_sub_ps(d1, d3);
        }
        float *o0 = p0 + (size_t)c * NR, *o1 = p1 + (size_t)c * NR;
        for (int b = 0; b < 4; b++) {
            __m512 v[4] = {_mm512_sub_ps(r[0][b], r[2][b]), _mm512_add_ps(r[1][b], r[2][b]),
                           _mm512_sub_ps(r[2][b], r[1][b]), _mm512_sub_ps(r[1][b], r[3][b])};
            for (int a = 0; a < 4; a++) {
                size_t off = (size_t)(4 * a + b) * g->xs;
                _mm512_mask_storeu_ps(o0 + off, m0, v[a]);
                if (split)
                    _mm512_mask_storeu_ps(o1 + off, m1c, _mm512_maskz_compress_ps(m1, v[a]));
            }
        }
    }
}

/* the chunk's output tiles of every output channel of the images at y = A^T M A (+ bias), M
 * read from the chunk's block tile index t.  A^T = [1 1 1 0; 0 1 -1 -1]. */
static void wg_output_row(float *y, const wg_geom *g, const float *mb, const float *bias,
                          const wg_chunk *ch)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __mmask16 lm = lanes(ch->len);
    const int tw = ch->G > 1 ? g->tw : 16, c0 = 2 * ch->tx0;
    const int n = g->wo - c0 < 2 * tw ? g->wo - c0 : 2 * tw; /* output columns per chunk row */
    const size_t plane = (size_t)g->ho * g->wo, yout = (size_t)g->m * plane;
    for (int co = 0; co < g->m; co++) {
        const float *src = mb + (size_t)co * g->ldc + ch->t;
        __m512 s[2][4]; /* s[j][a] = (M A)[a][j] */
        for (int a = 0; a < 4; a++) {
            __m512 m0 = _mm512_maskz_loadu_ps(lm, src + (4 * a + 0) * g->ms_);
            __m512 m1 = _mm512_maskz_loadu_ps(lm, src + (4 * a + 1) * g->ms_);
            __m512 m2 = _mm512_maskz_loadu_ps(lm, src + (4 * a + 2) * g->ms_);
            __m512 m3 = _mm512_maskz_loadu_ps(lm, src + (4 * a + 3) * g->ms_);
            s[0][a] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            s[1][a] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        __m512 bv = _mm512_set1_ps(bias ? bias[co] : 0.0f);
        for (int i = 0; i < 2; i++) {
            float *rows[4] = {NULL, NULL, NULL, NULL};
            for (int q = 0; q < ch->G; q++) {
                int oy = 2 * ch->ty[q] + i;
                if (ch->im[q] >= 0 && oy < g->ho)
                    rows[q] = y + ch->im[q] * yout + co * plane + (size_t)oy * g->wo;
            }
            __m512 yj[2];
            for (int j = 0; j < 2; j++)
                yj[j] = i == 0 ? _mm512_add_ps(_mm512_add_ps(s[j][0], s[j][1]), s[j][2])
                               : _mm512_sub_ps(_mm512_sub_ps(s[j][1], s[j][2]), s[j][3]);
            if (bias)
                yj[0] = _mm512_add_ps(yj[0], bv), yj[1] = _mm512_add_ps(yj[1], bv);
            wg_gstore(rows, ch->G, 0, c0, n, _mm512_permutex2var_ps(yj[0], lo, yj[1]));
            wg_gstore(rows, ch->G, 1, c0, n, _mm512_permutex2var_ps(yj[0], hi, yj[1]));
        }
    }
}

/* y (n images (M, Ho, Wo)) = conv3x3(x (n images (K, H, W))) (+ bias) with pu = the packed
 * transformed weights; scratch: wg_thread_floats floats */
static void wg_conv(float *y, const float *x, const float *pu, const float *bias, int n,
                    const wg_geom *g, float *scratch)
{
    float *vp = scratch, *mb = scratch + g->nx * g->xs;
    const size_t pus = pad_to((size_t)g->m, MR) * g->k;
    const int rpb = g->nbt / g->tw; /* tile rows per block */
    const int total = n * g->th;     /* tile rows of the n images */
    for (int r0 = 0; r0 < total; r0 += rpb) {
        int nrow = total - r0 < rpb ? total - r0 : rpb, nt = nrow * g->tw;
        int nstrips = (nt + NR - 1) / NR;
        WG_FOR_CHUNKS(g, r0, nrow, ch, wg_input_row(vp, g, x, &ch));
        if (nt % NR) /* columns past the block's tiles: zeros (no stale NaN or denormals) */
            for (int xi = 0; xi < g->nx; xi++)
                for (int c = 0; c < g->k; c++) {
                    float *p = vp + xi * g->xs + (size_t)(nt / NR) * g->ss + (size_t)c * NR;
                    for (int l = nt % NR; l < NR; l++)
                        p[l] = 0;
                }
        for (int xi = 0; xi < g->nx; xi++)
            for (int ns = 0; ns < nstrips; ns++)
                for (int ms = 0; ms * MR < g->m; ms++)
                    kernel_8x32(mb + xi * g->ms_ + (size_t)ms * MR * g->ldc + (size_t)ns * NR,
                                g->ldc, 0, pu + xi * pus + (size_t)ms * g->k * MR,
                                vp + xi * g->xs + (size_t)ns * g->ss, g->k);
        WG_FOR_CHUNKS(g, r0, nrow, ch, wg_output_row(y, g, mb, bias, &ch));
    }
}

/* Weight gradient: with U = G g G^T and M[xi] summed over input channels as above,
 * dL/dg = G^T [sum over tiles (A dY A^T) . V] G, dY the tile's 2 x 2 output gradient.  So
 * Z[xi] (Co x Ci) = E[xi] (Co x tiles) . V[xi]^T (tiles x Ci), E = A dY A^T, reduces over
 * the tiles on the micro-kernel (both operands transposed into k-major strips, 16 x 16 at a
 * time), and dw += G^T Z G once at the end. */

/* E for the chunk's tiles of every channel of the images of dy (M, Ho, Wo), into strips
 * [m][NR] (g->es floats each) at the chunk's t.  A = [1 0; 1 1; 1 -1; 0 -1]. */
static void wg_grad_row(float *ep, const wg_geom *g, const float *dy, const wg_chunk *ch)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const int c0 = 2 * ch->tx0, len = ch->len, t = ch->t;
    const int lane0 = t % NR, split = lane0 + len > NR;
    const __mmask16 m0 = lanes(split ? NR - lane0 : len), m1 = lanes(len) & (__mmask16)~m0;
    const __mmask16 m1c = lanes(__builtin_popcount(m1)); /* m1's lanes, compressed */
    float *p0 = ep + (size_t)(t / NR) * g->es + lane0, *p1 = ep + (size_t)(t / NR + 1) * g->es;
    const size_t plane = (size_t)g->ho * g->wo, yout = (size_t)g->m * plane;
    for (int c = 0; c < g->m; c++) {
        __m512 f[2][4]; /* f[i] = (e A^T)[i] */
        for (int i = 0; i < 2; i++) {
            const float *rows[4] = {NULL, NULL, NULL, NULL};
            for (int q = 0; q < ch->G; q++) {
                int oy = 2 * ch->ty[q] + i;
                if (ch->im[q] >= 0 && oy < g->ho)
                    rows[q] = dy + ch->im[q] * yout + c * plane + (size_t)oy * g->wo;
            }
            __m512 v0 = wg_gload(rows, ch->G, 0, c0, g->wo), v1 = wg_gload(rows, ch->G, 1, c0, g->wo);
            __m512 e0 = _mm512_permutex2var_ps(v0, ev, v1), e1 = _mm512_permutex2var_ps(v0, od, v1);
            f[i][0] = e0;
            f[i][1] = _mm512_add_ps(e0, e1);
            f[i][2] = _mm512_sub_ps(e0, e1);
            f[i][3] = _mm512_sub_ps(_mm512_setzero_ps(), e1);
        }
        float *o0 = p0 + (size_t)c * NR, *o1 = p1 + (size_t)c * NR;
        for (int b = 0; b < 4; b++) {
            __m512 v[4] = {f[0][b], _mm512_add_ps(f[0][b], f[1][b]), _mm512_sub_ps(f[0][b], f[1][b]),
                           _mm512_sub_ps(_mm512_setzero_ps(), f[1][b])};
            for (int a = 0; a < 4; a++) {
                size_t off = (size_t)(4 * a + b) * g->exs;
                _mm512_mask_storeu_ps(o0 + off, m0, v[a]);
                if (split)
                    _mm512_mask_storeu_ps(o1 + off, m1c, _mm512_maskz_compress_ps(m1, v[a]));
            }
        }
    }
}

/* floats of wg_dw's scratch */
static size_t wg_dw_floats(const wg_geom *g)
{
    return 16 * (g->xs + g->exs + pad_to((size_t)g->m, 16) * g->nbt + g->ldz * g->nbt +
                 pad_to((size_t)g->m, MR) * g->ldz) +
           64;
}

/* dw (M x K x 3 x 3) += the weight gradient of the n images at dy (M, Ho, Wo) / x (K, H, W) */
static void wg_dw(float *dw, const float *dy, const float *x, int n, const wg_geom *g,
                  float *scratch)
{
    const size_t mp = pad_to((size_t)g->m, 16), pas = mp * g->nbt, pbs = g->ldz * g->nbt;
    const size_t zs = pad_to((size_t)g->m, MR) * g->ldz;
    const int nstr = g->nbt / NR;
    float *vp = scratch, *ep = vp + 16 * g->xs, *pa = ep + 16 * g->exs, *pb = pa + 16 * pas,
          *z = pb + 16 * pbs;
    memset(z, 0, sizeof(float) * 16 * zs);
    for (int xi = 0; xi < 16; xi++) /* channel rows past K / M: zeros, never written below */
        for (int s = 0; s < nstr; s++) {
            float *v = vp + xi * g->xs + (size_t)s * g->ss, *e = ep + xi * g->exs + (size_t)s * g->es;
            memset(v + (size_t)g->k * NR, 0, sizeof(float) * (g->ldz - g->k) * NR);
            memset(e + (size_t)g->m * NR, 0, sizeof(float) * (mp - g->m) * NR);
        }
    const int rpb = g->nbt / g->tw, total = n * g->th;
    for (int r0 = 0; r0 < total; r0 += rpb) {
        int nrow = total - r0 < rpb ? total - r0 : rpb, nt = nrow * g->tw;
        int ntp = (nt + 15) / 16 * 16; /* the GEMM's reduction: tiles padded with zeros */
        WG_FOR_CHUNKS(g, r0, nrow, ch, {
            wg_input_row(vp, g, x, &ch);
            wg_grad_row(ep, g, dy, &ch);
        });
        if (nt % NR)
            for (int xi = 0; xi < 16; xi++) {
                float *v = vp + xi * g->xs + (size_t)(nt / NR) * g->ss;
                float *e = ep + xi * g->exs + (size_t)(nt / NR) * g->es;
                for (int c = 0; c < g->k; c++)
                    memset(v + (size_t)c * NR + nt % NR, 0, sizeof(float) * (NR - nt % NR));
                for (int c = 0; c < g->m; c++)
                    memset(e + (size_t)c * NR + nt % NR, 0, sizeof(float) * (NR - nt % NR));
            }
        for (int xi = 0; xi < 16; xi++) {
            const float *v = vp + xi * g->xs, *e = ep + xi * g->exs;
            float *a = pa + xi * pas, *b = pb + xi * pbs;
            for (int t0 = 0; t0 < ntp; t0 += 16) {
                size_t so = (size_t)(t0 / NR) * g->ss + t0 % NR, eo = (size_t)(t0 / NR) * g->es + t0 % NR;
                /* a [M/MR strips][ntp][MR]: tiles t0.. of 16 rows of E, the halves to two strips */
                for (int m0 = 0; m0 < g->m; m0 += 16) {
                    float blk[256];
                    transpose16(blk, 16, e + eo + (size_t)m0 * NR, NR);
                    float *s0 = a + (size_t)(m0 / MR) * ntp * MR + (size_t)t0 * MR;
                    for (int i = 0; i < 16; i++) {
                        memcpy(s0 + i * MR, blk + i * 16, sizeof(float) * MR);
                        if (m0 + MR < g->m)
                            memcpy(s0 + (size_t)ntp * MR + i * MR, blk + i * 16 + 8,
                                   sizeof(float) * MR);
                    }
                }
                /* b [ldz/NR strips][ntp][NR]: tiles t0.. of 16 rows of V */
                for (int c0 = 0; c0 < (int)g->ldz; c0 += 16)
                    transpose16(b + (size_t)(c0 / NR) * ntp * NR + (size_t)t0 * NR + c0 % NR, NR,
                                v + so + (size_t)c0 * NR, NR);
            }
            for (int ns = 0; ns * NR < g->k; ns++)
                for (int ms = 0; ms * MR < g->m; ms++)
                    kernel_8x32(z + xi * zs + (size_t)ms * MR * g->ldz + (size_t)ns * NR, g->ldz, 1,
                                a + (size_t)ms * ntp * MR, b + (size_t)ns * ntp * NR, ntp);
        }
    }
    /* dw += G^T Z G; G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1] */
    for (int o = 0; o < g->m; o++)
        for (int c = 0; c < g->k; c++) {
            const float *zz = z + (size_t)o * g->ldz + c;
            float u[4][4], t[3][4];
            for (int xi = 0; xi < 16; xi++)
                u[xi / 4][xi % 4] = zz[xi * zs];
            for (int b = 0; b < 4; b++) {
                t[0][b] = u[0][b] + 0.5f * (u[1][b] + u[2][b]);
                t[1][b] = 0.5f * (u[1][b] - u[2][b]);
                t[2][b] = 0.5f * (u[1][b] + u[2][b]) + u[3][b];
            }
            float *q = dw + ((size_t)o * g->k + c) * 9;
            for (int i = 0; i < 3; i++) {
                q[3 * i + 0] += t[i][0] + 0.5f * (t[i][1] + t[i][2]);
                q[3 * i + 1] += 0.5f * (t[i][1] - t[i][2]);
                q[3 * i + 2] += 0.5f * (t[i][1] + t[i][2]) + t[i][3];
            }
        }
}

/* the forward and input-gradient geometries of d */
static wg_geom wg_fwd(const nn_conv2d_dims *d, int r)
{
    return wg_make(d->ci, d->h, d->w, d->co, d->ho, d->wo, d->pad, r);
}
static wg_geom wg_bwd(const nn_conv2d_dims *d, int r)
{
    return wg_make(d->co, d->ho, d->wo, d->ci, d->h, d->w, 2 - d->pad, r);
}

static size_t wg_shared_floats(const nn_conv2d_dims *d)
{
    size_t a = 16 * pad_to((size_t)d->co, MR) * d->ci, b = 16 * pad_to((size_t)d->ci, MR) * d->co;
    return (a > b ? a : b) + 16;
}
static size_t wg_tfl(const nn_conv2d_dims *d)
{
    if (!(d->kh == 3 && d->kw == 3 && d->stride == 1 && d->pad >= 0 && d->pad <= 2))
        return 0;
    size_t a = 0;
    for (int r = 2; r <= 4; r += 2) {
        wg_geom f = wg_fwd(d, r), b = wg_bwd(d, r);
        size_t x = wg_thread_floats(&f), y = wg_thread_floats(&b), e = wg_dw_floats(&f);
        a = a > x ? a : x;
        a = a > y ? a : y;
        a = a > e ? a : e;
    }
    return a;
}

/* shared packed-A floats and per-thread floats of the implicit-GEMM path */
static size_t igemm_shared_floats(const nn_conv2d_dims *d)
{
    size_t kk = (size_t)d->ci * d->kh * d->kw, kt = (size_t)d->co * d->kh * d->kw;
    size_t a = pad_to((size_t)d->co, MR) * kk, b = pad_to((size_t)d->ci, MR) * kt;
    return (a > b ? a : b) + 16;
}
static size_t igemm_thread_floats(const nn_conv2d_dims *d)
{
    return (size_t)KC * NC + (size_t)(NC / NR) * SPAD + (size_t)NR * KC +
           pad_to((size_t)d->co, MR) * KC + 64;
}
#endif

/* ------------------------------------------------------------------------------------ */
/* GEMM with a packed right operand (nn.h)                                               */
/* ------------------------------------------------------------------------------------ */

#ifdef NN_IGEMM
/* Layout: NR-column strips of B = w^T, strip s holding rows k = 0..K-1 of columns
 * [s*NR, s*NR + NR) (zeros past N), so any KC slice of a strip is one contiguous kc x NR
 * panel for kernel_8x32.  A is packed per (KC x MC) block into MR-row strips. */
/* Blocking (measured on Zen 4, 32 KB L1, 1 MB L2): a 48 x 512 A block (96 KB) in L2, one
 * 512 x 32 B strip (64 KB) streamed per 8-row strip of A, the next strip prefetched into L2
 * meanwhile; the kernel prefetches its C tile.  About OpenBLAS's speed at M >= 384 and
 * faster at M = 50, where OpenBLAS re-packs the weights on every call. */
#define PB_MC 48
#define PB_KC 512

size_t nn_packb_floats(int N, int K)
{
    return pad_to((size_t)N, NR) * (size_t)K;
}

void nn_packb(float *bp, const float *w, int N, int K)
{
    for (size_t s = 0; s < pad_to((size_t)N, NR) / NR; s++)
        for (int k = 0; k < K; k++) {
            float *o = bp + (s * K + k) * NR;
            for (int j = 0; j < NR; j++) {
                size_t n = s * NR + j;
                o[j] = n < (size_t)N ? w[n * K + k] : 0.0f;
            }
        }
}

/* o (kc x 8, k-major) = rows 0..7 of a (row stride lda), columns 0..kc-1; rows >= nrows
 * are zeros.  Whole strips go 8 x 8 blocks at a time through an AVX transpose. */
static void pack_rows8(float *o, const float *a, size_t lda, int nrows, int kc)
{
    int k = 0;
    if (nrows >= 8)
        for (; k + 8 <= kc; k += 8) {
            __m256 r0 = _mm256_loadu_ps(a + k), r1 = _mm256_loadu_ps(a + lda + k),
                   r2 = _mm256_loadu_ps(a + 2 * lda + k), r3 = _mm256_loadu_ps(a + 3 * lda + k),
                   r4 = _mm256_loadu_ps(a + 4 * lda + k), r5 = _mm256_loadu_ps(a + 5 * lda + k),
                   r6 = _mm256_loadu_ps(a + 6 * lda + k), r7 = _mm256_loadu_ps(a + 7 * lda + k);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
                   t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                   t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = o + (size_t)k * 8;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 16, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 32, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 40, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 48, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 56, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    for (int r = 0; r < 8; r++) {
        const float *row = r < nrows ? a + (size_t)r * lda : NULL;
        for (int q = k; q < kc; q++)
            o[(size_t)q * 8 + r] = row ? row[q] : 0.0f;
    }
}

void nn_gemm_packb(float *c, size_t ldc, const float *a, size_t lda, const float *bp, int M, int N, int K, int n0,
                   int n1)
{
    (void)N;
    if (M <= 0 || n1 <= n0 || K <= 0)
        return;
    _Alignas(64) float ap[PB_MC * PB_KC]; /* the A block, in L2 across the strips */
    cmap cm = {c, (size_t)-1, 0, ldc};
    for (int k0 = 0; k0 < K; k0 += PB_KC) {
        int kc = K - k0 < PB_KC ? K - k0 : PB_KC;
        for (int m0 = 0; m0 < M; m0 += PB_MC) {
            int mc = M - m0 < PB_MC ? M - m0 : PB_MC;
            for (int s = 0; s < mc; s += MR)
                pack_rows8(ap + (size_t)s * kc, a + (size_t)(m0 + s) * lda + k0, lda, M - m0 - s, kc);
            for (int n = n0 / NR * NR; n < n1; n += NR) {
                int nr = n1 - n < NR ? n1 - n : NR;
                const float *b = bp + ((size_t)n / NR * K + k0) * NR;
                const char *next = (const char *)(b + (size_t)K * NR); /* the next strip's panel */
                size_t lines = n + NR < n1 ? (size_t)kc * NR * sizeof(float) / 64 : 0, per = lines / ((mc + MR - 1) / MR) + 1, l = 0;
                for (int s = 0; s < mc; s += MR) {
                    for (size_t e = l + per; l < e && l < lines; l++)
                        _mm_prefetch(next + l * 64, _MM_HINT_T1);
                    tile(&cm, (size_t)(m0 + s), (size_t)n, mc - s < MR ? mc - s : MR, nr, 1, ap + (size_t)s * kc, b, kc);
                }
            }
        }
    }
}
#else
size_t nn_packb_floats(int N, int K)
{
    return (size_t)N * K;
}

void nn_packb(float *bp, const float *w, int N, int K)
{
    memcpy(bp, w, (size_t)N * K * sizeof *bp);
}

void nn_gemm_packb(float *c, size_t ldc, const float *a, size_t lda, const float *bp, int M, int N, int K, int n0,
                   int n1)
{
    (void)N;
    if (M <= 0 || n1 <= n0 || K <= 0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n1 - n0, K, 1.0f, a, (int)lda, bp + (size_t)n0 * K, K,
                1.0f, c + n0, (int)ldc);
}
#endif

/* bf16 products: w^T in 32-column strips of k-pairs, element (strip s, pair p, column j,
 * half t) at ((s * KP + p) * 32 + j) * 2 + t, KP = ceil(K / 2), zeros past N and K; the
 * left operand is rounded to bf16 (nearest even) as it is packed; sums in fp32. */
#define BF_NR 32

static uint16_t bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* NaN stays a quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

size_t nn_packb_bf16_size(int N, int K)
{
    return ((size_t)N + BF_NR - 1) / BF_NR * BF_NR * (((size_t)K + 1) / 2 * 2);
}

void nn_packb_bf16(uint16_t *bp, const float *w, int N, int K)
{
    size_t KP = ((size_t)K + 1) / 2, S = ((size_t)N + BF_NR - 1) / BF_NR;
    for (size_t s = 0; s < S; s++)
        for (size_t p = 0; p < KP; p++)
            for (int j = 0; j < BF_NR; j++)
                for (int t = 0; t < 2; t++) {
                    size_t n = s * BF_NR + j, k = 2 * p + t;
                    bp[((s * KP + p) * BF_NR + j) * 2 + t] = n < (size_t)N && k < (size_t)K ? bf16_round(w[n * K + k]) : 0;
                }
}

void nn_packb_bf16_from_packb(uint16_t *hp, const float *bp, int N, int K)
{
#ifdef NN_IGEMM
    size_t KP = ((size_t)K + 1) / 2, S = ((size_t)N + BF_NR - 1) / BF_NR;
    for (size_t s = 0; s < S; s++)
        for (size_t p = 0; p < KP; p++)
            for (int j = 0; j < BF_NR; j++)
                for (int t = 0; t < 2; t++) {
                    size_t k = 2 * p + t;
                    hp[((s * KP + p) * BF_NR + j) * 2 + t] = k < (size_t)K ? bf16_round(bp[(s * K + k) * NR + j]) : 0;
                }
#else
    nn_packb_bf16(hp, bp, N, K); /* bp is w itself here */
#endif
}

#if defined(NN_IGEMM) && defined(__AVX512BF16__)
int nn_bf16_native(void)
{
    return 1;
}

/* c (8 x 32, row stride ldc) += a (kp x 8 bf16 pairs) . b (kp x 32 x 2 bf16) */
static void kernel_bf16_8x32(float *c, size_t ldc, const uint32_t *a, const uint16_t *b, int kp)
{
    for (int r = 0; r < 8; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
    }
    __m512 x0[8], x1[8];
    for (int r = 0; r < 8; r++)
        x0[r] = x1[r] = _mm512_setzero_ps();
    for (int k = 0; k < kp; k++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);
            x0[r] = _mm512_dpbf16_ps(x0[r], av, b0);
            x1[r] = _mm512_dpbf16_ps(x1[r], av, b1);
        }
        a += 8;
        b += 2 * BF_NR;
    }
    for (int r = 0; r < 8; r++) {
        float *p = c + r * ldc;
        _mm512_storeu_ps(p, _mm512_add_ps(x0[r], _mm512_loadu_ps(p)));
        _mm512_storeu_ps(p + 16, _mm512_add_ps(x1[r], _mm512_loadu_ps(p + 16)));
    }
}

void nn_gemm_packb_bf16(float *c, size_t ldc, const float *a, size_t lda, const uint16_t *bp, int M, int N, int K,
                        int n0, int n1)
{
    (void)N;
    if (M <= 0 || n1 <= n0 || K <= 0)
        return;
    const int KP = (K + 1) / 2, PC = PB_KC / 2; /* pairs per slice */
    _Alignas(64) uint32_t ap[PB_MC * (PB_KC / 2)];
    for (int p0 = 0; p0 < KP; p0 += PC) {
        int pc = KP - p0 < PC ? KP - p0 : PC;
        for (int m0 = 0; m0 < M; m0 += PB_MC) {
            int mc = M - m0 < PB_MC ? M - m0 : PB_MC;
            for (int s = 0; s < mc; s += 8)
                for (int r = 0; r < 8; r++) {
                    const float *row = m0 + s + r < M ? a + (size_t)(m0 + s + r) * lda : NULL;
                    uint32_t *o = ap + (size_t)s * pc + r;
                    for (int p = 0; p < pc; p += 16) { /* 32 floats -> 16 pairs (VCVTNE2PS2BF16: nearest even) */
                        int k = 2 * (p0 + p), nk = K - k < 32 ? K - k : 32;
                        _Alignas(64) uint32_t t[16];
                        __m512 lo = _mm512_setzero_ps(), hi = lo;
                        if (row) {
                            lo = _mm512_maskz_loadu_ps(lanes(nk), row + k);
                            hi = _mm512_maskz_loadu_ps(lanes(nk - 16), row + k + 16);
                        }
                        _mm512_store_si512(t, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                        for (int q = 0; q < 16 && p + q < pc; q++)
                            o[(size_t)(p + q) * 8] = t[q];
                    }
                }
            for (int n = n0 / BF_NR * BF_NR; n < n1; n += BF_NR) {
                int nr = n1 - n < BF_NR ? n1 - n : BF_NR;
                const uint16_t *b = bp + ((size_t)n / BF_NR * KP + p0) * BF_NR * 2;
                for (int s = 0; s < mc; s += 8) {
                    int mr = mc - s < 8 ? mc - s : 8;
                    float *cc = c + (size_t)(m0 + s) * ldc + n;
                    if (mr == 8 && nr == BF_NR) {
                        kernel_bf16_8x32(cc, ldc, ap + (size_t)s * pc, b, pc);
                        continue;
                    }
                    _Alignas(64) float t[8 * BF_NR] = {0};
                    kernel_bf16_8x32(t, BF_NR, ap + (size_t)s * pc, b, pc);
                    for (int r = 0; r < mr; r++)
                        for (int j = 0; j < nr; j++)
                            cc[(size_t)r * ldc + j] += t[r * BF_NR + j];
                }
            }
        }
    }
}
#else
int nn_bf16_native(void)
{
    return 0;
}

static float bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* the same arithmetic (bf16 inputs, fp32 sums), scalar */
void nn_gemm_packb_bf16(float *c, size_t ldc, const float *a, size_t lda, const uint16_t *bp, int M, int N, int K,
                        int n0, int n1)
{
    (void)N;
    size_t KP = ((size_t)K + 1) / 2;
    for (int i = 0; i < M; i++)
        for (int n = n0; n < n1; n++) {
            const uint16_t *b = bp + ((size_t)n / BF_NR * KP * BF_NR + n % BF_NR) * 2;
            float s = 0;
            for (int k = 0; k < K; k++)
                s += bf16_float(bf16_round(a[(size_t)i * lda + k])) * bf16_float(b[(size_t)k / 2 * BF_NR * 2 + k % 2]);
            c[(size_t)i * ldc + n] += s;
        }
}
#endif

static size_t conv_shared_floats(const nn_conv2d_dims *d)
{
#ifdef NN_IGEMM
    size_t a = igemm_shared_floats(d), b = wg_shared_floats(d);
    return a > b ? a : b;
#else
    (void)d;
    return 0;
#endif
}

static size_t conv_tfl(const nn_conv2d_dims *d)
{
    size_t a = conv_thread_floats(d);
#ifdef NN_IGEMM
    size_t b =
        igemm_thread_floats(d) + (size_t)d->ci * d->kh * d->kw * d->ho * d->wo * conv_group(d) + 16;
    a = a > b ? a : b;
    b = wg_tfl(d);
    a = a > b ? a : b;
#endif
    return a;
}

/* the algorithm in effect: nn_set_conv_algo's, else FEDSM_CONV_ALGO's (blas, igemm or
 * winograd), else the build's default */
static int conv_algo_get(void)
{
#ifdef NN_IGEMM
    if (conv_algo < 0) {
        const char *e = getenv("FEDSM_CONV_ALGO");
        conv_algo = !e                        ? NN_CONV_DEFAULT
                    : !strcmp(e, "blas")      ? NN_CONV_BLAS
                    : !strcmp(e, "igemm")     ? NN_CONV_IGEMM
                    : !strcmp(e, "winograd")  ? NN_CONV_WINOGRAD
                                              : NN_CONV_DEFAULT;
    }
    return conv_algo;
#else
    return NN_CONV_BLAS;
#endif
}

int nn_conv_algo(void)
{
    return conv_algo_get();
}

int nn_set_conv_algo(int algo)
{
#ifdef NN_IGEMM
    conv_algo = algo == NN_CONV_BLAS || algo == NN_CONV_WINOGRAD ? algo : NN_CONV_IGEMM;
    return conv_algo;
#else
    (void)algo;
    return NN_CONV_BLAS;
#endif
}

typedef struct {
    float *out, *din, *dw, *db;
    const float *in, *w, *b, *dout, *pa;
    const nn_conv2d_dims *d;
    float *ws;
    int wg;   /* Winograd tile (2 or 4; 0 none): the forward, or the backward's input gradient */
    int wgdw; /* Winograd weight gradient */
} conv_task;

/* this thread's scratch and weight-grad partial (tid > 0) inside ws */
static float *conv_scratch(const conv_task *t, int tid)
{
    return t->ws + conv_shared_floats(t->d) + (size_t)tid * conv_tfl(t->d);
}
static float *conv_partial(float *ws, const nn_conv2d_dims *d, int tid, int nt)
{
    size_t nw = (size_t)d->co * d->ci * d->kh * d->kw;
    return ws + conv_shared_floats(d) + (size_t)nt * conv_tfl(d) + (size_t)(tid - 1) * (nw + d->co);
}

static void conv_forward_task(void *ctx, int tid, int nt)
{
    const conv_task *t = ctx;
    const nn_conv2d_dims *d = t->d;
    int lo, hi;
    split(d->n, tid, nt, &lo, &hi);
    const size_t hw = (size_t)d->ho * d->wo, kk = (size_t)d->ci * d->kh * d->kw;
    const size_t xin = (size_t)d->ci * d->h * d->w, yout = (size_t)d->co * hw;
    const int pw = conv_is_pointwise(d), G = conv_group(d);
    float *col = conv_scratch(t, tid);
    for (int s = lo; s < hi; s += G) {
        int g = hi - s < G ? hi - s : G;
        size_t ld = (size_t)g * hw;
        float *stage = col + (pw && G == 1 ? 0 : kk * G * hw);
        const float *b;
        if (pw && g == 1) {
            b = t->in + s * xin;
        } else if (pw) {
            stage_gather(col, t->in + s * xin, g, d->ci, hw, xin);
            b = col;
        } else {
            for (int j = 0; j < g; j++)
                im2col(col + j * hw, ld, t->in + (s + j) * xin, d);
            b = col;
        }
        float *y = g == 1 ? t->out + s * yout : stage;
        /* y (Co, g*HW) = w (Co, KK) @ col (KK, g*HW) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->co, (int)ld, (int)kk, 1.0f, t->w,
                    (int)kk, b, (int)ld, 0.0f, y, (int)ld);
        if (t->b)
            for (int o = 0; o < d->co; o++)
                for (size_t i = 0; i < ld; i++)
                    y[o * ld + i] += t->b[o];
        if (g > 1)
            stage_scatter(t->out + s * yout, stage, g, d->co, hw, yout);
    }
}

#ifdef NN_IGEMM
static void conv_forward_igemm_task(void *ctx, int tid, int nt)
{
    const conv_task *t = ctx;
    const nn_conv2d_dims *d = t->d;
    int lo, hi;
    split(d->n, tid, nt, &lo, &hi);
    if (lo >= hi)
        return;
    const size_t hw = (size_t)d->ho * d->wo, xin = (size_t)d->ci * d->h * d->w;
    const size_t yout = (size_t)d->co * hw;
    cmap cm = {.base = t->out + lo * yout, .hw = hw, .img = yout, .ldm = hw};
    igemm_conv(&cm, t->pa, d->co, d->ci * d->kh * d->kw, t->in + lo * xin, xin, d,
               (size_t)(hi - lo) * hw, conv_scratch(t, tid));
    if (t->b)
        for (int s = lo; s < hi; s++)
            for (int o = 0; o < d->co; o++) {
                float *y = t->out + s * yout + o * hw;
                for (size_t i = 0; i < hw; i++)
                    y[i] += t->b[o];
            }
}

static void conv_forward_wg_task(void *ctx, int tid, int nt)
{
    const conv_task *t = ctx;
    const nn_conv2d_dims *d = t->d;
    int lo, hi;
    split(d->n, tid, nt, &lo, &hi);
    if (lo >= hi)
        return;
    const size_t xin = (size_t)d->ci * d->h * d->w, yout = (size_t)d->co * d->ho * d->wo;
    wg_geom g = wg_fwd(d, t->wg);
    wg_conv(t->out + lo * yout, t->in + lo * xin, t->pa, t->b, hi - lo, &g, conv_scratch(t, tid));
}
#endif

void nn_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const nn_conv2d_dims *d, float *ws)
{
    conv_task t = {.out = out, .in = in, .w = w, .b = b, .d = d, .ws = ws};
#ifdef NN_IGEMM
    int algo = conv_algo_get();
    if (algo == NN_CONV_WINOGRAD && wg_ok(d, d->ci)) {
        t.wg = 2;
        wg_pack_weights(ws, w, d->co, d->ci, (size_t)d->ci * 9, 9, 0);
        t.pa = ws;
        nn_run(conv_forward_wg_task, &t);
        return;
    }
    if (algo != NN_CONV_BLAS) {
        pack_a_rows(ws, w, d->co, d->ci * d->kh * d->kw);
        t.pa = ws;
        nn_run(conv_forward_igemm_task, &t);
        return;
    }
#endif
    nn_run(conv_forward_task, &t);
}

static void conv_backward_task(void *ctx, int tid, int nt)
{
    const conv_task *t = ctx;
    const nn_conv2d_dims *d = t->d;
    int lo, hi;
    split(d->n, tid, nt, &lo, &hi);
    const size_t hw = (size_t)d->ho * d->wo, kk = (size_t)d->ci * d->kh * d->kw;
    const size_t xin = (size_t)d->ci * d->h * d->w, yout = (size_t)d->co * hw;
    const size_t nw = (size_t)d->co * kk;
    const int pw = conv_is_pointwise(d), G = conv_group(d);
    float *col = conv_scratch(t, tid);
    float *stage = col + (pw && G == 1 ? 0 : kk * G * hw);
    /* thread 0 accumulates into dw/db; the others into their own slices of ws, zeroed */
    float *dw = t->dw, *db = t->db;
    if (tid > 0) {
        dw = conv_partial(t->ws, d, tid, nt);
        db = dw + nw;
        memset(dw, 0, sizeof(float) * (nw + d->co));
    }
    for (int s = lo; s < hi; s += G) {
        int g = hi - s < G ? hi - s : G;
        size_t ld = (size_t)g * hw;
        const float *dy = t->dout + s * yout;
        if (g > 1) {
            stage_gather(stage, dy, g, d->co, hw, yout);
            dy = stage;
        }
        const float *b;
        if (pw && g == 1) {
            b = t->in + s * xin;
        } else if (pw) {
            stage_gather(col, t->in + s * xin, g, d->ci, hw, xin);
            b = col;
        } else {
            for (int j = 0; j < g; j++)
                im2col(col + j * hw, ld, t->in + (s + j) * xin, d);
            b = col;
        }
        /* dw (Co, KK) += dy (Co, g*HW) @ col^T (g*HW, KK) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->co, (int)kk, (int)ld, 1.0f, dy,
                    (int)ld, b, (int)ld, 1.0f, dw, (int)kk);
        if (t->db)
            for (int o = 0; o < d->co; o++)
                db[o] += row_sum(dy + o * ld, ld);
        if (!t->din)
            continue;
        float *dx = t->din + s * xin;
        if (pw && g == 1) {
            /* dx (Ci, HW) = w^T (Ci, Co) @ dy (Co, HW) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kk, (int)ld, d->co, 1.0f,
                        t->w, (int)kk, dy, (int)ld, 0.0f, dx, (int)ld);
        } else {
            /* dcol (KK, g*HW) = w^T (KK, Co) @ dy (Co, g*HW) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kk, (int)ld, d->co, 1.0f,
                        t->w, (int)kk, dy, (int)ld, 0.0f, col, (int)ld);
            if (pw)
                stage_scatter(dx, col, g, d->ci, hw, xin);
            else
                for (int j = 0; j < g; j++)
                    col2im(dx + j * xin, col + j * hw, ld, d);
        }
    }
}

#ifdef NN_IGEMM
/* the input gradient of a stride-1 conv is a conv of dy with flipped weights */
static int conv_dx_as_conv(const nn_conv2d_dims *d)
{
    return d->stride == 1 && d->kh == d->kw && d->pad <= d->kh - 1;
}

static void conv_backward_igemm_task(void *ctx, int tid, int nt)
{
    const conv_task *t = ctx;
    const nn_conv2d_dims *d = t->d;
    int lo, hi;
    split(d->n, tid, nt, &lo, &hi);
    const size_t hw = (size_t)d->ho * d->wo, kk = (size_t)d->ci * d->kh * d->kw;
    const size_t xin = (size_t)d->ci * d->h * d->w, yout = (size_t)d->co * hw;
    const size_t nw = (size_t)d->co * kk;
    float *dw = t->dw, *db = t->db;
    if (tid > 0) {
        dw = conv_partial(t->ws, d, tid, nt);
        db = dw + nw;
        memset(dw, 0, sizeof(float) * (nw + d->co));
    }
    if (lo >= hi)
        return;
    float *pb = conv_scratch(t, tid);
    float *pa = pb + (size_t)KC * NC + (size_t)(NC / NR) * SPAD + (size_t)NR * KC;
    if (t->wgdw) {
        wg_geom g = wg_fwd(d, 2);
        wg_dw(dw, t->dout + lo * yout, t->in + lo * xin, hi - lo, &g, pb);
    } else
        igemm_dw(dw, t->dout + lo * yout, t->in + lo * xin, d, (size_t)(hi - lo) * hw, pa, pb);
    if (t->db)
        for (int s = lo; s < hi; s++)
            for (int o = 0; o < d->co; o++)
                db[o] += row_sum(t->dout + s * yout + o * hw, hw);
    if (!t->din)
        return;
    if (t->wg) {
        wg_geom g = wg_bwd(d, t->wg);
        wg_conv(t->din + lo * xin, t->dout + lo * yout, t->pa, NULL, hi - lo, &g, pb);
    } else if (conv_dx_as_conv(d)) {
        nn_conv2d_dims d2 =
            nn_conv2d_make(d->n, d->co, d->ho, d->wo, d->ci, d->kh, 1, d->kh - 1 - d->pad);
        const size_t hwi = (size_t)d->h * d->w;
        cmap cm = {.base = t->din + lo * xin, .hw = hwi, .img = xin, .ldm = hwi};
        igemm_conv(&cm, t->pa, d->ci, d->co * d->kh * d->kw, t->dout + lo * yout, yout, &d2,
                   (size_t)(hi - lo) * hwi, pb);
    } else { /* dcol (KK, g*HW) = w^T (KK, Co) . dy (Co, g*HW) (t->pa: w^T packed), col2im */
        const int G = conv_group(d);
        float *col = pa + pad_to((size_t)d->co, MR) * KC + 16;
        for (int s = lo; s < hi; s += G) {
            int g = hi - s < G ? hi - s : G;
            size_t ntot = (size_t)g * hw;
            cmap cm = {.base = col, .hw = (size_t)-1, .img = 0, .ldm = ntot};
            const float *dy = t->dout + s * yout;
            for (size_t n0 = 0; n0 < ntot; n0 += NC) {
                int nc = ntot - n0 < NC ? (int)(ntot - n0) : NC;
                for (int k0 = 0; k0 < d->co; k0 += KC) {
                    int kc = d->co - k0 < KC ? d->co - k0 : KC;
                    /* pb [strip][kc][NR] = dy[img(n)][k0 + k][p(n)] */
                    for (int ns = 0; ns * NR < nc; ns++)
                        for (int k = 0; k < kc; k++) {
                            float *o = pb + ((size_t)ns * kc + k) * NR;
                            size_t n = n0 + (size_t)ns * NR;
                            if (n + NR <= ntot && n % hw + NR <= hw) { /* one image row run */
                                const float *src = dy + (n / hw) * yout + (size_t)(k0 + k) * hw;
                                _mm512_storeu_ps(o, _mm512_loadu_ps(src + n % hw));
                                _mm512_storeu_ps(o + 16, _mm512_loadu_ps(src + n % hw + 16));
                                continue;
                            }
                            for (int j = 0; j < NR; j++) {
                                size_t n = n0 + (size_t)ns * NR + j;
                                o[j] = n < ntot
                                           ? dy[(n / hw) * yout + (size_t)(k0 + k) * hw + n % hw]
                                           : 0.0f;
                            }
                        }
                    for (int ns = 0; ns * NR < nc; ns++)
                        for (int ms = 0; ms * MR < (int)kk; ms++) {
                            int mr = (int)kk - ms * MR < MR ? (int)kk - ms * MR : MR;
                            int nr = nc - ns * NR < NR ? nc - ns * NR : NR;
                            tile(&cm, (size_t)ms * MR, n0 + (size_t)ns * NR, mr, nr, k0 > 0,
                                 t->pa + ((size_t)ms * d->co + k0) * MR, pb + (size_t)ns * kc * NR,
                                 kc);
                        }
                }
            }
            for (int j = 0; j < g; j++)
                col2im(t->din + (s + j) * xin, col + j * hw, ntot, d);
        }
    }
}
#endif

void nn_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const nn_conv2d_dims *d, float *ws)
{
    conv_task t = {
        .din = din, .dw = dw, .db = db, .in = in, .w = w, .dout = dout, .d = d, .ws = ws};
#ifdef NN_IGEMM
    int algo = conv_algo_get();
    if (algo != NN_CONV_BLAS) {
        int wgo = algo == NN_CONV_WINOGRAD;
        t.wg = din && wgo && wg_ok(d, d->co) ? 2 : 0;
        /* Winograd weight gradient from 16x16 maps up: on 8x8 maps (16 tiles per image) the
         * per-thread Z (16 Co Ci floats) costs more than it saves (measured, ResNet-8 layer3) */
        t.wgdw = wgo && wg_ok(d, d->ci < d->co ? d->ci : d->co) && d->ho * d->wo >= 256;
        if (t.wg)
            wg_pack_weights(ws, w, d->ci, d->co, 9, (size_t)d->ci * 9, 1);
        else if (din && conv_dx_as_conv(d))
            pack_a_flipped(ws, w, d);
        else if (din) /* w^T (KK x Co), packed: rows kk in strips of MR */
            pack_a_transposed(ws, w, d->co, d->ci * d->kh * d->kw);
        t.pa = ws;
        nn_run(conv_backward_igemm_task, &t);
    } else
#endif
        nn_run(conv_backward_task, &t);
    int nt = pool.n;
    if (nt > 1) { /* fixed-order reduction of the per-thread partial gradients */
        size_t nw = (size_t)d->co * d->ci * d->kh * d->kw;
        for (int k = 1; k < nt; k++) {
            const float *p = conv_partial(ws, d, k, nt);
            for (size_t i = 0; i < nw; i++)
                dw[i] += p[i];
            if (db)
                for (int o = 0; o < d->co; o++)
                    db[o] += p[nw + o];
        }
    }
}

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
    nn_run(bn_forward_task, &t);
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
    nn_run(bn_backward_task, &t);
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
    int blas = blas_hold();
    /* out (N, O) = in (N, I) @ w^T (I, O) (+ out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out_dim, in_dim, 1.0f, in, in_dim, w,
                in_dim, b ? 1.0f : 0.0f, out, out_dim);
    blas_release(blas);
}

void nn_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int in_dim, int out_dim)
{
    int blas = blas_hold();
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
    blas_release(blas);
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

/* ------------------------------------------------------------------------------------ */
/* augmentation                                                                          */
/* ------------------------------------------------------------------------------------ */

void nn_crop_flip(float *out, const float *in, int c, int h, int w, int pad, int dy, int dx,
                  int flip)
{
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++) {
            int sy = y + dy - pad;
            float *row = out + ((size_t)ch * h + y) * w;
            if (sy < 0 || sy >= h) {
                memset(row, 0, sizeof(float) * w);
                continue;
            }
            const float *src = in + ((size_t)ch * h + sy) * w;
            for (int x = 0; x < w; x++) {
                int cx = flip ? w - 1 - x : x; /* position in the crop before mirroring */
                int sx = cx + dx - pad;
                row[x] = (sx >= 0 && sx < w) ? src[sx] : 0.0f;
            }
        }
}

void nn_augment_crop_flip(float *out, const float *in, int n, int c, int h, int w, int pad,
                          int per_sample, rng *r)
{
    int dy = 0, dx = 0, flip = 0;
    const size_t img = (size_t)c * h * w;
    for (int i = 0; i < n; i++) {
        if (i == 0 || per_sample) {
            dy = (int)rng_below(r, (uint64_t)(2 * pad + 1));
            dx = (int)rng_below(r, (uint64_t)(2 * pad + 1));
            flip = rng_uniform(r) < 0.5;
        }
        nn_crop_flip(out + i * img, in + i * img, c, h, w, pad, dy, dx, flip);
    }
}
