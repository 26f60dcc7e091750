// Paged causal attention (contract: kernels.h; design: attention.h).
//
// KV cache, HND: [page][K|V][nkv][page_size][hd]; a sequence's position p
// lives on page pages[s][p / page_size] at offset p % page_size.
//
// Tensor-core path, shapes (hd = HD, 128 threads = 4 warps per CTA):
//   item rows:  R = 16 (decode) or 64 (prefill) flat rows f = token * G + g
//               of one sequence and KV head (query head kh * G + g)
//   K/V tile:   64 positions x HD bf16, rows padded to HD + 8 (so ldmatrix
//               of 8 rows hits 8 different bank groups), 2 stages
//   per warp:   16 rows x 16 positions (decode) or 16 rows x 64 (prefill);
//               S in mma C fragments, reused as the A fragments of P V
//   output:     through shared memory [4 warps x 16 rows][HD + 8] f32
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include <mutex>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/kernels.h"

#define AT_THREADS 128
#define AT_TILE 64         // KV positions per shared-memory tile
#define AT_STAGES 2        // cp.async pipeline depth
#define AT_DEC_ROWS 16     // rows of a decode tile (one mma M)
#define AT_PRE_ROWS 64     // rows of a prefill tile (16 per warp)
#define AT_MIN_CHUNK 64    // smallest KV chunk of a split (one tile)
#define AT_MAX_SPLITS 64   // chunks per item at most (bounds the merge)
#define AT_MAX_CTAS 4096   // persistent CTAs at most (sizes the work list)
#define AT_MAX_PARTS 32768 // partial rows the workspace is sized for
#define AT_PLAN_THREADS 1024
#define AT_DEC_STAGES 3    // cp.async pipeline depth of the decode kernel
#define AT_CNT_CAP 65536   // decode arrival counters (sequences x KV heads) at most
#define AT_CNT_BYTES ((size_t)AT_CNT_CAP * 4)

static int g_last_path;

static int launched(void) { return (int)cudaGetLastError(); }

// ---------------------------------------------------------- simple kernel ---

#define ATT_MAXD 8  // head_dim up to 256: 8 values per lane

static __device__ __forceinline__ float kv_at(const void *p, int dt, size_t i) {
    if (dt == 2) return __uint_as_float((uint32_t)((const uint16_t *)p)[i] << 16);
    if (dt == 1) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

static __device__ __forceinline__ float at_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per (token, query head): online softmax over positions 0..pos,
// lane l holding dims l, l + 32, ...
__global__ void k_attn_simple(const float *q, size_t ldq, float *out, size_t ldo, int n_heads, const int *seq_start,
                              int n_seqs, const int *pages, size_t ldp, const int *pos, const void *kv, int kvdt,
                              int ps, int nkv, int hd) {
    int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x, G = n_heads / nkv, kh = h / G;
    int tg = seq_start[0] + t, s = 0;
    while (s + 1 < n_seqs && seq_start[s + 1] <= tg) s++;
    const int *pg = pages + (size_t)s * ldp;
    const float *qr = q + (size_t)t * ldq + (size_t)h * hd;
    float qv[ATT_MAXD], acc[ATT_MAXD];
    const int nd = (hd + 31) / 32;
#pragma unroll
    for (int j = 0; j < ATT_MAXD; j++) {
        int d = lane + 32 * j;
        qv[j] = j < nd && d < hd ? qr[d] : 0.0f;
        acc[j] = 0;
    }
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t page_elems = 2 * (size_t)nkv * ps * hd;
    float m = -INFINITY, l = 0;
    for (int p = 0, lim = pos[t] + 1; p < lim; p++) {
        size_t base = (size_t)pg[p / ps] * page_elems + ((size_t)kh * ps + p % ps) * hd;
        size_t vbase = base + (size_t)nkv * ps * hd;
        float sdot = 0;
#pragma unroll
        for (int j = 0; j < ATT_MAXD; j++) {
            int d = lane + 32 * j;
            if (j < nd && d < hd) sdot += qv[j] * kv_at(kv, kvdt, base + d);
        }
        float sc = at_warp_sum(sdot) * scale;
        float mn = fmaxf(m, sc), corr = expf(m - mn), e = expf(sc - mn);
        l = l * corr + e;
#pragma unroll
        for (int j = 0; j < ATT_MAXD; j++) {
            int d = lane + 32 * j;
            if (j < nd && d < hd) acc[j] = acc[j] * corr + e * kv_at(kv, kvdt, vbase + d);
        }
        m = mn;
    }
    if (pos[t] < 0) return;  // a padding row: not written
    float *o = out + (size_t)t * ldo + (size_t)h * hd;
#pragma unroll
    for (int j = 0; j < ATT_MAXD; j++) {
        int d = lane + 32 * j;
        if (j < nd && d < hd) o[d] = acc[j] / l;
    }
}

extern "C" int lm_cuda_attention_simple(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads,
                                        const int *seq_start, int n_seqs, const int *pages, size_t ldp,
                                        const int *pos, const void *kv, int kvdt, int page_size, int nkv, int hd,
                                        lm_cuda_stream st) {
    if (hd > 32 * ATT_MAXD) return (int)cudaErrorInvalidValue;
    if (n > 0)
        k_attn_simple<<<dim3(n, n_heads), 32, 0, st>>>(q, ldq, out, ldo, n_heads, seq_start, n_seqs, pages, ldp, pos,
                                                       kv, kvdt, page_size, nkv, hd);
    return launched();
}

// -------------------------------------------------------------- workspace ---
// [decode counters AT_CNT_CAP x int] then, for the plan path,
//   [hdr 64 B][info n_seqs x int4][items x int4][cnt items x int][pml P x float2][pacc P x hd f32]
// or, for the decode kernel, [pml P x float2][pacc P x hd f32].
// The decode counters are zero at rest: zeroed once (lm_cuda_attention_ws_init,
// or by the launcher before each decode launch when the workspace was not
// registered that way), and every decode launch leaves them at zero; the
// plan path never writes them.

typedef struct {
    int *hdr;      // [0] work items, [1] next-item counter, [2] KV chunk of a split
    int4 *info;    // [n_seqs]: splits, first partial row, first counter, first item
    int4 *items;   // [items_cap]: sequence, row tile, chunk, KV head
    int *cnt;      // [items_cap]: chunks finished per (row tile, KV head) of a split sequence
    float2 *pml;   // [p_cap]: (max, sum) of each partial row, log2 domain
    float *pacc;   // [p_cap][hd]: unnormalised output of each partial row
    long long items_cap, p_cap;
} att_ws;

static size_t al256(size_t x) { return (x + 255) & ~(size_t)255; }

// Work items at most: tiles (sum over sequences of ceil(rows / 16) <= n*G/16
// + n_seqs, times nkv) plus one per CTA from the splits (a chunk is at least
// total work / CTAs, so splits add at most `ctas` items).
static long long items_bound(long long n, long long n_seqs, long long n_heads, long long nkv, long long ctas) {
    return n * n_heads / AT_DEC_ROWS + 1 + nkv * n_seqs + ctas;
}

static size_t ws_fixed(long long n_seqs, long long items) {
    return al256(64) + al256((size_t)n_seqs * 16) + al256((size_t)items * 16) + al256((size_t)items * 4);
}

static int ws_carve(void *ws, size_t bytes, int n, int n_seqs, int n_heads, int nkv, int hd, int ctas, att_ws *w) {
    long long items = items_bound(n, n_seqs, n_heads, nkv, ctas);
    size_t fixed = ws_fixed(n_seqs, items), row = 8 + (size_t)hd * 4;
    if (!ws || ((uintptr_t)ws & 255) || bytes < AT_CNT_BYTES + fixed + 512 + row) return 0;
    bytes -= AT_CNT_BYTES;
    char *p = (char *)ws + AT_CNT_BYTES;
    w->hdr = (int *)p, p += al256(64);
    w->info = (int4 *)p, p += al256((size_t)n_seqs * 16);
    w->items = (int4 *)p, p += al256((size_t)items * 16);
    w->cnt = (int *)p, p += al256((size_t)items * 4);
    long long pc = (long long)((bytes - fixed - 512) / row);
    if (pc > (1ll << 30)) pc = 1ll << 30;
    w->pml = (float2 *)p, p += al256((size_t)pc * 8);
    w->pacc = (float *)p;
    w->items_cap = items, w->p_cap = pc;
    return 1;
}

extern "C" size_t lm_cuda_attention_workspace_bytes(int max_tokens, int n_heads, int max_ctx, int hd) {
    if (max_tokens < 1) max_tokens = 1;
    if (n_heads < 1) n_heads = 1;
    long long items = items_bound(max_tokens, max_tokens, n_heads, n_heads, AT_MAX_CTAS);
    long long chunks = (max_ctx + AT_MIN_CHUNK - 1) / AT_MIN_CHUNK;
    if (chunks > AT_MAX_SPLITS) chunks = AT_MAX_SPLITS;
    if (chunks < 2) chunks = 2;
    long long parts = (long long)max_tokens * n_heads * chunks;
    if (parts > AT_MAX_PARTS) parts = AT_MAX_PARTS;
    return AT_CNT_BYTES + ws_fixed(max_tokens, items) + 512 + (size_t)parts * (8 + (size_t)hd * 4);
}

// -------------------------------------------------------------- plan kernel ---

typedef struct {
    const int *seq_start, *pos;
    int n_seqs, G, nkv, ctas;
    long long p_cap;
    att_ws w;
} plan_args;

// Query rows, KV extent (last token's position + 1: only sizes the chunks;
// each item finds its exact extent) and row tiles of sequence s.
static __device__ void seq_shape(const plan_args &a, int s, int *qlen, int *ext, int *tiles) {
    int s0 = a.seq_start[0], b = a.seq_start[s] - s0, e = a.seq_start[s + 1] - s0;
    *qlen = e - b;
    *ext = e > b ? max(a.pos[e - 1] + 1, 1) : 0;
    int rows = *qlen * a.G, R = rows <= AT_DEC_ROWS ? AT_DEC_ROWS : AT_PRE_ROWS;
    *tiles = (rows + R - 1) / R;
}

static __device__ int n_splits(int ext, long long chunk) {
    if (ext <= chunk) return 1;
    long long s = (ext + chunk - 1) / chunk;
    return s < AT_MAX_SPLITS ? (int)s : AT_MAX_SPLITS;
}

// Block-wide sum / max (every thread gets the result); red[32] scratch.
static __device__ long long block_sum(long long v, long long *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();  // red may still be read by the previous call
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    long long t = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += red[i];
    return t;
}

static __device__ long long block_max(long long v, long long *red) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    long long t = red[0];
    for (int i = 1; i < (int)(blockDim.x >> 5); i++) t = max(t, red[i]);
    return t;
}

static __device__ __forceinline__ int4 add4(int4 a, int4 b) { return make_int4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }

// Exclusive block scan of four counters at once; *total gets the block's sums.
static __device__ int4 block_scan4(int4 v, int4 *red, int4 *total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int4 x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int4 y = make_int4(__shfl_up_sync(0xffffffffu, x.x, o), __shfl_up_sync(0xffffffffu, x.y, o),
                           __shfl_up_sync(0xffffffffu, x.z, o), __shfl_up_sync(0xffffffffu, x.w, o));
        if (lane >= o) x = add4(x, y);
    }
    __syncthreads();
    if (lane == 31) red[warp] = x;
    __syncthreads();
    int4 before = make_int4(0, 0, 0, 0), tot = before;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) {
        if (i < warp) before = add4(before, red[i]);
        tot = add4(tot, red[i]);
    }
    *total = tot;
    return make_int4(before.x + x.x - v.x, before.y + x.y - v.y, before.z + x.z - v.z, before.w + x.w - v.w);
}

// One CTA. The split rule: with N0 row tiles x KV heads and `ctas` CTA
// slots, no split if N0 >= ctas (every slot has a tile); otherwise a chunk of
// ~(sum of tiles x KV extent) / ctas positions (a multiple of 64, at least
// 64), doubled until the partial rows fit the workspace.
__global__ void __launch_bounds__(AT_PLAN_THREADS) k_attn_plan(plan_args a) {
    __shared__ long long red[32];
    __shared__ int4 red4[32];
    const int tid = threadIdx.x, nthr = blockDim.x, lane = tid & 31, warp = tid >> 5, nwarps = nthr >> 5;
    int qlen, ext, tiles;
    long long n0 = 0, work = 0, mx = 0;
    for (int s = tid; s < a.n_seqs; s += nthr) {
        seq_shape(a, s, &qlen, &ext, &tiles);
        n0 += (long long)tiles * a.nkv;
        work += (long long)tiles * a.nkv * ext;
        mx = max(mx, (long long)ext);
    }
    n0 = block_sum(n0, red);
    work = block_sum(work, red);
    mx = block_max(mx, red);
    long long chunk = mx > 1 ? mx : 1;  // one chunk: no split
    if (n0 < a.ctas && a.p_cap > 0 && mx > AT_MIN_CHUNK) {
        long long c = (work + a.ctas - 1) / a.ctas;
        c = (c + AT_MIN_CHUNK - 1) / AT_MIN_CHUNK * AT_MIN_CHUNK;
        if (c < AT_MIN_CHUNK) c = AT_MIN_CHUNK;
        for (; c < mx; c *= 2) {  // the same c in every thread: block_sum's barriers are uniform
            long long need = 0;
            for (int s = tid; s < a.n_seqs; s += nthr) {
                seq_shape(a, s, &qlen, &ext, &tiles);
                int sp = n_splits(ext, c);
                if (sp > 1) need += (long long)qlen * a.G * a.nkv * sp;
            }
            if (block_sum(need, red) <= a.p_cap) break;
        }
        if (c < mx) chunk = c;
    }
    // prefill items first (the heavier ones), then decode
    long long npre = 0;
    for (int s = tid; s < a.n_seqs; s += nthr) {
        seq_shape(a, s, &qlen, &ext, &tiles);
        if (qlen * a.G > AT_DEC_ROWS) npre += (long long)tiles * a.nkv * n_splits(ext, chunk);
    }
    npre = block_sum(npre, red);
    int4 carry = make_int4(0, 0, 0, 0);  // prefill items, decode items, partial rows, counters
    for (int base = 0; base < a.n_seqs; base += nthr) {
        int s = base + tid, sp = 1, pre = 0;
        int4 v = make_int4(0, 0, 0, 0), tot;
        if (s < a.n_seqs) {
            seq_shape(a, s, &qlen, &ext, &tiles);
            sp = n_splits(ext, chunk);
            pre = qlen * a.G > AT_DEC_ROWS;
            int it = tiles * a.nkv * sp;
            v = make_int4(pre ? it : 0, pre ? 0 : it, sp > 1 ? qlen * a.G * a.nkv * sp : 0, sp > 1 ? tiles * a.nkv : 0);
        }
        int4 ex = block_scan4(v, red4, &tot);
        if (s < a.n_seqs)
            a.w.info[s] = make_int4(sp, carry.z + ex.z, carry.w + ex.w, pre ? carry.x + ex.x : (int)npre + carry.y + ex.y);
        carry = add4(carry, tot);
    }
    if (tid == 0) {
        a.w.hdr[0] = carry.x + carry.y;
        a.w.hdr[1] = 0;
        a.w.hdr[2] = (int)chunk;
    }
    __syncthreads();  // info[] written above is read below by other threads
    // The items, a warp per sequence: last row tile first (in causal prefill
    // it sees the most keys), the chunks of one (tile, KV head) side by side.
    for (int s = warp; s < a.n_seqs; s += nwarps) {
        seq_shape(a, s, &qlen, &ext, &tiles);
        int4 inf = a.w.info[s];
        int per = a.nkv * inf.x, nit = tiles * per;
        for (int i = lane; i < nit; i += 32) {
            int r = i % per;
            a.w.items[inf.w + i] = make_int4(s, tiles - 1 - i / per, r % inf.x, r / inf.x);
        }
    }
    for (int i = tid; i < carry.w; i += nthr) a.w.cnt[i] = 0;
}

// ------------------------------------------------------- tensor-core kernel ---

typedef struct {
    const float *q;
    size_t ldq;
    float *out;
    size_t ldo;
    int out_v4;  // out rows 16-byte aligned: float4 stores
    const int *seq_start, *pages, *pos;
    size_t ldp;
    const uint16_t *kv;  // bf16
    int ps, nkv, G;
    float scale_log2;  // log2(e) / sqrt(hd): softmax in exp2
    att_ws w;
} att_args;

typedef struct {
    int4 item, info;
    int tok0, qlen, next, last;
    int lim[AT_PRE_ROWS];  // causal limit of each row of the tile (-1: padding)
    int wmax[4];
    float2 ml[64];         // (max, sum) per warp row
} att_shared;

static __device__ __forceinline__ uint32_t bf2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// (x, y) as bf16 pairs hi + lo with hi + lo = (x, y) to ~2^-17.
static __device__ __forceinline__ void bf2_split(float x, float y, uint32_t &hi, uint32_t &lo) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    float2 hf = __bfloat1622float2(h);
    hi = *reinterpret_cast<uint32_t *>(&h);
    lo = bf2(x - hf.x, y - hf.y);
}

// c += a b: m16n8k16, A row-major bf16, B "col" bf16, fp32 accumulators.
static __device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

static __device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

// 16 bytes global -> shared, bypassing L1; zeros when !ok (nothing is read).
static __device__ __forceinline__ void cp16(void *dst, const void *src, bool ok) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
static __device__ __forceinline__ void cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void store4v(int v4, float *dst, float4 v) {
    if (v4) *reinterpret_cast<float4 *>(dst) = v;
    else dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
}
static __device__ __forceinline__ void store4(const att_args &a, float *dst, float4 v) { store4v(a.out_v4, dst, v); }

// Q fragments of a warp's 16 rows (this thread: rows g and g + 8 at q0, q1,
// NULL for a row past the tile's rows), as mma A operands: a[0] row g k 0-7,
// a[1] row g + 8, a[2] row g k 8-15, a[3] row g + 8 k 8-15; SPLIT 2: hi + lo.
template <int HD, int SPLIT>
static __device__ __forceinline__ void load_q(uint32_t (&qa)[SPLIT][HD / 16][4], const float *q0, const float *q1) {
    const int q4 = threadIdx.x & 3;
    const float *qp[2] = {q0 ? q0 + q4 * 2 : nullptr, q1 ? q1 + q4 * 2 : nullptr};
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        float2 v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float *p = qp[j & 1];
            v[j] = p ? __ldg(reinterpret_cast<const float2 *>(p + kk * 16 + (j >> 1) * 8)) : make_float2(0, 0);
            if constexpr (SPLIT == 2) bf2_split(v[j].x, v[j].y, qa[0][kk][j], qa[SPLIT - 1][kk][j]);
            else qa[0][kk][j] = bf2(v[j].x, v[j].y);
        }
    }
}

// One softmax step of a warp over NT * 8 positions from pw on: S = Q K^T
// for its 16 rows (this thread: rows g and g + 8, causal limits lim0 and
// lim1), online softmax (m, l in the log2 domain), acc = acc * corr + P V.
// K rows at sk, V rows at sv (shared memory, row stride HD + 8).
template <int HD, int NT, int SPLIT>
static __device__ __forceinline__ void att_step(const uint32_t (&qa)[SPLIT][HD / 16][4], const uint16_t *sk,
                                                const uint16_t *sv, int pw, int lim0, int lim1, float sl,
                                                float (&m)[2], float (&l)[2], float (&acc)[HD / 8][4]) {
    constexpr int KS = HD / 16, DT = HD / 8, RS = HD + 8, NS = NT * 8;
    const int lane = threadIdx.x & 31, q4 = lane & 3;

    // S = Q K^T: B[k = dim][n = position] = K[position][dim], ldmatrix of K rows
    float sc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0;
#pragma unroll
    for (int kk = 0; kk < KS; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4];
            ldsm_x4(b, sk + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * RS + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int h = 0; h < SPLIT; h++) {
                mma_bf16(sc[2 * np], qa[h][kk], b[0], b[1]);
                mma_bf16(sc[2 * np + 1], qa[h][kk], b[2], b[3]);
            }
        }
    // online softmax (log2 domain); c[0..1] row g, c[2..3] row g + 8
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int p = pw + j * 8 + q4 * 2 + (e & 1);
            float v = sc[j][e] * sl;
            if (p > (e < 2 ? lim0 : lim1)) v = -INFINITY;
            sc[j][e] = v;
            mx[e >> 1] = fmaxf(mx[e >> 1], v);
        }
    float base[2], corr[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        const float mn = fmaxf(m[h], mx[h]);
        base[h] = mn == -INFINITY ? 0.0f : mn;  // a row with nothing visible yet stays at 0
        corr[h] = exp2f(m[h] - base[h]);
        m[h] = mn;
        l[h] *= corr[h];
    }
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float p = exp2f(sc[j][e] - base[e >> 1]);
            sc[j][e] = p;
            l[e >> 1] += p;  // this thread's columns; the quad is summed at the end
        }
#pragma unroll
    for (int d = 0; d < DT; d++) {
        acc[d][0] *= corr[0], acc[d][1] *= corr[0];
        acc[d][2] *= corr[1], acc[d][3] *= corr[1];
    }
    // O += P V: P from the S fragments, B[k = position][n = dim] = V rows, ldmatrix.trans
#pragma unroll
    for (int kp = 0; kp < NS / 16; kp++) {
        uint32_t pa[SPLIT][4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float *c = sc[2 * kp + (j >> 1)] + (j & 1) * 2;
            if constexpr (SPLIT == 2) bf2_split(c[0], c[1], pa[0][j], pa[SPLIT - 1][j]);
            else pa[0][j] = bf2(c[0], c[1]);
        }
#pragma unroll
        for (int dp = 0; dp < DT / 2; dp++) {
            uint32_t b[4];
            ldsm_x4_t(b, sv + (kp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * RS + dp * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int h = 0; h < SPLIT; h++) {
                mma_bf16(acc[2 * dp], pa[h], b[0], b[1]);
                mma_bf16(acc[2 * dp + 1], pa[h], b[2], b[3]);
            }
        }
    }
}

// One work item. WM warps along rows (16 each), 4 / WM along the tile's
// positions; SPLIT 2: q and p as bf16 hi + lo, 1: one bf16 term.
template <int HD, int WM, int SPLIT>
static __device__ __forceinline__ void att_item(const att_args &a, att_shared &sh, unsigned char *smem, int chunk) {
    constexpr int WN = 4 / WM, ROWS = 16 * WM, NPW = AT_TILE / WN, KS = HD / 16, DT = HD / 8;
    // positions per softmax step (NT n-tiles of S): 32 bounds the S registers
    constexpr int NS = NPW < 32 ? NPW : 32, NT = NS / 8;
    constexpr int RS = HD + 8, OS = HD + 8, V4 = HD / 4;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
    const int wm = warp / WN, wn = warp % WN;
    const int s = sh.item.x, tile = sh.item.y, split = sh.item.z, kh = sh.item.w;
    const int splits = sh.info.x, part0 = sh.info.y, cnt0 = sh.info.z;
    const int G = a.G, tok0 = sh.tok0, nrows = sh.qlen * G;

    // causal limits of the tile's rows and the tile's KV extent
    int lim = -1;
    if (tid < ROWS) {
        int f = tile * ROWS + tid;
        if (f < nrows) lim = __ldg(a.pos + tok0 + f / G);
        sh.lim[tid] = lim;
    }
    int wl = lim;
    for (int o = 16; o > 0; o >>= 1) wl = max(wl, __shfl_xor_sync(0xffffffffu, wl, o));
    if (lane == 0) sh.wmax[warp] = wl;
    __syncthreads();
    const int ext = max(max(sh.wmax[0], sh.wmax[1]), max(sh.wmax[2], sh.wmax[3])) + 1;
    const int lo = split * chunk, hi = split == splits - 1 ? ext : min(lo + chunk, ext);

    // this thread's rows: g and g + 8 of the warp's 16
    const int r0 = wm * 16 + g;
    const int lim0 = sh.lim[r0], lim1 = sh.lim[r0 + 8];
    int wlim = max(lim0, lim1);  // the warp's largest limit
    for (int o = 4; o < 32; o <<= 1) wlim = max(wlim, __shfl_xor_sync(0xffffffffu, wlim, o));

    uint32_t qa[SPLIT][KS][4];
    {
        const float *qp[2] = {nullptr, nullptr};
        for (int h = 0; h < 2; h++) {
            int f = tile * ROWS + r0 + 8 * h;
            if (f < nrows && sh.lim[r0 + 8 * h] >= 0)  // a padding row's q is not read
                qp[h] = a.q + (size_t)(tok0 + f / G) * a.ldq + (size_t)(kh * G + f % G) * HD;
        }
        load_q<HD, SPLIT>(qa, qp[0], qp[1]);
    }

    // K/V tile loader: rows of 16-byte chunks, zeros past hi
    const int *pg = a.pages + (size_t)s * a.ldp;
    const size_t page_elems = (size_t)2 * a.nkv * a.ps * HD, v_off = (size_t)a.nkv * a.ps * HD;
    const uint16_t *kvh = a.kv + (size_t)kh * a.ps * HD;
    uint16_t *sbuf = reinterpret_cast<uint16_t *>(smem);  // [AT_STAGES][K|V][AT_TILE][RS]
    auto load_tile = [&](int t, int buf) {
        constexpr int CPR = HD / 8, RPP = AT_THREADS / CPR;  // chunks per row, rows per pass
        const int p0 = lo + t * AT_TILE, c = tid % CPR;
        uint16_t *sk = sbuf + (size_t)buf * 2 * AT_TILE * RS, *sv = sk + AT_TILE * RS;
#pragma unroll
        for (int i = 0; i < AT_TILE / RPP; i++) {
            const int r = tid / CPR + i * RPP, p = p0 + r;
            const bool ok = p < hi;
            const uint16_t *src = a.kv;
            if (ok) src = kvh + (size_t)__ldg(pg + p / a.ps) * page_elems + (size_t)(p % a.ps) * HD + c * 8;
            cp16(sk + r * RS + c * 8, src, ok);
            cp16(sv + r * RS + c * 8, ok ? src + v_off : a.kv, ok);
        }
    };

    const float sl = a.scale_log2;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
    float acc[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0;

    const int ntiles = hi > lo ? (hi - lo + AT_TILE - 1) / AT_TILE : 0;
#pragma unroll
    for (int t = 0; t < AT_STAGES - 1; t++) {
        if (t < ntiles) load_tile(t, t);
        cp_commit();
    }
    for (int t = 0; t < ntiles; t++) {
        const int tn = t + AT_STAGES - 1;
        if (tn < ntiles) load_tile(tn, tn % AT_STAGES);  // into the buffer tile t - 1 used
        cp_commit();
        cp_wait<AT_STAGES - 1>();
        __syncthreads();
#pragma unroll
        for (int sub = 0; sub < NPW / NS; sub++) {
            const int pw = lo + t * AT_TILE + wn * NPW + sub * NS;  // the warp's first position
            if (pw > wlim) break;                                  // the rest is masked for all its rows
            const uint16_t *sk = sbuf + (size_t)(t % AT_STAGES) * 2 * AT_TILE * RS + (size_t)(wn * NPW + sub * NS) * RS;
            const uint16_t *sv = sk + AT_TILE * RS;
            att_step<HD, NT, SPLIT>(qa, sk, sv, pw, lim0, lim1, sl, m, l, acc);
        }
        __syncthreads();  // the buffer is refilled next iteration
    }
    cp_wait<0>();

    // Epilogue: each warp's rows, scaled to the max over the warps sharing
    // them, into shared memory (over the K/V buffers), then per row: the sum
    // over those warps, normalised into out, or a partial for the merge.
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
    if (q4 == 0) {
        sh.ml[warp * 16 + g] = make_float2(m[0], l[0]);
        sh.ml[warp * 16 + g + 8] = make_float2(m[1], l[1]);
    }
    __syncthreads();
    float *os = reinterpret_cast<float *>(smem);  // [4 warps x 16 rows][OS]
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float M = -INFINITY;
#pragma unroll
        for (int j = 0; j < WN; j++) M = fmaxf(M, sh.ml[(wm * WN + j) * 16 + g + 8 * h].x);
        const float f = m[h] == -INFINITY ? 0.0f : exp2f(m[h] - M);
        float *row = os + (size_t)(warp * 16 + g + 8 * h) * OS + q4 * 2;
#pragma unroll
        for (int d = 0; d < DT; d++)
            *reinterpret_cast<float2 *>(row + d * 8) = make_float2(acc[d][2 * h] * f, acc[d][2 * h + 1] * f);
    }
    __syncthreads();
    for (int i = tid; i < ROWS * V4; i += AT_THREADS) {
        const int r = i / V4, d = (i % V4) * 4, f = tile * ROWS + r;
        if (f >= nrows || sh.lim[r] < 0) continue;  // past the rows, or a padding row (pos < 0)
        const int w0 = (r / 16) * WN, rr = r % 16;
        float M = -INFINITY, L = 0;
#pragma unroll
        for (int j = 0; j < WN; j++) M = fmaxf(M, sh.ml[(w0 + j) * 16 + rr].x);
        float4 o = make_float4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < WN; j++) {
            const float2 ml = sh.ml[(w0 + j) * 16 + rr];
            if (ml.x != -INFINITY) L += exp2f(ml.x - M) * ml.y;
            const float4 v = *reinterpret_cast<const float4 *>(os + (size_t)((w0 + j) * 16 + rr) * OS + d);
            o.x += v.x, o.y += v.y, o.z += v.z, o.w += v.w;
        }
        if (splits == 1) {
            const float inv = 1.0f / L;
            store4(a, a.out + (size_t)(tok0 + f / G) * a.ldo + (size_t)(kh * G + f % G) * HD + d,
                   make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv));
        } else {
            const size_t pi = (size_t)part0 + ((size_t)kh * nrows + f) * splits + split;
            *reinterpret_cast<float4 *>(a.w.pacc + pi * HD + d) = o;
            if (d == 0) a.w.pml[pi] = make_float2(M, L);
        }
    }
    if (splits == 1) return;

    // Split: the last chunk of this (tile, KV head) to finish merges all.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const int tiles = (nrows + ROWS - 1) / ROWS;
        sh.last = atomicAdd(a.w.cnt + cnt0 + kh * tiles + tile, 1) == splits - 1;
    }
    __syncthreads();
    if (!sh.last) return;
    __threadfence();
    for (int i = tid; i < ROWS * V4; i += AT_THREADS) {
        const int r = i / V4, d = (i % V4) * 4, f = tile * ROWS + r;
        if (f >= nrows || sh.lim[r] < 0) continue;  // past the rows, or a padding row (pos < 0)
        const size_t p0 = (size_t)part0 + ((size_t)kh * nrows + f) * splits;
        float M = -INFINITY, L = 0;
        for (int j = 0; j < splits; j++) M = fmaxf(M, __ldcg(a.w.pml + p0 + j).x);
        float4 o = make_float4(0, 0, 0, 0);
        for (int j = 0; j < splits; j++) {
            const float2 ml = __ldcg(a.w.pml + p0 + j);
            if (ml.x == -INFINITY) continue;  // a chunk past this row's limit
            const float wj = exp2f(ml.x - M);
            const float4 v = __ldcg(reinterpret_cast<const float4 *>(a.w.pacc + (p0 + j) * HD + d));
            L += wj * ml.y;
            o.x += wj * v.x, o.y += wj * v.y, o.z += wj * v.z, o.w += wj * v.w;
        }
        const float inv = 1.0f / L;
        store4(a, a.out + (size_t)(tok0 + f / G) * a.ldo + (size_t)(kh * G + f % G) * HD + d,
               make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv));
    }
}

// Persistent CTAs: CTA b starts with item b, then takes the next free one.
template <int HD, int SPLIT>
__global__ void __launch_bounds__(AT_THREADS, 2) k_attn_tc(const att_args a) {
    extern __shared__ __align__(16) unsigned char at_smem[];
    __shared__ att_shared sh;
    const int n_items = a.w.hdr[0], chunk = a.w.hdr[2];
    for (int item = blockIdx.x; item < n_items;) {
        if (threadIdx.x == 0) {
            const int4 it = a.w.items[item];
            const int s0 = a.seq_start[0], b = a.seq_start[it.x], e = a.seq_start[it.x + 1];
            sh.item = it;
            sh.info = a.w.info[it.x];
            sh.tok0 = b - s0;
            sh.qlen = e - b;
            sh.next = (int)gridDim.x + atomicAdd(a.w.hdr + 1, 1);  // fetched now, used after this item
        }
        __syncthreads();
        if (sh.qlen * a.G <= AT_DEC_ROWS) att_item<HD, 1, SPLIT>(a, sh, at_smem, chunk);
        else att_item<HD, 4, SPLIT>(a, sh, at_smem, chunk);
        item = sh.next;
        __syncthreads();  // sh is rewritten for the next item
    }
}

// ---------------------------------------------------------- decode kernel ---
// No plan and one launch: a CTA per (sequence s, KV head kh, split sp),
// blockIdx.x = (s * nkv + kh) * smax + sp. Each CTA sizes its sequence's
// split from the device data itself (all CTAs of one (s, kh) compute the
// same), so the grid depends only on host sizes and a CUDA graph can replay
// it while positions and pages change. Rows as in the plan path: the
// (token, query head of the group) pairs f = token * G + g of one sequence
// and KV head, in 16-row tiles (one for a decode token with G <= 16); the
// 4 warps take 16 positions each of every 64-position K/V tile.

typedef struct {
    const float *q;
    size_t ldq;
    float *out;
    size_t ldo;
    int out_v4;
    const int *seq_start, *pages, *pos;
    size_t ldp;
    const uint16_t *kv;  // bf16
    int ps, nkv, G, n;   // n: tokens (bounds the speculative read of pos)
    int smax;            // splits per (sequence, KV head) at most
    int min_chunk;       // KV positions per split at least (a multiple of AT_TILE)
    float scale_log2;
    int *cnt;            // [n_seqs * nkv] arrival counters, zero at rest
    float2 *pml;         // [n * n_heads * smax] (max, sum) of each partial row, log2 domain
    float *pacc;         // [n * n_heads * smax][HD] unnormalised partial rows
} dec_args;

typedef struct {
    int lim[AT_DEC_ROWS];        // causal limit of each row of the row tile (-1: none)
    int red[4], last;
    float2 ml[4 * AT_DEC_ROWS];  // (max, sum) of each warp's rows
    float inv[AT_DEC_ROWS];      // merge: 1 / sum of each row
} dec_shared;

static size_t dec_smem(int hd) {
    size_t kvb = (size_t)AT_DEC_STAGES * 2 * AT_TILE * (hd + 8) * 2, ob = (size_t)4 * AT_DEC_ROWS * (hd + 8) * 4;
    return kvb > ob ? kvb : ob;
}

template <int HD, int SPLIT>
__global__ void __launch_bounds__(AT_THREADS, 2) k_attn_dec(const dec_args a) {
    constexpr int ROWS = AT_DEC_ROWS, NT = 2, NPW = AT_TILE / 4, KS = HD / 16, DT = HD / 8;
    constexpr int RS = HD + 8, OS = HD + 8, V4 = HD / 4, ST = AT_DEC_STAGES;
    constexpr int CPR = HD / 8, RPP = AT_THREADS / CPR, RPT = AT_TILE / RPP;  // 16-byte chunks per row, rows per pass, per thread
    extern __shared__ __align__(16) unsigned char at_smem[];
    __shared__ dec_shared sh;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
    const int unit = blockIdx.x / a.smax, sp = blockIdx.x - unit * a.smax;
    const int s = unit / a.nkv, kh = unit - s * a.nkv, G = a.G, n_heads = a.nkv * G;

    // A decode step has one token per sequence, token s: its position is
    // read in the same round trip as seq_start (and used once that agrees).
    const int b0 = __ldg(a.seq_start), b = __ldg(a.seq_start + s), e = __ldg(a.seq_start + s + 1);
    const int spec = __ldg(a.pos + min(s, a.n - 1));
    const int tok0 = b - b0, qlen = e - b, nrows = qlen * G;
    if (qlen <= 0) return;
    const bool one = qlen == 1 && tok0 == s;
    int ext = spec + 1;  // KV extent: the sequence's largest position + 1
    if (!one) {
        int mx = -1;
        for (int i = tid; i < qlen; i += AT_THREADS) mx = max(mx, __ldg(a.pos + tok0 + i));
        for (int o = 16; o > 0; o >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (lane == 0) sh.red[warp] = mx;
        __syncthreads();
        ext = max(max(sh.red[0], sh.red[1]), max(sh.red[2], sh.red[3])) + 1;
    }
    if (ext <= 0) return;  // padding rows only (pos < 0): nothing to read or write

    // The split: at most smax chunks of at least min_chunk positions, whole tiles
    int splits = min(a.smax, (ext + a.min_chunk - 1) / a.min_chunk);
    int chunk = (ext + splits - 1) / splits;
    chunk = (chunk + AT_TILE - 1) / AT_TILE * AT_TILE;
    splits = (ext + chunk - 1) / chunk;
    if (sp >= splits) return;
    const int lo = sp * chunk, hi = min(lo + chunk, ext);

    const int *pg = a.pages + (size_t)s * a.ldp;
    const size_t page_elems = (size_t)2 * a.nkv * a.ps * HD, v_off = (size_t)a.nkv * a.ps * HD;
    const uint16_t *kvh = a.kv + (size_t)kh * a.ps * HD;
    uint16_t *sbuf = reinterpret_cast<uint16_t *>(at_smem);  // [ST][K|V][AT_TILE][RS]
    float *os = reinterpret_cast<float *>(at_smem);          // epilogue, over the buffers: [4 warps x 16 rows][OS]
    const int c8 = (tid % CPR) * 8, r0 = tid / CPR;          // this thread's 16-byte chunk, first row of a tile
    auto row_slot = [&](int f) { return ((size_t)(tok0 + f / G) * n_heads + kh * G + f % G) * a.smax; };

    for (int rt = 0; rt * ROWS < nrows; rt++) {
        if (tid < ROWS) {
            const int f = rt * ROWS + tid;
            sh.lim[tid] = f >= nrows ? -1 : one ? spec : __ldg(a.pos + tok0 + f / G);
        }
        __syncthreads();
        int tmax = -1;
#pragma unroll
        for (int r = 0; r < ROWS; r++) tmax = max(tmax, sh.lim[r]);
        const int lim0 = sh.lim[g], lim1 = sh.lim[g + 8];
        const int thi = min(hi, tmax + 1);  // the chunk's positions these rows see
        const int ntiles = thi > lo ? (thi - lo + AT_TILE - 1) / AT_TILE : 0;

        // The page of each of this thread's rows of tile t, loaded a tile
        // ahead of its cp.async (0 where the row is past thi: not read).
        auto pages_of = [&](int t, int(&pgi)[RPT]) {
#pragma unroll
            for (int i = 0; i < RPT; i++) {
                const int p = lo + t * AT_TILE + r0 + i * RPP;
                pgi[i] = p < thi ? __ldg(pg + p / a.ps) : 0;
            }
        };
        // K/V tile t into its stage: zeros past thi (P is 0 there; garbage V could be NaN)
        auto issue = [&](int t, const int(&pgi)[RPT]) {
            uint16_t *sk = sbuf + (size_t)(t % ST) * 2 * AT_TILE * RS, *sv = sk + AT_TILE * RS;
#pragma unroll
            for (int i = 0; i < RPT; i++) {
                const int r = r0 + i * RPP, p = lo + t * AT_TILE + r;
                const bool ok = p < thi;
                const uint16_t *src = ok ? kvh + (size_t)pgi[i] * page_elems + (size_t)(p % a.ps) * HD + c8 : a.kv;
                cp16(sk + r * RS + c8, src, ok);
                cp16(sv + r * RS + c8, ok ? src + v_off : a.kv, ok);
            }
        };
        int pgi[ST - 1][RPT], nxt[RPT];
#pragma unroll
        for (int t = 0; t < ST - 1; t++) pages_of(t, pgi[t]);
        uint32_t qa[SPLIT][KS][4];
        {
            const int f0 = rt * ROWS + g, f1 = f0 + 8;
            load_q<HD, SPLIT>(qa, lim0 >= 0 ? a.q + (size_t)(tok0 + f0 / G) * a.ldq + (size_t)(kh * G + f0 % G) * HD : nullptr,
                              lim1 >= 0 ? a.q + (size_t)(tok0 + f1 / G) * a.ldq + (size_t)(kh * G + f1 % G) * HD : nullptr);
        }
#pragma unroll
        for (int t = 0; t < ST - 1; t++) {
            if (t < ntiles) issue(t, pgi[t]);
            cp_commit();
        }
        pages_of(ST - 1, nxt);

        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
        float acc[DT][4];
#pragma unroll
        for (int d = 0; d < DT; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0;
        for (int t = 0; t < ntiles; t++) {
            const int tn = t + ST - 1;
            if (tn < ntiles) issue(tn, nxt);  // into the stage tile t - 1 used (free since its closing barrier)
            cp_commit();
            pages_of(tn + 1, nxt);  // in flight while this tile is computed
            cp_wait<ST - 1>();
            __syncthreads();
            const int pw = lo + t * AT_TILE + warp * NPW;  // the warp's first position
            if (pw <= tmax) {
                const uint16_t *sk = sbuf + (size_t)(t % ST) * 2 * AT_TILE * RS + (size_t)warp * NPW * RS;
                att_step<HD, NT, SPLIT>(qa, sk, sk + AT_TILE * RS, pw, lim0, lim1, a.scale_log2, m, l, acc);
            }
            __syncthreads();  // the stage is refilled next iteration
        }
        cp_wait<0>();

        // Merge the 4 warps (each saw 16 of every 64 positions) through shared
        // memory: scaled to the rows' common max, summed, then normalised into
        // out, or (split) kept unnormalised with (max, sum) for the merge.
#pragma unroll
        for (int h = 0; h < 2; h++) {
            l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
            l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
        }
        if (q4 == 0) {
            sh.ml[warp * 16 + g] = make_float2(m[0], l[0]);
            sh.ml[warp * 16 + g + 8] = make_float2(m[1], l[1]);
        }
        __syncthreads();
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float M = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) M = fmaxf(M, sh.ml[j * 16 + g + 8 * h].x);
            const float f = m[h] == -INFINITY ? 0.0f : exp2f(m[h] - M);
            float *row = os + (size_t)(warp * 16 + g + 8 * h) * OS + q4 * 2;
#pragma unroll
            for (int d = 0; d < DT; d++)
                *reinterpret_cast<float2 *>(row + d * 8) = make_float2(acc[d][2 * h] * f, acc[d][2 * h + 1] * f);
        }
        __syncthreads();
        for (int i = tid; i < ROWS * V4; i += AT_THREADS) {
            const int r = i / V4, d = (i % V4) * 4, f = rt * ROWS + r;
            if (f >= nrows || sh.lim[r] < 0) continue;  // past the rows, or a padding row
            float M = -INFINITY, L = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) M = fmaxf(M, sh.ml[j * 16 + r].x);
            float4 o = make_float4(0, 0, 0, 0);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float2 ml = sh.ml[j * 16 + r];
                if (ml.x != -INFINITY) L += exp2f(ml.x - M) * ml.y;
                const float4 v = *reinterpret_cast<const float4 *>(os + (size_t)(j * 16 + r) * OS + d);
                o.x += v.x, o.y += v.y, o.z += v.z, o.w += v.w;
            }
            if (splits == 1) {
                const float inv = 1.0f / L;
                store4v(a.out_v4, a.out + (size_t)(tok0 + f / G) * a.ldo + (size_t)(kh * G + f % G) * HD + d,
                        make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv));
            } else {
                const size_t pi = row_slot(f) + sp;
                *reinterpret_cast<float4 *>(a.pacc + pi * HD + d) = o;
                if (d == 0) a.pml[pi] = make_float2(M, L);
            }
        }
        __syncthreads();  // os, sh.lim and sh.ml are rewritten by the next row tile
    }
    if (splits == 1) return;

    // The last chunk of (s, kh) to arrive merges them all, and puts the
    // counter back to zero for the next launch.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        sh.last = atomicAdd(a.cnt + unit, 1) == splits - 1;
        if (sh.last) a.cnt[unit] = 0;  // every chunk of this launch has counted
    }
    __syncthreads();
    if (!sh.last) return;
    __threadfence();
    float *wsm = reinterpret_cast<float *>(at_smem);  // [ROWS][AT_MAX_SPLITS]: weight of each chunk of a row
    for (int rt = 0; rt * ROWS < nrows; rt++) {
        if (tid < ROWS) {
            const int f = rt * ROWS + tid;
            sh.lim[tid] = f >= nrows ? -1 : one ? spec : __ldg(a.pos + tok0 + f / G);
        }
        __syncthreads();
        {  // 8 threads per row: chunk j's weight exp2(m_j - M) and the row's 1 / sum
            const int r = tid >> 3, k = tid & 7, f = rt * ROWS + r;
            const bool ok = f < nrows && sh.lim[r] >= 0;
            const size_t p0 = ok ? row_slot(f) : 0;
            float2 ml[AT_MAX_SPLITS / 8];
            float M = -INFINITY, L = 0;
#pragma unroll
            for (int i = 0; i < AT_MAX_SPLITS / 8; i++) {
                const int j = k + 8 * i;
                ml[i] = ok && j < splits ? __ldcg(a.pml + p0 + j) : make_float2(-INFINITY, 0.0f);
                M = fmaxf(M, ml[i].x);
            }
            M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 1));
            M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 2));
            M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 4));
#pragma unroll
            for (int i = 0; i < AT_MAX_SPLITS / 8; i++) {
                const int j = k + 8 * i;
                const float w = ml[i].x == -INFINITY ? 0.0f : exp2f(ml[i].x - M);  // -inf: the chunk is past the row's limit
                L += w * ml[i].y;
                if (j < splits) wsm[r * AT_MAX_SPLITS + j] = w;
            }
            L += __shfl_xor_sync(0xffffffffu, L, 1);
            L += __shfl_xor_sync(0xffffffffu, L, 2);
            L += __shfl_xor_sync(0xffffffffu, L, 4);
            if (k == 0) sh.inv[r] = 1.0f / L;
        }
        __syncthreads();
        for (int i = tid; i < ROWS * V4; i += AT_THREADS) {
            const int r = i / V4, d = (i % V4) * 4, f = rt * ROWS + r;
            if (f >= nrows || sh.lim[r] < 0) continue;
            const float *w = wsm + r * AT_MAX_SPLITS;
            const float *src = a.pacc + row_slot(f) * HD + d;
            float4 o = make_float4(0, 0, 0, 0);
            int j = 0;
            for (; j + 4 <= splits; j += 4) {  // four independent loads in flight
                float4 v[4];
#pragma unroll
                for (int u = 0; u < 4; u++) v[u] = __ldcg(reinterpret_cast<const float4 *>(src + (size_t)(j + u) * HD));
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const float wj = w[j + u];
                    o.x += wj * v[u].x, o.y += wj * v[u].y, o.z += wj * v[u].z, o.w += wj * v[u].w;
                }
            }
            for (; j < splits; j++) {
                const float4 v = __ldcg(reinterpret_cast<const float4 *>(src + (size_t)j * HD));
                const float wj = w[j];
                o.x += wj * v.x, o.y += wj * v.y, o.z += wj * v.z, o.w += wj * v.w;
            }
            const float inv = sh.inv[r];
            store4v(a.out_v4, a.out + (size_t)(tok0 + f / G) * a.ldo + (size_t)(kh * G + f % G) * HD + d,
                    make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv));
        }
        __syncthreads();
    }
}

static size_t tc_smem(int hd) {
    size_t kvb = (size_t)AT_STAGES * 2 * AT_TILE * (hd + 8) * 2, ob = (size_t)64 * (hd + 8) * 4;
    return kvb > ob ? kvb : ob;
}

// CTA slots (SMs x resident CTAs per SM) of one kernel on the current device.
template <int HD, int SPLIT> static int tc_slots(void) {
    static int cache[16];  // per device (0: not asked yet)
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) return 0;
    if (dev < 16 && cache[dev]) return cache[dev];
    const size_t smem = tc_smem(HD);
    int sms = 0, occ = 0;
    if (cudaFuncSetAttribute(k_attn_tc<HD, SPLIT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_attn_tc<HD, SPLIT>, AT_THREADS, smem) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int slots = sms * occ;
    if (slots > AT_MAX_CTAS) slots = AT_MAX_CTAS;
    if (dev < 16) cache[dev] = slots;
    return slots;
}

typedef int (*tc_launch_fn)(const att_args *, int, cudaStream_t);
template <int HD, int SPLIT> static int tc_launch(const att_args *a, int ctas, cudaStream_t st) {
    k_attn_tc<HD, SPLIT><<<ctas, AT_THREADS, tc_smem(HD), st>>>(*a);
    return launched();
}

// CTA slots of the decode kernel (SMs x resident CTAs per SM), as tc_slots.
template <int HD, int SPLIT> static int dec_slots(void) {
    static int cache[16];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) return 0;
    if (dev < 16 && cache[dev]) return cache[dev];
    const size_t smem = dec_smem(HD);
    int sms = 0, occ = 0;
    if (cudaFuncSetAttribute(k_attn_dec<HD, SPLIT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_attn_dec<HD, SPLIT>, AT_THREADS, smem) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (dev < 16) cache[dev] = sms * occ;
    return sms * occ;
}

typedef int (*dec_launch_fn)(const dec_args *, long long, cudaStream_t);
template <int HD, int SPLIT> static int dec_launch(const dec_args *a, long long ctas, cudaStream_t st) {
    k_attn_dec<HD, SPLIT><<<(unsigned)ctas, AT_THREADS, dec_smem(HD), st>>>(*a);
    return launched();
}

__global__ void k_zero(int *p, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = 0;
}

// Decode tuning (lm_cuda_attention_tune).
static int g_min_chunk = 128, g_ctas_pct = 100;

extern "C" void lm_cuda_attention_tune(int min_chunk, int ctas_pct) {
    g_min_chunk = min_chunk > 0 ? (min_chunk + AT_TILE - 1) / AT_TILE * AT_TILE : 128;
    g_ctas_pct = ctas_pct > 0 ? ctas_pct : 100;
}

// Workspaces whose decode counters are known to be zero (zeroed by
// lm_cuda_attention_ws_init; every decode launch leaves them so).
static std::mutex g_reg_mu;
static const void *g_reg[64];

static bool ws_registered(const void *ws) {
    std::lock_guard<std::mutex> lk(g_reg_mu);
    for (int i = 0; i < 64; i++)
        if (g_reg[i] == ws) return true;
    return false;
}

extern "C" int lm_cuda_attention_ws_init(void *ws, size_t ws_bytes, lm_cuda_stream st) {
    if (!ws || ws_bytes < AT_CNT_BYTES) return (int)cudaErrorInvalidValue;
    k_zero<<<AT_CNT_CAP / 256, 256, 0, st>>>((int *)ws, AT_CNT_CAP);
    int e = launched();
    if (e) return e;
    std::lock_guard<std::mutex> lk(g_reg_mu);
    int fr = -1;
    for (int i = 0; i < 64; i++) {
        if (g_reg[i] == ws) return 0;
        if (!g_reg[i] && fr < 0) fr = i;
    }
    if (fr >= 0) g_reg[fr] = ws;  // a full table: the launcher keeps zeroing it per call
    return 0;
}

extern "C" void lm_cuda_attention_ws_forget(const void *ws) {
    std::lock_guard<std::mutex> lk(g_reg_mu);
    for (int i = 0; i < 64; i++)
        if (g_reg[i] == ws) g_reg[i] = NULL;
}

// The decode kernel when every sequence can be a unit of its own (the host
// knows n == n_seqs: a decode step, padded or not); 0 when it cannot run.
static int dec_path(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads, const int *seq_start,
                    int n_seqs, const int *pages, size_t ldp, const int *pos, const void *kv, int page_size, int nkv,
                    int hd, void *ws, size_t ws_bytes, int split, cudaStream_t st, int *err) {
    const long long units = (long long)n_seqs * nkv;
    const size_t row = 8 + (size_t)hd * 4;
    if (n != n_seqs || units > AT_CNT_CAP || !ws || ((uintptr_t)ws & 255) || ws_bytes < AT_CNT_BYTES + 512 + row)
        return 0;
    int slots = 0;
    dec_launch_fn fn = NULL;
    if (hd == 128) {
        slots = split == 2 ? dec_slots<128, 2>() : dec_slots<128, 1>();
        fn = split == 2 ? dec_launch<128, 2> : dec_launch<128, 1>;
    } else if (hd == 64) {
        slots = split == 2 ? dec_slots<64, 2>() : dec_slots<64, 1>();
        fn = split == 2 ? dec_launch<64, 2> : dec_launch<64, 1>;
    }
    if (!fn || slots <= 0) return 0;
    // Splits: about g_ctas_pct % of the CTA slots in all when every sequence
    // is long enough (a short one takes fewer: min_chunk positions each), and
    // as many partial rows as the workspace holds.
    const long long p_cap = (long long)((ws_bytes - AT_CNT_BYTES - 256) / row);
    long long smax = (long long)slots * g_ctas_pct / 100 / units;
    if (smax > AT_MAX_SPLITS) smax = AT_MAX_SPLITS;
    if (smax > 1 && (long long)n * n_heads * smax > p_cap) smax = p_cap / ((long long)n * n_heads);
    if (smax < 1) smax = 1;
    if (units * smax > 0x7fffffffll) return 0;
    dec_args a;
    a.q = q, a.ldq = ldq, a.out = out, a.ldo = ldo;
    a.out_v4 = ldo % 4 == 0 && !((uintptr_t)out & 15);
    a.seq_start = seq_start, a.pages = pages, a.pos = pos, a.ldp = ldp;
    a.kv = (const uint16_t *)kv, a.ps = page_size, a.nkv = nkv, a.G = n_heads / nkv, a.n = n;
    a.smax = (int)smax, a.min_chunk = g_min_chunk;
    a.scale_log2 = (float)(1.4426950408889634 / sqrt((double)hd));
    a.cnt = (int *)ws;
    a.pml = (float2 *)((char *)ws + AT_CNT_BYTES);
    a.pacc = (float *)((char *)ws + AT_CNT_BYTES + al256((size_t)p_cap * 8));
    if (smax > 1 && !ws_registered(ws)) {  // counters of unknown state: zero the ones this launch uses
        k_zero<<<(unsigned)((units + 255) / 256), 256, 0, st>>>((int *)ws, (int)units);
        if ((*err = launched())) return 1;
    }
    *err = fn(&a, units * smax, st);
    return 1;
}

extern "C" int lm_cuda_attention_mode(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads,
                                      const int *seq_start, int n_seqs, const int *pages, size_t ldp,
                                      const int *pos, const void *kv, int kvdt, int page_size, int nkv, int hd,
                                      void *ws, size_t ws_bytes, int mode, lm_cuda_stream st) {
    if (n <= 0) return launched();
    if (nkv <= 0 || n_heads % nkv || page_size <= 0 || hd <= 0) return (int)cudaErrorInvalidValue;
    const int path = mode & 3, split = path == LM_CUDA_ATTN_BF16 ? 1 : 2;
    const bool fast = path != LM_CUDA_ATTN_SIMPLE && kvdt == 2 && n_seqs > 0 && ldq % 2 == 0 && !((uintptr_t)q & 7) &&
                      !((uintptr_t)kv & 15) && (hd == 128 || hd == 64);
    if (fast && !(mode & LM_CUDA_ATTN_NO_DECODE)) {
        int e = 0;
        if (dec_path(q, ldq, out, ldo, n, n_heads, seq_start, n_seqs, pages, ldp, pos, kv, page_size, nkv, hd, ws,
                     ws_bytes, split, st, &e)) {
            g_last_path = 3;
            return e;
        }
    }
    int slots = 0;
    tc_launch_fn fn = NULL;
    if (fast) {
        if (hd == 128) {
            slots = split == 2 ? tc_slots<128, 2>() : tc_slots<128, 1>();
            fn = split == 2 ? tc_launch<128, 2> : tc_launch<128, 1>;
        } else {
            slots = split == 2 ? tc_slots<64, 2>() : tc_slots<64, 1>();
            fn = split == 2 ? tc_launch<64, 2> : tc_launch<64, 1>;
        }
    }
    att_ws w;
    if (!fn || slots <= 0 || !ws_carve(ws, ws_bytes, n, n_seqs, n_heads, nkv, hd, slots, &w)) {
        g_last_path = 1;
        return lm_cuda_attention_simple(q, ldq, out, ldo, n, n_heads, seq_start, n_seqs, pages, ldp, pos, kv, kvdt,
                                        page_size, nkv, hd, st);
    }
    g_last_path = 2;
    const int G = n_heads / nkv;
    plan_args pa = {seq_start, pos, n_seqs, G, nkv, slots, w.p_cap, w};
    k_attn_plan<<<1, AT_PLAN_THREADS, 0, st>>>(pa);
    int e = launched();
    if (e) return e;
    att_args aa;
    aa.q = q, aa.ldq = ldq, aa.out = out, aa.ldo = ldo;
    aa.out_v4 = ldo % 4 == 0 && !((uintptr_t)out & 15);
    aa.seq_start = seq_start, aa.pages = pages, aa.pos = pos, aa.ldp = ldp;
    aa.kv = (const uint16_t *)kv, aa.ps = page_size, aa.nkv = nkv, aa.G = G;
    aa.scale_log2 = (float)(1.4426950408889634 / sqrt((double)hd));
    aa.w = w;
    return fn(&aa, slots, st);
}

extern "C" int lm_cuda_attention(const float *q, size_t ldq, float *out, size_t ldo, int n, int n_heads,
                                 const int *seq_start, int n_seqs, const int *pages, size_t ldp, const int *pos,
                                 const void *kv, int kvdt, int page_size, int nkv, int hd, void *ws, size_t ws_bytes,
                                 lm_cuda_stream st) {
    return lm_cuda_attention_mode(q, ldq, out, ldo, n, n_heads, seq_start, n_seqs, pages, ldp, pos, kv, kvdt,
                                  page_size, nkv, hd, ws, ws_bytes, LM_CUDA_ATTN_AUTO, st);
}

extern "C" int lm_cuda_attention_last_path(void) { return g_last_path; }
