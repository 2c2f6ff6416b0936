/* Ops that change only the shape (Reshape, Flatten, Squeeze, Unsqueeze),
 * report it (Shape), or pass data through (Identity, Dropout, Constant).
 * They copy bytes, so every dtype works. */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static void copy_header_dims(ql_tensor *o, int ndim, const int64_t *dims)
{
    o->ndim = ndim;
    if (ndim > 0)
        memcpy(o->dims, dims, (size_t)ndim * sizeof *dims);
}

/* Parallel memcpy in blocks of COPY_BLOCK bytes. */
#define COPY_BLOCK ((int64_t)256 << 10)

typedef struct copy_job {
    char *dst;
    const char *src;
    int64_t n;
} copy_job;

static void copy_task(void *arg, int64_t begin, int64_t end, int tid)
{
    const copy_job *j = arg;
    (void)tid;
    int64_t b = begin * COPY_BLOCK, e = end * COPY_BLOCK < j->n ? end * COPY_BLOCK : j->n;
    memcpy(j->dst + b, j->src + b, (size_t)(e - b));
}

static void copy_bytes(ql_exec_ctx *ctx, void *dst, const void *src, size_t n)
{
    copy_job j = {dst, src, (int64_t)n};
    if (n)
        ql_parallel_for(ctx, (j.n + COPY_BLOCK - 1) / COPY_BLOCK, 2, copy_task, &j);
}

/* Copies x's bytes into y (same element count): Reshape, Flatten, Squeeze,
 * Unsqueeze, Identity. */
static ql_status copy_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_exec_ctx *ctx, ql_error *err)
{
    (void)n;
    if (ql_tensor_numel(in[0]) != ql_tensor_numel(out[0]))
        return ql_fail(err, QL_ERR_INTERNAL, "output size differs from the input's");
    copy_bytes(ctx, out[0]->data, in[0]->data, ql_tensor_nbytes(in[0]));
    return QL_OK;
}

/* Reads the axes of Squeeze/Unsqueeze: attribute before opset 13, input 1
 * from 13. Returns the count (-1: none given); *known = 0 when the input's
 * data is not available (static inference). */
static int get_axes(const ql_node *n, const ql_tensor *const *in, int64_t *axes, int *known)
{
    int cnt = 0;
    *known = 1;
    if (n->n_in > 1 && in[1]) {
        if (!in[1]->data) {
            *known = 0;
            return 0;
        }
        cnt = (int)ql_tensor_numel(in[1]);
        if (cnt > QL_MAX_DIMS)
            cnt = QL_MAX_DIMS + 1;
        for (int k = 0; k < cnt && k < QL_MAX_DIMS; k++)
            axes[k] = ql_tensor_get_i64(in[1], k);
        return cnt;
    }
    const int64_t *a = ql_attr_ints(n, "axes", &cnt);
    if (!a)
        return -1;
    if (cnt > QL_MAX_DIMS)
        cnt = QL_MAX_DIMS + 1;
    for (int k = 0; k < cnt && k < QL_MAX_DIMS; k++)
        axes[k] = a[k];
    return cnt;
}

/* ---------------------------------------------------------------------------
 * Reshape: 0 copies the input extent (unless allowzero=1), one -1 is inferred
 * ------------------------------------------------------------------------- */
static ql_status reshape_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                               ql_error *err)
{
    const ql_tensor *x = in[0], *s = n->n_in > 1 ? in[1] : NULL;
    ql_tensor *y = out[0];
    y->dtype = x->dtype;
    if (!s)
        return ql_fail(err, QL_ERR_ARG, "needs a shape input");
    if (s->dtype != QL_I64 && s->dtype != QL_I32)
        return ql_fail(err, QL_ERR_ARG, "the shape input must be int64, not %s",
                       ql_dtype_info(s->dtype)->name);
    if (s->ndim != 1 && s->ndim >= 0)
        return ql_fail(err, QL_ERR_SHAPE, "the shape input must be 1-D, not rank %d", s->ndim);
    if (!s->data) { /* rank known from the shape's length, extents not */
        y->ndim = s->ndim == 1 && s->dims[0] >= 0 && s->dims[0] <= QL_MAX_DIMS ? (int)s->dims[0] : -1;
        for (int i = 0; i < y->ndim; i++)
            y->dims[i] = -1;
        return QL_OK;
    }
    int nd = (int)ql_tensor_numel(s);
    if (nd > QL_MAX_DIMS)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%d dimensions (at most %d)", nd, QL_MAX_DIMS);
    int allowzero = ql_attr_int(n, "allowzero", 0) != 0, infer_at = -1;
    int copied[QL_MAX_DIMS] = {0}; /* output axis i copies input axis i */
    for (int i = 0; i < nd; i++) {
        int64_t d = ql_tensor_get_i64(s, i);
        if (d == 0 && !allowzero) {
            if (x->ndim >= 0 && i >= x->ndim)
                return ql_fail(err, QL_ERR_SHAPE, "shape[%d] = 0 copies a dimension the rank-%d input lacks",
                               i, x->ndim);
            y->dims[i] = x->ndim >= 0 ? x->dims[i] : -1;
            copied[i] = 1;
        } else if (d == -1) {
            if (infer_at >= 0)
                return ql_fail(err, QL_ERR_SHAPE, "more than one -1 in the shape");
            infer_at = i;
            y->dims[i] = -1;
        } else if (d < 0) {
            return ql_fail(err, QL_ERR_SHAPE, "invalid shape value %lld", (long long)d);
        } else {
            y->dims[i] = d;
        }
    }
    if (allowzero && infer_at >= 0)
        for (int i = 0; i < nd; i++)
            if (y->dims[i] == 0)
                return ql_fail(err, QL_ERR_SHAPE, "allowzero=1 with both 0 and -1 in the shape");
    y->ndim = nd;
    if (x->ndim < 0)
        return QL_OK;
    /* Element counts, leaving out unknown extents the output copies from the
     * input (they cancel): [?, 16, 16] to [0, -1] still gives [?, 256]. */
    int64_t xin = 1, yout = 1;
    int unknown = 0;
    int big = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (x->dims[i] < 0 && !(i < nd && copied[i]))
            unknown = 1;
        else if (x->dims[i] >= 0)
            big |= __builtin_mul_overflow(xin, x->dims[i], &xin);
    }
    for (int i = 0; i < nd; i++)
        if (i != infer_at && y->dims[i] >= 0)
            big |= __builtin_mul_overflow(yout, y->dims[i], &yout);
    if (big)
        return ql_fail(err, QL_ERR_SHAPE, "the shape has more elements than an int64 can count");
    if (unknown)
        return QL_OK; /* the -1 stays unknown until run time */
    char a[96], b[96];
    if (infer_at >= 0) {
        if (yout == 0 ? xin != 0 : xin % yout)
            return ql_fail(err, QL_ERR_SHAPE, "cannot reshape %s (%lld elements) to %s",
                           ql_shape_str(x->ndim, x->dims, a, sizeof a), (long long)xin,
                           ql_shape_str(nd, y->dims, b, sizeof b));
        y->dims[infer_at] = yout == 0 ? 0 : xin / yout;
    } else if (yout != xin) {
        return ql_fail(err, QL_ERR_SHAPE, "cannot reshape %s (%lld elements) to %s (%lld elements)",
                       ql_shape_str(x->ndim, x->dims, a, sizeof a), (long long)xin,
                       ql_shape_str(nd, y->dims, b, sizeof b), (long long)yout);
    }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Flatten: [d0 .. d(axis-1)] x [d(axis) ..]
 * ------------------------------------------------------------------------- */
static ql_status flatten_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                               ql_error *err)
{
    const ql_tensor *x = in[0];
    out[0]->dtype = x->dtype;
    out[0]->ndim = 2;
    if (x->ndim < 0) {
        out[0]->dims[0] = out[0]->dims[1] = -1;
        return QL_OK;
    }
    int64_t axis = ql_attr_int(n, "axis", 1), a = axis < 0 ? axis + x->ndim : axis;
    if (a < 0 || a > x->ndim)
        return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)axis, x->ndim);
    int64_t left = 1, right = 1;
    for (int i = 0; i < x->ndim; i++) {
        int64_t *p = i < a ? &left : &right;
        *p = x->dims[i] < 0 || *p < 0 ? -1 : *p * x->dims[i];
    }
    out[0]->dims[0] = left;
    out[0]->dims[1] = right;
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Squeeze / Unsqueeze
 * ------------------------------------------------------------------------- */
static ql_status squeeze_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                               ql_error *err)
{
    const ql_tensor *x = in[0];
    int64_t axes[QL_MAX_DIMS];
    int known, cnt = get_axes(n, in, axes, &known);
    out[0]->dtype = x->dtype;
    if (x->ndim < 0 || !known) {
        out[0]->ndim = -1;
        return QL_OK;
    }
    int drop[QL_MAX_DIMS] = {0};
    if (cnt > x->ndim)
        return ql_fail(err, QL_ERR_ARG, "%d axes for rank %d", cnt, x->ndim);
    for (int k = 0; k < cnt; k++) {
        int a;
        if (!ql_norm_axis(axes[k], x->ndim, &a))
            return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)axes[k],
                           x->ndim);
        if (x->dims[a] >= 0 && x->dims[a] != 1)
            return ql_fail(err, QL_ERR_SHAPE, "cannot squeeze axis %d of extent %lld", a,
                           (long long)x->dims[a]);
        drop[a] = 1;
    }
    if (cnt <= 0) { /* no axes: every extent-1 axis */
        for (int i = 0; i < x->ndim; i++) {
            if (x->dims[i] < 0) { /* cannot tell which axes are 1 */
                out[0]->ndim = -1;
                return QL_OK;
            }
            drop[i] = x->dims[i] == 1;
        }
    }
    int k = 0;
    for (int i = 0; i < x->ndim; i++)
        if (!drop[i])
            out[0]->dims[k++] = x->dims[i];
    out[0]->ndim = k;
    return QL_OK;
}

static ql_status unsqueeze_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                                 ql_error *err)
{
    const ql_tensor *x = in[0];
    int64_t axes[QL_MAX_DIMS];
    int known, cnt = get_axes(n, in, axes, &known);
    out[0]->dtype = x->dtype;
    if (known && cnt <= 0)
        return ql_fail(err, QL_ERR_ARG, "axes are required");
    if (x->ndim < 0 || !known) {
        out[0]->ndim = -1;
        return QL_OK;
    }
    int r = x->ndim + cnt;
    if (r > QL_MAX_DIMS)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "the result would have %d dimensions (at most %d)", r,
                       QL_MAX_DIMS);
    int ins[QL_MAX_DIMS] = {0};
    for (int k = 0; k < cnt; k++) {
        int a;
        if (!ql_norm_axis(axes[k], r, &a))
            return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for output rank %d", (long long)axes[k],
                           r);
        if (ins[a])
            return ql_fail(err, QL_ERR_ARG, "axis %d is repeated", a);
        ins[a] = 1;
    }
    for (int i = 0, s = 0; i < r; i++)
        out[0]->dims[i] = ins[i] ? 1 : x->dims[s++];
    out[0]->ndim = r;
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Shape (start/end from opset 15)
 * ------------------------------------------------------------------------- */
static void shape_range(const ql_node *n, int rank, int64_t *start, int64_t *end)
{
    *start = ql_attr_int(n, "start", 0);
    *end = ql_attr_int(n, "end", rank);
    if (*start < 0)
        *start += rank;
    if (*end < 0)
        *end += rank;
    *start = *start < 0 ? 0 : (*start > rank ? rank : *start);
    *end = *end < 0 ? 0 : (*end > rank ? rank : *end);
    if (*end < *start)
        *end = *start;
}

static ql_status shape_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                             ql_error *err)
{
    (void)err;
    out[0]->dtype = QL_I64;
    out[0]->ndim = 1;
    if (in[0]->ndim < 0) {
        out[0]->dims[0] = -1;
        return QL_OK;
    }
    int64_t s, e;
    shape_range(n, in[0]->ndim, &s, &e);
    out[0]->dims[0] = e - s;
    return QL_OK;
}

static ql_status shape_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                           ql_exec_ctx *ctx, ql_error *err)
{
    (void)ctx;
    (void)err;
    int64_t s, e;
    shape_range(n, in[0]->ndim, &s, &e);
    for (int64_t i = s; i < e; i++)
        ((int64_t *)out[0]->data)[i - s] = in[0]->dims[i];
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Identity, Dropout
 * ------------------------------------------------------------------------- */
static ql_status identity_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                                ql_error *err)
{
    (void)n;
    (void)err;
    out[0]->dtype = in[0]->dtype;
    copy_header_dims(out[0], in[0]->ndim, in[0]->dims);
    return QL_OK;
}

/* Training-mode Dropout draws its mask from NumPy's legacy MT19937
 * (np.random.seed(seed); np.random.uniform(0, 1, shape) >= ratio), as the
 * ONNX reference does, so a given seed reproduces the reference exactly and
 * runs are deterministic. */
typedef struct mt19937 {
    uint32_t key[624];
    int pos;
} mt19937;

static void mt_seed(mt19937 *m, uint32_t s)
{
    for (int i = 0; i < 624; i++) {
        m->key[i] = s;
        s = 1812433253u * (s ^ (s >> 30)) + (uint32_t)i + 1u;
    }
    m->pos = 624;
}

static uint32_t mt_next(mt19937 *m)
{
    if (m->pos == 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (m->key[i] & 0x80000000u) | (m->key[(i + 1) % 624] & 0x7fffffffu);
            m->key[i] = m->key[(i + 397) % 624] ^ (y >> 1) ^ (y & 1u ? 0x9908b0dfu : 0u);
        }
        m->pos = 0;
    }
    uint32_t y = m->key[m->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

static double mt_double(mt19937 *m)
{
    uint32_t a = mt_next(m) >> 5, b = mt_next(m) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

/* Reads training_mode (input 2, opset 12) and ratio (input 1, else the
 * attribute, default 0.5). *random = 1 when elements are dropped at random;
 * unknown data passes static inference and is checked when the node runs. */
static ql_status dropout_mode(const ql_node *n, const ql_tensor *const *in, int *random, double *ratio,
                              ql_error *err)
{
    const ql_tensor *tm = n->n_in > 2 ? in[2] : NULL, *r = n->n_in > 1 ? in[1] : NULL;
    *random = 0;
    *ratio = ql_attr_float(n, "ratio", 0.5f);
    if (!tm || !tm->data || ql_tensor_numel(tm) < 1 || ql_tensor_get_i64(tm, 0) == 0)
        return QL_OK;
    if (r && !r->data)
        return QL_OK;
    if (r && ql_tensor_numel(r) > 0)
        *ratio = (float)ql_tensor_get_f64(r, 0);
    if (!(*ratio >= 0.0 && *ratio < 1.0))
        return ql_fail(err, QL_ERR_ARG, "ratio %g is outside [0, 1)", *ratio);
    if (*ratio > 0.0 && in[0]->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "training-mode dropout of %s data",
                       ql_dtype_info(in[0]->dtype)->name);
    *random = *ratio > 0.0;
    return QL_OK;
}

static ql_status dropout_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                               ql_error *err)
{
    int random;
    double ratio;
    ql_status st = dropout_mode(n, in, &random, &ratio, err);
    if (st != QL_OK)
        return st;
    if (n->n_out > 1) {
        out[1]->dtype = QL_BOOL;
        copy_header_dims(out[1], in[0]->ndim, in[0]->dims);
    }
    return identity_infer(n, in, out, err);
}

static ql_status dropout_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                             ql_exec_ctx *ctx, ql_error *err)
{
    int random;
    double ratio;
    ql_status st = dropout_mode(n, in, &random, &ratio, err);
    if (st != QL_OK)
        return st;
    uint8_t *mask = n->n_out > 1 && n->out[1] >= 0 ? out[1]->data : NULL;
    if (!random) { /* inference (or ratio 0): identity, every element kept */
        copy_bytes(ctx, out[0]->data, in[0]->data, ql_tensor_nbytes(in[0]));
        if (mask)
            memset(mask, 1, ql_tensor_nbytes(out[1]));
        return QL_OK;
    }
    mt19937 *m = malloc(sizeof *m);
    if (!m)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    mt_seed(m, (uint32_t)ql_attr_int(n, "seed", 0));
    const float *x = in[0]->data;
    float *y = out[0]->data, scale = (float)(1.0 / (1.0 - ratio));
    int64_t total = ql_tensor_numel(in[0]);
    for (int64_t i = 0; i < total; i++) {
        int keep = mt_double(m) >= ratio;
        y[i] = keep ? x[i] * scale : 0.0f;
        if (mask)
            mask[i] = (uint8_t)keep;
    }
    free(m);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Constant: value, value_float(s), value_int(s). The ONNX loader turns most
 * Constant nodes into constant values; this covers graphs built otherwise.
 * ------------------------------------------------------------------------- */
typedef struct const_src {
    ql_dtype dtype;
    int ndim;
    int64_t dims[1];
    const void *data;    /* tensor data, or NULL for the scalar below */
    const ql_attr *attr; /* the attribute providing the value */
} const_src;

static ql_status constant_source(const ql_node *n, const_src *c, ql_error *err)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < n->n_attr; i++) {
        const ql_attr *a = &n->attr[i];
        c->attr = a;
        if (!strcmp(a->name, "value") && a->type == QL_ATTR_TENSOR && a->t)
            return QL_OK;
        if (!strcmp(a->name, "value_float") && a->type == QL_ATTR_FLOAT) {
            c->dtype = QL_F32;
            return QL_OK;
        }
        if (!strcmp(a->name, "value_int") && a->type == QL_ATTR_INT) {
            c->dtype = QL_I64;
            return QL_OK;
        }
        if (!strcmp(a->name, "value_floats") && a->type == QL_ATTR_FLOATS) {
            c->dtype = QL_F32;
            c->ndim = 1;
            c->dims[0] = a->n;
            c->data = a->floats;
            return QL_OK;
        }
        if (!strcmp(a->name, "value_ints") && a->type == QL_ATTR_INTS) {
            c->dtype = QL_I64;
            c->ndim = 1;
            c->dims[0] = a->n;
            c->data = a->ints;
            return QL_OK;
        }
        if (!strcmp(a->name, "sparse_value"))
            return ql_fail(err, QL_ERR_UNSUPPORTED, "sparse_value is not supported");
        if (!strncmp(a->name, "value_string", 12))
            return ql_fail(err, QL_ERR_UNSUPPORTED, "string constants are not supported");
    }
    return ql_fail(err, QL_ERR_ARG, "no value attribute (value, value_float(s), value_int(s))");
}

static ql_status constant_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                                ql_error *err)
{
    (void)in;
    const_src c;
    ql_status st = constant_source(n, &c, err);
    if (st != QL_OK)
        return st;
    if (c.attr->type == QL_ATTR_TENSOR) {
        out[0]->dtype = c.attr->t->dtype;
        copy_header_dims(out[0], c.attr->t->ndim, c.attr->t->dims);
    } else {
        out[0]->dtype = c.dtype;
        copy_header_dims(out[0], c.ndim, c.dims);
    }
    return QL_OK;
}

static ql_status constant_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_exec_ctx *ctx, ql_error *err)
{
    (void)in;
    (void)ctx;
    const_src c;
    ql_status st = constant_source(n, &c, err);
    if (st != QL_OK)
        return st;
    const ql_attr *a = c.attr;
    if (a->type == QL_ATTR_TENSOR)
        memcpy(out[0]->data, a->t->data, ql_tensor_nbytes(a->t));
    else if (a->type == QL_ATTR_FLOAT)
        memcpy(out[0]->data, &a->f, sizeof a->f);
    else if (a->type == QL_ATTR_INT)
        memcpy(out[0]->data, &a->i, sizeof a->i);
    else if (c.dims[0] > 0)
        memcpy(out[0]->data, c.data, ql_tensor_nbytes(out[0]));
    return QL_OK;
}

#define SHAPE_ROW(E, NAME, SINCE, INFER, RUN, IO)                                                 \
    const ql_op_def ql_op_def_##E = {                                                             \
        .name = NAME, .since_version = SINCE, .in_dtypes = QL_DT_ALL, .infer = INFER, .run_f32 = RUN, \
        IO,                                                                                       \
    };
SHAPE_ROW(RESHAPE, "Reshape", 5, reshape_infer, copy_run, QL_IO(2, 2, 1, 1))
SHAPE_ROW(FLATTEN, "Flatten", 1, flatten_infer, copy_run, QL_IO(1, 1, 1, 1))
SHAPE_ROW(SQUEEZE, "Squeeze", 1, squeeze_infer, copy_run, QL_IO(1, 2, 1, 1))
SHAPE_ROW(UNSQUEEZE, "Unsqueeze", 1, unsqueeze_infer, copy_run, QL_IO(1, 2, 1, 1))
SHAPE_ROW(SHAPE, "Shape", 1, shape_infer, shape_run, QL_IO(1, 1, 1, 1))
SHAPE_ROW(IDENTITY, "Identity", 1, identity_infer, copy_run, QL_IO(1, 1, 1, 1))
SHAPE_ROW(DROPOUT, "Dropout", 7, dropout_infer, dropout_run, QL_IO(1, 3, 1, 2))
SHAPE_ROW(CONSTANT, "Constant", 1, constant_infer, constant_run, QL_IO(0, 0, 1, 1))
