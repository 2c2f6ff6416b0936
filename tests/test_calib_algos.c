/* Unit tests of the calibration plugins (minmax, percentile, kl, mse),
 * dlopened from the build tree ($QLENS_BUILDDIR/plugins/.libs). Each is
 * compared with a straightforward implementation written here that works on
 * the RAW values: sorting for percentiles, KL recomputed bin by bin from a
 * histogram of |x| binned here, MSE by brute force over the raw values.
 *
 * Criterion: the plugin's threshold equals the reference's within one bin of
 * the histogram the algorithm works on (percentile: R/4096; kl and mse: the
 * |x| histogram merged to <= 2048 bins; the asymmetric mse pair grid: one
 * grid step, |min|/64 and max/64). minmax and the weight algorithms are
 * exact (1e-12 relative). One exception, for mse on activations: when a few
 * isolated values decide the optimum, their exact positions inside their bins
 * matter and no histogram method can match brute force on the raw values;
 * a threshold more than one bin away is then accepted (and printed) only if
 * its raw MSE is within 0.1% of the brute-force minimum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/calib_stats.h"
#include "qlens-plugin.h"
#include "tests/testutil.h"

/* ---------------------------------------------------------------------------
 * Plugins and data
 * ------------------------------------------------------------------------- */

static const qlp_plugin *load(const char *name)
{
    const char *dir = getenv("QLENS_BUILDDIR");
    if (!dir)
        fail_msg("QLENS_BUILDDIR is not set (run through make check)");
    char path[1024];
    snprintf(path, sizeof path, "%s/plugins/.libs/%s.so", dir, name);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        fail_msg("dlopen %s: %s", path, dlerror());
    /* never closed: the plugin structs live in the module */
    qlp_entry_fn fn;
    *(void **)&fn = dlsym(h, QLENS_PLUGIN_ENTRY_NAME);
    assert_non_null(fn);
    const qlp_plugin *p = fn();
    assert_non_null(p);
    assert_int_equal(p->abi_version, QLP_ABI_VERSION);
    assert_string_equal(p->name, name);
    assert_non_null(p->summary);
    return p;
}

static const qlp_format INT8_SYM = {8, 1, 1, -128, 127};
static const qlp_format INT8_ASYM = {8, 1, 0, -128, 127};
static const qlp_format UINT8_ASYM = {8, 0, 0, 0, 255};

typedef enum { D_GAUSS, D_LAPLACE, D_OUTLIERS, D_RELU, D_ABS_LAPLACE, D_ZERO, D_CONST, D_COUNT } dkind;
static const char *const dnames[D_COUNT] = {"gauss", "laplace", "outliers", "relu",
                                            "abs-laplace", "zero", "constant"};

static double unif01(tu_rng *r)
{
    return (tu_next(r) + 0.5) / 2147483648.0;
}

static float *make_data(dkind k, int64_t n, uint64_t seed)
{
    tu_rng r = {seed};
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        double g = sqrt(-2 * log(unif01(&r))) * cos(2 * M_PI * unif01(&r));
        double u = unif01(&r) - 0.5, lap = (u < 0 ? 1 : -1) * log(1 - 2 * fabs(u));
        switch (k) {
        case D_GAUSS: x[i] = (float)g; break;
        case D_LAPLACE: x[i] = (float)(0.5 * lap); break;
        case D_OUTLIERS: x[i] = (float)(0.5 * g); break;
        case D_RELU: x[i] = (float)fmax(0, g); break;
        case D_ABS_LAPLACE: x[i] = (float)fabs(2 * lap); break;
        case D_ZERO: x[i] = 0; break;
        case D_CONST: x[i] = -1.75f; break;
        default: break;
        }
    }
    if (k == D_OUTLIERS)
        for (int i = 0; i < 8; i++)
            x[(i * 7919) % n] = (float)((i % 2 ? -1 : 1) * (40 + 5 * i));
    return x;
}

/* The statistics the engine would hand a plugin, from ql_hist. */
typedef struct stats {
    ql_hist h;
    qlp_hist q;
} stats;

static void make_stats(stats *s, const float *x, int64_t n)
{
    assert_int_equal(ql_hist_init(&s->h, NULL), QL_OK);
    ql_hist_add(&s->h, x, n);
    s->q = (qlp_hist){s->h.min, s->h.max, s->h.count, QL_HIST_BINS, -s->h.range, s->h.range,
                      s->h.counts};
}

static double ref_absmax(const float *x, int64_t n)
{
    double a = 0;
    for (int64_t i = 0; i < n; i++)
        a = fmax(a, fabs(x[i]));
    return a;
}

/* |x| histogram binned here: R = smallest power of two >= max |x|, 4096
 * bins of width R/4096 (|x| = R in the last), cut after the last non-zero
 * bin, merged by the smallest factor leaving <= 2048 bins. Returns nb. */
static int ref_abs_hist(const float *x, int64_t n, double *bins, double *width)
{
    double a = ref_absmax(x, n), R = 1;
    if (a == 0) {
        *width = 0;
        return 0;
    }
    while (R < a)
        R *= 2;
    while (R / 2 >= a)
        R /= 2;
    double w = R / 4096;
    double *raw = calloc(4096, sizeof *raw);
    for (int64_t i = 0; i < n; i++) {
        int b = (int)floor(fabs(x[i]) / w);
        raw[b > 4095 ? 4095 : b] += 1;
    }
    int used = 4096;
    while (raw[used - 1] == 0)
        used--;
    int f = (used + 2047) / 2048, nb = (used + f - 1) / f;
    for (int k = 0; k < nb; k++) {
        bins[k] = 0;
        for (int j = k * f; j < (k + 1) * f && j < used; j++)
            bins[k] += raw[j];
    }
    free(raw);
    *width = w * f;
    return nb;
}

static double thr(double lo, double hi)
{
    return fmax(fabs(lo), fabs(hi));
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1e3 + (t1.tv_nsec - t0->tv_nsec) / 1e6;
}

#define N_VALUES 100000

/* ---------------------------------------------------------------------------
 * minmax
 * ------------------------------------------------------------------------- */

static void test_minmax(void **state)
{
    const qlp_plugin *p = load("minmax");
    assert_int_equal(p->kinds, QLP_KIND_ACTIVATION | QLP_KIND_WEIGHT);
    char err[256] = "";
    double lo, hi;
    for (int k = 0; k < D_COUNT; k++) {
        float *x = make_data(k, N_VALUES, 100 + k);
        stats s;
        make_stats(&s, x, N_VALUES);
        double mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < N_VALUES; i++) {
            mn = fmin(mn, x[i]);
            mx = fmax(mx, x[i]);
        }
        assert_int_equal(p->act_range(NULL, &s.q, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_OK);
        assert_true(lo == mn && hi == mx);
        free(x);
        ql_hist_clear(&s.h);
    }
    /* per channel */
    tu_rng r = {1};
    float w[6 * 50];
    tu_fill(&r, w, 300, -2, 3);
    double wl[6], wh[6];
    assert_int_equal(p->weight_range(NULL, w, 6, 50, &INT8_SYM, wl, wh, err, sizeof err), QLP_OK);
    for (int c = 0; c < 6; c++) {
        double mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < 50; j++) {
            mn = fmin(mn, w[c * 50 + j]);
            mx = fmax(mx, w[c * 50 + j]);
        }
        assert_true(wl[c] == mn && wh[c] == mx);
    }
    /* errors */
    qlp_hist empty = {INFINITY, -INFINITY, 0, 0, 0, 0, NULL};
    assert_int_equal(p->act_range(NULL, &empty, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_ERROR);
    assert_non_null(strstr(err, "no statistics"));
    stats s;
    float inf[] = {1, INFINITY};
    make_stats(&s, inf, 2);
    assert_int_equal(p->act_range(NULL, &s.q, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_ERROR);
    assert_non_null(strstr(err, "infinite"));
    ql_hist_clear(&s.h);
    w[7] = NAN;
    assert_int_equal(p->weight_range(NULL, w, 6, 50, &INT8_SYM, wl, wh, err, sizeof err),
                     QLP_ERROR);
    assert_non_null(strstr(err, "channel 0"));
}

/* ---------------------------------------------------------------------------
 * percentile
 * ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_percentile(void **state)
{
    const qlp_plugin *p = load("percentile");
    assert_int_equal(p->n_params, 1);
    assert_string_equal(p->params[0].key, "p");
    assert_true(p->params[0].dflt == 99.99 && p->params[0].min == 50 && p->params[0].max == 100);
    char err[256] = "";
    double *v = malloc(N_VALUES * sizeof *v);
    const double ps[] = {99.99, 99.9, 99, 90, 100};
    for (int k = 0; k < D_COUNT; k++) {
        float *x = make_data(k, N_VALUES, 200 + k);
        stats s;
        make_stats(&s, x, N_VALUES);
        double w = s.h.range / 4096;
        for (int ip = 0; ip < 5; ip++) {
            qlp_params par = {1, &ps[ip]};
            int64_t need = (int64_t)ceil(ps[ip] / 100 * N_VALUES); /* values inside */
            double lo, hi;
            /* symmetric: percentile of |x| */
            for (int i = 0; i < N_VALUES; i++)
                v[i] = fabs(x[i]);
            qsort(v, N_VALUES, sizeof *v, cmp_double);
            double ref = v[need - 1];
            assert_int_equal(p->act_range(&par, &s.q, &INT8_SYM, &lo, &hi, err, sizeof err),
                             QLP_OK);
            double t = thr(lo, hi), tol = w * (1 + 1e-9);
            if (!(t >= ref - 1e-12 && t <= ref + tol))
                fail_msg("%s p=%g: t=%.9g, sorted %.9g, bin %.3g", dnames[k], ps[ip], t, ref, w);
            assert_true(s.h.min >= 0 ? lo == 0 : lo == -hi);
            /* asymmetric: both tails of x */
            for (int i = 0; i < N_VALUES; i++)
                v[i] = x[i];
            qsort(v, N_VALUES, sizeof *v, cmp_double);
            double rhi = v[need - 1], rlo = v[N_VALUES - need];
            assert_int_equal(p->act_range(&par, &s.q, &INT8_ASYM, &lo, &hi, err, sizeof err),
                             QLP_OK);
            if (!(fabs(hi - rhi) <= tol && fabs(lo - rlo) <= tol))
                fail_msg("%s p=%g asym: [%.9g, %.9g], sorted [%.9g, %.9g], bin %.3g", dnames[k],
                         ps[ip], lo, hi, rlo, rhi, w);
        }
        free(x);
        ql_hist_clear(&s.h);
    }
    free(v);
    qlp_hist empty = {INFINITY, -INFINITY, 0, 0, 0, 0, NULL};
    double lo, hi, bad = 30;
    qlp_params par = {1, &bad};
    assert_int_equal(p->act_range(NULL, &empty, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_ERROR);
    assert_non_null(strstr(err, "no statistics"));
    float one = 1;
    stats s;
    make_stats(&s, &one, 1);
    assert_int_equal(p->act_range(&par, &s.q, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_ERROR);
    assert_non_null(strstr(err, "p = 30"));
    ql_hist_clear(&s.h);
}

/* ---------------------------------------------------------------------------
 * kl: the TensorRT procedure, bin by bin
 * ------------------------------------------------------------------------- */

static double ref_kl(const float *x, int64_t n, int levels)
{
    double *bins = malloc(2048 * sizeof *bins), w;
    int nb = ref_abs_hist(x, n, bins, &w);
    double absmax = ref_absmax(x, n);
    if (nb > 1)
        bins[0] = bins[1]; /* the zero spike is flattened, as NVIDIA's implementation does */
    if (nb == 0 || levels >= nb) {
        free(bins);
        return absmax;
    }
    double *P = malloc((size_t)nb * sizeof *P), *Q = malloc((size_t)nb * sizeof *Q);
    double best = INFINITY;
    int best_i = nb;
    for (int i = levels; i <= nb; i++) {
        double out = 0;
        for (int j = i; j < nb; j++)
            out += bins[j];
        for (int j = 0; j < i; j++)
            P[j] = bins[j];
        P[i - 1] += out;
        for (int g = 0; g < levels; g++) {
            int s = (int)((int64_t)g * i / levels), e = (int)((int64_t)(g + 1) * i / levels);
            double mass = 0;
            int nz = 0;
            for (int j = s; j < e; j++) {
                mass += bins[j];
                nz += bins[j] != 0;
            }
            for (int j = s; j < e; j++)
                Q[j] = bins[j] != 0 ? mass / nz : 0;
        }
        double sp = 0, sq = 0, kl = 0;
        for (int j = 0; j < i; j++) {
            sp += P[j];
            sq += Q[j];
        }
        for (int j = 0; j < i; j++) {
            if (P[j] == 0)
                continue;
            if (Q[j] == 0) {
                kl = INFINITY;
                break;
            }
            kl += P[j] / sp * log((P[j] / sp) / (Q[j] / sq));
        }
        if (kl < best) {
            best = kl;
            best_i = i;
        }
    }
    free(P);
    free(Q);
    free(bins);
    return fmin(best_i * w, absmax);
}

static void test_kl(void **state)
{
    const qlp_plugin *p = load("kl");
    char err[256] = "";
    for (int k = 0; k < D_COUNT; k++) {
        float *x = make_data(k, N_VALUES, 300 + k);
        stats s;
        make_stats(&s, x, N_VALUES);
        double bins[2048], w;
        ref_abs_hist(x, N_VALUES, bins, &w);
        for (int f = 0; f < 2; f++) {
            const qlp_format *fmt = f ? &UINT8_ASYM : &INT8_SYM;
            if (f && s.h.min < 0)
                continue;
            double lo, hi;
            struct timespec t0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            assert_int_equal(p->act_range(NULL, &s.q, fmt, &lo, &hi, err, sizeof err), QLP_OK);
            double ms = ms_since(&t0);
            double ref = ref_kl(x, N_VALUES, f ? 256 : 128), t = thr(lo, hi);
            printf("kl %-11s %s: t = %.6g, reference %.6g (bin %.3g), %.2f ms\n", dnames[k],
                   f ? "uint8" : "int8 ", t, ref, w, ms);
            if (!(fabs(t - ref) <= w * (1 + 1e-9)))
                fail_msg("kl %s: t = %.9g, reference %.9g, bin %.3g", dnames[k], t, ref, w);
        }
        free(x);
        ql_hist_clear(&s.h);
    }
    qlp_hist empty = {INFINITY, -INFINITY, 0, 0, 0, 0, NULL};
    double lo, hi;
    assert_int_equal(p->act_range(NULL, &empty, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_ERROR);
    assert_non_null(strstr(err, "no statistics"));
}

/* ---------------------------------------------------------------------------
 * mse: brute force over the raw values
 * ------------------------------------------------------------------------- */

/* sum (x - fq(x))^2 for the grid with scale s, zero point zp, [qmin, qmax]. */
static double raw_sse(const float *x, int64_t n, double s, double zp, double qmin, double qmax)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double q = nearbyint(x[i] / s) + zp;
        q = q < qmin ? qmin : q > qmax ? qmax : q;
        double d = x[i] - (q - zp) * s;
        e += d * d;
    }
    return e;
}

/* asymmetric grid of a range, widened to contain 0 */
static void asym_grid(double lo, double hi, double qmin, double qmax, double *s, double *zp)
{
    lo = fmin(lo, 0);
    hi = fmax(hi, 0);
    *s = (hi - lo) / (qmax - qmin);
    *zp = fmin(fmax(qmin - nearbyint(lo / *s), qmin), qmax);
}

#define MSE_VALUES 20000
#define MSE_EXCESS 1e-3

static void test_mse_act(void **state)
{
    const qlp_plugin *p = load("mse");
    char err[256] = "";
    double *bins = malloc(2048 * sizeof *bins);
    for (int k = 0; k < D_COUNT; k++) {
        float *x = make_data(k, MSE_VALUES, 400 + k);
        stats s;
        make_stats(&s, x, MSE_VALUES);
        double w, lo, hi;
        int nb = ref_abs_hist(x, MSE_VALUES, bins, &w);
        double amax = ref_absmax(x, MSE_VALUES);

        /* symmetric int8: t over the same candidates, the bin upper edges */
        double best = INFINITY, ref = amax;
        for (int c = 0; c < nb; c++) {
            double t = (c + 1) * w, e = raw_sse(x, MSE_VALUES, t / 127, 0, -127, 127);
            if (e < best) {
                best = e;
                ref = t;
            }
        }
        ref = fmin(ref, amax);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(p->act_range(NULL, &s.q, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_OK);
        double ms = ms_since(&t0), t = thr(lo, hi);
        double excess = best > 0 ? raw_sse(x, MSE_VALUES, t / 127, 0, -127, 127) / best - 1 : 0;
        printf("mse %-11s int8 : t = %.6g, brute force %.6g (bin %.3g), raw MSE +%.2e, %.2f ms\n",
               dnames[k], t, ref, w, excess, ms);
        if (!(fabs(t - ref) <= w * (1 + 1e-9))) {
            /* A few isolated values make the raw MSE depend on where each
             * lies inside its bin, which no histogram knows: accepted only
             * when the raw MSE is within MSE_EXCESS of the minimum. */
            printf("NOTE: mse %s: %.1f bins from the brute-force threshold\n", dnames[k],
                   fabs(t - ref) / w);
            if (!(excess <= MSE_EXCESS))
                fail_msg("mse %s: t = %.9g, brute force %.9g, bin %.3g, raw MSE +%.2e", dnames[k],
                         t, ref, w, excess);
        }

        if (s.h.min >= 0 && s.h.max > 0) {
            /* one-sided asymmetric uint8: [0, t], all 256 levels */
            best = INFINITY;
            for (int c = 0; c < nb; c++) {
                double tc = (c + 1) * w, e = raw_sse(x, MSE_VALUES, tc / 255, 0, 0, 255);
                if (e < best) {
                    best = e;
                    ref = tc;
                }
            }
            ref = fmin(ref, amax);
            assert_int_equal(p->act_range(NULL, &s.q, &UINT8_ASYM, &lo, &hi, err, sizeof err),
                             QLP_OK);
            printf("mse %-11s uint8: [%.6g, %.6g], brute force [0, %.6g]\n", dnames[k], lo, hi,
                   ref);
            if (!(lo == 0 && fabs(hi - ref) <= w * (1 + 1e-9)))
                fail_msg("mse %s uint8: [%.9g, %.9g], brute force %.9g, bin %.3g", dnames[k], lo,
                         hi, ref, w);
        } else if (s.h.min < 0 && s.h.max > 0) {
            /* asymmetric int8 with both signs: the documented pair grid */
            double rlo = 0, rhi = 0, mn = s.h.min, mx = s.h.max;
            best = INFINITY;
            for (int ia = 16; ia <= 64; ia++)
                for (int ib = 16; ib <= 64; ib++) {
                    double l = mn * ia / 64, u = mx * ib / 64, sc, zp;
                    asym_grid(l, u, -128, 127, &sc, &zp);
                    double e = raw_sse(x, MSE_VALUES, sc, zp, -128, 127);
                    if (e < best) {
                        best = e;
                        rlo = l;
                        rhi = u;
                    }
                }
            assert_int_equal(p->act_range(NULL, &s.q, &INT8_ASYM, &lo, &hi, err, sizeof err),
                             QLP_OK);
            double sc, zp;
            asym_grid(lo, hi, -128, 127, &sc, &zp);
            excess = raw_sse(x, MSE_VALUES, sc, zp, -128, 127) / best - 1;
            printf("mse %-11s int8 asym: [%.6g, %.6g], brute force [%.6g, %.6g], raw MSE +%.2e\n",
                   dnames[k], lo, hi, rlo, rhi, excess);
            if (!(fabs(lo - rlo) <= -mn / 64 * (1 + 1e-9) && fabs(hi - rhi) <= mx / 64 * (1 + 1e-9)))
                fail_msg("mse %s asym: [%.9g, %.9g] vs [%.9g, %.9g]", dnames[k], lo, hi, rlo, rhi);
        }
        free(x);
        ql_hist_clear(&s.h);
    }
    free(bins);
    qlp_hist empty = {INFINITY, -INFINITY, 0, 0, 0, 0, NULL};
    double lo, hi;
    assert_int_equal(p->act_range(NULL, &empty, &INT8_SYM, &lo, &hi, err, sizeof err), QLP_ERROR);
    assert_non_null(strstr(err, "no statistics"));
}

static void test_mse_weight(void **state)
{
    const qlp_plugin *p = load("mse");
    char err[256] = "";
    enum { C = 16, K = 300 };
    float *w = malloc(C * K * sizeof *w);
    tu_rng r = {77};
    for (int c = 0; c < C; c++)
        for (int j = 0; j < K; j++) {
            double g = sqrt(-2 * log(unif01(&r))) * cos(2 * M_PI * unif01(&r));
            w[c * K + j] = (float)(g * (0.01 + 0.02 * c) + (c % 3 == 0 ? 0.01 : 0));
        }
    w[3 * K + 5] = 0.9f; /* an outlier channel */
    for (int j = 0; j < K; j++)
        w[5 * K + j] = 0; /* an all-zero channel */
    double lo[C], hi[C];
    for (int f = 0; f < 2; f++) {
        const qlp_format *fmt = f ? &UINT8_ASYM : &INT8_SYM;
        assert_int_equal(p->weight_range(NULL, w, C, K, fmt, lo, hi, err, sizeof err), QLP_OK);
        for (int c = 0; c < C; c++) {
            const float *row = w + c * K;
            double mn = 0, mx = 0;
            for (int j = 0; j < K; j++) {
                mn = fmin(mn, row[j]);
                mx = fmax(mx, row[j]);
            }
            double a = fmax(-mn, mx), best = INFINITY, rlo = 0, rhi = 0;
            for (int i = 0; a > 0 && i <= 80; i++) {
                double fct = 1 - i / 100.0, e, l, u;
                if (!f) {
                    l = -a * fct;
                    u = a * fct;
                    e = raw_sse(row, K, u / 127, 0, -127, 127);
                } else {
                    double sc, zp;
                    l = mn * fct;
                    u = mx * fct;
                    asym_grid(l, u, 0, 255, &sc, &zp);
                    e = raw_sse(row, K, sc, zp, 0, 255);
                }
                if (e < best) {
                    best = e;
                    rlo = l;
                    rhi = u;
                }
            }
            if (!(fabs(lo[c] - rlo) <= 1e-12 * a && fabs(hi[c] - rhi) <= 1e-12 * a))
                fail_msg("mse weight %s channel %d: [%.9g, %.9g], brute force [%.9g, %.9g]",
                         f ? "uint8" : "int8", c, lo[c], hi[c], rlo, rhi);
        }
    }
    assert_int_equal(p->weight_range(NULL, w, 0, K, &INT8_SYM, lo, hi, err, sizeof err),
                     QLP_ERROR);
    assert_non_null(strstr(err, "no weights"));
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minmax),     cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_kl),         cmocka_unit_test(test_mse_act),
        cmocka_unit_test(test_mse_weight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
