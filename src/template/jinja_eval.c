// Chat templates: the interpreter. Semantics are jinja2's (runtime.py,
// filters.py, tests.py, sandbox.py) over Python's object model, for the
// value types JSON and templates make: where jinja2 would raise, this fails
// too; where it would print something this engine cannot reproduce (a
// memory address, a generator), this fails as unsupported.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "template/jinja.h"
#include "template/jinja_int.h"
#include "util/err.h"
#include <utf8proc.h>

#define MAX_DEPTH 200          // macro calls in progress
#define MAX_OUT ((size_t)256 << 20)
#define MAX_RANGE 100000  // jinja2's sandbox refuses longer ranges

typedef struct jscope {
    struct jscope *parent;
    bool captured;  // a macro defined here keeps it
    int32_t n, cap;
    const char **names;
    jv *vals;
} jscope;

typedef struct jr {
    jctx c;
    const lm_tmpl *t;
    jdict *vars;
    jsb *out;
    uint64_t steps, max_steps;
    int depth;
    bool fold;  // evaluating as jinja2's compile-time constant folding does
} jr;

struct jloop {
    jv *items;
    size_t n;
    uint8_t *state;  // with a filter: 0 not yet tested, 1 passes, 2 does not
    size_t cur;      // index in items of the current item
    int64_t index0;
    jv prev;
    bool has_prev;
    const jnode *target, *filter;
    jscope *outer;
    bool changed_set;
    jv changed_last;
};

struct jmacro {
    const jnode *def;  // S_MACRO, or S_CALLBLOCK for a caller
    jscope *scope;
};

struct jmethod {
    jv self;
    int id;  // M_* or M_UNSUPPORTED
    const char *name;
};

enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

static jv eval(jr *r, const jnode *n, jscope *sc);
static int exec_body(jr *r, jnode *const *body, int32_t n, jscope *sc);

#define C (&r->c)
#define FAIL(pos, ...) jfail(C, LM_ERR_FORMAT, (long)(pos), __VA_ARGS__)
#define UNSUP(pos, ...) jfail(C, LM_ERR_UNSUPPORTED, (long)(pos), __VA_ARGS__)

static void tick(jr *r, long pos) {
    if (++r->steps > r->max_steps)
        jfail(C, LM_ERR_RANGE, pos, "the template ran for more than %llu steps", (unsigned long long)r->max_steps);
}

// ---------------------------------------------------------------- scopes

static jscope *scope_new(jr *r, jscope *parent) {
    jscope *s = ja_alloc(C, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(jr *r, jscope *s, const char *name, jv v) {
    for (int32_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        int32_t cap = s->cap ? s->cap * 2 : 4;
        const char **nn = ja_alloc(C, (size_t)cap * sizeof *nn);
        jv *nv = ja_alloc(C, (size_t)cap * sizeof *nv);
        if (s->n) {
            memcpy(nn, s->names, (size_t)s->n * sizeof *nn);
            memcpy(nv, s->vals, (size_t)s->n * sizeof *nv);
        }
        s->names = nn;
        s->vals = nv;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n] = v;
    s->n++;
}

static bool scope_find(jscope *s, const char *name, jv *out) {
    for (; s; s = s->parent)
        for (int32_t i = 0; i < s->n; i++)
            if (!strcmp(s->names[i], name)) {
                *out = s->vals[i];
                return true;
            }
    return false;
}

static jv lookup(jr *r, jscope *sc, const char *name) {
    jv v;
    if (scope_find(sc, name, &v)) return v;
    if (jd_get_str(r->vars, name, strlen(name), &v)) return v;
    static const struct {
        const char *name;
        int id;
    } G[] = {{"range", JF_RANGE},
             {"dict", JF_DICT},
             {"namespace", JF_NAMESPACE},
             {"raise_exception", JF_RAISE},
             {"strftime_now", JF_STRFTIME}};
    for (size_t i = 0; i < sizeof G / sizeof G[0]; i++)
        if (!strcmp(G[i].name, name)) return (jv){.t = JV_FUNC, .k = (uint8_t)G[i].id};
    return jv_undef(name);
}

// ---------------------------------------------------------------- helpers

_Noreturn static void fail_undef(jr *r, long pos, jv u) {
    if (u.u.s.p && u.k) FAIL(pos, "%.*s", (int)u.u.s.n, u.u.s.p);
    if (u.u.s.p) FAIL(pos, "'%.*s' is undefined", (int)u.u.s.n, u.u.s.p);
    FAIL(pos, "an undefined value was used");
}

// An undefined value that explains itself when used ("'dict object' has no
// attribute 'x'", as jinja2 says).
static jv undef_msg(jr *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static jv undef_msg(jr *r, const char *fmt, ...) {
    char buf[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    jv v = jv_undef(ja_strdup(C, buf, strlen(buf)));
    v.k = 1;
    return v;
}

static jv undef_attr(jr *r, jv obj, const char *name) {
    return undef_msg(r, "'%s object' has no attribute '%.200s'", jv_typename(obj), name);
}

static jv mk_dict(jdict *d, int t) {
    jv v = {.t = (uint8_t)t};
    v.u.d = d;
    return v;
}

static jv tuple2(jr *r, jv a, jv b) {
    jlist *l = jl_new(C, 2);
    jl_push(C, l, a);
    jl_push(C, l, b);
    return jv_list(l, JL_TUPLE);
}

static void emit_text(jr *r, const char *s, size_t n) {
    if (r->out->n + n > MAX_OUT)
        jfail(C, LM_ERR_RANGE, -1, "the output is longer than %zu MiB", MAX_OUT >> 20);
    sb_put(C, r->out, s, n);
}

static jv concat_str(jr *r, const char *a, size_t an, const char *b, size_t bn) {
    if (an + bn > MAX_OUT) jfail(C, LM_ERR_RANGE, -1, "a string longer than %zu MiB", MAX_OUT >> 20);
    char *p = ja_alloc(C, an + bn + 1);
    memcpy(p, a, an);
    memcpy(p + an, b, bn);
    return jv_str(p, an + bn);
}

static jv escape_str(jr *r, jv s) {  // markupsafe.escape of a str
    jsb b = {0};
    sb_put(C, &b, "", 0);
    js_escape_to(C, &b, s.u.s.p, s.u.s.n);
    return jv_markup(b.p, b.n);
}

static jv soft_str(jr *r, long pos, jv v) {  // a str stays itself (Markup too), others become str(v)
    return v.t == JV_STR ? v : jv_to_str(C, pos, v);
}

static bool is_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return false;
    return true;
}

static void force(jr *r, jlist *l);

// The items of an iterable (a generator is consumed).
static jv *iter_items(jr *r, long pos, jv v, size_t *n) {
    switch (v.t) {
    case JV_LIST: {
        jlist *l = v.u.l;
        if (v.k == JL_GEN) {
            force(r, l);
            size_t from = l->pos;
            l->pos = l->n;
            *n = l->n - from;
            return l->v + from;
        }
        *n = l->n;
        return l->v;
    }
    case JV_DICT:
        *n = v.u.d->n;
        return v.u.d->k;
    case JV_STR: {
        size_t *off;
        size_t k = utf8_offsets(C, v.u.s.p, v.u.s.n, &off);
        jv *it = ja_alloc(C, (k + 1) * sizeof *it);
        for (size_t i = 0; i < k; i++) it[i] = jv_str(v.u.s.p + off[i], off[i + 1] - off[i]);
        *n = k;
        return it;
    }
    case JV_UNDEF: *n = 0; return NULL;
    case JV_LOOP: UNSUP(pos, "iterating over a loop object is not supported");
    default: FAIL(pos, "'%s' object is not iterable", jv_typename(v));
    }
}

static jv list_of(jr *r, const jv *items, size_t n, int kind) {
    jlist *l = jl_new(C, n);
    for (size_t i = 0; i < n; i++) jl_push(C, l, items[i]);
    return jv_list(l, kind);
}

static int64_t cp_len(jv s) { return (int64_t)utf8_count(s.u.s.p, s.u.s.n); }

// The code point slice [a, b) of a string as a new value (Markup kept).
static jv str_sub(jr *r, jv s, int64_t a, int64_t b) {
    if (is_ascii(s.u.s.p, s.u.s.n)) {
        jv v = jv_str(s.u.s.p + a, (size_t)(b - a));
        v.k = s.k;
        return v;
    }
    size_t *off;
    utf8_offsets(C, s.u.s.p, s.u.s.n, &off);
    jv v = jv_str(s.u.s.p + off[a], off[b] - off[a]);
    v.k = s.k;
    return v;
}

static bool py_contains(jr *r, long pos, jv hay, jv needle) {
    switch (hay.t) {
    case JV_STR:
        if (needle.t != JV_STR)
            FAIL(pos, "'in <string>' requires string as left operand, not %s", jv_typename(needle));
        if (needle.u.s.n == 0) return true;
        return memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case JV_DICT:
        if (!jv_hashable(needle)) FAIL(pos, "unhashable type: '%s'", jv_typename(needle));
        {
            jv tmp;
            return jd_get(hay.u.d, needle, &tmp);
        }
    case JV_LIST: {
        jlist *l = hay.u.l;
        if (hay.k == JL_GEN) {
            force(r, l);
            while (l->pos < l->n)
                if (jv_eq(l->v[l->pos++], needle)) return true;
            return false;
        }
        for (size_t i = 0; i < l->n; i++)
            if (jv_eq(l->v[i], needle)) return true;
        return false;
    }
    case JV_UNDEF: return false;
    default: FAIL(pos, "argument of type '%s' is not iterable", jv_typename(hay));
    }
}

// ---------------------------------------------------------------- arithmetic

static double to_f(jv v) { return v.t == JV_FLOAT ? v.u.f : (double)v.u.i; }

static jv int_result(jr *r, long pos, bool overflow, int64_t v) {
    if (overflow) UNSUP(pos, "integer overflow (Python's ints are unbounded, lightmoe's have 64 bits)");
    return jv_int(v);
}

static double py_fmod(double x, double y) {
    double mod = fmod(x, y);
    if (mod != 0) {
        if ((y < 0) != (mod < 0)) mod += y;
    } else {
        mod = copysign(0.0, y);
    }
    return mod;
}

static double py_floordiv(double vx, double wx) {
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod != 0) {
        if ((wx < 0) != (mod < 0)) div -= 1.0;
    }
    double fl;
    if (div != 0) {
        fl = floor(div);
        if (div - fl > 0.5) fl += 1.0;
    } else {
        fl = copysign(0.0, vx / wx);
    }
    return fl;
}

static jv repeat(jr *r, long pos, jv seq, int64_t times) {
    if (times < 0) times = 0;
    if (seq.t == JV_STR) {
        if (times && seq.u.s.n > MAX_OUT / (uint64_t)times)
            jfail(C, LM_ERR_RANGE, pos, "a string longer than %zu MiB", MAX_OUT >> 20);
        size_t n = seq.u.s.n * (size_t)times;
        char *p = ja_alloc(C, n + 1);
        for (int64_t i = 0; i < times; i++) memcpy(p + (size_t)i * seq.u.s.n, seq.u.s.p, seq.u.s.n);
        jv v = jv_str(p, n);
        v.k = seq.k;
        return v;
    }
    jlist *src = seq.u.l;
    if (times && src->n > (size_t)10000000 / (uint64_t)times) jfail(C, LM_ERR_RANGE, pos, "a list too long");
    jlist *l = jl_new(C, src->n * (size_t)times);
    for (int64_t i = 0; i < times; i++)
        for (size_t j = 0; j < src->n; j++) jl_push(C, l, src->v[j]);
    return jv_list(l, seq.k);
}

static jv binop(jr *r, long pos, int op, jv a, jv b) {
    if (op == OP_MOD && a.t == JV_STR) UNSUP(pos, "printf-style string formatting (str %% value) is not supported");
    if (a.t == JV_UNDEF) fail_undef(r, pos, a);
    if (b.t == JV_UNDEF) fail_undef(r, pos, b);
    static const char *const SYM[] = {"+", "-", "/", "//", "*", "%", "**"};
    bool num = jv_isnum(a) && jv_isnum(b);
    bool ints = jv_isint(a) && jv_isint(b);
    int64_t x = a.u.i, y = b.u.i, z = 0;
    switch (op) {
    case OP_ADD:
        if (ints) {
            bool o = __builtin_add_overflow(x, y, &z);
            return int_result(r, pos, o, z);
        }
        if (num) return jv_float(to_f(a) + to_f(b));
        if (a.t == JV_STR && b.t == JV_STR) {
            if (a.k == JS_MARKUP || b.k == JS_MARKUP) {
                jv l = a.k == JS_MARKUP ? a : escape_str(r, a);
                jv rr = b.k == JS_MARKUP ? b : escape_str(r, b);
                jv v = concat_str(r, l.u.s.p, l.u.s.n, rr.u.s.p, rr.u.s.n);
                v.k = JS_MARKUP;
                return v;
            }
            return concat_str(r, a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n);
        }
        if (a.t == JV_LIST && b.t == JV_LIST && a.k == b.k && (a.k == JL_LIST || a.k == JL_TUPLE)) {
            jlist *l = jl_new(C, a.u.l->n + b.u.l->n);
            for (size_t i = 0; i < a.u.l->n; i++) jl_push(C, l, a.u.l->v[i]);
            for (size_t i = 0; i < b.u.l->n; i++) jl_push(C, l, b.u.l->v[i]);
            return jv_list(l, a.k);
        }
        if (a.t == JV_STR && b.t != JV_STR)
            FAIL(pos, "can only concatenate str (not \"%s\") to str", jv_typename(b));
        break;
    case OP_SUB:
        if (ints) {
            bool o = __builtin_sub_overflow(x, y, &z);
            return int_result(r, pos, o, z);
        }
        if (num) return jv_float(to_f(a) - to_f(b));
        break;
    case OP_MUL:
        if (ints) {
            bool o = __builtin_mul_overflow(x, y, &z);
            return int_result(r, pos, o, z);
        }
        if (num) return jv_float(to_f(a) * to_f(b));
        if ((a.t == JV_STR || jv_isseq(a)) && jv_isint(b)) return repeat(r, pos, a, b.u.i);
        if ((b.t == JV_STR || jv_isseq(b)) && jv_isint(a)) return repeat(r, pos, b, a.u.i);
        break;
    case OP_DIV:
        if (num) {
            if (to_f(b) == 0 && !(b.t == JV_FLOAT && isnan(b.u.f))) FAIL(pos, "division by zero");
            return jv_float(to_f(a) / to_f(b));
        }
        break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (ints) {
            if (y == 0) FAIL(pos, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) return int_result(r, pos, op == OP_FLOORDIV, 0);
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return jv_int(op == OP_FLOORDIV ? q : m);
        }
        if (num) {
            double fx = to_f(a), fy = to_f(b);
            if (fy == 0) FAIL(pos, "float division by zero");
            return jv_float(op == OP_FLOORDIV ? py_floordiv(fx, fy) : py_fmod(fx, fy));
        }
        if (op == OP_MOD && a.t == JV_STR) UNSUP(pos, "printf-style string formatting (str %% value) is not supported");
        break;
    case OP_POW:
        if (ints && y >= 0) {
            int64_t res = 1, base = x;
            bool over = false;
            for (int64_t e = y; e > 0; e >>= 1) {
                if (e & 1) over |= __builtin_mul_overflow(res, base, &res);
                if (e > 1) over |= __builtin_mul_overflow(base, base, &base);
                if (over) break;
            }
            return int_result(r, pos, over, res);
        }
        if (num) {
            double fx = to_f(a), fy = to_f(b);
            if (fx == 0 && fy < 0) FAIL(pos, "0.0 cannot be raised to a negative power");
            if (fx < 0 && fy != floor(fy) && isfinite(fy)) UNSUP(pos, "a negative number to a fractional power is complex");
            double res = pow(fx, fy);
            if (isinf(res) && isfinite(fx) && isfinite(fy)) FAIL(pos, "(34, 'Numerical result out of range')");
            return jv_float(res);
        }
        break;
    }
    FAIL(pos, "unsupported operand type(s) for %s: '%s' and '%s'", SYM[op], jv_typename(a), jv_typename(b));
}

// ---------------------------------------------------------------- attributes

static const char *const PY_STR_METHODS[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
    "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier",
    "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
    "lstrip", "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex",
    "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase",
    "title", "translate", "upper", "zfill", NULL};

static bool in_names(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return true;
    return false;
}

static jv method(jr *r, jv self, const char *name) {
    struct jmethod *m = ja_alloc(C, sizeof *m);
    m->self = self;
    m->id = jmethod_lookup(name);
    if (m->id < 0) m->id = M_UNSUPPORTED;
    m->name = name;
    jv v = {.t = JV_METHOD};
    v.u.mt = m;
    return v;
}

static jv loop_attr(jr *r, long pos, struct jloop *L, const char *name, bool *found);

// Python's getattr(obj, name) under the immutable sandbox: *found is false
// when the object has no such attribute.
static jv py_getattr(jr *r, long pos, jv obj, const char *name, bool *found) {
    *found = true;
    bool dunder = name[0] == '_';
    switch (obj.t) {
    case JV_UNDEF: fail_undef(r, pos, obj);
    case JV_STR:
        if (!dunder && in_names(PY_STR_METHODS, name)) return method(r, obj, name);
        break;
    case JV_DICT: {
        static const char *const M[] = {"items", "keys", "values", "get", "copy", "fromkeys", NULL};
        static const char *const UNSAFE[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
        if (in_names(M, name)) return method(r, obj, name);
        if (in_names(UNSAFE, name)) return undef_msg(r, "access to attribute '%s' of 'dict' object is unsafe.", name);
        if (name[0] == '_' && name[1] == '_') return jv_undef(name);
        break;
    }
    case JV_LIST: {
        static const char *const UNSAFE[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort", NULL};
        if (obj.k == JL_LIST || obj.k == JL_TUPLE || obj.k == JL_RANGE) {
            if (!strcmp(name, "count") || !strcmp(name, "index")) return method(r, obj, name);
            if (obj.k == JL_LIST && !strcmp(name, "copy")) return method(r, obj, name);
            if (obj.k == JL_LIST && in_names(UNSAFE, name))
                return undef_msg(r, "access to attribute '%s' of 'list' object is unsafe.", name);
        }
        break;
    }
    case JV_BOOL:
    case JV_INT:
    case JV_FLOAT: {
        static const char *const NUM[] = {"real", "imag", "numerator", "denominator", "conjugate", "bit_length",
                                          "bit_count", "to_bytes", "from_bytes", "as_integer_ratio",
                                          "is_integer", "hex", "fromhex", NULL};
        if (in_names(NUM, name)) UNSUP(pos, "the attribute '%s' of numbers is not supported", name);
        break;
    }
    case JV_NS: {
        jv v;
        if (jd_get_str(obj.u.d, name, strlen(name), &v)) return v;
        break;
    }
    case JV_LOOP: {
        jv v = loop_attr(r, pos, obj.u.lp, name, found);
        if (*found) return v;
        break;
    }
    case JV_MACRO: {
        static const char *const MA[] = {"name", "arguments", "catch_kwargs", "catch_varargs", "caller", NULL};
        if (in_names(MA, name)) UNSUP(pos, "the attribute '%s' of a macro is not supported", name);
        break;
    }
    default: break;
    }
    *found = false;
    return jv_undef(name);
}

// environment.getattr: the attribute, else obj[name], else undefined.
static jv get_attr(jr *r, long pos, jv obj, const char *name) {
    bool found;
    jv v = py_getattr(r, pos, obj, name, &found);
    if (found) return v;
    if (obj.t == JV_DICT) {
        jv out;
        if (jd_get_str(obj.u.d, name, strlen(name), &out)) return out;
    }
    return undef_attr(r, obj, name);
}

static bool slice_part(jv v, bool *none, int64_t *out) {
    if (v.t == JV_NONE) {
        *none = true;
        return true;
    }
    *none = false;
    if (!jv_isint(v)) return false;
    *out = v.u.i;
    return true;
}

// Python's slice.indices + the selected positions.
static size_t slice_positions(jr *r, long pos, int64_t len, jv start, jv stop, jv step, int64_t *st0,
                              int64_t *stepo, bool *ok) {
    bool sn, en, pn;
    int64_t s = 0, e = 0, p = 1;
    *ok = slice_part(start, &sn, &s) && slice_part(stop, &en, &e) && slice_part(step, &pn, &p);
    if (!*ok) return 0;
    if (pn) p = 1;
    if (p == 0) FAIL(pos, "slice step cannot be zero");
    if (sn) s = p < 0 ? len - 1 : 0;
    else {
        if (s < 0) {
            s += len;
            if (s < 0) s = p < 0 ? -1 : 0;
        } else if (s >= len) {
            s = p < 0 ? len - 1 : len;
        }
    }
    if (en) e = p < 0 ? -1 : len;
    else {
        if (e < 0) {
            e += len;
            if (e < 0) e = p < 0 ? -1 : 0;
        } else if (e >= len) {
            e = p < 0 ? len - 1 : len;
        }
    }
    int64_t count = 0;
    if (p > 0 && e > s) count = (e - s - 1) / p + 1;
    if (p < 0 && e < s) count = (s - e - 1) / (-p) + 1;
    *st0 = s;
    *stepo = p;
    return (size_t)count;
}

static jv bad_slice(jr *r, long pos, jv obj) {
    if (r->fold) return undef_msg(r, "'%s object' has no element slice", jv_typename(obj));
    FAIL(pos, "slice indices must be integers or None or have an __index__ method");
}

// obj[a:b:c]: jinja2 subscripts slices directly (not through
// environment.getitem), so every failure is an error.
static jv get_slice(jr *r, long pos, jv obj, jv a, jv b, jv c) {
    bool ok;
    int64_t s, p;
    if (obj.t == JV_UNDEF) fail_undef(r, pos, obj);
    if (obj.t == JV_STR) {
        int64_t len = cp_len(obj);
        size_t k = slice_positions(r, pos, len, a, b, c, &s, &p, &ok);
        if (!ok) return bad_slice(r, pos, obj);
        if (p == 1) return str_sub(r, obj, s, s + (int64_t)k);
        size_t *off;
        utf8_offsets(C, obj.u.s.p, obj.u.s.n, &off);
        jsb out = {0};
        sb_put(C, &out, "", 0);
        for (size_t i = 0; i < k; i++) {
            int64_t ix = s + (int64_t)i * p;
            sb_put(C, &out, obj.u.s.p + off[ix], off[ix + 1] - off[ix]);
        }
        jv v = jv_str(out.p, out.n);
        v.k = obj.k;
        return v;
    }
    if (jv_isseq(obj)) {
        const jlist *l = obj.u.l;
        size_t k = slice_positions(r, pos, (int64_t)l->n, a, b, c, &s, &p, &ok);
        if (!ok) return bad_slice(r, pos, obj);
        jlist *nl = jl_new(C, k);
        for (size_t i = 0; i < k; i++) jl_push(C, nl, l->v[s + (int64_t)i * p]);
        return jv_list(nl, obj.k);
    }
    if (obj.t == JV_LIST && obj.k == JL_RANGE) UNSUP(pos, "slicing a range is not supported");
    if (r->fold) return undef_msg(r, "'%s object' has no element slice", jv_typename(obj));
    if (obj.t == JV_DICT) FAIL(pos, "unhashable type: 'slice'");
    FAIL(pos, "'%s' object is not subscriptable", jv_typename(obj));
}

// environment.getitem: obj[key], else the attribute key, else undefined.
static jv get_item(jr *r, long pos, jv obj, jv key) {
    switch (obj.t) {
    case JV_UNDEF: fail_undef(r, pos, obj);
    case JV_DICT:
        if (jv_hashable(key)) {
            jv v;
            if (jd_get(obj.u.d, key, &v)) return v;
        }
        break;
    case JV_LIST:
        if ((obj.k == JL_LIST || obj.k == JL_TUPLE || obj.k == JL_RANGE) && jv_isint(key)) {
            int64_t i = key.u.i, n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.u.l->v[i];
            return undef_msg(r, "'%s object' has no element %lld", jv_typename(obj), (long long)key.u.i);
        }
        break;
    case JV_STR:
        if (jv_isint(key)) {
            int64_t i = key.u.i, n = cp_len(obj);
            if (i < 0) i += n;
            if (i >= 0 && i < n) return str_sub(r, obj, i, i + 1);
            return undef_msg(r, "'str object' has no element %lld", (long long)key.u.i);
        }
        break;
    default: break;
    }
    if (key.t == JV_STR) {
        char *name = ja_strdup(C, key.u.s.p, key.u.s.n);
        if (strlen(name) == key.u.s.n) {
            bool found;
            jv v = py_getattr(r, pos, obj, name, &found);
            if (found) return v;
        }
        return undef_msg(r, "'%s object' has no attribute '%.200s'", jv_typename(obj), name);
    }
    if (jv_isint(key)) return undef_msg(r, "'%s object' has no element %lld", jv_typename(obj), (long long)key.u.i);
    return undef_msg(r, "'%s object' has no element of type %s", jv_typename(obj), jv_typename(key));
}

// ---------------------------------------------------------------- loops

static void unpack(jr *r, const jnode *target, jv v, jscope *sc);

static bool loop_passes(jr *r, struct jloop *L, size_t i) {
    if (!L->filter) return true;
    if (!L->state[i]) {
        jscope *tmp = scope_new(r, L->outer);
        unpack(r, L->target, L->items[i], tmp);
        L->state[i] = jv_truthy(eval(r, L->filter, tmp)) ? 1 : 2;
    }
    return L->state[i] == 1;
}

// The index of the next passing item after `from` (exclusive), or n.
static size_t loop_next(jr *r, struct jloop *L, size_t from) {
    size_t i = from;
    while (i < L->n && !loop_passes(r, L, i)) i++;
    return i;
}

static int64_t loop_length(jr *r, struct jloop *L) {
    int64_t k = L->index0 + 1;
    for (size_t i = L->cur + 1; i < L->n; i++) k += loop_passes(r, L, i);
    return k;
}

static jv loop_attr(jr *r, long pos, struct jloop *L, const char *name, bool *found) {
    *found = true;
    if (!strcmp(name, "index0")) return jv_int(L->index0);
    if (!strcmp(name, "index")) return jv_int(L->index0 + 1);
    if (!strcmp(name, "first")) return jv_bool(L->index0 == 0);
    if (!strcmp(name, "last")) return jv_bool(loop_next(r, L, L->cur + 1) >= L->n);
    if (!strcmp(name, "length")) return jv_int(loop_length(r, L));
    if (!strcmp(name, "revindex")) return jv_int(loop_length(r, L) - L->index0);
    if (!strcmp(name, "revindex0")) return jv_int(loop_length(r, L) - L->index0 - 1);
    if (!strcmp(name, "depth")) return jv_int(1);
    if (!strcmp(name, "depth0")) return jv_int(0);
    if (!strcmp(name, "previtem")) return L->has_prev ? L->prev : jv_undef("previtem");
    if (!strcmp(name, "nextitem")) {
        size_t i = loop_next(r, L, L->cur + 1);
        return i < L->n ? L->items[i] : jv_undef("nextitem");
    }
    if (!strcmp(name, "cycle") || !strcmp(name, "changed")) {
        jv self = {.t = JV_LOOP};
        self.u.lp = L;
        return method(r, self, name);
    }
    (void)pos;
    *found = false;
    return jv_undef(name);
}

// ---------------------------------------------------------------- assignment

static void unpack(jr *r, const jnode *target, jv v, jscope *sc) {
    if (target->k == N_NAME) {
        scope_set(r, sc, target->s, v);
        return;
    }
    if (target->k == N_NSREF) {
        jv ns = lookup(r, sc, target->s);
        if (ns.t != JV_NS) FAIL(target->pos, "cannot assign attribute on non-namespace object");
        jd_set(C, ns.u.d, jv_str(target->s2, strlen(target->s2)), v);
        return;
    }
    size_t n;
    jv *items = iter_items(r, target->pos, v, &n);
    if (n != (size_t)target->n) {
        if (n > (size_t)target->n) FAIL(target->pos, "too many values to unpack (expected %d)", target->n);
        FAIL(target->pos, "not enough values to unpack (expected %d, got %zu)", target->n, n);
    }
    for (int32_t i = 0; i < target->n; i++) unpack(r, target->v[i], items[i], sc);
}

// ---------------------------------------------------------------- arguments

typedef struct {
    const jv *pv;
    int np;
    const char *const *kn;
    const jv *kv;
    int nk;
    uint64_t used;
    const char *fname;
    long pos;
} jargs;

static bool ga(jr *r, jargs *a, int i, const char *name, jv *out) {
    int k = -1;
    for (int j = 0; j < a->nk; j++)
        if (name && !strcmp(a->kn[j], name)) k = j;
    if (i >= 0 && i < a->np) {
        if (k >= 0) FAIL(a->pos, "%s() got multiple values for argument '%s'", a->fname, name);
        *out = a->pv[i];
        return true;
    }
    if (k >= 0) {
        a->used |= 1ull << k;
        *out = a->kv[k];
        return true;
    }
    return false;
}

static void ga_done(jr *r, jargs *a, int max_pos) {
    if (a->np > max_pos) FAIL(a->pos, "%s() takes at most %d positional argument(s) (%d given)", a->fname, max_pos, a->np);
    for (int j = 0; j < a->nk; j++)
        if (!(a->used & (1ull << j))) FAIL(a->pos, "%s() got an unexpected keyword argument '%s'", a->fname, a->kn[j]);
}

static int64_t want_int(jr *r, jargs *a, jv v, const char *what) {
    if (!jv_isint(v)) FAIL(a->pos, "%s(): %s must be an integer, not '%s'", a->fname, what, jv_typename(v));
    return v.u.i;
}

static jv want_str(jr *r, jargs *a, jv v, const char *what) {
    if (v.t != JV_STR) FAIL(a->pos, "%s(): %s must be str, not %s", a->fname, what, jv_typename(v));
    return v;
}

// ---------------------------------------------------------------- str methods

typedef struct {
    jv s;
    size_t *off;  // NULL when ASCII
    int64_t n;    // code points
} sview;

static sview sv_of(jr *r, jv s) {
    sview v = {s, NULL, 0};
    if (is_ascii(s.u.s.p, s.u.s.n)) v.n = (int64_t)s.u.s.n;
    else v.n = (int64_t)utf8_offsets(C, s.u.s.p, s.u.s.n, &v.off);
    return v;
}
static size_t sv_byte(const sview *v, int64_t i) { return v->off ? v->off[i] : (size_t)i; }
static int64_t sv_cp(const sview *v, size_t byte) {  // code point index of a byte offset
    if (!v->off) return (int64_t)byte;
    int64_t lo = 0, hi = v->n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (v->off[mid] < byte) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void adjust_indices(int64_t *start, int64_t *end, int64_t len) {
    if (*end > len) *end = len;
    else if (*end < 0) {
        *end += len;
        if (*end < 0) *end = 0;
    }
    if (*start < 0) {
        *start += len;
        if (*start < 0) *start = 0;
    }
}

// Optional start/end arguments (ints or None) at positions i, i+1.
static void start_end(jr *r, jargs *a, int i, int64_t len, int64_t *start, int64_t *end) {
    jv v;
    *start = 0;
    *end = INT64_MAX;
    if (ga(r, a, i, NULL, &v) && v.t != JV_NONE) *start = want_int(r, a, v, "start");
    if (ga(r, a, i + 1, NULL, &v) && v.t != JV_NONE) *end = want_int(r, a, v, "end");
    adjust_indices(start, end, len);
}

static const char *mem_rfind(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (memcmp(h + i, n, nn) == 0) return h + i;
    return NULL;
}

static bool is_strip_char(uint32_t cp, const sview *chars) {
    if (!chars) return py_isspace(cp);
    const char *p = chars->s.u.s.p;
    size_t n = chars->s.u.s.n, i = 0;
    while (i < n)
        if (utf8_next(p, n, &i) == cp) return true;
    return false;
}

static jv do_strip(jr *r, jv s, const sview *chars, bool left, bool right) {
    size_t a = 0, b = s.u.s.n;
    const char *p = s.u.s.p;
    if (left)
        while (a < b) {
            size_t j = a;
            if (!is_strip_char(utf8_next(p, b, &j), chars)) break;
            a = j;
        }
    if (right)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
            size_t j = st;
            if (!is_strip_char(utf8_next(p, s.u.s.n, &j), chars)) break;
            b = st;
        }
    jv v = jv_str(p + a, b - a);
    v.k = s.k;
    return v;
}

static jv markup_like(jv self, jv v) {
    if (self.k == JS_MARKUP && v.t == JV_STR) v.k = JS_MARKUP;
    return v;
}

// str.split / str.rsplit
static jv do_split(jr *r, jv s, jv sep, int64_t maxsplit, bool rev) {
    jlist *l = jl_new(C, 0);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (sep.t == JV_NONE) {
        if (!rev) {
            size_t i = 0;
            int64_t splits = 0;
            for (;;) {
                while (i < n) {  // skip whitespace
                    size_t j = i;
                    if (!py_isspace(utf8_next(p, n, &j))) break;
                    i = j;
                }
                if (i >= n) break;
                if (splits == maxsplit) {
                    jl_push(C, l, markup_like(s, jv_str(p + i, n - i)));
                    break;
                }
                size_t st = i;
                while (i < n) {
                    size_t j = i;
                    if (py_isspace(utf8_next(p, n, &j))) break;
                    i = j;
                }
                jl_push(C, l, markup_like(s, jv_str(p + st, i - st)));
                splits++;
            }
        } else {
            size_t i = n;
            int64_t splits = 0;
            jlist *tmp = jl_new(C, 0);
            for (;;) {
                while (i > 0) {
                    size_t st = i - 1;
                    while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
                    size_t j = st;
                    if (!py_isspace(utf8_next(p, n, &j))) break;
                    i = st;
                }
                if (i == 0) break;
                if (splits == maxsplit) {
                    jl_push(C, tmp, markup_like(s, jv_str(p, i)));
                    break;
                }
                size_t end = i;
                while (i > 0) {
                    size_t st = i - 1;
                    while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
                    size_t j = st;
                    if (py_isspace(utf8_next(p, n, &j))) break;
                    i = st;
                }
                jl_push(C, tmp, markup_like(s, jv_str(p + i, end - i)));
                splits++;
            }
            for (size_t k = tmp->n; k-- > 0;) jl_push(C, l, tmp->v[k]);
        }
        return jv_list(l, JL_LIST);
    }
    const char *sp = sep.u.s.p;
    size_t sn = sep.u.s.n;
    if (!rev) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *hit = splits < maxsplit ? memmem(p + i, n - i, sp, sn) : NULL;
            if (!hit) {
                jl_push(C, l, markup_like(s, jv_str(p + i, n - i)));
                break;
            }
            jl_push(C, l, markup_like(s, jv_str(p + i, (size_t)(hit - (p + i)))));
            i = (size_t)(hit - p) + sn;
            splits++;
        }
        return jv_list(l, JL_LIST);
    }
    jlist *tmp = jl_new(C, 0);
    size_t end = n;
    int64_t splits = 0;
    for (;;) {
        const char *hit = splits < maxsplit ? mem_rfind(p, end, sp, sn) : NULL;
        if (!hit) {
            jl_push(C, tmp, markup_like(s, jv_str(p, end)));
            break;
        }
        size_t after = (size_t)(hit - p) + sn;
        jl_push(C, tmp, markup_like(s, jv_str(p + after, end - after)));
        end = (size_t)(hit - p);
        splits++;
    }
    for (size_t k = tmp->n; k-- > 0;) jl_push(C, l, tmp->v[k]);
    return jv_list(l, JL_LIST);
}

static jv do_replace(jr *r, jv s, jv old, jv new_, int64_t count) {
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (count < 0) count = INT64_MAX;
    jsb b = {0};
    sb_put(C, &b, "", 0);
    if (old.u.s.n == 0) {
        // inserted before every code point and at the end
        size_t i = 0;
        int64_t done = 0;
        while (i < n) {
            if (done < count) {
                sb_put(C, &b, new_.u.s.p, new_.u.s.n);
                done++;
            }
            size_t st = i;
            utf8_next(p, n, &i);
            sb_put(C, &b, p + st, i - st);
        }
        if (done < count) sb_put(C, &b, new_.u.s.p, new_.u.s.n);
        return jv_str(b.p, b.n);
    }
    size_t i = 0;
    int64_t done = 0;
    while (done < count) {
        const char *hit = memmem(p + i, n - i, old.u.s.p, old.u.s.n);
        if (!hit) break;
        sb_put(C, &b, p + i, (size_t)(hit - (p + i)));
        sb_put(C, &b, new_.u.s.p, new_.u.s.n);
        i = (size_t)(hit - p) + old.u.s.n;
        done++;
    }
    sb_put(C, &b, p + i, n - i);
    if (b.n > MAX_OUT) jfail(C, LM_ERR_RANGE, -1, "a string longer than %zu MiB", MAX_OUT >> 20);
    return jv_str(b.p, b.n);
}

static jv splitlines(jr *r, jv s, bool keepends) {
    jlist *l = jl_new(C, 0);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0, st = 0;
    while (i < n) {
        size_t j = i;
        uint32_t cp = utf8_next(p, n, &j);
        if (py_islinebreak(cp)) {
            size_t eol = j;
            if (cp == '\r' && j < n && p[j] == '\n') eol = j + 1;
            jl_push(C, l, markup_like(s, jv_str(p + st, (keepends ? eol : i) - st)));
            st = i = eol;
        } else {
            i = j;
        }
    }
    if (st < n) jl_push(C, l, markup_like(s, jv_str(p + st, n - st)));
    return jv_list(l, JL_LIST);
}

static bool ascii_class(jr *r, long pos, jv s, const char *name, int (*pred)(int)) {
    if (!is_ascii(s.u.s.p, s.u.s.n)) UNSUP(pos, "str.%s() of non-ASCII text is not supported", name);
    if (s.u.s.n == 0) return false;
    for (size_t i = 0; i < s.u.s.n; i++)
        if (!pred((unsigned char)s.u.s.p[i])) return false;
    return true;
}
static int p_digit(int ch) { return ch >= '0' && ch <= '9'; }
static int p_alpha(int ch) { return (ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'; }
static int p_alnum(int ch) { return p_digit(ch) || p_alpha(ch); }

static jv str_method(jr *r, long pos, jv s, int id, jargs *a) {
    jv x, y, z;
    switch (id) {
    case M_startswith:
    case M_endswith: {
        if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "%s() takes at least 1 argument (0 given)", a->fname);
        sview sv = sv_of(r, s);
        int64_t st, en;
        start_end(r, a, 1, sv.n, &st, &en);
        ga_done(r, a, 3);
        const jv *cands = &x;
        size_t nc = 1;
        if (x.t == JV_LIST && x.k == JL_TUPLE) {
            cands = x.u.l->v;
            nc = x.u.l->n;
        }
        for (size_t i = 0; i < nc; i++) {
            jv pre = cands[i];
            if (pre.t != JV_STR)
                FAIL(pos, "%s first arg must be str or a tuple of str, not %s", a->fname, jv_typename(pre));
            int64_t pn = cp_len(pre);
            if (en - pn < st) continue;
            if (pn == 0) return jv_bool(true);
            int64_t at = id == M_startswith ? st : en - pn;
            size_t b0 = sv_byte(&sv, at), b1 = sv_byte(&sv, at + pn);
            if (b1 - b0 == pre.u.s.n && memcmp(s.u.s.p + b0, pre.u.s.p, pre.u.s.n) == 0) return jv_bool(true);
        }
        return jv_bool(false);
    }
    case M_strip:
    case M_lstrip:
    case M_rstrip: {
        sview chars, *cp = NULL;
        if (ga(r, a, 0, NULL, &x) && x.t != JV_NONE) {
            chars = sv_of(r, want_str(r, a, x, "chars"));
            cp = &chars;
        }
        ga_done(r, a, 1);
        return do_strip(r, s, cp, id != M_rstrip, id != M_lstrip);
    }
    case M_split:
    case M_rsplit: {
        jv sep = jv_none();
        int64_t maxsplit = -1;
        if (ga(r, a, 0, "sep", &x)) sep = x;
        if (ga(r, a, 1, "maxsplit", &y)) maxsplit = want_int(r, a, y, "maxsplit");
        ga_done(r, a, 2);
        if (sep.t != JV_NONE) {
            want_str(r, a, sep, "sep");
            if (sep.u.s.n == 0) FAIL(pos, "empty separator");
        }
        return do_split(r, s, sep, maxsplit, id == M_rsplit);
    }
    case M_splitlines: {
        bool keep = ga(r, a, 0, "keepends", &x) && want_int(r, a, x, "keepends");
        ga_done(r, a, 1);
        return splitlines(r, s, keep);
    }
    case M_upper: ga_done(r, a, 0); return markup_like(s, ps_upper(C, s.u.s.p, s.u.s.n));
    case M_lower: ga_done(r, a, 0); return markup_like(s, ps_lower(C, s.u.s.p, s.u.s.n));
    case M_title: ga_done(r, a, 0); return markup_like(s, ps_title(C, s.u.s.p, s.u.s.n));
    case M_capitalize: ga_done(r, a, 0); return markup_like(s, ps_capitalize(C, s.u.s.p, s.u.s.n));
    case M_replace: {
        if (!ga(r, a, 0, NULL, &x) || !ga(r, a, 1, NULL, &y)) FAIL(pos, "replace() takes at least 2 arguments");
        int64_t count = -1;
        if (ga(r, a, 2, "count", &z)) count = want_int(r, a, z, "count");
        ga_done(r, a, 3);
        want_str(r, a, x, "old");
        want_str(r, a, y, "new");
        if (s.k == JS_MARKUP) {  // Markup escapes the arguments
            if (x.k != JS_MARKUP) x = escape_str(r, x);
            if (y.k != JS_MARKUP) y = escape_str(r, y);
        }
        return markup_like(s, do_replace(r, s, x, y, count));
    }
    case M_find:
    case M_rfind:
    case M_index:
    case M_rindex:
    case M_count: {
        if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "%s() takes at least 1 argument (0 given)", a->fname);
        want_str(r, a, x, "sub");
        sview sv = sv_of(r, s);
        int64_t st, en;
        start_end(r, a, 1, sv.n, &st, &en);
        ga_done(r, a, 3);
        int64_t sub_n = cp_len(x);
        if (id == M_count) {
            if (en - st < sub_n) return jv_int(0);
            if (sub_n == 0) return jv_int(en - st + 1);
            size_t b0 = sv_byte(&sv, st), b1 = sv_byte(&sv, en);
            int64_t k = 0;
            const char *p = s.u.s.p + b0, *e = s.u.s.p + b1;
            const char *hit;
            while ((hit = memmem(p, (size_t)(e - p), x.u.s.p, x.u.s.n))) {
                k++;
                p = hit + x.u.s.n;
            }
            return jv_int(k);
        }
        int64_t res = -1;
        if (en - st >= sub_n) {
            size_t b0 = sv_byte(&sv, st), b1 = sv_byte(&sv, en);
            const char *hit = (id == M_find || id == M_index) ? memmem(s.u.s.p + b0, b1 - b0, x.u.s.p, x.u.s.n)
                                                                : mem_rfind(s.u.s.p + b0, b1 - b0, x.u.s.p, x.u.s.n);
            if (sub_n == 0) res = (id == M_find || id == M_index) ? st : en;
            else if (hit) res = sv_cp(&sv, (size_t)(hit - s.u.s.p));
        }
        if (res < 0 && (id == M_index || id == M_rindex)) FAIL(pos, "substring not found");
        return jv_int(res);
    }
    case M_join: {
        if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "join() takes exactly one argument (0 given)");
        ga_done(r, a, 1);
        size_t n;
        jv *items = iter_items(r, pos, x, &n);
        jsb b = {0};
        sb_put(C, &b, "", 0);
        for (size_t i = 0; i < n; i++) {
            jv it = items[i];
            if (s.k == JS_MARKUP) {  // Markup.join escapes the items
                it = it.t == JV_STR ? (it.k == JS_MARKUP ? it : escape_str(r, it)) : escape_str(r, jv_to_str(C, pos, it));
            } else if (it.t != JV_STR) {
                FAIL(pos, "sequence item %zu: expected str instance, %s found", i, jv_typename(it));
            }
            if (i) sb_put(C, &b, s.u.s.p, s.u.s.n);
            sb_put(C, &b, it.u.s.p, it.u.s.n);
        }
        return markup_like(s, jv_str(b.p, b.n));
    }
    case M_isdigit: ga_done(r, a, 0); return jv_bool(ascii_class(r, pos, s, "isdigit", p_digit));
    case M_isalpha: ga_done(r, a, 0); return jv_bool(ascii_class(r, pos, s, "isalpha", p_alpha));
    case M_isalnum: ga_done(r, a, 0); return jv_bool(ascii_class(r, pos, s, "isalnum", p_alnum));
    case M_isspace: {
        ga_done(r, a, 0);
        if (!s.u.s.n) return jv_bool(false);
        size_t i = 0;
        while (i < s.u.s.n)
            if (!py_isspace(utf8_next(s.u.s.p, s.u.s.n, &i))) return jv_bool(false);
        return jv_bool(true);
    }
    case M_isupper: ga_done(r, a, 0); return jv_bool(ps_isupper(s.u.s.p, s.u.s.n));
    case M_islower: ga_done(r, a, 0); return jv_bool(ps_islower(s.u.s.p, s.u.s.n));
    case M_removeprefix:
    case M_removesuffix: {
        if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "%s() takes exactly one argument (0 given)", a->fname);
        ga_done(r, a, 1);
        want_str(r, a, x, "prefix");
        size_t n = s.u.s.n, k = x.u.s.n;
        if (k <= n && id == M_removeprefix && memcmp(s.u.s.p, x.u.s.p, k) == 0)
            return markup_like(s, jv_str(s.u.s.p + k, n - k));
        if (k <= n && id == M_removesuffix && k && memcmp(s.u.s.p + n - k, x.u.s.p, k) == 0)
            return markup_like(s, jv_str(s.u.s.p, n - k));
        return s;
    }
    case M_partition:
    case M_rpartition: {
        if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "%s() takes exactly one argument (0 given)", a->fname);
        ga_done(r, a, 1);
        want_str(r, a, x, "sep");
        if (!x.u.s.n) FAIL(pos, "empty separator");
        const char *hit = id == M_partition ? memmem(s.u.s.p, s.u.s.n, x.u.s.p, x.u.s.n)
                                            : mem_rfind(s.u.s.p, s.u.s.n, x.u.s.p, x.u.s.n);
        jlist *l = jl_new(C, 3);
        jv empty = markup_like(s, jv_str("", 0));
        if (!hit) {
            if (id == M_partition) {
                jl_push(C, l, s);
                jl_push(C, l, empty);
                jl_push(C, l, empty);
            } else {
                jl_push(C, l, empty);
                jl_push(C, l, empty);
                jl_push(C, l, s);
            }
        } else {
            size_t at = (size_t)(hit - s.u.s.p);
            jl_push(C, l, markup_like(s, jv_str(s.u.s.p, at)));
            jl_push(C, l, markup_like(s, x));
            jl_push(C, l, markup_like(s, jv_str(s.u.s.p + at + x.u.s.n, s.u.s.n - at - x.u.s.n)));
        }
        return jv_list(l, JL_TUPLE);
    }
    default: break;
    }
    UNSUP(pos, "the method str.%s() is not supported", a->fname);
}

static jv call_method(jr *r, long pos, struct jmethod *m, jargs *a) {
    jv self = m->self, x, y;
    a->fname = m->name;
    if (m->id == M_UNSUPPORTED) UNSUP(pos, "the method %s() is not supported", m->name);
    if (self.t == JV_STR) return str_method(r, pos, self, m->id, a);
    if (self.t == JV_DICT) {
        jdict *d = self.u.d;
        switch (m->id) {
        case M_items:
        case M_keys:
        case M_values: {
            ga_done(r, a, 0);
            jlist *l = jl_new(C, d->n);
            for (size_t i = 0; i < d->n; i++)
                jl_push(C, l, m->id == M_keys ? d->k[i] : m->id == M_values ? d->v[i] : tuple2(r, d->k[i], d->v[i]));
            return jv_list(l, m->id == M_keys ? JL_KEYS : m->id == M_values ? JL_VALUES : JL_ITEMS);
        }
        case M_get: {
            if (a->nk) FAIL(pos, "get() takes no keyword arguments");
            if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "get expected at least 1 argument, got 0");
            jv def = jv_none();
            ga(r, a, 1, NULL, &def);
            ga_done(r, a, 2);
            if (!jv_hashable(x)) FAIL(pos, "unhashable type: '%s'", jv_typename(x));
            return jd_get(d, x, &y) ? y : def;
        }
        case M_copy: {
            ga_done(r, a, 0);
            jdict *nd = jd_new(C, d->n);
            for (size_t i = 0; i < d->n; i++) jd_set(C, nd, d->k[i], d->v[i]);
            return mk_dict(nd, JV_DICT);
        }
        default: break;
        }
    }
    if (self.t == JV_LIST) {
        jlist *l = self.u.l;
        switch (m->id) {
        case M_count: {
            if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "count() takes exactly one argument (0 given)");
            ga_done(r, a, 1);
            int64_t k = 0;
            for (size_t i = 0; i < l->n; i++) k += jv_eq(l->v[i], x);
            return jv_int(k);
        }
        case M_index: {
            if (!ga(r, a, 0, NULL, &x)) FAIL(pos, "index expected at least 1 argument, got 0");
            int64_t st = 0, en = INT64_MAX;
            if (ga(r, a, 1, NULL, &y)) st = want_int(r, a, y, "start");
            if (ga(r, a, 2, NULL, &y)) en = want_int(r, a, y, "stop");
            ga_done(r, a, 3);
            adjust_indices(&st, &en, (int64_t)l->n);
            for (int64_t i = st; i < en; i++)
                if (jv_eq(l->v[i], x)) return jv_int(i);
            FAIL(pos, "the value is not in the list");
        }
        case M_copy:
            ga_done(r, a, 0);
            return list_of(r, l->v, l->n, JL_LIST);
        default: break;
        }
    }
    if (self.t == JV_LOOP) {
        struct jloop *L = self.u.lp;
        if (m->id == M_cycle) {
            if (a->nk) FAIL(pos, "cycle() takes no keyword arguments");
            if (!a->np) FAIL(pos, "no items for cycling given");
            return a->pv[L->index0 % a->np];
        }
        if (m->id == M_changed) {
            if (a->nk) FAIL(pos, "changed() takes no keyword arguments");
            jv now = list_of(r, a->pv, (size_t)a->np, JL_TUPLE);
            if (L->changed_set && jv_eq(now, L->changed_last)) return jv_bool(false);
            L->changed_set = true;
            L->changed_last = now;
            return jv_bool(true);
        }
    }
    UNSUP(pos, "the method %s() of %s is not supported", m->name, jv_typename(self));
}

// ---------------------------------------------------------------- globals

static jv build_dict(jr *r, long pos, jargs *a, int t, const char *fname) {
    jdict *d = jd_new(C, 0);
    if (a->np > 1) FAIL(pos, "%s expected at most 1 argument, got %d", fname, a->np);
    if (a->np == 1) {
        jv src = a->pv[0];
        if (src.t == JV_UNDEF) fail_undef(r, pos, src);
        if (src.t == JV_DICT || src.t == JV_NS) {
            for (size_t i = 0; i < src.u.d->n; i++) jd_set(C, d, src.u.d->k[i], src.u.d->v[i]);
        } else {
            size_t n;
            jv *items = iter_items(r, pos, src, &n);
            for (size_t i = 0; i < n; i++) {
                size_t k;
                jv *kv = iter_items(r, pos, items[i], &k);
                if (k != 2) FAIL(pos, "dictionary update sequence element #%zu has length %zu; 2 is required", i, k);
                if (!jv_hashable(kv[0])) FAIL(pos, "unhashable type: '%s'", jv_typename(kv[0]));
                jd_set(C, d, kv[0], kv[1]);
            }
        }
    }
    for (int i = 0; i < a->nk; i++) jd_set(C, d, jv_str(a->kn[i], strlen(a->kn[i])), a->kv[i]);
    return mk_dict(d, t);
}

static jv strftime_now(jr *r, long pos, jv fmt) {
    if (fmt.t != JV_STR) FAIL(pos, "strftime() argument 1 must be str, not %s", jv_typename(fmt));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    time_t secs = tv.tv_sec;
    struct tm tm;
    localtime_r(&secs, &tm);
    jsb b = {0};
    sb_put(C, &b, "", 0);
    const char *f = fmt.u.s.p;
    size_t n = fmt.u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (f[i] != '%') {
            sb_putc(C, &b, f[i]);
            continue;
        }
        if (i + 1 >= n) UNSUP(pos, "strftime_now: a format ending in '%%' is not supported");
        char d = f[++i];
        if (d == 'f') {
            sb_printf(C, &b, "%06ld", (long)tv.tv_usec);
        } else if (d == 'z' || d == 'Z') {
            // datetime.now() is naive: no offset, no zone name
        } else if (strchr("aAbBcdHIjmMpSUwWxXyYGuVgCDeFhnrRtT%", d)) {
            char spec[3] = {'%', d, 0}, out[128];
            size_t k = strftime(out, sizeof out, spec, &tm);
            sb_put(C, &b, out, k);
        } else {
            UNSUP(pos, "strftime_now: the directive %%%c is not supported", d);
        }
    }
    return jv_str(b.p, b.n);
}

static jv call_func(jr *r, long pos, int id, jargs *a) {
    switch (id) {
    case JF_RANGE: {
        a->fname = "range";
        if (a->nk) FAIL(pos, "range() takes no keyword arguments");
        if (a->np < 1 || a->np > 3) FAIL(pos, "range expected 1 to 3 arguments, got %d", a->np);
        int64_t v[3];
        for (int i = 0; i < a->np; i++) {
            if (!jv_isint(a->pv[i]))
                FAIL(pos, "'%s' object cannot be interpreted as an integer", jv_typename(a->pv[i]));
            v[i] = a->pv[i].u.i;
        }
        int64_t start = a->np == 1 ? 0 : v[0], stop = a->np == 1 ? v[0] : v[1], step = a->np == 3 ? v[2] : 1;
        if (step == 0) FAIL(pos, "range() arg 3 must not be zero");
        int64_t count = 0;
        if (step > 0 && stop > start) count = (stop - start - 1) / step + 1;
        if (step < 0 && stop < start) count = (start - stop - 1) / (-step) + 1;
        if (count > MAX_RANGE)
            FAIL(pos, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
        jlist *l = jl_new(C, (size_t)count);
        for (int64_t i = 0; i < count; i++) jl_push(C, l, jv_int(start + i * step));
        l->r0 = start;
        l->r1 = stop;
        l->r2 = step;
        return jv_list(l, JL_RANGE);
    }
    case JF_DICT: return build_dict(r, pos, a, JV_DICT, "dict");
    case JF_NAMESPACE: return build_dict(r, pos, a, JV_NS, "namespace");
    case JF_RAISE: {
        jv msg = a->np ? jv_to_str(C, pos, a->pv[0]) : jv_str("", 0);
        jfail(C, LM_ERR_INVALID_ARG, -1, "%.*s", (int)(msg.u.s.n > 500 ? 500 : msg.u.s.n), msg.u.s.p);
    }
    case JF_STRFTIME:
        if (a->np != 1 || a->nk) FAIL(pos, "strftime_now() takes exactly one argument");
        return strftime_now(r, pos, a->pv[0]);
    }
    FAIL(pos, "unknown function");
}

// ---------------------------------------------------------------- macros

static jv call_macro(jr *r, long pos, struct jmacro *m, jargs *a, jv caller) {
    const jnode *def = m->def;
    bool is_caller = def->k == S_CALLBLOCK;
    const char *mname = is_caller ? "caller" : def->s;
    if (r->depth >= MAX_DEPTH) jfail(C, LM_ERR_RANGE, pos, "macro calls nested more than %d deep", MAX_DEPTH);
    jscope *sc = scope_new(r, m->scope);
    if (a->np > def->np) FAIL(pos, "macro '%s' takes not more than %d argument(s)", mname, def->np);
    uint64_t used = 0;
    for (int32_t i = 0; i < def->np; i++) {
        const char *pname = def->names[i];
        jv v;
        int k = -1;
        for (int j = 0; j < a->nk; j++)
            if (!strcmp(a->kn[j], pname)) k = j;
        if (i < a->np) {
            if (k >= 0) FAIL(pos, "macro '%s' got multiple values for argument '%s'", mname, pname);
            v = a->pv[i];
        } else if (k >= 0) {
            used |= 1ull << k;
            v = a->kv[k];
        } else if (i >= def->np - def->m) {
            v = eval(r, def->w[i - (def->np - def->m)], sc);
        } else {
            v = jv_undef(pname);
        }
        scope_set(r, sc, pname, v);
    }
    for (int j = 0; j < a->nk; j++) {
        if (used & (1ull << j)) continue;
        FAIL(pos, "macro '%s' takes no keyword argument '%s'", mname, a->kn[j]);
    }
    if (!is_caller) {
        if (caller.t != JV_UNDEF && !def->op) FAIL(pos, "macro '%s' takes no keyword argument 'caller'", mname);
        if (def->op) scope_set(r, sc, "caller", caller);
    }
    jsb *saved = r->out;
    jsb buf = {0};
    sb_put(C, &buf, "", 0);
    r->out = &buf;
    r->depth++;
    exec_body(r, def->v, def->n, sc);
    r->depth--;
    r->out = saved;
    return jv_str(buf.p, buf.n);
}

// ---------------------------------------------------------------- filters

static jv apply_filter(jr *r, long pos, int id, jv v, jargs *a);
static bool apply_test(jr *r, long pos, int id, jv v, jargs *a);

static bool has_unicode_digit(jv s) {
    size_t i = 0;
    while (i < s.u.s.n) {
        uint32_t cp = utf8_next(s.u.s.p, s.u.s.n, &i);
        if (cp >= 0x80) {
            utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
            if (c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NO || c == UTF8PROC_CATEGORY_NL) return true;
        }
    }
    return false;
}

static jv ignore_case(jr *r, jv v) { return v.t == JV_STR ? ps_lower(C, v.u.s.p, v.u.s.n) : v; }

typedef struct {
    jv parts[16];
    int n;
} attrpath;

static void attr_parts(jr *r, long pos, jv attr, attrpath *p) {
    p->n = 0;
    if (attr.t == JV_NONE) return;
    if (attr.t != JV_STR) {
        p->parts[p->n++] = attr;
        return;
    }
    const char *s = attr.u.s.p;
    size_t n = attr.u.s.n, st = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') continue;
        if (p->n == 16) UNSUP(pos, "an attribute path with more than 16 parts");
        jv part = jv_str(s + st, i - st);
        bool digits = i > st;
        int64_t v = 0;
        for (size_t k = st; k < i; k++) {
            if (s[k] < '0' || s[k] > '9') {
                digits = false;
                break;
            }
            if (v > (INT64_MAX - 9) / 10) UNSUP(pos, "an index too large in an attribute path");
            v = v * 10 + (s[k] - '0');
        }
        if (!digits && has_unicode_digit(part))  // Python's str.isdigit knows more digits
            UNSUP(pos, "an attribute path with non-ASCII digits is not supported");
        p->parts[p->n++] = digits ? jv_int(v) : part;
        st = i + 1;
    }
}

static jv attr_get(jr *r, long pos, const attrpath *p, jv item, const jv *deflt, bool lower) {
    for (int i = 0; i < p->n; i++) {
        item = get_item(r, pos, item, p->parts[i]);
        if (deflt && deflt->t != JV_NONE && item.t == JV_UNDEF) item = *deflt;
    }
    return lower ? ignore_case(r, item) : item;
}

static jv gen_of(jlist *l) { return jv_list(l, JL_GEN); }

// Stable merge sort of idx[] by keys[] (Python's sorted: only '<' is used).
static void msort(jr *r, long pos, size_t *idx, size_t *tmp, size_t n, const jv *keys, bool reverse) {
    if (n < 2) return;
    size_t h = n / 2;
    msort(r, pos, idx, tmp, h, keys, reverse);
    msort(r, pos, idx + h, tmp, n - h, keys, reverse);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        bool take_right = reverse ? jv_cmp(C, pos, keys[idx[i]], keys[idx[j]], CMP_LT)
                                  : jv_cmp(C, pos, keys[idx[j]], keys[idx[i]], CMP_LT);
        tmp[k++] = take_right ? idx[j++] : idx[i++];
    }
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

static jv sorted_by(jr *r, long pos, const jv *items, size_t n, const jv *keys, bool reverse, int kind) {
    size_t *idx = ja_alloc(C, (n + 1) * sizeof *idx), *tmp = ja_alloc(C, (n + 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    msort(r, pos, idx, tmp, n, keys, reverse);
    jlist *l = jl_new(C, n);
    for (size_t i = 0; i < n; i++) jl_push(C, l, items[idx[i]]);
    return jv_list(l, kind);
}

static jv tojson_filter(jr *r, long pos, jv v, jargs *a) {
    jv x;
    jjson_opts o = {0};
    o.item_sep = ", ";
    o.key_sep = ": ";
    if (ga(r, a, 0, "ensure_ascii", &x)) o.ensure_ascii = jv_truthy(x);
    if (ga(r, a, 1, "indent", &x) && x.t != JV_NONE) {
        if (x.t == JV_STR) {
            o.indent = x.u.s.p;
            o.indent_n = x.u.s.n;
        } else if (jv_isint(x)) {
            int64_t k = x.u.i < 0 ? 0 : x.u.i;
            if (k > 1000) UNSUP(pos, "tojson: an indent of more than 1000 spaces");
            char *sp = ja_alloc(C, (size_t)k + 1);
            memset(sp, ' ', (size_t)k);
            o.indent = sp;
            o.indent_n = (size_t)k;
        } else {
            FAIL(pos, "tojson: can't multiply sequence by non-int of type '%s'", jv_typename(x));
        }
        o.item_sep = ",";
    }
    if (ga(r, a, 2, "separators", &x) && x.t != JV_NONE) {
        size_t n;
        jv *s = iter_items(r, pos, x, &n);
        if (n != 2) FAIL(pos, "tojson: separators must be a pair");
        if (s[0].t != JV_STR || s[1].t != JV_STR) FAIL(pos, "tojson: separators must be strings");
        o.item_sep = s[0].u.s.p;
        o.key_sep = s[1].u.s.p;
        o.item_sep_n = s[0].u.s.n;
        o.key_sep_n = s[1].u.s.n;
    } else {
        o.item_sep_n = strlen(o.item_sep);
        o.key_sep_n = strlen(o.key_sep);
    }
    if (ga(r, a, 3, "sort_keys", &x)) o.sort_keys = jv_truthy(x);
    ga_done(r, a, 4);
    jsb b = {0};
    sb_put(C, &b, "", 0);
    jv_tojson_to(C, pos, &b, v, &o);
    return jv_str(b.p, b.n);
}

static jv int_filter(jr *r, long pos, jv v, jargs *a) {
    jv def = jv_int(0), x;
    int64_t base = 10;
    if (ga(r, a, 0, "default", &x)) def = x;
    bool base_ok = true;  // int(str, base) with a bad base: a TypeError, then the float path
    if (ga(r, a, 1, "base", &x)) {
        if (jv_isint(x)) base = x.u.i;
        else base_ok = false;
    }
    ga_done(r, a, 2);
    switch (v.t) {
    case JV_BOOL:
    case JV_INT: return jv_int(v.u.i);
    case JV_FLOAT:
        if (!isfinite(v.u.f)) return def;
        if (fabs(v.u.f) >= 9.2e18) UNSUP(pos, "int of %g does not fit in 64 bits", v.u.f);
        return jv_int((int64_t)v.u.f);
    case JV_UNDEF: fail_undef(r, pos, v);
    case JV_STR: {
        bool bad_base = !base_ok || (base != 0 && (base < 2 || base > 36));  // the float path follows
        if (has_unicode_digit(v)) UNSUP(pos, "int() of text with non-ASCII digits is not supported");
        if (!is_ascii(v.u.s.p, v.u.s.n)) v = do_strip(r, v, NULL, true, true);
        if (!is_ascii(v.u.s.p, v.u.s.n)) return def;  // not a number to Python either
        const char *s = v.u.s.p;
        size_t n = v.u.s.n, i = 0;
        while (i < n && py_isspace((unsigned char)s[i])) i++;
        while (n > i && py_isspace((unsigned char)s[n - 1])) n--;
        size_t j = i;
        bool neg = false;
        if (j < n && (s[j] == '+' || s[j] == '-')) neg = s[j++] == '-';
        int b = (int)base;
        if (j + 1 < n && s[j] == '0') {
            char x2 = (char)(s[j + 1] | 0x20);
            int pb = x2 == 'x' ? 16 : x2 == 'o' ? 8 : x2 == 'b' ? 2 : 0;
            if (pb && (b == pb || b == 0)) {
                b = pb;
                j += 2;
                if (j < n && s[j] == '_') j++;
            }
        }
        if (b == 0) b = 10;
        bool ok = j < n, over = false, prev_us = true;
        uint64_t acc = 0;
        for (size_t k = j; k < n && ok; k++) {
            char ch = s[k];
            if (ch == '_') {
                if (prev_us) ok = false;
                prev_us = true;
                continue;
            }
            int d = p_digit(ch) ? ch - '0' : p_alpha(ch) ? (ch | 0x20) - 'a' + 10 : 99;
            if (d >= b) {
                ok = false;
                break;
            }
            if (acc > (UINT64_MAX - (uint64_t)d) / (uint64_t)b) over = true;
            acc = acc * (uint64_t)b + (uint64_t)d;
            prev_us = false;
        }
        if (prev_us) ok = false;
        if (bad_base) ok = false;
        if (ok && base == 0 && b == 10 && j < n && s[j] == '0') {
            // base 0: "0..." decimals must be all zeros
            for (size_t k = j; k < n; k++)
                if (s[k] != '0' && s[k] != '_') ok = false;
        }
        if (ok) {
            if (over || acc > (uint64_t)INT64_MAX + neg) UNSUP(pos, "int of '%.*s' does not fit in 64 bits", (int)(n - i), s + i);
            return jv_int(neg ? (int64_t)(0 - acc) : (int64_t)acc);
        }
        // "42.23"|int is 42: int(float(value))
        char *t = ja_strdup(C, s + i, n - i);
        size_t w = 0;
        bool valid = n > i;
        // Python's float() syntax: [sign] (digits[.digits][e[sign]digits] | inf | infinity | nan)
        const char *q = t;
        if (*q == '+' || *q == '-') q++;
        if (!strcasecmp(q, "inf") || !strcasecmp(q, "infinity") || !strcasecmp(q, "nan")) return def;
        bool digit_seen = false, dot = false, exp = false, last_us = false, last_digit = false;
        for (const char *c2 = q; *c2 && valid; c2++) {
            char ch = *c2;
            if (p_digit(ch)) {
                digit_seen = true;
                last_digit = true;
                last_us = false;
                t[w++] = ch;
                continue;
            }
            if (ch == '_' && last_digit && p_digit(c2[1])) {
                last_us = true;
                last_digit = false;
                continue;
            }
            last_digit = false;
            if (ch == '.' && !dot && !exp) {
                dot = true;
                t[w++] = ch;
            } else if ((ch == 'e' || ch == 'E') && digit_seen && !exp) {
                exp = true;
                t[w++] = ch;
                if (c2[1] == '+' || c2[1] == '-') t[w++] = *++c2;
                if (!p_digit(c2[1])) valid = false;
            } else {
                valid = false;
            }
        }
        (void)last_us;
        if (!valid || !digit_seen) return def;
        t[w] = 0;
        double f = strtod(t, NULL);
        if (neg) f = -f;
        if (!isfinite(f)) return def;
        if (fabs(f) >= 9.2e18) UNSUP(pos, "int of %g does not fit in 64 bits", f);
        return jv_int((int64_t)f);
    }
    default: return def;
    }
}

static jv float_filter(jr *r, long pos, jv v, jargs *a) {
    jv def = jv_float(0.0), x;
    if (ga(r, a, 0, "default", &x)) def = x;
    ga_done(r, a, 1);
    switch (v.t) {
    case JV_BOOL:
    case JV_INT: return jv_float((double)v.u.i);
    case JV_FLOAT: return v;
    case JV_UNDEF: fail_undef(r, pos, v);
    case JV_STR: {
        if (has_unicode_digit(v)) UNSUP(pos, "float() of text with non-ASCII digits is not supported");
        if (!is_ascii(v.u.s.p, v.u.s.n)) v = do_strip(r, v, NULL, true, true);
        if (!is_ascii(v.u.s.p, v.u.s.n)) return def;
        const char *s = v.u.s.p;
        size_t n = v.u.s.n, i = 0;
        while (i < n && py_isspace((unsigned char)s[i])) i++;
        while (n > i && py_isspace((unsigned char)s[n - 1])) n--;
        if (i == n) return def;
        char *t = ja_alloc(C, n - i + 1);
        size_t w = 0;
        const char *p = s + i, *e = s + n;
        bool neg = false;
        if (*p == '+' || *p == '-') neg = *p++ == '-';
        size_t rest = (size_t)(e - p);
        char low[16] = {0};
        for (size_t k = 0; k < rest && k < 15; k++) low[k] = (char)(p[k] | 0x20);
        if ((rest == 3 && !memcmp(low, "inf", 3)) || (rest == 8 && !memcmp(low, "infinity", 8)))
            return jv_float(neg ? -INFINITY : INFINITY);
        if (rest == 3 && !memcmp(low, "nan", 3)) return jv_float(NAN);
        bool digit_seen = false, dot = false, exp = false, ok = true, last_digit = false;
        for (; p < e && ok; p++) {
            char ch = *p;
            if (p_digit(ch)) {
                digit_seen = last_digit = true;
                t[w++] = ch;
            } else if (ch == '_' && last_digit && p + 1 < e && p_digit(p[1])) {
                last_digit = false;
            } else if (ch == '.' && !dot && !exp) {
                dot = true;
                last_digit = false;
                t[w++] = ch;
            } else if ((ch == 'e' || ch == 'E') && digit_seen && !exp) {
                exp = true;
                last_digit = false;
                t[w++] = ch;
                if (p + 1 < e && (p[1] == '+' || p[1] == '-')) t[w++] = *++p;
                if (!(p + 1 < e && p_digit(p[1]))) ok = false;
            } else {
                ok = false;
            }
        }
        if (!ok || !digit_seen) return def;
        t[w] = 0;
        double f = strtod(t, NULL);
        return jv_float(neg ? -f : f);
    }
    default: return def;
    }
}

static jv round_filter(jr *r, long pos, jv v, jargs *a) {
    jv x;
    int64_t prec = 0;
    const char *method = "common";
    size_t mlen = 6;
    if (ga(r, a, 0, "precision", &x)) prec = want_int(r, a, x, "precision");
    if (ga(r, a, 1, "method", &x)) {
        if (x.t != JV_STR) FAIL(pos, "method must be common, ceil or floor");
        method = x.u.s.p;
        mlen = x.u.s.n;
    }
    ga_done(r, a, 2);
    bool common = mlen == 6 && !memcmp(method, "common", 6), ceil_ = mlen == 4 && !memcmp(method, "ceil", 4),
         floor_ = mlen == 5 && !memcmp(method, "floor", 5);
    if (!common && !ceil_ && !floor_) FAIL(pos, "method must be common, ceil or floor");
    if (!jv_isnum(v)) FAIL(pos, "type %s doesn't define __round__ method", jv_typename(v));
    if (prec < 0 || prec > 300) UNSUP(pos, "round with precision %lld is not supported", (long long)prec);
    if (common) {
        if (jv_isint(v)) return jv_int(v.u.i);
        if (!isfinite(v.u.f)) return v;
        char buf[512];
        snprintf(buf, sizeof buf, "%.*f", (int)prec, v.u.f);
        return jv_float(strtod(buf, NULL));
    }
    double scale = pow(10.0, (double)prec);
    double f = to_f(v) * scale;
    if (!isfinite(f)) FAIL(pos, "cannot convert float infinity to integer");
    double q = ceil_ ? ceil(f) : floor(f);
    return jv_float(q / scale);
}

static jv indent_filter(jr *r, long pos, jv s, jargs *a) {
    jv x;
    jv width = jv_int(4);
    bool first = false, blank = false;
    if (ga(r, a, 0, "width", &x)) width = x;
    if (ga(r, a, 1, "first", &x)) first = jv_truthy(x);
    if (ga(r, a, 2, "blank", &x)) blank = jv_truthy(x);
    ga_done(r, a, 3);
    jv ind;
    if (width.t == JV_STR) ind = width;
    else if (jv_isint(width)) ind = repeat(r, pos, jv_str(" ", 1), width.u.i);
    else FAIL(pos, "can't multiply sequence by non-int of type '%s'", jv_typename(width));
    if (s.t == JV_UNDEF) fail_undef(r, pos, s);
    if (s.t != JV_STR) FAIL(pos, "unsupported operand type(s) for +=: '%s' and 'str'", jv_typename(s));
    if (s.k == JS_MARKUP && ind.k != JS_MARKUP) ind = escape_str(r, ind);  // Markup(indention)... kept as text
    jv withnl = concat_str(r, s.u.s.p, s.u.s.n, "\n", 1);
    jv lines = splitlines(r, withnl, false);
    jlist *l = lines.u.l;
    jsb b = {0};
    sb_put(C, &b, "", 0);
    if (first) sb_put(C, &b, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; i < l->n; i++) {
        jv line = l->v[i];
        if (i) sb_putc(C, &b, '\n');
        if (i && (blank || line.u.s.n)) sb_put(C, &b, ind.u.s.p, ind.u.s.n);
        sb_put(C, &b, line.u.s.p, line.u.s.n);
    }
    jv out = jv_str(b.p, b.n);
    out.k = s.k;
    return out;
}

// map / select / reject / selectattr / rejectattr
static jv select_filter(jr *r, long pos, int id, jv v, jargs *a) {
    jlist *out = jl_new(C, 0);
    if (!jv_truthy(v)) return gen_of(out);
    size_t n;
    jv *items;
    if (id == F_map) {
        jv x;
        bool by_attr = a->np == 0;
        int attr_k = -1;
        for (int j = 0; j < a->nk; j++)
            if (!strcmp(a->kn[j], "attribute")) attr_k = j;
        if (by_attr && attr_k >= 0) {
            jv deflt = jv_none();
            for (int j = 0; j < a->nk; j++) {
                if (!strcmp(a->kn[j], "default")) deflt = a->kv[j];
                else if (j != attr_k) FAIL(pos, "Unexpected keyword argument '%s'", a->kn[j]);
            }
            attrpath p;
            attr_parts(r, pos, a->kv[attr_k], &p);
            items = iter_items(r, pos, v, &n);
            for (size_t i = 0; i < n; i++) jl_push(C, out, attr_get(r, pos, &p, items[i], &deflt, false));
            return gen_of(out);
        }
        if (!a->np) FAIL(pos, "map requires a filter argument");
        x = a->pv[0];
        items = iter_items(r, pos, v, &n);
        if (!n) return gen_of(out);
        if (x.t != JV_STR) FAIL(pos, "map: the filter name must be a string");
        char *name = ja_strdup(C, x.u.s.p, x.u.s.n);
        int fid = jfilter_lookup(name);
        if (fid < 0) FAIL(pos, "No filter named '%s'.", name);
        for (size_t i = 0; i < n; i++) {
            jargs sub = {a->pv + 1, a->np - 1, a->kn, a->kv, a->nk, 0, name, pos};
            jl_push(C, out, apply_filter(r, pos, fid, items[i], &sub));
        }
        return gen_of(out);
    }
    bool attr = id == F_selectattr || id == F_rejectattr;
    bool want = id == F_select || id == F_selectattr;
    int off = 0;
    attrpath p = {.n = 0};
    if (attr) {
        if (a->np < 1) FAIL(pos, "Missing parameter for attribute name");
        attr_parts(r, pos, a->pv[0], &p);
        off = 1;
    }
    int tid = -1;
    const char *tname = NULL;
    if (a->np > off) {
        jv t = a->pv[off];
        if (t.t != JV_STR) {
            size_t k;
            iter_items(r, pos, v, &k);
            if (!k) return gen_of(out);
            FAIL(pos, "the test name must be a string");
        }
        tname = ja_strdup(C, t.u.s.p, t.u.s.n);
        tid = jtest_lookup(tname);
        if (tid < 0) tid = -2;
    }
    items = iter_items(r, pos, v, &n);
    if (tid == -2 && n) FAIL(pos, "No test named '%s'.", tname);
    for (size_t i = 0; i < n; i++) {
        jv x = attr ? attr_get(r, pos, &p, items[i], NULL, false) : items[i];
        bool ok;
        if (tid >= 0) {
            jargs sub = {a->pv + off + 1, a->np - off - 1, a->kn, a->kv, a->nk, 0, tname, pos};
            ok = apply_test(r, pos, tid, x, &sub);
        } else {
            ok = jv_truthy(x);
        }
        if (ok == want) jl_push(C, out, items[i]);
    }
    return gen_of(out);
}

static jv minmax(jr *r, long pos, jv v, jargs *a, bool is_max) {
    jv x;
    bool cs = false;
    jv attr = jv_none();
    if (ga(r, a, 0, "case_sensitive", &x)) cs = jv_truthy(x);
    if (ga(r, a, 1, "attribute", &x)) attr = x;
    ga_done(r, a, 2);
    size_t n;
    jv *items = iter_items(r, pos, v, &n);
    if (!n) return jv_undef(NULL);
    attrpath p;
    attr_parts(r, pos, attr, &p);
    size_t best = 0;
    jv bk = attr_get(r, pos, &p, items[0], NULL, !cs);
    for (size_t i = 1; i < n; i++) {
        jv k = attr_get(r, pos, &p, items[i], NULL, !cs);
        if (jv_cmp(C, pos, k, bk, is_max ? CMP_GT : CMP_LT)) {
            best = i;
            bk = k;
        }
    }
    return items[best];
}

// The generator filters (map, select, reject, selectattr, rejectattr,
// unique, items) run when their result is first iterated, as Python's
// generators do: until then nothing they would fail on is looked at.
typedef struct {
    int id;
    jv v;
    jargs a;
} jlazy;

static jv apply_filter_now(jr *r, long pos, int id, jv v, jargs *a);

static jv lazy_gen(jr *r, long pos, int id, jv v, const jargs *a) {
    jlazy *z = ja_alloc(C, sizeof *z);
    z->id = id;
    z->v = v;
    z->a = *a;
    jv *pv = ja_alloc(C, (size_t)(a->np + 1) * sizeof *pv), *kv = ja_alloc(C, (size_t)(a->nk + 1) * sizeof *kv);
    const char **kn = ja_alloc(C, (size_t)(a->nk + 1) * sizeof *kn);
    if (a->np) memcpy(pv, a->pv, (size_t)a->np * sizeof *pv);
    if (a->nk) {
        memcpy(kv, a->kv, (size_t)a->nk * sizeof *kv);
        memcpy(kn, a->kn, (size_t)a->nk * sizeof *kn);
    }
    z->a.pv = pv;
    z->a.kv = kv;
    z->a.kn = kn;
    z->a.pos = pos;
    jlist *l = jl_new(C, 0);
    l->lazy = z;
    return jv_list(l, JL_GEN);
}

static void force(jr *r, jlist *l) {
    if (!l->lazy) return;
    jlazy *z = l->lazy;
    l->lazy = NULL;
    jv res = apply_filter_now(r, z->a.pos, z->id, z->v, &z->a);
    l->v = res.u.l->v;
    l->n = res.u.l->n;
    l->cap = res.u.l->cap;
    l->pos = 0;
}

static jv apply_filter(jr *r, long pos, int id, jv v, jargs *a) {
    switch (id) {
    case F_map:
    case F_select:
    case F_reject:
    case F_selectattr:
    case F_rejectattr:
    case F_unique:
    case F_items: return lazy_gen(r, pos, id, v, a);
    default: return apply_filter_now(r, pos, id, v, a);
    }
}

static jv apply_filter_now(jr *r, long pos, int id, jv v, jargs *a) {
    jv x;
    a->fname = jfilter_names[id];
    tick(r, pos);
    switch (id) {
    case F_abs:
        ga_done(r, a, 0);
        if (v.t == JV_BOOL || v.t == JV_INT) {
            if (v.u.i == INT64_MIN) UNSUP(pos, "integer overflow");
            return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        }
        if (v.t == JV_FLOAT) return jv_float(fabs(v.u.f));
        FAIL(pos, "bad operand type for abs(): '%s'", jv_typename(v));
    case F_attr: {
        if (!ga(r, a, 0, "name", &x)) FAIL(pos, "attr() missing 1 required positional argument: 'name'");
        ga_done(r, a, 1);
        jv name = jv_to_str(C, pos, x);
        char *nm = ja_strdup(C, name.u.s.p, name.u.s.n);
        if (v.t == JV_UNDEF) fail_undef(r, pos, v);
        bool found;
        jv res = py_getattr(r, pos, v, nm, &found);
        return found ? res : jv_undef(nm);
    }
    case F_capitalize:
    case F_lower:
    case F_upper:
    case F_title: {
        ga_done(r, a, 0);
        jv s = soft_str(r, pos, v);
        if (id == F_capitalize) return markup_like(s, ps_capitalize(C, s.u.s.p, s.u.s.n));
        if (id == F_lower) return markup_like(s, ps_lower(C, s.u.s.p, s.u.s.n));
        if (id == F_upper) return markup_like(s, ps_upper(C, s.u.s.p, s.u.s.n));
        // jinja2's title: words start after [-\s({\[<]+; the first char upper, the rest lower
        jsb b = {0};
        sb_put(C, &b, "", 0);
        const char *p = s.u.s.p;
        size_t n = s.u.s.n, i = 0;
        while (i < n) {
            size_t st = i;
            bool sep = false;
            {
                size_t j = i;
                uint32_t cp = utf8_next(p, n, &j);
                sep = py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            }
            while (i < n) {  // a run of separators, or of other characters
                size_t j = i;
                uint32_t cp = utf8_next(p, n, &j);
                bool is_sep = py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
                if (is_sep != sep) break;
                i = j;
            }
            size_t j = st;
            utf8_next(p, i, &j);
            jv head = ps_upper(C, p + st, j - st), tail = ps_lower(C, p + j, i - j);
            sb_put(C, &b, head.u.s.p, head.u.s.n);
            sb_put(C, &b, tail.u.s.p, tail.u.s.n);
        }
        return jv_str(b.p, b.n);
    }
    case F_count:
    case F_length:
        ga_done(r, a, 0);
        switch (v.t) {
        case JV_STR: return jv_int(cp_len(v));
        case JV_UNDEF: return jv_int(0);
        case JV_DICT: return jv_int((int64_t)v.u.d->n);
        case JV_LIST:
            if (v.k != JL_GEN) return jv_int((int64_t)v.u.l->n);
            break;
        case JV_LOOP: return jv_int(loop_length(r, v.u.lp));
        default: break;
        }
        FAIL(pos, "object of type '%s' has no len()", jv_typename(v));
    case F_d:
    case F_default: {
        jv def = jv_str("", 0);
        bool boolean = false;
        if (ga(r, a, 0, "default_value", &x)) def = x;
        if (ga(r, a, 1, "boolean", &x)) boolean = jv_truthy(x);
        ga_done(r, a, 2);
        if (v.t == JV_UNDEF || (boolean && !jv_truthy(v))) return def;
        return v;
    }
    case F_dictsort: {
        bool cs = false, rev = false;
        int by = 0;
        if (ga(r, a, 0, "case_sensitive", &x)) cs = jv_truthy(x);
        if (ga(r, a, 1, "by", &x)) {
            if (x.t == JV_STR && x.u.s.n == 3 && !memcmp(x.u.s.p, "key", 3)) by = 0;
            else if (x.t == JV_STR && x.u.s.n == 5 && !memcmp(x.u.s.p, "value", 5)) by = 1;
            else FAIL(pos, "You can only sort by either \"key\" or \"value\"");
        }
        if (ga(r, a, 2, "reverse", &x)) rev = want_int(r, a, x, "reverse") != 0;
        ga_done(r, a, 3);
        if (v.t == JV_UNDEF) fail_undef(r, pos, v);
        if (v.t != JV_DICT) FAIL(pos, "'%s' object has no attribute 'items'", jv_typename(v));
        size_t n = v.u.d->n;
        jv *items = ja_alloc(C, (n + 1) * sizeof *items), *keys = ja_alloc(C, (n + 1) * sizeof *keys);
        for (size_t i = 0; i < n; i++) {
            items[i] = tuple2(r, v.u.d->k[i], v.u.d->v[i]);
            jv k = by ? v.u.d->v[i] : v.u.d->k[i];
            keys[i] = cs ? k : ignore_case(r, k);
        }
        return sorted_by(r, pos, items, n, keys, rev, JL_LIST);
    }
    case F_e:
    case F_escape:
    case F_forceescape:
        ga_done(r, a, 0);
        if (v.t == JV_STR && v.k == JS_MARKUP && id != F_forceescape) return v;
        return escape_str(r, jv_to_str(C, pos, v));
    case F_first: {
        ga_done(r, a, 0);
        if (v.t == JV_LIST && v.k == JL_GEN) {
            jlist *l = v.u.l;
            force(r, l);
            return l->pos < l->n ? l->v[l->pos++] : jv_undef(NULL);
        }
        if (v.t == JV_STR) return v.u.s.n ? str_sub(r, jv_str(v.u.s.p, v.u.s.n), 0, 1) : jv_undef(NULL);
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        return n ? items[0] : jv_undef(NULL);
    }
    case F_last: {
        ga_done(r, a, 0);
        if (v.t == JV_LIST && v.k == JL_GEN) FAIL(pos, "'generator' object is not reversible");
        if (v.t == JV_STR) {
            int64_t n = cp_len(v);
            return n ? str_sub(r, jv_str(v.u.s.p, v.u.s.n), n - 1, n) : jv_undef(NULL);
        }
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        return n ? items[n - 1] : jv_undef(NULL);
    }
    case F_float: return float_filter(r, pos, v, a);
    case F_int: return int_filter(r, pos, v, a);
    case F_indent: return indent_filter(r, pos, v, a);
    case F_items: {
        ga_done(r, a, 0);
        jlist *l = jl_new(C, 0);
        if (v.t == JV_UNDEF) return gen_of(l);
        if (v.t != JV_DICT) FAIL(pos, "Can only get item pairs from a mapping.");
        for (size_t i = 0; i < v.u.d->n; i++) jl_push(C, l, tuple2(r, v.u.d->k[i], v.u.d->v[i]));
        return gen_of(l);
    }
    case F_join: {
        jv d = jv_str("", 0), attr = jv_none();
        if (ga(r, a, 0, "d", &x)) d = jv_to_str(C, pos, x);
        if (ga(r, a, 1, "attribute", &x)) attr = x;
        ga_done(r, a, 2);
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        attrpath p;
        attr_parts(r, pos, attr, &p);
        jsb b = {0};
        sb_put(C, &b, "", 0);
        for (size_t i = 0; i < n; i++) {
            if (i) sb_put(C, &b, d.u.s.p, d.u.s.n);
            jv it = attr.t != JV_NONE ? attr_get(r, pos, &p, items[i], NULL, false) : items[i];
            jv_str_to(C, pos, &b, it);
        }
        return jv_str(b.p, b.n);
    }
    case F_list: {
        ga_done(r, a, 0);
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        return list_of(r, items, n, JL_LIST);
    }
    case F_map:
    case F_select:
    case F_reject:
    case F_selectattr:
    case F_rejectattr: return select_filter(r, pos, id, v, a);
    case F_max:
    case F_min: return minmax(r, pos, v, a, id == F_max);
    case F_replace: {
        jv old, nw;
        int64_t count = -1;
        if (!ga(r, a, 0, "old", &old) || !ga(r, a, 1, "new", &nw)) FAIL(pos, "replace() missing required arguments");
        if (ga(r, a, 2, "count", &x) && x.t != JV_NONE) count = want_int(r, a, x, "count");
        ga_done(r, a, 3);
        jv s = jv_to_str(C, pos, v);
        return do_replace(r, s, jv_to_str(C, pos, old), jv_to_str(C, pos, nw), count);
    }
    case F_reverse: {
        ga_done(r, a, 0);
        if (v.t == JV_STR) {
            jv none = jv_none(), step = jv_int(-1);
            return get_slice(r, pos, v, none, none, step);
        }
        if (v.t == JV_LIST && v.k == JL_GEN) {
            size_t n;
            jv *items = iter_items(r, pos, v, &n);
            jlist *l = jl_new(C, n);
            for (size_t i = n; i-- > 0;) jl_push(C, l, items[i]);
            return jv_list(l, JL_LIST);
        }
        if (v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF) {
            size_t n;
            jv *items = iter_items(r, pos, v, &n);
            jlist *l = jl_new(C, n);
            for (size_t i = n; i-- > 0;) jl_push(C, l, items[i]);
            return gen_of(l);
        }
        FAIL(pos, "argument must be iterable");
    }
    case F_round: return round_filter(r, pos, v, a);
    case F_safe: ga_done(r, a, 0); {
            jv s = jv_to_str(C, pos, v);
            s.k = JS_MARKUP;
            return s;
        }
    case F_sort: {
        bool rev = false, cs = false;
        jv attr = jv_none();
        if (ga(r, a, 0, "reverse", &x)) rev = want_int(r, a, x, "reverse") != 0;
        if (ga(r, a, 1, "case_sensitive", &x)) cs = jv_truthy(x);
        if (ga(r, a, 2, "attribute", &x)) attr = x;
        ga_done(r, a, 3);
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        // attribute "a,b": a list of keys per item
        attrpath paths[16];
        int np = 0;
        if (attr.t == JV_STR) {
            const char *s = attr.u.s.p;
            size_t an = attr.u.s.n, st = 0;
            for (size_t i = 0; i <= an; i++) {
                if (i < an && s[i] != ',') continue;
                if (np == 16) UNSUP(pos, "sorting by more than 16 attributes");
                attr_parts(r, pos, jv_str(s + st, i - st), &paths[np++]);
                st = i + 1;
            }
        } else {
            attr_parts(r, pos, attr, &paths[np++]);
        }
        jv *keys = ja_alloc(C, (n + 1) * sizeof *keys);
        for (size_t i = 0; i < n; i++) {
            jlist *k = jl_new(C, (size_t)np);
            for (int j = 0; j < np; j++) jl_push(C, k, attr_get(r, pos, &paths[j], items[i], NULL, !cs));
            keys[i] = jv_list(k, JL_LIST);
        }
        return sorted_by(r, pos, items, n, keys, rev, JL_LIST);
    }
    case F_string: ga_done(r, a, 0); return soft_str(r, pos, v);
    case F_sum: {
        jv attr = jv_none(), acc = jv_int(0);
        if (ga(r, a, 0, "attribute", &x)) attr = x;
        if (ga(r, a, 1, "start", &x)) acc = x;
        ga_done(r, a, 2);
        if (acc.t == JV_STR) FAIL(pos, "sum() can't sum strings [use ''.join(seq) instead]");
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        attrpath p;
        attr_parts(r, pos, attr, &p);
        for (size_t i = 0; i < n; i++) {
            jv it = attr.t != JV_NONE ? attr_get(r, pos, &p, items[i], NULL, false) : items[i];
            acc = binop(r, pos, OP_ADD, acc, it);
        }
        return acc;
    }
    case F_tojson: return tojson_filter(r, pos, v, a);
    case F_trim: {
        sview chars, *cp = NULL;
        if (ga(r, a, 0, "chars", &x) && x.t != JV_NONE) {
            chars = sv_of(r, want_str(r, a, x, "chars"));
            cp = &chars;
        }
        ga_done(r, a, 1);
        return do_strip(r, soft_str(r, pos, v), cp, true, true);
    }
    case F_unique: {
        bool cs = false;
        jv attr = jv_none();
        if (ga(r, a, 0, "case_sensitive", &x)) cs = jv_truthy(x);
        if (ga(r, a, 1, "attribute", &x)) attr = x;
        ga_done(r, a, 2);
        size_t n;
        jv *items = iter_items(r, pos, v, &n);
        attrpath p;
        attr_parts(r, pos, attr, &p);
        jlist *seen = jl_new(C, 0), *out = jl_new(C, 0);
        for (size_t i = 0; i < n; i++) {
            jv k = attr_get(r, pos, &p, items[i], NULL, !cs);
            if (!jv_hashable(k)) FAIL(pos, "unhashable type: '%s'", jv_typename(k));
            bool dup = false;
            for (size_t j = 0; j < seen->n && !dup; j++) dup = jv_eq(seen->v[j], k);
            if (!dup) {
                jl_push(C, seen, k);
                jl_push(C, out, items[i]);
            }
        }
        return gen_of(out);
    }
    }
    UNSUP(pos, "the filter '%s' is not supported", jfilter_names[id]);
}

// ---------------------------------------------------------------- tests


static bool py_mod_is(jr *r, long pos, jv v, jv m, int64_t want) {
    jv res = binop(r, pos, OP_MOD, v, m);
    return jv_eq(res, jv_int(want));
}

static bool apply_test(jr *r, long pos, int id, jv v, jargs *a) {
    jv x;
    a->fname = jtest_names[id];
    tick(r, pos);
    switch (id) {
    case T_odd: ga_done(r, a, 0); return py_mod_is(r, pos, v, jv_int(2), 1);
    case T_even: ga_done(r, a, 0); return py_mod_is(r, pos, v, jv_int(2), 0);
    case T_divisibleby:
        if (!ga(r, a, 0, "num", &x)) FAIL(pos, "divisibleby() missing 1 required positional argument: 'num'");
        ga_done(r, a, 1);
        return py_mod_is(r, pos, v, x, 0);
    case T_defined: ga_done(r, a, 0); return v.t != JV_UNDEF;
    case T_undefined: ga_done(r, a, 0); return v.t == JV_UNDEF;
    case T_filter:
    case T_test: {
        ga_done(r, a, 0);
        if (!jv_hashable(v)) FAIL(pos, "unhashable type: '%s'", jv_typename(v));
        if (v.t != JV_STR) return false;
        char *name = ja_strdup(C, v.u.s.p, v.u.s.n);
        if (strlen(name) != v.u.s.n) return false;
        return id == T_filter ? jinja_known_filter(name) : jtest_lookup(name) >= 0;
    }
    case T_none: ga_done(r, a, 0); return v.t == JV_NONE;
    case T_boolean: ga_done(r, a, 0); return v.t == JV_BOOL;
    case T_false: ga_done(r, a, 0); return v.t == JV_BOOL && !v.u.i;
    case T_true: ga_done(r, a, 0); return v.t == JV_BOOL && v.u.i;
    case T_integer: ga_done(r, a, 0); return v.t == JV_INT;
    case T_float: ga_done(r, a, 0); return v.t == JV_FLOAT;
    case T_lower:
    case T_upper: {
        ga_done(r, a, 0);
        jv s = jv_to_str(C, pos, v);
        return id == T_lower ? ps_islower(s.u.s.p, s.u.s.n) : ps_isupper(s.u.s.p, s.u.s.n);
    }
    case T_string: ga_done(r, a, 0); return v.t == JV_STR;
    case T_mapping: ga_done(r, a, 0); return v.t == JV_DICT;
    case T_number: ga_done(r, a, 0); return jv_isnum(v);
    case T_sequence:
        ga_done(r, a, 0);
        return v.t == JV_STR || v.t == JV_DICT || v.t == JV_UNDEF ||
               (v.t == JV_LIST && (v.k == JL_LIST || v.k == JL_TUPLE || v.k == JL_RANGE));
    case T_iterable:
        ga_done(r, a, 0);
        return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF || v.t == JV_LOOP;
    case T_callable:
        ga_done(r, a, 0);
        return v.t == JV_MACRO || v.t == JV_FUNC || v.t == JV_METHOD || v.t == JV_UNDEF || v.t == JV_LOOP;
    case T_sameas: {
        if (!ga(r, a, 0, "other", &x)) FAIL(pos, "sameas() missing 1 required positional argument: 'other'");
        ga_done(r, a, 1);
        if (v.t != x.t) return false;
        switch (v.t) {
        case JV_NONE: return true;
        case JV_BOOL: return v.u.i == x.u.i;
        case JV_INT: return v.u.i == x.u.i && v.u.i >= -5 && v.u.i <= 256;
        case JV_STR: return v.u.s.p == x.u.s.p && v.u.s.n == x.u.s.n;
        case JV_LIST: return v.u.l == x.u.l;
        case JV_DICT:
        case JV_NS: return v.u.d == x.u.d;
        default: UNSUP(pos, "the test 'sameas' on %s is not supported", jv_typename(v));
        }
    }
    case T_escaped: ga_done(r, a, 0); return v.t == JV_STR && v.k == JS_MARKUP;
    case T_in:
        if (!ga(r, a, 0, "seq", &x)) FAIL(pos, "test_in() missing 1 required positional argument: 'seq'");
        ga_done(r, a, 1);
        return py_contains(r, pos, x, v);
    case T_eq:
    case T_equalto:
    case T_eqsym:
    case T_ne:
    case T_nesym:
        if (!ga(r, a, 0, "b", &x)) FAIL(pos, "%s() expected 2 arguments, got 1", a->fname);
        ga_done(r, a, 1);
        return jv_eq(v, x) == (id == T_eq || id == T_equalto || id == T_eqsym);
    default: {
        if (!ga(r, a, 0, "b", &x)) FAIL(pos, "%s() expected 2 arguments, got 1", a->fname);
        ga_done(r, a, 1);
        int op = (id == T_gt || id == T_greaterthan || id == T_gtsym) ? CMP_GT
                 : (id == T_ge || id == T_gesym)                        ? CMP_GE
                 : (id == T_lt || id == T_lessthan || id == T_ltsym)    ? CMP_LT
                                                                        : CMP_LE;
        return jv_cmp(C, pos, v, x, op);
    }
    }
}

// ---------------------------------------------------------------- expressions

typedef struct {
    jv pv[64];
    const char *kn[64];
    jv kv[64];
} argbuf;

static void eval_args(jr *r, const jnode *n, jscope *sc, argbuf *b, jargs *a, int skip) {
    if (n->n > 64) UNSUP(n->pos, "more than 64 arguments");
    for (int32_t i = 0; i < n->n; i++) b->pv[i] = eval(r, n->v[i], sc);
    for (int32_t i = 0; i < n->m; i++) {
        b->kn[i] = n->names[i];
        b->kv[i] = eval(r, n->w[i], sc);
    }
    (void)skip;
    *a = (jargs){b->pv, n->n, b->kn, b->kv, n->m, 0, "", n->pos};
}

static jv call(jr *r, const jnode *n, jscope *sc, jv caller) {
    jv f;
    if (n->a->k == N_GETATTR) f = get_attr(r, n->a->pos, eval(r, n->a->a, sc), n->a->s);
    else f = eval(r, n->a, sc);
    argbuf *b = ja_alloc(C, sizeof *b);
    jargs a;
    eval_args(r, n, sc, b, &a, 0);
    switch (f.t) {
    case JV_UNDEF: fail_undef(r, n->pos, f);
    case JV_FUNC: return call_func(r, n->pos, f.k, &a);
    case JV_METHOD: return call_method(r, n->pos, f.u.mt, &a);
    case JV_MACRO: return call_macro(r, n->pos, f.u.m, &a, caller);
    default: break;
    }
    FAIL(n->pos, "'%s' object is not callable", jv_typename(f));
}

// A filter chain applied to `input` (NULL innermost node: the input itself).
static jv eval_filter(jr *r, const jnode *n, jscope *sc, const jv *input) {
    if (n->id < 0) FAIL(n->pos, "No filter named '%s' found.", n->s);
    jv v = n->a ? (n->a->k == N_FILTER && input ? eval_filter(r, n->a, sc, input) : eval(r, n->a, sc)) : *input;
    argbuf *b = ja_alloc(C, sizeof *b);
    jargs a;
    eval_args(r, n, sc, b, &a, 0);
    return apply_filter(r, n->pos, n->id, v, &a);
}

// jinja2's has_safe_repr: what its optimizer may turn into a constant.
static bool safe_repr(jv v) {
    switch (v.t) {
    case JV_NONE:
    case JV_BOOL:
    case JV_INT:
    case JV_FLOAT:
    case JV_STR: return true;
    case JV_LIST:
        if (v.k == JL_RANGE) return true;
        if (v.k != JL_LIST && v.k != JL_TUPLE) return false;
        for (size_t i = 0; i < v.u.l->n; i++)
            if (!safe_repr(v.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        for (size_t i = 0; i < v.u.d->n; i++)
            if (!safe_repr(v.u.d->k[i]) || !safe_repr(v.u.d->v[i])) return false;
        return true;
    default: return false;
    }
}

static jv eval_node(jr *r, const jnode *n, jscope *sc);

// An expression of literals is folded at compile time by jinja2 when its
// value is a plain constant; folding reads items through environment.getitem,
// so a failing slice is undefined there, not an error. Only slices differ.
static jv eval(jr *r, const jnode *n, jscope *sc) {
    if (!n->lit || r->fold) return eval_node(r, n, sc);
    r->fold = true;
    jv v = eval_node(r, n, sc);
    r->fold = false;
    if (safe_repr(v)) return v;
    return eval_node(r, n, sc);
}

static jv eval_node(jr *r, const jnode *n, jscope *sc) {
    tick(r, n->pos);
    switch (n->k) {
    case N_CONST: return n->cv;
    case N_NAME: return lookup(r, sc, n->s);
    case N_GETATTR: return get_attr(r, n->pos, eval(r, n->a, sc), n->s);
    case N_GETITEM: {
        jv obj = eval(r, n->a, sc);
        if (n->b->k == N_SLICE) {
            const jnode *s = n->b;
            jv a = s->a ? eval(r, s->a, sc) : jv_none(), b = s->b ? eval(r, s->b, sc) : jv_none(),
               c = s->c ? eval(r, s->c, sc) : jv_none();
            return get_slice(r, n->pos, obj, a, b, c);
        }
        return get_item(r, n->pos, obj, eval(r, n->b, sc));
    }
    case N_CALL: return call(r, n, sc, jv_undef(NULL));
    case N_FILTER: return eval_filter(r, n, sc, NULL);
    case N_TEST: {
        if (n->id < 0) FAIL(n->pos, "No test named '%s' found.", n->s);
        jv v = eval(r, n->a, sc);
        argbuf *b = ja_alloc(C, sizeof *b);
        jargs a;
        eval_args(r, n, sc, b, &a, 0);
        return jv_bool(apply_test(r, n->pos, n->id, v, &a));
    }
    case N_NOT: return jv_bool(!jv_truthy(eval(r, n->a, sc)));
    case N_NEG:
    case N_POS: {
        jv v = eval(r, n->a, sc);
        if (v.t == JV_UNDEF) fail_undef(r, n->pos, v);
        if (jv_isint(v)) {
            if (n->k == N_POS) return jv_int(v.u.i);
            return int_result(r, n->pos, v.u.i == INT64_MIN, -v.u.i);
        }
        if (v.t == JV_FLOAT) return jv_float(n->k == N_NEG ? -v.u.f : v.u.f);
        FAIL(n->pos, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+', jv_typename(v));
    }
    case N_AND: {
        jv l = eval(r, n->a, sc);
        return jv_truthy(l) ? eval(r, n->b, sc) : l;
    }
    case N_OR: {
        jv l = eval(r, n->a, sc);
        return jv_truthy(l) ? l : eval(r, n->b, sc);
    }
    case N_BINOP: {
        jv a = eval(r, n->a, sc);
        jv b = eval(r, n->b, sc);
        return binop(r, n->pos, n->op, a, b);
    }
    case N_CONCAT: {
        jsb b = {0};
        sb_put(C, &b, "", 0);
        for (int32_t i = 0; i < n->n; i++) jv_str_to(C, n->pos, &b, eval(r, n->v[i], sc));
        if (b.n > MAX_OUT) jfail(C, LM_ERR_RANGE, n->pos, "a string longer than %zu MiB", MAX_OUT >> 20);
        return jv_str(b.p, b.n);
    }
    case N_COMPARE: {
        jv cur = eval(r, n->a, sc);
        for (int32_t i = 0; i < n->n; i++) {
            jv rhs = eval(r, n->v[i], sc);
            bool ok;
            switch (n->ops[i]) {
            case C_EQ: ok = jv_eq(cur, rhs); break;
            case C_NE: ok = !jv_eq(cur, rhs); break;
            case C_LT: ok = jv_cmp(C, n->pos, cur, rhs, CMP_LT); break;
            case C_LE: ok = jv_cmp(C, n->pos, cur, rhs, CMP_LE); break;
            case C_GT: ok = jv_cmp(C, n->pos, cur, rhs, CMP_GT); break;
            case C_GE: ok = jv_cmp(C, n->pos, cur, rhs, CMP_GE); break;
            case C_IN: ok = py_contains(r, n->pos, rhs, cur); break;
            default: ok = !py_contains(r, n->pos, rhs, cur); break;
            }
            if (!ok) return jv_bool(false);
            cur = rhs;
        }
        return jv_bool(true);
    }
    case N_COND:
        if (jv_truthy(eval(r, n->a, sc))) return eval(r, n->b, sc);
        return n->c ? eval(r, n->c, sc) : undef_msg(r, "the inline if-expression evaluated to false and no else section was defined");
    case N_LIST:
    case N_TUPLE: {
        jlist *l = jl_new(C, (size_t)n->n);
        for (int32_t i = 0; i < n->n; i++) jl_push(C, l, eval(r, n->v[i], sc));
        return jv_list(l, n->k == N_LIST ? JL_LIST : JL_TUPLE);
    }
    case N_DICT: {
        jdict *d = jd_new(C, (size_t)n->n);
        for (int32_t i = 0; i < n->n; i++) {
            jv k = eval(r, n->v[i], sc);
            if (!jv_hashable(k)) FAIL(n->v[i]->pos, "unhashable type: '%s'", jv_typename(k));
            jd_set(C, d, k, eval(r, n->w[i], sc));
        }
        return mk_dict(d, JV_DICT);
    }
    default: break;
    }
    FAIL(n->pos, "internal error: unexpected node %d", n->k);
}

// ---------------------------------------------------------------- statements

static jv capture(jr *r, jnode *const *body, int32_t n, jscope *sc) {
    jsb *saved = r->out;
    jsb buf = {0};
    sb_put(C, &buf, "", 0);
    r->out = &buf;
    exec_body(r, body, n, sc);
    r->out = saved;
    return jv_str(buf.p, buf.n);
}

static void print_value(jr *r, long pos, jv v) {
    if (v.t == JV_STR) {
        emit_text(r, v.u.s.p, v.u.s.n);
        return;
    }
    if (v.t == JV_UNDEF) return;
    jsb b = {0};
    sb_put(C, &b, "", 0);
    jv_repr_to(C, pos, &b, v);
    emit_text(r, b.p, b.n);
}

static int exec_for(jr *r, const jnode *n, jscope *sc) {
    jv it = eval(r, n->b, sc);
    struct jloop *L = ja_alloc(C, sizeof *L);
    L->items = iter_items(r, n->b->pos, it, &L->n);
    if (L->n) {  // the loop must not see later changes of a consumed generator
        jv *copy = ja_alloc(C, L->n * sizeof *copy);
        memcpy(copy, L->items, L->n * sizeof *copy);
        L->items = copy;
    }
    L->target = n->a;
    L->filter = n->c;
    L->outer = sc;
    if (n->c) L->state = ja_alloc(C, L->n + 1);
    L->index0 = -1;
    jv loopv = {.t = JV_LOOP};
    loopv.u.lp = L;
    size_t i = loop_next(r, L, 0);
    bool any = false;
    jscope *body = NULL;
    bool completed = false;  // an iteration ran its body to the end (jinja2's else test)
    while (i < L->n) {
        tick(r, n->pos);
        any = true;
        L->cur = i;
        L->index0++;
        // a fresh scope per iteration (jinja2's loop bodies start anew);
        // the last one is reused unless a macro defined in it keeps it
        if (body && !body->captured) body->n = 0;
        else body = scope_new(r, sc);
        unpack(r, n->a, L->items[i], body);
        scope_set(r, body, "loop", loopv);
        int flow = exec_body(r, n->v, n->n, body);
        if (flow == FLOW_NORMAL) completed = true;
        L->prev = L->items[i];
        L->has_prev = true;
        if (flow == FLOW_BREAK) break;
        i = loop_next(r, L, i + 1);
    }
    (void)any;
    if (!completed && n->m) return exec_body(r, n->w, n->m, scope_new(r, sc));
    return FLOW_NORMAL;
}

static int exec_stmt(jr *r, const jnode *n, jscope *sc) {
    tick(r, n->pos);
    switch (n->k) {
    case S_DATA: emit_text(r, n->s, n->sn); return FLOW_NORMAL;
    case S_PRINT: {
        // {{ literal }} is printed from the folded value, whatever it is
        r->fold = n->a->lit;
        jv v = eval(r, n->a, sc);
        r->fold = false;
        print_value(r, n->pos, v);
        return FLOW_NORMAL;
    }
    case S_IF:
        if (jv_truthy(eval(r, n->a, sc))) return exec_body(r, n->v, n->n, sc);
        return exec_body(r, n->w, n->m, sc);
    case S_FOR: return exec_for(r, n, sc);
    case S_SET: unpack(r, n->a, eval(r, n->b, sc), sc); return FLOW_NORMAL;
    case S_SETBLOCK: {
        jv v = capture(r, n->v, n->n, scope_new(r, sc));
        if (n->b) v = eval_filter(r, n->b, sc, &v);
        unpack(r, n->a, v, sc);
        return FLOW_NORMAL;
    }
    case S_FILTERBLOCK: {
        jv v = capture(r, n->v, n->n, scope_new(r, sc));
        print_value(r, n->pos, eval_filter(r, n->b, sc, &v));
        return FLOW_NORMAL;
    }
    case S_MACRO: {
        struct jmacro *m = ja_alloc(C, sizeof *m);
        m->def = n;
        m->scope = sc;
        sc->captured = true;
        jv v = {.t = JV_MACRO};
        v.u.m = m;
        scope_set(r, sc, n->s, v);
        return FLOW_NORMAL;
    }
    case S_CALLBLOCK: {
        struct jmacro *m = ja_alloc(C, sizeof *m);
        m->def = n;
        m->scope = sc;
        jv caller = {.t = JV_MACRO};
        caller.u.m = m;
        print_value(r, n->pos, call(r, n->a, sc, caller));
        return FLOW_NORMAL;
    }
    case S_WITH: {
        jv vals[64];
        for (int32_t i = 0; i < n->m; i++) vals[i] = eval(r, n->w[i], sc);
        jscope *inner = scope_new(r, sc);
        for (int32_t i = 0; i < n->m; i++) scope_set(r, inner, n->names[i], vals[i]);
        return exec_body(r, n->v, n->n, inner);
    }
    case S_BREAK: return FLOW_BREAK;
    case S_CONTINUE: return FLOW_CONTINUE;
    case S_BLOCK: return exec_body(r, n->v, n->n, sc);
    default: FAIL(n->pos, "internal error: unexpected statement %d", n->k);
    }
}

static int exec_body(jr *r, jnode *const *body, int32_t n, jscope *sc) {
    for (int32_t i = 0; i < n; i++) {
        int flow = exec_stmt(r, body[i], sc);
        if (flow != FLOW_NORMAL) return flow;
    }
    return FLOW_NORMAL;
}

// ---------------------------------------------------------------- entry

lm_status jinja_render(const lm_tmpl *t, const cJSON *ctx, const char *json, size_t json_len, char **out,
                       size_t *out_len) {
    if (!t || !out) return lm_err(LM_ERR_INVALID_ARG, "chat template render: NULL argument");
    *out = NULL;
    if (out_len) *out_len = 0;
    jr *r = calloc(1, sizeof *r);
    if (!r) return lm_err(LM_ERR_OOM, "chat template: out of memory");
    r->t = t;
    r->max_steps = t->max_steps ? t->max_steps : 20000000ull;
    r->c.arena_limit = t->max_memory ? t->max_memory : ((size_t)512 << 20) + json_len * 16;
    r->c.src = t->c.src;
    r->c.src_len = t->c.src_len;
    if (setjmp(r->c.jb)) {
        lm_status st = lm_err(r->c.st, "chat template: %s", r->c.msg);
        ja_free_all(&r->c);
        free(r);
        return st;
    }
    jv vars;
    if (json) {
        vars = jv_from_json_text(&r->c, json, json_len);
    } else if (ctx) {
        if (!cJSON_IsObject(ctx)) jfail(&r->c, LM_ERR_INVALID_ARG, -1, "the context must be a JSON object");
        vars = jv_from_cjson(&r->c, ctx, 0);
    } else {
        vars = mk_dict(jd_new(&r->c, 0), JV_DICT);
    }
    if (vars.t != JV_DICT) jfail(&r->c, LM_ERR_INVALID_ARG, -1, "the context must be a JSON object");
    r->vars = vars.u.d;
    jsb buf = {0};
    sb_put(&r->c, &buf, "", 0);
    r->out = &buf;
    exec_body(r, t->body, t->n, scope_new(r, NULL));
    char *res = malloc(buf.n + 1);
    if (!res) {
        ja_free_all(&r->c);
        free(r);
        return lm_err(LM_ERR_OOM, "chat template: out of memory");
    }
    memcpy(res, buf.p, buf.n);
    res[buf.n] = 0;
    *out = res;
    if (out_len) *out_len = buf.n;
    ja_free_all(&r->c);
    free(r);
    return LM_OK;
}
