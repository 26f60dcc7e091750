// A fixed pool of worker threads for data-parallel loops. The caller thread
// takes part, so a pool of n threads starts n-1 workers. Workers spin briefly
// before sleeping because a decode step issues hundreds of short parallel
// regions and a condvar wake-up per region would dominate small models.
#ifndef LM_UTIL_THREADPOOL_H
#define LM_UTIL_THREADPOOL_H

#include "lightmoe.h"

typedef struct lm_pool lm_pool;

// task(ctx, i, thread) for i in [0, n_tasks); tasks are handed out
// dynamically, so they should be of similar size or numerous.
typedef void (*lm_task_fn)(void *ctx, int i, int thread);

lm_status lm_pool_init(int n_threads, lm_pool **out);  // n_threads <= 0: one per core
void lm_pool_free(lm_pool *p);
int lm_pool_size(const lm_pool *p);
void lm_pool_run(lm_pool *p, lm_task_fn fn, void *ctx, int n_tasks);

int lm_cpu_count(void);

#endif
