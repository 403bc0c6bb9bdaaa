/* test_head.c - the fresh linear head (lib/fl/head.c; docs/algorithms.md 3 step 7, 5.4
 * step 4) against PyTorch: nn.Linear + F.cross_entropy + torch.optim.SGD over the same
 * initial head and the same per-epoch orders (tests/fixtures_fedsm.py, 150 features x 16
 * dims, 5 classes, 20 epochs of batch 32 with a partial last batch, lr 0.1; plain SGD,
 * momentum 0.9 + weight decay 1e-3, and weight decay 1e-2 alone).  Tolerance: 2e-5
 * relative (max(1, |ref|)) on every weight, bias and the last epoch's mean loss (measured:
 * at most 5e-7).
 * Also: separable features reach 100% training accuracy with the defaults; the init is
 * PyTorch's U(-1/sqrt(D), 1/sqrt(D)); the init and shuffle streams are keyed by round and
 * client; bad labels and non-finite losses are errors. */
#include "endpoint.h"
#include "err.h"
#include "head.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/fedsm/head.mpk.zst"

static void against_torch(void)
{
    ep_opts eo;
    ep_opts_default(&eo);
    record *r = ep_read_one(FIX, NULL, &eo);
    if (!r) {
        fprintf(stderr, "skipped: %s (make it with /usr/bin/python3 tests/fixtures_fedsm.py)\n",
                err_msg());
        exit(77);
    }
    int64_t N, D, C, E, B;
    double lr;
    CHECK(rec_get_int(r, "epochs", &E) == 0 && rec_get_int(r, "batch", &B) == 0 &&
          rec_get_float(r, "lr", &lr) == 0 && rec_get_int(r, "num_classes", &C) == 0 &&
          rec_get_int(r, "feat_dim", &D) == 0);
    const tensor *x = rec_get(r, "features", DT_F32, 2, (int64_t[]){-1, D});
    N = x->shape[0];
    const tensor *y = rec_get(r, "labels", DT_I32, 1, (int64_t[]){N});
    const tensor *w0 = rec_get(r, "w0", DT_F32, 2, (int64_t[]){C, D});
    const tensor *b0 = rec_get(r, "b0", DT_F32, 1, (int64_t[]){C});
    const tensor *ord = rec_get(r, "orders", DT_I64, 2, (int64_t[]){E, N});
    CHECK(x && y && w0 && b0 && ord);
    const char *cases[3] = {"plain", "mom", "wd"};
    for (int k = 0; k < 3; k++) {
        char nw[32], nb[32], nl[32];
        snprintf(nw, sizeof nw, "w_%s", cases[k]);
        snprintf(nb, sizeof nb, "b_%s", cases[k]);
        snprintf(nl, sizeof nl, "loss_%s", cases[k]);
        const float *ew = rec_get(r, nw, DT_F32, 2, (int64_t[]){C, D})->data;
        const float *eb = rec_get(r, nb, DT_F32, 1, (int64_t[]){C})->data;
        const float *el = rec_get(r, nl, DT_F32, 1, (int64_t[]){1})->data;
        float *w = malloc((size_t)(C * D) * sizeof *w), b[64];
        memcpy(w, w0->data, w0->nbytes);
        memcpy(b, b0->data, b0->nbytes);
        head_opts o;
        head_opts_default(&o);
        o.epochs = (int)E;
        o.batch = (int)B;
        o.lr = (float)lr;
        o.momentum = k == 1 ? 0.9f : 0.0f;
        o.wd = k == 1 ? 1e-3f : k == 2 ? 1e-2f : 0.0f;
        double loss = -1;
        CHECK(head_train(w, b, x->data, y->data, N, (int)D, (int)C, &o, ord->data, &loss) == 0);
        double maxd = 0;
        for (int i = 0; i < C * D; i++) {
            CHECK_CLOSE(w[i], ew[i], 2e-5);
            maxd = fmax(maxd, fabs(w[i] - ew[i]));
        }
        for (int c = 0; c < C; c++)
            CHECK_CLOSE(b[c], eb[c], 2e-5);
        CHECK_CLOSE(loss, el[0], 2e-5);
        fprintf(stderr, "%s: max |w - torch| %.3g, loss %.6f vs torch %.6f\n", cases[k], maxd,
                loss, el[0]);
        free(w);
    }
    rec_free(r);
}

int main(void)
{
    against_torch();

    /* separable: 10 well-separated clusters in 32 dims, defaults (300 epochs, batch 32) */
    enum { N = 600, D = 32, C = 10 };
    float *x = malloc(sizeof(float) * N * D), ctr[C][D], w[C * D], b[C];
    int32_t y[N];
    rng r;
    rng_init(&r, 1, "test", 0, 0);
    for (int c = 0; c < C; c++)
        for (int d = 0; d < D; d++)
            ctr[c][d] = (float)(3 * rng_normal(&r));
    for (int i = 0; i < N; i++) {
        y[i] = (int32_t)rng_below(&r, C);
        for (int d = 0; d < D; d++)
            x[i * D + d] = ctr[y[i]][d] + (float)(0.3 * rng_normal(&r));
    }
    head_opts o;
    head_opts_default(&o);
    CHECK(o.epochs == 300 && o.batch == 32 && o.lr == 0.01f && o.momentum == 0 && o.wd == 0);
    o.epochs = 30;
    double loss;
    CHECK(head_fit(w, b, x, y, N, D, C, &o, &loss) == 0);
    int correct = 0;
    for (int i = 0; i < N; i++) {
        int best = 0;
        float lb = -INFINITY;
        for (int c = 0; c < C; c++) {
            float l = b[c];
            for (int d = 0; d < D; d++)
                l += w[c * D + d] * x[i * D + d];
            if (l > lb)
                lb = l, best = c;
        }
        correct += best == y[i];
    }
    CHECK_MSG(correct == N, "separable: %d of %d right (loss %.4f)", correct, N, loss);
    CHECK(loss < 0.05);
    /* determinism; the round changes the init and the order */
    float w2[C * D], b2[C];
    CHECK(head_fit(w2, b2, x, y, N, D, C, &o, NULL) == 0);
    CHECK(memcmp(w, w2, sizeof w) == 0 && memcmp(b, b2, sizeof b) == 0);
    o.round = 1;
    CHECK(head_fit(w2, b2, x, y, N, D, C, &o, NULL) == 0);
    CHECK(memcmp(w, w2, sizeof w) != 0);
    /* the documented streams (head.h): the init is head_init from (seed, "head-init", round,
     * client) (epochs 0 leaves it as drawn), and the shuffle is keyed by round and client
     * too: from one initial head, another client's (or round's) training differs, the same
     * client's is identical */
    {
        head_opts q = o;
        q.epochs = 0, q.round = 3, q.client = 2;
        float wi[C * D], bi[C], wt[4][C * D], bt[4][C];
        rng ri;
        rng_init(&ri, q.seed, "head-init", 3, 2);
        head_init(wi, bi, C, D, &ri);
        CHECK(head_fit(w2, b2, x, y, N, D, C, &q, NULL) == 0);
        CHECK_MSG(!memcmp(w2, wi, sizeof wi) && !memcmp(b2, bi, sizeof bi),
                  "head_fit's init is not head_init from (seed, head-init, round, client)");
        const int64_t key[4][2] = {{3, 2}, {3, 2}, {3, 5}, {4, 2}}; /* (round, client) */
        for (int k = 0; k < 4; k++) {
            memcpy(wt[k], wi, sizeof wi), memcpy(bt[k], bi, sizeof bi);
            q.epochs = 2, q.round = key[k][0], q.client = key[k][1];
            CHECK(head_train(wt[k], bt[k], x, y, N, D, C, &q, NULL, NULL) == 0);
        }
        CHECK_MSG(!memcmp(wt[0], wt[1], sizeof wi), "same (round, client): other shuffles");
        CHECK_MSG(memcmp(wt[0], wt[2], sizeof wi) != 0, "the shuffle is not keyed by the client");
        CHECK_MSG(memcmp(wt[0], wt[3], sizeof wi) != 0, "the shuffle is not keyed by the round");
    }

    /* init: U(-1/sqrt(D), 1/sqrt(D)) for both; variance bound^2/3 */
    {
        enum { IC = 100, ID = 512 };
        float *iw = malloc(sizeof(float) * IC * ID), ib[IC];
        rng_init(&r, 2, "head-init", 0, -1);
        head_init(iw, ib, IC, ID, &r);
        double bound = 1 / sqrt(ID), s = 0, s2 = 0, mx = 0;
        for (int i = 0; i < IC * ID; i++) {
            s += iw[i];
            s2 += (double)iw[i] * iw[i];
            mx = fmax(mx, fabs(iw[i]));
        }
        for (int c = 0; c < IC; c++)
            mx = fmax(mx, fabs(ib[c]));
        CHECK(mx <= bound && mx > 0.99 * bound);
        CHECK_CLOSE(s / (IC * ID), 0, 5 * bound / sqrt(3.0 * IC * ID));
        CHECK_MSG(fabs(s2 / (IC * ID) / (bound * bound / 3) - 1) < 0.02, "init variance %g",
                  s2 / (IC * ID));
        free(iw);
    }

    /* errors */
    y[5] = C;
    CHECK(head_fit(w, b, x, y, N, D, C, &o, NULL) == ERR_USAGE);
    y[5] = 0;
    x[7] = NAN;
    CHECK(head_fit(w, b, x, y, N, D, C, &o, NULL) == ERR_RUNTIME);
    CHECK(strstr(err_msg(), "epoch 1") != NULL);
    free(x);
    TEST_MAIN_END();
}
