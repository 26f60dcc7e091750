// Tokenizer helpers: buffers, UTF-8, hash tables and the PCRE2 wrapper.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "util/err.h"
#include "util/file.h"

// ---------------------------------------------------------------- buffers ---

bool tk_buf_reserve(tk_buf *b, size_t extra) {
    // Allocates even for 0 bytes: users index b->p + offset after any put.
    if (b->p && b->cap - b->n >= extra) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < extra) {
        if (cap > SIZE_MAX / 2) {
            lm_err(LM_ERR_OOM, "tokenizer: buffer size overflow");
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        lm_err(LM_ERR_OOM, "tokenizer: out of memory growing a buffer to %zu bytes", cap);
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

bool tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (!tk_buf_reserve(b, n)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    return true;
}

void tk_buf_free(tk_buf *b) {
    free(b->p);
    *b = (tk_buf){0};
}

bool tk_ids_push(tk_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory for %zu ids", cap);
            return false;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return true;
}

struct tk_arena_block {
    struct tk_arena_block *next;
    size_t used, cap;
    char data[];
};

char *tk_arena_dup(tk_arena *a, const char *s, size_t n) {
    struct tk_arena_block *b = a->head;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > (1u << 20) ? n + 1 : (1u << 20);
        b = malloc(sizeof *b + cap);
        if (!b) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory");
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    char *p = b->data + b->used;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    b->used += n + 1;
    return p;
}

void tk_arena_free(tk_arena *a) {
    while (a->head) {
        struct tk_arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

// ------------------------------------------------------------------ UTF-8 ---

int tk_utf8_next(const char *str, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;  // no overlong forms
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
    } else
        return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t v = c & (0x7F >> len);
    for (int i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return len;
}

int tk_utf8_step(const char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    int l = tk_utf8_next(s, n, cp);
    if (l) return l;
    *cp = 0xFFFD;
    return 1;
}

size_t tk_utf8_invalid_at(const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        int l = tk_utf8_next(s + i, n - i, &cp);
        if (!l) return i;
        i += l;
    }
    return n;
}

bool tk_utf8_valid(const char *s, size_t n) { return tk_utf8_invalid_at(s, n) == n; }

int tk_utf8_encode(uint32_t cp, char t[4]) {
    if (cp < 0x80) {
        t[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    t[0] = (char)(0xF0 | (cp >> 18));
    t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    t[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool tk_utf8_put(tk_buf *b, uint32_t cp) {
    char t[4];
    return tk_buf_put(b, t, (size_t)tk_utf8_encode(cp, t));
}

// Bytes of the invalid sequence starting at s: the lead byte plus the
// continuation bytes that still formed a valid prefix (Unicode's "maximal
// subpart", what Rust replaces with one U+FFFD).
static size_t invalid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    size_t k = 1;
    if (k < n && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k <= (size_t)need && k < n && (s[k] & 0xC0) == 0x80) k++;
    }
    return k;
}

bool tk_utf8_lossy(tk_buf *out, const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        size_t j = i;  // copy the longest valid run at once
        while (j < n) {
            int l = tk_utf8_next(s + j, n - j, &cp);
            if (!l) break;
            j += l;
        }
        if (!tk_buf_put(out, s + i, j - i)) return false;
        if (j == n) break;
        if (!tk_buf_put(out, "\xEF\xBF\xBD", 3)) return false;
        i = j + invalid_len((const unsigned char *)s + j, n - j);
    }
    return true;
}

bool tk_is_whitespace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// ----------------------------------------------------------------- hashes ---

struct tk_sm_entry {
    const char *key;  // NULL: empty slot
    uint32_t len, hash;
    int32_t val;
};

static uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

static size_t pow2_cap(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2) cap *= 2;  // load factor <= 1/2
    return cap;
}

bool tk_strmap_init(tk_strmap *m, size_t expected) {
    m->cap = pow2_cap(expected);
    m->n = 0;
    m->e = calloc(m->cap, sizeof *m->e);
    if (!m->e) lm_err(LM_ERR_OOM, "tokenizer: out of memory for a hash table");
    return m->e != NULL;
}

static bool strmap_grow(tk_strmap *m) {
    tk_strmap bigger = {calloc(m->cap * 2, sizeof *m->e), m->cap * 2, m->n};
    if (!bigger.e) {
        lm_err(LM_ERR_OOM, "tokenizer: out of memory for a hash table");
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].key) continue;
        size_t j = m->e[i].hash & (bigger.cap - 1);
        while (bigger.e[j].key) j = (j + 1) & (bigger.cap - 1);
        bigger.e[j] = m->e[i];
    }
    free(m->e);
    *m = bigger;
    return true;
}

bool tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && !strmap_grow(m)) return false;
    uint32_t h = hash_bytes(key, len);
    size_t i = h & (m->cap - 1);
    for (;; i = (i + 1) & (m->cap - 1)) {
        struct tk_sm_entry *e = &m->e[i];
        if (!e->key) {
            *e = (struct tk_sm_entry){key, (uint32_t)len, h, val};
            m->n++;
            return true;
        }
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->val = val;
            return true;
        }
    }
}

int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len) {
    if (!m->e) return -1;
    uint32_t h = hash_bytes(key, len);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const struct tk_sm_entry *e = &m->e[i];
        if (!e->key) return -1;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) return e->val;
    }
}

void tk_strmap_free(tk_strmap *m) {
    free(m->e);
    *m = (tk_strmap){0};
}

struct tk_pm_entry {
    uint64_t key;
    int32_t rank;  // -1: empty slot
    int32_t new_id;
};

static size_t pair_slot(uint64_t key, size_t cap) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

bool tk_pairmap_init(tk_pairmap *m, size_t expected) {
    m->cap = pow2_cap(expected);
    m->n = 0;
    m->e = malloc(m->cap * sizeof *m->e);
    if (!m->e) {
        lm_err(LM_ERR_OOM, "tokenizer: out of memory for the merges table");
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) m->e[i].rank = -1;
    return true;
}

bool tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        tk_pairmap bigger;
        if (!tk_pairmap_init(&bigger, m->cap)) return false;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->e[i].rank < 0) continue;
            size_t j = pair_slot(m->e[i].key, bigger.cap);
            while (bigger.e[j].rank >= 0) j = (j + 1) & (bigger.cap - 1);
            bigger.e[j] = m->e[i];
        }
        bigger.n = m->n;
        free(m->e);
        *m = bigger;
    }
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = pair_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        struct tk_pm_entry *e = &m->e[i];
        if (e->rank < 0) {
            *e = (struct tk_pm_entry){key, rank, new_id};
            m->n++;
            return true;
        }
        if (e->key == key) {  // a repeated merge: the later one wins, as in tokenizers
            e->rank = rank;
            e->new_id = new_id;
            return true;
        }
    }
}

bool tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *new_id) {
    if (!m->e) return false;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = pair_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        const struct tk_pm_entry *e = &m->e[i];
        if (e->rank < 0) return false;
        if (e->key == key) {
            *rank = e->rank;
            *new_id = e->new_id;
            return true;
        }
    }
}

void tk_pairmap_free(tk_pairmap *m) {
    free(m->e);
    *m = (tk_pairmap){0};
}

// ------------------------------------------------------------------ regex ---

// The patterns in tokenizer.json are written for Oniguruma, whose Unicode \s
// is [\t\n\v\f\r\x85] plus the Z categories; PCRE2's (with UCP) lacks U+0085.
// Rewrite \s and \S so both engines cut text the same way.
#define ONIG_SPACE "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}"

static bool translate_pattern(const char *p, tk_buf *out) {
    bool in_class = false;
    for (size_t i = 0; p[i]; i++) {
        char c = p[i];
        if (c == '\\' && p[i + 1]) {
            char d = p[++i];
            bool ok;
            if (d == 's')
                ok = tk_buf_put(out, in_class ? ONIG_SPACE : "[" ONIG_SPACE "]",
                                strlen(ONIG_SPACE) + (in_class ? 0 : 2));
            else if (d == 'S' && !in_class)
                ok = tk_buf_put(out, "[^" ONIG_SPACE "]", strlen(ONIG_SPACE) + 3);
            else
                ok = tk_buf_put(out, p + i - 1, 2);
            if (!ok) return false;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            if (!tk_buf_put(out, "[", 1)) return false;
            // a ']' right after '[' or '[^' is a literal, not the end
            if (p[i + 1] == '^') {
                if (!tk_buf_put(out, "^", 1)) return false;
                i++;
            }
            if (p[i + 1] == ']') {
                if (!tk_buf_put(out, "]", 1)) return false;
                i++;
            }
            continue;
        }
        if (in_class && c == ']') in_class = false;
        if (!tk_buf_put(out, &c, 1)) return false;
    }
    return tk_buf_put(out, "", 1);
}

// Backtracking frames of the interpreter (the JIT falls back to it when its
// stack is exhausted) and the match steps of one match call.
#define TK_REGEX_HEAP_KIB (64u << 10)
#define TK_REGEX_MATCH_LIMIT 10000000u

lm_status tk_regex_compile(tk_regex *re, const char *pattern, bool literal, const char *what) {
    tk_buf pat = {0};
    if (literal) {
        if (!tk_buf_put(&pat, pattern, strlen(pattern) + 1)) return LM_ERR_OOM;
    } else if (!translate_pattern(pattern, &pat)) {
        tk_buf_free(&pat);
        return LM_ERR_OOM;
    }
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C);
    re->code = pcre2_compile((PCRE2_SPTR)pat.p, pat.n - 1, opts, &code, &off, NULL);
    tk_buf_free(&pat);
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
            int l = pos < n ? tk_utf8_next(s + pos, n - pos, &cp) : 1;
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
            int l = me < n ? tk_utf8_next(s + me, n - me, &cp) : 1;
            pos = me + (l ? l : 1);
        } else {
            pos = me;
        }
    }
    pcre2_match_data_free(md);
    if (st == LM_OK && prev != n && !segs_add(out, prev, n, false)) st = LM_ERR_OOM;
    return st;
}
