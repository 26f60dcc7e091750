// Checks on parsed JSON that cJSON does not make.
#ifndef LM_UTIL_JSON_H
#define LM_UTIL_JSON_H

#include <cjson/cJSON.h>

// The first key found twice in one object anywhere in the tree, or NULL.
// cJSON keeps both and lookups see the first, while Python's json (what
// wrote and reads these files) keeps the last: a silent disagreement, so
// loaders refuse such files.
const char *lm_json_duplicate_key(const cJSON *root);

#endif
