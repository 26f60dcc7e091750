#include "plan/cost.h"

#include <math.h>

// Weight elements touched per token outside the embedding and lm_head.
static double body_params(const lm_model_info *mi) {
    double vh = (double)mi->vocab * mi->hidden;
    return (double)mi->n_params_active - vh * (mi->tie_embeddings ? 1 : 2);
}

// Attention flops per token per cached position (QK^T and PV).
static double attn_flops(const lm_model_info *mi) { return 4.0 * mi->n_layers * mi->n_heads * (double)mi->head_dim; }

double lm_cost_kv_bytes_per_token(const lm_model_info *mi, lm_kv_type kv) {
    return (double)mi->bytes_kv_per_token * (kv == LM_KV_F32 ? 1.0 : 0.5);
}

lm_cost lm_cost_decode_step(const lm_model_info *mi, lm_kv_type kv, int batch, double ctx_avg) {
    double wbytes = (double)mi->bytes_weights, elt = wbytes / (double)mi->n_params_total;
    double vh = (double)mi->vocab * mi->hidden;
    double expert_bytes = 3.0 * mi->moe_intermediate * (double)mi->hidden * elt;
    double all_experts = (double)mi->n_moe_layers * mi->n_experts * expert_bytes;
    double touched =
        mi->n_experts > 0 ? mi->n_experts * (1.0 - pow(1.0 - (double)mi->top_k / mi->n_experts, batch)) : 0;
    // A tied matrix is read whole as lm_head anyway; an untied one only in the batch's rows.
    double embed_bytes = mi->tie_embeddings ? 0 : vh * elt;
    double embed_rows = mi->tie_embeddings ? 0 : (double)batch * mi->hidden * elt;
    lm_cost c;
    c.bytes = wbytes - all_experts - embed_bytes + embed_rows + mi->n_moe_layers * touched * expert_bytes +
              (double)batch * ctx_avg * lm_cost_kv_bytes_per_token(mi, kv);
    c.flops = batch * (2.0 * body_params(mi) + 2.0 * vh + attn_flops(mi) * ctx_avg);
    return c;
}

lm_cost lm_cost_prefill(const lm_model_info *mi, lm_kv_type kv, int batch, int plen) {
    double vh = (double)mi->vocab * mi->hidden, tokens = (double)batch * plen;
    lm_cost c;
    c.bytes = (double)mi->bytes_weights + tokens * lm_cost_kv_bytes_per_token(mi, kv);
    c.flops = 2.0 * body_params(mi) * tokens + 2.0 * vh * batch + attn_flops(mi) * batch * plen * (plen + 1) / 2.0;
    return c;
}
