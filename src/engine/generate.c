// Text generation on the scheduler (src/engine/sched.c): every prompt is a
// request; the scheduler decides what runs in each step, this file samples
// each request's next token and turns tokens into text. Stop strings are
// matched on the decoded text, and text that could still become a stop
// string is held back from the stream.
#include <stdlib.h>
#include <string.h>

#include "engine/sample.h"
#include "engine/sched.h"
#include "lightmoe.h"
#include "util/err.h"
#include "util/file.h"

lm_gen_params lm_gen_default_params(void) {
    return (lm_gen_params){.max_tokens = 128,
                           .sampler = lm_sampler_default_params(),
                           .stop = NULL,
                           .n_stop = 0,
                           .ignore_eos = false,
                           .add_special = true,
                           .max_parallel = 0,
                           .on_done = NULL,
                           .on_progress = NULL};
}

typedef struct gen_seq {
    int idx;           // the prompt's index
    lm_sampler *sampler;
    lm_detok *detok;   // while running
    char *text;        // generated text so far (never NULL once running)
    size_t len, cap;
    size_t emitted;    // bytes of text already passed to the callback
    bool done;
} gen_seq;

typedef struct gen {
    const lm_gen_params *p;
    const lm_tokenizer *tok;
    lm_model_info mi;
    lm_piece_cb cb;
    void *user;
    lm_gen_result *results;
    gen_seq *seq;                // [requests] by scheduler id
    lm_sample_scratch *scratch;  // one for every request: they are sampled one after another
    const uint8_t *banned;
    int n_valid;
    lm_status err;               // a hard failure inside a callback
    long gen_tokens, prompt_done;
    int done;
} gen;

static bool append(gen_seq *g, const char *s, size_t n) {
    if (g->len + n + 1 > g->cap) {
        size_t cap = (g->len + n + 1) * 2;
        char *t = realloc(g->text, cap);
        if (!t) return false;
        g->text = t;
        g->cap = cap;
    }
    memcpy(g->text + g->len, s, n);
    g->len += n;
    g->text[g->len] = 0;
    return true;
}

// Longest suffix of text[emitted..len) that is a proper prefix of a stop string.
static size_t held_back(const gen_seq *g, const lm_gen_params *p) {
    size_t hold = 0;
    for (int i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= g->len - g->emitted && memcmp(g->text + g->len - k, p->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

// Emits text up to `upto` through the callback; returns false if it asked to stop.
static bool emit(gen *G, gen_seq *g, size_t upto) {
    bool go = true;
    if (upto > g->emitted && G->cb) go = G->cb(G->user, g->idx, g->text + g->emitted, upto - g->emitted) == 0;
    if (upto > g->emitted) g->emitted = upto;
    return go;
}

// The request is complete: its result is handed over and its state freed.
static void finish(gen *G, gen_seq *g, lm_finish why) {
    lm_gen_result *r = &G->results[g->idx];
    g->done = true;
    r->finish = why;
    if (why != LM_FINISH_STOP || g->emitted < g->len) emit(G, g, g->len);
    r->text = g->text;
    r->text_len = g->len;
    g->text = NULL;
    lm_detok_free(g->detok);
    g->detok = NULL;
    lm_sampler_free(g->sampler);
    g->sampler = NULL;
    G->done++;
    if (why != LM_FINISH_ERROR) G->prompt_done += r->n_prompt_tokens;  // tokens computed, for tok/s
    if (G->p->on_done) G->p->on_done(G->user, g->idx, r);
}

// Ends a sequence at EOS or the length limit: text the detokenizer still
// holds (an incomplete character) is appended first.
static lm_status finish_flushed(gen *G, gen_seq *g, lm_finish why) {
    const char *tail;
    size_t nt = 0;
    lm_status st = lm_detok_flush(g->detok, &tail, &nt);
    if (st) return st;
    if (nt && !append(g, tail, nt)) return lm_err(LM_ERR_OOM, "out of memory");
    finish(G, g, why);
    return LM_OK;
}

static bool is_eos(const gen *G, int32_t t) {
    for (int i = 0; i < G->mi.n_eos; i++)
        if (G->mi.eos_token_ids[i] == t) return true;
    return t == lm_tokenizer_eos(G->tok);
}

// Feeds a newly sampled token to the request; sets *more when it goes on.
static lm_status accept_token(gen *G, gen_seq *g, int32_t t, bool *more) {
    const lm_gen_params *p = G->p;
    lm_gen_result *r = &G->results[g->idx];
    *more = false;
    r->n_gen_tokens++;
    G->gen_tokens++;
    if (!p->ignore_eos && is_eos(G, t)) return finish_flushed(G, g, LM_FINISH_EOS);
    const char *piece;
    size_t np = 0;
    lm_status st = lm_detok_push(g->detok, t, &piece, &np);
    if (st) return st;
    if (np && !append(g, piece, np)) return lm_err(LM_ERR_OOM, "out of memory");
    // The stop match that starts first (the longest on a tie) cuts the text,
    // so it holds no stop string whatever the order they were given in.
    char *cut = NULL;
    size_t cut_len = 0;
    for (int s = 0; s < p->n_stop; s++) {
        // Only the newly added text (plus the stop's length of history) can hold a new match.
        size_t sl = strlen(p->stop[s]);
        size_t from = g->len >= np + sl ? g->len - np - sl : 0;
        // memmem, not strstr: generated text may hold NUL bytes (a byte-level
        // vocabulary has a token for byte 0).
        char *hit = sl ? memmem(g->text + from, g->len - from, p->stop[s], sl) : NULL;
        if (hit && (!cut || hit < cut || (hit == cut && sl > cut_len))) cut = hit, cut_len = sl;
    }
    if (cut) {
        g->len = (size_t)(cut - g->text);
        g->text[g->len] = 0;
        if (g->emitted > g->len) g->emitted = g->len;
        emit(G, g, g->len);
        finish(G, g, LM_FINISH_STOP);
        return LM_OK;
    }
    if (r->n_gen_tokens >= p->max_tokens) return finish_flushed(G, g, LM_FINISH_LENGTH);
    if (!emit(G, g, g->len - held_back(g, p))) {  // the caller asked to stop: say nothing more
        finish(G, g, LM_FINISH_STOP);
        return LM_OK;
    }
    *more = true;
    return LM_OK;
}

// The scheduler's callback: the next token of request `id`, or -1 when it ended.
static int32_t next_token(void *user, int id, const float *logits) {
    gen *G = user;
    gen_seq *g = &G->seq[id];
    if (G->err || g->done) return -1;
    if (!g->detok) {  // the first token: the request's text state starts now
        if ((G->err = lm_detok_init(G->tok, true, &g->detok)) || !append(g, "", 0)) {
            if (!G->err) G->err = lm_err(LM_ERR_OOM, "out of memory");
            return -1;
        }
    }
    int32_t t = lm_sampler_sample_with(g->sampler, logits, G->scratch);
    bool more;
    if ((G->err = accept_token(G, g, t, &more))) return -1;
    return more ? t : -1;
}

static void fail_request(gen *G, int idx, lm_status st, const char *msg) {
    lm_gen_result *r = &G->results[idx];
    r->status = st;
    r->finish = LM_FINISH_ERROR;
    r->error = lm_strdup(msg);
    r->text = lm_strdup("");
    G->done++;
    if (G->p->on_done) G->p->on_done(G->user, idx, r);
}

lm_status lm_generate(lm_context *ctx, const lm_tokenizer *tok, const char *const *prompts, int n,
                      const lm_gen_params *params, lm_piece_cb cb, void *user, lm_gen_result *results) {
    lm_gen_params p = params ? *params : lm_gen_default_params();
    if (n < 1) return lm_err(LM_ERR_INVALID_ARG, "no prompts");
    if (p.max_tokens < 0) return lm_err(LM_ERR_INVALID_ARG, "max tokens %d must be >= 0", p.max_tokens);
    for (int s = 0; s < p.n_stop; s++) {
        if (!p.stop[s] || !p.stop[s][0]) return lm_err(LM_ERR_INVALID_ARG, "stop strings must not be empty");
        if (lm_utf8_invalid_at(p.stop[s], strlen(p.stop[s])) != strlen(p.stop[s]))
            return lm_err(LM_ERR_INVALID_ARG, "stop string %d is not valid UTF-8", s + 1);
        // Held-back text is matched against every prefix of every stop string
        // per token: bound the cost.
        if (strlen(p.stop[s]) > LM_MAX_STOP_LEN)
            return lm_err(LM_ERR_INVALID_ARG, "stop string %d is %zu bytes long (at most %d)", s + 1, strlen(p.stop[s]),
                          LM_MAX_STOP_LEN);
    }
    if (p.n_stop > LM_MAX_STOPS) return lm_err(LM_ERR_INVALID_ARG, "%d stop strings (at most %d)", p.n_stop, LM_MAX_STOPS);
    lm_status st = lm_tokenizer_check_model(tok, lm_context_model(ctx));
    if (st) return st;
    memset(results, 0, (size_t)n * sizeof *results);

    gen G = {.p = &p, .tok = tok, .cb = cb, .user = user, .results = results};
    lm_model_get_info(lm_context_model(ctx), &G.mi);
    // The model may have more ids than the tokenizer (padded embedding
    // tables): those, and ids the tokenizer leaves unused, are never sampled,
    // so every sampled id can be decoded.
    G.n_valid = lm_tokenizer_vocab_size(tok) < G.mi.vocab ? lm_tokenizer_vocab_size(tok) : G.mi.vocab;
    uint8_t *banned = NULL;
    for (int id = 0; id < G.n_valid; id++)
        if (!lm_tokenizer_id_valid(tok, id)) {
            if (!banned && !(banned = lm_calloc((size_t)G.n_valid, 1))) return LM_ERR_OOM;
            banned[id] = 1;
        }
    G.banned = banned;
    lm_sched_params sp = {.max_running = p.max_parallel, .step_tokens = 0};
    lm_sched *S = NULL;
    G.seq = lm_calloc((size_t)n, sizeof *G.seq);
    if (!G.seq) st = LM_ERR_OOM;
    if (!st) st = lm_sched_init(ctx, &sp, next_token, &G, &S);
    if (!st && p.sampler.temperature > 0) st = lm_sample_scratch_init(G.n_valid, &G.scratch);
    double t0 = lm_now();

    // Every prompt becomes a request, or gets its error now.
    for (int i = 0; i < n && !st; i++) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        lm_status rs = lm_tokenize(tok, prompts[i], strlen(prompts[i]), p.add_special, &ids, &n_ids);
        if (rs == LM_ERR_OOM) st = rs;
        if (rs) {
            if (!st) fail_request(&G, i, rs, lm_last_error());
            free(ids);
            continue;
        }
        results[i].n_prompt_tokens = (int)n_ids;
        for (size_t t = 0; t < n_ids && !rs; t++)
            if (ids[t] >= G.mi.vocab)
                rs = lm_err(LM_ERR_RANGE, "token id %d is outside the model's vocabulary of %d", ids[t], G.mi.vocab);
        if (!rs && n_ids == 0)
            rs = lm_err(LM_ERR_INVALID_ARG, "the prompt gives no tokens (it is empty, or the tokenizer drops every "
                        "character of it) and the tokenizer adds no BOS token");
        if (!rs && p.max_tokens == 0) {  // nothing to generate: no need to run the prompt
            free(ids);
            results[i].text = lm_strdup("");
            results[i].finish = LM_FINISH_LENGTH;
            G.done++;
            G.prompt_done += (long)n_ids;
            if (p.on_done) p.on_done(user, i, &results[i]);
            continue;
        }
        int id = -1;
        if (!rs) rs = lm_sched_add(S, ids, (int)n_ids, p.max_tokens, &id);
        free(ids);
        if (rs == LM_ERR_OOM) st = rs;
        if (rs) {
            if (!st) fail_request(&G, i, rs, lm_last_error());
            continue;
        }
        gen_seq *g = &G.seq[id];
        g->idx = i;
        if ((st = lm_sampler_init(&p.sampler, G.n_valid, &g->sampler))) break;
        lm_sampler_ban(g->sampler, banned);
    }

    // Steps until every request has finished.
    bool active = !st;
    while (!st && active) {
        st = lm_sched_step(S, &active);
        if (!st && G.err) st = G.err;
        if (p.on_progress) {
            lm_sched_stats ss;
            lm_sched_get_stats(S, &ss);
            lm_gen_progress pr = {G.done,      n,          ss.running,         ss.waiting,      G.prompt_done,
                                  G.gen_tokens, ss.tokens_computed, ss.preemptions, lm_now() - t0};
            p.on_progress(user, &pr);
        }
    }

    for (int i = 0; G.seq && i < n; i++) {
        gen_seq *g = &G.seq[i];
        free(g->text);
        lm_sampler_free(g->sampler);
        lm_detok_free(g->detok);
    }
    if (st) lm_gen_results_free(results, n);
    free(G.seq);
    lm_sched_free(S);
    free(banned);
    lm_sample_scratch_free(G.scratch);
    return st;
}

void lm_gen_results_free(lm_gen_result *results, int n) {
    for (int i = 0; results && i < n; i++) {
        free(results[i].text);
        free(results[i].error);
        results[i].text = NULL;
        results[i].error = NULL;
    }
}

lm_status lm_tokenizer_check_model(const lm_tokenizer *tok, const lm_model *model) {
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    int tv = lm_tokenizer_vocab_size(tok);
    if (tv > mi.vocab)
        return lm_err(LM_ERR_FORMAT, "the tokenizer has token ids up to %d but the model's vocabulary has %d "
                      "(config.json vocab_size): the tokenizer does not belong to this model", tv - 1, mi.vocab);
    return LM_OK;
}
