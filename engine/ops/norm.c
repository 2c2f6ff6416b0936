/* BatchNormalization and ReduceMean.
 * BatchNormalization runs as y = x * s[c] + b[c] with s and b folded per
 * channel, and can take the executor's fused Relu/Clip; in training mode
 * (opset 14+) the statistics are the batch's own, each channel's summed by
 * one thread in a fixed order. ReduceMean merges
 * the input into alternating kept/reduced dims and sums contiguous runs;
 * each output is summed by one thread in a fixed order, so results do not
 * depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../pool.h"
#include "kernels.h"

#define NORM_GRAIN 32768 /* elements below which one thread does it all */

/* ---------------------------------------------------------------------------
 * BatchNormalization, all opsets. Training mode is the opset 14 form
 * (training_mode=1: outputs Y, running_mean, running_var); the older
 * training forms (is_test=0 before opset 7, saved mean/var outputs of
 * opsets 6-13) are refused, as is spatial=0 (opsets 7 and 8).
 * ------------------------------------------------------------------------- */
static ql_status bn_prepare(ql_graph *g, ql_node *n, ql_error *err)
{
    /* before opset 7, is_test defaults to 0: training */
    if (g->opset < 7 && !ql_attr_int(n, "is_test", 0))
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "is_test=0 (training) is not supported (inference only)");
    return QL_OK;
}

static ql_status bn_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_error *err)
{
    int training = ql_attr_int(n, "training_mode", 0) != 0;
    if (!ql_attr_int(n, "is_test", 1))
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "is_test=0 (training) is not supported (inference only)");
    if (!ql_attr_int(n, "spatial", 1))
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "spatial=0 (per-activation statistics) is not supported");
    if (n->n_in != 5)
        return ql_fail(err, QL_ERR_ARG, "needs X, scale, B, mean and var (has %d inputs)", n->n_in);
    if (training && n->n_out > 3)
        return ql_fail(err, QL_ERR_ARG, "training mode has at most 3 outputs (has %d)", n->n_out);
    for (int j = 1; j < n->n_out && !training; j++)
        if (n->out[j] >= 0)
            return ql_fail(err, QL_ERR_UNSUPPORTED,
                           "statistics outputs need training_mode=1 (opset 14 form)");
    static const char *const names[5] = {"X", "scale", "B", "mean", "var"};
    for (int j = 0; j < 5; j++) {
        if (!in[j])
            return ql_fail(err, QL_ERR_ARG, "input %s is missing", names[j]);
        if (in[j]->dtype != QL_F32)
            return ql_fail(err, QL_ERR_UNSUPPORTED, "input %s is %s (f32 only)", names[j],
                           ql_dtype_info(in[j]->dtype)->name);
    }
    const ql_tensor *x = in[0];
    if (x->ndim >= 0 && x->ndim < 2)
        return ql_fail(err, QL_ERR_SHAPE, "X needs rank 2 or more, has rank %d", x->ndim);
    int64_t c = x->ndim >= 2 ? x->dims[1] : -1;
    for (int j = 1; j < 5; j++) {
        const ql_tensor *p = in[j];
        if (p->ndim < 0 || c < 0)
            continue;
        char s[96];
        int64_t cnt = 1;
        for (int i = 0; i < p->ndim && cnt >= 0; i++)
            cnt = p->dims[i] < 0 ? -1 : cnt * p->dims[i];
        if (cnt >= 0 && cnt != c)
            return ql_fail(err, QL_ERR_SHAPE,
                           "%s has shape %s; expected [%lld] (one value per channel)", names[j],
                           ql_shape_str(p->ndim, p->dims, s, sizeof s), (long long)c);
    }
    out[0]->dtype = QL_F32;
    out[0]->ndim = x->ndim;
    if (x->ndim > 0)
        memcpy(out[0]->dims, x->dims, (size_t)x->ndim * sizeof *x->dims);
    /* running mean and var, one per channel (sized even when absent: the
     * executor allocates every output slot) */
    for (int j = 1; j < n->n_out; j++) {
        out[j]->dtype = QL_F32;
        out[j]->ndim = 1;
        out[j]->dims[0] = c;
    }
    return QL_OK;
}

typedef struct bn_job {
    const float *x, *s, *b; /* s, b: folded scale and shift per channel */
    float *y;
    int64_t C, size; /* channels, elements per (n, c) plane */
    float lo, hi;    /* fused clamp; (-inf, inf) when none */
} bn_job;

/* over (n, c) planes */
static void bn_planes(void *arg, int64_t begin, int64_t end, int tid)
{
    const bn_job *j = arg;
    (void)tid;
    const float lo = j->lo, hi = j->hi;
    for (int64_t p = begin; p < end; p++) {
        const float s = j->s[p % j->C], b = j->b[p % j->C];
        const float *x = j->x + p * j->size;
        float *y = j->y + p * j->size;
        for (int64_t i = 0; i < j->size; i++) {
            float v = x[i] * s + b;
            v = v < lo ? lo : v;
            y[i] = v > hi ? hi : v;
        }
    }
}

/* over rows of [N, C] (planes of one element) */
static void bn_rows(void *arg, int64_t begin, int64_t end, int tid)
{
    const bn_job *j = arg;
    (void)tid;
    const float lo = j->lo, hi = j->hi;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * j->C;
        float *y = j->y + r * j->C;
        for (int64_t c = 0; c < j->C; c++) {
            float v = x[c] * j->s[c] + j->b[c];
            v = v < lo ? lo : v;
            y[c] = v > hi ? hi : v;
        }
    }
}

/* Batch statistics of each channel over N and the spatial dims: the mean,
 * then the population variance from the deviations (two passes, as the
 * ONNX reference's x.var() does), both accumulated in double. */
typedef struct bn_stats_job {
    const float *x;
    double *mean, *var;
    int64_t N, C, size;
} bn_stats_job;

static void bn_stats(void *arg, int64_t begin, int64_t end, int tid)
{
    const bn_stats_job *j = arg;
    (void)tid;
    double cnt = (double)(j->N * j->size);
    for (int64_t c = begin; c < end; c++) {
        double s = 0.0, q = 0.0;
        for (int64_t b = 0; b < j->N; b++) {
            const float *x = j->x + (b * j->C + c) * j->size;
            for (int64_t i = 0; i < j->size; i++)
                s += x[i];
        }
        double m = s / cnt;
        for (int64_t b = 0; b < j->N; b++) {
            const float *x = j->x + (b * j->C + c) * j->size;
            for (int64_t i = 0; i < j->size; i++)
                q += (x[i] - m) * (x[i] - m);
        }
        j->mean[c] = m;
        j->var[c] = q / cnt;
    }
}

static ql_status bn_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                        ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    for (int k = 0; k < 5; k++)
        if (in[k]->dtype != QL_F32)
            return ql_fail(err, QL_ERR_UNSUPPORTED, "needs f32 tensors");
    int64_t C = x->dims[1], planes = x->dims[0] * C;
    for (int k = 1; k < 5; k++)
        if (ql_tensor_numel(in[k]) != C)
            return ql_fail(err, QL_ERR_SHAPE, "input %d has %lld values for %lld channels", k,
                           (long long)ql_tensor_numel(in[k]), (long long)C);
    int training = ql_attr_int(n, "training_mode", 0) != 0;
    if (planes == 0 || ql_tensor_numel(x) == 0) {
        /* statistics of an empty batch are NaN (as numpy's mean of nothing) */
        for (int k = 1; training && k < 3 && k < n->n_out; k++)
            for (int64_t c = 0; c < C; c++)
                ((float *)out[k]->data)[c] = NAN;
        return QL_OK;
    }
    float *sb = malloc((size_t)(2 * C) * sizeof *sb);
    double *st = training ? malloc((size_t)(2 * C) * sizeof *st) : NULL;
    if (!sb || (training && !st)) {
        free(sb);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    const float *scale = in[1]->data, *bias = in[2]->data, *mean = in[3]->data, *var = in[4]->data;
    double eps = ql_attr_float(n, "epsilon", 1e-5f);
    int64_t size = ql_tensor_numel(x) / planes;
    if (training) {
        bn_stats_job sj = {.x = x->data, .mean = st, .var = st + C, .N = x->dims[0], .C = C,
                           .size = size};
        ql_parallel_for(ctx, C, NORM_GRAIN / (x->dims[0] * size) + 1, bn_stats, &sj);
        /* running statistics: input * momentum + batch * (1 - momentum) */
        double mom = ql_attr_float(n, "momentum", 0.9f);
        for (int k = 1; k < 3 && k < n->n_out; k++) {
            float *r = out[k]->data;
            const float *prev = k == 1 ? mean : var;
            for (int64_t c = 0; c < C; c++)
                r[c] = (float)(prev[c] * mom + st[(k - 1) * C + c] * (1.0 - mom));
        }
    }
    for (int64_t c = 0; c < C; c++) {
        /* folded in double: y = (x - mean) / sqrt(var + eps) * scale + B */
        double m = training ? st[c] : mean[c], v = training ? st[C + c] : var[c];
        double s = scale[c] / sqrt(v + eps);
        sb[c] = (float)s;
        sb[C + c] = (float)(bias[c] - m * s);
    }
    free(st);
    bn_job j = {.x = x->data, .s = sb, .b = sb + C, .y = out[0]->data, .C = C,
                .size = size, .lo = -INFINITY, .hi = INFINITY};
    if (ctx && ctx->post_clamp) {
        j.lo = ctx->post_lo;
        j.hi = ctx->post_hi;
    }
    if (j.size == 1)
        ql_parallel_for(ctx, x->dims[0], NORM_GRAIN / C + 1, bn_rows, &j);
    else
        ql_parallel_for(ctx, planes, NORM_GRAIN / j.size + 1, bn_planes, &j);
    free(sb);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * ReduceMean: axes attribute before opset 18, optional input from 18
 * (empty or absent means all axes, or none with noop_with_empty_axes).
 * ------------------------------------------------------------------------- */
static ql_status reduce_axes(const ql_node *n, const ql_tensor *const *in, int rank, int *mask,
                             int *all_known, ql_error *err)
{
    int cnt = 0;
    const int64_t *ax = ql_attr_ints(n, "axes", &cnt);
    const ql_tensor *axt = n->n_in > 1 ? in[1] : NULL;
    memset(mask, 0, sizeof(int) * QL_MAX_DIMS);
    *all_known = 1;
    if (axt) {
        if (!axt->data) {
            *all_known = 0;
            return QL_OK;
        }
        if (axt->dtype != QL_I64 && axt->dtype != QL_I32)
            return ql_fail(err, QL_ERR_ARG, "axes must be an integer tensor, is %s",
                           ql_dtype_info(axt->dtype)->name);
        cnt = (int)ql_tensor_numel(axt);
        ax = NULL;
    }
    if (cnt == 0) {
        if (ql_attr_int(n, "noop_with_empty_axes", 0))
            return QL_OK;
        for (int i = 0; i < rank; i++)
            mask[i] = 1;
        return QL_OK;
    }
    for (int k = 0; k < cnt; k++) {
        int64_t a = ax ? ax[k] : ql_tensor_get_i64(axt, k);
        int norm;
        if (!ql_norm_axis(a, rank, &norm))
            return ql_fail(err, QL_ERR_ARG, "axis %lld is out of range for rank %d", (long long)a,
                           rank);
        if (mask[norm])
            return ql_fail(err, QL_ERR_ARG, "axis %lld is repeated", (long long)a);
        mask[norm] = 1;
    }
    return QL_OK;
}

static ql_status reduce_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    const ql_tensor *x = in[0];
    out[0]->dtype = x->dtype;
    if (x->ndim < 0) {
        out[0]->ndim = -1;
        return QL_OK;
    }
    int mask[QL_MAX_DIMS], known;
    ql_status st = reduce_axes(n, in, x->ndim, mask, &known, err);
    if (st != QL_OK)
        return st;
    int keep = ql_attr_int(n, "keepdims", 1) != 0;
    if (!known) {
        out[0]->ndim = keep ? x->ndim : -1;
        for (int i = 0; keep && i < x->ndim; i++)
            out[0]->dims[i] = -1;
        return QL_OK;
    }
    int k = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (!mask[i])
            out[0]->dims[k++] = x->dims[i];
        else if (keep)
            out[0]->dims[k++] = 1;
    }
    out[0]->ndim = k;
    return QL_OK;
}

/* The input as kept dims kd (outer to inner, x strides ks) around a block
 * of reduced dims rd (strides rs) whose innermost run of `run` elements
 * is contiguous (case "runs"), or with the innermost dim kept, `run`
 * outputs wide (case "cols"). */
typedef struct reduce_job {
    const float *x;
    float *y;
    int nk, nr;
    int64_t kd[QL_MAX_DIMS], ks[QL_MAX_DIMS], rd[QL_MAX_DIMS], rs[QL_MAX_DIMS];
    int64_t run, nruns, nblk; /* run length, runs per output, column blocks */
    double count;
} reduce_job;

#define RM_COLS 512 /* outputs per work item in the "cols" case */

static int64_t kept_offset(const reduce_job *j, int64_t q)
{
    int64_t off = 0;
    for (int i = j->nk - 1; i >= 0; i--) {
        off += q % j->kd[i] * j->ks[i];
        q /= j->kd[i];
    }
    return off;
}

/* Steps the reduced-dims odometer idx, updating the offset *off. */
static void reduce_step(const reduce_job *j, int64_t *idx, int64_t *off)
{
    for (int i = j->nr - 1; i >= 0; i--) {
        *off += j->rs[i];
        if (++idx[i] < j->rd[i])
            return;
        *off -= idx[i] * j->rs[i];
        idx[i] = 0;
    }
}

/* One output per item: sums of contiguous runs, in eight fixed lanes (so
 * the compiler may vectorise) combined in a fixed order. */
static void reduce_runs(void *arg, int64_t begin, int64_t end, int tid)
{
    const reduce_job *j = arg;
    (void)tid;
    for (int64_t q = begin; q < end; q++) {
        const float *base = j->x + kept_offset(j, q);
        double p[8] = {0}, tail = 0.0;
        int64_t idx[QL_MAX_DIMS] = {0}, off = 0;
        for (int64_t t = 0; t < j->nruns; t++) {
            const float *x = base + off;
            int64_t i = 0;
            for (; i + 8 <= j->run; i += 8)
                for (int l = 0; l < 8; l++)
                    p[l] += x[i + l];
            for (; i < j->run; i++)
                tail += x[i];
            reduce_step(j, idx, &off);
        }
        double s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])) + tail;
        j->y[q] = (float)(s / j->count);
    }
}

/* A block of up to RM_COLS neighbouring outputs per item, accumulated
 * across the reduced dims. */
static void reduce_cols(void *arg, int64_t begin, int64_t end, int tid)
{
    const reduce_job *j = arg;
    (void)tid;
    double acc[RM_COLS];
    for (int64_t it = begin; it < end; it++) {
        int64_t q = it / j->nblk, c0 = it % j->nblk * RM_COLS;
        int64_t w = j->run - c0 < RM_COLS ? j->run - c0 : RM_COLS;
        const float *base = j->x + kept_offset(j, q) + c0;
        int64_t idx[QL_MAX_DIMS] = {0}, off = 0;
        for (int64_t c = 0; c < w; c++)
            acc[c] = 0.0;
        for (int64_t t = 0; t < j->nruns; t++) {
            const float *x = base + off;
            for (int64_t c = 0; c < w; c++)
                acc[c] += x[c];
            reduce_step(j, idx, &off);
        }
        float *y = j->y + q * j->run + c0;
        for (int64_t c = 0; c < w; c++)
            y[c] = (float)(acc[c] / j->count);
    }
}

static ql_status reduce_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    if (x->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "needs f32 input, got %s",
                       ql_dtype_info(x->dtype)->name);
    int mask[QL_MAX_DIMS], known;
    ql_status st = reduce_axes(n, in, x->ndim, mask, &known, err);
    if (st != QL_OK)
        return st;
    int64_t outn = ql_tensor_numel(out[0]), total = ql_tensor_numel(x);
    float *y = out[0]->data;
    if (outn == 0)
        return QL_OK;
    if (total == 0) { /* the mean of nothing */
        for (int64_t i = 0; i < outn; i++)
            y[i] = NAN;
        return QL_OK;
    }
    /* drop extent-1 dims, merge neighbours of the same kind (outer first) */
    int64_t d[QL_MAX_DIMS];
    int red[QL_MAX_DIMS], m = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (x->dims[i] == 1)
            continue;
        if (m > 0 && red[m - 1] == mask[i]) {
            d[m - 1] *= x->dims[i];
        } else {
            d[m] = x->dims[i];
            red[m++] = mask[i];
        }
    }
    if (m == 0 || (m == 1 && !red[0])) { /* nothing reduced */
        memcpy(y, x->data, (size_t)total * sizeof *y);
        return QL_OK;
    }
    reduce_job j = {.x = x->data, .y = y, .count = (double)(total / outn)};
    int64_t str = 1, strides[QL_MAX_DIMS];
    for (int i = m - 1; i >= 0; i--) {
        strides[i] = str;
        str *= d[i];
    }
    int last = m - 1, runs = red[last];
    j.run = d[last];
    j.nruns = 1;
    for (int i = 0; i < last; i++) {
        if (red[i]) {
            j.rd[j.nr] = d[i];
            j.rs[j.nr++] = strides[i];
            j.nruns *= d[i];
        } else {
            j.kd[j.nk] = d[i];
            j.ks[j.nk++] = strides[i];
        }
    }
    if (runs) {
        ql_parallel_for(ctx, outn, NORM_GRAIN / (j.run * j.nruns) + 1, reduce_runs, &j);
    } else {
        j.nblk = (j.run + RM_COLS - 1) / RM_COLS;
        int64_t per = j.nruns * (j.run < RM_COLS ? j.run : RM_COLS);
        ql_parallel_for(ctx, outn / j.run * j.nblk, NORM_GRAIN / per + 1, reduce_cols, &j);
    }
    return QL_OK;
}

const ql_op_def ql_op_def_BATCHNORM = {
    .name = "BatchNormalization", .since_version = 1, .infer = bn_infer, .prepare = bn_prepare,
    .run_f32 = bn_run, .fuses_clamp = true,
    QL_IO(5, 5, 1, 5), /* outputs: Y, then statistics in training mode */
};
const ql_op_def ql_op_def_REDUCEMEAN = {
    .name = "ReduceMean", .since_version = 1, .infer = reduce_infer, .run_f32 = reduce_run,
    QL_IO(1, 2, 1, 1), /* axes input from opset 18 */
};
