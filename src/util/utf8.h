// Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and the few
// Unicode properties the tokenizer and text handling need.
#ifndef LM_UTIL_UTF8_H
#define LM_UTIL_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

// Decodes one strict UTF-8 character at s (n bytes available): returns its
// length and sets *cp, or 0 if the bytes there are not valid UTF-8.
int lm_utf8_next(const char *s, size_t n, uint32_t *cp);
// As lm_utf8_next, but an invalid byte reads as one U+FFFD character, so
// loops over text always advance (n > 0 gives a length >= 1).
int lm_utf8_step(const char *s, size_t n, uint32_t *cp);
bool lm_utf8_valid(const char *s, size_t n);
size_t lm_utf8_invalid_at(const char *s, size_t n);  // offset of the first invalid byte, n if none
int lm_utf8_encode(uint32_t cp, char out[4]);  // returns the length
bool lm_utf8_put(lm_buf *b, uint32_t cp);
// Rust's String::from_utf8_lossy: each maximal invalid subsequence -> U+FFFD.
bool lm_utf8_lossy(lm_buf *out, const char *s, size_t n);
bool lm_is_whitespace(uint32_t cp);  // Rust char::is_whitespace (White_Space)

#endif
