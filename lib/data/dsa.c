/* dsa.c - CReFF's Siamese DSA augmentation, mode 'S' (docs/algorithms.md section 3.1).
 * What each transform does, and the draw order, are in dsa.h.  Not the local-training
 * crop/flip nor a PIL transform (both in imgaug.c). */
#include "dsa.h"

#include <math.h>
#include <string.h>

#include "err.h"

#define DSA_RATIO_SCALE 1.2
#define DSA_RATIO_ROTATE 15.0 /* degrees */
#define DSA_RATIO_CROP 0.125
#define DSA_RATIO_CUTOUT 0.5

static const char *const dsa_names[DSA_NKINDS] = {"color", "crop", "cutout", "flip", "scale", "rotate"};

const char *dsa_kind_name(int kind)
{
    return kind >= 0 && kind < DSA_NKINDS ? dsa_names[kind] : "none";
}

void dsa_draw(dsa_params *p, rng *r, int h, int w)
{
    memset(p, 0, sizeof *p);
    p->kind = (int)rng_below(r, DSA_NKINDS);
    switch (p->kind) {
    case DSA_COLOR:
        p->u_bright = (float)rng_uniform(r);
        p->u_sat = (float)rng_uniform(r);
        p->u_contrast = (float)rng_uniform(r);
        break;
    case DSA_CROP: {
        int sx = (int)(w * DSA_RATIO_CROP + 0.5), sy = (int)(h * DSA_RATIO_CROP + 0.5);
        p->tx = (int)rng_below(r, (uint64_t)(2 * sx + 1)) - sx;
        p->ty = (int)rng_below(r, (uint64_t)(2 * sy + 1)) - sy;
        break;
    }
    case DSA_CUTOUT: {
        int ch = (int)(h * DSA_RATIO_CUTOUT + 0.5), cw = (int)(w * DSA_RATIO_CUTOUT + 0.5);
        p->ox = (int)rng_below(r, (uint64_t)(w + (1 - cw % 2)));
        p->oy = (int)rng_below(r, (uint64_t)(h + (1 - ch % 2)));
        break;
    }
    case DSA_FLIP:
        p->flip = rng_uniform(r) < 0.5;
        break;
    case DSA_SCALE: {
        double lo = 1.0 / DSA_RATIO_SCALE, span = DSA_RATIO_SCALE - lo;
        p->sx = (float)(rng_uniform(r) * span + lo);
        p->sy = (float)(rng_uniform(r) * span + lo);
        break;
    }
    case DSA_ROTATE:
        p->theta = (float)((rng_uniform(r) - 0.5) * 2.0 * DSA_RATIO_ROTATE / 180.0 * M_PI);
        break;
    }
}

void dsa_color(float *out, const float *x, int n, int c, int h, int w, float u_bright, float u_sat,
               float u_contrast)
{
    size_t hw = (size_t)h * w, chw = (size_t)c * hw;
    float db = u_bright - 0.5f, ks = 2.0f * u_sat, kc = u_contrast + 0.5f;
    for (int i = 0; i < n; i++) {
        const float *xi = x + i * chw;
        float *oi = out + i * chw;
        for (size_t k = 0; k < chw; k++) /* brightness */
            oi[k] = xi[k] + db;
        for (size_t k = 0; k < hw; k++) { /* saturation: mean over channels per pixel */
            float m = 0;
            for (int ch = 0; ch < c; ch++)
                m += oi[ch * hw + k];
            m /= (float)c;
            for (int ch = 0; ch < c; ch++)
                oi[ch * hw + k] = (oi[ch * hw + k] - m) * ks + m;
        }
        double s = 0; /* contrast: mean over the whole image */
        for (size_t k = 0; k < chw; k++)
            s += oi[k];
        float m = (float)(s / (double)chw);
        for (size_t k = 0; k < chw; k++)
            oi[k] = (oi[k] - m) * kc + m;
    }
}

void dsa_crop(float *out, const float *x, int n, int c, int h, int w, int tx, int ty)
{
    size_t hw = (size_t)h * w;
    for (size_t p = 0; p < (size_t)n * c; p++) {
        const float *xp = x + p * hw;
        float *op = out + p * hw;
        for (int y = 0; y < h; y++) {
            int sy = y + ty;
            for (int xx = 0; xx < w; xx++) {
                int sx = xx + tx;
                op[(size_t)y * w + xx] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? xp[(size_t)sy * w + sx] : 0.0f;
            }
        }
    }
}

void dsa_cutout(float *out, const float *x, int n, int c, int h, int w, int ox, int oy, int size)
{
    size_t hw = (size_t)h * w;
    memcpy(out, x, (size_t)n * c * hw * sizeof *out);
    int y0 = oy - size / 2, x0 = ox - size / 2, y1 = y0 + size, x1 = x0 + size;
    y0 = y0 < 0 ? 0 : y0, x0 = x0 < 0 ? 0 : x0;
    y1 = y1 > h ? h : y1, x1 = x1 > w ? w : x1;
    for (size_t p = 0; p < (size_t)n * c; p++)
        for (int y = y0; y < y1; y++)
            for (int xx = x0; xx < x1; xx++)
                out[p * hw + (size_t)y * w + xx] = 0.0f;
}

void dsa_flip(float *out, const float *x, int n, int c, int h, int w)
{
    for (size_t r = 0; r < (size_t)n * c * h; r++)
        for (int xx = 0; xx < w; xx++)
            out[r * w + xx] = x[r * w + (w - 1 - xx)];
}

void dsa_affine(float *out, const float *x, int n, int c, int h, int w, const float t[6])
{
    size_t hw = (size_t)h * w;
    for (int y = 0; y < h; y++) {
        /* affine_grid, align_corners=False: pixel centres at (2i + 1) / size - 1 */
        float by = (float)(2 * y + 1) / (float)h - 1.0f;
        for (int xx = 0; xx < w; xx++) {
            float bx = (float)(2 * xx + 1) / (float)w - 1.0f;
            float gx = t[0] * bx + t[1] * by + t[2];
            float gy = t[3] * bx + t[4] * by + t[5];
            /* grid_sample, align_corners=False: back to pixel units */
            float ix = ((gx + 1.0f) * (float)w - 1.0f) / 2.0f;
            float iy = ((gy + 1.0f) * (float)h - 1.0f) / 2.0f;
            float fx0 = floorf(ix), fy0 = floorf(iy);
            int x0 = (int)fx0, y0 = (int)fy0, x1 = x0 + 1, y1 = y0 + 1;
            float wx1 = ix - fx0, wx0 = (fx0 + 1.0f) - ix, wy1 = iy - fy0, wy0 = (fy0 + 1.0f) - iy;
            int vx0 = x0 >= 0 && x0 < w, vx1 = x1 >= 0 && x1 < w;
            int vy0 = y0 >= 0 && y0 < h, vy1 = y1 >= 0 && y1 < h;
            float w00 = wx0 * wy0, w01 = wx1 * wy0, w10 = wx0 * wy1, w11 = wx1 * wy1;
            size_t o = (size_t)y * w + xx;
            for (size_t p = 0; p < (size_t)n * c; p++) {
                const float *xp = x + p * hw;
                float v = 0.0f;
                if (vy0 && vx0)
                    v += xp[(size_t)y0 * w + x0] * w00;
                if (vy0 && vx1)
                    v += xp[(size_t)y0 * w + x1] * w01;
                if (vy1 && vx0)
                    v += xp[(size_t)y1 * w + x0] * w10;
                if (vy1 && vx1)
                    v += xp[(size_t)y1 * w + x1] * w11;
                out[p * hw + o] = v;
            }
        }
    }
}

void dsa_scale(float *out, const float *x, int n, int c, int h, int w, float sx, float sy)
{
    const float t[6] = {sx, 0.0f, 0.0f, 0.0f, sy, 0.0f};
    dsa_affine(out, x, n, c, h, w, t);
}

void dsa_rotate(float *out, const float *x, int n, int c, int h, int w, float theta)
{
    float cs = cosf(theta), sn = sinf(theta);
    const float t[6] = {cs, -sn, 0.0f, sn, cs, 0.0f};
    dsa_affine(out, x, n, c, h, w, t);
}

int dsa_apply(float *out, const float *x, int n, int c, int h, int w, const dsa_params *p)
{
    int kind = p ? p->kind : DSA_NONE;
    switch (kind) {
    case DSA_NONE:
        memcpy(out, x, (size_t)n * c * h * w * sizeof *out);
        return 0;
    case DSA_COLOR:
        dsa_color(out, x, n, c, h, w, p->u_bright, p->u_sat, p->u_contrast);
        return 0;
    case DSA_CROP:
        dsa_crop(out, x, n, c, h, w, p->tx, p->ty);
        return 0;
    case DSA_CUTOUT:
        dsa_cutout(out, x, n, c, h, w, p->ox, p->oy, (int)(h * DSA_RATIO_CUTOUT + 0.5));
        return 0;
    case DSA_FLIP:
        if (p->flip)
            dsa_flip(out, x, n, c, h, w);
        else
            memcpy(out, x, (size_t)n * c * h * w * sizeof *out);
        return 0;
    case DSA_SCALE:
        dsa_scale(out, x, n, c, h, w, p->sx, p->sy);
        return 0;
    case DSA_ROTATE:
        dsa_rotate(out, x, n, c, h, w, p->theta);
        return 0;
    }
    return err_set(ERR_USAGE, "dsa: unknown augmentation kind %d", kind);
}
