// The PCRE2 wrapper of the tokenizer: Oniguruma-style patterns, limits and budgets.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"
#include "util/file.h"

// ------------------------------------------------------------------ regex ---

// The patterns in tokenizer.json are written for Oniguruma, whose Unicode \s
// is [\t\n\v\f\r\x85] plus the Z categories; PCRE2's (with UCP) lacks U+0085.
// Rewrite \s and \S so both engines cut text the same way.
#define ONIG_SPACE "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}"

static bool translate_pattern(const char *p, lm_buf *out) {
    bool in_class = false;
    for (size_t i = 0; p[i]; i++) {
        char c = p[i];
        if (c == '\\' && p[i + 1]) {
            char d = p[++i];
            bool ok;
            if (d == 's')
                ok = lm_buf_put(out, in_class ? ONIG_SPACE : "[" ONIG_SPACE "]",
                                strlen(ONIG_SPACE) + (in_class ? 0 : 2));
            else if (d == 'S' && !in_class)
                ok = lm_buf_put(out, "[^" ONIG_SPACE "]", strlen(ONIG_SPACE) + 3);
            else
                ok = lm_buf_put(out, p + i - 1, 2);
            if (!ok) return false;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            if (!lm_buf_put(out, "[", 1)) return false;
            // a ']' right after '[' or '[^' is a literal, not the end
            if (p[i + 1] == '^') {
                if (!lm_buf_put(out, "^", 1)) return false;
                i++;
            }
            if (p[i + 1] == ']') {
                if (!lm_buf_put(out, "]", 1)) return false;
                i++;
            }
            continue;
        }
        if (in_class && c == ']') in_class = false;
        if (!lm_buf_put(out, &c, 1)) return false;
    }
    return lm_buf_put(out, "", 1);
}

// Backtracking frames of the interpreter (the JIT falls back to it when its
// stack is exhausted) and the match steps of one match call.
#define TK_REGEX_HEAP_KIB (64u << 10)
#define TK_REGEX_MATCH_LIMIT 10000000u

lm_status tk_regex_compile(tk_regex *re, const char *pattern, bool literal, const char *what) {
    lm_buf pat = {0};
    if (literal) {
        if (!lm_buf_put(&pat, pattern, strlen(pattern) + 1)) return LM_ERR_OOM;
    } else if (!translate_pattern(pattern, &pat)) {
        lm_buf_free(&pat);
        return LM_ERR_OOM;
    }
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C);
    re->code = pcre2_compile((PCRE2_SPTR)pat.p, pat.n - 1, opts, &code, &off, NULL);
    lm_buf_free(&pat);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return lm_err(LM_ERR_UNSUPPORTED, "%s: regex '%.200s%s' does not compile: %s (offset %zu)", what, pattern,
                      strlen(pattern) > 200 ? "..." : "", (char *)msg, (size_t)off);
    }
    // JIT is an optimisation only: without it pcre2_match interprets.
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    re->mctx = pcre2_match_context_create(NULL);
    size_t wn = strlen(what) + 220;
    re->what = malloc(wn);
    if (!re->mctx || !re->what) return lm_err(LM_ERR_OOM, "%s: out of memory", what);
    pcre2_set_heap_limit(re->mctx, TK_REGEX_HEAP_KIB);
    pcre2_set_match_limit(re->mctx, TK_REGEX_MATCH_LIMIT);
    snprintf(re->what, wn, "%s '%.120s%s'", what, pattern, strlen(pattern) > 120 ? "..." : "");
    return LM_OK;
}

void tk_regex_free(tk_regex *re) {
    pcre2_code_free(re->code);
    pcre2_match_context_free(re->mctx);
    free(re->what);
    re->code = NULL;
    re->mctx = NULL;
    re->what = NULL;
}

static _Thread_local double tk_deadline, tk_budget_s, tk_base = 5.0;

void tk_budget_base(double seconds) { tk_base = seconds; }

void tk_budget_begin(size_t bytes) {
    tk_budget_s = tk_base + 10.0 * (double)bytes / 1e6;
    tk_deadline = lm_now() + tk_budget_s;
}

void tk_budget_end(void) { tk_deadline = 0; }

bool tk_budget_exceeded(void) { return tk_deadline > 0 && lm_now() > tk_deadline; }

static bool segs_add(tk_segs *o, size_t s, size_t e, bool match) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        tk_seg *v = realloc(o->v, cap * sizeof *v);
        if (!v) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory");
            return false;
        }
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = (tk_seg){s, e, match};
    return true;
}

lm_status tk_regex_segments(const tk_regex *re, const char *s, size_t n, tk_segs *out) {
    out->n = 0;
    if (n == 0) return segs_add(out, 0, 0, false) ? LM_OK : LM_ERR_OOM;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    if (!md) return lm_err(LM_ERR_OOM, "tokenizer: out of memory for regex match data");
    lm_status st = LM_OK;
    size_t prev = 0, pos = 0;
    bool have_last = false;
    size_t last_end = 0;
    uint32_t flags = PCRE2_NO_UTF_CHECK;  // input was validated once up front
    for (unsigned iter = 1; pos <= n; iter++) {
        if (tk_deadline > 0 && iter % 64 == 0 && lm_now() > tk_deadline) {
            st = lm_err(LM_ERR_INVALID_ARG, "%s: matching this text takes more than %.1f s (the pattern's matching "
                        "grows faster than the text)", re->what ? re->what : "tokenizer", tk_budget_s);
            break;
        }
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, flags, md, re->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(flags & PCRE2_NO_JIT)) {
            flags |= PCRE2_NO_JIT;  // the interpreter keeps its backtracking on the heap
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = lm_err(LM_ERR_INVALID_ARG, "%s: regex match failed on the text: %s%s", re->what ? re->what : "tokenizer",
                        (char *)msg,
                        rc == PCRE2_ERROR_MATCHLIMIT ? " (the pattern backtracks without bound)"
                        : rc == PCRE2_ERROR_HEAPLIMIT ? " (the pattern needs more than 64 MB of backtracking memory)"
                                                      : "");
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && have_last && last_end == me) {
            // an empty match right after the previous one: step one character
            uint32_t cp;
            int l = pos < n ? lm_utf8_next(s + pos, n - pos, &cp) : 1;
            pos += l ? l : 1;
            continue;
        }
        if (prev != ms && !segs_add(out, prev, ms, false)) { st = LM_ERR_OOM; break; }
        if (!segs_add(out, ms, me, true)) { st = LM_ERR_OOM; break; }
        prev = me;
        have_last = true;
        last_end = me;
        if (me == ms) {
            uint32_t cp;
            int l = me < n ? lm_utf8_next(s + me, n - me, &cp) : 1;
            pos = me + (l ? l : 1);
        } else {
            pos = me;
        }
    }
    pcre2_match_data_free(md);
    if (st == LM_OK && prev != n && !segs_add(out, prev, n, false)) st = LM_ERR_OOM;
    return st;
}
