/* MaxPool, AveragePool and the global pools.
 *
 * Float 1-D/2-D pools without the Indices output take the fast path: each
 * (image, channel) plane is copied into phase planes (kernels.h) padded
 * with -inf (max) or 0 (average), after which every window tap of a run of
 * outputs is a contiguous read, reduced eight lanes at a time. Everything
 * else (3-D windows, u8/i8 MaxPool, the Indices output) takes a plain
 * loop over windows. Float 2x2 MaxPool of stride 2 with every window inside
 * the input (the common downsampling) reads its two input rows straight
 * instead: max down the rows, then of neighbouring pairs. One task per
 * plane, so results never depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define POOL_MAX_TAPS 256

/* Geometry normalised to three spatial dims (D, H, W). */
typedef struct pool_geom {
    int nsp;
    int64_t planes; /* N * C */
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
    int64_t in_sz, out_sz, kvol;
} pool_geom;

static ql_status pool_window(const ql_node *n, const ql_tensor *x, ql_window *w, ql_error *err)
{
    int cnt;
    const int64_t *ks = ql_attr_ints(n, "kernel_shape", &cnt);
    if (!ks)
        return ql_fail(err, QL_ERR_ARG, "kernel_shape is required");
    if (cnt < 1 || cnt > QL_MAX_SPATIAL)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "kernel_shape has %d values (1 to %d supported)",
                       cnt, QL_MAX_SPATIAL);
    if (x->ndim >= 0 && x->ndim != cnt + 2)
        return ql_fail(err, QL_ERR_SHAPE, "input rank %d does not fit a kernel_shape of %d values",
                       x->ndim, cnt);
    int64_t in[QL_MAX_SPATIAL];
    for (int i = 0; i < cnt; i++)
        in[i] = x->ndim >= 0 ? x->dims[2 + i] : -1;
    return ql_window_init(n, cnt, NULL, in, ql_attr_int(n, "ceil_mode", 0) != 0, w, err);
}

static void geom_fill(pool_geom *g, const ql_window *w, const ql_tensor *x)
{
    int sh = 3 - w->nsp;
    g->nsp = w->nsp;
    g->planes = x->dims[0] * x->dims[1];
    g->in_sz = g->out_sz = g->kvol = 1;
    for (int i = 0; i < 3; i++) {
        int j = i - sh;
        g->in[i] = j >= 0 ? w->in[j] : 1;
        g->out[i] = j >= 0 ? w->out[j] : 1;
        g->k[i] = j >= 0 ? w->kernel[j] : 1;
        g->s[i] = j >= 0 ? w->stride[j] : 1;
        g->d[i] = j >= 0 ? w->dilation[j] : 1;
        g->pb[i] = j >= 0 ? w->pad_begin[j] : 0;
        g->pe[i] = j >= 0 ? w->pad_end[j] : 0;
        g->in_sz *= g->in[i], g->out_sz *= g->out[i], g->kvol *= g->k[i];
    }
}

static int wants_indices(const ql_node *n) { return n->n_out > 1 && n->out[1] >= 0; }

static ql_status pool_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_error *err)
{
    const ql_tensor *x = in[0];
    ql_window w;
    ql_status st = pool_window(n, x, &w, err);
    if (st != QL_OK)
        return st;
    int is_max = n->op == QL_OP_MAXPOOL;
    if (!is_max && x->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "AveragePool runs on f32 only");
    if (is_max && x->dtype != QL_F32 && x->dtype != QL_U8 && x->dtype != QL_I8)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "MaxPool runs on f32, u8 and i8 only");
    int64_t so = is_max ? ql_attr_int(n, "storage_order", 0) : 0;
    if (so != 0 && so != 1)
        return ql_fail(err, QL_ERR_ARG, "storage_order must be 0 or 1 (got %lld)", (long long)so);
    for (int o = 0; o < (is_max && wants_indices(n) ? 2 : 1); o++) {
        out[o]->dtype = o ? QL_I64 : x->dtype;
        out[o]->ndim = x->ndim;
        if (x->ndim < 0)
            continue;
        out[o]->dims[0] = x->dims[0];
        out[o]->dims[1] = x->dims[1];
        for (int i = 0; i < w.nsp; i++)
            out[o]->dims[2 + i] = w.out[i];
    }
    return QL_OK;
}

/* Window taps along one axis that fall inside [lo, hi). */
static int64_t axis_count(const pool_geom *g, int a, int64_t o, int64_t lo, int64_t hi)
{
    int64_t c = 0;
    for (int64_t i = 0; i < g->k[a]; i++) {
        int64_t p = o * g->s[a] - g->pb[a] + i * g->d[a];
        c += p >= lo && p < hi;
    }
    return c;
}

/* Average divisor for output (od, oh, ow): taps inside the image, or with
 * count_include_pad taps inside the padded image (windows hanging past the
 * end padding in ceil mode still exclude the overhang). */
static float avg_count(const pool_geom *g, int include_pad, int64_t od, int64_t oh, int64_t ow)
{
    int64_t o[3] = {od, oh, ow}, c = 1;
    for (int a = 0; a < 3; a++)
        c *= include_pad ? axis_count(g, a, o[a], -g->pb[a], g->in[a] + g->pe[a])
                         : axis_count(g, a, o[a], 0, g->in[a]);
    return (float)c;
}

/* ---------------------------------------------------------------------------
 * Plain loop over windows: any rank, integer MaxPool, the Indices output
 * ------------------------------------------------------------------------- */
typedef struct slow_job {
    pool_geom g;
    const void *x;
    void *y;
    int64_t *idx;
    ql_dtype dt;
    int is_max, include_pad, col_major;
} slow_job;

#define QL_SLOW_POOL(NAME, T, LOWEST)                                                              \
    static void NAME(const slow_job *j, int64_t p)                                                 \
    {                                                                                              \
        const pool_geom *g = &j->g;                                                                \
        const T *x = (const T *)j->x + p * g->in_sz;                                               \
        T *y = (T *)j->y + p * g->out_sz;                                                          \
        int64_t *ix = j->idx ? j->idx + p * g->out_sz : NULL;                                      \
        for (int64_t od = 0; od < g->out[0]; od++)                                                 \
            for (int64_t oh = 0; oh < g->out[1]; oh++)                                             \
                for (int64_t ow = 0; ow < g->out[2]; ow++) {                                       \
                    double acc = j->is_max ? (double)(LOWEST) : 0.0;                               \
                    T best = LOWEST;                                                               \
                    int64_t best_at = -1;                                                          \
                    for (int64_t a = 0; a < g->k[0]; a++) {                                        \
                        int64_t id = od * g->s[0] - g->pb[0] + a * g->d[0];                        \
                        if (id < 0 || id >= g->in[0])                                              \
                            continue;                                                              \
                        for (int64_t b = 0; b < g->k[1]; b++) {                                    \
                            int64_t ih = oh * g->s[1] - g->pb[1] + b * g->d[1];                    \
                            if (ih < 0 || ih >= g->in[1])                                          \
                                continue;                                                          \
                            for (int64_t e = 0; e < g->k[2]; e++) {                                \
                                int64_t iw = ow * g->s[2] - g->pb[2] + e * g->d[2];                \
                                if (iw < 0 || iw >= g->in[2])                                      \
                                    continue;                                                      \
                                int64_t at = (id * g->in[1] + ih) * g->in[2] + iw;                 \
                                T v = x[at];                                                       \
                                if (j->is_max) {                                                   \
                                    if (best_at < 0 || v > best || isnan((double)v)) {                     \
                                        best = v;                                                  \
                                        best_at = at;                                              \
                                    }                                                              \
                                } else {                                                           \
                                    acc += (double)v;                                              \
                                }                                                                  \
                            }                                                                      \
                        }                                                                          \
                    }                                                                              \
                    int64_t o = (od * g->out[1] + oh) * g->out[2] + ow;                            \
                    if (j->is_max) {                                                               \
                        y[o] = best;                                                               \
                        if (ix && best_at >= 0) {                                                  \
                            int64_t bw = best_at % g->in[2], bh = best_at / g->in[2] % g->in[1];   \
                            int64_t bd = best_at / (g->in[1] * g->in[2]);                          \
                            ix[o] = p * g->in_sz +                                                 \
                                    (j->col_major ? (bw * g->in[1] + bh) * g->in[0] + bd           \
                                                  : best_at);                                      \
                        } else if (ix) {                                                           \
                            ix[o] = -1;                                                            \
                        }                                                                          \
                    } else {                                                                       \
                        y[o] = (T)(acc / avg_count(g, j->include_pad, od, oh, ow));                \
                    }                                                                              \
                }                                                                                  \
    }

QL_SLOW_POOL(slow_f32, float, -INFINITY)
QL_SLOW_POOL(slow_u8, uint8_t, 0)
QL_SLOW_POOL(slow_i8, int8_t, -128)

static void slow_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const slow_job *j = arg;
    (void)tid;
    for (int64_t p = begin; p < end; p++) {
        if (j->dt == QL_U8)
            slow_u8(j, p);
        else if (j->dt == QL_I8)
            slow_i8(j, p);
        else
            slow_f32(j, p);
    }
}

/* ---------------------------------------------------------------------------
 * Fast path over phase planes
 * ------------------------------------------------------------------------- */
typedef struct fast_job {
    pool_geom g;
    const float *x;
    float *y;
    ql_phase ph;
    int64_t ncols, ntaps, toff[POOL_MAX_TAPS];
    const float *cnt_h, *cnt_w; /* average divisors per output row / column */
    float *scratch;
    int64_t per_thread;
    int is_max, fast;
} fast_job;

/* out[0, n) = max or sum over taps t of p[toff[t] + i]; n a multiple of 32. */
QL_INLINE void pool_body(float *restrict out, int64_t n, const float *restrict p,
                         const int64_t *toff, int64_t ntaps, int is_max)
{
    for (int64_t i = 0; i < n; i += 32) {
        ql_v8 a0 = QL_V8(is_max ? -INFINITY : 0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t t = 0; t < ntaps; t++) {
            const float *q = p + toff[t] + i;
            if (is_max) {
                a0 = QL_V8_MAX(a0, QL_LD8(q)), a1 = QL_V8_MAX(a1, QL_LD8(q + 8));
                a2 = QL_V8_MAX(a2, QL_LD8(q + 16)), a3 = QL_V8_MAX(a3, QL_LD8(q + 24));
            } else {
                a0 += QL_LD8(q), a1 += QL_LD8(q + 8);
                a2 += QL_LD8(q + 16), a3 += QL_LD8(q + 24);
            }
        }
        QL_ST8(out + i, a0), QL_ST8(out + i + 8, a1), QL_ST8(out + i + 16, a2);
        QL_ST8(out + i + 24, a3);
    }
}

QL_TARGET_FAST static void pool_fast(float *out, int64_t n, const float *p, const int64_t *toff,
                                     int64_t ntaps, int is_max)
{
    pool_body(out, n, p, toff, ntaps, is_max);
}

static void pool_portable(float *out, int64_t n, const float *p, const int64_t *toff,
                          int64_t ntaps, int is_max)
{
    pool_body(out, n, p, toff, ntaps, is_max);
}

static void fast_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const fast_job *j = arg;
    const pool_geom *g = &j->g;
    float *pl = j->scratch + (int64_t)tid * j->per_thread;
    int64_t n32 = (j->ncols + 31) / 32 * 32, slack = 64;
    float *ob = pl + (j->ph.size + slack + 15) / 16 * 16;
    float fill = j->is_max ? -INFINITY : 0.0f;
    for (int64_t i = 0; i < slack; i++)
        pl[j->ph.size + i] = fill;
    for (int64_t p = begin; p < end; p++) {
        ql_phase_build(&j->ph, j->x + p * g->in_sz, fill, pl);
        if (j->fast)
            pool_fast(ob, n32, pl, j->toff, j->ntaps, j->is_max);
        else
            pool_portable(ob, n32, pl, j->toff, j->ntaps, j->is_max);
        float *y = j->y + p * g->out_sz;
        int64_t OW = g->out[2];
        for (int64_t oh = 0; oh < g->out[1]; oh++) {
            const float *src = ob + oh * j->ph.wq;
            float *dst = y + oh * OW;
            if (j->is_max) {
                memcpy(dst, src, (size_t)OW * sizeof *dst);
            } else {
                for (int64_t ow = 0; ow < OW; ow++)
                    dst[ow] = src[ow] / (j->cnt_h[oh] * j->cnt_w[ow]);
            }
        }
    }
}

/* ---------------------------------------------------------------------------
 * 2x2 MaxPool, stride 2, windows inside the input
 * ------------------------------------------------------------------------- */
typedef struct max22_job {
    const pool_geom *g;
    const float *x;
    float *y;
    int fast;
} max22_job;

static int is_max22(const pool_geom *g)
{
    return g->nsp == 2 && g->k[1] == 2 && g->k[2] == 2 && g->s[1] == 2 && g->s[2] == 2 &&
           g->d[1] == 1 && g->d[2] == 1 && g->pb[1] == 0 && g->pb[2] == 0 &&
           2 * g->out[1] <= g->in[1] && 2 * g->out[2] <= g->in[2];
}

/* The taps in the general path's order, (0,0) (0,1) (1,0) (1,1), each
 * compared with the running maximum from -inf as there (NaN then behaves
 * the same) */
QL_INLINE float max4(float a, float b, float c, float d)
{
    float m = -INFINITY;
    m = a > m ? a : m;
    m = b > m ? b : m;
    m = c > m ? c : m;
    return d > m ? d : m;
}

QL_INLINE void max22_body(float *restrict y, const float *restrict x, int64_t IW, int64_t OH,
                          int64_t OW)
{
    const ql_v8i ev = {0, 2, 4, 6, 8, 10, 12, 14}, od = {1, 3, 5, 7, 9, 11, 13, 15};
    for (int64_t oh = 0; oh < OH; oh++) {
        const float *r0 = x + 2 * oh * IW, *r1 = r0 + IW;
        float *out = y + oh * OW;
        int64_t ow = 0;
        for (; ow + 8 <= OW; ow += 8) {
            ql_v8 a0 = QL_LD8(r0 + 2 * ow), a1 = QL_LD8(r0 + 2 * ow + 8);
            ql_v8 b0 = QL_LD8(r1 + 2 * ow), b1 = QL_LD8(r1 + 2 * ow + 8);
            ql_v8 m = QL_V8(-INFINITY);
            m = QL_V8_MAX(m, __builtin_shuffle(a0, a1, ev));
            m = QL_V8_MAX(m, __builtin_shuffle(a0, a1, od));
            m = QL_V8_MAX(m, __builtin_shuffle(b0, b1, ev));
            m = QL_V8_MAX(m, __builtin_shuffle(b0, b1, od));
            QL_ST8(out + ow, m);
        }
        for (; ow < OW; ow++)
            out[ow] = max4(r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]);
    }
}

QL_TARGET_FAST static void max22_fast(float *y, const float *x, int64_t IW, int64_t OH, int64_t OW)
{
    max22_body(y, x, IW, OH, OW);
}

static void max22_portable(float *y, const float *x, int64_t IW, int64_t OH, int64_t OW)
{
    max22_body(y, x, IW, OH, OW);
}

static void max22_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const max22_job *j = arg;
    const pool_geom *g = j->g;
    (void)tid;
    for (int64_t p = begin; p < end; p++) {
        const float *x = j->x + p * g->in_sz;
        float *y = j->y + p * g->out_sz;
        if (j->fast)
            max22_fast(y, x, g->in[2], g->out[1], g->out[2]);
        else
            max22_portable(y, x, g->in[2], g->out[1], g->out[2]);
    }
}

static ql_status pool_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    ql_window w;
    ql_status st = pool_window(n, x, &w, err);
    if (st != QL_OK)
        return st;
    int is_max = n->op == QL_OP_MAXPOOL, include_pad = ql_attr_int(n, "count_include_pad", 0) != 0;
    pool_geom g;
    geom_fill(&g, &w, x);
    if (g.planes == 0 || g.out_sz == 0)
        return QL_OK;
    int indices = is_max && wants_indices(n);
    if (x->dtype != QL_F32 || indices || g.nsp > 2 || g.kvol > POOL_MAX_TAPS) {
        slow_job j = {.g = g, .x = x->data, .y = out[0]->data, .dt = x->dtype, .is_max = is_max,
                      .include_pad = include_pad,
                      .col_major = ql_attr_int(n, "storage_order", 0) == 1,
                      .idx = indices ? out[1]->data : NULL};
        ql_parallel_for(ctx, g.planes, 1, slow_tasks, &j);
        return QL_OK;
    }
    if (is_max && is_max22(&g)) {
        max22_job j = {&g, x->data, out[0]->data, ql_cpu_fast()};
        ql_parallel_for(ctx, g.planes, 1, max22_tasks, &j);
        return QL_OK;
    }
    fast_job j = {.g = g, .x = x->data, .y = out[0]->data, .is_max = is_max, .fast = ql_cpu_fast()};
    ql_phase_plan(&j.ph, g.in[1], g.in[2], g.s[1], g.s[2], g.pb[1], g.pb[2], g.out[1], g.out[2],
                  (g.k[1] - 1) * g.d[1] + 1, (g.k[2] - 1) * g.d[2] + 1);
    j.ncols = (g.out[1] - 1) * j.ph.wq + g.out[2];
    j.ntaps = g.kvol;
    for (int64_t t = 0; t < j.ntaps; t++)
        j.toff[t] = ql_phase_off(&j.ph, t / g.k[2] * g.d[1], t % g.k[2] * g.d[2]);
    int threads = ql_ctx_threads(ctx);
    int64_t n32 = (j.ncols + 31) / 32 * 32;
    j.per_thread = (j.ph.size + 64 + 15) / 16 * 16 + n32;
    int64_t shared = (g.out[1] + g.out[2] + 15) / 16 * 16;
    float *sc = ql_ctx_scratch(ctx, (size_t)(shared + j.per_thread * threads) * sizeof(float));
    if (!sc)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for pooling scratch");
    float *ch = sc, *cw = sc + g.out[1];
    for (int64_t i = 0; i < g.out[1]; i++)
        ch[i] = include_pad ? (float)axis_count(&g, 1, i, -g.pb[1], g.in[1] + g.pe[1])
                            : (float)axis_count(&g, 1, i, 0, g.in[1]);
    for (int64_t i = 0; i < g.out[2]; i++)
        cw[i] = include_pad ? (float)axis_count(&g, 2, i, -g.pb[2], g.in[2] + g.pe[2])
                            : (float)axis_count(&g, 2, i, 0, g.in[2]);
    j.cnt_h = ch, j.cnt_w = cw;
    j.scratch = sc + shared;
    ql_parallel_for(ctx, g.planes, 1, fast_tasks, &j);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * GlobalAveragePool / GlobalMaxPool
 * ------------------------------------------------------------------------- */
static ql_status global_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    (void)n;
    const ql_tensor *x = in[0];
    if (x->ndim >= 0 && x->ndim < 3)
        return ql_fail(err, QL_ERR_SHAPE, "needs an input of rank 3 or more (got %d)", x->ndim);
    out[0]->dtype = x->dtype;
    out[0]->ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++)
        out[0]->dims[i] = i < 2 ? x->dims[i] : 1;
    return QL_OK;
}

typedef struct global_job {
    const float *x;
    float *y;
    int64_t size;
    int is_max;
} global_job;

static void global_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const global_job *j = arg;
    (void)tid;
    for (int64_t p = begin; p < end; p++) {
        const float *x = j->x + p * j->size;
        int64_t n8 = j->size / 8 * 8;
        /* eight lanes, then the lanes and the tail in order */
        ql_v8 acc = QL_V8(j->is_max ? -INFINITY : 0.0f);
        for (int64_t i = 0; i < n8; i += 8)
            acc = j->is_max ? QL_V8_MAX(acc, QL_LD8(x + i)) : acc + QL_LD8(x + i);
        float r = j->is_max ? -INFINITY : 0.0f;
        for (int l = 0; l < 8; l++)
            r = j->is_max ? (acc[l] > r ? acc[l] : r) : r + acc[l];
        for (int64_t i = n8; i < j->size; i++)
            r = j->is_max ? (x[i] > r || isnan(x[i]) ? x[i] : r) : r + x[i];
        j->y[p] = j->is_max ? r : r / (float)j->size;
    }
}

static ql_status global_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0];
    if (x->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "global pooling runs on f32 only");
    global_job j = {.x = x->data, .y = out[0]->data, .is_max = n->op == QL_OP_GLOBALMAXPOOL};
    int64_t planes = x->dims[0] * x->dims[1];
    j.size = planes > 0 ? ql_tensor_numel(x) / planes : 0;
    if (planes == 0)
        return QL_OK;
    if (j.size == 0)
        return ql_fail(err, QL_ERR_SHAPE, "global pooling over an empty spatial extent");
    ql_parallel_for(ctx, planes, 16, global_tasks, &j);
    return QL_OK;
}

const ql_op_def ql_op_def_MAXPOOL = {
    .name = "MaxPool", .since_version = 1, .in_dtypes = QL_DT_BIT(QL_F32) | QL_DT_BIT(QL_U8) | QL_DT_BIT(QL_I8),
    .infer = pool_infer, .run_f32 = pool_run, QL_IO(1, 1, 1, 2), /* Indices output */
};
const ql_op_def ql_op_def_AVERAGEPOOL = {
    .name = "AveragePool", .since_version = 1, .infer = pool_infer, .run_f32 = pool_run,
    QL_IO(1, 1, 1, 1),
};
const ql_op_def ql_op_def_GLOBALAVERAGEPOOL = {
    .name = "GlobalAveragePool", .since_version = 1, .infer = global_infer, .run_f32 = global_run,
    QL_IO(1, 1, 1, 1),
};
const ql_op_def ql_op_def_GLOBALMAXPOOL = {
    .name = "GlobalMaxPool", .since_version = 1, .infer = global_infer, .run_f32 = global_run,
    QL_IO(1, 1, 1, 1),
};
