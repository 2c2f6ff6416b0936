/* Quantizer placement: a single pass in node order decides, for every node,
 * whether it is a layer, folds a Relu/Clip that alone consumes a layer into
 * it, and propagates encodings through data-movement ops. */
#include "qnet.h"

#include <stdlib.h>
#include <string.h>

#include "op.h"
#include "qconfig_priv.h"

typedef enum { ROLE_NONE, ROLE_LAYER, ROLE_MOVE } node_role;

static node_role role_of(const ql_node *n)
{
    switch (n->op) {
    case QL_OP_CONV:
    case QL_OP_CONV_TRANSPOSE:
    case QL_OP_GEMM:
    case QL_OP_MATMUL:
    case QL_OP_ADD:
    case QL_OP_SUB:
    case QL_OP_MUL:
    case QL_OP_DIV:
    case QL_OP_PRELU:
    case QL_OP_LEAKYRELU:
    case QL_OP_SIGMOID:
    case QL_OP_HARDSIGMOID:
    case QL_OP_HARDSWISH:
    case QL_OP_TANH:
    case QL_OP_SOFTMAX:
    case QL_OP_AVERAGEPOOL:
    case QL_OP_GLOBALAVERAGEPOOL:
    case QL_OP_REDUCEMEAN:
    case QL_OP_CONCAT:
    case QL_OP_RELU:
    case QL_OP_CLIP:
    case QL_OP_BATCHNORM:
        return ROLE_LAYER;
    case QL_OP_RESIZE: {
        const char *mode = ql_attr_string(n, "mode", "nearest");
        return strcmp(mode, "nearest") == 0 ? ROLE_MOVE : ROLE_LAYER;
    }
    case QL_OP_MAXPOOL:
    case QL_OP_GLOBALMAXPOOL:
    case QL_OP_RESHAPE:
    case QL_OP_FLATTEN:
    case QL_OP_TRANSPOSE:
    case QL_OP_SQUEEZE:
    case QL_OP_UNSQUEEZE:
    case QL_OP_SLICE:
    case QL_OP_SPLIT:
    case QL_OP_GATHER:
    case QL_OP_PAD:
    case QL_OP_IDENTITY:
    case QL_OP_DROPOUT:
        return ROLE_MOVE;
    default:
        return ROLE_NONE;
    }
}

static bool is_float_const(const ql_graph *g, int v)
{
    return v >= 0 && g->values[v].constant && g->values[v].constant->dtype == QL_F32;
}

static bool quantizable_value(const ql_graph *g, int v)
{
    return v >= 0 && g->values[v].dtype == QL_F32 && !g->values[v].constant &&
           !g->values[v].is_output;
}

/* The Relu/Clip node that alone consumes value v, or -1. */
static int sole_activation(const ql_graph *g, int v)
{
    if (v < 0 || g->values[v].n_consumers != 1 || g->values[v].is_output)
        return -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] == v)
                return (j == 0 && (n->op == QL_OP_RELU || n->op == QL_OP_CLIP)) ? i : -1;
    }
    return -1;
}

static void set_weights(const ql_graph *g, const ql_node *n, ql_qlayer *L)
{
    L->weight_value = L->bias_value = -1;
    L->weight_axis = 0;
    if (n->n_in < 2 || !is_float_const(g, n->in[1]))
        return;
    const ql_tensor *w = g->values[n->in[1]].constant;
    switch (n->op) {
    case QL_OP_CONV:
    case QL_OP_CONV_TRANSPOSE:
        if (w->ndim < 3)
            return;
        L->weight_axis = n->op == QL_OP_CONV ? 0 : 1;
        break;
    case QL_OP_GEMM:
        if (w->ndim != 2)
            return;
        L->weight_axis = ql_attr_int(n, "transB", 0) ? 0 : 1;
        break;
    case QL_OP_MATMUL:
        if (w->ndim < 2)
            return;
        L->weight_axis = w->ndim - 1;
        break;
    default:
        return;
    }
    L->weight_value = n->in[1];
    int64_t channels = w->dims[L->weight_axis];
    if (n->op == QL_OP_CONV_TRANSPOSE)
        channels *= ql_attr_int(n, "group", 1);
    if (n->n_in >= 3 && is_float_const(g, n->in[2]) &&
        ql_tensor_numel(g->values[n->in[2]].constant) == channels &&
        (n->op != QL_OP_CONV_TRANSPOSE || ql_attr_int(n, "group", 1) == 1))
        L->bias_value = n->in[2];
}

ql_status ql_qnet_build(const ql_graph *g, ql_qnet **out, ql_error *err)
{
    ql_qnet *q = calloc(1, sizeof *q);
    size_t nn = (size_t)(g->n_nodes ? g->n_nodes : 1), nv = (size_t)(g->n_values ? g->n_values : 1);
    if (!q)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory placing quantizers");
    q->g = g;
    q->layers = calloc(nn, sizeof *q->layers);
    q->node_layer = malloc(nn * sizeof *q->node_layer);
    q->value_src = malloc(nv * sizeof *q->value_src);
    q->value_layer = malloc(nv * sizeof *q->value_layer);
    q->value_site = calloc(nv, sizeof *q->value_site);
    if (!q->layers || !q->node_layer || !q->value_src || !q->value_layer || !q->value_site) {
        ql_qnet_free(q);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory placing quantizers");
    }
    for (int i = 0; i < g->n_nodes; i++)
        q->node_layer[i] = -1;
    for (int v = 0; v < g->n_values; v++) {
        q->value_src[v] = q->value_layer[v] = -1;
        if (g->values[v].is_input && quantizable_value(g, v)) {
            q->value_src[v] = v;
            q->value_site[v] = true;
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        if (q->node_layer[i] >= 0)
            continue; /* an activation already folded into its producer */
        node_role r = role_of(n);
        if (r == ROLE_MOVE) {
            int src = n->n_in > 0 && n->in[0] >= 0 ? q->value_src[n->in[0]] : -1;
            for (int j = 0; j < n->n_out; j++)
                if (quantizable_value(g, n->out[j]))
                    q->value_src[n->out[j]] = src;
            continue;
        }
        /* arithmetic on shapes or indices (int64 Concat, Mul...) is no layer */
        if (r != ROLE_LAYER || n->n_out < 1 || n->out[0] < 0 || g->values[n->out[0]].dtype != QL_F32)
            continue;
        ql_qlayer *L = &q->layers[q->n_layers];
        L->name = n->name;
        L->node = i;
        L->act_node = -1;
        L->in_value = -1;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0 && !g->values[n->in[j]].constant) {
                L->in_value = n->in[j];
                break;
            }
        set_weights(g, n, L);
        L->macs = ql_node_macs(g, n);
        int v = n->out[0];
        if (n->op != QL_OP_RELU && n->op != QL_OP_CLIP && n->n_out == 1) {
            int a = sole_activation(g, v);
            if (a >= 0) {
                L->act_node = a;
                q->node_layer[a] = q->n_layers;
                v = g->nodes[a].out[0];
            }
        }
        L->out_value = v;
        q->node_layer[i] = q->n_layers;
        for (int j = 0; j < n->n_out; j++) {
            int o = j == 0 ? v : n->out[j];
            if (quantizable_value(g, o)) {
                q->value_src[o] = o;
                q->value_site[o] = true;
                q->value_layer[o] = q->n_layers;
            }
        }
        q->n_layers++;
    }
    *out = q;
    return QL_OK;
}

void ql_qnet_free(ql_qnet *q)
{
    if (!q)
        return;
    free(q->layers);
    free(q->node_layer);
    free(q->value_src);
    free(q->value_layer);
    free(q->value_site);
    free(q);
}

int ql_qnet_find_layer(const ql_qnet *q, const char *name)
{
    for (int i = 0; i < q->n_layers; i++)
        if (strcmp(q->layers[i].name, name) == 0)
            return i;
    return -1;
}

/* A tensor name a config may carry an encoding for. */
static bool config_tensor_ok(const ql_qnet *q, const char *name)
{
    int v = ql_graph_find_value(q->g, name);
    if (v < 0)
        return false;
    if (q->value_site[v])
        return true;
    for (int i = 0; i < q->n_layers; i++)
        if (q->layers[i].weight_value == v || q->layers[i].bias_value == v)
            return true;
    return false;
}

/* What c's settings ask of the encoding of every value (role[v]; known[v]
 * for the values an encoding may name). A weight read by several layers
 * takes the settings of the last one that quantizes it, as calibration
 * does. */
static void encoding_roles(const ql_qconfig *c, const ql_qnet *q, const int *bits,
                           ql_qcfg_role *role, bool *known)
{
    const ql_graph *g = q->g;
    for (int v = 0; v < g->n_values; v++)
        if (q->value_site[v]) {
            role[v] = (ql_qcfg_role){.kind = QL_QCFG_ACT, .ndim = g->values[v].ndim,
                                     .dims = g->values[v].dims, .bits = bits[v]};
            known[v] = true;
        }
    for (int i = 0; i < q->n_layers; i++) {
        const ql_qlayer *L = &q->layers[i];
        ql_qsettings s = ql_qconfig_layer_settings(c, L->name);
        bool quantized = s.precision != QL_PREC_FLOAT;
        int ids[2] = {L->weight_value, L->bias_value};
        for (int j = 0; j < 2; j++) {
            int v = ids[j];
            if (v < 0 || (known[v] && role[v].bits && !quantized))
                continue;
            const ql_tensor *t = g->values[v].constant;
            role[v] = (ql_qcfg_role){.kind = j ? QL_QCFG_BIAS : QL_QCFG_WEIGHT,
                                     .ndim = t->ndim, .dims = t->dims,
                                     .bits = quantized ? (j ? 32 : s.weight_bits) : 0,
                                     .axis = s.per_channel ? L->weight_axis : -1,
                                     .layer = L->name, .per_channel = s.per_channel};
            known[v] = true;
        }
    }
}

/* Every encoding of c fits its tensor and the settings; with any encodings
 * at all, every tensor the settings quantize has one. */
static ql_status check_encodings(const ql_qconfig *c, const ql_qnet *q, const char *source,
                                 ql_error *err)
{
    const ql_graph *g = q->g;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    int *bits = malloc(nv * sizeof *bits);
    ql_qcfg_role *role = calloc(nv, sizeof *role);
    bool *known = calloc(nv, sizeof *known);
    char path[700], where[64], buf[300];
    ql_status st = QL_OK;
    if (!bits || !role || !known) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory checking the config");
        goto cleanup;
    }
    ql_qnet_act_bits(q, c, bits);
    encoding_roles(c, q, bits, role, known);
    for (int i = 0; i < c->n_tensors; i++) {
        const ql_qtensor_cfg *t = &c->tensors[i];
        int v = ql_graph_find_value(g, t->name);
        const char *why = v >= 0 && known[v] ? ql_qcfg_check_role(t, &role[v], where,
                                                                   sizeof where, buf, sizeof buf)
                                             : NULL;
        if (why) {
            ql_qcfg_path_key(path, sizeof path, "tensors", t->name);
            st = ql_fail(err, QL_ERR_ARG, "%s: %s.%s: %s", source, path, where, why);
            goto cleanup;
        }
    }
    for (int v = 0; c->n_tensors && v < g->n_values; v++)
        if (known[v] && role[v].bits && !ql_qconfig_find_tensor(c, g->values[v].name)) {
            ql_qcfg_path_key(path, sizeof path, "tensors", g->values[v].name);
            st = ql_fail(err, QL_ERR_ARG,
                         "%s: %s: no encoding, but the settings quantize this tensor "
                         "(recalibrate)",
                         source, path);
            goto cleanup;
        }
cleanup:
    free(bits);
    free(role);
    free(known);
    return st;
}

ql_status ql_qconfig_check(const ql_qconfig *c, const ql_model *m, const ql_qnet *q,
                           const char *source, ql_error *err)
{
    if (c->fingerprint && c->fingerprint != m->fingerprint)
        return ql_fail(err, QL_ERR_ARG,
                       "%s: model.fingerprint: the config was made for another model "
                       "(%016llx, '%s'); %s is %016llx",
                       source, (unsigned long long)c->fingerprint,
                       c->model_file ? c->model_file : "?", m->path,
                       (unsigned long long)m->fingerprint);
    char path[700];
    for (int i = 0; i < c->n_layers; i++)
        if (ql_qnet_find_layer(q, c->layers[i].name) < 0) {
            ql_qcfg_path_key(path, sizeof path, "layers", c->layers[i].name);
            return ql_fail(err, QL_ERR_ARG, "%s: %s: %s has no layer of that name", source, path,
                           m->path);
        }
    for (int i = 0; i < c->n_tensors; i++)
        if (!config_tensor_ok(q, c->tensors[i].name)) {
            ql_qcfg_path_key(path, sizeof path, "tensors", c->tensors[i].name);
            return ql_fail(err, QL_ERR_ARG, "%s: %s: %s has no quantizable tensor of that name",
                           source, path, m->path);
        }
    return check_encodings(c, q, source, err);
}

ql_prec ql_qnet_layer_prec(const ql_qnet *q, const ql_qconfig *c, int i)
{
    return ql_qconfig_layer_settings(c, q->layers[i].name).precision;
}

void ql_qnet_act_bits(const ql_qnet *q, const ql_qconfig *c, int *bits)
{
    const ql_graph *g = q->g;
    int *lbits = malloc((size_t)(q->n_layers ? q->n_layers : 1) * sizeof *lbits);
    for (int v = 0; v < g->n_values; v++)
        bits[v] = 0;
    if (!lbits)
        return;
    for (int i = 0; i < q->n_layers; i++)
        lbits[i] = ql_prec_bits(ql_qnet_layer_prec(q, c, i));
    for (int v = 0; v < g->n_values; v++)
        if (q->value_site[v] && q->value_layer[v] >= 0)
            bits[v] = lbits[q->value_layer[v]];
    /* boundaries: float producers (and graph inputs) read by quantized layers */
    for (int i = 0; i < g->n_nodes; i++) {
        int l = q->node_layer[i];
        if (l < 0 || lbits[l] == 0 || q->layers[l].node != i)
            continue;
        const ql_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            int src = v >= 0 ? q->value_src[v] : -1;
            if (src < 0)
                continue;
            int pl = q->value_layer[src];
            if ((pl < 0 || lbits[pl] == 0) && bits[src] < lbits[l])
                bits[src] = lbits[l];
        }
    }
    free(lbits);
}
