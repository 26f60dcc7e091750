// Kernel lab: sampling on the GPU (src/kernels/cuda/sample.cu) against the CPU sampler (src/engine/sample.c).
//   nvcc -O2 -std=c++17 -D_GNU_SOURCE -Iinclude -Isrc -gencode arch=compute_90a,code=sm_90a -o build/dev/sample_cuda dev/kernels/sample_cuda.cu src/kernels/cuda/sample.cu src/engine/sample.c src/kernels/cpu/*.c src/util/err.c src/util/fmt.c src/util/dtype.c src/util/file.c
//   (or: make -C dev/kernels sample, which builds the C sources with the host compiler)
//
//   sample_cuda            correctness, then timing
//   sample_cuda --check    correctness only: random and adversarial logits (ties,
//                          -inf, NaN, +inf, all equal, sorted, flat, vocab 1 ..
//                          262144) x parameter sweeps (greedy, temperature 1e-30 ..
//                          100, top-k 1 .. 5000, top-p 1e-9 .. 0.999999), banned
//                          ids, n_valid < V, logprobs and top-20, padding and
//                          check-only rows, misaligned rows, 1024 rows in one
//                          launch, the 512-thread variant, the global-memory
//                          selections forced
//   sample_cuda --time     timing only: vocab 32000 / 151936 x n 1 / 16 / 64 / 256 x
//                          greedy / chat (T 0.7, top-k 40, top-p 0.9) / nucleus
//                          (T 1, top-p 0.95) / every id (T 1) / chat + logprobs
//                          top-5, 1024 and 512 threads; plus a flat row (nucleus
//                          wider than the candidates) and the forced fallback
//   options: -r N reps (20), --warm-l2 (no L2 flush)
//
// Every GPU id is compared with lm_sampler_sample_with on the same logits and
// (seed, stream, step), the CPU on its scalar ISA (glibc's expf; CUDA's expf is
// within 2 ulp of it). A differing id counts as "boundary" when a double
// replay of the semantics puts one of its decisions (the k-th p, the nucleus
// edge, the draw) within 1e-5 relative, else as a failure; greedy ids must be
// the same. Exit status 1 if a check fails, 2 on any CUDA error.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

extern "C" {
#include "engine/sample.h"
#include "kernels/cpu/kernels.h"
}
#include "kernels/cuda/sample.h"
#include "sample_ref.h"

#define CK(call)                                                                                                   \
    do {                                                                                                           \
        cudaError_t e_ = (cudaError_t)(call);                                                                      \
        if (e_ != cudaSuccess) {                                                                                   \
            fprintf(stderr, "sample_cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                                               \
        }                                                                                                          \
    } while (0)

using sref::rowp;

static sref::rng R;
static int n_fail;

// ------------------------------------------------------------- roofline ---

__global__ void k_read(const int4 *p, size_t n, int *sink) {
    int4 a = make_int4(0, 0, 0, 0);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int4 v = __ldcs(p + i);
        a.x ^= v.x, a.y ^= v.y, a.z ^= v.z, a.w ^= v.w;
    }
    if ((a.x ^ a.y ^ a.z ^ a.w) == 0x7e57ab1e) *sink = a.x;
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

// ------------------------------------------------------------ checking ---

struct ccase {
    std::string name;
    int V;
    sref::kind k;
    std::vector<rowp> rows;
    int n_top = 0, threads = 1024, ld_pad = 3;
    bool logprob = false, use_ban = false, force_global = false, misalign = false;
};

struct cstats {
    long rows = 0, same = 0, boundary = 0, fail = 0, lp = 0;
};
static cstats CS;

static void check_case(const ccase &c) {
    const int n = (int)c.rows.size(), V = c.V;
    const size_t ldl = (size_t)V + c.ld_pad;
    std::vector<float> h((size_t)n * ldl + 4, NAN);
    for (int r = 0; r < n; r++) sref::fill(&h[(size_t)r * ldl], V, c.k, R);  // every row its own logits
    std::vector<uint8_t> ban(V, 0);
    if (c.use_ban)
        for (int i = 0; i < V; i++) ban[i] = R.next() % 4 == 0;
    std::vector<int> prm((size_t)n * LM_CUDA_SAMPLE_WORDS);
    for (int r = 0; r < n; r++) sref::to_words(c.rows[r], &prm[(size_t)r * LM_CUDA_SAMPLE_WORDS]);
    const int L = std::max(c.n_top, 1);
    float *d_lg, *d_lp, *d_tlp;
    int *d_prm, *d_out, *d_tid;
    uint8_t *d_ban;
    const size_t off = c.misalign ? 1 : 0;  // rows off 16-byte alignment: the scalar loads
    CK(cudaMalloc(&d_lg, ((size_t)n * ldl + 4) * 4));
    CK(cudaMalloc(&d_prm, prm.size() * 4));
    CK(cudaMalloc(&d_out, (size_t)n * 2 * 4));
    CK(cudaMalloc(&d_lp, (size_t)n * 4));
    CK(cudaMalloc(&d_tid, (size_t)n * L * 4));
    CK(cudaMalloc(&d_tlp, (size_t)n * L * 4));
    CK(cudaMalloc(&d_ban, (size_t)V));
    CK(cudaMemcpy(d_lg + off, h.data(), (size_t)n * ldl * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_prm, prm.data(), prm.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_ban, ban.data(), (size_t)V, cudaMemcpyHostToDevice));
    CK(cudaMemset(d_out, 0x7f, (size_t)n * 2 * 4));
    lm_cuda_sample_force_global(c.force_global);
    lm_cuda_sample_threads(c.threads);
    CK(lm_cuda_sample(d_lg + off, ldl, n, V, d_prm, LM_CUDA_SAMPLE_WORDS, c.use_ban ? d_ban : NULL, d_out,
                      c.logprob ? d_lp : NULL, c.n_top, c.n_top ? d_tid : NULL, c.n_top ? d_tlp : NULL, 0));
    CK(cudaDeviceSynchronize());
    lm_cuda_sample_force_global(0);
    lm_cuda_sample_threads(1024);
    std::vector<int> out((size_t)n * 2), tid((size_t)n * L);
    std::vector<float> lp(n), tlp((size_t)n * L);
    CK(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(lp.data(), d_lp, lp.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(tid.data(), d_tid, tid.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(tlp.data(), d_tlp, tlp.size() * 4, cudaMemcpyDeviceToHost));
    void *bufs[] = {d_lg, d_prm, d_out, d_lp, d_tid, d_tlp, d_ban};
    for (void *b : bufs) CK(cudaFree(b));

    lm_sample_scratch *sc = NULL;
    if (lm_sample_scratch_init(V, &sc) != LM_OK) exit(2);
    int same = 0, bnd = 0, bad = 0;
    for (int r = 0; r < n; r++) {
        const rowp &p = c.rows[r];
        const float *x = &h[(size_t)r * ldl];
        const int gid = out[2 * r], gfl = out[2 * r + 1], fl = sref::flags_of(x, V);
        char msg[200];
        const char *why = NULL;
        if (p.n_valid <= 0) {
            if (gid != -1 || gfl != 0) why = "skipped row written";
        } else if (gfl != fl) {
            snprintf(msg, sizeof msg, "flags %d, expected %d", gfl, fl);
            why = msg;
        } else if (!(p.temp >= 0)) {
            if (gid != -1) why = "check-only row got an id";
        } else {
            const int Ve = std::min(p.n_valid, V);
            const bool greedy = !(p.temp > 0) || !isfinite(1.0f / p.temp);
            // NaN / +inf rows (the engine fails the step) and rows with nothing
            // finite: the CPU sampler's result is not defined, and with +inf its
            // prefilter_top indexes past its histogram (a -NaN probability), so it
            // is not called for them
            bool defined = !(fl & 3);
            float mx = -INFINITY;
            for (int i = 0; i < Ve; i++)
                if (!(p.use_ban && ban[i]) && x[i] > mx) mx = x[i];
            if (mx == -INFINITY) defined = false;
            int cid = -1;
            if (defined) {
                lm_sampler_params sp = {p.temp, p.top_k, p.top_p, p.seed};
                lm_sampler *s = NULL;
                if (lm_sampler_init(&sp, Ve, &s) != LM_OK) exit(2);
                lm_sampler_set_stream(s, p.stream);
                if (p.use_ban) lm_sampler_ban(s, ban.data());
                std::vector<float> zero(Ve, 0.0f);
                for (uint64_t st = 0; st < p.step; st++) lm_sampler_sample_with(s, zero.data(), sc);  // the CPU's step
                cid = lm_sampler_sample_with(s, x, sc);
                lm_sampler_free(s);
            }
            if (gid < 0 || gid >= Ve) {
                snprintf(msg, sizeof msg, "id %d out of [0, %d)", gid, Ve);
                why = msg;
            } else if (!defined) {
            } else if (gid == cid) {
                same++;
            } else if (greedy) {
                snprintf(msg, sizeof msg, "greedy id %d, CPU %d", gid, cid);
                why = msg;
            } else {
                double m = sref::margin(x, V, p, p.use_ban ? ban.data() : NULL);
                if (m < 1e-5) bnd++;
                else {
                    snprintf(msg, sizeof msg, "id %d, CPU %d (margin %.2g)", gid, cid, m);
                    why = msg;
                }
            }
            if (!why && defined && (c.logprob || c.n_top)) {
                float clp, ctlp[LM_CUDA_SAMPLE_MAX_TOP];
                int ctid[LM_CUDA_SAMPLE_MAX_TOP], cnt = 0;
                sref::token_info(x, Ve, p.use_ban ? ban.data() : NULL, gid, c.n_top, &clp, ctid, ctlp, &cnt);
                CS.lp++;
                if (c.logprob && !(fabsf(lp[r] - clp) <= 1e-5f + 1e-6f * fabsf(clp)) && !(lp[r] == clp)) {
                    snprintf(msg, sizeof msg, "logprob %.9g, CPU %.9g", lp[r], clp);
                    why = msg;
                }
                for (int j = 0; j < c.n_top && !why; j++) {
                    const int gi = tid[(size_t)r * c.n_top + j];
                    const float gv = tlp[(size_t)r * c.n_top + j];
                    if (j >= cnt) {
                        if (gi != -1) why = "a top id past the valid ids";
                    } else if (gi != ctid[j]) {
                        if (!(gi >= 0 && gi < Ve && fabsf(x[gi] - x[ctid[j]]) <= 1e-6f * fabsf(x[ctid[j]]))) {
                            snprintf(msg, sizeof msg, "top %d: id %d, CPU %d", j, gi, ctid[j]);
                            why = msg;
                        }
                    } else if (!(fabsf(gv - ctlp[j]) <= 1e-5f + 1e-6f * fabsf(ctlp[j])) && !(gv == ctlp[j])) {
                        snprintf(msg, sizeof msg, "top %d logprob %.9g, CPU %.9g", j, gv, ctlp[j]);
                        why = msg;
                    }
                }
            }
        }
        if (why) {
            if (bad < 5)
                printf("    FAIL row %d (T %g k %d p %g n_valid %d step %llu): %s\n", r, p.temp, p.top_k, p.top_p,
                       p.n_valid, (unsigned long long)p.step, why);
            bad++;
        }
    }
    lm_sample_scratch_free(sc);
    CS.rows += n, CS.same += same, CS.boundary += bnd, CS.fail += bad;
    if (bad) n_fail++;
    printf("%-50s %5d %5d %6d %9d %6d  %s\n", c.name.c_str(), c.threads, n, same, bnd, bad, bad ? "FAIL" : "ok");
    fflush(stdout);
}

static void checks(void) {
    printf("%-50s %5s %5s %6s %9s %6s  %s\n", "check (every row its own logits)", "thr", "rows", "same", "boundary",
           "fail", "");
    std::vector<ccase> cs;
    auto add = [&](std::string name, int V, sref::kind k, std::vector<rowp> rows) -> ccase & {
        ccase c;
        c.name = name, c.V = V, c.k = k, c.rows = rows;
        c.threads = cs.size() % 3 == 2 ? 512 : 1024;
        cs.push_back(c);
        return cs.back();
    };
    for (int k = 0; k < sref::N_KINDS; k++)
        for (int V : {1000, 32000, 151936})
            add(std::string(sref::kind_name[k]) + " V" + std::to_string(V), V, (sref::kind)k,
                sref::sweep(V, false, 0, V > 100000 ? 3 : 1, R));
    for (int V : {1, 2, 3, 7, 31, 129, 4099, 65536, 262144})
        add("llm V" + std::to_string(V), V, sref::LLM, sref::sweep(V, false, 0, 3, R));
    {
        ccase &c = add("llm V151936 banned, n_valid 151000, logprobs top-20", 151936, sref::LLM,
                       sref::sweep(151936, true, 151000, 2, R));
        c.use_ban = true, c.logprob = true, c.n_top = 20;
    }
    {
        ccase &c = add("ties V32000 logprobs top-20 (tied values)", 32000, sref::TIES, sref::sweep(32000, false, 0, 2, R));
        c.logprob = true, c.n_top = 20;
    }
    {
        ccase &c = add("gauss V5 logprobs top-20 (fewer ids than 20)", 5, sref::GAUSS, sref::sweep(5, false, 0, 2, R));
        c.logprob = true, c.n_top = 20;
    }
    {
        ccase &c = add("forced global: llm V32000, logprobs top-7", 32000, sref::LLM, sref::sweep(32000, false, 0, 2, R));
        c.force_global = true, c.logprob = true, c.n_top = 7;
    }
    {
        ccase &c = add("forced global: ties V32000 banned", 32000, sref::TIES, sref::sweep(32000, true, 0, 2, R));
        c.force_global = true, c.use_ban = true;
    }
    {
        ccase &c = add("misaligned rows V1001", 1001, sref::GAUSS, sref::sweep(1001, false, 0, 2, R));
        c.misalign = true;
    }
    {
        std::vector<rowp> rows = {{0.7f, 0, 0.9f, 0, 0, 1, 0, 0}, {-1.0f, 0, 1.0f, 500, 0, 1, 0, 0},
                                  {0.7f, 10, 0.9f, 500, 0, 1, 0, 0}, {0.7f, 10, 0.9f, -3, 0, 1, 0, 0}};
        ccase &c = add("padding and check-only rows V500", 500, sref::NANS, rows);
        c.logprob = true, c.n_top = 3;
    }
    {  // n = 1024 rows in one launch, mixed parameters
        std::vector<rowp> rows;
        while (rows.size() < 1024)
            for (const rowp &p : sref::sweep(32000, false, 0, 1, R))
                if (rows.size() < 1024) rows.push_back(p);
        add("llm V32000, 1024 rows in one launch", 32000, sref::LLM, rows).threads = 1024;
        add("llm V32000, 1024 rows in one launch", 32000, sref::LLM, rows).threads = 512;
    }
    for (auto &c : cs) check_case(c);
    printf("checked %ld rows: %ld the same id as the CPU sampler, %ld differ at a rounding boundary, %ld logprob rows; "
           "%ld failed\n\n", CS.rows, CS.same, CS.boundary, CS.lp, CS.fail);
}

// ------------------------------------------------------------- timing ---

struct tmode {
    const char *name;
    float temp, top_p;
    int top_k, n_top;
};

static void timing(int reps, bool flush) {
    int dev = 0, sms = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const double bw = hbm_bandwidth(sms);
    printf("HBM read bandwidth: %.0f GB/s (streaming read of 2 GiB, median of 10)\n", bw * 1e-9);
    printf("timing: median of %d launches after 3 warm-ups, %s\n\n", reps,
           flush ? "L2 flushed (256 MiB memset) before each" : "L2 warm");
    const tmode modes[] = {{"greedy", 0.0f, 1.0f, 0, 0},      {"chat T.7 k40 p.9", 0.7f, 0.9f, 40, 0},
                           {"nucleus T1 p.95", 1.0f, 0.95f, 0, 0}, {"every id T1", 1.0f, 1.0f, 0, 0},
                           {"chat + logprobs top-5", 0.7f, 0.9f, 40, 5}};
    const int Vs[2] = {32000, 151936}, ns[4] = {1, 16, 64, 256};
    const int nmax = 256, Vmax = 151936;
    // next-token-like logits (a few hundred plausible ids over a low
    // background: the nucleus and the top k in the candidates), every row
    // different (generated once, 155 MB)
    std::vector<float> h((size_t)nmax * Vmax);
    for (int r = 0; r < nmax; r++) sref::fill(&h[(size_t)r * Vmax], Vmax, sref::PEAKY, R);
    std::vector<float> hf((size_t)16 * Vmax);
    for (int r = 0; r < 16; r++) sref::fill(&hf[(size_t)r * Vmax], Vmax, sref::FLAT, R);
    float *d_lg, *d_flat, *d_lp, *d_tlp;
    int *d_prm, *d_out, *d_tid;
    void *l2;
    const size_t l2b = (size_t)256 << 20;
    CK(cudaMalloc(&d_lg, h.size() * 4));
    CK(cudaMalloc(&d_flat, hf.size() * 4));
    CK(cudaMalloc(&d_prm, (size_t)nmax * LM_CUDA_SAMPLE_WORDS * 4));
    CK(cudaMalloc(&d_out, (size_t)nmax * 8));
    CK(cudaMalloc(&d_lp, (size_t)nmax * 4));
    CK(cudaMalloc(&d_tid, (size_t)nmax * 20 * 4));
    CK(cudaMalloc(&d_tlp, (size_t)nmax * 20 * 4));
    CK(cudaMalloc(&l2, l2b));
    CK(cudaMemcpy(d_lg, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_flat, hf.data(), hf.size() * 4, cudaMemcpyHostToDevice));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ts(reps);
    printf("%-30s %7s %5s %5s %10s %9s %6s\n", "mode", "V", "n", "thr", "time us", "GB/s", "%BW");
    auto time_one = [&](const char *name, const float *lg, int V, int n, const tmode &m, int thr, bool global) {
        std::vector<int> prm((size_t)n * LM_CUDA_SAMPLE_WORDS);
        for (int r = 0; r < n; r++)
            sref::to_words({m.temp, m.top_k, m.top_p, V, 0, 1234 + (uint64_t)r, (uint64_t)r, 7}, &prm[(size_t)r * LM_CUDA_SAMPLE_WORDS]);
        CK(cudaMemcpy(d_prm, prm.data(), prm.size() * 4, cudaMemcpyHostToDevice));
        lm_cuda_sample_threads(thr);
        lm_cuda_sample_force_global(global);
        for (int r = -3; r < reps; r++) {
            if (flush) CK(cudaMemsetAsync(l2, r & 0xff, l2b, 0));
            CK(cudaEventRecord(e0, 0));
            CK(lm_cuda_sample(lg, (size_t)V, n, V, d_prm, LM_CUDA_SAMPLE_WORDS, NULL, d_out, m.n_top ? d_lp : NULL,
                              m.n_top, m.n_top ? d_tid : NULL, m.n_top ? d_tlp : NULL, 0));
            CK(cudaEventRecord(e1, 0));
            CK(cudaEventSynchronize(e1));
            if (r >= 0) CK(cudaEventElapsedTime(&ts[r], e0, e1));
        }
        lm_cuda_sample_threads(1024);
        lm_cuda_sample_force_global(0);
        const double us = median(ts.data(), reps) * 1000.0, gbs = (double)n * V * 4 / (us * 1e-6);
        printf("%-30s %7d %5d %5d %10.1f %9.0f %5.0f%%\n", name, V, n, thr, us, gbs * 1e-9, 100.0 * gbs / bw);
        fflush(stdout);
    };
    for (const tmode &m : modes)
        for (int V : Vs)
            for (int n : ns)
                for (int thr : {1024, 512}) {
                    // rows of V ids from the 151936-wide rows: the same data, row stride V
                    time_one(m.name, d_lg, V, n, m, thr, false);
                }
    const tmode nuc = {"nucleus T1 p.95", 1.0f, 0.95f, 0, 0}, chat = {"chat T.7 k40 p.9", 0.7f, 0.9f, 40, 0};
    for (int n : {1, 16}) time_one("flat rows, nucleus (fallback)", d_flat, 151936, n, nuc, 1024, false);
    for (int n : {1, 64}) time_one("chat, forced global", d_lg, 151936, n, chat, 1024, true);
    for (int n : {1, 64}) time_one("nucleus, forced global", d_lg, 151936, n, nuc, 1024, true);
    printf("GB/s: logits bytes (n x V x 4) per second of the launch; %%BW: of the measured HBM read bandwidth.\n"
           "Rows: ~200 plausible ids (logits 10 .. -6, declining) over a background at -8 +- 1.5: the nucleus and\n"
           "the top k lie in the candidates. flat rows: logits within 0.05 of each other, so the nucleus holds most\n"
           "of the vocabulary and the candidates cannot hold it: the global-memory selections run (the rare case).\n"
           "forced global: the same selections forced on the usual rows (what the fallback costs).\n");
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    void *bufs[] = {d_lg, d_flat, d_prm, d_out, d_lp, d_tid, d_tlp, l2};
    for (void *b : bufs) CK(cudaFree(b));
}

int main(int argc, char **argv) {
    int reps = 20, flush = 1, do_check = 1, do_time = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--check")) do_time = 0;
        else if (!strcmp(argv[i], "--time")) do_check = 0;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warm-l2")) flush = 0;
        else {
            fprintf(stderr, "usage: %s [--check | --time] [-r reps] [--warm-l2]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    lm_cpu_kernels_init(LM_ISA_SCALAR);
    int dev = 0;
    cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s, %d SMs, sm_%d%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
    if (do_check) checks();
    if (do_time) timing(reps, flush);
    printf("%s: %d check(s) failed\n", n_fail ? "FAIL" : "ok", n_fail);
    return n_fail ? 1 : 0;
}
