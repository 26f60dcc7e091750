// Executor interface: the operations the generic decoder block
// (src/engine/block.c) is made of, on memory the executor owns.
//
// The executor allocates activations, scratch and the paged KV cache in its
// own memory space (host, pinned host, device) and hands out lm_tensor views
// of it; the driver passes those views to ops and never dereferences them.
// The context keeps host metadata only (sequences, block tables, the page
// allocator) and uploads a step's metadata with step_begin. Routing counts,
// offsets and the expert-sorted tile schedule are computed by ops into
// executor memory and never read back by the driver: one sync per step.
//
// Ops return an lm_status; an executor may also keep the first error and
// return it from step_end (a device executor learns of failures late).
//
// Executors: cpu (SIMD kernels on a thread pool, src/exec/cpu.c) and ref
// (plain scalar loops, src/exec/ref.c) — the reference every op of every
// executor is tested against (tests/unit/test_ops.c). CUDA and the CPU-GPU
// pipeline implement the same table.
#ifndef LM_EXEC_EXEC_H
#define LM_EXEC_EXEC_H

#include "model/model.h"
#include "util/dtype.h"
#include "util/err.h"

typedef struct lm_exec lm_exec;

// A 2-D view [rows][cols] of executor memory, rows ld elements apart.
typedef struct lm_tensor {
    void *data;  // in the executor's memory space: only ops dereference it
    lm_dtype dt; // F32, BF16 or I32
    int rows, cols;
    size_t ld;
} lm_tensor;

// Rows [r0, r0 + n) of t.
static inline lm_tensor lm_rows(lm_tensor t, int r0, int n) {
    t.data = (char *)t.data + (size_t)r0 * t.ld * lm_dtype_size(t.dt);
    t.rows = n;
    return t;
}

// Columns [c0, c0 + n) of t (same rows and row stride).
static inline lm_tensor lm_cols(lm_tensor t, int c0, int n) {
    t.data = (char *)t.data + (size_t)c0 * lm_dtype_size(t.dt);
    t.cols = n;
    return t;
}

// The paged KV cache, one pool of pages per layer, in FlashInfer's HND
// layout: [page][K|V][kv_head][page_size][head_dim]. A token of a sequence
// lives at slot = page * page_size + offset; a sequence's pages are listed in
// its row of the block table, shared by every layer. Pages are bf16 (or f32
// for reference runs) and byte-identical on host and device, so they can
// cross PCIe unchanged and CPU attention reads them in place.
typedef struct lm_kv_layout {
    int n_layers, n_pages, page_size, n_kv_heads, head_dim;
    lm_dtype dt;  // BF16 or F32
} lm_kv_layout;

// Bytes of one page of one layer.
static inline size_t lm_kv_page_bytes(const lm_kv_layout *k) {
    return 2 * (size_t)k->n_kv_heads * (size_t)k->page_size * (size_t)k->head_dim * lm_dtype_size(k->dt);
}

// What a step (or a micro-batch of it: row slices of the step's tensors)
// attends over. 1-D metadata is stored as [n][1] so that lm_rows slices it.
// Tokens are grouped by sequence: sequence s of the view owns the tokens
// [seq_start[s] - seq_start[0], seq_start[s+1] - seq_start[0]) of the view
// (query_start_loc), its cache holds kv_len[s] positions once this step's
// tokens are written, on pages[s][0 .. ceil(kv_len / page_size)).
typedef struct lm_attn_view {
    int n_seqs;
    lm_tensor seq_start;  // I32 [n_seqs + 1][1]
    lm_tensor kv_len;     // I32 [n_seqs][1]
    lm_tensor pages;      // I32 [n_seqs][max_pages]
    lm_tensor pos;        // I32 [n_tokens][1]: position of each token (its causal limit)
} lm_attn_view;

// RoPE of one model: inverse frequencies [head_dim / 2] in fp32 computed as
// transformers does (so long contexts round the same way).
typedef struct lm_rope {
    int head_dim;
    const float *inv_freq;  // host array, [head_dim / 2]
} lm_rope;

// Expert-sorted layout of a MoE layer's routed rows (vLLM's
// moe_align_block_size): the n*k (token, choice) pairs are ordered by expert
// and each expert's rows are padded to a multiple of `block`; experts with no
// token get no block. Computed by the align op, read by the expert GEMMs.
typedef struct lm_moe_plan {
    int block;            // rows per tile
    lm_tensor row_of;     // I32 [n][k]: packed row of each (token, choice)
    lm_tensor token_of;   // I32 [rows_max][1]: token of each packed row, -1 for padding
    lm_tensor tiles;      // I32 [tiles_max][2]: (expert, first packed row) of each tile
    lm_tensor n_tiles;    // I32 [1][1]
    lm_tensor counts;     // I32 [E][1]: tokens per expert
} lm_moe_plan;

// One row's sampling parameters as the sample op reads them (the host
// sampler's state at this draw: src/engine/sample.c).
typedef struct lm_sample_row {
    float temperature;   // > 0: draw; 0: greedy (argmax, ties to the lower id); < 0: only check the row
    int32_t top_k;       // <= 0: off
    float top_p;         // >= 1: off
    int32_t n_valid;     // ids [0, n_valid) may be drawn
    int32_t use_banned;  // ids with banned[id] != 0 are never drawn
    int32_t pad;
    uint64_t seed, stream, step;  // the counter-based RNG's key of this draw
} lm_sample_row;
#define LM_SAMPLE_ROW_WORDS ((int)(sizeof(lm_sample_row) / 4))

// Packed rows a plan may need for n tokens with top-k of E experts: every
// expert padded by at most block - 1.
static inline int lm_moe_rows_max(int n, int k, int n_experts, int block) {
    return n * k + n_experts * (block - 1);
}

// Bytes of a rows x cols tensor of dt, or an error naming the executor
// when the shape is negative or overflows.
static inline lm_status lm_exec_tensor_bytes(const char *exec, lm_dtype dt, int rows, int cols, size_t *bytes) {
    size_t es = lm_dtype_size(dt), n;
    if (rows < 0 || cols < 0 || !es || !lm_mul_ok((size_t)rows, (size_t)cols, &n) || !lm_mul_ok(n, es, &n))
        return lm_err(LM_ERR_INVALID_ARG, "%s executor: bad tensor shape [%d][%d]", exec, rows, cols);
    *bytes = n;
    return LM_OK;
}

// Streams and events an executor provides (indices 0 .. n - 1).
#define LM_EXEC_STREAMS 4
#define LM_EXEC_EVENTS 64

static inline lm_status lm_exec_check_stream(const char *op, int stream) {
    return stream >= 0 && stream < LM_EXEC_STREAMS
               ? LM_OK
               : lm_err(LM_ERR_INVALID_ARG, "%s: stream %d out of range [0, %d)", op, stream, LM_EXEC_STREAMS);
}
static inline lm_status lm_exec_check_event(const char *op, int event) {
    return event >= 0 && event < LM_EXEC_EVENTS
               ? LM_OK
               : lm_err(LM_ERR_INVALID_ARG, "%s: event %d out of range [0, %d)", op, event, LM_EXEC_EVENTS);
}

typedef struct lm_exec_ops {
    const char *name;
    int moe_block;  // rows per MoE tile (lm_moe_plan.block) this executor's GEMMs use
    // Element type of the MoE intermediate h (expert_up's output, expert_down's
    // input): F32 (the zero default), or BF16 where the GEMMs run on bf16 tensor
    // cores and would round it anyway (half the bytes between the two GEMMs).
    lm_dtype moe_h_dt;
    // Nonzero when GEMMs over bf16 weights round their activations to bf16
    // (tensor cores): results then agree with the reference to ~2^-9, not fp32.
    int act_bf16;

    // --- memory
    // A tensor in executor memory (zeroed), freed with the executor.
    lm_status (*alloc)(lm_exec *ex, lm_dtype dt, int rows, int cols, lm_tensor *out);
    // Host <-> executor copies of a tensor (rows x cols, any ld).
    lm_status (*upload)(lm_exec *ex, lm_tensor dst, const void *src);
    lm_status (*download)(lm_exec *ex, lm_tensor src, void *dst);
    // The tensor's memory if the host can read it in place (CPU), else NULL.
    const void *(*host_ptr)(lm_exec *ex, lm_tensor t);
    // The KV cache, allocated once: n_pages per layer.
    lm_status (*kv_alloc)(lm_exec *ex, const lm_kv_layout *layout);
    // Sizes internal scratch for steps of up to max_tokens tokens and
    // positions below max_ctx, so that no op allocates.
    lm_status (*reserve)(lm_exec *ex, int max_tokens, int max_ctx);
    // Makes the model's weights resident where the executor computes, once,
    // before any step (a device executor uploads them here so that no step
    // allocates, and says clearly when they do not fit); cpu and ref read
    // them in place.
    lm_status (*bind_weights)(lm_exec *ex, const lm_model *m);
    // Tokens routed to each expert by align since the last reset: [n_layers][E].
    lm_status (*expert_stats)(lm_exec *ex, uint64_t *out, bool reset);

    // Host memory for the staging side of async copies (pinned on a device
    // executor, so copies overlap compute), freed with the executor.
    lm_status (*host_alloc)(lm_exec *ex, size_t bytes, void **out);

    // --- step bracket: step_end waits for the step and returns its status.
    // key names the step's shape: every host-side value the driver passes to
    // the ops in between (sizes, tensor views, host pointers) is a function
    // of key >> 1, and only device memory (the metadata uploaded before
    // step_begin) differs between steps of one key. When bit 0 is set, a
    // device executor may capture the ops of a key once as a graph and
    // replay it for later steps of the same key; the ops must still be
    // called in the same order (they return at once while a graph is
    // replayed). The step's token count is key >> 38 (for reports); key 0
    // says nothing.
    lm_status (*step_begin)(lm_exec *ex, uint64_t key);
    lm_status (*step_end)(lm_exec *ex);

    // --- streams and events. Ops run in order on stream 0; copies may run on
    // streams 1 .. LM_EXEC_STREAMS - 1 and are ordered against compute by
    // events (the pipeline overlaps weight and KV transfers with compute this
    // way). Host memory of an async copy must stay untouched until an event
    // recorded after it has completed. On the CPU an op has finished when it
    // returns, so these only validate their arguments.
    lm_status (*upload_async)(lm_exec *ex, lm_tensor dst, const void *src, int stream);
    lm_status (*download_async)(lm_exec *ex, lm_tensor src, void *dst, int stream);
    lm_status (*event_record)(lm_exec *ex, int event, int stream);  // event = all work queued on stream so far
    lm_status (*event_wait)(lm_exec *ex, int event, int stream);    // later work on stream waits for event
    lm_status (*event_sync)(lm_exec *ex, int event);                // the host waits for event

    // --- ops (shapes in rows x cols; x and y may be the same tensor where noted)
    // x[t] = E[ids[t]]                            ids I32 [1][n], x [n][hidden]
    lm_status (*embed)(lm_exec *ex, const lm_mat *E, lm_tensor ids, lm_tensor x);
    // y = rmsnorm(each `group` values of x) * w   (y may be x; group divides cols)
    lm_status (*rmsnorm)(lm_exec *ex, const lm_mat *w, lm_tensor x, int group, float eps, lm_tensor y);
    // x += d, then y = rmsnorm(x) * w (w NULL: only the add)
    lm_status (*add_rmsnorm)(lm_exec *ex, lm_tensor x, lm_tensor d, const lm_mat *w, float eps, lm_tensor y);
    // y = x W^T (+ bias)                          x [n][W.cols], y [n][W.rows]
    lm_status (*matmul)(lm_exec *ex, const lm_mat *W, const lm_mat *bias, lm_tensor x, lm_tensor y);
    // Optional: q, k and v of one input at once. qkv [n][nq*hd + 2*nkv*hd]
    // holds them side by side (q, then k, then v: the step's q, k, v tensors
    // are its column views); w and b are the three projections and their
    // biases (b[i]->data NULL: none). NULL: the driver calls matmul three times.
    lm_status (*matmul_qkv)(lm_exec *ex, const lm_mat *const w[3], const lm_mat *const b[3], lm_tensor x,
                            lm_tensor qkv);
    // RoPE (rotate-half) on q and k by position, then k and v into the cache
    // of `layer` at their slots. q [n][nq*hd] (rotated in place), k/v [n][nkv*hd].
    lm_status (*rope_kv)(lm_exec *ex, const lm_rope *rope, lm_tensor q, lm_tensor k, lm_tensor v, lm_tensor pos,
                         lm_tensor slot, int layer);
    // Causal attention of the view's tokens over their sequences' pages.
    // q, out [n][nq*hd]; a token at position p sees positions 0..p.
    lm_status (*attention)(lm_exec *ex, const lm_attn_view *view, int layer, int n_heads, lm_tensor q,
                           lm_tensor out);
    // y[i] = x[idx[i]]                            idx I32 [1][m]
    lm_status (*gather)(lm_exec *ex, lm_tensor x, lm_tensor idx, lm_tensor y);

    // --- MoE stages, each tested on its own against the reference
    // softmax over the router logits, top-k (ties: lower expert id), optional
    // renormalisation; choices sorted by expert id. logits [n][E] -> sel I32 [n][k], w [n][k]
    lm_status (*route)(lm_exec *ex, lm_tensor logits, int k, bool norm_topk, lm_tensor sel, lm_tensor w);
    // the expert-sorted padded plan of sel (see lm_moe_plan); the counts are
    // added to the executor's routing statistics of `layer` (-1: not counted)
    lm_status (*align)(lm_exec *ex, lm_tensor sel, int n_experts, int layer, lm_moe_plan *plan);
    // optional: route then align (the experts are logits.cols), as one step
    lm_status (*route_align)(lm_exec *ex, lm_tensor logits, int k, bool norm_topk, lm_tensor sel, lm_tensor w,
                             int layer, lm_moe_plan *plan);
    // h[r] = silu(x[token_of[r]] Wg_e^T) * (x[token_of[r]] Wu_e^T) for the rows of every tile of expert e
    //                                             x [n][H], h [rows_max][inter]
    lm_status (*expert_up)(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *plan, lm_tensor x, lm_tensor h);
    // y[r] = h[r] Wd_e^T                          y [rows_max][H]
    lm_status (*expert_down)(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *plan, lm_tensor h,
                             lm_tensor y);
    // out[t] = sum_i w[t][i] * y[row_of[t][i]] in expert-id order   out [n][H]
    lm_status (*combine)(lm_exec *ex, const lm_moe_plan *plan, lm_tensor w, lm_tensor y, lm_tensor out);
    // a dense SwiGLU MLP: y = (silu(x Wg^T) * (x Wu^T)) Wd^T; h is scratch [n][inter]
    lm_status (*ffn)(lm_exec *ex, const lm_ffn_w *f, lm_tensor x, lm_tensor h, lm_tensor y);
    // out += sigmoid(x g^T) * y                   g [1][H] (Qwen2-MoE shared expert gate)
    lm_status (*gated_add)(lm_exec *ex, const lm_mat *g, lm_tensor x, lm_tensor y, lm_tensor out);

    // --- sampling where the logits are (optional: NULL, and the driver
    // downloads the logits and samples on the host). For each row r of
    // logits [n][vocab], with params I32 [n][LM_SAMPLE_ROW_WORDS] holding an
    // lm_sample_row: out[r][0] = the id drawn (-1 for a row that only asked
    // for the check), out[r][1] = 1 when the row holds NaN or Inf, else 0.
    // banned: the host bitmap (one byte per id, n_banned of them) that rows
    // with use_banned refer to, or NULL; read when the op is called.
    // sample_full: whether the executor can draw from a distribution (else
    // the driver calls it only when every row is greedy or check-only).
    lm_status (*sample)(lm_exec *ex, lm_tensor logits, lm_tensor params, const uint8_t *banned, int n_banned,
                        lm_tensor out);
    int sample_full;

    // Bytes allocated in the executor's memory, and the CUDA graphs it keeps
    // with the device memory they took (NULL on host executors: nothing extra).
    void (*mem_used)(lm_exec *ex, double *allocated, int *graphs, double *graph_bytes);

    void (*free)(lm_exec *ex);
} lm_exec_ops;

struct lm_exec {
    const lm_exec_ops *ops;
};

// The CPU executor (fp32 compute over bf16/f16/f32 weights on the runtime's
// thread pool). The ref executor: the same ops as plain single-threaded
// loops, no SIMD — the oracle of the op tests.
lm_status lm_exec_cpu_init(const lm_config *cfg, lm_pool *pool, lm_exec **out);
lm_status lm_exec_ref_init(const lm_config *cfg, lm_exec **out);
// The CUDA executor on the current GPU (src/exec/cuda.c); LM_ERR_DEVICE when
// there is none, LM_ERR_UNSUPPORTED when built without CUDA.
lm_status lm_exec_cuda_init(const lm_config *cfg, lm_exec **out);

// The copies, streams, events and staging memory of executors whose memory
// is host memory and whose ops complete before they return
// (src/exec/sync.c), shared by cpu and ref.
lm_status lm_exec_host_upload(lm_exec *ex, lm_tensor dst, const void *src);
lm_status lm_exec_host_download(lm_exec *ex, lm_tensor src, void *dst);
const void *lm_exec_host_ptr(lm_exec *ex, lm_tensor t);
lm_status lm_exec_sync_upload_async(lm_exec *ex, lm_tensor dst, const void *src, int stream);
lm_status lm_exec_sync_download_async(lm_exec *ex, lm_tensor src, void *dst, int stream);
lm_status lm_exec_sync_event_record(lm_exec *ex, int event, int stream);
lm_status lm_exec_sync_event_wait(lm_exec *ex, int event, int stream);
lm_status lm_exec_sync_event_sync(lm_exec *ex, int event);
lm_status lm_exec_sync_host_alloc(lm_exec *ex, size_t bytes, void **out);
lm_status lm_exec_sync_bind_weights(lm_exec *ex, const lm_model *m);

// Planning a context before its executor exists: rows per MoE tile of the
// named executor, the CUDA executor's own scratch for steps of max_tokens
// tokens over contexts up to max_ctx (0 without CUDA), and the current GPU's
// free and total memory (LM_ERR_DEVICE / LM_ERR_UNSUPPORTED without one).
int lm_exec_moe_block(const char *name);
double lm_exec_cuda_scratch_bytes(const lm_config *cfg, int max_tokens, int max_ctx);
lm_status lm_exec_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

// By name ("cpu", "ref", "cuda"), for tests and the command line.
lm_status lm_exec_init(const char *name, const lm_config *cfg, lm_pool *pool, lm_exec **out);

#endif
