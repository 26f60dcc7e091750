// Hugging Face tokenizer.json loader and encoder (BPE models: SentencePiece
// style with byte fallback, and GPT-2 style byte-level). Every step follows
// the `tokenizers` library so ids match it exactly; see tokenizer.h for the
// pipeline, text.c for normalizers and pre-tokenizers, bpe.c for the
// merges, decode.c for decoding and regex.c for the PCRE2 wrapper.
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"
#include "util/file.h"
#include "util/json.h"

// ------------------------------------------------------------ JSON helpers --

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *key, bool def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static bool jint(const cJSON *v, int32_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0 ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return false;
    *out = (int32_t)v->valuedouble;
    return true;
}

// A token id larger than any real vocabulary (the largest today are ~256k):
// refusing it keeps a hostile id from sizing the id tables.
#define TK_MAX_ID (1 << 24)
// Real tokenizer.json files are at most tens of MB.
#define TK_MAX_FILE ((size_t)1 << 30)

static bool jid(const cJSON *v, int32_t *out) { return jint(v, out) && *out < TK_MAX_ID; }

// A JSON text must be UTF-8 (RFC 8259); every string of the file then is,
// which the regex engine relies on (it is run without its own UTF check).
static lm_status check_utf8(const char *path, const char *data, size_t len) {
    size_t bad = lm_utf8_invalid_at(data, len);
    if (bad == len) return LM_OK;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < bad; i++) {
        if (data[i] == '\n') line++, col = 1;
        else if (((unsigned char)data[i] & 0xC0) != 0x80) col++;
    }
    return lm_err(LM_ERR_FORMAT, "%s: not valid UTF-8 at byte offset %zu (line %zu, column %zu): a JSON file must be UTF-8",
                  path, bad, line, col);
}

static lm_status parse_json(const char *path, const char *data, size_t len, cJSON **out) {
    *out = NULL;
    lm_status st = check_utf8(path, data, len);
    if (st) return st;
    int depth = lm_json_depth(data, len);
    if (depth > LM_JSON_MAX_DEPTH)
        return lm_err(LM_ERR_FORMAT, "%s: JSON nested %d levels deep (at most %d)", path, depth, LM_JSON_MAX_DEPTH);
    *out = cJSON_ParseWithLength(data, len);
    if (!*out) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= data && at <= data + len ? (size_t)(at - data) : 0;
        return lm_err(LM_ERR_FORMAT, "%s: malformed JSON near byte %zu", path, off);
    }
    const char *dup = lm_json_duplicate_key(*out);
    if (dup) {
        st = lm_err(LM_ERR_FORMAT, "%s: key \"%.200s\" appears twice in one object (which one is meant?)", path, dup);
        cJSON_Delete(*out);
        *out = NULL;
        return st;
    }
    return LM_OK;
}

// ----------------------------------------------------------------- loading --

static char *dup_str(lm_tokenizer *t, const char *s) {
    return lm_arena_dup(&t->arena, s, strlen(s));
}

// Reads a single UTF-8 character option (Metaspace replacement, Strip content).
static lm_status one_char(const lm_tokenizer *t, const char *s, const char *what, uint32_t *cp) {
    size_t n = s ? strlen(s) : 0;
    int l = n ? lm_utf8_next(s, n, cp) : 0;
    if (!l || (size_t)l != n) return lm_err(LM_ERR_FORMAT, "%s: %s must be one character", t->path, what);
    return LM_OK;
}

// {"String": s} or {"Regex": r} -> compiled pattern
static lm_status parse_pattern(lm_tokenizer *t, const cJSON *p, const char *what, tk_regex *re) {
    const char *lit = jstr(p, "String"), *rx = jstr(p, "Regex");
    char name[4400];
    snprintf(name, sizeof name, "%s: %s", t->path, what);
    if (lit) return tk_regex_compile(re, lit, true, name);
    if (rx) return tk_regex_compile(re, rx, false, name);
    return lm_err(LM_ERR_FORMAT, "%s: %s has no String or Regex pattern", t->path, what);
}

static lm_status parse_normalizer(lm_tokenizer *t, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return LM_OK;
    const char *type = jstr(n, "type");
    if (!type) return lm_err(LM_ERR_FORMAT, "%s: normalizer without a type", t->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            lm_status st = parse_normalizer(t, it);
            if (st) return st;
        }
        return LM_OK;
    }
    tk_norm *v = realloc(t->norm, (t->n_norm + 1) * sizeof *v);
    if (!v) return lm_err(LM_ERR_OOM, "%s: out of memory", t->path);
    t->norm = v;
    tk_norm *nm = &t->norm[t->n_norm];
    *nm = (tk_norm){0};
    if (!strcmp(type, "NFC")) nm->type = TK_NORM_NFC;
    else if (!strcmp(type, "NFD")) nm->type = TK_NORM_NFD;
    else if (!strcmp(type, "NFKC")) nm->type = TK_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) nm->type = TK_NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) nm->type = TK_NORM_LOWERCASE;
    else if (!strcmp(type, "Prepend") || !strcmp(type, "Append")) {
        bool pre = type[0] == 'P';
        const char *s = jstr(n, pre ? "prepend" : "append");
        if (!s) return lm_err(LM_ERR_FORMAT, "%s: %s normalizer without text", t->path, type);
        nm->type = pre ? TK_NORM_PREPEND : TK_NORM_APPEND;
        if (!(nm->str = dup_str(t, s))) return LM_ERR_OOM;
    } else if (!strcmp(type, "Replace")) {
        const char *content = jstr(n, "content");
        if (!content) return lm_err(LM_ERR_FORMAT, "%s: Replace normalizer without content", t->path);
        nm->type = TK_NORM_REPLACE;
        if (!(nm->str = dup_str(t, content))) return LM_ERR_OOM;
        lm_status st = parse_pattern(t, cJSON_GetObjectItemCaseSensitive(n, "pattern"),
                                     "Replace normalizer", &nm->re);
        if (st) return st;
    } else if (!strcmp(type, "Strip")) {
        nm->type = TK_NORM_STRIP;
        nm->left = jbool(n, "strip_left", true);
        nm->right = jbool(n, "strip_right", true);
    } else {
        return lm_err(LM_ERR_UNSUPPORTED,
                      "%s: normalizer type '%.200s' is not supported (supported: Sequence, NFC, NFD, "
                      "NFKC, NFKD, Lowercase, Prepend, Append, Replace, Strip)", t->path, type);
    }
    t->n_norm++;
    return LM_OK;
}

static lm_status parse_behavior(const lm_tokenizer *t, const cJSON *o, int *out) {
    const char *b = jstr(o, "behavior");
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    if (!b) return lm_err(LM_ERR_FORMAT, "%s: pre-tokenizer without a behavior", t->path);
    for (int i = 0; i < 5; i++)
        if (!strcmp(b, names[i])) {
            *out = i;  // same order as TK_SPLIT_*
            return LM_OK;
        }
    return lm_err(LM_ERR_FORMAT, "%s: unknown split behavior '%.200s'", t->path, b);
}

static lm_status parse_prepend_scheme(const lm_tokenizer *t, const cJSON *o, int *out) {
    // Newer files say prepend_scheme; older ones only add_prefix_space.
    const char *s = jstr(o, "prepend_scheme");
    *out = TK_PREPEND_ALWAYS;
    if (s) {
        if (!strcmp(s, "always")) *out = TK_PREPEND_ALWAYS;
        else if (!strcmp(s, "first")) *out = TK_PREPEND_FIRST;
        else if (!strcmp(s, "never")) *out = TK_PREPEND_NEVER;
        else return lm_err(LM_ERR_FORMAT, "%s: unknown Metaspace prepend_scheme '%.200s'", t->path, s);
    }
    if (!jbool(o, "add_prefix_space", true)) *out = TK_PREPEND_NEVER;
    return LM_OK;
}

// GPT-2's pre-tokenization regex, used by ByteLevel with use_regex.
static const char *GPT2_REGEX =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static lm_status parse_pre(lm_tokenizer *t, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return LM_OK;
    const char *type = jstr(p, "type");
    if (!type) return lm_err(LM_ERR_FORMAT, "%s: pre_tokenizer without a type", t->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")) {
            lm_status st = parse_pre(t, it);
            if (st) return st;
        }
        return LM_OK;
    }
    tk_pre *v = realloc(t->pre, (t->n_pre + 1) * sizeof *v);
    if (!v) return lm_err(LM_ERR_OOM, "%s: out of memory", t->path);
    t->pre = v;
    tk_pre *pt = &t->pre[t->n_pre];
    *pt = (tk_pre){0};
    lm_status st = LM_OK;
    char name[4400];
    snprintf(name, sizeof name, "%s: %.200s pre-tokenizer", t->path, type);
    if (!strcmp(type, "Split")) {
        pt->type = TK_PRE_SPLIT;
        pt->invert = jbool(p, "invert", false);
        if (!(st = parse_behavior(t, p, &pt->behavior)))
            st = parse_pattern(t, cJSON_GetObjectItemCaseSensitive(p, "pattern"), "Split pre-tokenizer",
                               &pt->re);
    } else if (!strcmp(type, "ByteLevel")) {
        pt->type = TK_PRE_BYTELEVEL;
        pt->add_prefix_space = jbool(p, "add_prefix_space", true);
        pt->use_regex = jbool(p, "use_regex", true);
        if (pt->use_regex) st = tk_regex_compile(&pt->re, GPT2_REGEX, false, name);
    } else if (!strcmp(type, "Metaspace")) {
        pt->type = TK_PRE_METASPACE;
        pt->split = jbool(p, "split", true);
        if (!(st = one_char(t, jstr(p, "replacement"), "Metaspace replacement", &pt->replacement)))
            st = parse_prepend_scheme(t, p, &pt->prepend_scheme);
    } else if (!strcmp(type, "Digits")) {
        pt->type = TK_PRE_DIGITS;
        pt->individual_digits = jbool(p, "individual_digits", false);
    } else if (!strcmp(type, "Whitespace")) {
        pt->type = TK_PRE_WHITESPACE;
        st = tk_regex_compile(&pt->re, "\\w+|[^\\w\\s]+", false, name);
    } else if (!strcmp(type, "WhitespaceSplit")) {
        pt->type = TK_PRE_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "Punctuation")) {
        pt->type = TK_PRE_PUNCTUATION;
        pt->behavior = TK_SPLIT_ISOLATED;
        if (jstr(p, "behavior")) st = parse_behavior(t, p, &pt->behavior);
    } else if (!strcmp(type, "BertPreTokenizer")) {
        pt->type = TK_PRE_BERT;
    } else {
        return lm_err(LM_ERR_UNSUPPORTED,
                      "%s: pre_tokenizer type '%.200s' is not supported (supported: Sequence, Split, "
                      "ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, "
                      "BertPreTokenizer)", t->path, type);
    }
    t->n_pre++;  // counted even on error so that free() releases its regex
    return st;
}

static lm_status parse_decoder(lm_tokenizer *t, const cJSON *d) {
    if (!d || cJSON_IsNull(d)) return LM_OK;
    t->has_decoder = true;
    const char *type = jstr(d, "type");
    if (!type) return lm_err(LM_ERR_FORMAT, "%s: decoder without a type", t->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(d, "decoders")) {
            lm_status st = parse_decoder(t, it);
            if (st) return st;
        }
        return LM_OK;
    }
    tk_dec *v = realloc(t->dec, (t->n_dec + 1) * sizeof *v);
    if (!v) return lm_err(LM_ERR_OOM, "%s: out of memory", t->path);
    t->dec = v;
    tk_dec *dc = &t->dec[t->n_dec];
    *dc = (tk_dec){0};
    lm_status st = LM_OK;
    if (!strcmp(type, "Replace")) {
        const char *content = jstr(d, "content");
        dc->type = TK_DEC_REPLACE;
        if (!content) st = lm_err(LM_ERR_FORMAT, "%s: Replace decoder without content", t->path);
        else if (!(dc->content = dup_str(t, content))) st = LM_ERR_OOM;
        else st = parse_pattern(t, cJSON_GetObjectItemCaseSensitive(d, "pattern"), "Replace decoder", &dc->re);
    } else if (!strcmp(type, "ByteFallback")) {
        dc->type = TK_DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        dc->type = TK_DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        dc->type = TK_DEC_STRIP;
        int32_t a = 0, b = 0;
        jint(cJSON_GetObjectItemCaseSensitive(d, "start"), &a);
        jint(cJSON_GetObjectItemCaseSensitive(d, "stop"), &b);
        dc->start = a;
        dc->stop = b;
        st = one_char(t, jstr(d, "content"), "Strip decoder content", &dc->strip_char);
    } else if (!strcmp(type, "ByteLevel")) {
        dc->type = TK_DEC_BYTELEVEL;
    } else if (!strcmp(type, "Metaspace")) {
        dc->type = TK_DEC_METASPACE;
        if (!(st = one_char(t, jstr(d, "replacement"), "Metaspace replacement", &dc->replacement)))
            st = parse_prepend_scheme(t, d, &dc->prepend_scheme);
    } else {
        return lm_err(LM_ERR_UNSUPPORTED,
                      "%s: decoder type '%.200s' is not supported (supported: Sequence, Replace, "
                      "ByteFallback, Fuse, Strip, ByteLevel, Metaspace)", t->path, type);
    }
    t->n_dec++;
    return st;
}

static int32_t token_id(const lm_tokenizer *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s)) return t->added[i].id;
    return lm_strmap_get(&t->vocab, s, strlen(s));
}

// Adds the ids of a post-processor's special token list ({"ids": [...]}, or a
// ["token", id] pair for Bert/Roberta) to dst.
static lm_status add_ids(lm_tokenizer *t, lm_ids *dst, const cJSON *ids, const char *what) {
    const cJSON *it;
    if (!cJSON_IsArray(ids)) return lm_err(LM_ERR_FORMAT, "%s: %s has no ids", t->path, what);
    cJSON_ArrayForEach(it, ids) {
        int32_t id;
        if (!jid(it, &id) || id >= t->n_ids || !t->tok_str[id])
            return lm_err(LM_ERR_FORMAT, "%s: %s has id %.0f, which is not a token of this tokenizer", t->path,
                          what, cJSON_IsNumber(it) ? it->valuedouble : -1.0);
        if (!lm_ids_push(dst, id)) return LM_ERR_OOM;
    }
    return LM_OK;
}

// The post-processor, reduced to the ids it puts before and after a single
// sequence. Processors in a Sequence wrap each other's output.
static lm_status parse_post(lm_tokenizer *t, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return LM_OK;
    const char *type = jstr(p, "type");
    if (!type) return lm_err(LM_ERR_FORMAT, "%s: post_processor without a type", t->path);
    lm_ids pre = {0}, post = {0};
    lm_status st = LM_OK;
    if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "processors")) {
            if ((st = parse_post(t, it))) return st;
        }
        return LM_OK;
    } else if (!strcmp(type, "ByteLevel")) {
        return LM_OK;  // only adjusts offsets
    } else if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
        const cJSON *it;
        bool seen_seq = false;
        if (!cJSON_IsArray(single))
            return lm_err(LM_ERR_FORMAT, "%s: TemplateProcessing without a single template", t->path);
        cJSON_ArrayForEach(it, single) {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
                seen_seq = true;
                continue;
            }
            const char *name = jstr(sp, "id");
            const cJSON *tokdef = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
            if (!tokdef) {
                st = lm_err(LM_ERR_FORMAT, "%s: TemplateProcessing special token '%.200s' is not defined",
                            t->path, name ? name : "?");
                break;
            }
            if ((st = add_ids(t, seen_seq ? &post : &pre, cJSON_GetObjectItemCaseSensitive(tokdef, "ids"),
                              "TemplateProcessing special token")))
                break;
        }
    } else if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        int32_t cid, sid;
        if (!jid(cJSON_GetArrayItem(cls, 1), &cid) || !jid(cJSON_GetArrayItem(sep, 1), &sid))
            return lm_err(LM_ERR_FORMAT, "%s: %s needs cls and sep", t->path, type);
        if (cid >= t->n_ids || !t->tok_str[cid] || sid >= t->n_ids || !t->tok_str[sid])
            return lm_err(LM_ERR_FORMAT, "%s: %s cls/sep ids are not tokens of this tokenizer", t->path, type);
        if (!lm_ids_push(&pre, cid) || !lm_ids_push(&post, sid)) st = LM_ERR_OOM;
    } else {
        return lm_err(LM_ERR_UNSUPPORTED,
                      "%s: post_processor type '%.200s' is not supported (supported: TemplateProcessing, "
                      "ByteLevel, BertProcessing, RobertaProcessing, Sequence)", t->path, type);
    }
    // wrap: new prefix = pre + old prefix, new suffix = old suffix + post
    for (size_t i = 0; st == LM_OK && i < t->post_prefix.n; i++)
        if (!lm_ids_push(&pre, t->post_prefix.v[i])) st = LM_ERR_OOM;
    for (size_t i = 0; st == LM_OK && i < post.n; i++)
        if (!lm_ids_push(&t->post_suffix, post.v[i])) st = LM_ERR_OOM;
    if (st == LM_OK) {
        free(t->post_prefix.v);
        t->post_prefix = pre;
        pre = (lm_ids){0};
    }
    free(pre.v);
    free(post.v);
    return st;
}

static lm_status set_token(lm_tokenizer *t, int32_t id, const char *s, size_t n) {
    if (id < 0 || id >= t->n_ids) return lm_err(LM_ERR_FORMAT, "%s: token id %d out of range", t->path, id);
    char *p = lm_arena_dup(&t->arena, s, n);
    if (!p) return LM_ERR_OOM;
    t->tok_str[id] = p;
    t->tok_len[id] = (uint32_t)n;
    return LM_OK;
}

static lm_status parse_bpe(lm_tokenizer *t, const cJSON *model) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab)) return lm_err(LM_ERR_FORMAT, "%s: model.vocab is not an object", t->path);
    if (merges && !cJSON_IsArray(merges))
        return lm_err(LM_ERR_FORMAT, "%s: model.merges is not an array", t->path);

    size_t n_vocab = (size_t)cJSON_GetArraySize(vocab);
    if (!lm_strmap_init(&t->vocab, n_vocab)) return LM_ERR_OOM;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int32_t id;
        if (!jid(it, &id))
            return lm_err(LM_ERR_FORMAT, "%s: vocab entry '%.200s' has no valid id (an integer in [0, %d))", t->path,
                          it->string, TK_MAX_ID);
        lm_status st = set_token(t, id, it->string, strlen(it->string));
        if (st) return st;
        if (!lm_strmap_put(&t->vocab, t->tok_str[id], t->tok_len[id], id)) return LM_ERR_OOM;
    }

    const char *unk = jstr(model, "unk_token");
    t->unk_id = unk ? lm_strmap_get(&t->vocab, unk, strlen(unk)) : -1;
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    const char *pfx = jstr(model, "continuing_subword_prefix");
    const char *sfx = jstr(model, "end_of_word_suffix");
    if (pfx && !(t->subword_prefix = dup_str(t, pfx))) return LM_ERR_OOM;
    if (sfx && !(t->word_suffix = dup_str(t, sfx))) return LM_ERR_OOM;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_tok[b] = lm_strmap_get(&t->vocab, name, 6);
    }

    // Merges: "a b" strings or [a, b] pairs; rank = position in the list.
    size_t pfx_n = pfx ? strlen(pfx) : 0;
    if (!lm_pairmap_init(&t->merges, merges ? (size_t)cJSON_GetArraySize(merges) : 0)) return LM_ERR_OOM;
    lm_buf joined = {0};
    int32_t rank = 0;
    lm_status st = LM_OK;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t an, bn;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring, *sp = strchr(s, ' ');
            if (!strncmp(s, "#version", 8)) continue;
            if (!sp || strchr(sp + 1, ' ')) {
                st = lm_err(LM_ERR_FORMAT, "%s: merge %d ('%.200s') is not two tokens", t->path, rank + 1, s);
                break;
            }
            a = s, an = (size_t)(sp - s), b = sp + 1, bn = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring, an = strlen(a);
            b = cJSON_GetArrayItem(it, 1)->valuestring, bn = strlen(b);
        } else {
            st = lm_err(LM_ERR_FORMAT, "%s: merge %d is not a string or a pair", t->path, rank + 1);
            break;
        }
        int32_t ia = lm_strmap_get(&t->vocab, a, an), ib = lm_strmap_get(&t->vocab, b, bn);
        // the merged token drops the right part's continuing-subword prefix
        size_t skip = pfx_n && bn >= pfx_n && !memcmp(b, pfx, pfx_n) ? pfx_n : 0;
        joined.n = 0;
        if (!lm_buf_put(&joined, a, an) || !lm_buf_put(&joined, b + skip, bn - skip)) {
            st = LM_ERR_OOM;
            break;
        }
        int32_t inew = lm_strmap_get(&t->vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            st = lm_err(LM_ERR_FORMAT, "%s: merge %d ('%.*s' '%.*s') uses a token missing from the vocab",
                        t->path, rank + 1, (int)an, a, (int)bn, b);
            break;
        }
        if (!lm_pairmap_put(&t->merges, ia, ib, rank, inew)) {
            st = LM_ERR_OOM;
            break;
        }
        rank++;
    }
    lm_buf_free(&joined);
    return st;
}

static int32_t trie_node(tk_trie *tr, uint8_t byte) {
    if (tr->n_nodes == tr->cap) {
        int cap = tr->cap ? tr->cap * 2 : 256;
        int32_t *c = realloc(tr->child, (size_t)cap * sizeof *c);
        if (c) tr->child = c;
        int32_t *nx = realloc(tr->next, (size_t)cap * sizeof *nx);
        if (nx) tr->next = nx;
        int32_t *tk = realloc(tr->tok, (size_t)cap * sizeof *tk);
        if (tk) tr->tok = tk;
        uint8_t *by = realloc(tr->byte, (size_t)cap);
        if (by) tr->byte = by;
        if (!c || !nx || !tk || !by) return -1;
        tr->cap = cap;
    }
    int32_t k = tr->n_nodes++;
    tr->child[k] = tr->next[k] = tr->tok[k] = -1;
    tr->byte[k] = byte;
    return k;
}

// Adds pattern p (n bytes) for added token `tok`; a repeated pattern keeps
// the first token, as the bucket scan it replaces did.
static bool trie_add(tk_trie *tr, const char *p, size_t n, int tok) {
    int32_t *slot = &tr->root[(uint8_t)p[0]], node = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t k = *slot;
        while (k >= 0 && tr->byte[k] != (uint8_t)p[i]) k = tr->next[k];
        if (k < 0) {
            if ((k = trie_node(tr, (uint8_t)p[i])) < 0) return false;
            if (i == 0) tr->root[(uint8_t)p[0]] = k;
            else {
                tr->next[k] = tr->child[node];
                tr->child[node] = k;
            }
        }
        node = k;
        if (i + 1 < n) slot = &tr->child[node];
    }
    if (tr->tok[node] < 0) {
        tr->tok[node] = tok;
        tr->n++;
    }
    return true;
}

// The trie of the added tokens selected by `normalized` (those matched in
// normalized text are normalized too).
static lm_status build_trie(lm_tokenizer *t, tk_trie *tr, bool normalized) {
    for (int c = 0; c < 256; c++) tr->root[c] = -1;
    lm_status st = LM_OK;
    lm_buf tmp = {0};
    for (int i = 0; i < t->n_added && st == LM_OK; i++) {
        const tk_added *a = &t->added[i];
        if (a->normalized != normalized) continue;
        const char *pat = a->content;
        size_t len = a->len;
        if (normalized && t->n_norm) {
            if ((st = tk_normalize(t, a->content, a->len, &tmp))) break;
            pat = tmp.p, len = tmp.n;
        }
        if (len && !trie_add(tr, pat, len, i)) st = lm_err(LM_ERR_OOM, "%s: out of memory", t->path);
    }
    lm_buf_free(&tmp);
    return st;
}

static lm_status added_entries(lm_tokenizer *t, const cJSON *arr, lm_strmap *seen);

static lm_status parse_added(lm_tokenizer *t, const cJSON *arr) {
    int n = cJSON_GetArraySize(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    lm_strmap seen = {0};  // contents so far (keys point into the JSON tree)
    if (!t->added || !lm_strmap_init(&seen, (size_t)n)) {
        lm_strmap_free(&seen);
        return lm_err(LM_ERR_OOM, "%s: out of memory", t->path);
    }
    lm_status st = added_entries(t, arr, &seen);
    lm_strmap_free(&seen);
    return st;
}

static lm_status added_entries(lm_tokenizer *t, const cJSON *arr, lm_strmap *seen) {
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const char *content = jstr(it, "content");
        int32_t id;
        if (!content || !jid(cJSON_GetObjectItemCaseSensitive(it, "id"), &id))
            return lm_err(LM_ERR_FORMAT, "%s: added_tokens entry without content or a valid id (an integer in [0, %d))",
                          t->path, TK_MAX_ID);
        if (!*content) continue;
        if (lm_strmap_get(seen, content, strlen(content)) >= 0) continue;  // a repeat: the first one wins
        if (!lm_strmap_put(seen, content, strlen(content), 1)) return LM_ERR_OOM;
        // a token already in the model vocabulary keeps the model's id
        int32_t vid = lm_strmap_get(&t->vocab, content, strlen(content));
        if (vid >= 0) id = vid;
        tk_added *a = &t->added[t->n_added];
        a->special = jbool(it, "special", false);
        a->single_word = jbool(it, "single_word", false);
        a->lstrip = jbool(it, "lstrip", false);
        a->rstrip = jbool(it, "rstrip", false);
        a->normalized = jbool(it, "normalized", !a->special);
        a->id = id;
        lm_status st = set_token(t, id, content, strlen(content));
        if (st) return st;
        a->content = t->tok_str[id];
        a->len = t->tok_len[id];
        t->tok_flags[id] |= TK_FLAG_ADDED | (a->special ? TK_FLAG_SPECIAL : 0);
        t->n_added++;
    }
    return LM_OK;
}

// bos_token / eos_token: a string or {"content": ...}.
static int32_t config_token(const lm_tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    return s ? token_id(t, s) : -1;
}

static lm_status read_config(lm_tokenizer *t) {
    // without a config, the BOS is the special token the template puts first
    t->bos = t->post_prefix.n ? t->post_prefix.v[0] : -1;
    t->eos = -1;
    if (!t->dir) return LM_OK;  // parsed from memory
    // tokenizer_config.json next to tokenizer.json, if present
    char *cpath = lm_path_join(t->dir, "tokenizer_config.json");
    if (!cpath) return LM_ERR_OOM;
    struct stat sb;
    if (lstat(cpath, &sb) != 0 && errno == ENOENT) {
        free(cpath);
        return LM_OK;
    }
    char *data = NULL;
    size_t len;
    lm_status st = lm_read_file(cpath, TK_MAX_FILE, &data, &len);
    cJSON *cfg = NULL;
    if (st == LM_OK) st = parse_json(cpath, data, len, &cfg);
    free(data);
    free(cpath);
    if (st) return st;
    if (cJSON_GetObjectItemCaseSensitive(cfg, "bos_token")) t->bos = config_token(t, cfg, "bos_token");
    t->eos = config_token(t, cfg, "eos_token");
    cJSON_Delete(cfg);
    return LM_OK;
}

static lm_status load(lm_tokenizer *t, const cJSON *root) {
    if (!cJSON_IsObject(root)) return lm_err(LM_ERR_FORMAT, "%s: not a JSON object", t->path);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return lm_err(LM_ERR_FORMAT, "%s: no \"model\" object", t->path);
    const char *type = jstr(model, "type");
    // files from old versions of tokenizers omit the type of BPE models
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return lm_err(LM_ERR_UNSUPPORTED, "%s: model.type '%.200s' is not supported (supported: BPE)",
                      t->path, type ? type : "(none)");

    // id space: the largest id of the vocab and the added tokens
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *it;
    int32_t max_id = -1, id;
    // (ids that are not valid are refused with a message when parsed below)
    cJSON_ArrayForEach(it, vocab) if (jid(it, &id) && id > max_id) max_id = id;
    cJSON_ArrayForEach(it, added) {
        if (jid(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) && id > max_id) max_id = id;
    }
    t->n_ids = max_id + 1;
    t->tok_str = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->tok_str);
    t->tok_len = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->tok_len);
    t->tok_flags = calloc(t->n_ids ? t->n_ids : 1, 1);
    if (!t->tok_str || !t->tok_len || !t->tok_flags) return lm_err(LM_ERR_OOM, "%s: out of memory", t->path);

    lm_status st;
    if ((st = parse_bpe(t, model))) return st;
    if (added && !cJSON_IsArray(added)) return lm_err(LM_ERR_FORMAT, "%s: added_tokens is not an array", t->path);
    if ((st = parse_added(t, added))) return st;
    if ((st = parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer")))) return st;
    if ((st = parse_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")))) return st;
    if ((st = parse_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor")))) return st;
    if ((st = parse_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder")))) return st;
    if ((st = build_trie(t, &t->trie_raw, false))) return st;
    if ((st = build_trie(t, &t->trie_norm, true))) return st;
    return read_config(t);
}

// Parses tokenizer.json text; `dir` (may be NULL) is where tokenizer_config.json is looked for.
static lm_status parse_tokenizer(const char *name, const char *dir, const char *data, size_t len,
                                 lm_tokenizer **out) {
    *out = NULL;
    lm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lm_err(LM_ERR_OOM, "%s: out of memory", name);
    t->unk_id = t->bos = t->eos = -1;
    t->path = strdup(name);
    t->dir = dir ? strdup(dir) : NULL;
    if (!t->path || (dir && !t->dir)) {
        lm_tokenizer_free(t);
        return lm_err(LM_ERR_OOM, "%s: out of memory", name);
    }
    cJSON *root = NULL;
    lm_status st = parse_json(name, data, len, &root);
    if (st == LM_OK) st = load(t, root);
    cJSON_Delete(root);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

lm_status tk_tokenizer_parse(const char *json, size_t len, const char *name, lm_tokenizer **out) {
    if (!json || !out) return lm_err(LM_ERR_INVALID_ARG, "tk_tokenizer_parse: NULL argument");
    return parse_tokenizer(name ? name : "(memory)", NULL, json, len, out);
}

lm_status lm_tokenizer_load(const char *path, lm_tokenizer **out) {
    if (!path || !out) return lm_err(LM_ERR_INVALID_ARG, "lm_tokenizer_load: NULL argument");
    *out = NULL;
    char *data = NULL, *dir = strdup(path);
    size_t len = 0;
    if (!dir) return lm_err(LM_ERR_OOM, "%s: out of memory", path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir ? 1 : 0] = 0;
    else strcpy(dir, ".");
    lm_status st = lm_read_file(path, TK_MAX_FILE, &data, &len);
    if (st == LM_OK) st = parse_tokenizer(path, dir, data, len, out);
    free(data);
    free(dir);
    return st;
}

void lm_tokenizer_free(lm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_norm; i++) tk_regex_free(&t->norm[i].re);
    for (int i = 0; i < t->n_pre; i++) tk_regex_free(&t->pre[i].re);
    for (int i = 0; i < t->n_dec; i++) tk_regex_free(&t->dec[i].re);
    free(t->norm);
    free(t->pre);
    free(t->dec);
    tk_trie *tries[2] = {&t->trie_raw, &t->trie_norm};
    for (int i = 0; i < 2; i++) {
        free(tries[i]->child);
        free(tries[i]->next);
        free(tries[i]->tok);
        free(tries[i]->byte);
    }
    free(t->added);
    free(t->post_prefix.v);
    free(t->post_suffix.v);
    lm_strmap_free(&t->vocab);
    lm_pairmap_free(&t->merges);
    free(t->tok_str);
    free(t->tok_len);
    free(t->tok_flags);
    lm_arena_free(&t->arena);
    free(t->path);
    free(t->dir);
    free(t);
}

int lm_tokenizer_vocab_size(const lm_tokenizer *t) { return t ? t->n_ids : 0; }
bool lm_tokenizer_id_valid(const lm_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && t->tok_str[id];
}
int32_t lm_tokenizer_bos(const lm_tokenizer *t) { return t ? t->bos : -1; }
int32_t lm_tokenizer_eos(const lm_tokenizer *t) { return t ? t->eos : -1; }

// ---------------------------------------------------------------- encoding --

// Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation.
static bool is_word_char(uint32_t cp) {
    if (cp == '_' || cp == 0x200C || cp == 0x200D) return true;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_ME) || c == UTF8PROC_CATEGORY_ND ||
           c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC;
}

static size_t prev_char(const char *s, size_t i) {  // start of the character before byte i
    do i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

// Longest added token of the trie that starts at s[i] (index into added), or
// -1; its length in *len.
static int match_at(const tk_trie *tr, const char *s, size_t n, size_t i, size_t *len) {
    int best = -1;
    int32_t k = tr->root[(uint8_t)s[i]];
    for (size_t j = i; k >= 0;) {
        if (tr->tok[k] >= 0) best = tr->tok[k], *len = j + 1 - i;
        if (++j == n) break;
        int32_t c = tr->child[k];
        while (c >= 0 && tr->byte[c] != (uint8_t)s[j]) c = tr->next[c];
        k = c;
    }
    return best;
}

// Splits s on the added tokens of tr (AddedVocabulary::find_matches): the
// leftmost-longest matches, honouring single_word, lstrip and rstrip. Pieces
// go to out; matched ones carry their id.
static lm_status split_added(const lm_tokenizer *t, const tk_trie *tr, const char *s, size_t n,
                             bool at_start, tk_splits *out) {
    size_t start_off = 0, i = 0;
    uint32_t cp;
    for (unsigned iter = 1; tr->n && i < n; iter++) {
        if (iter % 4096 == 0 && tk_budget_exceeded())
            return lm_err(LM_ERR_INVALID_ARG, "%s: matching the added tokens in this text takes more than the time "
                          "budget (tokens that are long repetitions of one another?)", t->path);
        size_t mlen = 0;
        int k = match_at(tr, s, n, i, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        const tk_added *a = &t->added[k];
        size_t ms = i, me = i + mlen;
        i = me;  // scanning resumes after the match, kept or not
        if (a->single_word) {
            bool word_before = ms > 0 && lm_utf8_next(s + prev_char(s, ms), ms - prev_char(s, ms), &cp) &&
                               is_word_char(cp);
            bool word_after = me < n && lm_utf8_next(s + me, n - me, &cp) && is_word_char(cp);
            if (word_before || word_after) continue;
        }
        if (a->lstrip) {
            size_t j = ms;
            while (j > 0) {
                size_t p = prev_char(s, j);
                if (!lm_utf8_next(s + p, j - p, &cp) || !lm_is_whitespace(cp)) break;
                j = p;
            }
            ms = j > start_off ? j : start_off;
        }
        if (a->rstrip) {
            int l;
            while (me < n && (l = lm_utf8_next(s + me, n - me, &cp)) && lm_is_whitespace(cp)) me += l;
            i = me;
        }
        if (ms > start_off && !tk_splits_add(out, s + start_off, ms - start_off, -1, at_start && start_off == 0))
            return LM_ERR_OOM;
        if (!tk_splits_add(out, s + ms, me - ms, a->id, at_start && ms == 0)) return LM_ERR_OOM;
        start_off = me;
    }
    if (start_off < n && !tk_splits_add(out, s + start_off, n - start_off, -1, at_start && start_off == 0))
        return LM_ERR_OOM;
    return LM_OK;
}

lm_status lm_tokenize(const lm_tokenizer *t, const char *text, size_t len, bool add_special,
                      int32_t **ids, size_t *n_ids) {
    if (!t || !ids || !n_ids || (!text && len)) return lm_err(LM_ERR_INVALID_ARG, "lm_tokenize: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    // BPE positions are int32: longer texts must be cut by the caller.
    if (len >= ((size_t)1 << 31) - 1)
        return lm_err(LM_ERR_INVALID_ARG, "text of %zu bytes is too long to tokenize at once (limit 2^31 - 2)", len);
    size_t bad = lm_utf8_invalid_at(text, len);
    if (bad != len) return lm_err(LM_ERR_INVALID_ARG, "text is not valid UTF-8 (byte %zu of %zu)", bad, len);

    tk_splits raw = {0}, norm = {0};
    lm_buf nb = {0};
    lm_ids out = {0};
    lm_status st = LM_OK;
    tk_budget_begin(len);
    // 1. added tokens in the raw text  2. normalize the rest, then added
    // tokens in the normalized text  3. pre-tokenize  4. BPE per piece
    if (len) st = split_added(t, &t->trie_raw, text, len, true, &raw);
    for (size_t i = 0; st == LM_OK && i < raw.n; i++) {
        const tk_split *x = &raw.v[i];
        const char *s = raw.buf.p + x->off;
        if (x->id >= 0) {
            if (!tk_splits_add(&norm, s, x->len, x->id, x->at_start)) st = LM_ERR_OOM;
            continue;
        }
        if ((st = tk_normalize(t, s, x->len, &nb))) break;
        if (nb.n) st = split_added(t, &t->trie_norm, nb.p, nb.n, x->at_start, &norm);
    }
    if (st == LM_OK) st = tk_pretokenize(t, &norm);
    for (size_t i = 0; st == LM_OK && add_special && i < t->post_prefix.n; i++)
        if (!lm_ids_push(&out, t->post_prefix.v[i])) st = LM_ERR_OOM;
    for (size_t i = 0; st == LM_OK && i < norm.n; i++) {
        const tk_split *x = &norm.v[i];
        if (x->id >= 0) st = lm_ids_push(&out, x->id) ? LM_OK : LM_ERR_OOM;
        else st = tk_bpe(t, norm.buf.p + x->off, x->len, &out);
    }
    for (size_t i = 0; st == LM_OK && add_special && i < t->post_suffix.n; i++)
        if (!lm_ids_push(&out, t->post_suffix.v[i])) st = LM_ERR_OOM;
    tk_budget_end();
    tk_splits_free(&raw);
    tk_splits_free(&norm);
    lm_buf_free(&nb);
    if (st != LM_OK) {
        free(out.v);
        return st;
    }
    if (!out.v && !(out.v = malloc(sizeof *out.v))) return lm_err(LM_ERR_OOM, "lm_tokenize: out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return LM_OK;
}
