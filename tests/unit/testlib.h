// Minimal test harness: each test binary runs its TEST functions and prints
// one line per failure; exit status is the number of failed checks (capped).
#ifndef LM_TESTLIB_H
#define LM_TESTLIB_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tl_failed, tl_checks, tl_skipped;

// A check that cannot run here (reference data not fetched): said once per
// reason on a "SKIP:" line, which tests/run.sh reports; not a failure.
#define TL_SKIP(...)                                                             \
    do {                                                                         \
        tl_skipped++;                                                            \
        printf("SKIP: ");                                                        \
        printf(__VA_ARGS__);                                                     \
        putchar('\n');                                                          \
    } while (0)

// Exit status of a test binary none of whose checks could run.
#define TL_EXIT_SKIPPED 77

#define CHECK(cond)                                                              \
    do {                                                                         \
        tl_checks++;                                                             \
        if (!(cond)) {                                                           \
            tl_failed++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        tl_checks++;                                                             \
        if (!(cond)) {                                                           \
            tl_failed++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
        }                                                                        \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                    \
    do {                                                                         \
        double _a = (a), _b = (b);                                               \
        CHECK_MSG(fabs(_a - _b) <= (tol), "%g vs %g (tol %g)", _a, _b, (double)(tol)); \
    } while (0)

#define RUN(fn)                                                                  \
    do {                                                                         \
        int _before = tl_failed;                                                 \
        fn();                                                                    \
        printf("%s %s\n", tl_failed == _before ? "ok  " : "FAIL", #fn);          \
    } while (0)

// Deterministic test data: xorshift64; a test may set tl_rng to its own seed.
static uint64_t tl_rng = 0x9e3779b97f4a7c15ull;
static inline uint32_t tl_rnd32(void) {
    tl_rng ^= tl_rng << 13;
    tl_rng ^= tl_rng >> 7;
    tl_rng ^= tl_rng << 17;
    return (uint32_t)(tl_rng >> 16);
}
static inline float tl_rndf(void) { return (float)((int)(tl_rnd32() % 2000001) - 1000000) * 1e-6f; }  // [-1, 1]

static inline int tl_finish(void) {
    printf("%d checks, %d failed, %d skipped\n", tl_checks, tl_failed, tl_skipped);
    if (tl_failed) return 1;
    return tl_checks == 0 && tl_skipped ? TL_EXIT_SKIPPED : 0;
}

#endif
