#include "util/hashmap.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

// ----------------------------------------------------------------- hashes ---

struct lm_sm_entry {
    const char *key;  // NULL: empty slot
    uint32_t len, hash;
    int32_t val;
};

static uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

static size_t pow2_cap(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2) cap *= 2;  // load factor <= 1/2
    return cap;
}

bool lm_strmap_init(lm_strmap *m, size_t expected) {
    m->cap = pow2_cap(expected);
    m->n = 0;
    m->e = calloc(m->cap, sizeof *m->e);
    if (!m->e) lm_err(LM_ERR_OOM, "tokenizer: out of memory for a hash table");
    return m->e != NULL;
}

static bool strmap_grow(lm_strmap *m) {
    lm_strmap bigger = {calloc(m->cap * 2, sizeof *m->e), m->cap * 2, m->n};
    if (!bigger.e) {
        lm_err(LM_ERR_OOM, "tokenizer: out of memory for a hash table");
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].key) continue;
        size_t j = m->e[i].hash & (bigger.cap - 1);
        while (bigger.e[j].key) j = (j + 1) & (bigger.cap - 1);
        bigger.e[j] = m->e[i];
    }
    free(m->e);
    *m = bigger;
    return true;
}

bool lm_strmap_put(lm_strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && !strmap_grow(m)) return false;
    uint32_t h = hash_bytes(key, len);
    size_t i = h & (m->cap - 1);
    for (;; i = (i + 1) & (m->cap - 1)) {
        struct lm_sm_entry *e = &m->e[i];
        if (!e->key) {
            *e = (struct lm_sm_entry){key, (uint32_t)len, h, val};
            m->n++;
            return true;
        }
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->val = val;
            return true;
        }
    }
}

int32_t lm_strmap_get(const lm_strmap *m, const char *key, size_t len) {
    if (!m->e) return -1;
    uint32_t h = hash_bytes(key, len);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const struct lm_sm_entry *e = &m->e[i];
        if (!e->key) return -1;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) return e->val;
    }
}

void lm_strmap_free(lm_strmap *m) {
    free(m->e);
    *m = (lm_strmap){0};
}

struct lm_pm_entry {
    uint64_t key;
    int32_t rank;  // -1: empty slot
    int32_t new_id;
};

static size_t pair_slot(uint64_t key, size_t cap) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

bool lm_pairmap_init(lm_pairmap *m, size_t expected) {
    m->cap = pow2_cap(expected);
    m->n = 0;
    m->e = malloc(m->cap * sizeof *m->e);
    if (!m->e) {
        lm_err(LM_ERR_OOM, "tokenizer: out of memory for the merges table");
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) m->e[i].rank = -1;
    return true;
}

bool lm_pairmap_put(lm_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        lm_pairmap bigger;
        if (!lm_pairmap_init(&bigger, m->cap)) return false;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->e[i].rank < 0) continue;
            size_t j = pair_slot(m->e[i].key, bigger.cap);
            while (bigger.e[j].rank >= 0) j = (j + 1) & (bigger.cap - 1);
            bigger.e[j] = m->e[i];
        }
        bigger.n = m->n;
        free(m->e);
        *m = bigger;
    }
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = pair_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        struct lm_pm_entry *e = &m->e[i];
        if (e->rank < 0) {
            *e = (struct lm_pm_entry){key, rank, new_id};
            m->n++;
            return true;
        }
        if (e->key == key) {  // a repeated merge: the later one wins, as in tokenizers
            e->rank = rank;
            e->new_id = new_id;
            return true;
        }
    }
}

bool lm_pairmap_get(const lm_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *new_id) {
    if (!m->e) return false;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = pair_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        const struct lm_pm_entry *e = &m->e[i];
        if (e->rank < 0) return false;
        if (e->key == key) {
            *rank = e->rank;
            *new_id = e->new_id;
            return true;
        }
    }
}

void lm_pairmap_free(lm_pairmap *m) {
    free(m->e);
    *m = (lm_pairmap){0};
}

