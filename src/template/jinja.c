// Chat templates: lexer, parser and API. The lexer follows jinja2's
// (lexer.py) with trim_blocks and lstrip_blocks on and keep_trailing_newline
// off; the parser follows jinja2's grammar (parser.py) and refuses, with a
// line and column, everything the interpreter does not implement.
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/jinja.h"
#include "template/jinja_int.h"
#include "util/err.h"

#define JX_NAME2(c, s) s,
const char *const jfilter_names[F_COUNT_] = {JFILTERS(JX_NAME2)};
const char *const jtest_names[T_COUNT_] = {JTESTS(JX_NAME2)};
#undef JX_NAME2
#define JX_NAME1(c) #c,
const char *const jmethod_names[M_COUNT_] = {JMETHODS(JX_NAME1)};
#undef JX_NAME1

static int lookup(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}
int jfilter_lookup(const char *name) { return lookup(jfilter_names, F_COUNT_, name); }
int jtest_lookup(const char *name) { return lookup(jtest_names, T_COUNT_, name); }
int jmethod_lookup(const char *name) { return lookup(jmethod_names, M_COUNT_, name); }

// jinja2's filters and tests that are not implemented here (a template using
// one is refused as unsupported, not as unknown).
static const char *const UNSUPPORTED_FILTERS[] = {
    "batch", "center", "filesizeformat", "format", "groupby", "pprint", "random", "slice",
    "striptags", "truncate", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", NULL};
// Python str methods not implemented (the others the engine has).
static const char *const UNSUPPORTED_METHODS[] = {
    "casefold", "center", "encode", "expandtabs", "format", "format_map", "isascii", "isdecimal",
    "isidentifier", "isnumeric", "isprintable", "istitle", "ljust", "maketrans", "rjust",
    "swapcase", "translate", "zfill", "fromkeys", NULL};
// Methods the immutable sandbox refuses (jinja2 fails when they are called,
// and so does the interpreter): accepted by the parser.
static const char *const SANDBOX_METHODS[] = {"append", "clear", "extend", "insert", "pop", "popitem",
                                              "remove", "reverse", "setdefault", "sort", "update", NULL};

static bool in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return true;
    return false;
}

bool jinja_known_filter(const char *name) {
    return jfilter_lookup(name) >= 0 || in_list(UNSUPPORTED_FILTERS, name);
}

// ---------------------------------------------------------------- lexer

enum { TK_EOF, TK_DATA, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END, TK_NAME, TK_STRING, TK_INT,
       TK_FLOAT, TK_OP };

typedef struct tok {
    uint8_t t, op;
    int32_t pos;
    const char *s;  // name / decoded string / data (NUL-terminated)
    size_t n;
    int64_t i;
    double f;
} tok;

typedef struct lexer {
    jctx *c;
    const char *src;
    size_t len, pos;
    tok *toks;
    size_t n, cap;
    bool line_starting;
} lexer;

static tok *emit(lexer *L, int t, size_t pos) {
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        tok *nt = ja_alloc(L->c, cap * sizeof *nt);
        if (L->n) memcpy(nt, L->toks, L->n * sizeof *nt);
        L->toks = nt;
        L->cap = cap;
    }
    tok *k = &L->toks[L->n++];
    memset(k, 0, sizeof *k);
    k->t = (uint8_t)t;
    k->pos = (int32_t)pos;
    return k;
}

static uint32_t cp_at(const lexer *L, size_t i, size_t *next) {
    size_t j = i;
    uint32_t cp = utf8_next(L->src, L->len, &j);
    if (next) *next = j;
    return cp;
}

static size_t skip_ws(const lexer *L, size_t i) {
    while (i < L->len) {
        size_t nx;
        if (!py_isspace(cp_at(L, i, &nx))) break;
        i = nx;
    }
    return i;
}

// Python's str.rstrip() of src[a:b]: the new end.
static size_t rstrip_end(const lexer *L, size_t a, size_t b) {
    while (b > a) {
        size_t st = b - 1;
        while (st > a && ((unsigned char)L->src[st] & 0xC0) == 0x80) st--;
        if (!py_isspace(cp_at(L, st, NULL))) break;
        b = st;
    }
    return b;
}

static bool only_ws(const lexer *L, size_t a, size_t b) {
    if (a >= b) return false;  // \s+ needs one
    while (a < b) {
        size_t nx;
        if (!py_isspace(cp_at(L, a, &nx))) return false;
        a = nx;
    }
    return true;
}

static void emit_data(lexer *L, size_t a, size_t b) {
    if (b <= a) return;
    tok *k = emit(L, TK_DATA, a);
    k->s = L->src + a;
    k->n = b - a;
}

// Text before a tag, with "-" (strip all whitespace before) and
// lstrip_blocks (strip the tag's own line's indentation) applied.
static void emit_text_before(lexer *L, size_t a, size_t b, char sign, bool is_var) {
    if (sign == '-') {
        b = rstrip_end(L, a, b);
    } else if (sign != '+' && !is_var) {
        size_t l_pos = a;
        for (size_t i = b; i > a; i--)
            if (L->src[i - 1] == '\n') {
                l_pos = i;
                break;
            }
        if ((l_pos > a || L->line_starting) && only_ws(L, l_pos, b)) b = l_pos;
    }
    emit_data(L, a, b);
}

// {%(-|+|)\s*raw\s*(-%}\s*|%}) at i: the end of the match, or 0.
static size_t match_raw(const lexer *L, size_t i, const char *word) {
    if (i + 2 > L->len || L->src[i] != '{' || L->src[i + 1] != '%') return 0;
    size_t j = i + 2;
    if (j < L->len && (L->src[j] == '-' || L->src[j] == '+')) j++;
    j = skip_ws(L, j);
    size_t wl = strlen(word);
    if (L->len - j < wl || memcmp(L->src + j, word, wl) != 0) return 0;
    j = skip_ws(L, j + wl);
    if (L->len - j >= 3 && L->src[j] == '-' && L->src[j + 1] == '%' && L->src[j + 2] == '}')
        return skip_ws(L, j + 3);
    if (L->len - j >= 2 && L->src[j] == '%' && L->src[j + 1] == '}') return j + 2;
    return 0;
}

// The endraw tag at i ({%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?)): its end, or 0.
static size_t match_endraw(const lexer *L, size_t i) {
    if (i + 2 > L->len || L->src[i] != '{' || L->src[i + 1] != '%') return 0;
    size_t j = i + 2;
    if (j < L->len && (L->src[j] == '-' || L->src[j] == '+')) j++;
    j = skip_ws(L, j);
    if (L->len - j < 6 || memcmp(L->src + j, "endraw", 6) != 0) return 0;
    j = skip_ws(L, j + 6);
    if (L->len - j >= 3 && L->src[j] == '+' && L->src[j + 1] == '%' && L->src[j + 2] == '}') return j + 3;
    if (L->len - j >= 3 && L->src[j] == '-' && L->src[j + 1] == '%' && L->src[j + 2] == '}')
        return skip_ws(L, j + 3);
    if (L->len - j >= 2 && L->src[j] == '%' && L->src[j + 1] == '}')
        return j + 2 + (j + 2 < L->len && L->src[j + 2] == '\n');
    return 0;
}

static bool isdig(char ch) { return ch >= '0' && ch <= '9'; }

// (\d+_)*\d+ at i: the end, or i when no digit.
static size_t digits_us(const lexer *L, size_t i) {
    if (i >= L->len || !isdig(L->src[i])) return i;
    while (i < L->len && isdig(L->src[i])) i++;
    while (i + 1 < L->len && L->src[i] == '_' && isdig(L->src[i + 1])) {
        i++;
        while (i < L->len && isdig(L->src[i])) i++;
    }
    return i;
}

static size_t match_float(const lexer *L, size_t i) {
    if (i > 0 && L->src[i - 1] == '.') return 0;
    size_t j = digits_us(L, i);
    if (j == i) return 0;
    // (\.digits)? e[+-]?digits
    size_t k = j;
    if (k < L->len && L->src[k] == '.') {
        size_t f = digits_us(L, k + 1);
        if (f > k + 1) k = f;
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t e = pass == 0 ? k : j;
        if (e < L->len && (L->src[e] == 'e' || L->src[e] == 'E')) {
            size_t s = e + 1;
            if (s < L->len && (L->src[s] == '+' || L->src[s] == '-')) s++;
            size_t x = digits_us(L, s);
            if (x > s) return x;
        }
        if (k == j) break;
    }
    if (j < L->len && L->src[j] == '.') {
        size_t f = digits_us(L, j + 1);
        if (f > j + 1) return f;
    }
    return 0;
}

static bool is_base_digit(char ch, int base) {
    if (base == 2) return ch == '0' || ch == '1';
    if (base == 8) return ch >= '0' && ch <= '7';
    if (base == 16) return isdig(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
    return isdig(ch);
}

static size_t match_int(const lexer *L, size_t i, int *base) {
    const char *s = L->src;
    if (i + 1 < L->len && s[i] == '0') {
        char x = s[i + 1];
        int b = (x == 'b' || x == 'B') ? 2 : (x == 'o' || x == 'O') ? 8 : (x == 'x' || x == 'X') ? 16 : 0;
        if (b) {  // 0b(_?[01])+
            size_t j = i + 2;
            for (;;) {
                size_t k = j;
                if (k < L->len && s[k] == '_') k++;
                if (k < L->len && is_base_digit(s[k], b)) j = k + 1;
                else break;
            }
            if (j > i + 2) {
                *base = b;
                return j;
            }
        }
    }
    if (i < L->len && s[i] >= '1' && s[i] <= '9') {
        size_t j = i + 1;
        for (;;) {
            size_t k = j;
            if (k < L->len && s[k] == '_') k++;
            if (k < L->len && isdig(s[k])) j = k + 1;
            else break;
        }
        *base = 10;
        return j;
    }
    if (i < L->len && s[i] == '0') {
        size_t j = i + 1;
        for (;;) {
            size_t k = j;
            if (k < L->len && s[k] == '_') k++;
            if (k < L->len && s[k] == '0') j = k + 1;
            else break;
        }
        *base = 10;
        return j;
    }
    return 0;
}

// Python's str.encode('ascii', 'backslashreplace').decode('unicode-escape')
// of a string literal's body.
static void decode_string(lexer *L, tok *k, size_t a, size_t b) {
    jctx *c = L->c;
    jsb asc = {0};
    sb_put(c, &asc, "", 0);
    size_t i = a;
    while (i < b) {
        uint32_t cp = cp_at(L, i, &i);
        if (cp < 0x80) sb_putc(c, &asc, (char)cp);
        else if (cp <= 0xFF) sb_printf(c, &asc, "\\x%02x", cp);
        else if (cp <= 0xFFFF) sb_printf(c, &asc, "\\u%04x", cp);
        else sb_printf(c, &asc, "\\U%08x", cp);
    }
    jsb out = {0};
    sb_put(c, &out, "", 0);
    const char *s = asc.p;
    size_t n = asc.n;
    for (size_t j = 0; j < n;) {
        if (s[j] != '\\') {
            sb_putc(c, &out, s[j++]);
            continue;
        }
        if (j + 1 >= n) jfail(c, LM_ERR_FORMAT, (long)k->pos, "\\ at end of string");
        char e = s[j + 1];
        j += 2;
        uint32_t cp;
        switch (e) {
        case '\n': continue;
        case '\\': sb_putc(c, &out, '\\'); continue;
        case '\'': sb_putc(c, &out, '\''); continue;
        case '"': sb_putc(c, &out, '"'); continue;
        case 'a': sb_putc(c, &out, '\a'); continue;
        case 'b': sb_putc(c, &out, '\b'); continue;
        case 'f': sb_putc(c, &out, '\f'); continue;
        case 'n': sb_putc(c, &out, '\n'); continue;
        case 'r': sb_putc(c, &out, '\r'); continue;
        case 't': sb_putc(c, &out, '\t'); continue;
        case 'v': sb_putc(c, &out, '\v'); continue;
        case 'x':
        case 'u':
        case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            cp = 0;
            for (int d = 0; d < nd; d++) {
                char h = j < n ? s[j] : 0;
                int v = isdig(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
                if (v < 0)
                    jfail(c, LM_ERR_FORMAT, (long)k->pos, "truncated \\%cXX escape in a string literal", e);
                cp = cp * 16 + (uint32_t)v;
                j++;
            }
            if (cp > 0x10FFFF)
                jfail(c, LM_ERR_FORMAT, (long)k->pos, "illegal Unicode character in a string literal");
            break;
        }
        case 'N':
            jfail(c, LM_ERR_UNSUPPORTED, (long)k->pos, "\\N{...} escapes in string literals are not supported");
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && j < n && s[j] >= '0' && s[j] <= '7'; d++) cp = cp * 8 + (uint32_t)(s[j++] - '0');
                break;
            }
            // an unknown escape is kept as it is
            sb_putc(c, &out, '\\');
            sb_putc(c, &out, e);
            continue;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF)
            jfail(c, LM_ERR_UNSUPPORTED, (long)k->pos, "a lone surrogate (\\u%04x) in a string literal", cp);
        sb_put_cp(c, &out, cp);
    }
    k->s = out.p;
    k->n = out.n;
}

static const struct {
    const char *s;
    uint8_t op;
} OPS[] = {{"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GTEQ},
           {"<=", OP_LTEQ},     {"+", OP_ADD},  {"-", OP_SUB}, {"/", OP_DIV}, {"*", OP_MUL},
           {"%", OP_MOD},       {"~", OP_TILDE}, {"[", OP_LBRACKET}, {"]", OP_RBRACKET},
           {"(", OP_LPAREN},    {")", OP_RPAREN}, {"{", OP_LBRACE}, {"}", OP_RBRACE},
           {">", OP_GT},        {"<", OP_LT},   {"=", OP_ASSIGN}, {".", OP_DOT}, {":", OP_COLON},
           {"|", OP_PIPE},      {",", OP_COMMA}, {";", OP_SEMICOLON}};

static const char *op_str(int op) {
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (OPS[i].op == op) return OPS[i].s;
    return "?";
}

// Tokens inside {{ }} or {% %}, up to and including the end tag.
static void lex_tag(lexer *L, bool is_block) {
    jctx *c = L->c;
    const char *s = L->src;
    char stack[256];
    int depth = 0;
    for (;;) {
        size_t i = L->pos;
        if (i >= L->len) return;  // the parser reports the missing end
        if (depth == 0) {
            size_t end = 0;
            bool trim_nl = false;
            if (is_block) {
                if (L->len - i >= 3 && s[i] == '+' && s[i + 1] == '%' && s[i + 2] == '}') end = i + 3;
                else if (L->len - i >= 3 && s[i] == '-' && s[i + 1] == '%' && s[i + 2] == '}') end = skip_ws(L, i + 3);
                else if (L->len - i >= 2 && s[i] == '%' && s[i + 1] == '}') {
                    end = i + 2;
                    trim_nl = true;
                }
            } else {
                if (L->len - i >= 3 && s[i] == '-' && s[i + 1] == '}' && s[i + 2] == '}') end = skip_ws(L, i + 3);
                else if (L->len - i >= 2 && s[i] == '}' && s[i + 1] == '}') end = i + 2;
            }
            if (end) {
                if (trim_nl && end < L->len && s[end] == '\n') end++;
                emit(L, is_block ? TK_BLOCK_END : TK_VAR_END, i);
                L->line_starting = s[end - 1] == '\n';
                L->pos = end;
                return;
            }
        }
        size_t nx;
        uint32_t cp = cp_at(L, i, &nx);
        if (py_isspace(cp)) {
            L->pos = skip_ws(L, i);
            continue;
        }
        size_t e;
        int base;
        if ((e = match_float(L, i))) {
            tok *k = emit(L, TK_FLOAT, i);
            char buf[128];
            size_t m = 0;
            for (size_t j = i; j < e && m < sizeof buf - 1; j++)
                if (s[j] != '_') buf[m++] = s[j];
            buf[m] = 0;
            k->f = strtod(buf, NULL);
            L->pos = e;
            continue;
        }
        if ((e = match_int(L, i, &base))) {
            tok *k = emit(L, TK_INT, i);
            size_t j = base == 10 ? i : i + 2;
            uint64_t v = 0;
            bool over = false;
            for (; j < e; j++) {
                char ch = s[j];
                if (ch == '_') continue;
                int d = isdig(ch) ? ch - '0' : (ch | 0x20) - 'a' + 10;
                if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) over = true;
                v = v * (uint64_t)base + (uint64_t)d;
            }
            if (over || v > (uint64_t)INT64_MAX)
                jfail(c, LM_ERR_UNSUPPORTED, (long)i, "integer literal %.*s does not fit in 64 bits", (int)(e - i), s + i);
            k->i = (int64_t)v;
            L->pos = e;
            continue;
        }
        if (cp == '_' || (cp < 0x80 && ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z'))) {
            size_t j = i + 1;
            while (j < L->len && (s[j] == '_' || isdig(s[j]) || ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z'))) j++;
            if (j < L->len && (unsigned char)s[j] >= 0x80 && !py_isspace(cp_at(L, j, NULL)))
                jfail(c, LM_ERR_UNSUPPORTED, (long)j, "non-ASCII identifiers are not supported");
            tok *k = emit(L, TK_NAME, i);
            k->s = ja_strdup(c, s + i, j - i);
            k->n = j - i;
            L->pos = j;
            continue;
        }
        if (cp == '\'' || cp == '"') {
            size_t j = i + 1;
            while (j < L->len && s[j] != (char)cp) j += s[j] == '\\' ? 2 : 1;
            if (j >= L->len) jfail(c, LM_ERR_FORMAT, (long)i, "unexpected char %s (an unterminated string)", cp == '"' ? "'\"'" : "\"'\"");
            tok *k = emit(L, TK_STRING, i);
            decode_string(L, k, i + 1, j);
            L->pos = j + 1;
            continue;
        }
        bool matched = false;
        for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++) {
            size_t ol = strlen(OPS[o].s);
            if (L->len - i >= ol && memcmp(s + i, OPS[o].s, ol) == 0) {
                char ch = OPS[o].s[0];
                if (ol == 1 && (ch == '{' || ch == '(' || ch == '[')) {
                    if (depth == (int)sizeof stack) jfail(c, LM_ERR_RANGE, (long)i, "brackets nested too deeply");
                    stack[depth++] = ch == '{' ? '}' : ch == '(' ? ')' : ']';
                } else if (ol == 1 && (ch == '}' || ch == ')' || ch == ']')) {
                    if (depth == 0) jfail(c, LM_ERR_FORMAT, (long)i, "unexpected '%c'", ch);
                    if (stack[depth - 1] != ch)
                        jfail(c, LM_ERR_FORMAT, (long)i, "unexpected '%c', expected '%c'", ch, stack[depth - 1]);
                    depth--;
                }
                tok *k = emit(L, TK_OP, i);
                k->op = OPS[o].op;
                L->pos = i + ol;
                matched = true;
                break;
            }
        }
        if (!matched) {
            if (cp >= 0x80 && cp != 0xFFFD)
                jfail(c, LM_ERR_UNSUPPORTED, (long)i, "unexpected character '%.*s' (non-ASCII identifiers are not supported)", (int)(nx - i), s + i);
            jfail(c, LM_ERR_FORMAT, (long)i, "unexpected char '%.*s'", (int)(nx - i), s + i);
        }
    }
}

static void lex(lexer *L) {
    const char *s = L->src;
    L->line_starting = true;
    while (L->pos < L->len) {
        // the next tag opener
        size_t p = L->pos;
        int kind = 0;  // '{', '%', '#'
        for (; p + 1 < L->len; p++) {
            if (s[p] == '{' && (s[p + 1] == '{' || s[p + 1] == '%' || s[p + 1] == '#')) {
                kind = s[p + 1];
                break;
            }
        }
        if (!kind) {
            emit_data(L, L->pos, L->len);
            L->pos = L->len;
            break;
        }
        char sign = (p + 2 < L->len && (s[p + 2] == '-' || s[p + 2] == '+')) ? s[p + 2] : 0;
        size_t raw_end = kind == '%' ? match_raw(L, p, "raw") : 0;
        emit_text_before(L, L->pos, p, sign, kind == '{');
        if (raw_end) {
            L->line_starting = s[raw_end - 1] == '\n';
            if (raw_end >= L->len) break;
            size_t q = raw_end, end = 0;
            for (; q + 1 < L->len; q++)
                if (s[q] == '{' && s[q + 1] == '%' && (end = match_endraw(L, q))) break;
            if (!end) jfail(L->c, LM_ERR_FORMAT, (long)p, "Missing end of raw directive");
            char esign = (q + 2 < L->len && (s[q + 2] == '-' || s[q + 2] == '+')) ? s[q + 2] : 0;
            emit_text_before(L, raw_end, q, esign, false);
            L->line_starting = s[end - 1] == '\n';
            L->pos = end;
            continue;
        }
        size_t body = p + 2 + (sign ? 1 : 0);
        L->line_starting = false;
        if (body >= L->len && kind == '#') break;  // "{#" ending the text: jinja2 stops there
        if (kind == '#') {
            size_t k = body;
            for (; k + 1 < L->len; k++)
                if (s[k] == '#' && s[k + 1] == '}') break;
            if (k + 1 >= L->len) jfail(L->c, LM_ERR_FORMAT, (long)p, "Missing end of comment tag");
            size_t end;
            if (k > body && s[k - 1] == '+') end = k + 2;
            else if (k > body && s[k - 1] == '-') end = skip_ws(L, k + 2);
            else end = k + 2 + (k + 2 < L->len && s[k + 2] == '\n');
            L->line_starting = s[end - 1] == '\n';
            L->pos = end;
            continue;
        }
        emit(L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, p);
        L->pos = body;
        lex_tag(L, kind == '%');
    }
    emit(L, TK_EOF, L->len);
}

// ---------------------------------------------------------------- parser

typedef struct parser {
    jctx *c;
    tok *t;
    size_t i;
    int depth;       // expression nesting
    int loops;       // enclosing for loops (inside the current macro)
    const char *const *end_stack[32];
    const char *tag_stack[32];
    int n_end;
} parser;

#define CUR (&p->t[p->i])

static const char *describe(const tok *k, char *buf, size_t n) {
    switch (k->t) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template data / text";
    case TK_VAR_BEGIN: return "begin of print statement";
    case TK_VAR_END: return "end of print statement";
    case TK_BLOCK_BEGIN: return "begin of statement block";
    case TK_BLOCK_END: return "end of statement block";
    case TK_NAME: return k->s;
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    default: snprintf(buf, n, "%s", op_str(k->op)); return buf;
    }
}

static bool is_name(const tok *k, const char *name) { return k->t == TK_NAME && !strcmp(k->s, name); }
static bool is_op(const tok *k, int op) { return k->t == TK_OP && k->op == op; }

static tok *next(parser *p) {
    tok *k = CUR;
    if (k->t != TK_EOF) p->i++;
    return k;
}

_Noreturn static void fail_unexpected(parser *p, const char *expected) {
    char b[8];
    tok *k = CUR;
    if (k->t == TK_EOF) jfail(p->c, LM_ERR_FORMAT, k->pos, "unexpected end of template, expected '%s'", expected);
    jfail(p->c, LM_ERR_FORMAT, k->pos, "expected token '%s', got '%s'", expected, describe(k, b, sizeof b));
}

static tok *expect_type(parser *p, int t, const char *what) {
    if (CUR->t != t) fail_unexpected(p, what);
    return next(p);
}
static void expect_op(parser *p, int op) {
    if (!is_op(CUR, op)) fail_unexpected(p, op_str(op));
    next(p);
}
static void expect_name(parser *p, const char *name) {
    if (!is_name(CUR, name)) fail_unexpected(p, name);
    next(p);
}

static jnode *mk(parser *p, int k, int32_t pos) {
    jnode *n = ja_alloc(p->c, sizeof *n);
    n->k = (uint8_t)k;
    n->pos = pos;
    return n;
}

typedef struct {
    jnode **v;
    int32_t n, cap;
} nvec;
static void nv_push(parser *p, nvec *v, jnode *x) {
    if (v->n == v->cap) {
        int32_t cap = v->cap ? v->cap * 2 : 4;
        jnode **nn = ja_alloc(p->c, (size_t)cap * sizeof *nn);
        if (v->n) memcpy(nn, v->v, (size_t)v->n * sizeof *nn);
        v->v = nn;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static jnode *parse_expression(parser *p, bool with_condexpr);
static jnode *parse_tuple(parser *p, bool simplified, bool with_condexpr, const char *extra_end,
                          bool explicit_parens, bool with_namespace);
static jnode *parse_primary(parser *p, bool with_namespace);
static jnode *parse_unary(parser *p, bool with_filter);
static jnode **subparse(parser *p, const char *const *end_tokens, int32_t *n);

static void enter(parser *p) {
    if (++p->depth > 150) jfail(p->c, LM_ERR_RANGE, CUR->pos, "expression nested too deeply");
}
static void leave(parser *p) { p->depth--; }

static jnode *parse_condexpr(parser *p);
static jnode *parse_or(parser *p);

static jnode *parse_expression(parser *p, bool with_condexpr) {
    return with_condexpr ? parse_condexpr(p) : parse_or(p);
}

static jnode *parse_condexpr(parser *p) {
    enter(p);
    int32_t pos = CUR->pos;
    jnode *e1 = parse_or(p);
    while (is_name(CUR, "if")) {
        next(p);
        jnode *e2 = parse_or(p);
        jnode *e3 = NULL;
        if (is_name(CUR, "else")) {
            next(p);
            e3 = parse_condexpr(p);
        }
        jnode *n = mk(p, N_COND, pos);
        n->a = e2;
        n->b = e1;
        n->c = e3;
        e1 = n;
        pos = CUR->pos;
    }
    leave(p);
    return e1;
}

static jnode *parse_not(parser *p);
static jnode *parse_and(parser *p) {
    jnode *l = parse_not(p);
    while (is_name(CUR, "and")) {
        int32_t pos = next(p)->pos;
        jnode *n = mk(p, N_AND, pos);
        n->a = l;
        n->b = parse_not(p);
        l = n;
    }
    return l;
}
static jnode *parse_or(parser *p) {
    enter(p);
    jnode *l = parse_and(p);
    while (is_name(CUR, "or")) {
        int32_t pos = next(p)->pos;
        jnode *n = mk(p, N_OR, pos);
        n->a = l;
        n->b = parse_and(p);
        l = n;
    }
    leave(p);
    return l;
}

static jnode *parse_compare(parser *p);
static jnode *parse_not(parser *p) {
    if (is_name(CUR, "not")) {
        enter(p);
        int32_t pos = next(p)->pos;
        jnode *n = mk(p, N_NOT, pos);
        n->a = parse_not(p);
        leave(p);
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_math1(parser *p);
static jnode *parse_compare(parser *p) {
    int32_t pos = CUR->pos;
    jnode *e = parse_math1(p);
    nvec ops = {0};
    uint8_t opk[64];
    for (;;) {
        int c = -1;
        tok *k = CUR;
        if (k->t == TK_OP) {
            switch (k->op) {
            case OP_EQ: c = C_EQ; break;
            case OP_NE: c = C_NE; break;
            case OP_LT: c = C_LT; break;
            case OP_LTEQ: c = C_LE; break;
            case OP_GT: c = C_GT; break;
            case OP_GTEQ: c = C_GE; break;
            default: break;
            }
            if (c >= 0) next(p);
        } else if (is_name(k, "in")) {
            c = C_IN;
            next(p);
        } else if (is_name(k, "not") && is_name(k + 1, "in")) {
            c = C_NOTIN;
            next(p);
            next(p);
        }
        if (c < 0) break;
        if (ops.n == 64) jfail(p->c, LM_ERR_RANGE, k->pos, "too many chained comparisons");
        opk[ops.n] = (uint8_t)c;
        nv_push(p, &ops, parse_math1(p));
    }
    if (!ops.n) return e;
    jnode *n = mk(p, N_COMPARE, pos);
    n->a = e;
    n->v = ops.v;
    n->n = ops.n;
    n->ops = ja_alloc(p->c, (size_t)ops.n);
    memcpy(n->ops, opk, (size_t)ops.n);
    return n;
}

static jnode *binop(parser *p, int op, int32_t pos, jnode *a, jnode *b) {
    jnode *n = mk(p, N_BINOP, pos);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_concat(parser *p);
static jnode *parse_math1(parser *p) {
    jnode *l = parse_concat(p);
    while (is_op(CUR, OP_ADD) || is_op(CUR, OP_SUB)) {
        tok *k = next(p);
        l = binop(p, k->op, k->pos, l, parse_concat(p));
    }
    return l;
}

static jnode *parse_math2(parser *p);
static jnode *parse_concat(parser *p) {
    int32_t pos = CUR->pos;
    jnode *first = parse_math2(p);
    if (!is_op(CUR, OP_TILDE)) return first;
    nvec v = {0};
    nv_push(p, &v, first);
    while (is_op(CUR, OP_TILDE)) {
        next(p);
        nv_push(p, &v, parse_math2(p));
    }
    jnode *n = mk(p, N_CONCAT, pos);
    n->v = v.v;
    n->n = v.n;
    return n;
}

static jnode *parse_pow(parser *p);
static jnode *parse_math2(parser *p) {
    jnode *l = parse_pow(p);
    while (is_op(CUR, OP_MUL) || is_op(CUR, OP_DIV) || is_op(CUR, OP_FLOORDIV) || is_op(CUR, OP_MOD)) {
        tok *k = next(p);
        jnode *r = parse_pow(p);
        if (k->op == OP_MOD && l->k == N_CONST && l->cv.t == JV_STR)
            jfail(p->c, LM_ERR_UNSUPPORTED, k->pos, "printf-style string formatting ('...' %% value) is not supported");
        l = binop(p, k->op, k->pos, l, r);
    }
    return l;
}

static jnode *parse_pow(parser *p) {
    jnode *l = parse_unary(p, true);
    while (is_op(CUR, OP_POW)) {
        tok *k = next(p);
        l = binop(p, OP_POW, k->pos, l, parse_unary(p, true));
    }
    return l;
}

static jnode *parse_postfix(parser *p, jnode *n);
static jnode *parse_filter_expr(parser *p, jnode *n);

static jnode *parse_unary(parser *p, bool with_filter) {
    enter(p);
    jnode *n;
    if (is_op(CUR, OP_SUB) || is_op(CUR, OP_ADD)) {
        tok *k = next(p);
        n = mk(p, k->op == OP_SUB ? N_NEG : N_POS, k->pos);
        n->a = parse_unary(p, false);
    } else {
        n = parse_primary(p, false);
    }
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    leave(p);
    return n;
}

static jnode *parse_list_or_dict(parser *p, bool dict) {
    tok *open = next(p);
    nvec keys = {0}, vals = {0};
    int close = dict ? OP_RBRACE : OP_RBRACKET;
    while (!is_op(CUR, close)) {
        if (keys.n) expect_op(p, OP_COMMA);
        if (is_op(CUR, close)) break;
        nv_push(p, &keys, parse_expression(p, true));
        if (dict) {
            expect_op(p, OP_COLON);
            nv_push(p, &vals, parse_expression(p, true));
        }
    }
    expect_op(p, close);
    jnode *n = mk(p, dict ? N_DICT : N_LIST, open->pos);
    n->v = keys.v;
    n->n = keys.n;
    n->w = vals.v;
    n->m = vals.n;
    return n;
}

static jnode *parse_primary(parser *p, bool with_namespace) {
    tok *k = CUR;
    jnode *n;
    enter(p);
    if (k->t == TK_NAME) {
        next(p);
        if (!strcmp(k->s, "true") || !strcmp(k->s, "True") || !strcmp(k->s, "false") || !strcmp(k->s, "False")) {
            n = mk(p, N_CONST, k->pos);
            n->cv = jv_bool(k->s[0] == 't' || k->s[0] == 'T');
        } else if (!strcmp(k->s, "none") || !strcmp(k->s, "None")) {
            n = mk(p, N_CONST, k->pos);
            n->cv = jv_none();
        } else if (with_namespace && is_op(CUR, OP_DOT)) {
            next(p);
            tok *attr = expect_type(p, TK_NAME, "name");
            n = mk(p, N_NSREF, k->pos);
            n->s = k->s;
            n->s2 = attr->s;
        } else {
            n = mk(p, N_NAME, k->pos);
            n->s = k->s;
        }
    } else if (k->t == TK_STRING) {
        next(p);
        jsb b = {0};
        sb_put(p->c, &b, k->s, k->n);
        while (CUR->t == TK_STRING) {
            sb_put(p->c, &b, CUR->s, CUR->n);
            next(p);
        }
        n = mk(p, N_CONST, k->pos);
        n->cv = jv_str(b.p, b.n);
    } else if (k->t == TK_INT || k->t == TK_FLOAT) {
        next(p);
        n = mk(p, N_CONST, k->pos);
        n->cv = k->t == TK_INT ? jv_int(k->i) : jv_float(k->f);
    } else if (is_op(k, OP_LPAREN)) {
        next(p);
        n = parse_tuple(p, false, true, NULL, true, false);
        expect_op(p, OP_RPAREN);
    } else if (is_op(k, OP_LBRACKET)) {
        n = parse_list_or_dict(p, false);
    } else if (is_op(k, OP_LBRACE)) {
        n = parse_list_or_dict(p, true);
    } else {
        char b[8];
        if (k->t == TK_EOF) jfail(p->c, LM_ERR_FORMAT, k->pos, "unexpected end of template");
        jfail(p->c, LM_ERR_FORMAT, k->pos, "unexpected '%s'", describe(k, b, sizeof b));
    }
    leave(p);
    return n;
}

// jinja2 3.1 means to end a tuple at extra_end too ("for a, b in"), but
// passes its rules to test_any as one tuple, so they never match: only
// these three end a tuple there.
static bool is_tuple_end(parser *p, const char *extra_end) {
    tok *k = CUR;
    (void)extra_end;
    return k->t == TK_VAR_END || k->t == TK_BLOCK_END || is_op(k, OP_RPAREN);
}

static jnode *parse_tuple(parser *p, bool simplified, bool with_condexpr, const char *extra_end,
                          bool explicit_parens, bool with_namespace) {
    int32_t pos = CUR->pos;
    nvec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n) expect_op(p, OP_COMMA);
        if (is_tuple_end(p, extra_end)) break;
        nv_push(p, &items, simplified ? parse_primary(p, with_namespace) : parse_expression(p, with_condexpr));
        if (is_op(CUR, OP_COMMA)) is_tuple = true;
        else break;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) {
            char b[8];
            jfail(p->c, LM_ERR_FORMAT, CUR->pos, "Expected an expression, got '%s'", describe(CUR, b, sizeof b));
        }
    }
    jnode *n = mk(p, N_TUPLE, pos);
    n->v = items.v;
    n->n = items.n;
    return n;
}

// (args, kw=args): positional in v/n, keyword names in names, values in w/m.
static void parse_call_args(parser *p, jnode *n) {
    tok *open = CUR;
    expect_op(p, OP_LPAREN);
    nvec args = {0}, kwv = {0};
    const char *kwn[64];
    bool require_comma = false;
    while (!is_op(CUR, OP_RPAREN)) {
        if (require_comma) {
            expect_op(p, OP_COMMA);
            if (is_op(CUR, OP_RPAREN)) break;
        }
        if (is_op(CUR, OP_MUL) || is_op(CUR, OP_POW))
            jfail(p->c, LM_ERR_UNSUPPORTED, CUR->pos, "*args and **kwargs in calls are not supported");
        if (CUR->t == TK_NAME && is_op(CUR + 1, OP_ASSIGN)) {
            if (kwv.n == 64) jfail(p->c, LM_ERR_RANGE, CUR->pos, "too many keyword arguments");
            kwn[kwv.n] = CUR->s;
            next(p);
            next(p);
            nv_push(p, &kwv, parse_expression(p, true));
        } else {
            if (kwv.n) jfail(p->c, LM_ERR_FORMAT, open->pos, "invalid syntax for function call expression");
            nv_push(p, &args, parse_expression(p, true));
        }
        require_comma = true;
    }
    expect_op(p, OP_RPAREN);
    n->v = args.v;
    n->n = args.n;
    n->w = kwv.v;
    n->m = kwv.n;
    if (kwv.n) {
        n->names = ja_alloc(p->c, (size_t)kwv.n * sizeof(char *));
        memcpy(n->names, kwn, (size_t)kwv.n * sizeof(char *));
    }
}

static jnode *parse_call(parser *p, jnode *callee) {
    jnode *n = mk(p, N_CALL, CUR->pos);
    n->a = callee;
    parse_call_args(p, n);
    if (callee->k == N_GETATTR) {
        const char *m = callee->s;
        if (jmethod_lookup(m) < 0 && !in_list(SANDBOX_METHODS, m)) {
            if (in_list(UNSUPPORTED_METHODS, m))
                jfail(p->c, LM_ERR_UNSUPPORTED, callee->pos, "the method %s() is not supported", m);
            jfail(p->c, LM_ERR_UNSUPPORTED, callee->pos,
                  "calling '%s' is not supported (only the str, dict, list and loop methods lightmoe implements)", m);
        }
    } else if (callee->k == N_NAME) {
        const char *f = callee->s;
        if (!strcmp(f, "lipsum") || !strcmp(f, "cycler") || !strcmp(f, "joiner"))
            jfail(p->c, LM_ERR_UNSUPPORTED, callee->pos, "the global function %s() is not supported", f);
    }
    return n;
}

static jnode *parse_subscripted(parser *p) {
    int32_t pos = CUR->pos;
    jnode *args[3] = {NULL, NULL, NULL};
    if (is_op(CUR, OP_COLON)) {
        next(p);
    } else {
        jnode *e = parse_expression(p, true);
        if (!is_op(CUR, OP_COLON)) return e;
        next(p);
        args[0] = e;
    }
    if (!is_op(CUR, OP_COLON) && !is_op(CUR, OP_RBRACKET) && !is_op(CUR, OP_COMMA)) args[1] = parse_expression(p, true);
    if (is_op(CUR, OP_COLON)) {
        next(p);
        if (!is_op(CUR, OP_RBRACKET) && !is_op(CUR, OP_COMMA)) args[2] = parse_expression(p, true);
    }
    jnode *n = mk(p, N_SLICE, pos);
    n->a = args[0];
    n->b = args[1];
    n->c = args[2];
    return n;
}

static jnode *parse_subscript(parser *p, jnode *obj) {
    tok *k = next(p);
    if (k->op == OP_DOT) {
        tok *attr = CUR;
        next(p);
        if (attr->t == TK_NAME) {
            jnode *n = mk(p, N_GETATTR, k->pos);
            n->a = obj;
            n->s = attr->s;
            return n;
        }
        if (attr->t != TK_INT) jfail(p->c, LM_ERR_FORMAT, attr->pos, "expected name or number");
        jnode *key = mk(p, N_CONST, attr->pos);
        key->cv = jv_int(attr->i);
        jnode *n = mk(p, N_GETITEM, k->pos);
        n->a = obj;
        n->b = key;
        return n;
    }
    nvec args = {0};
    while (!is_op(CUR, OP_RBRACKET)) {
        if (args.n) expect_op(p, OP_COMMA);
        nv_push(p, &args, parse_subscripted(p));
    }
    expect_op(p, OP_RBRACKET);
    jnode *key;
    if (args.n == 1) {
        key = args.v[0];
    } else {
        key = mk(p, N_TUPLE, k->pos);
        key->v = args.v;
        key->n = args.n;
        for (int32_t i = 0; i < args.n; i++)
            if (args.v[i]->k == N_SLICE) jfail(p->c, LM_ERR_UNSUPPORTED, args.v[i]->pos, "multi-dimensional slices are not supported");
    }
    jnode *n = mk(p, N_GETITEM, k->pos);
    n->a = obj;
    n->b = key;
    return n;
}

static jnode *parse_postfix(parser *p, jnode *n) {
    for (;;) {
        if (is_op(CUR, OP_DOT) || is_op(CUR, OP_LBRACKET)) n = parse_subscript(p, n);
        else if (is_op(CUR, OP_LPAREN)) n = parse_call(p, n);
        else return n;
    }
}

static const char *dotted_name(parser *p) {
    tok *k = expect_type(p, TK_NAME, "name");
    if (!is_op(CUR, OP_DOT)) return k->s;
    jsb b = {0};
    sb_puts(p->c, &b, k->s);
    while (is_op(CUR, OP_DOT)) {
        next(p);
        sb_putc(p->c, &b, '.');
        sb_puts(p->c, &b, expect_type(p, TK_NAME, "name")->s);
    }
    return b.p;
}

static jnode *parse_filter(parser *p, jnode *n, bool start_inline) {
    while (is_op(CUR, OP_PIPE) || start_inline) {
        if (!start_inline) next(p);
        int32_t pos = CUR->pos;
        const char *name = dotted_name(p);
        jnode *f = mk(p, N_FILTER, pos);
        f->a = n;
        f->s = name;
        f->id = jfilter_lookup(name);
        // an unknown name fails after parsing (check_names), as jinja2's
        // compiler fails, unless it is inside an if (then when it runs)
        if (f->id < 0 && in_list(UNSUPPORTED_FILTERS, name))
            jfail(p->c, LM_ERR_UNSUPPORTED, pos, "the filter '%s' is not supported", name);
        if (is_op(CUR, OP_LPAREN)) parse_call_args(p, f);
        n = f;
        start_inline = false;
    }
    return n;
}

static jnode *parse_test(parser *p, jnode *n) {
    tok *is = next(p);
    bool negated = false;
    if (is_name(CUR, "not")) {
        next(p);
        negated = true;
    }
    (void)0;
    const char *name = dotted_name(p);
    jnode *t = mk(p, N_TEST, is->pos);
    t->a = n;
    t->s = name;
    t->id = jtest_lookup(name);
    tok *k = CUR;
    if (is_op(k, OP_LPAREN)) {
        parse_call_args(p, t);
    } else if ((k->t == TK_NAME || k->t == TK_STRING || k->t == TK_INT || k->t == TK_FLOAT || is_op(k, OP_LPAREN) ||
                is_op(k, OP_LBRACKET) || is_op(k, OP_LBRACE)) &&
               !is_name(k, "else") && !is_name(k, "or") && !is_name(k, "and")) {
        if (is_name(k, "is")) jfail(p->c, LM_ERR_FORMAT, k->pos, "You cannot chain multiple tests with is");
        jnode *arg = parse_postfix(p, parse_primary(p, false));
        t->v = ja_alloc(p->c, sizeof(jnode *));
        t->v[0] = arg;
        t->n = 1;
    }
    if (negated) {
        jnode *x = mk(p, N_NOT, is->pos);
        x->a = t;
        return x;
    }
    return t;
}

static jnode *parse_filter_expr(parser *p, jnode *n) {
    for (;;) {
        if (is_op(CUR, OP_PIPE)) n = parse_filter(p, n, false);
        else if (is_name(CUR, "is")) n = parse_test(p, n);
        else if (is_op(CUR, OP_LPAREN)) n = parse_call(p, n);
        else return n;
    }
}

// jinja2's compiler refuses unknown filter and test names, except in
// "soft" frames: an if tag (its test and the statements of its branches) and
// a conditional expression, where they fail when they run. Statements that
// open a frame of their own (for bodies, macros, blocks) are not soft.
static void check_names(jctx *c, const jnode *n, bool soft);
static void check_list(jctx *c, jnode *const *v, int32_t k, bool soft) {
    for (int32_t i = 0; i < k; i++) check_names(c, v[i], soft);
}
static void check_names(jctx *c, const jnode *n, bool soft) {
    if (!n) return;
    switch (n->k) {
    case N_FILTER:
    case N_TEST:
        if (n->id < 0 && !soft)
            jfail(c, LM_ERR_FORMAT, n->pos, "No %s named '%s'.", n->k == N_FILTER ? "filter" : "test", n->s);
        break;
    case N_COND: soft = true; break;
    case S_IF:
        check_names(c, n->a, true);
        check_list(c, n->v, n->n, true);
        check_list(c, n->w, n->m, true);
        return;
    case S_FOR:
        check_names(c, n->a, soft);
        check_names(c, n->b, soft);
        check_names(c, n->c, false);
        check_list(c, n->v, n->n, false);
        check_list(c, n->w, n->m, false);
        return;
    case S_SETBLOCK:
    case S_FILTERBLOCK:
    case S_MACRO:
        check_names(c, n->a, soft);
        check_names(c, n->b, false);
        check_list(c, n->v, n->n, false);
        check_list(c, n->w, n->m, false);
        return;
    case S_CALLBLOCK:
        check_names(c, n->a, soft);
        check_list(c, n->v, n->n, false);
        check_list(c, n->w, n->m, false);
        return;
    case S_WITH:
        check_list(c, n->w, n->m, soft);
        check_list(c, n->v, n->n, false);
        return;
    default: break;
    }
    check_names(c, n->a, soft);
    check_names(c, n->b, soft);
    check_names(c, n->c, soft);
    check_list(c, n->v, n->n, soft);
    if (n->w) check_list(c, n->w, n->m, soft);
}

// Marks the expressions jinja2's optimizer can fold (nodes.py as_const):
// literals and operators, item and attribute access, tests and filters that
// do not take the context, over literals only.
static bool mark_lit(jnode *n) {
    if (!n) return true;
    bool lit = true;
    lit &= mark_lit(n->a);
    lit &= mark_lit(n->b);
    lit &= mark_lit(n->c);
    for (int32_t i = 0; i < n->n; i++) lit &= mark_lit(n->v[i]);
    if (n->w)
        for (int32_t i = 0; i < n->m; i++) lit &= mark_lit(n->w[i]);
    switch (n->k) {
    case N_CONST:
    case N_LIST:
    case N_TUPLE:
    case N_DICT:
    case N_NOT:
    case N_NEG:
    case N_POS:
    case N_AND:
    case N_OR:
    case N_BINOP:
    case N_CONCAT:
    case N_COMPARE:
    case N_COND:
    case N_GETATTR:
    case N_GETITEM:
    case N_SLICE: break;
    case N_FILTER:
        lit = lit && n->a && n->id >= 0 && n->id != F_map && n->id != F_select && n->id != F_reject &&
              n->id != F_selectattr && n->id != F_rejectattr;
        break;
    case N_TEST: lit = lit && n->id >= 0; break;
    default: lit = false;
    }
    n->lit = lit;
    return lit;
}

static bool can_assign(const jnode *n) {
    if (n->k == N_NAME || n->k == N_NSREF) return true;
    if (n->k != N_TUPLE) return false;
    for (int32_t i = 0; i < n->n; i++)
        if (!can_assign(n->v[i])) return false;
    return true;
}

static jnode *parse_assign_target(parser *p, const char *extra_end, bool with_namespace) {
    jnode *t = parse_tuple(p, true, true, extra_end, false, with_namespace);
    if (!can_assign(t)) {
        const char *what = t->k == N_CONST ? "const" : t->k == N_TUPLE ? "tuple" : "expression";
        jfail(p->c, LM_ERR_FORMAT, t->pos, "can't assign to '%s'", what);
    }
    return t;
}

static jnode **parse_statements(parser *p, const char *const *end_tokens, bool drop_needle, int32_t *n) {
    if (is_op(CUR, OP_COLON)) next(p);
    expect_type(p, TK_BLOCK_END, "end of statement block");
    jnode **body = subparse(p, end_tokens, n);
    if (CUR->t == TK_EOF) {
        jsb b = {0};
        sb_puts(p->c, &b, "Unexpected end of template. Jinja was looking for the following tags: ");
        for (int k = 0; end_tokens[k]; k++) {
            if (k) sb_puts(p->c, &b, " or ");
            sb_printf(p->c, &b, "'%s'", end_tokens[k]);
        }
        sb_printf(p->c, &b, ". The innermost block that needs to be closed is '%s'.",
                  p->n_end ? p->tag_stack[p->n_end - 1] : "?");
        jfail(p->c, LM_ERR_FORMAT, CUR->pos, "%s", b.p);
    }
    if (drop_needle) next(p);
    return body;
}

static void parse_signature(parser *p, jnode *n) {
    expect_op(p, OP_LPAREN);
    nvec defs = {0};
    const char *names[64];
    int32_t np = 0;
    while (!is_op(CUR, OP_RPAREN)) {
        if (np) expect_op(p, OP_COMMA);
        tok *k = expect_type(p, TK_NAME, "name");
        if (np == 64) jfail(p->c, LM_ERR_RANGE, k->pos, "too many parameters");
        names[np++] = k->s;
        if (is_op(CUR, OP_ASSIGN)) {
            next(p);
            nv_push(p, &defs, parse_expression(p, true));
        } else if (defs.n) {
            jfail(p->c, LM_ERR_FORMAT, k->pos, "non-default argument follows default argument");
        }
    }
    expect_op(p, OP_RPAREN);
    n->np = np;
    n->names = ja_alloc(p->c, (size_t)(np ? np : 1) * sizeof(char *));
    memcpy(n->names, names, (size_t)np * sizeof(char *));
    n->w = defs.v;
    n->m = defs.n;
}

// Whether a subtree reads the name (for macros: varargs/kwargs).
static bool reads_name(const jnode *n, const char *name) {
    if (!n) return false;
    if (n->k == N_NAME && !strcmp(n->s, name)) return true;
    if (reads_name(n->a, name) || reads_name(n->b, name) || reads_name(n->c, name)) return true;
    for (int32_t i = 0; i < n->n; i++)
        if (reads_name(n->v[i], name)) return true;
    for (int32_t i = 0; i < n->m; i++)
        if (n->w && reads_name(n->w[i], name)) return true;
    return false;
}

static const char *const END_FOR[] = {"endfor", "else", NULL};
static const char *const END_FOR2[] = {"endfor", NULL};
static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_IF2[] = {"endif", NULL};
static const char *const END_SET[] = {"endset", NULL};
static const char *const END_MACRO[] = {"endmacro", NULL};
static const char *const END_CALL[] = {"endcall", NULL};
static const char *const END_FILTER[] = {"endfilter", NULL};
static const char *const END_WITH[] = {"endwith", NULL};
static const char *const END_GEN[] = {"endgeneration", NULL};

static jnode *parse_statement(parser *p) {
    tok *k = CUR;
    if (k->t != TK_NAME) {
        if (k->t == TK_EOF) jfail(p->c, LM_ERR_FORMAT, k->pos, "unexpected end of template, expected a tag name");
        jfail(p->c, LM_ERR_FORMAT, k->pos, "tag name expected");
    }
    const char *tag = k->s;
    if (p->n_end == 32) jfail(p->c, LM_ERR_RANGE, k->pos, "blocks nested too deeply");
    p->tag_stack[p->n_end] = tag;
    jnode *n;
    if (!strcmp(tag, "for")) {
        next(p);
        n = mk(p, S_FOR, k->pos);
        n->a = parse_assign_target(p, "in", false);
        expect_name(p, "in");
        n->b = parse_tuple(p, false, false, "recursive", false, false);
        if (is_name(CUR, "if")) {
            next(p);
            n->c = parse_expression(p, true);
        }
        if (is_name(CUR, "recursive")) jfail(p->c, LM_ERR_UNSUPPORTED, CUR->pos, "recursive for loops are not supported");
        p->n_end++;
        p->loops++;
        n->v = parse_statements(p, END_FOR, false, &n->n);
        p->loops--;
        if (!strcmp(next(p)->s, "else")) n->w = parse_statements(p, END_FOR2, true, &n->m);
        p->n_end--;
    } else if (!strcmp(tag, "if")) {
        next(p);
        n = mk(p, S_IF, k->pos);
        jnode *cur = n;
        p->n_end++;
        for (;;) {
            cur->a = parse_tuple(p, false, false, NULL, false, false);
            cur->v = parse_statements(p, END_IF, false, &cur->n);
            tok *e = next(p);
            if (!strcmp(e->s, "elif")) {
                jnode *x = mk(p, S_IF, CUR->pos);
                cur->w = ja_alloc(p->c, sizeof(jnode *));
                cur->w[0] = x;
                cur->m = 1;
                cur = x;
                continue;
            }
            if (!strcmp(e->s, "else")) cur->w = parse_statements(p, END_IF2, true, &cur->m);
            break;
        }
        p->n_end--;
    } else if (!strcmp(tag, "set")) {
        next(p);
        jnode *target = parse_assign_target(p, NULL, true);
        if (is_op(CUR, OP_ASSIGN)) {
            next(p);
            n = mk(p, S_SET, k->pos);
            n->a = target;
            n->b = parse_tuple(p, false, true, NULL, false, false);
        } else {
            n = mk(p, S_SETBLOCK, k->pos);
            n->a = target;
            n->b = is_op(CUR, OP_PIPE) ? parse_filter(p, NULL, false) : NULL;
            p->n_end++;
            n->v = parse_statements(p, END_SET, true, &n->n);
            p->n_end--;
        }
    } else if (!strcmp(tag, "macro")) {
        next(p);
        n = mk(p, S_MACRO, k->pos);
        n->s = expect_type(p, TK_NAME, "name")->s;
        parse_signature(p, n);
        int saved = p->loops;
        p->loops = 0;
        p->n_end++;
        n->v = parse_statements(p, END_MACRO, true, &n->n);
        p->n_end--;
        p->loops = saved;
        for (int32_t i = 0; i < n->n; i++) n->op |= reads_name(n->v[i], "caller");
        for (int32_t i = 0; i < n->n; i++)
            if (reads_name(n->v[i], "varargs") || reads_name(n->v[i], "kwargs"))
                jfail(p->c, LM_ERR_UNSUPPORTED, n->pos, "macros taking varargs or kwargs are not supported");
    } else if (!strcmp(tag, "call")) {
        next(p);
        n = mk(p, S_CALLBLOCK, k->pos);
        if (is_op(CUR, OP_LPAREN)) parse_signature(p, n);
        else n->names = ja_alloc(p->c, sizeof(char *));
        jnode *call = parse_expression(p, true);
        if (call->k != N_CALL) jfail(p->c, LM_ERR_FORMAT, k->pos, "expected call");
        n->a = call;
        int saved = p->loops;
        p->loops = 0;
        p->n_end++;
        n->v = parse_statements(p, END_CALL, true, &n->n);
        p->n_end--;
        p->loops = saved;
    } else if (!strcmp(tag, "filter")) {
        next(p);
        n = mk(p, S_FILTERBLOCK, k->pos);
        n->b = parse_filter(p, NULL, true);
        p->n_end++;
        n->v = parse_statements(p, END_FILTER, true, &n->n);
        p->n_end--;
    } else if (!strcmp(tag, "with")) {
        next(p);
        n = mk(p, S_WITH, k->pos);
        nvec vals = {0};
        const char *names[64];
        while (CUR->t != TK_BLOCK_END) {
            if (vals.n) expect_op(p, OP_COMMA);
            jnode *t = parse_assign_target(p, NULL, false);
            if (t->k != N_NAME) jfail(p->c, LM_ERR_UNSUPPORTED, t->pos, "only plain names can be assigned in a with tag");
            if (vals.n == 64) jfail(p->c, LM_ERR_RANGE, t->pos, "too many assignments");
            names[vals.n] = t->s;
            expect_op(p, OP_ASSIGN);
            nv_push(p, &vals, parse_expression(p, true));
        }
        n->w = vals.v;
        n->m = vals.n;
        n->np = vals.n;
        n->names = ja_alloc(p->c, (size_t)(vals.n ? vals.n : 1) * sizeof(char *));
        memcpy(n->names, names, (size_t)vals.n * sizeof(char *));
        p->n_end++;
        n->v = parse_statements(p, END_WITH, true, &n->n);
        p->n_end--;
    } else if (!strcmp(tag, "print")) {
        next(p);
        nvec items = {0};
        while (CUR->t != TK_BLOCK_END) {
            if (items.n) expect_op(p, OP_COMMA);
            nv_push(p, &items, parse_expression(p, true));
        }
        // a block of prints
        n = mk(p, S_BLOCK, k->pos);
        n->v = ja_alloc(p->c, (size_t)(items.n ? items.n : 1) * sizeof(jnode *));
        for (int32_t i = 0; i < items.n; i++) {
            jnode *pr = mk(p, S_PRINT, items.v[i]->pos);
            pr->a = items.v[i];
            n->v[i] = pr;
        }
        n->n = items.n;
    } else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        next(p);
        if (!p->loops) jfail(p->c, LM_ERR_FORMAT, k->pos, "'%s' outside loop", tag);
        n = mk(p, tag[0] == 'b' ? S_BREAK : S_CONTINUE, k->pos);
    } else if (!strcmp(tag, "generation")) {
        next(p);
        n = mk(p, S_BLOCK, k->pos);
        p->n_end++;
        n->v = parse_statements(p, END_GEN, true, &n->n);
        p->n_end--;
    } else if (!strcmp(tag, "block") || !strcmp(tag, "extends") || !strcmp(tag, "include") ||
               !strcmp(tag, "import") || !strcmp(tag, "from") || !strcmp(tag, "autoescape")) {
        jfail(p->c, LM_ERR_UNSUPPORTED, k->pos, "the tag '%s' is not supported", tag);
    } else {
        jsb b = {0};
        sb_printf(p->c, &b, "Encountered unknown tag '%s'.", tag);
        if (p->n_end) {
            sb_puts(p->c, &b, " Jinja was looking for the following tags: ");
            const char *const *e = p->end_stack[p->n_end - 1];
            for (int j = 0; e && e[j]; j++) sb_printf(p->c, &b, "%s'%s'", j ? " or " : "", e[j]);
            sb_printf(p->c, &b, ". The innermost block that needs to be closed is '%s'.", p->tag_stack[p->n_end - 1]);
        }
        jfail(p->c, LM_ERR_FORMAT, k->pos, "%s", b.p);
    }
    return n;
}

static jnode **subparse(parser *p, const char *const *end_tokens, int32_t *count) {
    nvec body = {0};
    if (end_tokens && p->n_end > 0) p->end_stack[p->n_end - 1] = end_tokens;
    while (CUR->t != TK_EOF) {
        tok *k = CUR;
        if (k->t == TK_DATA) {
            jnode *n = mk(p, S_DATA, k->pos);
            n->s = k->s;
            n->sn = k->n;
            nv_push(p, &body, n);
            next(p);
        } else if (k->t == TK_VAR_BEGIN) {
            next(p);
            jnode *n = mk(p, S_PRINT, k->pos);
            n->a = parse_tuple(p, false, true, NULL, false, false);
            expect_type(p, TK_VAR_END, "end of print statement");
            nv_push(p, &body, n);
        } else if (k->t == TK_BLOCK_BEGIN) {
            next(p);
            if (end_tokens) {
                for (int j = 0; end_tokens[j]; j++)
                    if (is_name(CUR, end_tokens[j])) {
                        *count = body.n;
                        return body.v;
                    }
            }
            nv_push(p, &body, parse_statement(p));
            expect_type(p, TK_BLOCK_END, "end of statement block");
        } else {
            char b[8];
            jfail(p->c, LM_ERR_FORMAT, k->pos, "unexpected '%s'", describe(k, b, sizeof b));
        }
    }
    *count = body.n;
    return body.v;
}

// ---------------------------------------------------------------- API

lm_status lm_tmpl_parse(const char *src, size_t len, lm_tmpl **out) {
    if (!out) return lm_err(LM_ERR_INVALID_ARG, "lm_tmpl_parse: out is NULL");
    *out = NULL;
    if (!src && len) return lm_err(LM_ERR_INVALID_ARG, "lm_tmpl_parse: src is NULL");
    if (len > (size_t)INT32_MAX / 2) return lm_err(LM_ERR_RANGE, "chat template: %zu bytes is too long", len);
    lm_tmpl *t = calloc(1, sizeof *t);
    if (!t) return lm_err(LM_ERR_OOM, "chat template: out of memory");
    jctx *c = &t->c;
    c->arena_limit = (size_t)64 << 20;
    c->arena_limit += len * 64;
    if (setjmp(c->jb)) {
        lm_status st = lm_err(c->st, "chat template: %s", c->msg);
        ja_free_all(c);
        free(t);
        return st;
    }
    if (!utf8_valid(src, len)) jfail(c, LM_ERR_FORMAT, -1, "the template is not valid UTF-8");
    // newlines: \r\n and \r become \n; one trailing newline is dropped
    char *s = ja_alloc(c, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    c->src = s;
    c->src_len = n;
    lexer L = {.c = c, .src = s, .len = n};
    lex(&L);
    parser P = {.c = c, .t = L.toks};
    t->body = subparse(&P, NULL, &t->n);
    check_list(c, t->body, t->n, false);
    for (int32_t i = 0; i < t->n; i++) mark_lit(t->body[i]);
    *out = t;
    return LM_OK;
}

lm_status lm_tmpl_render(const lm_tmpl *t, const cJSON *ctx, char **out, size_t *out_len) {
    return jinja_render(t, ctx, NULL, 0, out, out_len);
}

lm_status lm_tmpl_render_json(const lm_tmpl *t, const char *json, size_t json_len, char **out, size_t *out_len) {
    if (!json) return lm_err(LM_ERR_INVALID_ARG, "lm_tmpl_render_json: json is NULL");
    return jinja_render(t, NULL, json, json_len, out, out_len);
}

void lm_tmpl_set_limits(lm_tmpl *t, uint64_t max_steps, size_t max_memory) {
    if (!t) return;
    t->max_steps = max_steps;
    t->max_memory = max_memory;
}

void lm_tmpl_free(lm_tmpl *t) {
    if (!t) return;
    ja_free_all(&t->c);
    free(t);
}
