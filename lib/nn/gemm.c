/* gemm.c - the dense products under nn's kernels: the 8x32 AVX-512 micro-kernel and its
 * tile and transpose helpers (used by conv.c and winograd.c through nn_impl.h), and the
 * products with a packed right operand of nn.h in fp32 and bf16 (CLIP's linear layers).
 * What it is not: a general BLAS (no transposes, no alpha/beta); other builds use OpenBLAS
 * (fp32) or a scalar loop (bf16).
 * The blocking follows the Goto/BLIS scheme: packed panels, register-blocked micro-kernel. */
#include "nn_impl.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

#ifdef NN_IGEMM
/* ---- the micro-kernel (AVX-512 builds) ---- */

/* nn_impl.h: c (MR x NR) (+ c when acc) = a (kc x MR, packed) . b (kc x NR, packed) */
void nn_gemm_kernel_8x32(float *c, size_t ldc, int acc, const float *a, const float *b, int kc)
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
void nn_gemm_tile(const cmap *c, size_t m0, size_t n0, int mr, int nr, int acc, const float *a,
                  const float *b, int kc)
{
    size_t p = n0 % c->hw;
    if (mr == MR && nr == NR && p + NR <= c->hw) {
        nn_gemm_kernel_8x32(c->base + (n0 / c->hw) * c->img + m0 * c->ldm + p, c->ldm, acc, a, b, kc);
        return;
    }
    float t[MR * NR];
    nn_gemm_kernel_8x32(t, NR, 0, a, b, kc);
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            size_t n = n0 + j;
            float *dst = c->base + (n / c->hw) * c->img + (m0 + r) * c->ldm + n % c->hw;
            *dst = acc ? *dst + t[r * NR + j] : t[r * NR + j];
        }
}

/* dst rows i < 16 (stride ldd) = column i of the 16 x 16 block at src (stride lds) */
void nn_gemm_transpose16(float *dst, size_t ldd, const float *src, size_t lds)
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
#endif

/* ---- products with a packed right operand (nn.h) ---- */
#ifdef NN_IGEMM
/* Layout: NR-column strips of B = w^T, strip s holding rows k = 0..K-1 of columns
 * [s*NR, s*NR + NR) (zeros past N), so any KC slice of a strip is one contiguous kc x NR
 * panel for nn_gemm_kernel_8x32.  A is packed per (KC x MC) block into MR-row strips. */
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
                    nn_gemm_tile(&cm, (size_t)(m0 + s), (size_t)n, mc - s < MR ? mc - s : MR, nr, 1,
                                 ap + (size_t)s * kc, b, kc);
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
