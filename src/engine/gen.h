// A generation session: text generation on the scheduler with requests that
// come and go while it runs. lm_generate (a fixed list of prompts) and the
// server (requests arriving over HTTP, clients that hang up) are both built
// on it, so a request with the same prompt tokens, parameters and seed gives
// the same text either way.
//
// Single-threaded: add, cancel and step are called from one thread (the
// server's engine thread); callbacks run inside step (or add/cancel).
#ifndef LM_ENGINE_GEN_H
#define LM_ENGINE_GEN_H

#include "engine/sched.h"
#include "lightmoe.h"

#define LM_GEN_MAX_TOP_LOGPROBS 20

typedef struct lm_gen_req_params {
    int max_tokens;             // >= 1
    lm_sampler_params sampler;
    uint64_t stream;            // the sampler's random stream (n choices of one request: 0, 1, ...)
    const char *const *stop;    // copied
    int n_stop;
    bool ignore_eos;
    int top_logprobs;           // < 0: no logprobs; else the chosen token's and this many alternatives
} lm_gen_req_params;

lm_gen_req_params lm_gen_req_default_params(void);

// A sampled token with its log-probability under the model (before
// temperature / top-k / top-p) and the most likely alternatives.
typedef struct lm_gen_token {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[LM_GEN_MAX_TOP_LOGPROBS];
    float top_logprob[LM_GEN_MAX_TOP_LOGPROBS];
} lm_gen_token;

typedef struct lm_gen_events {
    void *user;
    // Newly final text of request h (stop strings are never in it). Return
    // non-zero to end the request (it finishes as LM_FINISH_STOP).
    int (*on_text)(void *user, int h, const char *text, size_t len);
    // Each sampled token of a request that asked for logprobs, before its text.
    void (*on_token)(void *user, int h, const lm_gen_token *t);
    // The request is complete. The callee may keep r->text (set it to NULL);
    // otherwise it is freed after the call.
    void (*on_done)(void *user, int h, lm_gen_result *r);
} lm_gen_events;

typedef struct lm_gen_session lm_gen_session;

// max_parallel: requests decoded at once (0: the context's n_seq).
lm_status lm_gen_session_init(lm_context *ctx, const lm_tokenizer *tok, int max_parallel, const lm_gen_events *ev,
                              lm_gen_session **out);
void lm_gen_session_free(lm_gen_session *s);

// Checks request parameters (stop strings, limits) without a session.
lm_status lm_gen_req_check(const lm_gen_req_params *rp);

// Queues a request of prompt token ids. A request that can never run (too
// long for the context, bad ids, bad parameters) returns its error and is not
// queued (*h = -1); LM_ERR_OOM is a failure of the session.
lm_status lm_gen_session_add(lm_gen_session *s, const int32_t *ids, int n_ids, const lm_gen_req_params *rp, int *h);

// Ends request h now, without on_done: its sequence and KV pages are freed
// before the next step. No-op for a finished request.
void lm_gen_session_cancel(lm_gen_session *s, int h);

// One scheduler step; *active is false when no request is waiting or running.
lm_status lm_gen_session_step(lm_gen_session *s, bool *active);

void lm_gen_session_stats(const lm_gen_session *s, lm_sched_stats *out);
long lm_gen_session_gen_tokens(const lm_gen_session *s);

#endif
