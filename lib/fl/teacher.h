/* teacher.h - the CLIP teacher of CLIP2FL / FedSM distillation (docs/algorithms.md section 4,
 * local-train --teacher): the `teacher` record clip-embed writes for a shard (tensors
 * logits <f4 [N,C] = exp(logit_scale) * image . text, index <i8 [N] the samples' positions in
 * the source dataset; meta client) read back and matched to a shard's samples by that index.
 * Not here: finding the record in a stream (local-train), computing it (clip-embed), the
 * distillation loss (model.h, model_train_step_grads). */
#ifndef FEDSM_TEACHER_H
#define FEDSM_TEACHER_H

#include <stdint.h>

#include "record.h"

/* out (n, C): for each of the n samples, the teacher's logits row whose index equals
 * index[i].  Checks the record first: logits <f4 [N,C] with every value finite, index <i8
 * [N] with no value negative or twice; then that every sample has a row (a teacher made from
 * another shard is refused).  0, or ERR_FORMAT naming the stream, record and field (or the
 * sample), ERR_INTERNAL when out of memory. */
int teacher_rows(float *out, const record *t, const int64_t *index, int64_t n, int C);

#endif
