// lightmoe serve: an OpenAI-compatible HTTP server on the generation session
// (src/engine/gen.h), the scheduler that `generate --prompts` uses too.
//
// Threads: libmicrohttpd runs one thread per connection (a handler may block
// while its request is generated); one engine thread owns the model context
// and the session: between steps it admits new requests and cancels the
// ones whose client went away, then runs a step. One mutex guards the
// requests and the queue; a condition variable wakes the connections when a
// step produced text.
//
// HTTP library: libmicrohttpd (Debian libmicrohttpd-dev): mature, C, small,
// thread-per-connection mode fits a handler that waits on the engine, and it
// enforces connection time-outs and memory limits itself.

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "engine/gen.h"
#include "template/chat.h"
#include "util/file.h"

static const char help[] =
    "usage: lightmoe serve [-m DIR] [options]\n"
    "\n"
    "Serves the model over HTTP with OpenAI's API: POST /v1/completions and\n"
    "/v1/chat/completions (streaming as server-sent events), GET /v1/models,\n"
    "/health and /metrics (Prometheus). Requests join the running batch at\n"
    "step boundaries and leave it independently; a client that disconnects\n"
    "cancels its request and frees its KV pages. Chat requests are rendered with\n"
    "the checkpoint's chat template (tokenizer_config.json or chat_template.jinja).\n"
    "\n"
    "  -m, --model DIR       checkpoint directory (default: the shipped model)\n"
    "      --host ADDR       address to bind (default 127.0.0.1: loopback only)\n"
    "      --port N          TCP port (default 8080; 0 picks a free one)\n"
    "      --api-key KEY     require 'Authorization: Bearer KEY' (or $LIGHTMOE_API_KEY)\n"
    "      --api-key-file F  the key from a file (first line)\n"
    "      --max-seqs N      sequences decoded at once (default 64)\n"
    "      --ctx N           context length per sequence (default: the model's)\n"
    "      --max-queue N     requests waiting beyond the running ones before new ones\n"
    "                        get 429 (default 256)\n"
    "      --max-tokens-cap N  the most tokens one request may ask for (default 4096)\n"
    "      --max-body BYTES  request body limit (default 1M)\n"
    "      --timeout S       drop a connection idle for S seconds (default 60)\n"
    "      --kv-mem BYTES    KV cache budget (default: a quarter of free memory)\n"
    "      --served-name N   model name in the API (default: the directory's name)\n"
    "      --port-file F     write the bound port to F once listening (tests)\n" CLI_MODEL_OPTS_HELP
    "\n"
    "Sampling: temperature (default 1), top_p, top_k, seed (default: a fresh one per\n"
    "request; give one for reproducible text: the same request with the same seed\n"
    "gives the same text here and with `generate --seed`), n choices (choice i\n"
    "uses random stream i of the seed), stop, logprobs/top_logprobs, echo.\n"
    "SIGINT/SIGTERM: stop accepting, finish the requests in flight, exit; a second\n"
    "signal cancels them.\n";

// ------------------------------------------------------------- requests ---

typedef struct choice {
    int prompt;          // index into the request's prompts
    int h;               // session handle, -1 before admission
    char *text;          // generated text so far
    size_t len, cap, sent;
    lm_gen_token *tok;   // logprob records (when asked)
    int n_tok, cap_tok, tok_sent;
    int n_gen;
    lm_finish finish;
    bool done;
    bool started, final_sent;  // streaming: the first chunk (role, echo) and the finish chunk are out
} choice;

typedef struct sreq {
    int refs;                      // the connection's and the engine's
    bool chat, stream, include_usage, echo;
    int logprobs;                  // -1 none; else alternatives per token
    char id[48];
    long created;
    int n_prompts, n_choices;
    int32_t **ids;                 // [n_prompts] prompt token ids
    int *n_ids;
    char **prompt_text;            // completions: for echo
    lm_gen_req_params gp;
    char **stops;
    choice *ch;
    bool admitted, cancelled, finished, final_sent;
    char *error;                   // a failure after acceptance
    int fd;                        // the client's socket, for hang-up detection
    struct sreq *next;             // inbox
} sreq;

typedef struct server {
    pthread_mutex_t mu;
    pthread_cond_t out_cv;   // connections: new output
    pthread_cond_t in_cv;    // engine: new request or shutdown
    sreq *inbox, *inbox_tail;
    sreq **live;             // admitted, unfinished
    int n_live, cap_live;
    int n_waiting;           // queued or admitted but not finished
    bool closing, stopping;
    // engine
    lm_context *ctx;
    const lm_tokenizer *tok;
    lm_gen_session *S;
    sreq **hreq;             // session handle -> request
    int *hch;                // session handle -> choice
    int cap_hreq, cap_hch;
    lm_model_info mi;
    int n_ctx, max_seqs, max_queue, max_tokens_cap;
    size_t max_body;
    const char *api_key;
    const char *model_name;
    lm_chat_template *tmpl;  // NULL: the checkpoint has none (chat requests get 400)
    // metrics
    long m_requests, m_rejected, m_errors, m_prompt_tokens, m_gen_tokens, m_cancelled;
    int m_running, m_batch, m_pages_used, m_pages_total;
    double m_step_s, m_tps;
    lm_status engine_err;
    uint64_t seed_state;
} server;

static volatile sig_atomic_t g_signals;
static void on_signal(int sig) {
    (void)sig;
    g_signals++;
}

static void req_free(sreq *r) {
    if (!r) return;
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->ids ? r->ids[i] : NULL);
        free(r->prompt_text ? r->prompt_text[i] : NULL);
    }
    free(r->ids);
    free(r->n_ids);
    free(r->prompt_text);
    for (int i = 0; i < r->gp.n_stop; i++) free(r->stops[i]);
    free(r->stops);
    for (int i = 0; i < r->n_choices; i++) {
        free(r->ch[i].text);
        free(r->ch[i].tok);
    }
    free(r->ch);
    free(r->error);
    free(r);
}

static void req_unref(server *s, sreq *r) {  // with s->mu held
    if (--r->refs == 0) req_free(r);
}

static bool grow(void **p, int *cap, int need, size_t el) {
    if (need <= *cap) return true;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * el);
    if (!q) return false;
    *p = q, *cap = c;
    return true;
}

static bool buf_add(char **b, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = (*len + n + 1) * 2;
        char *t = realloc(*b, c);
        if (!t) return false;
        *b = t, *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return true;
}

// --------------------------------------------------------------- engine ---

static int ev_text(void *user, int h, const char *text, size_t len) {
    server *s = user;
    pthread_mutex_lock(&s->mu);
    sreq *r = s->hreq[h];
    choice *c = &r->ch[s->hch[h]];
    if (!buf_add(&c->text, &c->len, &c->cap, text, len) && !r->error) r->error = strdup("out of memory");
    int stop = r->cancelled;  // the connections are woken once per step, not per piece
    pthread_mutex_unlock(&s->mu);
    return stop;
}

static void ev_token(void *user, int h, const lm_gen_token *t) {
    server *s = user;
    pthread_mutex_lock(&s->mu);
    sreq *r = s->hreq[h];
    choice *c = &r->ch[s->hch[h]];
    if (grow((void **)&c->tok, &c->cap_tok, c->n_tok + 1, sizeof *c->tok)) c->tok[c->n_tok++] = *t;
    pthread_mutex_unlock(&s->mu);
}

// A request whose every choice is done leaves the engine.
static void engine_release(server *s, sreq *r) {
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i] == r) {
            s->live[i] = s->live[--s->n_live];
            break;
        }
    r->finished = true;
    if (r->cancelled) s->m_cancelled++;
    s->n_waiting--;
    pthread_cond_broadcast(&s->out_cv);
    req_unref(s, r);
}

static void ev_done(void *user, int h, lm_gen_result *res) {
    server *s = user;
    pthread_mutex_lock(&s->mu);
    sreq *r = s->hreq[h];
    choice *c = &r->ch[s->hch[h]];
    c->done = true;
    c->finish = res->finish;
    c->n_gen = res->n_gen_tokens;
    s->m_gen_tokens += res->n_gen_tokens;
    bool all = true;
    for (int i = 0; i < r->n_choices; i++) all &= r->ch[i].done;
    if (all) engine_release(s, r);
    else pthread_cond_broadcast(&s->out_cv);
    pthread_mutex_unlock(&s->mu);
}

// With s->mu held: the inbox into the session, cancellations out of it.
static void engine_admit(server *s) {
    while (s->inbox) {
        sreq *r = s->inbox;
        s->inbox = r->next;
        if (!s->inbox) s->inbox_tail = NULL;
        r->admitted = true;
        if (r->cancelled || !grow((void **)&s->live, &s->cap_live, s->n_live + 1, sizeof *s->live)) {
            r->finished = true;
            s->n_waiting--;
            req_unref(s, r);
            continue;
        }
        s->live[s->n_live++] = r;
        for (int i = 0; i < r->n_choices; i++) {
            choice *c = &r->ch[i];
            lm_gen_req_params gp = r->gp;
            gp.stream = (uint64_t)(i % (r->n_choices / r->n_prompts));
            int h = -1;
            lm_status st = lm_gen_session_add(s->S, r->ids[c->prompt], r->n_ids[c->prompt], &gp, &h);
            if (!st && !(grow((void **)&s->hreq, &s->cap_hreq, h + 1, sizeof *s->hreq) &&
                         grow((void **)&s->hch, &s->cap_hch, h + 1, sizeof *s->hch))) {
                lm_gen_session_cancel(s->S, h);
                st = LM_ERR_OOM;
            }
            if (st) {  // checked before it was queued: only resources fail here
                if (!r->error) r->error = strdup(lm_last_error());
                c->done = true;
                c->finish = LM_FINISH_ERROR;
                continue;
            }
            c->h = h;
            s->hreq[h] = r;
            s->hch[h] = i;
        }
        bool all = true;
        for (int i = 0; i < r->n_choices; i++) all &= r->ch[i].done;
        if (all) engine_release(s, r);
    }
    for (int i = 0; i < s->n_live; i++) {
        sreq *r = s->live[i];
        if (!r->cancelled) continue;
        for (int j = 0; j < r->n_choices; j++)
            if (!r->ch[j].done && r->ch[j].h >= 0) {
                lm_gen_session_cancel(s->S, r->ch[j].h);
                r->ch[j].done = true;
                r->ch[j].finish = LM_FINISH_ERROR;
            }
        engine_release(s, r);
        i--;
    }
}

static void *engine_main(void *arg) {
    server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        engine_admit(s);
        lm_sched_stats ss;
        lm_gen_session_stats(s->S, &ss);
        // the gauges also after cancellations, which free sequences between steps
        s->m_running = ss.running;
        s->m_pages_used = s->m_pages_total - lm_kv_pages_free(s->ctx);
        bool work = ss.running > 0 || ss.waiting > 0;
        if (!work) {
            if (s->stopping) break;
            pthread_cond_wait(&s->in_cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        double t0 = cli_now();
        long before = ss.tokens_computed;
        bool active;
        lm_status st = lm_gen_session_step(s->S, &active);
        double dt = cli_now() - t0;
        lm_gen_session_stats(s->S, &ss);
        pthread_mutex_lock(&s->mu);
        if (st) {  // the model failed: every request in flight gets the error
            s->engine_err = st;
            fprintf(stderr, "lightmoe serve: the engine failed: %s\n", lm_last_error());
            for (int i = 0; i < s->n_live; i++) {
                if (!s->live[i]->error) s->live[i]->error = strdup(lm_last_error());
                s->live[i]->cancelled = true;
            }
            engine_admit(s);
            break;
        }
        pthread_cond_broadcast(&s->out_cv);
        s->m_step_s = dt;
        s->m_batch = (int)(ss.tokens_computed - before);
        s->m_tps = dt > 0 ? 0.8 * s->m_tps + 0.2 * (s->m_batch / dt) : s->m_tps;
        s->m_running = ss.running;
        s->m_pages_used = s->m_pages_total - lm_kv_pages_free(s->ctx);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

// ------------------------------------------------------------ responses ---

typedef struct conn {
    char *body;
    size_t len, cap;
    bool too_big;
    server *s;
    sreq *r;
    char *out;        // formatted, not yet sent
    size_t out_len, out_cap, out_pos;
    bool out_done;
    int refs;         // the connection's, and the streamed response's while it exists
    struct MHD_Connection *mc;
} conn;

static enum MHD_Result send_text(struct MHD_Connection *c, int code, const char *ctype, const char *body,
                                 const char *retry_after) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after) MHD_add_response_header(resp, "Retry-After", retry_after);
    if (code == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, resp);
    MHD_destroy_response(resp);
    return ret;
}

// OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.
static enum MHD_Result send_error_v(server *s, struct MHD_Connection *c, int code, const char *type, const char *param,
                                    const char *ecode, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (ecode) cJSON_AddStringToObject(e, "code", ecode);
    else cJSON_AddNullToObject(e, "code");
    char *body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    pthread_mutex_lock(&s->mu);
    if (code == 429 || code == 503) s->m_rejected++;
    else s->m_errors++;
    pthread_mutex_unlock(&s->mu);
    enum MHD_Result ret = body ? send_text(c, code, "application/json", body, code == 429 || code == 503 ? "1" : NULL)
                               : MHD_NO;
    free(body);
    return ret;
}

static enum MHD_Result send_error(server *s, struct MHD_Connection *c, int code, const char *type, const char *param,
                                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error(server *s, struct MHD_Connection *c, int code, const char *type, const char *param,
                                  const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result r = send_error_v(s, c, code, type, param, NULL, fmt, ap);
    va_end(ap);
    return r;
}

static enum MHD_Result send_error_code(server *s, struct MHD_Connection *c, int code, const char *type,
                                       const char *param, const char *ecode, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static enum MHD_Result send_error_code(server *s, struct MHD_Connection *c, int code, const char *type,
                                       const char *param, const char *ecode, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result r = send_error_v(s, c, code, type, param, ecode, fmt, ap);
    va_end(ap);
    return r;
}

static const char *finish_name(lm_finish f) { return f == LM_FINISH_LENGTH ? "length" : "stop"; }

// The token's text (a byte-level piece may be an incomplete character: its
// bytes are what OpenAI's `bytes` field is for).
static char *token_text(const lm_tokenizer *tok, int32_t id) {
    char *t = NULL;
    if (lm_detokenize(tok, &id, 1, false, &t)) return strdup("");
    return t;
}

static cJSON *bytes_array(const char *t) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)t; *p; p++) cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

// Logprobs of tokens [from, to) of a choice, in the endpoint's format.
static cJSON *logprobs_json(server *s, sreq *r, choice *c, int from, int to, size_t text_off) {
    if (r->logprobs < 0) return cJSON_CreateNull();
    cJSON *lp = cJSON_CreateObject();
    if (r->chat) {
        cJSON *content = cJSON_AddArrayToObject(lp, "content");
        for (int i = from; i < to; i++) {
            lm_gen_token *t = &c->tok[i];
            cJSON *o = cJSON_CreateObject();
            char *tt = token_text(s->tok, t->id);
            cJSON_AddStringToObject(o, "token", tt);
            cJSON_AddNumberToObject(o, "logprob", t->logprob);
            cJSON_AddItemToObject(o, "bytes", bytes_array(tt));
            free(tt);
            cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
            for (int j = 0; j < t->n_top && j < r->logprobs; j++) {
                cJSON *a = cJSON_CreateObject();
                char *at = token_text(s->tok, t->top_id[j]);
                cJSON_AddStringToObject(a, "token", at);
                cJSON_AddNumberToObject(a, "logprob", t->top_logprob[j]);
                cJSON_AddItemToObject(a, "bytes", bytes_array(at));
                free(at);
                cJSON_AddItemToArray(top, a);
            }
            cJSON_AddItemToArray(content, o);
        }
        return lp;
    }
    cJSON *tokens = cJSON_AddArrayToObject(lp, "tokens"), *tlp = cJSON_AddArrayToObject(lp, "token_logprobs"),
          *top = cJSON_AddArrayToObject(lp, "top_logprobs"), *off = cJSON_AddArrayToObject(lp, "text_offset");
    for (int i = from; i < to; i++) {
        lm_gen_token *t = &c->tok[i];
        char *tt = token_text(s->tok, t->id);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(tt));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)text_off));
        text_off += strlen(tt);
        free(tt);
        cJSON_AddItemToArray(tlp, cJSON_CreateNumber(t->logprob));
        cJSON *o = cJSON_CreateObject();
        for (int j = 0; j < t->n_top && j < r->logprobs; j++) {
            char *at = token_text(s->tok, t->top_id[j]);
            if (!cJSON_GetObjectItemCaseSensitive(o, at)) cJSON_AddNumberToObject(o, at, t->top_logprob[j]);
            free(at);
        }
        cJSON_AddItemToArray(top, o);
    }
    return lp;
}

static void add_usage(cJSON *o, sreq *r) {
    int pt = 0, ct = 0;
    for (int i = 0; i < r->n_prompts; i++) pt += r->n_ids[i] * (r->n_choices / r->n_prompts);
    for (int i = 0; i < r->n_choices; i++) ct += r->ch[i].n_gen;
    // prompt tokens count once per prompt, as OpenAI bills them
    pt /= r->n_choices / r->n_prompts;
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", pt);
    cJSON_AddNumberToObject(u, "completion_tokens", ct);
    cJSON_AddNumberToObject(u, "total_tokens", pt + ct);
}

static cJSON *head(server *s, sreq *r, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", s->model_name);
    return o;
}

static bool out_add(conn *k, const char *s, size_t n) { return buf_add(&k->out, &k->out_len, &k->out_cap, s, n); }

static bool out_sse(conn *k, cJSON *o) {
    char *j = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!j) return false;
    bool ok = out_add(k, "data: ", 6) && out_add(k, j, strlen(j)) && out_add(k, "\n\n", 2);
    free(j);
    return ok;
}

// With s->mu held: formats what the request has that the client has not
// seen. Streaming: one chunk per choice with new text; the finish chunks; the
// usage chunk; [DONE]. Otherwise the whole response once finished.
static void format_output(conn *k) {
    server *s = k->s;
    sreq *r = k->r;
    if (r->error && !r->final_sent) {
        // after the 200 header: the error goes in the body, in OpenAI's shape
        cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
        cJSON_AddStringToObject(e, "message", r->error);
        cJSON_AddStringToObject(e, "type", "server_error");
        cJSON_AddNullToObject(e, "param");
        cJSON_AddNullToObject(e, "code");
        if (r->stream) out_sse(k, root), out_add(k, "data: [DONE]\n\n", 14);
        else {
            char *j = cJSON_PrintUnformatted(root);
            cJSON_Delete(root);
            if (j) out_add(k, j, strlen(j)), free(j);
        }
        r->final_sent = true;
        k->out_done = true;
        return;
    }
    const char *obj = r->chat ? (r->stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
    if (!r->stream) {
        if (!r->finished) return;
        cJSON *o = head(s, r, obj), *chs = cJSON_AddArrayToObject(o, "choices");
        for (int i = 0; i < r->n_choices; i++) {
            choice *c = &r->ch[i];
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            if (r->chat) {
                cJSON *m = cJSON_AddObjectToObject(ch, "message");
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON_AddStringToObject(m, "content", c->text ? c->text : "");
            } else {
                char *t = NULL;
                size_t tl = 0, tc = 0;
                if (r->echo) buf_add(&t, &tl, &tc, r->prompt_text[c->prompt], strlen(r->prompt_text[c->prompt]));
                buf_add(&t, &tl, &tc, c->text ? c->text : "", c->len);
                cJSON_AddStringToObject(ch, "text", t ? t : "");
                free(t);
            }
            cJSON_AddItemToObject(ch, "logprobs", logprobs_json(s, r, c, 0, c->n_tok, r->echo ? strlen(r->prompt_text[c->prompt]) : 0));
            cJSON_AddStringToObject(ch, "finish_reason", finish_name(c->finish));
            cJSON_AddItemToArray(chs, ch);
        }
        add_usage(o, r);
        char *j = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (j) out_add(k, j, strlen(j)), free(j);
        r->final_sent = true;
        k->out_done = true;
        return;
    }
    bool all_final = true;
    for (int i = 0; i < r->n_choices; i++) {
        choice *c = &r->ch[i];
        // chat's first chunk carries the role, an echoed completion's the prompt
        bool fresh = c->len > c->sent || c->n_tok > c->tok_sent || (!c->started && (r->chat || r->echo));
        if (fresh) {
            cJSON *o = head(s, r, obj), *chs = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            char *t = NULL;
            size_t tl = 0, tc = 0;
            if (!c->started && !r->chat && r->echo)
                buf_add(&t, &tl, &tc, r->prompt_text[c->prompt], strlen(r->prompt_text[c->prompt]));
            buf_add(&t, &tl, &tc, c->text ? c->text + c->sent : "", c->len - c->sent);
            if (r->chat) {
                cJSON *d = cJSON_AddObjectToObject(ch, "delta");
                if (!c->started) cJSON_AddStringToObject(d, "role", "assistant");
                cJSON_AddStringToObject(d, "content", t ? t : "");
            } else {
                cJSON_AddStringToObject(ch, "text", t ? t : "");
            }
            free(t);
            size_t off = c->sent + (!r->chat && r->echo ? strlen(r->prompt_text[c->prompt]) : 0);
            cJSON_AddItemToObject(ch, "logprobs", logprobs_json(s, r, c, c->tok_sent, c->n_tok, off));
            cJSON_AddNullToObject(ch, "finish_reason");
            cJSON_AddItemToArray(chs, ch);
            if (r->include_usage) cJSON_AddNullToObject(o, "usage");
            out_sse(k, o);
            c->sent = c->len, c->tok_sent = c->n_tok, c->started = true;
        }
        if (c->done && !c->final_sent) {
            cJSON *o = head(s, r, obj), *chs = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            if (r->chat) cJSON_AddObjectToObject(ch, "delta");
            else cJSON_AddStringToObject(ch, "text", "");
            cJSON_AddNullToObject(ch, "logprobs");
            cJSON_AddStringToObject(ch, "finish_reason", finish_name(c->finish));
            cJSON_AddItemToArray(chs, ch);
            if (r->include_usage) cJSON_AddNullToObject(o, "usage");
            out_sse(k, o);
            c->final_sent = true;
        }
        all_final &= c->final_sent;
    }
    if (all_final && r->finished && !r->final_sent) {
        if (r->include_usage) {
            cJSON *o = head(s, r, obj);
            cJSON_AddArrayToObject(o, "choices");
            add_usage(o, r);
            out_sse(k, o);
        }
        out_add(k, "data: [DONE]\n\n", 14);
        r->final_sent = true;
        k->out_done = true;
    }
}

// The client closed its end (or the socket broke): poll says so without
// reading anything the client may still be sending.
static bool hung_up(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return true;
    if (p.revents & POLLIN) {
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0;
    }
    return false;
}

// libmicrohttpd asks for the body piece by piece: block (this is the
// connection's own thread) until there is output, the request ended, or the
// client went away (then the request is cancelled within one step).
static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max) {
    conn *k = cls;
    server *s = k->s;
    (void)pos;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (k->out_pos < k->out_len) {
            size_t n = k->out_len - k->out_pos < max ? k->out_len - k->out_pos : max;
            memcpy(buf, k->out + k->out_pos, n);
            k->out_pos += n;
            if (k->out_pos == k->out_len) k->out_pos = k->out_len = 0;
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)n;
        }
        if (k->out_done) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        format_output(k);
        if (k->out_len > 0 || k->out_done) continue;
        if (hung_up(k->r->fd)) {
            k->r->cancelled = true;
            pthread_cond_signal(&s->in_cv);
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->out_cv, &s->mu, &ts);
    }
}

// The response is over (sent, or the connection dropped): a request still
// running is cancelled.
static void conn_put(conn *k) {  // with s->mu held
    if (--k->refs > 0) return;
    free(k->body);
    free(k->out);
    free(k);
}

static void reader_free(void *cls) {
    conn *k = cls;
    server *s = k->s;
    pthread_mutex_lock(&s->mu);
    if (k->r) {
        if (!k->r->finished) {
            k->r->cancelled = true;
            pthread_cond_signal(&s->in_cv);
        }
        req_unref(s, k->r);
        k->r = NULL;
    }
    conn_put(k);
    pthread_mutex_unlock(&s->mu);
}

// ------------------------------------------------------------ requests ---

typedef struct perr {  // an error found while reading a request (400 unless status says otherwise)
    char msg[512];
    const char *param;
    int status;
    const char *code;
} perr;

static bool bad(perr *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool bad(perr *e, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->param = param;
    return false;
}

static bool get_num(cJSON *o, const char *key, double lo, double hi, bool integer, double *out, perr *e) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bad(e, key, "'%s' must be a number", key);
    double d = v->valuedouble;
    if (integer && d != floor(d)) return bad(e, key, "'%s' must be an integer", key);
    if (d < lo || d > hi) return bad(e, key, "'%s' is %g; it must be between %g and %g", key, d, lo, hi);
    *out = d;
    return true;
}

static bool get_bool(cJSON *o, const char *key, bool *out, perr *e) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsBool(v)) return bad(e, key, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return true;
}

static bool add_prompt(server *s, sreq *r, const char *text, const int32_t *ids, int n_ids, bool special, perr *e) {
    int i = r->n_prompts;
    int32_t **pi = realloc(r->ids, (size_t)(i + 1) * sizeof *pi);
    if (pi) r->ids = pi;
    int *pn = realloc(r->n_ids, (size_t)(i + 1) * sizeof *pn);
    if (pn) r->n_ids = pn;
    char **pt = realloc(r->prompt_text, (size_t)(i + 1) * sizeof *pt);
    if (pt) r->prompt_text = pt;
    if (!pi || !pn || !pt) return bad(e, NULL, "out of memory");
    r->ids[i] = NULL, r->prompt_text[i] = NULL, r->n_ids[i] = 0;
    r->n_prompts++;
    if (text) {
        size_t n = 0;
        if (lm_tokenize(s->tok, text, strlen(text), special, &r->ids[i], &n))
            return bad(e, "prompt", "the prompt cannot be tokenized: %s", lm_last_error());
        r->n_ids[i] = (int)n;
        r->prompt_text[i] = strdup(text);
    } else {
        if (!(r->ids[i] = malloc((size_t)(n_ids ? n_ids : 1) * sizeof *ids))) return bad(e, NULL, "out of memory");
        memcpy(r->ids[i], ids, (size_t)n_ids * sizeof *ids);
        r->n_ids[i] = n_ids;
        if (lm_detokenize(s->tok, ids, (size_t)n_ids, false, &r->prompt_text[i])) r->prompt_text[i] = strdup("");
    }
    if (!r->prompt_text[i]) return bad(e, NULL, "out of memory");
    if (r->n_ids[i] == 0) return bad(e, "prompt", "the prompt gives no tokens");
    for (int t = 0; t < r->n_ids[i]; t++)
        if (r->ids[i][t] < 0 || r->ids[i][t] >= s->mi.vocab)
            return bad(e, "prompt", "token id %d is outside the vocabulary of %d", r->ids[i][t], s->mi.vocab);
    return true;
}

static bool token_array(cJSON *a, int32_t **out, int *n, perr *e) {
    int m = cJSON_GetArraySize(a);
    *out = malloc((size_t)(m ? m : 1) * sizeof **out);
    if (!*out) return bad(e, NULL, "out of memory");
    *n = 0;
    cJSON *v;
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble > 2147483647.0)
            return bad(e, "prompt", "a token array holds only token ids (non-negative integers)");
        (*out)[(*n)++] = (int32_t)v->valuedouble;
    }
    return true;
}

// The body of /v1/completions or /v1/chat/completions as a request ready
// for the engine, or false with the 400 to send.
static bool parse_request(server *s, const char *body, size_t len, bool chat, sreq **out, perr *e) {
    *out = NULL;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j) return bad(e, NULL, "the body is not valid JSON");
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return bad(e, NULL, "the body must be a JSON object");
    }
    sreq *r = calloc(1, sizeof *r);
    bool ok = r != NULL;
    if (!ok) bad(e, NULL, "out of memory");
    else {
        r->chat = chat;
        r->logprobs = -1;
        r->fd = -1;
        r->gp = lm_gen_req_default_params();
        r->gp.sampler.temperature = 1.0f;
    }
    // the model: the one this server serves, if named
    cJSON *mdl = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (ok && mdl && !cJSON_IsNull(mdl)) {
        if (!cJSON_IsString(mdl)) ok = bad(e, "model", "'model' must be a string");
        else if (strcmp(mdl->valuestring, s->model_name)) {
            ok = bad(e, "model", "the model '%.200s' does not exist; this server serves '%.200s'", mdl->valuestring,
                     s->model_name);
            e->status = 404, e->code = "model_not_found";
        }
    }
    // prompt / messages
    if (ok && chat) {
        cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "messages");
        if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0) ok = bad(e, "messages", "'messages' must be a non-empty array");
        else if (!s->tmpl)
            ok = bad(e, "messages", "this model has no chat template (tokenizer_config.json chat_template or "
                     "chat_template.jinja): use /v1/completions");
        char *text = NULL;
        if (ok) {
            char why[512];
            text = lm_chat_render(s->tmpl, j, why, sizeof why);
            if (!text) ok = bad(e, "messages", "%s", why);
        }
        if (ok) ok = add_prompt(s, r, text, NULL, 0, false, e);
        free(text);
    } else if (ok) {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        if (cJSON_IsString(p)) ok = add_prompt(s, r, p->valuestring, NULL, 0, true, e);
        else if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0) {
            cJSON *f = cJSON_GetArrayItem(p, 0);
            if (cJSON_IsNumber(f)) {
                int32_t *ids = NULL;
                int n = 0;
                ok = token_array(p, &ids, &n, e) && add_prompt(s, r, NULL, ids, n, false, e);
                free(ids);
            } else {
                cJSON *v;
                cJSON_ArrayForEach(v, p) {
                    if (!ok) break;
                    if (cJSON_IsString(v)) ok = add_prompt(s, r, v->valuestring, NULL, 0, true, e);
                    else if (cJSON_IsArray(v)) {
                        int32_t *ids = NULL;
                        int n = 0;
                        ok = token_array(v, &ids, &n, e) && add_prompt(s, r, NULL, ids, n, false, e);
                        free(ids);
                    } else ok = bad(e, "prompt", "'prompt' must be a string, an array of strings, or token ids");
                }
                if (ok && r->n_prompts > 64) ok = bad(e, "prompt", "at most 64 prompts per request");
            }
        } else ok = bad(e, "prompt", "'prompt' must be a string, an array of strings, or token ids");
    }
    // parameters
    double v, n = 1, maxt = -1, seed = -1;
    bool have_seed = false;
    if (ok) ok = get_num(j, "n", 1, 16, true, &n, e);
    if (ok) ok = get_num(j, "max_tokens", 0, 1e9, true, &maxt, e);
    if (ok && chat) ok = get_num(j, "max_completion_tokens", 0, 1e9, true, &maxt, e);
    if (ok) {
        v = r->gp.sampler.temperature;
        ok = get_num(j, "temperature", 0, 2, false, &v, e);
        r->gp.sampler.temperature = (float)v;
    }
    if (ok) {
        v = 1;
        ok = get_num(j, "top_p", 0, 1, false, &v, e);
        if (ok && v <= 0) ok = bad(e, "top_p", "'top_p' must be above 0");
        r->gp.sampler.top_p = (float)v;
    }
    if (ok) {
        v = 0;
        ok = get_num(j, "top_k", -1, 1 << 24, true, &v, e);
        r->gp.sampler.top_k = v < 0 ? 0 : (int)v;
    }
    if (ok) {
        ok = get_num(j, "seed", -9.2e18, 1.8e19, true, &seed, e);
        have_seed = ok && cJSON_GetObjectItemCaseSensitive(j, "seed") &&
                    !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "seed"));
    }
    if (ok) ok = get_bool(j, "stream", &r->stream, e);
    if (ok && !chat) ok = get_bool(j, "echo", &r->echo, e);
    if (ok) {
        cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
        if (so && !cJSON_IsNull(so)) {
            if (!cJSON_IsObject(so)) ok = bad(e, "stream_options", "'stream_options' must be an object");
            else if (!r->stream) ok = bad(e, "stream_options", "'stream_options' needs 'stream': true");
            else ok = get_bool(so, "include_usage", &r->include_usage, e);
        }
    }
    if (ok && chat) {
        bool lp = false;
        double top = 0;
        ok = get_bool(j, "logprobs", &lp, e) && get_num(j, "top_logprobs", 0, LM_GEN_MAX_TOP_LOGPROBS, true, &top, e);
        if (ok && !lp && cJSON_GetObjectItemCaseSensitive(j, "top_logprobs") &&
            !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "top_logprobs")))
            ok = bad(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (ok && lp) r->logprobs = (int)top;
    } else if (ok) {
        double lp = -1;
        ok = get_num(j, "logprobs", 0, 5, true, &lp, e);
        r->logprobs = (int)lp;
    }
    if (ok) {  // stop: a string or up to 4 strings (we take up to LM_MAX_STOPS)
        cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stop");
        int ns = !st || cJSON_IsNull(st) ? 0 : cJSON_IsString(st) ? 1 : cJSON_IsArray(st) ? cJSON_GetArraySize(st) : -1;
        if (ns < 0 || ns > LM_MAX_STOPS) ok = bad(e, "stop", "'stop' must be a string or an array of at most %d strings", LM_MAX_STOPS);
        else if (ns > 0 && !(r->stops = calloc((size_t)ns, sizeof *r->stops))) ok = bad(e, NULL, "out of memory");
        for (int i = 0; ok && i < ns; i++) {
            cJSON *x = cJSON_IsString(st) ? st : cJSON_GetArrayItem(st, i);
            if (!cJSON_IsString(x) || !x->valuestring[0]) ok = bad(e, "stop", "stop strings must be non-empty strings");
            else if (!(r->stops[i] = strdup(x->valuestring))) ok = bad(e, NULL, "out of memory");
            else r->gp.n_stop++;
        }
        r->gp.stop = (const char *const *)r->stops;
    }
    // limits: the context per prompt, and the server's cap
    if (ok) {
        int longest = 0;
        for (int i = 0; i < r->n_prompts; i++) longest = r->n_ids[i] > longest ? r->n_ids[i] : longest;
        if (longest >= s->n_ctx)
            ok = bad(e, chat ? "messages" : "prompt", "this model's context is %d tokens; the prompt has %d", s->n_ctx,
                     longest);
        else if (maxt > s->max_tokens_cap)
            ok = bad(e, "max_tokens", "max_tokens %.0f is above this server's cap of %d", maxt, s->max_tokens_cap);
        else if (maxt >= 0 && longest + maxt > s->n_ctx)
            ok = bad(e, "max_tokens", "this model's context is %d tokens; the prompt (%d) + max_tokens (%.0f) exceeds it",
                     s->n_ctx, longest, maxt);
        int room = s->n_ctx - longest;
        r->gp.max_tokens = maxt >= 0 ? (int)maxt : (room < s->max_tokens_cap ? room : s->max_tokens_cap);
        if (ok && r->gp.max_tokens == 0) ok = bad(e, "max_tokens", "max_tokens 0 asks for nothing: give at least 1");
    }
    if (ok) {
        r->gp.top_logprobs = r->logprobs;
        if (lm_gen_req_check(&r->gp)) ok = bad(e, "stop", "%s", lm_last_error());
    }
    if (ok) {
        pthread_mutex_lock(&s->mu);
        if (!have_seed) {  // a fresh seed per request: OpenAI's default is not reproducible either
            s->seed_state = s->seed_state * 6364136223846793005ull + 1442695040888963407ull;
            r->gp.sampler.seed = s->seed_state ^ (uint64_t)time(NULL);
        } else r->gp.sampler.seed = (uint64_t)(int64_t)seed;
        uint64_t idn = s->seed_state * 2862933555777941757ull + (uint64_t)s->m_requests;
        pthread_mutex_unlock(&s->mu);
        snprintf(r->id, sizeof r->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)idn);
        r->created = (long)time(NULL);
        int per = (int)n;
        r->n_choices = r->n_prompts * per;
        if (!(r->ch = calloc((size_t)r->n_choices, sizeof *r->ch))) ok = bad(e, NULL, "out of memory");
        for (int i = 0; ok && i < r->n_choices; i++) r->ch[i].prompt = i / per, r->ch[i].h = -1;
    }
    cJSON_Delete(j);
    if (!ok) {
        req_free(r);
        return false;
    }
    *out = r;
    return true;
}

// ------------------------------------------------------------- handlers ---

static bool authorized(server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    const char *k = h + 7;
    size_t a = strlen(k), b = strlen(s->api_key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned)(unsigned char)(i < a ? k[i] : 0) ^ (unsigned char)s->api_key[i];
    return diff == 0;  // compared in time independent of where it differs
}

static enum MHD_Result send_json(struct MHD_Connection *c, int code, cJSON *o) {
    char *b = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!b) return MHD_NO;
    enum MHD_Result r = send_text(c, code, "application/json", b, NULL);
    free(b);
    return r;
}

static enum MHD_Result metrics(server *s, struct MHD_Connection *c) {
    char b[4096];
    pthread_mutex_lock(&s->mu);
    lm_sched_stats ss = {0};
    int queued = s->n_waiting - s->m_running;
    snprintf(b, sizeof b,
             "# HELP lightmoe_requests_total Completion requests accepted.\n# TYPE lightmoe_requests_total counter\n"
             "lightmoe_requests_total %ld\n"
             "# HELP lightmoe_requests_rejected_total Requests refused with 429/503 (queue full, shutting down).\n"
             "# TYPE lightmoe_requests_rejected_total counter\nlightmoe_requests_rejected_total %ld\n"
             "# HELP lightmoe_request_errors_total Requests answered with a 4xx error.\n"
             "# TYPE lightmoe_request_errors_total counter\nlightmoe_request_errors_total %ld\n"
             "# HELP lightmoe_requests_cancelled_total Requests whose client went away.\n"
             "# TYPE lightmoe_requests_cancelled_total counter\nlightmoe_requests_cancelled_total %ld\n"
             "# HELP lightmoe_prompt_tokens_total Prompt tokens of accepted requests.\n"
             "# TYPE lightmoe_prompt_tokens_total counter\nlightmoe_prompt_tokens_total %ld\n"
             "# HELP lightmoe_generation_tokens_total Tokens generated.\n"
             "# TYPE lightmoe_generation_tokens_total counter\nlightmoe_generation_tokens_total %ld\n"
             "# HELP lightmoe_queue_depth Requests waiting to start.\n# TYPE lightmoe_queue_depth gauge\n"
             "lightmoe_queue_depth %d\n"
             "# HELP lightmoe_running_sequences Sequences in the running batch.\n"
             "# TYPE lightmoe_running_sequences gauge\nlightmoe_running_sequences %d\n"
             "# HELP lightmoe_kv_pages_used KV cache pages in use.\n# TYPE lightmoe_kv_pages_used gauge\n"
             "lightmoe_kv_pages_used %d\n"
             "# HELP lightmoe_kv_pages_total KV cache pages.\n# TYPE lightmoe_kv_pages_total gauge\n"
             "lightmoe_kv_pages_total %d\n"
             "# HELP lightmoe_batch_tokens Tokens in the last step.\n# TYPE lightmoe_batch_tokens gauge\n"
             "lightmoe_batch_tokens %d\n"
             "# HELP lightmoe_step_seconds Duration of the last step.\n# TYPE lightmoe_step_seconds gauge\n"
             "lightmoe_step_seconds %.6f\n"
             "# HELP lightmoe_tokens_per_second Tokens computed per second (moving average over steps).\n"
             "# TYPE lightmoe_tokens_per_second gauge\nlightmoe_tokens_per_second %.1f\n",
             s->m_requests, s->m_rejected, s->m_errors, s->m_cancelled, s->m_prompt_tokens, s->m_gen_tokens,
             queued > 0 ? queued : 0, s->m_running, s->m_pages_used, s->m_pages_total, s->m_batch, s->m_step_s,
             s->m_tps);
    (void)ss;
    pthread_mutex_unlock(&s->mu);
    return send_text(c, 200, "text/plain; version=0.0.4", b, NULL);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    server *s = cls;
    (void)version;
    conn *k = *con_cls;
    if (!k) {  // first call: headers only
        if (!(k = calloc(1, sizeof *k))) return MHD_NO;
        k->s = s, k->mc = c, k->refs = 1;
        *con_cls = k;
        return MHD_YES;
    }
    if (*upload_size) {  // a piece of the body
        if (!k->too_big && k->len + *upload_size > s->max_body) k->too_big = true;
        if (!k->too_big && !buf_add(&k->body, &k->len, &k->cap, upload, *upload_size)) k->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (get && !strcmp(url, "/health")) {
        pthread_mutex_lock(&s->mu);
        bool ok = !s->engine_err && !s->closing;
        pthread_mutex_unlock(&s->mu);
        return send_text(c, ok ? 200 : 503, "application/json", ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}",
                         NULL);
    }
    if (get && !strcmp(url, "/metrics")) return metrics(s, c);
    bool models = !strcmp(url, "/v1/models"), compl = !strcmp(url, "/v1/completions"),
         chat = !strcmp(url, "/v1/chat/completions");
    bool model_one = !strncmp(url, "/v1/models/", 11);
    if (!models && !compl && !chat && !model_one)
        return send_error(s, c, 404, "invalid_request_error", NULL, "no such endpoint: %s %s", method, url);
    if (!authorized(s, c))
        return send_error(s, c, 401, "invalid_request_error", NULL,
                          "missing or wrong API key (send 'Authorization: Bearer KEY')");
    if (models || model_one) {
        if (!get) return send_error(s, c, 405, "invalid_request_error", NULL, "%s needs GET", url);
        if (model_one && strcmp(url + 11, s->model_name))
            return send_error(s, c, 404, "invalid_request_error", "model", "no model named '%s'", url + 11);
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", s->model_name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "lightmoe");
        if (model_one) return send_json(c, 200, m);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), m);
        return send_json(c, 200, o);
    }
    if (!post) return send_error(s, c, 405, "invalid_request_error", NULL, "%s needs POST", url);
    if (k->too_big)
        return send_error(s, c, 413, "invalid_request_error", NULL, "the request body is over the limit of %zu bytes",
                          s->max_body);
    perr e = {{0}, NULL, 400, NULL};
    sreq *r;
    if (!parse_request(s, k->body ? k->body : "", k->len, chat, &r, &e))
        return send_error_code(s, c, e.status, "invalid_request_error", e.param, e.code, "%s", e.msg);
    // admission: a bounded queue, answered at once when full
    pthread_mutex_lock(&s->mu);
    const char *refuse = s->closing ? "the server is shutting down"
                         : s->engine_err ? "the engine failed; see the server's log"
                         : s->n_waiting >= s->max_seqs + s->max_queue ? "too many requests are queued; retry later"
                                                                        : NULL;
    if (refuse) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return send_error(s, c, s->closing || s->engine_err ? 503 : 429,
                          s->closing || s->engine_err ? "server_error" : "rate_limit_error", NULL, "%s", refuse);
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    r->refs = 2;  // this connection's and the engine's
    k->r = r;
    k->refs++;    // the response below holds k until reader_free
    if (s->inbox_tail) s->inbox_tail->next = r;
    else s->inbox = r;
    s->inbox_tail = r;
    s->n_waiting++;
    s->m_requests++;
    for (int i = 0; i < r->n_prompts; i++) s->m_prompt_tokens += r->n_ids[i];
    pthread_cond_signal(&s->in_cv);
    pthread_mutex_unlock(&s->mu);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, reader, k, reader_free);
    if (!resp) {
        pthread_mutex_lock(&s->mu);
        r->cancelled = true;
        k->r = NULL, k->refs--;
        req_unref(s, r);
        pthread_mutex_unlock(&s->mu);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->stream ? "text/event-stream" : "application/json");
    if (r->stream) MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    (void)c, (void)toe;
    conn *k = *con_cls;
    if (!k) return;
    pthread_mutex_lock(&s->mu);
    if (k->r && !k->r->finished) {  // the connection ended before the request: cancel it
        k->r->cancelled = true;
        pthread_cond_signal(&s->in_cv);
    }
    conn_put(k);
    pthread_mutex_unlock(&s->mu);
    *con_cls = NULL;
}

// ----------------------------------------------------------------- main ---

static char *read_key_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "lightmoe serve: --api-key-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char line[4096];
    char *k = fgets(line, sizeof line, f) ? strdup(line) : NULL;
    fclose(f);
    if (k) k[strcspn(k, "\r\n")] = 0;
    if (!k || !*k) {
        fprintf(stderr, "lightmoe serve: --api-key-file %s: the first line holds no key\n", path);
        free(k);
        return NULL;
    }
    return k;
}

int cmd_serve(int argc, char **argv) {
    args a = {argc, 1, argv, "serve", false};
    const char *model_dir = NULL, *host = "127.0.0.1", *key = NULL, *key_file = NULL, *name = NULL, *port_file = NULL;
    int port = 8080, max_seqs = 64, n_ctx = 0, max_queue = 256, cap = 4096, timeout = 60;
    double kv_mem = 0, max_body = 1 << 20;
    cli_model_opts mo = {0};
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--model", "-m", &model_dir) || arg_val(&a, "--host", NULL, &host) ||
            arg_int(&a, "--port", NULL, 0, 65535, &port) || arg_val(&a, "--api-key", NULL, &key) ||
            arg_val(&a, "--api-key-file", NULL, &key_file) || arg_int(&a, "--max-seqs", NULL, 1, 4096, &max_seqs) ||
            arg_int(&a, "--ctx", NULL, 1, 1 << 24, &n_ctx) || arg_int(&a, "--max-queue", NULL, 0, 1 << 20, &max_queue) ||
            arg_int(&a, "--max-tokens-cap", NULL, 1, 1 << 24, &cap) || arg_size(&a, "--max-body", NULL, &max_body) ||
            arg_int(&a, "--timeout", NULL, 1, 86400, &timeout) || arg_size(&a, "--kv-mem", NULL, &kv_mem) ||
            arg_val(&a, "--served-name", NULL, &name) || arg_val(&a, "--port-file", NULL, &port_file) ||
            cli_model_opt(&a, &mo))
            continue;
        arg_unknown(&a, NULL);
    }
    if (!a.failed && key && key_file) arg_fail(&a, "give --api-key or --api-key-file, not both");
    if (!a.failed && key && !*key) arg_fail(&a, "--api-key is empty");
    if (a.failed) return EXIT_USAGE;
    if (!model_dir && !(model_dir = cli_default_model())) return 1;
    char *key_owned = NULL;
    if (key_file && !(key = key_owned = read_key_file(key_file))) return 1;
    if (!key && getenv("LIGHTMOE_API_KEY") && *getenv("LIGHTMOE_API_KEY")) key = getenv("LIGHTMOE_API_KEY");

    int rc = 0;
    lm_model *model = NULL;
    lm_tokenizer *tok = NULL;
    lm_context *ctx = NULL;
    char *tpath = NULL;
    lm_status st;
    server S = {0};
    struct MHD_Daemon *d = NULL;
    pthread_t engine;
    bool engine_started = false;
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.out_cv, NULL);
    pthread_cond_init(&S.in_cv, NULL);

    if (!(tpath = cli_tokenizer_path("serve", model_dir))) rc = 1;
    if (!rc && (st = lm_tokenizer_load(tpath, &tok))) rc = cli_error("serve", st);
    // A template the interpreter cannot handle fails here, not at the first request.
    char why[512];
    int has = 0;
    if (!rc && !(S.tmpl = lm_chat_template_load(model_dir, &has, why, sizeof why)) && has) {
        fprintf(stderr, "lightmoe serve: %s\n", why);
        rc = 1;
    }
    if (!rc && !S.tmpl) fprintf(stderr, "lightmoe serve: %s has no chat template: /v1/chat/completions will answer 400\n",
                                model_dir);
    if (!rc) rc = cli_load_model("serve", model_dir, NULL, false, &mo, &model);
    if (!rc && (st = lm_tokenizer_check_model(tok, model))) rc = cli_error("serve", st);
    if (rc) goto done;
    lm_model_get_info(model, &S.mi);
    lm_context_params cp = lm_context_default_params();
    cp.kv_type = mo.kv_type;
    cp.graphs = !mo.no_graphs;
    cp.executor = cli_device("lightmoe serve", &mo);
    cp.n_seq = max_seqs;
    cp.n_ctx = n_ctx > 0 ? n_ctx : S.mi.max_positions;
    if (cp.n_ctx > S.mi.max_positions) {
        fprintf(stderr, "lightmoe serve: --ctx %d is above the model's %d positions\n", cp.n_ctx, S.mi.max_positions);
        rc = 1;
        goto done;
    }
    cp.n_batch = max_seqs > 512 ? max_seqs : 512;
    cp.n_out = max_seqs;
    cp.gpu_mem = mo.gpu_mem;
    cli_kv_pages(model, &cp, kv_mem);
    if (cp.n_pages < lm_kv_pages_for(cp.n_ctx)) cp.n_pages = lm_kv_pages_for(cp.n_ctx);  // one full request fits
    if ((st = lm_context_init(model, &cp, &ctx))) {
        rc = cli_error("serve", st);
        goto done;
    }
    cli_mem_report("lightmoe serve", model, &cp, ctx, mo.verbose);
    S.ctx = ctx, S.tok = tok, S.n_ctx = cp.n_ctx, S.max_seqs = max_seqs, S.max_queue = max_queue;
    S.max_tokens_cap = cap, S.max_body = (size_t)max_body, S.api_key = key;
    S.m_pages_total = cp.n_pages;
    S.seed_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    const char *base = strrchr(model_dir, '/');
    S.model_name = name ? name : base && base[1] ? base + 1 : model_dir;
    lm_gen_events ev = {.user = &S, .on_text = ev_text, .on_token = ev_token, .on_done = ev_done};
    if ((st = lm_gen_session_init(ctx, tok, max_seqs, &ev, &S.S))) {
        rc = cli_error("serve", st);
        goto done;
    }
    if (pthread_create(&engine, NULL, engine_main, &S)) {
        fprintf(stderr, "lightmoe serve: cannot start the engine thread\n");
        rc = 1;
        goto done;
    }
    engine_started = true;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) || !ai) {
        fprintf(stderr, "lightmoe serve: --host %s is not a numeric IPv4 or IPv6 address\n", host);
        rc = 1;
        goto done;
    }
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    freeaddrinfo(ai);
    signal(SIGPIPE, SIG_IGN);
    d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handler, &S, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout, MHD_OPTION_NOTIFY_COMPLETED, completed, &S,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)(max_seqs + max_queue + 64), MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "lightmoe serve: cannot listen on %s:%d (%s)\n", host, port,
                errno ? strerror(errno) : "in use, or not an address of this machine");
        rc = 1;
        goto done;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int bound = di ? di->port : port;
    fprintf(stderr, "lightmoe serve: %s on http://%s%s%s:%d (model '%s', %d sequences at once, context %d, %s)\n",
            lm_version(), strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", bound, S.model_name,
            max_seqs, cp.n_ctx, key ? "API key required" : "no API key");
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (!f || fprintf(f, "%d\n", bound) < 0 || fclose(f)) {
            fprintf(stderr, "lightmoe serve: --port-file %s: %s\n", port_file, strerror(errno));
            rc = 1;
            goto done;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!g_signals) {
        pthread_mutex_lock(&S.mu);
        bool failed = S.engine_err != LM_OK;
        pthread_mutex_unlock(&S.mu);
        if (failed) break;
        usleep(50 * 1000);
    }
    // Shutdown: refuse new requests, let those in flight finish (a second
    // signal cancels them), then close.
    pthread_mutex_lock(&S.mu);
    S.closing = true;
    int left = S.n_waiting;
    pthread_mutex_unlock(&S.mu);
    if (left) fprintf(stderr, "lightmoe serve: finishing %d request(s) in flight (signal again to cancel them)\n", left);
    int seen = g_signals;
    for (;;) {
        pthread_mutex_lock(&S.mu);
        left = S.n_waiting;
        if (g_signals > seen && left) {
            for (sreq *r = S.inbox; r; r = r->next) r->cancelled = true;
            for (int i = 0; i < S.n_live; i++) {
                if (!S.live[i]->error) S.live[i]->error = strdup("the server is shutting down");
                S.live[i]->cancelled = true;
            }
            pthread_cond_signal(&S.in_cv);
            seen = g_signals;
        }
        pthread_mutex_unlock(&S.mu);
        if (!left) break;
        usleep(20 * 1000);
    }
    usleep(100 * 1000);  // the last responses' bytes
    if (S.engine_err) rc = 1;
done:
    if (d) MHD_stop_daemon(d);
    if (engine_started) {
        pthread_mutex_lock(&S.mu);
        S.stopping = true;
        for (int i = 0; i < S.n_live; i++) S.live[i]->cancelled = true;
        pthread_cond_signal(&S.in_cv);
        pthread_mutex_unlock(&S.mu);
        pthread_join(engine, NULL);
    }
    while (S.inbox) {
        sreq *r = S.inbox;
        S.inbox = r->next;
        req_free(r);
    }
    free(S.live);
    free(S.hreq);
    free(S.hch);
    lm_gen_session_free(S.S);
    lm_chat_template_free(S.tmpl);
    lm_context_free(ctx);
    lm_model_free(model);
    lm_tokenizer_free(tok);
    free(tpath);
    free(key_owned);
    pthread_mutex_destroy(&S.mu);
    pthread_cond_destroy(&S.out_cv);
    pthread_cond_destroy(&S.in_cv);
    if (!rc) fprintf(stderr, "lightmoe serve: stopped\n");
    return rc;
}
