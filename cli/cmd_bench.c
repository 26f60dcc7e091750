// lightmoe bench: prefill and decode throughput next to their rooflines.
// On the CPU the ceilings are the measured DRAM read bandwidth and FMA peak;
// on the GPU the measured HBM read bandwidth and bf16 mma.sync peak, and
// each phase also gets its energy per token and average power from NVML.
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "exec/cuda_probe.h"
#include "plan/cost.h"
#include "util/err.h"
#include "util/nvml.h"

static const char *help =
    "usage: lightmoe bench [-m DIR | --synthetic CONFIG.json[:LAYERS]] [options]\n"
    "\n"
    "Measures prefill and decode tokens/s on random prompt tokens and prints each next\n"
    "to its roofline: a step takes at least max(bytes it must read / measured read\n"
    "bandwidth, flops / measured peak); decode at small batch is memory-bound,\n"
    "prefill compute-bound. Decode bytes per step are the weights it reads (MoE: the\n"
    "experts the batch routes to, E(1-(1-k/E)^B) per layer under uniform routing)\n"
    "plus every sequence's KV cache at its average length. --synthetic builds random\n"
    "bf16 weights with the shapes of a config.json, optionally keeping only LAYERS\n"
    "layers (e.g. configs/mixtral-8x7b.json:2), so real sizes need no download.\n"
    "Without -m or --synthetic it uses the model shipped in models/.\n"
    "\n"
    "On the CPU the ceilings are DRAM read bandwidth and the fp32 FMA peak of the\n"
    "threads used. On the GPU (--device cuda) they are the HBM read bandwidth (a\n"
    "2 GiB stream read) and the bf16 mma.sync peak, and every row also shows energy\n"
    "per token and average power from the board's NVML energy counter (\"n/a\" when\n"
    "NVML or the counter is missing; phases under a second or so are coarse):\n"
    "\n"
    "  machine   GPU <name>, HBM read bandwidth X GB/s, bf16 mma.sync peak Y TFLOP/s (measured)\n"
    "  prefill   T tok/s  compute bound B tok/s (F GFLOP / Y TFLOP/s) = P% of bound, J J/tok, W W\n"
    "  decode    T tok/s  memory bound B tok/s (M MB / X GB/s, ...) = P% of bound, J J/tok, W W\n"
    "\n"
    "  -m, --model DIR       checkpoint directory\n"
    "      --synthetic CONFIG.json[:LAYERS]\n"
    "                        random weights with the shapes of CONFIG.json\n"
    "  -b, --batch B[,B...]  sequences decoded together (default 1); a list runs each\n"
    "                        size in turn on the same weights (one load), a row each\n"
    "      --prompt-len S    prompt tokens per sequence (default 128)\n"
    "      --gen-len N       decode steps (default 32)\n"
    "      --reps N          run the decode phase N times from the same prompts and\n"
    "                        report the median tok/s with min and max (default 1)\n"
    "      --json FILE       also write the figures as JSON (\"-\": standard output,\n"
    "                        the table then goes to standard error): machine, setup,\n"
    "                        and prefill/decode rows with tok_per_s, bound_tok_per_s,\n"
    "                        pct_of_bound, j_per_token and watts (null when n/a)\n"
    "      --seed S          seed of the synthetic weights (default 1234)\n" CLI_MODEL_OPTS_HELP;

// The ceilings the figures are reported against.
typedef struct {
    bool gpu;
    double bw, peak;  // bytes/s, FLOP/s
    lm_cuda_device_info dev;
} machine;

// Energy of a phase from two reads of the board's counter; NAN when there
// is no counter or a read failed.
typedef struct {
    lm_energy *e;
    uint64_t mj0;
    bool ok;
} meter;

static void meter_start(meter *m) { m->ok = m->e && lm_energy_read_mj(m->e, &m->mj0) == 0; }

static double meter_joules(meter *m) {
    uint64_t mj;
    if (!m->ok || lm_energy_read_mj(m->e, &mj) != 0 || mj < m->mj0) return NAN;
    return (double)(mj - m->mj0) / 1e3;
}

// One row of the table.
typedef struct {
    long tokens;
    double seconds;             // wall time of the phase (all reps)
    double tps, tps_min, tps_max;  // decode: median, min, max over the reps
    double bound_tps;
    double bytes, flops;        // per step (decode) or in all (prefill)
    bool memory_bound;
    double joules;              // NAN: n/a
} row;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *fmt_or_na(char *buf, size_t len, const char *fmt, double v) {
    if (isnan(v)) return "n/a";
    snprintf(buf, len, fmt, v);
    return buf;
}

// ", 0.0123 J/tok, 312 W" (GPU rows only).
static void print_energy(FILE *f, const row *r) {
    char j[32], w[32];
    fprintf(f, ", %s J/tok, %s W", fmt_or_na(j, sizeof j, "%.4g", r->joules / (double)r->tokens),
            fmt_or_na(w, sizeof w, "%.0f", r->joules / r->seconds));
}

// A peak as the table prints it: TFLOP/s for a GPU, GFLOP/s for a CPU.
static const char *fmt_peak(char *buf, size_t len, const machine *m) {
    if (m->gpu) snprintf(buf, len, "%.1f TFLOP/s", m->peak / 1e12);
    else snprintf(buf, len, "%.0f GFLOP/s", m->peak / 1e9);
    return buf;
}

static void add_num(cJSON *o, const char *key, double v) {
    if (isnan(v) || isinf(v)) cJSON_AddNullToObject(o, key);
    else cJSON_AddNumberToObject(o, key, v);
}

static cJSON *json_row(const row *r, bool decode, int reps) {
    cJSON *o = cJSON_CreateObject();
    add_num(o, "tokens", (double)r->tokens);
    add_num(o, "seconds", r->seconds);
    add_num(o, "tok_per_s", r->tps);
    if (decode) {
        add_num(o, "reps", reps);
        add_num(o, "tok_per_s_min", r->tps_min);
        add_num(o, "tok_per_s_max", r->tps_max);
    }
    cJSON_AddStringToObject(o, "bound", r->memory_bound ? "memory" : "compute");
    add_num(o, "bound_tok_per_s", r->bound_tps);
    add_num(o, "pct_of_bound", r->bound_tps > 0 ? 100.0 * r->tps / r->bound_tps : NAN);
    add_num(o, decode ? "bytes_per_step" : "bytes", r->bytes);
    add_num(o, decode ? "flops_per_step" : "flops", r->flops);
    add_num(o, "j_per_token", r->joules / (double)r->tokens);
    add_num(o, "watts", r->joules / r->seconds);
    return o;
}

// One batch size: a context for it, the prefill of batch x plen random
// tokens, then glen greedy decode steps (reps times); the rows with their
// rooflines, the context's parameters and what it held on the GPU.
static lm_status run_batch(lm_model *model, const cli_model_opts *mo, const machine *mc, lm_energy *energy, int batch,
                           int plen, int glen, int reps, row *pf_out, row *dc_out, lm_context_params *cp_out,
                           lm_mem_used *mu) {
    const machine m = *mc;
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    lm_status st = LM_OK;
    long total_prefill = (long)batch * plen;
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo->kv_type;
    cp.graphs = !mo->no_graphs;
    cp.gpu_mem = mo->gpu_mem;
    cp.executor = m.gpu ? "cuda" : "cpu";
    cp.n_seq = batch;
    cp.n_ctx = plen + glen;
    // Prefill chunks: a GPU's GEMMs want many tokens at once (bounded by the
    // activations: ~2.5 KB per token per 1k of hidden size).
    int chunk = m.gpu ? 8192 : 2048;
    cp.n_batch = total_prefill < chunk ? (int)total_prefill : chunk;
    if (cp.n_batch < batch) cp.n_batch = batch;
    cp.n_out = batch < cp.n_batch ? batch : cp.n_batch;  // one output row per sequence at most
    lm_context *ctx = NULL;
    int32_t *tok = NULL, *seq = NULL, *pos = NULL, *last = NULL, *first = NULL;
    uint8_t *want = NULL;
    double *rates = NULL;
    lm_sampler *greedy = NULL, **smp = NULL;
    if ((st = lm_context_init(model, &cp, &ctx))) goto done;
    cli_mem_report("lightmoe bench", model, &cp, NULL, mo->verbose);
    tok = malloc((size_t)cp.n_batch * sizeof *tok), seq = malloc((size_t)cp.n_batch * sizeof *seq);
    pos = malloc((size_t)batch * sizeof *pos);
    want = malloc((size_t)cp.n_batch);
    last = malloc((size_t)batch * sizeof *last), first = malloc((size_t)batch * sizeof *first);
    rates = malloc((size_t)reps * sizeof *rates);
    // Greedy draws through the batch's samplers: a GPU picks the ids where
    // the logits are (as generate does) instead of copying them back.
    lm_sampler_params gsp = lm_sampler_default_params();
    smp = malloc((size_t)cp.n_out * sizeof *smp);
    if (lm_sampler_init(&gsp, mi.vocab, &greedy) != LM_OK) greedy = NULL;
    for (int i = 0; smp && i < cp.n_out; i++) smp[i] = greedy;
    if (!tok || !seq || !pos || !want || !last || !first || !rates || !smp || !greedy) {
        st = lm_err(LM_ERR_OOM, "out of memory");
        goto done;
    }

    // Prefill: all prompts, packed into batches of up to n_batch tokens.
    // lm_decode returns when its step is done (the GPU executor waits for
    // the step), so reading the energy counter after the loop is fair.
    meter em = {.e = energy};
    row pf = {.tokens = total_prefill}, dc = {.tokens = (long)batch * glen * reps};
    uint64_t rng = 0x1234567;
    meter_start(&em);
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
        lm_batch b = {nb, tok, seq, want, NULL, smp};
        st = lm_decode(ctx, &b);
        for (int k = 0, j = 0; k < nb && !st; k++)
            if (want[k]) last[seq[k]] = lm_get_token(ctx, j++);
    }
    pf.seconds = cli_now() - t0;
    pf.joules = meter_joules(&em);
    memcpy(first, last, (size_t)batch * sizeof *first);

    // Decode: glen greedy steps, one token per sequence, `reps` times. Each
    // rep starts again at position plen from the same first tokens (the
    // positions cut every sequence back to its prompt), so reps do the same work.
    meter_start(&em);
    double t_all = cli_now();
    for (int r = 0; r < reps && glen > 0 && !st; r++) {
        memcpy(last, first, (size_t)batch * sizeof *last);
        t0 = cli_now();
        for (int s = 0; s < glen && !st; s++) {
            for (int i = 0; i < batch; i++) tok[i] = last[i], seq[i] = i, pos[i] = plen + s;
            lm_batch b = {batch, tok, seq, NULL, pos, smp};
            st = lm_decode(ctx, &b);
            for (int i = 0; i < batch && !st; i++) last[i] = lm_get_token(ctx, i);
        }
        rates[r] = (double)batch * glen / (cli_now() - t0);
    }
    dc.seconds = cli_now() - t_all;
    dc.joules = meter_joules(&em);
    if (st) goto done;
    if (glen > 0) {
        qsort(rates, (size_t)reps, sizeof *rates, cmp_double);
        dc.tps = reps % 2 ? rates[reps / 2] : (rates[reps / 2 - 1] + rates[reps / 2]) / 2;
        dc.tps_min = rates[0], dc.tps_max = rates[reps - 1];
    }

    // Rooflines: a step takes at least max(bytes / bandwidth, flops / peak).
    // Decode attends over plen + 1 .. plen + glen positions: (glen + 1) / 2 past the prompt on average.
    lm_cost dcost = lm_cost_decode_step(&mi, cp.kv_type, batch, plen + (glen + 1) / 2.0);
    lm_cost pcost = lm_cost_prefill(&mi, cp.kv_type, batch, plen);
    dc.bytes = dcost.bytes, dc.flops = dcost.flops;
    double t_mem = dc.bytes / m.bw, t_cmp = m.peak > 0 ? dc.flops / m.peak : 0;
    dc.memory_bound = t_mem >= t_cmp;
    dc.bound_tps = (double)batch / (t_mem > t_cmp ? t_mem : t_cmp);
    pf.tps = (double)total_prefill / pf.seconds;
    pf.bytes = pcost.bytes, pf.flops = pcost.flops;
    pf.bound_tps = m.peak > 0 ? (double)total_prefill / (pf.flops / m.peak) : 0;

    *pf_out = pf, *dc_out = dc, *cp_out = cp;
    lm_context_mem_used(ctx, mu);
done:
    free(tok);
    free(seq);
    free(pos);
    free(want);
    free(last);
    free(first);
    free(rates);
    free(smp);
    lm_sampler_free(greedy);
    lm_context_free(ctx);
    return st;
}

int cmd_bench(int argc, char **argv) {
    args a = {argc, 1, argv, "bench", false};
    const char *dir = NULL, *syn = NULL, *json = NULL, *batch_list = "1";
    int plen = 128, glen = 32, reps = 1;
    int batches[64], n_batches = 0;
    cli_model_opts mo = {.seed = lm_synthetic_default_params().seed};
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--synthetic", NULL, &syn) ||
            arg_val(&a, "--batch", "-b", &batch_list) || arg_int(&a, "--prompt-len", NULL, 1, 1 << 20, &plen) ||
            arg_int(&a, "--gen-len", NULL, 0, 1 << 20, &glen) || arg_int(&a, "--reps", NULL, 1, 1000, &reps) ||
            arg_val(&a, "--json", NULL, &json) || cli_model_opt(&a, &mo) || arg_u64(&a, "--seed", NULL, &mo.seed))
            continue;
        arg_unknown(&a, NULL);
    }
    if (!a.failed && dir && syn) arg_fail(&a, "give -m DIR or --synthetic CONFIG, not both");
    for (const char *p = batch_list; !a.failed && p && *p;) {  // B or B1,B2,...
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 1 || v > 4096 || (*end && *end != ',') || n_batches == 64)
            arg_fail(&a, "--batch: '%s' is not a list of up to 64 integers in [1, 4096]", batch_list);
        else batches[n_batches++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!a.failed && n_batches == 0) arg_fail(&a, "--batch: '%s' is not a list of up to 64 integers in [1, 4096]", batch_list);
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
    // The JSON file is opened before any work, so a bad path fails at once.
    cli_out jout = {.fd_trunc = -1};
    if (json && (cli_out_check_opt("bench", "--json", json, dir, NULL, 0) ||
                 cli_out_open_opt("bench", "--json", json, &jout)))
        return 1;
    FILE *tab = json && !strcmp(json, "-") ? stderr : stdout;  // the table, out of the JSON's way

    // Ceilings first, before the model takes memory (a fragmented heap gets
    // fewer huge pages for the probe's buffer; a GPU has more free memory).
    machine m = {.gpu = !strcmp(cli_device("lightmoe bench", &mo), "cuda")};
    lm_energy *energy = NULL;
    char energy_why[512] = "";
    lm_status st = LM_OK;
    if (m.gpu) {
        if (!(st = lm_cuda_device_describe(&m.dev))) {
            fprintf(stderr, "measuring HBM read bandwidth and bf16 mma.sync peak on %s (%d SMs) ...\n", m.dev.name,
                    m.dev.sm_count);
            st = lm_cuda_probe_read_bw(&m.bw);
        }
        if (!st) st = lm_cuda_probe_bf16_peak(&m.peak);
        if (st) {
            cli_out_abort(&jout);
            return cli_error("bench", st);
        }
        if (mo.verbose) {
            char b[32];
            fprintf(stderr, "lightmoe bench: GPU %d %s, compute %d.%d, %d SMs, %s, PCI %s, CUDA driver %d.%d, runtime %d.%d\n",
                    m.dev.device, m.dev.name, m.dev.cc_major, m.dev.cc_minor, m.dev.sm_count,
                    lm_format_bytes((double)m.dev.mem_total, b, sizeof b), m.dev.pci_bus_id,
                    m.dev.driver_version / 1000, m.dev.driver_version % 1000 / 10, m.dev.runtime_version / 1000,
                    m.dev.runtime_version % 1000 / 10);
        }
        if (!(energy = lm_energy_open(m.dev.pci_bus_id, energy_why, sizeof energy_why)))
            fprintf(stderr, "energy: not available (%s)\n", energy_why);
    } else {
        fprintf(stderr, "measuring memory bandwidth and FMA peak (%d threads) ...\n", n_threads);
        m.bw = lm_probe_read_bandwidth(n_threads);
        m.peak = lm_probe_fma_peak(n_threads);
        snprintf(energy_why, sizeof energy_why, "a CPU run: NVML measures GPUs only");
    }

    double t_load = cli_now();
    rc = cli_load_model("bench", dir, syn, false, &mo, &model);
    if (rc) {
        lm_energy_close(energy);
        cli_out_abort(&jout);
        return rc;
    }
    t_load = cli_now() - t_load;
    lm_model_get_info(model, &mi);

    cJSON *runs = cJSON_CreateArray();  // one entry per batch size (the JSON keeps the first at top level too)
    char pk[32];
    fmt_peak(pk, sizeof pk, &m);
    for (int bi = 0; bi < n_batches && !rc; bi++) {
        int batch = batches[bi];
        row pf = {0}, dc = {0};
        lm_context_params cp = lm_context_default_params();
        lm_mem_used mu = {0};
        lm_status rs = run_batch(model, &mo, &m, energy, batch, plen, glen, reps, &pf, &dc, &cp, &mu);
        if (rs) {
            rc = cli_error("bench", rs);
            break;
        }
        char reps_s[32] = "";
        if (reps > 1) snprintf(reps_s, sizeof reps_s, ", reps %d", reps);
        if (bi == 0) {
            char wb[32];
            fprintf(tab, "model            %s%s%s, %d layers, %.3g params (%.3g active), %s of weights\n",
                    mi.architecture, syn ? " synthetic " : " ", syn ? syn : dir, mi.n_layers, (double)mi.n_params_total,
                    (double)mi.n_params_active, lm_format_bytes((double)mi.bytes_weights, wb, sizeof wb));
            if (m.gpu)
                fprintf(tab, "machine          GPU %s, HBM read bandwidth %.1f GB/s, bf16 mma.sync peak %.1f TFLOP/s "
                        "(measured)\n", m.dev.name, m.bw / 1e9, m.peak / 1e12);
            else
                fprintf(tab, "machine          read bandwidth %.1f GB/s, FMA peak %.0f GFLOP/s (measured, %d threads)\n",
                        m.bw / 1e9, m.peak / 1e9, n_threads);
        }
        if (m.gpu) {
            const char *kn = getenv("LIGHTMOE_KERNELS");
            fprintf(tab, "setup            batch %d, prompt %d, gen %d%s, GPU executor (%s kernels, graphs %s), load "
                    "%.2f s, weights on the GPU\n", batch, plen, glen, reps_s, kn && *kn ? kn : "fast",
                    cp.graphs ? "on" : "off", t_load);
        } else {
            fprintf(tab, "setup            batch %d, prompt %d, gen %d%s, %d threads, load %.2f s, weights %s\n", batch,
                    plen, glen, reps_s, n_threads, t_load, mi.weights_mmapped ? "mmap'ed" : "in huge-page memory");
        }
        fprintf(tab, "prefill          %8.1f tok/s  compute bound %.1f tok/s (%.1f GFLOP / %s) = %.0f%% of bound",
                pf.tps, pf.bound_tps, pf.flops / 1e9, pk, pf.bound_tps > 0 ? 100.0 * pf.tps / pf.bound_tps : 0.0);
        if (m.gpu) print_energy(tab, &pf);
        fputc('\n', tab);
        if (glen > 0) {
            fprintf(tab, "decode           %8.2f tok/s  %s bound %.2f tok/s (%.1f MB / %.1f GB/s, %.1f GFLOP / %s) "
                    "= %.0f%% of bound", dc.tps, dc.memory_bound ? "memory" : "compute", dc.bound_tps, dc.bytes / 1e6,
                    m.bw / 1e9, dc.flops / 1e9, pk, 100.0 * dc.tps / dc.bound_tps);
            if (reps > 1) fprintf(tab, ", median of %d (min %.2f, max %.2f)", reps, dc.tps_min, dc.tps_max);
            if (m.gpu) print_energy(tab, &dc);
            fputc('\n', tab);
        }
        if (m.gpu) {
            char ab[32], gb[32];
            fprintf(tab, "memory           %s allocated on the GPU; %d CUDA graph%s kept (%s)\n",
                    lm_format_bytes(mu.allocated, ab, sizeof ab), mu.graphs, mu.graphs == 1 ? "" : "s",
                    lm_format_bytes(mu.graph_bytes, gb, sizeof gb));
        }
        fflush(tab);
        cJSON *o, *run = cJSON_CreateObject();
        cJSON_AddItemToObject(run, "setup", o = cJSON_CreateObject());
        cJSON_AddStringToObject(o, "device", m.gpu ? "cuda" : "cpu");
        add_num(o, "batch", batch);
        add_num(o, "prompt_len", plen);
        add_num(o, "gen_len", glen);
        add_num(o, "reps", reps);
        add_num(o, "threads", n_threads);
        cJSON_AddStringToObject(o, "kv_cache", cp.kv_type == LM_KV_F32 ? "f32" : "bf16");
        add_num(o, "load_s", t_load);
        cJSON_AddBoolToObject(o, "graphs", m.gpu && cp.graphs);
        if (m.gpu) {
            const char *kn = getenv("LIGHTMOE_KERNELS");
            cJSON_AddStringToObject(o, "kernels", kn && *kn ? kn : "fast");
            add_num(o, "gpu_bytes_allocated", mu.allocated);
            add_num(o, "cuda_graphs", mu.graphs);
        }
        cJSON_AddItemToObject(run, "prefill", json_row(&pf, false, reps));
        if (glen > 0) cJSON_AddItemToObject(run, "decode", json_row(&dc, true, reps));
        else cJSON_AddNullToObject(run, "decode");
        cJSON_AddItemToArray(runs, run);
    }

    if (json && !rc) {
        cJSON *root = cJSON_CreateObject(), *o;
        cJSON_AddItemToObject(root, "model", o = cJSON_CreateObject());
        cJSON_AddStringToObject(o, "architecture", mi.architecture);
        cJSON_AddStringToObject(o, "source", syn ? syn : dir);
        cJSON_AddBoolToObject(o, "synthetic", syn != NULL);
        add_num(o, "layers", mi.n_layers);
        add_num(o, "params_total", (double)mi.n_params_total);
        add_num(o, "params_active", (double)mi.n_params_active);
        add_num(o, "weight_bytes", (double)mi.bytes_weights);
        // the first batch size's setup and rows at the top level; all of them under "runs"
        cJSON *first = cJSON_GetArrayItem(runs, 0);
        const char *keys[] = {"setup", "prefill", "decode"};
        for (int i = 0; i < 3; i++) cJSON_AddItemToObject(root, keys[i], cJSON_Duplicate(cJSON_GetObjectItem(first, keys[i]), 1));
        cJSON_AddItemToObject(root, "machine", o = cJSON_CreateObject());
        cJSON_AddStringToObject(o, "kind", m.gpu ? "gpu" : "cpu");
        add_num(o, "read_bytes_per_s", m.bw);
        add_num(o, "peak_flops_per_s", m.peak);
        cJSON_AddStringToObject(o, "peak", m.gpu ? "bf16 mma.sync" : "fp32 FMA");
        if (m.gpu) {
            char v[32];
            cJSON_AddStringToObject(o, "name", m.dev.name);
            add_num(o, "sms", m.dev.sm_count);
            add_num(o, "memory_bytes", (double)m.dev.mem_total);
            snprintf(v, sizeof v, "%d.%d", m.dev.cc_major, m.dev.cc_minor);
            cJSON_AddStringToObject(o, "compute_capability", v);
            snprintf(v, sizeof v, "%d.%d", m.dev.driver_version / 1000, m.dev.driver_version % 1000 / 10);
            cJSON_AddStringToObject(o, "cuda_driver", v);
            cJSON_AddStringToObject(o, "pci_bus_id", m.dev.pci_bus_id);
        }
        cJSON_AddItemToObject(root, "energy", o = cJSON_CreateObject());
        cJSON_AddBoolToObject(o, "available", energy != NULL);
        if (energy) cJSON_AddNullToObject(o, "reason");
        else cJSON_AddStringToObject(o, "reason", energy_why);
        cJSON_AddItemToObject(root, "runs", runs);
        runs = NULL;
        char *text = cJSON_Print(root);
        cJSON_Delete(root);
        if (!text) {
            fprintf(stderr, "lightmoe bench: out of memory\n");
            rc = 1;
        } else {
            if (cli_out_begin("bench", &jout) == 0) {
                fputs(text, jout.f);
                fputc('\n', jout.f);
                rc = cli_out_commit("bench", &jout);
            } else {
                rc = 1;
            }
            free(text);
        }
    }
    cJSON_Delete(runs);
    if (rc) cli_out_abort(&jout);
    lm_energy_close(energy);
    lm_model_free(model);
    return rc;
}

