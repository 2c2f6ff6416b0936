/* Unit tests: shape and data-movement ops (Reshape, Flatten, Squeeze,
 * Unsqueeze, Shape, Identity, Dropout, Constant, Concat, Split, Slice,
 * Transpose, Pad, Gather) and Resize, against brute-force references
 * written here, across opsets, dtypes, negative axes and steps, static
 * shape inference with unknown dims, and error messages. Data movement is
 * compared bit for bit; Resize interpolation within 1e-5 of |want| + the
 * data range (f32 weights and sums against a double reference, data in
 * [-100, 100]). Every run is repeated
 * with 1 and 2 threads, whose outputs must be bit-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdatomic.h>
#include <time.h>

#include "engine/pool.h"
#include "testutil.h"

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */
static const ql_dtype all_dtypes[] = {QL_F32, QL_U8, QL_I8, QL_I16, QL_I32, QL_I64, QL_BOOL};
#define N_DTYPES ((int)(sizeof all_dtypes / sizeof all_dtypes[0]))

/* A tensor of dtype dt with distinct-ish deterministic contents. */
static ql_tensor *mk(tu_rng *r, ql_dtype dt, int nd, const int64_t *dims)
{
    ql_tensor *t = ql_tensor_new(dt, nd, dims);
    int64_t n = ql_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = tu_next(r);
        switch (dt) {
        case QL_F32: ((float *)t->data)[i] = (float)(int32_t)(v % 20001) / 100.0f - 100.0f; break;
        case QL_U8: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
        case QL_I8: ((int8_t *)t->data)[i] = (int8_t)v; break;
        case QL_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)(v & 1); break;
        case QL_I16: ((int16_t *)t->data)[i] = (int16_t)v; break;
        case QL_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
        default: ((int64_t *)t->data)[i] = (int64_t)v * 2654435761LL - (1LL << 40); break;
        }
    }
    return t;
}

static ql_tensor *i64s(int n, const int64_t *v)
{
    int64_t d = n;
    ql_tensor *t = ql_tensor_new(QL_I64, 1, &d);
    memcpy(t->data, v, (size_t)n * sizeof *v);
    return t;
}

static ql_tensor *f32s(int n, const float *v)
{
    int64_t d = n;
    ql_tensor *t = ql_tensor_new(QL_F32, 1, &d);
    memcpy(t->data, v, (size_t)n * sizeof *v);
    return t;
}

static ql_tensor *scalar_of(ql_dtype dt, double v)
{
    ql_tensor *t = ql_tensor_new(dt, 0, NULL);
    switch (dt) {
    case QL_F32: *(float *)t->data = (float)v; break;
    case QL_BOOL: *(uint8_t *)t->data = v != 0; break;
    case QL_U8: *(uint8_t *)t->data = (uint8_t)v; break;
    case QL_I8: *(int8_t *)t->data = (int8_t)v; break;
    case QL_I16: *(int16_t *)t->data = (int16_t)v; break;
    case QL_I32: *(int32_t *)t->data = (int32_t)v; break;
    default: *(int64_t *)t->data = (int64_t)v; break;
    }
    return t;
}

static void free_all(ql_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        ql_tensor_free(t[i]);
}

static int64_t ravel(int nd, const int64_t *dims, const int64_t *idx)
{
    int64_t off = 0;
    for (int i = 0; i < nd; i++)
        off = off * dims[i] + idx[i];
    return off;
}

static void unravel(int64_t e, int nd, const int64_t *dims, int64_t *idx)
{
    for (int i = nd - 1; i >= 0; i--) {
        idx[i] = e % dims[i];
        e /= dims[i];
    }
}

static size_t esz(const ql_tensor *t) { return ql_dtype_info(t->dtype)->size; }

static void check_shape(const ql_tensor *t, int nd, const int64_t *dims, const char *what)
{
    char a[96], b[96];
    if (!ql_shape_equal(t->ndim, t->dims, nd, dims))
        fail_msg("%s: shape %s, expected %s", what, ql_shape_str(t->ndim, t->dims, a, sizeof a),
                 ql_shape_str(nd, dims, b, sizeof b));
}

/* Runs the node with 1 and 2 threads; outputs must agree bit for bit.
 * Returns the 1-thread outputs in outs (caller frees). */
static void run2(tu_node *t, const ql_tensor *const *in, int n_in, int n_out, ql_tensor **outs,
                 const char *what)
{
    ql_error err = {{0}};
    ql_tensor *o2[8] = {0};
    if (tu_node_run(t, in, n_in, 1, outs, &err) != QL_OK)
        fail_msg("%s: %s", what, err.msg);
    if (tu_node_run(t, in, n_in, 2, o2, &err) != QL_OK)
        fail_msg("%s (2 threads): %s", what, err.msg);
    for (int j = 0; j < n_out; j++) {
        check_shape(o2[j], outs[j]->ndim, outs[j]->dims, what);
        if (memcmp(outs[j]->data, o2[j]->data, ql_tensor_nbytes(outs[j])) != 0)
            fail_msg("%s: output %d differs between 1 and 2 threads", what, j);
        ql_tensor_free(o2[j]);
    }
}

/* Runs a node that must fail; the message must mention the node and `want`. */
static void run_fails(tu_node *t, const ql_tensor *const *in, int n_in, const char *want)
{
    ql_error err = {{0}};
    ql_tensor *o[8] = {0};
    ql_status st = tu_node_run(t, in, n_in, 1, o, &err);
    if (st == QL_OK)
        fail_msg("expected an error mentioning '%s'", want);
    if (!strstr(err.msg, "node 'node'") || !strstr(err.msg, want))
        fail_msg("error '%s' lacks the node name or '%s'", err.msg, want);
}

/* Calls the op's infer directly on headers (static inference: data only
 * for constants). */
static ql_status infer_only(tu_node *t, const ql_tensor *const *in, int n_out, ql_tensor *outs,
                            ql_error *err)
{
    ql_node *n = &t->g->nodes[t->node];
    n->op = ql_op_find(n->op_type, "");
    assert_true(n->op >= 0);
    ql_tensor *o[8];
    for (int j = 0; j < n_out; j++) {
        memset(&outs[j], 0, sizeof outs[j]);
        outs[j].ndim = -1;
        o[j] = &outs[j];
    }
    return ql_op_get(n->op)->infer(n, in, o, err);
}

static ql_tensor hdr(ql_dtype dt, int nd, const int64_t *dims)
{
    ql_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = nd;
    if (nd > 0)
        memcpy(t.dims, dims, (size_t)nd * sizeof *dims);
    return t;
}

/* ---------------------------------------------------------------------------
 * Reshape, Flatten, Squeeze, Unsqueeze, Shape
 * ------------------------------------------------------------------------- */
static void test_reshape(void **state)
{
    (void)state;
    tu_rng r = {1};
    static const struct {
        int xn, sn;
        int64_t xd[4], s[4];
        int allowzero;
        int yn;
        int64_t yd[4];
    } cases[] = {
        {3, 2, {2, 3, 4}, {4, -1}, 0, 2, {4, 6}},
        {3, 3, {2, 3, 4}, {0, -1, 2}, 0, 3, {2, 6, 2}},
        {3, 1, {2, 3, 4}, {-1}, 0, 1, {24}},
        {4, 3, {1, 3, 4, 5}, {0, 0, -1}, 0, 3, {1, 3, 20}},
        {2, 4, {6, 4}, {2, 3, 2, 2}, 0, 4, {2, 3, 2, 2}},
        {3, 2, {0, 3, 4}, {3, 0}, 1, 2, {3, 0}},
        {3, 3, {0, 3, 4}, {0, 4, 3}, 0, 3, {0, 4, 3}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int d = 0; d < N_DTYPES; d += 3) {
            ql_tensor *x = mk(&r, all_dtypes[d], cases[c].xn, cases[c].xd),
                      *s = i64s(cases[c].sn, cases[c].s);
            const ql_tensor *in[2] = {x, s};
            int is_const[2] = {0, (int)(c & 1)};
            tu_node t = tu_node_new("Reshape", 14, 2, in, is_const, 1);
            if (cases[c].allowzero)
                tu_attr_int(&t, "allowzero", 1);
            ql_tensor *y;
            run2(&t, in, 2, 1, &y, "Reshape");
            check_shape(y, cases[c].yn, cases[c].yd, "Reshape");
            assert_memory_equal(y->data, x->data, ql_tensor_nbytes(x));
            ql_tensor_free(y);
            ql_tensor_free(x);
            ql_tensor_free(s);
            tu_node_free(&t);
        }
    /* element count mismatch, two -1, 0 past the input rank */
    static const int64_t bad[][3] = {{5, -1, 0}, {-1, -1, 1}, {2, 3, 5}};
    static const char *const why[] = {"cannot reshape", "more than one -1", "cannot reshape"};
    int64_t xd[2] = {4, 6};
    for (int b = 0; b < 3; b++) {
        ql_tensor *x = mk(&r, QL_F32, 2, xd), *s = i64s(b == 0 ? 2 : 3, bad[b]);
        const ql_tensor *in[2] = {x, s};
        int is_const[2] = {0, 1};
        tu_node t = tu_node_new("Reshape", 14, 2, in, is_const, 1);
        run_fails(&t, in, 2, why[b]);
        ql_tensor_free(x);
        ql_tensor_free(s);
        tu_node_free(&t);
    }
}

static void test_reshape_static(void **state)
{
    (void)state;
    ql_error err;
    ql_tensor y[1];
    int64_t xd[4] = {-1, 16, 4, 4};
    ql_tensor x = hdr(QL_F32, 4, xd);
    static const struct {
        int sn;
        int64_t s[3];
        int yn;
        int64_t yd[3];
    } cases[] = {
        {2, {0, -1}, 2, {-1, 256}},     /* the unknown batch is copied: -1 is knowable */
        {2, {-1, 256}, 2, {-1, 256}},   /* the -1 absorbs the unknown batch */
        {3, {0, 16, -1}, 3, {-1, 16, 16}},
        {2, {4, -1}, 2, {4, -1}},       /* depends on the batch */
        {3, {0, 0, 16}, 3, {-1, 16, 16}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ql_tensor *s = i64s(cases[c].sn, cases[c].s);
        const ql_tensor *in[2] = {&x, s};
        tu_node t = tu_node_new("Reshape", 14, 2, in, NULL, 1);
        assert_int_equal(infer_only(&t, in, 1, y, &err), QL_OK);
        check_shape(&y[0], cases[c].yn, cases[c].yd, "Reshape static");
        ql_tensor_free(s);
        tu_node_free(&t);
    }
    /* a shape computed at run time: rank from its length, extents unknown */
    int64_t three = 3, unk[3] = {-1, -1, -1};
    ql_tensor s = hdr(QL_I64, 1, &three);
    const ql_tensor *in[2] = {&x, &s};
    tu_node t = tu_node_new("Reshape", 14, 2, in, NULL, 1);
    assert_int_equal(infer_only(&t, in, 1, y, &err), QL_OK);
    check_shape(&y[0], 3, unk, "Reshape dynamic shape");
    tu_node_free(&t);
}

static void test_flatten(void **state)
{
    (void)state;
    tu_rng r = {2};
    int64_t xd[4] = {2, 3, 4, 5};
    for (int axis = -4; axis <= 4; axis++) {
        ql_tensor *x = mk(&r, QL_I16, 4, xd);
        const ql_tensor *in[1] = {x};
        tu_node t = tu_node_new("Flatten", 13, 1, in, NULL, 1);
        tu_attr_int(&t, "axis", axis);
        ql_tensor *y;
        run2(&t, in, 1, 1, &y, "Flatten");
        int a = axis < 0 ? axis + 4 : axis;
        int64_t want[2] = {1, 1};
        for (int i = 0; i < 4; i++)
            want[i >= a] *= xd[i];
        check_shape(y, 2, want, "Flatten");
        assert_memory_equal(y->data, x->data, ql_tensor_nbytes(x));
        ql_tensor_free(y);
        ql_tensor_free(x);
        tu_node_free(&t);
    }
    ql_tensor *x = mk(&r, QL_F32, 4, xd);
    const ql_tensor *in[1] = {x};
    tu_node t = tu_node_new("Flatten", 13, 1, in, NULL, 1);
    tu_attr_int(&t, "axis", 5);
    run_fails(&t, in, 1, "axis 5 out of range");
    tu_node_free(&t);
    ql_tensor_free(x);
}

static void test_squeeze_unsqueeze(void **state)
{
    (void)state;
    tu_rng r = {3};
    int64_t xd[5] = {1, 3, 1, 4, 1};
    static const struct {
        int na;
        int64_t axes[3];
        int yn;
        int64_t yd[5];
    } sq[] = {
        {1, {0}, 4, {3, 1, 4, 1}},   {2, {-1, 2}, 3, {1, 3, 4}},
        {3, {0, 2, 4}, 2, {3, 4}},   {0, {0}, 2, {3, 4}}, /* no axes: every 1 */
    };
    for (size_t c = 0; c < 4; c++)
        for (int opset = 11; opset <= 13; opset += 2) {
            ql_tensor *x = mk(&r, QL_I64, 5, xd), *a = sq[c].na ? i64s(sq[c].na, sq[c].axes) : NULL;
            const ql_tensor *in[2] = {x, a};
            int is_const[2] = {0, 1};
            tu_node t = tu_node_new("Squeeze", opset, opset >= 13 && a ? 2 : 1, in, is_const, 1);
            if (opset < 13 && a)
                tu_attr_ints(&t, "axes", sq[c].na, sq[c].axes);
            ql_tensor *y;
            run2(&t, in, opset >= 13 && a ? 2 : 1, 1, &y, "Squeeze");
            check_shape(y, sq[c].yn, sq[c].yd, "Squeeze");
            assert_memory_equal(y->data, x->data, ql_tensor_nbytes(x));
            ql_tensor_free(y);
            ql_tensor_free(x);
            ql_tensor_free(a);
            tu_node_free(&t);
        }
    int64_t ud[2] = {3, 4};
    static const struct {
        int na;
        int64_t axes[3];
        int yn;
        int64_t yd[5];
    } us[] = {
        {1, {0}, 3, {1, 3, 4}},          {1, {-1}, 3, {3, 4, 1}},
        {2, {3, 0}, 4, {1, 3, 4, 1}},    {3, {1, -1, 3}, 5, {3, 1, 4, 1, 1}},
    };
    for (size_t c = 0; c < 4; c++)
        for (int opset = 11; opset <= 13; opset += 2) {
            ql_tensor *x = mk(&r, QL_F32, 2, ud), *a = i64s(us[c].na, us[c].axes);
            const ql_tensor *in[2] = {x, a};
            int is_const[2] = {0, 1};
            tu_node t = tu_node_new("Unsqueeze", opset, opset >= 13 ? 2 : 1, in, is_const, 1);
            if (opset < 13)
                tu_attr_ints(&t, "axes", us[c].na, us[c].axes);
            ql_tensor *y;
            run2(&t, in, opset >= 13 ? 2 : 1, 1, &y, "Unsqueeze");
            check_shape(y, us[c].yn, us[c].yd, "Unsqueeze");
            assert_memory_equal(y->data, x->data, ql_tensor_nbytes(x));
            ql_tensor_free(y);
            ql_tensor_free(x);
            ql_tensor_free(a);
            tu_node_free(&t);
        }
    /* squeezing an axis that is not 1; repeated unsqueeze axes */
    int64_t one = 1, dup[2] = {0, 0};
    ql_tensor *x = mk(&r, QL_F32, 5, xd), *a = i64s(1, &one), *a2 = i64s(2, dup);
    const ql_tensor *in[2] = {x, a};
    int is_const[2] = {0, 1};
    tu_node t = tu_node_new("Squeeze", 13, 2, in, is_const, 1);
    run_fails(&t, in, 2, "cannot squeeze axis 1 of extent 3");
    tu_node_free(&t);
    in[1] = a2;
    t = tu_node_new("Unsqueeze", 13, 2, in, is_const, 1);
    run_fails(&t, in, 2, "repeated");
    tu_node_free(&t);
    /* static: squeeze without axes of an unknown extent has unknown rank;
     * with axes it is exact */
    ql_error err;
    ql_tensor y[1];
    int64_t hd[3] = {-1, 1, 5}, want[2] = {-1, 5};
    ql_tensor h = hdr(QL_F32, 3, hd);
    const ql_tensor *hin[2] = {&h, a};
    t = tu_node_new("Squeeze", 13, 1, hin, NULL, 1);
    assert_int_equal(infer_only(&t, hin, 1, y, &err), QL_OK);
    assert_int_equal(y[0].ndim, -1);
    tu_node_free(&t);
    t = tu_node_new("Squeeze", 13, 2, hin, NULL, 1);
    assert_int_equal(infer_only(&t, hin, 1, y, &err), QL_OK);
    check_shape(&y[0], 2, want, "Squeeze static");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, a, a2}, 3);
}

static void test_shape(void **state)
{
    (void)state;
    tu_rng r = {4};
    int64_t xd[4] = {2, 3, 4, 5};
    static const int64_t se[][2] = {{0, 99}, {1, 99}, {-1, 99}, {0, -1}, {1, 3}, {-10, 2}, {3, 1}, {0, 10}};
    for (int c = 0; c < 8; c++) {
        ql_tensor *x = mk(&r, QL_U8, 4, xd);
        const ql_tensor *in[1] = {x};
        tu_node t = tu_node_new("Shape", 15, 1, in, NULL, 1);
        if (c > 0)
            tu_attr_int(&t, "start", se[c][0]);
        if (se[c][1] != 99)
            tu_attr_int(&t, "end", se[c][1]);
        ql_tensor *y;
        run2(&t, in, 1, 1, &y, "Shape");
        int64_t s = c > 0 ? se[c][0] : 0, e = se[c][1] == 99 ? 4 : se[c][1];
        s = s < 0 ? s + 4 : s;
        e = e < 0 ? e + 4 : e;
        s = s < 0 ? 0 : (s > 4 ? 4 : s);
        e = e < s ? s : (e > 4 ? 4 : e);
        assert_int_equal(y->dtype, QL_I64);
        int64_t n = e - s;
        check_shape(y, 1, &n, "Shape");
        for (int64_t i = 0; i < n; i++)
            assert_int_equal(((int64_t *)y->data)[i], xd[s + i]);
        ql_tensor_free(y);
        ql_tensor_free(x);
        tu_node_free(&t);
    }
    /* static: a value with an unknown batch still has a known rank */
    int64_t hd[4] = {-1, 3, 224, 224}, four = 4, two = 2;
    ql_tensor h = hdr(QL_F32, 4, hd), y[1];
    const ql_tensor *in[1] = {&h};
    ql_error err;
    tu_node t = tu_node_new("Shape", 15, 1, in, NULL, 1);
    assert_int_equal(infer_only(&t, in, 1, y, &err), QL_OK);
    assert_int_equal(y[0].dtype, QL_I64);
    check_shape(&y[0], 1, &four, "Shape static");
    tu_attr_int(&t, "start", -2);
    assert_int_equal(infer_only(&t, in, 1, y, &err), QL_OK);
    check_shape(&y[0], 1, &two, "Shape static start");
    tu_node_free(&t);
}

/* ---------------------------------------------------------------------------
 * Identity, Dropout, Constant
 * ------------------------------------------------------------------------- */
static void test_identity_dropout(void **state)
{
    (void)state;
    tu_rng r = {5};
    int64_t xd[3] = {3, 4, 5};
    for (int d = 0; d < N_DTYPES; d++) {
        ql_tensor *x = mk(&r, all_dtypes[d], 3, xd);
        const ql_tensor *in[1] = {x};
        tu_node t = tu_node_new("Identity", 16, 1, in, NULL, 1);
        ql_tensor *y;
        run2(&t, in, 1, 1, &y, "Identity");
        assert_memory_equal(y->data, x->data, ql_tensor_nbytes(x));
        ql_tensor_free(y);
        tu_node_free(&t);
        ql_tensor_free(x);
    }
    /* inference: identity, mask all true, for every dropout form */
    for (int form = 0; form < 3; form++) {
        ql_tensor *x = mk(&r, QL_F32, 3, xd), *ratio = scalar_of(QL_F32, 0.3), *tm = scalar_of(QL_BOOL, 0);
        const ql_tensor *in[3] = {x, ratio, tm};
        int is_const[3] = {0, 1, form == 2};
        int n_in = form == 0 ? 1 : 3;
        tu_node t = tu_node_new("Dropout", form == 0 ? 11 : 13, n_in, in, is_const, 2);
        if (form == 0)
            tu_attr_float(&t, "ratio", 0.4f);
        ql_tensor *y[2];
        run2(&t, in, n_in, 2, y, "Dropout");
        assert_memory_equal(y[0]->data, x->data, ql_tensor_nbytes(x));
        assert_int_equal(y[1]->dtype, QL_BOOL);
        for (int64_t i = 0; i < 60; i++)
            assert_int_equal(((uint8_t *)y[1]->data)[i], 1);
        free_all(y, 2);
        free_all((ql_tensor *[]){x, ratio, tm}, 3);
        tu_node_free(&t);
    }
    /* training mode reproduces np.random.seed(0); uniform(0, 1) >= ratio:
     * the first draws are 0.5488, 0.7152, 0.6028, 0.5449, 0.4237 */
    int64_t five = 5;
    ql_tensor *x = ql_tensor_new(QL_F32, 1, &five), *ratio = scalar_of(QL_F32, 0.5),
              *tm = scalar_of(QL_BOOL, 1);
    for (int i = 0; i < 5; i++)
        ((float *)x->data)[i] = (float)(i + 1);
    const ql_tensor *in[3] = {x, ratio, tm};
    tu_node t = tu_node_new("Dropout", 13, 3, in, NULL, 2);
    tu_attr_int(&t, "seed", 0);
    ql_tensor *y[2];
    run2(&t, in, 3, 2, y, "Dropout training");
    static const float want[5] = {2, 4, 6, 8, 0};
    for (int i = 0; i < 5; i++) {
        assert_true(((float *)y[0]->data)[i] == want[i]);
        assert_int_equal(((uint8_t *)y[1]->data)[i], i < 4);
    }
    free_all(y, 2);
    tu_node_free(&t);
    /* a ratio of 1 is refused */
    *(float *)ratio->data = 1.0f;
    t = tu_node_new("Dropout", 13, 3, in, NULL, 1);
    run_fails(&t, in, 3, "outside [0, 1)");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, ratio, tm}, 3);
}

static void test_constant(void **state)
{
    (void)state;
    tu_node t = tu_node_new("Constant", 13, 0, NULL, NULL, 1);
    ql_node_add_attr(t.g, t.node, "value_float", QL_ATTR_FLOAT)->f = 2.5f;
    ql_tensor *y;
    run2(&t, NULL, 0, 1, &y, "Constant value_float");
    assert_int_equal(y->ndim, 0);
    assert_true(*(float *)y->data == 2.5f);
    ql_tensor_free(y);
    tu_node_free(&t);

    static const int64_t iv[3] = {7, -8, 9};
    t = tu_node_new("Constant", 13, 0, NULL, NULL, 1);
    tu_attr_ints(&t, "value_ints", 3, iv);
    run2(&t, NULL, 0, 1, &y, "Constant value_ints");
    assert_int_equal(y->dtype, QL_I64);
    assert_memory_equal(y->data, iv, sizeof iv);
    ql_tensor_free(y);
    tu_node_free(&t);

    t = tu_node_new("Constant", 13, 0, NULL, NULL, 1);
    ql_node_add_attr(t.g, t.node, "value_int", QL_ATTR_INT)->i = -3;
    run2(&t, NULL, 0, 1, &y, "Constant value_int");
    assert_int_equal(*(int64_t *)y->data, -3);
    ql_tensor_free(y);
    tu_node_free(&t);

    static const float fv[2] = {1.5f, -2.0f};
    t = tu_node_new("Constant", 13, 0, NULL, NULL, 1);
    ql_attr *a = ql_node_add_attr(t.g, t.node, "value_floats", QL_ATTR_FLOATS);
    a->n = 2;
    a->floats = malloc(sizeof fv);
    memcpy(a->floats, fv, sizeof fv);
    run2(&t, NULL, 0, 1, &y, "Constant value_floats");
    assert_memory_equal(y->data, fv, sizeof fv);
    ql_tensor_free(y);
    tu_node_free(&t);

    tu_rng r = {6};
    int64_t d[2] = {2, 3};
    ql_tensor *v = mk(&r, QL_I8, 2, d);
    t = tu_node_new("Constant", 13, 0, NULL, NULL, 1);
    ql_node_add_attr(t.g, t.node, "value", QL_ATTR_TENSOR)->t = ql_tensor_clone(v);
    run2(&t, NULL, 0, 1, &y, "Constant value");
    check_shape(y, 2, d, "Constant value");
    assert_memory_equal(y->data, v->data, 6);
    ql_tensor_free(y);
    ql_tensor_free(v);
    tu_node_free(&t);

    t = tu_node_new("Constant", 13, 0, NULL, NULL, 1);
    ql_node_add_attr(t.g, t.node, "sparse_value", QL_ATTR_UNDEFINED);
    run_fails(&t, NULL, 0, "sparse_value is not supported");
    tu_node_free(&t);
}

/* ---------------------------------------------------------------------------
 * Concat, Split
 * ------------------------------------------------------------------------- */
static void test_concat(void **state)
{
    (void)state;
    tu_rng r = {7};
    int64_t base[4] = {2, 3, 4, 5};
    for (int d = 0; d < N_DTYPES; d++)
        for (int axis = -4; axis < 4; axis++) {
            int ax = axis < 0 ? axis + 4 : axis;
            ql_tensor *x[3];
            int64_t yd[4];
            memcpy(yd, base, sizeof yd);
            yd[ax] = 0;
            for (int k = 0; k < 3; k++) {
                int64_t xd[4];
                memcpy(xd, base, sizeof xd);
                xd[ax] = k == 1 ? 0 : k + 1; /* an empty part in the middle */
                yd[ax] += xd[ax];
                x[k] = mk(&r, all_dtypes[d], 4, xd);
            }
            const ql_tensor *in[3] = {x[0], x[1], x[2]};
            tu_node t = tu_node_new("Concat", 13, 3, in, NULL, 1);
            tu_attr_int(&t, "axis", axis);
            ql_tensor *y;
            run2(&t, in, 3, 1, &y, "Concat");
            check_shape(y, 4, yd, "Concat");
            size_t es = esz(y);
            for (int64_t e = 0; e < ql_tensor_numel(y); e++) {
                int64_t idx[4];
                unravel(e, 4, yd, idx);
                int k = 0;
                while (idx[ax] >= x[k]->dims[ax]) {
                    idx[ax] -= x[k]->dims[ax];
                    k++;
                }
                int64_t src = ravel(4, x[k]->dims, idx);
                if (memcmp((char *)y->data + e * (int64_t)es, (char *)x[k]->data + src * (int64_t)es, es))
                    fail_msg("Concat %s axis %d: element %lld", ql_dtype_info(all_dtypes[d])->name, axis,
                             (long long)e);
            }
            ql_tensor_free(y);
            free_all(x, 3);
            tu_node_free(&t);
        }
    /* large channel concat at batch 1 (the parallel byte-range path) */
    int64_t a[4] = {1, 40, 56, 56}, b[4] = {1, 24, 56, 56};
    ql_tensor *xa = mk(&r, QL_F32, 4, a), *xb = mk(&r, QL_F32, 4, b);
    const ql_tensor *in[2] = {xa, xb};
    tu_node t = tu_node_new("Concat", 13, 2, in, NULL, 1);
    tu_attr_int(&t, "axis", 1);
    ql_tensor *y;
    run2(&t, in, 2, 1, &y, "Concat large");
    assert_memory_equal(y->data, xa->data, ql_tensor_nbytes(xa));
    assert_memory_equal((char *)y->data + ql_tensor_nbytes(xa), xb->data, ql_tensor_nbytes(xb));
    ql_tensor_free(y);
    tu_node_free(&t);
    /* errors: mismatched extent, axis out of range */
    int64_t c[4] = {1, 24, 56, 55};
    ql_tensor *xc = mk(&r, QL_F32, 4, c);
    in[1] = xc;
    t = tu_node_new("Concat", 13, 2, in, NULL, 1);
    tu_attr_int(&t, "axis", 1);
    run_fails(&t, in, 2, "extent 55 on axis 3");
    tu_node_free(&t);
    t = tu_node_new("Concat", 13, 2, in, NULL, 1);
    tu_attr_int(&t, "axis", 4);
    run_fails(&t, in, 2, "axis 4 out of range");
    tu_node_free(&t);
    free_all((ql_tensor *[]){xa, xb, xc}, 3);
    /* static: unknown batch stays unknown, channels add up */
    int64_t ha[4] = {-1, 8, 7, 7}, hb[4] = {-1, 16, 7, 7}, want[4] = {-1, 24, 7, 7};
    ql_tensor h[2] = {hdr(QL_F32, 4, ha), hdr(QL_F32, 4, hb)}, o[1];
    const ql_tensor *hin[2] = {&h[0], &h[1]};
    ql_error err;
    t = tu_node_new("Concat", 13, 2, hin, NULL, 1);
    tu_attr_int(&t, "axis", -3);
    assert_int_equal(infer_only(&t, hin, 1, o, &err), QL_OK);
    check_shape(&o[0], 4, want, "Concat static");
    tu_node_free(&t);
}

/* sizes: the expected part lengths; form: 0 attribute (opset 11), 1 input
 * (13), 2 equal parts (13), 3 num_outputs (18) */
static void split_case(tu_rng *r, ql_dtype dt, int axis, int form, int n_out, const int64_t *sizes)
{
    int64_t xd[3] = {3, 7, 4};
    int ax = axis < 0 ? axis + 3 : axis;
    xd[ax] = 0;
    for (int k = 0; k < n_out; k++)
        xd[ax] += sizes[k];
    ql_tensor *x = mk(r, dt, 3, xd), *s = i64s(n_out, sizes);
    const ql_tensor *in[2] = {x, s};
    int is_const[2] = {0, 1};
    int n_in = form == 1 ? 2 : 1;
    tu_node t = tu_node_new("Split", form == 0 ? 11 : (form == 3 ? 18 : 13), n_in, in, is_const, n_out);
    tu_attr_int(&t, "axis", axis);
    if (form == 0)
        tu_attr_ints(&t, "split", n_out, sizes);
    if (form == 3)
        tu_attr_int(&t, "num_outputs", n_out);
    ql_tensor *y[8];
    run2(&t, in, n_in, n_out, y, "Split");
    size_t es = esz(x);
    int64_t start = 0;
    for (int k = 0; k < n_out; k++) {
        int64_t yd[3];
        memcpy(yd, xd, sizeof yd);
        yd[ax] = sizes[k];
        check_shape(y[k], 3, yd, "Split");
        for (int64_t e = 0; e < ql_tensor_numel(y[k]); e++) {
            int64_t idx[3];
            unravel(e, 3, yd, idx);
            idx[ax] += start;
            if (memcmp((char *)y[k]->data + e * (int64_t)es,
                       (char *)x->data + ravel(3, xd, idx) * (int64_t)es, es))
                fail_msg("Split form %d axis %d part %d element %lld", form, axis, k, (long long)e);
        }
        start += sizes[k];
    }
    free_all(y, n_out);
    ql_tensor_free(x);
    ql_tensor_free(s);
    tu_node_free(&t);
}

static void test_split(void **state)
{
    (void)state;
    tu_rng r = {8};
    static const int64_t var[3] = {2, 0, 5}, eq[3] = {3, 3, 3}, uneven[3] = {3, 3, 1};
    for (int d = 0; d < N_DTYPES; d++)
        for (int axis = -3; axis < 3; axis++) {
            split_case(&r, all_dtypes[d], axis, 0, 3, var);
            split_case(&r, all_dtypes[d], axis, 1, 3, var);
            split_case(&r, all_dtypes[d], axis, 2, 3, eq);
            split_case(&r, all_dtypes[d], axis, 3, 3, uneven); /* 7 in 3: the last is smaller */
        }
    /* sizes that do not add up */
    static const int64_t bad[2] = {2, 2};
    int64_t xd[2] = {5, 2};
    ql_tensor *x = mk(&r, QL_F32, 2, xd), *s = i64s(2, bad);
    const ql_tensor *in[2] = {x, s};
    int is_const[2] = {0, 1};
    tu_node t = tu_node_new("Split", 13, 2, in, is_const, 2);
    run_fails(&t, in, 2, "add up to 4, the axis has 5");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, s}, 2);
}

/* ---------------------------------------------------------------------------
 * Slice
 * ------------------------------------------------------------------------- */
/* Independent reference: the selected indices of one axis, by walking from
 * the clamped start with the step (ONNX rules). */
static int64_t ref_slice_axis(int64_t s, int64_t e, int64_t step, int64_t d, int64_t *out)
{
    if (s < 0)
        s += d;
    if (e < 0)
        e += d;
    int64_t n = 0;
    if (step > 0) {
        s = s < 0 ? 0 : (s > d ? d : s);
        e = e < 0 ? 0 : (e > d ? d : e);
        for (int64_t i = s; i < e; i += step) {
            out[n++] = i;
            if (step >= e - i) /* the next step leaves the range (and would overflow) */
                break;
        }
    } else {
        s = s < 0 ? 0 : (s > d - 1 ? d - 1 : s);
        e = e < -1 ? -1 : (e > d - 1 ? d - 1 : e);
        for (int64_t i = s; i > e && d > 0; i += step) {
            out[n++] = i;
            if (-step >= i - e)
                break;
        }
    }
    return n;
}

static int64_t pick_bound(tu_rng *r, int64_t d)
{
    switch (tu_next(r) % 8) {
    case 0: return INT64_MAX;
    case 1: return INT64_MIN;
    case 2: return -(int64_t)(tu_next(r) % (uint32_t)(d + 3)) - 1;
    default: return (int64_t)(tu_next(r) % (uint32_t)(d + 3));
    }
}

static void test_slice(void **state)
{
    (void)state;
    tu_rng r = {9};
    static const ql_dtype dts[] = {QL_F32, QL_U8, QL_I64, QL_I16};
    for (int c = 0; c < 300; c++) {
        int nd = 1 + (int)(tu_next(&r) % 4), opset = c % 3 == 0 ? 9 : 13;
        int64_t xd[4], starts[4], ends[4], axes[4], steps[4], sel[4][64], len[4];
        for (int i = 0; i < nd; i++)
            xd[i] = 1 + (int64_t)(tu_next(&r) % 6);
        int na = 1 + (int)(tu_next(&r) % (uint32_t)nd), perm[4] = {0, 1, 2, 3};
        for (int i = nd - 1; i > 0; i--) { /* axes in random order */
            int j = (int)(tu_next(&r) % (uint32_t)(i + 1)), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        for (int k = 0; k < na; k++) {
            int a = perm[k];
            axes[k] = tu_next(&r) & 1 ? a - nd : a;
            starts[k] = pick_bound(&r, xd[a]);
            ends[k] = pick_bound(&r, xd[a]);
            steps[k] = opset < 10 ? 1 : (int64_t)(tu_next(&r) % 7) - 3;
            if (steps[k] == 0)
                steps[k] = tu_next(&r) & 1 ? INT64_MAX : -INT64_MAX;
        }
        int64_t yd[4];
        for (int i = 0; i < nd; i++) {
            len[i] = xd[i];
            for (int64_t k = 0; k < xd[i]; k++)
                sel[i][k] = k;
        }
        for (int k = 0; k < na; k++) {
            int a = perm[k];
            len[a] = ref_slice_axis(starts[k], ends[k], steps[k], xd[a], sel[a]);
        }
        memcpy(yd, len, sizeof yd);
        ql_tensor *x = mk(&r, dts[c % 4], nd, xd);
        ql_tensor *ts = i64s(na, starts), *te = i64s(na, ends), *ta = i64s(na, axes), *tp = i64s(na, steps);
        int with_axes = c % 5 != 1, with_steps = c % 7 != 2;
        const ql_tensor *in[5] = {x, ts, te, with_axes ? ta : NULL, with_steps ? tp : NULL};
        if (!with_axes) /* default axes are 0..n-1 */
            for (int k = 0; k < na; k++)
                if (perm[k] != k)
                    with_axes = -1;
        if (with_axes < 0) {
            free_all((ql_tensor *[]){x, ts, te, ta, tp}, 5);
            continue;
        }
        if (!with_steps)
            for (int k = 0; k < na; k++)
                if (steps[k] != 1)
                    with_steps = -1;
        if (with_steps < 0)
            in[4] = tp;
        int is_const[5] = {0, c & 1, c & 1, 1, 1};
        int n_in = opset < 10 ? 1 : 5;
        tu_node t = tu_node_new("Slice", opset, n_in, in, is_const, 1);
        if (opset < 10) {
            tu_attr_ints(&t, "starts", na, starts);
            tu_attr_ints(&t, "ends", na, ends);
            if (in[3])
                tu_attr_ints(&t, "axes", na, axes);
        }
        ql_tensor *y;
        run2(&t, in, n_in, 1, &y, "Slice");
        check_shape(y, nd, yd, "Slice");
        size_t es = esz(x);
        for (int64_t e = 0; e < ql_tensor_numel(y); e++) {
            int64_t idx[4];
            unravel(e, nd, yd, idx);
            for (int i = 0; i < nd; i++)
                idx[i] = sel[i][idx[i]];
            if (memcmp((char *)y->data + e * (int64_t)es, (char *)x->data + ravel(nd, xd, idx) * (int64_t)es,
                       es))
                fail_msg("Slice case %d: element %lld", c, (long long)e);
        }
        ql_tensor_free(y);
        free_all((ql_tensor *[]){x, ts, te, ta, tp}, 5);
        tu_node_free(&t);
    }
    /* errors: step 0, repeated axis; static: unknown starts leave only the
     * sliced axes unknown */
    int64_t xd[2] = {4, 5}, zero = 0, two = 2, rep[2] = {1, -1}, st2[2] = {0, 0}, en2[2] = {2, 2};
    ql_tensor *x = mk(&r, QL_F32, 2, xd), *s0 = i64s(1, &zero), *e0 = i64s(1, &two), *stp = i64s(1, &zero);
    ql_tensor *ra = i64s(2, rep), *rs = i64s(2, st2), *re = i64s(2, en2);
    const ql_tensor *in[5] = {x, s0, e0, NULL, stp};
    tu_node t = tu_node_new("Slice", 13, 5, in, (int[]){0, 1, 1, 0, 1}, 1);
    run_fails(&t, in, 5, "step 0");
    tu_node_free(&t);
    const ql_tensor *in2[4] = {x, rs, re, ra};
    t = tu_node_new("Slice", 13, 4, in2, (int[]){0, 1, 1, 1}, 1);
    run_fails(&t, in2, 4, "repeated");
    tu_node_free(&t);
    int64_t hd[3] = {-1, 10, 10}, one_ax = -1, want[3] = {-1, 10, -1}, one = 1;
    ql_tensor h = hdr(QL_F32, 3, hd), hs = hdr(QL_I64, 1, &one), he = hdr(QL_I64, 1, &one), o[1];
    ql_tensor *hax = i64s(1, &one_ax);
    const ql_tensor *hin[4] = {&h, &hs, &he, hax};
    ql_error err;
    t = tu_node_new("Slice", 13, 4, hin, NULL, 1);
    assert_int_equal(infer_only(&t, hin, 1, o, &err), QL_OK);
    check_shape(&o[0], 3, want, "Slice static");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, s0, e0, stp, ra, rs, re, hax}, 8);
}

/* ---------------------------------------------------------------------------
 * Transpose
 * ------------------------------------------------------------------------- */
static void transpose_check(tu_rng *r, ql_dtype dt, int nd, const int64_t *xd, const int64_t *perm)
{
    ql_tensor *x = mk(r, dt, nd, xd);
    const ql_tensor *in[1] = {x};
    tu_node t = tu_node_new("Transpose", 13, 1, in, NULL, 1);
    if (perm)
        tu_attr_ints(&t, "perm", nd, perm);
    ql_tensor *y;
    run2(&t, in, 1, 1, &y, "Transpose");
    int64_t p[QL_MAX_DIMS], yd[QL_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        p[i] = perm ? perm[i] : nd - 1 - i;
        yd[i] = xd[p[i]];
    }
    check_shape(y, nd, yd, "Transpose");
    size_t es = esz(x);
    for (int64_t e = 0; e < ql_tensor_numel(y); e++) {
        int64_t yi[QL_MAX_DIMS], xi[QL_MAX_DIMS];
        unravel(e, nd, yd, yi);
        for (int i = 0; i < nd; i++)
            xi[p[i]] = yi[i];
        if (memcmp((char *)y->data + e * (int64_t)es, (char *)x->data + ravel(nd, xd, xi) * (int64_t)es, es))
            fail_msg("Transpose %s rank %d: element %lld", ql_dtype_info(dt)->name, nd, (long long)e);
    }
    ql_tensor_free(y);
    ql_tensor_free(x);
    tu_node_free(&t);
}

static void test_transpose(void **state)
{
    (void)state;
    tu_rng r = {10};
    static const int64_t d4[4] = {2, 3, 5, 7};
    for (int dt = 0; dt < N_DTYPES; dt++) /* every permutation of rank 4 */
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++)
                for (int c = 0; c < 4; c++) {
                    int d = 6 - a - b - c;
                    if (a == b || a == c || b == c || d < 0 || d > 3 || d == a || d == b || d == c)
                        continue;
                    int64_t perm[4] = {a, b, c, d};
                    transpose_check(&r, all_dtypes[dt], 4, d4, perm);
                }
    static const int64_t d2[2] = {37, 19}, d3[3] = {4, 1, 9}, d5[5] = {2, 3, 1, 4, 5};
    static const int64_t p3[3] = {2, 0, 1}, p5[5] = {4, 0, 3, 1, 2};
    for (int dt = 0; dt < N_DTYPES; dt++) {
        transpose_check(&r, all_dtypes[dt], 2, d2, NULL); /* default: reversed */
        transpose_check(&r, all_dtypes[dt], 3, d3, p3);
        transpose_check(&r, all_dtypes[dt], 5, d5, p5);
    }
    /* layouts of real models, large enough for the tiled and parallel paths */
    static const int64_t nchw[4] = {2, 35, 29, 31}, nhwc[4] = {0, 2, 3, 1}, back[4] = {0, 3, 1, 2};
    static const int64_t heads[4] = {0, 2, 1, 3};
    transpose_check(&r, QL_F32, 4, nchw, nhwc);
    transpose_check(&r, QL_F32, 4, nchw, back);
    transpose_check(&r, QL_U8, 4, nchw, nhwc);
    transpose_check(&r, QL_I64, 4, nchw, back);
    transpose_check(&r, QL_F32, 4, nchw, heads);
    /* bad perms */
    static const int64_t dup[4] = {0, 1, 1, 3}, short3[3] = {0, 1, 2};
    ql_tensor *x = mk(&r, QL_F32, 4, d4);
    const ql_tensor *in[1] = {x};
    tu_node t = tu_node_new("Transpose", 13, 1, in, NULL, 1);
    tu_attr_ints(&t, "perm", 4, dup);
    run_fails(&t, in, 1, "not a permutation");
    tu_node_free(&t);
    t = tu_node_new("Transpose", 13, 1, in, NULL, 1);
    tu_attr_ints(&t, "perm", 3, short3);
    run_fails(&t, in, 1, "perm has 3 values for rank 4");
    tu_node_free(&t);
    ql_tensor_free(x);
}

/* ---------------------------------------------------------------------------
 * Pad
 * ------------------------------------------------------------------------- */
/* Reference source index of output coordinate o: numpy.pad semantics, with
 * reflection done by folding one step at a time. -1: the constant. */
static int64_t ref_pad_index(const char *mode, int64_t o, int64_t begin, int64_t d)
{
    int64_t i = o - begin;
    if (i >= 0 && i < d)
        return i;
    if (!strcmp(mode, "constant"))
        return -1;
    if (!strcmp(mode, "edge"))
        return i < 0 ? 0 : d - 1;
    if (!strcmp(mode, "wrap")) {
        while (i < 0)
            i += d;
        return i % d;
    }
    if (d == 1)
        return 0;
    while (i < 0 || i >= d)
        i = i < 0 ? -i : 2 * (d - 1) - i;
    return i;
}

static void pad_case(tu_rng *r, ql_dtype dt, const char *mode, int opset, int nd, const int64_t *xd,
                     const int64_t *pads, int na, const int64_t *axes, double cval)
{
    ql_tensor *x = mk(r, dt, nd, xd), *p = i64s(2 * (na ? na : nd), pads);
    ql_tensor *cv = scalar_of(dt, cval), *ax = na ? i64s(na, axes) : NULL;
    if (dt == QL_I64)
        *(int64_t *)cv->data = (int64_t)cval;
    int64_t begin[QL_MAX_DIMS] = {0}, end[QL_MAX_DIMS] = {0}, yd[QL_MAX_DIMS];
    for (int k = 0; k < (na ? na : nd); k++) {
        int a = na ? (int)(axes[k] < 0 ? axes[k] + nd : axes[k]) : k;
        begin[a] = pads[k];
        end[a] = pads[k + (na ? na : nd)];
    }
    for (int i = 0; i < nd; i++)
        yd[i] = xd[i] + begin[i] + end[i];
    const ql_tensor *in[4] = {x, p, cval != 0 ? cv : NULL, ax};
    int n_in = opset < 11 ? 1 : (na ? 4 : 3);
    tu_node t = tu_node_new("Pad", opset, n_in, in, (int[]){0, 1, 1, 1}, 1);
    tu_attr_string(&t, "mode", mode);
    if (opset < 11) {
        tu_attr_ints(&t, "pads", 2 * nd, pads);
        tu_attr_float(&t, "value", (float)cval);
    }
    ql_tensor *y;
    run2(&t, in, n_in, 1, &y, "Pad");
    check_shape(y, nd, yd, "Pad");
    size_t es = esz(x);
    char cbytes[8];
    memcpy(cbytes, cv->data, es);
    for (int64_t e = 0; e < ql_tensor_numel(y); e++) {
        int64_t idx[QL_MAX_DIMS];
        unravel(e, nd, yd, idx);
        const char *want = cbytes;
        int inside = 1;
        for (int i = 0; i < nd; i++)
            if ((idx[i] = ref_pad_index(mode, idx[i], begin[i], xd[i])) < 0)
                inside = 0;
        if (inside)
            want = (const char *)x->data + ravel(nd, xd, idx) * (int64_t)es;
        if (memcmp((char *)y->data + e * (int64_t)es, want, es))
            fail_msg("Pad %s %s opset %d: element %lld", mode, ql_dtype_info(dt)->name, opset, (long long)e);
    }
    ql_tensor_free(y);
    free_all((ql_tensor *[]){x, p, cv, ax}, 4);
    tu_node_free(&t);
}

static void test_pad(void **state)
{
    (void)state;
    tu_rng r = {11};
    static const char *const modes[] = {"constant", "reflect", "edge", "wrap"};
    static const int64_t d4[4] = {2, 3, 5, 6}, p4[8] = {0, 1, 2, 3, 1, 0, 4, 2};
    static const int64_t neg[8] = {0, 0, -1, 2, 0, 1, 1, -2}, big[8] = {0, 0, 7, 9, 0, 0, 11, 1};
    static const int64_t d1[1] = {9}, p1[2] = {3, 4};
    for (int m = 0; m < 4; m++) {
        for (int d = 0; d < N_DTYPES; d++)
            pad_case(&r, all_dtypes[d], modes[m], 13, 4, d4, p4, 0, NULL, 0);
        pad_case(&r, QL_F32, modes[m], 13, 4, d4, neg, 0, NULL, 0);
        pad_case(&r, QL_F32, modes[m], 19, 4, d4, big, 0, NULL, 0); /* pads beyond the extent */
        pad_case(&r, QL_I8, modes[m], 13, 1, d1, p1, 0, NULL, 0);
    }
    pad_case(&r, QL_F32, "constant", 2, 4, d4, p4, 0, NULL, 1.5);   /* attributes */
    pad_case(&r, QL_F32, "reflect", 2, 4, d4, p4, 0, NULL, 0);
    pad_case(&r, QL_F32, "constant", 13, 4, d4, p4, 0, NULL, -2.25); /* constant_value input */
    pad_case(&r, QL_I64, "constant", 13, 4, d4, p4, 0, NULL, 77);
    pad_case(&r, QL_U8, "constant", 13, 4, d4, p4, 0, NULL, 9);
    static const int64_t axes[2] = {-1, 1}, pa[4] = {2, 1, 3, 0};
    pad_case(&r, QL_F32, "constant", 18, 4, d4, pa, 2, axes, 4.0); /* axes input */
    pad_case(&r, QL_F32, "edge", 18, 4, d4, pa, 2, axes, 0);
    /* a large spatial pad (the parallel row path) */
    static const int64_t act[4] = {1, 32, 40, 40}, sp[8] = {0, 0, 1, 1, 0, 0, 1, 1};
    pad_case(&r, QL_F32, "constant", 13, 4, act, sp, 0, NULL, 0);
    pad_case(&r, QL_F32, "reflect", 13, 4, act, sp, 0, NULL, 0);
    /* errors: wrong pads count, unknown mode */
    ql_tensor *x = mk(&r, QL_F32, 4, d4), *p = i64s(3, p4);
    const ql_tensor *in[2] = {x, p};
    tu_node t = tu_node_new("Pad", 13, 2, in, (int[]){0, 1}, 1);
    run_fails(&t, in, 2, "pads has 3 values for 4 axes");
    tu_node_free(&t);
    ql_tensor_free(p);
    p = i64s(8, p4);
    in[1] = p;
    t = tu_node_new("Pad", 13, 2, in, (int[]){0, 1}, 1);
    tu_attr_string(&t, "mode", "mirror");
    run_fails(&t, in, 2, "pad mode 'mirror'");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, p}, 2);
    /* static: an unknown batch stays unknown, padded axes are exact */
    int64_t hd[4] = {-1, 3, 5, 6}, want[4] = {-1, 4, 11, 11};
    ql_tensor h = hdr(QL_F32, 4, hd), o[1];
    ql_tensor *pp = i64s(8, p4);
    const ql_tensor *hin[2] = {&h, pp};
    ql_error err;
    t = tu_node_new("Pad", 13, 2, hin, NULL, 1);
    assert_int_equal(infer_only(&t, hin, 1, o, &err), QL_OK);
    check_shape(&o[0], 4, want, "Pad static");
    tu_node_free(&t);
    ql_tensor_free(pp);
}

/* ---------------------------------------------------------------------------
 * Gather
 * ------------------------------------------------------------------------- */
static void test_gather(void **state)
{
    (void)state;
    tu_rng r = {12};
    static const int64_t xd[3] = {4, 5, 3};
    static const struct {
        int n;
        int64_t d[2];
    } ishapes[] = {{0, {0}}, {1, {4}}, {2, {2, 3}}};
    for (int dt = 0; dt < N_DTYPES; dt++)
        for (int axis = -3; axis < 3; axis++)
            for (int s = 0; s < 3; s++)
                for (int i32 = 0; i32 < 2; i32++) {
                    int ax = axis < 0 ? axis + 3 : axis;
                    ql_tensor *x = mk(&r, all_dtypes[dt], 3, xd);
                    ql_tensor *idx = ql_tensor_new(i32 ? QL_I32 : QL_I64, ishapes[s].n, ishapes[s].d);
                    int64_t ni = ql_tensor_numel(idx), want_idx[8];
                    for (int64_t k = 0; k < ni; k++) {
                        int64_t q = (int64_t)(tu_next(&r) % (uint32_t)(2 * xd[ax])) - xd[ax];
                        want_idx[k] = q < 0 ? q + xd[ax] : q;
                        if (i32)
                            ((int32_t *)idx->data)[k] = (int32_t)q;
                        else
                            ((int64_t *)idx->data)[k] = q;
                    }
                    const ql_tensor *in[2] = {x, idx};
                    tu_node t = tu_node_new("Gather", 13, 2, in, (int[]){0, (int)(s & 1)}, 1);
                    tu_attr_int(&t, "axis", axis);
                    ql_tensor *y;
                    run2(&t, in, 2, 1, &y, "Gather");
                    int yn = 0;
                    int64_t yd[4];
                    for (int i = 0; i < ax; i++)
                        yd[yn++] = xd[i];
                    for (int i = 0; i < ishapes[s].n; i++)
                        yd[yn++] = ishapes[s].d[i];
                    for (int i = ax + 1; i < 3; i++)
                        yd[yn++] = xd[i];
                    check_shape(y, yn, yd, "Gather");
                    size_t es = esz(x);
                    for (int64_t e = 0; e < ql_tensor_numel(y); e++) {
                        int64_t yi[4], xi[3], kk = 0;
                        unravel(e, yn, yd, yi);
                        for (int i = 0; i < ishapes[s].n; i++)
                            kk = kk * ishapes[s].d[i] + yi[ax + i];
                        for (int i = 0; i < 3; i++)
                            xi[i] = i < ax ? yi[i] : (i == ax ? want_idx[kk] : yi[i - 1 + ishapes[s].n]);
                        if (memcmp((char *)y->data + e * (int64_t)es,
                                   (char *)x->data + ravel(3, xd, xi) * (int64_t)es, es))
                            fail_msg("Gather %s axis %d: element %lld", ql_dtype_info(all_dtypes[dt])->name,
                                     axis, (long long)e);
                    }
                    ql_tensor_free(y);
                    free_all((ql_tensor *[]){x, idx}, 2);
                    tu_node_free(&t);
                }
    /* errors: an index out of range, the axis out of range */
    int64_t bad = 4;
    ql_tensor *x = mk(&r, QL_F32, 3, xd), *idx = i64s(1, &bad);
    const ql_tensor *in[2] = {x, idx};
    tu_node t = tu_node_new("Gather", 13, 2, in, NULL, 1);
    run_fails(&t, in, 2, "index 4 (element 0) out of range [-4, 4)");
    tu_node_free(&t);
    t = tu_node_new("Gather", 13, 2, in, NULL, 1);
    tu_attr_int(&t, "axis", -4);
    run_fails(&t, in, 2, "axis -4 out of range");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, idx}, 2);
}

/* ---------------------------------------------------------------------------
 * Resize: the reference is the ONNX one written out (one output element at a
 * time, interpolating the innermost axis first, neighbours found by sorting
 * distances in an edge-padded copy), in double.
 * ------------------------------------------------------------------------- */
typedef struct rz_opts {
    const char *mode, *ctm, *nm;
    double a;
    int exclude, antialias;
    double extra;
} rz_opts;

static int ref_coeffs(const rz_opts *o, double ratio, double scale, double *c)
{
    if (!strcmp(o->mode, "nearest")) {
        int up;
        if (ratio == 1.0)
            up = 1;
        else if (!strcmp(o->nm, "round_prefer_floor"))
            up = ratio > 0.5;
        else if (!strcmp(o->nm, "round_prefer_ceil"))
            up = ratio >= 0.5;
        else
            up = !strcmp(o->nm, "ceil");
        c[0] = !up;
        c[1] = up;
        return 2;
    }
    double s = o->antialias && scale < 1 ? scale : 1.0, sum = 0;
    int n;
    if (!strcmp(o->mode, "linear")) {
        int start = (int)floor(-1 / s) + 1;
        n = 2 - 2 * start;
        for (int i = 0; i < n; i++)
            c[i] = fmax(0, 1 - fabs((start + i - ratio) * s));
    } else {
        int start = (int)floor(-2 / s) + 1;
        n = 2 - 2 * start;
        for (int i = 0; i < n; i++) {
            double x = fabs(s * (start + i - ratio)), a = o->a;
            c[i] = x <= 1 ? (a + 2) * x * x * x - (a + 3) * x * x + 1
                          : (x < 2 ? a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a : 0);
        }
    }
    for (int i = 0; i < n; i++)
        sum += c[i];
    if (o->antialias)
        for (int i = 0; i < n; i++)
            c[i] /= sum;
    return n;
}

static double ref_1d(const rz_opts *o, const double *data, int64_t in, double scale, int64_t out_int,
                     double x, double r0, double r1)
{
    double w = scale * (double)in, xo;
    const char *m = o->ctm;
    if (!strcmp(m, "align_corners"))
        xo = w == 1 ? 0 : x * (double)(in - 1) / (w - 1);
    else if (!strcmp(m, "asymmetric"))
        xo = x / scale;
    else if (!strcmp(m, "tf_crop_and_resize")) {
        xo = (w == 1 ? (r1 - r0) * (double)(in - 1) / 2 : x * (r1 - r0) * (double)(in - 1) / (w - 1)) +
             r0 * (double)(in - 1);
        if (xo < 0 || xo > (double)(in - 1))
            return o->extra;
    } else if (!strcmp(m, "pytorch_half_pixel"))
        xo = out_int == 1 ? 0 : (x + 0.5) / scale - 0.5; /* ONNX spec and ORT: 0 */
    else if (!strcmp(m, "half_pixel_symmetric"))
        xo = (double)in / 2 * (1 - (double)out_int / w) + (x + 0.5) / scale - 0.5;
    else if (!strcmp(m, "tf_half_pixel_for_nn"))
        xo = (x + 0.5) / scale;
    else
        xo = (x + 0.5) / scale - 0.5;
    double ratio = xo == floor(xo) ? 1.0 : xo - floor(xo), c[64];
    int n = ref_coeffs(o, ratio, scale, c);
    /* the n indices nearest to xo (ties: the smaller) in the edge-padded axis */
    int64_t pad = (n + 1) / 2, len = in + 2 * pad, chosen[64];
    char taken[256] = {0};
    for (int k = 0; k < n; k++) {
        int64_t best = -1;
        for (int64_t i = 0; i < len; i++)
            if (!taken[i] &&
                (best < 0 || fabs(xo + (double)pad - (double)i) < fabs(xo + (double)pad - (double)best)))
                best = i;
        if (best < 0)
            break;
        taken[best] = 1;
    }
    for (int64_t i = 0, k = 0; i < len; i++)
        if (taken[i])
            chosen[k++] = i - pad;
    double sum = 0, v = 0;
    if (o->exclude) {
        for (int k = 0; k < n; k++) {
            if (chosen[k] < 0 || chosen[k] >= in)
                c[k] = 0;
            sum += c[k];
        }
        for (int k = 0; k < n; k++)
            c[k] /= sum;
    }
    for (int k = 0; k < n; k++) {
        int64_t i = chosen[k] < 0 ? 0 : (chosen[k] >= in ? in - 1 : chosen[k]);
        v += c[k] * data[i];
    }
    return v;
}

static double ref_nd(const rz_opts *o, const double *data, int nd, const int64_t *in, const double *scales,
                     const int64_t *out, const int64_t *x, const double *r0, const double *r1)
{
    if (nd == 1)
        return ref_1d(o, data, in[0], scales[0], out[0], (double)x[0], r0[0], r1[0]);
    int64_t stride = ql_numel(nd - 1, in + 1);
    double col[64];
    for (int64_t i = 0; i < in[0]; i++)
        col[i] = ref_nd(o, data + i * stride, nd - 1, in + 1, scales + 1, out + 1, x + 1, r0 + 1, r1 + 1);
    return ref_1d(o, col, in[0], scales[0], out[0], (double)x[0], r0[0], r1[0]);
}

/* One Resize case on f32 (or u8 for nearest) data of shape xd[4]; `vals`
 * are scales (sizes = 0) or sizes, for `na` axes (all when axes is NULL). */
static void resize_case(tu_rng *r, const rz_opts *o, ql_dtype dt, int opset, const int64_t *xd, int sizes,
                        const double *vals, int na, const int64_t *axes, const char *keep, const float *roi)
{
    int nd = 4;
    ql_tensor *x = mk(r, dt, nd, xd);
    double sc[4] = {1, 1, 1, 1}, r0[4] = {0, 0, 0, 0}, r1[4] = {1, 1, 1, 1};
    int64_t yd[4], ax[4];
    int n_ax = axes ? na : nd;
    for (int k = 0; k < n_ax; k++)
        ax[k] = axes ? (axes[k] < 0 ? axes[k] + nd : axes[k]) : k;
    memcpy(yd, xd, sizeof yd);
    if (!sizes) {
        for (int k = 0; k < n_ax; k++) {
            sc[ax[k]] = (float)vals[k];
            yd[ax[k]] = (int64_t)floor(sc[ax[k]] * (double)xd[ax[k]]);
        }
    } else if (!keep || !strcmp(keep, "stretch")) {
        for (int k = 0; k < n_ax; k++) {
            yd[ax[k]] = (int64_t)vals[k];
            sc[ax[k]] = vals[k] / (double)xd[ax[k]];
        }
    } else {
        double s = !strcmp(keep, "not_larger") ? 1e30 : 0;
        for (int k = 0; k < n_ax; k++) {
            double q = vals[k] / (double)xd[ax[k]];
            s = !strcmp(keep, "not_larger") ? fmin(s, q) : fmax(s, q);
        }
        for (int k = 0; k < n_ax; k++) {
            sc[ax[k]] = s;
            yd[ax[k]] = (int64_t)(s * (double)xd[ax[k]] + 0.5);
        }
    }
    if (roi)
        for (int k = 0; k < n_ax; k++) {
            r0[ax[k]] = roi[k];
            r1[ax[k]] = roi[k + n_ax];
        }
    /* inputs: opset 10 (X, scales); 11+ (X, roi, scales, sizes) */
    float fv[4];
    int64_t iv[4];
    for (int k = 0; k < n_ax; k++) {
        fv[k] = (float)vals[k];
        iv[k] = (int64_t)vals[k];
    }
    ql_tensor *tv = sizes ? i64s(n_ax, iv) : f32s(n_ax, fv), *troi = roi ? f32s(2 * n_ax, roi) : NULL;
    const ql_tensor *in[4] = {x, troi, sizes ? NULL : tv, sizes ? tv : NULL};
    int n_in = sizes ? 4 : 3;
    if (opset == 10) {
        in[1] = tv;
        n_in = 2;
    }
    tu_node t = tu_node_new("Resize", opset, n_in, in, (int[]){0, 1, 1, 1}, 1);
    tu_attr_string(&t, "mode", o->mode);
    if (opset > 10) {
        tu_attr_string(&t, "coordinate_transformation_mode", o->ctm);
        tu_attr_string(&t, "nearest_mode", o->nm);
        tu_attr_float(&t, "cubic_coeff_a", (float)o->a);
        tu_attr_int(&t, "exclude_outside", o->exclude);
        tu_attr_float(&t, "extrapolation_value", (float)o->extra);
    }
    if (o->antialias)
        tu_attr_int(&t, "antialias", 1);
    if (axes)
        tu_attr_ints(&t, "axes", na, axes);
    if (keep)
        tu_attr_string(&t, "keep_aspect_ratio_policy", keep);
    char what[160];
    snprintf(what, sizeof what, "Resize %s %s %s a=%g excl=%d aa=%d opset %d %s", o->mode, o->ctm, o->nm,
             o->a, o->exclude, o->antialias, opset, sizes ? "sizes" : "scales");
    ql_tensor *y;
    run2(&t, in, n_in, 1, &y, what);
    check_shape(y, nd, yd, what);
    int64_t nx = ql_tensor_numel(x);
    double *xdbl = malloc((size_t)nx * sizeof *xdbl);
    for (int64_t i = 0; i < nx; i++)
        xdbl[i] = dt == QL_F32 ? ((float *)x->data)[i] : ((uint8_t *)x->data)[i];
    /* axes not listed are left alone (the reference transposes them out) */
    for (int64_t e = 0; e < ql_tensor_numel(y); e++) {
        int64_t idx[4], sub_in[4], sub_out[4], sub_x[4];
        double sub_sc[4], sub_r0[4], sub_r1[4];
        unravel(e, nd, yd, idx);
        int64_t off = 0, stride = 1, m = 0;
        int listed[4] = {0};
        for (int k = 0; k < n_ax; k++)
            listed[ax[k]] = 1;
        for (int i = nd - 1; i >= 0; i--) {
            if (!listed[i])
                off += idx[i] * stride;
            stride *= xd[i];
        }
        /* gather the listed axes into a dense sub-tensor */
        for (int i = 0; i < nd; i++)
            if (listed[i]) {
                sub_in[m] = xd[i];
                sub_out[m] = yd[i];
                sub_x[m] = idx[i];
                sub_sc[m] = sc[i];
                sub_r0[m] = r0[i];
                sub_r1[m] = r1[i];
                m++;
            }
        int64_t ns = ql_numel((int)m, sub_in);
        double *sub = malloc((size_t)ns * sizeof *sub);
        for (int64_t s = 0; s < ns; s++) {
            int64_t si[4], full = off, st = 1, k = m - 1;
            unravel(s, (int)m, sub_in, si);
            for (int i = nd - 1; i >= 0; i--) {
                if (listed[i])
                    full += si[k--] * st;
                st *= xd[i];
            }
            sub[s] = xdbl[full];
        }
        double want = ref_nd(o, sub, (int)m, sub_in, sub_sc, sub_out, sub_x, sub_r0, sub_r1);
        free(sub);
        double got = dt == QL_F32 ? ((float *)y->data)[e] : ((uint8_t *)y->data)[e];
        if (dt != QL_F32)
            want = (double)(uint8_t)want;
        /* f32 weights and sums against double: 1e-5 relative to the data
         * range (|x| <= 100), since cubic lobes cancel */
        if (!(fabs(got - want) <= 1e-5 * (fabs(want) + 100.0)))
            fail_msg("%s: element %lld: got %.7g, expected %.7g", what, (long long)e, got, want);
    }
    free(xdbl);
    ql_tensor_free(y);
    free_all((ql_tensor *[]){x, tv, troi}, 3);
    tu_node_free(&t);
}

static void test_resize(void **state)
{
    (void)state;
    tu_rng r = {13};
    static const char *const ctms[] = {"half_pixel",    "half_pixel_symmetric", "pytorch_half_pixel",
                                       "align_corners", "asymmetric",           "tf_half_pixel_for_nn"};
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    static const int64_t xd[4] = {1, 2, 4, 5};
    static const double up[4] = {1, 1, 2, 1.7}, down[4] = {1, 1, 0.6, 0.75}, sz[4] = {1, 2, 7, 3},
                        one[4] = {1, 2, 1, 1};
    for (int c = 0; c < 6; c++) {
        for (int m = 0; m < 4; m++) {
            rz_opts o = {"nearest", ctms[c], nms[m], -0.75, 0, 0, 0};
            resize_case(&r, &o, QL_F32, 13, xd, 0, up, 0, NULL, NULL, NULL);
            resize_case(&r, &o, QL_F32, 13, xd, 0, down, 0, NULL, NULL, NULL);
            resize_case(&r, &o, QL_U8, 13, xd, 1, sz, 0, NULL, NULL, NULL);
        }
        if (c == 5)
            continue; /* tf_half_pixel_for_nn is for nearest */
        static const rz_opts interp[] = {{"linear", 0, "floor", -0.75, 0, 0, 0},
                                         {"cubic", 0, "floor", -0.75, 0, 0, 0},
                                         {"cubic", 0, "floor", -0.5, 1, 0, 0}};
        for (int k = 0; k < 3; k++) {
            rz_opts o = interp[k];
            o.ctm = ctms[c];
            resize_case(&r, &o, QL_F32, 13, xd, 0, up, 0, NULL, NULL, NULL);
            resize_case(&r, &o, QL_F32, 13, xd, 0, down, 0, NULL, NULL, NULL);
            resize_case(&r, &o, QL_F32, 13, xd, 1, sz, 0, NULL, NULL, NULL);
            resize_case(&r, &o, QL_F32, 13, xd, 1, one, 0, NULL, NULL, NULL);
        }
    }
    /* tf_crop_and_resize with extrapolation */
    static const float roi[8] = {0, 0, 0.4f, -0.2f, 1, 1, 1.3f, 0.6f};
    rz_opts crop = {"linear", "tf_crop_and_resize", "round_prefer_floor", -0.75, 0, 0, 10};
    resize_case(&r, &crop, QL_F32, 13, xd, 1, sz, 0, NULL, NULL, roi);
    crop.mode = "nearest";
    resize_case(&r, &crop, QL_F32, 13, xd, 0, up, 0, NULL, NULL, roi);
    /* opset 10: (X, scales), asymmetric, floor */
    rz_opts v10 = {"nearest", "asymmetric", "floor", -0.75, 0, 0, 0};
    resize_case(&r, &v10, QL_F32, 10, xd, 0, up, 0, NULL, NULL, NULL);
    v10.mode = "linear";
    resize_case(&r, &v10, QL_F32, 10, xd, 0, down, 0, NULL, NULL, NULL);
    /* opset 18: axes, keep_aspect_ratio_policy, antialias */
    static const int64_t axes[2] = {-1, 2};
    static const double ax_sz[2] = {8, 6}, ax_sc[2] = {0.5, 0.7}, small[4] = {1, 1, 0.45, 0.3};
    rz_opts lin = {"linear", "half_pixel", "round_prefer_floor", -0.75, 0, 0, 0};
    resize_case(&r, &lin, QL_F32, 18, xd, 0, ax_sc, 2, axes, NULL, NULL);
    resize_case(&r, &lin, QL_F32, 18, xd, 1, ax_sz, 2, axes, "not_larger", NULL);
    resize_case(&r, &lin, QL_F32, 18, xd, 1, ax_sz, 2, axes, "not_smaller", NULL);
    static const int64_t big[4] = {1, 1, 9, 11};
    lin.antialias = 1;
    resize_case(&r, &lin, QL_F32, 18, big, 0, small, 0, NULL, NULL, NULL);
    resize_case(&r, &lin, QL_F32, 18, big, 0, up, 0, NULL, NULL, NULL);
    rz_opts cub = {"cubic", "half_pixel", "round_prefer_floor", -0.5, 0, 1, 0};
    resize_case(&r, &cub, QL_F32, 18, big, 0, small, 0, NULL, NULL, NULL);
    cub.exclude = 1;
    resize_case(&r, &cub, QL_F32, 18, big, 0, small, 0, NULL, NULL, NULL);
    /* 2x upsamples of an activation (parallel paths); spatial axes only, so
     * the reference interpolates 2-D slices */
    static const int64_t act[4] = {2, 8, 16, 16}, hw[2] = {2, 3};
    static const double two[2] = {2, 2};
    rz_opts nn = {"nearest", "asymmetric", "floor", -0.75, 0, 0, 0};
    resize_case(&r, &nn, QL_F32, 18, act, 0, two, 2, hw, NULL, NULL);
    lin.antialias = 0;
    resize_case(&r, &lin, QL_F32, 18, act, 0, two, 2, hw, NULL, NULL);

    /* errors: linear on integers, antialias with nearest, both scales and sizes */
    ql_tensor *x = mk(&r, QL_I8, 4, xd), *s = f32s(4, (const float[]){1, 1, 2, 2});
    ql_tensor *zs = i64s(4, (const int64_t[]){1, 2, 8, 10});
    const ql_tensor *in[4] = {x, NULL, s, NULL};
    tu_node t = tu_node_new("Resize", 13, 3, in, (int[]){0, 1, 1, 1}, 1);
    tu_attr_string(&t, "mode", "linear");
    run_fails(&t, in, 3, "only f32 interpolates");
    tu_node_free(&t);
    t = tu_node_new("Resize", 18, 3, in, (int[]){0, 1, 1, 1}, 1);
    tu_attr_int(&t, "antialias", 1);
    run_fails(&t, in, 3, "antialias applies to linear and cubic");
    tu_node_free(&t);
    in[3] = zs;
    t = tu_node_new("Resize", 13, 4, in, (int[]){0, 1, 1, 1}, 1);
    run_fails(&t, in, 4, "exclusive");
    tu_node_free(&t);
    t = tu_node_new("Resize", 13, 4, in, (int[]){0, 1, 1, 1}, 1);
    tu_attr_string(&t, "keep_aspect_ratio_policy", "fill");
    run_fails(&t, in, 4, "keep_aspect_ratio_policy 'fill'");
    tu_node_free(&t);
    free_all((ql_tensor *[]){x, s, zs}, 3);
    /* static: constant scales with an unknown batch */
    int64_t hd[4] = {-1, 3, 10, 10}, want[4] = {-1, 3, 20, 15};
    ql_tensor h = hdr(QL_F32, 4, hd), o[1];
    ql_tensor *sc = f32s(4, (const float[]){1, 1, 2, 1.5f});
    const ql_tensor *hin[3] = {&h, NULL, sc};
    ql_error err;
    t = tu_node_new("Resize", 13, 3, hin, NULL, 1);
    assert_int_equal(infer_only(&t, hin, 1, o, &err), QL_OK);
    check_shape(&o[0], 4, want, "Resize static");
    tu_node_free(&t);
    ql_tensor_free(sc);
}

/* ---------------------------------------------------------------------------
 * The parallel-for every kernel here runs on (engine/pool.c): chunk k of
 * [0, n) is the k-th of equal contiguous parts and runs on thread k, every
 * item exactly once, whatever mix of tiny and large loops (spinning and
 * sleeping workers) and with more threads than chunks.
 * ------------------------------------------------------------------------- */
typedef struct pf_rec {
    int64_t n;
    int chunks;
    int owner[600];
    int count[600];
} pf_rec;

static void pf_fn(void *arg, int64_t begin, int64_t end, int tid)
{
    pf_rec *r = arg;
    for (int64_t i = begin; i < end; i++) {
        r->owner[i] = tid;
        r->count[i]++;
    }
}

static void test_parallel_for(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 5; threads += 2) {
        ql_pool *pool = ql_pool_new(threads);
        assert_non_null(pool);
        ql_exec_ctx ctx;
        ql_ctx_init(&ctx, pool);
        tu_rng rng = {threads};
        pf_rec r;
        for (int it = 0; it < 3000; it++) {
            memset(&r, 0, sizeof r);
            r.n = 1 + tu_next(&rng) % 600;
            int64_t grain = 1 + tu_next(&rng) % 300;
            ql_parallel_for(&ctx, r.n, grain, pf_fn, &r);
            int64_t chunks = (r.n + grain - 1) / grain;
            if (chunks > ql_pool_threads(pool))
                chunks = ql_pool_threads(pool);
            for (int64_t i = 0; i < r.n; i++) {
                assert_int_equal(r.count[i], 1);
                int64_t k = 0; /* the chunk holding i: begin = n*k/chunks */
                while (k + 1 < chunks && r.n * (k + 1) / chunks <= i)
                    k++;
                assert_int_equal(r.owner[i], k);
            }
            if (it % 500 == 499) { /* let the workers fall asleep now and then */
                struct timespec ts = {0, 2000000};
                nanosleep(&ts, NULL);
            }
        }
        ql_ctx_destroy(&ctx);
        ql_pool_free(pool);
    }
}

/* ---------------------------------------------------------------------------
 * Cast and ConstantOfShape (ops/cast.c)
 * ------------------------------------------------------------------------- */
static void test_cast(void **state)
{
    (void)state;
    /* float to int: truncation toward zero, saturation, NaN as 0 */
    static const float xf[8] = {1.9f, -1.9f, 300.0f, -300.0f, 0.5f, -0.0f, NAN, 1e30f};
    static const int8_t want_i8[8] = {1, -1, 127, -128, 0, 0, 0, 127};
    static const uint8_t want_u8[8] = {1, 0, 255, 0, 0, 0, 0, 255};
    static const int64_t want_i64[8] = {1, -1, 300, -300, 0, 0, 0, INT64_MAX - 1023};
    static const uint8_t want_b[8] = {1, 1, 1, 1, 1, 0, 1, 1};
    int64_t d[1] = {8};
    ql_tensor *x = ql_tensor_new(QL_F32, 1, d);
    memcpy(x->data, xf, sizeof xf);
    const ql_tensor *in[1] = {x};
    struct {
        int onnx;
        ql_dtype dt;
        const void *want;
        size_t bytes;
    } cases[] = {{3, QL_I8, want_i8, sizeof want_i8},
                 {2, QL_U8, want_u8, sizeof want_u8},
                 {7, QL_I64, want_i64, sizeof want_i64},
                 {9, QL_BOOL, want_b, sizeof want_b}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tu_node t = tu_node_new("Cast", 13, 1, in, NULL, 1);
        ql_node_add_attr(t.g, t.node, "to", QL_ATTR_INT)->i = cases[c].onnx;
        ql_tensor *y;
        run2(&t, in, 1, 1, &y, "Cast from float");
        assert_int_equal(y->dtype, cases[c].dt);
        check_shape(y, 1, d, "Cast from float");
        assert_memory_equal(y->data, cases[c].want, cases[c].bytes);
        ql_tensor_free(y);
        tu_node_free(&t);
    }
    ql_tensor_free(x);

    /* int64 to float, and to narrower ints with wrap-around */
    static const int64_t xi[4] = {-1, 256, 40000, -129};
    static const float want_f[4] = {-1.0f, 256.0f, 40000.0f, -129.0f};
    static const int8_t want_w8[4] = {-1, 0, 64, 127};
    static const int16_t want_w16[4] = {-1, 256, -25536, -129};
    d[0] = 4;
    x = ql_tensor_new(QL_I64, 1, d);
    memcpy(x->data, xi, sizeof xi);
    in[0] = x;
    struct {
        int onnx;
        const void *want;
        size_t bytes;
    } ic[] = {{1, want_f, sizeof want_f}, {3, want_w8, sizeof want_w8}, {5, want_w16, sizeof want_w16}};
    for (size_t c = 0; c < sizeof ic / sizeof ic[0]; c++) {
        tu_node t = tu_node_new("Cast", 13, 1, in, NULL, 1);
        ql_node_add_attr(t.g, t.node, "to", QL_ATTR_INT)->i = ic[c].onnx;
        ql_tensor *y;
        run2(&t, in, 1, 1, &y, "Cast from int64");
        assert_memory_equal(y->data, ic[c].want, ic[c].bytes);
        ql_tensor_free(y);
        tu_node_free(&t);
    }
    /* a dtype the engine lacks: a clear error */
    tu_node t = tu_node_new("Cast", 13, 1, in, NULL, 1);
    ql_node_add_attr(t.g, t.node, "to", QL_ATTR_INT)->i = 11; /* DOUBLE */
    run_fails(&t, in, 1, "ONNX type 11 is not supported");
    tu_node_free(&t);
    ql_tensor_free(x);
}

static void test_constant_of_shape(void **state)
{
    (void)state;
    int64_t d[1] = {3};
    ql_tensor *shape = ql_tensor_new(QL_I64, 1, d);
    ((int64_t *)shape->data)[0] = 2;
    ((int64_t *)shape->data)[1] = 1;
    ((int64_t *)shape->data)[2] = 3;
    const ql_tensor *in[1] = {shape};
    int is_const[1] = {1};
    /* default: float zeros */
    tu_node t = tu_node_new("ConstantOfShape", 13, 1, in, is_const, 1);
    ql_tensor *y;
    run2(&t, in, 1, 1, &y, "ConstantOfShape default");
    int64_t want[3] = {2, 1, 3};
    check_shape(y, 3, want, "ConstantOfShape default");
    assert_int_equal(y->dtype, QL_F32);
    for (int i = 0; i < 6; i++)
        assert_true(((float *)y->data)[i] == 0.0f && !signbit(((float *)y->data)[i]));
    ql_tensor_free(y);
    tu_node_free(&t);
    /* an int64 value */
    int64_t one[1] = {1};
    ql_tensor *v = ql_tensor_new(QL_I64, 1, one);
    ((int64_t *)v->data)[0] = -7;
    t = tu_node_new("ConstantOfShape", 13, 1, in, is_const, 1);
    ql_node_add_attr(t.g, t.node, "value", QL_ATTR_TENSOR)->t = v;
    run2(&t, in, 1, 1, &y, "ConstantOfShape int64");
    assert_int_equal(y->dtype, QL_I64);
    for (int i = 0; i < 6; i++)
        assert_int_equal(((int64_t *)y->data)[i], -7);
    ql_tensor_free(y);
    tu_node_free(&t);
    /* an empty shape: a scalar */
    int64_t z[1] = {0};
    ql_tensor *es = ql_tensor_new(QL_I64, 1, z);
    in[0] = es;
    t = tu_node_new("ConstantOfShape", 13, 1, in, is_const, 1);
    run2(&t, in, 1, 1, &y, "ConstantOfShape scalar");
    assert_int_equal(y->ndim, 0);
    ql_tensor_free(y);
    tu_node_free(&t);
    ql_tensor_free(es);
    /* a negative extent */
    ((int64_t *)shape->data)[1] = -2;
    in[0] = shape;
    t = tu_node_new("ConstantOfShape", 13, 1, in, NULL, 1);
    run_fails(&t, in, 1, "negative extent -2");
    tu_node_free(&t);
    ql_tensor_free(shape);
}

/* Dynamic loops hand out ranges of `grain` items (the last one shorter)
 * to whichever thread is free: every item exactly once, every range
 * aligned to the grain, tids in [0, threads) and never two ranges on one
 * tid at the same time; mixed with static loops on the same pool. */
typedef struct pfd_rec {
    int64_t n, grain;
    int threads;
    atomic_int count[600];
    atomic_int busy[8];
    atomic_int bad;
} pfd_rec;

static void pfd_fn(void *arg, int64_t begin, int64_t end, int tid)
{
    pfd_rec *r = arg;
    if (tid < 0 || tid >= r->threads || atomic_fetch_add(&r->busy[tid], 1) != 0) {
        atomic_store(&r->bad, 1);
        return;
    }
    if (begin % r->grain || (end - begin != r->grain && end != r->n) || end > r->n)
        atomic_store(&r->bad, 1);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&r->count[i], 1);
    atomic_fetch_sub(&r->busy[tid], 1);
}

static void test_parallel_for_dynamic(void **state)
{
    (void)state;
    static pfd_rec r;
    static pf_rec rs;
    for (int threads = 1; threads <= 5; threads += 2) {
        ql_pool *pool = ql_pool_new(threads);
        assert_non_null(pool);
        ql_exec_ctx ctx;
        ql_ctx_init(&ctx, pool);
        tu_rng rng = {threads + 10};
        for (int it = 0; it < 3000; it++) {
            memset(&r, 0, sizeof r);
            r.threads = threads;
            r.n = 1 + tu_next(&rng) % 600;
            r.grain = 1 + tu_next(&rng) % 40;
            ql_parallel_for_dynamic(&ctx, r.n, r.grain, pfd_fn, &r);
            assert_int_equal(atomic_load(&r.bad), 0);
            for (int64_t i = 0; i < r.n; i++)
                assert_int_equal(atomic_load(&r.count[i]), 1);
            if (it % 3 == 0) { /* a static loop in between still splits statically */
                memset(&rs, 0, sizeof rs);
                rs.n = 1 + tu_next(&rng) % 600;
                ql_parallel_for(&ctx, rs.n, 1, pf_fn, &rs);
                int64_t chunks = rs.n < threads ? rs.n : threads;
                for (int64_t i = 0; i < rs.n; i++) {
                    int64_t k = 0;
                    while (k + 1 < chunks && rs.n * (k + 1) / chunks <= i)
                        k++;
                    assert_int_equal(rs.count[i], 1);
                    assert_int_equal(rs.owner[i], k);
                }
            }
            if (it % 500 == 499) {
                struct timespec ts = {0, 2000000};
                nanosleep(&ts, NULL);
            }
        }
        ql_ctx_destroy(&ctx);
        ql_pool_free(pool);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reshape),   cmocka_unit_test(test_reshape_static),
        cmocka_unit_test(test_flatten),   cmocka_unit_test(test_squeeze_unsqueeze),
        cmocka_unit_test(test_shape),     cmocka_unit_test(test_identity_dropout),
        cmocka_unit_test(test_constant),  cmocka_unit_test(test_concat),
        cmocka_unit_test(test_split),     cmocka_unit_test(test_slice),
        cmocka_unit_test(test_transpose), cmocka_unit_test(test_pad),
        cmocka_unit_test(test_gather),    cmocka_unit_test(test_resize),
        cmocka_unit_test(test_parallel_for),
        cmocka_unit_test(test_parallel_for_dynamic),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_constant_of_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
