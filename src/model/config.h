// config.json → architecture descriptor. One descriptor drives the one
// generic decoder block (src/engine/forward.c); there is no per-model forward.
#ifndef LM_MODEL_CONFIG_H
#define LM_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lightmoe.h"

typedef enum lm_arch {
    LM_ARCH_MIXTRAL = 0,
    LM_ARCH_QWEN2_MOE,
    LM_ARCH_QWEN3_MOE,
    LM_ARCH_OLMOE,
} lm_arch;

typedef enum lm_qk_norm {
    LM_QK_NORM_NONE = 0,
    LM_QK_NORM_HEAD,  // RMSNorm over each head_dim slice (Qwen3)
    LM_QK_NORM_FULL,  // RMSNorm over the whole q / k projection (OLMoE)
} lm_qk_norm;

#define LM_MAX_EOS 8

typedef struct lm_config {
    lm_arch arch;
    const char *arch_name;  // static string, e.g. "MixtralForCausalLM"
    int vocab, hidden, n_layers;
    int n_heads, n_kv_heads, head_dim;
    int dense_inter;   // intermediate_size of dense MLP layers
    int moe_inter;     // intermediate size of one routed expert
    int shared_inter;  // shared expert intermediate size, 0 = none
    int n_experts, top_k;
    bool norm_topk;    // renormalise the top-k routing weights to sum to 1
    bool qkv_bias;
    lm_qk_norm qk_norm;
    bool tie_embeddings;
    float rms_eps;
    double rope_theta;
    int max_pos;
    uint8_t *layer_moe;  // [n_layers]: 1 = routed experts, 0 = dense MLP
    int n_moe_layers;
    int bos;             // -1 = none
    int n_eos;
    int eos[LM_MAX_EOS];
} lm_config;

// Parses config.json text; `fname` is used in messages. Accepts transformers
// 4.x and 5.x spellings. On failure *out is left empty (safe to free).
lm_status lm_config_parse(const char *json, size_t len, const char *fname, lm_config *out);
lm_status lm_config_load(const char *path, lm_config *out);
void lm_config_free(lm_config *cfg);

// Adds the end-of-sequence ids of a generation_config.json (transformers'
// generate stops at them; instruct models keep extra ones there).
lm_status lm_config_load_generation(const char *path, lm_config *cfg);

// Keep only the first n layers (synthetic benchmarks of a few layers).
void lm_config_truncate(lm_config *cfg, int n_layers);

// Comma-separated list of the supported architectures, for messages.
const char *lm_config_supported(void);

#endif
