/* split.h - long-tail selection and client splits of a labelled dataset (docs/algorithms.md 1.2-1.3).
 *
 * Works on labels only: positions 0..n-1 into a label array; the caller maps positions to
 * images.  Every random choice comes from an rng stream derived from (seed, purpose), so a
 * split depends on its own options only ("lt" for the long-tail draw, "split" for the
 * client split).  The streams are not numpy's: counts follow the reference exactly, the
 * particular samples chosen differ (docs/algorithms.md 1.4).
 *
 * Not here: reading datasets, writing shards (tools/partition.c). */
#ifndef FEDSM_SPLIT_H
#define FEDSM_SPLIT_H

#include <stdint.h>

typedef enum { LT_EXP = 0, LT_STEP } lt_profile;

/* Per-class target counts for imbalance factor imb = n_max/n_min >= 1 (docs/algorithms.md 1.2):
 *   exp:  n_c = floor(n_max * (1/imb)^(c/(C-1)))      (CReFF, LDAM-DRW)
 *   step: n_c = floor(n_max) for c < C/2 (integer division), floor(n_max/imb) after.
 * n_max is the mean class size total/C (a double, as in the reference).  out: [C].
 * 0 or ERR_USAGE (imb < 1, C < 1). */
int lt_counts(double n_max, int n_classes, double imb, lt_profile profile, int64_t *out);

/* Long-tail subset of a dataset: for each class, a seeded shuffle of its positions keeps
 * min(available, n_c) of them (n_max = n/C).  imb == 1 keeps every sample.  *out_pos
 * (owned, malloc'd) lists the kept positions in ascending order; kept[C] (may be NULL)
 * receives per-class kept counts.  Labels must be in [0, C).  0 or a negative error. */
int lt_select(const int32_t *labels, int64_t n, int n_classes, double imb, lt_profile profile,
              uint64_t seed, int64_t **out_pos, int64_t *out_n, int64_t *kept);

typedef enum { SPLIT_CREFF = 0, SPLIT_DIRICHLET, SPLIT_IID, SPLIT_SHARDS } split_mode;

/* "creff" etc. -> mode, or -1. */
int split_mode_parse(const char *s);
const char *split_mode_name(split_mode m);

typedef struct split_opts {
    split_mode mode;
    int clients;           /* K >= 1 */
    double alpha;          /* Dirichlet concentration > 0 (creff, dirichlet) */
    uint64_t seed;
    int64_t min_size;      /* dirichlet: smallest client allowed (default 10) */
    int max_tries;         /* creff, dirichlet: draws before giving up (default 1000) */
    int classes_per_client;/* shards: k (default 2) */
} split_opts;
void split_opts_default(split_opts *o);

typedef struct split_result {
    int clients;
    int64_t *offsets; /* [clients+1]: client k holds items[offsets[k] .. offsets[k+1]) */
    int64_t *items;   /* [n] positions into the label array, ascending within a client */
    int tries;        /* draws used (creff: the most over its chunks) */
    /* creff only (else NULL): its K auxiliary workers' lists as drawn, concatenated in
     * chunk order, before they are cut into the K equal slices and sorted; worker j holds
     * aux_items[aux_offsets[j] .. aux_offsets[j+1]), its samples in class order.  The draw
     * rules (the 0.5*N_s/workers minimum, the balance cap) are visible only here. */
    int64_t *aux_offsets; /* [clients+1] */
    int64_t *aux_items;   /* [n] */
} split_result;

/* Splits positions 0..n-1 (labels[n] in [0, C)) among o->clients clients:
 *  creff      docs/algorithms.md 1.3: shuffle, chunks of 10 auxiliary workers (ceil(K/10) chunks;
 *             K < 10 uses K workers in one chunk, where the reference asserts), per-class
 *             Dirichlet with the balance step and a NaN guard (when the balance step zeroes
 *             every proportion the unbalanced draw is used), redraw until the smallest
 *             worker has int(0.5*N_s/workers), then all worker lists concatenated and cut
 *             into K equal contiguous slices (the first N mod K one larger).
 *  dirichlet  per class p ~ Dir(alpha*1_K), cut at floor(cumsum(p)*n_c); redraw until every
 *             client has >= min_size samples.
 *  iid        a shuffle cut into K equal contiguous slices.
 *  shards     client i holds k classes perm[(i*k + j) mod C], j < k (perm a seeded class
 *             permutation); each class is split evenly among its holders.
 * Errors (ERR_USAGE, one line with a hint): K < 1, n < K, impossible min_size, shards with
 * K*k < C, no valid draw within max_tries, a client left empty.  0 on success. */
int split_make(const int32_t *labels, int64_t n, int n_classes, const split_opts *o,
               split_result *out);
void split_free(split_result *s); /* NULL-safe; leaves s zeroed */

#endif
