/* test_imgaug.c - lib/data/imgaug.c against Pillow 9.4 (tests/fixtures/imgaug/refs.bin from
 * tests/fixtures_imgaug.py): torchvision's eval Resize + CenterCrop, Pillow's resize with a
 * box (bilinear and bicubic), resized_crop, ImageEnhance brightness/contrast/colour and
 * convert("L"), each exactly (uint8); a PIL-decoded JPEG through the eval transform.
 * Property tests of RandomResizedCrop's box sampling (bounds, fallback) and of the train
 * transform (seeded, deterministic).  lib/data/shard.c: decoded shards through shard_gather
 * unchanged, encoded shards loaded and checked (bad offsets, not-an-image bytes), batches
 * identical on 1 and 2 threads, a corrupt JPEG inside a batch named in the error. */
#include "endpoint.h"
#include "err.h"
#include "image.h"
#include "imgaug.h"
#include "pool.h"
#include "rng.h"
#include "sha256.h"
#include "shard.h"
#include "testlib.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/imgaug/refs.bin"

/* mirrored in tests/fixtures_imgaug.py (IMAGES) and make_clip_fixtures_lib.pattern_image */
static const int images[4][3] = {{31, 40, 1}, {43, 57, 2}, {80, 64, 3}, {300, 257, 4}};

static uint8_t *pattern_image(int k)
{
    int h = images[k][0], w = images[k][1], seed = images[k][2];
    uint8_t *o = malloc((size_t)3 * h * w);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                o[((size_t)c * h + y) * w + x] =
                    (uint8_t)((x * x * 7 + y * 13 + c * 50 + (x * y * 3) % 29 + seed * 17) % 256);
    return o;
}

/* Compares out (n bytes) with the entry: the bytes, or their SHA-256 when sha. */
static void check_out(const char *name, const uint8_t *out, size_t n, const uint8_t *ref,
                      size_t rn, int sha)
{
    if (sha) {
        uint8_t d[32];
        sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, out, n);
        sha256_final(&c, d);
        CHECK_MSG(rn == 32 && !memcmp(d, ref, 32), "%s: differs from Pillow (digest)", name);
        return;
    }
    CHECK_MSG(rn == n, "%s: %zu bytes, Pillow %zu", name, n, rn);
    if (rn != n)
        return;
    int worst = 0;
    size_t nd = 0;
    for (size_t q = 0; q < n; q++) {
        int d = abs((int)out[q] - (int)ref[q]);
        worst = d > worst ? d : worst;
        nd += d != 0;
    }
    CHECK_MSG(worst == 0, "%s: %zu of %zu bytes differ from Pillow, by up to %d", name, nd, n,
              worst);
}

static void check_fixtures(void)
{
    FILE *f = fopen(FIX, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", FIX);
    if (!f)
        return;
    char magic[4];
    CHECK(fread(magic, 1, 4, f) == 4 && !memcmp(magic, "IAG1", 4));
    uint8_t *jpeg = NULL;
    size_t jpeg_len = 0;
    int n_entries = 0;
    for (;;) {
        uint32_t nl, dl;
        if (fread(&nl, 4, 1, f) != 1)
            break;
        char name[256] = {0};
        CHECK(nl < sizeof name && fread(name, 1, nl, f) == nl && fread(&dl, 4, 1, f) == 1);
        uint8_t *ref = malloc(dl ? dl : 1);
        CHECK(fread(ref, 1, dl, f) == dl);
        n_entries++;
        int sha = !strncmp(name, "sha ", 4);
        const char *op = sha ? name + 4 : name;
        int k = 0, a = 0, b = 0, c = 0, d = 0, size = 0, ow = 0, oh = 0;
        double box[4], fac;
        char flt[16];
        uint8_t *out = NULL;
        size_t n = 0;
        uint8_t *im = NULL;
        if (sscanf(op, "eval %d %d", &k, &size) == 2) {
            im = pattern_image(k);
            n = (size_t)3 * size * size;
            out = malloc(n);
            CHECK(imgaug_eval(out, im, images[k][0], images[k][1], size) == 0);
        } else if (sscanf(op, "box %d %lf %lf %lf %lf %d %d %15s", &k, &box[0], &box[1], &box[2],
                          &box[3], &ow, &oh, flt) == 8) {
            im = pattern_image(k);
            n = (size_t)3 * oh * ow;
            out = malloc(n);
            CHECK(imgaug_resize(out, im, images[k][0], images[k][1], oh, ow, box,
                                strcmp(flt, "bicubic") ? IMGAUG_BILINEAR : IMGAUG_BICUBIC) == 0);
        } else if (sscanf(op, "crop %d %d %d %d %d %d", &k, &a, &b, &c, &d, &size) == 6) {
            /* crop (top a, left b, h c, w d) then resize: as a crop copied out, resized whole */
            im = pattern_image(k);
            int w = images[k][1];
            uint8_t *cr = malloc((size_t)3 * c * d);
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < c; y++)
                    memcpy(cr + ((size_t)ch * c + y) * d,
                           im + ((size_t)ch * images[k][0] + a + y) * w + b, (size_t)d);
            n = (size_t)3 * size * size;
            out = malloc(n);
            CHECK(imgaug_resize(out, cr, c, d, size, size, NULL, IMGAUG_BILINEAR) == 0);
            free(cr);
        } else if (sscanf(op, "brightness %d %lf", &k, &fac) == 2 ||
                   sscanf(op, "contrast %d %lf", &k, &fac) == 2 ||
                   sscanf(op, "saturation %d %lf", &k, &fac) == 2) {
            im = pattern_image(k);
            size_t hw = (size_t)images[k][0] * images[k][1];
            n = 3 * hw;
            out = malloc(n);
            memcpy(out, im, n);
            if (op[0] == 'b')
                imgaug_brightness(out, hw, fac);
            else if (op[0] == 'c')
                imgaug_contrast(out, hw, fac);
            else {
                uint8_t *g = malloc(hw);
                imgaug_saturation(out, g, hw, fac);
                free(g);
            }
        } else if (sscanf(op, "gray %d", &k) == 1) {
            im = pattern_image(k);
            n = (size_t)images[k][0] * images[k][1];
            out = malloc(n);
            imgaug_grayscale(out, im, n);
        } else if (sscanf(op, "jpegfile %d", &k) == 1) {
            free(jpeg);
            jpeg = ref;
            jpeg_len = dl;
            ref = NULL;
        } else if (sscanf(op, "jpegeval %d %d", &k, &size) == 2) {
            image dec = {0};
            CHECK(jpeg && image_decode(jpeg, jpeg_len, "fixture jpeg", &dec) == 0);
            n = (size_t)3 * size * size;
            out = malloc(n);
            CHECK(dec.chw && imgaug_eval(out, dec.chw, dec.h, dec.w, size) == 0);
            image_free(&dec);
        } else {
            CHECK_MSG(0, "unknown fixture entry '%s'", name);
        }
        if (out)
            check_out(name, out, n, ref, dl, sha);
        free(out);
        free(im);
        free(ref);
    }
    fclose(f);
    free(jpeg);
    fprintf(stderr, "%d Pillow fixture entries checked\n", n_entries);
    CHECK(n_entries >= 50);
}

/* RandomResizedCrop.get_params: boxes inside the image, area and ratio in range (up to the
 * rounding of w and h), offsets covering the whole range; the fallback's center crop. */
static void check_rrc(void)
{
    rng r;
    rng_init(&r, 7, "test", 0, 0);
    const int sizes[][2] = {{375, 500}, {500, 375}, {224, 224}, {31, 40}, {7, 5}, {1, 1}};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int h = sizes[s][0], w = sizes[s][1], bad = 0, fallbacks = 0, top_max = 0, top_min = h;
        double area = (double)h * w, amin = 1e9, amax = 0;
        for (int t = 0; t < 2000; t++) {
            imgaug_box b;
            int fb = imgaug_rrc_box(&r, h, w, &b);
            fallbacks += fb;
            bad += b.h < 1 || b.w < 1 || b.top < 0 || b.left < 0 || b.top + b.h > h ||
                   b.left + b.w > w;
            if (!fb && h >= 31) {
                /* w = round(sqrt(A r)), h = round(sqrt(A / r)): within half a pixel */
                double ww = b.w, hh = b.h;
                bad += (ww - 0.5) * (hh - 0.5) > area * 1.0 + 1e-9 ||
                       (ww + 0.5) * (hh + 0.5) < area * 0.08 - 1e-9;
                bad += (ww - 0.5) / (hh + 0.5) > 4.0 / 3.0 || (ww + 0.5) / (hh - 0.5) < 3.0 / 4.0;
                amin = ww * hh < amin ? ww * hh : amin;
                amax = ww * hh > amax ? ww * hh : amax;
                top_min = b.top < top_min ? b.top : top_min;
                top_max = b.top > top_max ? b.top : top_max;
            }
        }
        CHECK_MSG(bad == 0, "%dx%d: %d boxes out of bounds", w, h, bad);
        if (h >= 31) {
            CHECK_MSG(fallbacks < 20, "%dx%d: %d fallbacks in 2000", w, h, fallbacks);
            CHECK_MSG(amin < 0.15 * area && amax > 0.9 * area, "%dx%d: areas %g..%g of %g", w, h,
                      amin, amax, area);
            CHECK_MSG(top_min == 0 && top_max > h / 2, "%dx%d: tops %d..%d", w, h, top_min,
                      top_max);
        }
    }
    /* no draw can fit a 1-pixel-high image (h >= round(sqrt(0.08 * 1000 * 3/4)) = 8): the
     * fallback crops the center to ratio 4/3 -> 1x1 (round(4/3) = 1) at column 499 */
    imgaug_box b;
    CHECK(imgaug_rrc_box(&r, 1, 1000, &b) == 1);
    CHECK(b.h == 1 && b.w == 1 && b.top == 0 && b.left == 499);
    /* tall: 1000x3 -> w 3, h round(3 / 0.75) = 4, top (1000 - 4) / 2 = 498 */
    CHECK(imgaug_rrc_box(&r, 1000, 3, &b) == 1);
    CHECK(b.w == 3 && b.h == 4 && b.left == 0 && b.top == 498);
    /* an odd margin: 1001x3 -> top (1001 - 4) // 2 = 498, floored as torchvision's // */
    CHECK(imgaug_rrc_box(&r, 1001, 3, &b) == 1);
    CHECK(b.w == 3 && b.h == 4 && b.left == 0 && b.top == 498);
    /* 1x1: ratio 1 is in range, the whole image (draws can fit too, and give the same) */
    imgaug_rrc_box(&r, 1, 1, &b);
    CHECK(b.w == 1 && b.h == 1 && b.top == 0 && b.left == 0);
}

/* The train transform: same seed same bytes, other seed other bytes; flips and jitter
 * change only what they should (a constant grey image stays grey under every op). */
static void check_train(void)
{
    uint8_t *im = pattern_image(3), a[3 * 32 * 32], b[3 * 32 * 32], g[32 * 32];
    rng r1, r2, r3;
    rng_init(&r1, 1, "imgaug", 0, 0);
    rng_init(&r2, 1, "imgaug", 0, 0);
    rng_init(&r3, 2, "imgaug", 0, 0);
    CHECK(imgaug_train(a, g, im, 300, 257, 32, &r1) == 0);
    CHECK(imgaug_train(b, g, im, 300, 257, 32, &r2) == 0);
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(imgaug_train(b, g, im, 300, 257, 32, &r3) == 0);
    CHECK(memcmp(a, b, sizeof a) != 0);
    memset(im, 100, 3 * 300 * 257);
    CHECK(imgaug_train(a, g, im, 300, 257, 32, &r1) == 0);
    int grey = 1;
    for (size_t q = 1; q < sizeof a; q++)
        grey &= a[q] == a[0];
    CHECK_MSG(grey, "a constant image did not stay constant");
    free(im);
    uint8_t f[3 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
    imgaug_hflip(f, 2, 3);
    CHECK(f[0] == 3 && f[2] == 1 && f[3] == 6 && f[17] == 16);
    CHECK(imgaug_eval_resize(224) == 256 && imgaug_eval_resize(32) == 37);
}

/* ---- shard.c ---- */

static const char *classes[] = {"a", "b", "c"};

static int write_shard(const char *path, record *r, int n)
{
    int32_t *lab = rec_add_new(r, "labels", DT_I32, 1, (int64_t[]){n});
    int64_t *idx = rec_add_new(r, "index", DT_I64, 1, (int64_t[]){n});
    for (int i = 0; i < n; i++)
        lab[i] = i % 3, idx[i] = 10 + i;
    rec_set_strs(r, "classes", classes, 3);
    rec_set_int(r, "client", 2);
    ep_opts o;
    ep_opts_default(&o);
    int rc = ep_write_one(path, r, &o);
    rec_free(r);
    return rc;
}

static void check_decoded(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/dec.mpk.zst", dir);
    record *r = rec_new("shard");
    uint8_t *px = rec_add_new(r, "images", DT_U8, 4, (int64_t[]){4, 3, 5, 6});
    for (int q = 0; q < 4 * 3 * 5 * 6; q++)
        px[q] = (uint8_t)(q * 37);
    CHECK(write_shard(path, r, 4) == 0);
    ep_opts o;
    ep_opts_default(&o);
    shard *s = shard_load(path, &o);
    CHECK(s && !s->bytes && s->images && s->n == 4 && s->c == 3 && s->h == 5 && s->w == 6);
    if (!s)
        return;
    CHECK(shard_check_fits(s, path, 3, 3, 5, 6) == 0 && shard_check_fits(s, path, 3, 3, 6, 6));
    const float mean[3] = {0.5f, 0.4f, 0.3f}, std[3] = {0.2f, 0.25f, 0.3f};
    int64_t rows[2] = {3, 1};
    float out[2 * 90];
    shard_gather(out, s, rows, 2, mean, std);
    int same = 1;
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 30; p++) { /* the formula shard_gather has always used */
                float want = (float)s->images[rows[i] * 90 + c * 30 + p] * (1.0f / (255.0f * std[c])) -
                             mean[c] / std[c];
                same &= !memcmp(&out[i * 90 + c * 30 + p], &want, sizeof want);
            }
    CHECK_MSG(same, "decoded shard_gather changed");
    shard_free(s);
}

/* An encoded shard of n JPEG/PNG images of odd sizes; returns the bytes' offsets. */
static record *encoded_record(int n, int64_t **off_out, uint8_t **bytes_out)
{
    record *r = rec_new("shard");
    int64_t *off = rec_add_new(r, "offsets", DT_I64, 1, (int64_t[]){n + 1});
    size_t used = 0;
    uint8_t *bytes = NULL;
    for (int i = 0; i < n; i++) {
        int h = 20 + 7 * i, w = 41 - 3 * i;
        image im = {w, h, malloc((size_t)3 * w * h)};
        for (int q = 0; q < 3 * w * h; q++)
            im.chw[q] = (uint8_t)(q * 13 + i * 50);
        void *enc;
        size_t len;
        CHECK((i % 2 ? image_encode_png(&im, &enc, &len) : image_encode_jpeg(&im, 90, &enc, &len)) == 0);
        bytes = realloc(bytes, used + len);
        memcpy(bytes + used, enc, len);
        off[i] = (int64_t)used;
        used += len;
        free(enc);
        image_free(&im);
    }
    off[n] = (int64_t)used;
    rec_add(r, "jpeg", DT_U8, 1, (int64_t[]){(int64_t)used}, bytes, REC_COPY);
    *off_out = off;
    *bytes_out = rec_find(r, "jpeg")->data;
    free(bytes);
    return r;
}

static void check_encoded(const char *dir)
{
    char path[256];
    ep_opts o;
    ep_opts_default(&o);
    int64_t *off;
    uint8_t *bytes;
    const int n = 5, S = 24;
    snprintf(path, sizeof path, "%s/enc.mpk.zst", dir);
    CHECK(write_shard(path, encoded_record(n, &off, &bytes), n) == 0);
    shard *s = shard_load(path, &o);
    CHECK_MSG(s != NULL, "%s", err_msg());
    if (!s)
        return;
    CHECK(s->bytes && !s->images && s->n == n && s->c == 3 && s->labels[4] == 1);
    CHECK(shard_check_fits(s, path, 3, 3, 224, 224) == 0 && shard_check_fits(s, path, 3, 3, 32, 32) == 0);
    CHECK(shard_check_fits(s, path, 3, 1, 32, 32) != 0 && shard_check_fits(s, path, 4, 3, 32, 32) != 0);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    int64_t rows[5] = {4, 0, 2, 1, 3};
    uint64_t seeds[5] = {11, 12, 13, 14, 15};
    size_t img = (size_t)3 * S * S;
    float *x1 = malloc(n * img * sizeof *x1), *x2 = malloc(n * img * sizeof *x2);
    /* eval: image by image == decode + imgaug_eval + normalise */
    pool_set_threads(1);
    CHECK(shard_gather_encoded(x1, s, rows, n, S, NULL, mean, std) == 0);
    int same = 1;
    for (int i = 0; i < n; i++) {
        image im;
        uint8_t u[3 * 24 * 24];
        CHECK(image_decode(s->bytes + s->offsets[rows[i]],
                           (size_t)(s->offsets[rows[i] + 1] - s->offsets[rows[i]]), "t", &im) == 0);
        CHECK(imgaug_eval(u, im.chw, im.h, im.w, S) == 0);
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < S * S; p++) {
                float want = (float)u[c * S * S + p] * (1.0f / (255.0f * std[c])) - mean[c] / std[c];
                same &= x1[i * img + (size_t)c * S * S + p] == want;
            }
        image_free(&im);
    }
    CHECK_MSG(same, "shard_gather_encoded (eval) != decode + imgaug_eval");
    /* train: the same on 1 and 2 threads; differs from eval */
    CHECK(shard_gather_encoded(x1, s, rows, n, S, seeds, mean, std) == 0);
    pool_set_threads(2);
    CHECK(shard_gather_encoded(x2, s, rows, n, S, seeds, mean, std) == 0);
    CHECK_MSG(!memcmp(x1, x2, n * img * sizeof *x1), "train batch differs on 2 threads");
    CHECK(shard_gather_encoded(x2, s, rows, n, S, NULL, mean, std) == 0);
    CHECK(memcmp(x1, x2, n * img * sizeof *x1) != 0);
    shard_free(s);

    /* a truncated JPEG inside (offsets still valid): named at gather time, on 2 threads */
    record *r = encoded_record(n, &off, &bytes);
    memset(bytes + off[2] + (off[3] - off[2]) / 2, 0, (size_t)(off[3] - off[2]) / 2);
    snprintf(path, sizeof path, "%s/trunc.mpk.zst", dir);
    CHECK(write_shard(path, r, n) == 0);
    s = shard_load(path, &o);
    CHECK(s != NULL);
    if (s) {
        int rc = shard_gather_encoded(x1, s, rows, n, S, NULL, mean, std);
        CHECK_MSG(rc == ERR_FORMAT && strstr(err_msg(), "sample 2") && strstr(err_msg(), "trunc.mpk.zst"),
                  "rc %d: %s", rc, err_msg());
    }
    shard_free(s);
    pool_set_threads(1);

    /* bad offsets: not rising, past the end, not starting at an image, too few */
    for (int t = 0; t < 4; t++) {
        r = encoded_record(n, &off, &bytes);
        if (t == 0)
            off[2] = off[3] + 1;
        else if (t == 1)
            off[n] += 5;
        else if (t == 2)
            off[3] += 1;
        else
            rec_remove(r, "offsets"), rec_add_new(r, "offsets", DT_I64, 1, (int64_t[]){n});
        snprintf(path, sizeof path, "%s/bad%d.mpk.zst", dir, t);
        CHECK(write_shard(path, r, n) == 0);
        s = shard_load(path, &o);
        const char *want[] = {"tensors.offsets[", "tensors.offsets[", "neither JPEG nor PNG",
                              "offsets"};
        CHECK_MSG(!s && err_last() == ERR_FORMAT && strstr(err_msg(), want[t]), "case %d: %s", t,
                  err_msg());
        shard_free(s);
    }
    free(x1);
    free(x2);
}

int main(void)
{
    check_fixtures();
    check_rrc();
    check_train();
    char dir[] = "/tmp/fedsm-imgaug-XXXXXX";
    if (mkdtemp(dir)) {
        check_decoded(dir);
        check_encoded(dir);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd))
            fprintf(stderr, "note: could not remove %s\n", dir);
    }
    TEST_MAIN_END();
}
