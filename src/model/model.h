// The loaded model: descriptor + weights addressed [layer][expert][matrix], so
// executors and (later) the pager can move one expert, a slice, or a layer.
#ifndef LM_MODEL_MODEL_H
#define LM_MODEL_MODEL_H

#include "lightmoe.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "runtime/runtime.h"

// A weight matrix [rows][cols], row-major with a row stride in elements.
// Vectors are rows == 1. data == NULL means "absent" (optional weights).
typedef struct lm_mat {
    const void *data;
    const char *name;  // Hugging Face tensor name (owned by the model), for messages
    lm_dtype dt;
    int rows, cols;
    size_t stride;
} lm_mat;

typedef struct lm_ffn_w {
    lm_mat gate, up, down;  // [inter][hidden], [inter][hidden], [hidden][inter]
} lm_ffn_w;

typedef struct lm_layer_w {
    lm_mat attn_norm, ffn_norm;  // [hidden]
    lm_mat wq, wk, wv, wo;       // [nq*hd][hidden], [nkv*hd][hidden] x2, [hidden][nq*hd]
    lm_mat bq, bk, bv;           // optional biases
    lm_mat q_norm, k_norm;       // optional: [hd] per head, or [nq*hd] / [nkv*hd] full
    lm_mat router;               // [n_experts][hidden]            (MoE layers)
    lm_ffn_w *experts;           // [n_experts]                    (MoE layers)
    lm_ffn_w dense;              // dense MLP                      (dense layers)
    lm_ffn_w shared;             // optional shared expert          (Qwen2-MoE)
    lm_mat shared_gate;          // [1][hidden]
} lm_layer_w;

struct lm_model {
    lm_config cfg;
    lm_st_set *st;       // mmap'ed checkpoint (NULL for synthetic models)
    void *owned;         // synthetic weights
    lm_mat embed;        // [vocab][hidden]
    lm_mat final_norm;   // [hidden]
    lm_mat lm_head;      // [vocab][hidden] (the embedding when tied)
    lm_layer_w *layers;  // [n_layers]
    lm_ffn_w *expert_mem;
    lm_runtime *rt;      // the runtime the model runs on
    lm_runtime *own_rt;  // the model's own runtime (when none was given)
    lm_pool *pool;       // rt's thread pool
    uint64_t n_params, n_params_active;
    uint64_t bytes_dt[3];  // by lm_dtype (F32, F16, BF16)
    bool shapes_only;      // synthetic model without weights: describable, not runnable
    char **names;          // [n_names] tensor names the lm_mats point at
    int n_names, cap_names;
    int n_unused;          // checkpoint tensors no weight was bound to
    char *unused_example;  // the first of them, for the warning
};

// Scans every weight for NaN/Inf; returns false and names the first tensor
// and element found in *msg (cap bytes), true if every weight is finite.
bool lm_model_weights_finite(const lm_model *md, char *msg, size_t cap);

// Bytes of one matrix as stored.
size_t lm_mat_bytes(const lm_mat *m);

#endif
