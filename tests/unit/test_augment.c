/* test_augment.c - statistical checks of the random augmentations' ranges and frequencies
 * (issue 16: an off-by-one in the reference crop range survived a determinism-only test).
 *
 * - CIFAR's RandomCrop(32, padding=4) + RandomHorizontalFlip (imgaug_random_crop_flip, the
 *   local-training augmentation, docs/algorithms.md 1.x "crop + flip"): the offsets (dy, dx)
 *   and the flip are read back from the OUTPUT image (every input pixel holds its own index,
 *   so the centre pixel says where the crop came from and its right neighbour whether it
 *   was mirrored), never from the rng: over 18,000 per-image draws and 4,000 per-batch
 *   draws, dy and dx take every value of {0..8} and no other, each with a chi-square
 *   statistic against the uniform below the p = 0.001 quantile (8 degrees of freedom:
 *   26.12; the joint (dy, dx) over 81 cells: 124.84 at 80), and the flip rate is within 4
 *   standard deviations of 1/2.  Per batch: every image of a batch has the same crop.
 * - The ImageNet-style train transform (imgaug_train): the flip rate of RandomHorizontalFlip
 *   (read from a horizontal ramp: mirrored when its left edge is brighter), and the range of
 *   ColorJitter's brightness factor [0.6, 1.4] (read from a constant grey image, which
 *   contrast and saturation leave unchanged: out = trunc(100 f)): all values in [60, 140],
 *   both ends reached, 8 bins of width 10 uniform by chi-square (7 degrees of freedom,
 *   p = 0.001: 24.32).
 * The seeds are fixed, so each statistic is one fixed number; the bounds say how far from
 * uniform a correct sampler is allowed to land (a 0.1% tail), and a range off by one or a
 * flip rate off by 0.1 lands far outside them. */
#include "imgaug.h"
#include "rng.h"
#include "testlib.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* chi-square statistic of counts[0..k) against the uniform over k cells */
static double chi2_uniform(const long *counts, int k)
{
    long n = 0;
    for (int i = 0; i < k; i++)
        n += counts[i];
    double e = (double)n / k, s = 0;
    for (int i = 0; i < k; i++)
        s += (counts[i] - e) * (counts[i] - e) / e;
    return s;
}

enum { H = 32, W = 32, PAD = 4, NOFF = 2 * PAD + 1 };

/* Reads (dy, dx, flip) of one output of imgaug_crop_flip from its pixels (input pixel
 * (y, x) holds 1 + y W + x, padding is 0): the centre pixel (H/2, W/2) and its right
 * neighbour always come from inside the image (|offset - PAD| <= 4 < 16).  Returns 0 when
 * the pixels fit no crop of the padded image. */
static int decode(const float *out, int *dy, int *dx, int *flip)
{
    const int y = H / 2, x = W / 2;
    float a = out[y * W + x], b = out[y * W + x + 1];
    if (a < 1 || b < 1)
        return 0;
    long va = (long)a - 1, vb = (long)b - 1;
    if (labs(vb - va) != 1)
        return 0;
    *flip = vb < va;
    long sy = va / W, sx = va % W;
    int cx = *flip ? W - 1 - x : x; /* the column of the crop before mirroring */
    *dy = (int)(sy - y + PAD);
    *dx = (int)(sx - cx + PAD);
    return 1;
}

/* Tallies of decoded draws. */
typedef struct {
    long dy[NOFF], dx[NOFF], joint[NOFF * NOFF], flips, n, bad;
} tally;

static void add(tally *t, const float *out)
{
    int dy, dx, flip;
    if (!decode(out, &dy, &dx, &flip) || dy < 0 || dy >= NOFF || dx < 0 || dx >= NOFF) {
        t->bad++;
        return;
    }
    t->dy[dy]++, t->dx[dx]++, t->joint[dy * NOFF + dx]++, t->flips += flip, t->n++;
}

static void check_tally(const char *what, const tally *t, int joint)
{
    CHECK_MSG(t->bad == 0, "%s: %ld of %ld outputs are no crop at offsets 0..%d", what, t->bad,
              t->n + t->bad, NOFF - 1);
    for (int v = 0; v < NOFF; v++)
        CHECK_MSG(t->dy[v] > 0 && t->dx[v] > 0, "%s: offset %d never drawn (dy %ld, dx %ld)", what,
                  v, t->dy[v], t->dx[v]);
    double cy = chi2_uniform(t->dy, NOFF), cx = chi2_uniform(t->dx, NOFF);
    CHECK_MSG(cy < 26.12 && cx < 26.12, "%s: chi-square of dy %.2f, dx %.2f (bound 26.12)", what,
              cy, cx);
    double cj = joint ? chi2_uniform(t->joint, NOFF * NOFF) : 0;
    CHECK_MSG(cj < 124.84, "%s: chi-square of (dy, dx) %.2f (bound 124.84)", what, cj);
    double sd = sqrt((double)t->n) / 2;
    CHECK_MSG(fabs(t->flips - t->n / 2.0) <= 4 * sd, "%s: %ld flips in %ld (bound %.0f +- %.0f)",
              what, t->flips, t->n, t->n / 2.0, 4 * sd);
    fprintf(stderr, "  %s: %ld draws, chi2 dy %.2f dx %.2f joint %.2f, flip rate %.4f\n", what,
            t->n, cy, cx, cj, (double)t->flips / (double)(t->n ? t->n : 1));
}

static void check_cifar_crop_flip(void)
{
    enum { B = 100, IMG = H * W };
    float *in = malloc(sizeof(float) * B * IMG), *out = malloc(sizeof(float) * B * IMG);
    for (int i = 0; i < B; i++)
        for (int p = 0; p < IMG; p++)
            in[i * IMG + p] = (float)(p + 1);
    rng r;
    /* per image (--aug sample) */
    tally t = {0};
    rng_init(&r, 11, "augment", 3, 2);
    for (int k = 0; k < 180; k++) {
        imgaug_random_crop_flip(out, in, B, 1, H, W, PAD, 1, &r);
        for (int i = 0; i < B; i++)
            add(&t, out + i * IMG);
    }
    check_tally("per image", &t, 1);
    /* per batch (the reference's and the default): one draw per batch of 3 */
    tally u = {0};
    int same = 1;
    rng_init(&r, 12, "augment", 3, 2);
    for (int k = 0; k < 4000; k++) {
        imgaug_random_crop_flip(out, in, 3, 1, H, W, PAD, 0, &r);
        same &= !memcmp(out, out + IMG, sizeof(float) * IMG) &&
                !memcmp(out, out + 2 * IMG, sizeof(float) * IMG);
        add(&u, out);
    }
    CHECK_MSG(same, "per batch: images of one batch were cropped differently");
    check_tally("per batch", &u, 0);
    free(in);
    free(out);
}

/* imgaug_train's flip and brightness factor, read from its output */
static void check_train_stats(void)
{
    enum { S = 16, IH = 64, IW = 64 };
    uint8_t *ramp = malloc(3 * IH * IW), out[3 * S * S], gray[S * S];
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < IH; y++)
            for (int x = 0; x < IW; x++)
                ramp[(c * IH + y) * IW + x] = (uint8_t)(2 * x); /* 0..126: no clipping at 1.4 */
    rng r;
    rng_init(&r, 5, "imgaug", 0, 0);
    const int n = 3000;
    int flips = 0, ties = 0;
    for (int k = 0; k < n; k++) {
        CHECK(imgaug_train(out, gray, ramp, IH, IW, S, &r) == 0);
        long left = 0, right = 0;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                left += out[(c * S + y) * S], right += out[(c * S + y) * S + S - 1];
        flips += left > right, ties += left == right;
    }
    double sd = sqrt((double)n) / 2;
    CHECK_MSG(ties == 0, "train: %d outputs with equal edges (flip unreadable)", ties);
    CHECK_MSG(fabs(flips - n / 2.0) <= 4 * sd, "train: %d flips in %d (bound %.0f +- %.0f)", flips,
              n, n / 2.0, 4 * sd);

    /* brightness: a constant 100 image comes out constant at trunc(100 f), f in [0.6, 1.4) */
    uint8_t *grey = malloc(3 * 20 * 20);
    memset(grey, 100, 3 * 20 * 20);
    long bins[8] = {0};
    int lo = 255, hi = 0, outside = 0, uneven = 0;
    const int m = 4000;
    for (int k = 0; k < m; k++) {
        CHECK(imgaug_train(out, gray, grey, 20, 20, S, &r) == 0);
        for (int q = 1; q < 3 * S * S; q++)
            uneven += out[q] != out[0];
        int v = out[0];
        lo = v < lo ? v : lo, hi = v > hi ? v : hi;
        if (v < 59 || v > 140) { /* 59: a 99 from the resampler's rounding times 0.6 */
            outside++;
            continue;
        }
        int b = (v - 60) / 10;
        bins[b < 0 ? 0 : b > 7 ? 7 : b]++;
    }
    double c2 = chi2_uniform(bins, 8);
    CHECK_MSG(uneven == 0, "train: a constant image came out uneven (%d pixels)", uneven);
    CHECK_MSG(outside == 0, "train: %d brightness outputs outside [59, 140]", outside);
    CHECK_MSG(lo <= 61 && hi >= 138, "train: brightness outputs %d..%d, want about 60..139", lo, hi);
    CHECK_MSG(c2 < 24.32, "train: chi-square of brightness over 8 bins %.2f (bound 24.32)", c2);
    fprintf(stderr, "  train: flip rate %.4f; brightness outputs %d..%d, chi2 %.2f\n",
            (double)flips / n, lo, hi, c2);
    free(ramp);
    free(grey);
}

int main(void)
{
    check_cifar_crop_flip();
    check_train_stats();
    TEST_MAIN_END();
}
