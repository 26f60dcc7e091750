// CUDA-on-CPU emulation for checking kernel source (dev tool, see README.md).
//
// Each CUDA thread of a block is a fiber; the fibers of a block run one at a
// time and switch only at barriers (__syncthreads, and the warp-level
// barrier inside every warp collective), so a kernel runs deterministically.
// Blocks of a grid run one after the other. The warp collectives (shuffles,
// match_any, ballot, mma.sync, ldmatrix) are emulated from the PTX ISA's
// fragment layouts; cp.async lands its data at cp.async.wait_group (the
// destination holds a poison pattern in between). Kernels are prepared by
// prep.py, which replaces every function that contains inline PTX by the
// shim of that source file (shim_*.h) and every <<<...>>> launch by
// emu_launch().
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <vector>
using std::max;
using std::min;

// ------------------------------------------------------------- keywords ---
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
#define __restrict__ __restrict
#define __grid_constant__

// ---------------------------------------------------------------- types ---
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
static inline int2 make_int2(int a, int b) { return {a, b}; }
static inline int4 make_int4(int a, int b, int c, int d) { return {a, b, c, d}; }
static inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
static inline float2 make_float2(float a, float b) { return {a, b}; }
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }

// bf16 / f16 as raw bits (round to nearest even, as the _rn intrinsics)
struct alignas(2) __nv_bfloat16 { uint16_t x; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
struct alignas(2) __half { uint16_t x; };
static inline uint16_t emu_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float emu_bf2f(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float emu_h2f(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return s ? -v : v;
}
static inline uint16_t emu_f2h(float f) {  // round to nearest even
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t s = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (a != a) return s | 0x7e00;
    if (a >= 65520.0f) return s | 0x7c00;
    if (a < ldexpf(1, -14)) return s | (uint16_t)nearbyintf(a * ldexpf(1, 24));  // subnormal (ties to even)
    int e;
    float m = frexpf(a, &e);                                   // a = m 2^e, m in [0.5, 1)
    uint32_t q = (uint32_t)nearbyintf(ldexpf(m, 11));          // 11 significant bits
    if (q == 2048) q = 1024, e++;
    return s | (uint16_t)(((e + 14) << 10) + (q - 1024));
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return {emu_f2bf(f)}; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {emu_f2bf(f)}; }
static inline float __bfloat162float(__nv_bfloat16 b) { return emu_bf2f(b.x); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {{emu_f2bf(a)}, {emu_f2bf(b)}}; }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {emu_bf2f(h.x.x), emu_bf2f(h.y.x)}; }
static inline float __half2float(__half h) { return emu_h2f(h.x); }
static inline __half __float2half(float f) { return {emu_f2h(f)}; }
static inline __half __float2half_rn(float f) { return {emu_f2h(f)}; }
static inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }

// math: the fast intrinsics as their accurate versions
#define __expf(x) expf(x)  // (glibc declares its own __expf, __logf)
#define __logf(x) logf(x)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
static inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }

// --------------------------------------------------------- thread state ---
struct emu_cp;  // cp.async state of a thread
struct emu_bar;
struct emu_fiber {
    void *sp;               // saved stack pointer (x86-64) or ucontext
    void *ctx;
    dim3 tid;
    int lin, done;          // linear thread index; finished
    emu_bar *wbar;          // the barrier it waits at (NULL: runnable) ...
    int wgen;               // ... until its generation moves on from this
    const char *wait_at;    // what it waits for (deadlock report)
    emu_cp *cp;
    char *stack;
    int rank;               // its block's rank in the cluster (0 without clusters)
    dim3 bid;               // its block's index (what blockIdx reads while it runs)
};
extern emu_fiber *emu_cur;
extern dim3 blockIdx, blockDim, gridDim;
#define threadIdx (emu_cur->tid)
#define warpSize 32

void emu_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define EMU_CHECK(c, ...) \
    do { if (!(c)) emu_fail(__VA_ARGS__); } while (0)

// barriers: every thread of the block (or of the warp) must arrive
struct emu_bar { int count = 0, gen = 0; };
// Which runnable thread the scheduler resumes next (EMU_SCHED=rr|rev|first|last|random,
// EMU_SEED for random): rr (default) runs the threads in order, each up to
// its next barrier, round after round; rev the same in reverse order;
// first always resumes the lowest-numbered runnable thread, last the
// highest, so that one warp runs as far ahead of the others as the barriers
// allow (what exposes a missing barrier before reusing shared memory).
enum emu_sched_policy { EMU_RR, EMU_REV, EMU_FIRST, EMU_LAST, EMU_RANDOM };
extern emu_sched_policy emu_sched;
extern unsigned long long emu_seed;
const char *emu_sched_name();
void emu_wait(emu_bar &b, int n, const char *what);
// Warps (and warpgroups) are numbered across the blocks of a cluster
// (emu_cur->lin counts through them), hence 64 warps: up to 2048 threads.
extern emu_bar emu_block_bar, emu_warp_bar[64];
extern emu_bar emu_cta_bar[8];  // __syncthreads of each block of a cluster
static inline int emu_warp() { return emu_cur->lin / 32; }
static inline int emu_lane() { return emu_cur->lin % 32; }
static inline void __syncthreads() {
    emu_wait(emu_cta_bar[emu_cur->rank], (int)(blockDim.x * blockDim.y * blockDim.z), "__syncthreads");
}
static inline void emu_warp_sync(const char *what) { emu_wait(emu_warp_bar[emu_warp()], 32, what); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_sync("__syncwarp"); }

// ------------------------------------------------------ warp collectives ---
// Each lane deposits its value in the warp's staging area, the warp meets,
// every lane reads what it needs, the warp meets again. All 32 lanes must
// take part (the masks are not emulated: full warps only).
struct emu_stage { unsigned char buf[32][64]; };
extern emu_stage emu_st[64];
template <class T> static inline T emu_exchange(T v, int src, const char *what) {
    static_assert(sizeof(T) <= 64, "staging slot");
    emu_stage &s = emu_st[emu_warp()];
    memcpy(s.buf[emu_lane()], &v, sizeof v);
    emu_warp_sync(what);
    T r = v;
    if (src >= 0 && src < 32) memcpy(&r, s.buf[src], sizeof r);
    emu_warp_sync(what);
    return r;
}
template <class T> T __shfl_sync(unsigned, T v, int src, int w = 32) {
    int l = emu_lane();
    return emu_exchange(v, (l / w) * w + (src % w), "__shfl_sync");
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o, int w = 32) {
    int l = emu_lane(), s = l ^ o;
    return emu_exchange(v, s / w == l / w ? s : l, "__shfl_xor_sync");
}
template <class T> T __shfl_up_sync(unsigned, T v, unsigned o, int w = 32) {
    int l = emu_lane(), s = l - (int)o;
    return emu_exchange(v, s >= (l / w) * w ? s : l, "__shfl_up_sync");
}
template <class T> T __shfl_down_sync(unsigned, T v, unsigned o, int w = 32) {
    int l = emu_lane(), s = l + (int)o;
    return emu_exchange(v, s < (l / w + 1) * w ? s : l, "__shfl_down_sync");
}
unsigned emu_ballot(int pred);
static inline unsigned __ballot_sync(unsigned, int pred) { return emu_ballot(pred); }
static inline int __any_sync(unsigned, int pred) { return emu_ballot(pred) != 0; }
static inline int __all_sync(unsigned, int pred) { return emu_ballot(pred) == 0xffffffffu; }
template <class T> unsigned __match_any_sync(unsigned, T v) {
    emu_stage &s = emu_st[emu_warp()];
    memcpy(s.buf[emu_lane()], &v, sizeof v);
    emu_warp_sync("__match_any_sync");
    unsigned m = 0;
    for (int i = 0; i < 32; i++) m |= (unsigned)(memcmp(s.buf[i], &v, sizeof v) == 0) << i;
    emu_warp_sync("__match_any_sync");
    return m;
}

// ---------------------------------------------------------------- memory ---
// Global loads that CUDA requires aligned to the type are checked.
template <class T> static inline T emu_ld(const T *p, const char *what) {
    EMU_CHECK((uintptr_t)p % alignof(T) == 0, "%s: misaligned address %p (needs %zu)", what, (const void *)p, alignof(T));
    return *p;
}
template <class T> T __ldg(const T *p) { return emu_ld(p, "__ldg"); }
template <class T> T __ldcg(const T *p) { return emu_ld(p, "__ldcg"); }
template <class T> T __ldcs(const T *p) { return emu_ld(p, "__ldcs"); }
template <class T> T __ldlu(const T *p) { return emu_ld(p, "__ldlu"); }
// the fibers never run concurrently: atomics are plain read-modify-writes
template <class T> static inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <class T> static inline T atomicMax(T *p, T v) { T o = *p; *p = o > v ? o : v; return o; }
template <class T> static inline T atomicMin(T *p, T v) { T o = *p; *p = o < v ? o : v; return o; }
template <class T> static inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <class T> static inline T atomicCAS(T *p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }
static inline void __threadfence() {}
static inline void __threadfence_block() {}

// Dynamic shared memory of the running block: `extern __shared__ T x[]`
// becomes `T *x = (T *)emu_dyn_smem()` (prep.py). It ends at an inaccessible
// page (an overrun faults) and starts out filled with 0xff bytes (NaN as f32
// and bf16), so a read of something never written shows.
unsigned char *emu_dyn_smem();
size_t emu_dyn_smem_size();
// shared window address of p (the kernels hand these to ldmatrix / cp.async)
uint32_t emu_smem_addr(const void *p, size_t bytes, const char *what);
static inline size_t __cvta_generic_to_shared(const void *p) { return emu_smem_addr(p, 1, "__cvta_generic_to_shared"); }
unsigned char *emu_smem_ptr(uint32_t addr, size_t bytes, const char *what);

// --------------------------------------------------------- tensor cores ---
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, c += a b.
void emu_mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the row
// address of matrix l / 8, row l % 8 (shared window address).
void emu_ldmatrix_x4(uint32_t r[4], uint32_t addr, bool trans);
// cp.async.cg.shared.global [dst], [src], 16, src_size
void emu_cp_async(uint32_t dst, const void *src, int cp_size, int src_size);
void emu_cp_commit();
void emu_cp_wait(int n);

// --------------------------------------------------------------- runtime ---
typedef struct CUstream_st *cudaStream_t;
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorInvalidSymbol = 13,
    cudaErrorNotSupported = 801,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMaxThreadsPerBlock = 1, cudaDevAttrMaxSharedMemoryPerBlock = 8,
                      cudaDevAttrMultiProcessorCount = 16, cudaDevAttrComputeCapabilityMajor = 75,
                      cudaDevAttrComputeCapabilityMinor = 76, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
// the device emulated: SM count, compute capability and limits (an H100 SXM by default)
struct emu_device { int sms = 132; size_t smem_optin = 227 * 1024, smem_per_sm = 228 * 1024; int threads_per_sm = 2048;
                    int cc_major = 9, cc_minor = 0;
                    int cluster_sms = 0;  // SMs that clusters of 2+ CTAs can use (0: all; fewer as on GPCs of odd sizes)
};
extern emu_device emu_dev;
cudaError_t emu_set_attr(const void *fn, int attr, int value);
cudaError_t emu_occupancy(int *n, const void *fn, int threads, size_t smem);
template <class F> cudaError_t cudaFuncSetAttribute(F *fn, cudaFuncAttribute a, int v) { return emu_set_attr((const void *)fn, a, v); }
template <class F> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, F *fn, int threads, size_t smem) {
    return emu_occupancy(n, (const void *)fn, threads, smem);
}
// what cudaFuncGetAttributes reports (the emulator knows no registers: zeros)
struct cudaFuncAttributes { size_t sharedSizeBytes, constSizeBytes, localSizeBytes; int maxThreadsPerBlock, numRegs,
                            ptxVersion, binaryVersion; };
template <class F> cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F *fn) {
    (void)fn;
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = 1024, a->ptxVersion = a->binaryVersion = emu_dev.cc_major * 10 + emu_dev.cc_minor;
    return cudaSuccess;
}
// device symbols are ordinary variables here
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
                      cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };
template <class T> cudaError_t cudaMemcpyFromSymbol(void *dst, const T &sym, size_t n, size_t off = 0,
                                                    cudaMemcpyKind = cudaMemcpyDeviceToHost) {
    if (off + n > sizeof(T)) return cudaErrorInvalidValue;
    memcpy(dst, (const char *)&sym + off, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t = 0) { memset(p, v, n); return cudaSuccess; }
static inline cudaError_t cudaMemset(void *p, int v, size_t n) { memset(p, v, n); return cudaSuccess; }
template <class T> cudaError_t cudaGetSymbolAddress(void **p, const T &sym) { *p = (void *)&sym; return cudaSuccess; }
// driver entry points: only cuTensorMapEncodeTiled (emulated, emu.cpp)
enum cudaDriverEntryPointQueryResult { cudaDriverEntryPointSuccess = 0, cudaDriverEntryPointSymbolNotFound = 1,
                                       cudaDriverEntryPointVersionNotSufficent = 2 };
enum { cudaEnableDefault = 0 };
cudaError_t cudaGetDriverEntryPointByVersion(const char *sym, void **fn, unsigned version, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult *status = NULL);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
const char *cudaGetErrorString(cudaError_t e);

// Launch (synchronous; what prep.py turns `k<<<grid, block, smem, st>>>(args)`
// into): checks the configuration as the driver would (grid and block
// limits, dynamic shared memory against 48 KB or the kernel's attribute),
// sets the launch error if it fails, else runs every block.
void emu_launch(const void *fn, const std::function<void()> &body, dim3 grid, dim3 block, size_t smem = 0,
                cudaStream_t st = 0);
// Runs every block with no checks (the checkers' direct kernel calls).
void emu_run(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);

// every emu_launch since the last clear: kernel, configuration, launch error
struct emu_launch_rec { const void *fn; dim3 grid, block; size_t smem; cudaError_t err; unsigned cluster = 1; };
extern std::vector<emu_launch_rec> emu_launches;

// counters since the program started (or the caller's last reset)
struct emu_stats { long long blocks, threads, switches, cp_async, mma, ldmatrix, wgmma, tma; };
extern emu_stats emu_stat;

// ------------------------------------------------------ Hopper (sm_90a) ---
// mbarriers, TMA (2-D tiled loads, CU_TENSOR_MAP_SWIZZLE_NONE / 128B,
// zero fill out of bounds), tensor maps written on the device
// (tensormap.replace / cp_fenceproxy / fence.proxy.tensormap acquire), the
// cp.async arrival on an mbarrier, and wgmma.mma_async (bf16, f32
// accumulators, A and B from shared memory through matrix descriptors) with
// its fence / commit_group / wait_group. Asynchronous results land at the
// latest moment the hardware may deliver them (emu.cpp says which), so a
// missing wait or a buffer handed back too early shows as NaN or stale data.
// Shared-memory addresses are shared-window addresses (emu_smem_addr).
void emu_mbar_init(uint32_t bar, int count);
void emu_mbar_arrive(uint32_t bar);
void emu_mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes);
bool emu_mbar_try_wait(uint32_t bar, uint32_t parity);  // false: the thread yielded first
void emu_cp_async_mbar_arrive_noinc(uint32_t bar);
struct CUtensorMap_st;
void emu_tma_load_2d(uint32_t dst, const CUtensorMap_st *map, int x, int y, uint32_t bar);
void emu_tmap_replace_global_address(uint32_t smap, const void *addr);
void emu_tmap_cp_fenceproxy(CUtensorMap_st *gmap, uint32_t smap);  // warp-wide
void emu_tmap_acquire(const CUtensorMap_st *map);
// the warpgroup of 128 threads issues one wgmma: d[n / 2] per thread
void emu_wgmma_bf16(float *d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d);
void emu_wgmma_fence();
void emu_wgmma_commit();
void emu_wgmma_wait(int n);

// ---------------------------------------------- clusters (sm_90), additive ---
// A launch with a cluster dimension (emu_launch_cluster, or cudaLaunchKernelEx
// with cudaLaunchAttributeClusterDimension, emu_ext.h) runs the blocks of a
// cluster together: their threads are fibers of one scheduler (each block its
// own dynamic shared memory, __syncthreads and named barriers), so one block's
// threads interleave with the other's at every barrier and mbarrier poll.
// Clusters along x only, up to 8 blocks and 2048 threads, blocks of whole
// warps; static __shared__ variables are NOT per block (kernels launched as
// clusters must use dynamic shared memory only).
// Shared addresses: each block sees its own window at the same addresses, as
// on the GPU; emu_mapa gives a shared::cluster address, which names a block
// (bits 24 and up: rank + 1) and is accepted where the PTX takes one.
int emu_cluster_rank();
int emu_cluster_size();
uint32_t emu_mapa(uint32_t addr, int rank);                       // mapa.shared::cluster
void emu_mbar_arrive_cluster(uint32_t caddr);                      // mbarrier.arrive.release.cluster.shared::cluster
void emu_cluster_sync();                                           // barrier.cluster.arrive + wait (all threads)
// cp.async.bulk.tensor.2d...multicast::cluster: the box lands at dst and
// completes the mbarrier at bar in every block of ctamask (same offsets).
void emu_tma_load_2d_multicast(uint32_t dst, const CUtensorMap_st *map, int x, int y, uint32_t bar, uint16_t ctamask);
void emu_bar_sync(int id, int count);                              // bar.sync id, count (named barriers, per block)
// TMA store (cp.async.bulk.tensor.2d.global.shared::cta.bulk_group), with its
// bulk async-groups (per thread): the shared source is read, and global
// memory written (in-bounds elements only), at the wait_group that covers
// it, the latest the hardware may read it; a thread exiting with groups
// not waited for fails.
void emu_tma_store_2d(const CUtensorMap_st *map, int x, int y, uint32_t src);
void emu_bulk_commit();
void emu_bulk_wait(int n, bool read_only);
void emu_tmap_replace_global_dim(uint32_t smap, int ord, uint32_t v);  // tensormap.replace .global_dim
void emu_launch_cluster(const void *fn, const std::function<void()> &body, dim3 grid, dim3 block, size_t smem,
                        unsigned cluster_x, cudaStream_t st = 0);
void emu_run_cluster(dim3 grid, dim3 block, size_t smem, unsigned cluster_x, const std::function<void()> &body);
// what cudaOccupancyMaxActiveClusters says for clusters of cluster_x blocks
// of this shared memory (one block per SM at most above half an SM's shared memory)
int emu_max_active_clusters(unsigned cluster_x, size_t smem, int threads);
