/* test_image.c - JPEG/PNG round trips through lib/data/image.c (PNG exact, JPEG within a stated
 * tolerance), header probing, and corrupt/truncated input as ERR_FORMAT naming the image
 * (no crash, no leak under ASan).  PNG against Pillow, an independent codec
 * (tests/png_pil_check.py): PNGs written by our encoder give PIL our pixels, and PNGs
 * written by PIL (RGB, RGBA, grey, grey+alpha, palette 8- and 4-bit with and without tRNS,
 * 1-bit, 16-bit RGB and grey, a gAMA chunk) decode to PIL's pixels, exactly. */
#include "err.h"
#include "image.h"
#include "testlib.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static image make_image(int w, int h)
{
    image im = {w, h, malloc(3 * (size_t)w * h)};
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) /* smooth gradients: JPEG-friendly */
                im.chw[((size_t)c * h + y) * w + x] =
                    (uint8_t)(c == 0 ? x * 255 / (w - 1) : c == 1 ? y * 255 / (h - 1) : 128);
    return im;
}

static double mean_abs_diff(const image *a, const image *b)
{
    double s = 0;
    size_t n = 3 * (size_t)a->w * a->h;
    for (size_t i = 0; i < n; i++)
        s += abs((int)a->chw[i] - (int)b->chw[i]);
    return s / n;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    void *buf;
    return image_read_file(path, (size_t)1 << 26, &buf, len) ? NULL : buf;
}

/* noise (PNG's filters see every byte value) or smooth gradients */
static image make_noise(int w, int h, unsigned seed)
{
    image im = {w, h, malloc(3 * (size_t)w * h)};
    for (size_t i = 0; i < 3 * (size_t)w * h; i++)
        im.chw[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
    return im;
}

/* Our encoder vs PIL's decoder, PIL's encoder vs our decoder (tests/png_pil_check.py). */
static void check_png_pillow(void)
{
    char dir[] = "/tmp/fedsm-png-XXXXXX", p[600], cmd[700];
    CHECK(mkdtemp(dir) != NULL);
    image ours[4] = {make_image(37, 21), make_noise(64, 48, 1), make_noise(1, 1, 2), make_noise(3, 200, 3)};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/ours-%d.png", dir, k);
        CHECK(image_save_png(&ours[k], p) == 0);
    }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/png_pil_check.py %s > %s/log 2>&1", dir, dir);
    int rc = system(cmd);
    rc = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
    if (rc == 77 || rc == 127) {
        SKIP_CHECK("PNG checks against Pillow: tests/png_pil_check.py exit %d (no python3, numpy or PIL)", rc);
    } else if (rc != 0) {
        CHECK_MSG(rc == 0, "tests/png_pil_check.py exit %d (log in %s/log)", rc, dir);
    } else {
        for (int k = 0; k < 4; k++) { /* PIL reads our PNGs as our pixels */
            size_t len, n = 3 * (size_t)ours[k].w * ours[k].h;
            snprintf(p, sizeof p, "%s/ours-%d.pil", dir, k);
            uint8_t *pil = slurp(p, &len);
            CHECK_MSG(pil && len == n && !memcmp(pil, ours[k].chw, n), "ours-%d.png (%dx%d): PIL reads other pixels",
                      k, ours[k].w, ours[k].h);
            free(pil);
        }
        snprintf(p, sizeof p, "%s/pil.list", dir);
        FILE *f = fopen(p, "r");
        CHECK(f != NULL);
        char name[64];
        int n_files = 0;
        while (f && fscanf(f, "%63s", name) == 1) { /* we read PIL's PNGs as PIL's pixels */
            size_t len, rlen;
            snprintf(p, sizeof p, "%s/pil-%s.png", dir, name);
            uint8_t *png = slurp(p, &len);
            snprintf(p, sizeof p, "%s/pil-%s.ref", dir, name);
            uint8_t *ref = slurp(p, &rlen);
            int h = 0, w = 0;
            char *nl = ref ? memchr(ref, '\n', rlen) : NULL;
            CHECK(png && nl && sscanf((char *)ref, "%d %d", &h, &w) == 2);
            image im;
            if (png && nl && image_decode(png, len, name, &im) == 0) {
                size_t n = 3 * (size_t)w * h, nd = 0;
                int worst = 0;
                const uint8_t *r = (const uint8_t *)nl + 1;
                CHECK_MSG(im.w == w && im.h == h && rlen - (size_t)(r - ref) == n, "%s: %dx%d, PIL %dx%d", name,
                          im.w, im.h, w, h);
                for (size_t q = 0; im.w == w && im.h == h && q < n; q++) {
                    int d = abs((int)im.chw[q] - (int)r[q]);
                    worst = d > worst ? d : worst;
                    nd += d != 0;
                }
                CHECK_MSG(worst == 0, "%s: %zu of %zu bytes differ from PIL's, by up to %d", name, nd, n, worst);
                image_free(&im);
            } else {
                CHECK_MSG(0, "%s: not decoded: %s", name, err_msg());
            }
            free(png);
            free(ref);
            n_files++;
        }
        if (f)
            fclose(f);
        CHECK_MSG(n_files >= 11, "%d PIL PNGs checked", n_files);
    }
    for (int k = 0; k < 4; k++)
        image_free(&ours[k]);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd))
        fprintf(stderr, "note: could not remove %s\n", dir);
}

int main(void)
{
    check_png_pillow();
    image im = make_image(37, 21), out;
    void *png, *jpg;
    size_t png_len, jpg_len;
    CHECK(image_encode_png(&im, &png, &png_len) == 0);
    CHECK(image_encode_jpeg(&im, 95, &jpg, &jpg_len) == 0);
    CHECK(image_sniff(png, png_len) == IMAGE_PNG && image_sniff(jpg, jpg_len) == IMAGE_JPEG);

    int w, h;
    CHECK(image_probe(png, png_len, "a.png", &w, &h) == 0 && w == 37 && h == 21);
    CHECK(image_probe(jpg, jpg_len, "a.jpg", &w, &h) == 0 && w == 37 && h == 21);

    CHECK(image_decode(png, png_len, "a.png", &out) == 0);
    CHECK(out.w == 37 && out.h == 21 && memcmp(out.chw, im.chw, 3 * 37 * 21) == 0);
    image_free(&out);
    CHECK(out.chw == NULL && out.w == 0);
    image_free(NULL);

    CHECK(image_decode(jpg, jpg_len, "a.jpg", &out) == 0);
    CHECK(out.w == 37 && out.h == 21);
    double d = mean_abs_diff(&out, &im);
    CHECK_MSG(d < 3.0, "JPEG q95 mean abs error %.2f >= 3", d); /* tolerance: 3/255 */
    image_free(&out);

    /* truncated JPEG: libjpeg would grey-fill and warn; we must fail */
    CHECK(image_decode(jpg, jpg_len / 2, "cut.jpg", &out) == ERR_FORMAT);
    CHECK(strstr(err_msg(), "cut.jpg") != NULL);
    CHECK(out.chw == NULL);
    CHECK(image_decode(jpg, 20, "hdr.jpg", &out) == ERR_FORMAT);
    CHECK(image_probe(jpg, 20, "hdr.jpg", &w, &h) == ERR_FORMAT);
    /* corrupt entropy data in the middle */
    uint8_t *bad = malloc(jpg_len);
    memcpy(bad, jpg, jpg_len);
    for (size_t i = jpg_len / 2; i < jpg_len - 2; i++)
        bad[i] = 0xFF;
    int rc = image_decode(bad, jpg_len, "bad.jpg", &out);
    CHECK(rc == ERR_FORMAT);
    image_free(&out);
    free(bad);
    /* truncated PNG, bad PNG header, not an image */
    CHECK(image_decode(png, png_len / 2, "cut.png", &out) == ERR_FORMAT);
    CHECK(strstr(err_msg(), "cut.png") != NULL);
    CHECK(image_probe(png, 16, "short.png", &w, &h) == ERR_FORMAT);
    CHECK(image_decode("hello world", 11, "x.txt", &out) == ERR_FORMAT);
    CHECK(strstr(err_msg(), "not a JPEG or PNG") != NULL);
    CHECK(image_decode("", 0, "empty", &out) == ERR_FORMAT);

    /* files */
    char path[] = "/tmp/fedsm-test-image-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(image_save_png(&im, path) == 0);
    CHECK(image_load(path, &out) == 0);
    CHECK(out.w == 37 && memcmp(out.chw, im.chw, 3 * 37 * 21) == 0);
    image_free(&out);
    unlink(path);
    CHECK(image_load(path, &out) == ERR_IO);
    CHECK(image_load("/nonexistent/x.png", &out) == ERR_IO);

    /* one-pixel and odd sizes */
    image one = make_image(2, 2);
    one.w = one.h = 1;
    free(png);
    CHECK(image_encode_png(&one, &png, &png_len) == 0);
    CHECK(image_decode(png, png_len, "one.png", &out) == 0 && out.w == 1 && out.h == 1);
    image_free(&out);
    image_free(&one);

    free(png);
    free(jpg);
    image_free(&im);
    TEST_MAIN_END();
}
