/* image.h - image decoding (JPEG via libjpeg-turbo, PNG via libpng) and resizing.
 *
 * Images are 8-bit RGB, stored planar C-order [3, H, W] (the layout of shard `images`
 * tensors) unless a function says HWC.  Grayscale and palette inputs become RGB; alpha
 * is dropped. */
#ifndef FEDSM_IMAGE_H
#define FEDSM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct image {
    int w, h;      /* pixels */
    uint8_t *chw;  /* owned, 3*h*w bytes, planar R, G, B */
} image;

/* Decodes a JPEG or PNG held in memory (format sniffed from the magic bytes).  name labels
 * error messages.  Returns 0 or ERR_FORMAT (unreadable/corrupt image); out->chw is owned
 * (free with image_free). Refuses images larger than 65535 on a side. */
int image_decode(const void *buf, size_t len, const char *name, image *out);
/* Reads and decodes a file; ERR_IO when it cannot be read. */
int image_load(const char *path, image *out);
void image_free(image *im); /* NULL-safe; leaves im zeroed */

#endif
