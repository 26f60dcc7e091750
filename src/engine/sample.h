// Engine-internal sampler controls (the sampler itself is public API).
#ifndef LM_ENGINE_SAMPLE_H
#define LM_ENGINE_SAMPLE_H

#include "lightmoe.h"

// Ids with banned[id] != 0 are never sampled (ids the tokenizer cannot
// decode). `banned` has the sampler's vocab entries and must outlive it.
void lm_sampler_ban(lm_sampler *s, const uint8_t *banned);

#endif
