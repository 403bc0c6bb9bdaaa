/* mval.h - meta values: a small tree of msgpack scalars, arrays and string-keyed maps (the
 * "meta" of a record, DESIGN section 2), with JSON and one-line summaries of it.
 * Ownership: an mval owns what it holds; mv_map_put and mv_arr_push take ownership.
 * Not here: the msgpack codec (record.c) and records themselves (record.h). */
#ifndef FEDSM_MVAL_H
#define FEDSM_MVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- meta values: a small tree of msgpack scalars, arrays and string-keyed maps ---- */
typedef enum { MV_NIL = 0, MV_BOOL, MV_INT, MV_FLOAT, MV_STR, MV_ARRAY, MV_MAP } mv_type;

typedef struct mval mval;
struct mval {
    mv_type type;
    union {
        bool b;
        int64_t i;
        double f;
        struct { char *s; size_t len; } str; /* NUL-terminated as well */
        struct { mval *items; size_t n, cap; } arr;
        struct { char **keys; mval *vals; size_t n, cap; } map;
    } u;
};

mval *mv_new_map(void);
void mv_free(mval *v);          /* frees v and everything under it; NULL-safe */
void mv_clear(mval *v);         /* frees what v holds, leaves v as MV_NIL */
int mv_copy(mval *dst, const mval *src);
/* Map access.  mv_map_get returns NULL when absent (or when m is not a map). */
const mval *mv_map_get(const mval *m, const char *key);
/* Sets key to *v, taking ownership of what v holds (v is left MV_NIL). Replaces. */
int mv_map_put(mval *m, const char *key, mval *v);
/* Appends *v (taking ownership) to an array. */
int mv_arr_push(mval *a, mval *v);
/* Scalars made into mval (by value; strings are copied). */
mval mv_int(int64_t i);
mval mv_float(double f);
mval mv_bool(bool b);
mval mv_str(const char *s);
mval mv_array(void);
mval mv_map(void);

/* Human-readable one-line summary of a meta map ("round=3 client=7 ...", at most len). */
void mv_summary(const mval *m, char *buf, size_t len);
/* Writes v as JSON to f (strings escaped; non-finite floats as null). */
void mv_write_json(const mval *v, void *FILE_ptr);

#endif
