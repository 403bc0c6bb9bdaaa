/* head.h - training a fresh linear classifier head on labelled features: the classifier
 * re-training of CReFF and CLIP2FL (docs/algorithms.md section 3, step 7) and FedSM's client
 * head (section 5.4, step 4).
 *
 * What it is: logits = x W^T + b with W (C, D), b (C); PyTorch nn.Linear's default init
 * (W and b ~ U(-1/sqrt(D), 1/sqrt(D))); mean softmax cross-entropy over each mini-batch; plain
 * SGD with PyTorch semantics (lr, momentum, weight decay on W and b); `epochs` passes over the
 * features, reshuffled every epoch, the last partial batch kept.  Single-threaded (it sets
 * OpenBLAS to one thread, pool_blas_single) and deterministic: one call gives the same head bit for bit on any machine with the same
 * OpenBLAS.  Random streams: init (seed, "head-init", round, client), shuffles (seed,
 * "head-shuffle", round, client).
 * What it is not: the feature generation (featgen) or a record reader (tools/retrain.c). */
#ifndef FEDSM_HEAD_H
#define FEDSM_HEAD_H

#include <stdint.h>

#include "record.h"
#include "rng.h"

typedef struct head_opts {
    int epochs;     /* passes over the features (default 300: CReFF; FedSM uses 60) */
    int batch;      /* mini-batch size (default 32; FedSM 256) */
    float lr;       /* SGD learning rate (default 0.01) */
    float momentum; /* SGD momentum (default 0) */
    float wd;       /* weight decay (default 0) */
    uint64_t seed;  /* rng streams keyed by (seed, purpose, round, client) */
    int64_t round;
    int64_t client; /* -1: the server */
} head_opts;

/* The defaults above; seed 7, round 0, client -1. */
void head_opts_default(head_opts *o);

/* PyTorch nn.Linear(D, C) default init from r: w (C, D) then b (C), each U(-1/sqrt(D),
 * 1/sqrt(D)), drawn in that order. */
void head_init(float *w, float *b, int C, int D, rng *r);

/* Trains w (C, D) and b (C) in place, starting from their current values.
 * x: (n, D) features; y: (n) labels in [0, C) (checked).  orders: NULL for the seeded
 * shuffles, or (epochs, n) explicit per-epoch orders, each a permutation of 0..n-1 (tests).
 * loss: if non-NULL, receives the mean loss of the last epoch.
 * Returns 0; ERR_USAGE for bad sizes/options or a label out of range; ERR_RUNTIME when the
 * loss becomes non-finite (naming the epoch); ERR_INTERNAL out of memory. */
int head_train(float *w, float *b, const float *x, const int32_t *y, int64_t n, int D, int C,
               const head_opts *o, const int64_t *orders, double *loss);

/* head_init from stream (seed, "head-init", round, client), then head_train with the seeded
 * shuffles: the fresh head of every retraining. */
int head_fit(float *w, float *b, const float *x, const int32_t *y, int64_t n, int D, int C,
             const head_opts *o, double *loss);

/* The checked reader of a `features` record (docs/format.md), the labelled features a head is
 * retrained on (featgen's previous round, retrain's input): for a model of C classes and D
 * feature dimensions, tensors features <f4 [N, D] with N >= 1 and every value finite, labels
 * <i4 [N] in [0, C), meta.num_classes (when present) equal to C.  *x, *y point into r; *n
 * gets N.  0, or ERR_FORMAT with one message naming the stream, the tensor or field, and the
 * first offending value. */
int head_features_from_record(const record *r, int C, int D, const float **x, const int32_t **y,
                              int64_t *n);

#endif
