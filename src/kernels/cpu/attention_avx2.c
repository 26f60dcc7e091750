// AVX2 paged attention (contract in kernels.h, scalar reference in attention.c).
//
// The positions a task reads are taken in chunks of CH (64) positions, over
// as many pages as that spans (row pointers per position, so a page size is
// only an address computation). For every query token and group of up to 4
// query heads, a chunk goes through three steps:
//  1. scores in register tiles of 4 heads x 2 positions: 8 accumulators, each
//     K row widened once per tile and used by 4 heads; the 8 dot products of
//     a tile are reduced together (reduce8) into one vector whose lanes are
//     (head r, position i) at 2r + i, and stored in that order;
//  2. the online-softmax update on those vectors directly: the per-head
//     running max and sum live in the same pair layout [m0 m0 m1 m1 ...],
//     so max, exp and sum are vector operations over the 4 heads at once;
//  3. V accumulated in tiles of 4 heads x 16 dims held in registers across
//     the chunk's positions (each V row widened once per tile).
// The next chunk's K and V rows are prefetched during step 1: pages are
// scattered through the pool, so the hardware prefetcher cannot guess them.
// Per-chunk costs (softmax, loading and storing the V accumulators) are
// spread over CH positions instead of one page.
//
// Widening bf16: 16 values are one 32-byte load; the odd ones are that load
// ANDed with 0xffff0000 in each 32-bit lane, the even ones the load shifted
// left by 16 (2 ALU ops per 16 values instead of 2 loads + 4 ops through
// vpmovzxwd). The lanes come out as [even | odd], so the q copy and the V
// accumulators are kept in that order per block of 16 (perm16) and put back
// in order when the output is written. f32 pages keep the natural order.
//
// Decode does 2 * group flops per KV byte (4 for Mixtral's group of 4): on a
// 2-core Zen 3 (~200 GFLOP/s AVX2) compute allows ~50 GB/s of KV, above what
// DRAM delivers, so the FMAs have to run near their peak to stay memory-bound.
//
// Batch invariance: a score is lane-wise FMAs over head_dim in steps of 8 and
// then reduce8()'s tree (the same for every lane); the softmax reductions
// over a chunk depend only on the positions' parity; V sums run over
// positions in order; the per-head state advances chunk by chunk at fixed
// positions (multiples of CH). Nothing depends on the number of tokens in the
// task or on the other heads of a tile.
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd_avx2.h"

#include <math.h>

#define RT 4            // query heads per tile
// Prefetch into L2 only (T2): measured 10-20% faster than T0 on Zen 3, the
// rows are read once and need not displace q and the accumulators from L1.
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T2
#endif
#define CH LM_ATTN_CHUNK  // positions per chunk (kernels.h)

// 16 values of a K or V row as two fp32 vectors (see above for the order).
static AI TGT void ld16(const char *p, const lm_dtype dt, __m256 *lo, __m256 *hi) {
    if (dt == LM_DT_BF16) {
        __m256i x = _mm256_loadu_si256((const __m256i *)p);
        *lo = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
        *hi = _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32((int)0xffff0000u)));
    } else {
        *lo = _mm256_loadu_ps((const float *)p);
        *hi = _mm256_loadu_ps((const float *)p + 8);
    }
}

// The first rem (< 16) values of a row, the rest zero.
static AI TGT void ld16_tail(const char *p, const lm_dtype dt, int rem, __m256 *lo, __m256 *hi) {
    float buf[16] __attribute__((aligned(32))) = {0};
    memcpy(buf, p, (size_t)rem * (dt == LM_DT_F32 ? 4 : 2));
    ld16((const char *)buf, dt, lo, hi);
}

// Where value d of a head row lives in the padded scratch rows (q, acc).
static inline int perm16(lm_dtype dt, int d) {
    if (dt != LM_DT_BF16) return d;
    int b = d & ~15, i = d & 15;
    return b + (i & 1 ? 8 + i / 2 : i / 2);
}

// Lane i of the result is the sum of v[i]'s lanes in the tree
// ((0+1)+(2+3)) + ((4+5)+(6+7)).
static AI TGT __m256 reduce8(const __m256 v[8]) {
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Keeps a value in a register: stops the compiler from folding a reused load
// into every FMA that reads it (which made the score loop load-bound).
#define IN_REG(x) __asm__("" : "+x"(x))

// One score tile: lanes 2r + i of the result are scale * (q_r . k_i) for the
// rows k0 (i = 0) and k1 (i = 1; J = 1 leaves lane 1 of every head at 0).
// q holds R rows of hdp floats (zero-padded, a multiple of 16).
static AI TGT __m256 score_tile(const int R, const int J, const lm_dtype dt, const float *q, int hdp,
                                const char *k0, const char *k1, int hd, __m256 scale) {
    const size_t es = dt == LM_DT_F32 ? 4 : 2;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 16) {
        __m256 ka0, ka1, kb0 = _mm256_setzero_ps(), kb1 = kb0;
        if (d + 16 <= hd) {
            ld16(k0 + d * es, dt, &ka0, &ka1);
            if (J > 1) ld16(k1 + d * es, dt, &kb0, &kb1);
        } else {
            ld16_tail(k0 + d * es, dt, hd - d, &ka0, &ka1);
            if (J > 1) ld16_tail(k1 + d * es, dt, hd - d, &kb0, &kb1);
        }
        IN_REG(ka0);
        IN_REG(ka1);
        IN_REG(kb0);
        IN_REG(kb1);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256 q0 = _mm256_load_ps(q + (size_t)r * hdp + d), q1 = _mm256_load_ps(q + (size_t)r * hdp + d + 8);
            IN_REG(q0);
            IN_REG(q1);
            acc[2 * r] = _mm256_fmadd_ps(q1, ka1, _mm256_fmadd_ps(q0, ka0, acc[2 * r]));
            if (J > 1) acc[2 * r + 1] = _mm256_fmadd_ps(q1, kb1, _mm256_fmadd_ps(q0, kb0, acc[2 * r + 1]));
        }
    }
    return _mm256_mul_ps(reduce8(acc), scale);
}

// Step 1 for positions [0, lim) of the chunk: st[j / 2] = tile (j, j + 1);
// lanes of a missing odd position are -inf (they drop out of the softmax).
static AI TGT void scores(const int R, const lm_dtype dt, const float *q, int hdp, const char *const *kp, int hd,
                          float scale, __m256 *st, int lim, const char *const *pfk, const char *const *pfv,
                          size_t row) {
    const __m256 sc = _mm256_set1_ps(scale);
    int j = 0;
    for (; j + 2 <= lim; j += 2) {
        if (pfk)  // the next chunk's rows j, j + 1 (K and V)
            for (int i = 0; i < 2; i++)
                for (size_t o = 0; o < row; o += 64) _mm_prefetch(pfk[j + i] + o, PF_HINT), _mm_prefetch(pfv[j + i] + o, PF_HINT);
        st[j / 2] = score_tile(R, 2, dt, q, hdp, kp[j], kp[j + 1], hd, sc);
    }
    if (j < lim) {
        const __m256 odd = _mm256_castsi256_ps(_mm256_setr_epi32(0, -1, 0, -1, 0, -1, 0, -1));
        st[j / 2] = _mm256_blendv_ps(score_tile(R, 1, dt, q, hdp, kp[j], kp[j], hd, sc), _mm256_set1_ps(-INFINITY), odd);
    }
}

// Step 2: m, l (pair layout) advance over the chunk's scores, which become
// p = exp(s - m_new); corr = exp(m_old - m_new). Returns whether any head
// has corr != 1 (the V accumulators need rescaling).
static AI TGT int softmax(float *m, float *l, float *corr, __m256 *st, int lim) {
    const int n = (lim + 1) / 2;
    __m256 mo = _mm256_load_ps(m), mx = mo;
    for (int k = 0; k < n; k++) mx = _mm256_max_ps(mx, st[k]);
    mx = _mm256_max_ps(mx, _mm256_permute_ps(mx, 0xB1));  // max of each (even, odd) pair
    __m256 c = exp_neg8(_mm256_sub_ps(mo, mx)), sum = _mm256_setzero_ps();
    for (int k = 0; k < n; k++) {
        __m256 e = exp_neg8(_mm256_sub_ps(st[k], mx));
        st[k] = e;
        sum = _mm256_add_ps(sum, e);
    }
    sum = _mm256_add_ps(sum, _mm256_permute_ps(sum, 0xB1));
    _mm256_store_ps(l, _mm256_fmadd_ps(_mm256_load_ps(l), c, sum));
    _mm256_store_ps(m, mx);
    _mm256_store_ps(corr, c);
    return _mm256_movemask_ps(_mm256_cmp_ps(c, _mm256_set1_ps(1.0f), _CMP_NEQ_UQ)) != 0;
}

// Step 3 for heads r < R and the 16 dims from d (the first `rem` only, if
// rem > 0): acc_r = corr_r * acc_r + sum_{j < lim} p_r[j] * v_j, in j order.
// p is the chunk's softmax output in tile order: p_r[j] = p[(j / 2) * 8 + 2r + j % 2].
static AI TGT void vsum(const int R, const lm_dtype dt, float *acc, int hdp, const float *p,
                        const char *const *vp, int d, int rem, int lim, const float *corr, int rescale) {
    const size_t es = dt == LM_DT_F32 ? 4 : 2;
    __m256 a[RT][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int b = 0; b < 2; b++) {
            a[r][b] = _mm256_load_ps(acc + (size_t)r * hdp + d + 8 * b);
            if (rescale) a[r][b] = _mm256_mul_ps(a[r][b], _mm256_broadcast_ss(corr + 2 * r));
        }
    for (int j = 0; j < lim; j += 2, p += 8) {  // a position pair per iteration: p advances by one tile
#pragma GCC unroll 2
        for (int i = 0; i < 2; i++) {
            if (i && j + 1 == lim) break;
            __m256 v0, v1;
            if (rem) ld16_tail(vp[j + i] + (size_t)d * es, dt, rem, &v0, &v1);
            else ld16(vp[j + i] + (size_t)d * es, dt, &v0, &v1);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256 pr = _mm256_broadcast_ss(p + 2 * r + i);
                a[r][0] = _mm256_fmadd_ps(pr, v0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(pr, v1, a[r][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int b = 0; b < 2; b++) _mm256_store_ps(acc + (size_t)r * hdp + d + 8 * b, a[r][b]);
}

// Steps 1-3 for one token and one group of R heads over one chunk.
static AI TGT void chunk_heads(const int R, const lm_dtype dt, const float *q, float *acc, int hdp, float *m,
                               float *l, float *corr, __m256 *st, const char *const *kp, const char *const *vp,
                               int hd, float scale, int lim, const char *const *pfk, const char *const *pfv,
                               size_t row) {
    scores(R, dt, q, hdp, kp, hd, scale, st, lim, pfk, pfv, row);
    int rescale = softmax(m, l, corr, st, lim);
    for (int d = 0; d < hd; d += 16)
        vsum(R, dt, acc, hdp, (const float *)st, vp, d, d + 16 <= hd ? 0 : hd - d, lim, corr, rescale);
}

static AI TGT void attn(const lm_attn_task *a, const lm_dtype dt) {
    const int hd = a->head_dim, ps = a->page_size, G = a->group, nq = a->n_q, NG = (G + RT - 1) / RT;
    const size_t es = dt == LM_DT_F32 ? 4 : 2, row = (size_t)hd * es;
    const size_t head_bytes = (size_t)ps * row, page_bytes = 2 * (size_t)a->n_kv_heads * head_bytes;
    const size_t v_off = (size_t)a->n_kv_heads * head_bytes;
    lm_attn_ws w = lm_attn_ws_at(a->scratch, nq, G, hd, ps);
    const int hdp = w.hdp;
    const float scale = 1.0f / sqrtf((float)hd);
    __m256 *st = (__m256 *)w.s;  // [CH / 2] score tiles
    int max_pos = 0, t_last = 0;
    for (int t = 0; t < nq; t++)
        if (a->pos[t] > max_pos) max_pos = a->pos[t], t_last = t;
    for (int r = 0; r < nq * NG * 8; r++) w.m[r] = -INFINITY, w.l[r] = 0;
    for (int r = 0; r < nq * G; r++) {
        const float *src = a->q + (size_t)(r / G) * a->q_stride + (size_t)(r % G) * hd;
        float *qr = w.q + (size_t)r * hdp, *ar = w.acc + (size_t)r * hdp;
        for (int d = 0; d < hdp; d++) qr[d] = ar[d] = 0;
        for (int d = 0; d < hd; d++) qr[perm16(dt, d)] = src[d];
    }
    // row pointers of this chunk and the next: [2][K|V][CH]
    const char *rows[2][2][CH];
    const char *base = (const char *)a->kv + (size_t)a->kv_head * head_bytes;
    for (int c0 = 0, cur = 0; c0 <= max_pos; c0 += CH, cur ^= 1) {
        for (int h = c0 == 0 ? 0 : CH; h <= CH; h += CH) {  // fill this chunk (first time) and the next
            int b = h ? cur ^ 1 : cur, p = c0 + h, end = p + CH <= max_pos + 1 ? p + CH : max_pos + 1;
            for (int j = 0; p < end;) {  // page by page: no division per position
                const char *k = base + (size_t)a->pages[p / ps] * page_bytes + (size_t)(p % ps) * row;
                for (int i = p % ps; i < ps && p < end; i++, p++, j++, k += row) rows[b][0][j] = k, rows[b][1][j] = k + v_off;
            }
        }
        const char *const *kp = rows[cur][0], *const *vp = rows[cur][1];
        int next_n = max_pos + 1 - (c0 + CH);  // positions of the next chunk
        for (int t = 0; t < nq; t++) {
            int lim = a->pos[t] + 1 - c0;  // positions of this chunk the token sees
            if (lim <= 0) continue;
            if (lim > CH) lim = CH;
            // prefetch the next chunk once, with the token that reads it all,
            // only as far as it exists
            int pf = t == t_last && next_n > 0;
            for (int g = 0; g < NG; g++) {
                int R = G - g * RT < RT ? G - g * RT : RT, r0 = t * G + g * RT;
                const float *q = w.q + (size_t)r0 * hdp;
                float *acc = w.acc + (size_t)r0 * hdp, *m = w.m + (size_t)(t * NG + g) * 8, *l = w.l + (size_t)(t * NG + g) * 8;
                int plim = pf && g == 0 ? (next_n < lim ? next_n : lim) : 0;
                const char *const *pfk = rows[cur ^ 1][0], *const *pfv = rows[cur ^ 1][1];
                // the prefetch rides on the score tiles when the next chunk is
                // whole; a last, partial one is prefetched at once
                switch (R) {
#define CASE(RR)                                                                                                   \
    case RR:                                                                                                       \
        if (plim == lim)                                                                                           \
            chunk_heads(RR, dt, q, acc, hdp, m, l, w.corr, st, kp, vp, hd, scale, lim, pfk, pfv, row);             \
        else {                                                                                                     \
            for (int j = 0; j < plim; j++)                                                                         \
                for (size_t o = 0; o < row; o += 64)                                                               \
                    _mm_prefetch(pfk[j] + o, PF_HINT), _mm_prefetch(pfv[j] + o, PF_HINT);                  \
            chunk_heads(RR, dt, q, acc, hdp, m, l, w.corr, st, kp, vp, hd, scale, lim, NULL, NULL, row);           \
        }                                                                                                          \
        break;
                    CASE(1)
                    CASE(2)
                    CASE(3)
                    CASE(4)
#undef CASE
                }
            }
        }
    }
    for (int r = 0; r < nq * G; r++) {
        int t = r / G, g = r % G;
        float inv = 1.0f / w.l[(size_t)(t * NG + g / RT) * 8 + 2 * (g % RT)];
        float *dst = a->out + (size_t)t * a->out_stride + (size_t)g * hd;
        const float *ar = w.acc + (size_t)r * hdp;
        for (int d = 0; d < hd; d++) dst[d] = ar[perm16(dt, d)] * inv;
    }
}

static TGT void attn_bf16(const lm_attn_task *a) { attn(a, LM_DT_BF16); }
static TGT void attn_f32(const lm_attn_task *a) { attn(a, LM_DT_F32); }

TGT void lm_attn_paged_avx2(const lm_attn_task *a) {
    switch (a->kv_dt) {
    case LM_DT_BF16: attn_bf16(a); break;
    case LM_DT_F32: attn_f32(a); break;
    default: lm_attn_paged_ref(a); break;
    }
}
