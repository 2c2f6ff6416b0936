/* Unit tests: which graphs keep the samples of a batch apart
 * (ql_graph_samples_apart, engine/samples.c), and the executor running
 * such a batch a sample at a time (ql_exec_opts.split_samples): the same
 * bits for any thread count, the same bits as each sample run alone, the
 * outputs joined along axis 0, a batch of one, a cancelled run, and a
 * graph with several rows a sample left whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dataset.h"
#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/onnx.h"
#include "tests/testutil.h"

/* ---- one op on an input x --------------------------------------------------- */

static ql_graph *g_new(int ndim, const int64_t *dims)
{
    ql_graph *g = ql_graph_new();
    g->opset = 13;
    int x = ql_graph_value(g, "x");
    g->values[x].is_input = true;
    g->values[x].dtype = QL_F32;
    g->values[x].ndim = ndim;
    memcpy(g->values[x].dims, dims, (size_t)ndim * sizeof *dims);
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    return g;
}

static int g_const_i64(ql_graph *g, const char *name, int n, const int64_t *v)
{
    int c = ql_graph_value(g, name);
    int64_t d[1] = {n};
    ql_tensor *t = ql_tensor_new(QL_I64, 1, d);
    memcpy(t->data, v, (size_t)n * sizeof *v);
    g->values[c].constant = t;
    return c;
}

static int g_const_f32(ql_graph *g, const char *name, int ndim, const int64_t *dims)
{
    int c = ql_graph_value(g, name);
    ql_tensor *t = ql_tensor_new(QL_F32, ndim, dims);
    float *d = t->data;
    for (int64_t i = 0; i < ql_tensor_numel(t); i++)
        d[i] = (float)((i * 7 + 3) % 11) / 11.0f - 0.4f;
    g->values[c].constant = t;
    return c;
}

/* Adds node op reading ins, writing a new value that becomes the output. */
static int g_node(ql_graph *g, const char *op, int n_in, const int *ins)
{
    int y = ql_graph_value(g, "y");
    int node = ql_graph_add_node(g, op, op, "", n_in, ins, 1, &y);
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    return node;
}

static void g_ints(ql_graph *g, int node, const char *name, int n, const int64_t *v)
{
    ql_attr *a = ql_node_add_attr(g, node, name, QL_ATTR_INTS);
    a->n = n;
    a->ints = malloc((size_t)n * sizeof *v);
    memcpy(a->ints, v, (size_t)n * sizeof *v);
}

static void g_int(ql_graph *g, int node, const char *name, int64_t v)
{
    ql_node_add_attr(g, node, name, QL_ATTR_INT)->i = v;
}

/* Finishes the graph and frees it; returns ql_graph_samples_apart. */
static bool apart(ql_graph *g)
{
    ql_error err = {{0}};
    if (ql_graph_toposort(g, &err) || ql_graph_bind_ops(g, &err) ||
        ql_graph_infer_shapes(g, &err) || ql_graph_prepare(g, &err))
        fail_msg("graph setup: %s", err.msg);
    bool r = ql_graph_samples_apart(g);
    ql_graph_free(g);
    return r;
}

static const int64_t X4[4] = {-1, 4, 3, 3}, X2[2] = {-1, 4};

/* an op with one int attribute (or none: name NULL) on x */
static bool apart1(const char *op, int ndim, const int64_t *dims, const char *name, int64_t v)
{
    ql_graph *g = g_new(ndim, dims);
    int x = g->inputs[0];
    int node = g_node(g, op, 1, &x);
    if (name)
        g_int(g, node, name, v);
    return apart(g);
}

/* an op with one ints attribute on x */
static bool apart_ints(const char *op, const char *name, int n, const int64_t *v)
{
    ql_graph *g = g_new(4, X4);
    int x = g->inputs[0];
    g_ints(g, g_node(g, op, 1, &x), name, n, v);
    return apart(g);
}

/* x and a second input c (a constant [cd], or x itself) */
static bool apart2(const char *op, int ndim, const int64_t *dims, int cn, const int64_t *cd,
                   bool i64, const int64_t *iv)
{
    ql_graph *g = g_new(ndim, dims);
    int x = g->inputs[0];
    int c = cn < 0 ? x : i64 ? g_const_i64(g, "c", cn, iv) : g_const_f32(g, "c", cn, cd);
    int in[2] = {x, c};
    g_node(g, op, 2, in);
    return apart(g);
}

static void test_apart_rules(void **state)
{
    (void)state;
    /* per sample, or per position */
    assert_true(apart1("Relu", 4, X4, NULL, 0));
    assert_true(apart1("GlobalAveragePool", 4, X4, NULL, 0));
    int64_t fixed[4] = {2, 4, 3, 3};
    assert_false(apart1("Relu", 4, fixed, NULL, 0)); /* a fixed batch of 2 */
    int64_t c4[1] = {4}, c14[2] = {1, 4}, c24[2] = {2, 4};
    assert_true(apart2("Add", 2, X2, 1, c4, false, NULL));
    assert_true(apart2("Mul", 2, X2, 2, c14, false, NULL));
    assert_false(apart2("Add", 2, X2, 2, c24, false, NULL)); /* broadcast along the batch */
    assert_true(apart2("Add", 2, X2, -1, NULL, false, NULL));
    /* rows of A apart; B from the batch mixes samples */
    int64_t w45[2] = {4, 5};
    assert_true(apart2("Gemm", 2, X2, 2, w45, false, NULL));
    assert_true(apart2("MatMul", 2, X2, 2, w45, false, NULL));
    assert_false(apart1("Softmax", 2, X2, "axis", 0));
    assert_true(apart1("Softmax", 2, X2, "axis", 1));
    assert_true(apart1("Softmax", 2, X2, NULL, 0)); /* opset 13: the last axis */
    assert_false(apart1("Flatten", 4, X4, "axis", 0));
    assert_true(apart1("Flatten", 4, X4, "axis", 1));
    assert_true(apart1("Flatten", 4, X4, "axis", -3));
    assert_false(apart1("Flatten", 4, X4, "axis", 2)); /* several rows a sample */
    assert_false(apart1("Shape", 4, X4, NULL, 0));
    /* axes */
    int64_t p1[4] = {1, 0, 2, 3}, p2[4] = {0, 2, 3, 1}, a0[1] = {0}, a23[2] = {2, 3};
    assert_false(apart_ints("Transpose", "perm", 4, p1));
    assert_true(apart_ints("Transpose", "perm", 4, p2));
    assert_false(apart_ints("ReduceMean", "axes", 1, a0));
    assert_true(apart_ints("ReduceMean", "axes", 2, a23));
    assert_false(apart1("ReduceMean", 4, X4, NULL, 0)); /* all axes */
    ql_graph *g = g_new(4, X4);
    int x = g->inputs[0], xx[2] = {x, x};
    g_int(g, g_node(g, "Concat", 2, xx), "axis", 0);
    assert_false(apart(g));
    g = g_new(4, X4);
    x = g->inputs[0], xx[0] = xx[1] = x;
    g_int(g, g_node(g, "Concat", 2, xx), "axis", 1);
    assert_true(apart(g));
    /* Reshape: axis 0 copied, or inferred from one sample's elements;
     * never a fixed count, nor several rows a sample */
    int64_t s1[2] = {1, -1}, s0[2] = {0, -1}, sm[2] = {-1, 36}, s9[2] = {-1, 9};
    int64_t s3[4] = {-1, 0, 9, 1};
    assert_false(apart2("Reshape", 4, X4, 2, NULL, true, s1));
    assert_true(apart2("Reshape", 4, X4, 2, NULL, true, s0));
    assert_true(apart2("Reshape", 4, X4, 2, NULL, true, sm));
    assert_true(apart2("Reshape", 4, X4, 4, NULL, true, s3));
    assert_false(apart2("Reshape", 4, X4, 2, NULL, true, s9));
    int64_t u0[1] = {0}, u1[1] = {1};
    assert_false(apart2("Unsqueeze", 2, X2, 1, NULL, true, u0));
    assert_true(apart2("Unsqueeze", 2, X2, 1, NULL, true, u1));
    /* Conv: weights are parameters */
    int64_t wd[4] = {2, 4, 1, 1};
    assert_true(apart2("Conv", 4, X4, 4, wd, false, NULL));
}

/* ---- split runs ------------------------------------------------------------------ */

static ql_tensor *run(ql_graph *g, const ql_exec_opts *o, const ql_tensor *x, ql_status want)
{
    ql_exec *ex = NULL;
    ql_error err = {{0}};
    ql_tensor *out[1] = {0};
    assert_int_equal(ql_exec_new(g, o, &ex, &err), QL_OK);
    ql_status st = ql_exec_run(ex, &x, out, &err);
    if (st != want)
        fail_msg("run: status %d (%s), expected %d", st, err.msg, want);
    ql_exec_free(ex);
    return out[0];
}

static void test_split_example(void **state)
{
    (void)state;
    ql_model *m = NULL;
    ql_dataset *d = NULL;
    assert_true(tu_load_example(&m, &d, 13));
    assert_true(ql_graph_samples_apart(m->graph));
    ql_tensor in = ql_dataset_batch(d, 0, 13);
    /* 1, 2 and 3 threads: the same bits */
    ql_tensor *y[3];
    for (int t = 1; t <= 3; t++) {
        ql_exec_opts o = {.n_threads = t, .split_samples = true, .reuse_buffers = t == 2};
        y[t - 1] = run(m->graph, &o, &in, QL_OK);
        assert_int_equal(y[t - 1]->dims[0], 13);
        if (t > 1)
            assert_memory_equal(y[0]->data, y[t - 1]->data, ql_tensor_nbytes(y[0]));
    }
    /* each sample alone, on an executor that runs batches whole */
    ql_exec_opts whole = {.n_threads = 2};
    int64_t per = ql_tensor_numel(y[0]) / 13;
    for (int64_t i = 0; i < 13; i++) {
        ql_tensor one = ql_dataset_batch(d, i, 1);
        ql_tensor *z = run(m->graph, &whole, &one, QL_OK);
        assert_memory_equal((float *)y[0]->data + i * per, z->data, (size_t)per * sizeof(float));
        ql_tensor_free(z);
    }
    /* a batch of one: the threads share its nodes, with the same bits */
    ql_tensor one = ql_dataset_batch(d, 5, 1);
    ql_exec_opts o2 = {.n_threads = 2, .split_samples = true};
    ql_tensor *z = run(m->graph, &o2, &one, QL_OK);
    assert_memory_equal((float *)y[0]->data + 5 * per, z->data, (size_t)per * sizeof(float));
    ql_tensor_free(z);
    /* cancelled before it starts */
    volatile int stop = 1;
    ql_exec_opts oc = {.n_threads = 2, .split_samples = true, .cancel = &stop};
    assert_null(run(m->graph, &oc, &in, QL_ERR_CANCELLED));
    for (int t = 0; t < 3; t++)
        ql_tensor_free(y[t]);
    ql_dataset_free(d);
    ql_model_free(m);
}

/* Several rows a sample (Reshape [-1, 3] of [N, 4, 3]): refused, so a
 * split run takes the batch whole, and gives what a plain run gives. */
static void test_split_rows(void **state)
{
    (void)state;
    int64_t xd[3] = {-1, 4, 3}, sh[2] = {-1, 3};
    ql_graph *g = g_new(3, xd);
    int x = g->inputs[0], s = g_const_i64(g, "s", 2, sh), r = ql_graph_value(g, "r");
    int in[2] = {x, s};
    ql_graph_add_node(g, "reshape", "Reshape", "", 2, in, 1, &r);
    g_node(g, "Relu", 1, &r);
    ql_error err = {{0}};
    if (ql_graph_toposort(g, &err) || ql_graph_bind_ops(g, &err) ||
        ql_graph_infer_shapes(g, &err) || ql_graph_prepare(g, &err))
        fail_msg("graph setup: %s", err.msg);
    assert_false(ql_graph_samples_apart(g));
    int64_t bd[3] = {5, 4, 3};
    ql_tensor *xb = ql_tensor_new(QL_F32, 3, bd);
    float *xv = xb->data;
    for (int i = 0; i < 60; i++)
        xv[i] = (float)(i % 7) - 3.0f;
    ql_exec_opts split = {.n_threads = 2, .split_samples = true}, whole = {.n_threads = 2};
    ql_tensor *a = run(g, &split, xb, QL_OK), *b = run(g, &whole, xb, QL_OK);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->dims[0], 20);
    assert_int_equal(a->dims[1], 3);
    assert_memory_equal(a->data, b->data, ql_tensor_nbytes(b));
    ql_tensor_free(a);
    ql_tensor_free(b);
    ql_tensor_free(xb);
    ql_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apart_rules),
        cmocka_unit_test(test_split_example),
        cmocka_unit_test(test_split_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
