/* safetensors.c - the mmap'd safetensors reader of safetensors.h.  Follows the format
 * description of huggingface/safetensors (README "Format"): 8-byte little-endian header
 * size, JSON header, byte buffer.  The header is limited to 100 MB as in the reference.
 * st_open hands a zip archive (a torch.save checkpoint) to torchzip.c and refuses the
 * legacy torch.save format with a sentence saying what to do. */
#include "safetensors.h"

#include "err.h"
#include "json.h"
#include "torchzip.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20)

struct st_file {
    char *path;
    void *map;
    size_t map_len;
    st_tensor *t;
    int n;
};

static int cmp_off(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

/* Fills t from one header entry; data_base/data_len describe the byte buffer. */
static int parse_entry(const char *path, const char *name, const json *e, st_tensor *t,
                       const char *data_base, uint64_t data_len)
{
    if (e->type != JSON_OBJ)
        return err_set(ERR_FORMAT, "%s: tensor '%s': header entry is not an object", path, name);
    const json *dt = json_get(e, "dtype"), *sh = json_get(e, "shape"),
               *off = json_get(e, "data_offsets");
    if (!dt || dt->type != JSON_STR)
        return err_set(ERR_FORMAT, "%s: tensor '%s': missing dtype", path, name);
    int d = -1;
    for (int k = 0; k < ST_DTYPE_COUNT; k++)
        if (!strcmp(dt->str, st_dtype_name((st_dtype)k))) d = k;
    if (d < 0)
        return err_set(ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", path, name, dt->str);
    t->dtype = (st_dtype)d;
    if (!sh || sh->type != JSON_ARR || sh->n > ST_MAX_DIMS)
        return err_set(ERR_FORMAT, "%s: tensor '%s': missing or bad shape", path, name);
    t->ndim = (int)sh->n;
    uint64_t numel = 1;
    for (size_t k = 0; k < sh->n; k++) {
        const json *s = &sh->items[k];
        if (s->type != JSON_NUM || !s->is_int || s->i < 0 || s->i > (int64_t)1 << 40)
            return err_set(ERR_FORMAT, "%s: tensor '%s': bad shape entry", path, name);
        t->shape[k] = s->i;
        if (s->i && numel > UINT64_MAX / 8 / (uint64_t)s->i)
            return err_set(ERR_FORMAT, "%s: tensor '%s': shape too large", path, name);
        numel *= (uint64_t)s->i;
    }
    t->numel = (int64_t)numel;
    if (!off || off->type != JSON_ARR || off->n != 2)
        return err_set(ERR_FORMAT, "%s: tensor '%s': missing data_offsets", path, name);
    const json *b = &off->items[0], *en = &off->items[1];
    if (b->type != JSON_NUM || !b->is_int || b->i < 0 || en->type != JSON_NUM || !en->is_int ||
        en->i < b->i)
        return err_set(ERR_FORMAT, "%s: tensor '%s': bad data_offsets", path, name);
    if ((uint64_t)en->i > data_len)
        return err_set(ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%lld, %lld] past the end of the data "
                       "(%llu bytes); truncated file?",
                       path, name, (long long)b->i, (long long)en->i, (unsigned long long)data_len);
    uint64_t want = numel * st_dtype_size((st_dtype)d);
    if ((uint64_t)(en->i - b->i) != want)
        return err_set(ERR_FORMAT,
                       "%s: tensor '%s': shape and dtype say %llu bytes, data_offsets give %lld",
                       path, name, (unsigned long long)want, (long long)(en->i - b->i));
    t->data = data_base + b->i;
    t->nbytes = (size_t)want;
    return 0;
}

/* The legacy torch.save format opens with the pickled magic number 0x1950a86a20f9469cfc6c
 * (torch/serialization.py MAGIC_NUMBER): PROTO 2, LONG1 of 10 bytes. */
static bool is_legacy_torch(const unsigned char *p, size_t len)
{
    static const unsigned char magic[14] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                            0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return len >= sizeof magic && !memcmp(p, magic, sizeof magic);
}

st_file *st_open(const char *path)
{
    st_file *f = calloc(1, sizeof *f);
    json *h = NULL;
    if (!f) { err_set(ERR_INTERNAL, "out of memory"); return NULL; }
    f->path = strdup(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(ERR_IO, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        err_set(ERR_IO, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    if (sb.st_size < 8) {
        err_set(ERR_FORMAT, "%s: too short for a safetensors or PyTorch checkpoint (%lld bytes)", path,
                (long long)sb.st_size);
        close(fd);
        goto fail;
    }
    f->map_len = (size_t)sb.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        err_set(ERR_IO, "cannot map %s: %s", path, strerror(errno));
        goto fail;
    }
    const unsigned char *p = f->map;
    if (tz_is_zip(p, f->map_len)) {
        if (tz_read(path, p, f->map_len, &f->t, &f->n)) goto fail;
        return f;
    }
    if (is_legacy_torch(p, f->map_len)) {
        err_set(ERR_FORMAT,
                "%s: a torch.save file in the legacy format of PyTorch < 1.6; load it and save it "
                "again with a current torch.save (or as safetensors)",
                path);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | p[k];
    if (hlen > ST_MAX_HEADER || hlen > f->map_len - 8) {
        err_set(ERR_FORMAT, "%s: header length %llu does not fit the file (%zu bytes)", path,
                (unsigned long long)hlen, f->map_len);
        goto fail;
    }
    if (hlen < 2 || p[8] != '{') {
        err_set(ERR_FORMAT, "%s: header is not a JSON object; not a safetensors file?", path);
        goto fail;
    }
    h = json_parse((const char *)p + 8, (size_t)hlen, path);
    if (!h) goto fail;
    if (h->type != JSON_OBJ) {
        err_set(ERR_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }
    const char *data_base = (const char *)p + 8 + hlen;
    uint64_t data_len = f->map_len - 8 - hlen;
    f->t = calloc(h->n ? h->n : 1, sizeof *f->t);
    if (!f->t) { err_set(ERR_INTERNAL, "out of memory"); goto fail; }
    for (size_t k = 0; k < h->n; k++) {
        if (!strcmp(h->keys[k], "__metadata__")) continue;
        for (int q = 0; q < f->n; q++)
            if (!strcmp(f->t[q].name, h->keys[k])) {
                err_set(ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path, h->keys[k]);
                goto fail;
            }
        st_tensor *t = &f->t[f->n];
        if (parse_entry(path, h->keys[k], &h->items[k], t, data_base, data_len)) goto fail;
        t->name = h->keys[k];
        h->keys[k] = strdup("");
        f->n++;
    }
    /* no two tensors may share bytes */
    if (f->n > 1) {
        st_tensor **s = malloc((size_t)f->n * sizeof *s);
        if (!s) { err_set(ERR_INTERNAL, "out of memory"); goto fail; }
        for (int k = 0; k < f->n; k++) s[k] = &f->t[k];
        qsort(s, (size_t)f->n, sizeof *s, cmp_off);
        for (int k = 1; k < f->n; k++)
            if ((const char *)s[k - 1]->data + s[k - 1]->nbytes > (const char *)s[k]->data) {
                err_set(ERR_FORMAT, "%s: tensor '%s' overlaps tensor '%s'", path, s[k]->name,
                        s[k - 1]->name);
                free(s);
                goto fail;
            }
        free(s);
    }
    json_free(h);
    return f;
fail:
    json_free(h);
    st_close(f);
    return NULL;
}

void st_close(st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    for (int k = 0; k < f->n; k++) free(f->t[k].name);
    free(f->t);
    free(f->path);
    free(f);
}

int st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }
const char *st_path(const st_file *f) { return f->path; }

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (int k = 0; k < f->n; k++)
        if (!strcmp(f->t[k].name, name)) return &f->t[k];
    return NULL;
}

const st_tensor *st_get(const st_file *f, const char *name, int ndim, const int64_t *shape)
{
    const st_tensor *t = st_find(f, name);
    if (!t) {
        err_set(ERR_FORMAT, "%s: tensor '%s' is missing", f->path, name);
        return NULL;
    }
    bool ok = t->ndim == ndim;
    for (int k = 0; ok && shape && k < ndim; k++)
        if (shape[k] >= 0 && shape[k] != t->shape[k]) ok = false;
    if (!ok) {
        char got[128] = "", want[128] = "";
        size_t g = 0, w = 0;
        for (int k = 0; k < t->ndim && g < sizeof got - 24; k++)
            g += (size_t)snprintf(got + g, sizeof got - g, "%s%lld", k ? "," : "", (long long)t->shape[k]);
        for (int k = 0; k < ndim && w < sizeof want - 24; k++) {
            if (shape && shape[k] >= 0)
                w += (size_t)snprintf(want + w, sizeof want - w, "%s%lld", k ? "," : "", (long long)shape[k]);
            else
                w += (size_t)snprintf(want + w, sizeof want - w, "%s*", k ? "," : "");
        }
        err_set(ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%s]", f->path, name, got, want);
        return NULL;
    }
    return t;
}

int st_to_f32(const st_file *f, const st_tensor *t, float *out, int64_t n)
{
    if (n != t->numel)
        return err_set(ERR_FORMAT, "%s: tensor '%s' has %lld values, expected %lld", f->path,
                       t->name, (long long)t->numel, (long long)n);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, p, (size_t)n * 4);
        return 0;
    case ST_F16:
    case ST_BF16:
        for (int64_t k = 0; k < n; k++) {
            uint16_t h = (uint16_t)(p[2 * k] | p[2 * k + 1] << 8);
            out[k] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
        return 0;
    default:
        return err_set(ERR_FORMAT, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16",
                       f->path, t->name, st_dtype_name(t->dtype));
    }
}
