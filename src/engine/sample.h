// Engine-internal sampler controls (the sampler itself is public API).
#ifndef LM_ENGINE_SAMPLE_H
#define LM_ENGINE_SAMPLE_H

#include "exec/exec.h"
#include "lightmoe.h"

// Ids with banned[id] != 0 are never sampled (ids the tokenizer cannot
// decode). `banned` has the sampler's vocab entries and must outlive it.
void lm_sampler_ban(lm_sampler *s, const uint8_t *banned);

// The random stream of a sampler (default 0): draws are keyed by (seed,
// stream, step), so requests with the same seed can still differ.
void lm_sampler_set_stream(lm_sampler *s, uint64_t stream);

// Whether the sampler draws from a distribution (temperature > 0 with a
// finite 1/T); otherwise it takes the most likely id.
bool lm_sampler_draws(const lm_sampler *s);

// This draw's parameters for an executor that samples where the logits are
// (exec.h); advances the sampler exactly as lm_sampler_sample does, so the
// next draw is keyed the same way whichever side samples. *banned: the
// sampler's banned map, or NULL.
void lm_sampler_take_row(lm_sampler *s, lm_sample_row *row, const uint8_t **banned);
const uint8_t *lm_sampler_banned(const lm_sampler *s);
int lm_sampler_vocab(const lm_sampler *s);  // ids [0, vocab) may be drawn
float lm_sampler_temperature(const lm_sampler *s);

// Working memory of sampling (probabilities and ids of a vocabulary), shared
// by the samplers one thread drives instead of one per sampler.
typedef struct lm_sample_scratch lm_sample_scratch;
lm_status lm_sample_scratch_init(int vocab, lm_sample_scratch **out);
void lm_sample_scratch_free(lm_sample_scratch *s);
int32_t lm_sampler_sample_with(lm_sampler *s, const float *logits, lm_sample_scratch *scratch);

#endif
