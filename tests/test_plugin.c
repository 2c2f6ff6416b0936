/* Unit tests of the plugin loader: the example plugin (examples/plugin/sigma.c,
 * built by `make check`) loads and computes what an independent reference
 * computes; modules with a wrong ABI, no entry symbol or a bad schema are
 * refused with exact reasons; algorithm specs parse strictly with exact
 * messages and format canonically; the search path and shadowing order. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/plugin.h"
#include "tests/testutil.h"

static char tmpdir[64];

static const char *module(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    const char *b = getenv("QLENS_BUILDDIR");
    snprintf(p, 1024, "%s/tests/plugins/.libs/%s.so", b ? b : ".", name);
    return p;
}

static const char *tpath(const char *name)
{
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void write_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    assert_int_equal(fclose(f), 0);
}

/* ---------------------------------------------------------------------------
 * Loading the example plugin
 * ------------------------------------------------------------------------- */

/* Mean and standard deviation from bin centres, computed as E[x^2] - mean^2
 * (the plugin sums squared deviations: a different route to the same). */
static void ref_mean_sd(const qlp_hist *h, double *mean, double *sd)
{
    double w = (h->hi - h->lo) / h->nbins, s1 = 0, s2 = 0, n = 0;
    for (int i = 0; i < h->nbins; i++) {
        double c = h->lo + w * (2 * i + 1) / 2;
        n += (double)h->counts[i];
        s1 += (double)h->counts[i] * c;
        s2 += (double)h->counts[i] * c * c;
    }
    *mean = s1 / n;
    *sd = sqrt(s2 / n - *mean * *mean);
}

static void test_load_example(void **state)
{
    ql_plugins *ps = ql_plugins_new();
    ql_error err = {{0}};
    assert_non_null(ps);
    assert_int_equal(ql_plugins_add_file(ps, module("sigma"), &err), QL_OK);
    assert_int_equal(ps->n, 1);
    const ql_plugin_info *it = &ps->items[0];
    assert_non_null(it->p);
    assert_non_null(it->handle);
    assert_null(it->refused);
    assert_string_equal(it->path, module("sigma"));
    const qlp_plugin *p = it->p;
    assert_string_equal(p->name, "sigma");
    assert_int_equal(p->kinds, QLP_KIND_ACTIVATION);
    assert_int_equal(p->n_params, 1);
    assert_string_equal(p->params[0].key, "k");
    assert_true(p->params[0].dflt == 4 && p->params[0].min == 0.5 && p->params[0].max == 20);
    assert_ptr_equal(ql_plugins_find(ps, "sigma", QLP_KIND_ACTIVATION), p);
    assert_null(ql_plugins_find(ps, "sigma", QLP_KIND_WEIGHT));
    assert_null(ql_plugins_find(ps, "sigm", QLP_KIND_ACTIVATION));

    /* 10 bins over [-5, 5): a skewed bump, observed extremes -3.7 and 4.2 */
    const uint64_t counts[10] = {0, 1, 3, 7, 12, 9, 5, 2, 1, 1};
    qlp_hist h = {.min = -3.7, .max = 4.2, .count = 41, .nbins = 10, .lo = -5, .hi = 5,
                  .counts = counts};
    qlp_format fmt = {.bits = 8, .is_signed = 1, .symmetric = 0, .qmin = -128, .qmax = 127};
    double mean, sd, lo, hi, k;
    char msg[128] = "";
    ref_mean_sd(&h, &mean, &sd);
    k = 1.5;
    qlp_params prm = {1, &k};
    assert_int_equal(p->act_range(&prm, &h, &fmt, &lo, &hi, msg, sizeof msg), QLP_OK);
    /* tolerance: the two summation orders differ by rounding only */
    assert_true(fabs(lo - (mean - 1.5 * sd)) < 1e-12 && fabs(hi - (mean + 1.5 * sd)) < 1e-12);
    k = 20; /* wider than observed: clipped to [min, max] */
    assert_int_equal(p->act_range(&prm, &h, &fmt, &lo, &hi, msg, sizeof msg), QLP_OK);
    assert_true(lo == -3.7 && hi == 4.2);
    h.count = 0;
    assert_int_equal(p->act_range(&prm, &h, &fmt, &lo, &hi, msg, sizeof msg), QLP_ERROR);
    assert_string_equal(msg, "no values observed");
    ql_plugins_free(ps);
}

/* ---------------------------------------------------------------------------
 * Refusals
 * ------------------------------------------------------------------------- */

/* Adds path to a new set; expects it refused with exactly `why`. */
static void expect_refused(const char *path, const char *why)
{
    ql_plugins *ps = ql_plugins_new();
    ql_error err = {{0}};
    char want[2048];
    assert_int_equal(ql_plugins_add_file(ps, path, &err), QL_ERR_UNSUPPORTED);
    snprintf(want, sizeof want, "%s: %s", path, why);
    assert_string_equal(err.msg, want);
    assert_int_equal(ps->n, 1);
    assert_null(ps->items[0].p);
    assert_null(ps->items[0].handle);
    assert_string_equal(ps->items[0].refused, why);
    assert_string_equal(ps->items[0].path, path);
    ql_plugins_free(ps);
}

static void test_refuse_bad_abi(void **state)
{
    expect_refused(module("bad_abi"), "ABI version 7, qlens needs 1");
}

static void test_refuse_no_entry(void **state)
{
    expect_refused(module("no_entry"), "no qlens_plugin_entry symbol (not a qlens plugin)");
}

static void test_refuse_not_a_module(void **state)
{
    const char *path = tpath("text.so");
    ql_plugins *ps = ql_plugins_new();
    ql_error err = {{0}};
    write_text(path, "this is not an ELF file\n");
    assert_int_equal(ql_plugins_add_file(ps, path, &err), QL_ERR_UNSUPPORTED);
    assert_null(ps->items[0].p);
    /* the reason comes from dlerror(), minus the file name it repeats */
    assert_non_null(strstr(ps->items[0].refused, "cannot load: "));
    assert_null(strstr(ps->items[0].refused, path));
    assert_int_equal(strncmp(err.msg, path, strlen(path)), 0);
    ql_plugins_free(ps);
    expect_refused(tpath("missing.so"),
                   "cannot load: cannot open shared object file: No such file or directory");
}

static void test_refuse_schema(void **state)
{
    static const struct {
        const char *tcase, *why;
    } cases[] = {
        {"null", "qlens_plugin_entry returned NULL"},
        {"name", "invalid name 'Multi' (want 1 to 63 of [a-z0-9_-])"},
        {"noname", "invalid name '(null)' (want 1 to 63 of [a-z0-9_-])"},
        {"nokind", "x declares no kind"},
        {"badkind", "x declares unknown kind bits 0x4"},
        {"noact", "x is an activation algorithm without act_range"},
        {"noweight", "x is a weight algorithm without weight_range"},
        {"toomany", "x declares 17 parameters, at most 16 are allowed"},
        {"noschema", "x declares 2 parameters but no schema"},
        {"dup", "duplicate parameter key 'a'"},
        {"dflt", "parameter 'k': default 30 not in [0.5, 20]"},
        {"minmax", "parameter 'k': min 2 > max 1"},
        {"type", "parameter 'k': invalid type 3"},
        {"key", "parameter 1: invalid key 'Bad Key' (want 1 to 31 of [a-z0-9_])"},
        {"int", "parameter 'n': integer parameter with non-integer default or range"},
        {"nan", "parameter 'x': default, min and max must be finite"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("QLP_TEST_CASE", cases[i].tcase, 1);
        expect_refused(module("cases"), cases[i].why);
    }
    unsetenv("QLP_TEST_CASE");
}

/* ---------------------------------------------------------------------------
 * Algorithm specs
 * ------------------------------------------------------------------------- */

/* sigma (activation, k), multi (both; alpha, n:int, eps), bare (weight, none) */
static ql_plugins *spec_set(void)
{
    ql_plugins *ps = ql_plugins_new();
    ql_error err = {{0}};
    assert_int_equal(ql_plugins_add_file(ps, module("sigma"), &err), QL_OK);
    assert_int_equal(ql_plugins_add_file(ps, module("cases"), &err), QL_OK);
    setenv("QLP_TEST_CASE", "bare", 1);
    assert_int_equal(ql_plugins_add_file(ps, module("cases"), &err), QL_OK);
    unsetenv("QLP_TEST_CASE");
    assert_int_equal(ps->n, 3);
    return ps;
}

static void expect_parse(const ql_plugins *ps, const char *spec, qlp_kind kind, const char *name,
                         int n, const double *v)
{
    ql_algo a;
    ql_error err = {{0}};
    if (ql_algo_parse(ps, spec, kind, &a, &err) != QL_OK)
        fail_msg("'%s': %s", spec, err.msg);
    assert_string_equal(a.p->name, name);
    assert_int_equal(a.n, n);
    for (int i = 0; i < n; i++)
        if (a.v[i] != v[i])
            fail_msg("'%s': v[%d] = %.17g, want %.17g", spec, i, a.v[i], v[i]);
}

static void test_parse_good(void **state)
{
    ql_plugins *ps = spec_set();
    expect_parse(ps, "sigma", QLP_KIND_ACTIVATION, "sigma", 1, (double[]){4});
    expect_parse(ps, "sigma:k=3", QLP_KIND_ACTIVATION, "sigma", 1, (double[]){3});
    expect_parse(ps, "sigma:k=0.5", QLP_KIND_ACTIVATION, "sigma", 1, (double[]){0.5});
    expect_parse(ps, "sigma:k=2e1", QLP_KIND_ACTIVATION, "sigma", 1, (double[]){20});
    expect_parse(ps, "multi", QLP_KIND_ACTIVATION, "multi", 3, (double[]){0.5, 8, 1e-6});
    expect_parse(ps, "multi:n=16,alpha=0.25", QLP_KIND_ACTIVATION, "multi", 3,
                 (double[]){0.25, 16, 1e-6});
    expect_parse(ps, "multi:eps=1e-3,n=+3", QLP_KIND_WEIGHT, "multi", 3,
                 (double[]){0.5, 3, 1e-3});
    expect_parse(ps, "multi:n=16.0", QLP_KIND_WEIGHT, "multi", 3, (double[]){0.5, 16, 1e-6});
    expect_parse(ps, "bare", QLP_KIND_WEIGHT, "bare", 0, NULL);
    ql_plugins_free(ps);
}

static void expect_bad(const ql_plugins *ps, const char *spec, qlp_kind kind, const char *msg)
{
    ql_algo a, sentinel;
    ql_error err = {{0}};
    memset(&a, 0x5a, sizeof a);
    memcpy(&sentinel, &a, sizeof a);
    assert_int_equal(ql_algo_parse(ps, spec, kind, &a, &err), QL_ERR_ARG);
    assert_string_equal(err.msg, msg);
    assert_memory_equal(&a, &sentinel, sizeof a); /* untouched on failure */
}

static void test_parse_bad(void **state)
{
    ql_plugins *ps = spec_set();
    const qlp_kind A = QLP_KIND_ACTIVATION, W = QLP_KIND_WEIGHT;
    expect_bad(ps, "", A, "algorithm '': no name");
    expect_bad(ps, ":k=3", A, "algorithm ':k=3': no name");
    expect_bad(ps, "nope", A, "algorithm 'nope': no activation algorithm 'nope' (available: multi, sigma)");
    expect_bad(ps, "Sigma:k=3", A, "algorithm 'Sigma:k=3': no activation algorithm 'Sigma' (available: multi, sigma)");
    expect_bad(ps, "nope", W, "algorithm 'nope': no weight algorithm 'nope' (available: bare, multi)");
    expect_bad(NULL, "sigma", A, "algorithm 'sigma': no activation algorithm 'sigma' (available: none)");
    expect_bad(ps, "sigma", W, "algorithm 'sigma': sigma is not a weight algorithm (weight algorithms: bare, multi)");
    expect_bad(ps, "bare", A, "algorithm 'bare': bare is not an activation algorithm (activation algorithms: multi, sigma)");
    expect_bad(ps, "sigma:", A, "algorithm 'sigma:': nothing after ':'");
    expect_bad(ps, "sigma:k", A, "algorithm 'sigma:k': expected key=value, got 'k'");
    expect_bad(ps, "sigma:k=", A, "algorithm 'sigma:k=': no value for k");
    expect_bad(ps, "sigma:=3", A, "algorithm 'sigma:=3': no key in '=3'");
    expect_bad(ps, "sigma:k=3,", A, "algorithm 'sigma:k=3,': empty parameter (stray ',')");
    expect_bad(ps, "multi:alpha=0.1,,n=2", A, "algorithm 'multi:alpha=0.1,,n=2': empty parameter (stray ',')");
    expect_bad(ps, "sigma:j=3", A, "algorithm 'sigma:j=3': sigma has no parameter 'j' (parameters: k)");
    expect_bad(ps, "multi:k=1", A, "algorithm 'multi:k=1': multi has no parameter 'k' (parameters: alpha, n, eps)");
    expect_bad(ps, "sigma: k=3", A, "algorithm 'sigma: k=3': sigma has no parameter ' k' (parameters: k)");
    expect_bad(ps, "bare:x=1", W, "algorithm 'bare:x=1': bare takes no parameters");
    expect_bad(ps, "sigma:k=abc", A, "algorithm 'sigma:k=abc': k='abc' is not a number");
    expect_bad(ps, "sigma:k=inf", A, "algorithm 'sigma:k=inf': k='inf' is not a number");
    expect_bad(ps, "sigma:k=nan", A, "algorithm 'sigma:k=nan': k='nan' is not a number");
    expect_bad(ps, "sigma:k=0x3", A, "algorithm 'sigma:k=0x3': k='0x3' is not a number");
    expect_bad(ps, "sigma:k= 3", A, "algorithm 'sigma:k= 3': k=' 3' is not a number");
    expect_bad(ps, "sigma:k=3 ", A, "algorithm 'sigma:k=3 ': k='3 ' is not a number");
    expect_bad(ps, "sigma:k=1e999", A, "algorithm 'sigma:k=1e999': k='1e999' is not a number");
    expect_bad(ps, "sigma:k=3:4", A, "algorithm 'sigma:k=3:4': k='3:4' is not a number");
    expect_bad(ps, "sigma:k=25", A, "algorithm 'sigma:k=25': k=25 is out of range [0.5, 20]");
    expect_bad(ps, "sigma:k=0.49", A, "algorithm 'sigma:k=0.49': k=0.49 is out of range [0.5, 20]");
    expect_bad(ps, "sigma:k=3,k=4", A, "algorithm 'sigma:k=3,k=4': k given twice");
    expect_bad(ps, "multi:n=2.5", W, "algorithm 'multi:n=2.5': n=2.5 is not an integer");
    expect_bad(ps, "multi:n=0", W, "algorithm 'multi:n=0': n=0 is out of range [1, 64]");
    ql_plugins_free(ps);
}

static void expect_format(const ql_plugins *ps, const char *spec, const char *want)
{
    ql_algo a, b;
    ql_error err = {{0}};
    char buf[256];
    assert_int_equal(ql_algo_parse(ps, spec, QLP_KIND_ACTIVATION, &a, &err), QL_OK);
    ql_algo_format(&a, buf, sizeof buf);
    assert_string_equal(buf, want);
    assert_int_equal(ql_algo_parse(ps, buf, QLP_KIND_ACTIVATION, &b, &err), QL_OK);
    assert_ptr_equal(a.p, b.p);
    assert_memory_equal(a.v, b.v, sizeof a.v[0] * (size_t)a.n);
}

static void test_format(void **state)
{
    ql_plugins *ps = spec_set();
    expect_format(ps, "sigma", "sigma");
    expect_format(ps, "sigma:k=4", "sigma");
    expect_format(ps, "sigma:k=3.0", "sigma:k=3");
    expect_format(ps, "sigma:k=3.1", "sigma:k=3.1");
    expect_format(ps, "multi:n=16,alpha=0.25", "multi:alpha=0.25,n=16");
    expect_format(ps, "multi:eps=1e-3", "multi:eps=0.001");
    expect_format(ps, "multi:eps=1e-7", "multi:eps=1e-07");
    expect_format(ps, "multi:alpha=0.1", "multi:alpha=0.1");
    expect_format(ps, "multi:alpha=-0", "multi:alpha=0");
    expect_format(ps, "multi:alpha=0.5,n=8,eps=0.000001", "multi");
    /* shortest round trip, as Python's repr: 16 and 17 digits */
    expect_format(ps, "multi:eps=0.33333333333333331", "multi:eps=0.3333333333333333");
    expect_format(ps, "multi:eps=0.30000000000000004", "multi:eps=0.30000000000000004");
    expect_format(ps, "multi:n=30", "multi:n=30");
    expect_format(ps, "multi:n=64,eps=1", "multi:n=64,eps=1");

    /* any double in range survives format -> parse exactly, and formats the same */
    ql_algo a, b;
    ql_error err = {{0}};
    char s1[256], s2[256];
    tu_rng r = {42};
    assert_int_equal(ql_algo_parse(ps, "multi", QLP_KIND_ACTIVATION, &a, &err), QL_OK);
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = ((uint64_t)tu_next(&r) << 32 | tu_next(&r)) >> 11;
        a.v[0] = (double)bits / 9007199254740992.0;                  /* [0, 1) full precision */
        a.v[2] = ldexp(1.0 + (double)(tu_next(&r) % 1000) / 1000, -(int)(tu_next(&r) % 40));
        a.v[2] = a.v[2] > 1 ? 1 : a.v[2];
        ql_algo_format(&a, s1, sizeof s1);
        if (ql_algo_parse(ps, s1, QLP_KIND_ACTIVATION, &b, &err) != QL_OK)
            fail_msg("'%s': %s", s1, err.msg);
        if (b.v[0] != a.v[0] || b.v[2] != a.v[2])
            fail_msg("'%s' reads back as %.17g, %.17g", s1, b.v[0], b.v[2]);
        ql_algo_format(&b, s2, sizeof s2);
        assert_string_equal(s1, s2);
    }
    /* cut to the buffer, always terminated */
    assert_int_equal(ql_algo_parse(ps, "multi:alpha=0.25", QLP_KIND_ACTIVATION, &a, &err), QL_OK);
    ql_algo_format(&a, s1, 8);
    assert_string_equal(s1, "multi:a");
    ql_plugins_free(ps);
}

/* ---------------------------------------------------------------------------
 * Search path and shadowing
 * ------------------------------------------------------------------------- */

static void assert_same_dir(const char *a, const char *b)
{
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    assert_non_null(ra);
    assert_non_null(rb);
    assert_string_equal(ra, rb);
    free(ra);
    free(rb);
}

static void test_scan_order(void **state)
{
    char a[256], b[256], missing[256], env[1100], build[1024];
    snprintf(a, sizeof a, "%s", tpath("a"));
    snprintf(b, sizeof b, "%s", tpath("b"));
    snprintf(missing, sizeof missing, "%s", tpath("missing"));
    snprintf(build, sizeof build, "%s/tests/plugins/.libs", getenv("QLENS_BUILDDIR"));
    assert_int_equal(mkdir(a, 0755), 0);
    assert_int_equal(mkdir(b, 0755), 0);
    copy_file(module("sigma"), tpath("a/z_sigma.so"));
    copy_file(module("sigma"), tpath("a/a_sigma.so"));
    copy_file(module("sigma"), tpath("a/sigma.so.bak")); /* not *.so: ignored */
    write_text(tpath("a/notes.txt"), "ignored\n");
    assert_int_equal(mkdir(tpath("a/dir.so"), 0755), 0); /* not a regular file */
    copy_file(module("sigma"), tpath("b/sigma.so"));
    /* empty entries and a repeated folder are skipped */
    snprintf(env, sizeof env, "%s::%s:%s:%s", a, b, a, missing);
    setenv("QLENS_PLUGIN_PATH", env, 1);
    unsetenv("QLP_TEST_CASE");

    ql_plugins *ps = NULL;
    ql_error err = {{0}};
    assert_int_equal(ql_plugins_scan(&ps, &err), QL_OK);
    assert_int_equal(ps->n_dirs, 5);
    assert_string_equal(ps->dirs[0], a);
    assert_string_equal(ps->dirs[1], b);
    assert_string_equal(ps->dirs[2], missing);
    assert_same_dir(ps->dirs[3], build); /* next to this program: tests/plugins/.libs */
    assert_string_equal(ps->dirs[4], QL_PLUGIN_DIR);

    /* What came from the temp folders and the build tree, in list order (an
     * installed qlens may add modules from QL_PLUGIN_DIR; they are skipped). */
    char shadow[512];
    snprintf(shadow, sizeof shadow, "shadowed by %s", tpath("a/a_sigma.so"));
    const struct {
        const char *path, *name, *refused;
    } want[] = {
        {tpath("a/a_sigma.so"), "sigma", NULL},
        {"tests/plugins/.libs/cases.so", "multi", NULL},
        {tpath("a/z_sigma.so"), NULL, shadow},
        {tpath("b/sigma.so"), NULL, shadow},
        {"tests/plugins/.libs/bad_abi.so", NULL, "ABI version 7, qlens needs 1"},
        {"tests/plugins/.libs/no_entry.so", NULL, "no qlens_plugin_entry symbol (not a qlens plugin)"},
        {"tests/plugins/.libs/sigma.so", NULL, shadow},
    };
    size_t k = 0, nwant = sizeof want / sizeof want[0];
    bool seen_refused = false;
    for (int i = 0; i < ps->n; i++) {
        const ql_plugin_info *it = &ps->items[i];
        if (!it->p)
            seen_refused = true;
        else
            assert_false(seen_refused); /* usable ones first */
        bool ours = strncmp(it->path, tmpdir, strlen(tmpdir)) == 0 ||
                    strstr(it->path, "tests/plugins/.libs/") != NULL;
        if (!ours)
            continue;
        assert_true(k < nwant);
        const char *wp = want[k].path;
        size_t lp = strlen(it->path), lw = strlen(wp);
        if (lp < lw || strcmp(it->path + lp - lw, wp) != 0)
            fail_msg("item %d: %s, want %s", i, it->path, wp);
        if (want[k].name) {
            assert_non_null(it->p);
            assert_string_equal(it->p->name, want[k].name);
        } else {
            assert_null(it->p);
            assert_string_equal(it->refused, want[k].refused);
        }
        k++;
    }
    assert_int_equal(k, nwant);
    const qlp_plugin *s = ql_plugins_find(ps, "sigma", QLP_KIND_ACTIVATION);
    assert_non_null(s);
    assert_ptr_equal(s, ps->items[0].p);
    assert_non_null(ql_plugins_find(ps, "multi", QLP_KIND_WEIGHT));
    ql_plugins_free(ps);

    /* unset: the build tree comes first */
    unsetenv("QLENS_PLUGIN_PATH");
    assert_int_equal(ql_plugins_scan(&ps, &err), QL_OK);
    assert_int_equal(ps->n_dirs, 2);
    assert_same_dir(ps->dirs[0], build);
    const qlp_plugin *s2 = ql_plugins_find(ps, "sigma", QLP_KIND_ACTIVATION);
    assert_non_null(s2);
    for (int i = 0; i < ps->n; i++)
        if (ps->items[i].p == s2)
            assert_non_null(strstr(ps->items[i].path, "tests/plugins/.libs/sigma.so"));
    ql_plugins_free(ps);
}

/* ---------------------------------------------------------------------------
 * Set-up
 * ------------------------------------------------------------------------- */

static int rm_tree(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qlens-plugin-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) { return rm_tree(tmpdir) == 0 ? 0 : -1; }

int main(void)
{
    if (!getenv("QLENS_BUILDDIR")) {
        fprintf(stderr, "QLENS_BUILDDIR is not set (run through make check)\n");
        return 1;
    }
    unsetenv("QLP_TEST_CASE");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_example),
        cmocka_unit_test(test_refuse_bad_abi),
        cmocka_unit_test(test_refuse_no_entry),
        cmocka_unit_test(test_refuse_not_a_module),
        cmocka_unit_test(test_refuse_schema),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_scan_order),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
