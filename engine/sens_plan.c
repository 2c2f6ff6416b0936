/* Per-layer plans for the sensitivity analysis, and the re-run sets that
 * make it incremental. Every plan is a set of pointers into the full
 * config's plan, so two plans differ at a value exactly when their
 * pointers differ. */
#include "sens_plan.h"

#include <stdlib.h>
#include <string.h>

/* Which values the placement rules quantize when only the layers with
 * keep[i] stay at their precision: bits from qnet for a temporary config
 * (precision overrides only; encodings come from the full plan). */
static ql_status plan_bits(const sens_plans *p, ql_sens_mode mode, int l, int *bits,
                           ql_error *err)
{
    const ql_qnet *q = p->q;
    ql_qconfig shallow = *p->c;
    shallow.n_tensors = 0;
    shallow.tensors = NULL;
    ql_qconfig *t = NULL;
    if (mode == QL_SENS_ALL_BUT) {
        t = ql_qconfig_clone(&shallow);
        ql_qlayer_cfg *o = t ? ql_qconfig_layer(t, q->layers[l].name) : NULL;
        if (!o) {
            ql_qconfig_free(t);
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        }
        o->s.mask |= QL_QS_PRECISION;
        o->s.precision = QL_PREC_FLOAT;
    } else {
        t = ql_qconfig_new();
        ql_qlayer_cfg *o = t ? ql_qconfig_layer(t, q->layers[l].name) : NULL;
        if (!o) {
            ql_qconfig_free(t);
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        }
        t->defaults = p->c->defaults;
        t->defaults.precision = QL_PREC_FLOAT;
        o->s.mask = QL_QS_PRECISION;
        o->s.precision = p->prec[l];
    }
    ql_qnet_act_bits(q, t, bits);
    ql_qconfig_free(t);
    return QL_OK;
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
    int *bits = malloc((size_t)(nv ? nv : 1) * sizeof *bits);
    if (!bits)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = plan_bits(p, mode, l, bits, err);
    for (int v = 0; st == QL_OK && v < nv; v++) {
        /* a quantized layer's output quantizer is its own: on with it alone,
         * off without it, whoever reads it. Other sites (graph inputs, float
         * layers' outputs) are quantized where quantized layers read them. */
        int pl = q->value_site[v] ? q->value_layer[v] : -1;
        bool owned = pl >= 0 && p->prec[pl] != QL_PREC_FLOAT;
        bool on = owned ? (mode == QL_SENS_SINGLE) == (pl == l) : bits[v] != 0;
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
    /* a weight shared with a layer left quantized stays quantized */
    for (int i = 0; st == QL_OK && i < q->n_layers; i++) {
        bool on = mode == QL_SENS_ALL_BUT ? i != l : i == l;
        if (on && p->prec[i] != QL_PREC_FLOAT)
            keep_weights(p, i, cst);
    }
    free(bits);
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
