// Kernel lab: the whole MoE layer and the dense projections on the GPU
// against their rooflines.
//
// MoE: for an expert shape (Mixtral-8x7B: H 4096, I 14336, 8 experts, top-2;
// Qwen3-30B-A3B: H 2048, I 768, 128 experts, top-8) and M tokens with random
// router logits, times one stream running
//   route -> align -> gate+up (SwiGLU, bf16 h) -> down -> combine
// (the router GEMM itself is a dense projection and not included) with the
// L2 flushed before every repetition, and prints it against
//   bound = bytes of the experts the batch routes to / measured HBM read BW
// Each variant (-v) is one way of running the layer:
//   old      basic.cu route, align_fast, the GEMM dispatch as it was (small
//            kernel up to 64 rows per group, else large), basic.cu combine
//   new      route+align in one launch (route_align), the GEMM dispatch of
//            lm_cuda_gg_run (stream kernel), combine_fast; programmatic
//            dependent launches (gate+up pdl 1, down pdl 2, the others 1)
// and options after a colon: new:pdl=0, new:nb=16, new:splits=2,
// new:stages=4, new:ctas=66, new:occ=1|2 (stream kernel CTAs per SM),
// new:gemm=auto|small|large|stream, new:ra=0 (separate route_fast + align
// launches), new:comb=0 (basic combine), new:dpdl=1 (the down GEMM without
// the early weight prefetch). Without -v: old, new, new:occ=1,
// new:gemm=large (the comparisons the stream kernel's choices rest on).
// The default run (all shapes, M up to 1024, with -d) is meant to take
// under two minutes on an H200.
// Each M is first checked: the plan (sel, weights, row_of, token_of, tiles,
// counts) bit for bit against basic.cu's route and align, the layer's
// output against the simple kernels (one warp per dot product, f32, tested
// against the CPU reference in tests/unit/test_ops.c) to a relative L2 of
// 1e-2 per token (bf16 activations), and a second run bit for bit against
// the first (split-K and everything else must be deterministic).
// A breakdown run per M (events between the stages, which also stops the
// launches from overlapping) says where the time goes; each GEMM stage is
// shown against its own bound.
//
// Dense (-d): the projections a decode step runs (4096->6144 QKV,
// 4096->4096, 4096->32000 LM head, 2048->5120, 2048->151936) at M = 1, 16,
// 64, 256 rows, f32 activations as cu_matmul passes them, checked against
// lm_cuda_matmul; bound = max(weight bytes / BW, flops / mma.sync peak).
//
//   make -C dev/kernels cuda && build/dev/moe_cuda [-s mixtral|qwen3|all|none] [-m 1,16,...]
//        [-d] [-D 1,16,64,256] [-r reps] [-v VARIANT]... [-q (no checks)] [-B (no breakdown)]
// Exit status 1 if any check fails.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.h"
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

struct shape {
    const char *name;
    int H, I, E, k, norm;
};
static const shape SHAPES[] = {{"mixtral", 4096, 14336, 8, 2, 1}, {"qwen3", 2048, 768, 128, 8, 1}};

struct dshape {
    const char *name;
    int K, O;
};
static const dshape DSHAPES[] = {{"qkv 4096>6144", 4096, 6144},       {"o 4096>4096", 4096, 4096},
                                 {"lm_head 4096>32000", 4096, 32000}, {"qkv 2048>5120", 2048, 5120},
                                 {"lm_head 2048>151936", 2048, 151936}};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float rndf() {  // uniform in [-1, 1)
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (2.0 / 16777216.0) - 1.0);
}

__global__ void k_fill_bf16(uint16_t *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12;
        float v = ((h >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale;
        __nv_bfloat16 b = __float2bfloat16(v);
        p[i] = *(uint16_t *)&b;
    }
}

static double measure_bw() {
    size_t bytes = (size_t)4 << 30;
    void *buf;
    CK(cudaMalloc(&buf, bytes));
    CK(cudaMemset(buf, 1, bytes));
    unsigned long long *sink;
    CK(cudaMalloc(&sink, 8));
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    double best = 0;
    for (int r = 0; r < 6; r++) {
        CK(cudaEventRecord(a));
        CK(lm_cuda_probe_read(buf, bytes / 16, sink, sms * 8, 0));
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        best = std::max(best, bytes / (ms * 1e-3));
    }
    CK(cudaFree(buf));
    CK(cudaFree(sink));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return best;
}

// mma.sync bf16 peak (as lightmoe bench measures it: 4 CTAs of 8 warps per SM)
static double measure_peak() {
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    float *sink;
    CK(cudaMalloc(&sink, 4));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    int blocks = sms * 4;
    double per_iter = (double)blocks * (LM_CUDA_PROBE_THREADS / 32) * LM_CUDA_PROBE_MMA_CHAINS * LM_CUDA_PROBE_MMA_FLOPS;
    long iters = 4096;
    CK(lm_cuda_probe_mma(256, 1u, sink, blocks, 0));
    double best = 0;
    for (int r = 0; r < 4; r++) {
        CK(cudaEventRecord(a));
        CK(lm_cuda_probe_mma(iters, 2u + r, sink, blocks, 0));
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (r == 0 && ms > 0) iters = (long)(iters * std::min(64.0, std::max(1.0, 30.0 / ms)));  // ~30 ms runs
        else best = std::max(best, per_iter * iters / (ms * 1e-3));
    }
    CK(cudaFree(sink));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return best;
}

// ------------------------------------------------------------- variants ---

struct variant {
    std::string name;
    bool old = false;          // the pre-stream layer (see the top)
    int pdl = 1, dpdl = 2, ra = 1, comb = 1, gemm = 0, nb = 0, splits = 0, stages = 0, ctas = 0, occ = 0;
};

static bool parse_variant(const char *s, variant *v) {
    *v = variant();
    v->name = s;
    std::string str = s, base = str.substr(0, str.find(':'));
    if (base == "old") v->old = true, v->pdl = 0, v->ra = 0, v->comb = 0;
    else if (base != "new") return false;
    for (size_t at = str.find(':'); at != std::string::npos;) {
        size_t nx = str.find(':', at + 1);
        std::string kv = str.substr(at + 1, nx == std::string::npos ? std::string::npos : nx - at - 1);
        size_t eq = kv.find('=');
        if (eq == std::string::npos) return false;
        std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
        int iv = atoi(val.c_str());
        if (key == "pdl") v->pdl = iv;
        else if (key == "dpdl") v->dpdl = iv;
        else if (key == "ra") v->ra = iv;
        else if (key == "comb") v->comb = iv;
        else if (key == "nb") v->nb = iv;
        else if (key == "splits") v->splits = iv;
        else if (key == "stages") v->stages = iv;
        else if (key == "ctas") v->ctas = iv;
        else if (key == "occ") v->occ = iv;
        else if (key == "gemm")
            v->gemm = val == "small" ? 1 : val == "large" ? 2 : val == "stream" ? 3 : val == "auto" ? 0 : -1;
        else return false;
        if (v->gemm < 0) return false;
        at = nx;
    }
    return true;
}

// the knobs of a variant on a GEMM call
static void apply(const variant &v, lm_cuda_gg *g, int pdl) {
    if (v.old) {  // the dispatch before the stream kernel: small up to 64 rows per group
        int groups = g->counts ? std::min(g->n_groups, g->n_rows) : 1, per = (g->n_rows + groups - 1) / groups;
        g->force = per <= 64 ? 1 : 2;
        return;
    }
    g->force = v.gemm, g->nb = v.nb, g->splits = v.splits, g->stages = v.stages, g->ctas = v.ctas, g->occ = v.occ;
    g->pdl = v.pdl ? pdl : 0;
}

// ------------------------------------------------------------------ MoE ---

struct layer {
    const shape *s;
    int M, rmax, B;
    float *x, *logits, *w, *out, *y, *hf, *out_ref, *y_ref;
    int *sel, *row_of, *token_of, *tiles, *n_tiles, *counts;
    void *h, *scratch, *ws;
    size_t scratch_bytes, ws_bytes;
    const void **gates, **ups, **downs;  // device arrays
};

static void gemm_up(const layer &L, const variant &v, lm_cuda_gg *up) {
    const shape &s = *L.s;
    *up = lm_cuda_gg();
    up->a = L.x, up->a_f32 = 1, up->lda = s.H, up->a_rows = L.M, up->a_row = L.token_of, up->counts = L.counts;
    up->n_groups = s.E, up->block = L.B, up->n_rows = L.M * s.k, up->w1 = L.gates, up->w2 = L.ups, up->ldw = s.H;
    up->K = s.H, up->O = s.I, up->swiglu = 1, up->out = L.h, up->ldo = s.I, up->scratch = L.scratch;
    up->scratch_bytes = L.scratch_bytes, up->ws = L.ws, up->ws_bytes = L.ws_bytes;
    apply(v, up, 1);  // right after align: its counts are not two launches back
}
static void gemm_down(const layer &L, const variant &v, lm_cuda_gg *dn) {
    const shape &s = *L.s;
    *dn = lm_cuda_gg();
    dn->a = L.h, dn->a_f32 = 0, dn->lda = s.I, dn->counts = L.counts, dn->n_groups = s.E, dn->block = L.B;
    dn->n_rows = L.M * s.k, dn->w1 = L.downs, dn->ldw = s.I, dn->K = s.I, dn->O = s.H, dn->out = L.y, dn->ldo = s.H;
    dn->ws = L.ws, dn->ws_bytes = L.ws_bytes;
    apply(v, dn, v.dpdl);  // 2: align wrote the counts before the gate+up GEMM ran: prefetch the down weights early
}

// One layer; ev[0..5] (if given) recorded between the stages:
// route | align | gate+up | down | combine.
static void run_layer(const layer &L, const variant &v, cudaStream_t st, cudaEvent_t *ev) {
    const shape &s = *L.s;
    const int pdl = v.pdl;
    if (ev) CK(cudaEventRecord(ev[0], st));
    if (v.ra) {
        CK(lm_cuda_route_align(L.logits, s.E, L.M, s.E, s.k, s.norm, L.sel, s.k, L.w, s.k, L.B, L.row_of, s.k,
                               L.token_of, L.tiles, L.n_tiles, L.counts, NULL, pdl, st));
        if (ev) CK(cudaEventRecord(ev[1], st));
    } else {
        if (v.old) CK(lm_cuda_route(L.logits, s.E, L.M, s.E, s.k, s.norm, L.sel, s.k, L.w, s.k, st));
        else CK(lm_cuda_route_fast(L.logits, s.E, L.M, s.E, s.k, s.norm, L.sel, s.k, L.w, s.k, pdl, st));
        if (ev) CK(cudaEventRecord(ev[1], st));
        CK(lm_cuda_align_fast_pdl(L.sel, s.k, L.M, s.k, s.E, L.B, L.row_of, s.k, L.token_of, L.tiles, L.n_tiles,
                                  L.counts, NULL, pdl, st));
    }
    if (ev) CK(cudaEventRecord(ev[2], st));
    lm_cuda_gg up, dn;
    gemm_up(L, v, &up);
    CK(lm_cuda_gg_run(&up, st));
    if (ev) CK(cudaEventRecord(ev[3], st));
    gemm_down(L, v, &dn);
    CK(lm_cuda_gg_run(&dn, st));
    if (ev) CK(cudaEventRecord(ev[4], st));
    if (v.comb) CK(lm_cuda_combine_fast(L.row_of, s.k, L.w, s.k, L.M, s.k, L.y, s.H, L.out, s.H, s.H, pdl, st));
    else CK(lm_cuda_combine(L.row_of, s.k, L.w, s.k, L.M, s.k, L.y, s.H, L.out, s.H, s.H, st));
    if (ev) CK(cudaEventRecord(ev[5], st));
}

// A device buffer's contents once everything queued has finished. The lab's
// work runs on a non-blocking stream, which the legacy default stream (that
// of a plain cudaMemcpy) does not wait for: without the device-wide sync a
// copy could read a reference the kernel had not written yet (the dense
// checks failed that way: zero or stale reference rows, err ~ |y|).
template <class T>
static std::vector<T> dl(const T *d, size_t n) {
    std::vector<T> v(n);
    CK(cudaDeviceSynchronize());
    if (n) CK(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

// The reference plan (basic.cu route + align) and layer (simple kernels, f32 h).
struct refplan {
    int *sel, *row_of, *token_of, *tiles, *n_tiles, *counts;
    float *w;
};
static void run_ref(const layer &L, const refplan &R, cudaStream_t st) {
    const shape &s = *L.s;
    CK(lm_cuda_route(L.logits, s.E, L.M, s.E, s.k, s.norm, R.sel, s.k, R.w, s.k, st));
    CK(lm_cuda_align(R.sel, s.k, L.M, s.k, s.E, L.B, R.row_of, s.k, R.token_of, R.tiles, R.n_tiles, R.counts, NULL, st));
    CK(lm_cuda_gateup(L.x, s.H, L.rmax, R.token_of, R.tiles, R.n_tiles, L.B, L.gates, L.ups, NULL, NULL, 2, s.H, s.H, s.I,
                      L.hf, 0, s.I, st));
    CK(lm_cuda_down(L.hf, 0, s.I, L.rmax, R.token_of, R.tiles, R.n_tiles, L.B, L.downs, NULL, 2, s.I, s.I, s.H, L.y_ref, s.H,
                    st));
    CK(lm_cuda_combine(R.row_of, s.k, R.w, s.k, L.M, s.k, L.y_ref, s.H, L.out_ref, s.H, s.H, st));
}

// max over rows of |a - r| / |r| (L2 per row)
static double rel_err(const std::vector<float> &o, const std::vector<float> &r, int rows, int cols) {
    double err = 0;
    for (int t = 0; t < rows; t++) {
        double d2 = 0, r2 = 0;
        for (int c = 0; c < cols; c++) {
            double d = (double)o[(size_t)t * cols + c] - r[(size_t)t * cols + c];
            d2 += d * d, r2 += (double)r[(size_t)t * cols + c] * r[(size_t)t * cols + c];
        }
        double e = sqrt(d2 / (r2 > 0 ? r2 : 1));
        if (!(e <= err)) err = e;
    }
    return err;
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

struct row {  // one line of the summary
    std::string what;
    double bound;
    std::vector<double> us;  // per variant
    std::string note;
};

int main(int argc, char **argv) {
    const char *which = "all", *mlist = "1,4,16,64,128,256,512,1024", *dlist = "1,16,64,256";
    int reps = 10, check = 1, dense = 0, breakdown = 1;
    std::vector<variant> vars;
    for (int i = 1; i < argc; i++) {
        variant v;
        if (!strcmp(argv[i], "-s") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mlist = argv[++i];
        else if (!strcmp(argv[i], "-D") && i + 1 < argc) dlist = argv[++i], dense = 1;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = std::max(1, atoi(argv[++i]));
        else if (!strcmp(argv[i], "-v") && i + 1 < argc && parse_variant(argv[i + 1], &v)) vars.push_back(v), i++;
        else if (!strcmp(argv[i], "-d")) dense = 1;
        else if (!strcmp(argv[i], "-q")) check = 0;
        else if (!strcmp(argv[i], "-B")) breakdown = 0;
        else {
            fprintf(stderr,
                    "usage: moe_cuda [-s mixtral|qwen3|all|none] [-m 1,16,...] [-d] [-D 1,16,64,256] [-r reps]\n"
                    "                [-v old|new[:pdl=0|1][:dpdl=0|1|2][:ra=0|1][:comb=0|1][:gemm=auto|small|large|stream]\n"
                    "                        [:nb=N][:splits=N][:stages=N][:ctas=N][:occ=1|2]]... [-q] [-B]\n");
            return 2;
        }
    }
    if (vars.empty()) {
        variant v;
        parse_variant("old", &v), vars.push_back(v);
        parse_variant("new", &v), vars.push_back(v);
        parse_variant("new:occ=1", &v), vars.push_back(v);
        parse_variant("new:gemm=large", &v), vars.push_back(v);
    }
    auto parse_list = [](const char *p) {
        std::vector<int> r;
        while (*p) {
            r.push_back(atoi(p));
            while (*p && *p != ',') p++;
            if (*p) p++;
        }
        return r;
    };
    std::vector<int> Ms = parse_list(mlist), Ds = parse_list(dlist);
    size_t first_new = 0;
    while (first_new < vars.size() && vars[first_new].old) first_new++;
    int maxM = std::max(*std::max_element(Ms.begin(), Ms.end()), *std::max_element(Ds.begin(), Ds.end()));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double bw = measure_bw(), peak = measure_peak();
    printf("device %s, %d SMs, %.0f MB L2; HBM read %.0f GB/s (4 GiB stream, best of 6); mma.sync bf16 peak %.0f TFLOP/s\n",
           prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, bw / 1e9, peak / 1e12);
    printf("variants:");
    for (auto &v : vars) printf(" [%s]", v.name.c_str());
    printf("\n");
    size_t flush_bytes = (size_t)256 << 20;
    void *flush;
    CK(cudaMalloc(&flush, flush_bytes));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t ev[6];
    for (auto &e : ev) CK(cudaEventCreate(&e));
    int fails = 0;
    std::vector<row> summary;

    // split-K workspace for every call of this run (zeroed once, as gemm.h says)
    size_t ws_bytes = 0;
    for (const shape &s : SHAPES) {
        ws_bytes = std::max(ws_bytes, lm_cuda_gg_ws_bytes(maxM * s.k, s.E, s.I, s.H));
        ws_bytes = std::max(ws_bytes, lm_cuda_gg_ws_bytes(maxM * s.k, s.E, s.H, s.I));
    }
    for (const dshape &d : DSHAPES) ws_bytes = std::max(ws_bytes, lm_cuda_gg_ws_bytes(maxM, 0, d.O, d.K));
    ws_bytes = std::min(ws_bytes, (size_t)1 << 30);  // a smaller one only limits the split
    void *ws;
    CK(cudaMalloc(&ws, ws_bytes));
    CK(cudaMemset(ws, 0, ws_bytes));

    for (const shape &s : SHAPES) {
        if (strcmp(which, "all") && strcmp(which, s.name)) continue;
        size_t per = (size_t)s.H * s.I;  // elements of one matrix
        uint16_t *wall;
        CK(cudaMalloc(&wall, 3 * per * s.E * 2));
        k_fill_bf16<<<4096, 256>>>(wall, 3 * per * s.E, 12345u, 1.0f / sqrtf((float)s.H));
        CK(cudaGetLastError());
        std::vector<const void *> hp(3 * s.E);
        for (int e = 0; e < s.E; e++)
            for (int m = 0; m < 3; m++) hp[m * s.E + e] = wall + (size_t)(3 * e + m) * per;
        const void **tab;
        CK(cudaMalloc(&tab, hp.size() * sizeof(void *)));
        CK(cudaMemcpy(tab, hp.data(), hp.size() * sizeof(void *), cudaMemcpyHostToDevice));

        layer L = {};
        L.s = &s, L.B = 16, L.ws = ws, L.ws_bytes = ws_bytes;
        int rmax_all = maxM * s.k + s.E * (L.B - 1);
        std::vector<float> hx((size_t)maxM * s.H), hl((size_t)maxM * s.E);
        for (auto &v : hx) v = rndf();
        for (auto &v : hl) v = 2 * rndf();
        CK(cudaMalloc(&L.x, hx.size() * 4));
        CK(cudaMalloc(&L.logits, hl.size() * 4));
        CK(cudaMemcpy(L.x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(L.logits, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&L.w, (size_t)maxM * s.k * 4));
        CK(cudaMalloc(&L.sel, (size_t)maxM * s.k * 4));
        int *ints;
        size_t ntl = rmax_all / L.B + s.E;
        size_t n_ints = (size_t)2 * maxM * s.k + 2 * rmax_all + 4 * ntl + 2 + 2 * s.E + (size_t)maxM * s.k;
        CK(cudaMalloc(&ints, n_ints * 4));
        int *ip = ints;
        L.row_of = ip, ip += maxM * s.k;
        L.token_of = ip, ip += rmax_all;
        L.tiles = ip, ip += 2 * ntl;
        L.n_tiles = ip++;
        L.counts = ip, ip += s.E;
        refplan R;
        R.sel = ip, ip += maxM * s.k;
        R.row_of = ip, ip += maxM * s.k;
        R.token_of = ip, ip += rmax_all;
        R.tiles = ip, ip += 2 * ntl;
        R.n_tiles = ip++;
        R.counts = ip, ip += s.E;
        CK(cudaMalloc(&R.w, (size_t)maxM * s.k * 4));
        CK(cudaMalloc(&L.h, (size_t)rmax_all * s.I * 2));
        CK(cudaMalloc(&L.y, (size_t)rmax_all * s.H * 4));
        CK(cudaMalloc(&L.out, (size_t)maxM * s.H * 4));
        CK(cudaMalloc(&L.scratch, (size_t)maxM * s.H * 2));
        if (check) {
            CK(cudaMalloc(&L.hf, (size_t)rmax_all * s.I * 4));
            CK(cudaMalloc(&L.y_ref, (size_t)rmax_all * s.H * 4));
            CK(cudaMalloc(&L.out_ref, (size_t)maxM * s.H * 4));
        }
        L.gates = tab, L.ups = tab + s.E, L.downs = tab + 2 * s.E;

        printf("\n%s: H %d, I %d, %d experts, top-%d (bf16 weights, %.1f MB per expert)\n", s.name, s.H, s.I, s.E, s.k,
               3.0 * per * 2 / 1e6);
        printf("%6s %7s %9s  %-24s %9s %7s %7s %9s %s\n", "M", "experts", "bound us", "variant", "time us", "x bound",
               "GB/s", "rel err", "check");
        for (int M : Ms) {
            L.M = M, L.rmax = M * s.k + s.E * (L.B - 1);
            L.scratch_bytes = (size_t)M * s.H * 2;  // the large path converts every token row: size it to M
            row sr;
            char buf[64];
            snprintf(buf, sizeof buf, "%s M=%d", s.name, M);
            sr.what = buf;
            std::vector<float> ref_out;
            std::vector<int> ref_sel, ref_row, ref_tok, ref_tiles, ref_cnt;
            std::vector<float> ref_w;
            int ref_nt = 0, active = 0;
            if (check) {
                run_ref(L, R, st);
                CK(cudaStreamSynchronize(st));
                ref_out = dl(L.out_ref, (size_t)M * s.H);
                ref_sel = dl(R.sel, (size_t)M * s.k), ref_w = dl(R.w, (size_t)M * s.k);
                ref_row = dl(R.row_of, (size_t)M * s.k), ref_cnt = dl(R.counts, s.E);
                ref_nt = dl(R.n_tiles, 1)[0];
                ref_tiles = dl(R.tiles, 2 * (size_t)ref_nt), ref_tok = dl(R.token_of, (size_t)ref_nt * L.B);
            }
            for (size_t vi = 0; vi < vars.size(); vi++) {
                const variant &v = vars[vi];
                run_layer(L, v, st, NULL);
                CK(cudaStreamSynchronize(st));
                std::vector<int> cnt = dl(L.counts, s.E);
                active = 0;
                for (int c : cnt) active += c > 0;
                double err = 0;
                const char *verdict = "-";
                if (check) {
                    std::vector<float> o = dl(L.out, (size_t)M * s.H);
                    bool same = dl(L.sel, (size_t)M * s.k) == ref_sel && dl(L.w, (size_t)M * s.k) == ref_w &&
                                dl(L.row_of, (size_t)M * s.k) == ref_row && cnt == ref_cnt &&
                                dl(L.n_tiles, 1)[0] == ref_nt && dl(L.tiles, 2 * (size_t)ref_nt) == ref_tiles &&
                                dl(L.token_of, (size_t)ref_nt * L.B) == ref_tok;
                    err = rel_err(o, ref_out, M, s.H);
                    run_layer(L, v, st, NULL);  // again: bit for bit
                    CK(cudaStreamSynchronize(st));
                    bool det = dl(L.out, (size_t)M * s.H) == o;
                    bool ok = same && det && err <= 1e-2;
                    verdict = ok ? "PASS" : !same ? "FAIL(plan)" : !det ? "FAIL(not deterministic)" : "FAIL(values)";
                    fails += !ok;
                }
                std::vector<float> ts;
                for (int r = 0; r < reps + 2; r++) {
                    CK(cudaMemsetAsync(flush, r, flush_bytes, st));  // evict the weights from L2
                    CK(cudaEventRecord(ev[0], st));
                    run_layer(L, v, st, NULL);
                    CK(cudaEventRecord(ev[5], st));
                    CK(cudaEventSynchronize(ev[5]));
                    float ms;
                    CK(cudaEventElapsedTime(&ms, ev[0], ev[5]));
                    if (r >= 2) ts.push_back(ms * 1e3f);
                }
                double us = median(ts);
                double bytes = (double)active * 3 * per * 2, bound = bytes / bw * 1e6;
                sr.bound = bound, sr.us.push_back(us);
                printf("%6d %7d %9.1f  %-24s %9.1f %7.2f %7.0f %9.2e %s\n", M, active, bound, v.name.c_str(), us,
                       us / bound, bytes / (us * 1e-6) / 1e9, err, verdict);
                if (v.old) continue;
                lm_cuda_gg up, dn;
                gemm_up(L, v, &up);
                gemm_down(L, v, &dn);
                char d1[256], d2[256];
                lm_cuda_gg_describe(&up, d1, sizeof d1);
                lm_cuda_gg_describe(&dn, d2, sizeof d2);
                printf("%6s %7s %9s    gate+up: %s\n%6s %7s %9s    down:    %s\n", "", "", "", d1, "", "", "", d2);
                if (!breakdown || vi != first_new) continue;
                // where the time goes (the first "new" variant): stages between events
                std::vector<float> stg[5];
                for (int r = 0; r < reps + 2; r++) {
                    CK(cudaMemsetAsync(flush, r, flush_bytes, st));
                    run_layer(L, v, st, ev);
                    CK(cudaEventSynchronize(ev[5]));
                    for (int q = 0; q < 5; q++) {
                        float ms;
                        CK(cudaEventElapsedTime(&ms, ev[q], ev[q + 1]));
                        if (r >= 2) stg[q].push_back(ms * 1e3f);
                    }
                }
                double b_up = active * 2.0 * per * 2 / bw * 1e6, b_dn = active * 1.0 * per * 2 / bw * 1e6;
                double t[5], sum = 0;
                for (int q = 0; q < 5; q++) sum += t[q] = median(stg[q]);
                printf("%6s %7s %9s    stages (us): route %.1f + align %.1f + gate+up %.1f (%.2fx of %.1f) + down %.1f "
                       "(%.2fx of %.1f) + combine %.1f = %.1f (whole %.1f)\n",
                       "", "", "", t[0], t[1], t[2], t[2] / b_up, b_up, t[3], t[3] / b_dn, b_dn, t[4], sum, us);
                char nb[200];
                snprintf(nb, sizeof nb, "ra %.1f up %.1f(%.2fx) dn %.1f(%.2fx) comb %.1f", t[0] + t[1], t[2],
                         t[2] / b_up, t[3], t[3] / b_dn, t[4]);
                sr.note = nb;
            }
            summary.push_back(sr);
            fflush(stdout);
        }
        CK(cudaFree(wall));
        CK(cudaFree(tab));
        CK(cudaFree(L.x));
        CK(cudaFree(L.logits));
        CK(cudaFree(L.w));
        CK(cudaFree(L.sel));
        CK(cudaFree(ints));
        CK(cudaFree(R.w));
        CK(cudaFree(L.h));
        CK(cudaFree(L.y));
        CK(cudaFree(L.out));
        CK(cudaFree(L.scratch));
        if (check) {
            CK(cudaFree(L.hf));
            CK(cudaFree(L.y_ref));
            CK(cudaFree(L.out_ref));
        }
    }

    // ---------------------------------------------------------------- dense
    if (dense) {
        int maxD = *std::max_element(Ds.begin(), Ds.end());
        size_t maxKO = 0, maxK = 0;
        for (const dshape &d : DSHAPES) maxKO = std::max(maxKO, (size_t)d.K * d.O), maxK = std::max(maxK, (size_t)d.K);
        uint16_t *W;
        CK(cudaMalloc(&W, maxKO * 2));
        k_fill_bf16<<<4096, 256>>>(W, maxKO, 777u, 1.0f / 64);
        CK(cudaGetLastError());
        size_t maxO = 0;
        for (const dshape &d : DSHAPES) maxO = std::max(maxO, (size_t)d.O);
        float *x, *y, *yref;
        void *scratch;
        CK(cudaMalloc(&x, (size_t)maxD * maxK * 4));
        CK(cudaMalloc(&y, (size_t)maxD * maxO * 4));
        CK(cudaMalloc(&yref, (size_t)maxD * maxO * 4));
        CK(cudaMalloc(&scratch, (size_t)maxD * maxK * 2));
        std::vector<float> hx((size_t)maxD * maxK);
        for (auto &v : hx) v = rndf();
        CK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
        printf("\ndense projections (f32 activations, bf16 weights, f32 out)\n");
        printf("%-20s %5s %9s %9s  %-24s %9s %7s %9s %s\n", "shape", "M", "bw us", "flop us", "variant", "time us",
               "x bound", "rel err", "check");
        for (const dshape &d : DSHAPES)
            for (int M : Ds) {
                row sr;
                char buf[64];
                snprintf(buf, sizeof buf, "%s M=%d", d.name, M);
                sr.what = buf;
                double b_bw = (double)d.K * d.O * 2 / bw * 1e6, b_fl = 2.0 * M * d.K * d.O / peak * 1e6;
                sr.bound = std::max(b_bw, b_fl);
                std::vector<float> ref;
                if (check) {
                    CK(lm_cuda_matmul(x, d.K, M, W, 2, d.K, d.O, d.K, NULL, 0, yref, d.O, st));
                    ref = dl(yref, (size_t)M * d.O);
                }
                for (const variant &v : vars) {
                    lm_cuda_gg g = lm_cuda_gg();
                    g.a = x, g.a_f32 = 1, g.lda = d.K, g.a_rows = M, g.n_rows = M, g.w1_0 = W, g.ldw = d.K, g.K = d.K;
                    g.O = d.O, g.out = y, g.ldo = d.O, g.scratch = scratch, g.scratch_bytes = (size_t)M * d.K * 2;
                    g.ws = ws, g.ws_bytes = ws_bytes;
                    apply(v, &g, 1);
                    double err = 0;
                    const char *verdict = "-";
                    if (check) {
                        CK(lm_cuda_gg_run(&g, st));
                        CK(cudaStreamSynchronize(st));
                        std::vector<float> o = dl(y, (size_t)M * d.O);
                        err = rel_err(o, ref, M, d.O);
                        CK(lm_cuda_gg_run(&g, st));
                        CK(cudaStreamSynchronize(st));
                        bool det = dl(y, (size_t)M * d.O) == o, ok = det && err <= 1e-2;
                        verdict = ok ? "PASS" : !det ? "FAIL(not deterministic)" : "FAIL(values)";
                        fails += !ok;
                    }
                    std::vector<float> ts;
                    for (int r = 0; r < reps + 2; r++) {
                        CK(cudaMemsetAsync(flush, r, flush_bytes, st));
                        CK(cudaEventRecord(ev[0], st));
                        CK(lm_cuda_gg_run(&g, st));
                        CK(cudaEventRecord(ev[1], st));
                        CK(cudaEventSynchronize(ev[1]));
                        float ms;
                        CK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
                        if (r >= 2) ts.push_back(ms * 1e3f);
                    }
                    double us = median(ts);
                    sr.us.push_back(us);
                    char desc[256];
                    lm_cuda_gg_describe(&g, desc, sizeof desc);
                    printf("%-20s %5d %9.1f %9.1f  %-24s %9.1f %7.2f %9.2e %s  [%s]\n", d.name, M, b_bw, b_fl,
                           v.name.c_str(), us, us / sr.bound, err, verdict, desc);
                }
                summary.push_back(sr);
                fflush(stdout);
            }
        CK(cudaFree(W));
        CK(cudaFree(x));
        CK(cudaFree(y));
        CK(cudaFree(yref));
        CK(cudaFree(scratch));
    }

    printf("\nsummary: time / bound per variant");
    for (size_t i = 0; i < vars.size(); i++) printf("  v%zu=[%s]", i, vars[i].name.c_str());
    printf("\n%-26s %9s", "case", "bound us");
    for (size_t i = 0; i < vars.size(); i++) printf("   v%zu us   x", i);
    printf("  best  stages of v%zu (us, x own bound)\n", first_new);
    for (auto &r : summary) {
        printf("%-26s %9.1f", r.what.c_str(), r.bound);
        size_t best = 0;
        for (size_t i = 0; i < r.us.size(); i++) {
            printf(" %8.1f %5.2f", r.us[i], r.us[i] / r.bound);
            if (r.us[i] < r.us[best]) best = i;
        }
        printf("   v%zu   %s\n", best, r.note.c_str());
    }
    printf("\n%s\n", fails ? "SOME CHECKS FAILED" : check ? "all checks passed" : "(checks skipped)");
    CK(cudaFree(ws));
    CK(cudaFree(flush));
    return fails ? 1 : 0;
}
