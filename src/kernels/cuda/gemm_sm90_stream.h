// Hopper (sm_90a) grouped / dense GEMM for the SMALL-row, memory-bound
// regime (decode: 1..~128 rows per expert or dense call), built to read the
// weights once at HBM bandwidth. Same contract as lm_cuda_gg_run (gemm.h):
// y[r][o] = sum_k A[a_row(r)][k] * W_g[o][k] over the packed rows r of each
// group g; swiglu (bf16 h = silu(A W1^T) * (A W2^T)) or f32 output (+ bias);
// f32 or bf16 activations.
//
// Design (details and the arithmetic in gemm_sm90_stream.cu):
// - Swap AB: weight rows are wgmma's M side (64-row slabs loaded by TMA as
//   64 x 64 boxes with 128-byte swizzle, K-major, as gemm_sm90.cu does),
//   the group's rows (tokens) its N side: blocks of nt rows, nt in 8, 16,
//   32, 64, 96, 128 (256 for f32 output) chosen per call from the expected
//   rows per group, one kernel each (m64n<nt>k16). The tokens' activations
//   are the B operand in shared memory (cp.async gather; f32 rows are
//   staged as f32 and rounded to bf16 by the consumers).
// - CTA of 384 threads, one per SM, persistent: consumer warpgroups 0 and 1
//   (64 weight rows each: a stage covers 128 output columns; with SwiGLU the
//   64 gate rows and the same 64 up rows), one TMA warp, three activation
//   loader warps. A ring of weight stages (~200 KB) and a short ring of
//   activation stages, each guarded by mbarriers.
// - Work: items (group, 128-output slab, block of up to `nt` rows) x k-stages.
//   Stream-K: every CTA takes the same number of stages (a contiguous range,
//   so it streams contiguous weight rows); an item cut between CTAs is summed
//   deterministically: each part stores its partial tile to the workspace,
//   the last to arrive (per-item counter) adds them in CTA order (its own
//   from registers) and stores. When whole items fill the grid well (>= 90%)
//   or there is no workspace, CTAs take whole items round robin instead.
// - Grouped calls: each CTA writes the tensor map of the expert it switches
//   to (a host-encoded template, tensormap.replace of the address, published
//   to a per-CTA global slot): no prep kernel and no launch in between.
//
// Activations: bf16 rows (lda % 8 == 0) or f32 rows (lda % 4 == 0), 16-byte
// aligned. f32 rows are read as f32 while a block holds <= 32 rows (the
// knob f32_nt); larger blocks convert the activations to bf16 in p->scratch
// first (bf16 [a_rows][K], a_rows = n_rows for dense calls) when it is big
// enough, else the blocks are capped at 32 rows.
//
// Limits: K % 8 == 0, ldw % 8 == 0, ldw >= K, 16-byte aligned weight rows
// (TMA; grouped weights are device pointers the launcher cannot check),
// 1 <= n_groups <= 1024, any group sizes (0 included), O and K not
// multiples of the tile. A group with more rows than a block (nt) takes
// several blocks, each reading the weights again: lm_cuda_gg_sm90_run (the
// large-M kernel) is the better choice beyond ~128 rows per group.
//
// Workspace (p->ws, p->ws_bytes): stream-K needs counters for the items and
// room for two partial tiles per CTA; lm_cuda_gg_sm90s_ws_bytes gives an
// upper bound. Zero it once when allocating it; every call leaves the
// counters zero again (the same rule as gemm.h, and the same buffer may
// serve both). Without it (or too small) the kernel takes whole items.
//
// Programmatic dependent launch (p->pdl, as gemm.h): 0 plain launch; >= 1
// the kernel is queued while its predecessor runs. Before griddepcontrol.wait
// it initialises its barriers and, for dense calls (weights are never
// written) or pdl 2 grouped calls (counts written two or more launches
// back, as gemm.h's pdl 2 says; here they must also be final: the work
// list is built from them), builds its work list and issues the weight TMA
// loads of its first ring stages (up to ~200 KB per SM in flight before the
// predecessor has finished). Activations, outputs and the workspace are
// touched only after the wait; each thread lets the dependents launch
// right after its wait.
//
// Grouped calls keep their per-CTA tensor maps in module memory (two areas,
// alternated per call, so a call may overlap its predecessor under PDL):
// grouped calls on different streams must not run concurrently (calls on
// one stream are ordered, which is how the executor runs a layer).
//
// The first call per device asks the device whether this build holds
// sm_90a code (a synchronous copy): make it before capturing a graph.
#ifndef LM_KERNELS_CUDA_GEMM_SM90_STREAM_H
#define LM_KERNELS_CUDA_GEMM_SM90_STREAM_H

#include <stddef.h>

#include "kernels/cuda/gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 when the device is compute capability 9.0, this build carries sm_90a
// code, cuTensorMapEncodeTiled is reachable through the runtime, and the
// operands qualify (see above); 0 otherwise (the caller uses another path).
int lm_cuda_gg_sm90s_supported(const lm_cuda_gg *p);

// Runs the GEMM (p->force, nb, splits, stages, ctas are ignored: see the
// knobs). Returns 0 when queued (or nothing to do: no output, O <= 0,
// n_rows <= 0), else a cudaError_t (cudaErrorNotSupported where
// lm_cuda_gg_sm90s_supported would say 0 for the device,
// cudaErrorInvalidValue for operands it refuses).
int lm_cuda_gg_sm90s_run(const lm_cuda_gg *p, lm_cuda_stream st);

// Workspace bytes that let every call of up to n_rows routed rows (n_groups
// groups, 0: dense) with these O and K use stream-K with the default knobs.
size_t lm_cuda_gg_sm90s_ws_bytes(int n_rows, int n_groups, int O, int K, int swiglu);

// Run-time choices for later calls (kernel lab and tests); 0 = automatic.
typedef struct lm_cuda_gg_sm90s_knobs {
    int kc;      // 64-wide k chunks per stage: 1, 2 or 4 (default 1)
    int stages;  // weight ring depth (default: as many as fit, <= 16)
    int astages; // activation ring depth (default 4, <= the weight ring's)
    int nt;      // rows per block (activation rows per stage: 8..128, 256 for f32 output)
    int mode;    // 1 stream-K, 2 whole items round robin (default: by occupancy)
    int ctas;    // grid (default: one per SM)
    int f32_nt;  // largest block read as f32 (larger: converted to bf16 first; default 32)
} lm_cuda_gg_sm90s_knobs;
// k NULL: back to automatic. Returns 0, or cudaErrorInvalidValue for a bad value.
int lm_cuda_gg_sm90s_set_knobs(const lm_cuda_gg_sm90s_knobs *k);

// What lm_cuda_gg_sm90s_run would launch for p (rows per block, stage
// shape and depth, grid, workspace use, dynamic shared memory, and the
// kernel's registers per thread and local memory from
// cudaFuncGetAttributes), one line; no launch. Returns 0 or a cudaError_t.
int lm_cuda_gg_sm90s_describe(const lm_cuda_gg *p, char *buf, int len);

#ifdef __cplusplus
}
#endif

#endif
