/* image.c - JPEG (libjpeg-turbo) and PNG (libpng) decoding and encoding (see image.h).
 *
 * libjpeg reports errors by calling error_exit, which must not return: ours longjmps back
 * to the caller's setjmp point.  Everything allocated after setjmp lives in the
 * error-manager struct (not in locals, which longjmp may clobber), and is freed on both
 * paths.  libjpeg's warnings (e.g. "Premature end of JPEG file", after which it fills the
 * rest with grey) are errors here, except harmless extraneous bytes between markers.
 * PNG decoding uses libpng's classic API with the same setjmp discipline, and reads pixels as
 * PIL does (no gamma or colour-profile conversion, 16-bit to the high byte); encoding uses
 * the simplified API (png_image).
 *
 * Not here: resizing, colour management (neither decoder applies gAMA/ICC, as PIL). */
#include "image.h"

#include "err.h"

#include <errno.h>
#include <stdio.h> /* before jpeglib.h, which needs FILE */
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* jerror.h's message codes (JWRN_*) live in an enum only visible with JMESSAGE. */
#include <jerror.h>

image_format image_sniff(const void *buf, size_t len)
{
    const uint8_t *b = buf;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        return IMAGE_JPEG;
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return IMAGE_PNG;
    return IMAGE_UNKNOWN;
}

void image_free(image *im)
{
    if (!im)
        return;
    free(im->chw);
    im->chw = NULL;
    im->w = im->h = 0;
}

/* ---- JPEG ---- */

typedef struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    int bad_warning;
    uint8_t *volatile row; /* allocated after setjmp: freed by the caller on both paths */
    uint8_t *volatile chw;
} jerr;

static void jerr_exit(j_common_ptr c)
{
    jerr *e = (jerr *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void jerr_emit(j_common_ptr c, int level)
{
    jerr *e = (jerr *)c->err;
    if (level >= 0 || c->err->msg_code == JWRN_EXTRANEOUS_DATA)
        return; /* trace messages, and junk bytes between markers, are harmless */
    if (!e->bad_warning) {
        c->err->format_message(c, e->msg);
        e->bad_warning = 1;
    }
}

static void jerr_output(j_common_ptr c) { (void)c; } /* never print */

static void jerr_init(struct jpeg_decompress_struct *d, jerr *e)
{
    memset(e, 0, sizeof *e);
    d->err = jpeg_std_error(&e->pub);
    e->pub.error_exit = jerr_exit;
    e->pub.emit_message = jerr_emit;
    e->pub.output_message = jerr_output;
}

static int check_side(const char *name, int w, int h)
{
    if (w <= 0 || h <= 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE)
        return err_set(ERR_FORMAT, "%s: image size %dx%d out of range (1..%d per side)", name,
                       w, h, IMAGE_MAX_SIDE);
    if ((int64_t)w * h > IMAGE_MAX_PIXELS)
        return err_set(ERR_FORMAT, "%s: image size %dx%d is more than %lld pixels", name, w, h,
                       (long long)IMAGE_MAX_PIXELS);
    return 0;
}

static int jpeg_decode_mem(const void *buf, size_t len, const char *name, image *out)
{
    struct jpeg_decompress_struct d;
    jerr e;
    jerr_init(&d, &e);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&d);
        free(e.row);
        free(e.chw);
        return err_set(ERR_FORMAT, "%s: corrupt JPEG: %s", name, e.msg);
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    int cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    int rc = check_side(name, (int)d.image_width, (int)d.image_height);
    if (rc) {
        jpeg_destroy_decompress(&d);
        return rc;
    }
    jpeg_start_decompress(&d);
    int w = (int)d.output_width, h = (int)d.output_height, nc = d.output_components;
    size_t plane = (size_t)w * h;
    e.row = malloc((size_t)w * nc);
    e.chw = malloc(3 * plane);
    if (!e.row || !e.chw) {
        jpeg_destroy_decompress(&d);
        free(e.row);
        free(e.chw);
        return err_set(ERR_INTERNAL, "%s: out of memory decoding %dx%d JPEG", name, w, h);
    }
    int inverted = cmyk && d.saw_Adobe_marker; /* Adobe writes inverted CMYK */
    for (int y = 0; y < h && !e.bad_warning; y++) {
        JSAMPROW rp = e.row;
        jpeg_read_scanlines(&d, &rp, 1);
        uint8_t *r = e.chw + (size_t)y * w, *g = r + plane, *b = g + plane;
        const uint8_t *s = e.row;
        if (!cmyk) {
            for (int x = 0; x < w; x++, s += 3) {
                r[x] = s[0];
                g[x] = s[1];
                b[x] = s[2];
            }
        } else {
            for (int x = 0; x < w; x++, s += 4) {
                unsigned c = s[0], m = s[1], yy = s[2], k = s[3];
                if (!inverted) {
                    c = 255 - c, m = 255 - m, yy = 255 - yy, k = 255 - k;
                }
                r[x] = (uint8_t)((c * k + 127) / 255);
                g[x] = (uint8_t)((m * k + 127) / 255);
                b[x] = (uint8_t)((yy * k + 127) / 255);
            }
        }
    }
    if (!e.bad_warning)
        jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    free(e.row);
    if (e.bad_warning) {
        free(e.chw);
        return err_set(ERR_FORMAT, "%s: corrupt JPEG: %s", name, e.msg);
    }
    out->w = w;
    out->h = h;
    out->chw = e.chw;
    return 0;
}

static int jpeg_probe_mem(const void *buf, size_t len, const char *name, int *w, int *h)
{
    struct jpeg_decompress_struct d;
    jerr e;
    jerr_init(&d, &e);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&d);
        return err_set(ERR_FORMAT, "%s: corrupt JPEG header: %s", name, e.msg);
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    *w = (int)d.image_width;
    *h = (int)d.image_height;
    jpeg_destroy_decompress(&d);
    return check_side(name, *w, *h);
}

/* ---- PNG ---- */

/* libpng's error callback longjmps back to png_decode_mem's setjmp point (libpng requires
 * it not to return); its warnings (a bad ancillary chunk's CRC, say) are ignored. */
typedef struct pngsrc {
    const uint8_t *buf;
    size_t len, pos;
    char msg[200];
} pngsrc;

static void png_err_fn(png_structp png, png_const_charp msg)
{
    pngsrc *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg)
{
    (void)png, (void)msg;
}

static void png_read_fn(png_structp png, png_bytep data, png_size_t n)
{
    pngsrc *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "truncated");
    memcpy(data, s->buf + s->pos, n);
    s->pos += n;
}

/* Decodes to 8-bit RGB the way PIL reads a PNG (the reference of every transform): samples
 * as stored, with no gamma or colour-profile conversion (gAMA, sRGB, iCCP are ignored);
 * 16-bit samples keep their high byte; grey, palette and 1/2/4-bit data are expanded;
 * alpha and tRNS are dropped, not composited.  (libpng's simplified png_image API converts
 * 16-bit data as linear light and applies gAMA, which moved pixels by up to 73 levels.) */
static int png_decode_mem(const void *buf, size_t len, const char *name, image *out)
{
    pngsrc src = {buf, len, 0, ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_err_fn, png_warn_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        return err_set(ERR_INTERNAL, "%s: out of memory decoding PNG", name);
    }
    /* allocated after setjmp: volatile, freed on both paths */
    uint8_t *volatile hwc = NULL, *volatile chw = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(hwc);
        free(chw);
        free(rows);
        return err_set(ERR_FORMAT, "%s: corrupt PNG: %s", name, src.msg);
    }
    png_set_read_fn(png, &src, png_read_fn);
    png_set_user_limits(png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    png_read_info(png, info);
    int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    int rc = check_side(name, w, h);
    if (rc) {
        png_destroy_read_struct(&png, &info, NULL);
        return rc;
    }
    png_set_expand(png);      /* palette -> RGB, grey 1/2/4 -> 8 bits, tRNS -> alpha */
    png_set_strip_16(png);    /* 16 -> 8 bits: the high byte, as PIL */
    png_set_strip_alpha(png); /* dropped, not composited */
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)3 * w || png_get_channels(png, info) != 3)
        png_error(png, "unexpected layout after the conversion to 8-bit RGB");
    size_t plane = (size_t)w * h;
    hwc = malloc(3 * plane);
    chw = malloc(3 * plane);
    rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!hwc || !chw || !rows)
        png_error(png, "out of memory");
    for (int y = 0; y < h; y++)
        rows[y] = hwc + (size_t)3 * w * y;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    for (size_t i = 0; i < plane; i++) {
        chw[i] = hwc[3 * i];
        chw[plane + i] = hwc[3 * i + 1];
        chw[2 * plane + i] = hwc[3 * i + 2];
    }
    free(hwc);
    free(rows);
    out->w = w;
    out->h = h;
    out->chw = chw;
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int png_probe_mem(const void *buf, size_t len, const char *name, int *w, int *h)
{
    const uint8_t *b = buf;
    /* signature (8), IHDR length (4) = 13, "IHDR", width, height */
    if (len < 24 || be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
        return err_set(ERR_FORMAT, "%s: corrupt PNG header (no IHDR chunk)", name);
    uint32_t uw = be32(b + 16), uh = be32(b + 20);
    if (uw > IMAGE_MAX_SIDE || uh > IMAGE_MAX_SIDE)
        return err_set(ERR_FORMAT, "%s: image size %ux%u out of range (1..%d per side)", name,
                       uw, uh, IMAGE_MAX_SIDE);
    *w = (int)uw;
    *h = (int)uh;
    return check_side(name, *w, *h);
}

/* ---- dispatch ---- */

int image_decode(const void *buf, size_t len, const char *name, image *out)
{
    memset(out, 0, sizeof *out);
    switch (image_sniff(buf, len)) {
    case IMAGE_JPEG:
        return jpeg_decode_mem(buf, len, name, out);
    case IMAGE_PNG:
        return png_decode_mem(buf, len, name, out);
    default:
        return err_set(ERR_FORMAT, "%s: not a JPEG or PNG image (%zu bytes)", name, len);
    }
}

int image_probe(const void *buf, size_t len, const char *name, int *w, int *h)
{
    *w = *h = 0;
    switch (image_sniff(buf, len)) {
    case IMAGE_JPEG:
        return jpeg_probe_mem(buf, len, name, w, h);
    case IMAGE_PNG:
        return png_probe_mem(buf, len, name, w, h);
    default:
        return err_set(ERR_FORMAT, "%s: not a JPEG or PNG image (%zu bytes)", name, len);
    }
}

int image_read_file(const char *path, size_t max_bytes, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return err_set(ERR_INTERNAL, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max_bytes) {
                free(buf);
                fclose(f);
                return err_set(ERR_FORMAT, "%s: file larger than %zu bytes", path, max_bytes);
            }
            size_t ncap = cap * 2 > max_bytes ? max_bytes : cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return err_set(ERR_INTERNAL, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                int e = errno;
                free(buf);
                fclose(f);
                return err_set(ERR_IO, "%s: read error: %s", path, strerror(e));
            }
            break;
        }
    }
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
}

int image_load(const char *path, image *out)
{
    memset(out, 0, sizeof *out);
    void *buf;
    size_t len;
    int rc = image_read_file(path, (size_t)1 << 31, &buf, &len);
    if (rc)
        return rc;
    rc = image_decode(buf, len, path, out);
    free(buf);
    return rc;
}

/* ---- encoders ---- */

static uint8_t *to_hwc(const image *im)
{
    size_t plane = (size_t)im->w * im->h;
    uint8_t *hwc = malloc(3 * plane + 1);
    if (!hwc)
        return NULL;
    for (size_t i = 0; i < plane; i++) {
        hwc[3 * i] = im->chw[i];
        hwc[3 * i + 1] = im->chw[plane + i];
        hwc[3 * i + 2] = im->chw[2 * plane + i];
    }
    return hwc;
}

typedef struct jcerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jcerr;

static void jcerr_exit(j_common_ptr c)
{
    jcerr *e = (jcerr *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

int image_encode_jpeg(const image *im, int quality, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!im || !im->chw || check_side("jpeg encode", im->w, im->h))
        return err_set(ERR_USAGE, "image_encode_jpeg: bad image");
    uint8_t *hwc = to_hwc(im);
    if (!hwc)
        return err_set(ERR_INTERNAL, "out of memory encoding JPEG");
    struct jpeg_compress_struct c;
    jcerr e;
    memset(&e, 0, sizeof e);
    c.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = jcerr_exit;
    e.pub.output_message = jerr_output;
    /* libjpeg's memory destination: it mallocs (and grows) *mem itself */
    unsigned char *volatile mem = NULL;
    unsigned long mlen = 0;
    if (setjmp(e.jb)) {
        jpeg_destroy_compress(&c);
        free(hwc);
        free(mem);
        return err_set(ERR_INTERNAL, "JPEG encode failed: %s", e.msg);
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, (unsigned char **)&mem, &mlen);
    c.image_width = (JDIMENSION)im->w;
    c.image_height = (JDIMENSION)im->h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW rp = hwc + (size_t)c.next_scanline * im->w * 3;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(hwc);
    *out = mem;
    *len = mlen;
    return 0;
}

int image_encode_png(const image *im, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!im || !im->chw || check_side("png encode", im->w, im->h))
        return err_set(ERR_USAGE, "image_encode_png: bad image");
    uint8_t *hwc = to_hwc(im);
    if (!hwc)
        return err_set(ERR_INTERNAL, "out of memory encoding PNG");
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)im->w;
    pi.height = (png_uint_32)im->h;
    pi.format = PNG_FORMAT_RGB;
    png_alloc_size_t need = 0;
    if (!png_image_write_to_memory(&pi, NULL, &need, 0, hwc, 0, NULL)) {
        free(hwc);
        int rc = err_set(ERR_INTERNAL, "PNG encode failed: %s", pi.message);
        png_image_free(&pi);
        return rc;
    }
    void *mem = malloc(need);
    if (!mem || !png_image_write_to_memory(&pi, mem, &need, 0, hwc, 0, NULL)) {
        free(hwc);
        free(mem);
        int rc = err_set(ERR_INTERNAL, "PNG encode failed: %s", pi.message);
        png_image_free(&pi);
        return rc;
    }
    free(hwc);
    *out = mem;
    *len = need;
    return 0;
}

int image_save_png(const image *im, const char *path)
{
    void *buf;
    size_t len;
    int rc = image_encode_png(im, &buf, &len);
    if (rc)
        return rc;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(buf);
        return err_set(ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    int ok = fwrite(buf, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    free(buf);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return err_set(ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}
