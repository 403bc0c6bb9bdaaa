/* fuzz_record.c - libFuzzer target for the record decoder (DESIGN section 2).
 *
 * Feeds the input (a) to rec_decode_mem as one ZeroMQ message would be, and (b) to the
 * streaming reader over a memory source that hands out small, uneven pieces, reading records
 * until the end or the first error, as a file or pipe would be read.  Any crash, leak,
 * sanitizer report or oversized allocation is a bug.  Run by tests/fuzz/run.sh. */
#include "err.h"
#include "record.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct piece_src {
    const uint8_t *p;
    size_t len, pos, step;
} piece_src;

static long piece_read(void *ctx, void *buf, size_t cap)
{
    piece_src *m = ctx;
    size_t n = m->len - m->pos;
    if (n > cap)
        n = cap;
    if (n > m->step)
        n = m->step;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    m->step = m->step * 3 % 4093 + 1; /* uneven piece sizes */
    return (long)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rec_limits lim;
    rec_limits_default(&lim);
    /* default limits (64 GiB records): declared lengths must stay bounded by themselves */

    record *r = rec_decode_mem(data, size, &lim, "fuzz", 0);
    if (r) {
        /* a decoded record must re-encode and decode to itself */
        void *buf = NULL;
        size_t len = 0;
        if (rec_encode_mem(r, 1, &buf, &len) == 0) {
            record *r2 = rec_decode_mem(buf, len, &lim, "re-encoded", 0);
            if (!r2 || r2->n_tensors != r->n_tensors)
                __builtin_trap();
            for (int i = 0; i < r->n_tensors; i++)
                if (r2->tensors[i].nbytes != r->tensors[i].nbytes ||
                    (r->tensors[i].nbytes &&
                     memcmp(r2->tensors[i].data, r->tensors[i].data, r->tensors[i].nbytes)))
                    __builtin_trap();
            rec_free(r2);
            free(buf);
        }
        rec_free(r);
    }
    err_clear();

    piece_src src = {data, size, 0, 1 + size % 17};
    rec_instream *s = rec_instream_new(piece_read, &src, "fuzz-stream", &lim);
    if (s) {
        record *x;
        for (int n = 0; n < 64 && rec_instream_next(s, &x) == 1; n++)
            rec_free(x);
        rec_instream_free(s);
    }
    return 0;
}
