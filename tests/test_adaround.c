/* Unit tests for the adaround plugin, loaded from the build tree with
 * dlopen: output reconstruction against round-to-nearest on synthetic
 * dense and depthwise layers, the brute-force optimum on a tiny layer, the
 * rounding contract (grid, floor or floor + 1), determinism across runs and
 * thread counts, cancellation and errors. QLENS_ADAROUND_BENCH=1 also times
 * 10,000 default iterations of a 64x576 layer on 1 and 2 threads. */
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

#include "plugins/qlens-plugin.h"
#include "tests/testutil.h"

static const qlp_plugin *plug;
static void *handle;

static int load_plugin(void **state)
{
    (void)state;
    const char *dir = getenv("QLENS_BUILDDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/plugins/.libs/adaround.so", dir ? dir : ".");
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return -1;
    }
    qlp_entry_fn entry = (qlp_entry_fn)dlsym(handle, QLENS_PLUGIN_ENTRY_NAME);
    plug = entry ? entry() : NULL;
    return plug ? 0 : -1;
}

static int unload_plugin(void **state)
{
    (void)state;
    dlclose(handle);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Synthetic layers: columns from a pool [groups][M][k] (columns contiguous)
 * ------------------------------------------------------------------------- */

typedef struct tlayer {
    qlp_layer L;
    float *w, *bias;
    float *pool, *held; /* training and held-out columns, [G][M][k] */
    int64_t held_m;
    int fail_after;     /* get_columns fails after this many calls (< 0: never) */
    int calls;
} tlayer;

static int get_columns(void *user, const int64_t *idx, int64_t count, float *out)
{
    tlayer *t = user;
    if (t->fail_after >= 0 && t->calls >= t->fail_after)
        return -1;
    t->calls++;
    const int64_t M = t->L.columns, k = t->L.k;
    for (int64_t b = 0; b < count; b++)
        if (idx[b] < 0 || idx[b] >= M)
            return -1;
    /* 32 columns at a time: reads stay in cache, writes are runs */
    for (int64_t g = 0; g < t->L.groups; g++)
        for (int64_t b0 = 0; b0 < count; b0 += 32) {
            int64_t b1 = b0 + 32 < count ? b0 + 32 : count;
            for (int64_t j = 0; j < k; j++)
                for (int64_t b = b0; b < b1; b++)
                    out[(g * k + j) * count + b] = t->pool[(g * M + idx[b]) * k + j];
        }
    return 0;
}

static float gauss(tu_rng *r)
{
    float u1 = tu_uniform(r, 1e-7f, 1.0f), u2 = tu_uniform(r, 0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* Non-negative, correlated columns: relu of a few latent factors mixed by
 * A [G][k][F] plus a little noise, like post-ReLU feature maps. */
enum { NF = 4 };
static void fill_columns(tu_rng *r, const float *A, float *x, int64_t G, int64_t k, int64_t M)
{
    for (int64_t g = 0; g < G; g++)
        for (int64_t b = 0; b < M; b++) {
            float z[NF];
            for (int f = 0; f < NF; f++)
                z[f] = gauss(r);
            for (int64_t j = 0; j < k; j++) {
                float v = 0.3f + 0.25f * gauss(r);
                for (int f = 0; f < NF; f++)
                    v += A[(g * k + j) * NF + f] * z[f];
                x[(g * M + b) * k + j] = v > 0.0f ? v : 0.0f;
            }
        }
}

static tlayer *tlayer_new(uint64_t seed, int64_t C, int64_t k, int G, int64_t M, int relu)
{
    tu_rng r = {seed};
    tlayer *t = calloc(1, sizeof *t);
    t->w = malloc((size_t)(C * k) * sizeof *t->w);
    t->bias = malloc((size_t)C * sizeof *t->bias);
    for (int64_t i = 0; i < C * k; i++)
        t->w[i] = 0.2f * gauss(&r);
    for (int64_t c = 0; c < C; c++)
        t->bias[c] = 0.1f * gauss(&r);
    t->held_m = 2048;
    t->pool = malloc((size_t)(G * k * M) * sizeof *t->pool);
    t->held = malloc((size_t)(G * k * t->held_m) * sizeof *t->held);
    float *A = malloc((size_t)(G * k * NF) * sizeof *A);
    for (int64_t i = 0; i < G * k * NF; i++)
        A[i] = gauss(&r);
    fill_columns(&r, A, t->pool, G, k, M);
    fill_columns(&r, A, t->held, G, k, t->held_m); /* same distribution */
    free(A);
    t->fail_after = -1;
    t->L = (qlp_layer){.name = "synthetic", .channels = C, .k = k, .groups = G, .w = t->w,
                       .bias = t->bias, .act_lo = relu ? 0.0f : -INFINITY, .act_hi = INFINITY,
                       .columns = M, .get_columns = get_columns, .user = t, .seed = seed * 7 + 1};
    return t;
}

static void tlayer_free(tlayer *t)
{
    free(t->w);
    free(t->bias);
    free(t->pool);
    free(t->held);
    free(t);
}

/* Per-channel symmetric scales from min/max (signed, restricted range) or
 * asymmetric (unsigned, zero point in range). */
static qlp_format make_format(int bits, int symmetric)
{
    qlp_format f = {.bits = bits, .is_signed = symmetric, .symmetric = symmetric};
    f.qmin = symmetric ? -((1 << (bits - 1)) - 1) : 0;
    f.qmax = symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    return f;
}

static void make_encoding(const tlayer *t, const qlp_format *f, float *scale, int32_t *zp)
{
    for (int64_t c = 0; c < t->L.channels; c++) {
        double lo = 0, hi = 0;
        for (int64_t j = 0; j < t->L.k; j++) {
            double v = t->w[c * t->L.k + j];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (f->symmetric) {
            double a = fmax(-lo, hi);
            scale[c] = (float)(a / (double)f->qmax);
            zp[c] = 0;
        } else {
            scale[c] = (float)((hi - lo) / (double)(f->qmax - f->qmin));
            zp[c] = (int32_t)(f->qmin - lrint(lo / scale[c]));
        }
    }
}

static void round_nearest(const tlayer *t, const qlp_format *f, const float *scale,
                          const int32_t *zp, int32_t *q)
{
    for (int64_t c = 0; c < t->L.channels; c++)
        for (int64_t j = 0; j < t->L.k; j++) {
            int64_t i = c * t->L.k + j;
            long v = lrint((double)t->w[i] / scale[c]) + zp[c];
            q[i] = (int32_t)(v < f->qmin ? f->qmin : (v > f->qmax ? f->qmax : v));
        }
}

/* Mean over columns and channels of (f(Wq x + b) - f(W x + b))^2, in double. */
static double output_mse(const tlayer *t, const float *X, int64_t M, const float *scale,
                         const int32_t *zp, const int32_t *q)
{
    const int64_t C = t->L.channels, k = t->L.k, cpg = C / t->L.groups;
    double lo = t->L.act_lo, hi = t->L.act_hi, s = 0;
    for (int64_t c = 0; c < C; c++)
        for (int64_t b = 0; b < M; b++) {
            const float *x = X + ((c / cpg) * M + b) * k;
            double yf = t->bias[c], yq = t->bias[c];
            for (int64_t j = 0; j < k; j++) {
                yf += (double)t->w[c * k + j] * x[j];
                yq += (double)scale[c] * (q[c * k + j] - zp[c]) * x[j];
            }
            double a = fmin(fmax(yf, lo), hi), e = fmin(fmax(yq, lo), hi);
            s += (a - e) * (a - e);
        }
    return s / (double)(C * M);
}

/* Every q on the grid and, unless saturated, floor(w/s) or floor(w/s) + 1. */
static void check_contract(const tlayer *t, const qlp_format *f, const float *scale,
                           const int32_t *zp, const int32_t *q)
{
    for (int64_t c = 0; c < t->L.channels; c++)
        for (int64_t j = 0; j < t->L.k; j++) {
            int64_t i = c * t->L.k + j;
            if (q[i] < f->qmin || q[i] > f->qmax)
                fail_msg("weight %lld: q %d outside [%lld, %lld]", (long long)i, q[i],
                         (long long)f->qmin, (long long)f->qmax);
            if (q[i] == f->qmin || q[i] == f->qmax)
                continue;
            int64_t fl = (int64_t)floor((double)t->w[i] / scale[c]) + zp[c];
            if (q[i] != fl && q[i] != fl + 1)
                fail_msg("weight %lld: q %d, floor %lld", (long long)i, q[i], (long long)fl);
        }
}

/* ---------------------------------------------------------------------------
 * Running the plugin
 * ------------------------------------------------------------------------- */

typedef struct prog {
    int calls, cancel_at;
    int64_t last, total;
} prog;

static int on_progress(void *user, int64_t done, int64_t total)
{
    prog *p = user;
    assert_true(done > p->last && done <= total);
    p->last = done;
    p->total = total;
    return ++p->calls >= p->cancel_at && p->cancel_at > 0;
}

/* Parameters: schema defaults with overrides by key (NULL-terminated). */
static void params_with(double *v, qlp_params *p, ...)
{
    for (int i = 0; i < plug->n_params; i++)
        v[i] = plug->params[i].dflt;
    va_list ap;
    va_start(ap, p);
    const char *key;
    while ((key = va_arg(ap, const char *))) {
        double val = va_arg(ap, double);
        int i = 0;
        while (i < plug->n_params && strcmp(plug->params[i].key, key))
            i++;
        assert_true(i < plug->n_params);
        v[i] = val;
    }
    va_end(ap);
    p->n = plug->n_params;
    p->v = v;
}

static qlp_result run(const tlayer *t, const qlp_params *p, const qlp_format *f,
                      const float *scale, const int32_t *zp, int32_t *q, int threads, prog *pr,
                      char *err)
{
    prog dummy = {0};
    qlp_host host = {on_progress, pr ? pr : &dummy, threads};
    err[0] = 0;
    return plug->weight_round(p, &t->L, f, scale, zp, q, &host, err, 256);
}

/* Runs adaround and nearest on a layer and returns the MSE ratio (training
 * columns); prints both ratios. */
static double compare(tlayer *t, int bits, int symmetric, const qlp_params *p, int threads)
{
    const int64_t n = t->L.channels * t->L.k;
    qlp_format f = make_format(bits, symmetric);
    float *scale = malloc((size_t)t->L.channels * sizeof *scale);
    int32_t *zp = malloc((size_t)t->L.channels * sizeof *zp);
    int32_t *qa = malloc((size_t)n * sizeof *qa), *qn = malloc((size_t)n * sizeof *qn);
    char err[256];
    make_encoding(t, &f, scale, zp);
    round_nearest(t, &f, scale, zp, qn);
    prog pr = {0};
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    assert_int_equal(run(t, p, &f, scale, zp, qa, threads, &pr, err), QLP_OK);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(pr.last, pr.total);
    check_contract(t, &f, scale, zp, qa);
    int64_t changed = 0;
    for (int64_t i = 0; i < n; i++)
        changed += qa[i] != qn[i];
    double mn = output_mse(t, t->pool, t->L.columns, scale, zp, qn);
    double ma = output_mse(t, t->pool, t->L.columns, scale, zp, qa);
    double hn = output_mse(t, t->held, t->held_m, scale, zp, qn);
    double ha = output_mse(t, t->held, t->held_m, scale, zp, qa);
    printf("  %lldx%lld groups %d, %d-bit %s%s, %d thread(s): MSE nearest %.4g adaround %.4g "
           "ratio %.3f (held-out %.3f), %lld of %lld changed, %.2f s (CPU %.2f s)\n",
           (long long)t->L.channels, (long long)t->L.k, t->L.groups, bits,
           symmetric ? "symmetric" : "asymmetric", isinf(t->L.act_lo) ? "" : " relu", threads, mn,
           ma, ma / mn, ha / hn, (long long)changed, (long long)n,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec));
    free(scale);
    free(zp);
    free(qa);
    free(qn);
    return ma / mn;
}

/* ---------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------- */

static void test_schema_and_range(void **state)
{
    (void)state;
    assert_int_equal(plug->abi_version, QLP_ABI_VERSION);
    assert_string_equal(plug->name, "adaround");
    assert_int_equal(plug->kinds, QLP_KIND_WEIGHT);
    assert_non_null(plug->weight_round);
    const char *keys[] = {"iterations", "batch", "reg", "beta_start", "beta_end", "warmup", "lr"};
    const double dflt[] = {10000, 256, 0.01, 20, 2, 0.2, 1e-3};
    assert_int_equal(plug->n_params, 7);
    for (int i = 0; i < 7; i++) {
        assert_string_equal(plug->params[i].key, keys[i]);
        assert_true(plug->params[i].dflt == dflt[i]);
    }
    float w[6] = {0.5f, -1.5f, 2.0f, 3.0f, 3.0f, 3.0f};
    double lo[2], hi[2];
    qlp_format f = make_format(8, 1);
    char err[64];
    assert_int_equal(plug->weight_range(NULL, w, 2, 3, &f, lo, hi, err, sizeof err), QLP_OK);
    assert_true(lo[0] == -1.5 && hi[0] == 2.0 && lo[1] == 3.0 && hi[1] == 3.0);
}

static void test_dense(void **state)
{
    (void)state;
    double v[16];
    qlp_params p;
    params_with(v, &p, "iterations", 4000.0, NULL);
    tlayer *t = tlayer_new(11, 32, 72, 1, 4096, 0);
    /* a correct implementation measures about 0.4-0.6 here */
    assert_true(compare(t, 4, 1, &p, 2) <= 0.8);
    assert_true(compare(t, 3, 1, &p, 2) <= 0.8);
    tlayer_free(t);
    t = tlayer_new(12, 32, 72, 1, 4096, 1);
    assert_true(compare(t, 4, 1, &p, 2) <= 0.8);
    assert_true(compare(t, 4, 0, &p, 2) <= 0.8); /* zero points away from 0 */
    tlayer_free(t);
}

static void test_depthwise(void **state)
{
    (void)state;
    double v[16];
    qlp_params p;
    params_with(v, &p, "iterations", 4000.0, NULL);
    tlayer *t = tlayer_new(21, 16, 9, 16, 3000, 0);
    assert_true(compare(t, 4, 1, &p, 2) <= 0.8);
    assert_true(compare(t, 3, 1, &p, 2) <= 0.8);
    tlayer_free(t);
    t = tlayer_new(22, 16, 9, 16, 200, 1); /* fewer columns than a batch: full batch */
    assert_true(compare(t, 4, 1, &p, 1) <= 0.8);
    tlayer_free(t);
}

/* Tiny layers: compare with the best of all 2^K roundings of one channel
 * (each weight floor or floor + 1), found by enumeration. AdaRound solves a
 * relaxation and promises no optimum; the stated bar is that it closes at
 * least half of the gap between nearest rounding and the optimum. Identity
 * activation: behind a ReLU a one-channel layer often keeps nearest rounding
 * (reg 0.01 outweighs its tiny reconstruction loss) or ends worse. */
static void test_brute_force(void **state)
{
    (void)state;
    enum { K = 10 };
    double v[16];
    qlp_params p;
    params_with(v, &p, "iterations", 4000.0, NULL);
    for (uint64_t seed = 32; seed < 44; seed += 2) {
        tlayer *t = tlayer_new(seed, 1, K, 1, 1024, 0);
        qlp_format f = make_format(4, 1);
        float scale[1];
        int32_t zp[1], qa[K], qn[K];
        char err[256];
        make_encoding(t, &f, scale, zp);
        round_nearest(t, &f, scale, zp, qn);
        assert_int_equal(run(t, &p, &f, scale, zp, qa, 1, NULL, err), QLP_OK);
        double best = INFINITY;
        for (int mask = 0; mask < 1 << K; mask++) {
            int32_t qm[K];
            for (int j = 0; j < K; j++) {
                int64_t fl = (int64_t)floor((double)t->w[j] / scale[0]) + ((mask >> j) & 1);
                qm[j] = (int32_t)(fl < f.qmin ? f.qmin : (fl > f.qmax ? f.qmax : fl));
            }
            double e = output_mse(t, t->pool, t->L.columns, scale, zp, qm);
            best = e < best ? e : best;
        }
        double ea = output_mse(t, t->pool, t->L.columns, scale, zp, qa);
        double en = output_mse(t, t->pool, t->L.columns, scale, zp, qn);
        printf("  1x%d: MSE nearest %.4g adaround %.4g optimum %.4g (gap closed %.0f%%)\n", K, en,
               ea, best, en > best ? 100 * (en - ea) / (en - best) : 100);
        assert_true(ea - best <= 0.5 * (en - best));
        tlayer_free(t);
    }
}

static void test_deterministic(void **state)
{
    (void)state;
    double v[16];
    qlp_params p;
    params_with(v, &p, "iterations", 600.0, "lr", 1e-2, "batch", 64.0, NULL);
    /* 40 channels: blocks of 16, 16, 8; groups of 20 */
    tlayer *t = tlayer_new(41, 40, 50, 2, 1000, 1);
    qlp_format f = make_format(4, 1);
    const int64_t n = 40 * 50;
    float scale[40];
    int32_t zp[40];
    int32_t *q[4];
    char err[256];
    make_encoding(t, &f, scale, zp);
    const int threads[4] = {1, 1, 2, 3};
    for (int r = 0; r < 4; r++) {
        q[r] = malloc((size_t)n * sizeof *q[r]);
        assert_int_equal(run(t, &p, &f, scale, zp, q[r], threads[r], NULL, err), QLP_OK);
        assert_memory_equal(q[r], q[0], (size_t)n * sizeof *q[0]);
    }
    /* another seed draws other batches and so, almost surely, differs */
    t->L.seed++;
    assert_int_equal(run(t, &p, &f, scale, zp, q[1], 2, NULL, err), QLP_OK);
    assert_memory_not_equal(q[1], q[0], (size_t)n * sizeof *q[0]);
    for (int r = 0; r < 4; r++)
        free(q[r]);
    tlayer_free(t);

    /* depthwise too */
    t = tlayer_new(42, 48, 9, 48, 1000, 0);
    int32_t qd[2][48 * 9];
    float sd[48];
    int32_t zd[48];
    make_encoding(t, &f, sd, zd);
    for (int r = 0; r < 2; r++)
        assert_int_equal(run(t, &p, &f, sd, zd, qd[r], r + 1, NULL, err), QLP_OK);
    assert_memory_equal(qd[0], qd[1], sizeof qd[0]);
    tlayer_free(t);
}

static void test_cancel_and_errors(void **state)
{
    (void)state;
    double v[16];
    qlp_params p;
    params_with(v, &p, NULL);
    tlayer *t = tlayer_new(51, 32, 72, 1, 4096, 0);
    qlp_format f = make_format(4, 1);
    float scale[32];
    int32_t zp[32], q[32 * 72];
    char err[256];
    make_encoding(t, &f, scale, zp);
    for (int threads = 1; threads <= 2; threads++) {
        prog pr = {.cancel_at = 1};
        assert_int_equal(run(t, &p, &f, scale, zp, q, threads, &pr, err), QLP_CANCELLED);
        assert_int_equal(pr.calls, 1); /* stopped at the first report */
        assert_int_equal(pr.last, 100);
        assert_int_equal(pr.total, 10000);
    }
    /* the cached inputs fail on the third batch */
    t->fail_after = 3;
    assert_int_equal(run(t, &p, &f, scale, zp, q, 2, NULL, err), QLP_ERROR);
    assert_non_null(strstr(err, "synthetic"));
    t->fail_after = -1;
    /* non-positive scale */
    scale[3] = 0.0f;
    assert_int_equal(run(t, &p, &f, scale, zp, q, 1, NULL, err), QLP_ERROR);
    assert_non_null(strstr(err, "scale"));
    tlayer_free(t);
}

/* QLENS_ADAROUND_BENCH=N: N iterations (1: the default 10,000) at otherwise
 * default settings on a 64x576 layer (the largest of examples/fmnist) with
 * 1 and 2 threads. */
static void test_bench(void **state)
{
    (void)state;
    const char *e = getenv("QLENS_ADAROUND_BENCH");
    if (!e)
        skip();
    double v[16], iters = atof(e) > 1 ? atof(e) : 10000;
    qlp_params p;
    params_with(v, &p, "iterations", iters, NULL);
    tlayer *t = tlayer_new(61, 64, 576, 1, 8192, 1);
    for (int threads = 1; threads <= 2; threads++)
        compare(t, 4, 1, &p, threads);
    tlayer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_and_range),
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_depthwise),
        cmocka_unit_test(test_brute_force),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_cancel_and_errors),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, load_plugin, unload_plugin);
}
