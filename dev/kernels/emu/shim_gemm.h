// Emulated versions of the inline-PTX helpers of src/kernels/cuda/gemm.cu
// (same names and signatures; prep.py drops the originals), and the runtime
// API its launchers use beyond the emulator core (emu_ext.h).
#pragma once
#include "emu.h"
#include "emu_ext.h"

static inline void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    const uint32_t a[4] = {a0, a1, a2, a3};
    emu_mma_m16n8k16_bf16(c, a, b0, b1);
}

// ld.global.nc.L1::no_allocate.v4.u32
static inline uint4 ld_stream(const void *p) { return emu_ld((const uint4 *)p, "ld.global.nc.v4"); }

static inline void cp_async16(uint32_t dst, const void *src, bool ok) { emu_cp_async(dst, src, 16, ok ? 16 : 0); }
static inline void cp_commit() { emu_cp_commit(); }
template <int N> static inline void cp_wait() { emu_cp_wait(N); }

static inline void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    uint32_t r[4];
    emu_ldmatrix_x4(r, addr, false);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

// griddepcontrol: launches are synchronous here, so the predecessor is done
static inline void griddep_wait() {}
static inline void griddep_launch() {}

// prefetch.global.L2: a prefetch never faults on the GPU, but ours only
// ever name weights: touch the byte, so that a wrong address shows (guard
// pages) instead of going unnoticed.
static inline void prefetch_l2(const void *p) { (void)*(const volatile char *)p; }
