/* Conv and ConvTranspose.
 *
 * Conv's general path is the GEMM of conv_gemm.c on the packed
 * micro-kernel (kernels.h): weights are packed once by prepare() (per run
 * when the weight is not a constant), B is packed per k-block into
 * 16-column tiles. B is read in one of two ways:
 *  - phase mode (1-D/2-D): the input is copied into phase planes
 *    (conv_phase.c: the padded image split by stride) where every kernel tap of a run of
 *    output columns is contiguous, so there is no im2col; output columns
 *    are numbered oh*wq + ow and the few past OW are computed and dropped.
 *    A 1x1, stride 1, unpadded conv reads the input itself. Planes of a
 *    big batch are built block by block so they are in cache when read.
 *  - im2col mode (small images, 3-D): columns of all images are gathered
 *    per k-block; blocks may span images so late layers still fill whole
 *    tiles at batch > 1. A last tile of at most 8 columns uses an 8-wide
 *    kernel.
 * Tasks are (image, group, column block, row range); any split gives the
 * same bits, since every output is a sum over k in order.
 * Depthwise convolutions use a direct kernel over phase planes, and so do
 * group-1 convolutions of at most 64 channels (ops/conv_direct.c); those of
 * small images go 8 channels at a time through a pixels x channels buffer
 * (ops/conv_dw8.c), with the same bits.
 * ConvTranspose is BLAS sgemm (W^T x) followed by a col2im scatter-add,
 * one task per (image, group). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv_priv.h"
#include "../pool.h"

#define DW_MAX_TAPS 64

static void geom_fill(conv_geom *g, const ql_window *w, int64_t N, int64_t C, int64_t M, int64_t G)
{
    int sh = 3 - w->nsp;
    g->nsp = w->nsp;
    g->N = N, g->C = C, g->M = M, g->G = G;
    g->cg = C / G, g->mg = M / G;
    g->kvol = 1, g->in_sz = 1, g->out_sz = 1;
    for (int i = 0; i < 3; i++) {
        int j = i - sh;
        g->in[i] = j >= 0 ? w->in[j] : 1;
        g->out[i] = j >= 0 ? w->out[j] : 1;
        g->k[i] = j >= 0 ? w->kernel[j] : 1;
        g->s[i] = j >= 0 ? w->stride[j] : 1;
        g->d[i] = j >= 0 ? w->dilation[j] : 1;
        g->pb[i] = j >= 0 ? w->pad_begin[j] : 0;
        g->kvol *= g->k[i], g->in_sz *= g->in[i], g->out_sz *= g->out[i];
    }
    g->K = g->cg * g->kvol;
}

static int is_same(const char *ap) { return !strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER"); }

/* ConvTranspose extents: out = s*(in-1) + output_padding + dilated kernel
 * - pads, with pads derived from output_shape or auto_pad when given. */
static ql_status convt_extents(const ql_node *n, ql_window *w, const int64_t *in, ql_error *err)
{
    int cnt_op, cnt_os;
    const int64_t *op = ql_attr_ints(n, "output_padding", &cnt_op);
    const int64_t *os = ql_attr_ints(n, "output_shape", &cnt_os);
    const char *ap = ql_attr_string(n, "auto_pad", "NOTSET");
    int nsp = w->nsp;
    if (op && cnt_op != nsp)
        return ql_fail(err, QL_ERR_ARG, "output_padding has %d values for %d spatial dimensions",
                       cnt_op, nsp);
    if (os && cnt_os != nsp && cnt_os != nsp + 2)
        return ql_fail(err, QL_ERR_ARG, "output_shape has %d values for %d spatial dimensions",
                       cnt_os, nsp);
    for (int i = 0; i < nsp; i++) {
        w->in[i] = in ? in[i] : -1;
        if (w->in[i] < 0) {
            w->out[i] = os ? os[cnt_os - nsp + i] : -1;
            continue;
        }
        int64_t opad = op ? op[i] : 0;
        int64_t full = w->stride[i] * (w->in[i] - 1) + opad + (w->kernel[i] - 1) * w->dilation[i] + 1;
        int64_t target = -1;
        if (os)
            target = os[cnt_os - nsp + i];
        else if (is_same(ap))
            target = w->in[i] * w->stride[i];
        if (target >= 0) {
            /* a negative total extends the output at the end, with zeros */
            int64_t total = full - target > 0 ? full - target : 0;
            int upper = !strcmp(ap, "SAME_UPPER");
            w->pad_begin[i] = upper ? total / 2 : total - total / 2;
            w->pad_end[i] = full - target - w->pad_begin[i];
            w->out[i] = target;
        } else {
            if (!strcmp(ap, "VALID"))
                w->pad_begin[i] = w->pad_end[i] = 0;
            w->out[i] = full - w->pad_begin[i] - w->pad_end[i];
        }
        if (w->out[i] < 1)
            return ql_fail(err, QL_ERR_SHAPE, "output extent %lld is not positive",
                           (long long)w->out[i]);
    }
    return QL_OK;
}

/* Validates shapes and attributes of a Conv/ConvTranspose for input x and
 * weight wt (either may have unknown dims); fills the window and channel
 * counts (M = output channels, -1 if unknown). */
/* Made at prepare: weights packed for the GEMM and direct kernels, and
 * conv_check's result for the static shapes (the attributes then need no
 * parsing per run; read-only after prepare, so executors on several
 * threads share it). */
typedef struct conv_state {
    int64_t M, K, G;  /* shape the packing was made for */
    const float *src; /* the weight data it was packed from */
    float *apack;     /* G groups of ql_pack_a_floats(M/G, K), or NULL */
    float *dpack;     /* for the direct kernel (NULL: packed per run) */
    int64_t dlayout;  /* ... in ql_conv_direct_layout's layout */
    bool memo;        /* conv_check's result below holds for these shapes */
    int memo_ndim;
    int64_t memo_x[2 + QL_MAX_SPATIAL], memo_w[2 + QL_MAX_SPATIAL]; /* x's batch extent aside */
    int64_t memo_b;   /* bias extent, or -1 for none */
    ql_window memo_win;
    int64_t memo_M;
} conv_state;

static bool memo_holds(const conv_state *s, const ql_tensor *x, const ql_tensor *wt,
                       const ql_tensor *b)
{
    if (!s || !s->memo || x->ndim != s->memo_ndim || wt->ndim != s->memo_ndim ||
        (b ? b->ndim != 1 || b->dims[0] != s->memo_b : s->memo_b != -1))
        return false;
    for (int i = 0; i < s->memo_ndim; i++)
        if ((i > 0 && x->dims[i] != s->memo_x[i]) || wt->dims[i] != s->memo_w[i])
            return false;
    return true;
}

static ql_status conv_check(const ql_node *n, const ql_tensor *x, const ql_tensor *wt,
                            const ql_tensor *b, ql_window *w, int64_t *M_out, ql_error *err)
{
    const conv_state *s = n->state;
    if (memo_holds(s, x, wt, b)) {
        *w = s->memo_win;
        *M_out = s->memo_M;
        return QL_OK;
    }
    int transpose = n->op == QL_OP_CONV_TRANSPOSE;
    if (wt->ndim < 0)
        return ql_fail(err, QL_ERR_SHAPE, "the weight's rank must be known");
    if (wt->ndim < 3 || wt->ndim > 2 + QL_MAX_SPATIAL)
        return ql_fail(err, QL_ERR_SHAPE, "the weight has rank %d (3 to %d supported)", wt->ndim,
                       2 + QL_MAX_SPATIAL);
    int nsp = wt->ndim - 2;
    if (x->ndim >= 0 && x->ndim != wt->ndim)
        return ql_fail(err, QL_ERR_SHAPE, "input rank %d does not match weight rank %d", x->ndim,
                       wt->ndim);
    int64_t in[QL_MAX_SPATIAL];
    for (int i = 0; i < nsp; i++)
        in[i] = x->ndim >= 0 ? x->dims[2 + i] : -1;
    ql_status st = ql_window_init(n, nsp, wt->dims + 2, transpose ? NULL : in, 0, w, err);
    if (st != QL_OK)
        return st;
    if (transpose && (st = convt_extents(n, w, in, err)) != QL_OK)
        return st;
    int64_t group = ql_attr_int(n, "group", 1);
    if (group < 1)
        return ql_fail(err, QL_ERR_ARG, "group must be positive (got %lld)", (long long)group);
    int64_t cin = x->ndim >= 0 ? x->dims[1] : -1;
    int64_t wc = transpose ? wt->dims[0] : (wt->dims[1] >= 0 ? wt->dims[1] * group : -1);
    int64_t M = transpose ? (wt->dims[1] >= 0 ? wt->dims[1] * group : -1) : wt->dims[0];
    if (cin >= 0 && cin % group)
        return ql_fail(err, QL_ERR_ARG, "group %lld does not divide the %lld input channels",
                       (long long)group, (long long)cin);
    if (!transpose && M >= 0 && M % group)
        return ql_fail(err, QL_ERR_ARG, "group %lld does not divide the %lld output channels",
                       (long long)group, (long long)M);
    if (cin >= 0 && wc >= 0 && cin != wc)
        return ql_fail(err, QL_ERR_SHAPE,
                       "input has %lld channels but the weight expects %lld (group %lld)",
                       (long long)cin, (long long)wc, (long long)group);
    if (b && b->ndim >= 0 && M >= 0 && (b->ndim != 1 || b->dims[0] != M))
        return ql_fail(err, QL_ERR_SHAPE, "bias must have shape [%lld]", (long long)M);
    *M_out = M;
    return QL_OK;
}

static ql_status conv_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_error *err)
{
    const ql_tensor *x = in[0], *wt = n->n_in > 1 ? in[1] : NULL, *b = n->n_in > 2 ? in[2] : NULL;
    if (!x || !wt)
        return ql_fail(err, QL_ERR_ARG, "needs an input and a weight");
    ql_window w;
    int64_t M;
    ql_status st = conv_check(n, x, wt, b, &w, &M, err);
    if (st != QL_OK)
        return st;
    out[0]->dtype = QL_F32;
    out[0]->ndim = wt->ndim;
    out[0]->dims[0] = x->ndim >= 0 ? x->dims[0] : -1;
    out[0]->dims[1] = M;
    for (int i = 0; i < w.nsp; i++)
        out[0]->dims[2 + i] = w.out[i];
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * prepare: validation and weight packing
 * ------------------------------------------------------------------------- */

static void conv_release(ql_node *n)
{
    conv_state *s = n->state;
    if (s) {
        ql_aligned_free(s->apack);
        ql_aligned_free(s->dpack);
    }
    free(s);
    n->state = NULL;
}

static void value_header(const ql_graph *g, int v, ql_tensor *t)
{
    memset(t, 0, sizeof *t);
    t->ndim = -1;
    if (v < 0)
        return;
    const ql_value *val = &g->values[v];
    t->dtype = val->dtype;
    t->ndim = val->ndim;
    if (val->ndim > 0)
        memcpy(t->dims, val->dims, (size_t)val->ndim * sizeof *t->dims);
}

static int is_depthwise(const conv_geom *g)
{
    return g->cg == 1 && g->G == g->C && g->G > 1 && g->nsp <= 2 && g->kvol <= DW_MAX_TAPS;
}

static ql_dconv direct_geom(const conv_geom *g)
{
    return (ql_dconv){g->N,    g->C,    g->M,    g->in[1], g->in[2], g->out[1], g->out[2], g->k[1],
                      g->k[2], g->s[1], g->s[2], g->d[1],  g->d[2],  g->pb[1], g->pb[2]};
}

static ql_status conv_prepare(ql_graph *g, ql_node *n, ql_error *err)
{
    if (n->n_in < 2 || n->in[0] < 0 || n->in[1] < 0)
        return ql_fail(err, QL_ERR_ARG, "needs an input and a weight");
    ql_tensor x, wt, b;
    value_header(g, n->in[0], &x);
    value_header(g, n->in[1], &wt);
    value_header(g, n->n_in > 2 ? n->in[2] : -1, &b);
    const ql_tensor *wc = g->values[n->in[1]].constant;
    if (wc)
        wt = *wc;
    ql_window w;
    int64_t M;
    const ql_tensor *bp = n->n_in > 2 && n->in[2] >= 0 ? &b : NULL;
    ql_status st = conv_check(n, &x, &wt, bp, &w, &M, err);
    if (st != QL_OK)
        return st;
    conv_state *s = calloc(1, sizeof *s);
    if (!s)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory preparing a convolution");
    n->state = s;
    /* the check's result, when every extent but the batch is known */
    bool known = x.ndim == wt.ndim && x.ndim >= 3 && (!bp || bp->ndim == 1);
    for (int i = 1; known && i < x.ndim; i++)
        known = x.dims[i] >= 0 && wt.dims[i] >= 0;
    if (known && wt.dims[0] >= 0 && (!bp || bp->dims[0] >= 0)) {
        s->memo = true;
        s->memo_ndim = x.ndim;
        memcpy(s->memo_x, x.dims, (size_t)x.ndim * sizeof *x.dims);
        memcpy(s->memo_w, wt.dims, (size_t)wt.ndim * sizeof *wt.dims);
        s->memo_b = bp ? bp->dims[0] : -1;
        s->memo_win = w;
        s->memo_M = M;
    }
    if (n->op != QL_OP_CONV || !wc || wc->dtype != QL_F32 || wt.dims[1] < 1 || M < 1)
        return QL_OK;
    int64_t G = ql_attr_int(n, "group", 1), mg = M / G, K = ql_numel(wt.ndim - 1, wt.dims + 1);
    conv_geom cg = {.nsp = w.nsp, .C = wt.dims[1] * G, .G = G, .cg = wt.dims[1], .kvol = K / wt.dims[1]};
    if (is_depthwise(&cg))
        return QL_OK; /* the direct kernel reads the weights as they are */
    int64_t per = ql_pack_a_floats(mg, K);
    s->apack = ql_aligned_alloc((size_t)(per * G) * sizeof(float));
    if (!s->apack)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory packing the weights");
    s->M = M, s->K = K, s->G = G;
    s->src = wc->data;
    for (int64_t grp = 0; grp < G; grp++)
        ql_pack_a((const float *)wc->data + grp * mg * K, K, mg, K, s->apack + grp * per);
    /* the direct kernel's packing depends on the output width: made here
     * when the input's spatial extents are known */
    int spatial = x.ndim == w.nsp + 2;
    for (int i = 0; spatial && i < w.nsp; i++)
        spatial = x.dims[2 + i] > 0;
    if (spatial && G == 1) {
        conv_geom gg;
        geom_fill(&gg, &w, 1, cg.C, M, G);
        ql_dconv dc = direct_geom(&gg);
        if (gg.nsp <= 2 && gg.out_sz > 0 && ql_conv_direct_fits(&dc)) {
            s->dpack = ql_aligned_alloc((size_t)ql_conv_direct_packed_floats(&dc) * sizeof(float));
            if (!s->dpack)
                return ql_fail(err, QL_ERR_NOMEM, "out of memory packing the weights");
            ql_conv_direct_pack(&dc, wc->data, s->dpack);
            s->dlayout = ql_conv_direct_layout(&dc);
        }
    }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Depthwise: one (image, output channel) plane per task; out[n'] is a sum
 * of taps read contiguously from the phase planes
 * ------------------------------------------------------------------------- */
typedef struct dw_job {
    conv_geom g;
    ql_act act;
    const float *x, *w, *bias;
    const float *add; /* fused residual add, or NULL */
    float *y;
    ql_phase ph;
    int64_t ncols, ntaps, toff[DW_MAX_TAPS];
    float *scratch;
    int64_t per_thread;
    int fast, stream;
} dw_job;

/* out[0, n) = b + sum_t w[t] * p[toff[t] + i], 64 outputs per step: eight
 * independent accumulators keep both FMA pipes busy; n is a multiple of 64. */
QL_INLINE void dw_body(float *restrict out, int64_t n, const float *restrict p,
                       const int64_t *toff, const float *w, int64_t ntaps, float b, ql_act act)
{
    for (int64_t i = 0; i < n; i += 64) {
        ql_v8 a0 = QL_V8(b), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t t = 0; t < ntaps; t++) {
            const float *q = p + toff[t] + i;
            ql_v8 wv = QL_V8(w[t]);
            a0 += wv * QL_LD8(q), a1 += wv * QL_LD8(q + 8);
            a2 += wv * QL_LD8(q + 16), a3 += wv * QL_LD8(q + 24);
            a4 += wv * QL_LD8(q + 32), a5 += wv * QL_LD8(q + 40);
            a6 += wv * QL_LD8(q + 48), a7 += wv * QL_LD8(q + 56);
        }
        if (act.on) {
            ql_v8 lo = QL_V8(act.lo), hi = QL_V8(act.hi);
            a0 = QL_V8_CLAMP(a0, lo, hi), a1 = QL_V8_CLAMP(a1, lo, hi);
            a2 = QL_V8_CLAMP(a2, lo, hi), a3 = QL_V8_CLAMP(a3, lo, hi);
            a4 = QL_V8_CLAMP(a4, lo, hi), a5 = QL_V8_CLAMP(a5, lo, hi);
            a6 = QL_V8_CLAMP(a6, lo, hi), a7 = QL_V8_CLAMP(a7, lo, hi);
        }
        QL_ST8(out + i, a0), QL_ST8(out + i + 8, a1), QL_ST8(out + i + 16, a2);
        QL_ST8(out + i + 24, a3), QL_ST8(out + i + 32, a4), QL_ST8(out + i + 40, a5);
        QL_ST8(out + i + 48, a6), QL_ST8(out + i + 56, a7);
    }
}

QL_TARGET_FAST static void dw_fast(float *out, int64_t n, const float *p, const int64_t *toff,
                                   const float *w, int64_t ntaps, float b, ql_act act)
{
    dw_body(out, n, p, toff, w, ntaps, b, act);
}

static void dw_portable(float *out, int64_t n, const float *p, const int64_t *toff, const float *w,
                        int64_t ntaps, float b, ql_act act)
{
    dw_body(out, n, p, toff, w, ntaps, b, act);
}

/* memcpy, with non-temporal stores where dst is 16-byte aligned. */
QL_INLINE void stream_copy(float *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    if (((uintptr_t)dst & 15) == 0)
        for (; i + 8 <= n; i += 8)
            QL_ST8_NT(dst + i, QL_LD8(src + i));
    memcpy(dst + i, src + i, (size_t)(n - i) * sizeof *dst);
}

/* Tasks [begin, end): built for AVX2 and portably (dw_tasks), so that the
 * copies out move 32 bytes at a time. */
QL_INLINE void dw_tasks_body(const dw_job *j, int64_t begin, int64_t end, int tid)
{
    const conv_geom *g = &j->g;
    float *pl = j->scratch + (int64_t)tid * j->per_thread;
    float *ob = pl + align16(j->ph.size + 64);
    int64_t mult = g->M / g->C, OW = g->out[2], OHW = g->out_sz, wq = j->ph.wq;
    int64_t n64 = (j->ncols + 63) / 64 * 64;
    memset(pl + j->ph.size, 0, 64 * sizeof *pl);
    for (int64_t t = begin; t < end; t++) {
        int64_t img = t / g->M, m = t % g->M, c = m / mult;
        ql_phase_build(&j->ph, j->x + (img * g->C + c) * g->in_sz, 0.0f, pl);
        float b = j->bias ? j->bias[m] : 0.0f;
        const float *w = j->w + m * j->ntaps;
        ql_act act = j->add ? (ql_act){0} : j->act; /* with an add, the clamp follows it */
        if (j->fast)
            dw_fast(ob, n64, pl, j->toff, w, j->ntaps, b, act);
        else
            dw_portable(ob, n64, pl, j->toff, w, j->ntaps, b, act);
        float *yp = j->y + (img * g->M + m) * OHW;
        if (j->add) {
            const float *ap = j->add + (img * g->M + m) * OHW;
            for (int64_t oh = 0; oh < g->out[1]; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    float v = ob[oh * wq + ow] + ap[oh * OW + ow];
                    if (j->act.on) {
                        v = v < j->act.lo ? j->act.lo : v; /* NaN passes through */
                        v = v > j->act.hi ? j->act.hi : v;
                    }
                    yp[oh * OW + ow] = v;
                }
        } else if (j->stream)
            for (int64_t oh = 0; oh < g->out[1]; oh++)
                stream_copy(yp + oh * OW, ob + oh * wq, OW);
        else if (wq == OW)
            memcpy(yp, ob, (size_t)OHW * sizeof *yp);
        else
            for (int64_t oh = 0; oh < g->out[1]; oh++)
                copy_floats(yp + oh * OW, ob + oh * wq, OW);
    }
    if (j->stream)
        ql_stream_fence();
}

QL_TARGET_FAST static void dw_tasks_fast(const dw_job *j, int64_t begin, int64_t end, int tid)
{
    dw_tasks_body(j, begin, end, tid);
}

static void dw_tasks_port(const dw_job *j, int64_t begin, int64_t end, int tid)
{
    dw_tasks_body(j, begin, end, tid);
}

static void dw_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const dw_job *j = arg;
    (j->fast ? dw_tasks_fast : dw_tasks_port)(j, begin, end, tid);
}

static ql_status conv_depthwise(const conv_geom *g, const float *x, const float *w,
                                const float *bias, const float *add, float *y, const ql_act *act,
                                ql_exec_ctx *ctx, ql_error *err)
{
    dw_job j = {.g = *g, .act = *act, .x = x, .w = w, .bias = bias, .add = add, .y = y,
                .fast = ql_cpu_fast()};
    ql_phase_plan(&j.ph, g->in[1], g->in[2], g->s[1], g->s[2], g->pb[1], g->pb[2], g->out[1],
                  g->out[2], (g->k[1] - 1) * g->d[1] + 1, (g->k[2] - 1) * g->d[2] + 1);
    j.ncols = (g->out[1] - 1) * j.ph.wq + g->out[2];
    j.ntaps = g->kvol;
    j.stream = g->N * g->M * g->out_sz * (int64_t)sizeof(float) > QL_STREAM_BYTES;
    for (int64_t t = 0; t < j.ntaps; t++)
        j.toff[t] = ql_phase_off(&j.ph, t / g->k[2] * g->d[1], t % g->k[2] * g->d[2]);
    j.per_thread = (int64_t)(align16(j.ph.size + 64) + align16((j.ncols + 63) / 64 * 64));
    int threads = ql_ctx_threads(ctx);
    j.scratch = ql_ctx_scratch(ctx, (size_t)j.per_thread * (size_t)threads * sizeof(float));
    if (!j.scratch)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for depthwise convolution scratch");
    ql_parallel_for(ctx, g->N * g->M, 1, dw_tasks, &j);
    return QL_OK;
}

static ql_status conv_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0], *wt = in[1], *b = n->n_in > 2 ? in[2] : NULL;
    if (x->dtype != QL_F32 || wt->dtype != QL_F32 || (b && b->dtype != QL_F32))
        return ql_fail(err, QL_ERR_UNSUPPORTED, "Conv runs on f32 tensors only");
    ql_window w;
    int64_t M;
    ql_status st = conv_check(n, x, wt, b, &w, &M, err);
    if (st != QL_OK)
        return st;
    /* the executor may ask for a following Relu/Clip to be applied here */
    ql_act act = {ctx->post_clamp, ctx->post_lo, ctx->post_hi};
    conv_geom g;
    geom_fill(&g, &w, x->dims[0], x->dims[1], M, ql_attr_int(n, "group", 1));
    if (g.N == 0 || g.M == 0 || g.out_sz == 0)
        return QL_OK;
    ql_dconv dc = direct_geom(&g);
    if (is_depthwise(&g) && ql_conv_dw8_fits(&dc))
        return ql_conv_dw8(&dc, x->data, wt->data, b ? b->data : NULL, ctx->post_add,
                           out[0]->data, &act, ctx, err);
    if (is_depthwise(&g))
        return conv_depthwise(&g, x->data, wt->data, b ? b->data : NULL, ctx->post_add,
                              out[0]->data, &act, ctx, err);
    if (g.G == 1 && g.nsp <= 2 && ql_conv_direct_fits(&dc)) {
        /* the packing made at prepare time only for the weights it came from */
        const conv_state *s = n->state;
        const float *dpack = s && s->dpack && s->src == wt->data &&
                                     s->dlayout == ql_conv_direct_layout(&dc)
                                 ? s->dpack
                                 : NULL;
        return ql_conv_direct(&dc, x->data, wt->data, dpack, b ? b->data : NULL, ctx->post_add,
                              out[0]->data, &act, ctx, err);
    }
    /* the prepared packing only for the weights it was made from: a
     * fake-quant plan runs the same node with replacement weights */
    const conv_state *s = n->state;
    const float *apack =
        s && s->M == g.M && s->K == g.K && s->G == g.G && s->src == wt->data ? s->apack : NULL;
    return ql_conv_gemm(&g, apack, x->data, wt->data, b ? b->data : NULL, ctx->post_add,
                        out[0]->data, &act, ctx, err);
}

/* ---------------------------------------------------------------------------
 * ConvTranspose: per (image, group), col = W_g^T x_g by sgemm, then each
 * column is scatter-added into the output. One task per (image, group)
 * keeps every BLAS call the same whatever the thread count.
 * ------------------------------------------------------------------------- */
typedef struct convt_job {
    conv_geom g;
    const float *x, *w, *bias;
    float *y;
    float *scratch;
    int64_t per_thread;
} convt_job;

static void col2im_add(const conv_geom *g, const float *col, float *y)
{
    int64_t OD = g->out[0], OH = g->out[1], OW = g->out[2];
    for (int64_t m = 0; m < g->mg; m++)
        for (int64_t r = 0; r < g->kvol; r++) {
            int64_t ka = r / (g->k[1] * g->k[2]), kb = r / g->k[2] % g->k[1], ke = r % g->k[2];
            const float *src = col + (m * g->kvol + r) * g->in_sz;
            float *dst = y + m * g->out_sz;
            for (int64_t id = 0; id < g->in[0]; id++) {
                int64_t od = id * g->s[0] - g->pb[0] + ka * g->d[0];
                if (od < 0 || od >= OD)
                    continue;
                for (int64_t ih = 0; ih < g->in[1]; ih++) {
                    int64_t oh = ih * g->s[1] - g->pb[1] + kb * g->d[1];
                    if (oh < 0 || oh >= OH)
                        continue;
                    const float *s = src + (id * g->in[1] + ih) * g->in[2];
                    float *d = dst + (od * OH + oh) * OW;
                    for (int64_t iw = 0; iw < g->in[2]; iw++) {
                        int64_t ow = iw * g->s[2] - g->pb[2] + ke * g->d[2];
                        if (ow >= 0 && ow < OW)
                            d[ow] += s[iw];
                    }
                }
            }
        }
}

static void convt_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const convt_job *j = arg;
    const conv_geom *g = &j->g;
    float *col = j->scratch + (int64_t)tid * j->per_thread;
    int64_t rows = g->mg * g->kvol;
    for (int64_t t = begin; t < end; t++) {
        int64_t img = t / g->G, grp = t % g->G;
        float *y = j->y + (img * g->M + grp * g->mg) * g->out_sz;
        for (int64_t m = 0; m < g->mg; m++)
            fill_floats(y + m * g->out_sz, g->out_sz, j->bias ? j->bias[grp * g->mg + m] : 0.0f);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)g->in_sz, (int)g->cg,
                    1.0f, j->w + grp * g->cg * rows, (int)rows,
                    j->x + (img * g->C + grp * g->cg) * g->in_sz, (int)g->in_sz, 0.0f, col,
                    (int)g->in_sz);
        col2im_add(g, col, y);
    }
}

static ql_status convt_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                           ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *x = in[0], *wt = in[1], *b = n->n_in > 2 ? in[2] : NULL;
    if (x->dtype != QL_F32 || wt->dtype != QL_F32 || (b && b->dtype != QL_F32))
        return ql_fail(err, QL_ERR_UNSUPPORTED, "ConvTranspose runs on f32 tensors only");
    ql_window w;
    int64_t M;
    ql_status st = conv_check(n, x, wt, b, &w, &M, err);
    if (st != QL_OK)
        return st;
    convt_job j = {.x = x->data, .w = wt->data, .bias = b ? b->data : NULL, .y = out[0]->data};
    geom_fill(&j.g, &w, x->dims[0], x->dims[1], M, ql_attr_int(n, "group", 1));
    if (j.g.N == 0 || j.g.M == 0 || j.g.out_sz == 0)
        return QL_OK;
    int threads = ql_ctx_threads(ctx);
    j.per_thread = (int64_t)align16(j.g.mg * j.g.kvol * j.g.in_sz);
    j.scratch = ql_ctx_scratch(ctx, (size_t)j.per_thread * (size_t)threads * sizeof(float));
    if (!j.scratch)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for ConvTranspose scratch");
    ql_parallel_for(ctx, j.g.N * j.g.G, 1, convt_tasks, &j);
    return QL_OK;
}

const ql_op_def ql_op_def_CONV = {
    .name = "Conv", .since_version = 1, .infer = conv_infer, .prepare = conv_prepare,
    .run_f32 = conv_run, .release = conv_release, .fuses_clamp = true, QL_IO(2, 3, 1, 1),
};
const ql_op_def ql_op_def_CONV_TRANSPOSE = {
    .name = "ConvTranspose", .since_version = 1, .infer = conv_infer, .prepare = conv_prepare,
    .run_f32 = convt_run, .release = conv_release, QL_IO(2, 3, 1, 1),
};
