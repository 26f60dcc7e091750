// libFuzzer target for the tokenizer.json loader and everything a loaded
// tokenizer then runs: a hostile file must be refused with a message or
// give a tokenizer that encodes, decodes and stream-decodes any text without
// reading out of bounds or looping (the regex engine runs without its own
// UTF-8 check, so every string reaching it must have been validated).
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lightmoe.h"
#include "tokenizer/tokenizer.h"

static const char *texts[] = {"Hello world", "  a.b,c!!  12 345 ", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
                              "<s>x</s>\n\n\tend", ""};

static void run_ids(const lm_tokenizer *t, const int32_t *ids, size_t n) {
    char *s = NULL;
    if (lm_detokenize(t, ids, n, false, &s) == LM_OK) free(s);
    lm_detok *d;
    if (lm_detok_init(t, true, &d) != LM_OK) return;
    const char *piece;
    size_t len;
    for (size_t i = 0; i < n; i++) lm_detok_push(d, ids[i], &piece, &len);
    lm_detok_flush(d, &piece, &len);
    lm_detok_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_tokenizer *t = NULL;
    if (tk_tokenizer_parse((const char *)data, size, "fuzz.json", &t) != LM_OK) return 0;
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        for (int special = 0; special < 2; special++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (lm_tokenize(t, texts[k], strlen(texts[k]), special, &ids, &n) == LM_OK) {
                run_ids(t, ids, n);
                free(ids);
            }
        }
    }
    // Every id the tokenizer claims, and some it does not, through the decoders.
    int nv = lm_tokenizer_vocab_size(t);
    int32_t ids[64];
    size_t n = 0;
    for (int i = -1; i <= nv && n < 64; i += 1 + nv / 48) ids[n++] = i;
    run_ids(t, ids, n);
    for (size_t i = 0; i < n; i++) ids[i] = i < (size_t)nv ? (int32_t)i : 0;
    run_ids(t, ids, n < (size_t)nv ? n : (size_t)nv);
    lm_tokenizer_free(t);
    return 0;
}
