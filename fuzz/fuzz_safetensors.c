// libFuzzer target for the safetensors header parser. The callback reads the
// first and last byte of every tensor, so ASan reports any range the parser
// accepted that reaches outside the input.
#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"

static volatile uint8_t sink;

static lm_status touch(void *user, const lm_st_tensor *t) {
    const uint8_t *p = t->data;
    if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1];
    sink ^= (uint8_t)t->name[0] ^ (uint8_t)t->dtype_str[0];
    return LM_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_st_parse(data, size, "fuzz.safetensors", touch, NULL);
    return 0;
}
