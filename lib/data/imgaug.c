/* imgaug.c - Pillow's resampler, torchvision's crop geometry and PIL's colour enhancers on
 * 8-bit planar RGB (see imgaug.h).  Sections: resampling, geometry, colour, transforms, CIFAR
 * crop and flip (float images). */
#include "imgaug.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- resampling: Pillow's ImagingResample for 8-bit images ---- */

#define PREC_BITS 22 /* Pillow: 32 - 8 - 2 */

static double filter_bilinear(double x)
{
    if (x < 0)
        x = -x;
    return x < 1 ? 1 - x : 0;
}

static double filter_bicubic(double x)
{
    const double a = -0.5;
    if (x < 0)
        x = -x;
    if (x < 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

typedef struct coeffs {
    int ksize;
    int *bounds; /* (out, 2): first input index, count */
    int32_t *k;  /* (out, ksize) fixed point */
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->k);
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc: output pixel xx of out_size reads
 * input [bounds[2xx], +bounds[2xx+1]) of in_size around in0 + (xx + 0.5) * scale. */
static int coeffs_make(coeffs *c, int in_size, double in0, double in1, int out_size,
                       imgaug_filter f)
{
    double support0 = f == IMGAUG_BICUBIC ? 2.0 : 1.0;
    double (*fn)(double) = f == IMGAUG_BICUBIC ? filter_bicubic : filter_bilinear;
    double scale = (in1 - in0) / out_size, fscale = scale < 1 ? 1 : scale;
    double support = support0 * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = malloc((size_t)out_size * ksize * sizeof *kk);
    c->k = malloc((size_t)out_size * ksize * sizeof *c->k);
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    c->ksize = ksize;
    if (!kk || !c->k || !c->bounds) {
        free(kk);
        coeffs_free(c);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0, ss = 1.0 / fscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double *k = kk + (size_t)xx * ksize;
        int x = 0;
        for (; x < xmax; x++) {
            k[x] = fn((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    for (size_t q = 0; q < (size_t)out_size * ksize; q++)
        c->k[q] = (int32_t)(kk[q] < 0 ? -0.5 + kk[q] * (1 << PREC_BITS)
                                      : 0.5 + kk[q] * (1 << PREC_BITS));
    free(kk);
    return 0;
}

static inline uint8_t clip8(int32_t v)
{
    v >>= PREC_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Pillow's ImagingResampleInner on 3 planes of an (h, w) window of a larger image: in
 * points at the window's top-left pixel of plane 0, rows are stride bytes apart and planes
 * plane bytes apart.  out: (3, oh, ow). */
static int resample(uint8_t *out, const uint8_t *in, size_t plane, int stride, int h, int w,
                    int oh, int ow, const double box[4], imgaug_filter f)
{
    int need_h = ow != w || box[0] != 0 || box[2] != w;
    int need_v = oh != h || box[1] != 0 || box[3] != h;
    coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    int rc;
    if ((rc = coeffs_make(&ch, w, box[0], box[2], ow, f)) ||
        (rc = coeffs_make(&cv, h, box[1], box[3], oh, f)))
        goto done;
    /* rows of the source the vertical pass reads */
    int y0 = cv.bounds[0], y1 = cv.bounds[2 * oh - 2] + cv.bounds[2 * oh - 1];
    const uint8_t *src = in;
    size_t splane = plane;
    int sstride = stride;
    if (need_h) {
        int th = y1 - y0;
        for (int y = 0; y < oh; y++)
            cv.bounds[2 * y] -= y0;
        tmp = malloc((size_t)3 * th * ow);
        if (!tmp) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            goto done;
        }
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < th; y++) {
                const uint8_t *row = in + (size_t)c * plane + (size_t)(y + y0) * stride;
                uint8_t *o = tmp + ((size_t)c * th + y) * ow;
                for (int x = 0; x < ow; x++) {
                    int32_t ss = 1 << (PREC_BITS - 1);
                    const int32_t *kx = ch.k + (size_t)x * ch.ksize;
                    const uint8_t *p = row + ch.bounds[2 * x];
                    for (int q = 0, n = ch.bounds[2 * x + 1]; q < n; q++)
                        ss += p[q] * kx[q];
                    o[x] = clip8(ss);
                }
            }
        src = tmp;
        splane = (size_t)th * ow;
        sstride = ow;
        h = th;
    }
    if (need_v) {
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < oh; y++) {
                const int32_t *ky = cv.k + (size_t)y * cv.ksize;
                const uint8_t *col = src + (size_t)c * splane + (size_t)cv.bounds[2 * y] * sstride;
                int n = cv.bounds[2 * y + 1];
                uint8_t *o = out + ((size_t)c * oh + y) * ow;
                for (int x = 0; x < ow; x++) {
                    int32_t ss = 1 << (PREC_BITS - 1);
                    for (int q = 0; q < n; q++)
                        ss += col[(size_t)q * sstride + x] * ky[q];
                    o[x] = clip8(ss);
                }
            }
    } else { /* copy (h == oh rows, ow columns) */
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < oh; y++)
                memcpy(out + ((size_t)c * oh + y) * ow, src + (size_t)c * splane + (size_t)y * sstride,
                       (size_t)ow);
    }
done:
    free(tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return rc;
}

int imgaug_resize(uint8_t *out, const uint8_t *chw, int h, int w, int oh, int ow,
                  const double *box, imgaug_filter f)
{
    if (h < 1 || w < 1 || oh < 1 || ow < 1 || h > 65535 || w > 65535 || oh > 65535 || ow > 65535)
        return err_set(ERR_USAGE, "bad resize %dx%d -> %dx%d", w, h, ow, oh);
    double whole[4] = {0, 0, w, h};
    if (!box)
        box = whole;
    if (!(box[0] >= 0 && box[1] >= 0 && box[2] <= w && box[3] <= h && box[2] - box[0] >= 0 &&
          box[3] - box[1] >= 0))
        return err_set(ERR_USAGE, "resize box (%g, %g, %g, %g) is not inside the %dx%d image",
                       box[0], box[1], box[2], box[3], w, h);
    return resample(out, chw, (size_t)h * w, w, h, w, oh, ow, box, f);
}

/* Python's round() of d / 2 for an integer d >= 0 (half to even). */
static int half_round_even(int d)
{
    int q = d / 2;
    return (d % 2 && q % 2) ? q + 1 : q;
}

int imgaug_resize_center_crop(uint8_t *out, const uint8_t *chw, int h, int w, int resize,
                              int size, imgaug_filter f)
{
    if (h < 1 || w < 1 || size < 1 || size > resize || h > 65535 || w > 65535)
        return err_set(ERR_FORMAT, "bad image size %dx%d (resize %d, crop %d)", w, h, resize,
                       size);
    int oh, ow; /* torchvision Resize(int): shorter side to resize, longer int(r * long / short) */
    if (h <= w) {
        oh = resize;
        ow = (int)((double)resize * w / h);
    } else {
        ow = resize;
        oh = (int)((double)resize * h / w);
    }
    if (oh > 65535 || ow > 65535)
        return err_set(ERR_FORMAT, "image %dx%d is too elongated to resize", w, h);
    uint8_t *r = malloc((size_t)3 * oh * ow);
    if (!r)
        return err_set(ERR_INTERNAL, "out of memory");
    int rc = imgaug_resize(r, chw, h, w, oh, ow, NULL, f);
    int top = half_round_even(oh - size), left = half_round_even(ow - size);
    for (int c = 0; c < 3 && !rc; c++)
        for (int y = 0; y < size; y++)
            memcpy(out + ((size_t)c * size + y) * size,
                   r + ((size_t)c * oh + y + top) * ow + left, (size_t)size);
    free(r);
    return rc;
}

int imgaug_eval_resize(int size)
{
    return (int)(((int64_t)size * 256 + 112) / 224);
}

/* ---- geometry: RandomResizedCrop.get_params ---- */

int imgaug_rrc_box(rng *r, int h, int w, imgaug_box *b)
{
    const double smin = 0.08, smax = 1.0, rmin = 3.0 / 4.0, rmax = 4.0 / 3.0;
    double area = (double)h * w, lr0 = log(rmin), lr1 = log(rmax);
    for (int t = 0; t < 10; t++) {
        double target = area * (smin + (smax - smin) * rng_uniform(r));
        double ar = exp(lr0 + (lr1 - lr0) * rng_uniform(r));
        double cw = nearbyint(sqrt(target * ar)), chh = nearbyint(sqrt(target / ar));
        if (cw > 0 && cw <= w && chh > 0 && chh <= h) {
            b->h = (int)chh;
            b->w = (int)cw;
            b->top = (int)rng_below(r, (uint64_t)(h - b->h + 1));
            b->left = (int)rng_below(r, (uint64_t)(w - b->w + 1));
            return 0;
        }
    }
    double in_ratio = (double)w / (double)h;
    if (in_ratio < rmin) {
        b->w = w;
        b->h = (int)nearbyint(w / rmin);
    } else if (in_ratio > rmax) {
        b->h = h;
        b->w = (int)nearbyint(h * rmax);
    } else {
        b->w = w;
        b->h = h;
    }
    b->top = (h - b->h) / 2;
    b->left = (w - b->w) / 2;
    return 1;
}

/* ---- colour: PIL ImageEnhance = Image.blend(degenerate, image, factor) ---- */

/* ImagingBlend: in1 + alpha (in2 - in1) in float; truncated inside [0, 1], clipped
 * outside.  (-std=c11 keeps GCC from contracting this into an FMA, as Pillow's x86-64
 * build does not either.) */
static inline uint8_t blend1(int in1, int in2, float alpha)
{
    float t = (float)in1 + alpha * (float)(in2 - in1);
    if (alpha >= 0 && alpha <= 1.0f)
        return (uint8_t)t;
    return t <= 0.0f ? 0 : t >= 255.0f ? 255 : (uint8_t)t;
}

void imgaug_grayscale(uint8_t *gray, const uint8_t *chw, size_t hw)
{
    const uint8_t *r = chw, *g = chw + hw, *b = chw + 2 * hw;
    for (size_t p = 0; p < hw; p++)
        gray[p] = (uint8_t)(((uint32_t)r[p] * 19595 + (uint32_t)g[p] * 38470 +
                             (uint32_t)b[p] * 7471 + 0x8000) >> 16);
}

void imgaug_brightness(uint8_t *img, size_t hw, double factor)
{
    float a = (float)factor;
    for (size_t p = 0; p < 3 * hw; p++)
        img[p] = blend1(0, img[p], a);
}

void imgaug_contrast(uint8_t *img, size_t hw, double factor)
{
    /* ImageStat mean of the L image, rounded: int(sum / count + 0.5) */
    const uint8_t *r = img, *g = img + hw, *b = img + 2 * hw;
    uint64_t sum = 0;
    for (size_t p = 0; p < hw; p++)
        sum += ((uint32_t)r[p] * 19595 + (uint32_t)g[p] * 38470 + (uint32_t)b[p] * 7471 + 0x8000) >>
               16;
    int mean = hw ? (int)((double)sum / (double)hw + 0.5) : 0;
    float a = (float)factor;
    for (size_t p = 0; p < 3 * hw; p++)
        img[p] = blend1(mean, img[p], a);
}

void imgaug_saturation(uint8_t *img, uint8_t *gray, size_t hw, double factor)
{
    imgaug_grayscale(gray, img, hw);
    float a = (float)factor;
    for (int c = 0; c < 3; c++)
        for (size_t p = 0; p < hw; p++)
            img[c * hw + p] = blend1(gray[p], img[c * hw + p], a);
}

void imgaug_hflip(uint8_t *img, int h, int w)
{
    for (size_t row = 0; row < (size_t)3 * h; row++) {
        uint8_t *p = img + row * w;
        for (int x = 0; x < w / 2; x++) {
            uint8_t t = p[x];
            p[x] = p[w - 1 - x];
            p[w - 1 - x] = t;
        }
    }
}

/* ---- transforms ---- */

int imgaug_eval(uint8_t *out, const uint8_t *chw, int h, int w, int size)
{
    return imgaug_resize_center_crop(out, chw, h, w, imgaug_eval_resize(size), size,
                                     IMGAUG_BILINEAR);
}

int imgaug_train(uint8_t *out, uint8_t *gray, const uint8_t *chw, int h, int w, int size,
                 rng *r)
{
    if (h < 1 || w < 1 || size < 1 || h > 65535 || w > 65535)
        return err_set(ERR_FORMAT, "bad image size %dx%d", w, h);
    imgaug_box b;
    imgaug_rrc_box(r, h, w, &b);
    /* torchvision resized_crop on PIL: crop, then resize the crop (edges clamp at the
     * crop, unlike resize(box=...), which would read the pixels around it) */
    double whole[4] = {0, 0, b.w, b.h};
    int rc = resample(out, chw + (size_t)b.top * w + b.left, (size_t)h * w, w, b.h, b.w, size,
                      size, whole, IMGAUG_BILINEAR);
    if (rc)
        return rc;
    size_t hw = (size_t)size * size;
    if (rng_uniform(r) < 0.5)
        imgaug_hflip(out, size, size);
    int32_t order[3] = {0, 1, 2};
    rng_shuffle_i32(r, order, 3);
    double fac[3];
    for (int k = 0; k < 3; k++)
        fac[k] = 0.6 + 0.8 * rng_uniform(r);
    for (int k = 0; k < 3; k++) {
        int op = order[k];
        if (op == 0)
            imgaug_brightness(out, hw, fac[0]);
        else if (op == 1)
            imgaug_contrast(out, hw, fac[1]);
        else
            imgaug_saturation(out, gray, hw, fac[2]);
    }
    return 0;
}

/* ---- CIFAR crop and flip on normalised float images ---- */

void imgaug_crop_flip(float *out, const float *in, int c, int h, int w, int pad, int dy, int dx,
                      int flip)
{
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++) {
            int sy = y + dy - pad;
            float *row = out + ((size_t)ch * h + y) * w;
            if (sy < 0 || sy >= h) {
                memset(row, 0, sizeof(float) * w);
                continue;
            }
            const float *src = in + ((size_t)ch * h + sy) * w;
            for (int x = 0; x < w; x++) {
                int cx = flip ? w - 1 - x : x; /* position in the crop before mirroring */
                int sx = cx + dx - pad;
                row[x] = (sx >= 0 && sx < w) ? src[sx] : 0.0f;
            }
        }
}

void imgaug_random_crop_flip(float *out, const float *in, int n, int c, int h, int w, int pad,
                             int per_sample, rng *r)
{
    int dy = 0, dx = 0, flip = 0;
    const size_t img = (size_t)c * h * w;
    for (int i = 0; i < n; i++) {
        if (i == 0 || per_sample) {
            dy = (int)rng_below(r, (uint64_t)(2 * pad + 1));
            dx = (int)rng_below(r, (uint64_t)(2 * pad + 1));
            flip = rng_uniform(r) < 0.5;
        }
        imgaug_crop_flip(out + i * img, in + i * img, c, h, w, pad, dy, dx, flip);
    }
}
