// The reference executor: every op as the plainest loop that computes it,
// single-threaded, fp32 values with double accumulation, no SIMD and no
// cleverness. It is the oracle the op tests hold every other executor to
// (tests/unit/test_ops.c) and runs whole models in the golden tests.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "kernels/cpu/kernels.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct ref_exec {
    lm_exec base;
    const lm_config *cfg;
    lm_buf allocs;  // void * of every tensor allocated, freed with the executor
    lm_kv_layout kv;
    void **kv_layer;    // [n_layers] page pools
    uint64_t *stats;    // [n_layers][n_experts]
} ref_exec;

// ---------------------------------------------------------------- memory ---

static lm_status ref_alloc(lm_exec *ex, lm_dtype dt, int rows, int cols, lm_tensor *out) {
    ref_exec *r = (ref_exec *)ex;
    size_t n = 0;
    lm_status st = lm_exec_tensor_bytes("ref", dt, rows, cols, &n);
    if (st) return st;
    void *p = lm_calloc(n ? n : 1, 1);
    if (!p) return LM_ERR_OOM;
    if (!lm_buf_put(&r->allocs, &p, sizeof p)) {
        free(p);
        return LM_ERR_OOM;
    }
    *out = (lm_tensor){p, dt, rows, cols, (size_t)cols};
    return LM_OK;
}

static lm_status ref_kv_alloc(lm_exec *ex, const lm_kv_layout *k) {
    ref_exec *r = (ref_exec *)ex;
    r->kv = *k;
    r->kv_layer = lm_calloc((size_t)k->n_layers, sizeof *r->kv_layer);
    if (!r->kv_layer) return LM_ERR_OOM;
    size_t elems = lm_kv_page_bytes(k) / lm_dtype_size(k->dt);
    for (int l = 0; l < k->n_layers; l++) {
        lm_tensor t;
        lm_status st = ref_alloc(ex, k->dt, k->n_pages, (int)elems, &t);
        if (st) return st;
        r->kv_layer[l] = t.data;
    }
    return LM_OK;
}

static lm_status ref_expert_stats(lm_exec *ex, uint64_t *out, bool reset) {
    ref_exec *r = (ref_exec *)ex;
    size_t n = (size_t)r->cfg->n_layers * (size_t)r->cfg->n_experts;
    if (out) memcpy(out, r->stats, n * sizeof *out);
    if (reset) memset(r->stats, 0, n * sizeof *r->stats);
    return LM_OK;
}

static lm_status ref_nop(lm_exec *ex) { return LM_OK; }
static lm_status ref_begin(lm_exec *ex, uint64_t key) { return LM_OK; }
static lm_status ref_reserve(lm_exec *ex, int max_tokens, int max_ctx) { return LM_OK; }

// ------------------------------------------------------------- accessors ---

static float get(lm_tensor t, int r, int c) {
    const char *p = (const char *)t.data + ((size_t)r * t.ld + (size_t)c) * lm_dtype_size(t.dt);
    float v;
    if (t.dt == LM_DT_I32) return (float)*(const int32_t *)p;
    lm_to_f32_ref(p, t.dt, &v, 1);
    return v;
}

static void set(lm_tensor t, int r, int c, float v) {
    char *p = (char *)t.data + ((size_t)r * t.ld + (size_t)c) * lm_dtype_size(t.dt);
    if (t.dt == LM_DT_F32) *(float *)p = v;
    else if (t.dt == LM_DT_BF16) *(uint16_t *)p = lm_f32_to_bf16(v);
    else if (t.dt == LM_DT_F16) *(uint16_t *)p = lm_f32_to_f16(v);
    else *(int32_t *)p = (int32_t)v;
}

static int geti(lm_tensor t, int r, int c) { return ((const int32_t *)t.data)[(size_t)r * t.ld + (size_t)c]; }
static void seti(lm_tensor t, int r, int c, int v) { ((int32_t *)t.data)[(size_t)r * t.ld + (size_t)c] = v; }

static float w_at(const lm_mat *m, int r, int c) {
    float v;
    lm_to_f32_ref((const char *)m->data + ((size_t)r * m->stride + (size_t)c) * lm_dtype_size(m->dt), m->dt, &v, 1);
    return v;
}

// x[r] . W[o], in double
static double dot_row(lm_tensor x, int r, const lm_mat *W, int o) {
    double acc = 0;
    for (int i = 0; i < W->cols; i++) acc += (double)get(x, r, i) * w_at(W, o, i);
    return acc;
}

// ------------------------------------------------------------------- ops ---

static lm_status ref_embed(lm_exec *ex, const lm_mat *E, lm_tensor ids, lm_tensor x) {
    for (int t = 0; t < x.rows; t++)
        for (int i = 0; i < E->cols; i++) set(x, t, i, w_at(E, geti(ids, t, 0), i));
    return LM_OK;
}

static void norm_row(lm_tensor x, int r, int c0, int n, const lm_mat *w, float eps, lm_tensor y) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)get(x, r, c0 + i) * get(x, r, c0 + i);
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) set(y, r, c0 + i, get(x, r, c0 + i) * scale * w_at(w, 0, i % w->cols));
}

static lm_status ref_rmsnorm(lm_exec *ex, const lm_mat *w, lm_tensor x, int group, float eps, lm_tensor y) {
    for (int r = 0; r < x.rows; r++)
        for (int c0 = 0; c0 < x.cols; c0 += group) norm_row(x, r, c0, group, w, eps, y);
    return LM_OK;
}

static lm_status ref_add_rmsnorm(lm_exec *ex, lm_tensor x, lm_tensor d, const lm_mat *w, float eps, lm_tensor y) {
    for (int r = 0; r < x.rows; r++) {
        for (int i = 0; i < x.cols; i++) set(x, r, i, get(x, r, i) + get(d, r, i));
        if (w) norm_row(x, r, 0, x.cols, w, eps, y);
    }
    return LM_OK;
}

static lm_status ref_matmul(lm_exec *ex, const lm_mat *W, const lm_mat *bias, lm_tensor x, lm_tensor y) {
    for (int t = 0; t < x.rows; t++)
        for (int o = 0; o < W->rows; o++)
            set(y, t, o, (float)(dot_row(x, t, W, o) + (bias && bias->data ? w_at(bias, 0, o) : 0.0)));
    return LM_OK;
}

// Address of element (head h, offset off, dim d) of K (kv = 0) or V (kv = 1)
// of the cache slot `slot` of layer l.
static char *kv_at(ref_exec *r, int l, int slot, int kv, int h, int d) {
    const lm_kv_layout *k = &r->kv;
    int page = slot / k->page_size, off = slot % k->page_size;
    size_t e = (size_t)page * (lm_kv_page_bytes(k) / lm_dtype_size(k->dt)) +
               (((size_t)kv * k->n_kv_heads + (size_t)h) * k->page_size + (size_t)off) * k->head_dim + (size_t)d;
    return (char *)r->kv_layer[l] + e * lm_dtype_size(k->dt);
}

static float kv_get(ref_exec *r, int l, int slot, int kv, int h, int d) {
    float v;
    lm_to_f32_ref(kv_at(r, l, slot, kv, h, d), r->kv.dt, &v, 1);
    return v;
}

// Rotate-half RoPE of one head (HF Llama convention), angles as transformers
// computes them: (float) position * inv_freq in fp32, cos/sin of that.
static void rope_head(lm_tensor t, int row, int c0, const lm_rope *rope, int pos) {
    int half = rope->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * rope->inv_freq[i];
        float cs = (float)cos((double)ang), sn = (float)sin((double)ang);
        float a = get(t, row, c0 + i), b = get(t, row, c0 + i + half);
        set(t, row, c0 + i, a * cs - b * sn);
        set(t, row, c0 + i + half, b * cs + a * sn);
    }
}

static lm_status ref_rope_kv(lm_exec *ex, const lm_rope *rope, lm_tensor q, lm_tensor k, lm_tensor v, lm_tensor pos,
                             lm_tensor slot, int layer) {
    ref_exec *r = (ref_exec *)ex;
    int hd = rope->head_dim, nkv = k.cols / hd;
    for (int t = 0; t < q.rows; t++) {
        int p = geti(pos, t, 0), s = geti(slot, t, 0);
        for (int h = 0; h < q.cols / hd; h++) rope_head(q, t, h * hd, rope, p);
        for (int h = 0; h < nkv; h++) {
            rope_head(k, t, h * hd, rope, p);
            for (int d = 0; d < hd; d++) {
                float kv[2] = {get(k, t, h * hd + d), get(v, t, h * hd + d)};
                for (int w = 0; w < 2; w++) {
                    char *dst = kv_at(r, layer, s, w, h, d);
                    if (r->kv.dt == LM_DT_F32) *(float *)dst = kv[w];
                    else *(uint16_t *)dst = lm_f32_to_bf16(kv[w]);
                }
            }
        }
    }
    return LM_OK;
}

static lm_status ref_attention(lm_exec *ex, const lm_attn_view *v, int layer, int n_heads, lm_tensor q,
                               lm_tensor out) {
    ref_exec *r = (ref_exec *)ex;
    int hd = r->kv.head_dim, ps = r->kv.page_size, group = n_heads / r->kv.n_kv_heads;
    int t0 = geti(v->seq_start, 0, 0);
    double *s = malloc(sizeof(double) * 1);
    for (int sq = 0; sq < v->n_seqs; sq++) {
        int len = geti(v->kv_len, sq, 0);
        double *sc = realloc(s, sizeof(double) * (size_t)(len > 0 ? len : 1));
        if (!sc) {
            free(s);
            return lm_err(LM_ERR_OOM, "out of memory");
        }
        s = sc;
        for (int t = geti(v->seq_start, sq, 0) - t0; t < geti(v->seq_start, sq + 1, 0) - t0; t++) {
            int limit = geti(v->pos, t, 0) + 1;  // causal: positions 0..pos
            for (int h = 0; h < n_heads; h++) {
                int kh = h / group;
                double mx = -INFINITY, sum = 0;
                for (int p = 0; p < limit; p++) {
                    int slot = geti(v->pages, sq, p / ps) * ps + p % ps;
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double)get(q, t, h * hd + d) * kv_get(r, layer, slot, 0, kh, d);
                    s[p] = dot / sqrt((double)hd);
                    mx = s[p] > mx ? s[p] : mx;
                }
                for (int p = 0; p < limit; p++) sum += (s[p] = exp(s[p] - mx));
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int p = 0; p < limit; p++) {
                        int slot = geti(v->pages, sq, p / ps) * ps + p % ps;
                        acc += s[p] * kv_get(r, layer, slot, 1, kh, d);
                    }
                    set(out, t, h * hd + d, (float)(acc / sum));
                }
            }
        }
    }
    free(s);
    return LM_OK;
}

static lm_status ref_gather(lm_exec *ex, lm_tensor x, lm_tensor idx, lm_tensor y) {
    for (int i = 0; i < y.rows; i++)
        for (int c = 0; c < x.cols; c++) set(y, i, c, get(x, geti(idx, i, 0), c));
    return LM_OK;
}

static lm_status ref_route(lm_exec *ex, lm_tensor logits, int k, bool norm_topk, lm_tensor sel, lm_tensor w) {
    int E = logits.cols;
    if (E < 1 || k < 1 || k > E) return lm_err(LM_ERR_INVALID_ARG, "route: top-%d of %d experts", k, E);
    double *p = malloc(sizeof(double) * (size_t)E);
    char *taken = malloc((size_t)E);
    if (!p || !taken) {
        free(p);
        free(taken);
        return lm_err(LM_ERR_OOM, "out of memory");
    }
    for (int t = 0; t < logits.rows; t++) {
        double mx = -INFINITY, sum = 0, wsum = 0;
        for (int e = 0; e < E; e++) mx = get(logits, t, e) > mx ? get(logits, t, e) : mx;
        for (int e = 0; e < E; e++) sum += (p[e] = exp(get(logits, t, e) - mx));
        memset(taken, 0, (size_t)E);
        for (int i = 0; i < k; i++) {  // the k largest, ties to the lower id
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
            taken[best] = 1;
            wsum += p[best] / sum;
        }
        for (int e = 0, i = 0; e < E; e++)  // in expert-id order
            if (taken[e]) {
                seti(sel, t, i, e);
                set(w, t, i, (float)(p[e] / sum / (norm_topk ? wsum : 1.0)));
                i++;
            }
    }
    free(p);
    free(taken);
    return LM_OK;
}

static lm_status ref_align(lm_exec *ex, lm_tensor sel, int E, int layer, lm_moe_plan *plan) {
    ref_exec *r = (ref_exec *)ex;
    int n = sel.rows, k = sel.cols, B = plan->block;
    for (int e = 0; e < E; e++) seti(plan->counts, e, 0, 0);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) seti(plan->counts, geti(sel, t, i), 0, geti(plan->counts, geti(sel, t, i), 0) + 1);
    for (int i = 0; i < plan->token_of.rows; i++) seti(plan->token_of, i, 0, -1);
    int row = 0, tiles = 0;
    for (int e = 0; e < E; e++) {
        int c = geti(plan->counts, e, 0), fill = row;
        for (int t = 0; t < n; t++)  // the expert's rows in token order
            for (int i = 0; i < k; i++)
                if (geti(sel, t, i) == e) {
                    seti(plan->row_of, t, i, fill);
                    seti(plan->token_of, fill++, 0, t);
                }
        for (int b = 0; b < (c + B - 1) / B; b++) {
            seti(plan->tiles, tiles, 0, e);
            seti(plan->tiles, tiles++, 1, row + b * B);
        }
        row += (c + B - 1) / B * B;
        if (layer >= 0) r->stats[(size_t)layer * E + e] += (uint64_t)c;
    }
    seti(plan->n_tiles, 0, 0, tiles);
    return LM_OK;
}

static float silu(float g) { return g / (1.0f + expf(-g)); }

static lm_status ref_expert_up(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *plan, lm_tensor x,
                               lm_tensor h) {
    for (int ti = 0; ti < geti(plan->n_tiles, 0, 0); ti++) {
        const lm_ffn_w *f = &experts[geti(plan->tiles, ti, 0)];
        for (int rr = geti(plan->tiles, ti, 1); rr < geti(plan->tiles, ti, 1) + plan->block; rr++) {
            int t = geti(plan->token_of, rr, 0);
            if (t < 0) continue;
            for (int o = 0; o < f->gate.rows; o++)
                set(h, rr, o, silu((float)dot_row(x, t, &f->gate, o)) * (float)dot_row(x, t, &f->up, o));
        }
    }
    return LM_OK;
}

static lm_status ref_expert_down(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *plan, lm_tensor h,
                                 lm_tensor y) {
    for (int ti = 0; ti < geti(plan->n_tiles, 0, 0); ti++) {
        const lm_ffn_w *f = &experts[geti(plan->tiles, ti, 0)];
        for (int rr = geti(plan->tiles, ti, 1); rr < geti(plan->tiles, ti, 1) + plan->block; rr++) {
            if (geti(plan->token_of, rr, 0) < 0) continue;
            for (int o = 0; o < f->down.rows; o++) set(y, rr, o, (float)dot_row(h, rr, &f->down, o));
        }
    }
    return LM_OK;
}

static lm_status ref_combine(lm_exec *ex, const lm_moe_plan *plan, lm_tensor w, lm_tensor y, lm_tensor out) {
    for (int t = 0; t < out.rows; t++)
        for (int c = 0; c < out.cols; c++) {
            double acc = 0;
            for (int i = 0; i < w.cols; i++) acc += (double)get(w, t, i) * get(y, geti(plan->row_of, t, i), c);
            set(out, t, c, (float)acc);
        }
    return LM_OK;
}

static lm_status ref_ffn(lm_exec *ex, const lm_ffn_w *f, lm_tensor x, lm_tensor h, lm_tensor y) {
    for (int t = 0; t < x.rows; t++)
        for (int o = 0; o < f->gate.rows; o++)
            set(h, t, o, silu((float)dot_row(x, t, &f->gate, o)) * (float)dot_row(x, t, &f->up, o));
    for (int t = 0; t < x.rows; t++)
        for (int o = 0; o < f->down.rows; o++) set(y, t, o, (float)dot_row(h, t, &f->down, o));
    return LM_OK;
}

static lm_status ref_gated_add(lm_exec *ex, const lm_mat *g, lm_tensor x, lm_tensor y, lm_tensor out) {
    for (int t = 0; t < x.rows; t++) {
        float s = 1.0f / (1.0f + expf(-(float)dot_row(x, t, g, 0)));
        for (int c = 0; c < out.cols; c++) set(out, t, c, get(out, t, c) + s * get(y, t, c));
    }
    return LM_OK;
}

static void ref_free(lm_exec *ex) {
    ref_exec *r = (ref_exec *)ex;
    if (!r) return;
    for (size_t i = 0; i < r->allocs.n / sizeof(void *); i++) free(((void **)r->allocs.p)[i]);
    lm_buf_free(&r->allocs);
    free(r->kv_layer);
    free(r->stats);
    free(r);
}

static const lm_exec_ops ref_ops = {
    .name = "ref",
    .moe_block = 4,  // small: the op tests then see padding and several tiles per expert
    .alloc = ref_alloc,
    .upload = lm_exec_host_upload,
    .download = lm_exec_host_download,
    .host_ptr = lm_exec_host_ptr,
    .kv_alloc = ref_kv_alloc,
    .reserve = ref_reserve,
    .expert_stats = ref_expert_stats,
    .host_alloc = lm_exec_sync_host_alloc,
    .bind_weights = lm_exec_sync_bind_weights,
    .step_begin = ref_begin,
    .step_end = ref_nop,
    .upload_async = lm_exec_sync_upload_async,
    .download_async = lm_exec_sync_download_async,
    .event_record = lm_exec_sync_event_record,
    .event_wait = lm_exec_sync_event_wait,
    .event_sync = lm_exec_sync_event_sync,
    .embed = ref_embed,
    .rmsnorm = ref_rmsnorm,
    .add_rmsnorm = ref_add_rmsnorm,
    .matmul = ref_matmul,
    .rope_kv = ref_rope_kv,
    .attention = ref_attention,
    .gather = ref_gather,
    .route = ref_route,
    .align = ref_align,
    .expert_up = ref_expert_up,
    .expert_down = ref_expert_down,
    .combine = ref_combine,
    .ffn = ref_ffn,
    .gated_add = ref_gated_add,
    .free = ref_free,
};

lm_status lm_exec_ref_init(const lm_config *cfg, lm_exec **out) {
    *out = NULL;
    ref_exec *r = lm_calloc(1, sizeof *r);
    if (!r) return LM_ERR_OOM;
    r->base.ops = &ref_ops;
    r->cfg = cfg;
    r->stats = lm_calloc((size_t)cfg->n_layers * (size_t)cfg->n_experts, sizeof *r->stats);
    if (!r->stats) {
        ref_free(&r->base);
        return LM_ERR_OOM;
    }
    *out = &r->base;
    return LM_OK;
}

int lm_exec_moe_block(const char *name) {
    return !name || !strcmp(name, "cpu") ? 8 : !strcmp(name, "ref") ? 4 : 16;  // the ops tables' moe_block
}

lm_status lm_exec_init(const char *name, const lm_config *cfg, lm_pool *pool, lm_exec **out) {
    if (!strcmp(name, "cpu")) return lm_exec_cpu_init(cfg, pool, out);
    if (!strcmp(name, "ref")) return lm_exec_ref_init(cfg, out);
    if (!strcmp(name, "cuda")) return lm_exec_cuda_init(cfg, out);
    *out = NULL;
    return lm_err(LM_ERR_INVALID_ARG, "unknown executor '%.40s' (cpu, ref, cuda)", name);
}
