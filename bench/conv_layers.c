/* conv_layers.c - per-layer conv2d timings of ResNet-8 (CIFAR, batch 32) for each conv
 * algorithm: forward, backward (weight + input gradient; none for the stem's input), and the
 * backward's weight gradient alone (dw_ms: backward with din = NULL).
 *
 * What it is: random tensors, one warm-up call, then reps calls per kernel, wall-clock ms per
 * call and the direct convolution's GFLOP/s (2 flops per multiply-add; Winograd does fewer).
 * Not a training benchmark (bench/train_resnet8.c is).
 * Usage: conv_layers [threads [reps [algos]]]  (default 1 5 "igemm,winograd") */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "pool.h"
#include "rng.h"
#include "tool.h"

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1, reps = argc > 2 ? atoi(argv[2]) : 5;
    const char *algos = argc > 3 ? argv[3] : "igemm,winograd";
    tool_set_threads(threads);
    pool_set_threads(threads);
    static const struct {
        const char *name;
        int ci, h, co, k, s, p;
    } L[] = {{"conv1", 3, 32, 64, 3, 1, 1},        {"layer1.conv1", 64, 32, 64, 3, 1, 1},
             {"layer1.conv2", 64, 32, 64, 3, 1, 1}, {"layer2.conv1", 64, 32, 128, 3, 2, 1},
             {"layer2.conv2", 128, 16, 128, 3, 1, 1}, {"layer2.ds", 64, 32, 128, 1, 2, 0},
             {"layer3.conv1", 128, 16, 256, 3, 2, 1}, {"layer3.conv2", 256, 8, 256, 3, 1, 1},
             {"layer3.ds", 128, 16, 256, 1, 2, 0}};
    const int n = 32, nl = (int)(sizeof L / sizeof L[0]);
    rng r;
    rng_init(&r, 1, "bench", 0, 0);
    printf("%-14s %-9s %9s %9s %9s %9s %9s\n", "layer", "algo", "fwd_ms", "fwd_GF/s", "bwd_ms",
           "bwd_GF/s", "dw_ms");
    static const char *names[3] = {"blas", "igemm", "winograd"};
    double tot[3][2] = {{0}};
    for (int l = 0; l < nl; l++) {
        nn_conv2d_dims d = nn_conv2d_make(n, L[l].ci, L[l].h, L[l].h, L[l].co, L[l].k, L[l].s, L[l].p);
        size_t nx = (size_t)n * d.ci * d.h * d.w, nw = (size_t)d.co * d.ci * d.kh * d.kw,
               ny = (size_t)n * d.co * d.ho * d.wo;
        float *x = malloc(4 * nx), *w = malloc(4 * nw), *y = malloc(4 * ny), *dy = malloc(4 * ny),
              *dx = malloc(4 * nx), *dw = calloc(nw, 4),
              *ws = malloc(4 * nn_conv2d_ws_floats(&d));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < nw; i++)
            w[i] = 0.1f * (float)rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            dy[i] = (float)rng_normal(&r);
        double flops = 2.0 * nw * d.ho * d.wo * n;
        for (int a = 0; a < 3; a++) {
            char key[16];
            snprintf(key, sizeof key, "%s,", names[a]);
            char list[256];
            snprintf(list, sizeof list, "%s,", algos);
            if (!strstr(list, key) || nn_set_conv_algo(a) != a)
                continue;
            float *din = l == 0 ? NULL : dx;
            nn_conv2d_forward(y, x, w, NULL, &d, ws);
            double t0 = tool_now();
            for (int i = 0; i < reps; i++)
                nn_conv2d_forward(y, x, w, NULL, &d, ws);
            double tf = (tool_now() - t0) / reps;
            nn_conv2d_backward(din, dw, NULL, dy, x, w, &d, ws);
            t0 = tool_now();
            for (int i = 0; i < reps; i++)
                nn_conv2d_backward(din, dw, NULL, dy, x, w, &d, ws);
            double tb = (tool_now() - t0) / reps;
            t0 = tool_now();
            for (int i = 0; i < reps; i++)
                nn_conv2d_backward(NULL, dw, NULL, dy, x, w, &d, ws);
            double tw = (tool_now() - t0) / reps;
            double fb = flops * (din ? 2 : 1);
            tot[a][0] += tf, tot[a][1] += tb;
            printf("%-14s %-9s %9.2f %9.1f %9.2f %9.1f %9.2f\n", L[l].name, names[a], 1e3 * tf,
                   flops / tf / 1e9, 1e3 * tb, fb / tb / 1e9, 1e3 * tw);
        }
        free(x), free(w), free(y), free(dy), free(dx), free(dw), free(ws);
    }
    for (int a = 0; a < 3; a++)
        if (tot[a][0] > 0)
            printf("%-14s %-9s %9.2f %9s %9.2f   (threads %d)\n", "total", names[a],
                   1e3 * tot[a][0], "", 1e3 * tot[a][1], threads);
    return 0;
}
