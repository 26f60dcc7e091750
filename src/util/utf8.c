#include "util/utf8.h"

#include <stdlib.h>
#include <string.h>

#include "lightmoe.h"
#include "util/err.h"

// ------------------------------------------------------------------ UTF-8 ---

int lm_utf8_next(const char *str, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;  // no overlong forms
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
    } else
        return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t v = c & (0x7F >> len);
    for (int i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return len;
}

int lm_utf8_step(const char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    int l = lm_utf8_next(s, n, cp);
    if (l) return l;
    *cp = 0xFFFD;
    return 1;
}

size_t lm_utf8_invalid_at(const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        int l = lm_utf8_next(s + i, n - i, &cp);
        if (!l) return i;
        i += l;
    }
    return n;
}

bool lm_utf8_valid(const char *s, size_t n) { return lm_utf8_invalid_at(s, n) == n; }

int lm_utf8_encode(uint32_t cp, char t[4]) {
    if (cp < 0x80) {
        t[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    t[0] = (char)(0xF0 | (cp >> 18));
    t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    t[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool lm_utf8_put(lm_buf *b, uint32_t cp) {
    char t[4];
    return lm_buf_put(b, t, (size_t)lm_utf8_encode(cp, t));
}

// Bytes of the invalid sequence starting at s: the lead byte plus the
// continuation bytes that still formed a valid prefix (Unicode's "maximal
// subpart", what Rust replaces with one U+FFFD).
static size_t invalid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    size_t k = 1;
    if (k < n && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k <= (size_t)need && k < n && (s[k] & 0xC0) == 0x80) k++;
    }
    return k;
}

bool lm_utf8_lossy(lm_buf *out, const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        size_t j = i;  // copy the longest valid run at once
        while (j < n) {
            int l = lm_utf8_next(s + j, n - j, &cp);
            if (!l) break;
            j += l;
        }
        if (!lm_buf_put(out, s + i, j - i)) return false;
        if (j == n) break;
        if (!lm_buf_put(out, "\xEF\xBF\xBD", 3)) return false;
        i = j + invalid_len((const unsigned char *)s + j, n - j);
    }
    return true;
}

bool lm_is_whitespace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

