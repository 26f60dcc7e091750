// safetensors reader: a valid file (values, shapes, dtypes), every kind of
// corrupt header we could think of, and sharded / unsharded directories.
// Files are built in memory and written under a mkdtemp directory.
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "testlib.h"
#include "util/err.h"

static char g_root[64];
static int g_nsub;
static int g_verbose;  // LM_TEST_VERBOSE=1 prints every error message for review

// A fresh empty directory per case, so directory probing sees only our files.
static const char *new_dir(void) {
    static char path[128];
    snprintf(path, sizeof path, "%s/d%d", g_root, g_nsub++);
    if (mkdir(path, 0700) != 0) {
        perror(path);
        exit(2);
    }
    return path;
}

static void write_file(const char *dir, const char *name, const void *buf, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(buf, 1, n, f) != n)) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

static void write_text(const char *dir, const char *name, const char *s) {
    write_file(dir, name, s, strlen(s));
}

// u64 header length + JSON padded with spaces to 8 bytes + data. Caller frees.
static uint8_t *make_st(const char *json, const void *data, size_t dlen, size_t *out_len) {
    size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
    size_t n = 8 + hl + dlen;
    uint8_t *b = malloc(n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', hl - jl);
    if (dlen) {
        if (data) memcpy(b + 8 + hl, data, dlen);
        else memset(b + 8 + hl, 0, dlen);
    }
    *out_len = n;
    return b;
}

static uint16_t rd16(const void *p, int i) {
    uint16_t v;
    memcpy(&v, (const uint8_t *)p + 2 * i, 2);
    return v;
}

static float rdf32(const void *p, int i) {
    float v;
    memcpy(&v, (const uint8_t *)p + 4 * i, 4);
    return v;
}

// ------------------------------------------------------------ valid file ---

static const char *VALID_JSON =
    "{\"w.f32\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[20,36]},"
    "\"__metadata__\":{\"format\":\"pt\"},"
    "\"w.bf16\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
    "\"w.f16\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[36,44]},"
    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[44,44]}}";

static void valid_data(uint8_t d[44]) {
    // bf16 1, 2, -1.5 twice; f16 1, 0.5 twice; f32 1.25 -2 3.5 100; i64 7
    const uint16_t bf[6] = {0x3F80, 0x4000, 0xBFC0, 0x3F80, 0x4000, 0xBFC0};
    const uint16_t hf[4] = {0x3C00, 0x3800, 0x3C00, 0x3800};
    const float f[4] = {1.25f, -2.0f, 3.5f, 100.0f};
    const int64_t id = 7;
    memcpy(d, bf, 12);
    memcpy(d + 12, hf, 8);
    memcpy(d + 20, f, 16);
    memcpy(d + 36, &id, 8);
}

static uint8_t *valid_file(size_t *n) {
    uint8_t d[44];
    valid_data(d);
    return make_st(VALID_JSON, d, sizeof d, n);
}

static void check_valid_set(const lm_st_set *s) {
    CHECK(lm_st_count(s) == 5);
    const lm_st_tensor *t = lm_st_find(s, "w.bf16");
    CHECK(t != NULL);
    if (t) {
        CHECK(t->dtype == LM_DT_BF16 && strcmp(t->dtype_str, "BF16") == 0);
        CHECK(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
        CHECK(t->nbytes == 12 && t->file == 0);
        CHECK(rd16(t->data, 0) == 0x3F80 && rd16(t->data, 2) == 0xBFC0 && rd16(t->data, 4) == 0x4000);
    }
    t = lm_st_find(s, "w.f16");
    CHECK(t && t->dtype == LM_DT_F16 && t->ndim == 1 && t->shape[0] == 4 && t->nbytes == 8);
    if (t) CHECK(rd16(t->data, 1) == 0x3800 && rd16(t->data, 2) == 0x3C00);
    t = lm_st_find(s, "w.f32");
    CHECK(t && t->dtype == LM_DT_F32 && t->ndim == 2 && t->nbytes == 16);
    if (t) CHECK(rdf32(t->data, 0) == 1.25f && rdf32(t->data, 3) == 100.0f);
    t = lm_st_find(s, "ids");
    CHECK(t && t->dtype == LM_DT_OTHER && strcmp(t->dtype_str, "I64") == 0 && t->nbytes == 8);
    if (t) {
        int64_t v;
        memcpy(&v, t->data, 8);
        CHECK(v == 7);
    }
    t = lm_st_find(s, "empty");
    CHECK(t && t->nbytes == 0 && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 3);
    CHECK(lm_st_find(s, "__metadata__") == NULL);
    CHECK(lm_st_find(s, "w.bf") == NULL);
    CHECK(lm_st_find(s, "zzz") == NULL);
    CHECK(lm_st_get(s, 5) == NULL && lm_st_get(s, -1) == NULL);
    // Every tensor reachable through get() is also found by name.
    for (int i = 0; i < lm_st_count(s); i++) CHECK(lm_st_find(s, lm_st_get(s, i)->name) == lm_st_get(s, i));
}

typedef struct {
    int n;
    const uint8_t *lo, *hi;
    size_t total;
} count_ctx;

static lm_status count_cb(void *user, const lm_st_tensor *t) {
    count_ctx *c = user;
    c->n++;
    c->total += t->nbytes;
    if (t->nbytes) {
        const uint8_t *p = t->data;
        CHECK(p >= c->lo && p + t->nbytes <= c->hi);
    }
    return LM_OK;
}

static void test_dtypes(void) {
    CHECK(lm_dtype_size(LM_DT_F32) == 4 && lm_dtype_size(LM_DT_F16) == 2);
    CHECK(lm_dtype_size(LM_DT_BF16) == 2 && lm_dtype_size(LM_DT_OTHER) == 0);
    CHECK(strcmp(lm_dtype_name(LM_DT_BF16), "BF16") == 0);
    CHECK(strcmp(lm_dtype_name(LM_DT_F32), "F32") == 0);
}

static void test_parse_memory(void) {
    size_t n;
    uint8_t *b = valid_file(&n);
    count_ctx c = {0, b + (n - 44), b + n, 0};
    CHECK(lm_st_parse(b, n, "mem.safetensors", count_cb, &c) == LM_OK);
    CHECK(c.n == 5 && c.total == 44);
    CHECK(lm_st_parse(b, n, "mem.safetensors", NULL, NULL) == LM_OK);  // validate only
    free(b);

    // An empty header is a valid file with no tensors.
    b = make_st("{}", NULL, 0, &n);
    c = (count_ctx){0, b, b + n, 0};
    CHECK(lm_st_parse(b, n, "e.safetensors", count_cb, &c) == LM_OK && c.n == 0);
    free(b);

    // A sub-byte dtype that fills whole bytes, and trailing whitespace.
    b = make_st("{\"q\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}\n\t ", NULL, 2, &n);
    CHECK(lm_st_parse(b, n, "f4.safetensors", NULL, NULL) == LM_OK);
    free(b);
}

static lm_status fail_cb(void *user, const lm_st_tensor *t) {
    return lm_err(LM_ERR_RANGE, "stop at %s", t->name);
}

static void test_callback_error(void) {
    size_t n;
    uint8_t *b = valid_file(&n);
    CHECK(lm_st_parse(b, n, "m.safetensors", fail_cb, NULL) == LM_ERR_RANGE);
    CHECK(strstr(lm_last_error(), "stop at") != NULL);
    free(b);
}

static void test_open_file(void) {
    const char *dir = new_dir();
    size_t n;
    uint8_t *b = valid_file(&n);
    write_file(dir, "model.safetensors", b, n);
    free(b);

    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    lm_st_set *s = NULL;
    lm_status st = lm_st_open_file(path, &s);
    CHECK_MSG(st == LM_OK, "%s", lm_last_error());
    if (s) {
        check_valid_set(s);
        CHECK(strcmp(lm_st_file_path(s, 0), path) == 0);
        CHECK(lm_st_file_path(s, 1) == NULL);
    }
    lm_st_close(s);

    s = NULL;
    st = lm_st_open_dir(dir, &s);
    CHECK_MSG(st == LM_OK, "%s", lm_last_error());
    if (s) check_valid_set(s);
    lm_st_close(s);
    lm_st_close(NULL);
}

// --------------------------------------------------------- corrupt files ---

// Checks both the in-memory parser and the file path: same status, and a
// message naming the file (plus `needle` if given).
static void expect_bad(const char *what, const uint8_t *buf, size_t n, lm_status want,
                       const char *needle) {
    lm_status st = lm_st_parse(buf, n, "mem.safetensors", NULL, NULL);
    const char *e = lm_last_error();
    CHECK_MSG(st == want, "%s: parse status %s, want %s (%s)", what, lm_status_str(st),
              lm_status_str(want), e);
    CHECK_MSG(strstr(e, "mem.safetensors") != NULL, "%s: message lacks file name: %s", what, e);
    if (needle) CHECK_MSG(strstr(e, needle) != NULL, "%s: message lacks '%s': %s", what, needle, e);

    const char *dir = new_dir();
    write_file(dir, "bad.safetensors", buf, n);
    char path[256];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    lm_st_set *s = (lm_st_set *)&st;  // must be reset to NULL on failure
    st = lm_st_open_file(path, &s);
    e = lm_last_error();
    CHECK_MSG(st == want, "%s: open status %s, want %s (%s)", what, lm_status_str(st),
              lm_status_str(want), e);
    CHECK_MSG(s == NULL, "%s: out not NULL on failure", what);
    CHECK_MSG(strstr(e, "bad.safetensors") != NULL, "%s: message lacks file name: %s", what, e);
    if (needle) CHECK_MSG(strstr(e, needle) != NULL, "%s: message lacks '%s': %s", what, needle, e);
    if (g_verbose) printf("    %s\n", e);
    if (st == LM_OK) lm_st_close(s);
}

static void expect_bad_json(const char *json, size_t dlen, lm_status want, const char *needle) {
    size_t n;
    uint8_t *b = make_st(json, NULL, dlen, &n);
    expect_bad(json, b, n, want, needle);
    free(b);
}

#define T1(dt, shape, offs) "{\"t\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static void test_truncated(void) {
    size_t n;
    uint8_t *b = valid_file(&n);
    expect_bad("empty file", b, 0, LM_ERR_FORMAT, "truncated");
    expect_bad("5 bytes", b, 5, LM_ERR_FORMAT, "truncated");
    expect_bad("cut in header", b, 8 + 40, LM_ERR_FORMAT, "truncated");
    expect_bad("cut in data", b, n - 4, LM_ERR_FORMAT, "exceeds data section");
    expect_bad("only length", b, 8, LM_ERR_FORMAT, "truncated");

    // Header length larger than the file, including absurd values.
    b[0] = 0xFF;
    b[1] = 0x7F;
    expect_bad("header len > file", b, n, LM_ERR_FORMAT, "header length");
    memset(b, 0xFF, 8);
    expect_bad("header len 2^64-1", b, n, LM_ERR_FORMAT, "header length");
    free(b);

    // Header length 0: nothing to parse.
    uint8_t z[8] = {0};
    expect_bad("header len 0", z, 8, LM_ERR_FORMAT, "JSON");
}

static void test_bad_offsets(void) {
    expect_bad_json(T1("F32", "[4]", "[0,1000]"), 16, LM_ERR_FORMAT, "exceeds data section");
    expect_bad_json(T1("F32", "[1]", "[8,4]"), 16, LM_ERR_FORMAT, "end 4 < begin 8");
    expect_bad_json(T1("F32", "[2]", "[0,12]"), 16, LM_ERR_FORMAT, "needs 8");
    expect_bad_json(T1("BF16", "[3]", "[0,8]"), 16, LM_ERR_FORMAT, "needs 6");
    expect_bad_json(T1("F32", "[1]", "[0]"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json(T1("F32", "[1]", "[0,4,8]"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json(T1("F32", "[1]", "[-4,0]"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json(T1("F32", "[1]", "[0.5,4.5]"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json(T1("F32", "[1]", "[\"0\",4]"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json(T1("F32", "[1]", "[1e300,1e300]"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json(T1("F32", "[1]", "{\"a\":1}"), 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 16, LM_ERR_FORMAT, "data_offsets");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                    16, LM_ERR_FORMAT, "overlap");
    // Identical ranges overlap too; a zero-size tensor inside another does not.
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                    16, LM_ERR_FORMAT, "overlap");
    size_t n;
    uint8_t *b = make_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                         NULL, 8, &n);
    CHECK_MSG(lm_st_parse(b, n, "ok", NULL, NULL) == LM_OK, "%s", lm_last_error());
    free(b);
}

static void test_bad_dtype_shape(void) {
    expect_bad_json(T1("Q4_K", "[1]", "[0,4]"), 4, LM_ERR_FORMAT, "unknown dtype 'Q4_K'");
    expect_bad_json(T1("f32", "[1]", "[0,4]"), 4, LM_ERR_FORMAT, "unknown dtype");
    expect_bad_json("{\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT,
                    "dtype");
    expect_bad_json("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT, "dtype");
    expect_bad_json("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT, "shape");
    expect_bad_json(T1("F32", "4", "[0,4]"), 4, LM_ERR_FORMAT, "shape");
    expect_bad_json(T1("F32", "[-1]", "[0,4]"), 4, LM_ERR_FORMAT, "shape[0]");
    expect_bad_json(T1("F32", "[1,1.5]", "[0,4]"), 4, LM_ERR_FORMAT, "shape[1]");
    expect_bad_json(T1("F32", "[1e30]", "[0,4]"), 4, LM_ERR_FORMAT, "shape[0]");
    expect_bad_json(T1("F32", "[9007199254740993]", "[0,4]"), 4, LM_ERR_FORMAT, "shape[0]");
    expect_bad_json(T1("F32", "[null]", "[0,4]"), 4, LM_ERR_FORMAT, "shape[0]");
    expect_bad_json(T1("F32", "[true]", "[0,4]"), 4, LM_ERR_FORMAT, "shape[0]");
    expect_bad_json(T1("F32", "[4294967296,4294967296,4294967296]", "[0,4]"), 4, LM_ERR_FORMAT,
                    "overflow");
    expect_bad_json(T1("F32", "[4611686018427387]", "[0,4]"), 4, LM_ERR_FORMAT, "needs");
    expect_bad_json(T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, LM_ERR_UNSUPPORTED, "dimensions");
    expect_bad_json(T1("F4", "[3]", "[0,2]"), 4, LM_ERR_FORMAT, "whole bytes");
    expect_bad_json("{\"t\":[1,2]}", 4, LM_ERR_FORMAT, "not a JSON object");
    expect_bad_json("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, LM_ERR_FORMAT, "appears twice");
    // Eight dimensions are fine.
    size_t n;
    uint8_t *b = make_st(T1("F32", "[1,1,1,1,1,1,1,2]", "[0,8]"), NULL, 8, &n);
    CHECK_MSG(lm_st_parse(b, n, "ok", NULL, NULL) == LM_OK, "%s", lm_last_error());
    free(b);
}

static void test_bad_json(void) {
    expect_bad_json("[1,2]", 0, LM_ERR_FORMAT, "not an object");
    expect_bad_json("\"str\"", 0, LM_ERR_FORMAT, "not an object");
    expect_bad_json("42", 0, LM_ERR_FORMAT, "not an object");
    expect_bad_json("null", 0, LM_ERR_FORMAT, "not an object");
    expect_bad_json("{\"a\": {", 0, LM_ERR_FORMAT, "not valid JSON");
    expect_bad_json("not json at all", 0, LM_ERR_FORMAT, "not valid JSON");
    expect_bad_json("{\"a\":1,}", 0, LM_ERR_FORMAT, "not valid JSON");
    expect_bad_json("{} xyz", 0, LM_ERR_FORMAT, "after the header");
    expect_bad_json("{}{}", 0, LM_ERR_FORMAT, "after the header");
    expect_bad_json("{\"__metadata__\":[1]}", 0, LM_ERR_FORMAT, "__metadata__");
    expect_bad_json("{\"__metadata__\":{\"a\":1}}", 0, LM_ERR_FORMAT, "__metadata__");
    // A NUL inside the header.
    size_t n;
    uint8_t *b = make_st("{}      ", NULL, 0, &n);
    b[8 + 3] = 0;
    expect_bad("NUL in header", b, n, LM_ERR_FORMAT, "NUL");
    free(b);
}

static void test_open_errors(void) {
    const char *dir = new_dir();
    char path[256];
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    lm_st_set *s = NULL;
    CHECK(lm_st_open_file(path, &s) == LM_ERR_IO && s == NULL);
    CHECK(strstr(lm_last_error(), "missing.safetensors") != NULL);
    CHECK(strstr(lm_last_error(), "no such file") != NULL);
    CHECK(lm_st_open_file(dir, &s) == LM_ERR_IO && s == NULL);  // a directory
    CHECK(strstr(lm_last_error(), dir) != NULL);

    // Empty directory, missing directory.
    CHECK(lm_st_open_dir(dir, &s) == LM_ERR_IO && s == NULL);
    CHECK(strstr(lm_last_error(), "no model.safetensors") != NULL);
    CHECK(strstr(lm_last_error(), dir) != NULL);
    CHECK(lm_st_open_dir(path, &s) == LM_ERR_IO && s == NULL);
    CHECK(strstr(lm_last_error(), "missing.safetensors") != NULL);
}

// ------------------------------------------------------------ directories ---

static void write_st(const char *dir, const char *name, const char *json, const void *d, size_t dl) {
    size_t n;
    uint8_t *b = make_st(json, d, dl, &n);
    write_file(dir, name, b, n);
    free(b);
}

#define SH1 "model-00001-of-00002.safetensors"
#define SH2 "model-00002-of-00002.safetensors"
#define SHARD1_JSON                                                   \
    "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}," \
    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"
#define SHARD2_JSON                                                   \
    "{\"c\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[0,4]}," \
    "\"extra\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}"

static const char *sharded_dir(const char *index) {
    const char *dir = new_dir();
    const uint8_t d1[8] = {0x80, 0x3F, 0x00, 0x40, 0, 0, 0x80, 0x3F};  // bf16 1, 2; f32 1
    const uint8_t d2[8] = {0x00, 0x3C, 0x00, 0x38, 1, 2, 3, 4};        // f16 1, 0.5
    write_st(dir, SH1, SHARD1_JSON, d1, 8);
    write_st(dir, SH2, SHARD2_JSON, d2, 8);
    if (index) write_text(dir, "model.safetensors.index.json", index);
    return dir;
}

static void expect_dir_bad(const char *dir, lm_status want, const char *n1, const char *n2) {
    lm_st_set *s = (lm_st_set *)&want;
    lm_status st = lm_st_open_dir(dir, &s);
    const char *e = lm_last_error();
    CHECK_MSG(st == want, "status %s, want %s (%s)", lm_status_str(st), lm_status_str(want), e);
    CHECK(s == NULL);
    if (n1) CHECK_MSG(strstr(e, n1) != NULL, "message lacks '%s': %s", n1, e);
    if (n2) CHECK_MSG(strstr(e, n2) != NULL, "message lacks '%s': %s", n2, e);
    if (g_verbose) printf("    %s\n", e);
    if (st == LM_OK) lm_st_close(s);
}

static void test_sharded(void) {
    const char *dir = sharded_dir("{\"metadata\":{\"total_size\":16},\"weight_map\":{"
                                  "\"a\":\"" SH1 "\",\"b\":\"" SH1 "\",\"c\":\"" SH2 "\"}}");
    lm_st_set *s = NULL;
    lm_status st = lm_st_open_dir(dir, &s);
    CHECK_MSG(st == LM_OK, "%s", lm_last_error());
    if (!s) return;
    CHECK(lm_st_count(s) == 4);  // "extra" is not in the index, still loaded
    const lm_st_tensor *a = lm_st_find(s, "a"), *b = lm_st_find(s, "b"), *c = lm_st_find(s, "c");
    CHECK(a && b && c && lm_st_find(s, "extra"));
    if (a && b && c) {
        CHECK(a->file == b->file && a->file != c->file);
        CHECK(strstr(lm_st_file_path(s, a->file), SH1) != NULL);
        CHECK(strstr(lm_st_file_path(s, c->file), SH2) != NULL);
        CHECK(rd16(a->data, 1) == 0x4000 && rdf32(b->data, 0) == 1.0f);
        CHECK(c->ndim == 2 && c->shape[1] == 2 && rd16(c->data, 1) == 0x3800);
    }
    lm_st_close(s);
}

static void test_sharded_errors(void) {
    const char *idx = "model.safetensors.index.json";
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"" SH1 "\",\"x\":\"missing.safetensors\"}}"),
                   LM_ERR_IO, "missing.safetensors", idx);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"" SH1 "\",\"nope\":\"" SH2 "\"}}"),
                   LM_ERR_NOT_FOUND, "'nope'", SH2);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"" SH2 "\"}}"), LM_ERR_NOT_FOUND, "'a'", SH2);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"../" SH1 "\"}}"), LM_ERR_FORMAT, "../",
                   idx);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"..\"}}"), LM_ERR_FORMAT, idx, NULL);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"/etc/passwd\"}}"), LM_ERR_FORMAT, idx, NULL);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"sub/x.safetensors\"}}"), LM_ERR_FORMAT, idx,
                   NULL);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":\"\"}}"), LM_ERR_FORMAT, idx, NULL);
    expect_dir_bad(sharded_dir("{\"weight_map\":{\"a\":1}}"), LM_ERR_FORMAT, idx, "'a'");
    expect_dir_bad(sharded_dir("{\"weight_map\":[]}"), LM_ERR_FORMAT, idx, "weight_map");
    expect_dir_bad(sharded_dir("{\"weight_map\":{}}"), LM_ERR_FORMAT, idx, "empty");
    expect_dir_bad(sharded_dir("{\"metadata\":{}}"), LM_ERR_FORMAT, idx, "weight_map");
    expect_dir_bad(sharded_dir("{\"weight_map\":{"), LM_ERR_FORMAT, idx, "JSON");
    expect_dir_bad(sharded_dir(""), LM_ERR_FORMAT, idx, "JSON");

    // A corrupt shard: its own message names it.
    const char *dir = sharded_dir("{\"weight_map\":{\"a\":\"" SH1 "\",\"c\":\"" SH2 "\"}}");
    write_st(dir, SH2, T1("F32", "[4]", "[0,16]"), NULL, 8);
    expect_dir_bad(dir, LM_ERR_FORMAT, SH2, "exceeds data section");

    // The same name in two shards.
    dir = sharded_dir("{\"weight_map\":{\"a\":\"" SH1 "\",\"c\":\"" SH2 "\"}}");
    write_st(dir, SH2,
             "{\"c\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[0,4]},"
             "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
             NULL, 8);
    expect_dir_bad(dir, LM_ERR_FORMAT, "'b'", "both");
}

static void test_dir_fallbacks(void) {
    // One non-standard file name: accepted.
    const char *dir = new_dir();
    write_st(dir, "weights.safetensors", SHARD1_JSON, NULL, 8);
    write_text(dir, "config.json", "{}");
    lm_st_set *s = NULL;
    CHECK_MSG(lm_st_open_dir(dir, &s) == LM_OK, "%s", lm_last_error());
    CHECK(lm_st_count(s) == 2 && lm_st_find(s, "b"));
    lm_st_close(s);

    // Two and no index: ambiguous.
    dir = sharded_dir(NULL);
    expect_dir_bad(dir, LM_ERR_FORMAT, dir, "2 *.safetensors");

    // model.safetensors wins over other files.
    write_st(dir, "model.safetensors", SHARD2_JSON, NULL, 8);
    s = NULL;
    CHECK_MSG(lm_st_open_dir(dir, &s) == LM_OK, "%s", lm_last_error());
    CHECK(lm_st_count(s) == 2 && lm_st_find(s, "extra") && !lm_st_find(s, "a"));
    lm_st_close(s);

    // Trailing slash on the directory.
    char slash[256];
    snprintf(slash, sizeof slash, "%s/", dir);
    s = NULL;
    CHECK_MSG(lm_st_open_dir(slash, &s) == LM_OK, "%s", lm_last_error());
    if (s) CHECK(strstr(lm_st_file_path(s, 0), "//") == NULL);
    lm_st_close(s);
}

// A table of a few thousand tensors: find must return each by name.
static void test_many(void) {
    enum { N = 3000 };
    size_t cap = N * 80 + 16, len = 0;
    char *json = malloc(cap);
    len += (size_t)snprintf(json + len, cap - len, "{");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(json + len, cap - len,
                                "%s\"model.layers.%d.w\":{\"dtype\":\"BF16\",\"shape\":[1],"
                                "\"data_offsets\":[%d,%d]}",
                                i ? "," : "", N - 1 - i, 2 * i, 2 * i + 2);
    snprintf(json + len, cap - len, "}");
    const char *dir = new_dir();
    write_st(dir, "model.safetensors", json, NULL, 2 * N);
    free(json);
    lm_st_set *s = NULL;
    CHECK_MSG(lm_st_open_dir(dir, &s) == LM_OK, "%s", lm_last_error());
    CHECK(lm_st_count(s) == N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.w", i);
        const lm_st_tensor *t = lm_st_find(s, name);
        if (!t || strcmp(t->name, name) != 0 || t->nbytes != 2) bad++;
    }
    CHECK(bad == 0);
    lm_st_close(s);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(p);
}

int main(void) {
    g_verbose = getenv("LM_TEST_VERBOSE") != NULL;
    snprintf(g_root, sizeof g_root, "/tmp/lm_st_test_XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_dtypes);
    RUN(test_parse_memory);
    RUN(test_callback_error);
    RUN(test_open_file);
    RUN(test_truncated);
    RUN(test_bad_offsets);
    RUN(test_bad_dtype_shape);
    RUN(test_bad_json);
    RUN(test_open_errors);
    RUN(test_sharded);
    RUN(test_sharded_errors);
    RUN(test_dir_fallbacks);
    RUN(test_many);
    nftw(g_root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return tl_finish();
}
