/* Unit tests: the executor on small hand-built graphs: whole runs, runs from
 * a node with fed values, observers, cancellation, input checks, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/op.h"

/* x[2,3] -> Relu -> r ; r + c (constant [3]) -> s ; Mul(s, s) -> y */
static ql_graph *make_graph(void)
{
    ql_graph *g = ql_graph_new();
    g->opset = 13;
    int x = ql_graph_value(g, "x"), r = ql_graph_value(g, "r"), c = ql_graph_value(g, "c"),
        s = ql_graph_value(g, "s"), y = ql_graph_value(g, "y");
    g->values[x].is_input = true;
    g->values[x].dtype = QL_F32;
    g->values[x].ndim = 2;
    g->values[x].dims[0] = -1;
    g->values[x].dims[1] = 3;
    int64_t cd[] = {3};
    g->values[c].constant = ql_tensor_new(QL_F32, 1, cd);
    float *cv = g->values[c].constant->data;
    cv[0] = 1;
    cv[1] = -2;
    cv[2] = 0.5f;
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    ql_graph_add_node(g, "relu", "Relu", "", 1, &x, 1, &r);
    int ai[2] = {r, c};
    ql_graph_add_node(g, "add", "Add", "", 2, ai, 1, &s);
    int mi[2] = {s, s};
    ql_graph_add_node(g, "mul", "Mul", "", 2, mi, 1, &y);
    ql_error err = {{0}};
    if (ql_graph_toposort(g, &err) || ql_graph_bind_ops(g, &err) ||
        ql_graph_infer_shapes(g, &err) || ql_graph_prepare(g, &err))
        fail_msg("graph setup: %s", err.msg);
    return g;
}

static float expect(float x, int col)
{
    static const float c[3] = {1, -2, 0.5f};
    float s = (x > 0 ? x : 0) + c[col];
    return s * s;
}

static void test_run_and_shapes(void **state)
{
    (void)state;
    ql_graph *g = make_graph();
    assert_int_equal(g->values[ql_graph_find_value(g, "y")].ndim, 2);
    assert_int_equal(g->values[ql_graph_find_value(g, "y")].dims[0], -1);
    ql_exec *x = NULL;
    ql_error err = {{0}};
    ql_exec_opts o = {.n_threads = 2};
    assert_int_equal(ql_exec_new(g, &o, &x, &err), QL_OK);
    float in[12];
    for (int i = 0; i < 12; i++)
        in[i] = (float)i - 5.5f;
    int64_t dims[] = {4, 3}; /* dynamic batch of 4 */
    ql_tensor *t = ql_tensor_wrap(QL_F32, 2, dims, in);
    const ql_tensor *feeds[] = {t};
    ql_tensor *out[1] = {0};
    assert_int_equal(ql_exec_run(x, feeds, out, &err), QL_OK);
    assert_int_equal(out[0]->ndim, 2);
    assert_int_equal(out[0]->dims[0], 4);
    for (int i = 0; i < 12; i++)
        assert_true(((float *)out[0]->data)[i] == expect(in[i], i % 3));
    ql_tensor_free(out[0]);
    ql_tensor_free(t);
    ql_exec_free(x);
    ql_graph_free(g);
}

static void test_input_checks(void **state)
{
    (void)state;
    ql_graph *g = make_graph();
    ql_exec *x = NULL;
    ql_error err = {{0}};
    assert_int_equal(ql_exec_new(g, NULL, &x, &err), QL_OK);
    float in[8] = {0};
    int64_t dims[] = {2, 4};
    ql_tensor *t = ql_tensor_wrap(QL_F32, 2, dims, in);
    const ql_tensor *feeds[] = {t};
    ql_tensor *out[1] = {0};
    assert_int_equal(ql_exec_run(x, feeds, out, &err), QL_ERR_SHAPE);
    assert_string_equal(err.msg, "input 'x' expects shape [?x3], got [2x4]");
    t->dtype = QL_I32;
    assert_int_equal(ql_exec_run(x, feeds, out, &err), QL_ERR_DATA);
    assert_string_equal(err.msg, "input 'x' expects f32 data, got i32");
    ql_tensor_free(t);
    ql_exec_free(x);
    ql_graph_free(g);
}

static void test_run_from_node(void **state)
{
    (void)state;
    ql_graph *g = make_graph();
    ql_exec *x = NULL;
    ql_error err = {{0}};
    assert_int_equal(ql_exec_new(g, NULL, &x, &err), QL_OK);
    /* start at "add" (node 1), feeding the relu output directly: negative
     * values there prove relu did not run */
    float r[3] = {-1, 2, -3};
    int64_t dims[] = {1, 3};
    ql_tensor *t = ql_tensor_wrap(QL_F32, 2, dims, r);
    int rid = ql_graph_find_value(g, "r");
    const ql_tensor *feeds[] = {t};
    ql_tensor *out[1] = {0};
    assert_int_equal(ql_exec_run_from(x, 1, 1, &rid, feeds, out, &err), QL_OK);
    const float *y = out[0]->data;
    assert_true(y[0] == 0.0f && y[1] == 0.0f && y[2] == 6.25f);
    ql_tensor_free(out[0]);
    /* without the feed, the run names what is missing */
    assert_int_equal(ql_exec_run_from(x, 1, 0, NULL, NULL, out, &err), QL_ERR_ARG);
    assert_string_equal(err.msg, "node 'add' (Add) needs 'r', which was not supplied");
    ql_tensor_free(t);
    ql_exec_free(x);
    ql_graph_free(g);
}

typedef struct {
    int calls;
    int stop_after;
    char names[8][8];
} obs_log;

static bool observe(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    obs_log *l = user;
    (void)node;
    assert_non_null(t->data);
    if (l->calls < 8)
        strncpy(l->names[l->calls], g->values[value].name, 7);
    l->calls++;
    return l->stop_after == 0 || l->calls < l->stop_after;
}

static void test_observer_and_cancel(void **state)
{
    (void)state;
    ql_graph *g = make_graph();
    ql_exec *x = NULL;
    ql_error err = {{0}};
    obs_log log = {0};
    ql_exec_opts o = {.observer = observe, .observer_user = &log};
    assert_int_equal(ql_exec_new(g, &o, &x, &err), QL_OK);
    float in[3] = {1, 2, 3};
    int64_t dims[] = {1, 3};
    ql_tensor *t = ql_tensor_wrap(QL_F32, 2, dims, in);
    const ql_tensor *feeds[] = {t};
    ql_tensor *out[1] = {0};
    assert_int_equal(ql_exec_run(x, feeds, out, &err), QL_OK);
    assert_int_equal(log.calls, 3);
    assert_string_equal(log.names[0], "r");
    assert_string_equal(log.names[1], "s");
    assert_string_equal(log.names[2], "y");
    ql_tensor_free(out[0]);
    log.calls = 0;
    log.stop_after = 2;
    out[0] = NULL;
    assert_int_equal(ql_exec_run(x, feeds, out, &err), QL_ERR_CANCELLED);
    assert_null(out[0]);
    ql_exec_free(x);

    volatile int cancel = 1;
    ql_exec_opts oc = {.cancel = &cancel};
    assert_int_equal(ql_exec_new(g, &oc, &x, &err), QL_OK);
    assert_int_equal(ql_exec_run(x, feeds, out, &err), QL_ERR_CANCELLED);
    ql_exec_free(x);
    ql_tensor_free(t);
    ql_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_and_shapes),
        cmocka_unit_test(test_input_checks),
        cmocka_unit_test(test_run_from_node),
        cmocka_unit_test(test_observer_and_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
