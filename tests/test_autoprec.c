/* Unit tests of autoprec and of what it relies on, on the shipped example:
 * targets are parsed and impossible ones refused; a planted sensitive
 * layer ranks first and is the first one autoprec raises; autoprec keeps
 * only raises that help, never tries one that changes nothing, goes on to
 * float raises when int16 ones run out, and leaves no raise the target
 * does not need; all-but with enc_from predicts a raise on the config
 * autoprec would make; a march weighs gains by cost. */
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
#include "engine/exec.h"
#include "engine/qsim.h"
#include "engine/sensitivity.h"
#include "sens_fixture.h"
#include "testutil.h"

/* ---- planted sensitivity ------------------------------------------------------------ */

static int planted_layer = -1;

/* A Conv+Relu layer whose output only a Conv reads: output channel 0 of
 * its weight and bias times 100, the reader's input channel 0 times 1/100.
 * Through the Relu the function is the same; the activation range is not. */
static int plant(sf_fixture *f)
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

static ql_metrics compare(sf_fixture *f, const ql_qconfig *c)
{
    ql_error err = {{0}};
    ql_qsim *sim = NULL;
    ql_metrics m;
    assert_int_equal(ql_qsim_build(f->q, c, &sim, &err), QL_OK);
    ql_eval_opts eo = {.batch = SF_BATCH, .n_threads = 2};
    assert_int_equal(ql_eval_compare(f->m, &sim->plan, f->eval, f->labels, SF_SAMPLES, &eo, &m,
                                     NULL, &err),
                     QL_OK);
    ql_qsim_free(sim);
    return m;
}

static ql_tensor *float_logits(sf_fixture *f)
{
    ql_error err = {{0}};
    ql_exec *x = NULL;
    ql_exec_opts xo = {.n_threads = 2};
    assert_int_equal(ql_exec_new(f->m->graph, &xo, &x, &err), QL_OK);
    ql_tensor in = ql_dataset_batch(f->eval, 0, SF_SAMPLES);
    const ql_tensor *inp = &in;
    ql_tensor *outs[4] = {0};
    assert_int_equal(ql_exec_run(x, &inp, outs, &err), QL_OK);
    ql_exec_free(x);
    return outs[0];
}

static void check_autoprec(sf_fixture *f, const ql_qconfig *orig, const ql_calib_stats *stats,
                           const ql_target *tg, const ql_autoprec_result *res);

static void test_planted(void **state)
{
    sf_fixture *plain = *state, *f = calloc(1, sizeof *f);
    ql_error err = {{0}};
    assert_int_equal(sf_load(f, plant), 0);
    const char *name = f->q->layers[planted_layer].name;

    /* the plant preserves the function: logits within 1e-4 relative */
    ql_tensor *a = float_logits(plain), *b = float_logits(f);
    float amax = 0;
    for (int64_t i = 0; i < ql_tensor_numel(a); i++)
        amax = fmaxf(amax, fabsf(((float *)a->data)[i]));
    assert_int_equal(
        tu_first_mismatch(a->data, b->data, ql_tensor_numel(a), 0.0f, 1e-4f * amax), -1);
    ql_tensor_free(a);
    ql_tensor_free(b);

    ql_sens_table *t = sf_analyse(f, f->c, QL_SENS_SINGLE, 2, false, 0);
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
    ql_calib_opts co = {.n_threads = 2, .batch = SF_BATCH};
    assert_int_equal(ql_calib_collect(f->m, f->q, f->eval, &co, &est, &err), QL_OK);
    ql_qconfig *orig = ql_qconfig_clone(f->c);
    ql_autoprec_result res;
    ql_sens_opts so = {.n_threads = 2, .batch = SF_BATCH};
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
    sf_unload(f);
}

/* orig with the layers whose precision in prec differs overridden, its
 * encodings brought in line from orig's in one step (autoprec's configs). */
static ql_qconfig *build_prec(sf_fixture *f, const ql_qconfig *orig, const ql_prec *prec,
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
static void check_autoprec(sf_fixture *f, const ql_qconfig *orig, const ql_calib_stats *stats,
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
    ql_sens_opts so = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = SF_BATCH,
                       .raise_int16 = res->n_tried > 0 && res->tried[0].to == QL_PREC_INT16,
                       .stats = stats, .plugins = f->ps};
    ql_sens_table *t = NULL;
    assert_int_equal(ql_sensitivity(f->m, f->q, orig, f->eval, f->labels, &so, &t, &err), QL_OK);
    double base = sign * ql_target_value(tg, &t->base);
    for (int i = 0; i < res->n_tried && res->tried[i].pass == 1; i++) {
        const ql_sens_row *r = sf_row_of(t, res->tried[i].layer);
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
    sf_fixture *f = *state;
    ql_error err = {{0}};
    const ql_qnet *q = f->q;
    int nl = q->n_layers;
    ql_calib_stats *est = NULL;
    ql_calib_opts co = {.n_threads = 2, .batch = SF_BATCH};
    assert_int_equal(ql_calib_collect(f->m, q, f->eval, &co, &est, &err), QL_OK);
    ql_prec *prec = malloc((size_t)nl * sizeof *prec);
    for (int l = 0; l < nl; l++)
        prec[l] = l % 4 == 1 ? QL_PREC_INT16 : ql_qnet_layer_prec(q, f->c, l);
    ql_qconfig *c = build_prec(f, f->c, prec, est);
    ql_sens_opts o = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = SF_BATCH, .stats = est,
                      .plugins = f->ps, .enc_from = f->c};
    ql_sens_table *t = NULL, *bf = NULL;
    assert_int_equal(ql_sensitivity(f->m, q, c, f->eval, f->labels, &o, &t, &err), QL_OK);
    o.brute_force = true;
    assert_int_equal(ql_sensitivity(f->m, q, c, f->eval, f->labels, &o, &bf, &err), QL_OK);
    sf_assert_same(t, bf, "enc_from: incremental vs brute force");
    ql_tensor *yf[SF_BATCHES]; /* the float model's outputs, the reference of every row */
    sf_ref_run(f, NULL, 0, NULL, yf, NULL);
    for (int l = 0; l < nl; l++) {
        ql_prec was = prec[l];
        prec[l] = QL_PREC_FLOAT;
        ql_qconfig *cl = build_prec(f, f->c, prec, est);
        prec[l] = was;
        ql_metrics m = sf_config_metrics(f, cl, yf);
        if (memcmp(&m, &t->rows[l].m, sizeof m) != 0)
            fail_msg("enc_from, layer %s (%s) to float: cosine %.17g (reference %.17g)",
                     q->layers[l].name, ql_prec_name(was), ql_metrics_cosine(&t->rows[l].m),
                     ql_metrics_cosine(&m));
        ql_qconfig_free(cl);
    }
    for (int b = 0; b < SF_BATCHES; b++)
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
    sf_fixture *f = *state;
    ql_error err = {{0}};
    ql_metrics m0 = compare(f, f->c);
    ql_target tg;
    char spec[64];
    snprintf(spec, sizeof spec, "cosine>=%.8f", 1 - (1 - ql_metrics_cosine(&m0)) / 4);
    assert_int_equal(ql_target_parse(spec, &tg, &err), QL_OK);
    ql_qconfig *orig = ql_qconfig_clone(f->c);
    ql_autoprec_result res;
    ql_sens_opts so = {.n_threads = 2, .batch = SF_BATCH, .march = ql_autoprec_march("nash-e")};
    if (ql_autoprec(f->m, f->q, f->c, f->stats, f->ps, f->eval, f->labels, &tg, false, &so, &res,
                    &err) != QL_OK)
        fail_msg("autoprec: %s", err.msg);
    print_message("%s with a march: %d raises tried, %d kept, met %d\n", spec, res.n_tried,
                  res.n_steps, res.met);
    assert_true(res.met);
    check_autoprec(f, orig, f->stats, &tg, &res);
    /* the first pass's order: gain * mean / (mean + MACs) over the raises
     * that change something and gain, mean MACs over them, best first */
    ql_sens_opts ao = {.mode = QL_SENS_ALL_BUT, .n_threads = 2, .batch = SF_BATCH,
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
        cmocka_unit_test_setup_teardown(test_planted, sf_setup, sf_teardown),
        cmocka_unit_test_setup_teardown(test_all_but_enc_from, sf_setup, sf_teardown),
        cmocka_unit_test_setup_teardown(test_autoprec_march, sf_setup, sf_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
