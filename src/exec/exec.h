// Executor interface: the operations the generic decoder block
// (src/engine/forward.c) is made of. The CPU executor implements them now; a
// CUDA executor and the CPU-GPU pipeline implement the same table later, so
// the model code and the CLI do not change. Buffers passed in are memory the
// executor owns (host memory for the CPU executor).
#ifndef LM_EXEC_EXEC_H
#define LM_EXEC_EXEC_H

#include "model/model.h"

typedef struct lm_exec lm_exec;

typedef struct lm_attn_args {
    int n;                  // tokens in the batch
    const int *seq, *pos;   // [n]: sequence and position of each token
    const float *q;         // [n][n_heads*hd], RoPE applied
    const float *kcache;    // this layer's keys:   [n_seq][n_ctx][n_kv*hd]
    const float *vcache;    // this layer's values: same layout
    size_t seq_stride;      // elements between sequences in the caches
    int n_heads, n_kv_heads, head_dim;
    float *out;             // [n][n_heads*hd]
} lm_attn_args;

typedef struct lm_moe_args {
    const lm_config *cfg;
    const lm_layer_w *w;
    const float *x;         // [n][hidden], normalised input
    int n;
    float *out;             // [n][hidden]
    uint64_t *expert_counts; // [n_experts] routing counts to add to, or NULL
} lm_moe_args;

typedef struct lm_exec_ops {
    const char *name;
    // y[t][o] = x[t] · W[o] (+ bias[o])   x: [n][W.cols], y: [n][W.rows]
    void (*matmul)(lm_exec *ex, const lm_mat *W, const lm_mat *bias, const float *x, int n, float *y);
    // RMSNorm of each `dim`-sized group of n_rows * dim values, times w [dim]
    void (*rmsnorm)(lm_exec *ex, const lm_mat *w, const float *x, int n_groups, int dim, float eps, float *y);
    void (*attention)(lm_exec *ex, const lm_attn_args *a);
    // Routed experts (+ shared expert) of a MoE layer, or the dense MLP when
    // the layer has none.
    void (*ffn)(lm_exec *ex, const lm_moe_args *a);
    void (*free)(lm_exec *ex);
} lm_exec_ops;

struct lm_exec {
    const lm_exec_ops *ops;
};

// CPU executor sized for batches of up to max_tokens tokens and contexts of
// up to max_ctx positions; all scratch is allocated here, none per call.
lm_status lm_exec_cpu_init(const lm_config *cfg, lm_pool *pool, int max_tokens, int max_ctx, lm_exec **out);

#endif
