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

#include <cjson/cJSON.h>

#include "cli.h"
#include "model/model.h"  // which layers are MoE: not in the public lm_model_info
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
    if (arg_flag(a, "--no-graphs", NULL)) return o->no_graphs = true, true;
    if (arg_size(a, "--gpu-mem", NULL, &o->gpu_mem)) return true;
    const char *v;
    if (arg_val(a, "--kv", NULL, &v)) {
        if (v && !strcmp(v, "bf16")) o->kv_type = LM_KV_BF16;
        else if (v && !strcmp(v, "f32")) o->kv_type = LM_KV_F32;
        else if (v) arg_fail(a, "--kv: '%s' is not bf16 or f32", v);
        return true;
    }
    if (arg_val(a, "--device", NULL, &v)) {
        if (v && (!strcmp(v, "cpu") || !strcmp(v, "cuda"))) o->device = v;
        else if (v) arg_fail(a, "--device: '%s' is not cpu or cuda", v);
        return true;
    }
    return false;
}

void cli_kv_pages(const lm_model *model, lm_context_params *cp, double kv_mem) {
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    double page_bytes = 2.0 * LM_KV_PAGE * mi.n_kv_heads * mi.head_dim * (cp->kv_type == LM_KV_F32 ? 4 : 2) * mi.n_layers;
    double full = (double)cp->n_seq * lm_kv_pages_for(cp->n_ctx);
    double budget = kv_mem;
    if (budget <= 0) {
        lm_context_params one = *cp;
        one.n_pages = 1;
        lm_mem_plan pl;
        if (cp->executor && !strcmp(cp->executor, "cuda") && lm_context_mem_plan(model, &one, &pl) == LM_OK)
            budget = 0.9 * (pl.available - (pl.total - pl.kv));
        else {
            uint64_t avail = lm_mem_available();
            budget = avail ? avail / 4.0 : 1e9;
        }
    }
    int floor_pages = lm_kv_pages_for(cp->n_ctx < 4096 ? cp->n_ctx : 4096);
    double pages = full * page_bytes <= budget ? full : budget / page_bytes;
    cp->n_pages = pages < floor_pages ? floor_pages : pages > 1 << 30 ? 1 << 30 : (int)pages;
}

void cli_mem_report(const char *cmd, const lm_model *model, const lm_context_params *cp, const lm_context *ctx,
                    bool verbose) {
    lm_mem_plan pl;
    if (lm_context_mem_plan(model, cp, &pl) != LM_OK || (!pl.gpu && !verbose)) return;
    char w[32], k[32], a[32], x[32], t[32], f[32], d[32];
    fprintf(stderr, "%s: %s memory: weights %s + KV cache %s (%d pages of %d tokens) + activations %s + scratch %s = "
            "%s planned, of %s %s%s\n", cmd, pl.gpu ? "GPU" : "host", lm_format_bytes(pl.weights, w, sizeof w),
            lm_format_bytes(pl.kv, k, sizeof k), cp->n_pages, LM_KV_PAGE, lm_format_bytes(pl.activations, a, sizeof a),
            lm_format_bytes(pl.scratch, x, sizeof x), lm_format_bytes(pl.total, t, sizeof t),
            lm_format_bytes(pl.available, f, sizeof f), pl.gpu ? "free" : "available",
            pl.gpu && cp->gpu_mem > 0 ? " (--gpu-mem)" : "");
    if (ctx && pl.gpu) {
        lm_mem_used mu;
        lm_context_mem_used(ctx, &mu);
        fprintf(stderr, "%s: GPU memory allocated: %s; %d CUDA graph%s kept, %s\n", cmd,
                lm_format_bytes(mu.allocated, d, sizeof d), mu.graphs, mu.graphs == 1 ? "" : "s",
                lm_format_bytes(mu.graph_bytes, f, sizeof f));
    }
}

const char *cli_device(const char *cmd, const cli_model_opts *o) {
    char name[256];
    int n = lm_cuda_devices(name, sizeof name);
    const char *d = o->device ? o->device : n > 0 ? "cuda" : "cpu";
    if (!strcmp(d, "cuda") && n > 0) fprintf(stderr, "%s: running on the GPU (%s)\n", cmd, name);
    else if (o->verbose) fprintf(stderr, "%s: running on the CPU\n", cmd);
    return d;
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
        // CONFIG:LAYERS, unless a file has exactly this name (a path with a ':')
        char *colon = lm_file_exists(synthetic) ? NULL : strrchr(cfg, ':');
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

// Names a checkpoint directory's loader reads (or might read: a new
// model.safetensors would take precedence over an index).
static bool model_file_name(const char *name) {
    size_t n = strlen(name);
    return !strcmp(name, "config.json") || !strcmp(name, "generation_config.json") ||
           !strcmp(name, "tokenizer.json") || !strcmp(name, "tokenizer_config.json") ||
           (n > 12 && !strcmp(name + n - 12, ".safetensors")) || (n > 11 && !strcmp(name + n - 11, ".index.json"));
}

int cli_out_check(const char *cmd, const char *path, const char *dir, const char *const *inputs, int n_inputs) {
    return cli_out_check_opt(cmd, "--out", path, dir, inputs, n_inputs);
}

int cli_out_check_opt(const char *cmd, const char *opt, const char *path, const char *dir, const char *const *inputs,
                      int n_inputs) {
    if (!path || !strcmp(path, "-")) return 0;
    struct stat out, d_st, o_dir;
    bool exists = stat(path, &out) == 0 && S_ISREG(out.st_mode);
    const char *hit = NULL;
    char *p = NULL;
    for (int i = 0; exists && i < n_inputs && !hit; i++) {
        if (!inputs[i]) continue;
        if (!strcmp(inputs[i], "-")) {  // standard input redirected from the file
            struct stat in;
            if (fstat(0, &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino) hit = "standard input";
        } else if (same_file(&out, inputs[i])) {
            hit = inputs[i];
        }
    }
    DIR *d = dir && exists ? opendir(dir) : NULL;
    for (struct dirent *e; d && !hit && (e = readdir(d));) {
        free(p);
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        if (!(p = malloc(n))) break;
        snprintf(p, n, "%s/%s", dir, e->d_name);
        if (same_file(&out, p)) hit = p;
    }
    if (d) closedir(d);
    if (hit) {
        fprintf(stderr, "lightmoe %s: %s %s is one of the inputs (%s): refusing to overwrite it\n", cmd, opt, path, hit);
        free(p);
        return 1;
    }
    free(p);
    // A new file in the model directory under a name the loader reads would
    // change the checkpoint (a model.safetensors beside an index wins over it).
    char *slash = strrchr(path, '/'), *pdir = strdup(path);
    if (!pdir) return 0;
    if (slash) pdir[slash - path ? slash - path : 1] = 0;
    else strcpy(pdir, ".");
    bool inside = dir && stat(dir, &d_st) == 0 && stat(pdir, &o_dir) == 0 && d_st.st_dev == o_dir.st_dev &&
                  d_st.st_ino == o_dir.st_ino && model_file_name(slash ? slash + 1 : path);
    free(pdir);
    if (inside) {
        fprintf(stderr, "lightmoe %s: %s %s would be a file of the checkpoint directory %s: refusing to write it\n",
                cmd, opt, path, dir);
        return 1;
    }
    return 0;
}

// The temporary outputs being written (a command may have several: --out
// and --expert-stats), removed if the run is interrupted.
#define MAX_TMP_OUTS 4
static char *volatile g_tmp_paths[MAX_TMP_OUTS];

static void on_interrupt(int sig) {
    for (int i = 0; i < MAX_TMP_OUTS; i++) {
        char *p = g_tmp_paths[i];
        if (p) unlink(p);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void tmp_forget(const char *path) {
    for (int i = 0; path && i < MAX_TMP_OUTS; i++)
        if (g_tmp_paths[i] == path) g_tmp_paths[i] = NULL;
}

static void watch_signals(void) {
    // Signals that end the process by default: remove the temporary file first.
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGXCPU, SIGALRM, SIGVTALRM, SIGPROF};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_interrupt);
    // A file size limit (ulimit -f) makes the write fail with EFBIG, reported
    // like any write error, instead of killing the process.
    signal(SIGXFSZ, SIG_IGN);
}

static bool same_inode(const struct stat *a, int fd) {
    struct stat b;
    return fstat(fd, &b) == 0 && a->st_dev == b.st_dev && a->st_ino == b.st_ino;
}

static int out_fail(const char *cmd, cli_out *o, const char *what, int e) {
    fprintf(stderr, "lightmoe %s: %s %s: %s%s%s\n", cmd, o->opt ? o->opt : "--out", o->path, what, e ? ": " : "",
            e ? strerror(e) : "");
    cli_out_abort(o);
    return 1;
}

int cli_out_open(const char *cmd, const char *path, cli_out *o) { return cli_out_open_opt(cmd, "--out", path, o); }

int cli_out_open_opt(const char *cmd, const char *opt, const char *path, cli_out *o) {
    *o = (cli_out){stdout, path, NULL, NULL, -1, false, opt};
    if (!path || !strcmp(path, "-")) return 0;
    watch_signals();
    struct stat sb, lsb;
    bool exists = stat(path, &sb) == 0;
    if (!exists && lstat(path, &lsb) == 0 && S_ISLNK(lsb.st_mode))
        return out_fail(cmd, o, "is a symbolic link to a file that does not exist", 0);
    if (exists && S_ISDIR(sb.st_mode)) return out_fail(cmd, o, "is a directory", 0);
    // Already open as our standard output or error (/dev/stdout, /proc/self/fd/1):
    // write there, as a shell redirection would, not over the file behind it.
    if (exists && (same_inode(&sb, 1) || same_inode(&sb, 2))) {
        o->f = same_inode(&sb, 1) ? stdout : stderr;
        return 0;
    }
    if (exists && !S_ISREG(sb.st_mode)) {  // a device or a FIFO: write to it directly
        // Without blocking: a FIFO nobody reads would hang in open().
        int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
            int e = errno;
            if (fd >= 0) close(fd);
            return out_fail(cmd, o, e == ENXIO ? "a FIFO that nobody reads" : "cannot open for writing", e == ENXIO ? 0 : e);
        }
        return 0;
    }
    if (exists && access(path, W_OK) != 0) return out_fail(cmd, o, "cannot write to it", errno);
    const char *target = path;
    if (exists && (o->real = realpath(path, NULL))) target = o->real;  // through symlinks: replace the file, keep the link
    // A temporary file beside the target, renamed over it on success: a failed
    // or interrupted run leaves the old file. Only where the rename changes
    // nothing else: our own file with no other hard link, in a directory we
    // may write. Otherwise the file is written in place, truncated only when
    // the results are written (cli_out_begin).
    char *dir = strdup(target);
    if (!dir) return out_fail(cmd, o, "out of memory", 0);
    char *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir ? 1 : 0] = 0;
    else strcpy(dir, ".");
    bool renamable = access(dir, W_OK | X_OK) == 0 && (!exists || (sb.st_nlink == 1 && sb.st_uid == geteuid()));
    if (renamable) {
        size_t n = strlen(dir) + sizeof "/.lightmoe-out-XXXXXX";
        if ((o->tmp = malloc(n))) snprintf(o->tmp, n, "%s/.lightmoe-out-XXXXXX", dir);
    }
    free(dir);
    int fd = o->tmp ? mkstemp(o->tmp) : -1;
    if (fd >= 0) {
        // mkstemp makes it 0600 with our group: give it what the file has, or a new file would get.
        mode_t um = umask(0);
        umask(um);
        fchmod(fd, exists ? sb.st_mode & 07777 : 0666 & ~um);
        if (exists && fchown(fd, (uid_t)-1, sb.st_gid) != 0) {}  // best effort
        for (int i = 0; i < MAX_TMP_OUTS; i++)
            if (!g_tmp_paths[i]) {
                g_tmp_paths[i] = o->tmp;
                break;
            }
    } else {
        free(o->tmp);
        o->tmp = NULL;
        fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) return out_fail(cmd, o, "cannot open for writing", errno);
        o->created = !exists;
        o->fd_trunc = fd;
    }
    if (!(o->f = fdopen(fd, "w"))) {
        int e = errno;
        close(fd);
        return out_fail(cmd, o, "cannot open for writing", e);
    }
    return 0;
}

int cli_out_begin(const char *cmd, cli_out *o) {
    if (o->fd_trunc >= 0 && ftruncate(o->fd_trunc, 0) != 0) {
        fprintf(stderr, "lightmoe %s: %s %s: cannot truncate: %s\n", cmd, o->opt ? o->opt : "--out", o->path,
                strerror(errno));
        return 1;
    }
    o->fd_trunc = -1;
    return 0;
}

void cli_out_abort(cli_out *o) {
    if (o->f && o->f != stdout && o->f != stderr) fclose(o->f);
    if (o->tmp) unlink(o->tmp);
    if (o->created) unlink(o->real ? o->real : o->path);  // a file this failed run made
    tmp_forget(o->tmp);
    free(o->tmp);
    free(o->real);
    *o = (cli_out){.fd_trunc = -1};
}

int cli_out_commit(const char *cmd, cli_out *o) {
    if (!o->f) return 0;
    bool bad = fflush(o->f) != 0 || ferror(o->f);
    int e = errno;
    if (o->f != stdout && o->f != stderr) {
        if (fclose(o->f) != 0 && !bad) bad = true, e = errno;
    }
    o->f = NULL;
    o->created = false;  // written: keep it
    const char *name = o->path && strcmp(o->path, "-") ? o->path : "standard output";
    if (!bad && o->tmp && rename(o->tmp, o->real ? o->real : o->path) != 0) bad = true, e = errno;
    if (bad) {
        fprintf(stderr, "lightmoe %s: writing %s failed: %s\n", cmd, name, strerror(e));
        cli_out_abort(o);
        return 1;
    }
    tmp_forget(o->tmp);
    free(o->tmp);
    free(o->real);
    *o = (cli_out){.fd_trunc = -1};
    return 0;
}

bool cli_expert_stats_opt(args *a, const char **path) {
    if (!arg_val(a, "--expert-stats", NULL, path)) return false;
    if (*path && (*path)[0] == '-' && (*path)[1])
        arg_fail(a, "--expert-stats needs a file name (FILE.json), not '%s'", *path);
    return true;
}

int cli_expert_stats_open(const char *cmd, const char *path, const char *model_dir, const char *const *inputs,
                          int n_inputs, cli_out *out) {
    *out = (cli_out){.fd_trunc = -1};
    if (!*path || !strcmp(path, "-")) {
        fprintf(stderr, "lightmoe %s: --expert-stats needs a file name (standard output carries the results)\n", cmd);
        return 1;
    }
    if (cli_out_check_opt(cmd, "--expert-stats", path, model_dir, inputs, n_inputs)) return 1;
    return cli_out_open_opt(cmd, "--expert-stats", path, out);
}

int cli_expert_stats_check(const char *cmd, const cli_out *out, const lm_model *model) {
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    if (mi.n_moe_layers > 0 && mi.n_experts > 0) return 0;
    fprintf(stderr, "lightmoe %s: --expert-stats %s: this %s has no MoE layers, so there is no expert routing to record\n",
            cmd, out->path, mi.architecture);
    return 1;
}

// Appends a number to an array; false (nothing leaked) when out of memory.
static bool add_number(cJSON *array, double v) {
    cJSON *n = cJSON_CreateNumber(v);
    if (n && cJSON_AddItemToArray(array, n)) return true;
    cJSON_Delete(n);
    return false;
}

int cli_write_expert_stats(const char *cmd, cli_out *out, lm_context *ctx, const char *model_path,
                           uint64_t n_tokens) {
    const lm_model *model = lm_context_model(ctx);
    lm_model_info mi;
    lm_model_get_info(model, &mi);
    const uint64_t *counts = lm_expert_counts(ctx);
    // cJSON numbers are doubles: integers are exact up to 2^53, far beyond any run.
    cJSON *root = cJSON_CreateObject(), *m = NULL, *moe = NULL, *rows = NULL;
    bool ok = root && cJSON_AddStringToObject(root, "format", CLI_EXPERT_STATS_FORMAT) &&
              cJSON_AddNumberToObject(root, "version", CLI_EXPERT_STATS_VERSION) &&
              cJSON_AddStringToObject(root, "lightmoe", lm_version()) &&
              cJSON_AddStringToObject(root, "command", cmd) && (m = cJSON_AddObjectToObject(root, "model")) &&
              cJSON_AddStringToObject(m, "architecture", mi.architecture) &&
              (model_path ? cJSON_AddStringToObject(m, "path", model_path) : cJSON_AddNullToObject(m, "path")) &&
              cJSON_AddNumberToObject(root, "n_layers", mi.n_layers) &&
              cJSON_AddNumberToObject(root, "n_experts", mi.n_experts) &&
              cJSON_AddNumberToObject(root, "top_k", mi.top_k) && (moe = cJSON_AddArrayToObject(root, "moe_layers")) &&
              cJSON_AddNumberToObject(root, "tokens", (double)n_tokens) &&
              (rows = cJSON_AddArrayToObject(root, "counts"));
    for (int l = 0; ok && l < mi.n_layers; l++) {
        cJSON *row = cJSON_CreateArray();
        if (!row || !cJSON_AddItemToArray(rows, row)) {
            cJSON_Delete(row);
            row = NULL;
        }
        ok = row && (!model->cfg.layer_moe[l] || add_number(moe, l));
        for (int e = 0; ok && e < mi.n_experts; e++) ok = add_number(row, (double)counts[(size_t)l * mi.n_experts + e]);
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "lightmoe %s: --expert-stats %s: out of memory\n", cmd, out->path);
        cli_out_abort(out);
        return 1;
    }
    int rc = cli_out_begin(cmd, out);
    if (!rc) {
        fputs(text, out->f);
        fputc('\n', out->f);
        rc = cli_out_commit(cmd, out);  // the rename: readers see the old file or the whole new one
    }
    free(text);
    if (rc) cli_out_abort(out);
    return rc;
}
