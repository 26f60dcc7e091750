// Kernel lab: paged attention (lm_attn_paged, src/kernels/cpu) at S sequences
// x C positions of context on one attention shape (default Mixtral-8x7B: 32
// query heads, 8 KV heads, head_dim 128), bf16 pages of 16 positions in the
// HND layout, scattered through the pool in random order. N threads take
// (sequence, KV head) tasks from a shared counter, as the CPU executor's pool
// does. Decode (one query token per sequence, the default) is reported as KV
// bytes/s against the read bandwidth measured with the same threads; prefill
// blocks (-b N: the last N positions of each sequence as queries) as GFLOP/s
// against the FMA peak. See README.md for results.
//
//   bench_attention [-s 16] [-c 4096] [-H 32] [-K 8] [-d 128] [-p 16] [-b 1]
//                   [-t threads] [-r reps] [-R rounds] [-i scalar|avx2|avx512] [-n iters] [-q]
//     -n: run the task list n times per repetition (small, cache-resident cases)
//     -q: skip the check against the scalar reference
#include "kernels/cpu/kernels.h"
#include "lab.h"
#include "util/err.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

typedef struct {
    int S, C, H, K, hd, ps, nq, pages_per_seq, ref, iters;
    uint16_t *kv;
    int32_t *table;  // [S][pages_per_seq]
    float *q, *out;  // [S][nq][H * hd]
    int32_t *pos;    // [nq]: C - nq .. C - 1
    float *scratch;  // [threads][floats]
    size_t floats;
    atomic_int next;
} att_arg;

static void att_job(team *tm, int tid) {
    att_arg *a = tm->arg;
    const int G = a->H / a->K, ld = a->H * a->hd;
    for (;;) {
        int i = atomic_fetch_add(&a->next, 1);
        if (i >= a->S * a->K * a->iters) break;
        i %= a->S * a->K;
        int s = i / a->K, kh = i % a->K;
        lm_attn_task t = {
            .q = a->q + (size_t)s * a->nq * ld + (size_t)kh * G * a->hd,
            .q_stride = ld,
            .out = a->out + (size_t)s * a->nq * ld + (size_t)kh * G * a->hd,
            .out_stride = ld,
            .pos = a->pos,
            .n_q = a->nq,
            .kv = a->kv,
            .kv_dt = LM_DT_BF16,
            .pages = a->table + (size_t)s * a->pages_per_seq,
            .page_size = a->ps,
            .n_kv_heads = a->K,
            .kv_head = kh,
            .head_dim = a->hd,
            .group = G,
            .scratch = a->scratch + (size_t)tid * a->floats,
        };
        (a->ref ? lm_attn_paged_ref : lm_attn_paged)(&t);
    }
}

static double run(att_arg *a, int nthr, int reps) {
    // the counter is reset by thread 0 between repetitions through the job:
    // simplest is one repetition per team_run
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        atomic_store(&a->next, 0);
        double t = team_run(nthr, 1, att_job, a, NULL);
        best = t < best ? t : best;
    }
    return best;
}

int main(int argc, char **argv) {
    int nthr = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 5, rounds = 3, force = -1, check = 1;
    att_arg a = {.S = 16, .C = 4096, .H = 32, .K = 8, .hd = 128, .ps = 16, .nq = 1, .iters = 1};
    for (int i = 1; i < argc; i++) {
        int *v = !strcmp(argv[i], "-s")   ? &a.S
                 : !strcmp(argv[i], "-c") ? &a.C
                 : !strcmp(argv[i], "-H") ? &a.H
                 : !strcmp(argv[i], "-K") ? &a.K
                 : !strcmp(argv[i], "-d") ? &a.hd
                 : !strcmp(argv[i], "-p") ? &a.ps
                 : !strcmp(argv[i], "-b") ? &a.nq
                 : !strcmp(argv[i], "-t") ? &nthr
                 : !strcmp(argv[i], "-r") ? &reps
                 : !strcmp(argv[i], "-R") ? &rounds
                 : !strcmp(argv[i], "-n") ? &a.iters
                                          : NULL;
        if (v && i + 1 < argc) *v = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-q")) check = 0;
        else if (!strcmp(argv[i], "-i") && i + 1 < argc) {
            const char *s = argv[++i];
            force = !strcmp(s, "scalar") ? 0 : !strcmp(s, "avx2") ? 1 : 2;
        } else {
            fprintf(stderr,
                    "usage: %s [-s seqs] [-c context] [-H q heads] [-K kv heads] [-d head_dim] [-p page] "
                    "[-b query block] [-t threads] [-r reps] [-R rounds] [-i scalar|avx2|avx512] [-n iters] [-q]\n",
                    argv[0]);
            return 2;
        }
    }
    if (a.S < 1 || a.C < 1 || a.K < 1 || a.H < a.K || a.H % a.K || a.hd < 1 || a.ps < 1 || a.nq < 1 ||
        a.nq > a.C || a.iters < 1 || nthr < 1 || nthr > 64 || reps < 1 || rounds < 1) {
        fprintf(stderr, "bench_attention: bad sizes\n");
        return 2;
    }
    lm_isa isa = lm_cpu_kernels_init(force);
    const int G = a.H / a.K, ld = a.H * a.hd;
    a.pages_per_seq = (a.C + a.ps - 1) / a.ps;
    const size_t n_pages = (size_t)a.S * a.pages_per_seq;
    const size_t page_elems = 2 * (size_t)a.K * a.ps * a.hd;
    const double kv_bytes = 2.0 * a.S * a.C * a.K * a.hd * 2;  // what one step must read: K and V, bf16
    const double flops = 4.0 * a.S * a.H * a.hd * ((double)a.nq * a.C - (double)a.nq * (a.nq - 1) / 2);
    printf("isa %s, %d threads; %d seqs x %d ctx, %d q heads / %d kv heads (group %d), head_dim %d, "
           "page %d, %d query tokens per seq; KV %.1f MB (bf16), best of %d rounds x %d reps\n",
           lm_isa_name(isa), nthr, a.S, a.C, a.H, a.K, G, a.hd, a.ps, a.nq, kv_bytes * 1e-6, rounds, reps);

    a.kv = lm_huge_alloc(n_pages * page_elems * 2);
    a.table = malloc(sizeof(int32_t) * n_pages);
    a.q = malloc(sizeof(float) * (size_t)a.S * a.nq * ld);
    a.out = malloc(sizeof(float) * (size_t)a.S * a.nq * ld);
    a.pos = malloc(sizeof(int32_t) * a.nq);
    a.floats = lm_attn_scratch_floats(a.nq, G, a.hd, a.ps);
    a.scratch = aligned_alloc(64, (size_t)nthr * a.floats * sizeof(float));
    if (!a.kv || !a.table || !a.q || !a.out || !a.pos || !a.scratch) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    // keys and queries of unit scale over head_dim so the softmax is neither
    // flat nor one-hot; pages in a random order (a pool shared by many
    // sequences that grew together)
    for (size_t i = 0; i < n_pages * page_elems; i++) a.kv[i] = lm_f32_to_bf16(rndf() * 1.7f);
    for (size_t i = 0; i < (size_t)a.S * a.nq * ld; i++) a.q[i] = rndf() * 1.7f;
    for (size_t i = 0; i < n_pages; i++) a.table[i] = (int32_t)i;
    for (size_t i = n_pages - 1; i > 0; i--) {
        size_t j = rndu() % (i + 1);
        int32_t t = a.table[i];
        a.table[i] = a.table[j], a.table[j] = t;
    }
    for (int t = 0; t < a.nq; t++) a.pos[t] = a.C - a.nq + t;

    double bw = 0, peak = 0, best = 1e30;
    for (int r = 0; r < rounds; r++) {
        double b = read_bandwidth(nthr), p = fma_peak(isa, nthr);
        bw = b > bw ? b : bw, peak = p > peak ? p : peak;
        double t = run(&a, nthr, reps);
        best = t < best ? t : best;
    }
    double maxd = 0, maxv = 0;
    if (check) {  // the same problem through the scalar reference
        float *fast = a.out;
        a.out = malloc(sizeof(float) * (size_t)a.S * a.nq * ld);
        a.ref = 1;
        int iters = a.iters;
        a.iters = 1;
        run(&a, nthr, 1);
        a.iters = iters;
        for (size_t i = 0; i < (size_t)a.S * a.nq * ld; i++) {
            double d = fabs((double)fast[i] - a.out[i]);
            maxd = d > maxd || d != d ? d : maxd;
            maxv = fabs(a.out[i]) > maxv ? fabs(a.out[i]) : maxv;
        }
        free(a.out);
        a.out = fast;
    }
    printf("read bandwidth %.1f GB/s (1 GiB buffer, %d threads), FMA peak %.0f GFLOP/s\n", bw * 1e-9, nthr, peak);
    printf("%-8s %10s %10s %8s %10s %8s\n", "q/seq", "ms", "KV GB/s", "%bw", "GFLOP/s", "%peak");
    best /= a.iters;
    printf("%-8d %10.4f %10.2f %7.0f%% %10.1f %7.0f%%\n", a.nq, best * 1e3, kv_bytes / best * 1e-9,
           100 * kv_bytes / best / bw, flops / best * 1e-9, 100 * flops / best * 1e-9 / peak);
    if (check) printf("max |fast - scalar reference| = %.3g (largest output %.3g)%s\n", maxd, maxv,
                      maxd > 1e-4 * (maxv > 1 ? maxv : 1) ? "  MISMATCH" : "");
    return maxd > 1e-4 * (maxv > 1 ? maxv : 1);
}
