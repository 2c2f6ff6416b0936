/* Models with more than one output: the output metrics cover every float
 * output (a sample's outputs flattened and joined in output order; top-1
 * on the first float output), in evaluation and in the sensitivity
 * analysis, incremental and brute force alike. The model is
 * tests/data/two_heads.onnx (made by tests/data/make_two_heads.py): a
 * trunk feeding a classification head ("scores") and a dense head
 * ("dense"), so a layer of the dense head changes only the second output. */
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
#include "metrics.h"
#include "onnx.h"
#include "plugin.h"
#include "qnet.h"
#include "qsim.h"
#include "sensitivity.h"
#include "testutil.h"

#define N_SAMPLES 24
#define BATCH 8

typedef struct fixture {
    ql_model *m;
    ql_dataset *d;
    ql_plugins *ps;
    ql_qnet *q;
    ql_qconfig *c;
    ql_calib_stats *stats;
    char path[64];
} fixture;

static const char *data_file(const char *file)
{
    static char buf[1024];
    const char *src = getenv("QLENS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/tests/data/%s", src ? src : "..", file);
    return buf;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    *state = f;
    if (!f)
        return -1;
    ql_error err = {{0}};
    /* seeded inputs, written as a batched .npy the dataset loader reads */
    int64_t dims[4] = {N_SAMPLES, 3, 12, 12};
    ql_tensor *x = ql_tensor_new(QL_F32, 4, dims);
    tu_rng r = {0x2b0d5eedu};
    tu_fill(&r, (float *)x->data, ql_tensor_numel(x), -2.0f, 2.0f);
    snprintf(f->path, sizeof f->path, "/tmp/qlens-two-heads-XXXXXX");
    int fd = mkstemp(f->path);
    if (fd < 0)
        return -1;
    close(fd);
    ql_status st = ql_npy_save(f->path, x, &err);
    ql_tensor_free(x);
    if (st || ql_model_load(data_file("two_heads.onnx"), &f->m, &err) ||
        ql_dataset_load(f->path, 0, &f->d, &err) ||
        ql_dataset_conform(f->d, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_plugins_scan(&f->ps, &err) || ql_qnet_build(f->m->graph, &f->q, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    /* per-tensor minmax: coarse enough that every layer shows an error */
    f->c = ql_qconfig_new();
    snprintf(f->c->defaults.act_algo, sizeof f->c->defaults.act_algo, "minmax");
    f->c->defaults.per_channel = false;
    ql_calib_opts o = {.n_threads = 2, .batch = BATCH};
    if (ql_calib_collect(f->m, f->q, f->d, &o, &f->stats, &err) ||
        ql_calib_encode(f->m, f->q, f->c, f->stats, f->ps, f->d, &o, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ql_calib_stats_free(f->stats);
    ql_qconfig_free(f->c);
    ql_qnet_free(f->q);
    ql_plugins_free(f->ps);
    ql_dataset_free(f->d);
    ql_model_free(f->m);
    if (f->path[0])
        unlink(f->path);
    free(f);
    return 0;
}

/* ---- the metrics themselves, against the definition written out -------------- */

typedef struct ref_metrics {
    double cos_sum, sig, noise, max_abs;
    int64_t agree, elems;
} ref_metrics;

/* Sample s of outputs a and b (per[j] values each, 0 = left out), joined. */
static void ref_add(ref_metrics *r, const float *const *a, const float *const *b,
                    const int64_t *per, int n_out, int64_t s, int score)
{
    double dot = 0, na = 0, nb = 0;
    for (int j = 0; j < n_out; j++)
        for (int64_t i = 0; i < per[j]; i++) {
            double x = a[j][s * per[j] + i], y = b[j][s * per[j] + i];
            dot += x * y;
            na += x * x;
            nb += y * y;
            r->noise += (x - y) * (x - y);
            r->max_abs = fmax(r->max_abs, fabs(x - y));
            r->elems++;
        }
    r->sig += na;
    r->cos_sum += na == 0 && nb == 0 ? 1.0 : dot / (sqrt(na) * sqrt(nb));
    int64_t pa = 0, pb = 0;
    for (int64_t i = 1; i < per[score]; i++) {
        pa = a[score][s * per[score] + i] > a[score][s * per[score] + pa] ? i : pa;
        pb = b[score][s * per[score] + i] > b[score][s * per[score] + pb] ? i : pb;
    }
    r->agree += pa == pb;
}

static ql_tensor *filled(int ndim, const int64_t *dims, tu_rng *r, float lo, float hi)
{
    ql_tensor *t = ql_tensor_new(QL_F32, ndim, dims);
    tu_fill(r, (float *)t->data, ql_tensor_numel(t), lo, hi);
    return t;
}

static void test_metrics_join_outputs(void **state)
{
    fixture *f = *state;
    const ql_graph *g = f->m->graph;
    assert_int_equal(g->n_outputs, 2);
    tu_rng r = {12345};
    int64_t d0[2] = {6, 5}, d1[4] = {6, 4, 3, 3};
    ql_tensor *ra = filled(2, d0, &r, -3, 3), *rb = filled(4, d1, &r, 0, 1);
    ql_tensor *qa = ql_tensor_clone(ra), *qb = ql_tensor_clone(rb);
    float *pa = qa->data, *pb = qb->data;
    for (int64_t i = 0; i < ql_tensor_numel(qa); i++)
        pa[i] += tu_uniform(&r, -0.4f, 0.4f);
    for (int64_t i = 0; i < ql_tensor_numel(qb); i++)
        pb[i] += tu_uniform(&r, -0.05f, 0.05f);
    memset(pa, 0, 5 * sizeof *pa); /* sample 0's scores all zero */
    const ql_tensor *ref[2] = {ra, rb}, *q[2] = {qa, qb};
    ql_metrics m = {0};
    ql_error err = {{0}};
    /* two calls (4 + 2 samples), as batches arrive */
    assert_int_equal(ql_metrics_add_outputs(&m, g, ref, q, 4, NULL, &err), QL_OK);
    ql_tensor ra2 = ql_tensor_rows(ra, 4, 2), rb2 = ql_tensor_rows(rb, 4, 2);
    ql_tensor qa2 = ql_tensor_rows(qa, 4, 2), qb2 = ql_tensor_rows(qb, 4, 2);
    const ql_tensor *ref2[2] = {&ra2, &rb2}, *q2[2] = {&qa2, &qb2};
    assert_int_equal(ql_metrics_add_outputs(&m, g, ref2, q2, 2, NULL, &err), QL_OK);

    ref_metrics w = {0};
    const float *a[2] = {ra->data, rb->data}, *b[2] = {qa->data, qb->data};
    int64_t per[2] = {5, 36};
    for (int64_t s = 0; s < 6; s++)
        ref_add(&w, a, b, per, 2, s, 0);
    assert_int_equal(m.n, 6);
    assert_int_equal(m.elems, w.elems);
    assert_int_equal(m.agree, w.agree);
    assert_true(fabs(m.cos_sum - w.cos_sum) < 1e-12);
    assert_true(fabs(m.sig - w.sig) < 1e-9 * w.sig);
    assert_true(fabs(m.noise - w.noise) < 1e-9 * w.noise);
    assert_true(m.max_abs == w.max_abs);

    /* an output of another type is left out; top-1 moves to the first
     * float output */
    int64_t di[1] = {6};
    ql_tensor *ia = ql_tensor_new(QL_I64, 1, di);
    const ql_tensor *ref3[2] = {ia, rb}, *q3[2] = {ia, qb};
    ql_metrics m3 = {0};
    assert_int_equal(ql_score_output(g, ref3), 1);
    assert_int_equal(ql_metrics_add_outputs(&m3, g, ref3, q3, 6, NULL, &err), QL_OK);
    ref_metrics w3 = {0};
    int64_t per3[2] = {0, 36};
    for (int64_t s = 0; s < 6; s++)
        ref_add(&w3, a, b, per3, 2, s, 1);
    assert_int_equal(m3.elems, 6 * 36);
    assert_int_equal(m3.agree, w3.agree);
    assert_true(fabs(m3.cos_sum - w3.cos_sum) < 1e-12);

    /* no float output, or one without the batch's rows: located errors */
    const ql_tensor *none[2] = {ia, ia};
    ql_metrics m4 = {0};
    assert_int_equal(ql_metrics_add_outputs(&m4, g, none, none, 6, NULL, &err), QL_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "no float output"));
    assert_int_equal(ql_metrics_add_outputs(&m4, g, ref, q, 7, NULL, &err), QL_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "'scores'"));
    ql_tensor_free(ia);
    ql_tensor_free(ra);
    ql_tensor_free(rb);
    ql_tensor_free(qa);
    ql_tensor_free(qb);
}

/* Top-1 applies only where the output it is taken on holds one vector of
 * class scores per sample: elsewhere agreement is NaN, and labels are
 * refused. */
static void test_top1_needs_class_scores(void **state)
{
    fixture *f = *state;
    const ql_graph *g = f->m->graph;
    static const struct {
        int ndim;
        int64_t dims[4];
        bool classes;
    } shapes[] = {{2, {6, 5}, true},     {4, {6, 5, 1, 1}, true}, {3, {6, 1, 7}, true},
                  {2, {6, 1}, false},    {1, {6}, false},         {4, {6, 4, 3, 3}, false},
                  {3, {6, 2, 2}, false}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        ql_tensor *t = ql_tensor_new(QL_F32, shapes[i].ndim, shapes[i].dims);
        if (ql_class_scores(t) != shapes[i].classes)
            fail_msg("shape %zu: class scores %d, expected %d", i, !shapes[i].classes,
                     shapes[i].classes);
        ql_tensor_free(t);
    }
    /* the dense tensor first: no top-1 */
    tu_rng r = {77};
    int64_t d0[2] = {6, 5}, d1[4] = {6, 4, 3, 3};
    ql_tensor *ra = filled(2, d0, &r, -3, 3), *rb = filled(4, d1, &r, 0, 1);
    const ql_tensor *ref[2] = {rb, ra}, *q[2] = {rb, ra};
    ql_metrics m = {0};
    ql_error err = {{0}};
    assert_int_equal(ql_metrics_add_outputs(&m, g, ref, q, 6, NULL, &err), QL_OK);
    assert_true(m.no_classes != 0);
    assert_true(isnan(ql_metrics_agree(&m)));
    assert_true(m.noise == 0 && ql_metrics_cosine(&m) == 1.0);
    int64_t labels[6] = {0, 1, 2, 3, 4, 0};
    ql_metrics m2 = {0};
    assert_int_equal(ql_metrics_add_outputs(&m2, g, ref, q, 6, labels, &err), QL_ERR_DATA);
    assert_non_null(strstr(err.msg, "labels need class scores"));
    /* class scores first: top-1 as usual */
    const ql_tensor *ref3[2] = {ra, rb};
    ql_metrics m3 = {0};
    assert_int_equal(ql_metrics_add_outputs(&m3, g, ref3, ref3, 6, labels, &err), QL_OK);
    assert_true(m3.no_classes == 0 && ql_metrics_agree(&m3) == 1.0);
    ql_tensor_free(ra);
    ql_tensor_free(rb);
}

/* ---- evaluation and sensitivity on the two-output model ---------------------- */

/* Both outputs of the model on every sample under plan (NULL: float), a
 * sample at a time as evaluation runs them (so the same bits). */
static void run_all(fixture *f, const ql_exec_quant *plan, ql_tensor **y)
{
    ql_error err = {{0}};
    ql_exec *x = NULL;
    ql_exec_opts xo = {.n_threads = 1};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    assert_int_equal(ql_exec_set_quant(x, plan, &err), QL_OK);
    for (int64_t s = 0; s < N_SAMPLES; s++) {
        ql_tensor in = ql_dataset_batch(f->d, s, 1);
        const ql_tensor *inp = &in;
        ql_tensor *o[2] = {0};
        if (ql_exec_run(x, &inp, o, &err) != QL_OK)
            fail_msg("reference run: %s", err.msg);
        for (int j = 0; j < 2; j++) {
            if (!y[j]) {
                int64_t dims[QL_MAX_DIMS];
                memcpy(dims, o[j]->dims, sizeof dims);
                dims[0] = N_SAMPLES;
                y[j] = ql_tensor_new(QL_F32, o[j]->ndim, dims);
            }
            size_t row = ql_tensor_nbytes(o[j]);
            memcpy((char *)y[j]->data + (size_t)s * row, o[j]->data, row);
            ql_tensor_free(o[j]);
        }
    }
    ql_exec_free(x);
}

/* The metrics of plan's outputs against float, from the definition. */
static ref_metrics ref_of(fixture *f, const ql_exec_quant *plan)
{
    ql_tensor *yf[2] = {0}, *yq[2] = {0};
    run_all(f, NULL, yf);
    run_all(f, plan, yq);
    const float *a[2] = {yf[0]->data, yf[1]->data}, *b[2] = {yq[0]->data, yq[1]->data};
    int64_t per[2] = {5, 4 * 12 * 12};
    ref_metrics w = {0};
    for (int64_t s = 0; s < N_SAMPLES; s++)
        ref_add(&w, a, b, per, 2, s, 0);
    for (int j = 0; j < 2; j++) {
        ql_tensor_free(yf[j]);
        ql_tensor_free(yq[j]);
    }
    return w;
}

static void assert_close_to(const ql_metrics *m, const ref_metrics *w, const char *what)
{
    assert_int_equal(m->n, N_SAMPLES);
    assert_int_equal(m->elems, w->elems);
    assert_int_equal(m->agree, w->agree);
    if (fabs(m->cos_sum - w->cos_sum) > 1e-9 || fabs(m->noise - w->noise) > 1e-6 * w->noise ||
        fabs(m->sig - w->sig) > 1e-9 * w->sig || fabs(m->max_abs - w->max_abs) > 1e-6)
        fail_msg("%s: cosine sum %.12g vs %.12g, noise %.12g vs %.12g, max %.9g vs %.9g", what,
                 m->cos_sum, w->cos_sum, m->noise, w->noise, m->max_abs, w->max_abs);
}

static void test_eval_compare_both_outputs(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    ql_qsim *sim = NULL;
    assert_int_equal(ql_qsim_build(f->q, f->c, &sim, &err), QL_OK);
    ql_metrics m, per[2];
    ql_eval_opts eo = {.batch = BATCH, .n_threads = 2, .per_output = per};
    assert_int_equal(ql_eval_compare(f->m, &sim->plan, f->d, NULL, 0, &eo, &m, NULL, &err),
                     QL_OK);
    ref_metrics w = ref_of(f, &sim->plan);
    assert_close_to(&m, &w, "eval");
    /* each output alone: the definition on that output only, and the two
     * add up to the joint sums */
    ql_tensor *yf[2] = {0}, *yq[2] = {0};
    run_all(f, NULL, yf);
    run_all(f, &sim->plan, yq);
    for (int j = 0; j < 2; j++) {
        ql_metrics one = {0};
        int64_t per_j = ql_tensor_numel(yf[j]) / N_SAMPLES;
        ql_metrics_add(&one, yf[j]->data, yq[j]->data, N_SAMPLES, per_j, NULL);
        assert_int_equal(per[j].n, N_SAMPLES);
        assert_int_equal(per[j].elems, N_SAMPLES * per_j);
        if (memcmp(&per[j], &one, sizeof one) != 0)
            fail_msg("output %d: noise %.17g vs %.17g", j, per[j].noise, one.noise);
        ql_tensor_free(yf[j]);
        ql_tensor_free(yq[j]);
    }
    assert_true(fabs(per[0].noise + per[1].noise - m.noise) <= 1e-9 * m.noise);
    assert_true(fmax(per[0].max_abs, per[1].max_abs) == m.max_abs);
    ql_qsim_free(sim);
}

static ql_sens_table *analyse(fixture *f, ql_sens_mode mode, int threads, bool brute)
{
    ql_error err = {{0}};
    ql_sens_table *t = NULL;
    ql_sens_opts o = {.mode = mode, .n_threads = threads, .batch = BATCH, .brute_force = brute};
    if (ql_sensitivity(f->m, f->q, f->c, f->d, NULL, &o, &t, &err) != QL_OK)
        fail_msg("sensitivity (%s): %s", ql_sens_mode_name(mode), err.msg);
    return t;
}

static int layer_index(const ql_qnet *q, const char *name)
{
    for (int l = 0; l < q->n_layers; l++)
        if (strcmp(q->layers[l].name, name) == 0)
            return l;
    fail_msg("no layer '%s'", name);
    return -1;
}

static void test_sensitivity_both_outputs(void **state)
{
    fixture *f = *state;
    int head_b = layer_index(f->q, "/head_b/Conv");
    for (int mode = 0; mode < QL_SENS_MODE_COUNT; mode++) {
        ql_sens_table *inc = analyse(f, (ql_sens_mode)mode, 2, false);
        ql_sens_table *one = analyse(f, (ql_sens_mode)mode, 1, false);
        ql_sens_table *bf = analyse(f, (ql_sens_mode)mode, 1, true);
        assert_int_equal(inc->n, f->q->n_layers);
        for (int i = 0; i < inc->n; i++) {
            const ql_sens_row *a = &inc->rows[i], *b = &bf->rows[i], *c = &one->rows[i];
            assert_int_equal(a->layer, b->layer);
            if (memcmp(&a->m, &b->m, sizeof a->m) != 0 || memcmp(&a->m, &c->m, sizeof a->m) != 0)
                fail_msg("%s: layer '%s': incremental, 1 thread and brute force differ",
                         ql_sens_mode_name((ql_sens_mode)mode), a->name);
            assert_int_equal(a->m.elems, (int64_t)N_SAMPLES * (5 + 4 * 12 * 12));
        }
        if (mode == QL_SENS_SINGLE) {
            /* the dense head's layer, quantized alone, changes only the
             * second output: metrics on the first alone would call it
             * harmless (cosine 1, no noise) */
            const ql_sens_row *r = NULL;
            for (int i = 0; i < inc->n; i++)
                if (inc->rows[i].layer == head_b)
                    r = &inc->rows[i];
            assert_non_null(r);
            assert_true(r->m.noise > 0);
            assert_true(ql_metrics_cosine(&r->m) < 1.0);
            assert_int_equal(r->m.agree, N_SAMPLES); /* the scores are untouched */
            /* and the row is the definition applied to a full run with
             * only that layer's quantizers (its weight, bias and output
             * sites; it does not read the graph input) */
            ql_qsim *full = NULL;
            ql_error err = {{0}};
            if (ql_qsim_build(f->q, f->c, &full, &err) != QL_OK)
                fail_msg("qsim: %s", err.msg);
            const ql_graph *g = f->m->graph;
            const ql_qlayer *L = &f->q->layers[head_b];
            const ql_encoding **act = calloc((size_t)g->n_values, sizeof *act);
            const ql_tensor **cst = calloc((size_t)g->n_values, sizeof *cst);
            for (int v = 0; v < g->n_values; v++)
                if (f->q->value_site[v] && f->q->value_layer[v] == head_b)
                    act[v] = full->act[v];
            cst[L->weight_value] = full->constants[L->weight_value];
            if (L->bias_value >= 0)
                cst[L->bias_value] = full->constants[L->bias_value];
            ql_exec_quant plan = {(const struct ql_encoding *const *)act, cst};
            ref_metrics w = ref_of(f, &plan);
            assert_close_to(&r->m, &w, "single /head_b/Conv");
            free(act);
            free(cst);
            ql_qsim_free(full);
        }
        if (mode == QL_SENS_ALL_BUT) {
            /* all-but is the config with the layer set to float */
            const ql_sens_row *r = NULL;
            for (int i = 0; i < inc->n; i++)
                if (inc->rows[i].layer == head_b)
                    r = &inc->rows[i];
            ql_qconfig *d = ql_qconfig_clone(f->c);
            ql_qlayer_cfg *o = ql_qconfig_layer(d, "/head_b/Conv");
            o->s.mask |= QL_QS_PRECISION;
            o->s.precision = QL_PREC_FLOAT;
            ql_qsim *sim = NULL;
            ql_error err = {{0}};
            if (ql_qsim_build(f->q, d, &sim, &err) != QL_OK)
                fail_msg("qsim: %s", err.msg);
            ref_metrics w = ref_of(f, &sim->plan);
            assert_close_to(&r->m, &w, "all-but /head_b/Conv");
            ql_qsim_free(sim);
            ql_qconfig_free(d);
        }
        ql_sens_table_free(inc);
        ql_sens_table_free(one);
        ql_sens_table_free(bf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_join_outputs),
        cmocka_unit_test(test_top1_needs_class_scores),
        cmocka_unit_test(test_eval_compare_both_outputs),
        cmocka_unit_test(test_sensitivity_both_outputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
