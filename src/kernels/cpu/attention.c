// Paged causal attention for one (sequence, KV head): every query head of the
// GQA group and every query token of the block in one pass over the pages,
// so each K/V page is read from memory once per KV head (not once per query
// head). Online softmax per page (running max and sum), fp32 accumulation;
// pages are bf16 or f32 in the HND layout [page][K|V][kv_head][page_size][head_dim].
//
// This file holds the scalar reference; the SIMD path is attention_avx2.c.
// Both keep one invariant: the arithmetic for a query row depends only on its
// own q, its position and the cache, never on the other rows of the task, so
// a token's output is the same whatever batch it is computed in.
#include <math.h>
#include <string.h>

#include "kernels/cpu/kernels.h"

static float kv_elem(const char *p, lm_dtype dt, size_t i) {
    uint16_t h;
    switch (dt) {
    case LM_DT_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case LM_DT_BF16: memcpy(&h, p + 2 * i, 2); return lm_bf16_to_f32(h);
    default: memcpy(&h, p + 2 * i, 2); return lm_f16_to_f32(h);
    }
}

void lm_attn_paged_ref(const lm_attn_task *a) {
    int hd = a->head_dim, ps = a->page_size, G = a->group, nq = a->n_q;
    size_t es = lm_dtype_size(a->kv_dt);
    size_t head_stride = (size_t)ps * hd;  // elements of one head's K (or V) in a page
    size_t page_stride = 2 * (size_t)a->n_kv_heads * head_stride;
    lm_attn_ws w = lm_attn_ws_at(a->scratch, nq, G, hd, ps);
    const float scale = 1.0f / sqrtf((float)hd);
    int max_pos = 0;
    for (int t = 0; t < nq; t++) max_pos = a->pos[t] > max_pos ? a->pos[t] : max_pos;
    for (int r = 0; r < nq * G; r++) {
        w.m[r] = -INFINITY, w.l[r] = 0;
        for (int d = 0; d < hd; d++) w.acc[(size_t)r * w.hdp + d] = 0;
    }
    for (int p0 = 0; p0 <= max_pos; p0 += ps) {
        const char *page = (const char *)a->kv + (size_t)a->pages[p0 / ps] * page_stride * es;
        const char *K = page + (size_t)a->kv_head * head_stride * es;
        const char *V = page + ((size_t)a->n_kv_heads + a->kv_head) * head_stride * es;
        for (int t = 0; t < nq; t++) {
            int lim = a->pos[t] + 1 - p0;  // positions of this page the token sees
            if (lim <= 0) continue;
            if (lim > ps) lim = ps;
            for (int g = 0; g < G; g++) {
                const float *q = a->q + (size_t)t * a->q_stride + (size_t)g * hd;
                int r = t * G + g;
                float mx = w.m[r], *s = w.s;
                for (int j = 0; j < lim; j++) {
                    float dot = 0;
                    for (int d = 0; d < hd; d++) dot += q[d] * kv_elem(K, a->kv_dt, (size_t)j * hd + d);
                    s[j] = dot * scale;
                    mx = s[j] > mx ? s[j] : mx;
                }
                float corr = expf(w.m[r] - mx), sum = 0;  // rescale what was accumulated under the old max
                float *o = w.acc + (size_t)r * w.hdp;
                for (int d = 0; d < hd; d++) o[d] *= corr;
                for (int j = 0; j < lim; j++) {
                    float e = expf(s[j] - mx);
                    sum += e;
                    for (int d = 0; d < hd; d++) o[d] += e * kv_elem(V, a->kv_dt, (size_t)j * hd + d);
                }
                w.l[r] = w.l[r] * corr + sum;
                w.m[r] = mx;
            }
        }
    }
    for (int t = 0; t < nq; t++)
        for (int g = 0; g < G; g++) {
            int r = t * G + g;
            float inv = 1.0f / w.l[r], *dst = a->out + (size_t)t * a->out_stride + (size_t)g * hd;
            for (int d = 0; d < hd; d++) dst[d] = w.acc[(size_t)r * w.hdp + d] * inv;
        }
}
