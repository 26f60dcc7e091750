// Emulated versions of the inline-PTX helpers of src/kernels/cuda/gemm_sm90.cu
// (same names and signatures; prep.py drops the originals). LM_SM90_EMU
// selects the sm_90a kernel bodies, which the real build compiles for
// sm_90a only.
#pragma once
#define LM_SM90_EMU 1
#include "emu.h"
#include "emu_ext.h"  // cudaLaunchKernelEx with a cluster dimension, cudaOccupancyMaxActiveClusters
#include "cuda.h"

static inline void s9_mbar_init(uint32_t bar, int count) { emu_mbar_init(bar, count); }
static inline void s9_fence_mbar_init() {}
static inline void s9_mbar_arrive(uint32_t bar) { emu_mbar_arrive(bar); }
static inline void s9_mbar_arrive_tx(uint32_t bar, uint32_t bytes) { emu_mbar_arrive_expect_tx(bar, bytes); }
static inline bool s9_mbar_try_wait(uint32_t bar, uint32_t parity) { return emu_mbar_try_wait(bar, parity); }
static inline void s9_cp_async_arrive(uint32_t bar) { emu_cp_async_mbar_arrive_noinc(bar); }
static inline void s9_cp_async_wait_all() { emu_cp_wait(0); }
static inline void s9_cp_async16(uint32_t dst, const void *src, bool ok) { emu_cp_async(dst, src, 16, ok ? 16 : 0); }
static inline void s9_tma_2d(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar) {
    emu_tma_load_2d(dst, map, x, y, bar);
}
static inline void s9_tmap_acquire(const CUtensorMap *map) { emu_tmap_acquire(map); }
static inline void s9_tmap_replace_addr(uint32_t smap, const void *addr) { emu_tmap_replace_global_address(smap, addr); }
static inline void s9_tmap_publish(CUtensorMap *gmap, uint32_t smap) { emu_tmap_cp_fenceproxy(gmap, smap); }
static inline void s9_fence_proxy_async() {}
static inline void s9_wgmma_fence() { emu_wgmma_fence(); }
static inline void s9_wgmma_commit() { emu_wgmma_commit(); }
template <int N> static inline void s9_wgmma_wait() { emu_wgmma_wait(N); }
static inline void s9_fence_reg(float &) {}
template <int N> static inline void s9_setmaxnreg_inc() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
template <int N> static inline void s9_setmaxnreg_dec() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
static inline void s9_wgmma_n256(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
    emu_wgmma_bf16(d, 256, da, db, scale_d);
}
static inline void s9_wgmma_n128(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
    emu_wgmma_bf16(d, 128, da, db, scale_d);
}
// clusters, multicast, TMA stores (s9_body2)
static inline uint32_t s9_cluster_rank() { return (uint32_t)emu_cluster_rank(); }
static inline void s9_cluster_sync() { emu_cluster_sync(); }
static inline void s9_mbar_arrive_peer(uint32_t bar, uint32_t rank) { emu_mbar_arrive_cluster(emu_mapa(bar, (int)rank)); }
static inline void s9_tma_2d_mc(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar, uint16_t mask) {
    emu_tma_load_2d_multicast(dst, map, x, y, bar, mask);
}
static inline void s9_tma_store_2d(const CUtensorMap *map, int x, int y, uint32_t src) { emu_tma_store_2d(map, x, y, src); }
static inline void s9_bulk_commit() { emu_bulk_commit(); }
template <int N> static inline void s9_bulk_wait_read() { emu_bulk_wait(N, true); }
template <int N> static inline void s9_bulk_wait() { emu_bulk_wait(N, false); }
static inline void s9_named_sync(int id, int n) { emu_bar_sync(id, n); }
static inline void s9_tmap_replace_rows(uint32_t smap, int rows) { emu_tmap_replace_global_dim(smap, 1, (uint32_t)rows); }
