/* test_model_record.c - model tables, init, records and batch handling:
 * ResNet-8 layout (names, shapes, 1.23M body params), init statistics (docs/algorithms.md 1.5),
 * save -> encode -> decode -> load round trip (bit-exact, meta), rejection of a record of
 * another architecture with the tensor named, bad values (NaN, negative variance, std 0,
 * rounds, counts, a meta larger than the tensors) refused by name, variable batch size (a last partial batch
 * gives the same per-sample eval outputs), and run-to-run determinism of a training step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "model.h"
#include "pool.h"
#include "record.h"
#include "rng.h"
#include "testlib.h"

static model *make(const char *arch, int classes, int proj, int depth)
{
    model_config c;
    CHECK(model_config_default(&c, arch) == 0);
    c.num_classes = classes, c.proj_dim = proj;
    if (depth)
        c.depth = depth;
    model *m = model_new(&c);
    CHECK_MSG(m != NULL, "%s", err_msg());
    if (m)
        model_init(m, 7);
    return m;
}

static record *roundtrip(const record *r)
{
    void *buf;
    size_t len;
    CHECK(rec_encode_mem(r, 1, &buf, &len) == 0);
    record *back = rec_decode_mem(buf, len, NULL, "test", 0);
    CHECK_MSG(back != NULL, "%s", err_msg());
    free(buf);
    return back;
}

static void test_layout_init(void)
{
    model *m = make("resnet8", 10, 0, 0);
    if (!m)
        return;
    const model_tensor *t = model_find(m, "layer2.0.downsample.0.weight");
    CHECK(t && t->ndim == 4 && t->shape[0] == 128 && t->shape[1] == 64 && t->shape[2] == 1);
    CHECK(model_find(m, "layer1.0.downsample.0.weight") == NULL);
    t = model_find(m, "layer3.0.bn2.running_var");
    CHECK(t && t->buffer && t->offset >= m->n_params);
    CHECK(m->feat_dim == 256 && m->pool_dim == 256);
    size_t body = m->n_params - 256 * 10 - 10;
    fprintf(stderr, "resnet8: %d tensors, %zu trainable (%zu body), %zu total\n", m->n_tensors,
            m->n_params, body, m->n_total);
    CHECK(body > 1220000 && body < 1230000); /* "about 1.225M in the body" */
    /* init statistics */
    const float *w = model_param(m, "layer3.0.conv2.weight");
    double s2 = 0;
    for (int i = 0; i < 256 * 256 * 9; i++)
        s2 += (double)w[i] * w[i];
    CHECK_CLOSE(sqrt(s2 / (256 * 256 * 9)), sqrt(2.0 / (9 * 256)), 0.01);
    const float *fw = model_param(m, "fc.weight"), *fb = model_param(m, "fc.bias");
    float mx = 0;
    for (int i = 0; i < 2560; i++)
        mx = fmaxf(mx, fabsf(fw[i]));
    CHECK(mx <= 1.0f / 16.0f && mx > 0.9f / 16.0f);
    CHECK(fb[0] != 0 && fabsf(fb[0]) <= 1.0f / 16.0f);
    CHECK(model_param(m, "bn1.weight")[5] == 1.0f && model_param(m, "bn1.bias")[5] == 0.0f);
    CHECK(model_param(m, "bn1.running_var")[5] == 1.0f &&
          model_param(m, "bn1.running_mean")[5] == 0.0f);
    model_free(m);
    /* deeper / wider / bad configs */
    model *m20 = make("cifar-resnet", 100, 512, 20);
    CHECK(m20 && model_find(m20, "layer3.2.conv2.weight") && m20->feat_dim == 512);
    model_free(m20);
    model_config c;
    model_config_default(&c, "resnet8");
    c.depth = 9;
    CHECK(model_new(&c) == NULL && err_last() == ERR_USAGE);
    CHECK(model_config_default(&c, "vgg") == ERR_USAGE);
    model_free(NULL);
}

static void test_records(void)
{
    model *m = make("resnet8", 10, 512, 0);
    if (!m)
        return;
    m->num_batches_tracked = 17;
    record *r = rec_new("model");
    CHECK(model_to_record(m, r, REC_COPY) == 0);
    record *back = roundtrip(r);
    if (!back)
        return;
    const char *arch;
    int64_t v;
    CHECK(rec_get_str(back, "arch", &arch) == 0 && !strcmp(arch, "resnet8"));
    CHECK(rec_get_int(back, "feat_dim", &v) == 0 && v == 512);
    CHECK(rec_find(back, "layer2.0.downsample.1.num_batches_tracked") != NULL);
    model *m2 = model_from_record(back);
    CHECK_MSG(m2 != NULL, "%s", err_msg());
    if (m2) {
        CHECK(m2->n_total == m->n_total && m2->feat_dim == 512);
        CHECK(!memcmp(m2->params, m->params, sizeof(float) * m->n_total));
        CHECK(m2->num_batches_tracked == 17);
    }
    /* a proj record into a plain ResNet-8: rejected, naming what differs (meta.proj_dim) */
    model *plain = make("resnet8", 10, 0, 0);
    float keep = plain->params[0];
    CHECK(model_load_record(plain, back) == ERR_FORMAT);
    fprintf(stderr, "expected rejection: %s\n", err_msg());
    CHECK(strstr(err_msg(), "fc.weight") || strstr(err_msg(), "proj"));
    CHECK(plain->params[0] == keep); /* unchanged on failure */
    /* a plain record into a proj model: meta.proj_dim 0 (else the missing proj.weight) */
    record *rp = rec_new("model");
    model_to_record(plain, rp, REC_BORROW);
    CHECK(model_load_record(m, rp) == ERR_FORMAT);
    fprintf(stderr, "expected rejection: %s\n", err_msg());
    CHECK(strstr(err_msg(), "proj") != NULL);
    /* resnet50 record metadata vs resnet8 */
    rec_set_str(rp, "arch", "resnet50");
    CHECK(model_from_record(rp) == NULL);
    fprintf(stderr, "expected rejection: %s\n", err_msg());
    /* a wrong dtype */
    record *bad = rec_new("model");
    model_to_record(plain, bad, REC_COPY);
    rec_remove(bad, "layer1.0.bn1.bias");
    int64_t sh[1] = {64};
    rec_add_new(bad, "layer1.0.bn1.bias", DT_F16, 1, sh);
    CHECK(model_load_record(plain, bad) == ERR_FORMAT && strstr(err_msg(), "layer1.0.bn1.bias"));
    fprintf(stderr, "expected rejection: %s\n", err_msg());
    rec_free(bad);
    rec_free(rp);
    rec_free(r);
    rec_free(back);
    model_free(plain);
    model_free(m2);
    model_free(m);
}

static void test_batches(void)
{
    model *m = make("resnet8", 10, 0, 0);
    if (!m)
        return;
    pool_set_threads(2);
    const int n = 5, sz = 3 * 32 * 32;
    float *x = malloc(sizeof(float) * n * sz);
    rng r;
    rng_init(&r, 3, "x", 0, 0);
    for (int i = 0; i < n * sz; i++)
        x[i] = (float)rng_normal(&r);
    float full[50], part[20];
    memcpy(full, model_forward(m, x, n, 0), sizeof full);
    memcpy(part, model_forward(m, x + 3 * sz, 2, 0), sizeof part); /* a smaller batch */
    double e = 0;
    for (int i = 0; i < 20; i++)
        e = fmax(e, fabs(part[i] - full[30 + i]));
    CHECK(e < 1e-5);
    /* determinism: two identical training steps from the same state give identical bits */
    record *snap = rec_new("model");
    model_to_record(m, snap, REC_COPY);
    int32_t lab[5] = {0, 1, 2, 3, 4};
    float *after = malloc(sizeof(float) * m->n_total);
    for (int k = 0; k < 2; k++) {
        CHECK(model_load_record(m, snap) == 0);
        model_zero_grad(m);
        float loss;
        CHECK(model_train_step_grads(m, x, lab, NULL, n, 3, 1, &loss) == 0);
        CHECK(isfinite(loss));
        model_sgd_step(m, 0.1f, 0.0f, 0.0f);
        if (k == 0)
            memcpy(after, m->params, sizeof(float) * m->n_total);
        else
            CHECK(!memcmp(after, m->params, sizeof(float) * m->n_total));
    }
    CHECK(model_backward_features(m, model_features(m)) == 0);
    free(after);
    rec_free(snap);
    free(x);
    model_free(m);
}

/* model_check_record: each bad value refused (ERR_FORMAT) naming the field and index; the
 * clean record passes; a meta claiming a far larger network than its tensors is refused
 * before its slabs are allocated */
static void test_values(void)
{
    model *m = make("resnet8", 10, 0, 0);
    record *r = rec_new("model");
    CHECK(model_to_record(m, r, REC_COPY) == 0 && rec_set_int(r, "round", 3) == 0);
    CHECK_MSG(model_check_record(r) == 0, "%s", err_msg());
    float *w = (float *)rec_find(r, "layer1.0.conv2.weight")->data; /* [64,64,3,3] */
    w[9 * 64 + 4] = NAN;                                              /* [1,0,1,1] */
    CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "layer1.0.conv2.weight[1,0,1,1]: nan"));
    w[9 * 64 + 4] = 0;
    float *var = (float *)rec_find(r, "bn1.running_var")->data;
    var[5] = -1e-3f;
    CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "bn1.running_var[5]"));
    var[5] = INFINITY;
    CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "bn1.running_var[5]: inf"));
    var[5] = 1;
    CHECK(model_check_record(r) == 0);
    double sd[3] = {0.2, 0, 0.2};
    rec_set_floats(r, "std", sd, 3);
    CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "meta.std[1]"));
    sd[1] = 0.2;
    rec_set_floats(r, "std", sd, 3);
    const int64_t bad_rounds[] = {-1, (int64_t)MODEL_ROUND_MAX + 1, INT64_MAX};
    for (int k = 0; k < 3; k++) {
        rec_set_int(r, "round", bad_rounds[k]);
        CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "meta.round"));
    }
    rec_set_int(r, "round", MODEL_ROUND_MAX);
    CHECK(model_check_record(r) == 0);
    rec_set_int(r, "num_samples", -2);
    CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "meta.num_samples"));
    rec_set_int(r, "num_samples", 5);
    rec_set_int(r, "num_classes", 11);
    CHECK(model_check_record(r) == ERR_FORMAT && strstr(err_msg(), "fc."));
    CHECK(model_from_record(r) == NULL);
    rec_set_int(r, "num_classes", 10);
    rec_set_int(r, "width", 4096);
    rec_set_int(r, "depth", 9998);
    CHECK(model_check_record(r) == 0); /* in range, but not what the tensors are: */
    CHECK(model_from_record(r) == NULL && err_last() == ERR_FORMAT && strstr(err_msg(), "conv1.weight"));
    fprintf(stderr, "expected rejection: %s\n", err_msg());
    rec_free(r);
    model_free(m);
}

int main(void)
{
    test_layout_init();
    test_records();
    test_values();
    test_batches();
    TEST_MAIN_END();
}
