// libFuzzer target for the JSONL prompt reader of `generate --prompts`: every
// line must parse to exactly one prompt (valid UTF-8, no NUL) or be refused
// with a reason, never crash or read past the line.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lightmoe.h"
#include "prompts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // A copy without a terminator, so reading past the line is caught.
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    size_t start = 0;
    while (start <= size) {
        const char *nl = start < size ? memchr(buf + start, '\n', size - start) : NULL;
        size_t end = nl ? (size_t)(nl - buf) + 1 : size;
        char *prompt = NULL, err[256];
        if (cli_prompt_parse_line(buf + start, end - start, &prompt, err, sizeof err) == 0 && prompt) {
            size_t n = strlen(prompt);
            if (lm_utf8_invalid_at(prompt, n) != n) abort();  // accepted text must be UTF-8
            free(prompt);
        }
        if (!nl) break;
        start = end;
    }
    free(buf);
    return 0;
}
