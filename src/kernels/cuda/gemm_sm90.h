// Hopper (sm_90a) grouped / dense GEMM for the large-M, compute-bound regime:
// TMA for the weights, wgmma with fp32 accumulators, a persistent
// warp-specialised kernel. Same contract as lm_cuda_gg_run's large path
// (gemm.h): y[r][o] = sum_k A[a_row(r)][k] * W_g[o][k] over the packed rows
// r of each group g, swiglu (bf16 h) or f32 output (+ bias).
//
// Design (details in gemm_sm90.cu):
// - CTA of 384 threads: warpgroups 0 and 1 consume (wgmma m64nBNk16, each
//   64 of the tile's 128 rows, all BN columns), warpgroup 2 produces. The
//   producer loads the weight tile with TMA (cp.async.bulk.tensor, 128-byte
//   swizzle, boxes of 64 rows x 64 k) and the activation rows with cp.async
//   (the a_row gather cannot be one 2-D TMA box), both into a ring of
//   shared-memory stages guarded by mbarriers (full: TMA bytes + one
//   cp.async arrival per producer thread; empty: one arrival per consumer
//   warp). setmaxnreg moves registers from the producer to the consumers.
// - Tiles are 128 packed rows x BN weight rows (swiglu: BN/2 gate rows and
//   the same BN/2 up rows, interleaved in units of 64, so silu(g) * u meets
//   in one thread's accumulators). A persistent grid (one CTA per SM) walks
//   the tiles group by group (expert-major), in bands of 16 m-blocks x all
//   n-blocks, so the CTAs running together share weight and activation
//   slices in L2.
// - Grouped weights are a device array of pointers, unknown to the host:
//   a one-block prep kernel writes one tensor map per (group, matrix) into
//   module memory (a host-encoded template with tensormap.replace of the
//   global address, published by tensormap.cp_fenceproxy), plus the
//   groups' first rows and tile offsets; the GEMM's producer acquires each
//   map (fence.proxy.tensormap::generic.acquire) before its first use.
//   Dense calls pass host-encoded maps as __grid_constant__ parameters.
// - Variants 4 and up (s9_body2; the launcher's choice is 6) add, after the
//   first H200 run: tail tiles of <= 64 valid rows on one consumer
//   warpgroup (half the time), raster bands of balanced widths, packed
//   activations by TMA (the down GEMM, dense calls), an epilogue through
//   shared memory and TMA stores, and 2-CTA clusters that multicast the
//   weight boxes (each SM reads 32 instead of 48 KB per stage from L2). The
//   cluster count comes from cudaOccupancyMaxActiveClusters; with none the
//   call runs without clusters.
//
// Activations: bf16 rows (lda % 8 == 0, 16-byte aligned). f32 activations
// (a_f32) are converted into p->scratch first (bf16 [a_rows][K], as gemm.cu's
// large path does; scratch_bytes must hold it), then gathered from there.
//
// Limits: K % 8 == 0, ldw % 8 == 0 and 16-byte aligned weight rows (TMA),
// 1 <= n_groups <= 1024, any group sizes (0 included), O and K not multiples
// of the tile (TMA zero-fills, rows past a group's count are never written),
// up to 2^31 packed rows. The tensor maps and group tables of grouped calls
// live in one module-level buffer: grouped calls on different streams must
// not run concurrently (calls on one stream are ordered, which is how the
// executor runs a layer).
//
// The first call per device asks the device whether this build holds
// sm_90a code (a synchronous copy), and the first of a variant with
// clusters how many clusters fit: make them before capturing a graph.
#ifndef LM_KERNELS_CUDA_GEMM_SM90_H
#define LM_KERNELS_CUDA_GEMM_SM90_H

#include "kernels/cuda/gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 when the device is compute capability 9.0, this build carries sm_90a
// code, cuTensorMapEncodeTiled is reachable through the runtime, and the
// operands qualify (see above); 0 otherwise (the caller uses lm_cuda_gg_run).
int lm_cuda_gg_sm90_supported(const lm_cuda_gg *p);

// Runs the GEMM (p->force is ignored). Returns 0 when queued (or nothing to
// do: no output, O <= 0, n_rows <= 0), else a cudaError_t
// (cudaErrorNotSupported when lm_cuda_gg_sm90_supported would say 0,
// cudaErrorInvalidValue for a short scratch or a bad group count).
int lm_cuda_gg_sm90_run(const lm_cuda_gg *p, lm_cuda_stream st);

// Kernel lab and tests: variants, chosen for later calls (0 auto,
// 1..lm_cuda_gg_sm90_variants()); the name and resources of one.
// 1: 128x256 tiles, 4 stages; 2: 128x128, 6 stages; 3: 1 without the
// consumers' proxy fence; 4: s9_body2 (half tiles, balanced bands, TMA
// activations where packed); 5: 4 + TMA-store epilogue; 6: 5 + 2-CTA
// clusters; 7: 4 + 2-CTA clusters; 8, 9, 10: diagnostics of 6 without
// MMAs, without loads, without the epilogue (timing only: their output is
// not the product, lm_cuda_gg_sm90_diagnostic says 1).
int lm_cuda_gg_sm90_variants(void);
int lm_cuda_gg_sm90_set_variant(int v);
int lm_cuda_gg_sm90_diagnostic(int v);
// Writes a one-line description (tile, stages, threads, shared memory,
// registers per thread from cudaFuncGetAttributes) of variant v (1-based)
// into buf; returns 0 or a cudaError_t.
int lm_cuda_gg_sm90_describe(int v, int swiglu, char *buf, int len);

#ifdef __cplusplus
}
#endif

#endif
