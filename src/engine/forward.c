// The context (sequences, block tables, the KV page allocator) and lm_decode:
// the sequential driver that groups a batch by sequence, takes the KV pages
// it needs, uploads the step's metadata and runs the block's stages over the
// whole step on the context's executor.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/context.h"
#include "kernels/cpu/kernels.h"
#include "util/err.h"
#include "util/file.h"

lm_context_params lm_context_default_params(void) {
    return (lm_context_params){
        .n_seq = 1, .n_ctx = 2048, .n_batch = 512, .n_out = 0, .n_pages = 0, .kv_type = LM_KV_BF16, .executor = NULL};
}

void lm_context_free(lm_context *ctx) {
    if (!ctx) return;
    if (ctx->ex) ctx->ex->ops->free(ctx->ex);
    void *bufs[] = {ctx->inv_freq, ctx->seq_len, ctx->seq_pages, ctx->table, ctx->free_pages, ctx->h_ids,
                    ctx->h_pos, ctx->h_slot, ctx->h_seq_start, ctx->h_kv_len, ctx->h_pages, ctx->h_out,
                    ctx->order, ctx->step_seq, ctx->seq_slot, ctx->seq_cnt, ctx->seq_p0,
                    ctx->logits_buf, ctx->counts, ctx->sampled};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(ctx);
}

// Inverse RoPE frequencies in fp32 exactly as transformers computes them.
static lm_status rope_init(lm_context *ctx) {
    const lm_config *c = &ctx->model->cfg;
    ctx->inv_freq = lm_malloc((size_t)(c->head_dim / 2) * sizeof(float));
    if (!ctx->inv_freq) return LM_ERR_OOM;
    lm_rope_inv_freq(c->rope_theta, c->head_dim, ctx->inv_freq);
    ctx->rope = (lm_rope){c->head_dim, ctx->inv_freq};
    return LM_OK;
}

// Every tensor of a step, sized for the context's limits.
static lm_status alloc_tensors(lm_context *ctx) {
    const lm_config *c = &ctx->model->cfg;
    lm_exec *ex = ctx->ex;
    lm_step_tensors *t = &ctx->t;
    int nb = ctx->p.n_batch, ns = ctx->p.n_seq, no = ctx->p.n_out, H = c->hidden;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, E = c->n_experts, k = c->top_k;
    int dense = c->n_moe_layers < c->n_layers ? c->dense_inter : 0;
    int inter = dense > c->shared_inter ? dense : c->shared_inter;
    int block = ex->ops->moe_block, rmax = lm_moe_rows_max(nb, k, E, block);
    struct {
        lm_tensor *t;
        lm_dtype dt;
        int rows, cols;
    } spec[] = {
        {&t->ids, LM_DT_I32, nb, 1},           {&t->pos, LM_DT_I32, nb, 1},
        {&t->slot, LM_DT_I32, nb, 1},          {&t->seq_start, LM_DT_I32, ns + 1, 1},
        {&t->kv_len, LM_DT_I32, ns, 1},        {&t->pages, LM_DT_I32, ns, ctx->max_pages},
        {&t->out_rows, LM_DT_I32, no, 1},      {&t->x, LM_DT_F32, nb, H},
        {&t->xn, LM_DT_F32, nb, H},            {&t->q, LM_DT_F32, nb, qd},
        {&t->k, LM_DT_F32, nb, kvd},           {&t->v, LM_DT_F32, nb, kvd},
        {&t->att, LM_DT_F32, nb, qd},          {&t->tmp, LM_DT_F32, nb, H},
        {&t->ffn_out, LM_DT_F32, nb, H},       {&t->h, LM_DT_F32, nb, inter > 0 ? inter : 1},
        {&t->xo, LM_DT_F32, no, H},            {&t->dout, LM_DT_F32, no, H},
        {&t->logits, LM_DT_F32, no, c->vocab}, {&t->router, LM_DT_F32, nb, E},
        {&t->sel, LM_DT_I32, nb, k},           {&t->selw, LM_DT_F32, nb, k},
        {&t->moe_h, ex->ops->moe_h_dt, rmax, c->moe_inter},
        {&t->moe_y, LM_DT_F32, rmax, H},       {&t->plan.row_of, LM_DT_I32, nb, k},
        {&t->plan.token_of, LM_DT_I32, rmax, 1},
        {&t->plan.tiles, LM_DT_I32, rmax / block + E, 2},
        {&t->plan.n_tiles, LM_DT_I32, 1, 1},   {&t->plan.counts, LM_DT_I32, E, 1},
    };
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        lm_status st = ex->ops->alloc(ex, spec[i].dt, spec[i].rows, spec[i].cols, spec[i].t);
        if (st) return st;
    }
    t->plan.block = block;
    return LM_OK;
}

// Bytes a context of these limits asks for, for the check before allocating:
// the KV cache, the logits buffer, and everything else.
typedef struct {
    double kv, logits, other;
} ctx_bytes;

static ctx_bytes context_bytes(const lm_config *c, const lm_context_params *p, int max_pages, const lm_kv_layout *kv,
                               int block) {
    double nb = p->n_batch, H = c->hidden, qd = (double)c->n_heads * c->head_dim;
    double kvd = (double)c->n_kv_heads * c->head_dim, k = c->top_k, E = c->n_experts;
    double dense = c->n_moe_layers < c->n_layers ? c->dense_inter : 0;
    double inter = dense > c->shared_inter ? dense : c->shared_inter;
    double rmax = nb * k + E * (block - 1);
    double act = 4.0 * nb * (6 * H + 2 * qd + 2 * kvd + inter + E + 2 * k) + 4.0 * p->n_out * 2 * H +
                 4.0 * rmax * (c->moe_inter + H + 1);
    double meta = 4.0 * ((double)p->n_seq * (max_pages + 8) + 12.0 * nb) + 8.0 * c->n_layers * E;
    double rope = 4.0 * p->n_ctx * (double)c->head_dim;  // cos and sin tables of the CPU executor
    double moe_scratch = 4.0 * rmax * (H + inter + c->moe_inter);  // its gathered expert inputs and up projections
    return (ctx_bytes){(double)c->n_layers * p->n_pages * (double)lm_kv_page_bytes(kv), 4.0 * p->n_out * c->vocab,
                       act + meta + rope + moe_scratch};
}

lm_status lm_context_init(lm_model *model, const lm_context_params *params, lm_context **out) {
    *out = NULL;
    lm_context_params p = params ? *params : lm_context_default_params();
    const lm_config *c = &model->cfg;
    if (p.n_seq < 1 || p.n_seq > 65536)
        return lm_err(LM_ERR_INVALID_ARG, "number of sequences %d is out of range [1, 65536]", p.n_seq);
    if (p.n_ctx < 1 || p.n_ctx > c->max_pos)
        return lm_err(LM_ERR_INVALID_ARG, "context length %d is out of range [1, %d] (max_position_embeddings)",
                      p.n_ctx, c->max_pos);
    if (p.n_batch < 1 || p.n_batch > 1 << 16)
        return lm_err(LM_ERR_INVALID_ARG, "batch size %d is out of range [1, 65536]", p.n_batch);
    if (p.n_out < 0 || p.n_out > p.n_batch)
        return lm_err(LM_ERR_INVALID_ARG, "output rows %d are out of range [0, %d] (the batch size)", p.n_out,
                      p.n_batch);
    if (!p.n_out) p.n_out = p.n_batch;
    if (p.kv_type != LM_KV_BF16 && p.kv_type != LM_KV_F32) return lm_err(LM_ERR_INVALID_ARG, "unknown KV cache type");
    int max_pages = lm_kv_pages_for(p.n_ctx);
    double full = (double)p.n_seq * max_pages;
    if (p.n_pages < 0) return lm_err(LM_ERR_INVALID_ARG, "KV pages %d must be >= 0", p.n_pages);
    if (!p.n_pages) {
        if (full > 1 << 30) return lm_err(LM_ERR_OOM, "a KV cache for %d sequences x %d tokens is too large", p.n_seq,
                                          p.n_ctx);
        p.n_pages = (int)full;
    }
    lm_kv_layout kv = {c->n_layers, p.n_pages, LM_KV_PAGE, c->n_kv_heads, c->head_dim,
                       p.kv_type == LM_KV_F32 ? LM_DT_F32 : LM_DT_BF16};
    lm_context *ctx = lm_calloc(1, sizeof *ctx);
    if (!ctx) return LM_ERR_OOM;
    lm_status st = lm_exec_init(p.executor ? p.executor : "cpu", c, model->pool, &ctx->ex);
    if (st) {
        free(ctx);
        return st;
    }
    // Everything below is checked against the memory there is before it is
    // allocated (an over-committed allocation is killed later, not refused).
    ctx_bytes cb = context_bytes(c, &p, max_pages, &kv, ctx->ex->ops->moe_block);
    double need = cb.kv + cb.logits + cb.other;
    char what[300], b1[32], b2[32], b3[32];
    snprintf(what, sizeof what, "a context of %d sequences x %d tokens (KV cache %s, logits of %d rows %s, "
             "activations and scratch %s)", p.n_seq, p.n_ctx, lm_format_bytes(cb.kv, b1, sizeof b1), p.n_out,
             lm_format_bytes(cb.logits, b2, sizeof b2), lm_format_bytes(cb.other, b3, sizeof b3));
    st = need > 1e18 ? lm_err(LM_ERR_OOM, "%s is too large", what) : lm_mem_check((uint64_t)need, 0.05, what);
    if (st) lm_err_append(st, " (use fewer sequences at once or a shorter context)");
    else if (model->shapes_only)
        st = lm_err(LM_ERR_INVALID_ARG, "the model was loaded for its shapes only (no weights) and cannot run");
    if (st) {
        lm_context_free(ctx);
        return st;
    }
    ctx->model = model;
    ctx->p = p;
    ctx->kv = kv;
    ctx->max_pages = max_pages;
    size_t ns = (size_t)p.n_seq, nb = (size_t)p.n_batch, mp = (size_t)max_pages;
    ctx->seq_len = lm_calloc(ns, sizeof(int));
    ctx->seq_pages = lm_calloc(ns, sizeof(int));
    ctx->table = lm_calloc(ns * mp, sizeof(int32_t));
    ctx->free_pages = lm_malloc((size_t)p.n_pages * sizeof(int32_t));
    ctx->h_ids = lm_malloc(nb * sizeof(int32_t));
    ctx->h_pos = lm_malloc(nb * sizeof(int32_t));
    ctx->h_slot = lm_malloc(nb * sizeof(int32_t));
    ctx->h_seq_start = lm_malloc((ns + 1) * sizeof(int32_t));
    ctx->h_kv_len = lm_malloc(ns * sizeof(int32_t));
    ctx->h_pages = lm_calloc(ns * mp, sizeof(int32_t));
    ctx->h_out = lm_malloc((size_t)p.n_out * sizeof(int32_t));
    ctx->sampled = lm_malloc((size_t)p.n_out * sizeof(int32_t));
    ctx->order = lm_malloc(nb * sizeof(int));
    ctx->step_seq = lm_malloc(ns * sizeof(int));
    ctx->seq_slot = lm_malloc(ns * sizeof(int));
    ctx->seq_cnt = lm_calloc(ns, sizeof(int));
    ctx->seq_p0 = lm_malloc(ns * sizeof(int));
    ctx->counts = lm_calloc((size_t)model->cfg.n_layers * (size_t)model->cfg.n_experts, sizeof(uint64_t));
    if (!ctx->seq_len || !ctx->seq_pages || !ctx->table || !ctx->free_pages || !ctx->h_ids || !ctx->h_pos ||
        !ctx->h_slot || !ctx->h_seq_start || !ctx->h_kv_len || !ctx->h_pages || !ctx->h_out || !ctx->sampled || !ctx->order ||
        !ctx->step_seq || !ctx->seq_slot || !ctx->seq_cnt || !ctx->seq_p0 || !ctx->counts) {
        lm_context_free(ctx);
        return lm_err(LM_ERR_OOM, "cannot allocate %s", what);
    }
    for (int i = 0; i < p.n_seq; i++) ctx->seq_slot[i] = -1;
    // pages handed out lowest first
    for (int i = 0; i < p.n_pages; i++) ctx->free_pages[i] = p.n_pages - 1 - i;
    ctx->n_free = p.n_pages;
    if ((st = rope_init(ctx)) || (st = ctx->ex->ops->bind_weights(ctx->ex, model)) ||
        (st = ctx->ex->ops->kv_alloc(ctx->ex, &kv)) || (st = alloc_tensors(ctx)) ||
        (st = ctx->ex->ops->reserve(ctx->ex, p.n_batch, p.n_ctx))) {
        lm_context_free(ctx);
        return st;
    }
    if (!ctx->ex->ops->host_ptr(ctx->ex, ctx->t.logits) &&
        !(ctx->logits_buf = lm_malloc((size_t)p.n_out * (size_t)c->vocab * sizeof(float)))) {
        lm_context_free(ctx);
        return LM_ERR_OOM;
    }
    *out = ctx;
    return LM_OK;
}

const uint64_t *lm_expert_counts(lm_context *ctx) {
    ctx->ex->ops->expert_stats(ctx->ex, ctx->counts, false);
    return ctx->counts;
}

void lm_expert_counts_reset(lm_context *ctx) { ctx->ex->ops->expert_stats(ctx->ex, NULL, true); }

int lm_seq_len(const lm_context *ctx, int seq) {
    return seq >= 0 && seq < ctx->p.n_seq ? ctx->seq_len[seq] : -1;
}

lm_model *lm_context_model(const lm_context *ctx) { return ctx->model; }
lm_context_params lm_context_get_params(const lm_context *ctx) { return ctx->p; }
int lm_kv_pages_free(const lm_context *ctx) { return ctx->n_free; }

// Returns the pages of `seq` beyond those `len` tokens need.
static void seq_shrink(lm_context *ctx, int seq, int len) {
    int keep = lm_kv_pages_for(len);
    int32_t *row = ctx->table + (size_t)seq * ctx->max_pages;
    while (ctx->seq_pages[seq] > keep) ctx->free_pages[ctx->n_free++] = row[--ctx->seq_pages[seq]];
    if (ctx->seq_len[seq] > len) ctx->seq_len[seq] = len;
}

void lm_seq_clear(lm_context *ctx, int seq) {
    if (seq >= 0 && seq < ctx->p.n_seq) seq_shrink(ctx, seq, 0);
}

const float *lm_get_logits(lm_context *ctx, int j) {
    if (j < 0 || j >= ctx->n_logits || !ctx->logits) return NULL;
    return ctx->logits + (size_t)j * (size_t)ctx->model->cfg.vocab;
}

int32_t lm_get_token(const lm_context *ctx, int j) {
    return j >= 0 && j < ctx->n_logits ? ctx->sampled[j] : -1;
}

// Checks the batch and groups it by sequence: the step's sequences in order of
// first appearance, each one's tokens in batch order; fills seq_slot,
// seq_cnt, seq_p0, step_seq and order. Returns the number of sequences.
static lm_status group_batch(lm_context *ctx, const lm_batch *b, int *n_seqs) {
    const lm_config *c = &ctx->model->cfg;
    int ns = 0;
    lm_status st = LM_OK;
    for (int i = 0; i < b->n_tokens && !st; i++) {
        int s = b->seq[i];
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab) {
            st = lm_err(LM_ERR_RANGE, "token id %d (batch index %d) is out of range: vocabulary size is %d",
                        b->tokens[i], i, c->vocab);
            break;
        }
        if (s < 0 || s >= ctx->p.n_seq) {
            st = lm_err(LM_ERR_RANGE, "sequence id %d is out of range [0, %d)", s, ctx->p.n_seq);
            break;
        }
        if (ctx->seq_slot[s] < 0) {
            ctx->seq_slot[s] = ns;
            ctx->step_seq[ns++] = s;
            ctx->seq_cnt[s] = 0;
            ctx->seq_p0[s] = b->pos ? b->pos[i] : ctx->seq_len[s];
        }
        int p = ctx->seq_p0[s] + ctx->seq_cnt[s]++;
        if (b->pos && b->pos[i] != p)
            st = lm_err(LM_ERR_INVALID_ARG, "batch index %d: sequence %d's positions must be consecutive (got %d, "
                        "expected %d)", i, s, b->pos[i], p);
        else if (ctx->seq_p0[s] < 0 || ctx->seq_p0[s] > ctx->seq_len[s])
            st = lm_err(LM_ERR_RANGE, "batch index %d: position %d of sequence %d is beyond its length %d", i,
                        ctx->seq_p0[s], s, ctx->seq_len[s]);
        else if (p >= ctx->p.n_ctx)
            st = lm_err(LM_ERR_RANGE, "sequence %d would exceed the context length of %d tokens", s, ctx->p.n_ctx);
    }
    *n_seqs = ns;
    return st;
}

static void ungroup(lm_context *ctx, int ns) {
    for (int i = 0; i < ns; i++) ctx->seq_slot[ctx->step_seq[i]] = -1;
}

// Takes the pages the step's sequences need, all or none.
static lm_status take_pages(lm_context *ctx, int ns) {
    int need = 0;
    for (int i = 0; i < ns; i++) {
        int s = ctx->step_seq[i];
        int want = lm_kv_pages_for(ctx->seq_p0[s] + ctx->seq_cnt[s]) - ctx->seq_pages[s];
        if (want > 0) need += want;
    }
    if (need > ctx->n_free)
        return lm_err(LM_ERR_OOM, "KV cache full: the batch needs %d more pages of %d tokens, %d of %d are free", need,
                      LM_KV_PAGE, ctx->n_free, ctx->p.n_pages);
    for (int i = 0; i < ns; i++) {
        int s = ctx->step_seq[i];
        int32_t *row = ctx->table + (size_t)s * ctx->max_pages;
        while (ctx->seq_pages[s] < lm_kv_pages_for(ctx->seq_p0[s] + ctx->seq_cnt[s])) {
            row[ctx->seq_pages[s]++] = ctx->free_pages[--ctx->n_free];
        }
    }
    return LM_OK;
}

lm_status lm_decode(lm_context *ctx, const lm_batch *b) {
    if (!b || b->n_tokens < 1 || !b->tokens || !b->seq) return lm_err(LM_ERR_INVALID_ARG, "empty batch");
    if (b->n_tokens > ctx->p.n_batch)
        return lm_err(LM_ERR_INVALID_ARG, "batch of %d tokens exceeds the context's batch size %d", b->n_tokens,
                      ctx->p.n_batch);
    int n_out = 0;
    for (int i = 0; i < b->n_tokens; i++) n_out += !b->want_logits || b->want_logits[i];
    if (n_out > ctx->p.n_out)
        return lm_err(LM_ERR_INVALID_ARG, "%d tokens ask for logits but the context has room for %d", n_out,
                      ctx->p.n_out);
    int ns;
    lm_status st = group_batch(ctx, b, &ns);
    if (!st) st = take_pages(ctx, ns);
    if (st) {
        ungroup(ctx, ns);
        return st;
    }
    const lm_config *c = &ctx->model->cfg;
    int n = b->n_tokens, mp = ctx->max_pages;
    // Host metadata, grouped: the step's s-th sequence owns tokens [seq_start[s], seq_start[s+1]).
    ctx->h_seq_start[0] = 0;
    for (int i = 0; i < ns; i++) {
        int s = ctx->step_seq[i];
        ctx->h_seq_start[i + 1] = ctx->h_seq_start[i] + ctx->seq_cnt[s];
        ctx->h_kv_len[i] = ctx->seq_p0[s] + ctx->seq_cnt[s];
        memcpy(ctx->h_pages + (size_t)i * mp, ctx->table + (size_t)s * mp, (size_t)mp * sizeof(int32_t));
        ctx->seq_cnt[s] = 0;  // reused below as a fill counter
    }
    for (int i = 0, j = 0; i < n; i++) {
        int s = b->seq[i], si = ctx->seq_slot[s], g = ctx->h_seq_start[si] + ctx->seq_cnt[s]++;
        int p = ctx->seq_p0[s] + (g - ctx->h_seq_start[si]);
        ctx->order[g] = i;
        ctx->h_ids[g] = b->tokens[i];
        ctx->h_pos[g] = p;
        ctx->h_slot[g] = ctx->table[(size_t)s * mp + p / LM_KV_PAGE] * LM_KV_PAGE + p % LM_KV_PAGE;
        if (!b->want_logits || b->want_logits[i]) ctx->h_out[j++] = g;  // output rows in the caller's order
    }
    lm_exec *ex = ctx->ex;
    const lm_exec_ops *op = ex->ops;
    lm_step_tensors *t = &ctx->t;
    lm_ubatch all = {0, n, 0, ns};
    // One sequential pass over the step. The pipeline executor runs the same
    // stages over several micro-batches.
    st = op->step_begin(ex);
    if (!st) st = op->upload(ex, lm_rows(t->ids, 0, n), ctx->h_ids);
    if (!st) st = op->upload(ex, lm_rows(t->pos, 0, n), ctx->h_pos);
    if (!st) st = op->upload(ex, lm_rows(t->slot, 0, n), ctx->h_slot);
    if (!st) st = op->upload(ex, lm_rows(t->seq_start, 0, ns + 1), ctx->h_seq_start);
    if (!st) st = op->upload(ex, lm_rows(t->kv_len, 0, ns), ctx->h_kv_len);
    if (!st) st = op->upload(ex, lm_rows(t->pages, 0, ns), ctx->h_pages);
    if (!st && n_out) st = op->upload(ex, lm_rows(t->out_rows, 0, n_out), ctx->h_out);
    if (!st) st = lm_block_embed(ctx, &all);
    for (int l = 0; l < c->n_layers && !st; l++) {
        st = lm_block_pre_attn(ctx, l, &all);
        if (!st) st = lm_block_attn(ctx, l, &all);
        if (!st) st = lm_block_post_attn(ctx, l, &all);
    }
    if (!st && n_out) st = lm_block_logits(ctx, n_out);
    lm_status end = op->step_end(ex);
    if (!st) st = end;
    ctx->n_logits = 0;
    if (!st && n_out) {
        const void *hp = op->host_ptr(ex, t->logits);
        if (hp) ctx->logits = hp;
        else if (!(st = op->download(ex, lm_rows(t->logits, 0, n_out), ctx->logits_buf))) ctx->logits = ctx->logits_buf;
    }
    // NaN/Inf logits would be sampled as garbage or scored as "perplexity
    // nan": fail the step instead and say where it came from.
    for (int j = 0; j < n_out && !st; j++) {
        const float *lg = ctx->logits + (size_t)j * (size_t)c->vocab;
        float acc = 0;
        for (int v = 0; v < c->vocab; v++) acc += lg[v] * 0.0f;  // NaN if any entry is NaN or Inf
        if (acc == 0) continue;
        int g = ctx->h_out[j], i = ctx->order[g];
        char why[512];
        if (lm_model_weights_finite(ctx->model, why, sizeof why))
            snprintf(why, sizeof why, "every weight is finite, so the computation made it (an overflow, or 0/0 in a "
                     "norm of zeros when rms_norm_eps is 0)");
        st = lm_err(LM_ERR_NUMERIC, "non-finite logits (NaN or Inf) for the token at batch index %d "
                    "(sequence %d, position %d): %s", i, b->seq[i], ctx->h_pos[g], why);
    }
    for (int j = 0; j < n_out && !st; j++)
        ctx->sampled[j] = b->samplers && b->samplers[j]
                              ? lm_sampler_sample(b->samplers[j], ctx->logits + (size_t)j * (size_t)c->vocab)
                              : -1;
    // Commit: a sequence's length advances only now; the pages beyond what
    // it holds go back. On failure it keeps its length, except that what the
    // step overwrote (positions from p0 on, when they were given) is gone.
    for (int i = 0; i < ns; i++) {
        int s = ctx->step_seq[i];
        int len = st ? (ctx->seq_len[s] < ctx->seq_p0[s] ? ctx->seq_len[s] : ctx->seq_p0[s]) : ctx->h_kv_len[i];
        ctx->seq_len[s] = len;
        seq_shrink(ctx, s, len);
    }
    if (!st) ctx->n_logits = n_out;
    ungroup(ctx, ns);
    return st;
}
