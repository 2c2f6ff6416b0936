/* Dense tensors: a dtype, a shape and contiguous row-major data.
 * A tensor either owns its data (freed with it) or views memory owned by
 * someone else; the `owns` flag says which. */
#ifndef QL_TENSOR_H
#define QL_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define QL_MAX_DIMS 8

/* dtype table: enum name, short name, element size, ONNX TensorProto type. */
#define QL_DTYPE_LIST(X)          \
    X(QL_F32, "f32", 4, 1)        \
    X(QL_U8, "u8", 1, 2)          \
    X(QL_I8, "i8", 1, 3)          \
    X(QL_I16, "i16", 2, 5)        \
    X(QL_I32, "i32", 4, 6)        \
    X(QL_I64, "i64", 8, 7)        \
    X(QL_BOOL, "bool", 1, 9)

#define QL_DTYPE_ENUM_(e, n, s, o) e,
typedef enum { QL_DTYPE_LIST(QL_DTYPE_ENUM_) QL_DTYPE_COUNT } ql_dtype;
#undef QL_DTYPE_ENUM_

typedef struct ql_dtype_traits {
    const char *name;
    size_t size;
    int onnx_type;
} ql_dtype_traits;

const ql_dtype_traits *ql_dtype_info(ql_dtype t);
/* Maps an ONNX TensorProto.DataType to a dtype; false if qlens has none. */
bool ql_dtype_from_onnx(int onnx_type, ql_dtype *out);

typedef struct ql_tensor {
    ql_dtype dtype;
    int ndim;
    int64_t dims[QL_MAX_DIMS];
    void *data;
    bool owns;
} ql_tensor;

int64_t ql_numel(int ndim, const int64_t *dims);
int64_t ql_tensor_numel(const ql_tensor *t);
size_t ql_tensor_nbytes(const ql_tensor *t);

/* New tensor with zeroed, 64-byte aligned data that it owns. NULL on OOM. */
ql_tensor *ql_tensor_new(ql_dtype dt, int ndim, const int64_t *dims);
/* New tensor header viewing `data` (not owned). */
ql_tensor *ql_tensor_wrap(ql_dtype dt, int ndim, const int64_t *dims, void *data);
/* A header viewing rows [first, first + count) of t along axis 0 (rank at
 * least 1), not owning them. */
ql_tensor ql_tensor_rows(const ql_tensor *t, int64_t first, int64_t count);
/* Deep copy (owning). */
ql_tensor *ql_tensor_clone(const ql_tensor *t);
void ql_tensor_free(ql_tensor *t);

/* Allocates (uninitialised, aligned) data for a header whose dtype/shape are
 * set; the tensor then owns it. Frees previously owned data. */
ql_status ql_tensor_alloc(ql_tensor *t);
/* Releases owned data and clears the data pointer; keeps the header. */
void ql_tensor_release(ql_tensor *t);

void *ql_aligned_alloc(size_t bytes);
void ql_aligned_free(void *p);

/* Writes "[1x3x224x224]" (unknown dims as '?') into buf. */
const char *ql_shape_str(int ndim, const int64_t *dims, char *buf, size_t n);
bool ql_shape_equal(int an, const int64_t *a, int bn, const int64_t *b);

/* Element access helpers for index-like inputs (i32/i64) as int64. */
int64_t ql_tensor_get_i64(const ql_tensor *t, int64_t i);
double ql_tensor_get_f64(const ql_tensor *t, int64_t i);

#endif
