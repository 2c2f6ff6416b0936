/* Resize, opsets 10 to 19: nearest (every dtype, every nearest_mode),
 * linear and cubic (f32; n-linear/n-cubic applied one axis at a time, as
 * the ONNX reference does), every coordinate_transformation_mode,
 * exclude_outside, antialias, the `axes` attribute and keep_aspect_ratio_policy.
 * Each axis gets a table of source taps and weights per output index; the
 * kernels only read those tables. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

enum { MODE_NEAREST, MODE_LINEAR, MODE_CUBIC };
enum {
    CT_HALF_PIXEL,
    CT_HALF_PIXEL_SYMMETRIC,
    CT_PYTORCH_HALF_PIXEL,
    CT_ALIGN_CORNERS,
    CT_ASYMMETRIC,
    CT_TF_HALF_PIXEL_FOR_NN,
    CT_TF_CROP_AND_RESIZE,
};
enum { NM_ROUND_PREFER_FLOOR, NM_ROUND_PREFER_CEIL, NM_FLOOR, NM_CEIL };
enum { KA_STRETCH, KA_NOT_LARGER, KA_NOT_SMALLER };

typedef struct resize_plan {
    int mode, ctm, nm, keep, antialias, exclude_outside;
    double cubic_a, extrapolation;
    int nd;
    int resized[QL_MAX_DIMS];               /* listed in `axes` (all when absent) */
    int64_t in[QL_MAX_DIMS], out[QL_MAX_DIMS];
    double scale[QL_MAX_DIMS];              /* the scale the coordinate mapping uses */
    double width[QL_MAX_DIMS];              /* in * scale, unfloored (as the reference) */
    double roi_start[QL_MAX_DIMS], roi_end[QL_MAX_DIMS];
} resize_plan;

static int pick(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

/* Opset 10 Resize has two inputs (X, scales); from 11 scales is input 2,
 * so two inputs identify the old form without knowing the opset. */
static int is_v10(const ql_node *n) { return n->n_in == 2; }

static ql_status parse_modes(const ql_node *n, resize_plan *p, ql_error *err)
{
    static const char *const modes[] = {"nearest", "linear", "cubic"};
    static const char *const cts[] = {"half_pixel",        "half_pixel_symmetric", "pytorch_half_pixel",
                                      "align_corners",     "asymmetric",           "tf_half_pixel_for_nn",
                                      "tf_crop_and_resize"};
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    static const char *const kas[] = {"stretch", "not_larger", "not_smaller"};
    const char *mode = ql_attr_string(n, "mode", "nearest");
    if ((p->mode = pick(mode, modes, 3)) < 0)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "mode '%s' is not supported (nearest, linear, cubic are)",
                       mode);
    const char *ct =
        ql_attr_string(n, "coordinate_transformation_mode", is_v10(n) ? "asymmetric" : "half_pixel");
    if ((p->ctm = pick(ct, cts, 7)) < 0)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "coordinate_transformation_mode '%s' is not supported", ct);
    /* opset 10 had no nearest_mode; it floored (as Upsample) */
    const char *nm = ql_attr_string(n, "nearest_mode", is_v10(n) ? "floor" : "round_prefer_floor");
    if ((p->nm = pick(nm, nms, 4)) < 0)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "nearest_mode '%s' is not supported", nm);
    const char *ka = ql_attr_string(n, "keep_aspect_ratio_policy", "stretch");
    if ((p->keep = pick(ka, kas, 3)) < 0)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "keep_aspect_ratio_policy '%s' is not supported", ka);
    p->antialias = ql_attr_int(n, "antialias", 0) != 0;
    if (p->antialias && p->mode == MODE_NEAREST)
        return ql_fail(err, QL_ERR_ARG, "antialias applies to linear and cubic modes, not nearest");
    p->exclude_outside = ql_attr_int(n, "exclude_outside", 0) != 0;
    p->cubic_a = ql_attr_float(n, "cubic_coeff_a", -0.75f);
    p->extrapolation = ql_attr_float(n, "extrapolation_value", 0.0f);
    return QL_OK;
}

/* An input that is absent or an empty tensor counts as not given. */
static const ql_tensor *opt_input(const ql_node *n, const ql_tensor *const *in, int i)
{
    if (n->n_in <= i || !in[i])
        return NULL;
    if (in[i]->ndim >= 0 && ql_tensor_numel(in[i]) == 0)
        return NULL;
    return in[i];
}

/* Fills output extents and per-axis scales. *known = 0 when they depend on
 * data unknown at static time; out[] then holds what is knowable (-1 else). */
static ql_status resize_plan_make(const ql_node *n, const ql_tensor *const *in, resize_plan *p,
                                  int *known, ql_error *err)
{
    const ql_tensor *x = in[0];
    memset(p, 0, sizeof *p);
    *known = 1;
    ql_status st = parse_modes(n, p, err);
    if (st != QL_OK)
        return st;
    const ql_tensor *roi = is_v10(n) ? NULL : opt_input(n, in, 1);
    const ql_tensor *scales = opt_input(n, in, is_v10(n) ? 1 : 2);
    const ql_tensor *sizes = is_v10(n) ? NULL : opt_input(n, in, 3);
    if (!scales && !sizes)
        return ql_fail(err, QL_ERR_ARG, "needs scales or sizes");
    if (scales && sizes && scales->data && sizes->data)
        return ql_fail(err, QL_ERR_ARG, "scales and sizes are exclusive");
    int nd = p->nd = x->ndim;
    if (nd < 0) {
        *known = 0;
        return QL_OK;
    }
    int cnt, na = nd, is_axis[QL_MAX_DIMS] = {0};
    int64_t axes[QL_MAX_DIMS];
    const int64_t *ax = ql_attr_ints(n, "axes", &cnt);
    if (ax) {
        if (cnt > nd)
            return ql_fail(err, QL_ERR_ARG, "%d axes for rank %d", cnt, nd);
        na = cnt;
    }
    for (int k = 0; k < na; k++) {
        int a = k;
        if (ax && !ql_norm_axis(ax[k], nd, &a))
            return ql_fail(err, QL_ERR_ARG, "axis %lld out of range for rank %d", (long long)ax[k], nd);
        if (is_axis[a]++)
            return ql_fail(err, QL_ERR_ARG, "axis %d is repeated", a);
        axes[k] = a;
        p->resized[a] = 1;
    }
    for (int i = 0; i < nd; i++) {
        p->in[i] = p->out[i] = x->dims[i];
        p->scale[i] = 1.0;
        p->width[i] = (double)x->dims[i];
        p->roi_start[i] = 0.0;
        p->roi_end[i] = 1.0;
    }
    const ql_tensor *v = scales ? scales : sizes;
    if (!v->data || (p->ctm == CT_TF_CROP_AND_RESIZE && roi && !roi->data)) {
        *known = 0;
        for (int k = 0; k < na; k++)
            p->out[axes[k]] = -1;
        return QL_OK;
    }
    if (ql_tensor_numel(v) != na)
        return ql_fail(err, QL_ERR_ARG, "%s has %lld values for %d axes", scales ? "scales" : "sizes",
                       (long long)ql_tensor_numel(v), na);
    if (scales) {
        for (int k = 0; k < na; k++) {
            int i = (int)axes[k];
            double s = (float)ql_tensor_get_f64(scales, k);
            if (!(s > 0))
                return ql_fail(err, QL_ERR_ARG, "scales[%d] = %g is not positive", k, s);
            p->scale[i] = s;
            p->width[i] = s * (double)x->dims[i];
            p->out[i] = x->dims[i] < 0 ? -1 : (int64_t)floor(p->width[i]);
        }
    } else if (p->keep == KA_STRETCH) {
        for (int k = 0; k < na; k++) {
            int i = (int)axes[k];
            p->out[i] = ql_tensor_get_i64(sizes, k);
            if (p->out[i] < 0)
                return ql_fail(err, QL_ERR_ARG, "sizes[%d] = %lld is negative", k, (long long)p->out[i]);
            p->width[i] = (double)p->out[i];
            p->scale[i] = x->dims[i] > 0 ? (double)p->out[i] / (double)x->dims[i] : 1.0;
        }
    } else {
        /* one scale for every listed axis: the smallest (not_larger) or the
         * largest (not_smaller) of sizes/in, sizes rounded half up */
        double s = p->keep == KA_NOT_LARGER ? INFINITY : 0.0;
        for (int k = 0; k < na; k++) {
            int i = (int)axes[k];
            if (x->dims[i] < 0) {
                *known = 0;
                for (int m = 0; m < na; m++)
                    p->out[axes[m]] = -1;
                return QL_OK;
            }
            double r = (double)ql_tensor_get_i64(sizes, k) / (double)(x->dims[i] ? x->dims[i] : 1);
            s = p->keep == KA_NOT_LARGER ? fmin(s, r) : fmax(s, r);
        }
        if (!(s > 0) || isinf(s))
            return ql_fail(err, QL_ERR_ARG, "sizes give no positive scale");
        for (int k = 0; k < na; k++) {
            int i = (int)axes[k];
            p->scale[i] = s;
            p->width[i] = s * (double)x->dims[i];
            p->out[i] = (int64_t)(p->width[i] + 0.5);
        }
    }
    if (p->ctm == CT_TF_CROP_AND_RESIZE) {
        if (!roi)
            return ql_fail(err, QL_ERR_ARG, "tf_crop_and_resize needs roi");
        if (ql_tensor_numel(roi) != 2 * na)
            return ql_fail(err, QL_ERR_ARG, "roi has %lld values, needs %d", (long long)ql_tensor_numel(roi),
                           2 * na);
        for (int k = 0; k < na; k++) {
            p->roi_start[axes[k]] = ql_tensor_get_f64(roi, k);
            p->roi_end[axes[k]] = ql_tensor_get_f64(roi, k + na);
        }
    }
    return QL_OK;
}

static ql_status resize_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    resize_plan p;
    int known;
    ql_status st = resize_plan_make(n, in, &p, &known, err);
    if (st != QL_OK)
        return st;
    out[0]->dtype = in[0]->dtype;
    out[0]->ndim = in[0]->ndim;
    for (int i = 0; i < in[0]->ndim; i++)
        out[0]->dims[i] = p.out[i];
    if (p.mode != MODE_NEAREST && in[0]->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s resize of %s data (only f32 interpolates)",
                       p.mode == MODE_LINEAR ? "linear" : "cubic", ql_dtype_info(in[0]->dtype)->name);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Per-axis tap tables
 * ------------------------------------------------------------------------- */
typedef struct axis_taps {
    int ntaps;     /* taps per output index */
    int identity;  /* output index k reads exactly input index k */
    int64_t *idx;  /* [out * ntaps] source indices, clamped to the axis */
    float *w;      /* [out * ntaps] weights (NULL for nearest) */
    char *outside; /* [out] 1: extrapolation value (tf_crop_and_resize) */
} axis_taps;

/* Input coordinate of output index k on axis i (ONNX formulas, in double as
 * the reference computes them). */
static double src_coord(const resize_plan *p, int i, int64_t k)
{
    double x = (double)k, s = p->scale[i], in = (double)p->in[i], w = p->width[i];
    double r0 = p->roi_start[i], r1 = p->roi_end[i];
    switch (p->ctm) {
    case CT_HALF_PIXEL: return (x + 0.5) / s - 0.5;
    case CT_HALF_PIXEL_SYMMETRIC: {
        double adjustment = (double)p->out[i] / w, center = in / 2;
        return center * (1 - adjustment) + (x + 0.5) / s - 0.5;
    }
    case CT_PYTORCH_HALF_PIXEL: return p->out[i] > 1 ? (x + 0.5) / s - 0.5 : 0.0;
    case CT_ALIGN_CORNERS: return w == 1 ? 0.0 : x * (in - 1) / (w - 1);
    case CT_ASYMMETRIC: return x / s;
    case CT_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / s;
    default: /* tf_crop_and_resize */
        return (w == 1 ? (r1 - r0) * (in - 1) / 2 : x * (r1 - r0) * (in - 1) / (w - 1)) + r0 * (in - 1);
    }
}

static double cubic_kernel(double x, double a)
{
    x = fabs(x);
    if (x <= 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}

static int64_t clamp_index(int64_t i, int64_t d) { return i < 0 ? 0 : (i >= d ? d - 1 : i); }

/* Taps of one output index: first tap at floor(c) + t0, weights for
 * distances (t0 + t - frac) scaled by `support_scale` (antialias). */
static void make_weights(const resize_plan *p, double c, int64_t d, int ntaps, int64_t t0, double ss,
                         int64_t *idx, float *w)
{
    double f = floor(c), r = c - f, wt[64], sum = 0.0;
    for (int t = 0; t < ntaps; t++) {
        int64_t src = (int64_t)f + t0 + t;
        double dist = ((double)(t0 + t) - r) * ss;
        double v = p->mode == MODE_LINEAR ? fmax(0.0, 1.0 - fabs(dist)) : cubic_kernel(dist, p->cubic_a);
        if (p->exclude_outside && (src < 0 || src >= d))
            v = 0.0;
        wt[t] = v;
        sum += v;
        idx[t] = clamp_index(src, d);
    }
    /* antialiased and exclude_outside weights are renormalised */
    int norm = (p->antialias && ss < 1.0) || p->exclude_outside;
    for (int t = 0; t < ntaps; t++)
        w[t] = (float)(norm && sum != 0.0 ? wt[t] / sum : wt[t]);
}

static void taps_free(axis_taps *a)
{
    free(a->idx);
    free(a->w);
    free(a->outside);
    memset(a, 0, sizeof *a);
}

static ql_status taps_make(const resize_plan *p, int i, axis_taps *a, ql_error *err)
{
    int64_t d = p->in[i], o = p->out[i];
    double ss = 1.0; /* antialias: the kernel is stretched by 1/scale when shrinking */
    int64_t t0 = 0;
    memset(a, 0, sizeof *a);
    a->ntaps = 1;
    if (p->mode != MODE_NEAREST) {
        int support = p->mode == MODE_LINEAR ? 1 : 2;
        if (p->antialias && p->scale[i] < 1.0)
            ss = p->scale[i];
        t0 = (int64_t)floor(-support / ss) + 1;
        if (2 - 2 * t0 > 64)
            return ql_fail(err, QL_ERR_UNSUPPORTED, "antialias scale %g on axis %d is too small", p->scale[i],
                           i);
        a->ntaps = (int)(2 - 2 * t0);
    }
    size_t n = (size_t)(o > 0 ? o : 1);
    a->idx = malloc(n * (size_t)a->ntaps * sizeof *a->idx);
    a->outside = calloc(n, 1);
    if (p->mode != MODE_NEAREST)
        a->w = malloc(n * (size_t)a->ntaps * sizeof *a->w);
    if (!a->idx || !a->outside || (p->mode != MODE_NEAREST && !a->w)) {
        taps_free(a);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    a->identity = o == d;
    for (int64_t k = 0; k < o; k++) {
        double c = p->resized[i] ? src_coord(p, i, k) : (double)k;
        if (c != (double)k)
            a->identity = 0;
        if (p->ctm == CT_TF_CROP_AND_RESIZE && (c < 0 || c > (double)(d - 1))) {
            a->outside[k] = 1;
            a->identity = 0;
        }
        int64_t *ix = a->idx + k * a->ntaps;
        if (p->mode != MODE_NEAREST) {
            make_weights(p, c, d, a->ntaps, t0, ss, ix, a->w + k * a->ntaps);
            continue;
        }
        double f = floor(c), r = c - f;
        int up;
        switch (p->nm) {
        case NM_ROUND_PREFER_FLOOR: up = r > 0.5; break;
        case NM_ROUND_PREFER_CEIL: up = r >= 0.5; break;
        case NM_FLOOR: up = 0; break;
        default: up = r > 0; break;
        }
        ix[0] = clamp_index((int64_t)f + up, d);
    }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Nearest: one gather pass over output rows, any dtype
 * ------------------------------------------------------------------------- */
typedef struct nearest_job {
    const char *x;
    char *y;
    size_t es;
    int nd;
    int64_t yd[QL_MAX_DIMS], xs[QL_MAX_DIMS];
    const axis_taps *taps;
    int any_outside; /* tf_crop_and_resize put some index outside */
    char extra[8];   /* extrapolation value in the dtype */
} nearest_job;

static void nearest_rows(void *arg, int64_t begin, int64_t end, int tid)
{
    const nearest_job *j = arg;
    (void)tid;
    int last = j->nd - 1;
    const axis_taps *tl = &j->taps[last];
    int64_t len = j->yd[last], prev_off = -1;
    size_t es = j->es, row = (size_t)len * es;
    for (int64_t r = begin; r < end; r++) {
        char *dst = j->y + (size_t)r * row;
        int64_t rem = r, off = 0;
        int outside = 0;
        for (int i = last - 1; i >= 0; i--) {
            int64_t k = rem % j->yd[i];
            rem /= j->yd[i];
            outside |= j->taps[i].outside[k];
            off += j->taps[i].idx[k] * j->xs[i];
        }
        if (outside)
            off = -2;
        if (off == prev_off) { /* same source row as the previous output row (upsampling) */
            memcpy(dst, dst - row, row);
            continue;
        }
        prev_off = off;
        if (outside) {
            for (int64_t k = 0; k < len; k++)
                memcpy(dst + (size_t)k * es, j->extra, es);
            continue;
        }
        const char *src = j->x + (size_t)off * es;
        if (tl->identity) {
            memcpy(dst, src, row);
            continue;
        }
        if (j->any_outside) {
            for (int64_t k = 0; k < len; k++)
                memcpy(dst + (size_t)k * es, tl->outside[k] ? j->extra : src + (size_t)tl->idx[k] * es, es);
            continue;
        }
        const int64_t *ix = tl->idx;
        switch (es) { /* fixed-size copies the compiler turns into moves */
        case 1: for (int64_t k = 0; k < len; k++) dst[k] = src[ix[k]]; break;
        case 2: for (int64_t k = 0; k < len; k++) memcpy(dst + 2 * k, src + 2 * ix[k], 2); break;
        case 4: for (int64_t k = 0; k < len; k++) memcpy(dst + 4 * k, src + 4 * ix[k], 4); break;
        default: for (int64_t k = 0; k < len; k++) memcpy(dst + 8 * k, src + 8 * ix[k], 8); break;
        }
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

/* ---------------------------------------------------------------------------
 * Linear / cubic: one pass per resized axis, [outer, in, inner] ->
 * [outer, out, inner], each output row a weighted sum of source rows.
 * ------------------------------------------------------------------------- */
typedef struct interp_job {
    const float *x;
    float *y;
    int64_t din, dout, inner;
    const axis_taps *t;
    int any_outside;
    float extra;
} interp_job;

/* The last axis (inner 1): each output a dot product of ntaps source
 * elements; rows are walked in segments so no division per element. */
static void interp_last(const interp_job *j, int64_t begin, int64_t end)
{
    const int64_t *idx = j->t->idx;
    const float *wt = j->t->w;
    const char *outside = j->t->outside;
    int nt = j->t->ntaps;
    int64_t dout = j->dout;
    for (int64_t r = begin; r < end;) {
        int64_t o = r / dout, k0 = r % dout, k1 = k0 + (end - r) < dout ? k0 + (end - r) : dout;
        const float *b = j->x + o * j->din;
        float *d = j->y + o * dout;
        if (nt == 2) {
            for (int64_t k = k0; k < k1; k++)
                d[k] = wt[2 * k] * b[idx[2 * k]] + wt[2 * k + 1] * b[idx[2 * k + 1]];
        } else {
            for (int64_t k = k0; k < k1; k++) {
                float acc = wt[k * nt] * b[idx[k * nt]];
                for (int t = 1; t < nt; t++)
                    acc += wt[k * nt + t] * b[idx[k * nt + t]];
                d[k] = acc;
            }
        }
        if (j->any_outside)
            for (int64_t k = k0; k < k1; k++)
                if (outside[k])
                    d[k] = j->extra;
        r += k1 - k0;
    }
}

/* Other axes: each output row a weighted sum of `inner`-long source rows. */
static void interp_rows(void *arg, int64_t begin, int64_t end, int tid)
{
    const interp_job *j = arg;
    (void)tid;
    if (j->inner == 1) {
        interp_last(j, begin, end);
        return;
    }
    int nt = j->t->ntaps;
    int64_t inner = j->inner, dout = j->dout, o = begin / dout, k = begin % dout - 1;
    for (int64_t r = begin; r < end; r++) {
        if (++k == dout) {
            k = 0;
            o++;
        }
        float *dst = j->y + r * inner;
        if (j->t->outside[k]) {
            for (int64_t e = 0; e < inner; e++)
                dst[e] = j->extra;
            continue;
        }
        const float *base = j->x + o * j->din * inner;
        const int64_t *ix = j->t->idx + k * nt;
        const float *w = j->t->w + k * nt;
        const float *s0 = base + ix[0] * inner;
        float w0 = w[0];
        for (int64_t e = 0; e < inner; e++)
            dst[e] = w0 * s0[e];
        for (int t = 1; t < nt; t++) {
            const float *s = base + ix[t] * inner;
            float wt = w[t];
            for (int64_t e = 0; e < inner; e++)
                dst[e] += wt * s[e];
        }
    }
}

static ql_status resize_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    ql_tensor *y = out[0];
    resize_plan p;
    int known, nd = x->ndim;
    axis_taps taps[QL_MAX_DIMS];
    float *buf[2] = {NULL, NULL};
    memset(taps, 0, sizeof taps);
    ql_status st = resize_plan_make(n, in, &p, &known, err);
    if (st != QL_OK)
        return st;
    if (p.mode != MODE_NEAREST && x->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "linear and cubic resize need f32 data");
    size_t es = ql_dtype_info(x->dtype)->size;
    if (ql_tensor_numel(y) == 0)
        return QL_OK;
    if (nd == 0 || ql_tensor_numel(x) == 0)
        return ql_fail(err, QL_ERR_SHAPE, "cannot resize an empty tensor to a non-empty one");
    for (int i = 0; i < nd && st == QL_OK; i++)
        st = taps_make(&p, i, &taps[i], err);
    if (st != QL_OK)
        goto cleanup;
    if (p.mode == MODE_NEAREST) {
        nearest_job j = {.x = x->data, .y = y->data, .es = es, .nd = nd, .taps = taps};
        store_scalar(x->dtype, p.extrapolation, j.extra);
        for (int64_t k = 0; k < y->dims[nd - 1]; k++)
            j.any_outside |= taps[nd - 1].outside[k];
        int64_t acc = 1;
        for (int i = nd - 1; i >= 0; i--) {
            j.yd[i] = y->dims[i];
            j.xs[i] = acc;
            acc *= x->dims[i];
        }
        int64_t len = y->dims[nd - 1];
        ql_parallel_for(ctx, ql_tensor_numel(y) / len, 4096 / (len * (int64_t)es) + 1, nearest_rows, &j);
        goto cleanup;
    }
    /* separable passes from the last axis to the first, skipping axes the
     * resize leaves alone; intermediates ping-pong between two buffers */
    int64_t cur[QL_MAX_DIMS];
    memcpy(cur, x->dims, (size_t)nd * sizeof *cur);
    const float *src = x->data;
    int last_pass = -1, which = 0;
    for (int i = nd - 1; i >= 0; i--) /* passes run last axis first */
        if (!taps[i].identity)
            last_pass = i;
    if (last_pass < 0) {
        memcpy(y->data, x->data, ql_tensor_nbytes(x));
        goto cleanup;
    }
    for (int i = nd - 1; i >= 0; i--) {
        if (taps[i].identity)
            continue;
        int64_t outer = 1, inner = 1;
        for (int a = 0; a < i; a++)
            outer *= cur[a];
        for (int a = i + 1; a < nd; a++)
            inner *= cur[a];
        float *dst = y->data;
        if (i != last_pass) {
            free(buf[which]);
            buf[which] = malloc((size_t)(outer * p.out[i] * inner) * sizeof(float));
            if (!buf[which]) {
                st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
                goto cleanup;
            }
            dst = buf[which];
            which ^= 1;
        }
        interp_job j = {.x = src, .y = dst, .din = cur[i], .dout = p.out[i], .inner = inner,
                        .t = &taps[i], .extra = (float)p.extrapolation};
        for (int64_t k = 0; k < p.out[i]; k++)
            j.any_outside |= taps[i].outside[k];
        ql_parallel_for(ctx, outer * p.out[i], 4096 / (inner * taps[i].ntaps) + 1, interp_rows, &j);
        cur[i] = p.out[i];
        src = dst;
    }
cleanup:
    for (int i = 0; i < nd; i++)
        taps_free(&taps[i]);
    free(buf[0]);
    free(buf[1]);
    return st;
}

const ql_op_def ql_op_def_RESIZE = {
    .name = "Resize",
    .since_version = 10,
    .in_dtypes = QL_DT_ALL,
    .infer = resize_infer,
    .run_f32 = resize_run,
    QL_IO(1, 4, 1, 1), /* X, scales (opset 10); X, roi, scales, sizes (11+) */
};
