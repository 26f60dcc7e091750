// GPU probe kernels: the two ceilings `lightmoe bench` reports GPU figures
// against — HBM read bandwidth (memory-bound decode) and tensor-core bf16
// throughput (prefill). Launchers as in kernels.h: raw device pointers,
// sizes and a stream; each returns the launch's cudaError_t (0: queued).
// Timing is the caller's (src/exec/cuda_probe.c, with CUDA events).
#ifndef LM_KERNELS_CUDA_PROBE_H
#define LM_KERNELS_CUDA_PROBE_H

#include <stddef.h>

#include "kernels/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

// Threads per CTA of both probe kernels.
#define LM_CUDA_PROBE_THREADS 256

// Independent mma.sync accumulators per warp of the peak kernel.
#define LM_CUDA_PROBE_MMA_CHAINS 8

// Flops of one m16n8k16 mma (per warp): 2 * 16 * 8 * 16.
#define LM_CUDA_PROBE_MMA_FLOPS 4096.0

// Reads n16 16-byte vectors at src (16-byte aligned) once, grid-stride over
// `blocks` CTAs; *sink is written only for one checksum value, which keeps
// the loads alive without a store per thread.
int lm_cuda_probe_read(const void *src, size_t n16, unsigned long long *sink, int blocks, lm_cuda_stream st);

// Each warp of `blocks` CTAs runs `iters` rounds of LM_CUDA_PROBE_MMA_CHAINS
// independent mma.sync.m16n8k16 bf16 x bf16 -> f32 on register operands
// (made from `seed`): blocks * warps * iters * chains * LM_CUDA_PROBE_MMA_FLOPS
// flops. *sink is written only for one result value. Needs sm_80+.
int lm_cuda_probe_mma(long iters, unsigned seed, float *sink, int blocks, lm_cuda_stream st);

#ifdef __cplusplus
}
#endif

#endif
