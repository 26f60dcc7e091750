// Emulator check of src/kernels/cuda/gemm.cu through its launchers:
// lm_cuda_gg_run (k_gg_stream<NB, SWI, AF32> for every NB / swiglu /
// activation type, with split-K, small rings and grids, PDL launches;
// k_gg_small<NB, SWI, AF32>, k_gg_large<SWI>, k_to_bf16) against a
// double-precision reference over the same bf16 operands;
// lm_cuda_align_fast(_pdl) and lm_cuda_route_align bit for bit against the
// serial semantics of k_align (basic.cu: a transcription here, and the real
// kernel run through the emulator); lm_cuda_route_fast, lm_cuda_route_align
// and lm_cuda_combine_fast bit for bit against basic.cu's k_route and
// k_combine (emulated).
//
// Every "device" buffer ends against an inaccessible page (an over-read or
// over-write faults), row padding (lda, ldw > K) holds NaN, the output
// starts as a sentinel pattern that must survive wherever nothing may be
// written (ldo padding, group padding rows). Each case runs in a child
// process, so a fault, trap or deadlock fails that case only.
//
//   check_gemm [-q] [substring]   the cases whose name contains substring;
//                                 -q: print failures only
#include "gen/gemm.cpp"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>

// ------------------------------------------------------------- helpers ---
static uint64_t g_rs = 0x9e3779b97f4a7c15ull;
static uint64_t rnd_u() {
    g_rs ^= g_rs << 13, g_rs ^= g_rs >> 7, g_rs ^= g_rs << 17;
    return g_rs;
}
static double rnd() { return (double)(rnd_u() >> 11) / (double)(1ull << 53) * 2 - 1; }  // [-1, 1)
static int rnd_int(int n) { return (int)(rnd_u() % (uint64_t)n); }

// "Device" memory: the buffer's end (rounded up to 16 bytes) is the start of
// a PROT_NONE page. Never freed: every case runs in its own process.
static void *dalloc(size_t bytes) {
    long pg = sysconf(_SC_PAGESIZE);
    size_t r = (bytes + 15) & ~(size_t)15, len = (r + pg - 1) / pg * pg;
    char *m = (char *)mmap(NULL, len + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EMU_CHECK(m != MAP_FAILED, "mmap");
    mprotect(m + len, pg, PROT_NONE);
    return m + len - r;
}
template <class T> static T *dalloc_n(size_t n) { return (T *)dalloc(n * sizeof(T)); }

static const uint16_t BF_NAN = 0x7fc1;           // row padding of bf16 operands
static const uint32_t F32_SENT = 0x7f8badadu;    // f32 output never to be written (a NaN)
static const uint16_t BF_SENT = 0xffad;          // bf16 output never to be written (a NaN)
static float f32_nan() { return __uint_as_float(0x7fc00001u); }

// basic.cu's kernels (emulated in basic.o): the references of route and combine
void k_route(const float *logits, size_t ldl, int n, int E, int k, int norm, int *sel, size_t lds, float *w, size_t ldw_);
void k_align(const int *sel, size_t lds, int n, int k, int E, int B, int *row_of, size_t ldr, int *token_of, int *tiles,
             int *n_tiles, int *counts, unsigned long long *stats);
void k_combine(const int *row_of, size_t ldr, const float *w, size_t ldw_, int k, const float *y, size_t ldy, float *out,
               size_t ldo, int H);

static std::map<const void *, std::string> g_names;
template <int NB, bool S, bool F> static void name_small() {
    char b[64];
    snprintf(b, sizeof b, "small<%d,%s,%s>", NB, S ? "swiglu" : "f32out", F ? "a32" : "a16");
    g_names[(const void *)&k_gg_small<NB, S, F>] = b;
}
template <int NB> static void name_small_nb() {
    name_small<NB, false, false>(), name_small<NB, false, true>(), name_small<NB, true, false>(), name_small<NB, true, true>();
}
template <int NB, bool S, bool F> static void name_stream() {
    char b[64];
    snprintf(b, sizeof b, "stream<%d,%s,%s>", NB, S ? "swiglu" : "f32out", F ? "a32" : "a16");
    g_names[(const void *)&k_gg_stream<NB, S, F>] = b;
}
template <int NB> static void name_stream_nb() {
    name_stream<NB, false, false>(), name_stream<NB, true, false>();
    if constexpr (NB <= 4) name_stream<NB, false, true>(), name_stream<NB, true, true>();
}
static void init_names() {
    name_small_nb<1>(), name_small_nb<2>(), name_small_nb<4>(), name_small_nb<8>();
    name_stream_nb<1>(), name_stream_nb<2>(), name_stream_nb<4>(), name_stream_nb<8>(), name_stream_nb<16>();
    g_names[(const void *)&k_route_fast] = "route_fast";
    g_names[(const void *)&k_route_align] = "route_align";
    g_names[(const void *)&k_combine_fast] = "combine_fast";
    g_names[(const void *)&k_route] = "route(basic)";
    g_names[(const void *)&k_combine] = "combine(basic)";
    g_names[(const void *)&k_align] = "align(basic)";
    g_names[(const void *)&k_gg_large<false>] = "large<f32out>";
    g_names[(const void *)&k_gg_large<true>] = "large<swiglu>";
    g_names[(const void *)&k_to_bf16] = "to_bf16";
    g_names[(const void *)&k_align_fast] = "align_fast";
}
static std::string launches_str() {
    std::string s;
    for (auto &l : emu_launches) {
        char b[160];
        auto it = g_names.find(l.fn);
        snprintf(b, sizeof b, "%s%s(%u,%u)%s", s.empty() ? "" : " + ", it == g_names.end() ? "?" : it->second.c_str(),
                 l.grid.x, l.grid.y, l.err ? " LAUNCH FAILED" : "");
        s += b;
    }
    return s.empty() ? "no launch" : s;
}

// ------------------------------------------------------------ gemm cases ---
struct gcase {
    std::string name;
    int K = 72, O = 45;
    bool f32 = true, swi = false;
    int bias_dt = -1;             // -1 none, else lm_dtype (0 f32, 1 f16, 2 bf16)
    std::vector<int> counts;      // per group; empty: dense
    int rows = 0;                 // dense rows
    int block = 1;                // group padding
    int tokens = 0;               // > 0: a_row gather from this many activation rows
    int force = 0;
    int lda_pad = 0, ldw_pad = 0, ldo_pad = 0;
    std::string expect;           // the kernels the launcher must pick (prefix of launches_str)
    int expect_rc = 0;
    long scratch_cut = 0;         // bytes short of what the large path needs
    int n_rows_override = -1;
    // stream kernel knobs (lm_cuda_gg fields; 0: the launcher's choice)
    int nb = 0, splits = 0, stages = 0, ctas = 0, pdl = 0, occ = 0;
    std::string expect_desc;      // a substring of the plan (lm_cuda_gg_describe)
    bool ws = false;              // give a split-K workspace
    int cc = 9;                   // emulated compute capability (8: no PDL)
    int rerun_ctas = -1;          // >= 0: run again with this grid (0: auto) and splits 1, compare bit for bit

    explicit gcase(std::string n) : name(std::move(n)) {}
    gcase &k(int v) { K = v; return *this; }
    gcase &o(int v) { O = v; return *this; }
    gcase &a16() { f32 = false; return *this; }
    gcase &swiglu() { swi = true; return *this; }
    gcase &bias(int dt) { bias_dt = dt; return *this; }
    gcase &dense(int r) { rows = r; return *this; }
    gcase &groups(std::vector<int> c, int b) { counts = std::move(c), block = b; return *this; }
    gcase &gather(int t) { tokens = t; return *this; }
    gcase &pads(int a, int w, int out) { lda_pad = a, ldw_pad = w, ldo_pad = out; return *this; }
    gcase &forced(int f) { force = f; return *this; }
    gcase &expects(std::string e, int rc = 0) { expect = std::move(e), expect_rc = rc; return *this; }
    gcase &stream(int nb_, int stages_ = 0, int ctas_ = 0) { force = 3, nb = nb_, stages = stages_, ctas = ctas_; return *this; }
    gcase &split(int s) { ws = true, splits = s; return *this; }
    gcase &with_ws() { ws = true; return *this; }
    gcase &pdl_(int v, int cc_ = 9) { pdl = v, cc = cc_; return *this; }
    gcase &rerun(int c) { rerun_ctas = c; return *this; }
    gcase &occ_(int v) { occ = v; return *this; }
    gcase &plan_has(std::string d) { expect_desc = std::move(d); return *this; }
};

static float bias_val(const void *b, int dt, int i) {
    if (dt == 2) return emu_bf2f(((const uint16_t *)b)[i]);
    if (dt == 1) return emu_h2f(((const uint16_t *)b)[i]);
    return ((const float *)b)[i];
}

// returns the failure message ("" if it passed)
static std::string run_gemm(const gcase &c, std::string *info) {
    const bool grouped = !c.counts.empty();
    const int G = grouped ? (int)c.counts.size() : 1, K = c.K, O = c.O;
    std::vector<int> first(G), cnt(G);
    int total = 0, n_rows = 0;
    for (int g = 0; g < G; g++) {
        cnt[g] = grouped ? c.counts[g] : c.rows;
        first[g] = total;
        total += grouped ? (cnt[g] + c.block - 1) / c.block * c.block : cnt[g];
        n_rows += cnt[g];
    }
    const int a_rows = c.tokens > 0 ? c.tokens : total;
    const size_t lda = K + c.lda_pad, ldw = K + c.ldw_pad, ldo = O + c.ldo_pad, esz = c.f32 ? 4 : 2;

    // packed row -> activation row (-1: padding)
    std::vector<int> arow(total, -1);
    for (int g = 0; g < G; g++)
        for (int j = 0; j < cnt[g]; j++) arow[first[g] + j] = c.tokens > 0 ? rnd_int(c.tokens) : first[g] + j;
    int *d_arow = NULL;
    if (c.tokens > 0) {
        d_arow = dalloc_n<int>(total);
        memcpy(d_arow, arow.data(), total * sizeof(int));
    }
    int *d_counts = NULL;
    if (grouped) {
        d_counts = dalloc_n<int>(G);
        memcpy(d_counts, cnt.data(), G * sizeof(int));
    }
    // activations (f32 values not representable in bf16, so the rounding counts)
    void *A = dalloc(a_rows * lda * esz);
    std::vector<bool> used(a_rows, c.tokens > 0);
    for (int r = 0; r < total; r++)
        if (arow[r] >= 0) used[arow[r]] = true;
    for (int r = 0; r < a_rows; r++)
        for (size_t k = 0; k < lda; k++) {
            bool ok = used[r] && (int)k < K;
            double v = rnd();
            if (c.f32) ((float *)A)[r * lda + k] = ok ? (float)v : f32_nan();
            else ((uint16_t *)A)[r * lda + k] = ok ? emu_f2bf((float)v) : BF_NAN;
        }
    auto act = [&](int r, int k) {  // as the kernel sees it: bf16
        return c.f32 ? (double)emu_bf2f(emu_f2bf(((float *)A)[r * lda + k])) : (double)emu_bf2f(((uint16_t *)A)[r * lda + k]);
    };
    // weights
    int NM = c.swi ? 2 : 1;
    std::vector<uint16_t *> W[2];
    for (int m = 0; m < NM; m++)
        for (int g = 0; g < G; g++) {
            uint16_t *w = dalloc_n<uint16_t>((size_t)O * ldw);
            for (int o = 0; o < O; o++)
                for (size_t k = 0; k < ldw; k++) w[o * ldw + k] = (int)k < K ? emu_f2bf((float)rnd()) : BF_NAN;
            W[m].push_back(w);
        }
    const void **d_w1 = NULL, **d_w2 = NULL;
    if (grouped) {
        d_w1 = dalloc_n<const void *>(G), d_w2 = dalloc_n<const void *>(G);
        for (int g = 0; g < G; g++) d_w1[g] = W[0][g], d_w2[g] = c.swi ? W[1][g] : NULL;
    }
    void *bias = NULL;
    if (c.bias_dt >= 0) {
        bias = dalloc(O * (c.bias_dt ? 2 : 4));
        for (int o = 0; o < O; o++) {
            float v = (float)rnd() * 4;
            if (c.bias_dt == 0) ((float *)bias)[o] = v;
            else ((uint16_t *)bias)[o] = c.bias_dt == 2 ? emu_f2bf(v) : emu_f2h(v);
        }
    }
    const size_t out_n = (size_t)total * ldo;
    void *out = dalloc(out_n * (c.swi ? 2 : 4));
    for (size_t i = 0; i < out_n; i++)
        if (c.swi) ((uint16_t *)out)[i] = BF_SENT;
        else ((uint32_t *)out)[i] = F32_SENT;
    size_t sbytes = (size_t)a_rows * K * 2 - c.scratch_cut;
    void *scratch = c.f32 ? dalloc(sbytes) : NULL;
    if (scratch) memset(scratch, 0xab, sbytes);

    lm_cuda_gg p = {};
    p.a = A, p.a_f32 = c.f32, p.lda = lda, p.a_rows = a_rows, p.a_row = d_arow;
    p.counts = d_counts, p.n_groups = grouped ? G : 0, p.block = c.block;
    p.n_rows = c.n_rows_override >= 0 ? c.n_rows_override : n_rows;
    if (grouped) p.w1 = d_w1, p.w2 = c.swi ? d_w2 : NULL;
    else p.w1_0 = W[0][0], p.w2_0 = c.swi ? W[1][0] : NULL;
    p.ldw = ldw, p.K = K, p.O = O, p.swiglu = c.swi, p.bias = bias, p.bias_dt = c.bias_dt < 0 ? 0 : c.bias_dt;
    p.out = out, p.ldo = ldo, p.scratch = scratch, p.scratch_bytes = scratch ? sbytes : 0, p.force = c.force;
    p.nb = c.nb, p.splits = c.splits, p.stages = c.stages, p.ctas = c.ctas, p.pdl = c.pdl, p.occ = c.occ;
    size_t ws_bytes = 0;
    if (c.ws) {  // zeroed once, as the contract says; every call must leave it zero
        ws_bytes = lm_cuda_gg_ws_bytes(p.n_rows, p.n_groups, O, K);
        p.ws = dalloc(ws_bytes), p.ws_bytes = ws_bytes;
        memset(p.ws, 0, ws_bytes);
    }
    emu_dev.cc_major = c.cc;

    emu_launches.clear();
    emu_pdl_launches = 0;
    char desc[256];
    lm_cuda_gg_describe(&p, desc, sizeof desc);
    int rc = lm_cuda_gg_run(&p, 0);
    *info = launches_str() + " {" + desc + "}";
    char msg[512];
    if (rc != c.expect_rc) {
        snprintf(msg, sizeof msg, "launcher returned %d, expected %d", rc, c.expect_rc);
        return msg;
    }
    if (info->compare(0, c.expect.size(), c.expect)) return "expected launches: " + c.expect;
    if (!strstr(desc, c.expect_desc.c_str())) return "expected a plan with: " + c.expect_desc;
    if (rc) return "";

    // reference and comparison
    double maxref = 0, maxerr = 0;
    long bad = 0, sent_bad = 0;
    std::vector<double> ref((size_t)total * O, 0);
    std::vector<char> valid(total, 0);
    for (int g = 0; g < G; g++)
        for (int j = 0; j < cnt[g]; j++) {
            int r = first[g] + j, ar = arow[r];
            valid[r] = 1;
            for (int o = 0; o < O; o++) {
                double s[2] = {0, 0};
                for (int m = 0; m < NM; m++)
                    for (int k = 0; k < K; k++) s[m] += act(ar, k) * emu_bf2f(W[m][g][o * ldw + k]);
                double v = c.swi ? s[0] / (1 + exp(-s[0])) * s[1] : s[0] + (bias ? bias_val(bias, c.bias_dt, o) : 0);
                ref[(size_t)r * O + o] = v;
                maxref = max(maxref, fabs(v));
            }
        }
    for (int r = 0; r < total; r++)
        for (size_t o = 0; o < ldo; o++) {
            size_t i = (size_t)r * ldo + o;
            if (!valid[r] || (int)o >= O) {
                sent_bad += c.swi ? ((uint16_t *)out)[i] != BF_SENT : ((uint32_t *)out)[i] != F32_SENT;
                continue;
            }
            double v = ref[(size_t)r * O + o];
            double got = c.swi ? emu_bf2f(((uint16_t *)out)[i]) : ((float *)out)[i];
            double tol = 1e-5 * maxref + (c.swi ? fabs(v) * (1.0 / 256) * 1.001 : 0);
            double e = fabs(got - v);
            bad += !(e <= tol);
            maxerr = max(maxerr, e != e ? INFINITY : e);
        }
    // the bf16 staging of f32 activations (large path)
    long scratch_bad = 0;
    bool staged = false;
    for (auto &l : emu_launches) staged |= l.fn == (const void *)&k_to_bf16;
    if (staged)
        for (int r = 0; r < a_rows; r++)
            for (int k = 0; k < K; k++)
                scratch_bad += ((uint16_t *)scratch)[(size_t)r * K + k] != emu_f2bf(((float *)A)[r * lda + k]);
    snprintf(msg, sizeof msg, "max err %.2e of max |ref| %.3g (rel %.2e)", maxerr, maxref, maxref ? maxerr / maxref : 0);
    *info += std::string(": ") + msg;
    std::string fail;
    if (bad) snprintf(msg, sizeof msg, "%ld outputs out of tolerance; ", bad), fail += msg;
    if (sent_bad) snprintf(msg, sizeof msg, "%ld outputs written that must not be; ", sent_bad), fail += msg;
    if (scratch_bad) snprintf(msg, sizeof msg, "%ld staged bf16 values wrong; ", scratch_bad), fail += msg;
    // the split-K counters are back to zero (the next call relies on it)
    gg_plan pl;
    gg_make_plan(&p, &pl);
    if (c.ws && pl.path == 3 && pl.k.splits > 1) {
        long nz = 0;
        for (int i = 0; i < pl.k.max_tiles; i++) nz += ((const int *)p.ws)[i] != 0;
        if (nz) snprintf(msg, sizeof msg, "%ld split-K counters left non-zero; ", nz), fail += msg;
    }
    if (c.pdl && c.cc >= 9 && !emu_pdl_launches) fail += "no launch asked for PDL; ";
    if ((!c.pdl || c.cc < 9) && emu_pdl_launches) fail += "a launch asked for PDL; ";
    // The same call again gives the same bits (the counters were reset), and
    // so does another grid: which CTA runs an item, or finishes a tile's
    // splits last, must not change a result.
    if (c.rerun_ctas >= 0 && fail.empty()) {
        const size_t ob = out_n * (c.swi ? 2 : 4);
        std::vector<unsigned char> first_out((unsigned char *)out, (unsigned char *)out + ob);
        if (lm_cuda_gg_run(&p, 0) || memcmp(first_out.data(), out, ob)) fail += "a second identical call differs; ";
        lm_cuda_gg q = p;
        q.ctas = c.rerun_ctas;
        if (lm_cuda_gg_run(&q, 0) || memcmp(first_out.data(), out, ob)) fail += "another grid gives other bits; ";
    }
    return fail;
}

// k_to_bf16 alone with a grid smaller than the row (its column loop strides)
static std::string run_to_bf16(std::string *info) {
    const int rows = 3, cols = 200;
    const size_t ldx = 204;
    float *x = dalloc_n<float>(rows * ldx);
    for (size_t i = 0; i < rows * ldx; i++) x[i] = (float)rnd() * 100;
    __nv_bfloat16 *y = dalloc_n<__nv_bfloat16>(rows * cols);
    emu_launches.clear();
    emu_launch((const void *)&k_to_bf16, [&] { k_to_bf16(x, ldx, rows, cols, y); }, dim3(1, rows), dim3(32));
    *info = launches_str();
    long bad = 0;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) bad += y[r * cols + k].x != emu_f2bf(x[r * ldx + k]);
    return bad ? std::to_string(bad) + " values wrong" : "";
}

// ------------------------------------------------------------ align cases ---
struct acase {
    std::string name;
    int n, k, E, B, lds_pad, ldr_pad;
    bool stats;
    int used_experts;   // routing draws from the first `used_experts` of a shuffled expert list
    int expect_rc = 0;
};

struct align_out {
    std::vector<int> row_of, token_of, tiles, counts;
    int n_tiles;
    std::vector<unsigned long long> stats;
};

// The serial semantics (k_align, basic.cu): counts; per expert in order its
// rows padded to B (token -1), one tile (expert, first row) per B rows; each
// expert's rows in (token, choice) order; stats[e] += count.
static void align_ref(const std::vector<int> &sel, size_t lds, int n, int k, int E, int B, align_out &r, size_t ldr) {
    r.counts.assign(E, 0);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) r.counts[sel[t * lds + i]]++;
    std::vector<int> next(E);
    int row = 0;
    r.tiles.clear();
    for (int e = 0; e < E; e++) {
        next[e] = row;
        int pad = (r.counts[e] + B - 1) / B * B;
        for (int b = 0; b < pad / B; b++) r.tiles.push_back(e), r.tiles.push_back(row + b * B);
        row += pad;
    }
    r.n_tiles = (int)r.tiles.size() / 2;
    r.token_of.assign(row, -1);
    r.row_of.assign((size_t)n * ldr, -7);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) {
            int x = next[sel[t * lds + i]]++;
            r.row_of[t * ldr + i] = x;
            r.token_of[x] = t;
        }
    for (int e = 0; e < E; e++) r.stats[e] += r.counts[e];
}

static std::string run_align(const acase &c, std::string *info) {
    const size_t lds = c.k + c.lds_pad, ldr = c.k + c.ldr_pad;
    std::vector<int> perm(c.E);
    for (int e = 0; e < c.E; e++) perm[e] = e;
    for (int e = c.E - 1; e > 0; e--) std::swap(perm[e], perm[rnd_int(e + 1)]);
    std::vector<int> sel(max((size_t)1, c.n * lds), -99);
    for (int t = 0; t < c.n; t++)
        for (int i = 0; i < c.k; i++) {  // distinct experts per token when possible, as top-k gives
            int e;
            bool dup;
            int tries = 0;
            do {
                e = perm[rnd_int(c.used_experts)], dup = false;
                for (int j = 0; j < i; j++) dup |= sel[t * lds + j] == e;
            } while (dup && ++tries < 100);
            sel[t * lds + i] = e;
        }
    align_out ref;
    ref.stats.resize(c.E);
    for (auto &s : ref.stats) s = rnd_u() % 1000;
    std::vector<unsigned long long> stats0 = ref.stats;
    align_ref(sel, lds, c.n, c.k, c.E, c.B, ref, ldr);
    const int rows = (int)ref.token_of.size();

    // run one implementation on guarded buffers; sentinels around what it may write
    auto run = [&](int (*fn)(const int *, size_t, int, int, int, int, int *, size_t, int *, int *, int *, int *,
                             unsigned long long *, lm_cuda_stream),
                   align_out &o, int *rc) {
        int *d_sel = dalloc_n<int>(sel.size());
        memcpy(d_sel, sel.data(), sel.size() * sizeof(int));
        int *row_of = dalloc_n<int>(max((size_t)1, c.n * ldr)), *token_of = dalloc_n<int>(max(rows, 1));
        int *tiles = dalloc_n<int>(max((size_t)2, ref.tiles.size())), *n_tiles = dalloc_n<int>(1), *counts = dalloc_n<int>(c.E);
        unsigned long long *stats = c.stats ? dalloc_n<unsigned long long>(c.E) : NULL;
        for (size_t i = 0; i < c.n * ldr; i++) row_of[i] = -7;
        for (int i = 0; i < rows; i++) token_of[i] = -5;
        for (size_t i = 0; i < ref.tiles.size(); i++) tiles[i] = -3;
        *n_tiles = -1;
        for (int e = 0; e < c.E; e++) counts[e] = -2;
        if (stats) memcpy(stats, stats0.data(), c.E * sizeof *stats);
        *rc = fn(d_sel, lds, c.n, c.k, c.E, c.B, row_of, ldr, token_of, tiles, n_tiles, counts, stats, 0);
        o.row_of.assign(row_of, row_of + c.n * ldr);
        o.token_of.assign(token_of, token_of + rows);
        o.tiles.assign(tiles, tiles + ref.tiles.size());
        o.n_tiles = *n_tiles;
        o.counts.assign(counts, counts + c.E);
        o.stats = stats ? std::vector<unsigned long long>(stats, stats + c.E) : ref.stats;
    };
    auto diff = [&](const align_out &o, const char *who) -> std::string {
        std::string f;
        if (o.row_of != ref.row_of) f += " row_of";
        if (o.token_of != ref.token_of) f += " token_of";
        if (o.n_tiles != ref.n_tiles) f += " n_tiles";
        if (o.tiles != ref.tiles) f += " tiles";
        if (o.counts != ref.counts) f += " counts";
        if (o.stats != ref.stats) f += " stats";
        return f.empty() ? "" : std::string(who) + " differs in" + f + "; ";
    };
    align_out fast, serial, fast_pdl;
    int rc_fast, rc_serial, rc_pdl;
    emu_launches.clear();
    run(lm_cuda_align_fast, fast, &rc_fast);
    *info = launches_str();
    char msg[200];
    if (rc_fast != c.expect_rc) return snprintf(msg, sizeof msg, "align_fast returned %d, expected %d", rc_fast, c.expect_rc), msg;
    if (rc_fast) return "";
    run(lm_cuda_align, serial, &rc_serial);
    run([](const int *a, size_t b, int c_, int d, int e, int f, int *g, size_t h, int *i, int *j, int *k, int *l,
           unsigned long long *m, lm_cuda_stream st) { return lm_cuda_align_fast_pdl(a, b, c_, d, e, f, g, h, i, j, k, l, m, 1, st); },
        fast_pdl, &rc_pdl);
    snprintf(msg, sizeof msg, ": %d pairs, %d rows, %d tiles", c.n * c.k, rows, ref.n_tiles);
    *info += msg;
    return (rc_serial ? std::string("k_align failed; ") : diff(serial, "k_align (basic.cu)")) + diff(fast, "align_fast") +
           (rc_pdl ? std::string("align_fast_pdl failed; ") : diff(fast_pdl, "align_fast_pdl"));
}

// ------------------------------------------------------------------ main ---
static std::vector<gcase> gemm_cases() {
    std::vector<gcase> v;
    // small kernel: every NB (the launcher's choice from rows per group), swiglu or not, f32 or bf16 activations
    for (int swi = 0; swi < 2; swi++)
        for (int f32 = 1; f32 >= 0; f32--) {
            std::string tag = std::string(swi ? "swiglu" : "f32out") + (f32 ? " a32" : " a16");
            auto mk = [&](const char *n) {
                gcase c(std::string("small ") + n + " " + tag);
                if (swi) c.swiglu();
                if (!f32) c.a16();
                c.forced(1);  // the previous small kernel, kept for the kernel lab
                return c;
            };
            const int ap = f32 ? 4 : 8;
            // NB 1: 6 groups, two empty, one of 12 rows (2 passes of 8), gather
            v.push_back(mk("NB1 groups{3,0,12,0,1,7}/4 gather K72 O45").groups({3, 0, 12, 0, 1, 7}, 4).gather(9)
                            .pads(ap, 8, 3).expects(std::string("small<1,")));
            if (!swi) v.back().bias(0);
            // NB 2: 3 groups (20 rows: 2 passes of 16), packed activations
            v.push_back(mk("NB2 groups{20,0,9}/8 K40 O45").k(40).groups({20, 0, 9}, 8).pads(0, 16, 0).expects("small<2,"));
            if (!swi) v.back().bias(1);
            // NB 4: dense 30 rows
            v.push_back(mk("NB4 dense30 K40 O33").k(40).o(33).dense(30).pads(ap, 0, 1).expects("small<4,"));
            if (!swi) v.back().bias(2);
            // NB 8: a group of 150 rows (3 passes of 64), gather
            v.push_back(mk("NB8 groups{150,0,30}/16 gather K72 O45").groups({150, 0, 30}, 16).gather(160).pads(ap, 8, 2)
                            .expects("small<8,"));
        }
    v.push_back(gcase("small forced: dense 200 rows (4 passes) K40 O20").k(40).o(20).dense(200).forced(1).bias(0)
                    .expects("small<8,f32out,a32>"));
    v.push_back(gcase("small forced: dense 200 swiglu a16 K8 O20").k(8).o(20).dense(200).forced(1).swiglu().a16()
                    .expects("small<8,swiglu,a16>"));
    v.push_back(gcase("small: dense 1 row K8 O3").k(8).o(3).dense(1).pads(4, 8, 1).forced(1).expects("small<1,f32out,a32>"));
    v.push_back(gcase("small: dense 1 row K512 O17 (all warps busy)").k(512).o(17).dense(1).swiglu().forced(1)
                    .expects("small<1,swiglu,a32>"));

    // large kernel
    v.push_back(gcase("large: dense 300 (3 m-blocks) K72 O200 bias").dense(300).o(200).bias(0).pads(4, 8, 5)
                    .expects("to_bf16(1,300) + large<f32out>(3,2)"));
    v.push_back(gcase("large: dense 130 swiglu a16 K40 O150").k(40).o(150).dense(130).swiglu().a16().pads(8, 0, 2)
                    .expects("large<swiglu>(2,3)"));
    v.push_back(gcase("large: groups{130,0,1,257,0}/16 gather swiglu K72 O45").groups({130, 0, 1, 257, 0}, 16)
                    .gather(300).swiglu().pads(4, 8, 3).forced(2).expects("to_bf16(1,300) + large<swiglu>(9,1)"));
    v.push_back(gcase("large: groups{130,0,1,257,0}/8 packed a16 K200 O45 bias").k(200).groups({130, 0, 1, 257, 0}, 8)
                    .a16().bias(2).pads(8, 24, 1).forced(2).expects("large<f32out>(9,1)"));
    v.push_back(gcase("large: groups{64,64,0,129}/64 gather a16 K40 O130").k(40).o(130).groups({64, 64, 0, 129}, 64)
                    .gather(200).a16().bias(1).forced(2).expects("large<f32out>(7,2)"));
    v.push_back(gcase("large: groups{300,5} gather: auto picks large (~150 rows per group)").k(16).o(20)
                    .groups({300, 5}, 16).gather(310).a16().expects("large<f32out>"));
    v.push_back(gcase("large forced: dense 1 row K8 O3").k(8).o(3).dense(1).forced(2).pads(4, 8, 1)
                    .expects("to_bf16(1,1) + large<f32out>(1,1)"));
    v.push_back(gcase("large forced: groups{0,0,5,0}/1 gather swiglu a16 K40 O45").k(40).groups({0, 0, 5, 0}, 1).gather(3)
                    .swiglu().a16().forced(2).expects("large<swiglu>(5,1)"));
    v.push_back(gcase("large: dense 129 swiglu K8 O1").k(8).o(1).dense(129).swiglu().expects("to_bf16(1,129) + large<swiglu>(2,1)"));
    v.push_back(gcase("large forced: dense 70 swiglu a16 K72 O45 odd ldo").dense(70).swiglu().a16().forced(2).pads(8, 8, 2)
                    .expects("large<swiglu>(1,1)"));
    v.push_back(gcase("small forced: dense 70 swiglu a16 K72 O45 odd ldo").dense(70).swiglu().a16().forced(1).pads(8, 8, 2)
                    .expects("small<8,swiglu,a16>(3,1)"));

    // ---- stream kernel: every NB x swiglu/f32out x a32/a16 (NB >= 8 converts f32 first), groups of
    // 0/1/7/17/64/65 rows, O not a multiple of the tile, K tails, a 3-stage ring and tiny grids so that
    // every CTA crosses item boundaries inside the ring
    for (int swi = 0; swi < 2; swi++)
        for (int f32 = 1; f32 >= 0; f32--) {
            std::string tag = std::string(swi ? "swiglu" : "f32out") + (f32 ? " a32" : " a16");
            std::string kn = std::string(swi ? "swiglu," : "f32out,") + (f32 ? "a32>" : "a16>");
            std::string kn16 = std::string(swi ? "swiglu," : "f32out,") + "a16>";
            auto mk = [&](const std::string &n) {
                gcase c("stream " + n + " " + tag);
                if (swi) c.swiglu();
                if (!f32) c.a16();
                return c;
            };
            const int ap = f32 ? 4 : 8;
            v.push_back(mk("NB1 auto groups{0,1,7,0,3}/4 gather K72 O45").groups({0, 1, 7, 0, 3}, 4).gather(6)
                            .pads(ap, 8, 3).expects("stream<1," + kn));
            if (!swi) v.back().bias(0);
            v.push_back(mk("NB1 groups{1,7,0,2}/16 K72 O70, 3 stages, 2 CTAs").groups({1, 7, 0, 2}, 16).o(70)
                            .stream(1, 3, 2).expects("stream<1," + kn + "(2,1)").rerun(0));
            v.push_back(mk("NB2 groups{17,0,9,1}/8 gather K40 O45 (17: two blocks)").k(40).groups({17, 0, 9, 1}, 8)
                            .gather(20).pads(0, 16, 0).stream(2, 4, 3).expects("stream<2," + kn).rerun(1));
            if (!swi) v.back().bias(1);
            v.push_back(mk("NB4 dense30 K72 O33 auto").o(33).dense(30).pads(ap, 0, 1).expects("stream<4," + kn));
            if (!swi) v.back().bias(2);
            v.push_back(mk("NB4 groups{7,17,0,33}/8 gather K8 O130, 3 stages, 3 CTAs").k(8).o(130)
                            .groups({7, 17, 0, 33}, 8).gather(40).stream(4, 3, 3).expects("stream<4," + kn).rerun(0));
            v.push_back(mk("NB8 groups{64,65,0,1}/16 gather K72 O45").groups({64, 65, 0, 1}, 16).gather(70)
                            .pads(ap, 8, 2).stream(8, 3, 2).expects(f32 ? "to_bf16(1,70) + stream<8," + kn16 : "stream<8," + kn).rerun(0));
            v.push_back(mk("NB16 groups{65,0,129,2}/8 gather K40 O45 (129: two blocks)").k(40)
                            .groups({65, 0, 129, 2}, 8).gather(140).stream(16, 3, 2)
                            .expects(f32 ? "to_bf16(1,140) + stream<16," + kn16 : "stream<16," + kn).rerun(0));
            if (!swi) v.back().bias(0);
        }
    v.push_back(gcase("stream NB1 groups{1,2}/16 K2048 O40 swiglu (8 stages per item)").k(2048).o(40)
                    .groups({1, 2}, 16).swiglu().stream(1, 0, 3).expects("stream<1,swiglu,a32>").rerun(0));
    v.push_back(gcase("stream NB2 dense 9 K2048 O33 a16 bias, 4 stages 1 CTA").k(2048).o(33).dense(9).a16().bias(0)
                    .stream(2, 4, 1).expects("stream<2,f32out,a16>(1,1)"));
    v.push_back(gcase("stream NB8 a32 without scratch: NB 4 with f32 staging").groups({40, 3}, 16).stream(8)
                    .expects("stream<4,f32out,a32>"));
    v.back().scratch_cut = 2;
    v.push_back(gcase("stream NB16 auto dense 100 rows K64 O300 a16").k(64).o(300).dense(100).a16()
                    .expects("stream<16,f32out,a16>"));
    v.push_back(gcase("stream dense 128 rows is still stream, 129 is large").k(16).o(10).dense(128).a16()
                    .expects("stream<16,"));
    // split-K: forced and chosen, with a bias, over a tiny grid (one CTA sums others' partials), and
    // a workspace sized for fewer rows than the call has (the kernel must not split then)
    v.push_back(gcase("split 3 NB1 dense 1 K600 O70 bias, 2 CTAs").k(600).o(70).dense(1).bias(1).stream(1, 3, 2).split(3)
                    .expects("stream<1,f32out,a32>").rerun(0));
    v.push_back(gcase("split 4 NB2 groups{9,0,3}/4 gather K512 O45 a16, 3 CTAs").k(512).groups({9, 0, 3}, 4).gather(12)
                    .a16().stream(2, 3, 3).split(4).expects("stream<2,f32out,a16>").rerun(0));
    v.push_back(gcase("split 2 NB8 groups{40,3}/8 K256 O300 a16").k(256).o(300).groups({40, 3}, 8).a16().stream(8, 3, 5)
                    .split(2).expects("stream<8,f32out,a16>").rerun(0));
    v.push_back(gcase("split 3 NB16 dense 100 K200 O20 bias").k(200).o(20).dense(100).a16().bias(2).stream(16, 3, 4)
                    .split(3).expects("stream<16,f32out,a16>").rerun(1));
    v.push_back(gcase("split 3 NB1 groups{20,0,5}/4 gather K600 O40 (3 row blocks in one group), 1 CTA").k(600).o(40)
                    .groups({20, 0, 5}, 4).gather(22).stream(1, 3, 1).split(3).expects("stream<1,f32out,a32>").rerun(3));
    v.push_back(gcase("split auto: dense 1 row K1024 O400 picks a split").k(1024).o(400).dense(1).with_ws()
                    .expects("stream<1,f32out,a32>").rerun(7));
    v.push_back(gcase("split 2 NB4 groups{20,9}/8 gather K512 O130 a16 (WK 2: sums of the wk 1 warps), 3 CTAs").k(512)
                    .o(130).groups({20, 9}, 8).gather(25).a16().stream(4, 3, 3).split(2).expects("stream<4,f32out,a16>")
                    .rerun(0));
    v.push_back(gcase("split 4 NB1 dense 3 K1024 O40 bias a16, 1 CTA (all-warp k sums)").k(1024).o(40).dense(3).a16()
                    .bias(2).stream(1, 3, 1).split(4).expects("stream<1,f32out,a16>(1,1)").rerun(2));
    // CTAs per SM (the emulated H100: 228 KB per SM): two for NB <= 4 by
    // default, each with a ring of the stages that still fit; one forced;
    // NB >= 8 one.
    v.push_back(gcase("occ auto NB1 dense 1 K256 O8448 a16: 2 CTAs/SM, 5 stages each").k(256).o(8448).dense(1).a16()
                    .stream(1).plan_has("stages 5 ctas 264 (2/SM)"));
    v.push_back(gcase("occ 1 NB1 dense 1 K256 O8448 a16: 1 CTA/SM, 11 stages").k(256).o(8448).dense(1).a16()
                    .stream(1).occ_(1).plan_has("stages 11 ctas 132 (1/SM)"));
    v.push_back(gcase("occ auto NB4 swiglu a32 groups{20,30}/16: 2 CTAs/SM").k(64).o(40).groups({20, 30}, 16).swiglu()
                    .stream(4).plan_has("(2/SM)"));
    v.push_back(gcase("occ auto NB8 a16: 1 CTA/SM").k(64).o(40).dense(60).a16().stream(8).plan_has("(1/SM)"));
    { gcase c("split 3 with n_rows under-stated: counters do not fit, no split"); c.k(600).o(45).groups({5, 9}, 4)
        .a16().stream(2, 3, 2).split(3).expects("stream<2,f32out,a16>"); c.n_rows_override = 2; v.push_back(c); }
    v.push_back(gcase("split is not used with swiglu").k(600).o(45).dense(3).swiglu().stream(1, 3, 2).split(3)
                    .expects("stream<1,swiglu,a32>"));
    // programmatic dependent launch: dense (weights prefetched), grouped with count-based prefetch,
    // the small and large paths, and a device without it
    v.push_back(gcase("pdl 1 dense stream NB1 K256 O100 prefetch").k(256).o(100).dense(2).pdl_(1).stream(1, 3, 3)
                    .expects("stream<1,"));
    v.push_back(gcase("pdl 2 grouped stream NB4 K128 O64 prefetch from counts").k(128).o(64).groups({3, 20, 0, 1}, 8)
                    .gather(25).pdl_(2).stream(4, 3, 2).expects("stream<4,"));
    v.push_back(gcase("pdl 1 NB8 a32 convert + stream").groups({40, 3}, 16).pdl_(1).stream(8).expects("to_bf16("));
    v.push_back(gcase("pdl 1 small and sm_80 device: no PDL").dense(3).pdl_(1, 8).forced(1).expects("small<1,"));
    v.push_back(gcase("pdl 1 large").dense(130).a16().pdl_(1).forced(2).expects("large<f32out>"));
    // an n_rows hint below the rows the counts hold: the grid covers them all (persistent loop)
    { gcase c("stream n_rows hint 1 for 40 rows"); c.groups({13, 0, 27}, 4).a16().stream(1).expects("stream<1,");
      c.n_rows_override = 1; v.push_back(c); }

    // launcher contract
    v.push_back(gcase("contract: K % 8 != 0 refused").k(44).dense(3).expects("no launch", 1));
    { gcase c("contract: scratch one row short refused"); c.dense(100).forced(2).expects("no launch", 1); c.scratch_cut = 2; v.push_back(c); }
    { gcase c("contract: n_rows 0 launches nothing"); c.dense(0).expects("no launch", 0); v.push_back(c); }
    v.push_back(gcase("contract: 1025 groups refused").groups(std::vector<int>(1025, 0), 1).expects("no launch", 1));
    v.back().n_rows_override = 1;
    // the engine takes batches of up to 65536 tokens (lm_params.n_batch)
    v.push_back(gcase("large: dense 65536 rows K8 O8 (grid limits)").k(8).o(8).dense(65536).expects("to_bf16("));
    return v;
}

static std::vector<acase> align_cases() {
    return {
        {"align: n5 k2 E8 B16", 5, 2, 8, 16, 0, 0, true, 8},
        {"align: n40 k3 E8 B16 (128 threads)", 40, 3, 8, 16, 0, 1, true, 8},
        {"align: n3 k2 E300 B4 (320 threads: one per expert)", 3, 2, 300, 4, 2, 0, true, 300},
        {"align: n100 k4 E64 B8 (416 threads, 13 warps)", 100, 4, 64, 8, 0, 0, true, 20},
        {"align: n700 k2 E8 B16 (2 chunks) skewed to 2 experts, lds/ldr pads", 700, 2, 8, 16, 3, 1, true, 2},
        {"align: n300 k8 E60 B1 (3 chunks) 20 experts used", 300, 8, 60, 1, 0, 2, true, 20},
        {"align: n1 k1 E1 B4", 1, 1, 1, 4, 0, 0, true, 1},
        {"align: n0 k2 E4 B8", 0, 2, 4, 8, 0, 0, true, 4},
        {"align: n1100 k1 E1024 B16 no stats (139 KB smem)", 1100, 1, 1024, 16, 0, 0, false, 1024},
        {"align: n513 k6 E128 B64 7 experts used", 513, 6, 128, 64, 1, 0, true, 7},
        {"align: n2048 k4 E256 B128 (8 chunks)", 2048, 4, 256, 128, 0, 0, true, 256},
        {"align: E 1025 refused", 4, 2, 1025, 16, 0, 0, true, 1025, 1},
    };
}

// ------------------------------------------------- route / combine cases ---
struct rcase {
    std::string name;
    int n, E, k, norm, B;
    int levels;      // > 0: logits drawn from this many values (ties); 0: continuous
    int ldl_pad, lds_pad;
    int pdl;
};

// lm_cuda_route_fast and lm_cuda_route_align against basic.cu's route (and
// align on its sel), bit for bit.
static std::string run_route(const rcase &c, std::string *info) {
    const size_t ldl = c.E + c.ldl_pad, lds = c.k + c.lds_pad;
    float *logits = dalloc_n<float>(max((size_t)1, c.n * ldl));
    for (size_t i = 0; i < c.n * ldl; i++)
        logits[i] = (int)(i % ldl) >= c.E ? f32_nan()
                    : c.levels ? (float)(rnd_int(c.levels) - c.levels / 2) * 0.25f
                               : (float)rnd() * 4;
    auto buf_i = [&](size_t n, int fill) { int *b = dalloc_n<int>(max((size_t)1, n)); for (size_t i = 0; i < n; i++) b[i] = fill; return b; };
    auto buf_f = [&](size_t n) { float *b = dalloc_n<float>(max((size_t)1, n)); for (size_t i = 0; i < n; i++) b[i] = f32_nan(); return b; };
    const size_t ns = c.n * lds;
    int *sel0 = buf_i(ns, -9), *sel1 = buf_i(ns, -9), *sel2 = buf_i(ns, -9);
    float *w0 = buf_f(ns), *w1 = buf_f(ns), *w2 = buf_f(ns);
    emu_launches.clear();
    emu_pdl_launches = 0;
    std::string fail;
    if (lm_cuda_route(logits, ldl, c.n, c.E, c.k, c.norm, sel0, lds, w0, lds, 0)) return "lm_cuda_route failed";
    if (lm_cuda_route_fast(logits, ldl, c.n, c.E, c.k, c.norm, sel1, lds, w1, lds, c.pdl, 0)) fail += "route_fast failed; ";
    if (memcmp(sel0, sel1, ns * 4)) fail += "route_fast sel differs; ";
    if (memcmp(w0, w1, ns * 4)) fail += "route_fast weights differ; ";
    // plans: basic align on basic sel, and the fused launcher
    const int rows = c.n * c.k + c.E * (c.B - 1), ntl = rows / c.B + c.E;
    struct plan { int *row_of, *token_of, *tiles, *n_tiles, *counts; unsigned long long *stats; };
    auto mkplan = [&]() {
        plan q;
        q.row_of = buf_i(ns, -7), q.token_of = buf_i(rows, -5), q.tiles = buf_i(2 * ntl, -3), q.n_tiles = buf_i(1, -1);
        q.counts = buf_i(c.E, -2), q.stats = dalloc_n<unsigned long long>(c.E);
        for (int e = 0; e < c.E; e++) q.stats[e] = e;
        return q;
    };
    plan a = mkplan(), b = mkplan();
    const size_t before = emu_launches.size();
    if (lm_cuda_align(sel0, lds, c.n, c.k, c.E, c.B, a.row_of, lds, a.token_of, a.tiles, a.n_tiles, a.counts, a.stats, 0))
        return "lm_cuda_align failed";
    if (lm_cuda_route_align(logits, ldl, c.n, c.E, c.k, c.norm, sel2, lds, w2, lds, c.B, b.row_of, lds, b.token_of,
                            b.tiles, b.n_tiles, b.counts, b.stats, c.pdl, 0))
        fail += "route_align failed; ";
    {  // one launch of the fused kernel for a few tokens, else route_fast + align_fast
        const bool fused = c.n <= 8 && c.E <= 256;
        std::string got;
        for (size_t i = before + 1; i < emu_launches.size(); i++) got += g_names[emu_launches[i].fn] + " ";
        if (got != (fused ? "route_align " : "route_fast align_fast ")) fail += "route_align launched " + got + "; ";
    }
    if (memcmp(sel0, sel2, ns * 4)) fail += "route_align sel differs; ";
    if (memcmp(w0, w2, ns * 4)) fail += "route_align weights differ; ";
    if (memcmp(a.row_of, b.row_of, ns * 4) || memcmp(a.token_of, b.token_of, rows * 4) ||
        memcmp(a.tiles, b.tiles, 2 * ntl * 4) || *a.n_tiles != *b.n_tiles || memcmp(a.counts, b.counts, c.E * 4) ||
        memcmp(a.stats, b.stats, c.E * 8))
        fail += "route_align's plan differs; ";
    if (c.pdl && !emu_pdl_launches) fail += "no launch asked for PDL; ";
    *info = launches_str();
    return fail;
}

struct ccase {
    std::string name;
    int n, k, H, rows;
    int ldr_pad, ldw_pad, ldy_pad, ldo_pad;
    int pdl;
};

// lm_cuda_combine_fast against basic.cu's combine, bit for bit; the padding
// of out must survive.
static std::string run_combine(const ccase &c, std::string *info) {
    const size_t ldr = c.k + c.ldr_pad, ldw = c.k + c.ldw_pad, ldy = c.H + c.ldy_pad, ldo = c.H + c.ldo_pad;
    int *row_of = dalloc_n<int>(c.n * ldr);
    float *w = dalloc_n<float>(c.n * ldw), *y = dalloc_n<float>(c.rows * ldy);
    for (size_t i = 0; i < c.n * ldr; i++) row_of[i] = rnd_int(c.rows);
    for (size_t i = 0; i < c.n * ldw; i++) w[i] = (float)rnd();
    for (size_t i = 0; i < c.rows * ldy; i++) y[i] = (int)(i % ldy) < c.H ? (float)rnd() * 3 : f32_nan();
    float *o0 = dalloc_n<float>(c.n * ldo), *o1 = dalloc_n<float>(c.n * ldo);
    for (size_t i = 0; i < c.n * ldo; i++) ((uint32_t *)o0)[i] = ((uint32_t *)o1)[i] = F32_SENT;
    emu_launches.clear();
    emu_pdl_launches = 0;
    if (lm_cuda_combine(row_of, ldr, w, ldw, c.n, c.k, y, ldy, o0, ldo, c.H, 0)) return "lm_cuda_combine failed";
    emu_launches.clear();
    int rc = lm_cuda_combine_fast(row_of, ldr, w, ldw, c.n, c.k, y, ldy, o1, ldo, c.H, c.pdl, 0);
    *info = launches_str();
    std::string fail;
    if (rc) fail += "combine_fast failed; ";
    if (memcmp(o0, o1, c.n * ldo * 4)) fail += "outputs differ from lm_cuda_combine (or padding written); ";
    if (c.pdl && !emu_pdl_launches) fail += "no launch asked for PDL; ";
    return fail;
}

static std::vector<rcase> route_cases() {
    return {
        {"route: n1 E8 k2 norm", 1, 8, 2, 1, 16, 0, 0, 0, 0},
        {"route: n5 E128 k8 norm, ties (9 levels), pads, pdl", 5, 128, 8, 1, 16, 9, 3, 2, 1},
        {"route: n64 E256 k8 no norm (two launches)", 64, 256, 8, 0, 16, 0, 0, 0, 0},
        {"route: n8 E256 k32 ties (fused limit: 256 pairs in 8 warps)", 8, 256, 32, 1, 16, 3, 1, 1, 1},
        {"route: n8 E128 k8 norm B16 (Qwen3, fused)", 8, 128, 8, 1, 16, 0, 0, 0, 0},
        {"route: n9 E128 k8 norm (two launches)", 9, 128, 8, 1, 16, 0, 0, 0, 1},
        {"route: n1 E128 k8 norm B128, ties (padding rows)", 1, 128, 8, 1, 128, 2, 0, 0, 0},
        {"route: n2 E33 k3 no norm (E not a multiple of 32)", 2, 33, 3, 0, 4, 0, 2, 1, 0},
        {"route: n0 E16 k2 (fused, no tokens)", 0, 16, 2, 1, 16, 0, 0, 0, 0},
        {"route: n65 E128 k8 norm (two launches)", 65, 128, 8, 1, 16, 5, 0, 1, 1},
        {"route: n3 E300 k32 ties (two launches: E > 256)", 3, 300, 32, 1, 4, 3, 1, 0, 0},
        {"route: n40 E60 k6 B1 ties", 40, 60, 6, 1, 1, 2, 0, 0, 0},
        {"route: n2 E1024 k1 (E limit)", 2, 1024, 1, 1, 64, 0, 0, 0, 0},
        {"route: n300 E8 k2 norm (chunks of the align)", 300, 8, 2, 1, 16, 0, 2, 0, 1},
    };
}

static std::vector<ccase> combine_cases() {
    return {
        {"combine: n1 k2 H4096 vec", 1, 2, 4096, 40, 0, 0, 0, 0, 0},
        {"combine: n7 k8 H2048 vec pads, pdl", 7, 8, 2048, 200, 3, 1, 4, 8, 1},
        {"combine: n3 k2 H70 (not vec: H % 4), pads", 3, 2, 70, 10, 0, 2, 1, 3, 0},
        {"combine: n5 k3 H64 odd ldy (not vec)", 5, 3, 64, 9, 0, 0, 1, 0, 0},
        {"combine: n70000 k1 H4 (grid y limit)", 70000, 1, 4, 5, 0, 0, 0, 0, 0},
    };
}

static bool g_quiet;

// run fn in a child process; prints the case line
static bool run_case(const std::string &name, const std::function<std::string(std::string *)> &fn) {
    fflush(stdout);
    int pfd[2];
    if (pipe(pfd)) return false;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        std::string info, fail = fn(&info);
        if (emu_stat.blocks) {
            char b[160];
            snprintf(b, sizeof b, " [%lld blocks, %lld mma, %lld ldmatrix, %lld cp.async]", emu_stat.blocks, emu_stat.mma,
                     emu_stat.ldmatrix, emu_stat.cp_async);
            info += b;
        }
        std::string line = info + "\n" + fail;
        if (write(pfd[1], line.data(), line.size()) < 0) {}
        _exit(fail.empty() ? 0 : 1);
    }
    close(pfd[1]);
    std::string got;
    char buf[4096];
    ssize_t k;
    while ((k = read(pfd[0], buf, sizeof buf)) > 0) got.append(buf, k);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    size_t nl = got.find('\n');
    std::string info = nl == std::string::npos ? got : got.substr(0, nl), fail = nl == std::string::npos ? "" : got.substr(nl + 1);
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (ok && g_quiet) return true;
    printf("%-4s %s\n     %s\n", ok ? "ok" : "FAIL", name.c_str(), info.c_str());
    if (!ok) printf("     %s\n", got.empty() ? "died (see the message above)" : fail.c_str());
    return ok;
}

int main(int argc, char **argv) {
    const char *filter = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q")) g_quiet = true;
        else if (argv[i][0] == '-') return fprintf(stderr, "usage: check_gemm [-q] [substring]\n"), 2;
        else filter = argv[i];
    }
    init_names();
    int n = 0, failed = 0;
    for (auto &c : gemm_cases())
        if (strstr(c.name.c_str(), filter)) n++, failed += !run_case(c.name, [&](std::string *i) { return run_gemm(c, i); });
    if (strstr("to_bf16: 3 rows x 200 cols, 32 threads per row", filter))
        n++, failed += !run_case("to_bf16: 3 rows x 200 cols, 32 threads per row", run_to_bf16);
    for (auto &c : align_cases())
        if (strstr(c.name.c_str(), filter)) n++, failed += !run_case(c.name, [&](std::string *i) { return run_align(c, i); });
    for (auto &c : route_cases())
        if (strstr(c.name.c_str(), filter)) n++, failed += !run_case(c.name, [&](std::string *i) { return run_route(c, i); });
    for (auto &c : combine_cases())
        if (strstr(c.name.c_str(), filter)) n++, failed += !run_case(c.name, [&](std::string *i) { return run_combine(c, i); });
    printf("gemm (EMU_SCHED=%s): %d of %d cases failed\n", emu_sched_name(), failed, n);
    return failed != 0;
}
