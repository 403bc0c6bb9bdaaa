/* shard.c - loading and batching shard records, decoded and encoded (see shard.h). */
#include "shard.h"

#include "err.h"
#include "image.h"
#include "imgaug.h"
#include "pool.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void shard_free(shard *s)
{
    if (!s)
        return;
    rec_free(s->rec);
    free(s->labels);
    free(s);
}

/* Encoded storage: n from the labels, N + 1 offsets rising from 0 to len(jpeg), and each
 * image starting with JPEG or PNG magic bytes (so bad offsets fail here, not mid-run). */
static int load_encoded(shard *s, const char *spec)
{
    const record *r = s->rec;
    const tensor *jp = rec_get(r, "jpeg", DT_U8, 1, NULL);
    if (!jp)
        return err_last();
    const tensor *lb = rec_find(r, "labels");
    if (!lb || lb->ndim != 1)
        return err_set(ERR_FORMAT,
                       "bad tensor (stream %s, record 0, field tensors.labels): an encoded shard "
                       "needs a 1-D labels tensor",
                       spec);
    s->n = lb->shape[0];
    const tensor *of = rec_get(r, "offsets", DT_I64, 1, (int64_t[]){s->n + 1});
    if (!of)
        return err_last();
    const int64_t *off = of->data;
    int64_t nb = jp->shape[0];
    for (int64_t i = 0; i <= s->n; i++) {
        int64_t prev = i ? off[i - 1] : 0;
        if ((i == 0 && off[0] != 0) || off[i] < prev || off[i] > nb || (i == s->n && off[i] != nb))
            return err_set(ERR_FORMAT,
                           "bad offsets (stream %s, record 0, field tensors.offsets[%lld]): %lld "
                           "after %lld; offsets must rise from 0 to len(jpeg) = %lld",
                           spec, (long long)i, (long long)off[i], (long long)prev, (long long)nb);
    }
    const uint8_t *b = jp->data;
    for (int64_t i = 0; i < s->n; i++)
        if (image_sniff(b + off[i], (size_t)(off[i + 1] - off[i])) == IMAGE_UNKNOWN)
            return err_set(ERR_FORMAT,
                           "bad image (stream %s, record 0, field tensors.jpeg[%lld:%lld]): "
                           "sample %lld is neither JPEG nor PNG",
                           spec, (long long)off[i], (long long)off[i + 1], (long long)i);
    s->bytes = b;
    s->offsets = off;
    s->c = 3;
    return 0;
}

shard *shard_load(const char *spec, const ep_opts *o)
{
    shard *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->rec = ep_read_one(spec, "shard", o);
    if (!s->rec)
        goto fail;
    record *r = s->rec;
    if (!rec_find(r, "images") && rec_find(r, "jpeg")) {
        if (load_encoded(s, spec))
            goto fail;
    } else {
        const tensor *im = rec_get(r, "images", DT_U8, 4, NULL);
        if (!im)
            goto fail;
        s->n = im->shape[0];
        s->c = (int)im->shape[1];
        s->h = (int)im->shape[2];
        s->w = (int)im->shape[3];
        s->images = im->data;
    }
    if (s->n == 0) { /* nothing to train or test on: refused here, before any NaN mean */
        err_set(ERR_FORMAT, "empty shard (stream %s, record 0, field tensors.labels): no samples",
                spec);
        goto fail;
    }
    int64_t shp[1] = {s->n};
    const tensor *ix = rec_get(r, "index", DT_I64, 1, shp);
    if (!ix)
        goto fail;
    s->index = ix->data;
    const tensor *lb = rec_find(r, "labels");
    if (!lb || (lb->dtype != DT_I32 && lb->dtype != DT_I64)) {
        rec_get(r, "labels", DT_I32, 1, shp); /* for the message */
        goto fail;
    }
    if (!rec_get(r, "labels", lb->dtype, 1, shp))
        goto fail;
    const char **names = NULL;
    size_t nc = 0;
    if (rec_get_strs(r, "classes", &names, &nc))
        goto fail;
    free(names);
    if (nc == 0 || nc > 1000000) {
        err_set(ERR_FORMAT, "bad meta (stream %s, record 0, field meta.classes): %zu classes",
                spec, nc);
        goto fail;
    }
    s->num_classes = (int)nc;
    s->client = -1;
    if (rec_opt_int(r, "client", &s->client))
        goto fail;
    float ms[3];
    if (mv_map_get(r->meta, "std") && meta_get_vec3(r, "std", ms))
        goto fail;
    for (int c = 0; mv_map_get(r->meta, "std") && c < 3; c++)
        if (!(ms[c] > 0)) {
            err_set(ERR_FORMAT, "bad meta (stream %s, record 0, field meta.std[%d]): %g (a std is "
                    "> 0)", spec, c, ms[c]);
            goto fail;
        }
    if (mv_map_get(r->meta, "mean") && meta_get_vec3(r, "mean", ms))
        goto fail;
    if (s->client < -1 || s->client > INT32_MAX) {
        err_set(ERR_FORMAT, "bad meta (stream %s, record 0, field meta.client): %lld is not a "
                "client id (0 or more; -1: the test set)", spec, (long long)s->client);
        goto fail;
    }
    s->labels = malloc((size_t)(s->n ? s->n : 1) * sizeof *s->labels);
    if (!s->labels) {
        err_set(ERR_INTERNAL, "out of memory");
        goto fail;
    }
    for (int64_t i = 0; i < s->n; i++) {
        int64_t y = lb->dtype == DT_I32 ? ((const int32_t *)lb->data)[i]
                                        : ((const int64_t *)lb->data)[i];
        if (y < 0 || y >= (int64_t)nc) {
            err_set(ERR_FORMAT,
                    "bad label (stream %s, record 0, field tensors.labels[%lld]): %lld is not a "
                    "class in [0, %zu)",
                    spec, (long long)i, (long long)y, nc);
            goto fail;
        }
        s->labels[i] = (int32_t)y;
    }
    return s;
fail:
    shard_free(s);
    return NULL;
}

int shard_check_fits(const shard *s, const char *name, int classes, int c, int h, int w)
{
    if (s->num_classes != classes)
        return err_set(ERR_FORMAT, "shard %s has %d classes but the model has %d", name,
                       s->num_classes, classes);
    if (s->bytes) {
        if (c != 3)
            return err_set(ERR_FORMAT,
                           "shard %s holds encoded RGB images but the model takes %d channels",
                           name, c);
        return 0;
    }
    if (s->c != c || s->h != h || s->w != w)
        return err_set(ERR_FORMAT, "shard %s holds %dx%dx%d images but the model takes %dx%dx%d",
                       name, s->c, s->h, s->w, c, h, w);
    return 0;
}

void shard_gather(float *out, const shard *s, const int64_t *rows, int n, const float *mean,
                  const float *std)
{
    assert(s->images); /* encoded shards: shard_gather_encoded */
    size_t hw = (size_t)s->h * (size_t)s->w, img = (size_t)s->c * hw;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = s->images + (size_t)rows[i] * img;
        float *dst = out + (size_t)i * img;
        for (int c = 0; c < s->c; c++) {
            float sc = 1.0f / (255.0f * std[c % 3]), off = mean[c % 3] / std[c % 3];
            for (size_t p = 0; p < hw; p++)
                dst[c * hw + p] = (float)src[c * hw + p] * sc - off;
        }
    }
}

typedef struct gather_job {
    float *out;
    const shard *s;
    const int64_t *rows;
    int n, size;
    const uint64_t *seeds;
    const float *mean, *std;
    int bad[POOL_MAX_THREADS]; /* first failing image of each thread, n when none */
    int rc[POOL_MAX_THREADS];
    char msg[POOL_MAX_THREADS][1024];
} gather_job;

static int gather_one(const gather_job *j, int i, uint8_t *u8, uint8_t *gray)
{
    const shard *s = j->s;
    int64_t row = j->rows[i], a = s->offsets[row], b = s->offsets[row + 1];
    char name[600];
    snprintf(name, sizeof name, "bad image (stream %s, record 0, field tensors.jpeg[%lld:%lld]: sample %lld)",
             s->rec->src, (long long)a, (long long)b, (long long)row);
    image im = {0};
    int rc = image_decode(s->bytes + a, (size_t)(b - a), name, &im);
    if (rc)
        return rc;
    if (j->seeds) {
        rng r;
        rng_init(&r, j->seeds[i], "imgaug", 0, 0);
        rc = imgaug_train(u8, gray, im.chw, im.h, im.w, j->size, &r);
    } else {
        rc = imgaug_eval(u8, im.chw, im.h, im.w, j->size);
    }
    image_free(&im);
    if (rc)
        return err_wrap(rc, "%s", name);
    size_t hw = (size_t)j->size * j->size;
    float *dst = j->out + (size_t)i * 3 * hw;
    for (int c = 0; c < 3; c++) {
        float sc = 1.0f / (255.0f * j->std[c]), off = j->mean[c] / j->std[c];
        for (size_t p = 0; p < hw; p++)
            dst[c * hw + p] = (float)u8[c * hw + p] * sc - off;
    }
    return 0;
}

static void gather_task(void *ctx, int tid, int nt)
{
    gather_job *j = ctx;
    j->bad[tid] = j->n;
    size_t hw = (size_t)j->size * j->size;
    uint8_t *u8 = malloc(4 * hw);
    if (!u8) {
        j->bad[tid] = 0;
        j->rc[tid] = err_set(ERR_INTERNAL, "out of memory");
        snprintf(j->msg[tid], sizeof j->msg[tid], "%s", err_msg());
        return;
    }
    for (int i = tid; i < j->n; i += nt) { /* interleaved: image sizes vary */
        int rc = gather_one(j, i, u8, u8 + 3 * hw);
        if (rc) {
            j->bad[tid] = i;
            j->rc[tid] = rc;
            snprintf(j->msg[tid], sizeof j->msg[tid], "%s", err_msg());
            break;
        }
    }
    free(u8);
}

int shard_gather_encoded(float *out, const shard *s, const int64_t *rows, int n, int size,
                         const uint64_t *seeds, const float *mean, const float *std)
{
    assert(s->bytes);
    if (size < 1 || size > 4096)
        return err_set(ERR_USAGE, "bad image size %d", size);
    gather_job *j = calloc(1, sizeof *j);
    if (!j)
        return err_set(ERR_INTERNAL, "out of memory");
    *j = (gather_job){.out = out, .s = s, .rows = rows, .n = n, .size = size, .seeds = seeds,
                      .mean = mean, .std = std};
    pool_run(gather_task, j);
    int worst = -1;
    for (int t = 0; t < pool_threads(); t++)
        if (j->bad[t] < n && (worst < 0 || j->bad[t] < j->bad[worst]))
            worst = t;
    int rc = worst < 0 ? 0 : err_set(j->rc[worst], "%s", j->msg[worst]);
    free(j);
    return rc;
}

int meta_get_vec3(const record *r, const char *key, float v[3])
{
    const mval *m = mv_map_get(r->meta, key);
    if (!m || m->type != MV_ARRAY || m->u.arr.n != 3)
        return err_set(ERR_FORMAT, "bad meta (stream %s, record %ld, field meta.%s): expected 3 numbers",
                       r->src[0] ? r->src : r->kind, r->index, key);
    for (int i = 0; i < 3; i++) {
        const mval *e = &m->u.arr.items[i];
        if (e->type == MV_FLOAT)
            v[i] = (float)e->u.f;
        else if (e->type == MV_INT)
            v[i] = (float)e->u.i;
        else
            return err_set(ERR_FORMAT, "bad meta (stream %s, field meta.%s): not a number",
                           r->src, key);
        if (!isfinite(v[i]))
            return err_set(ERR_FORMAT, "bad meta (stream %s, record %ld, field meta.%s[%d]): %g is "
                           "not finite", r->src[0] ? r->src : r->kind, r->index, key, i, v[i]);
    }
    return 0;
}
