/* nn_impl.h - private to lib/nn/: what its files share.  The static split of work over the
 * pool's threads, 16-lane vector helpers (GCC/Clang vector extensions), and, in AVX-512
 * builds, the blocking constants of the 8x32 micro-kernel (gemm.c) and the entry points that
 * conv.c calls in gemm.c and winograd.c.
 * Not a public header: nothing outside lib/nn/ includes it, and what it declares may change
 * with the kernels. */
#ifndef FEDSM_NN_IMPL_H
#define FEDSM_NN_IMPL_H

#include "nn.h"
#include "pool.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* [*lo, *hi) = thread tid's share of 0..n (static, contiguous). */
static inline void split(int n, int tid, int nt, int *lo, int *hi)
{
    *lo = (int)((long)n * tid / nt);
    *hi = (int)((long)n * (tid + 1) / nt);
}

#if defined(__GNUC__) && !defined(__clang__)
/* the 64-byte vectors here and in the AVX-512 code only live in static inline helpers: no
 * ABI is crossed */
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
static inline float row_sum(const float *x, size_t n)
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

/* ---- AVX-512 builds: the 8x32 micro-kernel and its users (gemm.c, conv.c, winograd.c) ----
 * C (M x N) = A (M x K) . B (K x N), A packed in MR-row strips (k-major, MR floats per k),
 * B in NR-column strips (NR floats per k); K in KC slices, N in NC panels.  Elsewhere
 * convolutions and the packed products run on OpenBLAS. */
#if defined(__AVX512F__)
#include "simd.h"
#define NN_IGEMM 1
#define MR 8
#define NR 32
#define KC 256
#define NC 512
#define SPAD 64 /* floats between packed strips: their starts do not alias mod 4 KB */

static inline size_t pad_to(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

/* where C element (m, n) lives: base + (n / hw) * img + m * ldm + n % hw */
typedef struct {
    float *base;
    size_t hw, img, ldm;
} cmap;

/* gemm.c.  c (MR x NR, row stride ldc) (+ c when acc) = a (kc x MR, packed) . b (kc x NR,
 * packed). */
void nn_gemm_kernel_8x32(float *c, size_t ldc, int acc, const float *a, const float *b, int kc);
/* C[m0 + r][n0 + j] (+ C when acc) = (a . b)[r][j], r < mr, j < nr, C mapped by c. */
void nn_gemm_tile(const cmap *c, size_t m0, size_t n0, int mr, int nr, int acc, const float *a,
                  const float *b, int kc);
/* dst rows i < 16 (stride ldd) = column i of the 16 x 16 block at src (stride lds) */
void nn_gemm_transpose16(float *dst, size_t ldd, const float *src, size_t lds);

/* winograd.c: F(2x2, 3x3) for 3x3 stride-1 convolutions.  nn_wg_ok: d is Winograd's with a
 * reduction over k >= 8 channels.  Weights: pu = G g G^T for the forward (flip 0: m = Co,
 * k = Ci, sm = Ci*9, sk = 9) or the input gradient (flip 1: m = Ci, k = Co, sm = 9,
 * sk = Ci*9).  Scratch: nn_wg_shared_floats(d) for pu, nn_wg_thread_floats(d) per thread.
 * The three products run on n images from the calling thread (r: the tile size, 2). */
int nn_wg_ok(const nn_conv2d_dims *d, int k);
void nn_wg_pack_weights(float *pu, const float *w, int m, int k, size_t sm, size_t sk, int flip);
size_t nn_wg_shared_floats(const nn_conv2d_dims *d);
size_t nn_wg_thread_floats(const nn_conv2d_dims *d);
/* y: (n, Co, Ho, Wo) = conv(x: (n, Ci, H, W)) (+ bias (Co) or NULL) */
void nn_wg_forward(float *y, const float *x, const float *pu, const float *bias, int n,
                   const nn_conv2d_dims *d, int r, float *ws);
/* dx: (n, Ci, H, W) = the input gradient of dy: (n, Co, Ho, Wo) */
void nn_wg_backward_data(float *dx, const float *dy, const float *pu, int n,
                         const nn_conv2d_dims *d, int r, float *ws);
/* dw: (Co, Ci, 3, 3) += the weight gradient over n images of dy and x */
void nn_wg_backward_weights(float *dw, const float *dy, const float *x, int n,
                            const nn_conv2d_dims *d, float *ws);
#endif

#endif
