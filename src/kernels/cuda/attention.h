// Paged causal attention of the CUDA executor (src/kernels/cuda/attention.cu).
// The executor calls lm_cuda_attention (kernels.h); this header adds what the
// kernel lab (dev/kernels/attn_cuda.cu) needs to compare the paths.
//
// Two kernels per call when the tensor-core path applies (bf16 KV cache,
// head_dim 64 or 128, a large enough workspace), else the simple kernel:
//
// 1. plan (one CTA): from seq_start and pos on the device, sizes each
//    sequence's work and writes a work list into the workspace. A sequence
//    whose query rows (tokens x G, G = query heads per KV head) fit in 16 is
//    "decode" (16-row tiles), else "prefill" (64-row tiles); rows are the
//    (token, head of the group) pairs of one KV head, so a K/V tile is read
//    once for the whole group. When there are fewer tiles than CTA slots
//    (SMs x CTAs per SM), the KV axis is split into chunks (multiples of 64
//    positions, about total work / CTA slots) so that every slot streams KV.
//    A work item is (sequence, row tile, KV chunk, KV head).
// 2. attention: persistent CTAs of 4 warps take items from an atomic
//    counter; K/V tiles of 64 positions stream from the pages into shared
//    memory (cp.async, 16-byte loads, 2 stages); S = Q K^T and O += P V on
//    bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation), online
//    softmax in fp32 registers. Decode tiles: the 4 warps take different
//    positions of the tile (16 each) and are merged in shared memory;
//    prefill tiles: each warp owns 16 rows and all 64 positions. A split
//    item writes (max, sum, unnormalised output) to the workspace; the last
//    CTA of an item's chunks (an arrival counter) merges them into out.
//
// Precision: q and p are split into two bf16 terms (hi + lo) and each
// product is done twice, so scores and P V are as exact as fp32 to ~1e-5
// (the op tests' 1e-3 budget for a bf16 cache: rounding q and p once to bf16
// alone gives ~3e-3 there). LM_CUDA_ATTN_BF16 runs the single-term variant.
#ifndef LM_KERNELS_CUDA_ATTENTION_H
#define LM_KERNELS_CUDA_ATTENTION_H

#include <stddef.h>

#include "kernels/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LM_CUDA_ATTN_AUTO = 0,    // tensor cores (hi + lo) where they apply, else the simple kernel
    LM_CUDA_ATTN_SIMPLE = 1,  // the simple kernel (one warp per token and head)
    LM_CUDA_ATTN_BF16 = 2,    // like AUTO with q and p rounded once to bf16 (twice the mma rate)
};

// lm_cuda_attention with a choice of path.
int lm_cuda_attention_mode(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads,
                           const int *seq_start, int n_seqs, const int *pages, size_t ldp, const int *pos,
                           const void *kv, int kvdt, int page_size, int nkv, int hd, void *ws, size_t ws_bytes,
                           int mode, lm_cuda_stream st);

// The path the last call in this process took: 1 simple, 2 tensor cores.
int lm_cuda_attention_last_path(void);

#ifdef __cplusplus
}
#endif

#endif
