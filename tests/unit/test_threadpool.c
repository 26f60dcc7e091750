// Thread pool: every task runs exactly once per region, regions run back to
// back (the decode pattern: hundreds of short regions), any thread count.
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

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
        CHECK(lm_pool_init(nt, nt == 3, &p) == LM_OK);
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
    CHECK(lm_pool_init(100000, false, &(lm_pool *){0}) == LM_ERR_INVALID_ARG);
}

// Submit, do something else, wait: every task ran once, and a long region
// lets the waiter sleep (no lost wake-up: the test would hang).
static void slow_task(void *ctx, int i, int thread) {
    atomic_int *hits = ctx;
    struct timespec ts = {0, 200000};  // 0.2 ms
    if (i % 7 == 0) nanosleep(&ts, NULL);
    atomic_fetch_add(&hits[i], 1);
}

static void test_submit_wait(void) {
    lm_pool *p;
    CHECK(lm_pool_init(3, false, &p) == LM_OK);
    static atomic_int hits[500];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 500; i++) atomic_store(&hits[i], 0);
        lm_pool_job job;
        lm_pool_submit(p, slow_task, hits, 500, &job);
        volatile double x = 0;  // the submitter's own work meanwhile
        for (int k = 0; k < 100000; k++) x += k;
        lm_pool_wait(&job);
        int bad = 0;
        for (int i = 0; i < 500; i++) bad += atomic_load(&hits[i]) != 1;
        CHECK_MSG(bad == 0, "round %d: %d tasks not run exactly once", round, bad);
    }
    lm_pool_free(p);
}

// Two threads using one pool at once (two contexts on one runtime): their
// regions are serialised, never mixed.
typedef struct {
    lm_pool *p;
    atomic_int hits[300];
    int bad;
} user_t;

static void count_task(void *ctx, int i, int thread) { atomic_fetch_add(&((user_t *)ctx)->hits[i], 1); }

static void *user_thread(void *arg) {
    user_t *u = arg;
    for (int round = 0; round < 400; round++) {
        int n = 1 + round % 300;
        for (int i = 0; i < n; i++) atomic_store(&u->hits[i], 0);
        lm_pool_run(u->p, count_task, u, n);
        for (int i = 0; i < n; i++) u->bad += atomic_load(&u->hits[i]) != 1;
    }
    return NULL;
}

static void test_shared_by_two_threads(void) {
    lm_pool *p;
    CHECK(lm_pool_init(2, false, &p) == LM_OK);
    static user_t a, b;
    a.p = b.p = p;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, user_thread, &a);
    pthread_create(&tb, NULL, user_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_MSG(a.bad == 0 && b.bad == 0, "tasks lost or doubled: %d, %d", a.bad, b.bad);
    lm_pool_free(p);
}

int main(void) {
    RUN(test_every_task_once);
    RUN(test_submit_wait);
    RUN(test_shared_by_two_threads);
    return tl_finish();
}
