/* shard.h - a client's (or the test set's) images and labels, as written by `partition`
 * (kind `shard`: tensors images |u1 [N,3,H,W], labels <i4|<i8 [N], index <i8 [N]; meta
 * classes, client, dataset), and the batch gathering every trainer needs: pick rows,
 * scale to [0,1] and normalise with a mean/std per channel.
 * Not here: augmentation (nn.h), models (model.h).  Encoded (JPEG) shards are not read
 * yet: shard_load says so. */
#ifndef FEDSM_SHARD_H
#define FEDSM_SHARD_H

#include "endpoint.h"

typedef struct shard {
    record *rec;            /* owns the tensors below */
    int64_t n;              /* samples */
    int c, h, w;            /* image shape */
    const uint8_t *images;  /* (n, c, h, w) */
    int32_t *labels;        /* (n), owned copy as int32 */
    const int64_t *index;   /* (n) position in the source dataset */
    int num_classes;        /* len(meta.classes) */
    int64_t client;         /* meta.client (-1 for the test set) */
} shard;

/* Reads one shard record from spec and checks it: labels in [0, num_classes), shapes
 * consistent.  Returns owned or NULL (err_msg). */
shard *shard_load(const char *spec, const ep_opts *o);
void shard_free(shard *s); /* NULL-safe */

/* The shard fits a model taking `classes` classes and (c, h, w) images: 0, or ERR_FORMAT
 * naming the shard (`name`) and both sides. */
int shard_check_fits(const shard *s, const char *name, int classes, int c, int h, int w);
/* out (n, c, h, w) = (images[rows[i]] / 255 - mean) / std.  rows: (n) indices into s. */
void shard_gather(float *out, const shard *s, const int64_t *rows, int n, const float *mean,
                  const float *std);
/* Reads 3 floats from meta key (e.g. "mean") of r into v; ERR_FORMAT when absent/bad. */
int meta_get_vec3(const record *r, const char *key, float v[3]);

#endif
