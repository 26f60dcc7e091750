// Decoding: ids -> token strings -> the decoder chain of tokenizer.json
// (Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace), as in
// tokenizers' Tokenizer::decode; and the streaming decoder built on it.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"

// A list of strings: ranges of one buffer.
typedef struct tlist {
    lm_buf b;
    tk_segs t;
} tlist;

static bool tl_add(tlist *l, const char *s, size_t n) {
    if (l->t.n == l->t.cap) {
        size_t cap = l->t.cap ? l->t.cap * 2 : 16;
        tk_seg *v = realloc(l->t.v, cap * sizeof *v);
        if (!v) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory decoding");
            return false;
        }
        l->t.v = v;
        l->t.cap = cap;
    }
    size_t off = l->b.n;
    if (!lm_buf_put(&l->b, s, n)) return false;
    l->t.v[l->t.n++] = (tk_seg){off, off + n, false};
    return true;
}

static void tl_free(tlist *l) {
    lm_buf_free(&l->b);
    free(l->t.v);
    *l = (tlist){0};
}

#define TL_STR(l, i) ((l)->b.p + (l)->t.v[i].s)
#define TL_LEN(l, i) ((l)->t.v[i].e - (l)->t.v[i].s)

// "<0xNN>" -> NN, or -1.
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// ByteFallback: runs of byte tokens become their UTF-8 text, or one U+FFFD
// per byte when the run is not valid UTF-8.
static bool flush_bytes(tlist *out, lm_buf *bytes) {
    bool ok = true;
    if (bytes->n && lm_utf8_valid(bytes->p, bytes->n)) ok = tl_add(out, bytes->p, bytes->n);
    else
        for (size_t i = 0; i < bytes->n && ok; i++) ok = tl_add(out, "\xEF\xBF\xBD", 3);
    bytes->n = 0;
    return ok;
}

// `limit`: most bytes the output may grow to (see TK_GROWTH); checked where
// one decoder can multiply the text (Replace), the caller checks the rest.
static lm_status dec_one(const tk_dec *d, const tlist *in, tlist *out, size_t limit) {
    lm_status st = LM_OK;
    size_t n = in->t.n;
    switch (d->type) {
    case TK_DEC_REPLACE: {
        tk_segs g = {0};
        lm_buf tmp = {0};
        for (size_t i = 0; i < n && st == LM_OK && out->b.n <= limit; i++) {
            const char *s = TL_STR(in, i);
            st = tk_regex_segments(&d->re, s, TL_LEN(in, i), &g);
            tmp.n = 0;
            for (size_t j = 0; st == LM_OK && j < g.n; j++) {
                bool ok = g.v[j].match ? lm_buf_put(&tmp, d->content, strlen(d->content))
                                       : lm_buf_put(&tmp, s + g.v[j].s, g.v[j].e - g.v[j].s);
                if (!ok) st = LM_ERR_OOM;
            }
            if (st == LM_OK && !tl_add(out, tmp.p, tmp.n)) st = LM_ERR_OOM;
        }
        free(g.v);
        lm_buf_free(&tmp);
        return st;
    }
    case TK_DEC_BYTE_FALLBACK: {
        lm_buf bytes = {0};
        for (size_t i = 0; i < n && st == LM_OK; i++) {
            int b = byte_token(TL_STR(in, i), TL_LEN(in, i));
            if (b >= 0) {
                char c = (char)b;
                if (!lm_buf_put(&bytes, &c, 1)) st = LM_ERR_OOM;
                continue;
            }
            if (!flush_bytes(out, &bytes) || !tl_add(out, TL_STR(in, i), TL_LEN(in, i)))
                st = LM_ERR_OOM;
        }
        if (st == LM_OK && !flush_bytes(out, &bytes)) st = LM_ERR_OOM;
        lm_buf_free(&bytes);
        return st;
    }
    case TK_DEC_FUSE:
        return tl_add(out, in->b.p, in->b.n) ? LM_OK : LM_ERR_OOM;  // tokens are contiguous
    case TK_DEC_STRIP:
        for (size_t i = 0; i < n; i++) {
            const char *s = TL_STR(in, i);
            size_t a = 0, b = TL_LEN(in, i);
            uint32_t cp;
            for (int k = 0; k < d->start && a < b; k++) {
                int l = lm_utf8_next(s + a, b - a, &cp);
                if (!l || cp != d->strip_char) break;
                a += l;
            }
            for (int k = 0; k < d->stop && a < b; k++) {
                size_t j = b - 1;
                while (j > a && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                if (!lm_utf8_next(s + j, b - j, &cp) || cp != d->strip_char) break;
                b = j;
            }
            if (!tl_add(out, s + a, b - a)) return LM_ERR_OOM;
        }
        return LM_OK;
    case TK_DEC_BYTELEVEL: {
        // each token's characters back to bytes (a token with a character
        // outside the mapping keeps its UTF-8), all joined, then lossy UTF-8
        lm_buf bytes = {0}, text = {0};
        for (size_t i = 0; i < n && st == LM_OK; i++) {
            const char *s = TL_STR(in, i);
            size_t len = TL_LEN(in, i), mark = bytes.n;
            bool mapped = true;
            for (size_t j = 0; j < len && mapped && st == LM_OK;) {
                uint32_t cp;
                int l = lm_utf8_next(s + j, len - j, &cp);
                int b = l ? tk_cp_to_byte(cp) : -1;
                if (b < 0) {
                    mapped = false;
                    break;
                }
                char c = (char)b;
                if (!lm_buf_put(&bytes, &c, 1)) st = LM_ERR_OOM;
                j += l;
            }
            if (!mapped) {
                bytes.n = mark;
                if (!lm_buf_put(&bytes, s, len)) st = LM_ERR_OOM;
            }
        }
        if (st == LM_OK && (!lm_utf8_lossy(&text, bytes.p, bytes.n) || !tl_add(out, text.p, text.n)))
            st = LM_ERR_OOM;
        lm_buf_free(&bytes);
        lm_buf_free(&text);
        return st;
    }
    case TK_DEC_METASPACE: {
        lm_buf tmp = {0};
        for (size_t i = 0; i < n && st == LM_OK; i++) {
            const char *s = TL_STR(in, i);
            size_t len = TL_LEN(in, i);
            tmp.n = 0;
            for (size_t j = 0; j < len && st == LM_OK;) {
                uint32_t cp;
                int l = lm_utf8_next(s + j, len - j, &cp);
                if (!l) l = 1, cp = 0xFFFD;
                bool ok = true;
                if (cp != d->replacement) ok = lm_buf_put(&tmp, s + j, l);
                else if (!(i == 0 && d->prepend_scheme != TK_PREPEND_NEVER)) ok = lm_buf_put(&tmp, " ", 1);
                if (!ok) st = LM_ERR_OOM;
                j += l;
            }
            if (st == LM_OK && !tl_add(out, tmp.p, tmp.n)) st = LM_ERR_OOM;
        }
        lm_buf_free(&tmp);
        return st;
    }
    }
    return LM_OK;
}

static lm_status check_id(const lm_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids || !t->tok_str[id])
        return lm_err(LM_ERR_RANGE, "%s: token id %d is out of range (vocabulary has %d ids)",
                      t->path, (int)id, (int)t->n_ids);
    return LM_OK;
}

lm_status tk_decode_tokens(const lm_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                           lm_buf *out) {
    out->n = 0;
    tlist cur = {0};
    lm_status st = LM_OK;
    for (size_t i = 0; i < n && st == LM_OK; i++) {
        if ((st = check_id(t, ids[i]))) break;
        if (skip_special && (t->tok_flags[ids[i]] & TK_FLAG_SPECIAL)) continue;
        if (!tl_add(&cur, t->tok_str[ids[i]], t->tok_len[ids[i]])) st = LM_ERR_OOM;
    }
    size_t in = cur.b.n;
    tk_budget_begin(in);
    for (int k = 0; st == LM_OK && t->has_decoder && k < t->n_dec; k++) {
        tlist next = {0};
        st = dec_one(&t->dec[k], &cur, &next, TK_GROWTH * in + TK_GROWTH_SLACK);
        tl_free(&cur);
        cur = next;
        if (st == LM_OK && cur.b.n > TK_GROWTH * in + TK_GROWTH_SLACK)
            st = lm_err(LM_ERR_FORMAT, "%s: the decoders make the text more than %d times longer than its tokens "
                        "(decoder %d of %d; a Replace repeated in a Sequence?)", t->path, TK_GROWTH, k + 1, t->n_dec);
    }
    tk_budget_end();
    for (size_t i = 0; st == LM_OK && i < cur.t.n; i++) {
        // no decoder: tokenizers joins the tokens with spaces
        if (!t->has_decoder && i > 0 && !lm_buf_put(out, " ", 1)) st = LM_ERR_OOM;
        if (st == LM_OK && !lm_buf_put(out, TL_STR(&cur, i), TL_LEN(&cur, i))) st = LM_ERR_OOM;
    }
    tl_free(&cur);
    return st;
}

lm_status lm_detokenize(const lm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                        bool skip_special, char **text) {
    if (!tok || !text || (!ids && n_ids))
        return lm_err(LM_ERR_INVALID_ARG, "lm_detokenize: NULL argument");
    *text = NULL;
    lm_buf out = {0};
    lm_status st = tk_decode_tokens(tok, ids, n_ids, skip_special, &out);
    if (st == LM_OK && !lm_buf_put(&out, "", 1)) st = LM_ERR_OOM;
    if (st != LM_OK) {
        lm_buf_free(&out);
        return st;
    }
    *text = out.p;
    return LM_OK;
}

// ------------------------------------------------------------ streaming ---
//
// Decoders are not incremental (Strip and Metaspace look at the first token,
// ByteFallback and ByteLevel join bytes across tokens), so the streaming
// decoder decodes a short window of recent ids and emits how much longer the
// text got than the window's already-emitted part (the approach of
// tokenizers' DecodeStream). Text ending in U+FFFD is an incomplete character:
// it is held until more ids arrive or the stream is flushed.

#define MAX_HELD 8

struct lm_detok {
    const lm_tokenizer *tok;
    bool skip_special;
    lm_ids win;      // recent ids; win[0..read) were emitted before
    size_t read;
    lm_buf prefix;   // decode(win[0..read))
    lm_buf text;     // scratch
    lm_buf pending;  // text decided by the last call, handed out to the caller
};

lm_status lm_detok_init(const lm_tokenizer *tok, bool skip_special, lm_detok **out) {
    if (!tok || !out) return lm_err(LM_ERR_INVALID_ARG, "lm_detok_init: NULL argument");
    lm_detok *d = calloc(1, sizeof *d);
    if (!d) return lm_err(LM_ERR_OOM, "lm_detok_init: out of memory");
    d->tok = tok;
    d->skip_special = skip_special;
    *out = d;
    return LM_OK;
}

void lm_detok_free(lm_detok *d) {
    if (!d) return;
    free(d->win.v);
    lm_buf_free(&d->prefix);
    lm_buf_free(&d->text);
    lm_buf_free(&d->pending);
    free(d);
}

// Hands out the text decided by this call, NUL-terminated, in d's buffer.
static lm_status give_out(lm_detok *d, const char **text, size_t *len) {
    if (!lm_buf_put(&d->pending, "", 1)) return LM_ERR_OOM;
    d->pending.n--;
    *text = d->pending.p;
    if (len) *len = d->pending.n;
    return LM_OK;
}

static bool ends_with_fffd(const lm_buf *b) {
    return b->n >= 3 && memcmp(b->p + b->n - 3, "\xEF\xBF\xBD", 3) == 0;
}

// Appends the text the unread ids added. Normally the window's decode
// extends the emitted prefix and the new part is its tail. When it does not
// (a byte run completed by later ids turns invalid as a whole, and
// ByteFallback then replaces every byte of it), emitted text cannot be taken
// back: the unread ids are decoded on their own instead.
static lm_status take_new_text(lm_detok *d) {
    if (d->text.n >= d->prefix.n && (!d->prefix.n || !memcmp(d->text.p, d->prefix.p, d->prefix.n)))
        return lm_buf_put(&d->pending, d->text.p + d->prefix.n, d->text.n - d->prefix.n) ? LM_OK : LM_ERR_OOM;
    lm_status st = tk_decode_tokens(d->tok, d->win.v + d->read, d->win.n - d->read, d->skip_special, &d->text);
    if (st) return st;
    return lm_buf_put(&d->pending, d->text.p, d->text.n) ? LM_OK : LM_ERR_OOM;
}

lm_status lm_detok_push(lm_detok *d, int32_t id, const char **text, size_t *len) {
    if (!d || !text) return lm_err(LM_ERR_INVALID_ARG, "lm_detok_push: NULL argument");
    *text = "";
    if (len) *len = 0;
    d->pending.n = 0;  // the previous call's text was handed out
    lm_status st = check_id(d->tok, id);
    if (st) return st;
    if (!(d->skip_special && (d->tok->tok_flags[id] & TK_FLAG_SPECIAL))) {
        if (!lm_ids_push(&d->win, id)) return LM_ERR_OOM;
        st = tk_decode_tokens(d->tok, d->win.v, d->win.n, d->skip_special, &d->text);
        if (st) return st;
        // Valid text completes a character within 4 ids; past that the
        // U+FFFD is real (invalid bytes) and holding on would only grow the window.
        bool held = ends_with_fffd(&d->text) && d->win.n - d->read <= MAX_HELD;
        if (d->text.n > d->prefix.n && !held) {
            if ((st = take_new_text(d))) return st;
            // keep the ids since the last read point as context for the next id
            size_t keep = d->win.n - d->read;
            memmove(d->win.v, d->win.v + d->read, keep * sizeof *d->win.v);
            d->win.n = keep;
            d->read = keep;
            st = tk_decode_tokens(d->tok, d->win.v, d->win.n, d->skip_special, &d->prefix);
            if (st) return st;
        }
    }
    return give_out(d, text, len);
}

lm_status lm_detok_flush(lm_detok *d, const char **text, size_t *len) {
    if (!d || !text) return lm_err(LM_ERR_INVALID_ARG, "lm_detok_flush: NULL argument");
    *text = "";
    if (len) *len = 0;
    d->pending.n = 0;
    lm_status st = tk_decode_tokens(d->tok, d->win.v, d->win.n, d->skip_special, &d->text);
    if (st) return st;
    if (d->text.n > d->prefix.n && (st = take_new_text(d))) return st;
    // the sequence ends here: the next id starts a fresh one
    d->win.n = 0;
    d->read = 0;
    d->prefix.n = 0;
    return give_out(d, text, len);
}
