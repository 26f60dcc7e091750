#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

// Large enough for a message naming three paths of PATH_MAX: the reason
// at the end of a message must never be cut off by a long path.
static _Thread_local char g_msg[16384];

lm_status lm_err(lm_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

lm_status lm_err_wrap(lm_status st, const char *fmt, ...) {
    char old[sizeof g_msg];
    memcpy(old, g_msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_msg, sizeof g_msg / 2, fmt, ap);  // context gets at most half the buffer
    va_end(ap);
    size_t at = n < 0 ? 0 : (size_t)n < sizeof g_msg / 2 ? (size_t)n : sizeof g_msg / 2 - 1;
    size_t room = sizeof g_msg - at - 1, len = strnlen(old, sizeof old - 1);
    const char sep[] = ": ";
    if (room >= 2) memcpy(g_msg + at, sep, 2), at += 2, room -= 2;
    if (len > room) len = room;
    memcpy(g_msg + at, old, len);
    g_msg[at + len] = 0;
    return st;
}

lm_status lm_err_append(lm_status st, const char *fmt, ...) {
    size_t at = strnlen(g_msg, sizeof g_msg - 1);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg + at, sizeof g_msg - at, fmt, ap);
    va_end(ap);
    return st;
}

void lm_err_clear(void) { g_msg[0] = 0; }

const char *lm_last_error(void) { return g_msg[0] ? g_msg : "no error"; }

const char *lm_status_str(lm_status st) {
    switch (st) {
    case LM_OK: return "ok";
    case LM_ERR_IO: return "I/O error";
    case LM_ERR_FORMAT: return "malformed input";
    case LM_ERR_UNSUPPORTED: return "unsupported";
    case LM_ERR_INVALID_ARG: return "invalid argument";
    case LM_ERR_OOM: return "out of memory";
    case LM_ERR_RANGE: return "out of range";
    case LM_ERR_NOT_FOUND: return "not found";
    case LM_ERR_NUMERIC: return "numeric error";
    case LM_ERR_DEVICE: return "device error";
    }
    return "unknown status";
}

void *lm_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) lm_err(LM_ERR_OOM, "out of memory allocating %zu bytes", n);
    return p;
}

void *lm_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) lm_err(LM_ERR_OOM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *lm_aligned_alloc(size_t align, size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, align, n ? n : align) != 0) {
        lm_err(LM_ERR_OOM, "out of memory allocating %zu bytes", n);
        return NULL;
    }
    return p;
}

void *lm_huge_alloc(size_t n) {
    void *p = lm_aligned_alloc((size_t)2 << 20, n);
    if (p) madvise(p, n, MADV_HUGEPAGE);
    return p;
}

char *lm_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = lm_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
