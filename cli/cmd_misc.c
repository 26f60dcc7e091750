// lightmoe logits / tokenize / info.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *logits_help =
    "usage: lightmoe logits [-m DIR] --ids 1,2,3 --out FILE [options]\n"
    "\n"
    "Runs the ids as one prompt and writes the logits of every position as raw\n"
    "little-endian float32, row-major [n_ids, vocab]. Needs only config.json and the\n"
    "weights (no tokenizer). This is the interface the golden tests verify.\n"
    "\n"
    "  -m, --model DIR       checkpoint directory (default: the model shipped in models/)\n"
    "      --ids LIST        comma-separated token ids\n"
    "  -o, --out FILE        where to write the logits ('-': standard output)\n" CLI_MODEL_OPTS_HELP;

static int parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16;
    *n = 0;
    *ids = malloc((size_t)cap * sizeof **ids);
    if (!*ids) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9') return -1;  // no blanks, signs: as every other number
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) return -1;
        if (*n == cap) {
            cap *= 2;
            int32_t *t = realloc(*ids, (size_t)cap * sizeof *t);
            if (!t) return -1;
            *ids = t;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) return -1;  // trailing comma
    }
    return *n ? 0 : -1;
}

int cmd_logits(int argc, char **argv) {
    args a = {argc, 1, argv, "logits", false};
    const char *dir = NULL, *ids_s = NULL, *out_path = NULL;
    cli_model_opts mo = {0};
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(logits_help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--ids", NULL, &ids_s) ||
            arg_val(&a, "--out", "-o", &out_path) || cli_model_opt(&a, &mo))
            continue;
        arg_unknown(&a, NULL);
    }
    if (!a.failed && (!ids_s || !out_path)) arg_fail(&a, "--ids and --out are required");
    int32_t *ids = NULL;
    int n = 0;
    if (!a.failed && parse_ids(ids_s, &ids, &n))
        arg_fail(&a, "--ids: expected comma-separated non-negative integers, got '%s'", ids_s);
    if (a.failed) {
        free(ids);
        return EXIT_USAGE;
    }
    lm_model *model = NULL;
    lm_context *ctx = NULL;
    cli_out out = {0};
    int rc = 0;
    if (!dir && !(dir = cli_default_model())) rc = 1;
    if (!rc && cli_out_check("logits", out_path, dir, NULL, 0)) rc = 1;
    if (!rc && cli_out_open("logits", out_path, &out)) rc = 1;
    if (!rc) rc = cli_load_model("logits", dir, NULL, false, &mo, &model);
    if (rc) goto done;
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo.kv_type;
    cp.graphs = !mo.no_graphs;
    cp.gpu_mem = mo.gpu_mem;
    cp.executor = cli_device("lightmoe logits", &mo);
    cp.n_seq = 1;
    cp.n_ctx = n;
    cp.n_batch = n;
    lm_status st = lm_context_init(model, &cp, &ctx);
    if (!st) cli_mem_report("lightmoe logits", model, &cp, ctx, mo.verbose);
    int32_t *seq = calloc((size_t)n, sizeof *seq);
    if (!st && !seq) {
        fprintf(stderr, "lightmoe logits: out of memory\n");
        rc = 1;
        goto done;
    }
    if (!st) {
        lm_batch b = {n, ids, seq, NULL, NULL, NULL};
        st = lm_decode(ctx, &b);
    }
    free(seq);
    if (st) {
        rc = cli_error("logits", st);
        goto done;
    }
    if (cli_out_begin("logits", &out)) {
        rc = 1;
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (fwrite(lm_get_logits(ctx, i), sizeof(float), (size_t)mi.vocab, out.f) != (size_t)mi.vocab) break;
    rc = cli_out_commit("logits", &out);  // reports a failed write with its reason
done:
    cli_out_abort(&out);
    free(ids);
    lm_context_free(ctx);
    lm_model_free(model);
    return rc;
}

static const char *tokenize_help =
    "usage: lightmoe tokenize [-m DIR | --tokenizer FILE] [--add-special] TEXT\n"
    "\n"
    "Prints the token ids of TEXT, comma-separated.\n"
    "\n"
    "  -m, --model DIR       use DIR/tokenizer.json (default: the model shipped in models/)\n"
    "      --                the next argument is TEXT even if it starts with '-'\n"
    "      --tokenizer FILE  a tokenizer.json file\n"
    "      --add-special     add BOS/EOS as the tokenizer's post-processor does\n"
    "                        (transformers' add_special_tokens=True)\n";

int cmd_tokenize(int argc, char **argv) {
    args a = {argc, 1, argv, "tokenize", false};
    const char *path = NULL, *dir = NULL, *text = NULL;
    bool special = false, dashdash = false;
    for (; a.i < argc && !a.failed; a.i++) {
        if (!dashdash && arg_flag(&a, "--help", "-h")) {
            fputs(tokenize_help, stdout);
            return 0;
        }
        if (!dashdash && (arg_val(&a, "--tokenizer", NULL, &path) || arg_val(&a, "--model", "-m", &dir))) continue;
        if (!dashdash && arg_flag(&a, "--add-special", NULL)) special = true;
        else if (!dashdash && !strcmp(argv[a.i], "--")) dashdash = true;  // TEXT may start with '-'
        else if (!dashdash && argv[a.i][0] == '-' && argv[a.i][1]) arg_unknown(&a, "use -- before a TEXT that starts with '-'");
        else if (!text) text = argv[a.i];
        else arg_fail(&a, "more than one TEXT argument (quote the text)");
    }
    if (!a.failed && !text) arg_fail(&a, "TEXT is required");
    if (!a.failed && path && dir) arg_fail(&a, "give -m DIR or --tokenizer FILE, not both");
    if (a.failed) return EXIT_USAGE;
    char *own = NULL;
    if (!path) {
        if (!dir && !(dir = cli_default_model())) return 1;
        if (!(path = own = cli_tokenizer_path("tokenize", dir))) return 1;
    }
    lm_tokenizer *tok;
    lm_status st = lm_tokenizer_load(path, &tok);
    free(own);
    if (st) return cli_error("tokenize", st);
    int32_t *ids;
    size_t n;
    st = lm_tokenize(tok, text, strlen(text), special, &ids, &n);
    lm_tokenizer_free(tok);
    if (st) return cli_error("tokenize", st);
    for (size_t i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
    printf("\n");
    free(ids);
    return 0;
}

static const char *info_help =
    "usage: lightmoe info [-m DIR | --synthetic CONFIG.json[:LAYERS]] [--ctx N] [--seqs N] [--batch N]\n"
    "                     [--gpu-mem SIZE]\n"
    "\n"
    "Describes a checkpoint: architecture, shapes, parameter count (total and active\n"
    "per token), bytes stored per dtype, and the memory a run needs (weights + fp32 KV\n"
    "cache for N tokens). Then the GPU memory plan of a run of --seqs sequences of --ctx\n"
    "tokens with steps of up to --batch tokens: weights, bf16 KV pages, activations and\n"
    "scratch against this machine's free GPU memory (or --gpu-mem), and whether it fits.\n"
    "Reads headers only: no weight is loaded or built.\n"
    "\n"
    "  -m, --model DIR       checkpoint directory (default: the model shipped in models/)\n"
    "      --synthetic CONFIG.json[:LAYERS]\n"
    "                        describe the shapes of a config.json (first LAYERS layers)\n"
    "      --ctx N           tokens of KV cache to count (default: the model's maximum)\n"
    "      --seqs N          sequences at once in the GPU plan (default 1)\n"
    "      --batch N         tokens per step in the GPU plan (default 512)\n"
    "      --gpu-mem SIZE    plan against this much GPU memory instead of what is free\n";

int cmd_info(int argc, char **argv) {
    args a = {argc, 1, argv, "info", false};
    const char *dir = NULL, *syn = NULL;
    int n_ctx = 0, n_seqs = 1, n_batch = 512;
    double gpu_mem = 0;
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(info_help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--synthetic", NULL, &syn) ||
            arg_int(&a, "--ctx", NULL, 1, 1 << 24, &n_ctx) || arg_int(&a, "--seqs", NULL, 1, 65536, &n_seqs) ||
            arg_int(&a, "--batch", NULL, 1, 65536, &n_batch) || arg_size(&a, "--gpu-mem", NULL, &gpu_mem))
            continue;
        arg_unknown(&a, NULL);
    }
    if (!a.failed && dir && syn) arg_fail(&a, "give -m DIR or --synthetic CONFIG, not both");
    if (a.failed) return EXIT_USAGE;
    if (!dir && !syn && !(dir = cli_default_model())) return 1;
    lm_model *model;
    cli_model_opts mo = {.threads = 1, .weights = LM_WEIGHTS_MMAP};  // info reads headers, not weights
    int rc = cli_load_model("info", dir, syn, true, &mo, &model);
    if (rc) return rc;
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    if (!n_ctx) n_ctx = mi.max_positions;
    if (n_ctx > mi.max_positions) {
        fprintf(stderr, "lightmoe info: --ctx %d exceeds the model's %d positions\n", n_ctx, mi.max_positions);
        lm_model_free(model);
        return 1;
    }
    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
    printf("architecture      %s\n", mi.architecture);
    printf("layers            %d (%d MoE, %d dense)\n", mi.n_layers, mi.n_moe_layers, mi.n_layers - mi.n_moe_layers);
    printf("hidden            %d, vocab %d, max positions %d\n", mi.hidden, mi.vocab, mi.max_positions);
    printf("attention         %d query heads, %d KV heads, head_dim %d\n", mi.n_heads, mi.n_kv_heads, mi.head_dim);
    printf("experts           %d routed, top-%d, intermediate %d", mi.n_experts, mi.top_k, mi.moe_intermediate);
    if (mi.shared_intermediate) printf(", shared expert %d", mi.shared_intermediate);
    if (mi.dense_intermediate) printf(", dense MLP %d", mi.dense_intermediate);
    printf("\n");
    printf("parameters        %.4g total, %.4g active per token (%.1f%%)\n", (double)mi.n_params_total,
           (double)mi.n_params_active, 100.0 * (double)mi.n_params_active / (double)mi.n_params_total);
    lm_format_bytes((double)mi.bytes_bf16, b1, sizeof b1);
    lm_format_bytes((double)mi.bytes_f16, b2, sizeof b2);
    lm_format_bytes((double)mi.bytes_f32, b3, sizeof b3);
    lm_format_bytes((double)mi.bytes_weights, b4, sizeof b4);
    printf("weights           %s (bf16 %s, f16 %s, f32 %s)\n", b4, b1, b2, b3);
    lm_format_bytes((double)mi.bytes_kv_per_token, b5, sizeof b5);
    lm_format_bytes((double)mi.bytes_weights + (double)mi.bytes_kv_per_token * n_ctx, b6, sizeof b6);
    printf("KV cache          %s per token (fp32)\n", b5);
    printf("expected memory   %s for weights + KV cache of %d tokens\n", b6, n_ctx);
    double active_bytes = (double)mi.bytes_weights * (double)mi.n_params_active / (double)mi.n_params_total;
    printf("bytes per token   %s of weights read per decoded token at batch 1\n",
           lm_format_bytes(active_bytes, b1, sizeof b1));
    lm_context_params cp = lm_context_default_params();
    cp.executor = "cuda";
    cp.n_seq = n_seqs, cp.n_ctx = n_ctx, cp.n_batch = n_batch, cp.n_out = n_seqs < n_batch ? n_seqs : n_batch;
    cp.gpu_mem = gpu_mem;
    lm_mem_plan pl;
    lm_status st = lm_context_mem_plan(model, &cp, &pl);
    if (st) {
        lm_model_free(model);
        return cli_error("info", st);
    }
    char t[32], k[32];
    printf("GPU plan          %d sequence%s x %d tokens, steps of %d tokens: weights %s + KV cache %s (bf16, %d pages) "
           "+ activations %s + scratch %s = %s\n", n_seqs, n_seqs == 1 ? "" : "s", n_ctx, n_batch,
           lm_format_bytes(pl.weights, b1, sizeof b1), lm_format_bytes(pl.kv, k, sizeof k),
           n_seqs * lm_kv_pages_for(n_ctx), lm_format_bytes(pl.activations, b2, sizeof b2),
           lm_format_bytes(pl.scratch, b3, sizeof b3), lm_format_bytes(pl.total, t, sizeof t));
    if (pl.available < 0) {
        printf("this machine      no CUDA GPU to compare with%s\n", gpu_mem > 0 ? "" : " (give --gpu-mem SIZE)");
    } else {
        const char *src = gpu_mem > 0 ? "--gpu-mem" : "free on this GPU";
        if (pl.total <= pl.available * 0.97)
            printf("fits              in %s of %s (%.0f%%)\n", lm_format_bytes(pl.available, b4, sizeof b4), src,
                   100.0 * pl.total / pl.available);
        else
            printf("does not fit      %s of %s; the KV cache and activations are what --seqs, --ctx and --batch "
                   "scale; weights of %s alone %s\n", lm_format_bytes(pl.available, b4, sizeof b4), src,
                   lm_format_bytes(pl.weights, b5, sizeof b5),
                   pl.weights > pl.available * 0.97 ? "do not fit: the GPU needs more memory (streaming experts from "
                   "host memory is not built yet)" : "fit");
    }
    lm_model_free(model);
    return 0;
}
