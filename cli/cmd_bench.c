// lightmoe bench: prefill and decode throughput next to the memory-bandwidth
// bound (bytes a decode step must read ÷ measured DRAM read bandwidth).
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *help =
    "usage: lightmoe bench [-m DIR | --synthetic CONFIG.json[:LAYERS]] [options]\n"
    "\n"
    "Measures prefill and decode tokens/s on random prompt tokens and prints them next\n"
    "to the bound: decode is memory-bound, so the bound is (weight bytes a step reads +\n"
    "KV cache bytes) / measured memory read bandwidth. --synthetic builds random bf16\n"
    "weights with the shapes of a config.json, optionally keeping only LAYERS layers\n"
    "(e.g. ../shared/configs/mixtral-8x7b.json:2), so real sizes need no download.\n"
    "Without -m or --synthetic it uses the model shipped in models/.\n"
    "\n"
    "  --batch B        sequences decoded together (default 1)\n"
    "  --prompt-len S   prompt tokens per sequence (default 128)\n"
    "  --gen-len N      decode steps (default 32)\n"
    "  -t, --threads N  CPU threads (default: all cores)\n"
    "  --seed S         seed of the synthetic weights (default 1234)\n";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} bw_arg;

// Four streams a quarter of the slice apart: DRAM serves several open pages
// at once, and the matmul kernel reads weights the same way, so a single
// sequential stream would understate the bound.
// Reads its slice as four streams a quarter apart (DRAM serves several open
// pages at once, and the matmul kernel reads weights that way too), with
// 32-byte loads where AVX2 exists: narrower loads understate the bound.
typedef uint64_t u64x4 __attribute__((vector_size(32)));

#define BW_BODY                                                                     \
    size_t q = a->n / 16;                                                          \
    const u64x4 *p0 = (const u64x4 *)a->p, *p1 = p0 + q, *p2 = p1 + q, *p3 = p2 + q; \
    u64x4 s0 = {0}, s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;   \
    for (size_t i = 0; i + 2 <= q; i += 2) {                                       \
        s0 += p0[i], s1 += p0[i + 1], s2 += p1[i], s3 += p1[i + 1];                \
        s4 += p2[i], s5 += p2[i + 1], s6 += p3[i], s7 += p3[i + 1];                \
    }                                                                              \
    u64x4 s = s0 ^ s1 ^ s2 ^ s3 ^ s4 ^ s5 ^ s6 ^ s7;                               \
    a->sum = s[0] ^ s[1] ^ s[2] ^ s[3];

__attribute__((target("avx2"))) static void bw_read_avx2(bw_arg *a) { BW_BODY }
static void bw_read_plain(bw_arg *a) { BW_BODY }

static void *bw_read(void *arg) {
    if (__builtin_cpu_supports("avx2")) bw_read_avx2(arg);
    else bw_read_plain(arg);
    return NULL;
}

// Best of 5 multi-threaded passes over 1 GiB: the DRAM read bandwidth that
// bounds a memory-bound decode step.
static double measure_bandwidth(int threads) {
    size_t bytes = (size_t)1 << 30, n = bytes / 8;
    uint64_t *buf = malloc(bytes);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0;
    pthread_t th[256];
    bw_arg args[256];
    if (threads > 256) threads = 256;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (int t = 0; t < threads; t++) {
            args[t] = (bw_arg){buf + n / threads * t, n / threads, 0};
            pthread_create(&th[t], NULL, bw_read, &args[t]);
        }
        for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
        double bw = (double)bytes / (now_s() - t0);
        if (bw > best) best = bw;
    }
    free(buf);
    return best;
}

static int32_t argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int cmd_bench(int argc, char **argv) {
    args a = {argc, 1, argv, "bench", false};
    const char *dir = NULL, *syn = NULL;
    int batch = 1, plen = 128, glen = 32, threads = 0;
    uint64_t seed = 1234;
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--synthetic", NULL, &syn) ||
            arg_int(&a, "--batch", "-b", 1, 4096, &batch) || arg_int(&a, "--prompt-len", NULL, 1, 1 << 20, &plen) ||
            arg_int(&a, "--gen-len", NULL, 0, 1 << 20, &glen) || arg_int(&a, "--threads", "-t", 1, 1024, &threads) ||
            arg_u64(&a, "--seed", NULL, &seed))
            continue;
        arg_fail(&a, "unknown option '%s'", argv[a.i]);
    }
    if (!a.failed && dir && syn) arg_fail(&a, "give -m DIR or --synthetic CONFIG, not both");
    if (a.failed) return EXIT_USAGE;
    if (!dir && !syn && !(dir = cli_default_model())) return 1;
    (void)seed;

    lm_model *model;
    double t_load = now_s();
    int rc = cli_load_model("bench", dir, syn, threads, &model);
    if (rc) return rc;
    t_load = now_s() - t_load;
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    if (plen + glen > mi.max_positions) {
        fprintf(stderr, "lightmoe bench: prompt-len + gen-len = %d exceeds the model's %d positions\n", plen + glen,
                mi.max_positions);
        lm_model_free(model);
        return 1;
    }
    int n_threads = threads;
    if (n_threads <= 0) {
        n_threads = 0;
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) n_threads = CPU_COUNT(&set);
        if (n_threads <= 0) n_threads = 1;
    }

    long total_prefill = (long)batch * plen;
    lm_context_params cp = lm_context_default_params();
    cp.n_seq = batch;
    cp.n_ctx = plen + glen;
    cp.n_batch = total_prefill < 2048 ? (int)total_prefill : 2048;
    if (cp.n_batch < batch) cp.n_batch = batch;
    lm_context *ctx;
    lm_status st = lm_context_init(model, &cp, &ctx);
    if (st) {
        lm_model_free(model);
        return cli_error("bench", st);
    }
    int32_t *tok = malloc((size_t)cp.n_batch * sizeof *tok), *seq = malloc((size_t)cp.n_batch * sizeof *seq);
    uint8_t *want = malloc((size_t)cp.n_batch);
    int32_t *last = malloc((size_t)batch * sizeof *last);
    if (!tok || !seq || !want || !last) {
        fprintf(stderr, "lightmoe bench: out of memory\n");
        rc = 1;
        goto done;
    }
    fprintf(stderr, "measuring memory bandwidth (%d threads) ...\n", n_threads);
    double bw = measure_bandwidth(n_threads);

    // Prefill: all prompts, packed into batches of up to n_batch tokens.
    uint64_t rng = 0x1234567;
    double t0 = now_s();
    long done_tok = 0;
    while (done_tok < total_prefill && !st) {
        int nb = 0;
        while (nb < cp.n_batch && done_tok < total_prefill) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            tok[nb] = (int32_t)((rng >> 33) % (uint64_t)mi.vocab);
            seq[nb] = (int32_t)(done_tok / plen);
            want[nb] = (done_tok % plen) == plen - 1;
            nb++, done_tok++;
        }
        lm_batch b = {nb, tok, seq, want};
        st = lm_decode(ctx, &b);
        for (int k = 0, j = 0; k < nb && !st; k++)
            if (want[k]) last[seq[k]] = argmax(lm_get_logits(ctx, j++), mi.vocab);
    }
    double t_prefill = now_s() - t0;

    // Decode: glen steps, one token per sequence, greedy.
    t0 = now_s();
    for (int s = 0; s < glen && !st; s++) {
        for (int i = 0; i < batch; i++) tok[i] = last[i], seq[i] = i;
        lm_batch b = {batch, tok, seq, NULL};
        st = lm_decode(ctx, &b);
        for (int i = 0; i < batch && !st; i++) last[i] = argmax(lm_get_logits(ctx, i), mi.vocab);
    }
    double t_decode = now_s() - t0;
    if (st) {
        rc = cli_error("bench", st);
        goto done;
    }

    // Bytes one decode step must read: every non-expert weight once, each
    // expert touched by at least one token once (uniform routing expectation
    // E(1-(1-k/E)^B)), and every sequence's KV cache.
    double wbytes = (double)mi.bytes_weights, elt = wbytes / (double)mi.n_params_total;
    double expert_bytes = 3.0 * mi.moe_intermediate * (double)mi.hidden * elt;
    double all_experts = (double)mi.n_moe_layers * mi.n_experts * expert_bytes;
    double touched = mi.n_experts * (1.0 - pow(1.0 - (double)mi.top_k / mi.n_experts, batch));
    double embed_bytes = (double)mi.vocab * mi.hidden * elt;  // only B rows of it are read
    double step_bytes = wbytes - all_experts - embed_bytes + mi.n_moe_layers * touched * expert_bytes +
                        (double)batch * (plen + glen / 2.0) * (double)mi.bytes_kv_per_token;
    double decode_tps = glen > 0 ? (double)batch * glen / t_decode : 0;
    double bound_tps = (double)batch / (step_bytes / bw);
    double prefill_tps = (double)total_prefill / t_prefill;
    double prefill_flops = 2.0 * (double)mi.n_params_active * (double)total_prefill;

    printf("model            %s%s%s, %d layers, %.3g params (%.3g active), %.2f GB weights\n", mi.architecture,
           syn ? " synthetic " : " ", syn ? syn : dir, mi.n_layers, (double)mi.n_params_total,
           (double)mi.n_params_active, wbytes / 1e9);
    printf("setup            batch %d, prompt %d, gen %d, %d threads, load %.2f s\n", batch, plen, glen, n_threads,
           t_load);
    printf("memory bandwidth %.1f GB/s (measured read, best of 5)\n", bw / 1e9);
    printf("prefill          %8.1f tok/s  (%.1f GFLOP/s on active weights; compute-bound)\n", prefill_tps,
           prefill_flops / t_prefill / 1e9);
    if (glen > 0)
        printf("decode           %8.2f tok/s  memory bound %.2f tok/s (%.1f MB read per step / %.1f GB/s) = %.0f%% of bound\n",
               decode_tps, bound_tps, step_bytes / 1e6, bw / 1e9, 100.0 * decode_tps / bound_tps);
done:
    free(tok);
    free(seq);
    free(want);
    free(last);
    lm_context_free(ctx);
    lm_model_free(model);
    return rc;
}
