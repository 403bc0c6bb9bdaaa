/* test_mixup.c - FedSM selection and mix-up (lib/fl/mixup.c; docs/algorithms.md 5.4 step 3,
 * 5.6).  The reference for the draw probabilities is an exact enumeration of sequential
 * weighted draws without replacement (torch.multinomial's definition), computed here over
 * every ordered prefix: an algorithm independent of the Gumbel-key sort under test.
 * Statistical checks use a fixed seed and the bound |freq - p| <= 5 sqrt(p (1 - p) / T)
 * + 1e-3 (a correct sampler fails one check with probability < 1e-5 for a random seed;
 * with the fixed seed the outcome is deterministic). */
#include "err.h"
#include "mixup.h"
#include "relevance.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NS 6 /* local samples */
#define NC 4 /* classes */

static const int32_t Y[NS] = {0, 0, 1, 2, 2, 3};
/* relevance with the diagonal not yet replaced; rows of very different shapes */
static const float S0[NC * NC] = {
    1.0f, 0.2f, 0.7f, 0.1f,   /* class 0 */
    0.3f, 1.0f, 0.05f, 0.6f,  /* class 1 */
    0.5f, 0.5f, 1.0f, 0.5f,   /* class 2 */
    0.0f, -0.4f, 0.9f, 1.0f}; /* class 3: zero and negative weights */

/* exact P(sample i drawn first) and P(i among the first k) for weights w (w <= 0: never
 * drawn while a positive weight remains; then uniform among the rest) */
static void exact(double *first, double *incl, const double *w, int n, int k, unsigned used,
                  int depth, double p)
{
    if (depth == k)
        return;
    double tot = 0;
    int npos = 0, nrest = 0;
    for (int i = 0; i < n; i++)
        if (!(used & (1u << i))) {
            if (w[i] > 0) {
                tot += w[i];
                npos++;
            } else {
                nrest++;
            }
        }
    for (int i = 0; i < n; i++) {
        if (used & (1u << i))
            continue;
        double q = npos ? (w[i] > 0 ? w[i] / tot : 0) : 1.0 / nrest;
        if (q == 0)
            continue;
        if (depth == 0)
            first[i] += p * q;
        incl[i] += p * q;
        exact(first, incl, w, n, k, used | (1u << i), depth + 1, p * q);
    }
}

static int close_stat(double f, double p, int T)
{
    return fabs(f - p) <= 5 * sqrt(p * (1 - p) / T) + 1e-3;
}

static void unit_rows(float *f, int n, int D, unsigned seed)
{
    rng r;
    rng_init(&r, seed, "test", 0, 0);
    for (int i = 0; i < n * D; i++)
        f[i] = (float)rng_normal(&r);
}

/* statistical: empirical first-draw and inclusion frequencies through mixup_generate */
static void check_freqs(const mixup_opts *base, const float *S, int k, int T, const char *what)
{
    int D = 3;
    float feats[NS * 3], P[NC * 3] = {0}, out[NC * 8 * 3];
    int32_t lab[NC * 8];
    int64_t picked[NC * 8];
    unit_rows(feats, NS, D, 1);
    double cf[NC][NS] = {{0}}, ci[NC][NS] = {{0}};
    mixup_opts o = *base;
    o.per_class = k;
    for (int t = 0; t < T; t++) {
        o.round = t;
        int rc = mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &o, picked, NULL);
        if (rc) {
            CHECK_MSG(0, "%s: %s", what, err_msg());
            return;
        }
        for (int c = 0; c < NC; c++) {
            cf[c][picked[c * k]] += 1;
            for (int j = 0; j < k; j++)
                ci[c][picked[c * k + j]] += 1;
        }
    }
    for (int c = 0; c < NC; c++) {
        double w[NS], first[NS] = {0}, incl[NS] = {0};
        double mx = -INFINITY;
        for (int i = 0; i < NS; i++)
            mx = fmax(mx, S[c * NC + Y[i]]);
        for (int i = 0; i < NS; i++) {
            double s = S[c * NC + Y[i]];
            w[i] = o.select == MIXUP_UNIFORM ? 1.0 : o.temp > 0 ? exp((s - mx) / o.temp) : s;
        }
        exact(first, incl, w, NS, k, 0, 0, 1.0);
        for (int i = 0; i < NS; i++) {
            CHECK_MSG(close_stat(cf[c][i] / T, first[i], T), "%s class %d sample %d first: %.4f vs %.4f",
                      what, c, i, cf[c][i] / T, first[i]);
            CHECK_MSG(close_stat(ci[c][i] / T, incl[i] / 1.0, T),
                      "%s class %d sample %d included: %.4f vs %.4f", what, c, i, ci[c][i] / T,
                      incl[i]);
        }
    }
}

int main(void)
{
    float S[NC * NC];
    memcpy(S, S0, sizeof S);
    relevance_diag_row_mean(S, NC);
    CHECK_CLOSE(S[0], (1.0 + 0.2 + 0.7 + 0.1) / 4, 1e-7);
    CHECK_CLOSE(S[3 * NC + 3], (0.0 - 0.4 + 0.9 + 1.0) / 4, 1e-7);
    CHECK(S[1] == 0.2f);

    mixup_opts o;
    mixup_opts_default(&o);
    CHECK(o.per_class == 100 && o.select == MIXUP_PROB && o.lam_lo == 0.35 && o.lam_hi == 0.95);
    CHECK(mixup_select_parse("det") == MIXUP_DET && mixup_select_parse("x") == -1);

    /* prob: torch.multinomial's law, weights S[c, y_i] (row 3 has zero/negative weights) */
    check_freqs(&o, S, 3, 20000, "prob");
    /* temp: softmax(S/T) weights */
    o.temp = 0.3;
    check_freqs(&o, S, 2, 20000, "temp 0.3");
    /* uniform: all equal whatever S says */
    o.temp = 0;
    o.select = MIXUP_UNIFORM;
    check_freqs(&o, S, 2, 20000, "uniform");

    /* temp -> inf: uniform first draws; temp -> 0 and det: most relevant first */
    {
        int D = 3, k = NS;
        float feats[NS * 3], P[NC * 3] = {0}, out[NC * NS * 3];
        int32_t lab[NC * NS];
        int64_t pk[NC * NS];
        unit_rows(feats, NS, D, 2);
        const double temps[] = {1e6, 1e-4, 0};
        for (int m = 0; m < 3; m++) {
            mixup_opts q;
            mixup_opts_default(&q);
            q.per_class = k;
            q.temp = temps[m];
            q.select = m == 2 ? MIXUP_DET : MIXUP_PROB;
            int T = 6000, first0[NC][NS] = {{0}}, monotone = 1;
            for (int t = 0; t < T; t++) {
                q.round = t;
                CHECK(mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &q, pk, NULL) == 0);
                for (int c = 0; c < NC; c++) {
                    first0[c][pk[c * k]]++;
                    for (int j = 1; j < k; j++) { /* weights non-increasing along the draw */
                        float a = S[c * NC + Y[pk[c * k + j - 1]]], b = S[c * NC + Y[pk[c * k + j]]];
                        if (fmaxf(a, 0) < fmaxf(b, 0))
                            monotone = 0;
                    }
                }
            }
            if (m == 0) {
                for (int c = 0; c < NC; c++)
                    for (int i = 0; i < NS; i++)
                        CHECK_MSG(close_stat((double)first0[c][i] / T, 1.0 / NS, T),
                                  "T=1e6 class %d sample %d: %.4f", c, i, (double)first0[c][i] / T);
            } else {
                CHECK_MSG(monotone, "%s: not most relevant first", m == 1 ? "T=1e-4" : "det");
                /* ties: class 0's most relevant class is 2 (samples 3, 4), each first half the
                 * time */
                CHECK_MSG(first0[0][3] + first0[0][4] == T, "det class 0: %d %d", first0[0][3], first0[0][4]);
                CHECK(close_stat((double)first0[0][3] / T, 0.5, T));
            }
        }
    }

    /* fewer local samples than per_class: passes, each sample used floor/ceil(k/n) times;
     * zero/negative weights after the positive ones */
    {
        int D = 3, k = 14;
        float feats[NS * 3], P[NC * 3] = {0}, out[NC * 14 * 3];
        int32_t lab[NC * 14];
        int64_t pk[NC * 14];
        unit_rows(feats, NS, D, 3);
        for (int m = 0; m < 3; m++) {
            mixup_opts q;
            mixup_opts_default(&q);
            q.per_class = k;
            q.select = (mixup_select)m;
            CHECK(mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &q, pk, NULL) == 0);
            for (int c = 0; c < NC; c++) {
                int used[NS] = {0};
                for (int j = 0; j < k; j++)
                    used[pk[c * k + j]]++;
                for (int i = 0; i < NS; i++)
                    CHECK_MSG(used[i] == k / NS || used[i] == k / NS + 1, "mode %d class %d sample %d used %d", m, c, i, used[i]);
                for (int p0 = 0; p0 + NS <= k; p0 += NS) { /* each full pass a permutation */
                    int seen[NS] = {0};
                    for (int j = 0; j < NS; j++)
                        seen[pk[c * k + p0 + j]]++;
                    for (int i = 0; i < NS; i++)
                        CHECK(seen[i] == 1);
                }
            }
            if (m != MIXUP_UNIFORM) /* class 3: samples 0, 1 (weight 0), 2 (negative) last */
                for (int p0 = 0; p0 + NS <= k; p0 += NS)
                    for (int j = 0; j < 3; j++)
                        CHECK_MSG(Y[pk[3 * k + p0 + j]] >= 2, "mode %d: zero weight drawn early", m);
        }
    }

    /* the mix formula, labels, lambda grid and its frequencies; determinism */
    {
        int D = 5, k = 50, T = 40;
        float feats[NS * 5], P[NC * 5], out[NC * 50 * 5], out2[NC * 50 * 5], lam[NC * 50];
        int32_t lab[NC * 50];
        int64_t pk[NC * 50];
        unit_rows(feats, NS, D, 4);
        for (int i = 0; i < D; i++)
            feats[i] *= 7; /* not unit */
        unit_rows(P, NC, D, 5);
        for (int i = 0; i < D; i++)
            P[3 * D + i] = 0; /* a class nobody holds */
        mixup_opts q;
        mixup_opts_default(&q);
        q.per_class = k;
        long hist[61] = {0}, tot = 0, offgrid = 0;
        double maxerr = 0;
        for (int t = 0; t < T; t++) {
            q.round = t;
            CHECK(mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &q, pk, lam) == 0);
            for (int r = 0; r < NC * k; r++) {
                CHECK(lab[r] == r / k);
                double l = lam[r], g = l * 100 - 35;
                if (fabs(g - rint(g)) > 1e-3 || g < -1e-3 || g > 60.001)
                    offgrid++;
                else
                    hist[(int)rint(g)]++;
                tot++;
                const float *f = feats + pk[r] * D;
                double nf = 0;
                for (int d = 0; d < D; d++)
                    nf += (double)f[d] * f[d];
                nf = sqrt(nf);
                for (int d = 0; d < D; d++) {
                    double want = l * P[lab[r] * D + d] + (1 - l) * f[d] / nf;
                    maxerr = fmax(maxerr, fabs(out[(size_t)r * D + d] - want));
                }
            }
        }
        CHECK_MSG(maxerr < 1e-6, "mix formula: max error %g", maxerr);
        CHECK_MSG(offgrid == 0, "%ld lambdas off the 0.01 grid of [0.35, 0.95]", offgrid);
        for (int g = 0; g <= 60; g++) { /* round(U(.35,.95), 2): ends half as likely */
            double p = (g == 0 || g == 60) ? 1.0 / 120 : 1.0 / 60;
            CHECK_MSG(close_stat((double)hist[g] / tot, p, (int)tot), "lambda %.2f: %.4f vs %.4f",
                      0.35 + g / 100.0, (double)hist[g] / tot, p);
        }
        q.round = 3;
        CHECK(mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &q, NULL, NULL) == 0);
        CHECK(mixup_generate(out2, lab, feats, Y, NS, D, S, P, NC, &q, NULL, NULL) == 0);
        CHECK(memcmp(out, out2, sizeof out) == 0);
        q.client = 1;
        CHECK(mixup_generate(out2, lab, feats, Y, NS, D, S, P, NC, &q, NULL, NULL) == 0);
        CHECK(memcmp(out, out2, sizeof out) != 0);
        /* lambdas do not depend on the selection mode */
        float lam2[NC * 50];
        q.client = 0;
        CHECK(mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &q, NULL, lam) == 0);
        q.select = MIXUP_UNIFORM;
        CHECK(mixup_generate(out2, lab, feats, Y, NS, D, S, P, NC, &q, NULL, lam2) == 0);
        CHECK(memcmp(lam, lam2, sizeof lam) == 0);
        /* bad input */
        int32_t ybad[NS];
        memcpy(ybad, Y, sizeof ybad);
        ybad[2] = NC;
        CHECK(mixup_generate(out, lab, feats, ybad, NS, D, S, P, NC, &q, NULL, NULL) == ERR_USAGE);
        P[7] = NAN;
        CHECK(mixup_generate(out, lab, feats, Y, NS, D, S, P, NC, &q, NULL, NULL) == ERR_FORMAT);
        CHECK(strstr(err_msg(), "prototypes") != NULL);
        P[7] = 0;
        CHECK(mixup_generate(out, lab, feats, Y, 0, D, S, P, NC, &q, NULL, NULL) == ERR_USAGE);
    }
    TEST_MAIN_END();
}
