// Grouped and dense bf16 tensor-core GEMMs (contract and design in gemm.h),
// the parallel MoE align, and the routing and combine kernels that sit
// around the expert GEMMs (same results as basic.cu's, bit for bit).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include <utility>

#include "kernels/cuda/gemm.h"

#define SMALL_WARPS 8    // warps of a small-kernel CTA, splitting K
#define SMALL_MAX_NB 8   // token blocks of 8 held in registers (64 rows per pass)
#define LG_BM 128
#define LG_BN 128
#define LG_BK 32
#define LG_STAGES 4
#define MAX_GROUPS 1024  // groups scanned through shared memory
#define ST_THREADS 256   // stream kernel: 8 warps
#define ST_MAX_STAGES 16
#define ST_MAX_SPLITS 8

// ---------------------------------------------------------- PTX helpers ---
// (each alone in a small function: the CPU emulator swaps them for its own)

__device__ __forceinline__ void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Weights are read once: keep them out of L1.
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// Programmatic dependent launch (sm_90): wait until the grids this one
// depends on have finished and their writes are visible; let the grids
// that depend on this one launch. Both are no-ops in a grid launched
// without the attribute, and absent from older machine code (the launcher
// then never asks for the attribute: see pdl_ok).
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Fetch the line at p into L2 (no register, no wait).
__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

// ---------------------------------------------------------------- common ---

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// cp.async.wait_group takes an immediate: the ring depth is a run-time value.
__device__ __forceinline__ void cp_wait_n(int n) {
    switch (n) {
    case 0: cp_wait<0>(); break;
    case 1: cp_wait<1>(); break;
    case 2: cp_wait<2>(); break;
    case 3: cp_wait<3>(); break;
    case 4: cp_wait<4>(); break;
    case 5: cp_wait<5>(); break;
    case 6: cp_wait<6>(); break;
    case 7: cp_wait<7>(); break;
    case 8: cp_wait<8>(); break;
    case 9: cp_wait<9>(); break;
    case 10: cp_wait<10>(); break;
    case 11: cp_wait<11>(); break;
    case 12: cp_wait<12>(); break;
    case 13: cp_wait<13>(); break;
    default: cp_wait<14>(); break;
    }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

// 8 activations at p as 4 bf16 pairs (f32 sources rounded to bf16).
template <bool AF32>
__device__ __forceinline__ uint4 ld_act(const void *p) {
    if (AF32) {
        float4 a = __ldg((const float4 *)p), b = __ldg((const float4 *)p + 1);
        return make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
    }
    return __ldg((const uint4 *)p);
}

__device__ __forceinline__ float bias_at(const void *b, int dt, int i) {
    if (!b) return 0.0f;
    if (dt == 2) return __uint_as_float((uint32_t)((const uint16_t *)b)[i] << 16);
    if (dt == 1) return __half2float(((const __half *)b)[i]);
    return ((const float *)b)[i];
}

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

// Group of a CTA. Small kernel: the slot-th group with rows (slots are
// assigned to the groups that have tokens, so a decode step launches no CTA
// for idle experts). Large kernel: the slot-th m-block of 128 rows, counted
// over the groups in order. Dense: group 0 of n_rows rows. Returns the group
// or -1 (no work for this CTA); *first, *count: the group's packed rows,
// *mblk: the m-block within it.
__device__ int find_group(const lm_cuda_gg &p, int slot, bool by_mblock, int *first, int *count, int *mblk) {
    __shared__ int s_res[4];
    if (!p.counts) {
        *first = 0, *count = p.n_rows;
        *mblk = by_mblock ? slot : 0;
        return by_mblock ? (slot * LG_BM < p.n_rows ? 0 : -1) : (slot == 0 ? 0 : -1);
    }
    if (threadIdx.x == 0) {
        int f = 0, seen = 0, g = -1, r_first = 0, r_count = 0, r_mb = 0;
        for (int e = 0; e < p.n_groups; e++) {
            int c = __ldg(p.counts + e);
            int units = by_mblock ? (c + LG_BM - 1) / LG_BM : (c > 0);
            if (slot < seen + units) {
                g = e, r_first = f, r_count = c, r_mb = slot - seen;
                break;
            }
            seen += units;
            f += (c + p.block - 1) / p.block * p.block;
        }
        s_res[0] = g, s_res[1] = r_first, s_res[2] = r_count, s_res[3] = r_mb;
    }
    __syncthreads();
    *first = s_res[1], *count = s_res[2], *mblk = s_res[3];
    return s_res[0];
}

// ------------------------------------------------------------- small M ---

// One CTA: weight rows [r0, r0 + 16) of its group (and the same rows of w2),
// all the group's rows in passes of 8*NB, K split over the warps.
template <int NB, bool SWI, bool AF32>
__global__ void __launch_bounds__(32 * SMALL_WARPS) k_gg_small(lm_cuda_gg p) {
    constexpr int NM = SWI ? 2 : 1;       // weight matrices
    constexpr int NACC = NM * NB * 4;     // accumulators per thread
    constexpr int U = NB <= 2 ? 4 : 2;    // k-steps of 32 loaded ahead
    extern __shared__ float red[];        // [SMALL_WARPS][NACC][32]
    griddep_wait();
    griddep_launch();
    int first, count, mb;
    int grp = find_group(p, blockIdx.y, false, &first, &count, &mb);
    if (grp < 0) return;
    const uint16_t *W[NM];
    W[0] = (const uint16_t *)(p.w1 ? p.w1[grp] : p.w1_0);
    if (SWI) W[NM - 1] = (const uint16_t *)(p.w2 ? p.w2[grp] : p.w2_0);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * 16, O = p.O, K = p.K;
    const int ra = r0 + g < O ? r0 + g : O - 1, rb = r0 + g + 8 < O ? r0 + g + 8 : O - 1;  // clamped: stores skip them
    const int nsteps = (K + 31) / 32, s0 = warp * nsteps / SMALL_WARPS, s1 = (warp + 1) * nsteps / SMALL_WARPS;
    const size_t esz = AF32 ? 4 : 2;

    for (int j0 = 0; j0 < count; j0 += 8 * NB) {
        float acc[NM][NB][4];
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int b = 0; b < NB; b++) acc[m][b][0] = acc[m][b][1] = acc[m][b][2] = acc[m][b][3] = 0.0f;
        const char *arow[NB];
#pragma unroll
        for (int b = 0; b < NB; b++) {
            int j = j0 + b * 8 + g;
            int ar = j < count ? (p.a_row ? __ldg(p.a_row + first + j) : first + j) : -1;
            arow[b] = ar >= 0 ? (const char *)p.a + (size_t)ar * p.lda * esz : NULL;
        }
        for (int s = s0; s < s1; s += U) {
            uint4 wv[U][NM][2], xv[U][NB];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int kk = (s + u) * 32 + t * 8;
                bool ok = s + u < s1 && kk < K;
#pragma unroll
                for (int m = 0; m < NM; m++) {
                    wv[u][m][0] = ok ? ld_stream(W[m] + (size_t)ra * p.ldw + kk) : make_uint4(0, 0, 0, 0);
                    wv[u][m][1] = ok ? ld_stream(W[m] + (size_t)rb * p.ldw + kk) : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int b = 0; b < NB; b++)
                    xv[u][b] = ok && arow[b] ? ld_act<AF32>(arow[b] + (size_t)kk * esz) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int m = 0; m < NM; m++)
#pragma unroll
                    for (int b = 0; b < NB; b++) {
                        mma16816(acc[m][b], wv[u][m][0].x, wv[u][m][1].x, wv[u][m][0].y, wv[u][m][1].y, xv[u][b].x,
                                 xv[u][b].y);
                        mma16816(acc[m][b], wv[u][m][0].z, wv[u][m][1].z, wv[u][m][0].w, wv[u][m][1].w, xv[u][b].z,
                                 xv[u][b].w);
                    }
        }
        // reduce the warps' partial sums over K
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int b = 0; b < NB; b++)
#pragma unroll
                for (int c = 0; c < 4; c++) red[((warp * NACC) + (m * NB + b) * 4 + c) * 32 + lane] = acc[m][b][c];
        __syncthreads();
        for (int idx = threadIdx.x; idx < NB * 4 * 32; idx += blockDim.x) {
            int l = idx % 32, a = idx / 32, b = a / 4, c = a % 4;
            int row = r0 + (l >> 2) + (c >= 2 ? 8 : 0), j = j0 + b * 8 + 2 * (l & 3) + (c & 1);
            float v0 = 0, v1 = 0;
            for (int w = 0; w < SMALL_WARPS; w++) {
                v0 += red[(w * NACC + a) * 32 + l];
                if (SWI) v1 += red[(w * NACC + NB * 4 + a) * 32 + l];
            }
            if (row >= O || j >= count) continue;
            size_t o = (size_t)(first + j) * p.ldo + row;
            if (SWI)
                ((__nv_bfloat16 *)p.out)[o] = __float2bfloat16(silu_mul(v0, v1));
            else
                ((float *)p.out)[o] = v0 + bias_at(p.bias, p.bias_dt, row);
        }
        __syncthreads();  // red[] is reused by the next pass
    }
}

// ------------------------------------------------------------- large M ---

// Element offset of (row, 16-byte chunk c) in a [rows][32] bf16 tile: the
// chunk is XOR-swizzled by the row so that the 8 rows one ldmatrix reads
// fall in 8 different bank groups.
__device__ __forceinline__ int swz(int row, int c) { return row * LG_BK + ((c ^ ((row >> 1) & 3)) << 3); }

// One CTA: 128 packed rows of one group x 128 output columns (swiglu: 64
// gate and the same 64 up rows), 8 warps as 2 x 4, each 64 x 32.
template <bool SWI>
__global__ void __launch_bounds__(256) k_gg_large(lm_cuda_gg p) {
    extern __shared__ __align__(128) uint16_t sm[];  // A [STAGES][128][32], B [STAGES][128][32]
    uint16_t *As = sm, *Bs = sm + LG_STAGES * LG_BM * LG_BK;
    griddep_wait();
    griddep_launch();
    int first, count, mb;
    int grp = find_group(p, blockIdx.x, true, &first, &count, &mb);
    if (grp < 0) return;
    const int m0 = mb * LG_BM;  // within the group
    const int n0 = blockIdx.y * (SWI ? LG_BN / 2 : LG_BN), K = p.K, O = p.O;
    if (n0 >= O) return;
    const uint16_t *W1 = (const uint16_t *)(p.w1 ? p.w1[grp] : p.w1_0);
    const uint16_t *W2 = SWI ? (const uint16_t *)(p.w2 ? p.w2[grp] : p.w2_0) : NULL;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

    // each thread copies 2 chunks of A and 2 of B per stage: rows tid/4 and tid/4 + 64, chunk tid % 4
    const int lc = tid % 4;
    const uint16_t *asrc[2], *bsrc[2];
    bool aok[2], bok[2];
    for (int i = 0; i < 2; i++) {
        int r = tid / 4 + i * 64;
        int j = m0 + r;
        aok[i] = j < count;
        int ar = aok[i] ? (p.a_row ? __ldg(p.a_row + first + j) : first + j) : 0;
        asrc[i] = (const uint16_t *)p.a + (size_t)ar * p.lda + lc * 8;
        int wr;
        const uint16_t *Wm;
        if (SWI) wr = n0 + (r & 63), Wm = r < 64 ? W1 : W2;
        else wr = n0 + r, Wm = W1;
        bok[i] = wr < O;
        bsrc[i] = Wm + (size_t)(bok[i] ? wr : 0) * p.ldw + lc * 8;
    }
    const int nk = (K + LG_BK - 1) / LG_BK;
    auto load = [&](int stage, int kt) {
        int k = kt * LG_BK + lc * 8;
        bool kok = k < K;
        for (int i = 0; i < 2; i++) {
            int r = tid / 4 + i * 64;
            cp_async16(smem_u32(As + stage * LG_BM * LG_BK + swz(r, lc)), asrc[i] + (kok && aok[i] ? kt * LG_BK : 0),
                       kok && aok[i]);
            cp_async16(smem_u32(Bs + stage * LG_BN * LG_BK + swz(r, lc)), bsrc[i] + (kok && bok[i] ? kt * LG_BK : 0),
                       kok && bok[i]);
        }
    };

    const int wm = warp / 4, wn = warp % 4;
    const int nb0 = SWI ? wn * 16 : wn * 32, nb1 = SWI ? 64 + wn * 16 : wn * 32 + 16;
    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

#pragma unroll
    for (int s = 0; s < LG_STAGES - 1; s++) {
        if (s < nk) load(s, s);
        cp_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_wait<LG_STAGES - 2>();
        __syncthreads();
        int nx = kt + LG_STAGES - 1;
        if (nx < nk) load(nx % LG_STAGES, nx);
        cp_commit();
        const uint16_t *A = As + (kt % LG_STAGES) * LG_BM * LG_BK, *B = Bs + (kt % LG_STAGES) * LG_BN * LG_BK;
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            uint32_t a[4][4], b[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                int r = wm * 64 + mt * 16 + (lane & 15);
                ldsm_x4(smem_u32(A + swz(r, kk * 2 + (lane >> 4))), a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = (h ? nb1 : nb0) + (lane & 7) + ((lane >> 4) << 3);
                ldsm_x4(smem_u32(B + swz(r, kk * 2 + ((lane >> 3) & 1))), b[2 * h][0], b[2 * h][1], b[2 * h + 1][0],
                        b[2 * h + 1][1]);
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    mma16816(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
        }
    }
    cp_wait<0>();

    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            int j = m0 + wm * 64 + mt * 16 + g + hh * 8;
            if (j >= count) continue;
            size_t orow = (size_t)(first + j) * p.ldo;
            if (SWI) {
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    int col = n0 + wn * 16 + nt * 8 + 2 * t;
                    float v0 = silu_mul(acc[mt][nt][2 * hh], acc[mt][nt + 2][2 * hh]);
                    float v1 = silu_mul(acc[mt][nt][2 * hh + 1], acc[mt][nt + 2][2 * hh + 1]);
                    __nv_bfloat16 *o = (__nv_bfloat16 *)p.out + orow + col;
                    if (col + 1 < O && !((uintptr_t)o & 3)) {
                        *(__nv_bfloat162 *)o = __floats2bfloat162_rn(v0, v1);
                    } else {  // last column, or an odd ldo: the pair is not 4-byte aligned
                        if (col < O) o[0] = __float2bfloat16(v0);
                        if (col + 1 < O) o[1] = __float2bfloat16(v1);
                    }
                }
            } else {
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    int col = n0 + wn * 32 + nt * 8 + 2 * t;
                    float *o = (float *)p.out + orow + col;
                    if (col < O) o[0] = acc[mt][nt][2 * hh] + bias_at(p.bias, p.bias_dt, col);
                    if (col + 1 < O) o[1] = acc[mt][nt][2 * hh + 1] + bias_at(p.bias, p.bias_dt, col + 1);
                }
            }
        }
}

__global__ void k_to_bf16(const float *x, size_t ldx, int rows, int cols, __nv_bfloat16 *y) {
    griddep_wait();
    griddep_launch();
    for (int r = blockIdx.y; r < rows; r += gridDim.y)  // gridDim.y is at most 65535
        for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2; c < cols; c += gridDim.x * blockDim.x * 2) {
            float2 v = *(const float2 *)(x + (size_t)r * ldx + c);  // cols is even (K % 8 == 0)
            *(__nv_bfloat162 *)(y + (size_t)r * cols + c) = __floats2bfloat162_rn(v.x, v.y);
        }
}

// ---------------------------------------------------------------- stream ---
//
// Work: item = (group g, block of up to TB = 8 NB of its rows, tile of BO
// weight rows, k-split). CTAs of 8 warps (two per SM for NB <= 4, else one)
// walk items blockIdx.x, + gridDim.x, ...; a CTA's stages (BO weight rows x
// BK, and the block's rows x BK of activations) flow through its cp.async
// ring of S stages across items, S - 1 stages always in flight (~100-180 KB
// per SM: HBM latency x per-SM bandwidth is ~35-50 KB). Warps are WR (along the tile's rows, 32
// weight rows each: two m16 tiles; with SwiGLU 16 gate rows and the same 16
// up rows, so gate and up of one output meet in one thread) x WK (along k
// inside a stage, summed through shared memory at the end of an item). So
// every staged activation chunk is used by BO = 32 WR weight rows, and
// every weight row is read from HBM once per item, at 128..512 contiguous
// bytes per stage.
//
//   NB   rows/item  WR x WK  BO   BK   weights/stage  activations/stage (bf16 | f32)
//   1    8          1 x 8    32   256  16 KB          4 KB | 8.25 KB
//   2    16         2 x 4    64   128  16 KB          4 KB | 8.5 KB
//   4    32         4 x 2    128  64   16 KB          4 KB | 9 KB
//   8    64         8 x 1    256  64   32 KB          8 KB
//   16   128        8 x 1    256  64   32 KB          16 KB
//
// f32 activations (NB <= 4) are staged as f32 and rounded to bf16 while
// building the B fragments (8-byte loads); above, the launcher converts them
// to bf16 first (scratch), which halves their staging and shared-memory
// traffic where the mma rate matters.
template <int NB>
struct stc {
    static constexpr int WR = NB < 8 ? NB : 8;
    static constexpr int WK = 8 / WR;
    static constexpr int KS = NB >= 8 ? 4 : 2;  // k16 steps per warp per stage
    static constexpr int BO = 32 * WR;
    static constexpr int BK = 16 * WK * KS;
    static constexpr int L = BK / 8;            // 16-byte chunks per weight row of a stage
    static constexpr int TB = 8 * NB;
    static constexpr int NACC = 8 * NB;         // accumulators per thread: 2 m-tiles x NB x 4
    static constexpr int WBYTES = BO * BK * 2;
    static constexpr int FLD = BK + 8;          // f32 activation row stride (floats): 32 mod 128 bytes
    static constexpr int SLOT = WR * 32 * NACC; // floats of one split-K partial tile (the wk = 0 warps' registers)
    __host__ __device__ static constexpr int abytes(bool af32) { return af32 ? TB * FLD * 4 : TB * BK * 2; }
    __host__ __device__ static constexpr int stage(bool af32) { return WBYTES + abytes(af32); }
};

// Byte offset of 16-byte chunk c of row r in a [rows][L] bf16 tile (L >= 8),
// XOR-swizzled so that the 8 rows one ldmatrix reads (same c) fall in 8
// different bank groups.
template <int L>
__device__ __forceinline__ int sw_off(int r, int c) {
    static_assert(L >= 8, "swizzle needs 8 chunks per row");
    return (r * L + (c ^ (r & 7))) * 16;
}

// Launch constants of the stream kernel (the launcher's plan).
struct st_plan {
    int S;          // ring stages
    int R;          // weight-row tiles over O
    int splits;     // k-splits (1: none)
    int cps;        // stages (chunks of BK) per split
    int pf;         // prefetch the first stages' weights into L2 before griddep_wait (1 dense, 2 counts too)
    int max_tiles;  // split-K counters in ws (items beyond: no split)
};

struct st_item {
    int g, rt, ks;     // group, row tile, k-split
    int row0, ntok;    // first packed row of the block, rows in it (1..TB)
    int kbeg, kend, nck;
    int tile;          // split-K tile (counter) index
};

// Per-group tables in shared memory from the counts: tP[g] token blocks
// before group g (tP[G]: all), tF[g] its first packed row, tC[g] its rows.
// Each thread takes 4 consecutive groups (G <= 1024); a block-wide scan.
// clamp: speculative tables (counts possibly stale) are kept in range.
__device__ void st_tables(const lm_cuda_gg &p, int G, int TB, bool clamp, int *tP, int *tF, int *tC, int *s_scan) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g0 = tid * 4;
    int c[4], u = 0, f = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int g = g0 + j, cc = 0;
        if (g < G) {
            cc = p.counts ? __ldcg(p.counts + g) : p.n_rows;
            cc = cc < 0 ? 0 : clamp && cc > p.n_rows ? p.n_rows : cc;
        }
        c[j] = cc;
        u += (cc + TB - 1) / TB;
        f += p.counts ? (cc + p.block - 1) / p.block * p.block : cc;
    }
    int iu = u, iF = f;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int a = __shfl_up_sync(0xffffffffu, iu, o), b = __shfl_up_sync(0xffffffffu, iF, o);
        if (lane >= o) iu += a, iF += b;
    }
    if (lane == 31) s_scan[warp] = iu, s_scan[8 + warp] = iF;
    __syncthreads();
    int bu = 0, bF = 0;
    for (int w = 0; w < warp; w++) bu += s_scan[w], bF += s_scan[8 + w];
    int eu = bu + iu - u, eF = bF + iF - f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int g = g0 + j;
        if (g < G) {
            tP[g] = eu, tF[g] = eF, tC[g] = c[j];
            eu += (c[j] + TB - 1) / TB;
            eF += p.counts ? (c[j] + p.block - 1) / p.block * p.block : c[j];
        }
    }
    if (tid == ST_THREADS - 1) tP[G] = bu + iu;
    __syncthreads();
}

// Item i (order: group, row tile, k-split, row block innermost, so the
// blocks of one tile that overflow TB run side by side and share the
// weights through L2; a tile's splits are neighbours too).
template <int TB, int BK>
__device__ __forceinline__ void st_decode(long i, const int *tP, const int *tF, const int *tC, int G, int R, int splits,
                                          int cps, int K, st_item &it) {
    const long RS = (long)R * splits;
    const int key = (int)(i / RS);
    int lo = 0, hi = G - 1;  // the last group with tP[g] <= key (it has blocks: tP[g + 1] > key)
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (tP[mid] <= key) lo = mid;
        else hi = mid - 1;
    }
    const int g = lo, nb = tP[g + 1] - tP[g];
    const long local = i - RS * tP[g];
    const int tb = (int)(local % nb), rs = (int)(local / nb);
    it.g = g, it.rt = rs / splits, it.ks = rs % splits;
    it.row0 = tF[g] + tb * TB;
    it.ntok = min(TB, tC[g] - tb * TB);
    it.kbeg = it.ks * cps * BK;
    it.kend = min(K, it.kbeg + cps * BK);
    it.nck = (it.kend - it.kbeg + BK - 1) / BK;
    it.tile = (tP[g] + tb) * R + it.rt;
}

// Registers: NB <= 4 instances are held to 128 per thread so that two CTAs
// share an SM. The ncu profile of the first version (one CTA of 8 warps,
// 142 registers) showed it latency-bound at ~0.4 eligible warps per
// scheduler and ~290 instructions per thread per 16 KB stage; two CTAs give
// each scheduler 4 warps, and a barrier stall of one CTA is covered by the
// other. NB >= 8 keeps 64..128 accumulators per thread: one CTA.
template <int NB, bool SWI, bool AF32>
__global__ void __launch_bounds__(ST_THREADS, NB <= 4 ? 2 : 1) k_gg_stream(lm_cuda_gg p, st_plan pl) {
    using C = stc<NB>;
    constexpr int STAGE = C::stage(AF32);
    constexpr int LA = AF32 ? C::BK / 4 : C::BK / 8;   // 16-byte chunks per staged activation row
    constexpr int QW = C::BO * C::L / ST_THREADS;      // weight chunks per thread per stage (4 or 8)
    constexpr int QA = C::TB * LA / ST_THREADS;        // activation chunks per thread per stage (1, 2 or 4)
    constexpr int WSTEP = ST_THREADS / C::L, ASTEP = ST_THREADS / LA;  // rows between one thread's chunks
    constexpr int ROWB = C::L * 16;                    // bytes of a staged bf16 row
    // The WK > 1 sums over k go through the consumed stage: all 8 warps'
    // accumulators at once where they fit (NB 1, 2), else the wk > 0 warps'.
    constexpr bool ALLRED = C::WK > 1 && 8 * 32 * C::NACC * 4 <= STAGE;
    static_assert(QW * ST_THREADS == C::BO * C::L && QA * ST_THREADS == C::TB * LA, "stage split");
    static_assert(!AF32 || NB <= 4, "f32 activations are staged for NB <= 4 only");
    static_assert(C::WK == 1 || (C::WK - 1) * C::WR * C::NACC * 32 * 4 <= STAGE, "k sums fit a stage");
    extern __shared__ __align__(128) unsigned char st_sm[];  // [S][STAGE] ring, then tP[G+1] tF[G] tC[G]
    __shared__ int s_scan[16], s_last;

    const int S = pl.S, G = p.counts ? p.n_groups : 1, K = p.K, O = p.O;
    int *tP = (int *)(st_sm + (size_t)S * STAGE), *tF = tP + G + 1, *tC = tF + G;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wr = warp % C::WR, wk = warp / C::WR;
    const int g8 = lane >> 2, t4 = lane & 3;
    const int cw = tid % C::L, ca = tid % LA;  // this thread's 16-byte column in weight / activation rows
    const size_t esz = AF32 ? 4 : 2;
    const int nct = (K + C::BK - 1) / C::BK;

    // the weights of group g (W[1]: the up weights with SwiGLU)
    auto wmat = [&](int g, const uint16_t **W) {
        W[0] = (const uint16_t *)(p.w1 ? p.w1[g] : p.w1_0);
        W[1] = SWI ? (const uint16_t *)(p.w2 ? p.w2[g] : p.w2_0) : W[0];
    };
    // weight row of tile-local row lr of row tile rt, or NULL past O
    auto wrow = [&](const uint16_t *const *W, int rt, int lr) -> const uint16_t * {
        int o;
        const uint16_t *M;
        if (SWI) o = rt * (C::BO / 2) + (lr >> 5) * 16 + (lr & 15), M = (lr & 16) ? W[1] : W[0];
        else o = rt * C::BO + lr, M = W[0];
        return o < O ? M + (size_t)o * p.ldw : NULL;
    };

    // Speculative L2 prefetch of the weights of this CTA's first S - 1
    // stages, from tables made before the wait (see gemm.h: pdl).
    if (pl.pf) {
        st_tables(p, G, C::TB, true, tP, tF, tC, s_scan);
        const int splits = tP[G] * pl.R <= pl.max_tiles ? pl.splits : 1, cps = splits > 1 ? pl.cps : nct;
        const long total = (long)tP[G] * pl.R * splits;
        constexpr int LPR = C::BK / 64;  // 128-byte lines per weight row per stage (BK >= 64)
        st_item it;
        const uint16_t *W[2];
        long i = blockIdx.x;
        int kc = 0;
        if (i < total) st_decode<C::TB, C::BK>(i, tP, tF, tC, G, pl.R, splits, cps, K, it), wmat(it.g, W);
        for (int f = 0; f < S - 1 && i < total; f++) {
            for (int line = tid; line < C::BO * LPR; line += ST_THREADS) {
                const uint16_t *w = wrow(W, it.rt, line / LPR);
                int k = it.kbeg + kc * C::BK + (line % LPR) * 64;
                if (w && k < it.kend) prefetch_l2(w + k);
            }
            if (++kc == it.nck) {
                kc = 0, i += gridDim.x;
                if (i < total) st_decode<C::TB, C::BK>(i, tP, tF, tC, G, pl.R, splits, cps, K, it), wmat(it.g, W);
            }
        }
    }
    griddep_wait();
    st_tables(p, G, C::TB, false, tP, tF, tC, s_scan);
    griddep_launch();
    // Split only if the counters fit (the launcher sized them for the rows it was told of).
    const int splits = tP[G] * pl.R <= pl.max_tiles ? pl.splits : 1, cps = splits > 1 ? pl.cps : nct;
    const long total = (long)tP[G] * pl.R * splits;
    long ci = blockIdx.x;
    if (ci >= total) return;
    const uint32_t ring = smem_u32(st_sm);

    // ---- loader: the next stage to issue (item li, chunk lk). Everything
    // that does not change from stage to stage is computed once: the shared
    // memory offsets of this thread's chunks once per kernel, their global
    // addresses once per item; a stage then costs an add and a cp.async per
    // chunk (the first version recomputed rows, swizzles and 64-bit
    // addresses for every chunk of every stage).
    st_item Li = {};
    long li = ci;
    int lk = 0;
    bool ldone = false;
    int wdst[QW], adst[QA];  // byte offsets in a stage
#pragma unroll
    for (int q = 0; q < QW; q++) wdst[q] = sw_off<C::L>(tid / C::L + q * WSTEP, cw);
#pragma unroll
    for (int q = 0; q < QA; q++) {
        const int j = tid / LA + q * ASTEP;
        adst[q] = C::WBYTES + (AF32 ? (j * C::FLD + ca * 4) * 4 : sw_off<C::L>(j, ca));
    }
    // This item's sources at its first k (kbeg + this thread's column). A
    // weight row past O is not loaded (its outputs are never stored); an
    // activation row past the block's last one is not loaded either: an
    // mma's output column depends on its own B column only, so whatever
    // that shared memory holds reaches only outputs that are never stored.
    // A gathered row of -1 is zero-filled.
    const char *wsrc[QW], *asrc[QA];
    unsigned wmask = 0, amask = 0, azero = 0;
    auto loader_item = [&]() {
        st_decode<C::TB, C::BK>(li, tP, tF, tC, G, pl.R, splits, cps, K, Li);
        const uint16_t *W[2];
        wmat(Li.g, W);
        wmask = amask = azero = 0;
#pragma unroll
        for (int q = 0; q < QW; q++) {
            const uint16_t *w = wrow(W, Li.rt, tid / C::L + q * WSTEP);
            wsrc[q] = (const char *)(w ? w + Li.kbeg + cw * 8 : W[0]);
            wmask |= (w != NULL) << q;
        }
#pragma unroll
        for (int q = 0; q < QA; q++) {
            const int j = tid / LA + q * ASTEP;
            asrc[q] = (const char *)p.a;
            if (j < Li.ntok) {
                const int r = Li.row0 + j, ar = p.a_row ? __ldcg(p.a_row + r) : r;
                amask |= 1u << q;
                if (ar >= 0) asrc[q] += ((size_t)ar * p.lda + Li.kbeg + ca * (AF32 ? 4 : 8)) * esz;
                else azero |= 1u << q;
            }
        }
    };
    auto load_stage = [&](int slot) {
        const uint32_t sb = ring + slot * STAGE;
        const int kc = lk * C::BK;  // k of this stage within the item
        const bool kw = Li.kbeg + kc + cw * 8 < Li.kend, ka = Li.kbeg + kc + ca * (AF32 ? 4 : 8) < Li.kend;
#pragma unroll
        for (int q = 0; q < QW; q++)
            if (wmask >> q & 1) cp_async16(sb + wdst[q], wsrc[q] + (kw ? kc * 2 : 0), kw);
#pragma unroll
        for (int q = 0; q < QA; q++)
            if (amask >> q & 1) {
                const bool ok = ka && !(azero >> q & 1);
                cp_async16(sb + adst[q], asrc[q] + (ok ? kc * (int)esz : 0), ok);
            }
    };
    auto advance_loader = [&]() {
        if (++lk < Li.nck) return;
        lk = 0, li += gridDim.x;
        if (li < total) loader_item();
        else ldone = true;
    };

    // ---- compute: the item of the stage being consumed. ldmatrix offsets
    // per k16 step (the swizzle term depends on the lane and the step only:
    // every row a lane addresses is lane & 7 modulo 8).
    st_item Ci = {};
    int ck = 0;
    float acc[2][NB][4];
    int a_off[C::KS], b_col[C::KS];
#pragma unroll
    for (int ss = 0; ss < C::KS; ss++) {
        const int step = wk * C::KS + ss;
        a_off[ss] = (wr * 32 + (lane & 15)) * ROWB + (((2 * step + (lane >> 4)) ^ (lane & 7)) << 4);
        b_col[ss] = ((2 * step + ((lane >> 3) & 1)) ^ (lane & 7)) << 4;
    }
    const int b_row = ((lane >> 4) * 8 + (lane & 7)) * ROWB;                                  // NB >= 2, bf16
    const int b1_off = (lane & 7) * ROWB + (((2 * wk * C::KS + (lane >> 3)) ^ (lane & 7)) << 4);  // NB == 1, bf16
    const int x_off = g8 * C::FLD + wk * C::KS * 16 + 2 * t4;                                 // f32: floats
    auto zero_acc = [&]() {
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int b = 0; b < NB; b++) acc[m][b][0] = acc[m][b][1] = acc[m][b][2] = acc[m][b][3] = 0.0f;
    };
    auto compute_stage = [&](int slot) {
        const uint32_t wbase = ring + slot * STAGE, abase = wbase + C::WBYTES;
        const int kst = Ci.kbeg + ck * C::BK, nbv = (Ci.ntok + 7) >> 3;
        if (kst + wk * C::KS * 16 >= Ci.kend) return;  // this warp's k-range is past K (uniform in the warp)
        uint32_t b1x[4];  // NB == 1, bf16: the B fragments of both k16 steps in one ldmatrix
        if constexpr (NB == 1 && !AF32) ldsm_x4(abase + b1_off, b1x[0], b1x[1], b1x[2], b1x[3]);
#pragma unroll
        for (int ss = 0; ss < C::KS; ss++) {
            if (kst + (wk * C::KS + ss) * 16 >= Ci.kend) break;
            uint32_t a[2][4];
#pragma unroll
            for (int m = 0; m < 2; m++)
                ldsm_x4(wbase + a_off[ss] + m * 16 * ROWB, a[m][0], a[m][1], a[m][2], a[m][3]);
            if constexpr (AF32) {
                const float *xs = (const float *)(st_sm + (size_t)slot * STAGE + C::WBYTES) + x_off + ss * 16;
#pragma unroll
                for (int nb = 0; nb < NB; nb++) {
                    if (nb >= nbv) break;
                    const float *x = xs + nb * 8 * C::FLD;
                    const float2 x0 = *(const float2 *)x, x1 = *(const float2 *)(x + 8);
                    const uint32_t b0 = pack_bf16(x0.x, x0.y), b1 = pack_bf16(x1.x, x1.y);
#pragma unroll
                    for (int m = 0; m < 2; m++) mma16816(acc[m][nb], a[m][0], a[m][1], a[m][2], a[m][3], b0, b1);
                }
            } else if constexpr (NB == 1) {
#pragma unroll
                for (int m = 0; m < 2; m++)
                    mma16816(acc[m][0], a[m][0], a[m][1], a[m][2], a[m][3], b1x[2 * ss], b1x[2 * ss + 1]);
            } else {
#pragma unroll
                for (int nb = 0; nb < NB; nb += 2) {
                    if (nb >= nbv) break;
                    uint32_t b[4];  // n-blocks nb and nb + 1: b0, b1 of each
                    ldsm_x4(abase + b_row + nb * 8 * ROWB + b_col[ss], b[0], b[1], b[2], b[3]);
#pragma unroll
                    for (int m = 0; m < 2; m++) mma16816(acc[m][nb], a[m][0], a[m][1], a[m][2], a[m][3], b[0], b[1]);
                    if (nb + 1 < nbv)
#pragma unroll
                        for (int m = 0; m < 2; m++)
                            mma16816(acc[m][nb + 1], a[m][0], a[m][1], a[m][2], a[m][3], b[2], b[3]);
                }
            }
        }
    };

    // ---- epilogue: the item's last stage is consumed. Sum over the WK
    // warps, over the splits, and store. Every thread takes part (barriers).
    // An output element is (m, b, c) of lane ln of warp row r (the mma
    // accumulator layout); with split-K its partial sits at
    //   part[tile][split][((m * NB + b) * 4 + c) * WR * 32 + r * 32 + ln].
    int *ws_cnt = NULL;  // split-K: [max_tiles rounded to 64] arrival counters, then the partial tiles
    float *ws_part = NULL;
    if (splits > 1) ws_cnt = (int *)p.ws, ws_part = (float *)p.ws + ((size_t)pl.max_tiles + 63) / 64 * 64;
    auto store = [&](float v0, float v1, int r, int b, int c, int ln) {  // v0, v1: m = 0, 1
        const int j = b * 8 + 2 * (ln & 3) + (c & 1), rof = (ln >> 2) + (c >> 1) * 8;
        if (j >= Ci.ntok) return;
        const size_t orow = (size_t)(Ci.row0 + j) * p.ldo;
        if constexpr (SWI) {
            const int o = Ci.rt * (C::BO / 2) + r * 16 + rof;
            if (o < O) ((__nv_bfloat16 *)p.out)[orow + o] = __float2bfloat16(silu_mul(v0, v1));
        } else {
            const int o = Ci.rt * C::BO + r * 32 + rof;
            if (o < O) ((float *)p.out)[orow + o] = v0 + bias_at(p.bias, p.bias_dt, o);
            if (o + 16 < O) ((float *)p.out)[orow + o + 16] = v1 + bias_at(p.bias, p.bias_dt, o + 16);
        }
    };
    auto pidx = [&](int m, int b, int c, int r, int ln) { return ((m * NB + b) * 4 + c) * (C::WR * 32) + r * 32 + ln; };
    // Split-K arrival: true in the CTA that completes the tile (the others'
    // partials are then visible to it).
    auto arrive_last = [&]() {
        __threadfence();
        __syncthreads();
        if (tid == 0) s_last = atomicAdd(ws_cnt + Ci.tile, 1) == splits - 1;
        __syncthreads();
        if (s_last) __threadfence();
        return s_last != 0;
    };
    auto epilogue = [&](int slot) {
        const int nbv = (Ci.ntok + 7) >> 3;
        float *red = (float *)(st_sm + (size_t)slot * STAGE);
        float *part = splits > 1 ? ws_part + (size_t)Ci.tile * splits * C::SLOT : NULL;
        if constexpr (ALLRED) {
            // Every warp's accumulators to the slot (free once all warps are
            // past it; refilled only after the next loop-top barrier), then
            // each thread sums whole (r, b, c, lane) outputs over the WK warps.
            __syncthreads();
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int b = 0; b < NB; b++)
#pragma unroll
                    for (int c = 0; c < 4; c++)
                        if (b < nbv) red[(warp * C::NACC + (m * NB + b) * 4 + c) * 32 + lane] = acc[m][b][c];
            __syncthreads();
            constexpr int P = C::WR * 32 * NB * 4;  // q = ((b * 4 + c) * WR + r) * 32 + ln
            for (int q = tid; q < P; q += ST_THREADS) {
                const int ln = q & 31, r = (q >> 5) % C::WR, b = q / (32 * C::WR * 4), c = (q / (32 * C::WR)) & 3;
                if (b >= nbv) continue;
                float v[2];
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    const float *x = red + (r * C::NACC + (m * NB + b) * 4 + c) * 32 + ln;
                    float s = x[0];
#pragma unroll
                    for (int w = 1; w < C::WK; w++) s += x[w * C::WR * C::NACC * 32];
                    v[m] = s;
                }
                if (part) {
#pragma unroll
                    for (int m = 0; m < 2; m++) __stcg(part + (size_t)Ci.ks * C::SLOT + pidx(m, b, c, r, ln), v[m]);
                } else {
                    store(v[0], v[1], r, b, c, ln);
                }
            }
            if (!part || !arrive_last()) return;
            // the last split: every split's partial in split order (its own
            // re-read too), so the bits do not depend on which CTA came last
            for (int q = tid; q < P; q += ST_THREADS) {
                const int ln = q & 31, r = (q >> 5) % C::WR, b = q / (32 * C::WR * 4), c = (q / (32 * C::WR)) & 3;
                if (b >= nbv) continue;
                float v[2];
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    const float *x = part + pidx(m, b, c, r, ln);
                    float s = __ldcg(x);
                    for (int sp = 1; sp < splits; sp++) s += __ldcg(x + (size_t)sp * C::SLOT);
                    v[m] = s;
                }
                store(v[0], v[1], r, b, c, ln);
            }
            if (tid == 0) ws_cnt[Ci.tile] = 0;  // all splits have arrived: ready for the next call
            return;
        } else {
            if constexpr (C::WK > 1) {
                __syncthreads();
                if (wk > 0)
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int b = 0; b < NB; b++)
#pragma unroll
                            for (int c = 0; c < 4; c++)
                                if (b < nbv)
                                    red[(((wk - 1) * C::WR + wr) * C::NACC + (m * NB + b) * 4 + c) * 32 + lane] = acc[m][b][c];
                __syncthreads();
                if (wk == 0)
                    for (int w = 1; w < C::WK; w++)
#pragma unroll
                        for (int m = 0; m < 2; m++)
#pragma unroll
                            for (int b = 0; b < NB; b++)
#pragma unroll
                                for (int c = 0; c < 4; c++)
                                    if (b < nbv)
                                        acc[m][b][c] += red[(((w - 1) * C::WR + wr) * C::NACC + (m * NB + b) * 4 + c) * 32 + lane];
            }
            if (part) {
                if (wk == 0)
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int b = 0; b < NB; b++)
#pragma unroll
                            for (int c = 0; c < 4; c++)
                                if (b < nbv) __stcg(part + (size_t)Ci.ks * C::SLOT + pidx(m, b, c, wr, lane), acc[m][b][c]);
                if (!arrive_last()) return;
                // Sum in split order (see above), the split loop outermost so
                // that a thread's 8 NB loads of one split are in flight
                // together (the first version chained them: 8 NB x splits
                // dependent L2 round trips, ~100 us at NB 8, 8 splits).
                if (wk == 0)
                    for (int sp = 0; sp < splits; sp++)
#pragma unroll
                        for (int m = 0; m < 2; m++)
#pragma unroll
                            for (int b = 0; b < NB; b++)
#pragma unroll
                                for (int c = 0; c < 4; c++)
                                    if (b < nbv) {
                                        const float x = __ldcg(part + (size_t)sp * C::SLOT + pidx(m, b, c, wr, lane));
                                        acc[m][b][c] = sp ? acc[m][b][c] + x : x;
                                    }
                if (tid == 0) ws_cnt[Ci.tile] = 0;
            }
            if (wk > 0) return;
#pragma unroll
            for (int b = 0; b < NB; b++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    if (b < nbv) store(acc[0][b][c], acc[1][b][c], wr, b, c, lane);
        }
    };

    // ---- the ring: stage x (flattened over this CTA's items) in slot x % S
    loader_item();
    st_decode<C::TB, C::BK>(ci, tP, tF, tC, G, pl.R, splits, cps, K, Ci);
    for (int s = 0; s < S - 1; s++) {
        if (!ldone) load_stage(s), advance_loader();
        cp_commit();
    }
    zero_acc();
    for (int slot = 0, lslot = S - 1;;) {
        cp_wait_n(S - 2);  // this thread's copies of stage `slot` have landed ...
        __syncthreads();   // ... everyone's; and stage lslot (consumed last round) is free
        if (!ldone) load_stage(lslot), advance_loader();
        cp_commit();
        compute_stage(slot);
        if (++ck == Ci.nck) {
            epilogue(slot);
            ck = 0, ci += gridDim.x;
            if (ci >= total) break;
            st_decode<C::TB, C::BK>(ci, tP, tF, tC, G, pl.R, splits, cps, K, Ci);
            zero_acc();
        }
        slot = slot + 1 == S ? 0 : slot + 1;
        lslot = lslot + 1 == S ? 0 : lslot + 1;
    }
    cp_wait<0>();
}

// ------------------------------------------------------------ launchers ---

extern "C" int lm_cuda_gg_supported(int wdt, size_t ldw, int K, size_t lda, int a_f32) {
    return wdt == 2 && K > 0 && K % 8 == 0 && ldw % 8 == 0 && lda % (a_f32 ? 4 : 8) == 0;
}

struct devinfo {
    int sms, optin, cc;  // multiprocessors, opt-in shared memory per block, compute capability major
};

static devinfo dev_info() {
    static devinfo cache[16];
    static bool have[16];
    int d = 0;
    if (cudaGetDevice(&d) != cudaSuccess || d < 0 || d >= 16) d = 0;
    if (!have[d]) {
        devinfo v = {0, 0, 0};
        if (cudaDeviceGetAttribute(&v.sms, cudaDevAttrMultiProcessorCount, d) != cudaSuccess || v.sms < 1) v.sms = 1;
        if (cudaDeviceGetAttribute(&v.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d) != cudaSuccess) v.optin = 48 * 1024;
        if (cudaDeviceGetAttribute(&v.cc, cudaDevAttrComputeCapabilityMajor, d) != cudaSuccess) v.cc = 0;
        cudaGetLastError();  // a failed query must not look like a failed launch
        cache[d] = v, have[d] = true;
    }
    return cache[d];
}

// Whether kernel k may be launched with programmatic stream serialization:
// its machine code must have griddepcontrol (sm_90+), or it would not wait.
static bool pdl_ok(const void *k) {
    static const void *fn[64];
    static signed char ok[64];
    static int n;
    for (int i = 0; i < n; i++)
        if (fn[i] == k) return ok[i];
    cudaFuncAttributes a;
    bool v = dev_info().cc >= 9 && cudaFuncGetAttributes(&a, k) == cudaSuccess && a.binaryVersion >= 90;
    cudaGetLastError();
    if (n < 64) fn[n] = k, ok[n++] = v;
    return v;
}

// Every launch of this file: plain, or with programmatic stream
// serialization (the kernel's griddep_wait then orders it after its
// predecessor).
template <class... P, class... A>
static int launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, bool pdl, A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cudaLaunchAttribute at[1] = {};
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    pdl = pdl && pdl_ok((const void *)k);
    cfg.attrs = pdl ? at : NULL, cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
    cudaError_t l = cudaGetLastError();
    return (int)(e != cudaSuccess ? e : l);
}

// Raises a kernel's dynamic shared memory limit to smem where it is above
// 48 KB and above what was set before (sizes vary from call to call).
static int smem_limit(const void *k, size_t smem) {
    static const void *fn[64];
    static size_t set[64];
    static int n;
    if (smem <= 48 * 1024) return 0;
    int i = 0;
    while (i < n && fn[i] != k) i++;
    if (i < n && set[i] >= smem) return 0;
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return (int)e;
    if (i == n && n < 64) fn[n++] = k;
    if (i < 64) set[i] = smem;
    return 0;
}

typedef void (*st_kernel_t)(lm_cuda_gg, st_plan);

template <int NB>
static st_kernel_t st_pick_nb(bool swi, bool af32) {
    if (NB <= 4)
        return swi ? (af32 ? k_gg_stream<NB, true, NB <= 4> : k_gg_stream<NB, true, false>)
                   : (af32 ? k_gg_stream<NB, false, NB <= 4> : k_gg_stream<NB, false, false>);
    return swi ? k_gg_stream<NB, true, false> : k_gg_stream<NB, false, false>;
}
static st_kernel_t st_pick(int nb, bool swi, bool af32) {
    switch (nb) {
    case 1: return st_pick_nb<1>(swi, af32);
    case 2: return st_pick_nb<2>(swi, af32);
    case 4: return st_pick_nb<4>(swi, af32);
    case 8: return st_pick_nb<8>(swi, af32);
    default: return st_pick_nb<16>(swi, af32);
    }
}
struct st_shape {
    int bo_out, bk, tb, slot, stage;  // outputs per row tile, k per stage, rows per item, split slot floats, stage bytes
};
template <int NB>
static st_shape st_shape_nb(bool swi, bool af32) {
    typedef stc<NB> C;
    return {swi ? C::BO / 2 : C::BO, C::BK, C::TB, C::SLOT, C::stage(af32 && NB <= 4)};
}
static st_shape st_shape_of(int nb, bool swi, bool af32) {
    switch (nb) {
    case 1: return st_shape_nb<1>(swi, af32);
    case 2: return st_shape_nb<2>(swi, af32);
    case 4: return st_shape_nb<4>(swi, af32);
    case 8: return st_shape_nb<8>(swi, af32);
    default: return st_shape_nb<16>(swi, af32);
    }
}

// What a call runs (lm_cuda_gg_run; lm_cuda_gg_describe prints it).
struct gg_plan {
    int path;       // 1 small, 2 large, 3 stream
    int nb;         // small / stream: token blocks of 8 per pass / item
    bool convert;   // f32 activations converted to bf16 in scratch first
    bool af32;      // the GEMM kernel reads f32 activations
    bool pdl;       // launches with programmatic stream serialization (asked for; used where pdl_ok)
    st_plan k;      // stream
    int ctas, occ;  // stream: grid, CTAs per SM
    size_t smem;
    long items_ub;  // stream: work items for the rows the call was told of (upper bound)
    size_t ws_need; // stream: workspace bytes its split takes
    int grid_x, grid_y;
};

static long cdiv(long a, long b) { return (a + b - 1) / b; }

// Workspace bytes of a split: counters for every tile, then the partial tiles.
static size_t split_ws_bytes(long tiles, int splits, int slot) {
    return (size_t)(tiles + 63) / 64 * 64 * 4 + (size_t)tiles * splits * slot * 4;
}

// The k-split of a stream call: the fewest splits that fill the grid's
// last wave to >= 90% (or the most efficient), within the workspace;
// forced: as asked (if it fits). *need: the bytes it takes.
static int choose_splits(long units_est, long units_ub, long R, long nct, long full, int slot, int forced,
                         size_t ws_bytes, int *cps_out, size_t *need_out) {
    int splits = 1, cps = (int)nct;
    size_t need_best = 0;
    int smax = forced > 0 ? forced : ST_MAX_SPLITS;
    if (smax > nct) smax = (int)nct;
    if (smax > ST_MAX_SPLITS) smax = ST_MAX_SPLITS;
    double best = -1;
    for (int s = 1; s <= smax; s++) {
        int c = (int)cdiv(nct, s), se = (int)cdiv(nct, c);
        size_t need = se > 1 ? split_ws_bytes(units_ub * R, se, slot) : 0;
        if (need > ws_bytes) break;
        long items = units_est * R * se;
        double eff = (double)items / ((double)full * cdiv(items, full));
        bool take = forced > 0 ? s == smax : eff > best + 0.05 || (eff >= 0.9 && best < 0.9);
        if (take) best = eff, splits = se, cps = c, need_best = need;
        if (forced <= 0 && best >= 0.9) break;
    }
    *cps_out = cps, *need_out = need_best;
    return splits;
}

// CTAs of stream kernel k with smem dynamic bytes per SM, cached (the
// launcher plans every call); 0 if the query fails.
static int occupancy(st_kernel_t k, size_t smem) {
    static st_kernel_t fn[128];
    static size_t sz[128];
    static int dev[128], val[128], n, next;
    int d = 0;
    if (cudaGetDevice(&d) != cudaSuccess) d = 0;
    for (int i = 0; i < n; i++)
        if (fn[i] == k && sz[i] == smem && dev[i] == d) return val[i];
    int occ = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, ST_THREADS, smem) != cudaSuccess) occ = 0;
    cudaGetLastError();
    int i = n < 128 ? n++ : next++ % 128;
    fn[i] = k, sz[i] = smem, dev[i] = d, val[i] = occ;
    return occ;
}

static int stream_plan(const lm_cuda_gg *p, gg_plan *pl) {
    const devinfo d = dev_info();
    const int G = p->counts ? p->n_groups : 1, n = p->n_rows;
    const bool swi = p->swiglu != 0;
    const int groups = p->counts ? (G < n ? G : n) : 1, per = (n + groups - 1) / groups;
    const int cap = p->counts ? per + per / 4 + 1 : per;  // rows per group with headroom for uneven routing
    int nb = p->nb;
    if (nb != 1 && nb != 2 && nb != 4 && nb != 8 && nb != 16)
        nb = cap <= 8 ? 1 : cap <= 16 ? 2 : cap <= 32 ? 4 : cap <= 64 ? 8 : 16;
    bool af32 = p->a_f32 != 0, convert = false;
    if (af32 && nb >= 8) {  // f32 is staged for NB <= 4 only: convert, or take smaller blocks
        int a_rows = p->counts ? p->a_rows : n;
        if (p->scratch && a_rows > 0 && (size_t)a_rows * p->K * 2 <= p->scratch_bytes) convert = true, af32 = false;
        else nb = 4;
    }
    const st_shape sh = st_shape_of(nb, swi, af32);
    const size_t tables = ((size_t)3 * G + 1) * 4;
    const size_t reserve = 1024;  // static shared memory and slack
    if ((size_t)d.optin < tables + reserve + 3 * (size_t)sh.stage) return -1;
    int S = (int)((d.optin - tables - reserve) / sh.stage);
    if (S > ST_MAX_STAGES) S = ST_MAX_STAGES;
    st_kernel_t kf = st_pick(nb, swi, af32);
    int e = smem_limit((const void *)kf, (size_t)S * sh.stage + tables);
    if (e) return e;
    // CTAs per SM: two where the kernel allows it (NB <= 4: 128 registers)
    // and each still gets a ring of >= 3 stages (H100: 2 x ~110 KB; A100:
    // 2 x ~80 KB); else one with the deepest ring. p->occ forces 1 or 2.
    const int want = p->occ == 1 || p->occ == 2 ? p->occ : nb <= 4 ? 2 : 1;
    if (want >= 2)
        for (int s = S; s >= 3; s--)
            if (occupancy(kf, (size_t)s * sh.stage + tables) >= 2) {
                S = s;
                break;
            }
    if (p->stages >= 3 && p->stages < S) S = p->stages;
    const size_t smem = (size_t)S * sh.stage + tables;
    int occ = occupancy(kf, smem);
    if (occ < 1) return -1;
    if (p->occ == 1 || p->occ == 2) occ = occ < p->occ ? occ : p->occ;
    const long R = cdiv(p->O, sh.bo_out), nct = cdiv(p->K, sh.bk);
    const long units_ub = p->counts ? groups + n / sh.tb : cdiv(n, sh.tb);
    const long units_est = p->counts ? groups * cdiv(per, sh.tb) : units_ub;
    const long full = (long)d.sms * occ;
    // k-splits (f32 output, with a workspace)
    int splits = 1, cps = (int)nct;
    size_t need = 0;
    if (!swi && nct >= 2)
        splits = choose_splits(units_est, units_ub, R, nct, full, sh.slot, p->splits, p->ws ? p->ws_bytes : 0, &cps,
                               &need);
    const long items_ub = units_ub * R * splits;
    if (units_ub * R * ST_MAX_SPLITS > 0x7fffffffL) return -1;
    pl->path = 3, pl->nb = nb, pl->convert = convert, pl->af32 = af32;
    pl->k.S = S, pl->k.R = (int)R, pl->k.splits = splits, pl->k.cps = cps;
    pl->k.max_tiles = (int)(units_ub * R);
    pl->k.pf = !p->pdl ? 0 : !p->counts ? 1 : p->pdl >= 2 ? 2 : 0;
    pl->occ = occ, pl->smem = smem, pl->items_ub = items_ub, pl->ws_need = need;
    long ctas = p->ctas > 0 ? p->ctas : items_ub < full ? items_ub : full;
    pl->ctas = (int)(ctas < 1 ? 1 : ctas);
    return 0;
}

static int gg_make_plan(const lm_cuda_gg *p, gg_plan *pl) {
    *pl = gg_plan();
    pl->pdl = p->pdl > 0;
    const int n = p->n_rows, G = p->counts ? p->n_groups : 1;
    const int groups = p->counts ? (G < n ? G : n) : 1, per = (n + groups - 1) / groups;
    const int cap = p->counts ? per + per / 4 + 1 : per;
    // Stream up to ~100 rows per group, but not past ~50 where a group's
    // weights are large (>= 16 M elements): Mixtral's 64 rows per expert ran
    // at 2.6x its bound on the stream kernel (NB 16: 48 KB stages, a 4-deep
    // ring, 128 accumulators per thread) and at 2.0x on the large kernel;
    // Qwen3's small experts (2048 x 768) were faster on the stream kernel.
    const bool big_w = (double)p->K * p->O >= (double)(1 << 24);
    int path = p->force >= 1 && p->force <= 3 ? p->force : cap <= (big_w ? 64 : 128) ? 3 : 2;
    // (the place for a Hopper large-M path: chosen here, launched in lm_cuda_gg_run)
    if (path == 3 && stream_plan(p, pl) != 0) path = per <= 8 * SMALL_MAX_NB ? 1 : 2;
    pl->path = path;
    if (path == 1) {
        pl->nb = per <= 8 ? 1 : per <= 16 ? 2 : per <= 32 ? 4 : 8;
        pl->grid_x = (p->O + 15) / 16, pl->grid_y = groups;
        pl->smem = (size_t)SMALL_WARPS * (p->swiglu ? 2 : 1) * pl->nb * 4 * 32 * sizeof(float);
    } else if (path == 2) {
        int ntile = p->swiglu ? LG_BN / 2 : LG_BN;
        pl->convert = p->a_f32 != 0;
        pl->grid_x = p->counts ? (n + LG_BM - 1) / LG_BM + p->n_groups : (n + LG_BM - 1) / LG_BM;
        pl->grid_y = (p->O + ntile - 1) / ntile;
        pl->smem = (size_t)LG_STAGES * (LG_BM + LG_BN) * LG_BK * 2;
    }
    return 0;
}

template <int NB, bool SWI, bool AF32>
static int launch_small(const lm_cuda_gg *p, const gg_plan &pl, cudaStream_t st) {
    int e = smem_limit((const void *)k_gg_small<NB, SWI, AF32>, pl.smem);
    if (e) return e;
    return launch(k_gg_small<NB, SWI, AF32>, dim3(pl.grid_x, pl.grid_y), dim3(32 * SMALL_WARPS), pl.smem, st, pl.pdl, *p);
}

template <int NB>
static int launch_small_nb(const lm_cuda_gg *p, const gg_plan &pl, cudaStream_t st) {
    if (p->swiglu) return p->a_f32 ? launch_small<NB, true, true>(p, pl, st) : launch_small<NB, true, false>(p, pl, st);
    return p->a_f32 ? launch_small<NB, false, true>(p, pl, st) : launch_small<NB, false, false>(p, pl, st);
}

// f32 activations -> bf16 [a_rows][K] in scratch; q then reads those.
static int convert_acts(const lm_cuda_gg *p, lm_cuda_gg *q, bool pdl, cudaStream_t st) {
    int a_rows = p->counts ? p->a_rows : p->n_rows;
    if (!p->scratch || a_rows <= 0 || (size_t)a_rows * p->K * 2 > p->scratch_bytes) return (int)cudaErrorInvalidValue;
    int bx = (p->K / 2 + 255) / 256;
    if (bx > 64) bx = 64;
    int by = a_rows < 65535 ? a_rows : 65535;  // the grid's y limit (n_batch goes to 65536); rows stride
    int e = launch(k_to_bf16, dim3(bx, by), dim3(256), 0, st, pdl, (const float *)p->a, p->lda, a_rows, p->K,
                   (__nv_bfloat16 *)p->scratch);
    if (e) return e;
    q->a = p->scratch, q->a_f32 = 0, q->lda = (size_t)p->K;
    return 0;
}

template <bool SWI>
static int launch_large(const lm_cuda_gg *p, const gg_plan &pl, cudaStream_t st) {
    int e = smem_limit((const void *)k_gg_large<SWI>, pl.smem);
    if (e) return e;
    return launch(k_gg_large<SWI>, dim3(pl.grid_x, pl.grid_y), dim3(256), pl.smem, st, pl.pdl, *p);
}

extern "C" int lm_cuda_gg_run(const lm_cuda_gg *p, lm_cuda_stream st) {
    if (!p->out || p->O <= 0 || p->n_rows <= 0) return 0;
    if (p->counts && (p->n_groups < 1 || p->n_groups > MAX_GROUPS || p->block < 1)) return (int)cudaErrorInvalidValue;
    if (p->K <= 0 || p->K % 8) return (int)cudaErrorInvalidValue;
    if (p->swiglu && !(p->w2 || p->w2_0)) return (int)cudaErrorInvalidValue;
    gg_plan pl;
    int e = gg_make_plan(p, &pl);
    if (e) return e;
    if (pl.path == 1) {
        if (pl.nb == 1) return launch_small_nb<1>(p, pl, st);
        if (pl.nb == 2) return launch_small_nb<2>(p, pl, st);
        if (pl.nb == 4) return launch_small_nb<4>(p, pl, st);
        return launch_small_nb<8>(p, pl, st);
    }
    lm_cuda_gg q = *p;
    if (pl.convert && (e = convert_acts(p, &q, pl.pdl, st))) return e;
    if (pl.path == 2) return p->swiglu ? launch_large<true>(&q, pl, st) : launch_large<false>(&q, pl, st);
    st_kernel_t kf = st_pick(pl.nb, p->swiglu != 0, pl.af32);
    return launch(kf, dim3(pl.ctas), dim3(ST_THREADS), pl.smem, st, pl.pdl, q, pl.k);
}

extern "C" void lm_cuda_gg_describe(const lm_cuda_gg *p, char *buf, size_t cap) {
    if (!cap) return;
    gg_plan pl;
    if (!p->out || p->O <= 0 || p->n_rows <= 0 || gg_make_plan(p, &pl)) {
        snprintf(buf, cap, "none");
        return;
    }
    if (pl.path == 1) snprintf(buf, cap, "small nb %d grid %dx%d", pl.nb, pl.grid_x, pl.grid_y);
    else if (pl.path == 2) snprintf(buf, cap, "large%s grid %dx%d", pl.convert ? " +to_bf16" : "", pl.grid_x, pl.grid_y);
    else
        snprintf(buf, cap, "stream nb %d%s%s splits %d stages %d ctas %d (%d/SM) items<=%ld smem %zuK%s%s", pl.nb,
                 pl.af32 ? " a32" : "", pl.convert ? " +to_bf16" : "", pl.k.splits, pl.k.S, pl.ctas, pl.occ,
                 pl.items_ub, pl.smem / 1024, pl.pdl ? " pdl" : "", pl.k.pf ? " prefetch" : "");
}

extern "C" size_t lm_cuda_gg_ws_bytes(int n_rows, int n_groups, int O, int K) {
    // The largest workspace the launcher would use with any workspace, for
    // any call of up to n_rows rows (f32 output: SwiGLU never splits).
    size_t best = 0;
    lm_cuda_gg q = lm_cuda_gg();
    q.n_groups = n_groups > 0 ? n_groups : 0, q.block = 1, q.O = O, q.K = K, q.ws = (void *)16, q.ws_bytes = (size_t)-1;
    q.out = (void *)16;
    int dummy = 0;
    q.counts = n_groups > 0 ? &dummy : NULL;  // only tested against NULL by the planner
    // (the stream kernel takes up to ~101 rows per group: beyond, no split)
    const long nmax = n_rows < 128L * (n_groups > 0 ? n_groups : 1) ? n_rows : 128L * (n_groups > 0 ? n_groups : 1);
    for (long n = 1; n <= nmax; n++) {
        q.n_rows = (int)n;
        gg_plan pl;
        if (gg_make_plan(&q, &pl) == 0 && pl.path == 3 && pl.ws_need > best) best = pl.ws_need;
    }
    return best;
}

// ---------------------------------------------------------------- align ---

// Exclusive prefix sums of (a, b) over the block (blockDim.x a multiple of
// 32, <= 1024); *ta, *tb: the totals. sm: 64 ints of shared memory.
__device__ void block_scan2(int a, int b, int *ea, int *eb, int *ta, int *tb, int *sm) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int ia = a, ib = b;
    for (int o = 1; o < 32; o <<= 1) {
        int x = __shfl_up_sync(0xffffffffu, ia, o), y = __shfl_up_sync(0xffffffffu, ib, o);
        if (lane >= o) ia += x, ib += y;
    }
    if (lane == 31) sm[warp] = ia, sm[32 + warp] = ib;
    __syncthreads();
    int ba = 0, bb = 0, sa = 0, sb = 0;
    for (int w = 0; w < nw; w++) {
        int x = sm[w], y = sm[32 + w];
        if (w < warp) ba += x, bb += y;
        sa += x, sb += y;
    }
    *ea = ba + ia - a, *eb = bb + ib - b, *ta = sa, *tb = sb;
    __syncthreads();  // sm may be reused
}

// The align of one CTA (E <= 1024, blockDim.x a multiple of 32), sel_at(q)
// the expert of pair q = token * k + choice. Counts by shared atomics; the padded
// layout by a prefix sum over the experts (one thread each); then the
// pairs in chunks of blockDim.x, in order: a pair's row is its expert's next free
// row plus the number of earlier pairs of the same expert in the chunk
// (match_any within the warp, prefix over the warps), which is the serial
// kernel's order (each expert's rows in token order).
// sh: cnt[E], next[E], wcnt[nw][E] (nw = blockDim.x / 32); scan: 64 ints.
template <class SelAt>
__device__ void align_block(SelAt sel_at, int n, int k, int E, int B, int *row_of, size_t ldr, int *token_of,
                            int *tiles, int *n_tiles, int *counts, unsigned long long *stats, int *sh, int *scan) {
    int *cnt = sh, *next = sh + E, *wcnt = sh + 2 * E;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, np = n * k, nw = blockDim.x / 32;
    for (int e = tid; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int q = tid; q < np; q += blockDim.x) atomicAdd(&cnt[sel_at(q)], 1);
    __syncthreads();
    {  // padded layout: first rows and the tile list
        const int c = tid < E ? cnt[tid] : 0, tl = (c + B - 1) / B;
        int row, t0, rows, nt;
        block_scan2(tl * B, tl, &row, &t0, &rows, &nt, scan);
        if (tid < E) {
            next[tid] = row;
            for (int b = 0; b < tl; b++) tiles[2 * (t0 + b)] = tid, tiles[2 * (t0 + b) + 1] = row + b * B;
            counts[tid] = c;
            if (stats) stats[tid] += (unsigned long long)c;
            for (int r = row + c; r < row + tl * B; r++) token_of[r] = -1;
        }
        if (tid == 0) *n_tiles = nt;
    }
    __syncthreads();
    for (int q0 = 0; q0 < np; q0 += blockDim.x) {
        for (int i = tid; i < nw * E; i += blockDim.x) wcnt[i] = 0;
        __syncthreads();
        int q = q0 + tid, e = q < np ? sel_at(q) : -1;
        unsigned peers = __match_any_sync(0xffffffffu, e);
        int rank = __popc(peers & ((1u << lane) - 1));
        if (e >= 0 && rank == 0) wcnt[warp * E + e] = __popc(peers);
        __syncthreads();
        for (int x = tid; x < E; x += blockDim.x) {  // exclusive prefix over the warps, from the expert's next row
            int a = next[x];
            for (int w = 0; w < nw; w++) {
                int c = wcnt[w * E + x];
                wcnt[w * E + x] = a;
                a += c;
            }
            next[x] = a;
        }
        __syncthreads();
        if (e >= 0) {
            int r = wcnt[warp * E + e] + rank;
            row_of[(size_t)(q / k) * ldr + q % k] = r;
            token_of[r] = q / k;
        }
        __syncthreads();
    }
}

__global__ void __launch_bounds__(1024) k_align_fast(const int *sel, size_t lds, int n, int k, int E, int B,
                                                     int *row_of, size_t ldr, int *token_of, int *tiles, int *n_tiles,
                                                     int *counts, unsigned long long *stats) {
    extern __shared__ int sh[];  // cnt[E], next[E], wcnt[blockDim.x / 32][E]
    __shared__ int scan[64];
    griddep_wait();
    griddep_launch();
    align_block([&](int q) { return sel[(size_t)(q / k) * lds + q % k]; }, n, k, E, B, row_of, ldr, token_of, tiles,
                n_tiles, counts, stats, sh, scan);
}

// Threads of the align CTA: one per expert (the layout's scan) and up to one
// per pair, at least 4 warps. A small batch takes a small CTA: its
// barriers and its per-expert prefix over the warps (one step per warp)
// are what the align of a few pairs costs.
static int align_threads(int n, int k, int E) {
    long np = (long)n * k, t = np > E ? np : E;
    t = (t + 31) / 32 * 32;
    return (int)(t < 128 ? 128 : t > 1024 ? 1024 : t);
}

extern "C" int lm_cuda_align_fast_pdl(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr,
                                      int *token_of, int *tiles, int *n_tiles, int *counts, unsigned long long *stats,
                                      int pdl, lm_cuda_stream st) {
    if (E < 1 || E > MAX_GROUPS || k < 1 || B < 1) return (int)cudaErrorInvalidValue;
    const int threads = align_threads(n, k, E);
    size_t smem = (size_t)(2 + threads / 32) * E * sizeof(int);
    int e = smem_limit((const void *)k_align_fast, smem);
    if (e) return e;
    return launch(k_align_fast, dim3(1), dim3(threads), smem, st, pdl > 0, sel, lds, n, k, E, B, row_of, ldr, token_of,
                  tiles, n_tiles, counts, stats);
}

extern "C" int lm_cuda_align_fast(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr,
                                  int *token_of, int *tiles, int *n_tiles, int *counts, unsigned long long *stats,
                                  lm_cuda_stream st) {
    return lm_cuda_align_fast_pdl(sel, lds, n, k, E, B, row_of, ldr, token_of, tiles, n_tiles, counts, stats, 0, st);
}

// ---------------------------------------------------------------- route ---

#define ROUTE_MAXK 32

// One warp routes one token with lm_cuda_route's arithmetic, in its order
// where the order changes the result: softmax of the logits r[E] (max, then
// expf(r - max) each, summed in expert order), the top k by repeated
// argmax (ties to the lower id), their weights p / sum (normalised by the
// sum of the chosen p / sum, in choice order, when norm), written sorted by
// expert id. pw: E floats, ch / bp: k entries of the warp's shared memory.
__device__ void route_warp(const float *r, int E, int k, int norm, int *sel, float *w, int *sel_sm, float *pw, int *ch,
                           float *bp) {
    const int lane = threadIdx.x & 31;
    float mx = -INFINITY;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, r[e]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    for (int e = lane; e < E; e += 32) pw[e] = expf(r[e] - mx);
    __syncwarp();
    unsigned taken = 0;  // bit j: expert lane + 32 j is chosen
    for (int i = 0; i < k; i++) {
        int best = -1;
        float bv = 0;
        for (int e = lane, j = 0; e < E; e += 32, j++) {
            float v = pw[e];
            if (!(taken >> j & 1) && (best < 0 || v > bv)) best = e, bv = v;
        }
        for (int o = 16; o > 0; o >>= 1) {
            int ob = __shfl_xor_sync(0xffffffffu, best, o);
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            if (ob >= 0 && (best < 0 || ov > bv || (ov == bv && ob < best))) best = ob, bv = ov;
        }
        if (best >= 0 && (best & 31) == lane) taken |= 1u << (best >> 5);
        if (lane == 0) ch[i] = best, bp[i] = bv;
    }
    __syncwarp();
    float sum = 0, wsum = 0;
    if (lane == 0) {
        for (int e = 0; e < E; e++) sum += pw[e];
        for (int i = 0; i < k; i++) wsum += bp[i] / sum;
    }
    sum = __shfl_sync(0xffffffffu, sum, 0);
    wsum = __shfl_sync(0xffffffffu, wsum, 0);
    if (lane < k) {
        int e = ch[lane], rank = 0;
        for (int j = 0; j < k; j++) rank += ch[j] < e;
        float pv = pw[e] / sum;
        sel[rank] = e;
        w[rank] = norm ? pv / wsum : pv;
        if (sel_sm) sel_sm[rank] = e;
    }
    __syncwarp();  // pw, ch, bp are the warp's next token's
}

#define ROUTE_WARPS 4

__global__ void __launch_bounds__(32 * ROUTE_WARPS) k_route_fast(const float *logits, size_t ldl, int n, int E, int k,
                                                               int norm, int *sel, size_t lds, float *w, size_t ldw) {
    extern __shared__ float rsh[];  // per warp: pw[E], ch[k], bp[k]
    griddep_wait();
    griddep_launch();
    const int warp = threadIdx.x / 32;
    float *pw = rsh + (size_t)warp * (E + 2 * k);
    for (int t = blockIdx.x * ROUTE_WARPS + warp; t < n; t += gridDim.x * ROUTE_WARPS)
        route_warp(logits + (size_t)t * ldl, E, k, norm, sel + (size_t)t * lds, w + (size_t)t * ldw, NULL, pw,
                   (int *)(pw + E), pw + E + k);
}

extern "C" int lm_cuda_route_fast(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds,
                                  float *w, size_t ldw, int pdl, lm_cuda_stream st) {
    if (k < 1 || k > ROUTE_MAXK || k > E || E > MAX_GROUPS) return (int)cudaErrorInvalidValue;
    if (n <= 0) return 0;
    size_t smem = (size_t)ROUTE_WARPS * (E + 2 * k) * 4;
    int e = smem_limit((const void *)k_route_fast, smem);
    if (e) return e;
    long blocks = cdiv(n, ROUTE_WARPS);
    return launch(k_route_fast, dim3((unsigned)(blocks < 65536 ? blocks : 65536)), dim3(32 * ROUTE_WARPS), smem, st,
                  pdl > 0, logits, ldl, n, E, k, norm, sel, lds, w, ldw);
}

// Route and align in one CTA for a few tokens (n <= 8, E <= 256): the
// latency of one decode step's router, which the first version (1024
// threads, a warp per token, then the general align) took 11.6 us over
// for one token: ~19k instructions, 65% of the warps' time at a barrier,
// serial loops over 32 warps' counts. Here 16 warps, four barriers:
//   1. warp t (< n) takes token t: max, softmax numerators in registers
//      (E / 32 per lane), top k by repeated warp argmax; warp 8 + t
//      computes the same numerators into shared memory and its lane 0 sums
//      them in expert order (the serial sum, beside the top k);
//   2. one thread per (token, choice): the weights (sum of the chosen p /
//      sum in choice order) and the outputs in expert order;
//   3. one thread per pair: its rank among the earlier pairs of its expert
//      in its warp (match_any), the warp's count per expert;
//   4. warp 0: per expert the prefix over the warps and, by a warp scan
//      over the experts (E / 32 per lane), the padded layout, tiles,
//      counts, stats; then every pair its row.
// Same arithmetic as basic.cu's route (max, expf, the sums in its order) and
// align (each expert's rows in pair order): the same bits.
#define RA_MAX_TOKENS 8
#define RA_MAX_E 256
#define RA_THREADS 512

__global__ void __launch_bounds__(RA_THREADS) k_route_align(const float *logits, size_t ldl, int n, int E, int k, int norm,
                                                            int *sel, size_t lds, float *w, size_t ldw, int B,
                                                            int *row_of, size_t ldr, int *token_of, int *tiles,
                                                            int *n_tiles, int *counts, unsigned long long *stats) {
    // pw[n][E] (the sum warps' numerators), sum[n], ch[n k], bp[n k], sel_sm[n k], wcnt[nwp][E]
    extern __shared__ int ra_sh[];
    constexpr int EPL = RA_MAX_E / 32;  // experts per lane
    float *pw = (float *)ra_sh, *sum_sm = pw + n * E, *bp = sum_sm + n;
    int *ch = (int *)(bp + n * k), *sel_sm = ch + n * k, *wcnt = sel_sm + n * k;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, np = n * k, nwp = (np + 31) >> 5;
    griddep_wait();
    griddep_launch();
    for (int i = tid; i < nwp * E; i += RA_THREADS) wcnt[i] = 0;

    // 1. softmax numerators; top k (warps 0..n-1), sums (warps 8..8+n-1)
    const int t = warp & 7;
    if (t < n) {
        const float *r = logits + (size_t)t * ldl;
        float v[EPL], mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < EPL; j++) {
            const int e = lane + 32 * j;
            v[j] = e < E ? r[e] : -INFINITY;
            mx = fmaxf(mx, v[j]);
        }
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
#pragma unroll
        for (int j = 0; j < EPL; j++)
            if (lane + 32 * j < E) v[j] = expf(v[j] - mx);
        if (warp < 8) {
            unsigned taken = 0;  // bit j: expert lane + 32 j is chosen
            for (int i = 0; i < k; i++) {
                int best = -1;
                float bv = 0;
#pragma unroll
                for (int j = 0; j < EPL; j++)  // in expert order; strict >: ties to the lower id
                    if (lane + 32 * j < E && !(taken >> j & 1) && (best < 0 || v[j] > bv)) best = lane + 32 * j, bv = v[j];
                for (int o = 16; o > 0; o >>= 1) {
                    const int ob = __shfl_xor_sync(0xffffffffu, best, o);
                    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                    if (ob >= 0 && (best < 0 || ov > bv || (ov == bv && ob < best))) best = ob, bv = ov;
                }
                if (best >= 0 && (best & 31) == lane) taken |= 1u << (best >> 5);
                if (lane == 0) ch[t * k + i] = best, bp[t * k + i] = bv;
            }
        } else {
            float *q = pw + t * E;
#pragma unroll
            for (int j = 0; j < EPL; j++)
                if (lane + 32 * j < E) q[lane + 32 * j] = v[j];
            __syncwarp();
            if (lane == 0) {
                float s = 0;
                for (int e = 0; e < E; e++) s += q[e];
                sum_sm[t] = s;
            }
        }
    }
    __syncthreads();

    // 2. weights and the outputs in expert order
    if (tid < np) {
        const int tt = tid / k, i = tid % k, e = ch[tid];
        const float s = sum_sm[tt];
        float wsum = 0;
        for (int j = 0; j < k; j++) wsum += bp[tt * k + j] / s;
        int rank = 0;
        for (int j = 0; j < k; j++) rank += ch[tt * k + j] < e;
        const float pv = bp[tt * k + i] / s;
        sel[(size_t)tt * lds + rank] = e;
        w[(size_t)tt * ldw + rank] = norm ? pv / wsum : pv;
        sel_sm[tt * k + rank] = e;
    }
    __syncthreads();

    // 3. each pair's rank within its warp among the pairs of its expert
    const int e = tid < np ? sel_sm[tid] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1));
    if (e >= 0 && rank == 0) wcnt[warp * E + e] = __popc(peers);
    __syncthreads();

    // 4. the layout (warp 0), then the rows
    if (warp == 0) {
        const int epl = (E + 31) / 32, e0 = lane * epl;
        int c[EPL], rows = 0, tls = 0;
#pragma unroll
        for (int j = 0; j < EPL; j++) {
            c[j] = 0;
            if (j < epl && e0 + j < E)
                for (int x = 0; x < nwp; x++) {  // exclusive prefix over the warps
                    const int v = wcnt[x * E + e0 + j];
                    wcnt[x * E + e0 + j] = c[j];
                    c[j] += v;
                }
            rows += (c[j] + B - 1) / B * B, tls += (c[j] + B - 1) / B;
        }
        int ir = rows, it = tls;
        for (int o = 1; o < 32; o <<= 1) {
            const int a = __shfl_up_sync(0xffffffffu, ir, o), b = __shfl_up_sync(0xffffffffu, it, o);
            if (lane >= o) ir += a, it += b;
        }
        if (lane == 31) *n_tiles = it;
        int row = ir - rows, tile = it - tls;
#pragma unroll
        for (int j = 0; j < EPL; j++) {
            const int x = e0 + j;
            if (j >= epl || x >= E) break;
            const int tl = (c[j] + B - 1) / B;
            counts[x] = c[j];
            if (stats) stats[x] += (unsigned long long)c[j];
            for (int b = 0; b < tl; b++) tiles[2 * (tile + b)] = x, tiles[2 * (tile + b) + 1] = row + b * B;
            for (int r = row + c[j]; r < row + tl * B; r++) token_of[r] = -1;
            for (int y = 0; y < nwp; y++) wcnt[y * E + x] += row;
            row += tl * B, tile += tl;
        }
    }
    __syncthreads();
    if (e >= 0) {
        const int r = wcnt[warp * E + e] + rank;
        row_of[(size_t)(tid / k) * ldr + tid % k] = r;
        token_of[r] = tid / k;
    }
}

extern "C" int lm_cuda_route_align(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds,
                                   float *w, size_t ldw, int B, int *row_of, size_t ldr, int *token_of, int *tiles,
                                   int *n_tiles, int *counts, unsigned long long *stats, int pdl, lm_cuda_stream st) {
    if (k < 1 || k > ROUTE_MAXK || k > E || E > MAX_GROUPS || B < 1) return (int)cudaErrorInvalidValue;
    if (n > RA_MAX_TOKENS || E > RA_MAX_E) {
        int e = lm_cuda_route_fast(logits, ldl, n, E, k, norm, sel, lds, w, ldw, pdl, st);
        if (e) return e;
        return lm_cuda_align_fast_pdl(sel, lds, n, k, E, B, row_of, ldr, token_of, tiles, n_tiles, counts, stats, pdl,
                                      st);
    }
    const int nn = n > 0 ? n : 0, np = nn * k, nwp = (np + 31) / 32;
    size_t smem = ((size_t)nn * E + nn + 3 * (size_t)np + (size_t)nwp * E) * 4;
    int e = smem_limit((const void *)k_route_align, smem);
    if (e) return e;
    return launch(k_route_align, dim3(1), dim3(RA_THREADS), smem, st, pdl > 0, logits, ldl, nn, E, k, norm, sel, lds, w,
                  ldw, B, row_of, ldr, token_of, tiles, n_tiles, counts, stats);
}

// -------------------------------------------------------------- combine ---

// out[t] = sum_i w[t][i] y[row_of[t][i]], each column summed in choice order
// as lm_cuda_combine does; 4 columns per thread where rows are 16-byte
// aligned (vec), else 1.
__global__ void __launch_bounds__(256) k_combine_fast(const int *row_of, size_t ldr, const float *w, size_t ldw, int n,
                                                      int k, const float *y, size_t ldy, float *out, size_t ldo, int H,
                                                      int vec) {
    griddep_wait();
    griddep_launch();
    const int step = gridDim.x * blockDim.x, c0 = blockIdx.x * blockDim.x + threadIdx.x;
    for (int t = blockIdx.y; t < n; t += gridDim.y) {
        const int *ro = row_of + (size_t)t * ldr;
        const float *wt = w + (size_t)t * ldw;
        if (vec) {
            for (int c = c0; c < H / 4; c += step) {
                float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
                for (int i = 0; i < k; i++) {  // unrolled: the loads of 4 choices in flight together
                    const float wi = wt[i];
                    const float4 v = *(const float4 *)(y + (size_t)ro[i] * ldy + 4 * c);
                    o.x += wi * v.x, o.y += wi * v.y, o.z += wi * v.z, o.w += wi * v.w;
                }
                *(float4 *)(out + (size_t)t * ldo + 4 * c) = o;
            }
        } else {
            for (int c = c0; c < H; c += step) {
                float o = 0;
                for (int i = 0; i < k; i++) o += wt[i] * y[(size_t)ro[i] * ldy + c];
                out[(size_t)t * ldo + c] = o;
            }
        }
    }
}

extern "C" int lm_cuda_combine_fast(const int *row_of, size_t ldr, const float *w, size_t ldw, int n, int k,
                                    const float *y, size_t ldy, float *out, size_t ldo, int H, int pdl,
                                    lm_cuda_stream st) {
    if (n <= 0 || H <= 0) return 0;
    const int vec = H % 4 == 0 && ldy % 4 == 0 && ldo % 4 == 0 && (uintptr_t)y % 16 == 0 && (uintptr_t)out % 16 == 0;
    const int cols = vec ? H / 4 : H, bx = (cols + 255) / 256;
    return launch(k_combine_fast, dim3(bx < 64 ? bx : 64, n < 65535 ? n : 65535), dim3(256), 0, st, pdl > 0, row_of,
                  ldr, w, ldw, n, k, y, ldy, out, ldo, H, vec);
}
