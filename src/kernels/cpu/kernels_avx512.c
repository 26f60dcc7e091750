// AVX-512 (F+BW+VL, FMA, F16C) kernels. The project is built without -march,
// so every function here carries a target attribute and is only reached
// through the dispatcher in kernels.c after a CPU check.
//
// lm_matmul_rows: every output y[t][o] owns one 16-lane fp32 accumulator;
// lane j sums x[i]*w[o][i] for i = j, j+16, j+32, ... in increasing i (the
// ragged end through a zero-filling masked load), then hsum16() reduces the
// lanes in a fixed tree. That order depends on `in` only, so the GEMV path,
// the register tiles and the K-blocked path (which parks accumulators in a
// scratch buffer between K blocks, bit-exactly) all give identical bits.
#include "kernels/cpu/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))
#define AI __attribute__((always_inline)) inline

// Tiling (overridable for the kernel lab). Register tile RMAX rows x TMAX
// tokens = 24 accumulators + 4 weight vectors + 1 x vector of 32 zmm. A K
// block of KC elements keeps the RB x KC weight block and a 6 x KC x tile in
// L1/L2 while TB tokens reuse each weight block read from memory.
#ifndef LM_MM512_KC
#define LM_MM512_KC 512
#endif
#ifndef LM_MM512_RB
#define LM_MM512_RB 32
#endif
#ifndef LM_MM512_TB
#define LM_MM512_TB 48
#endif
#define RMAX 4
#define TMAX 6
#define PF_DIST 2048
#define KC LM_MM512_KC
#define RB LM_MM512_RB
#define TB LM_MM512_TB

// Accumulators parked between K blocks: [RB rows][TB tokens][16 lanes].
static _Thread_local float tl_acc[RB * TB * 16] __attribute__((aligned(64)));

// 16 weights from p as fp32 (bf16 -> f32 is a 16-bit shift).
static AI TGT __m512 ld_w(const void *p, lm_dtype dt) {
    if (dt == LM_DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    if (dt == LM_DT_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_loadu_ps(p);
}

// Same, lanes outside m read as 0 (masked loads never touch those bytes).
static AI TGT __m512 ld_w_mask(const void *p, lm_dtype dt, __mmask16 m) {
    if (dt == LM_DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    if (dt == LM_DT_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_maskz_loadu_ps(m, p);
}

// Fixed-order horizontal sum (not _mm512_reduce_add_ps, whose order is up to
// the compiler): 16 -> 8 -> 4 -> 2 -> 1.
static AI TGT float hsum16(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

// Register tile: R rows (w, byte stride wsb) x T tokens (x, stride ldx) over
// elements [k0,k1). k0 is a multiple of 16; k1 is too unless k1 == in. The
// accumulators start at zero (init) or come from am (row stride ars floats,
// token stride 16); at the end they are reduced into y (row r of the tile at
// y + r*yrs) when fin, else parked in am. pf: prefetch each weight row
// PF_DIST bytes ahead (the hardware prefetcher alone leaves DRAM idle when
// several tokens share each weight line).
static AI TGT void mk(const int R, const int T, const lm_dtype dt, const int pf, const float *x,
                      size_t ldx, const char *w, size_t wsb, int k0, int k1, float *am, size_t ars,
                      int init, int fin, float *y, size_t ldy, size_t yrs) {
    const size_t es = dt == LM_DT_F32 ? 4 : 2;
    __m512 acc[RMAX][TMAX];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++)
            acc[r][t] = init ? _mm512_setzero_ps() : _mm512_load_ps(am + r * ars + t * 16);
    int k = k0;
    for (; k + 16 <= k1; k += 16) {
        __m512 wv[RMAX];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = ld_w(w + r * wsb + k * es, dt);
        if (pf) {  // one line per row per chunk is redundant, but cheap next to DRAM
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) _mm_prefetch(w + r * wsb + k * es + PF_DIST, _MM_HINT_T0);
        }
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (k < k1) {
        __mmask16 m = (__mmask16)((1u << (k1 - k)) - 1);
        __m512 wv[RMAX];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = ld_w_mask(w + r * wsb + k * es, dt, m);
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            if (fin)
                y[t * ldy + r * yrs] = hsum16(acc[r][t]);
            else
                _mm512_store_ps(am + r * ars + t * 16, acc[r][t]);
        }
}

typedef void (*mk_fn)(const float *x, size_t ldx, const char *w, size_t wsb, int k0, int k1,
                      float *am, size_t ars, int init, int fin, float *y, size_t ldy, size_t yrs);

// One specialised tile per (prefetch, dtype, R in {1,4}, T in 1..6).
#define MK1(DT, NAME, R, T, PF, SFX)                                                           \
    static TGT void mk_##NAME##_##R##_##T##SFX(const float *x, size_t ldx, const char *w,       \
                                               size_t wsb, int k0, int k1, float *am,           \
                                               size_t ars, int init, int fin, float *y,         \
                                               size_t ldy, size_t yrs) {                        \
        mk(R, T, DT, PF, x, ldx, w, wsb, k0, k1, am, ars, init, fin, y, ldy, yrs);             \
    }
#define MKT(DT, NAME, R, PF, SFX)                                                              \
    MK1(DT, NAME, R, 1, PF, SFX) MK1(DT, NAME, R, 2, PF, SFX) MK1(DT, NAME, R, 3, PF, SFX)     \
    MK1(DT, NAME, R, 4, PF, SFX) MK1(DT, NAME, R, 5, PF, SFX) MK1(DT, NAME, R, 6, PF, SFX)
#define MKD(DT, NAME)                                                                          \
    MKT(DT, NAME, 1, 0, ) MKT(DT, NAME, 4, 0, ) MKT(DT, NAME, 1, 1, _pf) MKT(DT, NAME, 4, 1, _pf)
MKD(LM_DT_F32, f32)
MKD(LM_DT_F16, f16)
MKD(LM_DT_BF16, bf16)
#define ROW(NAME, R, SFX)                                                                      \
    {NULL, mk_##NAME##_##R##_1##SFX, mk_##NAME##_##R##_2##SFX, mk_##NAME##_##R##_3##SFX,       \
     mk_##NAME##_##R##_4##SFX, mk_##NAME##_##R##_5##SFX, mk_##NAME##_##R##_6##SFX}
// [prefetch][dtype][R == 4][T]; lm_dtype: F32 = 0, F16 = 1, BF16 = 2
static const mk_fn mk_tab[2][3][2][TMAX + 1] = {
    {{ROW(f32, 1, ), ROW(f32, 4, )},
     {ROW(f16, 1, ), ROW(f16, 4, )},
     {ROW(bf16, 1, ), ROW(bf16, 4, )}},
    {{ROW(f32, 1, _pf), ROW(f32, 4, _pf)},
     {ROW(f16, 1, _pf), ROW(f16, 4, _pf)},
     {ROW(bf16, 1, _pf), ROW(bf16, 4, _pf)}}};

#define MM_NAME lm_matmul_rows_avx512
#define VLEN 16
#include "matmul_driver.inc"

// ------------------------------------------------------------ small kernels ---

TGT void lm_to_f32_avx512(const void *src, lm_dtype dt, float *dst, size_t n) {
    if (dt == LM_DT_F32) {
        memmove(dst, src, n * 4);
        return;
    }
    const uint16_t *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ld_w(s + i, dt));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, ld_w_mask(s + i, dt, m));
    }
}

TGT void lm_rmsnorm_avx512(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps) {
    __m512 ss = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        ss = _mm512_fmadd_ps(v, v, ss);
    }
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    if (i < n) {
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        ss = _mm512_fmadd_ps(v, v, ss);
    }
    const float scale = 1.0f / __builtin_sqrtf(hsum16(ss) / (float)(n > 0 ? n : 1) + eps);
    const __m512 sv = _mm512_set1_ps(scale);
    const size_t es = dt == LM_DT_F32 ? 4 : 2;
    const char *wp = w;
    for (i = 0; i + 16 <= n; i += 16)  // x*scale*w in the reference's order
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sv),
                                              ld_w(wp + (size_t)i * es, dt)));
    if (i < n)
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv),
                                                      ld_w_mask(wp + (size_t)i * es, dt, m)));
}

TGT float lm_dot_f32_avx512(const float *a, const float *b, int n) {
    // four accumulators hide the FMA latency (head_dim 128 = 8 vectors)
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return hsum16(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

TGT void lm_axpy_f32_avx512(float *y, float a, const float *x, int n) {
    const __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}

// ------------------------------------------------------- softmax helpers ---

TGT float lm_max_f32_avx512(const float *x, int n) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
    }
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

// exp(x) for x <= 0, as exp_neg8 in simd_avx2.h.
static AI TGT __m512 exp_neg16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f);
    __mmask16 ok = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_max_ps(x, lo);
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(fx), 23);
    y = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(y), e));
    return _mm512_maskz_mov_ps(ok, y);
}

TGT double lm_exp_sum_avx512(float *y, const float *x, int n, float mx, float scale) {
    const __m512 mv = _mm512_set1_ps(mx), sv = _mm512_set1_ps(scale);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    double total = 0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = exp_neg16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv), sv));
        __m512 b = exp_neg16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv), sv));
        _mm512_storeu_ps(y + i, a);
        _mm512_storeu_ps(y + i + 16, b);
        s0 = _mm512_add_ps(s0, a);
        s1 = _mm512_add_ps(s1, b);
        if ((i & 4095) == 4064) {  // flush the float lanes into the double total now and then
            total += hsum16(_mm512_add_ps(s0, s1));
            s0 = s1 = _mm512_setzero_ps();
        }
    }
    total += hsum16(_mm512_add_ps(s0, s1));
    for (; i < n; i++) total += (y[i] = expf((x[i] - mx) * scale));
    return total;
}
