/* Broadcasting binary ops: Add, Sub, Mul, Div (numpy multidirectional
 * broadcasting, f32 and the integer types shape sub-graphs use) and PRelu
 * (slope broadcast unidirectionally to X), including the forms before
 * opset 7 (broadcast/axis attributes; PRelu's per-channel 1-D slope).
 *
 * Any broadcast is reduced to rows of one contiguous inner loop: output dims
 * of extent 1 are dropped, then neighbouring dims are merged while both
 * operands stay affine across them. The inner loop is one of three shapes
 * (both operands contiguous, b a scalar, a a scalar), which covers equal
 * shapes, scalars and per-channel operands ([N,C,H,W] with [C,1,1]) with
 * loops gcc vectorises. Work is split into rows and fixed-size chunks of
 * long rows; every element is computed independently, so results do not
 * depend on the thread count. f32 results can take the executor's fused
 * Relu/Clip (ctx->post_clamp). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../pool.h"
#include "kernels.h"

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_PRELU } binop;
typedef enum { K_VV, K_VS, K_SV } bkind; /* inner strides (a, b): (1,1) (1,0) (0,1) */

#define CHUNK 16384   /* elements per work item of a long row */
#define PAR_MIN 32768 /* elements below which one thread does it all */

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

static binop op_of(int op)
{
    switch (op) {
    case QL_OP_ADD: return OP_ADD;
    case QL_OP_SUB: return OP_SUB;
    case QL_OP_MUL: return OP_MUL;
    case QL_OP_PRELU: return OP_PRELU;
    default: return OP_DIV;
    }
}

static ql_status bcast_error(const ql_tensor *a, const ql_tensor *b, const char *what,
                             ql_error *err)
{
    char sa[128], sb[128];
    return ql_fail(err, QL_ERR_SHAPE, "shapes %s and %s %s",
                   ql_shape_str(a->ndim, a->dims, sa, sizeof sa),
                   ql_shape_str(b->ndim, b->dims, sb, sizeof sb), what);
}

/* PRelu's n->state: the graph's opset decides how a 1-D slope aligns */
#define PRELU_LEGACY ((void *)(intptr_t)6) /* opset < 7: one slope per channel */
#define PRELU_NUMPY ((void *)(intptr_t)7)

static ql_status prelu_prepare(ql_graph *g, ql_node *n, ql_error *err)
{
    (void)err;
    n->state = g->opset < 7 ? PRELU_LEGACY : PRELU_NUMPY;
    return QL_OK;
}

/* The shape b takes part in broadcasting with: its own, or re-aligned for
 * the forms before opset 7: Add/Sub/Mul/Div with broadcast=1 and an axis
 * place b's dims at A's axis (without an axis, b aligns to A's trailing
 * dims as numpy does), and PRelu's 1-D slope of X's channel count holds
 * one slope per channel. */
static ql_status b_shape(const ql_node *n, const ql_tensor *a, const ql_tensor *b, int legacy_prelu,
                         int *bn, int64_t *bd, ql_error *err)
{
    *bn = b->ndim;
    if (b->ndim > 0)
        memcpy(bd, b->dims, (size_t)b->ndim * sizeof *bd);
    if (a->ndim < 0 || b->ndim < 0)
        return QL_OK;
    if (n->op == QL_OP_PRELU) {
        if (legacy_prelu && b->ndim == 1 && a->ndim >= 2 && b->dims[0] == a->dims[1]) {
            *bn = a->ndim - 1;
            for (int i = 1; i < *bn; i++)
                bd[i] = 1;
        }
        return QL_OK;
    }
    const ql_attr *ax = ql_node_attr(n, "axis");
    if (!ax || !ql_attr_int(n, "broadcast", 0))
        return QL_OK;
    int axis;
    if (!ql_norm_axis(ax->i, a->ndim, &axis))
        return ql_fail(err, QL_ERR_ARG, "axis %lld is out of range for rank %d", (long long)ax->i,
                       a->ndim);
    int trail = a->ndim - axis - b->ndim;
    if (trail < 0) {
        char sa[128], sb[128];
        return ql_fail(err, QL_ERR_SHAPE, "B of shape %s does not fit in A of shape %s at axis %d",
                       ql_shape_str(b->ndim, b->dims, sb, sizeof sb),
                       ql_shape_str(a->ndim, a->dims, sa, sizeof sa), axis);
    }
    for (int i = 0; i < trail; i++)
        bd[b->ndim + i] = 1;
    *bn = b->ndim + trail;
    return QL_OK;
}

/* Broadcasts a with b (re-aligned as above) into on/od; for PRelu the
 * result must be X's own shape. Errors name both shapes as given. */
static ql_status bcast(const ql_node *n, const ql_tensor *a, const ql_tensor *b, int legacy_prelu,
                       int *on, int64_t *od, ql_error *err)
{
    int bn;
    int64_t bd[QL_MAX_DIMS];
    ql_status st = b_shape(n, a, b, legacy_prelu, &bn, bd, err);
    if (st != QL_OK)
        return st;
    if (!ql_broadcast_shape(a->ndim, a->dims, bn, bd, on, od))
        return bcast_error(
            a, b, n->op == QL_OP_PRELU ? "(X and slope) do not broadcast" : "do not broadcast",
            err);
    if (n->op != QL_OP_PRELU || *on < 0)
        return QL_OK;
    if (*on != a->ndim)
        return bcast_error(a, b, "(X and slope): the slope has a higher rank than X", err);
    for (int i = 0; i < *on; i++)
        if (a->dims[i] >= 0 && od[i] != a->dims[i])
            return bcast_error(a, b, "(X and slope): the slope does not broadcast to X", err);
    return QL_OK;
}

static ql_status binary_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    const ql_tensor *a = in[0], *b = n->n_in > 1 ? in[1] : NULL;
    if (!a || !b || n->n_in != 2)
        return ql_fail(err, QL_ERR_ARG, "needs exactly two inputs");
    if (a->dtype != b->dtype)
        return ql_fail(err, QL_ERR_ARG, "input types differ (%s and %s)",
                       ql_dtype_info(a->dtype)->name, ql_dtype_info(b->dtype)->name);
    if (a->dtype == QL_BOOL)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "arithmetic on bool tensors");
    int on;
    int64_t o[QL_MAX_DIMS];
    ql_status st = bcast(n, a, b, n->state == PRELU_LEGACY, &on, o, err);
    /* PRelu before prepare: the opset is not known yet, so accept either reading */
    if (st == QL_ERR_SHAPE && n->op == QL_OP_PRELU && !n->state)
        st = bcast(n, a, b, 1, &on, o, err);
    if (st != QL_OK)
        return st;
    out[0]->dtype = a->dtype;
    out[0]->ndim = on;
    if (on > 0)
        memcpy(out[0]->dims, o, (size_t)on * sizeof *o);
    if (n->op == QL_OP_PRELU && a->ndim >= 0) { /* X's shape, whatever is known of it */
        out[0]->ndim = a->ndim;
        if (a->ndim > 0)
            memcpy(out[0]->dims, a->dims, (size_t)a->ndim * sizeof *a->dims);
    }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Inner loops. One function per dtype, switching once per call on the op
 * and stride pattern; each case is a plain counted loop over contiguous
 * memory. Integer arithmetic wraps (done in unsigned types, as ONNX Runtime
 * does in effect) and integer Div truncates toward zero like C and ONNX
 * Runtime (the ONNX reference casts numpy's true quotient back, which
 * truncates too); division by zero gives 0 rather than a trap.
 * ------------------------------------------------------------------------- */
#define LOOP3(T, EXPR, POST)                                                                   \
    do {                                                                                       \
        if (kind == K_VV)                                                                      \
            for (int64_t i = 0; i < n; i++) {                                                  \
                T x = a[i], z = b[i];                                                          \
                (void)z;                                                                       \
                y[i] = POST(EXPR);                                                             \
            }                                                                                  \
        else if (kind == K_VS) {                                                               \
            T z = b[0];                                                                        \
            (void)z;                                                                           \
            for (int64_t i = 0; i < n; i++) {                                                  \
                T x = a[i];                                                                    \
                y[i] = POST(EXPR);                                                             \
            }                                                                                  \
        } else {                                                                               \
            T x = a[0];                                                                        \
            for (int64_t i = 0; i < n; i++) {                                                  \
                T z = b[i];                                                                    \
                (void)z;                                                                       \
                y[i] = POST(EXPR);                                                             \
            }                                                                                  \
        }                                                                                      \
    } while (0)

#define DEFINE_LOOPS(NAME, T, ADD, SUB, MUL, DIV, PRELU, POST)                                 \
    static void NAME(binop op, bkind kind, const void *pa, const void *pb, void *py, int64_t n, \
                     float lo, float hi)                                                       \
    {                                                                                          \
        const T *a = pa, *b = pb;                                                              \
        T *y = py;                                                                             \
        (void)lo;                                                                              \
        (void)hi;                                                                              \
        switch (op) {                                                                          \
        case OP_ADD: LOOP3(T, ADD, POST); break;                                               \
        case OP_SUB: LOOP3(T, SUB, POST); break;                                               \
        case OP_MUL: LOOP3(T, MUL, POST); break;                                               \
        case OP_DIV: LOOP3(T, DIV, POST); break;                                               \
        case OP_PRELU: LOOP3(T, PRELU, POST); break;                                           \
        }                                                                                      \
    }

/* f32: the fused clamp is always applied; with (-inf, inf) it changes
 * nothing (NaN passes through), and the loops are memory bound anyway. */
#define CLAMP(v) clampf((v), lo, hi)
static inline float clampf(float v, float lo, float hi)
{
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}
#define NOPOST(v) (v)
DEFINE_LOOPS(loop_f32_plain, float, x + z, x - z, x *z, x / z, x < 0.0f ? x * z : x, CLAMP)

/* f32 PRelu with a contiguous x, in explicit vectors (see above); the
 * scalar tail computes the same IEEE operations. */
static void prelu_f32(bkind kind, const float *x, const float *z, float *y, int64_t n, float lo,
                      float hi)
{
    int64_t i = 0, sz = kind == K_VV;
    for (; i + 4 <= n; i += 4) {
        f4 v = LD4(x + i), s = F4(z[0]);
        if (sz)
            s = LD4(z + i);
        ST4(y + i, CLAMP4(SEL4(v < F4(0.0f), v, v * s), F4(lo), F4(hi)));
    }
    for (; i < n; i++)
        y[i] = clampf(x[i] < 0.0f ? x[i] * z[i * sz] : x[i], lo, hi);
}

static void loop_f32(binop op, bkind kind, const void *pa, const void *pb, void *py, int64_t n,
                     float lo, float hi)
{
    if (op == OP_PRELU && kind != K_SV)
        prelu_f32(kind, pa, pb, py, n, lo, hi);
    else
        loop_f32_plain(op, kind, pa, pb, py, n, lo, hi);
}

/* integers: U is the unsigned type the arithmetic wraps in (at least
 * unsigned int, so that promotion never makes a signed product overflow) */
#define IADD(T, U) (T)((U)x + (U)z)
#define ISUB(T, U) (T)((U)x - (U)z)
#define IMUL(T, U) (T)((U)x * (U)z)
/* x / -1 is negation, done wrapping: INT_MIN / -1 would trap */
#define SDIV(T, U) (T)(z == 0 ? 0 : z == -1 ? (T)(0u - (U)x) : x / z)
#define UDIV(T, U) (T)(z == 0 ? 0 : x / z)
#define SPRELU(T, U) (x < 0 ? IMUL(T, U) : x)
#define DEFINE_SIGNED(NAME, T, U)                                                              \
    DEFINE_LOOPS(NAME, T, IADD(T, U), ISUB(T, U), IMUL(T, U), SDIV(T, U), SPRELU(T, U), NOPOST)
DEFINE_SIGNED(loop_i64, int64_t, uint64_t)
DEFINE_SIGNED(loop_i32, int32_t, uint32_t)
DEFINE_SIGNED(loop_i16, int16_t, unsigned)
DEFINE_SIGNED(loop_i8, int8_t, unsigned)
/* u8: PRelu is the identity (nothing is negative) */
DEFINE_LOOPS(loop_u8, uint8_t, IADD(uint8_t, unsigned), ISUB(uint8_t, unsigned),
             IMUL(uint8_t, unsigned), UDIV(uint8_t, unsigned), x, NOPOST)

typedef void (*loop_fn)(binop, bkind, const void *, const void *, void *, int64_t, float, float);

static loop_fn loop_for(ql_dtype dt)
{
    switch (dt) {
    case QL_F32: return loop_f32;
    case QL_I64: return loop_i64;
    case QL_I32: return loop_i32;
    case QL_I16: return loop_i16;
    case QL_I8: return loop_i8;
    case QL_U8: return loop_u8;
    default: return NULL;
    }
}

/* ---------------------------------------------------------------------------
 * Driver: the output as rows (outer dims, walked with an odometer) of
 * `inner` elements, each row cut into nchunk work items.
 * ------------------------------------------------------------------------- */
typedef struct bin_job {
    loop_fn fn;
    binop op;
    bkind kind;
    size_t es;
    const char *a, *b;
    char *y;
    int nd; /* outer dims */
    int64_t dims[QL_MAX_DIMS], astr[QL_MAX_DIMS], bstr[QL_MAX_DIMS];
    int64_t inner, chunk, nchunk;
    float lo, hi;
} bin_job;

static void bin_task(void *arg, int64_t begin, int64_t end, int tid)
{
    const bin_job *j = arg;
    (void)tid;
    int64_t r = begin / j->nchunk, c = begin % j->nchunk;
    int64_t idx[QL_MAX_DIMS], ao = 0, bo = 0, rem = r;
    for (int i = j->nd - 1; i >= 0; i--) {
        idx[i] = rem % j->dims[i];
        rem /= j->dims[i];
        ao += idx[i] * j->astr[i];
        bo += idx[i] * j->bstr[i];
    }
    int64_t sa = j->kind == K_SV ? 0 : 1, sb = j->kind == K_VS ? 0 : 1;
    for (int64_t item = begin; item < end; item++) {
        int64_t off = c * j->chunk, len = j->inner - off < j->chunk ? j->inner - off : j->chunk;
        j->fn(j->op, j->kind, j->a + (size_t)(ao + off * sa) * j->es,
              j->b + (size_t)(bo + off * sb) * j->es, j->y + (size_t)(r * j->inner + off) * j->es,
              len, j->lo, j->hi);
        if (++c < j->nchunk)
            continue;
        c = 0;
        r++;
        for (int i = j->nd - 1; i >= 0; i--) { /* odometer step to the next row */
            ao += j->astr[i];
            bo += j->bstr[i];
            if (++idx[i] < j->dims[i])
                break;
            ao -= idx[i] * j->astr[i];
            bo -= idx[i] * j->bstr[i];
            idx[i] = 0;
        }
    }
}

static ql_status binary_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *a = in[0], *b = in[1];
    ql_tensor *y = out[0];
    bin_job j = {.op = op_of(n->op), .fn = loop_for(a->dtype), .es = ql_dtype_info(a->dtype)->size,
                 .a = a->data, .b = b->data, .y = y->data, .lo = -INFINITY, .hi = INFINITY};
    if (!j.fn || b->dtype != a->dtype)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s and %s inputs are not supported",
                       ql_dtype_info(a->dtype)->name, ql_dtype_info(b->dtype)->name);
    int on, bn;
    int64_t od[QL_MAX_DIMS], bd[QL_MAX_DIMS];
    int legacy = n->state == PRELU_LEGACY;
    ql_status st;
    if ((st = bcast(n, a, b, legacy, &on, od, err)) != QL_OK ||
        (st = b_shape(n, a, b, legacy, &bn, bd, err)) != QL_OK)
        return st;
    if (!ql_shape_equal(on, od, y->ndim, y->dims))
        return bcast_error(a, b, "broadcast to a shape other than the output's", err);
    if (a->dtype == QL_F32 && ctx && ctx->post_clamp) {
        j.lo = ctx->post_lo;
        j.hi = ctx->post_hi;
    }
    int64_t total = ql_tensor_numel(y);
    if (total == 0)
        return QL_OK;

    /* per-dim element strides (0 where broadcast), dropping extent-1 dims */
    int64_t dims[QL_MAX_DIMS], as[QL_MAX_DIMS], bs[QL_MAX_DIMS], sa = 1, sb = 1;
    int m = 0;
    for (int i = on - 1; i >= 0; i--) {
        int ia = i - (on - a->ndim), ib = i - (on - bn);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
        if (od[i] != 1) {
            dims[m] = od[i];
            as[m] = da == 1 ? 0 : sa;
            bs[m] = db == 1 ? 0 : sb;
            m++;
        }
        sa *= da;
        sb *= db;
    }
    /* dims[] is innermost first here; merge while both operands stay affine */
    int k = 0;
    for (int i = 1; i < m; i++) {
        if (as[i] == as[k] * dims[k] && bs[i] == bs[k] * dims[k]) {
            dims[k] *= dims[i];
        } else {
            k++;
            dims[k] = dims[i];
            as[k] = as[i];
            bs[k] = bs[i];
        }
    }
    if (m == 0) { /* a single element */
        dims[0] = 1;
        as[0] = bs[0] = 1;
    }
    j.inner = dims[0];
    j.kind = as[0] && bs[0] ? K_VV : as[0] ? K_VS : K_SV;
    j.nd = m ? k : 0;
    for (int i = 0; i < j.nd; i++) { /* outer dims, outermost first */
        j.dims[i] = dims[k - i];
        j.astr[i] = as[k - i];
        j.bstr[i] = bs[k - i];
    }
    j.chunk = j.inner < CHUNK ? j.inner : CHUNK;
    j.nchunk = (j.inner + j.chunk - 1) / j.chunk;
    int64_t items = total / j.inner * j.nchunk;
    ql_parallel_for(ctx, items, (PAR_MIN + j.chunk - 1) / j.chunk, bin_task, &j);
    return QL_OK;
}

#define BINARY_ROW(E, NAME, PREPARE)                                                           \
    const ql_op_def ql_op_def_##E = {                                                          \
        .name = NAME, .since_version = 1, .in_dtypes = QL_DT_NUMERIC, .infer = binary_infer,   \
        .prepare = PREPARE, .run_f32 = binary_run, .fuses_clamp = true, QL_IO(2, 2, 1, 1),     \
    };
BINARY_ROW(ADD, "Add", NULL)
BINARY_ROW(SUB, "Sub", NULL)
BINARY_ROW(MUL, "Mul", NULL)
BINARY_ROW(DIV, "Div", NULL)
BINARY_ROW(PRELU, "PRelu", prelu_prepare)
