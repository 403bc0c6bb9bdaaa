/* test_proto.c - FedSM prototypes (lib/fl/proto.c; docs/algorithms.md 5.4 steps 1-2)
 * against PyTorch/numpy (tests/fixtures_fedsm.py): a tiny ResNet-8 (width 4, proj 8, 16x16
 * input, random BN statistics) run over a 70-image shard in batches of 32 in shard order,
 * BN in eval and in train mode; per-class unit-normalised means (class 3 absent: a 0 row) and
 * counts; the server's count-weighted mean of unit-normalised client means over 3 clients
 * (some counts 0, one class held by nobody).  Tolerances: features and means 2e-5 relative
 * (max(1, |ref|); measured 7e-8 eval, 4e-7 train), aggregation 1e-6; counts
 * exact. */
#include "endpoint.h"
#include "err.h"
#include "proto.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DIR "tests/fixtures/fedsm/"

static const float *ref(const record *r, const char *name, int ndim, const int64_t *shape)
{
    const tensor *t = rec_get(r, name, DT_F32, ndim, shape);
    if (!t) {
        fprintf(stderr, "%s\n", err_msg());
        exit(1);
    }
    return t->data;
}

int main(void)
{
    ep_opts eo;
    ep_opts_default(&eo);
    record *mrec = ep_read_one(DIR "proto-model.mpk.zst", "model", &eo);
    record *want = mrec ? ep_read_one(DIR "proto-ref.mpk.zst", NULL, &eo) : NULL;
    shard *s = want ? shard_load(DIR "proto-shard.mpk.zst", &eo) : NULL;
    if (!s) {
        fprintf(stderr, "skipped: %s (make it with /usr/bin/python3 tests/fixtures_fedsm.py)\n",
                err_msg());
        return 77;
    }
    float mean[3], std[3];
    CHECK(meta_get_vec3(mrec, "mean", mean) == 0 && meta_get_vec3(mrec, "std", std) == 0);
    int64_t N = s->n;
    const int C = 4, D = 8;
    const int64_t *rcounts = rec_get(want, "counts", DT_I64, 1, (int64_t[]){C})->data;
    const char *modes[2] = {"eval", "train"};
    for (int bn = 0; bn < 2; bn++) {
        model *m = model_from_record(mrec);
        CHECK_MSG(m && m->feat_dim == D, "%s", err_msg());
        if (!m)
            break;
        char name[64];
        snprintf(name, sizeof name, "features_%s", modes[bn]);
        const float *wf = ref(want, name, 2, (int64_t[]){N, D});
        snprintf(name, sizeof name, "means_%s", modes[bn]);
        const float *wm = ref(want, name, 2, (int64_t[]){C, D});
        float *f = NULL;
        int32_t *y = NULL;
        CHECK_MSG(proto_features(&f, &y, m, s, mean, std, bn) == 0, "%s", err_msg());
        if (!f)
            break;
        double maxd = 0;
        for (int64_t i = 0; i < N * D; i++) {
            CHECK_CLOSE(f[i], wf[i], 2e-5);
            maxd = fmax(maxd, fabs(f[i] - wf[i]));
        }
        for (int64_t i = 0; i < N; i++)
            CHECK(y[i] == s->labels[i]);
        float means[4 * 8];
        int64_t counts[4];
        CHECK(proto_class_means(means, counts, f, y, N, D, C) == 0);
        for (int i = 0; i < C * D; i++)
            CHECK_CLOSE(means[i], wm[i], 2e-5);
        for (int c = 0; c < C; c++)
            CHECK(counts[c] == rcounts[c]);
        for (int d = 0; d < D; d++)
            CHECK(means[3 * D + d] == 0); /* absent class */
        fprintf(stderr, "bn %s: max |feature - torch| %.3g\n", modes[bn], maxd);
        /* the record round trip */
        record *pr = rec_new("prototypes");
        CHECK(proto_to_record(pr, means, counts, C, D, 4, 2, modes[bn]) == 0);
        const float *pm;
        const int64_t *pc;
        CHECK(proto_from_record(pr, C, D, &pm, &pc) == 0 && memcmp(pm, means, sizeof means) == 0 &&
              memcmp(pc, counts, sizeof counts) == 0);
        CHECK(proto_from_record(pr, C, D + 1, &pm, &pc) == ERR_FORMAT);
        ((float *)rec_find(pr, "means")->data)[5] = NAN;
        CHECK(proto_from_record(pr, -1, -1, &pm, &pc) == ERR_FORMAT);
        CHECK(strstr(err_msg(), "means") != NULL);
        rec_free(pr);
        free(f);
        free(y);
        model_free(m);
    }

    /* server aggregation */
    const float *ain = ref(want, "agg_in", 3, (int64_t[]){3, C, D});
    const int64_t *acn = rec_get(want, "agg_counts", DT_I64, 2, (int64_t[]){3, C})->data;
    const float *aP = ref(want, "agg_P", 2, (int64_t[]){C, D});
    const float *mus[3];
    const int64_t *cns[3];
    record *recs[3];
    for (int k = 0; k < 3; k++) {
        mus[k] = ain + (size_t)k * C * D;
        cns[k] = acn + (size_t)k * C;
        recs[k] = rec_new("prototypes");
        CHECK(proto_to_record(recs[k], mus[k], cns[k], C, D, 7, 10 + k, "eval") == 0);
    }
    float P[4 * 8];
    int64_t tot[4];
    proto_aggregate(P, tot, mus, cns, 3, C, D);
    for (int i = 0; i < C * D; i++)
        CHECK_CLOSE(P[i], aP[i], 1e-6);
    for (int c = 0; c < C; c++)
        CHECK(tot[c] == acn[c] + acn[C + c] + acn[2 * C + c]);
    record *out = rec_new("prototypes");
    CHECK_MSG(proto_aggregate_records(out, recs, 3) == 0, "%s", err_msg());
    const float *oP;
    const int64_t *oc;
    CHECK(proto_from_record(out, C, D, &oP, &oc) == 0 && memcmp(oP, P, sizeof P) == 0 &&
          memcmp(oc, tot, sizeof tot) == 0);
    int64_t cl = 0, rd = 0;
    CHECK(rec_get_int(out, "client", &cl) == 0 && cl == -1);
    CHECK(rec_get_int(out, "round", &rd) == 0 && rd == 7);
    ((int64_t *)rec_find(recs[1], "counts")->data)[2] = -1;
    record *out2 = rec_new("prototypes");
    CHECK(proto_aggregate_records(out2, recs, 3) == ERR_FORMAT);
    rec_free(out2);
    rec_free(out);
    for (int k = 0; k < 3; k++)
        rec_free(recs[k]);

    /* a label out of range */
    float fz[2 * 8] = {0}, mz[4 * 8];
    int64_t cz[4];
    int32_t yz[2] = {0, 4};
    CHECK(proto_class_means(mz, cz, fz, yz, 2, D, C) == ERR_USAGE);
    shard_free(s);
    rec_free(want);
    rec_free(mrec);
    TEST_MAIN_END();
}
