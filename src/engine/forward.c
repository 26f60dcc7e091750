// Context (KV cache + activations) and the one generic decoder block that
// runs every supported architecture, driven by the lm_config descriptor.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "kernels/cpu/kernels.h"
#include "util/err.h"
#include "util/file.h"

struct lm_context {
    lm_model *model;
    lm_context_params p;
    lm_exec *ex;
    int *seq_len;            // [n_seq] tokens already in each sequence's cache
    float *kcache, *vcache;  // [n_layers][n_seq][n_ctx][n_kv*hd]
    float *rope_cos, *rope_sin;  // [n_ctx][hd/2]
    // activations for one batch of up to n_batch tokens
    float *x;      // [n_batch][hidden] residual stream
    float *xn;     // [n_batch][hidden] normalised
    float *q;      // [n_batch][nq*hd]
    float *k, *v;  // [n_batch][nkv*hd]
    float *att;    // [n_batch][nq*hd]
    float *tmp;    // [n_batch][hidden]
    float *logits; // [n_batch][vocab]
    int *pos, *seq, *logit_tok;  // [n_batch]
    int *seq_add;                // [n_seq] scratch for batch validation
    uint64_t *expert_counts;     // [n_layers][n_experts] tokens routed since init/reset
    int n_logits;
};

lm_context_params lm_context_default_params(void) {
    return (lm_context_params){.n_seq = 1, .n_ctx = 2048, .n_batch = 512};
}

void lm_context_free(lm_context *ctx) {
    if (!ctx) return;
    if (ctx->ex) ctx->ex->ops->free(ctx->ex);
    void *bufs[] = {ctx->seq_len, ctx->kcache, ctx->vcache, ctx->rope_cos, ctx->rope_sin, ctx->x, ctx->xn,
                    ctx->q, ctx->k, ctx->v, ctx->att, ctx->tmp, ctx->logits, ctx->pos, ctx->seq,
                    ctx->logit_tok, ctx->expert_counts, ctx->seq_add};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(ctx);
}

// cos/sin exactly as transformers computes them: inverse frequencies and the
// angle position * inv_freq in float32 (its reference does this even when
// the model runs in float64), so long contexts round the same way.
static void rope_tables(lm_context *ctx) {
    const lm_config *c = &ctx->model->cfg;
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float inv = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim));
        for (int p = 0; p < ctx->p.n_ctx; p++) {
            float ang = (float)p * inv;
            ctx->rope_cos[(size_t)p * half + i] = (float)cos((double)ang);
            ctx->rope_sin[(size_t)p * half + i] = (float)sin((double)ang);
        }
    }
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
    size_t kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim, qd = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t cache = (size_t)c->n_layers * (size_t)p.n_seq * (size_t)p.n_ctx * kvd;
    // Everything below in bytes: KV cache, activations, logits, executor
    // scratch (MoE buffers sized for every routed token on one expert).
    size_t nb = (size_t)p.n_batch, H = (size_t)c->hidden, kmax = (size_t)c->top_k;
    size_t inter = (size_t)(c->moe_inter > c->dense_inter ? c->moe_inter : c->dense_inter);
    if (c->shared_inter > (int)inter) inter = (size_t)c->shared_inter;
    // In double: the size_t product above can wrap for absurd shapes, and then
    // must not pass the check below with its wrapped, small value.
    double kv_bytes = 2.0 * (double)c->n_layers * (double)p.n_seq * (double)p.n_ctx * (double)kvd * sizeof(float);
    double act_bytes = 4.0 * (double)nb * (3.0 * H + 2.0 * qd + 2.0 * kvd + (double)c->vocab) +
                       4.0 * (double)nb * kmax * (2.0 * H + 2.0 * inter + 3.0) + 4.0 * (double)nb * c->n_experts;
    double rope_bytes = 2.0 * 4.0 * (double)p.n_ctx * (double)(c->head_dim / 2);
    double need = kv_bytes + act_bytes + rope_bytes;
    char what[160], kvs[32];
    snprintf(what, sizeof what, "a context of %d sequences x %d tokens (KV cache %s)", p.n_seq, p.n_ctx,
             lm_format_bytes(kv_bytes, kvs, sizeof kvs));
    lm_status mst = need > 1e18 || kv_bytes != 2.0 * (double)cache * sizeof(float)
                        ? lm_err(LM_ERR_OOM, "%s is too large", what)
                        : lm_mem_check((uint64_t)need, 0.05, what);
    if (mst) return lm_err_append(mst, " (use fewer sequences at once or a shorter context)");
    if (model->shapes_only)
        return lm_err(LM_ERR_INVALID_ARG, "the model was loaded for its shapes only (no weights) and cannot run");
    lm_context *ctx = lm_calloc(1, sizeof *ctx);
    if (!ctx) return LM_ERR_OOM;
    ctx->model = model;
    ctx->p = p;
    ctx->seq_len = lm_calloc((size_t)p.n_seq, sizeof(int));
    ctx->seq_add = lm_calloc((size_t)p.n_seq, sizeof(int));
    ctx->kcache = lm_aligned_alloc(64, cache * sizeof(float));
    ctx->vcache = lm_aligned_alloc(64, cache * sizeof(float));
    ctx->rope_cos = lm_malloc((size_t)p.n_ctx * (size_t)(c->head_dim / 2) * sizeof(float));
    ctx->rope_sin = lm_malloc((size_t)p.n_ctx * (size_t)(c->head_dim / 2) * sizeof(float));
    ctx->x = lm_aligned_alloc(64, nb * H * sizeof(float));
    ctx->xn = lm_aligned_alloc(64, nb * H * sizeof(float));
    ctx->q = lm_aligned_alloc(64, nb * qd * sizeof(float));
    ctx->k = lm_aligned_alloc(64, nb * kvd * sizeof(float));
    ctx->v = lm_aligned_alloc(64, nb * kvd * sizeof(float));
    ctx->att = lm_aligned_alloc(64, nb * qd * sizeof(float));
    ctx->tmp = lm_aligned_alloc(64, nb * H * sizeof(float));
    ctx->logits = lm_aligned_alloc(64, nb * (size_t)c->vocab * sizeof(float));
    ctx->pos = lm_malloc(nb * sizeof(int));
    ctx->seq = lm_malloc(nb * sizeof(int));
    ctx->logit_tok = lm_malloc(nb * sizeof(int));
    ctx->expert_counts = lm_calloc((size_t)c->n_layers * (size_t)c->n_experts, sizeof(uint64_t));
    if (!ctx->seq_len || !ctx->seq_add || !ctx->kcache || !ctx->vcache || !ctx->rope_cos || !ctx->rope_sin || !ctx->x ||
        !ctx->xn || !ctx->q || !ctx->k || !ctx->v || !ctx->att || !ctx->tmp || !ctx->logits || !ctx->pos ||
        !ctx->seq || !ctx->logit_tok || !ctx->expert_counts) {
        lm_context_free(ctx);
        return lm_err(LM_ERR_OOM, "cannot allocate a context of %d sequences x %d tokens (KV cache %.2f GB)",
                      p.n_seq, p.n_ctx, 2.0 * (double)cache * 4 / 1e9);
    }
    lm_status st = lm_exec_cpu_init(c, model->pool, p.n_batch, p.n_ctx, &ctx->ex);
    if (st) {
        lm_context_free(ctx);
        return st;
    }
    rope_tables(ctx);
    *out = ctx;
    return LM_OK;
}

const uint64_t *lm_expert_counts(const lm_context *ctx) { return ctx->expert_counts; }

void lm_expert_counts_reset(lm_context *ctx) {
    const lm_config *c = &ctx->model->cfg;
    memset(ctx->expert_counts, 0, (size_t)c->n_layers * (size_t)c->n_experts * sizeof(uint64_t));
}

int lm_seq_len(const lm_context *ctx, int seq) {
    return seq >= 0 && seq < ctx->p.n_seq ? ctx->seq_len[seq] : -1;
}

lm_model *lm_context_model(const lm_context *ctx) { return ctx->model; }
lm_context_params lm_context_get_params(const lm_context *ctx) { return ctx->p; }

void lm_seq_clear(lm_context *ctx, int seq) {
    if (seq >= 0 && seq < ctx->p.n_seq) ctx->seq_len[seq] = 0;
}

const float *lm_get_logits(const lm_context *ctx, int j) {
    if (j < 0 || j >= ctx->n_logits) return NULL;
    return ctx->logits + (size_t)j * (size_t)ctx->model->cfg.vocab;
}

// Rotate-half RoPE on n rows of n_heads heads (HF Llama convention).
static void rope(const lm_context *ctx, float *x, int n, int n_heads) {
    int hd = ctx->model->cfg.head_dim, half = hd / 2;
    for (int t = 0; t < n; t++) {
        const float *cs = ctx->rope_cos + (size_t)ctx->pos[t] * half;
        const float *sn = ctx->rope_sin + (size_t)ctx->pos[t] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

static lm_status check_batch(const lm_context *ctx, const lm_batch *b) {
    const lm_config *c = &ctx->model->cfg;
    if (!b || b->n_tokens < 1 || !b->tokens || !b->seq)
        return lm_err(LM_ERR_INVALID_ARG, "empty batch");
    if (b->n_tokens > ctx->p.n_batch)
        return lm_err(LM_ERR_INVALID_ARG, "batch of %d tokens exceeds the context's batch size %d", b->n_tokens,
                      ctx->p.n_batch);
    int *add = ctx->seq_add;
    lm_status st = LM_OK;
    for (int i = 0; i < b->n_tokens && !st; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab)
            st = lm_err(LM_ERR_RANGE, "token id %d (batch index %d) is out of range: vocabulary size is %d",
                        b->tokens[i], i, c->vocab);
        else if (b->seq[i] < 0 || b->seq[i] >= ctx->p.n_seq)
            st = lm_err(LM_ERR_RANGE, "sequence id %d is out of range [0, %d)", b->seq[i], ctx->p.n_seq);
        else if (ctx->seq_len[b->seq[i]] + ++add[b->seq[i]] > ctx->p.n_ctx)
            st = lm_err(LM_ERR_RANGE, "sequence %d would exceed the context length of %d tokens", b->seq[i],
                        ctx->p.n_ctx);
    }
    for (int i = 0; i < b->n_tokens; i++)  // reset only what was touched
        if (b->seq[i] >= 0 && b->seq[i] < ctx->p.n_seq) add[b->seq[i]] = 0;
    return st;
}

lm_status lm_decode(lm_context *ctx, const lm_batch *b) {
    lm_status st = check_batch(ctx, b);
    if (st) return st;
    const lm_model *md = ctx->model;
    const lm_config *c = &md->cfg;
    lm_exec *ex = ctx->ex;
    const lm_exec_ops *op = ex->ops;
    int n = b->n_tokens, H = c->hidden, hd = c->head_dim, nq = c->n_heads, nkv = c->n_kv_heads;
    size_t kvd = (size_t)nkv * hd, qd = (size_t)nq * hd;
    size_t seq_stride = (size_t)ctx->p.n_ctx * kvd;
    size_t layer_stride = (size_t)ctx->p.n_seq * seq_stride;

    for (int i = 0; i < n; i++) {
        ctx->seq[i] = b->seq[i];
        ctx->pos[i] = ctx->seq_len[b->seq[i]]++;
        lm_to_f32((const char *)md->embed.data + (size_t)b->tokens[i] * md->embed.stride * lm_dtype_size(md->embed.dt),
                  md->embed.dt, ctx->x + (size_t)i * H, (size_t)H);
    }

    for (int l = 0; l < c->n_layers; l++) {
        const lm_layer_w *w = &md->layers[l];
        // --- attention: norm, q/k/v projections, q/k norm, RoPE, cache, attend, o_proj
        op->rmsnorm(ex, &w->attn_norm, ctx->x, n, H, c->rms_eps, ctx->xn);
        op->matmul(ex, &w->wq, &w->bq, ctx->xn, n, ctx->q);
        op->matmul(ex, &w->wk, &w->bk, ctx->xn, n, ctx->k);
        op->matmul(ex, &w->wv, &w->bv, ctx->xn, n, ctx->v);
        if (c->qk_norm == LM_QK_NORM_HEAD) {
            op->rmsnorm(ex, &w->q_norm, ctx->q, n * nq, hd, c->rms_eps, ctx->q);
            op->rmsnorm(ex, &w->k_norm, ctx->k, n * nkv, hd, c->rms_eps, ctx->k);
        } else if (c->qk_norm == LM_QK_NORM_FULL) {
            op->rmsnorm(ex, &w->q_norm, ctx->q, n, (int)qd, c->rms_eps, ctx->q);
            op->rmsnorm(ex, &w->k_norm, ctx->k, n, (int)kvd, c->rms_eps, ctx->k);
        }
        rope(ctx, ctx->q, n, nq);
        rope(ctx, ctx->k, n, nkv);
        float *kc = ctx->kcache + (size_t)l * layer_stride, *vc = ctx->vcache + (size_t)l * layer_stride;
        for (int i = 0; i < n; i++) {
            size_t off = (size_t)ctx->seq[i] * seq_stride + (size_t)ctx->pos[i] * kvd;
            memcpy(kc + off, ctx->k + (size_t)i * kvd, kvd * sizeof(float));
            memcpy(vc + off, ctx->v + (size_t)i * kvd, kvd * sizeof(float));
        }
        lm_attn_args aa = {n, ctx->seq, ctx->pos, ctx->q, kc, vc, seq_stride, nq, nkv, hd, ctx->att};
        op->attention(ex, &aa);
        op->matmul(ex, &w->wo, NULL, ctx->att, n, ctx->tmp);
        for (size_t i = 0; i < (size_t)n * H; i++) ctx->x[i] += ctx->tmp[i];
        // --- feed-forward: routed experts (+ shared) or dense MLP
        op->rmsnorm(ex, &w->ffn_norm, ctx->x, n, H, c->rms_eps, ctx->xn);
        lm_moe_args ma = {c, w, ctx->xn, n, ctx->tmp,
                          c->layer_moe[l] ? ctx->expert_counts + (size_t)l * c->n_experts : NULL};
        op->ffn(ex, &ma);
        for (size_t i = 0; i < (size_t)n * H; i++) ctx->x[i] += ctx->tmp[i];
    }

    // Logits only for the tokens that asked: gather, final norm, lm_head.
    ctx->n_logits = 0;
    for (int i = 0; i < n; i++) {
        if (b->want_logits && !b->want_logits[i]) continue;
        if (ctx->n_logits != i)
            memcpy(ctx->x + (size_t)ctx->n_logits * H, ctx->x + (size_t)i * H, (size_t)H * sizeof(float));
        ctx->logit_tok[ctx->n_logits++] = i;
    }
    if (ctx->n_logits) {
        op->rmsnorm(ex, &md->final_norm, ctx->x, ctx->n_logits, H, c->rms_eps, ctx->xn);
        op->matmul(ex, &md->lm_head, NULL, ctx->xn, ctx->n_logits, ctx->logits);
    }
    // NaN/Inf logits would be sampled as garbage or scored as "perplexity
    // nan": fail the step instead, undo it, and say where it came from.
    for (int j = 0; j < ctx->n_logits; j++) {
        const float *lg = ctx->logits + (size_t)j * (size_t)c->vocab;
        float acc = 0;
        for (int v = 0; v < c->vocab; v++) acc += lg[v] * 0.0f;  // NaN if any entry is NaN or Inf
        if (acc == 0) continue;
        int i = ctx->logit_tok[j];
        char why[512];
        if (lm_model_weights_finite(md, why, sizeof why))
            snprintf(why, sizeof why, "every weight is finite, so an activation overflowed");
        st = lm_err(LM_ERR_NUMERIC, "non-finite logits (NaN or Inf) for the token at batch index %d "
                    "(sequence %d, position %d): %s", i, ctx->seq[i], ctx->pos[i], why);
        for (int t = 0; t < n; t++) ctx->seq_len[ctx->seq[t]]--;
        ctx->n_logits = 0;
        return st;
    }
    return LM_OK;
}
