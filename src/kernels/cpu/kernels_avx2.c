// AVX2 + FMA + F16C kernels (same structure as kernels_avx512.c with 8-lane
// accumulators and 16 ymm registers). Reached only through the dispatcher.
//
// Reduction order of lm_matmul_rows: lane j of y[t][o]'s accumulator sums
// x[i]*w[o][i] for i = j, j+8, ... in increasing i (the ragged end zero-padded),
// then hsum8() in a fixed tree: a function of `in` only, whatever the tiling.
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd_avx2.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>


// Register tile 3 rows x 4 tokens = 12 accumulators + 3 weight vectors + 1 x
// vector of 16 ymm (4 x 3 spills; measured 3x4 ~1.7x faster on Zen 5). K
// blocking as in the AVX-512 file.
#ifndef LM_MM256_KC
#define LM_MM256_KC 512
#endif
#ifndef LM_MM256_RB
#define LM_MM256_RB 48  // a multiple of RMAX: no 1-row tiles inside a block
#endif
#ifndef LM_MM256_TB
#define LM_MM256_TB 24
#endif
#define RMAX 3
#define TMAX 4
#define PF_DIST 2048
#define KC LM_MM256_KC
#define RB LM_MM256_RB
#define TB LM_MM256_TB

static _Thread_local float tl_acc[RB * TB * 8] __attribute__((aligned(32)));

// See mk() in kernels_avx512.c: same contract with 8-lane accumulators.
static AI TGT void mk(const int R, const int T, const lm_dtype dt, const int pf, const float *x,
                      size_t ldx, const char *w, size_t wsb, int k0, int k1, float *am, size_t ars,
                      int init, int fin, float *y, size_t ldy, size_t yrs) {
    const size_t es = dt == LM_DT_F32 ? 4 : 2;
    __m256 acc[RMAX][TMAX];
#pragma GCC unroll 3
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[r][t] = init ? _mm256_setzero_ps() : _mm256_load_ps(am + r * ars + t * 8);
    int k = k0;
    for (; k + 8 <= k1; k += 8) {
        __m256 wv[RMAX];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) wv[r] = ld_w(w + r * wsb + k * es, dt);
        if (pf) {
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) _mm_prefetch(w + r * wsb + k * es + PF_DIST, _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 xv = _mm256_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (k < k1) {
        const __m256i m = tail_mask(k1 - k);
        __m256 wv[RMAX];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) wv[r] = ld_w_tail(w + r * wsb + k * es, dt, k1 - k);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 xv = _mm256_maskload_ps(x + t * ldx + k, m);
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 3
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            if (fin)
                y[t * ldy + r * yrs] = hsum8(acc[r][t]);
            else
                _mm256_store_ps(am + r * ars + t * 8, acc[r][t]);
        }
}

typedef void (*mk_fn)(const float *x, size_t ldx, const char *w, size_t wsb, int k0, int k1,
                      float *am, size_t ars, int init, int fin, float *y, size_t ldy, size_t yrs);

#define MK1(DT, NAME, R, T, PF, SFX)                                                           \
    static TGT void mk_##NAME##_##R##_##T##SFX(const float *x, size_t ldx, const char *w,       \
                                               size_t wsb, int k0, int k1, float *am,           \
                                               size_t ars, int init, int fin, float *y,         \
                                               size_t ldy, size_t yrs) {                        \
        mk(R, T, DT, PF, x, ldx, w, wsb, k0, k1, am, ars, init, fin, y, ldy, yrs);             \
    }
#define MKT(DT, NAME, R, PF, SFX)                                                              \
    MK1(DT, NAME, R, 1, PF, SFX) MK1(DT, NAME, R, 2, PF, SFX) MK1(DT, NAME, R, 3, PF, SFX)     \
    MK1(DT, NAME, R, 4, PF, SFX)
#define MKD(DT, NAME)                                                                          \
    MKT(DT, NAME, 1, 0, ) MKT(DT, NAME, 3, 0, ) MKT(DT, NAME, 1, 1, _pf) MKT(DT, NAME, 3, 1, _pf)
MKD(LM_DT_F32, f32)
MKD(LM_DT_F16, f16)
MKD(LM_DT_BF16, bf16)
#define ROW(NAME, R, SFX)                                                                      \
    {NULL, mk_##NAME##_##R##_1##SFX, mk_##NAME##_##R##_2##SFX, mk_##NAME##_##R##_3##SFX,       \
     mk_##NAME##_##R##_4##SFX}
// [prefetch][dtype][R == 3][T]; lm_dtype: F32 = 0, F16 = 1, BF16 = 2
static const mk_fn mk_tab[2][3][2][TMAX + 1] = {
    {{ROW(f32, 1, ), ROW(f32, 3, )},
     {ROW(f16, 1, ), ROW(f16, 3, )},
     {ROW(bf16, 1, ), ROW(bf16, 3, )}},
    {{ROW(f32, 1, _pf), ROW(f32, 3, _pf)},
     {ROW(f16, 1, _pf), ROW(f16, 3, _pf)},
     {ROW(bf16, 1, _pf), ROW(bf16, 3, _pf)}}};

#define MM_NAME lm_matmul_rows_avx2
#define VLEN 8
#include "matmul_driver.inc"

// ------------------------------------------------------------ small kernels ---

TGT void lm_to_f32_avx2(const void *src, lm_dtype dt, float *dst, size_t n) {
    if (dt == LM_DT_F32) {
        memmove(dst, src, n * 4);
        return;
    }
    const uint16_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, ld_w(s + i, dt));
    if (i < n)
        _mm256_maskstore_ps(dst + i, tail_mask((int)(n - i)), ld_w_tail(s + i, dt, (int)(n - i)));
}

TGT void lm_rmsnorm_avx2(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps) {
    __m256 ss = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        ss = _mm256_fmadd_ps(v, v, ss);
    }
    const int rem = n - i;
    if (rem > 0) {
        __m256 v = _mm256_maskload_ps(x + i, tail_mask(rem));
        ss = _mm256_fmadd_ps(v, v, ss);
    }
    const float scale = 1.0f / __builtin_sqrtf(hsum8(ss) / (float)(n > 0 ? n : 1) + eps);
    const __m256 sv = _mm256_set1_ps(scale);
    const size_t es = dt == LM_DT_F32 ? 4 : 2;
    const char *wp = w;
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv),
                                              ld_w(wp + (size_t)i * es, dt)));
    if (rem > 0) {
        const __m256i m = tail_mask(rem);
        _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(x + i, m), sv),
                                                    ld_w_tail(wp + (size_t)i * es, dt, rem)));
    }
}

TGT float lm_dot_f32_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    if (i < n) {
        const __m256i m = tail_mask(n - i);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
    }
    return hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

TGT void lm_axpy_f32_avx2(float *y, float a, const float *x, int n) {
    const __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    if (i < n) {
        const __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(av, _mm256_maskload_ps(x + i, m),
                                                      _mm256_maskload_ps(y + i, m)));
    }
}

// ------------------------------------------------------- softmax helpers ---

TGT float lm_max_f32_avx2(const float *x, int n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    }
    m0 = _mm256_max_ps(m0, m1);
    float lanes[8], mx;
    _mm256_storeu_ps(lanes, m0);
    mx = lanes[0];
    for (int k = 1; k < 8; k++) mx = lanes[k] > mx ? lanes[k] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

TGT double lm_exp_sum_avx2(float *y, const float *x, int n, float mx, float scale) {
    const __m256 mv = _mm256_set1_ps(mx), sv = _mm256_set1_ps(scale);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    double total = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = exp_neg8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), sv));
        __m256 b = exp_neg8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv), sv));
        _mm256_storeu_ps(y + i, a);
        _mm256_storeu_ps(y + i + 8, b);
        s0 = _mm256_add_ps(s0, a);
        s1 = _mm256_add_ps(s1, b);
        if ((i & 4095) == 4080) {  // flush the float lanes into the double total now and then
            total += hsum8(_mm256_add_ps(s0, s1));
            s0 = s1 = _mm256_setzero_ps();
        }
    }
    total += hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) total += (y[i] = expf((x[i] - mx) * scale));
    return total;
}
