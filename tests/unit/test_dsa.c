/* test_dsa.c - lib/data/dsa.c (CReFF's Siamese DSA, docs/algorithms.md section 3.1):
 * each transform on fixed parameters against its PyTorch formulation
 * (tests/fixtures/creff/dsa.bin from tests/fixtures_creff.py: the DSA code's pad+index crop,
 * clamped-mask cutout, x.flip(3), F.affine_grid + F.grid_sample with align_corners=False and
 * zero padding), dsa_apply against the explicit calls, and dsa_draw's ranges, uniformity
 * (chi-square bounds on every parameter, both ends of each continuous range reached) and
 * determinism.  Tolerance: max abs difference 2e-5 on N(0,1) images (float32 rounding
 * of the affine grid and of the colour means). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsa.h"
#include "fxt.h"
#include "testlib.h"

#define FIX "tests/fixtures/creff/dsa.bin"
#define TOL 2e-5
enum { N = 2, CH = 3, H = 32, W = 32, NUM = N * CH * H * W };

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

static void check_fx(const fxt *f, const char *name, const float *got)
{
    const float *want = fxt_get(f, name, NUM);
    CHECK_MSG(want != NULL, "fixture %s", name);
    if (!want)
        return;
    double d = fxt_maxdiff(got, want, NUM);
    CHECK_MSG(d <= TOL, "%s: max |C - torch| = %g", name, d);
    fprintf(stderr, "  %-10s max |C - torch| %.3g\n", name, d);
}

int main(void)
{
    fxt f;
    if (fxt_load(&f, FIX)) {
        printf("skip: %s missing (make it with /usr/bin/python3 tests/fixtures_creff.py)\n", FIX);
        return 77;
    }
    const float *x = fxt_get(&f, "x", NUM);
    CHECK(x != NULL);
    if (!x)
        TEST_MAIN_END();
    float *out = malloc(NUM * sizeof *out), *out2 = malloc(NUM * sizeof *out2);

    /* each transform on fixed parameters vs PyTorch */
    dsa_color(out, x, N, CH, H, W, 0.3f, 0.8f, 0.15f);
    check_fx(&f, "color", out);
    dsa_params p = {.kind = DSA_COLOR, .u_bright = 0.3f, .u_sat = 0.8f, .u_contrast = 0.15f};
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(out, out2, NUM * sizeof *out));

    dsa_crop(out, x, N, CH, H, W, 3, -2);
    check_fx(&f, "crop", out);
    p = (dsa_params){.kind = DSA_CROP, .tx = 3, .ty = -2};
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(out, out2, NUM * sizeof *out));

    dsa_cutout(out, x, N, CH, H, W, 30, 3, 16);
    check_fx(&f, "cutout", out);
    p = (dsa_params){.kind = DSA_CUTOUT, .ox = 30, .oy = 3};
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(out, out2, NUM * sizeof *out));

    dsa_flip(out, x, N, CH, H, W);
    check_fx(&f, "flip", out);
    p = (dsa_params){.kind = DSA_FLIP, .flip = 1};
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(out, out2, NUM * sizeof *out));
    p.flip = 0;
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(x, out2, NUM * sizeof *out));

    dsa_scale(out, x, N, CH, H, W, 1.15f, 0.87f);
    check_fx(&f, "scale", out);
    p = (dsa_params){.kind = DSA_SCALE, .sx = 1.15f, .sy = 0.87f};
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(out, out2, NUM * sizeof *out));

    dsa_rotate(out, x, N, CH, H, W, 0.21f);
    check_fx(&f, "rotate", out);
    dsa_rotate(out, x, N, CH, H, W, -0.26f);
    check_fx(&f, "rotate_neg", out);
    p = (dsa_params){.kind = DSA_ROTATE, .theta = -0.26f};
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) == 0 && !memcmp(out, out2, NUM * sizeof *out));

    /* identity affine reproduces the image (pixel centres map onto themselves) */
    dsa_scale(out, x, N, CH, H, W, 1.0f, 1.0f);
    CHECK_MSG(fxt_maxdiff(out, x, NUM) <= 1e-5, "identity scale: %g", fxt_maxdiff(out, x, NUM));
    CHECK(dsa_apply(out2, x, N, CH, H, W, NULL) == 0 && !memcmp(x, out2, NUM * sizeof *out));
    p.kind = 17;
    CHECK(dsa_apply(out2, x, N, CH, H, W, &p) < 0);

    /* dsa_draw: ranges, uniform kinds, every crop shift and cutout centre reached */
    rng r;
    rng_init(&r, 7, "dsa", 3, 5);
    int kinds[DSA_NKINDS] = {0}, flips = 0, nflip = 0, bad = 0;
    long txs[9] = {0}, tys[9] = {0}, oxs[33] = {0}, oys[33] = {0};
    /* the continuous parameters: 10 equal bins over the documented range, and the extremes */
    enum { UB, US, UC, SX, SY, TH, NCONT };
    static const char *cname[NCONT] = {"u_bright", "u_sat", "u_contrast", "sx", "sy", "theta"};
    const double rot = 15.0 * M_PI / 180.0;
    const double clo[NCONT] = {0, 0, 0, 1 / 1.2, 1 / 1.2, -rot}, chi[NCONT] = {1, 1, 1, 1.2, 1.2, rot};
    long cbins[NCONT][10] = {{0}};
    double cmin[NCONT], cmax[NCONT];
    for (int k = 0; k < NCONT; k++)
        cmin[k] = INFINITY, cmax[k] = -INFINITY;
#define CONT(k, v)                                                                                 \
    do {                                                                                           \
        double v_ = (v), t_ = (v_ - clo[k]) / (chi[k] - clo[k]) * 10;                              \
        cbins[k][t_ < 0 ? 0 : t_ >= 10 ? 9 : (int)t_]++;                                           \
        cmin[k] = fmin(cmin[k], v_), cmax[k] = fmax(cmax[k], v_);                                  \
    } while (0)
    const int draws = 60000;
    for (int i = 0; i < draws; i++) {
        dsa_draw(&p, &r, H, W);
        if (p.kind < 0 || p.kind >= DSA_NKINDS) {
            bad++;
            continue;
        }
        kinds[p.kind]++;
        switch (p.kind) {
        case DSA_COLOR:
            bad += !(p.u_bright >= 0 && p.u_bright < 1 && p.u_sat >= 0 && p.u_sat < 1 && p.u_contrast >= 0 &&
                     p.u_contrast < 1);
            CONT(UB, p.u_bright);
            CONT(US, p.u_sat);
            CONT(UC, p.u_contrast);
            break;
        case DSA_CROP:
            bad += p.tx < -4 || p.tx > 4 || p.ty < -4 || p.ty > 4;
            if (p.tx >= -4 && p.tx <= 4 && p.ty >= -4 && p.ty <= 4)
                txs[p.tx + 4]++, tys[p.ty + 4]++;
            break;
        case DSA_CUTOUT:
            bad += p.ox < 0 || p.ox > 32 || p.oy < 0 || p.oy > 32;
            if (p.ox >= 0 && p.ox <= 32 && p.oy >= 0 && p.oy <= 32)
                oxs[p.ox]++, oys[p.oy]++;
            break;
        case DSA_FLIP:
            flips += p.flip, nflip++;
            break;
        case DSA_SCALE:
            bad += !(p.sx >= 1 / 1.2f - 1e-6f && p.sx <= 1.2f && p.sy >= 1 / 1.2f - 1e-6f && p.sy <= 1.2f);
            CONT(SX, p.sx);
            CONT(SY, p.sy);
            break;
        case DSA_ROTATE:
            bad += !(fabsf(p.theta) <= 15.0f * (float)M_PI / 180.0f);
            CONT(TH, p.theta);
            break;
        }
    }
    CHECK_MSG(bad == 0, "%d draws out of range", bad);
    for (int k = 0; k < DSA_NKINDS; k++)
        CHECK_MSG(fabs(kinds[k] - draws / 6.0) < 0.05 * draws / 6.0, "kind %s drawn %d of %d", dsa_kind_name(k),
                  kinds[k], draws);
    for (int k = 0; k < 9; k++)
        CHECK_MSG(txs[k] > 0 && tys[k] > 0, "crop shift %d never drawn (tx %ld, ty %ld)", k - 4, txs[k], tys[k]);
    for (int k = 0; k <= 32; k++)
        CHECK_MSG(oxs[k] > 0 && oys[k] > 0, "cutout centre %d never drawn (ox %ld, oy %ld)", k, oxs[k], oys[k]);
    CHECK_MSG(fabs(flips - nflip / 2.0) < 0.05 * nflip, "flip %d of %d", flips, nflip);
    /* Uniformity, with the seed fixed: chi-square against the uniform below its p = 0.001
     * quantile (8 degrees of freedom: 26.12; 32: 62.49; 9: 27.88), and each continuous
     * parameter reaching within 1% of the span of both ends of its documented range (about
     * 10,000 draws each: a correct sampler misses by that much with probability 1e-43). */
    double c2[4] = {chi2_uniform(txs, 9), chi2_uniform(tys, 9), chi2_uniform(oxs, 33), chi2_uniform(oys, 33)};
    CHECK_MSG(c2[0] < 26.12 && c2[1] < 26.12, "crop shifts: chi-square tx %.2f, ty %.2f (bound 26.12)", c2[0], c2[1]);
    CHECK_MSG(c2[2] < 62.49 && c2[3] < 62.49, "cutout centres: chi-square ox %.2f, oy %.2f (bound 62.49)", c2[2],
              c2[3]);
    fprintf(stderr, "  draws: chi2 tx %.2f ty %.2f ox %.2f oy %.2f\n", c2[0], c2[1], c2[2], c2[3]);
    for (int k = 0; k < NCONT; k++) {
        double span = chi[k] - clo[k], c = chi2_uniform(cbins[k], 10);
        CHECK_MSG(cmin[k] < clo[k] + 0.01 * span && cmax[k] > chi[k] - 0.01 * span,
                  "%s drawn in [%g, %g], documented range [%g, %g]", cname[k], cmin[k], cmax[k], clo[k], chi[k]);
        CHECK_MSG(c < 27.88, "%s: chi-square over 10 bins %.2f (bound 27.88)", cname[k], c);
        fprintf(stderr, "  %-10s [%.4f, %.4f] chi2 %.2f\n", cname[k], cmin[k], cmax[k], c);
    }
    /* the stream decides everything: same key, same draws; another client, other draws */
    rng a, b, c;
    rng_init(&a, 7, "dsa", 3, 5), rng_init(&b, 7, "dsa", 3, 5), rng_init(&c, 7, "dsa", 3, 6);
    int same = 1, differ = 0;
    for (int i = 0; i < 100; i++) {
        dsa_params pa, pb, pc;
        dsa_draw(&pa, &a, H, W), dsa_draw(&pb, &b, H, W), dsa_draw(&pc, &c, H, W);
        same &= !memcmp(&pa, &pb, sizeof pa);
        differ += memcmp(&pa, &pc, sizeof pa) != 0;
    }
    CHECK(same);
    CHECK(differ > 50);
    free(out);
    free(out2);
    fxt_free(&f);
    TEST_MAIN_END();
}
