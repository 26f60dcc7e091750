// A fixed pool of worker threads for data-parallel loops ("regions"). A pool
// of n threads starts n-1 workers; the thread that waits for a region takes
// part as thread 0. Workers spin briefly before sleeping because a decode
// step issues hundreds of short regions and a condvar wake-up per region
// would dominate small models; the spin is bounded, so an idle pool sleeps.
//
// Regions run one at a time: two threads (two contexts sharing a runtime)
// may use the pool at once and are serialised, never mixed. A region can be
// submitted and waited for later (lm_pool_submit / lm_pool_wait), so the
// submitting thread can do other work (feed a GPU) while the workers run it.
#ifndef LM_UTIL_THREADPOOL_H
#define LM_UTIL_THREADPOOL_H

#include <stdbool.h>

#include "lightmoe.h"

typedef struct lm_pool lm_pool;

// task(ctx, i, thread) for i in [0, n_tasks); tasks are handed out
// dynamically, so they should be of similar size or numerous. `thread` is in
// [0, lm_pool_size) and identifies per-thread scratch.
typedef void (*lm_task_fn)(void *ctx, int i, int thread);

// n_threads <= 0: one per CPU this process may use. pin: bind worker i to
// the i-th of those CPUs (the waiting thread is left alone).
lm_status lm_pool_init(int n_threads, bool pin, lm_pool **out);
void lm_pool_free(lm_pool *p);
int lm_pool_size(const lm_pool *p);

// Runs a region and returns when every task has finished.
void lm_pool_run(lm_pool *p, lm_task_fn fn, void *ctx, int n_tasks);

// Starts a region on the workers and returns at once; the pool is the
// caller's until lm_pool_wait (which helps with the tasks left, then waits).
// Every submit must be followed by a wait from the same thread.
typedef struct lm_pool_job {
    lm_pool *p;
} lm_pool_job;
void lm_pool_submit(lm_pool *p, lm_task_fn fn, void *ctx, int n_tasks, lm_pool_job *job);
void lm_pool_wait(lm_pool_job *job);

int lm_cpu_count(void);

#endif
