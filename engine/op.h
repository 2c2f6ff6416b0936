/* The operator table: one row per ONNX op qlens claims, with the functions
 * that infer output shapes, prepare constants, and run the op in float.
 * Ops are grouped one family per file under engine/ops/. */
#ifndef QL_OP_H
#define QL_OP_H

#include "graph.h"
#include "status.h"
#include "tensor.h"

/* X(ENUM, "OnnxName", first listed opset); the rows' since_version is authoritative */
#define QL_OP_LIST(X)                                   \
    X(CONV, "Conv", 1)                                  \
    X(CONV_TRANSPOSE, "ConvTranspose", 1)               \
    X(GEMM, "Gemm", 1)                                  \
    X(MATMUL, "MatMul", 1)                              \
    X(MAXPOOL, "MaxPool", 1)                            \
    X(AVERAGEPOOL, "AveragePool", 1)                    \
    X(GLOBALAVERAGEPOOL, "GlobalAveragePool", 1)        \
    X(GLOBALMAXPOOL, "GlobalMaxPool", 1)                \
    X(ADD, "Add", 1)                                    \
    X(SUB, "Sub", 1)                                    \
    X(MUL, "Mul", 1)                                    \
    X(DIV, "Div", 1)                                    \
    X(RELU, "Relu", 1)                                  \
    X(LEAKYRELU, "LeakyRelu", 1)                        \
    X(PRELU, "PRelu", 1)                                \
    X(CLIP, "Clip", 1)                                  \
    X(SIGMOID, "Sigmoid", 1)                            \
    X(HARDSIGMOID, "HardSigmoid", 1)                    \
    X(HARDSWISH, "HardSwish", 14)                       \
    X(TANH, "Tanh", 1)                                  \
    X(SOFTMAX, "Softmax", 1)                            \
    X(BATCHNORM, "BatchNormalization", 1)               \
    X(REDUCEMEAN, "ReduceMean", 1)                      \
    X(CONCAT, "Concat", 1)                              \
    X(SPLIT, "Split", 1)                                \
    X(SLICE, "Slice", 1)                                \
    X(TRANSPOSE, "Transpose", 1)                        \
    X(PAD, "Pad", 1)                                    \
    X(GATHER, "Gather", 1)                              \
    X(RESHAPE, "Reshape", 5)                            \
    X(FLATTEN, "Flatten", 1)                            \
    X(SQUEEZE, "Squeeze", 1)                            \
    X(UNSQUEEZE, "Unsqueeze", 1)                        \
    X(SHAPE, "Shape", 1)                                \
    X(IDENTITY, "Identity", 1)                          \
    X(DROPOUT, "Dropout", 1)                            \
    X(CONSTANT, "Constant", 1)                          \
    X(RESIZE, "Resize", 10)                             \
    X(CAST, "Cast", 6)                                  \
    X(CONSTANT_OF_SHAPE, "ConstantOfShape", 9)

#define QL_OP_ENUM_(e, name, since) QL_OP_##e,
typedef enum { QL_OP_LIST(QL_OP_ENUM_) QL_OP_COUNT } ql_op_id;
#undef QL_OP_ENUM_

/* Execution context handed to kernels: threads and scratch memory. */
typedef struct ql_exec_ctx ql_exec_ctx;

/* Work function for ql_parallel_for over [begin, end); tid in [0, threads). */
typedef void (*ql_range_fn)(void *arg, int64_t begin, int64_t end, int tid);

/* Runs fn over [0, n) split into contiguous chunks of at least `grain` items
 * on the context's threads; returns when all are done. Kernels must give
 * bit-identical results whatever the split: never split a reduction. */
void ql_parallel_for(ql_exec_ctx *ctx, int64_t n, int64_t grain, ql_range_fn fn, void *arg);
/* The same, but the items go, grain at a time, to whichever thread is free
 * (a thread held up elsewhere holds up no one). Which thread runs which
 * items varies from run to run: only for work whose results cannot depend
 * on it, such as whole samples on per-thread executors. */
void ql_parallel_for_dynamic(ql_exec_ctx *ctx, int64_t n, int64_t grain, ql_range_fn fn,
                             void *arg);
int ql_ctx_threads(const ql_exec_ctx *ctx);
/* Scratch memory valid for the current kernel call (64-byte aligned); the
 * same buffer is returned to every caller, so split it by tid yourself. */
void *ql_ctx_scratch(ql_exec_ctx *ctx, size_t bytes);

/* Infers output dtype and shape. in[i] is NULL for an absent optional input;
 * at static time in[i]->data is NULL unless the value is constant, and dims
 * may be -1 (unknown) or ndim -1 (rank unknown): propagate unknowns, never
 * fail on them. At run time everything is known. Sets out[j]->dtype, ->ndim
 * (-1 if unknown) and ->dims; must not touch out[j]->data. */
typedef ql_status (*ql_infer_fn)(const ql_node *n, const ql_tensor *const *in,
                                 ql_tensor *const *out, ql_error *err);
/* Validates attributes and may cache prepared constants in n->state. */
typedef ql_status (*ql_prepare_fn)(ql_graph *g, ql_node *n, ql_error *err);
/* Runs the op: output headers are set by infer and their data allocated. */
typedef ql_status (*ql_run_fn)(const ql_node *n, const ql_tensor *const *in,
                               ql_tensor *const *out, ql_exec_ctx *ctx, ql_error *err);
typedef void (*ql_release_fn)(ql_node *n);

/* Bit masks of dtypes, for the dtypes an op accepts on its first input. */
#define QL_DT_BIT(d) (1u << (d))
#define QL_DT_INTS (QL_DT_BIT(QL_I8) | QL_DT_BIT(QL_U8) | QL_DT_BIT(QL_I16) | QL_DT_BIT(QL_I32) | QL_DT_BIT(QL_I64))
#define QL_DT_NUMERIC (QL_DT_BIT(QL_F32) | QL_DT_INTS)
#define QL_DT_ALL (QL_DT_NUMERIC | QL_DT_BIT(QL_BOOL))

typedef struct ql_op_def {
    const char *name;      /* ONNX op_type */
    int since_version;     /* first opset of the default domain supported */
    unsigned in_dtypes;    /* dtypes accepted for input 0; 0 means f32 only */
    ql_infer_fn infer;
    ql_prepare_fn prepare; /* optional */
    ql_run_fn run_f32;     /* float execution (also handles int inputs where ONNX allows, e.g. Shape, Gather) */
    ql_run_fn run_int;     /* integer execution; NULL until the integer simulator */
    ql_release_fn release; /* optional: frees n->state */
    bool fuses_clamp;      /* run_f32 honours the context's post-op clamp */
    /* Input and output counts over all supported opsets, checked for every
     * node by ql_graph_bind_ops; the first min_in inputs (and min_out
     * outputs) must be present, not empty names. A max of QL_IO_ANY means
     * variadic. Every row sets them (QL_IO below). */
    int min_in, max_in, min_out, max_out;
} ql_op_def;

#define QL_IO_ANY (-1)
/* Designated initialisers for the count fields of a row. */
#define QL_IO(min_in_, max_in_, min_out_, max_out_) \
    .min_in = (min_in_), .max_in = (max_in_), .min_out = (min_out_), .max_out = (max_out_)

/* Each family file defines `const ql_op_def ql_op_def_<ENUM>` for its rows. */
#define QL_OP_DECL_(e, name, since) extern const ql_op_def ql_op_def_##e;
QL_OP_LIST(QL_OP_DECL_)
#undef QL_OP_DECL_

const ql_op_def *ql_op_get(int op);
/* Op id for an op type in the default domain, or -1. */
int ql_op_find(const char *op_type, const char *domain);
const char *ql_op_name(int op);

/* Shared helpers for kernels (ops/common.c). */
/* Numpy-style broadcast of two shapes into out; false if incompatible.
 * Unknown (-1) dims propagate. */
bool ql_broadcast_shape(int an, const int64_t *a, int bn, const int64_t *b,
                        int *on, int64_t *o);
/* Normalises a possibly negative axis for rank r; false if out of range. */
bool ql_norm_axis(int64_t axis, int rank, int *out);

#endif
