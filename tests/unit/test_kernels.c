// CPU kernels: every available ISA path against double-precision references
// on awkward shapes, bit-exact batch invariance of lm_matmul_rows, and the
// bf16/f16 conversions (exhaustive over the 16-bit formats).
#include "kernels/cpu/kernels.h"
#include "testlib.h"

#include <immintrin.h>
#include <stdint.h>

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static size_t esize(lm_dtype dt) { return dt == LM_DT_F32 ? 4 : 2; }
static const char *dt_name(lm_dtype dt) {
    return dt == LM_DT_F32 ? "f32" : dt == LM_DT_F16 ? "f16" : "bf16";
}

static void store_w(void *W, lm_dtype dt, size_t idx, float v) {
    if (dt == LM_DT_BF16) ((uint16_t *)W)[idx] = lm_f32_to_bf16(v);
    else if (dt == LM_DT_F16) ((uint16_t *)W)[idx] = lm_f32_to_f16(v);
    else ((float *)W)[idx] = v;
}
static double load_w(const void *W, lm_dtype dt, size_t idx) {
    if (dt == LM_DT_BF16) return lm_bf16_to_f32(((const uint16_t *)W)[idx]);
    if (dt == LM_DT_F16) return lm_f16_to_f32(((const uint16_t *)W)[idx]);
    return ((const float *)W)[idx];
}

static const lm_isa all_isas[] = {LM_ISA_SCALAR, LM_ISA_AVX2, LM_ISA_AVX512};
static const lm_dtype all_dts[] = {LM_DT_F32, LM_DT_F16, LM_DT_BF16};
static int isa_ok[3];

// A matmul problem with padded strides. Padding (x beyond `in`, W beyond
// `in` in each row) holds NaN, so any over-read poisons the result; y starts
// as a sentinel so writes outside [o0,o1) are caught. Buffers are offset by
// one element so nothing is 64-byte aligned.
typedef struct {
    int n, in, out, ldx, ldy;
    size_t ws;
    lm_dtype dt;
    float *xb, *x, *yb, *y;
    char *Wb, *W;
} prob;

#define SENTINEL 0x7fa5a5a5u  // a NaN no kernel produces

static void prob_init(prob *p, lm_dtype dt, int n, int in, int out, int pad) {
    p->dt = dt, p->n = n, p->in = in, p->out = out;
    p->ldx = in + pad, p->ldy = out + 2 * pad + 1, p->ws = (size_t)in + (size_t)pad;
    p->xb = malloc(((size_t)n * p->ldx + 1) * 4), p->x = p->xb + 1;
    p->yb = malloc(((size_t)n * p->ldy + 1) * 4), p->y = p->yb + 1;
    p->Wb = malloc(((size_t)out * p->ws + 1) * esize(dt)), p->W = p->Wb + esize(dt);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < p->ldx; i++) p->x[(size_t)t * p->ldx + i] = i < in ? tl_rndf() : NAN;
    for (int o = 0; o < out; o++)
        for (size_t i = 0; i < p->ws; i++)
            store_w(p->W, dt, o * p->ws + i, (int)i < in ? tl_rndf() : NAN);
}

static void prob_clear_y(prob *p) {
    for (size_t i = 0; i < (size_t)p->n * p->ldy; i++) memcpy(&p->y[i], &(uint32_t){SENTINEL}, 4);
}

static void prob_free(prob *p) { free(p->xb), free(p->yb), free(p->Wb); }

typedef void (*mm_fn)(const float *, int, int, const void *, lm_dtype, size_t, int, float *, int,
                      int, int);

// Max over tokens of  max_o |y - y_double| / max_o sum_i |x_i w_oi|: the error
// relative to the row's magnitude (cancellation cannot inflate it). Also
// checks that the sentinel survives outside [o0,o1).
static double prob_check(const prob *p, int o0, int o1, int *bad_sentinel) {
    double worst = 0;
    *bad_sentinel = 0;
    for (int t = 0; t < p->n; t++) {
        const float *xt = p->x + (size_t)t * p->ldx;
        double maxerr = 0, scale = 0;
        for (int o = 0; o < p->ldy; o++) {
            float got = p->y[(size_t)t * p->ldy + o];
            if (o < o0 || o >= o1) {
                if (u_of(got) != SENTINEL) *bad_sentinel = 1;
                continue;
            }
            double s = 0, a = 0;
            for (int i = 0; i < p->in; i++) {
                double v = (double)xt[i] * load_w(p->W, p->dt, (size_t)o * p->ws + i);
                s += v, a += fabs(v);
            }
            double e = fabs(got - s);
            if (!(e == e)) e = INFINITY;  // NaN: over-read or garbage
            if (e > maxerr) maxerr = e;
            if (a > scale) scale = a;
        }
        double rel = maxerr / (scale > 0 ? scale : 1);
        if (rel > worst) worst = rel;
    }
    return worst;
}

static void run_mm(mm_fn f, prob *p, int o0, int o1) {
    prob_clear_y(p);
    f(p->x, p->n, p->ldx, p->W, p->dt, p->ws, p->in, p->y, p->ldy, o0, o1);
}

static void test_matmul_vs_double(void) {
    static const int ins[] = {1, 7, 16, 19, 64, 111, 257};
    static const int outs[] = {1, 3, 19, 64};
    static const int ns[] = {1, 2, 3, 5, 8, 17, 33};
    for (int d = 0; d < 3; d++)
        for (int a = 0; a < 7; a++)
            for (int b = 0; b < 4; b++)
                for (int c = 0; c < 7; c++) {
                    prob p;
                    prob_init(&p, all_dts[d], ns[c], ins[a], outs[b], 1 + (a + b + c) % 5);
                    // full range, and a strict sub-range where out allows
                    int ranges[2][2] = {{0, p.out}, {p.out >= 3 ? 1 : 0, p.out >= 3 ? p.out - 1 : p.out}};
                    for (int rg = 0; rg < 2; rg++) {
                        int o0 = ranges[rg][0], o1 = ranges[rg][1], bad;
                        run_mm(lm_matmul_rows_ref, &p, o0, o1);
                        double e = prob_check(&p, o0, o1, &bad);
                        CHECK_MSG(e <= 1e-5 && !bad, "ref %s in=%d out=%d n=%d [%d,%d): err %g%s",
                                  dt_name(p.dt), p.in, p.out, p.n, o0, o1, e, bad ? " wrote outside" : "");
                        for (int k = 0; k < 3; k++) {
                            if (!isa_ok[k]) continue;
                            lm_cpu_kernels_init(all_isas[k]);
                            run_mm(lm_matmul_rows, &p, o0, o1);
                            e = prob_check(&p, o0, o1, &bad);
                            CHECK_MSG(e <= 1e-5 && !bad, "%s %s in=%d out=%d n=%d [%d,%d): err %g%s",
                                      lm_isa_name(all_isas[k]), dt_name(p.dt), p.in, p.out, p.n, o0,
                                      o1, e, bad ? " wrote outside" : "");
                        }
                    }
                    prob_free(&p);
                }
}

// Large `in` (K-blocked path with parked accumulators, ragged last block) and
// n across the token macro-block boundary.
static void test_matmul_blocked(void) {
    static const int ins[] = {512, 1000, 1111, 2048 + 13};
    static const int ns[] = {4, 5, 37, 50, 101};
    for (int d = 0; d < 3; d++)
        for (int a = 0; a < 4; a++)
            for (int c = 0; c < 5; c++) {
                prob p;
                prob_init(&p, all_dts[d], ns[c], ins[a], 37, 3);
                for (int k = 0; k < 3; k++) {
                    if (!isa_ok[k]) continue;
                    lm_cpu_kernels_init(all_isas[k]);
                    int bad;
                    run_mm(lm_matmul_rows, &p, 2, 35);
                    double e = prob_check(&p, 2, 35, &bad);
                    CHECK_MSG(e <= 1e-5 && !bad, "%s %s in=%d n=%d: err %g%s", lm_isa_name(all_isas[k]),
                              dt_name(p.dt), p.in, p.n, e, bad ? " wrote outside" : "");
                }
                prob_free(&p);
            }
}

// Each token's output must be bit-identical whether computed alone, in any
// batch, at any position of the batch, or with a different row sub-range.
static void test_matmul_batch_invariance(void) {
    static const int ins[] = {1, 7, 16, 19, 64, 111, 257, 1000, 1111};
    const int N = 53, out = 23;
    for (int k = 0; k < 3; k++) {
        if (!isa_ok[k]) continue;
        lm_cpu_kernels_init(all_isas[k]);
        for (int d = 0; d < 3; d++)
            for (int a = 0; a < 9; a++) {
                prob p;
                prob_init(&p, all_dts[d], N, ins[a], out, 2);
                float *full = malloc((size_t)N * p.ldy * 4), *one = malloc((size_t)p.ldy * 4);
                run_mm(lm_matmul_rows, &p, 0, out);
                memcpy(full, p.y, (size_t)N * p.ldy * 4);
                int mism = 0;
                // alone (n = 1), rows split as a thread pool might: [0,5) [5,23)
                for (int t = 0; t < N; t++) {
                    for (int o = 0; o < out; o++) one[o] = -1;
                    const float *xt = p.x + (size_t)t * p.ldx;
                    lm_matmul_rows(xt, 1, p.ldx, p.W, p.dt, p.ws, p.in, one, p.ldy, 0, 5);
                    lm_matmul_rows(xt, 1, p.ldx, p.W, p.dt, p.ws, p.in, one, p.ldy, 5, out);
                    if (memcmp(one, full + (size_t)t * p.ldy, (size_t)out * 4)) mism++;
                }
                // sub-batches of every size 2..12 starting at varying offsets
                for (int nb = 2; nb <= 12; nb++) {
                    int t0 = (nb * 7) % (N - nb);
                    prob_clear_y(&p);
                    lm_matmul_rows(p.x + (size_t)t0 * p.ldx, nb, p.ldx, p.W, p.dt, p.ws, p.in, p.y,
                                   p.ldy, 3, out);
                    for (int t = 0; t < nb; t++)
                        if (memcmp(p.y + (size_t)t * p.ldy + 3, full + (size_t)(t0 + t) * p.ldy + 3,
                                   (size_t)(out - 3) * 4))
                            mism++;
                }
                CHECK_MSG(mism == 0, "%s %s in=%d: %d batch-dependent results",
                          lm_isa_name(all_isas[k]), dt_name(p.dt), p.in, mism);
                free(full), free(one);
                prob_free(&p);
            }
    }
}

static void test_small_kernels(void) {
    for (int k = 0; k < 3; k++) {
        if (!isa_ok[k]) continue;
        lm_cpu_kernels_init(all_isas[k]);
        const char *isa = lm_isa_name(all_isas[k]);
        for (int n = 0; n <= 300; n += (n < 40 ? 1 : 37)) {
            float *a = malloc((n + 1) * 4), *b = malloc((n + 1) * 4), *c = malloc((n + 1) * 4);
            float *y = malloc((n + 2) * 4);
            for (int i = 0; i <= n; i++) a[i] = tl_rndf(), b[i] = tl_rndf(), c[i] = tl_rndf();
            // dot, against double
            double s = 0, sa = 0;
            for (int i = 0; i < n; i++) s += (double)a[i] * b[i], sa += fabs((double)a[i] * b[i]);
            CHECK_MSG(fabs(lm_dot_f32(a, b, n) - s) <= 1e-6 * (sa + 1e-30), "%s dot n=%d", isa, n);
            // axpy: y += 0.75 x, untouched past n
            for (int i = 0; i <= n; i++) y[i] = c[i];
            lm_axpy_f32(y, 0.75f, a, n);
            int bad = y[n] != c[n];
            for (int i = 0; i < n; i++) bad |= fabs(y[i] - (c[i] + 0.75 * a[i])) > 1e-6;
            CHECK_MSG(!bad, "%s axpy n=%d", isa, n);
            // rmsnorm per dtype, out of place and in place, against ref/double
            for (int d = 0; d < 3 && n > 0; d++) {
                lm_dtype dt = all_dts[d];
                char *w = malloc((size_t)n * 4 + 4);
                void *wu = w + esize(dt);  // unaligned
                for (int i = 0; i < n; i++) store_w(wu, dt, i, 1 + 0.5f * tl_rndf());
                double ss = 0;
                for (int i = 0; i < n; i++) ss += (double)a[i] * a[i];
                double sc = 1 / sqrt(ss / n + 1e-5);
                y[n] = 42;
                lm_rmsnorm(y, a, wu, dt, n, 1e-5f);
                bad = y[n] != 42;
                for (int i = 0; i < n; i++) {
                    double want = a[i] * sc * load_w(wu, dt, i);
                    bad |= fabs(y[i] - want) > 2e-6 * (fabs(want) + 1e-3);
                }
                memcpy(c, a, n * 4);
                lm_rmsnorm(c, c, wu, dt, n, 1e-5f);  // aliased
                bad |= memcmp(c, y, n * 4) != 0;
                CHECK_MSG(!bad, "%s rmsnorm %s n=%d", isa, dt_name(dt), n);
                // to_f32 equals the scalar conversion exactly
                uint16_t *h = malloc((n + 1) * 2);
                for (int i = 0; i < n; i++) h[i] = (uint16_t)tl_rnd32();
                if (dt == LM_DT_F32) {
                    lm_to_f32(a, dt, y, n);
                    bad = memcmp(y, a, n * 4) != 0;
                } else {
                    y[n] = 42;
                    lm_to_f32(h, dt, y, n);
                    bad = y[n] != 42;
                    for (int i = 0; i < n; i++) {
                        float want = dt == LM_DT_BF16 ? lm_bf16_to_f32(h[i]) : lm_f16_to_f32(h[i]);
                        // F16C quiets signalling NaNs; any NaN for a NaN is fine
                        bad |= want == want ? u_of(y[i]) != u_of(want) : y[i] == y[i];
                    }
                }
                CHECK_MSG(!bad, "%s to_f32 %s n=%d", isa, dt_name(dt), n);
                free(h), free(w);
            }
            free(a), free(b), free(c), free(y);
        }
    }
    float g[5] = {-20, -1, 0, 0.5f, 30}, u[5] = {1, 2, 3, 4, 5}, h[5];
    lm_swiglu(h, g, u, 5);
    for (int i = 0; i < 5; i++)
        CHECK_NEAR(h[i], g[i] / (1 + exp(-(double)g[i])) * u[i], 1e-6 * (1 + fabs(h[i])));
}

// ----------------------------------------------------------- conversions ---

static void test_bf16(void) {
    // every bf16 -> f32 -> bf16 is the identity (NaNs stay NaN)
    int bad = 0;
    for (uint32_t v = 0; v < 65536; v++) {
        float f = lm_bf16_to_f32((uint16_t)v);
        CHECK(u_of(f) == v << 16);
        uint16_t back = lm_f32_to_bf16(f);
        bad += f == f ? back != v : !((back & 0x7f80) == 0x7f80 && (back & 0x7f));
    }
    CHECK_MSG(bad == 0, "%d bf16 round trips failed", bad);
    // RNE against an exact decision on a sweep of f32 bit patterns
    bad = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
        float f = f_of((uint32_t)u);
        uint16_t got = lm_f32_to_bf16(f);
        if (f != f) {
            bad += !((got & 0x7f80) == 0x7f80 && (got & 0x7f) && (got >> 15) == (u >> 31));
            continue;
        }
        uint32_t lo = (uint32_t)u & 0xffff0000u;
        double dl = f_of(lo), dh = (lo & 0x7fffffffu) == 0x7f7f0000u
                                       ? ldexp(1.0, 128) * (f < 0 ? -1 : 1)  // next is inf
                                       : (double)f_of(lo + 0x10000u);
        double el = fabs(f - dl), eh = fabs(dh - f);
        int down = el < eh || (el == eh && !((lo >> 16) & 1));  // ties to even
        uint16_t want = (uint16_t)(down ? lo >> 16 : (lo >> 16) + 1);
        if ((f_of(lo) == INFINITY || f_of(lo) == -INFINITY)) want = (uint16_t)(lo >> 16);
        bad += got != want;
    }
    CHECK_MSG(bad == 0, "%d f32->bf16 roundings wrong", bad);
    CHECK(lm_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(lm_f32_to_bf16(f_of(0x3f808000)) == 0x3f80);  // tie -> even
    CHECK(lm_f32_to_bf16(f_of(0x3f818000)) == 0x3f82);  // tie -> even (up)
    CHECK(lm_f32_to_bf16(f_of(0x7f7fffff)) == 0x7f80);  // FLT_MAX -> inf
    CHECK(lm_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(lm_f32_to_bf16(-0.0f) == 0x8000);
    uint16_t nb = lm_f32_to_bf16(f_of(0x7f800001));  // payload only in dropped bits
    CHECK(lm_bf16_to_f32(nb) != lm_bf16_to_f32(nb));
}

__attribute__((target("f16c"))) static uint16_t hw_f32_to_f16(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
__attribute__((target("f16c"))) static float hw_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

static void test_f16(void) {
    int bad = 0;
    for (uint32_t v = 0; v < 65536; v++) {
        float f = lm_f16_to_f32((uint16_t)v);
        bad += lm_f32_to_f16(f) != v;  // exact, NaN payloads included
    }
    CHECK_MSG(bad == 0, "%d f16 round trips failed", bad);
    CHECK(lm_f16_to_f32(0x0001) == ldexpf(1, -24));  // smallest subnormal
    CHECK(lm_f16_to_f32(0x03ff) == ldexpf(1023, -24));
    CHECK(lm_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(lm_f16_to_f32(0xfc00) == -INFINITY);
    CHECK(lm_f32_to_f16(65519.99f) == 0x7bff);
    CHECK(lm_f32_to_f16(65520.0f) == 0x7c00);          // tie above max -> inf
    CHECK(lm_f32_to_f16(ldexpf(1, -25)) == 0x0000);    // tie -> even zero
    CHECK(lm_f32_to_f16(ldexpf(3, -26)) == 0x0001);    // 0.75 ulp -> 1
    CHECK(lm_f32_to_f16(ldexpf(3, -25)) == 0x0002);    // 1.5 ulp tie -> even 2
    CHECK(lm_f32_to_f16(-0.0f) == 0x8000);
    CHECK(lm_f32_to_f16(f_of(0x7f800001)) != 0x7c00);  // NaN stays NaN
    if (!isa_ok[LM_ISA_AVX2]) return;  // F16C comes with our AVX2 level
    // against the hardware conversion: all f16, and a sweep of f32 patterns
    bad = 0;
    for (uint32_t v = 0; v < 65536; v++) {
        float a = lm_f16_to_f32((uint16_t)v), b = hw_f16_to_f32((uint16_t)v);
        bad += a == a ? u_of(a) != u_of(b) : b == b;
    }
    CHECK_MSG(bad == 0, "%d f16->f32 differ from F16C", bad);
    bad = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
        float f = f_of((uint32_t)u);
        uint16_t a = lm_f32_to_f16(f), b = hw_f32_to_f16(f);
        bad += f == f ? a != b : (a & 0x7c00) != 0x7c00 || !(a & 0x3ff) || (a >> 15) != (b >> 15);
    }
    for (uint32_t u = 0x33000000u - 4096; u < 0x38800000u + 4096; u++) {  // subnormal range, dense
        uint16_t a = lm_f32_to_f16(f_of(u)), b = hw_f32_to_f16(f_of(u));
        bad += a != b;
    }
    CHECK_MSG(bad == 0, "%d f32->f16 differ from F16C", bad);
}

// Before any explicit init the kernels must initialise themselves.
static void test_lazy_init(void) {
    float a[3] = {1, 2, 3};
    CHECK(lm_dot_f32(a, a, 3) == 14.0f);
    lm_isa best = lm_cpu_kernels_init(-1);
    CHECK(lm_cpu_isa() == best);
    printf("best ISA: %s\n", lm_isa_name(best));
}

// Paged attention on awkward shapes: every ISA against a double-precision
// softmax, pages scattered through a pool whose unused slots hold NaN (an
// over-read poisons the result), outputs with sentinel padding, and each
// token of a block bit-identical to the same token computed alone.
static void attn_case(lm_isa isa, lm_dtype dt, int hd, int G, int ps, int L, int nq) {
    int nkv = 2, kh = 1, npages = (L + ps - 1) / ps, pool = 2 * npages + 1;
    size_t es = esize(dt), head = (size_t)ps * hd, page = 2 * (size_t)nkv * head;
    char *kv = malloc(pool * page * es);
    for (size_t i = 0; i < pool * page; i++) store_w(kv, dt, i, NAN);
    int32_t *pages = malloc(sizeof(int32_t) * npages);
    for (int p = 0; p < npages; p++) pages[p] = (p * 2 + 1) % pool;  // scattered and distinct (pool is odd)
    for (int p = 0; p < npages; p++)
        for (int j = 0; j < ps && p * ps + j < L; j++)
            for (int h = 0; h < nkv; h++)
                for (int d = 0; d < hd; d++)
                    for (int w = 0; w < 2; w++)
                        store_w(kv, dt, (size_t)pages[p] * page + ((size_t)w * nkv + h) * head + (size_t)j * hd + d,
                                2 * tl_rndf());
    int qs = nkv * G * hd + 3;  // row stride of q/out: all heads plus padding
    float *q = malloc(sizeof(float) * nq * qs), *out = malloc(sizeof(float) * nq * qs);
    float *one = malloc(sizeof(float) * qs);
    for (int i = 0; i < nq * qs; i++) q[i] = 2 * tl_rndf(), out[i] = 12345.0f;
    int32_t *pos = malloc(sizeof(int32_t) * nq);
    for (int t = 0; t < nq; t++) pos[t] = L - nq + t;
    size_t nf = lm_attn_scratch_floats(nq, G, hd, ps);
    float *scratch = aligned_alloc(64, nf * sizeof(float));
    lm_attn_task a = {.q = q + (size_t)kh * G * hd, .q_stride = qs, .out = out + (size_t)kh * G * hd,
                      .out_stride = qs, .pos = pos, .n_q = nq, .kv = kv, .kv_dt = dt, .pages = pages,
                      .page_size = ps, .n_kv_heads = nkv, .kv_head = kh, .head_dim = hd, .group = G,
                      .scratch = scratch};
    lm_cpu_kernels_init(isa);
    lm_attn_paged(&a);
    double err = 0, ref_max = 0;
    int bad_pad = 0, diff_alone = 0;
    double *sc = malloc(sizeof(double) * L);
    for (int t = 0; t < nq; t++)
        for (int g = 0; g < G; g++) {
            const float *qr = a.q + (size_t)t * qs + (size_t)g * hd;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= pos[t]; j++) {
                double dot = 0;
                size_t k0 = (size_t)pages[j / ps] * page + (size_t)kh * head + (size_t)(j % ps) * hd;
                for (int d = 0; d < hd; d++) dot += (double)qr[d] * load_w(kv, dt, k0 + d);
                sc[j] = dot / sqrt((double)hd);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = 0; j <= pos[t]; j++) sum += sc[j] = exp(sc[j] - mx);
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = 0; j <= pos[t]; j++)
                    o += sc[j] * load_w(kv, dt, (size_t)pages[j / ps] * page + ((size_t)nkv + kh) * head +
                                                    (size_t)(j % ps) * hd + d);
                o /= sum;
                double e = fabs(o - a.out[(size_t)t * qs + (size_t)g * hd + d]);
                err = e > err || e != e ? e : err;
                ref_max = fabs(o) > ref_max ? fabs(o) : ref_max;
            }
        }
    for (int t = 0; t < nq; t++)
        for (int i = 0; i < qs; i++)
            if ((i < kh * G * hd || i >= (kh + 1) * G * hd) && out[(size_t)t * qs + i] != 12345.0f) bad_pad++;
    for (int t = 0; t < nq && nq > 1; t++) {  // the same token alone
        lm_attn_task b = a;
        b.q = a.q + (size_t)t * qs, b.out = one, b.pos = pos + t, b.n_q = 1;
        lm_attn_paged(&b);
        if (memcmp(one, a.out + (size_t)t * qs, sizeof(float) * G * hd)) diff_alone++;
    }
    CHECK_MSG(err <= 3e-6 * (ref_max > 1 ? ref_max : 1), "attention %s %s hd %d G %d ps %d L %d nq %d: max err %.3g",
              lm_isa_name(isa), dt_name(dt), hd, G, ps, L, nq, err);
    CHECK_MSG(bad_pad == 0, "attention %s hd %d G %d: %d writes outside the group's heads", lm_isa_name(isa), hd, G,
              bad_pad);
    CHECK_MSG(diff_alone == 0, "attention %s %s hd %d G %d ps %d L %d nq %d: %d tokens differ from alone",
              lm_isa_name(isa), dt_name(dt), hd, G, ps, L, nq, diff_alone);
    free(sc), free(scratch), free(pos), free(one), free(out), free(q), free(pages), free(kv);
}

static void test_attention(void) {
    static const int hds[] = {24, 64, 128, 20}, Gs[] = {1, 3, 4, 8}, Ls[] = {1, 16, 37, 70};
    for (int k = 0; k < 3; k++) {
        if (!isa_ok[k]) continue;
        for (int dti = 0; dti < 2; dti++)
            for (int h = 0; h < 4; h++)
                for (int g = 0; g < 4; g++)
                    for (int l = 0; l < 4; l++)
                        for (int ps = 5; ps <= 16; ps += 11) {
                            int L = Ls[l], nq = (h + g + l) % 3 == 0 ? 1 : (h + l) % 2 ? 7 : L < 32 ? L : 32;
                            if (nq > L) nq = L;
                            attn_case(all_isas[k], dti ? LM_DT_BF16 : LM_DT_F32, hds[h], Gs[g], ps, L, nq);
                        }
    }
    lm_cpu_kernels_init(-1);
}

int main(void) {
    RUN(test_lazy_init);
    for (int k = 0; k < 3; k++) {
        isa_ok[k] = lm_cpu_kernels_init(all_isas[k]) == all_isas[k];
        CHECK(isa_ok[k] == lm_cpu_isa_supported(all_isas[k]));
        if (!isa_ok[k]) printf("ISA %s not available here: skipped\n", lm_isa_name(all_isas[k]));
    }
    RUN(test_bf16);
    RUN(test_f16);
    RUN(test_small_kernels);
    RUN(test_matmul_vs_double);
    RUN(test_matmul_blocked);
    RUN(test_matmul_batch_invariance);
    RUN(test_attention);
    return tl_finish();
}
