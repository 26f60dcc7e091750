// Paged causal attention of the CUDA executor (src/kernels/cuda/attention.cu).
// The executor calls lm_cuda_attention (kernels.h); this header adds the
// workspace registration, the graph-replay contract, and what the kernel lab
// (dev/kernels/attn_cuda.cu) needs to compare the paths.
//
// Three paths, chosen on the host from host values only:
//
// 1. decode kernel (n == n_seqs: every sequence can hold one token, as in a
//    decode step; bf16 cache, head_dim 64 or 128): ONE launch, no plan.
//    A CTA per (sequence, KV head, split): grid = n_seqs x nkv x smax, where
//    smax = (CTA slots x 100% / (n_seqs x nkv)), 1..64, lowered until the
//    partial rows fit the workspace. Each CTA reads its sequence's extent
//    (last position + 1) from pos and splits the KV axis itself into
//    min(smax, extent / min_chunk) chunks of whole 64-position tiles, so a
//    short context uses few CTAs and a long one up to smax; CTAs past the
//    sequence's chunk count return at once. Rows are the (token, query head
//    of the group) pairs of one KV head (GQA packing, K/V read once per KV
//    head), 16-row tiles; K/V tiles stream through 3 cp.async stages with
//    each row's page index loaded a tile ahead. A split CTA writes (max,
//    sum, unnormalised row) to the workspace; the last of a (sequence, KV
//    head)'s chunks to arrive (an arrival counter) merges them with
//    parallel loads and puts the counter back to zero.
// 2. plan + persistent kernel (other batches: prefill, chunked prefill,
//    mixed): a one-CTA plan kernel sizes each sequence's work from
//    seq_start and pos and writes a work list; persistent CTAs take items
//    from an atomic counter. Decode-shaped sequences (tokens x G <= 16) get
//    16-row tiles, others 64-row tiles (each warp 16 rows x all 64 positions
//    of a K/V tile); the KV axis is split when there are fewer tiles than CTA
//    slots. Two launches.
// 3. the simple kernel (f32 cache, other head dims, no or too small a
//    workspace): one warp per (token, query head).
//
// Both tensor-core paths: S = Q K^T and O += P V on bf16 mma.sync m16n8k16
// with fp32 accumulation, online softmax in fp32 (exp2 domain). q and p are
// split into two bf16 terms (hi + lo) and each product is done twice, so
// scores and P V are as exact as fp32 to ~1e-5 (the op tests' budget for a
// bf16 cache is 1e-3; rounding q and p once to bf16 gives ~3e-3 there).
// LM_CUDA_ATTN_BF16 runs the single-term variant.
//
// Padding rows: a token with pos[t] < 0 is padding: it reads no KV and its
// out row is not written (any path). A sequence whose tokens are all padding
// costs its CTAs one round trip for seq_start and pos.
//
// CUDA graphs (capture once, replay with new device data). The launch
// configuration, and which path runs, depend only on the host arguments: n,
// n_seqs, n_heads, nkv, hd, page_size, kvdt, the strides ldq/ldo/ldp, the
// pointers, ws_bytes and mode (and the device). These must be the same at
// every replay of a graph. Between replays the DEVICE contents may change:
//   - pos[t]: any position below ldp * page_size, or < 0 for padding;
//   - pages: any page ids of the pool;
//   - seq_start: any non-decreasing values with seq_start[n_seqs] -
//     seq_start[0] <= n. The decode path is fastest when each sequence holds
//     one token (seq_start[s] = seq_start[0] + s); other splits of the tokens
//     are still computed correctly, only slower;
//   - the KV cache and q.
// For a decode step padded to a bucket of N tokens: pass n = n_seqs = N,
// one token per sequence (padded sequences too, seq_start[s + 1] =
// seq_start[s] + 1), pos[t] = -1 for each padded token; its q row is never
// read and its out row never written; its pages row is never read.
// The workspace must not be shared with anything else, nor by two launches
// in flight at once (one stream, or ordered streams).

#ifndef LM_KERNELS_CUDA_ATTENTION_H
#define LM_KERNELS_CUDA_ATTENTION_H

#include <stddef.h>

#include "kernels/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LM_CUDA_ATTN_AUTO = 0,       // tensor cores (hi + lo) where they apply, else the simple kernel
    LM_CUDA_ATTN_SIMPLE = 1,     // the simple kernel (one warp per token and head)
    LM_CUDA_ATTN_BF16 = 2,       // like AUTO with q and p rounded once to bf16 (twice the mma rate)
    LM_CUDA_ATTN_NO_DECODE = 4,  // flag: never the decode kernel (the plan path instead; lab comparisons)
};

// The split decode kernel counts the chunks of each (sequence, KV head) in
// the workspace; those counters must start at zero and each launch leaves
// them so. Call once after allocating a workspace (before any attention
// call that uses it; queued on st): it zeroes them and registers ws, so that
// decode calls are one launch. Without it the launcher zeroes the counters
// it needs before each split decode launch (a memset node: correct, one
// more operation per call). Forget a workspace before freeing it.
int lm_cuda_attention_ws_init(void *ws, size_t ws_bytes, lm_cuda_stream st);
void lm_cuda_attention_ws_forget(const void *ws);

// lm_cuda_attention with a choice of path (LM_CUDA_ATTN_*).
int lm_cuda_attention_mode(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads,
                           const int *seq_start, int n_seqs, const int *pages, size_t ldp, const int *pos,
                           const void *kv, int kvdt, int page_size, int nkv, int hd, void *ws, size_t ws_bytes,
                           int mode, lm_cuda_stream st);

// Decode tuning for the lab (process-wide; 0 restores a default): KV
// positions per split at least (rounded up to 64; default 128), and the
// CTAs aimed at for a long context, in % of the CTA slots (default 100:
// one wave).
void lm_cuda_attention_tune(int min_chunk, int ctas_pct);

// The path the last call in this process took: 1 simple, 2 plan + tensor
// cores, 3 decode kernel.
int lm_cuda_attention_last_path(void);

#ifdef __cplusplus
}
#endif

#endif
