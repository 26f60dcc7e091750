// CPU executor: fp32 compute over bf16/f16/f32 weights with the SIMD kernels
// of src/kernels/cpu, parallel over the runtime's thread pool. Every output
// element is computed by one thread in an order that depends only on the
// shapes, so a sequence's results do not depend on which other sequences
// share its batch (batched generation == one by one, bit for bit).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "kernels/cpu/kernels.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct cpu_exec {
    lm_exec base;
    const lm_config *cfg;
    lm_pool *pool;
    int n_threads;
    int max_inter;          // largest FFN intermediate size
    lm_buf allocs;          // void * of every tensor, freed with the executor
    lm_kv_layout kv;
    void **kv_layer;        // [n_layers] page pools
    uint64_t *stats;        // [n_layers][n_experts] tokens routed
    // scratch sized by reserve()
    int max_tokens, max_ctx;
    float *rope_cos, *rope_sin;  // [max_ctx][head_dim / 2]
    float *rope_inv_buf;         // [head_dim / 2] the frequencies the tables hold
    const float *rope_inv;       // rope_inv_buf once the tables are filled
    float *xg;              // [rows_max][hidden] expert inputs, gathered
    float *up;              // [rows_max][max_inter] up projection (gate goes to the caller's h)
    float *attn_scratch;    // [n_threads][attn floats]
    size_t attn_floats;
    int *attn_tasks;        // [2][max_tokens] (sequence, query block) of each attention task
    bool no_zero;           // allocating the KV pool: left untouched, so pages cost memory only once used
} cpu_exec;

#define ATTN_QBLOCK 32  // query tokens per attention task (prefill)

// ---------------------------------------------------------------- memory ---

static lm_status cpu_alloc(lm_exec *ex, lm_dtype dt, int rows, int cols, lm_tensor *out) {
    cpu_exec *c = (cpu_exec *)ex;
    size_t n = 0;
    lm_status st = lm_exec_tensor_bytes("cpu", dt, rows, cols, &n);
    if (st) return st;
    void *p = n >= ((size_t)4 << 20) ? lm_huge_alloc(n) : lm_aligned_alloc(64, n ? n : 64);
    if (!p) return LM_ERR_OOM;
    if (!c->no_zero) memset(p, 0, n);
    if (!lm_buf_put(&c->allocs, &p, sizeof p)) {
        free(p);
        return LM_ERR_OOM;
    }
    *out = (lm_tensor){p, dt, rows, cols, (size_t)cols};
    return LM_OK;
}

static lm_status cpu_kv_alloc(lm_exec *ex, const lm_kv_layout *k) {
    cpu_exec *c = (cpu_exec *)ex;
    c->kv = *k;
    c->kv_layer = lm_calloc((size_t)k->n_layers, sizeof *c->kv_layer);
    if (!c->kv_layer) return LM_ERR_OOM;
    int elems = (int)(lm_kv_page_bytes(k) / lm_dtype_size(k->dt));
    // Never read before written (attention reads positions below kv_len
    // only), so not zeroed: untouched pages cost no memory.
    c->no_zero = true;
    lm_status st = LM_OK;
    for (int l = 0; l < k->n_layers && !st; l++) {
        lm_tensor t;
        if (!(st = cpu_alloc(ex, k->dt, k->n_pages, elems, &t))) c->kv_layer[l] = t.data;
    }
    c->no_zero = false;
    return st;
}

static lm_status cpu_expert_stats(lm_exec *ex, uint64_t *out, bool reset) {
    cpu_exec *c = (cpu_exec *)ex;
    size_t n = (size_t)c->cfg->n_layers * (size_t)c->cfg->n_experts;
    if (out) memcpy(out, c->stats, n * sizeof *out);
    if (reset) memset(c->stats, 0, n * sizeof *c->stats);
    return LM_OK;
}

static lm_status cpu_reserve(lm_exec *ex, int max_tokens, int max_ctx) {
    cpu_exec *c = (cpu_exec *)ex;
    const lm_config *cfg = c->cfg;
    int half = cfg->head_dim / 2, group = cfg->n_heads / cfg->n_kv_heads;
    size_t rows = (size_t)lm_moe_rows_max(max_tokens, cfg->top_k, cfg->n_experts, c->base.ops->moe_block);
    c->max_tokens = max_tokens;
    c->max_ctx = max_ctx;
    c->attn_floats = lm_attn_scratch_floats(ATTN_QBLOCK, group, cfg->head_dim, LM_KV_PAGE);
    c->rope_cos = lm_malloc((size_t)max_ctx * half * sizeof(float));
    c->rope_sin = lm_malloc((size_t)max_ctx * half * sizeof(float));
    c->rope_inv_buf = lm_malloc((size_t)half * sizeof(float));
    c->xg = lm_aligned_alloc(64, rows * (size_t)cfg->hidden * sizeof(float));
    c->up = lm_aligned_alloc(64, rows * (size_t)c->max_inter * sizeof(float));
    c->attn_scratch = lm_aligned_alloc(64, (size_t)c->n_threads * c->attn_floats * sizeof(float));
    c->attn_tasks = lm_malloc(2 * (size_t)(max_tokens > 0 ? max_tokens : 1) * sizeof(int));  // a block has >= 1 token
    if (!c->attn_tasks || !c->rope_cos || !c->rope_sin || !c->rope_inv_buf || !c->xg || !c->up || !c->attn_scratch) return LM_ERR_OOM;
    c->rope_inv = NULL;  // the tables are filled for the first lm_rope seen
    return LM_OK;
}

static lm_status cpu_nop(lm_exec *ex) { return LM_OK; }
static lm_status cpu_begin(lm_exec *ex, uint64_t key) { return LM_OK; }

static inline float *f32_row(lm_tensor t, int r) { return (float *)t.data + (size_t)r * t.ld; }
static inline int32_t i32_at(lm_tensor t, int r, int col) { return ((const int32_t *)t.data)[(size_t)r * t.ld + col]; }

// ---------------------------------------------------------------- matmul ---

typedef struct {
    const lm_mat *W;
    const float *x;
    size_t ldx;
    int n;
    float *y;
    size_t ldy;
    int row_chunk, tok_chunk, n_row_chunks;
} mm_job;

// Weight rows are the parallel axis (decode is bandwidth bound: each thread
// streams its own slice of W once); tokens are only split when W has too few
// rows to feed every thread (routers, tiny models).
static void mm_task(void *ctx, int i, int thread) {
    const mm_job *j = ctx;
    int rc = i % j->n_row_chunks, tc = i / j->n_row_chunks;
    int o0 = rc * j->row_chunk, o1 = o0 + j->row_chunk < j->W->rows ? o0 + j->row_chunk : j->W->rows;
    int t0 = tc * j->tok_chunk, t1 = t0 + j->tok_chunk < j->n ? t0 + j->tok_chunk : j->n;
    const lm_mat *W = j->W;
    lm_matmul_rows(j->x + (size_t)t0 * j->ldx, t1 - t0, (int)j->ldx, W->data, W->dt, W->stride, W->cols,
                   j->y + (size_t)t0 * j->ldy, (int)j->ldy, o0, o1);
}

// Weight rows per parallel task: about four tasks per thread for load
// balance, at least 16 and a multiple of 16 (the kernels' row tiles).
static int rows_per_task(size_t rows, int threads) {
    size_t target = (size_t)threads * 4, chunk = (rows + target - 1) / target;
    return chunk < 16 ? 16 : (int)((chunk + 15) & ~(size_t)15);
}

static void plan_chunks(int rows, int n, int threads, int *row_chunk, int *tok_chunk) {
    int target = threads * 4;
    int rchunk = rows_per_task((size_t)rows, threads);
    int n_rc = (rows + rchunk - 1) / rchunk;
    int tchunk = n;
    if (n_rc < target && n > 1) {
        int want = (target + n_rc - 1) / n_rc;
        tchunk = (n + want - 1) / want;
        if (tchunk < 8) tchunk = 8;
    }
    *row_chunk = rchunk;
    *tok_chunk = tchunk;
}

static void matmul_rows(cpu_exec *c, const lm_mat *W, const float *x, size_t ldx, int n, float *y, size_t ldy) {
    if (n <= 0) return;
    mm_job j = {W, x, ldx, n, y, ldy, 0, 0, 0};
    plan_chunks(W->rows, n, c->n_threads, &j.row_chunk, &j.tok_chunk);
    j.n_row_chunks = (W->rows + j.row_chunk - 1) / j.row_chunk;
    int n_tok_chunks = (n + j.tok_chunk - 1) / j.tok_chunk;
    lm_pool_run(c->pool, mm_task, &j, j.n_row_chunks * n_tok_chunks);
}

static lm_status cpu_matmul(lm_exec *ex, const lm_mat *W, const lm_mat *bias, lm_tensor x, lm_tensor y) {
    cpu_exec *c = (cpu_exec *)ex;
    matmul_rows(c, W, x.data, x.ld, x.rows, y.data, y.ld);
    if (bias && bias->data) {
        float b[256];
        for (int o0 = 0; o0 < W->rows; o0 += 256) {
            int n = W->rows - o0 < 256 ? W->rows - o0 : 256;
            lm_to_f32((const char *)bias->data + (size_t)o0 * lm_dtype_size(bias->dt), bias->dt, b, (size_t)n);
            for (int t = 0; t < x.rows; t++) {
                float *yr = f32_row(y, t) + o0;
                for (int o = 0; o < n; o++) yr[o] += b[o];
            }
        }
    }
    return LM_OK;
}

// ------------------------------------------------------------ embed, norm ---

static lm_status cpu_embed(lm_exec *ex, const lm_mat *E, lm_tensor ids, lm_tensor x) {
    size_t es = lm_dtype_size(E->dt);
    for (int t = 0; t < x.rows; t++)
        lm_to_f32((const char *)E->data + (size_t)i32_at(ids, t, 0) * E->stride * es, E->dt, f32_row(x, t),
                  (size_t)E->cols);
    return LM_OK;
}

typedef struct {
    const lm_mat *w;
    lm_tensor x, d, y;
    int group, per_row;
    float eps;
} norm_job;

static void norm_task(void *ctx, int i, int thread) {
    const norm_job *j = ctx;
    int r = i / j->per_row, g = i % j->per_row;
    float *x = f32_row(j->x, r) + (size_t)g * j->group, *y = f32_row(j->y, r) + (size_t)g * j->group;
    if (j->d.data) {  // residual add first
        const float *d = f32_row(j->d, r);
        for (int k = 0; k < j->group; k++) x[k] += d[k];
        if (!j->w) return;
    }
    lm_rmsnorm(y, x, j->w->data, j->w->dt, j->group, j->eps);
}

static void run_norm(cpu_exec *c, norm_job *j, int rows) {
    int n = rows * j->per_row;
    if ((size_t)rows * (size_t)j->x.cols < 65536) {  // not worth waking the pool
        for (int i = 0; i < n; i++) norm_task(j, i, 0);
        return;
    }
    lm_pool_run(c->pool, norm_task, j, n);
}

static lm_status cpu_rmsnorm(lm_exec *ex, const lm_mat *w, lm_tensor x, int group, float eps, lm_tensor y) {
    norm_job j = {w, x, {0}, y, group, x.cols / group, eps};
    run_norm((cpu_exec *)ex, &j, x.rows);
    return LM_OK;
}

static lm_status cpu_add_rmsnorm(lm_exec *ex, lm_tensor x, lm_tensor d, const lm_mat *w, float eps, lm_tensor y) {
    norm_job j = {w, x, d, y, x.cols, 1, eps};
    run_norm((cpu_exec *)ex, &j, x.rows);
    return LM_OK;
}

// ---------------------------------------------------------- RoPE + cache ---

typedef struct {
    cpu_exec *c;
    lm_tensor q, k, v, pos, slot;
    int layer;
} rope_job;

static void rope_task(void *ctx, int t, int thread) {
    const rope_job *j = ctx;
    const cpu_exec *c = j->c;
    const lm_kv_layout *kv = &c->kv;
    int hd = kv->head_dim, half = hd / 2, p = i32_at(j->pos, t, 0), s = i32_at(j->slot, t, 0);
    const float *cs = c->rope_cos + (size_t)p * half, *sn = c->rope_sin + (size_t)p * half;
    lm_rope_rotate(f32_row(j->q, t), j->q.cols / hd, hd, cs, sn);
    float *k = f32_row(j->k, t);
    lm_rope_rotate(k, kv->n_kv_heads, hd, cs, sn);
    const float *v = f32_row(j->v, t);
    size_t es = lm_dtype_size(kv->dt), hs = (size_t)kv->page_size * hd;
    char *page = (char *)c->kv_layer[j->layer] + (size_t)(s / kv->page_size) * (lm_kv_page_bytes(kv));
    for (int h = 0; h < kv->n_kv_heads; h++) {
        size_t ko = ((size_t)h * hs + (size_t)(s % kv->page_size) * hd) * es;
        size_t vo = ko + (size_t)kv->n_kv_heads * hs * es;
        if (kv->dt == LM_DT_F32) {
            memcpy(page + ko, k + (size_t)h * hd, (size_t)hd * 4);
            memcpy(page + vo, v + (size_t)h * hd, (size_t)hd * 4);
        } else {
            uint16_t *kd = (uint16_t *)(page + ko), *vd = (uint16_t *)(page + vo);
            for (int d = 0; d < hd; d++) {
                kd[d] = lm_f32_to_bf16(k[(size_t)h * hd + d]);
                vd[d] = lm_f32_to_bf16(v[(size_t)h * hd + d]);
            }
        }
    }
}

static lm_status cpu_rope_kv(lm_exec *ex, const lm_rope *rope, lm_tensor q, lm_tensor k, lm_tensor v, lm_tensor pos,
                             lm_tensor slot, int layer) {
    cpu_exec *c = (cpu_exec *)ex;
    for (int t = 0; t < q.rows; t++)
        if (i32_at(pos, t, 0) < 0 || i32_at(pos, t, 0) >= c->max_ctx)
            return lm_err(LM_ERR_RANGE, "position %d is outside the reserved context of %d", i32_at(pos, t, 0),
                          c->max_ctx);
    // cos/sin tables of every reserved position, (re)made when the
    // frequencies change (one model per executor: once)
    int half = rope->head_dim / 2;
    if (rope->head_dim != c->kv.head_dim)
        return lm_err(LM_ERR_INVALID_ARG, "rope_kv: head_dim %d, the cache's %d", rope->head_dim, c->kv.head_dim);
    if (!c->rope_inv || memcmp(c->rope_inv, rope->inv_freq, (size_t)half * sizeof(float))) {
        memcpy(c->rope_inv_buf, rope->inv_freq, (size_t)half * sizeof(float));
        c->rope_inv = c->rope_inv_buf;
        for (int p = 0; p < c->max_ctx; p++)
            lm_rope_cos_sin(c->rope_inv, half, p, c->rope_cos + (size_t)p * half, c->rope_sin + (size_t)p * half);
    }
    rope_job j = {c, q, k, v, pos, slot, layer};
    if (q.rows < 4) {
        for (int t = 0; t < q.rows; t++) rope_task(&j, t, 0);
        return LM_OK;
    }
    lm_pool_run(c->pool, rope_task, &j, q.rows);
    return LM_OK;
}

// ------------------------------------------------------------- attention ---

typedef struct {
    cpu_exec *c;
    const lm_attn_view *v;
    int layer, n_heads, t0;
    lm_tensor q, out;
    int *task_seq, *task_blk;  // [n_tasks] (sequence, query block); kv head = i % n_kv_heads
} attn_job;

// One (sequence, KV head, block of up to ATTN_QBLOCK query tokens): all query
// heads of the group over the sequence's pages.
static void attn_task(void *ctx, int i, int thread) {
    const attn_job *j = ctx;
    const cpu_exec *c = j->c;
    const lm_kv_layout *kv = &c->kv;
    int nkv = kv->n_kv_heads, G = j->n_heads / nkv, hd = kv->head_dim;
    int kh = i % nkv, s = j->task_seq[i / nkv], b = j->task_blk[i / nkv];
    int first = i32_at(j->v->seq_start, s, 0) - j->t0, last = i32_at(j->v->seq_start, s + 1, 0) - j->t0;
    int t = first + b * ATTN_QBLOCK, n = last - t < ATTN_QBLOCK ? last - t : ATTN_QBLOCK;
    lm_attn_task a = {
        .q = f32_row(j->q, t) + (size_t)kh * G * hd,
        .q_stride = (int)j->q.ld,
        .out = f32_row(j->out, t) + (size_t)kh * G * hd,
        .out_stride = (int)j->out.ld,
        .pos = (const int32_t *)j->v->pos.data + t,
        .n_q = n,
        .kv = c->kv_layer[j->layer],
        .kv_dt = kv->dt,
        .pages = (const int32_t *)j->v->pages.data + (size_t)s * j->v->pages.ld,
        .page_size = kv->page_size,
        .n_kv_heads = nkv,
        .kv_head = kh,
        .head_dim = hd,
        .group = G,
        .scratch = c->attn_scratch + (size_t)thread * c->attn_floats,
    };
    lm_attn_paged(&a);
}

static lm_status cpu_attention(lm_exec *ex, const lm_attn_view *v, int layer, int n_heads, lm_tensor q,
                               lm_tensor out) {
    cpu_exec *c = (cpu_exec *)ex;
    int n_blocks = 0, t0 = i32_at(v->seq_start, 0, 0);
    for (int s = 0; s < v->n_seqs; s++)
        n_blocks += (i32_at(v->seq_start, s + 1, 0) - i32_at(v->seq_start, s, 0) + ATTN_QBLOCK - 1) / ATTN_QBLOCK;
    if (q.rows > c->max_tokens)
        return lm_err(LM_ERR_INVALID_ARG, "attention: %d tokens, reserved for %d", q.rows, c->max_tokens);
    int *seq = c->attn_tasks, *blk = seq + n_blocks, k = 0;
    for (int s = 0; s < v->n_seqs; s++) {
        int nt = i32_at(v->seq_start, s + 1, 0) - i32_at(v->seq_start, s, 0);
        for (int b = 0; b * ATTN_QBLOCK < nt; b++) seq[k] = s, blk[k++] = b;
    }
    attn_job j = {c, v, layer, n_heads, t0, q, out, seq, blk};
    lm_pool_run(c->pool, attn_task, &j, n_blocks * c->kv.n_kv_heads);
    return LM_OK;
}

static lm_status cpu_gather(lm_exec *ex, lm_tensor x, lm_tensor idx, lm_tensor y) {
    for (int i = 0; i < y.rows; i++) memcpy(f32_row(y, i), f32_row(x, i32_at(idx, i, 0)), (size_t)x.cols * sizeof(float));
    return LM_OK;
}

// ------------------------------------------------------------------- MoE ---

// softmax over the router logits, top-k (ties: lower expert id), optional
// renormalisation; choices then sorted by expert id so the weighted sum runs
// in an order independent of the batch.
static lm_status cpu_route(lm_exec *ex, lm_tensor logits, int k, bool norm_topk, lm_tensor sel, lm_tensor w) {
    int E = logits.cols;
    if (E < 1 || k < 1 || k > E) return lm_err(LM_ERR_INVALID_ARG, "route: top-%d of %d experts", k, E);
    float p[E];
    unsigned char taken[E];
    for (int t = 0; t < logits.rows; t++) {
        const float *r = f32_row(logits, t);
        float mx = -INFINITY, sum = 0, wsum = 0;
        for (int e = 0; e < E; e++) mx = r[e] > mx ? r[e] : mx;
        for (int e = 0; e < E; e++) sum += (p[e] = expf(r[e] - mx));
        memset(taken, 0, (size_t)E);
        int32_t *s = (int32_t *)sel.data + (size_t)t * sel.ld;
        float *wt = f32_row(w, t);
        for (int i = 0; i < k; i++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
            taken[best] = 1;
            wsum += p[best] / sum;
        }
        for (int e = 0, i = 0; e < E; e++)
            if (taken[e]) {
                s[i] = e;
                wt[i++] = p[e] / sum;
            }
        if (norm_topk)
            for (int i = 0; i < k; i++) wt[i] /= wsum;
    }
    return LM_OK;
}

static lm_status cpu_align(lm_exec *ex, lm_tensor sel, int E, int layer, lm_moe_plan *plan) {
    cpu_exec *c = (cpu_exec *)ex;
    int n = sel.rows, k = sel.cols, B = plan->block;
    int32_t *counts = plan->counts.data, *token_of = plan->token_of.data, *tiles = plan->tiles.data;
    memset(counts, 0, (size_t)E * sizeof *counts);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) counts[i32_at(sel, t, i)]++;
    int fill[E], row = 0, n_tiles = 0;
    for (int e = 0; e < E; e++) {
        fill[e] = row;
        for (int b = 0; b < (counts[e] + B - 1) / B; b++) {
            tiles[2 * n_tiles] = e;
            tiles[2 * n_tiles++ + 1] = row + b * B;
        }
        int padded = (counts[e] + B - 1) / B * B;
        for (int r = row + counts[e]; r < row + padded; r++) token_of[r] = -1;
        row += padded;
        if (layer >= 0) c->stats[(size_t)layer * E + e] += (uint64_t)counts[e];
    }
    for (int t = 0; t < n; t++)  // each expert's rows in token order
        for (int i = 0; i < k; i++) {
            int r = fill[i32_at(sel, t, i)]++;
            ((int32_t *)plan->row_of.data)[(size_t)t * plan->row_of.ld + i] = r;
            token_of[r] = t;
        }
    *(int32_t *)plan->n_tiles.data = n_tiles;
    return LM_OK;
}

// A group of SwiGLU FFNs, each applied to a packed block of rows.
typedef struct {
    const lm_ffn_w *f;
    int row0, n_rows;  // packed rows [row0, row0 + n_rows)
} ffn_item;

typedef struct {
    cpu_exec *c;
    const ffn_item *items;
    int n_items;
    const float *x;   // inputs [rows][ldx]
    size_t ldx;
    float *h;         // intermediate [rows][ldh] (gate, then silu(gate) * up)
    size_t ldh;
    float *y;         // outputs [rows][ldy]
    size_t ldy;
    int chunk;        // weight rows per task
    int *task_first;  // first task of each item
} ffn_job;

static int task_lookup(const ffn_job *j, int i, int *local) {
    int lo = 0, hi = j->n_items - 1;
    while (lo < hi) {  // last item whose first task <= i
        int mid = (lo + hi + 1) / 2;
        if (j->task_first[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    *local = i - j->task_first[lo];
    return lo;
}

static void gate_up_task(void *ctx, int i, int thread) {
    const ffn_job *j = ctx;
    int local, it = task_lookup(j, i, &local);
    const ffn_item *e = &j->items[it];
    const lm_ffn_w *f = e->f;
    int inter = f->gate.rows, H = f->gate.cols;
    int o0 = local * j->chunk, o1 = o0 + j->chunk < inter ? o0 + j->chunk : inter;
    const float *x = j->x + (size_t)e->row0 * j->ldx;
    float *h1 = j->h + (size_t)e->row0 * j->ldh, *h3 = j->c->up + (size_t)e->row0 * j->c->max_inter;
    lm_matmul_rows(x, e->n_rows, (int)j->ldx, f->gate.data, f->gate.dt, f->gate.stride, H, h1, (int)j->ldh, o0, o1);
    lm_matmul_rows(x, e->n_rows, (int)j->ldx, f->up.data, f->up.dt, f->up.stride, H, h3, j->c->max_inter, o0, o1);
    for (int t = 0; t < e->n_rows; t++)
        lm_swiglu(h1 + (size_t)t * j->ldh + o0, h1 + (size_t)t * j->ldh + o0, h3 + (size_t)t * j->c->max_inter + o0,
                  o1 - o0);
}

static void down_task(void *ctx, int i, int thread) {
    const ffn_job *j = ctx;
    int local, it = task_lookup(j, i, &local);
    const ffn_item *e = &j->items[it];
    const lm_ffn_w *f = e->f;
    int H = f->down.rows, inter = f->down.cols;
    int o0 = local * j->chunk, o1 = o0 + j->chunk < H ? o0 + j->chunk : H;
    lm_matmul_rows(j->h + (size_t)e->row0 * j->ldh, e->n_rows, (int)j->ldh, f->down.data, f->down.dt, f->down.stride,
                   inter, j->y + (size_t)e->row0 * j->ldy, (int)j->ldy, o0, o1);
}

// Gate/up (+SwiGLU) or down projections of the items: one parallel region,
// split into chunks of weight rows across items.
static void run_ffn(ffn_job *j, bool up) {
    if (j->n_items == 0) return;
    size_t total_rows = 0;
    for (int i = 0; i < j->n_items; i++) total_rows += (size_t)(up ? j->items[i].f->gate.rows : j->items[i].f->down.rows);
    j->chunk = rows_per_task(total_rows, j->c->n_threads);
    int n_tasks = 0;
    for (int i = 0; i < j->n_items; i++) {
        j->task_first[i] = n_tasks;
        n_tasks += ((up ? j->items[i].f->gate.rows : j->items[i].f->down.rows) + j->chunk - 1) / j->chunk;
    }
    lm_pool_run(j->c->pool, up ? gate_up_task : down_task, j, n_tasks);
}

// The plan's experts as items: expert e's real rows are the first counts[e]
// rows of its first tile; padding rows are skipped.
static int plan_items(const lm_ffn_w *experts, const lm_moe_plan *plan, ffn_item *items) {
    int n = 0, n_tiles = *(const int32_t *)plan->n_tiles.data;
    const int32_t *tiles = plan->tiles.data, *counts = plan->counts.data;
    for (int i = 0; i < n_tiles; i++) {
        int e = tiles[2 * i];
        if (i > 0 && tiles[2 * (i - 1)] == e) continue;  // a later tile of the same expert
        items[n++] = (ffn_item){&experts[e], tiles[2 * i + 1], counts[e]};
    }
    return n;
}

static lm_status cpu_expert_up(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *plan, lm_tensor x,
                               lm_tensor h) {
    cpu_exec *c = (cpu_exec *)ex;
    int E = c->cfg->n_experts, H = x.cols;
    ffn_item items[E];
    int task_first[E + 1], n = plan_items(experts, plan, items);
    const int32_t *token_of = plan->token_of.data;
    for (int i = 0; i < n; i++)  // gather each expert's inputs into consecutive rows
        for (int r = items[i].row0; r < items[i].row0 + items[i].n_rows; r++)
            memcpy(c->xg + (size_t)r * H, f32_row(x, token_of[r]), (size_t)H * sizeof(float));
    ffn_job j = {c, items, n, c->xg, (size_t)H, h.data, h.ld, NULL, 0, 0, task_first};
    run_ffn(&j, true);
    return LM_OK;
}

static lm_status cpu_expert_down(lm_exec *ex, const lm_ffn_w *experts, const lm_moe_plan *plan, lm_tensor h,
                                 lm_tensor y) {
    cpu_exec *c = (cpu_exec *)ex;
    int E = c->cfg->n_experts;
    ffn_item items[E];
    int task_first[E + 1], n = plan_items(experts, plan, items);
    ffn_job j = {c, items, n, NULL, 0, h.data, h.ld, y.data, y.ld, 0, task_first};
    run_ffn(&j, false);
    return LM_OK;
}

static lm_status cpu_combine(lm_exec *ex, const lm_moe_plan *plan, lm_tensor w, lm_tensor y, lm_tensor out) {
    int k = w.cols, H = out.cols;
    for (int t = 0; t < out.rows; t++) {  // sum_i w_i * y[row_i], choices in expert-id order
        float *o = f32_row(out, t);
        memset(o, 0, (size_t)H * sizeof *o);
        for (int i = 0; i < k; i++) lm_axpy_f32(o, f32_row(w, t)[i], f32_row(y, i32_at(plan->row_of, t, i)), H);
    }
    return LM_OK;
}

static lm_status cpu_ffn(lm_exec *ex, const lm_ffn_w *f, lm_tensor x, lm_tensor h, lm_tensor y) {
    cpu_exec *c = (cpu_exec *)ex;
    ffn_item it = {f, 0, x.rows};
    int task_first[2];
    ffn_job j = {c, &it, 1, x.data, x.ld, h.data, h.ld, y.data, y.ld, 0, task_first};
    run_ffn(&j, true);
    run_ffn(&j, false);
    return LM_OK;
}

static lm_status cpu_gated_add(lm_exec *ex, const lm_mat *g, lm_tensor x, lm_tensor y, lm_tensor out) {
    for (int t = 0; t < x.rows; t++) {
        float dot;
        lm_matmul_rows(f32_row(x, t), 1, (int)x.ld, g->data, g->dt, g->stride, g->cols, &dot, 1, 0, 1);
        lm_axpy_f32(f32_row(out, t), 1.0f / (1.0f + expf(-dot)), f32_row(y, t), out.cols);
    }
    return LM_OK;
}

// ------------------------------------------------------------ lifecycle ---

static void cpu_free(lm_exec *ex) {
    cpu_exec *c = (cpu_exec *)ex;
    if (!c) return;
    for (size_t i = 0; i < c->allocs.n / sizeof(void *); i++) free(((void **)c->allocs.p)[i]);
    lm_buf_free(&c->allocs);
    void *bufs[] = {c->kv_layer, c->stats, c->rope_cos,     c->rope_sin,
                    c->rope_inv_buf, c->xg, c->up, c->attn_scratch, c->attn_tasks};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c);
}

static const lm_exec_ops cpu_ops = {
    .name = "cpu",
    .moe_block = 8,
    .alloc = cpu_alloc,
    .upload = lm_exec_host_upload,
    .download = lm_exec_host_download,
    .host_ptr = lm_exec_host_ptr,
    .kv_alloc = cpu_kv_alloc,
    .reserve = cpu_reserve,
    .expert_stats = cpu_expert_stats,
    .host_alloc = lm_exec_sync_host_alloc,
    .bind_weights = lm_exec_sync_bind_weights,
    .step_begin = cpu_begin,
    .step_end = cpu_nop,
    .upload_async = lm_exec_sync_upload_async,
    .download_async = lm_exec_sync_download_async,
    .event_record = lm_exec_sync_event_record,
    .event_wait = lm_exec_sync_event_wait,
    .event_sync = lm_exec_sync_event_sync,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .add_rmsnorm = cpu_add_rmsnorm,
    .matmul = cpu_matmul,
    .rope_kv = cpu_rope_kv,
    .attention = cpu_attention,
    .gather = cpu_gather,
    .route = cpu_route,
    .align = cpu_align,
    .expert_up = cpu_expert_up,
    .expert_down = cpu_expert_down,
    .combine = cpu_combine,
    .ffn = cpu_ffn,
    .gated_add = cpu_gated_add,
    .free = cpu_free,
};

lm_status lm_exec_cpu_init(const lm_config *cfg, lm_pool *pool, lm_exec **out) {
    *out = NULL;
    cpu_exec *c = lm_calloc(1, sizeof *c);
    if (!c) return LM_ERR_OOM;
    c->base.ops = &cpu_ops;
    c->cfg = cfg;
    c->pool = pool;
    c->n_threads = lm_pool_size(pool);
    int inter = cfg->moe_inter;
    if (cfg->n_moe_layers < cfg->n_layers && cfg->dense_inter > inter) inter = cfg->dense_inter;
    if (cfg->shared_inter > inter) inter = cfg->shared_inter;
    c->max_inter = inter;
    c->stats = lm_calloc((size_t)cfg->n_layers * (size_t)cfg->n_experts, sizeof *c->stats);
    if (!c->stats) {
        cpu_free(&c->base);
        return LM_ERR_OOM;
    }
    *out = &c->base;
    return LM_OK;
}
