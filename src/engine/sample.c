// Token sampling: greedy, temperature, top-k, top-p. No full sort of the
// vocabulary and no global state:
//   - probabilities come from one vectorised exp pass (lm_exp_sum);
//   - top-k is a selection (quickselect on the logits, O(V));
//   - top-p keeps the smallest set of the most likely ids whose mass reaches
//     p: it lies inside {prob >= (1 - p) Z / V} (the ids below hold at most
//     (1 - p) Z together), so only that prefiltered set is partitioned;
//   - the draw walks the kept ids in id order, so the result does not depend
//     on the order a selection happened to leave them in;
//   - the random number is a counter-based hash of (seed, stream, step): a
//     sequence's samples do not depend on what else is in the batch.
// Ties between equal probabilities at the top-k / top-p boundary go to the
// lower id, as a stable sort by probability would.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sample.h"
#include "kernels/cpu/kernels.h"
#include "lightmoe.h"
#include "util/err.h"
#include "util/hash.h"

struct lm_sampler {
    lm_sampler_params p;
    int vocab;              // ids [0, vocab) can be sampled
    const uint8_t *banned;  // [vocab] or NULL: ids never to sample (not owned)
    uint64_t stream;        // RNG key: (seed, stream, step)
    uint64_t step;          // draws so far
    lm_sample_scratch *own; // scratch for lm_sampler_sample (allocated on first use)
};

struct lm_sample_scratch {
    int vocab;
    float *prob;  // [vocab]
    int *idx;     // [vocab]
};

lm_status lm_sample_scratch_init(int vocab, lm_sample_scratch **out) {
    *out = NULL;
    lm_sample_scratch *s = lm_calloc(1, sizeof *s);
    if (!s) return LM_ERR_OOM;
    s->vocab = vocab;
    s->prob = lm_malloc((size_t)vocab * sizeof(float));
    s->idx = lm_malloc((size_t)vocab * sizeof(int));
    if (!s->prob || !s->idx) {
        lm_sample_scratch_free(s);
        return LM_ERR_OOM;
    }
    *out = s;
    return LM_OK;
}

void lm_sample_scratch_free(lm_sample_scratch *s) {
    if (!s) return;
    free(s->prob);
    free(s->idx);
    free(s);
}

lm_sampler_params lm_sampler_default_params(void) {
    return (lm_sampler_params){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
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
    *out = s;
    return LM_OK;
}

void lm_sampler_free(lm_sampler *s) {
    if (!s) return;
    lm_sample_scratch_free(s->own);
    free(s);
}

void lm_sampler_ban(lm_sampler *s, const uint8_t *banned) { s->banned = banned; }

const uint8_t *lm_sampler_banned(const lm_sampler *s) { return s->banned; }
int lm_sampler_vocab(const lm_sampler *s) { return s->vocab; }
float lm_sampler_temperature(const lm_sampler *s) { return s->p.temperature; }

bool lm_sampler_draws(const lm_sampler *s) { return s->p.temperature > 0 && isfinite(1.0f / s->p.temperature); }

void lm_sampler_take_row(lm_sampler *s, lm_sample_row *row, const uint8_t **banned) {
    bool draws = lm_sampler_draws(s);
    *row = (lm_sample_row){.temperature = draws ? s->p.temperature : 0.0f, .top_k = s->p.top_k, .top_p = s->p.top_p,
                           .n_valid = s->vocab, .use_banned = s->banned != NULL, .seed = s->p.seed,
                           .stream = s->stream, .step = s->step};
    *banned = s->banned;
    if (draws) s->step++;
}
void lm_sampler_set_stream(lm_sampler *s, uint64_t stream) { s->stream = stream; }

// Uniform in [0, 1) from (seed, stream, step).
static double draw(const lm_sampler *s) {
    uint64_t x = lm_mix64(s->p.seed ^ lm_mix64(s->stream * LM_GOLDEN64 + 0x5151));
    x = lm_mix64(x + s->step * 0xd6e8feb86659fd93ull);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

// a ranks before b: higher value, then lower id.
static inline int ahead(float va, int a, float vb, int b) { return va > vb || (va == vb && a < b); }

// Moves the k entries of idx[0..n) that rank highest by v[] to the front
// (in no particular order); expected O(n).
static void select_top(int *idx, int n, int k, const float *v) {
    int lo = 0, hi = n - 1;
    while (lo < hi && k > lo && k <= hi) {
        int pi = idx[lo + (hi - lo) / 2];
        float pv = v[pi];
        int i = lo, j = hi;
        while (i <= j) {
            while (ahead(v[idx[i]], idx[i], pv, pi)) i++;
            while (ahead(pv, pi, v[idx[j]], idx[j])) j--;
            if (i <= j) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
                i++, j--;
            }
        }
        // [lo, j] rank at or above the pivot, [i, hi] at or below
        if (k <= j + 1) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
}

// Of idx[0..n), the smallest set of the highest-ranked entries whose mass
// (sum of v) reaches `need`: moved to the front, its size returned. Expected
// O(n): a quickselect that keeps the mass of the part known to be in.
static int select_mass(int *idx, int n, const float *v, double need) {
    int lo = 0, hi = n;  // idx[0..lo) is in; the boundary lies in [lo, hi)
    double have = 0;
    while (hi - lo > 1) {
        int pi = idx[lo + (hi - lo) / 2];
        float pv = v[pi];
        // partition [lo, hi) into "ahead of the pivot" | pivot | "behind"
        int w = lo;
        double mass = 0;
        for (int r = lo; r < hi; r++)
            if (ahead(v[idx[r]], idx[r], pv, pi)) {
                int t = idx[w];
                idx[w] = idx[r];
                idx[r] = t;
                mass += v[idx[w++]];
            }
        for (int r = w; r < hi; r++)
            if (idx[r] == pi) {
                idx[r] = idx[w];
                idx[w] = pi;
                break;
            }
        if (have + mass >= need) {
            hi = w;  // the ones ahead of the pivot already suffice
        } else {
            have += mass + pv;
            lo = w + 1;  // they and the pivot are all in
            if (have >= need) return lo;
        }
    }
    return hi;
}

// The ids that can be among the k most likely: those whose probability's
// top 11 bits (exponent and 2 mantissa bits; positive floats order as their
// bits) reach the bucket holding the k-th largest. One histogram pass and one
// collecting pass instead of a quickselect over the whole vocabulary.
static int prefilter_top(const float *p, int V, int k, int *idx) {
    enum { SHIFT = 20, NB = 1 << (31 - SHIFT) };
    int hist[NB] = {0};
    for (int i = 0; i < V; i++) {
        uint32_t b;
        memcpy(&b, &p[i], 4);
        hist[(b & 0x7fffffffu) >> SHIFT]++;  // p >= 0 (a NaN's sign bit must not index past hist)
    }
    int acc = 0, cut = NB - 1;
    for (; cut > 0; cut--)
        if ((acc += hist[cut]) >= k) break;
    uint32_t lo = (uint32_t)cut << SHIFT;
    int n = 0;
    for (int i = 0; i < V; i++) {
        uint32_t b;
        memcpy(&b, &p[i], 4);
        if ((b & 0x7fffffffu) >= lo) idx[n++] = i;
    }
    return n;
}

static int greedy(const lm_sampler *s, const float *logits) {
    int best = -1;
    for (int i = 0; i < s->vocab; i++)
        if (!(s->banned && s->banned[i]) && (best < 0 || logits[i] > logits[best])) best = i;
    return best < 0 ? 0 : best;
}

int32_t lm_sampler_sample_with(lm_sampler *s, const float *logits, lm_sample_scratch *sc) {
    int V = s->vocab;
    const uint8_t *ban = s->banned;
    float inv_t = s->p.temperature > 0 ? 1.0f / s->p.temperature : INFINITY;
    // A temperature whose inverse overflows is the greedy limit (computing
    // with 1/T = inf would give 0 * inf = NaN for the top logit).
    if (!isfinite(inv_t) || !sc || sc->vocab < V) return greedy(s, logits);
    double u = draw(s);
    s->step++;
    float *p = sc->prob;
    float mx = lm_max_f32(logits, V);
    if (ban) {
        mx = -INFINITY;
        for (int i = 0; i < V; i++)
            if (!ban[i] && logits[i] > mx) mx = logits[i];
    }
    if (!isfinite(mx)) return greedy(s, logits);  // +Inf (or no finite logit): the exps would be NaN
    double z = lm_exp_sum(p, logits, V, mx, inv_t);
    for (int i = 0; ban && i < V; i++)
        if (ban[i]) z -= p[i], p[i] = 0;

    int n = V;  // candidates, in sc->idx unless all ids are
    bool all = true;
    if (s->p.top_k > 0 && s->p.top_k < V) {
        int k = s->p.top_k;
        n = prefilter_top(p, V, k, sc->idx);
        select_top(sc->idx, n, k, p);  // by probability = by logit, ties to the lower id
        n = k;
        all = false;
        z = 0;
        for (int i = 0; i < n; i++) z += p[sc->idx[i]];
    }
    if (s->p.top_p < 1.0f) {
        if (all) {  // prefilter: the nucleus lies inside {p >= (1 - top_p) z / V}
            float t0 = (float)((1.0 - s->p.top_p) * z / V);
            n = 0;
            for (int i = 0; i < V; i++)
                if (p[i] >= t0 && p[i] > 0) sc->idx[n++] = i;
            all = false;
        }
        n = select_mass(sc->idx, n, p, s->p.top_p * z);
        z = 0;
        for (int i = 0; i < n; i++) z += p[sc->idx[i]];
    }
    // Draw: walk the kept ids in id order.
    double target = u * z, acc = 0;
    if (all) {
        int last = -1;
        for (int i = 0; i < V; i++) {
            if (p[i] <= 0) continue;
            acc += p[i];
            last = i;
            if (target < acc) return i;
        }
        return last >= 0 ? last : greedy(s, logits);
    }
    if (n <= 64) {  // a few ids: sort them by id
        for (int i = 1; i < n; i++)
            for (int m = i; m > 0 && sc->idx[m - 1] > sc->idx[m]; m--) {
                int t = sc->idx[m];
                sc->idx[m] = sc->idx[m - 1];
                sc->idx[m - 1] = t;
            }
        for (int i = 0; i < n; i++) {
            acc += p[sc->idx[i]];
            if (target < acc) return sc->idx[i];
        }
        return n ? sc->idx[n - 1] : greedy(s, logits);
    }
    // many: mark them (negated probability; kept ones are > 0) and walk the vocabulary
    for (int i = 0; i < n; i++) p[sc->idx[i]] = -p[sc->idx[i]];
    int last = -1;
    for (int i = 0; i < V; i++) {
        if (!(p[i] < 0)) continue;
        acc -= p[i];
        last = i;
        if (target < acc) return i;
    }
    return last >= 0 ? last : greedy(s, logits);
}

int32_t lm_sampler_sample(lm_sampler *s, const float *logits) {
    if (s->p.temperature > 0 && !s->own && lm_sample_scratch_init(s->vocab, &s->own) != LM_OK)
        return greedy(s, logits);  // no memory for the scratch: the most likely token
    return lm_sampler_sample_with(s, logits, s->own);
}
