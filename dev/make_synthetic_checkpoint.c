// Writes the synthetic model of a config.json (the same random bf16 weights
// `lightmoe bench --synthetic` builds) as a Hugging Face checkpoint directory
// (config.json + model.safetensors with per-expert tensor names), so the
// loading path of real checkpoints (mmap of the page cache) can be measured
// at real sizes without a download.
//
//   make dev-tools && build/dev/make_synthetic_checkpoint CONFIG.json[:LAYERS] OUT_DIR
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/model.h"

typedef struct {
    char name[256];
    const lm_mat *m;
    bool vec;
} entry;

static entry *ents;
static int n_ents, cap_ents;

static void add(const char *name, const lm_mat *m, bool vec) {
    if (!m->data) return;
    if (n_ents == cap_ents) {
        cap_ents = cap_ents ? 2 * cap_ents : 1024;
        ents = realloc(ents, (size_t)cap_ents * sizeof *ents);
        if (!ents) exit(1);
    }
    snprintf(ents[n_ents].name, sizeof ents[n_ents].name, "%s", name);
    ents[n_ents].m = m;
    ents[n_ents].vec = vec;
    n_ents++;
}

static void add_ffn(const char *prefix, const lm_ffn_w *f, bool mixtral) {
    char n[256];
    snprintf(n, sizeof n, "%s.%s.weight", prefix, mixtral ? "w1" : "gate_proj");
    add(n, &f->gate, false);
    snprintf(n, sizeof n, "%s.%s.weight", prefix, mixtral ? "w3" : "up_proj");
    add(n, &f->up, false);
    snprintf(n, sizeof n, "%s.%s.weight", prefix, mixtral ? "w2" : "down_proj");
    add(n, &f->down, false);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONFIG.json[:LAYERS] OUT_DIR\n", argv[0]);
        return 2;
    }
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s", argv[1]);
    lm_synthetic_params sp = lm_synthetic_default_params();
    char *colon = strrchr(cfg_path, ':');
    if (colon) *colon = 0, sp.n_layers = atoi(colon + 1);
    sp.config_path = cfg_path;
    lm_model *md;
    if (lm_model_load_synthetic(&sp, NULL, &md)) {
        fprintf(stderr, "%s\n", lm_last_error());
        return 1;
    }
    const lm_config *c = &md->cfg;
    bool mixtral = c->arch == LM_ARCH_MIXTRAL;
    char n[256], p[200];
    add("model.embed_tokens.weight", &md->embed, false);
    add("model.norm.weight", &md->final_norm, true);
    if (!c->tie_embeddings) add("lm_head.weight", &md->lm_head, false);
    for (int l = 0; l < c->n_layers; l++) {
        const lm_layer_w *L = &md->layers[l];
        snprintf(p, sizeof p, "model.layers.%d", l);
        const struct { const char *s; const lm_mat *m; bool vec; } t[] = {
            {"input_layernorm.weight", &L->attn_norm, true}, {"post_attention_layernorm.weight", &L->ffn_norm, true},
            {"self_attn.q_proj.weight", &L->wq, false},      {"self_attn.k_proj.weight", &L->wk, false},
            {"self_attn.v_proj.weight", &L->wv, false},      {"self_attn.o_proj.weight", &L->wo, false},
            {"self_attn.q_proj.bias", &L->bq, true},         {"self_attn.k_proj.bias", &L->bk, true},
            {"self_attn.v_proj.bias", &L->bv, true},         {"self_attn.q_norm.weight", &L->q_norm, true},
            {"self_attn.k_norm.weight", &L->k_norm, true},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            snprintf(n, sizeof n, "%s.%s", p, t[i].s);
            add(n, t[i].m, t[i].vec);
        }
        const char *moe = mixtral ? "block_sparse_moe" : "mlp";
        if (L->experts) {
            snprintf(n, sizeof n, "%s.%s.gate.weight", p, moe);
            add(n, &L->router, false);
            for (int e = 0; e < c->n_experts; e++) {
                snprintf(n, sizeof n, "%s.%s.experts.%d", p, moe, e);
                add_ffn(n, &L->experts[e], mixtral);
            }
        } else {
            snprintf(n, sizeof n, "%s.mlp", p);
            add_ffn(n, &L->dense, false);
        }
    }
    // Header: {"name": {"dtype": "BF16", "shape": [...], "data_offsets": [b, e]}, ...}
    size_t hcap = (size_t)n_ents * 200 + 64, hl = 0, off = 0;
    char *h = malloc(hcap);
    hl += (size_t)snprintf(h + hl, hcap - hl, "{");
    for (int i = 0; i < n_ents; i++) {
        size_t bytes = lm_mat_bytes(ents[i].m);
        if (ents[i].vec)
            hl += (size_t)snprintf(h + hl, hcap - hl, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}",
                                   i ? "," : "", ents[i].name, ents[i].m->cols, off, off + bytes);
        else
            hl += (size_t)snprintf(h + hl, hcap - hl,
                                   "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                                   i ? "," : "", ents[i].name, ents[i].m->rows, ents[i].m->cols, off, off + bytes);
        off += bytes;
    }
    hl += (size_t)snprintf(h + hl, hcap - hl, "}");
    while (hl % 8) h[hl++] = ' ';
    mkdir(argv[2], 0755);
    char out[4096];
    snprintf(out, sizeof out, "%s/model.safetensors", argv[2]);
    FILE *f = fopen(out, "wb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", out, strerror(errno));
        return 1;
    }
    uint64_t hlen = hl;
    fwrite(&hlen, 8, 1, f);
    fwrite(h, 1, hl, f);
    for (int i = 0; i < n_ents; i++) fwrite(ents[i].m->data, 1, lm_mat_bytes(ents[i].m), f);
    if (fclose(f)) {
        fprintf(stderr, "%s: write failed\n", out);
        return 1;
    }
    // config.json with the truncated layer count
    char *cfg;
    FILE *in = fopen(cfg_path, "rb");
    fseek(in, 0, SEEK_END);
    long len = ftell(in);
    fseek(in, 0, SEEK_SET);
    cfg = malloc((size_t)len + 1);
    if (fread(cfg, 1, (size_t)len, in) != (size_t)len) return 1;
    cfg[len] = 0;
    fclose(in);
    snprintf(out, sizeof out, "%s/config.json", argv[2]);
    f = fopen(out, "w");
    char *k = strstr(cfg, "\"num_hidden_layers\"");
    if (k && sp.n_layers > 0) {
        char *colon2 = strchr(k, ':'), *end = colon2 + 1;
        while (*end == ' ' || (*end >= '0' && *end <= '9')) end++;
        fprintf(f, "%.*s: %d%s", (int)(colon2 - cfg), cfg, sp.n_layers, end);
    } else {
        fputs(cfg, f);
    }
    fclose(f);
    printf("%s: %d tensors, %.2f GB\n", argv[2], n_ents, (double)off / 1e9);
    free(h);
    free(cfg);
    lm_model_free(md);
    return 0;
}
