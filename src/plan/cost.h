// The cost model: bytes a step must move and flops it must do, from a model's
// shapes. `bench` puts measured figures next to these rooflines; the planner
// (HRM policy search) builds on the same arithmetic.
#ifndef LM_PLAN_COST_H
#define LM_PLAN_COST_H

#include "lightmoe.h"

typedef struct lm_cost {
    double bytes;  // bytes read from memory
    double flops;
} lm_cost;

// KV cache bytes per token (all layers) at the cache's precision; the
// model's bytes_kv_per_token is fp32's.
double lm_cost_kv_bytes_per_token(const lm_model_info *mi, lm_kv_type kv);

// One decode step of `batch` sequences whose caches hold ctx_avg tokens on
// average (the positions attended, the new token's included): every
// non-expert weight once, each expert some token routes to once, only the
// looked-up rows of the embedding, every sequence's KV cache at precision kv.
// Experts: a batch of B tokens with top-k of E touches E(1 - (1 - k/E)^B)
// distinct experts per layer in expectation under uniform routing — k at
// B = 1, all E at large B. Real routers are skewed, which touches fewer, so
// the bytes are an upper estimate (the bound a little low) at mid batches.
// Flops: 2 per weight per token (the embedding is a lookup) plus QK and PV
// over the cache.
lm_cost lm_cost_decode_step(const lm_model_info *mi, lm_kv_type kv, int batch, double ctx_avg);

// Prefill of `batch` prompts of `plen` tokens (logits for the last token of
// each): flops of every token through the active weights and causal attention.
lm_cost lm_cost_prefill(const lm_model_info *mi, lm_kv_type kv, int batch, int plen);

#endif
