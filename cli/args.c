#include "args.h"

#include <ctype.h>
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

// argv[i] is `name`, or `name=value` (then *inline_val points at value).
static bool matches(const char *s, const char *name, const char **inline_val) {
    size_t n = strlen(name);
    if (strncmp(s, name, n) != 0) return false;
    if (s[n] == 0) return *inline_val = NULL, true;
    if (s[n] == '=' && name[0] == '-' && name[1] == '-') return *inline_val = s + n + 1, true;
    return false;
}

static bool is(const args *a, const char *flag, const char *alt, const char **inline_val) {
    const char *s = a->argv[a->i];
    return matches(s, flag, inline_val) || (alt && matches(s, alt, inline_val));
}

bool arg_flag(args *a, const char *flag, const char *alt) {
    const char *v;
    if (!is(a, flag, alt, &v)) return false;
    if (v) arg_fail(a, "%s takes no value", flag);
    return true;
}

bool arg_val(args *a, const char *flag, const char *alt, const char **val) {
    const char *v;
    if (!is(a, flag, alt, &v)) return false;
    if (v) {
        *val = v;
        return true;
    }
    if (a->i + 1 >= a->argc) {
        arg_fail(a, "%s needs a value", a->argv[a->i]);
        *val = NULL;
        return true;
    }
    *val = a->argv[++a->i];
    return true;
}

// strtol and friends skip leading whitespace and take "-1" as 2^64-1 for
// unsigned: accept only a number that starts right away.
static bool starts_number(const char *v, bool sign) {
    return isdigit((unsigned char)v[0]) || (sign && (v[0] == '-' || v[0] == '+' || v[0] == '.'));
}

bool arg_int(args *a, const char *flag, const char *alt, long lo, long hi, int *out) {
    const char *v;
    if (!arg_val(a, flag, alt, &v)) return false;
    if (!v) return true;
    if (!starts_number(v, true)) {
        arg_fail(a, "%s: '%s' is not an integer", flag, v);
        return true;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || (errno && errno != ERANGE)) arg_fail(a, "%s: '%s' is not an integer", flag, v);
    else if (errno == ERANGE || x < lo || x > hi) arg_fail(a, "%s: %s is out of range [%ld, %ld]", flag, v, lo, hi);
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
    if (end == v || *end || !starts_number(v, false)) arg_fail(a, "%s: '%s' is not a non-negative integer", flag, v);
    else if (errno == ERANGE) arg_fail(a, "%s: %s is out of range [0, 2^64 - 1]", flag, v);
    else if (errno) arg_fail(a, "%s: '%s' is not a non-negative integer", flag, v);
    else *out = x;
    return true;
}

bool arg_float(args *a, const char *flag, const char *alt, double lo, double hi, float *out) {
    const char *v;
    if (!arg_val(a, flag, alt, &v)) return false;
    if (!v) return true;
    if (!starts_number(v, true)) {
        arg_fail(a, "%s: '%s' is not a number", flag, v);
        return true;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    // ERANGE on underflow is fine (1e-39 is a usable float); overflow is not.
    if ((errno && fabs(x) >= 1) || end == v || *end || !isfinite(x)) arg_fail(a, "%s: '%s' is not a number", flag, v);
    else if (x < lo || x > hi) arg_fail(a, "%s: %g is out of range [%g, %g]", flag, x, lo, hi);
    else *out = (float)x;
    return true;
}

void arg_unknown(args *a, const char *positional_hint) {
    const char *s = a->argv[a->i];
    if (s[0] == '-' && s[1]) arg_fail(a, "unknown option '%s'", s);
    else if (positional_hint) arg_fail(a, "unexpected argument '%s': %s", s, positional_hint);
    else arg_fail(a, "unexpected argument '%s'", s);
}

bool arg_size(args *a, const char *flag, const char *alt, double *out) {
    const char *v;
    if (!arg_val(a, flag, alt, &v)) return false;
    if (!v) return true;
    char *end;
    errno = 0;
    double x = starts_number(v, false) ? strtod(v, &end) : -1;
    double mult = 1;
    if (x >= 0 && *end) {
        switch (*end) {
        case 'k': case 'K': mult = 1e3; break;
        case 'm': case 'M': mult = 1e6; break;
        case 'g': case 'G': mult = 1e9; break;
        case 't': case 'T': mult = 1e12; break;
        default: mult = 0;
        }
        if (mult && end[1] && !((end[1] == 'B' || end[1] == 'b') && !end[2])) mult = 0;
    }
    if (x < 0 || errno || !isfinite(x) || !mult || x * mult < 1)
        arg_fail(a, "%s: '%s' is not a size (a number of bytes, or with a suffix: 512M, 2G)", flag, v);
    else *out = x * mult;
    return true;
}
