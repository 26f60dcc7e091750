// libFuzzer target for the config.json parser.
#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_config c;
    if (lm_config_parse((const char *)data, size, "fuzz.json", &c) == LM_OK) {
        // Touch the per-layer plan to prove it is as long as n_layers.
        volatile int moe = 0;
        for (int l = 0; l < c.n_layers; l++) moe += c.layer_moe[l];
        (void)moe;
    }
    lm_config_free(&c);
    return 0;
}
