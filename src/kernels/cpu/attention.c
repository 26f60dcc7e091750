// Paged causal attention for one (sequence, KV head): every query head of the
// GQA group and every query token of the block in one pass over the pages,
// so each K/V page is read from memory once per KV head (not once per query
// head). Online softmax (running max and sum), fp32 accumulation; pages are
// bf16 or f32 in the HND layout [page][K|V][kv_head][page_size][head_dim].
#include <math.h>
#include <string.h>

#include "kernels/cpu/kernels.h"

void lm_attn_paged(const lm_attn_task *a) {
    int hd = a->head_dim, ps = a->page_size, G = a->group, nq = a->n_q;
    size_t es = lm_dtype_size(a->kv_dt);
    size_t head_stride = (size_t)ps * hd;                    // elements of one head's K (or V) in a page
    size_t page_stride = 2 * (size_t)a->n_kv_heads * head_stride;
    float *m = a->scratch, *l = m + (size_t)nq * G, *acc = l + (size_t)nq * G;  // [nq*G], [nq*G], [nq*G][hd]
    float *kb = acc + (size_t)nq * G * hd, *vb = kb + (size_t)ps * hd, *sc = vb + (size_t)ps * hd;  // [ps][hd] x2, [ps]
    for (int i = 0; i < nq * G; i++) m[i] = -INFINITY, l[i] = 0;
    memset(acc, 0, sizeof(float) * (size_t)nq * G * hd);
    int max_pos = 0;
    for (int t = 0; t < nq; t++) max_pos = a->pos[t] > max_pos ? a->pos[t] : max_pos;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int p0 = 0; p0 <= max_pos; p0 += ps) {
        int n = max_pos + 1 - p0 < ps ? max_pos + 1 - p0 : ps;
        const char *page = (const char *)a->kv + (size_t)a->pages[p0 / ps] * page_stride * es;
        lm_to_f32(page + (size_t)a->kv_head * head_stride * es, a->kv_dt, kb, (size_t)n * hd);
        lm_to_f32(page + ((size_t)a->n_kv_heads + a->kv_head) * head_stride * es, a->kv_dt, vb, (size_t)n * hd);
        for (int t = 0; t < nq; t++) {
            int lim = a->pos[t] + 1 - p0;  // positions of this page the token sees
            if (lim <= 0) continue;
            if (lim > n) lim = n;
            for (int g = 0; g < G; g++) {
                const float *q = a->q + (size_t)t * a->q_stride + (size_t)g * hd;
                int r = t * G + g;
                float mx = m[r];
                for (int j = 0; j < lim; j++) {
                    sc[j] = lm_dot_f32(q, kb + (size_t)j * hd, hd) * scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                float corr = expf(m[r] - mx), sum = 0;  // rescale what was accumulated under the old max
                float *o = acc + (size_t)r * hd;
                if (corr != 1.0f)
                    for (int d = 0; d < hd; d++) o[d] *= corr;
                for (int j = 0; j < lim; j++) {
                    float e = expf(sc[j] - mx);
                    sum += e;
                    lm_axpy_f32(o, e, vb + (size_t)j * hd, hd);
                }
                l[r] = l[r] * corr + sum;
                m[r] = mx;
            }
        }
    }
    for (int t = 0; t < nq; t++)
        for (int g = 0; g < G; g++) {
            int r = t * G + g;
            float inv = 1.0f / l[r], *dst = a->out + (size_t)t * a->out_stride + (size_t)g * hd;
            for (int d = 0; d < hd; d++) dst[d] = acc[(size_t)r * hd + d] * inv;
        }
}
