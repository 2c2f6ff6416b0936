/* Handlers that measure the quantized model: eval (float vs fake-quant),
 * per-layer sensitivity, automatic mixed precision, and the sensitivity
 * table's CSV export. Results become part of the session state, so undo
 * brings back the previous ones. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "engine/evaluate.h"
#include "engine/pool.h"
#include "engine/qsim.h"
#include "report.h"

static bool eval_progress(void *user, int64_t done, int64_t total)
{
    return session_progress(user, "eval", done, total);
}

static bool sens_progress(void *user, int64_t done, int64_t total)
{
    return session_progress(user, "sensitivity", done, total);
}

/* `eval float`: the float model alone (top-1 with labels, throughput). */
static ql_status eval_float(session *s, ql_error *err)
{
    const ses_data *d = s->cur.eval;
    ql_eval_opts eo = {.batch = s->o.batch, .n_threads = s->o.n_threads,
                       .progress = eval_progress, .progress_user = s, .cancel = s->o.cancel};
    ql_eval_result res = {0};
    ql_status st = ql_eval_float(s->cur.model->m, d->d, d->labels, d->n_labels, &eo, &res, err);
    if (st == QL_OK && session_cancelled(s))
        st = ql_fail(err, QL_ERR_CANCELLED, "cancelled");
    for (int64_t i = 0; st == QL_OK && i < d->n_labels; i++)
        if (d->labels[i] >= res.n_classes)
            st = ql_fail(err, QL_ERR_DATA,
                         "label of sample %lld is %lld but the model has %lld classes",
                         (long long)i, (long long)d->labels[i], (long long)res.n_classes);
    if (st == QL_OK) {
        ses_eval e = {.valid = true, .float_only = true, .labels = d->labels != NULL,
                      .cfg_gen = s->cur.cfg_gen, .seconds = res.seconds, .batch = res.batch,
                      .threads = res.threads};
        e.m.n = res.n;
        e.m.correct_ref = d->labels ? res.correct : 0;
        s->cur.last_eval = e;
    }
    ql_eval_result_clear(&res);
    return st;
}

/* Prints the wall time of the last eval, when timings are wanted. */
static void eval_timings(session *s)
{
    const ses_eval *e = &s->cur.last_eval;
    if (!s->o.timings)
        return;
    fprintf(session_out(s), "time:         %.3f s (%.1f samples/s, batch %lld, %d threads)\n",
            e->seconds, e->seconds > 0 ? (double)e->m.n / e->seconds : 0.0, (long long)e->batch,
            e->threads);
}

ql_status sc_eval(session *s, int argc, char **argv, ql_error *err)
{
    bool float_only = argc == 1 && !strcmp(argv[0], "float");
    if (argc > 1 || (argc == 1 && !float_only))
        return command_usage("eval", err);
    ql_status st;
    if ((st = command_need_eval_data(s, err)) != QL_OK)
        return st;
    if (float_only) {
        if ((st = eval_float(s, err)) != QL_OK)
            return st;
        report_eval(session_out(s), s->cur.model->m->graph, &s->cur.last_eval, false);
        eval_timings(s);
        return QL_OK;
    }
    if ((st = command_need_encodings(s, err)) != QL_OK)
        return st;
    const ses_model *x = s->cur.model;
    const ses_data *d = s->cur.eval;
    ql_qsim *sim = NULL;
    if ((st = ql_qsim_build(x->q, s->cur.cfg, &sim, err)) != QL_OK)
        return st;
    const ql_graph *g = x->m->graph;
    ql_metrics *per = calloc((size_t)g->n_outputs, sizeof *per);
    if (!per) {
        ql_qsim_free(sim);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    ql_eval_opts eo = {.batch = s->o.batch, .n_threads = s->o.n_threads,
                       .progress = eval_progress, .progress_user = s, .cancel = s->o.cancel,
                       .per_output = per};
    ql_metrics mt;
    double secs = 0;
    st = ql_eval_compare(x->m, &sim->plan, d->d, d->labels, d->n_labels, &eo, &mt, &secs, err);
    ql_qsim_free(sim);
    if (st != QL_OK) {
        free(per);
        return st;
    }
    ses_eval *e = &s->cur.last_eval;
    *e = (ses_eval){.valid = true, .m = mt, .labels = d->labels != NULL,
                    .cfg_gen = s->cur.cfg_gen, .seconds = secs,
                    .batch = eo.batch > 0 ? eo.batch : 32,
                    .threads = s->o.n_threads > 0 ? s->o.n_threads : ql_default_threads()};
    e->n_out = g->n_outputs < SES_EVAL_OUTPUTS ? g->n_outputs : SES_EVAL_OUTPUTS;
    memcpy(e->out, per, (size_t)e->n_out * sizeof *per);
    free(per);
    report_eval(session_out(s), g, e, false);
    eval_timings(s);
    return QL_OK;
}

ql_status sc_sensitivity(session *s, int argc, char **argv, ql_error *err)
{
    enum { MODE, METRIC, LIMIT, LAYER, CACHE, BRUTE, PARTIAL, N_OPTS };
    command_opt o[N_OPTS] = {{"mode", false, -1},     {"metric", false, -1},
                             {"limit", false, -1},    {"layer", false, -1},
                             {"cache-mb", false, -1}, {"brute-force", true, -1},
                             {"keep-partial", true, -1}};
    ql_sens_mode mode = QL_SENS_SINGLE;
    ql_sens_metric metric = QL_SM_COSINE;
    long limit = 0, cache_mb = 0;
    ql_status st;
    if ((st = command_parse_opts(argc, argv, o, N_OPTS, err)) != QL_OK ||
        (st = command_need_eval_data(s, err)) != QL_OK || (st = command_need_encodings(s, err)) != QL_OK)
        return st;
    if (o[MODE].at >= 0 && !ql_sens_mode_parse(argv[o[MODE].at], &mode))
        return ql_fail(err, QL_ERR_ARG,
                       "mode: '%s' is not single, all-but, weights or activations",
                       argv[o[MODE].at]);
    if (o[METRIC].at >= 0 && !ql_sens_metric_parse(argv[o[METRIC].at], &metric))
        return ql_fail(err, QL_ERR_ARG,
                       "metric: '%s' is not cosine, mse, sqnr_db, max_abs, top1_agree, top1 or "
                       "local_sqnr_db",
                       argv[o[METRIC].at]);
    if (o[LIMIT].at >= 0 &&
        (st = command_parse_int("limit", argv[o[LIMIT].at], 1, 1L << 40, &limit, err)) != QL_OK)
        return st;
    if (o[CACHE].at >= 0 && (st = command_parse_int("cache-mb", argv[o[CACHE].at], 1, 1L << 24,
                                                    &cache_mb, err)) != QL_OK)
        return st;
    const ses_data *d = s->cur.eval;
    if (metric == QL_SM_TOP1 && !d->labels)
        return ql_fail(err, QL_ERR_ARG, "metric top1 needs labels ('data eval PATH labels L')");
    /* the first `limit` samples, as a view */
    ql_tensor view = ql_dataset_batch(d->d, 0, limit > 0 && limit < d->d->n ? limit : d->d->n);
    ql_dataset sub = {.samples = &view, .n = view.dims[0], .source = d->d->source};
    /* all-but computes the encodings a layer set to float calls for (bits
     * that change at an int8/int16 boundary) from the statistics, as
     * `set layer L precision float` would, when the session has them */
    ql_sens_opts so = {.mode = mode, .n_threads = s->o.n_threads, .batch = s->o.batch,
                       .cache_bytes = (int64_t)cache_mb << 20,
                       .brute_force = o[BRUTE].at >= 0,
                       .only_layer = o[LAYER].at >= 0 ? argv[o[LAYER].at] : NULL,
                       .progress = sens_progress, .progress_user = s, .cancel = s->o.cancel,
                       .stats = s->cur.stats ? s->cur.stats->s : NULL, .plugins = s->plugins};
    ql_sens_table *t = NULL;
    const ses_model *x = s->cur.model;
    if ((st = ql_sensitivity(x->m, x->q, s->cur.cfg, &sub, d->labels, &so, &t, err)) != QL_OK)
        return st;
    /* a cancelled run fails and changes nothing, unless the rows done are wanted */
    if ((t->partial || session_cancelled(s)) && o[PARTIAL].at < 0) {
        ql_sens_table_free(t);
        return ql_fail(err, QL_ERR_CANCELLED, "cancelled");
    }
    ql_sens_table_sort(t, metric);
    ses_sens *ns = ses_sens_new(t, metric);
    if (!ns)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ses_set(&s->cur.sens, ns);
    /* scripts can act on the result: set layer ${SENS_WORST} precision int16 */
    if (t->n > 0 && t->rows[0].done &&
        (st = session_set_var(s, "SENS_WORST", t->rows[0].name, err)) != QL_OK)
        return st;
    report_sensitivity(session_out(s), ns);
    return QL_OK;
}

ql_status sc_autoprec(session *s, int argc, char **argv, ql_error *err)
{
    enum { PREFER, MARCH, N_OPTS };
    command_opt o[N_OPTS] = {{"prefer", false, -1}, {"march", false, -1}};
    ql_target target;
    ql_status st;
    bool prefer_int16 = true;
    const char *march = NULL;
    if (argc < 1)
        return command_usage("autoprec", err);
    if ((st = ql_target_parse(argv[0], &target, err)) != QL_OK ||
        (st = command_parse_opts(argc - 1, argv + 1, o, N_OPTS, err)) != QL_OK)
        return st;
    if (o[PREFER].at >= 0) {
        const char *p = argv[1 + o[PREFER].at];
        if (strcmp(p, "int16") != 0 && strcmp(p, "float") != 0)
            return ql_fail(err, QL_ERR_ARG, "prefer: '%s' is not int16 or float", p);
        prefer_int16 = p[0] == 'i';
    }
    /* Nash marches: until march data files exist every one costs a layer
     * by its MACs */
    if (o[MARCH].at >= 0 && !(march = ql_autoprec_march(argv[1 + o[MARCH].at])))
        return ql_fail(err, QL_ERR_ARG, "march: unknown march '%s' (expected " QL_MARCH_NAMES ")",
                       argv[1 + o[MARCH].at]);
    if ((st = command_need_eval_data(s, err)) != QL_OK || (st = command_need_encodings(s, err)) != QL_OK)
        return st;
    if (!s->cur.stats)
        return ql_fail(err, QL_ERR_ARG, "no calibration statistics (run 'calibrate' first)");
    const ses_model *x = s->cur.model;
    const ses_data *d = s->cur.eval;
    if ((!strcmp(target.metric, "top1") || !strcmp(target.metric, "top1_drop")) && !d->labels)
        return ql_fail(err, QL_ERR_ARG, "target %s needs labels ('data eval PATH labels L')",
                       target.metric);
    ql_sens_opts so = {.mode = QL_SENS_ALL_BUT, .n_threads = s->o.n_threads, .batch = s->o.batch,
                       .progress = sens_progress, .progress_user = s, .cancel = s->o.cancel,
                       .march = march};
    ql_autoprec_result res = {0};
    st = ql_autoprec(x->m, x->q, s->cur.cfg, s->cur.stats->s, s->plugins, d->d, d->labels,
                     &target, prefer_int16, &so, &res, err);
    if (st == QL_OK && session_cancelled(s))
        st = ql_fail(err, QL_ERR_CANCELLED, "cancelled");
    if (st != QL_OK) {
        ql_autoprec_result_clear(&res);
        return st;
    }
    s->cur.cfg_gen++;
    ses_autoprec *a = ses_autoprec_new(&target, &res);
    if (!a)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ses_set(&s->cur.autoprec, a);
    report_autoprec(session_out(s), x->q, &a->target, &a->r, d->labels != NULL);
    return QL_OK;
}

static bool curve_progress(void *user, int64_t done, int64_t total)
{
    return session_progress(user, "curve", done, total);
}

ql_status sc_curve(session *s, int argc, char **argv, ql_error *err)
{
    enum { PREFER, STEPS, PARTIAL, N_OPTS };
    command_opt o[N_OPTS] = {{"prefer", false, -1}, {"steps", false, -1},
                             {"keep-partial", true, -1}};
    bool to_int16 = false;
    long steps = 0;
    ql_status st;
    if ((st = command_parse_opts(argc, argv, o, N_OPTS, err)) != QL_OK)
        return st;
    if (o[PREFER].at >= 0) {
        const char *p = argv[o[PREFER].at];
        if (strcmp(p, "int16") != 0 && strcmp(p, "float") != 0)
            return ql_fail(err, QL_ERR_ARG, "prefer: '%s' is not int16 or float", p);
        to_int16 = p[0] == 'i';
    }
    if (o[STEPS].at >= 0 &&
        (st = command_parse_int("steps", argv[o[STEPS].at], 1, 1L << 20, &steps, err)) != QL_OK)
        return st;
    if ((st = command_need_eval_data(s, err)) != QL_OK || (st = command_need_encodings(s, err)) != QL_OK)
        return st;
    if (!s->cur.sens)
        return ql_fail(err, QL_ERR_ARG, "no sensitivity table to rank the layers (run "
                                        "'sensitivity' first)");
    if (!s->cur.stats)
        return ql_fail(err, QL_ERR_ARG, "no calibration statistics (run 'calibrate' or "
                                        "'collect stats' first, or 'load stats')");
    const ses_model *x = s->cur.model;
    const ses_data *d = s->cur.eval;
    const ql_sens_table *t = s->cur.sens->t;
    /* the samples the table was measured on */
    ql_tensor view = ql_dataset_batch(d->d, 0, t->samples < d->d->n ? t->samples : d->d->n);
    ql_dataset sub = {.samples = &view, .n = view.dims[0], .source = d->d->source};
    ql_sens_opts so = {.n_threads = s->o.n_threads, .batch = s->o.batch,
                       .progress = curve_progress, .progress_user = s, .cancel = s->o.cancel};
    ql_curve *c = NULL;
    if ((st = ql_sens_curve(x->m, x->q, s->cur.cfg, t, s->cur.stats->s, s->plugins, &sub,
                            d->labels, to_int16, (int)steps, &so, &c, err)) != QL_OK)
        return st;
    /* a cancelled curve fails and changes nothing, unless the steps done are wanted */
    if ((c->partial || session_cancelled(s)) && o[PARTIAL].at < 0) {
        ql_curve_free(c);
        return ql_fail(err, QL_ERR_CANCELLED, "cancelled");
    }
    ses_curve *nc = ses_curve_new(c, s->cur.sens->metric);
    if (!nc)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ses_set(&s->cur.curve, nc);
    report_curve(session_out(s), nc);
    return QL_OK;
}

ql_status sc_export_csv_curve(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("export csv curve", err);
    if (!s->cur.curve)
        return ql_fail(err, QL_ERR_ARG, "no cumulative curve (run 'curve' first)");
    return ql_curve_write_csv(s->cur.curve->c, argv[0], err);
}

ql_status sc_export_csv(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("export csv", err);
    if (!s->cur.sens)
        return ql_fail(err, QL_ERR_ARG, "no sensitivity table (run 'sensitivity' first)");
    return ql_sens_table_write_csv(s->cur.sens->t, argv[0], err);
}
