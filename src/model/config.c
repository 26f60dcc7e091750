#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/file.h"
#include "util/json.h"

// Each architecture's transformers defaults for the keys a config.json may
// leave out (its *Config class): a missing key must mean what it means there.
// kv_heads 0: as many as attention heads; bos/eos -1: none.
static const struct {
    const char *arch, *model_type;
    lm_arch id;
    double rope_theta, rms_eps;
    int max_pos, kv_heads, bos, eos, shared_inter, moe_inter;  // moe_inter 0: intermediate_size
    bool norm_topk;
} k_archs[] = {
    {"MixtralForCausalLM", "mixtral", LM_ARCH_MIXTRAL, 1e6, 1e-5, 4096 * 32, 8, 1, 2, 0, 0, true},
    {"Qwen2MoeForCausalLM", "qwen2_moe", LM_ARCH_QWEN2_MOE, 1e4, 1e-6, 32768, 16, -1, -1, 5632, 1408, false},
    {"Qwen3MoeForCausalLM", "qwen3_moe", LM_ARCH_QWEN3_MOE, 1e4, 1e-6, 32768, 4, -1, -1, 0, 768, false},
    {"OlmoeForCausalLM", "olmoe", LM_ARCH_OLMOE, 1e4, 1e-5, 4096, 0, -1, 50279, 0, 0, false},
};
#define N_ARCHS (sizeof k_archs / sizeof k_archs[0])

const char *lm_config_supported(void) {
    return "MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM";
}

typedef struct {
    const cJSON *root;
    const char *fname;
} jctx;

static const cJSON *jget(const jctx *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

// Integer field in [lo, hi]; absent (or null) gives `def` unless def < lo,
// which marks the field as required.
static lm_status jint(const jctx *j, const char *key, long lo, long hi, long def, int *out) {
    const cJSON *v = jget(j, key);
    if (!v) {
        if (def < lo) return lm_err(LM_ERR_FORMAT, "%s: missing required key \"%s\"", j->fname, key);
        *out = (int)def;
        return LM_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return lm_err(LM_ERR_FORMAT, "%s: \"%s\" must be an integer", j->fname, key);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return lm_err(LM_ERR_FORMAT, "%s: \"%s\" = %.15g is out of range [%ld, %ld]", j->fname, key,
                      v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return LM_OK;
}

static lm_status jnum(const jctx *j, const cJSON *v, const char *key, double lo, double hi,
                      double *out) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return lm_err(LM_ERR_FORMAT, "%s: \"%s\" must be a number", j->fname, key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return lm_err(LM_ERR_FORMAT, "%s: \"%s\" = %g is out of range [%g, %g]", j->fname, key,
                      v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return LM_OK;
}

static lm_status jbool(const jctx *j, const char *key, bool def, bool *out) {
    const cJSON *v = jget(j, key);
    if (!v) {
        *out = def;
        return LM_OK;
    }
    if (!cJSON_IsBool(v)) return lm_err(LM_ERR_FORMAT, "%s: \"%s\" must be true or false", j->fname, key);
    *out = cJSON_IsTrue(v);
    return LM_OK;
}

// Used inside lm_config_parse only: keeps the callee's status and message.
#define TRY(x)                          \
    do {                                \
        if ((st = (x)) != LM_OK) goto fail; \
    } while (0)

// rope_theta lives at the top level (4.x) or in rope_parameters (5.x); any
// scaling other than "default" changes the maths, so it is refused.
static lm_status parse_rope(const jctx *j, lm_config *c, double default_theta) {
    const cJSON *params = jget(j, "rope_parameters");
    const cJSON *scaling = jget(j, "rope_scaling");
    const cJSON *theta = jget(j, "rope_theta");
    if (params && !cJSON_IsObject(params))
        return lm_err(LM_ERR_FORMAT, "%s: \"rope_parameters\" must be an object", j->fname);
    if (params && !theta) theta = cJSON_GetObjectItemCaseSensitive(params, "rope_theta");
    c->rope_theta = default_theta;
    if (theta && !cJSON_IsNull(theta)) {
        lm_status st = jnum(j, theta, "rope_theta", 1.0, 1e12, &c->rope_theta);
        if (st) return st;
    }
    const cJSON *scal[2] = {params, scaling};
    for (int i = 0; i < 2; i++) {
        if (!scal[i]) continue;
        if (!cJSON_IsObject(scal[i]))
            return lm_err(LM_ERR_FORMAT, "%s: \"%s\" must be an object", j->fname,
                          i ? "rope_scaling" : "rope_parameters");
        const char *what = i ? "rope_scaling" : "rope_parameters";
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(scal[i], "rope_type");
        if (!t) t = cJSON_GetObjectItemCaseSensitive(scal[i], "type");
        if (t && !cJSON_IsString(t))
            return lm_err(LM_ERR_FORMAT, "%s: %s: the rope type must be a string", j->fname, what);
        if (t && strcmp(t->valuestring, "default") != 0)
            return lm_err(LM_ERR_UNSUPPORTED, "%s: rope type \"%.100s\" is not supported (only \"default\")",
                          j->fname, t->valuestring);
        // Without a type, anything besides rope_theta (a "factor") would be a
        // scaling we would silently not apply.
        for (const cJSON *k = scal[i]->child; !t && k; k = k->next)
            if (strcmp(k->string, "rope_theta") != 0)
                return lm_err(LM_ERR_UNSUPPORTED, "%s: %s has \"%.100s\" but no rope_type: RoPE scaling is not "
                              "supported", j->fname, what, k->string);
    }
    return LM_OK;
}

static lm_status parse_token_ids(const jctx *j, lm_config *c, int def_bos, int def_eos) {
    c->bos = def_bos < c->vocab ? def_bos : -1;
    c->n_eos = 0;
    if (!cJSON_GetObjectItemCaseSensitive(j->root, "eos_token_id") && def_eos >= 0 && def_eos < c->vocab)
        c->eos[c->n_eos++] = def_eos;
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j->root, "bos_token_id"))) c->bos = -1;
    const cJSON *b = jget(j, "bos_token_id");
    if (b) {
        if (!cJSON_IsNumber(b) || b->valuedouble < 0 || b->valuedouble != floor(b->valuedouble))
            return lm_err(LM_ERR_FORMAT, "%s: \"bos_token_id\" must be a non-negative integer", j->fname);
        // An id outside the vocabulary (seen in real configs) cannot be produced: ignore it.
        if (b->valuedouble < c->vocab) c->bos = (int)b->valuedouble;
    }
    const cJSON *e = jget(j, "eos_token_id");
    if (!e) return LM_OK;
    const cJSON *one = e;
    bool arr = cJSON_IsArray(e);
    if (arr) one = e->child;
    for (; one; one = arr ? one->next : NULL) {
        if (!cJSON_IsNumber(one) || one->valuedouble < 0 || one->valuedouble != floor(one->valuedouble))
            return lm_err(LM_ERR_FORMAT, "%s: \"eos_token_id\" must be an integer or a list of integers",
                          j->fname);
        if (one->valuedouble < c->vocab && c->n_eos < LM_MAX_EOS) c->eos[c->n_eos++] = (int)one->valuedouble;
    }
    return LM_OK;
}

lm_status lm_config_parse(const char *json, size_t len, const char *fname, lm_config *c) {
    memset(c, 0, sizeof *c);
    lm_status st = LM_OK;
    int depth = lm_json_depth(json, len);
    if (depth > LM_JSON_MAX_DEPTH)
        return lm_err(LM_ERR_FORMAT, "%s: JSON nested %d levels deep (at most %d)", fname, depth, LM_JSON_MAX_DEPTH);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *where = cJSON_GetErrorPtr();
        long off = where && where >= json && where <= json + len ? (long)(where - json) : -1;
        return lm_err(LM_ERR_FORMAT, "%s: malformed JSON (near byte %ld)", fname, off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lm_err(LM_ERR_FORMAT, "%s: top level must be a JSON object", fname);
    }
    const char *dup = lm_json_duplicate_key(root);
    if (dup) {
        st = lm_err(LM_ERR_FORMAT, "%s: key \"%.200s\" appears twice in one object (which one is meant?)", fname, dup);
        cJSON_Delete(root);
        return st;
    }
    jctx j = {root, fname};

    // Architecture: "architectures"[0], else "model_type".
    const char *name = NULL;
    const cJSON *archs = jget(&j, "architectures");
    if (archs) {
        if (!cJSON_IsArray(archs) || !cJSON_IsString(archs->child)) {
            st = lm_err(LM_ERR_FORMAT, "%s: \"architectures\" must be a list of strings", fname);
            goto fail;
        }
        name = archs->child->valuestring;
    }
    const cJSON *mt = jget(&j, "model_type");
    int found = -1;
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (name ? strcmp(name, k_archs[i].arch) == 0
                 : (cJSON_IsString(mt) && strcmp(mt->valuestring, k_archs[i].model_type) == 0))
            found = (int)i;
    }
    if (found < 0) {
        st = lm_err(LM_ERR_UNSUPPORTED, "%s: architecture \"%.200s\" is not supported (supported: %s)", fname,
                    name ? name : (cJSON_IsString(mt) ? mt->valuestring : "(none given)"),
                    lm_config_supported());
        goto fail;
    }
    c->arch = k_archs[found].id;
    c->arch_name = k_archs[found].arch;

    TRY(jint(&j, "vocab_size", 1, 1 << 22, -1, &c->vocab));
    TRY(jint(&j, "hidden_size", 1, 1 << 16, -1, &c->hidden));
    TRY(jint(&j, "num_hidden_layers", 1, 1024, -1, &c->n_layers));
    TRY(jint(&j, "num_attention_heads", 1, 1024, -1, &c->n_heads));
    // An explicit null means "as many as attention heads", a missing key the class default.
    int kv_def = cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads")) || !k_archs[found].kv_heads
                     ? c->n_heads
                     : k_archs[found].kv_heads;
    TRY(jint(&j, "num_key_value_heads", 1, 1024, kv_def, &c->n_kv_heads));
    TRY(jint(&j, "max_position_embeddings", 1, 1 << 24, k_archs[found].max_pos, &c->max_pos));
    if (!jget(&j, "head_dim") && c->hidden % c->n_heads) {
        st = lm_err(LM_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d "
                    "and no head_dim is given", fname, c->hidden, c->n_heads);
        goto fail;
    }
    TRY(jint(&j, "head_dim", 2, 1024, c->hidden / c->n_heads, &c->head_dim));
    if (c->head_dim % 2) {
        st = lm_err(LM_ERR_FORMAT, "%s: head_dim %d must be even for rotary embeddings", fname, c->head_dim);
        goto fail;
    }
    if (c->n_heads % c->n_kv_heads) {
        st = lm_err(LM_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                    fname, c->n_heads, c->n_kv_heads);
        goto fail;
    }

    // Experts: num_local_experts (Mixtral, 5.x everywhere) or num_experts (4.x Qwen/OLMoE).
    const char *ekey = jget(&j, "num_local_experts") ? "num_local_experts" : "num_experts";
    TRY(jint(&j, ekey, 1, 1 << 14, -1, &c->n_experts));
    // The per-expert tables are [layers][experts]: bound their product by far
    // more than any real model has (DeepSeek-V3: 61 x 256).
    if ((long)c->n_layers * c->n_experts > (1L << 18)) {
        st = lm_err(LM_ERR_FORMAT, "%s: %d layers x %d experts is more expert weights than any real model has "
                    "(limit %ld)", fname, c->n_layers, c->n_experts, 1L << 18);
        goto fail;
    }
    TRY(jint(&j, "num_experts_per_tok", 1, c->n_experts, -1, &c->top_k));
    TRY(jint(&j, "intermediate_size", 1, 1 << 20, -1, &c->dense_inter));
    TRY(jint(&j, "moe_intermediate_size", 1, 1 << 20, k_archs[found].moe_inter ? k_archs[found].moe_inter : c->dense_inter,
             &c->moe_inter));

    const cJSON *v = jget(&j, "rms_norm_eps");
    double eps = k_archs[found].rms_eps;
    if (v) TRY(jnum(&j, v, "rms_norm_eps", 0.0, 1.0, &eps));
    c->rms_eps = (float)eps;
    TRY(parse_rope(&j, c, k_archs[found].rope_theta));

    v = jget(&j, "hidden_act");
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "silu") != 0)) {
        st = lm_err(LM_ERR_UNSUPPORTED, "%s: hidden_act \"%.100s\" is not supported (only \"silu\")", fname,
                    cJSON_IsString(v) ? v->valuestring : "?");
        goto fail;
    }
    TRY(jbool(&j, "tie_word_embeddings", false, &c->tie_embeddings));

    // Per-architecture block contents.
    bool attn_bias = false;
    TRY(jbool(&j, "attention_bias", false, &attn_bias));
    int sparse_step = 1;
    c->norm_topk = true;
    c->layer_moe = lm_calloc((size_t)c->n_layers, 1);
    if (!c->layer_moe) {
        st = LM_ERR_OOM;
        goto fail;
    }
    memset(c->layer_moe, 1, (size_t)c->n_layers);
    switch (c->arch) {
    case LM_ARCH_MIXTRAL: {
        const cJSON *sw = jget(&j, "sliding_window");
        if (sw && (!cJSON_IsNumber(sw) || sw->valuedouble < c->max_pos)) {
            st = lm_err(LM_ERR_UNSUPPORTED, "%s: sliding-window attention is not supported", fname);
            goto fail;
        }
        break;
    }
    case LM_ARCH_QWEN2_MOE:
    case LM_ARCH_QWEN3_MOE: {
        bool sw = false;
        TRY(jbool(&j, "use_sliding_window", false, &sw));
        if (sw) {
            st = lm_err(LM_ERR_UNSUPPORTED, "%s: sliding-window attention is not supported", fname);
            goto fail;
        }
        TRY(jbool(&j, "norm_topk_prob", k_archs[found].norm_topk, &c->norm_topk));
        TRY(jint(&j, "decoder_sparse_step", 1, 1024, 1, &sparse_step));
        if (c->arch == LM_ARCH_QWEN2_MOE) {
            // 4.x Qwen2-MoE always had q/k/v biases; 5.x writes "qkv_bias".
            TRY(jbool(&j, "qkv_bias", true, &c->qkv_bias));
            TRY(jint(&j, "shared_expert_intermediate_size", 0, 1 << 20, k_archs[found].shared_inter, &c->shared_inter));
        } else {
            c->qk_norm = LM_QK_NORM_HEAD;
            c->qkv_bias = attn_bias;
        }
        for (int l = 0; l < c->n_layers; l++) c->layer_moe[l] = (l + 1) % sparse_step == 0;
        const cJSON *mlo = jget(&j, "mlp_only_layers");
        if (mlo) {
            if (!cJSON_IsArray(mlo)) {
                st = lm_err(LM_ERR_FORMAT, "%s: \"mlp_only_layers\" must be a list of layer indices", fname);
                goto fail;
            }
            for (const cJSON *e = mlo->child; e; e = e->next) {
                if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                    e->valuedouble >= c->n_layers) {
                    st = lm_err(LM_ERR_FORMAT, "%s: \"mlp_only_layers\" entry is not a layer index in [0, %d)",
                                fname, c->n_layers);
                    goto fail;
                }
                c->layer_moe[(int)e->valuedouble] = 0;
            }
        }
        break;
    }
    case LM_ARCH_OLMOE: {
        TRY(jbool(&j, "norm_topk_prob", k_archs[found].norm_topk, &c->norm_topk));
        c->qk_norm = LM_QK_NORM_FULL;
        c->qkv_bias = attn_bias;
        const cJSON *clip = jget(&j, "clip_qkv");
        if (clip) {
            st = lm_err(LM_ERR_UNSUPPORTED, "%s: clip_qkv is not supported yet", fname);
            goto fail;
        }
        break;
    }
    }
    if (attn_bias && c->arch != LM_ARCH_QWEN2_MOE) {
        // Qwen3/OLMoE put a bias on o_proj too when attention_bias is set; no
        // released checkpoint does, and we do not load one.
        st = lm_err(LM_ERR_UNSUPPORTED, "%s: attention_bias=true is not supported for %s", fname, c->arch_name);
        goto fail;
    }
    for (int l = 0; l < c->n_layers; l++) c->n_moe_layers += c->layer_moe[l];
    TRY(parse_token_ids(&j, c, k_archs[found].bos, k_archs[found].eos));
    cJSON_Delete(root);
    return LM_OK;

fail:
    cJSON_Delete(root);
    lm_config_free(c);
    return st;
}

lm_status lm_config_load(const char *path, lm_config *out) {
    memset(out, 0, sizeof *out);
    char *buf;
    size_t len;
    lm_status st = lm_read_file(path, 16u << 20, &buf, &len);
    if (st) return st;
    st = lm_config_parse(buf, len, path, out);
    free(buf);
    return st;
}

lm_status lm_config_load_generation(const char *path, lm_config *c) {
    char *buf;
    size_t len;
    lm_status st = lm_read_file(path, 16u << 20, &buf, &len);
    if (st) return st;
    cJSON *root = lm_json_depth(buf, len) > LM_JSON_MAX_DEPTH ? NULL : cJSON_ParseWithLength(buf, len);
    free(buf);
    const char *dup = root ? lm_json_duplicate_key(root) : NULL;
    if (!root || !cJSON_IsObject(root)) st = lm_err(LM_ERR_FORMAT, "%s: not a JSON object", path);
    else if (dup) st = lm_err(LM_ERR_FORMAT, "%s: key \"%.200s\" appears twice in one object", path, dup);
    const cJSON *e = st ? NULL : cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (e && !cJSON_IsNull(e)) {
        // transformers' generate stops at these; the config's own stay too.
        bool arr = cJSON_IsArray(e);
        for (const cJSON *one = arr ? e->child : e; one && !st; one = arr ? one->next : NULL) {
            if (!cJSON_IsNumber(one) || one->valuedouble < 0 || one->valuedouble != floor(one->valuedouble)) {
                st = lm_err(LM_ERR_FORMAT, "%s: \"eos_token_id\" must be an integer or a list of integers", path);
                break;
            }
            if (one->valuedouble >= c->vocab) continue;  // cannot be produced
            int id = (int)one->valuedouble;
            bool have = false;
            for (int i = 0; i < c->n_eos; i++) have |= c->eos[i] == id;
            if (!have && c->n_eos < LM_MAX_EOS) c->eos[c->n_eos++] = id;
        }
    }
    cJSON_Delete(root);
    return st;
}

void lm_config_free(lm_config *cfg) {
    if (!cfg) return;
    free(cfg->layer_moe);
    memset(cfg, 0, sizeof *cfg);
}

void lm_config_truncate(lm_config *cfg, int n_layers) {
    if (n_layers <= 0 || n_layers >= cfg->n_layers) return;
    cfg->n_layers = n_layers;
    cfg->n_moe_layers = 0;
    for (int l = 0; l < n_layers; l++) cfg->n_moe_layers += cfg->layer_moe[l];
}
