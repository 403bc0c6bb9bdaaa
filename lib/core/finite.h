/* finite.h - the one scan for NaN/Inf that every reader of weights runs on what it loads
 * (model records, CLIP weights): fast enough to run on each load (ResNet-50's 25M floats). */
#ifndef FEDSM_FINITE_H
#define FEDSM_FINITE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Index of the first non-finite float of p[0, n), or -1.  The scan tests the exponent bits
 * (all ones: Inf or NaN) with an OR over blocks, which compilers vectorise, and looks for
 * the index only in a block that has one. */
static inline int64_t first_nonfinite(const float *p, int64_t n)
{
    const int64_t blk = 4096;
    for (int64_t b0 = 0; b0 < n; b0 += blk) {
        int64_t b1 = n - b0 < blk ? n : b0 + blk;
        uint32_t any = 0;
        for (int64_t j = b0; j < b1; j++) {
            uint32_t u;
            memcpy(&u, p + j, 4);
            any |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (any)
            for (int64_t j = b0; j < b1; j++)
                if (!isfinite(p[j]))
                    return j;
    }
    return -1;
}

#endif
