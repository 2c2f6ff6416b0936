/* Unit tests: Add/Sub/Mul/Div/PRelu broadcasting (f32 and integers, and
 * the forms before opset 7), the activations, Clip and Softmax across
 * opsets, BatchNormalization (inference and training mode),
 * ReduceMean, and Relu/Clip fused into a producer by the executor, against
 * naive references written here. Every run goes through the real pipeline
 * with 1 and with 2 threads, whose outputs must be bit-identical.
 * Tolerances: exact where the kernel does the same single IEEE operation as
 * the reference (arithmetic, Relu, LeakyRelu, PRelu, Clip, integers);
 * Sigmoid/Tanh/HardSigmoid/HardSwish rtol 1e-6 atol 1e-7 against double
 * libm; Softmax and ReduceMean rtol 1e-5 atol 1e-6, BatchNormalization
 * rtol 1e-5 atol 1e-5 (scale and shift are folded, then rounded to f32)
 * against double references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "testutil.h"

#define F(t) ((float *)(t)->data)

/* Runs a prepared one-node graph with 1 and 2 threads; fails on error or
 * on any difference between the two. */
static ql_tensor *run1(tu_node *t, const ql_tensor *const *in, int n_in)
{
    ql_error err = {{0}};
    ql_tensor *o1 = NULL, *o2 = NULL;
    if (tu_node_run(t, in, n_in, 1, &o1, &err) != QL_OK)
        fail_msg("run: %s", err.msg);
    if (tu_node_run(t, in, n_in, 2, &o2, &err) != QL_OK)
        fail_msg("run: %s", err.msg);
    assert_true(ql_shape_equal(o1->ndim, o1->dims, o2->ndim, o2->dims));
    assert_memory_equal(o1->data, o2->data, ql_tensor_nbytes(o1));
    ql_tensor_free(o2);
    return o1;
}

/* Expects the run to fail with status st and a message containing msg. */
static void run_fails(tu_node *t, const ql_tensor *const *in, int n_in, ql_status st,
                      const char *msg)
{
    ql_error err = {{0}};
    ql_tensor *out = NULL;
    ql_status got = tu_node_run(t, in, n_in, 1, &out, &err);
    if (got != st || !strstr(err.msg, msg))
        fail_msg("expected %s with '%s', got %s: '%s'", ql_status_str(st), msg, ql_status_str(got),
                 err.msg);
}

static void expect_close(const char *what, const float *got, const double *want, int64_t n,
                         double rtol, double atol)
{
    for (int64_t i = 0; i < n; i++) {
        if ((isnan(want[i]) && isnan(got[i])) || got[i] == want[i])
            continue;
        if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i])))
            fail_msg("%s: element %lld is %.9g, expected %.9g", what, (long long)i, got[i],
                     want[i]);
    }
}

/* naive broadcast offset of output element e into an operand of shape d */
static int64_t bcast_off(int64_t e, int on, const int64_t *od, int n, const int64_t *d)
{
    int64_t off = 0, stride = 1;
    for (int i = on - 1; i >= 0; i--) {
        int64_t idx = e % od[i];
        e /= od[i];
        int k = i - (on - n);
        if (k >= 0) {
            if (d[k] != 1)
                off += idx * stride;
            stride *= d[k];
        }
    }
    return off;
}

/* ---------------------------------------------------------------------------
 * Add, Sub, Mul, Div, PRelu
 * ------------------------------------------------------------------------- */
typedef struct shape_pair {
    int an, bn;
    int64_t ad[5], bd[5];
} shape_pair;

static const shape_pair pairs[] = {
    {4, 4, {2, 3, 4, 5}, {2, 3, 4, 5}},
    {4, 3, {2, 3, 4, 5}, {3, 1, 1}},
    {4, 0, {2, 3, 4, 5}, {0}},
    {0, 4, {0}, {2, 3, 4, 5}},
    {2, 2, {3, 1}, {1, 4}},
    {1, 3, {5}, {2, 3, 5}},
    {3, 3, {2, 1, 4}, {1, 3, 1}},
    {4, 1, {1, 64, 50, 50}, {50}},
    {0, 0, {0}, {0}},
    {4, 4, {2, 3, 1, 1}, {2, 3, 7, 9}},
    {4, 4, {1, 3, 1, 5}, {2, 1, 4, 1}},
    {3, 1, {4, 1, 6}, {1}},
    {2, 2, {0, 3}, {1, 3}},
    {5, 3, {2, 1, 3, 1, 2}, {3, 4, 1}},
    {2, 1, {3, 40000}, {40000}},
    {1, 0, {70001}, {0}},
    {2, 2, {70001, 1}, {1, 2}},
    {4, 4, {1, 1, 1, 1}, {1, 1, 1, 1}},
};

static double ref_binop(int op, double x, double z)
{
    switch (op) {
    case 0: return (float)(x + z);
    case 1: return (float)(x - z);
    case 2: return (float)(x * z);
    case 3: return (float)(x / z);
    default: return x < 0 ? (float)(x * z) : x;
    }
}

static void test_binary_broadcast(void **state)
{
    (void)state;
    static const char *const ops[] = {"Add", "Sub", "Mul", "Div", "PRelu"};
    tu_rng r = {21};
    for (size_t s = 0; s < sizeof pairs / sizeof pairs[0]; s++)
        for (int o = 0; o < 5; o++) {
            const shape_pair *p = &pairs[s];
            int64_t od[QL_MAX_DIMS];
            int on;
            assert_true(ql_broadcast_shape(p->an, p->ad, p->bn, p->bd, &on, od));
            if (o == 4 && !ql_shape_equal(on, od, p->an, p->ad))
                continue; /* PRelu: only slopes that broadcast to X */
            ql_tensor *a = tu_rand(&r, p->an, p->ad, -2, 2),
                      *b = tu_rand(&r, p->bn, p->bd, 0.5f, 2);
            const ql_tensor *in[2] = {a, b};
            int cst[2] = {0, (int)(s & 1)}; /* constant and runtime second operands */
            tu_node t = tu_node_new(ops[o], 14, 2, in, cst, 1);
            ql_tensor *y = run1(&t, in, 2);
            assert_true(ql_shape_equal(y->ndim, y->dims, on, od));
            int64_t n = ql_tensor_numel(y);
            for (int64_t e = 0; e < n; e++) {
                float x = F(a)[bcast_off(e, on, od, a->ndim, a->dims)];
                float z = F(b)[bcast_off(e, on, od, b->ndim, b->dims)];
                float want = (float)ref_binop(o, x, z);
                if (F(y)[e] != want)
                    fail_msg("%s shape pair %zu element %lld: %g, expected %g", ops[o], s,
                             (long long)e, F(y)[e], want);
            }
            ql_tensor_free(y);
            ql_tensor_free(a);
            ql_tensor_free(b);
            tu_node_free(&t);
        }
}

/* Integer arithmetic wraps; Div truncates toward zero (as C, ONNX Runtime
 * and the ONNX reference's cast of numpy's quotient do); x/0 gives 0. */
static int64_t ref_int(int op, int64_t x, int64_t z, int bits, int is_signed)
{
    uint64_t ux = (uint64_t)x, uz = (uint64_t)z, r;
    switch (op) {
    case 0: r = ux + uz; break;
    case 1: r = ux - uz; break;
    case 2: r = ux * uz; break;
    default:
        if (z == 0)
            r = 0;
        else if (z == -1)
            r = 0 - ux;
        else
            r = (uint64_t)(x / z);
    }
    if (bits == 64)
        return (int64_t)r;
    r &= (1ull << bits) - 1;
    if (is_signed && (r >> (bits - 1)))
        return (int64_t)(r | ~((1ull << bits) - 1));
    return (int64_t)r;
}

static void set_int(ql_tensor *t, int64_t i, int64_t v)
{
    switch (t->dtype) {
    case QL_I64: ((int64_t *)t->data)[i] = v; break;
    case QL_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    case QL_I16: ((int16_t *)t->data)[i] = (int16_t)v; break;
    case QL_I8: ((int8_t *)t->data)[i] = (int8_t)v; break;
    default: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    }
}

static int64_t get_int(const ql_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case QL_I64: return ((const int64_t *)t->data)[i];
    case QL_I32: return ((const int32_t *)t->data)[i];
    case QL_I16: return ((const int16_t *)t->data)[i];
    case QL_I8: return ((const int8_t *)t->data)[i];
    default: return ((const uint8_t *)t->data)[i];
    }
}

static void test_binary_integers(void **state)
{
    (void)state;
    static const char *const ops[] = {"Add", "Sub", "Mul", "Div"};
    static const struct {
        ql_dtype dt;
        int bits, is_signed;
    } types[] = {{QL_I64, 64, 1}, {QL_I32, 32, 1}, {QL_I16, 16, 1}, {QL_I8, 8, 1}, {QL_U8, 8, 0}};
    static const int64_t specials[] = {0,   1,         -1,        7,    -7,   2,
                                       -3,  INT64_MIN, INT64_MAX, 127,  -128, 255,
                                       200, INT32_MIN, INT32_MAX, 40000};
    const int ns = (int)(sizeof specials / sizeof specials[0]);
    int64_t ad[3] = {2, 1, ns}, bd[2] = {ns, 1};
    tu_rng r = {23};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        ql_tensor *a = ql_tensor_new(types[ti].dt, 3, ad), *b = ql_tensor_new(types[ti].dt, 2, bd);
        /* the specials against each other (wrapped into the type), then random */
        for (int i = 0; i < ns; i++) {
            set_int(a, i, specials[i]);
            set_int(a, ns + i, (int64_t)tu_next(&r) * 2 - (1ll << 31));
            set_int(b, i, specials[i]);
        }
        const ql_tensor *in[2] = {a, b};
        for (int o = 0; o < 4; o++) {
            tu_node t = tu_node_new(ops[o], 14, 2, in, NULL, 1);
            ql_tensor *y = run1(&t, in, 2);
            assert_int_equal(y->dtype, types[ti].dt);
            assert_int_equal(ql_tensor_numel(y), 2 * ns * ns);
            for (int64_t e = 0; e < 2 * ns * ns; e++) {
                int64_t x = get_int(a, bcast_off(e, y->ndim, y->dims, 3, ad));
                int64_t z = get_int(b, bcast_off(e, y->ndim, y->dims, 2, bd));
                int64_t want = ref_int(o, x, z, types[ti].bits, types[ti].is_signed);
                if (get_int(y, e) != want)
                    fail_msg("%s %s: %lld op %lld = %lld, expected %lld", ops[o],
                             ql_dtype_info(types[ti].dt)->name, (long long)x, (long long)z,
                             (long long)get_int(y, e), (long long)want);
            }
            ql_tensor_free(y);
            tu_node_free(&t);
        }
        ql_tensor_free(a);
        ql_tensor_free(b);
    }
    /* the truncation the shape sub-graphs rely on, spelled out */
    int64_t av[4] = {7, -7, 100, 9}, bv[2] = {2, 3}, d2[2] = {2, 2}, d1[1] = {2};
    ql_tensor *a = ql_tensor_wrap(QL_I64, 2, d2, av), *b = ql_tensor_wrap(QL_I64, 1, d1, bv);
    const ql_tensor *in[2] = {a, b};
    tu_node t = tu_node_new("Div", 14, 2, in, NULL, 1);
    ql_tensor *y = run1(&t, in, 2);
    const int64_t *yv = y->data;
    assert_true(yv[0] == 3 && yv[1] == -2 && yv[2] == 50 && yv[3] == 3);
    ql_tensor_free(y);
    tu_node_free(&t);
    ql_tensor_free(a);
    ql_tensor_free(b);
}

static void test_binary_errors(void **state)
{
    (void)state;
    int64_t d1[2] = {2, 3}, d2[2] = {4, 3}, d3[1] = {0}, d4[1] = {3}, dx[2] = {2, 1},
            ds[2] = {2, 3};
    ql_tensor *p = ql_tensor_new(QL_F32, 2, d1), *q = ql_tensor_new(QL_F32, 2, d2);
    const ql_tensor *in[2] = {p, q};
    tu_node t = tu_node_new("Add", 14, 2, in, NULL, 1);
    run_fails(&t, in, 2, QL_ERR_SHAPE, "shapes [2x3] and [4x3] do not broadcast");
    tu_node_free(&t);

    ql_tensor *e = ql_tensor_new(QL_F32, 1, d3), *f = ql_tensor_new(QL_F32, 1, d4);
    const ql_tensor *in2[2] = {e, f};
    t = tu_node_new("Mul", 14, 2, in2, NULL, 1);
    run_fails(&t, in2, 2, QL_ERR_SHAPE, "shapes [0] and [3] do not broadcast");
    tu_node_free(&t);

    ql_tensor *g = ql_tensor_new(QL_I64, 1, d4);
    const ql_tensor *in3[2] = {f, g};
    t = tu_node_new("Sub", 14, 2, in3, NULL, 1);
    run_fails(&t, in3, 2, QL_ERR_ARG, "input types differ (f32 and i64)");
    tu_node_free(&t);

    /* PRelu: the slope may not grow X */
    ql_tensor *x = ql_tensor_new(QL_F32, 2, dx), *s = ql_tensor_new(QL_F32, 2, ds);
    const ql_tensor *in4[2] = {x, s};
    t = tu_node_new("PRelu", 16, 2, in4, NULL, 1);
    run_fails(&t, in4, 2, QL_ERR_SHAPE, "the slope does not broadcast to X");
    tu_node_free(&t);
    const ql_tensor *in5[2] = {f, p};
    t = tu_node_new("PRelu", 16, 2, in5, NULL, 1);
    run_fails(&t, in5, 2, QL_ERR_SHAPE, "the slope has a higher rank than X");
    tu_node_free(&t);

    ql_tensor *bl = ql_tensor_new(QL_BOOL, 1, d4);
    const ql_tensor *in6[2] = {bl, bl};
    t = tu_node_new("Add", 14, 2, in6, NULL, 1);
    run_fails(&t, in6, 2, QL_ERR_UNSUPPORTED, "bool");
    tu_node_free(&t);

    ql_tensor *ts[] = {p, q, e, f, g, x, s, bl};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        ql_tensor_free(ts[i]);
}

/* Before opset 7: broadcast=1 with an axis places B's dims at A's axis;
 * PRelu's 1-D slope of X's channel count is one slope per channel. */
static void test_binary_legacy(void **state)
{
    (void)state;
    tu_rng r = {25};
    int64_t ad[4] = {2, 3, 4, 5}, bd[2] = {3, 4}, cd[1] = {3}, sd[1] = {5}, bad[2] = {4, 5};
    ql_tensor *a = tu_rand(&r, 4, ad, -2, 2), *b = tu_rand(&r, 2, bd, 0.5f, 2),
              *c = tu_rand(&r, 1, cd, 0, 1), *s5 = tu_rand(&r, 1, sd, 0, 1),
              *bb = tu_rand(&r, 2, bad, 0, 1);
    const ql_tensor *in[2] = {a, b};
    tu_node t = tu_node_new("Mul", 6, 2, in, NULL, 1);
    tu_attr_int(&t, "broadcast", 1);
    tu_attr_int(&t, "axis", 1);
    ql_tensor *y = run1(&t, in, 2);
    for (int64_t e = 0; e < 120; e++)
        assert_true(F(y)[e] == F(a)[e] * F(b)[e / 5 % 12]);
    ql_tensor_free(y);
    tu_node_free(&t);
    /* without an axis B aligns with A's trailing dims */
    const ql_tensor *in2[2] = {a, bb};
    t = tu_node_new("Add", 6, 2, in2, NULL, 1);
    tu_attr_int(&t, "broadcast", 1);
    y = run1(&t, in2, 2);
    for (int64_t e = 0; e < 120; e++)
        assert_true(F(y)[e] == F(a)[e] + F(bb)[e % 20]);
    ql_tensor_free(y);
    tu_node_free(&t);
    t = tu_node_new("Add", 6, 2, in2, NULL, 1);
    tu_attr_int(&t, "broadcast", 1);
    tu_attr_int(&t, "axis", 3);
    run_fails(&t, in2, 2, QL_ERR_SHAPE,
              "B of shape [4x5] does not fit in A of shape [2x3x4x5] at axis 3");
    tu_node_free(&t);
    /* PRelu opset 6: per channel; opset 7 on the same shapes: numpy (last axis) */
    const ql_tensor *in3[2] = {a, c}, *in4[2] = {a, s5};
    t = tu_node_new("PRelu", 6, 2, in3, NULL, 1);
    y = run1(&t, in3, 2);
    for (int64_t e = 0; e < 120; e++) {
        float v = F(a)[e];
        assert_true(F(y)[e] == (v < 0 ? v * F(c)[e / 20 % 3] : v));
    }
    ql_tensor_free(y);
    tu_node_free(&t);
    t = tu_node_new("PRelu", 7, 2, in3, NULL, 1);
    run_fails(&t, in3, 2, QL_ERR_SHAPE, "shapes [2x3x4x5] and [3] (X and slope) do not broadcast");
    tu_node_free(&t);
    t = tu_node_new("PRelu", 9, 2, in4, NULL, 1);
    y = run1(&t, in4, 2);
    for (int64_t e = 0; e < 120; e++) {
        float v = F(a)[e];
        assert_true(F(y)[e] == (v < 0 ? v * F(s5)[e % 5] : v));
    }
    ql_tensor_free(y);
    tu_node_free(&t);
    ql_tensor *ts[] = {a, b, c, s5, bb};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        ql_tensor_free(ts[i]);
}

/* ---------------------------------------------------------------------------
 * Elementwise activations
 * ------------------------------------------------------------------------- */
/* NaN passes through, as in the kernels */
static double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

static double ref_act(const char *op, float x, float alpha, float beta)
{
    if (!strcmp(op, "Relu"))
        return x < 0 ? 0 : x;
    if (!strcmp(op, "LeakyRelu"))
        return x < 0 ? (float)(alpha * x) : x;
    if (!strcmp(op, "Sigmoid"))
        return 1.0 / (1.0 + exp(-(double)x));
    if (!strcmp(op, "HardSigmoid"))
        return clamp01((double)alpha * x + beta);
    if (!strcmp(op, "HardSwish"))
        return x * clamp01(x / 6.0 + 0.5);
    if (!strcmp(op, "Tanh"))
        return tanh((double)x);
    return NAN;
}

static void test_activations(void **state)
{
    (void)state;
    static const struct {
        const char *op;
        int has_alpha;
        float alpha, beta; /* defaults when !has_alpha */
        double rtol, atol;
    } cases[] = {
        {"Relu", 0, 0, 0, 0, 0},
        {"LeakyRelu", 0, 0.01f, 0, 0, 0},
        {"LeakyRelu", 1, 0.1f, 0, 0, 0},
        {"Sigmoid", 0, 0, 0, 1e-6, 1e-7},
        {"HardSigmoid", 0, 0.2f, 0.5f, 1e-6, 1e-7},
        {"HardSigmoid", 1, 0.25f, 0.4f, 1e-6, 1e-7},
        {"HardSwish", 0, 0, 0, 1e-6, 1e-7},
        {"Tanh", 0, 0, 0, 1e-6, 1e-7},
    };
    static const float specials[] = {-100.0f,   100.0f, -0.0f, 0.0f,   NAN,    INFINITY,
                                     -INFINITY, 3.0f,   -3.0f, 1e-30f, -88.0f, 9.0f};
    tu_rng r = {31};
    int64_t shapes[][3] = {{3, 50, 41}, {5, 7001, 1}}; /* one thread; several, with vector tails */
    for (int si = 0; si < 2; si++) {
        ql_tensor *x = tu_rand(&r, 3, shapes[si], -8, 8);
        memcpy(x->data, specials, sizeof specials);
        const ql_tensor *in[1] = {x};
        int64_t n = ql_tensor_numel(x);
        double *want = malloc((size_t)n * sizeof *want);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            tu_node t = tu_node_new(cases[c].op, 14, 1, in, NULL, 1);
            if (cases[c].has_alpha) {
                tu_attr_float(&t, "alpha", cases[c].alpha);
                if (!strcmp(cases[c].op, "HardSigmoid"))
                    tu_attr_float(&t, "beta", cases[c].beta);
            }
            ql_tensor *y = run1(&t, in, 1);
            for (int64_t e = 0; e < n; e++)
                want[e] = ref_act(cases[c].op, F(x)[e], cases[c].alpha, cases[c].beta);
            expect_close(cases[c].op, F(y), want, n, cases[c].rtol, cases[c].atol);
            ql_tensor_free(y);
            tu_node_free(&t);
        }
        free(want);
        ql_tensor_free(x);
    }
}

/* Relu (opset 14) and Clip (opset 12) on integers */
static void test_int_relu_clip(void **state)
{
    (void)state;
    static const ql_dtype dts[] = {QL_I64, QL_I32, QL_I16, QL_I8, QL_U8};
    int64_t d[1] = {300}, one = 1;
    tu_rng r = {33};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        ql_tensor *x = ql_tensor_new(dts[k], 1, d);
        for (int64_t i = 0; i < d[0]; i++)
            set_int(x, i, (int64_t)(tu_next(&r) % 256) - 128);
        ql_tensor *lo = ql_tensor_new(dts[k], 0, &one), *hi = ql_tensor_new(dts[k], 0, &one);
        set_int(lo, 0, dts[k] == QL_U8 ? 20 : -20);
        set_int(hi, 0, 90);
        const ql_tensor *in1[1] = {x};
        tu_node t = tu_node_new("Relu", 14, 1, in1, NULL, 1);
        ql_tensor *y = run1(&t, in1, 1);
        for (int64_t i = 0; i < d[0]; i++)
            assert_int_equal(get_int(y, i), get_int(x, i) < 0 ? 0 : get_int(x, i));
        ql_tensor_free(y);
        tu_node_free(&t);
        /* min only, max only, both */
        for (int v = 0; v < 3; v++) {
            const ql_tensor *in[3] = {x, v != 1 ? lo : NULL, v != 0 ? hi : NULL};
            int cst[3] = {0, 1, 0};
            t = tu_node_new("Clip", 13, 3, in, cst, 1);
            y = run1(&t, in, 3);
            for (int64_t i = 0; i < d[0]; i++) {
                int64_t want = get_int(x, i);
                if (v != 1 && want < get_int(lo, 0))
                    want = get_int(lo, 0);
                if (v != 0 && want > get_int(hi, 0))
                    want = get_int(hi, 0);
                assert_int_equal(get_int(y, i), want);
            }
            ql_tensor_free(y);
            tu_node_free(&t);
        }
        ql_tensor_free(lo);
        ql_tensor_free(hi);
        ql_tensor_free(x);
    }
}

static void test_clip_variants(void **state)
{
    (void)state;
    tu_rng r = {41};
    int64_t d[4] = {2, 3, 4, 4}, one = 1, two = 2;
    ql_tensor *x = tu_rand(&r, 4, d, -3, 3);
    F(x)[0] = NAN;
    F(x)[1] = INFINITY;
    F(x)[2] = -INFINITY;
    int64_t n = ql_tensor_numel(x);
    float lo = -0.5f, hi = 1.25f;
    ql_tensor *tlo = ql_tensor_wrap(QL_F32, 0, &one, &lo),
              *thi = ql_tensor_wrap(QL_F32, 1, &one, &hi);
    /* bound sets: 1 min, 2 max, 3 both, 0 none; then min > max */
    for (int opset = 6; opset <= 13; opset += 5) /* 6: attributes; 11: inputs */
        for (int set = 0; set < 5; set++) {
            float l = set == 4 ? 2.0f : lo, h = set == 4 ? -1.0f : hi;
            ql_tensor *bl = ql_tensor_wrap(QL_F32, 0, &one, &l),
                      *bh = ql_tensor_wrap(QL_F32, 0, &one, &h);
            const ql_tensor *in[3] = {x, (set & 1) || set == 4 ? bl : NULL,
                                      (set & 2) || set == 4 ? bh : NULL};
            int cst[3] = {0, set & 1, 1}, n_in = opset == 6 ? 1 : 3;
            tu_node t = tu_node_new("Clip", opset, n_in, in, cst, 1);
            if (opset == 6 && in[1])
                tu_attr_float(&t, "min", l);
            if (opset == 6 && in[2])
                tu_attr_float(&t, "max", h);
            ql_tensor *y = run1(&t, in, n_in);
            for (int64_t e = 0; e < n; e++) {
                float v = F(x)[e];
                if (in[1] && v < l)
                    v = l;
                if (in[2] && v > h)
                    v = h;
                if (!(F(y)[e] == v || (isnan(v) && isnan(F(y)[e]))))
                    fail_msg("Clip opset %d set %d element %lld: %g, expected %g", opset, set,
                             (long long)e, F(y)[e], v);
            }
            ql_tensor_free(y);
            tu_node_free(&t);
            ql_tensor_free(bl);
            ql_tensor_free(bh);
        }
    /* a bound that is not a scalar */
    ql_tensor *bad = ql_tensor_new(QL_F32, 1, &two);
    const ql_tensor *in[3] = {x, bad, thi};
    tu_node t = tu_node_new("Clip", 13, 3, in, NULL, 1);
    run_fails(&t, in, 3, QL_ERR_SHAPE, "min must be a scalar");
    tu_node_free(&t);
    ql_tensor_free(bad);
    ql_tensor_free(tlo);
    ql_tensor_free(thi);
    ql_tensor_free(x);
}

/* ---------------------------------------------------------------------------
 * Softmax
 * ------------------------------------------------------------------------- */
/* Naive softmax over groups: element e belongs to group (outer, inner) and
 * groups span [axis, axis+span) of the dims. */
static void ref_softmax(const ql_tensor *x, int ax, int legacy, double *want)
{
    int64_t outer = 1, len = 1, inner = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (i < ax)
            outer *= x->dims[i];
        else if (i == ax || legacy)
            len *= x->dims[i];
        else
            inner *= x->dims[i];
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double m = -INFINITY, s = 0;
            for (int64_t k = 0; k < len; k++)
                m = fmax(m, F(x)[(o * len + k) * inner + i]);
            for (int64_t k = 0; k < len; k++)
                s += exp(F(x)[(o * len + k) * inner + i] - m);
            for (int64_t k = 0; k < len; k++)
                want[(o * len + k) * inner + i] = exp(F(x)[(o * len + k) * inner + i] - m) / s;
        }
}

static void test_softmax_opsets(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t d[4];
    } shapes[] = {{1, {7}}, {3, {2, 3, 4}}, {4, {2, 3, 5, 300}}, {2, {3000, 10}}, {3, {4, 700, 3}}};
    static const int opsets[] = {1, 11, 13};
    tu_rng r = {51};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        ql_tensor *x = tu_rand(&r, shapes[s].ndim, shapes[s].d, -3, 3);
        F(x)[0] = 80.0f; /* exp overflows without the max shift */
        const ql_tensor *in[1] = {x};
        int64_t n = ql_tensor_numel(x);
        double *want = malloc((size_t)n * sizeof *want);
        for (size_t o = 0; o < 3; o++)
            for (int axis = -shapes[s].ndim - 1; axis <= shapes[s].ndim; axis++) {
                int legacy = opsets[o] < 13, ax = axis < 0 ? axis + shapes[s].ndim : axis;
                /* axis == rank stands for "no attribute" (the opset's default) */
                int dflt = axis == shapes[s].ndim;
                if (dflt)
                    ax = legacy ? 1 : shapes[s].ndim - 1;
                tu_node t = tu_node_new("Softmax", opsets[o], 1, in, NULL, 1);
                if (!dflt)
                    tu_attr_int(&t, "axis", axis);
                if (ax < 0 || ax >= shapes[s].ndim) {
                    run_fails(&t, in, 1, QL_ERR_ARG, "out of range");
                    tu_node_free(&t);
                    continue;
                }
                ql_tensor *y = run1(&t, in, 1);
                ref_softmax(x, ax, legacy, want);
                char what[64];
                snprintf(what, sizeof what, "Softmax opset %d shape %zu axis %d", opsets[o], s,
                         axis);
                expect_close(what, F(y), want, n, 1e-5, 1e-6);
                ql_tensor_free(y);
                tu_node_free(&t);
            }
        free(want);
        ql_tensor_free(x);
    }
}

/* ---------------------------------------------------------------------------
 * BatchNormalization
 * ------------------------------------------------------------------------- */
static void test_batchnorm(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t d[5];
    } shapes[] = {
        {4, {2, 3, 2, 5}}, {2, {7, 5}}, {3, {2, 4, 9}}, {5, {1, 2, 3, 4, 5}}, {4, {2, 8, 61, 67}}};
    static const int opsets[] = {6, 7, 9, 14, 15};
    tu_rng r = {61};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t c = shapes[s].d[1];
        ql_tensor *x = tu_rand(&r, shapes[s].ndim, shapes[s].d, -2, 2),
                  *sc = tu_rand(&r, 1, &c, 0.5f, 2), *b = tu_rand(&r, 1, &c, -1, 1),
                  *mu = tu_rand(&r, 1, &c, -1, 1), *var = tu_rand(&r, 1, &c, 0.1f, 2);
        const ql_tensor *in[5] = {x, sc, b, mu, var};
        int cst[5] = {0, 1, 1, 1, (int)(s & 1)};
        int64_t n = ql_tensor_numel(x), plane = n / (shapes[s].d[0] * c);
        double *want = malloc((size_t)n * sizeof *want);
        for (size_t o = 0; o < 5; o++) {
            float eps = o & 1 ? 1e-3f : 1e-5f;
            tu_node t = tu_node_new("BatchNormalization", opsets[o], 5, in, cst, 1);
            if (o & 1)
                tu_attr_float(&t, "epsilon", eps);
            if (opsets[o] < 7)
                tu_attr_int(&t, "is_test", 1);
            if (opsets[o] >= 14)
                tu_attr_int(&t, "training_mode", 0);
            ql_tensor *y = run1(&t, in, 5);
            for (int64_t e = 0; e < n; e++) {
                int64_t ch = e / plane % c;
                want[e] =
                    (F(x)[e] - F(mu)[ch]) / sqrt((double)F(var)[ch] + eps) * F(sc)[ch] + F(b)[ch];
            }
            expect_close("BatchNormalization", F(y), want, n, 1e-5, 1e-5);
            ql_tensor_free(y);
            tu_node_free(&t);
        }
        free(want);
        ql_tensor *ts[] = {x, sc, b, mu, var};
        for (int i = 0; i < 5; i++)
            ql_tensor_free(ts[i]);
    }
}

/* Training mode (opset 14/15): batch mean and population variance over all
 * axes but 1, Y normalised with them, running statistics blended with
 * momentum. Reference in double; Y rtol 1e-5 atol 1e-5 as above, the
 * statistics rtol 1e-6 atol 1e-6 (one rounding to f32 of a double sum). */
static void test_batchnorm_training(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t d[5];
    } shapes[] = {{4, {3, 5, 7, 3}}, {2, {9, 4}}, {3, {2, 6, 11}}, {4, {2, 3, 70, 90}}};
    tu_rng r = {77};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t c = shapes[s].d[1], N = shapes[s].d[0];
        ql_tensor *x = tu_rand(&r, shapes[s].ndim, shapes[s].d, -2, 3),
                  *sc = tu_rand(&r, 1, &c, 0.5f, 2), *b = tu_rand(&r, 1, &c, -1, 1),
                  *mu = tu_rand(&r, 1, &c, -1, 1), *var = tu_rand(&r, 1, &c, 0.1f, 2);
        /* a channel offset so that the mean matters */
        int64_t n = ql_tensor_numel(x), plane = n / (N * c);
        for (int64_t e = 0; e < n; e++)
            F(x)[e] += (float)(e / plane % c);
        const ql_tensor *in[5] = {x, sc, b, mu, var};
        int cst[5] = {0, 1, 1, 1, 1};
        double *want = malloc((size_t)n * sizeof *want), *bm = calloc((size_t)c, sizeof *bm),
               *bv = calloc((size_t)c, sizeof *bv);
        for (int64_t e = 0; e < n; e++)
            bm[e / plane % c] += F(x)[e];
        for (int64_t k = 0; k < c; k++)
            bm[k] /= (double)(N * plane);
        for (int64_t e = 0; e < n; e++) {
            double dv = F(x)[e] - bm[e / plane % c];
            bv[e / plane % c] += dv * dv;
        }
        for (int64_t k = 0; k < c; k++)
            bv[k] /= (double)(N * plane);
        for (int o = 0; o < 2; o++) {
            int opset = o ? 15 : 14, n_out = s == 1 ? 1 : 3;
            float eps = o ? 1e-2f : 1e-5f, mom = o ? 0.6f : 0.9f;
            ql_tensor *outs[2][3] = {{NULL}};
            for (int th = 0; th < 2; th++) {
                tu_node t = tu_node_new("BatchNormalization", opset, 5, in, cst, n_out);
                tu_attr_int(&t, "training_mode", 1);
                if (o) {
                    tu_attr_float(&t, "epsilon", eps);
                    tu_attr_float(&t, "momentum", mom);
                }
                ql_error err = {{0}};
                if (tu_node_run(&t, in, 5, th + 1, outs[th], &err) != QL_OK)
                    fail_msg("run: %s", err.msg);
                tu_node_free(&t);
            }
            for (int j = 0; j < n_out; j++)
                assert_memory_equal(outs[0][j]->data, outs[1][j]->data,
                                    ql_tensor_nbytes(outs[0][j]));
            for (int64_t e = 0; e < n; e++) {
                int64_t ch = e / plane % c;
                want[e] = (F(x)[e] - bm[ch]) / sqrt(bv[ch] + eps) * F(sc)[ch] + F(b)[ch];
            }
            expect_close("BatchNormalization training Y", F(outs[0][0]), want, n, 1e-5, 1e-5);
            if (n_out == 3) {
                for (int64_t k = 0; k < c; k++)
                    want[k] = F(mu)[k] * (double)mom + bm[k] * (1.0 - (double)mom);
                expect_close("running_mean", F(outs[0][1]), want, c, 1e-6, 1e-6);
                for (int64_t k = 0; k < c; k++)
                    want[k] = F(var)[k] * (double)mom + bv[k] * (1.0 - (double)mom);
                expect_close("running_var", F(outs[0][2]), want, c, 1e-6, 1e-6);
            }
            for (int th = 0; th < 2; th++)
                for (int j = 0; j < n_out; j++)
                    ql_tensor_free(outs[th][j]);
        }
        free(want);
        free(bm);
        free(bv);
        ql_tensor *ts[] = {x, sc, b, mu, var};
        for (int i = 0; i < 5; i++)
            ql_tensor_free(ts[i]);
    }
}

static void test_batchnorm_errors(void **state)
{
    (void)state;
    int64_t d[4] = {2, 3, 2, 2}, c = 3, c4 = 4;
    ql_tensor *x = ql_tensor_new(QL_F32, 4, d), *p = ql_tensor_new(QL_F32, 1, &c),
              *q = ql_tensor_new(QL_F32, 1, &c4);
    const ql_tensor *in[5] = {x, p, p, p, p};
    int cst[5] = {0, 1, 1, 1, 1};
    tu_node t = tu_node_new("BatchNormalization", 15, 5, in, cst, 3); /* running mean/var outputs */
    run_fails(&t, in, 5, QL_ERR_UNSUPPORTED, "statistics outputs need training_mode=1");
    tu_node_free(&t);
    t = tu_node_new("BatchNormalization", 15, 5, in, cst, 4);
    tu_attr_int(&t, "training_mode", 1);
    run_fails(&t, in, 5, QL_ERR_ARG, "at most 3 outputs");
    tu_node_free(&t);
    t = tu_node_new("BatchNormalization", 6, 5, in, cst, 1); /* is_test defaults to 0 */
    run_fails(&t, in, 5, QL_ERR_UNSUPPORTED, "is_test=0 (training) is not supported");
    tu_node_free(&t);
    t = tu_node_new("BatchNormalization", 7, 5, in, cst, 1);
    tu_attr_int(&t, "spatial", 0);
    run_fails(&t, in, 5, QL_ERR_UNSUPPORTED, "spatial=0");
    tu_node_free(&t);
    const ql_tensor *in2[5] = {x, p, q, p, p};
    t = tu_node_new("BatchNormalization", 15, 5, in2, cst, 1);
    run_fails(&t, in2, 5, QL_ERR_SHAPE, "B has shape [4]; expected [3]");
    tu_node_free(&t);
    ql_tensor_free(x);
    ql_tensor_free(p);
    ql_tensor_free(q);
}

/* ---------------------------------------------------------------------------
 * ReduceMean
 * ------------------------------------------------------------------------- */
/* Naive mean over the axes in mask, keepdims layout-independent (the
 * output's linear order is the kept dims' row-major order either way). */
static void ref_reduce(const ql_tensor *x, const int *mask, double *want, int64_t outn)
{
    double *sum = calloc((size_t)outn, sizeof *sum);
    int64_t count = 1, total = ql_tensor_numel(x);
    for (int i = 0; i < x->ndim; i++)
        if (mask[i])
            count *= x->dims[i];
    for (int64_t e = 0; e < total; e++) {
        int64_t rem = e, o = 0, mul = 1;
        for (int i = x->ndim - 1; i >= 0; i--) {
            int64_t idx = rem % x->dims[i];
            rem /= x->dims[i];
            if (!mask[i]) {
                o += idx * mul;
                mul *= x->dims[i];
            }
        }
        sum[o] += F(x)[e];
    }
    for (int64_t i = 0; i < outn; i++)
        want[i] = count ? sum[i] / (double)count : NAN;
    free(sum);
}

static void test_reducemean(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t d[5];
    } shapes[] = {{1, {37}},           {3, {2, 3, 4}},       {4, {2, 3, 2, 5}},
                  {4, {2, 1, 600, 3}}, {5, {2, 3, 1, 4, 5}}, {2, {3, 1100}},
                  {4, {4, 64, 7, 7}},  {3, {2, 0, 3}}};
    tu_rng r = {71};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int nd = shapes[s].ndim;
        ql_tensor *x = tu_rand(&r, nd, shapes[s].d, -2, 2);
        const ql_tensor *in1[1] = {x};
        /* every subset of axes (negative spellings on odd subsets), each keepdims, both opsets */
        for (int sub = 0; sub < (1 << nd); sub++)
            for (int variant = 0; variant < 4; variant++) {
                int keep = variant & 1, v18 = variant >> 1, mask[QL_MAX_DIMS] = {0}, cnt = 0;
                int64_t axes[QL_MAX_DIMS];
                for (int i = 0; i < nd; i++)
                    if (sub >> i & 1) {
                        axes[cnt++] = (sub & 1) ? i - nd : i;
                        mask[i] = 1;
                    }
                if (sub == 0) /* no axes: all of them */
                    for (int i = 0; i < nd; i++)
                        mask[i] = 1;
                int64_t cnt64 = cnt;
                ql_tensor *axt = ql_tensor_wrap(QL_I64, 1, &cnt64, axes);
                const ql_tensor *in2[2] = {x, axt};
                int cst[2] = {0, 1};
                tu_node t = v18 ? tu_node_new("ReduceMean", 18, cnt ? 2 : 1, in2, cst, 1)
                                : tu_node_new("ReduceMean", 13, 1, in1, NULL, 1);
                if (!v18 && cnt)
                    tu_attr_ints(&t, "axes", cnt, axes);
                tu_attr_int(&t, "keepdims", keep);
                ql_tensor *y = run1(&t, in2, v18 && cnt ? 2 : 1);
                int k = 0;
                for (int i = 0; i < nd; i++)
                    if (!mask[i] || keep) {
                        assert_int_equal(y->dims[k], mask[i] ? 1 : shapes[s].d[i]);
                        k++;
                    }
                assert_int_equal(y->ndim, k);
                int64_t outn = ql_tensor_numel(y);
                double *want = malloc((size_t)(outn ? outn : 1) * sizeof *want);
                ref_reduce(x, mask, want, outn);
                char what[80];
                snprintf(what, sizeof what, "ReduceMean shape %zu axes subset %d variant %d", s,
                         sub, variant);
                expect_close(what, F(y), want, outn, 1e-5, 1e-6);
                free(want);
                ql_tensor_free(y);
                tu_node_free(&t);
                ql_tensor_free(axt);
            }
        ql_tensor_free(x);
    }
}

static void test_reducemean_opset18(void **state)
{
    (void)state;
    tu_rng r = {73};
    int64_t d[3] = {2, 3, 4}, zero = 0, one = 1, two = 2;
    ql_tensor *x = tu_rand(&r, 3, d, -2, 2);
    /* empty axes with noop_with_empty_axes: the input unchanged */
    int64_t none[1] = {0}, ax1 = -2, dup[2] = {1, -2}, far = 3;
    ql_tensor *empty = ql_tensor_wrap(QL_I64, 1, &zero, none);
    const ql_tensor *in[2] = {x, empty};
    int cst[2] = {0, 1};
    for (int with_input = 0; with_input < 2; with_input++) {
        tu_node t = tu_node_new("ReduceMean", 18, 1 + with_input, in, cst, 1);
        tu_attr_int(&t, "noop_with_empty_axes", 1);
        ql_tensor *y = run1(&t, in, 1 + with_input);
        assert_true(ql_shape_equal(y->ndim, y->dims, 3, d));
        assert_memory_equal(y->data, x->data, ql_tensor_nbytes(x));
        ql_tensor_free(y);
        tu_node_free(&t);
    }
    /* axes fed at run time (not a constant): shapes resolved when it runs */
    ql_tensor *axt = ql_tensor_wrap(QL_I64, 1, &one, &ax1);
    const ql_tensor *in2[2] = {x, axt};
    tu_node t = tu_node_new("ReduceMean", 18, 2, in2, NULL, 1);
    tu_attr_int(&t, "keepdims", 0);
    ql_tensor *y = run1(&t, in2, 2);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->dims[1], 4);
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int b = 0; b < 3; b++)
                s += F(x)[(a * 3 + b) * 4 + c];
            assert_true(tu_close(F(y)[a * 4 + c], (float)(s / 3), 1e-6f, 1e-7f));
        }
    ql_tensor_free(y);
    tu_node_free(&t);
    /* errors: a repeated axis, an axis out of range */
    ql_tensor *dupt = ql_tensor_wrap(QL_I64, 1, &two, dup),
              *fart = ql_tensor_wrap(QL_I64, 1, &one, &far);
    const ql_tensor *in3[2] = {x, dupt}, *in4[2] = {x, fart};
    t = tu_node_new("ReduceMean", 18, 2, in3, cst, 1);
    run_fails(&t, in3, 2, QL_ERR_ARG, "axis -2 is repeated");
    tu_node_free(&t);
    t = tu_node_new("ReduceMean", 18, 2, in4, cst, 1);
    run_fails(&t, in4, 2, QL_ERR_ARG, "axis 3 is out of range for rank 3");
    tu_node_free(&t);
    ql_tensor_free(dupt);
    ql_tensor_free(fart);
    ql_tensor_free(axt);
    ql_tensor_free(empty);
    ql_tensor_free(x);
}

/* ---------------------------------------------------------------------------
 * Relu/Clip fused by the executor into Add, PRelu and BatchNormalization
 * ------------------------------------------------------------------------- */
static bool observe_all(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    (void)g;
    (void)node;
    (void)value;
    (void)t;
    ++*(int *)user;
    return true;
}

/* Runs `producer` followed by `act` (Relu, or Clip to [-0.5, 1]) with and
 * without an observer (which turns fusion off): same bits, and both equal
 * the activation applied to the producer's own output. */
static void check_fusion(const char *producer, int opset, int n_in, const ql_tensor *const *in,
                         const int *cst, const char *act)
{
    tu_node t = tu_node_new(producer, opset, n_in, in, cst, 1);
    ql_tensor *plain = run1(&t, in, n_in);
    /* append the activation after the producer's output */
    ql_graph *g = t.g;
    int mid = g->outputs[0], lo = ql_graph_value(g, "lo"), hi = ql_graph_value(g, "hi"),
        out = ql_graph_value(g, "act_out");
    int64_t one = 1;
    g->values[lo].constant = ql_tensor_new(QL_F32, 0, &one);
    g->values[hi].constant = ql_tensor_new(QL_F32, 0, &one);
    F(g->values[lo].constant)[0] = -0.5f;
    F(g->values[hi].constant)[0] = 1.0f;
    int ain[3] = {mid, lo, hi};
    ql_graph_add_node(g, "act", act, "", strcmp(act, "Clip") ? 1 : 3, ain, 1, &out);
    g->outputs[0] = out;
    ql_error err = {{0}};
    ql_tensor *y[3] = {NULL, NULL, NULL};
    int seen = 0;
    for (int k = 0; k < 3; k++) {
        ql_exec *x = NULL;
        ql_exec_opts o = {.n_threads = k == 2 ? 2 : 1, .observer = k == 1 ? observe_all : NULL,
                          .observer_user = &seen};
        ql_status st;
        if ((st = ql_graph_toposort(g, &err)) || (st = ql_graph_bind_ops(g, &err)) ||
            (st = ql_graph_infer_shapes(g, &err)) || (st = ql_graph_prepare(g, &err)) ||
            (st = ql_exec_new(g, &o, &x, &err)))
            fail_msg("%s + %s: %s", producer, act, err.msg);
        const ql_tensor *feeds[8];
        int nf = 0;
        for (int i = 0; i < n_in; i++)
            if (!cst || !cst[i])
                feeds[nf++] = in[i];
        if (ql_exec_run(x, feeds, &y[k], &err) != QL_OK)
            fail_msg("%s + %s: %s", producer, act, err.msg);
        ql_exec_free(x);
    }
    assert_int_equal(seen, 2); /* the observed run saw both tensors */
    int64_t n = ql_tensor_numel(plain);
    for (int64_t e = 0; e < n; e++) {
        float v = F(plain)[e], lo_v = strcmp(act, "Clip") ? 0.0f : -0.5f;
        float want = v < lo_v ? lo_v : (!strcmp(act, "Clip") && v > 1.0f ? 1.0f : v);
        if (F(y[0])[e] != want)
            fail_msg("%s + %s element %lld: %g, expected %g", producer, act, (long long)e,
                     F(y[0])[e], want);
    }
    assert_memory_equal(y[0]->data, y[1]->data, ql_tensor_nbytes(plain));
    assert_memory_equal(y[0]->data, y[2]->data, ql_tensor_nbytes(plain));
    for (int k = 0; k < 3; k++)
        ql_tensor_free(y[k]);
    ql_tensor_free(plain);
    tu_node_free(&t);
}

static void test_fused_activation(void **state)
{
    (void)state;
    tu_rng r = {81};
    int64_t d[4] = {2, 8, 30, 31}, c = 8, cd[3] = {8, 1, 1};
    ql_tensor *a = tu_rand(&r, 4, d, -2, 2), *b = tu_rand(&r, 4, d, -2, 2),
              *sl = tu_rand(&r, 3, cd, 0, 1);
    ql_tensor *sc = tu_rand(&r, 1, &c, 0.5f, 2), *bb = tu_rand(&r, 1, &c, -1, 1),
              *mu = tu_rand(&r, 1, &c, -1, 1), *var = tu_rand(&r, 1, &c, 0.1f, 2);
    const ql_tensor *ab[2] = {a, b}, *as[2] = {a, sl}, *bn[5] = {a, sc, bb, mu, var};
    int cst2[2] = {0, 1}, cst5[5] = {0, 1, 1, 1, 1};
    static const char *const acts[] = {"Relu", "Clip"};
    for (int k = 0; k < 2; k++) {
        check_fusion("Add", 13, 2, ab, NULL, acts[k]);
        check_fusion("Mul", 13, 2, ab, NULL, acts[k]);
        check_fusion("PRelu", 13, 2, as, cst2, acts[k]);
        check_fusion("BatchNormalization", 13, 5, bn, cst5, acts[k]);
    }
    ql_tensor *ts[] = {a, b, sl, sc, bb, mu, var};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        ql_tensor_free(ts[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_broadcast),  cmocka_unit_test(test_binary_integers),
        cmocka_unit_test(test_binary_errors),     cmocka_unit_test(test_binary_legacy),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_int_relu_clip),     cmocka_unit_test(test_clip_variants),
        cmocka_unit_test(test_softmax_opsets),    cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_batchnorm_training),
        cmocka_unit_test(test_batchnorm_errors),  cmocka_unit_test(test_reducemean),
        cmocka_unit_test(test_reducemean_opset18), cmocka_unit_test(test_fused_activation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
