/* shard.c - loading and batching shard records (see shard.h). */
#include "shard.h"

#include "err.h"

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
        err_set(ERR_FORMAT, "%s holds encoded (JPEG) images; this tool reads decoded shards only",
                spec);
        goto fail;
    }
    const tensor *im = rec_get(r, "images", DT_U8, 4, NULL);
    if (!im)
        goto fail;
    s->n = im->shape[0];
    s->c = (int)im->shape[1];
    s->h = (int)im->shape[2];
    s->w = (int)im->shape[3];
    s->images = im->data;
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
    if (s->c != c || s->h != h || s->w != w)
        return err_set(ERR_FORMAT, "shard %s holds %dx%dx%d images but the model takes %dx%dx%d",
                       name, s->c, s->h, s->w, c, h, w);
    return 0;
}

void shard_gather(float *out, const shard *s, const int64_t *rows, int n, const float *mean,
                  const float *std)
{
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
    }
    return 0;
}
