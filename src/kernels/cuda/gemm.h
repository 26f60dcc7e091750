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
// Kernels, chosen per call from the expected rows per group (lm_cuda_gg_run):
// - stream (up to ~100 rows per group, ~50 where a group's weights have
//   >= 16M elements: decode, small and medium batches): memory-bound, so
//   built to keep HBM busy. A persistent grid (two CTAs of 8 warps per SM
//   for blocks of <= 32 rows, else one) walks a list of work items (group,
//   tile of weight rows, block of up to 8*NB of the group's rows, k-split),
//   found from the counts by each CTA with a prefix sum in shared memory.
//   Weight tiles and the rows' activations stream through one cp.async
//   ring per CTA (~100 KB each with two CTAs, ~200 KB with one; >= ~100 KB
//   per SM in flight), continuous across items, so an item boundary is no
//   pipeline bubble; a stage costs each thread a few instructions per
//   16-byte chunk (addresses are set up once per item). mma.sync with swap
//   AB: weight rows are the mma's M, tokens its N; both operands come from shared memory by
//   ldmatrix (f32 activations of small blocks by 8-byte loads, rounded to
//   bf16 there), so each staged activation chunk serves 32..256 weight rows.
//   Split-K (f32 output only, with a workspace) when the items would not
//   fill the grid: the last CTA to finish a tile sums the partial tiles in
//   split order (deterministic, no float atomics).
// - small: the previous streaming kernel (16 weight rows per CTA, operands
//   loaded into registers), kept for comparison (force = 1).
// - large: a 128 x 128 x 32 tiled GEMM, 4-stage cp.async pipeline, ldmatrix,
//   swizzled shared memory; m-blocks of 128 rows never cross a group.
//   Activations must then be bf16 (the launcher converts f32 into `scratch`).
//
// Programmatic dependent launch (pdl, sm_90+): the kernel is queued while
// its predecessor in the stream runs and waits for it in-kernel
// (griddepcontrol.wait) before reading anything the predecessor may write;
// it lets its own dependents launch right after that wait. So when a kernel
// of this file starts, every kernel two or more launches back has finished
// (if the one before it is also from this file, or was launched without
// pdl): pdl = 2 relies on that to prefetch into L2, before waiting, the
// weights its counts select; the counts must have been written two or more
// launches back (the down GEMM: align wrote them before the gate+up GEMM;
// not the gate+up GEMM right after align, which takes pdl = 1). Weights of
// a dense call are prefetched with pdl >= 1 (weights are never written).
// pdl is ignored where the device or the kernel's machine code is older
// than sm_90.
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
    int force;               // 0 auto, 1 small, 2 large, 3 stream (kernel lab and tests)
    // Added fields; zero keeps the behaviour of a caller that does not set them.
    void *ws;                // split-K workspace or NULL (no split-K): zero it once when
    size_t ws_bytes;         //   allocating it; every call leaves it zero again
    int pdl;                 // 0 plain launch; 1 programmatic dependent launch; 2 also
                             //   prefetch the counts' weights before waiting (see above)
    int nb, splits, stages;  // stream kernel: token blocks of 8 per item (1, 2, 4, 8, 16),
    int ctas;                //   split-K factor, ring depth, grid size; 0: chosen by the
                             //   launcher (the kernel lab and the tests force them)
    int occ;                 // stream kernel: CTAs per SM (1, 2; 0: the launcher's choice)
} lm_cuda_gg;

// Whether the fast path takes these operands (bf16 weights, K % 8 == 0,
// 16-byte aligned rows); the caller falls back to the simple kernels if not.
int lm_cuda_gg_supported(int wdt, size_t ldw, int K, size_t lda, int a_f32);

int lm_cuda_gg_run(const lm_cuda_gg *p, lm_cuda_stream st);

// What lm_cuda_gg_run would launch for p, as text ("stream nb 4 splits 1
// stages 8 ctas 132 ..."); no launch. For the kernel lab.
void lm_cuda_gg_describe(const lm_cuda_gg *p, char *buf, size_t cap);

// Workspace bytes that let lm_cuda_gg_run split K as it likes for calls of
// at most this many routed rows, groups, O and K (an upper bound; a smaller
// workspace only limits the split).
size_t lm_cuda_gg_ws_bytes(int n_rows, int n_groups, int O, int K);

// Parallel version of lm_cuda_align (one CTA; same outputs, bit for bit).
int lm_cuda_align_fast(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr, int *token_of,
                       int *tiles, int *n_tiles, int *counts, unsigned long long *stats, lm_cuda_stream st);
// The same with pdl (0 or 1: programmatic dependent launch, as above).
int lm_cuda_align_fast_pdl(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr,
                           int *token_of, int *tiles, int *n_tiles, int *counts, unsigned long long *stats, int pdl,
                           lm_cuda_stream st);

// lm_cuda_route (basic.cu) with a warp per token; same outputs bit for bit
// (the same expf, the softmax sum and the top-k weight sum in the same order).
// E <= 1024, k <= 32.
int lm_cuda_route_fast(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds, float *w,
                       size_t ldw, int pdl, lm_cuda_stream st);

// lm_cuda_route then lm_cuda_align_fast, same outputs bit for bit: one
// launch (one CTA of 512 threads) when n <= 8 tokens and E <= 256 (a decode
// step), else lm_cuda_route_fast and lm_cuda_align_fast_pdl.
int lm_cuda_route_align(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds, float *w,
                        size_t ldw, int B, int *row_of, size_t ldr, int *token_of, int *tiles, int *n_tiles,
                        int *counts, unsigned long long *stats, int pdl, lm_cuda_stream st);

// lm_cuda_combine (basic.cu) with 16-byte accesses where aligned; same
// outputs bit for bit.
int lm_cuda_combine_fast(const int *row_of, size_t ldr, const float *w, size_t ldw, int n, int k, const float *y,
                         size_t ldy, float *out, size_t ldo, int H, int pdl, lm_cuda_stream st);

#ifdef __cplusplus
}
#endif

#endif
