// Internals of the chat-template engine (jinja.c: lexer, parser and API;
// jinja_eval.c: the interpreter; jinja_value.c: values, text forms, JSON,
// Python's str semantics over UTF-8). Not a public header.
//
// Errors unwind with longjmp to the entry point (lm_tmpl_parse or a render
// call): every allocation of a parse or a render comes from one arena that
// is freed there, so unwinding leaks nothing.
#ifndef LM_TEMPLATE_JINJA_INT_H
#define LM_TEMPLATE_JINJA_INT_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lightmoe.h"

// ---------------------------------------------------------------- context

typedef struct jblk jblk;

typedef struct jctx {
    jmp_buf jb;
    jblk *arena;        // bump allocator: a list of blocks
    size_t arena_used;  // bytes taken from the system
    size_t arena_limit;
    lm_status st;       // the failure, once failed
    char msg[640];
    const char *src;    // template source (normalized), for line/column
    size_t src_len;
} jctx;

void *ja_alloc(jctx *c, size_t n);  // zeroed, aligned; fails (longjmp) past the limit
char *ja_strdup(jctx *c, const char *s, size_t n);  // NUL-terminated copy
void ja_free_all(jctx *c);

// Fails with a message; pos >= 0 is a byte offset into c->src, reported as
// "line L, column C: ". Never returns.
_Noreturn void jfail(jctx *c, lm_status st, long pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// Growable byte string in the arena.
typedef struct jsb {
    char *p;
    size_t n, cap;
} jsb;

void sb_put(jctx *c, jsb *b, const char *s, size_t n);
void sb_putc(jctx *c, jsb *b, char ch);
void sb_puts(jctx *c, jsb *b, const char *s);
void sb_printf(jctx *c, jsb *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sb_put_cp(jctx *c, jsb *b, uint32_t cp);  // UTF-8 encode

// ---------------------------------------------------------------- values

enum {
    JV_UNDEF,   // jinja2's Undefined (s: the name, for messages)
    JV_NONE,
    JV_BOOL,    // i: 0/1
    JV_INT,     // i
    JV_FLOAT,   // f
    JV_STR,     // s (k: JS_MARKUP when it is a markupsafe.Markup)
    JV_LIST,    // l (k: the Python type, JL_*)
    JV_DICT,    // d
    JV_NS,      // d: jinja2's namespace()
    JV_LOOP,    // lp
    JV_MACRO,   // m (a macro, or the caller() of a call block)
    JV_FUNC,    // k: a global function (JF_*)
    JV_METHOD,  // mt: a bound method
};

enum { JS_PLAIN = 0, JS_MARKUP = 1 };

enum {
    JL_LIST,
    JL_TUPLE,
    JL_GEN,     // a generator (filters map/select/..., reversed): consumed by iteration
    JL_RANGE,   // range(): r0/r1/r2 are start/stop/step
    JL_KEYS,    // dict.keys()
    JL_VALUES,  // dict.values()
    JL_ITEMS,   // dict.items()
};

enum { JF_RANGE, JF_DICT, JF_NAMESPACE, JF_RAISE, JF_STRFTIME };

struct jlist;
struct jdict;
struct jloop;
struct jmacro;
struct jmethod;

typedef struct jv {
    uint8_t t, k;
    union {
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct jlist *l;
        struct jdict *d;
        struct jloop *lp;
        struct jmacro *m;
        struct jmethod *mt;
    } u;
} jv;

typedef struct jlist {
    jv *v;
    size_t n, cap;
    size_t pos;          // JL_GEN: items before pos were consumed
    void *lazy;          // JL_GEN: the filter that makes the items when first needed
    int64_t r0, r1, r2;  // JL_RANGE
} jlist;

typedef struct jdict {
    jv *k, *v;
    size_t n, cap;
} jdict;

static inline jv jv_undef(const char *name) {
    jv v = {.t = JV_UNDEF};
    v.u.s.p = name;
    v.u.s.n = name ? __builtin_strlen(name) : 0;
    return v;
}
static inline jv jv_none(void) { return (jv){.t = JV_NONE}; }
static inline jv jv_bool(bool b) { return (jv){.t = JV_BOOL, .u.i = b}; }
static inline jv jv_int(int64_t i) { return (jv){.t = JV_INT, .u.i = i}; }
static inline jv jv_float(double f) { return (jv){.t = JV_FLOAT, .u.f = f}; }
static inline jv jv_str(const char *p, size_t n) {
    jv v = {.t = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
static inline jv jv_markup(const char *p, size_t n) {
    jv v = jv_str(p, n);
    v.k = JS_MARKUP;
    return v;
}
static inline bool jv_isnum(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static inline bool jv_isint(jv v) { return v.t == JV_BOOL || v.t == JV_INT; }
static inline bool jv_isseq(jv v) {  // list, tuple (not a generator, range or view)
    return v.t == JV_LIST && (v.k == JL_LIST || v.k == JL_TUPLE);
}

jlist *jl_new(jctx *c, size_t cap);
void jl_push(jctx *c, jlist *l, jv v);
jv jv_list(jlist *l, int kind);
jdict *jd_new(jctx *c, size_t cap);
// Python dict semantics: a new key goes last, an existing key keeps its place.
void jd_set(jctx *c, jdict *d, jv key, jv val);
bool jd_get(const jdict *d, jv key, jv *out);
bool jd_get_str(const jdict *d, const char *key, size_t n, jv *out);

// Python semantics (fail with a TypeError-like message where Python raises).
bool jv_truthy(jv v);
bool jv_eq(jv a, jv b);
enum { CMP_LT, CMP_LE, CMP_GT, CMP_GE };
bool jv_cmp(jctx *c, long pos, jv a, jv b, int op);
bool jv_hashable(jv v);
const char *jv_typename(jv v);

// Text forms: Python's str() and repr() (what {{ }} prints), markupsafe's
// escape, and transformers' tojson (json.dumps).
void jv_str_to(jctx *c, long pos, jsb *b, jv v);
void jv_repr_to(jctx *c, long pos, jsb *b, jv v);
jv jv_to_str(jctx *c, long pos, jv v);  // str(v) as a JV_STR (plain)
void js_escape_to(jctx *c, jsb *b, const char *s, size_t n);
typedef struct {
    bool ensure_ascii, sort_keys;
    const char *indent;  // NULL: no indentation
    size_t indent_n;
    const char *item_sep, *key_sep;
    size_t item_sep_n, key_sep_n;
} jjson_opts;
void jv_tojson_to(jctx *c, long pos, jsb *b, jv v, const jjson_opts *o);
void py_float_repr(double f, char out[48]);

// JSON into values.
struct cJSON;
jv jv_from_cjson(jctx *c, const struct cJSON *j, int depth);
jv jv_from_json_text(jctx *c, const char *s, size_t n);

// ---------------------------------------------------------------- text

// UTF-8: the engine's strings are valid UTF-8 (checked where they enter).
bool utf8_valid(const char *s, size_t n);
uint32_t utf8_next(const char *s, size_t n, size_t *i);  // decodes at *i, advances
size_t utf8_count(const char *s, size_t n);
bool py_isspace(uint32_t cp);     // str.isspace / re \s
bool py_islinebreak(uint32_t cp); // str.splitlines boundaries
bool py_cased(uint32_t cp);
bool py_case_ignorable(uint32_t cp);
bool py_printable(uint32_t cp);

// Python str methods: results are arena strings.
jv ps_lower(jctx *c, const char *s, size_t n);
jv ps_upper(jctx *c, const char *s, size_t n);
jv ps_title(jctx *c, const char *s, size_t n);       // str.title
jv ps_capitalize(jctx *c, const char *s, size_t n);  // str.capitalize
bool ps_islower(const char *s, size_t n);
bool ps_isupper(const char *s, size_t n);

// Byte offsets of code points: off[i] is where code point i starts, off[n]
// the length. Returns n (the number of code points).
size_t utf8_offsets(jctx *c, const char *s, size_t len, size_t **off);

// ---------------------------------------------------------------- syntax tree

// Filters, tests and methods the engine implements (X: C name, jinja name).
#define JFILTERS(X)                                                                          \
    X(abs, "abs") X(attr, "attr") X(capitalize, "capitalize") X(count, "count") X(d, "d")       \
    X(default, "default") X(dictsort, "dictsort") X(e, "e") X(escape, "escape")                \
    X(first, "first") X(float, "float") X(forceescape, "forceescape") X(indent, "indent")      \
    X(int, "int") X(items, "items") X(join, "join") X(last, "last") X(length, "length")        \
    X(list, "list") X(lower, "lower") X(map, "map") X(max, "max") X(min, "min")                \
    X(reject, "reject") X(rejectattr, "rejectattr") X(replace, "replace") X(reverse, "reverse") \
    X(round, "round") X(safe, "safe") X(select, "select") X(selectattr, "selectattr")          \
    X(sort, "sort") X(string, "string") X(sum, "sum") X(title, "title") X(tojson, "tojson")    \
    X(trim, "trim") X(unique, "unique") X(upper, "upper")
#define JTESTS(X)                                                                               \
    X(odd, "odd") X(even, "even") X(divisibleby, "divisibleby") X(defined, "defined")            \
    X(undefined, "undefined") X(filter, "filter") X(test, "test") X(none, "none")                \
    X(boolean, "boolean") X(false, "false") X(true, "true") X(integer, "integer")               \
    X(float, "float") X(lower, "lower") X(upper, "upper") X(string, "string")                   \
    X(mapping, "mapping") X(number, "number") X(sequence, "sequence") X(iterable, "iterable")    \
    X(callable, "callable") X(sameas, "sameas") X(escaped, "escaped") X(in, "in")               \
    X(eq, "eq") X(equalto, "equalto") X(eqsym, "==") X(ne, "ne") X(nesym, "!=") X(gt, "gt")      \
    X(greaterthan, "greaterthan") X(gtsym, ">") X(ge, "ge") X(gesym, ">=") X(lt, "lt")           \
    X(lessthan, "lessthan") X(ltsym, "<") X(le, "le") X(lesym, "<=")
// Methods callable in templates: str, dict, list/tuple and loop methods.
#define JMETHODS(X)                                                                             \
    X(startswith) X(endswith) X(strip) X(lstrip) X(rstrip) X(split) X(rsplit) X(splitlines)      \
    X(upper) X(lower) X(title) X(capitalize) X(replace) X(find) X(rfind) X(index) X(rindex)      \
    X(count) X(join) X(isdigit) X(isalpha) X(isalnum) X(isspace) X(isupper) X(islower)          \
    X(removeprefix) X(removesuffix) X(partition) X(rpartition) X(items) X(keys) X(values)       \
    X(get) X(copy) X(cycle) X(changed)

#define JX_ENUM2(c, s) F_##c,
enum { JFILTERS(JX_ENUM2) F_COUNT_ };
#undef JX_ENUM2
#define JX_ENUM2(c, s) T_##c,
enum { JTESTS(JX_ENUM2) T_COUNT_ };
#undef JX_ENUM2
#define JX_ENUM1(c) M_##c,
enum { JMETHODS(JX_ENUM1) M_COUNT_, M_UNSUPPORTED };
#undef JX_ENUM1

extern const char *const jfilter_names[F_COUNT_];
extern const char *const jtest_names[T_COUNT_];
extern const char *const jmethod_names[M_COUNT_];
int jfilter_lookup(const char *name);  // -1 when not implemented
int jtest_lookup(const char *name);
int jmethod_lookup(const char *name);
bool jinja_known_filter(const char *name);  // jinja2 has it (implemented here or not)

enum {
    // expressions
    N_CONST,    // cv
    N_NAME,     // s
    N_GETATTR,  // a.s
    N_GETITEM,  // a[b]
    N_SLICE,    // a:b:c (any may be NULL)
    N_CALL,     // a(v..., names=w...)
    N_FILTER,   // a | s(v..., names=w...) (a NULL inside a filter block / set block)
    N_TEST,     // a is s(v...)
    N_NOT,
    N_NEG,
    N_POS,
    N_AND,
    N_OR,
    N_BINOP,    // op: OP_ADD..OP_POW
    N_CONCAT,   // v (~)
    N_COMPARE,  // a, then ops[i] v[i]
    N_COND,     // b if a else c
    N_LIST,     // v
    N_TUPLE,    // v
    N_DICT,     // v: keys, w: values
    N_NSREF,    // s.s2 (assignment target)
    // statements
    S_DATA,     // s
    S_PRINT,    // a
    S_IF,       // a, body v, else w
    S_FOR,      // target a, iterable b, filter c, body v, else w
    S_SET,      // target a = b
    S_SETBLOCK, // target a, filter chain b (or NULL), body v
    S_MACRO,    // s(names[np], defaults w[m] for the last m), body v
    S_CALLBLOCK,// call a, caller(names[np], defaults w), body v
    S_FILTERBLOCK, // filter chain b, body v
    S_WITH,     // names[np] = w[m], body v
    S_BREAK,
    S_CONTINUE,
    S_BLOCK,    // body v (the generation tag)
};

enum { OP_ADD, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE, OP_LBRACKET, OP_RBRACKET,
       OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE, OP_EQ, OP_NE, OP_GT, OP_GTEQ, OP_LT, OP_LTEQ,
       OP_ASSIGN, OP_DOT, OP_COLON, OP_PIPE, OP_COMMA, OP_SEMICOLON };
enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_IN, C_NOTIN };

typedef struct jnode jnode;
struct jnode {
    uint8_t k, op;
    uint8_t lit;  // an expression of literals only (jinja2 folds those)
    int32_t pos;  // byte offset in the source
    int32_t id;   // filter / test id
    jnode *a, *b, *c;
    jnode **v;
    jnode **w;
    int32_t n, m, np;
    const char **names;
    uint8_t *ops;
    const char *s, *s2;
    size_t sn;
    jv cv;
};

struct lm_tmpl {
    jctx c;  // its arena holds the tree and the source
    jnode **body;
    int32_t n;
    uint64_t max_steps;  // 0: the defaults
    size_t max_memory;
};

// Renders (jinja_eval.c): ctx is a cJSON object (json == NULL) or JSON text.
lm_status jinja_render(const struct lm_tmpl *t, const struct cJSON *ctx, const char *json, size_t json_len,
                       char **out, size_t *out_len);

#endif
