#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "util/file.h"

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
    if (lm_check_dir(dir)) {  // say the directory is wrong, not that a file in it is missing
        fprintf(stderr, "lightmoe %s: %s\n", cmd, lm_last_error());
        return NULL;
    }
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
    const char *v;
    if (arg_val(a, "--kv", NULL, &v)) {
        if (v && !strcmp(v, "bf16")) o->kv_type = LM_KV_BF16;
        else if (v && !strcmp(v, "f32")) o->kv_type = LM_KV_F32;
        else if (v) arg_fail(a, "--kv: '%s' is not bf16 or f32", v);
        return true;
    }
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
            if (errno || end == colon + 1 || *end || n < 1 || n > 1024 || !isdigit((unsigned char)colon[1])) {
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

static bool same_file(const struct stat *a, const char *path) {
    struct stat b;
    return stat(path, &b) == 0 && a->st_dev == b.st_dev && a->st_ino == b.st_ino;
}

int cli_out_check(const char *cmd, const char *path, const char *dir, const char *const *inputs, int n_inputs) {
    struct stat out;
    if (!path || !strcmp(path, "-") || stat(path, &out) != 0 || !S_ISREG(out.st_mode)) return 0;
    const char *hit = NULL;
    for (int i = 0; i < n_inputs && !hit; i++)
        if (inputs[i] && strcmp(inputs[i], "-") && same_file(&out, inputs[i])) hit = inputs[i];
    DIR *d = dir ? opendir(dir) : NULL;
    char *p = NULL;
    for (struct dirent *e; d && !hit && (e = readdir(d));) {
        free(p);
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        if (!(p = malloc(n))) break;
        snprintf(p, n, "%s/%s", dir, e->d_name);
        if (same_file(&out, p)) hit = p;
    }
    if (d) closedir(d);
    if (hit) fprintf(stderr, "lightmoe %s: --out %s is one of the inputs (%s): refusing to overwrite it\n", cmd, path, hit);
    free(p);
    return hit ? 1 : 0;
}

// The temporary output being written, removed if the run is interrupted.
static char *volatile g_tmp_path;

static void on_interrupt(int sig) {
    char *p = g_tmp_path;
    if (p) unlink(p);
    signal(sig, SIG_DFL);
    raise(sig);
}

int cli_out_open(const char *cmd, const char *path, cli_out *o) {
    *o = (cli_out){stdout, path, NULL, NULL};
    if (!path || !strcmp(path, "-")) return 0;
    struct stat sb, lsb;
    bool exists = stat(path, &sb) == 0;
    if (lstat(path, &lsb) == 0 && S_ISLNK(lsb.st_mode)) {
        // Replace the file the link points at, not the link.
        char *real = exists ? realpath(path, NULL) : NULL;
        if (!real) {
            fprintf(stderr, "lightmoe %s: --out %s is a symbolic link to a file that does not exist\n", cmd, path);
            return 1;
        }
        o->real = real;
        path = real;
    }
    if (exists && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "lightmoe %s: --out %s is a directory\n", cmd, o->path);
        cli_out_abort(o);
        return 1;
    }
    if (exists && !S_ISREG(sb.st_mode)) {  // a device or a FIFO: write to it directly
        // Without blocking: a FIFO nobody reads would hang in open().
        int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
            fprintf(stderr, "lightmoe %s: %s: cannot open for writing: %s\n", cmd, o->path,
                    errno == ENXIO ? "a FIFO that nobody reads" : strerror(errno));
            if (fd >= 0) close(fd);
            cli_out_abort(o);
            return 1;
        }
        return 0;
    }
    size_t n = strlen(path) + sizeof ".tmp-XXXXXX";
    if (!(o->tmp = malloc(n))) {
        fprintf(stderr, "lightmoe %s: out of memory\n", cmd);
        return 1;
    }
    snprintf(o->tmp, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        fprintf(stderr, "lightmoe %s: %s: cannot open for writing: %s\n", cmd, o->path, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        cli_out_abort(o);
        return 1;
    }
    // mkstemp makes it 0600: give it the mode the file has, or a new file would get.
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, exists ? sb.st_mode & 07777 : 0666 & ~um);
    g_tmp_path = o->tmp;
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    signal(SIGHUP, on_interrupt);
    if (!(o->f = fdopen(fd, "w"))) {
        fprintf(stderr, "lightmoe %s: %s: %s\n", cmd, path, strerror(errno));
        close(fd);
        cli_out_abort(o);
        return 1;
    }
    return 0;
}

void cli_out_abort(cli_out *o) {
    if (o->f && o->f != stdout) fclose(o->f);
    if (o->tmp) unlink(o->tmp);
    if (g_tmp_path == o->tmp) g_tmp_path = NULL;
    free(o->tmp);
    free(o->real);
    *o = (cli_out){0};
}

int cli_out_commit(const char *cmd, cli_out *o) {
    if (!o->f) return 0;
    bool bad = fflush(o->f) != 0 || ferror(o->f);
    int e = errno;
    if (o->f != stdout) {
        if (fclose(o->f) != 0 && !bad) bad = true, e = errno;
        o->f = NULL;
    }
    const char *name = o->path && strcmp(o->path, "-") ? o->path : "standard output";
    if (!bad && o->tmp && rename(o->tmp, o->real ? o->real : o->path) != 0) bad = true, e = errno;
    if (bad) {
        fprintf(stderr, "lightmoe %s: writing %s failed: %s\n", cmd, name, strerror(e));
        cli_out_abort(o);
        return 1;
    }
    if (g_tmp_path == o->tmp) g_tmp_path = NULL;
    free(o->tmp);
    free(o->real);
    *o = (cli_out){0};
    return 0;
}
