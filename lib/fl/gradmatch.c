/* gradmatch.c - CReFF/CLIP2FL server side: per-class gradient average, matching distance
 * and prototype contrastive loss with analytic gradients, and the federated-feature update
 * (docs/algorithms.md sections 3 steps 5-6, 3.2, 4.3).  The contract is in gradmatch.h.
 *
 * One step on the n features Fc of class c is four GEMMs (OpenBLAS, single-threaded inside
 * the pool's tasks), with B = [dG; W; T] (3C, D) stacked so that the logits and the text
 * similarities come from one product and the feature gradient from another:
 *   [Z | S] = Fc [W; T]^T            (n, 2C)   logits and text similarities
 *   G       = (1/n) R^T Fc           (C, D)    synthetic weight gradient, R = P - onehot
 *   U       = Fc dG^T + h            (n, C)    u_j of docs/algorithms.md section 3.2
 *   dF      = [R/n | V/n | Q'] B     (n, D)    V_j = p_j*u_j - p_j (p_j.u_j), Q' the PCL
 *                                              coefficients times beta / (N tau)
 * Not here: the client step (classgrad.c) or the head retraining. */
#include "gradmatch.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "pool.h"

#define GM_EPS 1e-6

/* ---- server average ---- */
classgrad *gradmatch_average(const classgrad *const *in, int n_in)
{
    if (n_in < 1) {
        err_set(ERR_USAGE, "gradients average: no inputs");
        return NULL;
    }
    int C = in[0]->num_classes, D = in[0]->feat_dim;
    for (int i = 1; i < n_in; i++)
        if (in[i]->num_classes != C || in[i]->feat_dim != D) {
            err_set(ERR_FORMAT, "gradients average: input %d has C=%d D=%d, input 0 has C=%d D=%d", i,
                    in[i]->num_classes, in[i]->feat_dim, C, D);
            return NULL;
        }
    int *holders = calloc((size_t)C, sizeof *holders);
    if (!holders) {
        err_set(ERR_INTERNAL, "gradients average: out of memory");
        return NULL;
    }
    for (int i = 0; i < n_in; i++)
        for (int j = 0; j < in[i]->k; j++)
            holders[in[i]->classes[j]]++;
    int k = 0;
    for (int c = 0; c < C; c++)
        k += holders[c] > 0;
    classgrad *out = classgrad_new(k, C, D);
    if (!out) {
        free(holders);
        return NULL;
    }
    size_t cd = (size_t)C * D;
    for (int c = 0, ko = 0; c < C; c++) {
        if (!holders[c])
            continue;
        out->classes[ko] = c;
        out->counts[ko] = holders[c];
        float *ow = out->weight + ko * cd, *ob = out->bias + (size_t)ko * C;
        for (int i = 0; i < n_in; i++) /* in the order given (client-id order) */
            for (int j = 0; j < in[i]->k; j++)
                if (in[i]->classes[j] == c) {
                    const float *iw = in[i]->weight + j * cd, *ib = in[i]->bias + (size_t)j * C;
                    for (size_t t = 0; t < cd; t++)
                        ow[t] += iw[t];
                    for (int t = 0; t < C; t++)
                        ob[t] += ib[t];
                }
        float s = 1.0f / (float)holders[c];
        for (size_t t = 0; t < cd; t++)
            ow[t] *= s;
        for (int t = 0; t < C; t++)
            ob[t] *= s;
        ko++;
    }
    free(holders);
    return out;
}

/* ---- one class's loss and gradient ---- */
typedef struct gm_ws {
    int C, D, nmax;
    float *B;   /* (3C, D): dG | W | T */
    float *ZS;  /* (nmax, 2C) */
    float *RVQ; /* (nmax, 3C) */
    float *U;   /* (nmax, C) */
    float *G;   /* (C, D) */
    float *gb, *h; /* (C) */
    float *Fc, *dF; /* (nmax, D) */
} gm_ws;

static void ws_free(gm_ws *s)
{
    free(s->B), free(s->ZS), free(s->RVQ), free(s->U), free(s->G), free(s->gb), free(s->h);
    free(s->Fc), free(s->dF);
}

/* W (C, D) and T (C, D) may be NULL (not needed). */
static int ws_init(gm_ws *s, int C, int D, int nmax, const float *W, const float *T)
{
    memset(s, 0, sizeof *s);
    s->C = C, s->D = D, s->nmax = nmax;
    size_t cd = (size_t)C * D, nd = (size_t)nmax * D;
    s->B = calloc(3 * cd, sizeof *s->B);
    s->ZS = malloc((size_t)nmax * 2 * C * sizeof *s->ZS);
    s->RVQ = malloc((size_t)nmax * 3 * C * sizeof *s->RVQ);
    s->U = malloc((size_t)nmax * C * sizeof *s->U);
    s->G = malloc(cd * sizeof *s->G);
    s->gb = malloc((size_t)C * sizeof *s->gb);
    s->h = malloc((size_t)C * sizeof *s->h);
    s->Fc = malloc(nd * sizeof *s->Fc);
    s->dF = malloc(nd * sizeof *s->dF);
    if (!s->B || !s->ZS || !s->RVQ || !s->U || !s->G || !s->gb || !s->h || !s->Fc || !s->dF) {
        ws_free(s);
        return ERR_INTERNAL;
    }
    if (W)
        memcpy(s->B + cd, W, cd * sizeof *W);
    if (T)
        memcpy(s->B + 2 * cd, T, cd * sizeof *T);
    return 0;
}

/* 1 - <a, g> / (|a||g| + eps) and its gradient wrt g into dg (len k). */
static double cos_dist(float *dg, const float *a, const float *g, int k)
{
    double s = 0, na = 0, ng = 0;
    for (int t = 0; t < k; t++) {
        s += (double)a[t] * g[t];
        na += (double)a[t] * a[t];
        ng += (double)g[t] * g[t];
    }
    na = sqrt(na), ng = sqrt(ng);
    double den = na * ng + GM_EPS;
    double ca = -1.0 / den, cg = ng > 0 ? s * na / (ng * den * den) : 0.0;
    for (int t = 0; t < k; t++)
        dg[t] = (float)(ca * a[t] + cg * g[t]);
    return 1.0 - s / den;
}

/* Loss and dF (n, D) of the n features s->Fc: the matching distance of class c when real_w
 * != NULL (head W in s->B, b), plus pcl_w * sum_i l_i when pcl_w > 0 (text in s->B, labels
 * per row).  Returns D_c + pcl_w * sum_i l_i. */
static double class_loss_grad(gm_ws *s, int n, int c, const float *b, const float *real_w, const float *real_b,
                              const int32_t *labels, double pcl_w, float tau, int m)
{
    const int C = s->C, D = s->D, C3 = 3 * C;
    const int has_real = real_w != NULL, has_text = pcl_w > 0;
    const float *Fc = s->Fc;
    int zrow0 = has_real ? C : 2 * C, zn = (has_real + has_text) * C;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, zn, D, 1.0f, Fc, D, s->B + (size_t)zrow0 * D, D, 0.0f,
                s->ZS, zn);
    double loss = 0;
    if (has_real) {
        for (int j = 0; j < n; j++) { /* R = softmax(z + b) - onehot in RVQ[:, 0:C] */
            const float *z = s->ZS + (size_t)j * zn;
            float *r = s->RVQ + (size_t)j * C3;
            float mx = -INFINITY;
            for (int i = 0; i < C; i++) {
                r[i] = z[i] + b[i];
                mx = r[i] > mx ? r[i] : mx;
            }
            double sum = 0;
            for (int i = 0; i < C; i++)
                sum += (r[i] = expf(r[i] - mx));
            float inv = (float)(1.0 / sum);
            for (int i = 0; i < C; i++)
                r[C + i] = r[i] *= inv; /* p kept in RVQ[:, C:2C] until V replaces it */
            r[c] -= 1.0f;
        }
        float invn = 1.0f / (float)n;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, n, invn, s->RVQ, C3, Fc, D, 0.0f, s->G, D);
        for (int i = 0; i < C; i++) {
            double t = 0;
            for (int j = 0; j < n; j++)
                t += s->RVQ[(size_t)j * C3 + i];
            s->gb[i] = (float)(t / n);
        }
        for (int i = 0; i < C; i++) /* dG rows into B[0:C] */
            loss += cos_dist(s->B + (size_t)i * D, real_w + (size_t)i * D, s->G + (size_t)i * D, D);
        loss += cos_dist(s->h, real_b, s->gb, C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, D, 1.0f, Fc, D, s->B, D, 0.0f, s->U, C);
        for (int j = 0; j < n; j++) { /* V = p*u - p (p.u), scaled by 1/n with R */
            float *r = s->RVQ + (size_t)j * C3, *v = r + C;
            const float *u0 = s->U + (size_t)j * C;
            double pu = 0;
            for (int i = 0; i < C; i++)
                pu += (double)v[i] * (u0[i] + s->h[i]);
            for (int i = 0; i < C; i++) {
                v[i] = v[i] * (u0[i] + s->h[i] - (float)pu) * invn;
                r[i] *= invn;
            }
        }
    }
    if (has_text) { /* Q' = pcl_w / tau * dl_i/ds_i into RVQ[:, 2C:3C] */
        int off = has_real ? C : 0;
        float itau = 1.0f / tau;
        for (int j = 0; j < n; j++) {
            const float *z = s->ZS + (size_t)j * zn + off;
            float *q = s->RVQ + (size_t)j * C3 + 2 * C;
            int y = labels[j];
            float mx = -INFINITY;
            for (int i = 0; i < C; i++)
                mx = z[i] > mx ? z[i] : mx;
            double sum = 0;
            for (int i = 0; i < C; i++)
                sum += (q[i] = expf((z[i] - mx) * itau));
            double den = m * sum - q[y];
            loss += pcl_w * (-(double)(z[y] - mx) * itau + log(den));
            double k = pcl_w * itau / den;
            for (int i = 0; i < C; i++)
                q[i] = (float)(k * m * q[i]);
            q[y] = (float)(q[y] * (m - 1.0) / m - pcl_w * itau);
        }
    }
    int k0 = has_real ? 0 : 2 * C, k1 = has_text ? C3 : 2 * C;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, k1 - k0, 1.0f, s->RVQ + k0, C3, s->B + (size_t)k0 * D,
                D, 0.0f, s->dF, D);
    return loss;
}

double gradmatch_distance(float *df, const float *f, int n, int label, const float *w, const float *b,
                          int C, int D, const float *real_w, const float *real_b)
{
    if (n < 1 || C < 1 || D < 1 || label < 0 || label >= C) {
        err_set(ERR_USAGE, "gradmatch: bad sizes (n=%d, label=%d, C=%d, D=%d)", n, label, C, D);
        return NAN;
    }
    gm_ws s;
    if (ws_init(&s, C, D, n, w, NULL)) {
        err_set(ERR_INTERNAL, "gradmatch: out of memory");
        return NAN;
    }
    memcpy(s.Fc, f, (size_t)n * D * sizeof *f);
    double l = class_loss_grad(&s, n, label, b, real_w, real_b, NULL, 0, 1, 1);
    if (df)
        memcpy(df, s.dF, (size_t)n * D * sizeof *df);
    ws_free(&s);
    return l;
}

double gradmatch_pcl(float *df, const float *f, const int32_t *labels, int n, int D, const float *text,
                     int C, float tau, int m, int norm_n)
{
    if (n < 1 || C < 1 || D < 1 || m < 1 || (C < 2 && m < 2) || !(tau > 0) || norm_n < 1) {
        err_set(ERR_USAGE, "gradmatch: bad PCL sizes (n=%d, C=%d, D=%d, m=%d, tau=%g)", n, C, D, m, tau);
        return NAN;
    }
    for (int j = 0; j < n; j++)
        if (labels[j] < 0 || labels[j] >= C) {
            err_set(ERR_USAGE, "gradmatch: label %d of anchor %d outside [0, %d)", labels[j], j, C);
            return NAN;
        }
    gm_ws s;
    if (ws_init(&s, C, D, n, NULL, text)) {
        err_set(ERR_INTERNAL, "gradmatch: out of memory");
        return NAN;
    }
    memcpy(s.Fc, f, (size_t)n * D * sizeof *f);
    double l = class_loss_grad(&s, n, 0, NULL, NULL, NULL, labels, 1.0 / norm_n, tau, m);
    if (df)
        memcpy(df, s.dF, (size_t)n * D * sizeof *df);
    ws_free(&s);
    return l;
}

/* ---- the feature update ---- */
void gradmatch_opts_default(gradmatch_opts *o)
{
    o->iters = 100;
    o->lr = 0.1f;
    o->beta = 0.001f;
    o->tau = 0.1f;
    o->pcl_m = 100;
}

typedef struct gm_task {
    float *F;
    const int *start, *order; /* class c's rows: order[start[c] .. start[c+1]) */
    const int32_t *labels;
    int C, D, nmax, N;
    const float *w, *b, *text;
    const float **real_w, **real_b; /* per class, NULL when absent */
    const gradmatch_opts *o;
    double *lf, *ll; /* per class: loss at the first and last iteration */
    atomic_int next;
    atomic_int rc;
} gm_task;

static void gm_run(void *ctx, int tid, int nt)
{
    (void)tid, (void)nt;
    gm_task *t = ctx;
    const int C = t->C, D = t->D;
    gm_ws s;
    if (ws_init(&s, C, D, t->nmax > 0 ? t->nmax : 1, t->w, t->text)) {
        atomic_store(&t->rc, ERR_INTERNAL);
        return;
    }
    int32_t *lab = malloc((size_t)(t->nmax > 0 ? t->nmax : 1) * sizeof *lab);
    if (!lab) {
        atomic_store(&t->rc, ERR_INTERNAL);
        ws_free(&s);
        return;
    }
    double pcl_w = t->text ? (double)t->o->beta / t->N : 0;
    for (int c; (c = atomic_fetch_add(&t->next, 1)) < C;) {
        int n = t->start[c + 1] - t->start[c];
        const int *rows = t->order + t->start[c];
        if (!n || (!t->real_w[c] && !t->text))
            continue;
        for (int j = 0; j < n; j++) {
            memcpy(s.Fc + (size_t)j * D, t->F + (size_t)rows[j] * D, (size_t)D * sizeof *s.Fc);
            lab[j] = c;
        }
        float lr = t->o->lr;
        for (int it = 0; it < t->o->iters; it++) {
            double l = class_loss_grad(&s, n, c, t->b, t->real_w[c], t->real_b[c], lab, pcl_w, t->o->tau,
                                       t->o->pcl_m);
            if (it == 0)
                t->lf[c] = l;
            t->ll[c] = l;
            cblas_saxpy(n * D, -lr, s.dF, 1, s.Fc, 1);
        }
        for (int j = 0; j < n; j++)
            memcpy(t->F + (size_t)rows[j] * D, s.Fc + (size_t)j * D, (size_t)D * sizeof *s.Fc);
    }
    free(lab);
    ws_free(&s);
}

int gradmatch_update(float *F, const int32_t *labels, int N, int D, const float *w, const float *b,
                     int C, const classgrad *real, const float *text, const gradmatch_opts *o,
                     double *loss_first, double *loss_last)
{
    if (N < 0 || D < 1 || C < 1 || o->iters < 0 || !(o->lr >= 0))
        return err_set(ERR_USAGE, "gradmatch: bad sizes (N=%d, D=%d, C=%d, iters=%d)", N, D, C, o->iters);
    if (real && (real->num_classes != C || real->feat_dim != D))
        return err_set(ERR_USAGE, "gradmatch: gradients of C=%d D=%d for a head of C=%d D=%d", real->num_classes,
                       real->feat_dim, C, D);
    if (text && (o->pcl_m < 1 || (C < 2 && o->pcl_m < 2) || !(o->tau > 0)))
        return err_set(ERR_USAGE, "gradmatch: bad PCL options (m=%d, tau=%g, C=%d)", o->pcl_m, o->tau, C);
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C)
            return err_set(ERR_USAGE, "gradmatch: label %d of feature %d outside [0, %d)", labels[i], i, C);
    int rc = 0;
    int *start = calloc((size_t)C + 1, sizeof *start), *order = malloc((size_t)(N ? N : 1) * sizeof *order);
    int *fill = calloc((size_t)C, sizeof *fill);
    const float **rw = calloc((size_t)C, sizeof *rw), **rb = calloc((size_t)C, sizeof *rb);
    double *lf = calloc((size_t)C, sizeof *lf), *ll = calloc((size_t)C, sizeof *ll);
    float *tn = text ? malloc((size_t)C * D * sizeof *tn) : NULL;
    if (!start || !order || !fill || !rw || !rb || !lf || !ll || (text && !tn)) {
        rc = err_set(ERR_INTERNAL, "gradmatch: out of memory");
        goto done;
    }
    for (int c = 0; c < C && text; c++) { /* unit text rows */
        double s2 = 0;
        for (int d = 0; d < D; d++)
            s2 += (double)text[(size_t)c * D + d] * text[(size_t)c * D + d];
        if (!(s2 > 0) || !isfinite(s2)) {
            rc = err_set(ERR_USAGE, "gradmatch: text embedding of class %d is zero or not finite", c);
            goto done;
        }
        float inv = (float)(1.0 / sqrt(s2));
        for (int d = 0; d < D; d++)
            tn[(size_t)c * D + d] = text[(size_t)c * D + d] * inv;
    }
    for (int i = 0; real && i < real->k; i++) {
        int c = real->classes[i];
        rw[c] = real->weight + (size_t)i * C * D;
        rb[c] = real->bias + (size_t)i * C;
    }
    for (int i = 0; i < N; i++)
        start[labels[i] + 1]++;
    int nmax = 0;
    for (int c = 0; c < C; c++) {
        nmax = start[c + 1] > nmax ? start[c + 1] : nmax;
        start[c + 1] += start[c];
    }
    for (int i = 0; i < N; i++)
        order[start[labels[i]] + fill[labels[i]]++] = i;
    gm_task t = {.F = F, .start = start, .order = order, .labels = labels, .C = C, .D = D, .nmax = nmax,
                 .N = N, .w = w, .b = b, .text = tn, .real_w = rw, .real_b = rb, .o = o, .lf = lf, .ll = ll};
    atomic_init(&t.next, 0);
    atomic_init(&t.rc, 0);
    pool_run(gm_run, &t);
    if ((rc = atomic_load(&t.rc))) {
        rc = err_set(rc, "gradmatch: out of memory");
        goto done;
    }
    double sf = 0, sl = 0;
    for (int c = 0; c < C; c++)
        sf += lf[c], sl += ll[c];
    if (loss_first)
        *loss_first = sf;
    if (loss_last)
        *loss_last = sl;
    for (size_t i = 0; i < (size_t)N * D; i++)
        if (!isfinite(F[i])) {
            rc = err_set(ERR_RUNTIME, "gradmatch: feature %zu became %g (lower the feature lr?)", i / (size_t)D,
                         (double)F[i]);
            break;
        }
done:
    free(start), free(order), free(fill), free(rw), free(rb), free(lf), free(ll), free(tn);
    return rc;
}
