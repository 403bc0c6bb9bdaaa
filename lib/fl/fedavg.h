/* fedavg.h - weighted averaging of records tensor by tensor (FedAvg, docs/algorithms.md 1.7):
 * every <f4 tensor, BatchNorm running statistics included, is sum_k w_k t_k with the
 * weights normalised to sum 1, accumulated in double in the order given (callers pass
 * updates sorted by client id, DESIGN 6); integer counters (<i8 num_batches_tracked) take
 * the maximum.  Also the NaN/Inf scan that names the culprit.  Not here: reading updates
 * (tools/aggregate.c). */
#ifndef FEDSM_FEDAVG_H
#define FEDSM_FEDAVG_H

#include "record.h"

/* Adds to out (a new record) the weighted average of the tensors of in[0..n).  Every
 * input must pass fedavg_check_layout; weights must be >= 0 with a positive sum. */
int fedavg_records(record *out, record *const *in, const double *w, int n);
/* 0 when every in[k] has the tensor names, dtypes and shapes of in[0]; else ERR_FORMAT
 * naming the stream and tensor ("another architecture?"). */
int fedavg_check_layout(record *const *in, int n);
/* 0 when every float tensor of r is finite; else ERR_RUNTIME naming the tensor and the
 * count of bad values ("who" prefixes the message, e.g. "update of client 7"). */
int check_finite(const record *r, const char *who);

#endif
