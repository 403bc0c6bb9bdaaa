/* peak_fma.c - measured fp32 FMA peak of this machine, 1 thread and N threads.
 *
 * What it is: a register-only loop of independent fused multiply-adds (16 accumulators, the
 * widest vectors the build allows: AVX-512, AVX2+FMA, or scalar), timed with the monotonic
 * clock; prints GFLOP/s (2 flops per lane per FMA) by wall clock and per CPU-second.  Not a model
 * of memory-bound code. Usage: peak_fma [threads...]  (default: 1 2) */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define ITERS 20000000L
#define NACC 16

#if defined(__AVX512F__)
#define LANES 16
typedef __m512 vec;
#define VSET(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSUM(v) _mm512_reduce_add_ps(v)
#elif defined(__FMA__)
#define LANES 8
typedef __m256 vec;
#define VSET(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float vsum(__m256 v)
{
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#define VSUM(v) vsum(v)
#else
#define LANES 1
typedef float vec;
#define VSET(x) (x)
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VSUM(v) (v)
#endif

static double cpu_sum; /* CPU seconds of all runs, under mu */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void *run(void *arg)
{
    float *out = arg;
    double cpu0 = thread_cpu();
    vec a = VSET(0.999999f), b = VSET(1e-7f);
    /* 16 named accumulators: independent chains, all in registers */
    vec c0 = VSET(0), c1 = VSET(1), c2 = VSET(2), c3 = VSET(3), c4 = VSET(4), c5 = VSET(5),
        c6 = VSET(6), c7 = VSET(7), c8 = VSET(8), c9 = VSET(9), c10 = VSET(10), c11 = VSET(11),
        c12 = VSET(12), c13 = VSET(13), c14 = VSET(14), c15 = VSET(15);
    for (long it = 0; it < ITERS; it++) {
        c0 = VFMA(c0, a, b), c1 = VFMA(c1, a, b), c2 = VFMA(c2, a, b), c3 = VFMA(c3, a, b);
        c4 = VFMA(c4, a, b), c5 = VFMA(c5, a, b), c6 = VFMA(c6, a, b), c7 = VFMA(c7, a, b);
        c8 = VFMA(c8, a, b), c9 = VFMA(c9, a, b), c10 = VFMA(c10, a, b), c11 = VFMA(c11, a, b);
        c12 = VFMA(c12, a, b), c13 = VFMA(c13, a, b), c14 = VFMA(c14, a, b);
        c15 = VFMA(c15, a, b);
        __asm__ volatile("" : "+v"(a)); /* keep the loop from being folded */
    }
    *out = VSUM(c0) + VSUM(c1) + VSUM(c2) + VSUM(c3) + VSUM(c4) + VSUM(c5) + VSUM(c6) + VSUM(c7) +
           VSUM(c8) + VSUM(c9) + VSUM(c10) + VSUM(c11) + VSUM(c12) + VSUM(c13) + VSUM(c14) +
           VSUM(c15);
    double c = thread_cpu() - cpu0;
    pthread_mutex_lock(&mu);
    cpu_sum += c;
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    int def[2] = {1, 2}, n = argc > 1 ? argc - 1 : 2;
    for (int k = 0; k < n; k++) {
        int t = argc > 1 ? atoi(argv[k + 1]) : def[k];
        if (t < 1 || t > 256)
            return 2;
        pthread_t th[256];
        float sink[256];
        double t0 = now();
        cpu_sum = 0;
        for (int i = 0; i < t; i++)
            pthread_create(&th[i], NULL, run, &sink[i]);
        for (int i = 0; i < t; i++)
            pthread_join(th[i], NULL);
        double dt = now() - t0;
        double flops = 2.0 * LANES * NACC * (double)ITERS * t;
        /* cpu_gflops: per CPU-second times threads (a whole core per thread; load-robust) */
        printf("peak_fma threads=%d lanes=%d gflops=%.1f cpu_gflops=%.1f (sink %g)\n", t, LANES,
               flops / dt / 1e9, flops / cpu_sum * t / 1e9, (double)sink[0]);
    }
    return 0;
}
