// lightmoe generate: one prompt streamed to stdout, or a JSONL batch.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "prompts.h"
#include "util/file.h"

static const char *help =
    "usage: lightmoe generate [-m DIR] (-p TEXT | --prompts FILE.jsonl) [options]\n"
    "\n"
    "Generates a continuation of TEXT, streamed to stdout, or of every prompt of a\n"
    "JSONL file ({\"prompt\": \"...\"} per line; other fields are ignored), any\n"
    "number of them: they run many at a time as room frees up, and the results are\n"
    "written as JSONL in input order (a prompt that cannot run gets an \"error\" in\n"
    "its line; the exit status is then 1). Progress and statistics go to stderr.\n"
    "\n"
    "  -m, --model DIR       Hugging Face checkpoint directory (config.json, tokenizer.json,\n"
    "                        *.safetensors); default: the small model shipped in models/\n"
    "  -p, --prompt TEXT     prompt text\n"
    "      --prompts FILE    JSONL prompts ('-': standard input)\n"
    "      --out FILE        where to write the JSONL results (default: standard output)\n"
    "      --expert-stats FILE.json\n"
    "                        after the run, write how many tokens each expert of each\n"
    "                        layer was routed, as JSON (draw it with 'lightmoe report')\n"
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
    "                        token budget of one step (one forward pass): a decode\n"
    "                        token per running prompt, prompts prefilled in chunks\n"
    "                        in what is left (default 512)\n"
    "      --parallel N      prompts run at once (default 256, at most the budget);\n"
    "                        the others wait in a queue\n"
    "      --kv-mem SIZE     KV cache budget, e.g. 2G (default: enough for every running\n"
    "                        prompt at the model's full context, or a quarter of the\n"
    "                        free memory if less; when it runs out the newest prompt\n"
    "                        is set back and recomputed later)\n" CLI_MODEL_OPTS_HELP
    "\n"
    "Options take their value as the next argument or after '=' (--prompt=TEXT).\n";



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

static void write_result(FILE *out, int i, const char *prompt, const lm_gen_result *r) {
    fprintf(out, "{\"index\":%d,\"prompt\":", i);
    json_string(out, prompt, strlen(prompt));
    fputs(",\"text\":", out);
    json_string(out, r->text ? r->text : "", r->text ? r->text_len : 0);
    fprintf(out, ",\"prompt_tokens\":%d,\"generated_tokens\":%d,\"finish_reason\":\"%s\"", r->n_prompt_tokens,
            r->n_gen_tokens, finish_name(r->finish));
    if (r->error) {
        fputs(",\"error\":", out);
        json_string(out, r->error, strlen(r->error));
    }
    fputs("}\n", out);
}

// State of one run: results are written in input order as soon as every
// earlier one is complete (and freed), progress goes to stderr.
typedef struct {
    cli_out *out;             // JSONL output, NULL when streaming one prompt
    const char *name;         // the prompts file, for messages
    const cli_prompts *prompts;
    lm_gen_result *res;
    char *ready;              // [n] result complete
    int next;                 // first result not written yet
    long n_prompt, n_gen;
    int n_failed;
    bool begun, tty, progress_shown;
    double t_last;
    int err;                  // errno of a failed write
    FILE *stream;
    long computed;            // tokens run through the model (recomputations included)
} run_ctx;

static void on_done(void *user, int idx, const lm_gen_result *r) {
    run_ctx *c = user;
    if (r->finish != LM_FINISH_ERROR) c->n_prompt += r->n_prompt_tokens;  // a refused prompt was not computed
    c->n_gen += r->n_gen_tokens;
    c->n_failed += r->finish == LM_FINISH_ERROR;
    if (r->finish == LM_FINISH_ERROR && c->out)  // said at once, with where the prompt is; also in its result line
        fprintf(stderr, "%slightmoe generate: %s:%d: %s\n", c->progress_shown && c->tty ? "\n" : "", c->name,
                c->prompts->line[idx], r->error);
    if (!c->out) return;
    if (!c->ready && !(c->ready = calloc((size_t)c->prompts->n, 1))) return;  // written at the end instead
    c->ready[idx] = 1;
    while (c->next < c->prompts->n && c->ready[c->next]) {
        if (!c->begun && cli_out_begin("generate", c->out) != 0) c->err = EIO;
        c->begun = true;
        lm_gen_result *w = &c->res[c->next];
        write_result(c->out->f, c->next, c->prompts->text[c->next], w);
        if (ferror(c->out->f) && !c->err) c->err = errno ? errno : EIO;
        lm_gen_results_free(w, 1);  // written: its text is not needed any more
        c->next++;
    }
}

static int stream_cb(void *user, int idx, const char *piece, size_t len) {
    run_ctx *c = user;
    (void)idx;
    if (fwrite(piece, 1, len, c->stream) != len || fflush(c->stream) != 0) {
        c->err = errno ? errno : EIO;
        return 1;  // generation stops at the first failed write
    }
    return 0;
}

static void on_progress(void *user, const lm_gen_progress *p) {
    run_ctx *c = user;
    c->computed = p->computed_tokens;  // what the expert counts count
    if (!c->out) return;  // one streamed prompt: no progress line
    double now = cli_now();
    if (now - c->t_last < (c->tty ? 0.5 : 10.0) && p->done < p->total) return;
    c->t_last = now;
    double tps = p->seconds > 0 ? (double)(p->prompt_tokens + p->gen_tokens) / p->seconds : 0;
    double rate = p->seconds > 0 ? p->done / p->seconds : 0, eta = rate > 0 ? (p->total - p->done) / rate : 0;
    fprintf(stderr, "%s[%d/%d done, %d running, %d waiting] %.0f tok/s, ETA %.0f s%s", c->tty ? "\r" : "", p->done,
            p->total, p->running, p->waiting, tps, eta, c->tty ? "   " : "\n");
    c->progress_shown = true;
}

int cmd_generate(int argc, char **argv) {
    args a = {argc, 1, argv, "generate", false};
    const char *model_dir = NULL, *prompt = NULL, *prompts_file = NULL, *out_path = NULL, *stats_path = NULL, *v;
    lm_gen_params gp = lm_gen_default_params();
    int batch = 512, parallel = 256;
    double kv_mem = 0;
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
            cli_expert_stats_opt(&a, &stats_path) ||
            arg_int(&a, "--max-tokens", "-n", 0, 1 << 20, &gp.max_tokens) ||
            arg_float(&a, "--temp", NULL, 0, 100, &gp.sampler.temperature) ||
            arg_int(&a, "--top-k", NULL, 0, 1 << 24, &gp.sampler.top_k) ||
            arg_float(&a, "--top-p", NULL, 1e-6, 1, &gp.sampler.top_p) ||
            arg_u64(&a, "--seed", NULL, &gp.sampler.seed) || cli_model_opt(&a, &mo) ||
            arg_int(&a, "--max-batch-tokens", NULL, 1, 65536, &batch) ||
            arg_int(&a, "--parallel", NULL, 1, 65536, &parallel) || arg_size(&a, "--kv-mem", NULL, &kv_mem))
            continue;
        if (arg_val(&a, "--stop", NULL, &v)) {
            const char **t = NULL;
            if (v && !*v) arg_fail(&a, "--stop needs a non-empty string");
            else if (v && strlen(v) > LM_MAX_STOP_LEN) arg_fail(&a, "--stop: at most %d bytes", LM_MAX_STOP_LEN);
            else if (v && lm_utf8_invalid_at(v, strlen(v)) != strlen(v))
                arg_fail(&a, "--stop: not valid UTF-8 (generated text is UTF-8, so it could cut a character)");
            else if (v && n_stops == LM_MAX_STOPS) arg_fail(&a, "at most %d --stop strings", LM_MAX_STOPS);
            else if (v && !(t = realloc(stops, (size_t)(n_stops + 1) * sizeof *t))) arg_fail(&a, "out of memory");
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
    if (!a.failed && out_path && stats_path && !strcmp(out_path, stats_path))
        arg_fail(&a, "--out and --expert-stats name the same file");
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
    cli_out out = {0}, stats = {0};
    lm_status st;
    // Inputs and the output are checked before the model is loaded: a bad
    // line or an unwritable path must not cost the whole run.
    if (prompts_file) rc = cli_prompts_read("generate", prompts_file, 65536, &prompts);
    else if (cli_prompts_add(&prompts, strdup(prompt), 0)) rc = 1;
    const char *inputs[1] = {prompts_file};
    if (!rc && prompts_file && cli_out_check("generate", out_path, model_dir, inputs, 1)) rc = 1;
    if (!rc && prompts_file && cli_out_open("generate", out_path, &out)) rc = 1;
    if (!rc && stats_path && cli_expert_stats_open("generate", stats_path, model_dir, inputs, 1, &stats)) rc = 1;
    if (!rc && !(tpath = cli_tokenizer_path("generate", model_dir))) rc = 1;
    if (!rc && (st = lm_tokenizer_load(tpath, &tok))) rc = cli_error("generate", st);
    if (!rc) rc = cli_load_model("generate", model_dir, NULL, false, &mo, &model);
    if (!rc && (st = lm_tokenizer_check_model(tok, model))) rc = cli_error("generate", st);
    if (!rc && stats_path) rc = cli_expert_stats_check("generate", &stats, model);
    if (rc) goto done;

    lm_model_info mi;
    lm_model_get_info(model, &mi);
    if (mo.verbose && lm_tokenizer_vocab_size(tok) < mi.vocab)
        fprintf(stderr, "the tokenizer has %d ids, the model %d: the other %d are never sampled\n",
                lm_tokenizer_vocab_size(tok), mi.vocab, mi.vocab - lm_tokenizer_vocab_size(tok));
    // Sequences at once (each decodes one token per step, so at most the step's
    // token budget), the model's full context, and a KV cache budget: enough
    // for every running sequence at full length, or a quarter of the free
    // memory if less (the scheduler preempts when it runs out). Pages are
    // touched only when used, so memory grows with the work, not the budget.
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo.kv_type;
    cp.graphs = !mo.no_graphs;
    cp.executor = cli_device("lightmoe generate", &mo);
    cp.n_seq = parallel < prompts.n ? parallel : prompts.n;
    if (cp.n_seq > batch) cp.n_seq = batch;
    cp.n_ctx = mi.max_positions;
    cp.n_batch = batch;
    cp.n_out = cp.n_seq;
    cp.gpu_mem = mo.gpu_mem;
    cli_kv_pages(model, &cp, kv_mem);
    double page_bytes = 2.0 * LM_KV_PAGE * mi.n_kv_heads * mi.head_dim * (mo.kv_type == LM_KV_F32 ? 4 : 2) * mi.n_layers;
    if ((st = lm_context_init(model, &cp, &ctx))) {
        rc = cli_error("generate", st);
        goto done;
    }
    cli_mem_report("lightmoe generate", model, &cp, ctx, mo.verbose);
    res = calloc((size_t)prompts.n, sizeof *res);
    if (!res) {
        fprintf(stderr, "lightmoe generate: out of memory\n");
        rc = 1;
        goto done;
    }
    if (prompts_file) {
        char kb[32];
        fprintf(stderr, "generating %d prompts, up to %d tokens each, %d at a time (KV cache of %s) ...\n", prompts.n,
                gp.max_tokens, cp.n_seq, lm_format_bytes(cp.n_pages * page_bytes, kb, sizeof kb));
    }
    run_ctx rcx = {.out = prompts_file ? &out : NULL, .name = prompts_file && strcmp(prompts_file, "-") ? prompts_file
                                                                                                  : "(standard input)",
                   .prompts = &prompts, .res = res, .t_last = cli_now(),
                   .tty = isatty(2), .stream = stdout};
    gp.on_done = on_done;
    gp.on_progress = on_progress;
    gp.max_parallel = cp.n_seq;
    double t0 = cli_now();
    st = lm_generate(ctx, tok, (const char *const *)prompts.text, prompts.n, &gp, prompts_file ? NULL : stream_cb,
                     &rcx, res);
    double dt = cli_now() - t0;
    free(rcx.ready);  // on_done's bookkeeping; lm_generate has returned
    if (rcx.progress_shown && rcx.tty) fputc('\n', stderr);
    if (rcx.err) {
        fprintf(stderr, "lightmoe generate: writing %s failed: %s\n", prompts_file ? (out_path ? out_path : "standard output")
                : "standard output", strerror(rcx.err));
        rc = 1;
        goto done;
    }
    if (st) {
        if (!prompts_file) fputc('\n', stdout);
        rc = cli_error("generate", st);
        goto done;
    }
    if (!prompts_file) {
        if (res[0].finish == LM_FINISH_ERROR) {
            fprintf(stderr, "lightmoe generate: -p: %s\n", res[0].error);
            rc = 1;
            goto done;
        }
        fputc('\n', stdout);
        out = (cli_out){.f = stdout, .fd_trunc = -1};
    }
    // Flushing reports write errors (a full disk, /dev/full) with the path.
    if (cli_out_commit("generate", &out)) {
        rc = 1;
        goto done;
    }
    fprintf(stderr, "[%d prompt(s): %ld prompt tokens, %ld generated in %.2f s: %.1f tok/s overall]\n", prompts.n,
            rcx.n_prompt, rcx.n_gen, dt, dt > 0 ? (double)(rcx.n_prompt + rcx.n_gen) / dt : 0.0);
    // Prompts that could not run leave the counts of the others valid.
    if (stats_path && cli_write_expert_stats("generate", &stats, ctx, model_dir, (uint64_t)rcx.computed)) {
        rc = 1;
        goto done;
    }
    if (rcx.n_failed) {
        fprintf(stderr, "lightmoe generate: %d of %d prompts could not run (see the \"error\" of their result lines)\n",
                rcx.n_failed, prompts.n);
        rc = 1;
    }

done:
    cli_out_abort(&out);
    cli_out_abort(&stats);
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
