/* fuzz_readers.c - libFuzzer target for the readers of the record kinds fuzz_methods does
 * not cover (docs/format.md): model and update (model_check_record, model_from_record,
 * lib/models/model.h), shard (shard_load, lib/data/shard.h, through a stream file as the
 * tools read it), teacher (teacher_rows, lib/fl/teacher.h) and the embeddings record's
 * relevance / text tensors (relevance_tensor, lib/fl/relevance.h).  The input is decoded as
 * one record (rec_decode_mem, as a ZeroMQ message) for the record readers, and loaded as a
 * whole stream (an in-memory file opened by path) for the shard reader.  A reader that
 * accepts its input must hand back what it promised (sizes, labels in range, finite
 * values; every value is read here, so ASan sees an out-of-bounds one).
 * model_from_record runs only on records whose meta declares a small model (width <= 16,
 * depth <= 20): the model is allocated from the meta before its tensors are compared, so a
 * tiny record declaring a wide, deep model costs that allocation first (a known
 * limitation, not what this target looks for).  Seeds: tests/fuzz/make_corpus_readers.py
 * -> tests/fuzz/corpus-readers; run by tests/fuzz/run.sh.  FUZZ_SHOW=1 prints which readers
 * accepted each input (the valid seeds must reach the accepting paths): run the binary on
 * the seed files themselves. */
#include "endpoint.h"
#include "err.h"
#include "model.h"
#include "record.h"
#include "relevance.h"
#include "shard.h"
#include "teacher.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define C 4

static void show(const char *what)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FUZZ_SHOW") != NULL;
    if (on)
        fprintf(stderr, "accepted by %s\n", what);
}

static void check_model(const record *r)
{
    if (model_check_record(r))
        return;
    int64_t w = 0, d = 0;
    if (rec_get_int(r, "width", &w) || rec_get_int(r, "depth", &d) || w > 16 || d > 20) {
        err_clear();
        return;
    }
    model *m = model_from_record(r);
    if (!m)
        return;
    const model_tensor *fc = model_find(m, "fc.weight");
    if (!fc || m->cfg.num_classes < 1)
        __builtin_trap();
    for (size_t i = 0; i < m->n_total; i++) /* model_check_record: every <f4 value finite */
        if (!isfinite(m->params[i]))
            __builtin_trap();
    show("model_from_record");
    model_free(m);
}

static void check_teacher(const record *r)
{
    int64_t index[3] = {0, 1, 2};
    float out[3 * C];
    if (teacher_rows(out, r, index, 3, C))
        return;
    for (int i = 0; i < 3 * C; i++)
        if (!isfinite(out[i]))
            __builtin_trap();
    show("teacher_rows");
}

static void check_relevance(const record *r)
{
    const float *v = NULL;
    if (relevance_tensor(r, "relevance", C, C, &v) == 0) {
        for (int i = 0; i < C * C; i++)
            if (!isfinite(v[i]))
                __builtin_trap();
        show("relevance_tensor relevance");
    }
    const tensor *t = rec_find(r, "text");
    if (relevance_tensor(r, "text", C, -1, &v) == 0) {
        if (!t || t->ndim != 2 || t->shape[0] != C || t->shape[1] < 1 || v != t->data)
            __builtin_trap();
        for (int64_t i = 0; i < C * t->shape[1]; i++)
            if (!isfinite(v[i]))
                __builtin_trap();
        show("relevance_tensor text");
    }
}

static void check_shard(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-shard", 0);
    if (fd < 0)
        return;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ep_opts o;
    ep_opts_default(&o);
    shard *s = shard_load(path, &o);
    if (s) {
        if (s->n < 1 || s->num_classes < 1 || !s->labels || !s->index || (!s->images && !s->bytes))
            __builtin_trap();
        int64_t acc = 0;
        for (int64_t i = 0; i < s->n; i++) {
            if (s->labels[i] < 0 || s->labels[i] >= s->num_classes)
                __builtin_trap();
            acc += s->index[i];
        }
        if (s->images)
            acc += s->images[(size_t)s->n * s->c * s->h * s->w - 1];
        else
            for (int64_t i = 0; i < s->n; i++)
                if (s->offsets[i] > s->offsets[i + 1])
                    __builtin_trap();
        (void)acc;
        show(s->images ? "shard_load (decoded)" : "shard_load (encoded)");
        shard_free(s);
    }
    close(fd);
    err_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rec_limits lim;
    rec_limits_default(&lim);
    record *r = rec_decode_mem(data, size, &lim, "fuzz", 0);
    if (r) {
        check_model(r);
        check_teacher(r);
        check_relevance(r);
        rec_free(r);
    }
    err_clear();
    check_shard(data, size);
    return 0;
}
