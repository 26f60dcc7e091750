#ifndef LM_CLI_H
#define LM_CLI_H

#include "args.h"
#include "lightmoe.h"

int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);

// The model shipped in the repo (models/ beside build/), used when -m is absent.
// Returns NULL (after printing why) when it cannot be found.
const char *cli_default_model(void);

// Prints "lightmoe CMD: <library message>" and returns 1.
int cli_error(const char *cmd, lm_status st);

// Loads a checkpoint dir, or a synthetic model for "CONFIG.json[:LAYERS]".
// `seed` only matters for synthetic weights.
int cli_load_model(const char *cmd, const char *dir, const char *synthetic, int threads, uint64_t seed,
                   lm_model **out);

#endif
