// Model loading: binds every tensor the descriptor needs, by its Hugging Face
// name, with shape and dtype checks, to lm_mat views into the mmap'ed files
// (or into random weights for synthetic models). One enumeration of the
// layout (bind_all) serves both sources so they cannot drift apart.
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/cpu/kernels.h"
#include "util/err.h"
#include "util/file.h"
#include "util/hash.h"

typedef struct binder binder;
struct binder {
    // Fills *m for tensor `name` of shape [rows][cols] (vec: 1-D [cols]).
    lm_status (*get)(binder *b, const char *name, int rows, int cols, bool vec, lm_mat *m);
    lm_model *model;
    const char *where;  // directory or config path, for messages
    uint8_t *used_tensor;  // [lm_st_count]: checkpoint tensors bound so far
    // synthetic source
    uint8_t *base;
    size_t used;
    bool counting;
    uint64_t seed;
};

size_t lm_mat_bytes(const lm_mat *m) {
    return (size_t)m->rows * (size_t)m->cols * lm_dtype_size(m->dt);
}

static void account(lm_model *md, const lm_mat *m) {
    md->n_params += (uint64_t)m->rows * (uint64_t)m->cols;
    if (m->dt <= LM_DT_BF16) md->bytes_dt[m->dt] += lm_mat_bytes(m);
}

static lm_status get_checkpoint(binder *b, const char *name, int rows, int cols, bool vec, lm_mat *m) {
    const lm_st_tensor *t = lm_st_find(b->model->st, name);
    if (!t) return lm_err(LM_ERR_NOT_FOUND, "%s: missing tensor '%s'", b->where, name);
    const char *file = lm_st_file_path(b->model->st, t->file);
    bool ok = vec ? (t->ndim == 1 && t->shape[0] == cols)
                  : (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        char got[128] = "", exp[64];
        for (int i = 0; i < t->ndim && strlen(got) < 100; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        if (vec) snprintf(exp, sizeof exp, "[%d]", cols);
        else snprintf(exp, sizeof exp, "[%d, %d]", rows, cols);
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected %s from config.json", file,
                      name, got, exp);
    }
    if (t->dtype == LM_DT_OTHER)
        return lm_err(LM_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (supported: BF16, F16, F32)", file,
                      name, t->dtype_str);
    *m = (lm_mat){t->data, NULL, t->dtype, rows, cols, (size_t)cols};
    b->used_tensor[t - lm_st_get(b->model->st, 0)] = 1;
    return LM_OK;
}

typedef struct {
    uint16_t *dst;
    size_t n;
    uint64_t seed;
    float scale;  // uniform in [-scale, scale]; 0 => all ones (norm weights)
} fill_job;

#define FILL_CHUNK (1u << 20)

static void fill_task(void *ctx, int i, int thread) {
    const fill_job *j = ctx;
    size_t lo = (size_t)i * FILL_CHUNK, hi = lo + FILL_CHUNK < j->n ? lo + FILL_CHUNK : j->n;
    if (j->scale == 0) {
        for (size_t k = lo; k < hi; k++) j->dst[k] = 0x3f80;  // 1.0 in bf16
        return;
    }
    for (size_t k = lo; k < hi; k += 4) {
        uint64_t r = lm_mix64(j->seed ^ (k * 0x2545f4914f6cdd1dull));
        for (size_t q = 0; q < 4 && k + q < hi; q++) {
            float u = (float)((r >> (16 * q)) & 0xffff) * (2.0f / 65535.0f) - 1.0f;
            j->dst[k + q] = lm_f32_to_bf16(u * j->scale);
        }
    }
}

static lm_status get_synthetic(binder *b, const char *name, int rows, int cols, bool vec, lm_mat *m) {
    size_t bytes = (size_t)rows * (size_t)cols * 2;
    size_t off = b->used;
    b->used += (bytes + 63) & ~(size_t)63;
    if (b->counting) {
        *m = (lm_mat){NULL, NULL, LM_DT_BF16, rows, cols, (size_t)cols};
        return LM_OK;
    }
    uint16_t *dst = (uint16_t *)(b->base + off);
    uint64_t h = b->seed;
    for (const char *c = name; *c; c++) h = lm_mix64(h ^ (uint8_t)*c);
    bool norm = vec || strstr(name, "norm") != NULL;
    // std 1/sqrt(fan_in) keeps activations O(1) through the layers;
    // embeddings get unit scale like a trained model's.
    float scale = norm ? 0.0f : (strstr(name, "embed") ? 1.7f : 1.7f / sqrtf((float)cols));
    fill_job job = {dst, (size_t)rows * (size_t)cols, h, scale};
    lm_pool_run(b->model->pool, fill_task, &job, (int)((job.n + FILL_CHUNK - 1) / FILL_CHUNK));
    *m = (lm_mat){dst, NULL, LM_DT_BF16, rows, cols, (size_t)cols};
    return LM_OK;
}

// Keeps a copy of a tensor name for the model's lifetime (messages that
// name a tensor after the checkpoint files are closed).
static const char *intern_name(lm_model *md, const char *name) {
    if (md->n_names == md->cap_names) {
        int cap = md->cap_names ? md->cap_names * 2 : 256;
        char **v = realloc(md->names, (size_t)cap * sizeof *v);
        if (!v) return NULL;
        md->names = v;
        md->cap_names = cap;
    }
    char *c = lm_strdup(name);
    if (c) md->names[md->n_names++] = c;
    return c;
}

#define BIND(mat, rows, cols, vec, ...)                                      \
    do {                                                                     \
        snprintf(name, sizeof name, __VA_ARGS__);                            \
        lm_status _st = b->get(b, name, (rows), (cols), (vec), &(mat));      \
        if (_st) return _st;                                                 \
        if (!b->counting && !((mat).name = intern_name(md, name)))           \
            return lm_err(LM_ERR_OOM, "out of memory");                      \
        account(md, &(mat));                                                 \
    } while (0)

static lm_status bind_ffn(binder *b, lm_ffn_w *f, int inter, const char *prefix, const char *const nm[3]) {
    lm_model *md = b->model;
    int H = md->cfg.hidden;
    char name[256];
    BIND(f->gate, inter, H, false, "%s.%s.weight", prefix, nm[0]);
    BIND(f->up, inter, H, false, "%s.%s.weight", prefix, nm[1]);
    BIND(f->down, H, inter, false, "%s.%s.weight", prefix, nm[2]);
    return LM_OK;
}

static lm_status bind_all(binder *b) {
    lm_model *md = b->model;
    const lm_config *c = &md->cfg;
    int H = c->hidden, hd = c->head_dim, q = c->n_heads * hd, kv = c->n_kv_heads * hd;
    char name[256], prefix[200];
    static const char *const hf_names[3] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const mixtral_names[3] = {"w1", "w3", "w2"};
    bool mixtral = c->arch == LM_ARCH_MIXTRAL;
    const char *moe = mixtral ? "block_sparse_moe" : "mlp";

    BIND(md->embed, c->vocab, H, false, "model.embed_tokens.weight");
    BIND(md->final_norm, 1, H, true, "model.norm.weight");
    if (c->tie_embeddings) md->lm_head = md->embed;
    else BIND(md->lm_head, c->vocab, H, false, "lm_head.weight");

    for (int l = 0; l < c->n_layers; l++) {
        lm_layer_w *L = &md->layers[l];
        const char *p = prefix;
        snprintf(prefix, sizeof prefix, "model.layers.%d", l);
        BIND(L->attn_norm, 1, H, true, "%s.input_layernorm.weight", p);
        BIND(L->ffn_norm, 1, H, true, "%s.post_attention_layernorm.weight", p);
        BIND(L->wq, q, H, false, "%s.self_attn.q_proj.weight", p);
        BIND(L->wk, kv, H, false, "%s.self_attn.k_proj.weight", p);
        BIND(L->wv, kv, H, false, "%s.self_attn.v_proj.weight", p);
        BIND(L->wo, H, q, false, "%s.self_attn.o_proj.weight", p);
        if (c->qkv_bias) {
            BIND(L->bq, 1, q, true, "%s.self_attn.q_proj.bias", p);
            BIND(L->bk, 1, kv, true, "%s.self_attn.k_proj.bias", p);
            BIND(L->bv, 1, kv, true, "%s.self_attn.v_proj.bias", p);
        }
        if (c->qk_norm != LM_QK_NORM_NONE) {
            bool full = c->qk_norm == LM_QK_NORM_FULL;
            BIND(L->q_norm, 1, full ? q : hd, true, "%s.self_attn.q_norm.weight", p);
            BIND(L->k_norm, 1, full ? kv : hd, true, "%s.self_attn.k_norm.weight", p);
        }
        if (c->layer_moe[l]) {
            char ep[256];
            BIND(L->router, c->n_experts, H, false, "%s.%s.gate.weight", p, moe);
            L->experts = md->expert_mem + (size_t)l * (size_t)c->n_experts;
            for (int e = 0; e < c->n_experts; e++) {
                snprintf(ep, sizeof ep, "%s.%s.experts.%d", p, moe, e);
                lm_status st = bind_ffn(b, &L->experts[e], c->moe_inter, ep, mixtral ? mixtral_names : hf_names);
                if (st) return st;
            }
            if (c->shared_inter > 0) {
                snprintf(ep, sizeof ep, "%s.mlp.shared_expert", p);
                lm_status st = bind_ffn(b, &L->shared, c->shared_inter, ep, hf_names);
                if (st) return st;
                BIND(L->shared_gate, 1, H, false, "%s.mlp.shared_expert_gate.weight", p);
            }
        } else {
            char ep[256];
            snprintf(ep, sizeof ep, "%s.mlp", p);
            lm_status st = bind_ffn(b, &L->dense, c->dense_inter, ep, hf_names);
            if (st) return st;
        }
    }
    // Active parameters: everything except the experts a token does not visit.
    uint64_t per_expert = 3ull * (uint64_t)c->moe_inter * (uint64_t)H;
    md->n_params_active =
        md->n_params - (uint64_t)c->n_moe_layers * (uint64_t)(c->n_experts - c->top_k) * per_expert;
    return LM_OK;
}

lm_model_params lm_model_default_params(void) {
    return (lm_model_params){.runtime = NULL, .n_threads = 0, .weights = LM_WEIGHTS_AUTO};
}

lm_synthetic_params lm_synthetic_default_params(void) {
    return (lm_synthetic_params){.config_path = NULL, .n_layers = 0, .seed = 1234, .shapes_only = false};
}

static lm_status model_alloc(lm_model **out, const lm_model_params *params) {
    lm_model *md = lm_calloc(1, sizeof *md);
    if (!md) return LM_ERR_OOM;
    md->rt = params ? params->runtime : NULL;
    if (!md->rt) {
        lm_runtime_params rp = lm_runtime_default_params();
        rp.n_threads = params ? params->n_threads : 0;
        lm_status st = lm_runtime_init(&rp, &md->own_rt);
        if (st) {
            free(md);
            return st;
        }
        md->rt = md->own_rt;
    }
    md->pool = lm_runtime_pool(md->rt);
    *out = md;
    return LM_OK;
}

static lm_status model_layers_alloc(lm_model *md) {
    const lm_config *c = &md->cfg;
    md->layers = lm_calloc((size_t)c->n_layers, sizeof *md->layers);
    md->expert_mem = lm_calloc((size_t)c->n_layers * (size_t)c->n_experts, sizeof *md->expert_mem);
    return md->layers && md->expert_mem ? LM_OK : LM_ERR_OOM;
}

// Every weight matrix of the model, for passes that move them.
static int all_mats(lm_model *md, lm_mat **out, int cap) {
    const lm_config *c = &md->cfg;
    int n = 0;
#define PUT(m) \
    if ((m).data && n < cap) out[n++] = &(m)
    PUT(md->embed);
    PUT(md->final_norm);
    PUT(md->lm_head);
    for (int l = 0; l < c->n_layers; l++) {
        lm_layer_w *L = &md->layers[l];
        lm_mat *m[] = {&L->attn_norm, &L->ffn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk, &L->bv,
                       &L->q_norm, &L->k_norm, &L->router, &L->dense.gate, &L->dense.up, &L->dense.down,
                       &L->shared.gate, &L->shared.up, &L->shared.down, &L->shared_gate};
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) PUT(*m[i]);
        for (int e = 0; L->experts && e < c->n_experts; e++) {
            PUT(L->experts[e].gate);
            PUT(L->experts[e].up);
            PUT(L->experts[e].down);
        }
    }
#undef PUT
    return n;
}

typedef struct {
    lm_mat **mats;
    uint8_t *dst;
    size_t *off;
} copy_job;

static void copy_task(void *ctx, int i, int thread) {
    const copy_job *j = ctx;
    const lm_mat *m = j->mats[i];
    memcpy(j->dst + j->off[i], m->data, lm_mat_bytes(m));
}

// Moves the weights from the mmap'ed files into one huge-page-backed block
// and closes the files. A tied lm_head keeps sharing the embedding's copy.
static lm_status copy_weights(lm_model *md, const char *dir) {
    int cap = 64 + md->cfg.n_layers * (32 + 3 * md->cfg.n_experts);
    lm_mat **mats = lm_malloc((size_t)cap * sizeof *mats);
    size_t *off = lm_malloc((size_t)cap * sizeof *off);
    if (!mats || !off) {
        free(mats);
        free(off);
        return LM_ERR_OOM;
    }
    int n = all_mats(md, mats, cap), k = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (mats[i] == &md->lm_head && md->cfg.tie_embeddings) continue;
        mats[k] = mats[i];
        off[k++] = total;
        total += (lm_mat_bytes(mats[i]) + 63) & ~(size_t)63;
    }
    char sz[32];
    md->owned = lm_huge_alloc(total);
    if (!md->owned) {
        free(mats);
        free(off);
        return lm_err(LM_ERR_OOM, "%s: cannot allocate %s to hold the weights (use --mmap)", dir,
                      lm_format_bytes((double)total, sz, sizeof sz));
    }
    copy_job j = {mats, md->owned, off};
    lm_pool_run(md->pool, copy_task, &j, k);
    for (int i = 0; i < k; i++) mats[i]->data = (uint8_t *)md->owned + off[i];
    if (md->cfg.tie_embeddings) md->lm_head = md->embed;
    free(mats);
    free(off);
    lm_st_close(md->st);
    md->st = NULL;
    return LM_OK;
}

// Counts the checkpoint tensors no weight was bound to (a config with fewer
// layers than the checkpoint, a different architecture's extra tensors).
static lm_status note_unused(lm_model *md, const uint8_t *used) {
    for (int i = 0; i < lm_st_count(md->st); i++) {
        if (used[i]) continue;
        if (!md->n_unused++ && !(md->unused_example = lm_strdup(lm_st_get(md->st, i)->name))) return LM_ERR_OOM;
    }
    return LM_OK;
}

lm_status lm_model_load(const char *dir, const lm_model_params *params, lm_model **out) {
    *out = NULL;
    lm_cpu_kernels_init(-1);
    lm_status st = lm_check_dir(dir);
    if (st) return st;
    char *path = lm_path_join(dir, "config.json");
    if (!path) return LM_ERR_OOM;
    struct stat sb;
    if (lstat(path, &sb) != 0 && errno == ENOENT) {
        free(path);
        return lm_err(LM_ERR_IO, "%s: no config.json (is this a Hugging Face checkpoint directory?)", dir);
    }
    lm_model *md;
    if ((st = model_alloc(&md, params))) {
        free(path);
        return st;
    }
    st = lm_config_load(path, &md->cfg);
    free(path);
    if (!st && !(path = lm_path_join(dir, "generation_config.json"))) st = LM_ERR_OOM;
    else if (!st) {
        if (lstat(path, &sb) == 0 || errno != ENOENT) st = lm_config_load_generation(path, &md->cfg);
        free(path);
    }
    if (st || (st = lm_st_open_dir(dir, &md->st)) || (st = model_layers_alloc(md))) {
        lm_model_free(md);
        return st;
    }
    binder b = {.get = get_checkpoint, .model = md, .where = dir};
    b.used_tensor = lm_calloc((size_t)lm_st_count(md->st) + 1, 1);
    if (!b.used_tensor || (st = bind_all(&b)) || (st = note_unused(md, b.used_tensor))) {
        free(b.used_tensor);
        lm_model_free(md);
        return b.used_tensor ? st : LM_ERR_OOM;
    }
    free(b.used_tensor);
    lm_weights_mode mode = params ? params->weights : LM_WEIGHTS_AUTO;
    uint64_t bytes = md->bytes_dt[0] + md->bytes_dt[1] + md->bytes_dt[2];
    uint64_t avail = lm_mem_available();
    if (mode == LM_WEIGHTS_AUTO) mode = (double)bytes <= 0.9 * (double)avail ? LM_WEIGHTS_COPY : LM_WEIGHTS_MMAP;
    else if (mode == LM_WEIGHTS_COPY && (st = lm_mem_check(bytes, 0.05, "copying the weights"))) {
        lm_model_free(md);
        lm_err_wrap(st, "%s", dir);
        return lm_err_append(st, " (use mmap: --mmap)");
    }
    if (mode == LM_WEIGHTS_COPY && (st = copy_weights(md, dir))) {
        // auto: "copy when it fits"; it did not after all, so run from the files
        bool fallback = (params ? params->weights : LM_WEIGHTS_AUTO) == LM_WEIGHTS_AUTO && st == LM_ERR_OOM && md->st;
        if (!fallback) {
            lm_model_free(md);
            return st;
        }
        lm_err_clear();
    }
    *out = md;
    return LM_OK;
}

lm_status lm_model_load_synthetic(const lm_synthetic_params *sp, const lm_model_params *params,
                                  lm_model **out) {
    *out = NULL;
    lm_cpu_kernels_init(-1);
    if (!sp || !sp->config_path) return lm_err(LM_ERR_INVALID_ARG, "synthetic model needs a config.json path");
    lm_model *md;
    lm_status st = model_alloc(&md, params);
    if (st) return st;
    if ((st = lm_config_load(sp->config_path, &md->cfg))) {
        lm_model_free(md);
        return st;
    }
    if (sp->n_layers > md->cfg.n_layers) {
        int have = md->cfg.n_layers;
        lm_model_free(md);
        return lm_err(LM_ERR_INVALID_ARG, "%s: asked for %d layers but the config has %d", sp->config_path,
                      sp->n_layers, have);
    }
    lm_config_truncate(&md->cfg, sp->n_layers);
    if ((st = model_layers_alloc(md))) {
        lm_model_free(md);
        return st;
    }
    binder b = {.get = get_synthetic, .model = md, .where = sp->config_path, .counting = true, .seed = sp->seed};
    bind_all(&b);  // sizing pass: cannot fail
    size_t total = b.used;
    if (sp->shapes_only) {
        md->shapes_only = true;
        *out = md;
        return LM_OK;
    }
    char what[64 + 4096];
    snprintf(what, sizeof what, "%s: synthetic weights for %d layers", sp->config_path, md->cfg.n_layers);
    if ((st = lm_mem_check(total, 0.05, what))) {
        lm_model_free(md);
        return lm_err_append(st, " (keep fewer layers with CONFIG.json:LAYERS)");
    }
    // Huge pages also make the fill itself fast: filling gigabytes of 4 KiB
    // pages is dominated by page faults.
    md->owned = lm_huge_alloc(total);
    if (!md->owned) {
        lm_model_free(md);
        char sz[32];
        return lm_err(LM_ERR_OOM, "%s: cannot allocate %s of synthetic weights", sp->config_path,
                      lm_format_bytes((double)total, sz, sizeof sz));
    }
    md->n_params = 0;
    memset(md->bytes_dt, 0, sizeof md->bytes_dt);
    b.counting = false;
    b.used = 0;
    b.base = md->owned;
    if ((st = bind_all(&b))) {  // only name copies can fail here
        lm_model_free(md);
        return st;
    }
    *out = md;
    return LM_OK;
}

void lm_model_free(lm_model *md) {
    if (!md) return;
    lm_runtime_free(md->own_rt);
    lm_st_close(md->st);
    free(md->owned);
    free(md->layers);
    free(md->expert_mem);
    for (int i = 0; i < md->n_names; i++) free(md->names[i]);
    free(md->names);
    free(md->unused_example);
    lm_config_free(&md->cfg);
    free(md);
}

void lm_model_get_info(const lm_model *md, lm_model_info *o) {
    const lm_config *c = &md->cfg;
    memset(o, 0, sizeof *o);
    o->architecture = c->arch_name;
    o->n_layers = c->n_layers;
    o->n_moe_layers = c->n_moe_layers;
    o->hidden = c->hidden;
    o->vocab = c->vocab;
    o->n_heads = c->n_heads;
    o->n_kv_heads = c->n_kv_heads;
    o->head_dim = c->head_dim;
    o->n_experts = c->n_experts;
    o->top_k = c->top_k;
    o->moe_intermediate = c->moe_inter;
    o->dense_intermediate = c->n_moe_layers < c->n_layers ? c->dense_inter : 0;
    o->shared_intermediate = c->shared_inter;
    o->max_positions = c->max_pos;
    o->tie_embeddings = c->tie_embeddings;
    o->weights_mmapped = md->st != NULL;
    o->has_weights = !md->shapes_only;
    o->n_unused_tensors = md->n_unused;
    o->unused_tensor = md->unused_example;
    o->n_params_total = md->n_params;
    o->n_params_active = md->n_params_active;
    o->bytes_f32 = md->bytes_dt[LM_DT_F32];
    o->bytes_f16 = md->bytes_dt[LM_DT_F16];
    o->bytes_bf16 = md->bytes_dt[LM_DT_BF16];
    o->bytes_weights = o->bytes_f32 + o->bytes_f16 + o->bytes_bf16;
    o->bytes_kv_per_token = 2ull * 4ull * (uint64_t)c->n_layers * (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim;
    o->bos_token_id = c->bos;
    o->n_eos = c->n_eos;
    for (int i = 0; i < c->n_eos && i < 8; i++) o->eos_token_ids[i] = c->eos[i];
}

typedef struct {
    lm_mat **mats;
    int n;
    atomic_int bad;  // lowest index of a matrix with a non-finite value, or n
    size_t *where;   // [n] first bad element per matrix
} finite_job;

static void finite_task(void *ctx, int i, int thread) {
    finite_job *j = ctx;
    const lm_mat *m = j->mats[i];
    size_t n = (size_t)m->rows * (size_t)m->cols, es = lm_dtype_size(m->dt);
    float v[1024];
    for (size_t k0 = 0; k0 < n; k0 += 1024) {
        size_t c = n - k0 < 1024 ? n - k0 : 1024;
        lm_to_f32((const char *)m->data + k0 * es, m->dt, v, c);
        for (size_t k = 0; k < c; k++)
            if (!isfinite(v[k])) {
                j->where[i] = k0 + k;
                int cur = atomic_load(&j->bad);
                while (i < cur && !atomic_compare_exchange_weak(&j->bad, &cur, i)) {}
                return;
            }
    }
}

bool lm_model_weights_finite(const lm_model *md_c, char *msg, size_t cap) {
    lm_model *md = (lm_model *)md_c;  // all_mats hands out pointers; nothing is written
    if (md->shapes_only) return true;
    int n_max = 64 + md->cfg.n_layers * (32 + 3 * md->cfg.n_experts);
    lm_mat **mats = malloc((size_t)n_max * sizeof *mats);
    size_t *where = malloc((size_t)n_max * sizeof *where);
    bool ok = true;
    if (mats && where) {
        int n = all_mats(md, mats, n_max);
        finite_job j = {mats, n, n, where};
        lm_pool_run(md->pool, finite_task, &j, n);
        int bad = atomic_load(&j.bad);
        if (bad < n) {
            ok = false;
            const lm_mat *m = mats[bad];
            snprintf(msg, cap, "tensor '%s' holds a NaN or Inf at element %zu (row %zu)",
                     m->name ? m->name : "?", where[bad], where[bad] / (size_t)m->cols);
        }
    }
    free(mats);
    free(where);
    return ok;
}
