/* winograd.c - Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (AVX-512 builds only):
 * the forward, input-gradient and weight-gradient products that conv.c dispatches to
 * (nn_impl.h).  Not here: the choice of algorithm, threads, other shapes (conv.c); an
 * F(4x4, 3x3) variant (dropped: slower here and ~10x the rounding error).
 *
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
#include "nn_impl.h"

#include <string.h>

#ifdef NN_IGEMM

#define WG_MIN_K 8 /* smaller reductions (the 3-channel stem) stay on the implicit GEMM */

int nn_wg_ok(const nn_conv2d_dims *d, int k)
{
    return d->kh == 3 && d->kw == 3 && d->stride == 1 && d->pad >= 0 && d->pad <= 2 &&
           k >= WG_MIN_K;
}

/* pu [16 xi][M/MR strips][K][MR] = G g G^T, g (3 x 3) = w + m sm + k sk (flipped 180 degrees
 * when flip), rows m >= M zero.  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. */
void nn_wg_pack_weights(float *pu, const float *w, int m, int k, size_t sm, size_t sk, int flip)
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
                    nn_gemm_kernel_8x32(mb + xi * g->ms_ + (size_t)ms * MR * g->ldc + (size_t)ns * NR,
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
                    nn_gemm_transpose16(blk, 16, e + eo + (size_t)m0 * NR, NR);
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
                    nn_gemm_transpose16(b + (size_t)(c0 / NR) * ntp * NR + (size_t)t0 * NR + c0 % NR, NR,
                                v + so + (size_t)c0 * NR, NR);
            }
            for (int ns = 0; ns * NR < g->k; ns++)
                for (int ms = 0; ms * MR < g->m; ms++)
                    nn_gemm_kernel_8x32(z + xi * zs + (size_t)ms * MR * g->ldz + (size_t)ns * NR, g->ldz, 1,
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

size_t nn_wg_shared_floats(const nn_conv2d_dims *d)
{
    size_t a = 16 * pad_to((size_t)d->co, MR) * d->ci, b = 16 * pad_to((size_t)d->ci, MR) * d->co;
    return (a > b ? a : b) + 16;
}
size_t nn_wg_thread_floats(const nn_conv2d_dims *d)
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

/* ---- entry points (nn_impl.h) ---- */

void nn_wg_forward(float *y, const float *x, const float *pu, const float *bias, int n,
                   const nn_conv2d_dims *d, int r, float *ws)
{
    wg_geom g = wg_fwd(d, r);
    wg_conv(y, x, pu, bias, n, &g, ws);
}

void nn_wg_backward_data(float *dx, const float *dy, const float *pu, int n,
                         const nn_conv2d_dims *d, int r, float *ws)
{
    wg_geom g = wg_bwd(d, r);
    wg_conv(dx, dy, pu, NULL, n, &g, ws);
}

void nn_wg_backward_weights(float *dw, const float *dy, const float *x, int n,
                            const nn_conv2d_dims *d, float *ws)
{
    wg_geom g = wg_fwd(d, 2);
    wg_dw(dw, dy, x, n, &g, ws);
}

#endif /* NN_IGEMM */
