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

bool cli_model_opt(args *a, cli_model_opts *o) {
    if (arg_int(a, "--threads", "-t", 1, 1024, &o->threads)) return true;
    if (arg_flag(a, "--mmap", NULL)) return o->weights = LM_WEIGHTS_MMAP, true;
    if (arg_flag(a, "--no-mmap", NULL)) return o->weights = LM_WEIGHTS_COPY, true;
    return false;
}

int cli_load_model(const char *cmd, const char *dir, const char *synthetic, const cli_model_opts *o,
                   lm_model **out) {
    lm_model_params mp = lm_model_default_params();
    mp.n_threads = o->threads;
    mp.weights = o->weights;
    lm_status st;
    if (synthetic) {
        lm_synthetic_params sp = lm_synthetic_default_params();
        sp.seed = o->seed;
        char cfg[PATH_MAX];
        snprintf(cfg, sizeof cfg, "%s", synthetic);
        char *colon = strrchr(cfg, ':');
        if (colon) {
            char *end;
            long n = strtol(colon + 1, &end, 10);
            if (end == colon + 1 || *end || n < 1 || n > 1024) {
                fprintf(stderr, "lightmoe %s: --synthetic %s: layer count after ':' must be an integer in [1, 1024]\n",
                        cmd, synthetic);
                return EXIT_USAGE;
            }
            *colon = 0;
            sp.n_layers = (int)n;
        }
        sp.config_path = cfg;
        fprintf(stderr, "building synthetic bf16 weights for %s ...\n", synthetic);
        st = lm_model_load_synthetic(&sp, &mp, out);
    } else {
        st = lm_model_load(dir, &mp, out);
    }
    if (st) return cli_error(cmd, st);
    lm_model_info mi;
    lm_model_get_info(*out, &mi);
    if (!synthetic) {
        double b = (double)mi.bytes_weights;
        fprintf(stderr, "%s: %.1f %s of weights %s\n", dir, b >= 1e9 ? b / 1e9 : b / 1e6, b >= 1e9 ? "GB" : "MB",
                mi.weights_mmapped ? "mmap'ed from the checkpoint files" : "copied into huge-page memory");
    }
    return 0;
}
