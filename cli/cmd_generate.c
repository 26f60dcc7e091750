// lightmoe generate: one prompt streamed to stdout, or a JSONL batch.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *help =
    "usage: lightmoe generate [-m DIR] (-p TEXT | --prompts FILE.jsonl) [options]\n"
    "\n"
    "Generates a continuation of TEXT, streamed to stdout, or of every prompt of a\n"
    "JSONL file ({\"prompt\": \"...\"} per line), processed together as one batch; the\n"
    "results are written as JSONL in input order. Statistics go to stderr.\n"
    "\n"
    "  -m, --model DIR     Hugging Face checkpoint directory (config.json, tokenizer.json,\n"
    "                      *.safetensors); default: the small model shipped in models/\n"
    "  -p, --prompt TEXT   prompt text\n"
    "      --prompts FILE  JSONL prompts; results go to stdout (or --out FILE)\n"
    "      --out FILE      where to write the JSONL results\n"
    "  -n, --max-tokens N  new tokens per prompt (default 128)\n"
    "      --temp T        sampling temperature; 0 = greedy (default 0)\n"
    "      --top-k K       keep the K most likely tokens (default 0 = off)\n"
    "      --top-p P       nucleus sampling threshold in (0, 1] (default 1 = off)\n"
    "      --seed S        random seed; the same seed gives the same text (default 42)\n"
    "      --stop STR      stop when STR is generated (not printed); repeatable\n"
    "      --ignore-eos    keep going after the end-of-sequence token\n"
    "      --no-special    do not add BOS/special tokens to the prompt\n"
    "      --batch N       max tokens per forward pass during prefill (default 512)\n" CLI_MODEL_OPTS_HELP;

typedef struct {
    char **items;
    int n, cap;
} strlist;

static int push(strlist *l, char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **t = realloc(l->items, (size_t)cap * sizeof *t);
        if (!t) return -1;
        l->items = t;
        l->cap = cap;
    }
    l->items[l->n++] = s;
    return 0;
}

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
}

static int read_prompts(const char *path, strlist *out) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "lightmoe generate: %s: cannot open\n", path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
        if (i == (size_t)len) continue;  // blank line
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        const cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "prompt") : NULL;
        if (!j || !cJSON_IsObject(j)) {
            fprintf(stderr, "lightmoe generate: %s:%d: not a JSON object\n", path, lineno);
            rc = 1;
        } else if (!cJSON_IsString(p)) {
            fprintf(stderr, "lightmoe generate: %s:%d: missing string field \"prompt\"\n", path, lineno);
            rc = 1;
        } else if (push(out, strdup(p->valuestring))) {
            fprintf(stderr, "lightmoe generate: out of memory\n");
            rc = 1;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (!rc && out->n == 0) {
        fprintf(stderr, "lightmoe generate: %s: no prompts\n", path);
        rc = 1;
    }
    return rc;
}

static int stream_cb(void *user, int idx, const char *piece, size_t len) {
    (void)user;
    (void)idx;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static const char *finish_name(lm_finish f) {
    return f == LM_FINISH_EOS ? "eos" : f == LM_FINISH_STOP ? "stop" : "length";
}

int cmd_generate(int argc, char **argv) {
    args a = {argc, 1, argv, "generate", false};
    const char *model_dir = NULL, *prompt = NULL, *prompts_file = NULL, *out_path = NULL, *v;
    lm_gen_params gp = lm_gen_default_params();
    int batch = 512;
    cli_model_opts mo = {0};
    strlist stops = {0}, prompts = {0};
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &model_dir) || arg_val(&a, "--prompt", "-p", &prompt) ||
            arg_val(&a, "--prompts", NULL, &prompts_file) || arg_val(&a, "--out", NULL, &out_path) ||
            arg_int(&a, "--max-tokens", "-n", 0, 1 << 20, &gp.max_tokens) ||
            arg_float(&a, "--temp", NULL, 0, 100, &gp.sampler.temperature) ||
            arg_int(&a, "--top-k", NULL, 0, 1 << 24, &gp.sampler.top_k) ||
            arg_float(&a, "--top-p", NULL, 1e-6, 1, &gp.sampler.top_p) ||
            arg_u64(&a, "--seed", NULL, &gp.sampler.seed) || cli_model_opt(&a, &mo) ||
            arg_int(&a, "--batch", NULL, 1, 65536, &batch))
            continue;
        if (arg_val(&a, "--stop", NULL, &v)) {
            if (v && !*v) arg_fail(&a, "--stop needs a non-empty string");
            else if (v) push(&stops, strdup(v));
            continue;
        }
        if (arg_flag(&a, "--ignore-eos", NULL)) gp.ignore_eos = true;
        else if (arg_flag(&a, "--no-special", NULL)) gp.add_special = false;
        else arg_fail(&a, "unknown option '%s'", argv[a.i]);
    }
    if (!a.failed && !!prompt == !!prompts_file) arg_fail(&a, "give exactly one of -p TEXT or --prompts FILE");
    if (!a.failed && out_path && !prompts_file) arg_fail(&a, "--out goes with --prompts");
    if (a.failed) {
        strlist_free(&stops);
        return EXIT_USAGE;
    }
    if (!model_dir && !(model_dir = cli_default_model())) return 1;
    gp.stop = (const char *const *)stops.items;
    gp.n_stop = stops.n;

    int rc = 0;
    lm_model *model = NULL;
    lm_tokenizer *tok = NULL;
    lm_context *ctx = NULL;
    lm_gen_result *res = NULL;
    FILE *out = NULL;
    if (prompts_file) rc = read_prompts(prompts_file, &prompts);
    else if (push(&prompts, strdup(prompt))) rc = 1;
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model_dir);
    lm_status st;
    if (!rc && (st = lm_tokenizer_load(tpath, &tok))) rc = cli_error("generate", st);
    if (!rc) rc = cli_load_model("generate", model_dir, NULL, &mo, &model);
    if (rc) goto done;

    // Size the KV cache for what these prompts need, not the model's maximum.
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    size_t longest = 0;
    for (int i = 0; i < prompts.n; i++) {
        int32_t *ids;
        size_t n;
        if ((st = lm_tokenize(tok, prompts.items[i], strlen(prompts.items[i]), gp.add_special, &ids, &n))) {
            rc = cli_error("generate", st);
            goto done;
        }
        free(ids);
        if (n > longest) longest = n;
    }
    if (longest + (size_t)gp.max_tokens > (size_t)mi.max_positions) {
        fprintf(stderr, "lightmoe generate: prompt (%zu tokens) + %d new tokens exceeds the model's %d positions\n",
                longest, gp.max_tokens, mi.max_positions);
        rc = 1;
        goto done;
    }
    lm_context_params cp = lm_context_default_params();
    cp.n_seq = prompts.n;
    cp.n_ctx = (int)longest + gp.max_tokens;
    if (cp.n_ctx < 1) cp.n_ctx = 1;
    cp.n_batch = batch;
    if ((st = lm_context_init(model, &cp, &ctx))) {
        rc = cli_error("generate", st);
        goto done;
    }
    res = calloc((size_t)prompts.n, sizeof *res);
    if (!res) {
        rc = 1;
        goto done;
    }
    if (prompts_file) fprintf(stderr, "generating %d prompts together, up to %d tokens each ...\n", prompts.n, gp.max_tokens);
    double t0 = cli_now();
    st = lm_generate(ctx, tok, (const char *const *)prompts.items, prompts.n, &gp, prompts_file ? NULL : stream_cb,
                     NULL, res);
    double dt = cli_now() - t0;
    if (st) {
        if (!prompts_file) fputc('\n', stdout);
        rc = cli_error("generate", st);
        goto done;
    }
    long n_prompt = 0, n_gen = 0;
    for (int i = 0; i < prompts.n; i++) n_prompt += res[i].n_prompt_tokens, n_gen += res[i].n_gen_tokens;
    if (prompts_file) {
        out = out_path ? fopen(out_path, "w") : stdout;
        if (!out) {
            fprintf(stderr, "lightmoe generate: %s: cannot write\n", out_path);
            rc = 1;
            goto done;
        }
        for (int i = 0; i < prompts.n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "index", i);
            cJSON_AddStringToObject(o, "prompt", prompts.items[i]);
            cJSON_AddStringToObject(o, "text", res[i].text);
            cJSON_AddNumberToObject(o, "prompt_tokens", res[i].n_prompt_tokens);
            cJSON_AddNumberToObject(o, "generated_tokens", res[i].n_gen_tokens);
            cJSON_AddStringToObject(o, "finish_reason", finish_name(res[i].finish));
            char *s = cJSON_PrintUnformatted(o);
            fprintf(out, "%s\n", s);
            free(s);
            cJSON_Delete(o);
        }
    } else {
        fputc('\n', stdout);
    }
    fflush(stdout);  // the text before the statistics on stderr
    fprintf(stderr, "[%d prompt(s): %ld prompt tokens, %ld generated in %.2f s: %.1f tok/s overall]\n", prompts.n,
            n_prompt, n_gen, dt, dt > 0 ? (double)(n_prompt + n_gen) / dt : 0.0);

done:
    if (out && out != stdout) fclose(out);
    if (res) lm_gen_results_free(res, prompts.n);
    free(res);
    lm_context_free(ctx);
    lm_model_free(model);
    lm_tokenizer_free(tok);
    strlist_free(&prompts);
    strlist_free(&stops);
    return rc;
}
