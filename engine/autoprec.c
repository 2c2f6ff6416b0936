/* Automatic mixed precision: one all-but sensitivity pass ranks the layers,
 * then layers are raised one at a time, each followed by a full evaluation,
 * until the target holds. Cost is the layer's MACs until march data says
 * more (engine/march does not exist yet). */
#include "sensitivity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "qsim.h"

typedef struct candidate {
    int layer;
    double gain, score;
} candidate;

static ql_status evaluate(ql_model *m, const ql_qnet *q, const ql_qconfig *c,
                          const ql_dataset *d, const int64_t *labels, const ql_sens_opts *o,
                          ql_metrics *out, ql_error *err)
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

static bool better(const candidate *a, const candidate *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->layer < b->layer;
}

void ql_autoprec_result_clear(ql_autoprec_result *r)
{
    free(r->steps);
    memset(r, 0, sizeof *r);
}

ql_status ql_autoprec(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *stats,
                      const ql_plugins *ps, const ql_dataset *d, const int64_t *labels,
                      const ql_target *target, bool prefer_int16, const ql_sens_opts *o,
                      ql_autoprec_result *res, ql_error *err)
{
    ql_sens_table *tab = NULL;
    candidate *cand = NULL;
    int n_cand = 0;
    ql_status st;
    memset(res, 0, sizeof *res);
    bool need_labels = !strcmp(target->metric, "top1") || !strcmp(target->metric, "top1_drop");
    if (need_labels && !labels)
        return ql_fail(err, QL_ERR_ARG, "target %s needs labels", target->metric);
    if ((st = evaluate(m, q, c, d, labels, o, &res->before, err)) != QL_OK)
        return st;
    if ((res->met = ql_target_met(target, &res->before)))
        return QL_OK;

    ql_sens_opts so = *o;
    so.mode = QL_SENS_ALL_BUT;
    so.only_layer = NULL;
    so.brute_force = false;
    if ((st = ql_sensitivity(m, q, c, d, labels, &so, &tab, err)) != QL_OK)
        goto cleanup;
    if (tab->partial) {
        st = ql_fail(err, QL_ERR_CANCELLED, "cancelled during the sensitivity pass");
        goto cleanup;
    }
    double base = ql_target_value(target, &res->before), sign = target->at_least ? 1.0 : -1.0;
    cand = calloc((size_t)(tab->n ? tab->n : 1), sizeof *cand);
    res->steps = calloc((size_t)(tab->n ? tab->n : 1), sizeof *res->steps);
    if (!cand || !res->steps) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < tab->n; i++) {
        const ql_sens_row *r = &tab->rows[i];
        if (r->precision == QL_PREC_FLOAT)
            continue;
        candidate *k = &cand[n_cand++];
        k->layer = r->layer;
        k->gain = sign * (ql_target_value(target, &r->m) - base);
        if (isnan(k->gain))
            k->gain = -INFINITY;
        int64_t macs = q->layers[r->layer].macs;
        k->score = o->march ? k->gain / (double)(macs > 0 ? macs : 1) : k->gain;
    }
    for (int i = 1; i < n_cand; i++) { /* best first; insertion sort keeps it simple */
        candidate k = cand[i];
        int j = i;
        for (; j > 0 && better(&k, &cand[j - 1]); j--)
            cand[j] = cand[j - 1];
        cand[j] = k;
    }
    ql_calib_opts co = {.n_threads = o->n_threads, .batch = o->batch, .cancel = o->cancel};
    for (int i = 0; i < n_cand && !res->met; i++) {
        const ql_qlayer *L = &q->layers[cand[i].layer];
        ql_autoprec_step *s = &res->steps[res->n_steps];
        s->layer = cand[i].layer;
        s->from = ql_qnet_layer_prec(q, c, s->layer);
        s->to = prefer_int16 && s->from == QL_PREC_INT8 ? QL_PREC_INT16 : QL_PREC_FLOAT;
        ql_qlayer_cfg *lc = ql_qconfig_layer(c, L->name);
        char reason[160];
        snprintf(reason, sizeof reason, "autoprec: all-but %s gain %.4g, step %d",
                 target->metric, cand[i].gain, res->n_steps + 1);
        char *dup = strdup(reason);
        if (!lc || !dup) {
            free(dup);
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
            goto cleanup;
        }
        lc->s.mask |= QL_QS_PRECISION;
        lc->s.precision = s->to;
        free(lc->reason);
        lc->reason = dup;
        res->n_steps++;
        if ((st = ql_calib_update(m, q, c, stats, ps, d, &co, NULL, -1, err)) != QL_OK ||
            (st = evaluate(m, q, c, d, labels, o, &s->after, err)) != QL_OK) {
            ql_fail_prefix(err, st, "raising '%s' to %s", L->name, ql_prec_name(s->to));
            goto cleanup;
        }
        res->met = ql_target_met(target, &s->after);
    }
cleanup:
    free(cand);
    ql_sens_table_free(tab);
    return st;
}
