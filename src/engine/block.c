// The one generic decoder block, driven by the lm_config descriptor, as three
// stages over a micro-batch (rows of the step's tensors):
//   pre_attn:  x (+ the previous layer's FFN output) -> norm -> q, k, v
//              (+ biases) -> q/k norm -> RoPE, k and v into the paged cache
//   attn:      causal attention over each sequence's pages
//   post_attn: o_proj, residual add fused into the FFN norm, then routed
//              experts (+ shared expert) or the dense MLP -> ffn_out
// The FFN output joins the residual stream in the next layer's first norm
// (or the final norm), so every residual add is fused into a norm. Every
// operation is an executor op on executor tensors: the same code drives the
// CPU, the reference and (later) device executors.
#include "engine/context.h"
#include "util/err.h"

#define TRY(x)                          \
    do {                                \
        lm_status _st = (x);            \
        if (_st) return _st;            \
    } while (0)

static lm_tensor rows(lm_tensor t, const lm_ubatch *ub) { return lm_rows(t, ub->t0, ub->n_tokens); }

lm_status lm_block_embed(lm_context *ctx, const lm_ubatch *ub) {
    return ctx->ex->ops->embed(ctx->ex, &ctx->model->embed, rows(ctx->t.ids, ub), rows(ctx->t.x, ub));
}

lm_status lm_block_pre_attn(lm_context *ctx, int l, const lm_ubatch *ub) {
    const lm_model *md = ctx->model;
    const lm_config *c = &md->cfg;
    const lm_layer_w *w = &md->layers[l];
    lm_exec *ex = ctx->ex;
    const lm_exec_ops *op = ex->ops;
    const lm_step_tensors *t = &ctx->t;
    lm_tensor x = rows(t->x, ub), xn = rows(t->xn, ub), q = rows(t->q, ub), k = rows(t->k, ub), v = rows(t->v, ub);
    if (l == 0) TRY(op->rmsnorm(ex, &w->attn_norm, x, c->hidden, c->rms_eps, xn));
    else TRY(op->add_rmsnorm(ex, x, rows(t->ffn_out, ub), &w->attn_norm, c->rms_eps, xn));
    if (op->matmul_qkv) {
        const lm_mat *W[3] = {&w->wq, &w->wk, &w->wv}, *B[3] = {&w->bq, &w->bk, &w->bv};
        TRY(op->matmul_qkv(ex, W, B, xn, rows(t->qkv, ub)));
    } else {
        TRY(op->matmul(ex, &w->wq, &w->bq, xn, q));
        TRY(op->matmul(ex, &w->wk, &w->bk, xn, k));
        TRY(op->matmul(ex, &w->wv, &w->bv, xn, v));
    }
    if (c->qk_norm == LM_QK_NORM_HEAD) {
        TRY(op->rmsnorm(ex, &w->q_norm, q, c->head_dim, c->rms_eps, q));
        TRY(op->rmsnorm(ex, &w->k_norm, k, c->head_dim, c->rms_eps, k));
    } else if (c->qk_norm == LM_QK_NORM_FULL) {
        TRY(op->rmsnorm(ex, &w->q_norm, q, q.cols, c->rms_eps, q));
        TRY(op->rmsnorm(ex, &w->k_norm, k, k.cols, c->rms_eps, k));
    }
    return op->rope_kv(ex, &ctx->rope, q, k, v, rows(t->pos, ub), rows(t->slot, ub), l);
}

lm_status lm_block_attn(lm_context *ctx, int l, const lm_ubatch *ub) {
    const lm_step_tensors *t = &ctx->t;
    lm_attn_view view = {
        .n_seqs = ub->n_seqs,
        .seq_start = lm_rows(t->seq_start, ub->s0, ub->n_seqs + 1),
        .kv_len = lm_rows(t->kv_len, ub->s0, ub->n_seqs),
        .pages = lm_rows(t->pages, ub->s0, ub->n_seqs),
        .pos = rows(t->pos, ub),
    };
    return ctx->ex->ops->attention(ctx->ex, &view, l, ctx->model->cfg.n_heads, rows(t->q, ub), rows(t->att, ub));
}

lm_status lm_block_post_attn(lm_context *ctx, int l, const lm_ubatch *ub) {
    const lm_model *md = ctx->model;
    const lm_config *c = &md->cfg;
    const lm_layer_w *w = &md->layers[l];
    lm_exec *ex = ctx->ex;
    const lm_exec_ops *op = ex->ops;
    const lm_step_tensors *t = &ctx->t;
    lm_tensor x = rows(t->x, ub), xn = rows(t->xn, ub), tmp = rows(t->tmp, ub), out = rows(t->ffn_out, ub);
    TRY(op->matmul(ex, &w->wo, NULL, rows(t->att, ub), tmp));
    TRY(op->add_rmsnorm(ex, x, tmp, &w->ffn_norm, c->rms_eps, xn));
    lm_tensor h = rows(t->h, ub);
    if (!c->layer_moe[l]) return op->ffn(ex, &w->dense, xn, h, out);
    // routed experts: router -> top-k -> expert-sorted plan -> grouped GEMMs -> combine
    lm_tensor router = rows(t->router, ub), sel = rows(t->sel, ub), selw = rows(t->selw, ub);
    lm_moe_plan plan = t->plan;
    plan.row_of = rows(plan.row_of, ub);
    TRY(op->matmul(ex, &w->router, NULL, xn, router));
    if (op->route_align) {
        TRY(op->route_align(ex, router, c->top_k, c->norm_topk, sel, selw, l, &plan));
    } else {
        TRY(op->route(ex, router, c->top_k, c->norm_topk, sel, selw));
        TRY(op->align(ex, sel, c->n_experts, l, &plan));
    }
    TRY(op->expert_up(ex, w->experts, &plan, xn, t->moe_h));
    TRY(op->expert_down(ex, w->experts, &plan, t->moe_h, t->moe_y));
    TRY(op->combine(ex, &plan, selw, t->moe_y, out));
    if (w->shared.gate.data) {  // Qwen2-MoE: a shared expert on every token, gated by sigmoid(x . g)
        TRY(op->ffn(ex, &w->shared, xn, h, tmp));
        TRY(op->gated_add(ex, &w->shared_gate, xn, tmp, out));
    }
    return LM_OK;
}

lm_status lm_block_logits(lm_context *ctx, int n_out) {
    const lm_model *md = ctx->model;
    lm_exec *ex = ctx->ex;
    const lm_exec_ops *op = ex->ops;
    const lm_step_tensors *t = &ctx->t;
    lm_tensor idx = lm_rows(t->out_rows, 0, n_out), xo = lm_rows(t->xo, 0, n_out), d = lm_rows(t->dout, 0, n_out);
    // Only the rows that asked: gather them and the last FFN output, add, norm, lm_head.
    TRY(op->gather(ex, t->x, idx, xo));
    TRY(op->gather(ex, t->ffn_out, idx, d));
    TRY(op->add_rmsnorm(ex, xo, d, &md->final_norm, md->cfg.rms_eps, d));
    return op->matmul(ex, &md->lm_head, NULL, d, lm_rows(t->logits, 0, n_out));
}
