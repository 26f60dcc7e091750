// CPU kernels. Each has a scalar reference (`*_ref`) and a fast path chosen at
// run time (AVX-512F > AVX2+FMA+F16C > scalar) by lm_cpu_kernels_init().
// Kernels take raw pointers and sizes only: they never see engine structs.
#ifndef LM_KERNELS_CPU_H
#define LM_KERNELS_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "util/dtype.h"

typedef enum lm_isa { LM_ISA_SCALAR = 0, LM_ISA_AVX2, LM_ISA_AVX512 } lm_isa;

// Picks the best ISA this CPU supports; `force` < 0 means auto, otherwise use
// that ISA (tests compare all available paths). Returns the ISA chosen.
lm_isa lm_cpu_kernels_init(int force);
lm_isa lm_cpu_isa(void);
const char *lm_isa_name(lm_isa isa);

// y[t*ldy + o] = sum_i x[t*ldx + i] * W[o][i]   for t in [0,n), o in [o0,o1)
// W is row-major [out][in] of dtype dt with row stride w_stride *elements*
// (so a row slice of a fused tensor can be passed). Accumulates in fp32.
// The weight rows are streamed once for all n tokens (tiles of tokens), so
// prefill is not n separate GEMVs.
void lm_matmul_rows(const float *x, int n, int ldx, const void *W, lm_dtype dt, size_t w_stride,
                    int in, float *y, int ldy, int o0, int o1);
void lm_matmul_rows_ref(const float *x, int n, int ldx, const void *W, lm_dtype dt,
                        size_t w_stride, int in, float *y, int ldy, int o0, int o1);

// Convert n elements of dtype dt to fp32.
void lm_to_f32(const void *src, lm_dtype dt, float *dst, size_t n);

// y = x * rsqrt(mean(x^2) + eps) * w     (w of dtype dt; may alias x==y)
void lm_rmsnorm(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps);

// dot product and axpy in fp32 (attention inner loops)
float lm_dot_f32(const float *a, const float *b, int n);
void lm_axpy_f32(float *y, float a, const float *x, int n);  // y += a*x

// Softmax pieces: the largest of x[0..n) (-inf if none), and
// y[i] = exp((x[i] - mx) * scale) for x[i] <= mx, returning their sum (fp64).
// The SIMD paths use a polynomial exp good to a few ulp (tested against expf).
float lm_max_f32(const float *x, int n);
double lm_exp_sum(float *y, const float *x, int n, float mx, float scale);

// h[i] = silu(g[i]) * u[i]
void lm_swiglu(float *h, const float *g, const float *u, int n);

// Paged causal attention of one (sequence, KV head) for the n_q query tokens
// of a block and every query head of the GQA group (src/kernels/cpu/attention.c).
typedef struct lm_attn_task {
    const float *q;        // head kv_head * group of the block's first token; token t at q + t * q_stride
    int q_stride;
    float *out;            // same layout as q
    int out_stride;
    const int32_t *pos;    // [n_q] positions: token t sees cache positions 0..pos[t]
    int n_q;
    const void *kv;        // the layer's pages [page][K|V][kv_head][page_size][head_dim]
    lm_dtype kv_dt;        // BF16 or F32
    const int32_t *pages;  // the sequence's block-table row
    int page_size, n_kv_heads, kv_head, head_dim, group;
    float *scratch;        // lm_attn_scratch_floats() floats, 32-byte aligned
} lm_attn_task;

// Positions the SIMD path takes together between two online-softmax updates
// (a span of pages; see attention_avx2.c).
#define LM_ATTN_CHUNK 64

// The task's working set, carved out of `scratch` (32-byte aligned; every
// part starts on a multiple of 8 floats): running max and sum per query head
// (8 floats for each group of 4 heads of a token: the SIMD path keeps them
// in pairs, the reference uses the first n_q * group), accumulators and a
// zero-padded copy of q in rows of hdp floats (row = token * group + head;
// hdp is head_dim rounded up to 16), the scores of one chunk (or one page,
// for the reference) and 8 rescale factors.
typedef struct lm_attn_ws {
    float *m, *l, *acc, *q, *s, *corr;
    int hdp;
} lm_attn_ws;

static inline size_t lm_attn_round8(size_t n) { return (n + 7) / 8 * 8; }

static inline void lm_attn_ws_sizes(int n_q, int group, int head_dim, int page_size, size_t *state, size_t *rows,
                                    size_t *hdp, size_t *scores) {
    *state = (size_t)n_q * ((size_t)group + 3) / 4 * 8;
    *rows = (size_t)n_q * group;
    *hdp = ((size_t)head_dim + 15) / 16 * 16;
    *scores = lm_attn_round8((size_t)page_size) > 4 * LM_ATTN_CHUNK ? lm_attn_round8((size_t)page_size)
                                                                    : 4 * LM_ATTN_CHUNK;
}

static inline lm_attn_ws lm_attn_ws_at(float *scratch, int n_q, int group, int head_dim, int page_size) {
    size_t state, rows, hdp, scores;
    lm_attn_ws_sizes(n_q, group, head_dim, page_size, &state, &rows, &hdp, &scores);
    lm_attn_ws w;
    w.hdp = (int)hdp;
    w.m = scratch;
    w.l = w.m + state;
    w.acc = w.l + state;
    w.q = w.acc + rows * hdp;
    w.s = w.q + rows * hdp;
    w.corr = w.s + scores;
    return w;
}

// Floats of scratch one task needs; a multiple of 16, so per-thread slices of
// a 64-byte aligned buffer stay 64-byte aligned.
static inline size_t lm_attn_scratch_floats(int n_q, int group, int head_dim, int page_size) {
    size_t state, rows, hdp, scores;
    lm_attn_ws_sizes(n_q, group, head_dim, page_size, &state, &rows, &hdp, &scores);
    size_t n = 2 * state + 2 * rows * hdp + scores + 8;
    return (n + 15) / 16 * 16;
}

void lm_attn_paged(const lm_attn_task *a);

// RoPE (rotate-half, as transformers computes it; rope.c). Inverse
// frequencies [head_dim / 2] for a base theta; cos and sin [half] of one
// position; rotation in place of n_heads consecutive heads of one row.
void lm_rope_inv_freq(double theta, int head_dim, float *inv);
void lm_rope_cos_sin(const float *inv, int half, int pos, float *cs, float *sn);
void lm_rope_rotate(float *x, int n_heads, int head_dim, const float *cs, const float *sn);

// float <-> bf16/f16 scalar helpers (round to nearest even)
float lm_bf16_to_f32(uint16_t v);
uint16_t lm_f32_to_bf16(float f);
float lm_f16_to_f32(uint16_t v);
uint16_t lm_f32_to_f16(float f);

// ---- per-ISA entry points ------------------------------------------------
// Used by the dispatcher and the kernel lab (dev/kernels). Call them only when
// the CPU supports the ISA (lm_cpu_kernels_init(isa) == isa); everything else
// should call the dispatched functions above.
//
// Reduction order of lm_matmul_rows (all ISAs): every output element y[t][o]
// is reduced in an order that depends only on `in` (per-lane partial sums over
// i in steps of the vector width, then a fixed horizontal reduction), never on
// n, o0/o1, the strides or the other tokens of the batch. So a token gives
// bit-identical outputs whether it is computed alone or in a batch (per ISA;
// the ISAs differ from each other in the last bits). x and y must not overlap;
// dt must be F32, F16 or BF16 (otherwise y is left untouched). The SIMD paths
// keep a thread-local scratch (< 100 KB per thread) for K-blocked prefill.
void lm_matmul_rows_avx2(const float *x, int n, int ldx, const void *W, lm_dtype dt,
                         size_t w_stride, int in, float *y, int ldy, int o0, int o1);
void lm_matmul_rows_avx512(const float *x, int n, int ldx, const void *W, lm_dtype dt,
                           size_t w_stride, int in, float *y, int ldy, int o0, int o1);
void lm_to_f32_avx2(const void *src, lm_dtype dt, float *dst, size_t n);
void lm_to_f32_avx512(const void *src, lm_dtype dt, float *dst, size_t n);
void lm_to_f32_ref(const void *src, lm_dtype dt, float *dst, size_t n);
void lm_rmsnorm_ref(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps);
void lm_rmsnorm_avx2(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps);
void lm_rmsnorm_avx512(float *y, const float *x, const void *w, lm_dtype dt, int n, float eps);
float lm_dot_f32_ref(const float *a, const float *b, int n);
float lm_dot_f32_avx2(const float *a, const float *b, int n);
float lm_dot_f32_avx512(const float *a, const float *b, int n);
void lm_axpy_f32_ref(float *y, float a, const float *x, int n);
void lm_axpy_f32_avx2(float *y, float a, const float *x, int n);
void lm_axpy_f32_avx512(float *y, float a, const float *x, int n);

float lm_max_f32_ref(const float *x, int n);
float lm_max_f32_avx2(const float *x, int n);
float lm_max_f32_avx512(const float *x, int n);
double lm_exp_sum_ref(float *y, const float *x, int n, float mx, float scale);
double lm_exp_sum_avx2(float *y, const float *x, int n, float mx, float scale);
double lm_exp_sum_avx512(float *y, const float *x, int n, float mx, float scale);

// Paged attention: the scalar reference and the AVX2 path (which the AVX-512
// table uses too: on the hosts we measured, the kernel is bound by DRAM with
// 8-lane FMAs already; see dev/kernels/README.md).
void lm_attn_paged_ref(const lm_attn_task *a);
void lm_attn_paged_avx2(const lm_attn_task *a);

// True if this CPU (and OS) can run `isa`.
int lm_cpu_isa_supported(lm_isa isa);

// Probe kernels (src/kernels/cpu/probe.c), shared by `lightmoe bench` and the
// kernel lab: a 4-stream read of `bytes` (returns a checksum), and
// independent FMA chains with the flop count they perform.
uint64_t lm_read_sum(const void *p, size_t bytes);
float lm_fma_chain(lm_isa isa, long iters);
double lm_fma_chain_flops(lm_isa isa, long iters);

#endif
