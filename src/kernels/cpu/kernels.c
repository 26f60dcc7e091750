// CPU kernels: scalar references, dtype conversions and the run-time ISA
// dispatcher. The SIMD paths live in kernels_avx2.c / kernels_avx512.c; they
// are compiled with per-function target attributes (the project builds
// without -march) and only ever reached through the table chosen here.
#include "kernels/cpu/kernels.h"

#include <cpuid.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------ conversions ---

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float lm_bf16_to_f32(uint16_t v) { return f32_from_bits((uint32_t)v << 16); }

uint16_t lm_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    // NaN: keep sign and top payload bits, set the quiet bit so that a payload
    // living only in the dropped low bits cannot turn into infinity.
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);  // round to nearest, ties to even; overflow -> inf
    return (uint16_t)(u >> 16);
}

float lm_f16_to_f32(uint16_t v) {
    uint32_t s = (uint32_t)(v & 0x8000) << 16, e = (v >> 10) & 0x1f, m = v & 0x3ff;
    if (e == 0x1f) return f32_from_bits(s | 0x7f800000u | (m << 13));  // inf / NaN (payload kept)
    if (e) return f32_from_bits(s | ((e + 112) << 23) | (m << 13));
    if (!m) return f32_from_bits(s);  // +-0
    // subnormal m * 2^-24: normalise into an f32 normal (exact)
    e = 113;
    while (!(m & 0x400)) {
        m <<= 1;
        e--;
    }
    return f32_from_bits(s | (e << 23) | ((m & 0x3ff) << 13));
}

uint16_t lm_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) {  // NaN: keep the top payload bits, never become inf
        uint16_t m = (uint16_t)((u >> 13) & 0x3ff);
        return (uint16_t)(sign | 0x7c00 | (m ? m : 0x200));
    }
    if (u >= 0x47800000u) return sign | 0x7c00;  // >= 2^16: inf (65520..65536 round up below)
    if (u >= 0x38800000u) {                      // normal half
        u += 0xc8000fffu + ((u >> 13) & 1);      // rebias exponent (-112 << 23), RNE on 13 bits
        return (uint16_t)(sign | (u >> 13));     // a carry may give 0x7c00 = inf: correct
    }
    if (u < 0x33000000u) return sign;  // <= 2^-25 rounds to zero (2^-25 is a tie to even 0)
    // subnormal half: value = m * 2^(e-150), unit 2^-24, so drop (126 - e) bits, RNE
    uint32_t e = u >> 23, m = (u & 0x7fffffu) | 0x800000u, sh = 126 - e;
    uint32_t r = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
    if (rem > half || (rem == half && (r & 1))) r++;  // r == 0x400 is the smallest normal
    return (uint16_t)(sign | r);
}

// ------------------------------------------------------- scalar references ---

static inline float w_at(const void *W, lm_dtype dt, size_t idx) {
    switch (dt) {
    case LM_DT_BF16: return lm_bf16_to_f32(((const uint16_t *)W)[idx]);
    case LM_DT_F16: return lm_f16_to_f32(((const uint16_t *)W)[idx]);
    default: return ((const float *)W)[idx];
    }
}

void lm_matmul_rows_ref(const float *x, int n, int ldx, const void *W, lm_dtype dt,
                        size_t w_stride, int in, float *y, int ldy, int o0, int o1) {
    if ((unsigned)dt > LM_DT_BF16) return;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        for (int o = o0; o < o1; o++) {
            size_t row = (size_t)o * w_stride;
            float acc = 0.0f;
            for (int i = 0; i < in; i++) acc += xt[i] * w_at(W, dt, row + i);
            y[(size_t)t * ldy + o] = acc;
        }
    }
}

void lm_to_f32_ref(const void *src, lm_dtype dt, float *dst, size_t n) {
    if (dt == LM_DT_F32) {
        memmove(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = w_at(src, dt, i);
}

// The sum of squares is accumulated in double: the reference is the oracle,
// and the SIMD paths (fp32, 8/16 lanes) are compared against it.
void lm_rmsnorm_ref(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = 1.0f / sqrtf((float)(ss / (n > 0 ? n : 1)) + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * scale * w_at(w, dt, (size_t)i);
}

float lm_dot_f32_ref(const float *a, const float *b, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

void lm_axpy_f32_ref(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

float lm_max_f32_ref(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

double lm_exp_sum_ref(float *y, const float *x, int n, float mx, float scale) {
    double total = 0;
    for (int i = 0; i < n; i++) total += (y[i] = expf((x[i] - mx) * scale));
    return total;
}

// Not hot (one pass over the expert intermediate): a single scalar version
// for every ISA, so all paths agree exactly.
void lm_swiglu(float *h, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// ------------------------------------------------------------- dispatcher ---

typedef struct ktab {
    lm_isa isa;
    void (*matmul)(const float *, int, int, const void *, lm_dtype, size_t, int, float *, int,
                   int, int);
    void (*to_f32)(const void *, lm_dtype, float *, size_t);
    void (*rmsnorm)(float *, const float *, const void *, lm_dtype, int, float);
    float (*dot)(const float *, const float *, int);
    void (*axpy)(float *, float, const float *, int);
    float (*max)(const float *, int);
    double (*exp_sum)(float *, const float *, int, float, float);
    void (*attn)(const lm_attn_task *);
} ktab;

static const ktab tab_scalar = {LM_ISA_SCALAR,  lm_matmul_rows_ref, lm_to_f32_ref,  lm_rmsnorm_ref,
                                lm_dot_f32_ref, lm_axpy_f32_ref,    lm_max_f32_ref, lm_exp_sum_ref, lm_attn_paged_ref};
static const ktab tab_avx2 = {LM_ISA_AVX2,     lm_matmul_rows_avx2, lm_to_f32_avx2,  lm_rmsnorm_avx2,
                              lm_dot_f32_avx2, lm_axpy_f32_avx2,    lm_max_f32_avx2, lm_exp_sum_avx2, lm_attn_paged_avx2};
static const ktab tab_avx512 = {LM_ISA_AVX512,     lm_matmul_rows_avx512, lm_to_f32_avx512,  lm_rmsnorm_avx512,
                                lm_dot_f32_avx512, lm_axpy_f32_avx512,    lm_max_f32_avx512, lm_exp_sum_avx512, lm_attn_paged_avx2};

// Published with release/acquire so that a thread that sees the pointer sees
// a complete table; re-initialising swaps the whole table atomically.
static _Atomic(const ktab *) g_tab;

int lm_cpu_isa_supported(lm_isa isa) {
    __builtin_cpu_init();
    unsigned a, b, c = 0, d;
    // clang 14 has no __builtin_cpu_supports("f16c"): read CPUID.1:ECX directly
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    switch (isa) {
    case LM_ISA_SCALAR: return 1;
    case LM_ISA_AVX2: return avx2;
    case LM_ISA_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    }
    return 0;
}

static const ktab *tab_for(lm_isa isa) {
    return isa == LM_ISA_AVX512 ? &tab_avx512 : isa == LM_ISA_AVX2 ? &tab_avx2 : &tab_scalar;
}

static lm_isa best_isa(int force) {
    int top = LM_ISA_AVX512;
    if (force >= 0 && force < top) top = force;
    for (int i = top; i > LM_ISA_SCALAR; i--)
        if (lm_cpu_isa_supported((lm_isa)i)) return (lm_isa)i;
    return LM_ISA_SCALAR;
}

// LM_CPU_ISA=scalar|avx2|avx512 overrides the automatic choice (debugging,
// comparing paths inside a full run); -1 when unset or unknown.
static int env_isa(void) {
    const char *env = getenv("LM_CPU_ISA");
    for (int i = 0; env && i <= LM_ISA_AVX512; i++)
        if (!strcmp(env, lm_isa_name((lm_isa)i))) return i;
    return -1;
}

// force < 0: best available (or LM_CPU_ISA). A forced ISA the CPU lacks
// falls back to the best one below it.
lm_isa lm_cpu_kernels_init(int force) {
    lm_isa isa = best_isa(force < 0 ? env_isa() : force);
    atomic_store_explicit(&g_tab, tab_for(isa), memory_order_release);
    return isa;
}

// Lazy init for callers that never called lm_cpu_kernels_init: the CAS makes
// sure a racing explicit init is not overwritten by the automatic choice.
static const ktab *tab(void) {
    const ktab *t = atomic_load_explicit(&g_tab, memory_order_acquire);
    if (__builtin_expect(t != NULL, 1)) return t;
    const ktab *want = tab_for(best_isa(env_isa())), *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&g_tab, &expected, want, memory_order_acq_rel,
                                                memory_order_acquire))
        return want;
    return expected;
}

lm_isa lm_cpu_isa(void) { return tab()->isa; }

const char *lm_isa_name(lm_isa isa) {
    switch (isa) {
    case LM_ISA_SCALAR: return "scalar";
    case LM_ISA_AVX2: return "avx2";
    case LM_ISA_AVX512: return "avx512";
    }
    return "?";
}

void lm_matmul_rows(const float *x, int n, int ldx, const void *W, lm_dtype dt, size_t w_stride,
                    int in, float *y, int ldy, int o0, int o1) {
    tab()->matmul(x, n, ldx, W, dt, w_stride, in, y, ldy, o0, o1);
}

void lm_to_f32(const void *src, lm_dtype dt, float *dst, size_t n) {
    tab()->to_f32(src, dt, dst, n);
}

void lm_rmsnorm(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps) {
    tab()->rmsnorm(y, x, w, dt, n, eps);
}

float lm_dot_f32(const float *a, const float *b, int n) { return tab()->dot(a, b, n); }

void lm_axpy_f32(float *y, float a, const float *x, int n) { tab()->axpy(y, a, x, n); }

float lm_max_f32(const float *x, int n) { return tab()->max(x, n); }

double lm_exp_sum(float *y, const float *x, int n, float mx, float scale) { return tab()->exp_sum(y, x, n, mx, scale); }

void lm_attn_paged(const lm_attn_task *a) { tab()->attn(a); }
