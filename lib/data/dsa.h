/* dsa.h - CReFF's differentiable Siamese augmentation (DSA), mode 'S', on normalised float
 * batches (docs/algorithms.md section 3.1).
 *
 * What it is: one of {color, crop, cutout, flip, scale, rotate} is picked uniformly, and its
 * random parameters are drawn ONCE for the whole batch ("Siamese": every image of the batch
 * gets the same transform), from a seeded rng stream (never the clock).  Each transform is
 * also a plain function with explicit parameters, for tests and for callers that fix them.
 *   color:  brightness x + (u1 - 0.5); saturation (x - m_px) * 2 u2 + m_px (m_px: the mean
 *           over channels at each pixel); contrast (x - m_img) * (u3 + 0.5) + m_img (m_img:
 *           the mean of the image over C, H, W); in this order, u1..u3 ~ U[0, 1).
 *   crop:   out[y][x] = in[y + ty][x + tx], 0 outside; tx, ty in {-4..4} (int(H/8 + 0.5)).
 *   cutout: a 16x16 (H/2 x W/2) square of zeros centred at (oy, ox), rows oy-8..oy+7,
 *           clipped to the image; oy in {0..H}, ox in {0..W}.
 *   flip:   horizontal, with probability 0.5.
 *   scale:  affine diag(sx, sy), sx, sy ~ U[1/1.2, 1.2] independently;
 *   rotate: affine [[cos t, -sin t, 0], [sin t, cos t, 0]], t ~ U(-15, 15) degrees;
 *           both sampled bilinearly exactly as PyTorch's F.affine_grid + F.grid_sample
 *           (align_corners=False, padding_mode='zeros').
 * What it is not: the per-batch crop/flip of local training (nn.h), nor the PIL image
 * transforms of imgaug.h.  Kernels are single-threaded (a 32-image batch is microseconds
 * against the forward pass). */
#ifndef FEDSM_DSA_H
#define FEDSM_DSA_H

#include "rng.h"

typedef enum {
    DSA_COLOR = 0,
    DSA_CROP,
    DSA_CUTOUT,
    DSA_FLIP,
    DSA_SCALE,
    DSA_ROTATE,
    DSA_NKINDS,
    DSA_NONE = -1 /* identity (dsa_apply copies) */
} dsa_kind;

/* One drawn augmentation: kind plus the parameters that kind uses (others are 0). */
typedef struct dsa_params {
    int kind;                    /* dsa_kind */
    float u_bright, u_sat, u_contrast; /* color: the three uniforms in [0, 1) */
    int tx, ty;                  /* crop: shift along W (x) and H (y), pixels */
    int ox, oy;                  /* cutout: centre column and row */
    int flip;                    /* flip: 1 flips, 0 leaves as is */
    float sx, sy;                /* scale factors */
    float theta;                 /* rotate: angle in radians */
} dsa_params;

/* Draws a kind uniformly from r and then its parameters for an (h, w) image, in this
 * order: kind = rng_below(6); color u1, u2, u3; crop tx, ty; cutout ox, oy; flip u < 0.5;
 * scale sx, sy; rotate t (each kind draws only its own). */
void dsa_draw(dsa_params *p, rng *r, int h, int w);
/* out (n, c, h, w) = transform_p(x).  out and x must not overlap.  NULL p or DSA_NONE
 * copies.  Returns 0, or ERR_USAGE for an unknown kind. */
int dsa_apply(float *out, const float *x, int n, int c, int h, int w, const dsa_params *p);
/* Short name of a kind ("color", ...; "none"). */
const char *dsa_kind_name(int kind);

/* ---- the transforms with explicit parameters; out and x must not overlap ---- */
/* x: (n, c, h, w) -> out (n, c, h, w) */
void dsa_color(float *out, const float *x, int n, int c, int h, int w, float u_bright, float u_sat,
               float u_contrast);
void dsa_crop(float *out, const float *x, int n, int c, int h, int w, int tx, int ty);
/* size: the square's side (DSA: h / 2 rounded, 16 for 32x32) */
void dsa_cutout(float *out, const float *x, int n, int c, int h, int w, int ox, int oy, int size);
void dsa_flip(float *out, const float *x, int n, int c, int h, int w);
/* theta: the 2x3 affine matrix of F.affine_grid (row-major), applied in normalised
 * coordinates; bilinear, zeros outside, align_corners=False. */
void dsa_affine(float *out, const float *x, int n, int c, int h, int w, const float theta[6]);
void dsa_scale(float *out, const float *x, int n, int c, int h, int w, float sx, float sy);
void dsa_rotate(float *out, const float *x, int n, int c, int h, int w, float theta_rad);

#endif
