// The shipped demo model (models/sotu-moe) against the values transformers
// computed from the same bf16 weights when it was trained
// (tools/train_demo.py -> models/sotu-moe/reference.json): greedy
// continuations of fixed prompts, perplexity, and unequal expert routing.
#include <cjson/cJSON.h>

#include "lightmoe.h"
#include "testlib.h"
#include "util/file.h"

#define DIR "models/sotu-moe"

static cJSON *ref;
static lm_model *model;
static lm_tokenizer *tok;
static int vocab;

static void test_greedy_pinned(void) {
    const cJSON *greedy = cJSON_GetObjectItem(ref, "greedy");
    int n = 0;
    for (const cJSON *g = greedy ? greedy->child : NULL; g; g = g->next, n++) {
        const char *prompt = g->string;
        const cJSON *want = cJSON_GetObjectItem(g, "ids");
        int n_want = cJSON_GetArraySize(want);
        int32_t *ids;
        size_t n_ids;
        CHECK(lm_tokenize(tok, prompt, strlen(prompt), false, &ids, &n_ids) == LM_OK);
        lm_context_params cp = lm_context_default_params();
        cp.n_ctx = n_want;
        lm_context *ctx;
        CHECK(lm_context_init(model, &cp, &ctx) == LM_OK);
        int32_t seq[64] = {0}, all[64];
        for (size_t i = 0; i < n_ids; i++) all[i] = ids[i];
        lm_batch b = {(int)n_ids, ids, seq, NULL};
        CHECK(lm_decode(ctx, &b) == LM_OK);
        const float *lg = lm_get_logits(ctx, (int)n_ids - 1);
        int len = (int)n_ids;
        while (len < n_want) {
            int best = 0;
            for (int v = 1; v < vocab; v++) best = lg[v] > lg[best] ? v : best;
            all[len++] = best;
            if (len == n_want) break;
            lm_batch s = {1, &all[len - 1], seq, NULL};
            CHECK(lm_decode(ctx, &s) == LM_OK);
            lg = lm_get_logits(ctx, 0);
        }
        bool same = true;
        for (int i = 0; i < n_want; i++) same &= all[i] == (int32_t)cJSON_GetArrayItem(want, i)->valuedouble;
        CHECK_MSG(same, "greedy continuation of '%s' differs from transformers'", prompt);
        char *text;
        CHECK(lm_detokenize(tok, all, (size_t)n_want, false, &text) == LM_OK);
        CHECK_MSG(strcmp(text, cJSON_GetObjectItem(g, "text")->valuestring) == 0, "text '%s'", text);
        printf("  %s\n", text);
        free(text);
        free(ids);
        lm_context_free(ctx);
    }
    CHECK(n >= 4);
}

// Perplexity of the first 8 windows of 512 held-out tokens, and the routing
// statistics of the same run.
static void test_perplexity_and_routing(void) {
    char *text;
    size_t len;
    CHECK(lm_read_file(DIR "/heldout.txt", 8 << 20, &text, &len) == LM_OK);
    int32_t *ids;
    size_t n_ids;
    CHECK(lm_tokenize(tok, text, len, false, &ids, &n_ids) == LM_OK);
    free(text);
    CHECK((double)n_ids == cJSON_GetObjectItem(ref, "predicted_tokens")->valuedouble +
                               (n_ids + 511) / 512);  // same ids as transformers saw
    lm_context_params cp = lm_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    lm_context *ctx;
    CHECK(lm_context_init(model, &cp, &ctx) == LM_OK);
    int32_t seq[512] = {0};
    double nll = 0;
    long n = 0;
    for (int w = 0; w < 8; w++) {
        lm_seq_clear(ctx, 0);
        lm_batch b = {512, ids + (size_t)w * 512, seq, NULL};
        CHECK(lm_decode(ctx, &b) == LM_OK);
        for (int i = 0; i + 1 < 512; i++) {
            const float *lg = lm_get_logits(ctx, i);
            double mx = lg[0], s = 0;
            for (int v = 1; v < vocab; v++) mx = lg[v] > mx ? lg[v] : mx;
            for (int v = 0; v < vocab; v++) s += exp(lg[v] - mx);
            nll += mx + log(s) - lg[ids[(size_t)w * 512 + i + 1]];
            n++;
        }
    }
    double ppl = exp(nll / (double)n), want = cJSON_GetObjectItem(ref, "perplexity_first8")->valuedouble;
    printf("  perplexity of the first 8 windows: %.4f (transformers %.4f)\n", ppl, want);
    CHECK(n == (long)cJSON_GetObjectItem(ref, "predicted_tokens_first8")->valuedouble);
    CHECK_MSG(fabs(ppl / want - 1) < 0.005, "perplexity %.4f vs transformers %.4f", ppl, want);
    // Routing is used by every expert but not uniformly.
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    const uint64_t *cnt = lm_expert_counts(ctx);
    double worst = 1;
    for (int l = 0; l < mi.n_layers; l++) {
        uint64_t mx = 0, mn = UINT64_MAX;
        for (int e = 0; e < mi.n_experts; e++) {
            uint64_t c = cnt[l * mi.n_experts + e];
            mx = c > mx ? c : mx;
            mn = c < mn ? c : mn;
        }
        CHECK_MSG(mn > 0, "layer %d has an unused expert", l);
        if (mn && (double)mx / (double)mn > worst) worst = (double)mx / (double)mn;
    }
    printf("  most unequal layer: busiest expert gets %.1fx the tokens of the idlest\n", worst);
    CHECK(worst > 1.5);
    free(ids);
    lm_context_free(ctx);
}

int main(void) {
    char *buf;
    size_t len;
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = 2;
    if (lm_read_file(DIR "/reference.json", 1 << 20, &buf, &len) || !(ref = cJSON_Parse(buf)) ||
        lm_model_load(DIR, &mp, &model) || lm_tokenizer_load(DIR "/tokenizer.json", &tok)) {
        fprintf(stderr, "cannot load %s: %s\n", DIR, lm_last_error());
        return 1;
    }
    free(buf);
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    vocab = mi.vocab;
    RUN(test_greedy_pinned);
    RUN(test_perplexity_and_routing);
    cJSON_Delete(ref);
    lm_model_free(model);
    lm_tokenizer_free(tok);
    return tl_finish();
}
