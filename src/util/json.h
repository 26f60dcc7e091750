// Checks on parsed JSON that cJSON does not make.
#ifndef LM_UTIL_JSON_H
#define LM_UTIL_JSON_H

#include <cjson/cJSON.h>

// The first key found twice in one object anywhere in the tree, or NULL.
// cJSON keeps both and lookups see the first, while Python's json (what
// wrote and reads these files) keeps the last: a silent disagreement, so
// loaders refuse such files.
const char *lm_json_duplicate_key(const cJSON *root);

// Deepest nesting of [ and { in JSON text (outside strings). Parsing is
// recursive: loaders refuse texts deeper than LM_JSON_MAX_DEPTH before
// parsing, so a hostile file cannot exhaust a small stack.
#define LM_JSON_MAX_DEPTH 64
int lm_json_depth(const char *s, size_t n);

#endif
