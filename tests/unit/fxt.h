/* fxt.h - reader of the FXT1 fixture files written by tests/fixtures_nn.py and
 * tests/fixtures_creff.py (header only): b"FXT1", then entries until EOF, each
 * u32 name_len, name (utf-8), u64 count, count little-endian float32 values. */
#ifndef FEDSM_FXT_H
#define FEDSM_FXT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fxt_entry {
    char name[160];
    uint64_t n;
    float *v;
} fxt_entry;
typedef struct fxt {
    fxt_entry *e;
    int n;
} fxt;

/* 0, or -1 when the file is missing or not FXT1 (a truncated tail is dropped). */
static inline int fxt_load(fxt *f, const char *path)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    char magic[4];
    if (!fp)
        return -1;
    if (fread(magic, 1, 4, fp) != 4 || memcmp(magic, "FXT1", 4)) {
        fclose(fp);
        return -1;
    }
    uint32_t len;
    while (fread(&len, 4, 1, fp) == 1) {
        fxt_entry e = {0};
        if (len >= sizeof e.name || fread(e.name, 1, len, fp) != len || fread(&e.n, 8, 1, fp) != 1)
            break;
        e.v = malloc(sizeof(float) * (e.n ? e.n : 1));
        if (!e.v || fread(e.v, 4, e.n, fp) != e.n) {
            free(e.v);
            break;
        }
        fxt_entry *ne = realloc(f->e, sizeof *f->e * (f->n + 1));
        if (!ne) {
            free(e.v);
            break;
        }
        f->e = ne;
        f->e[f->n++] = e;
    }
    fclose(fp);
    return 0;
}

/* The values of entry `name` when it has exactly n of them (n 0: any count), else NULL
 * (and a message on stderr, so a missing fixture entry fails loudly). */
static inline const float *fxt_get(const fxt *f, const char *name, uint64_t n)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name)) {
            if (n && f->e[i].n != n) {
                fprintf(stderr, "fixture %s: %llu values, expected %llu\n", name,
                        (unsigned long long)f->e[i].n, (unsigned long long)n);
                return NULL;
            }
            return f->e[i].v;
        }
    fprintf(stderr, "fixture entry %s missing\n", name);
    return NULL;
}

static inline void fxt_free(fxt *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->e[i].v);
    free(f->e);
    memset(f, 0, sizeof *f);
}

/* max |a - b| over n values */
static inline double fxt_maxdiff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] > b[i] ? (double)a[i] - b[i] : (double)b[i] - a[i];
        if (d != d)
            return 1e30; /* NaN */
        if (d > m)
            m = d;
    }
    return m;
}

#endif
