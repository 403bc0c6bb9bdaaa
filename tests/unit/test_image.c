/* test_image.c - JPEG/PNG round trips through lib/data/image.c (PNG exact, JPEG within a stated
 * tolerance), header probing, and corrupt/truncated input as ERR_FORMAT naming the image
 * (no crash, no leak under ASan). */
#include "err.h"
#include "image.h"
#include "testlib.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
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
