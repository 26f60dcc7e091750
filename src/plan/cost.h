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

// One decode step of `batch` sequences whose caches hold ctx_avg tokens on
// average: every non-expert weight once, each expert some token routes to
// once (uniform routing: E(1 - (1 - k/E)^B) experts per layer), only the
// looked-up rows of the embedding, every sequence's KV cache. Flops: 2 per
// weight per token (the embedding is a lookup) plus QK and PV over the cache.
lm_cost lm_cost_decode_step(const lm_model_info *mi, int batch, double ctx_avg);

// Prefill of `batch` prompts of `plen` tokens (logits for the last token of
// each): flops of every token through the active weights and causal attention.
lm_cost lm_cost_prefill(const lm_model_info *mi, int batch, int plen);

#endif
