/* Unit tests: ONNX import (initializer encodings, Constant nodes, external
 * data, malformed files, unsupported-op reports) and the simplification
 * passes (Identity/Dropout removal, BatchNorm folding, constant and shape
 * folding), checked numerically against the unsimplified graph.
 * Models are built in memory with protobuf-c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/dataset.h"
#include "engine/exec.h"
#include "engine/onnx.h"
#include "engine/passes.h"
#include "engine/qnet.h"
#include "onnx.pb-c.h"
#include "testutil.h"

/* ---------------------------------------------------------------------------
 * model builder: every allocation is tracked and freed by mb_free
 * ------------------------------------------------------------------------- */
enum { MB_MAX = 64 };

typedef struct mb {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
    Onnx__NodeProto *nodes[MB_MAX];
    Onnx__TensorProto *inits[MB_MAX];
    Onnx__ValueInfoProto *ins[MB_MAX], *outs[MB_MAX], *vis[MB_MAX];
    void **mem;
    int n_mem, cap_mem;
} mb;

enum { ENC_RAW, ENC_TYPED };

static void *mb_alloc(mb *b, size_t n)
{
    if (b->n_mem == b->cap_mem) {
        b->cap_mem = b->cap_mem ? b->cap_mem * 2 : 256;
        b->mem = realloc(b->mem, (size_t)b->cap_mem * sizeof *b->mem);
        assert_non_null(b->mem);
    }
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    b->mem[b->n_mem++] = p;
    return p;
}

static char *mb_str(mb *b, const char *s)
{
    char *d = mb_alloc(b, strlen(s) + 1);
    strcpy(d, s);
    return d;
}

static mb *mb_new(int64_t opset)
{
    mb *b = calloc(1, sizeof *b);
    assert_non_null(b);
    onnx__model_proto__init(&b->model);
    onnx__graph_proto__init(&b->graph);
    onnx__operator_set_id_proto__init(&b->opset);
    b->opset.has_version = 1;
    b->opset.version = opset;
    b->opset.domain = mb_str(b, "");
    b->opsets[0] = &b->opset;
    b->model.n_opset_import = 1;
    b->model.opset_import = b->opsets;
    b->model.has_ir_version = 1;
    b->model.ir_version = 8;
    b->model.producer_name = mb_str(b, "test_onnx");
    b->model.graph = &b->graph;
    b->graph.name = mb_str(b, "g");
    b->graph.node = b->nodes;
    b->graph.initializer = b->inits;
    b->graph.input = b->ins;
    b->graph.output = b->outs;
    b->graph.value_info = b->vis;
    return b;
}

static void mb_free(mb *b)
{
    for (int i = 0; i < b->n_mem; i++)
        free(b->mem[i]);
    free(b->mem);
    free(b);
}

/* Splits "a,,b" into {"a", "", "b"}; "" gives no names. */
static size_t mb_names(mb *b, const char *csv, char ***out)
{
    size_t n = csv[0] ? 1 : 0;
    for (const char *c = csv; *c; c++)
        n += *c == ',';
    char **v = mb_alloc(b, (n + 1) * sizeof *v);
    const char *p = csv;
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(p, ",");
        v[i] = mb_alloc(b, len + 1);
        memcpy(v[i], p, len);
        p += len + (p[len] == ',');
    }
    *out = v;
    return n;
}

static Onnx__NodeProto *mb_node(mb *b, const char *op, const char *name, const char *ins,
                                const char *outs)
{
    Onnx__NodeProto *n = mb_alloc(b, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = mb_str(b, op);
    n->name = mb_str(b, name);
    n->n_input = mb_names(b, ins, &n->input);
    n->n_output = mb_names(b, outs, &n->output);
    n->attribute = mb_alloc(b, 16 * sizeof *n->attribute);
    b->nodes[b->graph.n_node++] = n;
    return n;
}

static Onnx__AttributeProto *mb_attr(mb *b, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = mb_alloc(b, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = mb_str(b, name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void mb_attr_i(mb *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void mb_attr_f(mb *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static void mb_attr_ints(mb *b, Onnx__NodeProto *n, const char *name, size_t cnt,
                         const int64_t *v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = cnt;
    a->ints = mb_alloc(b, cnt * sizeof *v);
    memcpy(a->ints, v, cnt * sizeof *v);
}

/* A TensorProto of ONNX type `type` from host data, stored raw or in the
 * typed field that type uses. */
static Onnx__TensorProto *mb_tensor(mb *b, const char *name, int type, int ndim,
                                    const int64_t *dims, const void *data, int enc)
{
    Onnx__TensorProto *t = mb_alloc(b, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = mb_str(b, name);
    t->has_data_type = 1;
    t->data_type = type;
    t->n_dims = (size_t)ndim;
    t->dims = mb_alloc(b, (size_t)ndim * sizeof *dims);
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    size_t n = (size_t)ql_numel(ndim, dims), es;
    switch (type) {
    case 1: case 6: es = 4; break;
    case 2: case 3: case 9: es = 1; break;
    case 5: es = 2; break;
    default: es = 8; break; /* INT64, DOUBLE */
    }
    if (enc == ENC_RAW) {
        t->has_raw_data = 1;
        t->raw_data.len = n * es;
        t->raw_data.data = mb_alloc(b, n * es);
        if (n)
            memcpy(t->raw_data.data, data, n * es);
        return t;
    }
    if (n == 0)
        return t;
    switch (type) {
    case 1:
        t->n_float_data = n;
        t->float_data = mb_alloc(b, n * 4);
        memcpy(t->float_data, data, n * 4);
        break;
    case 7:
        t->n_int64_data = n;
        t->int64_data = mb_alloc(b, n * 8);
        memcpy(t->int64_data, data, n * 8);
        break;
    case 11:
        t->n_double_data = n;
        t->double_data = mb_alloc(b, n * 8);
        memcpy(t->double_data, data, n * 8);
        break;
    default: /* int8/uint8/int16/int32/bool travel as int32 */
        t->n_int32_data = n;
        t->int32_data = mb_alloc(b, n * 4);
        for (size_t i = 0; i < n; i++) {
            const unsigned char *p = (const unsigned char *)data + i * es;
            t->int32_data[i] = type == 3   ? *(const int8_t *)p
                               : type == 5 ? *(const int16_t *)p
                               : type == 6 ? *(const int32_t *)p
                                           : *p;
        }
    }
    return t;
}

static Onnx__TensorProto *mb_init_f32(mb *b, const char *name, int ndim, const int64_t *dims,
                                      const float *data)
{
    Onnx__TensorProto *t = mb_tensor(b, name, 1, ndim, dims, data, ENC_RAW);
    b->inits[b->graph.n_initializer++] = t;
    return t;
}

static void mb_init_i64(mb *b, const char *name, int ndim, const int64_t *dims,
                        const int64_t *data)
{
    b->inits[b->graph.n_initializer++] = mb_tensor(b, name, 7, ndim, dims, data, ENC_RAW);
}

/* dims[i] < 0 becomes the symbolic dimension "N"; ndim < 0: no shape. */
static Onnx__ValueInfoProto *mb_vi(mb *b, const char *name, int elem, int ndim,
                                   const int64_t *dims)
{
    Onnx__ValueInfoProto *vi = mb_alloc(b, sizeof *vi);
    onnx__value_info_proto__init(vi);
    vi->name = mb_str(b, name);
    Onnx__TypeProto *tp = mb_alloc(b, sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = mb_alloc(b, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = elem;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->type = tp;
    if (ndim < 0)
        return vi;
    Onnx__TensorShapeProto *sh = mb_alloc(b, sizeof *sh);
    onnx__tensor_shape_proto__init(sh);
    sh->n_dim = (size_t)ndim;
    sh->dim = mb_alloc(b, (size_t)ndim * sizeof *sh->dim);
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = mb_alloc(b, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = mb_str(b, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        sh->dim[i] = d;
    }
    tt->shape = sh;
    return vi;
}

static void mb_input(mb *b, const char *name, int ndim, const int64_t *dims)
{
    b->ins[b->graph.n_input++] = mb_vi(b, name, 1, ndim, dims);
}

static void mb_output(mb *b, const char *name)
{
    b->outs[b->graph.n_output++] = mb_vi(b, name, 1, -1, NULL);
}

/* Serializes the model; the caller frees the buffer. */
static uint8_t *mb_pack(mb *b, size_t *len)
{
    *len = onnx__model_proto__get_packed_size(&b->model);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(onnx__model_proto__pack(&b->model, buf), *len);
    return buf;
}

/* ---------------------------------------------------------------------------
 * helpers over loaded models
 * ------------------------------------------------------------------------- */
static ql_status load(mb *b, bool raw, ql_model **m, ql_error *err)
{
    size_t len;
    uint8_t *buf = mb_pack(b, &len);
    memset(err, 0, sizeof *err);
    ql_status st = raw ? ql_onnx_parse(buf, len, "model.onnx", m, err)
                       : ql_model_load_buffer(buf, len, "model.onnx", m, err);
    free(buf);
    return st;
}

static ql_model *load_ok(mb *b, bool raw)
{
    ql_model *m = NULL;
    ql_error err;
    ql_status st = load(b, raw, &m, &err);
    if (st != QL_OK)
        fail_msg("load failed: %s", err.msg);
    if (raw) { /* ql_onnx_parse stops before prepare; the executor needs it */
        st = ql_graph_prepare(m->graph, &err);
        if (st != QL_OK)
            fail_msg("prepare failed: %s", err.msg);
    }
    return m;
}

/* Loads a model that must fail; returns the status, message in err. */
static ql_status load_fail(mb *b, ql_error *err)
{
    ql_model *m = NULL;
    ql_status st = load(b, false, &m, err);
    assert_int_not_equal(st, QL_OK);
    assert_null(m);
    return st;
}

static const ql_value *value(const ql_model *m, const char *name)
{
    int v = ql_graph_find_value(m->graph, name);
    if (v < 0)
        fail_msg("no value '%s'", name);
    return &m->graph->values[v];
}

/* Op types of the nodes, space-separated, for compact structural checks. */
static const char *node_ops(const ql_model *m, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < m->graph->n_nodes && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? " " : "",
                                m->graph->nodes[i].op_type);
    return buf;
}

static void assert_ops(const ql_model *m, const char *want)
{
    char buf[1024];
    assert_string_equal(node_ops(m, buf, sizeof buf), want);
}

/* Runs a model on one input, returns output 0 (caller frees). */
static ql_tensor *run1(ql_model *m, const ql_tensor *x)
{
    ql_exec *ex = NULL;
    ql_error err;
    ql_exec_opts o = {.n_threads = 1};
    ql_tensor *outs[4] = {0};
    if (ql_exec_new(m->graph, &o, &ex, &err) != QL_OK)
        fail_msg("exec_new: %s", err.msg);
    const ql_tensor *in[1] = {x};
    if (ql_exec_run(ex, in, outs, &err) != QL_OK)
        fail_msg("run: %s", err.msg);
    ql_exec_free(ex);
    for (int j = 1; j < m->graph->n_outputs; j++)
        ql_tensor_free(outs[j]);
    return outs[0];
}

static void assert_close(const ql_tensor *a, const ql_tensor *b, float rtol, float atol)
{
    assert_true(ql_shape_equal(a->ndim, a->dims, b->ndim, b->dims));
    int64_t bad = tu_first_mismatch(a->data, b->data, ql_tensor_numel(a), rtol, atol);
    if (bad >= 0)
        fail_msg("element %lld: %g vs %g", (long long)bad, ((float *)a->data)[bad],
                 ((float *)b->data)[bad]);
}

/* Random f32 initializer. */
static void rand_init(mb *b, tu_rng *r, const char *name, int ndim, const int64_t *dims,
                      float lo, float hi)
{
    int64_t n = ql_numel(ndim, dims);
    float *d = malloc((size_t)n * sizeof *d);
    tu_fill(r, d, n, lo, hi);
    mb_init_f32(b, name, ndim, dims, d);
    free(d);
}

/* x [N,4] (dynamic N) -> Relu -> y: the smallest valid model. */
static mb *tiny_model(void)
{
    mb *b = mb_new(13);
    int64_t d[2] = {-1, 4};
    mb_input(b, "x", 2, d);
    mb_node(b, "Relu", "r", "x", "y");
    mb_output(b, "y");
    return b;
}

/* ---------------------------------------------------------------------------
 * import
 * ------------------------------------------------------------------------- */
static void test_initializer_encodings(void **state)
{
    (void)state;
    mb *b = tiny_model();
    int64_t d23[2] = {2, 3};
    float f[6] = {1.5f, -2.0f, 0.0f, 3.25f, -1e-3f, 1e9f};
    int64_t i64[6] = {-5, 0, INT64_C(1) << 40, 7, -(INT64_C(1) << 62), 1};
    int8_t i8[6] = {-128, -1, 0, 1, 127, 5};
    uint8_t u8[6] = {0, 1, 128, 255, 7, 9};
    int16_t i16[6] = {-32768, 32767, 0, -1, 300, 12};
    int32_t i32[6] = {INT32_MIN, INT32_MAX, 0, -7, 65536, 3};
    uint8_t bl[6] = {1, 0, 1, 1, 0, 0};
    struct {
        const char *name;
        int type;
        const void *data;
        size_t size;
    } cases[] = {{"f32", 1, f, 4}, {"i64", 7, i64, 8}, {"i8", 3, i8, 1}, {"u8", 2, u8, 1},
                 {"i16", 5, i16, 2}, {"i32", 6, i32, 4}, {"bool", 9, bl, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int enc = ENC_RAW; enc <= ENC_TYPED; enc++) {
            char name[32];
            snprintf(name, sizeof name, "%s_%s", cases[c].name, enc == ENC_RAW ? "raw" : "typed");
            b->inits[b->graph.n_initializer++] =
                mb_tensor(b, name, cases[c].type, 2, d23, cases[c].data, enc);
        }
    /* a scalar and an empty tensor */
    float one = 1.0f;
    b->inits[b->graph.n_initializer++] = mb_tensor(b, "scalar", 1, 0, NULL, &one, ENC_TYPED);
    int64_t d0[1] = {0};
    b->inits[b->graph.n_initializer++] = mb_tensor(b, "empty", 1, 1, d0, NULL, ENC_TYPED);

    ql_model *m = load_ok(b, true); /* raw parse keeps unused initializers */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int enc = ENC_RAW; enc <= ENC_TYPED; enc++) {
            char name[32];
            snprintf(name, sizeof name, "%s_%s", cases[c].name, enc == ENC_RAW ? "raw" : "typed");
            const ql_value *v = value(m, name);
            assert_non_null(v->constant);
            assert_int_equal(v->constant->dtype, v->dtype);
            assert_int_equal(ql_dtype_info(v->dtype)->onnx_type, cases[c].type);
            assert_true(ql_shape_equal(v->constant->ndim, v->constant->dims, 2, d23));
            assert_memory_equal(v->constant->data, cases[c].data, 6 * cases[c].size);
            assert_false(v->is_input);
        }
    assert_int_equal(value(m, "scalar")->constant->ndim, 0);
    assert_true(*(float *)value(m, "scalar")->constant->data == 1.0f);
    assert_int_equal(ql_tensor_numel(value(m, "empty")->constant), 0);
    ql_model_free(m);
    mb_free(b);
}

/* Initializers also listed as graph inputs (IR < 4 style) are constants. */
static void test_initializer_listed_as_input(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t d[2] = {-1, 3}, d3[1] = {3};
    float w[3] = {1, 2, 3};
    mb_input(b, "x", 2, d);
    mb_input(b, "w", 1, d3);
    mb_init_f32(b, "w", 1, d3, w);
    mb_node(b, "Add", "add", "x,w", "y");
    mb_output(b, "y");
    ql_model *m = load_ok(b, false);
    assert_int_equal(m->graph->n_inputs, 1);
    assert_string_equal(m->graph->values[m->graph->inputs[0]].name, "x");
    assert_non_null(value(m, "w")->constant);
    assert_false(value(m, "w")->is_input);
    ql_model_free(m);
    mb_free(b);
}

static void test_constant_nodes(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t d[2] = {-1, 3}, d3[1] = {3};
    float cv[3] = {0.5f, -1.0f, 2.0f};
    int64_t iv[2] = {4, -2};
    mb_input(b, "x", 2, d);
    Onnx__NodeProto *n = mb_node(b, "Constant", "c_tensor", "", "c1");
    mb_attr(b, n, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)->t =
        mb_tensor(b, "", 1, 1, d3, cv, ENC_TYPED);
    n = mb_node(b, "Constant", "c_float", "", "c2");
    mb_attr_f(b, n, "value_float", 3.0f);
    n = mb_node(b, "Constant", "c_ints", "", "c3");
    mb_attr_ints(b, n, "value_ints", 2, iv);
    n = mb_node(b, "Constant", "c_int", "", "c4");
    mb_attr_i(b, n, "value_int", -9);
    mb_node(b, "Add", "add", "x,c1", "a");
    mb_node(b, "Mul", "mul", "a,c2", "y");
    mb_output(b, "y");

    ql_model *m = load_ok(b, true);
    assert_ops(m, "Add Mul"); /* no Constant nodes remain */
    const ql_tensor *t = value(m, "c1")->constant;
    assert_non_null(t);
    assert_int_equal(t->dtype, QL_F32);
    assert_memory_equal(t->data, cv, sizeof cv);
    t = value(m, "c2")->constant;
    assert_int_equal(t->ndim, 0);
    assert_true(*(float *)t->data == 3.0f);
    t = value(m, "c3")->constant;
    assert_int_equal(t->dtype, QL_I64);
    assert_int_equal(t->dims[0], 2);
    assert_memory_equal(t->data, iv, sizeof iv);
    assert_int_equal(*(int64_t *)value(m, "c4")->constant->data, -9);
    ql_model_free(m);

    /* and the result is right: y = (x + c1) * 3 */
    m = load_ok(b, false);
    int64_t xd[2] = {2, 3};
    tu_rng r = {1};
    ql_tensor *x = tu_rand(&r, 2, xd, -1, 1), *y = run1(m, x);
    for (int i = 0; i < 6; i++)
        assert_true(tu_close(((float *)y->data)[i], (((float *)x->data)[i] + cv[i % 3]) * 3.0f,
                             1e-6f, 0));
    ql_tensor_free(x);
    ql_tensor_free(y);
    ql_model_free(m);
    mb_free(b);
}

static void expect_format(const void *buf, size_t len, const char *name)
{
    ql_model *m = NULL;
    ql_error err = {{0}};
    ql_status st = ql_model_load_buffer(buf, len, name, &m, &err);
    if (st != QL_ERR_FORMAT)
        fail_msg("%s (%zu bytes): status %s, message '%s'", name, len, ql_status_str(st), err.msg);
    assert_null(m);
    assert_non_null(strstr(err.msg, name));
}

static void test_malformed_buffers(void **state)
{
    (void)state;
    mb *b = tiny_model();
    size_t len;
    uint8_t *buf = mb_pack(b, &len);

    expect_format(buf, 0, "empty.onnx");
    ql_error err;
    ql_model *m = NULL;
    ql_model_load_buffer(buf, 0, "empty.onnx", &m, &err);
    assert_non_null(strstr(err.msg, "empty"));
    /* every truncation of a valid model */
    for (size_t cut = 1; cut < len; cut++)
        expect_format(buf, cut, "trunc.onnx");
    /* random bytes, fixed seed */
    tu_rng r = {42};
    uint8_t rnd[4096];
    for (int k = 0; k < 64; k++) {
        size_t n = 1 + tu_next(&r) % sizeof rnd;
        for (size_t i = 0; i < n; i++)
            rnd[i] = (uint8_t)tu_next(&r);
        expect_format(rnd, n, "random.onnx");
    }
    /* other file types */
    static const uint8_t png[] = {0x89, 'P',  'N',  'G',  '\r', '\n', 0x1a, '\n', 0,    0,   0,
                                  13,   'I',  'H',  'D',  'R',  0,    0,    0,    16,   0,   0,
                                  0,    16,   8,    6,    0,    0,    0,    0x1f, 0xf3, 0xff, 0x61};
    expect_format(png, sizeof png, "image.png");
    const char *text = "ir_version: 8\ngraph { node { op_type: \"Relu\" } }\n";
    expect_format(text, strlen(text), "model.txt");
    static const uint8_t zeros[64] = {0};
    expect_format(zeros, sizeof zeros, "zeros.onnx");
    free(buf);
    mb_free(b);
}

/* Corrupting single bytes of a valid model must give a result or a clean
 * error, never a crash (run under the sanitizers). */
static void test_corrupted_bytes(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t d[4] = {-1, 2, 4, 4}, wd[4] = {3, 2, 3, 3};
    tu_rng r = {7};
    mb_input(b, "x", 4, d);
    rand_init(b, &r, "w", 4, wd, -1, 1);
    Onnx__NodeProto *n = mb_node(b, "Conv", "conv", "x,w", "c");
    int64_t pads[4] = {1, 1, 1, 1};
    mb_attr_ints(b, n, "pads", 4, pads);
    mb_node(b, "Relu", "relu", "c", "y");
    mb_output(b, "y");
    size_t len;
    uint8_t *buf = mb_pack(b, &len), *bad = malloc(len);
    int ok = 0;
    for (size_t i = 0; i < len; i++)
        for (int k = 0; k < 3; k++) {
            static const uint8_t flips[3] = {0xff, 0x80, 0x01};
            memcpy(bad, buf, len);
            bad[i] ^= flips[k];
            ql_model *m = NULL;
            ql_error err = {{0}};
            ql_status st = ql_model_load_buffer(bad, len, "flip.onnx", &m, &err);
            if (st == QL_OK) {
                ok++;
                ql_model_free(m);
            } else {
                assert_non_null(strstr(err.msg, "flip.onnx"));
            }
        }
    assert_true(ok > 0); /* flips inside weight bytes still load */
    free(bad);
    free(buf);
    mb_free(b);
}

static void test_files_on_disk(void **state)
{
    (void)state;
    char dir[] = "/tmp/qlens_test_onnx_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    mb *b = tiny_model();
    size_t len;
    uint8_t *buf = mb_pack(b, &len);

    snprintf(path, sizeof path, "%s/cut.onnx", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len / 2, f), len / 2);
    fclose(f);
    ql_model *m = NULL;
    ql_error err;
    assert_int_equal(ql_model_load(path, &m, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_null(m);

    snprintf(path, sizeof path, "%s/missing.onnx", dir);
    assert_int_equal(ql_model_load(path, &m, &err), QL_ERR_IO);
    assert_non_null(strstr(err.msg, path));

    /* a whole file loads, with the file's fingerprint (FNV-1a 64) */
    snprintf(path, sizeof path, "%s/ok.onnx", dir);
    f = fopen(path, "wb");
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    assert_int_equal(ql_model_load(path, &m, &err), QL_OK);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ buf[i]) * 1099511628211ULL;
    assert_true(m->fingerprint == h);
    assert_string_equal(m->path, path);
    assert_string_equal(m->producer, "test_onnx");
    assert_int_equal(m->ir_version, 8);
    assert_int_equal(m->opset, 13);
    ql_model_free(m);

    unlink(path);
    snprintf(path, sizeof path, "%s/cut.onnx", dir);
    unlink(path);
    rmdir(dir);
    free(buf);
    mb_free(b);
}

static void test_unsupported_ops_listed(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t d[2] = {-1, 4}, one[1] = {1}, kv[1] = {2};
    mb_input(b, "x", 2, d);
    mb_init_i64(b, "k", 1, one, kv);
    mb_node(b, "TopK", "topk_0", "x,k", "v0,i0");
    mb_node(b, "NonMaxSuppression", "nms_1", "x,x", "sel");
    mb_node(b, "Relu", "relu", "x", "r");
    mb_node(b, "TopK", "topk_3", "r,k", "v3,i3");
    Onnx__NodeProto *n = mb_node(b, "FusedConv", "fc", "x", "f");
    n->domain = mb_str(b, "com.microsoft");
    mb_node(b, "HardSwish", "hs", "x", "h"); /* since opset 14 */
    n = mb_node(b, "If", "if_0", "x", "z"); /* graph attributes of unknown ops are ignored */
    Onnx__GraphProto *sub = mb_alloc(b, sizeof *sub);
    onnx__graph_proto__init(sub);
    mb_attr(b, n, "then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)->g = sub;
    mb_output(b, "v0");
    mb_output(b, "v3");
    ql_error err;
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "model.onnx: 6 unsupported ops (opset 13): TopK (topk_0, topk_3), "
                                 "NonMaxSuppression (nms_1), com.microsoft.FusedConv (fc), "
                                 "HardSwish (hs), If (if_0)");
    mb_free(b);

    /* the same op at an opset that has it */
    b = tiny_model();
    b->opset.version = 14;
    mb_node(b, "HardSwish", "hs", "x", "h");
    mb_output(b, "h");
    ql_model *m = load_ok(b, false);
    ql_model_free(m);
    mb_free(b);

    /* a model with only another domain's opset lists that domain's ops */
    b = tiny_model();
    b->opset.domain = mb_str(b, "ai.onnx.ml");
    b->graph.n_node = 0;
    n = mb_node(b, "Normalizer", "norm", "x", "y");
    n->domain = mb_str(b, "ai.onnx.ml");
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "model.onnx: 1 unsupported op (opset 0): ai.onnx.ml.Normalizer (norm)");
    /* ... and a default-domain node without the default opset is malformed */
    b->graph.n_node = 0;
    mb_node(b, "Relu", "r", "x", "y");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "model.onnx: node 'r' (Relu) is in the default ONNX domain"));
    mb_free(b);
}

static void test_opset_and_attribute_limits(void **state)
{
    (void)state;
    mb *b = tiny_model();
    ql_error err;
    b->opset.version = 22;
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "model.onnx: the model uses opset 22 of the default ONNX domain; "
                                 "qlens supports opsets up to 21");
    b->opset.version = 7; /* older opsets load when the ops exist there */
    ql_model *m = load_ok(b, false);
    assert_int_equal(m->opset, 7);
    ql_model_free(m);
    b->opset.version = 13;
    Onnx__GraphProto *sub = mb_alloc(b, sizeof *sub);
    onnx__graph_proto__init(sub);
    mb_attr(b, b->nodes[0], "body", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)->g = sub;
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "model.onnx: node 'r' (Relu): attribute 'body' is a graph"));
    b->nodes[0]->attribute[0]->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR;
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "node 'r' (Relu): attribute 'body'"));
    mb_free(b);
}

static void test_invalid_graphs(void **state)
{
    (void)state;
    ql_error err;
    int64_t d[2] = {-1, 3}, d3[1] = {3};
    float w[3] = {1, 2, 3};

    /* a value read but never defined */
    mb *b = tiny_model();
    mb_node(b, "Add", "add", "y,ghost", "z");
    mb_output(b, "z");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'add' (Add) reads 'ghost', which no node "
                                 "produces and is neither a graph input nor an initializer");
    mb_free(b);

    /* two nodes writing one value */
    b = tiny_model();
    mb_node(b, "Relu", "again", "x", "y");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'again' writes 'y', which node 'r' also writes");
    mb_free(b);

    /* an output nobody makes */
    b = tiny_model();
    mb_output(b, "nowhere");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: graph output 'nowhere' is never produced");
    mb_free(b);

    /* f64 initializers are refused by name */
    b = mb_new(13);
    mb_input(b, "x", 2, d);
    double wd[3] = {1, 2, 3};
    b->inits[b->graph.n_initializer++] = mb_tensor(b, "w64", 11, 1, d3, wd, ENC_TYPED);
    mb_node(b, "Add", "add", "x,w64", "y");
    mb_output(b, "y");
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "model.onnx: tensor 'w64' has data type DOUBLE, which qlens does "
                                 "not support");
    /* data that does not fill the shape */
    b->inits[0] = mb_init_f32(b, "w64", 1, d3, w);
    b->graph.n_initializer = 1;
    b->inits[0]->raw_data.len = 8;
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: tensor 'w64' holds 2 elements but its shape needs 3");
    /* a negative dimension */
    b->inits[0]->raw_data.len = 12;
    b->inits[0]->dims[0] = -3;
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: tensor 'w64' has an invalid dimension -3");
    /* a huge claimed shape fails on the data check, without allocating */
    b->inits[0]->dims[0] = INT64_C(1) << 38;
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "holds 3 elements but its shape needs 274877906944"));
    mb_free(b);

    /* a graph input of a type qlens lacks, once the ops are fine */
    b = mb_new(13);
    b->ins[b->graph.n_input++] = mb_vi(b, "s", 8, 1, d3);
    mb_node(b, "Identity", "id", "s", "y");
    mb_output(b, "y");
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "model.onnx: value 's' has data type STRING, which qlens does "
                                 "not support");
    mb_free(b);
}

/* Input and output counts are checked against the op table for every node
 * before any op function runs (a fuzzer found ops reading absent inputs). */
static void test_node_arity(void **state)
{
    (void)state;
    ql_error err;
    int64_t w4[4] = {1, 1, 1, 1};
    float one = 1.0f;

    for (int op = 0; op < QL_OP_COUNT; op++) { /* every row sets sane counts */
        const ql_op_def *d = ql_op_get(op);
        assert_true(d->min_in >= 0 && d->min_out >= 1);
        assert_true(d->max_in == QL_IO_ANY || d->max_in >= d->min_in);
        assert_true(d->max_out == QL_IO_ANY || d->max_out >= d->min_out);
    }

    mb *b = tiny_model(); /* Conv without its weights */
    mb_node(b, "Conv", "conv", "y", "z");
    mb_output(b, "z");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'conv' (Conv) has 1 input; the op takes 2 to 3");
    mb_free(b);

    b = tiny_model(); /* a required input given as "" */
    mb_init_f32(b, "w", 4, w4, &one);
    mb_node(b, "Conv", "conv", ",w", "z");
    mb_output(b, "z");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'conv' (Conv): required input 0 is empty");
    mb_free(b);

    b = tiny_model(); /* too many inputs */
    mb_node(b, "Add", "add", "y,y,y", "z");
    mb_output(b, "z");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'add' (Add) has 3 inputs; the op takes 2");
    mb_free(b);

    b = tiny_model(); /* no input at all, and outputs */
    mb_node(b, "Relu", "r0", "", "z");
    mb_output(b, "z");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'r0' (Relu) has 0 inputs; the op takes 1");
    mb_free(b);
    b = tiny_model();
    mb_node(b, "Relu", "r2", "y", "z,z2");
    mb_output(b, "z");
    assert_int_equal(load_fail(b, &err), QL_ERR_FORMAT);
    assert_string_equal(err.msg, "model.onnx: node 'r2' (Relu) has 2 outputs; the op takes 1");
    mb_free(b);

    b = tiny_model(); /* variadic: Concat of one input is fine */
    mb_node(b, "Concat", "cat", "y", "z");
    mb_attr_i(b, b->nodes[1], "axis", 1);
    mb_output(b, "z");
    ql_model *m = load_ok(b, false);
    ql_model_free(m);
    mb_free(b);
}

/* Inputs a fuzzer (libFuzzer on ql_model_load_buffer, ASan + UBSan) found
 * to crash or to hit undefined behaviour, rebuilt here by hand. */
static void test_fuzz_regressions(void **state)
{
    (void)state;
    ql_error err;
    int64_t d[2] = {1, 2}, d2[1] = {2};

    /* Reshape to a shape whose element count overflows int64 */
    mb *b = mb_new(6);
    mb_input(b, "x", 2, d);
    int64_t huge[2] = {262401, INT64_C(4611686018427387906)};
    mb_init_i64(b, "shape", 1, d2, huge);
    mb_node(b, "Reshape", "rs", "x,shape", "y");
    mb_output(b, "y");
    assert_int_equal(load_fail(b, &err), QL_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "node 'rs' (Reshape): the shape has more elements than an "
                                    "int64 can count"));
    mb_free(b);

    /* a graph whose only node is a Constant: no nodes remain to sort */
    b = mb_new(13);
    mb_input(b, "x", 2, d);
    float cv[2] = {1.5f, -2.0f};
    Onnx__NodeProto *n = mb_node(b, "Constant", "c", "", "y");
    mb_attr(b, n, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)->t =
        mb_tensor(b, "", 1, 1, d2, cv, ENC_TYPED);
    mb_output(b, "y");
    ql_model *m = load_ok(b, false);
    assert_int_equal(m->graph->n_nodes, 0);
    ql_model_free(m);
    mb_free(b);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void set_external(mb *b, Onnx__TensorProto *t, const char *loc, const char *offset,
                         const char *length)
{
    const char *kv[3][2] = {{"location", loc}, {"offset", offset}, {"length", length}};
    t->has_raw_data = 0;
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    t->external_data = mb_alloc(b, 3 * sizeof *t->external_data);
    t->n_external_data = 0;
    for (int i = 0; i < 3; i++) {
        if (!kv[i][1])
            continue;
        Onnx__StringStringEntryProto *e = mb_alloc(b, sizeof *e);
        onnx__string_string_entry_proto__init(e);
        e->key = mb_str(b, kv[i][0]);
        e->value = mb_str(b, kv[i][1]);
        t->external_data[t->n_external_data++] = e;
    }
}

static ql_status load_from(mb *b, const char *path, ql_model **m, ql_error *err)
{
    size_t len;
    uint8_t *buf = mb_pack(b, &len);
    write_file(path, buf, len);
    free(buf);
    return ql_model_load(path, m, err);
}

static void test_external_data(void **state)
{
    (void)state;
    char dir[] = "/tmp/qlens_test_onnx_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], wpath[256];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    snprintf(wpath, sizeof wpath, "%s/w.bin", dir);
    float blob[8] = {99, 99, 1.5f, -2, 3, 4.25f, 5, 6};
    write_file(wpath, blob, sizeof blob);

    mb *b = mb_new(13);
    int64_t d[2] = {-1, 6}, d6[1] = {6};
    mb_input(b, "x", 2, d);
    Onnx__TensorProto *t = mb_init_f32(b, "w", 1, d6, blob);
    mb_node(b, "Add", "add", "x,w", "y");
    mb_output(b, "y");
    set_external(b, t, "w.bin", "8", "24");
    ql_model *m = NULL;
    ql_error err;
    ql_status st = load_from(b, path, &m, &err);
    if (st != QL_OK)
        fail_msg("%s", err.msg);
    assert_memory_equal(value(m, "w")->constant->data, blob + 2, 24);
    ql_model_free(m);

    set_external(b, t, "w.bin", NULL, NULL); /* no offset: from the start */
    assert_int_equal(load_from(b, path, &m, &err), QL_OK);
    assert_memory_equal(value(m, "w")->constant->data, blob, 24);
    ql_model_free(m);

    set_external(b, t, "w.bin", "16", NULL); /* past the end of the file */
    assert_int_equal(load_from(b, path, &m, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "tensor 'w': external data"));
    assert_non_null(strstr(err.msg, "is shorter than offset 16 + 24 bytes"));

    set_external(b, t, "w.bin", "0", "20"); /* length disagrees with the shape */
    assert_int_equal(load_from(b, path, &m, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "external data length 20 does not match its shape (24 bytes)"));

    set_external(b, t, "w.bin", "-4", NULL);
    assert_int_equal(load_from(b, path, &m, &err), QL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "external data offset '-4' is not a byte count"));

    const char *escapes[] = {"../w.bin", "/etc/passwd", "sub/../../w.bin", ".."};
    for (int i = 0; i < 4; i++) {
        set_external(b, t, escapes[i], NULL, NULL);
        assert_int_equal(load_from(b, path, &m, &err), QL_ERR_FORMAT);
        assert_non_null(strstr(err.msg, path));
        assert_non_null(strstr(err.msg, "must be a relative path inside the model's folder"));
    }
    set_external(b, t, "nothere.bin", NULL, NULL);
    assert_int_equal(load_from(b, path, &m, &err), QL_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot open external data"));

    unlink(path);
    unlink(wpath);
    rmdir(dir);
    mb_free(b);
}

/* ---------------------------------------------------------------------------
 * passes, checked against the graph as the file states it
 * ------------------------------------------------------------------------- */
/* Loads the model raw and simplified, runs both on x, compares output 0
 * within rtol/atol, and returns the simplified model (caller frees). */
static ql_model *check_passes_keep_results(mb *b, const ql_tensor *x, float rtol, float atol)
{
    ql_model *raw = load_ok(b, true), *opt = load_ok(b, false);
    ql_tensor *want = run1(raw, x), *got = run1(opt, x);
    assert_close(got, want, rtol, atol);
    ql_tensor_free(want);
    ql_tensor_free(got);
    ql_model_free(raw);
    return opt;
}

/* Adds BatchNormalization params for C channels named bn_*. */
static void add_bn(mb *b, tu_rng *r, int64_t C, const char *in, const char *out)
{
    int64_t d[1] = {C};
    rand_init(b, r, "bn_scale", 1, d, 0.5f, 2.0f);
    rand_init(b, r, "bn_bias", 1, d, -1.0f, 1.0f);
    rand_init(b, r, "bn_mean", 1, d, -0.5f, 0.5f);
    rand_init(b, r, "bn_var", 1, d, 0.1f, 3.0f);
    char ins[256];
    snprintf(ins, sizeof ins, "%s,bn_scale,bn_bias,bn_mean,bn_var", in);
    Onnx__NodeProto *n = mb_node(b, "BatchNormalization", "bn", ins, out);
    mb_attr_f(b, n, "epsilon", 1e-3f);
}

static void test_fold_bn_conv(void **state)
{
    (void)state;
    /* {group, bias} */
    static const int variants[4][2] = {{1, 1}, {1, 0}, {2, 1}, {4, 0}};
    for (int v = 0; v < 4; v++) {
        int group = variants[v][0], bias = variants[v][1];
        tu_rng r = {100 + (uint64_t)v};
        mb *b = mb_new(13);
        int64_t xd[4] = {-1, 4, 7, 6}, wd[4] = {8, 4 / group, 3, 3}, bd[1] = {8};
        mb_input(b, "x", 4, xd);
        rand_init(b, &r, "w", 4, wd, -1, 1);
        if (bias)
            rand_init(b, &r, "b", 1, bd, -1, 1);
        Onnx__NodeProto *n = mb_node(b, "Conv", "conv", bias ? "x,w,b" : "x,w", "c");
        int64_t pads[4] = {1, 0, 1, 2}, strides[2] = {2, 1};
        mb_attr_ints(b, n, "pads", 4, pads);
        mb_attr_ints(b, n, "strides", 2, strides);
        mb_attr_i(b, n, "group", group);
        add_bn(b, &r, 8, "c", "y");
        mb_output(b, "y");
        int64_t in[4] = {3, 4, 7, 6};
        ql_tensor *x = tu_rand(&r, 4, in, -2, 2);
        ql_model *m = check_passes_keep_results(b, x, 1e-5f, 1e-5f);
        assert_ops(m, "Conv");
        /* the Conv now writes the BatchNorm's output, with a bias */
        const ql_node *c = &m->graph->nodes[0];
        assert_string_equal(m->graph->values[c->out[0]].name, "y");
        assert_int_equal(c->n_in, 3);
        assert_non_null(m->graph->values[c->in[2]].constant);
        ql_tensor_free(x);
        ql_model_free(m);
        mb_free(b);
    }
}

static void test_fold_bn_conv_transpose(void **state)
{
    (void)state;
    for (int group = 1; group <= 2; group++) {
        tu_rng r = {200 + (uint64_t)group};
        mb *b = mb_new(13);
        /* W is [C_in, C_out/group, kh, kw]: 4 inputs, 3*group outputs */
        int64_t xd[4] = {-1, 4, 3, 5}, wd[4] = {4, 3, 2, 3}, bd[1] = {3 * group};
        mb_input(b, "x", 4, xd);
        rand_init(b, &r, "w", 4, wd, -1, 1);
        rand_init(b, &r, "b", 1, bd, -1, 1);
        Onnx__NodeProto *n = mb_node(b, "ConvTranspose", "deconv", "x,w,b", "c");
        int64_t strides[2] = {2, 2};
        mb_attr_ints(b, n, "strides", 2, strides);
        mb_attr_i(b, n, "group", group);
        add_bn(b, &r, 3 * group, "c", "y");
        mb_output(b, "y");
        int64_t in[4] = {2, 4, 3, 5};
        ql_tensor *x = tu_rand(&r, 4, in, -2, 2);
        ql_model *m = check_passes_keep_results(b, x, 1e-5f, 1e-5f);
        assert_ops(m, "ConvTranspose");
        ql_tensor_free(x);
        ql_model_free(m);
        mb_free(b);
    }
}

static void test_fold_bn_gemm(void **state)
{
    (void)state;
    /* {transB, C: 0 none / 1 [N] / 2 [1,N] / 3 scalar} */
    static const int variants[6][2] = {{0, 1}, {1, 1}, {0, 0}, {1, 0}, {1, 2}, {0, 3}};
    for (int v = 0; v < 6; v++) {
        int transB = variants[v][0], cmode = variants[v][1];
        tu_rng r = {300 + (uint64_t)v};
        mb *b = mb_new(13);
        int64_t xd[2] = {-1, 5}, wd[2] = {transB ? 3 : 5, transB ? 5 : 3};
        int64_t cd[2] = {cmode == 2 ? 1 : 3, 3};
        mb_input(b, "x", 2, xd);
        rand_init(b, &r, "w", 2, wd, -1, 1);
        if (cmode)
            rand_init(b, &r, "c", cmode == 3 ? 0 : cmode, cmode == 2 ? cd : cd + 1, -1, 1);
        Onnx__NodeProto *n = mb_node(b, "Gemm", "fc", cmode ? "x,w,c" : "x,w", "g");
        mb_attr_i(b, n, "transB", transB);
        mb_attr_f(b, n, "alpha", 0.75f);
        mb_attr_f(b, n, "beta", 1.5f);
        add_bn(b, &r, 3, "g", "y");
        mb_output(b, "y");
        int64_t in[2] = {4, 5};
        ql_tensor *x = tu_rand(&r, 2, in, -2, 2);
        ql_model *m = check_passes_keep_results(b, x, 1e-5f, 1e-5f);
        assert_ops(m, "Gemm");
        ql_tensor_free(x);
        ql_model_free(m);
        mb_free(b);
    }
}

static void test_bn_kept_when_not_foldable(void **state)
{
    (void)state;
    tu_rng r = {400};
    int64_t xd[4] = {-1, 2, 4, 4}, wd[4] = {3, 2, 1, 1}, in[4] = {2, 2, 4, 4};
    /* the conv output is read by another node too */
    mb *b = mb_new(13);
    mb_input(b, "x", 4, xd);
    rand_init(b, &r, "w", 4, wd, -1, 1);
    mb_node(b, "Conv", "conv", "x,w", "c");
    add_bn(b, &r, 3, "c", "bn_out");
    mb_node(b, "Relu", "relu", "c", "rc");
    mb_node(b, "Add", "add", "bn_out,rc", "y");
    mb_output(b, "y");
    ql_tensor *x = tu_rand(&r, 4, in, -1, 1);
    ql_model *m = check_passes_keep_results(b, x, 1e-6f, 1e-6f);
    assert_ops(m, "Conv BatchNormalization Relu Add");
    ql_model_free(m);
    mb_free(b);

    /* the conv output is itself a graph output */
    b = mb_new(13);
    mb_input(b, "x", 4, xd);
    rand_init(b, &r, "w", 4, wd, -1, 1);
    mb_node(b, "Conv", "conv", "x,w", "c");
    add_bn(b, &r, 3, "c", "y");
    mb_output(b, "y");
    mb_output(b, "c");
    m = check_passes_keep_results(b, x, 1e-6f, 1e-6f);
    assert_ops(m, "Conv BatchNormalization");
    ql_model_free(m);
    mb_free(b);

    /* the BatchNorm follows something that is not a conv */
    b = mb_new(13);
    mb_input(b, "x", 4, xd);
    mb_node(b, "Relu", "relu", "x", "c");
    add_bn(b, &r, 2, "c", "y");
    mb_output(b, "y");
    m = check_passes_keep_results(b, x, 1e-6f, 1e-6f);
    assert_ops(m, "Relu BatchNormalization");
    ql_model_free(m);
    mb_free(b);

    /* a training-mode BatchNorm normalises with the batch's own statistics */
    b = mb_new(15);
    mb_input(b, "x", 4, xd);
    rand_init(b, &r, "w", 4, wd, -1, 1);
    mb_node(b, "Conv", "conv", "x,w", "c");
    add_bn(b, &r, 3, "c", "y");
    mb_attr_i(b, b->nodes[1], "training_mode", 1);
    mb_output(b, "y");
    m = check_passes_keep_results(b, x, 1e-6f, 1e-6f);
    assert_ops(m, "Conv BatchNormalization");
    ql_model_free(m);
    mb_free(b);
    ql_tensor_free(x);
}

static void test_drop_identity(void **state)
{
    (void)state;
    tu_rng r = {500};
    int64_t xd[2] = {-1, 5}, in[2] = {3, 5};
    ql_tensor *x = tu_rand(&r, 2, in, -2, 2);

    /* Identity and Dropout inside the graph disappear */
    mb *b = mb_new(13);
    mb_input(b, "x", 2, xd);
    mb_node(b, "Identity", "id0", "x", "i");
    mb_node(b, "Relu", "relu", "i", "a");
    mb_node(b, "Dropout", "drop", "a", "d,mask_unused");
    mb_node(b, "Sigmoid", "sig", "d", "s");
    mb_node(b, "Identity", "id_out", "s", "y"); /* output renamed onto the Sigmoid */
    mb_output(b, "y");
    ql_model *m = check_passes_keep_results(b, x, 0, 0);
    assert_ops(m, "Relu Sigmoid");
    const ql_graph *g = m->graph;
    assert_string_equal(g->values[g->outputs[0]].name, "y");
    assert_int_equal(g->nodes[1].out[0], g->outputs[0]);
    assert_string_equal(g->values[g->nodes[0].in[0]].name, "x");
    ql_model_free(m);
    mb_free(b);

    /* input straight to output: the Identity must stay */
    b = mb_new(13);
    mb_input(b, "x", 2, xd);
    mb_node(b, "Identity", "id", "x", "y");
    mb_output(b, "y");
    m = check_passes_keep_results(b, x, 0, 0);
    assert_ops(m, "Identity");
    ql_model_free(m);
    mb_free(b);

    /* both ends are graph outputs: keep the copy */
    b = mb_new(13);
    mb_input(b, "x", 2, xd);
    mb_node(b, "Relu", "relu", "x", "r");
    mb_node(b, "Identity", "id", "r", "y");
    mb_output(b, "y");
    mb_output(b, "r");
    m = check_passes_keep_results(b, x, 0, 0);
    assert_ops(m, "Relu Identity");
    ql_model_free(m);
    mb_free(b);

    /* a Dropout whose mask is used stays */
    b = mb_new(13);
    mb_input(b, "x", 2, xd);
    mb_node(b, "Dropout", "drop", "x", "y,mask");
    mb_output(b, "y");
    mb_output(b, "mask");
    ql_model *mm = load_ok(b, false);
    assert_ops(mm, "Dropout");
    ql_model_free(mm);
    mb_free(b);
    ql_tensor_free(x);
}

/* x.view(x.size(0), -1) as PyTorch exports it, on `shape_of`; Reshape of r. */
static mb *flatten_model(const char *shape_of, bool second_input)
{
    mb *b = mb_new(13);
    int64_t xd[4] = {-1, 2, 3, 3}, wd[2] = {18, 4}, one[1] = {1}, zero = 0, minus1 = -1;
    tu_rng r = {600};
    mb_input(b, "x", 4, xd);
    if (second_input)
        mb_input(b, "x2", 4, xd);
    rand_init(b, &r, "w", 2, wd, -1, 1);
    mb_init_i64(b, "idx0", 0, NULL, &zero);
    mb_init_i64(b, "axes0", 1, one, &zero);
    mb_init_i64(b, "minus1", 1, one, &minus1);
    mb_node(b, "Relu", "relu", "x", "r");
    char ins[64];
    snprintf(ins, sizeof ins, "%s", shape_of);
    mb_node(b, "Shape", "shape", ins, "s");
    mb_node(b, "Gather", "gather", "s,idx0", "n");
    mb_node(b, "Unsqueeze", "unsq", "n,axes0", "n1");
    Onnx__NodeProto *c = mb_node(b, "Concat", "concat", "n1,minus1", "shp");
    mb_attr_i(b, c, "axis", 0);
    mb_node(b, "Reshape", "reshape", "r,shp", "f");
    mb_node(b, "Gemm", "fc", "f,w", "y");
    mb_output(b, "y");
    return b;
}

static void test_fold_flatten_pattern(void **state)
{
    (void)state;
    tu_rng r = {700};
    int64_t in[4] = {5, 2, 3, 3};
    ql_tensor *x = tu_rand(&r, 4, in, -2, 2);
    /* Shape of the reshaped tensor itself, and of the Relu's input (the same
     * batch extent, provably) */
    const char *sources[2] = {"r", "x"};
    for (int k = 0; k < 2; k++) {
        mb *b = flatten_model(sources[k], false);
        ql_model *m = check_passes_keep_results(b, x, 0, 0);
        assert_ops(m, "Relu Reshape Gemm");
        const ql_node *rs = &m->graph->nodes[1];
        const ql_tensor *shp = m->graph->values[rs->in[1]].constant;
        assert_non_null(shp);
        assert_int_equal(shp->dtype, QL_I64);
        assert_int_equal(ql_tensor_numel(shp), 2);
        assert_int_equal(((int64_t *)shp->data)[0], 0); /* copy the batch */
        assert_int_equal(((int64_t *)shp->data)[1], -1);
        /* the dynamic batch survives to the output */
        const ql_value *y = &m->graph->values[m->graph->outputs[0]];
        assert_int_equal(y->ndim, 2);
        assert_int_equal(y->dims[0], -1);
        assert_int_equal(y->dims[1], 4);
        ql_model_free(m);
        mb_free(b);
    }
    /* the batch of some other tensor: not provably the same, left alone */
    mb *b = flatten_model("x2", true);
    ql_model *m = load_ok(b, false);
    assert_ops(m, "Relu Shape Gather Unsqueeze Concat Reshape Gemm");
    ql_model_free(m);
    mb_free(b);
    ql_tensor_free(x);
}

/* The model b (x [N, 2, 3, 3] -> Sigmoid r -> a shape sub-graph -> Reshape
 * of r) gives the same results once simplified, which leaves Sigmoid and a
 * Reshape to the constant [0, 2, -1] and an output of extents [N, 2, 9]. */
static void check_reshape_0_2_m1(mb *b, uint64_t seed)
{
    tu_rng r = {seed};
    int64_t in[4] = {3, 2, 3, 3};
    ql_tensor *x = tu_rand(&r, 4, in, -2, 2);
    ql_model *m = check_passes_keep_results(b, x, 0, 0);
    assert_ops(m, "Sigmoid Reshape");
    const ql_tensor *shp = m->graph->values[m->graph->nodes[1].in[1]].constant;
    assert_non_null(shp);
    int64_t want[3] = {0, 2, -1};
    assert_int_equal(ql_tensor_numel(shp), 3);
    assert_memory_equal(shp->data, want, sizeof want);
    const ql_value *y = &m->graph->values[m->graph->outputs[0]];
    int64_t yd[3] = {-1, 2, 9};
    assert_true(ql_shape_equal(y->ndim, y->dims, 3, yd));
    ql_tensor_free(x);
    ql_model_free(m);
    mb_free(b);
}

/* Static parts of a shape fold even when the batch is dynamic:
 * Reshape(r, [N, C, -1]) with C read from Shape becomes [0, 2, -1]. */
static void test_fold_partial_shape(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t xd[4] = {-1, 2, 3, 3}, one[1] = {1}, zero = 0, onei = 1, minus1 = -1;
    mb_input(b, "x", 4, xd);
    mb_init_i64(b, "i0", 0, NULL, &zero);
    mb_init_i64(b, "i1", 0, NULL, &onei);
    mb_init_i64(b, "axes0", 1, one, &zero);
    mb_init_i64(b, "minus1", 1, one, &minus1);
    mb_node(b, "Sigmoid", "sig", "x", "r");
    mb_node(b, "Shape", "shape", "r", "s");
    mb_node(b, "Gather", "g0", "s,i0", "n");
    mb_node(b, "Gather", "g1", "s,i1", "c");
    mb_node(b, "Unsqueeze", "u0", "n,axes0", "n1");
    mb_node(b, "Unsqueeze", "u1", "c,axes0", "c1");
    Onnx__NodeProto *c = mb_node(b, "Concat", "concat", "n1,c1,minus1", "shp");
    mb_attr_i(b, c, "axis", 0);
    mb_node(b, "Reshape", "reshape", "r,shp", "y");
    mb_output(b, "y");
    check_reshape_0_2_m1(b, 800);
}

/* x.flatten(2) as PyTorch exports it: Reshape(r, Concat(Slice(Shape(r),
 * 0:2), [-1])), here through a Cast too; with a dynamic batch it becomes
 * Reshape(r, [0, 2, -1]) and the output's extents are known. */
static void test_fold_sliced_shape(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t xd[4] = {-1, 2, 3, 3}, one[1] = {1}, zero = 0, two = 2, minus1 = -1;
    mb_input(b, "x", 4, xd);
    mb_init_i64(b, "start", 1, one, &zero);
    mb_init_i64(b, "end", 1, one, &two);
    mb_init_i64(b, "axes", 1, one, &zero);
    mb_init_i64(b, "minus1", 1, one, &minus1);
    mb_node(b, "Sigmoid", "sig", "x", "r");
    mb_node(b, "Shape", "shape", "r", "s");
    mb_attr_i(b, mb_node(b, "Cast", "cast", "s", "s64"), "to", 7);
    mb_node(b, "Slice", "slice", "s64,start,end,axes", "nc");
    Onnx__NodeProto *c = mb_node(b, "Concat", "concat", "nc,minus1", "shp");
    mb_attr_i(b, c, "axis", 0);
    mb_node(b, "Reshape", "reshape", "r,shp", "y");
    mb_output(b, "y");
    check_reshape_0_2_m1(b, 810);
}

/* F.pad as PyTorch exports it: the pads computed by ConstantOfShape,
 * Concat, Reshape, a reversing Slice, Transpose, Reshape and Cast, all
 * constant: loaded (the ops run when not folded, as in the raw model) and
 * folded into a constant pads input. */
static void test_fold_pad_subgraph(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t xd[4] = {-1, 2, 3, 4}, one[1] = {1}, two[1] = {2}, four[1] = {4};
    int64_t n4 = 4, pads_hw[4] = {1, 2, 0, 3}, shape2[2] = {-1, 2}, minus1 = -1;
    int64_t big = INT64_MIN + 1, zero = 0, perm[2] = {1, 0};
    mb_input(b, "x", 4, xd);
    mb_init_i64(b, "n", 1, one, &n4);
    mb_init_i64(b, "pads_hw", 1, four, pads_hw);
    mb_init_i64(b, "shape2", 1, two, shape2);
    mb_init_i64(b, "sl_start", 1, one, &minus1);
    mb_init_i64(b, "sl_end", 1, one, &big);
    mb_init_i64(b, "sl_axes", 1, one, &zero);
    mb_init_i64(b, "sl_steps", 1, one, &minus1);
    mb_init_i64(b, "flat", 1, one, &minus1);
    Onnx__NodeProto *cs = mb_node(b, "ConstantOfShape", "cofs", "n", "zeros");
    Onnx__AttributeProto *va = mb_attr(b, cs, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    int64_t z = 0;
    va->t = mb_tensor(b, "value", 7, 1, one, &z, ENC_RAW);
    mb_attr_i(b, mb_node(b, "Concat", "cat", "pads_hw,zeros", "p8"), "axis", 0);
    mb_node(b, "Reshape", "rs1", "p8,shape2", "p42");
    mb_node(b, "Slice", "rev", "p42,sl_start,sl_end,sl_axes,sl_steps", "p42r");
    mb_attr_ints(b, mb_node(b, "Transpose", "tr", "p42r", "p24"), "perm", 2, perm);
    mb_node(b, "Reshape", "rs2", "p24,flat", "p8b");
    mb_attr_i(b, mb_node(b, "Cast", "cast", "p8b", "pads"), "to", 7);
    mb_node(b, "Pad", "pad", "x,pads", "y");
    mb_output(b, "y");
    tu_rng r = {820};
    int64_t in[4] = {2, 2, 3, 4};
    ql_tensor *x = tu_rand(&r, 4, in, -2, 2);
    ql_model *m = check_passes_keep_results(b, x, 0, 0);
    assert_ops(m, "Pad");
    /* PyTorch's order (W begin, W end, H begin, H end) reversed pairwise into
     * ONNX's: begins of N, C, H, W then ends */
    const ql_tensor *pads = m->graph->values[m->graph->nodes[0].in[1]].constant;
    assert_non_null(pads);
    int64_t want[8] = {0, 0, 0, 1, 0, 0, 3, 2};
    assert_int_equal(ql_tensor_numel(pads), 8);
    assert_memory_equal(pads->data, want, sizeof want);
    const ql_value *y = &m->graph->values[m->graph->outputs[0]];
    int64_t yd[4] = {-1, 2, 6, 7};
    assert_true(ql_shape_equal(y->ndim, y->dims, 4, yd));
    ql_tensor_free(x);
    ql_model_free(m);
    mb_free(b);
}

/* Arithmetic on shapes is no quantized layer: an int64 Concat of a
 * dynamic Shape (kept, since the batch is not known) next to a float Add. */
static void test_qnet_skips_int_layers(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t xd[2] = {-1, 3}, one[1] = {1}, five = 5;
    mb_input(b, "x", 2, xd);
    mb_init_i64(b, "five", 1, one, &five);
    mb_node(b, "Add", "add", "x,x", "y");
    mb_node(b, "Shape", "shape", "x", "s");
    mb_attr_i(b, mb_node(b, "Concat", "cat", "s,five", "s2"), "axis", 0);
    mb_output(b, "y");
    mb_output(b, "s2");
    ql_model *m = load_ok(b, false);
    ql_qnet *q = NULL;
    ql_error err;
    assert_int_equal(ql_qnet_build(m->graph, &q, &err), QL_OK);
    assert_int_equal(q->n_layers, 1);
    assert_string_equal(q->layers[0].name, "add");
    ql_qnet_free(q);
    ql_model_free(m);
    mb_free(b);
}

static void test_fold_constants(void **state)
{
    (void)state;
    tu_rng r = {900};
    /* weights transposed in the graph, and a Shape of a static tensor */
    mb *b = mb_new(13);
    int64_t xd[2] = {2, 4}, wd[2] = {3, 4};
    mb_input(b, "x", 2, xd);
    rand_init(b, &r, "w", 2, wd, -1, 1);
    mb_node(b, "Transpose", "wt", "w", "w_t");
    mb_node(b, "MatMul", "mm", "x,w_t", "p");
    mb_node(b, "Shape", "shape", "p", "s");
    mb_node(b, "Relu", "relu", "p", "q");
    mb_node(b, "Reshape", "reshape", "q,s", "y");
    mb_output(b, "y");
    ql_tensor *x = tu_rand(&r, 2, xd, -1, 1);
    ql_model *m = check_passes_keep_results(b, x, 0, 0);
    assert_ops(m, "MatMul Relu Reshape");
    const ql_graph *g = m->graph;
    const ql_tensor *wt = g->values[g->nodes[0].in[1]].constant;
    assert_non_null(wt);
    int64_t td[2] = {4, 3};
    assert_true(ql_shape_equal(wt->ndim, wt->dims, 2, td));
    const ql_tensor *s = g->values[g->nodes[2].in[1]].constant;
    assert_non_null(s);
    int64_t want[2] = {2, 3};
    assert_memory_equal(s->data, want, sizeof want);
    ql_tensor_free(x);
    ql_model_free(m);
    mb_free(b);

    /* a whole chain of constants collapses; an all-constant graph output
     * keeps its node */
    b = mb_new(13);
    int64_t d3[1] = {3};
    float a[3] = {1, -2, 3}, c[3] = {0.5f, 0.5f, 2};
    mb_input(b, "x", 1, d3);
    mb_init_f32(b, "a", 1, d3, a);
    mb_init_f32(b, "c", 1, d3, c);
    mb_node(b, "Mul", "m1", "a,c", "ac");
    mb_node(b, "Relu", "r1", "ac", "rac");
    mb_node(b, "Add", "add", "x,rac", "y");
    mb_node(b, "Neg_like_relu", "unused", "x", "never"); /* unsupported: reported */
    mb_output(b, "y");
    ql_error err;
    assert_int_equal(load_fail(b, &err), QL_ERR_UNSUPPORTED);
    b->graph.n_node = 3;
    mb_node(b, "Sigmoid", "sig", "a", "z");
    mb_output(b, "z");
    m = load_ok(b, false);
    assert_ops(m, "Add Sigmoid");
    const ql_tensor *k = m->graph->values[m->graph->nodes[0].in[1]].constant;
    assert_non_null(k);
    float kw[3] = {0.5f, 0, 6};
    assert_memory_equal(k->data, kw, sizeof kw);
    ql_model_free(m);
    mb_free(b);
}

static void test_dynamic_batch(void **state)
{
    (void)state;
    mb *b = mb_new(13);
    int64_t xd[4] = {-1, 3, 8, 8}, wd[4] = {4, 3, 3, 3};
    tu_rng r = {1000};
    mb_input(b, "x", 4, xd);
    rand_init(b, &r, "w", 4, wd, -1, 1);
    mb_node(b, "Conv", "conv", "x,w", "c");
    mb_node(b, "GlobalAveragePool", "gap", "c", "p");
    Onnx__NodeProto *f = mb_node(b, "Flatten", "flat", "p", "y");
    mb_attr_i(b, f, "axis", 1);
    mb_output(b, "y");
    ql_model *m = load_ok(b, false);
    const ql_value *x = value(m, "x"), *c = value(m, "c"), *y = value(m, "y");
    assert_true(x->is_input);
    int64_t want_x[4] = {-1, 3, 8, 8}, want_c[4] = {-1, 4, 6, 6}, want_y[2] = {-1, 4};
    assert_true(ql_shape_equal(x->ndim, x->dims, 4, want_x));
    assert_true(ql_shape_equal(c->ndim, c->dims, 4, want_c));
    assert_true(ql_shape_equal(y->ndim, y->dims, 2, want_y));
    /* and any batch runs */
    for (int64_t n = 1; n <= 3; n += 2) {
        int64_t in[4] = {n, 3, 8, 8};
        ql_tensor *t = tu_rand(&r, 4, in, -1, 1), *out = run1(m, t);
        assert_int_equal(out->dims[0], n);
        ql_tensor_free(t);
        ql_tensor_free(out);
    }
    ql_model_free(m);
    mb_free(b);
}

/* ---------------------------------------------------------------------------
 * real files
 * ------------------------------------------------------------------------- */
static ql_tensor *read_tensor_pb(const char *path)
{
    void *buf = NULL;
    size_t len = 0;
    ql_error err;
    ql_tensor *t = NULL;
    if (ql_read_file(path, false, &buf, &len, &err) != QL_OK ||
        ql_onnx_tensor_parse(buf, len, path, &t, NULL, &err) != QL_OK)
        fail_msg("%s", err.msg);
    free(buf);
    return t;
}

/* A few ONNX backend test cases through the loader and executor. */
static void test_backend_cases(void **state)
{
    (void)state;
    const char *root = getenv("ONNX_TESTDATA");
    if (!root)
        root = "/usr/share/libonnx-testdata/data";
    static const char *const cases[] = {"pytorch-converted/test_Conv2d_groups",
                                        "pytorch-converted/test_ConvTranspose2d",
                                        "pytorch-operator/test_operator_view",
                                        "node/test_constant"};
    char path[512];
    snprintf(path, sizeof path, "%s/%s/model.onnx", root, cases[0]);
    if (access(path, R_OK) != 0)
        skip();
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ql_model *m = NULL;
        ql_error err;
        snprintf(path, sizeof path, "%s/%s/model.onnx", root, cases[c]);
        if (ql_model_load(path, &m, &err) != QL_OK)
            fail_msg("%s", err.msg);
        ql_tensor *in[4] = {0}, *out[4] = {0};
        for (int i = 0; i < m->graph->n_inputs; i++) {
            snprintf(path, sizeof path, "%s/%s/test_data_set_0/input_%d.pb", root, cases[c], i);
            in[i] = read_tensor_pb(path);
        }
        ql_exec *ex = NULL;
        ql_exec_opts o = {.n_threads = 1};
        if (ql_exec_new(m->graph, &o, &ex, &err) != QL_OK ||
            ql_exec_run(ex, (const ql_tensor *const *)in, out, &err) != QL_OK)
            fail_msg("%s: %s", cases[c], err.msg);
        snprintf(path, sizeof path, "%s/%s/test_data_set_0/output_0.pb", root, cases[c]);
        ql_tensor *want = read_tensor_pb(path);
        assert_close(out[0], want, 1e-3f, 1e-7f);
        ql_tensor_free(want);
        for (int i = 0; i < 4; i++) {
            ql_tensor_free(in[i]);
            ql_tensor_free(out[i]);
        }
        ql_exec_free(ex);
        ql_model_free(m);
    }
}

/* The shipped Fashion-MNIST model: its graph after the passes, and logits
 * against PyTorch's on the first evaluation images. */
static void test_fmnist_example(void **state)
{
    (void)state;
    const char *src = getenv("QLENS_SRCDIR");
    char dir[512], path[600];
    if (src) {
        snprintf(dir, sizeof dir, "%s/examples/fmnist", src);
    } else { /* run by hand: next to this file */
        snprintf(dir, sizeof dir, "%s", __FILE__);
        char *slash = strrchr(dir, '/');
        if (!slash)
            skip();
        snprintf(slash, sizeof dir - (size_t)(slash - dir), "/../examples/fmnist");
    }
    snprintf(path, sizeof path, "%s/fmnist_resnet.onnx", dir);
    if (access(path, R_OK) != 0)
        skip();
    ql_model *m = NULL;
    ql_error err;
    if (ql_model_load(path, &m, &err) != QL_OK)
        fail_msg("%s", err.msg);
    /* the Constant nodes became constants; the rest is as exported */
    assert_ops(m, "Div Sub Div Conv Relu Conv Relu Conv Add Relu MaxPool Conv Relu Conv Conv Add "
                  "Relu Conv Relu Conv Conv Add Relu GlobalAveragePool Flatten Gemm");
    const ql_value *y = &m->graph->values[m->graph->outputs[0]];
    int64_t yd[2] = {-1, 10};
    assert_true(ql_shape_equal(y->ndim, y->dims, 2, yd));

    ql_tensor *all = NULL, *ref = NULL;
    snprintf(path, sizeof path, "%s/eval.npy", dir);
    if (ql_npy_load(path, &all, &err) != QL_OK)
        fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/eval_logits.npy", dir);
    if (ql_npy_load(path, &ref, &err) != QL_OK)
        fail_msg("%s", err.msg);
    int64_t n = 16, xd[4] = {n, 1, 28, 28}, rd[2] = {n, 10};
    ql_tensor *x = ql_tensor_wrap(QL_F32, 4, xd, all->data);
    ql_tensor *want = ql_tensor_wrap(QL_F32, 2, rd, ref->data);
    ql_tensor *got = run1(m, x);
    assert_close(got, want, 1e-3f, 1e-4f);
    ql_tensor_free(got);
    ql_tensor_free(x);
    ql_tensor_free(want);
    ql_tensor_free(all);
    ql_tensor_free(ref);
    ql_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initializer_encodings),
        cmocka_unit_test(test_initializer_listed_as_input),
        cmocka_unit_test(test_constant_nodes),
        cmocka_unit_test(test_malformed_buffers),
        cmocka_unit_test(test_corrupted_bytes),
        cmocka_unit_test(test_files_on_disk),
        cmocka_unit_test(test_unsupported_ops_listed),
        cmocka_unit_test(test_opset_and_attribute_limits),
        cmocka_unit_test(test_invalid_graphs),
        cmocka_unit_test(test_node_arity),
        cmocka_unit_test(test_fuzz_regressions),
        cmocka_unit_test(test_external_data),
        cmocka_unit_test(test_fold_bn_conv),
        cmocka_unit_test(test_fold_bn_conv_transpose),
        cmocka_unit_test(test_fold_bn_gemm),
        cmocka_unit_test(test_bn_kept_when_not_foldable),
        cmocka_unit_test(test_drop_identity),
        cmocka_unit_test(test_fold_flatten_pattern),
        cmocka_unit_test(test_fold_partial_shape),
        cmocka_unit_test(test_fold_sliced_shape),
        cmocka_unit_test(test_fold_pad_subgraph),
        cmocka_unit_test(test_qnet_skips_int_layers),
        cmocka_unit_test(test_fold_constants),
        cmocka_unit_test(test_dynamic_batch),
        cmocka_unit_test(test_backend_cases),
        cmocka_unit_test(test_fmnist_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
