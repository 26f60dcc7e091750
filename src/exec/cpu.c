// CPU executor: fp32 compute over bf16/f16/f32 weights, parallel over a
// thread pool. Every output element is computed by one thread in an order
// that depends only on the shapes, so a sequence's results do not depend on
// which other sequences share its batch (batched generation == one by one).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "kernels/cpu/kernels.h"
#include "util/err.h"

typedef struct cpu_exec {
    lm_exec base;
    lm_pool *pool;
    int n_threads;
    int max_ctx, max_inter;  // sizes in the shape comments below: max_tokens, n_experts, top_k, hidden from init
    // MoE scratch, sized for the worst case (every token on one expert)
    float *router;     // [max_tokens][n_experts]
    int *sel;          // [max_tokens][top_k] chosen experts, sorted by id
    float *sel_w;      // [max_tokens][top_k] their weights
    int *sel_row;      // [max_tokens][top_k] packed row of each choice
    int *count;        // [n_experts]
    int *offset;       // [n_experts + 1]
    float *xg;         // [max_tokens*top_k][hidden] gathered inputs
    float *h1, *h3;    // [max_tokens*top_k][max_inter]
    float *y;          // [max_tokens*top_k][hidden]
    float *sh_gate;    // [max_tokens]
    float *scores;     // [n_threads][max_ctx]
} cpu_exec;

// ---------------------------------------------------------------- matmul ---

typedef struct {
    const lm_mat *W;
    const float *x;
    int n;
    float *y;
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
    lm_matmul_rows(j->x + (size_t)t0 * W->cols, t1 - t0, W->cols, W->data, W->dt, W->stride, W->cols,
                   j->y + (size_t)t0 * W->rows, W->rows, o0, o1);
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

static void cpu_matmul(lm_exec *ex, const lm_mat *W, const lm_mat *bias, const float *x, int n, float *y) {
    cpu_exec *c = (cpu_exec *)ex;
    mm_job j = {W, x, n, y, 0, 0, 0};
    plan_chunks(W->rows, n, c->n_threads, &j.row_chunk, &j.tok_chunk);
    j.n_row_chunks = (W->rows + j.row_chunk - 1) / j.row_chunk;
    int n_tok_chunks = (n + j.tok_chunk - 1) / j.tok_chunk;
    lm_pool_run(c->pool, mm_task, &j, j.n_row_chunks * n_tok_chunks);
    if (bias && bias->data) {
        for (int o = 0; o < W->rows; o++) {
            float b;
            lm_to_f32((const char *)bias->data + (size_t)o * lm_dtype_size(bias->dt), bias->dt, &b, 1);
            for (int t = 0; t < n; t++) y[(size_t)t * W->rows + o] += b;
        }
    }
}

// --------------------------------------------------------------- rmsnorm ---

typedef struct {
    const lm_mat *w;
    const float *x;
    float *y;
    int dim;
    float eps;
} norm_job;

static void norm_task(void *ctx, int i, int thread) {
    const norm_job *j = ctx;
    lm_rmsnorm(j->y + (size_t)i * j->dim, j->x + (size_t)i * j->dim, j->w->data, j->w->dt, j->dim, j->eps);
}

static void cpu_rmsnorm(lm_exec *ex, const lm_mat *w, const float *x, int n_groups, int dim, float eps,
                        float *y) {
    cpu_exec *c = (cpu_exec *)ex;
    norm_job j = {w, x, y, dim, eps};
    if ((size_t)n_groups * (size_t)dim < 65536) {  // not worth waking the pool
        for (int i = 0; i < n_groups; i++) norm_task(&j, i, 0);
        return;
    }
    lm_pool_run(c->pool, norm_task, &j, n_groups);
}

// ------------------------------------------------------------- attention ---

typedef struct {
    cpu_exec *c;
    const lm_attn_args *a;
} attn_job;

// One (token, head) pair: causal softmax attention over the sequence's cache.
static void attn_task(void *ctx, int i, int thread) {
    const attn_job *j = ctx;
    const lm_attn_args *a = j->a;
    int t = i / a->n_heads, h = i % a->n_heads;
    int hd = a->head_dim, kvd = a->n_kv_heads * hd;
    int kvh = h / (a->n_heads / a->n_kv_heads);
    int len = a->pos[t] + 1;
    const float *q = a->q + (size_t)t * a->n_heads * hd + (size_t)h * hd;
    const float *K = a->kcache + (size_t)a->seq[t] * a->seq_stride + (size_t)kvh * hd;
    const float *V = a->vcache + (size_t)a->seq[t] * a->seq_stride + (size_t)kvh * hd;
    float *s = j->c->scores + (size_t)thread * j->c->max_ctx;
    float scale = 1.0f / sqrtf((float)hd), mx = -INFINITY;
    for (int p = 0; p < len; p++) {
        s[p] = lm_dot_f32(q, K + (size_t)p * kvd, hd) * scale;
        if (s[p] > mx) mx = s[p];
    }
    float sum = 0;
    for (int p = 0; p < len; p++) {
        s[p] = expf(s[p] - mx);
        sum += s[p];
    }
    float *o = a->out + (size_t)t * a->n_heads * hd + (size_t)h * hd;
    memset(o, 0, (size_t)hd * sizeof *o);
    float inv = 1.0f / sum;
    for (int p = 0; p < len; p++) lm_axpy_f32(o, s[p] * inv, V + (size_t)p * kvd, hd);
}

static void cpu_attention(lm_exec *ex, const lm_attn_args *a) {
    cpu_exec *c = (cpu_exec *)ex;
    attn_job j = {c, a};
    lm_pool_run(c->pool, attn_task, &j, a->n * a->n_heads);
}

// ------------------------------------------------------------------- FFN ---

// A group of SwiGLU FFNs, each applied to a packed block of rows.
typedef struct {
    const lm_ffn_w *f;
    int row0, n_rows;  // packed rows [row0, row0 + n_rows)
} ffn_item;

typedef struct {
    cpu_exec *c;
    const ffn_item *items;
    int n_items;
    const float *x;   // packed inputs [rows][hidden]
    float *y;         // packed outputs [rows][hidden]
    int chunk;        // weight rows per task
    int *task_item;   // task -> item (prefix table)
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
    int inter = f->gate.rows, H = f->gate.cols, ld = j->c->max_inter;
    int o0 = local * j->chunk, o1 = o0 + j->chunk < inter ? o0 + j->chunk : inter;
    const float *x = j->x + (size_t)e->row0 * H;
    float *h1 = j->c->h1 + (size_t)e->row0 * ld, *h3 = j->c->h3 + (size_t)e->row0 * ld;
    lm_matmul_rows(x, e->n_rows, H, f->gate.data, f->gate.dt, f->gate.stride, H, h1, ld, o0, o1);
    lm_matmul_rows(x, e->n_rows, H, f->up.data, f->up.dt, f->up.stride, H, h3, ld, o0, o1);
    for (int t = 0; t < e->n_rows; t++)
        lm_swiglu(h1 + (size_t)t * ld + o0, h1 + (size_t)t * ld + o0, h3 + (size_t)t * ld + o0, o1 - o0);
}

static void down_task(void *ctx, int i, int thread) {
    const ffn_job *j = ctx;
    int local, it = task_lookup(j, i, &local);
    const ffn_item *e = &j->items[it];
    const lm_ffn_w *f = e->f;
    int H = f->down.rows, inter = f->down.cols, ld = j->c->max_inter;
    int o0 = local * j->chunk, o1 = o0 + j->chunk < H ? o0 + j->chunk : H;
    lm_matmul_rows(j->c->h1 + (size_t)e->row0 * ld, e->n_rows, ld, f->down.data, f->down.dt, f->down.stride,
                   inter, j->y + (size_t)e->row0 * H, H, o0, o1);
}

// Runs the items' gate/up (+SwiGLU) then down projections, two parallel
// regions in all, each split into chunks of weight rows across experts.
static void run_ffn_group(cpu_exec *c, const ffn_item *items, int n_items, const float *x, float *y) {
    if (n_items == 0) return;
    int task_first[n_items + 1];
    size_t total_rows = 0;
    for (int i = 0; i < n_items; i++) total_rows += (size_t)items[i].f->gate.rows;
    int chunk = rows_per_task(total_rows, c->n_threads);
    ffn_job j = {c, items, n_items, x, y, chunk, NULL, task_first};
    int n_tasks = 0;
    for (int i = 0; i < n_items; i++) {
        task_first[i] = n_tasks;
        n_tasks += (items[i].f->gate.rows + chunk - 1) / chunk;
    }
    lm_pool_run(c->pool, gate_up_task, &j, n_tasks);
    n_tasks = 0;
    for (int i = 0; i < n_items; i++) {
        task_first[i] = n_tasks;
        n_tasks += (items[i].f->down.rows + chunk - 1) / chunk;
    }
    lm_pool_run(c->pool, down_task, &j, n_tasks);
}

// softmax over the router logits, top-k (ties: lower expert id), optional
// renormalisation; choices are then sorted by expert id so the weighted sum
// runs in an order independent of the batch.
static void route(const cpu_exec *c, const lm_config *cfg, int t) {
    int E = cfg->n_experts, k = cfg->top_k;
    const float *r = c->router + (size_t)t * E;
    float mx = -INFINITY, sum = 0;
    for (int e = 0; e < E; e++) mx = r[e] > mx ? r[e] : mx;
    float p[E];
    for (int e = 0; e < E; e++) sum += (p[e] = expf(r[e] - mx));
    int *sel = c->sel + (size_t)t * k;
    float *w = c->sel_w + (size_t)t * k;
    unsigned char taken[E];
    memset(taken, 0, (size_t)E);
    float wsum = 0;
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
        taken[best] = 1;
        sel[i] = best;
        w[i] = p[best] / sum;
        wsum += w[i];
    }
    if (cfg->norm_topk)
        for (int i = 0; i < k; i++) w[i] /= wsum;
    for (int i = 1; i < k; i++)  // insertion sort by expert id
        for (int m = i; m > 0 && sel[m - 1] > sel[m]; m--) {
            int ts = sel[m]; sel[m] = sel[m - 1]; sel[m - 1] = ts;
            float tw = w[m]; w[m] = w[m - 1]; w[m - 1] = tw;
        }
}

static void cpu_ffn(lm_exec *ex, const lm_moe_args *a) {
    cpu_exec *c = (cpu_exec *)ex;
    const lm_config *cfg = a->cfg;
    const lm_layer_w *w = a->w;
    int n = a->n, H = cfg->hidden;
    if (!w->experts) {  // dense layer
        ffn_item it = {&w->dense, 0, n};
        run_ffn_group(c, &it, 1, a->x, a->out);
        return;
    }
    int E = cfg->n_experts, k = cfg->top_k;
    lm_mat router = w->router;
    cpu_matmul(ex, &router, NULL, a->x, n, c->router);
    memset(c->count, 0, (size_t)E * sizeof *c->count);
    for (int t = 0; t < n; t++) {
        route(c, cfg, t);
        for (int i = 0; i < k; i++) c->count[c->sel[(size_t)t * k + i]]++;
    }
    c->offset[0] = 0;
    for (int e = 0; e < E; e++) c->offset[e + 1] = c->offset[e] + c->count[e];
    if (a->expert_counts)
        for (int e = 0; e < E; e++) a->expert_counts[e] += (uint64_t)c->count[e];
    // Pack each expert's tokens contiguously (expert-sorted permutation).
    int fill[E];
    memcpy(fill, c->offset, (size_t)E * sizeof *fill);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) {
            int e = c->sel[(size_t)t * k + i], row = fill[e]++;
            c->sel_row[(size_t)t * k + i] = row;
            memcpy(c->xg + (size_t)row * H, a->x + (size_t)t * H, (size_t)H * sizeof(float));
        }
    ffn_item items[E + 1];
    int n_items = 0;
    for (int e = 0; e < E; e++)
        if (c->count[e]) items[n_items++] = (ffn_item){&w->experts[e], c->offset[e], c->count[e]};
    run_ffn_group(c, items, n_items, c->xg, c->y);
    // Weighted un-permute: out[t] = sum_i w_i * y[row_i] in expert-id order.
    for (int t = 0; t < n; t++) {
        float *o = a->out + (size_t)t * H;
        memset(o, 0, (size_t)H * sizeof *o);
        for (int i = 0; i < k; i++)
            lm_axpy_f32(o, c->sel_w[(size_t)t * k + i], c->y + (size_t)c->sel_row[(size_t)t * k + i] * H, H);
    }
    if (w->shared.gate.data) {
        // Shared expert on every token, scaled by sigmoid(x · shared_gate).
        ffn_item it = {&w->shared, 0, n};
        run_ffn_group(c, &it, 1, a->x, c->y);
        lm_mat g = w->shared_gate;
        lm_matmul_rows(a->x, n, H, g.data, g.dt, g.stride, H, c->sh_gate, 1, 0, 1);
        for (int t = 0; t < n; t++) {
            float s = 1.0f / (1.0f + expf(-c->sh_gate[t]));
            lm_axpy_f32(a->out + (size_t)t * H, s, c->y + (size_t)t * H, H);
        }
    }
}

// ------------------------------------------------------------ lifecycle ---

static void cpu_free(lm_exec *ex) {
    cpu_exec *c = (cpu_exec *)ex;
    if (!c) return;
    void *bufs[] = {c->router, c->sel, c->sel_w, c->sel_row, c->count, c->offset,
                    c->xg, c->h1, c->h3, c->y, c->sh_gate, c->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c);
}

static const lm_exec_ops cpu_ops = {
    .name = "cpu",
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .attention = cpu_attention,
    .ffn = cpu_ffn,
    .free = cpu_free,
};

lm_status lm_exec_cpu_init(const lm_config *cfg, lm_pool *pool, int max_tokens, int max_ctx, lm_exec **out) {
    *out = NULL;
    cpu_exec *c = lm_calloc(1, sizeof *c);
    if (!c) return LM_ERR_OOM;
    c->base.ops = &cpu_ops;
    c->pool = pool;
    c->n_threads = lm_pool_size(pool);
    c->max_ctx = max_ctx;
    int inter = cfg->moe_inter;
    if (cfg->n_moe_layers < cfg->n_layers && cfg->dense_inter > inter) inter = cfg->dense_inter;
    if (cfg->shared_inter > inter) inter = cfg->shared_inter;
    c->max_inter = inter;
    // Packed rows: top_k per token for routed experts; the dense MLP and the
    // shared expert use one row per token, which top_k >= 1 already covers.
    size_t rows = (size_t)max_tokens * (size_t)cfg->top_k, H = (size_t)cfg->hidden;
    size_t E = (size_t)cfg->n_experts, k = (size_t)cfg->top_k, mt = (size_t)max_tokens;
    c->router = lm_aligned_alloc(64, mt * E * sizeof(float));
    c->sel = lm_malloc(mt * k * sizeof(int));
    c->sel_w = lm_malloc(mt * k * sizeof(float));
    c->sel_row = lm_malloc(mt * k * sizeof(int));
    c->count = lm_malloc(E * sizeof(int));
    c->offset = lm_malloc((E + 1) * sizeof(int));
    c->xg = lm_aligned_alloc(64, rows * H * sizeof(float));
    c->h1 = lm_aligned_alloc(64, rows * (size_t)inter * sizeof(float));
    c->h3 = lm_aligned_alloc(64, rows * (size_t)inter * sizeof(float));
    c->y = lm_aligned_alloc(64, rows * H * sizeof(float));
    c->sh_gate = lm_malloc(mt * sizeof(float));
    c->scores = lm_aligned_alloc(64, (size_t)c->n_threads * (size_t)max_ctx * sizeof(float));
    if (!c->router || !c->sel || !c->sel_w || !c->sel_row || !c->count || !c->offset ||
        !c->xg || !c->h1 || !c->h3 || !c->y || !c->sh_gate || !c->scores) {
        cpu_free(&c->base);
        return lm_err(LM_ERR_OOM, "cannot allocate CPU executor scratch for %d tokens", max_tokens);
    }
    *out = &c->base;
    return LM_OK;
}
