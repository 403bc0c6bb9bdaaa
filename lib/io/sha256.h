/* sha256.h - SHA-256 (FIPS 180-4) for digests of records, files and options (the cache
 * keys of DESIGN section 6, and download checksums). */
#ifndef FEDSM_SHA256_H
#define FEDSM_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* 64 lowercase hex digits + NUL. */
void sha256_hex(const uint8_t d[32], char hex[65]);
/* Digest of a whole file; 0 or ERR_IO. */
int sha256_file(const char *path, char hex[65]);

#endif
