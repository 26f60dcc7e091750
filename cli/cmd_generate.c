// lightmoe generate: one prompt streamed to stdout, or a JSONL batch.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "prompts.h"

static const char *help =
    "usage: lightmoe generate [-m DIR] (-p TEXT | --prompts FILE.jsonl) [options]\n"
    "\n"
    "Generates a continuation of TEXT, streamed to stdout, or of every prompt of a\n"
    "JSONL file ({\"prompt\": \"...\"} per line; other fields are ignored), processed\n"
    "together as one batch; the results are written as JSONL in input order.\n"
    "Statistics go to stderr.\n"
    "\n"
    "  -m, --model DIR       Hugging Face checkpoint directory (config.json, tokenizer.json,\n"
    "                        *.safetensors); default: the small model shipped in models/\n"
    "  -p, --prompt TEXT     prompt text\n"
    "      --prompts FILE    JSONL prompts ('-': standard input)\n"
    "      --out FILE        where to write the JSONL results (default: standard output)\n"
    "  -n, --max-tokens N    new tokens per prompt (default 128)\n"
    "      --temp T          sampling temperature; 0 = greedy (default 0)\n"
    "      --top-k K         keep the K most likely tokens (default 0 = off)\n"
    "      --top-p P         nucleus sampling threshold in (0, 1] (default 1 = off)\n"
    "      --seed S          random seed; the same seed gives the same text (default 42)\n"
    "      --stop STR        stop when STR is generated (not printed); repeatable\n"
    "                        (at most 64 strings of at most 1024 bytes)\n"
    "      --ignore-eos      keep going after the end-of-sequence token\n"
    "      --no-special      do not add BOS/special tokens to the prompt\n"
    "      --max-batch-tokens N\n"
    "                        most tokens one forward pass processes, prompts being\n"
    "                        prefilled in chunks of it (default 512)\n" CLI_MODEL_OPTS_HELP
    "\n"
    "Options take their value as the next argument or after '=' (--prompt=TEXT).\n";

typedef struct {
    FILE *out;
    int err;  // errno of a failed write; generation stops at the first
} stream_ctx;

static int stream_cb(void *user, int idx, const char *piece, size_t len) {
    stream_ctx *s = user;
    (void)idx;
    if (fwrite(piece, 1, len, s->out) != len || fflush(s->out) != 0) {
        s->err = errno ? errno : EIO;
        return 1;
    }
    return 0;
}

static const char *finish_name(lm_finish f) {
    return f == LM_FINISH_EOS ? "eos" : f == LM_FINISH_STOP ? "stop" : "length";
}

// A JSON string of n bytes: NUL and other control bytes escaped (cJSON works
// on C strings and would cut the text at a NUL the model generated), bytes
// that are not UTF-8 (none should be) as U+FFFD.
static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    size_t i = 0;
    while (i < n) {
        size_t ok = lm_utf8_invalid_at(s + i, n - i);
        for (size_t k = i; k < i + ok; k++) {
            unsigned char c = (unsigned char)s[k];
            if (c == '"' || c == '\\') fputc('\\', f), fputc(c, f);
            else if (c == '\n') fputs("\\n", f);
            else if (c == '\t') fputs("\\t", f);
            else if (c == '\r') fputs("\\r", f);
            else if (c < 0x20) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
        i += ok;
        if (i < n) fputs("\\ufffd", f), i++;
    }
    fputc('"', f);
}

static void write_results(FILE *out, const cli_prompts *prompts, const lm_gen_result *res) {
    for (int i = 0; i < prompts->n; i++) {
        fprintf(out, "{\"index\":%d,\"prompt\":", i);
        json_string(out, prompts->text[i], strlen(prompts->text[i]));
        fputs(",\"text\":", out);
        json_string(out, res[i].text, res[i].text_len);
        fprintf(out, ",\"prompt_tokens\":%d,\"generated_tokens\":%d,\"finish_reason\":\"%s\"}\n",
                res[i].n_prompt_tokens, res[i].n_gen_tokens, finish_name(res[i].finish));
    }
}

int cmd_generate(int argc, char **argv) {
    args a = {argc, 1, argv, "generate", false};
    const char *model_dir = NULL, *prompt = NULL, *prompts_file = NULL, *out_path = NULL, *v;
    lm_gen_params gp = lm_gen_default_params();
    int batch = 512;
    cli_model_opts mo = {0};
    const char **stops = NULL;
    int n_stops = 0;
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            free(stops);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &model_dir) || arg_val(&a, "--prompt", "-p", &prompt) ||
            arg_val(&a, "--prompts", NULL, &prompts_file) || arg_val(&a, "--out", "-o", &out_path) ||
            arg_int(&a, "--max-tokens", "-n", 0, 1 << 20, &gp.max_tokens) ||
            arg_float(&a, "--temp", NULL, 0, 100, &gp.sampler.temperature) ||
            arg_int(&a, "--top-k", NULL, 0, 1 << 24, &gp.sampler.top_k) ||
            arg_float(&a, "--top-p", NULL, 1e-6, 1, &gp.sampler.top_p) ||
            arg_u64(&a, "--seed", NULL, &gp.sampler.seed) || cli_model_opt(&a, &mo) ||
            arg_int(&a, "--max-batch-tokens", NULL, 1, 65536, &batch))
            continue;
        if (arg_val(&a, "--stop", NULL, &v)) {
            const char **t = v ? realloc(stops, (size_t)(n_stops + 1) * sizeof *t) : NULL;
            if (v && !*v) arg_fail(&a, "--stop needs a non-empty string");
            else if (v && strlen(v) > LM_MAX_STOP_LEN) arg_fail(&a, "--stop: at most %d bytes", LM_MAX_STOP_LEN);
            else if (v && lm_utf8_invalid_at(v, strlen(v)) != strlen(v))
                arg_fail(&a, "--stop: not valid UTF-8 (generated text is UTF-8, so it could cut a character)");
            else if (v && n_stops == LM_MAX_STOPS) arg_fail(&a, "at most %d --stop strings", LM_MAX_STOPS);
            else if (v && !t) arg_fail(&a, "out of memory");
            else if (v) stops = t, stops[n_stops++] = v;
            continue;
        }
        if (arg_flag(&a, "--ignore-eos", NULL)) gp.ignore_eos = true;
        else if (arg_flag(&a, "--no-special", NULL)) gp.add_special = false;
        else if (arg_flag(&a, "--batch", NULL) || !strncmp(argv[a.i], "--batch=", 8))
            arg_fail(&a, "--batch is now --max-batch-tokens (tokens per forward pass); "
                         "'bench --batch' is the number of sequences");
        else arg_unknown(&a, "give the prompt with -p \"TEXT\" (quote it)");
    }
    if (!a.failed && !!prompt == !!prompts_file) arg_fail(&a, "give exactly one of -p TEXT or --prompts FILE");
    if (!a.failed && out_path && !prompts_file) arg_fail(&a, "--out goes with --prompts (-p streams to stdout)");
    if (a.failed) {
        free(stops);
        return EXIT_USAGE;
    }
    if (!model_dir && !(model_dir = cli_default_model())) {
        free(stops);
        return 1;
    }
    gp.stop = stops;
    gp.n_stop = n_stops;

    int rc = 0;
    lm_model *model = NULL;
    lm_tokenizer *tok = NULL;
    lm_context *ctx = NULL;
    lm_gen_result *res = NULL;
    cli_prompts prompts = {0};
    char *tpath = NULL;
    cli_out out = {0};
    lm_status st;
    // Inputs and the output are checked before the model is loaded: a bad
    // line or an unwritable path must not cost the whole run.
    if (prompts_file) rc = cli_prompts_read("generate", prompts_file, 65536, &prompts);
    else if (cli_prompts_add(&prompts, strdup(prompt), 0)) rc = 1;
    const char *inputs[1] = {prompts_file};
    if (!rc && prompts_file && cli_out_check("generate", out_path, model_dir, inputs, 1)) rc = 1;
    if (!rc && prompts_file && cli_out_open("generate", out_path, &out)) rc = 1;
    if (!rc && !(tpath = cli_tokenizer_path("generate", model_dir))) rc = 1;
    if (!rc && (st = lm_tokenizer_load(tpath, &tok))) rc = cli_error("generate", st);
    if (!rc) rc = cli_load_model("generate", model_dir, NULL, false, &mo, &model);
    if (!rc && (st = lm_tokenizer_check_model(tok, model))) rc = cli_error("generate", st);
    if (rc) goto done;

    lm_model_info mi;
    lm_model_get_info(model, &mi);
    if (mo.verbose && lm_tokenizer_vocab_size(tok) < mi.vocab)
        fprintf(stderr, "the tokenizer has %d ids, the model %d: the other %d are never sampled\n",
                lm_tokenizer_vocab_size(tok), mi.vocab, mi.vocab - lm_tokenizer_vocab_size(tok));
    // Size the KV cache for what these prompts need, not the model's maximum.
    size_t longest = 0;
    for (int i = 0; i < prompts.n; i++) {
        int32_t *ids;
        size_t n;
        const char *where = prompts_file ? (strcmp(prompts_file, "-") ? prompts_file : "(standard input)") : "-p";
        char at[32] = "";
        if (prompts_file) snprintf(at, sizeof at, ":%d", prompts.line[i]);
        if ((st = lm_tokenize(tok, prompts.text[i], strlen(prompts.text[i]), gp.add_special, &ids, &n))) {
            fprintf(stderr, "lightmoe generate: %s%s: %s\n", where, at, lm_last_error());
            rc = 1;
            goto done;
        }
        free(ids);
        if (n == 0) {
            fprintf(stderr, "lightmoe generate: %s%s: the prompt gives no tokens (it is empty, or the tokenizer drops "
                    "every character of it) and the tokenizer adds no BOS token\n", where, at);
            rc = 1;
            goto done;
        }
        if (n + (size_t)gp.max_tokens > (size_t)mi.max_positions) {
            fprintf(stderr, "lightmoe generate: %s%s: the prompt (%zu tokens) + %d new tokens exceeds the model's %d "
                    "positions\n", where, at, n, gp.max_tokens, mi.max_positions);
            rc = 1;
            goto done;
        }
        if (n > longest) longest = n;
    }
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo.kv_type;
    cp.n_seq = prompts.n;
    cp.n_ctx = (int)longest + gp.max_tokens;
    cp.n_batch = batch;
    if ((st = lm_context_init(model, &cp, &ctx))) {
        rc = cli_error("generate", st);
        goto done;
    }
    res = calloc((size_t)prompts.n, sizeof *res);
    if (!res) {
        fprintf(stderr, "lightmoe generate: out of memory\n");
        rc = 1;
        goto done;
    }
    if (prompts_file) fprintf(stderr, "generating %d prompts together, up to %d tokens each ...\n", prompts.n, gp.max_tokens);
    stream_ctx sc = {stdout, 0};
    double t0 = cli_now();
    st = lm_generate(ctx, tok, (const char *const *)prompts.text, prompts.n, &gp, prompts_file ? NULL : stream_cb,
                     &sc, res);
    double dt = cli_now() - t0;
    if (sc.err) {
        fprintf(stderr, "lightmoe generate: writing standard output failed: %s\n", strerror(sc.err));
        rc = 1;
        goto done;
    }
    if (st) {
        if (!prompts_file) fputc('\n', stdout);
        rc = cli_error("generate", st);
        goto done;
    }
    long n_prompt = 0, n_gen = 0;
    for (int i = 0; i < prompts.n; i++) n_prompt += res[i].n_prompt_tokens, n_gen += res[i].n_gen_tokens;
    if (prompts_file) {
        if (cli_out_begin("generate", &out)) {
            rc = 1;
            goto done;
        }
        write_results(out.f, &prompts, res);
    } else {
        fputc('\n', stdout);
        out = (cli_out){stdout, NULL, NULL, NULL, -1, false};
    }
    // Flushing reports write errors (a full disk, /dev/full) with the path.
    if (cli_out_commit("generate", &out)) {
        rc = 1;
        goto done;
    }
    fprintf(stderr, "[%d prompt(s): %ld prompt tokens, %ld generated in %.2f s: %.1f tok/s overall]\n", prompts.n,
            n_prompt, n_gen, dt, dt > 0 ? (double)(n_prompt + n_gen) / dt : 0.0);

done:
    cli_out_abort(&out);
    if (res) lm_gen_results_free(res, prompts.n);
    free(res);
    free(tpath);
    lm_context_free(ctx);
    lm_model_free(model);
    lm_tokenizer_free(tok);
    cli_prompts_free(&prompts);
    free(stops);
    return rc;
}
