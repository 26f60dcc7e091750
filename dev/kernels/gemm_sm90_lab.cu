// nvcc -O2 -std=c++17 -Iinclude -Isrc -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -o build/dev/gemm_sm90_lab dev/kernels/gemm_sm90_lab.cu src/kernels/cuda/gemm_sm90.cu src/kernels/cuda/gemm.cu src/kernels/cuda/basic.cu src/kernels/cuda/probe.cu
//
// Kernel lab of the Hopper GEMM (src/kernels/cuda/gemm_sm90.cu) against the
// mma.sync large path of gemm.cu (lm_cuda_gg_run with force = 2, k_gg_large),
// on the GPU (built by `make -C dev/kernels sm90`, run from anywhere).
//
// Cases: the MoE expert GEMMs of Mixtral-8x7B (H 4096, I 14336, 8 experts,
// top-2) and Qwen3-30B-A3B (H 2048, I 768, 128 experts, top-8) at M routed
// tokens (random top-k routing, groups padded to 16 rows): gate+up (SwiGLU,
// bf16 h, A gathered through token_of) and down (f32 out, A = packed h rows
// whose padding rows hold NaN); plus dense projections M x N x K =
// 8192 x 4096 x 4096 (+ f32 bias) and 8192 x 4096 x 14336.
//
// Check (each case, each variant, before timing): both kernels on the same
// random bf16 data, outputs poisoned (0xff bytes: NaN) before each run. Per
// packed row: relative L2 of (sm90 - large) <= 1e-2, every value of both
// finite (i.e. written), and padding rows (past a group's count) still
// poison in the sm90 output. A failure prints the row, its group, the
// first column that differs and both values.
// Timing: CUDA events around one launch, L2 flushed (256 MB memset) before
// each repetition, median of -r (default 10) after 2 warm-ups. TFLOP/s
// count the routed rows only (2 * rows * K * O; gate+up: O = 2 I). A
// watchdog stops the program (exit 3) if a kernel runs past 20 s: the
// mbarrier waits have no timeout.
//
//   gemm_sm90_lab [-s mixtral,qwen3,dense|all] [-m 512,2048,4096,8192] [-r reps]
//                 [-v 1,2,3] (sm90 variants to run; 0 = the launcher's choice) [-q] (no checks)
// Variants (lm_cuda_gg_sm90_describe prints them): 1 = 128x256 tiles, 4
// stages; 2 = 128x128, 6 stages; 3 = variant 1 without the consumers'
// fence.proxy.async (to measure its cost; not used by the launcher).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_sm90.h"

#define CK(x)                                                                                       \
    do {                                                                                            \
        cudaError_t e_ = (cudaError_t)(x);                                                          \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd_u() {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return g_rng;
}

__global__ void k_fill_bf16(uint16_t *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12, h ^= (uint32_t)(i >> 32) * 0x9e3779b9u;
        float v = ((h >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale;
        __nv_bfloat16 b = __float2bfloat16(v);
        p[i] = *(uint16_t *)&b;
    }
}

// rows whose valid flag is 0 get NaN (0xffff) in all ld columns
__global__ void k_nan_rows(uint16_t *p, size_t ld, int rows, const int *valid) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x)
        if (!valid[r])
            for (size_t c = threadIdx.x; c < ld; c += blockDim.x) p[(size_t)r * ld + c] = 0xffff;
}

// Per row: sum (got - ref)^2, sum ref^2, count of bad values (valid row: a
// non-finite value in either output; padding row: got is not the poison).
__global__ void k_cmp(const void *got, const void *ref, int bf16, size_t ldo, int O, const int *valid, int rows,
                      double *stats) {
    __shared__ double s[3][256];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        double d2 = 0, r2 = 0, bad = 0;
        const bool v = valid[r];
        for (int c = threadIdx.x; c < O; c += blockDim.x) {
            size_t i = (size_t)r * ldo + c;
            float g, f;
            uint32_t graw;
            if (bf16) {
                uint16_t gb = ((const uint16_t *)got)[i], fb = ((const uint16_t *)ref)[i];
                graw = gb == 0xffff ? 0xffffffffu : 0;
                g = __uint_as_float((uint32_t)gb << 16), f = __uint_as_float((uint32_t)fb << 16);
            } else {
                graw = ((const uint32_t *)got)[i];
                g = __uint_as_float(graw), f = ((const float *)ref)[i];
            }
            if (!v) {
                bad += graw != 0xffffffffu;
                continue;
            }
            if (!isfinite(g) || !isfinite(f)) {
                bad += 1;
                continue;
            }
            d2 += ((double)g - f) * ((double)g - f), r2 += (double)f * f;
        }
        s[0][threadIdx.x] = d2, s[1][threadIdx.x] = r2, s[2][threadIdx.x] = bad;
        __syncthreads();
        for (int o = blockDim.x / 2; o > 0; o >>= 1) {
            if ((int)threadIdx.x < o)
                for (int x = 0; x < 3; x++) s[x][threadIdx.x] += s[x][threadIdx.x + o];
            __syncthreads();
        }
        if (threadIdx.x == 0)
            for (int x = 0; x < 3; x++) stats[(size_t)r * 3 + x] = s[x][0];
        __syncthreads();
    }
}

// ------------------------------------------------------------------ state ---
struct bufs {
    uint16_t *w;              // all weights
    uint16_t *x;              // activations (tokens or packed rows)
    void *out_s9, *out_ref;
    int *token_of, *counts, *valid;
    const void **tab;
    double *stats;
    void *flush;
    size_t flush_bytes;
};
static bufs B;
static cudaStream_t g_st;
static cudaEvent_t g_ev0, g_ev1;
static int g_fails;

static double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Waits for ev; a kernel that has not finished after 20 s is taken as hung.
static void wait_or_die(cudaEvent_t ev, const char *what) {
    double t0 = now_s();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) {
            fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
            exit(1);
        }
        if (now_s() - t0 > 20) {
            printf("\nWATCHDOG: %s still running after 20 s (hung on an mbarrier?); exiting\n", what);
            fflush(stdout);
            _exit(3);
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

struct gcase {
    std::string name;   // shape and GEMM
    int M;              // tokens (MoE) or rows (dense)
    lm_cuda_gg p;       // the call (force and variant set per run)
    int rows;           // packed rows (output rows)
    double flops;
    std::vector<int> valid, group_of, first;  // per packed row: valid, its group; per group: first row
};

// kernel: 0 = large (gemm.cu), v >= 1 = sm90 variant v, -1 = sm90 auto
static int launch(const gcase &c, int kernel, void *out) {
    lm_cuda_gg p = c.p;
    p.out = out;
    if (kernel == 0) {
        p.force = 2;
        return lm_cuda_gg_run(&p, g_st);
    }
    int e = lm_cuda_gg_sm90_set_variant(kernel < 0 ? 0 : kernel);
    if (e) return e;
    return lm_cuda_gg_sm90_run(&p, g_st);
}

static const char *kname(int kernel) {
    static char b[32];
    if (kernel == 0) return "large";
    if (kernel < 0) return "sm90-auto";
    snprintf(b, sizeof b, "sm90-v%d", kernel);
    return b;
}

// Runs `kernel` and the reference on poisoned outputs, compares. true: pass.
static bool check(const gcase &c, int kernel) {
    const bool bf = c.p.swiglu;
    const size_t esz = bf ? 2 : 4, bytes = (size_t)c.rows * c.p.ldo * esz;
    CK(cudaMemsetAsync(B.out_s9, 0xff, bytes, g_st));
    CK(cudaMemsetAsync(B.out_ref, 0xff, bytes, g_st));
    CK(launch(c, 0, B.out_ref));
    CK(launch(c, kernel, B.out_s9));
    k_cmp<<<2048, 256, 0, g_st>>>(B.out_s9, B.out_ref, bf, c.p.ldo, c.p.O, B.valid, c.rows, B.stats);
    CK(cudaGetLastError());
    CK(cudaEventRecord(g_ev1, g_st));
    wait_or_die(g_ev1, (c.name + " check").c_str());
    std::vector<double> st((size_t)c.rows * 3);
    CK(cudaMemcpy(st.data(), B.stats, st.size() * sizeof(double), cudaMemcpyDeviceToHost));
    double worst = 0;
    int worst_r = -1, bad_rows = 0, first_bad = -1;
    long long bad_vals = 0;
    for (int r = 0; r < c.rows; r++) {
        double d2 = st[3 * r], r2 = st[3 * r + 1], bad = st[3 * r + 2];
        double rel = c.valid[r] ? sqrt(d2 / (r2 > 0 ? r2 : 1)) : 0;
        bool ok = bad == 0 && rel <= 1e-2;
        if (!ok) {
            bad_rows++, bad_vals += (long long)bad;
            if (first_bad < 0) first_bad = r;
        }
        if (c.valid[r] && !(rel <= worst)) worst = rel, worst_r = r;
    }
    if (!bad_rows) {
        printf("  check %-9s PASS: worst row rel L2 %.2e (row %d), all %d valid rows written, padding untouched\n",
               kname(kernel), worst, worst_r, c.rows);
        return true;
    }
    // say where: the first bad row, its group and the first column that differs
    int r = first_bad, g = c.group_of[r];
    std::vector<uint8_t> got(c.p.O * esz), ref(c.p.O * esz);
    CK(cudaMemcpy(got.data(), (char *)B.out_s9 + (size_t)r * c.p.ldo * esz, got.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(ref.data(), (char *)B.out_ref + (size_t)r * c.p.ldo * esz, ref.size(), cudaMemcpyDeviceToHost));
    auto val = [&](const std::vector<uint8_t> &v, int col) {
        if (bf) {
            uint32_t u = (uint32_t)((const uint16_t *)v.data())[col] << 16;
            float f;
            memcpy(&f, &u, 4);
            return f;
        }
        return ((const float *)v.data())[col];
    };
    double rms = sqrt(st[3 * r + 1] / std::max(1, c.p.O));
    int col = -1;
    for (int k = 0; k < c.p.O && col < 0; k++) {
        float a = val(got, k), b = val(ref, k);
        bool differs = c.valid[r] ? !(fabs((double)a - b) <= 0.05 * rms + 1e-3 * fabs(b)) || !isfinite(a) : !isnan(a);
        if (differs) col = k;
    }
    printf("  check %-9s FAIL: %d bad rows (%lld bad values); first: packed row %d (%s, group %d, row %d of it), "
           "rel L2 %.3e",
           kname(kernel), bad_rows, bad_vals, r, c.valid[r] ? "valid" : "padding", g, r - c.first[g],
           c.valid[r] ? sqrt(st[3 * r] / std::max(st[3 * r + 1], 1e-300)) : 0.0);
    if (col >= 0) printf(", column %d: sm90 %.6g, large %.6g", col, val(got, col), val(ref, col));
    printf("\n");
    return false;
}

// median time in us of `reps` launches (2 warm-ups), L2 flushed before each
static double time_it(const gcase &c, int kernel, int reps) {
    std::vector<float> ts;
    void *out = kernel == 0 ? B.out_ref : B.out_s9;
    for (int r = 0; r < reps + 2; r++) {
        CK(cudaMemsetAsync(B.flush, r & 0xff, B.flush_bytes, g_st));
        CK(cudaEventRecord(g_ev0, g_st));
        CK(launch(c, kernel, out));
        CK(cudaEventRecord(g_ev1, g_st));
        wait_or_die(g_ev1, (c.name + " " + kname(kernel)).c_str());
        float ms;
        CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
        if (r >= 2) ts.push_back(ms * 1e3f);
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

struct shape {
    const char *name;
    int H, I, E, k;
};
static const shape SHAPES[] = {{"mixtral", 4096, 14336, 8, 2}, {"qwen3", 2048, 768, 128, 8}};
static const int BLK = 16;  // group padding (as the engine's align uses)

// Routing and packed layout for M tokens, top-k of E (distinct experts per token).
static void route(const shape &s, int M, std::vector<int> &counts, std::vector<int> &first, std::vector<int> &token_of,
                  int *rows) {
    counts.assign(s.E, 0);
    std::vector<int> sel((size_t)M * s.k);
    for (int t = 0; t < M; t++)
        for (int i = 0; i < s.k; i++) {
            int e;
            bool dup;
            do {
                e = (int)(rnd_u() % (uint64_t)s.E), dup = false;
                for (int j = 0; j < i; j++) dup |= sel[(size_t)t * s.k + j] == e;
            } while (dup);
            sel[(size_t)t * s.k + i] = e;
            counts[e]++;
        }
    first.assign(s.E, 0);
    int row = 0;
    for (int e = 0; e < s.E; e++) first[e] = row, row += (counts[e] + BLK - 1) / BLK * BLK;
    *rows = row;
    token_of.assign(row, -1);
    std::vector<int> next = first;
    for (int t = 0; t < M; t++)
        for (int i = 0; i < s.k; i++) token_of[next[sel[(size_t)t * s.k + i]]++] = t;
}

struct row_result {
    std::string name;
    int M;
    double t_large;
    std::vector<double> t_s9;
    double flops;
};

int main(int argc, char **argv) {
    std::string which = "all", mlist = "512,2048,4096,8192", vlist = "1,2,3";
    int reps = 10, do_check = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mlist = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = std::max(1, atoi(argv[++i]));
        else if (!strcmp(argv[i], "-v") && i + 1 < argc) vlist = argv[++i];
        else if (!strcmp(argv[i], "-q")) do_check = 0;
        else {
            fprintf(stderr, "usage: gemm_sm90_lab [-s mixtral,qwen3,dense|all] [-m 512,2048,...] [-r reps] [-v 1,2,3|0] [-q]\n");
            return 2;
        }
    }
    auto ints = [](const std::string &l) {
        std::vector<int> v;
        for (const char *p = l.c_str(); *p;) {
            v.push_back(atoi(p));
            while (*p && *p != ',') p++;
            if (*p) p++;
        }
        return v;
    };
    std::vector<int> Ms = ints(mlist), vars = ints(vlist);
    for (int &v : vars)
        if (v == 0) v = -1;  // the launcher's choice
    auto want = [&](const char *n) { return which == "all" || which.find(n) != std::string::npos; };

    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device %s, sm_%d%d, %d SMs, L2 %d MB, %zu KB smem/block opt-in\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, prop.sharedMemPerBlockOptin >> 10);
    {
        lm_cuda_gg probe = {};
        probe.K = 64, probe.O = 64, probe.ldw = 64, probe.lda = 64, probe.w1_0 = (void *)16, probe.n_rows = 1;
        int sup = lm_cuda_gg_sm90_supported(&probe);
        printf("lm_cuda_gg_sm90_supported: %d%s\n", sup,
               sup ? "" : " (needs compute capability 9.0, sm_90a code in this build, cuTensorMapEncodeTiled)");
        if (!sup) {
            printf("nothing to compare\n");
            return 1;
        }
    }
    for (int v = 1; v <= lm_cuda_gg_sm90_variants(); v++)
        for (int sw = 1; sw >= 0; sw--) {
            char b[400];
            CK(lm_cuda_gg_sm90_describe(v, sw, b, sizeof b));
            printf("  %s\n", b);
        }
    printf("reference: lm_cuda_gg_run force=2 (k_gg_large, mma.sync 128x128x32, 4-stage cp.async)\n");
    printf("checks: %s; timing: median of %d reps, L2 flushed (256 MB memset) before each\n",
           do_check ? "per row rel L2 <= 1e-2, every value written, padding rows untouched" : "skipped", reps);

    // buffers sized for the largest case
    const size_t w_elems = std::max((size_t)3 * 4096 * 14336 * 8, (size_t)3 * 2048 * 768 * 128);
    const int max_rows = 8192 * 8 + 128 * BLK;  // Qwen3 at 8192 tokens
    const size_t x_elems = std::max((size_t)max_rows * 2048, (size_t)(8192 * 2 + 8 * BLK) * 14336);
    const size_t out_bytes = std::max((size_t)(8192 * 2 + 8 * BLK) * 14336 * 2, (size_t)max_rows * 4096 * 4);
    CK(cudaMalloc(&B.w, w_elems * 2));
    CK(cudaMalloc(&B.x, x_elems * 2));
    CK(cudaMalloc(&B.out_s9, out_bytes));
    CK(cudaMalloc(&B.out_ref, out_bytes));
    CK(cudaMalloc(&B.token_of, (size_t)max_rows * 4));
    CK(cudaMalloc(&B.valid, (size_t)max_rows * 4));
    CK(cudaMalloc(&B.counts, 1024 * 4));
    CK(cudaMalloc(&B.tab, 3 * 128 * sizeof(void *)));
    CK(cudaMalloc(&B.stats, (size_t)max_rows * 3 * sizeof(double)));
    B.flush_bytes = (size_t)256 << 20;
    CK(cudaMalloc(&B.flush, B.flush_bytes));
    CK(cudaStreamCreate(&g_st));
    CK(cudaEventCreate(&g_ev0));
    CK(cudaEventCreate(&g_ev1));
    double t_start = now_s();

    std::vector<row_result> results;
    auto run_case = [&](gcase &c) {
        printf("\n%s, M %d: %d output rows x %d columns, K %d (%.1f GFLOP)\n", c.name.c_str(), c.M, c.rows, c.p.O, c.p.K,
               c.flops / 1e9);
        CK(cudaMemcpy(B.valid, c.valid.data(), (size_t)c.rows * 4, cudaMemcpyHostToDevice));
        row_result rr;
        rr.name = c.name, rr.M = c.M, rr.flops = c.flops;
        if (do_check)
            for (int v : vars) g_fails += !check(c, v);
        rr.t_large = time_it(c, 0, reps);
        for (int v : vars) rr.t_s9.push_back(time_it(c, v, reps));
        printf("  time: large %.1f us (%.0f TFLOP/s)", rr.t_large, c.flops / rr.t_large / 1e6);
        for (size_t i = 0; i < vars.size(); i++)
            printf(", %s %.1f us (%.0f TFLOP/s, x%.2f)", kname(vars[i]), rr.t_s9[i], c.flops / rr.t_s9[i] / 1e6,
                   rr.t_large / rr.t_s9[i]);
        printf("\n");
        fflush(stdout);
        results.push_back(rr);
    };

    for (const shape &s : SHAPES) {
        if (!want(s.name)) continue;
        // weights: gate, up, down of each expert, [O][K] bf16, scaled so the outputs stay O(1)
        const size_t per = (size_t)s.H * s.I;
        k_fill_bf16<<<4096, 256>>>(B.w, 3 * per * s.E, 0x1234u, 1.0f / sqrtf((float)s.H));
        CK(cudaGetLastError());
        std::vector<const void *> hp(3 * s.E);
        for (int e = 0; e < s.E; e++)
            for (int m = 0; m < 3; m++) hp[m * s.E + e] = B.w + (size_t)(3 * e + m) * per;
        CK(cudaMemcpy(B.tab, hp.data(), hp.size() * sizeof(void *), cudaMemcpyHostToDevice));
        for (int M : Ms) {
            std::vector<int> counts, first, token_of;
            int rows;
            route(s, M, counts, first, token_of, &rows);
            CK(cudaMemcpy(B.counts, counts.data(), s.E * 4, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(B.token_of, token_of.data(), (size_t)rows * 4, cudaMemcpyHostToDevice));
            gcase c;
            c.M = M, c.rows = rows, c.first = first;
            c.valid.assign(rows, 0), c.group_of.assign(rows, 0);
            for (int e = 0; e < s.E; e++)
                for (int r = first[e]; r < first[e] + (counts[e] + BLK - 1) / BLK * BLK; r++)
                    c.group_of[r] = e, c.valid[r] = r < first[e] + counts[e];
            int active = 0;
            for (int x : counts) active += x > 0;
            const double routed = (double)M * s.k;

            // gate+up: A = token rows (bf16 [M][H]) gathered by token_of, SwiGLU, bf16 h [rows][I]
            k_fill_bf16<<<4096, 256>>>(B.x, (size_t)M * s.H, 0x777u + M, 1.0f);
            CK(cudaGetLastError());
            c.name = std::string(s.name) + " gate+up";
            c.p = lm_cuda_gg{};
            c.p.a = B.x, c.p.a_f32 = 0, c.p.lda = s.H, c.p.a_rows = M, c.p.a_row = B.token_of, c.p.counts = B.counts;
            c.p.n_groups = s.E, c.p.block = BLK, c.p.n_rows = (int)routed, c.p.w1 = B.tab, c.p.w2 = B.tab + s.E;
            c.p.ldw = s.H, c.p.K = s.H, c.p.O = s.I, c.p.swiglu = 1, c.p.ldo = s.I;
            c.flops = 2.0 * routed * s.H * 2 * s.I;
            printf("\n[%s M %d: %d of %d experts used, %d to %d rows per expert]", s.name, M, active, s.E,
                   *std::min_element(counts.begin(), counts.end()), *std::max_element(counts.begin(), counts.end()));
            run_case(c);

            // down: A = packed h rows (bf16 [rows][I], padding rows NaN), f32 out [rows][H]
            k_fill_bf16<<<4096, 256>>>(B.x, (size_t)rows * s.I, 0x999u + M, 1.0f);
            CK(cudaGetLastError());
            k_nan_rows<<<1024, 256>>>(B.x, s.I, rows, B.valid);
            CK(cudaGetLastError());
            c.name = std::string(s.name) + " down";
            c.p = lm_cuda_gg{};
            c.p.a = B.x, c.p.a_f32 = 0, c.p.lda = s.I, c.p.a_rows = rows, c.p.counts = B.counts, c.p.n_groups = s.E;
            c.p.block = BLK, c.p.n_rows = (int)routed, c.p.w1 = B.tab + 2 * s.E, c.p.ldw = s.I, c.p.K = s.I, c.p.O = s.H;
            c.p.ldo = s.H;
            c.flops = 2.0 * routed * s.I * s.H;
            CK(cudaMemcpy(B.valid, c.valid.data(), (size_t)rows * 4, cudaMemcpyHostToDevice));
            run_case(c);
        }
    }
    if (want("dense")) {
        // M x N x K: rows x O x K; weights from the same buffer
        const int dims[2][3] = {{8192, 4096, 4096}, {8192, 4096, 14336}};
        for (int d = 0; d < 2; d++) {
            const int M = dims[d][0], O = dims[d][1], K = dims[d][2];
            k_fill_bf16<<<4096, 256>>>(B.w, (size_t)O * K + O, 0x4242u + d, 1.0f / sqrtf((float)K));  // + the bias
            k_fill_bf16<<<4096, 256>>>(B.x, (size_t)M * K, 0x4343u + d, 1.0f);
            CK(cudaGetLastError());
            gcase c;
            char nm[64];
            snprintf(nm, sizeof nm, "dense %dx%dx%d%s", M, O, K, d == 0 ? " +bias" : "");
            c.name = nm, c.M = M, c.rows = M, c.first = {0};
            c.valid.assign(M, 1), c.group_of.assign(M, 0);
            c.p = lm_cuda_gg{};
            c.p.a = B.x, c.p.lda = K, c.p.a_rows = M, c.p.n_rows = M, c.p.w1_0 = B.w, c.p.ldw = K, c.p.K = K, c.p.O = O;
            c.p.ldo = O;
            if (d == 0) c.p.bias = B.w + (size_t)O * K, c.p.bias_dt = 2;  // bf16 bias: the next O weights
            c.flops = 2.0 * M * K * O;
            run_case(c);
        }
    }

    // summary
    printf("\n%-22s %6s %12s %9s", "shape", "M", "large us", "TFLOP/s");
    for (int v : vars) printf(" %13s %9s %7s", (std::string(kname(v)) + " us").c_str(), "TFLOP/s", "x large");
    printf("\n");
    for (auto &r : results) {
        printf("%-22s %6d %12.1f %9.0f", r.name.c_str(), r.M, r.t_large, r.flops / r.t_large / 1e6);
        for (size_t i = 0; i < vars.size(); i++)
            printf(" %13.1f %9.0f %7.2f", r.t_s9[i], r.flops / r.t_s9[i] / 1e6, r.t_large / r.t_s9[i]);
        printf("\n");
    }
    // the MoE layer's two GEMMs together (route/align/combine not included)
    printf("\nMoE layer GEMMs (gate+up + down):\n");
    for (size_t i = 0; i + 1 < results.size(); i++) {
        const row_result &a = results[i], &b = results[i + 1];
        if (a.name.find("gate+up") == std::string::npos || b.name.find("down") == std::string::npos || a.M != b.M) continue;
        double fl = a.flops + b.flops;
        printf("%-22s %6d  large %7.0f TFLOP/s", a.name.substr(0, a.name.find(' ')).c_str(), a.M,
               fl / (a.t_large + b.t_large) / 1e6);
        for (size_t v = 0; v < vars.size(); v++)
            printf("  %s %4.0f TFLOP/s", kname(vars[v]), fl / (a.t_s9[v] + b.t_s9[v]) / 1e6);
        printf("\n");
    }
    printf("\n%s (%.1f s)\n", g_fails ? "SOME CHECKS FAILED" : do_check ? "all checks passed" : "(checks skipped)",
           now_s() - t_start);
    return g_fails ? 1 : 0;
}
