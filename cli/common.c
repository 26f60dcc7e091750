#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *cli_default_model(void) {
    static char path[PATH_MAX + 64];
    const char *env = getenv("LIGHTMOE_MODEL");
    if (env && *env) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;  // .../build
        snprintf(path, sizeof path, "%s/../models/sotu-moe", exe);
        static char real[PATH_MAX];
        if (access(path, R_OK) == 0) return realpath(path, real) ? real : path;
    }
    fprintf(stderr, "lightmoe: no -m given and the shipped model was not found at %s "
            "(set LIGHTMOE_MODEL or pass -m DIR)\n", n > 0 ? path : "models/sotu-moe");
    return NULL;
}

int cli_error(const char *cmd, lm_status st) {
    fprintf(stderr, "lightmoe %s: %s\n", cmd, lm_last_error());
    (void)st;
    return 1;
}

char *cli_tokenizer_path(const char *cmd, const char *dir) {
    size_t n = strlen(dir) + sizeof "/tokenizer.json";
    char *p = malloc(n);
    if (!p) {
        fprintf(stderr, "lightmoe %s: out of memory\n", cmd);
        return NULL;
    }
    snprintf(p, n, "%s%stokenizer.json", dir, n > sizeof "/tokenizer.json" && dir[strlen(dir) - 1] == '/' ? "" : "/");
    return p;
}

bool cli_model_opt(args *a, cli_model_opts *o) {
    if (arg_int(a, "--threads", "-t", 1, 4096, &o->threads)) return true;
    if (arg_flag(a, "--mmap", NULL)) return o->weights = LM_WEIGHTS_MMAP, true;
    if (arg_flag(a, "--no-mmap", NULL)) return o->weights = LM_WEIGHTS_COPY, true;
    if (arg_flag(a, "--verbose", "-v")) return o->verbose = true, true;
    return false;
}

int cli_load_model(const char *cmd, const char *dir, const char *synthetic, bool shapes_only,
                   const cli_model_opts *o, lm_model **out) {
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = o->threads;
    mp.weights = o->weights;
    lm_status st;
    if (synthetic) {
        lm_synthetic_params sp = lm_synthetic_default_params();
        sp.seed = o->seed;
        sp.shapes_only = shapes_only;
        size_t len = strlen(synthetic);
        char *cfg = malloc(len + 1);
        if (!cfg) {
            fprintf(stderr, "lightmoe %s: out of memory\n", cmd);
            return 1;
        }
        memcpy(cfg, synthetic, len + 1);
        char *colon = strrchr(cfg, ':');
        if (colon) {
            char *end;
            errno = 0;
            long n = strtol(colon + 1, &end, 10);
            if (errno || end == colon + 1 || *end || n < 1 || n > 1024) {
                fprintf(stderr, "lightmoe %s: --synthetic %s: layer count after ':' must be an integer in [1, 1024]\n",
                        cmd, synthetic);
                free(cfg);
                return EXIT_USAGE;
            }
            *colon = 0;
            sp.n_layers = (int)n;
        }
        sp.config_path = cfg;
        if (!shapes_only) fprintf(stderr, "building synthetic bf16 weights for %s ...\n", synthetic);
        st = lm_model_load_synthetic(&sp, &mp, out);
        free(cfg);
    } else {
        st = lm_model_load(dir, &mp, out);
    }
    if (st) return cli_error(cmd, st);
    lm_model_info mi;
    lm_model_get_info(*out, &mi);
    char b[32];
    if (!synthetic && o->verbose)
        fprintf(stderr, "%s: %s of weights %s\n", dir, lm_format_bytes((double)mi.bytes_weights, b, sizeof b),
                mi.weights_mmapped ? "mmap'ed from the checkpoint files" : "copied into huge-page memory");
    if (mi.n_unused_tensors && !o->quiet)
        fprintf(stderr, "lightmoe %s: warning: %s: %d tensor%s of the checkpoint %s not used by config.json "
                "(e.g. '%s'); check num_hidden_layers and the architecture\n", cmd, dir, mi.n_unused_tensors,
                mi.n_unused_tensors == 1 ? "" : "s", mi.n_unused_tensors == 1 ? "is" : "are", mi.unused_tensor);
    return 0;
}

FILE *cli_open_out(const char *cmd, const char *path) {
    if (!path || !strcmp(path, "-")) return stdout;
    FILE *f = fopen(path, "w");
    if (!f) fprintf(stderr, "lightmoe %s: %s: cannot open for writing: %s\n", cmd, path, strerror(errno));
    return f;
}

int cli_close_out(const char *cmd, FILE *f, const char *path) {
    if (!f) return 0;
    bool bad = fflush(f) != 0 || ferror(f);
    int e = errno;
    if (f != stdout && fclose(f) != 0 && !bad) bad = true, e = errno;
    if (bad) {
        fprintf(stderr, "lightmoe %s: writing %s failed: %s\n", cmd, f == stdout || !path ? "standard output" : path,
                strerror(e));
        return 1;
    }
    return 0;
}
