/* teacher.c - the checked reader of `teacher` records (teacher.h): rows matched to a
 * shard's samples through a sorted (index, row) table, one binary search a sample. */
#include "teacher.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

int teacher_rows(float *out, const record *t, const int64_t *index, int64_t n, int C)
{
    const tensor *lg = rec_get(t, "logits", DT_F32, 2, (int64_t[]){-1, C});
    if (!lg)
        return err_last();
    int64_t nt = lg->shape[0];
    const tensor *ix = rec_get(t, "index", DT_I64, 1, (int64_t[]){nt});
    if (!ix)
        return err_last();
    const float *l = lg->data;
    for (int64_t i = 0; i < nt * C; i++)
        if (!isfinite(l[i]))
            return err_set(ERR_FORMAT, "teacher %s (record %ld, tensor logits): %g at row %lld, "
                                       "class %lld: not finite",
                           t->src, t->index, l[i], (long long)(i / C), (long long)(i % C));
    int64_t *pairs = malloc((size_t)(nt ? nt : 1) * 2 * sizeof *pairs);
    if (!pairs)
        return err_set(ERR_INTERNAL, "out of memory for a teacher of %lld rows", (long long)nt);
    const int64_t *iv = ix->data;
    for (int64_t i = 0; i < nt; i++)
        pairs[2 * i] = iv[i], pairs[2 * i + 1] = i;
    qsort(pairs, (size_t)nt, 2 * sizeof *pairs, cmp_pair);
    int rc = 0;
    for (int64_t i = 0; i < nt && !rc; i++)
        if (pairs[2 * i] < 0 || (i && pairs[2 * i] == pairs[2 * i - 2]))
            rc = err_set(ERR_FORMAT, "teacher %s (record %ld, tensor index): sample index %lld %s",
                         t->src, t->index, (long long)pairs[2 * i],
                         pairs[2 * i] < 0 ? "is negative" : "appears twice");
    for (int64_t i = 0; i < n && !rc; i++) {
        int64_t key[2] = {index[i], 0};
        const int64_t *hit = bsearch(key, pairs, (size_t)nt, 2 * sizeof *pairs, cmp_pair);
        if (!hit)
            rc = err_set(ERR_FORMAT, "teacher %s (record %ld) has no logits for sample index %lld "
                                     "of the shard; was it made from this shard?",
                         t->src, t->index, (long long)index[i]);
        else
            memcpy(out + i * C, l + hit[1] * C, (size_t)C * sizeof *out);
    }
    free(pairs);
    return rc;
}
