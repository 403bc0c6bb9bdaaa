/* classgrad.h - CReFF/CLIP2FL client step: per-class gradients of the classifier head on a
 * client's real data (docs/algorithms.md section 3, step 3a; section 4.4), and the
 * `gradients` record of docs/format.md that carries them.
 *
 * What it is: for every class c the client holds (count > 0), `repeats` times: sample
 * `batch` images of class c without replacement (all of them when it has fewer), gather
 * them normalised with the model's mean/std (as local-train does), apply one Siamese DSA
 * draw (dsa.h), take features f = body(x) with BatchNorm in EVAL mode (the proj output when
 * the model has a proj layer), and the gradient of CE(W f + b, c), mean over the batch,
 * with respect to the head (W [C,D], b [C]):
 *     p_j = softmax(W f_j + b), r_j = p_j - e_c,  dW = (1/n) sum_j r_j f_j^T,  db = (1/n) sum_j r_j.
 * The class's gradient is the mean over the repeats.  Classes come out ascending.
 * Randomness: rng streams (seed, "classgrad", round, client) for the sampled indices and
 * (seed, "dsa", round, client) for the augmentations; per class (ascending), per repeat:
 * the indices are drawn, then one dsa_draw.
 * What it is not: the server side (gradmatch.h: averaging over clients, the matching
 * distance and the feature update), nor local training (tools/local-train.c). */
#ifndef FEDSM_CLASSGRAD_H
#define FEDSM_CLASSGRAD_H

#include <stdint.h>

#include "dsa.h"
#include "model.h"
#include "record.h"
#include "shard.h"

/* The arrays of a `gradients` record (docs/format.md): K classes, C outputs, D features. */
typedef struct classgrad {
    int k, num_classes, feat_dim; /* K, C, D */
    int32_t *classes;             /* [K], ascending, in [0, C) */
    float *weight;                /* [K, C, D]: d CE / d W for each class */
    float *bias;                  /* [K, C] */
    int32_t *counts;              /* [K]: client: its samples of the class; server: clients averaged */
} classgrad;

/* Zeroed arrays for k classes (classes[] to be filled by the caller).  Owned, NULL-safe
 * free; NULL with err_msg on bad sizes or out of memory. */
classgrad *classgrad_new(int k, int num_classes, int feat_dim);
void classgrad_free(classgrad *g);

/* The gradient of one batch: x (n, 3, H, W) normalised images of class `label` (n >= 1),
 * p the augmentation (NULL: none) applied first, then features in eval mode and the CE
 * gradient of the head.  head_w (C, D), head_b (C) with C = m->cfg.num_classes, D =
 * m->feat_dim.  gw (C, D) and gb (C) are overwritten; *loss (may be NULL) gets the mean
 * CE.  Returns 0 or a negative error (err_msg). */
int classgrad_batch(model *m, const float *head_w, const float *head_b, const float *x, int n,
                    int label, const dsa_params *p, float *gw, float *gb, float *loss);

/* The client step over a decoded shard (see the top of this file).  mean/std: the model
 * record's normalisation (meta_get_vec3 "mean"/"std").  repeats >= 1, batch >= 1.
 * Returns an owned classgrad (counts = the shard's samples of each class; K may be 0), or
 * NULL with err_msg (ERR_USAGE: an encoded shard or a shard that does not fit the model;
 * ERR_RUNTIME: a non-finite gradient). */
classgrad *classgrad_client(model *m, const float *head_w, const float *head_b, const shard *s,
                            const float mean[3], const float std[3], int repeats, int batch,
                            uint64_t seed, int64_t round, int64_t client);

/* Adds the tensors classes/weight/bias/counts (REC_COPY) and the meta round, client (-1:
 * server average), num_classes, feat_dim, repeats, batch and, when names != NULL, classes
 * (C class names) to r (a record of kind "gradients"; `inputs` is the caller's).
 * Returns 0 or a negative error. */
int classgrad_to_record(const classgrad *g, record *r, int64_t round, int64_t client, int repeats,
                        int batch, const char *const *names);
/* Reads and checks a `gradients` record: the four tensors with consistent shapes,
 * num_classes/feat_dim equal to C/D when those are > 0, classes strictly ascending in
 * [0, C), every value finite, counts >= 0.  Returns an owned copy or NULL with ERR_FORMAT
 * naming the record and the field. */
classgrad *classgrad_from_record(const record *r, int num_classes, int feat_dim);

#endif
