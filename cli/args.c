#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void arg_fail(args *a, const char *fmt, ...) {
    if (a->failed) return;
    a->failed = true;
    fprintf(stderr, "lightmoe %s: ", a->cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'lightmoe %s --help')\n", a->cmd);
}

static bool is(const args *a, const char *flag, const char *alt) {
    const char *s = a->argv[a->i];
    return strcmp(s, flag) == 0 || (alt && strcmp(s, alt) == 0);
}

bool arg_flag(args *a, const char *flag, const char *alt) { return is(a, flag, alt); }

bool arg_val(args *a, const char *flag, const char *alt, const char **val) {
    if (!is(a, flag, alt)) return false;
    if (a->i + 1 >= a->argc) {
        arg_fail(a, "%s needs a value", a->argv[a->i]);
        *val = NULL;
        return true;
    }
    *val = a->argv[++a->i];
    return true;
}

bool arg_int(args *a, const char *flag, const char *alt, long lo, long hi, int *out) {
    const char *v;
    if (!arg_val(a, flag, alt, &v)) return false;
    if (!v) return true;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end) arg_fail(a, "%s: '%s' is not an integer", flag, v);
    else if (x < lo || x > hi) arg_fail(a, "%s: %ld is out of range [%ld, %ld]", flag, x, lo, hi);
    else *out = (int)x;
    return true;
}

bool arg_u64(args *a, const char *flag, const char *alt, uint64_t *out) {
    const char *v;
    if (!arg_val(a, flag, alt, &v)) return false;
    if (!v) return true;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-') arg_fail(a, "%s: '%s' is not a non-negative integer", flag, v);
    else *out = x;
    return true;
}

bool arg_float(args *a, const char *flag, const char *alt, double lo, double hi, float *out) {
    const char *v;
    if (!arg_val(a, flag, alt, &v)) return false;
    if (!v) return true;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) arg_fail(a, "%s: '%s' is not a number", flag, v);
    else if (x < lo || x > hi) arg_fail(a, "%s: %g is out of range [%g, %g]", flag, x, lo, hi);
    else *out = (float)x;
    return true;
}
