/* Unit tests of the calibration statistics: re-binning is exact (compared
 * with a histogram binned directly at the final range by the test's own
 * code), merging, NaN and infinities, all-zero and constant data, the
 * statistics file (round trip, and corrupt or truncated files refused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/calib_stats.h"
#include "tests/hist_ref.h"
#include "tests/testutil.h"

#define NB QL_HIST_BINS

static char tmpdir[64];

/* ---------------------------------------------------------------------------
 * Data (the reference bins are in tests/hist_ref.h)
 * ------------------------------------------------------------------------- */

static float gauss(tu_rng *r)
{
    double u1 = (tu_next(r) + 1.0) / 2147483649.0, u2 = tu_next(r) / 2147483648.0;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

/* Adds x in chunks of irregular sizes. */
static void add_chunked(ql_hist *h, const float *x, int64_t n)
{
    int64_t at = 0, step = 1;
    while (at < n) {
        int64_t m = step < n - at ? step : n - at;
        ql_hist_add(h, x + at, m);
        at += m;
        step = step * 3 + 1;
    }
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

/* ---------------------------------------------------------------------------
 * Histogram
 * ------------------------------------------------------------------------- */

static void test_first_range_and_edges(void **state)
{
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    assert_true(h.min > h.max);
    assert_true(h.range == 0);
    float a[] = {0.3f};
    ql_hist_add(&h, a, 1);
    assert_true(h.range == 0.5);
    float b[] = {0.5f, -0.5f, 0.0f, -0.0f, -1e-30f, 1e-30f};
    ql_hist_add(&h, b, 6);
    assert_true(h.range == 0.5); /* |x| == R does not grow */
    assert_int_equal(ql_hist_bin(&h, 0.5), NB - 1);
    assert_int_equal(ql_hist_bin(&h, -0.5), 0);
    assert_int_equal(ql_hist_bin(&h, 0.0), NB / 2);
    assert_int_equal(ql_hist_bin(&h, -0.0), NB / 2);
    assert_int_equal(ql_hist_bin(&h, -1e-30), NB / 2 - 1);
    assert_int_equal(ql_hist_bin(&h, 1e-30), NB / 2);
    assert_int_equal(h.counts[NB - 1], 1);
    assert_int_equal(h.counts[0], 1);
    assert_int_equal(h.counts[NB / 2], 3);
    assert_int_equal(h.counts[NB / 2 - 1], 1);
    assert_int_equal(h.counts[ref_bin(0.5, 0.3f)], 1);
    ql_hist_clear(&h);

    /* a power of two is its own first range; 3 -> 4 */
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    float c[] = {-2.0f};
    ql_hist_add(&h, c, 1);
    assert_true(h.range == 2);
    float d[] = {3.0f};
    ql_hist_add(&h, d, 1);
    assert_true(h.range == 4);
    ql_hist_clear(&h);
}

/* Growth by one doubling maps old bin j to j/2 + 2048, counts kept, except
 * the values equal to the old R (in the top bin), which belong to the bin of
 * R at the new width. */
static void test_doubling_rule(void **state)
{
    tu_rng r = {7};
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    float x[5000];
    tu_fill(&r, x, 5000, -1.0f, 1.0f);
    x[0] = 1.0f;
    x[1] = -1.0f;
    ql_hist_add(&h, x, 5000);
    assert_true(h.range == 1);
    uint64_t *old = malloc(NB * sizeof *old), *want = calloc(NB, sizeof *want);
    memcpy(old, h.counts, NB * sizeof *old);
    assert_int_equal(h.at_range, 1);
    old[NB - 1]--; /* x[0] == R */
    for (int j = 0; j < NB; j++)
        want[j / 2 + 2048] += old[j];
    want[ref_bin(2, 1.0)]++;
    float big = 1.5f;
    ql_hist_add(&h, &big, 1);
    assert_true(h.range == 2);
    want[ref_bin(2, 1.5)]++;
    assert_int_equal(h.at_range, 0);
    assert_memory_equal(h.counts, want, NB * sizeof *want);
    free(old);
    free(want);
    ql_hist_clear(&h);
}

/* Data whose magnitude grows in steps (1 doubling, many doublings, more
 * than 13 at once): the streamed histogram equals one binned directly at
 * the final range. */
static void test_rebin_exact(void **state)
{
    tu_rng r = {11};
    int64_t n = 200000;
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        double scale = i < 1000 ? 1e-6 : i < 50000 ? 0.3 : i < 120000 ? 5 : 700;
        x[i] = (float)(gauss(&r) * scale);
    }
    /* values on bin edges of the final range, and a jump of > 2^13 */
    x[2000] = 1024.0f;
    x[2001] = -1024.0f + 0.25f;
    x[2002] = 0.125f;
    x[2003] = -0.125f;
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    add_chunked(&h, x, n);
    double amax = 0, mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        amax = fmax(amax, fabs(x[i]));
        mn = fmin(mn, x[i]);
        mx = fmax(mx, x[i]);
    }
    double R = fmax(ref_pow2(fabs(x[0])), ref_pow2(amax));
    assert_true(h.range == R);
    assert_true(h.min == mn && h.max == mx);
    assert_int_equal(h.count, n);
    uint64_t *want = malloc(NB * sizeof *want);
    ref_hist(x, n, R, want);
    assert_memory_equal(h.counts, want, NB * sizeof *want);
    for (int j = 0; j < NB; j += 97)
        assert_int_equal(ql_hist_bin(&h, ((double)j - NB / 2 + 0.5) * R / (NB / 2)), j);
    free(want);
    free(x);
    ql_hist_clear(&h);
}

static void test_nan_inf(void **state)
{
    float x[] = {NAN, 0.25f, INFINITY, -INFINITY, -INFINITY, NAN, -0.1f, 3.0f, 100.0f};
    int n = 9;
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    for (int i = 0; i < n; i++) /* one at a time: growth after the infinities */
        ql_hist_add(&h, &x[i], 1);
    assert_int_equal(h.nan, 2);
    assert_int_equal(h.count, 7);
    assert_int_equal(h.ninf, 2);
    assert_int_equal(h.pinf, 1);
    assert_true(h.min == -INFINITY && h.max == INFINITY);
    assert_true(h.range == 128);
    uint64_t *want = malloc(NB * sizeof *want);
    ref_hist(x, n, 128, want);
    assert_memory_equal(h.counts, want, NB * sizeof *want);
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[NB - 1], 1);

    /* infinities before any finite value: range stays 0 until one arrives */
    ql_hist g;
    assert_int_equal(ql_hist_init(&g, NULL), QL_OK);
    float y[] = {INFINITY, NAN, 0.0f};
    ql_hist_add(&g, y, 3);
    assert_true(g.range == 0);
    assert_int_equal(g.counts[NB - 1], 1);
    assert_int_equal(g.counts[NB / 2], 1);
    float z[] = {6.0f};
    ql_hist_add(&g, z, 1);
    assert_true(g.range == 8);
    assert_int_equal(g.counts[NB - 1], 1);
    assert_int_equal(g.counts[NB / 2], 1);
    assert_int_equal(g.counts[ref_bin(8, 6)], 1);
    free(want);
    ql_hist_clear(&h);
    ql_hist_clear(&g);
}

static void test_zero_and_constant(void **state)
{
    float z[1000] = {0};
    for (int i = 0; i < 1000; i += 2)
        z[i] = -0.0f;
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    ql_hist_add(&h, z, 1000);
    assert_true(h.range == 0);
    assert_true(h.min == 0 && h.max == 0);
    assert_int_equal(h.count, 1000);
    assert_int_equal(h.counts[NB / 2], 1000); /* documented: zeros in the centre bin */
    float one = -0.75f;
    ql_hist_add(&h, &one, 1);
    assert_true(h.range == 1);
    assert_int_equal(h.counts[NB / 2], 1000);
    assert_int_equal(h.counts[ref_bin(1, -0.75)], 1);
    ql_hist_clear(&h);

    float c[500];
    for (int i = 0; i < 500; i++)
        c[i] = 3.0f;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    ql_hist_add(&h, c, 500);
    assert_true(h.range == 4 && h.min == 3 && h.max == 3);
    assert_int_equal(h.counts[7168], 500); /* 3 / (4/4096) + 4096 */
    ql_hist_clear(&h);
}

/* Zeros seen while the range is still 0, then growth: the zeros stay in the
 * centre bin and every count survives (a regression: zeros were once taken
 * for values at the range edge and subtracted from the top bin on growth). */
static void test_zeros_before_growth(void **state)
{
    (void)state;
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    const float zeros[4] = {0, 0, -0.0f, 0};
    const float later[3] = {0.25f, 1.0f, 3.0f};
    ql_hist_add(&h, zeros, 4);
    ql_hist_add(&h, later, 3);
    ql_hist_add(&h, zeros, 4);
    uint64_t sum = 0;
    for (int j = 0; j < NB; j++)
        sum += h.counts[j];
    assert_int_equal(sum, 11);
    assert_int_equal(h.count, 11);
    assert_int_equal(h.counts[NB / 2], 8);
    assert_int_equal(h.counts[ql_hist_bin(&h, 3.0)], 1);
    ql_hist_clear(&h);
}

static void test_merge(void **state)
{
    tu_rng r = {3};
    int64_t n = 60000, k = 20000;
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(gauss(&r) * (i < k ? 0.01 : 40));
    x[5] = NAN;
    x[6] = -INFINITY;
    x[k + 7] = INFINITY;
    ql_hist all, a, b, e;
    assert_int_equal(ql_hist_init(&all, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&a, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&b, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&e, NULL), QL_OK);
    ql_hist_add(&all, x, n);
    ql_hist_add(&a, x, k);
    ql_hist_add(&b, x + k, n - k);
    assert_true(a.range < b.range);

    ql_hist a2, b2;
    assert_int_equal(ql_hist_init(&a2, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&b2, NULL), QL_OK);
    assert_int_equal(ql_hist_merge(&a2, &a, NULL), QL_OK); /* into empty */
    assert_int_equal(ql_hist_merge(&b2, &b, NULL), QL_OK);
    assert_hist_equal(&a2, &a);
    assert_int_equal(ql_hist_merge(&a2, &b, NULL), QL_OK); /* narrow dst grows */
    assert_hist_equal(&a2, &all);
    assert_int_equal(ql_hist_merge(&b2, &a, NULL), QL_OK); /* narrow src re-binned */
    assert_hist_equal(&b2, &all);
    assert_int_equal(ql_hist_merge(&b2, &e, NULL), QL_OK); /* empty src */
    assert_hist_equal(&b2, &all);
    free(x);
    ql_hist_clear(&all);
    ql_hist_clear(&a);
    ql_hist_clear(&b);
    ql_hist_clear(&e);
    ql_hist_clear(&a2);
    ql_hist_clear(&b2);
}

/* ---------------------------------------------------------------------------
 * Statistics file
 * ------------------------------------------------------------------------- */

static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static ql_calib_stats *sample_stats(void)
{
    ql_calib_stats *s = ql_calib_stats_new();
    assert_non_null(s);
    assert_int_equal(ql_calib_stats_add(s, "conv1.out"), 0);
    assert_int_equal(ql_calib_stats_add(s, "empty"), 1);
    assert_int_equal(ql_calib_stats_add(s, "with/inf"), 2);
    assert_int_equal(ql_calib_stats_add(s, "conv1.out"), 0); /* a name is added once */
    assert_int_equal(s->n, 3);
    tu_rng r = {5};
    float x[4000];
    for (int i = 0; i < 4000; i++)
        x[i] = gauss(&r) * 2;
    ql_hist_add(&s->hists[0], x, 4000);
    float y[] = {1.0f, -INFINITY, NAN, 0.5f};
    ql_hist_add(&s->hists[2], y, 4);
    s->samples = 64;
    s->model_fingerprint = 0x0123456789abcdefULL;
    return s;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*n + 1);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static void spit(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* FNV-1a 64, as the format documents, to re-seal edited files. */
static void reseal(unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n - 8; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    for (int i = 0; i < 8; i++)
        p[n - 8 + i] = (unsigned char)(h >> (8 * i));
}

static void test_save_load(void **state)
{
    ql_calib_stats *s = sample_stats(), *t = NULL;
    ql_error err = {{0}};
    const char *path = tpath("stats.bin");
    assert_int_equal(ql_calib_stats_save(s, path, &err), QL_OK);
    assert_int_equal(ql_calib_stats_load(path, &t, &err), QL_OK);
    assert_int_equal(t->n, 3);
    assert_int_equal(t->samples, 64);
    assert_true(t->model_fingerprint == 0x0123456789abcdefULL);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(t->names[i], s->names[i]);
        assert_hist_equal(&t->hists[i], &s->hists[i]);
    }
    assert_int_equal(ql_calib_stats_find(t, "with/inf"), 2);
    assert_int_equal(ql_calib_stats_find(t, "nope"), -1);
    /* the file starts with the magic, little-endian version 1 */
    size_t n;
    unsigned char *p = slurp(path, &n);
    assert_memory_equal(p, "QLSTATS1\x01\x00\x00\x00", 12);
    free(p);
    /* no temporary file left behind */
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)))
        files += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(files, 1);
    unlink(path);
    ql_calib_stats_free(s);
    ql_calib_stats_free(t);
}

static void expect_refused(const char *path, ql_status want, const char *text)
{
    ql_calib_stats *t = (ql_calib_stats *)1;
    ql_error err = {{0}};
    assert_int_equal(ql_calib_stats_load(path, &t, &err), want);
    assert_null(t);
    if (!strstr(err.msg, path) || !strstr(err.msg, text))
        fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", err.msg, path, text);
}

static void test_corrupt(void **state)
{
    ql_calib_stats *s = sample_stats();
    const char *good = tpath("good.bin"), *bad = tpath("bad.bin");
    assert_int_equal(ql_calib_stats_save(s, good, NULL), QL_OK);
    size_t n;
    unsigned char *p = slurp(good, &n);

    /* truncated at several places */
    size_t cuts[] = {0, 5, 8, 15, 40, n / 2, n - 9, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(bad, p, cuts[i]);
        expect_refused(bad, QL_ERR_FORMAT, cuts[i] < 8 ? "magic" : "");
    }
    /* trailing garbage */
    unsigned char *q = malloc(n + 16);
    memcpy(q, p, n);
    memset(q + n, 0, 16);
    spit(bad, q, n + 16);
    expect_refused(bad, QL_ERR_FORMAT, "");

    /* bad magic */
    memcpy(q, p, n);
    q[3] = 'X';
    spit(bad, q, n);
    expect_refused(bad, QL_ERR_FORMAT, "magic");

    /* a flipped bit anywhere after the magic */
    memcpy(q, p, n);
    q[n / 3] ^= 0x10;
    spit(bad, q, n);
    expect_refused(bad, QL_ERR_FORMAT, "checksum");

    /* re-sealed edits reach the structural checks: a bin count changed */
    memcpy(q, p, n);
    size_t first_rec = 8 + 16 + 16; /* magic, 4 x u32, samples, fingerprint */
    size_t counts_at = first_rec + 4 + strlen("conv1.out") + 3 * 8 + 4 * 8 + 8;
    q[counts_at] ^= 1;
    reseal(q, n);
    spit(bad, q, n);
    expect_refused(bad, QL_ERR_FORMAT, "do not add up");

    /* the range is not a power of two */
    memcpy(q, p, n);
    size_t range_at = first_rec + 4 + strlen("conv1.out") + 2 * 8;
    double bogus = 3.0;
    memcpy(q + range_at, &bogus, 8); /* little-endian host assumed by this edit */
    reseal(q, n);
    spit(bad, q, n);
    expect_refused(bad, QL_ERR_FORMAT, "power of two");

    /* an unknown version */
    memcpy(q, p, n);
    q[8] = 2;
    reseal(q, n);
    spit(bad, q, n);
    expect_refused(bad, QL_ERR_UNSUPPORTED, "version 2");

    /* missing file */
    expect_refused(tpath("missing.bin"), QL_ERR_IO, "");

    unlink(good);
    unlink(bad);
    free(p);
    free(q);
    ql_calib_stats_free(s);
}

/* Not asserted: the cost of ql_hist_add per value (the calibration pass adds
 * it to every activation). */
/* Deferred counting (ql_hist_defer) gives the same histogram as plain
 * adds, through growth, infinities, values at R and NaN, in calls of any
 * size, and a merge settles it. */
static void test_defer(void **state)
{
    (void)state;
    tu_rng r = {23};
    int64_t n = 120000;
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        double scale = i < 3000 ? 1e-3 : i < 40000 ? 0.5 : i < 90000 ? 3 : 40;
        x[i] = i % 7 == 0 ? 0.0f : (float)(gauss(&r) * scale);
    }
    x[10] = INFINITY;
    x[5000] = -INFINITY;
    x[6000] = NAN;
    x[50000] = 4.0f; /* R at that point: in the top bin until R grows */
    x[50001] = 4.0f;
    ql_hist plain, d, m;
    assert_int_equal(ql_hist_init(&plain, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&d, NULL), QL_OK);
    assert_int_equal(ql_hist_init(&m, NULL), QL_OK);
    assert_int_equal(ql_hist_defer(&d, NULL), QL_OK);
    assert_non_null(d.pend);
    add_chunked(&plain, x, n);
    add_chunked(&d, x, n);
    /* the extremes and count are up to date while counts wait */
    assert_int_equal(d.count, plain.count);
    assert_true(d.range == plain.range && d.min == plain.min && d.max == plain.max);
    /* a merge settles a deferred source */
    assert_int_equal(ql_hist_defer(&m, NULL), QL_OK);
    ql_hist_add(&m, x, 1000);
    assert_int_equal(ql_hist_merge(&m, &d, NULL), QL_OK);
    assert_null(d.pend);
    assert_null(m.pend);
    assert_hist_equal(&d, &plain);
    ql_hist ref;
    assert_int_equal(ql_hist_init(&ref, NULL), QL_OK);
    ql_hist_add(&ref, x, 1000);
    ql_hist_add(&ref, x, n);
    ql_hist_settle(&m); /* no-op once settled */
    assert_int_equal(m.count, ref.count);
    assert_true(m.range == ref.range);
    assert_memory_equal(m.counts, ref.counts, NB * sizeof *m.counts);
    free(x);
    ql_hist_clear(&plain);
    ql_hist_clear(&d);
    ql_hist_clear(&m);
    ql_hist_clear(&ref);
}

static void test_add_speed(void **state)
{
    int64_t n = 1 << 22;
    float *x = malloc((size_t)n * sizeof *x);
    tu_rng r = {9};
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss(&r);
    ql_hist h;
    assert_int_equal(ql_hist_init(&h, NULL), QL_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int rep = 0; rep < 4; rep++)
        ql_hist_add(&h, x, n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (4.0 * n);
    printf("ql_hist_add: %.2f ns per value (%lld values)\n", ns, (long long)(4 * n));
    assert_int_equal(h.count, 4 * n);
    free(x);
    ql_hist_clear(&h);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qlstats-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_range_and_edges),
        cmocka_unit_test(test_doubling_rule),
        cmocka_unit_test(test_rebin_exact),
        cmocka_unit_test(test_nan_inf),
        cmocka_unit_test(test_zero_and_constant),
        cmocka_unit_test(test_zeros_before_growth),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_defer),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_add_speed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
