/* Pad (constant, reflect, edge, wrap). Elements are moved as bytes of the
 * dtype's size, so every dtype works; a copy gives the same bytes whatever
 * the split over threads. */
#include <limits.h>
#include <string.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------
 * Pad: pads/value attributes before opset 11; pads, constant_value inputs
 * from 11; axes input from 18; modes constant, reflect, edge, wrap (19)
 * ------------------------------------------------------------------------- */
enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP };

typedef struct pad_plan {
    int64_t begin[QL_MAX_DIMS], end[QL_MAX_DIMS];
    int mode;
} pad_plan;

static ql_status pad_plan_make(const ql_node *n, const ql_tensor *const *in, int rank, pad_plan *p,
                               int *known, ql_error *err)
{
    int64_t pads[2 * QL_MAX_DIMS], axes[QL_MAX_DIMS];
    int cnt = 0;
    *known = 1;
    memset(p, 0, sizeof *p);
    static const char *const modes[] = {"constant", "reflect", "edge", "wrap"};
    const char *mode = ql_attr_string(n, "mode", "constant");
    p->mode = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(mode, modes[i]))
            p->mode = i;
    if (p->mode < 0)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "pad mode '%s' is not supported", mode);
    if (n->n_in > 1 && in[1]) {
        if (!in[1]->data) {
            *known = 0;
            return QL_OK;
        }
        cnt = (int)ql_tensor_numel(in[1]);
        if (cnt > 2 * QL_MAX_DIMS)
            return ql_fail(err, QL_ERR_ARG, "%d pads for rank %d", cnt, rank);
        for (int k = 0; k < cnt; k++)
            pads[k] = ql_tensor_get_i64(in[1], k);
    } else {
        const int64_t *a = ql_attr_ints(n, "pads", &cnt);
        if (!a)
            return ql_fail(err, QL_ERR_ARG, "pads are required");
        if (cnt > 2 * QL_MAX_DIMS)
            return ql_fail(err, QL_ERR_ARG, "%d pads for rank %d", cnt, rank);
        memcpy(pads, a, (size_t)cnt * sizeof *pads);
    }
    int na = rank;
    if (n->n_in > 3 && in[3]) {
        if (!in[3]->data) {
            *known = 0;
            return QL_OK;
        }
        na = (int)ql_tensor_numel(in[3]);
        if (na > rank)
            return ql_fail(err, QL_ERR_ARG, "%d axes for rank %d", na, rank);
        for (int k = 0; k < na; k++) {
            int ax;
            int64_t a = ql_tensor_get_i64(in[3], k);
            if (!ql_norm_axis(a, rank, &ax))
                return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)a, rank);
            axes[k] = ax;
        }
    } else {
        for (int k = 0; k < rank; k++)
            axes[k] = k;
    }
    if (cnt != 2 * na)
        return ql_fail(err, QL_ERR_ARG, "pads has %d values for %d axes (needs %d)", cnt, na, 2 * na);
    for (int k = 0; k < na; k++) {
        p->begin[axes[k]] = pads[k];
        p->end[axes[k]] = pads[k + na];
    }
    return QL_OK;
}

static ql_status pad_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                           ql_error *err)
{
    const ql_tensor *x = in[0];
    out[0]->dtype = x->dtype;
    out[0]->ndim = x->ndim;
    if (x->ndim < 0)
        return QL_OK;
    pad_plan p;
    int known;
    ql_status st = pad_plan_make(n, in, x->ndim, &p, &known, err);
    if (st != QL_OK)
        return st;
    if (n->n_in > 2 && in[2] && in[2]->dtype != x->dtype)
        return ql_fail(err, QL_ERR_ARG, "constant_value is %s, the data %s",
                       ql_dtype_info(in[2]->dtype)->name, ql_dtype_info(x->dtype)->name);
    for (int i = 0; i < x->ndim; i++) {
        if (!known || x->dims[i] < 0) {
            out[0]->dims[i] = -1;
            continue;
        }
        out[0]->dims[i] = x->dims[i] + p.begin[i] + p.end[i];
        if (out[0]->dims[i] < 0)
            return ql_fail(err, QL_ERR_SHAPE, "pads %lld and %lld make axis %d (extent %lld) negative",
                           (long long)p.begin[i], (long long)p.end[i], i, (long long)x->dims[i]);
        if (p.mode != PAD_CONSTANT && x->dims[i] == 0 && out[0]->dims[i] > 0)
            return ql_fail(err, QL_ERR_ARG, "%s padding of the empty axis %d", ql_attr_string(n, "mode", ""),
                           i);
    }
    return QL_OK;
}

/* Maps output coordinate o to an input one; -1 means the constant value. */
static int64_t pad_src(int mode, int64_t o, int64_t begin, int64_t d)
{
    int64_t i = o - begin;
    if (i >= 0 && i < d)
        return i;
    switch (mode) {
    case PAD_CONSTANT: return -1;
    case PAD_EDGE: return i < 0 ? 0 : d - 1;
    case PAD_WRAP: i %= d; return i < 0 ? i + d : i;
    default: { /* reflect, repeating when the pad exceeds the extent (numpy) */
        if (d == 1)
            return 0;
        int64_t period = 2 * (d - 1);
        i %= period;
        if (i < 0)
            i += period;
        return i < d ? i : period - i;
    }
    }
}

typedef struct pad_job {
    const char *x;
    char *y;
    size_t es;
    int nd, mode;
    int64_t xd[QL_MAX_DIMS], yd[QL_MAX_DIMS], begin[QL_MAX_DIMS], xs[QL_MAX_DIMS];
    char cval[8];
    int cval_zero;
} pad_job;

static void fill_const(const pad_job *j, char *dst, int64_t n)
{
    if (n <= 0)
        return;
    if (j->cval_zero) {
        memset(dst, 0, (size_t)n * j->es);
        return;
    }
    for (int64_t k = 0; k < n; k++)
        memcpy(dst + (size_t)k * j->es, j->cval, j->es);
}

/* Output rows along the last axis: the source row (or the constant), then
 * the last axis as left pad, one memcpy, right pad. */
static void pad_rows(void *arg, int64_t begin, int64_t end, int tid)
{
    const pad_job *j = arg;
    (void)tid;
    int last = j->nd - 1;
    int64_t yl = j->yd[last], xl = j->xd[last], b = j->begin[last];
    int64_t lo = b < 0 ? 0 : (b > yl ? yl : b), hi = b + xl < lo ? lo : (b + xl > yl ? yl : b + xl);
    size_t es = j->es;
    for (int64_t r = begin; r < end; r++) {
        char *dst = j->y + (size_t)(r * yl) * es;
        int64_t rem = r, off = 0;
        int outside = 0;
        for (int i = last - 1; i >= 0 && !outside; i--) {
            int64_t s = pad_src(j->mode, rem % j->yd[i], j->begin[i], j->xd[i]);
            rem /= j->yd[i];
            if (s < 0)
                outside = 1;
            off += s * j->xs[i];
        }
        if (outside) {
            fill_const(j, dst, yl);
            continue;
        }
        const char *src = j->x + (size_t)off * es;
        if (hi > lo)
            memcpy(dst + (size_t)lo * es, src + (size_t)(lo - b) * es, (size_t)(hi - lo) * es);
        if (j->mode == PAD_CONSTANT) {
            fill_const(j, dst, lo);
            fill_const(j, dst + (size_t)hi * es, yl - hi);
            continue;
        }
        for (int64_t o = 0; o < lo; o++)
            memcpy(dst + (size_t)o * es, src + (size_t)pad_src(j->mode, o, b, xl) * es, es);
        for (int64_t o = hi; o < yl; o++)
            memcpy(dst + (size_t)o * es, src + (size_t)pad_src(j->mode, o, b, xl) * es, es);
    }
}

/* Stores v converted to dtype dt at dst (integers saturate). */
static void store_scalar(ql_dtype dt, double v, void *dst)
{
    if (dt != QL_F32 && dt != QL_BOOL)
        v = v != v ? 0 : (v < -9.2e18 ? -9.2e18 : (v > 9.2e18 ? 9.2e18 : v));
    switch (dt) {
    case QL_F32: { float f = (float)v; memcpy(dst, &f, 4); break; }
    case QL_U8: *(uint8_t *)dst = (uint8_t)(int64_t)v; break;
    case QL_I8: *(int8_t *)dst = (int8_t)(int64_t)v; break;
    case QL_BOOL: *(uint8_t *)dst = v != 0; break;
    case QL_I16: { int16_t i = (int16_t)(int64_t)v; memcpy(dst, &i, 2); break; }
    case QL_I32: { int32_t i = (int32_t)(int64_t)v; memcpy(dst, &i, 4); break; }
    default: { int64_t i = (int64_t)v; memcpy(dst, &i, 8); break; }
    }
}

static ql_status pad_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                         ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    ql_tensor *y = out[0];
    pad_plan p;
    int known;
    ql_status st = pad_plan_make(n, in, x->ndim, &p, &known, err);
    if (st != QL_OK)
        return st;
    pad_job j = {.x = x->data, .y = y->data, .es = esize(x), .nd = x->ndim, .mode = p.mode};
    if (n->n_in > 2 && in[2] && ql_tensor_numel(in[2]) > 0)
        memcpy(j.cval, in[2]->data, j.es);
    else
        store_scalar(x->dtype, ql_attr_float(n, "value", 0.0f), j.cval);
    j.cval_zero = 1;
    for (size_t k = 0; k < j.es; k++)
        j.cval_zero &= j.cval[k] == 0;
    int64_t total = ql_tensor_numel(y);
    if (total == 0)
        return QL_OK;
    if (x->ndim == 0) {
        memcpy(y->data, x->data, j.es);
        return QL_OK;
    }
    int64_t acc = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        j.xd[i] = x->dims[i];
        j.yd[i] = y->dims[i];
        j.begin[i] = p.begin[i];
        j.xs[i] = acc;
        acc *= x->dims[i];
    }
    int64_t yl = y->dims[x->ndim - 1];
    ql_parallel_for(ctx, total / yl, grain_for(yl * (int64_t)j.es), pad_rows, &j);
    return QL_OK;
}

#define MOVE_ROW(E, NAME, SINCE, INFER, RUN, IO)                                                  \
    const ql_op_def ql_op_def_##E = {                                                             \
        .name = NAME, .since_version = SINCE, .in_dtypes = QL_DT_ALL, .infer = INFER, .run_f32 = RUN, \
        IO,                                                                                       \
    };
MOVE_ROW(PAD, "Pad", 2, pad_infer, pad_run, QL_IO(1, 4, 1, 1))
