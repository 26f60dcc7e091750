// Host helpers shared by the GPU sampler's two checks (dev/kernels/
// sample_cuda.cu on a GPU, dev/kernels/emu/check_sample.cpp in the
// emulator): logit generators, sample.c's semantics replayed in double
// precision with the margin of each decision, generate.c's token_info.
// C++17, header only.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "util/hash.h"

namespace sref {

struct rng {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    uint64_t next() {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        return s;
    }
    double unif() { return (double)(next() >> 11) / 9007199254740992.0; }
    double gauss() {
        double u = unif() + 1e-300, v = unif();
        return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
    }
};

enum kind { GAUSS, PEAKED, EQUAL, TIES, NEGINF, NANS, POSINF, SORTED_UP, SORTED_DOWN, FLAT, ZIPF, LLM, ALLNEGINF, RAMP, PEAKY, NEARTIES, N_KINDS };
static const char *const kind_name[N_KINDS] = {"gauss", "peaked", "equal", "ties", "-inf", "nan", "+inf",
                                                "sorted-up", "sorted-down", "flat", "zipf", "llm", "all -inf", "ramp", "peaky", "near-ties"};

// A row of V logits of a kind (random and adversarial shapes).
static inline void fill(float *x, int V, kind k, rng &R) {
    for (int i = 0; i < V; i++) {
        float v;
        switch (k) {
        case GAUSS: v = (float)(3 * R.gauss()); break;
        case PEAKED: v = (float)R.gauss() + (i == V / 3 ? 25.0f : 0.0f); break;
        case EQUAL: v = 1.5f; break;
        case TIES: v = (float)(R.next() % 5); break;  // five levels: ties at every boundary
        case NEGINF: v = R.next() % 3 ? -INFINITY : (float)(2 * R.gauss()); break;
        case NANS: v = i == V / 2 ? NAN : (float)R.gauss(); break;
        case POSINF: v = i == V - 1 ? INFINITY : (float)R.gauss(); break;
        case SORTED_UP: v = (float)i * 1e-3f; break;  // the largest logits all in the last warp's span
        case SORTED_DOWN: v = -(float)i * 1e-3f; break;
        case FLAT: v = (float)(0.05 * R.gauss()); break;  // a nucleus of most of the vocabulary
        case ZIPF: v = -1.1f * logf((float)(1 + (R.next() % (uint64_t)V))); break;
        // (log-normal mass: a 0.95 nucleus of ~20k of 152k ids at T 1, wider than the candidates)
        case LLM: v = (float)(2.5 * R.gauss() - (i % 7 == 0 ? 4 : 0)) + (R.next() % 997 == 0 ? 12.0f : 0.0f); break;
        case RAMP:  // noise, and 1500 ascending large logits from 96% of the row on: one warp's span holds more
                    // of the top k than a compaction keeps, and only its compactions leave them out
            v = i >= V / 100 * 96 && i < V / 100 * 96 + 1500 ? 10.0f + (float)(i - V / 100 * 96) * 1e-3f : (float)R.gauss();
            break;
        case NEARTIES:  // distinct logits 3e-7 apart: at a high temperature many share one f32 p
            v = 1.0f + (float)(R.next() % 4096) * 3e-7f;
            break;
        case PEAKY:  // a next-token distribution: ~1 in 757 ids plausible (declining), the rest far below
            v = i % 757 == 13 ? (float)(10.0 - 0.08 * (i / 757) + 0.3 * R.gauss()) : (float)(1.5 * R.gauss() - 8.0);
            break;
        default: v = -INFINITY; break;
        }
        x[i] = v;
    }
}

// Flags as the kernel reports them: 1 NaN, 2 +Inf, 4 -Inf.
static inline int flags_of(const float *x, int V) {
    int fl = 0;
    for (int i = 0; i < V; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u) fl |= (u & 0x7fffffu) ? 1 : (u >> 31) ? 4 : 2;
    }
    return fl;
}

// sample.c's draw(): uniform in [0, 1) from (seed, stream, step).
static inline double draw_u(uint64_t seed, uint64_t stream, uint64_t step) {
    uint64_t x = lm_mix64(seed ^ lm_mix64(stream * LM_GOLDEN64 + 0x5151));
    x = lm_mix64(x + step * 0xd6e8feb86659fd93ull);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

struct rowp {
    float temp;
    int top_k;
    float top_p;
    int n_valid, use_ban;
    uint64_t seed, stream, step;
};

// The row's parameter words (lm_sample_row / LM_CUDA_SAMPLE_WORDS).
static inline void to_words(const rowp &p, int *w) {
    memset(w, 0, 12 * sizeof(int));
    memcpy(&w[0], &p.temp, 4);
    w[1] = p.top_k;
    memcpy(&w[2], &p.top_p, 4);
    w[3] = p.n_valid, w[4] = p.use_ban;
    memcpy(&w[6], &p.seed, 8), memcpy(&w[8], &p.stream, 8), memcpy(&w[10], &p.step, 8);
}

// sample.c's semantics in double precision: the smallest relative margin of
// its decisions (the k-th p against the next, the nucleus mass against its
// target, the draw against the nearest cumulative boundary). Where two
// implementations round differently they can only disagree where this is
// small. same_p: both sides compute bit-identical p (the emulator: glibc's
// expf on both), so the top-k boundary has no rounding and does not count.
static inline double margin(const float *x, int V, const rowp &p, const uint8_t *ban, bool same_p = false) {
    int Ve = std::min(p.n_valid, V);
    float mx = -INFINITY;
    for (int i = 0; i < Ve; i++)
        if (!(ban && ban[i]) && x[i] > mx) mx = x[i];
    float inv_t = 1.0f / p.temp;
    std::vector<std::pair<double, int>> e;
    double z = 0;
    for (int i = 0; i < Ve; i++) {
        if ((ban && ban[i]) || x[i] != x[i]) continue;
        double pd = exp(((double)x[i] - mx) * inv_t);
        e.push_back({pd, i});
        z += pd;
    }
    std::stable_sort(e.begin(), e.end(), [](const std::pair<double, int> &a, const std::pair<double, int> &b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    double m = 1;
    size_t n = e.size();
    if (p.top_k > 0 && p.top_k < Ve && (size_t)p.top_k < n) {
        double a = e[p.top_k - 1].first, b = e[p.top_k].first;
        if (a != b && !same_p) m = std::min(m, (a - b) / a);  // equal p tie exactly: the lower id, no rounding
        n = p.top_k;
        z = 0;
        for (size_t i = 0; i < n; i++) z += e[i].first;
    }
    if (p.top_p < 1) {
        double need = (double)p.top_p * z, c = 0;
        size_t b = n;
        for (size_t i = 0; i < n; i++) {
            double before = c;
            c += e[i].first;
            if (c >= need) {
                m = std::min(m, std::min(fabs(need - before), fabs(c - need)) / z);
                b = i + 1;
                break;
            }
        }
        n = b;
        z = 0;
        for (size_t i = 0; i < n; i++) z += e[i].first;
    }
    std::vector<std::pair<int, double>> kept;
    for (size_t i = 0; i < n; i++) kept.push_back({e[i].second, e[i].first});
    std::sort(kept.begin(), kept.end());
    double t = draw_u(p.seed, p.stream, p.step) * z, acc = 0;
    for (auto &k : kept) {
        double before = acc;
        acc += k.second;
        if (t < acc) {
            m = std::min(m, std::min(t - before, acc - t) / z);
            break;
        }
    }
    return m;
}

// generate.c's token_info (a static function there), transcribed:
// log-probabilities of the model's distribution over the valid ids, the
// chosen id's and the top n by (value, lower id).
static inline void token_info(const float *lg, int n_valid, const uint8_t *ban, int t, int n, float *lp, int *tid,
                              float *tlp, int *nt) {
    float mx = -INFINITY;
    for (int i = 0; i < n_valid; i++)
        if (!(ban && ban[i]) && lg[i] > mx) mx = lg[i];
    double sum = 0;
    for (int i = 0; i < n_valid; i++)
        if (!(ban && ban[i])) sum += exp((double)lg[i] - mx);
    float lse = mx + (float)log(sum);
    *lp = lg[t] - lse;
    *nt = 0;
    for (int i = 0; i < n_valid && n > 0; i++) {
        if (ban && ban[i]) continue;
        float v = lg[i] - lse;
        if (*nt == n && v <= tlp[n - 1]) continue;
        int j = *nt < n ? (*nt)++ : n - 1;
        while (j > 0 && tlp[j - 1] < v) tlp[j] = tlp[j - 1], tid[j] = tid[j - 1], j--;
        tlp[j] = v, tid[j] = i;
    }
}

// A sweep of parameter rows: temperature x top-k x top-p (every `stride`-th
// combination), varied seeds, streams and steps; greedy rows once.
static inline std::vector<rowp> sweep(int V, bool ban, int n_valid, int stride, rng &R) {
    std::vector<rowp> rows;
    const float temps[] = {0.0f, 1e-30f, 0.01f, 0.7f, 1.0f, 100.0f};
    const int ks[] = {0, 1, 5, 40, 256, 300, 5000};
    const float ps[] = {1.0f, 0.9f, 0.5f, 1e-9f, 0.999999f};
    int i = 0;
    for (float t : temps)
        for (int k : ks)
            for (float p : ps) {
                if (i++ % stride) continue;
                if (t == 0 && (k || p < 1)) continue;
                rows.push_back({t, k, p, n_valid > 0 ? n_valid : V, ban, R.next(), R.next() % 5, R.next() % 3});
            }
    return rows;
}

}  // namespace sref
