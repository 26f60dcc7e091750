// Thread pool: every task runs exactly once per region, regions run back to
// back (the decode pattern: hundreds of short regions), any thread count.
#include <stdatomic.h>

#include "testlib.h"
#include "util/threadpool.h"

typedef struct {
    atomic_int *hits;
    atomic_int max_thread;
} job_t;

static void task(void *ctx, int i, int thread) {
    job_t *j = ctx;
    atomic_fetch_add(&j->hits[i], 1);
    int m = atomic_load(&j->max_thread);
    while (thread > m && !atomic_compare_exchange_weak(&j->max_thread, &m, thread)) {}
}

static void test_every_task_once(void) {
    for (int nt = 1; nt <= 5; nt++) {
        lm_pool *p;
        CHECK(lm_pool_init(nt, &p) == LM_OK);
        CHECK(lm_pool_size(p) == nt);
        static atomic_int hits[1000];
        job_t j = {hits, 0};
        for (int round = 0; round < 300; round++) {
            int n = 1 + (round * 37) % 1000;
            for (int i = 0; i < n; i++) atomic_store(&hits[i], 0);
            lm_pool_run(p, task, &j, n);
            int bad = 0;
            for (int i = 0; i < n; i++) bad += atomic_load(&hits[i]) != 1;
            CHECK_MSG(bad == 0, "%d threads, round %d: %d tasks not run exactly once", nt, round, bad);
        }
        CHECK(atomic_load(&j.max_thread) < nt);
        lm_pool_run(p, task, &j, 0);  // empty region is a no-op
        lm_pool_free(p);
    }
    CHECK(lm_pool_init(100000, &(lm_pool *){0}) == LM_ERR_INVALID_ARG);
}

int main(void) {
    RUN(test_every_task_once);
    return tl_finish();
}
