/* Gather. Elements are moved as bytes of the dtype's size, so every dtype
 * works; a copy gives the same bytes whatever the split over threads. */
#include <limits.h>
#include <string.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------
 * Gather (int32/int64 indices, negative ones count from the end)
 * ------------------------------------------------------------------------- */
static ql_status gather_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    const ql_tensor *x = in[0], *idx = n->n_in > 1 ? in[1] : NULL;
    if (!idx)
        return ql_fail(err, QL_ERR_ARG, "needs indices");
    if (idx->dtype != QL_I64 && idx->dtype != QL_I32)
        return ql_fail(err, QL_ERR_ARG, "indices must be int32 or int64, not %s",
                       ql_dtype_info(idx->dtype)->name);
    out[0]->dtype = x->dtype;
    if (x->ndim < 0 || idx->ndim < 0) {
        out[0]->ndim = -1;
        return QL_OK;
    }
    int64_t axis = ql_attr_int(n, "axis", 0);
    int ax;
    if (!ql_norm_axis(axis, x->ndim, &ax))
        return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)axis, x->ndim);
    int r = x->ndim - 1 + idx->ndim;
    if (r > QL_MAX_DIMS)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "result has more than %d dimensions", QL_MAX_DIMS);
    int k = 0;
    for (int i = 0; i < ax; i++)
        out[0]->dims[k++] = x->dims[i];
    for (int i = 0; i < idx->ndim; i++)
        out[0]->dims[k++] = idx->dims[i];
    for (int i = ax + 1; i < x->ndim; i++)
        out[0]->dims[k++] = x->dims[i];
    out[0]->ndim = r;
    return QL_OK;
}

typedef struct gather_job {
    const char *x;
    char *y;
    const ql_tensor *idx;
    int64_t ni, d;
    size_t chunk;
} gather_job;

static void gather_task(void *arg, int64_t begin, int64_t end, int tid)
{
    const gather_job *j = arg;
    (void)tid;
    for (int64_t e = begin; e < end; e++) {
        int64_t o = e / j->ni, q = ql_tensor_get_i64(j->idx, e % j->ni);
        if (q < 0)
            q += j->d;
        memcpy(j->y + (size_t)e * j->chunk, j->x + (size_t)(o * j->d + q) * j->chunk, j->chunk);
    }
}

static ql_status gather_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0], *idx = in[1];
    int ax;
    ql_norm_axis(ql_attr_int(n, "axis", 0), x->ndim, &ax);
    int64_t outer, inner;
    outer_inner(x, ax, &outer, &inner);
    gather_job j = {.x = x->data, .y = out[0]->data, .idx = idx, .ni = ql_tensor_numel(idx),
                    .d = x->dims[ax], .chunk = (size_t)inner * esize(x)};
    for (int64_t k = 0; k < j.ni; k++) {
        int64_t q = ql_tensor_get_i64(idx, k);
        if (q < -j.d || q >= j.d)
            return ql_fail(err, QL_ERR_DATA, "index %lld (element %lld) out of range [%lld, %lld) on axis %d",
                           (long long)q, (long long)k, (long long)-j.d, (long long)j.d, ax);
    }
    if (j.chunk == 0)
        return QL_OK;
    ql_parallel_for(ctx, outer * j.ni, grain_for((int64_t)j.chunk), gather_task, &j);
    return QL_OK;
}

#define MOVE_ROW(E, NAME, SINCE, INFER, RUN, IO)                                                  \
    const ql_op_def ql_op_def_##E = {                                                             \
        .name = NAME, .since_version = SINCE, .in_dtypes = QL_DT_ALL, .infer = INFER, .run_f32 = RUN, \
        IO,                                                                                       \
    };
MOVE_ROW(GATHER, "Gather", 1, gather_infer, gather_run, QL_IO(2, 2, 1, 1))
