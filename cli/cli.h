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

double cli_now(void);  // monotonic seconds

// Prints "lightmoe CMD: <library message>" and returns 1.
int cli_error(const char *cmd, lm_status st);

// Loads a checkpoint dir, or a synthetic model for "CONFIG.json[:LAYERS]".
// Options every model-loading command takes.
typedef struct cli_model_opts {
    int threads;              // 0: one per core
    lm_weights_mode weights;  // --mmap / --no-mmap
    uint64_t seed;            // synthetic weights only
} cli_model_opts;

#define CLI_MODEL_OPTS_HELP                                                          \
    "  -t, --threads N    CPU threads (default: all cores)\n"                        \
    "  --mmap             run from the mmap'ed checkpoint files (page cache)\n"      \
    "  --no-mmap          copy the weights into huge-page memory (faster decode: fewer TLB misses)\n" \
    "                     default: copy when they fit in 90% of available memory\n"

// Consumes -t/--threads, --mmap, --no-mmap at a->i; true if it did.
bool cli_model_opt(args *a, cli_model_opts *o);

int cli_load_model(const char *cmd, const char *dir, const char *synthetic, const cli_model_opts *o,
                   lm_model **out);

#endif
