// Chat-template values: the arena, errors, Python's equality/ordering, the
// text forms jinja2 produces (str, repr, markupsafe escape, transformers'
// tojson), JSON into values, and Python's str semantics over UTF-8.
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "template/jinja_int.h"
#include "template/jinja_unicode.h"
#include "util/err.h"

// ---------------------------------------------------------------- arena

struct jblk {
    jblk *next;
    size_t used, cap;
    max_align_t data[];
};

#define JA_BLOCK (64 * 1024)

void *ja_alloc(jctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    jblk *h = c->arena;
    if (h && h->cap - h->used >= n) {
        void *p = (char *)h->data + h->used;
        h->used += n;
        memset(p, 0, n);
        return p;
    }
    size_t cap = n > JA_BLOCK / 4 ? n : JA_BLOCK;
    if (c->arena_used + cap + sizeof(jblk) > c->arena_limit)
        jfail(c, LM_ERR_RANGE, -1, "the template needs more than %zu MiB of memory",
              c->arena_limit >> 20);
    jblk *b = malloc(sizeof(jblk) + cap);
    if (!b) jfail(c, LM_ERR_OOM, -1, "out of memory");
    c->arena_used += cap + sizeof(jblk);
    b->cap = cap;
    b->used = n;
    if (h && cap > JA_BLOCK && h->cap - h->used >= JA_BLOCK / 8) {
        // a big block: keep bumping in the current one
        b->next = h->next;
        h->next = b;
    } else {
        b->next = h;
        c->arena = b;
    }
    memset(b->data, 0, n);
    return b->data;
}

// Grows the last allocation of the current block in place when it can.
static bool ja_extend(jctx *c, void *p, size_t old, size_t want) {
    jblk *h = c->arena;
    if (!h || !p) return false;
    old = (old + 15) & ~(size_t)15;
    want = (want + 15) & ~(size_t)15;
    if ((char *)p + old != (char *)h->data + h->used) return false;
    if (h->cap - (h->used - old) < want) return false;
    h->used = h->used - old + want;
    return true;
}

char *ja_strdup(jctx *c, const char *s, size_t n) {
    char *p = ja_alloc(c, n + 1);
    if (n) memcpy(p, s, n);
    return p;
}

void ja_free_all(jctx *c) {
    jblk *b = c->arena;
    while (b) {
        jblk *nx = b->next;
        free(b);
        b = nx;
    }
    c->arena = NULL;
    c->arena_used = 0;
}

_Noreturn void jfail(jctx *c, lm_status st, long pos, const char *fmt, ...) {
    size_t o = 0;
    if (pos >= 0 && c->src && (size_t)pos <= c->src_len) {
        int line = 1, col = 1;
        for (size_t i = 0; i < (size_t)pos; i++) {
            unsigned char ch = (unsigned char)c->src[i];
            if (ch == '\n') {
                line++;
                col = 1;
            } else if ((ch & 0xC0) != 0x80) {
                col++;
            }
        }
        o = (size_t)snprintf(c->msg, sizeof c->msg, "line %d, column %d: ", line, col);
        if (o >= sizeof c->msg) o = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg + o, sizeof c->msg - o, fmt, ap);
    va_end(ap);
    c->st = st;
    longjmp(c->jb, 1);
}

// ---------------------------------------------------------------- strings

void sb_put(jctx *c, jsb *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t want = b->cap * 2;
        if (want < b->n + n + 1) want = b->n + n + 1;
        if (want < 64) want = 64;
        if (!ja_extend(c, b->p, b->cap, want)) {
            char *p = ja_alloc(c, want);
            if (b->n) memcpy(p, b->p, b->n);
            b->p = p;
        }
        b->cap = want;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void sb_putc(jctx *c, jsb *b, char ch) { sb_put(c, b, &ch, 1); }
void sb_puts(jctx *c, jsb *b, const char *s) { sb_put(c, b, s, strlen(s)); }
void sb_printf(jctx *c, jsb *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(c, b, tmp, (size_t)n);
        return;
    }
    char *p = ja_alloc(c, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(c, b, p, (size_t)n);
}
void sb_put_cp(jctx *c, jsb *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_put(c, b, u, n);
}

// ---------------------------------------------------------------- UTF-8

bool utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

uint32_t utf8_next(const char *s, size_t n, size_t *i) {
    const unsigned char *p = (const unsigned char *)s;
    unsigned char c = p[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    uint32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < len && *i + k < n; k++) cp = (cp << 6) | (p[*i + k] & 0x3F);
    *i += len;
    if (*i > n) *i = n;
    return cp;
}

size_t utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

size_t utf8_offsets(jctx *c, const char *s, size_t len, size_t **off) {
    size_t n = utf8_count(s, len);
    size_t *o = ja_alloc(c, (n + 1) * sizeof *o);
    size_t k = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) o[k++] = i;
    o[n] = len;
    *off = o;
    return n;
}

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}
#define IN_TABLE(t, cp) in_ranges(t, sizeof t / sizeof t[0], cp)

bool py_isspace(uint32_t cp) {
    if (cp < 0x80) return (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x20);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}
bool py_islinebreak(uint32_t cp) {
    return (cp >= 0x0A && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1E) || cp == 0x85 || cp == 0x2028 ||
           cp == 0x2029;
}
bool py_cased(uint32_t cp) { return IN_TABLE(JU_CASED, cp); }
bool py_case_ignorable(uint32_t cp) { return IN_TABLE(JU_CASE_IGNORABLE, cp); }
bool py_printable(uint32_t cp) { return !IN_TABLE(JU_NOT_PRINTABLE, cp); }
static bool py_lower_char(uint32_t cp) { return IN_TABLE(JU_LOWER, cp); }
static bool py_upper_char(uint32_t cp) { return IN_TABLE(JU_UPPER, cp); }
static bool py_title_char(uint32_t cp) {
    return py_cased(cp) && !py_lower_char(cp) && !py_upper_char(cp);
}

static const uint32_t *multi_lookup(const uint32_t (*t)[4], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < t[mid][0]) hi = mid;
        else if (cp > t[mid][0]) lo = mid + 1;
        else return t[mid] + 1;
    }
    return NULL;
}
#define MULTI(t, cp) multi_lookup(t, sizeof t / sizeof t[0], cp)

enum { CASE_LOWER, CASE_UPPER, CASE_TITLE };

static void put_mapped(jctx *c, jsb *b, uint32_t cp, int which) {
    const uint32_t *m = which == CASE_LOWER   ? MULTI(JU_LOWER_MULTI, cp)
                        : which == CASE_UPPER ? MULTI(JU_UPPER_MULTI, cp)
                                              : MULTI(JU_TITLE_MULTI, cp);
    if (m) {
        for (int k = 0; k < 3 && m[k]; k++) sb_put_cp(c, b, m[k]);
        return;
    }
    utf8proc_int32_t r = which == CASE_LOWER   ? utf8proc_tolower((utf8proc_int32_t)cp)
                         : which == CASE_UPPER ? utf8proc_toupper((utf8proc_int32_t)cp)
                                               : utf8proc_totitle((utf8proc_int32_t)cp);
    sb_put_cp(c, b, (uint32_t)r);
}

static uint32_t *decode_all(jctx *c, const char *s, size_t n, size_t *count) {
    size_t k = utf8_count(s, n);
    uint32_t *cps = ja_alloc(c, (k + 1) * sizeof *cps);
    size_t i = 0, j = 0;
    while (i < n) cps[j++] = utf8_next(s, n, &i);
    *count = j;
    return cps;
}

// Python's lower_ucs4: the final-sigma rule for U+03A3.
static void put_lower_at(jctx *c, jsb *b, const uint32_t *cps, size_t n, size_t i) {
    if (cps[i] != 0x3A3) {
        put_mapped(c, b, cps[i], CASE_LOWER);
        return;
    }
    size_t j = i;
    uint32_t ch = 0;
    bool found = false;
    while (j > 0) {
        ch = cps[--j];
        if (!py_case_ignorable(ch)) {
            found = true;
            break;
        }
    }
    bool final_sigma = found && py_cased(ch);
    if (final_sigma && i + 1 < n) {
        for (j = i + 1; j < n; j++) {
            ch = cps[j];
            if (!py_case_ignorable(ch)) break;
        }
        final_sigma = j == n || !py_cased(ch);
    }
    sb_put_cp(c, b, final_sigma ? 0x3C2 : 0x3C3);
}

static bool all_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return false;
    return true;
}

jv ps_lower(jctx *c, const char *s, size_t n) {
    jsb b = {0};
    if (all_ascii(s, n)) {
        char *p = ja_alloc(c, n + 1);
        for (size_t i = 0; i < n; i++) p[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
        return jv_str(p, n);
    }
    size_t k;
    uint32_t *cps = decode_all(c, s, n, &k);
    sb_put(c, &b, "", 0);
    for (size_t i = 0; i < k; i++) put_lower_at(c, &b, cps, k, i);
    return jv_str(b.p, b.n);
}

jv ps_upper(jctx *c, const char *s, size_t n) {
    if (all_ascii(s, n)) {
        char *p = ja_alloc(c, n + 1);
        for (size_t i = 0; i < n; i++) p[i] = (s[i] >= 'a' && s[i] <= 'z') ? (char)(s[i] - 32) : s[i];
        return jv_str(p, n);
    }
    jsb b = {0};
    sb_put(c, &b, "", 0);
    size_t i = 0;
    while (i < n) put_mapped(c, &b, utf8_next(s, n, &i), CASE_UPPER);
    return jv_str(b.p, b.n);
}

jv ps_title(jctx *c, const char *s, size_t n) {
    size_t k;
    uint32_t *cps = decode_all(c, s, n, &k);
    jsb b = {0};
    sb_put(c, &b, "", 0);
    bool prev_cased = false;
    for (size_t i = 0; i < k; i++) {
        if (prev_cased) put_lower_at(c, &b, cps, k, i);
        else put_mapped(c, &b, cps[i], CASE_TITLE);
        prev_cased = py_cased(cps[i]);
    }
    return jv_str(b.p, b.n);
}

jv ps_capitalize(jctx *c, const char *s, size_t n) {
    size_t k;
    uint32_t *cps = decode_all(c, s, n, &k);
    jsb b = {0};
    sb_put(c, &b, "", 0);
    for (size_t i = 0; i < k; i++) {
        if (i == 0) put_mapped(c, &b, cps[i], CASE_TITLE);
        else put_lower_at(c, &b, cps, k, i);
    }
    return jv_str(b.p, b.n);
}

bool ps_islower(const char *s, size_t n) {
    bool cased = false;
    size_t i = 0;
    while (i < n) {
        uint32_t cp = utf8_next(s, n, &i);
        if (py_upper_char(cp) || py_title_char(cp)) return false;
        if (!cased && py_lower_char(cp)) cased = true;
    }
    return cased;
}

bool ps_isupper(const char *s, size_t n) {
    bool cased = false;
    size_t i = 0;
    while (i < n) {
        uint32_t cp = utf8_next(s, n, &i);
        if (py_lower_char(cp) || py_title_char(cp)) return false;
        if (!cased && py_upper_char(cp)) cased = true;
    }
    return cased;
}

// ---------------------------------------------------------------- containers

jlist *jl_new(jctx *c, size_t cap) {
    jlist *l = ja_alloc(c, sizeof *l);
    if (cap) l->v = ja_alloc(c, cap * sizeof(jv));
    l->cap = cap;
    return l;
}

void jl_push(jctx *c, jlist *l, jv v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        if (!ja_extend(c, l->v, l->cap * sizeof(jv), cap * sizeof(jv))) {
            jv *nv = ja_alloc(c, cap * sizeof(jv));
            if (l->n) memcpy(nv, l->v, l->n * sizeof(jv));
            l->v = nv;
        }
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

jv jv_list(jlist *l, int kind) {
    jv v = {.t = JV_LIST, .k = (uint8_t)kind};
    v.u.l = l;
    return v;
}

jdict *jd_new(jctx *c, size_t cap) {
    jdict *d = ja_alloc(c, sizeof *d);
    if (cap) {
        d->k = ja_alloc(c, cap * sizeof(jv));
        d->v = ja_alloc(c, cap * sizeof(jv));
    }
    d->cap = cap;
    return d;
}

static long jd_find(const jdict *d, jv key) {
    if (key.t == JV_STR) {
        for (size_t i = 0; i < d->n; i++)
            if (d->k[i].t == JV_STR && d->k[i].u.s.n == key.u.s.n &&
                memcmp(d->k[i].u.s.p, key.u.s.p, key.u.s.n) == 0)
                return (long)i;
        return -1;
    }
    for (size_t i = 0; i < d->n; i++)
        if (jv_eq(d->k[i], key)) return (long)i;
    return -1;
}

void jd_set(jctx *c, jdict *d, jv key, jv val) {
    long i = jd_find(d, key);
    if (i >= 0) {
        d->v[i] = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *nk = ja_alloc(c, cap * sizeof(jv)), *nv = ja_alloc(c, cap * sizeof(jv));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(jv));
            memcpy(nv, d->v, d->n * sizeof(jv));
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n] = val;
    d->n++;
}

bool jd_get(const jdict *d, jv key, jv *out) {
    long i = jd_find(d, key);
    if (i < 0) return false;
    *out = d->v[i];
    return true;
}

bool jd_get_str(const jdict *d, const char *key, size_t n, jv *out) {
    return jd_get(d, jv_str(key, n), out);
}

// ---------------------------------------------------------------- semantics

const char *jv_typename(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return v.k == JS_MARKUP ? "Markup" : "str";
    case JV_LIST:
        switch (v.k) {
        case JL_TUPLE: return "tuple";
        case JL_GEN: return "generator";
        case JL_RANGE: return "range";
        case JL_KEYS: return "dict_keys";
        case JL_VALUES: return "dict_values";
        case JL_ITEMS: return "dict_items";
        default: return "list";
        }
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "function";
    default: return "builtin_function_or_method";
    }
}

bool jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL:
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.k == JL_GEN ? true : v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

bool jv_hashable(jv v) {
    if (v.t == JV_LIST) {
        if (v.k != JL_TUPLE && v.k != JL_GEN && v.k != JL_RANGE) return false;
        if (v.k == JL_TUPLE)
            for (size_t i = 0; i < v.u.l->n; i++)
                if (!jv_hashable(v.u.l->v[i])) return false;
        return true;
    }
    return v.t != JV_DICT;
}

// Exact comparison of an int64 and a double (Python compares exactly).
static int cmp_int_float(int64_t a, double b) {
    if (isnan(b)) return 2;  // unordered
    long double la = (long double)a, lb = (long double)b;
    return la < lb ? -1 : la > lb ? 1 : 0;
}

// -1, 0, 1, or 2 when unordered (NaN).
static int num_cmp(jv a, jv b) {
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) return a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
    if (a.t == JV_FLOAT && b.t == JV_FLOAT) {
        if (isnan(a.u.f) || isnan(b.u.f)) return 2;
        return a.u.f < b.u.f ? -1 : a.u.f > b.u.f;
    }
    if (a.t == JV_FLOAT) {
        int r = cmp_int_float(b.u.i, a.u.f);
        return r == 2 ? 2 : -r;
    }
    return cmp_int_float(a.u.i, b.u.f);
}

static bool seq_eq(const jlist *a, const jlist *b) {
    if (a->n - a->pos != b->n - b->pos) return false;
    for (size_t i = 0; i < a->n - a->pos; i++)
        if (!jv_eq(a->v[a->pos + i], b->v[b->pos + i])) return false;
    return true;
}

bool jv_eq(jv a, jv b) {
    if (jv_isnum(a) && jv_isnum(b)) return num_cmp(a, b) == 0;
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JV_LIST:
        if (a.u.l == b.u.l) return true;
        if (a.k != b.k) {
            // list vs tuple and the like are never equal; keys views compare as sets
            return false;
        }
        if (a.k == JL_LIST || a.k == JL_TUPLE || a.k == JL_RANGE) return seq_eq(a.u.l, b.u.l);
        if (a.k == JL_KEYS || a.k == JL_ITEMS) {
            if (a.u.l->n != b.u.l->n) return false;
            for (size_t i = 0; i < a.u.l->n; i++) {
                bool found = false;
                for (size_t j = 0; j < b.u.l->n && !found; j++) found = jv_eq(a.u.l->v[i], b.u.l->v[j]);
                if (!found) return false;
            }
            return true;
        }
        return false;
    case JV_DICT: {
        const jdict *x = a.u.d, *y = b.u.d;
        if (x == y) return true;
        if (x->n != y->n) return false;
        for (size_t i = 0; i < x->n; i++) {
            jv w;
            if (!jd_get(y, x->k[i], &w) || !jv_eq(x->v[i], w)) return false;
        }
        return true;
    }
    case JV_NS: return a.u.d == b.u.d;
    case JV_LOOP: return a.u.lp == b.u.lp;
    case JV_MACRO: return a.u.m == b.u.m;
    case JV_FUNC: return a.k == b.k;
    case JV_METHOD: return a.u.mt == b.u.mt;
    default: return false;
    }
}

static const char *op_sym(int op) {
    return op == CMP_LT ? "<" : op == CMP_LE ? "<=" : op == CMP_GT ? ">" : ">=";
}

static bool apply_cmp(int r, int op) {
    if (r == 2) return false;
    switch (op) {
    case CMP_LT: return r < 0;
    case CMP_LE: return r <= 0;
    case CMP_GT: return r > 0;
    default: return r >= 0;
    }
}

bool jv_cmp(jctx *c, long pos, jv a, jv b, int op) {
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        if (u.u.s.p) jfail(c, LM_ERR_FORMAT, pos, "'%.*s' is undefined", (int)u.u.s.n, u.u.s.p);
        jfail(c, LM_ERR_FORMAT, pos, "an undefined value was compared with %s", op_sym(op));
    }
    if (jv_isnum(a) && jv_isnum(b)) return apply_cmp(num_cmp(a, b), op);
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t m = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int r = memcmp(a.u.s.p, b.u.s.p, m);
        if (r == 0) r = a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
        return apply_cmp(r < 0 ? -1 : r > 0, op);
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.k == b.k && (a.k == JL_LIST || a.k == JL_TUPLE)) {
        const jlist *x = a.u.l, *y = b.u.l;
        size_t i = 0;
        while (i < x->n && i < y->n && jv_eq(x->v[i], y->v[i])) i++;
        if (i < x->n && i < y->n) return jv_cmp(c, pos, x->v[i], y->v[i], op);
        int r = x->n < y->n ? -1 : x->n > y->n;
        return apply_cmp(r, op);
    }
    jfail(c, LM_ERR_FORMAT, pos, "'%s' not supported between instances of '%s' and '%s'", op_sym(op),
          jv_typename(a), jv_typename(b));
}

// ---------------------------------------------------------------- text forms

void py_float_repr(double f, char out[48]) {
    if (isnan(f)) {
        strcpy(out, "nan");
        return;
    }
    if (isinf(f)) {
        strcpy(out, f < 0 ? "-inf" : "inf");
        return;
    }
    if (f == 0) {
        strcpy(out, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    // The shortest digit string that reads back as f; among strings of that
    // length the one nearest to f (Python's repr, David Gay's mode 0).
    char digits[40];
    int nd = 0, exp10 = 0;
    bool neg = f < 0;
    double a = fabs(f);
    for (int prec = 1; prec <= 17; prec++) {
        char buf[48];
        snprintf(buf, sizeof buf, "%.*e", prec - 1, a);
        // mantissa digits and exponent
        long long m = 0;
        int e = 0, k = 0;
        const char *p = buf;
        for (; *p && *p != 'e'; p++)
            if (*p >= '0' && *p <= '9') {
                m = m * 10 + (*p - '0');
                k++;
            }
        e = atoi(p + 1);
        long long cand[3] = {m, m - 1, m + 1};
        int best = -1;
        for (int ci = 0; ci < 3 && best < 0; ci++) {
            long long mm = cand[ci];
            if (mm <= 0) continue;
            char t[64];
            snprintf(t, sizeof t, "%llde%d", mm, e - (k - 1));
            if (strtod(t, NULL) == a) best = ci;
        }
        if (best < 0) continue;
        long long mm = cand[best];
        int ee = e - (k - 1);  // value = mm * 10^ee
        char t[32];
        int tn = snprintf(t, sizeof t, "%lld", mm);
        while (tn > 1 && t[tn - 1] == '0') {
            t[--tn] = 0;
            ee++;
        }
        memcpy(digits, t, (size_t)tn + 1);
        nd = tn;
        exp10 = ee + nd;  // decimal point position: value = 0.digits * 10^exp10
        break;
    }
    if (nd == 0) {  // cannot happen: 17 digits always read back
        snprintf(out, 48, "%.17g", f);
        return;
    }
    char *o = out;
    if (neg) *o++ = '-';
    int decpt = exp10;
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -decpt; i++) *o++ = '0';
            memcpy(o, digits, (size_t)nd);
            o += nd;
        } else if (decpt >= nd) {
            memcpy(o, digits, (size_t)nd);
            o += nd;
            for (int i = 0; i < decpt - nd; i++) *o++ = '0';
            *o++ = '.';
            *o++ = '0';
        } else {
            memcpy(o, digits, (size_t)decpt);
            o += decpt;
            *o++ = '.';
            memcpy(o, digits + decpt, (size_t)(nd - decpt));
            o += nd - decpt;
        }
        *o = 0;
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)(nd - 1));
            o += nd - 1;
        }
        int e = decpt - 1;
        snprintf(o, 16, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
}

static void repr_str(jctx *c, jsb *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    sb_putc(c, b, q);
    size_t i = 0;
    while (i < n) {
        size_t st = i;
        uint32_t cp = utf8_next(s, n, &i);
        if (cp == (uint32_t)q || cp == '\\') {
            sb_putc(c, b, '\\');
            sb_putc(c, b, (char)cp);
        } else if (cp == '\t') {
            sb_puts(c, b, "\\t");
        } else if (cp == '\n') {
            sb_puts(c, b, "\\n");
        } else if (cp == '\r') {
            sb_puts(c, b, "\\r");
        } else if (cp < 0x20 || cp == 0x7F) {
            sb_printf(c, b, "\\x%02x", cp);
        } else if (cp < 0x7F || py_printable(cp)) {
            sb_put(c, b, s + st, i - st);
        } else if (cp <= 0xFF) {
            sb_printf(c, b, "\\x%02x", cp);
        } else if (cp <= 0xFFFF) {
            sb_printf(c, b, "\\u%04x", cp);
        } else {
            sb_printf(c, b, "\\U%08x", cp);
        }
    }
    sb_putc(c, b, q);
}

static void repr_items(jctx *c, long pos, jsb *b, const jlist *l, size_t from) {
    for (size_t i = from; i < l->n; i++) {
        if (i > from) sb_puts(c, b, ", ");
        jv_repr_to(c, pos, b, l->v[i]);
    }
}

void jv_repr_to(jctx *c, long pos, jsb *b, jv v) {
    char num[48];
    switch (v.t) {
    case JV_UNDEF: sb_puts(c, b, "Undefined"); return;
    case JV_NONE: sb_puts(c, b, "None"); return;
    case JV_BOOL: sb_puts(c, b, v.u.i ? "True" : "False"); return;
    case JV_INT: sb_printf(c, b, "%lld", (long long)v.u.i); return;
    case JV_FLOAT:
        py_float_repr(v.u.f, num);
        sb_puts(c, b, num);
        return;
    case JV_STR:
        if (v.k == JS_MARKUP) sb_puts(c, b, "Markup(");
        repr_str(c, b, v.u.s.p, v.u.s.n);
        if (v.k == JS_MARKUP) sb_putc(c, b, ')');
        return;
    case JV_LIST: {
        const jlist *l = v.u.l;
        switch (v.k) {
        case JL_LIST:
            sb_putc(c, b, '[');
            repr_items(c, pos, b, l, 0);
            sb_putc(c, b, ']');
            return;
        case JL_TUPLE:
            sb_putc(c, b, '(');
            repr_items(c, pos, b, l, 0);
            if (l->n == 1) sb_putc(c, b, ',');
            sb_putc(c, b, ')');
            return;
        case JL_RANGE:
            if (l->r2 == 1) sb_printf(c, b, "range(%lld, %lld)", (long long)l->r0, (long long)l->r1);
            else sb_printf(c, b, "range(%lld, %lld, %lld)", (long long)l->r0, (long long)l->r1, (long long)l->r2);
            return;
        case JL_KEYS:
        case JL_VALUES:
        case JL_ITEMS:
            sb_puts(c, b, v.k == JL_KEYS ? "dict_keys([" : v.k == JL_VALUES ? "dict_values([" : "dict_items([");
            repr_items(c, pos, b, l, 0);
            sb_puts(c, b, "])");
            return;
        default:
            jfail(c, LM_ERR_UNSUPPORTED, pos,
                  "a generator (the result of map, select, reject, selectattr, rejectattr, unique, items "
                  "or reverse) has no stable text form; convert it with |list first");
        }
    }
    case JV_DICT:
    case JV_NS: {
        const jdict *d = v.u.d;
        if (v.t == JV_NS) sb_puts(c, b, "<Namespace ");
        sb_putc(c, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) sb_puts(c, b, ", ");
            jv_repr_to(c, pos, b, d->k[i]);
            sb_puts(c, b, ": ");
            jv_repr_to(c, pos, b, d->v[i]);
        }
        sb_putc(c, b, '}');
        if (v.t == JV_NS) sb_putc(c, b, '>');
        return;
    }
    default:
        jfail(c, LM_ERR_UNSUPPORTED, pos, "a %s has no stable text form (jinja2 prints its memory address)",
              jv_typename(v));
    }
}

void jv_str_to(jctx *c, long pos, jsb *b, jv v) {
    if (v.t == JV_STR) sb_put(c, b, v.u.s.p, v.u.s.n);
    else if (v.t == JV_UNDEF) return;
    else jv_repr_to(c, pos, b, v);
}

jv jv_to_str(jctx *c, long pos, jv v) {
    if (v.t == JV_STR) return jv_str(v.u.s.p, v.u.s.n);
    if (v.t == JV_UNDEF) return jv_str("", 0);
    jsb b = {0};
    sb_put(c, &b, "", 0);
    jv_repr_to(c, pos, &b, v);
    return jv_str(b.p, b.n);
}

void js_escape_to(jctx *c, jsb *b, const char *s, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': rep = "&#39;"; break;
        case '"': rep = "&#34;"; break;
        default: continue;
        }
        sb_put(c, b, s + run, i - run);
        sb_puts(c, b, rep);
        run = i + 1;
    }
    sb_put(c, b, s + run, n - run);
}

// json.dumps' string encoder (ensure_ascii or not).
static void json_str(jctx *c, jsb *b, const char *s, size_t n, bool ascii) {
    sb_putc(c, b, '"');
    size_t i = 0, run = 0;
    while (i < n) {
        size_t st = i;
        uint32_t cp = utf8_next(s, n, &i);
        const char *rep = NULL;
        char tmp[16];
        if (cp == '"') rep = "\\\"";
        else if (cp == '\\') rep = "\\\\";
        else if (cp == '\n') rep = "\\n";
        else if (cp == '\r') rep = "\\r";
        else if (cp == '\t') rep = "\\t";
        else if (cp == '\b') rep = "\\b";
        else if (cp == '\f') rep = "\\f";
        else if (cp < 0x20 || (ascii && cp >= 0x7F)) {
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                snprintf(tmp, sizeof tmp, "\\u%04x", cp);
            }
            rep = tmp;
        }
        if (rep) {
            sb_put(c, b, s + run, st - run);
            sb_puts(c, b, rep);
            run = i;
        }
    }
    sb_put(c, b, s + run, n - run);
    sb_putc(c, b, '"');
}

static void json_float(jctx *c, jsb *b, double f) {
    char num[48];
    if (isnan(f)) sb_puts(c, b, "NaN");
    else if (isinf(f)) sb_puts(c, b, f < 0 ? "-Infinity" : "Infinity");
    else {
        py_float_repr(f, num);
        sb_puts(c, b, num);
    }
}

static void json_newline(jctx *c, jsb *b, const jjson_opts *o, int level) {
    sb_putc(c, b, '\n');
    for (int i = 0; i < level; i++) sb_put(c, b, o->indent, o->indent_n);
}

static void tojson_rec(jctx *c, long pos, jsb *b, jv v, const jjson_opts *o, int level) {
    if (level > 200) jfail(c, LM_ERR_RANGE, pos, "tojson: the value is nested too deeply");
    switch (v.t) {
    case JV_NONE: sb_puts(c, b, "null"); return;
    case JV_BOOL: sb_puts(c, b, v.u.i ? "true" : "false"); return;
    case JV_INT: sb_printf(c, b, "%lld", (long long)v.u.i); return;
    case JV_FLOAT: json_float(c, b, v.u.f); return;
    case JV_STR: json_str(c, b, v.u.s.p, v.u.s.n, o->ensure_ascii); return;
    case JV_LIST:
        if (v.k == JL_LIST || v.k == JL_TUPLE) {
            const jlist *l = v.u.l;
            if (l->n == 0) {
                sb_puts(c, b, "[]");
                return;
            }
            sb_putc(c, b, '[');
            if (o->indent) json_newline(c, b, o, level + 1);
            for (size_t i = 0; i < l->n; i++) {
                if (i) {
                    sb_put(c, b, o->item_sep, o->item_sep_n);
                    if (o->indent) json_newline(c, b, o, level + 1);
                }
                tojson_rec(c, pos, b, l->v[i], o, level + 1);
            }
            if (o->indent) json_newline(c, b, o, level);
            sb_putc(c, b, ']');
            return;
        }
        break;
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (d->n == 0) {
            sb_puts(c, b, "{}");
            return;
        }
        size_t *order = ja_alloc(c, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++) order[i] = i;
        if (o->sort_keys) {  // insertion sort: stable, and dicts here are small
            for (size_t i = 1; i < d->n; i++) {
                size_t x = order[i], j = i;
                while (j > 0 && jv_cmp(c, pos, d->k[x], d->k[order[j - 1]], CMP_LT)) {
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = x;
            }
        }
        sb_putc(c, b, '{');
        if (o->indent) json_newline(c, b, o, level + 1);
        for (size_t ii = 0; ii < d->n; ii++) {
            size_t i = order[ii];
            if (ii) {
                sb_put(c, b, o->item_sep, o->item_sep_n);
                if (o->indent) json_newline(c, b, o, level + 1);
            }
            jv k = d->k[i];
            switch (k.t) {
            case JV_STR: json_str(c, b, k.u.s.p, k.u.s.n, o->ensure_ascii); break;
            case JV_INT: sb_printf(c, b, "\"%lld\"", (long long)k.u.i); break;
            case JV_BOOL: sb_puts(c, b, k.u.i ? "\"true\"" : "\"false\""); break;
            case JV_NONE: sb_puts(c, b, "\"null\""); break;
            case JV_FLOAT:
                sb_putc(c, b, '"');
                json_float(c, b, k.u.f);
                sb_putc(c, b, '"');
                break;
            default:
                jfail(c, LM_ERR_FORMAT, pos, "tojson: keys must be str, int, float, bool or None, not %s",
                      jv_typename(k));
            }
            sb_put(c, b, o->key_sep, o->key_sep_n);
            tojson_rec(c, pos, b, d->v[i], o, level + 1);
        }
        if (o->indent) json_newline(c, b, o, level);
        sb_putc(c, b, '}');
        return;
    }
    default: break;
    }
    jfail(c, LM_ERR_FORMAT, pos, "tojson: Object of type %s is not JSON serializable", jv_typename(v));
}

void jv_tojson_to(jctx *c, long pos, jsb *b, jv v, const jjson_opts *o) { tojson_rec(c, pos, b, v, o, 0); }

// ---------------------------------------------------------------- JSON in

#define TWO53 9007199254740992.0

jv jv_from_cjson(jctx *c, const cJSON *j, int depth) {
    if (depth > 512) jfail(c, LM_ERR_RANGE, -1, "context: JSON nested more than 512 deep");
    if (cJSON_IsNull(j)) return jv_none();
    if (cJSON_IsBool(j)) return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) <= TWO53) return jv_int((int64_t)d);
        return jv_float(d);
    }
    if (cJSON_IsString(j)) {
        const char *s = j->valuestring ? j->valuestring : "";
        size_t n = strlen(s);
        if (!utf8_valid(s, n)) jfail(c, LM_ERR_INVALID_ARG, -1, "context: a string is not valid UTF-8");
        return jv_str(s, n);
    }
    if (cJSON_IsArray(j)) {
        jlist *l = jl_new(c, (size_t)cJSON_GetArraySize(j));
        const cJSON *it;
        cJSON_ArrayForEach(it, j) jl_push(c, l, jv_from_cjson(c, it, depth + 1));
        return jv_list(l, JL_LIST);
    }
    if (cJSON_IsObject(j)) {
        jdict *d = jd_new(c, (size_t)cJSON_GetArraySize(j));
        const cJSON *it;
        cJSON_ArrayForEach(it, j) {
            const char *k = it->string ? it->string : "";
            size_t kn = strlen(k);
            if (!utf8_valid(k, kn)) jfail(c, LM_ERR_INVALID_ARG, -1, "context: a key is not valid UTF-8");
            jd_set(c, d, jv_str(k, kn), jv_from_cjson(c, it, depth + 1));
        }
        jv v = {.t = JV_DICT};
        v.u.d = d;
        return v;
    }
    jfail(c, LM_ERR_INVALID_ARG, -1, "context: unsupported JSON value");
}

typedef struct {
    jctx *c;
    const char *s;
    size_t n, i;
} jp;

_Noreturn static void jp_fail(jp *p, const char *what) {
    jfail(p->c, LM_ERR_INVALID_ARG, -1, "context JSON: %s at offset %zu", what, p->i);
}

static void jp_ws(jp *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static bool jp_lit(jp *p, const char *lit) {
    size_t k = strlen(lit);
    if (p->n - p->i >= k && memcmp(p->s + p->i, lit, k) == 0) {
        p->i += k;
        return true;
    }
    return false;
}

static int hex4(jp *p) {
    if (p->n - p->i < 4) jp_fail(p, "truncated \\u escape");
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char ch = p->s[p->i++];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= ch - '0';
        else if (ch >= 'a' && ch <= 'f') v |= ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F') v |= ch - 'A' + 10;
        else jp_fail(p, "bad \\u escape");
    }
    return v;
}

static jv jp_string(jp *p) {
    p->i++;  // opening quote
    size_t st = p->i;
    // fast path: no escapes
    while (p->i < p->n && p->s[p->i] != '"' && p->s[p->i] != '\\') {
        if ((unsigned char)p->s[p->i] < 0x20) jp_fail(p, "control character in a string");
        p->i++;
    }
    if (p->i < p->n && p->s[p->i] == '"') {
        p->i++;
        return jv_str(p->s + st, p->i - 1 - st);
    }
    jsb b = {0};
    sb_put(p->c, &b, p->s + st, p->i - st);
    for (;;) {
        if (p->i >= p->n) jp_fail(p, "unterminated string");
        char ch = p->s[p->i];
        if (ch == '"') {
            p->i++;
            return jv_str(b.p, b.n);
        }
        if ((unsigned char)ch < 0x20) jp_fail(p, "control character in a string");
        if (ch != '\\') {
            sb_putc(p->c, &b, ch);
            p->i++;
            continue;
        }
        p->i++;
        if (p->i >= p->n) jp_fail(p, "unterminated string");
        ch = p->s[p->i++];
        switch (ch) {
        case '"': sb_putc(p->c, &b, '"'); break;
        case '\\': sb_putc(p->c, &b, '\\'); break;
        case '/': sb_putc(p->c, &b, '/'); break;
        case 'b': sb_putc(p->c, &b, '\b'); break;
        case 'f': sb_putc(p->c, &b, '\f'); break;
        case 'n': sb_putc(p->c, &b, '\n'); break;
        case 'r': sb_putc(p->c, &b, '\r'); break;
        case 't': sb_putc(p->c, &b, '\t'); break;
        case 'u': {
            uint32_t cp = (uint32_t)hex4(p);
            if (cp >= 0xD800 && cp <= 0xDBFF && p->n - p->i >= 6 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                size_t save = p->i;
                p->i += 2;
                uint32_t lo = (uint32_t)hex4(p);
                if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->i = save;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                jfail(p->c, LM_ERR_UNSUPPORTED, -1, "context JSON: a lone surrogate (\\u%04x) at offset %zu",
                      cp, p->i);
            sb_put_cp(p->c, &b, cp);
            break;
        }
        default: jp_fail(p, "invalid escape");
        }
    }
}

static jv jp_number(jp *p) {
    size_t st = p->i;
    if (p->s[p->i] == '-') p->i++;
    if (jp_lit(p, "Infinity")) return jv_float(-INFINITY);
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') jp_fail(p, "bad number");
    if (p->s[p->i] == '0') p->i++;
    else
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    bool is_float = false;
    if (p->i + 1 < p->n && p->s[p->i] == '.' && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9') {
        is_float = true;
        p->i++;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        size_t save = p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
            is_float = true;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
        } else {
            p->i = save;
        }
    }
    char buf[64];
    size_t len = p->i - st;
    char *t = len < sizeof buf ? buf : ja_alloc(p->c, len + 1);
    memcpy(t, p->s + st, len);
    t[len] = 0;
    if (is_float) return jv_float(strtod(t, NULL));
    errno = 0;
    long long v = strtoll(t, NULL, 10);
    if (errno == ERANGE)
        jfail(p->c, LM_ERR_UNSUPPORTED, -1, "context JSON: the integer %.40s does not fit in 64 bits", t);
    return jv_int(v);
}

static jv jp_value(jp *p, int depth) {
    if (depth > 512) jfail(p->c, LM_ERR_RANGE, -1, "context JSON: nested more than 512 deep");
    jp_ws(p);
    if (p->i >= p->n) jp_fail(p, "unexpected end");
    char ch = p->s[p->i];
    if (ch == '"') return jp_string(p);
    if (ch == '{') {
        p->i++;
        jdict *d = jd_new(p->c, 0);
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == '}') {
            p->i++;
        } else {
            for (;;) {
                jp_ws(p);
                if (p->i >= p->n || p->s[p->i] != '"') jp_fail(p, "expected a key");
                jv k = jp_string(p);
                jp_ws(p);
                if (p->i >= p->n || p->s[p->i] != ':') jp_fail(p, "expected ':'");
                p->i++;
                jv v = jp_value(p, depth + 1);
                jd_set(p->c, d, k, v);
                jp_ws(p);
                if (p->i < p->n && p->s[p->i] == ',') {
                    p->i++;
                    continue;
                }
                if (p->i < p->n && p->s[p->i] == '}') {
                    p->i++;
                    break;
                }
                jp_fail(p, "expected ',' or '}'");
            }
        }
        jv v = {.t = JV_DICT};
        v.u.d = d;
        return v;
    }
    if (ch == '[') {
        p->i++;
        jlist *l = jl_new(p->c, 0);
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == ']') {
            p->i++;
        } else {
            for (;;) {
                jl_push(p->c, l, jp_value(p, depth + 1));
                jp_ws(p);
                if (p->i < p->n && p->s[p->i] == ',') {
                    p->i++;
                    continue;
                }
                if (p->i < p->n && p->s[p->i] == ']') {
                    p->i++;
                    break;
                }
                jp_fail(p, "expected ',' or ']'");
            }
        }
        return jv_list(l, JL_LIST);
    }
    if (jp_lit(p, "true")) return jv_bool(true);
    if (jp_lit(p, "false")) return jv_bool(false);
    if (jp_lit(p, "null")) return jv_none();
    if (jp_lit(p, "NaN")) return jv_float(NAN);
    if (jp_lit(p, "Infinity")) return jv_float(INFINITY);
    if (ch == '-' || (ch >= '0' && ch <= '9')) return jp_number(p);
    jp_fail(p, "unexpected character");
}

jv jv_from_json_text(jctx *c, const char *s, size_t n) {
    if (!utf8_valid(s, n)) jfail(c, LM_ERR_INVALID_ARG, -1, "context JSON is not valid UTF-8");
    jp p = {c, s, n, 0};
    jv v = jp_value(&p, 0);
    jp_ws(&p);
    if (p.i != n) jp_fail(&p, "extra data after the value");
    return v;
}
