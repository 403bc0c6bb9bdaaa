/* test_safetensors.c - lib/safetensors: a good file (F32/F16/BF16 values read back), and
 * corrupt ones (bad header JSON, header length past the end, offsets past the end,
 * shape/size mismatch, overlapping tensors, unknown dtype, truncated) failing with
 * ERR_FORMAT and a message naming the tensor. */
#include "testlib.h"

#include "err.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char path[] = "/tmp/fedsm-st-XXXXXX";

static void write_file(const char *header, const void *data, size_t n, int64_t hlen_override)
{
    FILE *f = fopen(path, "wb");
    uint64_t hl = hlen_override >= 0 ? (uint64_t)hlen_override : strlen(header);
    uint8_t le[8];
    for (int k = 0; k < 8; k++) le[k] = (uint8_t)(hl >> (8 * k));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    fwrite(data, 1, n, f);
    fclose(f);
}

static void expect_bad(const char *header, size_t n_data, int64_t hl, const char *needle)
{
    static uint8_t zeros[64];
    write_file(header, zeros, n_data, hl);
    st_file *f = st_open(path);
    CHECK_MSG(f == NULL && err_last() == ERR_FORMAT && strstr(err_msg(), needle), "header %s: got '%s'",
              header, f ? "(opened)" : err_msg());
    st_close(f);
}

int main(void)
{
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    /* good: a F32 [2], a F16 [2], a BF16 [1], and an I64 the loader keeps but won't convert */
    uint8_t data[8 + 4 + 2 + 8];
    float fv[2] = {1.5f, -2.25f};
    memcpy(data, fv, 8);
    uint16_t h[2] = {0x3C00, 0xC000}; /* 1.0, -2.0 */
    memcpy(data + 8, h, 4);
    uint16_t bf = 0x4049;             /* 3.140625 */
    memcpy(data + 12, &bf, 2);
    int64_t iv = 7;
    memcpy(data + 14, &iv, 8);
    write_file("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[8,12]},"
               "\"c\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]},"
               "\"d\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[14,22]}}   ",
               data, sizeof data, -1);
    st_file *f = st_open(path);
    CHECK_MSG(f != NULL, "%s", err_msg());
    if (f) {
        CHECK(st_count(f) == 4);
        float o[2];
        CHECK(st_to_f32(f, st_find(f, "a"), o, 2) == 0 && o[0] == 1.5f && o[1] == -2.25f);
        CHECK(st_to_f32(f, st_find(f, "b"), o, 2) == 0 && o[0] == 1.0f && o[1] == -2.0f);
        CHECK(st_to_f32(f, st_find(f, "c"), o, 1) == 0 && o[0] == 3.140625f);
        CHECK(st_to_f32(f, st_find(f, "d"), o, 1) == ERR_FORMAT && strstr(err_msg(), "'d'"));
        int64_t want[2] = {1, 3};
        CHECK(st_get(f, "b", 2, want) == NULL && strstr(err_msg(), "'b'") && strstr(err_msg(), "[1,2]"));
        CHECK(st_get(f, "zz", 1, NULL) == NULL && strstr(err_msg(), "'zz' is missing"));
        st_close(f);
    }
    CHECK(st_f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
    CHECK(st_f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(isinf(st_f16_to_f32(0x7C00)));

    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", 8, -1, "bad JSON");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, -1, "bad JSON");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, -1, "'a'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, -1, "past the end");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, -1, "tensor 'a': shape and dtype say 12 bytes");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1, "overlaps");
    expect_bad("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 8, -1, "unsupported dtype 'Q4'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, -1, "'a': bad shape");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, -1, "'a': bad data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, -1, "'a': missing data_offsets");
    expect_bad("{\"a\":{}}", 8, 1000000, "header length");
    expect_bad("[1,2]", 8, -1, "not a JSON object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, "twice");
    FILE *t = fopen(path, "wb");
    fputs("abc", t);
    fclose(t);
    CHECK(st_open(path) == NULL && err_last() == ERR_FORMAT && strstr(err_msg(), "too short"));
    CHECK(st_open("/nonexistent.safetensors") == NULL && err_last() == ERR_IO);
    unlink(path);
    TEST_MAIN_END();
}
