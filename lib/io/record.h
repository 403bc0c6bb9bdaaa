/* record.h - fedsm records: the wire format of DESIGN section 2, and its streams.
 *
 * A record is one MessagePack map compressed as one zstd frame:
 *   {"fedsm": 1, "kind": "model", "meta": {...}, "tensors": {name: tensor, ...}}
 * A tensor is the msgpack-numpy map {"nd": true, "type": "<f4", "kind": "",
 * "shape": [..], "data": <bin>}, C order, little-endian.  Types: <f4 <f2 <i4 <i8 |u1.
 *
 * Ownership: a record owns its meta tree and its tensor table.  Tensor data is either
 * owned (freed with the record) or borrowed (the caller keeps it alive until the
 * record is written and freed; nothing is copied).  Tensors read from a stream are
 * owned, 64-byte aligned, and safe to cast to float/int32_t/... pointers.
 *
 * Not here: endpoints (endpoint.h) and what a kind's tensors mean (the tools). */
#ifndef FEDSM_RECORD_H
#define FEDSM_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mval.h"

#define FEDSM_FORMAT_VERSION 1
#define TENSOR_MAX_DIMS 8
#define TENSOR_NAME_MAX 128

typedef enum { DT_F32 = 0, DT_F16, DT_I32, DT_I64, DT_U8, DT_COUNT } dtype_t;

/* "<f4" etc.; NULL for an invalid value. */
const char *dtype_str(dtype_t t);
size_t dtype_size(dtype_t t);
/* Parses "<f4" etc.; returns -1 for anything else. */
int dtype_parse(const char *s, size_t len);

typedef struct tensor {
    char name[TENSOR_NAME_MAX];
    dtype_t dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    void *data;    /* nbytes bytes; NULL only when nbytes == 0 */
    size_t nbytes; /* product(shape) * dtype_size */
    bool owned;    /* freed (aligned_free) with the record */
} tensor;

/* Number of elements (product of shape; 1 for a scalar). */
int64_t tensor_numel(const tensor *t);

/* ---- records ---- */
typedef struct record {
    char kind[32];
    mval *meta; /* always a map */
    tensor *tensors;
    int n_tensors, cap_tensors;
    /* where it came from, for error messages (set by readers; "" when built) */
    char src[256];
    long index; /* 0-based position in its stream, -1 when built */
} record;

/* Where r came from, for error messages: "stream S, record N" for a record read from a
 * stream, "stream S" when its position is unknown, "K record" (its kind) for one built
 * in memory; never an empty name or a "record -1".  Fills buf (len bytes), returns it. */
const char *rec_origin(const record *r, char *buf, size_t len);

/* Returns owned, or NULL (out of memory).  kind is one of DESIGN's kinds. */
record *rec_new(const char *kind);
void rec_free(record *r); /* NULL-safe */

enum { REC_BORROW = 0, REC_OWN = 1, REC_COPY = 2 };
/* Adds a tensor.  mode: REC_BORROW (no copy; caller keeps data alive), REC_OWN (the record
 * frees data with aligned_free; data must come from aligned_alloc64), REC_COPY.
 * Names must be unique; returns 0 or a negative error. */
int rec_add(record *r, const char *name, dtype_t dt, int ndim, const int64_t *shape,
            void *data, int mode);
/* Allocates a zeroed owned tensor and returns its data pointer (NULL on failure). */
void *rec_add_new(record *r, const char *name, dtype_t dt, int ndim, const int64_t *shape);
/* Unchecked lookup: NULL when absent. */
const tensor *rec_find(const record *r, const char *name);
/* Checked lookup: the tensor must exist with dtype dt and ndim dims; shape entries >= 0
 * must match (pass -1 for "any"; shape may be NULL to skip).  On failure sets a message
 * naming the stream, record and tensor, and returns NULL. */
const tensor *rec_get(const record *r, const char *name, dtype_t dt, int ndim,
                      const int64_t *shape);
/* Removes and frees a tensor; returns 0 or -1 when absent. */
int rec_remove(record *r, const char *name);

/* Meta helpers on r->meta (set replaces; strings copied). */
int rec_set_int(record *r, const char *key, int64_t v);
int rec_set_float(record *r, const char *key, double v);
int rec_set_str(record *r, const char *key, const char *v);
int rec_set_bool(record *r, const char *key, bool v);
int rec_set_strs(record *r, const char *key, const char *const *v, size_t n);
int rec_set_ints(record *r, const char *key, const int64_t *v, size_t n);
int rec_set_floats(record *r, const char *key, const double *v, size_t n);
/* Checked getters: ERR_FORMAT with a message naming stream/record/field when the key is
 * missing or of another type.  The int getter accepts integral floats; the float getter
 * accepts ints. */
int rec_get_int(const record *r, const char *key, int64_t *out);
int rec_get_float(const record *r, const char *key, double *out);
int rec_get_str(const record *r, const char *key, const char **out);
/* Array of strings: *out is a newly malloc'd array of borrowed pointers (free(*out)). */
int rec_get_strs(const record *r, const char *key, const char ***out, size_t *n);
/* Optional variants: return 0 and leave *out untouched when the key is absent. */
int rec_opt_int(const record *r, const char *key, int64_t *out);
int rec_opt_float(const record *r, const char *key, double *out);
int rec_opt_str(const record *r, const char *key, const char **out);

/* ---- encoding and decoding (the bytes of one record, before/after zstd) ---- */

/* Limits applied while decoding hostile input. */
typedef struct rec_limits {
    uint64_t max_record_bytes; /* decompressed size of one record (default 64 GiB) */
    int max_depth;             /* meta nesting (default 32) */
    uint64_t max_items;        /* entries in one map/array (default 1<<24) */
    int max_tensors;           /* tensors per record (default 65536) */
} rec_limits;
void rec_limits_default(rec_limits *l);

/* A sink for compressed bytes: write(ctx, buf, len) returns 0 or a negative error. */
typedef int (*rec_sink_fn)(void *ctx, const void *buf, size_t len);

/* Compresses r as one zstd frame into sink.  level: zstd level (0 = default 3).
 * Large tensor data is fed to zstd straight from the tensor (no copy).
 * If digest is non-NULL it receives the SHA-256 of the uncompressed msgpack bytes. */
int rec_encode(const record *r, int level, rec_sink_fn sink, void *ctx, uint8_t digest[32]);
/* Convenience: the whole compressed frame in a malloc'd buffer. */
int rec_encode_mem(const record *r, int level, void **out, size_t *out_len);

/* Decodes one record from a complete zstd frame in memory (len bytes; exactly one frame).
 * name/index label error messages.  Returns owned record or NULL (err_msg says why). */
record *rec_decode_mem(const void *buf, size_t len, const rec_limits *lim, const char *name,
                       long index);

/* A stream of records from a source of compressed bytes: read(ctx, buf, cap) returns
 * bytes read (> 0), 0 at end of input, or a negative error (with err_set).  Frames are
 * decoded one at a time with bounded memory; a truncated last frame is an error.  zstd
 * skippable frames hold no record and are passed over (docs/format.md). */
typedef long (*rec_source_fn)(void *ctx, void *buf, size_t cap);
typedef struct rec_instream rec_instream;
/* name labels error messages (copied).  lim may be NULL for defaults. */
rec_instream *rec_instream_new(rec_source_fn fn, void *ctx, const char *name,
                               const rec_limits *lim);
/* 1: *out is an owned record; 0: clean end of input; < 0: error (err_msg). */
int rec_instream_next(rec_instream *s, record **out);
/* Records decoded so far. */
long rec_instream_count(const rec_instream *s);
void rec_instream_free(rec_instream *s); /* NULL-safe */

/* ---- misc ---- */
void *aligned_alloc64(size_t n); /* 64-byte aligned, n may be 0; NULL on failure */
void aligned_free(void *p);
#endif
