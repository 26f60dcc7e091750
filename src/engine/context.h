// The context: host metadata of the sequences (lengths, block tables, free
// KV pages) and the executor tensors one step runs on. Internal to the
// engine; the public handle is lm_context.
#ifndef LM_ENGINE_CONTEXT_H
#define LM_ENGINE_CONTEXT_H

#include "exec/exec.h"

// A micro-batch: tokens [t0, t0 + n_tokens) of the step, which belong to
// its sequences [s0, s0 + n_seqs) (tokens are grouped by sequence). The
// sequential driver runs one covering the whole step; the pipeline runs
// several, interleaving their stages across the CPU and the GPU.
typedef struct lm_ubatch {
    int t0, n_tokens;
    int s0, n_seqs;
} lm_ubatch;

// Executor tensors of one step, sized for the context's limits.
typedef struct lm_step_tensors {
    // step metadata, uploaded by lm_decode ([n][1] columns, see lm_attn_view)
    lm_tensor ids, pos, slot;   // I32 [n_batch][1]
    lm_tensor seq_start;        // I32 [n_seq + 1][1]
    lm_tensor kv_len;           // I32 [n_seq][1]
    lm_tensor pages;            // I32 [n_seq][max_pages]
    lm_tensor out_rows;         // I32 [n_out][1]
    lm_tensor sample;           // I32 [n_out][LM_SAMPLE_ROW_WORDS] sampling parameters (lm_sample_row)
    lm_tensor res;              // I32 [n_out][2] sampled id, non-finite flag (the sample op's output)
    // activations
    lm_tensor x;                // [n_batch][hidden] residual stream
    lm_tensor xn;               // [n_batch][hidden] normalised
    lm_tensor qkv;              // [n_batch][nq*hd + 2*nkv*hd]: q, k and v side by side
    lm_tensor q, k, v, att;     // column views of qkv [n_batch][nq*hd], [n_batch][nkv*hd] x2; [n_batch][nq*hd]
    lm_tensor tmp;              // [n_batch][hidden] attention output projection, shared expert
    lm_tensor ffn_out;          // [n_batch][hidden] the FFN's output, added to x by the next norm
    lm_tensor h;                // [n_batch][max_inter] dense / shared expert intermediate
    lm_tensor xo, dout;         // [n_out][hidden] gathered rows for the logits
    lm_tensor logits;           // [n_out][vocab]
    // MoE
    lm_tensor router;           // [n_batch][E]
    lm_tensor sel, selw;        // I32 [n_batch][k], [n_batch][k]
    lm_tensor moe_h;            // [rows_max][moe_inter]
    lm_tensor moe_y;            // [rows_max][hidden]
    lm_moe_plan plan;
} lm_step_tensors;

struct lm_context {
    lm_model *model;
    lm_context_params p;  // defaults resolved
    lm_exec *ex;
    lm_kv_layout kv;
    lm_rope rope;
    float *inv_freq;      // [head_dim / 2]
    int max_pages;        // block-table row length: pages of an n_ctx-long sequence

    // sequences and pages (host)
    int *seq_len;         // [n_seq] tokens in the cache, committed
    int *seq_pages;       // [n_seq] pages held
    int32_t *table;       // [n_seq][max_pages] page ids
    int32_t *free_pages;  // stack of free page ids
    int n_free;

    // step building (host), sized n_batch / n_seq / n_out: the executor's
    // staging memory (pinned on a GPU), untouched while a step runs
    int32_t *h_ids, *h_pos, *h_slot, *h_seq_start, *h_kv_len, *h_pages, *h_out;
    lm_sample_row *h_sample;  // [n_out]
    int32_t *h_res;           // [n_out][2] the sample op's results
    int *order;           // [n_batch] batch index of the g-th grouped token
    int *step_seq;        // [n_seq] sequence id of the step's s-th sequence
    int *seq_slot;        // [n_seq] index of a sequence in the step, -1 if absent
    int *seq_cnt;         // [n_seq] its tokens in the step
    int *seq_p0;          // [n_seq] its first position in the step

    lm_step_tensors t;
    int n_logits;
    const float *logits;  // [n_logits][vocab] on the host; NULL until lm_get_logits fetches them
    bool logits_remote;   // they are still in executor memory (sampled there)
    int32_t *sampled;     // [n_out] ids drawn by the batch's samplers (-1: none)
    float *logits_buf;    // download target when the executor's memory is not host memory
    uint64_t *counts;     // [n_layers][n_experts] host copy of the routing statistics
};

// The generic decoder block, stage by stage (src/engine/block.c).
lm_status lm_block_pre_attn(lm_context *ctx, int layer, const lm_ubatch *ub);
lm_status lm_block_attn(lm_context *ctx, int layer, const lm_ubatch *ub);
lm_status lm_block_post_attn(lm_context *ctx, int layer, const lm_ubatch *ub);
// Embedding of the step's tokens, and the logits of its n_out output rows.
lm_status lm_block_embed(lm_context *ctx, const lm_ubatch *ub);
lm_status lm_block_logits(lm_context *ctx, int n_out);

#endif
