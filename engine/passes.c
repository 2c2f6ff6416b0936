/* Graph simplification after loading: drop no-op nodes, fold BatchNorm into
 * the layer before it, evaluate constant sub-graphs once, and turn the shape
 * sub-graphs exporters emit around Reshape into constant shapes. */
#include "passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op.h"
#include "pool.h"

static const char *label(const ql_node *n) { return n->name[0] ? n->name : n->op_type; }

/* Replaces every read of value `from` by `to` in live nodes. */
static void replace_uses(ql_graph *g, int from, int to)
{
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] == from)
                n->in[j] = to;
    }
}

static int live_consumers(const ql_graph *g, int v)
{
    int c = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            c += n->in[j] == v;
    }
    return c;
}

/* ---------------------------------------------------------------------------
 * Identity / Dropout
 * ------------------------------------------------------------------------- */
int ql_pass_drop_identity(ql_graph *g, ql_error *err)
{
    (void)err;
    int changed = 0;
    ql_graph_link(g);
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        if (n->dead || (n->op != QL_OP_IDENTITY && n->op != QL_OP_DROPOUT) || n->n_in < 1 ||
            n->in[0] < 0 || n->n_out < 1 || n->out[0] < 0)
            continue;
        if (n->op == QL_OP_DROPOUT) {
            /* only inference-mode dropout with its mask unused is a no-op */
            if (n->n_out > 1 && n->out[1] >= 0 &&
                (live_consumers(g, n->out[1]) || g->values[n->out[1]].is_output))
                continue;
            if (n->n_in > 2 && n->in[2] >= 0) {
                const ql_tensor *tm = g->values[n->in[2]].constant;
                if (!tm || ql_tensor_numel(tm) != 1 || ql_tensor_get_i64(tm, 0) != 0)
                    continue;
            }
        }
        int x = n->in[0], y = n->out[0];
        if (!g->values[y].is_output) {
            n->dead = true;
            replace_uses(g, y, x);
            changed++;
            continue;
        }
        /* y is a graph output: let x's producer write y instead */
        const ql_value *xv = &g->values[x];
        if (xv->is_input || xv->constant || xv->is_output || xv->producer < 0)
            continue;
        ql_node *p = &g->nodes[xv->producer];
        for (int j = 0; j < p->n_out; j++)
            if (p->out[j] == x)
                p->out[j] = y;
        n->dead = true;
        n->out[0] = -1; /* so that relinking sees p, not this node, as y's producer */
        replace_uses(g, x, y);
        changed++;
        ql_graph_link(g);
    }
    return changed;
}

/* ---------------------------------------------------------------------------
 * BatchNormalization folding
 * ------------------------------------------------------------------------- */
static const ql_tensor *const_f32(const ql_graph *g, const ql_node *n, int j)
{
    if (j >= n->n_in || n->in[j] < 0)
        return NULL;
    const ql_tensor *t = g->values[n->in[j]].constant;
    return t && t->dtype == QL_F32 ? t : NULL;
}

/* Adds a new constant value with a unique name derived from `base`. */
static int add_constant(ql_graph *g, const char *base, ql_tensor *t)
{
    char name[512];
    for (int k = 0;; k++) {
        snprintf(name, sizeof name, k ? "%s_%d" : "%s", base, k);
        if (ql_graph_find_value(g, name) < 0)
            break;
    }
    int v = ql_graph_value(g, name);
    if (v < 0)
        return -1;
    g->values[v].constant = t;
    g->values[v].dtype = t->dtype;
    g->values[v].ndim = t->ndim;
    memcpy(g->values[v].dims, t->dims, sizeof t->dims);
    return v;
}

/* A bias that broadcasts along the last axis only (one value per output
 * channel, or one for all): [C], [1], [], [1,C], [1,1]. A Gemm C of shape
 * [M,C] or [C,1] varies along rows and cannot be folded per channel. */
static bool bias_per_channel(const ql_tensor *b, int64_t C)
{
    int64_t last = b->ndim ? b->dims[b->ndim - 1] : 1;
    for (int k = 0; k + 1 < b->ndim; k++)
        if (b->dims[k] != 1)
            return false;
    return last == C || last == 1;
}

static int fold_one_bn(ql_graph *g, int bi, ql_error *err)
{
    ql_node *bn = &g->nodes[bi];
    /* training mode updates statistics; spatial=0 (opset < 9) has per-element
     * parameters: neither is a per-channel affine map */
    if (bn->n_in < 5 || bn->in[0] < 0 || ql_attr_int(bn, "training_mode", 0) ||
        !ql_attr_int(bn, "spatial", 1))
        return 0;
    for (int j = 1; j < bn->n_out; j++)
        if (bn->out[j] >= 0 && (live_consumers(g, bn->out[j]) || g->values[bn->out[j]].is_output))
            return 0;
    const ql_tensor *sc = const_f32(g, bn, 1), *bb = const_f32(g, bn, 2), *mu = const_f32(g, bn, 3),
                    *var = const_f32(g, bn, 4);
    int x = bn->in[0];
    const ql_value *xv = &g->values[x];
    if (!sc || !bb || !mu || !var || xv->producer < 0 || xv->is_output || live_consumers(g, x) != 1)
        return 0;
    int ci_node = xv->producer; /* by index: adding constants below moves g->values */
    ql_node *c = &g->nodes[ci_node];
    if (c->dead || (c->op != QL_OP_CONV && c->op != QL_OP_CONV_TRANSPOSE && c->op != QL_OP_GEMM) ||
        c->out[0] != x)
        return 0;
    const ql_tensor *w = const_f32(g, c, 1);
    const ql_tensor *b = c->n_in > 2 ? const_f32(g, c, 2) : NULL;
    if (!w || w->ndim < 2 || ql_tensor_numel(w) == 0 || (c->n_in > 2 && c->in[2] >= 0 && !b))
        return 0;
    int64_t C = ql_tensor_numel(sc);
    if (ql_tensor_numel(bb) != C || ql_tensor_numel(mu) != C || ql_tensor_numel(var) != C)
        return 0;

    float eps = ql_attr_float(bn, "epsilon", 1e-5f);
    int64_t group = ql_attr_int(c, "group", 1);
    int transB = (int)ql_attr_int(c, "transB", 0);
    float beta = ql_attr_float(c, "beta", 1.0f);
    int64_t cout;
    if (c->op == QL_OP_CONV) {
        cout = w->dims[0];
    } else if (c->op == QL_OP_CONV_TRANSPOSE) {
        if (group < 1 || w->dims[0] % group) /* malformed: left for prepare to report */
            return 0;
        cout = w->dims[1] * group;
    } else {
        if (w->ndim != 2)
            return 0;
        cout = transB ? w->dims[0] : w->dims[1];
    }
    if (cout != C || (b && !bias_per_channel(b, C)))
        return 0;

    ql_tensor *nw = ql_tensor_clone(w);
    int64_t bd[1] = {C};
    ql_tensor *nb = ql_tensor_new(QL_F32, 1, bd);
    float *s = malloc((size_t)C * sizeof *s);
    if (!nw || !nb || !s) {
        ql_tensor_free(nw);
        ql_tensor_free(nb);
        free(s);
        ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(bn));
        return -1;
    }
    const float *scv = sc->data, *bbv = bb->data, *muv = mu->data, *varv = var->data;
    for (int64_t k = 0; k < C; k++)
        s[k] = scv[k] / sqrtf(varv[k] + eps);
    float *W = nw->data, *B = nb->data;
    int64_t per = ql_tensor_numel(w) / w->dims[0];
    if (c->op == QL_OP_CONV) {
        for (int64_t o = 0; o < C; o++)
            for (int64_t k = 0; k < per; k++)
                W[o * per + k] *= s[o];
    } else if (c->op == QL_OP_CONV_TRANSPOSE) {
        int64_t cin = w->dims[0], cog = w->dims[1], ksz = per / cog;
        for (int64_t ci = 0; ci < cin; ci++) {
            int64_t gi = ci / (cin / group);
            for (int64_t j = 0; j < cog; j++)
                for (int64_t k = 0; k < ksz; k++)
                    W[(ci * cog + j) * ksz + k] *= s[gi * cog + j];
        }
    } else {
        int64_t rows = w->dims[0], cols = w->dims[1];
        for (int64_t r = 0; r < rows; r++)
            for (int64_t q = 0; q < cols; q++)
                W[r * cols + q] *= s[transB ? r : q];
    }
    /* Z = s*(Y - mean) + b_bn; for Gemm Y = alpha*A*B' + beta*C, so the new
     * bias is s*(beta*C - mean) + b_bn with beta set to 1 */
    float cscale = c->op == QL_OP_GEMM ? beta : 1.0f;
    for (int64_t o = 0; o < C; o++) {
        float bias = b ? ((const float *)b->data)[ql_tensor_numel(b) == 1 ? 0 : o] : 0.0f;
        B[o] = s[o] * (cscale * bias - muv[o]) + bbv[o];
    }
    free(s);
    char base[400];
    snprintf(base, sizeof base, "%s_bnfold_w", label(c));
    int wv = add_constant(g, base, nw);
    snprintf(base, sizeof base, "%s_bnfold_b", label(c));
    int bv = add_constant(g, base, nb);
    c = &g->nodes[ci_node];
    bn = &g->nodes[bi];
    if (wv < 0 || bv < 0) {
        ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(bn));
        return -1;
    }
    if (c->op == QL_OP_GEMM)
        for (int k = 0; k < c->n_attr; k++)
            if (!strcmp(c->attr[k].name, "beta"))
                c->attr[k].f = 1.0f;
    c->in[1] = wv;
    if (c->n_in > 2) {
        c->in[2] = bv;
    } else {
        int *ni = realloc(c->in, 3 * sizeof *ni);
        if (!ni) {
            ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(bn));
            return -1;
        }
        ni[2] = bv;
        c->in = ni;
        c->n_in = 3;
    }
    c->out[0] = bn->out[0];
    bn->out[0] = -1; /* c is the producer now */
    bn->dead = true;
    return 1;
}

int ql_pass_fold_batchnorm(ql_graph *g, ql_error *err)
{
    int changed = 0;
    ql_graph_link(g);
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].dead || g->nodes[i].op != QL_OP_BATCHNORM)
            continue;
        int r = fold_one_bn(g, i, err);
        if (r < 0)
            return -1;
        if (r) {
            changed++;
            ql_graph_link(g);
        }
    }
    return changed;
}

/* ---------------------------------------------------------------------------
 * constant folding
 * ------------------------------------------------------------------------- */
/* Runs node n on constant inputs and turns its outputs into constants. */
static int fold_node(ql_graph *g, int i, ql_error *err)
{
    ql_node *n = &g->nodes[i];
    const ql_op_def *def = ql_op_get(n->op);
    const ql_tensor *in[16];
    ql_tensor out[16];
    ql_tensor *outp[16];
    ql_exec_ctx ctx;
    int ok = 1;
    if (n->n_in > 16 || n->n_out > 16)
        return 0;
    for (int j = 0; j < n->n_in; j++)
        in[j] = n->in[j] >= 0 ? g->values[n->in[j]].constant : NULL;
    memset(out, 0, sizeof out);
    for (int j = 0; j < n->n_out; j++) {
        out[j].ndim = -1;
        outp[j] = &out[j];
    }
    ql_ctx_init(&ctx, NULL);
    ql_error local;
    ql_status st = def->prepare ? def->prepare(g, n, &local) : QL_OK;
    n = &g->nodes[i];
    if (st == QL_OK)
        st = def->infer(n, in, outp, &local);
    for (int j = 0; st == QL_OK && j < n->n_out; j++)
        if (outp[j]->ndim < 0 || ql_tensor_alloc(outp[j]) != QL_OK)
            st = QL_ERR_SHAPE;
    if (st == QL_OK)
        st = def->run_f32(n, in, outp, &ctx, &local);
    ql_ctx_destroy(&ctx);
    if (n->state && def->release)
        def->release(n);
    n->state = NULL;
    if (st != QL_OK) {
        /* leave the node to fail, with its own message, when it runs */
        ok = 0;
    }
    for (int j = 0; j < n->n_out; j++) {
        if (!ok || n->out[j] < 0) {
            ql_tensor_release(&out[j]);
            continue;
        }
        ql_tensor *t = ql_tensor_wrap(out[j].dtype, out[j].ndim, out[j].dims, out[j].data);
        if (!t) {
            ql_tensor_release(&out[j]);
            ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(n));
            return -1;
        }
        t->owns = true;
        ql_value *v = &g->values[n->out[j]];
        v->constant = t;
        v->dtype = t->dtype;
        v->ndim = t->ndim;
        memcpy(v->dims, t->dims, sizeof t->dims);
    }
    if (ok)
        n->dead = true;
    return ok;
}

/* A symbolic element of a 1-D int64 shape tensor: a number, or "dimension
 * `axis` of value `src`". */
typedef struct sym_elem {
    int is_dim;
    int64_t val;
    int src, axis;
} sym_elem;

#define SYM_MAX 16

static int sym_eval(const ql_graph *g, int v, sym_elem *out, int depth);

/* One constant element of input j of n (a Slice parameter), or dflt when
 * the input is absent; false when it is not a one-element constant. */
static bool const_scalar(const ql_graph *g, const ql_node *n, int j, int64_t dflt, int64_t *v)
{
    if (j >= n->n_in || n->in[j] < 0) {
        *v = dflt;
        return true;
    }
    const ql_tensor *t = g->values[n->in[j]].constant;
    if (!t || t->dtype == QL_F32 || ql_tensor_numel(t) != 1)
        return false;
    *v = ql_tensor_get_i64(t, 0);
    return true;
}

/* Slice of a symbolic 1-D vector (x.shape[a:b] in PyTorch's exports):
 * one axis, constant starts, ends and steps, clamped as ONNX does. */
static int sym_slice(const ql_graph *g, const ql_node *n, sym_elem *out, int depth)
{
    sym_elem a[SYM_MAX];
    int na = sym_eval(g, n->in[0], a, depth + 1);
    if (na < 0)
        return -1;
    int64_t start, end, axis, step;
    if (g->opset < 10) { /* attributes */
        int ns, ne, nx;
        const int64_t *st = ql_attr_ints(n, "starts", &ns), *en = ql_attr_ints(n, "ends", &ne);
        const int64_t *ax = ql_attr_ints(n, "axes", &nx);
        if (!st || !en || ns != 1 || ne != 1 || (ax && (nx != 1 || (ax[0] != 0 && ax[0] != -1))))
            return -1;
        start = st[0], end = en[0], step = 1;
    } else if (!const_scalar(g, n, 1, 0, &start) || !const_scalar(g, n, 2, 0, &end) ||
               !const_scalar(g, n, 3, 0, &axis) || !const_scalar(g, n, 4, 1, &step) ||
               (axis != 0 && axis != -1) || step == 0 || n->n_in < 3) {
        return -1;
    }
    /* clamp as ONNX: negative counts from the end; start to [0, n] (or
     * [0, n-1] stepping back), end likewise ([-1, n-1] stepping back) */
    if (start < 0)
        start += na;
    if (end < 0)
        end += na;
    int cnt = 0;
    if (step > 0) {
        start = start < 0 ? 0 : start > na ? na : start;
        end = end < 0 ? 0 : end > na ? na : end;
        for (int64_t k = start; k < end; k += step)
            out[cnt++] = a[k];
    } else {
        start = start < 0 ? -1 : start > na - 1 ? na - 1 : start;
        end = end < -1 ? -1 : end > na - 1 ? na - 1 : end;
        for (int64_t k = start; k > end; k += step)
            out[cnt++] = a[k];
    }
    return cnt;
}

/* Evaluates value v as a short 1-D (or scalar) int64 vector of symbols.
 * Returns the element count, or -1 when it cannot tell. */
static int sym_eval(const ql_graph *g, int v, sym_elem *out, int depth)
{
    if (v < 0 || depth > 16)
        return -1;
    const ql_value *val = &g->values[v];
    if (val->constant) {
        const ql_tensor *t = val->constant;
        if ((t->dtype != QL_I64 && t->dtype != QL_I32) || t->ndim > 1 || ql_tensor_numel(t) > SYM_MAX)
            return -1;
        int n = (int)ql_tensor_numel(t);
        for (int k = 0; k < n; k++)
            out[k] = (sym_elem){0, ql_tensor_get_i64(t, k), -1, -1};
        return n;
    }
    if (val->producer < 0)
        return -1;
    const ql_node *n = &g->nodes[val->producer];
    sym_elem a[SYM_MAX], b[SYM_MAX];
    switch (n->op) {
    case QL_OP_SHAPE: {
        const ql_value *x = &g->values[n->in[0]];
        if (x->ndim < 0 || x->ndim > SYM_MAX)
            return -1;
        int64_t start = ql_attr_int(n, "start", 0), end = ql_attr_int(n, "end", x->ndim);
        if (start < 0)
            start += x->ndim;
        if (end < 0)
            end += x->ndim;
        if (start < 0)
            start = 0;
        if (end > x->ndim)
            end = x->ndim;
        int cnt = 0;
        for (int64_t k = start; k < end; k++)
            out[cnt++] = x->dims[k] >= 0 ? (sym_elem){0, x->dims[k], -1, -1}
                                          : (sym_elem){1, 0, n->in[0], (int)k};
        return cnt;
    }
    case QL_OP_GATHER: {
        int64_t gaxis = ql_attr_int(n, "axis", 0);
        if (gaxis != 0 && gaxis != -1) /* shape vectors are 1-D */
            return -1;
        int na = sym_eval(g, n->in[0], a, depth + 1);
        const ql_tensor *idx = n->in[1] >= 0 ? g->values[n->in[1]].constant : NULL;
        if (na < 0 || !idx || idx->ndim > 1)
            return -1;
        int ni = (int)ql_tensor_numel(idx);
        for (int k = 0; k < ni; k++) {
            int64_t q = ql_tensor_get_i64(idx, k);
            if (q < 0)
                q += na;
            if (q < 0 || q >= na)
                return -1;
            out[k] = a[q];
        }
        return ni;
    }
    case QL_OP_UNSQUEEZE:
    case QL_OP_SQUEEZE:
        return sym_eval(g, n->in[0], out, depth + 1); /* 0-d <-> 1-d keeps the elements */
    case QL_OP_CAST: { /* between integer types: shape values are small */
        ql_dtype to = g->values[n->out[0]].dtype;
        if (to != QL_I64 && to != QL_I32)
            return -1;
        return sym_eval(g, n->in[0], out, depth + 1);
    }
    case QL_OP_SLICE:
        return sym_slice(g, n, out, depth);
    case QL_OP_CONCAT: {
        /* concatenating flattened inputs is only right for 1-D results */
        if (g->values[n->out[0]].ndim != 1)
            return -1;
        int cnt = 0;
        for (int j = 0; j < n->n_in; j++) {
            int nb = sym_eval(g, n->in[j], b, depth + 1);
            if (nb < 0 || cnt + nb > SYM_MAX)
                return -1;
            memcpy(out + cnt, b, (size_t)nb * sizeof *b);
            cnt += nb;
        }
        return cnt;
    }
    default:
        return -1;
    }
}

/* Follows value v back through ops whose output keeps dimension `axis` of
 * their first input (elementwise unary ops; batch-preserving layers for
 * axis 0) and returns the value where that extent originates. Two values
 * with the same origin provably have the same extent there. */
static int dim_origin(const ql_graph *g, int v, int axis)
{
    for (int depth = 0; depth < 256; depth++) {
        const ql_value *val = &g->values[v];
        if (val->producer < 0)
            return v;
        const ql_node *n = &g->nodes[val->producer];
        if (n->dead || n->n_in < 1 || n->in[0] < 0 || n->out[0] != v)
            return v;
        bool keeps;
        switch (n->op) {
        case QL_OP_RELU: case QL_OP_LEAKYRELU: case QL_OP_PRELU: case QL_OP_CLIP:
        case QL_OP_SIGMOID: case QL_OP_HARDSIGMOID: case QL_OP_HARDSWISH: case QL_OP_TANH:
        case QL_OP_SOFTMAX: case QL_OP_IDENTITY: case QL_OP_DROPOUT: case QL_OP_BATCHNORM:
        case QL_OP_CAST:
            keeps = true;
            break;
        case QL_OP_CONV: case QL_OP_CONV_TRANSPOSE: case QL_OP_MAXPOOL: case QL_OP_AVERAGEPOOL:
        case QL_OP_GLOBALAVERAGEPOOL: case QL_OP_GLOBALMAXPOOL:
            keeps = axis == 0; /* N in, N out */
            break;
        case QL_OP_FLATTEN:
            keeps = axis == 0 && ql_attr_int(n, "axis", 1) == 1;
            break;
        default:
            keeps = false;
        }
        if (!keeps)
            return v;
        v = n->in[0];
    }
    return v;
}

/* Reshape whose shape comes from a shape sub-graph: a constant shape when
 * every element is a number or the same dimension of the reshaped tensor
 * (ONNX Reshape's 0 copies it). */
static int fold_reshape_shape(ql_graph *g, int i, ql_error *err)
{
    ql_node *n = &g->nodes[i];
    if (n->n_in < 2 || n->in[1] < 0 || g->values[n->in[1]].constant ||
        ql_attr_int(n, "allowzero", 0))
        return 0;
    sym_elem e[SYM_MAX];
    int cnt = sym_eval(g, n->in[1], e, 0);
    if (cnt < 0)
        return 0;
    int64_t dims[1] = {cnt};
    ql_tensor *t = ql_tensor_new(QL_I64, 1, dims);
    if (!t) {
        ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(n));
        return -1;
    }
    int64_t *d = t->data;
    for (int k = 0; k < cnt; k++) {
        if (!e[k].is_dim) {
            d[k] = e[k].val;
            continue;
        }
        if (e[k].axis != k || dim_origin(g, e[k].src, k) != dim_origin(g, n->in[0], k)) {
            ql_tensor_free(t);
            return 0;
        }
        d[k] = 0; /* copy this dimension from the input */
    }
    char base[400];
    snprintf(base, sizeof base, "%s_shape", label(n));
    int v = add_constant(g, base, t);
    if (v < 0) {
        ql_tensor_free(t);
        ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(n));
        return -1;
    }
    g->nodes[i].in[1] = v;
    return 1;
}

/* A shape-arithmetic node (Shape, Gather, Unsqueeze, Squeeze, Concat, Slice,
 * Cast) whose result holds only known extents becomes a constant, even when
 * other extents of the tensor it measures are dynamic. */
static int fold_static_shape(ql_graph *g, int i, ql_error *err)
{
    const ql_node *n = &g->nodes[i];
    int o = n->n_out == 1 ? n->out[0] : -1;
    if (o < 0 || g->values[o].is_output || g->values[o].dtype != QL_I64 || g->values[o].ndim < 0 ||
        g->values[o].ndim > 1)
        return 0;
    sym_elem e[SYM_MAX];
    int cnt = sym_eval(g, o, e, 0);
    int64_t want = g->values[o].ndim ? g->values[o].dims[0] : 1;
    if (cnt < 0 || cnt != want)
        return 0;
    for (int k = 0; k < cnt; k++)
        if (e[k].is_dim)
            return 0;
    int64_t dims[1] = {cnt};
    ql_tensor *t = ql_tensor_new(QL_I64, g->values[o].ndim, dims);
    if (!t) {
        ql_fail(err, QL_ERR_NOMEM, "out of memory folding '%s'", label(n));
        return -1;
    }
    for (int k = 0; k < cnt; k++)
        ((int64_t *)t->data)[k] = e[k].val;
    ql_value *v = &g->values[o];
    v->constant = t;
    v->ndim = t->ndim;
    v->dims[0] = cnt;
    g->nodes[i].dead = true;
    return 1;
}

/* Removes nodes none of whose outputs is read or is a graph output. Nodes are
 * in topological order, so one backward sweep removes whole dead chains. */
static int drop_dead(ql_graph *g)
{
    int changed = 0;
    int *uses = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *uses);
    if (!uses) /* an optimisation only */
        return 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; !g->nodes[i].dead && j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] >= 0)
                uses[g->nodes[i].in[j]]++;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        ql_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        bool used = false;
        for (int j = 0; j < n->n_out && !used; j++)
            used = n->out[j] >= 0 && (g->values[n->out[j]].is_output || uses[n->out[j]] > 0);
        if (used)
            continue;
        n->dead = true;
        changed++;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0)
                uses[n->in[j]]--;
    }
    free(uses);
    return changed;
}

int ql_pass_fold_constants(ql_graph *g, ql_error *err)
{
    int changed = 0;
    ql_graph_link(g);
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        if (n->dead || n->op < 0)
            continue;
        int all_const = 1;
        for (int j = 0; j < n->n_in && all_const; j++)
            if (n->in[j] >= 0 && !g->values[n->in[j]].constant)
                all_const = 0;
        int r = 0;
        if (all_const) {
            int graph_out = 0;
            for (int j = 0; j < n->n_out; j++)
                graph_out |= n->out[j] >= 0 && g->values[n->out[j]].is_output;
            if (!graph_out) /* outputs stay computed by a node */
                r = fold_node(g, i, err);
        } else if (n->op == QL_OP_SHAPE || n->op == QL_OP_GATHER || n->op == QL_OP_UNSQUEEZE ||
                   n->op == QL_OP_SQUEEZE || n->op == QL_OP_CONCAT || n->op == QL_OP_SLICE ||
                   n->op == QL_OP_CAST) {
            r = fold_static_shape(g, i, err);
        } else if (n->op == QL_OP_RESHAPE) {
            r = fold_reshape_shape(g, i, err);
        }
        if (r < 0)
            return -1;
        changed += r;
    }
    changed += drop_dead(g);
    return changed;
}

ql_status ql_passes_run(ql_graph *g, ql_error *err)
{
    for (int round = 0; round < 32; round++) {
        int a = ql_pass_drop_identity(g, err);
        int b = a < 0 ? -1 : ql_pass_fold_batchnorm(g, err);
        int c = b < 0 ? -1 : ql_pass_fold_constants(g, err);
        if (a < 0 || b < 0 || c < 0)
            return QL_ERR_NOMEM;
        ql_graph_compact(g);
        if (a + b + c == 0)
            break;
        ql_status st = ql_graph_infer_shapes(g, err);
        if (st != QL_OK)
            return st;
    }
    return QL_OK;
}
