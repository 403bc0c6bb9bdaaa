/* gradmatch.h - CReFF/CLIP2FL server side: the per-class average of the clients' head
 * gradients, the gradient-matching distance and CLIP2FL's prototype contrastive loss with
 * their analytic gradients, and the per-round update of the federated features
 * (docs/algorithms.md sections 3 steps 5-6, 3.2, 4.3; defaults section 7).
 *
 * Notation: head W (C, D), b (C) (the previous round's retrained head, the one the clients
 * used); the features of class c, f_j (j < n); p_j = softmax(W f_j + b), r_j = p_j - e_c;
 * the synthetic gradients G = (1/n) sum_j r_j f_j^T (C, D) and g = (1/n) sum_j r_j (C).
 *   Matching distance of class c against the aggregated real gradient (A, a):
 *     D_c = sum_i [1 - <A_i, G_i> / (|A_i| |G_i| + 1e-6)]  +  [1 - <a, g> / (|a| |g| + 1e-6)]
 *     (rows i of the weight gradient, the bias as one row).  Where |G_i| = 0 the norm's
 *     gradient is taken as 0 (PyTorch's subgradient).
 *   Prototype contrastive loss (SupCon against the text embeddings t_c, unit rows, each
 *   repeated m times), closed form per anchor with s_ic = <f_i, t_c> / tau:
 *     l_i = -s_{i,y_i} + log(m sum_c exp(s_ic) - exp(s_{i,y_i})),  L_PCL = (1/N) sum_i l_i.
 *   Feature update, `iters` times: F <- F - lr dL/dF with
 *     L = sum_{c with a real gradient} D_c + beta L_PCL (no text: CReFF, L = sum_c D_c).
 * Each class's D_c and each anchor's l_i depend only on that class's features, so the
 * update runs class by class (each class its iters steps in a row, classes spread over nn's
 * thread pool); the result equals the all-classes-per-step loop and does not depend on the
 * thread count.
 * What it is not: the client step (classgrad.h) or the head retraining. */
#ifndef FEDSM_GRADMATCH_H
#define FEDSM_GRADMATCH_H

#include <stdint.h>

#include "classgrad.h"

/* ---- server aggregation (docs/algorithms.md section 3 step 5) ---- */
/* The per-class average of n_in clients' gradients (all with the same C and D): for every
 * class held by at least one input, the uniform mean over the inputs that hold it (not
 * weighted by sample counts); counts = the number of inputs averaged.  Inputs are summed
 * in the order given (pass them in client-id order).  Returns owned, or NULL with err_msg
 * (ERR_FORMAT: mismatched C or D, named by input position). */
classgrad *gradmatch_average(const classgrad *const *in, int n_in);

/* ---- losses and their gradients ---- */
/* D_c of one class: f (n, D) features all labelled `label`, head w (C, D), b (C), the real
 * gradients real_w (C, D), real_b (C).  df (n, D): NULL, or overwritten with dD_c/df.
 * Returns D_c, or NAN with err_msg (out of memory, n < 1). */
double gradmatch_distance(float *df, const float *f, int n, int label, const float *w, const float *b,
                          int C, int D, const float *real_w, const float *real_b);
/* L_PCL restricted to the n anchors f (n, D) with labels (n), normalised by norm_n (the
 * total anchor count N; pass n for the whole set): (1/norm_n) sum_i l_i.  text (C, D) must
 * have unit rows; m >= 1 (and C >= 2 or m >= 2).  df: NULL or overwritten with the
 * gradient.  Returns the loss or NAN with err_msg. */
double gradmatch_pcl(float *df, const float *f, const int32_t *labels, int n, int D, const float *text,
                     int C, float tau, int m, int norm_n);

/* ---- the per-round feature update (docs/algorithms.md sections 3 step 6 and 4.3) ---- */
typedef struct gradmatch_opts {
    int iters;  /* SGD steps per round: 100 */
    float lr;   /* 0.1 */
    float beta; /* PCL weight: 0.001 (used only with text) */
    float tau;  /* PCL temperature: 0.1 */
    int pcl_m;  /* text repeats per class in the PCL: 100 (the reference hard-codes 100) */
} gradmatch_opts;
void gradmatch_opts_default(gradmatch_opts *o);

/* Updates F (N, D) in place.  labels (N) in [0, C).  Head w (C, D), b (C).  real: the
 * averaged gradients (C and D must match; NULL: no matching term), a class absent from it
 * gets no matching term.  text (C, D) or NULL (CReFF): CLIP text embeddings, normalised
 * here (a zero row is an error).  loss_first / loss_last (may be NULL): L at the first and
 * at the last iteration (each before its step).  Returns 0, or a negative error (ERR_USAGE
 * bad sizes or labels, ERR_RUNTIME non-finite features, ERR_INTERNAL out of memory). */
int gradmatch_update(float *F, const int32_t *labels, int N, int D, const float *w, const float *b,
                     int C, const classgrad *real, const float *text, const gradmatch_opts *o,
                     double *loss_first, double *loss_last);

#endif
