/* inputs.c - meta.inputs digests (inputs.h; docs/format.md "meta"). */
#include "inputs.h"

#include "endpoint.h"
#include "err.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void inputs_init(inputs *in)
{
    in->records = mv_array();
    sha256_init(&in->opt);
    in->err = 0;
}

void inputs_add_digest(inputs *in, const char *hex)
{
    mval h = mv_str(hex);
    if (!in->err && (h.type != MV_STR || mv_arr_push(&in->records, &h)))
        in->err = err_set(ERR_INTERNAL, "out of memory for meta.inputs");
    mv_clear(&h);
}

void inputs_add_file(inputs *in, const char *spec)
{
    char hex[65] = "";
    if (strcmp(spec, "-") && !ep_is_zmq(spec) && sha256_file(spec, hex) && !in->err)
        in->err = err_last() ? err_last() : err_set(ERR_IO, "cannot read %s for its digest", spec);
    inputs_add_digest(in, hex);
}

void inputs_add_option(inputs *in, const char *name, const char *value)
{
    sha256_update(&in->opt, name, strlen(name));
    sha256_update(&in->opt, "=", 1);
    sha256_update(&in->opt, value, strlen(value));
    sha256_update(&in->opt, "\n", 1);
}

void inputs_add_option_int(inputs *in, const char *name, int64_t value)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, value);
    inputs_add_option(in, name, b);
}

void inputs_add_option_float(inputs *in, const char *name, double value)
{
    char b[40];
    snprintf(b, sizeof b, "%.17g", value);
    inputs_add_option(in, name, b);
}

int inputs_set(inputs *in, record *r)
{
    int rc = in->err;
    uint8_t d[32];
    char hex[65];
    sha256_final(&in->opt, d);
    sha256_hex(d, hex);
    mval m = mv_map(), o = mv_str(hex);
    if (!rc && (m.type != MV_MAP || mv_map_put(&m, "records", &in->records) ||
                mv_map_put(&m, "options", &o) || mv_map_put(r->meta, "inputs", &m)))
        rc = err_set(ERR_INTERNAL, "out of memory for meta.inputs");
    mv_clear(&m);
    mv_clear(&o);
    mv_clear(&in->records);
    return rc;
}

void inputs_clear(inputs *in)
{
    if (in)
        mv_clear(&in->records);
}

bool inputs_equal(const mval *a, const mval *b)
{
    if (!a || !b || a->type != MV_MAP || b->type != MV_MAP)
        return false;
    const mval *ra = mv_map_get(a, "records"), *rb = mv_map_get(b, "records");
    const mval *oa = mv_map_get(a, "options"), *ob = mv_map_get(b, "options");
    if (!ra || !rb || !oa || !ob || ra->type != MV_ARRAY || rb->type != MV_ARRAY ||
        oa->type != MV_STR || ob->type != MV_STR || ra->u.arr.n != rb->u.arr.n ||
        strcmp(oa->u.str.s, ob->u.str.s))
        return false;
    for (size_t i = 0; i < ra->u.arr.n; i++) {
        const mval *x = &ra->u.arr.items[i], *y = &rb->u.arr.items[i];
        if (x->type != MV_STR || y->type != MV_STR || strcmp(x->u.str.s, y->u.str.s))
            return false;
    }
    return true;
}
