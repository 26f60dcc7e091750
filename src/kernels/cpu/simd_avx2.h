// AVX2 helpers shared by the AVX2 kernel files (kernels_avx2.c,
// attention_avx2.c): loads that widen bf16/f16 to fp32, ragged tails, a fixed
// horizontal-sum tree and a vector exp. Static inline: each includer gets its
// own copy, compiled for AVX2+FMA+F16C through the target attribute.
#ifndef LM_KERNELS_CPU_SIMD_AVX2_H
#define LM_KERNELS_CPU_SIMD_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "util/dtype.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define AI __attribute__((always_inline)) inline

static AI TGT __m256 ld_w(const void *p, lm_dtype dt) {
    if (dt == LM_DT_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    if (dt == LM_DT_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    return _mm256_loadu_ps(p);
}

// The first `rem` (< 8) weights, the rest zero: AVX2 has no 16-bit masked
// load, so go through a small zeroed buffer.
static AI TGT __m256 ld_w_tail(const void *p, lm_dtype dt, int rem) {
    float buf[8] __attribute__((aligned(32))) = {0};
    memcpy(buf, p, (size_t)rem * (dt == LM_DT_F32 ? 4 : 2));
    return ld_w(buf, dt);
}

static const int32_t mask_src[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static AI TGT __m256i tail_mask(int rem) {  // lanes < rem set
    return _mm256_loadu_si256((const __m256i *)(mask_src + 8 - rem));
}

static AI TGT float hsum8(__m256 v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

// exp(x) for x <= 0 (Cephes' expf: range reduction by ln 2, degree-6
// polynomial, 2^n by exponent bits); below -87.3 the result is 0.
static AI TGT __m256 exp_neg8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(fx), 23);
    y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), e));
    return _mm256_andnot_ps(under, y);
}

#endif
