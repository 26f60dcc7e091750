// The scheduler: many requests on one context, never refusing one for lack
// of room. Requests wait in a queue and are admitted while a sequence slot
// and KV pages are free; each step fills a token budget with one decode
// token per running request, then prefill chunks (chunked prefill mixed into
// decode steps); a finished request frees its pages at once; when the pages
// run out, the newest running request is preempted (its pages freed, its
// prompt and generated tokens recomputed later) — never dropped.
//
// What a request does with its logits (sampling, stop rules) is the
// caller's: a callback gets each request's logits and returns the next token
// or ends the request. generate.c builds text generation on it; the server
// and the pipeline's micro-batching build on it too.
#ifndef LM_ENGINE_SCHED_H
#define LM_ENGINE_SCHED_H

#include "lightmoe.h"

typedef struct lm_sched lm_sched;

typedef struct lm_sched_params {
    int max_running;  // sequences at once (<= the context's n_seq); 0: n_seq
    int step_tokens;  // token budget per step (<= the context's n_batch); 0: n_batch
} lm_sched_params;

// Called after request `req`'s last token was computed; its results are
// output row `row` of the step: lm_get_token(ctx, row) is the id its
// sampler drew (where the executor sampled; -1 otherwise) and
// lm_get_logits(ctx, row) its logits (fetched on demand from a device).
// Returns the next token to feed, or -1 when the request is finished.
typedef int32_t (*lm_sched_next_fn)(void *user, int req, lm_context *ctx, int row);
// The sampler of request `req` for its next token, handed to lm_decode so
// that a device executor samples where the logits are; NULL: none.
typedef lm_sampler *(*lm_sched_sampler_fn)(void *user, int req);

lm_status lm_sched_init(lm_context *ctx, const lm_sched_params *p, lm_sched_next_fn next,
                        lm_sched_sampler_fn sampler, void *user, lm_sched **out);
void lm_sched_free(lm_sched *s);

// Queues a request: prompt tokens (copied), up to max_new tokens to come;
// *id is its id (0, 1, ... in order). LM_ERR_RANGE / LM_ERR_INVALID_ARG when
// this request can never run (longer than the context, or than the whole
// cache): the caller reports its error and goes on with the others.
lm_status lm_sched_add(lm_sched *s, const int32_t *prompt, int n_prompt, int max_new, int *id);

// Ends request `id` at once (a client that went away): a waiting request
// leaves the queue, a running one frees its sequence and KV pages now. Its
// callback is not called again. No-op for a finished request or a bad id.
void lm_sched_cancel(lm_sched *s, int id);

// Runs one step (admissions, preemptions, one lm_decode, the callbacks).
// *active is set to false once every request has finished.
lm_status lm_sched_step(lm_sched *s, bool *active);

typedef struct lm_sched_stats {
    int waiting, running, finished, total;
    long tokens_computed;   // prompt and generated tokens run through the model (recomputation included)
    long preemptions;
} lm_sched_stats;

void lm_sched_get_stats(const lm_sched *s, lm_sched_stats *out);

#endif
