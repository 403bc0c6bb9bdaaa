/* fuzz_methods.c - libFuzzer target for the readers of the method records (docs/format.md:
 * gradients, prototypes, features): arbitrary bytes go through the record decoder (one message, as
 * rec_decode_mem reads a ZeroMQ message) and every decoded record through
 * classgrad_from_record (lib/fl/classgrad.h), proto_from_record (lib/fl/proto.h), once
 * with the record's own sizes (-1) and once with the fixed sizes C 4, D 8 of the seeds, and
 * head_features_from_record (lib/fl/head.h) with C 4, D 8.  A
 * reader that accepts a record must hand back arrays of the sizes it promised, all finite
 * (every value is read here, so ASan sees an out-of-bounds one).  Seeds:
 * tests/fuzz/make_corpus_methods.py -> tests/fuzz/corpus-methods; run by tests/fuzz/run.sh. */
#include "classgrad.h"
#include "err.h"
#include "head.h"
#include "proto.h"
#include "record.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static void check_classgrad(const record *r, int C, int D)
{
    classgrad *g = classgrad_from_record(r, C, D);
    if (!g)
        return;
    if (g->k < 0 || g->num_classes < 1 || g->feat_dim < 1 || (C > 0 && g->num_classes != C) ||
        (D > 0 && g->feat_dim != D) || g->k > g->num_classes)
        __builtin_trap();
    for (int i = 0; i < g->k; i++) {
        if (g->classes[i] < 0 || g->classes[i] >= g->num_classes || g->counts[i] < 0 ||
            (i && g->classes[i] <= g->classes[i - 1]))
            __builtin_trap();
    }
    size_t nw = (size_t)g->k * (size_t)g->num_classes * (size_t)g->feat_dim;
    size_t nb = (size_t)g->k * (size_t)g->num_classes;
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(g->weight[i]))
            __builtin_trap();
    for (size_t i = 0; i < nb; i++)
        if (!isfinite(g->bias[i]))
            __builtin_trap();
    classgrad_free(g);
}

static void check_proto(const record *r, int C, int D)
{
    const float *means = NULL;
    const int64_t *counts = NULL;
    if (proto_from_record(r, C, D, &means, &counts))
        return;
    /* the arrays handed back are the record's: means [c, d], counts [c] */
    const tensor *t = rec_find(r, "means"), *n = rec_find(r, "counts");
    if (!t || !n || t->ndim != 2 || n->ndim != 1 || means != t->data || counts != n->data)
        __builtin_trap();
    int64_t c = t->shape[0], d = t->shape[1];
    if ((C > 0 && c != C) || (D > 0 && d != D) || n->shape[0] != c)
        __builtin_trap();
    for (int64_t i = 0; i < c * d; i++)
        if (!isfinite(means[i]))
            __builtin_trap();
    for (int64_t i = 0; i < c; i++)
        if (counts[i] < 0)
            __builtin_trap();
}

static void check_features(const record *r, int C, int D)
{
    const float *x = NULL;
    const int32_t *y = NULL;
    int64_t n = 0;
    if (head_features_from_record(r, C, D, &x, &y, &n))
        return;
    const tensor *f = rec_find(r, "features"), *l = rec_find(r, "labels");
    if (!f || !l || f->ndim != 2 || l->ndim != 1 || x != f->data || y != l->data ||
        f->shape[0] != n || f->shape[1] != D || l->shape[0] != n || n < 1)
        __builtin_trap();
    for (int64_t i = 0; i < n * D; i++)
        if (!isfinite(x[i]))
            __builtin_trap();
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= C)
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rec_limits lim;
    rec_limits_default(&lim);
    record *r = rec_decode_mem(data, size, &lim, "fuzz", 0);
    if (r) {
        check_classgrad(r, -1, -1);
        check_classgrad(r, 4, 8);
        check_proto(r, -1, -1);
        check_proto(r, 4, 8);
        check_features(r, 4, 8);
        rec_free(r);
    }
    err_clear();
    return 0;
}
