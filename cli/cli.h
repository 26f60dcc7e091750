#ifndef LM_CLI_H
#define LM_CLI_H

#include <stdio.h>

#include "args.h"
#include "lightmoe.h"

int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_serve(int argc, char **argv);

// The model shipped in the repo (models/ beside build/), or $LIGHTMOE_MODEL,
// used when -m is absent. Returns NULL (after printing why) when it cannot be found.
const char *cli_default_model(void);

double cli_now(void);  // monotonic seconds

// Prints "lightmoe CMD: <library message>" and returns 1.
int cli_error(const char *cmd, lm_status st);

// dir/tokenizer.json, malloc'ed (NULL after printing on failure).
char *cli_tokenizer_path(const char *cmd, const char *dir);

// Options every model-loading command takes.
typedef struct cli_model_opts {
    int threads;              // 0: one per core
    lm_weights_mode weights;  // --mmap / --no-mmap
    uint64_t seed;            // synthetic weights only
    bool verbose;             // -v: say where the weights went, tokenizer coverage
    lm_kv_type kv_type;       // --kv bf16|f32
    bool quiet;               // no warnings (a load that only validates)
    const char *device;       // --device cpu|cuda; NULL: cuda when a GPU is usable
    bool no_graphs;           // --no-graphs: GPU steps run op by op, never replayed as CUDA graphs
    double gpu_mem;           // --gpu-mem SIZE: GPU memory the run may take (0: all free)
} cli_model_opts;

#define CLI_MODEL_OPTS_HELP                                                                     \
    "  -t, --threads N       CPU threads (default: all cores; at most the number of cores)\n"   \
    "      --mmap            run from the mmap'ed checkpoint files (page cache)\n"              \
    "      --no-mmap         copy the weights into huge-page memory (faster decode: fewer\n"    \
    "                        TLB misses); default: copy when they fit in 90% of free memory\n" \
    "      --kv TYPE         KV cache precision: bf16 (default) or f32 (reference runs)\n"   \
    "      --device DEV      cpu or cuda (default: cuda when this build has CUDA and a GPU\n" \
    "                        is usable, else cpu)\n"                                         \
    "      --gpu-mem SIZE    GPU: memory the run may take, weights included, e.g. 24G\n"       \
    "                        (default: all that is free); a run that needs more is refused\n"  \
    "                        with what takes the memory\n"                                   \
    "      --no-graphs       GPU: launch every step's kernels one by one instead of replaying\n" \
    "                        a step shape seen before as a CUDA graph (for comparison)\n"      \
    "  -v, --verbose         say where the weights went and other details\n"

// Consumes -t/--threads, --mmap, --no-mmap, -v at a->i; true if it did.
bool cli_model_opt(args *a, cli_model_opts *o);

// KV pages for cp (n_seq, n_ctx, executor set): every sequence at full
// length if that fits the budget, else what the budget holds (at least one
// sequence of min(n_ctx, 4096)). Budget: kv_mem if > 0; on a GPU what its
// free memory (or gpu_mem) leaves after the weights, activations and
// scratch (90% of it); on the CPU a quarter of the available memory.
void cli_kv_pages(const lm_model *model, lm_context_params *cp, double kv_mem);

// On a GPU run (or verbose): where the memory goes, planned, then measured
// once the context exists (stderr).
void cli_mem_report(const char *cmd, const lm_model *model, const lm_context_params *cp, const lm_context *ctx,
                    bool verbose);

// The executor a run uses (--device, or the default); says which on stderr
// when it is a GPU or verbose.
const char *cli_device(const char *cmd, const cli_model_opts *o);

// Loads a checkpoint dir, or a synthetic model for "CONFIG.json[:LAYERS]"
// (shapes_only: no weights, for describing it). Warns about checkpoint
// tensors the config does not use.
int cli_load_model(const char *cmd, const char *dir, const char *synthetic, bool shapes_only,
                   const cli_model_opts *o, lm_model **out);

// An output file, opened before any work so a bad path fails at once with
// the reason. A regular file (or a new one) is written under a temporary
// name beside it and renamed over it only when everything succeeded, so a
// failed run leaves an existing file as it was; "-" (standard output) and
// non-regular files (/dev/stdout, a FIFO) are written directly.
typedef struct cli_out {
    FILE *f;
    const char *path;  // as given; NULL or "-" for standard output
    char *tmp;         // the temporary file, renamed to path on commit
    char *real;        // path resolved through symbolic links (a link stays a link)
    int fd_trunc;      // written in place: truncated by cli_out_begin, -1 otherwise
    bool created;      // written in place and made by this run: removed on abort
    const char *opt;   // the option that named it, for messages (NULL: "--out")
} cli_out;

// Refuses an output that is one of the inputs (would replace a checkpoint
// or the prompts being read): `inputs` are files, `dir` a model directory
// whose every entry counts. 0, or 1 after printing.
int cli_out_check(const char *cmd, const char *path, const char *dir, const char *const *inputs, int n_inputs);
int cli_out_open(const char *cmd, const char *path, cli_out *o);  // 0, or 1 after printing
// The same for an output named by another option (--svg, --expert-stats):
// the messages name that option.
int cli_out_check_opt(const char *cmd, const char *opt, const char *path, const char *dir,
                      const char *const *inputs, int n_inputs);
int cli_out_open_opt(const char *cmd, const char *opt, const char *path, cli_out *o);
// Call right before writing the results (only on success): an output written
// in place is truncated here, not when it was opened.
int cli_out_begin(const char *cmd, cli_out *o);
// Flushes, checks for write errors (disk full, /dev/full) and renames into
// place; 0, or 1 after printing the error. cli_out_abort after a failure.
int cli_out_commit(const char *cmd, cli_out *o);
void cli_out_abort(cli_out *o);

// --expert-stats FILE.json: how many tokens each expert of each layer was
// routed, as read from lm_expert_counts after a run. Format
// "lightmoe-expert-stats", version 1 (what `lightmoe report` reads):
//   {"format": "lightmoe-expert-stats", "version": 1, "lightmoe": VERSION,
//    "command": CMD, "model": {"architecture": A, "path": P or null},
//    "n_layers": L, "n_experts": E, "top_k": K, "moe_layers": [indices],
//    "tokens": T, "counts": [[E integers] x L]}
// T is the tokens run through the model; each MoE layer's counts sum to
// T * K, dense layers' rows are zeros.
#define CLI_EXPERT_STATS_FORMAT "lightmoe-expert-stats"
#define CLI_EXPERT_STATS_VERSION 1
// Consumes --expert-stats FILE at a->i; true if it did. A value that looks
// like an option is refused: perplexity's --expert-stats used to be a flag.
bool cli_expert_stats_opt(args *a, const char **path);
// Checked and opened before any work, as --out is (a bad path fails at once,
// an input is never overwritten); "-" is refused: standard output carries
// the command's own results. 0, or 1 after printing.
int cli_expert_stats_open(const char *cmd, const char *path, const char *model_dir, const char *const *inputs,
                          int n_inputs, cli_out *out);
// After the model is loaded, before the run: a model without MoE layers has
// no routing to record, which is an error (1 after printing), not an empty file.
int cli_expert_stats_check(const char *cmd, const cli_out *out, const lm_model *model);
// Writes the counts of ctx (model from lm_context_model) and renames the
// file into place; n_tokens is the tokens run through ctx since its counts
// were last reset. 0, or 1 after printing (the file is then left untouched).
int cli_write_expert_stats(const char *cmd, cli_out *out, lm_context *ctx, const char *model_path,
                           uint64_t n_tokens);

#endif
