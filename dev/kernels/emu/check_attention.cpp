// Emulator check of src/kernels/cuda/attention.cu against a double-precision
// reference of paged causal attention:
//   - the plan and tensor-core kernels called directly with chosen CTA
//     counts (splits, work-list reuse, small workspaces);
//   - the decode kernel called directly with chosen split caps and chunk
//     sizes (one token per sequence, padding rows, several tokens per
//     sequence, G > 16, repeated launches on one workspace as graph
//     replays do), its arrival counters checked back at zero after each;
//   - the launcher (lm_cuda_attention_mode): its path choice on the
//     emulated H100, a registered and an unregistered (garbage) workspace,
//     the plan path forced, the simple kernel.
//
//   check_attention [-q]   -q: print failures only
#include "gen/attention.cpp"

#include <vector>

static bool g_quiet;  // -q: failures only
static uint64_t rs = 88172645463325252ull;
static double rnd() {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (double)(rs >> 11) / (double)(1ull << 53) * 2 - 1;
}

enum { DIRECT = 0, LAUNCHER = 1, DECODE = 2 };
struct tcase {
    int nq, nkv, hd, ps;
    std::vector<int> qlen, kvlen;
    int ldq_pad, ldo_pad, seq_off, slots, split;  // slots: plan CTAs (DIRECT) or split cap smax (DECODE)
    const char *name;
    long ws_cut = 0;                  // workspace bytes (0: lm_cuda_attention_workspace_bytes)
    int how = DIRECT, mode = LM_CUDA_ATTN_AUTO;
    int min_chunk = 128;              // DECODE
    std::vector<int> pad = {};        // tokens whose pos is -1 (padding rows)
    int reps = 1;                     // launches on one workspace (the output reset in between)
    int expect_path = 0;              // LAUNCHER: the path it must take (0: any)
    bool registered = true;           // LAUNCHER: lm_cuda_attention_ws_init first, else garbage counters
};

static double run(const tcase &c) {
    int ns = c.qlen.size(), G = c.nq / c.nkv, hd = c.hd, ps = c.ps, n = 0, maxp = 1, maxctx = 1, pool = 0;
    for (int s = 0; s < ns; s++) {
        n += c.qlen[s];
        int pg = (c.kvlen[s] + ps - 1) / ps;
        maxp = max(maxp, pg), maxctx = max(maxctx, c.kvlen[s]), pool += pg;
    }
    std::vector<int> perm(pool);
    for (int i = 0; i < pool; i++) perm[i] = i;
    for (int i = pool - 1; i > 0; i--) std::swap(perm[i], perm[(int)((rnd() + 1) / 2 * (i + 1)) % (i + 1)]);
    size_t ldp = maxp, page_elems = (size_t)2 * c.nkv * ps * hd;
    std::vector<int> table(ns * ldp, -1), pos(n), ss(ns + 1);
    std::vector<uint16_t> kv((size_t)max(pool, 1) * page_elems);
    for (auto &x : kv) x = emu_f2bf((float)rnd() * 2);
    for (int pg = 0; pg < pool; pg++)  // V in [-1, 1]
        for (size_t i = 0; i < page_elems / 2; i++) kv[pg * page_elems + page_elems / 2 + i] = emu_f2bf((float)rnd());
    int used = 0, t = 0;
    ss[0] = c.seq_off;
    for (int s = 0; s < ns; s++) {
        for (int i = 0; i < (c.kvlen[s] + ps - 1) / ps; i++) table[s * ldp + i] = perm[used++];
        for (int i = 0; i < c.qlen[s]; i++) pos[t++] = c.kvlen[s] - c.qlen[s] + i;
        ss[s + 1] = ss[s] + c.qlen[s];
    }
    for (int p : c.pad) pos[p] = -1;
    // the slots of each sequence's last page past its length hold NaN (as
    // unwritten cache may): a kernel must zero-fill, not read, them
    for (int s = 0; s < ns; s++)
        for (int p = c.kvlen[s]; p < (c.kvlen[s] + ps - 1) / ps * ps; p++)
            for (int kh = 0; kh < c.nkv; kh++)
                for (int d = 0; d < hd; d++) {
                    size_t base = (size_t)table[s * ldp + p / ps] * page_elems + ((size_t)kh * ps + p % ps) * hd + d;
                    kv[base] = kv[base + (size_t)c.nkv * ps * hd] = 0x7fc0;
                }
    size_t ldq = (size_t)c.nq * hd + c.ldq_pad, ldo = (size_t)c.nq * hd + c.ldo_pad;
    std::vector<float> q(max(n, 1) * ldq), out(max(n, 1) * ldo, NAN);
    for (size_t i = 0; i < q.size(); i++) q[i] = i % ldq < (size_t)c.nq * hd ? (float)rnd() * 2 : NAN;
    for (int p : c.pad)  // a padding row's q is never read
        for (size_t j = 0; j < ldq; j++) q[p * ldq + j] = NAN;
    size_t wsb = lm_cuda_attention_workspace_bytes(n, c.nq, maxctx, hd);
    if (c.ws_cut) wsb = c.ws_cut;
    void *ws = aligned_alloc(256, (wsb + 255) / 256 * 256);
    memset(ws, 0xab, wsb);
    const char *path = "";
    int cnt_bad = 0;
    for (int rep = 0; rep < c.reps; rep++) {
        std::fill(out.begin(), out.end(), NAN);
        if (c.how == LAUNCHER) {
            if (rep == 0 && c.registered) EMU_CHECK(lm_cuda_attention_ws_init(ws, wsb, 0) == 0, "ws_init failed");
            int e = lm_cuda_attention_mode(q.data(), ldq, out.data(), ldo, n, c.nq, ss.data(), ns, table.data(), ldp,
                                           pos.data(), kv.data(), 2, ps, c.nkv, hd, ws, wsb, c.mode, 0);
            EMU_CHECK(e == 0, "launcher returned %d", e);
            int lp = lm_cuda_attention_last_path();
            path = lp == 3 ? " [decode]" : lp == 2 ? " [plan+tc]" : " [simple]";
            EMU_CHECK(!c.expect_path || lp == c.expect_path, "launcher took path %d, expected %d", lp, c.expect_path);
            if (c.registered && lp == 3)
                for (int i = 0; i < AT_CNT_CAP; i++) cnt_bad += ((int *)ws)[i] != 0;
        } else if (c.how == DECODE) {
            if (rep == 0) memset(ws, 0, AT_CNT_BYTES);  // as lm_cuda_attention_ws_init
            const size_t row = 8 + (size_t)hd * 4;
            const long long p_cap = (long long)((wsb - AT_CNT_BYTES - 256) / row);
            EMU_CHECK(c.slots == 1 || (long long)n * c.nq * c.slots <= p_cap, "workspace too small for smax %d", c.slots);
            dec_args a;
            a.q = q.data(), a.ldq = ldq, a.out = out.data(), a.ldo = ldo, a.out_v4 = ldo % 4 == 0;
            a.seq_start = ss.data(), a.pages = table.data(), a.pos = pos.data(), a.ldp = ldp;
            a.kv = kv.data(), a.ps = ps, a.nkv = c.nkv, a.G = G, a.n = n;
            a.smax = c.slots, a.min_chunk = c.min_chunk;
            a.scale_log2 = (float)(1.4426950408889634 / sqrt((double)hd));
            a.cnt = (int *)ws;
            a.pml = (float2 *)((char *)ws + AT_CNT_BYTES);
            a.pacc = (float *)((char *)ws + AT_CNT_BYTES + al256((size_t)p_cap * 8));
            emu_run(dim3(ns * c.nkv * c.slots), dim3(AT_THREADS), dec_smem(hd), [&] {
                if (hd == 128) c.split == 2 ? k_attn_dec<128, 2>(a) : k_attn_dec<128, 1>(a);
                else c.split == 2 ? k_attn_dec<64, 2>(a) : k_attn_dec<64, 1>(a);
            });
            for (int i = 0; i < AT_CNT_CAP; i++) cnt_bad += ((int *)ws)[i] != 0;
        } else {
            att_ws w;
            EMU_CHECK(ws_carve(ws, wsb, n, ns, c.nq, c.nkv, hd, c.slots, &w), "workspace carve failed");
            plan_args pa = {ss.data(), pos.data(), ns, G, c.nkv, c.slots, w.p_cap, w};
            emu_run(dim3(1), dim3(AT_PLAN_THREADS), 0, [&] { k_attn_plan(pa); });
            if (!g_quiet && rep == 0) printf("  plan: items %d chunk %d (p_cap %lld)\n", w.hdr[0], w.hdr[2], w.p_cap);
            att_args aa;
            aa.q = q.data(), aa.ldq = ldq, aa.out = out.data(), aa.ldo = ldo;
            aa.out_v4 = ldo % 4 == 0;
            aa.seq_start = ss.data(), aa.pages = table.data(), aa.pos = pos.data(), aa.ldp = ldp;
            aa.kv = kv.data(), aa.ps = ps, aa.nkv = c.nkv, aa.G = G;
            aa.scale_log2 = (float)(1.4426950408889634 / sqrt((double)hd));
            aa.w = w;
            emu_run(dim3(c.slots), dim3(AT_THREADS), tc_smem(hd), [&] {
                if (hd == 128) c.split == 2 ? k_attn_tc<128, 2>(aa) : k_attn_tc<128, 1>(aa);
                else c.split == 2 ? k_attn_tc<64, 2>(aa) : k_attn_tc<64, 1>(aa);
            });
        }
    }
    // reference (padding rows: must stay untouched)
    double md = 0, mr = 0;
    int pad_bad = 0;
    std::vector<double> sc(maxctx);
    for (int s = 0; s < ns; s++)
        for (int tt = ss[s] - ss[0]; tt < ss[s + 1] - ss[0]; tt++)
            for (int h = 0; h < c.nq; h++) {
                if (pos[tt] < 0) {
                    for (int d = 0; d < hd; d++) pad_bad += !std::isnan(out[tt * ldo + h * hd + d]);
                    continue;
                }
                int kh = h / G;
                double mx = -INFINITY, sum = 0;
                auto K = [&](int p, int d) {
                    return (double)emu_bf2f(kv[(size_t)table[s * ldp + p / ps] * page_elems + ((size_t)kh * ps + p % ps) * hd + d]);
                };
                auto V = [&](int p, int d) {
                    return (double)emu_bf2f(kv[(size_t)table[s * ldp + p / ps] * page_elems + (size_t)c.nkv * ps * hd +
                                               ((size_t)kh * ps + p % ps) * hd + d]);
                };
                for (int p = 0; p <= pos[tt]; p++) {
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double)q[tt * ldq + h * hd + d] * K(p, d);
                    sc[p] = dot / sqrt((double)hd);
                    mx = max(mx, sc[p]);
                }
                for (int p = 0; p <= pos[tt]; p++) sum += (sc[p] = exp(sc[p] - mx));
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int p = 0; p <= pos[tt]; p++) o += sc[p] * V(p, d);
                    o /= sum;
                    double g = out[tt * ldo + h * hd + d], e = fabs(g - o);
                    if (e != e) e = INFINITY;
                    md = max(md, e), mr = max(mr, fabs(o));
                }
            }
    for (int tt = 0; tt < n; tt++)
        for (size_t j = (size_t)c.nq * hd; j < ldo; j++) pad_bad += !std::isnan(out[tt * ldo + j]);
    lm_cuda_attention_ws_forget(ws);  // the registry must not outlive the allocation
    free(ws);
    double err = pad_bad || cnt_bad ? INFINITY : mr > 0 ? md / mr : md;
    if (!g_quiet || !(err <= (c.split == 2 ? 1e-4 : 2e-2)))
        printf("%-52s err %.3g%s%s%s\n", c.name, mr > 0 ? md / mr : md, path, pad_bad ? " PADDING WRITTEN" : "",
               cnt_bad ? " COUNTERS NOT BACK AT ZERO" : "");
    return err;
}

int main(int argc, char **argv) {
    g_quiet = argc > 1 && !strcmp(argv[1], "-q");
    std::vector<tcase> cs;
    std::vector<int> mq = {1, 40, 3, 0, 1}, mk = {100, 100, 37, 0, 700};
    const long cnt = (long)AT_CNT_BYTES;  // the decode counters ahead of the plan path's workspace
    // plan + tensor-core kernels
    cs.push_back({8, 2, 128, 16, mq, mk, 0, 0, 7, 6, 2, "mixed 8/2/128 slots6"});
    cs.push_back({16, 2, 128, 16, mq, mk, 0, 0, 7, 300, 2, "mixed 16/2/128 slots300"});
    cs.push_back({2, 2, 64, 16, mq, mk, 2, 3, 7, 5, 2, "mixed 2/2/64 pads"});
    cs.push_back({32, 4, 128, 8, {1}, {1000}, 0, 0, 0, 64, 2, "split decode 32/4/128 ps8"});
    cs.push_back({8, 2, 128, 16, {64, 17}, {900, 530}, 0, 1, 0, 264, 2, "split prefill 8/2/128"});
    cs.push_back({8, 1, 64, 32, {1, 1, 1}, {1500, 20, 700}, 0, 0, 0, 40, 2, "split decode 8/1/64 ps32"});
    cs.push_back({8, 1, 128, 16, {71, 7, 1}, {111, 8, 41}, 0, 0, 0, 264, 2, "op-test 8/1/128"});
    cs.push_back({8, 2, 64, 16, {71, 7, 1}, {111, 8, 41}, 0, 0, 0, 264, 2, "op-test 8/2/64"});
    cs.push_back({8, 2, 128, 16, mq, mk, 0, 0, 7, 6, 1, "mixed 8/2/128 single-bf16"});
    cs.push_back({64, 2, 64, 16, {2, 1, 130}, {50, 200, 130}, 0, 0, 1, 7, 2, "G32 64/2/64"});
    { tcase c = {32, 8, 128, 16, {1, 1}, {2000, 1500}, 0, 0, 0, 200, 2, "small ws (chunk doubling)"}; c.ws_cut = cnt + 57632; cs.push_back(c); }
    { tcase c = {8, 8, 128, 16, {1, 1}, {2000, 1500}, 0, 0, 0, 200, 2, "tiny ws (no split)"}; c.ws_cut = cnt + 200000; cs.push_back(c); }
    cs.push_back({8, 2, 64, 16, {1}, {6400}, 0, 0, 0, 4096, 2, "64-split cap 8/2/64 c6400 slots4096"});
    cs.push_back({4, 4, 128, 16, {16, 17, 5}, {300, 17, 200}, 0, 0, 3, 9, 2, "G1 16/17 rows 4/4/128"});
    cs.push_back({8, 2, 128, 16, {300}, {300}, 0, 0, 0, 50, 2, "prefill 300 8/2/128"});
    { tcase c = {8, 2, 128, 16, {1, 40, 3, 1}, {100, 100, 37, 700}, 0, 0, 7, 30, 2, "plan: padding rows 8/2/128"}; c.pad = {0, 5, 41, 43}; cs.push_back(c); }
    // decode kernel (slots = smax)
    auto dec = [&](tcase c, int min_chunk) { c.how = DECODE, c.min_chunk = min_chunk; cs.push_back(c); };
    dec({32, 8, 128, 16, {1}, {1000}, 0, 0, 0, 16, 2, "decode 32/8/128 c1000 smax16 mc64"}, 64);
    dec({32, 8, 128, 16, {1}, {1000}, 0, 0, 0, 16, 2, "decode 32/8/128 c1000 smax16 mc256"}, 256);
    dec({32, 4, 128, 8, {1}, {4096}, 0, 0, 0, 64, 2, "decode 32/4/128 ps8 c4096 smax64"}, 64);
    dec({8, 1, 64, 32, {1, 1, 1}, {1500, 20, 700}, 0, 0, 0, 8, 2, "decode 8/1/64 ps32 b3 smax8"}, 128);
    dec({8, 2, 128, 16, {1, 1, 1, 1}, {1, 64, 65, 129}, 2, 3, 5, 4, 2, "decode edges c1/64/65/129 pads ldo+3"}, 64);
    dec({8, 2, 64, 16, {1, 1, 1, 1, 1}, {300, 70, 1, 900, 64}, 0, 1, 0, 3, 1, "decode single-bf16 8/2/64 smax3"}, 64);
    dec({64, 2, 64, 16, {1, 1}, {500, 130}, 0, 0, 2, 4, 2, "decode G32 64/2/64 (two row tiles) smax4"}, 64);
    dec({32, 8, 128, 16, {1, 1}, {2000, 1500}, 0, 0, 0, 1, 2, "decode no split (smax1)"}, 128);
    { tcase c = {8, 2, 128, 16, {1, 1, 1, 1, 1, 1}, {300, 5, 700, 64, 1000, 2}, 0, 0, 4, 6, 2, "decode padded bucket (pos -1) smax6"};
      c.pad = {1, 4, 5}; dec(c, 64); }
    { tcase c = {8, 2, 128, 16, {1, 1, 1}, {900, 400, 77}, 0, 0, 0, 8, 2, "decode 3 launches on one ws (replays)"};
      c.reps = 3; dec(c, 64); }
    // n == n_seqs but not one token per sequence: the non-speculative rows
    dec({8, 2, 128, 16, {2, 0, 1, 3, 0}, {500, 0, 90, 260, 0}, 0, 0, 3, 5, 2, "decode uneven tokens {2,0,1,3,0}"}, 64);
    dec({16, 2, 64, 16, {20, 0, 0}, {300, 0, 0}, 0, 0, 0, 4, 2, "decode a 20-token sequence, G8 (10 row tiles)"}, 64);
    { tcase c = {8, 2, 128, 16, {3, 0, 1}, {200, 0, 50}, 0, 0, 0, 4, 2, "decode uneven + padding"}; c.pad = {1, 3}; dec(c, 64); }
    // launcher
    auto lau = [&](tcase c, int mode, int path, bool reg) {
        c.how = LAUNCHER, c.mode = mode, c.expect_path = path, c.registered = reg;
        cs.push_back(c);
    };
    lau({8, 2, 128, 16, mq, mk, 0, 1, 7, 0, 2, "launcher: mixed 8/2/128 (plan path)"}, LM_CUDA_ATTN_AUTO, 2, true);
    lau({32, 8, 128, 16, {1, 1, 1}, {3000, 200, 1}, 0, 0, 0, 0, 2, "launcher: decode b3 registered ws"}, LM_CUDA_ATTN_AUTO, 3, true);
    { tcase c = {32, 8, 128, 16, {1, 1, 1}, {3000, 200, 1}, 0, 0, 0, 0, 2, "launcher: decode b3 unregistered garbage ws x2"};
      c.reps = 2; lau(c, LM_CUDA_ATTN_AUTO, 3, false); }
    lau({32, 4, 64, 16, {1, 1}, {700, 64}, 0, 0, 0, 0, 1, "launcher: decode bf16 mode"}, LM_CUDA_ATTN_BF16, 3, true);
    lau({32, 8, 128, 16, {1, 1, 1}, {3000, 200, 1}, 0, 0, 0, 0, 2, "launcher: decode batch, plan path forced"},
        LM_CUDA_ATTN_NO_DECODE, 2, true);
    { tcase c = {32, 8, 128, 16, {1, 1}, {300, 100}, 0, 0, 0, 0, 2, "launcher: decode, workspace only counters"};
      c.ws_cut = cnt + 1100; lau(c, LM_CUDA_ATTN_AUTO, 3, true); }
    lau({4, 2, 64, 16, {3, 1}, {40, 9}, 2, 0, 2, 0, 2, "launcher: simple kernel 4/2/64"}, LM_CUDA_ATTN_SIMPLE, 1, true);
    { tcase c = {4, 2, 64, 16, {1, 1, 2}, {40, 9, 30}, 0, 0, 0, 0, 2, "launcher: simple kernel, padding rows"};
      c.pad = {1}; lau(c, LM_CUDA_ATTN_SIMPLE, 1, true); }
    int fail = 0;
    for (auto &c : cs) {
        double e = run(c);
        if (!(e <= (c.split == 2 ? 1e-4 : 2e-2))) fail++, printf("  ^ FAIL\n");
    }
    printf("attention (EMU_SCHED=%s): %d of %zu cases failed\n", emu_sched_name(), fail, cs.size());
    return fail != 0;
}
