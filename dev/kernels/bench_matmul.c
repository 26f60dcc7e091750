// Kernel lab: lm_matmul_rows on Mixtral-like shapes (bf16 weights) at several
// token counts, single-threaded and with N pthreads splitting the output rows
// (as the CPU executor does), against the machine's measured read bandwidth
// and FMA peak. See README.md for the command and recorded results.
//
//   bench_matmul [-t threads] [-r reps] [-R rounds] [-i isa] [-n 1,4,16,64,256] [-q]
//     -q: skip the scalar reference timing (slow) and the 1 GiB bandwidth test
#include "kernels/cpu/kernels.h"
#include "lab.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// ----------------------------------------------------------------- matmul ---

// Weights rotate through ncopy copies (> 1 GiB in all) so that decode reads
// them from DRAM, not from a large L3 (this VM reports a 512 MB L3).
typedef struct {
    const float *x;
    const uint16_t *W[64];
    int ncopy, rep;
    float *y;
    int n, in, out;
    int ref;
} mm_arg;

static void mm_job(team *tm, int tid) {
    mm_arg *a = tm->arg;
    const uint16_t *W = a->W[a->rep % a->ncopy];
    // split rows in multiples of 16 (a thread pool would do the same)
    int blocks = (a->out + 15) / 16, per = blocks / tm->nthr, rem = blocks % tm->nthr;
    int b0 = tid * per + (tid < rem ? tid : rem), b1 = b0 + per + (tid < rem);
    int o0 = b0 * 16, o1 = b1 * 16 < a->out ? b1 * 16 : a->out;
    (a->ref ? lm_matmul_rows_ref : lm_matmul_rows)(a->x, a->n, a->in, W, LM_DT_BF16,
                                                   (size_t)a->in, a->in, a->y, a->out, o0, o1);
}

static void parse_list(const char *s, int *v, int *nv) {
    *nv = 0;
    while (*s && *nv < 16) {
        v[(*nv)++] = atoi(s);
        s = strchr(s, ',');
        if (!s) break;
        s++;
    }
}

int main(int argc, char **argv) {
    int nthr = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 5, rounds = 3, force = -1, quick = 0;
    int ns[16] = {1, 4, 16, 64, 256}, nn = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) nthr = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-R") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) parse_list(argv[++i], ns, &nn);
        else if (!strcmp(argv[i], "-q")) quick = 1;
        else if (!strcmp(argv[i], "-i") && i + 1 < argc) {
            const char *s = argv[++i];
            force = !strcmp(s, "scalar") ? 0 : !strcmp(s, "avx2") ? 1 : 2;
        } else {
            fprintf(stderr,
                    "usage: %s [-t threads] [-r reps] [-R rounds] [-i scalar|avx2|avx512] "
                    "[-n list] [-q]\n",
                    argv[0]);
            return 2;
        }
    }
    if (nthr < 1) nthr = 1;
    if (nthr > 64) nthr = 64;
    if (rounds < 1) rounds = 1;
    lm_isa isa = lm_cpu_kernels_init(force);
    printf("isa %s, threads 1 and %d, best of %d rounds x %d reps\n", lm_isa_name(isa), nthr,
           rounds, reps);

    const int shapes[2][2] = {{4096, 14336}, {14336, 4096}};  // {in, out}: w1/w3 and w2
    int nmax = 0;
    for (int i = 0; i < nn; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
    mm_arg arg[2];
    float *yref[2];
    for (int s = 0; s < 2; s++) {
        const int in = shapes[s][0], out = shapes[s][1];
        const size_t wbytes = (size_t)in * out * 2;
        mm_arg *a = &arg[s];
        *a = (mm_arg){.in = in, .out = out};
        a->ncopy = (int)(((size_t)3 << 29) / wbytes) + 1;  // > 1.5 GiB of weights
        if (a->ncopy > 64) a->ncopy = 64;
        for (int c = 0; c < a->ncopy; c++) {
            uint16_t *W = aligned_alloc(64, wbytes);
            if (c == 0)
                for (size_t i = 0; i < (size_t)in * out; i++) W[i] = lm_f32_to_bf16(rndf());
            else
                memcpy(W, a->W[0], wbytes);
            a->W[c] = W;
        }
        float *x = aligned_alloc(64, (size_t)nmax * in * 4);
        for (size_t i = 0; i < (size_t)nmax * in; i++) x[i] = rndf();
        a->x = x;
        a->y = aligned_alloc(64, (size_t)nmax * out * 4);
        yref[s] = aligned_alloc(64, (size_t)nmax * out * 4);
    }

    // The VM's neighbours come and go: every figure is the best over several
    // rounds, and the rounds interleave all measurements (bandwidth and peak
    // included), so that a noisy spell does not hit all samples of one entry.
    int tcounts[2] = {1, nthr}, ntc = nthr > 1 ? 2 : 1;
    double bw[2] = {0, 0}, peak[2] = {0, 0}, best[2][16][2], tref[2][16];
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < nn; k++) best[s][k][0] = best[s][k][1] = 1e30, tref[s][k] = 0;
    for (int round = 0; round < rounds; round++) {
        for (int c = 0; c < ntc; c++) {
            double b = quick ? 0 : read_bandwidth(tcounts[c]), p = fma_peak(isa, tcounts[c]);
            bw[c] = b > bw[c] ? b : bw[c], peak[c] = p > peak[c] ? p : peak[c];
        }
        for (int s = 0; s < 2; s++)
            for (int k = 0; k < nn; k++) {
                mm_arg *a = &arg[s];
                a->n = ns[k];
                for (int c = 0; c < ntc; c++) {
                    a->rep = 0;
                    double t = team_run(tcounts[c], reps, mm_job, a, &a->rep);
                    if (t < best[s][k][c]) best[s][k][c] = t;
                }
                // reference speed (scalar, all threads) where it is quick, and a check
                if (round == 0 && !quick && ns[k] <= 4) {
                    mm_arg r = *a;
                    r.y = yref[s], r.ref = 1;
                    tref[s][k] = team_run(nthr, 1, mm_job, &r, NULL);
                    double maxd = 0, maxv = 0;
                    for (size_t i = 0; i < (size_t)ns[k] * a->out; i++) {
                        double d = fabs((double)a->y[i] - r.y[i]);
                        maxd = d > maxd ? d : maxd;
                        maxv = fabs(r.y[i]) > maxv ? fabs(r.y[i]) : maxv;
                    }
                    if (maxd > 1e-4 * maxv) printf("MISMATCH vs ref: %g (max %g)\n", maxd, maxv);
                }
            }
    }

    for (int c = 0; c < ntc; c++)
        printf("threads %d: read bandwidth %.1f GB/s (1 GiB buffer), FMA peak %.0f GFLOP/s\n",
               tcounts[c], bw[c] * 1e-9, peak[c]);
    printf("\n%-13s %4s %3s %9s %9s %8s %9s %8s\n", "shape in>out", "n", "thr", "ms", "GFLOP/s",
           "GB/s(W)", "%bw/%pk", "x ref");
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < nn; k++)
            for (int c = 0; c < ntc; c++) {
                const int n = ns[k], in = shapes[s][0], out = shapes[s][1];
                const double t = best[s][k][c], wbytes = 2.0 * in * out;
                const double gf = 2.0 * n * in * out / t * 1e-9;
                // memory-bound regime: % of read bandwidth; compute-bound: % of FMA peak
                double pct = n <= 4 ? (bw[c] > 0 ? 100 * wbytes / t / bw[c] : 0) : 100 * gf / peak[c];
                char xr[16] = "";
                if (tref[s][k] > 0 && c == ntc - 1) snprintf(xr, sizeof xr, "%.1fx", tref[s][k] / t);
                printf("%5d>%-7d %4d %3d %9.3f %9.1f %8.1f %7.0f%%%s %8s\n", in, out, n, tcounts[c],
                       t * 1e3, gf, wbytes / t * 1e-9, pct, n <= 4 ? "b" : "p", xr);
            }
    printf("\n%%bw (b): weight bytes / time as a share of the measured read bandwidth (n <= 4);\n"
           "%%pk (p): GFLOP/s as a share of the measured FMA peak (n > 4).\n");
    for (int s = 0; s < 2; s++) {
        for (int c = 0; c < arg[s].ncopy; c++) free((void *)arg[s].W[c]);
        free((void *)arg[s].x), free(arg[s].y), free(yref[s]);
    }
    return 0;
}
