// `--expert-stats FILE.json` of generate and perplexity, checked against
// what the library says independently: the shapes and MoE layers of the
// model, the tokens the run must have put through it (from the tokenizer),
// and the routing invariant: in every MoE layer each token goes to top_k
// experts, so the layer's counts sum to tokens x top_k; dense layers stay 0.
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/model.h"
#include "testlib.h"
#include "util/file.h"

extern char **environ;

static char tmp[64] = "/tmp/lm-expert-stats-XXXXXX";
static char bin[512];

// Runs argv with stdout and stderr to tmp/log; the exit status (128: a signal).
static int run(char *const argv[]) {
    char log[128];
    snprintf(log, sizeof log, "%s/log", tmp);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), status = 0;
    posix_spawn_file_actions_destroy(&fa);
    if (rc == 0) waitpid(pid, &status, 0);
    rc = rc ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    if (rc) {  // show what it said
        char *text;
        size_t n;
        if (lm_read_file(log, 1 << 20, &text, &n) == LM_OK) fprintf(stderr, "%s exited %d:\n%s\n", argv[1], rc, text), free(text);
    }
    return rc;
}

static size_t n_tokens(const char *tok_path, const char *text, bool special) {
    lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_MSG(lm_tokenizer_load(tok_path, &tok) == LM_OK, "%s", lm_last_error());
    if (tok) CHECK(lm_tokenize(tok, text, strlen(text), special, &ids, &n) == LM_OK);
    free(ids);
    lm_tokenizer_free(tok);
    return n;
}

// The file at path describes a run of `tokens` tokens through the model in dir.
static void check_file(const char *path, const char *dir, const char *command, uint64_t tokens) {
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = 1;
    lm_model *model = NULL;
    char *text = NULL;
    size_t len;
    CHECK_MSG(lm_model_load(dir, &mp, &model) == LM_OK, "%s", lm_last_error());
    CHECK_MSG(lm_read_file(path, 16 << 20, &text, &len) == LM_OK, "%s", lm_last_error());
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK_MSG(root, "%s: not JSON", path);
    if (!model || !root) {
        lm_model_free(model);
        cJSON_Delete(root);
        return;
    }
    const lm_config *c = &model->cfg;
    const cJSON *fmt = cJSON_GetObjectItem(root, "format"), *cmd = cJSON_GetObjectItem(root, "command");
    CHECK(cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "lightmoe-expert-stats"));
    CHECK(cJSON_GetObjectItem(root, "version") && cJSON_GetObjectItem(root, "version")->valuedouble == 1);
    CHECK(cJSON_IsString(cmd) && !strcmp(cmd->valuestring, command));
    const cJSON *arch = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "architecture");
    CHECK(cJSON_IsString(arch) && !strcmp(arch->valuestring, c->arch_name));
    CHECK(cJSON_GetObjectItem(root, "n_layers")->valuedouble == c->n_layers);
    CHECK(cJSON_GetObjectItem(root, "n_experts")->valuedouble == c->n_experts);
    CHECK(cJSON_GetObjectItem(root, "top_k")->valuedouble == c->top_k);
    CHECK_MSG(cJSON_GetObjectItem(root, "tokens")->valuedouble == (double)tokens, "tokens %g, want %llu",
              cJSON_GetObjectItem(root, "tokens")->valuedouble, (unsigned long long)tokens);
    // moe_layers lists exactly the model's MoE layers, in order.
    const cJSON *moe = cJSON_GetObjectItem(root, "moe_layers");
    int k = 0;
    for (int l = 0; l < c->n_layers; l++) {
        if (!c->layer_moe[l]) continue;
        const cJSON *m = cJSON_GetArrayItem(moe, k++);
        CHECK_MSG(m && m->valuedouble == l, "moe_layers[%d] is not %d", k - 1, l);
    }
    CHECK(cJSON_GetArraySize(moe) == k);
    const cJSON *rows = cJSON_GetObjectItem(root, "counts");
    CHECK(cJSON_GetArraySize(rows) == c->n_layers);
    int l = 0;
    for (const cJSON *row = rows ? rows->child : NULL; row; row = row->next, l++) {
        CHECK(cJSON_GetArraySize(row) == c->n_experts);
        double sum = 0;
        for (const cJSON *x = row->child; x; x = x->next) {
            CHECK(cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble == (double)(uint64_t)x->valuedouble);
            sum += x->valuedouble;
        }
        double want = c->layer_moe[l] ? (double)tokens * c->top_k : 0;
        CHECK_MSG(sum == want, "%s: layer %d counts sum to %g, want %g", path, l, sum, want);
    }
    cJSON_Delete(root);
    lm_model_free(model);
}

static void test_generate_one_prompt(void) {
    const char *prompt = "The old man";
    char out[128];
    snprintf(out, sizeof out, "%s/gen.json", tmp);
    char *argv[] = {bin, "generate", "-p", (char *)prompt, "-n", "9", "--ignore-eos", "-t", "2", "--expert-stats", out, NULL};
    CHECK(run(argv) == 0);
    // Every prompt token and every generated one but the last goes through the model.
    check_file(out, "models/sotu-moe", "generate", n_tokens("models/sotu-moe/tokenizer.json", prompt, true) + 9 - 1);
}

static void test_generate_batch(void) {
    const char *prompts[3] = {"Fellow citizens", "The state of the Union is", "Congress"};
    char in[128], out[128];
    snprintf(in, sizeof in, "%s/p.jsonl", tmp);
    snprintf(out, sizeof out, "%s/batch.json", tmp);
    FILE *f = fopen(in, "w");
    size_t want = 0;
    for (int i = 0; f && i < 3; i++) {
        fprintf(f, "{\"prompt\": \"%s\"}\n", prompts[i]);
        want += n_tokens("models/sotu-moe/tokenizer.json", prompts[i], true) + 5 - 1;
    }
    if (f) fclose(f);
    char *argv[] = {bin, "generate", "--prompts", in, "-n", "5", "--ignore-eos", "-t", "2",
                    "--out", "/dev/null", "--expert-stats", out, NULL};
    CHECK(run(argv) == 0);
    check_file(out, "models/sotu-moe", "generate", want);
}

static void test_perplexity(void) {
    char *text;
    size_t len;
    CHECK_MSG(lm_read_file("models/sotu-moe/heldout.txt", 64 << 20, &text, &len) == LM_OK, "%s", lm_last_error());
    if (!text) return;
    text[len < 1500 ? len : 1500] = 0;  // a few windows of 64 tokens; cut on ASCII text
    char in[128], out[128];
    snprintf(in, sizeof in, "%s/t.txt", tmp);
    snprintf(out, sizeof out, "%s/ppl.json", tmp);
    FILE *f = fopen(in, "w");
    if (f) fputs(text, f), fclose(f);
    // Windows of 64 tokens; a last window of one token predicts nothing and is not run.
    size_t n = n_tokens("models/sotu-moe/tokenizer.json", text, false), want = n % 64 == 1 ? n - 1 : n;
    free(text);
    char *argv[] = {bin, "perplexity", "--file", in, "--ctx", "64", "-t", "2", "--expert-stats", out, NULL};
    CHECK(run(argv) == 0);
    check_file(out, "models/sotu-moe", "perplexity", want);
}

// The Qwen3-MoE fixture has a dense layer (mlp_only_layers [1]) between two
// MoE layers; it has no tokenizer, so one of 26 letters is made beside it.
static void test_dense_layer(void) {
    char dir[128], path[192], real[4096];
    snprintf(dir, sizeof dir, "%s/qwen3", tmp);
    CHECK(mkdir(dir, 0755) == 0);
    const char *files[2] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "tests/fixtures/qwen3_moe/%s", files[i]);
        CHECK(realpath(path, real) != NULL);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        CHECK(symlink(real, path) == 0);
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{\"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {", f);
        for (int i = 0; i < 26; i++) fprintf(f, "%s\"%c\": %d", i ? ", " : "", 'a' + i, i);
        fputs("}}}\n", f);
        fclose(f);
    }
    char out[128];
    snprintf(out, sizeof out, "%s/qwen3.json", tmp);
    char *argv[] = {bin, "generate", "-m", dir, "-p", "abcde", "-n", "4", "--ignore-eos", "-t", "1", "--expert-stats", out, NULL};
    CHECK(run(argv) == 0);
    check_file(out, dir, "generate", n_tokens(path, "abcde", true) + 4 - 1);
}

int main(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    snprintf(bin, sizeof bin, "%s/lightmoe", build);
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_generate_one_prompt);
    RUN(test_generate_batch);
    RUN(test_perplexity);
    RUN(test_dense_layer);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return tl_finish();
}
