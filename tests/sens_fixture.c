/* The example fixture, table checks and full-run references shared by the
 * sensitivity and autoprec unit tests (see sens_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/qsim.h"
#include "sens_fixture.h"

static char *example(const char *file)
{
    static char buf[1024];
    const char *src = getenv("QLENS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/examples/fmnist/%s", src ? src : "..", file);
    return buf;
}

int sf_load(sf_fixture *f, int (*plant)(sf_fixture *f))
{
    ql_error err = {{0}};
    int64_t nl = 0;
    if (ql_model_load(example("fmnist_resnet.onnx"), &f->m, &err) ||
        ql_dataset_load(example("calib.npy"), SF_SAMPLES, &f->calib, &err) ||
        ql_dataset_conform(f->calib, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_dataset_load(example("eval.npy"), SF_SAMPLES, &f->eval, &err) ||
        ql_dataset_conform(f->eval, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_labels_load(example("eval_labels.npy"), SF_SAMPLES, &f->labels, &nl, &err) ||
        ql_plugins_scan(&f->ps, &err) || ql_qnet_build(f->m->graph, &f->q, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    if (plant && plant(f) != 0)
        return -1;
    f->c = ql_qconfig_new();
    snprintf(f->c->defaults.act_algo, sizeof f->c->defaults.act_algo, "minmax");
    ql_calib_opts o = {.n_threads = 2, .batch = SF_BATCH};
    if (ql_calib_collect(f->m, f->q, f->calib, &o, &f->stats, &err) ||
        ql_calib_encode(f->m, f->q, f->c, f->stats, f->ps, f->calib, &o, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

void sf_unload(sf_fixture *f)
{
    ql_calib_stats_free(f->stats);
    ql_qconfig_free(f->c);
    ql_qnet_free(f->q);
    ql_plugins_free(f->ps);
    free(f->labels);
    ql_dataset_free(f->calib);
    ql_dataset_free(f->eval);
    ql_model_free(f->m);
    free(f);
}

int sf_setup(void **state)
{
    sf_fixture *f = calloc(1, sizeof *f);
    *state = f;
    return f ? sf_load(f, NULL) : -1;
}

int sf_teardown(void **state)
{
    sf_unload(*state);
    return 0;
}

ql_sens_table *sf_analyse(sf_fixture *f, const ql_qconfig *c, ql_sens_mode mode, int threads,
                          bool brute, int64_t cache)
{
    ql_error err = {{0}};
    ql_sens_table *t = NULL;
    ql_sens_opts o = {.mode = mode, .n_threads = threads, .batch = SF_BATCH,
                      .brute_force = brute, .cache_bytes = cache};
    if (ql_sensitivity(f->m, f->q, c, f->eval, f->labels, &o, &t, &err) != QL_OK)
        fail_msg("sensitivity (%s): %s", ql_sens_mode_name(mode), err.msg);
    assert_false(t->partial);
    return t;
}

void sf_assert_same(const ql_sens_table *a, const ql_sens_table *b, const char *what)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const ql_sens_row *x = &a->rows[i], *y = &b->rows[i];
        assert_int_equal(x->layer, y->layer);
        assert_true(x->done && y->done);
        if (memcmp(&x->m, &y->m, sizeof x->m) != 0 ||
            memcmp(&x->local_sqnr_db, &y->local_sqnr_db, sizeof(double)) != 0 ||
            memcmp(&x->weight_share, &y->weight_share, sizeof(double)) != 0)
            fail_msg("%s: layer '%s' differs: cosine %.17g vs %.17g, noise %.17g vs %.17g, "
                     "local %.17g vs %.17g, share %.17g vs %.17g",
                     what, x->name, ql_metrics_cosine(&x->m), ql_metrics_cosine(&y->m),
                     x->m.noise, y->m.noise, x->local_sqnr_db, y->local_sqnr_db,
                     x->weight_share, y->weight_share);
    }
}

const ql_sens_row *sf_row_of(const ql_sens_table *t, int layer)
{
    for (int i = 0; i < t->n + t->n_pending; i++)
        if (t->rows[i].layer == layer)
            return &t->rows[i];
    return NULL;
}

/* ---- full runs --------------------------------------------------------------------- */

bool sf_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    (void)g;
    (void)node;
    sf_obs *r = user;
    for (int i = 0; i < r->n; i++)
        if (value == r->want[i] && !r->copy[i])
            r->copy[i] = ql_tensor_clone(t);
    return true;
}

void sf_ref_run(sf_fixture *f, const ql_exec_quant *plan, int n_want, const int *want,
                ql_tensor **y, ql_tensor **w)
{
    ql_error err = {{0}};
    ql_tensor *copy[64];
    assert_in_range(n_want, 0, 64);
    sf_obs ro = {.n = n_want, .want = want, .copy = copy};
    ql_exec *x = NULL;
    ql_exec_opts xo = {.n_threads = 1, .observer = sf_observer, .observer_user = &ro};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    assert_int_equal(ql_exec_set_quant(x, plan, &err), QL_OK);
    for (int b = 0; b < SF_BATCHES; b++) {
        ql_tensor in = ql_dataset_batch(f->eval, b * SF_BATCH, SF_BATCH);
        const ql_tensor *inp = &in;
        ql_tensor *outs[4] = {0};
        memset(copy, 0, sizeof copy);
        if (ql_exec_run(x, &inp, outs, &err) != QL_OK)
            fail_msg("reference run: %s", err.msg);
        y[b] = outs[0];
        for (int i = 0; i < n_want; i++) {
            assert_non_null(copy[i]);
            w[i * SF_BATCHES + b] = copy[i];
        }
    }
    ql_exec_free(x);
}

ql_metrics sf_metrics(sf_fixture *f, ql_tensor *const *yf, ql_tensor *const *yq)
{
    ql_metrics m = {0};
    for (int b = 0; b < SF_BATCHES; b++) {
        int64_t per = ql_tensor_numel(yf[b]) / SF_BATCH;
        ql_metrics_add(&m, yf[b]->data, yq[b]->data, SF_BATCH, per, f->labels + b * SF_BATCH);
    }
    return m;
}

ql_metrics sf_config_metrics(sf_fixture *f, const ql_qconfig *c, ql_tensor *const *yf)
{
    ql_error err = {{0}};
    ql_qsim *sim = NULL;
    assert_int_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    ql_tensor *yq[SF_BATCHES];
    sf_ref_run(f, &sim->plan, 0, NULL, yq, NULL);
    ql_metrics m = sf_metrics(f, yf, yq);
    for (int b = 0; b < SF_BATCHES; b++)
        ql_tensor_free(yq[b]);
    ql_qsim_free(sim);
    return m;
}
