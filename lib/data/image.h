/* image.h - image decoding (JPEG via libjpeg-turbo, PNG via libpng) and encoding.
 *
 * Images are 8-bit RGB, stored planar C-order [3, H, W] (the layout of shard `images`
 * tensors) unless a function says HWC.  Grayscale and palette inputs become RGB; alpha
 * is dropped (not composited); CMYK/YCCK JPEGs are converted to RGB.  Pixels are what PIL
 * reads (the reference of the transforms): no gamma or colour-profile conversion (gAMA,
 * sRGB, iCCP ignored), 16-bit PNG samples keep their high byte.  Corrupt or
 * truncated data is an error (ERR_FORMAT naming the image), never a grey-filled picture.
 * Thread-safe: no shared state (each call has its own decoder).
 *
 * Not here: resizing and cropping (a model's preprocessing). */
#ifndef FEDSM_IMAGE_H
#define FEDSM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#define IMAGE_MAX_SIDE 65535
/* At most 2^28 pixels (16384 x 16384; 768 MiB decoded), checked from the header before any
 * pixel memory is allocated: a 65500 x 65500 header in a few bytes is bad input (exit 3), not
 * an out-of-memory failure.  Far above any photo of the datasets used (ImageNet's largest is
 * about 2^25). */
#define IMAGE_MAX_PIXELS ((int64_t)1 << 28)

typedef struct image {
    int w, h;      /* pixels */
    uint8_t *chw;  /* owned, 3*h*w bytes, planar R, G, B */
} image;

typedef enum { IMAGE_UNKNOWN = 0, IMAGE_JPEG, IMAGE_PNG } image_format;

/* Format from the magic bytes (IMAGE_UNKNOWN when neither). */
image_format image_sniff(const void *buf, size_t len);

/* Decodes a JPEG or PNG held in memory (format sniffed from the magic bytes).  name labels
 * error messages.  Returns 0 or ERR_FORMAT (unreadable/corrupt image); out->chw is owned
 * (free with image_free). Refuses images larger than 65535 on a side or of more than
 * IMAGE_MAX_PIXELS pixels (from the header, before decoding). */
int image_decode(const void *buf, size_t len, const char *name, image *out);
/* Reads and decodes a file; ERR_IO when it cannot be read. */
int image_load(const char *path, image *out);
void image_free(image *im); /* NULL-safe; leaves im zeroed */

/* Reads only the header of an in-memory JPEG or PNG: its width and height.  0 or
 * ERR_FORMAT (naming name).  Cheap: no pixel data is decoded. */
int image_probe(const void *buf, size_t len, const char *name, int *w, int *h);

/* Reads a whole file into a malloc'd buffer (*out, owned by the caller).  max_bytes bounds
 * the size (ERR_FORMAT when larger).  0, ERR_IO (cannot open/read) or ERR_INTERNAL. */
int image_read_file(const char *path, size_t max_bytes, void **out, size_t *len);

/* Encoders (for tests, reports and pictures).  *out is malloc'd, owned by the caller.
 * quality: 1..100.  Return 0 or a negative error. */
int image_encode_jpeg(const image *im, int quality, void **out, size_t *len);
int image_encode_png(const image *im, void **out, size_t *len);
/* Writes im as PNG to path (path.tmp.<pid>, then renamed).  0 or ERR_IO. */
int image_save_png(const image *im, const char *path);

#endif
