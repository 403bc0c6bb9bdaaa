/* clip.c - CLIP inference (see clip.h).  Sections: kernels, loading, towers, preprocess.
 * Follows the CLIP architecture as Hugging Face's CLIPModel names it: pre-LayerNorm
 * residual blocks  x += out(attn(ln1(x)));  x += fc2(act(fc1(ln2(x)))),
 * attention softmax(q k^T / sqrt(hd) [+ causal mask]) v per head; QuickGELU
 * x * sigmoid(1.702 x).  Matrix products are OpenBLAS sgemm calls. */
#include "clip.h"

#include "err.h"
#include "finite.h"
#include "imgaug.h"
#include "json.h"
#include "nn.h"
#include "pool.h"
#include "safetensors.h"

#include <cblas.h>
#if defined(__AVX512F__)
#include "simd.h"
#endif
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* ---- kernels ---- */

#if defined(__AVX512F__)
/* exp of 16 lanes: Cephes' expf (n = round(x log2 e), x - n ln 2 in two parts, degree-5
 * polynomial, 2^n by scalef), within 2 ulp of libm over the float range; NaN stays NaN. */
static inline __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
#endif

/* x[0..n) = act(x[0..n)): QuickGELU x * sigmoid(1.702 x), or the exact (erf) GELU */
static void gelu_forward(float *x, size_t n, bool quick)
{
    if (!quick) {
        for (size_t k = 0; k < n; k++) x[k] = 0.5f * x[k] * (1.0f + erff(x[k] * 0.70710678f));
        return;
    }
    size_t k = 0;
#if defined(__AVX512F__)
    for (; k < n; k += 16) {
        __mmask16 mk = lanes((int)(n - k < 16 ? n - k : 16));
        __m512 v = _mm512_maskz_loadu_ps(mk, x + k);
        __m512 e = exp16(_mm512_mul_ps(v, _mm512_set1_ps(-1.702f)));
        _mm512_mask_storeu_ps(x + k, mk, _mm512_div_ps(v, _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    }
#endif
    for (; k < n; k++) x[k] = x[k] / (1.0f + expf(-1.702f * x[k]));
}

/* y: (M, D) = layernorm(x: (M, D)) * g + b; y may be x.  Two passes (mean, then the
 * centred variance) with 16 partial sums per row. */
static void layernorm_forward(float *y, const float *x, const float *g, const float *b, int M, int D, float eps)
{
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D;
#if defined(__AVX512F__)
        __m512 s = _mm512_setzero_ps(), ss = _mm512_setzero_ps();
        for (int k = 0; k < D; k += 16) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(lanes(D - k), xi + k));
        float mean = _mm512_reduce_add_ps(s) / (float)D;
        __m512 mv = _mm512_set1_ps(mean);
        for (int k = 0; k < D; k += 16) {
            __mmask16 mk = lanes(D - k);
            __m512 d = _mm512_maskz_sub_ps(mk, _mm512_maskz_loadu_ps(mk, xi + k), mv);
            ss = _mm512_fmadd_ps(d, d, ss);
        }
        float rstd = 1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)D + eps);
        __m512 rv = _mm512_set1_ps(rstd);
        for (int k = 0; k < D; k += 16) {
            __mmask16 mk = lanes(D - k);
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, xi + k), mv), rv);
            _mm512_mask_storeu_ps(yi + k, mk,
                                  _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(mk, g + k), _mm512_maskz_loadu_ps(mk, b + k)));
        }
#else
        double s = 0, ss = 0;
        for (int k = 0; k < D; k++) s += xi[k];
        float mean = (float)(s / D);
        for (int k = 0; k < D; k++) { float d = xi[k] - mean; ss += (double)d * d; }
        float rstd = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int k = 0; k < D; k++) yi[k] = (xi[k] - mean) * rstd * g[k] + b[k];
#endif
    }
}

/* The matrix products: y (M, N) [+]= x (M, K) . w^T (w: (N, K), packed by nn_packb) + b (N),
 * then the activation when act.  Columns [n0, n1) only, so a product can be split over threads by column. */
typedef struct {
    float *y;
    const float *x, *w, *b;
    const uint16_t *wh; /* bf16 copy of w, or NULL */
    int M, N, K;
    bool acc, act, quick;
} lin_job;

static void lin_cols(const lin_job *j, int n0, int n1)
{
    int n = n1 - n0;
    if (n <= 0) return;
    for (int i = 0; i < j->M; i++) {
        float *yi = j->y + (size_t)i * j->N + n0;
        if (j->acc)
            for (int k = 0; k < n; k++) yi[k] += j->b[n0 + k];
        else
            memcpy(yi, j->b + n0, (size_t)n * sizeof *yi);
    }
    if (j->wh)
        nn_gemm_packb_bf16(j->y, (size_t)j->N, j->x, (size_t)j->K, j->wh, j->M, j->N, j->K, n0, n1);
    else
        nn_gemm_packb(j->y, (size_t)j->N, j->x, (size_t)j->K, j->w, j->M, j->N, j->K, n0, n1);
    if (j->act)
        for (int i = 0; i < j->M; i++) gelu_forward(j->y + (size_t)i * j->N + n0, (size_t)n, j->quick);
}

/* [lo, hi) = part tid of nt of 0..n, boundaries on multiples of align */
static void split_range(int n, int align, int tid, int nt, int *lo, int *hi)
{
    int blocks = (n + align - 1) / align;
    *lo = (int)((long)blocks * tid / nt) * align;
    *hi = (int)((long)blocks * (tid + 1) / nt) * align;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

static void lin_task(void *ctx, int tid, int nt)
{
    const lin_job *j = ctx;
    int n0, n1;
    split_range(j->N, 64, tid, nt, &n0, &n1);
    lin_cols(j, n0, n1);
}

/* par: split the columns over the pool (one sequence); else on this thread */
static void linear(float *y, const float *x, const float *w, const uint16_t *wh, const float *b, int M, int N, int K,
                   bool acc, int act, bool par)
{
    lin_job j = {y, x, w, b, wh, M, N, K, acc, act != 0, act == 1};
    if (par && pool_threads() > 1)
        pool_run(lin_task, &j);
    else
        lin_cols(&j, 0, N);
}

/* Scratch floats attention_head needs: K transposed (hd, Tp) and one row of scores (Tp),
 * Tp = T rounded up to 16. */
static size_t att_floats(int T, int hd)
{
    size_t Tp = ((size_t)T + 15) & ~(size_t)15;
    return Tp * ((size_t)hd + 1);
}

/* One (sequence, head), query rows [i0, i1): o (i1 - i0, hd) with row stride ldo; q, k, v
 * (T, hd) with row stride ld.  softmax(q k^T / sqrt(hd) [causal]) v, row by row: the
 * scores of row i against K^T as 16-wide vectors, then o_i = sum_j p_j v_j. */
static void attention_head(float *o, int ldo, const float *q, const float *k, const float *v, int ld, int T, int hd,
                           bool causal, float *scratch, int i0, int i1)
{
    int Tp = (T + 15) & ~15;
    float *kt = scratch, *p = scratch + (size_t)Tp * hd;
    for (int d = 0; d < hd; d++) {
        float *r = kt + (size_t)d * Tp;
        for (int j = 0; j < T; j++) r[j] = k[(size_t)j * ld + d];
        for (int j = T; j < Tp; j++) r[j] = 0;
    }
    float scale = 1.0f / sqrtf((float)hd);
    for (int i = i0; i < i1; i++) {
        const float *qi = q + (size_t)i * ld;
        float *oi = o + (size_t)(i - i0) * ldo;
        int n = causal ? i + 1 : T;
#if defined(__AVX512F__)
        int nv = (n + 15) / 16;
        for (int jb = 0; jb < nv; jb += 4) {
            int w = nv - jb < 4 ? nv - jb : 4;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            const float *kb = kt + (size_t)jb * 16;
            for (int d = 0; d < hd; d++) {
                __m512 qd = _mm512_set1_ps(qi[d]);
                const float *kr = kb + (size_t)d * Tp;
                a0 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kr), a0);
                if (w > 1) a1 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kr + 16), a1);
                if (w > 2) a2 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kr + 32), a2);
                if (w > 3) a3 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kr + 48), a3);
            }
            float *pb = p + (size_t)jb * 16;
            _mm512_storeu_ps(pb, a0);
            if (w > 1) _mm512_storeu_ps(pb + 16, a1);
            if (w > 2) _mm512_storeu_ps(pb + 32, a2);
            if (w > 3) _mm512_storeu_ps(pb + 48, a3);
        }
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < n; j += 16) mx = _mm512_mask_max_ps(mx, lanes(n - j), mx, _mm512_loadu_ps(p + j));
        __m512 sv = _mm512_set1_ps(scale), m = _mm512_set1_ps(_mm512_reduce_max_ps(mx) * scale), sum = _mm512_setzero_ps();
        for (int j = 0; j < n; j += 16) {
            __mmask16 mk = lanes(n - j);
            __m512 e = _mm512_maskz_mov_ps(mk, exp16(_mm512_fmsub_ps(_mm512_loadu_ps(p + j), sv, m)));
            _mm512_storeu_ps(p + j, e);
            sum = _mm512_add_ps(sum, e);
        }
        float inv = 1.0f / _mm512_reduce_add_ps(sum);
        for (int d0 = 0; d0 < hd; d0 += 64) {
            __mmask16 m0 = lanes(hd - d0), m1 = lanes(hd - d0 - 16), m2 = lanes(hd - d0 - 32), m3 = lanes(hd - d0 - 48);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int j = 0; j < n; j++) {
                __m512 pj = _mm512_set1_ps(p[j]);
                const float *vj = v + (size_t)j * ld + d0;
                a0 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m0, vj), a0);
                a1 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m1, vj + 16), a1);
                a2 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m2, vj + 32), a2);
                a3 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m3, vj + 48), a3);
            }
            __m512 iv = _mm512_set1_ps(inv);
            _mm512_mask_storeu_ps(oi + d0, m0, _mm512_mul_ps(a0, iv));
            _mm512_mask_storeu_ps(oi + d0 + 16, m1, _mm512_mul_ps(a1, iv));
            _mm512_mask_storeu_ps(oi + d0 + 32, m2, _mm512_mul_ps(a2, iv));
            _mm512_mask_storeu_ps(oi + d0 + 48, m3, _mm512_mul_ps(a3, iv));
        }
#else
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int d = 0; d < hd; d++) s += qi[d] * kt[(size_t)d * Tp + j];
            p[j] = s * scale;
            mx = p[j] > mx ? p[j] : mx;
        }
        float sum = 0;
        for (int j = 0; j < n; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
        float inv = 1.0f / sum;
        for (int d = 0; d < hd; d++) {
            float a = 0;
            for (int j = 0; j < n; j++) a += p[j] * v[(size_t)j * ld + d];
            oi[d] = a * inv;
        }
#endif
    }
}

typedef struct {
    float *o, *scratch;
    const float *qkv;
    const int *pool; /* NULL: every row; else only row pool[b] of sequence b, into o row b */
    int B, T, D, H;
    bool causal;
} att_job;

/* (sequence, head) pairs [lo, hi) of o: (B*T, D) (or (B, D) when pooled) from qkv: (B*T, 3D) */
static void attention_pairs(const att_job *j, int lo, int hi, float *scratch)
{
    int hd = j->D / j->H;
    for (int bh = lo; bh < hi; bh++) {
        int b = bh / j->H, h = bh % j->H, i0 = j->pool ? j->pool[b] : 0, i1 = j->pool ? i0 + 1 : j->T;
        const float *qkv = j->qkv + (size_t)b * j->T * 3 * j->D + (size_t)h * hd;
        float *o = j->o + (size_t)b * (j->pool ? 1 : j->T) * j->D + (size_t)h * hd;
        attention_head(o, j->D, qkv, qkv + j->D, qkv + 2 * j->D, 3 * j->D, j->T, hd, j->causal, scratch, i0, i1);
    }
}

static void att_task(void *ctx, int tid, int nt)
{
    const att_job *j = ctx;
    int lo, hi;
    split_range(j->B * j->H, 1, tid, nt, &lo, &hi);
    attention_pairs(j, lo, hi, j->scratch + (size_t)tid * att_floats(j->T, j->D / j->H));
}

/* ---- towers ---- */

/* One chunk's activations, carved from one allocation made on the calling thread (so the
 * workers cannot fail): x (R, D) the residual stream, h (R, D), qkv (R, 3D), mlp (R, M),
 * att: attention scratch for each of the threads that may share the chunk. */
typedef struct {
    float *x, *h, *qkv, *mlp, *att, *extra;
} tower_scratch;

static size_t scratch_floats(const clip_tower *tw, int R, int T, int threads, size_t extra)
{
    size_t D = (size_t)tw->width;
    return (size_t)R * (2 * D + 3 * D + (size_t)tw->mlp) + (size_t)threads * att_floats(T, tw->width / tw->heads) + extra;
}

static void scratch_carve(tower_scratch *s, float *mem, const clip_tower *tw, int R, int T, int threads)
{
    size_t D = (size_t)tw->width;
    s->x = mem;
    s->h = s->x + (size_t)R * D;
    s->qkv = s->h + (size_t)R * D;
    s->mlp = s->qkv + (size_t)R * 3 * D;
    s->att = s->mlp + (size_t)R * tw->mlp;
    s->extra = s->att + (size_t)threads * att_floats(T, tw->width / tw->heads);
}

/* s->x: (B*T, D), updated in place through all layers.  par: one small batch, each product
 * and the attention heads split over the pool; else all on this thread.  pool: the row of
 * each sequence the caller reads (EOT, class token): the last layer computes only those
 * rows after its q/k/v (the other rows of s->x are left one layer behind). */
static void tower_forward(const clip_tower *tw, tower_scratch *s, int B, int T, bool causal, bool par,
                          const int *pool)
{
    int D = tw->width, M = tw->mlp, act = tw->quick_gelu ? 1 : 2;
    for (int l = 0; l < tw->layers; l++) {
        const clip_layer *L = &tw->l[l];
        bool last = pool && l == tw->layers - 1;
        int R = last ? B : B * T; /* rows after the attention */
        layernorm_forward(s->h, s->x, L->ln1_w, L->ln1_b, B * T, D, tw->ln_eps);
        linear(s->qkv, s->h, L->qkv_w, L->qkv_h, L->qkv_b, B * T, 3 * D, D, false, 0, par);
        att_job aj = {s->h, s->att, s->qkv, last ? pool : NULL, B, T, D, tw->heads, causal};
        if (par && pool_threads() > 1 && B * tw->heads > 1)
            pool_run(att_task, &aj);
        else
            attention_pairs(&aj, 0, B * tw->heads, s->att);
        float *x = s->x;
        if (last) { /* the pooled rows, gathered into the free q/k/v buffer */
            x = s->qkv;
            for (int b = 0; b < B; b++)
                memcpy(x + (size_t)b * D, s->x + ((size_t)b * T + pool[b]) * D, (size_t)D * sizeof *x);
        }
        linear(x, s->h, L->out_w, L->out_h, L->out_b, R, D, D, true, 0, par);
        layernorm_forward(s->h, x, L->ln2_w, L->ln2_b, R, D, tw->ln_eps);
        linear(s->mlp, s->h, L->fc1_w, L->fc1_h, L->fc1_b, R, M, D, false, act, par);
        linear(x, s->mlp, L->fc2_w, L->fc2_h, L->fc2_b, R, D, M, true, 0, par);
        if (last)
            for (int b = 0; b < B; b++)
                memcpy(s->x + ((size_t)b * T + pool[b]) * D, x + (size_t)b * D, (size_t)D * sizeof *x);
    }
}

/* Runs the batch [0, batch) as nt contiguous chunks, one per thread of the pool, each chunk
 * through the whole tower single-threaded (no synchronisation inside a forward pass), when
 * there are at least as many samples as threads; else as one chunk whose products are split
 * over the pool. */
typedef struct {
    const clip_model *m;
    const int32_t *tokens;
    const int *pool; /* per sample: the row the output is read from (text: EOT; image: 0) */
    int ctx;
    const float *pixels;
    float *out;
    int batch;
    bool par; /* one chunk, its products split over the pool */
    float **mem; /* per chunk */
    int *T;      /* per chunk: tokens per sequence */
} enc_job;

static void text_chunk(const enc_job *j, int b0, int nb, int T, float *mem);
static void image_chunk(const enc_job *j, int b0, int nb, float *mem);

static void enc_task(void *ctx, int tid, int nt)
{
    const enc_job *j = ctx;
    int lo, hi;
    split_range(j->batch, 1, tid, nt, &lo, &hi);
    if (hi <= lo) return;
    if (j->tokens)
        text_chunk(j, lo, hi - lo, j->T[tid], j->mem[tid]);
    else
        image_chunk(j, lo, hi - lo, j->mem[tid]);
}

/* Sizes and allocates each chunk's scratch, then runs.  0 or ERR_INTERNAL (memory). */
static int encode(enc_job *j)
{
    int pool = pool_threads();
    int nt = pool > 1 && j->batch >= pool ? pool : 1, rc = 0;
    j->par = nt == 1 && pool > 1;
    int thr = j->par ? pool : 1;
    float *mem[POOL_MAX_THREADS] = {0};
    int T[POOL_MAX_THREADS];
    j->mem = mem;
    j->T = T;
    for (int t = 0; t < nt && !rc; t++) {
        int lo, hi;
        split_range(j->batch, 1, t, nt, &lo, &hi);
        size_t n;
        if (j->tokens) {
            T[t] = 1;
            for (int b = lo; b < hi; b++)
                if (j->pool[b] + 1 > T[t]) T[t] = j->pool[b] + 1; /* causal: later positions cannot change the EOT row */
            n = scratch_floats(&j->m->text, (hi - lo) * T[t], T[t], thr, (size_t)(hi - lo) * j->m->text.width);
        } else {
            const clip_model *m = j->m;
            int G = m->grid, Tv = G * G + 1;
            T[t] = Tv;
            n = scratch_floats(&m->vision, (hi - lo) * Tv, Tv, thr,
                               (size_t)(hi - lo) * G * G * 3 * m->patch * m->patch);
        }
        mem[t] = malloc((n ? n : 1) * sizeof(float));
        if (!mem[t]) rc = err_set(ERR_INTERNAL, "out of memory for CLIP activations (%zu MB)", n * sizeof(float) >> 20);
    }
    if (!rc) {
        if (nt > 1)
            pool_run(enc_task, j);
        else
            enc_task(j, 0, 1);
    }
    for (int t = 0; t < nt; t++) free(mem[t]);
    return rc;
}

static void text_chunk(const enc_job *j, int b0, int nb, int T, float *mem)
{
    const clip_model *m = j->m;
    int D = m->text.width;
    tower_scratch s;
    scratch_carve(&s, mem, &m->text, nb * T, T, j->par ? pool_threads() : 1);
    for (int b = 0; b < nb; b++)
        for (int i = 0; i < T; i++) {
            const float *te = m->tok_emb + (size_t)j->tokens[(size_t)(b0 + b) * j->ctx + i] * D,
                        *pe = m->tpos + (size_t)i * D;
            float *xi = s.x + ((size_t)b * T + i) * D;
            for (int k = 0; k < D; k++) xi[k] = te[k] + pe[k];
        }
    tower_forward(&m->text, &s, nb, T, true, j->par, j->pool + b0);
    for (int b = 0; b < nb; b++)
        layernorm_forward(s.extra + (size_t)b * D, s.x + ((size_t)b * T + j->pool[b0 + b]) * D, m->final_ln_w,
                          m->final_ln_b, 1, D, m->text.ln_eps);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, m->embed_dim, D, 1.0f, s.extra, D, m->tproj, D, 0.0f,
                j->out + (size_t)b0 * m->embed_dim, m->embed_dim);
}

static void image_chunk(const enc_job *j, int b0, int nb, float *mem)
{
    const clip_model *m = j->m;
    int D = m->vision.width, P = m->patch, G = m->grid, S = m->image_size, T = G * G + 1, K = 3 * P * P;
    const float *pixels = j->pixels + (size_t)b0 * 3 * S * S;
    tower_scratch s;
    scratch_carve(&s, mem, &m->vision, nb * T, T, j->par ? pool_threads() : 1);
    float *cols = s.extra;
    /* patch embedding as a matrix product: cols (B*G*G, 3*P*P) . patch_w^T */
    for (int b = 0; b < nb; b++)
        for (int py = 0; py < G; py++)
            for (int px = 0; px < G; px++) {
                float *c = cols + (((size_t)b * G + py) * G + px) * K;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(c + ((size_t)ch * P + ky) * P,
                               pixels + (((size_t)b * 3 + ch) * S + (size_t)py * P + ky) * S + (size_t)px * P,
                               (size_t)P * sizeof(float));
            }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb * G * G, D, K, 1.0f, cols, K, m->patch_w, K, 0.0f, s.h, D);
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < T; t++) {
            float *xi = s.x + ((size_t)b * T + t) * D;
            const float *src = t ? s.h + ((size_t)b * G * G + t - 1) * D : m->class_emb, *pe = m->vpos + (size_t)t * D;
            for (int k = 0; k < D; k++) xi[k] = src[k] + pe[k];
        }
    layernorm_forward(s.x, s.x, m->pre_ln_w, m->pre_ln_b, nb * T, D, m->vision.ln_eps);
    tower_forward(&m->vision, &s, nb, T, false, j->par, j->pool + b0);
    for (int b = 0; b < nb; b++)
        layernorm_forward(s.h + (size_t)b * D, s.x + (size_t)b * T * D, m->post_ln_w, m->post_ln_b, 1, D,
                          m->vision.ln_eps);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, m->embed_dim, D, 1.0f, s.h, D, m->vproj, D, 0.0f,
                j->out + (size_t)b0 * m->embed_dim, m->embed_dim);
}

int clip_encode_text(const clip_model *m, const int32_t *tokens, int batch, int ctx, float *out)
{
    if (ctx > m->context)
        return err_set(ERR_USAGE, "token context %d is longer than the model's %d", ctx, m->context);
    if (batch <= 0) return 0;
    int *eot = malloc((size_t)batch * sizeof *eot);
    if (!eot) return err_set(ERR_INTERNAL, "out of memory");
    for (int b = 0; b < batch; b++) {
        const int32_t *t = tokens + (size_t)b * ctx;
        eot[b] = 0;
        for (int i = 0; i < ctx; i++) {
            if (t[i] < 0 || t[i] >= m->vocab) {
                free(eot);
                return err_set(ERR_USAGE, "token id %d is outside the model's vocabulary (%d)", t[i], m->vocab);
            }
            if (t[i] > t[eot[b]]) eot[b] = i;
        }
    }
    enc_job j = {.m = m, .tokens = tokens, .pool = eot, .ctx = ctx, .out = out, .batch = batch};
    int rc = encode(&j);
    free(eot);
    return rc;
}

int clip_encode_image(const clip_model *m, const float *pixels, int batch, float *out)
{
    if (batch <= 0) return 0;
    int *cls = calloc((size_t)batch, sizeof *cls); /* the class token: row 0 */
    if (!cls) return err_set(ERR_INTERNAL, "out of memory");
    enc_job j = {.m = m, .pixels = pixels, .pool = cls, .out = out, .batch = batch};
    int rc = encode(&j);
    free(cls);
    return rc;
}

void clip_l2_normalize(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * d;
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)r[k] * r[k];
        if (s > 0) {
            float inv = (float)(1.0 / sqrt(s));
            for (int k = 0; k < d; k++) r[k] *= inv;
        }
    }
}

/* ---- loading ---- */

typedef struct {
    const st_file *f;
    float *slab;
    int64_t used, cap;
    int rc;
    float *tmp; /* a plain weight on its way to packing */
} loader;

/* Reserves n floats in the slab (counting pass when slab is NULL). */
static float *take(loader *L, int64_t n)
{
    float *p = L->slab ? L->slab + L->used : NULL;
    L->used += n;
    return p;
}

/* Copies a tensor of the given shape (entries -1 = any) into the slab at dst. */
static const float *load_into(loader *L, float *dst, const char *name, int ndim, const int64_t *shape, int64_t numel)
{
    if (L->rc) return NULL;
    const st_tensor *t = st_get(L->f, name, ndim, shape);
    if (!t) { L->rc = ERR_FORMAT; return NULL; }
    if (t->numel != numel) {
        L->rc = err_set(ERR_FORMAT, "%s: tensor '%s' has %lld values, expected %lld", st_path(L->f), name,
                        (long long)t->numel, (long long)numel);
        return NULL;
    }
    if (dst && (L->rc = st_to_f32(L->f, t, dst, numel))) return NULL;
    int64_t bad = dst ? first_nonfinite(dst, numel) : -1; /* a NaN weight makes every embedding NaN */
    if (bad >= 0) {
        char ix[160] = "";
        int64_t k = bad, at[ST_MAX_DIMS];
        for (int d = t->ndim - 1; d >= 0; d--) at[d] = k % t->shape[d], k /= t->shape[d];
        for (int d = 0; d < t->ndim; d++)
            snprintf(ix + strlen(ix), sizeof ix - strlen(ix), "%s%lld", d ? "," : "", (long long)at[d]);
        L->rc = err_set(ERR_FORMAT, "%s: tensor '%s' holds %g at [%s]: every weight must be finite", st_path(L->f),
                        name, dst[bad], ix);
        return NULL;
    }
    return dst;
}

static const float *load(loader *L, const char *name, int ndim, const int64_t *shape)
{
    int64_t numel = 1;
    for (int k = 0; k < ndim; k++) numel *= shape[k];
    return load_into(L, take(L, numel), name, ndim, shape, numel);
}

static const float *load1(loader *L, const char *name, int64_t a)
{
    int64_t s[1] = {a};
    return load(L, name, 1, s);
}
static const float *load2(loader *L, const char *name, int64_t a, int64_t b)
{
    int64_t s[2] = {a, b};
    return load(L, name, 2, s);
}

/* A linear layer's weight w (N, K), stored packed for nn_gemm_packb: begin_packed reserves
 * the packed size and (loading pass) a plain (N, K) buffer L->tmp to load into;
 * end_packed packs it. */
static float *begin_packed(loader *L, int64_t N, int64_t K)
{
    float *dst = take(L, (int64_t)nn_packb_floats((int)N, (int)K));
    if (dst && !L->rc) {
        L->tmp = malloc((size_t)(N * K) * sizeof(float));
        if (!L->tmp) L->rc = err_set(ERR_INTERNAL, "out of memory");
    }
    return dst;
}

static const float *end_packed(loader *L, float *dst, int64_t N, int64_t K)
{
    if (dst && L->tmp && !L->rc) nn_packb(dst, L->tmp, (int)N, (int)K);
    free(L->tmp);
    L->tmp = NULL;
    return dst;
}

static const float *load_packed(loader *L, const char *name, int64_t N, int64_t K)
{
    float *dst = begin_packed(L, N, K);
    int64_t s2[2] = {N, K};
    load_into(L, L->tmp, name, 2, s2, N * K);
    return end_packed(L, dst, N, K);
}

static int count_layers(const st_file *f, const char *prefix)
{
    char name[256];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, "%s.encoder.layers.%d.layer_norm1.weight", prefix, n);
        if (!st_find(f, name)) return n;
    }
}

/* Loads (or, in the counting pass, sizes) one tower's layers. */
static void load_tower(loader *L, clip_tower *tw, const char *prefix)
{
    int64_t D = tw->width, M = tw->mlp;
    char n[256];
#define NAME(fmt) (snprintf(n, sizeof n, "%s.encoder.layers.%d." fmt, prefix, l), n)
    for (int l = 0; l < tw->layers && !L->rc; l++) {
        clip_layer *c = &tw->l[l];
        c->ln1_w = load1(L, NAME("layer_norm1.weight"), D);
        c->ln1_b = load1(L, NAME("layer_norm1.bias"), D);
        float *qkv_w = begin_packed(L, 3 * D, D), *qkv_b = take(L, 3 * D);
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        int64_t s2[2] = {D, D}, s1[1] = {D};
        for (int k = 0; k < 3; k++) {
            char w[64], b[64];
            snprintf(w, sizeof w, "self_attn.%s.weight", qkv[k]);
            snprintf(b, sizeof b, "self_attn.%s.bias", qkv[k]);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, l, w);
            load_into(L, L->tmp ? L->tmp + k * D * D : NULL, n, 2, s2, D * D);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, l, b);
            load_into(L, qkv_b ? qkv_b + k * D : NULL, n, 1, s1, D);
        }
        c->qkv_w = end_packed(L, qkv_w, 3 * D, D);
        c->qkv_b = qkv_b;
        c->out_w = load_packed(L, NAME("self_attn.out_proj.weight"), D, D);
        c->out_b = load1(L, NAME("self_attn.out_proj.bias"), D);
        c->ln2_w = load1(L, NAME("layer_norm2.weight"), D);
        c->ln2_b = load1(L, NAME("layer_norm2.bias"), D);
        c->fc1_w = load_packed(L, NAME("mlp.fc1.weight"), M, D);
        c->fc1_b = load1(L, NAME("mlp.fc1.bias"), M);
        c->fc2_w = load_packed(L, NAME("mlp.fc2.weight"), D, M);
        c->fc2_b = load1(L, NAME("mlp.fc2.bias"), D);
    }
#undef NAME
}

static void load_all(loader *L, clip_model *m)
{
    int64_t Dv = m->vision.width, Dt = m->text.width, E = m->embed_dim, P = m->patch;
    int64_t pw[4] = {Dv, 3, P, P};
    float *p = take(L, Dv * 3 * P * P);
    m->patch_w = load_into(L, p, "vision_model.embeddings.patch_embedding.weight", 4, pw, Dv * 3 * P * P);
    m->class_emb = load1(L, "vision_model.embeddings.class_embedding", Dv);
    m->vpos = load2(L, "vision_model.embeddings.position_embedding.weight", (int64_t)m->grid * m->grid + 1, Dv);
    m->pre_ln_w = load1(L, "vision_model.pre_layrnorm.weight", Dv);
    m->pre_ln_b = load1(L, "vision_model.pre_layrnorm.bias", Dv);
    load_tower(L, &m->vision, "vision_model");
    m->post_ln_w = load1(L, "vision_model.post_layernorm.weight", Dv);
    m->post_ln_b = load1(L, "vision_model.post_layernorm.bias", Dv);
    m->vproj = load2(L, "visual_projection.weight", E, Dv);
    m->tok_emb = load2(L, "text_model.embeddings.token_embedding.weight", m->vocab, Dt);
    m->tpos = load2(L, "text_model.embeddings.position_embedding.weight", m->context, Dt);
    load_tower(L, &m->text, "text_model");
    m->final_ln_w = load1(L, "text_model.final_layer_norm.weight", Dt);
    m->final_ln_b = load1(L, "text_model.final_layer_norm.bias", Dt);
    m->tproj = load2(L, "text_projection.weight", E, Dt);
}

static const st_tensor *need(const st_file *f, const char *name, int ndim)
{
    const st_tensor *t = st_find(f, name);
    if (!t) { err_set(ERR_FORMAT, "%s: tensor '%s' is missing; not a Hugging Face CLIPModel checkpoint?", st_path(f), name); return NULL; }
    if (t->ndim != ndim) { err_set(ERR_FORMAT, "%s: tensor '%s' has %d dimensions, expected %d", st_path(f), name, t->ndim, ndim); return NULL; }
    for (int k = 0; k < ndim; k++)
        if (t->shape[k] <= 0 || t->shape[k] > (1 << 20)) {
            err_set(ERR_FORMAT, "%s: tensor '%s' has an implausible shape", st_path(f), name);
            return NULL;
        }
    return t;
}

/* Reads heads / activation / eps from config.json (optional). */
static int read_config(clip_model *m, const char *path, const char *weights)
{
    char buf[4096];
    bool config_given = path != NULL;
    if (!path) {
        const char *sl = strrchr(weights, '/');
        int dl = sl ? (int)(sl - weights) : 0;
        snprintf(buf, sizeof buf, "%.*s%sconfig.json", dl, weights, sl ? "/" : "");
        path = buf;
    }
    FILE *f = fopen(path, "rb");
    if (!f && config_given) return err_set(ERR_IO, "--config %s: cannot open: %s", path, strerror(errno));
    if (!f) return 0; /* none beside the weights: CLIP's conventions */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return err_set(ERR_IO, "config %s: cannot read: it is a directory", path);
    }
    char *text = malloc(1 << 20);
    size_t n = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!text) return err_set(ERR_INTERNAL, "out of memory");
    json *j = json_parse(text, n, path);
    free(text);
    if (!j) return ERR_FORMAT;
    static const char *const secs[2] = {"vision_config", "text_config"};
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        const json *c = json_get(j, secs[k]);
        int64_t h;
        if (c && json_get_int(c, "num_attention_heads", &h) == 0) {
            if (h < 1 || h > tw->width) {
                json_free(j);
                return err_set(ERR_FORMAT, "%s: %s.num_attention_heads %lld is not 1 to the width %d", path, secs[k],
                               (long long)h, tw->width);
            }
            tw->heads = (int)h;
        }
        const json *act = json_get(c, "hidden_act");
        if (act && act->type == JSON_STR) {
            if (!strcmp(act->str, "gelu")) tw->quick_gelu = false;
            else if (strcmp(act->str, "quick_gelu")) {
                json_free(j);
                return err_set(ERR_FORMAT, "%s: %s.hidden_act '%s' is not supported (quick_gelu, gelu)", path, secs[k], act->str);
            }
        }
        const json *eps = json_get(c, "layer_norm_eps");
        if (eps && eps->type == JSON_NUM) {
            if (!((float)eps->num > 0) || !isfinite((float)eps->num)) { /* LayerNorm divides by sqrt(var + eps) */
                json_free(j);
                return err_set(ERR_FORMAT, "%s: %s.layer_norm_eps %g is not a finite number > 0", path, secs[k], eps->num);
            }
            tw->ln_eps = (float)eps->num;
        }
    }
    json_free(j);
    return 0;
}

clip_model *clip_load(const char *path, const char *config_json)
{
    st_file *f = st_open(path);
    if (!f) return NULL;
    clip_model *m = calloc(1, sizeof *m);
    if (!m) { err_set(ERR_INTERNAL, "out of memory"); st_close(f); return NULL; }
    const st_tensor *ce = need(f, "vision_model.embeddings.class_embedding", 1),
                    *pe = need(f, "vision_model.embeddings.patch_embedding.weight", 4),
                    *vp = need(f, "vision_model.embeddings.position_embedding.weight", 2),
                    *fc = need(f, "vision_model.encoder.layers.0.mlp.fc1.weight", 2),
                    *te = need(f, "text_model.embeddings.token_embedding.weight", 2),
                    *tp = need(f, "text_model.embeddings.position_embedding.weight", 2),
                    *tf = need(f, "text_model.encoder.layers.0.mlp.fc1.weight", 2),
                    *pr = need(f, "visual_projection.weight", 2),
                    *ls = st_find(f, "logit_scale");
    if (ls && ls->numel != 1) ls = NULL; /* shape [] in Hugging Face files; [1] accepted */
    if (!ls) err_set(ERR_FORMAT, "%s: tensor 'logit_scale' is missing or not a scalar", path);
    if (!ce || !pe || !vp || !fc || !te || !tp || !tf || !pr || !ls) goto fail;
    m->vision.width = (int)ce->shape[0];
    m->patch = (int)pe->shape[2];
    int npos = (int)vp->shape[0] - 1, g = (int)lround(sqrt((double)(npos > 0 ? npos : 0)));
    if (g < 1 || g * g != npos) {
        err_set(ERR_FORMAT, "%s: tensor 'vision_model.embeddings.position_embedding.weight' has %d rows; expected 1 + a square number of patches", path, npos + 1);
        goto fail;
    }
    m->grid = g;
    m->image_size = g * m->patch;
    m->vision.mlp = (int)fc->shape[0];
    m->vision.layers = count_layers(f, "vision_model");
    m->vocab = (int)te->shape[0];
    m->text.width = (int)te->shape[1];
    m->context = (int)tp->shape[0];
    m->text.mlp = (int)tf->shape[0];
    m->text.layers = count_layers(f, "text_model");
    m->embed_dim = (int)pr->shape[0];
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        tw->heads = tw->width / 64;
        tw->quick_gelu = true;
        tw->ln_eps = 1e-5f;
    }
    if (read_config(m, config_json, path)) goto fail;
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        if (tw->heads < 1 || tw->width % tw->heads) {
            err_set(ERR_FORMAT, "%s: %s tower: width %d is not divisible into %d heads (set num_attention_heads in config.json)",
                    path, k ? "text" : "vision", tw->width, tw->heads);
            goto fail;
        }
        tw->l = calloc((size_t)tw->layers, sizeof *tw->l);
        if (!tw->l) { err_set(ERR_INTERNAL, "out of memory"); goto fail; }
    }
    float lsv;
    if (st_to_f32(f, ls, &lsv, 1)) goto fail;
    if (!isfinite(expf(lsv)) || !(expf(lsv) > 0)) { /* the logits are exp(logit_scale) v.t */
        err_set(ERR_FORMAT, "%s: tensor 'logit_scale' is %g: exp(logit_scale) is no finite positive scale", path, lsv);
        goto fail;
    }
    m->logit_scale = lsv;
    loader L = {f, NULL, 0, 0, 0, NULL};
    load_all(&L, m); /* counting pass: checks names and shapes, sizes the slab */
    if (L.rc) goto fail;
    m->n_params = L.used;
    m->slab = malloc((size_t)L.used * sizeof(float));
    if (!m->slab) { err_set(ERR_INTERNAL, "out of memory for %lld CLIP parameters", (long long)L.used); goto fail; }
    L = (loader){f, m->slab, 0, L.used, 0, NULL};
    load_all(&L, m);
    if (L.rc) goto fail;
    st_close(f);
    return m;
fail:
    st_close(f);
    clip_free(m);
    return NULL;
}

int clip_use_bf16(clip_model *m)
{
    if (m->slab_h) return 0;
    size_t total = 0;
    for (int k = 0; k < 2; k++) {
        const clip_tower *tw = k ? &m->text : &m->vision;
        size_t D = (size_t)tw->width, M = (size_t)tw->mlp;
        total += (size_t)tw->layers * (nn_packb_bf16_size(3 * (int)D, (int)D) + nn_packb_bf16_size((int)D, (int)D) +
                                       nn_packb_bf16_size((int)M, (int)D) + nn_packb_bf16_size((int)D, (int)M));
    }
    uint16_t *h = malloc((total ? total : 1) * sizeof *h);
    if (!h) return err_set(ERR_INTERNAL, "out of memory for bf16 CLIP weights (%zu MB)", total * 2 >> 20);
    m->slab_h = h;
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        int D = tw->width, M = tw->mlp;
        for (int l = 0; l < tw->layers; l++) {
            clip_layer *L = &tw->l[l];
            const float *w[4] = {L->qkv_w, L->out_w, L->fc1_w, L->fc2_w};
            const uint16_t **dst[4] = {&L->qkv_h, &L->out_h, &L->fc1_h, &L->fc2_h};
            int N[4] = {3 * D, D, M, D}, K[4] = {D, D, D, M};
            for (int q = 0; q < 4; q++) {
                nn_packb_bf16_from_packb(h, w[q], N[q], K[q]);
                *dst[q] = h;
                h += nn_packb_bf16_size(N[q], K[q]);
            }
        }
    }
    return 0;
}

void clip_free(clip_model *m)
{
    if (!m) return;
    free(m->slab_h);
    free(m->vision.l);
    free(m->text.l);
    free(m->slab);
    free(m);
}

/* ---- preprocessing: Pillow's 8-bit bicubic resample (imgaug.c), crop, normalise ---- */

int clip_resize_crop_u8(uint8_t *out, const uint8_t *chw, int h, int w, int size)
{
    return imgaug_resize_center_crop(out, chw, h, w, size, size, IMGAUG_BICUBIC);
}

int clip_preprocess(float *out, const uint8_t *chw, int h, int w, int size)
{
    size_t n = (size_t)size * size;
    uint8_t *u = malloc(3 * n);
    if (!u) return err_set(ERR_INTERNAL, "out of memory");
    int rc = clip_resize_crop_u8(u, chw, h, w, size);
    if (!rc)
        for (int c = 0; c < 3; c++)
            for (size_t k = 0; k < n; k++)
                out[c * n + k] = ((float)u[c * n + k] / 255.0f - clip_mean[c]) / clip_std[c];
    free(u);
    return rc;
}
