// Emulated versions of the inline-PTX helpers of
// src/kernels/cuda/gemm_sm90_stream.cu (same names and signatures; prep.py
// drops the originals), and what its launcher needs beyond the emulator
// core (cudaLaunchKernelEx and __stcg: emu_ext.h). LM_SM90S_EMU selects the
// sm_90a kernel bodies.
#pragma once
#define LM_SM90S_EMU 1
#include "emu.h"
#include "emu_ext.h"
#include "cuda.h"

// bar.sync id, n: a named barrier of n threads (the core's, per block)
static inline void s9s_bar_sync(int id, int n) { emu_bar_sync(id, n); }

// launches are synchronous here: the predecessor has finished
static inline void s9s_griddep_wait() {}
static inline void s9s_griddep_launch() {}

static inline void s9s_mbar_init(uint32_t bar, int count) { emu_mbar_init(bar, count); }
static inline void s9s_fence_mbar_init() {}
static inline void s9s_mbar_arrive(uint32_t bar) { emu_mbar_arrive(bar); }
static inline void s9s_mbar_arrive_tx(uint32_t bar, uint32_t bytes) { emu_mbar_arrive_expect_tx(bar, bytes); }
static inline bool s9s_mbar_try_wait(uint32_t bar, uint32_t parity) { return emu_mbar_try_wait(bar, parity); }
static inline void s9s_cp_async_arrive(uint32_t bar) { emu_cp_async_mbar_arrive_noinc(bar); }
static inline void s9s_cp_async_wait_all() { emu_cp_wait(0); }
static inline void s9s_cp_async16(uint32_t dst, const void *src, bool ok) { emu_cp_async(dst, src, 16, ok ? 16 : 0); }
static inline void s9s_tma_2d(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar) {
    emu_tma_load_2d(dst, map, x, y, bar);
}
static inline void s9s_tmap_acquire(const CUtensorMap *map) { emu_tmap_acquire(map); }
static inline void s9s_tmap_replace_addr(uint32_t smap, const void *addr) { emu_tmap_replace_global_address(smap, addr); }
static inline void s9s_tmap_publish(CUtensorMap *gmap, uint32_t smap) { emu_tmap_cp_fenceproxy(gmap, smap); }
static inline void s9s_fence_proxy_async() {}
static inline void s9s_wgmma_fence() { emu_wgmma_fence(); }
static inline void s9s_wgmma_commit() { emu_wgmma_commit(); }
template <int N> static inline void s9s_wgmma_wait() { emu_wgmma_wait(N); }
static inline void s9s_fence_reg(float &) {}
static inline void s9s_compiler_fence() {}
template <int N> static inline void s9s_setmaxnreg_inc() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
template <int N> static inline void s9s_setmaxnreg_dec() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
// wgmma.mma_async m64nNk16, one per N of the kernel file
static inline void s9s_wg_n8(float (&d)[4], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 8, da, db, scale_d); }
static inline void s9s_wg_n16(float (&d)[8], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 16, da, db, scale_d); }
static inline void s9s_wg_n32(float (&d)[16], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 32, da, db, scale_d); }
static inline void s9s_wg_n64(float (&d)[32], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 64, da, db, scale_d); }
static inline void s9s_wg_n96(float (&d)[48], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 96, da, db, scale_d); }
static inline void s9s_wg_n128(float (&d)[64], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 128, da, db, scale_d); }
static inline void s9s_wg_n256(float (&d)[128], uint64_t da, uint64_t db, int scale_d) { emu_wgmma_bf16(d, 256, da, db, scale_d); }
