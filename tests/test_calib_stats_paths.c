/* Unit tests of the fast ways histograms are filled: the block path of
 * ql_hist_add (4 and 8 lanes, speculative binning undone on growth, zero
 * groups skipped) against the one-value-at-a-time general path and a
 * reference binned in the test, on zero-heavy data, bin edges, growth in
 * the middle of a call, NaN and infinities, tiny ranges; and the statistics
 * pass, whose histograms must not depend on thread count or batch size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/calibrate.h"
#include "engine/evaluate.h"
#include "tests/hist_ref.h"
#include "tests/testutil.h"

#define NB QL_HIST_BINS

/* ---------------------------------------------------------------------------
 * Reference: bins from the definition, in double (divisions by powers of two
 * are exact)
 * ------------------------------------------------------------------------- */

static uint64_t *ref_counts(const float *x, int64_t n, double R)
{
    uint64_t *c = malloc(NB * sizeof *c);
    ref_hist(x, n, R, c);
    return c;
}

/* The final range: the smallest power of two covering every finite |x|
 * (0 when all are zero). */
static double ref_range(const float *x, int64_t n)
{
    double a = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]))
            a = fmax(a, fabs(x[i]));
    return a > 0 ? ref_pow2(a) : 0;
}

static void assert_hist_equal(const ql_hist *a, const ql_hist *b)
{
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->nan, b->nan);
    assert_int_equal(a->ninf, b->ninf);
    assert_int_equal(a->pinf, b->pinf);
    assert_int_equal(a->at_range, b->at_range);
    assert_true(a->range == b->range);
    assert_true(a->min == b->min || (a->min > a->max && b->min > b->max));
    assert_true(a->max == b->max || (a->min > a->max && b->min > b->max));
    assert_memory_equal(a->counts, b->counts, NB * sizeof *a->counts);
}

/* Adds x three ways (one call on the portable path, one call on the default
 * path, which is 8 lanes where AVX2 is there, and one value at a time, which
 * is the general path) and checks the three histograms are identical and
 * their counts are the reference's at the final range. */
static void check_paths(const float *x, int64_t n)
{
    ql_hist a, b, g;
    assert_int_equal(ql_hist_init(&a, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&b, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&g, NULL), QL_OK);
    ql_hist_set_portable(true);
    ql_hist_add(&a, x, n);
    ql_hist_set_portable(false);
    ql_hist_add(&b, x, n);
    for (int64_t i = 0; i < n; i++)
        ql_hist_add(&g, x + i, 1);
    assert_hist_equal(&a, &g);
    assert_hist_equal(&b, &g);
    double R = ref_range(x, n);
    assert_true(g.range == R);
    uint64_t *want = ref_counts(x, n, R);
    assert_memory_equal(g.counts, want, NB * sizeof *want);
    free(want);
    ql_hist_clear(&a);
    ql_hist_clear(&b);
    ql_hist_clear(&g);
}

static float gauss(tu_rng *r)
{
    double u1 = (tu_next(r) + 1.0) / 2147483649.0, u2 = tu_next(r) / 2147483648.0;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

/* ---------------------------------------------------------------------------
 * Histogram paths
 * ------------------------------------------------------------------------- */

/* ReLU-like data: runs of zeros of every length (so groups of 4 and 8 zeros
 * are skipped, partly filled groups are not), zeros of both signs, a length
 * that is not a multiple of the block or of the lanes. */
static void test_zero_heavy(void **state)
{
    (void)state;
    tu_rng r = {21};
    int64_t n = 100003, i = 0;
    float *x = malloc((size_t)n * sizeof *x);
    while (i < n) {
        int run = (int)(tu_next(&r) % 41);
        for (int k = 0; k < run && i < n; k++)
            x[i++] = tu_next(&r) % 3 ? 0.0f : -0.0f;
        int vals = (int)(tu_next(&r) % 13);
        for (int k = 0; k < vals && i < n; k++)
            x[i++] = fabsf(gauss(&r)) * 2.5f;
    }
    int64_t zeros = 0;
    for (i = 0; i < n; i++)
        zeros += x[i] == 0;
    assert_true(zeros > n / 3); /* the data is what the test is about */
    check_paths(x, n);

    /* nothing but zeros, then a value: the range comes from it alone */
    memset(x, 0, (size_t)n * sizeof *x);
    x[n - 1] = -3.0f;
    check_paths(x, n);
    free(x);
}

/* Every bin edge k * R / 4096 and the float just below it, both signs, R
 * itself (at_range, which moves inward when a later value grows R), and
 * subnormal values at a range above 4096, where x / width underflows in
 * float (negative ones belong one bin below zero). */
static void test_bin_edges(void **state)
{
    (void)state;
    int64_t n = 0, cap = 4 * NB + 64;
    float *x = malloc((size_t)cap * sizeof *x);
    const float R = 8.0f;
    x[n++] = R;
    for (int k = -NB / 2; k < NB / 2; k++) {
        float e = (float)k * (R / (NB / 2));
        x[n++] = e;
        if (k > -NB / 2) /* below -R would grow the range */
            x[n++] = nextafterf(e, -INFINITY);
    }
    x[n++] = R;
    x[n++] = -R;
    check_paths(x, n);
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    ql_hist_add(&h, x, n);
    assert_true(h.range == R);
    assert_int_equal(h.at_range, 2);
    assert_int_equal(h.counts[NB - 1], 2 + 1); /* R twice, and R - w */
    ql_hist_clear(&h);

    /* R = 16 grows in the same call, after the values at 8 */
    x[n++] = 9.0f;
    check_paths(x, n);

    /* tiny values at R = 8192 (1 / width = 1/2); enough of them for every
     * bulk path (the SSE path before blocks put -1e-45 in zero's bin) */
    n = 0;
    x[n++] = 8000.0f;
    const float tiny[] = {-1e-45f, 1e-45f, -1e-40f, -0.0f, 0.0f, -1e-38f, 1e-38f};
    for (int k = 0; k < 6000; k++)
        x[n++] = tiny[k % 7];
    check_paths(x, n);
    uint64_t *want = ref_counts(x, n, 8192);
    int64_t neg = 0;
    for (int64_t i = 0; i < n; i++)
        neg += x[i] < 0;
    assert_int_equal(want[NB / 2 - 1], neg); /* every negative one, the reference agrees */
    free(want);
    free(x);
}

/* Growth in the middle of a call and of a block: the magnitude doubles every
 * 700 values (not a multiple of any block or lane count), with values equal
 * to the range reached so far just before each growth. */
static void test_growth_within_call(void **state)
{
    (void)state;
    tu_rng r = {33};
    int64_t n = 20000;
    float *x = malloc((size_t)n * sizeof *x);
    float scale = 1e-3f;
    for (int64_t i = 0; i < n; i++) {
        if (i % 700 == 0 && i > 0)
            scale *= 2;
        x[i] = gauss(&r) * scale;
    }
    for (int64_t i = 699; i < n; i += 700)
        x[i] = (float)ref_range(x, i); /* exactly R at that point */
    x[15001] = 1e6f; /* a jump of many doublings at once */
    check_paths(x, n);
    free(x);
}

/* NaN and infinities inside blocks of otherwise ordinary values: counted as
 * the general path counts them, and the values around them binned. */
static void test_nan_inf_in_blocks(void **state)
{
    (void)state;
    tu_rng r = {45};
    int64_t n = 9000;
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss(&r);
    x[5] = NAN;
    x[1500] = INFINITY;
    x[1501] = -INFINITY;
    x[4000] = NAN;
    x[8999] = INFINITY;
    x[6001] = 7.5f; /* growth after the infinities */
    check_paths(x, n);
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    ql_hist_add(&h, x, n);
    assert_int_equal(h.nan, 2);
    assert_int_equal(h.pinf, 2);
    assert_int_equal(h.ninf, 1);
    assert_int_equal(h.count, n - 2);
    ql_hist_clear(&h);
    free(x);
}

/* Ranges so small that 1 / width is beyond float's exact range (the block
 * path steps aside), and growth out of them. */
static void test_tiny_range(void **state)
{
    (void)state;
    tu_rng r = {57};
    int64_t n = 5000;
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss(&r) * 1e-36f;
    check_paths(x, n);
    x[n - 10] = 1e-20f;
    check_paths(x, n);
    free(x);
}

/* Reset keeps the memory, empties the counts and presets the range. */
static void test_reset(void **state)
{
    (void)state;
    ql_hist h, g;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&g, NULL), QL_OK);
    float x[] = {1.0f, -3.0f, INFINITY, NAN, 0.5f};
    ql_hist_add(&h, x, 5);
    ql_hist_reset(&h, 2.0);
    assert_true(h.range == 2 && h.min > h.max);
    assert_int_equal(h.count + h.nan + h.ninf + h.pinf + h.at_range, 0);
    for (int j = 0; j < NB; j++)
        assert_int_equal(h.counts[j], 0);
    float y[] = {0.25f, -1.5f, 2.0f};
    ql_hist_add(&h, y, 3);
    ql_hist_add(&g, y, 3);
    assert_hist_equal(&h, &g); /* 2 is y's own range */
    ql_hist_clear(&h);
    ql_hist_clear(&g);
}

/* ---------------------------------------------------------------------------
 * The statistics pass: identical histograms whatever the threads and batch
 * ------------------------------------------------------------------------- */

static char *example(const char *file)
{
    static char buf[1024];
    const char *src = getenv("QLENS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/examples/fmnist/%s", src ? src : "..", file);
    return buf;
}

static void test_collect_deterministic(void **state)
{
    (void)state;
    ql_error err = {{0}};
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    ql_qnet *q = NULL;
    if (ql_model_load(example("fmnist_resnet.onnx"), &m, &err) ||
        ql_dataset_load(example("calib.npy"), 70, &d, &err) ||
        ql_dataset_conform(d, &m->graph->values[m->graph->inputs[0]], &err) ||
        ql_qnet_build(m->graph, &q, &err))
        fail_msg("setup: %s", err.msg);
    /* batch 32 makes the largest tensors big enough to be split over the
     * threads; 7 and 70 change every split and the padded last batch */
    const int threads[] = {1, 2, 3, 2};
    const int64_t batch[] = {32, 32, 7, 70};
    ql_calib_stats *s[4] = {0};
    for (int k = 0; k < 4; k++) {
        ql_calib_opts o = {.n_threads = threads[k], .batch = batch[k]};
        if (ql_calib_collect(m, q, d, &o, &s[k], &err) != QL_OK)
            fail_msg("collect: %s", err.msg);
    }
    int64_t most = 0;
    for (int h = 0; h < s[0]->n; h++)
        most = s[0]->hists[h].count > (uint64_t)most ? (int64_t)s[0]->hists[h].count : most;
    assert_true(most / (70 / 32 + 1) >= (1 << 16)); /* some tensors were split */
    for (int k = 1; k < 4; k++) {
        assert_int_equal(s[k]->n, s[0]->n);
        assert_int_equal(s[k]->samples, 70);
        for (int h = 0; h < s[0]->n; h++) {
            assert_string_equal(s[k]->names[h], s[0]->names[h]);
            assert_hist_equal(&s[k]->hists[h], &s[0]->hists[h]);
        }
    }
    for (int k = 0; k < 4; k++)
        ql_calib_stats_free(s[k]);
    ql_qnet_free(q);
    ql_dataset_free(d);
    ql_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_heavy),
        cmocka_unit_test(test_bin_edges),
        cmocka_unit_test(test_growth_within_call),
        cmocka_unit_test(test_nan_inf_in_blocks),
        cmocka_unit_test(test_tiny_range),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_collect_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
