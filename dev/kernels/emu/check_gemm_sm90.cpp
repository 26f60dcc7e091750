// Emulator check of src/kernels/cuda/gemm_sm90.cu through its launchers
// (lm_cuda_gg_sm90_run / _supported): the persistent TMA + wgmma kernels
// k_s9_gemm<BN, STAGES, SWI, FENCE> (variants 1-3) and k_s9_gemm2<SWI>
// (variants 4-10: half tiles, balanced bands, TMA activations, TMA-store
// epilogue, 2-CTA clusters with multicast weights), their prep kernels
// (group tables, per-expert tensor maps written on the device, the
// activations' map bounded on the device) and the f32 -> bf16 staging,
// against a double-precision reference over the same bf16 operands.
//
// As in check_gemm: every "device" buffer ends against an inaccessible page,
// row padding (lda, ldw > K) holds NaN, outputs start as a sentinel that must
// survive wherever nothing may be written (ldo padding, group padding rows,
// rows past a group's count), each case runs in a child process. The
// emulated device has few SMs (default 3) so that every CTA walks several
// tiles and the mbarrier phases wrap across tiles and stages.
//
//   check_gemm_sm90 [-q] [substring]
#include "gen/gemm_sm90.cpp"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>

static uint64_t g_rs = 0x2545f4914f6cdd1dull;
static uint64_t rnd_u() {
    g_rs ^= g_rs << 13, g_rs ^= g_rs >> 7, g_rs ^= g_rs << 17;
    return g_rs;
}
static double rnd() { return (double)(rnd_u() >> 11) / (double)(1ull << 53) * 2 - 1; }  // [-1, 1)
static int rnd_int(int n) { return (int)(rnd_u() % (uint64_t)n); }

// "Device" memory whose end (rounded up to 16 bytes) meets a PROT_NONE page.
static void *dalloc(size_t bytes) {
    long pg = sysconf(_SC_PAGESIZE);
    size_t r = (bytes + 15) & ~(size_t)15, len = (r + pg - 1) / pg * pg;
    char *m = (char *)mmap(NULL, len + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EMU_CHECK(m != MAP_FAILED, "mmap");
    mprotect(m + len, pg, PROT_NONE);
    return m + len - r;
}
template <class T> static T *dalloc_n(size_t n) { return (T *)dalloc(n * sizeof(T)); }

static const uint16_t BF_NAN = 0x7fc1;
static const uint32_t F32_SENT = 0x7f8badadu;
static const uint16_t BF_SENT = 0xffad;
static float f32_nan() { return __uint_as_float(0x7fc00001u); }

static std::string launches_str() {
    std::map<const void *, std::string> names = {
        {(const void *)&k_s9_gemm<256, 4, false, true>, "gemm<256,4,f32out>"},
        {(const void *)&k_s9_gemm<256, 4, true, true>, "gemm<256,4,swiglu>"},
        {(const void *)&k_s9_gemm<128, 6, false, true>, "gemm<128,6,f32out>"},
        {(const void *)&k_s9_gemm<128, 6, true, true>, "gemm<128,6,swiglu>"},
        {(const void *)&k_s9_gemm<256, 4, false, false>, "gemm<256,4,f32out,nofence>"},
        {(const void *)&k_s9_gemm<256, 4, true, false>, "gemm<256,4,swiglu,nofence>"},
        {(const void *)&k_s9_gemm2<false>, "gemm2<f32out>"},
        {(const void *)&k_s9_gemm2<true>, "gemm2<swiglu>"},
        {(const void *)&k_s9_prep, "prep"},
        {(const void *)&k_s9_prep2, "prep2"},
        {(const void *)&k_s9_to_bf16, "to_bf16"},
    };
    std::string s;
    for (auto &l : emu_launches) {
        char b[160];
        auto it = names.find(l.fn);
        char cl[32] = "";
        if (l.cluster > 1) snprintf(cl, sizeof cl, " cl%u", l.cluster);
        snprintf(b, sizeof b, "%s%s(%u%s)%s", s.empty() ? "" : " + ", it == names.end() ? "?" : it->second.c_str(),
                 l.grid.x, cl, l.err ? " LAUNCH FAILED" : "");
        s += b;
    }
    return s.empty() ? "no launch" : s;
}

struct gcase {
    std::string name;
    int K = 72, O = 45;
    bool f32 = false, swi = false;
    int bias_dt = -1;          // -1 none, else lm_dtype (0 f32, 1 f16, 2 bf16)
    std::vector<int> counts;   // per group; empty: dense
    int rows = 0;              // dense rows
    int block = 1;
    int tokens = 0;            // > 0: a_row gather from this many activation rows
    int lda_pad = 0, ldw_pad = 0, ldo_pad = 0;
    int variant = 0;           // lm_cuda_gg_sm90_set_variant
    int sms = 3;               // emulated SMs (the persistent grid)
    int cluster_sms = 0;       // SMs clusters may use (0: all)
    int cc_major = 9;
    bool diag = false;         // a diagnostic variant: runs to the end, output not compared
    long wgmma = -1;           // >= 0: the wgmma instructions the launch must issue (x 128 threads)
    std::string expect;        // prefix of the launch list
    int expect_rc = 0;
    long scratch_cut = 0;
    int n_rows_override = -1;
    int expect_sup = 1;        // what lm_cuda_gg_sm90_supported must say

    explicit gcase(std::string n) : name(std::move(n)) {}
    gcase &k(int v) { K = v; return *this; }
    gcase &o(int v) { O = v; return *this; }
    gcase &a32() { f32 = true; return *this; }
    gcase &swiglu() { swi = true; return *this; }
    gcase &bias(int dt) { bias_dt = dt; return *this; }
    gcase &dense(int r) { rows = r; return *this; }
    gcase &groups(std::vector<int> c, int b) { counts = std::move(c), block = b; return *this; }
    gcase &gather(int t) { tokens = t; return *this; }
    gcase &pads(int a, int w, int out) { lda_pad = a, ldw_pad = w, ldo_pad = out; return *this; }
    gcase &var(int v) { variant = v; return *this; }
    gcase &smcount(int n, int cl = 0) { sms = n, cluster_sms = cl; return *this; }
    gcase &diagnostic() { diag = true; return *this; }
    gcase &wgmmas(long n) { wgmma = n; return *this; }
    gcase &expects(std::string e, int rc = 0) { expect = std::move(e), expect_rc = rc; return *this; }
};

static float bias_val(const void *b, int dt, int i) {
    if (dt == 2) return emu_bf2f(((const uint16_t *)b)[i]);
    if (dt == 1) return emu_h2f(((const uint16_t *)b)[i]);
    return ((const float *)b)[i];
}

static std::string run_gemm(const gcase &c, std::string *info) {
    emu_dev.sms = c.sms, emu_dev.cc_major = c.cc_major, emu_dev.cluster_sms = c.cluster_sms;
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
    const int a_rows = c.tokens > 0 ? c.tokens : max(total, 1);
    const size_t lda = K + c.lda_pad, ldw = K + c.ldw_pad, ldo = O + c.ldo_pad, esz = c.f32 ? 4 : 2;

    std::vector<int> arow(total, -1);
    for (int g = 0; g < G; g++)
        for (int j = 0; j < cnt[g]; j++) arow[first[g] + j] = c.tokens > 0 ? rnd_int(c.tokens) : first[g] + j;
    int *d_arow = NULL;
    if (c.tokens > 0) {
        d_arow = dalloc_n<int>(max(total, 1));
        memcpy(d_arow, arow.data(), total * sizeof(int));
    }
    int *d_counts = NULL;
    if (grouped) {
        d_counts = dalloc_n<int>(G);
        memcpy(d_counts, cnt.data(), G * sizeof(int));
    }
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
    auto act = [&](int r, int k) {
        return c.f32 ? (double)emu_bf2f(emu_f2bf(((float *)A)[r * lda + k])) : (double)emu_bf2f(((uint16_t *)A)[r * lda + k]);
    };
    const int NM = c.swi ? 2 : 1;
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
    const size_t out_n = (size_t)max(total, 1) * ldo;
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
    p.out = out, p.ldo = ldo, p.scratch = scratch, p.scratch_bytes = scratch ? sbytes : 0;

    char msg[512];
    if (lm_cuda_gg_sm90_set_variant(c.variant)) return "set_variant refused";
    emu_launches.clear();
    const long long wgmma0 = emu_stat.wgmma;
    int sup = lm_cuda_gg_sm90_supported(&p);
    int rc = lm_cuda_gg_sm90_run(&p, 0);
    *info = launches_str();
    if (rc != c.expect_rc) {
        snprintf(msg, sizeof msg, "launcher returned %d, expected %d (supported() said %d)", rc, c.expect_rc, sup);
        return msg;
    }
    if (sup != c.expect_sup) {
        snprintf(msg, sizeof msg, "supported() said %d, expected %d", sup, c.expect_sup);
        return msg;
    }
    if (info->compare(0, c.expect.size(), c.expect)) return "expected launches: " + c.expect;
    if (c.wgmma >= 0 && emu_stat.wgmma - wgmma0 != c.wgmma * 128) {
        snprintf(msg, sizeof msg, "%lld wgmma issued, expected %ld", (emu_stat.wgmma - wgmma0) / 128, c.wgmma);
        return msg;
    }
    if (rc || c.diag) return "";

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
    int first_bad_r = -1, first_bad_o = -1;
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
            if (!(e <= tol) && first_bad_r < 0) first_bad_r = r, first_bad_o = (int)o;
            bad += !(e <= tol);
            maxerr = max(maxerr, e != e ? INFINITY : e);
        }
    long scratch_bad = 0;
    bool staged = false;
    for (auto &l : emu_launches) staged |= l.fn == (const void *)&k_s9_to_bf16;
    if (staged)
        for (int r = 0; r < a_rows; r++)
            for (int k = 0; k < K; k++)
                scratch_bad += ((uint16_t *)scratch)[(size_t)r * K + k] != emu_f2bf(((float *)A)[r * lda + k]);
    snprintf(msg, sizeof msg, "max err %.2e of max |ref| %.3g (rel %.2e)", maxerr, maxref, maxref ? maxerr / maxref : 0);
    *info += std::string(": ") + msg;
    std::string fail;
    if (bad)
        snprintf(msg, sizeof msg, "%ld outputs out of tolerance (first at packed row %d, column %d); ", bad, first_bad_r,
                 first_bad_o),
            fail += msg;
    if (sent_bad) snprintf(msg, sizeof msg, "%ld outputs written that must not be; ", sent_bad), fail += msg;
    if (scratch_bad) snprintf(msg, sizeof msg, "%ld staged bf16 values wrong; ", scratch_bad), fail += msg;
    return fail;
}

static std::vector<gcase> cases() {
    std::vector<gcase> v;
    const std::vector<int> awk = {0, 1, 17, 130, 1000};  // empty, single, partial, just over a tile, many tiles
    // both variants, swiglu and f32 out, gathered rows
    v.push_back(gcase("v1 swiglu groups{0,1,17,130,1000}/16 gather K72 O200").groups(awk, 16).gather(700).swiglu().o(200)
                    .var(1).pads(8, 8, 3).expects("prep(1) + gemm<256,4,swiglu>(3)"));
    v.push_back(gcase("v2 swiglu groups{0,1,17,130,1000}/16 gather K72 O200").groups(awk, 16).gather(700).swiglu().o(200)
                    .var(2).pads(8, 8, 3).expects("prep(1) + gemm<128,6,swiglu>(3)"));
    v.push_back(gcase("v1 f32out+bias f32 groups{0,1,17,130,1000}/8 packed K72 O300").groups(awk, 8).o(300).bias(0)
                    .var(1).pads(0, 8, 5).expects("prep(1) + gemm<256,4,f32out>(3)"));
    v.push_back(gcase("v2 f32out+bias bf16 groups{0,1,17,130,1000}/8 gather a32 K8 O45").groups(awk, 8).gather(40).k(8)
                    .a32().bias(2).var(2).pads(4, 0, 1).expects("to_bf16(1) + prep(1) + gemm<128,6,f32out>(3)"));
    v.push_back(gcase("v3 (no proxy fence) swiglu groups{0,1,17,130,1000}/16 gather K136 O130").groups(awk, 16)
                    .gather(300).swiglu().k(136).o(130).var(3).expects("prep(1) + gemm<256,4,swiglu,nofence>(3)"));
    // K: one full slice (64), tails (72 = 64 + 8, 136), a single chunk (8); long K through every stage many times
    v.push_back(gcase("v1 dense 300 f32out+bias f16 K2048 O45 (32 k-slices, 8 stage wraps)").dense(300).k(2048).bias(1)
                    .var(1).expects("gemm<256,4,f32out>(3)"));
    v.push_back(gcase("v2 dense 130 swiglu a32 K2048 O130").dense(130).k(2048).o(130).a32().swiglu().var(2).pads(4, 0, 0)
                    .expects("to_bf16(4) + gemm<128,6,swiglu>(3)"));
    v.push_back(gcase("v1 groups{129,0,64,3}/16 packed f32out K136 O257 odd ldo").groups({129, 0, 64, 3}, 16).k(136).o(257)
                    .var(1).pads(8, 16, 3).expects("prep(1) + gemm<256,4,f32out>(3)"));
    v.push_back(gcase("v1 groups{129,0,64,3}/16 gather swiglu K136 O257 odd ldo").groups({129, 0, 64, 3}, 16).gather(50)
                    .swiglu().k(136).o(257).var(1).pads(8, 16, 3).expects("prep(1) + gemm<256,4,swiglu>(3)"));
    v.push_back(gcase("v1 dense 1 row K8 O3").dense(1).k(8).o(3).pads(8, 8, 1).var(1).expects("gemm<256,4,f32out>(1)"));
    v.push_back(gcase("auto dense 1 row swiglu K64 O1").dense(1).k(64).o(1).swiglu().expects("gemm<128,6,swiglu>(1)"));
    // many groups of all sizes (the tile walk across group boundaries), auto variant
    {
        std::vector<int> cs;
        for (int g = 0; g < 40; g++) cs.push_back(g % 7 == 3 ? 0 : rnd_int(150));
        v.push_back(gcase("auto 40 groups of 0..149/4 gather swiglu K40 O64").groups(cs, 4).gather(300).swiglu().k(40).o(64)
                        .expects("prep(1) + gemm<128,6,swiglu>(3)"));
        v.push_back(gcase("auto 40 groups of 0..149/1 packed f32out K40 O520").groups(cs, 1).k(40).o(520)
                        .expects("prep2(1) + gemm2<f32out>(2 cl2)"));
        for (int var : {4, 5, 6, 7}) {
            char n[160];
            snprintf(n, sizeof n, "v%d 40 groups of 0..149/4 gather swiglu K40 O200 (tails in every band)", var);
            v.push_back(gcase(n).groups(cs, 4).gather(300).swiglu().k(40).o(200).var(var).pads(0, 8, 0)
                            .expects(var >= 6 ? "prep2(1) + gemm2<swiglu>(2 cl2)" : "prep2(1) + gemm2<swiglu>(3)"));
            snprintf(n, sizeof n, "v%d 40 groups of 0..149/1 packed f32out+bias f32 K136 O300 (TMA activations)", var);
            v.push_back(gcase(n).groups(cs, 1).k(136).o(300).bias(0).var(var).pads(0, 0, 4)
                            .expects(var >= 6 ? "prep2(1) + gemm2<f32out>(2 cl2)" : "prep2(1) + gemm2<f32out>(3)"));
        }
    }
    // variants 4-7 (s9_body2): half tiles (17, 130: 2 rows; 1000: 104 rows, the
    // second half partial), the TMA-store epilogue next to direct stores, pairs
    // with the odd m-block paired across n-blocks, an idle CTA when nb is odd
    for (int var : {4, 5, 6, 7}) {
        const bool cl = var >= 6;
        char n[160];
        auto g = [&](const char *k) { return std::string(k) + (cl ? "(2 cl2)" : "(3)"); };
        snprintf(n, sizeof n, "v%d swiglu groups{0,1,17,130,1000}/16 gather K72 O200", var);
        v.push_back(gcase(n).groups(awk, 16).gather(700).swiglu().o(200).var(var).pads(8, 8, 8)
                        .expects("prep2(1) + " + g("gemm2<swiglu>")));
        snprintf(n, sizeof n, "v%d swiglu groups{0,1,17,130,1000}/16 gather K136 O130 odd ldo (direct stores)", var);
        v.push_back(gcase(n).groups(awk, 16).gather(300).swiglu().k(136).o(130).var(var).pads(0, 0, 3)
                        .expects("prep2(1) + " + g("gemm2<swiglu>")));
        snprintf(n, sizeof n, "v%d f32out+bias f32 groups{0,1,17,130,1000}/8 packed K72 O300", var);
        v.push_back(gcase(n).groups(awk, 8).o(300).bias(0).var(var).pads(0, 8, 4)
                        .expects("prep2(1) + " + g("gemm2<f32out>")));
        snprintf(n, sizeof n, "v%d f32out+bias bf16 groups{0,1,17,130,1000}/8 gather a32 K8 O45", var);
        v.push_back(gcase(n).groups(awk, 8).gather(40).k(8).a32().bias(2).var(var).pads(4, 0, 3)
                        .expects("to_bf16(1) + prep2(1) + " + g("gemm2<f32out>")));
        snprintf(n, sizeof n, "v%d dense 300 f32out+bias f16 K2048 O45 (odd nb: an idle CTA)", var);
        v.push_back(gcase(n).dense(300).k(2048).bias(1).var(var).pads(0, 0, 3).expects(g("gemm2<f32out>")));
        snprintf(n, sizeof n, "v%d dense 130 swiglu a32 K2048 O130", var);
        v.push_back(gcase(n).dense(130).k(2048).o(130).a32().swiglu().var(var).pads(4, 0, 6)
                        .expects("to_bf16(4) + " + g("gemm2<swiglu>")));
        snprintf(n, sizeof n, "v%d groups{129,0,64,3}/16 packed f32out K136 O257 odd ldo", var);
        v.push_back(gcase(n).groups({129, 0, 64, 3}, 16).k(136).o(257).var(var).pads(8, 16, 3)
                        .expects("prep2(1) + " + g("gemm2<f32out>")));
        snprintf(n, sizeof n, "v%d dense 2100 f32out K8 O300 (17 m-blocks: bands 9 + 8, or 8 pairs + 1)", var);
        v.push_back(gcase(n).dense(2100).k(8).o(300).var(var).smcount(7).pads(0, 0, 4)
                        .expects(cl ? "gemm2<f32out>(6 cl2)" : "gemm2<f32out>(7)"));
        snprintf(n, sizeof n, "v%d groups{2181,40}/1 gather swiglu K8 O130 (18 m-blocks: bands)", var);
        v.push_back(gcase(n).groups({2181, 40}, 1).gather(64).swiglu().k(8).o(130).var(var).smcount(5)
                        .expects(cl ? "prep2(1) + gemm2<swiglu>(4 cl2)" : "prep2(1) + gemm2<swiglu>(5)"));
    }
    // tail tiles of <= 64 rows take one warpgroup: K 64 is one stage of 4
    // wgmma per warpgroup; 64 rows: 4, 65: 8 (both halves); pairs: the odd
    // m-block's second CTA idle (one n-block)
    v.push_back(gcase("v4 dense 64 rows K64 O256 (a half tile: 4 wgmma)").dense(64).k(64).o(256).var(4).wgmmas(4)
                    .expects("gemm2<f32out>(1)"));
    v.push_back(gcase("v4 dense 65 rows K64 O256 (a full tile: 8 wgmma)").dense(65).k(64).o(256).var(4).wgmmas(8)
                    .expects("gemm2<f32out>(1)"));
    v.push_back(gcase("v6 dense 64 rows K64 O256 (a half tile, an idle CTA: 4 wgmma)").dense(64).k(64).o(256).var(6)
                    .wgmmas(4).expects("gemm2<f32out>(2 cl2)"));
    v.push_back(gcase("v6 dense 180 rows K64 O256 (a pair, one half: 12 wgmma)").dense(180).k(64).o(256).var(6)
                    .wgmmas(12).expects("gemm2<f32out>(2 cl2)"));
    // pairs: all 132 SMs (CTAs without a unit), SMs that clusters cannot use,
    // none at all (the launcher runs without clusters), 65536 rows
    v.push_back(gcase("v6 132 SMs groups{0,1,17,130,1000}/16 f32out K72 O45").groups(awk, 16).var(6).smcount(132)
                    .pads(0, 0, 3).expects("prep2(1) + gemm2<f32out>(28 cl2)"));
    v.push_back(gcase("v6 5 SMs of which 4 for clusters, groups{0,1,17,130,1000}/16 swiglu gather K72 O200")
                    .groups(awk, 16).gather(100).swiglu().o(200).var(6).smcount(5, 4)
                    .expects("prep2(1) + gemm2<swiglu>(4 cl2)"));
    v.push_back(gcase("v6 1 SM: no cluster fits, runs without").groups(awk, 16).gather(100).swiglu().o(200).var(6)
                    .smcount(1).expects("prep2(1) + gemm2<swiglu>(1)"));
    v.push_back(gcase("v6 dense 65536 rows K8 O8 (66 clusters)").dense(65536).k(8).o(8).var(6).smcount(132)
                    .pads(0, 0, 4).expects("gemm2<f32out>(132 cl2)"));
    // the diagnostics run to the end (their output is not the product)
    v.push_back(gcase("v8 (no MMA) swiglu groups{0,1,17,130,1000}/16 gather").groups(awk, 16).gather(300).swiglu()
                    .o(200).var(8).diagnostic().expects("prep2(1) + gemm2<swiglu>(2 cl2)"));
    v.push_back(gcase("v9 (no loads) f32out groups{0,1,17,130,1000}/8 packed").groups(awk, 8).o(300).var(9)
                    .pads(0, 0, 4).diagnostic().expects("prep2(1) + gemm2<f32out>(2 cl2)"));
    v.push_back(gcase("v10 (no epilogue) swiglu groups{0,1,17,130,1000}/16 gather").groups(awk, 16).gather(300)
                    .swiglu().o(200).var(10).diagnostic().expects("prep2(1) + gemm2<swiglu>(2 cl2)"));
    // raster bands: 18 m-blocks (a full band of 16 and a partial one) x 2 n-blocks
    v.push_back(gcase("v1 dense 2200 f32out K8 O300 (bands 16 + 2)").dense(2200).k(8).o(300).var(1).smcount(7)
                    .expects("gemm<256,4,f32out>(7)"));
    v.push_back(gcase("v2 groups{2181,40}/1 gather swiglu K8 O130 (bands)").groups({2181, 40}, 1).gather(64).swiglu().k(8)
                    .o(130).var(2).smcount(5).expects("prep(1) + gemm<128,6,swiglu>(5)"));
    // all 132 SMs: one tile per CTA, CTAs with no tile
    v.push_back(gcase("v1 132 SMs groups{0,1,17,130,1000}/16 f32out K72 O45").groups(awk, 16).var(1).smcount(132)
                    .expects("prep(1) + gemm<256,4,f32out>(14)"));
    // the engine's largest batch: 65536 rows
    v.push_back(gcase("v2 dense 65536 rows K8 O8 (grid of 132)").dense(65536).k(8).o(8).var(2).smcount(132)
                    .expects("gemm<128,6,f32out>(132)"));
    // launcher contract
    v.push_back(gcase("contract: not compute capability 9.0 -> cudaErrorNotSupported").dense(3).k(8).o(3).expects(
        "no launch", (int)cudaErrorNotSupported));
    v.back().cc_major = 8, v.back().expect_sup = 0;
    v.push_back(gcase("contract: K % 8 != 0 refused").dense(3).k(44).expects("no launch", (int)cudaErrorInvalidValue));
    v.back().expect_sup = 0;
    {
        gcase c("contract: scratch one row short refused");
        c.dense(100).a32().expects("no launch", (int)cudaErrorInvalidValue);
        c.scratch_cut = 2;
        v.push_back(c);
    }
    v.push_back(gcase("contract: 1025 groups refused").groups(std::vector<int>(1025, 0), 1).expects(
        "no launch", (int)cudaErrorInvalidValue));
    v.back().n_rows_override = 1, v.back().expect_sup = 0;
    v.push_back(gcase("contract: n_rows 0 launches nothing").dense(0).expects("no launch", 0));
    return v;
}

static bool g_quiet;

static bool run_case(const std::string &name, const std::function<std::string(std::string *)> &fn) {
    fflush(stdout);
    int pfd[2];
    if (pipe(pfd)) return false;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        std::string info, fail = fn(&info);
        if (emu_stat.blocks) {
            char b[200];
            snprintf(b, sizeof b, " [%lld blocks, %lld wgmma, %lld tma, %lld cp.async, %lld switches]", emu_stat.blocks,
                     emu_stat.wgmma, emu_stat.tma, emu_stat.cp_async, emu_stat.switches);
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
        else if (argv[i][0] == '-') return fprintf(stderr, "usage: check_gemm_sm90 [-q] [substring]\n"), 2;
        else filter = argv[i];
    }
    int n = 0, failed = 0;
    for (auto &c : cases())
        if (strstr(c.name.c_str(), filter)) n++, failed += !run_case(c.name, [&](std::string *i) { return run_gemm(c, i); });
    printf("gemm_sm90 (EMU_SCHED=%s): %d of %d cases failed\n", emu_sched_name(), failed, n);
    return failed != 0;
}
