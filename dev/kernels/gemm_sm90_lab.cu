// nvcc -O2 -std=c++17 -Iinclude -Isrc -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -o build/dev/gemm_sm90_lab dev/kernels/gemm_sm90_lab.cu src/kernels/cuda/gemm_sm90.cu src/kernels/cuda/gemm.cu src/kernels/cuda/basic.cu src/kernels/cuda/probe.cu
//
// Kernel lab of the Hopper GEMM (src/kernels/cuda/gemm_sm90.cu) against the
// mma.sync large path of gemm.cu (lm_cuda_gg_run with force = 2, k_gg_large),
// on the GPU (built by `make -C dev/kernels sm90`; dev/kernels/gemm_sm90_lab.sh
// builds, runs it and re-runs without a variant that hangs).
//
// Sections, in this order:
// 1. smoke: every variant on small grouped and dense calls, checked, so that a
//    variant that hangs or faults does so first (the watchdog names it).
// 2. GEMM cases: the MoE expert GEMMs of Mixtral-8x7B (H 4096, I 14336, 8
//    experts, top-2) and Qwen3-30B-A3B (H 2048, I 768, 128 experts, top-8) at
//    M routed tokens (random top-k routing, groups padded to 16 rows):
//    gate+up (SwiGLU, bf16 h, A gathered through token_of) and down (f32 out,
//    A = packed h rows whose padding rows hold NaN); dense projections
//    8192 x 4096 x 4096 (+ f32 bias) and 8192 x 4096 x 14336.
// 3. layer: the whole MoE layer as the executor runs it, at M = 2048, 4096,
//    8192 tokens (-L): route + align (lm_cuda_route_align), gate+up from f32
//    activations (the f32 -> bf16 conversion included), down, combine
//    (lm_cuda_combine_fast), with each variant for both GEMMs and with the
//    large path; TFLOP/s count 6 * routed * H * I.
//
// Checks (before timing): the reference once per case, each variant after
// it on an output poisoned with 0xff bytes (NaN). Per packed row: relative
// L2 of (sm90 - large) <= 1e-2, every value of both finite (written),
// padding rows still poison. The layer: per token, relative L2 of the
// combined output against the large path's <= 1e-2. Diagnostic variants
// (lm_cuda_gg_sm90_diagnostic: no MMA / no loads / no epilogue) are timed,
// not checked: their differences to the full variant say where time goes.
// Timing: CUDA events around one launch (a layer: around its five), L2
// flushed (256 MB memset) before each; the kernels of a case take turns
// within each repetition (so clock and temperature drift fall on all of
// them alike); median of -r (default 10) after 2 warm-ups, and the spread
// (min, max). The SM clock and board power are sampled through NVML while
// the timed kernels run (when libnvidia-ml.so.1 loads): MHz in the tables.
// A watchdog stops the program (exit 3) if a kernel runs past 20 s: the
// mbarrier waits have no timeout. A soft budget (-b, default 80 s) cuts
// the repetitions to 3 once it is spent.
//
//   gemm_sm90_lab [-s mixtral,qwen3,dense|all] [-m 512,2048,4096,8192] [-L 2048,4096,8192|none]
//                 [-r reps] [-v 1,4,5,6,7,8,9,10] (sm90 variants; 0 = the launcher's choice)
//                 [-q] (no checks) [-b seconds] [-smoke] (only the smoke section)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_sm90.h"

#define CK(x)                                                                                       \
    do {                                                                                            \
        cudaError_t e_ = (cudaError_t)(x);                                                          \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            fflush(stdout);                                                                         \
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
__global__ void k_fill_f32(float *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12, h ^= (uint32_t)(i >> 32) * 0x9e3779b9u;
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
// valid == NULL: every row valid.
__global__ void k_cmp(const void *got, const void *ref, int bf16, size_t ldo, int O, const int *valid, int rows,
                      double *stats) {
    __shared__ double s[3][256];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        double d2 = 0, r2 = 0, bad = 0;
        const bool v = !valid || valid[r];
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

// ------------------------------------------------------------------- NVML ---
// SM clock and board power while the timed kernels run (dlopen: no nvml.h
// and no link dependency; every call returns 0 on success).
struct nvml_t {
    void *lib = nullptr, *dev = nullptr;
    int (*clock)(void *, int, unsigned *) = nullptr;  // nvmlDeviceGetClockInfo(dev, NVML_CLOCK_SM = 1, MHz)
    int (*power)(void *, unsigned *) = nullptr;       // nvmlDeviceGetPowerUsage (mW)
    int (*reasons)(void *, unsigned long long *) = nullptr;  // nvmlDeviceGetCurrentClocksEventReasons
};
static nvml_t g_nvml;
static const char *nvml_open(int cuda_dev) {
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return "libnvidia-ml.so.1 not loaded";
    auto init = (int (*)(void))dlsym(lib, "nvmlInit_v2");
    auto by_bus = (int (*)(const char *, void **))dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
    g_nvml.clock = (int (*)(void *, int, unsigned *))dlsym(lib, "nvmlDeviceGetClockInfo");
    g_nvml.power = (int (*)(void *, unsigned *))dlsym(lib, "nvmlDeviceGetPowerUsage");
    g_nvml.reasons = (int (*)(void *, unsigned long long *))dlsym(lib, "nvmlDeviceGetCurrentClocksEventReasons");
    if (!g_nvml.reasons)
        g_nvml.reasons = (int (*)(void *, unsigned long long *))dlsym(lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
    char bus[64];
    if (!init || !by_bus || !g_nvml.clock || !g_nvml.power || init() != 0 ||
        cudaDeviceGetPCIBusId(bus, sizeof bus, cuda_dev) != cudaSuccess || by_bus(bus, &g_nvml.dev) != 0) {
        (void)cudaGetLastError();
        dlclose(lib);
        g_nvml = nvml_t();
        return "NVML did not open the device";
    }
    g_nvml.lib = lib;
    return nullptr;
}
// samples taken while a timed kernel runs: clock (MHz), power (W), the OR of the clock-event reasons
struct sampler {
    double mhz = 0, watts = 0;
    long n = 0;
    unsigned long long reasons = 0;
    void take() {
        if (!g_nvml.lib) return;
        unsigned c = 0, p = 0;
        unsigned long long r = 0;
        if (g_nvml.clock(g_nvml.dev, 1, &c) == 0 && g_nvml.power(g_nvml.dev, &p) == 0) mhz += c, watts += p / 1e3, n++;
        if (g_nvml.reasons && g_nvml.reasons(g_nvml.dev, &r) == 0) reasons |= r;
    }
    double mean_mhz() const { return n ? mhz / n : 0; }
    double mean_w() const { return n ? watts / n : 0; }
};

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
static double g_t0, g_budget = 80;
static int g_reps;

static double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double elapsed() { return now_s() - g_t0; }

// Waits for ev (sampling NVML meanwhile if smp); a kernel that has not
// finished after 20 s is taken as hung.
static void wait_or_die(cudaEvent_t ev, const std::string &what, sampler *smp = nullptr) {
    double t0 = now_s();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) {
            fprintf(stderr, "%s: %s\n", what.c_str(), cudaGetErrorString(e));
            fflush(stdout);
            exit(1);
        }
        if (now_s() - t0 > 20) {
            printf("\nWATCHDOG: %s still running after 20 s (hung on an mbarrier?); exiting\n", what.c_str());
            fflush(stdout);
            _exit(3);
        }
        if (smp) smp->take();
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

static const char *kname(int kernel) {
    static char b[8][32];
    static int i;
    char *s = b[i++ & 7];
    if (kernel == 0) return "large";
    if (kernel < 0) return "sm90-auto";
    snprintf(s, 32, "sm90-v%d", kernel);
    return s;
}
static bool is_diag(int kernel) { return kernel > 0 && lm_cuda_gg_sm90_diagnostic(kernel); }

// kernel: 0 = large (gemm.cu), v >= 1 = sm90 variant v, -1 = sm90 auto
static int launch_gg(const lm_cuda_gg &c, int kernel, void *out) {
    lm_cuda_gg p = c;
    p.out = out;
    if (kernel == 0) {
        p.force = 2;
        return lm_cuda_gg_run(&p, g_st);
    }
    int e = lm_cuda_gg_sm90_set_variant(kernel < 0 ? 0 : kernel);
    if (e) return e;
    return lm_cuda_gg_sm90_run(&p, g_st);
}

// Per-row comparison of got against ref ([rows][ldo], O columns; valid NULL:
// all rows valid). Prints PASS / FAIL with where; true: pass.
static bool compare_rows(const char *what, const void *got, const void *ref, int bf, size_t ldo, int O, int rows,
                         const int *valid_dev, const std::vector<int> *valid, const std::vector<int> *group_of,
                         const std::vector<int> *first) {
    k_cmp<<<2048, 256, 0, g_st>>>(got, ref, bf, ldo, O, valid_dev, rows, B.stats);
    CK(cudaGetLastError());
    CK(cudaEventRecord(g_ev1, g_st));
    wait_or_die(g_ev1, std::string(what) + " compare");
    std::vector<double> st((size_t)rows * 3);
    CK(cudaMemcpy(st.data(), B.stats, st.size() * sizeof(double), cudaMemcpyDeviceToHost));
    double worst = 0;
    int worst_r = -1, bad_rows = 0, first_bad = -1;
    long long bad_vals = 0;
    for (int r = 0; r < rows; r++) {
        const bool v = !valid || (*valid)[r];
        double d2 = st[3 * r], r2 = st[3 * r + 1], bad = st[3 * r + 2];
        double rel = v ? sqrt(d2 / (r2 > 0 ? r2 : 1)) : 0;
        bool ok = bad == 0 && rel <= 1e-2;
        if (!ok) {
            bad_rows++, bad_vals += (long long)bad;
            if (first_bad < 0) first_bad = r;
        }
        if (v && !(rel <= worst)) worst = rel, worst_r = r;
    }
    if (!bad_rows) {
        printf("  check %-26s PASS: worst row rel L2 %.2e (row %d), all %d rows written%s\n", what, worst, worst_r, rows,
               valid ? ", padding untouched" : "");
        return true;
    }
    const size_t esz = bf ? 2 : 4;
    int r = first_bad;
    std::vector<uint8_t> g(O * esz), f(O * esz);
    CK(cudaMemcpy(g.data(), (const char *)got + (size_t)r * ldo * esz, g.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(f.data(), (const char *)ref + (size_t)r * ldo * esz, f.size(), cudaMemcpyDeviceToHost));
    auto val = [&](const std::vector<uint8_t> &v, int col) {
        if (bf) {
            uint32_t u = (uint32_t)((const uint16_t *)v.data())[col] << 16;
            float x;
            memcpy(&x, &u, 4);
            return x;
        }
        return ((const float *)v.data())[col];
    };
    const bool v = !valid || (*valid)[r];
    double rms = sqrt(st[3 * r + 1] / std::max(1, O));
    int col = -1;
    for (int k = 0; k < O && col < 0; k++) {
        float a = val(g, k), b = val(f, k);
        bool differs = v ? !(fabs((double)a - b) <= 0.05 * rms + 1e-3 * fabs(b)) || !isfinite(a) : !isnan(a);
        if (differs) col = k;
    }
    printf("  check %-26s FAIL: %d bad rows (%lld bad values); first: row %d", what, bad_rows, bad_vals, r);
    if (group_of) printf(" (%s, group %d, row %d of it)", v ? "valid" : "padding", (*group_of)[r], r - (*first)[(*group_of)[r]]);
    printf(", rel L2 %.3e", v ? sqrt(st[3 * r] / std::max(st[3 * r + 1], 1e-300)) : 0.0);
    if (col >= 0) printf(", column %d: got %.6g, reference %.6g", col, val(g, col), val(f, col));
    printf("\n");
    return false;
}

// One timed entry: a name and how to launch it (returns a cudaError_t).
struct timed {
    std::string name;
    std::function<int()> run;
    std::vector<float> us;
    sampler smp;
    double med = 0, lo = 0, hi = 0;
};
// Runs every entry reps + 2 times (2 warm-ups), the entries taking turns
// (rotated each repetition), L2 flushed before each, events around each.
static void time_all(std::vector<timed> &ts, int reps) {
    if (elapsed() > g_budget && reps > 3) reps = 3;
    const int n = (int)ts.size();
    for (int r = 0; r < reps + 2; r++)
        for (int j = 0; j < n; j++) {
            timed &t = ts[(j + r) % n];
            CK(cudaMemsetAsync(B.flush, r & 0xff, B.flush_bytes, g_st));
            CK(cudaEventRecord(g_ev0, g_st));
            CK(t.run());
            CK(cudaEventRecord(g_ev1, g_st));
            wait_or_die(g_ev1, t.name, r >= 2 ? &t.smp : nullptr);
            float ms;
            CK(cudaEventElapsedTime(&ms, g_ev0, g_ev1));
            if (r >= 2) t.us.push_back(ms * 1e3f);
        }
    for (auto &t : ts) {
        std::vector<float> v = t.us;
        std::sort(v.begin(), v.end());
        t.med = v[v.size() / 2], t.lo = v.front(), t.hi = v.back();
    }
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

struct gcase {
    std::string name;
    int M;              // tokens (MoE) or rows (dense)
    lm_cuda_gg p;       // the call (force and variant set per run)
    int rows;           // packed rows (output rows)
    double flops;
    std::vector<int> valid, group_of, first;  // per packed row: valid, its group; per group: first row
};

struct row_result {
    std::string name;
    int M;
    double flops;
    std::vector<timed> t;  // [0]: large, then the variants
};

// Checks every non-diagnostic variant against the reference (computed once).
static void check_case(const gcase &c, const std::vector<int> &vars) {
    const int bf = c.p.swiglu;
    const size_t bytes = (size_t)c.rows * c.p.ldo * (bf ? 2 : 4);
    CK(cudaMemsetAsync(B.out_ref, 0xff, bytes, g_st));
    CK(launch_gg(c.p, 0, B.out_ref));
    for (int v : vars) {
        if (is_diag(v)) continue;
        CK(cudaMemsetAsync(B.out_s9, 0xff, bytes, g_st));
        CK(launch_gg(c.p, v, B.out_s9));
        CK(cudaEventRecord(g_ev1, g_st));
        wait_or_die(g_ev1, c.name + " " + kname(v));
        g_fails += !compare_rows(kname(v), B.out_s9, B.out_ref, bf, c.p.ldo, c.p.O, c.rows, B.valid, &c.valid,
                                 &c.group_of, &c.first);
    }
}

static row_result time_case(const gcase &c, const std::vector<int> &vars) {
    row_result rr;
    rr.name = c.name, rr.M = c.M, rr.flops = c.flops;
    rr.t.push_back({"large", [&c] { return launch_gg(c.p, 0, B.out_ref); }, {}, {}});
    for (int v : vars) rr.t.push_back({kname(v), [&c, v] { return launch_gg(c.p, v, B.out_s9); }, {}, {}});
    time_all(rr.t, g_reps);
    printf("  time:");
    for (auto &t : rr.t)
        printf(" %s %.1f us (%.0f TFLOP/s, %.0f..%.0f us, %.0f MHz)%s", t.name.c_str(), t.med, c.flops / t.med / 1e6,
               t.lo, t.hi, t.smp.mean_mhz(), &t == &rr.t.back() ? "" : ";");
    printf("\n");
    fflush(stdout);
    return rr;
}

// ------------------------------------------------------------------ layer ---
struct layer_bufs {
    float *x, *logits, *w, *y, *out, *out_ref;
    uint16_t *h, *scratch;
    int *sel, *row_of, *token_of, *tiles, *n_tiles, *counts;
};
static layer_bufs LB;

// The stages of one MoE layer, as the executor runs it, with `kernel` for
// both GEMMs. stage: -1 all; 0 route+align; 1 gate+up from the f32 x
// (converted into scratch first); 2 gate+up from the bf16 copy of x that 1
// left in scratch; 3 down; 4 combine.
static int run_layer(const shape &s, int M, const void *const *tab, int kernel, float *out, int stage = -1) {
    int e;
    if ((stage < 0 || stage == 0) &&
        (e = lm_cuda_route_align(LB.logits, s.E, M, s.E, s.k, 1, LB.sel, s.k, LB.w, s.k, BLK, LB.row_of, s.k,
                                 LB.token_of, LB.tiles, LB.n_tiles, LB.counts, NULL, 0, g_st)))
        return e;
    lm_cuda_gg up = {};
    up.a = LB.x, up.a_f32 = 1, up.lda = s.H, up.a_rows = M, up.a_row = LB.token_of, up.counts = LB.counts;
    up.n_groups = s.E, up.block = BLK, up.n_rows = M * s.k, up.w1 = tab, up.w2 = tab + s.E, up.ldw = s.H;
    up.K = s.H, up.O = s.I, up.swiglu = 1, up.ldo = s.I;
    up.scratch = LB.scratch, up.scratch_bytes = (size_t)M * s.H * 2;
    if (stage == 2) up.a = LB.scratch, up.a_f32 = 0, up.scratch = NULL, up.scratch_bytes = 0;
    if ((stage < 0 || stage == 1 || stage == 2) && (e = launch_gg(up, kernel, LB.h))) return e;
    lm_cuda_gg dn = {};
    dn.a = LB.h, dn.a_f32 = 0, dn.lda = s.I, dn.counts = LB.counts, dn.n_groups = s.E, dn.block = BLK;
    dn.n_rows = M * s.k, dn.w1 = tab + 2 * s.E, dn.ldw = s.I, dn.K = s.I, dn.O = s.H, dn.ldo = s.H;
    if ((stage < 0 || stage == 3) && (e = launch_gg(dn, kernel, LB.y))) return e;
    if (stage < 0 || stage == 4)
        return lm_cuda_combine_fast(LB.row_of, s.k, LB.w, s.k, M, s.k, LB.y, s.H, out, s.H, s.H, 0, g_st);
    return 0;
}

struct layer_result {
    std::string name;
    int M;
    double flops;
    std::vector<timed> t;
};

int main(int argc, char **argv) {
    std::string which = "all", mlist = "512,2048,4096,8192", llist = "2048,4096,8192", vlist = "1,4,5,6,7,8,9,10";
    int reps = 10, do_check = 1, smoke_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mlist = argv[++i];
        else if (!strcmp(argv[i], "-L") && i + 1 < argc) llist = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = std::max(1, atoi(argv[++i]));
        else if (!strcmp(argv[i], "-v") && i + 1 < argc) vlist = argv[++i];
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) g_budget = atof(argv[++i]);
        else if (!strcmp(argv[i], "-q")) do_check = 0;
        else if (!strcmp(argv[i], "-smoke")) smoke_only = 1;
        else {
            fprintf(stderr, "usage: gemm_sm90_lab [-s mixtral,qwen3,dense|all] [-m 512,2048,...] [-L 2048,...|none] "
                            "[-r reps] [-v 1,4,5,...|0] [-q] [-b seconds] [-smoke]\n");
            return 2;
        }
    }
    g_reps = reps;
    auto ints = [](const std::string &l) {
        std::vector<int> v;
        if (l == "none") return v;
        for (const char *p = l.c_str(); *p;) {
            v.push_back(atoi(p));
            while (*p && *p != ',') p++;
            if (*p) p++;
        }
        return v;
    };
    std::vector<int> Ms = ints(mlist), Ls = ints(llist), vars = ints(vlist);
    for (int &v : vars)
        if (v == 0) v = -1;  // the launcher's choice
    for (int v : vars)
        if (v > lm_cuda_gg_sm90_variants()) {
            fprintf(stderr, "variant %d: this build has %d\n", v, lm_cuda_gg_sm90_variants());
            return 2;
        }
    auto want = [&](const char *n) { return which == "all" || which.find(n) != std::string::npos; };

    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device %s, sm_%d%d, %d SMs, L2 %d MB, %zu KB smem/block opt-in\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, prop.sharedMemPerBlockOptin >> 10);
    const char *nv = nvml_open(0);
    printf("NVML: %s\n", nv ? nv : "SM clock and power sampled while the timed kernels run");
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
            char b[512];
            CK(lm_cuda_gg_sm90_describe(v, sw, b, sizeof b));
            printf("  %s\n", b);
        }
    printf("reference: lm_cuda_gg_run force=2 (k_gg_large, mma.sync 128x128x32, 4-stage cp.async)\n");
    printf("checks: %s; timing: median of %d reps (kernels interleaved), L2 flushed (256 MB memset) before each\n",
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
    g_t0 = now_s();

    // ---------------------------------------------------------------- smoke ---
    // small calls through every variant first: a variant that hangs does it here
    {
        printf("\n[smoke: every variant on small grouped (gather, packed) and dense calls]\n");
        const int E = 4, H = 256, I = 320, M = 300, k = 2;
        std::vector<int> counts = {0, 1, 317, 282};  // empty, single, tails of 61 and 26 rows
        std::vector<int> first(E), token_of;
        int rows = 0;
        for (int e = 0; e < E; e++) first[e] = rows, rows += (counts[e] + BLK - 1) / BLK * BLK;
        token_of.assign(rows, -1);
        gcase c;
        c.M = M, c.rows = rows, c.first = first, c.valid.assign(rows, 0), c.group_of.assign(rows, 0);
        for (int e = 0; e < E; e++)
            for (int j = 0; j < counts[e]; j++)
                token_of[first[e] + j] = (int)(rnd_u() % M), c.valid[first[e] + j] = 1;
        for (int e = 0; e < E; e++)
            for (int r = first[e]; r < first[e] + (counts[e] + BLK - 1) / BLK * BLK; r++) c.group_of[r] = e;
        CK(cudaMemcpy(B.counts, counts.data(), E * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(B.token_of, token_of.data(), rows * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(B.valid, c.valid.data(), rows * 4, cudaMemcpyHostToDevice));
        const size_t per = (size_t)H * I;
        k_fill_bf16<<<1024, 256>>>(B.w, 3 * per * E, 0x55u, 1.0f / sqrtf((float)H));
        k_fill_bf16<<<1024, 256>>>(B.x, (size_t)std::max(M * H, rows * I), 0x66u, 1.0f);
        CK(cudaGetLastError());
        std::vector<const void *> hp(3 * E);
        for (int e = 0; e < E; e++)
            for (int m = 0; m < 3; m++) hp[m * E + e] = B.w + (size_t)(3 * e + m) * per;
        CK(cudaMemcpy(B.tab, hp.data(), hp.size() * sizeof(void *), cudaMemcpyHostToDevice));
        (void)k;
        for (int pass = 0; pass < 3; pass++) {
            c.p = lm_cuda_gg{};
            if (pass == 0) {  // gate+up, gathered
                c.name = "smoke gate+up";
                c.p.a = B.x, c.p.lda = H, c.p.a_rows = M, c.p.a_row = B.token_of, c.p.counts = B.counts;
                c.p.n_groups = E, c.p.block = BLK, c.p.n_rows = 600, c.p.w1 = B.tab, c.p.w2 = B.tab + E, c.p.ldw = H;
                c.p.K = H, c.p.O = I, c.p.swiglu = 1, c.p.ldo = I;
            } else if (pass == 1) {  // down, packed
                c.name = "smoke down";
                c.p.a = B.x, c.p.lda = I, c.p.a_rows = rows, c.p.counts = B.counts, c.p.n_groups = E, c.p.block = BLK;
                c.p.n_rows = 600, c.p.w1 = B.tab + 2 * E, c.p.ldw = I, c.p.K = I, c.p.O = H, c.p.ldo = H;
            } else {  // dense 300 x 320 x 256 (+ bias), odd n-block count
                c.name = "smoke dense";
                c.rows = 300, c.valid.assign(300, 1), c.group_of.assign(300, 0), c.first = {0};
                CK(cudaMemcpy(B.valid, c.valid.data(), 300 * 4, cudaMemcpyHostToDevice));
                c.p.a = B.x, c.p.lda = H, c.p.a_rows = 300, c.p.n_rows = 300, c.p.w1_0 = B.w, c.p.ldw = H, c.p.K = H;
                c.p.O = I, c.p.ldo = I, c.p.bias = B.w + 3 * per * E - I, c.p.bias_dt = 2;
            }
            printf("%s:\n", c.name.c_str());
            fflush(stdout);
            if (do_check) {
                check_case(c, vars);
            }
            for (int v : vars)
                if (is_diag(v)) {  // runs to the end
                    CK(launch_gg(c.p, v, B.out_s9));
                    CK(cudaEventRecord(g_ev1, g_st));
                    wait_or_die(g_ev1, c.name + " " + kname(v));
                    printf("  ran   %-26s (diagnostic: not checked)\n", kname(v));
                }
        }
        printf("smoke done (%.1f s)\n", elapsed());
        fflush(stdout);
        if (smoke_only) return g_fails ? 1 : 0;
    }

    // ----------------------------------------------------------- GEMM cases ---
    std::vector<row_result> results;
    auto run_case = [&](gcase &c) {
        printf("\n%s, M %d: %d output rows x %d columns, K %d (%.1f GFLOP)\n", c.name.c_str(), c.M, c.rows, c.p.O, c.p.K,
               c.flops / 1e9);
        CK(cudaMemcpy(B.valid, c.valid.data(), (size_t)c.rows * 4, cudaMemcpyHostToDevice));
        if (do_check) check_case(c, vars);
        results.push_back(time_case(c, vars));
    };

    for (const shape &s : SHAPES) {
        if (!want(s.name) || Ms.empty()) continue;
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
            CK(cudaMemcpy(B.valid, c.valid.data(), (size_t)rows * 4, cudaMemcpyHostToDevice));
            k_nan_rows<<<1024, 256>>>(B.x, s.I, rows, B.valid);
            CK(cudaGetLastError());
            c.name = std::string(s.name) + " down";
            c.p = lm_cuda_gg{};
            c.p.a = B.x, c.p.a_f32 = 0, c.p.lda = s.I, c.p.a_rows = rows, c.p.counts = B.counts, c.p.n_groups = s.E;
            c.p.block = BLK, c.p.n_rows = (int)routed, c.p.w1 = B.tab + 2 * s.E, c.p.ldw = s.I, c.p.K = s.I, c.p.O = s.H;
            c.p.ldo = s.H;
            c.flops = 2.0 * routed * s.I * s.H;
            run_case(c);
        }
    }
    if (want("dense") && !Ms.empty()) {
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

    // ---------------------------------------------------------------- layer ---
    std::vector<layer_result> layers;
    if (!Ls.empty()) {
        int maxL = *std::max_element(Ls.begin(), Ls.end());
        size_t x_n = 0, h_n = 0, y_n = 0, tok_n = 0, e_max = 0, sel_n = 0;
        for (const shape &s : SHAPES) {
            if (!want(s.name)) continue;
            const size_t rmax = (size_t)maxL * s.k + (size_t)s.E * (BLK - 1);
            x_n = std::max(x_n, (size_t)maxL * s.H), h_n = std::max(h_n, rmax * s.I), y_n = std::max(y_n, rmax * s.H);
            tok_n = std::max(tok_n, rmax), e_max = std::max(e_max, (size_t)s.E), sel_n = std::max(sel_n, (size_t)maxL * s.k);
        }
        if (x_n) {
            CK(cudaMalloc(&LB.x, x_n * 4));
            CK(cudaMalloc(&LB.logits, (size_t)maxL * e_max * 4));
            CK(cudaMalloc(&LB.w, sel_n * 4));
            CK(cudaMalloc(&LB.y, y_n * 4));
            CK(cudaMalloc(&LB.out, x_n * 4));
            CK(cudaMalloc(&LB.out_ref, x_n * 4));
            CK(cudaMalloc(&LB.h, h_n * 2));
            CK(cudaMalloc(&LB.scratch, x_n * 2));
            CK(cudaMalloc(&LB.sel, sel_n * 4));
            CK(cudaMalloc(&LB.row_of, sel_n * 4));
            CK(cudaMalloc(&LB.token_of, tok_n * 4));
            CK(cudaMalloc(&LB.tiles, (2 * (tok_n / BLK + e_max) + 16) * 4));
            CK(cudaMalloc(&LB.n_tiles, 16));
            CK(cudaMalloc(&LB.counts, e_max * 4));
        }
        for (const shape &s : SHAPES) {
            if (!want(s.name)) continue;
            const size_t per = (size_t)s.H * s.I;
            k_fill_bf16<<<4096, 256>>>(B.w, 3 * per * s.E, 0x2345u, 1.0f / sqrtf((float)s.H));
            CK(cudaGetLastError());
            std::vector<const void *> hp(3 * s.E);
            for (int e = 0; e < s.E; e++)
                for (int m = 0; m < 3; m++) hp[m * s.E + e] = B.w + (size_t)(3 * e + m) * per;
            CK(cudaMemcpy(B.tab, hp.data(), hp.size() * sizeof(void *), cudaMemcpyHostToDevice));
            const void *const *tab = (const void *const *)B.tab;
            for (int M : Ls) {
                k_fill_f32<<<4096, 256>>>(LB.x, (size_t)M * s.H, 0x31u + M, 1.0f);
                k_fill_f32<<<1024, 256>>>(LB.logits, (size_t)M * s.E, 0x41u + M, 2.0f);
                CK(cudaGetLastError());
                layer_result lr;
                char nm[64];
                snprintf(nm, sizeof nm, "%s layer", s.name);
                lr.name = nm, lr.M = M, lr.flops = 6.0 * M * s.k * s.H * (double)s.I;
                printf("\n%s, M %d: route+align, gate+up (f32 activations), down, combine (%.1f GFLOP)\n", nm, M,
                       lr.flops / 1e9);
                if (do_check) {
                    CK(run_layer(s, M, tab, 0, LB.out_ref));
                    for (int v : vars) {
                        if (is_diag(v)) continue;
                        CK(cudaMemsetAsync(LB.out, 0xff, (size_t)M * s.H * 4, g_st));
                        CK(run_layer(s, M, tab, v, LB.out));
                        CK(cudaEventRecord(g_ev1, g_st));
                        wait_or_die(g_ev1, std::string(nm) + " " + kname(v));
                        g_fails += !compare_rows(kname(v), LB.out, LB.out_ref, 0, s.H, s.H, M, nullptr, nullptr,
                                                 nullptr, nullptr);
                    }
                }
                lr.t.push_back({"large", [&s, M, tab] { return run_layer(s, M, tab, 0, LB.out_ref); }, {}, {}});
                for (int v : vars)
                    lr.t.push_back({kname(v), [&s, M, tab, v] { return run_layer(s, M, tab, v, LB.out); }, {}, {}});
                time_all(lr.t, g_reps);
                printf("  time:");
                for (auto &t : lr.t)
                    printf(" %s %.1f us (%.0f TFLOP/s, %.0f MHz, %.0f W)%s", t.name.c_str(), t.med, lr.flops / t.med / 1e6,
                           t.smp.mean_mhz(), t.smp.mean_w(), &t == &lr.t.back() ? "" : ";");
                printf("\n");
                // the stages one by one, with the launcher's choice (or the first variant)
                int bv = 0;  // large if only diagnostics were asked for
                for (int v : vars)
                    if (!is_diag(v) && (bv == 0 || v == -1 || v == 6)) bv = v;
                std::vector<timed> st;
                static const char *sn[] = {"route+align", "gate+up f32 x", "gate+up bf16 x", "down", "combine"};
                for (int k = 0; k < 5; k++)
                    st.push_back({sn[k], [&s, M, tab, bv, k] { return run_layer(s, M, tab, bv, LB.out, k); }, {}, {}});
                time_all(st, g_reps);
                printf("  stages with %s (us, each alone, L2 flushed): route+align %.1f, gate+up %.1f (of which f32->bf16 "
                       "%.1f), down %.1f, combine %.1f; sum %.1f\n",
                       kname(bv), st[0].med, st[1].med, st[1].med - st[2].med, st[3].med, st[4].med,
                       st[0].med + st[1].med + st[3].med + st[4].med);
                fflush(stdout);
                layers.push_back(lr);
            }
        }
    }

    // -------------------------------------------------------------- summary ---
    if (!results.empty()) {
        printf("\n%-26s %6s %10s %6s", "GEMM", "M", "large us", "TF/s");
        for (int v : vars) printf(" %12s %6s %5s", (std::string(kname(v)) + " us").c_str(), "TF/s", "MHz");
        printf("\n");
        for (auto &r : results) {
            printf("%-26s %6d %10.1f %6.0f", r.name.c_str(), r.M, r.t[0].med, r.flops / r.t[0].med / 1e6);
            for (size_t i = 1; i < r.t.size(); i++)
                printf(" %12.1f %6.0f %5.0f", r.t[i].med, r.flops / r.t[i].med / 1e6, r.t[i].smp.mean_mhz());
            printf("\n");
        }
        printf("\nMoE layer GEMMs (gate+up + down, bf16 activations; TFLOP/s):\n");
        for (size_t i = 0; i + 1 < results.size(); i++) {
            const row_result &a = results[i], &b = results[i + 1];
            if (a.name.find("gate+up") == std::string::npos || b.name.find("down") == std::string::npos || a.M != b.M)
                continue;
            double fl = a.flops + b.flops;
            printf("%-26s %6d", a.name.substr(0, a.name.find(' ')).c_str(), a.M);
            for (size_t v = 0; v < a.t.size(); v++)
                printf("  %s %4.0f", a.t[v].name.c_str(), fl / (a.t[v].med + b.t[v].med) / 1e6);
            printf("\n");
        }
    }
    if (!layers.empty()) {
        printf("\nWHOLE MoE LAYER (route+align, gate+up from f32 x, down, combine): TFLOP/s (median us), "
               "6 * routed * H * I FLOP\n%-16s %6s", "layer", "M");
        for (auto &t : layers[0].t) printf(" %18s", t.name.c_str());
        printf("\n");
        for (auto &l : layers) {
            printf("%-16s %6d", l.name.c_str(), l.M);
            for (auto &t : l.t) {
                char b[40];
                snprintf(b, sizeof b, "%.0f (%.0f)", l.flops / t.med / 1e6, t.med);
                printf(" %18s", b);
            }
            printf("\n");
        }
        if (g_nvml.lib) {
            unsigned long long r = 0;
            for (auto &l : layers)
                for (auto &t : l.t) r |= t.smp.reasons;
            printf("clock-event reasons seen while timing (NVML bit mask): %#llx%s\n", r,
                   r & 0xec ? " (power / thermal capping among them)" : "");
        }
    }
    printf("\n%s (%.1f s)\n", g_fails ? "SOME CHECKS FAILED" : do_check ? "all checks passed" : "(checks skipped)",
           elapsed());
    return g_fails ? 1 : 0;
}
