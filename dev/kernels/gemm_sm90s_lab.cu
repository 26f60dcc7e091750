// nvcc -O2 -std=c++17 -Iinclude -Isrc -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -o build/dev/gemm_sm90s_lab dev/kernels/gemm_sm90s_lab.cu src/kernels/cuda/gemm_sm90_stream.cu src/kernels/cuda/gemm_sm90.cu src/kernels/cuda/gemm.cu src/kernels/cuda/basic.cu src/kernels/cuda/probe.cu
//
// Kernel lab of the small-M streaming Hopper GEMM (src/kernels/cuda/
// gemm_sm90_stream.cu) on the GPU (built by `make -C dev/kernels sm90s`).
//
// Measures the HBM read bandwidth (the probe kernel, as moe_cuda does) and
// the mma.sync peak, then:
// - MoE expert GEMMs of Mixtral-8x7B (H 4096, I 14336, 8 experts, top-2) and
//   Qwen3-30B-A3B (H 2048, I 768, 128 experts, top-8) at M tokens: random
//   router logits, lm_cuda_route_align (groups padded to 16 rows), then
//   gate+up (SwiGLU, f32 token rows gathered through token_of, bf16 h, as
//   the executor calls it) and down (bf16 packed h rows whose padding rows
//   hold NaN, f32 out). Bound = bytes of the experts the batch routes to /
//   HBM bandwidth.
// - the whole layer, route_align -> gate+up -> down -> combine_fast with
//   programmatic dependent launches (pdl 1, 1, 2, 1), once with
//   lm_cuda_gg_run's GEMMs and once with the sm90s GEMMs; bound = the
//   active experts' bytes / bandwidth (the router GEMM is not included).
// - dense projections (f32 activations, bf16 weights, f32 out): QKV
//   4096->6144, O 4096->4096 (+ bf16 bias), routers 4096->8 and 2048->128,
//   LM heads 4096->32000 and 2048->151936; bound = max(weight bytes / BW,
//   flops / mma.sync peak).
// A smoke section runs every variant on small grouped and dense calls
// first (a hang is then named within seconds: gemm_sm90s_lab.sh re-runs
// without the variant that hung). Each GEMM is checked (before timing, for every sm90s variant and for
// lm_cuda_gg_run's choice) against lm_cuda_gg_run with force = 2 (k_gg_large)
// on the same data, outputs poisoned (0xff) before each run: per row
// relative L2 <= 1e-2, every value of a valid row finite, padding rows still
// poison; then run again and compared bit for bit (stream-K is
// deterministic). The layer with sm90s GEMMs is checked against the layer
// with lm_cuda_gg_run's (per token relative L2 <= 1e-2).
// Timing: CUDA events around the launches, L2 flushed (256 MB memset)
// before each launch, median of -r (default 10) after 2 warm-ups, the
// kernels of a case interleaved within each repetition (clock drift). A
// watchdog exits (status 3) if a kernel runs past 20 s (mbarrier waits have
// no timeout). Kernels: "gg" = lm_cuda_gg_run's choice (k_gg_stream or
// k_gg_large), "sm90" = lm_cuda_gg_sm90_run (the large-M TMA kernel), and
// the sm90s variants (knob sets):
//   -v auto            (the launcher's choices)
//   -v kc=2 / kc=4     (64-k chunks per stage; the default is 1)
//   -v mode=whole      (whole items round robin: no stream-K)
//   -v f32nt=64        (f32 rows staged as f32 up to blocks of 64, not 32:
//                       no conversion kernel, fewer stages)
//   and mode=stream, stages=N (weight ring), astages=N (activation ring),
//   nt=N, ctas=N (defaults: the lab's first five)
// several knobs joined by ',' (e.g. -v kc=4,stages=3), several -v allowed.
//
//   gemm_sm90s_lab [-s mixtral,qwen3,dense|all] [-m 1,2,4,...] [-D 1,16,64,256] [-r reps]
//                  [-v KNOBS]... [-q (no checks)] [-x (no gg / sm90 timings)]
// Exit status 1 if any check fails.
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
#include "kernels/cuda/gemm_sm90_stream.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/probe.h"

#define CK(x)                                                                                       \
    do {                                                                                            \
        cudaError_t e_ = (cudaError_t)(x);                                                          \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(2);                                                                                \
        }                                                                                           \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float rndf() {  // uniform in [-1, 1)
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (2.0 / 16777216.0) - 1.0);
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
__global__ void k_fill_f32(float *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2246822519u ^ seed;
        h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
        p[i] = ((h >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale;
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
        const bool v = valid ? valid[r] != 0 : true;
        for (int c = threadIdx.x; c < O; c += blockDim.x) {
            const size_t i = (size_t)r * ldo + c;
            float g, f;
            bool poison;
            if (bf16) {
                const uint16_t gb = ((const uint16_t *)got)[i], fb = ((const uint16_t *)ref)[i];
                poison = gb == 0xffff;
                g = __uint_as_float((uint32_t)gb << 16), f = __uint_as_float((uint32_t)fb << 16);
            } else {
                const uint32_t graw = ((const uint32_t *)got)[i];
                poison = graw == 0xffffffffu;
                g = __uint_as_float(graw), f = ((const float *)ref)[i];
            }
            if (!v) {
                bad += !poison;
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
// bytes that differ between a and b
__global__ void k_bytes_differ(const unsigned char *a, const unsigned char *b, size_t n, unsigned long long *cnt) {
    unsigned long long c = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        c += a[i] != b[i];
    if (c) atomicAdd(cnt, c);
}

// ------------------------------------------------------------------ state ---
static cudaStream_t g_st;
static cudaEvent_t g_ev0, g_ev1;
static void *g_flush;
static const size_t FLUSH_BYTES = (size_t)256 << 20;
static double g_bw, g_peak;
static int g_fails, g_reps = 10;
static void *g_ws;
static size_t g_ws_bytes;
static double *g_stats;
static unsigned long long *g_cnt;
static std::string g_running = "-";  // the kernel variant in flight (named by the watchdog)

static double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Waits for ev; a kernel that has not finished after 20 s is taken as hung.
static void wait_or_die(cudaEvent_t ev, const char *what) {
    const double t0 = now_s();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) {
            fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
            exit(2);
        }
        if (now_s() - t0 > 20) {
            printf("\nWATCHDOG: variant %s: %s still running after 20 s (hung on an mbarrier?); exiting\n",
                   g_running.c_str(), what);
            fflush(stdout);
            _exit(3);
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

static double measure_bw() {
    const size_t bytes = (size_t)4 << 30;
    void *buf;
    CK(cudaMalloc(&buf, bytes));
    CK(cudaMemset(buf, 1, bytes));
    unsigned long long *sink;
    CK(cudaMalloc(&sink, 8));
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    double best = 0;
    for (int r = 0; r < 6; r++) {
        CK(cudaEventRecord(g_ev0, g_st));
        CK(lm_cuda_probe_read(buf, bytes / 16, sink, sms * 8, g_st));
        CK(cudaEventRecord(g_ev1, g_st));
        wait_or_die(g_ev1, "bandwidth probe");
        float ms;
        CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
        best = std::max(best, bytes / (ms * 1e-3));
    }
    CK(cudaFree(buf));
    CK(cudaFree(sink));
    return best;
}

static double measure_peak() {
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    float *sink;
    CK(cudaMalloc(&sink, 4));
    const int blocks = sms * 4;
    const double per_iter = (double)blocks * (LM_CUDA_PROBE_THREADS / 32) * LM_CUDA_PROBE_MMA_CHAINS * LM_CUDA_PROBE_MMA_FLOPS;
    long iters = 4096;
    double best = 0;
    for (int r = 0; r < 4; r++) {
        CK(cudaEventRecord(g_ev0, g_st));
        CK(lm_cuda_probe_mma(iters, 2u + r, sink, blocks, g_st));
        CK(cudaEventRecord(g_ev1, g_st));
        wait_or_die(g_ev1, "mma probe");
        float ms;
        CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
        if (r == 0 && ms > 0) iters = (long)(iters * std::min(64.0, std::max(1.0, 20.0 / ms)));
        else best = std::max(best, per_iter * iters / (ms * 1e-3));
    }
    CK(cudaFree(sink));
    return best;
}

// ------------------------------------------------------------- variants ---
// kind: 0 an sm90s knob set, 1 lm_cuda_gg_run (auto), 2 lm_cuda_gg_sm90_run (auto), 3 the reference (force 2)
struct variant {
    std::string name;
    int kind = 0;
    lm_cuda_gg_sm90s_knobs kn = {};
};

static bool parse_knobs(const std::string &spec, variant *v) {
    v->name = spec, v->kind = 0, v->kn = lm_cuda_gg_sm90s_knobs();
    if (spec == "auto") return true;
    size_t at = 0;
    while (at < spec.size()) {
        size_t nx = spec.find(',', at);
        std::string kv = spec.substr(at, nx == std::string::npos ? std::string::npos : nx - at);
        size_t eq = kv.find('=');
        if (eq == std::string::npos) return false;
        std::string k = kv.substr(0, eq), val = kv.substr(eq + 1);
        int iv = atoi(val.c_str());
        if (k == "kc") v->kn.kc = iv;
        else if (k == "stages") v->kn.stages = iv;
        else if (k == "astages") v->kn.astages = iv;
        else if (k == "nt") v->kn.nt = iv;
        else if (k == "ctas") v->kn.ctas = iv;
        else if (k == "f32nt") v->kn.f32_nt = iv;
        else if (k == "mode") v->kn.mode = val == "stream" ? 1 : val == "whole" ? 2 : val == "auto" ? 0 : -1;
        else return false;
        if (v->kn.mode < 0) return false;
        if (nx == std::string::npos) break;
        at = nx + 1;
    }
    return lm_cuda_gg_sm90s_set_knobs(&v->kn) == 0 && lm_cuda_gg_sm90s_set_knobs(NULL) == 0;
}

// Launches one GEMM of kind v with output out.
static int launch(const lm_cuda_gg &p0, const variant &v, void *out) {
    lm_cuda_gg p = p0;
    p.out = out;
    g_running = v.name;
    if (v.kind == 1) return lm_cuda_gg_run(&p, g_st);
    if (v.kind == 2) return lm_cuda_gg_sm90_supported(&p) ? lm_cuda_gg_sm90_run(&p, g_st) : (int)cudaErrorNotSupported;
    if (v.kind == 3) {
        p.force = 2, p.pdl = 0;
        return lm_cuda_gg_run(&p, g_st);
    }
    int e = lm_cuda_gg_sm90s_set_knobs(&v.kn);
    if (e) return e;
    return lm_cuda_gg_sm90s_run(&p, g_st);
}

// ------------------------------------------------------------------ cases ---
struct gcase {
    std::string name;  // shape and GEMM
    int M;             // tokens (MoE) or rows (dense)
    lm_cuda_gg p;      // the call (out set per run)
    int rows;          // output rows (packed rows or dense rows)
    double bytes;      // weight bytes the call must read (active experts)
    double flops;      // dense: 2 x rows x K x O (the bound's other term); MoE: 0 (bound = bytes)
    int *valid;        // device [rows] or NULL (all valid)
};

static void *g_out, *g_ref, *g_out2;  // outputs under test, reference, determinism re-run

static std::string plan_of(const gcase &c, const variant &v) {
    char b[512];
    lm_cuda_gg p = c.p;
    p.out = g_out;
    if (v.kind == 1) {
        lm_cuda_gg_describe(&p, b, sizeof b);
        return std::string("gg: ") + b;
    }
    if (v.kind != 0) return "";
    if (lm_cuda_gg_sm90s_set_knobs(&v.kn) || lm_cuda_gg_sm90s_describe(&p, b, sizeof b)) return "(describe failed)";
    return b;
}

// Runs v and the reference on poisoned outputs, compares; then v again, bit for bit.
static bool check(const gcase &c, const variant &v) {
    const bool bf = c.p.swiglu != 0;
    const size_t esz = bf ? 2 : 4, bytes = (size_t)c.rows * c.p.ldo * esz;
    CK(cudaMemsetAsync(g_out, 0xff, bytes, g_st));
    CK(launch(c.p, v, g_out));
    k_cmp<<<2048, 256, 0, g_st>>>(g_out, g_ref, bf, c.p.ldo, c.p.O, c.valid, c.rows, g_stats);
    CK(cudaGetLastError());
    CK(cudaMemsetAsync(g_out2, 0xff, bytes, g_st));
    CK(launch(c.p, v, g_out2));
    CK(cudaMemsetAsync(g_cnt, 0, sizeof *g_cnt, g_st));
    k_bytes_differ<<<1024, 256, 0, g_st>>>((const unsigned char *)g_out, (const unsigned char *)g_out2, bytes, g_cnt);
    CK(cudaGetLastError());
    CK(cudaEventRecord(g_ev1, g_st));
    wait_or_die(g_ev1, (c.name + " check " + v.name).c_str());
    std::vector<double> st((size_t)c.rows * 3);
    CK(cudaMemcpy(st.data(), g_stats, st.size() * sizeof(double), cudaMemcpyDeviceToHost));
    unsigned long long differ = 0;
    CK(cudaMemcpy(&differ, g_cnt, sizeof differ, cudaMemcpyDeviceToHost));
    std::vector<int> valid(c.rows, 1);
    if (c.valid) CK(cudaMemcpy(valid.data(), c.valid, (size_t)c.rows * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    int bad_rows = 0, first_bad = -1;
    long long bad_vals = 0;
    for (int r = 0; r < c.rows; r++) {
        const double d2 = st[3 * r], r2 = st[3 * r + 1], bad = st[3 * r + 2];
        const double rel = valid[r] ? sqrt(d2 / (r2 > 0 ? r2 : 1)) : 0;
        if (bad != 0 || !(rel <= 1e-2)) {
            bad_rows++, bad_vals += (long long)bad;
            if (first_bad < 0) first_bad = r;
        }
        if (valid[r] && !(rel <= worst)) worst = rel;
    }
    const bool ok = !bad_rows && !differ;
    if (!ok || v.kind == 0)
        printf("    check %-22s %s: worst row rel L2 %.2e%s", v.name.c_str(), ok ? "PASS" : "FAIL", worst,
               differ ? ", NOT DETERMINISTIC" : "");
    if (bad_rows)
        printf(", %d bad rows (%lld bad values), first: row %d (%s)", bad_rows, bad_vals, first_bad,
               valid[first_bad] ? "valid" : "padding");
    if (!ok || v.kind == 0) printf("\n");
    return ok;
}

// median time in us of g_reps launches of each of vars (2 warm-ups), L2
// flushed before each; the kernels interleaved within each repetition, so
// that clock and temperature drift reach them alike. NaN where a kernel
// does not take the call.
static std::vector<double> time_all(const gcase &c, const std::vector<variant> &vars) {
    std::vector<std::vector<float>> ts(vars.size());
    std::vector<bool> take(vars.size());
    for (size_t i = 0; i < vars.size(); i++) {
        lm_cuda_gg p = c.p;
        p.out = g_out;
        take[i] = vars[i].kind != 2 || lm_cuda_gg_sm90_supported(&p);
    }
    for (int r = 0; r < g_reps + 2; r++)
        for (size_t i = 0; i < vars.size(); i++) {
            if (!take[i]) continue;
            CK(cudaMemsetAsync(g_flush, (r + (int)i) & 0xff, FLUSH_BYTES, g_st));
            CK(cudaEventRecord(g_ev0, g_st));
            CK(launch(c.p, vars[i], g_out));
            CK(cudaEventRecord(g_ev1, g_st));
            wait_or_die(g_ev1, (c.name + " " + vars[i].name).c_str());
            float ms;
            CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
            if (r >= 2) ts[i].push_back(ms * 1e3f);
        }
    std::vector<double> med(vars.size(), NAN);
    for (size_t i = 0; i < vars.size(); i++)
        if (take[i]) {
            std::sort(ts[i].begin(), ts[i].end());
            med[i] = ts[i][ts[i].size() / 2];
        }
    return med;
}

struct row {
    std::string what;
    double bound;
    std::vector<double> us;  // per kernel column
};
static std::vector<row> g_rows;
static std::vector<variant> g_cols;  // timed kernels (sm90s variants, then gg, sm90)

static void run_case(const gcase &c, bool do_check, const std::vector<variant> &vars) {
    const double bound = std::max(c.bytes / g_bw, c.flops / g_peak) * 1e6;
    printf("\n%s, M %d: %d output rows x %d columns, K %d, %.1f MB of weights, bound %.1f us%s\n", c.name.c_str(), c.M,
           c.rows, c.p.O, c.p.K, c.bytes / 1e6, bound, c.flops / g_peak > c.bytes / g_bw ? " (flops)" : "");
    for (const variant &v : vars)
        if (v.kind <= 1) printf("    %-12s %s\n", v.name.c_str(), plan_of(c, v).c_str());
    if (do_check) {
        const size_t bytes = (size_t)c.rows * c.p.ldo * (c.p.swiglu ? 2 : 4);
        CK(cudaMemsetAsync(g_ref, 0xff, bytes, g_st));
        variant ref;
        ref.kind = 3, ref.name = "ref";
        CK(launch(c.p, ref, g_ref));
        for (const variant &v : vars)
            if (v.kind <= 1) g_fails += !check(c, v);
    }
    row r;
    char b[96];
    snprintf(b, sizeof b, "%s M=%d", c.name.c_str(), c.M);
    r.what = b, r.bound = bound;
    printf("    time:");
    r.us = time_all(c, vars);
    for (size_t i = 0; i < vars.size(); i++)
        if (r.us[i] == r.us[i])
            printf(" %s %.1f us (%.0f GB/s, x%.2f)", vars[i].name.c_str(), r.us[i], c.bytes / (r.us[i] * 1e-6) / 1e9,
                   r.us[i] / bound);
    printf("\n");
    fflush(stdout);
    g_rows.push_back(r);
}

// ------------------------------------------------------------------ MoE ---
struct shape {
    const char *name;
    int H, I, E, k;
};
static const shape SHAPES[] = {{"mixtral", 4096, 14336, 8, 2}, {"qwen3", 2048, 768, 128, 8}};
static const int BLK = 16;

struct layer_row {
    std::string what;
    double bound, us_gg, us_s9s, err;
};
static std::vector<layer_row> g_layers;

int main(int argc, char **argv) {
    std::string which = "all", mlist = "1,2,4,8,16,32,64,128,256,512", dlist = "1,16,64,256";
    int do_check = 1, others = 1;
    std::vector<variant> vars;
    for (int i = 1; i < argc; i++) {
        variant v;
        if (!strcmp(argv[i], "-s") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mlist = argv[++i];
        else if (!strcmp(argv[i], "-D") && i + 1 < argc) dlist = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) g_reps = std::max(1, atoi(argv[++i]));
        else if (!strcmp(argv[i], "-v") && i + 1 < argc && parse_knobs(argv[i + 1], &v)) vars.push_back(v), i++;
        else if (!strcmp(argv[i], "-q")) do_check = 0;
        else if (!strcmp(argv[i], "-x")) others = 0;
        else {
            fprintf(stderr, "usage: gemm_sm90s_lab [-s mixtral,qwen3,dense|all] [-m 1,2,...] [-D 1,16,64,256] [-r reps]\n"
                            "                      [-v auto|kc=N,stages=N,astages=N,nt=N,mode=stream|whole,ctas=N,f32nt=N]... [-q] [-x]\n");
            return 2;
        }
    }
    if (vars.empty())
        for (const char *s : {"auto", "kc=2", "kc=4", "mode=whole", "f32nt=64"}) {
            variant v;
            parse_knobs(s, &v), vars.push_back(v);
        }
    if (others) {
        variant g, s9;
        g.name = "gg", g.kind = 1, s9.name = "sm90", s9.kind = 2;
        vars.push_back(g), vars.push_back(s9);
    }
    g_cols = vars;
    auto ints = [](const std::string &l) {
        std::vector<int> v;
        for (const char *p = l.c_str(); *p;) {
            v.push_back(atoi(p));
            while (*p && *p != ',') p++;
            if (*p) p++;
        }
        return v;
    };
    const std::vector<int> Ms = ints(mlist), Ds = ints(dlist);
    auto want = [&](const char *n) { return which == "all" || which.find(n) != std::string::npos; };

    const double t_start = now_s();
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    CK(cudaStreamCreateWithFlags(&g_st, cudaStreamNonBlocking));
    CK(cudaEventCreate(&g_ev0));
    CK(cudaEventCreate(&g_ev1));
    g_bw = measure_bw(), g_peak = measure_peak();
    printf("device %s, sm_%d%d, %d SMs, L2 %d MB, %zu KB smem/block opt-in; HBM read %.0f GB/s (4 GiB probe, best of "
           "6); mma.sync bf16 peak %.0f TFLOP/s\n",
           prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize >> 20,
           prop.sharedMemPerBlockOptin >> 10, g_bw / 1e9, g_peak / 1e12);
    {
        lm_cuda_gg probe = {};
        probe.K = 64, probe.O = 64, probe.ldw = 64, probe.lda = 64, probe.w1_0 = (void *)256, probe.a = (void *)256;
        probe.n_rows = 1, probe.ldo = 64;
        const int sup = lm_cuda_gg_sm90s_supported(&probe);
        printf("lm_cuda_gg_sm90s_supported: %d%s\n", sup,
               sup ? "" : " (needs compute capability 9.0, sm_90a code in this build, cuTensorMapEncodeTiled)");
        if (!sup) return 1;
    }
    printf("columns:");
    for (auto &v : vars) printf(" [%s]", v.name.c_str());
    printf("\nchecks: %s; timing: median of %d reps, L2 flushed (256 MB memset) before each\n",
           do_check ? "vs lm_cuda_gg_run force=2, per row rel L2 <= 1e-2, all written, padding untouched, bitwise rerun"
                    : "skipped",
           g_reps);

    // buffers for the largest case
    const int maxM = std::max(*std::max_element(Ms.begin(), Ms.end()), *std::max_element(Ds.begin(), Ds.end()));
    size_t w_bytes = 0, out_bytes = 0, x_bytes = 0, h_bytes = 0;
    int max_rows = 0;
    for (const shape &s : SHAPES) {
        const int rmax = maxM * s.k + s.E * (BLK - 1);
        max_rows = std::max(max_rows, rmax);
        w_bytes = std::max(w_bytes, (size_t)3 * s.H * s.I * s.E * 2);
        out_bytes = std::max(out_bytes, std::max((size_t)rmax * s.H * 4, (size_t)rmax * s.I * 2));
        x_bytes = std::max(x_bytes, (size_t)maxM * s.H * 4);
        h_bytes = std::max(h_bytes, (size_t)rmax * s.I * 2);
    }
    const int DK[] = {4096, 4096, 4096, 2048, 4096, 2048}, DO[] = {6144, 4096, 8, 128, 32000, 151936};
    const char *DN[] = {"qkv 4096>6144", "o 4096>4096 +bias", "router 4096>8", "router 2048>128",
                        "lm_head 4096>32000", "lm_head 2048>151936"};
    for (int d = 0; d < 6; d++) {
        w_bytes = std::max(w_bytes, (size_t)DK[d] * DO[d] * 2 + (size_t)DO[d] * 2);
        out_bytes = std::max(out_bytes, (size_t)maxM * DO[d] * 4);
        x_bytes = std::max(x_bytes, (size_t)maxM * DK[d] * 4);
        max_rows = std::max(max_rows, maxM);
    }
    uint16_t *W;
    float *X;
    void *H, *scratch;
    CK(cudaMalloc(&W, w_bytes));
    CK(cudaMalloc(&X, x_bytes));
    CK(cudaMalloc(&H, h_bytes));
    CK(cudaMalloc(&scratch, x_bytes / 2));
    CK(cudaMalloc(&g_out, out_bytes));
    CK(cudaMalloc(&g_ref, out_bytes));
    CK(cudaMalloc(&g_out2, out_bytes));
    CK(cudaMalloc(&g_stats, (size_t)max_rows * 3 * sizeof(double)));
    CK(cudaMalloc(&g_cnt, sizeof *g_cnt));
    CK(cudaMalloc(&g_flush, FLUSH_BYTES));
    // one workspace for both GEMM families (zeroed once; every call leaves it zero)
    g_ws_bytes = (size_t)96 << 20;
    for (const shape &s : SHAPES) {
        g_ws_bytes = std::max(g_ws_bytes, lm_cuda_gg_sm90s_ws_bytes(maxM * s.k, s.E, s.I, s.H, 1));
        g_ws_bytes = std::max(g_ws_bytes, lm_cuda_gg_sm90s_ws_bytes(maxM * s.k, s.E, s.H, s.I, 0));
        g_ws_bytes = std::max(g_ws_bytes, lm_cuda_gg_ws_bytes(maxM * s.k, s.E, s.H, s.I));
    }
    for (int d = 0; d < 6; d++) {
        g_ws_bytes = std::max(g_ws_bytes, lm_cuda_gg_sm90s_ws_bytes(maxM, 0, DO[d], DK[d], 0));
        g_ws_bytes = std::max(g_ws_bytes, lm_cuda_gg_ws_bytes(maxM, 0, DO[d], DK[d]));
    }
    CK(cudaMalloc(&g_ws, g_ws_bytes));
    CK(cudaMemset(g_ws, 0, g_ws_bytes));
    int *valid;
    CK(cudaMalloc(&valid, (size_t)max_rows * 4));

    // routing buffers (route_align's outputs)
    const int maxk = 8, maxE = 128, rmax_all = maxM * maxk + maxE * (BLK - 1), ntl = rmax_all / BLK + maxE;
    float *logits, *rw, *lay_out, *lay_ref, *Y;
    int *sel, *row_of, *token_of, *tiles, *n_tiles, *counts;
    CK(cudaMalloc(&logits, (size_t)maxM * maxE * 4));
    CK(cudaMalloc(&rw, (size_t)maxM * maxk * 4));
    CK(cudaMalloc(&sel, (size_t)maxM * maxk * 4));
    CK(cudaMalloc(&row_of, (size_t)maxM * maxk * 4));
    CK(cudaMalloc(&token_of, (size_t)rmax_all * 4));
    CK(cudaMalloc(&tiles, (size_t)2 * ntl * 4));
    CK(cudaMalloc(&n_tiles, 4));
    CK(cudaMalloc(&counts, (size_t)maxE * 4));
    CK(cudaMalloc(&lay_out, (size_t)maxM * 4096 * 4));
    CK(cudaMalloc(&lay_ref, (size_t)maxM * 4096 * 4));
    CK(cudaMalloc(&Y, (size_t)rmax_all * 4096 * 4));
    const void **tab;
    CK(cudaMalloc(&tab, 3 * 128 * sizeof(void *)));

    // ---- smoke: every variant once on small grouped (gather, f32 rows; packed
    // bf16 rows) and dense calls, checked, before anything long runs
    {
        printf("\n[smoke: every variant on small grouped and dense calls]\n");
        const int K = 1024, O = 384, G = 4, cs[G] = {1, 0, 3, 17};
        k_fill_bf16<<<4096, 256, 0, g_st>>>(W, (size_t)3 * G * O * K + O, 0x51u, 1.0f / 32);
        k_fill_f32<<<1024, 256, 0, g_st>>>(X, (size_t)64 * K, 0x52u, 1.0f);
        k_fill_bf16<<<1024, 256, 0, g_st>>>((uint16_t *)H, (size_t)64 * K, 0x53u, 1.0f);
        CK(cudaGetLastError());
        std::vector<const void *> hp(3 * G);
        for (int i = 0; i < 3 * G; i++) hp[i] = W + (size_t)i * O * K;
        CK(cudaMemcpy(tab, hp.data(), hp.size() * sizeof(void *), cudaMemcpyHostToDevice));
        std::vector<int> hc(cs, cs + G), vrow, tok;
        int rows = 0;
        for (int g = 0; g < G; g++) {
            const int pad = (cs[g] + BLK - 1) / BLK * BLK;
            for (int r = 0; r < pad; r++) vrow.push_back(r < cs[g]), tok.push_back(r < cs[g] ? (g * 7 + r) % 40 : -1);
            rows += pad;
        }
        CK(cudaMemcpy(counts, hc.data(), G * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(token_of, tok.data(), (size_t)rows * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(valid, vrow.data(), (size_t)rows * 4, cudaMemcpyHostToDevice));
        gcase c;
        c.M = 40, c.rows = rows, c.valid = valid, c.bytes = 0, c.flops = 0;
        c.p = lm_cuda_gg();
        c.p.a = X, c.p.a_f32 = 1, c.p.lda = K, c.p.a_rows = 40, c.p.a_row = token_of, c.p.counts = counts;
        c.p.n_groups = G, c.p.block = BLK, c.p.n_rows = 21, c.p.w1 = tab, c.p.w2 = tab + G, c.p.ldw = K, c.p.K = K;
        c.p.O = O, c.p.swiglu = 1, c.p.ldo = O, c.p.scratch = scratch, c.p.scratch_bytes = (size_t)40 * K * 2;
        c.p.ws = g_ws, c.p.ws_bytes = g_ws_bytes, c.p.pdl = 1;
        c.name = "smoke gate+up";
        std::vector<variant> sv;
        for (const variant &v : vars)
            if (v.kind <= 1) sv.push_back(v);
        const size_t ob = (size_t)rows * O * 4;
        for (int pass = 0; pass < 3; pass++) {
            if (pass == 1) {  // down: packed bf16 rows, f32 out + f32 bias
                c.name = "smoke down", c.p.a = H, c.p.a_f32 = 0, c.p.a_row = NULL, c.p.swiglu = 0, c.p.w1 = tab + 2 * G;
                c.p.w2 = NULL, c.p.pdl = 2, c.p.bias = W + (size_t)3 * G * O * K, c.p.bias_dt = 2;
            } else if (pass == 2) {  // dense, f32 rows
                c.name = "smoke dense", c.p = lm_cuda_gg(), c.rows = 5, c.valid = NULL;
                c.p.a = X, c.p.a_f32 = 1, c.p.lda = K, c.p.a_rows = 5, c.p.n_rows = 5, c.p.w1_0 = W, c.p.ldw = K;
                c.p.K = K, c.p.O = O, c.p.ldo = O, c.p.ws = g_ws, c.p.ws_bytes = g_ws_bytes, c.p.pdl = 1;
            }
            CK(cudaMemsetAsync(g_ref, 0xff, ob, g_st));
            variant ref;
            ref.kind = 3, ref.name = "ref";
            CK(launch(c.p, ref, g_ref));
            printf("  %s\n", c.name.c_str());
            for (const variant &v : sv) g_fails += !check(c, v);
        }
        fflush(stdout);
        if (g_fails) printf("smoke checks failed: the timings below use wrong kernels\n");
    }

    for (const shape &s : SHAPES) {
        if (!want(s.name)) continue;
        const size_t per = (size_t)s.H * s.I;
        k_fill_bf16<<<4096, 256, 0, g_st>>>(W, 3 * per * s.E, 0x1234u, 1.0f / sqrtf((float)s.H));
        CK(cudaGetLastError());
        std::vector<const void *> hp(3 * s.E);
        for (int e = 0; e < s.E; e++)
            for (int m = 0; m < 3; m++) hp[m * s.E + e] = W + (size_t)(3 * e + m) * per;
        CK(cudaMemcpy(tab, hp.data(), hp.size() * sizeof(void *), cudaMemcpyHostToDevice));
        const void *const *gates = tab, *const *ups = tab + s.E, *const *downs = tab + 2 * s.E;
        printf("\n=== %s: H %d, I %d, %d experts, top-%d (%.1f MB per expert matrix)\n", s.name, s.H, s.I, s.E, s.k,
               per * 2 / 1e6);
        for (int M : Ms) {
            // routing from random logits (as the layer does), on the device
            std::vector<float> hl((size_t)M * s.E);
            for (auto &v : hl) v = 2 * rndf();
            CK(cudaMemcpy(logits, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
            CK(lm_cuda_route_align(logits, s.E, M, s.E, s.k, 1, sel, s.k, rw, s.k, BLK, row_of, s.k, token_of, tiles,
                                   n_tiles, counts, NULL, 0, g_st));
            std::vector<int> cnt(s.E);
            CK(cudaMemcpyAsync(cnt.data(), counts, s.E * 4, cudaMemcpyDeviceToHost, g_st));
            CK(cudaStreamSynchronize(g_st));
            int rows = 0, active = 0, cmin = 1 << 30, cmax = 0;
            std::vector<int> vrow;
            for (int e = 0; e < s.E; e++) {
                const int pad = (cnt[e] + BLK - 1) / BLK * BLK;
                for (int r = 0; r < pad; r++) vrow.push_back(r < cnt[e]);
                rows += pad, active += cnt[e] > 0, cmin = std::min(cmin, cnt[e]), cmax = std::max(cmax, cnt[e]);
            }
            CK(cudaMemcpy(valid, vrow.data(), (size_t)rows * 4, cudaMemcpyHostToDevice));
            printf("\n[%s M %d: %d of %d experts used, %d to %d rows per expert, %d packed rows]\n", s.name, M, active,
                   s.E, cmin, cmax, rows);
            k_fill_f32<<<1024, 256, 0, g_st>>>(X, (size_t)M * s.H, 0x777u + M, 1.0f);
            CK(cudaGetLastError());

            gcase up;
            up.name = std::string(s.name) + " gate+up", up.M = M, up.rows = rows, up.valid = valid;
            up.p = lm_cuda_gg();
            up.p.a = X, up.p.a_f32 = 1, up.p.lda = s.H, up.p.a_rows = M, up.p.a_row = token_of, up.p.counts = counts;
            up.p.n_groups = s.E, up.p.block = BLK, up.p.n_rows = M * s.k, up.p.w1 = gates, up.p.w2 = ups;
            up.p.ldw = s.H, up.p.K = s.H, up.p.O = s.I, up.p.swiglu = 1, up.p.ldo = s.I;
            up.p.scratch = scratch, up.p.scratch_bytes = (size_t)M * s.H * 2, up.p.ws = g_ws, up.p.ws_bytes = g_ws_bytes;
            up.p.pdl = 1;
            up.bytes = (double)active * 2 * per * 2, up.flops = 0;  // the MoE bound is the weight bytes alone
            run_case(up, do_check, vars);

            // down: A = packed h rows (bf16, padding rows NaN), f32 out
            k_fill_bf16<<<4096, 256, 0, g_st>>>((uint16_t *)H, (size_t)rows * s.I, 0x999u + M, 1.0f);
            k_nan_rows<<<1024, 256, 0, g_st>>>((uint16_t *)H, s.I, rows, valid);
            CK(cudaGetLastError());
            gcase dn;
            dn.name = std::string(s.name) + " down", dn.M = M, dn.rows = rows, dn.valid = valid;
            dn.p = lm_cuda_gg();
            dn.p.a = H, dn.p.a_f32 = 0, dn.p.lda = s.I, dn.p.counts = counts, dn.p.n_groups = s.E, dn.p.block = BLK;
            dn.p.n_rows = M * s.k, dn.p.w1 = downs, dn.p.ldw = s.I, dn.p.K = s.I, dn.p.O = s.H, dn.p.ldo = s.H;
            dn.p.ws = g_ws, dn.p.ws_bytes = g_ws_bytes, dn.p.pdl = 1;
            dn.bytes = (double)active * per * 2, dn.flops = 0;
            run_case(dn, do_check, vars);

            // the whole layer: route_align -> gate+up -> down -> combine, PDL chain
            auto run_layer = [&](bool s9s, float *out) {
                CK(lm_cuda_route_align(logits, s.E, M, s.E, s.k, 1, sel, s.k, rw, s.k, BLK, row_of, s.k, token_of,
                                       tiles, n_tiles, counts, NULL, 1, g_st));
                lm_cuda_gg u = up.p, d = dn.p;
                u.out = H, d.a = H, d.out = Y, u.pdl = 1, d.pdl = 2;
                if (s9s) {
                    CK(lm_cuda_gg_sm90s_set_knobs(NULL));
                    CK(lm_cuda_gg_sm90s_run(&u, g_st));
                    CK(lm_cuda_gg_sm90s_run(&d, g_st));
                } else {
                    CK(lm_cuda_gg_run(&u, g_st));
                    CK(lm_cuda_gg_run(&d, g_st));
                }
                CK(lm_cuda_combine_fast(row_of, s.k, rw, s.k, M, s.k, Y, s.H, out, s.H, s.H, 1, g_st));
            };
            layer_row lr;
            char b[64];
            snprintf(b, sizeof b, "%s M=%d", s.name, M);
            lr.what = b, lr.bound = (double)active * 3 * per * 2 / g_bw * 1e6, lr.err = 0;
            run_layer(false, lay_ref);
            run_layer(true, lay_out);
            CK(cudaEventRecord(g_ev1, g_st));
            wait_or_die(g_ev1, "layer check");
            {
                std::vector<float> a((size_t)M * s.H), r((size_t)M * s.H);
                CK(cudaMemcpy(a.data(), lay_out, a.size() * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemcpy(r.data(), lay_ref, r.size() * 4, cudaMemcpyDeviceToHost));
                for (int t = 0; t < M; t++) {
                    double d2 = 0, r2 = 0;
                    for (int c = 0; c < s.H; c++) {
                        const double d = (double)a[(size_t)t * s.H + c] - r[(size_t)t * s.H + c];
                        d2 += d * d, r2 += (double)r[(size_t)t * s.H + c] * r[(size_t)t * s.H + c];
                    }
                    const double e = sqrt(d2 / (r2 > 0 ? r2 : 1));
                    if (!(e <= lr.err)) lr.err = e;
                }
                const bool ok = lr.err <= 1e-2;
                g_fails += !ok;
                printf("  layer check (sm90s GEMMs vs gg GEMMs, per token rel L2): %.2e %s\n", lr.err, ok ? "PASS" : "FAIL");
            }
            {
                std::vector<float> ts[2];
                for (int r = 0; r < g_reps + 2; r++)
                    for (int which_l = 0; which_l < 2; which_l++) {  // interleaved, as the GEMMs
                        CK(cudaMemsetAsync(g_flush, (r + which_l) & 0xff, FLUSH_BYTES, g_st));
                        CK(cudaEventRecord(g_ev0, g_st));
                        run_layer(which_l == 1, lay_out);
                        CK(cudaEventRecord(g_ev1, g_st));
                        wait_or_die(g_ev1, "layer");
                        float ms;
                        CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
                        if (r >= 2) ts[which_l].push_back(ms * 1e3f);
                    }
                for (int which_l = 0; which_l < 2; which_l++) {
                    std::sort(ts[which_l].begin(), ts[which_l].end());
                    (which_l ? lr.us_s9s : lr.us_gg) = ts[which_l][ts[which_l].size() / 2];
                }
            }
            printf("  layer (route_align + gate+up + down + combine, pdl): bound %.1f us; gg GEMMs %.1f us (x%.2f), "
                   "sm90s GEMMs %.1f us (x%.2f)\n",
                   lr.bound, lr.us_gg, lr.us_gg / lr.bound, lr.us_s9s, lr.us_s9s / lr.bound);
            fflush(stdout);
            g_layers.push_back(lr);
        }
    }

    if (want("dense")) {
        printf("\n=== dense projections (f32 activations, bf16 weights, f32 out)\n");
        for (int d = 0; d < 6; d++) {
            const int K = DK[d], O = DO[d];
            k_fill_bf16<<<4096, 256, 0, g_st>>>(W, (size_t)O * K + O, 0x4242u + d, 1.0f / sqrtf((float)K));
            CK(cudaGetLastError());
            for (int M : Ds) {
                k_fill_f32<<<1024, 256, 0, g_st>>>(X, (size_t)M * K, 0x4343u + d + M, 1.0f);
                CK(cudaGetLastError());
                gcase c;
                c.name = DN[d], c.M = M, c.rows = M, c.valid = NULL;
                c.p = lm_cuda_gg();
                c.p.a = X, c.p.a_f32 = 1, c.p.lda = K, c.p.a_rows = M, c.p.n_rows = M, c.p.w1_0 = W, c.p.ldw = K;
                c.p.K = K, c.p.O = O, c.p.ldo = O, c.p.scratch = scratch, c.p.scratch_bytes = (size_t)M * K * 2;
                c.p.ws = g_ws, c.p.ws_bytes = g_ws_bytes, c.p.pdl = 1;
                if (d == 1) c.p.bias = W + (size_t)O * K, c.p.bias_dt = 2;  // bf16 bias: the next O values
                c.bytes = (double)O * K * 2, c.flops = 2.0 * M * K * O;
                run_case(c, do_check, vars);
            }
        }
    }

    // summary
    printf("\nsummary: time us (x bound) per kernel; bound = active weight bytes / %.0f GB/s (dense: or flops / %.0f "
           "TFLOP/s)\n%-28s %9s",
           g_bw / 1e9, g_peak / 1e12, "case", "bound");
    for (auto &v : g_cols) printf(" %16s", v.name.c_str());
    printf("\n");
    for (auto &r : g_rows) {
        printf("%-28s %9.1f", r.what.c_str(), r.bound);
        for (double us : r.us)
            if (us == us) printf(" %9.1f (%4.2f)", us, us / r.bound);
            else printf(" %16s", "-");
        printf("\n");
    }
    if (!g_layers.empty()) {
        printf("\nwhole MoE layer (route_align + gate+up + down + combine_fast, pdl), bound = active experts' bytes / BW\n"
               "%-20s %9s %16s %16s %10s\n",
               "case", "bound", "gg GEMMs", "sm90s GEMMs", "rel err");
        for (auto &l : g_layers)
            printf("%-20s %9.1f %9.1f (%4.2f) %9.1f (%4.2f) %10.2e\n", l.what.c_str(), l.bound, l.us_gg,
                   l.us_gg / l.bound, l.us_s9s, l.us_s9s / l.bound, l.err);
    }
    printf("\n%s (%.1f s)\n", g_fails ? "SOME CHECKS FAILED" : do_check ? "all checks passed" : "(checks skipped)",
           now_s() - t_start);
    return g_fails ? 1 : 0;
}
