/* simd.h - small AVX-512 helpers shared by the kernels (lib/nn/, clip.c).
 * Include only where __AVX512F__ is defined. */
#ifndef FEDSM_SIMD_H
#define FEDSM_SIMD_H

#include <immintrin.h>

/* lanes [0, n) of a 16-lane mask: none for n <= 0, all for n >= 16 */
static inline __mmask16 lanes(int n)
{
    return (__mmask16)(n >= 16 ? 0xFFFF : n <= 0 ? 0 : (1u << n) - 1);
}

#endif
