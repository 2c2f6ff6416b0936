/* The cumulative curve (ql_sens_curve) on the shipped example: each step is
 * exactly the config a user gets by making the overrides so far (built
 * here the plain way and evaluated in full), the order is the table's
 * (worst first; all-but reversed), layers already at the target precision
 * are passed over, a curve to float ends at the float model itself, and
 * the thread count changes nothing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "calibrate.h"
#include "evaluate.h"
#include "onnx.h"
#include "plugin.h"
#include "qnet.h"
#include "qsim.h"
#include "sensitivity.h"
#include "testutil.h"
#include "sens_fixture.h"

/* The shared example (tests/sens_fixture.h) with a per-tensor config and
 * one layer already int16 (the curve to int16 passes it over). */
static int setup(void **state)
{
    if (sf_setup(state) != 0)
        return -1;
    sf_fixture *f = *state;
    ql_error err = {{0}};
    f->c->defaults.per_channel = false;
    ql_qlayer_cfg *lc = ql_qconfig_layer(f->c, "/layer2/c2/Conv");
    lc->s.mask |= QL_QS_PRECISION;
    lc->s.precision = QL_PREC_INT16;
    ql_calib_opts o = {.n_threads = 2, .batch = SF_BATCH};
    if (ql_calib_encode(f->m, f->q, f->c, f->stats, f->ps, f->calib, &o, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static ql_sens_table *table(sf_fixture *f, ql_sens_mode mode)
{
    ql_error err = {{0}};
    ql_sens_table *t = NULL;
    ql_sens_opts o = {.mode = mode, .n_threads = 2, .batch = SF_BATCH, .stats = f->stats,
                      .plugins = f->ps};
    if (ql_sensitivity(f->m, f->q, f->c, f->eval, f->labels, &o, &t, &err) != QL_OK)
        fail_msg("sensitivity: %s", err.msg);
    ql_sens_table_sort(t, QL_SM_COSINE);
    return t;
}

static ql_curve *curve(sf_fixture *f, const ql_sens_table *t, bool to_int16, int steps, int threads)
{
    ql_error err = {{0}};
    ql_curve *c = NULL;
    ql_sens_opts o = {.n_threads = threads, .batch = SF_BATCH};
    if (ql_sens_curve(f->m, f->q, f->c, t, f->stats, f->ps, f->eval, f->labels, to_int16, steps,
                      &o, &c, &err) != QL_OK)
        fail_msg("curve: %s", err.msg);
    return c;
}

/* The metrics of c with the given layers set to `to`, made the plain way:
 * overrides, encodings brought in line from c's, a full evaluation. */
static ql_metrics plain(sf_fixture *f, const int *layers, int n, ql_prec to)
{
    ql_error err = {{0}};
    ql_qconfig *d = ql_qconfig_clone(f->c);
    for (int i = 0; i < n; i++) {
        ql_qlayer_cfg *lc = ql_qconfig_layer(d, f->q->layers[layers[i]].name);
        lc->s.mask |= QL_QS_PRECISION;
        lc->s.precision = to;
    }
    ql_calib_opts co = {.n_threads = 1};
    if (ql_calib_update(f->m, f->q, d, f->stats, f->ps, f->eval, &co, f->c, -1, &err) != QL_OK)
        fail_msg("calib_update: %s", err.msg);
    ql_qsim *sim = NULL;
    assert_int_equal(ql_qsim_build(f->q, d, &sim, &err), QL_OK);
    ql_metrics m;
    ql_eval_opts eo = {.batch = 8, .n_threads = 1};
    assert_int_equal(ql_eval_compare(f->m, &sim->plan, f->eval, f->labels, SF_SAMPLES, &eo, &m,
                                     NULL, &err),
                     QL_OK);
    ql_qsim_free(sim);
    ql_qconfig_free(d);
    return m;
}

static void assert_same_metrics(const ql_metrics *a, const ql_metrics *b, const char *what,
                                int step)
{
    if (memcmp(a, b, sizeof *a) != 0)
        fail_msg("%s, step %d: cosine %.17g vs %.17g, noise %.17g vs %.17g", what, step,
                 ql_metrics_cosine(a), ql_metrics_cosine(b), a->noise, b->noise);
}

/* To float, ranked by the single table: every step is the plain config,
 * the order is the table's, and the last step is the float model. */
static void test_to_float(void **state)
{
    sf_fixture *f = *state;
    ql_sens_table *t = table(f, QL_SENS_SINGLE);
    ql_curve *c = curve(f, t, false, 0, 2);
    ql_curve *c1 = curve(f, t, false, 0, 1);
    assert_false(c->partial);
    assert_int_equal(c->to, QL_PREC_FLOAT);
    assert_int_equal(c->n, t->n); /* every quantized layer */
    int layers[64];
    for (int k = 0; k < c->n; k++) {
        assert_int_equal(c->steps[k].layer, t->rows[k].layer);
        assert_int_equal(c->steps[k].to, QL_PREC_FLOAT);
        assert_int_equal(c->steps[k].from, t->rows[k].precision);
        layers[k] = c->steps[k].layer;
        ql_metrics m = plain(f, layers, k + 1, QL_PREC_FLOAT);
        assert_same_metrics(&c->steps[k].m, &m, "to float", k + 1);
        assert_same_metrics(&c1->steps[k].m, &c->steps[k].m, "1 vs 2 threads", k + 1);
    }
    ql_metrics m0 = plain(f, layers, 0, QL_PREC_FLOAT);
    assert_same_metrics(&c->base, &m0, "the config as given", 0);
    /* everything float: no quantizer is left, the outputs are the float ones */
    const ql_metrics *last = &c->steps[c->n - 1].m;
    assert_true(last->noise == 0);
    assert_int_equal(last->agree, SF_SAMPLES);
    ql_curve_free(c);
    ql_curve_free(c1);
    ql_sens_table_free(t);
}

/* To int16, ranked by the all-but table (best row first), the int16 layer
 * passed over, at most 4 steps. */
static void test_to_int16_all_but(void **state)
{
    sf_fixture *f = *state;
    ql_sens_table *t = table(f, QL_SENS_ALL_BUT);
    ql_curve *c = curve(f, t, true, 4, 2);
    assert_int_equal(c->n, 4);
    assert_int_equal(c->ranked_mode, QL_SENS_ALL_BUT);
    int want[64], n = 0;
    for (int i = t->n - 1; i >= 0 && n < 4; i--)
        if (ql_qnet_layer_prec(f->q, f->c, t->rows[i].layer) == QL_PREC_INT8)
            want[n++] = t->rows[i].layer;
    int skipped = ql_qnet_find_layer(f->q, "/layer2/c2/Conv");
    for (int k = 0; k < c->n; k++) {
        assert_int_equal(c->steps[k].layer, want[k]);
        assert_int_not_equal(c->steps[k].layer, skipped);
        assert_int_equal(c->steps[k].from, QL_PREC_INT8);
        assert_int_equal(c->steps[k].to, QL_PREC_INT16);
        ql_metrics m = plain(f, want, k + 1, QL_PREC_INT16);
        assert_same_metrics(&c->steps[k].m, &m, "to int16", k + 1);
    }
    ql_curve_free(c);
    ql_sens_table_free(t);
}

static bool stop_after_two(void *user, int64_t done, int64_t total)
{
    (void)user;
    (void)total;
    return done < 2;
}

/* A cancel keeps the steps done; no statistics is an error. */
static void test_cancel_and_errors(void **state)
{
    sf_fixture *f = *state;
    ql_error err = {{0}};
    ql_sens_table *t = table(f, QL_SENS_SINGLE);
    ql_curve *c = NULL;
    ql_sens_opts o = {.n_threads = 2, .batch = SF_BATCH, .progress = stop_after_two};
    assert_int_equal(ql_sens_curve(f->m, f->q, f->c, t, f->stats, f->ps, f->eval, f->labels,
                                   false, 0, &o, &c, &err),
                     QL_OK);
    assert_true(c->partial);
    assert_int_equal(c->n, 2);
    assert_int_equal(c->n_total, t->n);
    /* the CSV lists every step, those not measured with done=0 */
    char path[] = "/tmp/qlens-curve-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(ql_curve_write_csv(c, path, &err), QL_OK);
    FILE *fp = fopen(path, "r");
    char line[512];
    int rows = 0, done = 0;
    while (fgets(line, sizeof line, fp)) {
        size_t len = strlen(line);
        rows++;
        done += len >= 3 && strcmp(line + len - 3, ",1\n") == 0;
    }
    fclose(fp);
    unlink(path);
    assert_int_equal(rows, 1 + 1 + t->n);
    assert_int_equal(done, 1 + 2); /* the config and the two steps */
    ql_curve_free(c);
    c = NULL;
    assert_int_equal(ql_sens_curve(f->m, f->q, f->c, t, NULL, f->ps, f->eval, f->labels, false,
                                   0, &o, &c, &err),
                     QL_ERR_ARG);
    assert_null(c);
    assert_non_null(strstr(err.msg, "statistics"));
    ql_sens_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_float),
        cmocka_unit_test(test_to_int16_all_but),
        cmocka_unit_test(test_cancel_and_errors),
    };
    return cmocka_run_group_tests(tests, setup, sf_teardown);
}
