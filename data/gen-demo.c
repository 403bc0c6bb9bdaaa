/* gen-demo - writes the embedded demo dataset: a small synthetic 10-class image set in the
 * CIFAR-10 binary layout (data_batch_1..5.bin, test_batch.bin, batches.meta.txt), so
 * `make demo` runs the whole pipeline with no download.  Each class is an oriented colour
 * grating (class k: orientation k*18 degrees, its own hue and frequency) under random
 * phase, shift, contrast and pixel noise: easy to see, not trivial to classify.
 * usage: gen-demo OUTDIR [PER_CLASS_TRAIN [PER_CLASS_TEST [SEED]]]   (also --help, --version)
 * Also writes class_embeddings.npy (<f4 [10, 5]): each class's generating parameters as a
 * vector (orientation on the circle of period 180 degrees, centred hue), the class
 * relevance the demo gives FedSM in place of CLIP text embeddings (clip-embed --import):
 * gratings of near orientations and colours look alike, as "cat" and "dog" do.
 * Not real data: results on it say the pipeline works, nothing about the papers. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tool.h" /* FEDSM_VERSION only: gen-demo links nothing of lib/ */

static const char *names[10] = {"ring", "stripe", "check", "wave", "dots",
                                "ramp", "cross", "zigzag", "blob", "grid"};

static uint64_t st = 88172645463325252ULL;
static double unif(void)
{
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    return (double)(st >> 11) * 0x1.0p-53;
}
static double gauss(void)
{
    double u = unif() + 1e-12, v = unif();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static void make_image(uint8_t *rec, int k)
{
    rec[0] = (uint8_t)k;
    double th = k * M_PI / 10 + 0.2 * gauss(), f = 0.25 + 0.04 * (k % 4) + 0.02 * gauss();
    double ph = 2 * M_PI * unif(), contrast = 0.25 + 0.35 * unif(), noise = 0.9;
    double hue[3] = {0.5 + 0.4 * cos(k * 0.63), 0.5 + 0.4 * cos(k * 0.63 + 2.1),
                     0.5 + 0.4 * cos(k * 0.63 + 4.2)};
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                double s = sin(f * (x * cos(th) + y * sin(th)) * 2.2 + ph);
                double v = hue[c] + contrast * 0.5 * s * (c == k % 3 ? 1.0 : 0.6) +
                           noise * 0.5 * gauss();
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                rec[1 + c * 1024 + y * 32 + x] = (uint8_t)lrint(v * 255);
            }
}

/* class_embeddings.npy: [cos 2th, sin 2th, hue - 0.5 (3)] of class k, as make_image draws it */
static int write_embeddings(const char *dir)
{
    char path[4096], hdr[128];
    snprintf(path, sizeof path, "%s/class_embeddings.npy", dir);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 5), }");
    while ((10 + n + 1) % 64)
        hdr[n++] = ' ';
    hdr[n++] = '\n';
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(n & 255, f), fputc(n >> 8, f);
    fwrite(hdr, 1, (size_t)n, f);
    for (int k = 0; k < 10; k++) {
        double th = k * M_PI / 10;
        float e[5] = {(float)cos(2 * th), (float)sin(2 * th), (float)(0.4 * cos(k * 0.63)),
                      (float)(0.4 * cos(k * 0.63 + 2.1)), (float)(0.4 * cos(k * 0.63 + 4.2))};
        fwrite(e, sizeof e[0], 5, f); /* little-endian hosts (x86, arm64) */
    }
    return fclose(f);
}

static int write_batch(const char *dir, const char *name, int per_class)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint8_t rec[3073];
    for (int i = 0; i < per_class * 10; i++) {
        make_image(rec, i % 10);
        fwrite(rec, 1, sizeof rec, f);
    }
    return fclose(f);
}

/* A whole decimal number in [lo, hi], or exit 2 naming the argument. */
static long long arg_num(const char *what, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "gen-demo: error: %s: '%s' is not a whole number in [%lld, %lld]\n", what,
                s, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: gen-demo OUTDIR [PER_CLASS_TRAIN [PER_CLASS_TEST [SEED]]]\n"
               "Writes a synthetic 10-class 32x32 dataset in the CIFAR-10 binary layout\n"
               "(data_batch_1..5.bin, test_batch.bin, batches.meta.txt) and\n"
               "class_embeddings.npy (each class's orientation and hue) into OUTDIR.\n"
               "Defaults: 5000 train and 1000 test images per class (CIFAR-10's sizes);\n"
               "PER_CLASS_TRAIN a multiple of 5.  -h, --help; -V, --version.\n"
               "exit: 0 ok, 2 usage, 4 I/O\n");
        return 0;
    }
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        printf("gen-demo %s\n", FEDSM_VERSION);
        return 0;
    }
    /* an option gen-demo does not know is refused, never taken for the folder's name */
    if (argc >= 2 && argv[1][0] == '-') {
        fprintf(stderr, "gen-demo: error: unknown option '%s' (try gen-demo --help)\n", argv[1]);
        return 2;
    }
    if (argc < 2 || argc > 5 || !argv[1][0]) {
        fprintf(stderr, "gen-demo: error: %s (usage: gen-demo OUTDIR [PER_CLASS_TRAIN "
                "[PER_CLASS_TEST [SEED]]])\n",
                argc < 2 || !argv[1][0] ? "no OUTDIR given" : "too many arguments");
        return 2;
    }
    int train = argc > 2 ? (int)arg_num("PER_CLASS_TRAIN", argv[2], 5, 1000000) : 5000;
    int test = argc > 3 ? (int)arg_num("PER_CLASS_TEST", argv[3], 1, 1000000) : 1000;
    if (argc > 4)
        st ^= (uint64_t)arg_num("SEED", argv[4], 0, INT64_MAX) * 0x9e3779b97f4a7c15ULL;
    if (train % 5) {
        fprintf(stderr, "gen-demo: error: PER_CLASS_TRAIN must be a positive multiple of 5\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) && errno != EEXIST) {
        fprintf(stderr, "gen-demo: error: cannot create %s: %s\n", argv[1], strerror(errno));
        return 4;
    }
    char name[32];
    for (int b = 1; b <= 5; b++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", b);
        if (write_batch(argv[1], name, train / 5))
            goto io;
    }
    if (write_batch(argv[1], "test_batch.bin", test))
        goto io;
    char path[4096];
    if (write_embeddings(argv[1]))
        goto io;
    snprintf(path, sizeof path, "%s/batches.meta.txt", argv[1]);
    FILE *f = fopen(path, "w");
    if (!f)
        goto io;
    for (int k = 0; k < 10; k++)
        fprintf(f, "%s\n", names[k]);
    if (fclose(f))
        goto io;
    return 0;
io:
    fprintf(stderr, "gen-demo: error: cannot write into %s: %s\n", argv[1], strerror(errno));
    return 4;
}
