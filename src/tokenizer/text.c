// Normalizers and pre-tokenizers, each as in Hugging Face `tokenizers`.
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"

// ----------------------------------------------------------------- splits ---

bool tk_splits_add(tk_splits *s, const char *text, size_t len, int32_t id, bool at_start) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        tk_split *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory");
            return false;
        }
        s->v = v;
        s->cap = cap;
    }
    size_t off = s->buf.n;
    if (!lm_buf_put(&s->buf, text, len)) return false;
    s->v[s->n++] = (tk_split){off, len, id, at_start};
    return true;
}

void tk_splits_free(tk_splits *s) {
    free(s->v);
    lm_buf_free(&s->buf);
    *s = (tk_splits){0};
}

// -------------------------------------------------------------- byte level --

uint32_t tk_byte_to_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256 + b;
    if (b <= 160) return 289 + (b - 127);  // 127..160
    return 323;                            // 173
}

int tk_cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)cp - 256;
    if (cp >= 289 && cp <= 322) return (int)cp - 289 + 127;
    if (cp == 323) return 173;
    return -1;
}

// ------------------------------------------------------------- normalizers --

static bool is_cased_upper_i_dot(uint32_t cp) { return cp == 0x130; }

// `limit`: most bytes the output may grow to (see TK_GROWTH).
static lm_status norm_one(const tk_norm *nm, const char *s, size_t n, lm_buf *out, size_t limit) {
    out->n = 0;
    switch (nm->type) {
    case TK_NORM_NFC: case TK_NORM_NFD: case TK_NORM_NFKC: case TK_NORM_NFKD: {
        if (n == 0) return LM_OK;
        int opts = UTF8PROC_STABLE;
        opts |= (nm->type == TK_NORM_NFC || nm->type == TK_NORM_NFKC) ? UTF8PROC_COMPOSE
                                                                       : UTF8PROC_DECOMPOSE;
        if (nm->type == TK_NORM_NFKC || nm->type == TK_NORM_NFKD) opts |= UTF8PROC_COMPAT;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                          (utf8proc_option_t)opts);
        if (r < 0)
            return lm_err(r == UTF8PROC_ERROR_NOMEM ? LM_ERR_OOM : LM_ERR_INVALID_ARG,
                          "tokenizer: unicode normalization failed: %s", utf8proc_errmsg(r));
        bool ok = lm_buf_put(out, dst, (size_t)r);
        free(dst);
        return ok ? LM_OK : LM_ERR_OOM;
    }
    case TK_NORM_LOWERCASE:
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            int l = lm_utf8_step(s + i, n - i, &cp);
            i += l;
            // Rust's to_lowercase uses the full mapping: U+0130 becomes two chars.
            bool ok = is_cased_upper_i_dot(cp) ? lm_buf_put(out, "i\xCC\x87", 3)
                                               : lm_utf8_put(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
            if (!ok) return LM_ERR_OOM;
        }
        return LM_OK;
    case TK_NORM_PREPEND:
    case TK_NORM_APPEND:
        if (n == 0) return LM_OK;  // tokenizers leaves empty strings alone
        if (nm->type == TK_NORM_PREPEND && !lm_buf_put(out, nm->str, strlen(nm->str))) return LM_ERR_OOM;
        if (!lm_buf_put(out, s, n)) return LM_ERR_OOM;
        if (nm->type == TK_NORM_APPEND && !lm_buf_put(out, nm->str, strlen(nm->str))) return LM_ERR_OOM;
        return LM_OK;
    case TK_NORM_REPLACE: {
        tk_segs segs = {0};
        lm_status st = tk_regex_segments(&nm->re, s, n, &segs);
        for (size_t i = 0; st == LM_OK && i < segs.n && out->n <= limit; i++) {
            const tk_seg *g = &segs.v[i];
            bool ok = g->match ? lm_buf_put(out, nm->str, strlen(nm->str))
                               : lm_buf_put(out, s + g->s, g->e - g->s);
            if (!ok) st = LM_ERR_OOM;
        }
        free(segs.v);
        return st;
    }
    case TK_NORM_STRIP: {
        size_t a = 0, b = n;
        uint32_t cp;
        while (nm->left && a < b) {
            int l = lm_utf8_step(s + a, b - a, &cp);
            if (!lm_is_whitespace(cp)) break;
            a += l;
        }
        while (nm->right && a < b) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            lm_utf8_step(s + k, b - k, &cp);
            if (!lm_is_whitespace(cp)) break;
            b = k;
        }
        return lm_buf_put(out, s + a, b - a) ? LM_OK : LM_ERR_OOM;
    }
    }
    return LM_OK;
}

lm_status tk_normalize(const lm_tokenizer *t, const char *s, size_t n, lm_buf *out) {
    out->n = 0;
    if (t->n_norm == 0) return lm_buf_put(out, s, n) ? LM_OK : LM_ERR_OOM;
    lm_buf tmp[2] = {{0}, {0}};
    const char *cur = s;
    size_t cur_n = n;
    lm_status st = LM_OK;
    for (int i = 0; i < t->n_norm && st == LM_OK; i++) {
        lm_buf *dst = i == t->n_norm - 1 ? out : &tmp[i & 1];
        st = norm_one(&t->norm[i], cur, cur_n, dst, TK_GROWTH * n + TK_GROWTH_SLACK);
        cur = dst->p;
        cur_n = dst->n;
        if (st == LM_OK && cur_n > TK_GROWTH * n + TK_GROWTH_SLACK)
            st = lm_err(LM_ERR_FORMAT, "%s: the normalizers make the text more than %d times longer "
                        "(normalizer %d of %d; a Replace repeated in a Sequence?)", t->path, TK_GROWTH, i + 1, t->n_norm);
    }
    lm_buf_free(&tmp[0]);
    lm_buf_free(&tmp[1]);
    return st;
}

// ---------------------------------------------------------- pre-tokenizers --

// Segments of s cut around every character for which pred() holds, each such
// character its own match (tokenizers' Pattern for Fn(char) -> bool).
typedef bool (*char_pred)(uint32_t cp, uint32_t arg);

static bool seg_push(tk_segs *o, size_t s, size_t e, bool match) {
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

static lm_status char_segments(char_pred pred, uint32_t arg, const char *s, size_t n, tk_segs *out) {
    out->n = 0;
    if (n == 0) return seg_push(out, 0, 0, false) ? LM_OK : LM_ERR_OOM;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = lm_utf8_step(s + i, n - i, &cp);
        if (pred(cp, arg)) {
            if (last < i && !seg_push(out, last, i, false)) return LM_ERR_OOM;
            if (!seg_push(out, i, i + l, true)) return LM_ERR_OOM;
            last = i + l;
        }
        i += l;
    }
    if (last < n && !seg_push(out, last, n, false)) return LM_ERR_OOM;
    return LM_OK;
}

static bool pred_equal(uint32_t cp, uint32_t arg) { return cp == arg; }
static bool pred_space(uint32_t cp, uint32_t arg) { return lm_is_whitespace(cp); }

static bool pred_numeric(uint32_t cp, uint32_t arg) {  // Rust char::is_numeric: N*
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

static bool pred_punct(uint32_t cp, uint32_t arg) {  // ASCII punctuation or P*
    if (cp < 0x80 && ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
                      (cp >= 123 && cp <= 126)))
        return true;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

// Applies a SplitDelimiterBehavior: turns the segments into the pieces kept
// (stored back into segs, match flags cleared). Mirrors normalizer.rs.
static void apply_behavior(tk_segs *g, int behavior, bool invert) {
    if (invert)
        for (size_t i = 0; i < g->n; i++) g->v[i].match = !g->v[i].match;
    size_t k = 0;
    bool prev_match = false;
    switch (behavior) {
    case TK_SPLIT_ISOLATED:
        break;
    case TK_SPLIT_REMOVED:
        for (size_t i = 0; i < g->n; i++)
            if (!g->v[i].match) g->v[k++] = g->v[i];
        g->n = k;
        break;
    case TK_SPLIT_MERGED_PREV:  // a match joins the piece before it
        for (size_t i = 0; i < g->n; i++) {
            tk_seg c = g->v[i];
            if (c.match && !prev_match && k > 0) g->v[k - 1].e = c.e;
            else g->v[k++] = c;
            prev_match = c.match;
        }
        g->n = k;
        break;
    case TK_SPLIT_MERGED_NEXT: {  // a match joins the piece after it (walk backwards)
        size_t w = g->n;  // pieces are written from the end
        for (size_t i = g->n; i-- > 0;) {
            tk_seg c = g->v[i];
            if (c.match && !prev_match && w < g->n) g->v[w].s = c.s;
            else g->v[--w] = c;
            prev_match = c.match;
        }
        memmove(g->v, g->v + w, (g->n - w) * sizeof *g->v);
        g->n -= w;
        break;
    }
    case TK_SPLIT_CONTIGUOUS:  // runs of matches (and of non-matches) become one piece
        for (size_t i = 0; i < g->n; i++) {
            tk_seg c = g->v[i];
            if (c.match == prev_match && k > 0) g->v[k - 1].e = c.e;
            else g->v[k++] = c;
            prev_match = c.match;
        }
        g->n = k;
        break;
    }
    for (size_t i = 0; i < g->n; i++) g->v[i].match = false;
}

// Adds the pieces of `text` (non-empty ones) to out.
static lm_status add_pieces(tk_splits *out, const char *text, const tk_segs *g, bool at_start) {
    for (size_t i = 0; i < g->n; i++) {
        const tk_seg *c = &g->v[i];
        if (c->e == c->s) continue;
        if (!tk_splits_add(out, text + c->s, c->e - c->s, -1, at_start && c->s == 0))
            return LM_ERR_OOM;
    }
    return LM_OK;
}

// Runs one pre-tokenizer over one piece of text, adding its pieces to out.
static lm_status pre_one(const tk_pre *p, const char *s, size_t n, bool at_start, tk_splits *out,
                         lm_buf *tmp, tk_segs *g) {
    lm_status st = LM_OK;
    tmp->n = 0;
    switch (p->type) {
    case TK_PRE_SPLIT:
        if ((st = tk_regex_segments(&p->re, s, n, g))) return st;
        apply_behavior(g, p->behavior, p->invert);
        return add_pieces(out, s, g, at_start);
    case TK_PRE_WHITESPACE:  // keep runs of \w+ and of [^\w\s]+
        if ((st = tk_regex_segments(&p->re, s, n, g))) return st;
        apply_behavior(g, TK_SPLIT_REMOVED, true);
        return add_pieces(out, s, g, at_start);
    case TK_PRE_DIGITS:
        if ((st = char_segments(pred_numeric, 0, s, n, g))) return st;
        apply_behavior(g, p->individual_digits ? TK_SPLIT_ISOLATED : TK_SPLIT_CONTIGUOUS, false);
        return add_pieces(out, s, g, at_start);
    case TK_PRE_WHITESPACE_SPLIT:
        if ((st = char_segments(pred_space, 0, s, n, g))) return st;
        apply_behavior(g, TK_SPLIT_REMOVED, false);
        return add_pieces(out, s, g, at_start);
    case TK_PRE_PUNCTUATION:
        if ((st = char_segments(pred_punct, 0, s, n, g))) return st;
        apply_behavior(g, p->behavior, false);
        return add_pieces(out, s, g, at_start);
    case TK_PRE_BERT: {  // whitespace split, then punctuation isolated
        if ((st = char_segments(pred_space, 0, s, n, g))) return st;
        apply_behavior(g, TK_SPLIT_REMOVED, false);
        tk_segs words = *g, sub = {0};
        *g = (tk_segs){0};
        for (size_t i = 0; i < words.n && st == LM_OK; i++) {
            const char *w = s + words.v[i].s;
            size_t wn = words.v[i].e - words.v[i].s;
            if ((st = char_segments(pred_punct, 0, w, wn, &sub))) break;
            apply_behavior(&sub, TK_SPLIT_ISOLATED, false);
            st = add_pieces(out, w, &sub, at_start && words.v[i].s == 0);
        }
        free(words.v);
        free(sub.v);
        return st;
    }
    case TK_PRE_METASPACE: {
        char rep[4];
        size_t rep_n = (size_t)lm_utf8_encode(p->replacement, rep);
        uint32_t first = 0;
        if (n) lm_utf8_next(s, n, &first);
        bool has = n > 0 && first == p->replacement;
        // a leading space becomes the replacement too, so test that as well
        if (n && s[0] == ' ') has = true;
        bool prepend = !has && (p->prepend_scheme == TK_PREPEND_ALWAYS ||
                                (p->prepend_scheme == TK_PREPEND_FIRST && at_start));
        if (prepend && !lm_buf_put(tmp, rep, rep_n)) return LM_ERR_OOM;
        for (size_t i = 0; i < n; i++) {
            bool ok = s[i] == ' ' ? lm_buf_put(tmp, rep, rep_n) : lm_buf_put(tmp, s + i, 1);
            if (!ok) return LM_ERR_OOM;
        }
        if (p->split) {
            if ((st = char_segments(pred_equal, p->replacement, tmp->p, tmp->n, g))) return st;
            apply_behavior(g, TK_SPLIT_MERGED_NEXT, false);
        } else {
            g->n = 0;
            if (!seg_push(g, 0, tmp->n, false)) return LM_ERR_OOM;
        }
        return add_pieces(out, tmp->p, g, at_start);
    }
    case TK_PRE_BYTELEVEL: {
        const char *src = s;
        size_t sn = n;
        lm_buf spaced = {0};
        if (p->add_prefix_space && (n == 0 || s[0] != ' ')) {
            if (!lm_buf_put(&spaced, " ", 1) || !lm_buf_put(&spaced, s, n)) {
                lm_buf_free(&spaced);
                return LM_ERR_OOM;
            }
            src = spaced.p;
            sn = spaced.n;
        }
        if (p->use_regex) {
            st = tk_regex_segments(&p->re, src, sn, g);
        } else {
            g->n = 0;
            st = seg_push(g, 0, sn, false) ? LM_OK : LM_ERR_OOM;
        }
        for (size_t i = 0; st == LM_OK && i < g->n; i++) {
            const tk_seg *c = &g->v[i];
            if (c->e == c->s) continue;
            tmp->n = 0;
            for (size_t j = c->s; j < c->e; j++)
                if (!lm_utf8_put(tmp, tk_byte_to_cp((unsigned char)src[j]))) st = LM_ERR_OOM;
            if (st == LM_OK && !tk_splits_add(out, tmp->p, tmp->n, -1, at_start && c->s == 0))
                st = LM_ERR_OOM;
        }
        lm_buf_free(&spaced);
        return st;
    }
    }
    return LM_OK;
}

lm_status tk_pretokenize(const lm_tokenizer *t, tk_splits *sp) {
    lm_status st = LM_OK;
    lm_buf tmp = {0};
    tk_segs g = {0};
    size_t in = sp->buf.n;
    for (int k = 0; k < t->n_pre && st == LM_OK; k++) {
        if (sp->buf.n > TK_GROWTH * in + TK_GROWTH_SLACK) {
            st = lm_err(LM_ERR_FORMAT, "%s: the pre-tokenizers make the text more than %d times longer "
                        "(pre-tokenizer %d of %d; ByteLevel repeated in a Sequence?)", t->path, TK_GROWTH, k, t->n_pre);
            break;
        }
        tk_splits out = {0};
        for (size_t i = 0; i < sp->n && st == LM_OK; i++) {
            const tk_split *x = &sp->v[i];
            const char *text = sp->buf.p + x->off;
            if (x->id >= 0) {
                if (!tk_splits_add(&out, text, x->len, x->id, x->at_start)) st = LM_ERR_OOM;
                continue;
            }
            st = pre_one(&t->pre[k], text, x->len, x->at_start, &out, &tmp, &g);
        }
        tk_splits_free(sp);
        *sp = out;
    }
    if (st == LM_OK && sp->buf.n > TK_GROWTH * in + TK_GROWTH_SLACK)
        st = lm_err(LM_ERR_FORMAT, "%s: the pre-tokenizers make the text more than %d times longer", t->path, TK_GROWTH);
    lm_buf_free(&tmp);
    free(g.v);
    return st;
}
