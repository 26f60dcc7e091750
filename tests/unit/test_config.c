// config.json parsing: both transformers spellings, per-architecture
// defaults, layer plans, and clear errors for bad or unsupported configs.
#include "model/config.h"
#include "testlib.h"

static lm_status parse(const char *json, lm_config *c) { return lm_config_parse(json, strlen(json), "config.json", c); }

#define BASE_NOKV "\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, " \
                  "\"intermediate_size\": 32, \"num_experts_per_tok\": 2"
#define BASE BASE_NOKV ", \"num_key_value_heads\": 4"

static void test_spellings(void) {
    lm_config a, b;
    // transformers 4.x: rope_theta at the top, num_experts
    CHECK(parse("{\"architectures\": [\"Qwen3MoeForCausalLM\"], " BASE ", \"num_experts\": 6, "
                "\"rope_theta\": 5000.0, \"head_dim\": 32, \"moe_intermediate_size\": 12}", &a) == LM_OK);
    // transformers 5.x: rope_parameters, num_local_experts
    CHECK(parse("{\"architectures\": [\"Qwen3MoeForCausalLM\"], " BASE ", \"num_local_experts\": 6, "
                "\"rope_parameters\": {\"rope_theta\": 5000.0, \"rope_type\": \"default\"}, \"head_dim\": 32, "
                "\"moe_intermediate_size\": 12}", &b) == LM_OK);
    CHECK(a.n_experts == 6 && b.n_experts == 6);
    CHECK(a.rope_theta == 5000.0 && b.rope_theta == 5000.0);
    // Qwen3MoeConfig's defaults: norm_topk_prob false, 4 KV heads, rms_norm_eps 1e-6, 32768 positions
    CHECK(a.head_dim == 32 && a.moe_inter == 12 && a.qk_norm == LM_QK_NORM_HEAD && !a.norm_topk);
    CHECK(a.n_kv_heads == 4 && a.rms_eps == 1e-6f && a.max_pos == 32768);
    lm_config_free(&a);
    lm_config_free(&b);
}

static void test_arch_defaults(void) {
    lm_config c;
    // MixtralConfig's defaults: rope_theta 1e6, rms_norm_eps 1e-5, bos 1, eos 2, 8 KV heads (null: one per head)
    CHECK(parse("{\"model_type\": \"mixtral\", " BASE_NOKV ", \"num_local_experts\": 8, \"head_dim\": null, "
                "\"num_key_value_heads\": null}", &c) == LM_OK);
    CHECK(c.arch == LM_ARCH_MIXTRAL && c.head_dim == 16 && c.n_kv_heads == 4 && c.norm_topk && c.n_moe_layers == 4);
    CHECK(c.moe_inter == 32 && c.bos == 1 && c.n_eos == 1 && c.eos[0] == 2);
    CHECK(c.rope_theta == 1e6 && c.rms_eps == 1e-5f && c.max_pos == 131072);
    lm_config_free(&c);
    CHECK(parse("{\"model_type\": \"mixtral\", " BASE_NOKV ", \"num_local_experts\": 8}", &c) == LM_ERR_FORMAT);
    CHECK(strstr(lm_last_error(), "num_key_value_heads 8"));  // the class default: 4 heads cannot share 8
    lm_config_free(&c);
    // Qwen2-MoE: qkv bias by default (4.x), sparse step 2 and mlp_only_layers
    CHECK(parse("{\"architectures\": [\"Qwen2MoeForCausalLM\"], " BASE ", \"num_experts\": 4, \"decoder_sparse_step\": 2, "
                "\"mlp_only_layers\": [3], \"shared_expert_intermediate_size\": 48, \"eos_token_id\": [1, 2, 5000]}",
                &c) == LM_OK);
    CHECK(c.qkv_bias && !c.norm_topk && c.shared_inter == 48);
    CHECK(c.layer_moe[0] == 0 && c.layer_moe[1] == 1 && c.layer_moe[2] == 0 && c.layer_moe[3] == 0);
    CHECK(c.n_moe_layers == 1);
    CHECK(c.n_eos == 2 && c.eos[0] == 1 && c.eos[1] == 2);  // 5000 >= vocab is dropped
    lm_config_free(&c);
    CHECK(parse("{\"architectures\": [\"OlmoeForCausalLM\"], " BASE ", \"num_experts\": 9, \"clip_qkv\": null}", &c) == LM_OK);
    CHECK(c.qk_norm == LM_QK_NORM_FULL && !c.norm_topk);
    CHECK(c.n_kv_heads == 4 && c.rope_theta == 1e4 && c.max_pos == 4096 && c.n_eos == 0);  // eos 50279 >= vocab: none
    lm_config_free(&c);
}

static void expect_err(const char *json, lm_status want, const char *phrase) {
    lm_config c;
    lm_status st = parse(json, &c);
    CHECK_MSG(st == want, "status %d, want %d for %s", st, want, json);
    CHECK_MSG(strstr(lm_last_error(), phrase) && strstr(lm_last_error(), "config.json"), "message '%s' lacks '%s'",
              lm_last_error(), phrase);
    lm_config_free(&c);
}

static void test_errors(void) {
    expect_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE "}", LM_ERR_UNSUPPORTED, "MixtralForCausalLM");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE "", LM_ERR_FORMAT, "malformed JSON");
    expect_err("[1, 2]", LM_ERR_FORMAT, "JSON object");
    expect_err("", LM_ERR_FORMAT, "malformed JSON");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], \"vocab_size\": 100}", LM_ERR_FORMAT, "hidden_size");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], \"vocab_size\": 100, \"hidden_size\": -3}",
               LM_ERR_FORMAT, "hidden_size");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE ", \"num_local_experts\": 1}", LM_ERR_FORMAT,
               "num_experts_per_tok");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE ", \"num_local_experts\": 8, \"num_key_value_heads\": 3}",
               LM_ERR_FORMAT, "num_key_value_heads");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE ", \"num_local_experts\": 8, \"hidden_act\": \"gelu\"}",
               LM_ERR_UNSUPPORTED, "hidden_act");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE ", \"num_local_experts\": 8, "
               "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}", LM_ERR_UNSUPPORTED, "yarn");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE ", \"num_local_experts\": 8, \"sliding_window\": 16}",
               LM_ERR_UNSUPPORTED, "sliding");
    expect_err("{\"architectures\": [\"Qwen3MoeForCausalLM\"], " BASE ", \"num_experts\": 8, \"mlp_only_layers\": [9]}",
               LM_ERR_FORMAT, "mlp_only_layers");
    expect_err("{\"architectures\": [\"MixtralForCausalLM\"], " BASE ", \"num_local_experts\": 8.5}", LM_ERR_FORMAT,
               "integer");
    expect_err("{\"architectures\": \"MixtralForCausalLM\", " BASE "}", LM_ERR_FORMAT, "architectures");
}

static void test_load_missing(void) {
    lm_config c;
    CHECK(lm_config_load("/nonexistent/config.json", &c) == LM_ERR_IO);
    CHECK(strstr(lm_last_error(), "/nonexistent/config.json") != NULL);
}

int main(void) {
    RUN(test_spellings);
    RUN(test_arch_defaults);
    RUN(test_errors);
    RUN(test_load_missing);
    return tl_finish();
}
