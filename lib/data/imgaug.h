/* imgaug.h - ImageNet-style preprocessing of 8-bit planar RGB images (docs/algorithms.md 1.5), bit
 * for bit what torchvision's transforms do on PIL images with the Pillow the fixtures were
 * made with (tests/fixtures_imgaug.py, Pillow 9.4):
 *   eval:  Resize(R) (shorter side to R = 256/224 * size, BILINEAR), CenterCrop(size)
 *   train: RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3), BILINEAR),
 *          RandomHorizontalFlip(0.5), ColorJitter(0.4, 0.4, 0.4, 0)
 * The resampler is Pillow's two-pass fixed-point one (Image.resize with an optional box):
 * horizontal pass then vertical, 22-bit coefficients, each pass rounded and clipped to
 * uint8; BILINEAR (triangle, support 1) and BICUBIC (a = -0.5, support 2; CLIP's).
 * Colour ops are PIL's ImageEnhance (Image.blend with a float alpha, truncated/clipped to
 * uint8; grey = convert("L"), (19595 R + 38470 G + 7471 B + 2^15) >> 16).
 * Randomness comes from the caller's rng (not torch's generator: same distributions, other
 * numbers).  Images are (3, h, w) uint8 unless a function says otherwise.
 * Also here: CIFAR's RandomCrop(32, padding=4) + RandomHorizontalFlip on normalised float
 * batches (the last section).
 * Not here: decoding (image.h), normalisation to floats (shard.h). */
#ifndef FEDSM_IMGAUG_H
#define FEDSM_IMGAUG_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

typedef enum { IMGAUG_BILINEAR = 0, IMGAUG_BICUBIC = 1 } imgaug_filter;

/* Pillow's im.resize((ow, oh), filter, box=box).  out: (3, oh, ow); chw: (3, h, w);
 * box: {x0, y0, x1, y1} in source pixels (floats, as Pillow), NULL for the whole image.
 * 0, ERR_USAGE (bad sizes or box) or ERR_INTERNAL (out of memory). */
int imgaug_resize(uint8_t *out, const uint8_t *chw, int h, int w, int oh, int ow,
                  const double *box, imgaug_filter f);

/* torchvision Resize(resize) (shorter side to resize, the other int(resize * long / short))
 * then CenterCrop(size) (offsets int(round((len - size) / 2)), half to even).  Needs
 * size <= resize.  out: (3, size, size).  0 or a negative error. */
int imgaug_resize_center_crop(uint8_t *out, const uint8_t *chw, int h, int w, int resize,
                              int size, imgaug_filter f);

/* The eval Resize for a crop of size: round(size * 256 / 224) (256 for 224, 37 for 32). */
int imgaug_eval_resize(int size);

/* A crop box: rows [top, top + h), columns [left, left + w). */
typedef struct imgaug_box {
    int top, left, h, w;
} imgaug_box;

/* torchvision RandomResizedCrop.get_params for an h x w image, scale (0.08, 1), ratio
 * (3/4, 4/3): up to 10 draws of (area fraction uniform, log-ratio uniform), the first box
 * that fits wins (offsets uniform); else the center crop clamped to the ratio range.
 * Returns 1 when it fell back to the center crop, else 0. */
int imgaug_rrc_box(rng *r, int h, int w, imgaug_box *b);

/* PIL convert("L"): gray (hw) from chw (3, hw). */
void imgaug_grayscale(uint8_t *gray, const uint8_t *chw, size_t hw);
/* ImageEnhance.Brightness/Contrast/Color(im).enhance(factor), in place on img (3, hw).
 * saturation needs hw bytes of scratch (gray). */
void imgaug_brightness(uint8_t *img, size_t hw, double factor);
void imgaug_contrast(uint8_t *img, size_t hw, double factor);
void imgaug_saturation(uint8_t *img, uint8_t *gray, size_t hw, double factor);
/* Mirrors img (3, h, w) left-right in place. */
void imgaug_hflip(uint8_t *img, int h, int w);

/* The eval transform up to the crop: out (3, size, size). 0 or a negative error. */
int imgaug_eval(uint8_t *out, const uint8_t *chw, int h, int w, int size);
/* The train transform: out (3, size, size).  Draws from r in torchvision's order: crop box,
 * flip (uniform < 0.5), the order of the three jitter ops (a permutation), then the
 * brightness, contrast and saturation factors (uniform in [0.6, 1.4]).  gray: size*size
 * bytes of scratch.  0 or a negative error. */
int imgaug_train(uint8_t *out, uint8_t *gray, const uint8_t *chw, int h, int w, int size,
                 rng *r);

/* ---- CIFAR crop and flip (applied to normalised float images; no backward) ---- */
/* One image: out (C, H, W) = crop of in (C, H, W) zero-padded by pad on each side, taken
 * at offset (dy, dx) in [0, 2 pad], then mirrored left-right when flip. out != in. */
void imgaug_crop_flip(float *out, const float *in, int c, int h, int w, int pad, int dy, int dx,
                      int flip);
/* RandomCrop(H, padding=pad) + RandomHorizontalFlip(0.5) on a batch (N, C, H, W).
 * per_sample == 0: one offset and one flip for the whole batch (the reference code:
 * torchvision on a 4-D tensor); != 0: drawn per image.  Draw order per draw: dy, dx
 * (rng_below(2 pad + 1)), then flip (rng_uniform < 0.5).  out != in. */
void imgaug_random_crop_flip(float *out, const float *in, int n, int c, int h, int w, int pad,
                             int per_sample, rng *r);

#endif
