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

ql_status sc_eval(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("eval", err);
    ql_status st;
    if ((st = command_need_eval_data(s, err)) != QL_OK || (st = command_need_encodings(s, err)) != QL_OK)
        return st;
    const ses_model *x = s->cur.model;
    const ses_data *d = s->cur.eval;
    ql_qsim *sim = NULL;
    if ((st = ql_qsim_build(x->q, s->cur.cfg, &sim, err)) != QL_OK)
        return st;
    ql_eval_opts eo = {.n_threads = s->o.n_threads, .progress = eval_progress,
                       .progress_user = s, .cancel = s->o.cancel};
    ql_metrics mt;
    double secs = 0;
    st = ql_eval_compare(x->m, &sim->plan, d->d, d->labels, d->n_labels, &eo, &mt, &secs, err);
    ql_qsim_free(sim);
    if (st != QL_OK)
        return st;
    s->cur.last_eval = (ses_eval){.valid = true, .m = mt, .labels = d->labels != NULL,
                                  .cfg_gen = s->cur.cfg_gen};
    report_eval(session_out(s), &s->cur.last_eval, false);
    if (s->o.timings)
        fprintf(session_out(s), "time:         %.3f s\n", secs);
    return QL_OK;
}

ql_status sc_sensitivity(session *s, int argc, char **argv, ql_error *err)
{
    enum { MODE, METRIC, LIMIT, N_OPTS };
    command_opt o[N_OPTS] = {{"mode", false, -1}, {"metric", false, -1}, {"limit", false, -1}};
    ql_sens_mode mode = QL_SENS_SINGLE;
    ql_sens_metric metric = QL_SM_COSINE;
    long limit = 0;
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
    const ses_data *d = s->cur.eval;
    if (metric == QL_SM_TOP1 && !d->labels)
        return ql_fail(err, QL_ERR_ARG, "metric top1 needs labels ('data eval PATH labels L')");
    /* the first `limit` samples, as a view */
    ql_tensor view = ql_dataset_batch(d->d, 0, limit > 0 && limit < d->d->n ? limit : d->d->n);
    ql_dataset sub = {.samples = &view, .n = view.dims[0], .source = d->d->source};
    ql_sens_opts so = {.mode = mode, .n_threads = s->o.n_threads, .progress = sens_progress,
                       .progress_user = s, .cancel = s->o.cancel};
    ql_sens_table *t = NULL;
    const ses_model *x = s->cur.model;
    if ((st = ql_sensitivity(x->m, x->q, s->cur.cfg, &sub, d->labels, &so, &t, err)) != QL_OK)
        return st;
    if (t->partial || session_cancelled(s)) {
        ql_sens_table_free(t);
        return ql_fail(err, QL_ERR_CANCELLED, "cancelled");
    }
    ql_sens_table_sort(t, metric);
    ses_sens *ns = ses_sens_new(t, metric);
    if (!ns)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ses_set(&s->cur.sens, ns);
    /* scripts can act on the result: set layer ${SENS_WORST} precision int16 */
    if (t->n > 0 && (st = session_set_var(s, "SENS_WORST", t->rows[0].name, err)) != QL_OK)
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
    if (o[MARCH].at >= 0)
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "march: march descriptions are not available in this version");
    if ((st = command_need_eval_data(s, err)) != QL_OK || (st = command_need_encodings(s, err)) != QL_OK)
        return st;
    if (!s->cur.stats)
        return ql_fail(err, QL_ERR_ARG, "no calibration statistics (run 'calibrate' first)");
    const ses_model *x = s->cur.model;
    const ses_data *d = s->cur.eval;
    ql_sens_opts so = {.mode = QL_SENS_ALL_BUT, .n_threads = s->o.n_threads,
                       .progress = sens_progress, .progress_user = s, .cancel = s->o.cancel};
    ql_autoprec_result res = {0};
    st = ql_autoprec(x->m, x->q, s->cur.cfg, s->cur.stats->s, s->plugins, d->d, d->labels,
                     &target, prefer_int16, &so, &res, err);
    if (st == QL_OK && session_cancelled(s))
        st = ql_fail(err, QL_ERR_CANCELLED, "cancelled");
    if (st == QL_OK) {
        s->cur.cfg_gen++;
        report_autoprec(session_out(s), x->q, &target, &res, d->labels != NULL);
    }
    ql_autoprec_result_clear(&res);
    return st;
}

ql_status sc_export_csv(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("export csv", err);
    if (!s->cur.sens)
        return ql_fail(err, QL_ERR_ARG, "no sensitivity table (run 'sensitivity' first)");
    return ql_sens_table_write_csv(s->cur.sens->t, argv[0], err);
}
