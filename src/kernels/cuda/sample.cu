// Token sampling on the GPU (contract and method: sample.h; the semantics
// are src/engine/sample.c's, transcribed step by step below).
//
// One CTA of 1024 threads per row. Shared memory (dynamic, 184 KB):
//   cx, cid [32 warps][512]: each warp's candidates (logit, id) in id order
//   segm, segs, segs1 [2048]: per 128-id segment: max logit, sum of
//                  exp((x - max) / T), sum of exp(x - max) (logprobs)
//   hist [4096] u64: radix-select histogram (during the pass: 32 x 256 int,
//                  one per warp, for the warps' compactions)
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/sample.h"
#include "util/hash.h"

// threads per CTA: NT = 1024 (default) or 512 (a template parameter: 64
// or 128 registers a thread); NW = NT / 32 warps.
#define SM_MAXW 32
#define SM_SEG 128                              // ids per segment = one warp step (32 lanes x 4)
#define SM_NSEG (LM_CUDA_SAMPLE_MAX_V / SM_SEG) // 2048
#define SM_C 16384                              // candidate slots: SM_C / NW a warp, compacted to half
#define SM_BINS 4096                            // 12-bit radix digits
#define SM_FULL 0xffffffffu
#define SM_ID_MAX (LM_CUDA_SAMPLE_MAX_V - 1)    // 18 bits
#define SM_LOG2E 1.4426950408889634f
#define SM_FX 17592186044416.0                  // 2^44: masses in fixed point (p <= 1, 2^18 ids: < 2^62)

#define SM_OFF_CID (SM_C * 4)
#define SM_OFF_SEGM (SM_OFF_CID + SM_C * 4)
#define SM_OFF_SEGS (SM_OFF_SEGM + SM_NSEG * 4)
#define SM_OFF_SEGS1 (SM_OFF_SEGS + SM_NSEG * 4)
#define SM_OFF_HIST (SM_OFF_SEGS1 + SM_NSEG * 4)
#define SM_SMEM (SM_OFF_HIST + SM_BINS * 8)

static int g_force_global, g_threads = 1024;

// Which way each row went (the emulator check's coverage; off in builds):
// 0 greedy, 1 walk of every id, 2 top-k/top-p decided on the candidates,
// 3 on the row in global memory, 4 top logprobs on the candidates, 5 on the row.
#ifdef LM_SAMPLE_STATS
__device__ unsigned long long g_sample_path[6];
#define SM_STAT(i) (tid == 0 ? (void)atomicAdd(&g_sample_path[i], 1ull) : (void)0)
#else
#define SM_STAT(i) ((void)0)
#endif

typedef struct {
    const float *logits;
    size_t ldl;
    int V, v4;  // v4: every row 16-byte aligned (float4 loads)
    const int *params;
    int pw;
    const unsigned char *banned;
    int ban4;  // banned 4-byte aligned
    int *out;
    float *logprob;
    int n_top;
    int *top_ids;
    float *top_lp;
    int force_global;
} sample_args;

typedef struct {
    int cnt[SM_MAXW];      // candidates of each warp
    float xo[SM_MAXW];     // each warp's largest valid logit left out of its candidates
    float bmax[SM_MAXW];   // each warp's largest valid logit ...
    int bid[SM_MAXW];      // ... and its id (ties: the lower; -1: none)
    int flags[SM_MAXW];
    unsigned theta;     // the largest of the warps' thresholds (ord32 of a logit; 0: none)
    int over;           // a warp's slots filled with ties: the buffer proves nothing
    double red_d[SM_MAXW];
    unsigned long long red_u[SM_MAXW];
    int sel_bin;
    unsigned long long sel_have;
    double before;      // the draw's segment: the sum of the segments before it
    int pick, last;     // the draw's slot / id, the last kept one with p > 0
    int ntop;
    unsigned long long tkey[LM_CUDA_SAMPLE_MAX_TOP];
    int tid[LM_CUDA_SAMPLE_MAX_TOP];
} sm_shared;

// ------------------------------------------------------------- helpers ---

// util/hash.h's lm_mix64 and sample.c's draw(), for the device (the
// emulator check compares them with the host functions bit for bit).
static __host__ __device__ __forceinline__ uint64_t dev_mix64(uint64_t x) {
    x += LM_GOLDEN64;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static __host__ __device__ __forceinline__ double dev_draw(uint64_t seed, uint64_t stream, uint64_t step) {
    uint64_t x = dev_mix64(seed ^ dev_mix64(stream * LM_GOLDEN64 + 0x5151));
    x = dev_mix64(x + step * 0xd6e8feb86659fd93ull);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

// Another warp's latest write (sh.theta: any value it had is a valid bound).
static __device__ __forceinline__ uint32_t vload(const unsigned *p) { return *(const volatile unsigned *)p; }

// Floats as unsigned keys in the same order (NaN excluded beforehand).
static __device__ __forceinline__ uint32_t ord32(float f) {
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

// The sampler's probability, in the CPU's arithmetic: expf((x - max) * (1/T)).
static __device__ __forceinline__ float prob(float x, float mx, float inv_t) { return expf((x - mx) * inv_t); }

// Selection keys, larger first: (p, then the lower id); p >= 0 orders as its bits.
static __device__ __forceinline__ uint64_t pkey(float p, int id) {
    return (uint64_t)__float_as_uint(p) << 18 | (uint64_t)(SM_ID_MAX - id);
}
static __device__ __forceinline__ uint64_t vkey(float v, int id) {  // any float v (log-probabilities)
    return (uint64_t)ord32(v) << 18 | (uint64_t)(SM_ID_MAX - id);
}

template <class T> static __device__ __forceinline__ T wsum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SM_FULL, v, o);
    return v;
}

static __device__ __forceinline__ float wmaxf(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(SM_FULL, v, o));
    return v;
}

// Block sum in a fixed order (the same bits whatever the timing).
static __device__ double bsum_d(double v, sm_shared &sh) {
    v = wsum(v);
    __syncthreads();  // red_d may still be read by the previous call
    if ((threadIdx.x & 31) == 0) sh.red_d[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += sh.red_d[i];
    return t;
}

// Sum of v over the threads after this one (thread order).
static __device__ unsigned long long bsuffix_u64(unsigned long long v, sm_shared &sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    unsigned long long x = v;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long y = __shfl_down_sync(SM_FULL, x, o);
        if (lane + o < 32) x += y;
    }
    __syncthreads();
    if (lane == 0) sh.red_u[w] = x;
    __syncthreads();
    unsigned long long after = 0;
    for (int i = w + 1; i < (int)(blockDim.x >> 5); i++) after += sh.red_u[i];
    unsigned long long ex = __shfl_down_sync(SM_FULL, x, 1);
    if (lane == 31) ex = 0;
    return after + ex;
}

// Block-wide radix selection: the largest key K whose weight at or above K
// (sum of the weights of the keys >= K) reaches target, by 12-bit digits
// from the top of a `bits`-bit key. With unit weights and unique keys that
// is the target-th largest key. False when the total is below target.
// `each(cb)` calls cb(ok, key, weight) for every element, the same number of
// times in every lane of a warp (the warp aggregates a bin all its lanes
// share: flat rows and ties do not serialise on one shared-memory atomic).
template <int NT, class Each>
static __device__ bool radix_select(Each each, int bits, unsigned long long target, unsigned long long *hist,
                                    sm_shared &sh, unsigned long long *res) {
    const int tid = threadIdx.x, lane = tid & 31;
    const int rounds = (bits + 11) / 12;
    unsigned long long prefix = 0, have = 0;
    for (int rd = rounds - 1; rd >= 0; rd--) {
        const int shift = 12 * rd;
        const unsigned long long hmask = rd == rounds - 1 ? 0ull : ~0ull << (shift + 12);
        for (int i = tid; i < SM_BINS; i += NT) hist[i] = 0;
        if (tid == 0) sh.sel_bin = -1;
        __syncthreads();
        each([&](bool ok, unsigned long long key, unsigned long long wt) {
            const int bin = ok && (key & hmask) == prefix ? (int)((key >> shift) & (SM_BINS - 1)) : -1;
            const int b0 = __shfl_sync(SM_FULL, bin, 0);
            if (__all_sync(SM_FULL, bin == b0)) {
                const unsigned long long s = wsum<unsigned long long>(bin >= 0 ? wt : 0ull);
                if (lane == 0 && b0 >= 0) atomicAdd(&hist[b0], s);
            } else if (bin >= 0) {
                atomicAdd(&hist[bin], wt);
            }
        });
        __syncthreads();
        constexpr int BPT = SM_BINS / NT;  // bins a thread
        unsigned long long h[BPT], loc = 0;
#pragma unroll
        for (int j = 0; j < BPT; j++) h[j] = hist[BPT * tid + j], loc += h[j];
        unsigned long long c = have + bsuffix_u64(loc, sh);
#pragma unroll
        for (int j = BPT - 1; j >= 0; j--) {
            if (c < target && c + h[j] >= target) sh.sel_bin = BPT * tid + j, sh.sel_have = c;
            c += h[j];
        }
        __syncthreads();
        const int b = sh.sel_bin;
        if (b < 0) return false;  // only in the first round: the total is below target
        prefix |= (unsigned long long)b << shift;
        have = sh.sel_have;
        __syncthreads();  // sel_* are rewritten by the next round
    }
    *res = prefix;
    return true;
}

// ----------------------------------------------------------------- kernel ---

template <int NT, bool V4>
__global__ void __launch_bounds__(NT, 1) k_sample(const sample_args a) {
    constexpr int NW = NT / 32, CW = SM_C / NW, KEEP = CW / 2;  // a warp's slots; a compaction keeps >= KEEP
    // steps of logits in flight per warp (512 B each): 48 KB a CTA at 1024
    // threads (4 steps spill at 64 registers), 40 KB at 512
    constexpr int PF = NT == 1024 ? 3 : 5;
    extern __shared__ __align__(16) unsigned char sm_raw[];
    __shared__ sm_shared sh;
    float *cx = reinterpret_cast<float *>(sm_raw);
    int *cid = reinterpret_cast<int *>(sm_raw + SM_OFF_CID);
    float *segm = reinterpret_cast<float *>(sm_raw + SM_OFF_SEGM);
    float *segs = reinterpret_cast<float *>(sm_raw + SM_OFF_SEGS);
    float *segs1 = reinterpret_cast<float *>(sm_raw + SM_OFF_SEGS1);
    unsigned long long *hist = reinterpret_cast<unsigned long long *>(sm_raw + SM_OFF_HIST);
    const int r = blockIdx.x, tid = threadIdx.x, lane = tid & 31, w = tid >> 5;

    // --- the row's parameters (lm_sample_row words)
    const int *pr = a.params + (size_t)r * a.pw;
    const float temp = __int_as_float(__ldg(pr));
    const int top_k = __ldg(pr + 1), n_valid = __ldg(pr + 3), use_ban = __ldg(pr + 4);
    const float top_p = __int_as_float(__ldg(pr + 2));
    const uint64_t seed = (uint32_t)__ldg(pr + 6) | (uint64_t)(uint32_t)__ldg(pr + 7) << 32;
    const uint64_t stream = (uint32_t)__ldg(pr + 8) | (uint64_t)(uint32_t)__ldg(pr + 9) << 32;
    const uint64_t step = (uint32_t)__ldg(pr + 10) | (uint64_t)(uint32_t)__ldg(pr + 11) << 32;
    const int L = a.n_top;
    if (n_valid <= 0) {  // padding row: nothing is read
        if (tid == 0) a.out[2 * r] = -1, a.out[2 * r + 1] = 0;
        if (a.logprob && tid == 0) a.logprob[r] = -INFINITY;
        if (tid < L) a.top_ids[(size_t)r * L + tid] = -1, a.top_lp[(size_t)r * L + tid] = -INFINITY;
        return;
    }
    const int V = a.V, Ve = min(n_valid, V);
    const bool check_only = !(temp >= 0);
    // A temperature whose inverse overflows is the greedy limit (sample.c).
    const float inv_t = temp > 0 ? 1.0f / temp : INFINITY;
    const bool draw = !check_only && temp > 0 && (__float_as_uint(inv_t) & 0x7f800000u) != 0x7f800000u;
    const bool want_lp = !check_only && (a.logprob || L > 0);
    const bool topk = draw && top_k > 0 && top_k < Ve, topp = draw && top_p < 1.0f;
    const bool collect = (topk || topp || (want_lp && L > 0));
    // per-segment sums: the full mass z (the walk of every id, top-p alone) and
    // logprobs; top-k rows need neither (their mass is the kept k's): no exp in the pass
    const bool segs_on = (draw && !topk) || want_lp, zsum = draw && !topk;
    const unsigned char *ban = use_ban ? a.banned : NULL;
    const float *x = a.logits + (size_t)r * a.ldl;

    if (tid == 0) sh.theta = 0, sh.over = 0;
    __syncthreads();

    // --- one pass: each warp streams a contiguous span of the row (a
    // multiple of 128 ids), 128 ids a step, PF steps in flight.
    {
        const int span = (V + NW * SM_SEG - 1) / (NW * SM_SEG) * SM_SEG;
        const int beg = w * span;
        const int nst = beg < V ? (min(beg + span, V) - beg + SM_SEG - 1) / SM_SEG : 0;
        float *bx = cx + w * CW;
        int *bi = cid + w * CW;
        int fl = 0, bid = -1, cnt = 0;
        float best = -INFINITY, xo = -INFINITY;
        uint32_t thw = 0;   // this warp's threshold (ord32 key; 0: none)
        bool wover = false;
        auto load = [&](int k) -> float4 {
            const int i = beg + k * SM_SEG + lane * 4;
            float4 v = make_float4(0, 0, 0, 0);
            if (k >= nst) return v;
            if (V4 && i + 4 <= V) return __ldg(reinterpret_cast<const float4 *>(x + i));
            if (i < V) v.x = __ldg(x + i);
            if (i + 1 < V) v.y = __ldg(x + i + 1);
            if (i + 2 < V) v.z = __ldg(x + i + 2);
            if (i + 3 < V) v.w = __ldg(x + i + 3);
            return v;
        };
        // Keeps the warp's candidates whose key is >= th, in order; what goes
        // out raises xo.
        auto keep_above = [&](uint32_t th) {
            int kept = 0;
            for (int i0 = 0; i0 < cnt; i0 += 32) {
                const int i = i0 + lane;
                const bool in = i < cnt;
                const float xv = in ? bx[i] : 0.0f;
                const int id = in ? bi[i] : 0;
                const bool keep = in && ord32(xv) >= th;
                if (in && !keep) xo = fmaxf(xo, xv);
                const unsigned b = __ballot_sync(SM_FULL, keep);  // every lane has read its entry
                if (keep) {
                    const int d = kept + __popc(b & ((1u << lane) - 1));  // d <= i: moves left only
                    bx[d] = xv, bi[d] = id;
                }
                kept += __popc(b);
                __syncwarp();
            }
            cnt = kept;
        };
        // The warp's compaction: keep the logits at or above its KEEP-th
        // largest (and the shared threshold), in order; what goes out raises xo.
        auto compact = [&]() {
            int *hw = reinterpret_cast<int *>(hist) + w * 256;
            uint32_t prefix = 0, pmask = 0;
            int need = KEEP;
            for (int shift = 24; shift >= 0; shift -= 8) {
#pragma unroll
                for (int j = 0; j < 8; j++) hw[lane * 8 + j] = 0;
                __syncwarp();
                for (int i = lane; i < cnt; i += 32) {
                    const uint32_t key = ord32(bx[i]);
                    if ((key & pmask) == prefix) atomicAdd(&hw[(key >> shift) & 255], 1);
                }
                __syncwarp();
                int h[8], loc = 0;
#pragma unroll
                for (int j = 0; j < 8; j++) h[j] = hw[lane * 8 + j], loc += h[j];
                int suf = loc;
                for (int o = 1; o < 32; o <<= 1) {
                    const int y = __shfl_down_sync(SM_FULL, suf, o);
                    if (lane + o < 32) suf += y;
                }
                int c = suf - loc, fb = -1, fc = 0;
#pragma unroll
                for (int j = 7; j >= 0; j--) {
                    if (c < need && c + h[j] >= need) fb = lane * 8 + j, fc = c;
                    c += h[j];
                }
                const int src = __ffs(__ballot_sync(SM_FULL, fb >= 0)) - 1;
                const int bin = __shfl_sync(SM_FULL, fb, src);
                need -= __shfl_sync(SM_FULL, fc, src);
                prefix |= (uint32_t)bin << shift;
                pmask |= 255u << shift;
                __syncwarp();
            }
            const uint32_t th = max(prefix, vload(&sh.theta));
            keep_above(th);
            thw = th;
            if (lane == 0) atomicMax(&sh.theta, prefix);  // >= KEEP logits of this warp are >= it
            if (cnt > CW - SM_SEG) wover = true;       // ties: no room is left
        };

        float4 pf[PF];
#pragma unroll
        for (int u = 0; u < PF; u++) pf[u] = load(u);
        for (int k0 = 0; k0 < nst; k0 += PF) {
#pragma unroll
            for (int u = 0; u < PF; u++) {
                const int k = k0 + u;
                if (k >= nst) break;  // warp-uniform
                const float4 v = pf[u];
                pf[u] = load(k + PF);
                const int i0 = beg + k * SM_SEG + lane * 4;
                const float xs[4] = {v.x, v.y, v.z, v.w};
                uint32_t bb = 0;  // banned bytes of the 4 ids
                if (ban && i0 < Ve) {
                    if (a.ban4 && i0 + 4 <= Ve) bb = __ldg(reinterpret_cast<const unsigned int *>(ban + i0));
                    else
                        for (int c = 0; c < 4 && i0 + c < Ve; c++) bb |= (uint32_t)__ldg(ban + i0 + c) << (8 * c);
                }
                float xv[4];
                bool val[4];
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int i = i0 + c;
                    const float xx = xs[c];
                    const uint32_t ub = __float_as_uint(xx);
                    if (i < V && (ub & 0x7f800000u) == 0x7f800000u) fl |= (ub & 0x007fffffu) ? 1 : (ub >> 31) ? 4 : 2;
                    val[c] = i < Ve && xx == xx && !((bb >> (8 * c)) & 0xffu);
                    xv[c] = val[c] ? xx : -INFINITY;
                    if (val[c] && (bid < 0 || xx > best)) best = xx, bid = i;  // ids rise: ties keep the lower
                }
                if (segs_on) {
                    const float m = wmaxf(fmaxf(fmaxf(xv[0], xv[1]), fmaxf(xv[2], xv[3])));
                    float s = 0, s1 = 0;
                    if (m != -INFINITY) {  // (-inf - -inf would be NaN)
#pragma unroll
                        for (int c = 0; c < 4; c++) {
                            const float d = xv[c] - m;
                            if (zsum) s += exp2f(d * inv_t * SM_LOG2E);  // in this order: 0 * inv_t stays 0
                            if (want_lp) s1 += exp2f(d * SM_LOG2E);
                        }
                    }
                    if (zsum) s = wsum(s);
                    if (want_lp) s1 = wsum(s1);
                    if (lane == 0) {
                        const int g = beg / SM_SEG + k;
                        segm[g] = m, segs[g] = s, segs1[g] = s1;
                    }
                }
                if (collect && !wover) {
                    uint32_t th = max(thw, vload(&sh.theta));
                    bool cand[4];
                    int my = 0;
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        cand[c] = val[c] && ord32(xv[c]) >= th;
                        if (val[c] && !cand[c]) xo = fmaxf(xo, xv[c]);
                        my += cand[c];
                    }
                    if (__any_sync(SM_FULL, my)) {
                        if (cnt > CW - SM_SEG) {  // no room for a full step: compact first
                            compact();
                            th = max(thw, vload(&sh.theta));
                            my = 0;
#pragma unroll
                            for (int c = 0; c < 4; c++) {
                                if (cand[c] && (wover || ord32(xv[c]) < th)) cand[c] = false, xo = fmaxf(xo, xv[c]);
                                my += cand[c];
                            }
                        }
                        int inc = my;  // the step's candidates in id order: lane, then c
                        for (int o = 1; o < 32; o <<= 1) {
                            const int y = __shfl_up_sync(SM_FULL, inc, o);
                            if (lane >= o) inc += y;
                        }
                        int p = cnt + inc - my;
#pragma unroll
                        for (int c = 0; c < 4; c++)
                            if (cand[c]) bx[p] = xv[c], bi[p] = i0 + c, p++;
                        cnt += __shfl_sync(SM_FULL, inc, 31);
                    }
                }
            }
        }
        // the warp's results
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(SM_FULL, best, o);
            const int oi = __shfl_xor_sync(SM_FULL, bid, o);
            fl |= __shfl_xor_sync(SM_FULL, fl, o);
            if (oi >= 0 && (bid < 0 || ov > best || (ov == best && oi < bid))) best = ov, bid = oi;
        }
        if (lane == 0) {
            sh.bmax[w] = best, sh.bid[w] = bid, sh.flags[w] = fl;
            if (wover) sh.over = 1;
        }
        // Every warp done: the shared threshold is final, and >= KEEP
        // candidates are at or above it. Dropping the rest (inserted before it
        // rose) leaves a few hundred candidates for the selections below.
        __syncthreads();
        if (collect && !wover) keep_above(vload(&sh.theta));
        // With top-k (or top logprobs) only the m largest logits matter: cut
        // the candidates to those at or above the m-th (a count selection on
        // the logits, no exp); an id left out that ties with the k-th p is
        // what the left-out check below catches.
        const int m = max(topk ? top_k : 0, L);
        if (collect && m > 0 && !sh.over) {  // (uniform: sh.over is final)
            unsigned long long T = 0;
            if (radix_select<NT>(
                    [&](auto cb) {
#pragma unroll 1
                        for (int j = 0; j * 32 < cnt; j++) {
                            const int i = j * 32 + lane;
                            cb(i < cnt, i < cnt ? (unsigned long long)ord32(bx[i]) : 0ull, 1ull);
                        }
                    },
                    32, (unsigned long long)m, hist, sh, &T))
                keep_above((uint32_t)T);
        }
        xo = wmaxf(xo);
        if (lane == 0) sh.cnt[w] = cnt, sh.xo[w] = xo;
    }
    __syncthreads();

    // --- the row: flags, the greedy pick (argmax over the warps in id order)
    int flags = 0, gid = -1;
    float mx = -INFINITY, xo = -INFINITY;
    for (int i = 0; i < NW; i++) {
        flags |= sh.flags[i];
        xo = fmaxf(xo, sh.xo[i]);
        if (sh.bid[i] >= 0 && (gid < 0 || sh.bmax[i] > mx)) mx = sh.bmax[i], gid = sh.bid[i];
    }
    if (tid == 0) a.out[2 * r + 1] = flags;
    if (check_only) {
        if (tid == 0) a.out[2 * r] = -1;
        if (a.logprob && tid == 0) a.logprob[r] = NAN;
        if (tid < L) a.top_ids[(size_t)r * L + tid] = -1, a.top_lp[(size_t)r * L + tid] = NAN;
        return;
    }
    const bool fin = gid >= 0 && (__float_as_uint(mx) & 0x7f800000u) != 0x7f800000u;
    int pick = gid < 0 ? 0 : gid;
    const int nseg = (V + SM_SEG - 1) / SM_SEG;
    const int cw = sh.cnt[w];  // this warp's candidates

    if (draw && fin) {
        // z: the segments' sums scaled to the row's max (sample.c: lm_exp_sum)
        auto seg_wt = [&](int g) {
            const float m = segm[g];
            return m == -INFINITY ? 0.0f : segs[g] * exp2f((m - mx) * inv_t * SM_LOG2E);
        };
        double z = 0;  // (top-k rows: unused)
        if (zsum) {
            for (int g = tid; g < nseg; g += NT) z += seg_wt(g);
            z = bsum_d(z, sh);
        }
        const double u = dev_draw(seed, stream, step);
        if (tid == 0) sh.pick = 0x7fffffff, sh.last = -1;

        if (!topk && !topp) {
            SM_STAT(1);
            // Walk every id in id order (sample.c's "all" case): find the
            // segment by a scan of the segment sums, then its id by the exact p.
            const double target = u * z;
            constexpr int SPT = SM_NSEG / NT;  // segments a thread: SPT consecutive ones
            double v[SPT], sc = 0;
#pragma unroll
            for (int j = 0; j < SPT; j++) {
                const int g = tid * SPT + j;
                v[j] = g < nseg ? seg_wt(g) : 0.0;
                sc += v[j];
            }
            for (int o = 1; o < 32; o <<= 1) {  // block exclusive scan in thread order
                const double y = __shfl_up_sync(SM_FULL, sc, o);
                if (lane >= o) sc += y;
            }
            double ex = __shfl_up_sync(SM_FULL, sc, 1);
            if (lane == 0) ex = 0;
            __syncthreads();
            if (lane == 31) sh.red_d[w] = sc;
            __syncthreads();
            for (int i = 0; i < w; i++) ex += sh.red_d[i];
            {
                double c = ex;
#pragma unroll
                for (int j = 0; j < SPT; j++) {
                    const int g = tid * SPT + j;
                    if (v[j] > 0) {
                        if (target < c + v[j]) atomicMin(&sh.pick, g);
                        atomicMax(&sh.last, g);
                    }
                    c += v[j];
                }
            }
            __syncthreads();
            const int g = sh.pick != 0x7fffffff ? sh.pick : sh.last;  // past the end (rounding): the last
            if (g >= 0 && g / SPT == tid) {  // the segment's prefix, as the scan that chose it
                double c = ex;
#pragma unroll
                for (int j = 0; j < SPT; j++)
                    if (j < g - tid * SPT) c += v[j];
                sh.before = c;
            }
            __syncthreads();
            const double before = sh.before;
            if (w == 0 && g >= 0) {  // the segment's ids, exact p, in id order
                const int i0 = g * SM_SEG + lane * 4;
                float p[4];
                double ls = 0;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int i = i0 + c;
                    float xx = i < Ve ? __ldg(x + i) : NAN;
                    if (ban && i < Ve && ban[i]) xx = NAN;
                    p[c] = xx == xx ? prob(xx, mx, inv_t) : 0.0f;
                    ls += p[c];
                }
                double inc = ls;
                for (int o = 1; o < 32; o <<= 1) {
                    const double y = __shfl_up_sync(SM_FULL, inc, o);
                    if (lane >= o) inc += y;
                }
                double acc = before + inc - ls;
                int hit = -1, lastp = -1;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    if (p[c] <= 0) continue;
                    acc += p[c];
                    lastp = i0 + c;
                    if (hit < 0 && target < acc) hit = i0 + c;
                }
                const unsigned hb = __ballot_sync(SM_FULL, hit >= 0);
                const unsigned lb = __ballot_sync(SM_FULL, lastp >= 0);
                const int hl = hb ? __ffs(hb) - 1 : 31 - __clz(lb);
                const int got = __shfl_sync(SM_FULL, hb ? hit : lastp, hl < 0 ? 0 : hl);
                if (lane == 0 && (hb || lb)) sh.pick = -2 - got;  // (negative: an id, not a segment)
            }
            __syncthreads();
            if (sh.pick <= -2) pick = -2 - sh.pick;
        } else {
            // top-k / top-p over the candidates, or over the row when they cannot prove it
            const float p_out = xo == -INFINITY ? 0.0f : prob(xo, mx, inv_t);
            bool ok = !sh.over && !a.force_global;
            unsigned long long K = 0;  // kept: key >= K
            int ntot = 0;
            for (int i = 0; i < NW; i++) ntot += sh.cnt[i];
            auto each_buf = [&](auto cb, bool mass, unsigned long long kmin) {
#pragma unroll 1
                for (int j = 0; j * 32 < cw; j++) {  // cw: the warp's count (the same in its lanes)
                    const int i = j * 32 + lane, s = w * CW + i;
                    const bool in = i < cw;
                    const float p = in ? prob(cx[s], mx, inv_t) : 0.0f;
                    const unsigned long long key = in ? pkey(p, cid[s]) : 0ull;
                    cb(in && key >= kmin, key, mass ? (unsigned long long)((double)p * SM_FX) : 1ull);
                }
            };
            auto each_row = [&](auto cb, bool mass, unsigned long long kmin) {
#pragma unroll 1
                for (int i0 = 0; i0 < Ve; i0 += 8 * NT) {  // 8 loads in flight a thread
                    float xs[8];
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const int i = i0 + j * NT + tid;
                        xs[j] = i < Ve && !(ban && ban[i]) ? __ldg(x + i) : NAN;
                    }
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const int i = i0 + j * NT + tid;
                        const bool in = xs[j] == xs[j];
                        const float p = in ? prob(xs[j], mx, inv_t) : 0.0f;
                        const unsigned long long key = in ? pkey(p, i) : 0ull;
                        cb(in && key >= kmin, key, mass ? (unsigned long long)((double)p * SM_FX) : 1ull);
                    }
                }
            };
            // the kept mass (sum of p over key >= K), buffer or row
            auto kept_sum = [&](bool buf) {
                double t = 0;
                if (buf) {
                    for (int j = 0; j * 32 < cw; j++) {  // cw: the warp's count (the same in its lanes)
                        const int i = j * 32 + lane, s = w * CW + i;
                        if (i < cw) {
                            const float p = prob(cx[s], mx, inv_t);
                            if (pkey(p, cid[s]) >= K) t += p;
                        }
                    }
                } else {
#pragma unroll 8
                    for (int i = tid; i < Ve; i += NT) {
                        const float xx = __ldg(x + i);
                        if (xx != xx || (ban && ban[i])) continue;
                        const float p = prob(xx, mx, inv_t);
                        if (pkey(p, i) >= K) t += p;
                    }
                }
                return bsum_d(t, sh);
            };
            double zc = z;
            if (ok && topk) {
                if (ntot >= top_k) {
                    unsigned long long kk = 0;
                    radix_select<NT>([&](auto cb) { each_buf(cb, false, 0ull); }, 48, (unsigned long long)top_k, hist, sh, &kk);
                    const float pk = __uint_as_float((uint32_t)(kk >> 18));
                    if (p_out > 0 && p_out >= pk) ok = false;  // an id left out could tie or rank ahead
                    K = kk;
                } else if (p_out > 0) {
                    ok = false;  // some of the k are not candidates
                }
            }
            if (ok) {
                if (topk) zc = kept_sum(true);
                if (topp) {
                    const double need = (double)top_p * zc;
                    const double nf = need * SM_FX;
                    const unsigned long long nfx = nf < 1.0 ? 1ull : (unsigned long long)nf;
                    unsigned long long kp = 0;
                    if (radix_select<NT>([&](auto cb) { each_buf(cb, true, K); }, 48, nfx, hist, sh, &kp)) {
                        const float pb = __uint_as_float((uint32_t)(kp >> 18));
                        if (!topk && p_out > 0 && p_out >= pb) ok = false;  // an id left out could be in the nucleus
                        K = kp;
                    } else if (!topk) {
                        ok = false;  // the nucleus is wider than the candidates
                    }
                    if (ok) zc = kept_sum(true);
                }
            }
            SM_STAT(ok ? 2 : 3);
            if (ok) {
                // draw: the kept candidates in id order (warp order, then slot order)
                const double target = u * zc;
                double wt = 0;
                for (int j = 0; j * 32 < cw; j++) {  // cw: the warp's count (the same in its lanes)
                    const int i = j * 32 + lane, s = w * CW + i;
                    if (i < cw) {
                        const float p = prob(cx[s], mx, inv_t);
                        if (pkey(p, cid[s]) >= K) wt += p;
                    }
                }
                wt = wsum(wt);
                __syncthreads();
                if (lane == 0) sh.red_d[w] = wt;
                __syncthreads();
                double carry = 0;
                for (int i = 0; i < w; i++) carry += sh.red_d[i];
                for (int j = 0; j < CW / 32 && j * 32 < cw; j++) {
                    const int i = j * 32 + lane, s = w * CW + i;
                    float p = 0;
                    if (i < cw) {
                        p = prob(cx[s], mx, inv_t);
                        if (pkey(p, cid[s]) < K) p = 0;
                    }
                    double inc = p;
                    for (int o = 1; o < 32; o <<= 1) {
                        const double y = __shfl_up_sync(SM_FULL, inc, o);
                        if (lane >= o) inc += y;
                    }
                    const unsigned hb = __ballot_sync(SM_FULL, p > 0 && target < carry + inc);
                    const unsigned lb = __ballot_sync(SM_FULL, p > 0);
                    if (lane == 0 && hb) atomicMin(&sh.pick, s - lane + __ffs(hb) - 1);
                    if (lane == 0 && lb) atomicMax(&sh.last, s - lane + 31 - __clz(lb));
                    if (hb) break;
                    carry += __shfl_sync(SM_FULL, inc, 31);
                }
                __syncthreads();
                const int s = sh.pick != 0x7fffffff ? sh.pick : sh.last;
                if (s >= 0) pick = cid[s];
            } else {
                // the same over the row in global memory: exact, more passes
                K = 0;
                zc = z;
                if (topk) {
                    unsigned long long kk = 0;
                    radix_select<NT>([&](auto cb) { each_row(cb, false, 0ull); }, 48, (unsigned long long)top_k, hist, sh, &kk);
                    K = kk;
                    zc = kept_sum(false);
                }
                if (topp) {
                    const double nf = (double)top_p * zc * SM_FX;
                    const unsigned long long nfx = nf < 1.0 ? 1ull : (unsigned long long)nf;
                    unsigned long long kp = 0;
                    if (radix_select<NT>([&](auto cb) { each_row(cb, true, K); }, 48, nfx, hist, sh, &kp)) K = kp;
                    zc = kept_sum(false);
                }
                const double target = u * zc;
                double carry = 0;
                int mylast = -1;  // this thread's last kept id with p > 0
#pragma unroll 1
                for (int i0 = 0; i0 < Ve; i0 += 4 * NT) {  // 4 consecutive ids a thread
                    float p[4];
                    double ls = 0;
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        const int i = i0 + 4 * tid + c;
                        float xx = i < Ve ? __ldg(x + i) : NAN;
                        if (ban && i < Ve && ban[i]) xx = NAN;
                        p[c] = xx == xx ? prob(xx, mx, inv_t) : 0.0f;
                        if (p[c] > 0 && pkey(p[c], i) < K) p[c] = 0;
                        ls += p[c];
                    }
                    double inc = ls;
                    for (int o = 1; o < 32; o <<= 1) {
                        const double y = __shfl_up_sync(SM_FULL, inc, o);
                        if (lane >= o) inc += y;
                    }
                    __syncthreads();
                    if (lane == 31) sh.red_d[w] = inc;
                    __syncthreads();
                    double acc = carry + inc - ls, tot = 0;
                    for (int i = 0; i < NW; i++) {
                        if (i < w) acc += sh.red_d[i];
                        tot += sh.red_d[i];
                    }
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        if (p[c] <= 0) continue;
                        acc += p[c];
                        mylast = i0 + 4 * tid + c;
                        if (target < acc) {
                            atomicMin(&sh.pick, i0 + 4 * tid + c);
                            break;
                        }
                    }
                    carry += tot;
                    __syncthreads();
                    if (sh.pick != 0x7fffffff) break;
                }
                if (mylast >= 0) atomicMax(&sh.last, mylast);
                __syncthreads();
                pick = sh.pick != 0x7fffffff ? sh.pick : sh.last >= 0 ? sh.last : pick;
            }
        }
    }
    if (!(draw && fin)) SM_STAT(0);
    if (tid == 0) a.out[2 * r] = pick;

    // --- log-probabilities (generate.c's token_info): temperature 1, no top-k / top-p
    if (!want_lp) return;
    if (!fin) {
        if (a.logprob && tid == 0) a.logprob[r] = NAN;
        if (tid < L) a.top_ids[(size_t)r * L + tid] = -1, a.top_lp[(size_t)r * L + tid] = NAN;
        return;
    }
    double z1 = 0;
    for (int g = tid; g < nseg; g += NT) {
        const float m = segm[g];
        if (m != -INFINITY) z1 += segs1[g] * exp2f((m - mx) * SM_LOG2E);
    }
    z1 = bsum_d(z1, sh);
    const float lse = mx + (float)log(z1);
    if (a.logprob && tid == 0) a.logprob[r] = __ldg(x + pick) - lse;
    if (L <= 0) return;
    int ntot = 0;
    for (int i = 0; i < NW; i++) ntot += sh.cnt[i];
    const float v_out = xo == -INFINITY ? -INFINITY : xo - lse;
    bool ok = !sh.over && !a.force_global && (ntot >= L || xo == -INFINITY);
    unsigned long long K2 = 0;
    if (tid == 0) sh.ntop = 0;
    if (ok && ntot >= L) {
        radix_select<NT>(
            [&](auto cb) {
#pragma unroll 1
                for (int j = 0; j * 32 < cw; j++) {  // cw: the warp's count (the same in its lanes)
                    const int i = j * 32 + lane, s = w * CW + i;
                    const bool in = i < cw;
                    cb(in, in ? vkey(cx[s] - lse, cid[s]) : 0ull, 1ull);
                }
            },
            50, (unsigned long long)L, hist, sh, &K2);
        if (xo != -INFINITY && ord32(v_out) >= (uint32_t)(K2 >> 18)) ok = false;  // a left-out id could tie
    }
    __syncthreads();
    SM_STAT(ok ? 4 : 5);
    if (ok) {
        for (int j = 0; j * 32 < cw; j++) {  // cw: the warp's count (the same in its lanes)
            const int i = j * 32 + lane, s = w * CW + i;
            if (i < cw) {
                const unsigned long long key = vkey(cx[s] - lse, cid[s]);
                if (key >= K2) {
                    const int t = atomicAdd(&sh.ntop, 1);
                    if (t < LM_CUDA_SAMPLE_MAX_TOP) sh.tkey[t] = key, sh.tid[t] = cid[s];
                }
            }
        }
    } else {
        auto each_lp = [&](auto cb) {
#pragma unroll 1
            for (int i0 = 0; i0 < Ve; i0 += 8 * NT) {  // 8 loads in flight a thread
                float xs[8];
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const int i = i0 + j * NT + tid;
                    xs[j] = i < Ve && !(ban && ban[i]) ? __ldg(x + i) : NAN;
                }
#pragma unroll
                for (int j = 0; j < 8; j++)
                    cb(xs[j] == xs[j], xs[j] == xs[j] ? vkey(xs[j] - lse, i0 + j * NT + tid) : 0ull, 1ull);
            }
        };
        if (!radix_select<NT>(each_lp, 50, (unsigned long long)L, hist, sh, &K2)) K2 = 0;  // fewer valid ids than L: all
#pragma unroll 8
        for (int i = tid; i < Ve; i += NT) {
            const float xx = __ldg(x + i);
            if (xx != xx || (ban && ban[i])) continue;
            const unsigned long long key = vkey(xx - lse, i);
            if (key >= K2) {
                const int t = atomicAdd(&sh.ntop, 1);
                if (t < LM_CUDA_SAMPLE_MAX_TOP) sh.tkey[t] = key, sh.tid[t] = i;
            }
        }
    }
    __syncthreads();
    const int nt = min(sh.ntop, L);
    if (tid < nt) {  // rank by counting: keys are unique
        int rank = 0;
        for (int j = 0; j < nt; j++) rank += sh.tkey[j] > sh.tkey[tid];
        const int id = sh.tid[tid];
        a.top_ids[(size_t)r * L + rank] = id;
        a.top_lp[(size_t)r * L + rank] = __ldg(x + id) - lse;
    } else if (tid < L) {
        a.top_ids[(size_t)r * L + tid] = -1;
        a.top_lp[(size_t)r * L + tid] = -INFINITY;
    }
}

static int launched(void) { return (int)cudaGetLastError(); }

extern "C" void lm_cuda_sample_force_global(int on) { g_force_global = on; }
extern "C" void lm_cuda_sample_threads(int nt) { g_threads = nt == 512 ? 512 : 1024; }

extern "C" int lm_cuda_sample(const float *logits, size_t ldl, int n, int V, const int *params, int pw,
                              const unsigned char *banned, int *out, float *logprob, int n_top, int *top_ids,
                              float *top_lp, lm_cuda_stream st) {
    if (n <= 0) return launched();
    if (V < 1 || V > LM_CUDA_SAMPLE_MAX_V || pw < LM_CUDA_SAMPLE_WORDS || n_top < 0 ||
        n_top > LM_CUDA_SAMPLE_MAX_TOP || (n_top > 0 && (!top_ids || !top_lp)) || (size_t)V > ldl)
        return (int)cudaErrorInvalidValue;
    static int attr_set[16];  // the 184 KB of shared memory, once per device
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return launched();
    if (dev >= 16 || !attr_set[dev]) {
        if (cudaFuncSetAttribute(k_sample<1024, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_SMEM) ||
            cudaFuncSetAttribute(k_sample<1024, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_SMEM) ||
            cudaFuncSetAttribute(k_sample<512, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_SMEM) ||
            cudaFuncSetAttribute(k_sample<512, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_SMEM))
            return launched();
        if (dev < 16) attr_set[dev] = 1;
    }
    sample_args a;
    a.logits = logits, a.ldl = ldl, a.V = V;
    a.v4 = !((uintptr_t)logits & 15) && ldl % 4 == 0;
    a.params = params, a.pw = pw;
    a.banned = banned, a.ban4 = !((uintptr_t)banned & 3);
    a.out = out, a.logprob = logprob, a.n_top = n_top, a.top_ids = top_ids, a.top_lp = top_lp;
    a.force_global = g_force_global;
    if (g_threads == 512) {
        if (a.v4) k_sample<512, true><<<n, 512, SM_SMEM, st>>>(a);
        else k_sample<512, false><<<n, 512, SM_SMEM, st>>>(a);
    } else {
        if (a.v4) k_sample<1024, true><<<n, 1024, SM_SMEM, st>>>(a);
        else k_sample<1024, false><<<n, 1024, SM_SMEM, st>>>(a);
    }
    return launched();
}
