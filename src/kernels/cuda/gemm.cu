// Grouped and dense bf16 tensor-core GEMMs (contract and design in gemm.h)
// and the parallel MoE align.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/cuda/gemm.h"

#define SMALL_WARPS 8    // warps of a small-kernel CTA, splitting K
#define SMALL_MAX_NB 8   // token blocks of 8 held in registers (64 rows per pass)
#define LG_BM 128
#define LG_BN 128
#define LG_BK 32
#define LG_STAGES 4
#define MAX_GROUPS 1024  // groups scanned through shared memory

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

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

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
    for (int r = blockIdx.y; r < rows; r += gridDim.y)  // gridDim.y is at most 65535
        for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2; c < cols; c += gridDim.x * blockDim.x * 2) {
            float2 v = *(const float2 *)(x + (size_t)r * ldx + c);  // cols is even (K % 8 == 0)
            *(__nv_bfloat162 *)(y + (size_t)r * cols + c) = __floats2bfloat162_rn(v.x, v.y);
        }
}

// ------------------------------------------------------------ launchers ---

extern "C" int lm_cuda_gg_supported(int wdt, size_t ldw, int K, size_t lda, int a_f32) {
    return wdt == 2 && K > 0 && K % 8 == 0 && ldw % 8 == 0 && lda % (a_f32 ? 4 : 8) == 0;
}

template <int NB, bool SWI, bool AF32>
static int launch_small(const lm_cuda_gg *p, int slots, cudaStream_t st) {
    size_t smem = (size_t)SMALL_WARPS * (SWI ? 2 : 1) * NB * 4 * 32 * sizeof(float);
    static bool attr = false;  // once per instantiation: allow > 48 KB of dynamic shared memory
    if (!attr) {
        cudaError_t e = cudaFuncSetAttribute(k_gg_small<NB, SWI, AF32>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return (int)e;
        attr = true;
    }
    dim3 grid((p->O + 15) / 16, slots);
    k_gg_small<NB, SWI, AF32><<<grid, 32 * SMALL_WARPS, smem, st>>>(*p);
    return (int)cudaGetLastError();
}

template <int NB>
static int launch_small_nb(const lm_cuda_gg *p, int slots, cudaStream_t st) {
    if (p->swiglu) return p->a_f32 ? launch_small<NB, true, true>(p, slots, st) : launch_small<NB, true, false>(p, slots, st);
    return p->a_f32 ? launch_small<NB, false, true>(p, slots, st) : launch_small<NB, false, false>(p, slots, st);
}

template <bool SWI>
static int launch_large(const lm_cuda_gg *p, int mblocks, cudaStream_t st) {
    size_t smem = (size_t)LG_STAGES * (LG_BM + LG_BN) * LG_BK * 2;
    static bool attr = false;
    if (!attr) {
        cudaError_t e = cudaFuncSetAttribute(k_gg_large<SWI>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return (int)e;
        attr = true;
    }
    int ntile = SWI ? LG_BN / 2 : LG_BN;
    dim3 grid(mblocks, (p->O + ntile - 1) / ntile);
    k_gg_large<SWI><<<grid, 256, smem, st>>>(*p);
    return (int)cudaGetLastError();
}

extern "C" int lm_cuda_gg_run(const lm_cuda_gg *p, lm_cuda_stream st) {
    if (!p->out || p->O <= 0 || p->n_rows <= 0) return 0;
    if (p->counts && (p->n_groups < 1 || p->n_groups > MAX_GROUPS || p->block < 1)) return (int)cudaErrorInvalidValue;
    if (p->K % 8) return (int)cudaErrorInvalidValue;
    // rows per group a step can expect: the pairs spread over the groups they can reach
    int groups = p->counts ? (p->n_groups < p->n_rows ? p->n_groups : p->n_rows) : 1;
    int per = (p->n_rows + groups - 1) / groups;
    bool small = p->force ? p->force == 1 : per <= 8 * SMALL_MAX_NB;
    if (small) {
        int slots = groups;
        if (per <= 8) return launch_small_nb<1>(p, slots, st);
        if (per <= 16) return launch_small_nb<2>(p, slots, st);
        if (per <= 32) return launch_small_nb<4>(p, slots, st);
        return launch_small_nb<8>(p, slots, st);
    }
    lm_cuda_gg q = *p;
    if (p->a_f32) {
        int a_rows = p->counts ? p->a_rows : p->n_rows;
        if (!p->scratch || a_rows <= 0 || (size_t)a_rows * p->K * 2 > p->scratch_bytes) return (int)cudaErrorInvalidValue;
        int bx = (p->K / 2 + 255) / 256;
        if (bx > 64) bx = 64;
        int by = a_rows < 65535 ? a_rows : 65535;  // the grid's y limit (n_batch goes to 65536); rows stride
        k_to_bf16<<<dim3(bx, by), 256, 0, st>>>((const float *)p->a, p->lda, a_rows, p->K,
                                                (__nv_bfloat16 *)p->scratch);
        int e = (int)cudaGetLastError();
        if (e) return e;
        q.a = p->scratch, q.a_f32 = 0, q.lda = (size_t)p->K;
    }
    int mblocks = p->counts ? (p->n_rows + LG_BM - 1) / LG_BM + p->n_groups : (p->n_rows + LG_BM - 1) / LG_BM;
    return p->swiglu ? launch_large<true>(&q, mblocks, st) : launch_large<false>(&q, mblocks, st);
}

// ---------------------------------------------------------------- align ---

// One CTA of 1024 threads. Counts by shared atomics; then the (token,
// choice) pairs in chunks of 1024, in order: a pair's row is its expert's
// next free row plus the number of earlier pairs of the same expert in the
// chunk (match_any within the warp, prefix over the warps), which is the
// serial kernel's order (each expert's rows in token order).
__global__ void __launch_bounds__(1024) k_align_fast(const int *sel, size_t lds, int n, int k, int E, int B,
                                                     int *row_of, size_t ldr, int *token_of, int *tiles, int *n_tiles,
                                                     int *counts, unsigned long long *stats) {
    extern __shared__ int sh[];  // cnt[E], next[E], wcnt[32][E]
    int *cnt = sh, *next = sh + E, *wcnt = sh + 2 * E;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, np = n * k;
    for (int e = tid; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int q = tid; q < np; q += blockDim.x) atomicAdd(&cnt[sel[(size_t)(q / k) * lds + q % k]], 1);
    __syncthreads();
    if (tid == 0) {  // padded layout: first rows and the tile list
        int row = 0, nt = 0;
        for (int e = 0; e < E; e++) {
            int c = cnt[e], tl = (c + B - 1) / B;
            next[e] = row;
            for (int b = 0; b < tl; b++) tiles[2 * nt] = e, tiles[2 * nt++ + 1] = row + b * B;
            row += tl * B;
        }
        *n_tiles = nt;
    }
    __syncthreads();
    for (int e = tid; e < E; e += blockDim.x) {
        int c = cnt[e], pad = (c + B - 1) / B * B;
        counts[e] = c;
        if (stats) stats[e] += (unsigned long long)c;
        for (int r = next[e] + c; r < next[e] + pad; r++) token_of[r] = -1;
    }
    for (int q0 = 0; q0 < np; q0 += blockDim.x) {
        for (int i = tid; i < 32 * E; i += blockDim.x) wcnt[i] = 0;
        __syncthreads();
        int q = q0 + tid, e = q < np ? sel[(size_t)(q / k) * lds + q % k] : -1;
        unsigned peers = __match_any_sync(0xffffffffu, e);
        int rank = __popc(peers & ((1u << lane) - 1));
        if (e >= 0 && rank == 0) wcnt[warp * E + e] = __popc(peers);
        __syncthreads();
        for (int x = tid; x < E; x += blockDim.x) {  // exclusive prefix over the warps, from the expert's next row
            int a = next[x];
            for (int w = 0; w < 32; w++) {
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

extern "C" int lm_cuda_align_fast(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr,
                                  int *token_of, int *tiles, int *n_tiles, int *counts, unsigned long long *stats,
                                  lm_cuda_stream st) {
    if (E < 1 || E > MAX_GROUPS || k < 1 || B < 1) return (int)cudaErrorInvalidValue;
    size_t smem = (size_t)34 * E * sizeof(int);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(k_align_fast, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return (int)e;
    }
    k_align_fast<<<1, 1024, smem, st>>>(sel, lds, n, k, E, B, row_of, ldr, token_of, tiles, n_tiles, counts, stats);
    return (int)cudaGetLastError();
}
