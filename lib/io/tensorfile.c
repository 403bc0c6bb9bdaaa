/* tensorfile.c - the dtype helpers of tensorfile.h, shared by the safetensors and
 * torch.save readers.  Not here: any file parsing. */
#include "tensorfile.h"

#include <string.h>

static const char *const dt_names[ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "F64", "I64",
                                                     "I32", "I16", "I8",  "U8",  "BOOL"};
static const size_t dt_sizes[ST_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

const char *st_dtype_name(st_dtype t) { return t < ST_DTYPE_COUNT ? dt_names[t] : "?"; }
size_t st_dtype_size(st_dtype t) { return t < ST_DTYPE_COUNT ? dt_sizes[t] : 1; }

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 1024));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float st_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
