#include "plan/cost.h"

#include <math.h>

// Weight elements touched per token outside the embedding and lm_head.
static double body_params(const lm_model_info *mi) {
    double vh = (double)mi->vocab * mi->hidden;
    return (double)mi->n_params_active - vh * (mi->tie_embeddings ? 1 : 2);
}

// Attention flops per token per cached position (QK^T and PV).
static double attn_flops(const lm_model_info *mi) { return 4.0 * mi->n_layers * mi->n_heads * (double)mi->head_dim; }

lm_cost lm_cost_decode_step(const lm_model_info *mi, int batch, double ctx_avg) {
    double wbytes = (double)mi->bytes_weights, elt = wbytes / (double)mi->n_params_total;
    double vh = (double)mi->vocab * mi->hidden;
    double expert_bytes = 3.0 * mi->moe_intermediate * (double)mi->hidden * elt;
    double all_experts = (double)mi->n_moe_layers * mi->n_experts * expert_bytes;
    double touched = mi->n_experts * (1.0 - pow(1.0 - (double)mi->top_k / mi->n_experts, batch));
    double embed_bytes = mi->tie_embeddings ? 0 : vh * elt;  // a tied matrix is read as lm_head anyway
    lm_cost c;
    c.bytes = wbytes - all_experts - embed_bytes + mi->n_moe_layers * touched * expert_bytes +
              (double)batch * ctx_avg * (double)mi->bytes_kv_per_token;
    c.flops = batch * (2.0 * body_params(mi) + 2.0 * vh + attn_flops(mi) * ctx_avg);
    return c;
}

lm_cost lm_cost_prefill(const lm_model_info *mi, int batch, int plen) {
    double vh = (double)mi->vocab * mi->hidden, tokens = (double)batch * plen;
    lm_cost c;
    c.bytes = (double)mi->bytes_weights + tokens * (double)mi->bytes_kv_per_token;
    c.flops = 2.0 * body_params(mi) * tokens + 2.0 * vh * batch + attn_flops(mi) * batch * plen * (plen + 1) / 2.0;
    return c;
}
