/* mixup.h - FedSM's client-side pseudo-features: semantically guided selection of local
 * features and mix-up with the global prototypes (docs/algorithms.md sections 5.2, 5.4
 * step 3 and 5.6).
 *
 * For every class c = 0..C-1 (also classes the client does not hold), per_class local
 * features are selected, each mixed as
 *     x = lambda P_c + (1 - lambda) f_i / |f_i|,   label c,
 *     lambda = round(U(lam_lo, lam_hi), 2)   (default U(0.35, 0.95); round half to even),
 * with |f_i| floored at 1e-12 (F.normalize).  A class whose prototype row is 0 (no client
 * held it) gets (1 - lambda) f_i / |f_i|.
 *
 * Selection, with per-sample weight w_i = S[c, y_i] (S: C x C relevance whose diagonal the
 * caller has already replaced by the row mean, relevance_diag_row_mean in relevance.h):
 *   MIXUP_PROB     (default) sequential draws without replacement, each proportional to the
 *                  remaining weights (torch.multinomial(w, k, replacement=False)).
 *                  temp > 0: weights softmax(S[c, :] / temp)[y_i] instead of S[c, y_i]
 *                  (temp -> inf: uniform; temp -> 0: det).
 *   MIXUP_DET      most relevant first: samples sorted by w_i descending, ties (e.g. all
 *                  samples of one class) in a seeded random order.
 *   MIXUP_UNIFORM  no semantics: all weights equal (plain random mix-up).
 * Implemented as one sort per class by a random key (Gumbel-top-k: key = log w_i + Gumbel
 * noise, which is distributed exactly as sequential weighted draws without replacement;
 * det: key = (w_i, uniform tie-break)).
 * Zero and negative weights: a weight <= 0 (or NaN) counts as 0: such samples are drawn only
 * after every positive-weight sample has been drawn, in random order (torch.multinomial
 * would fail instead).
 * Fewer local samples than per_class (help text): "a client with fewer than --per-class
 * samples uses each of them once per pass, in the selection's order, and starts a new pass
 * until --per-class features are drawn (every sample used floor or ceil of per_class/n times)".
 * Streams: selection (seed, "mixup-select", round, client), lambdas (seed, "mixup-lambda",
 * round, client), consumed class by class, so the lambdas do not change with the selection
 * mode.  Single-threaded; deterministic.
 * Not here: the local features (proto.h), the prototypes' aggregation (proto.h), training
 * on the result (head.h). */
#ifndef FEDSM_MIXUP_H
#define FEDSM_MIXUP_H

#include <stdint.h>

#include "rng.h"

typedef enum { MIXUP_PROB = 0, MIXUP_DET = 1, MIXUP_UNIFORM = 2 } mixup_select;

typedef struct mixup_opts {
    mixup_select select; /* default MIXUP_PROB */
    double temp;         /* 0 (default): weights S; > 0: softmax(S/temp) (MIXUP_PROB only) */
    int per_class;       /* pseudo-features per class (default 100) */
    double lam_lo;       /* 0.35 */
    double lam_hi;       /* 0.95 */
    uint64_t seed;       /* default 7 */
    int64_t round, client;
} mixup_opts;

void mixup_opts_default(mixup_opts *o);
/* "prob", "det", "uniform" -> the mode; -1 for anything else. */
int mixup_select_parse(const char *s);
const char *mixup_select_name(mixup_select s);


/* The selection for one class: idx (k) receives sample indices into 0..n-1 in draw order.
 * logw (n): log of each sample's weight (-INFINITY or NaN: weight 0); mode MIXUP_DET sorts
 * by logw, MIXUP_PROB draws, MIXUP_UNIFORM ignores logw.  k > n: passes as described above.
 * Returns 0 or ERR_INTERNAL (out of memory), ERR_USAGE (n <= 0 or k < 0). */
int mixup_select_indices(int64_t *idx, int64_t k, const double *logw, int64_t n,
                         mixup_select mode, rng *r);

/* The pseudo-features: out (C * per_class, D), labels (C * per_class) = class c for rows
 * c*per_class ... ; feats (n, D) local features; y (n) their labels in [0, C); S (C, C)
 * relevance (diagonal already replaced); P (C, D) global prototypes.  picked, lam: optional
 * (C * per_class) outputs: the local sample and the lambda of each row (NULL to skip).
 * Returns 0, ERR_USAGE (bad sizes/options, a label out of range, no local features) or
 * ERR_FORMAT (a non-finite value in S, P or feats, named), ERR_INTERNAL. */
int mixup_generate(float *out, int32_t *labels, const float *feats, const int32_t *y, int64_t n,
                   int D, const float *S, const float *P, int C, const mixup_opts *o,
                   int64_t *picked, float *lam);

#endif
