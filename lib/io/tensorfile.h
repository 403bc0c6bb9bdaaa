/* tensorfile.h - the tensor table the weight-file readers fill: st_tensor (a name, a dtype
 * of the safetensors set, a shape, and bytes inside a read-only mapping) and the dtype
 * helpers.  safetensors.c (model.safetensors) and torchzip.c (torch.save zip checkpoints)
 * both produce it; st_open in safetensors.h picks the reader.  Kept apart so that neither
 * reader's header includes the other's.
 *
 * Not here: opening files (safetensors.h), records' tensors (record.h). */
#ifndef FEDSM_TENSORFILE_H
#define FEDSM_TENSORFILE_H

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

const char *st_dtype_name(st_dtype t); /* "F32", ...; "?" for an invalid value */
size_t st_dtype_size(st_dtype t);      /* bytes per element */

/* IEEE half / bfloat16 to float. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t h);

#endif
