// CUDA-on-CPU emulation: fibers, barriers, warp collectives, launches.
#include "emu.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <vector>

emu_fiber *emu_cur;
dim3 blockIdx, blockDim, gridDim;
emu_bar emu_block_bar, emu_warp_bar[32];
emu_stage emu_st[32];
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
struct emu_cp {
    std::vector<emu_cp_op> open;                 // issued, not yet committed
    std::vector<std::vector<emu_cp_op>> groups;  // committed, oldest first
};
static void cp_land(std::vector<emu_cp_op> &g) {
    for (auto &o : g) memcpy(o.dst, o.data, 16);
    g.clear();
}

// --------------------------------------------------------------- fibers ---
static const std::function<void()> *g_body;
static std::vector<emu_fiber> g_fib;
static const size_t STACK = 256 * 1024;

extern "C" void emu_fiber_main() {
    (*g_body)();
    emu_fiber *f = emu_cur;
    if (!f->cp->groups.empty() || !f->cp->open.empty()) {  // never waited for: lands some time after exit
        for (auto &g : f->cp->groups) cp_land(g);
        cp_land(f->cp->open);
        f->cp->groups.clear();
    }
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

static void resume(emu_fiber &f) {
    emu_cur = &f;
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
        if (!g_fib[i].done && shown < 8) fprintf(stderr, " thread %d at %s;", i, g_fib[i].wait_at), shown++;
    }
    fprintf(stderr, " (%d of %d threads exited)\n", exited, n);
    abort();
}

static void run_block(int n, const std::function<void()> &body) {
    EMU_CHECK(n >= 1 && n <= 1024, "block of %d threads", n);
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
    emu_block_bar = emu_bar();
    for (auto &b : emu_warp_bar) b = emu_bar();
    for (int i = 0; i < n; i++) {
        emu_fiber &f = g_fib[i];
        f.lin = i, f.done = 0, f.wbar = NULL, f.wait_at = "";
        f.tid = dim3(i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y));
        f.cp->open.clear(), f.cp->groups.clear();
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
    emu_stat.threads += n;
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
static unsigned char *g_smem_map;  // [window][guard page]
static size_t g_smem_cap, g_dyn_size;
static unsigned char *g_dyn;       // start of the running block's dynamic shared memory

static void smem_setup(size_t bytes) {
    long pg = sysconf(_SC_PAGESIZE);
    if (!g_smem_map) {
        g_smem_cap = (256 * 1024 + pg - 1) / pg * pg;
        g_smem_map = (unsigned char *)mmap(NULL, g_smem_cap + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        EMU_CHECK(g_smem_map != MAP_FAILED, "mmap of shared memory");
        mprotect(g_smem_map + g_smem_cap, pg, PROT_NONE);
    }
    size_t r = (bytes + 127) & ~(size_t)127;  // 128-byte aligned start, the end against the guard page
    EMU_CHECK(r <= g_smem_cap, "dynamic shared memory of %zu bytes", bytes);
    g_dyn = g_smem_map + g_smem_cap - r;
    g_dyn_size = bytes;
    memset(g_dyn, 0xff, r);
}
unsigned char *emu_dyn_smem() { return g_dyn; }
size_t emu_dyn_smem_size() { return g_dyn_size; }
uint32_t emu_smem_addr(const void *p, size_t bytes, const char *what) {
    const unsigned char *c = (const unsigned char *)p;
    EMU_CHECK(g_dyn && c >= g_dyn && c + bytes <= g_dyn + g_dyn_size,
              "%s: %p is not in the block's dynamic shared memory (%zu bytes)", what, p, g_dyn_size);
    return (uint32_t)(c - g_smem_map);
}
unsigned char *emu_smem_ptr(uint32_t a, size_t bytes, const char *what) {
    unsigned char *p = g_smem_map + a;
    EMU_CHECK(g_dyn && p >= g_dyn && p + bytes <= g_dyn + g_dyn_size,
              "%s: shared address %u outside the block's dynamic shared memory", what, a);
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
    }
    return cudaErrorInvalidValue;
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
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
