// Kernel lab: CUDA paged attention (src/kernels/cuda/attention.cu).
//   nvcc -O2 -std=c++17 -Iinclude -Isrc -gencode arch=compute_90a,code=sm_90a -o build/dev/attn_cuda dev/kernels/attn_cuda.cu src/kernels/cuda/attention.cu
//   (or: make -C dev/kernels cuda)
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
//   attn_cuda                 all shapes: correctness + timing; decode shapes
//                             through the decode kernel (dec) and the plan
//                             path (plan), a padded bucket, then the graph test
//   attn_cuda --quick         correctness only, small shapes, every token
//                             (both tensor-core paths, simple path, splits,
//                             padding rows, odd strides), plus the graph test
//   attn_cuda --graph         only the graph test: a CUDA graph of 48
//                             attention calls (one per layer, 48 KV pools)
//                             captured once, replayed after pos/pages/padding
//                             change (checked), timed per call against the
//                             same calls launched one by one
//   attn_cuda --sweep         decode shapes x decode tuning (min chunk 64..512,
//                             CTAs 100/200/400 % of the slots)
//   options: -r N reps (20), --warm-l2 (no flush), --simple (also time the
//            simple kernel), --no-bf16 (no single-bf16 rows for prefill),
//            --no-ws-init (do not register the workspace: the launcher then
//            zeroes the decode counters before each split decode call)
// Exit status 1 if any check fails; every CUDA error exits with status 2.
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
    int expect;                           // the path it must take with the default mode: 1 simple, 2 plan, 3 decode (0 any)
    int n_pad;                            // the last n_pad sequences are padding (their tokens at pos -1)
} acase;

typedef struct {
    double err;   // max relative error on the checked tokens
    float us;     // median time (0: not timed)
    double kv_bytes, flops;
    int path;     // 1 simple, 2 plan + tensor cores, 3 decode kernel
    int pad_ok;   // out padding (columns past the heads, padding rows) untouched
} result;

typedef struct {
    int reps, flush, timing, full_check, ws_init;
    void *l2buf;  // flushed (written) before each timed rep
    size_t l2bytes;
} lab;

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

// A case's host-side batch: page table (the pool shuffled), positions, seq_start.
typedef struct {
    int n, pool, max_ctx;
    size_t ldp;
    int *table, *pos, *seq_start;
} hbatch;

static void batch_make(const acase *c, hbatch *b) {
    const int ns = c->n_seqs, ps = c->ps;
    int max_pages = 1;
    b->n = 0, b->pool = 0, b->max_ctx = 1;
    for (int s = 0; s < ns; s++) {
        b->n += c->qlen[s];
        int pg = (c->kvlen[s] + ps - 1) / ps;
        max_pages = pg > max_pages ? pg : max_pages;
        b->max_ctx = c->kvlen[s] > b->max_ctx ? c->kvlen[s] : b->max_ctx;
        b->pool += pg;
    }
    if (b->pool < 1) b->pool = 1;
    b->ldp = (size_t)max_pages;
    int *perm = (int *)malloc((size_t)b->pool * sizeof(int));
    for (int i = 0; i < b->pool; i++) perm[i] = i;
    for (int i = b->pool - 1; i > 0; i--) {
        int j = (int)(rnd32() % (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    b->table = (int *)calloc((size_t)ns * b->ldp, sizeof(int));
    b->pos = (int *)malloc((size_t)(b->n > 0 ? b->n : 1) * sizeof(int));
    b->seq_start = (int *)malloc((size_t)(ns + 1) * sizeof(int));
    int used = 0, t = 0;
    b->seq_start[0] = c->seq_off;
    for (int s = 0; s < ns; s++) {
        for (int i = 0; i < (c->kvlen[s] + ps - 1) / ps; i++) b->table[(size_t)s * b->ldp + i] = perm[used++];
        for (int i = 0; i < c->qlen[s]; i++, t++) b->pos[t] = s >= ns - c->n_pad ? -1 : c->kvlen[s] - c->qlen[s] + i;
        b->seq_start[s + 1] = b->seq_start[s] + c->qlen[s];
    }
    free(perm);
}

static void batch_free(hbatch *b) { free(b->table), free(b->pos), free(b->seq_start); }

// Max relative error of out (rows ldo) against the double reference on the
// tokens marked in chk; padding rows (pos < 0) and the columns past the
// heads must still hold the 0xff fill.
static double ref_error(const acase *c, const hbatch *b, size_t ldq, size_t ldo, const float *out, const char *chk,
                        int *pad_ok) {
    const int nq = c->nq, nkv = c->nkv, hd = c->hd, ps = c->ps, ns = c->n_seqs, G = nq / nkv;
    const size_t page_elems = (size_t)2 * nkv * ps * hd;
    *pad_ok = 1;
    for (int t = 0; t < b->n; t++)
        for (size_t j = b->pos[t] < 0 ? 0 : (size_t)nq * hd; j < ldo; j++) {
            uint32_t u;
            memcpy(&u, &out[(size_t)t * ldo + j], 4);
            if (u != 0xffffffffu) *pad_ok = 0;
        }
    double maxd = 0, maxr = 0;
    double *K = (double *)malloc((size_t)b->max_ctx * hd * sizeof(double));
    double *V = (double *)malloc((size_t)b->max_ctx * hd * sizeof(double));
    double *sc = (double *)malloc((size_t)b->max_ctx * sizeof(double));
    for (int s = 0; s < ns; s++) {
        int a = b->seq_start[s] - b->seq_start[0], e = b->seq_start[s + 1] - b->seq_start[0], any = 0;
        for (int t = a; t < e; t++) any |= chk[t] && b->pos[t] >= 0;
        if (!any) continue;
        for (int kh = 0; kh < nkv; kh++) {
            for (int p = 0; p < c->kvlen[s]; p++) {
                size_t base = (size_t)b->table[(size_t)s * b->ldp + p / ps] * page_elems + ((size_t)kh * ps + p % ps) * hd;
                for (int d = 0; d < hd; d++) {
                    K[(size_t)p * hd + d] = kv_value(base + d, c->kvdt, nkv, ps, hd);
                    V[(size_t)p * hd + d] = kv_value(base + (size_t)nkv * ps * hd + d, c->kvdt, nkv, ps, hd);
                }
            }
            for (int t = a; t < e; t++) {
                if (!chk[t] || b->pos[t] < 0) continue;
                for (int h = kh * G; h < (kh + 1) * G; h++) {
                    double mx = -INFINITY, sum = 0;
                    for (int p = 0; p <= b->pos[t]; p++) {
                        double dot = 0;
                        for (int d = 0; d < hd; d++) {
                            size_t qi = (size_t)t * ldq + (size_t)h * hd + d;
                            dot += (double)(hval(qi, SEED_Q) * Q_SCALE) * K[(size_t)p * hd + d];
                        }
                        sc[p] = dot / sqrt((double)hd);
                        mx = sc[p] > mx ? sc[p] : mx;
                    }
                    for (int p = 0; p <= b->pos[t]; p++) sum += (sc[p] = exp(sc[p] - mx));
                    for (int d = 0; d < hd; d++) {
                        double o = 0;
                        for (int p = 0; p <= b->pos[t]; p++) o += sc[p] * V[(size_t)p * hd + d];
                        o /= sum;
                        double g = out[(size_t)t * ldo + (size_t)h * hd + d], er = fabs(g - o);
                        if (er != er) er = INFINITY;
                        maxd = er > maxd ? er : maxd;
                        maxr = fabs(o) > maxr ? fabs(o) : maxr;
                    }
                }
            }
        }
    }
    free(K), free(V), free(sc);
    return maxd == 0 ? 0 : maxr == 0 ? INFINITY : maxd / maxr;
}

// Tokens to check: all, or first / middle / last of the first, middle and last sequence.
static char *check_marks(const acase *c, const hbatch *b, int all) {
    char *chk = (char *)calloc((size_t)(b->n > 0 ? b->n : 1), 1);
    if (all) memset(chk, 1, (size_t)b->n);
    else {
        int ss[3] = {0, c->n_seqs / 2, c->n_seqs - 1};
        for (int i = 0; i < 3; i++) {
            int a = b->seq_start[ss[i]] - b->seq_start[0], e = b->seq_start[ss[i] + 1] - b->seq_start[0];
            if (e > a) chk[a] = chk[(a + e) / 2] = chk[e - 1] = 1;
        }
    }
    return chk;
}

// Runs one case in one mode; the reference is double precision from the hash.
static result run_case(const acase *c, int mode, const lab *L) {
    result res;
    memset(&res, 0, sizeof res);
    const int nq = c->nq, nkv = c->nkv, hd = c->hd, ps = c->ps, ns = c->n_seqs, G = nq / nkv;
    const size_t esz = c->kvdt == 2 ? 2 : 4;
    hbatch b;
    batch_make(c, &b);
    const int n = b.n;
    for (int t = 0; t < n; t++) res.flops += b.pos[t] < 0 ? 0 : 4.0 * (b.pos[t] + 1) * hd * G * nkv;
    for (int s = 0; s < ns - c->n_pad; s++) res.kv_bytes += 2.0 * c->kvlen[s] * nkv * hd * esz;

    const size_t ldq = (size_t)nq * hd + c->ldq_pad, ldo = (size_t)nq * hd + c->ldo_pad;
    const size_t page_elems = (size_t)2 * nkv * ps * hd, kv_elems = (size_t)b.pool * page_elems;
    void *d_kv, *d_ws = NULL;
    float *d_q, *d_out;
    int *d_pos, *d_table, *d_ss;
    CK(cudaMalloc(&d_kv, kv_elems * esz));
    CK(cudaMalloc(&d_q, (size_t)(n > 0 ? n : 1) * ldq * sizeof(float)));
    CK(cudaMalloc(&d_out, (size_t)(n > 0 ? n : 1) * ldo * sizeof(float)));
    CK(cudaMalloc(&d_pos, (size_t)(n > 0 ? n : 1) * sizeof(int)));
    CK(cudaMalloc(&d_table, (size_t)ns * b.ldp * sizeof(int)));
    CK(cudaMalloc(&d_ss, (size_t)(ns + 1) * sizeof(int)));
    size_t ws_bytes = lm_cuda_attention_workspace_bytes(n, nq, b.max_ctx, hd);
    CK(cudaMalloc(&d_ws, ws_bytes));
    CK(cudaMemset(d_ws, 0xab, ws_bytes));  // garbage, as a fresh allocation may hold
    if (L->ws_init) CK((cudaError_t)lm_cuda_attention_ws_init(d_ws, ws_bytes, 0));
    k_fill_kv<<<1024, 256>>>(d_kv, kv_elems, c->kvdt, nkv, ps, hd);
    CK(cudaGetLastError());
    k_fill_q<<<1024, 256>>>(d_q, (size_t)n, ldq, (size_t)nq * hd);
    CK(cudaGetLastError());
    CK(cudaMemset(d_out, 0xff, (size_t)(n > 0 ? n : 1) * ldo * sizeof(float)));
    CK(cudaMemcpy(d_pos, b.pos, (size_t)n * sizeof(int), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_table, b.table, (size_t)ns * b.ldp * sizeof(int), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_ss, b.seq_start, (size_t)(ns + 1) * sizeof(int), cudaMemcpyHostToDevice));

#define CALL()                                                                                                   \
    lm_cuda_attention_mode(d_q, ldq, d_out, ldo, n, nq, d_ss, ns, d_table, b.ldp, d_pos, d_kv, c->kvdt, ps, nkv, hd, \
                           d_ws, ws_bytes, mode, 0)
    CK((cudaError_t)CALL());
    res.path = lm_cuda_attention_last_path();
    CK(cudaDeviceSynchronize());
    // a second call on the same workspace (the decode counters must be back at zero)
    CK(cudaMemset(d_out, 0xff, (size_t)(n > 0 ? n : 1) * ldo * sizeof(float)));
    CK((cudaError_t)CALL());
    CK(cudaDeviceSynchronize());

    float *out = (float *)malloc((size_t)(n > 0 ? n : 1) * ldo * sizeof(float));
    CK(cudaMemcpy(out, d_out, (size_t)n * ldo * sizeof(float), cudaMemcpyDeviceToHost));
    char *chk = check_marks(c, &b, L->full_check);
    res.err = ref_error(c, &b, ldq, ldo, out, chk, &res.pad_ok);

    if (L->timing) {
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        int reps = (mode & 3) == LM_CUDA_ATTN_SIMPLE && res.flops > 1e11 ? 3 : L->reps;
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
    free(out), free(chk);
    batch_free(&b);
    lm_cuda_attention_ws_forget(d_ws);
    void *bufs[7] = {d_kv, d_q, d_out, d_pos, d_table, d_ss, d_ws};
    for (int i = 0; i < 7; i++) CK(cudaFree(bufs[i]));
    return res;
}

// ---------------------------------------------------------------- report ---

static int n_fail;

static const char *path_name(int path, int mode) {
    int bf = (mode & 3) == LM_CUDA_ATTN_BF16;
    return path == 3 ? (bf ? "dec-bf16" : "dec") : path == 2 ? (bf ? "plan-bf16" : "plan") : "simple";
}

static void report(const acase *c, int mode, result r, double bw, double tol) {
    const char *path = path_name(r.path, mode);
    int want = (mode & 3) == LM_CUDA_ATTN_SIMPLE ? 1 : (mode & LM_CUDA_ATTN_NO_DECODE) && c->expect == 3 ? 2 : c->expect;
    int ok = r.err <= tol && r.pad_ok && (!want || r.path == want);
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
    printf("%-40s %-9s %10s %9s %8s %6s %12.2e  %s%s", c->name, path, t, gbs, tf, pct, r.err, ok ? "PASS" : "FAIL",
           r.pad_ok ? "" : " (out padding written)");
    if (want && r.path != want) printf(" (took %s, expected %s)", path_name(r.path, mode), path_name(want, mode));
    printf("\n");
    fflush(stdout);
}

static void header(void) {
    printf("%-40s %-9s %10s %9s %8s %6s %12s  %s\n", "shape", "path", "time us", "KV GB/s", "TFLOP/s", "%BW",
           "max rel err", "check");
}

static acase uniform(const char *model, int nq, int nkv, int hd, int batch, int ctx, int prefill) {
    acase c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s %s %d/%d/%d %s%d c%d", prefill ? "prefill" : "decode", model, nq, nkv, hd,
             prefill ? "s" : "b", batch, ctx);
    c.nq = nq, c.nkv = nkv, c.hd = hd, c.kvdt = 2, c.ps = 16, c.n_seqs = batch, c.prefill = prefill;
    c.expect = prefill ? 2 : 3;
    for (int s = 0; s < batch; s++) c.qlen[s] = prefill ? ctx : 1, c.kvlen[s] = ctx;
    return c;
}

// Small cases, every token checked: both tensor-core paths, mixed batches,
// splits, strides, padding rows, the fallbacks.
static void quick(const lab *L) {
    static acase cs[48];
    int nc = 0;
    // mixed: decode, chunked prefill after 60 cached positions, 3 tokens (decode tile), empty, long decode
    const int mq[5] = {1, 40, 3, 0, 1}, mk[5] = {100, 100, 37, 0, 700};
    const int shapes[][3] = {{8, 2, 128}, {16, 2, 128}, {2, 2, 128}, {8, 2, 64}, {32, 4, 128}, {64, 2, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        acase *c = &cs[nc++];
        memset(c, 0, sizeof *c);
        c->nq = shapes[i][0], c->nkv = shapes[i][1], c->hd = shapes[i][2], c->kvdt = 2, c->ps = 16, c->n_seqs = 5;
        c->seq_off = 7, c->expect = 2;
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
        c->nq = 8, c->nkv = 2, c->hd = 128, c->kvdt = 2, c->ps = 16, c->n_seqs = 2, c->expect = 2;
        c->qlen[0] = 64, c->kvlen[0] = 900, c->qlen[1] = 17, c->kvlen[1] = 530;
        snprintf(c->name, sizeof c->name, "split prefill 8/2/128");
        c = &cs[nc++];
        *c = uniform("", 8, 1, 64, 3, 1500, 0);
        snprintf(c->name, sizeof c->name, "split decode 8/1/64 b3 c1500");
    }
    // decode kernel: varied contexts (1 .. 5000), G 32 (two row tiles), a padded bucket,
    // n == n_seqs with uneven tokens per sequence, and G 1
    {
        const int ks[12] = {1, 63, 64, 65, 129, 300, 1000, 2047, 5000, 17, 700, 128};
        acase *c = &cs[nc++];
        *c = uniform("", 32, 8, 128, 12, 1, 0);
        for (int s = 0; s < 12; s++) c->kvlen[s] = ks[s];
        c->ldq_pad = 2, c->ldo_pad = 3, c->seq_off = 5;
        snprintf(c->name, sizeof c->name, "decode 32/8/128 b12 c1..5000 ldo+3");
        c = &cs[nc++];
        *c = uniform("", 64, 2, 64, 3, 900, 0);
        c->kvlen[1] = 40;
        snprintf(c->name, sizeof c->name, "decode G32 64/2/64 b3");
        c = &cs[nc++];
        *c = uniform("", 32, 4, 128, 16, 1, 0);
        for (int s = 0; s < 16; s++) c->kvlen[s] = 50 + 377 * s;
        c->n_pad = 9;
        snprintf(c->name, sizeof c->name, "decode bucket 16, 9 padding rows");
        c = &cs[nc++];
        *c = uniform("", 8, 2, 128, 5, 1, 0);
        const int uq[5] = {2, 0, 1, 2, 0}, uk[5] = {500, 0, 90, 260, 0};  // 5 tokens, 5 sequences
        for (int s = 0; s < 5; s++) c->qlen[s] = uq[s], c->kvlen[s] = uk[s];
        snprintf(c->name, sizeof c->name, "decode kernel, tokens {2,0,1,2,0}");
        c = &cs[nc++];
        *c = uniform("", 8, 8, 64, 4, 2500, 0);
        snprintf(c->name, sizeof c->name, "decode G1 8/8/64 b4 c2500");
    }
    // strides and page sizes: padded q rows, out rows not a multiple of 4 floats, 8- and 32-position pages
    for (int v = 0; v < 3; v++) {
        acase *c = &cs[nc++];
        memset(c, 0, sizeof *c);
        c->nq = 8, c->nkv = 2, c->hd = 128, c->kvdt = 2, c->n_seqs = 5, c->seq_off = 3, c->expect = 2;
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
            c->expect = !f && c->hd != 24 ? 2 : 1;
            snprintf(c->name, sizeof c->name, "op-test %d/%d/%d %s", c->nq, c->nkv, c->hd, f ? "f32" : "bf16");
        }
    // head_dim the fast path does not take
    {
        acase *c = &cs[nc++];
        *c = uniform("", 4, 2, 256, 2, 300, 0);
        snprintf(c->name, sizeof c->name, "fallback 4/2/256 b2 c300");
        c->expect = 1;
        c = &cs[nc++];
        *c = uniform("", 4, 2, 96, 2, 130, 1);
        snprintf(c->name, sizeof c->name, "fallback 4/2/96 s2 c130");
        c->expect = 1;
    }
    header();
    for (int i = 0; i < nc; i++) {
        acase *c = &cs[i];
        double tol = c->kvdt == 2 ? 1e-3 : 1e-5;
        int fast = c->expect >= 2;
        report(c, LM_CUDA_ATTN_AUTO, run_case(c, LM_CUDA_ATTN_AUTO, L), 0, tol);
        if (c->expect == 3) report(c, LM_CUDA_ATTN_NO_DECODE, run_case(c, LM_CUDA_ATTN_NO_DECODE, L), 0, tol);
        if (fast) report(c, LM_CUDA_ATTN_SIMPLE, run_case(c, LM_CUDA_ATTN_SIMPLE, L), 0, tol);
        if (fast && (i < 2 || c->expect == 3)) report(c, LM_CUDA_ATTN_BF16, run_case(c, LM_CUDA_ATTN_BF16, L), 0, 2e-2);
    }
}

// ------------------------------------------------------------ graph test ---
// A decode step's attention as the engine will run it under a CUDA graph:
// `layers` calls (one per layer, each its own KV pool, one workspace),
// captured once; the positions, page tables and padding then change in
// device memory and the graph is replayed: the output of every layer is
// checked against the reference of the new data. Timed per call (graph time
// / layers, L2 flushed before each replay) against the same calls launched
// one by one.

static void graph_case(const char *model, int nq, int nkv, int batch, int ctx, int layers, double bw, const lab *L,
                       int check) {
    acase c = uniform(model, nq, nkv, 128, batch, ctx, 0);
    const int hd = 128, ps = 16, n = batch, ns = batch;
    // step A: every sequence at ctx; step B: contexts ctx - 37 * s (at least 1), the last quarter padding
    acase cb = c;
    for (int s = 0; s < ns; s++) cb.kvlen[s] = ctx - 37 * s > 1 ? ctx - 37 * s : 1;
    cb.n_pad = batch / 4;
    hbatch A, B;
    batch_make(&c, &A);
    batch_make(&cb, &B);  // its own shuffle of the pool: other pages
    const size_t ldq = (size_t)nq * hd, ldo = ldq, page_elems = (size_t)2 * nkv * ps * hd;
    const size_t kv_elems = (size_t)A.pool * page_elems;  // B's pool is no larger
    while (layers > 4 && (size_t)layers * kv_elems * 2 > ((size_t)16 << 30)) layers /= 2;  // 16 GB of pools at most
    snprintf(c.name, sizeof c.name, "graph %s b%d c%d x%d layers", model, batch, ctx, layers);
    void **kv = (void **)malloc((size_t)layers * sizeof(void *));
    for (int l = 0; l < layers; l++) {
        CK(cudaMalloc(&kv[l], kv_elems * 2));
        k_fill_kv<<<1024, 256>>>(kv[l], kv_elems, 2, nkv, ps, hd);
        CK(cudaGetLastError());
    }
    float *d_q, *d_out;
    int *d_pos, *d_table, *d_ss;
    void *d_ws;
    CK(cudaMalloc(&d_q, (size_t)n * ldq * sizeof(float)));
    CK(cudaMalloc(&d_out, (size_t)layers * n * ldo * sizeof(float)));
    CK(cudaMalloc(&d_pos, (size_t)n * sizeof(int)));
    CK(cudaMalloc(&d_table, (size_t)ns * A.ldp * sizeof(int)));
    CK(cudaMalloc(&d_ss, (size_t)(ns + 1) * sizeof(int)));
    size_t ws_bytes = lm_cuda_attention_workspace_bytes(n, nq, A.max_ctx, hd);
    CK(cudaMalloc(&d_ws, ws_bytes));
    CK(cudaMemset(d_ws, 0xab, ws_bytes));
    if (L->ws_init) CK((cudaError_t)lm_cuda_attention_ws_init(d_ws, ws_bytes, 0));
    k_fill_q<<<1024, 256>>>(d_q, (size_t)n, ldq, (size_t)nq * hd);
    CK(cudaGetLastError());
    auto upload = [&](const hbatch *b) {
        int *tb = (int *)calloc((size_t)ns * A.ldp, sizeof(int));  // B's table in A's row stride
        for (int s = 0; s < ns; s++)
            for (size_t i = 0; i < b->ldp; i++) tb[(size_t)s * A.ldp + i] = b->table[(size_t)s * b->ldp + i];
        CK(cudaMemcpy(d_pos, b->pos, (size_t)n * sizeof(int), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_table, tb, (size_t)ns * A.ldp * sizeof(int), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_ss, b->seq_start, (size_t)(ns + 1) * sizeof(int), cudaMemcpyHostToDevice));
        free(tb);
    };
    upload(&A);
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    auto calls = [&](cudaStream_t s) {
        for (int l = 0; l < layers; l++)
            CK((cudaError_t)lm_cuda_attention(d_q, ldq, d_out + (size_t)l * n * ldo, ldo, n, nq, d_ss, ns, d_table, A.ldp,
                                              d_pos, kv[l], 2, ps, nkv, hd, d_ws, ws_bytes, s));
    };
    calls(st);  // eager warm-up (also sets the kernels' attributes outside the capture)
    CK(cudaStreamSynchronize(st));
    const int path = lm_cuda_attention_last_path();
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    calls(st);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    int ok = 1;
    double worst = 0;
    if (check) {
        const hbatch *bs[2] = {&A, &B};
        const acase *cs2[2] = {&c, &cb};
        float *out = (float *)malloc((size_t)n * ldo * sizeof(float));
        for (int v = 0; v < 2; v++) {
            char *chk = check_marks(cs2[v], bs[v], batch <= 16);  // every token, or 9 of a larger batch
            upload(bs[v]);
            CK(cudaMemset(d_out, 0xff, (size_t)layers * n * ldo * sizeof(float)));
            CK(cudaGraphLaunch(ge, st));
            CK(cudaStreamSynchronize(st));
            for (int l = 0; l < layers; l += layers > 1 ? layers - 1 : 1) {  // first and last layer (same KV values)
                int pad_ok;
                CK(cudaMemcpy(out, d_out + (size_t)l * n * ldo, (size_t)n * ldo * sizeof(float), cudaMemcpyDeviceToHost));
                double e = ref_error(cs2[v], bs[v], ldq, ldo, out, chk, &pad_ok);
                worst = e > worst ? e : worst;
                if (!(e <= 1e-3) || !pad_ok) ok = 0;
            }
            free(chk);
        }
        free(out);
        upload(&A);
    }
    // timing: graph replay vs the same calls one by one, per call
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float tg[64], te[64];
    int reps = L->reps < 64 ? L->reps : 64;
    for (int r = -2; r < reps; r++)
        for (int mode = 0; mode < 2; mode++) {
            if (L->flush) CK(cudaMemsetAsync(L->l2buf, r & 0xff, L->l2bytes, st));
            CK(cudaEventRecord(e0, st));
            if (mode == 0) CK(cudaGraphLaunch(ge, st));
            else calls(st);
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            if (r >= 0) CK(cudaEventElapsedTime(mode == 0 ? &tg[r] : &te[r], e0, e1));
        }
    double ug = median(tg, reps) * 1000.0 / layers, ue = median(te, reps) * 1000.0 / layers;
    double bytes = 2.0 * ctx * nkv * hd * 2 * batch;
    if (!ok) n_fail++;
    printf("%-40s %-9s %9.1f %9.1f %9.0f %6.0f%% %12.2e  %s\n", c.name, path_name(path, 0), ug, ue, bytes / (ug * 1e-6) * 1e-9,
           bw > 0 ? 100.0 * bytes / (ug * 1e-6) / bw : 0.0, worst, check ? (ok ? "PASS" : "FAIL") : "-");
    fflush(stdout);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaStreamDestroy(st));
    lm_cuda_attention_ws_forget(d_ws);
    for (int l = 0; l < layers; l++) CK(cudaFree(kv[l]));
    free(kv);
    void *bufs[6] = {d_q, d_out, d_pos, d_table, d_ss, d_ws};
    for (int i = 0; i < 6; i++) CK(cudaFree(bufs[i]));
    batch_free(&A), batch_free(&B);
}

static void graph_tests(double bw, const lab *L) {
    printf("\n%-40s %-9s %9s %9s %9s %7s %12s  %s\n", "graph (per call)", "path", "graph us", "eager us", "KV GB/s",
           "%BW", "max rel err", "check");
    const struct {
        const char *name;
        int nq, nkv;
    } models[2] = {{"mixtral", 32, 8}, {"qwen3", 32, 4}};
    const int bs[3] = {1, 16, 64}, cx[3] = {256, 1024, 4096};
    for (int m = 0; m < 2; m++)
        for (int b = 0; b < 3; b++)
            for (int x = 0; x < 3; x++) graph_case(models[m].name, models[m].nq, models[m].nkv, bs[b], cx[x], 48, bw, L, m == 0);
    printf("graph us: one call's share of a replayed graph of 48 calls (fewer where 48 KV pools would pass 16 GB;\n"
           "L2 flushed before each replay); eager us: the same calls launched one by one. Checked (mixtral rows):\n"
           "after replays with new positions, page tables and a quarter of the rows padding, the first and last\n"
           "layer against the reference.\n");
}

int main(int argc, char **argv) {
    lab L = {20, 1, 1, 0, 1, NULL, 0};
    int is_quick = 0, with_simple = 0, with_bf16 = 1, only_graph = 0, sweep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) is_quick = 1;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) L.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warm-l2")) L.flush = 0;
        else if (!strcmp(argv[i], "--simple")) with_simple = 1;
        else if (!strcmp(argv[i], "--no-bf16")) with_bf16 = 0;
        else if (!strcmp(argv[i], "--graph")) only_graph = 1;
        else if (!strcmp(argv[i], "--sweep")) sweep = 1;
        else if (!strcmp(argv[i], "--no-ws-init")) L.ws_init = 0;
        else {
            fprintf(stderr, "usage: %s [--quick | --graph | --sweep] [-r reps] [--warm-l2] [--simple] [--no-bf16] "
                            "[--no-ws-init]\n", argv[0]);
            return 2;
        }
    }
    if (L.reps < 1) L.reps = 1;
    int dev = 0, sms = 0;
    struct cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    printf("device: %s, %d SMs, sm_%d%d; workspace %s\n", prop.name, sms, prop.major, prop.minor,
           L.ws_init ? "registered (lm_cuda_attention_ws_init)" : "not registered");
    L.l2bytes = (size_t)256 << 20;
    CK(cudaMalloc(&L.l2buf, L.l2bytes));
    if (is_quick) {
        L.timing = 0, L.full_check = 1;
        quick(&L);
        graph_case("mixtral", 32, 8, 5, 700, 3, 0, &L, 1);
        graph_case("qwen3", 32, 4, 16, 300, 3, 0, &L, 1);
        printf("%s: %d check(s) failed\n", n_fail ? "FAIL" : "ok", n_fail);
        return n_fail ? 1 : 0;
    }
    double bw = hbm_bandwidth(sms);
    printf("HBM read bandwidth: %.0f GB/s (streaming read of 2 GiB, median of 10)\n", bw * 1e-9);
    printf("timing: median of %d reps after 3 warm-ups, %s; error: sampled tokens vs a double CPU reference\n\n",
           L.reps, L.flush ? "L2 flushed (256 MiB memset) before each" : "L2 warm");
    const struct {
        const char *name;
        int nq, nkv;
    } models[2] = {{"mixtral", 32, 8}, {"qwen3", 32, 4}};
    const int batches[4] = {1, 16, 64, 256}, ctxs[3] = {256, 1024, 4096};
    if (only_graph) {
        graph_tests(bw, &L);
    } else if (sweep) {
        const int mcs[4] = {64, 128, 256, 512}, pcts[3] = {100, 200, 400};
        printf("%-40s %-9s %10s %9s %8s %6s %12s  %s\n", "decode sweep: shape, min chunk, CTAs %", "path", "time us",
               "KV GB/s", "", "%BW", "max rel err", "check");
        for (int m = 0; m < 2; m++)
            for (int b = 0; b < 4; b++)
                for (int x = 0; x < 3; x++)
                    for (int mc = 0; mc < 4; mc++)
                        for (int pc = 0; pc < 3; pc++) {
                            acase c = uniform(models[m].name, models[m].nq, models[m].nkv, 128, batches[b], ctxs[x], 0);
                            char nm[40];
                            memcpy(nm, c.name, sizeof nm - 1);
                            nm[sizeof nm - 1] = 0;
                            snprintf(c.name, sizeof c.name, "%s mc%d %d%%", nm, mcs[mc], pcts[pc]);
                            lm_cuda_attention_tune(mcs[mc], pcts[pc]);
                            report(&c, LM_CUDA_ATTN_AUTO, run_case(&c, LM_CUDA_ATTN_AUTO, &L), bw, 1e-3);
                        }
        lm_cuda_attention_tune(0, 0);
    } else {
        header();
        for (int m = 0; m < 2; m++)
            for (int b = 0; b < 4; b++)
                for (int x = 0; x < 3; x++) {
                    acase c = uniform(models[m].name, models[m].nq, models[m].nkv, 128, batches[b], ctxs[x], 0);
                    report(&c, LM_CUDA_ATTN_AUTO, run_case(&c, LM_CUDA_ATTN_AUTO, &L), bw, 1e-3);
                    report(&c, LM_CUDA_ATTN_NO_DECODE, run_case(&c, LM_CUDA_ATTN_NO_DECODE, &L), bw, 1e-3);
                    if (with_simple) report(&c, LM_CUDA_ATTN_SIMPLE, run_case(&c, LM_CUDA_ATTN_SIMPLE, &L), bw, 1e-3);
                }
        {  // a bucket of 64 with 13 real rows at 1024 positions
            acase c = uniform("mixtral", 32, 8, 128, 64, 1024, 0);
            c.n_pad = 51;
            snprintf(c.name, sizeof c.name, "decode mixtral bucket 64, 13 real, c1024");
            report(&c, LM_CUDA_ATTN_AUTO, run_case(&c, LM_CUDA_ATTN_AUTO, &L), bw, 1e-3);
            acase r = uniform("mixtral", 32, 8, 128, 13, 1024, 0);
            report(&r, LM_CUDA_ATTN_AUTO, run_case(&r, LM_CUDA_ATTN_AUTO, &L), bw, 1e-3);
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
               "dec: the decode kernel (one launch); plan: plan + persistent tensor-core kernels (two launches; the path\n"
               "before this change, and the one prefill and mixed batches take); -bf16: q and p as one bf16 term\n"
               "(tolerance 2e-2); simple: one warp per token and head. Each row also checks a second call on the same\n"
               "workspace.\n");
        graph_tests(bw, &L);
    }
    printf("%s: %d check(s) failed\n", n_fail ? "FAIL" : "ok", n_fail);
    CK(cudaFree(L.l2buf));
    return n_fail ? 1 : 0;
}
