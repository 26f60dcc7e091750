#include "prompts.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lightmoe.h"
#include "util/file.h"
#include "util/json.h"

// A line longer than this is not a prompt anyone meant (and getline would
// otherwise grow without bound on a file with no newline, e.g. a pipe).
#define MAX_LINE ((size_t)64 << 20)

static bool json_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// What cJSON cannot tell: the escape \u0000 becomes a NUL that silently ends
// the C string, and nesting beyond its limit is reported as a syntax error.
// Scans the raw text (strings, outside other escapes).
static int hex4(const char *s) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// Also finds an escaped UTF-16 surrogate without its pair (Python's json
// writes them; they are not text): *lone is its code, else -1.
static void scan_json(const char *s, size_t n, bool *nul_escape, int *max_depth, int *lone) {
    bool in_str = false;
    int depth = 0;
    *nul_escape = false;
    *max_depth = 0;
    *lone = -1;
    for (size_t i = 0; i < n; i++) {
        if (!in_str) {
            if (s[i] == '"') in_str = true;
            else if (s[i] == '[' || s[i] == '{') depth++, *max_depth = depth > *max_depth ? depth : *max_depth;
            else if (s[i] == ']' || s[i] == '}') depth--;
            continue;
        }
        if (s[i] == '"') in_str = false;
        else if (s[i] == '\\' && i + 1 < n) {
            int u = s[i + 1] == 'u' && i + 5 < n ? hex4(s + i + 2) : -1;
            if (u == 0) *nul_escape = true;
            if (u >= 0xD800 && u <= 0xDBFF) {  // a high surrogate must be followed by a low one
                int lo = i + 11 < n && s[i + 6] == '\\' && s[i + 7] == 'u' ? hex4(s + i + 8) : -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) i += 6;
                else if (*lone < 0) *lone = u;
            } else if (u >= 0xDC00 && u <= 0xDFFF && *lone < 0) {
                *lone = u;
            }
            i += u >= 0 ? 5 : 1;  // the escape
        }
    }
}

int cli_prompt_parse_line(const char *line, size_t len, char **prompt, char *err, size_t errcap) {
    *prompt = NULL;
    size_t i = 0;
    while (i < len && json_ws(line[i])) i++;
    if (i == len) return 0;  // blank line
    if (memchr(line, 0, len)) return snprintf(err, errcap, "the line contains a NUL byte"), -1;
    size_t bad = lm_utf8_invalid_at(line, len);
    if (bad != len) return snprintf(err, errcap, "not valid UTF-8 (byte offset %zu of the line)", bad), -1;
    bool nul_escape;
    int depth, lone;
    scan_json(line, len, &nul_escape, &depth, &lone);
    if (depth > LM_JSON_MAX_DEPTH)
        return snprintf(err, errcap, "JSON nested %d levels deep (at most %d)", depth, LM_JSON_MAX_DEPTH), -1;
    if (lone >= 0)
        return snprintf(err, errcap, "the escape \\u%04x is half of a UTF-16 surrogate pair without the other half "
                        "(no character; not valid in UTF-8 text)", lone), -1;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    int rc = -1;
    if (!j) {
        size_t at = end && end >= line && end <= line + len ? (size_t)(end - line) : 0;
        snprintf(err, errcap, "not valid JSON (near byte offset %zu)", at);
        return -1;
    }
    size_t rest = (size_t)(end - line);
    while (rest < len && json_ws(line[rest])) rest++;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const char *dup = lm_json_duplicate_key(j);
    if (rest < len)
        snprintf(err, errcap, "more than one JSON value on the line (at byte offset %zu): put one object per line", rest);
    else if (!cJSON_IsObject(j))
        snprintf(err, errcap, "not a JSON object");
    else if (!cJSON_IsString(p))
        snprintf(err, errcap, "missing string field \"prompt\"");
    else if (dup)
        snprintf(err, errcap, "key \"%.100s\" appears twice in an object", dup);
    else if (nul_escape)
        snprintf(err, errcap, "a string contains the NUL character (\\u0000), which a prompt cannot hold");
    else if (!(*prompt = strdup(p->valuestring)))
        snprintf(err, errcap, "out of memory");
    else
        rc = 0;
    cJSON_Delete(j);
    return rc;
}

int cli_prompts_add(cli_prompts *p, char *text, int line) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        char **t = realloc(p->text, (size_t)cap * sizeof *t);
        if (t) p->text = t;
        int *l = realloc(p->line, (size_t)cap * sizeof *l);
        if (l) p->line = l;
        if (!t || !l) return -1;
        p->cap = cap;
    }
    p->text[p->n] = text;
    p->line[p->n++] = line;
    return 0;
}

void cli_prompts_free(cli_prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->text[i]);
    free(p->text);
    free(p->line);
    *p = (cli_prompts){0};
}

int cli_prompts_read(const char *cmd, const char *path, int max_prompts, cli_prompts *out) {
    FILE *f = stdin;
    bool is_stdin = !strcmp(path, "-");
    if (!is_stdin) {
        int fd;
        uint64_t size;
        lm_status st = lm_open_stream(path, &fd, &size);  // a pipe is fine: lines are read with a bound
        // The prompts and their ids stay in memory: about three times the file.
        if (!st) st = lm_mem_check(3 * size, 0.1, path);
        if (st) {
            if (fd >= 0) close(fd);
            fprintf(stderr, "lightmoe %s: %s\n", cmd, lm_last_error());
            return 1;
        }
        if (!(f = fdopen(fd, "r"))) {
            fprintf(stderr, "lightmoe %s: %s: %s\n", cmd, path, strerror(errno));
            close(fd);
            return 1;
        }
    }
    const char *name = is_stdin ? "(standard input)" : path;
    char *line = NULL, err[256];
    size_t cap = 0, len = 0;
    int lineno = 0, rc = 0, c = 0;
    while (!rc && c != EOF) {
        // getline without a bound would read a newline-free pipe forever
        len = 0;
        while ((c = getc(f)) != EOF) {
            if (len + 2 > cap) {
                size_t ncap = cap ? cap * 2 : 4096;
                char *t = len + 2 > MAX_LINE ? NULL : realloc(line, ncap);
                if (!t) {
                    fprintf(stderr, "lightmoe %s: %s:%d: line longer than %zu MB\n", cmd, name, lineno + 1,
                            MAX_LINE >> 20);
                    rc = 1;
                    break;
                }
                line = t;
                cap = ncap;
            }
            line[len++] = (char)c;
            if (c == '\n') break;
        }
        if (rc || (c == EOF && len == 0)) break;
        lineno++;
        char *prompt;
        if (cli_prompt_parse_line(line, len, &prompt, err, sizeof err)) {
            fprintf(stderr, "lightmoe %s: %s:%d: %s\n", cmd, name, lineno, err);
            rc = 1;
        } else if (prompt && out->n == max_prompts) {
            free(prompt);
            fprintf(stderr, "lightmoe %s: %s:%d: more than %d prompts (the most one run takes)\n", cmd, name, lineno,
                    max_prompts);
            rc = 1;
        } else if (prompt && cli_prompts_add(out, prompt, lineno)) {
            free(prompt);
            fprintf(stderr, "lightmoe %s: out of memory\n", cmd);
            rc = 1;
        }
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "lightmoe %s: %s: read error: %s\n", cmd, name, strerror(errno));
        rc = 1;
    }
    free(line);
    if (!is_stdin) fclose(f);
    if (!rc && out->n == 0) {
        fprintf(stderr, "lightmoe %s: %s: no prompts (expected one {\"prompt\": \"...\"} per line)\n", cmd, name);
        rc = 1;
    }
    return rc;
}
