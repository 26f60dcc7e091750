#include "json.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char *lm_json_duplicate_key(const cJSON *node) {
    if (!node) return NULL;
    if (cJSON_IsObject(node)) {
        size_t n = 0;
        for (const cJSON *c = node->child; c; c = c->next) n++;
        if (n > 1) {
            // Sorted, so objects of 150k keys (a vocabulary) stay O(n log n).
            const char **keys = malloc(n * sizeof *keys);
            size_t k = 0;
            for (const cJSON *c = node->child; keys && c; c = c->next) keys[k++] = c->string ? c->string : "";
            const char *dup = NULL;
            if (keys) {
                qsort(keys, k, sizeof *keys, cmp_key);
                for (size_t i = 1; i < k && !dup; i++)
                    if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
            }
            free(keys);
            if (dup) return dup;
        }
    }
    for (const cJSON *c = (cJSON_IsObject(node) || cJSON_IsArray(node)) ? node->child : NULL; c; c = c->next) {
        const char *d = lm_json_duplicate_key(c);
        if (d) return d;
    }
    return NULL;
}

int lm_json_depth(const char *s, size_t n) {
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}
