/* Elementwise activations (Relu, LeakyRelu, Clip, Sigmoid, HardSigmoid,
 * HardSwish, Tanh) and Softmax. Relu and Clip also take the integer types
 * (Relu from opset 14, Clip from opset 12). PRelu, which broadcasts a
 * slope, lives with the broadcasting ops in binary.c. Transcendentals use
 * libm (accuracy first); every element is computed on its own, so results
 * do not depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define ACT_GRAIN 16384 /* elements below which one thread does it all */
#define ACT_BLOCK 4096  /* elementwise work is split at multiples of this */

/* 4-wide vectors, native on every x86-64 (and lowered sensibly elsewhere),
 * for selects gcc will not if-convert on its own: it keeps a conditional
 * product behind a branch (FP traps), which blocks vectorisation. */
typedef float f4 __attribute__((vector_size(16)));
typedef float f4u __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t i4 __attribute__((vector_size(16)));
#define F4(x) ((f4){(x), (x), (x), (x)})
#define LD4(p) ((f4)*(const f4u *)(p))
#define ST4(p, v) (*(f4u *)(p) = (v))
#define SEL4(m, a, b) ((f4)(((i4)(a) & ~(m)) | ((i4)(b) & (m)))) /* m ? b : a */
#define CLAMP4(v, lo, hi)                                                                          \
    ({                                                                                             \
        f4 c_ = (v);                                                                               \
        c_ = SEL4(c_ < (lo), c_, (lo));                                                            \
        SEL4(c_ > (hi), c_, (hi));                                                                 \
    })

static ql_status same_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_error *err)
{
    if (n->n_in < 1 || !in[0])
        return ql_fail(err, QL_ERR_ARG, "needs an input");
    out[0]->dtype = in[0]->dtype;
    out[0]->ndim = in[0]->ndim;
    if (in[0]->ndim > 0)
        memcpy(out[0]->dims, in[0]->dims, (size_t)in[0]->ndim * sizeof *in[0]->dims);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Elementwise f32
 * ------------------------------------------------------------------------- */
typedef struct act_job {
    int op;
    const void *x;
    void *y;
    ql_dtype dt;
    float alpha, beta, lo, hi;
    int64_t ilo, ihi; /* integer Clip bounds (Relu: 0, max) */
    int64_t n;
} act_job;

static void act_f32(const act_job *j, int64_t begin, int64_t end)
{
    const float *x = j->x;
    float *y = j->y;
    const float alpha = j->alpha, beta = j->beta, lo = j->lo, hi = j->hi;
    switch (j->op) {
    case QL_OP_RELU:
        for (int64_t i = begin; i < end; i++)
            y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN passes through */
        break;
    case QL_OP_LEAKYRELU: {
        int64_t i = begin;
        for (; i + 4 <= end; i += 4) {
            f4 v = LD4(x + i);
            ST4(y + i, SEL4(v < F4(0.0f), v, v * F4(alpha)));
        }
        for (; i < end; i++)
            y[i] = x[i] < 0.0f ? alpha * x[i] : x[i];
        break;
    }
    case QL_OP_CLIP: /* min > max gives max everywhere, as ONNX specifies */
        for (int64_t i = begin; i < end; i++) {
            float v = x[i] < lo ? lo : x[i];
            y[i] = v > hi ? hi : v;
        }
        break;
    case QL_OP_SIGMOID:
        /* one expf of -|x|, which cannot overflow: 1/(1+e) or e/(1+e) */
        for (int64_t i = begin; i < end; i++) {
            float e = expf(-fabsf(x[i]));
            y[i] = x[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        }
        break;
    case QL_OP_HARDSIGMOID:
        for (int64_t i = begin; i < end; i++) {
            float v = alpha * x[i] + beta;
            v = v < 0.0f ? 0.0f : v;
            y[i] = v > 1.0f ? 1.0f : v;
        }
        break;
    case QL_OP_HARDSWISH: { /* x * HardSigmoid(x) with alpha 1/6, beta 0.5 */
        int64_t i = begin;
        for (; i + 4 <= end; i += 4) {
            f4 v = LD4(x + i), h = v / F4(6.0f) + F4(0.5f);
            ST4(y + i, v * CLAMP4(h, F4(0.0f), F4(1.0f)));
        }
        for (; i < end; i++) {
            float v = x[i] / 6.0f + 0.5f;
            v = v < 0.0f ? 0.0f : v;
            y[i] = x[i] * (v > 1.0f ? 1.0f : v);
        }
        break;
    }
    case QL_OP_TANH:
        for (int64_t i = begin; i < end; i++)
            y[i] = tanhf(x[i]);
        break;
    }
}

/* Relu and Clip on integers: clamp to [ilo, ihi] (already within T's range) */
#define DEFINE_ICLAMP(NAME, T)                                                    \
    static void NAME(const act_job *j, int64_t begin, int64_t end)                \
    {                                                                             \
        const T *x = j->x;                                                        \
        T *y = j->y;                                                              \
        const T lo = (T)j->ilo, hi = (T)j->ihi;                                   \
        for (int64_t i = begin; i < end; i++) {                                   \
            T v = x[i] < lo ? lo : x[i];                                          \
            y[i] = v > hi ? hi : v;                                               \
        }                                                                         \
    }
DEFINE_ICLAMP(iclamp_i64, int64_t)
DEFINE_ICLAMP(iclamp_i32, int32_t)
DEFINE_ICLAMP(iclamp_i16, int16_t)
DEFINE_ICLAMP(iclamp_i8, int8_t)
DEFINE_ICLAMP(iclamp_u8, uint8_t)

/* Over blocks of ACT_BLOCK elements: splits fall on block boundaries, so
 * which elements take the vector body or the scalar tail (and how the
 * data is aligned) does not depend on the thread count. */
static void act_task(void *arg, int64_t bbegin, int64_t bend, int tid)
{
    const act_job *j = arg;
    int64_t begin = bbegin * ACT_BLOCK, end = bend * ACT_BLOCK < j->n ? bend * ACT_BLOCK : j->n;
    (void)tid;
    switch (j->dt) {
    case QL_F32: act_f32(j, begin, end); break;
    case QL_I64: iclamp_i64(j, begin, end); break;
    case QL_I32: iclamp_i32(j, begin, end); break;
    case QL_I16: iclamp_i16(j, begin, end); break;
    case QL_I8: iclamp_i8(j, begin, end); break;
    case QL_U8: iclamp_u8(j, begin, end); break;
    default: break;
    }
}

/* The representable range of integer dtype dt. */
static void int_range(ql_dtype dt, int64_t *lo, int64_t *hi)
{
    switch (dt) {
    case QL_I32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    case QL_I16: *lo = INT16_MIN; *hi = INT16_MAX; break;
    case QL_I8: *lo = INT8_MIN; *hi = INT8_MAX; break;
    case QL_U8: *lo = 0; *hi = UINT8_MAX; break;
    default: *lo = INT64_MIN; *hi = INT64_MAX; break;
    }
}

/* Reads Clip's bound input k (1 min, 2 max) into j when present. */
static ql_status clip_bound(const ql_node *n, const ql_tensor *const *in, int k, act_job *j,
                            ql_error *err)
{
    const char *what = k == 1 ? "min" : "max";
    if (n->n_in <= k || !in[k])
        return QL_OK;
    const ql_tensor *t = in[k];
    if (t->dtype != j->dt)
        return ql_fail(err, QL_ERR_ARG, "%s is %s, the input %s", what,
                       ql_dtype_info(t->dtype)->name, ql_dtype_info(j->dt)->name);
    if (ql_tensor_numel(t) != 1)
        return ql_fail(err, QL_ERR_SHAPE, "%s must be a scalar, has %lld elements", what,
                       (long long)ql_tensor_numel(t));
    if (j->dt == QL_F32)
        *(k == 1 ? &j->lo : &j->hi) = *(const float *)t->data;
    else
        *(k == 1 ? &j->ilo : &j->ihi) = ql_tensor_get_i64(t, 0);
    return QL_OK;
}

static ql_status act_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                         ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    act_job j = {.op = n->op, .x = x->data, .y = out[0]->data, .dt = x->dtype, .lo = -INFINITY,
                 .hi = INFINITY};
    int_range(x->dtype, &j.ilo, &j.ihi);
    if (x->dtype != QL_F32 && n->op != QL_OP_RELU && n->op != QL_OP_CLIP)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "needs f32 input, got %s",
                       ql_dtype_info(x->dtype)->name);
    if (x->dtype == QL_BOOL)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s input", ql_dtype_info(x->dtype)->name);
    ql_status st;
    switch (n->op) {
    case QL_OP_RELU:
        if (j.ilo < 0)
            j.ilo = 0;
        break;
    case QL_OP_LEAKYRELU: j.alpha = ql_attr_float(n, "alpha", 0.01f); break;
    case QL_OP_HARDSIGMOID:
        j.alpha = ql_attr_float(n, "alpha", 0.2f);
        j.beta = ql_attr_float(n, "beta", 0.5f);
        break;
    case QL_OP_CLIP:
        /* before opset 11 the bounds are attributes, from 11 optional inputs */
        j.lo = ql_attr_float(n, "min", -INFINITY);
        j.hi = ql_attr_float(n, "max", INFINITY);
        if ((st = clip_bound(n, in, 1, &j, err)) != QL_OK ||
            (st = clip_bound(n, in, 2, &j, err)) != QL_OK)
            return st;
        break;
    default: break;
    }
    j.n = ql_tensor_numel(x);
    ql_parallel_for(ctx, (j.n + ACT_BLOCK - 1) / ACT_BLOCK, ACT_GRAIN / ACT_BLOCK, act_task, &j);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Softmax. Before opset 13 the input is coerced to 2-D at axis (default 1)
 * and each row normalised; from opset 13 along one axis (default -1). The
 * node carries the graph's opset in n->state (set by prepare): 1 or 13.
 * ------------------------------------------------------------------------- */
#define SM_LEGACY ((void *)(intptr_t)1)
#define SM_AXIS ((void *)(intptr_t)13)
#define SM_COLS 256 /* columns per work item when the axis is not innermost */

static ql_status softmax_prepare(ql_graph *g, ql_node *n, ql_error *err)
{
    (void)err;
    n->state = g->opset >= 13 ? SM_AXIS : SM_LEGACY;
    return QL_OK;
}

static int64_t softmax_default_axis(const ql_node *n) { return n->state == SM_AXIS ? -1 : 1; }

static ql_status softmax_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                               ql_error *err)
{
    int ax, rank = in[0] ? in[0]->ndim : -1;
    /* shapes are inferred before prepare, when the default axis (which
     * depends on the opset) may not be known yet: check what is given */
    int known = ql_node_attr(n, "axis") || n->state;
    int64_t axis = ql_attr_int(n, "axis", softmax_default_axis(n));
    if (rank >= 0 && known && !ql_norm_axis(axis, rank, &ax))
        return ql_fail(err, QL_ERR_ARG, "axis %lld is out of range for rank %d", (long long)axis,
                       rank);
    return same_infer(n, in, out, err);
}

typedef struct softmax_job {
    const float *x;
    float *y;
    int64_t len, inner; /* along-axis length, distance between its elements */
    int64_t nblk;       /* column blocks per outer index (inner > 1) */
} softmax_job;

/* Rows along a contiguous axis (inner == 1). */
static void softmax_rows(void *arg, int64_t begin, int64_t end, int tid)
{
    const softmax_job *j = arg;
    (void)tid;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * j->len;
        float *y = j->y + r * j->len;
        float m = -INFINITY, s = 0.0f;
        for (int64_t k = 0; k < j->len; k++)
            m = x[k] > m ? x[k] : m;
        for (int64_t k = 0; k < j->len; k++) {
            y[k] = expf(x[k] - m);
            s += y[k];
        }
        for (int64_t k = 0; k < j->len; k++)
            y[k] /= s;
    }
}

/* Blocks of up to SM_COLS columns along a strided axis: each pass over k
 * reads a contiguous run, and each column is still summed in k order. */
static void softmax_cols(void *arg, int64_t begin, int64_t end, int tid)
{
    const softmax_job *j = arg;
    (void)tid;
    float m[SM_COLS], s[SM_COLS];
    for (int64_t it = begin; it < end; it++) {
        int64_t o = it / j->nblk, c0 = it % j->nblk * SM_COLS;
        int64_t w = j->inner - c0 < SM_COLS ? j->inner - c0 : SM_COLS;
        const float *x = j->x + o * j->len * j->inner + c0;
        float *y = j->y + o * j->len * j->inner + c0;
        for (int64_t c = 0; c < w; c++) {
            m[c] = -INFINITY;
            s[c] = 0.0f;
        }
        for (int64_t k = 0; k < j->len; k++)
            for (int64_t c = 0; c < w; c++)
                m[c] = x[k * j->inner + c] > m[c] ? x[k * j->inner + c] : m[c];
        for (int64_t k = 0; k < j->len; k++)
            for (int64_t c = 0; c < w; c++) {
                float e = expf(x[k * j->inner + c] - m[c]);
                y[k * j->inner + c] = e;
                s[c] += e;
            }
        for (int64_t k = 0; k < j->len; k++)
            for (int64_t c = 0; c < w; c++)
                y[k * j->inner + c] /= s[c];
    }
}

static ql_status softmax_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                             ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    if (x->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "needs f32 input, got %s",
                       ql_dtype_info(x->dtype)->name);
    if (n->state != SM_AXIS && n->state != SM_LEGACY)
        return ql_fail(err, QL_ERR_INTERNAL, "Softmax ran before prepare (opset unknown)");
    int legacy = n->state == SM_LEGACY, ax;
    int64_t axis = ql_attr_int(n, "axis", softmax_default_axis(n));
    if (!ql_norm_axis(axis, x->ndim, &ax))
        return ql_fail(err, QL_ERR_ARG, "axis %lld is out of range for rank %d", (long long)axis,
                       x->ndim);
    int64_t outer = 1, len = 1, inner = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (i < ax)
            outer *= x->dims[i];
        else if (i == ax || legacy)
            len *= x->dims[i];
        else
            inner *= x->dims[i];
    }
    if (outer * len * inner == 0)
        return QL_OK;
    softmax_job j = {.x = x->data, .y = out[0]->data, .len = len, .inner = inner};
    if (inner == 1) {
        ql_parallel_for(ctx, outer, ACT_GRAIN / len + 1, softmax_rows, &j);
    } else {
        j.nblk = (inner + SM_COLS - 1) / SM_COLS;
        int64_t per = len * (inner < SM_COLS ? inner : SM_COLS);
        ql_parallel_for(ctx, outer * j.nblk, ACT_GRAIN / per + 1, softmax_cols, &j);
    }
    return QL_OK;
}

#define ACT_ROW(E, NAME, SINCE, DTYPES, MAX_IN)                                                \
    const ql_op_def ql_op_def_##E = {                                                          \
        .name = NAME, .since_version = SINCE, .in_dtypes = DTYPES, .infer = same_infer,        \
        .run_f32 = act_run, QL_IO(1, MAX_IN, 1, 1),                                            \
    };
/* opset 1 differs from 6 only by the ignored consumed_inputs attribute */
ACT_ROW(RELU, "Relu", 1, QL_DT_NUMERIC, 1)
ACT_ROW(LEAKYRELU, "LeakyRelu", 1, 0, 1)
ACT_ROW(CLIP, "Clip", 1, QL_DT_NUMERIC, 3) /* min and max inputs from opset 11 */
ACT_ROW(SIGMOID, "Sigmoid", 1, 0, 1)
ACT_ROW(HARDSIGMOID, "HardSigmoid", 1, 0, 1)
ACT_ROW(HARDSWISH, "HardSwish", 14, 0, 1)
ACT_ROW(TANH, "Tanh", 1, 0, 1)

const ql_op_def ql_op_def_SOFTMAX = {
    .name = "Softmax", .since_version = 1, .infer = softmax_infer, .prepare = softmax_prepare,
    .run_f32 = softmax_run, QL_IO(1, 1, 1, 1),
};
