// Hostile and unlucky inputs at the library level, one test per class of the
// hardening issue: NaN weights, hostile tokenizer.json files, memory asked for
// beyond what the machine has, models described without weights, inputs that
// are not regular files, and long paths in messages. (The same classes
// through the command line are in tests/bad_input.sh.)
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lightmoe.h"
#include "model/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "testlib.h"
#include "util/file.h"

#define FIX "tests/fixtures/mixtral"

static char g_tmp[64];

static char *tmp_path(const char *name) {
    static char path[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", g_tmp, name);
    return path[k];
}

static bool write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(buf, 1, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    return ok;
}

static bool copy_file(const char *from, const char *to) {
    char *buf;
    size_t n;
    if (lm_read_file(from, 64 << 20, &buf, &n)) return false;
    bool ok = write_file(to, buf, n);
    free(buf);
    return ok;
}

// ------------------------------------------------------------ NaN weights ---

typedef struct {
    const char *name;
    const uint8_t *data;
} find_t;

static lm_status find_cb(void *user, const lm_st_tensor *t) {
    find_t *f = user;
    if (!strcmp(t->name, f->name)) f->data = t->data;
    return LM_OK;
}

// One expert weight of the fixture set to NaN: lm_decode must fail with
// LM_ERR_NUMERIC naming that tensor, and leave the sequence as it was.
static void test_nan_weights(void) {
    char *buf;
    size_t n;
    CHECK(lm_read_file(FIX "/model.safetensors", 64 << 20, &buf, &n) == LM_OK);
    if (!buf) return;
    const char *victim = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
    find_t f = {victim, NULL};
    CHECK(lm_st_parse((const uint8_t *)buf, n, "fixture", find_cb, &f) == LM_OK && f.data);
    if (!f.data) return;
    size_t off = (size_t)(f.data - (const uint8_t *)buf) + 2 * 17;  // element 17, bf16
    buf[off] = (char)0xC0;                                          // 0x7FC0: a quiet NaN
    buf[off + 1] = 0x7F;
    mkdir(tmp_path("nan"), 0700);
    CHECK(write_file(tmp_path("nan/model.safetensors"), buf, n));
    CHECK(copy_file(FIX "/config.json", tmp_path("nan/config.json")));
    free(buf);
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = 2;
    lm_model *m = NULL;
    CHECK(lm_model_load(tmp_path("nan"), &mp, &m) == LM_OK);
    if (!m) return;
    lm_context_params cp = lm_context_default_params();
    cp.n_ctx = 64;
    lm_context *ctx = NULL;
    CHECK(lm_context_init(m, &cp, &ctx) == LM_OK);
    int32_t ids[8] = {1, 5, 9, 30, 31, 32, 100, 200}, seq[8] = {0};
    lm_batch b = {8, ids, seq, NULL, NULL, NULL};
    lm_status st = ctx ? lm_decode(ctx, &b) : LM_OK;
    CHECK_MSG(st == LM_ERR_NUMERIC, "status %s", lm_status_str(st));
    CHECK_MSG(strstr(lm_last_error(), victim) && strstr(lm_last_error(), "element 17"), "%s", lm_last_error());
    CHECK(ctx && lm_seq_len(ctx, 0) == 0);  // the failed step was undone
    lm_context_free(ctx);
    lm_model_free(m);
}

// ------------------------------------------------------ hostile tokenizers ---

static void expect_tok_error(const char *what, const char *json, size_t len, const char *needle) {
    lm_tokenizer *t = NULL;
    lm_status st = tk_tokenizer_parse(json, len, "hostile.json", &t);
    CHECK_MSG(st != LM_OK && !t, "%s: loaded", what);
    CHECK_MSG(strstr(lm_last_error(), needle), "%s: message \"%s\" lacks \"%s\"", what, lm_last_error(), needle);
    lm_tokenizer_free(t);
}

static void test_hostile_tokenizers(void) {
    // Invalid UTF-8 in a normalizer's and a pre-tokenizer's strings once reached
    // the regex engine unchecked (out-of-bounds read / endless loop).
    const char prepend[] =
        "{\"normalizer\": {\"type\": \"Prepend\", \"prepend\": \"\xff\xfe\"},"
        " \"pre_tokenizer\": {\"type\": \"Punctuation\"},"
        " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}";
    expect_tok_error("invalid UTF-8 in Prepend", prepend, sizeof prepend - 1, "not valid UTF-8 at byte offset 47");
    const char split[] =
        "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"\xc3\"}, \"behavior\": \"Isolated\"},"
        " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}";
    expect_tok_error("invalid UTF-8 in Split", split, sizeof split - 1, "not valid UTF-8");
    const char vocab_key[] = "{\"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"\xed\xa0\x80\": 0}}}";
    expect_tok_error("surrogate in a vocab key", vocab_key, sizeof vocab_key - 1, "not valid UTF-8");
    // Ids that would size the id tables (2^31 - 1 overflowed max_id + 1).
    const char *big_ids[] = {
        "{\"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 2147483647}}}",
        "{\"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 16777216}}}",
        "{\"added_tokens\": [{\"id\": 2147483647, \"content\": \"<x>\"}],"
        " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}",
    };
    for (int i = 0; i < 3; i++) expect_tok_error("huge id", big_ids[i], strlen(big_ids[i]), "valid id");
    // A post-processor id that is no token of the tokenizer.
    const char *post = "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
                       "[{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}],"
                       " \"special_tokens\": {\"<s>\": {\"ids\": [7]}}},"
                       " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}";
    expect_tok_error("post-processor id", post, strlen(post), "not a token of this tokenizer");
    // Valid strings through every pre-tokenizer that walks characters: must
    // terminate on any text (the Punctuation one looped on invalid UTF-8).
    const char ok[] = "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xc3\xa9\"},"
                      " {\"type\": \"Lowercase\"}, {\"type\": \"Strip\"}]},"
                      " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Punctuation\"},"
                      " {\"type\": \"Digits\"}, {\"type\": \"WhitespaceSplit\"}, {\"type\": \"BertPreTokenizer\"}]},"
                      " \"model\": {\"type\": \"BPE\", \"merges\": [], \"unk_token\": \"<unk>\","
                      " \"vocab\": {\"<unk>\": 0, \"a\": 1, \".\": 2}}}";
    lm_tokenizer *t = NULL;
    CHECK_MSG(tk_tokenizer_parse(ok, sizeof ok - 1, "ok.json", &t) == LM_OK, "%s", lm_last_error());
    if (t) {
        const char *texts[] = {"a.a,,1 2", "  \xe2\x80\xa8 \xd8\x9f!!", "", "....", "\xf0\x9f\x98\x80."};
        for (int i = 0; i < 5; i++) {
            int32_t *ids = NULL;
            size_t n = 0;
            CHECK(lm_tokenize(t, texts[i], strlen(texts[i]), false, &ids, &n) == LM_OK);
            free(ids);
        }
        int32_t *ids;
        size_t n;
        CHECK(lm_tokenize(t, "a\xff", 2, false, &ids, &n) == LM_ERR_INVALID_ARG);
        CHECK(strstr(lm_last_error(), "not valid UTF-8 (byte 1 of 2)"));
        lm_tokenizer_free(t);
    }
    // Patterns that would eat memory (deep backtracking) or time (each match
    // scanning to the end: quadratic) fail with a message naming the file.
    char big[1024];
    snprintf(big, sizeof big, "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?:a|%s)*c\"},"
             " \"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}",
             "(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)(b)");
    const char *quad = "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \".(?=[\\\\s\\\\S]*\\\\z)\"},"
                       " \"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}";
    const char *grow = "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
                       "{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"aaaaaaaaaaaaaaaa\"},"
                       "{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"aaaaaaaaaaaaaaaa\"},"
                       "{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"aaaaaaaaaaaaaaaa\"},"
                       "{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"aaaaaaaaaaaaaaaa\"},"
                       "{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"aaaaaaaaaaaaaaaa\"},"
                       "{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"aaaaaaaaaaaaaaaa\"}]},"
                       " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}";
    const char *dup = "{\"normalizer\": null, \"normalizer\": {\"type\": \"Lowercase\"},"
                      " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}";
    expect_tok_error("duplicate key", dup, strlen(dup), "key \"normalizer\" appears twice");
    size_t long_n = 100000;
    char *text = malloc(long_n + 2);
    memset(text, 'a', long_n);
    text[long_n] = 'c';
    text[long_n + 1] = 0;
    tk_budget_base(0.3);
    const char *json[3] = {big, quad, grow};
    const char *want[3] = {"needs more than 64 MB", "takes more than", "more than 256 times longer"};
    for (int k = 0; k < 3; k++) {
        t = NULL;
        CHECK_MSG(tk_tokenizer_parse(json[k], strlen(json[k]), "slow.json", &t) == LM_OK, "%s", lm_last_error());
        if (!t) continue;
        int32_t *ids = NULL;
        size_t n = 0;
        double t0 = lm_now();
        // (the growth case on a short text, or the time budget would catch it first)
        lm_status st = lm_tokenize(t, text + (k == 2 ? long_n - 1000 : 0), k == 2 ? 1001 : long_n + 1, false, &ids, &n);
        CHECK_MSG(st != LM_OK && strstr(lm_last_error(), "slow.json") && strstr(lm_last_error(), want[k]),
                  "case %d: %s", k, lm_last_error());
        CHECK_MSG(lm_now() - t0 < 5.0, "case %d took %.1f s", k, lm_now() - t0);
        free(ids);
        lm_tokenizer_free(t);
    }
    tk_budget_base(5.0);
    free(text);

    // A repeated added token is not quadratic any more: 20k of them load at once.
    size_t cap = 64 + 20000 * 48;
    char *many = malloc(cap);
    size_t len = (size_t)snprintf(many, cap, "{\"added_tokens\": [");
    for (int i = 0; i < 20000; i++)
        len += (size_t)snprintf(many + len, cap - len, "%s{\"id\": %d, \"content\": \"<t%d>\"}", i ? "," : "", i + 1,
                                i % 100);
    len += (size_t)snprintf(many + len, cap - len, "], \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {\"a\": 0}}}");
    double t0 = lm_now();
    t = NULL;
    CHECK(tk_tokenizer_parse(many, len, "many.json", &t) == LM_OK);
    CHECK_MSG(lm_now() - t0 < 2.0, "20k added tokens took %.1f s", lm_now() - t0);
    lm_tokenizer_free(t);
    free(many);
}

// --------------------------------------------------------------- memory ---

static void test_memory_checked_first(void) {
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = 1;
    lm_model *m = NULL;
    CHECK(lm_model_load(FIX, &mp, &m) == LM_OK);
    if (!m) return;
    lm_model_free(m);
    CHECK(lm_model_load("models/sotu-moe", &mp, &m) == LM_OK);
    if (!m) return;
    // 65536 sequences x 2048 tokens of the shipped model need 824 GB of KV cache.
    lm_context_params cp = {.n_seq = 65536, .n_ctx = 2048, .n_batch = 512};
    lm_context *ctx = NULL;
    CHECK(lm_context_init(m, &cp, &ctx) == LM_ERR_OOM && !ctx);
    CHECK_MSG(strstr(lm_last_error(), "of memory but") && strstr(lm_last_error(), "is available"), "%s",
              lm_last_error());
    lm_model_free(m);

    // A shapes-only synthetic model: described without building 281 GB of weights.
    lm_synthetic_params sp = lm_synthetic_default_params();
    sp.config_path = "configs/mixtral-8x22b.json";
    sp.shapes_only = true;
    double t0 = lm_now();
    CHECK(lm_model_load_synthetic(&sp, &mp, &m) == LM_OK);
    CHECK(lm_now() - t0 < 2.0);
    if (!m) return;
    lm_model_info mi;
    lm_model_get_info(m, &mi);
    CHECK(!mi.has_weights && mi.n_layers == 56 && mi.bytes_weights > 280000000000ull);
    cp = lm_context_default_params();
    CHECK(lm_context_init(m, &cp, &ctx) == LM_ERR_INVALID_ARG && !ctx);
    lm_model_free(m);
    // Shapes whose KV cache size wraps around 2^64 in size_t arithmetic (it
    // then passed the memory check small and wrote far outside the cache).
    const char *huge = "{\"architectures\": [\"MixtralForCausalLM\"], \"vocab_size\": 300, \"hidden_size\": 1,"
                       " \"head_dim\": 64, \"intermediate_size\": 1, \"num_hidden_layers\": 1000,"
                       " \"num_attention_heads\": 1011, \"num_key_value_heads\": 1011, \"num_local_experts\": 1,"
                       " \"num_experts_per_tok\": 1, \"max_position_embeddings\": 16777216}";
    CHECK(write_file(tmp_path("huge.json"), huge, strlen(huge)));
    lm_synthetic_params sp2 = sp;
    sp2.config_path = tmp_path("huge.json");
    CHECK(lm_model_load_synthetic(&sp2, &mp, &m) == LM_OK);
    if (m) {
        cp = (lm_context_params){.n_seq = 61301, .n_ctx = 4650729, .n_batch = 512};
        CHECK(lm_context_init(m, &cp, &ctx) == LM_ERR_OOM && !ctx);
        CHECK_MSG(strstr(lm_last_error(), "too large"), "%s", lm_last_error());
        lm_model_free(m);
    }
    // Building the weights of a model larger than memory is refused up front.
    sp.shapes_only = false;
    CHECK(lm_model_load_synthetic(&sp, &mp, &m) == LM_ERR_OOM && !m);
    CHECK_MSG(strstr(lm_last_error(), "of memory but"), "%s", lm_last_error());
    // More threads than CPUs spin against each other: refused.
    mp.n_threads = 4096;
    CHECK(lm_model_load(FIX, &mp, &m) == LM_ERR_INVALID_ARG && !m);
}

// ------------------------------------------------------- non-regular files ---

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_hardening: a load blocked (hang)\n";
    if (write(2, msg, sizeof msg - 1)) {}
    _exit(3);
}

static void test_non_regular_inputs(void) {
    signal(SIGALRM, on_alarm);
    alarm(20);  // a blocking open() would hang here
    const char *fifo = tmp_path("fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    lm_tokenizer *t = NULL;
    CHECK(lm_tokenizer_load(fifo, &t) == LM_ERR_IO && !t);
    CHECK(strstr(lm_last_error(), "is a FIFO"));
    CHECK(lm_tokenizer_load("/dev/zero", &t) == LM_ERR_IO && strstr(lm_last_error(), "character device"));
    CHECK(lm_tokenizer_load(g_tmp, &t) == LM_ERR_IO && strstr(lm_last_error(), "is a directory"));
    lm_synthetic_params sp = lm_synthetic_default_params();
    sp.config_path = fifo;
    lm_model *m = NULL;
    CHECK(lm_model_load_synthetic(&sp, NULL, &m) == LM_ERR_IO && strstr(lm_last_error(), "is a FIFO"));
    char *buf;
    size_t n;
    CHECK(lm_read_file(fifo, 1 << 20, &buf, &n) == LM_ERR_IO);
    // A file over the limit is refused by its size, not read.
    CHECK(lm_read_file(FIX "/model.safetensors", 1000, &buf, &n) == LM_ERR_FORMAT);
    CHECK(strstr(lm_last_error(), "more than"));
    alarm(0);
}

// A message with a long path still ends with its reason (they were cut at 1 KB).
static void test_long_paths(void) {
    char dir[3600];
    int k = snprintf(dir, sizeof dir, "%s/", g_tmp);
    while (k < 3400) k += snprintf(dir + k, sizeof dir - (size_t)k, "nonexistent-directory-name/");
    lm_model *m = NULL;
    CHECK(lm_model_load(dir, NULL, &m) == LM_ERR_IO);
    const char *e = lm_last_error();
    CHECK_MSG(strlen(e) > 3400 && strstr(e, "no such directory"), "%.80s...%s", e, strlen(e) > 60 ? e + strlen(e) - 60 : e);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/lm_hardening_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_nan_weights);
    RUN(test_hostile_tokenizers);
    RUN(test_memory_checked_first);
    RUN(test_non_regular_inputs);
    RUN(test_long_paths);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd)) {}
    return tl_finish();
}
