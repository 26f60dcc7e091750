// Emulated versions of the inline-PTX helpers of src/kernels/cuda/attention.cu
// (same names and signatures; prep.py drops the originals).
#pragma once
#include "emu.h"

static inline void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_mma_m16n8k16_bf16(c, a, b0, b1);
}
static inline void ldsm_x4(uint32_t r[4], const void *p) {
    emu_ldmatrix_x4(r, (uint32_t)__cvta_generic_to_shared(p), false);
}
static inline void ldsm_x4_t(uint32_t r[4], const void *p) {
    emu_ldmatrix_x4(r, (uint32_t)__cvta_generic_to_shared(p), true);
}
static inline void cp16(void *dst, const void *src, bool ok) {
    emu_cp_async((uint32_t)__cvta_generic_to_shared(dst), src, 16, ok ? 16 : 0);
}
static inline void cp_commit(void) { emu_cp_commit(); }
template <int N> static inline void cp_wait(void) { emu_cp_wait(N); }
