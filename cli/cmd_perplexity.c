// lightmoe perplexity: the standard quality check for kernels and
// quantisation — exp(mean negative log-likelihood) of a text file.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "util/file.h"

static const char *help =
    "usage: lightmoe perplexity [-m DIR] --file TEXT [--ctx N] [--expert-stats FILE.json]\n"
    "\n"
    "Tokenizes TEXT (no BOS/EOS added), cuts the ids into non-overlapping windows of N\n"
    "tokens (default 512) and runs each window as a fresh sequence. Every token after the\n"
    "first of its window is predicted from the ones before it in the window; the result\n"
    "is exp(mean negative log-likelihood) over those predictions (natural log).\n"
    "\n"
    "  -m, --model DIR       checkpoint directory (default: the model shipped in models/)\n"
    "  -f, --file PATH       UTF-8 text to score\n"
    "      --ctx N           window length in tokens (default 512, or the model's maximum if smaller)\n"
    "      --max-windows N   score only the first N windows\n"
    "      --expert-stats FILE.json\n"
    "                        write how many tokens each expert of each layer was routed\n"
    "                        (JSON; draw it with 'lightmoe report FILE.json --svg OUT.svg')\n"
    "                        and print each MoE layer's shares of its routed tokens\n" CLI_MODEL_OPTS_HELP;

int cmd_perplexity(int argc, char **argv) {
    args a = {argc, 1, argv, "perplexity", false};
    const char *dir = NULL, *file = NULL, *stats_path = NULL;
    int ctx_len = 0, max_windows = 0;  // ctx_len 0: 512, or the model's positions if fewer
    cli_model_opts mo = {0};
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--file", "-f", &file) ||
            arg_int(&a, "--ctx", NULL, 2, 1 << 20, &ctx_len) || cli_model_opt(&a, &mo) ||
            arg_int(&a, "--max-windows", NULL, 1, 1 << 30, &max_windows))
            continue;
        if (!cli_expert_stats_opt(&a, &stats_path)) arg_unknown(&a, "give the text file with --file PATH");
    }
    if (!a.failed && !file) arg_fail(&a, "--file is required");
    if (a.failed) return EXIT_USAGE;
    if (!dir && !(dir = cli_default_model())) return 1;

    int rc = 0;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    lm_model *model = NULL;
    lm_tokenizer *tok = NULL;
    lm_context *ctx = NULL;
    lm_status st;
    size_t len = 0;
    char *tpath = NULL;
    cli_out stats = {0};
    // The stats file is opened before the work, as --out is elsewhere.
    const char *inputs[1] = {file};
    if (stats_path && cli_expert_stats_open("perplexity", stats_path, dir, inputs, 1, &stats)) return 1;
    // The text is read whole and tokenized at once (as the reference does);
    // tokenizing holds a few copies of it, so it must fit several times over.
    int fd;
    uint64_t size;
    st = lm_open_regular(file, &fd, &size);
    if (!st) {
        close(fd);
        st = lm_mem_check(8 * size, 0.1, file);
    }
    // Files of /proc say 0 bytes: read to the end, up to what memory allows.
    uint64_t avail = lm_mem_available(), cap = avail ? avail / 8 : (uint64_t)1 << 40;
    if (!st) st = lm_read_file(file, (size_t)(size > cap ? size : cap), &text, &len);
    if (st) {
        rc = cli_error("perplexity", st);
        goto done;
    }
    if (!(tpath = cli_tokenizer_path("perplexity", dir))) {
        rc = 1;
        goto done;
    }
    if ((st = lm_tokenizer_load(tpath, &tok))) {
        rc = cli_error("perplexity", st);
        goto done;
    }
    if ((st = lm_tokenize(tok, text, len, false, &ids, &n_ids))) {
        fprintf(stderr, "lightmoe perplexity: %s: %s\n", file, lm_last_error());
        rc = 1;
        goto done;
    }
    if (n_ids < 2) {
        fprintf(stderr, "lightmoe perplexity: %s: fewer than 2 tokens, nothing to predict\n", file);
        rc = 1;
        goto done;
    }
    if ((rc = cli_load_model("perplexity", dir, NULL, false, &mo, &model))) goto done;
    if ((st = lm_tokenizer_check_model(tok, model))) {
        rc = cli_error("perplexity", st);
        goto done;
    }
    if (stats_path && (rc = cli_expert_stats_check("perplexity", &stats, model))) goto done;
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    if (!ctx_len) ctx_len = mi.max_positions < 512 ? (mi.max_positions < 2 ? 2 : mi.max_positions) : 512;
    if (ctx_len > mi.max_positions) {
        fprintf(stderr, "lightmoe perplexity: --ctx %d exceeds the model's %d positions\n", ctx_len, mi.max_positions);
        rc = 1;
        goto done;
    }
    // Windows that score something: one of a single token predicts nothing.
    size_t n_windows = (n_ids + (size_t)ctx_len - 1) / (size_t)ctx_len;
    if (n_ids - (n_windows - 1) * (size_t)ctx_len < 2) n_windows--;
    if (max_windows && n_windows > (size_t)max_windows) n_windows = (size_t)max_windows;
    // The cache holds one window: no longer than the text.
    int win = n_ids < (size_t)ctx_len ? (int)n_ids : ctx_len;
    // Logits of a chunk are [chunk][vocab] floats: keep that under ~256 MB.
    int chunk = win;
    while (chunk > 16 && (double)chunk * mi.vocab * 4 > 256e6) chunk /= 2;
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo.kv_type;
    cp.graphs = !mo.no_graphs;
    cp.gpu_mem = mo.gpu_mem;
    cp.executor = cli_device("lightmoe perplexity", &mo);
    cp.n_seq = 1;
    cp.n_ctx = win;
    cp.n_batch = chunk;
    if ((st = lm_context_init(model, &cp, &ctx))) {
        rc = cli_error("perplexity", st);
        goto done;
    }
    cli_mem_report("lightmoe perplexity", model, &cp, ctx, mo.verbose);
    int32_t *seq = calloc((size_t)chunk, sizeof *seq);
    if (!seq) {
        fprintf(stderr, "lightmoe perplexity: out of memory\n");
        rc = 1;
        goto done;
    }
    double nll = 0;
    long n_pred = 0;
    size_t n_scored = 0;  // tokens in the windows scored
    bool tty = isatty(2);  // progress only for a person watching
    for (size_t w = 0; w < n_windows && !st && seq; w++) {
        size_t w0 = w * (size_t)ctx_len, wn = n_ids - w0 < (size_t)ctx_len ? n_ids - w0 : (size_t)ctx_len;
        n_scored += wn;
        lm_seq_clear(ctx, 0);
        for (size_t c0 = 0; c0 < wn && !st; c0 += (size_t)chunk) {
            int n = (int)(wn - c0 < (size_t)chunk ? wn - c0 : (size_t)chunk);
            lm_batch b = {n, ids + w0 + c0, seq, NULL, NULL, NULL};
            if ((st = lm_decode(ctx, &b))) break;
            for (int i = 0; i < n; i++) {
                size_t p = c0 + (size_t)i;  // position in the window; predicts p + 1
                if (p + 1 >= wn) break;
                const float *lg = lm_get_logits(ctx, i);
                double mx = lg[0], s = 0;
                for (int v = 1; v < mi.vocab; v++) mx = lg[v] > mx ? lg[v] : mx;
                for (int v = 0; v < mi.vocab; v++) s += exp((double)lg[v] - mx);
                nll += mx + log(s) - (double)lg[ids[w0 + p + 1]];
                n_pred++;
            }
        }
        if (tty) fprintf(stderr, "\rwindow %zu/%zu  perplexity so far %.4f", w + 1, n_windows, exp(nll / (double)n_pred));
    }
    if (tty) fprintf(stderr, "\n");
    free(seq);
    if (st) {
        rc = cli_error("perplexity", st);
        goto done;
    }
    printf("perplexity %.4f over %ld predicted tokens (%zu tokens in %zu window%s of up to %d", exp(nll / (double)n_pred),
           n_pred, n_scored, n_windows, n_windows == 1 ? "" : "s", ctx_len);
    if (n_scored < n_ids) printf("; the text has %zu tokens", n_ids);
    printf(")\n");
    if (stats_path && (rc = cli_write_expert_stats("perplexity", &stats, ctx, dir, n_scored))) goto done;
    if (stats_path) {
        const uint64_t *cnt = lm_expert_counts(ctx);
        printf("expert routing share (%% of routed tokens) per MoE layer:\n");
        for (int l = 0; l < mi.n_layers; l++) {
            const uint64_t *row = cnt + (size_t)l * mi.n_experts;
            uint64_t tot = 0, mx = 0, mn = UINT64_MAX;
            for (int e = 0; e < mi.n_experts; e++) {
                tot += row[e];
                mx = row[e] > mx ? row[e] : mx;
                mn = row[e] < mn ? row[e] : mn;
            }
            if (!tot) continue;
            printf("  layer %2d:", l);
            for (int e = 0; e < mi.n_experts && e < 64; e++) printf(" %5.1f", 100.0 * (double)row[e] / (double)tot);
            if (mi.n_experts > 64) printf(" ...");
            printf("   (max/min %.1f)\n", mn ? (double)mx / (double)mn : INFINITY);
        }
    }
done:
    cli_out_abort(&stats);
    free(tpath);
    free(text);
    free(ids);
    lm_context_free(ctx);
    lm_model_free(model);
    lm_tokenizer_free(tok);
    return rc;
}
