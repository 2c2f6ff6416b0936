/* Unit tests of the calibration pipeline on the shipped example model:
 * quantizer placement, the statistics pass, encodings, the fake-quant plan
 * (every quantized activation lies on its grid), determinism across thread
 * counts, and the config round trip (save, load, run: identical outputs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/calibrate.h"
#include "engine/evaluate.h"
#include "engine/exec.h"
#include "engine/op.h"
#include "engine/qsim.h"

typedef struct fixture {
    ql_model *m;
    ql_dataset *calib;
    ql_dataset *eval;
    ql_plugins *ps;
    ql_qnet *q;
    char dir[256];
} fixture;

static char *example(const char *file)
{
    static char buf[1024];
    const char *src = getenv("QLENS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/examples/fmnist/%s", src ? src : "..", file);
    return buf;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    ql_error err = {{0}};
    if (ql_model_load(example("fmnist_resnet.onnx"), &f->m, &err) ||
        ql_dataset_load(example("calib.npy"), 48, &f->calib, &err) ||
        ql_dataset_conform(f->calib, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_dataset_load(example("eval.npy"), 40, &f->eval, &err) ||
        ql_dataset_conform(f->eval, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_plugins_scan(&f->ps, &err) || ql_qnet_build(f->m->graph, &f->q, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/qlens-test-calib-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    ql_qnet_free(f->q);
    ql_plugins_free(f->ps);
    ql_dataset_free(f->calib);
    ql_dataset_free(f->eval);
    ql_model_free(f->m);
    free(f);
    return 0;
}

static ql_qconfig *calibrate(fixture *f, int threads, const char *algo, ql_calib_stats **keep)
{
    ql_error err = {{0}};
    ql_calib_stats *s = NULL;
    ql_qconfig *c = ql_qconfig_new();
    assert_non_null(c);
    if (algo)
        snprintf(c->defaults.act_algo, sizeof c->defaults.act_algo, "%s", algo);
    ql_calib_opts o = {.n_threads = threads, .batch = 16};
    if (ql_calib_collect(f->m, f->q, f->calib, &o, &s, &err) != QL_OK)
        fail_msg("collect: %s", err.msg);
    if (ql_calib_encode(f->m, f->q, c, s, f->ps, f->calib, &o, &err) != QL_OK)
        fail_msg("encode: %s", err.msg);
    if (keep)
        *keep = s;
    else
        ql_calib_stats_free(s);
    return c;
}

/* Output 0 of the model under config c on the first eval samples. */
static ql_tensor *run_quant(fixture *f, const ql_qconfig *c, int threads)
{
    ql_error err = {{0}};
    ql_qsim *sim = NULL;
    ql_exec *x = NULL;
    if (ql_qsim_build(f->q, c, &sim, &err) != QL_OK)
        fail_msg("qsim: %s", err.msg);
    ql_exec_opts xo = {.n_threads = threads};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    assert_int_equal(ql_exec_set_quant(x, &sim->plan, &err), QL_OK);
    ql_tensor batch = ql_dataset_batch(f->eval, 0, f->eval->n);
    const ql_tensor *in = &batch;
    ql_tensor *outs[8] = {0};
    if (ql_exec_run(x, &in, outs, &err) != QL_OK)
        fail_msg("run: %s", err.msg);
    for (int j = 1; j < f->m->graph->n_outputs; j++)
        ql_tensor_free(outs[j]);
    ql_exec_free(x);
    ql_qsim_free(sim);
    return outs[0];
}

static void test_placement(void **state)
{
    fixture *f = *state;
    const ql_graph *g = f->m->graph;
    int weighted = 0, fused = 0;
    assert_true(f->q->n_layers > 0);
    for (int i = 0; i < f->q->n_layers; i++) {
        const ql_qlayer *L = &f->q->layers[i];
        const ql_node *n = &g->nodes[L->node];
        if (n->op == QL_OP_CONV || n->op == QL_OP_GEMM) {
            assert_true(L->weight_value >= 0);
            weighted++;
        }
        if (L->act_node >= 0) {
            /* the quantizer sits after the folded activation */
            assert_int_equal(L->out_value, g->nodes[L->act_node].out[0]);
            assert_int_equal(f->q->node_layer[L->act_node], i);
            fused++;
        }
    }
    assert_true(weighted >= 5);
    assert_true(fused >= 3);
    for (int j = 0; j < g->n_outputs; j++)
        assert_false(f->q->value_site[g->outputs[j]]);
    assert_true(f->q->value_site[g->inputs[0]]);
}

typedef struct grid_ctx {
    const ql_qsim *sim;
    int checked, bad;
} grid_ctx;

static bool grid_observer(void *user, const ql_graph *g, int node, int value,
                          const ql_tensor *t)
{
    (void)g;
    (void)node;
    grid_ctx *c = user;
    const ql_encoding *e = c->sim->act[value];
    if (!e)
        return true;
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    const float *x = t->data;
    for (int64_t i = 0; i < ql_tensor_numel(t); i++) {
        double q = (double)x[i] / (double)e->scale[0] + e->zero_point[0];
        if (fabs(q - nearbyint(q)) > 1e-3 || nearbyint(q) < (double)qmin ||
            nearbyint(q) > (double)qmax)
            c->bad++;
    }
    c->checked++;
    return true;
}

static void test_activations_on_grid(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    ql_qconfig *c = calibrate(f, 2, NULL, NULL);
    ql_qsim *sim = NULL;
    ql_exec *x = NULL;
    assert_int_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    grid_ctx gc = {.sim = sim};
    ql_exec_opts xo = {.n_threads = 2, .observer = grid_observer, .observer_user = &gc};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    assert_int_equal(ql_exec_set_quant(x, &sim->plan, &err), QL_OK);
    ql_tensor batch = ql_dataset_batch(f->eval, 0, 8);
    const ql_tensor *in = &batch;
    ql_tensor *outs[8] = {0};
    assert_int_equal(ql_exec_run(x, &in, outs, &err), QL_OK);
    ql_tensor_free(outs[0]);
    assert_true(gc.checked >= 5);
    assert_int_equal(gc.bad, 0);
    /* weights of every weighted layer are fake-quantized */
    for (int i = 0; i < f->q->n_layers; i++) {
        const ql_qlayer *L = &f->q->layers[i];
        if (L->weight_value < 0)
            continue;
        const ql_tensor *w = sim->constants[L->weight_value];
        assert_non_null(w);
        assert_true(memcmp(w->data, f->m->graph->values[L->weight_value].constant->data,
                           ql_tensor_nbytes(w)) != 0);
    }
    ql_exec_free(x);
    ql_qsim_free(sim);
    ql_qconfig_free(c);
}

/* The reference statistics: one whole-batch run of all samples, every
 * site's tensor added to its histogram as the observer sees it. */
typedef struct ref_stats {
    const ql_qnet *q;
    ql_hist *h; /* per value */
} ref_stats;

static bool ref_observe(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    (void)g;
    (void)node;
    ref_stats *r = user;
    if (r->q->value_site[value] && t->dtype == QL_F32)
        ql_hist_add(&r->h[value], t->data, ql_tensor_numel(t));
    return true;
}

/* The pass runs the example's samples a few at a time on each thread (its
 * graph keeps samples apart) and merges the threads' statistics: the same
 * histograms, extremes and counts as one run of the whole batch. */
static void test_stats_split_exact(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    const ql_graph *g = f->m->graph;
    assert_true(ql_graph_samples_apart(g));
    ref_stats r = {f->q, calloc((size_t)g->n_values, sizeof(ql_hist))};
    char *obs = calloc((size_t)g->n_values, 1);
    for (int v = 0; v < g->n_values; v++) {
        assert_int_equal(ql_hist_init(&r.h[v], &err), QL_OK);
        obs[v] = (char)f->q->value_site[v];
    }
    ql_exec_opts xo = {.n_threads = 1, .observer = ref_observe, .observer_user = &r,
                       .observe = obs};
    ql_exec *x = NULL;
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    ql_tensor batch = ql_dataset_batch(f->calib, 0, f->calib->n);
    const ql_tensor *in = &batch;
    ql_tensor *outs[8] = {0};
    assert_int_equal(ql_exec_run(x, &in, outs, &err), QL_OK);
    ql_tensor_free(outs[0]);
    ql_exec_free(x);
    int inv = g->inputs[0];
    if (f->q->value_site[inv])
        ql_hist_add(&r.h[inv], batch.data, ql_tensor_numel(&batch));
    for (int threads = 1; threads <= 3; threads++) {
        ql_calib_stats *s = NULL;
        ql_calib_opts o = {.n_threads = threads, .batch = 16};
        assert_int_equal(ql_calib_collect(f->m, f->q, f->calib, &o, &s, &err), QL_OK);
        for (int h = 0; h < s->n; h++) {
            int v = ql_graph_find_value(g, s->names[h]);
            assert_true(v >= 0 && f->q->value_site[v]);
            const ql_hist *a = &s->hists[h], *b = &r.h[v];
            if (a->count != b->count || a->range != b->range || a->min != b->min ||
                a->max != b->max || memcmp(a->counts, b->counts, QL_HIST_BINS * sizeof *a->counts))
                fail_msg("%d threads, '%s': statistics differ from one whole-batch run", threads,
                         s->names[h]);
        }
        ql_calib_stats_free(s);
    }
    for (int v = 0; v < g->n_values; v++)
        ql_hist_clear(&r.h[v]);
    free(r.h);
    free(obs);
}

static void test_threads_and_round_trip(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    ql_calib_stats *s1 = NULL;
    ql_qconfig *a = calibrate(f, 1, "kl", &s1);
    ql_qconfig *b = calibrate(f, 2, "kl", NULL);
    char *ja = ql_qconfig_to_json(a, &err), *jb = ql_qconfig_to_json(b, &err);
    assert_non_null(ja);
    assert_non_null(jb);
    assert_string_equal(ja, jb); /* thread count never changes a result */

    /* save, load, run: bit-identical outputs */
    char path[400];
    snprintf(path, sizeof path, "%s/cfg.json", f->dir);
    assert_int_equal(ql_qconfig_save(a, path, &err), QL_OK);
    ql_qconfig *l = NULL;
    if (ql_qconfig_load(path, &l, &err) != QL_OK)
        fail_msg("load: %s", err.msg);
    assert_int_equal(ql_qconfig_check(l, f->m, f->q, path, &err), QL_OK);
    char *jl = ql_qconfig_to_json(l, &err);
    assert_string_equal(ja, jl);
    ql_tensor *ya = run_quant(f, a, 1), *yl = run_quant(f, l, 2);
    assert_int_equal(ql_tensor_nbytes(ya), ql_tensor_nbytes(yl));
    assert_memory_equal(ya->data, yl->data, ql_tensor_nbytes(ya));

    /* statistics saved and loaded give the same encodings */
    snprintf(path, sizeof path, "%s/stats.bin", f->dir);
    assert_int_equal(ql_calib_stats_save(s1, path, &err), QL_OK);
    ql_calib_stats *s2 = NULL;
    if (ql_calib_stats_load(path, &s2, &err) != QL_OK)
        fail_msg("stats load: %s", err.msg);
    ql_qconfig *c = ql_qconfig_new();
    snprintf(c->defaults.act_algo, sizeof c->defaults.act_algo, "kl");
    assert_int_equal(ql_calib_encode(f->m, f->q, c, s2, f->ps, NULL, NULL, &err), QL_OK);
    char *jc = ql_qconfig_to_json(c, &err);
    assert_string_equal(ja, jc);

    free(ja);
    free(jb);
    free(jl);
    free(jc);
    ql_tensor_free(ya);
    ql_tensor_free(yl);
    ql_calib_stats_free(s1);
    ql_calib_stats_free(s2);
    ql_qconfig_free(a);
    ql_qconfig_free(b);
    ql_qconfig_free(l);
    ql_qconfig_free(c);
}

static void test_float_layer_and_errors(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    ql_qconfig *c = calibrate(f, 2, NULL, NULL);
    const ql_graph *g = f->m->graph;
    /* a layer set to float keeps its float weights */
    const ql_qlayer *L = NULL;
    for (int i = 0; i < f->q->n_layers && !L; i++)
        if (f->q->layers[i].weight_value >= 0)
            L = &f->q->layers[i];
    assert_non_null(L);
    ql_qlayer_cfg *o = ql_qconfig_layer(c, L->name);
    o->s.mask |= QL_QS_PRECISION;
    o->s.precision = QL_PREC_FLOAT;
    ql_qsim *sim = NULL;
    assert_int_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    assert_null(sim->constants[L->weight_value]);
    ql_qsim_free(sim);

    /* int16 without recalibration: the encoding's bits do not match */
    o->s.precision = QL_PREC_INT16;
    assert_int_not_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    assert_non_null(strstr(err.msg, "recalibrate"));

    /* a layer that does not exist, and a config made for another model */
    ql_qconfig_layer(c, "no such layer")->s.mask |= QL_QS_WEIGHT_BITS;
    assert_int_not_equal(ql_qconfig_check(c, f->m, f->q, "cfg.json", &err), QL_OK);
    assert_non_null(strstr(err.msg, "layers.\"no such layer\""));
    ql_qconfig_reset_layer(c, "no such layer", QL_QS_ALL);
    c->fingerprint ^= 1;
    assert_int_not_equal(ql_qconfig_check(c, f->m, f->q, "cfg.json", &err), QL_OK);
    assert_non_null(strstr(err.msg, "another model"));
    (void)g;
    ql_qconfig_free(c);
}

/* A plan's replacement constants reach every weighted kernel, including
 * convolutions whose weights were packed at prepare time. */
static void test_plan_constants_used(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    const ql_graph *g = f->m->graph;
    const ql_tensor **consts = calloc((size_t)g->n_values, sizeof *consts);
    ql_exec *x = NULL;
    ql_exec_opts xo = {.n_threads = 2};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    ql_tensor batch = ql_dataset_batch(f->eval, 0, 4);
    const ql_tensor *in = &batch;
    ql_tensor *ref[8] = {0}, *out[8] = {0};
    assert_int_equal(ql_exec_run(x, &in, ref, &err), QL_OK);
    for (int i = 0; i < f->q->n_layers; i++) {
        const ql_qlayer *L = &f->q->layers[i];
        if (g->nodes[L->node].op != QL_OP_CONV || L->weight_value < 0)
            continue;
        /* zero weights: the layer's output becomes its bias */
        ql_tensor *z = ql_tensor_clone(g->values[L->weight_value].constant);
        memset(z->data, 0, ql_tensor_nbytes(z));
        consts[L->weight_value] = z;
        ql_exec_quant plan = {.act = NULL, .constants = consts};
        assert_int_equal(ql_exec_set_quant(x, &plan, &err), QL_OK);
        assert_int_equal(ql_exec_run(x, &in, out, &err), QL_OK);
        assert_true(memcmp(out[0]->data, ref[0]->data, ql_tensor_nbytes(ref[0])) != 0);
        ql_tensor_free(out[0]);
        ql_tensor_free(z);
        consts[L->weight_value] = NULL;
    }
    /* and back to float: the prepared weights again */
    assert_int_equal(ql_exec_set_quant(x, NULL, &err), QL_OK);
    assert_int_equal(ql_exec_run(x, &in, out, &err), QL_OK);
    assert_memory_equal(out[0]->data, ref[0]->data, ql_tensor_nbytes(ref[0]));
    ql_tensor_free(out[0]);
    ql_tensor_free(ref[0]);
    ql_exec_free(x);
    free(consts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_activations_on_grid),
        cmocka_unit_test(test_stats_split_exact),
        cmocka_unit_test(test_threads_and_round_trip),
        cmocka_unit_test(test_float_layer_and_errors),
        cmocka_unit_test(test_plan_constants_used),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
