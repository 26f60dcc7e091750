// Kernel lab: CUDA paged attention (src/kernels/cuda/attention.cu).
//
// For each shape: a paged bf16 KV cache (16 positions per page, pages of
// every sequence scattered through the pool in shuffled order) and q filled
// on the GPU from a counter hash that the host recomputes, so the double
// precision CPU reference reads exactly the values the kernel read. Checks
// the max relative error (max |gpu - ref| / max |ref|, as tests/unit/test_ops
// does) on sampled tokens (all tokens with --quick), and times the launcher
// with CUDA events (3 warm-ups, median of the reps, L2 flushed before each).
// The roofline is the HBM read bandwidth of a streaming-read kernel over
// 2 GiB.
//
//   attn_cuda                 all shapes: correctness + timing
//   attn_cuda --quick         correctness only, small shapes, every token
//                             (fast path, simple path, splits, odd strides)
//   options: -r N reps (20), --warm-l2 (no flush), --simple (also time the
//            simple kernel), --no-bf16 (no single-bf16 rows for prefill)
// Exit status 1 if any check fails.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/kernels.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "attn_cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

// ------------------------------------------------------------------ data ---
// Every value is a function of its index: [-1, 1) in steps of 2^-15 (exact in
// f32), times a power of two; bf16 rounding done with integers on both sides.

static __host__ __device__ inline float hval(uint64_t i, uint32_t seed) {
    uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull;
    x ^= x >> 30, x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27, x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (float)((int)((x >> 40) & 0xffff) - 32768) * (1.0f / 32768.0f);
}

static __host__ __device__ inline uint16_t bf16_bits(float f) {  // round to nearest even
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

static __host__ __device__ inline float bf16_val(uint16_t b) {
    union {
        float f;
        uint32_t u;
    } v;
    v.u = (uint32_t)b << 16;
    return v.f;
}

#define SEED_K 11u
#define SEED_V 12u
#define SEED_Q 13u
#define K_SCALE 2.0f  // the op test's scales: q and k in [-2, 2), v in [-1, 1)
#define Q_SCALE 2.0f

// The stored value of pool element i (K or V by its place in the page).
static __host__ __device__ inline float kv_value(uint64_t i, int kvdt, int nkv, int ps, int hd) {
    uint64_t half = (uint64_t)nkv * ps * hd;  // elements of K (or V) in one page
    int is_v = (int)((i / half) & 1);
    float x = is_v ? hval(i, SEED_V) : hval(i, SEED_K) * K_SCALE;
    return kvdt == 2 ? bf16_val(bf16_bits(x)) : x;
}

__global__ void k_fill_kv(void *kv, size_t n, int kvdt, int nkv, int ps, int hd) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = kv_value(i, kvdt, nkv, ps, hd);
        if (kvdt == 2) ((uint16_t *)kv)[i] = bf16_bits(x);
        else ((float *)kv)[i] = x;
    }
}

// q rows: values in the first `cols` columns, NaN in the padding (an over-read shows).
__global__ void k_fill_q(float *q, size_t rows, size_t ldq, size_t cols) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < rows * ldq; i += (size_t)gridDim.x * blockDim.x)
        q[i] = i % ldq < cols ? hval(i, SEED_Q) * Q_SCALE : __int_as_float(0x7fc00000);
}

// ------------------------------------------------------------- roofline ---

__global__ void k_read(const int4 *p, size_t n, int *sink) {
    int4 a = make_int4(0, 0, 0, 0);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int4 v = __ldcs(p + i);
        a.x ^= v.x, a.y ^= v.y, a.z ^= v.z, a.w ^= v.w;
    }
    if ((a.x ^ a.y ^ a.z ^ a.w) == 0x7e57ab1e) *sink = a.x;  // keeps the loads; never true for zeros
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static float median(float *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_f);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

static double hbm_bandwidth(int sms) {
    size_t bytes = (size_t)2 << 30;
    void *buf;
    int *sink;
    CK(cudaMalloc(&buf, bytes));
    CK(cudaMalloc(&sink, sizeof(int)));
    CK(cudaMemset(buf, 0, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[10];
    for (int r = -2; r < 10; r++) {
        CK(cudaEventRecord(e0));
        k_read<<<sms * 8, 512>>>((const int4 *)buf, bytes / 16, sink);
        CK(cudaGetLastError());
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        if (r >= 0) CK(cudaEventElapsedTime(&t[r], e0, e1));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(buf));
    CK(cudaFree(sink));
    return (double)bytes / (median(t, 10) * 1e-3);
}

// ---------------------------------------------------------------- cases ---

#define MAXS 256

typedef struct {
    char name[64];
    int nq, nkv, hd, kvdt, ps;
    int n_seqs, qlen[MAXS], kvlen[MAXS];  // a sequence's tokens sit at positions kvlen - qlen .. kvlen - 1
    int ldq_pad, ldo_pad, seq_off;        // extra columns of q and out; seq_start[0]
    int prefill;                          // report TFLOP/s rather than KV GB/s
    int expect_fast;                      // the tensor-core path must take it
} acase;

typedef struct {
    double err;   // max relative error on the checked tokens
    float us;     // median time (0: not timed)
    double kv_bytes, flops;
    int path;     // 1 simple, 2 tensor cores
    int pad_ok;   // out padding untouched
} result;

typedef struct {
    int reps, flush, timing, full_check;
    void *l2buf;  // flushed (written) before each timed rep
    size_t l2bytes;
} lab;

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

// Runs one case in one mode; the reference is double precision from the hash.
static result run_case(const acase *c, int mode, const lab *L) {
    result res;
    memset(&res, 0, sizeof res);
    const int nq = c->nq, nkv = c->nkv, hd = c->hd, ps = c->ps, ns = c->n_seqs, G = nq / nkv;
    const size_t esz = c->kvdt == 2 ? 2 : 4;
    int n = 0, max_pages = 1, max_ctx = 1;
    for (int s = 0; s < ns; s++) {
        n += c->qlen[s];
        int pg = (c->kvlen[s] + ps - 1) / ps;
        max_pages = pg > max_pages ? pg : max_pages;
        max_ctx = c->kvlen[s] > max_ctx ? c->kvlen[s] : max_ctx;
    }
    // pages: a shuffled pool, handed out to the sequences in order
    int pool = 0;
    for (int s = 0; s < ns; s++) pool += (c->kvlen[s] + ps - 1) / ps;
    if (pool < 1) pool = 1;
    int *perm = (int *)malloc((size_t)pool * sizeof(int));
    for (int i = 0; i < pool; i++) perm[i] = i;
    for (int i = pool - 1; i > 0; i--) {
        int j = (int)(rnd32() % (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    const size_t ldp = (size_t)max_pages;
    int *table = (int *)calloc((size_t)ns * ldp, sizeof(int)), *pos = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    int *seq_start = (int *)malloc((size_t)(ns + 1) * sizeof(int)), *seq_of = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    int used = 0, t = 0;
    seq_start[0] = c->seq_off;
    for (int s = 0; s < ns; s++) {
        for (int i = 0; i < (c->kvlen[s] + ps - 1) / ps; i++) table[(size_t)s * ldp + i] = perm[used++];
        for (int i = 0; i < c->qlen[s]; i++, t++) pos[t] = c->kvlen[s] - c->qlen[s] + i, seq_of[t] = s;
        seq_start[s + 1] = seq_start[s] + c->qlen[s];
    }
    for (t = 0; t < n; t++) res.flops += 4.0 * (pos[t] + 1) * hd * G * nkv;
    for (int s = 0; s < ns; s++) res.kv_bytes += 2.0 * c->kvlen[s] * nkv * hd * esz;

    const size_t ldq = (size_t)nq * hd + c->ldq_pad, ldo = (size_t)nq * hd + c->ldo_pad;
    const size_t page_elems = (size_t)2 * nkv * ps * hd, kv_elems = (size_t)pool * page_elems;
    void *d_kv, *d_ws = NULL;
    float *d_q, *d_out;
    int *d_pos, *d_table, *d_ss;
    CK(cudaMalloc(&d_kv, kv_elems * esz));
    CK(cudaMalloc(&d_q, (size_t)n * ldq * sizeof(float)));
    CK(cudaMalloc(&d_out, (size_t)n * ldo * sizeof(float)));
    CK(cudaMalloc(&d_pos, (size_t)n * sizeof(int)));
    CK(cudaMalloc(&d_table, (size_t)ns * ldp * sizeof(int)));
    CK(cudaMalloc(&d_ss, (size_t)(ns + 1) * sizeof(int)));
    size_t ws_bytes = lm_cuda_attention_workspace_bytes(n, nq, max_ctx, hd);
    CK(cudaMalloc(&d_ws, ws_bytes));
    k_fill_kv<<<1024, 256>>>(d_kv, kv_elems, c->kvdt, nkv, ps, hd);
    CK(cudaGetLastError());
    k_fill_q<<<1024, 256>>>(d_q, (size_t)n, ldq, (size_t)nq * hd);
    CK(cudaGetLastError());
    CK(cudaMemset(d_out, 0xff, (size_t)n * ldo * sizeof(float)));
    CK(cudaMemcpy(d_pos, pos, (size_t)n * sizeof(int), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_table, table, (size_t)ns * ldp * sizeof(int), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_ss, seq_start, (size_t)(ns + 1) * sizeof(int), cudaMemcpyHostToDevice));

#define CALL()                                                                                                  \
    lm_cuda_attention_mode(d_q, ldq, d_out, ldo, n, nq, d_ss, ns, d_table, ldp, d_pos, d_kv, c->kvdt, ps, nkv, hd, \
                           d_ws, ws_bytes, mode, 0)
    CK((cudaError_t)CALL());
    res.path = lm_cuda_attention_last_path();
    CK(cudaDeviceSynchronize());

    // ------------------------------------------------------------- check
    float *out = (float *)malloc((size_t)n * ldo * sizeof(float));
    CK(cudaMemcpy(out, d_out, (size_t)n * ldo * sizeof(float), cudaMemcpyDeviceToHost));
    res.pad_ok = 1;
    for (t = 0; t < n; t++)
        for (size_t j = (size_t)nq * hd; j < ldo; j++) {
            uint32_t u;
            memcpy(&u, &out[(size_t)t * ldo + j], 4);
            if (u != 0xffffffffu) res.pad_ok = 0;
        }
    // tokens to check: all, or first / middle / last of the first, middle and last sequence
    char *chk = (char *)calloc((size_t)(n > 0 ? n : 1), 1);
    if (L->full_check) memset(chk, 1, (size_t)n);
    else {
        int ss[3] = {0, ns / 2, ns - 1};
        for (int i = 0; i < 3; i++) {
            int a = seq_start[ss[i]] - seq_start[0], b = seq_start[ss[i] + 1] - seq_start[0];
            if (b > a) chk[a] = chk[(a + b) / 2] = chk[b - 1] = 1;
        }
    }
    double maxd = 0, maxr = 0;
    double *K = NULL, *V = NULL, *sc = (double *)malloc((size_t)max_ctx * sizeof(double));
    K = (double *)malloc((size_t)max_ctx * hd * sizeof(double));
    V = (double *)malloc((size_t)max_ctx * hd * sizeof(double));
    for (int s = 0; s < ns; s++) {
        int a = seq_start[s] - seq_start[0], b = seq_start[s + 1] - seq_start[0], any = 0;
        for (t = a; t < b; t++) any |= chk[t];
        if (!any) continue;
        for (int kh = 0; kh < nkv; kh++) {
            for (int p = 0; p < c->kvlen[s]; p++) {
                size_t base = (size_t)table[(size_t)s * ldp + p / ps] * page_elems + ((size_t)kh * ps + p % ps) * hd;
                for (int d = 0; d < hd; d++) {
                    K[(size_t)p * hd + d] = kv_value(base + d, c->kvdt, nkv, ps, hd);
                    V[(size_t)p * hd + d] = kv_value(base + (size_t)nkv * ps * hd + d, c->kvdt, nkv, ps, hd);
                }
            }
            for (t = a; t < b; t++) {
                if (!chk[t]) continue;
                for (int h = kh * G; h < (kh + 1) * G; h++) {
                    double mx = -INFINITY, sum = 0;
                    for (int p = 0; p <= pos[t]; p++) {
                        double dot = 0;
                        for (int d = 0; d < hd; d++) {
                            size_t qi = (size_t)t * ldq + (size_t)h * hd + d;
                            dot += (double)(hval(qi, SEED_Q) * Q_SCALE) * K[(size_t)p * hd + d];
                        }
                        sc[p] = dot / sqrt((double)hd);
                        mx = sc[p] > mx ? sc[p] : mx;
                    }
                    for (int p = 0; p <= pos[t]; p++) sum += (sc[p] = exp(sc[p] - mx));
                    for (int d = 0; d < hd; d++) {
                        double o = 0;
                        for (int p = 0; p <= pos[t]; p++) o += sc[p] * V[(size_t)p * hd + d];
                        o /= sum;
                        double g = out[(size_t)t * ldo + (size_t)h * hd + d], e = fabs(g - o);
                        if (e != e) e = INFINITY;
                        maxd = e > maxd ? e : maxd;
                        maxr = fabs(o) > maxr ? fabs(o) : maxr;
                    }
                }
            }
        }
    }
    res.err = maxd == 0 ? 0 : maxr == 0 ? INFINITY : maxd / maxr;

    // ------------------------------------------------------------ timing
    if (L->timing) {
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        int reps = mode == LM_CUDA_ATTN_SIMPLE && res.flops > 1e11 ? 3 : L->reps;
        float *ts = (float *)malloc((size_t)reps * sizeof(float));
        for (int r = -3; r < reps; r++) {
            if (L->flush) CK(cudaMemsetAsync(L->l2buf, r & 0xff, L->l2bytes, 0));
            CK(cudaEventRecord(e0, 0));
            CK((cudaError_t)CALL());
            CK(cudaEventRecord(e1, 0));
            CK(cudaEventSynchronize(e1));
            if (r >= 0) CK(cudaEventElapsedTime(&ts[r], e0, e1));
        }
        res.us = median(ts, reps) * 1000.0f;
        free(ts);
        CK(cudaEventDestroy(e0));
        CK(cudaEventDestroy(e1));
    }
#undef CALL
    free(perm), free(table), free(pos), free(seq_start), free(seq_of), free(out), free(chk), free(K), free(V), free(sc);
    void *bufs[7] = {d_kv, d_q, d_out, d_pos, d_table, d_ss, d_ws};
    for (int i = 0; i < 7; i++) CK(cudaFree(bufs[i]));
    return res;
}

// ---------------------------------------------------------------- report ---

static int n_fail;

static void report(const acase *c, int mode, result r, double bw, double tol) {
    const char *path = r.path == 2 ? (mode == LM_CUDA_ATTN_BF16 ? "tc-bf16" : "tc") : "simple";
    int ok = r.err <= tol && r.pad_ok && (!c->expect_fast || mode == LM_CUDA_ATTN_SIMPLE || r.path == 2);
    if (!ok) n_fail++;
    char t[32] = "-", gbs[32] = "-", tf[32] = "-", pct[32] = "-";
    if (r.us > 0) {
        snprintf(t, sizeof t, "%.1f", r.us);
        if (c->prefill) snprintf(tf, sizeof tf, "%.1f", r.flops / (r.us * 1e-6) * 1e-12);
        else {
            double g = r.kv_bytes / (r.us * 1e-6);
            snprintf(gbs, sizeof gbs, "%.0f", g * 1e-9);
            if (bw > 0) snprintf(pct, sizeof pct, "%.0f%%", 100.0 * g / bw);
        }
    }
    printf("%-36s %-8s %10s %9s %8s %6s %12.2e  %s%s%s\n", c->name, path, t, gbs, tf, pct, r.err, ok ? "PASS" : "FAIL",
           r.pad_ok ? "" : " (out padding written)",
           c->expect_fast && mode != LM_CUDA_ATTN_SIMPLE && r.path != 2 ? " (fell back to the simple kernel)" : "");
    fflush(stdout);
}

static void header(void) {
    printf("%-36s %-8s %10s %9s %8s %6s %12s  %s\n", "shape", "path", "time us", "KV GB/s", "TFLOP/s", "%BW",
           "max rel err", "check");
}

static acase uniform(const char *model, int nq, int nkv, int hd, int batch, int ctx, int prefill) {
    acase c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s %s %d/%d/%d %s%d c%d", prefill ? "prefill" : "decode", model, nq, nkv, hd,
             prefill ? "s" : "b", batch, ctx);
    c.nq = nq, c.nkv = nkv, c.hd = hd, c.kvdt = 2, c.ps = 16, c.n_seqs = batch, c.prefill = prefill;
    c.expect_fast = 1;
    for (int s = 0; s < batch; s++) c.qlen[s] = prefill ? ctx : 1, c.kvlen[s] = ctx;
    return c;
}

// Small cases, every token checked: both kernels of the fast path, mixed
// batches, splits, strides, the fallbacks.
static void quick(const lab *L) {
    static acase cs[32];
    int nc = 0;
    // mixed: decode, chunked prefill after 60 cached positions, 3 tokens (decode tile), empty, long decode
    const int mq[5] = {1, 40, 3, 0, 1}, mk[5] = {100, 100, 37, 0, 700};
    const int shapes[][3] = {{8, 2, 128}, {16, 2, 128}, {2, 2, 128}, {8, 2, 64}, {32, 4, 128}, {64, 2, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        acase *c = &cs[nc++];
        memset(c, 0, sizeof *c);
        c->nq = shapes[i][0], c->nkv = shapes[i][1], c->hd = shapes[i][2], c->kvdt = 2, c->ps = 16, c->n_seqs = 5;
        c->seq_off = 7, c->expect_fast = 1;
        for (int s = 0; s < 5; s++) c->qlen[s] = mq[s], c->kvlen[s] = mk[s];
        snprintf(c->name, sizeof c->name, "mixed %d/%d/%d", c->nq, c->nkv, c->hd);
    }
    // splits: one long decode; two prefill sequences with context (few tiles: chunks over the KV axis)
    {
        acase *c = &cs[nc++];
        *c = uniform("", 32, 8, 128, 1, 3000, 0);
        snprintf(c->name, sizeof c->name, "split decode 32/8/128 c3000");
        c = &cs[nc++];
        memset(c, 0, sizeof *c);
        c->nq = 8, c->nkv = 2, c->hd = 128, c->kvdt = 2, c->ps = 16, c->n_seqs = 2, c->expect_fast = 1;
        c->qlen[0] = 64, c->kvlen[0] = 900, c->qlen[1] = 17, c->kvlen[1] = 530;
        snprintf(c->name, sizeof c->name, "split prefill 8/2/128");
        c = &cs[nc++];
        *c = uniform("", 8, 1, 64, 3, 1500, 0);
        snprintf(c->name, sizeof c->name, "split decode 8/1/64 b3 c1500");
    }
    // strides and page sizes: padded q rows, out rows not a multiple of 4 floats, 8- and 32-position pages
    for (int v = 0; v < 3; v++) {
        acase *c = &cs[nc++];
        memset(c, 0, sizeof *c);
        c->nq = 8, c->nkv = 2, c->hd = 128, c->kvdt = 2, c->n_seqs = 5, c->seq_off = 3, c->expect_fast = 1;
        for (int s = 0; s < 5; s++) c->qlen[s] = mq[s], c->kvlen[s] = mk[s];
        c->ps = v == 0 ? 16 : v == 1 ? 8 : 32;
        c->ldq_pad = v == 0 ? 6 : 2, c->ldo_pad = v == 0 ? 3 : 1;
        snprintf(c->name, sizeof c->name, "strides ps%d ldq+%d ldo+%d", c->ps, c->ldq_pad, c->ldo_pad);
    }
    // the op test's shapes (hd 24 and f32 take the simple kernel)
    const int ts[][3] = {{24, 6, 2}, {64, 8, 2}, {128, 8, 1}, {128, 2, 2}};
    for (int k = 0; k < 4; k++)
        for (int f = 0; f < 2; f++) {
            acase *c = &cs[nc++];
            memset(c, 0, sizeof *c);
            c->hd = ts[k][0], c->nq = ts[k][1], c->nkv = ts[k][2], c->kvdt = f ? 0 : 2, c->ps = 16, c->n_seqs = 3;
            c->qlen[0] = 71, c->kvlen[0] = 111, c->qlen[1] = 7, c->kvlen[1] = 8, c->qlen[2] = 1, c->kvlen[2] = 41;
            c->expect_fast = !f && c->hd != 24;
            snprintf(c->name, sizeof c->name, "op-test %d/%d/%d %s", c->nq, c->nkv, c->hd, f ? "f32" : "bf16");
        }
    // head_dim the fast path does not take
    {
        acase *c = &cs[nc++];
        *c = uniform("", 4, 2, 256, 2, 300, 0);
        snprintf(c->name, sizeof c->name, "fallback 4/2/256 b2 c300");
        c->expect_fast = 0;
        c = &cs[nc++];
        *c = uniform("", 4, 2, 96, 2, 130, 1);
        snprintf(c->name, sizeof c->name, "fallback 4/2/96 s2 c130");
        c->expect_fast = 0;
    }
    header();
    for (int i = 0; i < nc; i++) {
        acase *c = &cs[i];
        double tol = c->kvdt == 2 ? 1e-3 : 1e-5;
        report(c, LM_CUDA_ATTN_AUTO, run_case(c, LM_CUDA_ATTN_AUTO, L), 0, tol);
        if (c->expect_fast) report(c, LM_CUDA_ATTN_SIMPLE, run_case(c, LM_CUDA_ATTN_SIMPLE, L), 0, tol);
        if (c->expect_fast && i < 2) report(c, LM_CUDA_ATTN_BF16, run_case(c, LM_CUDA_ATTN_BF16, L), 0, 2e-2);
    }
}

int main(int argc, char **argv) {
    lab L = {20, 1, 1, 0, NULL, 0};
    int is_quick = 0, with_simple = 0, with_bf16 = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) is_quick = 1;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) L.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warm-l2")) L.flush = 0;
        else if (!strcmp(argv[i], "--simple")) with_simple = 1;
        else if (!strcmp(argv[i], "--no-bf16")) with_bf16 = 0;
        else {
            fprintf(stderr, "usage: %s [--quick] [-r reps] [--warm-l2] [--simple] [--no-bf16]\n", argv[0]);
            return 2;
        }
    }
    if (L.reps < 1) L.reps = 1;
    int dev = 0, sms = 0;
    struct cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    printf("device: %s, %d SMs, sm_%d%d\n", prop.name, sms, prop.major, prop.minor);
    if (is_quick) {
        L.timing = 0, L.full_check = 1;
        quick(&L);
        printf("%s: %d check(s) failed\n", n_fail ? "FAIL" : "ok", n_fail);
        return n_fail ? 1 : 0;
    }
    double bw = hbm_bandwidth(sms);
    printf("HBM read bandwidth: %.0f GB/s (streaming read of 2 GiB, median of 10)\n", bw * 1e-9);
    L.l2bytes = (size_t)256 << 20;
    CK(cudaMalloc(&L.l2buf, L.l2bytes));
    printf("timing: median of %d reps after 3 warm-ups, %s; error: sampled tokens vs a double CPU reference\n\n",
           L.reps, L.flush ? "L2 flushed (256 MiB memset) before each" : "L2 warm");
    header();
    const struct {
        const char *name;
        int nq, nkv;
    } models[2] = {{"mixtral", 32, 8}, {"qwen3", 32, 4}};
    const int batches[4] = {1, 16, 64, 256}, ctxs[3] = {256, 1024, 4096};
    for (int m = 0; m < 2; m++)
        for (int b = 0; b < 4; b++)
            for (int x = 0; x < 3; x++) {
                acase c = uniform(models[m].name, models[m].nq, models[m].nkv, 128, batches[b], ctxs[x], 0);
                report(&c, LM_CUDA_ATTN_AUTO, run_case(&c, LM_CUDA_ATTN_AUTO, &L), bw, 1e-3);
                if (with_simple) report(&c, LM_CUDA_ATTN_SIMPLE, run_case(&c, LM_CUDA_ATTN_SIMPLE, &L), bw, 1e-3);
            }
    const int seqs[2] = {1, 16}, lens[2] = {128, 2048};
    for (int m = 0; m < 2; m++)
        for (int s = 0; s < 2; s++)
            for (int x = 0; x < 2; x++) {
                acase c = uniform(models[m].name, models[m].nq, models[m].nkv, 128, seqs[s], lens[x], 1);
                report(&c, LM_CUDA_ATTN_AUTO, run_case(&c, LM_CUDA_ATTN_AUTO, &L), bw, 1e-3);
                if (with_bf16) report(&c, LM_CUDA_ATTN_BF16, run_case(&c, LM_CUDA_ATTN_BF16, &L), bw, 2e-2);
                if (with_simple) report(&c, LM_CUDA_ATTN_SIMPLE, run_case(&c, LM_CUDA_ATTN_SIMPLE, &L), bw, 1e-3);
            }
    printf("\nKV GB/s: K and V bytes of every sequence's context read once, per second; %%BW: of the measured HBM read\n"
           "bandwidth. TFLOP/s (prefill): 4 * hd * visible positions per query head and token (causal), per second.\n"
           "tc: tensor cores, q and p as bf16 hi + lo (default); tc-bf16: one bf16 term (tolerance 2e-2); simple:\n"
           "one warp per token and head.\n");
    printf("%s: %d check(s) failed\n", n_fail ? "FAIL" : "ok", n_fail);
    CK(cudaFree(L.l2buf));
    return n_fail ? 1 : 0;
}
