/* Unit tests of the sensitivity analysis on the shipped example: the
 * incremental runs equal full re-executions bit for bit (the engine's
 * brute-force path, and a reference written here from configs built the
 * obvious way: all-but is the config with the layer set to float, or
 * int16, encodings brought in line as a session does), whatever the thread
 * count and cache budget (the workers share out the base runs' batches and
 * the layers); executors that keep their buffers compute what plain ones
 * do; a cancelled table holds finished rows only, the others pending; the
 * CSV survives awkward names through libcsv. Autoprec and the planted
 * layer are in test_autoprec.c. */
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
#include "engine/exec.h"
#include "engine/qsim.h"
#include "engine/sensitivity.h"
#include "sens_fixture.h"

static void test_incremental_is_brute_force(void **state)
{
    sf_fixture *f = *state;
    for (int mode = 0; mode < QL_SENS_MODE_COUNT; mode++) {
        ql_sens_table *inc1 = sf_analyse(f, f->c, (ql_sens_mode)mode, 1, false, 0);
        ql_sens_table *inc2 = sf_analyse(f, f->c, (ql_sens_mode)mode, 2, false, 0);
        /* three workers for three batches and 17 layers: every worker has
         * base runs and layers of its own (both kinds of base run) */
        bool three = mode == QL_SENS_SINGLE || mode == QL_SENS_ALL_BUT;
        ql_sens_table *inc3 = three ? sf_analyse(f, f->c, (ql_sens_mode)mode, 3, false, 0) : NULL;
        ql_sens_table *bf = sf_analyse(f, f->c, (ql_sens_mode)mode, 2, true, 0);
        /* a budget of a few samples: chunks of one small batch (single and
         * all-but, the two kinds of base run) */
        bool chunked = mode == QL_SENS_SINGLE || mode == QL_SENS_ALL_BUT;
        ql_sens_table *small =
            chunked ? sf_analyse(f, f->c, (ql_sens_mode)mode, 2, false, 1 << 20) : NULL;
        ql_sens_table *small_bf =
            chunked ? sf_analyse(f, f->c, (ql_sens_mode)mode, 2, true, 1 << 20) : NULL;
        assert_int_equal(inc1->n, f->q->n_layers);
        assert_int_equal(inc1->samples, SF_SAMPLES);
        for (int i = 0; i < inc1->n; i++)
            assert_int_equal(inc1->rows[i].m.n, SF_SAMPLES);
        sf_assert_same(inc1, bf, "incremental vs brute force");
        sf_assert_same(inc1, inc2, "1 vs 2 threads");
        if (three)
            sf_assert_same(inc1, inc3, "1 vs 3 threads");
        if (chunked) {
            sf_assert_same(small, small_bf, "chunked: incremental vs brute force");
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
static ql_qconfig *with_prec(sf_fixture *f, const ql_qconfig *c, int l, ql_prec to,
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

/* Single and all-but rows, and the local figures, against full runs: the
 * float run (every layer's output kept) once, then per layer its single
 * plan (the single row, and the local figures' signal and noise), only its
 * weights, only its output quantizer, and the config with it set to float
 * (the all-but row). */
static void test_matches_reference(void **state)
{
    sf_fixture *f = *state;
    ql_error err = {{0}};
    const ql_qnet *q = f->q;
    int nl = q->n_layers;
    ql_qsim *full = NULL;
    assert_int_equal(ql_qsim_build(q, f->c, &full, &err), QL_OK);
    size_t nv = (size_t)q->g->n_values;
    const ql_encoding **act = calloc(nv, sizeof *act);
    const ql_tensor **cst = calloc(nv, sizeof *cst);
    ql_sens_table *t[2];
    for (int mode = 0; mode < 2; mode++)
        t[mode] = sf_analyse(f, f->c, (ql_sens_mode)mode, 2, false, 0);
    int *outv = malloc((size_t)nl * sizeof *outv);
    for (int l = 0; l < nl; l++)
        outv[l] = q->layers[l].out_value;
    ql_tensor *yf[SF_BATCHES], **wf = calloc((size_t)nl * SF_BATCHES, sizeof *wf);
    sf_ref_run(f, NULL, nl, outv, yf, wf);
    int unchanged = 0;
    for (int l = 0; l < nl; l++) {
        const ql_qlayer *L = &q->layers[l];
        ql_metrics m[2];
        double sig = 0, noise = 0, wn = 0, an = 0;
        for (int k = 0; k < 3; k++) {
            memset(act, 0, nv * sizeof *act);
            memset(cst, 0, nv * sizeof *cst);
            if (k == 0) {
                ref_plan(q, full, l, act, cst);
            } else if (k == 1) {
                if (L->weight_value < 0)
                    continue;
                cst[L->weight_value] = full->constants[L->weight_value];
                if (L->bias_value >= 0)
                    cst[L->bias_value] = full->constants[L->bias_value];
            } else {
                act[L->out_value] = full->act[L->out_value];
            }
            ql_exec_quant p = {(const struct ql_encoding *const *)act, cst};
            ql_tensor *yq[SF_BATCHES], *wq[SF_BATCHES];
            sf_ref_run(f, &p, 1, &L->out_value, yq, wq);
            if (k == 0)
                m[QL_SENS_SINGLE] = sf_metrics(f, yf, yq);
            for (int b = 0; b < SF_BATCHES; b++) {
                double s = 0, n = sum_sq(wf[l * SF_BATCHES + b], wq[b], &s);
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
        /* all-but: what the config with this layer float computes */
        ql_qconfig *cl = with_prec(f, f->c, l, QL_PREC_FLOAT, NULL);
        m[QL_SENS_ALL_BUT] = sf_config_metrics(f, cl, yf);
        ql_qconfig_free(cl);
        double local = noise == 0 ? INFINITY : 10.0 * log10(sig / noise);
        double share = L->weight_value < 0 || wn + an == 0 ? NAN : wn / (wn + an);
        for (int mode = 0; mode < 2; mode++) {
            const ql_sens_row *r = &t[mode]->rows[l];
            assert_int_equal(r->layer, l);
            if (memcmp(&m[mode], &r->m, sizeof m[mode]) != 0)
                fail_msg("%s layer %s: cosine %.17g (reference %.17g)",
                         ql_sens_mode_name((ql_sens_mode)mode), L->name,
                         ql_metrics_cosine(&r->m), ql_metrics_cosine(&m[mode]));
            /* a raise that changes no quantizer has the config's metrics */
            if (mode == QL_SENS_ALL_BUT) {
                assert_int_equal(r->raised_to, QL_PREC_FLOAT);
                if (r->unchanged) {
                    unchanged++;
                    assert_memory_equal(&r->m, &t[mode]->base, sizeof r->m);
                }
            }
            /* local figures: the layer's output with its single plan, with
             * only its weights, with only its output quantizer */
            if (memcmp(&local, &r->local_sqnr_db, sizeof local) != 0 ||
                memcmp(&share, &r->weight_share, sizeof share) != 0)
                fail_msg("%s layer %s: local %.17g share %.17g (reference %.17g, %.17g)",
                         ql_sens_mode_name((ql_sens_mode)mode), L->name, r->local_sqnr_db,
                         r->weight_share, local, share);
        }
    }
    /* the residual Adds and the pooling read and feed int8 layers only:
     * setting one float changes nothing */
    print_message("all-but: %d of %d layers change nothing when set to float\n", unchanged, nl);
    assert_true(unchanged > 0);
    for (int b = 0; b < SF_BATCHES; b++)
        ql_tensor_free(yf[b]);
    for (int i = 0; i < nl * SF_BATCHES; i++)
        ql_tensor_free(wf[i]);
    free(wf);
    free(outv);
    for (int mode = 0; mode < 2; mode++)
        ql_sens_table_free(t[mode]);
    free(act);
    free(cst);
    ql_qsim_free(full);
}
/* All-but on a config mixing int8 and int16, raising to int16 and to
 * float: a raise changes the bits of tensors at the boundaries (and the
 * biases that follow the input encodings), and the table still equals the
 * config made the session's way, run in full; incremental equals brute
 * force and any thread count, with statistics or without. */
static void test_all_but_mixed(void **state)
{
    sf_fixture *f = *state;
    ql_error err = {{0}};
    const ql_qnet *q = f->q;
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
    ql_tensor *yf[SF_BATCHES]; /* the float model's outputs, the reference of every row */
    sf_ref_run(f, NULL, 0, NULL, yf, NULL);
    for (int k = 0; k < 3; k++) {
        bool int16 = k != 1, stats = k != 2;
        ql_sens_opts o = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = SF_BATCH,
                          .raise_int16 = int16, .stats = stats ? f->stats : NULL,
                          .plugins = f->ps};
        ql_sens_table *t[3] = {NULL, NULL, NULL};
        for (int i = 0; i < 3; i++) {
            o.n_threads = i == 1 ? 1 : 2;
            o.brute_force = i == 2;
            if (ql_sensitivity(f->m, q, mixed, f->eval, f->labels, &o, &t[i], &err) != QL_OK)
                fail_msg("sensitivity: %s", err.msg);
        }
        sf_assert_same(t[0], t[1], "mixed all-but: 2 vs 1 threads");
        sf_assert_same(t[0], t[2], "mixed all-but: incremental vs brute force");
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
            ql_metrics m = sf_config_metrics(f, cl, yf);
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
    for (int b = 0; b < SF_BATCHES; b++)
        ql_tensor_free(yf[b]);
    ql_qconfig_free(mixed);
}

/* Executors that keep their buffers between runs (as the analysis's do)
 * give the outputs and observed values plain ones give, bit for bit, over
 * runs whose batch sizes and plans change (buffers of other sizes spare). */
static void test_exec_reuse_buffers(void **state)
{
    sf_fixture *f = *state;
    ql_error err = {{0}};
    ql_qsim *full = NULL;
    ql_exec *x[2] = {NULL, NULL};
    int want = f->q->layers[5].out_value;
    ql_tensor *copy[2];
    sf_obs ro[2] = {{1, &want, &copy[0]}, {1, &want, &copy[1]}};
    assert_int_equal(ql_qsim_build(f->q, f->c, &full, &err), QL_OK);
    for (int k = 0; k < 2; k++) {
        ql_exec_opts xo = {.n_threads = 1, .observer = sf_observer, .observer_user = &ro[k],
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
            copy[k] = NULL;
            assert_int_equal(ql_exec_set_quant(x[k], r % 4 < 2 ? &full->plan : NULL, &err), QL_OK);
            if (ql_exec_run(x[k], &inp, outs[k], &err) != QL_OK)
                fail_msg("run %d: %s", r, err.msg);
            assert_non_null(copy[k]);
        }
        assert_int_equal(ql_tensor_numel(outs[0][0]), ql_tensor_numel(outs[1][0]));
        assert_memory_equal(outs[0][0]->data, outs[1][0]->data, ql_tensor_nbytes(outs[0][0]));
        assert_int_equal(ql_tensor_numel(copy[0]), ql_tensor_numel(copy[1]));
        assert_memory_equal(copy[0]->data, copy[1]->data, ql_tensor_nbytes(copy[0]));
        for (int k = 0; k < 2; k++) {
            ql_tensor_free(outs[k][0]);
            ql_tensor_free(copy[k]);
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

/* A cancel before the base runs leaves every row pending; a progress
 * callback that says stop leaves the finished rows as results, equal to a
 * full analysis's, and the others pending with no metrics, also when the
 * samples go in chunks (where a row cut short holds sums over the first
 * chunks only); sorting and the CSV keep them after the results. */
static void test_cancel(void **state)
{
    sf_fixture *f = *state;
    ql_error err = {{0}};
    volatile int cancel = 1;
    ql_sens_table *t = NULL, *full = sf_analyse(f, f->c, QL_SENS_SINGLE, 2, false, 0);
    ql_sens_opts o = {.n_threads = 2, .batch = SF_BATCH, .cancel = &cancel};
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
        ql_sens_table *whole =
            chunked ? sf_analyse(f, f->c, QL_SENS_SINGLE, 2, false, 1 << 20) : full;
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
                assert_memory_equal(&r->m, &sf_row_of(whole, r->layer)->m, sizeof r->m);
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

int main(void)
{
    /* one fixture for the binary: no test changes it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_round_trip),
        cmocka_unit_test(test_incremental_is_brute_force),
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_all_but_mixed),
        cmocka_unit_test(test_exec_reuse_buffers),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, sf_setup, sf_teardown);
}
