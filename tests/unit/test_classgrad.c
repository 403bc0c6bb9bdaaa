/* test_classgrad.c - lib/fl/classgrad.c (docs/algorithms.md section 3 step 3a):
 *  - classgrad_batch on a fixed batch (4 images, a width-4 ResNet-8 in eval mode with
 *    random BN statistics, with and without a proj layer, no DSA / rotate / crop on fixed
 *    parameters) against PyTorch autograd of CE w.r.t. a separate head
 *    (tests/fixtures/creff/classgrad.bin from tests/fixtures_creff.py); tolerance: max
 *    |C - torch| <= 1e-4 * max |torch| for the head gradients, 1e-4 relative for the loss;
 *  - classgrad_client equals the mean over repeats of classgrad_batch with the DSA draws of
 *    the documented stream (seed, "dsa", round, client), when every class has <= batch
 *    images; classes ascending, counts; deterministic per seed; below the class size the
 *    images are drawn uniformly without replacement (every pair of 3 images, chi-square);
 *  - the gradients record round trip and the reader's refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classgrad.h"
#include "err.h"
#include "fxt.h"
#include "testlib.h"

#define FIX "tests/fixtures/creff/classgrad.bin"
enum { C = 5, NIMG = 4, IMG = 3 * 32 * 32 };
static const float MEAN[3] = {0.4914f, 0.4822f, 0.4465f}, STD[3] = {0.2023f, 0.1994f, 0.2010f};

static model *load_model(const fxt *f, const char *tag, int proj)
{
    model_config cfg;
    model_config_default(&cfg, "cifar-resnet");
    cfg.depth = 8, cfg.width = 4, cfg.num_classes = C, cfg.proj_dim = proj;
    model *m = model_new(&cfg);
    if (!m)
        return NULL;
    for (int i = 0; i < m->n_tensors; i++) {
        char nm[200];
        snprintf(nm, sizeof nm, "%s.%s", tag, m->tensors[i].name);
        const float *v = fxt_get(f, nm, m->tensors[i].numel);
        if (!v) {
            model_free(m);
            return NULL;
        }
        memcpy(m->params + m->tensors[i].offset, v, m->tensors[i].numel * sizeof *v);
    }
    return m;
}

static double maxabs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

int main(void)
{
    fxt f;
    if (fxt_load(&f, FIX)) {
        printf("skip: %s missing (make it with /usr/bin/python3 tests/fixtures_creff.py)\n", FIX);
        return 77;
    }
    const float *imf = fxt_get(&f, "images", NIMG * IMG);
    CHECK(imf != NULL);
    if (!imf)
        TEST_MAIN_END();
    uint8_t *u8 = malloc(NIMG * IMG);
    for (int i = 0; i < NIMG * IMG; i++)
        u8[i] = (uint8_t)imf[i];
    int32_t labels[NIMG] = {1, 3, 1, 1};
    shard s = {.n = NIMG, .c = 3, .h = 32, .w = 32, .images = u8, .labels = labels, .num_classes = C, .client = 2};
    float *x = malloc(NIMG * IMG * sizeof *x);
    int64_t rows[NIMG] = {0, 1, 2, 3};
    shard_gather(x, &s, rows, NIMG, MEAN, STD);

    /* fixed batches against PyTorch */
    const char *tags[3] = {"plain", "proj_rot", "crop"};
    model *mplain = NULL;
    for (int k = 0; k < 3; k++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s.meta", tags[k]);
        const float *meta = fxt_get(&f, nm, 3);
        CHECK(meta != NULL);
        if (!meta)
            continue;
        int proj = (int)meta[0], label = (int)meta[1], D = (int)meta[2];
        model *m = load_model(&f, tags[k], proj);
        CHECK_MSG(m != NULL && m->feat_dim == D, "model %s", tags[k]);
        if (!m)
            continue;
        snprintf(nm, sizeof nm, "%s.head_w", tags[k]);
        const float *hw = fxt_get(&f, nm, (uint64_t)C * D);
        snprintf(nm, sizeof nm, "%s.head_b", tags[k]);
        const float *hb = fxt_get(&f, nm, C);
        snprintf(nm, sizeof nm, "%s.gw", tags[k]);
        const float *want_w = fxt_get(&f, nm, (uint64_t)C * D);
        snprintf(nm, sizeof nm, "%s.gb", tags[k]);
        const float *want_b = fxt_get(&f, nm, C);
        snprintf(nm, sizeof nm, "%s.loss", tags[k]);
        const float *want_l = fxt_get(&f, nm, 1);
        CHECK(hw && hb && want_w && want_b && want_l);
        if (!hw || !hb || !want_w || !want_b || !want_l) {
            model_free(m);
            continue;
        }
        dsa_params p = {.kind = DSA_NONE};
        if (k == 1)
            p = (dsa_params){.kind = DSA_ROTATE, .theta = 0.2f};
        else if (k == 2)
            p = (dsa_params){.kind = DSA_CROP, .tx = -3, .ty = 2};
        float *gw = malloc((size_t)C * D * sizeof *gw), gb[C], loss = 0;
        int rc = classgrad_batch(m, hw, hb, x, NIMG, label, &p, gw, gb, &loss);
        CHECK_MSG(rc == 0, "%s: %s", tags[k], err_msg());
        double ew = fxt_maxdiff(gw, want_w, (size_t)C * D), sw = maxabs(want_w, (size_t)C * D);
        double eb = fxt_maxdiff(gb, want_b, C), sb = maxabs(want_b, C);
        CHECK_MSG(ew <= 1e-4 * sw, "%s: dW max err %g of %g", tags[k], ew, sw);
        CHECK_MSG(eb <= 1e-4 * sb, "%s: db max err %g of %g", tags[k], eb, sb);
        CHECK_MSG(fabs(loss - want_l[0]) <= 1e-4 * fmax(1, fabs(want_l[0])), "%s: loss %g vs %g", tags[k], loss,
                  want_l[0]);
        fprintf(stderr, "  %-9s dW max err %.3g of %.3g, db %.3g of %.3g, loss %.6g (torch %.6g)\n", tags[k], ew, sw,
                eb, sb, loss, want_l[0]);
        free(gw);
        if (k == 0)
            mplain = m;
        else
            model_free(m);
    }
    if (!mplain) {
        fxt_free(&f);
        TEST_MAIN_END();
    }

    /* classgrad_client = mean over repeats of classgrad_batch with the documented DSA stream */
    model *m = mplain;
    const int D = m->feat_dim, R = 3;
    float hw[C * 16], hb[C];
    for (int i = 0; i < C * D; i++)
        hw[i] = (float)sin(0.7 * i) * 0.3f;
    for (int i = 0; i < C; i++)
        hb[i] = 0.05f * i;
    classgrad *g = classgrad_client(m, hw, hb, &s, MEAN, STD, R, 8, 42, 7, 2);
    CHECK_MSG(g != NULL, "%s", err_msg());
    if (g) {
        CHECK(g->k == 2 && g->classes[0] == 1 && g->classes[1] == 3 && g->counts[0] == 3 && g->counts[1] == 1);
        CHECK(g->num_classes == C && g->feat_dim == D);
        rng rd;
        rng_init(&rd, 42, "dsa", 7, 2);
        float ew[C * 16], eb[C], gw[C * 16], gb[C], xb[3 * IMG];
        const int cls[2] = {1, 3};
        const int64_t rows1[3] = {0, 2, 3}, rows3[1] = {1};
        double err = 0;
        for (int ki = 0; ki < 2; ki++) {
            int nb = ki ? 1 : 3;
            shard_gather(xb, &s, ki ? rows3 : rows1, nb, MEAN, STD);
            memset(ew, 0, sizeof ew), memset(eb, 0, sizeof eb);
            for (int r = 0; r < R; r++) {
                dsa_params p;
                dsa_draw(&p, &rd, 32, 32);
                CHECK(classgrad_batch(m, hw, hb, xb, nb, cls[ki], &p, gw, gb, NULL) == 0);
                for (int i = 0; i < C * D; i++)
                    ew[i] += gw[i] / R;
                for (int i = 0; i < C; i++)
                    eb[i] += gb[i] / R;
            }
            err = fmax(err, fxt_maxdiff(ew, g->weight + ki * C * D, (size_t)C * D));
            err = fmax(err, fxt_maxdiff(eb, g->bias + ki * C, C));
        }
        CHECK_MSG(err <= 1e-6, "client vs batches: max err %g", err);
        fprintf(stderr, "  client    = mean of %d DSA'd batches: max err %.3g\n", R, err);
    }
    /* sampling below the class size: deterministic per seed, another seed differs */
    classgrad *g1 = classgrad_client(m, hw, hb, &s, MEAN, STD, 2, 2, 5, 1, 2);
    classgrad *g2 = classgrad_client(m, hw, hb, &s, MEAN, STD, 2, 2, 5, 1, 2);
    classgrad *g3 = classgrad_client(m, hw, hb, &s, MEAN, STD, 2, 2, 6, 1, 2);
    CHECK(g1 && g2 && g3);
    if (g1 && g2 && g3) {
        CHECK(!memcmp(g1->weight, g2->weight, (size_t)2 * C * D * sizeof(float)));
        CHECK(memcmp(g1->weight, g3->weight, (size_t)2 * C * D * sizeof(float)) != 0);
    }
    CHECK(classgrad_client(m, hw, hb, &s, MEAN, STD, 0, 8, 1, 1, 1) == NULL && err_last() == ERR_USAGE);
    /* ... and uniform without replacement: class 1 holds 3 images (rows 0, 2, 3), batch 2, one
     * repeat.  For each of 300 seeds the pair drawn is identified by matching the client's
     * gradient with classgrad_batch on each of the 3 pairs under the seed's documented DSA
     * draw (a pair's mean does not depend on its order); each pair must come up, with a
     * chi-square statistic against 1/3 each below 13.82 (2 degrees of freedom, p = 0.001). */
    {
        const int64_t pairs[3][2] = {{0, 2}, {0, 3}, {2, 3}};
        long hits[3] = {0};
        int unmatched = 0, n_seeds = 300;
        float xb2[2 * IMG], cw[C * 16], cb[C];
        for (int sd = 0; sd < n_seeds; sd++) {
            classgrad *gs = classgrad_client(m, hw, hb, &s, MEAN, STD, 1, 2, 1000 + sd, 4, 1);
            /* counts: the class's images (3), not the batch drawn (2) */
            CHECK(gs != NULL && gs->k == 2 && gs->classes[0] == 1 && gs->counts[0] == 3 && gs->counts[1] == 1);
            if (!gs || gs->k != 2)
                break;
            rng rd2;
            rng_init(&rd2, 1000 + sd, "dsa", 4, 1);
            dsa_params p;
            dsa_draw(&p, &rd2, 32, 32);
            int best = -1;
            double bd = INFINITY;
            for (int q = 0; q < 3; q++) {
                shard_gather(xb2, &s, pairs[q], 2, MEAN, STD);
                CHECK(classgrad_batch(m, hw, hb, xb2, 2, 1, &p, cw, cb, NULL) == 0);
                double d = fmax(fxt_maxdiff(cw, gs->weight, (size_t)C * D), fxt_maxdiff(cb, gs->bias, C));
                if (d < bd)
                    bd = d, best = q;
            }
            if (bd > 1e-6)
                unmatched++;
            else
                hits[best]++;
            classgrad_free(gs);
        }
        double e = (n_seeds - unmatched) / 3.0, chi2 = 0;
        for (int q = 0; q < 3; q++)
            chi2 += (hits[q] - e) * (hits[q] - e) / (e > 0 ? e : 1);
        CHECK_MSG(unmatched == 0, "%d of %d draws match no pair of class 1's images", unmatched, n_seeds);
        CHECK_MSG(hits[0] && hits[1] && hits[2] && chi2 < 13.82,
                  "pairs drawn {0,2} %ld, {0,3} %ld, {2,3} %ld times: chi-square %.2f (bound 13.82)", hits[0],
                  hits[1], hits[2], chi2);
        fprintf(stderr, "  draws of 2 of 3: pairs %ld %ld %ld, chi2 %.2f\n", hits[0], hits[1], hits[2], chi2);
    }

    /* the gradients record: round trip and refusals */
    if (g) {
        record *r = rec_new("gradients");
        const char *names[C] = {"a", "b", "c", "d", "e"};
        CHECK(classgrad_to_record(g, r, 7, 2, R, 8, names) == 0);
        void *buf = NULL;
        size_t len = 0;
        CHECK(rec_encode_mem(r, 0, &buf, &len) == 0);
        record *rd = rec_decode_mem(buf, len, NULL, "test", 0);
        CHECK(rd != NULL);
        classgrad *back = rd ? classgrad_from_record(rd, C, D) : NULL;
        CHECK_MSG(back != NULL, "%s", err_msg());
        if (back) {
            CHECK(back->k == g->k && !memcmp(back->classes, g->classes, 2 * sizeof(int32_t)) &&
                  !memcmp(back->counts, g->counts, 2 * sizeof(int32_t)) &&
                  !memcmp(back->weight, g->weight, (size_t)2 * C * D * sizeof(float)) &&
                  !memcmp(back->bias, g->bias, (size_t)2 * C * sizeof(float)));
            int64_t v = 0;
            CHECK(rec_get_int(rd, "round", &v) == 0 && v == 7);
            CHECK(rec_get_int(rd, "client", &v) == 0 && v == 2);
            CHECK(rec_get_int(rd, "repeats", &v) == 0 && v == R);
            CHECK(rec_get_int(rd, "feat_dim", &v) == 0 && v == D);
        }
        classgrad_free(back);
        CHECK(classgrad_from_record(rd, C + 1, D) == NULL && err_last() == ERR_FORMAT); /* other model */
        rec_free(rd);
        rec_free(r);
        free(buf);
        g->classes[1] = 0; /* not ascending */
        r = rec_new("gradients");
        classgrad_to_record(g, r, 7, 2, R, 8, NULL);
        CHECK(classgrad_from_record(r, C, D) == NULL && err_last() == ERR_FORMAT);
        rec_free(r);
        g->classes[1] = 3;
        g->weight[5] = NAN;
        r = rec_new("gradients");
        classgrad_to_record(g, r, 7, 2, R, 8, NULL);
        CHECK(classgrad_from_record(r, C, D) == NULL && err_last() == ERR_FORMAT);
        rec_free(r);
    }
    classgrad_free(g), classgrad_free(g1), classgrad_free(g2), classgrad_free(g3);
    model_free(mplain);
    free(u8);
    free(x);
    fxt_free(&f);
    TEST_MAIN_END();
}
