/* test_dsa.c - lib/data/dsa.c (CReFF's Siamese DSA, docs/algorithms.md section 3.1):
 * each transform on fixed parameters against its PyTorch formulation
 * (tests/fixtures/creff/dsa.bin from tests/fixtures_creff.py: the DSA code's pad+index crop,
 * clamped-mask cutout, x.flip(3), F.affine_grid + F.grid_sample with align_corners=False and
 * zero padding), dsa_apply against the explicit calls, and dsa_draw's ranges, uniformity
 * and determinism.  Tolerance: max abs difference 2e-5 on N(0,1) images (float32 rounding
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
    int kinds[DSA_NKINDS] = {0}, txs[9] = {0}, oxs[33] = {0}, flips = 0, nflip = 0, bad = 0;
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
            break;
        case DSA_CROP:
            bad += p.tx < -4 || p.tx > 4 || p.ty < -4 || p.ty > 4;
            if (p.tx >= -4 && p.tx <= 4)
                txs[p.tx + 4]++;
            break;
        case DSA_CUTOUT:
            bad += p.ox < 0 || p.ox > 32 || p.oy < 0 || p.oy > 32;
            if (p.ox >= 0 && p.ox <= 32)
                oxs[p.ox]++;
            break;
        case DSA_FLIP:
            flips += p.flip, nflip++;
            break;
        case DSA_SCALE:
            bad += !(p.sx >= 1 / 1.2f - 1e-6f && p.sx <= 1.2f && p.sy >= 1 / 1.2f - 1e-6f && p.sy <= 1.2f);
            break;
        case DSA_ROTATE:
            bad += !(fabsf(p.theta) <= 15.0f * (float)M_PI / 180.0f);
            break;
        }
    }
    CHECK_MSG(bad == 0, "%d draws out of range", bad);
    for (int k = 0; k < DSA_NKINDS; k++)
        CHECK_MSG(fabs(kinds[k] - draws / 6.0) < 0.05 * draws / 6.0, "kind %s drawn %d of %d", dsa_kind_name(k),
                  kinds[k], draws);
    for (int k = 0; k < 9; k++)
        CHECK_MSG(txs[k] > 0, "crop shift %d never drawn", k - 4);
    for (int k = 0; k <= 32; k++)
        CHECK_MSG(oxs[k] > 0, "cutout centre %d never drawn", k);
    CHECK_MSG(fabs(flips - nflip / 2.0) < 0.05 * nflip, "flip %d of %d", flips, nflip);
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
