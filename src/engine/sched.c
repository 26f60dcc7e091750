#include "engine/sched.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

enum { WAITING, RUNNING, FINISHED };

typedef struct sreq {
    int32_t *tok;   // prompt, then the generated tokens
    int n_tok, cap;
    int n_prompt, max_new;
    int n_done;     // tokens computed into the KV cache
    int seq;        // sequence slot while running, else -1
    int state;
} sreq;

struct lm_sched {
    lm_context *ctx;
    lm_sched_next_fn next;
    lm_sched_sampler_fn sampler;
    void *user;
    int max_running, budget, n_ctx;
    sreq *r;
    int n, cap;
    int *wq;               // waiting requests, a ring buffer (the preempted go to the front)
    int wq_head, wq_len, wq_cap;
    int *running;          // in admission order (the last is the newest)
    int n_running;
    int *free_seq;         // free sequence slots
    int n_free_seq;
    int32_t *b_tok, *b_seq, *b_pos;  // the step's batch [budget]
    uint8_t *b_want;
    int *b_req;            // [budget] request of each output row
    lm_sampler **b_smp;    // [budget] its sampler
    int *chunk;            // [max_running] tokens each running request feeds this step
    lm_sched_stats stats;
};

lm_status lm_sched_init(lm_context *ctx, const lm_sched_params *p, lm_sched_next_fn next,
                        lm_sched_sampler_fn sampler, void *user, lm_sched **out) {
    *out = NULL;
    lm_context_params cp = lm_context_get_params(ctx);
    lm_sched *s = lm_calloc(1, sizeof *s);
    if (!s) return LM_ERR_OOM;
    s->ctx = ctx;
    s->next = next;
    s->sampler = sampler;
    s->user = user;
    s->budget = p && p->step_tokens > 0 && p->step_tokens < cp.n_batch ? p->step_tokens : cp.n_batch;
    s->max_running = p && p->max_running > 0 && p->max_running < cp.n_seq ? p->max_running : cp.n_seq;
    // every running request must get its decode token into each step, and its logits
    if (s->max_running > s->budget) s->max_running = s->budget;
    if (s->max_running > cp.n_out) s->max_running = cp.n_out;
    s->n_ctx = cp.n_ctx;
    s->running = lm_malloc((size_t)s->max_running * sizeof(int));
    s->free_seq = lm_malloc((size_t)s->max_running * sizeof(int));
    s->chunk = lm_malloc((size_t)s->max_running * sizeof(int));
    s->b_tok = lm_malloc((size_t)s->budget * sizeof(int32_t));
    s->b_seq = lm_malloc((size_t)s->budget * sizeof(int32_t));
    s->b_pos = lm_malloc((size_t)s->budget * sizeof(int32_t));
    s->b_want = lm_malloc((size_t)s->budget);
    s->b_req = lm_malloc((size_t)s->budget * sizeof(int));
    s->b_smp = lm_calloc((size_t)s->budget, sizeof *s->b_smp);
    if (!s->running || !s->free_seq || !s->chunk || !s->b_tok || !s->b_seq || !s->b_pos || !s->b_want || !s->b_req ||
        !s->b_smp) {
        lm_sched_free(s);
        return LM_ERR_OOM;
    }
    for (int i = 0; i < s->max_running; i++) {
        s->free_seq[i] = s->max_running - 1 - i;
        lm_seq_clear(ctx, i);
    }
    s->n_free_seq = s->max_running;
    *out = s;
    return LM_OK;
}

void lm_sched_free(lm_sched *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->r[i].tok);
    void *bufs[] = {s->r, s->wq, s->running, s->free_seq, s->chunk, s->b_tok, s->b_seq, s->b_pos, s->b_want, s->b_req, s->b_smp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(s);
}

static bool wq_grow(lm_sched *s) {
    if (s->wq_len < s->wq_cap) return true;
    int cap = s->wq_cap ? s->wq_cap * 2 : 64;
    int *q = malloc((size_t)cap * sizeof *q);
    if (!q) return false;
    for (int i = 0; i < s->wq_len; i++) q[i] = s->wq[(s->wq_head + i) % s->wq_cap];
    free(s->wq);
    s->wq = q;
    s->wq_head = 0;
    s->wq_cap = cap;
    return true;
}

lm_status lm_sched_add(lm_sched *s, const int32_t *prompt, int n_prompt, int max_new, int *id) {
    lm_context_params cp = lm_context_get_params(s->ctx);
    *id = -1;
    if (n_prompt < 1 || max_new < 0) return lm_err(LM_ERR_INVALID_ARG, "a request needs at least one prompt token");
    if ((long)n_prompt + max_new > s->n_ctx)
        return lm_err(LM_ERR_RANGE, "the prompt (%d tokens) + %d new tokens exceeds the context of %d tokens", n_prompt,
                      max_new, s->n_ctx);
    if (lm_kv_pages_for(n_prompt + max_new) > cp.n_pages)
        return lm_err(LM_ERR_RANGE, "the prompt (%d tokens) + %d new tokens needs more KV pages (%d) than the cache "
                      "has (%d)", n_prompt, max_new, lm_kv_pages_for(n_prompt + max_new), cp.n_pages);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        sreq *r = realloc(s->r, (size_t)cap * sizeof *r);
        if (!r) return lm_err(LM_ERR_OOM, "out of memory");
        s->r = r;
        s->cap = cap;
    }
    sreq *q = &s->r[s->n];
    *q = (sreq){.n_prompt = n_prompt, .max_new = max_new, .seq = -1, .state = WAITING};
    q->cap = n_prompt + (max_new < 16 ? max_new : 16);
    if (!(q->tok = malloc((size_t)q->cap * sizeof *q->tok)) || !wq_grow(s)) {
        free(q->tok);
        return lm_err(LM_ERR_OOM, "out of memory");
    }
    memcpy(q->tok, prompt, (size_t)n_prompt * sizeof *q->tok);
    q->n_tok = n_prompt;
    s->wq[(s->wq_head + s->wq_len++) % s->wq_cap] = s->n;
    s->stats.total++;
    s->stats.waiting++;
    *id = s->n++;
    return LM_OK;
}

// Pages a running request holds (lm_decode keeps exactly what the computed tokens need).
static int held(const sreq *q) { return lm_kv_pages_for(q->n_done); }

static void preempt_newest(lm_sched *s) {
    int id = s->running[--s->n_running];
    sreq *q = &s->r[id];
    lm_seq_clear(s->ctx, q->seq);
    s->free_seq[s->n_free_seq++] = q->seq;
    q->seq = -1;
    q->n_done = 0;  // its prompt and generated tokens are recomputed when it runs again
    q->state = WAITING;
    s->wq_head = (s->wq_head + s->wq_cap - 1) % s->wq_cap;
    s->wq[s->wq_head] = id;
    s->wq_len++;
    s->stats.preemptions++;
    s->stats.running--;
    s->stats.waiting++;
}

static void finish(lm_sched *s, int k) {
    sreq *q = &s->r[s->running[k]];
    lm_seq_clear(s->ctx, q->seq);
    s->free_seq[s->n_free_seq++] = q->seq;
    q->seq = -1;
    q->state = FINISHED;
    free(q->tok);
    q->tok = NULL;
    memmove(s->running + k, s->running + k + 1, (size_t)(s->n_running - k - 1) * sizeof *s->running);
    s->n_running--;
    s->stats.running--;
    s->stats.finished++;
}

void lm_sched_cancel(lm_sched *s, int id) {
    if (id < 0 || id >= s->n) return;
    sreq *q = &s->r[id];
    if (q->state == RUNNING) {
        for (int k = 0; k < s->n_running; k++)
            if (s->running[k] == id) {
                finish(s, k);
                return;
            }
        return;
    }
    if (q->state != WAITING) return;
    for (int i = 0; i < s->wq_len; i++) {  // out of the queue, the others keep their order
        if (s->wq[(s->wq_head + i) % s->wq_cap] != id) continue;
        for (int j = i; j + 1 < s->wq_len; j++)
            s->wq[(s->wq_head + j) % s->wq_cap] = s->wq[(s->wq_head + j + 1) % s->wq_cap];
        s->wq_len--;
        break;
    }
    q->state = FINISHED;
    free(q->tok);
    q->tok = NULL;
    s->stats.waiting--;
    s->stats.finished++;
}

lm_status lm_sched_step(lm_sched *s, bool *active) {
    *active = s->stats.finished < s->stats.total;
    if (!*active) return LM_OK;
    int free_pages = lm_kv_pages_free(s->ctx), left = s->budget;
    // 1. Decodes first: one token per running request past its prefill. When
    //    their new pages do not fit, the newest running request gives way.
    for (;;) {
        int need = 0;
        for (int k = 0; k < s->n_running; k++) {
            const sreq *q = &s->r[s->running[k]];
            if (q->n_tok - q->n_done == 1) need += lm_kv_pages_for(q->n_done + 1) - held(q);
        }
        if (need <= free_pages || s->n_running <= 1) break;
        preempt_newest(s);
        free_pages = lm_kv_pages_free(s->ctx);
    }
    for (int k = 0; k < s->n_running; k++) {
        const sreq *q = &s->r[s->running[k]];
        s->chunk[k] = q->n_tok - q->n_done == 1 ? 1 : 0;
        if (s->chunk[k]) {
            left--;
            free_pages -= lm_kv_pages_for(q->n_done + 1) - held(q);
        }
    }
    // 2. Prefill chunks of running requests, then admissions, in the budget left.
    for (int k = 0; k < s->n_running && left > 0; k++) {
        const sreq *q = &s->r[s->running[k]];
        if (s->chunk[k]) continue;
        int c = q->n_tok - q->n_done < left ? q->n_tok - q->n_done : left;
        while (c > 0 && lm_kv_pages_for(q->n_done + c) - held(q) > free_pages) c--;
        s->chunk[k] = c;
        left -= c;
        free_pages -= lm_kv_pages_for(q->n_done + c) - held(q);
    }
    while (left > 0 && s->wq_len > 0 && s->n_free_seq > 0) {
        sreq *q = &s->r[s->wq[s->wq_head]];
        // admitted only when its whole recomputation fits, so it never stalls half prefilled
        if (lm_kv_pages_for(q->n_tok) > free_pages) break;
        s->wq_head = (s->wq_head + 1) % s->wq_cap;
        s->wq_len--;
        q->seq = s->free_seq[--s->n_free_seq];
        q->state = RUNNING;
        int k = s->n_running++;
        s->running[k] = (int)(q - s->r);
        int c = q->n_tok < left ? q->n_tok : left;
        s->chunk[k] = c;
        left -= c;
        free_pages -= lm_kv_pages_for(c);
        s->stats.waiting--;
        s->stats.running++;
    }
    // 3. The batch: each request's chunk at its positions; logits where a
    //    chunk reaches the request's last token.
    int nb = 0, n_out = 0;
    for (int k = 0; k < s->n_running; k++) {
        const sreq *q = &s->r[s->running[k]];
        for (int i = 0; i < s->chunk[k]; i++) {
            int p = q->n_done + i;
            s->b_tok[nb] = q->tok[p];
            s->b_seq[nb] = q->seq;
            s->b_pos[nb] = p;
            s->b_want[nb] = p == q->n_tok - 1;
            if (s->b_want[nb]) s->b_req[n_out++] = k;
            nb++;
        }
    }
    if (nb == 0) {
        // Prefills stuck on each other's pages: the newest gives way.
        if (s->n_running > 1) {
            preempt_newest(s);
            return lm_sched_step(s, active);
        }
        return lm_err(LM_ERR_INVALID_ARG, "scheduler: no request can make progress (%d running, %d waiting, %d pages free)",
                      s->n_running, s->wq_len, lm_kv_pages_free(s->ctx));
    }
    for (int j = 0; j < n_out && s->sampler; j++) s->b_smp[j] = s->sampler(s->user, s->running[s->b_req[j]]);
    lm_batch b = {nb, s->b_tok, s->b_seq, s->b_want, s->b_pos, s->sampler ? s->b_smp : NULL};
    lm_status st = lm_decode(s->ctx, &b);
    if (st) return st;
    s->stats.tokens_computed += nb;
    for (int k = 0; k < s->n_running; k++) s->r[s->running[k]].n_done += s->chunk[k];
    // 4. Next tokens. Finished requests leave (from the back, so indices hold).
    int32_t *nxt = (int32_t *)s->b_tok;  // reuse: one entry per output row
    for (int j = 0; j < n_out; j++) {
        int k = s->b_req[j], id = s->running[k];
        nxt[j] = s->next(s->user, id, s->ctx, j);
    }
    for (int j = n_out - 1; j >= 0; j--) {
        int k = s->b_req[j];
        sreq *q = &s->r[s->running[k]];
        if (nxt[j] >= 0) {
            if (q->n_tok == q->cap) {
                int cap = q->cap * 2;
                int32_t *t = realloc(q->tok, (size_t)cap * sizeof *t);
                if (!t) return lm_err(LM_ERR_OOM, "out of memory");
                q->tok = t;
                q->cap = cap;
            }
            q->tok[q->n_tok++] = nxt[j];
        }
        // the max_new-th token needs no computing: nothing would use its logits
        if (nxt[j] < 0 || q->n_tok - q->n_prompt >= q->max_new) finish(s, k);
    }
    *active = s->stats.finished < s->stats.total;
    return LM_OK;
}

void lm_sched_get_stats(const lm_sched *s, lm_sched_stats *out) { *out = s->stats; }
