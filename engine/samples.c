/* Whether a graph keeps the samples of a batch apart (graph.h).
 *
 * A value "carries the batch" when it is computed from a graph input; it
 * must then carry it along axis 0, one row a sample, with nothing else
 * mixed in, and every node reading such a value must compute each sample's
 * part of its output from that sample's part of its inputs alone. Then
 * running a batch a sample (or a few) at a time and joining the outputs
 * along axis 0 is the same computation, sample by sample, and a run of
 * samples [a, b) sees rows [a, b) of every value (which the sensitivity
 * analysis's cache relies on). The rules are an allow-list: an op not
 * known to keep samples apart, an axis attribute or constant that reaches
 * axis 0, or a shape that is not known, and the answer is no. */
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "op.h"

static bool is_op(const ql_node *n, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(n->op_type, *list))
            return true;
    return false;
}

/* Integers of a constant input, or of an attribute when the input is
 * absent; -1 when neither is known (absent, or not constant). */
static int ints_of(const ql_graph *g, const ql_node *n, int input, const char *attr,
                   int64_t *out, int max)
{
    if (input >= 0 && input < n->n_in && n->in[input] >= 0) {
        const ql_tensor *t = g->values[n->in[input]].constant;
        if (!t)
            return -1;
        int64_t cnt = ql_tensor_numel(t);
        if (cnt > max)
            return -1;
        for (int64_t k = 0; k < cnt; k++)
            out[k] = ql_tensor_get_i64(t, k);
        return (int)cnt;
    }
    int cnt = 0;
    const int64_t *a = attr ? ql_attr_ints(n, attr, &cnt) : NULL;
    if (!a || cnt > max)
        return -1;
    memcpy(out, a, (size_t)cnt * sizeof *out);
    return cnt;
}

/* True when none of the cnt axes (of a rank-r tensor) is axis 0. */
static bool axes_spare_0(const int64_t *axes, int cnt, int r)
{
    for (int k = 0; k < cnt; k++) {
        int a;
        if (!ql_norm_axis(axes[k], r, &a) || a == 0)
            return false;
    }
    return true;
}

static bool axis_attr_not_0(const ql_node *n, int64_t dflt, int r)
{
    int a;
    return ql_norm_axis(ql_attr_int(n, "axis", dflt), r, &a) && a != 0;
}

/* Node n, some input of which carries the batch (carry[v]): whether it
 * keeps samples apart. */
static bool node_keeps_apart(const ql_graph *g, const ql_node *n, const bool *carry)
{
    /* element by element, with broadcasting: the batch inputs must have the
     * output's rank (a lower rank would broadcast axis 0 over another
     * axis), the others no batch extent but 1 */
    static const char *const broadcast[] = {"Add", "Sub", "Mul", "Div", "PRelu", NULL};
    /* per sample, the first input the data, the others parameters */
    static const char *const per_sample[] = {
        "Relu",    "LeakyRelu", "Clip",          "Sigmoid", "HardSigmoid",       "HardSwish",
        "Tanh",    "Identity",  "Dropout",       "Conv",    "ConvTranspose",     "MaxPool",
        "AveragePool", "GlobalAveragePool", "BatchNormalization", NULL};
    const ql_value *out = n->n_out > 0 && n->out[0] >= 0 ? &g->values[n->out[0]] : NULL;
    int r = out ? out->ndim : -1;
    if (r < 1 || n->n_in < 1 || n->in[0] < 0)
        return false;
    if (is_op(n, broadcast)) {
        for (int k = 0; k < n->n_in; k++) {
            if (n->in[k] < 0)
                continue;
            const ql_value *v = &g->values[n->in[k]];
            /* a constant's own shape (a value's may not be filled in) */
            int vr = v->constant ? v->constant->ndim : v->ndim;
            int64_t d0 = v->constant ? v->constant->dims[0] : v->dims[0];
            if (carry[n->in[k]] ? vr != r : vr < 0 || (vr == r && d0 != 1))
                return false;
        }
        return true;
    }
    const ql_value *x = &g->values[n->in[0]];
    bool x_carries = n->in[0] >= 0 && carry[n->in[0]];
    int64_t v[QL_MAX_DIMS * 2];
    int cnt;
    if (!strcmp(n->op_type, "Gemm")) /* rows of A apart: not transposed, B and C constant-like */
        return x_carries && !ql_attr_int(n, "transA", 0) && !carry[n->in[1]] &&
               (n->n_in < 3 || n->in[2] < 0 || !carry[n->in[2]]);
    if (!strcmp(n->op_type, "MatMul")) {
        const ql_value *b = &g->values[n->in[1]];
        if (!carry[n->in[1]])
            return x_carries && x->ndim >= 2 && x->ndim == r;
        return x_carries && x->ndim >= 3 && b->ndim == x->ndim; /* batched, batch first */
    }
    /* the rest: the first input is the data and carries the batch, the
     * others are parameters (Concat: all are data) */
    for (int k = 1; k < n->n_in; k++)
        if (n->in[k] >= 0 && carry[n->in[k]] && strcmp(n->op_type, "Concat"))
            return false;
    if (!x_carries || x->ndim < 1)
        return false;
    if (!strcmp(n->op_type, "BatchNormalization") && ql_attr_int(n, "training_mode", 0))
        return false; /* statistics over the batch */
    if (is_op(n, per_sample))
        return x->ndim == r;
    if (!strcmp(n->op_type, "Softmax") || !strcmp(n->op_type, "LogSoftmax"))
        return axis_attr_not_0(n, g->opset >= 13 ? -1 : 1, x->ndim);
    if (!strcmp(n->op_type, "Concat")) {
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && !carry[n->in[k]])
                return false; /* a constant part would need a batch extent */
        return axis_attr_not_0(n, 0, r);
    }
    if (!strcmp(n->op_type, "Split"))
        return axis_attr_not_0(n, 0, x->ndim);
    if (!strcmp(n->op_type, "Flatten")) { /* 0: one row of all samples; 2 on: rows a sample */
        int64_t a = ql_attr_int(n, "axis", 1);
        return (a < 0 ? a + x->ndim : a) == 1;
    }
    if (!strcmp(n->op_type, "Gather"))
        return axis_attr_not_0(n, 0, x->ndim);
    if (!strcmp(n->op_type, "Transpose")) {
        cnt = ints_of(g, n, -1, "perm", v, QL_MAX_DIMS);
        return cnt == x->ndim && v[0] == 0;
    }
    if (!strcmp(n->op_type, "Squeeze")) /* no axes: every extent 1, the batch's too */
        return (cnt = ints_of(g, n, 1, "axes", v, QL_MAX_DIMS)) > 0 &&
               axes_spare_0(v, cnt, x->ndim);
    if (!strcmp(n->op_type, "Unsqueeze"))
        return (cnt = ints_of(g, n, 1, "axes", v, QL_MAX_DIMS)) > 0 && axes_spare_0(v, cnt, r);
    if (!strcmp(n->op_type, "ReduceMean")) /* no axes: all of them */
        return (cnt = ints_of(g, n, 1, "axes", v, QL_MAX_DIMS)) > 0 &&
               axes_spare_0(v, cnt, x->ndim);
    if (!strcmp(n->op_type, "Slice")) { /* no axes: from axis 0 on */
        if (g->opset < 10)
            return (cnt = ints_of(g, n, -1, "axes", v, QL_MAX_DIMS)) > 0 &&
                   axes_spare_0(v, cnt, x->ndim);
        return (cnt = ints_of(g, n, 3, NULL, v, QL_MAX_DIMS)) > 0 && axes_spare_0(v, cnt, x->ndim);
    }
    if (!strcmp(n->op_type, "Pad")) { /* begin and end pads of axis 0 */
        if (n->n_in > 3 && n->in[3] >= 0)
            return false; /* the axes input: not needed so far */
        cnt = ints_of(g, n, g->opset >= 11 ? 1 : -1, "pads", v, 2 * QL_MAX_DIMS);
        return cnt == 2 * x->ndim && v[0] == 0 && v[x->ndim] == 0;
    }
    if (!strcmp(n->op_type, "Resize")) { /* a scale of 1 on axis 0, no sizes */
        if (n->n_in > 3 && n->in[3] >= 0)
            return false;
        const ql_tensor *s = n->n_in > 2 && n->in[2] >= 0 ? g->values[n->in[2]].constant : NULL;
        return s && s->dtype == QL_F32 && ql_tensor_numel(s) == x->ndim &&
               ((const float *)s->data)[0] == 1.0f;
    }
    if (!strcmp(n->op_type, "Reshape")) {
        /* axis 0 copied, or inferred from the rest holding exactly one
         * sample's elements (else a sample would span several rows) */
        if (ql_attr_int(n, "allowzero", 0))
            return false;
        cnt = ints_of(g, n, 1, NULL, v, QL_MAX_DIMS);
        if (cnt < 1 || (v[0] != 0 && v[0] != -1))
            return false;
        if (v[0] == 0)
            return true;
        int64_t per = 1, rest = 1;
        bool known = true;
        for (int i = 1; i < x->ndim; i++) {
            known &= x->dims[i] > 0;
            per *= x->dims[i] > 0 ? x->dims[i] : 1;
        }
        for (int k = 1; k < cnt; k++) {
            int64_t e = v[k] == 0 && k < x->ndim ? x->dims[k] : v[k];
            known &= e > 0;
            rest *= e > 0 ? e : 1;
        }
        return known && per == rest;
    }
    return false;
}

bool ql_graph_samples_apart(const ql_graph *g)
{
    if (g->n_inputs < 1 || g->n_outputs < 1)
        return false;
    bool *carry = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *carry);
    if (!carry)
        return false;
    bool ok = true;
    for (int i = 0; i < g->n_inputs && ok; i++) {
        const ql_value *v = &g->values[g->inputs[i]];
        ok = v->ndim >= 1 && v->dims[0] < 0; /* a batch of any size */
        carry[g->inputs[i]] = true;
    }
    for (int i = 0; i < g->n_nodes && ok; i++) {
        const ql_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        bool any = false;
        for (int k = 0; k < n->n_in; k++)
            any |= n->in[k] >= 0 && carry[n->in[k]];
        if (!any)
            continue; /* constants only: the same for every sample */
        ok = node_keeps_apart(g, n, carry);
        for (int k = 0; k < n->n_out && ok; k++)
            if (n->out[k] >= 0)
                carry[n->out[k]] = true;
    }
    for (int j = 0; j < g->n_outputs && ok; j++)
        ok = carry[g->outputs[j]] && g->values[g->outputs[j]].ndim >= 1;
    free(carry);
    return ok;
}

int64_t ql_graph_max_sample_bytes(const ql_graph *g)
{
    int64_t big = 0;
    for (int v = 0; v < g->n_values; v++) {
        const ql_value *val = &g->values[v];
        if (val->constant || val->ndim < 1)
            continue;
        int64_t n = (int64_t)ql_dtype_info(val->dtype)->size;
        for (int i = 1; i < val->ndim; i++)
            n *= val->dims[i] > 0 ? val->dims[i] : 0;
        big = n > big ? n : big;
    }
    return big;
}
