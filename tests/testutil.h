/* Small helpers shared by the cmocka unit tests: deterministic random data
 * and tolerance checks. Header-only, static functions. */
#ifndef QL_TESTUTIL_H
#define QL_TESTUTIL_H

#include <math.h>
#include <stdint.h>

/* Deterministic LCG (numerical recipes constants); uniform in [lo, hi). */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint32_t tu_next(tu_rng *r)
{
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(r->s >> 33);
}

static inline float tu_uniform(tu_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)tu_next(r) / 2147483648.0f;
}

static inline void tu_fill(tu_rng *r, float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_uniform(r, lo, hi);
}

/* |a - b| <= atol + rtol * |b| */
static inline int tu_close(float a, float b, float rtol, float atol)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return fabsf(a - b) <= atol + rtol * fabsf(b);
}

/* Index of the first element outside tolerance, or -1. */
static inline int64_t tu_first_mismatch(const float *a, const float *b, int64_t n, float rtol,
                                        float atol)
{
    for (int64_t i = 0; i < n; i++)
        if (!tu_close(a[i], b[i], rtol, atol))
            return i;
    return -1;
}

#endif

/* ---------------------------------------------------------------------------
 * Running one op through the real pipeline (graph, inference, prepare,
 * executor): inputs marked constant become initializers (as weights are).
 * ------------------------------------------------------------------------- */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dataset.h"
#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/onnx.h"
#include "engine/op.h"

/* The shipped example's model and its first `limit` evaluation samples,
 * conformed to the model's input (from $QLENS_SRCDIR, else the build
 * tree's parent). False, with the reason on stderr, if anything fails. */
__attribute__((unused)) static bool tu_load_example(ql_model **m, ql_dataset **d, int64_t limit)
{
    char path[1024];
    const char *src = getenv("QLENS_SRCDIR");
    ql_error err = {{0}};
    *m = NULL;
    *d = NULL;
    snprintf(path, sizeof path, "%s/examples/fmnist/fmnist_resnet.onnx", src ? src : "..");
    bool ok = ql_model_load(path, m, &err) == QL_OK;
    snprintf(path, sizeof path, "%s/examples/fmnist/eval.npy", src ? src : "..");
    ok = ok && ql_dataset_load(path, limit, d, &err) == QL_OK;
    ok = ok && ql_dataset_conform(*d, &(*m)->graph->values[(*m)->graph->inputs[0]], &err) == QL_OK;
    if (!ok)
        fprintf(stderr, "example: %s\n", err.msg);
    return ok;
}

typedef struct tu_node {
    ql_graph *g;
    int node;
} tu_node;

/* Starts a one-node graph; `inputs[i]` NULL means an absent optional input. */
__attribute__((unused)) static tu_node tu_node_new(const char *op_type, int64_t opset, int n_in,
                                                   const ql_tensor *const *inputs,
                                                   const int *is_const, int n_out)
{
    tu_node t;
    t.g = ql_graph_new();
    t.g->opset = opset;
    int in[16], out[16], n_graph_in = 0;
    t.g->inputs = malloc(16 * sizeof(int));
    t.g->outputs = malloc(16 * sizeof(int));
    for (int i = 0; i < n_in; i++) {
        char name[16];
        if (!inputs[i]) {
            in[i] = -1;
            continue;
        }
        snprintf(name, sizeof name, "in%d", i);
        in[i] = ql_graph_value(t.g, name);
        ql_value *v = &t.g->values[in[i]];
        v->dtype = inputs[i]->dtype;
        v->ndim = inputs[i]->ndim;
        memcpy(v->dims, inputs[i]->dims, sizeof v->dims);
        if (is_const && is_const[i]) {
            v->constant = ql_tensor_clone(inputs[i]);
        } else {
            v->is_input = true;
            t.g->inputs[n_graph_in++] = in[i];
        }
    }
    t.g->n_inputs = n_graph_in;
    for (int j = 0; j < n_out; j++) {
        char name[16];
        snprintf(name, sizeof name, "out%d", j);
        out[j] = ql_graph_value(t.g, name);
        t.g->outputs[j] = out[j];
    }
    t.g->n_outputs = n_out;
    t.node = ql_graph_add_node(t.g, "node", op_type, "", n_in, in, n_out, out);
    return t;
}

__attribute__((unused)) static void tu_attr_int(tu_node *t, const char *name, int64_t v)
{
    ql_node_add_attr(t->g, t->node, name, QL_ATTR_INT)->i = v;
}

__attribute__((unused)) static void tu_attr_float(tu_node *t, const char *name, float v)
{
    ql_node_add_attr(t->g, t->node, name, QL_ATTR_FLOAT)->f = v;
}

__attribute__((unused)) static void tu_attr_string(tu_node *t, const char *name, const char *v)
{
    ql_node_add_attr(t->g, t->node, name, QL_ATTR_STRING)->s = strdup(v);
}

__attribute__((unused)) static void tu_attr_ints(tu_node *t, const char *name, int n,
                                                 const int64_t *v)
{
    ql_attr *a = ql_node_add_attr(t->g, t->node, name, QL_ATTR_INTS);
    a->n = n;
    a->ints = malloc((size_t)(n ? n : 1) * sizeof *a->ints);
    memcpy(a->ints, v, (size_t)n * sizeof *v);
}

/* Prepares and runs the node with `threads`; fills outs (caller frees).
 * Returns the status; err gets the message. */
__attribute__((unused)) static ql_status tu_node_run(tu_node *t, const ql_tensor *const *inputs,
                                                     int n_in, int threads, ql_tensor **outs,
                                                     ql_error *err)
{
    ql_graph *g = t->g;
    ql_status st;
    if ((st = ql_graph_toposort(g, err)) || (st = ql_graph_bind_ops(g, err)) ||
        (st = ql_graph_infer_shapes(g, err)) || (st = ql_graph_prepare(g, err)))
        return st;
    const ql_tensor *feeds[16];
    int k = 0;
    for (int i = 0; i < n_in; i++)
        if (inputs[i] && g->values[g->nodes[0].in[i]].is_input)
            feeds[k++] = inputs[i];
    ql_exec *x = NULL;
    ql_exec_opts o = {.n_threads = threads};
    if ((st = ql_exec_new(g, &o, &x, err)) != QL_OK)
        return st;
    st = ql_exec_run(x, feeds, outs, err);
    ql_exec_free(x);
    return st;
}

__attribute__((unused)) static void tu_node_free(tu_node *t) { ql_graph_free(t->g); }

/* A new f32 tensor filled with uniform values from rng. */
__attribute__((unused)) static ql_tensor *tu_rand(tu_rng *r, int ndim, const int64_t *dims,
                                                  float lo, float hi)
{
    ql_tensor *t = ql_tensor_new(QL_F32, ndim, dims);
    tu_fill(r, t->data, ql_tensor_numel(t), lo, hi);
    return t;
}
