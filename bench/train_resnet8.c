/* train_resnet8.c - training throughput of fedsm's ResNet-8 (CIFAR, 10 classes): images/s
 * and GFLOP/s of full training steps (forward, CE, backward, SGD) at batch 32.
 *
 * What it is: random normalised inputs, the model's own init, warm-up steps, then timed
 * steps for about --seconds.  FLOPs counted as 3x the forward convolution and linear
 * multiply-adds (2 flops each), the usual training estimate.  Not a data-loading benchmark.
 * Usage: train_resnet8 [threads [batch [seconds [igemm|blas|winograd|default]]]]
 * (default 1 32 5 default: nn's default conv algorithm, or FEDSM_CONV_ALGO's) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgaug.h"
#include "model.h"
#include "nn.h"
#include "pool.h"
#include "rng.h"
#include "tool.h"

/* CPU seconds of this process (all threads) */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double forward_flops(const model *m)
{
    /* per image: sum over conv weights of 2 * numel(w) * Ho * Wo; linear 2 * numel(w) */
    double f = 0;
    int h = m->cfg.input_size;
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        if (t->ndim == 4) {
            /* output side: input size in conv1/layer1, /2 in layer2, /4 in layer3 */
            int out = h;
            if (strstr(t->name, "layer2"))
                out = h / 2;
            else if (strstr(t->name, "layer3"))
                out = h / 4;
            f += 2.0 * (double)t->numel * out * out;
        } else if (t->ndim == 2) {
            f += 2.0 * (double)t->numel;
        }
    }
    return f;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1, n = argc > 2 ? atoi(argv[2]) : 32;
    double seconds = argc > 3 ? atof(argv[3]) : 5.0;
    tool_set_threads(threads); /* what every tool does: OpenBLAS ... */
    pool_set_threads(threads); /* ... and the thread pool */
    const char *an = argc > 4 ? argv[4] : "default";
    int algo = !strcmp(an, "blas")       ? nn_set_conv_algo(NN_CONV_BLAS)
               : !strcmp(an, "igemm")    ? nn_set_conv_algo(NN_CONV_IGEMM)
               : !strcmp(an, "winograd") ? nn_set_conv_algo(NN_CONV_WINOGRAD)
                                         : nn_conv_algo();
    static const char *names[] = {"blas", "igemm", "winograd"};
    model_config c;
    model_config_default(&c, "resnet8");
    model *m = model_new(&c);
    if (!m)
        return 1;
    model_init(m, 1);
    rng r;
    rng_init(&r, 1, "bench", 0, 0);
    float *x = malloc(sizeof(float) * n * 3 * 32 * 32),
          *xa = malloc(sizeof(float) * n * 3 * 32 * 32);
    int32_t *lab = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n * 3 * 32 * 32; i++)
        x[i] = (float)rng_normal(&r);
    for (int i = 0; i < n; i++)
        lab[i] = i % 10;
    float loss = 0;
    int steps = 0;
    double t0 = 0, c0 = 0;
    for (int it = 0;; it++) {
        if (it == 3)
            t0 = tool_now(), c0 = cpu_now();
        imgaug_random_crop_flip(xa, x, n, 3, 32, 32, 4, 0, &r);
        model_zero_grad(m);
        if (model_train_step_grads(m, xa, lab, NULL, n, 3, 1, &loss) < 0)
            return 1;
        model_sgd_step(m, 0.01f, 0.0f, 0.0f);
        if (it >= 3) {
            steps++;
            if (tool_now() - t0 >= seconds && steps >= 3)
                break;
        }
    }
    double dt = tool_now() - t0, cpu = cpu_now() - c0, ips = steps * n / dt;
    /* per CPU-second, times threads: the rate with a whole core per thread (load-robust) */
    double cips = steps * n / cpu * threads;
    double gf = 3.0 * forward_flops(m) * ips / 1e9, cgf = 3.0 * forward_flops(m) * cips / 1e9;
    printf("c threads=%d batch=%d conv=%s steps=%d images_per_s=%.1f cpu_images_per_s=%.1f "
           "gflops=%.1f cpu_gflops=%.1f loss=%.3f\n",
           threads, n, names[algo], steps, ips, cips, gf, cgf, loss);
    model_free(m);
    free(x);
    free(xa);
    free(lab);
    return 0;
}
