// `lightmoe bench --json FILE` on the CPU: the file is written, parses, and
// holds the figures the table prints (machine, setup, prefill and decode
// rows), with energy null (NVML measures GPUs only) and --reps reflected.
#include <cjson/cJSON.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "util/file.h"

extern char **environ;

// Runs argv with standard output into out (stderr inherited); exit status or -1.
static int run_capture(char *const argv[], char *out, size_t cap) {
    int fd[2];
    if (pipe(fd)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while (rc == 0 && n < cap - 1 && (r = read(fd[0], out + n, cap - 1 - n)) > 0) n += (size_t)r;
    out[n] = 0;
    close(fd[0]);
    int status = 0;
    if (rc == 0) waitpid(pid, &status, 0);
    return rc ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128);
}

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static double num(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    CHECK_MSG(cJSON_IsNumber(v), "'%s' is not a number", k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_bench_json(void) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char bin[512], path[] = "/tmp/lightmoe-bench-XXXXXX", out[16384];
    snprintf(bin, sizeof bin, "%s/lightmoe", build);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    char *argv[] = {bin, "bench", "--device", "cpu", "-t", "1", "--prompt-len", "8", "--gen-len", "4",
                    "--reps", "3", "--json", path, NULL};
    int rc = run_capture(argv, out, sizeof out);
    CHECK_MSG(rc == 0, "bench exited %d", rc);
    CHECK_MSG(strstr(out, "decode ") && strstr(out, "median of 3"), "table: %s", out);
    CHECK_MSG(!strstr(out, "J/tok"), "a CPU run prints no energy: %s", out);
    char *buf = NULL;
    size_t len = 0;
    CHECK_MSG(lm_read_file(path, 1 << 20, &buf, &len) == LM_OK, "%s", lm_last_error());
    unlink(path);
    cJSON *root = buf ? cJSON_Parse(buf) : NULL;
    free(buf);
    CHECK_MSG(root, "the JSON file does not parse");
    if (!root) return;

    const cJSON *model = get(root, "model"), *setup = get(root, "setup"), *mach = get(root, "machine");
    const cJSON *energy = get(root, "energy"), *pf = get(root, "prefill"), *dc = get(root, "decode");
    CHECK(cJSON_IsObject(model) && cJSON_IsObject(setup) && cJSON_IsObject(mach) && cJSON_IsObject(energy) &&
          cJSON_IsObject(pf) && cJSON_IsObject(dc));
    CHECK(cJSON_IsString(get(model, "architecture")) &&
          !strcmp(get(model, "architecture")->valuestring, "MixtralForCausalLM"));
    CHECK(num(model, "weight_bytes") > 0);
    CHECK(cJSON_IsString(get(setup, "device")) && !strcmp(get(setup, "device")->valuestring, "cpu"));
    CHECK(num(setup, "batch") == 1 && num(setup, "prompt_len") == 8 && num(setup, "gen_len") == 4);
    CHECK(num(setup, "reps") == 3 && num(setup, "threads") == 1);
    CHECK(cJSON_IsString(get(mach, "kind")) && !strcmp(get(mach, "kind")->valuestring, "cpu"));
    CHECK(num(mach, "read_bytes_per_s") > 0);
    CHECK(num(mach, "peak_flops_per_s") >= 0);
    CHECK(cJSON_IsFalse(get(energy, "available")) && cJSON_IsString(get(energy, "reason")));

    CHECK(num(pf, "tokens") == 8 && num(pf, "tok_per_s") > 0 && num(pf, "seconds") > 0);
    CHECK(cJSON_IsString(get(pf, "bound")) && !strcmp(get(pf, "bound")->valuestring, "compute"));
    CHECK(num(pf, "flops") > 0);
    CHECK(cJSON_IsNumber(get(pf, "pct_of_bound")) || cJSON_IsNull(get(pf, "pct_of_bound")));
    CHECK(cJSON_IsNull(get(pf, "j_per_token")) && cJSON_IsNull(get(pf, "watts")));

    CHECK(num(dc, "tokens") == 12 && num(dc, "reps") == 3);
    double lo = num(dc, "tok_per_s_min"), med = num(dc, "tok_per_s"), hi = num(dc, "tok_per_s_max");
    CHECK_MSG(lo > 0 && lo <= med && med <= hi, "min %g median %g max %g", lo, med, hi);
    CHECK(num(dc, "bound_tok_per_s") > 0 && num(dc, "pct_of_bound") > 0);
    CHECK(num(dc, "bytes_per_step") > 0 && num(dc, "flops_per_step") > 0);
    CHECK(cJSON_IsString(get(dc, "bound")));
    CHECK(cJSON_IsNull(get(dc, "j_per_token")) && cJSON_IsNull(get(dc, "watts")));
    cJSON_Delete(root);
}

int main(void) {
    RUN(test_bench_json);
    return tl_finish();
}
