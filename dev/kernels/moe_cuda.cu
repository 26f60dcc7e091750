// Kernel lab: the whole MoE layer on the GPU against its roofline.
//
// For an expert shape (Mixtral-8x7B: H 4096, I 14336, 8 experts, top-2;
// Qwen3-30B-A3B: H 2048, I 768, 128 experts, top-8) and M tokens with random
// router logits, times one stream running
//   route -> align -> gate+up (SwiGLU, bf16 h) -> down -> combine
// (the router GEMM itself is a dense projection and not included) with the
// L2 flushed before every repetition, and prints it against
//   bound = bytes of the experts the batch routes to / measured HBM read BW
// and as TFLOP/s. Each M is first checked against the simple kernels (one
// warp per dot product, f32 activations, tested op by op against the CPU
// reference in tests/unit/test_ops.c): align must match bit for bit, the
// layer's output to a relative L2 of 1e-2 per token (bf16 activations).
//
//   make -C dev/kernels cuda && build/dev/moe_cuda [-s mixtral|qwen3|all] [-m 1,16,...] [-r reps]
//        [-f auto|small|large] [-q (no checks)]
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/probe.h"

#define CK(x)                                                                                       \
    do {                                                                                            \
        cudaError_t e_ = (cudaError_t)(x);                                                          \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

struct shape {
    const char *name;
    int H, I, E, k, norm;
};
static const shape SHAPES[] = {{"mixtral", 4096, 14336, 8, 2, 1}, {"qwen3", 2048, 768, 128, 8, 1}};

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
    return best;
}

struct layer {
    const shape *s;
    int M, rmax, B;
    float *x, *logits, *w, *out, *y, *hf, *out_ref, *y_ref;
    int *sel, *row_of, *token_of, *tiles, *n_tiles, *counts;
    void *h, *scratch;
    size_t scratch_bytes;
    const void **gates, **ups, **downs;  // device arrays
};

static void run_layer(layer &L, int force, cudaStream_t st) {
    const shape &s = *L.s;
    CK(lm_cuda_route(L.logits, s.E, L.M, s.E, s.k, s.norm, L.sel, s.k, L.w, s.k, st));
    CK(lm_cuda_align_fast(L.sel, s.k, L.M, s.k, s.E, L.B, L.row_of, s.k, L.token_of, L.tiles, L.n_tiles, L.counts,
                          NULL, st));
    lm_cuda_gg up = {};
    up.a = L.x, up.a_f32 = 1, up.lda = s.H, up.a_rows = L.M, up.a_row = L.token_of, up.counts = L.counts, up.n_groups = s.E;
    up.block = L.B, up.n_rows = L.M * s.k, up.w1 = L.gates, up.w2 = L.ups, up.ldw = s.H, up.K = s.H, up.O = s.I;
    up.swiglu = 1, up.out = L.h, up.ldo = s.I, up.scratch = L.scratch, up.scratch_bytes = L.scratch_bytes;
    up.force = force;
    CK(lm_cuda_gg_run(&up, st));
    lm_cuda_gg dn = {};
    dn.a = L.h, dn.a_f32 = 0, dn.lda = s.I, dn.counts = L.counts, dn.n_groups = s.E, dn.block = L.B;
    dn.n_rows = L.M * s.k, dn.w1 = L.downs, dn.ldw = s.I, dn.K = s.I, dn.O = s.H, dn.out = L.y, dn.ldo = s.H;
    dn.force = force;
    CK(lm_cuda_gg_run(&dn, st));
    CK(lm_cuda_combine(L.row_of, s.k, L.w, s.k, L.M, s.k, L.y, s.H, L.out, s.H, s.H, st));
}

// The simple kernels' layer (f32 h), with their own align: the checker.
static void run_ref(layer &L, int *row_of2, int *token_of2, int *tiles2, int *nt2, int *counts2, cudaStream_t st) {
    const shape &s = *L.s;
    CK(lm_cuda_align(L.sel, s.k, L.M, s.k, s.E, L.B, row_of2, s.k, token_of2, tiles2, nt2, counts2, NULL, st));
    CK(lm_cuda_gateup(L.x, s.H, L.rmax, token_of2, tiles2, nt2, L.B, L.gates, L.ups, NULL, NULL, 2, s.H, s.H, s.I,
                      L.hf, 0, s.I, st));
    CK(lm_cuda_down(L.hf, 0, s.I, L.rmax, token_of2, tiles2, nt2, L.B, L.downs, NULL, 2, s.I, s.I, s.H, L.y_ref, s.H,
                    st));
    CK(lm_cuda_combine(row_of2, s.k, L.w, s.k, L.M, s.k, L.y_ref, s.H, L.out_ref, s.H, s.H, st));
}

template <class T>
static std::vector<T> dl(const T *d, size_t n) {
    std::vector<T> v(n);
    if (n) CK(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

int main(int argc, char **argv) {
    const char *which = "all", *mlist = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192";
    int reps = 10, force = 0, check = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mlist = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-f") && i + 1 < argc) {
            ++i;
            force = !strcmp(argv[i], "small") ? 1 : !strcmp(argv[i], "large") ? 2 : 0;
        } else if (!strcmp(argv[i], "-q")) check = 0;
        else {
            fprintf(stderr, "usage: moe_cuda [-s mixtral|qwen3|all] [-m 1,16,...] [-r reps] [-f auto|small|large] [-q]\n");
            return 2;
        }
    }
    std::vector<int> Ms;
    for (const char *p = mlist; *p;) {
        Ms.push_back(atoi(p));
        while (*p && *p != ',') p++;
        if (*p) p++;
    }
    int maxM = *std::max_element(Ms.begin(), Ms.end());
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double bw = measure_bw();
    printf("device %s, %d SMs; measured HBM read bandwidth %.0f GB/s (4 GiB stream, best of 6)\n", prop.name,
           prop.multiProcessorCount, bw / 1e9);
    size_t flush_bytes = (size_t)256 << 20;
    void *flush;
    CK(cudaMalloc(&flush, flush_bytes));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t ev0, ev1;
    CK(cudaEventCreate(&ev0));
    CK(cudaEventCreate(&ev1));
    int fails = 0;

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
        L.s = &s, L.B = 16;
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
        size_t n_ints = (size_t)2 * maxM * s.k + 2 * rmax_all + 4 * (rmax_all / L.B + s.E) + 2 + 2 * s.E;
        CK(cudaMalloc(&ints, n_ints * 4));
        int *ip = ints;
        L.row_of = ip, ip += maxM * s.k;
        L.token_of = ip, ip += rmax_all;
        L.tiles = ip, ip += 2 * (rmax_all / L.B + s.E);
        L.n_tiles = ip++;
        L.counts = ip, ip += s.E;
        int *row_of2 = ip, *token_of2, *tiles2, *nt2, *counts2;
        ip += maxM * s.k;
        token_of2 = ip, ip += rmax_all;
        tiles2 = ip, ip += 2 * (rmax_all / L.B + s.E);
        nt2 = ip++;
        counts2 = ip, ip += s.E;
        CK(cudaMalloc(&L.h, (size_t)rmax_all * s.I * 2));
        CK(cudaMalloc(&L.y, (size_t)rmax_all * s.H * 4));
        CK(cudaMalloc(&L.out, (size_t)maxM * s.H * 4));
        L.scratch_bytes = (size_t)maxM * s.H * 2;
        CK(cudaMalloc(&L.scratch, L.scratch_bytes));
        if (check) {
            CK(cudaMalloc(&L.hf, (size_t)rmax_all * s.I * 4));
            CK(cudaMalloc(&L.y_ref, (size_t)rmax_all * s.H * 4));
            CK(cudaMalloc(&L.out_ref, (size_t)maxM * s.H * 4));
        }
        L.gates = tab, L.ups = tab + s.E, L.downs = tab + 2 * s.E;

        printf("\n%s: H %d, I %d, %d experts, top-%d (bf16 weights, %.1f MB per expert)\n", s.name, s.H, s.I, s.E, s.k,
               3.0 * per * 2 / 1e6);
        printf("%6s %7s %10s %10s %8s %9s %10s %9s %s\n", "M", "experts", "time us", "bound us", "x bound", "GB/s",
               "TFLOP/s", "rel err", "check");
        for (int M : Ms) {
            L.M = M, L.rmax = M * s.k + s.E * (L.B - 1);
            // the scratch of the large path converts every token row: size it to M
            L.scratch_bytes = (size_t)M * s.H * 2;
            run_layer(L, force, st);
            CK(cudaStreamSynchronize(st));
            std::vector<int> cnt = dl(L.counts, s.E);
            int active = 0;
            for (int c : cnt) active += c > 0;
            double err = 0;
            const char *verdict = "-";
            if (check) {
                run_ref(L, row_of2, token_of2, tiles2, nt2, counts2, st);
                CK(cudaStreamSynchronize(st));
                bool same = dl(L.row_of, (size_t)M * s.k) == dl(row_of2, (size_t)M * s.k) &&
                            dl(L.counts, s.E) == dl(counts2, s.E) && dl(L.n_tiles, 1) == dl(nt2, 1);
                int nt = dl(nt2, 1)[0];
                same = same && dl(L.tiles, 2 * (size_t)nt) == dl(tiles2, 2 * (size_t)nt) &&
                       dl(L.token_of, (size_t)nt * L.B) == dl(token_of2, (size_t)nt * L.B);
                std::vector<float> o = dl(L.out, (size_t)M * s.H), r = dl(L.out_ref, (size_t)M * s.H);
                for (int t = 0; t < M; t++) {
                    double d2 = 0, r2 = 0;
                    for (int c = 0; c < s.H; c++) {
                        double d = (double)o[(size_t)t * s.H + c] - r[(size_t)t * s.H + c];
                        d2 += d * d, r2 += (double)r[(size_t)t * s.H + c] * r[(size_t)t * s.H + c];
                    }
                    double e = sqrt(d2 / (r2 > 0 ? r2 : 1));
                    if (!(e <= err)) err = e;
                }
                bool ok = same && err <= 1e-2;
                verdict = ok ? "PASS" : same ? "FAIL(values)" : "FAIL(align)";
                fails += !ok;
            }
            std::vector<float> ts;
            for (int r = 0; r < reps + 2; r++) {
                CK(cudaMemsetAsync(flush, r, flush_bytes, st));  // evict the weights from L2
                CK(cudaEventRecord(ev0, st));
                run_layer(L, force, st);
                CK(cudaEventRecord(ev1, st));
                CK(cudaEventSynchronize(ev1));
                float ms;
                CK(cudaEventElapsedTime(&ms, ev0, ev1));
                if (r >= 2) ts.push_back(ms * 1e3f);
            }
            std::sort(ts.begin(), ts.end());
            double us = ts[ts.size() / 2];
            double bytes = (double)active * 3 * per * 2, bound = bytes / bw * 1e6;
            double flops = 2.0 * M * s.k * 3 * per;
            printf("%6d %7d %10.1f %10.1f %8.2f %9.0f %10.1f %9.2e %s\n", M, active, us, bound, us / bound,
                   bytes / (us * 1e-6) / 1e9, flops / (us * 1e-6) / 1e12, err, verdict);
            fflush(stdout);
        }
        CK(cudaFree(wall));
        CK(cudaFree(tab));
        CK(cudaFree(L.x));
        CK(cudaFree(L.logits));
        CK(cudaFree(L.w));
        CK(cudaFree(L.sel));
        CK(cudaFree(ints));
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
    printf("\n%s\n", fails ? "SOME CHECKS FAILED" : check ? "all checks passed" : "(checks skipped)");
    return fails ? 1 : 0;
}
