/* Cast and ConstantOfShape: tensors of a given dtype. Exporters build
 * shapes and pads with them (PyTorch's F.pad: ConstantOfShape, Concat,
 * Reshape, Slice, Cast), which constant folding then runs once at load;
 * at run time they work on every dtype the engine has. */
#include <math.h>
#include <string.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------
 * Cast: float to integer truncates toward zero and saturates at the type's
 * range (NaN becomes 0; ONNX leaves those cases undefined), integer to
 * integer wraps as numpy's astype does, anything to bool is x != 0.
 * ------------------------------------------------------------------------- */
static ql_status cast_target(const ql_node *n, ql_dtype *to, ql_error *err)
{
    const ql_attr *a = ql_node_attr(n, "to");
    if (!a || a->type != QL_ATTR_INT)
        return ql_fail(err, QL_ERR_ARG, "no 'to' attribute");
    if (!ql_dtype_from_onnx((int)a->i, to))
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "Cast to ONNX type %lld is not supported (float, int8/16/32/64, uint8 and "
                       "bool are)",
                       (long long)a->i);
    return QL_OK;
}

static ql_status cast_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_error *err)
{
    ql_dtype to;
    ql_status st = cast_target(n, &to, err);
    if (st != QL_OK)
        return st;
    out[0]->dtype = to;
    out[0]->ndim = in[0]->ndim;
    if (in[0]->ndim > 0)
        memcpy(out[0]->dims, in[0]->dims, (size_t)in[0]->ndim * sizeof *in[0]->dims);
    return QL_OK;
}

/* A float as an integer in [lo, hi]: truncated, saturated, NaN as 0. */
static int64_t float_to_int(float v, double lo, double hi)
{
    if (v != v)
        return 0;
    double t = trunc((double)v);
    return t <= lo ? (int64_t)lo : t >= hi ? (int64_t)hi : (int64_t)t;
}

static void cast_from_float(const float *x, void *y, ql_dtype to, int64_t n)
{
    switch (to) {
    case QL_F32:
        memcpy(y, x, (size_t)n * sizeof *x);
        break;
    case QL_U8:
        for (int64_t i = 0; i < n; i++)
            ((uint8_t *)y)[i] = (uint8_t)float_to_int(x[i], 0, 255);
        break;
    case QL_I8:
        for (int64_t i = 0; i < n; i++)
            ((int8_t *)y)[i] = (int8_t)float_to_int(x[i], -128, 127);
        break;
    case QL_I16:
        for (int64_t i = 0; i < n; i++)
            ((int16_t *)y)[i] = (int16_t)float_to_int(x[i], -32768, 32767);
        break;
    case QL_I32:
        for (int64_t i = 0; i < n; i++)
            ((int32_t *)y)[i] = (int32_t)float_to_int(x[i], -2147483648.0, 2147483647.0);
        break;
    case QL_I64:
        /* the largest double below 2^63 */
        for (int64_t i = 0; i < n; i++)
            ((int64_t *)y)[i] = float_to_int(x[i], -9223372036854775808.0, 9223372036854774784.0);
        break;
    case QL_BOOL:
        for (int64_t i = 0; i < n; i++)
            ((uint8_t *)y)[i] = x[i] != 0.0f;
        break;
    default:
        break;
    }
}

static void cast_from_int(const ql_tensor *x, void *y, ql_dtype to, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t v = ql_tensor_get_i64(x, i);
        switch (to) {
        case QL_F32: ((float *)y)[i] = (float)v; break;
        /* wrap-around as two's complement, through the unsigned type */
        case QL_U8: ((uint8_t *)y)[i] = (uint8_t)(uint64_t)v; break;
        case QL_I8: ((int8_t *)y)[i] = (int8_t)(uint8_t)(uint64_t)v; break;
        case QL_I16: ((int16_t *)y)[i] = (int16_t)(uint16_t)(uint64_t)v; break;
        case QL_I32: ((int32_t *)y)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
        case QL_I64: ((int64_t *)y)[i] = v; break;
        case QL_BOOL: ((uint8_t *)y)[i] = v != 0; break;
        default: break;
        }
    }
}

static ql_status cast_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_exec_ctx *ctx, ql_error *err)
{
    (void)n;
    (void)ctx;
    (void)err;
    int64_t cnt = ql_tensor_numel(in[0]);
    if (in[0]->dtype == out[0]->dtype)
        memcpy(out[0]->data, in[0]->data, ql_tensor_nbytes(in[0]));
    else if (in[0]->dtype == QL_F32)
        cast_from_float(in[0]->data, out[0]->data, out[0]->dtype, cnt);
    else
        cast_from_int(in[0], out[0]->data, out[0]->dtype, cnt);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * ConstantOfShape: a tensor of the shape given by a 1-D int64 input, every
 * element the one-element `value` attribute (default float 0).
 * ------------------------------------------------------------------------- */
static ql_status fill_value(const ql_node *n, const ql_tensor **v, ql_error *err)
{
    const ql_attr *a = ql_node_attr(n, "value");
    *v = NULL;
    if (!a)
        return QL_OK;
    if (a->type != QL_ATTR_TENSOR || !a->t)
        return ql_fail(err, QL_ERR_ARG, "'value' must be a tensor");
    if (ql_tensor_numel(a->t) != 1)
        return ql_fail(err, QL_ERR_ARG, "'value' must hold one element (it holds %lld)",
                       (long long)ql_tensor_numel(a->t));
    *v = a->t;
    return QL_OK;
}

static ql_status cofs_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_error *err)
{
    const ql_tensor *v;
    ql_status st = fill_value(n, &v, err);
    if (st != QL_OK)
        return st;
    const ql_tensor *s = in[0];
    out[0]->dtype = v ? v->dtype : QL_F32;
    if (s->dtype != QL_I64)
        return ql_fail(err, QL_ERR_ARG, "the shape must be int64 (it is %s)",
                       ql_dtype_info(s->dtype)->name);
    if (s->ndim != 1 || s->dims[0] < 0) {
        if (s->ndim > 1)
            return ql_fail(err, QL_ERR_SHAPE, "the shape must be 1-D (it has %d dims)", s->ndim);
        out[0]->ndim = -1; /* rank unknown until the shape is */
        return QL_OK;
    }
    if (s->dims[0] > QL_MAX_DIMS)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%lld dims (at most %d)", (long long)s->dims[0],
                       QL_MAX_DIMS);
    out[0]->ndim = (int)s->dims[0];
    for (int k = 0; k < out[0]->ndim; k++) {
        int64_t d = s->data ? ((const int64_t *)s->data)[k] : -1;
        if (s->data && d < 0)
            return ql_fail(err, QL_ERR_SHAPE, "negative extent %lld at index %d", (long long)d, k);
        out[0]->dims[k] = d;
    }
    return QL_OK;
}

static ql_status cofs_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_exec_ctx *ctx, ql_error *err)
{
    (void)in;
    (void)ctx;
    const ql_tensor *v;
    ql_status st = fill_value(n, &v, err);
    if (st != QL_OK)
        return st;
    int64_t cnt = ql_tensor_numel(out[0]);
    size_t es = esize(out[0]);
    char *y = out[0]->data;
    if (!v) {
        memset(y, 0, (size_t)cnt * es);
        return QL_OK;
    }
    for (int64_t i = 0; i < cnt; i++)
        memcpy(y + (size_t)i * es, v->data, es);
    return QL_OK;
}

const ql_op_def ql_op_def_CAST = {
    .name = "Cast", .since_version = 6, .in_dtypes = QL_DT_ALL, .infer = cast_infer,
    .run_f32 = cast_run, QL_IO(1, 1, 1, 1),
};
const ql_op_def ql_op_def_CONSTANT_OF_SHAPE = {
    .name = "ConstantOfShape", .since_version = 9, .in_dtypes = QL_DT_INTS, .infer = cofs_infer,
    .run_f32 = cofs_run, QL_IO(1, 1, 1, 1),
};
