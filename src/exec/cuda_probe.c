// GPU ceilings for `lightmoe bench` (see cuda_probe.h): the kernels are in
// src/kernels/cuda/probe.cu, timed here with CUDA events on a stream of our own.
#include "exec/cuda_probe.h"

#include "util/err.h"

#if !LM_HAVE_CUDA

static lm_status no_cuda(void) {
    return lm_err(LM_ERR_UNSUPPORTED, "this lightmoe was built without CUDA (nvcc was not found at build time)");
}

lm_status lm_cuda_device_describe(lm_cuda_device_info *out) {
    *out = (lm_cuda_device_info){0};
    return no_cuda();
}

lm_status lm_cuda_probe_read_bw(double *bytes_per_s) {
    *bytes_per_s = 0;
    return no_cuda();
}

lm_status lm_cuda_probe_bf16_peak(double *flops_per_s) {
    *flops_per_s = 0;
    return no_cuda();
}

#else

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/probe.h"

#define GiB ((size_t)1 << 30)

static lm_status cuda_fail(cudaError_t e, const char *what) {
    return lm_err(LM_ERR_DEVICE, "CUDA probe: %s: %s", what, cudaGetErrorString(e));
}

// Checks a CUDA call (or a launcher's result); on failure records the status
// and jumps to the function's cleanup.
#define CK(call)                                              \
    do {                                                      \
        cudaError_t _e = (cudaError_t)(call);                 \
        if (_e != cudaSuccess) {                              \
            st = cuda_fail(_e, #call);                        \
            goto out;                                         \
        }                                                     \
    } while (0)

lm_status lm_cuda_device_describe(lm_cuda_device_info *out) {
    *out = (lm_cuda_device_info){0};
    lm_status st = LM_OK;
    int n = 0, dev = 0;
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return lm_err(LM_ERR_DEVICE, "no CUDA GPU is usable here (%s)",
                      e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&p, dev));
    CK(cudaDeviceGetPCIBusId(out->pci_bus_id, (int)sizeof out->pci_bus_id, dev));
    CK(cudaDriverGetVersion(&out->driver_version));
    CK(cudaRuntimeGetVersion(&out->runtime_version));
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->device = dev;
    out->sm_count = p.multiProcessorCount;
    out->max_threads_per_sm = p.maxThreadsPerMultiProcessor;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->mem_total = p.totalGlobalMem;
out:
    if (st) cudaGetLastError();  // leave no sticky launch error behind for the executor
    return st;
}

// Milliseconds of one launch between two events on `s`.
typedef struct {
    cudaStream_t s;
    cudaEvent_t a, b;
} timer;

static lm_status timer_open(timer *t) {
    *t = (timer){0};
    lm_status st = LM_OK;
    CK(cudaStreamCreateWithFlags(&t->s, cudaStreamNonBlocking));
    CK(cudaEventCreate(&t->a));
    CK(cudaEventCreate(&t->b));
out:
    return st;
}

static void timer_close(timer *t) {
    if (t->a) cudaEventDestroy(t->a);
    if (t->b) cudaEventDestroy(t->b);
    if (t->s) cudaStreamDestroy(t->s);
}

static lm_status timer_elapsed(timer *t, float *ms) {
    lm_status st = LM_OK;
    CK(cudaEventSynchronize(t->b));
    CK(cudaEventElapsedTime(ms, t->a, t->b));
out:
    return st;
}

lm_status lm_cuda_probe_read_bw(double *bytes_per_s) {
    *bytes_per_s = 0;
    lm_cuda_device_info di;
    lm_status st = lm_cuda_device_describe(&di);
    if (st) return st;
    timer t = {0};
    void *buf = NULL;
    unsigned long long *sink = NULL;
    // 2 GiB is 40x the largest L2 (H100: 50 MB), so the figure is HBM's. A
    // GPU with less free memory gets what fits, but at least 256 MiB.
    size_t fr = 0, tot = 0, bytes = 2 * GiB;
    CK(cudaMemGetInfo(&fr, &tot));
    if (fr < bytes + GiB / 2) bytes = fr > GiB ? (fr - GiB / 2) / (GiB / 4) * (GiB / 4) : GiB / 4;
    CK(cudaMalloc(&buf, bytes));
    CK(cudaMalloc((void **)&sink, sizeof *sink));
    if ((st = timer_open(&t))) goto out;
    CK(cudaMemsetAsync(buf, 0x5a, bytes, t.s));  // every page written once before timing
    // Enough resident threads to fill every SM (occupancy is the kernel's only latency cover).
    int per_sm = di.max_threads_per_sm / LM_CUDA_PROBE_THREADS;
    int blocks = di.sm_count * (per_sm > 0 ? per_sm : 1);
    CK(lm_cuda_probe_read(buf, bytes / 16, sink, blocks, t.s));  // warm-up: clocks up, code loaded
    double best = 0;
    for (int rep = 0; rep < 10; rep++) {
        float ms = 0;
        CK(cudaEventRecord(t.a, t.s));
        CK(lm_cuda_probe_read(buf, bytes / 16, sink, blocks, t.s));
        CK(cudaEventRecord(t.b, t.s));
        if ((st = timer_elapsed(&t, &ms))) goto out;
        if (ms > 0 && (double)bytes / (ms * 1e-3) > best) best = (double)bytes / (ms * 1e-3);
    }
    *bytes_per_s = best;
out:
    if (t.s) cudaStreamSynchronize(t.s);
    timer_close(&t);
    if (buf) cudaFree(buf);
    if (sink) cudaFree(sink);
    if (st) cudaGetLastError();
    return st;
}

lm_status lm_cuda_probe_bf16_peak(double *flops_per_s) {
    *flops_per_s = 0;
    lm_cuda_device_info di;
    lm_status st = lm_cuda_device_describe(&di);
    if (st) return st;
    if (di.cc_major < 8)
        return lm_err(LM_ERR_UNSUPPORTED, "%s (compute capability %d.%d) has no bf16 mma.sync (needs 8.0 or newer)",
                      di.name, di.cc_major, di.cc_minor);
    timer t = {0};
    float *sink = NULL;
    CK(cudaMalloc((void **)&sink, sizeof *sink));
    if ((st = timer_open(&t))) goto out;
    // Four CTAs of eight warps per SM: eight warps per SM sub-partition.
    int blocks = di.sm_count * 4;
    double per_iter = (double)blocks * (LM_CUDA_PROBE_THREADS / 32) * LM_CUDA_PROBE_MMA_CHAINS *
                      LM_CUDA_PROBE_MMA_FLOPS;
    // A short run to warm up and calibrate, then runs of about 50 ms: long
    // enough for the clock to settle, short enough not to hit power limits
    // much longer than a real prefill would.
    long iters = 4096;
    float ms = 0;
    CK(lm_cuda_probe_mma(256, 1u, sink, blocks, t.s));
    CK(cudaEventRecord(t.a, t.s));
    CK(lm_cuda_probe_mma(iters, 2u, sink, blocks, t.s));
    CK(cudaEventRecord(t.b, t.s));
    if ((st = timer_elapsed(&t, &ms))) goto out;
    double scale = ms > 0 ? 50.0 / ms : 1.0;
    iters = (long)(iters * (scale < 1 ? 1 : scale > 4096 ? 4096 : scale));
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        CK(cudaEventRecord(t.a, t.s));
        CK(lm_cuda_probe_mma(iters, 3u + (unsigned)rep, sink, blocks, t.s));
        CK(cudaEventRecord(t.b, t.s));
        if ((st = timer_elapsed(&t, &ms))) goto out;
        if (ms > 0 && per_iter * (double)iters / (ms * 1e-3) > best) best = per_iter * (double)iters / (ms * 1e-3);
    }
    *flops_per_s = best;
out:
    if (t.s) cudaStreamSynchronize(t.s);
    timer_close(&t);
    if (sink) cudaFree(sink);
    if (st) cudaGetLastError();
    return st;
}

#endif
