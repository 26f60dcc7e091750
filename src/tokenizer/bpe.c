// The BPE model: one pre-tokenized piece of text -> token ids, exactly as
// tokenizers' BPE::merge_word + Word::merge_all (without dropout): start from
// one symbol per character, then repeatedly apply the lowest-rank merge among
// adjacent pairs (leftmost first on ties), using a binary heap with lazy
// invalidation so long inputs stay O(n log n).
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"

typedef struct sym {
    int32_t id;
    int32_t prev, next;  // -1: none
    uint32_t len;        // bytes covered; 0 once merged into its left neighbour
} sym;

typedef struct merge {
    int32_t rank, pos, new_id;
} merge;

typedef struct heap {
    merge *v;
    size_t n, cap;
} heap;

static bool before(const merge *a, const merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static bool heap_push(heap *h, merge m) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        merge *v = realloc(h->v, cap * sizeof *v);
        if (!v) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory in BPE");
            return false;
        }
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&m, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = m;
    return true;
}

static merge heap_pop(heap *h) {
    merge top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c])) c++;
        if (!before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct word {
    sym *v;
    size_t n, cap;
} word;

static bool word_add(word *w, int32_t id, uint32_t len) {
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        sym *v = realloc(w->v, cap * sizeof *v);
        if (!v) {
            lm_err(LM_ERR_OOM, "tokenizer: out of memory in BPE");
            return false;
        }
        w->v = v;
        w->cap = cap;
    }
    int32_t i = (int32_t)w->n;
    w->v[w->n++] = (sym){id, i - 1, -1, len};
    if (i > 0) w->v[i - 1].next = i;
    return true;
}

// Builds the initial symbols (BPE::merge_word): each character's token, or
// its <0xNN> byte tokens with byte_fallback, or the unknown token (runs of
// unknowns fused into one with fuse_unk), or nothing when there is no unk.
static lm_status initial_symbols(const lm_tokenizer *t, const char *s, size_t n, word *w) {
    lm_buf key = {0};
    lm_status st = LM_OK;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    size_t pre_n = t->subword_prefix ? strlen(t->subword_prefix) : 0;
    size_t suf_n = t->word_suffix ? strlen(t->word_suffix) : 0;
    for (size_t i = 0; i < n && st == LM_OK;) {
        uint32_t cp;
        int l = lm_utf8_next(s + i, n - i, &cp);
        if (l == 0) l = 1;  // cannot happen: input is validated
        bool first = i == 0, last = i + l == n;
        const char *k = s + i;
        size_t kn = (size_t)l;
        if ((!first && pre_n) || (last && suf_n)) {
            key.n = 0;
            if ((!first && !lm_buf_put(&key, t->subword_prefix, pre_n)) ||
                !lm_buf_put(&key, s + i, l) || (last && !lm_buf_put(&key, t->word_suffix, suf_n))) {
                st = LM_ERR_OOM;
                break;
            }
            k = key.p;
            kn = key.n;
        }
        i += l;
        int32_t id = lm_strmap_get(&t->vocab, k, kn);
        if (id >= 0) {
            if (unk_id >= 0) {
                if (!word_add(w, unk_id, unk_len)) st = LM_ERR_OOM;
                unk_id = -1;
            }
            if (!word_add(w, id, (uint32_t)l)) st = LM_ERR_OOM;
            continue;
        }
        if (t->byte_fallback) {
            bool all = true;
            for (size_t j = 0; j < kn; j++) all = all && t->byte_tok[(unsigned char)k[j]] >= 0;
            if (all) {
                // tokenizers does not flush a pending unk here; it stays pending
                for (size_t j = 0; j < kn && st == LM_OK; j++)
                    if (!word_add(w, t->byte_tok[(unsigned char)k[j]], 1)) st = LM_ERR_OOM;
                continue;
            }
        }
        if (t->unk_id < 0) continue;  // no unknown token: the character is dropped
        if (unk_id >= 0 && t->fuse_unk) {
            unk_len += (uint32_t)l;
        } else {
            if (unk_id >= 0 && !word_add(w, unk_id, unk_len)) st = LM_ERR_OOM;
            unk_id = t->unk_id;
            unk_len = (uint32_t)l;
        }
    }
    if (st == LM_OK && unk_id >= 0 && !word_add(w, unk_id, unk_len)) st = LM_ERR_OOM;
    lm_buf_free(&key);
    return st;
}

static lm_status merge_all(const lm_tokenizer *t, word *w) {
    heap h = {0};
    int32_t rank, new_id;
    for (size_t i = 0; i + 1 < w->n; i++)
        if (lm_pairmap_get(&t->merges, w->v[i].id, w->v[i + 1].id, &rank, &new_id) &&
            !heap_push(&h, (merge){rank, (int32_t)i, new_id}))
            goto oom;
    while (h.n) {
        merge top = heap_pop(&h);
        sym *cur = &w->v[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        int32_t rpos = cur->next;
        sym right = w->v[rpos];
        // skip stale entries: the pair at pos changed since it was queued
        if (!lm_pairmap_get(&t->merges, cur->id, right.id, &rank, &new_id) || new_id != top.new_id)
            continue;
        cur->id = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        w->v[rpos].len = 0;  // the right symbol is gone
        if (right.next >= 0) w->v[right.next].prev = top.pos;
        if (cur->prev >= 0 &&
            lm_pairmap_get(&t->merges, w->v[cur->prev].id, cur->id, &rank, &new_id) &&
            !heap_push(&h, (merge){rank, cur->prev, new_id}))
            goto oom;
        if (cur->next >= 0 &&
            lm_pairmap_get(&t->merges, cur->id, w->v[cur->next].id, &rank, &new_id) &&
            !heap_push(&h, (merge){rank, top.pos, new_id}))
            goto oom;
    }
    free(h.v);
    return LM_OK;
oom:
    free(h.v);
    return LM_ERR_OOM;
}

lm_status tk_bpe(const lm_tokenizer *t, const char *s, size_t n, lm_ids *out) {
    if (n == 0) return LM_OK;
    if (t->ignore_merges) {  // a piece that is itself a token is taken whole
        int32_t id = lm_strmap_get(&t->vocab, s, n);
        if (id >= 0) return lm_ids_push(out, id) ? LM_OK : LM_ERR_OOM;
    }
    word w = {0};
    lm_status st = initial_symbols(t, s, n, &w);
    if (st == LM_OK) st = merge_all(t, &w);
    for (size_t i = 0; st == LM_OK && i < w.n; i++)
        if (w.v[i].len && !lm_ids_push(out, w.v[i].id)) st = LM_ERR_OOM;
    free(w.v);
    return st;
}
