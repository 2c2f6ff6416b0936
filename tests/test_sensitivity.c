/* Unit tests of the sensitivity analysis and autoprec on the shipped
 * example: the incremental runs equal full re-executions bit for bit (the
 * engine's brute-force path, and a reference written here from configs
 * built the obvious way: all-but is the config with the layer set to float,
 * or int16, encodings brought in line as a session does), whatever the
 * thread count and cache budget (the workers share out the base runs'
 * batches and the layers); executors that keep their buffers compute what
 * plain ones do; a cancelled table holds finished rows only, the others
 * pending; the CSV survives awkward names through libcsv; impossible
 * targets are refused; a planted sensitive layer ranks first and is the
 * first one autoprec raises; autoprec keeps only raises that help, never
 * tries one that changes nothing, goes on to float raises when int16 ones
 * run out, and leaves no raise the target does not need. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <csv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/calibrate.h"
#include "engine/evaluate.h"
#include "engine/exec.h"
#include "engine/qsim.h"
#include "engine/sensitivity.h"
#include "testutil.h"

#define N_SAMPLES 24
#define BATCH 8

typedef struct fixture {
    ql_model *m;
    ql_dataset *calib, *eval;
    int64_t *labels;
    ql_plugins *ps;
    ql_qnet *q;
    ql_qconfig *c;
    ql_calib_stats *stats;
} fixture;

static char *example(const char *file)
{
    static char buf[1024];
    const char *src = getenv("QLENS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/examples/fmnist/%s", src ? src : "..", file);
    return buf;
}

/* Loads the example; with plant, first makes one layer sensitive. */
static int load(fixture *f, int (*plant)(fixture *f))
{
    ql_error err = {{0}};
    int64_t nl = 0;
    if (ql_model_load(example("fmnist_resnet.onnx"), &f->m, &err) ||
        ql_dataset_load(example("calib.npy"), N_SAMPLES, &f->calib, &err) ||
        ql_dataset_conform(f->calib, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_dataset_load(example("eval.npy"), N_SAMPLES, &f->eval, &err) ||
        ql_dataset_conform(f->eval, &f->m->graph->values[f->m->graph->inputs[0]], &err) ||
        ql_labels_load(example("eval_labels.npy"), N_SAMPLES, &f->labels, &nl, &err) ||
        ql_plugins_scan(&f->ps, &err) || ql_qnet_build(f->m->graph, &f->q, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    if (plant && plant(f) != 0)
        return -1;
    f->c = ql_qconfig_new();
    snprintf(f->c->defaults.act_algo, sizeof f->c->defaults.act_algo, "minmax");
    ql_calib_opts o = {.n_threads = 2, .batch = BATCH};
    if (ql_calib_collect(f->m, f->q, f->calib, &o, &f->stats, &err) ||
        ql_calib_encode(f->m, f->q, f->c, f->stats, f->ps, f->calib, &o, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void unload(fixture *f)
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

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    *state = f;
    return f ? load(f, NULL) : -1;
}

static int teardown(void **state)
{
    unload(*state);
    return 0;
}

static ql_sens_table *analyse(fixture *f, const ql_qconfig *c, ql_sens_mode mode, int threads,
                              bool brute, int64_t cache)
{
    ql_error err = {{0}};
    ql_sens_table *t = NULL;
    ql_sens_opts o = {.mode = mode, .n_threads = threads, .batch = BATCH, .brute_force = brute,
                      .cache_bytes = cache};
    if (ql_sensitivity(f->m, f->q, c, f->eval, f->labels, &o, &t, &err) != QL_OK)
        fail_msg("sensitivity (%s): %s", ql_sens_mode_name(mode), err.msg);
    assert_false(t->partial);
    return t;
}

/* Bit-for-bit equality of two tables (same row order). */
static void assert_same(const ql_sens_table *a, const ql_sens_table *b, const char *what)
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

static void test_incremental_is_brute_force(void **state)
{
    fixture *f = *state;
    for (int mode = 0; mode < QL_SENS_MODE_COUNT; mode++) {
        ql_sens_table *inc1 = analyse(f, f->c, (ql_sens_mode)mode, 1, false, 0);
        ql_sens_table *inc2 = analyse(f, f->c, (ql_sens_mode)mode, 2, false, 0);
        /* three workers for three batches and 17 layers: every worker has
         * base runs and layers of its own (both kinds of base run) */
        bool three = mode == QL_SENS_SINGLE || mode == QL_SENS_ALL_BUT;
        ql_sens_table *inc3 = three ? analyse(f, f->c, (ql_sens_mode)mode, 3, false, 0) : NULL;
        ql_sens_table *bf = analyse(f, f->c, (ql_sens_mode)mode, 2, true, 0);
        /* a budget of a few samples: chunks of one small batch (single and
         * all-but, the two kinds of base run) */
        bool chunked = mode == QL_SENS_SINGLE || mode == QL_SENS_ALL_BUT;
        ql_sens_table *small = chunked ? analyse(f, f->c, (ql_sens_mode)mode, 2, false, 1 << 20)
                                       : NULL;
        ql_sens_table *small_bf = chunked ? analyse(f, f->c, (ql_sens_mode)mode, 2, true, 1 << 20)
                                          : NULL;
        assert_int_equal(inc1->n, f->q->n_layers);
        assert_int_equal(inc1->samples, N_SAMPLES);
        for (int i = 0; i < inc1->n; i++)
            assert_int_equal(inc1->rows[i].m.n, N_SAMPLES);
        assert_same(inc1, bf, "incremental vs brute force");
        assert_same(inc1, inc2, "1 vs 2 threads");
        if (three)
            assert_same(inc1, inc3, "1 vs 3 threads");
        if (chunked) {
            assert_same(small, small_bf, "chunked: incremental vs brute force");
            /* chunking changes the batch size, which GEMM blocking sees:
             * float sums then differ in the last bit, and now and then one
             * activation lands on the other side of a rounding boundary and
             * moves one quantization step; on these samples such a step
             * moves a layer's mean cosine by well under 1e-6 */
            double worst = 0;
            for (int i = 0; i < inc1->n; i++)
                worst = fmax(worst, fabs(ql_metrics_cosine(&small->rows[i].m) -
                                         ql_metrics_cosine(&inc1->rows[i].m)));
            print_message("%s: chunked vs whole, largest cosine difference %.3g\n",
                          ql_sens_mode_name((ql_sens_mode)mode), worst);
            assert_true(worst < 1e-6);
        }
        ql_sens_table_free(inc1);
        ql_sens_table_free(inc2);
        ql_sens_table_free(inc3);
        ql_sens_table_free(bf);
        ql_sens_table_free(small);
        ql_sens_table_free(small_bf);
    }
}

/* ---- reference: configs built the obvious way, full runs ------------------------ */

typedef struct ref_obs {
    int want;
    ql_tensor *copy;
} ref_obs;

static bool ref_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    (void)g;
    (void)node;
    ref_obs *r = user;
    if (value == r->want && !r->copy)
        r->copy = ql_tensor_clone(t);
    return true;
}

/* Runs the model on all samples under plan (NULL: float); returns output 0
 * of each batch and the value `want` (after its quantizer) of each batch. */
static void ref_run(fixture *f, const ql_exec_quant *plan, int want, ql_tensor **y, ql_tensor **w)
{
    ql_error err = {{0}};
    ref_obs ro = {.want = want};
    ql_exec *x = NULL;
    ql_exec_opts xo = {.n_threads = 1, .observer = ref_observer, .observer_user = &ro};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    assert_int_equal(ql_exec_set_quant(x, plan, &err), QL_OK);
    for (int b = 0; b < N_SAMPLES / BATCH; b++) {
        ql_tensor in = ql_dataset_batch(f->eval, b * BATCH, BATCH);
        const ql_tensor *inp = &in;
        ql_tensor *outs[4] = {0};
        ro.copy = NULL;
        if (ql_exec_run(x, &inp, outs, &err) != QL_OK)
            fail_msg("reference run: %s", err.msg);
        y[b] = outs[0];
        w[b] = ro.copy;
    }
    ql_exec_free(x);
}

/* The metrics of config c's outputs against the float outputs yf, run in
 * full (the reference an all-but row must equal). */
static ql_metrics config_metrics(fixture *f, const ql_qconfig *c, ql_tensor *const *yf)
{
    enum { NB = N_SAMPLES / BATCH };
    ql_error err = {{0}};
    ql_qsim *sim = NULL;
    assert_int_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    ql_tensor *yq[NB], *wq[NB];
    ref_run(f, &sim->plan, -1, yq, wq);
    ql_metrics m = {0};
    for (int b = 0; b < NB; b++) {
        int64_t per = ql_tensor_numel(yf[b]) / BATCH;
        ql_metrics_add(&m, yf[b]->data, yq[b]->data, BATCH, per, f->labels + b * BATCH);
        ql_tensor_free(yq[b]);
    }
    ql_qsim_free(sim);
    return m;
}

static double sum_sq(const ql_tensor *a, const ql_tensor *b, double *sig)
{
    const float *x = a->data, *y = b->data;
    double s = 0, n = 0;
    for (int64_t i = 0; i < ql_tensor_numel(a); i++) {
        double d = (double)x[i] - (double)y[i];
        s += (double)x[i] * (double)x[i];
        n += d * d;
    }
    if (sig)
        *sig = s;
    return n;
}

/* The single plan of layer l written the simple way for a model whose
 * layers are all int8: a layer owns its weight, bias and output quantizer,
 * and the graph input's quantizer goes with the layers reading it. */
static void ref_plan(const ql_qnet *q, const ql_qsim *full, int l, const ql_encoding **act,
                     const ql_tensor **cst)
{
    const ql_graph *g = q->g;
    const ql_qlayer *L = &q->layers[l];
    int in = g->inputs[0], l_reads = 0;
    const ql_node *n = &g->nodes[L->node];
    for (int j = 0; j < n->n_in; j++)
        l_reads |= n->in[j] >= 0 && q->value_src[n->in[j]] == in;
    for (int v = 0; v < g->n_values; v++) {
        bool own = q->value_site[v] && q->value_layer[v] == l;
        act[v] = own || (v == in && l_reads) ? full->act[v] : NULL;
        cst[v] = NULL;
    }
    if (L->weight_value >= 0)
        cst[L->weight_value] = full->constants[L->weight_value];
    if (L->bias_value >= 0)
        cst[L->bias_value] = full->constants[L->bias_value];
}

/* The config c with layer l set to `to`, its encodings brought in line as
 * `set layer L precision P` does in a session (NULL stats: c has every
 * encoding the change calls for). */
static ql_qconfig *with_prec(fixture *f, const ql_qconfig *c, int l, ql_prec to,
                             const ql_calib_stats *stats)
{
    ql_error err = {{0}};
    ql_qconfig *d = ql_qconfig_clone(c);
    ql_qlayer_cfg *o = ql_qconfig_layer(d, f->q->layers[l].name);
    assert_non_null(o);
    o->s.mask |= QL_QS_PRECISION;
    o->s.precision = to;
    ql_calib_opts co = {.n_threads = 1};
    if (stats &&
        ql_calib_update(f->m, f->q, d, stats, f->ps, f->calib, &co, c, -1, &err) != QL_OK)
        fail_msg("calib_update: %s", err.msg);
    return d;
}

static void test_matches_reference(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    const ql_qnet *q = f->q;
    enum { NB = N_SAMPLES / BATCH };
    ql_qsim *full = NULL;
    assert_int_equal(ql_qsim_build(q, f->c, &full, &err), QL_OK);
    size_t nv = (size_t)q->g->n_values;
    const ql_encoding **act = calloc(nv, sizeof *act), **sact = calloc(nv, sizeof *sact);
    const ql_tensor **cst = calloc(nv, sizeof *cst), **scst = calloc(nv, sizeof *scst);
    int unchanged = 0;
    for (int mode = 0; mode < 2; mode++) {
        ql_sens_table *t = analyse(f, f->c, (ql_sens_mode)mode, 2, false, 0);
        for (int l = 0; l < q->n_layers; l++) {
            const ql_qlayer *L = &q->layers[l];
            ql_tensor *yf[NB], *wf[NB], *yq[NB], *wq[NB];
            /* all-but: what the config with this layer float computes */
            ql_qconfig *cl = NULL;
            ql_qsim *lsim = NULL;
            ql_exec_quant plan;
            if (mode == QL_SENS_SINGLE) {
                ref_plan(q, full, l, act, cst);
                plan = (ql_exec_quant){(const struct ql_encoding *const *)act, cst};
            } else {
                cl = with_prec(f, f->c, l, QL_PREC_FLOAT, NULL);
                assert_int_equal(ql_qsim_build(q, cl, &lsim, &err), QL_OK);
                plan = lsim->plan;
            }
            ref_run(f, NULL, L->out_value, yf, wf);
            ref_run(f, &plan, L->out_value, yq, wq);
            ql_metrics m = {0};
            for (int b = 0; b < NB; b++) {
                int64_t per = ql_tensor_numel(yf[b]) / BATCH;
                ql_metrics_add(&m, yf[b]->data, yq[b]->data, BATCH, per, f->labels + b * BATCH);
                ql_tensor_free(yq[b]);
                ql_tensor_free(wq[b]);
            }
            ql_qsim_free(lsim);
            ql_qconfig_free(cl);
            const ql_sens_row *r = &t->rows[l];
            assert_int_equal(r->layer, l);
            if (memcmp(&m, &r->m, sizeof m) != 0)
                fail_msg("%s layer %s: cosine %.17g (reference %.17g)",
                         ql_sens_mode_name((ql_sens_mode)mode), L->name,
                         ql_metrics_cosine(&r->m), ql_metrics_cosine(&m));
            /* a raise that changes no quantizer has the config's metrics */
            if (mode == QL_SENS_ALL_BUT) {
                assert_int_equal(r->raised_to, QL_PREC_FLOAT);
                if (r->unchanged) {
                    unchanged++;
                    assert_memory_equal(&r->m, &t->base, sizeof r->m);
                }
            }
            /* local figures: the layer's output with its single plan, with
             * only its weights, with only its output quantizer */
            double sig = 0, noise = 0, wn = 0, an = 0;
            ref_plan(q, full, l, sact, scst);
            for (int k = 0; k < 3; k++) {
                memset(act, 0, nv * sizeof *act);
                memset(cst, 0, nv * sizeof *cst);
                ql_exec_quant p = {(const struct ql_encoding *const *)act, cst};
                if (k == 0) {
                    p.act = (const struct ql_encoding *const *)sact;
                    p.constants = scst;
                } else if (k == 1) {
                    if (L->weight_value < 0)
                        continue;
                    cst[L->weight_value] = full->constants[L->weight_value];
                    if (L->bias_value >= 0)
                        cst[L->bias_value] = full->constants[L->bias_value];
                } else {
                    act[L->out_value] = full->act[L->out_value];
                }
                ref_run(f, &p, L->out_value, yq, wq);
                for (int b = 0; b < NB; b++) {
                    double s = 0, n = sum_sq(wf[b], wq[b], &s);
                    if (k == 0) {
                        sig += s;
                        noise += n;
                    } else {
                        *(k == 1 ? &wn : &an) += n;
                    }
                    ql_tensor_free(yq[b]);
                    ql_tensor_free(wq[b]);
                }
            }
            double local = noise == 0 ? INFINITY : 10.0 * log10(sig / noise);
            double share = L->weight_value < 0 || wn + an == 0 ? NAN : wn / (wn + an);
            if (memcmp(&local, &r->local_sqnr_db, sizeof local) != 0 ||
                memcmp(&share, &r->weight_share, sizeof share) != 0)
                fail_msg("layer %s: local %.17g share %.17g (reference %.17g, %.17g)", L->name,
                         r->local_sqnr_db, r->weight_share, local, share);
            for (int b = 0; b < NB; b++) {
                ql_tensor_free(yf[b]);
                ql_tensor_free(wf[b]);
            }
        }
        ql_sens_table_free(t);
    }
    /* the residual Adds and the pooling read and feed int8 layers only:
     * setting one float changes nothing */
    print_message("all-but: %d of %d layers change nothing when set to float\n", unchanged,
                  q->n_layers);
    assert_true(unchanged > 0);
    free(act);
    free(cst);
    free(sact);
    free(scst);
    ql_qsim_free(full);
}

/* All-but on a config mixing int8 and int16, raising to int16 and to
 * float: a raise changes the bits of tensors at the boundaries (and the
 * biases that follow the input encodings), and the table still equals the
 * config made the session's way, run in full; incremental equals brute
 * force and any thread count, with statistics or without. */
static void test_all_but_mixed(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    const ql_qnet *q = f->q;
    enum { NB = N_SAMPLES / BATCH };
    /* int16: the first layer (the graph input's reader) and every third */
    ql_qconfig *mixed = ql_qconfig_clone(f->c);
    for (int l = 0; l < q->n_layers; l += 3) {
        ql_qlayer_cfg *o = ql_qconfig_layer(mixed, q->layers[l].name);
        o->s.mask |= QL_QS_PRECISION;
        o->s.precision = QL_PREC_INT16;
    }
    ql_calib_opts co = {.n_threads = 1};
    assert_int_equal(
        ql_calib_update(f->m, q, mixed, f->stats, f->ps, f->calib, &co, f->c, -1, &err), QL_OK);
    ql_tensor *yf[NB], *wf[NB]; /* the float model's outputs, the reference of every row */
    ref_run(f, NULL, -1, yf, wf);
    for (int k = 0; k < 3; k++) {
        bool int16 = k != 1, stats = k != 2;
        ql_sens_opts o = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = BATCH,
                          .raise_int16 = int16, .stats = stats ? f->stats : NULL,
                          .plugins = f->ps};
        ql_sens_table *t[3] = {NULL, NULL, NULL};
        for (int i = 0; i < 3; i++) {
            o.n_threads = i == 1 ? 1 : 2;
            o.brute_force = i == 2;
            if (ql_sensitivity(f->m, q, mixed, f->eval, f->labels, &o, &t[i], &err) != QL_OK)
                fail_msg("sensitivity: %s", err.msg);
        }
        assert_same(t[0], t[1], "mixed all-but: 2 vs 1 threads");
        assert_same(t[0], t[2], "mixed all-but: incremental vs brute force");
        int n_new = 0;
        for (int l = 0; stats && l < q->n_layers; l++) {
            const ql_sens_row *r = &t[0]->rows[l];
            ql_prec from = ql_qnet_layer_prec(q, mixed, l);
            ql_prec to = int16 && from == QL_PREC_INT8 ? QL_PREC_INT16 : QL_PREC_FLOAT;
            assert_int_equal(r->raised_to, to);
            ql_qconfig *cl = with_prec(f, mixed, l, to, f->stats);
            /* how many raises call for encodings the config lacks */
            for (int i = 0; i < cl->n_tensors; i++) {
                const ql_qtensor_cfg *a = &cl->tensors[i];
                const ql_qtensor_cfg *b = ql_qconfig_find_tensor(mixed, a->name);
                if (!b || !ql_encoding_equal(&a->enc, &b->enc)) {
                    n_new++;
                    break;
                }
            }
            ql_metrics m = config_metrics(f, cl, yf);
            if (memcmp(&m, &r->m, sizeof m) != 0)
                fail_msg("mixed, layer %s to %s: cosine %.17g (reference %.17g)",
                         q->layers[l].name, ql_prec_name(to), ql_metrics_cosine(&r->m),
                         ql_metrics_cosine(&m));
            ql_qconfig_free(cl);
        }
        if (stats) {
            print_message("mixed, raising to %s: %d of %d raises call for new encodings\n",
                          int16 ? "int16" : "float", n_new, q->n_layers);
            assert_true(n_new > 0);
        }
        for (int i = 0; i < 3; i++)
            ql_sens_table_free(t[i]);
    }
    for (int b = 0; b < NB; b++)
        ql_tensor_free(yf[b]);
    ql_qconfig_free(mixed);
}

/* Executors that keep their buffers between runs (as the analysis's do)
 * give the outputs and observed values plain ones give, bit for bit, over
 * runs whose batch sizes and plans change (buffers of other sizes spare). */
static void test_exec_reuse_buffers(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    ql_qsim *full = NULL;
    ql_exec *x[2] = {NULL, NULL};
    ref_obs ro[2];
    assert_int_equal(ql_qsim_build(f->q, f->c, &full, &err), QL_OK);
    for (int k = 0; k < 2; k++) {
        ro[k].want = f->q->layers[5].out_value;
        ql_exec_opts xo = {.n_threads = 1, .observer = ref_observer, .observer_user = &ro[k],
                           .reuse_buffers = k == 1};
        assert_int_equal(ql_exec_new(f->m->graph, &xo, &x[k], &err), QL_OK);
    }
    static const int64_t sizes[] = {8, 3, 8, 1, 5, 8};
    for (int r = 0; r < 12; r++) {
        int64_t n = sizes[r % 6];
        ql_tensor in = ql_dataset_batch(f->eval, r, n);
        const ql_tensor *inp = &in;
        ql_tensor *outs[2][4] = {{NULL}};
        for (int k = 0; k < 2; k++) {
            ro[k].copy = NULL;
            assert_int_equal(ql_exec_set_quant(x[k], r % 4 < 2 ? &full->plan : NULL, &err), QL_OK);
            if (ql_exec_run(x[k], &inp, outs[k], &err) != QL_OK)
                fail_msg("run %d: %s", r, err.msg);
            assert_non_null(ro[k].copy);
        }
        assert_int_equal(ql_tensor_numel(outs[0][0]), ql_tensor_numel(outs[1][0]));
        assert_memory_equal(outs[0][0]->data, outs[1][0]->data, ql_tensor_nbytes(outs[0][0]));
        assert_int_equal(ql_tensor_numel(ro[0].copy), ql_tensor_numel(ro[1].copy));
        assert_memory_equal(ro[0].copy->data, ro[1].copy->data, ql_tensor_nbytes(ro[0].copy));
        for (int k = 0; k < 2; k++) {
            ql_tensor_free(outs[k][0]);
            ql_tensor_free(ro[k].copy);
        }
    }
    ql_exec_free(x[0]);
    ql_exec_free(x[1]);
    ql_qsim_free(full);
}

static bool stop_after_three(void *user, int64_t done, int64_t total)
{
    (void)user;
    (void)total;
    return done < 3;
}

static const ql_sens_row *row_of(const ql_sens_table *t, int layer)
{
    for (int i = 0; i < t->n + t->n_pending; i++)
        if (t->rows[i].layer == layer)
            return &t->rows[i];
    return NULL;
}

/* A cancel before the base runs leaves every row pending; a progress
 * callback that says stop leaves the finished rows as results, equal to a
 * full analysis's, and the others pending with no metrics, also when the
 * samples go in chunks (where a row cut short holds sums over the first
 * chunks only); sorting and the CSV keep them after the results. */
static void test_cancel(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    volatile int cancel = 1;
    ql_sens_table *t = NULL, *full = analyse(f, f->c, QL_SENS_SINGLE, 2, false, 0);
    ql_sens_opts o = {.n_threads = 2, .batch = BATCH, .cancel = &cancel};
    assert_int_equal(ql_sensitivity(f->m, f->q, f->c, f->eval, f->labels, &o, &t, &err), QL_OK);
    assert_true(t->partial);
    assert_int_equal(t->n, 0);
    assert_int_equal(t->n_pending, full->n);
    for (int i = 0; i < t->n_pending; i++)
        assert_false(t->rows[i].done);
    ql_sens_table_free(t);
    o.cancel = NULL;
    o.progress = stop_after_three;
    for (int chunked = 0; chunked < 2; chunked++) {
        /* a budget of one batch: a row is done after the last chunk */
        o.cache_bytes = chunked ? 1 << 20 : 0;
        ql_sens_table *whole = chunked ? analyse(f, f->c, QL_SENS_SINGLE, 2, false, 1 << 20) : full;
        assert_int_equal(ql_sensitivity(f->m, f->q, f->c, f->eval, f->labels, &o, &t, &err), QL_OK);
        assert_true(t->partial);
        assert_int_equal(t->n + t->n_pending, full->n);
        assert_in_range(t->n, chunked ? 0 : 3, full->n - 1);
        print_message("stopped%s: %d rows done, %d pending\n", chunked ? " (chunks)" : "", t->n,
                      t->n_pending);
        ql_sens_table_sort(t, QL_SM_COSINE);
        for (int i = 0; i < t->n + t->n_pending; i++) {
            const ql_sens_row *r = &t->rows[i];
            assert_int_equal(r->done, i < t->n);
            if (r->done)
                assert_memory_equal(&r->m, &row_of(whole, r->layer)->m, sizeof r->m);
            else
                assert_int_equal(r->m.n, 0);
        }
        char path[] = "/tmp/qlens-test-partial-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(ql_sens_table_write_csv(t, path, &err), QL_OK);
        FILE *fp = fopen(path, "r");
        char line[512];
        int n = -1;
        while (fp && fgets(line, sizeof line, fp)) {
            if (n >= t->n) /* pending: name,op,precision, no metrics, done 0 */
                assert_non_null(strstr(line, ",,,,,,,,,0\n"));
            else if (n >= 0)
                assert_non_null(strstr(line, ",1\n"));
            n++;
        }
        assert_int_equal(n, full->n);
        fclose(fp);
        unlink(path);
        ql_sens_table_free(t);
        if (chunked)
            ql_sens_table_free(whole);
    }
    ql_sens_table_free(full);
}

/* ---- CSV round trip ---------------------------------------------------------------- */

typedef struct csv_rows {
    char cell[16][12][96];
    int row, col;
} csv_rows;

static void on_field(void *s, size_t len, void *user)
{
    csv_rows *r = user;
    if (r->row < 16 && r->col < 12)
        snprintf(r->cell[r->row][r->col], sizeof r->cell[0][0], "%.*s", (int)len,
                 s ? (const char *)s : "");
    r->col++;
}

static void on_row(int c, void *user)
{
    (void)c;
    csv_rows *r = user;
    assert_int_equal(r->col, 12);
    r->row++;
    r->col = 0;
}

static void test_csv_round_trip(void **state)
{
    (void)state;
    static const char *const names[] = {"plain", "with,comma", "with \"quotes\"",
                                        "multi\nline,\"all\"", ""};
    ql_sens_row rows[5];
    memset(rows, 0, sizeof rows);
    for (int i = 0; i < 5; i++) {
        rows[i].layer = i;
        rows[i].name = names[i];
        rows[i].op = i == 2 ? "Op,\"x\"" : "Conv";
        rows[i].precision = i == 3 ? QL_PREC_INT16 : QL_PREC_INT8;
        rows[i].m.n = 4;
        rows[i].m.agree = i;
        rows[i].m.labelled = i == 4 ? 0 : 4;
        rows[i].m.correct_q = 3;
        rows[i].m.cos_sum = 3.5 + i * 0.125;
        rows[i].m.sig = 10;
        rows[i].m.noise = i == 1 ? 0 : 0.001 * (i + 1);
        rows[i].m.elems = 40;
        rows[i].m.max_abs = 0.25 * i;
        rows[i].local_sqnr_db = 30.0 + i;
        rows[i].weight_share = i == 0 ? NAN : 0.1 * i;
        rows[i].done = i != 4;
    }
    ql_sens_table t = {.mode = QL_SENS_SINGLE, .n = 4, .n_pending = 1, .rows = rows,
                       .samples = 4, .partial = true};
    char path[] = "/tmp/qlens-test-sens-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ql_error err = {{0}};
    assert_int_equal(ql_sens_table_write_csv(&t, path, &err), QL_OK);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    unlink(path);
    struct csv_parser p;
    csv_rows *r = calloc(1, sizeof *r);
    assert_int_equal(csv_init(&p, CSV_STRICT | CSV_APPEND_NULL), 0);
    assert_int_equal(csv_parse(&p, buf, n, on_field, on_row, r), n);
    csv_fini(&p, on_field, on_row, r);
    csv_free(&p);
    assert_int_equal(r->row, 6);
    assert_string_equal(r->cell[0][0], "layer");
    assert_string_equal(r->cell[0][11], "done");
    for (int i = 0; i < 5; i++) {
        assert_string_equal(r->cell[i + 1][0], names[i]);
        assert_string_equal(r->cell[i + 1][1], rows[i].op);
        assert_string_equal(r->cell[i + 1][2], ql_prec_name(rows[i].precision));
        if (i == 4) { /* pending: no metrics, whatever the row holds */
            for (int k = 3; k < 11; k++)
                assert_string_equal(r->cell[i + 1][k], "");
            assert_string_equal(r->cell[i + 1][11], "0");
            continue;
        }
        assert_true(fabs(strtod(r->cell[i + 1][3], NULL) - (3.5 + i * 0.125) / 4) < 1e-9);
        if (i == 1)
            assert_string_equal(r->cell[i + 1][5], "inf"); /* sqnr with no noise */
        assert_true(fabs(strtod(r->cell[i + 1][6], NULL) - 0.25 * i) < 1e-9);
        assert_string_equal(r->cell[i + 1][8], i == 4 ? "" : "0.75");
        assert_true(fabs(strtod(r->cell[i + 1][9], NULL) - (30.0 + i)) < 1e-9);
        if (i == 0)
            assert_string_equal(r->cell[i + 1][10], "");
        else
            assert_true(fabs(strtod(r->cell[i + 1][10], NULL) - 0.1 * i) < 1e-9);
        assert_string_equal(r->cell[i + 1][11], i == 4 ? "0" : "1");
    }
    free(r);
}

/* ---- planted sensitivity ------------------------------------------------------------ */

static int planted_layer = -1;

/* A Conv+Relu layer whose output only a Conv reads: output channel 0 of
 * its weight and bias times 100, the reader's input channel 0 times 1/100.
 * Through the Relu the function is the same; the activation range is not. */
static int plant(fixture *f)
{
    ql_graph *g = f->m->graph;
    const ql_qnet *q = f->q;
    for (int l = 0; l < q->n_layers && planted_layer < 0; l++) {
        const ql_qlayer *L = &q->layers[l];
        if (strcmp(g->nodes[L->node].op_type, "Conv") || L->act_node < 0 || L->bias_value < 0 ||
            g->values[L->out_value].n_consumers != 1)
            continue;
        for (int k = 0; k < q->n_layers; k++) {
            const ql_qlayer *C = &q->layers[k];
            const ql_node *n = &g->nodes[C->node];
            if (strcmp(n->op_type, "Conv") || n->in[0] != L->out_value || C->weight_value < 0)
                continue;
            ql_tensor *w = g->values[L->weight_value].constant;
            ql_tensor *b = g->values[L->bias_value].constant;
            ql_tensor *w2 = g->values[C->weight_value].constant;
            int64_t per = ql_tensor_numel(w) / w->dims[0];
            for (int64_t i = 0; i < per; i++)
                ((float *)w->data)[i] *= 100.0f;
            ((float *)b->data)[0] *= 100.0f;
            int64_t inner = ql_tensor_numel(w2) / (w2->dims[0] * w2->dims[1]);
            for (int64_t o = 0; o < w2->dims[0]; o++)
                for (int64_t i = 0; i < inner; i++)
                    ((float *)w2->data)[(o * w2->dims[1]) * inner + i] *= 0.01f;
            planted_layer = l;
            break;
        }
    }
    ql_error err = {{0}};
    if (planted_layer < 0 || ql_graph_prepare(g, &err) != QL_OK) {
        fprintf(stderr, "plant: %s\n", planted_layer < 0 ? "no Conv+Relu->Conv" : err.msg);
        return -1;
    }
    return 0;
}

static ql_metrics compare(fixture *f, const ql_qconfig *c)
{
    ql_error err = {{0}};
    ql_qsim *sim = NULL;
    ql_metrics m;
    assert_int_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    ql_eval_opts eo = {.batch = BATCH, .n_threads = 2};
    assert_int_equal(ql_eval_compare(f->m, &sim->plan, f->eval, f->labels, N_SAMPLES, &eo, &m,
                                     NULL, &err),
                     QL_OK);
    ql_qsim_free(sim);
    return m;
}

static ql_tensor *float_logits(fixture *f)
{
    ql_error err = {{0}};
    ql_exec *x = NULL;
    ql_exec_opts xo = {.n_threads = 2};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    ql_tensor in = ql_dataset_batch(f->eval, 0, N_SAMPLES);
    const ql_tensor *inp = &in;
    ql_tensor *outs[4] = {0};
    assert_int_equal(ql_exec_run(x, &inp, outs, &err), QL_OK);
    ql_exec_free(x);
    return outs[0];
}

static void check_autoprec(fixture *f, const ql_qconfig *orig, const ql_calib_stats *stats,
                           const ql_target *tg, const ql_autoprec_result *res);

static void test_planted(void **state)
{
    fixture *plain = *state, *f = calloc(1, sizeof *f);
    ql_error err = {{0}};
    assert_int_equal(load(f, plant), 0);
    const char *name = f->q->layers[planted_layer].name;

    /* the plant preserves the function: logits within 1e-4 relative */
    ql_tensor *a = float_logits(plain), *b = float_logits(f);
    float amax = 0;
    for (int64_t i = 0; i < ql_tensor_numel(a); i++)
        amax = fmaxf(amax, fabsf(((float *)a->data)[i]));
    assert_int_equal(tu_first_mismatch(a->data, b->data, ql_tensor_numel(a), 0.0f, 1e-4f * amax), -1);
    ql_tensor_free(a);
    ql_tensor_free(b);

    ql_sens_table *t = analyse(f, f->c, QL_SENS_SINGLE, 2, false, 0);
    ql_sens_table_sort(t, QL_SM_COSINE);
    print_message("planted '%s': first '%s' (cosine %.6f), second '%s' (cosine %.6f)\n", name,
                  t->rows[0].name, ql_metrics_cosine(&t->rows[0].m), t->rows[1].name,
                  ql_metrics_cosine(&t->rows[1].m));
    assert_string_equal(t->rows[0].name, name);
    ql_sens_table_free(t);

    /* target: what the plain model reaches; the planted one falls short */
    ql_metrics mp = compare(plain, plain->c), mf = compare(f, f->c);
    ql_target tg;
    char spec[64];
    snprintf(spec, sizeof spec, "cosine>=%.6f", ql_metrics_cosine(&mp) - 1e-6);
    assert_int_equal(ql_target_parse(spec, &tg, &err), QL_OK);
    assert_true(ql_target_met(&tg, &mp));
    assert_false(ql_target_met(&tg, &mf));
    /* statistics of the evaluation samples, as `qlens autoprec` collects
     * them by default: encodings it computes differ from the config's */
    ql_calib_stats *est = NULL;
    ql_calib_opts co = {.n_threads = 2, .batch = BATCH};
    assert_int_equal(ql_calib_collect(f->m, f->q, f->eval, &co, &est, &err), QL_OK);
    ql_qconfig *orig = ql_qconfig_clone(f->c);
    ql_autoprec_result res;
    ql_sens_opts so = {.n_threads = 2, .batch = BATCH};
    if (ql_autoprec(f->m, f->q, f->c, est, f->ps, f->eval, f->labels, &tg, true, &so, &res,
                    &err) != QL_OK)
        fail_msg("autoprec: %s", err.msg);
    print_message("autoprec: %d raises tried, %d kept, %d passes, met %d, int16 exhausted %d\n",
                  res.n_tried, res.n_steps, res.passes, res.met, res.int16_exhausted);
    for (int i = 0; i < res.n_tried; i++)
        print_message("  pass %d: %s %s -> %s: cosine %.8f, outcome %d\n", res.tried[i].pass,
                      f->q->layers[res.tried[i].layer].name, ql_prec_name(res.tried[i].from),
                      ql_prec_name(res.tried[i].to), ql_metrics_cosine(&res.tried[i].after),
                      (int)res.tried[i].outcome);
    /* the planted layer is the first raise, to int16 (its output quantizer
     * at 16 bits), and the prediction is what the raise does (evaluation
     * runs other batch shapes than the analysis: last bits of float sums
     * differ, now and then moving an activation one quantization step) */
    assert_true(res.n_tried >= 1);
    assert_int_equal(res.tried[0].layer, planted_layer);
    assert_int_equal(res.tried[0].to, QL_PREC_INT16);
    print_message("first raise: predicted cosine %.17g, measured %.17g\n", res.tried[0].predicted,
                  ql_metrics_cosine(&res.tried[0].after));
    assert_true(fabs(res.tried[0].predicted - ql_metrics_cosine(&res.tried[0].after)) < 1e-6);
    /* the plant also shrinks the consumer's weights for channel c to ~1/100
     * of their row, which 8-bit per-channel weights round away, and int16
     * raises only the activation bits: int16 alone cannot get there, float
     * raises take over and the target holds */
    assert_true(res.int16_exhausted);
    assert_true(res.met);
    assert_true(ql_target_met(&tg, &res.final));
    bool any_float = false;
    for (int i = 0; i < res.n_steps; i++)
        any_float |= res.steps[i].to == QL_PREC_FLOAT;
    assert_true(any_float);
    /* the config is what the result says, measured the same way */
    ql_metrics after = compare(f, f->c);
    assert_memory_equal(&after, &res.final, sizeof after);
    check_autoprec(f, orig, est, &tg, &res);
    ql_autoprec_result_clear(&res);
    ql_qconfig_free(orig);
    ql_calib_stats_free(est);
    unload(f);
}

/* orig with the layers whose precision in prec differs overridden, its
 * encodings brought in line from orig's in one step (autoprec's configs). */
static ql_qconfig *build_prec(fixture *f, const ql_qconfig *orig, const ql_prec *prec,
                              const ql_calib_stats *stats)
{
    ql_error err = {{0}};
    ql_qconfig *d = ql_qconfig_clone(orig);
    for (int l = 0; l < f->q->n_layers; l++)
        if (prec[l] != ql_qnet_layer_prec(f->q, orig, l)) {
            ql_qlayer_cfg *o = ql_qconfig_layer(d, f->q->layers[l].name);
            o->s.mask |= QL_QS_PRECISION;
            o->s.precision = prec[l];
        }
    ql_calib_opts co = {.n_threads = 1};
    if (ql_calib_update(f->m, f->q, d, stats, f->ps, f->eval, &co, orig, -1, &err) != QL_OK)
        fail_msg("calib_update: %s", err.msg);
    return d;
}

/* Properties of a finished autoprec on fixture f (whose config was orig,
 * statistics stats): a raise is kept only when it improved the metric
 * (unless forced) and undone otherwise; a raise tried on the config a pass
 * analysed does what the pass predicted; the first pass tries only raises
 * that change something and are predicted to help; the config holds
 * exactly the kept raises, each with a reason, and no layer left raised can
 * be lowered alone with the target still holding. */
static void check_autoprec(fixture *f, const ql_qconfig *orig, const ql_calib_stats *stats,
                           const ql_target *tg, const ql_autoprec_result *res)
{
    ql_error err = {{0}};
    int nl = f->q->n_layers;
    double sign = tg->at_least ? 1 : -1, cur = sign * ql_target_value(tg, &res->before);
    /* the steps are the cumulative curve: the last is the config returned */
    if (res->n_steps > 0)
        assert_memory_equal(&res->steps[res->n_steps - 1].after, &res->final, sizeof res->final);
    int checked = 0;
    for (int i = 0; i < res->n_tried; i++) {
        const ql_autoprec_step *s = &res->tried[i];
        double v = sign * ql_target_value(tg, &s->after);
        if (s->outcome == QL_AP_REVERTED)
            assert_false(v > cur);
        else if (!s->forced)
            assert_true(v > cur);
        if (s->outcome != QL_AP_REVERTED)
            cur = v;
        /* the config the pass analysed: only undone raises since its start
         * (evaluation runs other batch shapes than the analysis: last bits
         * of float sums differ, now and then moving an activation one step) */
        bool same = true;
        for (int j = i - 1; j >= 0 && res->tried[j].pass == s->pass && same; j--)
            same = res->tried[j].outcome == QL_AP_REVERTED;
        if (same) {
            double m = ql_target_value(tg, &s->after);
            if (!(fabs(s->predicted - m) <= 1e-6 * fmax(1, fabs(m))))
                fail_msg("'%s' to %s: predicted %.17g, measured %.17g",
                         f->q->layers[s->layer].name, ql_prec_name(s->to), s->predicted, m);
            checked++;
        }
    }
    print_message("  %d raises did what their pass predicted\n", checked);
    ql_sens_opts so = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = BATCH,
                       .raise_int16 = res->n_tried > 0 && res->tried[0].to == QL_PREC_INT16,
                       .stats = stats, .plugins = f->ps};
    ql_sens_table *t = NULL;
    assert_int_equal(ql_sensitivity(f->m, f->q, orig, f->eval, f->labels, &so, &t, &err), QL_OK);
    double base = sign * ql_target_value(tg, &t->base);
    for (int i = 0; i < res->n_tried && res->tried[i].pass == 1; i++) {
        const ql_sens_row *r = row_of(t, res->tried[i].layer);
        assert_false(r->unchanged);
        assert_true(sign * ql_target_value(tg, &r->m) > base);
    }
    ql_sens_table_free(t);
    ql_prec *prec = malloc((size_t)nl * sizeof *prec);
    for (int i = 0; i < nl; i++)
        prec[i] = ql_qnet_layer_prec(f->q, f->c, i);
    for (int i = 0; i < nl; i++) {
        const char *name = f->q->layers[i].name;
        const ql_autoprec_step *last = NULL;
        for (int j = 0; j < res->n_steps; j++)
            if (res->steps[j].layer == i)
                last = &res->steps[j];
        const ql_qlayer_cfg *o = NULL;
        for (int j = 0; j < f->c->n_layers; j++)
            if (!strcmp(f->c->layers[j].name, name))
                o = &f->c->layers[j];
        if (!last) {
            assert_int_equal(prec[i], ql_qnet_layer_prec(f->q, orig, i));
            continue;
        }
        assert_int_equal(prec[i], last->to);
        assert_true(o && o->reason && !strncmp(o->reason, "autoprec: step ", 15));
        prec[i] = last->from;
        ql_qconfig *lower = build_prec(f, orig, prec, stats);
        prec[i] = last->to;
        ql_metrics m = compare(f, lower);
        if (ql_target_met(tg, &m))
            fail_msg("'%s' back to %s: the target still holds", name, ql_prec_name(last->from));
        ql_qconfig_free(lower);
    }
    /* and the config is the one those precisions make */
    ql_qconfig *same = build_prec(f, orig, prec, stats);
    ql_metrics m = compare(f, same);
    assert_memory_equal(&m, &res->final, sizeof m);
    ql_qconfig_free(same);
    free(prec);
}

/* All-but with enc_from: a raise is predicted on the config autoprec
 * would make, the original's encodings brought in line in one step. A
 * layer at int16 set to float gives its output back the bits it had in the
 * original, and so the original's encoding, not one computed anew from the
 * statistics (here of other samples than the config's). */
static void test_all_but_enc_from(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    const ql_qnet *q = f->q;
    enum { NB = N_SAMPLES / BATCH };
    int nl = q->n_layers;
    ql_calib_stats *est = NULL;
    ql_calib_opts co = {.n_threads = 2, .batch = BATCH};
    assert_int_equal(ql_calib_collect(f->m, q, f->eval, &co, &est, &err), QL_OK);
    ql_prec *prec = malloc((size_t)nl * sizeof *prec);
    for (int l = 0; l < nl; l++)
        prec[l] = l % 4 == 1 ? QL_PREC_INT16 : ql_qnet_layer_prec(q, f->c, l);
    ql_qconfig *c = build_prec(f, f->c, prec, est);
    ql_sens_opts o = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = BATCH, .stats = est,
                      .plugins = f->ps, .enc_from = f->c};
    ql_sens_table *t = NULL, *bf = NULL;
    assert_int_equal(ql_sensitivity(f->m, q, c, f->eval, f->labels, &o, &t, &err), QL_OK);
    o.brute_force = true;
    assert_int_equal(ql_sensitivity(f->m, q, c, f->eval, f->labels, &o, &bf, &err), QL_OK);
    assert_same(t, bf, "enc_from: incremental vs brute force");
    ql_tensor *yf[NB], *wf[NB]; /* the float model's outputs, the reference of every row */
    ref_run(f, NULL, -1, yf, wf);
    for (int l = 0; l < nl; l++) {
        ql_prec was = prec[l];
        prec[l] = QL_PREC_FLOAT;
        ql_qconfig *cl = build_prec(f, f->c, prec, est);
        prec[l] = was;
        ql_metrics m = config_metrics(f, cl, yf);
        if (memcmp(&m, &t->rows[l].m, sizeof m) != 0)
            fail_msg("enc_from, layer %s (%s) to float: cosine %.17g (reference %.17g)",
                     q->layers[l].name, ql_prec_name(was), ql_metrics_cosine(&t->rows[l].m),
                     ql_metrics_cosine(&m));
        ql_qconfig_free(cl);
    }
    for (int b = 0; b < NB; b++)
        ql_tensor_free(yf[b]);
    ql_sens_table_free(t);
    ql_sens_table_free(bf);
    ql_qconfig_free(c);
    free(prec);
    ql_calib_stats_free(est);
}

/* With a march, layers that cost nothing (the residual Adds, the pooling)
 * are not tried first for that alone: those whose raise changes nothing
 * are never tried, and gains are weighed by cost, not divided by it. */
static void test_autoprec_march(void **state)
{
    fixture *f = *state;
    ql_error err = {{0}};
    ql_metrics m0 = compare(f, f->c);
    ql_target tg;
    char spec[64];
    snprintf(spec, sizeof spec, "cosine>=%.8f", 1 - (1 - ql_metrics_cosine(&m0)) / 4);
    assert_int_equal(ql_target_parse(spec, &tg, &err), QL_OK);
    ql_qconfig *orig = ql_qconfig_clone(f->c);
    ql_autoprec_result res;
    ql_sens_opts so = {.n_threads = 2, .batch = BATCH, .march = ql_autoprec_march("nash-e")};
    if (ql_autoprec(f->m, f->q, f->c, f->stats, f->ps, f->eval, f->labels, &tg, false, &so, &res,
                    &err) != QL_OK)
        fail_msg("autoprec: %s", err.msg);
    print_message("%s with a march: %d raises tried, %d kept, met %d\n", spec, res.n_tried,
                  res.n_steps, res.met);
    assert_true(res.met);
    check_autoprec(f, orig, f->stats, &tg, &res);
    /* the first pass's order: gain * mean / (mean + MACs) over the raises
     * that change something and gain, mean MACs over them, best first */
    ql_sens_opts ao = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = BATCH,
                       .stats = f->stats, .plugins = f->ps};
    ql_sens_table *t = NULL;
    assert_int_equal(ql_sensitivity(f->m, f->q, orig, f->eval, f->labels, &ao, &t, &err), QL_OK);
    int n = 0, idx[64];
    double score[64], sum = 0, base = ql_metrics_cosine(&t->base);
    for (int i = 0; i < t->n; i++)
        if (!t->rows[i].unchanged && ql_metrics_cosine(&t->rows[i].m) > base) {
            idx[n++] = i;
            sum += (double)f->q->layers[t->rows[i].layer].macs;
        }
    for (int k = 0; k < n; k++) {
        double macs = (double)f->q->layers[t->rows[idx[k]].layer].macs;
        score[k] = (ql_metrics_cosine(&t->rows[idx[k]].m) - base) * (sum / n) / (sum / n + macs);
    }
    int pos = 0;
    for (int i = 0; i < res.n_tried && res.tried[i].pass == 1; i++, pos++) {
        int best = -1;
        for (int k = 0; k < n; k++)
            if (score[k] > -INFINITY && (best < 0 || score[k] > score[best]))
                best = k;
        assert_true(best >= 0);
        assert_int_equal(res.tried[i].layer, t->rows[idx[best]].layer);
        score[best] = -INFINITY;
    }
    print_message("first pass: %d raises in the order of weighed gains\n", pos);
    assert_true(pos > 0);
    ql_sens_table_free(t);
    ql_autoprec_result_clear(&res);
    ql_qconfig_free(orig);
}

static void test_targets(void **state)
{
    (void)state;
    ql_error err = {{0}};
    ql_target t;
    assert_int_equal(ql_target_parse("top1_drop<=0.2", &t, &err), QL_OK);
    assert_string_equal(t.metric, "top1_drop");
    assert_false(t.at_least);
    assert_true(t.value == 0.2);
    ql_metrics m = {.n = 1000, .labelled = 1000, .correct_ref = 900, .correct_q = 898};
    assert_true(ql_target_met(&t, &m)); /* 0.2 points */
    m.correct_q = 897;
    assert_false(ql_target_met(&t, &m));
    m.labelled = 0;
    assert_false(ql_target_met(&t, &m)); /* no labels: never met */
    assert_int_equal(ql_target_parse(" cosine >= 0.999 ", &t, &err), QL_OK);
    assert_true(t.at_least && t.value == 0.999 && !strcmp(t.metric, "cosine"));
    assert_int_not_equal(ql_target_parse("cosine=0.9", &t, &err), QL_OK);
    assert_int_not_equal(ql_target_parse("accuracy>=0.9", &t, &err), QL_OK);
    assert_int_not_equal(ql_target_parse("cosine>=x", &t, &err), QL_OK);
    assert_int_not_equal(ql_target_parse("cosine>=", &t, &err), QL_OK);
    /* targets in the wrong direction or that no model reaches */
    static const char *const refused[] = {"mse>=0.1",      "max_abs>=0",   "top1_drop>=1",
                                          "cosine<=0.9",   "sqnr_db<=30",  "top1_agree<=0.9",
                                          "cosine>=2",     "top1>=93",     "top1_agree>=1.01",
                                          "mse<=-1",       "max_abs<=-0.1", "top1_drop<=-101"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (ql_target_parse(refused[i], &t, &err) == QL_OK)
            fail_msg("target '%s' accepted", refused[i]);
    assert_int_equal(ql_target_parse("cosine>=2", &t, &err), QL_ERR_ARG);
    assert_non_null(strstr(err.msg, "no model reaches it"));
    assert_int_equal(ql_target_parse("mse>=0.1", &t, &err), QL_ERR_ARG);
    assert_non_null(strstr(err.msg, "write mse<=0.1"));
    static const char *const fine[] = {"cosine>=1", "top1>=0.9",      "sqnr_db>=300",
                                       "mse<=0",    "top1_drop<=-100", "max_abs<=0.5"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++)
        if (ql_target_parse(fine[i], &t, &err) != QL_OK)
            fail_msg("target '%s': %s", fine[i], err.msg);
    assert_non_null(ql_autoprec_march("nash-e"));
    assert_null(ql_autoprec_march("nash-z"));
    ql_sens_mode md;
    assert_true(ql_sens_mode_parse("all-but", &md) && md == QL_SENS_ALL_BUT);
    assert_false(ql_sens_mode_parse("allbut", &md));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_csv_round_trip),
        cmocka_unit_test_setup_teardown(test_incremental_is_brute_force, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matches_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_but_mixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_but_enc_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_reuse_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_planted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_autoprec_march, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
