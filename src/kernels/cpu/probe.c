// Hardware probes: the two ceilings every CPU figure is reported against —
// DRAM read bandwidth (memory-bound decode) and FMA throughput (prefill).
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kernels.h"
#include "lightmoe.h"
#include "util/err.h"
#include "util/file.h"

// Four streams a quarter of the slice apart: more DRAM pages in flight than
// one sequential stream, and the same access shape as the decode GEMV.
__attribute__((target("avx2"))) static uint64_t read_sum_avx2(const char *p, size_t bytes) {
    const size_t q = bytes / 4 / 32 * 32;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < q; i += 32) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(p + q + i)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(p + 2 * q + i)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(p + 3 * q + i)));
    }
    s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    return (uint64_t)_mm256_extract_epi64(s0, 0) + (uint64_t)_mm256_extract_epi64(s0, 3);
}

static uint64_t read_sum_plain(const char *p, size_t bytes) {
    const size_t q = bytes / 4 / 8 * 8;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, v;
    for (size_t i = 0; i < q; i += 8) {
        memcpy(&v, p + i, 8), s0 += v;
        memcpy(&v, p + q + i, 8), s1 += v;
        memcpy(&v, p + 2 * q + i, 8), s2 += v;
        memcpy(&v, p + 3 * q + i, 8), s3 += v;
    }
    return s0 + s1 + s2 + s3;
}

uint64_t lm_read_sum(const void *p, size_t bytes) {
    return __builtin_cpu_supports("avx2") ? read_sum_avx2(p, bytes) : read_sum_plain(p, bytes);
}

// Independent FMA chains, enough to cover the FMA latency on both ports.
__attribute__((target("avx512f"))) static float peak512(long iters) {
    __m512 a[16], m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    for (int j = 0; j < 16; j++) a[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) a[j] = _mm512_fmadd_ps(a[j], m, c);
    __m512 s = a[0];
    for (int j = 1; j < 16; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float peak256(long iters) {
    __m256 a[12], m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    for (int j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], m, c);
    __m256 s = a[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, a[j]);
    float l[8];
    _mm256_storeu_ps(l, s);
    return l[0];
}

float lm_fma_chain(lm_isa isa, long iters) {
    return isa == LM_ISA_AVX512 ? peak512(iters) : isa == LM_ISA_AVX2 ? peak256(iters) : 0;
}

double lm_fma_chain_flops(lm_isa isa, long iters) {
    return isa == LM_ISA_AVX512 ? (double)iters * 16 * 16 * 2 : isa == LM_ISA_AVX2 ? (double)iters * 12 * 8 * 2 : 0;
}

// ---------------------------------------------------- threaded probes ---

#define FMA_ITERS 4000000L

typedef struct {
    const char *buf;
    size_t per;
    int idx;
    lm_isa isa;
    uint64_t sink;
    float fsink;
    pthread_barrier_t *bar;
} probe_arg;

static void *bw_thread(void *arg) {
    probe_arg *a = arg;
    pthread_barrier_wait(a->bar);
    a->sink = lm_read_sum(a->buf + a->per * (size_t)a->idx, a->per);
    return NULL;
}

static void *fma_thread(void *arg) {
    probe_arg *a = arg;
    pthread_barrier_wait(a->bar);
    a->fsink = lm_fma_chain(a->isa, FMA_ITERS);
    return NULL;
}

// Runs fn on n threads (the caller is thread 0, so the machine is not
// oversubscribed) released together by a barrier; returns the wall time.
static double run_threads(int n, void *(*fn)(void *), probe_arg *args) {
    pthread_t th[256];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) args[i].bar = &bar;
    for (int i = 1; i < n; i++) pthread_create(&th[i], NULL, fn, &args[i]);
    double t0 = lm_now();  // the caller arrives last, so this is the release time
    fn(&args[0]);
    for (int i = 1; i < n; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    return lm_now() - t0;
}

double lm_probe_read_bandwidth(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    const size_t bytes = (size_t)1 << 30;
    char *buf = lm_huge_alloc(bytes);  // as the weights: TLB misses are not DRAM's limit
    if (!buf) return 0;
    memset(buf, 1, bytes);  // fault the pages in
    probe_arg args[256];
    size_t per = bytes / (size_t)n_threads / 4096 * 4096;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        for (int i = 0; i < n_threads; i++) args[i] = (probe_arg){.buf = buf, .per = per, .idx = i};
        double t = run_threads(n_threads, bw_thread, args);
        double bw = (double)(per * (size_t)n_threads) / t;
        if (bw > best) best = bw;
    }
    free(buf);
    return best;
}

double lm_probe_fma_peak(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    lm_isa isa = lm_cpu_kernels_init(-1);
    if (isa == LM_ISA_SCALAR) return 0;
    double per_thread = lm_fma_chain_flops(isa, FMA_ITERS);
    probe_arg args[256];
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < n_threads; i++) args[i] = (probe_arg){.isa = isa};
        double t = run_threads(n_threads, fma_thread, args);
        double f = per_thread * n_threads / t;
        if (f > best) best = f;
    }
    return best;
}
