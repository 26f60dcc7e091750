// The CUDA executor: the runtime's ops on one GPU (kernels in
// src/kernels/cuda, each behind a C launcher).
//
// Memory: activations, scratch and the KV pages are cudaMalloc'ed and freed
// with the executor; staging memory for async copies is pinned. Weights are
// made resident on first use (host address -> device copy), so a model is
// uploaded once and reused by every step; the op tests' ad-hoc weights work
// the same way.
//
// Ops are queued on stream 0 and return at once; a launch or CUDA error is
// kept (sticky) and returned by step_end, which waits for the step.
#include "exec/exec.h"

#if !LM_HAVE_CUDA

int lm_cuda_devices(char *name, size_t cap) {
    if (name && cap) *name = 0;
    return 0;
}

lm_status lm_exec_cuda_init(const lm_config *cfg, lm_exec **out) {
    *out = NULL;
    return lm_err(LM_ERR_UNSUPPORTED, "this lightmoe was built without CUDA (nvcc was not found at build time)");
}

double lm_exec_cuda_scratch_bytes(const lm_config *cfg, int max_tokens, int max_ctx) { return 0; }

lm_status lm_exec_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    return lm_err(LM_ERR_UNSUPPORTED, "this lightmoe was built without CUDA (nvcc was not found at build time)");
}

#else

#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_sm90.h"
#include "kernels/cuda/gemm_sm90_stream.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/sample.h"
#include "util/buf.h"

typedef struct {
    const void *host;
    void *dev;
} wslot;

// Device tables of one experts array: gate, up and down pointers [3][E].
typedef struct {
    const lm_ffn_w *host;
    const void **dev;  // device array
    int dt;
} etable;

#define GRAPH_SLOTS 48  // step shapes kept as graphs
#define PROF_GROUPS 16  // step sizes the profile tells apart
#define PROF_STATS 512
#define SEEN_SLOTS 64   // step shapes remembered as seen once

typedef struct cuda_exec {
    lm_exec base;
    const lm_config *cfg;
    cudaStream_t st[LM_EXEC_STREAMS];
    cudaEvent_t ev[LM_EXEC_EVENTS];
    lm_buf allocs;  // void * of every device allocation
    double allocated;               // their bytes
    double graph_bytes;             // device memory the kept graphs took (free memory before and after)
    int n_graphs;
    lm_buf pinned;  // void * of every cudaMallocHost'ed staging buffer
    lm_kv_layout kv;
    void **kv_layer;             // [n_layers] device page pools
    unsigned long long *stats;   // device [n_layers][n_experts]
    wslot *w;                    // open-addressing table of resident weights
    size_t w_cap, w_n;
    etable *et;
    int n_et, cap_et;
    struct qkv_w { const void *wq; const void *w, *b; int bdt; } *qkv;  // fused q|k|v weights (and biases) by wq
    int n_qkv;
    float *inv_freq;             // device RoPE table [max_ctx][cos half | sin half] of the frequencies last given
    float *inv_host;             // those frequencies
    int max_ctx;                 // positions the table covers (reserve's max_ctx)
    int inv_n;
    void *act16;                 // bf16 copy of a GEMM's f32 activations (large-M path), sized at reserve
    size_t act16_bytes;
    int kernels;                 // LIGHTMOE_KERNELS: 0 fast (default), 1 simple (the v0 kernels), 2 portable
    lm_status err;               // first failure, returned by step_end
    // graphs: steps of a key seen before are captured once, then replayed
    int mode;                    // MODE_EAGER, MODE_CAPTURE or MODE_REPLAY, for the step under way
    uint64_t key;                // its key
    struct gslot { uint64_t key, used; cudaGraphExec_t exec; } graph[GRAPH_SLOTS];
    uint64_t seen[SEEN_SLOTS];   // keys of steps run once (eagerly)
    uint64_t clock;              // steps, for least-recently-used eviction
    int graphs_off;              // LIGHTMOE_PROFILE: never capture
    int no_pdl;                  // LIGHTMOE_PDL=0: plain launches (for comparison)
    int no_sm90s;                // small row counts on sm_90: gemm.cu's streaming kernel (LIGHTMOE_SM90S=1: the Hopper one)
    int fused_route_align;       // LIGHTMOE_ROUTE_ALIGN=1: the one-launch route+align (off: see cu_route_align)
    void *gg_ws;                 // split-K workspace of the streaming GEMMs (zeroed once; calls leave it zero)
    size_t gg_ws_bytes;
    // sampling
    uint8_t *banned_host;        // pinned copy of the step's banned map
    void *banned_dev;
    int banned_n, banned_cap;
    // LIGHTMOE_PROFILE=1: an event after every op launch, summed per op name at step_end
    cudaEvent_t *pev;
    const char **pname;
    int pn, pcap;
    struct pstat { const char *name; int n; double ms; long calls; } *pst;  // per (step tokens, op)
    int npst;
    struct pstep { int n; long steps; double ms; } pgrp[PROF_GROUPS];  // per step token count
    int npgrp;
    void *attn_ws;               // attention scratch (work list, split-K partials), sized at reserve
    size_t attn_ws_bytes;
} cuda_exec;

#define S0(c) ((c)->st[0])
enum { MODE_EAGER, MODE_CAPTURE, MODE_REPLAY };
// While a graph is replayed the step's ops were captured already: each op
// returns at once (the driver still calls them in order).
#define REPLAYING(c) ((c)->mode == MODE_REPLAY)
// Programmatic dependent launch for the fast kernels (gemm.cu: each waits
// in-kernel for its predecessor before reading what it wrote).
#define PDL(c) ((c)->kernels != 1 && !(c)->no_pdl)

static lm_status cuda_fail(cuda_exec *c, cudaError_t e, const char *what) {
    lm_status st = lm_err(LM_ERR_DEVICE, "CUDA: %s: %s", what, cudaGetErrorString(e));
    if (c && !c->err) c->err = st;
    return st;
}

#define CK(c, call)                                                 \
    do {                                                            \
        cudaError_t _e = (call);                                    \
        if (_e != cudaSuccess) return cuda_fail((c), _e, #call);   \
    } while (0)

static void prof_mark(cuda_exec *c, const char *op) {
    if (c->pn == c->pcap) {  // grow (eagerly run steps only: never inside a capture)
        int nc = c->pcap ? 2 * c->pcap : 256;
        cudaEvent_t *ev = realloc(c->pev, (size_t)nc * sizeof *ev);
        if (ev) c->pev = ev;
        const char **nm = realloc(c->pname, (size_t)nc * sizeof *nm);
        if (nm) c->pname = nm;
        if (!ev || !nm) return;
        for (int i = c->pcap; i < nc; i++) cudaEventCreate(&c->pev[i]);
        c->pcap = nc;
    }
    c->pname[c->pn] = op;
    cudaEventRecord(c->pev[c->pn++], S0(c));
}

// A launcher's result (the launch error) as a status.
static lm_status launched(cuda_exec *c, int e, const char *op) {
    if (c->err) return c->err;
    if (e) return cuda_fail(c, (cudaError_t)e, op);
    if (c->pst) prof_mark(c, op);
    return LM_OK;
}

static lm_status dev_alloc(cuda_exec *c, size_t bytes, void **out) {
    *out = NULL;
    void *p;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        char a[32], b[32];
        return lm_err(LM_ERR_OOM, "CUDA: cannot allocate %s of GPU memory (%s free): %s",
                      lm_format_bytes((double)bytes, a, sizeof a), lm_format_bytes((double)fr, b, sizeof b),
                      cudaGetErrorString(e));
    }
    if (!lm_buf_put(&c->allocs, &p, sizeof p)) {
        cudaFree(p);
        return LM_ERR_OOM;
    }
    c->allocated += (double)bytes;
    *out = p;
    return LM_OK;
}

// ---------------------------------------------------------------- memory ---

static lm_status cu_alloc(lm_exec *ex, lm_dtype dt, int rows, int cols, lm_tensor *out) {
    cuda_exec *c = (cuda_exec *)ex;
    size_t n = 0;
    void *p;
    lm_status st = lm_exec_tensor_bytes("cuda", dt, rows, cols, &n);
    if (!st) st = dev_alloc(c, n, &p);
    if (st) return st;
    CK(c, cudaMemsetAsync(p, 0, n ? n : 1, S0(c)));  // ordered before the ops that use it
    *out = (lm_tensor){p, dt, rows, cols, (size_t)cols};
    return LM_OK;
}

#define TRYW(x)                         \
    do {                                \
        lm_status _s = (x);             \
        if (_s) return _s;              \
    } while (0)

// A 2-D copy queued on `stream` (the caller waits where it must).
static lm_status copy2d(cuda_exec *c, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        int rows, enum cudaMemcpyKind kind, int stream) {
    if (rows <= 0 || !width) return LM_OK;
    CK(c, cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, (size_t)rows, kind, c->st[stream]));
    return LM_OK;
}

// Synchronous copies: queued on stream 0 behind the work already there, then
// waited for, so the host memory may change as soon as they return.
static lm_status cu_upload(lm_exec *ex, lm_tensor dst, const void *src) {
    cuda_exec *c = (cuda_exec *)ex;
    size_t es = lm_dtype_size(dst.dt), row = (size_t)dst.cols * es;
    TRYW(copy2d(c, dst.data, dst.ld * es, src, row, row, dst.rows, cudaMemcpyHostToDevice, 0));
    CK(c, cudaStreamSynchronize(S0(c)));
    return LM_OK;
}

static lm_status cu_download(lm_exec *ex, lm_tensor src, void *dst) {
    cuda_exec *c = (cuda_exec *)ex;
    size_t es = lm_dtype_size(src.dt), row = (size_t)src.cols * es;
    TRYW(copy2d(c, dst, row, src.data, src.ld * es, row, src.rows, cudaMemcpyDeviceToHost, 0));
    CK(c, cudaStreamSynchronize(S0(c)));
    return LM_OK;
}

static const void *cu_host_ptr(lm_exec *ex, lm_tensor t) { return NULL; }

static lm_status cu_host_alloc(lm_exec *ex, size_t bytes, void **out) {
    cuda_exec *c = (cuda_exec *)ex;
    *out = NULL;
    void *p;
    CK(c, cudaMallocHost(&p, bytes ? bytes : 1));
    if (!lm_buf_put(&c->pinned, &p, sizeof p)) {
        cudaFreeHost(p);
        return LM_ERR_OOM;
    }
    *out = p;
    return LM_OK;
}

static lm_status cu_upload_async(lm_exec *ex, lm_tensor dst, const void *src, int stream) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;  // part of the graph
    lm_status st = lm_exec_check_stream("upload_async", stream);
    if (st) return st;
    size_t es = lm_dtype_size(dst.dt), row = (size_t)dst.cols * es;
    return copy2d(c, dst.data, dst.ld * es, src, row, row, dst.rows, cudaMemcpyHostToDevice, stream);
}

static lm_status cu_download_async(lm_exec *ex, lm_tensor src, void *dst, int stream) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;  // part of the graph
    lm_status st = lm_exec_check_stream("download_async", stream);
    if (st) return st;
    size_t es = lm_dtype_size(src.dt), row = (size_t)src.cols * es;
    return copy2d(c, dst, row, src.data, src.ld * es, row, src.rows, cudaMemcpyDeviceToHost, stream);
}

static lm_status cu_event_record(lm_exec *ex, int event, int stream) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;  // part of the graph
    lm_status st = lm_exec_sync_event_record(ex, event, stream);
    if (st) return st;
    CK(c, cudaEventRecord(c->ev[event], c->st[stream]));
    return LM_OK;
}

static lm_status cu_event_wait(lm_exec *ex, int event, int stream) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;  // part of the graph
    lm_status st = lm_exec_sync_event_wait(ex, event, stream);
    if (st) return st;
    CK(c, cudaStreamWaitEvent(c->st[stream], c->ev[event], 0));
    return LM_OK;
}

static lm_status cu_event_sync(lm_exec *ex, int event) {
    cuda_exec *c = (cuda_exec *)ex;
    lm_status st = lm_exec_sync_event_sync(ex, event);
    if (st) return st;
    CK(c, cudaEventSynchronize(c->ev[event]));
    return LM_OK;
}

static lm_status cu_kv_alloc(lm_exec *ex, const lm_kv_layout *k) {
    cuda_exec *c = (cuda_exec *)ex;
    c->kv = *k;
    c->kv_layer = calloc((size_t)k->n_layers, sizeof *c->kv_layer);
    if (!c->kv_layer) return LM_ERR_OOM;
    size_t bytes = lm_kv_page_bytes(k) * (size_t)k->n_pages;
    for (int l = 0; l < k->n_layers; l++) {
        lm_status st = dev_alloc(c, bytes, &c->kv_layer[l]);
        if (st) return st;
    }
    return LM_OK;
}

// The bf16 staging of the large-M GEMMs' f32 inputs: max_tokens rows of the
// widest GEMM input (hidden or the attention output).
static lm_status gemm_reserve(cuda_exec *c, int max_tokens) {
    const lm_config *cfg = c->cfg;
    size_t K = (size_t)cfg->hidden, qd = (size_t)cfg->n_heads * (size_t)cfg->head_dim;
    if (qd > K) K = qd;
    size_t bytes = (size_t)(max_tokens > 0 ? max_tokens : 1) * K * 2;
    if (bytes <= c->act16_bytes) return LM_OK;
    TRYW(dev_alloc(c, bytes, &c->act16));
    c->act16_bytes = bytes;
    return LM_OK;
}

static lm_status cu_reserve(lm_exec *ex, int max_tokens, int max_ctx) {
    cuda_exec *c = (cuda_exec *)ex;
    if (max_ctx > c->max_ctx) c->max_ctx = max_ctx, c->inv_n = 0;  // the RoPE table is remade at the next rope
    TRYW(gemm_reserve(c, max_tokens));
    {  // split-K workspace: the largest any projection of a step may ask for
        const lm_config *f = c->cfg;
        int H = f->hidden, qd = f->n_heads * f->head_dim, kvd = f->n_kv_heads * f->head_dim, n = max_tokens;
        int inter = f->dense_inter > f->shared_inter ? f->dense_inter : f->shared_inter;
        size_t need = lm_cuda_gg_ws_bytes(n, 0, qd + 2 * kvd, H);
        int E = f->n_experts > 0 ? f->n_experts : 1, Ek = f->n_experts > 0 ? f->n_experts : 0;
        size_t cand[] = {lm_cuda_gg_ws_bytes(n, 0, H, qd), lm_cuda_gg_ws_bytes(n, 0, E, H),
                         lm_cuda_gg_ws_bytes(n, 0, f->vocab, H), inter > 0 ? lm_cuda_gg_ws_bytes(n, 0, H, inter) : 0,
                         Ek ? lm_cuda_gg_ws_bytes(n * f->top_k, Ek, H, f->moe_inter) : 0,
                         // the Hopper streaming kernel's stream-K (small row counts only, but sized for all)
                         lm_cuda_gg_sm90s_ws_bytes(n, 0, qd + 2 * kvd, H, 0), lm_cuda_gg_sm90s_ws_bytes(n, 0, H, qd, 0),
                         lm_cuda_gg_sm90s_ws_bytes(n, 0, f->vocab, H, 0), lm_cuda_gg_sm90s_ws_bytes(n, 0, E, H, 0),
                         inter > 0 ? lm_cuda_gg_sm90s_ws_bytes(n, 0, inter, H, 1) : 0,
                         inter > 0 ? lm_cuda_gg_sm90s_ws_bytes(n, 0, H, inter, 0) : 0,
                         Ek ? lm_cuda_gg_sm90s_ws_bytes(n * f->top_k, Ek, f->moe_inter, H, 1) : 0,
                         Ek ? lm_cuda_gg_sm90s_ws_bytes(n * f->top_k, Ek, H, f->moe_inter, 0) : 0};
        for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
            if (cand[i] > need) need = cand[i];
        if (need > c->gg_ws_bytes) {
            TRYW(dev_alloc(c, need, &c->gg_ws));
            CK(c, cudaMemsetAsync(c->gg_ws, 0, need, S0(c)));
            c->gg_ws_bytes = need;
        }
    }
    if (!c->banned_dev) {  // one byte per id of the vocabulary
        c->banned_cap = c->cfg->vocab;
        TRYW(dev_alloc(c, (size_t)c->banned_cap, &c->banned_dev));
        TRYW(cu_host_alloc(ex, (size_t)c->banned_cap, (void **)&c->banned_host));
    }
    size_t need = lm_cuda_attention_workspace_bytes(max_tokens, c->cfg->n_heads, max_ctx, c->cfg->head_dim);
    if (need > c->attn_ws_bytes) {  // a smaller earlier one stays in allocs until free
        if (c->attn_ws) lm_cuda_attention_ws_forget(c->attn_ws);
        TRYW(dev_alloc(c, need, &c->attn_ws));
        c->attn_ws_bytes = need;
        // zeroes the decode kernel's split counters once (else every call zeroes them first)
        TRYW(launched(c, lm_cuda_attention_ws_init(c->attn_ws, need, S0(c)), "attention workspace"));
    }
    return LM_OK;
}

static lm_status cu_expert_stats(lm_exec *ex, uint64_t *out, bool reset) {
    cuda_exec *c = (cuda_exec *)ex;
    size_t n = (size_t)c->cfg->n_layers * (size_t)c->cfg->n_experts;
    if (out && n) CK(c, cudaMemcpyAsync(out, c->stats, n * sizeof *out, cudaMemcpyDeviceToHost, S0(c)));
    if (reset && n) CK(c, cudaMemsetAsync(c->stats, 0, n * sizeof *c->stats, S0(c)));
    CK(c, cudaStreamSynchronize(S0(c)));
    return LM_OK;
}

static struct gslot *graph_find(cuda_exec *c, uint64_t key) {
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (c->graph[i].exec && c->graph[i].key == key) return &c->graph[i];
    return NULL;
}

static lm_status cu_step_begin(lm_exec *ex, uint64_t key) {
    cuda_exec *c = (cuda_exec *)ex;
    if (c->err) return c->err;
    c->mode = MODE_EAGER;
    c->key = key;
    c->clock++;
    if (c->pst) {
        c->pn = 0;
        prof_mark(c, NULL);
    }
    if (!(key & 1) || c->graphs_off) return LM_OK;
    struct gslot *g = graph_find(c, key);
    if (g) {
        g->used = c->clock;
        c->mode = MODE_REPLAY;
        return LM_OK;
    }
    // Capture a key's second step: its first ran eagerly and did what is
    // done once (weights, tables, kernel attributes), which a capture cannot.
    for (int i = 0; i < SEEN_SLOTS; i++)
        if (c->seen[i] == key) {
            c->mode = MODE_CAPTURE;
            CK(c, cudaStreamBeginCapture(S0(c), cudaStreamCaptureModeThreadLocal));
            return LM_OK;
        }
    c->seen[c->clock % SEEN_SLOTS] = key;
    return LM_OK;
}

// Ends a capture: the step's graph is instantiated, kept (the least
// recently used one makes room) and launched.
static lm_status capture_end(cuda_exec *c) {
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(S0(c), &g);
    if (e != cudaSuccess && !c->err) cuda_fail(c, e, "graph capture");
    if (c->err) {
        if (g) cudaGraphDestroy(g);
        return c->err;
    }
    cudaGraphExec_t x;
    size_t f0 = 0, f1 = 0, tot;
    cudaMemGetInfo(&f0, &tot);
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return cuda_fail(c, e, "graph instantiation");
    cudaMemGetInfo(&f1, &tot);
    if (f1 < f0) c->graph_bytes += (double)(f0 - f1);
    c->n_graphs++;
    struct gslot *slot = &c->graph[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        if (!c->graph[i].exec) {
            slot = &c->graph[i];
            break;
        }
        if (c->graph[i].used < slot->used) slot = &c->graph[i];
    }
    if (slot->exec) cudaGraphExecDestroy(slot->exec), c->n_graphs--;  // no graph is in flight between steps
    *slot = (struct gslot){c->key, c->clock, x};
    CK(c, cudaGraphLaunch(x, S0(c)));
    return LM_OK;
}

static void prof_collect(cuda_exec *c) {
    int n = (int)(c->key >> 38), gi = 0;
    while (gi < c->npgrp && c->pgrp[gi].n != n) gi++;
    if (gi == c->npgrp) {
        if (c->npgrp == PROF_GROUPS) return;
        c->pgrp[c->npgrp++] = (struct pstep){n, 0, 0};
    }
    c->pgrp[gi].steps++;
    for (int i = 1; i < c->pn; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->pev[i - 1], c->pev[i]) != cudaSuccess) continue;
        c->pgrp[gi].ms += ms;
        int j = 0;
        while (j < c->npst && (c->pst[j].n != n || strcmp(c->pst[j].name, c->pname[i]))) j++;
        if (j == c->npst) {
            if (c->npst == PROF_STATS) continue;
            c->pst[c->npst++] = (struct pstat){c->pname[i], n, 0, 0};
        }
        c->pst[j].ms += ms, c->pst[j].calls++;
    }
}

// Per step size: GPU time per step and each op's share. Times are between
// consecutive launches' completions, so an op also carries any wait for the
// host before it (launch overhead shows up, as it costs).
static void prof_report(cuda_exec *c) {
    if (!c->pst || !c->npgrp) return;
    fprintf(stderr, "\nCUDA op profile (LIGHTMOE_PROFILE=1; steps run eagerly, events after every launch)\n");
    for (int g = 0; g < c->npgrp; g++) {
        const struct pstep *G = &c->pgrp[g];
        if (!G->steps) continue;
        fprintf(stderr, "steps of %d tokens: %ld steps, %.3f ms per step\n", G->n, G->steps, G->ms / G->steps);
        fprintf(stderr, "  %-14s %10s %12s %10s %6s\n", "op", "per step", "us per call", "us/step", "share");
        for (int i = 0; i < c->npst; i++) {
            const struct pstat *P = &c->pst[i];
            if (P->n != G->n) continue;
            fprintf(stderr, "  %-14s %10.1f %12.2f %10.1f %5.1f%%\n", P->name, (double)P->calls / G->steps,
                    1e3 * P->ms / P->calls, 1e3 * P->ms / G->steps, 100.0 * P->ms / (G->ms > 0 ? G->ms : 1));
        }
    }
}

static lm_status cu_step_end(lm_exec *ex) {
    cuda_exec *c = (cuda_exec *)ex;
    int mode = c->mode;
    c->mode = MODE_EAGER;
    if (mode == MODE_CAPTURE) capture_end(c);
    else if (mode == MODE_REPLAY && !c->err) {
        struct gslot *g = graph_find(c, c->key);
        cudaError_t e = g ? cudaGraphLaunch(g->exec, S0(c)) : cudaErrorInvalidValue;
        if (e != cudaSuccess) cuda_fail(c, e, "graph launch");
    }
    cudaError_t e = cudaStreamSynchronize(S0(c));
    if (e != cudaSuccess) cuda_fail(c, e, "the step");
    if (c->pst && !c->err) prof_collect(c);
    return c->err;
}

// --------------------------------------------------------------- weights ---

static size_t w_hash(const void *p, size_t cap) { return (size_t)(((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull) & (cap - 1); }

// The device copy of a host weight array (uploaded on first use).
// Keeps the open-addressing table at most half full.
static lm_status w_grow(cuda_exec *c) {
    if (c->w_n * 2 + 2 < c->w_cap) return LM_OK;
    size_t nc = c->w_cap ? c->w_cap * 2 : 1024;
    wslot *nw = calloc(nc, sizeof *nw);
    if (!nw) return LM_ERR_OOM;
    for (size_t i = 0; i < c->w_cap; i++)
        if (c->w[i].host) {
            size_t j = w_hash(c->w[i].host, nc);
            while (nw[j].host) j = (j + 1) & (nc - 1);
            nw[j] = c->w[i];
        }
    free(c->w);
    c->w = nw, c->w_cap = nc;
    return LM_OK;
}

static lm_status dev_weight(cuda_exec *c, const void *host, size_t bytes, const void **out) {
    TRYW(w_grow(c));
    size_t j = w_hash(host, c->w_cap);
    while (c->w[j].host && c->w[j].host != host) j = (j + 1) & (c->w_cap - 1);
    if (!c->w[j].host) {
        void *d;
        lm_status st = dev_alloc(c, bytes, &d);
        if (st) return st;
        CK(c, cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, S0(c)));  // weights stay put: no wait
        c->w[j] = (wslot){host, d};
        c->w_n++;
    }
    *out = c->w[j].dev;
    return LM_OK;
}

// Registers dev as the device copy of host (a view into a larger upload).
static lm_status dev_weight_alias(cuda_exec *c, const void *host, void *dev) {
    TRYW(w_grow(c));
    size_t j = w_hash(host, c->w_cap);
    while (c->w[j].host && c->w[j].host != host) j = (j + 1) & (c->w_cap - 1);
    if (!c->w[j].host) c->w_n++;
    c->w[j] = (wslot){host, dev};
    return LM_OK;
}

static lm_status mat_dev(cuda_exec *c, const lm_mat *m, const void **out) {
    if (!m || !m->data) {
        *out = NULL;
        return LM_OK;
    }
    size_t bytes = ((size_t)(m->rows - 1) * m->stride + (size_t)m->cols) * lm_dtype_size(m->dt);
    return dev_weight(c, m->data, bytes, out);
}

// Device pointer tables of an experts array: [gate[E] | up[E] | down[E]].
static lm_status experts_dev(cuda_exec *c, const lm_ffn_w *ew, const void *const **g, const void *const **u,
                             const void *const **d, int *dt) {
    int E = c->cfg->n_experts;
    for (int i = 0; i < c->n_et; i++)
        if (c->et[i].host == ew) {
            *g = c->et[i].dev, *u = c->et[i].dev + E, *d = c->et[i].dev + 2 * E, *dt = c->et[i].dt;
            return LM_OK;
        }
    const void **h = malloc(3 * (size_t)E * sizeof *h);
    if (!h) return LM_ERR_OOM;
    lm_status st = LM_OK;
    for (int e = 0; e < E && !st; e++) {
        const lm_mat *m[3] = {&ew[e].gate, &ew[e].up, &ew[e].down};
        for (int j = 0; j < 3 && !st; j++) {
            if (m[j]->dt != ew[0].gate.dt || m[j]->stride != (j == 2 ? ew[0].down.stride : ew[0].gate.stride))
                st = lm_err(LM_ERR_UNSUPPORTED, "cuda executor: experts of one layer differ in dtype or layout (%s)",
                            m[j]->name ? m[j]->name : "?");
            else st = mat_dev(c, m[j], &h[(size_t)j * E + e]);
        }
    }
    void *dv = NULL;
    if (!st) st = dev_alloc(c, 3 * (size_t)E * sizeof *h, &dv);
    if (!st && cudaMemcpyAsync(dv, h, 3 * (size_t)E * sizeof *h, cudaMemcpyHostToDevice, S0(c)) != cudaSuccess)
        st = cuda_fail(c, cudaGetLastError(), "expert tables");
    if (!st && cudaStreamSynchronize(S0(c)) != cudaSuccess) st = cuda_fail(c, cudaGetLastError(), "expert tables");
    free(h);
    if (st) return st;
    if (c->n_et == c->cap_et) {
        int nc = c->cap_et ? c->cap_et * 2 : 64;
        etable *v = realloc(c->et, (size_t)nc * sizeof *v);
        if (!v) return LM_ERR_OOM;
        c->et = v, c->cap_et = nc;
    }
    c->et[c->n_et++] = (etable){ew, dv, ew[0].gate.dt};
    const void **t = dv;
    *g = t, *u = t + E, *d = t + 2 * E, *dt = ew[0].gate.dt;
    return LM_OK;
}

// q, k and v of a layer as one [nq*hd + 2*nkv*hd][K] device matrix (and
// their biases as one vector), so one GEMM makes all three; the three host
// matrices map to views of it. Only for three dense row-major matrices of
// one dtype (host stride == K): otherwise they stay separate.
static lm_status bind_qkv(cuda_exec *c, const lm_layer_w *w) {
    const lm_mat *m[3] = {&w->wq, &w->wk, &w->wv}, *b[3] = {&w->bq, &w->bk, &w->bv};
    int K = m[0]->cols, O = 0, nb = 0;
    for (int i = 0; i < 3; i++) {
        if (!m[i]->data || m[i]->dt != m[0]->dt || m[i]->cols != K || m[i]->stride != (size_t)K) return LM_OK;
        O += m[i]->rows;
        nb += b[i]->data != NULL;
        if (b[i]->data && (b[i]->dt != b[0]->dt || !b[0]->data)) return LM_OK;
    }
    if (nb != 0 && nb != 3) return LM_OK;
    size_t es = lm_dtype_size(m[0]->dt), bes = nb ? lm_dtype_size(b[0]->dt) : 0;
    void *d, *bd = NULL;
    TRYW(dev_alloc(c, (size_t)O * K * es, &d));
    if (nb) TRYW(dev_alloc(c, (size_t)O * bes, &bd));
    for (int i = 0, r = 0; i < 3; r += m[i++]->rows) {
        char *dst = (char *)d + (size_t)r * K * es;
        CK(c, cudaMemcpyAsync(dst, m[i]->data, (size_t)m[i]->rows * K * es, cudaMemcpyHostToDevice, S0(c)));
        TRYW(dev_weight_alias(c, m[i]->data, dst));
        if (nb) {
            char *bdst = (char *)bd + (size_t)r * bes;
            CK(c, cudaMemcpyAsync(bdst, b[i]->data, (size_t)m[i]->rows * bes, cudaMemcpyHostToDevice, S0(c)));
            TRYW(dev_weight_alias(c, b[i]->data, bdst));
        }
    }
    struct qkv_w *q = realloc(c->qkv, (size_t)(c->n_qkv + 1) * sizeof *q);
    if (!q) return LM_ERR_OOM;
    c->qkv = q;
    q[c->n_qkv++] = (struct qkv_w){m[0]->data, d, bd, nb ? b[0]->dt : 0};
    return LM_OK;
}

static lm_status cu_bind_weights(lm_exec *ex, const lm_model *m) {
    cuda_exec *c = (cuda_exec *)ex;
    const lm_config *cfg = &m->cfg;
    size_t need = (size_t)(m->bytes_dt[0] + m->bytes_dt[1] + m->bytes_dt[2]), fr = 0, tot = 0;
    CK(c, cudaMemGetInfo(&fr, &tot));
    if (need > fr) {
        char a[32], b[32], t[32];
        return lm_err(LM_ERR_OOM, "the model's weights need %s of GPU memory and %s of the GPU's %s is free: run it "
                      "with --device cpu (the CPU-GPU pipeline for models that do not fit is not built yet)",
                      lm_format_bytes((double)need, a, sizeof a), lm_format_bytes((double)fr, b, sizeof b),
                      lm_format_bytes((double)tot, t, sizeof t));
    }
    const void *d;
    const lm_mat *top[] = {&m->embed, &m->final_norm, &m->lm_head};
    for (int i = 0; i < 3; i++) TRYW(mat_dev(c, top[i], &d));
    for (int l = 0; l < cfg->n_layers; l++) {
        const lm_layer_w *w = &m->layers[l];
        TRYW(bind_qkv(c, w));  // first, so that the three map to views of the fused copy
        const lm_mat *ms[] = {&w->attn_norm, &w->ffn_norm, &w->wq, &w->wk, &w->wv, &w->wo, &w->bq, &w->bk, &w->bv,
                              &w->q_norm, &w->k_norm, &w->router, &w->dense.gate, &w->dense.up, &w->dense.down,
                              &w->shared.gate, &w->shared.up, &w->shared.down, &w->shared_gate};
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) TRYW(mat_dev(c, ms[i], &d));
        if (w->experts) {
            const void *const *g, *const *u, *const *dn;
            int dt;
            TRYW(experts_dev(c, w->experts, &g, &u, &dn, &dt));
        }
    }
    CK(c, cudaStreamSynchronize(S0(c)));
    return LM_OK;
}

// ------------------------------------------------------------------- ops ---

static lm_status cu_embed(lm_exec *ex, const lm_mat *E, lm_tensor ids, lm_tensor x) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *e;
    TRYW(mat_dev(c, E, &e));
    return launched(c, lm_cuda_embed(e, E->dt, E->stride, ids.data, x.data, x.ld, x.rows, x.cols, S0(c)), "embed");
}

static lm_status cu_rmsnorm(lm_exec *ex, const lm_mat *w, lm_tensor x, int group, float eps, lm_tensor y) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *wd;
    TRYW(mat_dev(c, w, &wd));
    return launched(c, lm_cuda_rmsnorm(x.data, x.ld, x.rows, x.cols, group, wd, w->dt, w->cols, eps, y.data, y.ld, S0(c)),
                    "rmsnorm");
}

static lm_status cu_add_rmsnorm(lm_exec *ex, lm_tensor x, lm_tensor d, const lm_mat *w, float eps, lm_tensor y) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *wd = NULL;
    if (w) TRYW(mat_dev(c, w, &wd));
    return launched(c, lm_cuda_add_rmsnorm(x.data, x.ld, d.data, d.ld, x.rows, x.cols, wd, w ? w->dt : 0, w ? w->cols : 1,
                                           eps, y.data, y.ld, S0(c)),
                    "add_rmsnorm");
}

// The tensor-core GEMM for bf16 weights whose rows and inputs it can load
// 16 bytes at a time; the simple kernels otherwise (and with
// LIGHTMOE_KERNELS=simple).
static bool fast_gemm(cuda_exec *c, int wdt, size_t ldw, int K, size_t lda, int a_f32) {
    return c->kernels != 1 && lm_cuda_gg_supported(wdt, ldw, K, lda, a_f32);
}

// Rows of the GEMM per group (expert) above which it is compute-bound
// enough for the Hopper kernel (its 128-row tiles); below, gemm.cu's
// streaming kernels read the weights once at full bandwidth.
#define SM90_MIN_ROWS 96

// A tensor-core GEMM. On sm_90 (LIGHTMOE_KERNELS=fast) the Hopper TMA +
// wgmma kernel gemm_sm90 for large row counts; below, gemm.cu's streaming
// mma.sync kernel (faster than gemm_sm90_stream in the engine so far;
// LIGHTMOE_SM90S=1 picks that one); elsewhere gemm.cu's kernels throughout.
// pdl: the gemm.cu launch mode (1 programmatic dependent launch, 2 also
// prefetching the counts' weights: only where the counts were written two
// launches back, i.e. the down GEMM right after the gate+up GEMM); ws: may
// split K through the workspace (f32 outputs).
static int gg_run(cuda_exec *c, const lm_cuda_gg *g0, int pdl, bool ws) {
    lm_cuda_gg q = *g0;
    q.pdl = PDL(c) ? pdl : 0;
    int groups = q.counts ? (q.n_groups < q.n_rows ? q.n_groups : q.n_rows) : 1;
    int per = groups > 0 ? (q.n_rows + groups - 1) / groups : 0;
    if (c->kernels == 0 && per >= SM90_MIN_ROWS && lm_cuda_gg_sm90_supported(&q)) return lm_cuda_gg_sm90_run(&q, S0(c));
    if (c->kernels == 0 && !c->no_sm90s && per < SM90_MIN_ROWS && lm_cuda_gg_sm90s_supported(&q)) {
        q.ws = c->gg_ws, q.ws_bytes = c->gg_ws_bytes;  // stream-K partials (SwiGLU too)
        return lm_cuda_gg_sm90s_run(&q, S0(c));
    }
    if (ws && !q.swiglu) q.ws = c->gg_ws, q.ws_bytes = c->gg_ws_bytes;
    return lm_cuda_gg_run(&q, S0(c));
}

static lm_status cu_matmul(lm_exec *ex, const lm_mat *W, const lm_mat *bias, lm_tensor x, lm_tensor y) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *wd, *bd;
    TRYW(mat_dev(c, W, &wd));
    TRYW(mat_dev(c, bias, &bd));
    if (fast_gemm(c, W->dt, W->stride, W->cols, x.ld, 1)) {
        lm_cuda_gg g = {.a = x.data, .a_f32 = 1, .lda = x.ld, .a_rows = x.rows, .n_rows = x.rows, .w1_0 = wd,
                        .ldw = W->stride, .K = W->cols, .O = W->rows, .bias = bd, .bias_dt = bias ? bias->dt : 0,
                        .out = y.data, .ldo = y.ld, .scratch = c->act16, .scratch_bytes = c->act16_bytes};
        return launched(c, gg_run(c, &g, 1, true), "matmul");
    }
    return launched(c, lm_cuda_matmul(x.data, x.ld, x.rows, wd, W->dt, W->stride, W->rows, W->cols, bd,
                                      bias ? bias->dt : 0, y.data, y.ld, S0(c)),
                    "matmul");
}

static lm_status cu_matmul_qkv(lm_exec *ex, const lm_mat *const w[3], const lm_mat *const b[3], lm_tensor x,
                               lm_tensor qkv) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const struct qkv_w *f = NULL;
    for (int i = 0; i < c->n_qkv && !f; i++)
        if (c->qkv[i].wq == w[0]->data) f = &c->qkv[i];
    if (!f) {  // not fused: three GEMMs into the column views
        for (int i = 0, c0 = 0; i < 3; c0 += w[i++]->rows)
            TRYW(cu_matmul(ex, w[i], b[i], x, lm_cols(qkv, c0, w[i]->rows)));
        return LM_OK;
    }
    int K = w[0]->cols, wdt = w[0]->dt;
    if (fast_gemm(c, wdt, (size_t)K, K, x.ld, 1)) {
        lm_cuda_gg g = {.a = x.data, .a_f32 = 1, .lda = x.ld, .a_rows = x.rows, .n_rows = x.rows, .w1_0 = f->w,
                        .ldw = (size_t)K, .K = K, .O = qkv.cols, .bias = f->b, .bias_dt = f->bdt, .out = qkv.data,
                        .ldo = qkv.ld, .scratch = c->act16, .scratch_bytes = c->act16_bytes};
        return launched(c, gg_run(c, &g, 1, true), "matmul_qkv");
    }
    return launched(c, lm_cuda_matmul(x.data, x.ld, x.rows, f->w, wdt, (size_t)K, qkv.cols, K, f->b, f->bdt, qkv.data,
                                      qkv.ld, S0(c)),
                    "matmul_qkv");
}

static lm_status cu_rope_kv(lm_exec *ex, const lm_rope *rope, lm_tensor q, lm_tensor k, lm_tensor v, lm_tensor pos,
                            lm_tensor slot, int layer) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    int half = rope->head_dim / 2;
    if (rope->head_dim != c->kv.head_dim)
        return lm_err(LM_ERR_INVALID_ARG, "rope_kv: head_dim %d, the cache's %d", rope->head_dim, c->kv.head_dim);
    // cos/sin of every position the context can reach, made once on the host
    // exactly as the CPU executor makes them (lm_rope_cos_sin), so the GPU
    // rotates by the same numbers and the kernel does no trigonometry.
    if (!c->inv_freq || c->inv_n != half || memcmp(c->inv_host, rope->inv_freq, (size_t)half * sizeof(float))) {
        if (c->max_ctx < 1) return lm_err(LM_ERR_INVALID_ARG, "rope_kv before reserve");
        size_t bytes = (size_t)c->max_ctx * 2 * half * sizeof(float);
        float *tab = malloc(bytes), *h = realloc(c->inv_host, (size_t)half * sizeof(float));
        if (!tab || !h) {
            free(tab);
            if (h) c->inv_host = h;
            return LM_ERR_OOM;
        }
        c->inv_host = h;
        if (c->inv_n != half) {  // a cache of another head size: a new table (the old one stays until free)
            void *d;
            lm_status st = dev_alloc(c, bytes, &d);
            if (st) {
                free(tab);
                return st;
            }
            c->inv_freq = d, c->inv_n = half;
        }
        memcpy(c->inv_host, rope->inv_freq, (size_t)half * sizeof(float));
        for (int p = 0; p < c->max_ctx; p++)
            lm_rope_cos_sin(rope->inv_freq, half, p, tab + (size_t)p * 2 * half, tab + (size_t)p * 2 * half + half);
        cudaError_t e = cudaMemcpy(c->inv_freq, tab, bytes, cudaMemcpyHostToDevice);  // synchronous: tab goes now
        free(tab);
        if (e != cudaSuccess) return cuda_fail(c, e, "RoPE tables");
    }
    const lm_kv_layout *kv = &c->kv;
    return launched(c, lm_cuda_rope_kv(q.data, q.ld, q.cols / kv->head_dim, k.data, k.ld, v.data, v.ld, kv->n_kv_heads,
                                       kv->head_dim, c->inv_freq, pos.data, slot.data, q.rows, c->kv_layer[layer], kv->dt,
                                       kv->page_size, S0(c)),
                    "rope_kv");
}

static lm_status cu_attention(lm_exec *ex, const lm_attn_view *v, int layer, int n_heads, lm_tensor q, lm_tensor out) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const lm_kv_layout *kv = &c->kv;
    return launched(c, lm_cuda_attention(q.data, q.ld, out.data, out.ld, q.rows, n_heads, v->seq_start.data, v->n_seqs,
                                         v->pages.data, v->pages.ld, v->pos.data, c->kv_layer[layer], kv->dt,
                                         kv->page_size, kv->n_kv_heads, kv->head_dim, c->kernels == 1 ? NULL : c->attn_ws,
                                         c->attn_ws_bytes, S0(c)),  // no workspace: the simple kernel
                    "attention");
}

static lm_status cu_gather(lm_exec *ex, lm_tensor x, lm_tensor idx, lm_tensor y) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    return launched(c, lm_cuda_gather(x.data, x.ld, idx.data, y.data, y.ld, y.rows, x.cols, S0(c)), "gather");
}

static lm_status cu_route(lm_exec *ex, lm_tensor logits, int k, bool norm_topk, lm_tensor sel, lm_tensor w) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    int E = logits.cols;
    if (E < 1 || k < 1 || k > E || k > 32) return lm_err(LM_ERR_INVALID_ARG, "route: top-%d of %d experts", k, E);
    if (c->kernels != 1 && E <= 1024)
        return launched(c, lm_cuda_route_fast(logits.data, logits.ld, logits.rows, E, k, norm_topk, sel.data, sel.ld,
                                              w.data, w.ld, PDL(c), S0(c)),
                        "route");
    return launched(c, lm_cuda_route(logits.data, logits.ld, logits.rows, E, k, norm_topk, sel.data, sel.ld, w.data, w.ld,
                                     S0(c)),
                    "route");
}

static lm_status cu_align(lm_exec *ex, lm_tensor sel, int E, int layer, lm_moe_plan *p);

// route then align in one launch where the batch is small (bit for bit the
// two ops' results).
static lm_status cu_route_align(lm_exec *ex, lm_tensor logits, int k, bool norm_topk, lm_tensor sel, lm_tensor w,
                                int layer, lm_moe_plan *p) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    int E = logits.cols;
    if (E < 1 || k < 1 || k > E || k > 32) return lm_err(LM_ERR_INVALID_ARG, "route: top-%d of %d experts", k, E);
    // The one-launch kernel for <= 8 tokens gave a plan that differs from
    // route + align on the H200 for 128 experts, top-8, one token (kernel lab,
    // 2026-12-04; the emulator passes it): route and align run as two
    // launches until that is found.
    if (c->kernels == 1 || E > 1024 || !c->fused_route_align) {
        TRYW(cu_route(ex, logits, k, norm_topk, sel, w));
        return cu_align(ex, sel, E, layer, p);
    }
    unsigned long long *stats = layer >= 0 ? c->stats + (size_t)layer * E : NULL;
    return launched(c, lm_cuda_route_align(logits.data, logits.ld, logits.rows, E, k, norm_topk, sel.data, sel.ld,
                                           w.data, w.ld, p->block, p->row_of.data, p->row_of.ld, p->token_of.data,
                                           p->tiles.data, p->n_tiles.data, p->counts.data, stats, PDL(c), S0(c)),
                    "route_align");
}

static lm_status cu_align(lm_exec *ex, lm_tensor sel, int E, int layer, lm_moe_plan *p) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    unsigned long long *stats = layer >= 0 ? c->stats + (size_t)layer * E : NULL;
    if (c->kernels != 1)
        return launched(c, lm_cuda_align_fast_pdl(sel.data, sel.ld, sel.rows, sel.cols, E, p->block, p->row_of.data,
                                                  p->row_of.ld, p->token_of.data, p->tiles.data, p->n_tiles.data,
                                                  p->counts.data, stats, PDL(c), S0(c)),
                        "align");
    return launched(c, lm_cuda_align(sel.data, sel.ld, sel.rows, sel.cols, E, p->block, p->row_of.data, p->row_of.ld,
                                     p->token_of.data, p->tiles.data, p->n_tiles.data, p->counts.data, stats, S0(c)),
                    "align");
}

static lm_status cu_expert_up(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *p, lm_tensor x, lm_tensor h) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *const *g, *const *u, *const *d;
    int dt, E = c->cfg->n_experts, k = p->row_of.cols;
    TRYW(experts_dev(c, experts, &g, &u, &d, &dt));
    if (h.dt == LM_DT_BF16 && fast_gemm(c, dt, experts[0].gate.stride, x.cols, x.ld, 1)) {
        lm_cuda_gg q = {.a = x.data, .a_f32 = 1, .lda = x.ld, .a_rows = x.rows, .a_row = p->token_of.data,
                        .counts = p->counts.data, .n_groups = E, .block = p->block, .n_rows = x.rows * k, .w1 = g,
                        .w2 = u, .ldw = experts[0].gate.stride, .K = x.cols, .O = h.cols, .swiglu = 1,
                        .out = h.data, .ldo = h.ld, .scratch = c->act16, .scratch_bytes = c->act16_bytes};
        return launched(c, gg_run(c, &q, 1, false), "expert_up");
    }
    return launched(c, lm_cuda_gateup(x.data, x.ld, h.rows, p->token_of.data, p->tiles.data, p->n_tiles.data, p->block,
                                      g, u, NULL, NULL, dt, experts[0].gate.stride, x.cols, h.cols, h.data, h.dt,
                                      h.ld, S0(c)),
                    "expert_up");
}

static lm_status cu_expert_down(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *p, lm_tensor h, lm_tensor y) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *const *g, *const *u, *const *d;
    int dt, E = c->cfg->n_experts, k = p->row_of.cols;
    TRYW(experts_dev(c, experts, &g, &u, &d, &dt));
    if (h.dt == LM_DT_BF16 && fast_gemm(c, dt, experts[0].down.stride, h.cols, h.ld, 0)) {
        lm_cuda_gg q = {.a = h.data, .a_f32 = 0, .lda = h.ld, .counts = p->counts.data, .n_groups = E,
                        .block = p->block, .n_rows = p->row_of.rows * k, .w1 = d, .ldw = experts[0].down.stride,
                        .K = h.cols, .O = y.cols, .out = y.data, .ldo = y.ld};
        return launched(c, gg_run(c, &q, 2, true), "expert_down");
    }
    return launched(c, lm_cuda_down(h.data, h.dt, h.ld, h.rows, p->token_of.data, p->tiles.data, p->n_tiles.data,
                                    p->block, d, NULL, dt, experts[0].down.stride, h.cols, y.cols, y.data, y.ld, S0(c)),
                    "expert_down");
}

static lm_status cu_combine(lm_exec *ex, const lm_moe_plan *p, lm_tensor w, lm_tensor y, lm_tensor out) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    if (c->kernels != 1)
        return launched(c, lm_cuda_combine_fast(p->row_of.data, p->row_of.ld, w.data, w.ld, out.rows, w.cols, y.data,
                                                y.ld, out.data, out.ld, out.cols, PDL(c), S0(c)),
                        "combine");
    return launched(c, lm_cuda_combine(p->row_of.data, p->row_of.ld, w.data, w.ld, out.rows, w.cols, y.data, y.ld,
                                       out.data, out.ld, out.cols, S0(c)),
                    "combine");
}

// Dense SwiGLU. h is the op's f32 scratch [n][inter]; the fast path keeps
// h in it as bf16 (half of it), which only this op reads.
static lm_status cu_ffn(lm_exec *ex, const lm_ffn_w *f, lm_tensor x, lm_tensor h, lm_tensor y) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *g, *u, *d;
    TRYW(mat_dev(c, &f->gate, &g));
    TRYW(mat_dev(c, &f->up, &u));
    TRYW(mat_dev(c, &f->down, &d));
    int inter = f->gate.rows;
    if (fast_gemm(c, f->gate.dt, f->gate.stride, x.cols, x.ld, 1) &&
        fast_gemm(c, f->down.dt, f->down.stride, inter, h.ld, 0) && f->up.dt == f->gate.dt &&
        f->up.stride == f->gate.stride) {
        lm_cuda_gg q = {.a = x.data, .a_f32 = 1, .lda = x.ld, .a_rows = x.rows, .n_rows = x.rows, .w1_0 = g,
                        .w2_0 = u, .ldw = f->gate.stride, .K = x.cols, .O = inter, .swiglu = 1, .out = h.data,
                        .ldo = h.ld, .scratch = c->act16, .scratch_bytes = c->act16_bytes};
        TRYW(launched(c, gg_run(c, &q, 1, false), "ffn"));
        lm_cuda_gg r = {.a = h.data, .a_f32 = 0, .lda = h.ld, .n_rows = x.rows, .w1_0 = d, .ldw = f->down.stride,
                        .K = inter, .O = y.cols, .out = y.data, .ldo = y.ld};
        return launched(c, gg_run(c, &r, 1, true), "ffn");
    }
    lm_status st = launched(c, lm_cuda_gateup(x.data, x.ld, x.rows, NULL, NULL, NULL, 1, NULL, NULL, g, u, f->gate.dt,
                                              f->gate.stride, x.cols, inter, h.data, 0, h.ld, S0(c)),
                            "ffn");
    if (st) return st;
    return launched(c, lm_cuda_down(h.data, 0, h.ld, x.rows, NULL, NULL, NULL, 1, NULL, d, f->down.dt, f->down.stride,
                                    inter, y.cols, y.data, y.ld, S0(c)),
                    "ffn");
}

static lm_status cu_gated_add(lm_exec *ex, const lm_mat *g, lm_tensor x, lm_tensor y, lm_tensor out) {
    cuda_exec *c = (cuda_exec *)ex;
    if (REPLAYING(c)) return LM_OK;
    const void *gd;
    TRYW(mat_dev(c, g, &gd));
    return launched(c, lm_cuda_gated_add(x.data, x.ld, gd, g->dt, x.cols, y.data, y.ld, out.data, out.ld, x.rows, S0(c)),
                    "gated_add");
}

static void cu_mem_used(lm_exec *ex, double *allocated, int *graphs, double *graph_bytes) {
    cuda_exec *c = (cuda_exec *)ex;
    *allocated = c->allocated, *graphs = c->n_graphs, *graph_bytes = c->graph_bytes;
}

// The sampler's draws (greedy, temperature, top-k, top-p: sample.c's
// semantics, src/kernels/cuda/sample.cu) and the finite check of the step's
// output rows; the banned map goes through pinned memory (a graph's copy
// node reads it at replay).
static lm_status cu_sample(lm_exec *ex, lm_tensor logits, lm_tensor params, const uint8_t *banned, int n_banned,
                           lm_tensor out) {
    cuda_exec *c = (cuda_exec *)ex;
    const void *bd = NULL;
    if (banned) {
        if (n_banned < 1 || n_banned > c->banned_cap)
            return lm_err(LM_ERR_INVALID_ARG, "sample: a banned map of %d ids for a vocabulary of %d", n_banned,
                          c->banned_cap);
        if (n_banned != c->banned_n || memcmp(c->banned_host, banned, (size_t)n_banned)) {
            if (REPLAYING(c))  // the graph copies the pinned map: it must hold this step's before the launch
                CK(c, cudaStreamSynchronize(S0(c)));
            memcpy(c->banned_host, banned, (size_t)n_banned);
            c->banned_n = n_banned;
        }
        bd = c->banned_dev;
    }
    if (REPLAYING(c)) return LM_OK;
    if (banned) CK(c, cudaMemcpyAsync(c->banned_dev, c->banned_host, (size_t)n_banned, cudaMemcpyHostToDevice, S0(c)));
    if (params.ld < LM_CUDA_SAMPLE_WORDS) return lm_err(LM_ERR_INVALID_ARG, "sample: %zu parameter words", params.ld);
    return launched(c, lm_cuda_sample(logits.data, logits.ld, logits.rows, logits.cols, params.data, (int)params.ld, bd,
                                      out.data, NULL, 0, NULL, NULL, S0(c)),
                    "sample");
}

// ------------------------------------------------------------ lifecycle ---

static void cu_free(lm_exec *ex) {
    cuda_exec *c = (cuda_exec *)ex;
    if (!c) return;
    cudaDeviceSynchronize();
    prof_report(c);
    if (c->attn_ws) lm_cuda_attention_ws_forget(c->attn_ws);
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (c->graph[i].exec) cudaGraphExecDestroy(c->graph[i].exec);
    for (int i = 0; i < c->pcap; i++) cudaEventDestroy(c->pev[i]);
    free(c->pev);
    free(c->pname);
    free(c->pst);
    for (size_t i = 0; i < c->allocs.n / sizeof(void *); i++) cudaFree(((void **)c->allocs.p)[i]);
    for (size_t i = 0; i < c->pinned.n / sizeof(void *); i++) cudaFreeHost(((void **)c->pinned.p)[i]);
    for (int i = 0; i < LM_EXEC_STREAMS; i++)
        if (c->st[i]) cudaStreamDestroy(c->st[i]);
    for (int i = 0; i < LM_EXEC_EVENTS; i++)
        if (c->ev[i]) cudaEventDestroy(c->ev[i]);
    lm_buf_free(&c->allocs);
    lm_buf_free(&c->pinned);
    free(c->kv_layer);
    free(c->w);
    free(c->et);
    free(c->qkv);
    free(c->inv_host);
    free(c);
}

static const lm_exec_ops cuda_ops = {
    .name = "cuda",
    .moe_block = 16,
    .moe_h_dt = LM_DT_BF16,
    .act_bf16 = 1,
    .alloc = cu_alloc,
    .upload = cu_upload,
    .download = cu_download,
    .host_ptr = cu_host_ptr,
    .kv_alloc = cu_kv_alloc,
    .reserve = cu_reserve,
    .expert_stats = cu_expert_stats,
    .host_alloc = cu_host_alloc,
    .bind_weights = cu_bind_weights,
    .step_begin = cu_step_begin,
    .step_end = cu_step_end,
    .upload_async = cu_upload_async,
    .download_async = cu_download_async,
    .event_record = cu_event_record,
    .event_wait = cu_event_wait,
    .event_sync = cu_event_sync,
    .embed = cu_embed,
    .rmsnorm = cu_rmsnorm,
    .add_rmsnorm = cu_add_rmsnorm,
    .matmul = cu_matmul,
    .matmul_qkv = cu_matmul_qkv,
    .rope_kv = cu_rope_kv,
    .attention = cu_attention,
    .gather = cu_gather,
    .route = cu_route,
    .align = cu_align,
    .route_align = cu_route_align,
    .expert_up = cu_expert_up,
    .expert_down = cu_expert_down,
    .combine = cu_combine,
    .ffn = cu_ffn,
    .gated_add = cu_gated_add,
    .sample = cu_sample,
    .sample_full = 1,
    .mem_used = cu_mem_used,
    .free = cu_free,
};

double lm_exec_cuda_scratch_bytes(const lm_config *cfg, int max_tokens, int max_ctx) {
    double K = cfg->hidden > cfg->n_heads * cfg->head_dim ? cfg->hidden : (double)cfg->n_heads * cfg->head_dim;
    return (double)(max_tokens > 0 ? max_tokens : 1) * K * 2 +
           (double)lm_cuda_attention_workspace_bytes(max_tokens, cfg->n_heads, max_ctx, cfg->head_dim) +
           2.0 * cfg->vocab + 8.0 * cfg->n_layers * cfg->n_experts;
}

lm_status lm_exec_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess && n > 0) e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return lm_err(LM_ERR_DEVICE, "no CUDA GPU is usable here (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    return LM_OK;
}

int lm_cuda_devices(char *name, size_t cap) {
    int n = 0;
    if (name && cap) *name = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    struct cudaDeviceProp p;
    if (n > 0 && name && cap && cudaGetDeviceProperties(&p, 0) == cudaSuccess) snprintf(name, cap, "%s", p.name);
    return n;
}

lm_status lm_exec_cuda_init(const lm_config *cfg, lm_exec **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return lm_err(LM_ERR_DEVICE, "no CUDA GPU is usable here (%s)",
                      e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    cuda_exec *c = calloc(1, sizeof *c);
    if (!c) return LM_ERR_OOM;
    c->base.ops = &cuda_ops;
    c->cfg = cfg;
    // LIGHTMOE_KERNELS picks the kernels: fast (default) the tensor-core
    // GEMMs (gemm.cu, and the Hopper ones on sm_90) and the paged
    // flash/split-K attention (attention.cu); portable the same without the
    // Hopper-only kernels (what an A100/L4 runs, for comparison on an H100);
    // simple the v0 kernels (one warp per dot product, fp32 activations: the
    // CPU's numbers to ~1e-7). Any other value is an error, not a fallback.
    const char *kn = getenv("LIGHTMOE_KERNELS");
    if (kn && *kn && strcmp(kn, "fast") && strcmp(kn, "simple") && strcmp(kn, "portable")) {
        free(c);
        return lm_err(LM_ERR_INVALID_ARG, "LIGHTMOE_KERNELS=%s: expected fast, portable or simple", kn);
    }
    c->kernels = !kn || !*kn || !strcmp(kn, "fast") ? 0 : !strcmp(kn, "simple") ? 1 : 2;
    // LIGHTMOE_SM90_VARIANT=N picks a variant of the Hopper large-M kernel
    // (gemm_sm90.h; 0 or unset: its own choice), for comparisons on a GPU.
    const char *sv = getenv("LIGHTMOE_SM90_VARIANT");
    // Variant 1 (128x256 tiles, 4 stages, no clusters) was the fastest of
    // 1..7 for every MoE shape on the H200 (2026-12-04: 598 / 629 TFLOP/s
    // for Mixtral's whole layer at 4096 / 8192 tokens; the clustered 6, the
    // kernel's own choice, 390 / 388).
    lm_cuda_gg_sm90_set_variant(1);
    if (sv && *sv) {
        char *end;
        long v = strtol(sv, &end, 10);
        if (*end || v < 0 || v > lm_cuda_gg_sm90_variants() || (v && lm_cuda_gg_sm90_diagnostic((int)v)) ||
            lm_cuda_gg_sm90_set_variant((int)v)) {
            free(c);
            return lm_err(LM_ERR_INVALID_ARG, "LIGHTMOE_SM90_VARIANT=%s: expected 0..%d, not a timing-only variant", sv,
                          lm_cuda_gg_sm90_variants());
        }
    }
    const char *ra = getenv("LIGHTMOE_ROUTE_ALIGN");
    c->fused_route_align = ra && !strcmp(ra, "1");
    // gemm.cu's streaming kernel beat the Hopper streaming kernel in the
    // engine on the H200 (2026-12-04, Mixtral 8 layers: batch-1 decode 408 vs
    // 351 tok/s, batch 256 18,649 vs 17,040), so small row counts take it;
    // LIGHTMOE_SM90S=1 runs gemm_sm90_stream there instead.
    const char *s9 = getenv("LIGHTMOE_SM90S");
    c->no_sm90s = !(s9 && !strcmp(s9, "1"));
    const char *pd = getenv("LIGHTMOE_PDL");
    c->no_pdl = pd && !strcmp(pd, "0");
    int cc = 0;
    if (cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) cudaGetLastError(), cc = 0;
    if (cc < 9) c->no_pdl = 1;  // programmatic dependent launch is a Hopper feature
    lm_cuda_set_pdl(c->kernels != 1 && !c->no_pdl);
    // LIGHTMOE_PROFILE=1: GPU time per op (events between launches; steps
    // then run eagerly, never as graphs), printed when the executor is freed.
    const char *pf = getenv("LIGHTMOE_PROFILE");
    if (pf && *pf && strcmp(pf, "0")) {
        c->pst = calloc(PROF_STATS, sizeof *c->pst);
        c->graphs_off = 1;
    }
    lm_status st = LM_OK;
    for (int i = 0; i < LM_EXEC_STREAMS && !st; i++)
        if ((e = cudaStreamCreateWithFlags(&c->st[i], cudaStreamNonBlocking)) != cudaSuccess) st = cuda_fail(NULL, e, "stream");
    for (int i = 0; i < LM_EXEC_EVENTS && !st; i++)
        if ((e = cudaEventCreateWithFlags(&c->ev[i], cudaEventDisableTiming)) != cudaSuccess) st = cuda_fail(NULL, e, "event");
    size_t ns = (size_t)cfg->n_layers * (size_t)cfg->n_experts;
    void *s = NULL;
    if (!st) st = dev_alloc(c, ns * sizeof(unsigned long long), &s);
    if (!st && ns && (e = cudaMemsetAsync(s, 0, ns * sizeof(unsigned long long), c->st[0])) != cudaSuccess)
        st = cuda_fail(NULL, e, "stats");
    if (st) {
        cu_free(&c->base);
        return st;
    }
    c->stats = s;
    *out = &c->base;
    return LM_OK;
}

#endif
