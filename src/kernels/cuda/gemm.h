// Tensor-core GEMMs of the CUDA executor: the grouped expert GEMMs of a MoE
// layer and the dense projections, bf16 weights x bf16 activations with fp32
// accumulation (mma.sync m16n8k16, any sm_80+).
//
//   y[r][o] = sum_k A[a_row(r)][k] * W_g[o][k]      for each packed row r of group g
//
// Rows are grouped (one group per expert, in expert order, each group's rows
// padded to `block` as lm_moe_plan lays them out): group g owns packed rows
// [first_g, first_g + counts[g]) with first_g the sum of the earlier groups'
// padded counts. counts == NULL means one dense group of n_rows rows. a_row
// maps a packed row to its activation row (token_of); NULL is the identity.
//
// swiglu: w2 is given and the output is h[r][o] = bf16(silu(A W1^T) * (A W2^T))
// (the expert's gate and up in one pass, so gate and up rows of the same
// index meet in one thread's registers). Otherwise the output is f32 (+ bias).
//
// Two kernels, chosen per call from the expected rows per group:
// - small (<= 64 rows per group: decode, small batches): memory-bound. Each
//   CTA owns 16 weight rows of one group and streams them once over the
//   whole K (eight warps split K, reduce in shared memory); weight rows are
//   the mma's M (swap AB), tokens its N in blocks of 8. Every thread loads
//   16-byte runs of weights and activations straight into mma fragments:
//   the dot product does not care which k a fragment slot holds, as long as
//   A and B agree, so no shared-memory staging or ldmatrix is needed.
// - large: a 128 x 128 x 32 tiled GEMM, 4-stage cp.async pipeline, ldmatrix,
//   swizzled shared memory; m-blocks of 128 rows never cross a group.
//   Activations must then be bf16 (the launcher converts f32 into `scratch`).
#ifndef LM_KERNELS_CUDA_GEMM_H
#define LM_KERNELS_CUDA_GEMM_H

#include <stddef.h>

#include "kernels/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lm_cuda_gg {
    const void *a;           // activations [.][K], row stride lda
    int a_f32;               // 1: f32, 0: bf16
    size_t lda;
    int a_rows;              // rows of a (tokens): what the large path converts from f32
    const int *a_row;        // [rows]: activation row of each packed row, or NULL
    const int *counts;       // [n_groups] rows per group, or NULL (dense)
    int n_groups, block;     // groups and their padding (MoE)
    int n_rows;              // dense: rows; MoE: routed (token, choice) pairs, a sizing hint
    const void *const *w1;   // [n_groups] bf16 [O][ldw] (device array), or NULL with w1_0
    const void *const *w2;   // swiglu: the up weights, likewise
    const void *w1_0, *w2_0; // dense weights
    size_t ldw;
    int K, O;
    int swiglu;
    const void *bias;        // [O] or NULL (not with swiglu)
    int bias_dt;             // lm_dtype of bias
    void *out;               // swiglu: bf16 [rows][ldo]; else f32 [rows][ldo]
    size_t ldo;
    void *scratch;           // bf16 [a_rows][K] for f32 activations on the large path
    size_t scratch_bytes;    // its size (the launcher refuses a smaller one)
    int force;               // 0 auto, 1 small, 2 large (kernel lab and tests)
} lm_cuda_gg;

// Whether the fast path takes these operands (bf16 weights, K % 8 == 0,
// 16-byte aligned rows); the caller falls back to the simple kernels if not.
int lm_cuda_gg_supported(int wdt, size_t ldw, int K, size_t lda, int a_f32);

int lm_cuda_gg_run(const lm_cuda_gg *p, lm_cuda_stream st);

// Parallel version of lm_cuda_align (one CTA; same outputs, bit for bit).
int lm_cuda_align_fast(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr, int *token_of,
                       int *tiles, int *n_tiles, int *counts, unsigned long long *stats, lm_cuda_stream st);

#ifdef __cplusplus
}
#endif

#endif
