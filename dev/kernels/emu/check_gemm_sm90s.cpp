// Emulator check of src/kernels/cuda/gemm_sm90_stream.cu through its
// launchers (lm_cuda_gg_sm90s_run / _supported / _set_knobs / _describe /
// _ws_bytes): the persistent TMA + wgmma streaming kernel k_s9s_gemm<NT, SWI>
// for every block size, stream-K with its fixups and whole items, the
// per-CTA tensor maps of grouped calls, f32 activations staged as f32 or
// converted, against a double-precision reference over the same bf16
// operands.
//
// As in check_gemm_sm90: "device" buffers end against an inaccessible page,
// row padding (lda, ldw > K) holds NaN, outputs start as a sentinel that
// must survive wherever nothing may be written (ldo padding, group padding
// rows, rows past a group's count), each case runs in a child process, the
// emulated device has few SMs so that CTAs walk many items and the mbarrier
// phases wrap. Each case also runs the call a second time on the same
// workspace and requires the same bits (stream-K is deterministic, and
// every call leaves the split counters at zero, which is checked too).
//
//   check_gemm_sm90s [-q] [substring]
#include "gen/gemm_sm90_stream.cpp"

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
    std::map<const void *, std::string> names;
    const int ns[] = {8, 16, 32, 64, 96, 128, 256};
    for (int n : ns)
        for (int sw = 0; sw < 2; sw++) {
            s9s_kernel_t k = s9s_kernel(n, sw != 0);
            if (k) names[(const void *)k] = "gemm<" + std::to_string(n) + (sw ? ",swiglu>" : ",f32out>");
        }
    names[(const void *)&k_s9s_to_bf16] = "to_bf16";
    std::string s;
    for (auto &l : emu_launches) {
        char b[160];
        auto it = names.find(l.fn);
        snprintf(b, sizeof b, "%s%s(%u)%s", s.empty() ? "" : " + ", it == names.end() ? "?" : it->second.c_str(),
                 l.grid.x, l.err ? " LAUNCH FAILED" : "");
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
    lm_cuda_gg_sm90s_knobs kn = {};
    int sms = 3;               // emulated SMs (the persistent grid)
    int cc_major = 9;
    int pdl = 0;
    int ws = 1;                // 1: the workspace lm_cuda_gg_sm90s_ws_bytes asks for (or more), 0: none
    bool scratch = true;       // f32: a scratch big enough to convert
    std::string expect;        // prefix of the launch list
    std::string expect_desc;   // substring of lm_cuda_gg_sm90s_describe
    int expect_rc = 0;
    int n_rows_override = -1;
    int expect_sup = 1;        // what lm_cuda_gg_sm90s_supported must say

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
    gcase &knobs(int kc, int stages, int nt, int mode, int ctas = 0, int f32_nt = 0, int astages = 0) {
        kn.kc = kc, kn.stages = stages, kn.nt = nt, kn.mode = mode, kn.ctas = ctas, kn.f32_nt = f32_nt;
        kn.astages = astages;
        return *this;
    }
    gcase &smcount(int n) { sms = n; return *this; }
    gcase &pdl_(int v) { pdl = v; return *this; }
    gcase &no_ws() { ws = 0; return *this; }
    gcase &no_scratch() { scratch = false; return *this; }
    gcase &expects(std::string e, int rc = 0) { expect = std::move(e), expect_rc = rc; return *this; }
    gcase &desc(std::string d) { expect_desc = std::move(d); return *this; }
};

static float bias_val(const void *b, int dt, int i) {
    if (dt == 2) return emu_bf2f(((const uint16_t *)b)[i]);
    if (dt == 1) return emu_h2f(((const uint16_t *)b)[i]);
    return ((const float *)b)[i];
}

static std::string run_gemm(const gcase &c, std::string *info) {
    emu_dev.sms = c.sms, emu_dev.cc_major = c.cc_major;
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
    const size_t out_n = (size_t)max(total, 1) * ldo, osz = c.swi ? 2 : 4;
    void *out = dalloc(out_n * osz);
    auto poison = [&]() {
        for (size_t i = 0; i < out_n; i++)
            if (c.swi) ((uint16_t *)out)[i] = BF_SENT;
            else ((uint32_t *)out)[i] = F32_SENT;
    };
    poison();
    size_t sbytes = (size_t)a_rows * K * 2;
    void *scratch = c.f32 && c.scratch ? dalloc(sbytes) : NULL;
    if (scratch) memset(scratch, 0xab, sbytes);

    lm_cuda_gg p = {};
    p.a = A, p.a_f32 = c.f32, p.lda = lda, p.a_rows = a_rows, p.a_row = d_arow;
    p.counts = d_counts, p.n_groups = grouped ? G : 0, p.block = c.block;
    p.n_rows = c.n_rows_override >= 0 ? c.n_rows_override : n_rows;
    if (grouped) p.w1 = d_w1, p.w2 = c.swi ? d_w2 : NULL;
    else p.w1_0 = W[0][0], p.w2_0 = c.swi ? W[1][0] : NULL;
    p.ldw = ldw, p.K = K, p.O = O, p.swiglu = c.swi, p.bias = bias, p.bias_dt = c.bias_dt < 0 ? 0 : c.bias_dt;
    p.out = out, p.ldo = ldo, p.scratch = scratch, p.scratch_bytes = scratch ? sbytes : 0;
    p.pdl = c.pdl;
    char msg[640];
    if (lm_cuda_gg_sm90s_set_knobs(&c.kn)) return "set_knobs refused";
    int sup = lm_cuda_gg_sm90s_supported(&p);
    size_t ws_bytes = 0;
    void *ws = NULL;
    if (c.ws) {
        // what lm_cuda_gg_sm90s_ws_bytes asks for (default knobs: that alone, so the
        // bound is checked), or what the plan of forced knobs takes
        ws_bytes = lm_cuda_gg_sm90s_ws_bytes(max(p.n_rows, 1), grouped ? G : 0, O, K, c.swi);
        const lm_cuda_gg_sm90s_knobs none = {};
        if (memcmp(&c.kn, &none, sizeof none) && sup) {
            lm_cuda_gg q = p;
            q.ws = (void *)16, q.ws_bytes = (size_t)-1;
            s9s_plan pl;
            if (s9s_plan_for(&q, 0, &pl) == 0) ws_bytes = max(ws_bytes, pl.ws_need);
        }
        ws = dalloc(max(ws_bytes, (size_t)16));
        memset(ws, 0, ws_bytes);
    }
    p.ws = ws, p.ws_bytes = ws_bytes;

    emu_launches.clear();
    emu_pdl_launches = 0;
    char dsc[400] = "";
    if (c.cc_major == 9) lm_cuda_gg_sm90s_describe(&p, dsc, sizeof dsc);
    int rc = lm_cuda_gg_sm90s_run(&p, 0);
    *info = launches_str() + " [" + dsc + "]";
    if (rc != c.expect_rc) {
        snprintf(msg, sizeof msg, "launcher returned %d, expected %d (supported() said %d)", rc, c.expect_rc, sup);
        return msg;
    }
    if (sup != c.expect_sup) {
        snprintf(msg, sizeof msg, "supported() said %d, expected %d", sup, c.expect_sup);
        return msg;
    }
    if (info->compare(0, c.expect.size(), c.expect)) return "expected launches: " + c.expect;
    if (!c.expect_desc.empty() && !strstr(dsc, c.expect_desc.c_str())) return "expected in the plan: " + c.expect_desc;
    if (rc) return "";
    if (c.pdl && !emu_pdl_launches) return "no launch asked for PDL";
    if (!c.pdl && emu_pdl_launches) return "a launch asked for PDL";

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
    for (auto &l : emu_launches) staged |= l.fn == (const void *)&k_s9s_to_bf16;
    if (staged)
        for (int r = 0; r < a_rows; r++)
            for (int k = 0; k < K; k++)
                scratch_bad += ((uint16_t *)scratch)[(size_t)r * K + k] != emu_f2bf(((float *)A)[r * lda + k]);
    // the split counters must be back at zero (the first 4 * items_ub bytes; all of the
    // counter area is inside the first 64 KB here or the whole workspace)
    long ws_bad = 0;
    if (ws) {
        s9s_plan pl;
        if (s9s_plan_for(&p, 0, &pl) == 0 && pl.max_items)
            for (long i = 0; i < pl.items_ub * 2; i++) ws_bad += ((int *)ws)[i] != 0;
    }
    // the same call again on the same workspace: the same bits
    std::vector<unsigned char> first_out((unsigned char *)out, (unsigned char *)out + out_n * osz);
    poison();
    long det_bad = 0;
    if (lm_cuda_gg_sm90s_run(&p, 0)) det_bad = -1;
    else det_bad = memcmp(first_out.data(), out, out_n * osz) != 0;

    snprintf(msg, sizeof msg, "max err %.2e of max |ref| %.3g (rel %.2e)", maxerr, maxref, maxref ? maxerr / maxref : 0);
    *info += std::string(": ") + msg;
    std::string fail;
    if (bad)
        snprintf(msg, sizeof msg, "%ld outputs out of tolerance (first at packed row %d, column %d); ", bad, first_bad_r,
                 first_bad_o),
            fail += msg;
    if (sent_bad) snprintf(msg, sizeof msg, "%ld outputs written that must not be; ", sent_bad), fail += msg;
    if (scratch_bad) snprintf(msg, sizeof msg, "%ld staged bf16 values wrong; ", scratch_bad), fail += msg;
    if (ws_bad) snprintf(msg, sizeof msg, "%ld split counters not back at zero; ", ws_bad), fail += msg;
    if (det_bad) fail += det_bad < 0 ? "second run failed; " : "second run gave other bits; ";
    return fail;
}

static std::vector<gcase> cases() {
    std::vector<gcase> v;
    const std::vector<int> awk = {0, 1, 7, 17, 64, 65, 128};  // the brief's awkward group sizes
    // ---- decode shapes: few rows per group, stream-K over a small grid
    v.push_back(gcase("swiglu a32 groups{0,1,7,17,64,65,128}/16 gather K768 O200 nt 128 stream-K")
                    .groups(awk, 16).gather(300).swiglu().a32().k(768).o(200).knobs(1, 3, 128, 1).pads(4, 8, 3)
                    .expects("to_bf16(2) + gemm<128,swiglu>(3)").desc("stream-K"));
    v.push_back(gcase("f32out+bias f32 bf16 groups{0,1,7,17,64,65,128}/8 packed K768 O200 nt 64 kc4 (2 blocks of 65, 128)")
                    .groups(awk, 8).bias(0).k(768).o(200).knobs(4, 2, 64, 1).pads(8, 0, 1)
                    .expects("gemm<64,f32out>(3)").desc("stream-K"));
    v.push_back(gcase("f32out+bias bf16 a32 groups{0,1,7,17,64,65,128}/16 gather K72 O45 nt 32 (f32 staged) whole items")
                    .groups(awk, 16).gather(200).a32().bias(2).k(72).o(45).knobs(2, 4, 32, 2).pads(4, 0, 0)
                    .expects("gemm<32,f32out>(3)").desc("whole items"));
    v.push_back(gcase("swiglu a32 groups{1,0,2,1}/16 gather K4096 O300 (Mixtral-like decode) auto")
                    .groups({1, 0, 2, 1}, 16).gather(3).swiglu().a32().k(4096).o(300).smcount(5)
                    .expects("gemm<8,swiglu>(5)").desc(" a32 nt 8"));
    v.push_back(gcase("f32out groups{1,2,0,1}/16 packed K14336 O72 (down, long K) auto")
                    .groups({1, 2, 0, 1}, 16).k(14336).o(72).smcount(4).expects("gemm<8,f32out>(4)"));
    v.push_back(gcase("f32out groups{3,1}/16 packed K14336 O130 kc4 stream-K over 7 CTAs (items cut 3 ways)")
                    .groups({3, 1}, 16).k(14336).o(130).knobs(4, 3, 0, 1).smcount(7).expects("gemm<8,f32out>(7)"));
    // ---- the activation ring at its shallowest (2 stages) under a deeper weight ring
    v.push_back(gcase("f32out groups{7,17,1}/8 gather bf16 K1024 O130 stages 6 astages 2 stream-K")
                    .groups({7, 17, 1}, 8).gather(30).k(1024).o(130).knobs(1, 6, 0, 1, 0, 0, 2)
                    .expects("gemm<32,f32out>(3)").desc("A ring 2 x"));
    v.push_back(gcase("swiglu a32 groups{7,17,1}/8 gather K1024 O130 stages 5 astages 2 (f32 slots freed early)")
                    .groups({7, 17, 1}, 8).gather(30).a32().swiglu().k(1024).o(130).knobs(1, 5, 0, 1, 0, 0, 2)
                    .expects("gemm<32,swiglu>(3)").desc("A ring 2 x"));
    v.push_back(gcase("f32out dense 40 a32 K512 O64 kc2 stages 2 astages 2").dense(40).a32().k(512).o(64)
                    .knobs(2, 2, 0, 1, 0, 64, 2).expects("gemm<64,f32out>(3)").desc(" a32 nt 64"));
    // ---- K tails and tiny K: 8 (one chunk), 72, 136 (kc 4: a stage of 256 with 120 past K)
    v.push_back(gcase("f32out dense 3 K8 O3 odd ldo").dense(3).k(8).o(3).pads(8, 8, 1).expects("gemm<8,f32out>(1)"));
    v.push_back(gcase("swiglu dense 5 K8 O1").dense(5).k(8).o(1).swiglu().expects("gemm<8,swiglu>(1)"));
    v.push_back(gcase("f32out+bias f16 dense 20 a32 K136 O257 kc4 stream-K 3 CTAs").dense(20).a32().k(136).o(257)
                    .bias(1).knobs(4, 2, 0, 1).pads(4, 8, 3).expects("gemm<32,f32out>(3)"));
    v.push_back(gcase("swiglu dense 9 K72 O130 kc1 stages 2").dense(9).k(72).o(130).swiglu().knobs(1, 2, 0, 0)
                    .expects("gemm<16,swiglu>(3)"));
    // ---- dense projections at decode sizes (K 2048, O past a slab), stream-K and whole
    v.push_back(gcase("f32out+bias bf16 dense 1 a32 K2048 O520 auto").dense(1).a32().k(2048).o(520).bias(2).smcount(5)
                    .expects("gemm<8,f32out>(5)"));
    v.push_back(gcase("f32out dense 16 a32 K2048 O300 whole items").dense(16).a32().k(2048).o(300).knobs(2, 0, 0, 2)
                    .expects("gemm<16,f32out>(3)").desc("whole items"));
    v.push_back(gcase("swiglu dense 64 bf16 K512 O200 nt 64 stream-K").dense(64).k(512).o(200).swiglu()
                    .knobs(2, 3, 0, 1).expects("gemm<64,swiglu>(3)"));
    v.push_back(gcase("f32out dense 256 bf16 K1024 O140 nt 256 stream-K").dense(256).k(1024).o(140).knobs(2, 2, 0, 1)
                    .expects("gemm<256,f32out>(3)"));
    v.push_back(gcase("f32out dense 200 bf16 K128 O64 nt 96 (3 blocks) kc1").dense(200).k(128).o(64).knobs(1, 3, 96, 1)
                    .expects("gemm<96,f32out>(3)"));
    v.push_back(gcase("swiglu dense 100 a32 K64 O70 converted (nt 128)").dense(100).a32().k(64).o(70).swiglu()
                    .expects("to_bf16(1) + gemm<128,swiglu>(1)"));
    v.push_back(gcase("f32out dense 100 a32 K64 O70 no scratch: blocks of 32 f32").dense(100).a32().k(64).o(70)
                    .no_scratch().expects("gemm<32,f32out>(3)"));
    // ---- many groups: tensor-map slots wrap (more expert switches per CTA than slots)
    {
        std::vector<int> cs;
        for (int g = 0; g < 40; g++) cs.push_back(g % 7 == 3 ? 0 : 1 + rnd_int(5));
        v.push_back(gcase("swiglu a32 40 groups of 0..5/16 gather K40 O64 2 CTAs (slot ring wraps)").groups(cs, 16)
                        .gather(60).swiglu().a32().k(40).o(64).smcount(2).expects("gemm<16,swiglu>(2)").desc(" a32 nt 16"));
        v.push_back(gcase("f32out 40 groups of 0..5/1 packed K72 O200 stages 2 kc1 whole items, 2 CTAs").groups(cs, 1)
                        .k(72).o(200).knobs(1, 2, 0, 2).smcount(2).expects("gemm<"));
    }
    {
        std::vector<int> cs;
        for (int g = 0; g < 12; g++) cs.push_back(rnd_int(40));
        v.push_back(gcase("f32out+bias f32 12 groups of 0..39/4 gather a32 K264 O129 nt 16 (overflow blocks) 4 CTAs")
                        .groups(cs, 4).gather(50).a32().bias(0).k(264).o(129).knobs(1, 3, 16, 1).smcount(4)
                        .expects("gemm<16,f32out>(4)"));
    }
    // ---- workspace and grid
    v.push_back(gcase("f32out groups{3,1}/16 K2048 O130 no workspace: whole items").groups({3, 1}, 16).k(2048).o(130)
                    .no_ws().expects("gemm<8,f32out>(3)").desc("no ws"));
    v.push_back(gcase("swiglu groups{1,1}/16 K1024 O64 132 SMs (grid capped at the stages: 2 x 16)")
                    .groups({1, 1}, 16).swiglu().k(1024).o(64).smcount(132).expects("gemm<8,swiglu>(32)"));
    v.push_back(gcase("f32out groups{2}/16 K128 O64 n_rows 64: grid 8 for 1 stage (empty CTAs)").groups({2}, 16).k(128)
                    .o(64).knobs(2, 0, 8, 1, 8).smcount(8).expects("gemm<8,f32out>(8)"));
    v.back().n_rows_override = 64;
    v.push_back(gcase("f32out groups{20,2}/16 K512 O64 counts past n_rows 2 (items past the counters: whole items)")
                    .groups({20, 2}, 16).k(512).o(64).knobs(1, 0, 0, 1).expects("gemm<8,f32out>(3)"));
    v.back().n_rows_override = 2;
    // ---- PDL (the emulator runs launches in order: the paths before the wait)
    v.push_back(gcase("pdl 1 dense f32out a32 K1024 O200 (weights before the wait)").dense(2).a32().k(1024).o(200).pdl_(1)
                    .knobs(1, 3, 0, 1).expects("gemm<8,f32out>(3)").desc("pdl early weights"));
    v.push_back(gcase("pdl 1 grouped swiglu (tables after the wait)").groups({2, 0, 1}, 16).gather(3).swiglu().k(512)
                    .o(130).pdl_(1).knobs(1, 3, 0, 1).expects("gemm<8,swiglu>(3)").desc(", pdl,"));
    v.push_back(gcase("pdl 2 grouped f32out (work list and weights before the wait)").groups({2, 0, 1}, 16).k(512).o(130)
                    .pdl_(2).knobs(1, 2, 0, 1).expects("gemm<8,f32out>(3)").desc("pdl early weights"));
    v.push_back(gcase("pdl 1 convert + dense").dense(70).a32().k(64).o(64).pdl_(1).expects("to_bf16(1) + gemm<96,"));
    // ---- launcher contract
    v.push_back(gcase("contract: not compute capability 9.0 -> cudaErrorNotSupported").dense(3).k(8).o(3).expects(
        "no launch", (int)cudaErrorNotSupported));
    v.back().cc_major = 8, v.back().expect_sup = 0;
    v.push_back(gcase("contract: K % 8 != 0 refused").dense(3).k(44).expects("no launch", (int)cudaErrorInvalidValue));
    v.back().expect_sup = 0;
    v.push_back(gcase("contract: 1025 groups refused").groups(std::vector<int>(1025, 0), 1).expects(
        "no launch", (int)cudaErrorInvalidValue));
    v.back().n_rows_override = 1, v.back().expect_sup = 0;
    v.push_back(gcase("contract: n_rows 0 launches nothing").dense(0).expects("no launch", 0));
    return v;
}

// The stream-K partition on its own (s9s_walk, host-side here): every stage
// of every item taken exactly once, the CTAs a fixup sums (owner of the
// item's first and last stage) exactly those that took part of it, at most
// 4 of them, and no two partial tiles in one slot. (The emulator runs blocks in order, so a
// slot shared by a CTA's first and last item could never show as a race.)
static std::string run_walk(std::string *info) {
    long checked = 0;
    for (int n_items : {1, 2, 3, 5, 7, 13, 64, 130, 448})
        for (int nk : {1, 2, 3, 7, 16, 56, 224})
            for (int P : {1, 2, 3, 4, 7, 131, 132}) {
                s9s_params p = {};
                p.nk = nk, p.mode = 1, p.max_items = n_items;
                gridDim = dim3(P);
                std::vector<int> cover((size_t)n_items * nk, 0);
                std::vector<std::vector<int>> who(n_items);  // CTAs per item, in order
                std::map<int, long> slot_user;                // slot -> item * 1000 + cta
                char msg[200];
                for (int c = 0; c < P; c++) {
                    blockIdx = dim3(c);
                    s9s_walk W;
                    W.init(p, n_items);
                    s9s_seg sg;
                    while (W.next(sg)) {
                        for (int k = sg.kb; k < sg.ke; k++) cover[(size_t)sg.item * nk + k]++;
                        who[sg.item].push_back(c);
                        if (sg.kb > 0 || sg.ke < nk) {
                            const int sl = W.slot(c, sg.item);
                            auto it = slot_user.find(sl);
                            if (it != slot_user.end() && it->second != (long)sg.item * 1000 + c) {
                                snprintf(msg, sizeof msg, "items %d x %d stages on %d CTAs: slot %d shared", n_items, nk, P, sl);
                                return msg;
                            }
                            slot_user[sl] = (long)sg.item * 1000 + c;
                            const long long s0 = (long long)sg.item * nk;
                            const int lo = W.owner(s0), hi = W.owner(s0 + nk - 1);
                            if (c < lo || c > hi) {
                                snprintf(msg, sizeof msg, "items %d x %d stages on %d CTAs: CTA %d outside owners %d..%d of item %d",
                                         n_items, nk, P, c, lo, hi, sg.item);
                                return msg;
                            }
                        }
                    }
                }
                for (size_t i = 0; i < cover.size(); i++)
                    if (cover[i] != 1) {
                        snprintf(msg, sizeof msg, "items %d x %d stages on %d CTAs: stage %zu taken %d times", n_items, nk, P,
                                 i, cover[i]);
                        return msg;
                    }
                for (int i = 0; i < n_items; i++) {  // the owners are exactly the CTAs that took part
                    blockIdx = dim3(0);
                    s9s_walk W;
                    W.init(p, n_items);
                    const long long s0 = (long long)i * nk;
                    const int lo = W.owner(s0), hi = W.owner(s0 + nk - 1);
                    bool ok = (int)who[i].size() == hi - lo + 1 && hi - lo < 4;  // <= 4 parts per item
                    for (size_t j = 0; ok && j < who[i].size(); j++) ok = who[i][j] == lo + (int)j;
                    if (!ok) {
                        snprintf(msg, sizeof msg, "items %d x %d stages on %d CTAs: item %d's owners %d..%d differ from its CTAs",
                                 n_items, nk, P, i, lo, hi);
                        return msg;
                    }
                }
                checked++;
            }
    *info = std::to_string(checked) + " partitions";
    return "";
}

// The launcher's plans over shapes and knobs: shared memory within the
// opt-in limit, at least 2 stages, a kernel for the block size, a grid.
static std::string run_plans(std::string *info) {
    long n_ok = 0, n_none = 0;
    char msg[300];
    for (int swi = 0; swi < 2; swi++)
        for (int G : {0, 8, 128, 1024})
            for (int n : {1, 2, 8, 16, 64, 128, 256, 512, 4096, 65536})
                for (int af32 = 0; af32 < 2; af32++)
                    for (int conv = 0; conv < 2; conv++)
                        for (int kc : {0, 1, 2, 4})
                            for (int st : {0, 2, 16})
                                for (int nt : {0, 8, 48, 128, 256})
                                    for (int sa : {0, 2, 16}) {
                                    lm_cuda_gg_sm90s_knobs kn = {};
                                    kn.kc = kc, kn.stages = st, kn.nt = nt, kn.astages = sa;
                                    s9s_plan pl;
                                    if (s9s_make_plan(swi, G, n, 4096, 14336, af32, conv, 1, (size_t)-1, kn, 132,
                                                      227 * 1024, &pl)) {
                                        n_none++;
                                        continue;
                                    }
                                    const char *bad = pl.smem > 227 * 1024 ? "shared memory over the limit"
                                                      : pl.S < 2 || pl.SA < 2 || pl.SA > pl.S ? "ring depths"
                                                      : !s9s_kernel(pl.nt, swi) ? "no kernel for the block size"
                                                      : pl.grid < 1 || pl.grid > 132 ? "grid"
                                                      : pl.af32 && pl.nt > 32 ? "f32 staged beyond 32 rows"
                                                                              : NULL;
                                    if (bad) {
                                        snprintf(msg, sizeof msg, "%s: swiglu %d G %d n %d a32 %d conv %d kc %d stages %d nt %d "
                                                 "astages %d -> nt %d kc %d S %d SA %d smem %zu", bad, swi, G, n, af32, conv,
                                                 kc, st, nt, sa, pl.nt, pl.kc, pl.S, pl.SA, pl.smem);
                                        return msg;
                                    }
                                    n_ok++;
                                }
    *info = std::to_string(n_ok) + " plans, " + std::to_string(n_none) + " refused";
    return n_none ? "a plan was refused" : "";
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
        else if (argv[i][0] == '-') return fprintf(stderr, "usage: check_gemm_sm90s [-q] [substring]\n"), 2;
        else filter = argv[i];
    }
    int n = 0, failed = 0;
    const std::string wname = "stream-K partition: coverage, fixup owners, slots";
    if (strstr(wname.c_str(), filter)) n++, failed += !run_case(wname, run_walk);
    const std::string pname = "plans over shapes and knobs: shared memory, stages, kernels";
    if (strstr(pname.c_str(), filter)) n++, failed += !run_case(pname, run_plans);
    for (auto &c : cases())
        if (strstr(c.name.c_str(), filter)) n++, failed += !run_case(c.name, [&](std::string *i) { return run_gemm(c, i); });
    printf("gemm_sm90s (EMU_SCHED=%s): %d of %d cases failed\n", emu_sched_name(), failed, n);
    return failed != 0;
}
