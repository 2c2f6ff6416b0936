/* Data movement: Concat, Split, Slice, Transpose (Pad in pad.c, Gather in
 * gather.c). Elements are moved as bytes of the dtype's size, so every
 * dtype works. Contiguous runs
 * are copied with memcpy and large copies are split across the context's
 * threads; a copy gives the same bytes whatever the split. */
#include <limits.h>
#include <string.h>

#include "kernels.h"



/* Copies n elements of size es from src (element stride s) to dst (dense). */
static void gather_run_elems(char *dst, const char *src, int64_t s, int64_t n, size_t es)
{
    switch (es) {
    case 1:
        for (int64_t k = 0; k < n; k++)
            dst[k] = src[k * s];
        break;
    case 2:
        for (int64_t k = 0; k < n; k++)
            memcpy(dst + 2 * k, src + 2 * k * s, 2);
        break;
    case 4: {
        uint32_t *d = (uint32_t *)dst;
        for (int64_t k = 0; k < n; k++)
            memcpy(d + k, src + 4 * k * s, 4);
        break;
    }
    case 8:
        for (int64_t k = 0; k < n; k++)
            memcpy(dst + 8 * k, src + 8 * k * s, 8);
        break;
    default:
        for (int64_t k = 0; k < n; k++)
            memcpy(dst + (size_t)k * es, src + (int64_t)es * k * s, es);
    }
}

/* ---------------------------------------------------------------------------
 * Segmented copies (Concat, Split): each row of the big tensor is the
 * concatenation of one row of every part. Work is split by bytes of the big
 * tensor, so a single huge part (batch 1, channel concat) still uses every
 * thread.
 * ------------------------------------------------------------------------- */
#define MAX_PARTS 64

typedef struct seg_job {
    char *big;                   /* concat output / split input */
    char *part[MAX_PARTS];       /* concat inputs / split outputs */
    size_t row[MAX_PARTS];       /* bytes of one row of each part */
    size_t off[MAX_PARTS + 1];   /* byte offset of each part in a big row */
    int n;
    int scatter;                 /* 1: split (big -> parts), 0: concat */
    int64_t total;               /* bytes of big */
} seg_job;

static void seg_task(void *arg, int64_t begin, int64_t end, int tid)
{
    const seg_job *j = arg;
    (void)tid;
    int64_t b = begin * GRAIN_BYTES, stop = end * GRAIN_BYTES;
    if (stop > j->total)
        stop = j->total;
    size_t yrow = j->off[j->n];
    int64_t o = b / (int64_t)yrow;
    size_t p = (size_t)(b % (int64_t)yrow);
    int k = 0;
    while (p >= j->off[k + 1])
        k++;
    while (b < stop) {
        size_t take = j->off[k + 1] - p;
        if ((int64_t)take > stop - b)
            take = (size_t)(stop - b);
        char *pp = j->part[k] + (size_t)o * j->row[k] + (p - j->off[k]);
        if (j->scatter)
            memcpy(pp, j->big + b, take);
        else
            memcpy(j->big + b, pp, take);
        b += (int64_t)take;
        p += take;
        while (k < j->n && p >= j->off[k + 1])
            k++;
        if (k == j->n) {
            k = 0;
            p = 0;
            o++;
            while (k < j->n && j->off[k + 1] == 0)
                k++;
        }
    }
}

static void seg_copy(ql_exec_ctx *ctx, seg_job *j)
{
    if (j->total <= 0 || j->off[j->n] == 0)
        return;
    ql_parallel_for(ctx, (j->total + GRAIN_BYTES - 1) / GRAIN_BYTES, 8, seg_task, j);
}

/* ---------------------------------------------------------------------------
 * Concat
 * ------------------------------------------------------------------------- */
static ql_status concat_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    int rank = -1;
    if (n->n_in < 1 || !in[0])
        return ql_fail(err, QL_ERR_ARG, "needs at least one input");
    if (n->n_in > MAX_PARTS)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "more than %d inputs", MAX_PARTS);
    for (int j = 0; j < n->n_in; j++)
        if (in[j] && in[j]->ndim >= 0)
            rank = in[j]->ndim;
    out[0]->dtype = in[0]->dtype;
    out[0]->ndim = rank;
    if (rank < 0)
        return QL_OK;
    int64_t axis = ql_attr_int(n, "axis", 0);
    int ax;
    if (!ql_norm_axis(axis, rank, &ax))
        return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)axis, rank);
    for (int i = 0; i < rank; i++)
        out[0]->dims[i] = i == ax ? 0 : -1;
    for (int j = 0; j < n->n_in; j++) {
        const ql_tensor *t = in[j];
        if (!t)
            return ql_fail(err, QL_ERR_ARG, "input %d is missing", j);
        if (t->dtype != in[0]->dtype)
            return ql_fail(err, QL_ERR_ARG, "input %d is %s, input 0 is %s", j,
                           ql_dtype_info(t->dtype)->name, ql_dtype_info(in[0]->dtype)->name);
        if (t->ndim < 0) {
            out[0]->dims[ax] = -1;
            continue;
        }
        if (t->ndim != rank)
            return ql_fail(err, QL_ERR_SHAPE, "input %d has rank %d, not %d", j, t->ndim, rank);
        for (int i = 0; i < rank; i++) {
            if (i == ax) {
                out[0]->dims[ax] =
                    out[0]->dims[ax] < 0 || t->dims[ax] < 0 ? -1 : out[0]->dims[ax] + t->dims[ax];
                continue;
            }
            if (t->dims[i] < 0)
                continue;
            if (out[0]->dims[i] >= 0 && out[0]->dims[i] != t->dims[i])
                return ql_fail(err, QL_ERR_SHAPE, "input %d has extent %lld on axis %d, others %lld", j,
                               (long long)t->dims[i], i, (long long)out[0]->dims[i]);
            out[0]->dims[i] = t->dims[i];
        }
    }
    return QL_OK;
}

static ql_status concat_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    (void)err;
    ql_tensor *y = out[0];
    int ax;
    ql_norm_axis(ql_attr_int(n, "axis", 0), y->ndim, &ax);
    size_t es = esize(y);
    int64_t outer, inner;
    outer_inner(y, ax, &outer, &inner);
    seg_job j = {.big = y->data, .n = n->n_in, .scatter = 0, .total = (int64_t)ql_tensor_nbytes(y)};
    for (int k = 0; k < n->n_in; k++) {
        j.part[k] = in[k]->data;
        j.row[k] = (size_t)(in[k]->dims[ax] * inner) * es;
        j.off[k + 1] = j.off[k] + j.row[k];
    }
    seg_copy(ctx, &j);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Split: `split` attribute before opset 13, input from 13, num_outputs from
 * 18 (uneven: the last chunk is smaller)
 * ------------------------------------------------------------------------- */
static ql_status split_sizes(const ql_node *n, const ql_tensor *const *in, int64_t len, int64_t *sizes,
                             int *known, ql_error *err)
{
    int cnt = 0;
    const int64_t *sp = ql_attr_ints(n, "split", &cnt);
    const ql_tensor *st = n->n_in > 1 ? in[1] : NULL;
    *known = 1;
    if (st) {
        if (!st->data) {
            *known = 0;
            return QL_OK;
        }
        cnt = (int)ql_tensor_numel(st);
        if (cnt != n->n_out)
            return ql_fail(err, QL_ERR_ARG, "split has %d sizes for %d outputs", cnt, n->n_out);
        for (int k = 0; k < cnt; k++)
            sizes[k] = ql_tensor_get_i64(st, k);
    } else if (sp) {
        if (cnt != n->n_out)
            return ql_fail(err, QL_ERR_ARG, "split has %d sizes for %d outputs", cnt, n->n_out);
        memcpy(sizes, sp, (size_t)cnt * sizeof *sizes);
    } else {
        int64_t parts = ql_attr_int(n, "num_outputs", n->n_out);
        if (parts != n->n_out || parts < 1)
            return ql_fail(err, QL_ERR_ARG, "num_outputs %lld does not match %d outputs", (long long)parts,
                           n->n_out);
        if (len < 0) {
            *known = 0;
            return QL_OK;
        }
        int64_t chunk = (len + parts - 1) / parts;
        for (int k = 0; k < n->n_out; k++) {
            int64_t rest = len - k * chunk;
            sizes[k] = rest < 0 ? 0 : (rest < chunk ? rest : chunk);
        }
        return QL_OK;
    }
    int64_t sum = 0;
    for (int k = 0; k < n->n_out; k++) {
        if (sizes[k] < 0)
            return ql_fail(err, QL_ERR_ARG, "split size %lld is negative", (long long)sizes[k]);
        sum += sizes[k];
    }
    if (len >= 0 && sum != len)
        return ql_fail(err, QL_ERR_SHAPE, "split sizes add up to %lld, the axis has %lld", (long long)sum,
                       (long long)len);
    return QL_OK;
}

static ql_status split_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                             ql_error *err)
{
    const ql_tensor *x = in[0];
    if (n->n_out > MAX_PARTS || n->n_out < 1)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%d outputs (1 to %d supported)", n->n_out, MAX_PARTS);
    for (int k = 0; k < n->n_out; k++) {
        out[k]->dtype = x->dtype;
        out[k]->ndim = x->ndim;
    }
    if (x->ndim < 0)
        return QL_OK;
    int64_t axis = ql_attr_int(n, "axis", 0);
    int ax;
    if (!ql_norm_axis(axis, x->ndim, &ax))
        return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)axis, x->ndim);
    int64_t sizes[MAX_PARTS];
    int known;
    ql_status st = split_sizes(n, in, x->dims[ax], sizes, &known, err);
    if (st != QL_OK)
        return st;
    for (int k = 0; k < n->n_out; k++) {
        memcpy(out[k]->dims, x->dims, (size_t)x->ndim * sizeof *x->dims);
        out[k]->dims[ax] = known ? sizes[k] : -1;
    }
    return QL_OK;
}

static ql_status split_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                           ql_exec_ctx *ctx, ql_error *err)
{
    (void)err;
    const ql_tensor *x = in[0];
    int ax;
    ql_norm_axis(ql_attr_int(n, "axis", 0), x->ndim, &ax);
    size_t es = esize(x);
    int64_t outer, inner;
    outer_inner(x, ax, &outer, &inner);
    seg_job j = {.big = x->data, .n = n->n_out, .scatter = 1, .total = (int64_t)ql_tensor_nbytes(x)};
    for (int k = 0; k < n->n_out; k++) {
        j.part[k] = out[k]->data;
        j.row[k] = (size_t)(out[k]->dims[ax] * inner) * es;
        j.off[k + 1] = j.off[k] + j.row[k];
    }
    seg_copy(ctx, &j);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Strided copies (Slice, Transpose): y[i0..ik] = x[base + sum i_a * xstr_a].
 * Axes of extent 1 are dropped and axes that are contiguous in x merged;
 * then rows along y's last axis are copied (memcpy when x is contiguous
 * there), or, when x's contiguous axis is another y axis, square tiles are
 * transposed so both reads and writes stay within a few cache lines.
 * ------------------------------------------------------------------------- */
#define TILE 32

typedef struct strided_job {
    const char *x;
    char *y;
    size_t es;
    int nd;
    int64_t dims[QL_MAX_DIMS], xstr[QL_MAX_DIMS], ystr[QL_MAX_DIMS];
    int64_t base;
    int q;             /* tile path: y axis with x stride 1 (else -1) */
    int64_t n_outer;   /* tile path: product of the other axes but the last */
    int64_t ntq, ntl;  /* tile path: tiles along q and along the last axis */
} strided_job;

/* Drops extent-1 axes and merges axes contiguous in x. */
static void strided_simplify(strided_job *j)
{
    int k = 0;
    for (int i = 0; i < j->nd; i++) {
        if (j->dims[i] == 1)
            continue;
        if (k > 0 && j->xstr[k - 1] == j->xstr[i] * j->dims[i]) {
            j->dims[k - 1] *= j->dims[i];
            j->xstr[k - 1] = j->xstr[i];
            continue;
        }
        j->dims[k] = j->dims[i];
        j->xstr[k] = j->xstr[i];
        k++;
    }
    if (k == 0) {
        j->dims[0] = 1;
        j->xstr[0] = 1;
        k = 1;
    }
    j->nd = k;
    int64_t acc = 1;
    for (int i = k - 1; i >= 0; i--) {
        j->ystr[i] = acc;
        acc *= j->dims[i];
    }
}

static void strided_rows(void *arg, int64_t begin, int64_t end, int tid)
{
    const strided_job *j = arg;
    (void)tid;
    int last = j->nd - 1;
    int64_t len = j->dims[last], s = j->xstr[last], idx[QL_MAX_DIMS], off = j->base, rem = begin;
    for (int i = last - 1; i >= 0; i--) {
        idx[i] = rem % j->dims[i];
        rem /= j->dims[i];
        off += idx[i] * j->xstr[i];
    }
    for (int64_t r = begin; r < end; r++) {
        char *dst = j->y + (size_t)(r * len) * j->es;
        const char *src = j->x + off * (int64_t)j->es;
        if (s == 1)
            memcpy(dst, src, (size_t)len * j->es);
        else
            gather_run_elems(dst, src, s, len, j->es);
        for (int i = last - 1; i >= 0; i--) { /* odometer step */
            off += j->xstr[i];
            if (++idx[i] < j->dims[i])
                break;
            off -= idx[i] * j->xstr[i];
            idx[i] = 0;
        }
    }
}

/* One tile: u along y axis q (x stride 1), v along y's last axis. */
#define TILE_LOOP(T)                                                                     \
    for (int64_t u = u0; u < u1; u++) {                                                  \
        T *d = (T *)(void *)(j->y + (size_t)(yoff + u * yq + v0) * sizeof(T));           \
        const char *s = j->x + (xoff + u + v0 * sl) * (int64_t)sizeof(T);                \
        for (int64_t v = 0; v < v1 - v0; v++)                                            \
            memcpy(d + v, s + v * sl * (int64_t)sizeof(T), sizeof(T));                   \
    }

static void strided_tiles(void *arg, int64_t begin, int64_t end, int tid)
{
    const strided_job *j = arg;
    (void)tid;
    int last = j->nd - 1;
    int64_t yq = j->ystr[j->q], sl = j->xstr[last];
    for (int64_t item = begin; item < end; item++) {
        int64_t tl = item % j->ntl, rest = item / j->ntl;
        int64_t tq = rest % j->ntq, o = rest / j->ntq;
        int64_t xoff = j->base, yoff = 0;
        for (int i = last - 1; i >= 0; i--) {
            if (i == j->q)
                continue;
            int64_t c = o % j->dims[i];
            o /= j->dims[i];
            xoff += c * j->xstr[i];
            yoff += c * j->ystr[i];
        }
        int64_t u0 = tq * TILE, u1 = u0 + TILE < j->dims[j->q] ? u0 + TILE : j->dims[j->q];
        int64_t v0 = tl * TILE, v1 = v0 + TILE < j->dims[last] ? v0 + TILE : j->dims[last];
        switch (j->es) {
        case 1: TILE_LOOP(uint8_t) break;
        case 2: TILE_LOOP(uint16_t) break;
        case 4: TILE_LOOP(uint32_t) break;
        default: TILE_LOOP(uint64_t) break;
        }
    }
}

static void strided_copy(ql_exec_ctx *ctx, strided_job *j)
{
    strided_simplify(j);
    int last = j->nd - 1;
    int64_t total = j->ystr[0] * j->dims[0];
    if (total == 0)
        return;
    j->q = -1;
    if (j->xstr[last] != 1 && j->es <= 8 && (j->es & (j->es - 1)) == 0 && j->dims[last] >= 4)
        for (int i = 0; i < last; i++)
            if (j->xstr[i] == 1 && j->dims[i] >= 4)
                j->q = i;
    if (j->q >= 0) {
        j->ntq = (j->dims[j->q] + TILE - 1) / TILE;
        j->ntl = (j->dims[last] + TILE - 1) / TILE;
        j->n_outer = total / (j->dims[j->q] * j->dims[last]);
        int64_t items = j->n_outer * j->ntq * j->ntl;
        ql_parallel_for(ctx, items, grain_for((int64_t)(TILE * TILE * j->es)), strided_tiles, j);
        return;
    }
    int64_t rows = total / j->dims[last];
    ql_parallel_for(ctx, rows, grain_for(j->dims[last] * (int64_t)j->es), strided_rows, j);
}

/* ---------------------------------------------------------------------------
 * Slice: attributes before opset 10, inputs (starts, ends, axes, steps) from 10
 * ------------------------------------------------------------------------- */
typedef struct slice_plan {
    int64_t start[QL_MAX_DIMS], step[QL_MAX_DIMS], len[QL_MAX_DIMS];
} slice_plan;

/* Reads input idx (or attribute `attr`) into v; returns the count, -1 when
 * absent; *known = 0 when it is an input whose data is unknown. */
static int get_list(const ql_node *n, const ql_tensor *const *in, int idx, const char *attr,
                    int64_t *v, int *known)
{
    int cnt = 0;
    if (n->n_in > idx && in[idx]) {
        if (!in[idx]->data) {
            *known = 0;
            return 0;
        }
        cnt = (int)ql_tensor_numel(in[idx]);
        for (int k = 0; k < cnt && k < QL_MAX_DIMS; k++)
            v[k] = ql_tensor_get_i64(in[idx], k);
        return cnt;
    }
    const int64_t *a = attr ? ql_attr_ints(n, attr, &cnt) : NULL;
    for (int k = 0; k < cnt && k < QL_MAX_DIMS; k++)
        v[k] = a[k];
    return a ? cnt : -1;
}

/* Clamped start and length of one sliced axis of extent d (ONNX rules:
 * negative values count from the end, then clamp to [0, d] for positive
 * steps and [-1, d-1] for negative ones). */
static void slice_axis(int64_t s, int64_t e, int64_t step, int64_t d, int64_t *start, int64_t *len)
{
    if (s < 0)
        s += d;
    if (e < 0)
        e += d;
    if (d == 0) {
        *start = 0;
        *len = 0;
        return;
    }
    if (step > 0) {
        s = s < 0 ? 0 : (s > d ? d : s);
        e = e < 0 ? 0 : (e > d ? d : e);
        *len = e > s ? (e - s - 1) / step + 1 : 0;
    } else {
        s = s < 0 ? 0 : (s > d - 1 ? d - 1 : s);
        e = e < -1 ? -1 : (e > d - 1 ? d - 1 : e);
        int64_t mag = step == INT64_MIN ? INT64_MAX : -step;
        *len = s > e ? (s - e - 1) / mag + 1 : 0;
    }
    *start = s;
}

static ql_status slice_plan_make(const ql_node *n, const ql_tensor *const *in, const ql_tensor *x,
                                 slice_plan *p, int *known, int *axes_known, int64_t *axes_out,
                                 int *n_axes, ql_error *err)
{
    int64_t starts[QL_MAX_DIMS], ends[QL_MAX_DIMS], axes[QL_MAX_DIMS], steps[QL_MAX_DIMS];
    *known = 1;
    *axes_known = 1;
    int na = get_list(n, in, 3, "axes", axes, axes_known);
    int ns = get_list(n, in, 1, "starts", starts, known);
    int ne = get_list(n, in, 2, "ends", ends, known);
    int nt = get_list(n, in, 4, NULL, steps, known);
    *n_axes = na;
    if (*axes_known && na >= 0) {
        if (na > QL_MAX_DIMS)
            return ql_fail(err, QL_ERR_ARG, "%d axes for rank %d", na, x->ndim);
        for (int k = 0; k < na; k++)
            if (!ql_norm_axis(axes[k], x->ndim, &(int){0}))
                return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)axes[k],
                               x->ndim);
        memcpy(axes_out, axes, (size_t)na * sizeof *axes);
    }
    if (!*known || !*axes_known) {
        *known = 0;
        return QL_OK;
    }
    if (ns < 0 || ne < 0)
        return ql_fail(err, QL_ERR_ARG, "starts and ends are required");
    if (ne != ns || ns > x->ndim)
        return ql_fail(err, QL_ERR_ARG, "%d starts and %d ends for rank %d", ns, ne, x->ndim);
    if (na >= 0 && na != ns)
        return ql_fail(err, QL_ERR_ARG, "axes has %d values for %d starts", na, ns);
    if (nt >= 0 && nt != ns)
        return ql_fail(err, QL_ERR_ARG, "steps has %d values for %d starts", nt, ns);
    for (int i = 0; i < x->ndim; i++) {
        p->start[i] = 0;
        p->step[i] = 1;
        p->len[i] = x->dims[i];
    }
    int seen[QL_MAX_DIMS] = {0};
    for (int k = 0; k < ns; k++) {
        int ax;
        if (!ql_norm_axis(na >= 0 ? axes[k] : k, x->ndim, &ax))
            return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d",
                           (long long)(na >= 0 ? axes[k] : k), x->ndim);
        if (seen[ax]++)
            return ql_fail(err, QL_ERR_ARG, "axis %d is repeated", ax);
        int64_t step = nt >= 0 ? steps[k] : 1, d = x->dims[ax];
        if (step == 0)
            return ql_fail(err, QL_ERR_ARG, "step 0 on axis %d", ax);
        p->step[ax] = step;
        if (d < 0)
            p->len[ax] = -1;
        else
            slice_axis(starts[k], ends[k], step, d, &p->start[ax], &p->len[ax]);
    }
    return QL_OK;
}

static ql_status slice_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                             ql_error *err)
{
    const ql_tensor *x = in[0];
    out[0]->dtype = x->dtype;
    out[0]->ndim = x->ndim;
    if (x->ndim < 0)
        return QL_OK;
    slice_plan p;
    int known, axes_known, na;
    int64_t axes[QL_MAX_DIMS];
    ql_status st = slice_plan_make(n, in, x, &p, &known, &axes_known, axes, &na, err);
    if (st != QL_OK)
        return st;
    for (int i = 0; i < x->ndim; i++)
        out[0]->dims[i] = known ? p.len[i] : -1;
    if (!known && axes_known && na >= 0) { /* only the listed axes are unknown */
        memcpy(out[0]->dims, x->dims, (size_t)x->ndim * sizeof *x->dims);
        for (int k = 0; k < na; k++) {
            int ax;
            ql_norm_axis(axes[k], x->ndim, &ax);
            out[0]->dims[ax] = -1;
        }
    }
    return QL_OK;
}

static ql_status slice_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                           ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    slice_plan p;
    int known, axes_known, na;
    int64_t axes[QL_MAX_DIMS];
    ql_status st = slice_plan_make(n, in, x, &p, &known, &axes_known, axes, &na, err);
    if (st != QL_OK)
        return st;
    strided_job j = {.x = x->data, .y = out[0]->data, .es = esize(x), .nd = x->ndim};
    int64_t acc = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        j.dims[i] = p.len[i];
        /* a stride only matters for axes of two or more elements, where the
         * step is below the extent and step * stride cannot overflow */
        j.xstr[i] = p.len[i] > 1 ? p.step[i] * acc : acc;
        j.base += p.len[i] > 0 ? p.start[i] * acc : 0;
        acc *= x->dims[i];
    }
    if (x->ndim == 0) {
        memcpy(out[0]->data, x->data, esize(x));
        return QL_OK;
    }
    strided_copy(ctx, &j);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Transpose (perm defaults to reversing the axes)
 * ------------------------------------------------------------------------- */
static ql_status get_perm(const ql_node *n, int rank, int *perm, ql_error *err)
{
    int cnt;
    const int64_t *p = ql_attr_ints(n, "perm", &cnt);
    int seen[QL_MAX_DIMS] = {0};
    if (!p) {
        for (int i = 0; i < rank; i++)
            perm[i] = rank - 1 - i;
        return QL_OK;
    }
    if (cnt != rank)
        return ql_fail(err, QL_ERR_ARG, "perm has %d values for rank %d", cnt, rank);
    for (int i = 0; i < rank; i++) {
        if (p[i] < 0 || p[i] >= rank || seen[p[i]]++)
            return ql_fail(err, QL_ERR_ARG, "perm is not a permutation of 0..%d (value %lld at %d)",
                           rank - 1, (long long)p[i], i);
        perm[i] = (int)p[i];
    }
    return QL_OK;
}

static ql_status transpose_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                                 ql_error *err)
{
    const ql_tensor *x = in[0];
    out[0]->dtype = x->dtype;
    out[0]->ndim = x->ndim;
    if (x->ndim < 0)
        return QL_OK;
    int perm[QL_MAX_DIMS];
    ql_status st = get_perm(n, x->ndim, perm, err);
    if (st != QL_OK)
        return st;
    for (int i = 0; i < x->ndim; i++)
        out[0]->dims[i] = x->dims[perm[i]];
    return QL_OK;
}

static ql_status transpose_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                               ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    int perm[QL_MAX_DIMS];
    ql_status st = get_perm(n, x->ndim, perm, err);
    if (st != QL_OK)
        return st;
    if (x->ndim == 0) {
        memcpy(out[0]->data, x->data, esize(x));
        return QL_OK;
    }
    strided_job j = {.x = x->data, .y = out[0]->data, .es = esize(x), .nd = x->ndim};
    int64_t xs[QL_MAX_DIMS], acc = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        xs[i] = acc;
        acc *= x->dims[i];
    }
    for (int i = 0; i < x->ndim; i++) {
        j.dims[i] = x->dims[perm[i]];
        j.xstr[i] = xs[perm[i]];
    }
    strided_copy(ctx, &j);
    return QL_OK;
}

#define MOVE_ROW(E, NAME, SINCE, INFER, RUN, IO)                                                  \
    const ql_op_def ql_op_def_##E = {                                                             \
        .name = NAME, .since_version = SINCE, .in_dtypes = QL_DT_ALL, .infer = INFER, .run_f32 = RUN, \
        IO,                                                                                       \
    };
MOVE_ROW(CONCAT, "Concat", 4, concat_infer, concat_run, QL_IO(1, QL_IO_ANY, 1, 1))
MOVE_ROW(SPLIT, "Split", 2, split_infer, split_run, QL_IO(1, 2, 1, QL_IO_ANY))
MOVE_ROW(SLICE, "Slice", 1, slice_infer, slice_run, QL_IO(1, 5, 1, 1))
MOVE_ROW(TRANSPOSE, "Transpose", 1, transpose_infer, transpose_run, QL_IO(1, 1, 1, 1))
