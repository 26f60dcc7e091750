// Small, strict argument helpers for the CLI: every number is fully parsed
// and range-checked, so "-n -1" or "-n 12x" is a usage error, never a guess.
// Values may follow as the next argument or after '=' (--prompt=hi).
#ifndef LM_CLI_ARGS_H
#define LM_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#define EXIT_USAGE 2

typedef struct {
    int argc, i;
    char **argv;
    const char *cmd;
    bool failed;
} args;

// True if argv[i] is `flag` (or `alt`); then *val is the value (error if missing).
bool arg_val(args *a, const char *flag, const char *alt, const char **val);
bool arg_flag(args *a, const char *flag, const char *alt);
bool arg_int(args *a, const char *flag, const char *alt, long lo, long hi, int *out);
bool arg_u64(args *a, const char *flag, const char *alt, uint64_t *out);
bool arg_float(args *a, const char *flag, const char *alt, double lo, double hi, float *out);
// A size in bytes with an optional decimal suffix: 512M, 2G, 1.5T (or k).
bool arg_size(args *a, const char *flag, const char *alt, double *out);
void arg_fail(args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// argv[i] matched no option: "unknown option", or for a bare word the hint
// (e.g. how to pass a prompt) when one is given.
void arg_unknown(args *a, const char *positional_hint);

#endif
