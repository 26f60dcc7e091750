// The portable CUDA kernels (contract in kernels.h). Plain on purpose: a
// warp per dot product with lanes striding the reduction dimension (so a
// weight row is read coalesced), block reductions through shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/cuda/kernels.h"

#define WARPS 8  // warps per block of the dot-product kernels

__device__ __forceinline__ float ldw(const void *p, int dt, size_t i) {
    if (dt == 2) return __uint_as_float((uint32_t)((const uint16_t *)p)[i] << 16);
    if (dt == 1) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    __shared__ float total;
    v = warp_sum(v);
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    __syncthreads();  // part[] may still be read by a previous call
    if (l == 0) part[w] = v;
    __syncthreads();
    if (w == 0) {
        float s = l < (int)(blockDim.x / 32) ? part[l] : 0.0f;
        s = warp_sum(s);
        if (l == 0) total = s;
    }
    __syncthreads();
    return total;
}

static int launched(void) { return (int)cudaGetLastError(); }

// Programmatic dependent launch (sm_90+): the kernels the fast path uses
// between the GEMMs are queued while their predecessor runs, wait for it in
// the kernel (pdl_wait, before touching anything), and let their own
// successor launch at once (pdl_trigger): a GEMM after them then starts its
// weight prefetch while they run. Off (plain launches) unless the executor
// turns it on; a kernel launched plainly passes pdl_wait at once.
static int g_pdl = 0;

extern "C" void lm_cuda_set_pdl(int on) { g_pdl = on; }

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

template <typename... P, typename... A>
static int launch_pdl(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A... args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = g_pdl;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cfg.attrs = at, cfg.numAttrs = 1;
    return (int)cudaLaunchKernelEx(&cfg, k, ((P)args)...);
}

// ---------------------------------------------------------------- embed ---

__global__ void k_embed(const void *E, int edt, size_t lde, const int *ids, float *x, size_t ldx, int H) {
    pdl_wait();
    pdl_trigger();
    int t = blockIdx.x;
    size_t row = (size_t)ids[t] * lde;
    for (int c = threadIdx.x; c < H; c += blockDim.x) x[(size_t)t * ldx + c] = ldw(E, edt, row + c);
}

extern "C" int lm_cuda_embed(const void *E, int edt, size_t lde, const int *ids, float *x, size_t ldx, int n, int H,
                             lm_cuda_stream st) {
    return n > 0 ? launch_pdl(k_embed, n, 256, 0, st, E, edt, lde, ids, x, ldx, H) : 0;
}

// ---------------------------------------------------------------- norms ---

__device__ void norm_group(const float *x, int n, const void *w, int wdt, int wn, float eps, float *y) {
    float ss = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss);
    float scale = 1.0f / sqrtf(ss / n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = x[i] * scale * ldw(w, wdt, i % wn);
}

__global__ void k_rmsnorm(const float *x, size_t ldx, int group, const void *w, int wdt, int wn, float eps, float *y,
                          size_t ldy) {
    pdl_wait();
    pdl_trigger();
    int r = blockIdx.x, g = blockIdx.y;
    norm_group(x + (size_t)r * ldx + (size_t)g * group, group, w, wdt, wn, eps, y + (size_t)r * ldy + (size_t)g * group);
}

extern "C" int lm_cuda_rmsnorm(const float *x, size_t ldx, int rows, int cols, int group, const void *w, int wdt,
                               int wn, float eps, float *y, size_t ldy, lm_cuda_stream st) {
    return rows > 0 ? launch_pdl(k_rmsnorm, dim3(rows, cols / group), 128, 0, st, x, ldx, group, w, wdt, wn, eps, y, ldy)
                    : 0;
}

__global__ void k_add_rmsnorm(float *x, size_t ldx, const float *d, size_t ldd, int cols, const void *w, int wdt,
                              int wn, float eps, float *y, size_t ldy) {
    pdl_wait();
    pdl_trigger();
    float *xr = x + (size_t)blockIdx.x * ldx;
    const float *dr = d + (size_t)blockIdx.x * ldd;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) xr[i] += dr[i];
    if (!w) return;
    __syncthreads();
    norm_group(xr, cols, w, wdt, wn, eps, y + (size_t)blockIdx.x * ldy);
}

extern "C" int lm_cuda_add_rmsnorm(float *x, size_t ldx, const float *d, size_t ldd, int rows, int cols,
                                   const void *w, int wdt, int wn, float eps, float *y, size_t ldy,
                                   lm_cuda_stream st) {
    return rows > 0 ? launch_pdl(k_add_rmsnorm, rows, 256, 0, st, x, ldx, d, ldd, cols, w, wdt, wn, eps, y, ldy) : 0;
}

// --------------------------------------------------------------- matmul ---

__device__ __forceinline__ float dot_row(const float *x, const void *W, int wdt, size_t off, int K) {
    float s = 0;
    for (int i = threadIdx.x % 32; i < K; i += 32) s += x[i] * ldw(W, wdt, off + i);
    return warp_sum(s);
}

// grid (ceil(O / WARPS), n): warp w of block (b, t) computes y[t][b * WARPS + w]
__global__ void k_matmul(const float *x, size_t ldx, int n, const void *W, int wdt, size_t ldw_, int O, int K,
                         const void *bias, int bdt, float *y, size_t ldy) {
    int o = blockIdx.x * WARPS + threadIdx.x / 32;
    if (o >= O) return;
    for (int t = blockIdx.y; t < n; t += gridDim.y) {  // gridDim.y is at most 65535
        float s = dot_row(x + (size_t)t * ldx, W, wdt, (size_t)o * ldw_, K);
        if (threadIdx.x % 32 == 0) y[(size_t)t * ldy + o] = s + (bias ? ldw(bias, bdt, o) : 0.0f);
    }
}

extern "C" int lm_cuda_matmul(const float *x, size_t ldx, int n, const void *W, int wdt, size_t ldw_, int O, int K,
                              const void *bias, int bdt, float *y, size_t ldy, lm_cuda_stream st) {
    if (n > 0) k_matmul<<<dim3((O + WARPS - 1) / WARPS, n < 65535 ? n : 65535), 32 * WARPS, 0, st>>>(x, ldx, n, W, wdt, ldw_, O, K, bias, bdt, y, ldy);
    return launched();
}

// ------------------------------------------------------------ RoPE + KV ---

__device__ __forceinline__ void store_kv(void *base, int kvdt, size_t e, float v) {
    if (kvdt == 2) ((__nv_bfloat16 *)base)[e] = __float2bfloat16_rn(v);
    else ((float *)base)[e] = v;
}

// One block per token; cos/sin from the table (made on the host as
// transformers computes them: the angle rounded to fp32, then cos/sin in
// double precision rounded to fp32).
__global__ void k_rope_kv(float *q, size_t ldq, int nq, float *k, size_t ldk, const float *v, size_t ldv, int nkv,
                          int hd, const float *tab, const int *pos, const int *slot, void *kv, int kvdt, int ps) {
    pdl_wait();
    pdl_trigger();
    extern __shared__ float cs[];  // [half] cos, [half] sin
    int t = blockIdx.x, half = hd / 2, p = pos[t], s = slot[t];
    float *sn = cs + half;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) cs[i] = tab[(size_t)p * hd + i];
    __syncthreads();
    float *qr = q + (size_t)t * ldq, *kr = k + (size_t)t * ldk;
    for (int j = threadIdx.x; j < nq * half; j += blockDim.x) {
        int h = j / half, i = j % half;
        float a = qr[h * hd + i], b = qr[h * hd + i + half];
        qr[h * hd + i] = a * cs[i] - b * sn[i];
        qr[h * hd + i + half] = b * cs[i] + a * sn[i];
    }
    size_t page_elems = 2 * (size_t)nkv * ps * hd, off = (size_t)(s % ps) * hd;
    char *pg = (char *)kv + (size_t)(s / ps) * page_elems * (kvdt == 2 ? 2 : 4);
    for (int j = threadIdx.x; j < nkv * half; j += blockDim.x) {
        int h = j / half, i = j % half;
        float a = kr[h * hd + i], b = kr[h * hd + i + half];
        float ra = a * cs[i] - b * sn[i], rb = b * cs[i] + a * sn[i];
        kr[h * hd + i] = ra;
        kr[h * hd + i + half] = rb;
        size_t e = (size_t)h * ps * hd + off;
        store_kv(pg, kvdt, e + i, ra);
        store_kv(pg, kvdt, e + i + half, rb);
    }
    const float *vr = v + (size_t)t * ldv;
    for (int j = threadIdx.x; j < nkv * hd; j += blockDim.x) {
        int h = j / hd, d = j % hd;
        store_kv(pg, kvdt, (size_t)(nkv + h) * ps * hd + off + d, vr[j]);
    }
}

extern "C" int lm_cuda_rope_kv(float *q, size_t ldq, int nq, float *k, size_t ldk, const float *v, size_t ldv,
                               int nkv, int hd, const float *cos_sin, const int *pos, const int *slot, int n,
                               void *kv, int kvdt, int page_size, lm_cuda_stream st) {
    return n > 0 ? launch_pdl(k_rope_kv, n, 128, (size_t)hd * sizeof(float), st, q, ldq, nq, k, ldk, v, ldv, nkv, hd,
                              cos_sin, pos, slot, kv, kvdt, page_size)
                 : 0;
}

// --------------------------------------------------------------- gather ---

__global__ void k_gather(const float *x, size_t ldx, const int *idx, float *y, size_t ldy, int cols) {
    pdl_wait();
    pdl_trigger();
    const float *src = x + (size_t)idx[blockIdx.x] * ldx;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) y[(size_t)blockIdx.x * ldy + c] = src[c];
}

extern "C" int lm_cuda_gather(const float *x, size_t ldx, const int *idx, float *y, size_t ldy, int m, int cols,
                              lm_cuda_stream st) {
    return m > 0 ? launch_pdl(k_gather, m, 256, 0, st, x, ldx, idx, y, ldy, cols) : 0;
}

// ------------------------------------------------------------------ MoE ---

#define ROUTE_MAXK 32

// One thread per token: softmax, k passes of argmax (strict >, so ties go
// to the lower id), the choices then written in expert-id order.
__global__ void k_route(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds,
                        float *w, size_t ldw_) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const float *r = logits + (size_t)t * ldl;
    float mx = -INFINITY, sum = 0, wsum = 0;
    for (int e = 0; e < E; e++) mx = fmaxf(mx, r[e]);
    for (int e = 0; e < E; e++) sum += expf(r[e] - mx);
    int ch[ROUTE_MAXK];
    for (int i = 0; i < k; i++) {
        int best = -1;
        float bp = 0;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int j = 0; j < i; j++) taken |= ch[j] == e;
            float p = expf(r[e] - mx);
            if (!taken && (best < 0 || p > bp)) best = e, bp = p;
        }
        ch[i] = best;
        wsum += bp / sum;
    }
    for (int i = 1; i < k; i++)  // insertion sort by expert id
        for (int j = i; j > 0 && ch[j - 1] > ch[j]; j--) {
            int x = ch[j];
            ch[j] = ch[j - 1], ch[j - 1] = x;
        }
    for (int i = 0; i < k; i++) {
        float p = expf(r[ch[i]] - mx) / sum;
        sel[(size_t)t * lds + i] = ch[i];
        w[(size_t)t * ldw_ + i] = norm ? p / wsum : p;
    }
}

extern "C" int lm_cuda_route(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds,
                             float *w, size_t ldw_, lm_cuda_stream st) {
    if (k < 1 || k > ROUTE_MAXK || k > E) return (int)cudaErrorInvalidValue;
    if (n > 0) k_route<<<(n + 127) / 128, 128, 0, st>>>(logits, ldl, n, E, k, norm, sel, lds, w, ldw_);
    return launched();
}

// One thread: counts, the padded layout, then each expert's rows in token
// order (the reference's order). Serial and simple; the fused router will
// replace it.
__global__ void k_align(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr, int *token_of,
                        int *tiles, int *n_tiles, int *counts, unsigned long long *stats) {
    if (threadIdx.x || blockIdx.x) return;
    for (int e = 0; e < E; e++) counts[e] = 0;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) counts[sel[(size_t)t * lds + i]]++;
    int row = 0, nt = 0;
    for (int e = 0; e < E; e++) {
        int c = counts[e], padded = (c + B - 1) / B * B;
        for (int b = 0; b < padded / B; b++) tiles[2 * nt] = e, tiles[2 * nt++ + 1] = row + b * B;
        for (int r = row + c; r < row + padded; r++) token_of[r] = -1;
        row += padded;
        if (stats) stats[e] += (unsigned long long)c;
    }
    *n_tiles = nt;
    // fill: reuse counts as the next free row of each expert, then restore
    int first = 0;
    for (int e = 0; e < E; e++) {
        int c = counts[e];
        counts[e] = first;
        first += (c + B - 1) / B * B;
    }
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) {
            int r = counts[sel[(size_t)t * lds + i]]++;
            row_of[(size_t)t * ldr + i] = r;
            token_of[r] = t;
        }
    first = 0;
    for (int e = 0; e < E; e++) {  // counts[e] is now first_e + count_e
        int end = counts[e], c = end - first;
        counts[e] = c;
        first += (c + B - 1) / B * B;
    }
}

extern "C" int lm_cuda_align(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr,
                             int *token_of, int *tiles, int *n_tiles, int *counts,
                             unsigned long long *stats, lm_cuda_stream st) {
    k_align<<<1, 32, 0, st>>>(sel, lds, n, k, E, B, row_of, ldr, token_of, tiles, n_tiles, counts, stats);
    return launched();
}

// Row r of a packed (MoE) or dense layout: its token and weight index, or -1.
__device__ __forceinline__ int row_token(int r, int rows, const int *token_of, const int *tiles, const int *n_tiles,
                                         int B, int *e) {
    if (!tiles) {
        *e = -1;
        return r < rows ? r : -1;
    }
    if (r >= *n_tiles * B) return -1;
    *e = tiles[2 * (r / B)];
    return token_of[r];
}

__global__ void k_gateup(const float *x, size_t ldx, int rows, const int *token_of, const int *tiles,
                         const int *n_tiles, int B, const void *const *gates, const void *const *ups, const void *g0,
                         const void *u0, int wdt, size_t ldw_, int H, int inter, void *h, int hdt, size_t ldh) {
    int i = blockIdx.x * WARPS + threadIdx.x / 32, e;
    if (i >= inter) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {  // gridDim.y is at most 65535
    int t = row_token(r, rows, token_of, tiles, n_tiles, B, &e);
    if (t < 0) continue;
    const void *G = e >= 0 ? gates[e] : g0, *U = e >= 0 ? ups[e] : u0;
    const float *xr = tiles ? x + (size_t)t * ldx : x + (size_t)r * ldx;
    float g = dot_row(xr, G, wdt, (size_t)i * ldw_, H), u = dot_row(xr, U, wdt, (size_t)i * ldw_, H);
    if (threadIdx.x % 32 == 0) {
        float v = g / (1.0f + expf(-g)) * u;
        if (hdt == 2) ((__nv_bfloat16 *)h)[(size_t)r * ldh + i] = __float2bfloat16_rn(v);
        else ((float *)h)[(size_t)r * ldh + i] = v;
    }
    }
}

extern "C" int lm_cuda_gateup(const float *x, size_t ldx, int rows, const int *token_of, const int *tiles,
                              const int *n_tiles, int B, const void *const *gates, const void *const *ups,
                              const void *g0, const void *u0, int wdt, size_t ldw_, int H, int inter, void *h,
                              int hdt, size_t ldh, lm_cuda_stream st) {
    if (rows > 0)
        k_gateup<<<dim3((inter + WARPS - 1) / WARPS, rows < 65535 ? rows : 65535), 32 * WARPS, 0, st>>>(
            x, ldx, rows, token_of, tiles, n_tiles, B, gates, ups, g0, u0, wdt, ldw_, H, inter, h, hdt, ldh);
    return launched();
}

__global__ void k_down(const void *h, int hdt, size_t ldh, int rows, const int *token_of, const int *tiles, const int *n_tiles,
                       int B, const void *const *downs, const void *d0, int wdt, size_t ldw_, int inter, int H,
                       float *y, size_t ldy) {
    int o = blockIdx.x * WARPS + threadIdx.x / 32, e;
    if (o >= H) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {  // gridDim.y is at most 65535
    if (row_token(r, rows, token_of, tiles, n_tiles, B, &e) < 0) continue;
    const void *W = e >= 0 ? downs[e] : d0;
    float s = 0;
    for (int i = threadIdx.x % 32; i < inter; i += 32)
        s += ldw(h, hdt, (size_t)r * ldh + i) * ldw(W, wdt, (size_t)o * ldw_ + i);
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) y[(size_t)r * ldy + o] = s;
    }
}

extern "C" int lm_cuda_down(const void *h, int hdt, size_t ldh, int rows, const int *token_of, const int *tiles,
                            const int *n_tiles, int B, const void *const *downs, const void *d0, int wdt, size_t ldw_,
                            int inter, int H, float *y, size_t ldy, lm_cuda_stream st) {
    if (rows > 0)
        k_down<<<dim3((H + WARPS - 1) / WARPS, rows < 65535 ? rows : 65535), 32 * WARPS, 0, st>>>(h, hdt, ldh, rows, token_of, tiles, n_tiles, B,
                                                                          downs, d0, wdt, ldw_, inter, H, y, ldy);
    return launched();
}

__global__ void k_combine(const int *row_of, size_t ldr, const float *w, size_t ldw_, int k, const float *y,
                          size_t ldy, float *out, size_t ldo, int H) {
    int t = blockIdx.x;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        float o = 0;
        for (int i = 0; i < k; i++) o += w[(size_t)t * ldw_ + i] * y[(size_t)row_of[(size_t)t * ldr + i] * ldy + c];
        out[(size_t)t * ldo + c] = o;
    }
}

extern "C" int lm_cuda_combine(const int *row_of, size_t ldr, const float *w, size_t ldw_, int n, int k,
                               const float *y, size_t ldy, float *out, size_t ldo, int H, lm_cuda_stream st) {
    if (n > 0) k_combine<<<n, 256, 0, st>>>(row_of, ldr, w, ldw_, k, y, ldy, out, ldo, H);
    return launched();
}

__global__ void k_gated_add(const float *x, size_t ldx, const void *g, int gdt, int H, const float *y, size_t ldy,
                            float *out, size_t ldo) {
    pdl_wait();
    pdl_trigger();
    int t = blockIdx.x;
    float s = 0;
    for (int i = threadIdx.x; i < H; i += blockDim.x) s += x[(size_t)t * ldx + i] * ldw(g, gdt, i);
    s = block_sum(s);
    float gate = 1.0f / (1.0f + expf(-s));
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(size_t)t * ldo + i] += gate * y[(size_t)t * ldy + i];
}

extern "C" int lm_cuda_gated_add(const float *x, size_t ldx, const void *g, int gdt, int H, const float *y,
                                 size_t ldy, float *out, size_t ldo, int n, lm_cuda_stream st) {
    return n > 0 ? launch_pdl(k_gated_add, n, 256, 0, st, x, ldx, g, gdt, H, y, ldy, out, ldo) : 0;
}

// --------------------------------------------------------------- greedy ---

// One CTA per row: the argmax over the allowed ids (ties to the lower id,
// NaN never wins, as the CPU sampler's greedy) and whether any entry of the
// row is NaN or Inf.
__global__ void k_sample_greedy(const float *logits, size_t ldl, int V, const int *params, int pw,
                                const uint8_t *banned, int *out) {
    pdl_wait();
    pdl_trigger();
    const int r = blockIdx.x;
    const float *x = logits + (size_t)r * ldl;
    const int *pr = params + (size_t)r * pw;
    const float temp = __int_as_float(pr[0]);
    const int n_valid = min(pr[3], V), use_banned = pr[4] && banned;
    float best = -INFINITY;
    int bi = -1, bad = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = x[i];
        bad |= !isfinite(v);
        if (i < n_valid && !(use_banned && banned[i]) && (bi < 0 || v > best)) best = v, bi = i;
    }
    __shared__ float sv[32];
    __shared__ int si[32], sb[32];
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        bad |= __shfl_xor_sync(0xffffffffu, bad, o);
        if (oi >= 0 && (bi < 0 || ov > best || (ov == best && oi < bi))) best = ov, bi = oi;
    }
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    if (l == 0) sv[w] = best, si[w] = bi, sb[w] = bad;
    __syncthreads();
    if (w == 0) {
        int nw = blockDim.x / 32;
        best = l < nw ? sv[l] : -INFINITY, bi = l < nw ? si[l] : -1, bad = l < nw ? sb[l] : 0;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            bad |= __shfl_xor_sync(0xffffffffu, bad, o);
            if (oi >= 0 && (bi < 0 || ov > best || (ov == best && oi < bi))) best = ov, bi = oi;
        }
        if (l == 0) {
            out[2 * r] = temp < 0 ? -1 : bi < 0 ? 0 : bi;
            out[2 * r + 1] = bad;
        }
    }
}

extern "C" int lm_cuda_sample_greedy(const float *logits, size_t ldl, int n, int V, const int *params, int pw,
                                     const uint8_t *banned, int *out, lm_cuda_stream st) {
    return n > 0 ? launch_pdl(k_sample_greedy, n, 512, 0, st, logits, ldl, V, params, pw, banned, out) : 0;
}
