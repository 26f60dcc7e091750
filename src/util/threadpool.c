#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"

// Spins of an idle worker before it sleeps, and of a waiter before it sleeps.
#define SPIN_WORKER 20000
#define SPIN_WAITER 2000

struct lm_pool {
    int n;  // threads including the waiting one
    pthread_t *threads;
    pthread_mutex_t region;  // held from submit to the end of wait: one region at a time
    pthread_mutex_t mu;      // guards the sleeps below
    pthread_cond_t cv;       // workers sleep here between regions
    pthread_cond_t done_cv;  // a waiter sleeps here until pending reaches 0
    atomic_uint gen;         // bumped for every region
    atomic_int next;         // next task index
    atomic_int pending;      // workers still inside the current region
    atomic_bool waiter_sleeping;
    atomic_bool quit;
    lm_task_fn fn;
    void *ctx;
    int n_tasks;
};

typedef struct {
    lm_pool *p;
    int idx;
    int cpu;  // -1: not pinned
} worker_arg;

static void drain(lm_pool *p, int thread) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n_tasks) break;
        p->fn(p->ctx, i, thread);
    }
}

static void *worker(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    lm_pool *p = wa.p;
    if (wa.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(wa.cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);  // best effort
    }
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (atomic_load(&p->quit)) return NULL;
            if (++spins < SPIN_WORKER) continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        seen = g;
        drain(p, wa.idx);
        // seq_cst (Dekker): the waiter stores its flag then reads pending, we
        // decrement pending then read the flag; one of us sees the other.
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->waiter_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
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

// The i-th CPU of this process's affinity set, or -1.
static int nth_cpu(int i) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    for (int c = 0, k = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set) && k++ == i) return c;
    return -1;
}

lm_status lm_pool_init(int n_threads, bool pin, lm_pool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = lm_cpu_count();
    if (n_threads > 1024) return lm_err(LM_ERR_INVALID_ARG, "thread count %d is too large", n_threads);
    lm_pool *p = lm_calloc(1, sizeof *p);
    if (!p) return LM_ERR_OOM;
    p->n = n_threads;
    pthread_mutex_init(&p->region, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = lm_calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return LM_ERR_OOM;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, i, pin ? nth_cpu(i) : -1};
        if (!wa || pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
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
    pthread_mutex_destroy(&p->region);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int lm_pool_size(const lm_pool *p) { return p ? p->n : 1; }

void lm_pool_submit(lm_pool *p, lm_task_fn fn, void *ctx, int n_tasks, lm_pool_job *job) {
    job->p = p;
    pthread_mutex_lock(&p->region);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks < 0 ? 0 : n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void lm_pool_wait(lm_pool_job *job) {
    lm_pool *p = job->p;
    drain(p, 0);
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0;) {
        if (++spins < SPIN_WAITER) {
            sched_yield();
            continue;
        }
        // A long region (CPU attention of a micro-batch): sleep until the last worker signals.
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->waiter_sleeping, true);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
        atomic_store(&p->waiter_sleeping, false);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->region);
}

void lm_pool_run(lm_pool *p, lm_task_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1) {
        // Inline; still one region at a time with other users of the pool.
        if (p) pthread_mutex_lock(&p->region);
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, 0);
        if (p) pthread_mutex_unlock(&p->region);
        return;
    }
    lm_pool_job job;
    lm_pool_submit(p, fn, ctx, n_tasks, &job);
    lm_pool_wait(&job);
}
