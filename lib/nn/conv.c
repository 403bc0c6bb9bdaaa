/* conv.c - conv2d of nn.h: the algorithm choice, the split over the pool, and two of the three
 * algorithms: im2col + OpenBLAS sgemm (grouped per ~512 output columns; every build) and
 * our implicit GEMM (AVX-512 builds: im2col fused into the packing of gemm.c's 8x32
 * micro-kernel).  The third, Winograd F(2x2, 3x3), is winograd.c.
 * Work is split over the pool by images with a static split; weight gradients are summed
 * from per-thread partials in thread order, so results are identical run to run at a fixed
 * thread count.  What it is not: groups, dilation, layouts other than NCHW, dtypes other
 * than fp32.  Semantics: PyTorch's Conv2d (docs/algorithms.md 1.5). */
#include "nn_impl.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

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
    int per = (d->n + pool_threads() - 1) / pool_threads();
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
    size_t nt = (size_t)pool_threads();
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
#ifdef NN_IGEMM
#define NN_CONV_DEFAULT NN_CONV_WINOGRAD
static int conv_algo = -1; /* -1: not chosen yet (conv_algo_get reads FEDSM_CONV_ALGO) */

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
                    nn_gemm_tile(cm, (size_t)ms * MR, n0 + (size_t)ns * NR, mr, nr, k0 > 0,
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
                nn_gemm_transpose16(blk, 16, tmp + r, rcp);
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
                        nn_gemm_transpose16(o + (size_t)r * NR + h, NR, tmp + (size_t)h * rcp + r, rcp);
            }
            for (int ns = 0; ns * NR < nc; ns++)
                for (int ms = 0; ms * MR < m; ms++) {
                    int mr = m - ms * MR < MR ? m - ms * MR : MR;
                    int nr = nc - ns * NR < NR ? nc - ns * NR : NR;
                    nn_gemm_tile(&cm, (size_t)ms * MR, (size_t)(k0 + ns * NR), mr, nr, 1,
                         pa + (size_t)ms * rc * MR, pb + (size_t)ns * rcp * NR, rc);
                }
        }
    }
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

static size_t conv_shared_floats(const nn_conv2d_dims *d)
{
#ifdef NN_IGEMM
    size_t a = igemm_shared_floats(d), b = nn_wg_shared_floats(d);
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
    b = nn_wg_thread_floats(d);
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
    nn_wg_forward(t->out + lo * yout, t->in + lo * xin, t->pa, t->b, hi - lo, d, t->wg,
                  conv_scratch(t, tid));
}
#endif

void nn_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const nn_conv2d_dims *d, float *ws)
{
    conv_task t = {.out = out, .in = in, .w = w, .b = b, .d = d, .ws = ws};
#ifdef NN_IGEMM
    int algo = conv_algo_get();
    if (algo == NN_CONV_WINOGRAD && nn_wg_ok(d, d->ci)) {
        t.wg = 2;
        nn_wg_pack_weights(ws, w, d->co, d->ci, (size_t)d->ci * 9, 9, 0);
        t.pa = ws;
        pool_run(conv_forward_wg_task, &t);
        return;
    }
    if (algo != NN_CONV_BLAS) {
        pack_a_rows(ws, w, d->co, d->ci * d->kh * d->kw);
        t.pa = ws;
        pool_run(conv_forward_igemm_task, &t);
        return;
    }
#endif
    pool_run(conv_forward_task, &t);
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
    if (t->wgdw)
        nn_wg_backward_weights(dw, t->dout + lo * yout, t->in + lo * xin, hi - lo, d, pb);
    else
        igemm_dw(dw, t->dout + lo * yout, t->in + lo * xin, d, (size_t)(hi - lo) * hw, pa, pb);
    if (t->db)
        for (int s = lo; s < hi; s++)
            for (int o = 0; o < d->co; o++)
                db[o] += row_sum(t->dout + s * yout + o * hw, hw);
    if (!t->din)
        return;
    if (t->wg) {
        nn_wg_backward_data(t->din + lo * xin, t->dout + lo * yout, t->pa, hi - lo, d, t->wg, pb);
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
                            nn_gemm_tile(&cm, (size_t)ms * MR, n0 + (size_t)ns * NR, mr, nr, k0 > 0,
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
        t.wg = din && wgo && nn_wg_ok(d, d->co) ? 2 : 0;
        /* Winograd weight gradient from 16x16 maps up: on 8x8 maps (16 tiles per image) the
         * per-thread Z (16 Co Ci floats) costs more than it saves (measured, ResNet-8 layer3) */
        t.wgdw = wgo && nn_wg_ok(d, d->ci < d->co ? d->ci : d->co) && d->ho * d->wo >= 256;
        if (t.wg)
            nn_wg_pack_weights(ws, w, d->ci, d->co, 9, (size_t)d->ci * 9, 1);
        else if (din && conv_dx_as_conv(d))
            pack_a_flipped(ws, w, d);
        else if (din) /* w^T (KK x Co), packed: rows kk in strips of MR */
            pack_a_transposed(ws, w, d->co, d->ci * d->kh * d->kw);
        t.pa = ws;
        pool_run(conv_backward_igemm_task, &t);
    } else
#endif
        pool_run(conv_backward_task, &t);
    int nt = pool_threads();
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
