/* test_model_torch.c - ResNet-8 (with and without proj, CE and CE+KD) and ResNet-50 (64x64,
 * 2 images) against PyTorch 1.13: forward logits and features, loss, every parameter
 * gradient, BN running stats after the step, and one SGD step (lr 0.1, momentum 0.9, wd 5e-4),
 * in train and eval mode.  Fixtures: the .bin files in tests/fixtures/nn, from
 * tests/fixtures_nn.py, whose deterministic weight pattern fx_value() is mirrored here.
 *
 * Each case runs with one conv algorithm (implicit GEMM, im2col + OpenBLAS, Winograd F(2x2,
 * 3x3)) at 1 or 2 threads.
 * Error measure per tensor: max |c - torch| / max |torch| (over the stored values: the whole
 * tensor, or 1024 samples plus the L2 norm for big tensors).  Tolerance 1e-4. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "model.h"
#include "nn.h"
#include "pool.h"
#include "testlib.h"

#define TOL 1e-4
#define SAMPLES 1024
#define FULL_MAX 4096

/* ---- fixture file ---- */
typedef struct entry {
    char name[160];
    uint64_t n;
    float *v;
} entry;
typedef struct fixture {
    entry *e;
    int n;
} fixture;

static int fx_load(fixture *f, const char *path)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    char magic[4];
    if (fread(magic, 1, 4, fp) != 4 || memcmp(magic, "FXT1", 4)) {
        fclose(fp);
        return -1;
    }
    uint32_t len;
    while (fread(&len, 4, 1, fp) == 1) {
        f->e = realloc(f->e, sizeof *f->e * (f->n + 1));
        entry *e = &f->e[f->n++];
        if (len >= sizeof e->name || fread(e->name, 1, len, fp) != len)
            break;
        e->name[len] = 0;
        if (fread(&e->n, 8, 1, fp) != 1)
            break;
        e->v = malloc(sizeof(float) * (e->n ? e->n : 1));
        if (fread(e->v, 4, e->n, fp) != e->n)
            break;
    }
    fclose(fp);
    return 0;
}

static const entry *fx_get(const fixture *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name))
            return &f->e[i];
    return NULL;
}

static void fx_free(fixture *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->e[i].v);
    free(f->e);
}

/* ---- the deterministic pattern of tests/fixtures_nn.py ---- */
static uint32_t fnv1a32(const char *s)
{
    uint32_t h = 0x811C9DC5u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x01000193u;
    }
    return h;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static void fx_value(float *out, const char *name, int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    double scale, off = 0;
    if (!strcmp(name, "input") || !strcmp(name, "teacher"))
        scale = 2.0;
    else if (ndim == 4)
        scale = sqrt(6.0 / (double)(shape[0] * shape[2] * shape[3]));
    else if (ndim == 2)
        scale = 1.0 / sqrt((double)shape[1]);
    else if (ends_with(name, "running_var"))
        scale = 0.25, off = 1.0;
    else if (ends_with(name, "running_mean"))
        scale = 0.1;
    else if (!strcmp(name, "fc.bias") || !strcmp(name, "proj.bias"))
        scale = 0.05;
    else if (ends_with(name, "bn3.weight"))
        scale = 0.02, off = 0.1;
    else if (ends_with(name, "weight"))
        scale = 0.2, off = 1.0;
    else
        scale = 0.1;
    uint32_t h = fnv1a32(name);
    for (size_t i = 0; i < n; i++) {
        uint32_t x = (uint32_t)((uint64_t)i * 0x9E3779B1u + h);
        x ^= x >> 15;
        x *= 0x2C1B3C6Du;
        x ^= x >> 12;
        x *= 0x297A2D39u;
        x ^= x >> 15;
        double u = (double)((int64_t)(x >> 8) - (1 << 23)) * (1.0 / 8388608.0);
        double v = u * scale;
        v = v + off;
        out[i] = (float)v;
    }
}

/* ---- comparison ---- */
static double worst_all;

/* Compares c[0..n) with the fixture entry name (full, or norm + samples). Returns the error. */
static double compare(const fixture *f, const char *name, const float *c, size_t n)
{
    char key[200];
    double err = 0;
    const entry *e = fx_get(f, name);
    if (e) {
        CHECK_MSG(e->n == n, "%s: %llu values in the fixture, %zu here", name,
                  (unsigned long long)e->n, n);
        double mx = 0, d = 0;
        for (size_t i = 0; i < n && i < e->n; i++) {
            mx = fmax(mx, fabs(e->v[i]));
            d = fmax(d, fabs((double)c[i] - e->v[i]));
        }
        err = d / fmax(mx, 1e-30);
    } else {
        snprintf(key, sizeof key, "%s.norm", name);
        const entry *en = fx_get(f, key);
        snprintf(key, sizeof key, "%s.sample", name);
        const entry *es = fx_get(f, key);
        CHECK_MSG(en && es && n > FULL_MAX, "%s: missing from the fixture", name);
        if (!en || !es)
            return 1;
        double s2 = 0;
        for (size_t i = 0; i < n; i++)
            s2 += (double)c[i] * c[i];
        err = fabs(sqrt(s2) - en->v[0]) / fmax(en->v[0], 1e-30);
        size_t step = n / SAMPLES;
        double mx = 0, d = 0;
        for (size_t j = 0; j < SAMPLES; j++) {
            size_t idx = (j * n) / SAMPLES + (j * 7919) % step;
            mx = fmax(mx, fabs(es->v[j]));
            d = fmax(d, fabs((double)c[idx] - es->v[j]));
        }
        err = fmax(err, d / fmax(mx, 1e-30));
    }
    CHECK_MSG(err <= TOL, "%s: max relative error %.3g > %.1g", name, err, TOL);
    if (getenv("FX_VERBOSE"))
        fprintf(stderr, "  %-40s %.3g\n", name, err);
    worst_all = fmax(worst_all, err);
    return err;
}

typedef struct tcase {
    const char *file, *arch;
    int classes, proj, size, n, train, kd, sgd, threads;
    int algo; /* conv algorithm: IGEMM (0, the implicit GEMM), BLAS or WINO (below) */
} tcase;

enum { IGEMM = 0, BLAS = 1, WINO = 2 };
static const char *algo_name(int algo)
{
    return algo == BLAS ? " blas" : algo == WINO ? " winograd" : "";
}

static void run_case(const tcase *tc)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/nn/%s", tc->file);
    fixture f;
    if (fx_load(&f, path) < 0) {
        CHECK_MSG(0, "cannot read %s (run from the repository root)", path);
        return;
    }
    pool_set_threads(tc->threads);
    static const int algos[] = {NN_CONV_IGEMM, NN_CONV_BLAS, NN_CONV_WINOGRAD};
    nn_set_conv_algo(algos[tc->algo]);
    model_config cfg;
    CHECK(model_config_default(&cfg, tc->arch) == 0);
    cfg.num_classes = tc->classes;
    cfg.proj_dim = tc->proj;
    cfg.input_size = tc->size;
    model *m = model_new(&cfg);
    CHECK_MSG(m != NULL, "%s", err_msg());
    if (!m) {
        fx_free(&f);
        return;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        fx_value(m->params + t->offset, t->name, t->ndim, t->shape);
    }
    const int n = tc->n, C = tc->classes;
    int64_t xs[4] = {n, 3, tc->size, tc->size}, ts[2] = {n, C};
    float *x = malloc(sizeof(float) * n * 3 * tc->size * tc->size);
    float *teacher = malloc(sizeof(float) * n * C);
    float *probs = malloc(sizeof(float) * n * C), *dl = calloc((size_t)n * C, sizeof(float));
    int32_t *labels = malloc(sizeof(int32_t) * n);
    fx_value(x, "input", 4, xs);
    fx_value(teacher, "teacher", 2, ts);
    for (int i = 0; i < n * C; i++)
        teacher[i] *= 4.0f;
    for (int i = 0; i < n; i++)
        labels[i] = (7 * i + 3) % C;

    model_zero_grad(m);
    const float *logits = model_forward(m, x, n, tc->train);
    CHECK(logits != NULL);
    float loss = nn_cross_entropy_forward(probs, logits, labels, n, C);
    nn_cross_entropy_backward(dl, probs, labels, n, C, 1.0f);
    if (tc->kd) {
        loss += nn_kd_forward(logits, teacher, n, C, 3.0f, 1.0f);
        nn_kd_backward(dl, logits, teacher, n, C, 3.0f, 1.0f);
    }
    CHECK(model_backward(m, dl) == 0);

    worst_all = 0;
    double e_out = compare(&f, "loss", &loss, 1);
    e_out = fmax(e_out, compare(&f, "logits", logits, (size_t)n * C));
    e_out = fmax(e_out, compare(&f, "features", model_features(m), (size_t)n * m->feat_dim));
    double e_grad = 0, e_run = 0, e_sgd = 0;
    char key[200];
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        if (t->buffer) {
            snprintf(key, sizeof key, "after.%s", t->name);
            e_run = fmax(e_run, compare(&f, key, m->params + t->offset, t->numel));
        } else {
            snprintf(key, sizeof key, "grad.%s", t->name);
            e_grad = fmax(e_grad, compare(&f, key, m->grads + t->offset, t->numel));
        }
    }
    if (tc->sgd) {
        model_sgd_step(m, 0.1f, 0.9f, 5e-4f);
        for (int i = 0; i < m->n_tensors; i++) {
            const model_tensor *t = &m->tensors[i];
            if (t->buffer)
                continue;
            snprintf(key, sizeof key, "sgd.%s", t->name);
            e_sgd = fmax(e_sgd, compare(&f, key, m->params + t->offset, t->numel));
        }
    }
    fprintf(stderr,
            "%-28s threads %d%s: max rel err: outputs %.2e, grads %.2e (%d tensors), running stats "
            "%.2e, sgd %.2e\n",
            tc->file, tc->threads, algo_name(tc->algo), e_out, e_grad, m->n_tensors, e_run,
            e_sgd);
    free(x);
    free(teacher);
    free(probs);
    free(dl);
    free(labels);
    model_free(m);
    fx_free(&f);
}

int main(void)
{
    static const tcase cases[] = {
        {"resnet8_train.bin", "resnet8", 10, 0, 32, 4, 1, 0, 1, 1, 0},
        {"resnet8_train.bin", "resnet8", 10, 0, 32, 4, 1, 0, 1, 2, 0},
        {"resnet8_eval.bin", "resnet8", 10, 0, 32, 4, 0, 0, 0, 2, 0},
        {"resnet8_proj_kd_train.bin", "resnet8", 10, 512, 32, 3, 1, 1, 0, 2, 0},
        {"resnet50_train.bin", "resnet50", 10, 0, 64, 2, 1, 0, 1, 2, 0},
        {"resnet50_eval.bin", "resnet50", 10, 0, 64, 2, 0, 0, 0, 1, 0},
        {"resnet8_train.bin", "resnet8", 10, 0, 32, 4, 1, 0, 1, 2, BLAS},
        {"resnet50_eval.bin", "resnet50", 10, 0, 64, 2, 0, 0, 0, 2, BLAS},
        {"resnet8_train.bin", "resnet8", 10, 0, 32, 4, 1, 0, 1, 1, WINO},
        {"resnet8_train.bin", "resnet8", 10, 0, 32, 4, 1, 0, 1, 2, WINO},
        {"resnet8_eval.bin", "resnet8", 10, 0, 32, 4, 0, 0, 0, 2, WINO},
        {"resnet8_proj_kd_train.bin", "resnet8", 10, 512, 32, 3, 1, 1, 0, 2, WINO},
        {"resnet50_train.bin", "resnet50", 10, 0, 64, 2, 1, 0, 1, 2, WINO},
        {"resnet50_eval.bin", "resnet50", 10, 0, 64, 2, 0, 0, 0, 1, WINO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
    TEST_MAIN_END();
}
