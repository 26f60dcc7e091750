// Token sampling on the GPU (src/kernels/cuda/sample.cu): the CPU sampler's
// semantics (src/engine/sample.c) over rows of logits where they are, so a
// step downloads ids instead of logits. One launch, one CTA of 1024 threads
// per row, no workspace, no host sync; graph-capturable (the grid depends on
// n only; everything per row is read from device memory).
//
// Per row, as lm_sampler_sample_with does, over the ids [0, Ve), Ve =
// min(n_valid, V), that are not banned:
//   - greedy (temperature 0, or one whose 1/T overflows): the largest logit,
//     ties to the lower id;
//   - else p_i = expf((x_i - max) * (1 / T)) in f32 (the CPU's arithmetic);
//     top-k (0 < k < Ve): the k largest p, ties to the lower id; top-p
//     (p < 1): of those, the smallest set of the largest p (ties to the
//     lower id) whose mass reaches top_p * (their total); then u * (kept
//     total) is found walking the kept ids in id order, u in [0, 1) drawn
//     from (seed, stream, step) with util/hash.h's lm_mix64 exactly as
//     sample.c's draw() does. So the GPU and the CPU take the same id for the
//     same logits except where a boundary (the k-th p, the nucleus edge, the
//     draw) falls within rounding of the two sides' sums and exps (CUDA's
//     expf is within 2 ulp of glibc's; sums are added in other orders).
// NaN logits are never drawn (the row is flagged); a row whose largest
// logit is infinite, or that has no valid id, gets the greedy pick (or 0).
//
// How: one pass over the row per warp (32 contiguous spans), keeping per
// 128-id segment (max, sum of exp) for the draw's walk and a candidate
// buffer of each warp's largest logits (512 slots, compacted to its top 256
// when full, order kept, with a threshold shared between warps; at the end
// cut to that threshold and, with top-k or top logprobs, to the m-th largest
// logit, m = max(k, L)); then top-k, the nucleus and the top-L logprobs are
// radix selections over the buffer (12-bit digits on (p, id) keys; masses
// in 2^-44 fixed point, so the result does not depend on the order of
// atomics) and the draw a block scan in id order. When the buffer cannot
// prove its answer (an id left out could tie or enter: tied p across the
// cut, k > 256 with many large logits, a nucleus wider than the buffer, ties
// overflowing a warp's slots), the same selections run over the row in
// global memory instead: exact, ~7 more passes over the row (rare; costly).

#ifndef LM_KERNELS_CUDA_SAMPLE_H
#define LM_KERNELS_CUDA_SAMPLE_H

#include <stddef.h>

#include "kernels/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

// One row's parameters, int32 words (exec.h's lm_sample_row, word for word):
//   0 temperature (f32 bits): > 0 draw; 0 greedy; < 0 check only (id -1)
//   1 top_k (<= 0: off)        2 top_p (f32 bits; >= 1: off)
//   3 n_valid: ids [0, n_valid) may be drawn; <= 0: the row is skipped (id
//     -1, flags 0, nothing read: padding rows of a graph bucket)
//   4 use_banned: banned[id] != 0 ids are never drawn   5 (unused)
//   6-7 seed, 8-9 stream, 10-11 step (uint64, low word first): this draw's
//     RNG key, the sampler's state before the draw (sample.c's step)
#define LM_CUDA_SAMPLE_WORDS 12
#define LM_CUDA_SAMPLE_MAX_V 262144  // ids are 18 bits in the selection keys
#define LM_CUDA_SAMPLE_MAX_TOP 20

// logits [n][V] f32 (row stride ldl), params [n][pw] int32 (pw >= 12),
// banned: one byte per id (read where a row has use_banned), or NULL.
// out [n][2]: the id (-1 for a check-only or skipped row) and the row's
// flags: 1 NaN, 2 +Inf, 4 -Inf anywhere in [0, V) (0: finite; the engine
// fails the step on nonzero).
// Optional (NULL / 0: not computed): logprob [n], the chosen id's
// log-probability under the model's distribution (temperature 1, no top-k /
// top-p, over the valid ids: as generate.c's token_info); top_ids, top_lp
// [n][n_top] (n_top <= 20): the n_top most likely valid ids (ties to the
// lower id) and their log-probabilities, id -1 / -inf past the valid ids.
// Returns the launch's cudaError_t (V > 262144, n_top > 20 or pw < 12:
// cudaErrorInvalidValue).
int lm_cuda_sample(const float *logits, size_t ldl, int n, int V, const int *params, int pw,
                   const unsigned char *banned, int *out, float *logprob, int n_top, int *top_ids, float *top_lp,
                   lm_cuda_stream st);

// Lab switch: 1 forces the global-memory selections (the fallback) on every
// row that samples with top-k / top-p or asks for top logprobs; 0 (default)
// uses them only where the buffer cannot decide.
void lm_cuda_sample_force_global(int on);
// Lab switch: threads per CTA, 1024 (default: 64 registers a thread) or 512
// (128 registers; half the warps to hide latency).
void lm_cuda_sample_threads(int nt);

#ifdef __cplusplus
}
#endif

#endif
