// The context (sequences, block tables, the KV page allocator) and lm_decode:
// the sequential driver that groups a batch by sequence, takes the KV pages
// it needs, uploads the step's metadata and runs the block's stages over the
// whole step on the context's executor.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/context.h"
#include "engine/sample.h"
#include "kernels/cpu/kernels.h"
#include "util/err.h"
#include "util/file.h"

lm_context_params lm_context_default_params(void) {
    return (lm_context_params){
        .n_seq = 1, .n_ctx = 2048, .n_batch = 512, .n_out = 0, .n_pages = 0, .kv_type = LM_KV_BF16, .executor = NULL,
        .graphs = true};
}

void lm_context_free(lm_context *ctx) {
    if (!ctx) return;
    if (ctx->ex) ctx->ex->ops->free(ctx->ex);
    // the staging block (h_ids ...) is the executor's and went with it
    void *bufs[] = {ctx->inv_freq, ctx->seq_len, ctx->seq_pages, ctx->table, ctx->free_pages,
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

// The host side of a step's uploads and downloads, in one block from the
// executor (pinned memory on a GPU, so the copies are asynchronous and the
// step has one host sync): ids, pos, slot [n_batch], seq_start [n_seq + 1],
// kv_len [n_seq], pages [n_seq][max_pages], out rows [n_out], the sampling
// parameters [n_out][LM_SAMPLE_ROW_WORDS] and results [n_out][2].
static lm_status staging_init(lm_context *ctx) {
    size_t nb = (size_t)ctx->p.n_batch, ns = (size_t)ctx->p.n_seq, no = (size_t)ctx->p.n_out;
    size_t words = 3 * nb + (ns + 1) + ns + ns * (size_t)ctx->max_pages + no + no * LM_SAMPLE_ROW_WORDS + 2 * no;
    int32_t *w;
    lm_status st = ctx->ex->ops->host_alloc(ctx->ex, (words + 2) * sizeof(int32_t), (void **)&w);
    if (st) return st;
    memset(w, 0, words * sizeof(int32_t));
    ctx->h_ids = w, w += nb;
    ctx->h_pos = w, w += nb;
    ctx->h_slot = w, w += nb;
    ctx->h_seq_start = w, w += ns + 1;
    ctx->h_kv_len = w, w += ns;
    ctx->h_pages = w, w += ns * (size_t)ctx->max_pages;
    ctx->h_out = w, w += no;
    if ((uintptr_t)w % 8) w++;  // lm_sample_row holds 64-bit fields
    ctx->h_sample = (lm_sample_row *)w, w += no * LM_SAMPLE_ROW_WORDS;
    ctx->h_res = w;
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
        {&t->xn, LM_DT_F32, nb, H},            {&t->qkv, LM_DT_F32, nb, qd + 2 * kvd},
        {&t->att, LM_DT_F32, nb, qd},          {&t->tmp, LM_DT_F32, nb, H},
        {&t->ffn_out, LM_DT_F32, nb, H},       {&t->h, LM_DT_F32, nb, inter > 0 ? inter : 1},
        {&t->xo, LM_DT_F32, no, H},            {&t->dout, LM_DT_F32, no, H},
        {&t->logits, LM_DT_F32, no, c->vocab}, {&t->router, LM_DT_F32, nb, E},
        {&t->sel, LM_DT_I32, nb, k},           {&t->selw, LM_DT_F32, nb, k},
        {&t->moe_h, ex->ops->moe_h_dt, rmax, c->moe_inter},
        {&t->moe_y, LM_DT_F32, rmax, H},       {&t->plan.row_of, LM_DT_I32, nb, k},
        {&t->sample, LM_DT_I32, no, LM_SAMPLE_ROW_WORDS}, {&t->res, LM_DT_I32, no, 2},
        {&t->plan.token_of, LM_DT_I32, rmax, 1},
        {&t->plan.tiles, LM_DT_I32, rmax / block + E, 2},
        {&t->plan.n_tiles, LM_DT_I32, 1, 1},   {&t->plan.counts, LM_DT_I32, E, 1},
    };
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        lm_status st = ex->ops->alloc(ex, spec[i].dt, spec[i].rows, spec[i].cols, spec[i].t);
        if (st) return st;
    }
    t->plan.block = block;
    t->q = lm_cols(t->qkv, 0, qd);
    t->k = lm_cols(t->qkv, qd, kvd);
    t->v = lm_cols(t->qkv, qd + kvd, kvd);
    return LM_OK;
}

// Bytes a context of these limits asks for, for the check before allocating:
// the KV cache, the logits buffer, and everything else.
typedef struct {
    double kv, logits, other;
} ctx_bytes;

static ctx_bytes context_bytes(const lm_config *c, const lm_context_params *p, int max_pages, const lm_kv_layout *kv,
                               int block, bool gpu) {
    double nb = p->n_batch, H = c->hidden, qd = (double)c->n_heads * c->head_dim;
    double kvd = (double)c->n_kv_heads * c->head_dim, k = c->top_k, E = c->n_experts;
    double dense = c->n_moe_layers < c->n_layers ? c->dense_inter : 0;
    double inter = dense > c->shared_inter ? dense : c->shared_inter;
    double rmax = nb * k + E * (block - 1);
    double h_bytes = gpu ? 2 : 4;  // the GPU keeps the MoE intermediate in bf16
    double act = 4.0 * nb * (6 * H + 2 * qd + 2 * kvd + inter + E + 2 * k) + 4.0 * p->n_out * 2 * H +
                 rmax * (h_bytes * c->moe_inter + 4.0 * H + 4.0) + 4.0 * p->n_out * (LM_SAMPLE_ROW_WORDS + 2);
    double meta = 4.0 * ((double)p->n_seq * (max_pages + 8) + 12.0 * nb) + 8.0 * c->n_layers * E;
    // the CPU executor's cos and sin tables, its gathered expert inputs and up projections
    double cpu_only = gpu ? 0 : 4.0 * p->n_ctx * (double)c->head_dim + 4.0 * rmax * (H + inter + c->moe_inter);
    return (ctx_bytes){(double)c->n_layers * p->n_pages * (double)lm_kv_page_bytes(kv), 4.0 * p->n_out * c->vocab,
                       act + meta + cpu_only};
}

// Checks the parameters and fills in their defaults (n_out, n_pages).
static lm_status resolve_params(const lm_config *c, lm_context_params *pp, int *max_pages_out) {
    lm_context_params p = *pp;
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
    if (!(p.gpu_mem >= 0) || p.gpu_mem > 1e18) return lm_err(LM_ERR_INVALID_ARG, "GPU memory cap %g", p.gpu_mem);
    int max_pages = lm_kv_pages_for(p.n_ctx);
    double full = (double)p.n_seq * max_pages;
    if (p.n_pages < 0) return lm_err(LM_ERR_INVALID_ARG, "KV pages %d must be >= 0", p.n_pages);
    if (!p.n_pages) {
        if (full > 1 << 30) return lm_err(LM_ERR_OOM, "a KV cache for %d sequences x %d tokens is too large", p.n_seq,
                                          p.n_ctx);
        p.n_pages = (int)full;
    }
    *pp = p;
    *max_pages_out = max_pages;
    return LM_OK;
}

static bool on_gpu(const lm_context_params *p) { return p->executor && !strcmp(p->executor, "cuda"); }

lm_status lm_context_mem_plan(const lm_model *model, const lm_context_params *params, lm_mem_plan *out) {
    memset(out, 0, sizeof *out);
    lm_context_params p = params ? *params : lm_context_default_params();
    const lm_config *c = &model->cfg;
    int max_pages;
    lm_status st = resolve_params(c, &p, &max_pages);
    if (st) return st;
    lm_kv_layout kv = {c->n_layers, p.n_pages, LM_KV_PAGE, c->n_kv_heads, c->head_dim,
                       p.kv_type == LM_KV_F32 ? LM_DT_F32 : LM_DT_BF16};
    const char *ex = p.executor ? p.executor : "cpu";
    ctx_bytes cb = context_bytes(c, &p, max_pages, &kv, lm_exec_moe_block(ex), on_gpu(&p));
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    out->gpu = on_gpu(&p);
    out->weights = (double)mi.bytes_weights;
    out->kv = cb.kv;
    out->activations = cb.other + cb.logits;
    if (out->gpu) {
        out->scratch = lm_exec_cuda_scratch_bytes(c, p.n_batch, p.n_ctx);
        size_t fr, tot;
        if (lm_exec_cuda_mem_info(&fr, &tot)) {  // no GPU here: the plan still says what one would need
            out->available = p.gpu_mem > 0 ? p.gpu_mem : -1;
        } else {
            out->available = p.gpu_mem > 0 && p.gpu_mem < (double)fr ? p.gpu_mem : (double)fr;
            out->device_total = (double)tot;
        }
    } else {
        out->available = (double)lm_mem_available();
    }
    out->total = out->weights + out->kv + out->activations + out->scratch;
    return LM_OK;
}

void lm_context_mem_used(const lm_context *ctx, lm_mem_used *out) {
    memset(out, 0, sizeof *out);
    if (ctx->ex->ops->mem_used) ctx->ex->ops->mem_used(ctx->ex, &out->allocated, &out->graphs, &out->graph_bytes);
}

// A GPU context must fit in the GPU's free memory (or the --gpu-mem cap):
// refused before anything is allocated, with the parts and the way out.
static lm_status check_gpu_plan(const lm_model *model, const lm_context_params *p) {
    lm_mem_plan pl;
    lm_status st = lm_context_mem_plan(model, p, &pl);
    if (st || pl.available < 0 || pl.total <= pl.available * 0.97) return st;
    char t[32], a[32], w[32], k[32], x[32];
    return lm_err(LM_ERR_OOM, "the run needs %s of GPU memory and %s is available%s: weights %s, KV cache %s (%d "
                  "pages), activations and scratch %s. Use fewer sequences at once or a shorter context (a smaller "
                  "KV cache), a smaller batch, or --device cpu; running models larger than the GPU (streaming the "
                  "experts from host memory) is not built yet",
                  lm_format_bytes(pl.total, t, sizeof t), lm_format_bytes(pl.available, a, sizeof a),
                  p->gpu_mem > 0 ? " under --gpu-mem" : "", lm_format_bytes(pl.weights, w, sizeof w),
                  lm_format_bytes(pl.kv, k, sizeof k), p->n_pages,
                  lm_format_bytes(pl.activations + pl.scratch, x, sizeof x));
}

lm_status lm_context_init(lm_model *model, const lm_context_params *params, lm_context **out) {
    *out = NULL;
    lm_context_params p = params ? *params : lm_context_default_params();
    const lm_config *c = &model->cfg;
    int max_pages;
    lm_status rs = resolve_params(c, &p, &max_pages);
    if (rs) return rs;
    if (on_gpu(&p) && !model->shapes_only && (rs = check_gpu_plan(model, &p))) return rs;
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
    ctx_bytes cb = context_bytes(c, &p, max_pages, &kv, ctx->ex->ops->moe_block, on_gpu(&p));
    double need = on_gpu(&p) ? cb.logits : cb.kv + cb.logits + cb.other;  // a GPU's share was checked above
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
    ctx->sampled = lm_malloc((size_t)p.n_out * sizeof(int32_t));
    ctx->order = lm_malloc(nb * sizeof(int));
    ctx->step_seq = lm_malloc(ns * sizeof(int));
    ctx->seq_slot = lm_malloc(ns * sizeof(int));
    ctx->seq_cnt = lm_calloc(ns, sizeof(int));
    ctx->seq_p0 = lm_malloc(ns * sizeof(int));
    ctx->counts = lm_calloc((size_t)model->cfg.n_layers * (size_t)model->cfg.n_experts, sizeof(uint64_t));
    if (!ctx->seq_len || !ctx->seq_pages || !ctx->table || !ctx->free_pages || !ctx->sampled || !ctx->order ||
        !ctx->step_seq || !ctx->seq_slot || !ctx->seq_cnt || !ctx->seq_p0 || !ctx->counts) {
        lm_context_free(ctx);
        return lm_err(LM_ERR_OOM, "cannot allocate %s", what);
    }
    for (int i = 0; i < p.n_seq; i++) ctx->seq_slot[i] = -1;
    // pages handed out lowest first
    for (int i = 0; i < p.n_pages; i++) ctx->free_pages[i] = p.n_pages - 1 - i;
    ctx->n_free = p.n_pages;
    if ((st = rope_init(ctx)) || (st = staging_init(ctx)) || (st = ctx->ex->ops->bind_weights(ctx->ex, model)) ||
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
    if (j < 0 || j >= ctx->n_logits) return NULL;
    if (!ctx->logits && ctx->logits_remote) {  // sampled on the executor: fetch the step's logits now
        lm_tensor lg = lm_rows(ctx->t.logits, 0, ctx->n_logits);
        if (ctx->ex->ops->download(ctx->ex, lg, ctx->logits_buf)) return NULL;
        ctx->logits = ctx->logits_buf;
    }
    if (!ctx->logits) return NULL;
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
    // Sampling where the logits are, when the executor can: then only the
    // ids come back (the logits on demand, lm_get_logits). Every output row
    // gets a row of parameters: rows without a sampler are only checked.
    bool dev_sample = op->sample && n_out > 0, full = false;
    const uint8_t *banned = NULL;
    int n_banned = 0;
    for (int j = 0; j < n_out && dev_sample && b->samplers; j++) {
        lm_sampler *sm = b->samplers[j];
        if (!sm) continue;
        full |= lm_sampler_draws(sm);
        const uint8_t *bn = lm_sampler_banned(sm);
        if (bn && banned && bn != banned) dev_sample = false;  // one banned map per step
        if (bn) banned = bn, n_banned = lm_sampler_vocab(sm);
    }
    if (dev_sample && full && !op->sample_full) dev_sample = false;
    // The GPU sampler departs from the CPU's semantics at very high
    // temperatures (T = 100 with top-k: a different id than the CPU at logit
    // margins of 0.01-0.4, H200 lab 2026-12-04): such steps sample on the host.
    for (int j = 0; j < n_out && dev_sample && b->samplers; j++)
        if (b->samplers[j] && lm_sampler_draws(b->samplers[j]) && lm_sampler_temperature(b->samplers[j]) > 20.0f)
            dev_sample = false;
    for (int j = 0; j < n_out && dev_sample; j++) {
        lm_sampler *sm = b->samplers ? b->samplers[j] : NULL;
        const uint8_t *bn;
        if (sm) lm_sampler_take_row(sm, &ctx->h_sample[j], &bn);  // advances the sampler: a draw is taken
        else ctx->h_sample[j] = (lm_sample_row){.temperature = -1.0f, .n_valid = c->vocab};
    }
    // The step's metadata, queued ahead of its ops (asynchronous from the
    // staging block; one host sync per step, at step_end).
    st = op->upload_async(ex, lm_rows(t->ids, 0, n), ctx->h_ids, 0);
    if (!st) st = op->upload_async(ex, lm_rows(t->pos, 0, n), ctx->h_pos, 0);
    if (!st) st = op->upload_async(ex, lm_rows(t->slot, 0, n), ctx->h_slot, 0);
    if (!st) st = op->upload_async(ex, lm_rows(t->seq_start, 0, ns + 1), ctx->h_seq_start, 0);
    if (!st) st = op->upload_async(ex, lm_rows(t->kv_len, 0, ns), ctx->h_kv_len, 0);
    if (!st) st = op->upload_async(ex, lm_rows(t->pages, 0, ns), ctx->h_pages, 0);
    if (!st && n_out) st = op->upload_async(ex, lm_rows(t->out_rows, 0, n_out), ctx->h_out, 0);
    if (!st && dev_sample) st = op->upload_async(ex, lm_rows(t->sample, 0, n_out), ctx->h_sample, 0);
    // Everything the ops below are given on the host follows from these
    // (tensor views are rows 0.. of the context's tensors): a step of the
    // same shape may replay the previous one's graph.
    // Exact, not a hash: n, ns, n_out <= 65536 take 17 bits each; bit 0 says
    // whether the executor may capture and replay.
    uint64_t key = (uint64_t)n << 38 | (uint64_t)ns << 21 | (uint64_t)n_out << 4 | (uint64_t)(dev_sample + full) << 2 |
                   (uint64_t)(banned != NULL) << 1 | (uint64_t)ctx->p.graphs;
    // One sequential pass over the step. The pipeline executor runs the same
    // stages over several micro-batches.
    if (!st) st = op->step_begin(ex, key);
    if (!st) st = lm_block_embed(ctx, &all);
    for (int l = 0; l < c->n_layers && !st; l++) {
        st = lm_block_pre_attn(ctx, l, &all);
        if (!st) st = lm_block_attn(ctx, l, &all);
        if (!st) st = lm_block_post_attn(ctx, l, &all);
    }
    if (!st && n_out) st = lm_block_logits(ctx, n_out);
    if (!st && dev_sample) {
        st = op->sample(ex, lm_rows(t->logits, 0, n_out), lm_rows(t->sample, 0, n_out), banned, n_banned,
                        lm_rows(t->res, 0, n_out));
        if (!st) st = op->download_async(ex, lm_rows(t->res, 0, n_out), ctx->h_res, 0);
    }
    lm_status end = op->step_end(ex);
    if (!st) st = end;
    ctx->n_logits = 0;
    ctx->logits = NULL;
    ctx->logits_remote = false;
    if (!st && n_out && !dev_sample) {
        const void *hp = op->host_ptr(ex, t->logits);
        if (hp) ctx->logits = hp;
        else if (!(st = op->download(ex, lm_rows(t->logits, 0, n_out), ctx->logits_buf))) ctx->logits = ctx->logits_buf;
    }
    // NaN/Inf logits would be sampled as garbage or scored as "perplexity
    // nan": fail the step instead and say where it came from.
    for (int j = 0; j < n_out && !st; j++) {
        if (dev_sample) {
            if (!ctx->h_res[2 * j + 1]) continue;
        } else {
            const float *lg = ctx->logits + (size_t)j * (size_t)c->vocab;
            float acc = 0;
            for (int v = 0; v < c->vocab; v++) acc += lg[v] * 0.0f;  // NaN if any entry is NaN or Inf
            if (acc == 0) continue;
        }
        int g = ctx->h_out[j], i = ctx->order[g];
        char why[512];
        if (lm_model_weights_finite(ctx->model, why, sizeof why))
            snprintf(why, sizeof why, "every weight is finite, so the computation made it (an overflow, or 0/0 in a "
                     "norm of zeros when rms_norm_eps is 0)");
        st = lm_err(LM_ERR_NUMERIC, "non-finite logits (NaN or Inf) for the token at batch index %d "
                    "(sequence %d, position %d): %s", i, b->seq[i], ctx->h_pos[g], why);
    }
    for (int j = 0; j < n_out && !st; j++)
        ctx->sampled[j] = dev_sample ? (b->samplers && b->samplers[j] ? ctx->h_res[2 * j] : -1)
                          : b->samplers && b->samplers[j]
                              ? lm_sampler_sample(b->samplers[j], ctx->logits + (size_t)j * (size_t)c->vocab)
                              : -1;
    if (!st && dev_sample) ctx->logits_remote = true;
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
