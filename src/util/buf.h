// Growable containers shared by the tokenizer and the engine: a byte
// string, an int32 vector and a bump allocator for many small strings.
#ifndef LM_UTIL_BUF_H
#define LM_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_buf {  // growable byte string (not NUL-terminated unless asked)
    char *p;
    size_t n, cap;
} lm_buf;

bool lm_buf_reserve(lm_buf *b, size_t extra);  // false (and LM_ERR_OOM set) on failure
bool lm_buf_put(lm_buf *b, const void *s, size_t n);
void lm_buf_free(lm_buf *b);

typedef struct lm_ids {
    int32_t *v;
    size_t n, cap;
} lm_ids;

bool lm_ids_push(lm_ids *a, int32_t id);

// Bump allocator for the many small strings of a vocabulary.
typedef struct lm_arena {
    struct lm_arena_block *head;
} lm_arena;

char *lm_arena_dup(lm_arena *a, const char *s, size_t n);  // NUL-terminated copy
void lm_arena_free(lm_arena *a);

#endif
