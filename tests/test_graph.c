/* Unit tests: graph construction, name look-up, attributes, ordering,
 * compaction, op binding errors and cost figures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/graph.h"
#include "engine/op.h"

static int add1(ql_graph *g, const char *name, const char *op, int in, int out)
{
    return ql_graph_add_node(g, name, op, "", 1, &in, 1, &out);
}

static void test_values_by_name(void **state)
{
    (void)state;
    ql_graph *g = ql_graph_new();
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "v%d", i);
        assert_int_equal(ql_graph_value(g, name), i);
    }
    assert_int_equal(ql_graph_value(g, "v1234"), 1234);
    assert_int_equal(ql_graph_find_value(g, "v1999"), 1999);
    assert_int_equal(ql_graph_find_value(g, "nope"), -1);
    assert_int_equal(g->values[5].ndim, -1);
    assert_int_equal(g->values[5].producer, -1);
    ql_graph_free(g);
}

static void test_attributes(void **state)
{
    (void)state;
    ql_graph *g = ql_graph_new();
    int x = ql_graph_value(g, "x"), y = ql_graph_value(g, "y");
    int n = add1(g, "n0", "LeakyRelu", x, y);
    ql_attr *a = ql_node_add_attr(g, n, "alpha", QL_ATTR_FLOAT);
    a->f = 0.25f;
    a = ql_node_add_attr(g, n, "pads", QL_ATTR_INTS);
    a->n = 2;
    a->ints = calloc(2, sizeof *a->ints);
    a->ints[0] = 1;
    a->ints[1] = 2;
    a = ql_node_add_attr(g, n, "mode", QL_ATTR_STRING);
    a->s = strdup("linear");
    const ql_node *node = &g->nodes[n];
    assert_true(ql_attr_float(node, "alpha", 0.01f) == 0.25f);
    assert_true(ql_attr_float(node, "beta", 0.5f) == 0.5f);
    assert_int_equal(ql_attr_int(node, "axis", -1), -1);
    assert_string_equal(ql_attr_string(node, "mode", "nearest"), "linear");
    int cnt;
    const int64_t *p = ql_attr_ints(node, "pads", &cnt);
    assert_int_equal(cnt, 2);
    assert_int_equal(p[1], 2);
    assert_null(ql_attr_ints(node, "strides", &cnt));
    assert_int_equal(cnt, 0);
    ql_graph_free(g);
}

static void test_toposort_reorders(void **state)
{
    (void)state;
    ql_graph *g = ql_graph_new();
    int x = ql_graph_value(g, "x"), a = ql_graph_value(g, "a"), b = ql_graph_value(g, "b"),
        c = ql_graph_value(g, "c");
    g->values[x].is_input = true;
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = c;
    g->n_outputs = 1;
    add1(g, "third", "Relu", b, c);
    add1(g, "first", "Relu", x, a);
    add1(g, "second", "Relu", a, b);
    ql_error err = {{0}};
    assert_int_equal(ql_graph_toposort(g, &err), QL_OK);
    assert_string_equal(g->nodes[0].name, "first");
    assert_string_equal(g->nodes[1].name, "second");
    assert_string_equal(g->nodes[2].name, "third");
    assert_int_equal(g->values[b].producer, 1);
    assert_int_equal(g->values[a].n_consumers, 1);
    assert_true(g->values[c].is_output);
    ql_graph_free(g);
}

static void test_toposort_errors(void **state)
{
    (void)state;
    ql_error err = {{0}};
    ql_graph *g = ql_graph_new();
    int a = ql_graph_value(g, "a"), b = ql_graph_value(g, "b");
    add1(g, "p", "Relu", a, b);
    add1(g, "q", "Relu", b, a);
    assert_int_equal(ql_graph_toposort(g, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "cycle"));
    ql_graph_free(g);

    g = ql_graph_new();
    a = ql_graph_value(g, "ghost");
    b = ql_graph_value(g, "b");
    add1(g, "reader", "Relu", a, b);
    assert_int_equal(ql_graph_toposort(g, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "node 'reader' (Relu) reads 'ghost', which no node produces "
                                 "and is neither a graph input nor an initializer");
    ql_graph_free(g);
}

static void test_bind_lists_every_unsupported_op(void **state)
{
    (void)state;
    ql_graph *g = ql_graph_new();
    g->opset = 13;
    int v[5];
    for (int i = 0; i < 5; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "v%d", i);
        v[i] = ql_graph_value(g, nm);
    }
    add1(g, "topk_0", "TopK", v[0], v[1]);
    add1(g, "nms_1", "NonMaxSuppression", v[1], v[2]);
    add1(g, "topk_3", "TopK", v[2], v[3]);
    ql_graph_add_node(g, "custom", "MyOp", "com.example", 1, &v[3], 1, &v[4]);
    ql_error err = {{0}};
    assert_int_equal(ql_graph_bind_ops(g, &err), QL_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "4 unsupported ops (opset 13): TopK (topk_0, topk_3), "
                                 "NonMaxSuppression (nms_1), com.example.MyOp (custom)");
    ql_graph_free(g);
}

static void test_compact(void **state)
{
    (void)state;
    ql_graph *g = ql_graph_new();
    int x = ql_graph_value(g, "x"), a = ql_graph_value(g, "a"), b = ql_graph_value(g, "b");
    ql_graph_value(g, "orphan");
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->values[x].is_input = true;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = a;
    g->n_outputs = 1;
    add1(g, "keep", "Relu", x, a);
    int d = add1(g, "drop", "Relu", a, b);
    g->nodes[d].dead = true;
    ql_graph_compact(g);
    assert_int_equal(g->n_nodes, 1);
    assert_int_equal(g->n_values, 2);
    assert_int_equal(ql_graph_find_value(g, "b"), -1);
    assert_int_equal(ql_graph_find_value(g, "orphan"), -1);
    int na = ql_graph_find_value(g, "a");
    assert_int_equal(g->outputs[0], na);
    assert_int_equal(g->nodes[0].out[0], na);
    assert_int_equal(g->values[na].producer, 0);
    ql_graph_free(g);
}

static void test_macs(void **state)
{
    (void)state;
    ql_graph *g = ql_graph_new();
    int x = ql_graph_value(g, "x"), w = ql_graph_value(g, "w"), y = ql_graph_value(g, "y");
    int64_t wd[] = {16, 8, 3, 3};
    g->values[w].constant = ql_tensor_new(QL_F32, 4, wd);
    g->values[w].ndim = 4;
    memcpy(g->values[w].dims, wd, sizeof wd);
    g->values[y].ndim = 4;
    int64_t yd[] = {-1, 16, 10, 10};
    memcpy(g->values[y].dims, yd, sizeof yd);
    int in[2] = {x, w};
    int n = ql_graph_add_node(g, "c", "Conv", "", 2, in, 1, &y);
    g->nodes[n].op = QL_OP_CONV;
    assert_int_equal(ql_node_macs(g, &g->nodes[n]), 16 * 10 * 10 * 8 * 9);
    assert_int_equal(ql_node_params(g, &g->nodes[n]), 16 * 8 * 9);
    ql_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_by_name),
        cmocka_unit_test(test_attributes),
        cmocka_unit_test(test_toposort_reorders),
        cmocka_unit_test(test_toposort_errors),
        cmocka_unit_test(test_bind_lists_every_unsupported_op),
        cmocka_unit_test(test_compact),
        cmocka_unit_test(test_macs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
