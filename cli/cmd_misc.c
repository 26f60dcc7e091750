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
    cp.executor = cli_device("lightmoe logits", &mo);
    cp.n_seq = 1;
    cp.n_ctx = n;
    cp.n_batch = n;
    lm_status st = lm_context_init(model, &cp, &ctx);
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
    "usage: lightmoe info [-m DIR | --synthetic CONFIG.json[:LAYERS]] [--ctx N]\n"
    "\n"
    "Describes a checkpoint: architecture, shapes, parameter count (total and active\n"
    "per token), bytes stored per dtype, and the memory a run needs (weights + fp32 KV\n"
    "cache for N tokens). Reads headers only: no weight is loaded or built.\n"
    "\n"
    "  -m, --model DIR       checkpoint directory (default: the model shipped in models/)\n"
    "      --synthetic CONFIG.json[:LAYERS]\n"
    "                        describe the shapes of a config.json (first LAYERS layers)\n"
    "      --ctx N           tokens of KV cache to count (default: the model's maximum)\n";

int cmd_info(int argc, char **argv) {
    args a = {argc, 1, argv, "info", false};
    const char *dir = NULL, *syn = NULL;
    int n_ctx = 0;
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(info_help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &dir) || arg_val(&a, "--synthetic", NULL, &syn) ||
            arg_int(&a, "--ctx", NULL, 1, 1 << 24, &n_ctx))
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
    lm_model_free(model);
    return 0;
}
