/* proto.h - FedSM's class prototypes (docs/algorithms.md section 5.4 steps 1-2; section 8
 * item 7 for the BatchNorm mode) and the client's local features that mixup.h draws from.
 *
 * Client side: the client's whole shard, normalised with the model's mean/std as
 * local-train does but without augmentation (encoded shards: the eval transform), is run
 * through the model body in batches of 32, in shard order; BatchNorm in eval mode by default,
 * train mode (batch statistics, as the reference code) on request.  Per class c: the count
 * n_c and the mean feature, unit-normalised (mu_c / max(|mu_c|, 1e-12)); rows of absent
 * classes are 0.
 * Server side: P_c = sum_k n_kc mu_kc / |mu_kc|  /  sum_k n_kc over the clients, not
 * re-normalised (0 for a class no client holds); counts are summed.
 * Record `prototypes` (docs/format.md): tensors means <f4 [C, D], counts <i8 [C]; meta
 * round, client (-1: server), num_classes, feat_dim, bn ("eval"/"train").
 * Not here: reading shards or models from endpoints (tools), the mix-up (mixup.h). */
#ifndef FEDSM_PROTO_H
#define FEDSM_PROTO_H

#include <stdint.h>

#include "model.h"
#include "record.h"
#include "shard.h"

#define PROTO_BATCH 32

/* Features of every sample of s, in shard order: *feats (n, feat_dim) and *labels (n),
 * both returned owned (free()).  mean/std: the model record's normalisation (meta mean,
 * std).  bn_train != 0: BatchNorm uses batch statistics and UPDATES m's running stats (as
 * the reference code; pass a copy you can discard).  Checks that s fits m.
 * Returns 0 or a negative error (ERR_FORMAT a shard that does not fit, named; ERR_INTERNAL). */
int proto_features(float **feats, int32_t **labels, model *m, const shard *s,
                   const float mean[3], const float std[3], int bn_train);

/* means (C, D): per-class mean of feats, unit-normalised, 0 for absent classes; counts (C).
 * Accumulated in double.  Returns 0 or ERR_USAGE (a label outside [0, C)). */
int proto_class_means(float *means, int64_t *counts, const float *feats, const int32_t *labels,
                      int64_t n, int D, int C);

/* Adds the prototypes tensors and meta to r (a new record of kind "prototypes"); tensors
 * are copied.  bn: "eval" or "train". */
int proto_to_record(record *r, const float *means, const int64_t *counts, int C, int D,
                    int64_t round, int64_t client, const char *bn);

/* Checked access to a prototypes record: means (C, D) <f4 and counts (C) <i8 present with
 * these shapes (C, D: the expected sizes, or -1 to take the record's), every mean finite,
 * every count >= 0.  *means / *counts point into r.  Returns 0 or ERR_FORMAT naming the
 * stream, record and field. */
int proto_from_record(const record *r, int C, int D, const float **means,
                      const int64_t **counts);

/* Server aggregation over K clients: P (C, D) and total counts (C) from means[k] (C, D)
 * and counts[k] (C).  Each client mean is (re-)normalised before weighting; the result is
 * not.  Accumulated in double, clients in the order given (callers sort by client id). */
void proto_aggregate(float *P, int64_t *total, const float *const *means,
                     const int64_t *const *counts, int K, int C, int D);

/* The same on records: checks every in[k] with proto_from_record (all of the first one's
 * C and D), then adds means/counts and meta (round of in[0], client -1, num_classes,
 * feat_dim, bn of in[0], clients: the list of meta.client) to out.  0 or ERR_FORMAT. */
int proto_aggregate_records(record *out, record *const *in, int K);

#endif
