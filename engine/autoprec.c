/* Automatic mixed precision, greedy on measured effects. An all-but pass
 * ranks the raises by their exact effect on the model (the config with
 * that one layer raised); they are then made one at a time, each evaluated
 * on the whole data and undone unless it improves the target's metric.
 * Passes repeat while they keep raises, int16 raises give way to float
 * ones when they run out, and once the target holds the raises it no
 * longer needs are lowered again. Cost is a layer's MACs until march data
 * says more (engine/march does not exist yet). */
#include "sensitivity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "qsim.h"

typedef struct candidate {
    int layer;
    ql_prec to;
    double gain, gain2;   /* predicted: the target's metric, SQNR; more is better */
    double score, score2; /* the gains weighed by cost */
    double predicted;     /* the target's metric predicted after the raise */
} candidate;

typedef struct ap_ctx {
    ql_model *m;
    const ql_qnet *q;
    ql_qconfig *c;
    const ql_qconfig *orig; /* c as it came, for lowering layers again */
    const ql_calib_stats *stats;
    const ql_plugins *ps;
    const ql_dataset *d;
    const int64_t *labels;
    const ql_target *t;
    const ql_sens_opts *o;
    ql_autoprec_result *res;
    bool discrete;          /* the target's metric counts whole samples */
    double sign;            /* +1 when higher is better */
    ql_prec *prec;          /* per layer: its precision in c */
    ql_metrics cur;         /* c's metrics */
    double *gains;          /* per entry of res->tried: measured gain when kept */
} ap_ctx;

static ql_status evaluate(const ap_ctx *a, const ql_qconfig *c, ql_metrics *out, ql_error *err)
{
    ql_qsim *sim = NULL;
    ql_status st = ql_qsim_build(a->q, c, &sim, err);
    if (st != QL_OK)
        return st;
    ql_eval_opts eo = {.batch = a->o->batch, .n_threads = a->o->n_threads, .cancel = a->o->cancel};
    st = ql_eval_compare(a->m, &sim->plan, a->d, a->labels, a->labels ? a->d->n : 0, &eo, out,
                         NULL, err);
    ql_qsim_free(sim);
    return st;
}

static double signed_value(const ap_ctx *a, const ql_metrics *m)
{
    return a->sign * ql_target_value(a->t, m);
}

/* > 0 when x is better than y for the target: its metric better, or, for
 * the whole-sample metrics, the same with a better SQNR. */
static int compare(const ap_ctx *a, const ql_metrics *x, const ql_metrics *y)
{
    double vx = signed_value(a, x), vy = signed_value(a, y);
    if (vx != vy)
        return vx > vy ? 1 : -1;
    if (a->discrete) {
        double sx = ql_metrics_sqnr_db(x), sy = ql_metrics_sqnr_db(y);
        if (sx != sy)
            return sx > sy ? 1 : -1;
    }
    return 0;
}

static bool better(const candidate *a, const candidate *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    if (a->score2 != b->score2)
        return a->score2 > b->score2;
    return a->score == -INFINITY ? a->layer > b->layer : a->layer < b->layer;
}

void ql_autoprec_result_clear(ql_autoprec_result *r)
{
    free(r->steps);
    free(r->tried);
    memset(r, 0, sizeof *r);
}

/* Makes c hold what `saved` holds (contents swapped, so c stays the
 * caller's object) and frees what c held. */
static void restore(ql_qconfig *c, ql_qconfig *saved)
{
    ql_qconfig tmp = *c;
    *c = *saved;
    *saved = tmp;
    ql_qconfig_free(saved);
}

/* The original config with the layers whose precision in prec differs
 * from it overridden, its encodings brought in line in one step from the
 * original ones (as `set layer ... precision` does): the config depends
 * only on prec, whatever raises were made and undone on the way. */
static ql_status build(const ap_ctx *a, const ql_prec *prec, ql_qconfig **out, ql_error *err)
{
    ql_qconfig *d = ql_qconfig_clone(a->orig);
    ql_status st = d ? QL_OK : ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (int l = 0; st == QL_OK && l < a->q->n_layers; l++) {
        if (prec[l] == ql_qnet_layer_prec(a->q, a->orig, l))
            continue;
        ql_qlayer_cfg *lc = ql_qconfig_layer(d, a->q->layers[l].name);
        if (!lc) {
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
            break;
        }
        lc->s.mask |= QL_QS_PRECISION;
        lc->s.precision = prec[l];
    }
    ql_calib_opts co = {.n_threads = a->o->n_threads, .batch = a->o->batch, .cancel = a->o->cancel};
    if (st == QL_OK)
        st = ql_calib_update(a->m, a->q, d, a->stats, a->ps, a->d, &co, a->orig, -1, err);
    if (st != QL_OK) {
        ql_qconfig_free(d);
        return st;
    }
    *out = d;
    return QL_OK;
}

typedef enum {
    CHANGE_IF_BETTER, /* keep it if the metric improves */
    CHANGE_IF_MET,    /* keep it if the target holds */
    CHANGE_KEEP,
} change_rule;

/* Measures the model with layer l at precision `to`; the change is made
 * (c replaced) as the rule says. */
static ql_status change(ap_ctx *a, int l, ql_prec to, change_rule rule, ql_metrics *after,
                        bool *kept, ql_error *err)
{
    ql_prec was = a->prec[l];
    ql_qconfig *d = NULL;
    *kept = false;
    a->prec[l] = to;
    ql_status st = build(a, a->prec, &d, err);
    a->prec[l] = was;
    if (st == QL_OK)
        st = evaluate(a, d, after, err);
    if (st != QL_OK) {
        ql_qconfig_free(d);
        return ql_fail_prefix(err, st, "setting '%s' to %s", a->q->layers[l].name,
                              ql_prec_name(to));
    }
    *kept = rule == CHANGE_KEEP     ? true
            : rule == CHANGE_IF_MET ? ql_target_met(a->t, after)
                                    : compare(a, after, &a->cur) > 0;
    if (*kept) {
        restore(a->c, d); /* c becomes d */
        a->prec[l] = to;
    } else {
        ql_qconfig_free(d);
    }
    return QL_OK;
}

static ql_autoprec_step *add_tried(ap_ctx *a)
{
    ql_autoprec_result *r = a->res;
    size_t n = (size_t)r->n_tried + 1;
    ql_autoprec_step *t = realloc(r->tried, n * sizeof *t);
    if (t)
        r->tried = t;
    double *g = t ? realloc(a->gains, n * sizeof *g) : NULL;
    if (!g)
        return NULL;
    a->gains = g;
    g[r->n_tried] = 0;
    memset(&t[r->n_tried], 0, sizeof *t);
    return &t[r->n_tried++];
}

/* One pass: ranks the raises from an all-but analysis of c and makes them
 * in order until the target holds, keeping those that improve the metric
 * (with force, every raise that changes something, in order of predicted
 * effect, kept whatever it does). *n_kept: raises kept. */
static ql_status pass(ap_ctx *a, bool raise_int16, bool force, int *n_kept, ql_error *err)
{
    ql_sens_table *tab = NULL;
    candidate *cand = NULL;
    int n_cand = 0;
    *n_kept = 0;
    ql_sens_opts so = *a->o;
    so.mode = QL_SENS_ALL_BUT;
    so.only_layer = NULL;
    so.brute_force = false;
    so.raise_int16 = raise_int16;
    so.stats = a->stats;
    so.plugins = a->ps;
    so.enc_from = a->orig; /* the predictions are the configs build() makes */
    ql_status st = ql_sensitivity(a->m, a->q, a->c, a->d, a->labels, &so, &tab, err);
    if (st != QL_OK)
        return st;
    a->res->passes++;
    if (tab->partial) {
        st = ql_fail(err, QL_ERR_CANCELLED, "cancelled during the sensitivity pass");
        goto cleanup;
    }
    cand = calloc((size_t)(tab->n ? tab->n : 1), sizeof *cand);
    if (!cand) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    /* raises that change something and are predicted to help; gains
     * against the base measured by the same runs, so that a raise that
     * changes nothing has none */
    double base = signed_value(a, &tab->base), base2 = ql_metrics_sqnr_db(&tab->base);
    double macs_sum = 0;
    for (int i = 0; i < tab->n; i++) {
        const ql_sens_row *r = &tab->rows[i];
        /* the int16 passes make int16 raises only: float ones come after */
        if (r->precision == QL_PREC_FLOAT || r->raised_to == r->precision ||
            (raise_int16 && r->raised_to != QL_PREC_INT16) || (r->unchanged && !force))
            continue;
        double gain = signed_value(a, &r->m) - base;
        double s2 = ql_metrics_sqnr_db(&r->m);
        double gain2 = s2 == base2 ? 0 : s2 - base2; /* inf - inf: no change */
        if (isnan(gain) || (!force && !(gain > 0 || (a->discrete && gain == 0 && gain2 > 0))))
            continue;
        /* forced: a layer that changes nothing now may once its readers are
         * float (its output quantizer goes with them); such layers come
         * last, readers before producers */
        if (r->unchanged)
            gain = gain2 = -INFINITY;
        candidate *k = &cand[n_cand++];
        k->layer = r->layer;
        k->to = r->raised_to;
        k->gain = gain;
        k->gain2 = gain2;
        k->predicted = ql_target_value(a->t, &r->m);
        macs_sum += (double)a->q->layers[r->layer].macs;
    }
    /* with a march, gains are weighed by cost relative to the mean: a layer
     * of the mean cost counts half its gain, a free one all of it */
    double mean = n_cand ? macs_sum / n_cand : 0;
    for (int i = 0; i < n_cand; i++) {
        double w = 1;
        if (a->o->march && mean > 0)
            w = mean / (mean + (double)a->q->layers[cand[i].layer].macs);
        cand[i].score = cand[i].gain * w;
        cand[i].score2 = cand[i].gain2 * w;
    }
    for (int i = 1; i < n_cand; i++) { /* best first; insertion sort keeps it simple */
        candidate k = cand[i];
        int j = i;
        for (; j > 0 && better(&k, &cand[j - 1]); j--)
            cand[j] = cand[j - 1];
        cand[j] = k;
    }
    for (int i = 0; i < n_cand && !a->res->met; i++) {
        ql_autoprec_step *s = add_tried(a);
        if (!s) {
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
            goto cleanup;
        }
        s->layer = cand[i].layer;
        s->from = a->prec[s->layer];
        s->to = cand[i].to;
        s->predicted = cand[i].predicted;
        s->pass = a->res->passes;
        s->forced = force;
        bool kept;
        if ((st = change(a, s->layer, s->to, force ? CHANGE_KEEP : CHANGE_IF_BETTER, &s->after,
                         &kept, err)) != QL_OK)
            goto cleanup;
        s->outcome = kept ? QL_AP_KEPT : QL_AP_REVERTED;
        if (kept) {
            a->gains[a->res->n_tried - 1] = signed_value(a, &s->after) - signed_value(a, &a->cur);
            a->cur = s->after;
            a->res->met = ql_target_met(a->t, &a->cur);
            (*n_kept)++;
        }
    }
cleanup:
    free(cand);
    ql_sens_table_free(tab);
    return st;
}

/* The target holds: lowers the kept raises again, least measured gain
 * first, each for good when the target still holds without it, in rounds
 * until a round lowers none (so that no raise left can go alone). Only a
 * layer's last kept raise can go, to what it was raised from. */
static ql_status prune(ap_ctx *a, ql_error *err)
{
    ql_autoprec_result *r = a->res;
    int n = r->n_tried;
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = QL_OK;
    int n_dropped = 0;
    for (bool again = true; again && st == QL_OK;) {
        again = false;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (r->tried[i].outcome == QL_AP_KEPT) {
                int j = k++;
                for (; j > 0 && a->gains[order[j - 1]] > a->gains[i]; j--)
                    order[j] = order[j - 1];
                order[j] = i;
            }
        for (int x = 0; x < k && st == QL_OK; x++) {
            int i = order[x];
            bool last = true;
            for (int j = i + 1; j < n && last; j++)
                last = !(r->tried[j].layer == r->tried[i].layer &&
                         r->tried[j].outcome == QL_AP_KEPT);
            if (!last)
                continue;
            ql_metrics after;
            bool dropped;
            if ((st = change(a, r->tried[i].layer, r->tried[i].from, CHANGE_IF_MET, &after,
                             &dropped, err)) != QL_OK ||
                !dropped)
                continue;
            r->tried[i].outcome = QL_AP_DROPPED;
            r->tried[i].lowered = after;
            r->tried[i].lowered_seq = ++n_dropped;
            a->cur = after;
            again = true;
        }
    }
    free(order);
    return st;
}

/* The kept raises as r->steps, with the metrics of the original config
 * with the raises up to each (the last one's is c's), and their layers'
 * reasons. */
static ql_status finish(ap_ctx *a, ql_error *err)
{
    ql_autoprec_result *r = a->res;
    int nl = a->q->n_layers;
    r->steps = calloc((size_t)(r->n_tried ? r->n_tried : 1), sizeof *r->steps);
    ql_prec *prec = malloc((size_t)(nl ? nl : 1) * sizeof *prec);
    if (!r->steps || !prec) {
        free(prec);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < r->n_tried; i++)
        if (r->tried[i].outcome == QL_AP_KEPT)
            r->steps[r->n_steps++] = r->tried[i];
    for (int l = 0; l < nl; l++)
        prec[l] = ql_qnet_layer_prec(a->q, a->orig, l);
    ql_status st = QL_OK;
    for (int i = 0; i < r->n_steps && st == QL_OK; i++) {
        ql_autoprec_step *s = &r->steps[i];
        prec[s->layer] = s->to;
        if (i == r->n_steps - 1) {
            s->after = a->cur; /* c itself */
            break;
        }
        ql_qconfig *d = NULL;
        if ((st = build(a, prec, &d, err)) == QL_OK)
            st = evaluate(a, d, &s->after, err);
        ql_qconfig_free(d);
    }
    free(prec);
    for (int i = 0; i < r->n_steps && st == QL_OK; i++) {
        const ql_autoprec_step *s = &r->steps[i];
        bool last = true;
        for (int j = i + 1; j < r->n_steps; j++)
            last &= r->steps[j].layer != s->layer;
        if (!last)
            continue;
        char reason[240];
        snprintf(reason, sizeof reason,
                 "autoprec: step %d of %d for %s%s%.6g: %s -> %s, %s %.6g -> %.6g", i + 1,
                 r->n_steps, a->t->metric, a->t->at_least ? ">=" : "<=", a->t->value,
                 ql_prec_name(s->from), ql_prec_name(s->to), a->t->metric,
                 ql_target_value(a->t, i > 0 ? &r->steps[i - 1].after : &r->before),
                 ql_target_value(a->t, &s->after));
        ql_qlayer_cfg *lc = ql_qconfig_layer(a->c, a->q->layers[s->layer].name);
        char *dup = strdup(reason);
        if (!lc || !dup) {
            free(dup);
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        }
        free(lc->reason);
        lc->reason = dup;
    }
    return st;
}

ql_status ql_autoprec(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *stats,
                      const ql_plugins *ps, const ql_dataset *d, const int64_t *labels,
                      const ql_target *target, bool prefer_int16, const ql_sens_opts *o,
                      ql_autoprec_result *res, ql_error *err)
{
    ql_status st;
    memset(res, 0, sizeof *res);
    const char *k = target->metric;
    bool need_labels = !strcmp(k, "top1") || !strcmp(k, "top1_drop");
    if (need_labels && !labels)
        return ql_fail(err, QL_ERR_ARG, "target %s needs labels", k);
    ap_ctx a = {.m = m, .q = q, .c = c, .stats = stats, .ps = ps, .d = d, .labels = labels,
                .t = target, .o = o, .res = res,
                .discrete = need_labels || !strcmp(k, "top1_agree"),
                .sign = target->at_least ? 1.0 : -1.0};
    ql_qconfig *orig = ql_qconfig_clone(c);
    a.prec = malloc((size_t)(q->n_layers ? q->n_layers : 1) * sizeof *a.prec);
    if (!orig || !a.prec) {
        free(a.prec);
        ql_qconfig_free(orig);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    a.orig = orig;
    for (int l = 0; l < q->n_layers; l++)
        a.prec[l] = ql_qnet_layer_prec(q, c, l);
    if ((st = evaluate(&a, c, &res->before, err)) != QL_OK)
        goto cleanup;
    if (a.discrete && res->before.no_classes) {
        st = ql_fail(err, QL_ERR_ARG,
                     "target %s needs a model whose first float output is class scores "
                     "([N, C]); use cosine, sqnr_db, mse or max_abs",
                     k);
        goto cleanup;
    }
    a.cur = res->before;
    res->met = ql_target_met(target, &a.cur);
    bool int16 = prefer_int16, force = false;
    while (!res->met) {
        int kept = 0;
        if ((st = pass(&a, int16, force, &kept, err)) != QL_OK)
            goto cleanup;
        if (res->met || (kept > 0 && !force))
            continue;
        if (force)
            break; /* every layer that changes anything is float */
        if (int16) {
            /* int16 raises activation bits only: what is left is in the weights */
            res->int16_exhausted = true;
            res->int16_best = ql_target_value(target, &a.cur);
            res->float_pass = res->passes + 1;
            int16 = false;
        } else {
            /* no single raise helps: errors that partly cancel (a layer's
             * weights against the activations it reads) only go together */
            res->forced = true;
            res->forced_from = ql_target_value(target, &a.cur);
            force = true;
        }
    }
    if (res->met && (st = prune(&a, err)) != QL_OK)
        goto cleanup;
    res->final = a.cur;
    st = finish(&a, err);
cleanup:
    free(a.gains);
    free(a.prec);
    if (st != QL_OK) /* c as it came */
        restore(c, orig);
    else
        ql_qconfig_free(orig);
    return st;
}
