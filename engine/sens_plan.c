/* Per-layer plans for the sensitivity analysis, and the re-run sets that
 * make it incremental. A plan is a set of pointers into the full config's
 * plan, except for the encodings and constants an all-but raise changes,
 * which it owns; so two plans differ at a value exactly when their
 * pointers differ. */
#include "sens_plan.h"

#include <stdlib.h>
#include <string.h>

#include "calibrate.h"

/* Which values the placement rules quantize when only layer l keeps its
 * precision: bits from qnet for a temporary config (precision overrides
 * only; encodings come from the full plan). */
static ql_status single_bits(const sens_plans *p, int l, int *bits, ql_error *err)
{
    const ql_qnet *q = p->q;
    ql_qconfig *t = ql_qconfig_new();
    ql_qlayer_cfg *o = t ? ql_qconfig_layer(t, q->layers[l].name) : NULL;
    if (!o) {
        ql_qconfig_free(t);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    t->defaults = p->c->defaults;
    t->defaults.precision = QL_PREC_FLOAT;
    o->s.mask = QL_QS_PRECISION;
    o->s.precision = p->prec[l];
    ql_qnet_act_bits(q, t, bits);
    ql_qconfig_free(t);
    return QL_OK;
}

ql_prec sens_raised_prec(const sens_plans *p, int l)
{
    return p->raise_int16 && p->prec[l] == QL_PREC_INT8 ? QL_PREC_INT16 : QL_PREC_FLOAT;
}

/* A copy of c's settings with layer l set to prec, and the encodings of
 * `tensors` (none when NULL). */
static ql_qconfig *with_layer(const ql_qconfig *c, const char *layer, ql_prec prec,
                              const ql_qconfig *tensors)
{
    ql_qconfig shallow = *c;
    shallow.n_tensors = tensors ? tensors->n_tensors : 0;
    shallow.tensors = tensors ? tensors->tensors : NULL;
    ql_qconfig *t = ql_qconfig_clone(&shallow);
    ql_qlayer_cfg *o = t ? ql_qconfig_layer(t, layer) : NULL;
    if (!o) {
        ql_qconfig_free(t);
        return NULL;
    }
    o->s.mask |= QL_QS_PRECISION;
    o->s.precision = prec;
    return t;
}

static void keep_weights(const sens_plans *p, int i, const ql_tensor **cst)
{
    const ql_qlayer *L = &p->q->layers[i];
    if (L->weight_value >= 0)
        cst[L->weight_value] = p->full->constants[L->weight_value];
    if (L->bias_value >= 0)
        cst[L->bias_value] = p->full->constants[L->bias_value];
}

ql_status sens_plan_build(const sens_plans *p, ql_sens_mode mode, int l, const ql_encoding **act,
                          const ql_tensor **cst, ql_error *err)
{
    const ql_qnet *q = p->q;
    const ql_graph *g = q->g;
    int nv = g->n_values;
    memset(act, 0, (size_t)nv * sizeof *act);
    memset(cst, 0, (size_t)nv * sizeof *cst);
    if (mode == QL_SENS_WEIGHTS) {
        if (p->prec[l] != QL_PREC_FLOAT)
            keep_weights(p, l, cst);
        return QL_OK;
    }
    if (mode == QL_SENS_ACTIVATIONS) {
        for (int v = 0; v < nv; v++)
            if (q->value_site[v] && q->value_layer[v] == l)
                act[v] = p->full->act[v];
        return QL_OK;
    }
    if (mode != QL_SENS_SINGLE)
        return ql_fail(err, QL_ERR_INTERNAL, "sens_plan_build: mode %s", ql_sens_mode_name(mode));
    int *bits = malloc((size_t)(nv ? nv : 1) * sizeof *bits);
    if (!bits)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = single_bits(p, l, bits, err);
    for (int v = 0; st == QL_OK && v < nv; v++) {
        /* a quantized layer's output quantizer is its own: on with it
         * alone, whoever reads it. Other sites (graph inputs, float layers'
         * outputs) are quantized where quantized layers read them. */
        int pl = q->value_site[v] ? q->value_layer[v] : -1;
        bool owned = pl >= 0 && p->prec[pl] != QL_PREC_FLOAT;
        bool on = owned ? pl == l : bits[v] != 0;
        if (!on)
            continue;
        /* a value quantized with fewer layers quantized is quantized in the
         * full config too; at a boundary the full config's quantizer
         * (whose bits follow the readers it has there) is the one taken */
        if (!p->full->act[v])
            st = ql_fail(err, QL_ERR_ARG, "tensors.\"%s\": no encoding in the config (recalibrate)",
                         g->values[v].name);
        act[v] = p->full->act[v];
    }
    if (st == QL_OK && p->prec[l] != QL_PREC_FLOAT)
        keep_weights(p, l, cst);
    free(bits);
    return st;
}

/* Encodings of c_l, a copy of c with a layer's precision changed, brought
 * in line with its settings. With statistics, as ql_calib_update does after
 * `set layer ... precision` (encodings of p->enc_from whose bits and
 * algorithm are unchanged kept, the others computed). Without, a tensor whose bits
 * changed gets its range in c at the new bits first, so that every
 * activation encoding is one ql_calib_update keeps and none is computed
 * from the (empty) statistics it is given; biases follow their inputs. */
static ql_status raise_encodings(const sens_plans *p, ql_qconfig *cl, const int *bits_l,
                                 ql_error *err)
{
    const ql_graph *g = p->q->g;
    ql_calib_opts co = {.n_threads = 1};
    if (p->stats)
        return ql_calib_update(p->m, p->q, cl, p->stats, p->ps, NULL, &co,
                               p->enc_from ? p->enc_from : p->c, -1, err);
    for (int v = 0; v < g->n_values; v++) {
        if (!bits_l[v] || bits_l[v] == p->bits[v])
            continue;
        const ql_qtensor_cfg *old = ql_qconfig_find_tensor(p->c, g->values[v].name);
        ql_qtensor_cfg *t = ql_qconfig_tensor(cl, g->values[v].name);
        if (!old || !t)
            return old ? ql_fail(err, QL_ERR_NOMEM, "out of memory")
                       : ql_fail(err, QL_ERR_ARG,
                                 "tensors.\"%s\": no encoding in the config (recalibrate)",
                                 g->values[v].name);
        ql_qspec spec = old->enc.spec;
        spec.bits = bits_l[v];
        ql_encoding e = {0};
        ql_status st = ql_encoding_init(&e, &spec, 1, err);
        if (st != QL_OK)
            return st;
        ql_encoding_set_range(&e, 0, old->enc.lo[0], old->enc.hi[0]);
        ql_encoding_clear(&t->enc);
        t->enc = e;
    }
    ql_calib_stats none = {.model_fingerprint = p->m->fingerprint};
    return ql_calib_update(p->m, p->q, cl, &none, p->ps, NULL, &co, cl, -1, err);
}

static bool same_tensor(const ql_tensor *a, const ql_tensor *b)
{
    return a && b && a->dtype == b->dtype && ql_tensor_numel(a) == ql_tensor_numel(b) &&
           memcmp(a->data, b->data, ql_tensor_nbytes(a)) == 0;
}

ql_status sens_plan_raise(const sens_plans *p, int l, const ql_encoding **act,
                          const ql_tensor **cst, ql_qsim **own, ql_error *err)
{
    const ql_qnet *q = p->q;
    const ql_graph *g = q->g;
    int nv = g->n_values;
    ql_prec to = sens_raised_prec(p, l);
    ql_qconfig *cl = NULL;
    ql_qsim *sim = NULL;
    ql_status st = QL_OK;
    *own = NULL;
    memset(act, 0, (size_t)nv * sizeof *act);
    memset(cst, 0, (size_t)nv * sizeof *cst);
    if (p->prec[l] == QL_PREC_FLOAT) { /* nothing to raise: the config as it is */
        memcpy(act, p->full->act, (size_t)nv * sizeof *act);
        memcpy(cst, p->full->constants, (size_t)nv * sizeof *cst);
        return QL_OK;
    }
    int *bits_l = malloc((size_t)(nv ? nv : 1) * sizeof *bits_l);
    if (!bits_l || !(cl = with_layer(p->c, q->layers[l].name, to, NULL))) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    ql_qnet_act_bits(q, cl, bits_l);
    bool new_bits = false;
    for (int v = 0; v < nv; v++)
        new_bits |= bits_l[v] != 0 && bits_l[v] != p->bits[v];
    if (!new_bits) {
        /* every quantizer left is one of the config's: the full plan's
         * entries, without l's weights unless l keeps them (int16) or a
         * layer still quantized shares them */
        for (int v = 0; v < nv; v++)
            act[v] = bits_l[v] ? p->full->act[v] : NULL;
        for (int i = 0; i < q->n_layers; i++)
            if (i == l ? to != QL_PREC_FLOAT : p->prec[i] != QL_PREC_FLOAT)
                keep_weights(p, i, cst);
        goto cleanup;
    }
    /* some tensor changes bits: the config made as a session makes it */
    ql_qconfig_free(cl);
    const ql_qconfig *from = p->stats && p->enc_from ? p->enc_from : p->c;
    if (!(cl = with_layer(p->c, q->layers[l].name, to, from))) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    if ((st = raise_encodings(p, cl, bits_l, err)) != QL_OK ||
        (st = ql_qsim_build(q, cl, &sim, err)) != QL_OK)
        goto cleanup;
    for (int v = 0; v < nv; v++) {
        if (sim->act[v] && p->full->act[v] && ql_encoding_equal(sim->act[v], p->full->act[v])) {
            act[v] = p->full->act[v];
            ql_encoding_clear(&sim->enc[v]);
            sim->act[v] = NULL;
        } else {
            act[v] = sim->act[v];
        }
        if (sim->constants[v] && same_tensor(sim->constants[v], p->full->constants[v])) {
            cst[v] = p->full->constants[v];
            ql_tensor_free((ql_tensor *)sim->constants[v]);
            sim->constants[v] = NULL;
        } else {
            cst[v] = sim->constants[v];
        }
    }
    *own = sim;
    sim = NULL;
cleanup:
    ql_qsim_free(sim);
    ql_qconfig_free(cl);
    free(bits_l);
    return st;
}

static bool differs(const ql_exec_quant *a, const ql_exec_quant *b, int v)
{
    const void *aa = a->act ? (const void *)a->act[v] : NULL;
    const void *ba = b->act ? (const void *)b->act[v] : NULL;
    const void *ac = a->constants ? (const void *)a->constants[v] : NULL;
    const void *bc = b->constants ? (const void *)b->constants[v] : NULL;
    return aa != ba || ac != bc;
}

bool sens_plans_differ(const ql_graph *g, const ql_exec_quant *a, const ql_exec_quant *b)
{
    for (int v = 0; v < g->n_values; v++)
        if (differs(a, b, v))
            return true;
    return false;
}

void sens_rerun_set(const ql_qnet *q, int l, const ql_exec_quant *base, const ql_exec_quant *lp,
                    char *run)
{
    const ql_graph *g = q->g;
    char *dirty = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    const ql_qlayer *L = &q->layers[l];
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        bool r = i == L->node || i == L->act_node || !dirty;
        for (int j = 0; j < n->n_in && !r; j++) {
            int v = n->in[j];
            /* a changed quantizer on a value produced outside the set is
             * applied on entry, so only its readers need to run */
            r = v >= 0 && (dirty[v] || differs(base, lp, v));
        }
        run[i] = r;
        if (r && dirty)
            for (int j = 0; j < n->n_out; j++)
                if (n->out[j] >= 0)
                    dirty[n->out[j]] = 1;
    }
    free(dirty); /* out of memory: every node runs, which is still exact */
}

int sens_feed_set(const ql_graph *g, const char *run, int *ids)
{
    char *produced = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    char *seen = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    int n = 0;
    if (!produced || !seen) {
        free(produced);
        free(seen);
        return -1;
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (run[i])
            for (int j = 0; j < g->nodes[i].n_out; j++)
                if (g->nodes[i].out[j] >= 0)
                    produced[g->nodes[i].out[j]] = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        if (!run[i])
            continue;
        for (int j = 0; j < g->nodes[i].n_in; j++) {
            int v = g->nodes[i].in[j];
            if (v < 0 || g->values[v].constant || produced[v] || seen[v])
                continue;
            seen[v] = 1;
            ids[n++] = v;
        }
    }
    /* graph outputs the set does not compute are returned from their feeds */
    for (int j = 0; j < g->n_outputs; j++) {
        int v = g->outputs[j];
        if (!produced[v] && !seen[v]) {
            seen[v] = 1;
            ids[n++] = v;
        }
    }
    free(produced);
    free(seen);
    return n;
}

void sens_local_set(const ql_graph *g, const char *rerun, int out_value, char *run)
{
    char *need = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const ql_node *n = &g->nodes[i];
        bool r = false;
        for (int j = 0; j < n->n_out; j++)
            r |= n->out[j] >= 0 && (n->out[j] == out_value || (need && need[n->out[j]]));
        run[i] = rerun[i] && r;
        if (run[i] && need)
            for (int j = 0; j < n->n_in; j++)
                if (n->in[j] >= 0)
                    need[n->in[j]] = 1;
    }
    free(need); /* out of memory: only the producer of out_value, fed the rest */
}
