/* test_torchzip.c - lib/torchzip through st_open, on checkpoints torch.save wrote
 * (tests/fixtures_torchzip.py): every dtype read back exactly (values written out here
 * again), a 0-dim scalar, views sharing one storage at offsets, an empty tensor, a
 * parameter; the same dict as pickle protocol 4 and in zip64 form; newer torch's
 * _rebuild_tensor_v3 on an UntypedStorage.  Errors: a transposed tensor, a deflated
 * archive, hand-made pickles (unknown opcode and global, a tensor past its storage, absurd
 * shapes, missing or short storages, a name twice), every truncation of a good file,
 * broken zip records, a legacy torch file, and a few thousand random byte changes (in the
 * whole file, and in data.pkl with its CRC fixed up) which must fail cleanly or load. */
#include "testlib.h"

#include "err.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define FIX "tests/fixtures/torchzip"

static char path[] = "/tmp/fedsm-tz-XXXXXX";

static unsigned char *slurp(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void write_file(const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (n)
        fwrite(b, 1, n, f);
    fclose(f);
}

static const st_tensor *get(const st_file *f, const char *name, st_dtype dt, int ndim,
                            const int64_t *shape)
{
    const st_tensor *t = st_get(f, name, ndim, shape);
    CHECK_MSG(t && t->dtype == dt, "%s: %s", name, t ? st_dtype_name(t->dtype) : err_msg());
    return t && t->dtype == dt ? t : NULL;
}

/* floats of a F32/F16/BF16 tensor equal want exactly (bit for bit) */
static void check_floats(const st_file *f, const char *name, st_dtype dt, int ndim,
                         const int64_t *shape, const float *want, int n)
{
    const st_tensor *t = get(f, name, dt, ndim, shape);
    float got[16];
    if (!t)
        return;
    CHECK_MSG(t->numel == n && st_to_f32(f, t, got, n) == 0 && !memcmp(got, want, (size_t)n * 4),
              "%s", name);
}

static void check_bytes(const st_file *f, const char *name, st_dtype dt, int64_t n,
                        const void *want, size_t nb)
{
    const st_tensor *t = get(f, name, dt, 1, &n);
    if (t)
        CHECK_MSG(t->nbytes == nb && !memcmp(t->data, want, nb), "%s", name);
}

/* The values of tests/fixtures_torchzip.py basic_state_dict(). */
static void check_basic(const char *file)
{
    st_file *f = st_open(file);
    CHECK_MSG(f != NULL, "%s", err_msg());
    if (!f)
        return;
    CHECK(st_count(f) == 17 && !strcmp(st_path(f), file));
    int64_t s23[2] = {2, 3}, s5[1] = {5}, s222[3] = {2, 2, 2}, s3[1] = {3}, s2[1] = {2},
            s4[1] = {4};
    check_floats(f, "f32", ST_F32, 2, s23,
                 (const float[]){0.5f, -1.25f, 3.0f, 1e-3f, -0.0f, 65504.0f}, 6);
    check_floats(f, "f16", ST_F16, 1, s5, (const float[]){1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f},
                 5);
    check_floats(f, "bf16", ST_BF16, 3, s222, (const float[]){-1, -0.5f, 0, 0.5f, 1, 1.5f, 2, 2.5f},
                 8);
    check_bytes(f, "f64", ST_F64, 3, (const double[]){0.1, 0.2, 0.3}, 24);
    check_bytes(f, "i64", ST_I64, 2, (const int64_t[]){-3, (int64_t)1 << 40}, 16);
    check_bytes(f, "i32", ST_I32, 3, (const int32_t[]){-1, 0, 7}, 12);
    check_bytes(f, "i16", ST_I16, 1, (const int16_t[]){-300}, 2);
    check_bytes(f, "i8", ST_I8, 2, (const int8_t[]){-128, 127}, 2);
    check_bytes(f, "u8", ST_U8, 3, (const uint8_t[]){0, 1, 255}, 3);
    check_bytes(f, "bool", ST_BOOL, 2, (const uint8_t[]){1, 0}, 2);
    check_floats(f, "scalar", ST_F32, 0, NULL, (const float[]){4.605170249938965f}, 1);
    check_floats(f, "shared.a", ST_F32, 1, s3, (const float[]){2, 3, 4}, 3);
    check_floats(f, "shared.b", ST_F32, 2, s23, (const float[]){6, 7, 8, 9, 10, 11}, 6);
    check_floats(f, "shared.c", ST_F32, 1, s4, (const float[]){4, 5, 6, 7}, 4);
    const st_tensor *a = st_find(f, "shared.a"), *b = st_find(f, "shared.b"),
                    *c = st_find(f, "shared.c");
    CHECK(a && b && c && (const char *)c->data == (const char *)a->data + 8 &&
          (const char *)b->data == (const char *)a->data + 16); /* one storage */
    int64_t s03[2] = {0, 3};
    const st_tensor *e = get(f, "empty", ST_F32, 2, s03);
    CHECK(e && e->numel == 0 && e->nbytes == 0);
    check_floats(f, "param", ST_F32, 1, s2, (const float[]){2.5f, -0.75f}, 2);
    int64_t s15[2] = {1, 5};
    const st_tensor *x = get(f, "expanded", ST_I64, 2, s15);
    CHECK(x && x->nbytes == 40 && !memcmp(x->data, (const int64_t[]){0, 1, 2, 3, 4}, 40));
    CHECK(st_find(f, "epoch") == NULL); /* not a tensor */
    float o[2];
    CHECK(st_to_f32(f, st_find(f, "i32"), o, 3) == ERR_FORMAT && strstr(err_msg(), "'i32'"));
    st_close(f);
}

/* file holds the tensors of basic.pt, with the same bytes */
static void check_same_as_basic(const char *file)
{
    st_file *f = st_open(file), *g = st_open(FIX "/basic.pt");
    CHECK_MSG(f && g, "%s: %s", file, err_msg());
    if (f && g) {
        CHECK(st_count(f) == st_count(g));
        for (int k = 0; k < st_count(g); k++) {
            const st_tensor *b = st_at(g, k), *t = st_find(f, b->name);
            CHECK_MSG(t && t->dtype == b->dtype && t->ndim == b->ndim && t->nbytes == b->nbytes &&
                          !memcmp(t->shape, b->shape, sizeof t->shape) &&
                          !memcmp(t->data, b->data, b->nbytes),
                      "%s: tensor '%s'", file, b->name);
        }
    }
    st_close(f);
    st_close(g);
}

static void expect_bad(const char *file, const char *needle)
{
    st_file *f = st_open(file);
    CHECK_MSG(f == NULL && err_last() == ERR_FORMAT && strstr(err_msg(), needle) &&
                  strstr(err_msg(), file),
              "%s: got '%s'", file, f ? "(opened)" : err_msg());
    st_close(f);
}

/* expect_bad on a copy of buf (n bytes) */
static void expect_bad_buf(const unsigned char *buf, size_t n, const char *needle)
{
    write_file(buf, n);
    expect_bad(path, needle);
}

/* Offset of the central directory entry named name, or 0. */
static size_t cd_entry(const unsigned char *b, size_t len, const char *name)
{
    size_t nl = strlen(name);
    for (size_t k = 0; k + 46 + nl <= len; k++)
        if (!memcmp(b + k, "PK\1\2", 4) && (size_t)(b[k + 28] | b[k + 29] << 8) == nl &&
            !memcmp(b + k + 46, name, nl))
            return k;
    return 0;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Opening a changed file must load or fail with ERR_FORMAT; loaded floats are readable. */
static int open_changed(const unsigned char *buf, size_t n)
{
    write_file(buf, n);
    st_file *f = st_open(path);
    if (!f) {
        CHECK_MSG(err_last() == ERR_FORMAT, "code %d: %s", err_last(), err_msg());
        return 0;
    }
    for (int k = 0; k < st_count(f); k++) {
        const st_tensor *t = st_at(f, k);
        CHECK(t->nbytes <= n);
        float v[16];
        if (t->dtype <= ST_BF16 && t->numel <= 16)
            st_to_f32(f, t, v, t->numel);
    }
    st_close(f);
    return 1;
}

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void check_corrupt(void)
{
    size_t len;
    unsigned char *good = slurp(FIX "/basic.pt", &len), *b = good ? malloc(len) : NULL;
    CHECK(good && b);
    if (!good || !b) {
        free(good);
        return;
    }
    /* every truncation */
    int bad = 0;
    for (size_t n = 0; n < len; n++) {
        write_file(good, n);
        st_file *f = st_open(path);
        bad += f == NULL && err_last() == ERR_FORMAT;
        st_close(f);
    }
    CHECK_MSG(bad == (int)len, "%d of %zu truncations failed cleanly", bad, len);
    expect_bad_buf(good, len - 1, "no zip end of central directory");
    size_t pkl = cd_entry(good, len, "archive/data.pkl"),
           d0 = cd_entry(good, len, "archive/data/0");
    CHECK(pkl && d0);
    /* broken central directory entry, directory offset, local header offset */
    memcpy(b, good, len);
    b[pkl + 2] = 9;
    expect_bad_buf(b, len, "bad zip central directory entry");
    memcpy(b, good, len);
    size_t e64 = len - 22 - 20 - 56; /* torch writes zip64 end records */
    CHECK(!memcmp(good + e64, "PK\6\6", 4));
    b[e64 + 48 + 3] = 0x7f;
    expect_bad_buf(b, len, "lies outside the file");
    memcpy(b, good, len);
    b[d0 + 42] += 1;
    expect_bad_buf(b, len, "'archive/data/0': bad local header");
    memcpy(b, good, len);
    b[pkl + 10] = 8; /* method: deflate */
    expect_bad_buf(b, len, "compressed (method 8)");
    /* no data.pkl: renamed in both headers */
    memcpy(b, good, len);
    for (size_t k = 0; k + 8 <= len; k++)
        if (!memcmp(b + k, "data.pkl", 8))
            b[k + 7] = 'x';
    expect_bad_buf(b, len, "without <dir>/data.pkl");
    /* data.pkl changed without its CRC */
    uint32_t off = rd32(good + pkl + 42), size = rd32(good + pkl + 20);
    size_t start =
        off + 30 + (good[off + 26] | good[off + 27] << 8) + (good[off + 28] | good[off + 29] << 8);
    CHECK(start + size <= len && good[start] == 0x80);
    memcpy(b, good, len);
    b[start + size / 2] ^= 1;
    expect_bad_buf(b, len, "CRC mismatch");
    /* legacy format */
    static const unsigned char legacy[24] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    expect_bad_buf(legacy, sizeof legacy, "legacy format");
    /* random changes anywhere, then in data.pkl with the CRC fixed */
    int loaded = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(b, good, len);
        for (int q = (int)(rnd() % 4); q >= 0; q--)
            b[rnd() % len] = (unsigned char)rnd();
        loaded += open_changed(b, len);
    }
    int loaded_pkl = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, good, len);
        for (int q = (int)(rnd() % 3); q >= 0; q--) {
            size_t at = start + rnd() % size;
            b[at] =
                rnd() % 4 ? (unsigned char)rnd() : (unsigned char)(b[at] + (rnd() % 2 ? 1 : -1));
        }
        uint32_t crc = (uint32_t)crc32(0, b + start, size);
        for (int k = 0; k < 4; k++)
            b[pkl + 16 + k] = (unsigned char)(crc >> (8 * k));
        loaded_pkl += open_changed(b, len);
    }
    fprintf(stderr, "random changes: %d of 1500 files and %d of 3000 pickles still loaded\n",
            loaded, loaded_pkl);
    free(good);
    free(b);
}

int main(void)
{
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    check_basic(FIX "/basic.pt");
    check_same_as_basic(FIX "/proto4.pt");
    check_same_as_basic(FIX "/zip64.pt");
    st_file *f = st_open(FIX "/v3.pt");
    CHECK_MSG(f != NULL, "%s", err_msg());
    int64_t s3[1] = {3};
    if (f)
        check_floats(f, "h", ST_F16, 1, s3, (const float[]){1, -2, 0.5f}, 3);
    st_close(f);

    static const char *const bad[][2] = {
        {"noncontig.pt", "tensor 't' is not contiguous (shape [3,2], stride [1,3])"},
        {"compressed.pt", "zip entry 'archive/data.pkl' is compressed"},
        {"bad-opcode.pt", "data.pkl at byte 11: unsupported pickle opcode 0x49 ('I')"},
        {"bad-global.pt", "unsupported global 'builtins.eval'"},
        {"bad-offset.pt",
         "tensor 'w': offset 2 + 3 elements runs past the end of storage '0' (16 bytes)"},
        {"bad-shape.pt", "tensor 'w': shape too large"},
        {"bad-dim.pt", "tensor size entry 2199023255552 is out of range"},
        {"bad-storage.pt", "storage '0' of 400 bytes, but zip entry 'archive/data/0' holds 16"},
        {"bad-missing.pt", "storage '7': no zip entry 'archive/data/7'"},
        {"bad-stride.pt", "size has 2 entries, stride 1"},
        {"bad-dup.pt", "tensor 'w' appears twice"},
        {"bad-list.pt", "holds a list, not a state dict"},
        {"bad-notensor.pt", "holds no tensors"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        char p[256];
        snprintf(p, sizeof p, FIX "/%s", bad[k][0]);
        expect_bad(p, bad[k][1]);
    }
    CHECK(st_open(FIX "/missing.pt") == NULL && err_last() == ERR_IO);
    check_corrupt();
    unlink(path);
    TEST_MAIN_END();
}
