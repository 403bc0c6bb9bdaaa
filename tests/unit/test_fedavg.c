/* test_fedavg.c - unit tests of fedavg_records (lib/fl/fedavg.h, docs/algorithms.md 2): the
 * merge rule of every dtype against a direct computation.  <f4 tensors: the weighted mean
 * sum_k w_k t_k / sum_k w_k with unequal weights (so a plain mean fails), tolerance 1e-6
 * relative; integer counters (<i8 num_batches_tracked, <i4): the element-wise maximum over
 * the clients, exactly, whatever the weights (a weighted mean, a sum, the first client's or
 * the last client's value all fail); a zero-weight client still counts for the maximum;
 * other dtypes are refused naming the tensor.  check_finite (every update's check) refuses
 * a NaN, a +Inf and a -Inf in any <f4 tensor, naming the tensor, and passes finite values. */
#include "err.h"
#include "fedavg.h"
#include "testlib.h"

#include <math.h>
#include <string.h>

enum { K = 4, NF = 7 };

int main(void)
{
    /* weights chosen so that mean, first and last differ from the weighted mean */
    const double w[K] = {500, 30, 0, 1200};
    const int64_t nbt[K] = {312, 17, 4000, 90}; /* the zero-weight client has the maximum */
    const int64_t i8v[K][3] = {{5, -2, 9}, {7, -8, 1}, {-1, -1, -1}, {6, 0, 9}};
    const int32_t i4v[K][2] = {{-3, 100}, {-7, 50}, {-9, 99}, {-4, 101}};
    record *in[K];
    float f[K][NF];
    for (int k = 0; k < K; k++) {
        in[k] = rec_new("update");
        snprintf(in[k]->src, sizeof in[k]->src, "u%d", k);
        in[k]->index = 0;
        for (int j = 0; j < NF; j++)
            f[k][j] = (float)((k + 1) * 0.37 - j * 1.25 + (k == 3 ? 10.0 : 0.0));
        CHECK(rec_add(in[k], "bn1.weight", DT_F32, 1, (int64_t[]){NF}, f[k], REC_COPY) == 0);
        CHECK(rec_add(in[k], "bn1.num_batches_tracked", DT_I64, 0, NULL, (void *)&nbt[k],
                      REC_COPY) == 0);
        CHECK(rec_add(in[k], "counts", DT_I64, 1, (int64_t[]){3}, (void *)i8v[k], REC_COPY) == 0);
        CHECK(rec_add(in[k], "small", DT_I32, 1, (int64_t[]){2}, (void *)i4v[k], REC_COPY) == 0);
    }
    record *out = rec_new("model");
    int rc = fedavg_records(out, in, w, K);
    CHECK_MSG(rc == 0, "%s", err_msg());
    /* direct computation */
    double wsum = 0;
    for (int k = 0; k < K; k++)
        wsum += w[k];
    const tensor *t = rec_get(out, "bn1.weight", DT_F32, 1, (int64_t[]){NF});
    for (int j = 0; t && j < NF; j++) {
        double want = 0;
        for (int k = 0; k < K; k++)
            want += w[k] * f[k][j];
        CHECK_CLOSE(((float *)t->data)[j], want / wsum, 1e-6);
    }
    t = rec_get(out, "bn1.num_batches_tracked", DT_I64, 0, NULL);
    int64_t mx = INT64_MIN;
    for (int k = 0; k < K; k++)
        mx = nbt[k] > mx ? nbt[k] : mx;
    CHECK_MSG(t && *(int64_t *)t->data == mx, "num_batches_tracked %lld, want %lld",
              t ? (long long)*(int64_t *)t->data : -1LL, (long long)mx);
    t = rec_get(out, "counts", DT_I64, 1, (int64_t[]){3});
    for (int j = 0; t && j < 3; j++) {
        int64_t m = INT64_MIN;
        for (int k = 0; k < K; k++)
            m = i8v[k][j] > m ? i8v[k][j] : m;
        CHECK_MSG(((int64_t *)t->data)[j] == m, "counts[%d] %lld, want %lld", j,
                  (long long)((int64_t *)t->data)[j], (long long)m);
    }
    t = rec_get(out, "small", DT_I32, 1, (int64_t[]){2});
    for (int j = 0; t && j < 2; j++) {
        int32_t m = INT32_MIN;
        for (int k = 0; k < K; k++)
            m = i4v[k][j] > m ? i4v[k][j] : m;
        CHECK_MSG(((int32_t *)t->data)[j] == m, "small[%d] %d, want %d", j,
                  ((int32_t *)t->data)[j], m);
    }
    rec_free(out);
    /* a dtype with no merge rule is refused, naming the tensor */
    for (int k = 0; k < K; k++)
        CHECK(rec_add(in[k], "mask", DT_U8, 1, (int64_t[]){1}, (uint8_t[]){1}, REC_COPY) == 0);
    out = rec_new("model");
    CHECK(fedavg_records(out, in, w, K) == ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "tensors.mask") && strstr(err_msg(), "|u1"), "%s", err_msg());
    rec_free(out);
    for (int k = 0; k < K; k++)
        rec_free(in[k]);

    /* check_finite: NaN, +Inf, -Inf each refused, naming the tensor; finite values pass */
    const float bads[3] = {NAN, INFINITY, -INFINITY};
    for (int b = -1; b < 3; b++) {
        record *r = rec_new("update");
        snprintf(r->src, sizeof r->src, "u-bad");
        float v[5] = {1.5f, -2.0f, 3.0e38f, -3.0e38f, 0.0f};
        if (b >= 0)
            v[2] = bads[b];
        CHECK(rec_add(r, "bn.weight", DT_F32, 1, (int64_t[]){5}, v, REC_COPY) == 0);
        int rc = check_finite(r, "the update");
        if (b < 0)
            CHECK_MSG(rc == 0, "finite values refused: %s", err_msg());
        else
            CHECK_MSG(rc == ERR_RUNTIME && strstr(err_msg(), "bn.weight"), "value %g: rc %d, %s",
                      (double)bads[b], rc, err_msg());
        rec_free(r);
    }
    TEST_MAIN_END();
}
