// CUDA-on-CPU emulation: fibers, barriers, warp collectives, launches.
#include "emu.h"
#include "cuda.h"  // include/: the emulator's tensor-map types

#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <vector>

emu_fiber *emu_cur;
dim3 blockIdx, blockDim, gridDim;
emu_bar emu_block_bar, emu_warp_bar[64];
emu_bar emu_cta_bar[8];
emu_stage emu_st[64];
emu_device emu_dev;
emu_stats emu_stat;
std::vector<emu_launch_rec> emu_launches;


void emu_fail(const char *fmt, ...) {
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (emu_cur)
        fprintf(stderr, "\n     (block %u,%u,%u thread %u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z, emu_cur->tid.x,
                emu_cur->tid.y, emu_cur->tid.z);
    fprintf(stderr, "\n");
    abort();
}

// ------------------------------------------------------- context switch ---
// x86-64 SysV: a hand-written switch (callee-saved registers, mxcsr and the
// x87 control word), ~50x cheaper than swapcontext, which makes a system
// call per switch. Elsewhere: ucontext.
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
extern "C" void emu_ctx_switch(void **save_sp, void *new_sp);
extern "C" void emu_fiber_entry();
asm(R"(
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch

    .globl emu_fiber_entry
    .type emu_fiber_entry, @function
emu_fiber_entry:
    call emu_fiber_main
    ud2
    .size emu_fiber_entry, .-emu_fiber_entry
)");
static void *g_sched_sp;
static void ctx_to_fiber(emu_fiber *f) { emu_ctx_switch(&g_sched_sp, f->sp); }
static void ctx_to_sched(emu_fiber *f) { emu_ctx_switch(&f->sp, g_sched_sp); }
static void ctx_init(emu_fiber *f, char *top) {
    uint64_t *sp = (uint64_t *)((uintptr_t)(top - 64) & ~(uintptr_t)15);
    *--sp = (uint64_t)emu_fiber_entry;    // "return" address of the first switch (then rsp is 16-aligned)
    for (int i = 0; i < 6; i++) *--sp = 0;  // rbp rbx r12..r15
    uint32_t csr[2];
    asm volatile("stmxcsr %0\n fnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
    *--sp = (uint64_t)csr[0] | ((uint64_t)(csr[1] & 0xffff) << 32);
    f->sp = sp;
}
#else
#include <ucontext.h>
static ucontext_t g_sched_ctx;
extern "C" void emu_fiber_main();
static void ctx_to_fiber(emu_fiber *f) { swapcontext(&g_sched_ctx, (ucontext_t *)f->ctx); }
static void ctx_to_sched(emu_fiber *f) { swapcontext((ucontext_t *)f->ctx, &g_sched_ctx); }
static void ctx_init(emu_fiber *f, char *top) {
    if (!f->ctx) f->ctx = calloc(1, sizeof(ucontext_t));
    getcontext((ucontext_t *)f->ctx);
    ucontext_t *c = (ucontext_t *)f->ctx;
    c->uc_stack.ss_sp = f->stack;
    c->uc_stack.ss_size = (size_t)(top - f->stack);
    c->uc_link = NULL;
    makecontext(c, emu_fiber_main, 0);
}
#endif

// ----------------------------------------------------------- cp.async ---
struct emu_cp_op { unsigned char *dst; unsigned char data[16]; };
// a TMA store in flight: the map as issued, the box origin, its shared source
struct emu_bulk_op { unsigned char map[128]; int x, y; unsigned char *src; };
struct emu_cp {
    std::vector<emu_cp_op> open;                 // issued, not yet committed
    std::vector<std::vector<emu_cp_op>> groups;  // committed, oldest first
    std::vector<emu_bulk_op> bopen;              // bulk async-group (TMA stores): issued, not committed
    std::vector<std::vector<emu_bulk_op>> bgroups;
};
static void cp_land(std::vector<emu_cp_op> &g) {
    for (auto &o : g) memcpy(o.dst, o.data, 16);
    g.clear();
}

// --------------------------------------------------------------- fibers ---
static const std::function<void()> *g_body;
static std::vector<emu_fiber> g_fib;
static const size_t STACK = 256 * 1024;

static void block_thread_exits(int rank);
extern "C" void emu_fiber_main() {
    (*g_body)();
    emu_fiber *f = emu_cur;
    if (!f->cp->groups.empty() || !f->cp->open.empty()) {  // never waited for: lands some time after exit
        for (auto &g : f->cp->groups) cp_land(g);
        cp_land(f->cp->open);
        f->cp->groups.clear();
    }
    EMU_CHECK(f->cp->bopen.empty() && f->cp->bgroups.empty(),
              "thread exits with TMA stores (bulk async-groups) not waited for (cp.async.bulk.wait_group)");
    block_thread_exits(f->rank);
    f->done = 1;
    ctx_to_sched(f);
    abort();  // not resumed
}

static long long g_releases;  // barriers completed

void emu_wait(emu_bar &b, int n, const char *what) {
    int g = b.gen;
    if (++b.count == n) {  // the last to arrive goes on
        b.count = 0, b.gen++, g_releases++;
        return;
    }
    emu_cur->wbar = &b, emu_cur->wgen = g, emu_cur->wait_at = what;
    while (b.gen == g) ctx_to_sched(emu_cur);
    emu_cur->wbar = NULL;
}

emu_sched_policy emu_sched = EMU_RR;
unsigned long long emu_seed = 1;
const char *emu_sched_name() {
    static const char *n[] = {"rr", "rev", "first", "last", "random"};
    return n[emu_sched];
}

static bool runnable(const emu_fiber &f) { return !f.done && (!f.wbar || f.wbar->gen != f.wgen); }

static void smem_select(int rank);
static void resume(emu_fiber &f) {
    emu_cur = &f;
    blockIdx = f.bid;
    smem_select(f.rank);
    ctx_to_fiber(&f);
    emu_stat.switches++;
}

[[noreturn]] static void deadlock(int n) {
    emu_cur = NULL;
    fflush(stdout);
    fprintf(stderr, "emu: deadlock in block %u,%u,%u:", blockIdx.x, blockIdx.y, blockIdx.z);
    int shown = 0, exited = 0;
    for (int i = 0; i < n; i++) {
        exited += g_fib[i].done;
        if (!g_fib[i].done && shown < 8) {
            if (g_fib[i].rank) fprintf(stderr, " thread %d of cluster rank %d at %s;", i % (n / (g_fib[i].rank + 1)),
                                       g_fib[i].rank, g_fib[i].wait_at);
            else fprintf(stderr, " thread %d at %s;", i, g_fib[i].wait_at);
            shown++;
        }
    }
    fprintf(stderr, " (%d of %d threads exited)\n", exited, n);
    abort();
}

static void sm90_block_start();
static void sm90_block_end();

// the blocks of the cluster being run: their indices (g_bids[rank]), how many
static dim3 g_bids[8];
static int g_csize = 1, g_cthreads = 1;  // blocks in the cluster, threads per block
static emu_bar g_cluster_bar, g_named[8][16];
static int g_exited[8];  // threads of each block of the cluster that have exited
static void block_thread_exits(int rank) { g_exited[rank]++; }
// Another block of the cluster may be signalled (remote arrive, multicast)
// only while it runs: its shared memory goes with its last thread.
static void check_peer_alive(int rank, const char *what) {
    EMU_CHECK(g_exited[rank] < g_cthreads, "%s: block of cluster rank %d has exited (a cluster barrier missing before "
                                           "the exit?)", what, rank);
}

// Runs nb blocks (a cluster; 1 without clusters) of n threads each as one set
// of fibers: fiber i is thread i % n of the block of rank i / n.
static void run_fibers(int nb, int n1, const std::function<void()> &body) {
    const int n = nb * n1;
    EMU_CHECK(n1 >= 1 && n1 <= 1024 && nb >= 1 && nb <= 8 && n <= 2048, "cluster of %d blocks of %d threads", nb, n1);
    g_csize = nb, g_cthreads = n1;
    for (int &x : g_exited) x = 0;
    if ((int)g_fib.size() < n) {
        size_t old = g_fib.size();
        g_fib.resize(n);
        long pg = sysconf(_SC_PAGESIZE);
        for (size_t i = old; i < (size_t)n; i++) {  // stacks with a guard page below
            char *m = (char *)mmap(NULL, STACK + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            EMU_CHECK(m != MAP_FAILED, "mmap of a fiber stack");
            mprotect(m, pg, PROT_NONE);
            g_fib[i].stack = m + pg;
            g_fib[i].ctx = NULL;
            g_fib[i].cp = new emu_cp;
        }
    }
    g_body = &body;
    sm90_block_start();
    emu_block_bar = emu_bar();
    for (auto &b : emu_cta_bar) b = emu_bar();
    for (auto &r : g_named)
        for (auto &b : r) b = emu_bar();
    g_cluster_bar = emu_bar();
    for (auto &b : emu_warp_bar) b = emu_bar();
    for (int i = 0; i < n; i++) {
        emu_fiber &f = g_fib[i];
        const int t = i % n1;
        f.lin = i, f.done = 0, f.wbar = NULL, f.wait_at = "", f.rank = i / n1, f.bid = g_bids[i / n1];
        f.tid = dim3(t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y));
        f.cp->open.clear(), f.cp->groups.clear(), f.cp->bopen.clear(), f.cp->bgroups.clear();
        ctx_init(&f, f.stack + STACK);
    }
    static unsigned long long rs;
    if (!rs) rs = emu_seed * 0x9e3779b97f4a7c15ull | 1;
    int lo = 0, hi = n - 1;  // the first and last threads not finished
    int from = -1;           // first / last: where the search for a runnable thread starts (-1: at lo / hi)
    for (int left = n; left;) {
        while (g_fib[lo].done) lo++;
        while (g_fib[hi].done) hi--;
        if (emu_sched == EMU_RR || emu_sched == EMU_REV) {  // one round
            int ran = 0;
            for (int k = 0; k < n; k++) {
                emu_fiber &f = g_fib[emu_sched == EMU_RR ? k : n - 1 - k];
                if (runnable(f)) resume(f), ran++, left -= f.done;
            }
            if (!ran) deadlock(n);
        } else {  // one step
            int pick = -1, cnt = 0;
            if (emu_sched == EMU_FIRST) {
                for (int i = from < 0 ? lo : from; i <= hi && pick < 0; i++)
                    if (runnable(g_fib[i])) pick = i;
            } else if (emu_sched == EMU_LAST) {
                for (int i = from < 0 ? hi : from; i >= lo && pick < 0; i--)
                    if (runnable(g_fib[i])) pick = i;
            } else {
                for (int i = lo; i <= hi; i++) {
                    if (!runnable(g_fib[i])) continue;
                    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;  // reservoir sampling
                    if (rs % (unsigned long long)++cnt == 0) pick = i;
                }
            }
            if (pick < 0) deadlock(n);
            long long rel = g_releases;
            resume(g_fib[pick]);
            left -= g_fib[pick].done;
            // the threads before pick were not runnable; only a barrier that
            // pick completed can have changed that
            from = g_releases != rel ? -1 : emu_sched == EMU_FIRST ? pick + 1 : pick - 1;
        }
    }
    emu_cur = NULL;
    sm90_block_end();
    emu_stat.threads += n;
    g_csize = 1;
}
static void run_block(int n, const std::function<void()> &body) {
    g_bids[0] = blockIdx;
    run_fibers(1, n, body);
    blockIdx = g_bids[0];
}

unsigned emu_ballot(int pred) {
    emu_stage &s = emu_st[emu_warp()];
    s.buf[emu_lane()][0] = pred != 0;
    emu_warp_sync("__ballot_sync");
    unsigned m = 0;
    for (int i = 0; i < 32; i++) m |= (unsigned)s.buf[i][0] << i;
    emu_warp_sync("__ballot_sync");
    return m;
}

// -------------------------------------------------------- shared memory ---
// One window per block of a cluster (rank), each [window][guard page]; the
// running thread's block's window is the current one (g_smem_map, g_dyn).
// Addresses are offsets into a window, the same range for every block.
struct emu_win { unsigned char *map, *dyn; size_t dyn_size; };
static emu_win g_win[8];
static unsigned char *g_smem_map;  // the current window
static size_t g_smem_cap, g_dyn_size;
static unsigned char *g_dyn;       // start of the running block's dynamic shared memory

static void smem_setup_rank(size_t bytes, int rank) {
    long pg = sysconf(_SC_PAGESIZE);
    emu_win &w = g_win[rank];
    if (!w.map) {
        g_smem_cap = (256 * 1024 + pg - 1) / pg * pg;
        w.map = (unsigned char *)mmap(NULL, g_smem_cap + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        EMU_CHECK(w.map != MAP_FAILED, "mmap of shared memory");
        mprotect(w.map + g_smem_cap, pg, PROT_NONE);
    }
    size_t r = (bytes + 127) & ~(size_t)127;  // 128-byte aligned start, the end against the guard page
    EMU_CHECK(r <= g_smem_cap, "dynamic shared memory of %zu bytes", bytes);
    w.dyn = w.map + g_smem_cap - r;
    w.dyn_size = bytes;
    memset(w.dyn, 0xff, r);
}
static void smem_select(int rank) {
    g_smem_map = g_win[rank].map, g_dyn = g_win[rank].dyn, g_dyn_size = g_win[rank].dyn_size;
}
static void smem_setup(size_t bytes) {
    smem_setup_rank(bytes, 0);
    smem_select(0);
}
unsigned char *emu_dyn_smem() { return g_dyn; }
size_t emu_dyn_smem_size() { return g_dyn_size; }
uint32_t emu_smem_addr(const void *p, size_t bytes, const char *what) {
    const unsigned char *c = (const unsigned char *)p;
    EMU_CHECK(g_dyn && c >= g_dyn && c + bytes <= g_dyn + g_dyn_size,
              "%s: %p is not in the block's dynamic shared memory (%zu bytes)", what, p, g_dyn_size);
    return (uint32_t)(c - g_smem_map);
}
// the rank of the block an address names: a shared::cluster address (emu_mapa)
// names one, a plain one the running thread's block
static int smem_rank(uint32_t a) { return (a >> 24) ? (int)(a >> 24) - 1 : emu_cur ? emu_cur->rank : 0; }
unsigned char *emu_smem_ptr(uint32_t a, size_t bytes, const char *what) {
    const int r = smem_rank(a);
    EMU_CHECK(r < g_csize, "%s: shared::cluster address %#x names rank %d of a cluster of %d", what, a, r, g_csize);
    const emu_win &w = g_win[r];
    unsigned char *p = w.map + (a & 0xffffff);
    EMU_CHECK(w.dyn && p >= w.dyn && p + bytes <= w.dyn + w.dyn_size,
              "%s: shared address %u outside the block's dynamic shared memory", what, a & 0xffffff);
    return p;
}

// --------------------------------------------------------- tensor cores ---
// mma.m16n8k16 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"),
// g = lane / 4, t = lane % 4, each register two bf16 (low half first):
//   A 16x16: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B 16x8:  b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
//   C 16x8:  c0, c1 (g, 2t..2t+1), c2, c3 (g+8, 2t..2t+1)
// Products are exact in double, summed in double and rounded once (the
// hardware accumulates in fp32 with its own order: differences ~1e-7).
void emu_mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_stat.mma++;
    int l = emu_lane();
    emu_stage &s = emu_st[emu_warp()];
    uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    memcpy(s.buf[l], mine, sizeof mine);
    emu_warp_sync("mma.sync");
    auto reg = [&](int lane, int r) { uint32_t v; memcpy(&v, s.buf[lane] + 4 * r, 4); return v; };
    const int g = l / 4, t = l % 4;
    float A[2][16], B[2][16];  // rows g, g + 8 of A; columns 2t, 2t + 1 of B
    for (int j = 0; j < 4; j++)
        for (int h = 0; h < 2; h++) {  // k < 8 and k >= 8
            for (int r = 0; r < 2; r++) {
                uint32_t v = reg(g * 4 + j, r + 2 * h);
                A[r][8 * h + 2 * j] = emu_bf2f((uint16_t)(v & 0xffff)), A[r][8 * h + 2 * j + 1] = emu_bf2f((uint16_t)(v >> 16));
            }
            for (int n = 0; n < 2; n++) {
                uint32_t v = reg((2 * t + n) * 4 + j, 4 + h);
                B[n][8 * h + 2 * j] = emu_bf2f((uint16_t)(v & 0xffff)), B[n][8 * h + 2 * j + 1] = emu_bf2f((uint16_t)(v >> 16));
            }
        }
    float d[4];
    for (int i = 0; i < 4; i++) {  // c0, c1: row g; c2, c3: row g + 8; columns 2t, 2t + 1
        const float *x = A[i >> 1], *y = B[i & 1];
        double acc = c[i];
        for (int k = 0; k < 16; k++) acc += (double)x[k] * y[k];
        d[i] = (float)acc;
    }
    emu_warp_sync("mma.sync");
    for (int i = 0; i < 4; i++) c[i] = d[i];
}

// ldmatrix .x4: matrix j's 8 row addresses come from lanes 8j..8j+7 (16
// bytes each, 16-byte aligned). Without .trans lane l receives, in r[j],
// row l / 4, elements 2 (l % 4), +1 of matrix j; with .trans, element l / 4
// of rows 2 (l % 4) and 2 (l % 4) + 1.
void emu_ldmatrix_x4(uint32_t r[4], uint32_t addr, bool trans) {
    emu_stat.ldmatrix++;
    int l = emu_lane();
    emu_stage &s = emu_st[emu_warp()];
    EMU_CHECK(addr % 16 == 0, "ldmatrix: row address %u not 16-byte aligned", addr);
    const uint16_t *mine = (const uint16_t *)emu_smem_ptr(addr, 16, "ldmatrix");
    memcpy(s.buf[l], &mine, sizeof mine);
    emu_warp_sync("ldmatrix");
    for (int j = 0; j < 4; j++) {
        uint16_t e[2];
        for (int h = 0; h < 2; h++) {
            const uint16_t *row;
            int col;
            if (!trans) memcpy(&row, s.buf[8 * j + l / 4], sizeof row), col = 2 * (l % 4) + h;
            else memcpy(&row, s.buf[8 * j + 2 * (l % 4) + h], sizeof row), col = l / 4;
            e[h] = row[col];
        }
        r[j] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
    }
    emu_warp_sync("ldmatrix");
}

// cp.async: the source is read at issue (nothing is read when src_size is
// 0), the destination gets 0xff bytes at once and the data (zero-filled
// past src_size) only at the wait_group that covers it, the latest moment
// the hardware may deliver it; a read before that (a missing wait or
// barrier) or a copy into a buffer other threads still read (a missing
// barrier before reuse) shows as NaN or stale data.
void emu_cp_async(uint32_t dst, const void *src, int cp_size, int src_size) {
    emu_stat.cp_async++;
    EMU_CHECK(cp_size == 16, "cp.async.cg: cp-size %d (only 16 is valid)", cp_size);
    EMU_CHECK(src_size >= 0 && src_size <= cp_size, "cp.async: src-size %d", src_size);
    EMU_CHECK(dst % 16 == 0 && (uintptr_t)src % 16 == 0, "cp.async: misaligned (dst %u, src %p)", dst, src);
    emu_cp_op o;
    o.dst = emu_smem_ptr(dst, 16, "cp.async");
    memset(o.data, 0, 16);
    if (src_size) memcpy(o.data, src, src_size);
    memset(o.dst, 0xff, 16);
    emu_cur->cp->open.push_back(o);
}
void emu_cp_commit() {
    emu_cp *c = emu_cur->cp;
    c->groups.push_back(std::move(c->open));
    c->open.clear();
}
void emu_cp_wait(int n) {
    emu_cp *c = emu_cur->cp;
    while ((int)c->groups.size() > n) {
        cp_land(c->groups.front());
        c->groups.erase(c->groups.begin());
    }
}

// ------------------------------------------------------ Hopper (sm_90a) ---
// Sources for the semantics modelled here (read, cross-checked; the kernel
// under test was written from the same reading, so the checks compare two
// independent transcriptions, and the activation tile, which the kernel
// swizzles with its own arithmetic, against this file's TMA and wgmma):
// - PTX ISA: mbarrier (init, arrive, expect_tx, complete_tx, try_wait.parity:
//   true once the phase of that parity has completed; a fresh barrier is in
//   phase 0, so parity 1 is "complete"), cp.async.mbarrier.arrive.noinc,
//   cp.async.bulk.tensor (tile mode), tensormap.replace / cp_fenceproxy,
//   wgmma.mma_async with the matrix descriptor (start address bits 0-13,
//   leading byte offset 16-29, stride byte offset 32-45, base offset 49-51,
//   layout type 62-63: 0 interleave / none, 1 128B, 2 64B, 3 32B swizzle) and
//   the K-major canonical layouts in units of T = 16 bytes / element:
//     none:  ((8,m),(T,2k)):((1T,SBO),(1,LBO))
//     32B:   Swizzle<1,4,3> o ((8,m),(T,2k)):((2T,SBO),(1,T))
//     64B:   Swizzle<2,4,3> o ((8,m),(T,2k)):((4T,SBO),(1,T))
//     128B:  Swizzle<3,4,3> o ((8,m),(T,2k)):((8T,SBO),(1,T))
//   (Swizzle<B,4,3> XORs byte-address bits [4, 4+B) with bits [7, 7+B)).
// - CUTLASS cute/arch/mma_sm90_desc.hpp (GmmaDescriptor bit fields, the
//   LayoutType values) and DeepGEMM (K-major SW128: SBO 1024, LBO unused,
//   k advanced by adding bytes/16 to the start address; its gather path
//   writes chunk c of row r at c ^ (r % 8), as TMA's SWIZZLE_128B does).
// - The CUDA driver API's cuTensorMapEncodeTiled parameter rules (cuda.h).
// Not modelled: the async proxy (fence.proxy.async and wgmma.fence are
// no-ops here), swizzle atomicities other than 16 B, TMA boxes narrower than
// the swizzle span, multicast, clusters, tensor maps of rank > 3.

struct emu_tma_op { unsigned char *dst; std::vector<unsigned char> data; long long bytes; };
struct emu_mbar {
    int expected = 0, pending = 0;
    long long tx = 0;
    unsigned phase = 0;                       // phases completed
    emu_bar chg;                              // gen moves on every change a waiter may care about
    std::vector<emu_tma_op> tma;              // issued copies, landing when someone polls (or the phase needs them)
    std::vector<std::vector<emu_cp_op>> cpa;  // cp.async.mbarrier.arrive.noinc: a thread's copies, then one arrival
};
static std::map<uint64_t, emu_mbar> g_mbar;  // by (block rank, shared address), per block / cluster
static uint64_t mbar_key(uint32_t a) { return (uint64_t)smem_rank(a) << 32 | (a & 0xffffff); }

static void mbar_bump(emu_mbar &m) { m.chg.gen++, g_releases++; }
static void mbar_complete(emu_mbar &m) {
    if (m.pending == 0 && m.tx == 0) {
        m.phase++, m.pending = m.expected;
        mbar_bump(m);
    }
}
static emu_mbar &mbar_at(uint32_t a, const char *what) {
    emu_smem_ptr(a, 8, what);
    EMU_CHECK(a % 8 == 0, "%s: mbarrier address %u not 8-byte aligned", what, a);
    auto it = g_mbar.find(mbar_key(a));
    EMU_CHECK(it != g_mbar.end(), "%s: mbarrier at %u not initialised", what, a & 0xffffff);
    return it->second;
}
void emu_mbar_init(uint32_t a, int count) {
    emu_smem_ptr(a, 8, "mbarrier.init");
    EMU_CHECK(a % 8 == 0, "mbarrier.init: address %u not 8-byte aligned", a);
    EMU_CHECK(count >= 1 && count < (1 << 20), "mbarrier.init: count %d", count);
    auto it = g_mbar.find(mbar_key(a));
    EMU_CHECK(it == g_mbar.end() || (it->second.tma.empty() && it->second.cpa.empty()),
              "mbarrier.init at %u while copies are in flight to it", a);
    emu_mbar &m = g_mbar[mbar_key(a)];
    m.expected = m.pending = count, m.tx = 0, m.phase = 0;
    m.tma.clear(), m.cpa.clear();
    memset(emu_smem_ptr(a, 8, "mbarrier.init"), 0x5a, 8);  // opaque
}
static void mbar_arrive1(emu_mbar &m, uint32_t a, const char *what) {
    EMU_CHECK(m.pending > 0, "%s: more arrivals than the expected count %d on the mbarrier at %u", what, m.expected, a);
    m.pending--;
    mbar_complete(m);
}
void emu_mbar_arrive(uint32_t a) { emu_mbar &m = mbar_at(a, "mbarrier.arrive"); mbar_arrive1(m, a, "mbarrier.arrive"); }
void emu_mbar_arrive_expect_tx(uint32_t a, uint32_t bytes) {
    emu_mbar &m = mbar_at(a, "mbarrier.arrive.expect_tx");
    m.tx += bytes;
    mbar_arrive1(m, a, "mbarrier.arrive.expect_tx");
}
// The latest the copies can land: when a thread looks at the barrier. They
// land one at a time, and no more once the phase completes: what a phase
// did not wait for (a wrong expect_tx, a missing arrival) is still poison
// when the waiters read it.
static void mbar_land(emu_mbar &m, uint32_t a) {
    const unsigned ph = m.phase;
    while (!m.tma.empty() && m.phase == ph) {
        emu_tma_op o = std::move(m.tma.front());
        m.tma.erase(m.tma.begin());
        memcpy(o.dst, o.data.data(), o.data.size());
        m.tx -= o.bytes;
        mbar_complete(m);
    }
    while (!m.cpa.empty() && m.phase == ph) {
        std::vector<emu_cp_op> g = std::move(m.cpa.front());
        m.cpa.erase(m.cpa.begin());
        cp_land(g);
        mbar_arrive1(m, a, "cp.async.mbarrier.arrive.noinc");
    }
}
bool emu_mbar_try_wait(uint32_t a, uint32_t parity) {
    emu_mbar &m = mbar_at(a, "mbarrier.try_wait");
    EMU_CHECK(parity <= 1, "mbarrier.try_wait.parity: parity %u", parity);
    if ((m.phase & 1) != parity) return true;
    mbar_land(m, a);  // only what the waited-for phase needs, and only now
    if ((m.phase & 1) != parity) return true;
    // not yet: sleep until something changes on this barrier, then let the caller poll again
    emu_cur->wbar = &m.chg, emu_cur->wgen = m.chg.gen, emu_cur->wait_at = "mbarrier.try_wait";
    while (m.chg.gen == emu_cur->wgen) ctx_to_sched(emu_cur);
    emu_cur->wbar = NULL;
    return false;
}
void emu_cp_async_mbar_arrive_noinc(uint32_t a) {
    emu_mbar &m = mbar_at(a, "cp.async.mbarrier.arrive.noinc");
    emu_cp *c = emu_cur->cp;
    std::vector<emu_cp_op> all;
    for (auto &g : c->groups) all.insert(all.end(), g.begin(), g.end());
    all.insert(all.end(), c->open.begin(), c->open.end());
    c->groups.clear(), c->open.clear();
    m.cpa.push_back(std::move(all));
    mbar_bump(m);
}

// ---- tensor maps: the emulator's own layout in the opaque 128 bytes ----
struct emu_tmap {
    uint64_t magic, addr;
    uint32_t rank, esz;
    uint64_t dim[3], stride[2];  // stride[i]: bytes between steps of dimension i + 1
    uint32_t box[3], es[3];
    int32_t swz, il, oob, l2;
};
static_assert(sizeof(emu_tmap) <= 128, "tensor map layout");
static const uint64_t TMAP_MAGIC = 0x54454e534f524d41ull;
static std::map<const void *, unsigned> g_tmap_ver;  // maps published by tensormap.cp_fenceproxy: version
static std::map<std::pair<int, const void *>, unsigned> g_tmap_acq;  // per block (rank): the version acquired

CUresult emu_tensor_map_encode_tiled(CUtensorMap *map, CUtensorMapDataType dt, cuuint32_t rank, void *addr,
                                     const cuuint64_t *dim, const cuuint64_t *strides, const cuuint32_t *box,
                                     const cuuint32_t *es, CUtensorMapInterleave il, CUtensorMapSwizzle swz,
                                     CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
    static const int esz_of[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2};
    if (!map || (uintptr_t)map % 64 || (int)dt < 0 || (int)dt > 9 || rank < 1 || rank > 3) return CUDA_ERROR_INVALID_VALUE;
    if (il != CU_TENSOR_MAP_INTERLEAVE_NONE) return CUDA_ERROR_INVALID_VALUE;  // not emulated
    const uint32_t esz = esz_of[dt];
    if ((uintptr_t)addr % 16) return CUDA_ERROR_INVALID_VALUE;
    for (uint32_t i = 0; i < rank; i++) {
        if (dim[i] == 0 || dim[i] > (1ull << 32) || box[i] == 0 || box[i] > 256 || es[i] == 0 || es[i] > 8)
            return CUDA_ERROR_INVALID_VALUE;
        if (i + 1 < rank) {
            uint64_t prev = i == 0 ? dim[0] * esz : strides[i - 1] * dim[i];
            if (strides[i] % 16 || strides[i] >= (1ull << 40) || strides[i] < prev) return CUDA_ERROR_INVALID_VALUE;
        }
    }
    if ((box[0] * esz) % 16) return CUDA_ERROR_INVALID_VALUE;
    const uint32_t span = swz == CU_TENSOR_MAP_SWIZZLE_NONE ? 0 : 16u << (int)swz;
    if (span && box[0] * esz > span) return CUDA_ERROR_INVALID_VALUE;
    emu_tmap t = {};
    t.magic = TMAP_MAGIC, t.addr = (uint64_t)(uintptr_t)addr, t.rank = rank, t.esz = esz;
    for (uint32_t i = 0; i < rank; i++) t.dim[i] = dim[i], t.box[i] = box[i], t.es[i] = es[i];
    for (uint32_t i = 0; i + 1 < rank; i++) t.stride[i] = strides[i];
    t.swz = swz, t.il = il, t.oob = oob, t.l2 = l2;
    memset(map, 0, sizeof *map);
    memcpy(map, &t, sizeof t);
    return CUDA_SUCCESS;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char *sym, void **fn, unsigned version, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult *status) {
    (void)flags;
    bool ok = !strcmp(sym, "cuTensorMapEncodeTiled") && version >= 12000;
    *fn = ok ? (void *)&emu_tensor_map_encode_tiled : NULL;
    if (status) *status = ok ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
    return cudaSuccess;
}

static emu_tmap tmap_read(const void *map, const char *what) {
    emu_tmap t;
    EMU_CHECK((uintptr_t)map % 64 == 0, "%s: tensor map at %p not 64-byte aligned", what, map);
    memcpy(&t, map, sizeof t);
    EMU_CHECK(t.magic == TMAP_MAGIC, "%s: %p is not a tensor map", what, map);
    return t;
}
void emu_tmap_replace_global_address(uint32_t smap, const void *addr) {
    EMU_CHECK(smap % 128 == 0, "tensormap.replace: shared address %u not 128-byte aligned", smap);
    unsigned char *p = emu_smem_ptr(smap, 128, "tensormap.replace");
    emu_tmap t = tmap_read(p, "tensormap.replace");
    EMU_CHECK((uintptr_t)addr % 16 == 0, "tensormap.replace: global address %p not 16-byte aligned", addr);
    t.addr = (uint64_t)(uintptr_t)addr;
    memcpy(p, &t, sizeof t);
}
void emu_tmap_cp_fenceproxy(CUtensorMap *gmap, uint32_t smap) {
    struct { CUtensorMap *g; uint32_t s; } mine = {gmap, smap}, first;
    first = emu_exchange(mine, 0, "tensormap.cp_fenceproxy");  // .sync.aligned: the whole warp, same operands
    EMU_CHECK(first.g == gmap && first.s == smap, "tensormap.cp_fenceproxy: lanes disagree on the operands");
    if (emu_lane() == 0) {
        EMU_CHECK((uintptr_t)gmap % 128 == 0 && smap % 128 == 0, "tensormap.cp_fenceproxy: operands not 128-byte aligned");
        memcpy(gmap, emu_smem_ptr(smap, 128, "tensormap.cp_fenceproxy"), 128);
        g_tmap_ver[gmap]++;
    }
}
void emu_tmap_acquire(const CUtensorMap *map) {
    auto it = g_tmap_ver.find(map);
    if (it != g_tmap_ver.end()) g_tmap_acq[std::make_pair(emu_cur->rank, (const void *)map)] = it->second;
}
// a map published on the device is usable by a block once it acquired that version
static bool tmap_usable(const CUtensorMap *map) {
    auto v = g_tmap_ver.find(map);
    return v == g_tmap_ver.end() || g_tmap_acq[std::make_pair(emu_cur->rank, (const void *)map)] == v->second;
}

// ctamask 0: into the issuing block only; else into each block of the mask
// (multicast), at the same offsets (dst, bar) in each
static void tma_load(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar, unsigned ctamask) {
    emu_stat.tma++;
    emu_tmap t = tmap_read(map, "cp.async.bulk.tensor");
    EMU_CHECK(tmap_usable(map),
              "cp.async.bulk.tensor: the tensor map at %p was written on the device and not acquired by this block "
              "(fence.proxy.tensormap::generic.acquire)", (const void *)map);
    EMU_CHECK(t.rank == 2, "cp.async.bulk.tensor.2d with a rank-%u map", t.rank);
    EMU_CHECK(t.es[1] == 1, "element strides other than 1 not emulated");
    const uint32_t row = t.box[0] * t.esz, bytes = row * t.box[1];
    const uint32_t span = t.swz ? 16u << t.swz : 0;
    EMU_CHECK(dst % (span ? 8 * span : 128) == 0, "cp.async.bulk.tensor: shared destination %u not %u-byte aligned", dst,
              span ? 8 * span : 128);
    EMU_CHECK(!span || row == span, "TMA box rows of %u bytes under a %u-byte swizzle: not emulated", row, span);
    EMU_CHECK(dst >> 24 == 0 && bar >> 24 == 0, "cp.async.bulk.tensor: give the issuing block's own shared addresses");
    EMU_CHECK(ctamask < (1u << g_csize), "cp.async.bulk.tensor multicast: ctaMask %#x in a cluster of %d", ctamask, g_csize);
    emu_tma_op o;
    o.bytes = bytes, o.data.assign(bytes, 0);
    for (uint32_t r = 0; r < t.box[1]; r++)
        for (uint32_t e = 0; e < t.box[0]; e++) {
            long long gx = (long long)x + e, gy = (long long)y + r;
            uint32_t off = r * row + e * t.esz;
            if (span) {  // Swizzle<log2(span/16),4,3> on the shared address
                uint32_t a = dst + off;
                a ^= ((a >> 7) & (span / 16 - 1)) << 4;
                off = a - dst;
            }
            if (gx >= 0 && gy >= 0 && (uint64_t)gx < t.dim[0] && (uint64_t)gy < t.dim[1])
                memcpy(&o.data[off], (const char *)(uintptr_t)t.addr + gy * t.stride[0] + gx * t.esz, t.esz);
        }
    for (int r = 0; r < g_csize; r++) {
        if (ctamask ? !(ctamask >> r & 1) : r != emu_cur->rank) continue;
        const uint32_t cd = ctamask ? (uint32_t)(r + 1) << 24 | dst : dst, cb = ctamask ? (uint32_t)(r + 1) << 24 | bar : bar;
        check_peer_alive(r, "cp.async.bulk.tensor multicast");
        unsigned char *d = emu_smem_ptr(cd, bytes, "cp.async.bulk.tensor");
        emu_mbar &m = mbar_at(cb, "cp.async.bulk.tensor");
        o.dst = d;
        memset(d, 0xff, bytes);  // until it lands
        m.tma.push_back(o);
        mbar_bump(m);
    }
}
void emu_tma_load_2d(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar) { tma_load(dst, map, x, y, bar, 0); }
void emu_tma_load_2d_multicast(uint32_t dst, const CUtensorMap *map, int x, int y, uint32_t bar, uint16_t ctamask) {
    EMU_CHECK(ctamask != 0, "cp.async.bulk.tensor multicast with an empty ctaMask");
    tma_load(dst, map, x, y, bar, ctamask);
}

void emu_tmap_replace_global_dim(uint32_t smap, int ord, uint32_t v) {
    EMU_CHECK(smap % 128 == 0, "tensormap.replace: shared address %u not 128-byte aligned", smap);
    unsigned char *p = emu_smem_ptr(smap, 128, "tensormap.replace");
    emu_tmap t = tmap_read(p, "tensormap.replace");
    EMU_CHECK(ord >= 0 && (uint32_t)ord < t.rank, "tensormap.replace.global_dim: ordinal %d of a rank-%u map", ord, t.rank);
    EMU_CHECK(v >= 1, "tensormap.replace.global_dim: dimension %u", v);
    t.dim[ord] = v;
    if (ord + 1 < (int)t.rank)
        EMU_CHECK(t.stride[ord] >= (ord ? t.stride[ord - 1] * t.dim[ord] : t.dim[0] * t.esz),
                  "tensormap.replace.global_dim: dimension %u wider than the stride", v);
    memcpy(p, &t, sizeof t);
}

// ---- TMA stores and bulk async-groups ----
void emu_tma_store_2d(const CUtensorMap *map, int x, int y, uint32_t src) {
    emu_stat.tma++;
    emu_tmap t = tmap_read(map, "cp.async.bulk.tensor (store)");
    EMU_CHECK(tmap_usable(map),
              "cp.async.bulk.tensor store: the tensor map at %p was written on the device and not acquired by this "
              "block", (const void *)map);
    EMU_CHECK(t.rank == 2 && t.es[0] == 1 && t.es[1] == 1, "TMA store: only 2-D maps with unit element strides");
    const uint32_t row = t.box[0] * t.esz, bytes = row * t.box[1], span = t.swz ? 16u << t.swz : 0;
    EMU_CHECK(src >> 24 == 0, "TMA store: the source is a shared::cta address");
    EMU_CHECK(src % (span ? 8 * span : 128) == 0, "TMA store: shared source %u not %u-byte aligned", src, span ? 8 * span : 128);
    EMU_CHECK(!span || row == span, "TMA store box rows of %u bytes under a %u-byte swizzle: not emulated", row, span);
    emu_bulk_op o;
    memcpy(o.map, map, 128);
    o.x = x, o.y = y, o.src = emu_smem_ptr(src, bytes, "TMA store");
    emu_cur->cp->bopen.push_back(o);
}
void emu_bulk_commit() {
    emu_cp *c = emu_cur->cp;
    c->bgroups.push_back(std::move(c->bopen));
    c->bopen.clear();
}
// reads the box out of shared memory (now: the latest moment it may) and
// writes its in-bounds elements
static void bulk_store_run(const emu_bulk_op &o) {
    emu_tmap t;
    memcpy(&t, o.map, sizeof t);
    const uint32_t row = t.box[0] * t.esz, span = t.swz ? 16u << t.swz : 0;
    const uint32_t base = (uint32_t)((uintptr_t)o.src & 1023);  // the swizzle follows the address bits (src is 1024-aligned)
    for (uint32_t r = 0; r < t.box[1]; r++)
        for (uint32_t e = 0; e < t.box[0]; e++) {
            long long gx = (long long)o.x + e, gy = (long long)o.y + r;
            if (gx < 0 || gy < 0 || (uint64_t)gx >= t.dim[0] || (uint64_t)gy >= t.dim[1]) continue;
            uint32_t off = r * row + e * t.esz;
            if (span) {
                uint32_t a = base + off;
                a ^= ((a >> 7) & (span / 16 - 1)) << 4;
                off = a - base;
            }
            memcpy((char *)(uintptr_t)t.addr + gy * t.stride[0] + gx * t.esz, o.src + off, t.esz);
        }
}
void emu_bulk_wait(int n, bool read_only) {
    (void)read_only;  // the emulator writes global memory when it reads the source
    EMU_CHECK(n >= 0 && n <= 63, "cp.async.bulk.wait_group %d", n);
    emu_cp *c = emu_cur->cp;
    while ((int)c->bgroups.size() > n) {
        for (auto &o : c->bgroups.front()) bulk_store_run(o);
        c->bgroups.erase(c->bgroups.begin());
    }
}

// ---- clusters ----
int emu_cluster_rank() { return emu_cur->rank; }
int emu_cluster_size() { return g_csize; }
uint32_t emu_mapa(uint32_t a, int rank) {
    EMU_CHECK(a >> 24 == 0, "mapa of an address that is already a shared::cluster address");
    EMU_CHECK(rank >= 0 && rank < g_csize, "mapa: rank %d in a cluster of %d", rank, g_csize);
    return (uint32_t)(rank + 1) << 24 | a;
}
void emu_mbar_arrive_cluster(uint32_t a) {
    check_peer_alive(smem_rank(a), "mbarrier.arrive.shared::cluster");
    emu_mbar &m = mbar_at(a, "mbarrier.arrive.shared::cluster");
    mbar_arrive1(m, a, "mbarrier.arrive.shared::cluster");
}
void emu_cluster_sync() { emu_wait(g_cluster_bar, g_csize * g_cthreads, "barrier.cluster"); }
void emu_bar_sync(int id, int count) {
    EMU_CHECK(id >= 0 && id < 16, "bar.sync: barrier %d", id);
    EMU_CHECK(count > 0 && count % 32 == 0 && count <= g_cthreads, "bar.sync %d, %d in a block of %d threads", id, count,
              g_cthreads);
    emu_wait(id ? g_named[emu_cur->rank][id] : emu_cta_bar[emu_cur->rank], count, "bar.sync");
}

// ---- wgmma ----
struct emu_wg_op { uint64_t da, db; int n, scale_d, group; float *acc[128]; };
struct emu_wg {
    std::vector<emu_wg_op> ops;
    int next_group = 0;
    int arrived = 0;  // the collective being assembled
    const char *what = NULL;
    uint64_t key = 0;
    emu_wg_op cur;
};
static emu_wg g_wg[16];  // by warpgroup, numbered across the blocks of a cluster
static emu_bar g_wg_bar[16];
struct emu_shadow { std::vector<float> v; int pending; };
static std::map<float *, emu_shadow> g_shadow;  // accumulators in flight: their values as the MMAs see them

// A warpgroup-wide instruction: every thread of the warpgroup, same operands;
// the last to arrive performs it, then the warpgroup moves on together.
template <class F> static void wg_collective(const char *what, uint64_t key, F last) {
    const int nthr = (int)(blockDim.x * blockDim.y * blockDim.z), wgi = emu_cur->lin / 128;
    EMU_CHECK(nthr % 128 == 0, "%s: the block (%d threads) is not made of whole warpgroups", what, nthr);
    emu_wg &w = g_wg[wgi];
    if (w.arrived == 0) w.what = what, w.key = key;
    EMU_CHECK(w.what == what && w.key == key, "%s: threads of warpgroup %d disagree (%s): not .aligned", what, wgi, w.what);
    if (++w.arrived == 128) {
        w.arrived = 0;
        last(w);
    }
    emu_wait(g_wg_bar[wgi], 128, what);
}

// element (row, k) of a K-major bf16 operand through its descriptor
static float wgmma_elem(uint64_t desc, int row, int k) {
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4,
                   sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4;
    const int base = (int)((desc >> 49) & 7), mode = (int)(desc >> 62);
    EMU_CHECK(base == 0, "wgmma descriptor: base offset %d not emulated", base);
    uint32_t a;
    if (mode == 0) {  // no swizzle: 8 x 16-byte core matrices, LBO between them along k
        a = start + (row / 8) * sbo + (row % 8) * 16 + (k / 8) * lbo + (k % 8) * 2;
    } else {  // 1: 128B, 2: 64B, 3: 32B; the 16 k of one wgmma fit in a swizzle row, LBO unused
        const uint32_t span = mode == 1 ? 128 : mode == 2 ? 64 : 32;
        a = start + (row / 8) * sbo + (row % 8) * span + k * 2;
        a ^= ((a >> 7) & (span / 16 - 1)) << 4;
    }
    uint16_t v;
    memcpy(&v, emu_smem_ptr(a, 2, "wgmma operand"), 2);
    return emu_bf2f(v);
}

static void wgmma_run(emu_wg_op &o) {
    std::vector<double> A(64 * 16), B((size_t)o.n * 16);
    for (int r = 0; r < 64; r++)
        for (int k = 0; k < 16; k++) A[r * 16 + k] = wgmma_elem(o.da, r, k);
    for (int c = 0; c < o.n; c++)
        for (int k = 0; k < 16; k++) B[c * 16 + k] = wgmma_elem(o.db, c, k);
    for (int lt = 0; lt < 128; lt++) {
        emu_shadow &sh = g_shadow[o.acc[lt]];
        const int w = lt / 32, l = lt % 32, g = l / 4, t = l % 4;
        for (int i = 0; i < o.n / 8; i++)
            for (int e = 0; e < 4; e++) {  // d[4i+e]: row 16w + g (+8 for e >= 2), column 8i + 2t + (e & 1)
                const int r = 16 * w + g + 8 * (e >> 1), c = 8 * i + 2 * t + (e & 1);
                double s = o.scale_d ? sh.v[4 * i + e] : 0.0;
                for (int k = 0; k < 16; k++) s += A[r * 16 + k] * B[c * 16 + k];
                sh.v[4 * i + e] = (float)s;
            }
        if (--sh.pending == 0) {
            memcpy(o.acc[lt], sh.v.data(), sh.v.size() * sizeof(float));
            g_shadow.erase(o.acc[lt]);
        }
    }
}

void emu_wgmma_bf16(float *d, int n, uint64_t da, uint64_t db, int scale_d) {
    EMU_CHECK(n >= 8 && n <= 256 && n % 8 == 0, "wgmma: n %d", n);
    emu_stat.wgmma++;
    // in flight from here: the registers hold NaN until the wait that covers this MMA
    emu_shadow &sh = g_shadow[d];
    if (sh.pending++ == 0) sh.v.assign(d, d + n / 2);
    EMU_CHECK((int)sh.v.size() == n / 2, "wgmma: accumulators in flight with another shape");
    for (int i = 0; i < n / 2; i++) d[i] = __uint_as_float(0x7fc00bad);
    const int lt = emu_cur->lin % 128;
    uint64_t key = da * 0x9e3779b97f4a7c15ull ^ db ^ ((uint64_t)n << 1) ^ (uint64_t)(scale_d != 0);
    g_wg[emu_cur->lin / 128].cur.acc[lt] = d;
    wg_collective("wgmma.mma_async", key, [&](emu_wg &w) {
        w.cur.da = da, w.cur.db = db, w.cur.n = n, w.cur.scale_d = scale_d != 0, w.cur.group = -1;
        w.ops.push_back(w.cur);
    });
}
void emu_wgmma_fence() { wg_collective("wgmma.fence", 0, [](emu_wg &) {}); }
void emu_wgmma_commit() {
    wg_collective("wgmma.commit_group", 0, [](emu_wg &w) {
        for (auto &o : w.ops)  // an empty group counts as a group too
            if (o.group < 0) o.group = w.next_group;
        w.next_group++;
    });
}
void emu_wgmma_wait(int n) {
    wg_collective("wgmma.wait_group", (uint64_t)n, [n](emu_wg &w) {
        std::vector<emu_wg_op> keep;
        for (auto &o : w.ops) {
            if (o.group >= 0 && o.group < w.next_group - n) wgmma_run(o);
            else keep.push_back(o);
        }
        w.ops.swap(keep);
    });
}

static void sm90_block_start() {
    g_mbar.clear();
    g_tmap_acq.clear();
    g_shadow.clear();
    for (int i = 0; i < 16; i++) g_wg[i] = emu_wg(), g_wg_bar[i] = emu_bar();
}
static void sm90_block_end() {
    for (int i = 0; i < 16; i++)
        EMU_CHECK(g_wg[i].ops.empty(), "block %u: warpgroup %d exited with %zu wgmma not waited for", blockIdx.x, i,
                  g_wg[i].ops.size());
}

// --------------------------------------------------------------- runtime ---
static cudaError_t g_last_error;
static std::map<const void *, int> g_max_dyn;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize

cudaError_t emu_set_attr(const void *fn, int attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > emu_dev.smem_optin)
        return g_last_error = cudaErrorInvalidValue;
    g_max_dyn[fn] = value;
    return cudaSuccess;
}
cudaError_t emu_occupancy(int *n, const void *fn, int threads, size_t smem) {
    (void)fn;
    if (threads < 1 || threads > 1024) return cudaErrorInvalidValue;
    int by_threads = emu_dev.threads_per_sm / ((threads + 31) / 32 * 32);
    int by_smem = smem ? (int)(emu_dev.smem_per_sm / (smem + 1024)) : 32;  // 1 KB reserved per block
    *n = std::min(std::min(by_threads, by_smem), 32);
    return cudaSuccess;
}
cudaError_t cudaGetLastError() { cudaError_t e = g_last_error; g_last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError() { return g_last_error; }
cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev) {
    (void)dev;
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = emu_dev.sms; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 * 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)emu_dev.smem_optin; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *v = emu_dev.cc_major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = emu_dev.cc_minor; return cudaSuccess;
    }
    return cudaErrorInvalidValue;
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotSupported: return "operation not supported";
    }
    return "error";
}

void emu_run(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    gridDim = grid, blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                smem_setup(smem);
                run_block((int)(block.x * block.y * block.z), body);
                emu_stat.blocks++;
            }
}

void emu_launch(const void *fn, const std::function<void()> &body, dim3 grid, dim3 block, size_t smem, cudaStream_t st) {
    (void)st;
    unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    bool bad = !grid.x || !grid.y || !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 || !nt ||
               nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64;
    auto it = g_max_dyn.find(fn);
    size_t lim = it != g_max_dyn.end() ? std::max((size_t)it->second, (size_t)48 * 1024) : 48 * 1024;
    cudaError_t e = bad ? cudaErrorInvalidConfiguration : smem > lim ? cudaErrorInvalidValue : cudaSuccess;
    emu_launches.push_back({fn, grid, block, smem, e});
    if (e) {
        g_last_error = e;
        return;
    }
    emu_run(grid, block, smem, body);
}

void emu_run_cluster(dim3 grid, dim3 block, size_t smem, unsigned cx, const std::function<void()> &body) {
    EMU_CHECK(cx >= 1 && cx <= 8 && grid.x % cx == 0, "cluster of %u blocks over a grid of %u", cx, grid.x);
    gridDim = grid, blockDim = block;
    const int n1 = (int)(block.x * block.y * block.z);
    EMU_CHECK(cx == 1 || n1 % 32 == 0, "clusters of blocks of %d threads (not whole warps): not emulated", n1);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x += cx) {
                for (unsigned r = 0; r < cx; r++) {
                    g_bids[r] = dim3(x + r, y, z);
                    smem_setup_rank(smem, (int)r);
                }
                blockIdx = g_bids[0];
                smem_select(0);
                run_fibers((int)cx, n1, body);
                emu_stat.blocks += cx;
            }
}

void emu_launch_cluster(const void *fn, const std::function<void()> &body, dim3 grid, dim3 block, size_t smem,
                        unsigned cx, cudaStream_t st) {
    (void)st;
    unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    bool bad = !grid.x || !grid.y || !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 || !nt ||
               nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || !cx || cx > 8 || grid.x % cx ||
               nt * cx > 2048 || (cx > 1 && nt % 32);
    auto it = g_max_dyn.find(fn);
    size_t lim = it != g_max_dyn.end() ? std::max((size_t)it->second, (size_t)48 * 1024) : 48 * 1024;
    cudaError_t e = bad ? cudaErrorInvalidConfiguration : smem > lim ? cudaErrorInvalidValue : cudaSuccess;
    emu_launches.push_back({fn, grid, block, smem, e, cx});
    if (e) {
        g_last_error = e;
        return;
    }
    emu_run_cluster(grid, block, smem, cx, body);
}

int emu_max_active_clusters(unsigned cx, size_t smem, int threads) {
    if (!cx || cx > 8 || threads < 1 || threads > 1024) return 0;
    int per_sm = std::min(emu_dev.threads_per_sm / ((threads + 31) / 32 * 32),
                          smem ? (int)(emu_dev.smem_per_sm / (smem + 1024)) : 32);
    const int sms = emu_dev.cluster_sms > 0 ? emu_dev.cluster_sms : emu_dev.sms;
    return sms * std::min(per_sm, 32) / (int)cx;
}

// A segfault inside a kernel: say where.
static void on_segv(int sig, siginfo_t *si, void *) {
    char msg[256];
    int n = snprintf(msg, sizeof msg, "emu: %s at address %p", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", si->si_addr);
    if (emu_cur)
        n += snprintf(msg + n, sizeof msg - n, " in block %u,%u,%u thread %u", blockIdx.x, blockIdx.y, blockIdx.z,
                      emu_cur->tid.x);
    if (g_smem_map && (unsigned char *)si->si_addr >= g_smem_map + g_smem_cap &&
        (unsigned char *)si->si_addr < g_smem_map + g_smem_cap + 4096)
        n += snprintf(msg + n, sizeof msg - n, " (past the end of dynamic shared memory)");
    n += snprintf(msg + n, sizeof msg - n, "\n");
    if (write(2, msg, n) < 0) {}
    signal(sig, SIG_DFL);
    raise(sig);
}
static struct emu_init {
    emu_init() {
        if (const char *e = getenv("EMU_SCHED")) {
            static const char *n[] = {"rr", "rev", "first", "last", "random"};
            bool ok = false;
            for (int i = 0; i < 5; i++)
                if (!strcmp(e, n[i])) emu_sched = (emu_sched_policy)i, ok = true;
            if (!ok) fprintf(stderr, "emu: EMU_SCHED=%s unknown (rr, rev, first, last, random)\n", e), exit(2);
        }
        if (const char *e = getenv("EMU_SEED")) emu_seed = strtoull(e, NULL, 0);
        static char alt[64 * 1024];
        stack_t ss = {};
        ss.ss_sp = alt, ss.ss_size = sizeof alt;
        sigaltstack(&ss, NULL);
        struct sigaction sa = {};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
    }
} g_emu_init;
