// Rotary position embedding as transformers computes it for the Llama family
// (rotate-half). The angle is rounded to fp32 before cos/sin, as its fp32
// code path does, so long contexts round the same way.
#include <math.h>

#include "kernels/cpu/kernels.h"

void lm_rope_inv_freq(double theta, int head_dim, float *inv) {
    for (int i = 0; i < head_dim / 2; i++) inv[i] = (float)(1.0 / pow(theta, (double)(2 * i) / (double)head_dim));
}

void lm_rope_cos_sin(const float *inv, int half, int pos, float *cs, float *sn) {
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * inv[i];
        cs[i] = (float)cos((double)ang);
        sn[i] = (float)sin((double)ang);
    }
}

void lm_rope_rotate(float *x, int n_heads, int head_dim, const float *cs, const float *sn) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++, x += head_dim)
        for (int i = 0; i < half; i++) {
            float a = x[i], b = x[i + half];
            x[i] = a * cs[i] - b * sn[i];
            x[i + half] = b * cs[i] + a * sn[i];
        }
}
