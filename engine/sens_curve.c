/* The cumulative curve: the layers of a sensitivity table, most sensitive
 * first, raised one after another (int8 to int16, or to float), with the
 * model's metrics measured after each step on the whole data. Every step's
 * config is the given one with the precision overrides made so far, its
 * encodings brought in line from the given ones in one step from the
 * statistics (as autoprec and `set layer ... precision` make them), so the
 * curve shows exactly what a user gets by making those overrides. */
#include "sensitivity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "qsim.h"

void ql_curve_free(ql_curve *c)
{
    if (!c)
        return;
    free(c->steps);
    free(c);
}

/* The order in which t's layers are raised: most sensitive first. In
 * single, weights and activations modes that is worst first, the table's
 * own order; in all-but mode a row measures the model with the layer
 * already raised, so the best row is the most useful raise and the order
 * is the table's reversed. Rows not done are left out. */
static int curve_order(const ql_sens_table *t, int *order)
{
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        const ql_sens_row *r = &t->rows[t->mode == QL_SENS_ALL_BUT ? t->n - 1 - i : i];
        if (r->done)
            order[n++] = r->layer;
    }
    return n;
}

static ql_status measure(ql_model *m, const ql_qnet *q, const ql_qconfig *c, const ql_dataset *d,
                         const int64_t *labels, const ql_sens_opts *o, ql_metrics *out,
                         ql_error *err)
{
    ql_qsim *sim = NULL;
    ql_status st = ql_qsim_build(q, c, &sim, err);
    if (st != QL_OK)
        return st;
    ql_eval_opts eo = {.batch = o->batch, .n_threads = o->n_threads, .cancel = o->cancel};
    st = ql_eval_compare(m, &sim->plan, d, labels, labels ? d->n : 0, &eo, out, NULL, err);
    ql_qsim_free(sim);
    return st;
}

ql_status ql_sens_curve(ql_model *m, const ql_qnet *q, const ql_qconfig *c,
                        const ql_sens_table *ranked, const ql_calib_stats *stats,
                        const ql_plugins *ps, const ql_dataset *d, const int64_t *labels,
                        bool to_int16, int max_steps, const ql_sens_opts *o, ql_curve **out,
                        ql_error *err)
{
    *out = NULL;
    if (!stats)
        return ql_fail(err, QL_ERR_ARG,
                       "the curve needs calibration statistics (the raised layers' encodings "
                       "are computed from them)");
    int nl = q->n_layers;
    int *order = malloc((size_t)(nl ? nl : 1) * sizeof *order);
    ql_prec *prec = malloc((size_t)(nl ? nl : 1) * sizeof *prec);
    ql_curve *cv = calloc(1, sizeof *cv);
    if (cv)
        cv->steps = calloc((size_t)(nl ? nl : 1), sizeof *cv->steps);
    ql_status st = QL_OK;
    if (!order || !prec || !cv || !cv->steps) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto done;
    }
    cv->to = to_int16 ? QL_PREC_INT16 : QL_PREC_FLOAT;
    cv->ranked_mode = ranked->mode;
    cv->samples = d->n;
    cv->has_labels = labels != NULL;
    for (int l = 0; l < nl; l++)
        prec[l] = ql_qnet_layer_prec(q, c, l);
    /* the steps: layers below the target precision, in rank order */
    int n_order = curve_order(ranked, order), total = 0;
    for (int i = 0; i < n_order; i++) {
        int l = order[i];
        if (l < 0 || l >= nl)
            continue;
        bool raise = to_int16 ? prec[l] == QL_PREC_INT8 : prec[l] != QL_PREC_FLOAT;
        if (raise && (max_steps <= 0 || total < max_steps))
            cv->steps[total++] = (ql_curve_step){.layer = l,
                                                 .name = q->layers[l].name,
                                                 .op = q->g->nodes[q->layers[l].node].op_type,
                                                 .from = prec[l],
                                                 .to = cv->to};
    }
    cv->n_total = total;
    if ((st = measure(m, q, c, d, labels, o, &cv->base, err)) != QL_OK) {
        if (st != QL_ERR_CANCELLED)
            goto done;
        st = QL_OK; /* nothing measured: partial, no step done */
        cv->partial = true;
        total = 0;
    }
    ql_calib_opts co = {.n_threads = o->n_threads, .batch = o->batch, .cancel = o->cancel};
    for (int k = 0; k < total; k++) {
        if (o->progress && !o->progress(o->progress_user, k, total)) {
            cv->partial = true;
            break;
        }
        ql_curve_step *s = &cv->steps[k];
        prec[s->layer] = s->to;
        /* the given config with every override so far, encodings from it */
        ql_qconfig *dc = ql_qconfig_clone(c);
        if (!dc) {
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int j = 0; j <= k && st == QL_OK; j++) {
            ql_qlayer_cfg *lc = ql_qconfig_layer(dc, cv->steps[j].name);
            if (!lc) {
                st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
                break;
            }
            lc->s.mask |= QL_QS_PRECISION;
            lc->s.precision = cv->steps[j].to;
        }
        if (st == QL_OK)
            st = ql_calib_update(m, q, dc, stats, ps, d, &co, c, -1, err);
        if (st == QL_OK)
            st = measure(m, q, dc, d, labels, o, &s->m, err);
        ql_qconfig_free(dc);
        if (st == QL_ERR_CANCELLED) {
            st = QL_OK;
            s->m = (ql_metrics){0};
            cv->partial = true;
            break;
        }
        if (st != QL_OK) {
            ql_fail_prefix(err, st, "step %d (%s to %s)", k + 1, s->name, ql_prec_name(s->to));
            goto done;
        }
        cv->n = k + 1;
    }
    if (o->progress && !cv->partial)
        o->progress(o->progress_user, total, total);
    *out = cv;
    cv = NULL;
done:
    ql_curve_free(cv);
    free(order);
    free(prec);
    return st;
}
