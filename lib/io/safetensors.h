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
 * The tensor table and dtype helpers are in tensorfile.h (included here).
 *
 * Not here: writing (tests write fixtures with Python), what tensors mean (clip.c). */
#ifndef FEDSM_SAFETENSORS_H
#define FEDSM_SAFETENSORS_H

#include "tensorfile.h"

#include <stddef.h>
#include <stdint.h>

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

/* Converts a F32/F16/BF16 tensor to n floats in out (n must equal numel).  0 or
 * ERR_FORMAT (other dtype, size mismatch; message names the tensor). */
int st_to_f32(const st_file *f, const st_tensor *t, float *out, int64_t n);
/* Finds name and checks ndim and shape (entries < 0 match anything; shape may be NULL).
 * NULL with ERR_FORMAT naming the tensor when absent or of another shape. */
const st_tensor *st_get(const st_file *f, const char *name, int ndim, const int64_t *shape);

#endif
