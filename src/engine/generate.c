// Batched generation: all prompts are prefilled together (in chunks of the
// context's batch size), then every live sequence advances one token per
// step in one shared batch. Stop strings are matched on the decoded text and
// text that could still become a stop string is held back from the stream.
#include <stdlib.h>
#include <string.h>

#include "lightmoe.h"
#include "engine/sample.h"
#include "util/err.h"

lm_gen_params lm_gen_default_params(void) {
    return (lm_gen_params){.max_tokens = 128,
                           .sampler = lm_sampler_default_params(),
                           .stop = NULL,
                           .n_stop = 0,
                           .ignore_eos = false,
                           .add_special = true};
}

typedef struct {
    int32_t *prompt;
    size_t n_prompt;
    lm_sampler *sampler;
    lm_detok *detok;
    char *text;        // generated text so far
    size_t len, cap;
    size_t emitted;    // bytes of text already passed to the callback
    int32_t last;      // token to feed next
    bool done;
} gen_seq;

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

// Longest suffix of text[from..len) that is a proper prefix of a stop string.
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
static bool emit(gen_seq *g, int idx, size_t upto, lm_piece_cb cb, void *user) {
    bool go = true;
    if (upto > g->emitted && cb) go = cb(user, idx, g->text + g->emitted, upto - g->emitted) == 0;
    if (upto > g->emitted) g->emitted = upto;
    return go;
}

static void finish(gen_seq *g, lm_gen_result *r, lm_finish why, int idx, lm_piece_cb cb, void *user) {
    g->done = true;
    r->finish = why;
    if (why != LM_FINISH_STOP || g->emitted < g->len) emit(g, idx, g->len, cb, user);
}

// Ends a sequence at EOS or the length limit: text the detokenizer still
// holds (an incomplete character) is appended first.
static lm_status finish_flushed(gen_seq *g, lm_gen_result *r, lm_finish why, int idx, lm_piece_cb cb, void *user) {
    const char *tail;
    size_t nt = 0;
    lm_status st = lm_detok_flush(g->detok, &tail, &nt);
    if (st) return st;
    if (nt && !append(g, tail, nt)) return lm_err(LM_ERR_OOM, "out of memory");
    finish(g, r, why, idx, cb, user);
    return LM_OK;
}

static bool is_eos(const lm_model_info *mi, const lm_tokenizer *tok, int32_t t) {
    for (int i = 0; i < mi->n_eos; i++)
        if (mi->eos_token_ids[i] == t) return true;
    return t == lm_tokenizer_eos(tok);
}

// Feeds a newly sampled token to sequence i; returns an error status only for
// hard failures (allocation).
static lm_status accept_token(gen_seq *g, int i, int32_t t, const lm_gen_params *p, const lm_model_info *mi,
                              const lm_tokenizer *tok, lm_gen_result *r, lm_piece_cb cb, void *user) {
    r->n_gen_tokens++;
    g->last = t;
    if (!p->ignore_eos && is_eos(mi, tok, t)) return finish_flushed(g, r, LM_FINISH_EOS, i, cb, user);
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
        emit(g, i, g->len, cb, user);
        finish(g, r, LM_FINISH_STOP, i, cb, user);
        return LM_OK;
    }
    if (r->n_gen_tokens >= p->max_tokens) return finish_flushed(g, r, LM_FINISH_LENGTH, i, cb, user);
    if (!emit(g, i, g->len - held_back(g, p), cb, user)) {  // the caller asked to stop: say nothing more
        g->done = true;
        r->finish = LM_FINISH_STOP;
    }
    return LM_OK;
}

lm_status lm_generate(lm_context *ctx, const lm_tokenizer *tok, const char *const *prompts, int n,
                      const lm_gen_params *params, lm_piece_cb cb, void *user, lm_gen_result *results) {
    lm_gen_params p = params ? *params : lm_gen_default_params();
    if (n < 1) return lm_err(LM_ERR_INVALID_ARG, "no prompts");
    if (p.max_tokens < 0) return lm_err(LM_ERR_INVALID_ARG, "max tokens %d must be >= 0", p.max_tokens);
    for (int s = 0; s < p.n_stop; s++) {
        if (!p.stop[s] || !p.stop[s][0]) return lm_err(LM_ERR_INVALID_ARG, "stop strings must not be empty");
        // Held-back text is matched against every prefix of every stop string
        // per token: bound the cost.
        if (lm_utf8_invalid_at(p.stop[s], strlen(p.stop[s])) != strlen(p.stop[s]))
            return lm_err(LM_ERR_INVALID_ARG, "stop string %d is not valid UTF-8", s + 1);
        if (strlen(p.stop[s]) > LM_MAX_STOP_LEN)
            return lm_err(LM_ERR_INVALID_ARG, "stop string %d is %zu bytes long (at most %d)", s + 1, strlen(p.stop[s]),
                          LM_MAX_STOP_LEN);
    }
    if (p.n_stop > LM_MAX_STOPS) return lm_err(LM_ERR_INVALID_ARG, "%d stop strings (at most %d)", p.n_stop, LM_MAX_STOPS);
    memset(results, 0, (size_t)n * sizeof *results);
    lm_model_info mi;
    lm_model_get_info(lm_context_model(ctx), &mi);
    lm_context_params cp = lm_context_get_params(ctx);
    if (n > cp.n_seq)
        return lm_err(LM_ERR_INVALID_ARG, "%d prompts but the context holds %d sequences", n, cp.n_seq);

    lm_status st = lm_tokenizer_check_model(tok, lm_context_model(ctx));
    if (st) return st;
    // The model may have more ids than the tokenizer (padded embedding
    // tables): those, and ids the tokenizer leaves unused, are never sampled,
    // so every sampled id can be decoded.
    int n_valid = lm_tokenizer_vocab_size(tok) < mi.vocab ? lm_tokenizer_vocab_size(tok) : mi.vocab;
    uint8_t *banned = NULL;
    lm_sample_scratch *scratch = NULL;  // one for every sequence: they are sampled one after another
    for (int id = 0; id < n_valid; id++)
        if (!lm_tokenizer_id_valid(tok, id)) {
            if (!banned && !(banned = lm_calloc((size_t)n_valid, 1))) return LM_ERR_OOM;
            banned[id] = 1;
        }

    // A decode step holds one token per live sequence, which may exceed n_batch.
    size_t cap = (size_t)(cp.n_batch > n ? cp.n_batch : n);
    gen_seq *g = lm_calloc((size_t)n, sizeof *g);
    int32_t *btok = lm_malloc(cap * sizeof(int32_t));
    int32_t *bseq = lm_malloc(cap * sizeof(int32_t));
    uint8_t *bwant = lm_malloc(cap);
    int *brow = lm_malloc(cap * sizeof(int));
    st = (g && btok && bseq && bwant && brow) ? LM_OK : LM_ERR_OOM;

    for (int i = 0; i < n && !st; i++) {
        lm_seq_clear(ctx, i);
        st = lm_tokenize(tok, prompts[i], strlen(prompts[i]), p.add_special, &g[i].prompt, &g[i].n_prompt);
        if (st) break;
        if (g[i].n_prompt == 0) {
            st = lm_err(LM_ERR_INVALID_ARG, "prompt %d gives no tokens (it is empty, or the tokenizer drops every "
                        "character of it) and the tokenizer adds no BOS token", i);
            break;
        }
        if (g[i].n_prompt + (size_t)p.max_tokens > (size_t)cp.n_ctx) {
            st = lm_err(LM_ERR_RANGE, "prompt %d has %zu tokens; with %d new tokens it exceeds the context of %d",
                        i, g[i].n_prompt, p.max_tokens, cp.n_ctx);
            break;
        }
        for (size_t t = 0; t < g[i].n_prompt && !st; t++)
            if (g[i].prompt[t] >= mi.vocab)
                st = lm_err(LM_ERR_RANGE, "prompt %d: token id %d is outside the model's vocabulary of %d "
                            "(tokenizer and model do not match)", i, g[i].prompt[t], mi.vocab);
        if (!st) st = lm_sampler_init(&p.sampler, n_valid, &g[i].sampler);
        if (!st) lm_sampler_ban(g[i].sampler, banned);
        if (!st && !scratch && p.sampler.temperature > 0) st = lm_sample_scratch_init(n_valid, &scratch);
        if (!st) st = lm_detok_init(tok, true, &g[i].detok);
        // text is never NULL: stop matching and hold-back read it from the first token on
        if (!st && !append(&g[i], "", 0)) st = lm_err(LM_ERR_OOM, "out of memory");
        results[i].n_prompt_tokens = (int)g[i].n_prompt;
        if (p.max_tokens == 0) g[i].done = true;
    }

    // Prefill: prompts packed back to back; logits only for each prompt's last token.
    int i_seq = 0;
    size_t i_tok = 0;
    while (!st && i_seq < n) {
        int nb = 0;
        while (nb < cp.n_batch && i_seq < n) {
            btok[nb] = g[i_seq].prompt[i_tok];
            bseq[nb] = i_seq;
            bwant[nb] = i_tok + 1 == g[i_seq].n_prompt && !g[i_seq].done;
            nb++;
            if (++i_tok == g[i_seq].n_prompt) i_seq++, i_tok = 0;
        }
        lm_batch b = {nb, btok, bseq, bwant, NULL};
        st = lm_decode(ctx, &b);
        int j = 0;
        for (int k = 0; k < nb && !st; k++) {
            if (!bwant[k]) continue;
            int s = bseq[k];
            int32_t t = lm_sampler_sample_with(g[s].sampler, lm_get_logits(ctx, j++), scratch);
            st = accept_token(&g[s], s, t, &p, &mi, tok, &results[s], cb, user);
        }
    }

    // Decode: one token per live sequence per step.
    while (!st) {
        int nb = 0;
        for (int i = 0; i < n; i++)
            if (!g[i].done) {
                btok[nb] = g[i].last;
                bseq[nb] = i;
                brow[nb] = i;
                nb++;
            }
        if (nb == 0) break;
        for (int off = 0; off < nb && !st; off += cp.n_batch) {
            int m = nb - off < cp.n_batch ? nb - off : cp.n_batch;
            lm_batch b = {m, btok + off, bseq + off, NULL, NULL};
            st = lm_decode(ctx, &b);
            for (int k = 0; k < m && !st; k++) {
                int s = brow[off + k];
                int32_t t = lm_sampler_sample_with(g[s].sampler, lm_get_logits(ctx, k), scratch);
                st = accept_token(&g[s], s, t, &p, &mi, tok, &results[s], cb, user);
            }
        }
    }

    for (int i = 0; g && i < n; i++) {
        if (!st) {
            results[i].text = g[i].text ? g[i].text : lm_strdup("");
            results[i].text_len = g[i].text ? g[i].len : 0;
            g[i].text = NULL;
        }
        free(g[i].text);
        free(g[i].prompt);
        lm_sampler_free(g[i].sampler);
        lm_detok_free(g[i].detok);
    }
    free(g);
    free(banned);
    lm_sample_scratch_free(scratch);
    free(btok);
    free(bseq);
    free(bwant);
    free(brow);
    return st;
}

void lm_gen_results_free(lm_gen_result *results, int n) {
    for (int i = 0; results && i < n; i++) {
        free(results[i].text);
        results[i].text = NULL;
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
