/* shard.h - a client's (or the test set's) images and labels, as written by `partition`
 * (kind `shard`; meta classes, client, dataset), and the batch gathering every trainer
 * needs: pick rows, scale to [0,1] and normalise with a mean/std per channel.
 * Two storages:
 *   decoded: images |u1 [N,3,H,W]: shard_gather copies rows (CIFAR; no decoding).
 *   encoded: jpeg |u1 [B] (JPEG or PNG files back to back) + offsets <i8 [N+1] (image i is
 *            jpeg[offsets[i]:offsets[i+1]]; ImageNet-LT and other image folders):
 *            shard_gather_encoded decodes each batch on the thread pool and applies the
 *            ImageNet transforms of imgaug.h (eval: Resize + CenterCrop; train:
 *            RandomResizedCrop + flip + ColorJitter) at the model's input size.  Nothing is
 *            decoded at load (115k ImageNet-LT images would not fit as pixels); shard_load
 *            checks the offsets and each image's magic bytes.
 * Both carry labels <i4|<i8 [N] and index <i8 [N].
 * Not here: CIFAR's batch crop/flip (nn.h), models (model.h), the transforms (imgaug.h). */
#ifndef FEDSM_SHARD_H
#define FEDSM_SHARD_H

#include "endpoint.h"

typedef struct shard {
    record *rec;            /* owns the tensors below */
    int64_t n;              /* samples */
    int c, h, w;            /* image shape (encoded: 3, 0, 0: sizes vary) */
    const uint8_t *images;  /* (n, c, h, w), NULL when encoded */
    const uint8_t *bytes;   /* encoded: the files back to back, NULL when decoded */
    const int64_t *offsets; /* encoded: (n + 1), image i = bytes[offsets[i]:offsets[i+1]] */
    int32_t *labels;        /* (n), owned copy as int32 */
    const int64_t *index;   /* (n) position in the source dataset */
    int num_classes;        /* len(meta.classes) */
    int64_t client;         /* meta.client (-1 for the test set) */
} shard;

/* Reads one shard record from spec and checks it: at least one sample, labels in [0,
 * num_classes), shapes consistent, meta.client -1 or more, meta.mean/std (when present)
 * finite with std > 0; encoded: N + 1 offsets rising from 0 to len(jpeg), each image starting with
 * JPEG or PNG magic bytes.  Returns owned or NULL (err_msg). */
shard *shard_load(const char *spec, const ep_opts *o);
void shard_free(shard *s); /* NULL-safe */

/* The shard fits a model taking `classes` classes and (c, h, w) images: 0, or ERR_FORMAT
 * naming the shard (`name`) and both sides.  An encoded shard fits any h, w (its images are
 * transformed to the model's size) when c is 3. */
int shard_check_fits(const shard *s, const char *name, int classes, int c, int h, int w);
/* out (n, c, h, w) = (images[rows[i]] / 255 - mean) / std.  rows: (n) indices into s.
 * Decoded shards only. */
void shard_gather(float *out, const shard *s, const int64_t *rows, int n, const float *mean,
                  const float *std);
/* Encoded shards: out (n, 3, size, size) = (transform(decode(image rows[i])) / 255 - mean)
 * / std.  seeds NULL: the eval transform; else the train transform, image i drawing from
 * rng stream (seeds[i], "imgaug", 0, 0), so results do not depend on the thread count.
 * Images are split over the thread pool (pool_run).  0, or ERR_FORMAT naming the shard,
 * the sample and the byte range of the first image that does not decode. */
int shard_gather_encoded(float *out, const shard *s, const int64_t *rows, int n, int size,
                         const uint64_t *seeds, const float *mean, const float *std);
/* Reads 3 floats from meta key (e.g. "mean") of r into v; ERR_FORMAT when absent, not 3
 * numbers, or not finite (as floats). */
int meta_get_vec3(const record *r, const char *key, float v[3]);

#endif
