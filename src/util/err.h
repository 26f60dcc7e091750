// Error reporting shared by every layer: functions return an lm_status and
// leave a human-readable message (naming the file and the problem) in a
// thread-local buffer, read back with lm_last_error(). The library never exits.
#ifndef LM_UTIL_ERR_H
#define LM_UTIL_ERR_H

#include "lightmoe.h"

// Sets the thread's last error message and returns `st`, so callers can write
//   return lm_err(LM_ERR_FORMAT, "%s: bad header", path);
lm_status lm_err(lm_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Prefixes the current message with more context ("loading X: <old message>").
lm_status lm_err_wrap(lm_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Appends text to the current message (advice: " (use --mmap)").
lm_status lm_err_append(lm_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void lm_err_clear(void);

// Allocation helpers: return NULL and set LM_ERR_OOM with a message on failure.
void *lm_malloc(size_t n);
void *lm_calloc(size_t count, size_t size);
void *lm_aligned_alloc(size_t align, size_t n);  // free with free()
// 2 MiB-aligned and advised onto transparent huge pages: for big buffers read
// at memory bandwidth, where 4 KiB pages cost TLB misses (free with free()).
void *lm_huge_alloc(size_t n);
char *lm_strdup(const char *s);

// Checked size arithmetic: returns false on overflow.
static inline int lm_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

#endif
