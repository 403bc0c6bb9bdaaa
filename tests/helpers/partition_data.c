/* partition_data - test helper for tests/tools/partition*.sh (not installed, not a tool):
 * writes small datasets in every input layout `partition` reads, with pixels that are a
 * known function of (set, index), and checks an output directory against them.
 *
 *   partition_data cifar10  DIR TRAIN_PER_CLASS TEST_PER_CLASS [C]
 *   partition_data cifar100 DIR TRAIN_PER_CLASS TEST_PER_CLASS
 *   partition_data folder   DIR TRAIN_PER_CLASS TEST_PER_CLASS C W H   (even files .jpg,
 *                                                                       odd files .png)
 *   partition_data list     DIR N_TRAIN N_TEST C W H  (DIR/img/NNNNN.jpg, train.txt,
 *                                                      test.txt, classes.txt)
 *   partition_data check    OUTDIR [exact]   every sample once, counts = partition record,
 *                                            client sizes, labels; exact: CIFAR pixels
 * Labels of sample i are (7 i) mod C (CIFAR, list) or class-major (folder). */
#include "endpoint.h"
#include "err.h"
#include "image.h"
#include "record.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint8_t pix(int set, int64_t i, int k) /* k: offset in [3*32*32] */
{
    return (uint8_t)((i * 13 + set * 101 + k * 7 + (k >> 5)) & 255);
}

static int die(const char *m)
{
    fprintf(stderr, "partition_data: %s\n", m);
    return 1;
}

static void write_names(const char *path, int c, const char *fmt)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; i < c; i++) {
        fprintf(f, fmt, i);
        fputc('\n', f);
    }
    fclose(f);
}

static int gen_cifar(const char *dir, int per, int test_per, int c, int fine)
{
    mkdir(dir, 0777);
    char p[4096];
    int rs = 3072 + (fine ? 2 : 1);
    uint8_t *rec = malloc(rs);
    int files = fine ? 1 : 5;
    int64_t ntrain = (int64_t)per * c, i = 0;
    for (int b = 0; b <= files; b++) {
        int test = b == files;
        if (fine)
            snprintf(p, sizeof p, "%s/%s", dir, test ? "test.bin" : "train.bin");
        else if (test)
            snprintf(p, sizeof p, "%s/test_batch.bin", dir);
        else
            snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, b + 1);
        FILE *f = fopen(p, "wb");
        if (!f)
            return die("cannot write");
        int64_t from = test ? 0 : ntrain * b / files, to = test ? (int64_t)test_per * c
                                                               : ntrain * (b + 1) / files;
        for (i = from; i < to; i++) {
            int lab = (int)((7 * i) % c);
            if (fine) {
                rec[0] = (uint8_t)(lab % 20);
                rec[1] = (uint8_t)lab;
            } else
                rec[0] = (uint8_t)lab;
            for (int k = 0; k < 3072; k++)
                rec[rs - 3072 + k] = pix(test, i, k);
            fwrite(rec, 1, rs, f);
        }
        fclose(f);
    }
    free(rec);
    snprintf(p, sizeof p, "%s/%s", dir, fine ? "fine_label_names.txt" : "batches.meta.txt");
    write_names(p, c, fine ? "fine_%02d" : "class%02d");
    return 0;
}

static int write_image(const char *path, int w, int h, int64_t seed, int png)
{
    image im = {w, h, malloc(3 * (size_t)w * h)};
    for (int k = 0; k < 3 * w * h; k++)
        im.chw[k] = (uint8_t)((seed * 29 + k / 3 + (k % w) * 2) & 255);
    void *buf;
    size_t len;
    int rc = png ? image_encode_png(&im, &buf, &len) : image_encode_jpeg(&im, 90, &buf, &len);
    image_free(&im);
    if (rc)
        return die(err_msg());
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    return 0;
}

static int gen_folder(const char *dir, int per, int test_per, int c, int w, int h)
{
    char p[4096];
    mkdir(dir, 0777);
    for (int t = 0; t < 2; t++) {
        const char *set = t ? "test" : "train";
        snprintf(p, sizeof p, "%s/%s", dir, set);
        mkdir(p, 0777);
        for (int k = 0; k < c; k++) {
            snprintf(p, sizeof p, "%s/%s/class%02d", dir, set, k);
            mkdir(p, 0777);
            for (int i = 0; i < (t ? test_per : per); i++) {
                snprintf(p, sizeof p, "%s/%s/class%02d/%04d.%s", dir, set, k, i,
                         i % 2 ? "png" : "jpg");
                if (write_image(p, w, h, (int64_t)k * 1000 + i, i % 2))
                    return 1;
            }
        }
    }
    return 0;
}

static int gen_list(const char *dir, int ntrain, int ntest, int c, int w, int h)
{
    char p[4096];
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/img", dir);
    mkdir(p, 0777);
    for (int t = 0; t < 2; t++) {
        snprintf(p, sizeof p, "%s/%s.txt", dir, t ? "test" : "train");
        FILE *f = fopen(p, "w");
        for (int i = 0; i < (t ? ntest : ntrain); i++) {
            char img[4096];
            snprintf(img, sizeof img, "%s/img/%c%05d.jpg", dir, t ? 't' : 'n', i);
            if (write_image(img, w, h, i + t * 100000, 0))
                return 1;
            fprintf(f, "img/%c%05d.jpg %d\n", t ? 't' : 'n', i, (7 * i) % c);
        }
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/classes.txt", dir);
    write_names(p, c, "name %d");
    return 0;
}

#define FAILF(...)                                                                           \
    do {                                                                                     \
        fprintf(stderr, "check: " __VA_ARGS__);                                              \
        fputc('\n', stderr);                                                                 \
        return 1;                                                                            \
    } while (0)

static int check(const char *dir, int exact)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/partition.mpk.zst", dir);
    record *pr = ep_read_one(p, "partition", NULL);
    if (!pr)
        FAILF("%s", err_msg());
    const tensor *ct = rec_find(pr, "counts"), *cc = rec_find(pr, "class_counts");
    if (!ct || !cc || ct->ndim != 2)
        FAILF("partition record lacks counts");
    int64_t K = ct->shape[0], C = ct->shape[1], total = 0, src_total;
    const int64_t *counts = ct->data, *ccounts = cc->data;
    rec_get_int(pr, "source_total", &src_total);
    for (int c = 0; c < C; c++)
        total += ccounts[c];
    char *seen = calloc((size_t)src_total + 1, 1);
    int64_t got = 0;
    int kw = K > 100 ? 3 : 2;
    for (int64_t k = 0; k < K; k++) {
        snprintf(p, sizeof p, "%s/client-%0*lld.mpk.zst", dir, kw, (long long)k);
        record *r = ep_read_one(p, "shard", NULL);
        if (!r)
            FAILF("%s", err_msg());
        const tensor *lt = rec_find(r, "labels"), *it = rec_find(r, "index"),
                     *im = rec_find(r, "images"), *jp = rec_find(r, "jpeg"),
                     *of = rec_find(r, "offsets");
        if (!lt || !it || (!im && !(jp && of)))
            FAILF("%s: missing tensors", p);
        int64_t n = lt->shape[0], client;
        rec_get_int(r, "client", &client);
        if (client != k)
            FAILF("%s: client %lld", p, (long long)client);
        int64_t *cnt = calloc((size_t)C, sizeof *cnt);
        for (int64_t i = 0; i < n; i++) {
            int64_t ix = ((const int64_t *)it->data)[i];
            int32_t lab = ((const int32_t *)lt->data)[i];
            if (ix < 0 || ix >= src_total || seen[ix])
                FAILF("%s: index %lld duplicated or out of range", p, (long long)ix);
            seen[ix] = 1;
            if (lab < 0 || lab >= C)
                FAILF("%s: label %d", p, lab);
            cnt[lab]++;
            if (exact && lab != (7 * ix) % C)
                FAILF("%s: sample %lld label %d != source label", p, (long long)ix, lab);
            if (exact && im)
                for (int q = 0; q < 3072; q++)
                    if (((const uint8_t *)im->data)[i * 3072 + q] != pix(0, ix, q))
                        FAILF("%s: sample %lld pixel %d differs from the source", p,
                              (long long)ix, q);
            if (jp) {
                const int64_t *o = of->data;
                image d;
                if (o[i + 1] < o[i] || o[i + 1] > (int64_t)jp->nbytes ||
                    image_decode((const uint8_t *)jp->data + o[i], (size_t)(o[i + 1] - o[i]),
                                 "jpeg", &d))
                    FAILF("%s: sample %lld: bad encoded image", p, (long long)i);
                image_free(&d);
            }
        }
        for (int c = 0; c < C; c++)
            if (cnt[c] != counts[k * C + c])
                FAILF("%s: class %d count %lld != partition %lld", p, c, (long long)cnt[c],
                      (long long)counts[k * C + c]);
        got += n;
        free(cnt);
        rec_free(r);
    }
    if (got != total)
        FAILF("clients hold %lld samples, partition says %lld", (long long)got,
              (long long)total);
    snprintf(p, sizeof p, "%s/test.mpk.zst", dir);
    FILE *tf = fopen(p, "rb");
    if (tf) {
        fclose(tf);
        record *r = ep_read_one(p, "shard", NULL);
        if (!r)
            FAILF("%s", err_msg());
        int64_t client, n;
        rec_get_int(r, "client", &client);
        rec_get_int(r, "count", &n);
        const tensor *im = rec_find(r, "images");
        if (client != -1)
            FAILF("test client %lld", (long long)client);
        if (exact && im)
            for (int64_t i = 0; i < n; i++)
                for (int q = 0; q < 3072; q += 97)
                    if (((const uint8_t *)im->data)[i * 3072 + q] != pix(1, i, q))
                        FAILF("test sample %lld differs", (long long)i);
        printf("test %lld\n", (long long)n);
        rec_free(r);
    }
    printf("ok %lld samples in %lld clients\n", (long long)got, (long long)K);
    free(seen);
    rec_free(pr);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return die("usage: see the file's opening comment");
    const char *cmd = argv[1], *dir = argv[2];
    int a[6] = {0};
    for (int i = 3; i < argc && i < 9; i++)
        a[i - 3] = atoi(argv[i]);
    if (!strcmp(cmd, "cifar10"))
        return gen_cifar(dir, a[0], a[1], a[2] ? a[2] : 10, 0);
    if (!strcmp(cmd, "cifar100"))
        return gen_cifar(dir, a[0], a[1], 100, 1);
    if (!strcmp(cmd, "folder"))
        return gen_folder(dir, a[0], a[1], a[2], a[3], a[4]);
    if (!strcmp(cmd, "list"))
        return gen_list(dir, a[0], a[1], a[2], a[3], a[4]);
    if (!strcmp(cmd, "check"))
        return check(dir, argc > 3 && !strcmp(argv[3], "exact"));
    return die("unknown command");
}
