/* select.c - the seeded client selection of a round (API and rule in select.h). */
#include "select.h"

#include "rng.h"

#include <stdlib.h>

void fl_select_order(int64_t *order, int64_t n, uint64_t seed, int64_t round)
{
    rng r;
    rng_init(&r, seed, "select", round, 0);
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    rng_shuffle_i64(&r, order, (size_t)n);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t fl_select_present(int64_t *out, int64_t k, const int64_t *order, int64_t n,
                          const bool *present)
{
    int64_t m = 0;
    for (int64_t i = 0; i < n && m < k; i++)
        if (!present || present[order[i]])
            out[m++] = order[i];
    qsort(out, (size_t)m, sizeof *out, cmp_i64);
    return m;
}
