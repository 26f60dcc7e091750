// JSONL prompt files for `generate --prompts`: one {"prompt": "..."} object
// per line (other fields are ignored), blank lines skipped. Strict: a line
// that is not exactly one JSON object with a string "prompt" of valid UTF-8
// without NUL characters is an error naming file:line.
#ifndef LM_CLI_PROMPTS_H
#define LM_CLI_PROMPTS_H

#include <stddef.h>

typedef struct cli_prompts {
    char **text;  // [n] prompt texts
    int *line;    // [n] line number of each in the file
    int n, cap;
} cli_prompts;

// One line of len bytes. Returns 0 with *prompt malloc'ed (NULL for a blank
// line), or -1 with the reason in err.
int cli_prompt_parse_line(const char *line, size_t len, char **prompt, char *err, size_t errcap);

// Reads every prompt of path ("-": standard input), at most max_prompts
// (a stream that does not end stops there). Returns 0, or 1 after printing
// "lightmoe CMD: FILE:LINE: reason".
int cli_prompts_read(const char *cmd, const char *path, int max_prompts, cli_prompts *out);
int cli_prompts_add(cli_prompts *p, char *text, int line);  // takes text; -1 on OOM
void cli_prompts_free(cli_prompts *p);

#endif
