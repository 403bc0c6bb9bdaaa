/* rng.h - seeded random streams (DESIGN section 6).
 *
 * Each stream is derived from (seed, purpose, round, client) by hashing, so the data split
 * never changes when a training option does.  Generator: xoshiro256** seeded by
 * splitmix64.  Not numpy's Mersenne Twister: sequences differ from the reference code's
 * (docs/algorithms.md 1.4 allows this). */
#ifndef FEDSM_RNG_H
#define FEDSM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
    double spare; /* cached second normal deviate */
    int has_spare;
} rng;

/* Stream for (seed, purpose, round, client); purpose is a short label ("dirichlet",
 * "lt", "select", "init", "shuffle", "augment", ...). */
void rng_init(rng *r, uint64_t seed, const char *purpose, int64_t round, int64_t client);
uint64_t rng_u64(rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t rng_below(rng *r, uint64_t n);
/* Uniform double in [0, 1) (53 bits). */
double rng_uniform(rng *r);
/* Standard normal (Marsaglia polar). */
double rng_normal(rng *r);
/* Gamma(shape, 1), shape > 0 (Marsaglia-Tsang, with the shape < 1 boost). */
double rng_gamma(rng *r, double shape);
/* p[0..k) ~ Dirichlet(alpha * 1_k).  Always sums to 1 (falls back to uniform on underflow). */
void rng_dirichlet(rng *r, double *p, int k, double alpha);
/* Fisher-Yates shuffles. */
void rng_shuffle_i64(rng *r, int64_t *a, size_t n);
void rng_shuffle_i32(rng *r, int32_t *a, size_t n);
/* SHA-256-free 64-bit mix of a byte string (FNV-1a then splitmix64 finaliser). */
uint64_t rng_hash(const void *data, size_t len, uint64_t h);

#endif
