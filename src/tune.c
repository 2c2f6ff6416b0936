/* Handlers that set up and tune the session: the model, its data,
 * calibration, and setting or resetting quantization settings. After
 * calibration a settings change re-encodes from the kept statistics
 * (ql_calib_update), so it never needs a pass over data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"

/* ---------------------------------------------------------------------------
 * Model and data
 * ------------------------------------------------------------------------- */

ql_status sc_load_model(session *s, int argc, char **argv, ql_error *err)
{
    if (argc != 1)
        return command_usage("load", err);
    ql_model *m = NULL;
    ql_qnet *q = NULL;
    ql_status st = ql_model_load(argv[0], &m, err);
    if (st != QL_OK)
        return st;
    if ((st = ql_qnet_build(m->graph, &q, err)) != QL_OK) {
        ql_model_free(m);
        return st;
    }
    ses_model *x = ses_model_new(m, q);
    ql_qconfig *c = ql_qconfig_new();
    if (!x || !c) {
        ses_release(x);
        ql_qconfig_free(c);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    /* a new model starts over; only the defaults mean the same for any model */
    c->defaults = s->cur.cfg->defaults;
    ql_qconfig_free(s->cur.cfg);
    s->cur.cfg = c;
    s->cur.cfg_gen++;
    ses_set(&s->cur.model, x);
    ses_set(&s->cur.calib, NULL);
    ses_set(&s->cur.eval, NULL);
    ses_set(&s->cur.stats, NULL);
    ses_set(&s->cur.autoprec, NULL);
    ses_set(&s->cur.sens, NULL);
    ses_set(&s->cur.curve, NULL);
    s->cur.last_eval.valid = false;
    int weighted = 0;
    for (int i = 0; i < q->n_layers; i++)
        weighted += q->layers[i].weight_value >= 0;
    fprintf(session_out(s), "model: %s: %d nodes, %d layers (%d weighted)\n", argv[0],
            m->graph->n_nodes, q->n_layers, weighted);
    return QL_OK;
}

/* Loads samples (and labels) conformed to the model's one input. */
static ql_status load_data(const session *s, const char *path, const char *labels_path,
                           long limit, ses_data **out, ql_error *err)
{
    const ql_model *m = s->cur.model->m;
    const ql_graph *g = m->graph;
    ql_dataset *d = NULL;
    int64_t *labels = NULL, n_labels = 0;
    ql_status st;
    *out = NULL;
    if (g->n_inputs != 1)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s: a model with one input is needed (it has %d)",
                       m->path, g->n_inputs);
    if ((st = ql_dataset_load(path, limit, &d, err)) != QL_OK)
        return st;
    if ((st = ql_dataset_conform(d, &g->values[g->inputs[0]], err)) != QL_OK)
        goto fail;
    if (labels_path) {
        if ((st = ql_labels_load(labels_path, limit, &labels, &n_labels, err)) != QL_OK)
            goto fail;
        if (n_labels != d->n) {
            st = ql_fail(err, QL_ERR_DATA, "%s has %lld labels but %s has %lld samples",
                         labels_path, (long long)n_labels, path, (long long)d->n);
            goto fail;
        }
        /* classes = elements per sample of the output top-1 is taken on
         * (the first float one), when the shape says */
        int score = 0;
        for (int j = g->n_outputs - 1; j >= 0; j--)
            if (g->values[g->outputs[j]].dtype == QL_F32)
                score = j;
        const ql_value *o = &g->values[g->outputs[score]];
        int64_t classes = o->ndim >= 1 ? 1 : -1;
        for (int i = 1; i < o->ndim; i++)
            classes = o->dims[i] > 0 && classes > 0 ? classes * o->dims[i] : -1;
        for (int64_t i = 0; i < n_labels; i++)
            if (labels[i] < 0 || (classes > 0 && labels[i] >= classes)) {
                st = ql_fail(err, QL_ERR_DATA, "%s: label of sample %lld is %lld, outside [0, %lld)",
                             labels_path, (long long)i, (long long)labels[i],
                             (long long)classes);
                goto fail;
            }
    }
    if (!(*out = ses_data_new(d, labels, n_labels)))
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    return QL_OK;
fail:
    ql_dataset_free(d);
    free(labels);
    return st;
}

ql_status sc_data_calib(session *s, int argc, char **argv, ql_error *err)
{
    command_opt o[] = {{"limit", false, -1}};
    long limit = 0;
    ses_data *x;
    ql_status st;
    if (argc < 1)
        return command_usage("data calib", err);
    if ((st = command_need_model(s, err)) != QL_OK ||
        (st = command_parse_opts(argc - 1, argv + 1, o, 1, err)) != QL_OK ||
        (o[0].at >= 0 &&
         (st = command_parse_int("limit", argv[1 + o[0].at], 1, 1L << 40, &limit, err)) != QL_OK) ||
        (st = load_data(s, argv[0], NULL, limit, &x, err)) != QL_OK)
        return st;
    ses_set(&s->cur.calib, x);
    ses_set(&s->cur.stats, NULL); /* they describe other data */
    fprintf(session_out(s), "calib: %lld samples\n", (long long)x->d->n);
    return QL_OK;
}

ql_status sc_data_eval(session *s, int argc, char **argv, ql_error *err)
{
    command_opt o[] = {{"labels", false, -1}, {"limit", false, -1}};
    long limit = 0;
    ses_data *x;
    ql_status st;
    if (argc < 1)
        return command_usage("data eval", err);
    if ((st = command_need_model(s, err)) != QL_OK ||
        (st = command_parse_opts(argc - 1, argv + 1, o, 2, err)) != QL_OK ||
        (o[1].at >= 0 &&
         (st = command_parse_int("limit", argv[1 + o[1].at], 1, 1L << 40, &limit, err)) != QL_OK) ||
        (st = load_data(s, argv[0], o[0].at >= 0 ? argv[1 + o[0].at] : NULL, limit, &x, err)) !=
            QL_OK)
        return st;
    ses_set(&s->cur.eval, x);
    ses_set(&s->cur.sens, NULL); /* results of other data */
    ses_set(&s->cur.curve, NULL);
    ses_set(&s->cur.autoprec, NULL);
    s->cur.last_eval.valid = false;
    fprintf(session_out(s), "eval: %lld samples%s\n", (long long)x->d->n,
            x->labels ? " with labels" : "");
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Calibration and settings
 * ------------------------------------------------------------------------- */

/* Checks an algorithm spec and writes its canonical form into dst. */
static ql_status canon_algo(const session *s, const char *spec, qlp_kind kind, char *dst,
                            ql_error *err)
{
    ql_algo a;
    ql_status st = ql_algo_parse(s->plugins, spec, kind, &a, err);
    if (st == QL_OK)
        ql_algo_format(&a, dst, QL_ALGO_MAX);
    return st;
}

/* Statistics stand for the current calibration data: collected on it, or
 * loaded while it was current ('load stats'). */
static bool stats_usable(const session *s)
{
    return s->cur.stats && s->cur.stats->from == s->cur.calib;
}

/* Collects statistics over the calibration data unless they are usable. */
static ql_status ensure_stats(session *s, ql_error *err)
{
    if (stats_usable(s))
        return QL_OK;
    if (!s->cur.calib)
        return ql_fail(err, QL_ERR_ARG, "no calibration data (use 'data calib PATH')");
    const ses_model *x = s->cur.model;
    ql_calib_opts co = session_calib_opts(s);
    ql_calib_stats *cs = NULL;
    ql_status st = ql_calib_collect(x->m, x->q, s->cur.calib->d, &co, &cs, err);
    if (st != QL_OK)
        return st;
    ses_stats *ns = ses_stats_new(cs, s->cur.calib);
    if (!ns)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ses_set(&s->cur.stats, ns);
    return QL_OK;
}

ql_status sc_collect_stats(session *s, int argc, char **argv, ql_error *err)
{
    (void)argv;
    ql_status st;
    if (argc != 0)
        return command_usage("collect stats", err);
    if ((st = command_need_model(s, err)) != QL_OK || (st = ensure_stats(s, err)) != QL_OK)
        return st;
    fprintf(session_out(s), "stats: %d tensors over %lld samples\n", s->cur.stats->s->n,
            (long long)s->cur.stats->s->samples);
    return QL_OK;
}

ql_status sc_calibrate(session *s, int argc, char **argv, ql_error *err)
{
    enum { ALGO, WALGO, WBITS, ABITS, PER_TENSOR, PER_CHANNEL, N_OPTS };
    command_opt o[N_OPTS] = {{"algo", false, -1},       {"weight-algo", false, -1},
                         {"weight-bits", false, -1}, {"act-bits", false, -1},
                         {"per-tensor", true, -1},   {"per-channel", true, -1}};
    ql_qsettings *def = &s->cur.cfg->defaults;
    ql_status st;
    long v;
    if ((st = command_need_model(s, err)) != QL_OK ||
        (st = command_parse_opts(argc, argv, o, N_OPTS, err)) != QL_OK)
        return st;
    if (!stats_usable(s) && !s->cur.calib)
        return ql_fail(err, QL_ERR_ARG, "no calibration data (use 'data calib PATH')");
    if (o[PER_TENSOR].at >= 0 && o[PER_CHANNEL].at >= 0)
        return ql_fail(err, QL_ERR_ARG, "per-tensor and per-channel exclude each other");
    for (int k = ALGO; k <= WALGO; k++) {
        if (o[k].at < 0)
            continue;
        char *dst = k == ALGO ? def->act_algo : def->weight_algo;
        qlp_kind kind = k == ALGO ? QLP_KIND_ACTIVATION : QLP_KIND_WEIGHT;
        if ((st = canon_algo(s, argv[o[k].at], kind, dst, err)) != QL_OK ||
            (st = command_replace_arg(argv, o[k].at, dst, err)) != QL_OK)
            return ql_fail_prefix(err, st, "%s", o[k].key);
    }
    if (o[WBITS].at >= 0) {
        if ((st = command_parse_int("weight-bits", argv[o[WBITS].at], 2, 16, &v, err)) != QL_OK)
            return st;
        def->weight_bits = (int)v;
    }
    if (o[ABITS].at >= 0) {
        if (strcmp(argv[o[ABITS].at], "8") != 0 && strcmp(argv[o[ABITS].at], "16") != 0)
            return ql_fail(err, QL_ERR_ARG, "act-bits: '%s' is not 8 or 16", argv[o[ABITS].at]);
        def->precision = argv[o[ABITS].at][0] == '8' ? QL_PREC_INT8 : QL_PREC_INT16;
    }
    if (o[PER_TENSOR].at >= 0 || o[PER_CHANNEL].at >= 0)
        def->per_channel = o[PER_CHANNEL].at >= 0;

    const ses_model *x = s->cur.model;
    ql_calib_opts co = session_calib_opts(s);
    if ((st = ensure_stats(s, err)) != QL_OK)
        return st;
    /* with loaded statistics and no data, an algorithm that needs samples
     * (adaround) says so */
    st = ql_calib_encode(x->m, x->q, s->cur.cfg, s->cur.stats->s, s->plugins,
                         s->cur.calib ? s->cur.calib->d : NULL, &co, err);
    if (st != QL_OK)
        return st;
    s->cur.cfg_gen++;
    fprintf(session_out(s),
            "calibrate: %lld samples, %d encodings (act %s %s, weights %s %d-bit %s)\n",
            (long long)s->cur.stats->s->samples, s->cur.cfg->n_tensors, def->act_algo,
            ql_prec_name(def->precision), def->weight_algo, def->weight_bits,
            def->per_channel ? "per-channel" : "per-tensor");
    return QL_OK;
}

#define FIELD_LIST(X)                                  \
    X("precision", QL_QS_PRECISION, "int8|int16|float") \
    X("act-algo", QL_QS_ACT_ALGO, "an activation algorithm") \
    X("weight-algo", QL_QS_WEIGHT_ALGO, "a weight algorithm") \
    X("weight-bits", QL_QS_WEIGHT_BITS, "2 to 16")     \
    X("per-channel", QL_QS_PER_CHANNEL, "true|false")

static const struct {
    const char *name;
    unsigned bit;
} fields[] = {
#define FIELD_ROW_(n, b, h) {n, b},
    FIELD_LIST(FIELD_ROW_)
#undef FIELD_ROW_
};

static ql_status parse_field(const char *w, unsigned *bit, ql_error *err)
{
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(w, fields[i].name)) {
            *bit = fields[i].bit;
            return QL_OK;
        }
    return ql_fail(err, QL_ERR_ARG,
                   "unknown field '%s' (expected precision, act-algo, weight-algo, weight-bits, "
                   "per-channel)",
                   w);
}

/* Brings the encodings in line with changed settings (fields in mask; of
 * one layer, or the defaults when layer < 0). Before calibration there are
 * none to update. */
static ql_status reencode(session *s, unsigned mask, int layer, const ql_qconfig *before,
                          ql_error *err)
{
    if (s->cur.cfg->n_tensors == 0)
        return QL_OK;
    if (!s->cur.stats)
        return ql_fail(err, QL_ERR_ARG,
                       "the encodings cannot follow the change without calibration statistics "
                       "(run 'calibrate' first)");
    const ses_model *x = s->cur.model;
    ql_calib_opts co = session_calib_opts(s);
    const ql_dataset *calib = s->cur.calib ? s->cur.calib->d : NULL;
    /* ql_calib_update keeps weight encodings that still fit the bits and
     * axis, so a new weight algorithm must force them: one layer's, or all */
    if ((mask & QL_QS_WEIGHT_ALGO) && layer < 0)
        return ql_calib_encode(x->m, x->q, s->cur.cfg, s->cur.stats->s, s->plugins, calib, &co,
                               err);
    return ql_calib_update(x->m, x->q, s->cur.cfg, s->cur.stats->s, s->plugins, calib, &co,
                           before, (mask & QL_QS_WEIGHT_ALGO) ? layer : -1, err);
}

/* `before` holds the settings the current encodings were made for, so
 * that the encodings the change does not touch stay as they are. */
static ql_status set_apply(session *s, int argc, char **argv, const ql_qconfig *before,
                           ql_error *err)
{
    int layer = -1, i = 0;
    unsigned bit;
    ql_status st;
    ql_qsettings *dst = &s->cur.cfg->defaults;
    if (argc == 4 && !strcmp(argv[0], "layer")) {
        if ((st = command_find_layer(s, argv[1], &layer, err)) != QL_OK)
            return st;
        ql_qlayer_cfg *L = ql_qconfig_layer(s->cur.cfg, argv[1]);
        if (!L)
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        dst = &L->s;
        i = 2;
    } else if (argc != 2) {
        return command_usage("set", err);
    }
    if ((st = parse_field(argv[i], &bit, err)) != QL_OK)
        return st;
    const char *val = argv[i + 1];
    long v;
    switch (bit) {
    case QL_QS_PRECISION:
        if (!ql_prec_parse(val, &dst->precision))
            return ql_fail(err, QL_ERR_ARG, "precision: '%s' is not int8, int16 or float", val);
        break;
    case QL_QS_ACT_ALGO:
    case QL_QS_WEIGHT_ALGO: {
        char *a = bit == QL_QS_ACT_ALGO ? dst->act_algo : dst->weight_algo;
        qlp_kind kind = bit == QL_QS_ACT_ALGO ? QLP_KIND_ACTIVATION : QLP_KIND_WEIGHT;
        if ((st = canon_algo(s, val, kind, a, err)) != QL_OK ||
            (st = command_replace_arg(argv, i + 1, a, err)) != QL_OK)
            return ql_fail_prefix(err, st, "%s", argv[i]);
        break;
    }
    case QL_QS_WEIGHT_BITS:
        if ((st = command_parse_int("weight-bits", val, 2, 16, &v, err)) != QL_OK)
            return st;
        dst->weight_bits = (int)v;
        break;
    case QL_QS_PER_CHANNEL:
        if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0)
            return ql_fail(err, QL_ERR_ARG, "per-channel: '%s' is not true or false", val);
        dst->per_channel = val[0] == 't';
        break;
    }
    dst->mask |= bit;
    s->cur.cfg_gen++;
    return reencode(s, bit, layer, before, err);
}

ql_status sc_set(session *s, int argc, char **argv, ql_error *err)
{
    ql_qconfig *before = ql_qconfig_clone(s->cur.cfg);
    if (!before)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = set_apply(s, argc, argv, before, err);
    ql_qconfig_free(before);
    return st;
}

ql_status sc_reset(session *s, int argc, char **argv, ql_error *err)
{
    int layer = -1, i = 0;
    unsigned mask = QL_QS_ALL;
    ql_status st;
    if (argc == 1 && !strcmp(argv[0], "layer"))
        return command_usage("reset", err);
    if (argc >= 2 && !strcmp(argv[0], "layer")) {
        if ((st = command_find_layer(s, argv[1], &layer, err)) != QL_OK)
            return st;
        i = 2;
    }
    if (argc - i > 1)
        return command_usage("reset", err);
    if (argc - i == 1 && (st = parse_field(argv[i], &mask, err)) != QL_OK)
        return st;
    if (layer >= 0) {
        ql_qconfig_reset_layer(s->cur.cfg, argv[1], mask);
    } else {
        /* the built-in defaults are those of a new config */
        ql_qconfig *fresh = ql_qconfig_new();
        if (!fresh)
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        ql_qsettings *d = &s->cur.cfg->defaults, *f = &fresh->defaults;
        if (mask & QL_QS_PRECISION)
            d->precision = f->precision;
        if (mask & QL_QS_ACT_ALGO)
            memcpy(d->act_algo, f->act_algo, sizeof d->act_algo);
        if (mask & QL_QS_WEIGHT_ALGO)
            memcpy(d->weight_algo, f->weight_algo, sizeof d->weight_algo);
        if (mask & QL_QS_WEIGHT_BITS)
            d->weight_bits = f->weight_bits;
        if (mask & QL_QS_PER_CHANNEL)
            d->per_channel = f->per_channel;
        ql_qconfig_free(fresh);
    }
    s->cur.cfg_gen++;
    return reencode(s, mask, layer, NULL, err);
}
