// Hopper streaming GEMM for small row counts: TMA + wgmma (swap AB),
// persistent, warp-specialised, stream-K (contract and outline in
// gemm_sm90_stream.h).
//
// Why it is shaped this way (H200: 132 SMs at ~1.8 GHz, HBM ~4.5 TB/s):
// - Bytes in flight. 4.5 TB/s / 132 SMs = 34 KB/us per SM (~19 B/clock);
//   with ~1.5-2 us of loaded HBM latency an SM must keep >= 50-70 KB of
//   reads outstanding, and more to ride out jitter: the weight ring holds
//   ~200 KB (S stages of 16-32 KB) and the TMA warp keeps S - 1 of them in
//   flight. The activations (a few token rows, read by every CTA: L2 hits)
//   have a ring of their own, 4 stages deep, so that large blocks (nt 128:
//   16 KB a stage) do not take the weights' depth.
//   TMA moves a 64 x 64 bf16 box (8 KB) per instruction from one thread, so
//   the issue cost is a few instructions per stage, not the thousands of
//   16-byte cp.async of the mma.sync stream kernel.
// - Compute is nearly free below ~128 rows. Each weight byte meets N/2
//   multiply-adds (N = the tokens of its block); at 19 B/clock that is
//   9.5 N FMA/clock against 2048 of the tensor cores: 4% at N = 8, 59% at
//   N = 128. So the token count is wgmma's N (m64nNk16, N = the call's
//   block size nt in 8..128, 256 for f32 output) and weights are its M;
//   every staged activation chunk serves the 128 (SwiGLU: 256) weight rows
//   of its stage. One kernel per nt: a group with fewer rows wastes only
//   tensor time, and ptxas spills when several wgmma shapes share a kernel.
// - Balance. Decode work comes in few large pieces (Mixtral gate+up at
//   M = 1: 224 items of 1 MB for 132 SMs: whole items would take two rounds,
//   the second 70% busy, 85% overall). Stream-K gives every CTA the same number of stages of
//   one flattened (item, k-stage) list, contiguous, so each SM streams
//   whole weight rows; an item cut between CTAs pays one partial-tile
//   round trip through L2 (N x 128 floats per warpgroup, ~4 KB at M = 1).
//   Where whole items already fill >= 90% of the grid (e.g. 128 items on
//   132 SMs) the CTAs take whole items instead and skip the fixups.
// - Latency at the edges. A decode GEMM is 5-100 us, so its first and last
//   microseconds matter: no prep kernel (tensor maps of grouped weights are
//   written by the CTA that needs them), no host-known work list (each CTA
//   scans the counts), and with PDL the weights of the first stages are
//   already in flight before the predecessor has finished (dense calls and
//   pdl 2).
//
// Shared memory of a CTA (1024-byte aligned; a stage covers KC chunks of 64 k):
//   W ring [S]:  [CW=2 warpgroups][NM matrices][KC][64 rows][128 B]  (TMA, 128B swizzle)
//   A ring [SA]: [KC][nt rows][128 B] bf16, 128B swizzle (cp.async), or
//                [KC][nt rows][256 B] f32 (cp.async; rounded to bf16 by the consumers)
//   Bp [2 warpgroups][2 parities][KC][nt][128 B]  f32 path only: the rounded rows
//   maps[2] (staging for tensormap.replace), full/empty mbarriers of both rings,
//   small ints, the activation-row offsets of the current item (two buffers),
//   the group tables tP[G + 1] (items before g), tF[G] (first packed row), tC[G].
// 128-byte swizzle: 16-byte chunk c of row r of an 8-row, 1024-byte atom
// sits at chunk c ^ (r % 8): what TMA's CU_TENSOR_MAP_SWIZZLE_128B writes
// and what a wgmma descriptor with layout type 1 reads (the encoding and its
// sources are gemm_sm90.cu's, verified there on an H200; both operands here
// are K-major with SBO 1024 B, k advanced by adding bytes / 16 to the start
// address). The accumulator layout (PTX ISA "WGMMA .m64nNk16 register
// fragment layout for D"): thread l of warp w of the warpgroup holds, for
// each 8-column block i, d[4i], d[4i+1] at row 16w + l/4, columns 8i +
// 2(l%4) + {0,1}, and d[4i+2], d[4i+3] at row 16w + l/4 + 8. Rows are
// weight rows (outputs), columns tokens.
#include <cuda.h>  // CUtensorMap and its enums (types only: nothing links libcuda)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include <utility>

#include "kernels/cuda/gemm_sm90_stream.h"

// The GEMM's device code is for sm_90a only (and the CPU emulator,
// dev/kernels/emu); other targets get an empty kernel the launcher never starts.
#if (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)) || defined(LM_SM90S_EMU)
#define S9S_DEV 1
#else
#define S9S_DEV 0
#endif

#define S9S_THREADS 384      // consumer warpgroups 0, 1; warp 8 TMA; warps 9-11 activation loaders
#define S9S_LOADERS 96
#define S9S_MAXG 1024
#define S9S_MAX_STAGES 16
#define S9S_NSLOT (S9S_MAX_STAGES + 1)  // tensor-map slots per CTA and matrix (see the TMA warp)
#define S9S_MAX_CTAS 160
#define S9S_BOX 8192         // 64 weight rows x 128 bytes
#define S9S_SLAB 128         // output columns (weight rows per matrix) of a stage: 2 warpgroups x 64
#define S9S_PROD_REGS 56     // setmaxnreg: 128 x 56 + 256 x 224 <= 64K registers
#define S9S_CONS_REGS 224

struct s9s_params {
    const void *a;  // activations [.][lda], bf16 or f32 (af32)
    size_t lda;
    const int *a_row;  // packed row -> activation row, or NULL
    int af32;
    const int *counts;  // grouped: [n_groups]; NULL: dense (rows)
    int n_groups, block, rows;
    const void *const *w1, *const *w2;  // grouped weights (device arrays)
    int K, O;
    void *out;
    size_t ldo;
    const void *bias;
    int bias_dt;
    int nt;         // rows per block: the kernel's wgmma N
    int kc;         // 64-wide k chunks per stage
    int stages;     // weight ring depth
    int astages;    // activation ring depth
    int nk;         // stages per item: ceil(K / (64 kc))
    int nsl;        // 128-output slabs: ceil(O / 128)
    int mode;       // 0 auto, 1 stream-K, 2 whole items
    int max_items;  // items the counters cover (0: no stream-K)
    int pre;        // work list and weight loads before griddepcontrol.wait
    int *ws_cnt;    // stream-K: [max_items][2] counters, then
    float *ws_part; //   [2 * gridDim][2 warpgroups][NM][nt / 2][128] partial tiles
    CUtensorMap *maps;  // grouped: this call's slots [gridDim][S9S_NSLOT][2]
};

// Shared-memory layout (offsets from the 1024-aligned base), the same
// arithmetic on the host (sizing) and the device.
struct s9s_layout {
    uint32_t wbytes, abytes, ring_a, bp, maps, bars, ints, arow, tabs, total;
};
__host__ __device__ inline s9s_layout s9s_layout_of(int swi, int af32, int kc, int nt, int S, int SA, int G) {
    s9s_layout L;
    L.wbytes = 2u * (swi ? 2 : 1) * kc * S9S_BOX;          // a weight stage
    L.abytes = (uint32_t)kc * nt * (af32 ? 256 : 128);     // an activation stage: a multiple of 1024 (nt % 8 == 0)
    L.ring_a = (uint32_t)S * L.wbytes;
    L.bp = L.ring_a + (uint32_t)SA * L.abytes;
    L.maps = L.bp + (af32 ? 2u * 2 * kc * nt * 128 : 0);
    L.bars = L.maps + 256;
    L.ints = L.bars + 16u * (S + SA);
    L.arow = L.ints + 128;
    L.tabs = L.arow + 16u * nt;
    L.total = L.tabs + (3u * G + 1) * 4 + 1024;  // + alignment slack of the base
    return L;
}

// Per-CTA tensor-map slots of grouped calls, two areas alternated per call
// (a call may overlap its predecessor under PDL; the one before has finished).
__device__ CUtensorMap g_s9s_maps[2][S9S_MAX_CTAS][S9S_NSLOT][2];
// 1 in the sm_90a image (and the emulator), 0 in the others.
__device__ int g_s9s_has_code = S9S_DEV;

// Programmatic dependent launch (sm_90): wait for the predecessor grid and
// its memory; let the dependents launch. No-ops without the launch attribute.
__device__ __forceinline__ void s9s_griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void s9s_griddep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

#if S9S_DEV
// ------------------------------------------------------- PTX helpers ---
// (small functions so that the emulator's prep.py can swap them for its
// shims; shared-memory addresses are 32-bit shared-window addresses)

__device__ __forceinline__ uint32_t s9s_smem(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void s9s_mbar_init(uint32_t bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
// Makes the initialised barriers visible to the async proxy (TMA's complete_tx).
__device__ __forceinline__ void s9s_fence_mbar_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void s9s_mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void s9s_mbar_arrive_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// True once the phase of parity `parity` has completed (a fresh barrier is
// in phase 0, so waiting for parity 1 returns at once).
__device__ __forceinline__ bool s9s_mbar_try_wait(uint32_t bar, uint32_t parity) {
    uint32_t ok;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok)
        : "r"(bar), "r"(parity)
        : "memory");
    return ok != 0;
}
// One arrival on bar once every cp.async this thread issued so far has landed.
__device__ __forceinline__ void s9s_cp_async_arrive(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void s9s_cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void s9s_cp_async16(uint32_t dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
// TMA: the box at (x = k, y = row) of map into dst, completing `bar`'s
// transaction count by the box's bytes (out-of-bounds elements are zeros).
__device__ __forceinline__ void s9s_tma_2d(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
            "r"(dst),
        "l"(map), "r"(x), "r"(y), "r"(bar)
        : "memory");
}
// A tensor map in global memory just written through the tensormap proxy:
// acquired by the using thread before its first TMA with it.
__device__ __forceinline__ void s9s_tmap_acquire(const CUtensorMap *map) {
    asm volatile("fence.proxy.tensormap::generic.acquire.gpu [%0], 128;\n" ::"l"(map) : "memory");
}
__device__ __forceinline__ void s9s_tmap_replace_addr(uint32_t smap, const void *addr) {
    asm volatile("tensormap.replace.tile.global_address.shared::cta.b1024.b64 [%0], %1;\n" ::"r"(smap), "l"(addr)
                 : "memory");
}
// Copies the 128-byte map at smap to gmap and releases it to the tensormap
// proxy (warp-wide: every lane, same operands).
__device__ __forceinline__ void s9s_tmap_publish(CUtensorMap *gmap, uint32_t smap) {
    asm volatile("tensormap.cp_fenceproxy.global.shared::cta.tensormap::generic.release.gpu.sync.aligned [%0], [%1], 128;\n" ::"l"(gmap),
                 "r"(smap)
                 : "memory");
}
// Generic-proxy writes to shared memory (cp.async, st.shared) made visible
// to the async proxy (wgmma's operand reads).
__device__ __forceinline__ void s9s_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Barrier `id` among `n` threads (whole warps): one warpgroup, or the loaders.
__device__ __forceinline__ void s9s_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

__device__ __forceinline__ void s9s_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void s9s_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void s9s_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator accesses across the
// asynchronous wgmma window.
__device__ __forceinline__ void s9s_fence_reg(float &r) { asm volatile("" : "+f"(r)::"memory"); }
// Keeps the compiler from moving memory accesses across this point.
__device__ __forceinline__ void s9s_compiler_fence() { asm volatile("" ::: "memory"); }

template <int N>
__device__ __forceinline__ void s9s_setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void s9s_setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

// wgmma.mma_async m64nNk16, bf16 x bf16 -> f32, A (weights) and B (tokens)
// from shared memory, both K-major (no transpose): D += A B^T, or D = A B^T
// when scale_d is 0. One function per N of the list (generated: the
// operand lists are mechanical).
__device__ __forceinline__ void s9s_wg_n8(float (&d)[4], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3"
        "}, %4, %5, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void s9s_wg_n16(float (&d)[8], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7"
        "}, %8, %9, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void s9s_wg_n32(float (&d)[16], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void s9s_wg_n64(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void s9s_wg_n96(float (&d)[48], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
        "}, %48, %49, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void s9s_wg_n128(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void s9s_wg_n256(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(scale_d));
}

template <int N>
__device__ __forceinline__ void s9s_mma(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d) {
    if constexpr (N == 8) s9s_wg_n8(d, da, db, scale_d);
    else if constexpr (N == 16) s9s_wg_n16(d, da, db, scale_d);
    else if constexpr (N == 32) s9s_wg_n32(d, da, db, scale_d);
    else if constexpr (N == 64) s9s_wg_n64(d, da, db, scale_d);
    else if constexpr (N == 96) s9s_wg_n96(d, da, db, scale_d);
    else if constexpr (N == 128) s9s_wg_n128(d, da, db, scale_d);
    else s9s_wg_n256(d, da, db, scale_d);
}

// ------------------------------------------------------------ helpers ---

// wgmma descriptor of a K-major bf16 operand in 128-byte-swizzled rows at
// shared address s (8-row atoms of 1024 bytes; 1024-byte aligned apart from
// the k offset within the row): SBO 1024 B, LBO unused (1), layout type 1.
__device__ __forceinline__ uint64_t s9s_desc(uint32_t s) {
    return (uint64_t)((s & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

__device__ __forceinline__ float s9s_bias(const void *b, int dt, int i) {
    if (!b) return 0.0f;
    if (dt == 2) return __uint_as_float((uint32_t)((const uint16_t *)b)[i] << 16);
    if (dt == 1) return __half2float(((const __half *)b)[i]);
    return ((const float *)b)[i];
}

__device__ __forceinline__ float s9s_silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

__device__ __forceinline__ uint32_t s9s_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

// Group tables from the counts (dense: one group of p.rows): tP[g] items
// before group g (tP[G]: all), tF[g] its first packed row (groups padded to
// p.block), tC[g] its rows. Every thread of the CTA: 3 groups each, a scan.
__device__ void s9s_tables(const s9s_params &p, int *tP, int *tF, int *tC, int *scan) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int G = p.counts ? p.n_groups : 1;
    int c[3], u = 0, f = 0;
#pragma unroll
    for (int j = 0; j < 3; j++) {
        const int g = tid * 3 + j;
        int cc = 0;
        if (g < G) cc = p.counts ? __ldcg(p.counts + g) : p.rows;
        cc = cc < 0 ? 0 : cc;
        c[j] = cc;
        u += cc > 0 ? p.nsl * ((cc + p.nt - 1) / p.nt) : 0;
        f += p.counts ? (cc + p.block - 1) / p.block * p.block : cc;
    }
    int iu = u, iF = f;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int a = __shfl_up_sync(0xffffffffu, iu, o), b = __shfl_up_sync(0xffffffffu, iF, o);
        if (lane >= o) iu += a, iF += b;
    }
    if (lane == 31) scan[warp] = iu, scan[12 + warp] = iF;
    __syncthreads();
    int bu = 0, bF = 0;
    for (int w = 0; w < warp; w++) bu += scan[w], bF += scan[12 + w];
    int eu = bu + iu - u, eF = bF + iF - f;
#pragma unroll
    for (int j = 0; j < 3; j++) {
        const int g = tid * 3 + j;
        if (g < G) {
            tP[g] = eu, tF[g] = eF, tC[g] = c[j];
            eu += c[j] > 0 ? p.nsl * ((c[j] + p.nt - 1) / p.nt) : 0;
            eF += p.counts ? (c[j] + p.block - 1) / p.block * p.block : c[j];
        }
    }
    if (tid == S9S_THREADS - 1) tP[G] = bu + iu;
    __syncthreads();
}

struct s9s_item {
    int first, count;  // the group's first packed row and rows
    int g, o0, j0;     // group, first output column, first row (within the group) of the block
    int ntok;          // rows of the block (1..nt)
};

// Item i: groups in order; within a group, 128-output slabs, and within a
// slab the blocks of nt rows (more than one only when a group overflows nt).
__device__ __forceinline__ s9s_item s9s_decode(const s9s_params &p, const int *tP, const int *tF, const int *tC, int i) {
    const int G = p.counts ? p.n_groups : 1;
    int lo = 0, hi = G - 1;  // the last group with tP[g] <= i (it has items)
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (tP[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    s9s_item it;
    const int C = tC[lo], ntb = (C + p.nt - 1) / p.nt, local = i - tP[lo];
    it.g = lo, it.first = tF[lo], it.count = C;
    it.o0 = local / ntb * S9S_SLAB, it.j0 = local % ntb * p.nt;
    it.ntok = min(p.nt, C - it.j0);
    return it;
}

// This CTA's work: stream-K (a contiguous range of the T = items x nk
// stages, cut into one segment per item it touches) or whole items round
// robin. Every role of the CTA walks the same segments.
struct s9s_seg {
    int item, kb, ke;  // stages [kb, ke) of the item
};
struct s9s_walk {
    long long T, cur, end;
    int P, nk, n_items, next_item;
    bool stream;
    __device__ void init(const s9s_params &p, int n_items_) {
        n_items = n_items_, nk = p.nk, T = (long long)n_items * nk, P = (int)gridDim.x;
        stream = p.mode != 2 && n_items > 0 && n_items <= p.max_items;
        if (stream && p.mode == 0) {  // whole items when they fill >= 90% of the grid's rounds
            const long long rounds = (n_items + P - 1) / P;
            if (n_items >= P && 10LL * n_items >= 9LL * P * rounds) stream = false;
        }
        const int c = (int)blockIdx.x;
        if (stream) {
            // at least a third of an item (and 2 stages) per CTA: an item then has
            // at most 4 parts, and its fixup at most 4 round trips through L2
            // (tiny calls, e.g. a router's 1 item, would otherwise be cut in 30)
            const long long per = max(2, (nk + 2) / 3);
            if (T / per < P) P = (int)max(1LL, T / per);  // every CTA below P has a non-empty range
            cur = c < P ? (long long)c * T / P : 0, end = c < P ? (long long)(c + 1) * T / P : 0;
        } else {
            next_item = c;
        }
    }
    __device__ bool next(s9s_seg &s) {
        if (stream) {
            if (cur >= end) return false;
            s.item = (int)(cur / nk), s.kb = (int)(cur % nk);
            s.ke = (int)min((long long)nk, s.kb + (end - cur));
            cur += s.ke - s.kb;
            return true;
        }
        if (next_item >= n_items) return false;
        s.item = next_item, s.kb = 0, s.ke = nk;
        next_item += P;
        return true;
    }
    __device__ long long begin_of(int c) const { return (long long)c * T / P; }
    // the CTA whose range holds stage x
    __device__ int owner(long long x) const { return (int)(((x + 1) * P + T - 1) / T - 1); }
    // partial slot of CTA c for item i: its first item in 2c, its last in 2c + 1
    __device__ int slot(int c, int i) const { return begin_of(c) / nk == i ? 2 * c : 2 * c + 1; }
};

// Consumer state (per thread; both warpgroups run the same sequence).
struct s9s_cons {
    unsigned char *gsm;  // generic address of the shared base
    uint32_t base, fullw, emptyw, fulla, emptya, ring_a, bp;
    uint32_t wbytes, abytes;
    int S, SA, kc, nt;
    int s, sa;          // weight and activation ring slots
    uint32_t ph, pha;   // their phase parities
    uint32_t par;  // f32 path: which of the two rounded-row buffers
    int wg, warp, lane, t;
    int *s_last;
};

// The rows of stage slot `src` (f32 [KC][nt][64]) rounded to bf16 into the
// 128B-swizzled [KC][nt][128 B] at dst: rows < n (the item's N), chunks < kcn.
// Rows past the block's count were never loaded: whatever they hold reaches
// only columns that are never stored.
__device__ __forceinline__ void s9s_round_rows(const s9s_cons &C, uint32_t src, uint32_t dst, int kcn, int n) {
    const int total = kcn * n * 8;
    for (int w = C.t; w < total; w += 128) {
        const int c8 = w & 7, r = w >> 3, j = r % n, kc = r / n;
        const float4 *s = (const float4 *)(C.gsm + (src - C.base) + ((size_t)(kc * C.nt + j) * 64 + c8 * 8) * 4);
        const float4 x = s[0], y = s[1];
        uint4 v;
        v.x = s9s_pack_bf16(x.x, x.y), v.y = s9s_pack_bf16(x.z, x.w);
        v.z = s9s_pack_bf16(y.x, y.y), v.w = s9s_pack_bf16(y.z, y.w);
        *(uint4 *)(C.gsm + (dst - C.base) + (size_t)(kc * C.nt + j) * 128 + ((c8 ^ (j & 7)) << 4)) = v;
    }
}

// One segment of one item for one consumer warpgroup: its 64 weight rows of
// the item's slab (per matrix) x N (= nt) token columns, over stages [kb, ke); then
// the store (whole item) or the stream-K fixup. The wgmma path is the same
// in every warpgroup and stage (no branch around it: ptxas serialises
// wgmma in divergent code): a warpgroup whose rows are past O multiplies
// whatever its stage area holds and stores nothing; every stage carries all
// KC chunks (zeros past K: TMA's out-of-bounds fill and the loaders' zero
// fill), so only the loop count is a run-time value. (ptxas notes, C7519,
// that it adds a warpgroup.arrive between the wgmmas of that run-time kc
// loop: an ordering point, not the serialisation of C7510-C7520.)
template <int N, bool SWI>
__device__ __forceinline__ void s9s_consume(const s9s_params &p, s9s_cons &C, const s9s_walk &W, const s9s_item &it,
                                            const s9s_seg &sg) {
    constexpr int NM = SWI ? 2 : 1, NA = N / 2;
    float acc[NM][NA];
    const bool active = it.o0 + 64 * C.wg < p.O;  // this warpgroup's rows exist (uniform in the warpgroup)
    int prev = -1, preva = -1;
    for (int kt = sg.kb; kt < sg.ke; kt++) {
        while (!s9s_mbar_try_wait(C.fullw + 8u * C.s, C.ph)) {
        }
        while (!s9s_mbar_try_wait(C.fulla + 8u * C.sa, C.pha)) {
        }
        const uint32_t st = C.base + (uint32_t)C.s * C.wbytes;
        uint32_t bsrc = C.ring_a + (uint32_t)C.sa * C.abytes;
        if (p.af32) {
            // the buffer was last read by the wgmma of two stages back, done
            // since the previous stage's wait_group 1
            const uint32_t dst = C.bp + (uint32_t)((C.wg * 2 + C.par) * C.kc * C.nt * 128);
            s9s_round_rows(C, bsrc, dst, C.kc, (it.ntok + 7) & ~7);
            s9s_fence_proxy_async();
            s9s_bar_sync(1 + C.wg, 128);
            // the f32 rows are read (by every thread of this warpgroup): their slot is free
            if (C.lane == 0) s9s_mbar_arrive(C.emptya + 8u * C.sa);
            bsrc = dst, C.par ^= 1;
        } else {
            s9s_fence_proxy_async();  // the cp.async (generic proxy) rows, read by wgmma (async proxy)
        }
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int i = 0; i < NA; i++) s9s_fence_reg(acc[m][i]);
        s9s_wgmma_fence();
        for (int kc = 0; kc < C.kc; kc++)
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint64_t db = s9s_desc(bsrc + (uint32_t)(kc * C.nt * 128 + k * 32));
                const int acc_on = kt > sg.kb || kc > 0 || k > 0;
#pragma unroll
                for (int m = 0; m < NM; m++)
                    s9s_mma<N>(acc[m], s9s_desc(st + (uint32_t)(((C.wg * NM + m) * C.kc + kc) * S9S_BOX + k * 32)), db,
                               acc_on);
            }
        s9s_wgmma_commit();
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int i = 0; i < NA; i++) s9s_fence_reg(acc[m][i]);
        s9s_wgmma_wait<1>();  // the previous stage's group is done: hand its slots back
        if (prev >= 0 && C.lane == 0) {
            s9s_mbar_arrive(C.emptyw + 8u * prev);
            if (!p.af32) s9s_mbar_arrive(C.emptya + 8u * preva);
        }
        prev = C.s, preva = C.sa;
        if (++C.s == C.S) C.s = 0, C.ph ^= 1;
        if (++C.sa == C.SA) C.sa = 0, C.pha ^= 1;
    }
    s9s_wgmma_wait<0>();
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int i = 0; i < NA; i++) s9s_fence_reg(acc[m][i]);
    if (C.lane == 0) {
        s9s_mbar_arrive(C.emptyw + 8u * prev);
        if (!p.af32) s9s_mbar_arrive(C.emptya + 8u * preva);
    }
    if (!active) return;

    if (W.stream && (sg.kb > 0 || sg.ke < W.nk)) {
        // Stream-K fixup: partial tile to this CTA's slot; the last of the
        // item's CTAs to arrive sums all slots in CTA order (its own re-read
        // too), so the sum does not depend on who came last. A slot holds,
        // per (matrix, 4 accumulators), the 128 threads' float4s: coalesced.
        const int me = (int)blockIdx.x;
        const long long s0 = (long long)sg.item * W.nk;
        const int c_lo = W.owner(s0), c_hi = W.owner(s0 + W.nk - 1);
        const size_t wg_f4 = (size_t)NM * (p.nt / 8) * 128;  // float4s of one warpgroup's slot
        auto part = [&](int c) {
            return (float4 *)p.ws_part + ((size_t)W.slot(c, sg.item) * 2 + C.wg) * wg_f4 + C.t;
        };
        float4 *mine = part(me);
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int i = 0; i < NA / 4; i++)
                __stcg(mine + (m * (p.nt / 8) + i) * 128,
                       make_float4(acc[m][4 * i], acc[m][4 * i + 1], acc[m][4 * i + 2], acc[m][4 * i + 3]));
        __threadfence();
        s9s_bar_sync(1 + C.wg, 128);
        int *cnt = p.ws_cnt + (size_t)sg.item * 2 + C.wg;
        if (C.t == 0) C.s_last[C.wg] = atomicAdd(cnt, 1) == c_hi - c_lo;
        s9s_bar_sync(1 + C.wg, 128);
        if (!C.s_last[C.wg]) return;
        __threadfence();
        // chunks of 8 float4 per thread (4 beyond 96 accumulators), a compiler
        // barrier between them, so that at most 32 (16) loaded values are live
        // next to the accumulators (ptxas would otherwise start every load at
        // once and spill)
        constexpr int F4 = NA / 4, CH = NM * NA > 96 ? 4 : 8;
#pragma unroll
        for (int c0 = 0; c0 < NM * F4; c0 += CH) {
            for (int c = c_lo; c <= c_hi; c++) {
                const float4 *q = part(c);
#pragma unroll
                for (int x = c0; x < c0 + CH && x < NM * F4; x++) {
                    const int m = x / F4, i = x % F4;
                    const float4 v = __ldcg(q + (m * (p.nt / 8) + i) * 128);
                    if (c == c_lo) {
                        acc[m][4 * i] = v.x, acc[m][4 * i + 1] = v.y, acc[m][4 * i + 2] = v.z, acc[m][4 * i + 3] = v.w;
                    } else {
                        acc[m][4 * i] += v.x, acc[m][4 * i + 1] += v.y, acc[m][4 * i + 2] += v.z, acc[m][4 * i + 3] += v.w;
                    }
                }
            }
            s9s_compiler_fence();
        }
        if (C.t == 0) *cnt = 0;  // every part has arrived: ready for the next call
    }

    // Store: this thread's outputs o (row 16 warp + lane / 4 of the
    // warpgroup's 64) and o + 8, columns j = 8 i + 2 (lane % 4) + {0, 1};
    // rows past the block's count and outputs past O are not written.
    const int o = it.o0 + 64 * C.wg + 16 * C.warp + (C.lane >> 2), jq = 2 * (C.lane & 3);
    const bool ok0 = o < p.O, ok1 = o + 8 < p.O;
    const size_t at0 = ((size_t)it.first + it.j0 + jq) * p.ldo + o;
    if constexpr (SWI) {
        __nv_bfloat16 *out = (__nv_bfloat16 *)p.out + at0;
#pragma unroll
        for (int i = 0; i < N / 8; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = 8 * i + jq + (e & 1);
                if (j < it.ntok && ((e & 2) ? ok1 : ok0))
                    out[(size_t)(8 * i + (e & 1)) * p.ldo + 8 * (e >> 1)] =
                        __float2bfloat16(s9s_silu_mul(acc[0][4 * i + e], acc[1][4 * i + e]));
            }
    } else {
        float *out = (float *)p.out + at0;
        const float b0 = ok0 ? s9s_bias(p.bias, p.bias_dt, o) : 0.0f, b1 = ok1 ? s9s_bias(p.bias, p.bias_dt, o + 8) : 0.0f;
#pragma unroll
        for (int i = 0; i < N / 8; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = 8 * i + jq + (e & 1);
                if (j < it.ntok && ((e & 2) ? ok1 : ok0))
                    out[(size_t)(8 * i + (e & 1)) * p.ldo + 8 * (e >> 1)] = acc[0][4 * i + e] + ((e & 2) ? b1 : b0);
            }
    }
}

// ---------------------------------------------------------- the kernel ---

template <int NT, bool SWI>
__device__ __forceinline__ void s9s_body(const s9s_params &p, const CUtensorMap *dm1, const CUtensorMap *dm2) {
    constexpr int NM = SWI ? 2 : 1;
    extern __shared__ __align__(1024) unsigned char s9s_sm[];
    // the swizzle patterns repeat every 1024 bytes: align the ring to that
    const uint32_t raw = s9s_smem(s9s_sm), base = raw + ((1024u - (raw & 1023u)) & 1023u);
    unsigned char *gsm = s9s_sm + (base - raw);
    const int G = p.counts ? p.n_groups : 1, S = p.stages, SA = p.astages;
    const s9s_layout L = s9s_layout_of(SWI, p.af32, p.kc, p.nt, S, SA, G);
    const uint32_t fullw = base + L.bars, emptyw = fullw + 8u * S, fulla = emptyw + 8u * S, emptya = fulla + 8u * SA;
    int *ints = (int *)(gsm + L.ints);  // s_last[2], scan[24]
    long long *arow = (long long *)(gsm + L.arow);
    int *tP = (int *)(gsm + L.tabs), *tF = tP + G + 1, *tC = tF + G;

    const int tid = threadIdx.x;
    if (tid == 0) {
        for (int s = 0; s < S; s++) {
            s9s_mbar_init(fullw + 8u * s, 1);   // the TMA warp's expect_tx
            s9s_mbar_init(emptyw + 8u * s, 8);  // one arrival per consumer warp
        }
        for (int s = 0; s < SA; s++) {
            s9s_mbar_init(fulla + 8u * s, S9S_LOADERS);  // the loaders' cp.async arrivals
            s9s_mbar_init(emptya + 8u * s, 8);
        }
        s9s_fence_mbar_init();
    }
    if (!p.pre) s9s_griddep_wait();  // the counts may be the predecessor's
    s9s_tables(p, tP, tF, tC, ints + 2);  // (its barriers also publish the mbarrier init)
    s9s_walk W;
    W.init(p, tP[G]);
    s9s_seg sg;

    if (tid >= 256) {
        s9s_setmaxnreg_dec<S9S_PROD_REGS>();
        if (tid < 288) {
            // ------------------------------------------------ TMA warp ---
            // Weight boxes of every stage; with `pre` the first S stages go
            // out before griddepcontrol.wait (weights are never written).
            // Grouped: on a switch to another expert the warp writes its
            // tensor maps into the next of this CTA's slots. A slot is
            // rewritten only S9S_NSLOT switches later, after the empty wait
            // of a stage issued S9S_NSLOT - 1 >= S stages after its last use:
            // the loads that used it have landed by then.
            const int lane = tid & 31;
            const uint32_t smap = base + L.maps;
            const CUtensorMap *mp[2] = {dm1, dm2};
            int cur_g = -1, sw = 0, s = 0, issued = 0;
            uint32_t ph = 0;
            bool waited = !p.pre;
            if (waited) s9s_griddep_launch();
            while (W.next(sg)) {
                const s9s_item it = s9s_decode(p, tP, tF, tC, sg.item);
                const int nwg = p.O - it.o0 > 64 ? 2 : 1;
                for (int kt = sg.kb; kt < sg.ke; kt++) {
                    if (!waited && issued == S) s9s_griddep_wait(), s9s_griddep_launch(), waited = true;
                    // lane 0 alone polls: the other lanes add nothing to the slot's
                    // cycle, so one that polled late could find it freed a second
                    // time (the same parity again) and wait for a phase long gone
                    if (lane == 0)
                        while (!s9s_mbar_try_wait(emptyw + 8u * s, ph ^ 1)) {
                        }
                    __syncwarp();
                    if (p.counts && it.g != cur_g) {
                        CUtensorMap *slot = p.maps + ((size_t)blockIdx.x * S9S_NSLOT + sw % S9S_NSLOT) * 2;
                        for (int m = 0; m < NM; m++) {
                            ((uint32_t *)(gsm + L.maps + 128 * m))[lane] = ((const uint32_t *)dm1)[lane];
                            __syncwarp();
                            if (lane == 0) s9s_tmap_replace_addr(smap + 128 * m, (m ? p.w2 : p.w1)[it.g]);
                            __syncwarp();
                            s9s_tmap_publish(slot + m, smap + 128 * m);
                            __syncwarp();
                            if (lane == 0) s9s_tmap_acquire(slot + m);
                            mp[m] = slot + m;
                        }
                        cur_g = it.g, sw++;
                    }
                    if (lane == 0) {
                        const int k0 = kt * 64 * p.kc;
                        const uint32_t st = base + (uint32_t)s * L.wbytes;
                        s9s_mbar_arrive_tx(fullw + 8u * s, (uint32_t)(nwg * NM * p.kc * S9S_BOX));
                        for (int w = 0; w < nwg; w++)
                            for (int m = 0; m < NM; m++)
                                for (int kc = 0; kc < p.kc; kc++)
                                    s9s_tma_2d(st + (uint32_t)(((w * NM + m) * p.kc + kc) * S9S_BOX), mp[m], k0 + kc * 64,
                                               it.o0 + 64 * w, fullw + 8u * s);
                    }
                    __syncwarp();
                    issued++;
                    if (++s == S) s = 0, ph ^= 1;
                }
            }
            if (!waited) s9s_griddep_wait(), s9s_griddep_launch();
        } else {
            // ---------------------------------------------- loaders ---
            // The block's activation rows, gathered (a_row) into the stage's
            // A area: cp.async 16 bytes per chunk, rows >= the block's count
            // not loaded at all (wgmma's column j reads only B row j, and
            // those columns are never stored), k >= K zero-filled (they meet
            // zero weights, but must not be NaN).
            if (p.pre) s9s_griddep_wait();
            s9s_griddep_launch();
            const int lt = tid - 288;
            const int cpr = p.af32 ? 16 : 8;  // 16-byte chunks per row of a 64-wide k chunk
            int s = 0, buf = 0;
            uint32_t ph = 0;
            while (W.next(sg)) {
                const s9s_item it = s9s_decode(p, tP, tF, tC, sg.item);
                long long *ar = arow + buf * p.nt;  // two buffers: a lagging loader may still read the other
                buf ^= 1;
                for (int j = lt; j < it.ntok; j += S9S_LOADERS) {
                    const int r = it.first + it.j0 + j, a = p.a_row ? __ldcg(p.a_row + r) : r;
                    ar[j] = a >= 0 ? (long long)a * (long long)p.lda : -1;
                }
                s9s_bar_sync(3, S9S_LOADERS);
                for (int kt = sg.kb; kt < sg.ke; kt++) {
                    const int k0 = kt * 64 * p.kc;
                    while (!s9s_mbar_try_wait(emptya + 8u * s, ph ^ 1)) {
                    }
                    const uint32_t dst0 = base + L.ring_a + (uint32_t)s * L.abytes;
                    const int nq = p.kc * it.ntok * cpr;
                    for (int q = lt; q < nq; q += S9S_LOADERS) {
                        const int c = q % cpr, r = q / cpr, j = r % it.ntok, kc = r / it.ntok;
                        const long long off = ar[j];
                        if (p.af32) {
                            const int k = k0 + kc * 64 + c * 4;
                            const bool ok = off >= 0 && k < p.K;
                            s9s_cp_async16(dst0 + (uint32_t)((kc * p.nt + j) * 256 + c * 16),
                                           ok ? (const void *)((const float *)p.a + off + k) : p.a, ok);
                        } else {
                            const int k = k0 + kc * 64 + c * 8;
                            const bool ok = off >= 0 && k < p.K;
                            s9s_cp_async16(dst0 + (uint32_t)((kc * p.nt + j) * 128 + ((c ^ (j & 7)) << 4)),
                                           ok ? (const void *)((const uint16_t *)p.a + off + k) : p.a, ok);
                        }
                    }
                    s9s_cp_async_arrive(fulla + 8u * s);
                    if (++s == SA) s = 0, ph ^= 1;
                }
            }
            s9s_cp_async_wait_all();  // leave no copy of this thread in flight past its exit
        }
    } else {
        // ------------------------------------------------ consumers ---
        s9s_setmaxnreg_inc<S9S_CONS_REGS>();
        if (p.pre) s9s_griddep_wait();  // outputs and the workspace: after the predecessor
        s9s_griddep_launch();
        s9s_cons C;
        C.gsm = gsm, C.base = base, C.fullw = fullw, C.emptyw = emptyw, C.fulla = fulla, C.emptya = emptya;
        C.ring_a = base + L.ring_a, C.bp = base + L.bp;
        C.wbytes = L.wbytes, C.abytes = L.abytes, C.S = S, C.SA = SA, C.kc = p.kc, C.nt = p.nt;
        C.s = 0, C.sa = 0, C.ph = 0, C.pha = 0, C.par = 0;
        C.wg = tid >> 7, C.warp = (tid >> 5) & 3, C.lane = tid & 31, C.t = tid & 127;
        C.s_last = ints;
        while (W.next(sg)) {
            const s9s_item it = s9s_decode(p, tP, tF, tC, sg.item);
            s9s_consume<NT, SWI>(p, C, W, it, sg);
        }
    }
}

#endif  // S9S_DEV

// f32 activations -> bf16 [rows][cols] (blocks too big to stage as f32).
__global__ void k_s9s_to_bf16(const float *x, size_t ldx, int rows, int cols, __nv_bfloat16 *y) {
    s9s_griddep_wait();
    s9s_griddep_launch();
    for (int r = blockIdx.y; r < rows; r += gridDim.y)  // gridDim.y is at most 65535
        for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2; c < cols; c += gridDim.x * blockDim.x * 2) {
            float2 v = *(const float2 *)(x + (size_t)r * ldx + c);  // cols is even (K % 8 == 0)
            *(__nv_bfloat162 *)(y + (size_t)r * cols + c) = __floats2bfloat162_rn(v.x, v.y);
        }
}

// One kernel per block size NT (wgmma's N) and epilogue: with several
// wgmma shapes in one kernel ptxas spills (each alone does not), and the
// columns of a group smaller than NT only cost tensor time, which is spare.
template <int NT, bool SWI>
__global__ void __launch_bounds__(S9S_THREADS, 1)
    k_s9s_gemm(const __grid_constant__ s9s_params p, const __grid_constant__ CUtensorMap dm1,
               const __grid_constant__ CUtensorMap dm2) {
#if S9S_DEV
    s9s_body<NT, SWI>(p, &dm1, &dm2);
#endif
}

// ------------------------------------------------------------ launchers ---

// cuTensorMapEncodeTiled's signature (cuda.h), reached through the runtime
// so that nothing links against libcuda.
typedef CUresult (*s9s_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                  const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

#define S9S_MAXDEV 64
static int g_s9s_dev_ok[S9S_MAXDEV];  // 0 unknown, 1 yes, -1 no
static int g_s9s_sms[S9S_MAXDEV], g_s9s_optin[S9S_MAXDEV];
static int g_s9s_par[S9S_MAXDEV];  // the tensor-map area of the next grouped call
static s9s_encode_fn g_s9s_encode;
static lm_cuda_gg_sm90s_knobs g_s9s_knobs;

static int s9s_device_ok(int dev) {
    if (dev < 0 || dev >= S9S_MAXDEV) return 0;
    if (g_s9s_dev_ok[dev]) return g_s9s_dev_ok[dev] > 0;
    int ok = 0, major = 0, minor = 0, has = 0, failed = 0;
    failed |= cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess;
    failed |= cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess;
    failed |= cudaDeviceGetAttribute(&g_s9s_sms[dev], cudaDevAttrMultiProcessorCount, dev) != cudaSuccess;
    failed |= cudaDeviceGetAttribute(&g_s9s_optin[dev], cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess;
    if (!failed && major == 9 && minor == 0) {
        // the image loaded for this device: sm_90a code, or PTX of another target JIT-compiled (empty kernels)?
        failed |= cudaMemcpyFromSymbol(&has, g_s9s_has_code, sizeof has) != cudaSuccess;
        if (!failed && has == 1 && !g_s9s_encode) {
            void *fn = NULL;
            cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
            if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) ==
                    cudaSuccess &&
                q == cudaDriverEntryPointSuccess && fn)
                g_s9s_encode = (s9s_encode_fn)fn;
            else
                failed = 1;
        }
        ok = !failed && has == 1 && g_s9s_encode;
    }
    if (failed) (void)cudaGetLastError();  // our failed query must not show as the caller's launch error
    g_s9s_dev_ok[dev] = ok ? 1 : -1;
    return ok;
}

static int s9s_operands_ok(const lm_cuda_gg *p) {
    if (p->K <= 0 || p->K % 8 || p->O <= 0 || p->ldw % 8 || p->ldw < (size_t)p->K || p->ldo < (size_t)p->O) return 0;
    if (!p->a || (uintptr_t)p->a % 16) return 0;
    if (p->a_f32 ? p->lda % 4 || p->lda < (size_t)p->K : p->lda % 8 || p->lda < (size_t)p->K) return 0;
    if (p->swiglu && p->bias) return 0;
    if (p->counts) {
        if (p->n_groups < 1 || p->n_groups > S9S_MAXG || p->block < 1 || !p->w1 || (p->swiglu && !p->w2)) return 0;
    } else if (!p->w1_0 || (uintptr_t)p->w1_0 % 16 || (p->swiglu && (!p->w2_0 || (uintptr_t)p->w2_0 % 16))) {
        return 0;
    }
    return p->ldw * 2 < ((size_t)1 << 40);
}

extern "C" int lm_cuda_gg_sm90s_supported(const lm_cuda_gg *p) {
    int dev;
    if (!p || cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return s9s_device_ok(dev) && s9s_operands_ok(p);
}

extern "C" int lm_cuda_gg_sm90s_set_knobs(const lm_cuda_gg_sm90s_knobs *k) {
    if (!k) {
        g_s9s_knobs = lm_cuda_gg_sm90s_knobs();
        return 0;
    }
    if ((k->kc && k->kc != 1 && k->kc != 2 && k->kc != 4) || k->stages < 0 || k->stages == 1 ||
        k->stages > S9S_MAX_STAGES || k->astages < 0 || k->astages == 1 || k->astages > S9S_MAX_STAGES || k->nt < 0 ||
        k->nt > 256 || k->mode < 0 || k->mode > 2 || k->ctas < 0 || k->ctas > S9S_MAX_CTAS || k->f32_nt < 0 ||
        k->f32_nt > 256)
        return (int)cudaErrorInvalidValue;
    g_s9s_knobs = *k;
    return 0;
}

// The block sizes (wgmma's N), one kernel each: a block size rounded up
// from n; the largest entry <= n.
static const int S9S_NS[] = {8, 16, 32, 64, 96, 128, 256};
static int s9s_n_up(int n) {
    for (int x : S9S_NS)
        if (x >= n) return x;
    return 256;
}
static int s9s_n_down(int n) {
    int r = 8;
    for (int x : S9S_NS)
        if (x <= n) r = x;
    return r;
}

typedef void (*s9s_kernel_t)(s9s_params, CUtensorMap, CUtensorMap);
template <bool SWI>
static s9s_kernel_t s9s_kernel_swi(int nt) {
    switch (nt) {
    case 8: return k_s9s_gemm<8, SWI>;
    case 16: return k_s9s_gemm<16, SWI>;
    case 32: return k_s9s_gemm<32, SWI>;
    case 64: return k_s9s_gemm<64, SWI>;
    case 96: return k_s9s_gemm<96, SWI>;
    case 128: return k_s9s_gemm<128, SWI>;
    default: return SWI ? NULL : k_s9s_gemm<256, false>;  // SwiGLU blocks stop at 128 (2 x 64 accumulators)
    }
}
static s9s_kernel_t s9s_kernel(int nt, bool swi) { return swi ? s9s_kernel_swi<true>(nt) : s9s_kernel_swi<false>(nt); }

// What a call runs.
struct s9s_plan {
    int nt, kc, S, SA, wbytes, abytes, nk, nsl, grid, mode, max_items, pre;
    bool af32, convert;
    long items_ub;
    size_t smem, ws_need;
};

static long s9s_cdiv(long a, long b) { return (a + b - 1) / b; }

// The plan of a call of n routed rows (G groups, 0: dense). ws_bytes: the
// workspace on offer (0: none); can_convert: a scratch big enough to
// convert f32 activations. Returns 0, or -1 if nothing fits.
static int s9s_make_plan(int swi, int G, int n, int K, int O, int af32, bool can_convert, int pdl, size_t ws_bytes,
                         const lm_cuda_gg_sm90s_knobs &kn, int sms, int optin, s9s_plan *pl) {
    const int ntmax = swi ? 128 : 256, NM = swi ? 2 : 1;
    int nt = kn.nt;
    if (nt <= 0) {
        if (G > 0) {
            // rows per group with headroom for uneven routing: mean + 4 sd
            // (Poisson-like) + a block; more rows take a second block
            const int groups = G < n ? G : n;
            const double mu = (double)n / groups, est = mu + 4 * sqrt(mu) + 8;
            nt = est < n ? (int)est : n;
        } else {
            nt = n;
        }
    }
    nt = s9s_n_up(nt < ntmax ? nt : ntmax);
    if (nt > ntmax) nt = ntmax;
    bool convert = false;
    if (af32) {
        const int f32_nt = kn.f32_nt > 0 ? kn.f32_nt : 32;
        if (nt > f32_nt) {
            if (can_convert) convert = true, af32 = 0;
            else nt = s9s_n_down(f32_nt);
        }
    }
    // One 64-wide chunk per stage by default: a consumer holds a stage until
    // the next has landed (wait_group 1), so S - 1 stages are in flight and
    // smaller stages keep more bytes in flight (SwiGLU: 5 x 32 KB against
    // 2 x 64 KB with kc 2); TMA's 256-byte L2 promotion still fetches 256
    // contiguous bytes of a weight row at a time. The activation ring takes
    // 4 or 3 stages (L2 hits: a bf16 slot is refilled ~SA - 2 stages ahead of
    // its use), whichever leaves more weight bytes in flight (nt 128 SwiGLU:
    // 3, for a 5th weight stage); 2 only where nothing else fits.
    int kc = kn.kc > 0 ? kn.kc : 1, S = 0, SA = 0;
    s9s_layout L;
    for (;; kc /= 2) {
        const s9s_layout L0 = s9s_layout_of(swi, af32, kc, nt, 0, 0, G > 0 ? G : 1);
        auto fit = [&](int sa) {  // weight stages that fit next to sa activation stages (+ two mbarriers a stage)
            const long rest = (long)optin - (long)L0.total - (long)sa * ((long)L0.abytes + 16);
            int w = rest > 0 ? (int)(rest / ((long)L0.wbytes + 16)) : 0;
            if (w > S9S_MAX_STAGES) w = S9S_MAX_STAGES;
            if (kn.stages >= 2 && kn.stages < w) w = kn.stages;
            return w;
        };
        const int hi = kn.astages >= 2 ? kn.astages : 4, lo = kn.astages >= 2 ? kn.astages : 3;
        S = 0, SA = hi;
        for (int sa = hi; sa >= lo; sa--) {
            const int w = fit(sa);
            if (w > S) S = w, SA = sa;
        }
        for (; S < 2 && SA > 2;) S = fit(--SA);  // a shallower activation ring before none fits
        if (SA > S) SA = S;  // no use for more activation than weight stages
        if (S >= 2 || kc == 1) break;
    }
    if (S < 2) return -1;
    L = s9s_layout_of(swi, af32, kc, nt, S, SA, G > 0 ? G : 1);
    if ((long)L.total > (long)optin) return -1;
    pl->nt = nt, pl->kc = kc, pl->S = S, pl->SA = SA, pl->af32 = af32 != 0, pl->convert = convert;
    pl->wbytes = (int)L.wbytes, pl->abytes = (int)L.abytes;
    pl->nk = (int)s9s_cdiv(K, 64L * kc), pl->nsl = (int)s9s_cdiv(O, S9S_SLAB);
    // items: sum over groups of ceil(c / nt) blocks <= nonempty groups + n / nt (if the counts sum to <= n)
    pl->items_ub = G > 0 ? pl->nsl * ((G < n ? G : n) + (long)n / nt) : pl->nsl * s9s_cdiv(n, nt);
    long grid = kn.ctas > 0 ? kn.ctas : sms;
    if (grid > S9S_MAX_CTAS) grid = S9S_MAX_CTAS;
    if (grid > pl->items_ub * pl->nk) grid = pl->items_ub * pl->nk;
    pl->grid = (int)(grid < 1 ? 1 : grid);
    pl->mode = kn.mode;
    const size_t cnt = ((size_t)pl->items_ub * 2 * 4 + 255) / 256 * 256;
    pl->ws_need = cnt + (size_t)2 * pl->grid * 2 * NM * 64 * nt * 4;
    pl->max_items = kn.mode != 2 && ws_bytes >= pl->ws_need && pl->items_ub <= 0x7fffffffL ? (int)pl->items_ub : 0;
    if (!pl->max_items) pl->ws_need = 0;
    pl->pre = G == 0 || pdl != 1;
    pl->smem = L.total;
    return pl->items_ub * (long)pl->nk > 0x3fffffffffffLL ? -1 : 0;
}

static int s9s_plan_for(const lm_cuda_gg *p, int dev, s9s_plan *pl) {
    const int G = p->counts ? p->n_groups : 0;
    const int a_rows = p->counts ? p->a_rows : p->n_rows;
    const bool can_convert = p->scratch && a_rows > 0 && (size_t)a_rows * p->K * 2 <= p->scratch_bytes;
    return s9s_make_plan(p->swiglu != 0, G, p->n_rows, p->K, p->O, p->a_f32, can_convert, p->pdl,
                         p->ws ? p->ws_bytes : 0, g_s9s_knobs, g_s9s_sms[dev] > 0 ? g_s9s_sms[dev] : 132,
                         g_s9s_optin[dev] > 0 ? g_s9s_optin[dev] : 227 * 1024, pl);
}

// The weights [O][ldw] bf16 as boxes of 64 k x 64 rows, 128-byte swizzle,
// zero fill out of bounds.
static int s9s_encode(CUtensorMap *m, const void *addr, int K, int O, size_t ldw) {
    cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)O}, strides[1] = {(cuuint64_t)(ldw * 2)};
    cuuint32_t box[2] = {64, 64}, es[2] = {1, 1};
    CUresult r = g_s9s_encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)addr, dims, strides, box, es,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : (int)cudaErrorInvalidValue;
}

// Every launch of this file: plain, or with programmatic stream serialization.
template <class... P, class... A>
static int s9s_launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, bool pdl, A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cudaLaunchAttribute at[1] = {};
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = pdl ? at : NULL, cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
    cudaError_t l = cudaGetLastError();
    return (int)(e != cudaSuccess ? e : l);
}

static int s9s_launch_gemm(const s9s_params &q, const CUtensorMap &d1, const CUtensorMap &d2, const s9s_plan &pl,
                           bool swi, int dev, cudaStream_t st, bool pdl) {
    static const void *done[S9S_MAXDEV][16];  // per device: kernels whose dynamic shared memory limit is raised
    const s9s_kernel_t k = s9s_kernel(pl.nt, swi);
    if (!k) return (int)cudaErrorInvalidValue;
    int i = 0;
    while (i < 16 && done[dev][i] && done[dev][i] != (const void *)k) i++;
    if (i == 16 || !done[dev][i]) {
        cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, g_s9s_optin[dev]);
        if (e != cudaSuccess) return (int)e;
        if (i < 16) done[dev][i] = (const void *)k;
    }
    return s9s_launch(k, dim3(pl.grid), dim3(S9S_THREADS), pl.smem, st, pdl, q, d1, d2);
}

extern "C" int lm_cuda_gg_sm90s_run(const lm_cuda_gg *p, lm_cuda_stream st) {
    if (!p->out || p->O <= 0 || p->n_rows <= 0) return 0;
    int dev;
    if (cudaGetDevice(&dev) != cudaSuccess) return (int)cudaGetLastError();
    if (!s9s_device_ok(dev)) return (int)cudaErrorNotSupported;
    if (!s9s_operands_ok(p)) return (int)cudaErrorInvalidValue;
    s9s_plan pl;
    if (s9s_plan_for(p, dev, &pl)) return (int)cudaErrorInvalidValue;
    const bool grouped = p->counts != NULL, pdl = p->pdl > 0;
    int e;

    s9s_params q = {};
    q.a = p->a, q.lda = p->lda, q.a_row = p->a_row, q.af32 = pl.af32;
    if (pl.convert) {  // bf16 copy of every activation row into scratch
        const int a_rows = grouped ? p->a_rows : p->n_rows;
        int bx = (p->K / 2 + 255) / 256;
        if (bx > 64) bx = 64;
        const int by = a_rows < 65535 ? a_rows : 65535;  // the grid's y limit; the kernel strides over rows
        if ((e = s9s_launch(k_s9s_to_bf16, dim3(bx, by), dim3(256), 0, st, pdl, (const float *)p->a, p->lda, a_rows,
                            p->K, (__nv_bfloat16 *)p->scratch)))
            return e;
        q.a = p->scratch, q.lda = (size_t)p->K;
    }
    q.counts = p->counts, q.n_groups = grouped ? p->n_groups : 0, q.block = p->block, q.rows = p->n_rows;
    q.w1 = p->w1, q.w2 = p->swiglu ? p->w2 : NULL, q.K = p->K, q.O = p->O;
    q.out = p->out, q.ldo = p->ldo, q.bias = p->bias, q.bias_dt = p->bias_dt;
    q.nt = pl.nt, q.kc = pl.kc, q.stages = pl.S, q.astages = pl.SA, q.nk = pl.nk, q.nsl = pl.nsl, q.mode = pl.mode;
    q.max_items = pl.max_items, q.pre = pl.pre;
    if (pl.max_items) {
        q.ws_cnt = (int *)p->ws;
        q.ws_part = (float *)((char *)p->ws + ((size_t)pl.items_ub * 2 * 4 + 255) / 256 * 256);
    }
    CUtensorMap d1, d2;
    if (grouped) {
        void *maps = NULL;
        if ((e = (int)cudaGetSymbolAddress(&maps, g_s9s_maps))) return e;
        const int par = g_s9s_par[dev];
        g_s9s_par[dev] ^= 1;
        q.maps = (CUtensorMap *)maps + (size_t)par * S9S_MAX_CTAS * S9S_NSLOT * 2;
        // a template (any aligned address) that the CTAs re-address per expert
        if ((e = s9s_encode(&d1, maps, p->K, p->O, p->ldw))) return e;
        d2 = d1;
    } else {
        if ((e = s9s_encode(&d1, p->w1_0, p->K, p->O, p->ldw))) return e;
        if (p->swiglu && (e = s9s_encode(&d2, p->w2_0, p->K, p->O, p->ldw))) return e;
        if (!p->swiglu) d2 = d1;
    }
    return s9s_launch_gemm(q, d1, d2, pl, p->swiglu != 0, dev, st, pdl);
}

extern "C" size_t lm_cuda_gg_sm90s_ws_bytes(int n_rows, int n_groups, int O, int K, int swiglu) {
    int dev = 0, sms = 132, optin = 227 * 1024;
    if (cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < S9S_MAXDEV && s9s_device_ok(dev))
        sms = g_s9s_sms[dev], optin = g_s9s_optin[dev];
    (void)cudaGetLastError();
    size_t best = 0;
    const lm_cuda_gg_sm90s_knobs kn = lm_cuda_gg_sm90s_knobs();
    // every row count up to n_rows (the block size, hence the items, varies with it); f32 or bf16 activations
    for (long n = 1; n <= n_rows && n <= (1L << 20); n++)
        for (int f = 0; f < 2; f++) {
            s9s_plan pl;
            if (s9s_make_plan(swiglu != 0, n_groups > 0 ? n_groups : 0, (int)n, K, O, f, f != 0, 2, (size_t)-1, kn,
                              sms, optin, &pl) == 0 &&
                pl.ws_need > best)
                best = pl.ws_need;
        }
    return best;
}

extern "C" int lm_cuda_gg_sm90s_describe(const lm_cuda_gg *p, char *buf, int len) {
    if (!p || !buf || len < 1) return (int)cudaErrorInvalidValue;
    int dev;
    if (cudaGetDevice(&dev) != cudaSuccess) return (int)cudaGetLastError();
    if (!s9s_device_ok(dev)) return (int)cudaErrorNotSupported;
    s9s_plan pl;
    if (!p->out || p->O <= 0 || p->n_rows <= 0 || !s9s_operands_ok(p) || s9s_plan_for(p, dev, &pl)) {
        snprintf(buf, (size_t)len, "none");
        return 0;
    }
    cudaFuncAttributes fa;
    const s9s_kernel_t k = s9s_kernel(pl.nt, p->swiglu != 0);
    cudaError_t e = k ? cudaFuncGetAttributes(&fa, k) : cudaErrorInvalidValue;
    if (e != cudaSuccess) return (int)e;
    snprintf(buf, (size_t)len,
             "sm90s %s%s nt %d, %d x 64 k a stage, W ring %d x %d KB, A ring %d x %d KB, grid %d, items<=%ld x %d "
             "stages, %s%s, smem %zu B, %d regs (setmaxnreg %d/%d), local %zu B",
             p->swiglu ? "swiglu" : "f32out", pl.af32 ? " a32" : pl.convert ? " +to_bf16" : "", pl.nt, pl.kc, pl.S,
             pl.wbytes / 1024, pl.SA, (pl.abytes + 1023) / 1024, pl.grid, pl.items_ub, pl.nk,
             pl.mode == 2 ? "whole items" : pl.max_items ? (pl.mode == 1 ? "stream-K" : "stream-K/whole auto")
                                                         : "whole items (no ws)",
             pl.pre ? (p->pdl ? ", pdl early weights" : "") : ", pdl", pl.smem, fa.numRegs, S9S_CONS_REGS,
             S9S_PROD_REGS, (size_t)fa.localSizeBytes);
    return 0;
}
