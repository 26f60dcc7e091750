#include "util/buf.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

// ---------------------------------------------------------------- buffers ---

bool lm_buf_reserve(lm_buf *b, size_t extra) {
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

bool lm_buf_put(lm_buf *b, const void *s, size_t n) {
    if (!lm_buf_reserve(b, n)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    return true;
}

void lm_buf_free(lm_buf *b) {
    free(b->p);
    *b = (lm_buf){0};
}

bool lm_ids_push(lm_ids *a, int32_t id) {
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

struct lm_arena_block {
    struct lm_arena_block *next;
    size_t used, cap;
    char data[];
};

char *lm_arena_dup(lm_arena *a, const char *s, size_t n) {
    struct lm_arena_block *b = a->head;
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

void lm_arena_free(lm_arena *a) {
    while (a->head) {
        struct lm_arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

