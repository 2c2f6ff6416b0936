/* Tensor allocation and small helpers. */
#include "tensor.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QL_DTYPE_ROW_(e, n, s, o) [e] = {n, s, o},
static const ql_dtype_traits dtype_traits[] = {QL_DTYPE_LIST(QL_DTYPE_ROW_)};
#undef QL_DTYPE_ROW_
static_assert(sizeof dtype_traits / sizeof dtype_traits[0] == QL_DTYPE_COUNT,
              "dtype traits out of step with ql_dtype");

const ql_dtype_traits *ql_dtype_info(ql_dtype t)
{
    assert((unsigned)t < QL_DTYPE_COUNT);
    return &dtype_traits[t];
}

bool ql_dtype_from_onnx(int onnx_type, ql_dtype *out)
{
    for (int i = 0; i < QL_DTYPE_COUNT; i++)
        if (dtype_traits[i].onnx_type == onnx_type) {
            *out = (ql_dtype)i;
            return true;
        }
    return false;
}

int64_t ql_numel(int ndim, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    return n;
}

int64_t ql_tensor_numel(const ql_tensor *t) { return ql_numel(t->ndim, t->dims); }

size_t ql_tensor_nbytes(const ql_tensor *t)
{
    return (size_t)ql_tensor_numel(t) * ql_dtype_info(t->dtype)->size;
}

void *ql_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}

void ql_aligned_free(void *p) { free(p); }

static ql_tensor *header(ql_dtype dt, int ndim, const int64_t *dims)
{
    assert(ndim >= 0 && ndim <= QL_MAX_DIMS);
    ql_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    return t;
}

ql_tensor *ql_tensor_new(ql_dtype dt, int ndim, const int64_t *dims)
{
    ql_tensor *t = header(dt, ndim, dims);
    if (!t)
        return NULL;
    if (ql_tensor_alloc(t) != QL_OK) {
        free(t);
        return NULL;
    }
    memset(t->data, 0, ql_tensor_nbytes(t));
    return t;
}

ql_tensor *ql_tensor_wrap(ql_dtype dt, int ndim, const int64_t *dims, void *data)
{
    ql_tensor *t = header(dt, ndim, dims);
    if (t)
        t->data = data;
    return t;
}

ql_tensor *ql_tensor_clone(const ql_tensor *src)
{
    ql_tensor *t = header(src->dtype, src->ndim, src->dims);
    if (!t)
        return NULL;
    if (ql_tensor_alloc(t) != QL_OK) {
        free(t);
        return NULL;
    }
    if (src->data)
        memcpy(t->data, src->data, ql_tensor_nbytes(t));
    return t;
}

void ql_tensor_release(ql_tensor *t)
{
    if (t->owns)
        ql_aligned_free(t->data);
    t->data = NULL;
    t->owns = false;
}

ql_tensor ql_tensor_rows(const ql_tensor *t, int64_t first, int64_t count)
{
    ql_tensor v = *t;
    size_t row = t->dims[0] > 0 ? ql_tensor_nbytes(t) / (size_t)t->dims[0] : 0;
    v.dims[0] = count;
    v.data = (char *)t->data + (size_t)first * row;
    v.owns = false;
    return v;
}

void ql_tensor_free(ql_tensor *t)
{
    if (!t)
        return;
    ql_tensor_release(t);
    free(t);
}

ql_status ql_tensor_alloc(ql_tensor *t)
{
    ql_tensor_release(t);
    for (int i = 0; i < t->ndim; i++)
        if (t->dims[i] < 0)
            return QL_ERR_SHAPE;
    t->data = ql_aligned_alloc(ql_tensor_nbytes(t));
    if (!t->data)
        return QL_ERR_NOMEM;
    t->owns = true;
    return QL_OK;
}

const char *ql_shape_str(int ndim, const int64_t *dims, char *buf, size_t n)
{
    size_t len = 0;
    if (n == 0)
        return buf;
    buf[0] = '\0';
    if (ndim < 0) {
        snprintf(buf, n, "[?]");
        return buf;
    }
    len += (size_t)snprintf(buf + len, n - len, "[");
    for (int i = 0; i < ndim && len < n; i++) {
        if (dims[i] < 0)
            len += (size_t)snprintf(buf + len, n - len, "%s?", i ? "x" : "");
        else
            len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? "x" : "",
                                    (long long)dims[i]);
    }
    if (len < n)
        snprintf(buf + len, n - len, "]");
    return buf;
}

bool ql_shape_equal(int an, const int64_t *a, int bn, const int64_t *b)
{
    if (an != bn)
        return false;
    for (int i = 0; i < an; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

int64_t ql_tensor_get_i64(const ql_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case QL_I64: return ((const int64_t *)t->data)[i];
    case QL_I32: return ((const int32_t *)t->data)[i];
    case QL_I16: return ((const int16_t *)t->data)[i];
    case QL_I8: return ((const int8_t *)t->data)[i];
    case QL_U8: case QL_BOOL: return ((const uint8_t *)t->data)[i];
    case QL_F32: return (int64_t)((const float *)t->data)[i];
    default: return 0;
    }
}

double ql_tensor_get_f64(const ql_tensor *t, int64_t i)
{
    if (t->dtype == QL_F32)
        return ((const float *)t->data)[i];
    return (double)ql_tensor_get_i64(t, i);
}
