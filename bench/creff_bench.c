/* creff_bench.c - per-round cost of CReFF/CLIP2FL's two extra steps, for bench/creff.sh
 * (compared there with bench/creff_torch.py in the same run):
 *   client C_ D_ REPEATS THREADS: classgrad_client on a synthetic long-tailed client shard
 *     (ResNet-8 width 64, D_ = 256 or a proj to D_, 620 images over C_ classes with
 *     counts ~ 620 * 0.6^c normalised, batch 32) -> images/s of the gradient step;
 *   featgen C_ D_ ITERS TEXT THREADS: gradmatch_update on 100 features per class (TEXT 1:
 *     with the PCL term) -> seconds per iteration and GFLOP/s (7 or 5 n*C*D GEMM MACs).
 * Prints one line of key=value pairs: seconds (wall), cpu_seconds (process CPU time) and
 * the rates.  Not a test: numbers only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "classgrad.h"
#include "gradmatch.h"
#include "pool.h"

static double clk(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int bench_client(int C, int D, int repeats, int threads)
{
    model_config cfg;
    model_config_default(&cfg, "resnet8");
    cfg.num_classes = C;
    cfg.proj_dim = D == 256 ? 0 : D;
    model *m = model_new(&cfg);
    if (!m)
        return 1;
    model_init(m, 1);
    const int n = 620;
    uint8_t *img = malloc((size_t)n * 3 * 32 * 32);
    int32_t *lab = malloc(n * sizeof *lab);
    rng r;
    rng_init(&r, 1, "bench", 0, 0);
    for (size_t i = 0; i < (size_t)n * 3 * 32 * 32; i++)
        img[i] = (uint8_t)rng_below(&r, 256);
    double tot = 0, acc = 0;
    for (int c = 0; c < C; c++)
        tot += pow(0.6, c);
    for (int i = 0, c = 0; i < n; i++) { /* counts ~ 620 * 0.6^c / sum, tail classes get >= 1 */
        while (c < C - 1 && i >= (int)((acc + pow(0.6, c)) / tot * n + 0.5) && i > 0)
            acc += pow(0.6, c), c++;
        lab[i] = c;
    }
    shard s = {.n = n, .c = 3, .h = 32, .w = 32, .images = img, .labels = lab, .num_classes = C, .client = 0};
    float *hw = malloc((size_t)C * m->feat_dim * sizeof *hw), *hb = calloc((size_t)C, sizeof *hb);
    for (int i = 0; i < C * m->feat_dim; i++)
        hw[i] = (float)rng_normal(&r) * 0.05f;
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2023f, 0.1994f, 0.2010f};
    long images = 0;
    int64_t cnt[1024] = {0};
    for (int i = 0; i < n; i++)
        cnt[lab[i]]++;
    for (int c = 0; c < C; c++)
        images += (long)repeats * (cnt[c] < 32 ? cnt[c] : 32);
    pool_set_threads(threads);
    double w0 = clk(CLOCK_MONOTONIC), c0 = clk(CLOCK_PROCESS_CPUTIME_ID);
    classgrad *g = classgrad_client(m, hw, hb, &s, mean, std, repeats, 32, 1, 1, 0);
    double w = clk(CLOCK_MONOTONIC) - w0, cp = clk(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (!g)
        return 1;
    printf("step=client C=%d D=%d repeats=%d threads=%d classes=%d images=%ld seconds=%.3f cpu_seconds=%.3f "
           "images_per_s=%.1f cpu_images_per_s=%.1f\n",
           C, m->feat_dim, repeats, threads, g->k, images, w, cp, images / w, images * threads / cp);
    classgrad_free(g);
    model_free(m);
    free(img), free(lab), free(hw), free(hb);
    return 0;
}

static int bench_featgen(int C, int D, int iters, int text, int threads)
{
    const int mper = 100, N = C * mper;
    rng r;
    rng_init(&r, 1, "bench", 0, 0);
    float *F = malloc((size_t)N * D * sizeof *F), *W = malloc((size_t)C * D * sizeof *W);
    float *b = calloc((size_t)C, sizeof *b), *T = malloc((size_t)C * D * sizeof *T);
    int32_t *lab = malloc((size_t)N * sizeof *lab);
    for (size_t i = 0; i < (size_t)N * D; i++)
        F[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < (size_t)C * D; i++)
        W[i] = (float)rng_normal(&r) * 0.05f, T[i] = (float)rng_normal(&r);
    for (int i = 0; i < N; i++)
        lab[i] = i / mper;
    classgrad *g = classgrad_new(C, C, D);
    for (int i = 0; i < C; i++)
        g->classes[i] = i, g->counts[i] = 1;
    for (size_t i = 0; i < (size_t)C * C * D; i++)
        g->weight[i] = (float)rng_normal(&r) * 0.01f;
    for (size_t i = 0; i < (size_t)C * C; i++)
        g->bias[i] = (float)rng_normal(&r) * 0.01f;
    gradmatch_opts o;
    gradmatch_opts_default(&o);
    o.iters = iters;
    pool_set_threads(threads);
    double l0, l1, w0 = clk(CLOCK_MONOTONIC), c0 = clk(CLOCK_PROCESS_CPUTIME_ID);
    int rc = gradmatch_update(F, lab, N, D, W, b, C, g, text ? T : NULL, &o, &l0, &l1);
    double w = clk(CLOCK_MONOTONIC) - w0, cp = clk(CLOCK_PROCESS_CPUTIME_ID) - c0;
    double gflop = 2.0 * N * (double)C * D * (text ? 7 : 5) * iters / 1e9;
    printf("step=featgen C=%d D=%d iters=%d text=%d threads=%d rc=%d seconds=%.3f cpu_seconds=%.3f "
           "s_per_iter=%.5f cpu_s_per_iter=%.5f gflops=%.1f cpu_gflops=%.1f loss_first=%.4f loss_last=%.4f\n",
           C, D, iters, text, threads, rc, w, cp, w / iters, cp / threads / iters, gflop / w, gflop * threads / cp,
           l0, l1);
    classgrad_free(g);
    free(F), free(W), free(b), free(T), free(lab);
    return rc != 0;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && !strcmp(argv[1], "client"))
        return bench_client(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc >= 7 && !strcmp(argv[1], "featgen"))
        return bench_featgen(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    fprintf(stderr, "usage: creff_bench client C D REPEATS THREADS | featgen C D ITERS TEXT THREADS\n");
    return 2;
}
