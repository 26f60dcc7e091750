// Emulator check of src/kernels/cuda/attention.cu: the plan and tensor-core
// kernels called directly with chosen CTA counts (splits, work-list reuse,
// small workspaces), a few cases through the launcher (lm_cuda_attention_mode:
// slots from the emulated device, the simple kernel), all against a
// double-precision reference of paged causal attention.
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

enum { DIRECT = 0, LAUNCHER = 1 };
struct tcase {
    int nq, nkv, hd, ps;
    std::vector<int> qlen, kvlen;
    int ldq_pad, ldo_pad, seq_off, slots, split;
    const char *name;
    long ws_cut = 0;
    int how = DIRECT, mode = LM_CUDA_ATTN_AUTO;
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
    std::vector<uint16_t> kv((size_t)pool * page_elems);
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
    size_t ldq = (size_t)c.nq * hd + c.ldq_pad, ldo = (size_t)c.nq * hd + c.ldo_pad;
    std::vector<float> q(n * ldq), out(n * ldo, NAN);
    for (size_t i = 0; i < q.size(); i++) q[i] = i % ldq < (size_t)c.nq * hd ? (float)rnd() * 2 : NAN;
    size_t wsb = lm_cuda_attention_workspace_bytes(n, c.nq, maxctx, hd);
    if (c.ws_cut) wsb = c.ws_cut;
    void *ws = aligned_alloc(256, (wsb + 255) / 256 * 256);
    memset(ws, 0xab, wsb);
    const char *path = "";
    if (c.how == LAUNCHER) {
        int e = lm_cuda_attention_mode(q.data(), ldq, out.data(), ldo, n, c.nq, ss.data(), ns, table.data(), ldp,
                                       pos.data(), kv.data(), 2, ps, c.nkv, hd, ws, wsb, c.mode, 0);
        EMU_CHECK(e == 0, "launcher returned %d", e);
        path = lm_cuda_attention_last_path() == 2 ? " [tc]" : " [simple]";
    } else {
        att_ws w;
        EMU_CHECK(ws_carve(ws, wsb, n, ns, c.nq, c.nkv, hd, c.slots, &w), "workspace carve failed");
        plan_args pa = {ss.data(), pos.data(), ns, G, c.nkv, c.slots, w.p_cap, w};
        emu_run(dim3(1), dim3(AT_PLAN_THREADS), 0, [&] { k_attn_plan(pa); });
        if (!g_quiet) printf("  plan: items %d chunk %d (p_cap %lld)\n", w.hdr[0], w.hdr[2], w.p_cap);
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
    // reference
    double md = 0, mr = 0;
    int pad_bad = 0;
    std::vector<double> sc(maxctx);
    for (int s = 0; s < ns; s++)
        for (int tt = ss[s] - ss[0]; tt < ss[s + 1] - ss[0]; tt++)
            for (int h = 0; h < c.nq; h++) {
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
    free(ws);
    double err = pad_bad ? INFINITY : md / mr;
    if (!g_quiet || !(err <= (c.split == 2 ? 1e-4 : 2e-2)))
        printf("%-44s err %.3g%s%s\n", c.name, md / mr, path, pad_bad ? " PADDING WRITTEN" : "");
    return err;
}

int main(int argc, char **argv) {
    g_quiet = argc > 1 && !strcmp(argv[1], "-q");
    std::vector<tcase> cs;
    std::vector<int> mq = {1, 40, 3, 0, 1}, mk = {100, 100, 37, 0, 700};
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
    { tcase c = {32, 8, 128, 16, {1, 1}, {2000, 1500}, 0, 0, 0, 200, 2, "small ws (chunk doubling)"}; c.ws_cut = 57632; cs.push_back(c); }
    { tcase c = {8, 8, 128, 16, {1, 1}, {2000, 1500}, 0, 0, 0, 200, 2, "tiny ws (no split)"}; c.ws_cut = 200000; cs.push_back(c); }
    cs.push_back({8, 2, 64, 16, {1}, {6400}, 0, 0, 0, 4096, 2, "64-split cap 8/2/64 c6400 slots4096"});
    cs.push_back({4, 4, 128, 16, {16, 17, 5}, {300, 17, 200}, 0, 0, 3, 9, 2, "G1 16/17 rows 4/4/128"});
    cs.push_back({8, 2, 128, 16, {300}, {300}, 0, 0, 0, 50, 2, "prefill 300 8/2/128"});
    { tcase c = {8, 2, 128, 16, mq, mk, 0, 1, 7, 0, 2, "launcher: mixed 8/2/128 (emulated H100)"}; c.how = LAUNCHER; cs.push_back(c); }
    { tcase c = {4, 2, 64, 16, {3, 1}, {40, 9}, 2, 0, 2, 0, 2, "launcher: simple kernel 4/2/64"}; c.how = LAUNCHER; c.mode = LM_CUDA_ATTN_SIMPLE; cs.push_back(c); }
    int fail = 0;
    for (auto &c : cs) {
        double e = run(c);
        if (!(e <= (c.split == 2 ? 1e-4 : 2e-2))) fail++, printf("  ^ FAIL\n");
    }
    printf("attention (EMU_SCHED=%s): %d of %zu cases failed\n", emu_sched_name(), fail, cs.size());
    return fail != 0;
}
