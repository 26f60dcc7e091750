#ifndef LM_UTIL_HASH_H
#define LM_UTIL_HASH_H

#include <stdint.h>

#define LM_GOLDEN64 0x9e3779b97f4a7c15ull

// splitmix64 step: the i-th output of a splitmix64 stream seeded with s is
// lm_mix64(s + i * LM_GOLDEN64). Used for seeding RNGs and for synthetic
// weights that depend only on (seed, offset).
static inline uint64_t lm_mix64(uint64_t x) {
    x += LM_GOLDEN64;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

#endif
