// CUDA kernels of the executor ops, each behind a C launcher that takes raw
// device pointers, sizes and a stream (so C code and the kernel lab call
// them without C++). A launcher returns the launch's cudaError_t (0: queued).
//
// These are the simple, portable versions (any sm_80+): one warp per output
// dot product, online softmax per (token, head). They define the semantics
// the fast kernels are tested against; each matches the CPU reference
// executor op for op (tests/unit/test_ops.c, LM_OPS_EXECS=cuda).
//
// Weights are bf16, f16 or f32 (lm_dtype values: 0 F32, 1 F16, 2 BF16);
// activations f32; ids, positions, slots and plans int32.
#ifndef LM_KERNELS_CUDA_KERNELS_H
#define LM_KERNELS_CUDA_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *lm_cuda_stream;

// Programmatic dependent launch of the small kernels the fast path runs
// between GEMMs (embed, norms, RoPE, gather, gated add, sampling): 1 on, 0
// off (default). Only for sm_90+ devices; process-wide.
void lm_cuda_set_pdl(int on);

// x[t] = E[ids[t]]                                   x [n][H]
int lm_cuda_embed(const void *E, int edt, size_t lde, const int *ids, float *x, size_t ldx, int n, int H,
                  lm_cuda_stream st);

// y = rmsnorm(each `group` values of x) * w[i % wn]  (y may be x)
int lm_cuda_rmsnorm(const float *x, size_t ldx, int rows, int cols, int group, const void *w, int wdt, int wn,
                    float eps, float *y, size_t ldy, lm_cuda_stream st);

// x += d; then, if w, y = rmsnorm(x) * w
int lm_cuda_add_rmsnorm(float *x, size_t ldx, const float *d, size_t ldd, int rows, int cols, const void *w,
                        int wdt, int wn, float eps, float *y, size_t ldy, lm_cuda_stream st);

// y = x W^T (+ bias)                                 W [O][K] (row stride ldw)
int lm_cuda_matmul(const float *x, size_t ldx, int n, const void *W, int wdt, size_t ldw, int O, int K,
                   const void *bias, int bdt, float *y, size_t ldy, lm_cuda_stream st);

// RoPE (rotate-half) of q [n][nq*hd] in place and of k, then k and v into
// the paged cache (HND: [page][K|V][nkv][page_size][hd], kvdt F32 or BF16) at
// slot[t] = page * page_size + offset. cos_sin [positions][hd]: for each
// position the hd/2 cosines, then the hd/2 sines.
int lm_cuda_rope_kv(float *q, size_t ldq, int nq, float *k, size_t ldk, const float *v, size_t ldv, int nkv, int hd,
                    const float *cos_sin, const int *pos, const int *slot, int n, void *kv, int kvdt, int page_size,
                    lm_cuda_stream st);

// Causal attention over pages (src/kernels/cuda/attention.cu).
//   q, out [n][n_heads*hd] (row strides ldq, ldo); token rows grouped by
//   sequence: sequence s owns rows seq_start[s] - seq_start[0] ..
//   seq_start[s+1] - seq_start[0] and its pages pages[s][0..] (row stride
//   ldp); row t sees cache positions 0..pos[t]. Query head h reads KV head
//   h / (n_heads / nkv); scale 1/sqrt(hd); hd <= 256.
// ws: scratch of at least lm_cuda_attention_workspace_bytes() for this
// step's sizes, used only by calls on one stream at a time (the fast path
// runs on a bf16 cache with hd 64 or 128; without ws, or too small a one, or
// other shapes, the simple kernel runs). One launch for a decode step (one
// token per sequence), two otherwise; no host sync (attention.h).
size_t lm_cuda_attention_workspace_bytes(int max_tokens, int n_heads, int max_ctx, int hd);
int lm_cuda_attention(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads, const int *seq_start,
                      int n_seqs, const int *pages, size_t ldp, const int *pos, const void *kv,
                      int kvdt, int page_size, int nkv, int hd, void *ws, size_t ws_bytes, lm_cuda_stream st);
// The simple version: one warp per (token, query head), online softmax.
int lm_cuda_attention_simple(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads,
                             const int *seq_start, int n_seqs, const int *pages, size_t ldp, const int *pos,
                             const void *kv, int kvdt, int page_size, int nkv, int hd, lm_cuda_stream st);

// y[i] = x[idx[i]]
int lm_cuda_gather(const float *x, size_t ldx, const int *idx, float *y, size_t ldy, int m, int cols,
                   lm_cuda_stream st);

// softmax, top-k (ties: lower id), optional renormalisation, sorted by id
int lm_cuda_route(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds, float *w,
                  size_t ldw, lm_cuda_stream st);

// The expert-sorted padded plan (lm_moe_plan); counts also added to
// stats[E] when stats is not NULL.
int lm_cuda_align(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr, int *token_of,
                  int *tiles, int *n_tiles, int *counts, unsigned long long *stats, lm_cuda_stream st);

// h[r] = silu(x[tok] G^T) * (x[tok] U^T) for each packed row r (h f32 or,
// hdt 2, bf16). With tiles
// (MoE): tok = token_of[r], the expert's weights gates[e]/ups[e] where e is
// the tile's expert, rows past n_tiles * B or with token -1 skipped. Without
// (dense): tok = r < rows, weights g0/u0.
int lm_cuda_gateup(const float *x, size_t ldx, int rows, const int *token_of, const int *tiles, const int *n_tiles,
                   int B, const void *const *gates, const void *const *ups, const void *g0, const void *u0, int wdt,
                   size_t ldw, int H, int inter, void *h, int hdt, size_t ldh, lm_cuda_stream st);

// y[r] = h[r] D^T, rows as in lm_cuda_gateup (h of dtype hdt)
int lm_cuda_down(const void *h, int hdt, size_t ldh, int rows, const int *token_of, const int *tiles, const int *n_tiles,
                 int B, const void *const *downs, const void *d0, int wdt, size_t ldw, int inter, int H, float *y,
                 size_t ldy, lm_cuda_stream st);

// out[t] = sum_i w[t][i] * y[row_of[t][i]]
int lm_cuda_combine(const int *row_of, size_t ldr, const float *w, size_t ldw, int n, int k, const float *y,
                    size_t ldy, float *out, size_t ldo, int H, lm_cuda_stream st);

// out[t] += sigmoid(x[t] . g) * y[t]
int lm_cuda_gated_add(const float *x, size_t ldx, const void *g, int gdt, int H, const float *y, size_t ldy,
                      float *out, size_t ldo, int n, lm_cuda_stream st);

// Greedy sampling and the finite check of rows of logits [n][V] (stride
// ldl). params [n][pw] int32: word 0 the temperature (f32 bits; < 0: only
// the check, id -1), word 3 the ids allowed [0, n), word 4 whether banned
// (one byte per id) applies. out [n][2]: the id (argmax, ties to the lower
// id), 1 when the row holds NaN or Inf.
int lm_cuda_sample_greedy(const float *logits, size_t ldl, int n, int V, const int *params, int pw,
                          const unsigned char *banned, int *out, lm_cuda_stream st);

#ifdef __cplusplus
}
#endif

#endif
