// Sampling and batched generation on the shipped model: seeds reproduce,
// batching does not change any sequence's text, stop strings cut exactly,
// and streamed pieces add up to the final text.
#include "lightmoe.h"
#include "testlib.h"

#define MODEL "models/sotu-moe"

static void test_sampler(void) {
    float logits[4] = {0.0f, logf(3.0f), -1.0f, -2.0f};
    lm_sampler_params p = lm_sampler_default_params();
    lm_sampler *s;
    CHECK(lm_sampler_init(&p, 4, &s) == LM_OK);
    CHECK(lm_sampler_sample(s, logits) == 1);  // greedy
    lm_sampler_free(s);
    p.temperature = 1.0f;
    p.top_k = 2;
    CHECK(lm_sampler_init(&p, 4, &s) == LM_OK);
    int hits = 0, n = 20000;
    for (int i = 0; i < n; i++) {
        int t = lm_sampler_sample(s, logits);
        CHECK(t == 0 || t == 1);  // top-k = 2
        hits += t == 1;
    }
    lm_sampler_free(s);
    CHECK_NEAR((double)hits / n, 0.75, 0.015);  // p(1) = 3/(1+3) within the top 2
    p.top_k = 0;
    p.top_p = 0.5f;  // the nucleus is the single most likely token
    CHECK(lm_sampler_init(&p, 4, &s) == LM_OK);
    for (int i = 0; i < 100; i++) CHECK(lm_sampler_sample(s, logits) == 1);
    lm_sampler_free(s);
    p.top_p = 0.f;
    CHECK(lm_sampler_init(&p, 4, &s) == LM_ERR_INVALID_ARG);
}

typedef struct {
    char buf[3][4096];
    size_t len[3];
} stream_t;

static int on_piece(void *user, int idx, const char *piece, size_t len) {
    stream_t *st = user;
    if (st->len[idx] + len < sizeof st->buf[idx]) {
        memcpy(st->buf[idx] + st->len[idx], piece, len);
        st->len[idx] += len;
        st->buf[idx][st->len[idx]] = 0;
    }
    return 0;
}

static lm_model *model;
static lm_tokenizer *tok;

static void gen(const char *const *prompts, int n, const lm_gen_params *gp, lm_gen_result *res, stream_t *st) {
    lm_context_params cp = lm_context_default_params();
    cp.n_seq = n;
    cp.n_ctx = 256;
    cp.n_batch = 64;  // smaller than the prompts together: prefill runs in chunks
    lm_context *ctx;
    CHECK(lm_context_init(model, &cp, &ctx) == LM_OK);
    if (st) memset(st, 0, sizeof *st);
    lm_status s = lm_generate(ctx, tok, prompts, n, gp, st ? on_piece : NULL, st, res);
    CHECK_MSG(s == LM_OK, "%s", lm_last_error());
    lm_context_free(ctx);
}

static const char *prompts[3] = {"The old man and the sea, a story about", "Hello", "def main(args):\n    return"};

static void test_batch_equals_single(void) {
    for (int sampled = 0; sampled < 2; sampled++) {
        lm_gen_params gp = lm_gen_default_params();
        gp.max_tokens = 24;
        gp.ignore_eos = true;
        if (sampled) gp.sampler.temperature = 0.9f, gp.sampler.top_k = 50, gp.sampler.top_p = 0.95f, gp.sampler.seed = 7;
        lm_gen_result all[3], one[1];
        stream_t st;
        gen(prompts, 3, &gp, all, &st);
        for (int i = 0; i < 3; i++) {
            gen(&prompts[i], 1, &gp, one, NULL);
            CHECK_MSG(strcmp(all[i].text, one[0].text) == 0, "prompt %d: batched '%s' vs alone '%s'", i, all[i].text,
                      one[0].text);
            CHECK(all[i].n_gen_tokens == 24 && all[i].finish == LM_FINISH_LENGTH);
            CHECK_MSG(strcmp(st.buf[i], all[i].text) == 0, "streamed text differs from the result");
            lm_gen_results_free(one, 1);
        }
        lm_gen_results_free(all, 3);
    }
}

static void test_seed(void) {
    lm_gen_params gp = lm_gen_default_params();
    gp.max_tokens = 32;
    gp.ignore_eos = true;
    gp.sampler.temperature = 1.0f;
    gp.sampler.seed = 123;
    lm_gen_result a, b, c;
    gen(prompts, 1, &gp, &a, NULL);
    gen(prompts, 1, &gp, &b, NULL);
    gp.sampler.seed = 124;
    gen(prompts, 1, &gp, &c, NULL);
    CHECK(strcmp(a.text, b.text) == 0);
    CHECK(strcmp(a.text, c.text) != 0);
    lm_gen_results_free(&a, 1);
    lm_gen_results_free(&b, 1);
    lm_gen_results_free(&c, 1);
}

static void test_stop_strings(void) {
    lm_gen_params gp = lm_gen_default_params();
    gp.max_tokens = 40;
    gp.ignore_eos = true;
    lm_gen_result full, cut;
    gen(prompts, 1, &gp, &full, NULL);
    size_t L = strlen(full.text);
    CHECK(L > 12);
    if (L <= 12) return;
    char stop[5];
    memcpy(stop, full.text + L / 2, 4);  // a piece from the middle of the greedy text
    stop[4] = 0;
    const char *stops[2] = {"\x01never", stop};
    gp.stop = stops;
    gp.n_stop = 2;
    stream_t st;
    gen(prompts, 1, &gp, &cut, &st);
    const char *first = strstr(full.text, stop);
    size_t want = (size_t)(first - full.text);
    CHECK_MSG(strlen(cut.text) == want && strncmp(cut.text, full.text, want) == 0, "stop '%s': got '%s' from '%s'", stop,
              cut.text, full.text);
    CHECK(cut.finish == LM_FINISH_STOP);
    CHECK_MSG(strcmp(st.buf[0], cut.text) == 0, "streamed '%s' vs result '%s'", st.buf[0], cut.text);
    lm_gen_results_free(&full, 1);
    lm_gen_results_free(&cut, 1);
}

static void test_limits(void) {
    lm_gen_params gp = lm_gen_default_params();
    gp.max_tokens = 0;
    lm_gen_result r;
    gen(prompts, 1, &gp, &r, NULL);
    CHECK(r.n_gen_tokens == 0 && r.text && r.text[0] == 0);
    lm_gen_results_free(&r, 1);
    // A prompt + max_tokens longer than the context is refused, not truncated.
    lm_context_params cp = lm_context_default_params();
    cp.n_ctx = 16;
    lm_context *ctx;
    CHECK(lm_context_init(model, &cp, &ctx) == LM_OK);
    gp.max_tokens = 15;
    CHECK(lm_generate(ctx, tok, prompts, 1, &gp, NULL, NULL, &r) == LM_ERR_RANGE);
    gp.max_tokens = -1;
    CHECK(lm_generate(ctx, tok, prompts, 1, &gp, NULL, NULL, &r) == LM_ERR_INVALID_ARG);
    lm_context_free(ctx);
}

int main(void) {
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = 2;
    if (lm_model_load(MODEL, &mp, &model) || lm_tokenizer_load(MODEL "/tokenizer.json", &tok)) {
        fprintf(stderr, "cannot load %s: %s\n", MODEL, lm_last_error());
        return 1;
    }
    RUN(test_sampler);
    RUN(test_batch_equals_single);
    RUN(test_seed);
    RUN(test_stop_strings);
    RUN(test_limits);
    lm_tokenizer_free(tok);
    lm_model_free(model);
    return tl_finish();
}
