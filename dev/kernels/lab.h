// Kernel lab helpers shared by the bench_* programs: a clock, a small RNG, a
// team of pthreads that runs a job between barriers and keeps the best time,
// and the two machine ceilings every figure is reported against (read
// bandwidth of a 1 GiB buffer, FMA peak of the chosen ISA).
#ifndef LM_DEV_LAB_H
#define LM_DEV_LAB_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/kernels.h"

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static inline uint64_t rndu(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static inline float rndf(void) { return (float)((int)(rndu() % 2001) - 1000) * 1e-3f; }  // [-1, 1]

// ---------------------------------------------------- thread team helper ---
// N threads run job(tid) `reps` times between barriers; thread 0 times each
// repetition and the best time is kept (the machine is shared, noise is up).

typedef struct team {
    int nthr, reps;
    int *rep;  // optional: bumped by thread 0 after every repetition
    void (*job)(struct team *, int tid);
    void *arg;
    pthread_barrier_t bar;
    double best;
} team;

typedef struct {
    team *tm;
    int tid;
} targ;

static inline void *team_main(void *p) {
    targ *a = p;
    team *tm = a->tm;
    for (int r = 0; r < tm->reps; r++) {
        pthread_barrier_wait(&tm->bar);
        double t0 = now();
        tm->job(tm, a->tid);
        pthread_barrier_wait(&tm->bar);
        double dt = now() - t0;
        if (a->tid == 0 && dt < tm->best) tm->best = dt;
        if (a->tid == 0 && tm->rep) ++*tm->rep;
    }
    return NULL;
}

static inline double team_run(int nthr, int reps, void (*job)(team *, int), void *arg, int *rep) {
    team tm = {.nthr = nthr, .reps = reps, .rep = rep, .job = job, .arg = arg, .best = 1e30};
    pthread_barrier_init(&tm.bar, NULL, (unsigned)nthr);
    pthread_t th[64];
    targ ta[64];
    for (int i = 0; i < nthr; i++) {
        ta[i] = (targ){&tm, i};
        if (i) pthread_create(&th[i], NULL, team_main, &ta[i]);
    }
    team_main(&ta[0]);
    for (int i = 1; i < nthr; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&tm.bar);
    return tm.best;
}

// --------------------------------------------------------- read bandwidth ---

typedef struct {
    const char *buf;
    size_t bytes;
    volatile uint64_t sink;
} bw_arg;

static inline void bw_job(team *tm, int tid) {
    bw_arg *a = tm->arg;
    size_t per = a->bytes / tm->nthr / 4096 * 4096;
    a->sink += lm_read_sum(a->buf + per * tid, per);
}

static inline double read_bandwidth(int nthr) {
    static char *buf;
    const size_t bytes = (size_t)1 << 30;
    if (!buf) {
        buf = aligned_alloc(4096, bytes);
        memset(buf, 1, bytes);  // fault the pages in
    }
    bw_arg a = {buf, bytes, 0};
    double t = team_run(nthr, 10, bw_job, &a, NULL);
    return (double)(bytes / nthr / 4096 * 4096 * nthr) / t;
}

// -------------------------------------------------------------- FMA peak ---
// Independent FMA chains per thread (src/kernels/cpu/probe.c): the tile's ceiling.

static volatile float g_sink;
static inline void peak_job(team *tm, int tid) {
    lm_isa isa = *(lm_isa *)tm->arg;
    g_sink = lm_fma_chain(isa, 20000000);
}

static inline double fma_peak(lm_isa isa, int nthr) {  // GFLOP/s
    if (isa == LM_ISA_SCALAR) return 0;
    double t = team_run(nthr, 3, peak_job, &isa, NULL);
    double flops = lm_fma_chain_flops(isa, 20000000);
    return flops * nthr / t * 1e-9;
}

#endif
