// Hopper grouped / dense GEMM: TMA + wgmma, persistent and warp-specialised
// (contract and design in gemm_sm90.h).
//
// Shared memory of a CTA (1024-byte aligned; a stage is one k-slice of 64):
//   A[STAGES][128 rows][128 B]   activation rows, 128-byte swizzled (cp.async)
//   B[STAGES][BN rows][128 B]    weight rows, 128-byte swizzled (TMA boxes of
//                                64 rows; swiglu: gate, up, gate, up, ...)
//   E[2][16 KB]                  variants 4+: each consumer warpgroup's epilogue
//                                buffer (128-byte swizzled rows, TMA stores)
//   full[STAGES], empty[STAGES]  mbarriers
// 128-byte swizzle: the 16-byte chunk c of row r of an 8-row, 1024-byte atom
// sits at chunk c ^ (r % 8), i.e. address bits [4:6] are XORed with bits
// [7:9]. This is what TMA's CU_TENSOR_MAP_SWIZZLE_128B writes and what a
// wgmma descriptor with layout type 1 ("128B swizzle") reads. Sources read
// for the encodings (cross-checked; no code taken): the PTX ISA's
// "Matrix Descriptor Format" and K-major canonical layouts
// ((8,m),(T,2k)):((8T,SBO),(1,T)) under Swizzle<3,4,3>; CUTLASS
// cute/arch/mma_sm90_desc.hpp (GmmaDescriptor: start address bits 0-13,
// LBO 16-29, SBO 32-45, base offset 49-51, layout type 62-63 with
// INTERLEAVE 0, B128 1, B64 2, B32 3); DeepGEMM (make_smem_desc: K-major
// swizzled, SBO 1024 B, LBO unused; advancing k by adding bytes / 16 to
// the start address); Modular's WGMMADescriptor docs (same bit table).
// The accumulator layout (thread l of warp w of the warpgroup holds, for
// each 8-column block i, d[4i], d[4i+1] at row 16w + l/4, columns
// 8i + 2(l%4) + {0,1}, and d[4i+2], d[4i+3] at row 16w + l/4 + 8) is the
// PTX ISA's "WGMMA .m64nNk16 register fragment layout for D", cross-checked
// with DeepGEMM's f32 epilogue and CUTLASS's CLayout_64xN
// (cute/atom/mma_traits_sm90_gmma.hpp: ((4,8,4),(2,2,N/8)):((128,1,16),
// (64,8,512)) over the column-major 64 x N tile).
#include <cuda.h>  // CUtensorMap and its enums (types only: nothing links libcuda)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/gemm_sm90.h"

// Device code for sm_90a only (and the CPU emulator, dev/kernels/emu);
// other targets get empty kernels that the launcher never starts.
#if (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)) || defined(LM_SM90_EMU)
#define S9_DEV 1
#else
#define S9_DEV 0
#endif

#define S9_BM 128        // packed rows per tile (64 per consumer warpgroup)
#define S9_BK 64         // k per stage: one 128-byte swizzle row of bf16
#define S9_THREADS 384   // consumer warpgroups 0 and 1, producer warpgroup 2
#define S9_MAXG 1024     // groups (the tables below are sized for it)
#define S9_BAND 16       // m-blocks per raster band (see s9_tile_of)
#define S9_PROD_REGS 56  // setmaxnreg: 128 x 56 + 256 x 224 <= 64K registers
#define S9_CONS_REGS 224
#define S9_PREP_SMEM (32 * 128 + 128)  // prep kernel: one tensor map per warp
// Variants 4 and up (s9_body2): 128 x 256 tiles, 4 stages, plus a 32 KB
// epilogue buffer (16 KB per consumer warpgroup) for the TMA-store epilogue:
// 4 x 48 KB + 32 KB + barriers + alignment slack = 230528 of the 232448
// bytes a block may have.
#define S9_ST2 4
// s9_body2's producer holds more state (tile flags, maps, the gather rows):
// 56 registers spilled, 64 do not; the consumers need no more than 216.
#define S9_PROD_REGS2 64  // 128 x 64 + 256 x 216 <= 384 x 168
#define S9_CONS_REGS2 216
#define S9_EPI_BYTES 16384
#define S9_BANDP 8                      // pairs of m-blocks per raster band (16 m-blocks, as S9_BAND)
#define S9_PREP2_SMEM (33 * 128 + 128)  // prep2: a map per warp + the activations' map

// Features of s9_body2, chosen per call by the launcher (s9_params.flags).
enum {
    S9F_PAIRS = 1,     // 2-CTA clusters: the two CTAs take m-blocks 2p, 2p+1 of one weight tile, each loads
                       //   half of its boxes and multicasts them to both (L2 -> SM weight traffic halved)
    S9F_ATMA = 2,      // activations by TMA (packed rows, no gather): no cp.async, no proxy fence
    S9F_EPI_TMA = 4,   // epilogue through shared memory and TMA stores (full 64-row halves)
    S9F_NOLOAD = 8,    // lab diagnostics, output garbage: no loads (the MMAs read stale shared memory),
    S9F_NOMMA = 16,    //   no MMAs (stages only waited for and handed back),
    S9F_NOSTORE = 32,  //   no epilogue
};

struct s9_params {
    const uint16_t *a;  // bf16 activations [.][lda]
    size_t lda;
    const int *a_row;   // packed row -> activation row, or NULL
    int K, O;
    int rows;           // dense: rows (n_groups == 0)
    int nb;             // n-blocks of the output
    int n_groups;       // 0: dense
    const CUtensorMap *gmaps;  // grouped: [2 g + m] the map of matrix m (w1, w2) of group g
    const int *tab;            // grouped: first[G], count[G], tile_start[G + 1]
    void *out;
    size_t ldo;
    const void *bias;
    int bias_dt;
    // s9_body2 only
    int flags;                 // S9F_*
    const CUtensorMap *gamap;  // grouped with S9F_ATMA: the activations' map (rows bounded on the device)
};

// Written by the prep kernel of a grouped call, read by the GEMM that follows
// on the stream (hence: no concurrent grouped calls on several streams).
// (128-byte aligned: what tensormap.cp_fenceproxy and the emulator ask of a map's address)
__device__ __align__(128) CUtensorMap g_s9_maps[2 * S9_MAXG];
__device__ __align__(128) CUtensorMap g_s9_amap;  // prep2: the packed activations, rows bounded by the last valid row
__device__ int g_s9_tab[3 * S9_MAXG + 1];
// 1 in the sm_90a image (and the emulator), 0 in the others: what the
// launcher reads back to know that this device runs real kernel bodies.
__device__ int g_s9_has_code = S9_DEV;

#if S9_DEV
// ------------------------------------------------------- PTX helpers ---
// (small functions so that the emulator's prep.py can swap them for its
// shims; addresses of shared memory are 32-bit shared-window addresses)

__device__ __forceinline__ uint32_t s9_smem(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void s9_mbar_init(uint32_t bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
// Makes the initialised barriers visible to the async proxy (TMA's
// complete_tx) before anyone uses them.
__device__ __forceinline__ void s9_fence_mbar_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void s9_mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void s9_mbar_arrive_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// True once the phase of parity `parity` has completed (a fresh barrier is
// in phase 0, so waiting for parity 1 returns at once).
__device__ __forceinline__ bool s9_mbar_try_wait(uint32_t bar, uint32_t parity) {
    uint32_t ok;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok)
        : "r"(bar), "r"(parity)
        : "memory");
    return ok != 0;
}
// One arrival on bar once every cp.async this thread issued so far has landed
// (noinc: the barrier's expected count includes it).
__device__ __forceinline__ void s9_cp_async_arrive(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void s9_cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void s9_cp_async16(uint32_t dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
// TMA: the box at (x = k, y = row) of map into dst, completing `bar`'s
// transaction count by the box's bytes (out-of-bounds elements are zeros).
__device__ __forceinline__ void s9_tma_2d(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
            "r"(dst),
        "l"(map), "r"(x), "r"(y), "r"(bar)
        : "memory");
}
// A tensor map in global memory written by another kernel (tensormap
// proxy): acquired by the using thread before its first TMA with it.
__device__ __forceinline__ void s9_tmap_acquire(const CUtensorMap *map) {
    asm volatile("fence.proxy.tensormap::generic.acquire.gpu [%0], 128;\n" ::"l"(map) : "memory");
}
__device__ __forceinline__ void s9_tmap_replace_addr(uint32_t smap, const void *addr) {
    asm volatile("tensormap.replace.tile.global_address.shared::cta.b1024.b64 [%0], %1;\n" ::"r"(smap), "l"(addr)
                 : "memory");
}
// Copies the 128-byte map at smap to gmap and releases it to the tensormap
// proxy (a warp-wide instruction: every lane, same operands).
__device__ __forceinline__ void s9_tmap_publish(CUtensorMap *gmap, uint32_t smap) {
    asm volatile("tensormap.cp_fenceproxy.global.shared::cta.tensormap::generic.release.gpu.sync.aligned [%0], [%1], 128;\n" ::"l"(gmap),
                 "r"(smap)
                 : "memory");
}
// Generic-proxy writes (cp.async into A) made visible to the async proxy
// (wgmma's operand reads); executed by each consumer after the full barrier.
__device__ __forceinline__ void s9_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void s9_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void s9_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void s9_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator accesses across the asynchronous
// wgmma window (the registers are in flight between issue and wait).
__device__ __forceinline__ void s9_fence_reg(float &r) { asm volatile("" : "+f"(r)::"memory"); }

template <int N>
__device__ __forceinline__ void s9_setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void s9_setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

// --- clusters, multicast, TMA stores (s9_body2) ---
__device__ __forceinline__ uint32_t s9_cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
// Every thread of both CTAs: before it, each CTA's barrier init is visible to
// the other (remote arrivals and multicast complete_tx may follow); at the
// end, no CTA leaves while the other may still signal its barriers.
__device__ __forceinline__ void s9_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// An arrival on the barrier at the same offset in CTA `rank` of the cluster.
__device__ __forceinline__ void s9_mbar_arrive_peer(uint32_t bar, uint32_t rank) {
    asm volatile(
        "{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
        "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(bar),
        "r"(rank)
        : "memory");
}
// The box lands at dst in every CTA of mask and completes the barrier at
// bar (same offsets) in each by its bytes.
__device__ __forceinline__ void s9_tma_2d_mc(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar,
                                             uint16_t mask) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
        "l"(map), "r"(x), "r"(y), "r"(bar), "h"(mask)
        : "memory");
}
// Shared -> global box (elements outside the map's dims are not written).
__device__ __forceinline__ void s9_tma_store_2d(const CUtensorMap *map, int x, int y, uint32_t src) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(map), "r"(x),
                 "r"(y), "r"(src)
                 : "memory");
}
__device__ __forceinline__ void s9_bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// at most N of this thread's store groups still reading shared memory
template <int N>
__device__ __forceinline__ void s9_bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
// at most N of this thread's store groups not yet complete
template <int N>
__device__ __forceinline__ void s9_bulk_wait() {
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void s9_named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
// the row count (dimension 1) of the map at smap
__device__ __forceinline__ void s9_tmap_replace_rows(uint32_t smap, int rows) {
    asm volatile("tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 1, %1;\n" ::"r"(smap), "r"(rows)
                 : "memory");
}

// wgmma.mma_async m64n256k16, bf16 x bf16 -> f32, A and B from shared memory (K-major, no
// transpose), D += A B^T unless scale_d is 0 (then D = A B^T).
__device__ __forceinline__ void s9_wgmma_n256(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
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

// wgmma.mma_async m64n128k16, bf16 x bf16 -> f32, A and B from shared memory (K-major, no
// transpose), D += A B^T unless scale_d is 0 (then D = A B^T).
__device__ __forceinline__ void s9_wgmma_n128(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
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

// ------------------------------------------------------------ helpers ---

// wgmma descriptor of a K-major bf16 operand in 128-byte-swizzled rows at
// shared address s (8-row atoms of 1024 bytes, 1024-byte aligned apart from
// the k offset added within the row): SBO 1024 B between 8-row groups, LBO
// unused for swizzled K-major (set to 1 as CUTLASS does), layout type 1.
__device__ __forceinline__ uint64_t s9_desc(uint32_t s) {
    return (uint64_t)((s & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

__device__ __forceinline__ float s9_bias(const void *b, int dt, int i) {
    if (!b) return 0.0f;
    if (dt == 2) return __uint_as_float((uint32_t)((const uint16_t *)b)[i] << 16);
    if (dt == 1) return __half2float(((const __half *)b)[i]);
    return ((const float *)b)[i];
}

__device__ __forceinline__ float s9_silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

struct s9_tile {
    int grp, first, count;  // the group and its packed rows
    int m0, n0;             // first row (within the group) and first output column
};

// Tile t of the persistent walk. Groups in order (expert-major); within a
// group, bands of S9_BAND m-blocks, and within a band the m-block varies
// fastest: the ~132 tiles in flight together cover about 16 m-blocks x 8
// n-blocks of one or two groups, whose activation and weight k-slices are
// then read from HBM once and from L2 by the other CTAs. *g is a cursor
// (tiles only increase). bn_out: output columns per tile.
__device__ __forceinline__ s9_tile s9_tile_of(const s9_params &p, int t, int *g, int bn_out) {
    s9_tile T;
    int local;
    if (p.n_groups == 0) {
        T.grp = 0, T.first = 0, T.count = p.rows, local = t;
    } else {
        const int G = p.n_groups;
        const int *start = p.tab + 2 * G;
        while (t >= start[*g + 1]) ++*g;
        T.grp = *g, T.first = p.tab[*g], T.count = p.tab[G + *g], local = t - start[*g];
    }
    const int mbs = (T.count + S9_BM - 1) / S9_BM, full = mbs / S9_BAND * S9_BAND;
    int mb, nb;
    if (local < full * p.nb) {
        int band = local / (S9_BAND * p.nb), r = local % (S9_BAND * p.nb);
        mb = band * S9_BAND + r % S9_BAND, nb = r / S9_BAND;
    } else {
        int r = local - full * p.nb, w = mbs - full;
        mb = full + r % w, nb = r / w;
    }
    T.m0 = mb * S9_BM, T.n0 = nb * bn_out;
    return T;
}

__device__ __forceinline__ int s9_total_tiles(const s9_params &p) {
    if (p.n_groups == 0) return (p.rows + S9_BM - 1) / S9_BM * p.nb;
    return p.tab[3 * p.n_groups];
}

// ---------------------------------------------------------- the kernel ---

// FENCE: the consumers' fence.proxy.async after each full barrier (the
// activation tile is written by cp.async, a generic-proxy write, and read by
// wgmma through the async proxy). Variant 3 leaves it out, for the lab to
// measure what it costs; the launcher's choice always has it.
template <int BN, int STAGES, bool SWI, bool FENCE>
__device__ __forceinline__ void s9_body(const s9_params &p, const CUtensorMap *dm1, const CUtensorMap *dm2) {
    constexpr int A_BYTES = S9_BM * 128, B_BYTES = BN * 128;
    constexpr int BN_OUT = SWI ? BN / 2 : BN;  // output columns per tile
    constexpr int NACC = BN / 2;               // accumulators per consumer thread (64 x BN / 128)
    static_assert(BN % 128 == 0 && BN <= 256, "BN: 128 or 256 (swiglu pairs 64-row units)");
    extern __shared__ __align__(1024) unsigned char s9_sm[];
    // the swizzle patterns repeat every 1024 bytes: align the ring to that
    const uint32_t raw = s9_smem(s9_sm), base = raw + ((1024u - (raw & 1023u)) & 1023u);
    const uint32_t sA = base, sB = base + STAGES * A_BYTES, sBar = sB + STAGES * B_BYTES;
    auto full = [&](int s) { return sBar + 8u * s; };
    auto empty = [&](int s) { return sBar + 8u * (STAGES + s); };

    const int tid = threadIdx.x;
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) {
            s9_mbar_init(full(s), 128 + 1);  // the producers' cp.async arrivals + the TMA issuer's expect_tx
            s9_mbar_init(empty(s), 8);       // one arrival per consumer warp
        }
        s9_fence_mbar_init();
    }
    __syncthreads();

    const int nk = (p.K + S9_BK - 1) / S9_BK, total = s9_total_tiles(p);
    int s = 0;
    uint32_t ph = 0;
    int gcur = 0;

    if (tid >= 256) {
        // ------------------------------------------------ producer ---
        s9_setmaxnreg_dec<S9_PROD_REGS>();
        // each thread copies chunk c (16 bytes) of rows r0 + 16 i of every A stage:
        // 8 threads cover a row's 128 contiguous bytes
        const int pt = tid - 256, r0 = pt >> 3, c = pt & 7;
        const uint32_t a_off = (uint32_t)r0 * 128 + (uint32_t)((c ^ (r0 & 7)) << 4);  // r0 + 16 i has the same r % 8
        int map_grp = -1;
        for (int t = blockIdx.x; t < total; t += gridDim.x) {
            const s9_tile T = s9_tile_of(p, t, &gcur, BN_OUT);
            const CUtensorMap *m1 = dm1, *m2 = dm2;
            if (p.n_groups) {
                m1 = p.gmaps + 2 * T.grp, m2 = m1 + 1;
                if (pt == 0 && map_grp != T.grp) {
                    s9_tmap_acquire(m1);
                    if (SWI) s9_tmap_acquire(m2);
                    map_grp = T.grp;
                }
            }
            const uint16_t *src[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                int j = T.m0 + r0 + 16 * i;
                int ar = j < T.count ? (p.a_row ? p.a_row[T.first + j] : T.first + j) : -1;
                src[i] = ar >= 0 ? p.a + (size_t)ar * p.lda + c * 8 : nullptr;
            }
            for (int kb = 0; kb < nk; kb++) {
                while (!s9_mbar_try_wait(empty(s), ph ^ 1)) {
                }
                if (pt == 0) {
                    s9_mbar_arrive_tx(full(s), B_BYTES);
#pragma unroll
                    for (int u = 0; u < BN / 64; u++) {
                        const CUtensorMap *m = SWI && (u & 1) ? m2 : m1;
                        int row = SWI ? T.n0 + 64 * (u >> 1) : T.n0 + 64 * u;
                        s9_tma_2d(sB + s * B_BYTES + u * 8192, m, kb * S9_BK, row, full(s));
                    }
                }
                const bool kok = kb * S9_BK + c * 8 < p.K;
                const uint32_t dst = sA + s * A_BYTES + a_off;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    bool ok = kok && src[i];
                    s9_cp_async16(dst + i * 16 * 128, ok ? src[i] + kb * S9_BK : p.a, ok);
                }
                s9_cp_async_arrive(full(s));
                if (++s == STAGES) s = 0, ph ^= 1;
            }
        }
        s9_cp_async_wait_all();  // leave no copy of this thread in flight past its exit
    } else {
        // ------------------------------------------------ consumers ---
        s9_setmaxnreg_inc<S9_CONS_REGS>();
        const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
        float acc[NACC];
        for (int t = blockIdx.x; t < total; t += gridDim.x) {
            const s9_tile T = s9_tile_of(p, t, &gcur, BN_OUT);
            int prev = 0;
            for (int kb = 0; kb < nk; kb++) {
                while (!s9_mbar_try_wait(full(s), ph)) {
                }
                if (FENCE) s9_fence_proxy_async();
#pragma unroll
                for (int i = 0; i < NACC; i++) s9_fence_reg(acc[i]);
                s9_wgmma_fence();
                const uint32_t a0 = sA + s * A_BYTES + wg * 64 * 128, b0 = sB + s * B_BYTES;
#pragma unroll
                for (int k = 0; k < S9_BK / 16; k++) {
                    const uint64_t da = s9_desc(a0 + k * 32), db = s9_desc(b0 + k * 32);
                    if constexpr (BN == 256)
                        s9_wgmma_n256(acc, da, db, kb > 0 || k > 0);
                    else
                        s9_wgmma_n128(acc, da, db, kb > 0 || k > 0);
                }
                s9_wgmma_commit();
#pragma unroll
                for (int i = 0; i < NACC; i++) s9_fence_reg(acc[i]);
                // the previous stage's group has completed: hand its slot back
                s9_wgmma_wait<1>();
                if (kb > 0 && lane == 0) s9_mbar_arrive(empty(prev));
                prev = s;
                if (++s == STAGES) s = 0, ph ^= 1;
            }
            s9_wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < NACC; i++) s9_fence_reg(acc[i]);
            if (lane == 0) s9_mbar_arrive(empty(prev));

            // epilogue straight from the accumulators: rows past the group's count
            // and columns past O are not written
            const int rb = wg * 64 + warp * 16 + (lane >> 2), cq = 2 * (lane & 3);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = T.m0 + rb + 8 * h;
                if (j >= T.count) continue;
                const size_t orow = (size_t)(T.first + j) * p.ldo;
                if constexpr (SWI) {
#pragma unroll
                    for (int q = 0; q < BN / 128; q++)
#pragma unroll
                        for (int ii = 0; ii < 8; ii++) {
                            const int ig = 16 * q + ii, iu = ig + 8;  // gate and up units of this 128-column block
                            const int col = T.n0 + 64 * q + 8 * ii + cq;
                            float v0 = s9_silu_mul(acc[4 * ig + 2 * h], acc[4 * iu + 2 * h]);
                            float v1 = s9_silu_mul(acc[4 * ig + 2 * h + 1], acc[4 * iu + 2 * h + 1]);
                            __nv_bfloat16 *o = (__nv_bfloat16 *)p.out + orow + col;
                            if (col + 1 < p.O && !((uintptr_t)o & 3)) {
                                *(__nv_bfloat162 *)o = __floats2bfloat162_rn(v0, v1);
                            } else {  // last column, or an odd ldo
                                if (col < p.O) o[0] = __float2bfloat16(v0);
                                if (col + 1 < p.O) o[1] = __float2bfloat16(v1);
                            }
                        }
                } else {
#pragma unroll
                    for (int i = 0; i < BN / 8; i++) {
                        const int col = T.n0 + 8 * i + cq;
                        float *o = (float *)p.out + orow + col;
                        if (col + 1 < p.O && !((uintptr_t)o & 7)) {
                            *(float2 *)o = make_float2(acc[4 * i + 2 * h] + s9_bias(p.bias, p.bias_dt, col),
                                                       acc[4 * i + 2 * h + 1] + s9_bias(p.bias, p.bias_dt, col + 1));
                        } else {
                            if (col < p.O) o[0] = acc[4 * i + 2 * h] + s9_bias(p.bias, p.bias_dt, col);
                            if (col + 1 < p.O) o[1] = acc[4 * i + 2 * h + 1] + s9_bias(p.bias, p.bias_dt, col + 1);
                        }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------- variants 4 and up ---
//
// s9_body2: the same pipeline as s9_body (BN 256, 4 stages), with what the
// first H200 run pointed at (see gemm_sm90.h):
// - Tail tiles of a group with at most 64 valid rows ("half" tiles) run on
//   consumer warpgroup 0 alone: the tensor cores are shared by the two
//   warpgroups, so such a tile takes half the time instead of a full one
//   (1 m-block in 10 of Mixtral at 4096 tokens, 1 in 5 of Qwen3's).
// - Raster bands of balanced widths (17 m-blocks: 9 + 8, not 16 + 1, whose
//   single-row band re-reads every weight slab from HBM for one tile each).
// - Packed (non-gathered) activations by TMA, with the rows bounded by the
//   last valid row (dense: rows; grouped: the prep kernel patches the map).
// - The epilogue through shared memory and TMA stores (S9F_EPI_TMA): the
//   consumers write their half of the tile into a 128-byte-swizzled buffer
//   (conflict-free), one thread per warpgroup issues bulk stores and the
//   warpgroup goes back to its MMAs while the copy engine writes whole lines;
//   direct stores from registers write 8 rows x 16 or 32 bytes per
//   instruction. Halves with invalid rows keep the direct stores.
// - 2-CTA clusters (S9F_PAIRS): the CTAs of a cluster take m-blocks 2p and
//   2p+1 of the same group and weight tile; each loads two of the four
//   weight boxes and multicasts them to both, so each SM reads 32 KB instead
//   of 48 KB per stage from L2. Both CTAs walk the same units in lockstep:
//   each CTA's empty barriers count the consumer warps of both (a stage may
//   be refilled, by either producer, only when both have drained it), the
//   full barriers expect the whole stage whoever sends it. A group's odd
//   last m-block is paired across two weight tiles instead (no multicast),
//   inside the last band so that its weight slabs are still in L2.
// - SwiGLU with __expf and __fdividef (the IEEE division was a ~10-instruction
//   sequence per output in an epilogue that stalls the tensor cores).

// The m-block and output block of a unit for one CTA; idle: no tile (the
// CTA still takes part in the unit's stages); half: at most 64 valid rows.
struct s9_tile2 {
    int grp, first, count, m0, n0;
    bool idle, mcast, half;
};

// Units of a group of `count` rows: tiles, or with pairs, pairs of m-blocks
// x n-blocks plus the odd m-block's n-blocks two at a time.
__device__ __host__ __forceinline__ int s9_units_of(int count, int nb, bool pairs) {
    const int mbs = (count + S9_BM - 1) / S9_BM;
    return pairs ? (mbs >> 1) * nb + (mbs & 1) * ((nb + 1) >> 1) : mbs * nb;
}

// Position `local` of a walk over rows x nb blocks in nbands bands of
// balanced widths (the wider ones first), the row fastest within a band.
__device__ __forceinline__ void s9_band_pos(int local, int rows, int nbands, int nb, int &row, int &col) {
    const int q = rows / nbands, rem = rows % nbands, big = rem * (q + 1) * nb;
    int w, r0, r;
    if (local < big) {
        const int b = local / ((q + 1) * nb);
        r = local - b * (q + 1) * nb, w = q + 1, r0 = b * (q + 1);
    } else {
        const int l = local - big, b = l / (q * nb);
        r = l - b * q * nb, w = q, r0 = rem * (q + 1) + b * q;
    }
    row = r0 + r % w, col = r / w;
}

// Unit u for the CTA of cluster rank `rank` (0 without pairs). *g: group cursor.
__device__ __forceinline__ s9_tile2 s9_unit2(const s9_params &p, int u, int *g, int rank, bool pairs, int bn_out) {
    s9_tile2 T;
    int local;
    if (p.n_groups == 0) {
        T.grp = 0, T.first = 0, T.count = p.rows, local = u;
    } else {
        const int G = p.n_groups;
        const int *start = p.tab + 2 * G;
        while (u >= start[*g + 1]) ++*g;
        T.grp = *g, T.first = p.tab[*g], T.count = p.tab[G + *g], local = u - start[*g];
    }
    const int mbs = (T.count + S9_BM - 1) / S9_BM, nb = p.nb;
    int mb, n;
    T.idle = false, T.mcast = false;
    if (!pairs) {
        s9_band_pos(local, mbs, (mbs + S9_BAND - 1) / S9_BAND, nb, mb, n);
    } else {
        // P pairs in bands of <= S9_BANDP; the last (narrowest) band also
        // holds the odd m-block, whose units come after each n-pair's pairs
        const int P = mbs >> 1, t = mbs & 1, nbands = (P + S9_BANDP - 1) / S9_BANDP, wl = nbands ? P / nbands : 0;
        const int before = (P - wl) * nb;
        if (local < before) {
            int pr;
            s9_band_pos(local, P - wl, nbands - 1, nb, pr, n);
            mb = 2 * pr + rank, T.mcast = true;
        } else {
            const int l = local - before, per = 2 * wl + t, q = l / per, r = l - q * per;
            if (r < wl) {
                mb = 2 * (P - wl + r) + rank, n = 2 * q, T.mcast = true;
            } else if (r < 2 * wl && 2 * q + 1 < nb) {
                mb = 2 * (P - 2 * wl + r) + rank, n = 2 * q + 1, T.mcast = true;
            } else {  // the odd m-block, n-blocks 2q (rank 0) and 2q + 1 (rank 1)
                mb = mbs - 1, n = 2 * q + rank, T.idle = n >= nb;
            }
        }
    }
    T.m0 = mb * S9_BM, T.n0 = n * bn_out;
    T.half = T.count - T.m0 <= 64;
    return T;
}

__device__ __forceinline__ float s9_silu_mul_fast(float g, float u) { return __fdividef(g * u, 1.0f + __expf(-g)); }

// A consumer warp hands stage `bar` back: to its own CTA's producer and,
// with pairs, to the other CTA's (which multicasts into this CTA's stages).
__device__ __forceinline__ void s9_release(uint32_t bar, int lane, bool pairs, uint32_t rank) {
    if (lane == 0) {
        s9_mbar_arrive(bar);
        if (pairs) s9_mbar_arrive_peer(bar, rank ^ 1);
    }
}

// Epilogue of consumer warpgroup wg: rows T.m0 + 64 wg .. + 63 of the tile.
// ebuf / ebuf_g: the warpgroup's 16 KB buffer (shared address / pointer).
template <bool SWI>
__device__ __forceinline__ void s9_epi2(const s9_params &p, const s9_tile2 &T, const float (&acc)[128], int wg,
                                        int warp, int lane, const CUtensorMap *om, uint32_t ebuf,
                                        unsigned char *ebuf_g, bool issuer) {
    const int rl0 = warp * 16 + (lane >> 2), cq = 2 * (lane & 3), row0 = T.m0 + wg * 64;
    if ((p.flags & S9F_EPI_TMA) && row0 + 64 <= T.count) {
        const int orow = T.first + row0;
        if constexpr (SWI) {
            // [64 rows][2 boxes of 64 bf16 columns]: chunk ii (8 columns) of row rl at ii ^ (rl % 8)
            if (issuer) s9_bulk_wait_read<0>();  // the previous tile's stores have read the buffer
            s9_named_sync(1 + wg, 128);
#pragma unroll
            for (int q = 0; q < 2; q++)
#pragma unroll
                for (int ii = 0; ii < 8; ii++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int ig = 16 * q + ii, iu = ig + 8, rl = rl0 + 8 * h;
                        const float v0 = s9_silu_mul_fast(acc[4 * ig + 2 * h], acc[4 * iu + 2 * h]);
                        const float v1 = s9_silu_mul_fast(acc[4 * ig + 2 * h + 1], acc[4 * iu + 2 * h + 1]);
                        *(__nv_bfloat162 *)(ebuf_g + q * 8192 + rl * 128 + ((ii ^ (rl & 7)) << 4) + (lane & 3) * 4) =
                            __floats2bfloat162_rn(v0, v1);
                    }
            s9_fence_proxy_async();  // generic-proxy writes, read next by the copy engine
            s9_named_sync(1 + wg, 128);
            if (issuer) {
                s9_tma_store_2d(om, T.n0, orow, ebuf);
                s9_tma_store_2d(om, T.n0 + 64, orow, ebuf + 8192);
                s9_bulk_commit();
            }
        } else {
            // 8 boxes of [64 rows][32 f32 columns] through two 8 KB buffers: box j
            // is written while box j - 1 is read out
#pragma unroll
            for (int j = 0; j < 8; j++) {
                if (issuer) s9_bulk_wait_read<1>();  // box j - 2 (this buffer) has been read
                s9_named_sync(1 + wg, 128);
                const int bo = (j & 1) * 8192;
#pragma unroll
                for (int i4 = 0; i4 < 4; i4++) {
                    const int i = 4 * j + i4, col = T.n0 + 8 * i + cq, chunk = 2 * i4 + ((lane & 3) >> 1);
                    const float b0 = col < p.O ? s9_bias(p.bias, p.bias_dt, col) : 0.0f;
                    const float b1 = col + 1 < p.O ? s9_bias(p.bias, p.bias_dt, col + 1) : 0.0f;
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int rl = rl0 + 8 * h;
                        *(float2 *)(ebuf_g + bo + rl * 128 + ((chunk ^ (rl & 7)) << 4) + (lane & 1) * 8) =
                            make_float2(acc[4 * i + 2 * h] + b0, acc[4 * i + 2 * h + 1] + b1);
                    }
                }
                s9_fence_proxy_async();
                s9_named_sync(1 + wg, 128);
                if (issuer) {
                    s9_tma_store_2d(om, T.n0 + 32 * j, orow, ebuf + bo);
                    s9_bulk_commit();
                }
            }
        }
        return;
    }
    // straight from the accumulators (as s9_body): rows past the group's count
    // and columns past O are not written
    const int rb = wg * 64 + rl0;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int j = T.m0 + rb + 8 * h;
        if (j >= T.count) continue;
        const size_t orow = (size_t)(T.first + j) * p.ldo;
        if constexpr (SWI) {
#pragma unroll
            for (int q = 0; q < 2; q++)
#pragma unroll
                for (int ii = 0; ii < 8; ii++) {
                    const int ig = 16 * q + ii, iu = ig + 8;
                    const int col = T.n0 + 64 * q + 8 * ii + cq;
                    const float v0 = s9_silu_mul_fast(acc[4 * ig + 2 * h], acc[4 * iu + 2 * h]);
                    const float v1 = s9_silu_mul_fast(acc[4 * ig + 2 * h + 1], acc[4 * iu + 2 * h + 1]);
                    __nv_bfloat16 *o = (__nv_bfloat16 *)p.out + orow + col;
                    if (col + 1 < p.O && !((uintptr_t)o & 3)) {
                        *(__nv_bfloat162 *)o = __floats2bfloat162_rn(v0, v1);
                    } else {  // last column, or an odd ldo
                        if (col < p.O) o[0] = __float2bfloat16(v0);
                        if (col + 1 < p.O) o[1] = __float2bfloat16(v1);
                    }
                }
        } else {
#pragma unroll
            for (int i = 0; i < 32; i++) {
                const int col = T.n0 + 8 * i + cq;
                float *o = (float *)p.out + orow + col;
                if (col + 1 < p.O && !((uintptr_t)o & 7)) {
                    *(float2 *)o = make_float2(acc[4 * i + 2 * h] + s9_bias(p.bias, p.bias_dt, col),
                                               acc[4 * i + 2 * h + 1] + s9_bias(p.bias, p.bias_dt, col + 1));
                } else {
                    if (col < p.O) o[0] = acc[4 * i + 2 * h] + s9_bias(p.bias, p.bias_dt, col);
                    if (col + 1 < p.O) o[1] = acc[4 * i + 2 * h + 1] + s9_bias(p.bias, p.bias_dt, col + 1);
                }
            }
        }
    }
}

// A consumer warpgroup's k loop over one tile: wait for each stage, issue its
// four m64n256k16 MMAs (MMA: none, for a warpgroup without rows or a
// diagnostic), hand the previous stage back once its MMAs are done.
template <bool MMA>
__device__ __forceinline__ void s9_mainloop2(float (&acc)[128], uint32_t sA, uint32_t sB, uint32_t sBar, int wg,
                                             int lane, int nk, bool atma, bool pairs, uint32_t rank, int &s,
                                             uint32_t &ph) {
    constexpr int STAGES = S9_ST2, A_BYTES = S9_BM * 128, B_BYTES = 256 * 128;
    int prev = 0;
    for (int kb = 0; kb < nk; kb++) {
        while (!s9_mbar_try_wait(sBar + 8u * s, ph)) {
        }
        if (!atma) s9_fence_proxy_async();  // the activation tile came through cp.async
#pragma unroll
        for (int i = 0; i < 128; i++) s9_fence_reg(acc[i]);
        s9_wgmma_fence();
        if (MMA) {
            const uint32_t a0 = sA + s * A_BYTES + wg * 64 * 128, b0 = sB + s * B_BYTES;
#pragma unroll
            for (int k = 0; k < S9_BK / 16; k++)
                s9_wgmma_n256(acc, s9_desc(a0 + k * 32), s9_desc(b0 + k * 32), kb > 0 || k > 0);
        }
        s9_wgmma_commit();
#pragma unroll
        for (int i = 0; i < 128; i++) s9_fence_reg(acc[i]);
        s9_wgmma_wait<1>();  // the previous stage's MMAs are done: hand its slot back
        if (kb > 0) s9_release(sBar + 8u * (STAGES + prev), lane, pairs, rank);
        prev = s;
        if (++s == STAGES) s = 0, ph ^= 1;
    }
    s9_wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 128; i++) s9_fence_reg(acc[i]);
    s9_release(sBar + 8u * (STAGES + prev), lane, pairs, rank);
}

// am: the activations' map (dense, S9F_ATMA); om: the output's (S9F_EPI_TMA).
template <bool SWI>
__device__ __forceinline__ void s9_body2(const s9_params &p, const CUtensorMap *dm1, const CUtensorMap *dm2,
                                         const CUtensorMap *am, const CUtensorMap *om) {
    constexpr int BN = 256, STAGES = S9_ST2, A_BYTES = S9_BM * 128, B_BYTES = BN * 128;
    constexpr int BN_OUT = SWI ? BN / 2 : BN;
    extern __shared__ __align__(1024) unsigned char s9_sm2[];
    const uint32_t raw = s9_smem(s9_sm2), pad = (1024u - (raw & 1023u)) & 1023u, base = raw + pad;
    const uint32_t sA = base, sB = sA + STAGES * A_BYTES, sE = sB + STAGES * B_BYTES, sBar = sE + 2 * S9_EPI_BYTES;
    auto full = [&](int s) { return sBar + 8u * s; };
    auto empty = [&](int s) { return sBar + 8u * (STAGES + s); };

    const int tid = threadIdx.x, fl = p.flags;
    const bool pairs = fl & S9F_PAIRS, atma = fl & S9F_ATMA;
    const uint32_t rank = pairs ? s9_cluster_rank() : 0;
    // units of the walk: a CTA's own, or its cluster's (both CTAs the same)
    const int ustep = pairs ? (int)gridDim.x >> 1 : (int)gridDim.x, u0 = pairs ? (int)blockIdx.x >> 1 : (int)blockIdx.x;
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) {
            s9_mbar_init(full(s), atma ? 1 : 128 + 1);  // the TMA issuer's expect_tx (+ the cp.async arrivals)
            s9_mbar_init(empty(s), pairs ? 16 : 8);     // one arrival per consumer warp (of both CTAs)
        }
        s9_fence_mbar_init();
    }
    if (pairs)
        s9_cluster_sync();
    else
        __syncthreads();

    const int nk = (p.K + S9_BK - 1) / S9_BK;
    const int total = p.n_groups ? p.tab[3 * p.n_groups] : s9_units_of(p.rows, p.nb, pairs);
    int s = 0;
    uint32_t ph = 0;
    int gcur = 0;

    if (tid >= 256) {
        // ------------------------------------------------ producer ---
        s9_setmaxnreg_dec<S9_PROD_REGS2>();
        const int pt = tid - 256;
        if (!atma || pt == 0) {  // TMA for both operands: one thread
            const int r0 = pt >> 3, c = pt & 7;
            const uint32_t a_off = (uint32_t)r0 * 128 + (uint32_t)((c ^ (r0 & 7)) << 4);
            const CUtensorMap *amap = p.n_groups ? p.gamap : am;
            if (atma && p.n_groups) s9_tmap_acquire(amap);
            int map_grp = -1;
            for (int u = u0; u < total; u += ustep) {
                const s9_tile2 T = s9_unit2(p, u, &gcur, (int)rank, pairs, BN_OUT);
                const bool load = !T.idle && !(fl & S9F_NOLOAD);
                const CUtensorMap *m1 = dm1, *m2 = dm2;
                if (p.n_groups) {
                    m1 = p.gmaps + 2 * T.grp, m2 = m1 + 1;
                    if (pt == 0 && load && map_grp != T.grp) {
                        s9_tmap_acquire(m1);
                        if (SWI) s9_tmap_acquire(m2);
                        map_grp = T.grp;
                    }
                }
                const uint16_t *src[8];
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int j = T.m0 + r0 + 16 * i;
                    const int ar = load && !atma && j < T.count ? (p.a_row ? p.a_row[T.first + j] : T.first + j) : -1;
                    src[i] = ar >= 0 ? p.a + (size_t)ar * p.lda + c * 8 : nullptr;
                }
                for (int kb = 0; kb < nk; kb++) {
                    while (!s9_mbar_try_wait(empty(s), ph ^ 1)) {
                    }
                    if (pt == 0) {
                        const uint32_t bytes = load ? B_BYTES + (atma ? (T.half ? A_BYTES / 2 : A_BYTES) : 0) : 0;
                        s9_mbar_arrive_tx(full(s), bytes);
                        if (load) {
#pragma unroll
                            for (int u4 = 0; u4 < BN / 64; u4++) {
                                if (T.mcast && (u4 & 1) != (int)rank) continue;  // the other CTA sends it
                                const CUtensorMap *m = SWI && (u4 & 1) ? m2 : m1;
                                const int row = SWI ? T.n0 + 64 * (u4 >> 1) : T.n0 + 64 * u4;
                                const uint32_t dst = sB + s * B_BYTES + u4 * 8192;
                                if (T.mcast)
                                    s9_tma_2d_mc(dst, m, kb * S9_BK, row, full(s), (uint16_t)3);
                                else
                                    s9_tma_2d(dst, m, kb * S9_BK, row, full(s));
                            }
                            if (atma)
                                for (int h = 0; h < (T.half ? 1 : 2); h++)
                                    s9_tma_2d(sA + s * A_BYTES + h * 8192, amap, kb * S9_BK, T.first + T.m0 + 64 * h,
                                              full(s));
                        }
                    }
                    if (!atma) {
                        if (load) {
                            const bool kok = kb * S9_BK + c * 8 < p.K;
                            const uint32_t dst = sA + s * A_BYTES + a_off;
#pragma unroll
                            for (int i = 0; i < 8; i++) {
                                const bool ok = kok && src[i];
                                s9_cp_async16(dst + i * 16 * 128, ok ? src[i] + kb * S9_BK : p.a, ok);
                            }
                        }
                        s9_cp_async_arrive(full(s));
                    }
                    if (++s == STAGES) s = 0, ph ^= 1;
                }
            }
            if (!atma) s9_cp_async_wait_all();
        }
    } else {
        // ------------------------------------------------ consumers ---
        s9_setmaxnreg_inc<S9_CONS_REGS2>();
        const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
        const bool issuer = (tid & 127) == 0;  // of the warpgroup's TMA stores
        const uint32_t ebuf = sE + wg * S9_EPI_BYTES;
        unsigned char *const ebuf_g = s9_sm2 + pad + (ebuf - base);
        float acc[128];
#pragma unroll
        for (int i = 0; i < 128; i++) acc[i] = 0.0f;
        for (int u = u0; u < total; u += ustep) {
            const s9_tile2 T = s9_unit2(p, u, &gcur, (int)rank, pairs, BN_OUT);
            const bool act = !T.idle && !(T.half && wg == 1), mma = act && !(fl & S9F_NOMMA);
            // two copies of the stage loop rather than a condition around the
            // wgmma: ptxas serialises wgmma under a branch (or predicate) it
            // cannot prove warpgroup-uniform (C7520)
            if (mma)
                s9_mainloop2<true>(acc, sA, sB, sBar, wg, lane, nk, atma, pairs, rank, s, ph);
            else
                s9_mainloop2<false>(acc, sA, sB, sBar, wg, lane, nk, atma, pairs, rank, s, ph);
            if (act && !(fl & S9F_NOSTORE)) s9_epi2<SWI>(p, T, acc, wg, warp, lane, om, ebuf, ebuf_g, issuer);
        }
        if (issuer && (fl & S9F_EPI_TMA)) s9_bulk_wait<0>();  // the stores are done before the CTA leaves
    }
    if (pairs) s9_cluster_sync();
}

// Grouped calls: the group tables (padded first rows, counts, tile offsets)
// and one tensor map per (group, matrix) from the template (only the global
// address differs between experts). One CTA of 1024 threads.
__device__ __forceinline__ void s9_prep_body(const CUtensorMap *tmpl, const int *counts, int G, int block, int nb,
                                             const void *const *w1, const void *const *w2, CUtensorMap *maps,
                                             int *tab) {
    __shared__ int s_wsum[2][32];
    extern __shared__ __align__(128) unsigned char s9_prep_sm[];  // a 128-byte map per warp (+ alignment slack)
    const uint32_t raw = s9_smem(s9_prep_sm), pad = (128u - (raw & 127u)) & 127u;
    CUtensorMap *s_map = (CUtensorMap *)(s9_prep_sm + pad);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int c = tid < G ? counts[tid] : 0;
    int v[2] = {(c + block - 1) / block * block, (c + S9_BM - 1) / S9_BM * nb};  // padded rows, tiles
    int inc[2];
#pragma unroll
    for (int x = 0; x < 2; x++) {  // inclusive scan within the warp
        int a = v[x];
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, a, o);
            if (lane >= o) a += y;
        }
        inc[x] = a;
        if (lane == 31) s_wsum[x][warp] = a;
    }
    __syncthreads();
    if (warp == 0) {  // exclusive scan of the warp totals
#pragma unroll
        for (int x = 0; x < 2; x++) {
            int w = s_wsum[x][lane], a = w;
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, a, o);
                if (lane >= o) a += y;
            }
            s_wsum[x][lane] = a - w;
        }
    }
    __syncthreads();
    if (tid < G) {
        int first = s_wsum[0][warp] + inc[0] - v[0], tstart = s_wsum[1][warp] + inc[1] - v[1];
        tab[tid] = first, tab[G + tid] = c, tab[2 * G + tid] = tstart;
        if (tid == G - 1) tab[3 * G] = tstart + v[1];
    }
    const int nm = w2 ? 2 : 1;
    for (int i = warp; i < G * nm; i += 32) {
        const int g = i / nm, m = i % nm;
        ((uint32_t *)&s_map[warp])[lane] = ((const uint32_t *)tmpl)[lane];  // 128 bytes, a word per lane
        __syncwarp();
        if (lane == 0) s9_tmap_replace_addr(s9_smem(&s_map[warp]), (m ? w2 : w1)[g]);
        __syncwarp();
        s9_tmap_publish(maps + 2 * g + m, s9_smem(&s_map[warp]));
        __syncwarp();
    }
}

// Prep of variants 4 and up: the group tables with the walk's unit offsets
// (tiles, or pair units), the per-(group, matrix) weight maps as in
// s9_prep_body, and with atmpl the activations' map (packed rows, S9F_ATMA)
// bounded by the last valid row: a TMA box of a group's last m-block reads
// past its rows, and past the end of the array for the last group.
__device__ __forceinline__ void s9_prep2_body(const CUtensorMap *tmpl, const CUtensorMap *atmpl, const int *counts,
                                              int G, int block, int nb, int pairs, const void *const *w1,
                                              const void *const *w2, CUtensorMap *maps, CUtensorMap *amap, int *tab) {
    __shared__ int s_wsum2[2][32];
    __shared__ int s_end;
    extern __shared__ __align__(128) unsigned char s9_prep2_sm[];  // a map per warp + one (+ alignment slack)
    const uint32_t raw = s9_smem(s9_prep2_sm), pad = (128u - (raw & 127u)) & 127u;
    CUtensorMap *s_map = (CUtensorMap *)(s9_prep2_sm + pad);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    if (tid == 0) s_end = 0;
    const int c = tid < G ? counts[tid] : 0;
    int v[2] = {(c + block - 1) / block * block, s9_units_of(c, nb, pairs != 0)};  // padded rows, units
    int inc[2];
#pragma unroll
    for (int x = 0; x < 2; x++) {  // inclusive scan within the warp
        int a = v[x];
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, a, o);
            if (lane >= o) a += y;
        }
        inc[x] = a;
        if (lane == 31) s_wsum2[x][warp] = a;
    }
    __syncthreads();
    if (warp == 0) {  // exclusive scan of the warp totals
#pragma unroll
        for (int x = 0; x < 2; x++) {
            int w = s_wsum2[x][lane], a = w;
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, a, o);
                if (lane >= o) a += y;
            }
            s_wsum2[x][lane] = a - w;
        }
    }
    __syncthreads();
    if (tid < G) {
        int first = s_wsum2[0][warp] + inc[0] - v[0], ustart = s_wsum2[1][warp] + inc[1] - v[1];
        tab[tid] = first, tab[G + tid] = c, tab[2 * G + tid] = ustart;
        if (tid == G - 1) tab[3 * G] = ustart + v[1];
        if (c > 0) atomicMax(&s_end, first + c);
    }
    const int nm = w2 ? 2 : 1;
    for (int i = warp; i < G * nm; i += 32) {
        const int g = i / nm, m = i % nm;
        ((uint32_t *)&s_map[warp])[lane] = ((const uint32_t *)tmpl)[lane];  // 128 bytes, a word per lane
        __syncwarp();
        if (lane == 0) s9_tmap_replace_addr(s9_smem(&s_map[warp]), (m ? w2 : w1)[g]);
        __syncwarp();
        s9_tmap_publish(maps + 2 * g + m, s9_smem(&s_map[warp]));
        __syncwarp();
    }
    __syncthreads();  // s_end
    if (atmpl && warp == 0) {
        ((uint32_t *)&s_map[32])[lane] = ((const uint32_t *)atmpl)[lane];
        __syncwarp();
        if (lane == 0) s9_tmap_replace_rows(s9_smem(&s_map[32]), s_end > 0 ? s_end : 1);
        __syncwarp();
        s9_tmap_publish(amap, s9_smem(&s_map[32]));
    }
}

#endif  // S9_DEV

__global__ void k_s9_to_bf16(const float *x, size_t ldx, int rows, int cols, __nv_bfloat16 *y) {
    for (int r = blockIdx.y; r < rows; r += gridDim.y)  // gridDim.y is at most 65535
        for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2; c < cols; c += gridDim.x * blockDim.x * 2) {
            float2 v = *(const float2 *)(x + (size_t)r * ldx + c);  // cols is even (K % 8 == 0)
            *(__nv_bfloat162 *)(y + (size_t)r * cols + c) = __floats2bfloat162_rn(v.x, v.y);
        }
}

template <int BN, int STAGES, bool SWI, bool FENCE>
__global__ void __launch_bounds__(S9_THREADS, 1)
    k_s9_gemm(const __grid_constant__ s9_params p, const __grid_constant__ CUtensorMap dm1,
              const __grid_constant__ CUtensorMap dm2) {
#if S9_DEV
    s9_body<BN, STAGES, SWI, FENCE>(p, &dm1, &dm2);
#endif
}

template <bool SWI>
__global__ void __launch_bounds__(S9_THREADS, 1)
    k_s9_gemm2(const __grid_constant__ s9_params p, const __grid_constant__ CUtensorMap dm1,
               const __grid_constant__ CUtensorMap dm2, const __grid_constant__ CUtensorMap am,
               const __grid_constant__ CUtensorMap om) {
#if S9_DEV
    s9_body2<SWI>(p, &dm1, &dm2, &am, &om);
#endif
}

// atmpl_on: whether atmpl is the activations' map to publish into amap
__global__ void __launch_bounds__(1024)
    k_s9_prep2(const __grid_constant__ CUtensorMap tmpl, const __grid_constant__ CUtensorMap atmpl, int atmpl_on,
               const int *counts, int G, int block, int nb, int pairs, const void *const *w1, const void *const *w2,
               CUtensorMap *maps, CUtensorMap *amap, int *tab) {
#if S9_DEV
    s9_prep2_body(&tmpl, atmpl_on ? &atmpl : nullptr, counts, G, block, nb, pairs, w1, w2, maps, amap, tab);
#endif
}

__global__ void __launch_bounds__(1024)
    k_s9_prep(const __grid_constant__ CUtensorMap tmpl, const int *counts, int G, int block, int nb,
              const void *const *w1, const void *const *w2, CUtensorMap *maps, int *tab) {
#if S9_DEV
    s9_prep_body(&tmpl, counts, G, block, nb, w1, w2, maps, tab);
#endif
}

// ------------------------------------------------------------ launchers ---

// cuTensorMapEncodeTiled's signature (cuda.h), reached through the runtime
// so that nothing links against libcuda.
typedef CUresult (*s9_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                 const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

struct s9_variant {
    int bn, stages, fence;
    int body2, flags;  // s9_body2 with these S9F_* features (S9F_ATMA and S9F_EPI_TMA where the operands allow)
    const char *what;
};
// 1: 128 x 256 tiles, 4 stages (48 KB each); 2: 128 x 128, 6 stages (32 KB
// each); 3: variant 1 without the consumers' proxy fence (lab only: see
// s9_body). 4 and up: s9_body2 (128 x 256, 4 stages), 8..10 lab diagnostics
// of 6 whose output is not the product (lm_cuda_gg_sm90_diagnostic).
static const s9_variant S9_VARIANTS[] = {
    {256, 4, 1, 0, 0, ""},
    {128, 6, 1, 0, 0, ""},
    {256, 4, 0, 0, 0, ", no proxy fence"},
    {256, 4, 1, 1, 0, ", half tiles, balanced bands, TMA activations"},
    {256, 4, 1, 1, S9F_EPI_TMA, ", v4 + TMA-store epilogue"},
    {256, 4, 1, 1, S9F_EPI_TMA | S9F_PAIRS, ", v5 + 2-CTA clusters (weight multicast)"},
    {256, 4, 1, 1, S9F_PAIRS, ", v4 + 2-CTA clusters (weight multicast)"},
    {256, 4, 1, 1, S9F_EPI_TMA | S9F_PAIRS | S9F_NOMMA, ", DIAGNOSTIC v6 without MMAs"},
    {256, 4, 1, 1, S9F_EPI_TMA | S9F_PAIRS | S9F_NOLOAD, ", DIAGNOSTIC v6 without loads"},
    {256, 4, 1, 1, S9F_EPI_TMA | S9F_PAIRS | S9F_NOSTORE, ", DIAGNOSTIC v6 without epilogue"},
};
#define S9_NVAR ((int)(sizeof S9_VARIANTS / sizeof S9_VARIANTS[0]))
#define S9_DIAG (S9F_NOMMA | S9F_NOLOAD | S9F_NOSTORE)
static int g_s9_variant;  // 0: auto

static size_t s9_smem_bytes(int bn, int stages) {
    return (size_t)stages * (S9_BM + bn) * 128 + (size_t)16 * stages + 1024;  // + barriers + alignment slack
}
static size_t s9_smem2_bytes() { return s9_smem_bytes(256, S9_ST2) + 2 * S9_EPI_BYTES; }

#define S9_MAXDEV 64
static int g_s9_dev_ok[S9_MAXDEV];  // 0 unknown, 1 yes, -1 no
static int g_s9_sms[S9_MAXDEV];
static s9_encode_fn g_s9_encode;

static int s9_device_ok(int dev) {
    if (dev < 0 || dev >= S9_MAXDEV) return 0;
    if (g_s9_dev_ok[dev]) return g_s9_dev_ok[dev] > 0;
    int ok = 0, major = 0, minor = 0, has = 0, failed = 0;
    failed |= cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess;
    failed |= cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess;
    failed |= cudaDeviceGetAttribute(&g_s9_sms[dev], cudaDevAttrMultiProcessorCount, dev) != cudaSuccess;
    if (!failed && major == 9 && minor == 0) {
        // the image loaded for this device: sm_90a code, or PTX of another target JIT-compiled (empty kernels)?
        failed |= cudaMemcpyFromSymbol(&has, g_s9_has_code, sizeof has) != cudaSuccess;
        if (!failed && has == 1 && !g_s9_encode) {
            void *fn = NULL;
            cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
            if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) ==
                    cudaSuccess &&
                q == cudaDriverEntryPointSuccess && fn)
                g_s9_encode = (s9_encode_fn)fn;
            else
                failed = 1;
        }
        ok = !failed && has == 1 && g_s9_encode;
    }
    if (failed) (void)cudaGetLastError();  // our failed query must not show as the caller's launch error
    g_s9_dev_ok[dev] = ok ? 1 : -1;
    return ok;
}

static int s9_operands_ok(const lm_cuda_gg *p) {
    if (p->K <= 0 || p->K % 8 || p->O <= 0 || p->ldw % 8 || p->ldw < (size_t)p->K) return 0;
    if (p->a_f32 ? p->lda % 2 || p->lda < (size_t)p->K : p->lda % 8 || p->lda < (size_t)p->K) return 0;
    if (p->swiglu && p->bias) return 0;
    if (p->counts) {
        if (p->n_groups < 1 || p->n_groups > S9_MAXG || p->block < 1 || !p->w1 || (p->swiglu && !p->w2)) return 0;
    } else if (!p->w1_0 || (p->swiglu && !p->w2_0)) {
        return 0;
    }
    return p->ldw * 2 < ((size_t)1 << 40);
}

extern "C" int lm_cuda_gg_sm90_supported(const lm_cuda_gg *p) {
    int dev;
    if (!p || cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return s9_device_ok(dev) && s9_operands_ok(p);
}

extern "C" int lm_cuda_gg_sm90_variants(void) { return S9_NVAR; }
extern "C" int lm_cuda_gg_sm90_diagnostic(int v) { return v >= 1 && v <= S9_NVAR && (S9_VARIANTS[v - 1].flags & S9_DIAG); }
extern "C" int lm_cuda_gg_sm90_set_variant(int v) {
    if (v < 0 || v > S9_NVAR) return (int)cudaErrorInvalidValue;
    g_s9_variant = v;
    return 0;
}

// The weights [O][ldw] bf16 as boxes of 64 k x 64 rows, 128-byte swizzle,
// zero fill out of bounds.
static int s9_encode(CUtensorMap *m, const void *addr, int K, int O, size_t ldw) {
    cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)O}, strides[1] = {(cuuint64_t)(ldw * 2)};
    cuuint32_t box[2] = {S9_BK, 64}, es[2] = {1, 1};
    CUresult r = g_s9_encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)addr, dims, strides, box, es,
                             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : (int)cudaErrorInvalidValue;
}

// A 2-D row-major matrix [rows][cols] of esz-byte elements (row stride ld
// elements), boxes of box_cols x 64 rows, 128-byte swizzle: the activations
// (as the weights) and the output boxes of the TMA-store epilogue.
static int s9_encode2(CUtensorMap *m, const void *addr, CUtensorMapDataType dt, int esz, long long cols,
                      long long rows, size_t ld, int box_cols) {
    cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)(ld * esz)};
    cuuint32_t box[2] = {(cuuint32_t)box_cols, 64}, es[2] = {1, 1};
    CUresult r = g_s9_encode(m, dt, 2, (void *)addr, dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : (int)cudaErrorInvalidValue;
}

// Clusters of 2 that fit at once (cudaOccupancyMaxActiveClusters: SMs of a
// GPC pair up, so odd GPC sizes can leave SMs out), per device and kernel.
template <bool SWI>
static int s9_max_clusters(int dev) {
    static int cache[S9_MAXDEV];  // 0 unknown, -1 none
    if (cache[dev]) return cache[dev] > 0 ? cache[dev] : 0;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 2, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cfg.gridDim = dim3(2 * (g_s9_sms[dev] > 0 ? g_s9_sms[dev] : 132)), cfg.blockDim = dim3(S9_THREADS);
    cfg.dynamicSmemBytes = s9_smem2_bytes(), cfg.attrs = at, cfg.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, k_s9_gemm2<SWI>, &cfg) != cudaSuccess) {
        (void)cudaGetLastError();
        n = 0;
    }
    cache[dev] = n > 0 ? n : -1;
    return n > 0 ? n : 0;
}

template <bool SWI>
static int s9_launch2(const s9_params &p, const CUtensorMap &d1, const CUtensorMap &d2, const CUtensorMap &am,
                      const CUtensorMap &om, int grid, bool pairs, cudaStream_t st) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 2, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cfg.gridDim = dim3(grid), cfg.blockDim = dim3(S9_THREADS), cfg.dynamicSmemBytes = s9_smem2_bytes();
    cfg.stream = st, cfg.attrs = at, cfg.numAttrs = pairs ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k_s9_gemm2<SWI>, p, d1, d2, am, om);
    return e != cudaSuccess ? (int)e : (int)cudaGetLastError();
}

// once per instantiation: allow > 48 KB of dynamic shared memory
template <bool SWI>
static int s9_attr2() {
    static bool attr = false;
    if (attr) return 0;
    cudaError_t e = cudaFuncSetAttribute(k_s9_gemm2<SWI>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s9_smem2_bytes());
    if (e != cudaSuccess) return (int)e;
    attr = true;
    return 0;
}

template <int BN, int ST, bool SWI, bool FENCE = true>
static int s9_launch(const s9_params &p, const CUtensorMap &d1, const CUtensorMap &d2, int grid, cudaStream_t st) {
    const size_t smem = s9_smem_bytes(BN, ST);
    static bool attr = false;  // once per instantiation: allow > 48 KB of dynamic shared memory
    if (!attr) {
        cudaError_t e = cudaFuncSetAttribute(k_s9_gemm<BN, ST, SWI, FENCE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return (int)e;
        attr = true;
    }
    k_s9_gemm<BN, ST, SWI, FENCE><<<grid, S9_THREADS, smem, st>>>(p, d1, d2);
    return (int)cudaGetLastError();
}

extern "C" int lm_cuda_gg_sm90_run(const lm_cuda_gg *p, lm_cuda_stream st) {
    if (!p->out || p->O <= 0 || p->n_rows <= 0) return 0;
    int dev;
    if (cudaGetDevice(&dev) != cudaSuccess) return (int)cudaGetLastError();
    if (!s9_device_ok(dev)) return (int)cudaErrorNotSupported;
    if (!s9_operands_ok(p)) return (int)cudaErrorInvalidValue;
    const bool grouped = p->counts != NULL;

    const uint16_t *A = (const uint16_t *)p->a;
    size_t lda = p->lda;
    if (p->a_f32) {  // bf16 copy of every activation row into scratch
        int a_rows = grouped ? p->a_rows : p->n_rows;
        if (!p->scratch || a_rows <= 0 || (size_t)a_rows * p->K * 2 > p->scratch_bytes) return (int)cudaErrorInvalidValue;
        int bx = (p->K / 2 + 255) / 256;
        if (bx > 64) bx = 64;
        int by = a_rows < 65535 ? a_rows : 65535;  // the grid's y limit; the kernel strides over rows
        k_s9_to_bf16<<<dim3(bx, by), 256, 0, st>>>((const float *)p->a, p->lda, a_rows, p->K,
                                                   (__nv_bfloat16 *)p->scratch);
        int e = (int)cudaGetLastError();
        if (e) return e;
        A = (const uint16_t *)p->scratch, lda = (size_t)p->K;
    }

    int v = g_s9_variant;
    if (!v) v = (p->swiglu ? p->O <= 64 : p->O <= 128) ? 2 : 6;  // narrow outputs: less of the tile wasted
    const s9_variant var = S9_VARIANTS[v - 1];
    const int bn_out = p->swiglu ? var.bn / 2 : var.bn;

    s9_params q = {};
    q.a = A, q.lda = lda, q.a_row = p->a_row, q.K = p->K, q.O = p->O, q.rows = p->n_rows;
    q.nb = (p->O + bn_out - 1) / bn_out;
    q.n_groups = grouped ? p->n_groups : 0;
    q.out = p->out, q.ldo = p->ldo, q.bias = p->bias, q.bias_dt = p->bias_dt;
    int e;
    void *maps = NULL, *tab = NULL, *amap = NULL;
    if ((e = (int)cudaGetSymbolAddress(&maps, g_s9_maps)) || (e = (int)cudaGetSymbolAddress(&tab, g_s9_tab)) ||
        (e = (int)cudaGetSymbolAddress(&amap, g_s9_amap)))
        return e;
    q.gmaps = (const CUtensorMap *)maps, q.tab = (const int *)tab, q.gamap = (const CUtensorMap *)amap;

    // one CTA per SM at most (the kernel walks the tiles); the tile count of a
    // grouped call is only known on the device: bound it
    long long mblocks = ((long long)p->n_rows + S9_BM - 1) / S9_BM + (grouped ? p->n_groups : 0);
    long long tiles = mblocks * q.nb;
    int grid = g_s9_sms[dev] > 0 ? g_s9_sms[dev] : 132;
    if (tiles < grid) grid = (int)tiles;

    CUtensorMap d1, d2;
    if (var.body2) {
        int flags = var.flags;
        // activations by TMA: packed rows, 16-byte aligned (lda % 8 == 0 already)
        if (!p->a_row && !((uintptr_t)A & 15)) flags |= S9F_ATMA;
        // TMA stores: 16-byte aligned output rows
        const int esz = p->swiglu ? 2 : 4;
        if ((flags & S9F_EPI_TMA) && (((uintptr_t)p->out & 15) || (p->ldo * esz) % 16)) flags &= ~S9F_EPI_TMA;
        if ((e = p->swiglu ? s9_attr2<true>() : s9_attr2<false>())) return e;
        int clusters = 0;
        if (flags & S9F_PAIRS) {
            clusters = p->swiglu ? s9_max_clusters<true>(dev) : s9_max_clusters<false>(dev);
            if (clusters < 1) flags &= ~S9F_PAIRS;  // no room for clusters: one CTA per unit
        }
        q.flags = flags;
        CUtensorMap am, om;
        memset(&am, 0, sizeof am);  // (unused without S9F_ATMA)
        // the activations' rows: dense, known; grouped, bounded on the device by the prep kernel
        if ((flags & S9F_ATMA) &&
            (e = s9_encode2(&am, A, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, p->K, grouped ? 1 : p->n_rows, lda, 64)))
            return e;
        // output rows: only whole 64-row halves of valid rows are stored through the map
        if (flags & S9F_EPI_TMA) {
            if ((e = s9_encode2(&om, p->out, p->swiglu ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                                esz, p->O, grouped ? 0x7fffffff : p->n_rows, p->ldo, p->swiglu ? 64 : 32)))
                return e;
        } else {
            om = am;  // unused
        }
        if (grouped) {
            if ((e = s9_encode(&d1, maps, p->K, p->O, p->ldw))) return e;
            d2 = d1;
            k_s9_prep2<<<1, 1024, S9_PREP2_SMEM, st>>>(d1, am, (flags & S9F_ATMA) != 0, p->counts, p->n_groups, p->block,
                                                      q.nb, (flags & S9F_PAIRS) != 0, p->w1,
                                                      p->swiglu ? p->w2 : NULL, (CUtensorMap *)maps,
                                                      (CUtensorMap *)amap, (int *)tab);
            if ((e = (int)cudaGetLastError())) return e;
        } else {
            if ((e = s9_encode(&d1, p->w1_0, p->K, p->O, p->ldw))) return e;
            if (p->swiglu && (e = s9_encode(&d2, p->w2_0, p->K, p->O, p->ldw))) return e;
            if (!p->swiglu) d2 = d1;
        }
        if (flags & S9F_PAIRS) {
            // a cluster walks units of up to two tiles: at most as many units as tiles
            long long cl = clusters;
            if (tiles < cl) cl = tiles;
            grid = (int)(2 * cl);
        }
        return p->swiglu ? s9_launch2<true>(q, d1, d2, am, om, grid, (flags & S9F_PAIRS) != 0, st)
                         : s9_launch2<false>(q, d1, d2, am, om, grid, (flags & S9F_PAIRS) != 0, st);
    }

    if (grouped) {  // a template (any aligned address) that the prep kernel re-addresses per expert
        if ((e = s9_encode(&d1, maps, p->K, p->O, p->ldw))) return e;
        d2 = d1;
        k_s9_prep<<<1, 1024, S9_PREP_SMEM, st>>>(d1, p->counts, p->n_groups, p->block, q.nb, p->w1, p->swiglu ? p->w2 : NULL,
                                      (CUtensorMap *)maps, (int *)tab);
        if ((e = (int)cudaGetLastError())) return e;
    } else {
        if ((e = s9_encode(&d1, p->w1_0, p->K, p->O, p->ldw))) return e;
        if (p->swiglu && (e = s9_encode(&d2, p->w2_0, p->K, p->O, p->ldw))) return e;
        if (!p->swiglu) d2 = d1;
    }

    if (v == 1)
        return p->swiglu ? s9_launch<256, 4, true>(q, d1, d2, grid, st) : s9_launch<256, 4, false>(q, d1, d2, grid, st);
    if (v == 3)
        return p->swiglu ? s9_launch<256, 4, true, false>(q, d1, d2, grid, st)
                         : s9_launch<256, 4, false, false>(q, d1, d2, grid, st);
    return p->swiglu ? s9_launch<128, 6, true>(q, d1, d2, grid, st) : s9_launch<128, 6, false>(q, d1, d2, grid, st);
}

extern "C" int lm_cuda_gg_sm90_describe(int v, int swiglu, char *buf, int len) {
    if (v < 1 || v > S9_NVAR || !buf || len < 1) return (int)cudaErrorInvalidValue;
    const s9_variant var = S9_VARIANTS[v - 1];
    cudaFuncAttributes fa;
    cudaError_t e;
    size_t smem = var.body2 ? s9_smem2_bytes() : s9_smem_bytes(var.bn, var.stages);
    int dev = 0, clusters = -1;
    if (var.body2) {
        e = swiglu ? cudaFuncGetAttributes(&fa, k_s9_gemm2<true>) : cudaFuncGetAttributes(&fa, k_s9_gemm2<false>);
        if (e == cudaSuccess && (var.flags & S9F_PAIRS) && cudaGetDevice(&dev) == cudaSuccess && s9_device_ok(dev)) {
            int ae = swiglu ? s9_attr2<true>() : s9_attr2<false>();
            clusters = ae ? 0 : swiglu ? s9_max_clusters<true>(dev) : s9_max_clusters<false>(dev);
        }
    } else if (v == 1) {
        e = swiglu ? cudaFuncGetAttributes(&fa, k_s9_gemm<256, 4, true, true>)
                   : cudaFuncGetAttributes(&fa, k_s9_gemm<256, 4, false, true>);
    } else if (v == 3) {
        e = swiglu ? cudaFuncGetAttributes(&fa, k_s9_gemm<256, 4, true, false>)
                   : cudaFuncGetAttributes(&fa, k_s9_gemm<256, 4, false, false>);
    } else {
        e = swiglu ? cudaFuncGetAttributes(&fa, k_s9_gemm<128, 6, true, true>)
                   : cudaFuncGetAttributes(&fa, k_s9_gemm<128, 6, false, true>);
    }
    if (e != cudaSuccess) return (int)e;
    char cl[64] = "";
    if (clusters >= 0) snprintf(cl, sizeof cl, ", %d clusters of 2 fit", clusters);
    snprintf(buf, (size_t)len,
             "v%d %s: tile %dx%d (x%d k), %d stages%s%s, %d threads (2 consumer WGs, 1 producer WG), dyn smem %zu B, "
             "%d regs/thread at entry (setmaxnreg %d/%d), local %zu B, binary sm_%d",
             v, swiglu ? "swiglu" : "f32out", S9_BM, var.bn, S9_BK, var.stages, var.what, cl, S9_THREADS, smem,
             fa.numRegs, var.body2 ? S9_CONS_REGS2 : S9_CONS_REGS,
             var.body2 ? S9_PROD_REGS2 : S9_PROD_REGS, (size_t)fa.localSizeBytes, fa.binaryVersion);
    return 0;
}
