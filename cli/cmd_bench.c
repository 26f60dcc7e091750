// lightmoe bench: prefill and decode throughput next to the memory-bandwidth
// bound (bytes a decode step must read ÷ measured DRAM read bandwidth).
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plan/cost.h"

static const char *help =
    "usage: lightmoe bench [-m DIR | --synthetic CONFIG.json[:LAYERS]] [options]\n"
    "\n"
    "Measures prefill and decode tokens/s on random prompt tokens and prints each next\n"
    "to its roofline: a step takes at least max(bytes it must read / measured read\n"
    "bandwidth, flops / measured FMA peak); decode at small batch is memory-bound,\n"
    "prefill compute-bound. --synthetic builds random bf16 weights with the shapes\n"
    "of a config.json, optionally keeping only LAYERS layers (e.g.\n"
    "configs/mixtral-8x7b.json:2), so real sizes need no download. Without -m or\n"
    "--synthetic it uses the model shipped in models/.\n"
    "\n"
    "  -m, --model DIR       checkpoint directory\n"
    "      --synthetic CONFIG.json[:LAYERS]\n"
    "                        random weights with the shapes of CONFIG.json\n"
    "  -b, --batch B         sequences decoded together (default 1)\n"
    "      --prompt-len S    prompt tokens per sequence (default 128)\n"
    "      --gen-len N       decode steps (default 32)\n"
    "      --seed S          seed of the synthetic weights (default 1234)\n" CLI_MODEL_OPTS_HELP;

static int32_t argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int cmd_bench(int argc, char **argv) {
    args a = {argc, 1, argv, "bench", false};
    const char *dir = NULL, *syn = NULL;
    int batch = 1, plen = 128, glen = 32;
    cli_model_opts mo = {.seed = lm_synthetic_default_params().seed};
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--synthetic", NULL, &syn) ||
            arg_int(&a, "--batch", "-b", 1, 4096, &batch) || arg_int(&a, "--prompt-len", NULL, 1, 1 << 20, &plen) ||
            arg_int(&a, "--gen-len", NULL, 0, 1 << 20, &glen) || cli_model_opt(&a, &mo) ||
            arg_u64(&a, "--seed", NULL, &mo.seed))
            continue;
        arg_unknown(&a, NULL);
    }
    if (!a.failed && dir && syn) arg_fail(&a, "give -m DIR or --synthetic CONFIG, not both");
    if (a.failed) return EXIT_USAGE;
    if (!dir && !syn && !(dir = cli_default_model())) return 1;

    int n_threads = mo.threads;
    if (n_threads <= 0) {
        n_threads = 0;
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) n_threads = CPU_COUNT(&set);
        if (n_threads <= 0) n_threads = 1;
    }
    // A bad model path or config must fail before seconds of probing: check
    // it with a load that reads headers only (no weight built or copied).
    lm_model *model;
    cli_model_opts check = mo;
    check.weights = LM_WEIGHTS_MMAP;
    check.quiet = true;
    int rc = cli_load_model("bench", dir, syn, true, &check, &model);
    if (rc) return rc;
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    lm_model_free(model);
    if (plen + glen > mi.max_positions) {
        fprintf(stderr, "lightmoe bench: prompt-len + gen-len = %d exceeds the model's %d positions\n", plen + glen,
                mi.max_positions);
        return 1;
    }
    // Ceilings first, before the model takes memory (a fragmented heap gets
    // fewer huge pages for the probe's buffer).
    fprintf(stderr, "measuring memory bandwidth and FMA peak (%d threads) ...\n", n_threads);
    double bw = lm_probe_read_bandwidth(n_threads), peak = lm_probe_fma_peak(n_threads);

    double t_load = cli_now();
    rc = cli_load_model("bench", dir, syn, false, &mo, &model);
    if (rc) return rc;
    t_load = cli_now() - t_load;
    lm_model_get_info(model, &mi);

    long total_prefill = (long)batch * plen;
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo.kv_type;
    cp.executor = cli_device("lightmoe bench", &mo);
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

    // Prefill: all prompts, packed into batches of up to n_batch tokens.
    uint64_t rng = 0x1234567;
    double t0 = cli_now();
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
        lm_batch b = {nb, tok, seq, want, NULL, NULL};
        st = lm_decode(ctx, &b);
        for (int k = 0, j = 0; k < nb && !st; k++)
            if (want[k]) last[seq[k]] = argmax(lm_get_logits(ctx, j++), mi.vocab);
    }
    double t_prefill = cli_now() - t0;

    // Decode: glen steps, one token per sequence, greedy.
    t0 = cli_now();
    for (int s = 0; s < glen && !st; s++) {
        for (int i = 0; i < batch; i++) tok[i] = last[i], seq[i] = i;
        lm_batch b = {batch, tok, seq, NULL, NULL, NULL};
        st = lm_decode(ctx, &b);
        for (int i = 0; i < batch && !st; i++) last[i] = argmax(lm_get_logits(ctx, i), mi.vocab);
    }
    double t_decode = cli_now() - t0;
    if (st) {
        rc = cli_error("bench", st);
        goto done;
    }

    // Rooflines: a step takes at least max(bytes / bandwidth, flops / peak).
    double wbytes = (double)mi.bytes_weights;
    lm_cost dc = lm_cost_decode_step(&mi, batch, plen + glen / 2.0), pc = lm_cost_prefill(&mi, batch, plen);
    double step_bytes = dc.bytes, step_flops = dc.flops;
    double t_mem = step_bytes / bw, t_cmp = peak > 0 ? step_flops / peak : 0;
    double decode_tps = glen > 0 ? (double)batch * glen / t_decode : 0;
    double bound_tps = (double)batch / (t_mem > t_cmp ? t_mem : t_cmp);
    double prefill_tps = (double)total_prefill / t_prefill;
    double prefill_flops = pc.flops;
    double prefill_bound = peak > 0 ? (double)total_prefill / (prefill_flops / peak) : 0;

    char wb[32];
    printf("model            %s%s%s, %d layers, %.3g params (%.3g active), %s of weights\n", mi.architecture,
           syn ? " synthetic " : " ", syn ? syn : dir, mi.n_layers, (double)mi.n_params_total,
           (double)mi.n_params_active, lm_format_bytes(wbytes, wb, sizeof wb));
    printf("setup            batch %d, prompt %d, gen %d, %d threads, load %.2f s, weights %s\n", batch, plen, glen,
           n_threads, t_load, mi.weights_mmapped ? "mmap'ed" : "in huge-page memory");
    printf("machine          read bandwidth %.1f GB/s, FMA peak %.0f GFLOP/s (measured, %d threads)\n", bw / 1e9,
           peak / 1e9, n_threads);
    printf("prefill          %8.1f tok/s  compute bound %.1f tok/s (%.1f GFLOP / %.0f GFLOP/s) = %.0f%% of bound\n",
           prefill_tps, prefill_bound, prefill_flops / 1e9, peak / 1e9,
           prefill_bound > 0 ? 100.0 * prefill_tps / prefill_bound : 0.0);
    if (glen > 0)
        printf("decode           %8.2f tok/s  %s bound %.2f tok/s (%.1f MB / %.1f GB/s, %.1f GFLOP / %.0f GFLOP/s) "
               "= %.0f%% of bound\n",
               decode_tps, t_mem >= t_cmp ? "memory" : "compute", bound_tps, step_bytes / 1e6, bw / 1e9,
               step_flops / 1e9, peak / 1e9, 100.0 * decode_tps / bound_tps);
done:
    free(tok);
    free(seq);
    free(want);
    free(last);
    lm_context_free(ctx);
    lm_model_free(model);
    return rc;
}
