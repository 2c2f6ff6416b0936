/* The show commands and the text and CSV reports. Layouts are fixed and
 * numbers printed with fixed precision so that a script's output can be
 * compared byte for byte between runs and thread counts. */
#include "report.h"

#include <csv.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "engine/outfile.h"

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

static const ql_qlayer_cfg *find_override(const ql_qconfig *c, const char *layer)
{
    for (int i = 0; i < c->n_layers; i++)
        if (!strcmp(c->layers[i].name, layer))
            return &c->layers[i];
    return NULL;
}

/* The encoding of the activation a value carries (through data movement), or NULL. */
static const ql_qtensor_cfg *act_tensor(const ql_qnet *q, const ql_qconfig *c, int v)
{
    if (v < 0 || q->value_src[v] < 0)
        return NULL;
    return ql_qconfig_find_tensor(c, q->g->values[q->value_src[v]].name);
}

static int name_width(const ql_qnet *q, int min)
{
    int w = min;
    for (int i = 0; i < q->n_layers; i++) {
        int n = (int)strlen(q->layers[i].name);
        w = n > w ? n : w;
    }
    return w;
}

/* A value with '*' appended when the layer overrides it. */
static const char *mark(char *buf, size_t n, const char *val, bool over)
{
    snprintf(buf, n, "%s%s", val, over ? "*" : "");
    return buf;
}

static double target_value(const char *metric, const ql_metrics *m)
{
    double n = m->n > 0 ? (double)m->n : 1.0;
    if (!strcmp(metric, "cosine"))
        return ql_metrics_cosine(m);
    if (!strcmp(metric, "sqnr_db"))
        return ql_metrics_sqnr_db(m);
    if (!strcmp(metric, "top1_agree"))
        return ql_metrics_agree(m);
    if (!strcmp(metric, "top1"))
        return (double)m->correct_q / n;
    if (!strcmp(metric, "mse"))
        return ql_metrics_mse(m);
    if (!strcmp(metric, "max_abs"))
        return m->max_abs;
    if (!strcmp(metric, "top1_drop"))
        return 100.0 * (double)(m->correct_ref - m->correct_q) / n;
    return NAN;
}

/* ---------------------------------------------------------------------------
 * Reports
 * ------------------------------------------------------------------------- */

/* Float outputs with metrics of their own in e. */
static int float_outputs(const ses_eval *e)
{
    int k = 0;
    for (int j = 0; j < e->n_out; j++)
        k += e->out[j].n > 0;
    return k;
}

/* A fraction in a 6-wide column, "-" when it does not apply (NaN: top-1
 * of an output that is not class scores). */
static void put_fraction(FILE *f, double v)
{
    if (isnan(v))
        fprintf(f, " %6s", "-");
    else
        fprintf(f, " %6.4f", v);
}

void report_eval(FILE *f, const ql_graph *g, const ses_eval *e, bool stale)
{
    const ql_metrics *m = &e->m;
    double n = m->n > 0 ? (double)m->n : 1.0;
    fprintf(f, "samples:      %lld\n", (long long)m->n);
    if (e->float_only) {
        if (e->labels)
            fprintf(f, "top-1 float:  %.4f (%lld/%lld)\n", (double)m->correct_ref / n,
                    (long long)m->correct_ref, (long long)m->n);
        return; /* the float model against itself: nothing to compare */
    }
    if (e->labels) {
        fprintf(f, "top-1 float:  %.4f (%lld/%lld)\n", (double)m->correct_ref / n,
                (long long)m->correct_ref, (long long)m->n);
        fprintf(f, "top-1 quant:  %.4f (%lld/%lld)\n", (double)m->correct_q / n,
                (long long)m->correct_q, (long long)m->n);
    }
    if (m->no_classes)
        fprintf(f, "agreement:    - (the first output is not class scores)\n");
    else
        fprintf(f, "agreement:    %.4f\n", ql_metrics_agree(m));
    fprintf(f, "cosine:       %.6f\n", ql_metrics_cosine(m));
    fprintf(f, "SQNR:         %.2f dB\n", ql_metrics_sqnr_db(m));
    fprintf(f, "MSE:          %.6g\n", ql_metrics_mse(m));
    fprintf(f, "max abs:      %.6g\n", m->max_abs);
    if (float_outputs(e) > 1) { /* the joint metrics above; each output alone */
        int w = 6;
        for (int j = 0; j < e->n_out; j++) {
            int len = (int)strlen(g->values[g->outputs[j]].name);
            w = e->out[j].n > 0 && len > w ? len : w;
        }
        fprintf(f, "per output:   %-*s %9s %8s %10s %10s\n", w, "output", "cosine", "sqnr_db",
                "mse", "max_abs");
        for (int j = 0; j < e->n_out; j++) {
            const ql_metrics *o = &e->out[j];
            if (o->n > 0)
                fprintf(f, "              %-*s %9.6f %8.2f %10.4g %10.4g\n", w,
                        g->values[g->outputs[j]].name, ql_metrics_cosine(o),
                        ql_metrics_sqnr_db(o), ql_metrics_mse(o), o->max_abs);
        }
        if (e->n_out < g->n_outputs)
            fprintf(f, "              (the first %d of %d outputs)\n", e->n_out, g->n_outputs);
    }
    if (stale)
        fprintf(f, "note: the config has changed since (run 'eval' again)\n");
}

void report_sensitivity(FILE *f, const ses_sens *x)
{
    const ql_sens_table *t = x->t;
    int w = 5;
    for (int i = 0; i < t->n; i++) {
        int n = (int)strlen(t->rows[i].name);
        w = n > w ? n : w;
    }
    fprintf(f, "sensitivity: mode %s, %lld samples, worst first by %s%s\n",
            ql_sens_mode_name(t->mode), (long long)t->samples, ql_sens_metric_name(x->metric),
            t->partial ? " (cancelled: partial)" : "");
    fprintf(f, "%3s  %-*s  %-18s %-5s %9s %8s %10s %6s%s %8s %7s\n", "#", w, "layer", "op",
            "prec", "cosine", "sqnr_db", "mse", "agree", t->has_labels ? "   top1" : "",
            "local_db", "w_share");
    for (int i = 0; i < t->n; i++) {
        const ql_sens_row *r = &t->rows[i];
        fprintf(f, "%3d  %-*s  %-18s %-5s %9.6f %8.2f %10.4g", i + 1, w, r->name, r->op,
                ql_prec_name(r->precision), ql_metrics_cosine(&r->m),
                ql_metrics_sqnr_db(&r->m), ql_metrics_mse(&r->m));
        put_fraction(f, ql_metrics_agree(&r->m));
        if (t->has_labels)
            fprintf(f, " %6.4f", ql_sens_row_metric(r, QL_SM_TOP1));
        fprintf(f, " %8.2f", r->local_sqnr_db);
        if (isnan(r->weight_share))
            fprintf(f, " %7s", "-");
        else
            fprintf(f, " %7.2f", r->weight_share);
        fprintf(f, "%s\n", r->done ? "" : "  (not done)");
    }
}

static const char *const outcomes[] = {"kept", "undone (no gain)", "kept, lowered at the end"};

void report_autoprec_detail(FILE *f, const ql_qnet *q, const ql_target *t,
                            const ql_autoprec_result *r, bool ends)
{
    const char *k = t->metric;
    if (ends)
        fprintf(f, "before: %s %.6g\n", k, ql_target_value(t, &r->before));
    for (int pass = 1, i = 0; pass <= r->passes; pass++) {
        const ql_autoprec_step *p = i < r->n_tried ? &r->tried[i] : NULL;
        if (r->int16_exhausted && pass == r->float_pass)
            fprintf(f, "int16 raises stopped helping at %s %.6g (they raise activation bits only: "
                   "the rest is in the weights); float raises follow\n",
                   k, r->int16_best);
        if (p && p->pass == pass && p->forced)
            fprintf(f, "pass %d: no raise alone improves %s %.6g: every raise left, in order of "
                   "predicted effect, kept whatever it does\n",
                   pass, k, r->forced_from);
        else if (p && p->pass == pass)
            fprintf(f, "pass %d:\n", pass);
        else
            fprintf(f, "pass %d: no raise predicted to improve %s\n", pass, k);
        for (; i < r->n_tried && r->tried[i].pass == pass; i++) {
            p = &r->tried[i];
            fprintf(f, "  %-32s %s -> %-5s %s %.6g (predicted %.6g): %s\n",
                   q->layers[p->layer].name, ql_prec_name(p->from), ql_prec_name(p->to), k,
                   ql_target_value(t, &p->after), p->predicted, outcomes[p->outcome]);
        }
    }
    for (int seq = 1;; seq++) {
        const ql_autoprec_step *p = NULL;
        for (int i = 0; i < r->n_tried && !p; i++)
            if (r->tried[i].outcome == QL_AP_DROPPED && r->tried[i].lowered_seq == seq)
                p = &r->tried[i];
        if (!p)
            break;
        if (seq == 1)
            fprintf(f, "lowered again, the target holding without them:\n");
        fprintf(f, "  %-32s %s -> %-5s %s %.6g\n", q->layers[p->layer].name, ql_prec_name(p->to),
               ql_prec_name(p->from), k, ql_target_value(t, &p->lowered));
    }
    for (int i = 0; i < r->n_steps; i++) {
        const ql_autoprec_step *p = &r->steps[i];
        fprintf(f, "step %d: %-32s %s -> %s\n", i + 1, q->layers[p->layer].name,
               ql_prec_name(p->from), ql_prec_name(p->to));
    }
    if (ends)
        fprintf(f, "after: %s %.6g\n", k, ql_target_value(t, &r->final));
}


void report_autoprec(FILE *f, const ql_qnet *q, const ql_target *target,
                     const ql_autoprec_result *r, bool labels)
{
    (void)labels;
    const char *op = target->at_least ? ">=" : "<=";
    fprintf(f, "autoprec: target %s%s%.10g; before: %s %.6g\n", target->metric, op,
            target->value, target->metric, target_value(target->metric, &r->before));
    report_autoprec_detail(f, q, target, r, false);
    fprintf(f, "autoprec: target %s after %d layer%s; after: %s %.6g\n", r->met ? "met" : "NOT met",
            r->n_steps, r->n_steps == 1 ? "" : "s", target->metric,
            target_value(target->metric, &r->final));
}

static void csv_str(FILE *f, const char *s, bool comma)
{
    if (comma)
        fputc(',', f);
    csv_fwrite(f, s, strlen(s));
}

ql_status report_layers_csv(const session *s, const char *path, ql_error *err)
{
    const ql_qnet *q = s->cur.model->q;
    const ql_qconfig *c = s->cur.cfg;
    ql_outfile o;
    ql_status st = ql_outfile_open(&o, path, err);
    if (st != QL_OK)
        return st;
    fputs("layer,op,precision,act_algo,weight_algo,weight_bits,per_channel,overrides,macs,"
          "act_bits,act_scale,act_lo,act_hi\n",
          o.f);
    for (int i = 0; i < q->n_layers; i++) {
        const ql_qlayer *L = &q->layers[i];
        ql_qsettings set = ql_qconfig_layer_settings(c, L->name);
        const ql_qlayer_cfg *ov = find_override(c, L->name);
        unsigned m = ov ? ov->s.mask : 0;
        char over[128] = "";
        const char *names[] = {"precision", "act_algo", "weight_algo", "weight_bits",
                               "per_channel"};
        for (int k = 0; k < 5; k++)
            if (m & (1u << k))
                snprintf(over + strlen(over), sizeof over - strlen(over), "%s%s",
                         over[0] ? " " : "", names[k]);
        csv_str(o.f, L->name, false);
        csv_str(o.f, q->g->nodes[L->node].op_type, true);
        fprintf(o.f, ",%s", ql_prec_name(ql_qnet_layer_prec(q, c, i)));
        csv_str(o.f, set.act_algo, true);
        csv_str(o.f, set.weight_algo, true);
        fprintf(o.f, ",%d,%s", set.weight_bits, set.per_channel ? "true" : "false");
        csv_str(o.f, over, true);
        fprintf(o.f, ",%lld", (long long)L->macs);
        const ql_qtensor_cfg *t = act_tensor(q, c, L->out_value);
        if (t && ql_qnet_layer_prec(q, c, i) != QL_PREC_FLOAT)
            fprintf(o.f, ",%d,%.9g,%.9g,%.9g\n", t->enc.spec.bits, (double)t->enc.scale[0],
                    (double)t->enc.lo[0], (double)t->enc.hi[0]);
        else
            fputs(",,,,\n", o.f);
    }
    return ql_outfile_commit(&o, err);
}

/* ---------------------------------------------------------------------------
 * show commands
 * ------------------------------------------------------------------------- */

ql_status sc_show_layers(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    ql_status st;
    if (argc != 0)
        return command_usage("show layers", err);
    if ((st = command_need_model(s, err)) != QL_OK)
        return st;
    const ql_qnet *q = s->cur.model->q;
    const ql_qconfig *c = s->cur.cfg;
    FILE *f = session_out(s);
    int w = name_width(q, 5);
    fprintf(f, "%3s  %-*s  %-18s %-7s %-22s %-22s %5s %-7s %10s\n", "#", w, "layer", "op", "prec",
            "act-algo", "weight-algo", "wbits", "per-ch", "act-scale");
    for (int i = 0; i < q->n_layers; i++) {
        const ql_qlayer *L = &q->layers[i];
        ql_qsettings set = ql_qconfig_layer_settings(c, L->name);
        const ql_qlayer_cfg *ov = find_override(c, L->name);
        unsigned m = ov ? ov->s.mask : 0;
        char b[5][QL_ALGO_MAX + 8], bits[16];
        snprintf(bits, sizeof bits, "%d", set.weight_bits);
        fprintf(f, "%3d  %-*s  %-18s %-7s %-22s %-22s %5s %-7s", i, w, L->name,
                q->g->nodes[L->node].op_type,
                mark(b[0], sizeof b[0], ql_prec_name(set.precision), m & QL_QS_PRECISION),
                mark(b[1], sizeof b[1], set.act_algo, m & QL_QS_ACT_ALGO),
                L->weight_value >= 0 ? mark(b[2], sizeof b[2], set.weight_algo,
                                            m & QL_QS_WEIGHT_ALGO)
                                     : "-",
                L->weight_value >= 0 ? mark(b[3], sizeof b[3], bits, m & QL_QS_WEIGHT_BITS) : "-",
                L->weight_value >= 0 ? mark(b[4], sizeof b[4],
                                            set.per_channel ? "true" : "false",
                                            m & QL_QS_PER_CHANNEL)
                                     : "-");
        const ql_qtensor_cfg *t = act_tensor(q, c, L->out_value);
        if (t && set.precision != QL_PREC_FLOAT)
            fprintf(f, " %10.4g\n", (double)t->enc.scale[0]);
        else
            fprintf(f, " %10s\n", "-");
    }
    fprintf(f, "(* overridden for the layer)\n");
    return QL_OK;
}

ql_status sc_show_layer(session *s, int argc, char **argv, ql_error *err)
{
    int li;
    ql_status st;
    if (argc != 1)
        return command_usage("show layer", err);
    if ((st = command_find_layer(s, argv[0], &li, err)) != QL_OK)
        return st;
    const ql_qnet *q = s->cur.model->q;
    const ql_graph *g = q->g;
    const ql_qconfig *c = s->cur.cfg;
    const ql_qlayer *L = &q->layers[li];
    ql_qsettings set = ql_qconfig_layer_settings(c, L->name);
    const ql_qlayer_cfg *ov = find_override(c, L->name);
    unsigned m = ov ? ov->s.mask : 0;
    FILE *f = session_out(s);
    char b[QL_ALGO_MAX + 8];
    fprintf(f, "layer:        %s (%s, node %d%s%s)\n", L->name, g->nodes[L->node].op_type,
            L->node, L->act_node >= 0 ? ", with " : "",
            L->act_node >= 0 ? g->nodes[L->act_node].op_type : "");
    fprintf(f, "MACs:         %lld per sample\n", (long long)L->macs);
    fprintf(f, "precision:    %s\n", mark(b, sizeof b, ql_prec_name(set.precision),
                                          m & QL_QS_PRECISION));
    fprintf(f, "act-algo:     %s\n", mark(b, sizeof b, set.act_algo, m & QL_QS_ACT_ALGO));
    if (L->weight_value >= 0) {
        fprintf(f, "weight-algo:  %s\n",
                mark(b, sizeof b, set.weight_algo, m & QL_QS_WEIGHT_ALGO));
        fprintf(f, "weight-bits:  %d%s\n", set.weight_bits, m & QL_QS_WEIGHT_BITS ? "*" : "");
        fprintf(f, "per-channel:  %s%s\n", set.per_channel ? "true" : "false",
                m & QL_QS_PER_CHANNEL ? "*" : "");
    }
    if (ov && ov->reason)
        fprintf(f, "reason:       %s\n", ov->reason);
    const char *out_name = g->values[L->out_value].name;
    const ql_qtensor_cfg *t = act_tensor(q, c, L->out_value);
    if (t)
        fprintf(f, "output:       %s: %d-bit, scale %.6g, zero point %d, range [%.6g, %.6g]\n",
                out_name, t->enc.spec.bits, (double)t->enc.scale[0], t->enc.zero_point[0],
                (double)t->enc.lo[0], (double)t->enc.hi[0]);
    else
        fprintf(f, "output:       %s: not quantized\n", out_name);
    const ql_calib_stats *cs = s->cur.stats ? s->cur.stats->s : NULL;
    int h = cs ? ql_calib_stats_find(cs, out_name) : -1;
    if (h >= 0)
        fprintf(f, "statistics:   min %.6g, max %.6g over %llu values\n", cs->hists[h].min,
                cs->hists[h].max, (unsigned long long)cs->hists[h].count);
    for (int k = 0; k < 2; k++) {
        int v = k ? L->bias_value : L->weight_value;
        const ql_qtensor_cfg *w = v >= 0 ? ql_qconfig_find_tensor(c, g->values[v].name) : NULL;
        if (!w)
            continue;
        float lo = w->enc.scale[0], hi = w->enc.scale[0];
        for (int64_t i = 1; i < w->enc.n; i++) {
            lo = fminf(lo, w->enc.scale[i]);
            hi = fmaxf(hi, w->enc.scale[i]);
        }
        fprintf(f, "%s       %s: %d-bit, %lld scale%s in [%.6g, %.6g]%s\n", k ? "bias:  " : "weight:",
                g->values[v].name, w->enc.spec.bits, (long long)w->enc.n, w->enc.n == 1 ? "" : "s",
                (double)lo, (double)hi, w->q ? ", rounding chosen by the algorithm" : "");
    }
    return QL_OK;
}

/* One tensor's statistics, with the range each activation algorithm (at
 * default parameters) would clip it to. */
static ql_status show_tensor_stats(session *s, int v, int bits, ql_error *err)
{
    const ql_qnet *q = s->cur.model->q;
    const ql_calib_stats *cs = s->cur.stats->s;
    const char *name = q->g->values[v].name;
    int h = ql_calib_stats_find(cs, name);
    FILE *f = session_out(s);
    if (h < 0)
        return ql_fail(err, QL_ERR_ARG, "no statistics for tensor '%s' (it is not quantized)",
                       name);
    const ql_hist *hs = &cs->hists[h];
    fprintf(f, "tensor:       %s\n", name);
    fprintf(f, "values:       %llu (NaN %llu, -inf %llu, +inf %llu)\n",
            (unsigned long long)hs->count, (unsigned long long)hs->nan,
            (unsigned long long)hs->ninf, (unsigned long long)hs->pinf);
    fprintf(f, "min, max:     %.6g, %.6g\n", hs->min, hs->max);
    fprintf(f, "histogram:    %d bins over [%.6g, %.6g)\n", QL_HIST_BINS, -hs->range, hs->range);
    fprintf(f, "clip ranges at %d bits (default parameters):\n", bits);
    ql_qconfig *tmp = ql_qconfig_new();
    if (!tmp)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < s->plugins->n; i++) {
        const qlp_plugin *p = s->plugins->items[i].p;
        if (!p || !(p->kinds & QLP_KIND_ACTIVATION))
            continue;
        snprintf(tmp->defaults.act_algo, sizeof tmp->defaults.act_algo, "%s", p->name);
        ql_error e2;
        if (ql_calib_encode_act(q, tmp, cs, s->plugins, v, bits, &e2) != QL_OK) {
            fprintf(f, "  %-12s %s\n", p->name, e2.msg);
            continue;
        }
        const ql_qtensor_cfg *t = ql_qconfig_find_tensor(tmp, name);
        fprintf(f, "  %-12s [%.6g, %.6g]\n", p->name, (double)t->enc.lo[0],
                (double)t->enc.hi[0]);
    }
    ql_qconfig_free(tmp);
    return QL_OK;
}

ql_status sc_show_stats(session *s, int argc, char **argv, ql_error *err)
{
    ql_status st;
    if (argc > 1)
        return command_usage("show stats", err);
    if ((st = command_need_model(s, err)) != QL_OK)
        return st;
    if (!s->cur.stats)
        return ql_fail(err, QL_ERR_ARG, "no calibration statistics (run 'calibrate' first)");
    const ql_qnet *q = s->cur.model->q;
    const ql_calib_stats *cs = s->cur.stats->s;
    if (argc == 1) {
        int li = ql_qnet_find_layer(q, argv[0]);
        int v = li >= 0 ? q->layers[li].out_value : ql_graph_find_value(q->g, argv[0]);
        if (v < 0)
            return ql_fail(err, QL_ERR_ARG, "no layer or tensor named '%s'", argv[0]);
        int bits = li >= 0 ? ql_prec_bits(ql_qnet_layer_prec(q, s->cur.cfg, li)) : 0;
        if (v >= 0 && q->value_src[v] >= 0)
            v = q->value_src[v];
        return show_tensor_stats(s, v, bits ? bits : 8, err);
    }
    FILE *f = session_out(s);
    int w = 6;
    for (int i = 0; i < cs->n; i++) {
        int n = (int)strlen(cs->names[i]);
        w = n > w ? n : w;
    }
    fprintf(f, "statistics of %d tensors over %lld samples\n", cs->n, (long long)cs->samples);
    fprintf(f, "%-*s  %12s %12s %12s\n", w, "tensor", "values", "min", "max");
    for (int i = 0; i < cs->n; i++)
        fprintf(f, "%-*s  %12llu %12.6g %12.6g\n", w, cs->names[i],
                (unsigned long long)cs->hists[i].count, cs->hists[i].min, cs->hists[i].max);
    return QL_OK;
}

ql_status sc_show_config(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("show config", err);
    const ql_qconfig *c = s->cur.cfg;
    const ql_qsettings *d = &c->defaults;
    FILE *f = session_out(s);
    fprintf(f, "defaults:     precision %s, act-algo %s, weight-algo %s, weight-bits %d, "
               "per-channel %s\n",
            ql_prec_name(d->precision), d->act_algo, d->weight_algo, d->weight_bits,
            d->per_channel ? "true" : "false");
    for (int i = 0; i < c->n_layers; i++) {
        const ql_qlayer_cfg *L = &c->layers[i];
        fprintf(f, "layer %s:", L->name);
        if (L->s.mask & QL_QS_PRECISION)
            fprintf(f, " precision %s", ql_prec_name(L->s.precision));
        if (L->s.mask & QL_QS_ACT_ALGO)
            fprintf(f, " act-algo %s", L->s.act_algo);
        if (L->s.mask & QL_QS_WEIGHT_ALGO)
            fprintf(f, " weight-algo %s", L->s.weight_algo);
        if (L->s.mask & QL_QS_WEIGHT_BITS)
            fprintf(f, " weight-bits %d", L->s.weight_bits);
        if (L->s.mask & QL_QS_PER_CHANNEL)
            fprintf(f, " per-channel %s", L->s.per_channel ? "true" : "false");
        if (!L->s.mask)
            fprintf(f, " (no fields)");
        if (L->reason)
            fprintf(f, " (%s)", L->reason);
        fputc('\n', f);
    }
    if (c->n_tensors)
        fprintf(f, "encodings:    %d tensors, from %lld calibration samples\n", c->n_tensors,
                (long long)c->calib_samples);
    else
        fprintf(f, "encodings:    none (run 'calibrate')\n");
    return QL_OK;
}

ql_status sc_show_eval(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("show eval", err);
    if (!s->cur.last_eval.valid)
        return ql_fail(err, QL_ERR_ARG, "no eval results (run 'eval' first)");
    report_eval(session_out(s), s->cur.model->m->graph, &s->cur.last_eval,
                s->cur.last_eval.cfg_gen != s->cur.cfg_gen);
    return QL_OK;
}

static void curve_line(FILE *f, const ql_metrics *m, bool labels)
{
    fprintf(f, " %9.6f %8.2f %10.4g", ql_metrics_cosine(m), ql_metrics_sqnr_db(m),
            ql_metrics_mse(m));
    put_fraction(f, ql_metrics_agree(m));
    if (labels)
        fprintf(f, " %6.4f", m->labelled ? (double)m->correct_q / (double)m->labelled : 0.0);
    fputc('\n', f);
}

void report_curve(FILE *f, const ses_curve *x)
{
    const ql_curve *c = x->c;
    int w = 12;
    for (int k = 0; k < c->n; k++) {
        int n = (int)strlen(c->steps[k].name);
        w = n > w ? n : w;
    }
    fprintf(f, "curve: %d steps to %s, most sensitive first (%s table by %s), %lld samples%s\n",
            c->n, ql_prec_name(c->to), ql_sens_mode_name(c->ranked_mode),
            ql_sens_metric_name(x->ranked_by), (long long)c->samples,
            c->partial ? " (cancelled: partial)" : "");
    fprintf(f, "%4s  %-*s  %-18s %-14s %9s %8s %10s %6s%s\n", "step", w, "layer", "op", "change",
            "cosine", "sqnr_db", "mse", "agree", c->has_labels ? "   top1" : "");
    if (c->base.n == 0)
        return; /* cancelled before anything was measured */
    fprintf(f, "%4d  %-*s  %-18s %-14s", 0, w, "(the config)", "", "");
    curve_line(f, &c->base, c->has_labels);
    for (int k = 0; k < c->n; k++) {
        const ql_curve_step *s = &c->steps[k];
        char change[40];
        snprintf(change, sizeof change, "%s -> %s", ql_prec_name(s->from), ql_prec_name(s->to));
        fprintf(f, "%4d  %-*s  %-18s %-14s", k + 1, w, s->name, s->op, change);
        curve_line(f, &s->m, c->has_labels);
    }
    if (c->n < c->n_total)
        fprintf(f, "not measured: %d steps\n", c->n_total - c->n);
}

ql_status sc_show_curve(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("show curve", err);
    if (!s->cur.curve)
        return ql_fail(err, QL_ERR_ARG, "no cumulative curve (run 'curve' first)");
    report_curve(session_out(s), s->cur.curve);
    return QL_OK;
}

ql_status sc_show_sensitivity(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    if (argc != 0)
        return command_usage("show sensitivity", err);
    if (!s->cur.sens)
        return ql_fail(err, QL_ERR_ARG, "no sensitivity table (run 'sensitivity' first)");
    report_sensitivity(session_out(s), s->cur.sens);
    return QL_OK;
}

ql_status sc_export_csv_layers(session *s, int argc, char **argv, ql_error *err)
{
    ql_status st;
    if (argc != 1)
        return command_usage("export csv layers", err);
    if ((st = command_need_model(s, err)) != QL_OK)
        return st;
    return report_layers_csv(s, argv[0], err);
}
