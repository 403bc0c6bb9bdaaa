/* pool.c - the one thread pool of pool.h: persistent workers woken per task by a
 * generation counter under one mutex, the caller running tid 0.
 * What it is not: a work queue (each task gets every thread exactly once). */
#include "pool.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

static struct {
    int n;       /* pool size including the calling thread */
    int started; /* worker threads running */
    pthread_t tid[POOL_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen; /* incremented per task */
    int pending;       /* workers still running the current task */
    int quit;
    pool_task_fn fn;
    void *ctx;
} pool = {.n = 1,
          .mu = PTHREAD_MUTEX_INITIALIZER,
          .go = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static void *pool_worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == seen && !pool.quit)
            pthread_cond_wait(&pool.go, &pool.mu);
        if (pool.quit)
            break;
        seen = pool.gen;
        pool_task_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int nt = pool.n;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, me, nt);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

static void pool_stop(void)
{
    if (!pool.started)
        return;
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 1; i < pool.started; i++)
        pthread_join(pool.tid[i], NULL);
    pool.started = 0;
    pool.quit = 0;
}

void pool_set_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > POOL_MAX_THREADS)
        n = POOL_MAX_THREADS;
    pool_stop();
    pool.n = n;
    pool_blas_single();
}

int pool_threads(void)
{
    return pool.n;
}

/* lib/ calls OpenBLAS only single-threaded (in the pool's tasks, or for nn's small linear
 * layers), and leaves it at one thread: toggling it back and forth per call wakes
 * OpenBLAS's workers, which then spin (sched_yield) on the cores the pool uses.  Code
 * that wants a threaded OpenBLAS afterwards sets it again (pool.h says so). */
void pool_blas_single(void)
{
    if (openblas_get_num_threads() != 1)
        openblas_set_num_threads(1);
}

void pool_run(pool_task_fn fn, void *ctx)
{
    int nt = pool.n;
    pool_blas_single();
    if (nt == 1) {
        fn(ctx, 0, 1);
    } else {
        pthread_mutex_lock(&pool.mu);
        if (!pool.started) {
            pool.started = 1;
            for (int i = 1; i < nt; i++) {
                if (pthread_create(&pool.tid[i], NULL, pool_worker, (void *)(intptr_t)i) != 0)
                    break; /* fewer workers: fall back below */
                pool.started = i + 1;
            }
        }
        int workers = pool.started - 1;
        if (workers != nt - 1) { /* could not start them all: run serially */
            pthread_mutex_unlock(&pool.mu);
            for (int t = 0; t < nt; t++)
                fn(ctx, t, nt);
        } else {
            pool.fn = fn;
            pool.ctx = ctx;
            pool.pending = workers;
            pool.gen++;
            pthread_cond_broadcast(&pool.go);
            pthread_mutex_unlock(&pool.mu);
            fn(ctx, 0, nt);
            pthread_mutex_lock(&pool.mu);
            while (pool.pending > 0)
                pthread_cond_wait(&pool.done, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
    }
}
