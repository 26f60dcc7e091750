// File access shared by every loader. Inputs are opened without blocking and
// must be regular files: a FIFO, a device (/dev/zero) or a directory given as
// a model file, tokenizer or text must fail at once with a message that says
// what the path is, never hang or read without end.
#ifndef LM_UTIL_FILE_H
#define LM_UTIL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lightmoe.h"

// Opens path read-only; accepts only a regular file. On success *fd is a
// blocking descriptor and *size the file's size. On failure the message says
// why: no such file, permission denied, a directory, a FIFO, a device, a
// symlink loop, ...
lm_status lm_open_regular(const char *path, int *fd, uint64_t *size);

// As lm_open_regular, but a FIFO or a character device (a pipe, /dev/stdin)
// is accepted too, for inputs read as a stream with their own bounds
// (*size is 0 for those). Directories and sockets are still refused.
lm_status lm_open_stream(const char *path, int *fd, uint64_t *size);

// Reads a whole regular file (at most max_bytes, else an error naming the
// size and the limit) into a NUL-terminated malloc'ed buffer.
lm_status lm_read_file(const char *path, size_t max_bytes, char **buf, size_t *len);

// LM_OK if path is an existing directory we can list; else a message saying
// it does not exist, is not a directory, or cannot be read.
lm_status lm_check_dir(const char *path);

bool lm_file_exists(const char *path);  // a regular file (following symlinks)

// dir + "/" + name, malloc'ed (NULL with LM_ERR_OOM set on failure).
char *lm_path_join(const char *dir, const char *name);

// Bytes of memory the kernel says can be allocated without swapping
// (MemAvailable), 0 if unknown.
uint64_t lm_mem_available(void);

// LM_OK when `bytes` fit in available memory (with `headroom` as a fraction
// of it kept free); else LM_ERR_OOM with "<what> needs X but Y is available"
// so nothing is allocated that the kernel would later kill us for.
lm_status lm_mem_check(uint64_t bytes, double headroom, const char *what);

// Monotonic time in seconds.
double lm_now(void);

#endif
