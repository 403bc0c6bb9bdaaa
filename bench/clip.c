/* bench/clip.c - CLIP encoder throughput in C (bench/clip.sh runs it beside PyTorch):
 * images/s at batch 1 and 64, prompts/s (64 prompts of 12 tokens), GFLOP/s from the
 * model's multiply-adds; in fp32 and then with bf16 matrix products (clip_use_bf16).
 * Usage: clip WEIGHTS [THREADS].  Not a test. */
#include "clip.h"
#include "err.h"
#include "pool.h"
#include "tool.h"

#include <stdio.h>
#include <stdlib.h>

/* 2 x multiply-adds of one sequence of T tokens through a tower's blocks */
static double tower_flops(const clip_tower *t, int T)
{
    double D = t->width, M = t->mlp;
    return t->layers * (2.0 * T * D * 3 * D + 4.0 * T * T * D + 2.0 * T * D * D + 4.0 * T * D * M);
}

int main(int argc, char **argv)
{
    tool_init("bench-clip");
    if (argc < 2) {
        fprintf(stderr, "usage: clip WEIGHTS [THREADS]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    tool_set_threads(threads);
    pool_set_threads(threads);
    clip_model *m = clip_load(argv[1], NULL);
    if (!m) {
        fprintf(stderr, "bench-clip: %s\n", err_msg());
        return 1;
    }
    int S = m->image_size, G = m->grid, P = m->patch;
    double img_flops = tower_flops(&m->vision, G * G + 1) + 2.0 * G * G * 3 * P * P * m->vision.width +
                       2.0 * m->vision.width * m->embed_dim;
    float *px = malloc((size_t)64 * 3 * S * S * sizeof *px), *out = malloc((size_t)64 * m->embed_dim * sizeof *out);
    for (size_t k = 0; k < (size_t)64 * 3 * S * S; k++) px[k] = (float)((k * 2654435761u) % 1000) / 500.0f - 1.0f;
    printf("c gflop_per_image %.3f\n", img_flops / 1e9);
    int32_t *ids = calloc(64 * 77, sizeof *ids);
    for (int b = 0; b < 64; b++) {
        ids[b * 77] = 49406;
        for (int i = 1; i < 11; i++) ids[b * 77 + i] = 1 + (b * 131 + i * 977) % 49000;
        ids[b * 77 + 11] = 49407;
    }
    /* fp32, then with bf16 matrix products ("c_bf16" lines) */
    for (int prec = 0; prec < 2; prec++) {
        const char *tag = prec ? "c_bf16" : "c";
        if (prec && clip_use_bf16(m)) {
            fprintf(stderr, "bench-clip: %s\n", err_msg());
            return 1;
        }
        int reps_for[2] = {10, 2}, batches[2] = {1, 64};
        for (int q = 0; q < 2; q++) {
            int b = batches[q];
            clip_encode_image(m, px, b, out); /* warm-up */
            double t0 = tool_now();
            for (int r = 0; r < reps_for[q]; r++) clip_encode_image(m, px, b, out);
            double dt = (tool_now() - t0) / reps_for[q];
            printf("%s image_b%d %.2f\n%s gflops_b%d %.1f\n", tag, b, b / dt, tag, b, b * img_flops / dt / 1e9);
            fflush(stdout);
        }
        clip_encode_text(m, ids, 64, 77, out);
        double t0 = tool_now();
        for (int r = 0; r < 5; r++) clip_encode_text(m, ids, 64, 77, out);
        double dt = (tool_now() - t0) / 5;
        printf("%s text_b64 %.2f\n", tag, 64 / dt);
        fflush(stdout);
    }
    free(ids);
    free(px);
    free(out);
    clip_free(m);
    return 0;
}
