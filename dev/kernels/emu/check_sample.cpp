// Emulator check of src/kernels/cuda/sample.cu against the real CPU sampler
// (src/engine/sample.c, linked, on the scalar ISA so that both sides take
// glibc's expf): many rows of random and adversarial logits x parameter
// sets through lm_cuda_sample, each id compared with lm_sampler_sample_with
// on the same logits and the same (seed, stream, step). A differing id is
// allowed only where a double-precision replay of the semantics shows a
// decision within rounding (the k-th p, the nucleus edge or the draw within
// 1e-5 relative): counted as "boundary", otherwise a failure. Greedy ids
// must match exactly; flags are checked for every row; logprobs against a
// transcription of generate.c's token_info (a static function there).
//
// Every other case runs the 512-thread variant of the kernel (the others
// 1024); the summary counts the ways the rows went (LM_SAMPLE_STATS), so a
// run shows that the candidate buffer and the global-memory fallback were
// both exercised.
//
//   check_sample [-q] [names]   -q: failures and the summary only; names: run the
//                               cases whose name contains one of these ('|'-separated)
#define LM_SAMPLE_STATS 1
#include "gen/sample.cpp"

#include <string>
#include <vector>

extern "C" {
#include "engine/sample.h"
#include "kernels/cpu/kernels.h"
}

#include "../sample_ref.h"

using sref::rowp;
static bool g_quiet;
static sref::rng R;

// ------------------------------------------------------------------ run ---
struct stats {
    long rows = 0, exact = 0, boundary = 0, fail = 0, greedy = 0, lp_checked = 0;
};
static stats S;

struct tcase {
    std::string name;
    int V, ld_pad;
    sref::kind k;
    std::vector<rowp> rows;
    int n_top = 0;
    bool logprob = false, use_ban = false, force_global = false, misalign = false;
    int threads = 1024;
};

static void run(const tcase &c) {
    const int n = (int)c.rows.size(), V = c.V;
    const size_t ldl = (size_t)V + c.ld_pad;
    // one logits row per parameter row (the same values: a different draw per step)
    std::vector<float> base(V);
    sref::fill(base.data(), V, c.k, R);
    std::vector<float> buf(n * ldl + 8, NAN);
    float *lg = buf.data() + (c.misalign ? 1 : 0);  // misaligned rows: the scalar-load path
    for (int r = 0; r < n; r++) memcpy(lg + (size_t)r * ldl, base.data(), (size_t)V * 4);
    std::vector<uint8_t> ban(V, 0);
    if (c.use_ban)
        for (int i = 0; i < V; i++) ban[i] = R.next() % 4 == 0;
    std::vector<int> params((size_t)n * LM_CUDA_SAMPLE_WORDS, 0), out(2 * n, 12345);
    for (int r = 0; r < n; r++) sref::to_words(c.rows[r], &params[(size_t)r * LM_CUDA_SAMPLE_WORDS]);
    std::vector<float> lp(n, 777.0f), tlp((size_t)n * std::max(c.n_top, 1), 777.0f);
    std::vector<int> tid((size_t)n * std::max(c.n_top, 1), 777);
    lm_cuda_sample_force_global(c.force_global);
    lm_cuda_sample_threads(c.threads);
    int e = lm_cuda_sample(lg, ldl, n, V, params.data(), LM_CUDA_SAMPLE_WORDS, c.use_ban ? ban.data() : NULL, out.data(),
                           c.logprob ? lp.data() : NULL, c.n_top, c.n_top ? tid.data() : NULL,
                           c.n_top ? tlp.data() : NULL, 0);
    lm_cuda_sample_force_global(0);
    EMU_CHECK(e == 0, "%s: launcher returned %d", c.name.c_str(), e);
    const int fl = sref::flags_of(base.data(), V);
    int bad = 0, bnd = 0, ex = 0;
    lm_sample_scratch *sc = NULL;
    EMU_CHECK(lm_sample_scratch_init(V, &sc) == LM_OK, "scratch");
    for (int r = 0; r < n; r++) {
        const rowp &p = c.rows[r];
        const int gid = out[2 * r], gfl = out[2 * r + 1];
        const char *why = NULL;
        char msg[256];
        if (p.n_valid <= 0) {
            if (gid != -1 || gfl != 0) why = "skipped row written";
        } else if (gfl != fl) {
            why = "flags";
        } else if (!(p.temp >= 0)) {
            if (gid != -1) why = "check-only row got an id";
        } else {
            const int Ve = std::min(p.n_valid, V);
            const bool greedy = !(p.temp > 0) || !std::isfinite(1.0f / p.temp);
            // NaN / +inf rows (the engine fails the step) and rows with nothing
            // finite: the CPU sampler's result is not defined, and with +inf its
            // prefilter_top indexes past its histogram (a -NaN probability), so it
            // is not called for them
            bool defined = !(fl & 3);
            float mxv = -INFINITY;
            for (int i = 0; i < Ve; i++)
                if (!(p.use_ban && ban[i]) && base[i] > mxv) mxv = base[i];
            if (mxv == -INFINITY) defined = false;
            int cid = -1;
            if (defined) {
                lm_sampler_params sp = {p.temp, p.top_k, p.top_p, p.seed};
                lm_sampler *s = NULL;
                EMU_CHECK(lm_sampler_init(&sp, Ve, &s) == LM_OK, "sampler init");
                lm_sampler_set_stream(s, p.stream);
                if (p.use_ban) lm_sampler_ban(s, ban.data());
                // the CPU sampler's step: draws taken so far (take p.step draws on a scratch row first)
                std::vector<float> one(Ve, 0.0f);
                for (uint64_t st = 0; st < p.step; st++) lm_sampler_sample_with(s, one.data(), sc);
                cid = lm_sampler_sample_with(s, lg + (size_t)r * ldl, sc);
                lm_sampler_free(s);
            }
            if (gid < 0 || gid >= Ve) why = "id out of range";
            else if (!defined) ;
            else if (gid == cid) ex++;
            else if (greedy) why = "greedy id differs";
            else {
                double m = sref::margin(base.data(), V, p, p.use_ban ? ban.data() : NULL, true);
                if (m < 1e-5) bnd++;
                else {
                    snprintf(msg, sizeof msg, "id %d, CPU %d (margin %.2g)", gid, cid, m);
                    why = msg;
                }
            }
            if (!why && defined && (c.logprob || c.n_top)) {
                float clp, ctlp[LM_CUDA_SAMPLE_MAX_TOP];
                int ctid[LM_CUDA_SAMPLE_MAX_TOP], cnt = 0;
                sref::token_info(base.data(), Ve, p.use_ban ? ban.data() : NULL, gid, c.n_top, &clp, ctid, ctlp, &cnt);
                S.lp_checked++;
                if (c.logprob && !(fabsf(lp[r] - clp) <= 1e-5f + 1e-6f * fabsf(clp)) && !(clp == -INFINITY && lp[r] == clp)) {
                    snprintf(msg, sizeof msg, "logprob %.9g, CPU %.9g", lp[r], clp);
                    why = msg;
                }
                for (int j = 0; j < c.n_top && !why; j++) {
                    const int gi = tid[(size_t)r * c.n_top + j];
                    const float gv = tlp[(size_t)r * c.n_top + j];
                    if (j >= cnt) {
                        if (gi != -1) why = "top id past the valid ids";
                        continue;
                    }
                    if (gi != ctid[j]) {  // only where the two values tie within rounding
                        if (!(gi >= 0 && gi < Ve && fabsf(base[gi] - base[ctid[j]]) <= 1e-6f * fabsf(base[ctid[j]]))) {
                            snprintf(msg, sizeof msg, "top %d: id %d, CPU %d", j, gi, ctid[j]);
                            why = msg;
                        }
                    } else if (!(fabsf(gv - ctlp[j]) <= 1e-5f + 1e-6f * fabsf(ctlp[j])) && !(gv == ctlp[j])) {
                        snprintf(msg, sizeof msg, "top %d logprob %.9g, CPU %.9g", j, gv, ctlp[j]);
                        why = msg;
                    }
                }
            }
            if (greedy) S.greedy++;
        }
        S.rows++;
        if (why) {
            bad++;
            printf("  FAIL %s row %d (T %g k %d p %g nv %d step %llu): %s\n", c.name.c_str(), r, p.temp, p.top_k, p.top_p,
                   p.n_valid, (unsigned long long)p.step, why);
        }
    }
    lm_sample_scratch_free(sc);
    S.exact += ex, S.boundary += bnd, S.fail += bad;
    if (!g_quiet || bad)
        printf("%-52s %4d thr  rows %3d  same %3d  boundary %2d  %s\n", c.name.c_str(), c.threads, n, ex, bnd,
               bad ? "FAIL" : "ok");
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q")) g_quiet = true;
        else only = argv[i];
    }
    lm_cpu_kernels_init(LM_ISA_SCALAR);  // glibc expf on the CPU side, as the emulated kernel

    // the device copy of the hash and the draw, bit for bit
    for (int i = 0; i < 100000; i++) {
        uint64_t a = R.next(), b = R.next(), c = R.next() % 1000;
        EMU_CHECK(dev_mix64(a) == lm_mix64(a), "dev_mix64 differs at %llx", (unsigned long long)a);
        EMU_CHECK(dev_draw(a, b, c) == sref::draw_u(a, b, c), "dev_draw differs");
    }

    std::vector<tcase> cs;
    cs.reserve(128);  // (pointers into it are kept while adding)
    auto add = [&](std::string name, int V, sref::kind k, std::vector<rowp> rows) {
        tcase c;
        c.name = name, c.V = V, c.k = k, c.rows = rows, c.ld_pad = 3;
        c.threads = cs.size() % 2 ? 512 : 1024;
        cs.push_back(c);
        return &cs.back();
    };
    // every kind x a small and a mid vocabulary: the full parameter sweep
    // for three kinds, every third parameter set for the others
    for (int kk = 0; kk < sref::N_KINDS; kk++)
        for (int V : {7, 1000, 5000}) {
            bool full = V < 5000 && (kk == sref::GAUSS || kk == sref::TIES || kk == sref::LLM);
            add(std::string(sref::kind_name[kk]) + " V" + std::to_string(V), V, (sref::kind)kk,
                sref::sweep(V, false, 0, full ? 1 : 3, R));
        }
    // vocabularies 1 .. 262144 (one mid-sized parameter set each)
    for (int V : {1, 2, 3, 31, 129, 4099, 32000, 151936, 262144}) {
        std::vector<rowp> rows = {{0.7f, 40, 0.9f, V, 0, 42, 1, 0}, {1.0f, 0, 1.0f, V, 0, 7, 0, 2},
                                  {0.0f, 0, 1.0f, V, 0, 1, 0, 0}, {1.0f, 0, 0.95f, V, 0, 3, 2, 1}};
        add("llm V" + std::to_string(V), V, sref::LLM, rows);
    }
    {  // banned ids and n_valid < V, logprobs, top-20
        tcase *c = add("llm V5000 banned, n_valid 4000, logprobs top-20", 5000, sref::LLM, sref::sweep(5000, true, 4000, 3, R));
        c->use_ban = true, c->logprob = true, c->n_top = 20;
        c = add("gauss V300 logprobs top-5", 300, sref::GAUSS, sref::sweep(300, false, 0, 3, R));
        c->logprob = true, c->n_top = 5;
        c = add("ties V4099 logprobs top-20 (tied values)", 4099, sref::TIES, sref::sweep(4099, false, 0, 3, R));
        c->logprob = true, c->n_top = 20;
        c = add("V5 logprobs top-20 (fewer ids than 20)", 5, sref::GAUSS, sref::sweep(5, false, 0, 3, R));
        c->logprob = true, c->n_top = 20;
    }
    {  // the global-memory selections forced, and where the buffer cannot decide
        tcase *c = add("forced global: llm V5000", 5000, sref::LLM, sref::sweep(5000, false, 0, 3, R));
        c->force_global = true, c->logprob = true, c->n_top = 7;
        c = add("forced global: ties V4099 banned", 4099, sref::TIES, sref::sweep(4099, true, 0, 3, R));
        c->force_global = true, c->use_ban = true;
        add("sorted-up V40000 (top ids in one warp)", 40000, sref::SORTED_UP, sref::sweep(40000, false, 0, 3, R));
        // one warp's span holds more of the top k than its compactions keep, in
        // ascending order (never rejected later): a flat draw over k > KEEP ids
        std::vector<rowp> flat;
        for (int i = 0; i < 16; i++) flat.push_back({100.0f, i % 2 ? 1000 : 300, 1.0f, 40000, 0, R.next(), 0, (uint64_t)i});
        add("ramp V40000 top-k 300/1000 T100", 40000, sref::RAMP, flat);
        add("ramp V40000 top-k 300/1000 T100", 40000, sref::RAMP, flat);
        // distinct logits sharing one p at T 100: ids left out of the candidates
        // tie with the k-th and win by the lower id
        std::vector<rowp> nt;
        for (int i = 0; i < 16; i++) nt.push_back({100.0f, i % 2 ? 256 : 40, 1.0f, 40000, 0, R.next(), 0, (uint64_t)i});
        add("near-ties V40000 top-k 40/256 T100", 40000, sref::NEARTIES, nt);
        add("near-ties V40000 top-k 40/256 T100", 40000, sref::NEARTIES, nt);
        add("flat V40000 (nucleus wider than the buffer)", 40000, sref::FLAT, sref::sweep(40000, false, 0, 3, R));
        add("equal V40000 (ties overflow a warp)", 40000, sref::EQUAL, sref::sweep(40000, false, 0, 3, R));
    }
    {  // misaligned rows (scalar loads), padding and check-only rows
        tcase *c = add("misaligned rows V1001", 1001, sref::GAUSS, sref::sweep(1001, false, 0, 3, R));
        c->misalign = true;
        std::vector<rowp> rows = {{0.7f, 0, 0.9f, 0, 0, 1, 0, 0}, {-1.0f, 0, 1.0f, 500, 0, 1, 0, 0},
                                  {0.7f, 10, 0.9f, 500, 0, 1, 0, 0}, {0.7f, 10, 0.9f, -3, 0, 1, 0, 0}};
        c = add("padding and check-only rows V500", 500, sref::NANS, rows);
        c->logprob = true, c->n_top = 3;
    }
    // the launcher's refusals
    {
        int o[2];
        std::vector<int> prm(LM_CUDA_SAMPLE_WORDS, 0);
        float l[4] = {0, 0, 0, 0};
        EMU_CHECK(lm_cuda_sample(l, 4, 1, 300000, prm.data(), 12, NULL, o, NULL, 0, NULL, NULL, 0) == cudaErrorInvalidValue,
                  "V 300000 accepted");
        EMU_CHECK(lm_cuda_sample(l, 4, 1, 4, prm.data(), 11, NULL, o, NULL, 0, NULL, NULL, 0) == cudaErrorInvalidValue,
                  "pw 11 accepted");
        EMU_CHECK(lm_cuda_sample(l, 4, 1, 4, prm.data(), 12, NULL, o, NULL, 21, o, l, 0) == cudaErrorInvalidValue,
                  "n_top 21 accepted");
    }
    auto match = [&](const std::string &name) {  // any of the '|'-separated substrings
        if (!only) return true;
        std::string o = only;
        for (size_t a = 0;;) {
            size_t b = o.find('|', a);
            if (name.find(o.substr(a, b == std::string::npos ? b : b - a)) != std::string::npos) return true;
            if (b == std::string::npos) return false;
            a = b + 1;
        }
    };
    for (auto &c : cs)
        if (match(c.name)) run(c);
    printf("paths: %llu greedy, %llu walk of every id, top-k/top-p on the candidates %llu / on the row %llu, top "
           "logprobs on the candidates %llu / on the row %llu\n",
           g_sample_path[0], g_sample_path[1], g_sample_path[2], g_sample_path[3], g_sample_path[4], g_sample_path[5]);
    printf("sample: %ld rows (%ld greedy), %ld the same id as the CPU sampler, %ld at a rounding boundary, %ld logprob "
           "rows checked; %ld failed\n", S.rows, S.greedy, S.exact, S.boundary, S.lp_checked, S.fail);
    return S.fail != 0;
}
