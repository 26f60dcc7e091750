// Open-addressing hash tables: string -> int32 (vocabularies) and
// (int32, int32) -> (rank, id) (BPE merges).
#ifndef LM_UTIL_HASHMAP_H
#define LM_UTIL_HASHMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_strmap {  // string -> int32, open addressing; keys not owned
    struct lm_sm_entry *e;
    size_t cap, n;
} lm_strmap;

bool lm_strmap_init(lm_strmap *m, size_t expected);
bool lm_strmap_put(lm_strmap *m, const char *key, size_t len, int32_t val);  // overwrites
int32_t lm_strmap_get(const lm_strmap *m, const char *key, size_t len);    // -1: missing
void lm_strmap_free(lm_strmap *m);

typedef struct lm_pairmap {  // (left id, right id) -> (merge rank, merged id)
    struct lm_pm_entry *e;
    size_t cap, n;
} lm_pairmap;

bool lm_pairmap_init(lm_pairmap *m, size_t expected);
bool lm_pairmap_put(lm_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
bool lm_pairmap_get(const lm_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *new_id);
void lm_pairmap_free(lm_pairmap *m);

#endif
