#ifndef LM_UTIL_FILE_H
#define LM_UTIL_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "lightmoe.h"

// Reads a whole (small) file into a NUL-terminated malloc'ed buffer; refuses
// files over max_bytes so a wrong path to a huge file fails fast.
lm_status lm_read_file(const char *path, size_t max_bytes, char **buf, size_t *len);

bool lm_file_exists(const char *path);

// dir + "/" + name into out (returns false if it does not fit)
bool lm_path_join(char *out, size_t cap, const char *dir, const char *name);

// Monotonic time in seconds.
double lm_now(void);

#endif
