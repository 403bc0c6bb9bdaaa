/* pool.h - the one thread pool: every parallel loop in lib/ (the nn kernels, CLIP's
 * encoders, shard batch gathering, dataset image decoding) runs on it.
 *
 * What it is: pool_threads() threads (the caller's plus persistent workers, started on
 * first use) that each run fn(ctx, tid, nt) once per pool_run; the task splits its work by
 * tid (statically, or from an atomic counter when every item has its own output slot), so
 * results are identical run to run at a fixed thread count.
 * What it is not: a task queue, a scheduler, or reentrant (one pool_run at a time, from one
 * thread; a task must not call pool_run).
 *
 * OpenBLAS: pool_set_threads() and every pool_run set OpenBLAS to 1 thread and leave it
 * there, so each worker calls it single-threaded (no oversubscription; a threaded OpenBLAS
 * toggled per call wakes workers that spin on our cores).  Code that wants a threaded
 * OpenBLAS afterwards sets openblas_set_num_threads() again. */
#ifndef FEDSM_POOL_H
#define FEDSM_POOL_H

#define POOL_MAX_THREADS 256

/* Sets the pool size (n <= 0: all online cores; at most POOL_MAX_THREADS) and OpenBLAS to
 * 1 thread.  Not thread-safe: call from the main thread, outside any task.  Default 1.
 * Tools do not call it: tool_set_threads (tool.h) does, with the --threads value. */
void pool_set_threads(int n);
int pool_threads(void);

/* Runs fn(ctx, tid, nt) for tid = 0..nt-1, nt = pool_threads(), tid 0 on the calling thread,
 * and returns when all are done.  OpenBLAS is held at one thread.  Should the workers fail to
 * start, the nt calls run one after another on the calling thread (same tids, same
 * results). */
typedef void (*pool_task_fn)(void *ctx, int tid, int nt);
void pool_run(pool_task_fn fn, void *ctx);

/* Sets OpenBLAS to one thread unless it is already (for single-threaded BLAS calls made
 * outside pool_run). */
void pool_blas_single(void);

#endif
