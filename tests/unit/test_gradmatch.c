/* test_gradmatch.c - lib/fl/gradmatch.c (docs/algorithms.md sections 3 steps 5-6, 3.2, 4.3):
 *  - the matching distance and its analytic gradient w.r.t. the features against PyTorch
 *    autograd through the gradient (create_graph), including the |G_i| = 0 guard (all-zero
 *    features) and a zero row in the real gradient; tolerance: loss 1e-5 relative, gradient
 *    max |C - torch| <= 1e-4 * max |torch|;
 *  - the prototype contrastive loss (closed form) against the literal SupCon computation
 *    (N x N, repeated text vectors, diagonal masked), same tolerances;
 *  - both gradients against central finite differences of the C losses (h = 1e-2 on
 *    float32 losses; |fd - analytic| <= 2e-3 * max |analytic| + 1e-4);
 *  - five SGD steps of the feature update, CReFF and CLIP2FL, interleaved labels, a class
 *    without a real gradient, against the same loop in PyTorch (max |C - torch| <= 1e-4),
 *    and bit-identical at 1 and 2 threads;
 *  - the server's per-class gradient average against a direct computation with unequal
 *    client class sets and unequal sample counts (uniform over holders, not weighted).
 * Fixtures: tests/fixtures/creff/gradmatch.bin from tests/fixtures_creff.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fxt.h"
#include "gradmatch.h"
#include "pool.h"
#include "testlib.h"

#define FIX "tests/fixtures/creff/gradmatch.bin"

static double maxabs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* the gradient of a C loss against central differences at `probes` coordinates */
typedef double (*loss_fn)(void *ctx, const float *f);
static void check_fd(const char *what, loss_fn fn, void *ctx, const float *f0, const float *an, size_t n)
{
    float *f = malloc(n * sizeof *f);
    memcpy(f, f0, n * sizeof *f);
    double scale = maxabs(an, n), worst = 0;
    const float h = 1e-2f;
    for (size_t k = 0; k < n; k += n / 40 + 1) {
        f[k] = f0[k] + h;
        double lp = fn(ctx, f);
        f[k] = f0[k] - h;
        double lm = fn(ctx, f);
        f[k] = f0[k];
        double fd = (lp - lm) / (2.0 * h), err = fabs(fd - an[k]);
        worst = err > worst ? err : worst;
        CHECK_MSG(err <= 2e-3 * scale + 1e-4, "%s: d/df[%zu]: fd %.6g analytic %.6g", what, k, fd, (double)an[k]);
    }
    fprintf(stderr, "  %-12s finite differences: max err %.3g (max |grad| %.3g)\n", what, worst, scale);
    free(f);
}

typedef struct dctx {
    int n, label, C, D;
    const float *w, *b, *aw, *ab;
} dctx;
static double dist_loss(void *c, const float *f)
{
    dctx *d = c;
    return gradmatch_distance(NULL, f, d->n, d->label, d->w, d->b, d->C, d->D, d->aw, d->ab);
}
typedef struct pctx {
    int n, D, C, m;
    const int32_t *labels;
    const float *text;
} pctx;
static double pcl_loss(void *c, const float *f)
{
    pctx *p = c;
    return gradmatch_pcl(NULL, f, p->labels, p->n, p->D, p->text, p->C, 0.1f, p->m, p->n);
}

static void test_distance(const fxt *fx)
{
    const int C = 6, D = 20, n = 9, label = 2;
    dctx d = {n, label, C, D, fxt_get(fx, "dist.w", C * D), fxt_get(fx, "dist.b", C),
              fxt_get(fx, "dist.aw", C * D), fxt_get(fx, "dist.ab", C)};
    CHECK(d.w && d.b && d.aw && d.ab);
    if (!d.w || !d.b || !d.aw || !d.ab)
        return;
    float df[9 * 20];
    const char *cases[] = {"dist", "dist0"};
    for (int k = 0; k < 2; k++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s.f", cases[k]);
        const float *f = fxt_get(fx, nm, n * D);
        snprintf(nm, sizeof nm, "%s.loss", cases[k]);
        const float *want_l = fxt_get(fx, nm, 1);
        snprintf(nm, sizeof nm, "%s.df", cases[k]);
        const float *want_df = fxt_get(fx, nm, n * D);
        CHECK(f && want_l && want_df);
        if (!f || !want_l || !want_df)
            continue;
        double l = gradmatch_distance(df, f, n, label, d.w, d.b, C, D, d.aw, d.ab);
        CHECK_MSG(fabs(l - want_l[0]) <= 1e-5 * fmax(1, fabs(want_l[0])), "%s loss %.9g vs torch %.9g", cases[k], l,
                  want_l[0]);
        double e = fxt_maxdiff(df, want_df, n * D), s = maxabs(want_df, n * D);
        CHECK_MSG(e <= 1e-4 * s + 1e-9, "%s dD/dF: max err %g (max |torch| %g)", cases[k], e, s);
        fprintf(stderr, "  %-12s loss %.7g (torch %.7g), dD/dF max err %.3g of %.3g\n", cases[k], l, want_l[0], e, s);
        if (k == 0)
            check_fd("distance", dist_loss, &d, f, df, (size_t)n * D);
    }
    CHECK(isnan(gradmatch_distance(df, d.w, 1, C, d.w, d.b, C, D, d.aw, d.ab))); /* label out of range */
}

static void test_pcl(const fxt *fx)
{
    const int C = 5, D = 16, m = 4, n = C * m;
    const float *f = fxt_get(fx, "pcl.f", n * D), *lf = fxt_get(fx, "pcl.labels", n);
    const float *text = fxt_get(fx, "pcl.text", C * D), *want_l = fxt_get(fx, "pcl.loss", 1);
    const float *want_df = fxt_get(fx, "pcl.df", n * D);
    CHECK(f && lf && text && want_l && want_df);
    if (!f || !lf || !text || !want_l || !want_df)
        return;
    int32_t labels[20];
    for (int i = 0; i < n; i++)
        labels[i] = (int32_t)lf[i];
    float df[20 * 16];
    double l = gradmatch_pcl(df, f, labels, n, D, text, C, 0.1f, m, n);
    CHECK_MSG(fabs(l - want_l[0]) <= 1e-5 * fmax(1, fabs(want_l[0])), "pcl loss %.9g vs torch %.9g", l, want_l[0]);
    double e = fxt_maxdiff(df, want_df, n * D), s = maxabs(want_df, n * D);
    CHECK_MSG(e <= 1e-4 * s, "dPCL/dF: max err %g (max |torch| %g)", e, s);
    fprintf(stderr, "  %-12s loss %.7g (torch %.7g), dL/dF max err %.3g of %.3g\n", "pcl", l, want_l[0], e, s);
    pctx p = {n, D, C, m, labels, text};
    check_fd("pcl", pcl_loss, &p, f, df, (size_t)n * D);
    CHECK(isnan(gradmatch_pcl(df, f, labels, n, D, text, 1, 0.1f, 1, n))); /* C 1, m 1: empty denominator */
}

static void test_update(const fxt *fx)
{
    const int C = 4, D = 12, m = 5, N = C * m;
    const float *f0 = fxt_get(fx, "upd.f", N * D), *lf = fxt_get(fx, "upd.labels", N);
    const float *w = fxt_get(fx, "upd.w", C * D), *b = fxt_get(fx, "upd.b", C);
    const float *aw = fxt_get(fx, "upd.aw", C * C * D), *ab = fxt_get(fx, "upd.ab", C * C);
    const float *text = fxt_get(fx, "upd.text", C * D);
    CHECK(f0 && lf && w && b && aw && ab && text);
    if (!f0 || !lf || !w || !b || !aw || !ab || !text)
        return;
    int32_t labels[20];
    for (int i = 0; i < N; i++)
        labels[i] = (int32_t)lf[i];
    classgrad *real = classgrad_new(3, C, D);
    const int held[3] = {0, 2, 3};
    for (int i = 0; i < 3; i++) {
        real->classes[i] = held[i];
        real->counts[i] = 1;
        memcpy(real->weight + (size_t)i * C * D, aw + (size_t)held[i] * C * D, (size_t)C * D * sizeof(float));
        memcpy(real->bias + (size_t)i * C, ab + (size_t)held[i] * C, (size_t)C * sizeof(float));
    }
    gradmatch_opts o;
    gradmatch_opts_default(&o);
    CHECK(o.iters == 100 && o.lr == 0.1f && o.beta == 0.001f && o.tau == 0.1f && o.pcl_m == 100);
    o.iters = 5, o.beta = 0.05f, o.pcl_m = m;
    const char *names[2] = {"upd_creff", "upd_clip2fl"};
    for (int k = 0; k < 2; k++) {
        float F[20 * 12], F2[20 * 12];
        char nm[64];
        snprintf(nm, sizeof nm, "%s.out", names[k]);
        const float *want = fxt_get(fx, nm, N * D);
        snprintf(nm, sizeof nm, "%s.loss_first", names[k]);
        const float *wl0 = fxt_get(fx, nm, 1);
        snprintf(nm, sizeof nm, "%s.loss_last", names[k]);
        const float *wl1 = fxt_get(fx, nm, 1);
        CHECK(want && wl0 && wl1);
        if (!want || !wl0 || !wl1)
            continue;
        memcpy(F, f0, sizeof F);
        double l0, l1;
        pool_set_threads(1);
        int rc = gradmatch_update(F, labels, N, D, w, b, C, real, k ? text : NULL, &o, &l0, &l1);
        CHECK_MSG(rc == 0, "%s: %s", names[k], err_msg());
        double e = fxt_maxdiff(F, want, N * D);
        CHECK_MSG(e <= 1e-4, "%s: features max err %g", names[k], e);
        CHECK_MSG(fabs(l0 - wl0[0]) <= 1e-5 * fmax(1, fabs(wl0[0])), "%s first loss %.9g vs %.9g", names[k], l0, wl0[0]);
        CHECK_MSG(fabs(l1 - wl1[0]) <= 1e-5 * fmax(1, fabs(wl1[0])), "%s last loss %.9g vs %.9g", names[k], l1, wl1[0]);
        CHECK_MSG(l1 < l0, "%s: loss did not fall (%g -> %g)", names[k], l0, l1);
        fprintf(stderr, "  %-12s 5 steps: features max err %.3g, loss %.6g -> %.6g (torch %.6g -> %.6g)\n", names[k], e,
                l0, l1, wl0[0], wl1[0]);
        /* class 1 has no real gradient: unchanged in CReFF, moved by PCL in CLIP2FL */
        int moved1 = 0;
        for (int i = 0; i < N; i++)
            if (labels[i] == 1)
                moved1 |= memcmp(F + i * D, f0 + i * D, D * sizeof(float)) != 0;
        CHECK_MSG(moved1 == k, "%s: class 1 moved %d", names[k], moved1);
        memcpy(F2, f0, sizeof F2);
        pool_set_threads(2);
        rc = gradmatch_update(F2, labels, N, D, w, b, C, real, k ? text : NULL, &o, NULL, NULL);
        pool_set_threads(1);
        CHECK(rc == 0 && !memcmp(F, F2, sizeof F));
    }
    /* bad input */
    float F[20 * 12];
    memcpy(F, f0, sizeof F);
    labels[3] = C;
    CHECK(gradmatch_update(F, labels, N, D, w, b, C, real, NULL, &o, NULL, NULL) == ERR_USAGE);
    labels[3] = 3;
    float zt[4 * 12] = {0};
    CHECK(gradmatch_update(F, labels, N, D, w, b, C, real, zt, &o, NULL, NULL) == ERR_USAGE);
    classgrad_free(real);
}

static void test_average(void)
{
    const int C = 5, D = 3;
    /* client 0 holds {0, 2}, client 1 {2, 3, 4}, client 2 {0, 4}: class 1 held by none */
    const int sets[3][3] = {{0, 2, -1}, {2, 3, 4}, {0, 4, -1}};
    classgrad *in[3];
    for (int k = 0; k < 3; k++) {
        int K = sets[k][2] < 0 ? 2 : 3;
        in[k] = classgrad_new(K, C, D);
        for (int j = 0; j < K; j++) {
            in[k]->classes[j] = sets[k][j];
            in[k]->counts[j] = 10 * (k + 1) + j; /* unequal: a count-weighted mean would differ */
            for (int t = 0; t < C * D; t++)
                in[k]->weight[j * C * D + t] = (float)(sin(1.0 + k * 7 + j * 3 + t) * (k + 1));
            for (int t = 0; t < C; t++)
                in[k]->bias[j * C + t] = (float)cos(2.0 + k * 5 + j + t);
        }
    }
    classgrad *avg = gradmatch_average((const classgrad *const *)in, 3);
    CHECK(avg != NULL);
    if (avg) {
        CHECK(avg->k == 4 && avg->classes[0] == 0 && avg->classes[1] == 2 && avg->classes[2] == 3 &&
              avg->classes[3] == 4);
        CHECK(avg->counts[0] == 2 && avg->counts[1] == 2 && avg->counts[2] == 1 && avg->counts[3] == 2);
        double err = 0;
        for (int ko = 0; ko < avg->k; ko++) { /* direct: sum over holders / number of holders */
            int c = avg->classes[ko];
            for (int t = 0; t < C * D + C; t++) {
                double s = 0;
                int h = 0;
                for (int k = 0; k < 3; k++)
                    for (int j = 0; j < in[k]->k; j++)
                        if (in[k]->classes[j] == c) {
                            s += t < C * D ? in[k]->weight[j * C * D + t] : in[k]->bias[j * C + t - C * D];
                            h++;
                        }
                double got = t < C * D ? avg->weight[ko * C * D + t] : avg->bias[ko * C + t - C * D];
                err = fmax(err, fabs(got - s / h));
            }
        }
        CHECK_MSG(err <= 1e-6, "average: max err %g", err);
    }
    classgrad_free(avg);
    classgrad *odd = classgrad_new(1, C, D + 1);
    const classgrad *bad[2] = {in[0], odd};
    CHECK(gradmatch_average(bad, 2) == NULL && err_last() == ERR_FORMAT);
    classgrad_free(odd);
    for (int k = 0; k < 3; k++)
        classgrad_free(in[k]);
}

int main(void)
{
    fxt f;
    if (fxt_load(&f, FIX)) {
        printf("skip: %s missing (make it with /usr/bin/python3 tests/fixtures_creff.py)\n", FIX);
        return 77;
    }
    test_distance(&f);
    test_pcl(&f);
    test_update(&f);
    test_average();
    fxt_free(&f);
    TEST_MAIN_END();
}
