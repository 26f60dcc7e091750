// Token sampling: greedy, temperature, top-k, top-p, with a per-sampler RNG
// so the same seed reproduces the same text whatever else is in the batch.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lightmoe.h"
#include "util/err.h"
#include "engine/sample.h"
#include "util/hash.h"

struct lm_sampler {
    lm_sampler_params p;
    int vocab;              // ids [0, vocab) can be sampled
    const uint8_t *banned;  // [vocab] or NULL: ids never to sample (not owned)
    uint64_t s[4];  // xoshiro256** state
    float *prob;    // [vocab]
    int *idx;       // [vocab]
};

lm_sampler_params lm_sampler_default_params(void) {
    return (lm_sampler_params){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(lm_sampler *s) {
    uint64_t r = rotl(s->s[1] * 5, 7) * 9, t = s->s[1] << 17;
    s->s[2] ^= s->s[0];
    s->s[3] ^= s->s[1];
    s->s[1] ^= s->s[2];
    s->s[0] ^= s->s[3];
    s->s[2] ^= t;
    s->s[3] = rotl(s->s[3], 45);
    return r;
}

lm_status lm_sampler_init(const lm_sampler_params *params, int vocab, lm_sampler **out) {
    *out = NULL;
    lm_sampler_params p = params ? *params : lm_sampler_default_params();
    if (!(p.temperature >= 0) || p.temperature > 100)
        return lm_err(LM_ERR_INVALID_ARG, "temperature %g is out of range [0, 100]", (double)p.temperature);
    if (!(p.top_p > 0) || p.top_p > 1)
        return lm_err(LM_ERR_INVALID_ARG, "top-p %g is out of range (0, 1]", (double)p.top_p);
    if (p.top_k < 0) return lm_err(LM_ERR_INVALID_ARG, "top-k %d must be >= 0", p.top_k);
    if (vocab < 1) return lm_err(LM_ERR_INVALID_ARG, "vocabulary size %d", vocab);
    lm_sampler *s = lm_calloc(1, sizeof *s);
    if (!s) return LM_ERR_OOM;
    s->p = p;
    s->vocab = vocab;
    for (int i = 0; i < 4; i++) s->s[i] = lm_mix64(p.seed + (uint64_t)i * LM_GOLDEN64);
    s->prob = lm_malloc((size_t)vocab * sizeof(float));
    s->idx = lm_malloc((size_t)vocab * sizeof(int));
    if (!s->prob || !s->idx) {
        lm_sampler_free(s);
        return LM_ERR_OOM;
    }
    *out = s;
    return LM_OK;
}

void lm_sampler_free(lm_sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->idx);
    free(s);
}

static const float *g_sort_prob;
static int by_prob_desc(const void *a, const void *b) {
    float pa = g_sort_prob[*(const int *)a], pb = g_sort_prob[*(const int *)b];
    if (pa != pb) return pa < pb ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}

// Moves the k largest of idx[0..n) to the front (any order), O(n) average.
static void select_top(int *idx, int n, int k, const float *p) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = p[idx[(lo + hi) / 2]];
        int i = lo, j = hi;
        while (i <= j) {
            while (p[idx[i]] > pivot) i++;
            while (p[idx[j]] < pivot) j--;
            if (i <= j) {
                int t = idx[i]; idx[i] = idx[j]; idx[j] = t;
                i++, j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

void lm_sampler_ban(lm_sampler *s, const uint8_t *banned) { s->banned = banned; }

int32_t lm_sampler_sample(lm_sampler *s, const float *logits) {
    int V = s->vocab;
    const uint8_t *ban = s->banned;
    if (s->p.temperature <= 0) {
        int best = -1;
        for (int i = 0; i < V; i++)
            if (!(ban && ban[i]) && (best < 0 || logits[i] > logits[best])) best = i;
        return best < 0 ? 0 : best;
    }
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (!(ban && ban[i])) mx = logits[i] > mx ? logits[i] : mx;
    // Divide rather than multiply by 1/T: for a tiny T, 1/T overflows to
    // infinity and 0 * inf is NaN, while 0 / T is 0 and the rest go to 0.
    float t = s->p.temperature;
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (ban && ban[i]) continue;
        s->prob[n] = expf((logits[i] - mx) / t);
        s->idx[n++] = i;
    }
    // prob is indexed by id below: spread the compacted values back.
    for (int k = n - 1; k >= 0; k--) {
        float v = s->prob[k];
        s->prob[s->idx[k]] = v;
    }
    if (s->p.top_k > 0 && s->p.top_k < n) {
        select_top(s->idx, n, s->p.top_k, s->prob);
        n = s->p.top_k;
    }
    // Sorting (deterministic: ties by id) is needed for top-p and makes the
    // walk below independent of the selection order.
    g_sort_prob = s->prob;
    qsort(s->idx, (size_t)n, sizeof(int), by_prob_desc);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += s->prob[s->idx[i]];
    if (s->p.top_p < 1.0f) {
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->prob[s->idx[i]] / sum;
            if (acc >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = 0;
        for (int i = 0; i < n; i++) sum += s->prob[s->idx[i]];
    }
    double r = (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[s->idx[i]];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
