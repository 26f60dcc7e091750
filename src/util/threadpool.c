#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"

struct lm_pool {
    int n;  // threads including the caller
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;       // bumped for every parallel region
    atomic_int next;       // next task index
    atomic_int pending;    // workers still inside the current region
    atomic_bool quit;
    lm_task_fn fn;
    void *ctx;
    int n_tasks;
};

typedef struct {
    lm_pool *p;
    int idx;
} worker_arg;

static void drain(lm_pool *p, int thread) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n_tasks) break;
        p->fn(p->ctx, i, thread);
    }
}

static void *worker(void *arg) {
    worker_arg *wa = arg;
    lm_pool *p = wa->p;
    int idx = wa->idx;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (atomic_load(&p->quit)) return NULL;
            if (++spins < 20000) continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        seen = g;
        drain(p, idx);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

int lm_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

lm_status lm_pool_init(int n_threads, lm_pool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = lm_cpu_count();
    if (n_threads > 1024) return lm_err(LM_ERR_INVALID_ARG, "thread count %d is too large", n_threads);
    lm_pool *p = lm_calloc(1, sizeof *p);
    if (!p) return LM_ERR_OOM;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = lm_calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return LM_ERR_OOM;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || (wa->p = p, wa->idx = i, pthread_create(&p->threads[i], NULL, worker, wa) != 0)) {
            free(wa);
            p->n = i;
            lm_pool_free(p);
            return lm_err(LM_ERR_OOM, "cannot start worker thread %d", i);
        }
    }
    *out = p;
    return LM_OK;
}

void lm_pool_free(lm_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int lm_pool_size(const lm_pool *p) { return p ? p->n : 1; }

void lm_pool_run(lm_pool *p, lm_task_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) sched_yield();
}
