// lightmoe — public C API.
//
// Conventions (after llama.h/ggml): opaque handles, *_default_params() for
// every params struct, init/free pairs, and an lm_status return code on every
// fallible call. On failure lm_last_error() returns a message for the calling
// thread that names the file and the problem. The library never exits or
// prints; the CLI decides what to show.
#ifndef LIGHTMOE_H
#define LIGHTMOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- status ---

typedef enum lm_status {
    LM_OK = 0,
    LM_ERR_IO,           // file missing / unreadable
    LM_ERR_FORMAT,       // malformed file contents
    LM_ERR_UNSUPPORTED,  // valid input we do not handle (architecture, dtype)
    LM_ERR_INVALID_ARG,  // bad argument from the caller
    LM_ERR_OOM,          // allocation failed
    LM_ERR_RANGE,        // value out of range (token id >= vocab, context full)
    LM_ERR_NOT_FOUND,    // a required tensor / key is missing
    LM_ERR_NUMERIC,      // the computation produced NaN or Inf
    LM_ERR_DEVICE,       // the GPU, its driver or runtime failed (or there is none)
} lm_status;

const char *lm_status_str(lm_status st);
const char *lm_last_error(void);  // message of the calling thread's last failure

#define LM_VERSION "0.1.0"
const char *lm_version(void);  // "0.1.0 (commit abc1234)"

// Formats a byte count with decimal units ("23.1 MB", "6.34 GB"), the one
// unit convention of every message and table; returns buf.
const char *lm_format_bytes(double bytes, char *buf, size_t cap);

// --------------------------------------------------------------- runtime ---

// The machine resources models and contexts share: the CPU worker threads
// (later also devices). Models and contexts on several threads may share one
// runtime; their parallel regions then take turns. Free it after every model
// that uses it.
typedef struct lm_runtime lm_runtime;

typedef struct lm_runtime_params {
    int n_threads;     // worker threads; <= 0: one per CPU this process may use (more is refused)
    bool pin_threads;  // bind each worker to one CPU
} lm_runtime_params;

lm_runtime_params lm_runtime_default_params(void);
lm_status lm_runtime_init(const lm_runtime_params *params, lm_runtime **out);
void lm_runtime_free(lm_runtime *rt);
int lm_runtime_threads(const lm_runtime *rt);

// ----------------------------------------------------------------- model ---

typedef struct lm_model lm_model;

// Where checkpoint weights live while the model runs.
typedef enum lm_weights_mode {
    LM_WEIGHTS_AUTO = 0,  // copy when they fit in 90% of available memory, else mmap
    LM_WEIGHTS_MMAP,      // use the mmap'ed files (page cache, 4 KiB pages)
    LM_WEIGHTS_COPY,      // copy into memory backed by transparent huge pages:
                          // faster memory-bound decode (fewer TLB misses)
} lm_weights_mode;

typedef struct lm_model_params {
    lm_runtime *runtime;       // shared runtime; NULL: the model makes its own from:
    int n_threads;             //   worker threads; <= 0: one per core (more is refused)
    lm_weights_mode weights;   // checkpoints only; synthetic weights are always in memory
} lm_model_params;

lm_model_params lm_model_default_params(void);

// Loads a Hugging Face checkpoint directory: config.json plus model.safetensors
// or model.safetensors.index.json with its shards. Every header is validated
// before any tensor data is touched; the weights are then used from the
// mmap'ed files or copied into memory (lm_model_params.weights).
lm_status lm_model_load(const char *dir, const lm_model_params *params, lm_model **out);

typedef struct lm_synthetic_params {
    const char *config_path;  // a config.json describing the shapes
    int n_layers;             // <= 0: as in the config; else truncate to this many
    uint64_t seed;            // weights are a deterministic function of the seed
    bool shapes_only;         // allocate no weights: the model can be described
                              // (lm_model_get_info) but not run (contexts refuse it)
} lm_synthetic_params;

lm_synthetic_params lm_synthetic_default_params(void);

// Builds a model with random bf16 weights in memory with the shapes of a
// config.json, for benchmarks at real sizes without a download.
lm_status lm_model_load_synthetic(const lm_synthetic_params *sp, const lm_model_params *params,
                                  lm_model **out);

void lm_model_free(lm_model *model);

typedef struct lm_model_info {
    const char *architecture;  // e.g. "MixtralForCausalLM"
    int n_layers, n_moe_layers, hidden, vocab, n_heads, n_kv_heads, head_dim;
    int n_experts, top_k, moe_intermediate, dense_intermediate, shared_intermediate;
    int max_positions;
    bool tie_embeddings;          // lm_head shares the embedding matrix
    bool weights_mmapped;         // weights are read from the mmap'ed files
    bool has_weights;             // false for a shapes-only synthetic model
    uint64_t n_params_total;      // every weight element
    uint64_t n_params_active;     // elements touched per token (top_k experts)
    uint64_t bytes_bf16, bytes_f16, bytes_f32;  // weight bytes stored per dtype
    uint64_t bytes_weights;       // sum of the above
    uint64_t bytes_kv_per_token;  // fp32 KV cache bytes per token (all layers)
    int bos_token_id;             // -1 if none
    int n_eos;
    int eos_token_ids[8];
    int n_unused_tensors;         // checkpoint tensors the config does not use
    const char *unused_tensor;    // the first of them (NULL if none); valid while the model lives
} lm_model_info;

void lm_model_get_info(const lm_model *model, lm_model_info *out);

// ------------------------------------------------------------- tokenizer ---

typedef struct lm_tokenizer lm_tokenizer;

// Loads tokenizer.json; reads tokenizer_config.json from the same directory
// when present (BOS/EOS handling, added tokens).
lm_status lm_tokenizer_load(const char *tokenizer_json_path, lm_tokenizer **out);
void lm_tokenizer_free(lm_tokenizer *tok);

// Encodes UTF-8 text. add_special: add BOS/EOS as the tokenizer's
// post-processor would (transformers' add_special_tokens=True).
// *ids is allocated with malloc(); the caller frees it with free().
lm_status lm_tokenize(const lm_tokenizer *tok, const char *text, size_t len, bool add_special,
                      int32_t **ids, size_t *n_ids);

// Offset of the first byte of s[0..n) that is not valid UTF-8; n if all is.
size_t lm_utf8_invalid_at(const char *s, size_t n);

int lm_tokenizer_vocab_size(const lm_tokenizer *tok);  // 1 + the largest id, added tokens included
bool lm_tokenizer_id_valid(const lm_tokenizer *tok, int32_t id);  // id names a token that can be decoded
int32_t lm_tokenizer_bos(const lm_tokenizer *tok);     // -1 if none
int32_t lm_tokenizer_eos(const lm_tokenizer *tok);     // -1 if none

// Streaming decoder: push ids one at a time and get back only complete UTF-8
// text; bytes of a character split across tokens are held until complete.
typedef struct lm_detok lm_detok;

lm_status lm_detok_init(const lm_tokenizer *tok, bool skip_special, lm_detok **out);
// Pushes `id`; *text is set to the text it made complete (*len bytes, any
// length, NUL-terminated, "" if none), valid until the next call on d.
lm_status lm_detok_push(lm_detok *d, int32_t id, const char **text, size_t *len);
// Emits whatever is still held (invalid UTF-8 becomes U+FFFD), same contract.
lm_status lm_detok_flush(lm_detok *d, const char **text, size_t *len);
void lm_detok_free(lm_detok *d);

// Whole-sequence decode, convenience over the streaming decoder. *text is
// malloc()'ed and NUL-terminated.
lm_status lm_detokenize(const lm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                        bool skip_special, char **text);

// --------------------------------------------------------------- context ---

// A context holds up to n_seq sequences and runs batches of their tokens on
// an executor. The executor owns the device state — activations, scratch and
// a paged KV cache of n_pages pages of LM_KV_PAGE tokens (bf16 by default) —
// while the context keeps the host metadata: sequence lengths, block tables
// and the free pages. Pages are taken as sequences grow and returned when a
// sequence is cleared. Nothing is allocated in lm_decode: every limit is
// checked against what was sized here.
typedef struct lm_context lm_context;

// CUDA GPUs this build can run on (0 when built without CUDA or none usable);
// when name is given, the first one's name goes there.
int lm_cuda_devices(char *name, size_t cap);

#define LM_KV_PAGE 16  // tokens per KV page

typedef enum lm_kv_type {
    LM_KV_BF16 = 0,  // the default: half the bytes, logits error ~1e-3 relative
    LM_KV_F32,       // reference runs (golden tests): exact to the fp32 forward pass
} lm_kv_type;

typedef struct lm_context_params {
    int n_seq;             // sequences the context holds at once (ids 0 .. n_seq-1)
    int n_ctx;             // max tokens per sequence (prompt + generated)
    int n_batch;           // max tokens in one lm_decode call (all sequences together)
    int n_out;             // max tokens of one call that ask for logits; 0: n_batch
    int n_pages;           // KV pages; 0: enough for n_seq full sequences
    lm_kv_type kv_type;
    const char *executor;  // "cpu" (default, NULL), "ref" (the scalar reference) or "cuda"
    bool graphs;           // GPU: replay a step shape seen before as a CUDA graph (default true)
    double gpu_mem;        // GPU: bytes the run may take, weights included; 0: all free memory
} lm_context_params;

lm_context_params lm_context_default_params(void);

// Where a context's memory goes, in bytes: what lm_context_init will
// allocate in the executor's memory (the GPU's for "cuda", host memory
// otherwise) and what is available there (free memory, capped by gpu_mem).
typedef struct lm_mem_plan {
    bool gpu;
    double weights;      // the model's weights (uploaded once to a GPU; in place on the CPU)
    double kv;           // the paged KV cache: n_pages pages x layers
    double activations;  // a step's tensors at n_batch tokens, MoE scratch, logits of n_out rows
    double scratch;      // executor scratch (bf16 GEMM staging, attention work lists, sampling)
    double total;        // the sum
    double available;    // free memory there now (GPU: min(free, gpu_mem)); -1: no GPU here to ask
    double device_total; // GPU: its memory; 0 on the CPU or without a GPU
} lm_mem_plan;

// The plan for a context of these parameters on this model (before making
// it); lm_context_init refuses a GPU context whose plan exceeds what is
// available, naming the parts and what would make it fit.
lm_status lm_context_mem_plan(const lm_model *model, const lm_context_params *params, lm_mem_plan *out);

// What a live context's executor holds, measured: bytes allocated in its
// memory, CUDA graphs captured and the device memory they took.
typedef struct lm_mem_used {
    double allocated;
    int graphs;
    double graph_bytes;
} lm_mem_used;
void lm_context_mem_used(const lm_context *ctx, lm_mem_used *out);

lm_status lm_context_init(lm_model *model, const lm_context_params *params, lm_context **out);
void lm_context_free(lm_context *ctx);

// A batch: token i belongs to sequence seq[i]. Without positions each token
// is appended to its sequence (tokens of one sequence in order); with
// positions, a sequence's tokens must have consecutive positions p0, p0+1, ...
// with p0 <= its current length: the sequence is cut back to p0 first (a
// prefix is reused, the rest recomputed). Tokens of many sequences, prefill
// chunks and single decode tokens, mix freely. Logits are produced for
// tokens with want_logits[i] != 0 (NULL: all tokens), at most n_out.
// With samplers, the j-th of those tokens is also sampled by samplers[j]
// (a NULL entry: not sampled) and the id is read with lm_get_token, so a
// device executor need not hand the logits to the caller.
typedef struct lm_sampler lm_sampler;
typedef struct lm_batch {
    int n_tokens;
    const int32_t *tokens;
    const int32_t *seq;
    const uint8_t *want_logits;   // may be NULL
    const int32_t *pos;           // may be NULL
    lm_sampler *const *samplers;  // may be NULL; [number of tokens with logits]
} lm_batch;

// Runs the batch. A sequence's length advances only if the whole step
// succeeds; on failure the context is as before (LM_ERR_OOM "KV cache full"
// when the free pages do not cover the batch: nothing was changed).
lm_status lm_decode(lm_context *ctx, const lm_batch *batch);

// Logits of the batch's j-th token that asked for logits ([vocab] floats);
// valid until the next lm_decode.
const float *lm_get_logits(lm_context *ctx, int j);

// The id drawn for the j-th logits row by the batch's samplers[j]; -1 when it
// had none. Valid until the next lm_decode.
int32_t lm_get_token(const lm_context *ctx, int j);

int lm_seq_len(const lm_context *ctx, int seq);  // -1 for an invalid id
void lm_seq_clear(lm_context *ctx, int seq);     // length 0; its KV pages are freed
int lm_kv_pages_free(const lm_context *ctx);
// Pages a sequence of `len` tokens holds.
static inline int lm_kv_pages_for(int len) { return (len + LM_KV_PAGE - 1) / LM_KV_PAGE; }
lm_model *lm_context_model(const lm_context *ctx);
lm_context_params lm_context_get_params(const lm_context *ctx);  // with the defaults resolved

// Routing statistics: [n_layers][n_experts] counts of tokens sent to each
// expert by lm_decode since the context was made or last reset (dense layers
// stay 0). Hot and cold experts show here.
const uint64_t *lm_expert_counts(lm_context *ctx);
void lm_expert_counts_reset(lm_context *ctx);

// -------------------------------------------------------------- sampling ---

typedef struct lm_sampler_params {
    float temperature;  // <= 0: greedy
    int top_k;          // <= 0: disabled
    float top_p;        // >= 1: disabled
    uint64_t seed;
} lm_sampler_params;

lm_sampler_params lm_sampler_default_params(void);

lm_status lm_sampler_init(const lm_sampler_params *params, int vocab, lm_sampler **out);
int32_t lm_sampler_sample(lm_sampler *s, const float *logits);
void lm_sampler_free(lm_sampler *s);

// ------------------------------------------------------------ generation ---

#define LM_MAX_STOP_LEN 1024  // bytes of one stop string
#define LM_MAX_STOPS 64        // stop strings per request

typedef enum lm_finish { LM_FINISH_LENGTH = 0, LM_FINISH_EOS, LM_FINISH_STOP, LM_FINISH_ERROR } lm_finish;

typedef struct lm_gen_result {
    char *text;          // generated text, NUL-terminated (malloc'ed; free with lm_gen_results_free)
    size_t text_len;     // its length in bytes: the text itself may contain NUL bytes
    int n_prompt_tokens;
    int n_gen_tokens;
    lm_finish finish;
    lm_status status;    // LM_OK, or why this request could not run (finish == LM_FINISH_ERROR)
    char *error;         // the message of that status (malloc'ed), else NULL
} lm_gen_result;

typedef struct lm_gen_progress {
    int done, total;       // requests finished (or refused), requests in all
    int running, waiting;
    long prompt_tokens;    // prompt tokens of the finished requests
    long gen_tokens;       // tokens generated so far
    long computed_tokens;  // tokens run through the model (recomputations after preemption included)
    long preemptions;
    double seconds;        // since lm_generate started
} lm_gen_progress;

typedef struct lm_gen_params {
    int max_tokens;              // new tokens per prompt
    lm_sampler_params sampler;   // each prompt gets its own stream seeded with sampler.seed
    const char *const *stop;     // stop strings (not included in the output); may be NULL
    int n_stop;
    bool ignore_eos;
    bool add_special;            // add BOS as the tokenizer does (default true)
    int max_parallel;            // requests decoded at once; 0: the context's n_seq
    // optional: each request's result as soon as it is complete (any order),
    // and the progress after each step; `user` is lm_generate's.
    void (*on_done)(void *user, int idx, const lm_gen_result *r);
    void (*on_progress)(void *user, const lm_gen_progress *p);
} lm_gen_params;

lm_gen_params lm_gen_default_params(void);

// Called with each newly completed piece of text of prompt `idx` (len bytes,
// which may include NUL bytes). Return non-zero to stop that prompt early.
typedef int (*lm_piece_cb)(void *user, int idx, const char *piece, size_t len);

// LM_OK if every id the tokenizer can produce is inside the model's
// vocabulary; else an error saying they do not belong together. (A model with
// more ids than its tokenizer is normal: padded embedding tables.)
lm_status lm_tokenizer_check_model(const lm_tokenizer *tok, const lm_model *model);

// Generates continuations of any number of prompts on one context: requests
// wait in a queue and run as sequences and KV pages free up (at most
// max_parallel at once); prefill is chunked into the decode steps; when the
// pages run out the newest request is set back and recomputed later. A
// request that can never run (prompt + max_tokens beyond the context, no
// tokens at all) gets its error in its result; the others still run. The
// return status is for failures of the whole call (memory, the model).
lm_status lm_generate(lm_context *ctx, const lm_tokenizer *tok, const char *const *prompts, int n,
                      const lm_gen_params *params, lm_piece_cb cb, void *user,
                      lm_gen_result *results);

void lm_gen_results_free(lm_gen_result *results, int n);  // texts and errors

// ---------------------------------------------------------------- probes ---

// The ceilings CPU figures are reported against: best-of-5 DRAM read
// bandwidth over a 1 GiB buffer (bytes/s), and best-of-3 fp32 FMA throughput
// of the kernels' ISA (FLOP/s), each on n_threads threads.
double lm_probe_read_bandwidth(int n_threads);
double lm_probe_fma_peak(int n_threads);

#ifdef __cplusplus
}
#endif

#endif
