/* nn.h - training kernels on raw float pointers: conv2d, BatchNorm2d, ReLU, pooling,
 * linear, softmax cross-entropy, distillation loss, SGD; products with packed weights.
 *
 * What it is: plain functions, output first, then inputs, then sizes, with a shape
 * comment on each pointer; a _forward/_backward pair per op (llm.c style).  All tensors
 * are fp32, C order, NCHW; conv weights (Co, Ci, KH, KW) and linear weights (O, I) as in
 * PyTorch.  Semantics follow PyTorch's defaults (docs/algorithms.md 1.5-1.6).
 * What it is not: a graph or autograd; models (model.h) chain these kernels by hand; image
 * augmentation (imgaug.h).
 * Files: ops.c (BatchNorm, elementwise, pooling, linear, losses, SGD), conv.c (conv2d),
 * gemm.c (the micro-kernel and the packed products), winograd.c; nn_impl.h is private.
 *
 * Gradient conventions: parameter gradients (dw, db, dgamma, dbeta) ACCUMULATE (+=), so a
 * caller zeroes them once per step; input gradients (din) are OVERWRITTEN (=), except the
 * loss backwards, which ADD into dlogits (so CE and KD combine), as stated per function.
 *
 * Threads: conv2d and BatchNorm run on the one pool (pool.h) of pool_threads() threads,
 * parallel over samples or channels with a static split, calling OpenBLAS single-threaded
 * from each worker; results are identical run to run at a fixed thread count.  Every nn
 * kernel that calls OpenBLAS sets it to 1 thread and leaves it there (pool.h says why). */
#ifndef FEDSM_NN_H
#define FEDSM_NN_H

#include <stddef.h>
#include <stdint.h>

/* ---- conv2d (no groups, no dilation; square or rectangular kernels) ---- */
/* Algorithm: NN_CONV_IGEMM, our implicit-GEMM kernels (im2col fused into the packing of an
 * 8x32 AVX-512 micro-kernel); NN_CONV_WINOGRAD, the implicit GEMM except Winograd F(2x2,
 * 3x3) for the forward, input and weight gradients of 3x3 stride-1 convolutions with
 * pad <= 2 and at least 8 channels on the reduced side (the default in AVX-512 builds);
 * or NN_CONV_BLAS (im2col + OpenBLAS sgemm per image; the only one elsewhere).  (An
 * F(4x4, 3x3) variant was dropped: slower here and ~10x the rounding error.)  Without a
 * call, the environment variable FEDSM_CONV_ALGO (blas, igemm, winograd) picks it.  Returns the
 * algorithm in effect.  Not thread-safe; call outside kernels. */
enum { NN_CONV_BLAS = 0, NN_CONV_IGEMM = 1, NN_CONV_WINOGRAD = 2 };
int nn_set_conv_algo(int algo);
/* The algorithm in effect (after FEDSM_CONV_ALGO, when nn_set_conv_algo was not called). */
int nn_conv_algo(void);

typedef struct nn_conv2d_dims {
    int n, ci, h, w; /* input (N, Ci, H, W) */
    int co, kh, kw;  /* weight (Co, Ci, KH, KW) */
    int stride, pad; /* same on both axes */
    int ho, wo;      /* output (N, Co, Ho, Wo): (h + 2 pad - kh) / stride + 1 */
} nn_conv2d_dims;

/* Fills ho/wo from the other fields. */
nn_conv2d_dims nn_conv2d_make(int n, int ci, int h, int w, int co, int k, int stride, int pad);
/* Floats of scratch a forward or backward call needs (at the current pool_threads()). */
size_t nn_conv2d_ws_floats(const nn_conv2d_dims *d);

/* out: (N, Co, Ho, Wo) = conv(in, w) (+ b).  in: (N, Ci, H, W); w: (Co, Ci, KH, KW);
 * b: (Co) or NULL; ws: nn_conv2d_ws_floats(d) floats. */
void nn_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const nn_conv2d_dims *d, float *ws);
/* din: (N, Ci, H, W) overwritten, or NULL to skip (first layer); dw: (Co, Ci, KH, KW) +=;
 * db: (Co) += or NULL; dout: (N, Co, Ho, Wo); in, w as in forward. */
void nn_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const nn_conv2d_dims *d, float *ws);

/* ---- BatchNorm2d (affine; eps and momentum as PyTorch: 1e-5, 0.1) ---- */
/* out, in: (N, C, HW).  gamma, beta: (C).  running_mean, running_var: (C).
 * train != 0: normalises with the batch mean and biased variance, and updates
 *   running = (1 - momentum) running + momentum batch, using the UNBIASED variance
 *   (N*HW / (N*HW - 1)) for running_var, as PyTorch.
 * train == 0: normalises with the running stats (which stay unchanged).
 * mean, rstd: (C) saved for backward (the statistics used, batch or running).
 * relu != 0 fuses a ReLU after the affine transform (out = max(0, bn(in))). */
void nn_batchnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                          const float *beta, float *running_mean, float *running_var, int n, int c,
                          int hw, int train, float momentum, float eps, int relu);
/* din: (N, C, HW) overwritten; dgamma, dbeta: (C) +=.  dout: (N, C, HW).  in, mean, rstd,
 * gamma as given to / saved by forward; train as in forward (eval mode treats the
 * statistics as constants).  out/relu: when the forward fused a ReLU, pass its out and
 * relu = 1 (the ReLU mask is out > 0); otherwise out may be NULL and relu = 0. */
void nn_batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *out, const float *mean, const float *rstd,
                           const float *gamma, int n, int c, int hw, int train, int relu);

/* ---- elementwise ---- */
/* out = max(0, in); n elements.  out may equal in. */
void nn_relu_forward(float *out, const float *in, size_t n);
/* din = dout * (out > 0); din may equal dout. */
void nn_relu_backward(float *din, const float *dout, const float *out, size_t n);
/* out = a + b (the residual add); relu != 0 gives out = max(0, a + b). out may alias a or b. */
void nn_add_forward(float *out, const float *a, const float *b, size_t n, int relu);

/* ---- pooling ---- */
/* Global average pool: out (N, C) = mean over HW of in (N, C, HW). */
void nn_avgpool_forward(float *out, const float *in, int n, int c, int hw);
/* din: (N, C, HW) overwritten = dout / HW broadcast.  dout: (N, C). */
void nn_avgpool_backward(float *din, const float *dout, int n, int c, int hw);
/* Max pool k x k, stride, pad (padding never wins, as PyTorch's -inf padding).
 * out: (N, C, Ho, Wo), Ho = (H + 2 pad - k) / stride + 1; argmax: (N, C, Ho, Wo) index
 * into the (H, W) plane, saved for backward.  in: (N, C, H, W). */
void nn_maxpool_forward(float *out, int32_t *argmax, const float *in, int n, int c, int h, int w,
                        int k, int stride, int pad, int ho, int wo);
/* din: (N, C, H, W) overwritten (zero, plus dout routed to each argmax). */
void nn_maxpool_backward(float *din, const float *dout, const int32_t *argmax, int n, int c, int h,
                         int w, int ho, int wo);

/* ---- matrix product with a packed right operand (inference of fixed weights) ---- */
/* c (M, ldc) += a (M, K; row stride lda) . w^T over output columns [n0, n1) only, w (N, K)
 * packed once by nn_packb into bp (nn_packb_floats(N, K) floats).  Runs on the calling
 * thread (callers split columns or rows over threads); n0 a multiple of 32 unless 0.
 * AVX-512 builds: the conv micro-kernel on 32-column strips of w^T, so no per-call packing
 * of the weights; elsewhere bp is w and the product is OpenBLAS sgemm. */
size_t nn_packb_floats(int N, int K);
void nn_packb(float *bp, const float *w, int N, int K);
void nn_gemm_packb(float *c, size_t ldc, const float *a, size_t lda, const float *bp, int M, int N, int K, int n0,
                   int n1);

/* The same in bf16: w packed by nn_packb_bf16 into nn_packb_bf16_size(N, K) values; a is
 * rounded to bf16 (nearest even) on the fly; products summed in fp32 (AVX512-BF16
 * VDPBF16PS when nn_bf16_native(), else a slow scalar loop with the same arithmetic).
 * Accuracy is bf16's: about 3 significant digits per input. */
size_t nn_packb_bf16_size(int N, int K);
void nn_packb_bf16(uint16_t *bp, const float *w, int N, int K);
/* The same from the fp32 packing (nn_packb's bp), when w itself is gone. */
void nn_packb_bf16_from_packb(uint16_t *hp, const float *bp, int N, int K);
void nn_gemm_packb_bf16(float *c, size_t ldc, const float *a, size_t lda, const uint16_t *bp, int M, int N, int K,
                        int n0, int n1);
int nn_bf16_native(void);

/* ---- linear ---- */
/* out: (N, O) = in (N, I) @ w^T (w: (O, I)) + b (O, or NULL). */
void nn_linear_forward(float *out, const float *in, const float *w, const float *b, int n,
                       int in_dim, int out_dim);
/* din: (N, I) overwritten, or NULL; dw: (O, I) +=; db: (O) += or NULL; dout: (N, O). */
void nn_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int in_dim, int out_dim);

/* ---- losses ---- */
/* Softmax cross-entropy, mean over the batch.  probs: (N, C) softmax(logits), saved for
 * backward (may be NULL when no backward follows).  logits: (N, C); labels: (N) in [0, C).
 * Returns the mean loss. */
float nn_cross_entropy_forward(float *probs, const float *logits, const int32_t *labels, int n,
                               int c);
/* dlogits (N, C) += scale * (probs - onehot(labels)) / N. */
void nn_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels, int n,
                               int c, float scale);
/* Distillation loss (docs/algorithms.md 4.2):
 * alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over classes, mean over
 * the batch (PyTorch kl_div(..., 'batchmean')).
 * student, teacher: (N, C) logits.  Returns the loss. */
float nn_kd_forward(const float *student, const float *teacher, int n, int c, float t, float alpha);
/* dlogits (N, C) += alpha * T / N * (softmax(student/T) - softmax(teacher/T)). */
void nn_kd_backward(float *dlogits, const float *student, const float *teacher, int n, int c,
                    float t, float alpha);

/* ---- optimizer ---- */
/* SGD, PyTorch semantics (dampening 0, no Nesterov): g' = g + wd p; if momentum != 0:
 * buf = momentum buf + g' (buf starts at zero, which equals PyTorch's first-step copy),
 * p -= lr buf; else p -= lr g'.  p, g: (n); buf: (n), may be NULL when momentum == 0. */
void nn_sgd_step(float *p, float *buf, const float *g, size_t n, float lr, float momentum,
                 float wd);

#endif
