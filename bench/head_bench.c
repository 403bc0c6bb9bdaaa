/* head_bench.c - speed of the fresh-head retraining (lib/fl/head.h; docs/algorithms.md 3 step
 * 7 and 5.4 step 4) for bench/head.sh, compared there with bench/head_torch.py:
 *   head_bench N D C EPOCHS BATCH  trains a fresh head on N random labelled features of D
 *   dims over C classes and prints one line: steps, seconds (wall), cpu_seconds, steps_s.
 * Not a test: numbers only. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "head.h"

static double clk(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: head_bench N D C EPOCHS BATCH\n");
        return 2;
    }
    int n = atoi(argv[1]), D = atoi(argv[2]), C = atoi(argv[3]);
    head_opts o;
    head_opts_default(&o);
    o.epochs = atoi(argv[4]);
    o.batch = atoi(argv[5]);
    float *x = malloc(sizeof(float) * (size_t)n * D), *w = malloc(sizeof(float) * (size_t)C * D),
          *b = malloc(sizeof(float) * (size_t)C);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    rng r;
    rng_init(&r, 1, "bench", 0, 0);
    for (size_t i = 0; i < (size_t)n * D; i++)
        x[i] = (float)rng_normal(&r);
    for (int i = 0; i < n; i++)
        y[i] = i % C;
    double w0 = clk(CLOCK_MONOTONIC), c0 = clk(CLOCK_PROCESS_CPUTIME_ID), loss = 0;
    if (head_fit(w, b, x, y, n, D, C, &o, &loss))
        return 1;
    double ws = clk(CLOCK_MONOTONIC) - w0, cs = clk(CLOCK_PROCESS_CPUTIME_ID) - c0;
    long steps = (long)o.epochs * ((n + o.batch - 1) / o.batch);
    printf("head steps=%ld seconds=%.4f cpu_seconds=%.4f steps_s=%.0f loss=%.4f\n", steps, ws, cs,
           steps / ws, loss);
    free(x);
    free(w);
    free(b);
    free(y);
    return 0;
}
