/* safetensors.h - read-only, mmap'd loader of named tensors from the two files Hugging
 * Face serves for a model: model.safetensors and pytorch_model.bin (a torch.save zip
 * checkpoint, read by torchzip.c).  st_open tells them apart by their first bytes (a zip
 * starts with PK\3\4); everything else here works the same for both.
 *
 * safetensors layout: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}
 * then the byte buffer; offsets are relative to its start.  st_open checks every entry:
 * known dtype, shape product times item size equals e - b (overflow-checked), offsets
 * inside the file, no two tensors overlapping; messages name the file and the tensor.
 * For a torch checkpoint see torchzip.h (tensors may share bytes there: tied weights).
 *
 * Not here: writing (tests write fixtures with Python), what tensors mean (clip.c). */
#ifndef FEDSM_SAFETENSORS_H
#define FEDSM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum {
    ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* into the mapping; not necessarily aligned */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

/* Opens and validates path (safetensors or torch.save zip).  Returns owned or NULL (ERR_IO:
 * cannot read; ERR_FORMAT: inconsistent file, message names the tensor). */
st_file *st_open(const char *path);
void st_close(st_file *f); /* NULL-safe; pointers into the file die with it */

int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);
/* NULL when absent. */
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_path(const st_file *f);
const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t); /* bytes per element */

/* Converts a F32/F16/BF16 tensor to n floats in out (n must equal numel).  0 or
 * ERR_FORMAT (other dtype, size mismatch; message names the tensor). */
int st_to_f32(const st_file *f, const st_tensor *t, float *out, int64_t n);
/* Finds name and checks ndim and shape (entries < 0 match anything; shape may be NULL).
 * NULL with ERR_FORMAT naming the tensor when absent or of another shape. */
const st_tensor *st_get(const st_file *f, const char *name, int ndim, const int64_t *shape);

/* IEEE half / bfloat16 to float. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t h);

#endif
