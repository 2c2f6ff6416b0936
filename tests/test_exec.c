/* Unit tests: the executor on small hand-built graphs: whole runs, runs from
 * a node with fed values, observers, cancellation, input checks, threads,
 * and the Conv+Add(+Relu) fusion kept away from watched or quantized values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/exec.h"
#include "engine/graph.h"
#include "engine/op.h"
#include "engine/quant.h"

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


/* ---------------------------------------------------------------------------
 * Residual fusion: x -> Conv -> h=Relu -> Conv -> b ; Add(b, other) -> s ;
 * Relu(s) -> y. other is h (the Conv applies the Add, then the Relu), or
 * a [1,4,1,1] constant (broadcast: not fusable, the Add runs itself).
 * ------------------------------------------------------------------------- */
#define RC 4
#define RH 6
#define RW 5

static int res_const(ql_graph *g, const char *name, int ndim, const int64_t *dims, float scale)
{
    int v = ql_graph_value(g, name);
    ql_tensor *t = ql_tensor_new(QL_F32, ndim, dims);
    float *d = t->data;
    for (int64_t i = 0; i < ql_tensor_numel(t); i++) /* fixed, varied values */
        d[i] = scale * (float)((i * 37 + 11) % 23 - 11) / 11.0f;
    g->values[v].constant = t;
    return v;
}

static void res_conv_attrs(ql_graph *g, int node)
{
    ql_attr *a = ql_node_add_attr(g, node, "pads", QL_ATTR_INTS);
    a->n = 4;
    a->ints = malloc(4 * sizeof(int64_t));
    for (int i = 0; i < 4; i++)
        a->ints[i] = 1;
}

static ql_graph *make_res_graph(int bcast)
{
    ql_graph *g = ql_graph_new();
    g->opset = 13;
    int x = ql_graph_value(g, "x"), a = ql_graph_value(g, "a"), h = ql_graph_value(g, "h"),
        b = ql_graph_value(g, "b"), s = ql_graph_value(g, "s"), y = ql_graph_value(g, "y");
    int64_t wd[] = {RC, RC, 3, 3}, bd[] = {RC}, kd[] = {1, RC, 1, 1};
    int w0 = res_const(g, "w0", 4, wd, 0.5f), b0 = res_const(g, "b0", 1, bd, 0.25f);
    int w1 = res_const(g, "w1", 4, wd, -0.4f), b1 = res_const(g, "b1", 1, bd, 0.3f);
    int k = res_const(g, "k", 4, kd, 1.0f);
    g->values[x].is_input = true;
    g->values[x].dtype = QL_F32;
    g->values[x].ndim = 4;
    g->values[x].dims[0] = -1;
    g->values[x].dims[1] = RC;
    g->values[x].dims[2] = RH;
    g->values[x].dims[3] = RW;
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    int c0[3] = {x, w0, b0}, c1[3] = {h, w1, b1}, ad[2] = {b, bcast ? k : h};
    ql_graph_add_node(g, "c0", "Conv", "", 3, c0, 1, &a);
    res_conv_attrs(g, 0);
    ql_graph_add_node(g, "r0", "Relu", "", 1, &a, 1, &h);
    ql_graph_add_node(g, "c1", "Conv", "", 3, c1, 1, &b);
    res_conv_attrs(g, 2);
    ql_graph_add_node(g, "add", "Add", "", 2, ad, 1, &s);
    ql_graph_add_node(g, "r1", "Relu", "", 1, &s, 1, &y);
    ql_error err = {{0}};
    if (ql_graph_toposort(g, &err) || ql_graph_bind_ops(g, &err) ||
        ql_graph_infer_shapes(g, &err) || ql_graph_prepare(g, &err))
        fail_msg("graph setup: %s", err.msg);
    return g;
}

/* Reference in double: 3x3 conv, pad 1, of in[n][RC][RH][RW]. */
static void ref_conv3(const float *in, const float *w, const float *bias, int n, double *out)
{
    for (int i = 0; i < n; i++)
        for (int m = 0; m < RC; m++)
            for (int oh = 0; oh < RH; oh++)
                for (int ow = 0; ow < RW; ow++) {
                    double acc = bias[m];
                    for (int c = 0; c < RC; c++)
                        for (int r = 0; r < 3; r++)
                            for (int q = 0; q < 3; q++) {
                                int ih = oh + r - 1, iw = ow + q - 1;
                                if (ih >= 0 && ih < RH && iw >= 0 && iw < RW)
                                    acc += (double)in[((i * RC + c) * RH + ih) * RW + iw] *
                                           w[((m * RC + c) * 3 + r) * 3 + q];
                            }
                    out[((i * RC + m) * RH + oh) * RW + ow] = acc;
                }
}

typedef struct res_obs {
    int calls, saw_b;
    float b0; /* element 0 of b as observed */
} res_obs;

static bool res_observe(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    res_obs *o = user;
    (void)node;
    o->calls++;
    if (!strcmp(g->values[value].name, "b")) {
        o->saw_b = 1;
        o->b0 = ((const float *)t->data)[0];
    }
    return true;
}

/* Runs g on x with the given options; returns the output (owned). */
static ql_tensor *res_run(ql_graph *g, const ql_exec_opts *o, const ql_exec_quant *q,
                          const ql_tensor *x)
{
    ql_exec *ex = NULL;
    ql_error err = {{0}};
    ql_tensor *out[1] = {0};
    if (ql_exec_new(g, o, &ex, &err) != QL_OK || (q && ql_exec_set_quant(ex, q, &err) != QL_OK) ||
        ql_exec_run(ex, &x, out, &err) != QL_OK)
        fail_msg("run: %s", err.msg);
    ql_exec_free(ex);
    return out[0];
}

static void test_residual_fusion(void **state)
{
    (void)state;
    enum { N = 3, SZ = N * RC * RH * RW };
    int64_t xd[] = {N, RC, RH, RW};
    ql_tensor *x = ql_tensor_new(QL_F32, 4, xd);
    float *xv = x->data;
    for (int i = 0; i < SZ; i++)
        xv[i] = (float)((i * 53 + 7) % 41 - 20) / 10.0f;
    for (int bcast = 0; bcast < 2; bcast++) {
        ql_graph *g = make_res_graph(bcast);
        int vb = -1;
        for (int v = 0; v < g->n_values; v++)
            if (!strcmp(g->values[v].name, "b"))
                vb = v;
        /* reference: a = conv(x), h = relu(a), b = conv(h), y = relu(b + other) */
        double *ra = malloc(SZ * sizeof(double)), *rb = malloc(SZ * sizeof(double));
        float *h = malloc(SZ * sizeof(float));
        const float *cw0 = NULL, *cb0 = NULL, *cw1 = NULL, *cb1 = NULL, *ck = NULL;
        for (int v = 0; v < g->n_values; v++) {
            const ql_tensor *c = g->values[v].constant;
            const char *nm = g->values[v].name;
            if (!c)
                continue;
            if (!strcmp(nm, "w0"))
                cw0 = c->data;
            else if (!strcmp(nm, "b0"))
                cb0 = c->data;
            else if (!strcmp(nm, "w1"))
                cw1 = c->data;
            else if (!strcmp(nm, "b1"))
                cb1 = c->data;
            else if (!strcmp(nm, "k"))
                ck = c->data;
        }
        ref_conv3(xv, cw0, cb0, N, ra);
        for (int i = 0; i < SZ; i++)
            h[i] = ra[i] > 0 ? (float)ra[i] : 0.0f;
        ref_conv3(h, cw1, cb1, N, rb);

        /* fused (no observer), on 1 and 2 threads */
        ql_exec_opts o1 = {.n_threads = 1}, o2 = {.n_threads = 2};
        ql_tensor *y1 = res_run(g, &o1, NULL, x), *y2 = res_run(g, &o2, NULL, x);
        const float *yv = y1->data;
        for (int i = 0; i < SZ; i++) {
            int c = i / (RH * RW) % RC;
            double want = rb[i] + (bcast ? ck[c] : h[i]);
            want = want > 0 ? want : 0;
            if (fabs(yv[i] - want) > 1e-5 + 1e-5 * fabs(want))
                fail_msg("bcast %d: y[%d] = %.7g, expected %.7g", bcast, i, yv[i], want);
        }
        assert_memory_equal(y1->data, y2->data, SZ * sizeof(float));

        /* unfused (an observer on every value): the same bits, and b is seen */
        res_obs ob = {0};
        ql_exec_opts oa = {.n_threads = 1, .observer = res_observe, .observer_user = &ob};
        ql_tensor *ya = res_run(g, &oa, NULL, x);
        assert_memory_equal(y1->data, ya->data, SZ * sizeof(float));
        assert_int_equal(ob.calls, 5);
        assert_true(ob.saw_b);

        /* an observer watching b alone: b must still exist, unfused */
        char *want = calloc((size_t)g->n_values, 1);
        want[vb] = 1;
        res_obs ow = {0};
        ql_exec_opts ob1 = {.n_threads = 2, .observer = res_observe, .observer_user = &ow,
                            .observe = want};
        ql_tensor *yb = res_run(g, &ob1, NULL, x);
        assert_int_equal(ow.calls, 1);
        assert_true(ow.saw_b);
        assert_true(fabs(ow.b0 - rb[0]) <= 1e-5 + 1e-5 * fabs(rb[0]));
        assert_memory_equal(y1->data, yb->data, SZ * sizeof(float));

        /* a fake-quant plan on b: b is quantized (so not fused away), the
         * result differs from the float one */
        ql_encoding enc;
        ql_qspec spec = {.bits = 2, .is_signed = true, .symmetric = true, .axis = -1};
        assert_int_equal(ql_encoding_init(&enc, &spec, 1, NULL), QL_OK);
        ql_encoding_set_range(&enc, 0, -1.0, 1.0);
        const ql_encoding **act = calloc((size_t)g->n_values, sizeof *act);
        act[vb] = &enc;
        ql_exec_quant q = {.act = act};
        ql_tensor *yq = res_run(g, &o2, &q, x);
        const float *qv = yq->data;
        for (int i = 0; i < SZ; i++) {
            int c = i / (RH * RW) % RC;
            /* 2-bit symmetric over [-1, 1]: b becomes -1, 0 or 1 */
            double bq = rb[i] > 0.5 ? 1 : rb[i] < -0.5 ? -1 : 0;
            double wq = bq + (bcast ? ck[c] : h[i]);
            wq = wq > 0 ? wq : 0;
            if (fabs(rb[i]) > 0.5 + 1e-4 || fabs(rb[i]) < 0.5 - 1e-4) /* not at a tie */
                if (fabs(qv[i] - wq) > 1e-5 + 1e-5 * fabs(wq))
                    fail_msg("quantized b: y[%d] = %.7g, expected %.7g", i, qv[i], wq);
        }
        ql_encoding_clear(&enc);
        free(act);
        free(want);
        ql_tensor_free(y1);
        ql_tensor_free(y2);
        ql_tensor_free(ya);
        ql_tensor_free(yb);
        ql_tensor_free(yq);
        free(ra);
        free(rb);
        free(h);
        ql_graph_free(g);
    }
    ql_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_and_shapes),
        cmocka_unit_test(test_input_checks),
        cmocka_unit_test(test_run_from_node),
        cmocka_unit_test(test_observer_and_cancel),
        cmocka_unit_test(test_residual_fusion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
