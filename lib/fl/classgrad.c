/* classgrad.c - per-class classifier-head gradients on a client's real data, and the
 * `gradients` record (docs/algorithms.md section 3 step 3a, section 3.1; docs/format.md).
 * The contract is in classgrad.h.  Not the server side (gradmatch.c). */
#include "classgrad.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

classgrad *classgrad_new(int k, int num_classes, int feat_dim)
{
    if (k < 0 || num_classes < 1 || feat_dim < 1) {
        err_set(ERR_USAGE, "classgrad: bad sizes K=%d C=%d D=%d", k, num_classes, feat_dim);
        return NULL;
    }
    classgrad *g = calloc(1, sizeof *g);
    size_t kk = k ? (size_t)k : 1;
    if (g) {
        g->k = k, g->num_classes = num_classes, g->feat_dim = feat_dim;
        g->classes = calloc(kk, sizeof *g->classes);
        g->counts = calloc(kk, sizeof *g->counts);
        g->weight = calloc(kk * num_classes * feat_dim, sizeof *g->weight);
        g->bias = calloc(kk * num_classes, sizeof *g->bias);
    }
    if (!g || !g->classes || !g->counts || !g->weight || !g->bias) {
        classgrad_free(g);
        err_set(ERR_INTERNAL, "classgrad: out of memory (K=%d C=%d D=%d)", k, num_classes, feat_dim);
        return NULL;
    }
    return g;
}

void classgrad_free(classgrad *g)
{
    if (!g)
        return;
    free(g->classes);
    free(g->counts);
    free(g->weight);
    free(g->bias);
    free(g);
}

/* gw (C, D) = (1/n) sum_j (p_j - e_label) f_j^T, gb (C) = (1/n) sum_j (p_j - e_label) for
 * f (n, D), p_j = softmax(W f_j + b).  r: scratch (n, C).  Returns the mean CE. */
static double head_ce_grad(float *gw, float *gb, float *r, const float *f, int n, int label,
                           const float *w, const float *b, int C, int D)
{
    /* r = f W^T (logits), then softmax - onehot in place */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, D, 1.0f, f, D, w, D, 0.0f, r, C);
    double loss = 0;
    for (int j = 0; j < n; j++) {
        float *rj = r + (size_t)j * C;
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < C; i++) {
            rj[i] += b[i];
            mx = rj[i] > mx ? rj[i] : mx;
        }
        for (int i = 0; i < C; i++)
            s += exp((double)rj[i] - mx);
        loss += log(s) + mx - rj[label];
        for (int i = 0; i < C; i++)
            rj[i] = (float)(exp((double)rj[i] - mx) / s);
        rj[label] -= 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, n, 1.0f / (float)n, r, C, f, D, 0.0f, gw,
                D);
    for (int i = 0; i < C; i++) {
        double s = 0;
        for (int j = 0; j < n; j++)
            s += r[(size_t)j * C + i];
        gb[i] = (float)(s / n);
    }
    return loss / n;
}

int classgrad_batch(model *m, const float *head_w, const float *head_b, const float *x, int n,
                    int label, const dsa_params *p, float *gw, float *gb, float *loss)
{
    int C = m->cfg.num_classes, D = m->feat_dim, S = m->cfg.input_size, ch = m->cfg.in_channels;
    if (n < 1 || label < 0 || label >= C)
        return err_set(ERR_USAGE, "classgrad: bad batch (n=%d, label=%d, %d classes)", n, label, C);
    size_t img = (size_t)ch * S * S;
    float *xa = NULL;
    if (p && p->kind != DSA_NONE) {
        xa = malloc((size_t)n * img * sizeof *xa);
        if (!xa)
            return err_set(ERR_INTERNAL, "classgrad: out of memory");
        int rc = dsa_apply(xa, x, n, ch, S, S, p);
        if (rc) {
            free(xa);
            return rc;
        }
    }
    const float *f = model_forward_features(m, xa ? xa : x, n, 0);
    float *r = f ? malloc((size_t)n * C * sizeof *r) : NULL;
    if (!r) {
        free(xa);
        return f ? err_set(ERR_INTERNAL, "classgrad: out of memory") : err_last();
    }
    double l = head_ce_grad(gw, gb, r, f, n, label, head_w, head_b, C, D);
    if (loss)
        *loss = (float)l;
    free(r);
    free(xa);
    return 0;
}

classgrad *classgrad_client(model *m, const float *head_w, const float *head_b, const shard *s,
                            const float mean[3], const float std[3], int repeats, int batch,
                            uint64_t seed, int64_t round, int64_t client)
{
    int C = m->cfg.num_classes, D = m->feat_dim, S = m->cfg.input_size;
    if (repeats < 1 || batch < 1) {
        err_set(ERR_USAGE, "classgrad: repeats (%d) and batch (%d) must be >= 1", repeats, batch);
        return NULL;
    }
    if (!s->images) {
        err_set(ERR_USAGE, "classgrad: shard of client %lld is encoded (JPEG/PNG); class gradients need a decoded shard",
                (long long)s->client);
        return NULL;
    }
    if (shard_check_fits(s, "shard", C, m->cfg.in_channels, S, S)) {
        err_wrap(ERR_USAGE, "classgrad");
        return NULL;
    }
    int64_t *cnt = calloc((size_t)C, sizeof *cnt);
    int64_t *pool = malloc((size_t)(s->n ? s->n : 1) * sizeof *pool);
    size_t img = (size_t)m->cfg.in_channels * S * S;
    float *x = malloc((size_t)batch * img * sizeof *x);
    float *gw = malloc((size_t)C * D * sizeof *gw), *gb = malloc((size_t)C * sizeof *gb);
    classgrad *g = NULL;
    if (!cnt || !pool || !x || !gw || !gb) {
        err_set(ERR_INTERNAL, "classgrad: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < s->n; i++)
        cnt[s->labels[i]]++;
    int k = 0;
    for (int c = 0; c < C; c++)
        k += cnt[c] > 0;
    if (!(g = classgrad_new(k, C, D)))
        goto done;
    rng rs, rd;
    rng_init(&rs, seed, "classgrad", round, client);
    rng_init(&rd, seed, "dsa", round, client);
    for (int c = 0, ki = 0; c < C; c++) {
        if (!cnt[c])
            continue;
        int64_t nc = 0;
        for (int64_t i = 0; i < s->n; i++)
            if (s->labels[i] == c)
                pool[nc++] = i;
        int nb = nc < batch ? (int)nc : batch;
        float *aw = g->weight + (size_t)ki * C * D, *ab = g->bias + (size_t)ki * C;
        for (int rep = 0; rep < repeats; rep++) {
            for (int j = 0; j < nb && nc > batch; j++) { /* partial Fisher-Yates */
                int64_t t = j + (int64_t)rng_below(&rs, (uint64_t)(nc - j)), tmp = pool[j];
                pool[j] = pool[t], pool[t] = tmp;
            }
            shard_gather(x, s, pool, nb, mean, std);
            dsa_params p;
            dsa_draw(&p, &rd, S, S);
            if (classgrad_batch(m, head_w, head_b, x, nb, c, &p, gw, gb, NULL)) {
                classgrad_free(g), g = NULL;
                goto done;
            }
            for (size_t i = 0; i < (size_t)C * D; i++)
                aw[i] += gw[i] / (float)repeats;
            for (int i = 0; i < C; i++)
                ab[i] += gb[i] / (float)repeats;
        }
        for (size_t i = 0; i < (size_t)C * D; i++)
            if (!isfinite(aw[i])) {
                err_set(ERR_RUNTIME, "classgrad: non-finite gradient for class %d (client %lld)", c,
                        (long long)client);
                classgrad_free(g), g = NULL;
                goto done;
            }
        g->classes[ki] = c;
        g->counts[ki] = (int32_t)cnt[c];
        ki++;
    }
done:
    free(cnt);
    free(pool);
    free(x);
    free(gw);
    free(gb);
    return g;
}

int classgrad_to_record(const classgrad *g, record *r, int64_t round, int64_t client, int repeats,
                        int batch, const char *const *names)
{
    int64_t K = g->k, C = g->num_classes, D = g->feat_dim;
    int64_t s1[1] = {K}, s3[3] = {K, C, D}, s2[2] = {K, C};
    int rc = rec_add(r, "classes", DT_I32, 1, s1, g->classes, REC_COPY);
    if (!rc)
        rc = rec_add(r, "weight", DT_F32, 3, s3, g->weight, REC_COPY);
    if (!rc)
        rc = rec_add(r, "bias", DT_F32, 2, s2, g->bias, REC_COPY);
    if (!rc)
        rc = rec_add(r, "counts", DT_I32, 1, s1, g->counts, REC_COPY);
    if (!rc)
        rc = rec_set_int(r, "round", round);
    if (!rc)
        rc = rec_set_int(r, "client", client);
    if (!rc)
        rc = rec_set_int(r, "num_classes", C);
    if (!rc)
        rc = rec_set_int(r, "feat_dim", D);
    if (!rc)
        rc = rec_set_int(r, "repeats", repeats);
    if (!rc)
        rc = rec_set_int(r, "batch", batch);
    if (!rc && names)
        rc = rec_set_strs(r, "classes", names, (size_t)C);
    return rc;
}

classgrad *classgrad_from_record(const record *r, int num_classes, int feat_dim)
{
    const tensor *tc = rec_get(r, "classes", DT_I32, 1, NULL);
    if (!tc)
        return NULL;
    int64_t K = tc->shape[0];
    const tensor *tw = rec_get(r, "weight", DT_F32, 3, (int64_t[]){K, num_classes > 0 ? num_classes : -1, feat_dim > 0 ? feat_dim : -1});
    if (!tw)
        return NULL;
    int64_t C = tw->shape[1], D = tw->shape[2];
    const tensor *tb = rec_get(r, "bias", DT_F32, 2, (int64_t[]){K, C});
    const tensor *tn = tb ? rec_get(r, "counts", DT_I32, 1, (int64_t[]){K}) : NULL;
    if (!tn)
        return NULL;
    int64_t mc = C, md = D;
    if (rec_opt_int(r, "num_classes", &mc) || rec_opt_int(r, "feat_dim", &md))
        return NULL;
    if (mc != C || md != D || C < 1 || D < 1 || C > (1 << 24) || K > C) {
        err_set(ERR_FORMAT, "%s record %ld: gradients: meta num_classes/feat_dim %lld/%lld vs weight [%lld,%lld,%lld]",
                r->src, r->index, (long long)mc, (long long)md, (long long)K, (long long)C, (long long)D);
        return NULL;
    }
    classgrad *g = classgrad_new((int)K, (int)C, (int)D);
    if (!g)
        return NULL;
    memcpy(g->classes, tc->data, tc->nbytes);
    memcpy(g->weight, tw->data, tw->nbytes);
    memcpy(g->bias, tb->data, tb->nbytes);
    memcpy(g->counts, tn->data, tn->nbytes);
    const char *bad = NULL;
    for (int i = 0; i < g->k && !bad; i++) {
        if (g->classes[i] < 0 || g->classes[i] >= C || (i && g->classes[i] <= g->classes[i - 1]))
            bad = "classes (not strictly ascending in [0, num_classes))";
        else if (g->counts[i] < 0)
            bad = "counts (negative)";
    }
    for (size_t i = 0; i < (size_t)K * C * D && !bad; i++)
        if (!isfinite(g->weight[i]))
            bad = "weight (not finite)";
    for (size_t i = 0; i < (size_t)K * C && !bad; i++)
        if (!isfinite(g->bias[i]))
            bad = "bias (not finite)";
    if (bad) {
        err_set(ERR_FORMAT, "%s record %ld: gradients: bad %s", r->src, r->index, bad);
        classgrad_free(g);
        return NULL;
    }
    return g;
}
