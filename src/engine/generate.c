// Text generation on the scheduler (src/engine/sched.c): every prompt is a
// request; the scheduler decides what runs in each step, this file samples
// each request's next token and turns tokens into text. Stop strings are
// matched on the decoded text, and text that could still become a stop
// string is held back from the stream.
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "engine/gen.h"
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

lm_gen_req_params lm_gen_req_default_params(void) {
    return (lm_gen_req_params){.max_tokens = 128, .sampler = lm_sampler_default_params(), .top_logprobs = -1};
}

typedef struct gen_seq {
    lm_sampler *sampler;
    lm_detok *detok;   // while running
    char *text;        // generated text so far (never NULL once running)
    size_t len, cap;
    size_t emitted;    // bytes of text already passed to on_text
    char **stop;       // the request's stop strings (copies)
    int n_stop;
    int max_tokens, top_logprobs;
    bool ignore_eos;
    lm_gen_result r;
    bool done;
} gen_seq;

struct lm_gen_session {
    lm_context *ctx;
    const lm_tokenizer *tok;
    lm_gen_events ev;
    lm_model_info mi;
    lm_sched *sched;
    gen_seq *seq;                // [requests] by scheduler id
    int n_seq, cap_seq;
    lm_sample_scratch *scratch;  // one for every request: they are sampled one after another
    float *lp;                   // [n_valid] log-probabilities of the request being sampled
    uint8_t *banned;
    int n_valid;
    lm_status err;               // a hard failure inside a callback
    long gen_tokens;
};

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
static size_t held_back(const gen_seq *g) {
    size_t hold = 0;
    for (int i = 0; i < g->n_stop; i++) {
        size_t sl = strlen(g->stop[i]);
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= g->len - g->emitted && memcmp(g->text + g->len - k, g->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

// Emits text up to `upto` through on_text; returns false if it asked to stop.
static bool emit(lm_gen_session *G, gen_seq *g, size_t upto) {
    bool go = true;
    int h = (int)(g - G->seq);
    if (upto > g->emitted && G->ev.on_text) go = G->ev.on_text(G->ev.user, h, g->text + g->emitted, upto - g->emitted) == 0;
    if (upto > g->emitted) g->emitted = upto;
    return go;
}

static void seq_release(gen_seq *g) {
    free(g->text);
    g->text = NULL;
    lm_detok_free(g->detok);
    g->detok = NULL;
    lm_sampler_free(g->sampler);
    g->sampler = NULL;
    for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->stop);
    g->stop = NULL;
    g->n_stop = 0;
}

// The request is complete: its result is handed over and its state freed.
static void finish(lm_gen_session *G, gen_seq *g, lm_finish why) {
    g->done = true;
    g->r.finish = why;
    if (why != LM_FINISH_STOP || g->emitted < g->len) emit(G, g, g->len);
    g->r.text = g->text;
    g->r.text_len = g->len;
    g->text = NULL;
    if (G->ev.on_done) G->ev.on_done(G->ev.user, (int)(g - G->seq), &g->r);
    free(g->r.text);
    g->r.text = NULL;
    seq_release(g);
}

// Ends a sequence at EOS or the length limit: text the detokenizer still
// holds (an incomplete character) is appended first.
static lm_status finish_flushed(lm_gen_session *G, gen_seq *g, lm_finish why) {
    const char *tail;
    size_t nt = 0;
    lm_status st = lm_detok_flush(g->detok, &tail, &nt);
    if (st) return st;
    if (nt && !append(g, tail, nt)) return lm_err(LM_ERR_OOM, "out of memory");
    finish(G, g, why);
    return LM_OK;
}

static bool is_eos(const lm_gen_session *G, int32_t t) {
    for (int i = 0; i < G->mi.n_eos; i++)
        if (G->mi.eos_token_ids[i] == t) return true;
    return t == lm_tokenizer_eos(G->tok);
}

// Feeds a newly sampled token to the request; sets *more when it goes on.
static lm_status accept_token(lm_gen_session *G, gen_seq *g, int32_t t, bool *more) {
    *more = false;
    g->r.n_gen_tokens++;
    G->gen_tokens++;
    if (!g->ignore_eos && is_eos(G, t)) return finish_flushed(G, g, LM_FINISH_EOS);
    const char *piece;
    size_t np = 0;
    lm_status st = lm_detok_push(g->detok, t, &piece, &np);
    if (st) return st;
    if (np && !append(g, piece, np)) return lm_err(LM_ERR_OOM, "out of memory");
    // The stop match that starts first (the longest on a tie) cuts the text,
    // so it holds no stop string whatever the order they were given in.
    char *cut = NULL;
    size_t cut_len = 0;
    for (int s = 0; s < g->n_stop; s++) {
        // Only the newly added text (plus the stop's length of history) can hold a new match.
        size_t sl = strlen(g->stop[s]);
        size_t from = g->len >= np + sl ? g->len - np - sl : 0;
        // memmem, not strstr: generated text may hold NUL bytes (a byte-level
        // vocabulary has a token for byte 0).
        char *hit = sl ? memmem(g->text + from, g->len - from, g->stop[s], sl) : NULL;
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
    if (g->r.n_gen_tokens >= g->max_tokens) return finish_flushed(G, g, LM_FINISH_LENGTH);
    if (!emit(G, g, g->len - held_back(g))) {  // the caller asked to stop: say nothing more
        finish(G, g, LM_FINISH_STOP);
        return LM_OK;
    }
    *more = true;
    return LM_OK;
}

// Log-probabilities of the model's distribution (the sampler's controls
// aside, as OpenAI reports them), the chosen token's and the top n.
static void token_info(lm_gen_session *G, const float *logits, int32_t t, int n, lm_gen_token *out) {
    float mx = -INFINITY;
    for (int i = 0; i < G->n_valid; i++)
        if (!(G->banned && G->banned[i]) && logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < G->n_valid; i++)
        if (!(G->banned && G->banned[i])) sum += exp((double)logits[i] - mx);
    float lse = mx + (float)log(sum);
    out->id = t;
    out->logprob = logits[t] - lse;
    out->n_top = 0;
    for (int i = 0; i < G->n_valid && n > 0; i++) {  // insertion into a short sorted list
        if (G->banned && G->banned[i]) continue;
        float v = logits[i] - lse;
        if (out->n_top == n && v <= out->top_logprob[n - 1]) continue;
        int j = out->n_top < n ? out->n_top++ : n - 1;
        while (j > 0 && out->top_logprob[j - 1] < v) {
            out->top_logprob[j] = out->top_logprob[j - 1], out->top_id[j] = out->top_id[j - 1];
            j--;
        }
        out->top_logprob[j] = v, out->top_id[j] = i;
    }
}

// The scheduler's callback: the sampler of request `id`'s next token, so
// that a device executor draws it where the logits are.
static lm_sampler *token_sampler(void *user, int id) {
    lm_gen_session *G = user;
    gen_seq *g = &G->seq[id];
    return G->err || g->done ? NULL : g->sampler;
}

// The scheduler's callback: the next token of request `id`, or -1 when it ended.
static int32_t next_token(void *user, int id, lm_context *ctx, int row) {
    lm_gen_session *G = user;
    gen_seq *g = &G->seq[id];
    if (G->err || g->done) return -1;
    if (!g->detok) {  // the first token: the request's text state starts now
        if ((G->err = lm_detok_init(G->tok, true, &g->detok)) || !append(g, "", 0)) {
            if (!G->err) G->err = lm_err(LM_ERR_OOM, "out of memory");
            return -1;
        }
    }
    int32_t t = lm_get_token(ctx, row);
    const float *logits = NULL;
    if (t < 0 || (g->top_logprobs >= 0 && G->ev.on_token)) {
        if (!(logits = lm_get_logits(ctx, row))) {
            G->err = lm_err(LM_ERR_DEVICE, "the logits of a request could not be read back: %s", lm_last_error());
            return -1;
        }
    }
    if (t < 0) t = lm_sampler_sample_with(g->sampler, logits, G->scratch);
    if (g->top_logprobs >= 0 && G->ev.on_token) {
        lm_gen_token ti;
        token_info(G, logits, t, g->top_logprobs, &ti);
        G->ev.on_token(G->ev.user, id, &ti);
    }
    bool more;
    if ((G->err = accept_token(G, g, t, &more))) return -1;
    return more ? t : -1;
}

lm_status lm_gen_req_check(const lm_gen_req_params *p) {
    if (p->max_tokens < 1) return lm_err(LM_ERR_INVALID_ARG, "max tokens %d must be >= 1", p->max_tokens);
    for (int s = 0; s < p->n_stop; s++) {
        if (!p->stop[s] || !p->stop[s][0]) return lm_err(LM_ERR_INVALID_ARG, "stop strings must not be empty");
        if (lm_utf8_invalid_at(p->stop[s], strlen(p->stop[s])) != strlen(p->stop[s]))
            return lm_err(LM_ERR_INVALID_ARG, "stop string %d is not valid UTF-8", s + 1);
        // Held-back text is matched against every prefix of every stop string
        // per token: bound the cost.
        if (strlen(p->stop[s]) > LM_MAX_STOP_LEN)
            return lm_err(LM_ERR_INVALID_ARG, "stop string %d is %zu bytes long (at most %d)", s + 1, strlen(p->stop[s]),
                          LM_MAX_STOP_LEN);
    }
    if (p->n_stop < 0 || p->n_stop > LM_MAX_STOPS)
        return lm_err(LM_ERR_INVALID_ARG, "%d stop strings (at most %d)", p->n_stop, LM_MAX_STOPS);
    if (p->top_logprobs > LM_GEN_MAX_TOP_LOGPROBS)
        return lm_err(LM_ERR_INVALID_ARG, "top logprobs %d (at most %d)", p->top_logprobs, LM_GEN_MAX_TOP_LOGPROBS);
    return LM_OK;
}

lm_status lm_gen_session_init(lm_context *ctx, const lm_tokenizer *tok, int max_parallel, const lm_gen_events *ev,
                              lm_gen_session **out) {
    *out = NULL;
    lm_status st = lm_tokenizer_check_model(tok, lm_context_model(ctx));
    if (st) return st;
    lm_gen_session *G = lm_calloc(1, sizeof *G);
    if (!G) return LM_ERR_OOM;
    G->ctx = ctx, G->tok = tok;
    if (ev) G->ev = *ev;
    lm_model_get_info(lm_context_model(ctx), &G->mi);
    // The model may have more ids than the tokenizer (padded embedding
    // tables): those, and ids the tokenizer leaves unused, are never sampled,
    // so every sampled id can be decoded.
    G->n_valid = lm_tokenizer_vocab_size(tok) < G->mi.vocab ? lm_tokenizer_vocab_size(tok) : G->mi.vocab;
    for (int id = 0; id < G->n_valid && !st; id++)
        if (!lm_tokenizer_id_valid(tok, id)) {
            if (!G->banned && !(G->banned = lm_calloc((size_t)G->n_valid, 1))) st = LM_ERR_OOM;
            else G->banned[id] = 1;
        }
    lm_sched_params sp = {.max_running = max_parallel, .step_tokens = 0};
    if (!st) st = lm_sched_init(ctx, &sp, next_token, token_sampler, G, &G->sched);
    if (st) {
        lm_gen_session_free(G);
        return st;
    }
    *out = G;
    return LM_OK;
}

void lm_gen_session_free(lm_gen_session *G) {
    if (!G) return;
    for (int i = 0; i < G->n_seq; i++) seq_release(&G->seq[i]);
    free(G->seq);
    lm_sched_free(G->sched);
    free(G->banned);
    free(G->lp);
    lm_sample_scratch_free(G->scratch);
    free(G);
}

lm_status lm_gen_session_add(lm_gen_session *G, const int32_t *ids, int n_ids, const lm_gen_req_params *rp, int *h) {
    *h = -1;
    lm_status st = lm_gen_req_check(rp);
    if (st) return st;
    for (int t = 0; t < n_ids; t++)
        if (ids[t] < 0 || ids[t] >= G->mi.vocab)
            return lm_err(LM_ERR_RANGE, "token id %d is outside the model's vocabulary of %d", ids[t], G->mi.vocab);
    if (n_ids == 0)
        return lm_err(LM_ERR_INVALID_ARG, "the prompt gives no tokens (it is empty, or the tokenizer drops every "
                      "character of it) and the tokenizer adds no BOS token");
    if (rp->sampler.temperature > 0 && !G->scratch && (st = lm_sample_scratch_init(G->n_valid, &G->scratch)))
        return st;
    if (G->n_seq == G->cap_seq) {
        int cap = G->cap_seq ? 2 * G->cap_seq : 64;
        gen_seq *q = realloc(G->seq, (size_t)cap * sizeof *q);
        if (!q) return lm_err(LM_ERR_OOM, "out of memory");
        G->seq = q, G->cap_seq = cap;
    }
    gen_seq g = {.max_tokens = rp->max_tokens, .top_logprobs = rp->top_logprobs, .ignore_eos = rp->ignore_eos};
    g.r.n_prompt_tokens = n_ids;
    if (rp->n_stop && !(g.stop = calloc((size_t)rp->n_stop, sizeof *g.stop))) return lm_err(LM_ERR_OOM, "out of memory");
    for (int i = 0; i < rp->n_stop; i++, g.n_stop++)
        if (!(g.stop[i] = lm_strdup(rp->stop[i]))) {
            seq_release(&g);
            return lm_err(LM_ERR_OOM, "out of memory");
        }
    if ((st = lm_sampler_init(&rp->sampler, G->n_valid, &g.sampler))) {
        seq_release(&g);
        return st;
    }
    lm_sampler_ban(g.sampler, G->banned);
    lm_sampler_set_stream(g.sampler, rp->stream);
    int id = -1;
    if ((st = lm_sched_add(G->sched, ids, n_ids, rp->max_tokens, &id))) {
        seq_release(&g);
        return st;
    }
    // scheduler ids count up from 0 in the order of adds: they index seq[]
    G->seq[G->n_seq++] = g;
    *h = id;
    return LM_OK;
}

void lm_gen_session_cancel(lm_gen_session *G, int h) {
    if (h < 0 || h >= G->n_seq || G->seq[h].done) return;
    lm_sched_cancel(G->sched, h);
    G->seq[h].done = true;
    seq_release(&G->seq[h]);
}

lm_status lm_gen_session_step(lm_gen_session *G, bool *active) {
    lm_status st = lm_sched_step(G->sched, active);
    if (!st && G->err) st = G->err;
    return st;
}

void lm_gen_session_stats(const lm_gen_session *G, lm_sched_stats *out) { lm_sched_get_stats(G->sched, out); }
long lm_gen_session_gen_tokens(const lm_gen_session *G) { return G->gen_tokens; }

// ------------------------------------------------------------ lm_generate ---

typedef struct gen_run {
    const lm_gen_params *p;
    lm_piece_cb cb;
    void *user;
    lm_gen_result *results;
    int *idx;         // prompt index of each session handle
    int done;
    long prompt_done;
} gen_run;

static int run_text(void *user, int h, const char *text, size_t len) {
    gen_run *R = user;
    return R->cb ? R->cb(R->user, R->idx[h], text, len) : 0;
}

static void run_done(void *user, int h, lm_gen_result *r) {
    gen_run *R = user;
    int i = R->idx[h];
    R->results[i] = *r;
    r->text = NULL;  // kept by results[i]
    R->done++;
    R->prompt_done += r->n_prompt_tokens;  // tokens computed, for tok/s
    if (R->p->on_done) R->p->on_done(R->user, i, &R->results[i]);
}

static void fail_request(gen_run *R, int idx, lm_status st, const char *msg) {
    lm_gen_result *r = &R->results[idx];
    r->status = st;
    r->finish = LM_FINISH_ERROR;
    r->error = lm_strdup(msg);
    r->text = lm_strdup("");
    R->done++;
    if (R->p->on_done) R->p->on_done(R->user, idx, r);
}

lm_status lm_generate(lm_context *ctx, const lm_tokenizer *tok, const char *const *prompts, int n,
                      const lm_gen_params *params, lm_piece_cb cb, void *user, lm_gen_result *results) {
    lm_gen_params p = params ? *params : lm_gen_default_params();
    if (n < 1) return lm_err(LM_ERR_INVALID_ARG, "no prompts");
    if (p.max_tokens < 0) return lm_err(LM_ERR_INVALID_ARG, "max tokens %d must be >= 0", p.max_tokens);
    lm_gen_req_params rp = lm_gen_req_default_params();
    rp.max_tokens = p.max_tokens > 0 ? p.max_tokens : 1;  // 0 is answered without the model below
    rp.sampler = p.sampler, rp.stop = p.stop, rp.n_stop = p.n_stop, rp.ignore_eos = p.ignore_eos;
    lm_status st = lm_gen_req_check(&rp);
    if (st) return st;
    memset(results, 0, (size_t)n * sizeof *results);

    gen_run R = {.p = &p, .cb = cb, .user = user, .results = results};
    lm_model_info mi;
    lm_model_get_info(lm_context_model(ctx), &mi);
    lm_gen_events ev = {.user = &R, .on_text = run_text, .on_done = run_done};
    lm_gen_session *S = NULL;
    R.idx = lm_calloc((size_t)n, sizeof *R.idx);
    if (!R.idx) return LM_ERR_OOM;
    st = lm_gen_session_init(ctx, tok, p.max_parallel, &ev, &S);
    double t0 = lm_now();

    // Every prompt becomes a request, or gets its error now.
    for (int i = 0; i < n && !st; i++) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        lm_status rs = lm_tokenize(tok, prompts[i], strlen(prompts[i]), p.add_special, &ids, &n_ids);
        if (rs == LM_ERR_OOM) st = rs;
        if (rs) {
            if (!st) fail_request(&R, i, rs, lm_last_error());
            free(ids);
            continue;
        }
        results[i].n_prompt_tokens = (int)n_ids;
        if (p.max_tokens == 0 && n_ids > 0) {  // nothing to generate: no need to run the prompt
            bool ok = true;
            for (size_t t = 0; t < n_ids; t++) ok &= ids[t] >= 0 && ids[t] < mi.vocab;
            if (ok) {
                free(ids);
                results[i].text = lm_strdup("");
                results[i].finish = LM_FINISH_LENGTH;
                R.done++;
                R.prompt_done += (long)n_ids;
                if (p.on_done) p.on_done(user, i, &results[i]);
                continue;
            }
        }
        int h = -1;
        rs = lm_gen_session_add(S, ids, (int)n_ids, &rp, &h);
        free(ids);
        if (rs == LM_ERR_OOM) st = rs;
        if (rs) {
            if (!st) fail_request(&R, i, rs, lm_last_error());
            continue;
        }
        R.idx[h] = i;
    }

    // Steps until every request has finished.
    bool active = !st;
    while (!st && active) {
        st = lm_gen_session_step(S, &active);
        if (p.on_progress) {
            lm_sched_stats ss;
            lm_gen_session_stats(S, &ss);
            lm_gen_progress pr = {R.done,      n,          ss.running,         ss.waiting,      R.prompt_done,
                                  lm_gen_session_gen_tokens(S), ss.tokens_computed, ss.preemptions, lm_now() - t0};
            p.on_progress(user, &pr);
        }
    }
    if (st) lm_gen_results_free(results, n);
    lm_gen_session_free(S);
    free(R.idx);
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
