/* Conv and ConvTranspose.
 *
 * Conv runs on the packed micro-kernel (kernels.h): weights are packed once
 * by prepare() (per run when the weight is not a constant), B is packed per
 * k-block into 16-column tiles. B is read in one of two ways:
 *  - phase mode (1-D/2-D): the input is copied into phase planes (the
 *    padded image split by stride) where every kernel tap of a run of
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

#include "kernels.h"
#include "../pool.h"

#define CONV_MC 96   /* rows per cache block of packed weights (L2) */
#define CONV_NC 128  /* columns per task block */
#define QL_PLANES_BYTES ((int64_t)8 << 20) /* larger phase planes are built per block */
#define DW_MAX_TAPS 64
#define CONV_PLANES_L2 ((int64_t)256 << 10) /* larger batch plane sets are built per image */

/* ---------------------------------------------------------------------------
 * Phase planes (kernels.h)
 * ------------------------------------------------------------------------- */
void ql_phase_plan(ql_phase *p, int64_t h, int64_t w, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int64_t oh, int64_t ow, int64_t eh, int64_t ew)
{
    p->h = h, p->w = w, p->sh = sh, p->sw = sw, p->ph = ph, p->pw = pw;
    p->hq = oh + (eh - 1) / sh;
    p->wq = ow + (ew - 1) / sw;
    p->size = sh * sw * p->hq * p->wq;
}

static void fill_floats(float *d, int64_t n, float v)
{
    if (v == 0.0f && !signbit(v)) {
        memset(d, 0, (size_t)(n > 0 ? n : 0) * sizeof *d);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        d[i] = v;
}

/* Copies n floats (d and s do not overlap); short runs (rows of small
 * images) are common, so no library call: the empty asm keeps GCC from
 * turning the loops back into memcpy. Inlined into both kernel builds. */
QL_INLINE void copy_floats(float *restrict d, const float *restrict s, int64_t n)
{
    int64_t i = 0;
    if (n >= 8) {
        for (; i + 8 <= n; i += 8) {
            __asm__("" : "+r"(i));
            QL_ST8(d + i, QL_LD8(s + i));
        }
        if (i < n) /* the last 8, overlapping what was copied */
            QL_ST8(d + n - 8, QL_LD8(s + n - 8));
        return;
    }
    for (; i < n; i++) {
        __asm__("" : "+r"(i));
        d[i] = s[i];
    }
}

/* Splits row[0, n) into even and odd elements: ev[t] = row[2t],
 * od[t] = row[2t+1], sixteen inputs per step. */
QL_INLINE void deinterleave_body(const float *restrict row, int64_t n, float *restrict ev,
                                 float *restrict od)
{
    static const ql_v8i even = {0, 2, 4, 6, 8, 10, 12, 14}, odd = {1, 3, 5, 7, 9, 11, 13, 15};
    int64_t t = 0;
    for (; 2 * t + 16 <= n; t += 8) {
        ql_v8 v0 = QL_LD8(row + 2 * t), v1 = QL_LD8(row + 2 * t + 8);
        QL_ST8(ev + t, __builtin_shuffle(v0, v1, even));
        QL_ST8(od + t, __builtin_shuffle(v0, v1, odd));
    }
    for (; 2 * t < n; t++) {
        ev[t] = row[2 * t];
        if (2 * t + 1 < n)
            od[t] = row[2 * t + 1];
    }
}

/* The body of ql_phase_build, compiled for AVX2 and portably. */
QL_INLINE void phase_build_body(const ql_phase *p, const float *x, float fill, float *dst,
                                 int64_t i0, int64_t nrows)
{
    int64_t plane = nrows * p->wq;
    /* per column phase b: plane columns [j0, j1) read image columns
     * j*sw + b - pw, which lie inside [0, w) */
    int64_t j0s[8], j1s[8];
    for (int64_t b = 0; b < p->sw && b < 8; b++) {
        int64_t j0 = p->pw > b ? (p->pw - b + p->sw - 1) / p->sw : 0;
        int64_t j1 = p->w + p->pw - b > 0 ? (p->w - 1 + p->pw - b) / p->sw + 1 : 0;
        j0 = j0 < p->wq ? j0 : p->wq;
        j1 = j1 < p->wq ? j1 : p->wq;
        j0s[b] = j0;
        j1s[b] = j1 > j0 ? j1 : j0;
    }
    /* stride 2 with the whole row inside the planes: one pass splits it */
    int split2 = p->sw == 2 && (p->w + p->pw + 1) / 2 <= p->wq;
    /* image rows in order (plane row i of phase a reads row i*sh + a):
     * a pass per phase would read every sh-th row and leave the
     * prefetchers a strided pattern */
    for (int64_t i = i0; i < i0 + nrows; i++)
        for (int64_t a = 0; a < p->sh; a++) {
            int64_t ih = i * p->sh + a - p->ph;
            int inside = ih >= 0 && ih < p->h;
            const float *row = inside ? x + ih * p->w : x;
            float *out0 = dst + a * p->sw * plane + (i - i0) * p->wq;
            if (!inside) {
                for (int64_t b = 0; b < p->sw; b++)
                    fill_floats(out0 + b * plane, p->wq, fill);
                continue;
            }
            if (split2) {
                /* image column iw is padded column iw + pw: phase (iw+pw)%2,
                 * plane column (iw+pw)/2 */
                float *pe = out0 + (p->pw & 1) * plane, *po = out0 + ((p->pw + 1) & 1) * plane;
                for (int64_t b = 0; b < 2; b++) {
                    float *o = out0 + b * plane;
                    for (int64_t j = 0; j < j0s[b]; j++)
                        o[j] = fill;
                    for (int64_t j = j1s[b]; j < p->wq; j++)
                        o[j] = fill;
                }
                deinterleave_body(row, p->w, pe + p->pw / 2, po + (p->pw + 1) / 2);
                continue;
            }
            for (int64_t b = 0; b < p->sw; b++) {
                float *out = out0 + b * plane;
                int64_t j0, j1;
                if (b < 8) {
                    j0 = j0s[b], j1 = j1s[b];
                } else {
                    j0 = p->pw > b ? (p->pw - b + p->sw - 1) / p->sw : 0;
                    j1 = p->w + p->pw - b > 0 ? (p->w - 1 + p->pw - b) / p->sw + 1 : 0;
                    j0 = j0 < p->wq ? j0 : p->wq;
                    j1 = j1 < p->wq ? j1 : p->wq;
                    j1 = j1 > j0 ? j1 : j0;
                }
                const float *src = row + (j0 * p->sw + b - p->pw);
                for (int64_t j = 0; j < j0; j++) /* pads are short: no call */
                    out[j] = fill;
                if (p->sw == 1)
                    copy_floats(out + j0, src, j1 - j0);
                else
                    for (int64_t j = j0; j < j1; j++)
                        out[j] = src[(j - j0) * p->sw];
                for (int64_t j = j1; j < p->wq; j++)
                    out[j] = fill;
            }
        }
}

QL_TARGET_FAST static void phase_build_fast(const ql_phase *p, const float *x, float fill,
                                            float *dst, int64_t i0, int64_t nrows)
{
    phase_build_body(p, x, fill, dst, i0, nrows);
}

static void phase_build_portable(const ql_phase *p, const float *x, float fill, float *dst,
                                 int64_t i0, int64_t nrows)
{
    phase_build_body(p, x, fill, dst, i0, nrows);
}

void ql_phase_rows(const ql_phase *p, const float *x, float fill, float *dst, int64_t i0,
                   int64_t nrows)
{
    if (ql_cpu_fast())
        phase_build_fast(p, x, fill, dst, i0, nrows);
    else
        phase_build_portable(p, x, fill, dst, i0, nrows);
}

void ql_phase_build(const ql_phase *p, const float *x, float fill, float *dst)
{
    ql_phase_rows(p, x, fill, dst, 0, p->hq);
}

/* ---------------------------------------------------------------------------
 * Geometry, normalised to three spatial dims (D, H, W); 1-D and 2-D use
 * unit leading dims
 * ------------------------------------------------------------------------- */
typedef struct conv_geom {
    int nsp;
    int64_t N, C, M, G, cg, mg, kvol, K; /* K = cg * kvol */
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3];
    int64_t in_sz, out_sz;
} conv_geom;

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
 * GEMM driver
 * ------------------------------------------------------------------------- */
enum { MODE_PHASE, MODE_IM2COL };

typedef struct conv_job {
    conv_geom g;
    ql_ukr_fn ukr;
    ql_act act;
    const float *x, *bias;
    const float *add;     /* fused residual add (same shape as y), or NULL */
    float *y;
    int imgplanes;        /* phase mode: each thread builds the planes of one image at a time */
    int fast;             /* AVX2+FMA build of the block code */
    ql_ukr_fn ukr8;       /* for a last tile of at most 8 columns */
    const float *apack;
    int64_t apack_stride; /* floats per group */
    int mode;
    int stream;           /* output far larger than the caches: non-temporal stores */
    int direct_x;         /* phase mode reading the input itself (1x1, stride 1, no pads) */
    int use_planes;       /* 1-D/2-D: B comes from phase planes (im2col compacts them) */
    int local;            /* phase mode: each block builds the plane rows it reads */
    int64_t lrows;        /* local planes: rows per plane */
    ql_phase ph;
    const float *planes;  /* plane sets [N][C][chan_stride] (or x itself) */
    int64_t chan_stride, img_stride;
    int64_t *koff;        /* K offsets of the taps within a group's plane sets */
    int64_t ncols;        /* columns per unit: phase: per image; im2col: N*OHW */
    int64_t nc, n_jc, msplit, mrange, kc, ldb;
    float *scratch;
    int64_t per_thread, bbuf_floats, bpack_floats, cbuf_floats, kloc_floats, seg_floats;
} conv_job;

/* A run of im2col columns inside one output row: where it goes in the
 * block and where its window origin is. Built once per block so the
 * gathers over k do no divisions. */
typedef struct im2col_seg {
    int64_t off, len;   /* column offset in the block, length */
    int64_t base;       /* planes: offset of the first output's taps; else image offset in x */
    int64_t d0, h0, w0; /* no planes: window origin o*s - pad per axis */
} im2col_seg;

QL_INLINE int64_t im2col_segs(const conv_job *j, int64_t n0, int64_t n1, im2col_seg *seg)
{
    const conv_geom *g = &j->g;
    int64_t OHW = g->out_sz, OHOW = g->out[1] * g->out[2], OW = g->out[2], ns = 0;
    for (int64_t q = n0; q < n1; ns++) {
        int64_t img = q / OHW, p = q % OHW;
        int64_t od = p / OHOW, oh = p / OW % g->out[1], ow = p % OW;
        int64_t len = OW - ow < n1 - q ? OW - ow : n1 - q;
        seg[ns] = (im2col_seg){.off = q - n0, .len = len};
        if (j->use_planes) {
            seg[ns].base = img * j->img_stride + oh * j->ph.wq + ow;
        } else {
            seg[ns].base = img * g->C * g->in_sz;
            seg[ns].d0 = od * g->s[0] - g->pb[0];
            seg[ns].h0 = oh * g->s[1] - g->pb[1];
            seg[ns].w0 = ow * g->s[2] - g->pb[2];
        }
        q += len;
    }
    return ns;
}

/* Rows [pc, pc+kc) of the im2col matrix from the phase planes of group
 * grp: every segment is a contiguous run there, copied eight at a time
 * (a copy may run past its segment; the next one, or the padding, is
 * written after it). */
QL_INLINE void im2col_planes(const conv_job *j, int64_t grp, int64_t pc, int64_t kc,
                          const im2col_seg *seg, int64_t nseg, float *dst)
{
    const float *pg = j->planes + grp * j->g.cg * j->chan_stride;
    for (int64_t kk = 0; kk < kc; kk++) {
        const float *src = pg + j->koff[pc + kk];
        float *drow = dst + kk * j->ldb;
        for (int64_t i = 0; i < nseg; i++) {
            const float *sp = src + seg[i].base;
            float *o = drow + seg[i].off;
            for (int64_t t = 0; t < seg[i].len; t += 8)
                QL_ST8(o + t, QL_LD8(sp + t));
        }
    }
}

/* Rows [pc, pc+kc) of the im2col matrix of group grp gathered from x with
 * bounds checks (3-D convolutions). */
QL_INLINE void im2col_gather(const conv_job *j, int64_t grp, int64_t pc, int64_t kc,
                          const im2col_seg *seg, int64_t nseg, float *dst)
{
    const conv_geom *g = &j->g;
    int64_t IW = g->in[2], IHW = g->in[1] * g->in[2], sw = g->s[2];
    for (int64_t kk = 0; kk < kc; kk++) {
        int64_t k = pc + kk, c = k / g->kvol, r = k % g->kvol;
        int64_t ka = r / (g->k[1] * g->k[2]), kb = r / g->k[2] % g->k[1], ke = r % g->k[2];
        int64_t dd = ka * g->d[0], dh = kb * g->d[1], dw = ke * g->d[2];
        const float *xc = j->x + (grp * g->cg + c) * g->in_sz;
        float *drow = dst + kk * j->ldb;
        for (int64_t i = 0; i < nseg; i++) {
            const im2col_seg *sg = &seg[i];
            float *o = drow + sg->off;
            int64_t len = sg->len, id = sg->d0 + dd, ih = sg->h0 + dh, iw0 = sg->w0 + dw;
            if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1]) {
                memset(o, 0, (size_t)len * sizeof *o);
                continue;
            }
            const float *row = xc + sg->base + id * IHW + ih * IW;
            for (int64_t t = 0; t < len; t++) {
                int64_t iw = iw0 + t * sw;
                o[t] = iw >= 0 && iw < IW ? row[iw] : 0.0f;
            }
        }
    }
}

/* Stores a finished run of outputs at y + yoff: copied, or with the fused
 * residual add (then the clamp) applied on the way. */
QL_INLINE void store_run(const conv_job *j, int64_t yoff, const float *src, int64_t len)
{
    float *dst = j->y + yoff;
    if (!j->add) {
        copy_floats(dst, src, len);
        return;
    }
    const float *ad = j->add + yoff;
    int64_t i = 0;
    ql_v8 lo = QL_V8(j->act.lo), hi = QL_V8(j->act.hi);
    for (; i + 8 <= len; i += 8) {
        ql_v8 v = QL_LD8(src + i) + QL_LD8(ad + i);
        QL_ST8(dst + i, j->act.on ? QL_V8_CLAMP(v, lo, hi) : v);
    }
    for (; i < len; i++) {
        float v = src[i] + ad[i];
        if (j->act.on) {
            v = v < j->act.lo ? j->act.lo : v; /* NaN passes through */
            v = v > j->act.hi ? j->act.hi : v;
        }
        dst[i] = v;
    }
}

/* Copies rows of a column block computed in cbuf (row stride nc) to y,
 * dropping the columns that are not outputs. */
QL_INLINE void copy_out(const conv_job *j, const float *cbuf, int64_t img, int64_t mrow0, int64_t rows,
                     int64_t n0, int64_t n1)
{
    const conv_geom *g = &j->g;
    int64_t OHW = g->out_sz, OW = g->out[2];
    for (int64_t r = 0; r < rows; r++) {
        const float *crow = cbuf + r * j->nc;
        if (j->mode == MODE_PHASE) {
            int64_t yrow = (img * g->M + mrow0 + r) * OHW;
            int64_t wq = j->ph.wq;
            for (int64_t q = n0; q < n1;) {
                int64_t oh = q / wq, ow = q % wq;
                if (ow >= OW) {
                    q = (oh + 1) * wq;
                    continue;
                }
                int64_t len = OW - ow < n1 - q ? OW - ow : n1 - q;
                store_run(j, yrow + oh * OW + ow, crow + (q - n0), len);
                q += len;
            }
        } else {
            for (int64_t q = n0; q < n1;) {
                int64_t im = q / OHW, p = q % OHW, len = OHW - p < n1 - q ? OHW - p : n1 - q;
                store_run(j, (im * g->M + mrow0 + r) * OHW + p, crow + (q - n0), len);
                q += len;
            }
        }
    }
}
/* Packs columns [0, width) of B rows src + koff[kk] (kk < kc) into tiles
 * of 16 columns, k-major (dst[jr][kk][16]), zero-filling past width, so
 * the micro-kernel reads aligned, contiguous B. A last tile of at most 8
 * columns is packed 8 wide, for the narrow kernel. */
QL_INLINE void pack_b(float *restrict dst, const float *src, const int64_t *koff, int64_t kc,
                   int64_t width, int64_t ahead)
{
    int64_t full = width / QL_NR, rem = width % QL_NR, tstride = kc * QL_NR;
    for (int64_t kk = 0; kk < kc; kk++) {
        const float *s = src + koff[kk];
        float *d = dst + kk * QL_NR;
        /* B rows are many separate streams, too many for the hardware
         * prefetcher: ask for the next block's part of this row */
        for (int64_t l = 0; l < ahead; l += 16)
            __builtin_prefetch(s + width + l);
        for (int64_t jr = 0; jr < full; jr++) {
            QL_ST8(d + jr * tstride, QL_LD8(s + jr * QL_NR));
            QL_ST8(d + jr * tstride + 8, QL_LD8(s + jr * QL_NR + 8));
        }
        if (rem) {
            int64_t tw = rem <= 8 ? 8 : QL_NR;
            float *dt = dst + full * tstride + kk * tw;
            const float *st = s + full * QL_NR;
            for (int64_t i = 0; i < rem; i++)
                dt[i] = st[i];
            for (int64_t i = rem; i < tw; i++)
                dt[i] = 0.0f;
        }
    }
}

/* One task's block: built for AVX2 and portably (below), like the kernels,
 * so that the packing and copies move 32 bytes at a time. */
QL_INLINE void conv_block_body(const conv_job *j, int64_t t, int tid)
{
    const conv_geom *g = &j->g;
    float *bbuf = j->scratch + (int64_t)tid * j->per_thread;
    float *bpack = bbuf + j->bbuf_floats;
    float *cbuf = bpack + j->bpack_floats;
    int64_t *kloc = (int64_t *)(cbuf + j->cbuf_floats);
    im2col_seg *seg = (im2col_seg *)(cbuf + j->cbuf_floats + j->kloc_floats);
    float *lp = cbuf + j->cbuf_floats + j->kloc_floats + j->seg_floats;
    int64_t s = t % j->msplit, u = t / j->msplit;
    int64_t jc = u % j->n_jc;
    u /= j->n_jc;
    int64_t grp = u % g->G, img = u / g->G;
    int64_t m0 = s * j->mrange, m1 = m0 + j->mrange < g->mg ? m0 + j->mrange : g->mg;
    int64_t n0 = jc * j->nc, n1 = n0 + j->nc < j->ncols ? n0 + j->nc : j->ncols;
    int64_t width = n1 - n0, ntiles = (width + QL_NR - 1) / QL_NR, OHW = g->out_sz;
    if (m0 >= m1)
        return;

    /* where the tiles go: straight into y when the block's columns are
     * contiguous there, else into cbuf and copied out at the end */
    int direct;
    float *cbase;
    if (j->mode == MODE_PHASE) {
        direct = j->ph.wq == g->out[2];
        cbase = j->y + (img * g->M + grp * g->mg + m0) * OHW + n0;
    } else {
        int64_t i0 = n0 / OHW;
        direct = (n1 - 1) / OHW == i0;
        cbase = j->y + (i0 * g->M + grp * g->mg + m0) * OHW + (n0 - i0 * OHW);
    }
    int64_t ldc = OHW;
    if (!direct)
        cbase = cbuf, ldc = j->nc;

    const float *abase = j->apack + grp * j->apack_stride;
    const float *bias = j->bias ? j->bias + grp * g->mg + m0 : NULL;
    const float *bsrc = bbuf;
    const int64_t *koff = kloc;
    int64_t nseg = 0;
    if (j->mode == MODE_PHASE && j->local) {
        /* the plane rows this block reads, built here so they are still in
         * cache when packed (no pass over the whole batch first) */
        int64_t wq = j->ph.wq, r0 = n0 / wq;
        const float *xg = j->x + (img * g->C + grp * g->cg) * g->in_sz;
        for (int64_t c = 0; c < g->cg; c++)
            ql_phase_rows(&j->ph, xg + c * g->in_sz, 0.0f, lp + c * j->chan_stride, r0, j->lrows);
        bsrc = lp + (n0 - r0 * wq);
    } else if (j->mode == MODE_PHASE) {
        bsrc = (j->imgplanes ? lp : j->planes + img * j->img_stride) +
               grp * g->cg * j->chan_stride + n0;
    } else {
        for (int64_t kk = 0; kk < j->kc; kk++)
            kloc[kk] = kk * j->ldb;
        nseg = im2col_segs(j, n0, n1, seg);
    }

    /* the fused add goes into the kernel when it stores straight into y,
     * else into copy_out (and the clamp with it: it comes after the add) */
    const float *addbase = j->add && direct ? j->add + (cbase - j->y) : NULL;
    int fin = (j->act.on && (direct || !j->add) ? QL_UKR_CLAMP : 0) | (addbase ? QL_UKR_ADD : 0);
    for (int64_t pc = 0; pc < g->K; pc += j->kc) {
        int64_t kc = g->K - pc < j->kc ? g->K - pc : j->kc;
        int flags = (pc ? QL_UKR_ACCUM : 0) | (pc + kc == g->K ? fin : 0);
        if (pc + kc == g->K && direct && j->stream)
            flags |= QL_UKR_STREAM;
        if (j->mode == MODE_IM2COL) {
            if (j->use_planes)
                im2col_planes(j, grp, pc, kc, seg, nseg, bbuf);
            else
                im2col_gather(j, grp, pc, kc, seg, nseg, bbuf);
        } else {
            koff = j->koff + pc;
        }
        pack_b(bpack, bsrc, koff, kc, width, j->direct_x && n1 < j->ncols ? j->nc : 0);
        for (int64_t ic = m0; ic < m1; ic += CONV_MC) {
            int64_t ie = ic + CONV_MC < m1 ? ic + CONV_MC : m1;
            for (int64_t jr = 0; jr < ntiles; jr++) {
                int64_t left = width - jr * QL_NR;
                int narrow = left <= 8; /* last tile: the 8-wide kernel */
                int nr = direct && left < QL_NR ? (int)left : narrow ? 8 : QL_NR;
                const float *b = bpack + jr * kc * QL_NR;
                for (int64_t ir = ic; ir < ie; ir += QL_MR) {
                    int mr = m1 - ir < QL_MR ? (int)(m1 - ir) : QL_MR;
                    int64_t co = (ir - m0) * ldc + jr * QL_NR;
                    ql_ukr_partial(narrow ? j->ukr8 : j->ukr, narrow ? 8 : QL_NR, kc,
                                   ql_pack_a_at(abase, g->mg, g->K, pc, ir), b, cbase + co,
                                   ldc, mr, nr, bias ? bias + (ir - m0) : NULL,
                                   addbase ? addbase + co : NULL, flags, j->act.lo, j->act.hi);
                }
            }
        }
    }
    if (!direct)
        copy_out(j, cbuf, img, grp * g->mg + m0, m1 - m0, n0, n1);
    else if (j->stream)
        ql_stream_fence();
}

QL_TARGET_FAST static void conv_block_fast(const conv_job *j, int64_t t, int tid)
{
    conv_block_body(j, t, tid);
}

static void conv_block_port(const conv_job *j, int64_t t, int tid)
{
    conv_block_body(j, t, tid);
}

static void conv_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const conv_job *j = arg;
    int64_t cur = -1; /* the image whose planes this thread holds */
    for (int64_t t = begin; t < end; t++) {
        int64_t img = t / (j->msplit * j->n_jc * j->g.G);
        if (j->imgplanes && img != cur) {
            float *lp = j->scratch + (int64_t)tid * j->per_thread + j->bbuf_floats +
                        j->bpack_floats + j->cbuf_floats + j->kloc_floats + j->seg_floats;
            int64_t C = j->g.C;
            for (int64_t c = 0; c < C; c++)
                ql_phase_build(&j->ph, j->x + (img * C + c) * j->g.in_sz, 0.0f,
                               lp + c * j->chan_stride);
            memset(lp + C * j->chan_stride, 0, 64 * sizeof *lp);
            cur = img;
        }
        (j->fast ? conv_block_fast : conv_block_port)(j, t, tid);
    }
}

static void build_planes(void *arg, int64_t begin, int64_t end, int tid)
{
    const conv_job *j = arg;
    (void)tid;
    for (int64_t u = begin; u < end; u++) {
        int64_t img = u / j->g.C, c = u % j->g.C;
        ql_phase_build(&j->ph, j->x + u * j->g.in_sz, 0.0f,
                       (float *)j->planes + img * j->img_stride + c * j->chan_stride);
    }
}

static size_t align16(int64_t floats) { return (size_t)((floats + 15) / 16 * 16); }

/* Multiply-add columns computed for n output columns: whole 16-column
 * tiles and a last tile of 8 or 16. */
static double tile_cols(int64_t n)
{
    int64_t rem = n % QL_NR;
    return (double)(n / QL_NR * QL_NR + (rem == 0 ? 0 : rem <= 8 ? 8 : QL_NR));
}

/* Picks how B is read for geometry g and plans the phase planes into ph.
 * Costs count multiply-adds including tile padding: phase mode computes
 * the columns past OW too; im2col pays a copy of B, which weighs more when
 * few rows share it. */
static int conv_choose(const conv_geom *g, ql_phase *ph)
{
    int64_t OH = g->out[1], OW = g->out[2];
    int use_planes = g->nsp <= 2;
    int direct_x = use_planes && g->kvol == 1 && g->s[1] == 1 && g->s[2] == 1 && g->pb[1] == 0 &&
                   g->pb[2] == 0 && g->in[1] == OH && g->in[2] == OW;
    if (direct_x)
        ql_phase_plan(ph, g->in[1], g->in[2], 1, 1, 0, 0, OH, OW, 1, 1);
    else
        ql_phase_plan(ph, g->in[1], g->in[2], g->s[1], g->s[2], g->pb[1], g->pb[2], OH, OW,
                      (g->k[1] - 1) * g->d[1] + 1, (g->k[2] - 1) * g->d[2] + 1);
    double cost_phase = (double)g->N * tile_cols((OH - 1) * ph->wq + OW);
    double cost_im2col = tile_cols(g->N * g->out_sz) * (1.0 + 6.0 / (double)g->mg);
    int mode = use_planes && cost_phase <= cost_im2col ? MODE_PHASE : MODE_IM2COL;
    return mode;
}

/* Plans mode, block sizes and the row split of a run. */
static void conv_plan(conv_job *j, const conv_geom *g, int threads)
{
    int64_t OH = g->out[1], OW = g->out[2], mg = g->mg;
    j->mode = conv_choose(g, &j->ph);
    j->use_planes = g->nsp <= 2;
    j->direct_x = j->mode == MODE_PHASE && g->kvol == 1 && g->s[1] == 1 && g->s[2] == 1 &&
                  g->pb[1] == 0 && g->pb[2] == 0 && g->in[1] == OH && g->in[2] == OW;

    j->kc = ql_kblock(g->K);
    j->ncols = j->mode == MODE_PHASE ? (OH - 1) * j->ph.wq + OW : g->N * g->out_sz;
    /* column blocks of at most CONV_NC, as even as multiples of 8 allow */
    j->n_jc = (j->ncols + CONV_NC - 1) / CONV_NC;
    j->nc = ((j->ncols + j->n_jc - 1) / j->n_jc + 7) / 8 * 8;
    j->n_jc = (j->ncols + j->nc - 1) / j->nc;
    /* planes for the whole batch when they stay in cache, else each block
     * builds the rows it reads (a few rows twice, but hot when packed) */
    j->local = j->mode == MODE_PHASE && !j->direct_x &&
               g->N * g->C * j->ph.size * (int64_t)sizeof(float) > QL_PLANES_BYTES;
    j->chan_stride = j->direct_x ? g->in_sz : j->ph.size;
    /* planes of a big batch would leave the cache before they are read: each
     * thread builds those of the image it is working on (tasks are image-major) */
    j->imgplanes = j->mode == MODE_PHASE && !j->direct_x && !j->local && g->N > 1 &&
                   g->N * g->C * j->ph.size * (int64_t)sizeof(float) > CONV_PLANES_L2;
    if (j->local) {
        /* rows a block of nc columns can reach, taps included, plus one for
         * the dropped columns' reads past the row end */
        int64_t eh = (g->k[1] - 1) * g->d[1] + 1;
        j->lrows = (j->nc + j->ph.wq - 2) / j->ph.wq + 2 + (eh - 1) / g->s[1];
        j->chan_stride = g->s[1] * g->s[2] * j->lrows * j->ph.wq;
    }
    j->img_stride = g->C * j->chan_stride;
    /* split rows too when there are few column blocks to share out: at
     * least two tasks per thread, a multiple of the thread count */
    int64_t units = (j->mode == MODE_PHASE ? g->N : 1) * g->G * j->n_jc;
    int64_t panels = (mg + QL_MR - 1) / QL_MR;
    j->msplit = 1;
    if (threads > 1 && units < 4 * threads)
        while (j->msplit < panels &&
               (units * j->msplit < 2 * threads || (units * j->msplit) % threads != 0))
            j->msplit++;
    j->mrange = (panels + j->msplit - 1) / j->msplit * QL_MR;
    j->msplit = (mg + j->mrange - 1) / j->mrange;
    j->ldb = j->nc + 16; /* not a power of two: B rows must not alias in L1 */

    /* per thread: [bbuf][bpack][cbuf][kloc][segments]; bbuf (im2col rows)
     * has 8 floats of slack for the eight-wide copies */
    j->bbuf_floats = j->mode != MODE_PHASE ? (int64_t)align16(j->kc * j->ldb + 8) : 0;
    j->bpack_floats = (int64_t)align16(j->kc * j->nc);
    j->cbuf_floats = (int64_t)align16(j->mrange * j->nc);
    j->kloc_floats = (int64_t)align16(2 * j->kc);
    j->seg_floats = (int64_t)align16(j->nc * (int64_t)(sizeof(im2col_seg) / sizeof(float)));
    int64_t lp_floats = j->local       ? (int64_t)align16(g->cg * j->chan_stride + j->ph.wq + 64)
                        : j->imgplanes ? (int64_t)align16(g->C * j->chan_stride + 64)
                                       : 0;
    j->per_thread = j->bbuf_floats + j->bpack_floats + j->cbuf_floats + j->kloc_floats +
                    j->seg_floats + lp_floats;
}

static ql_status conv_gemm(const conv_geom *g, const ql_node *n, const float *x, const float *wt,
                           const float *bias, const float *add, float *y, const ql_act *act,
                           ql_exec_ctx *ctx, ql_error *err)
{
    conv_job j = {.g = *g, .ukr = ql_ukr_select(), .ukr8 = ql_ukr8_select(), .act = *act,
                  .x = x, .bias = bias, .add = add, .y = y, .fast = ql_cpu_fast()};
    int threads = ql_ctx_threads(ctx);
    const conv_state *s = n->state;
    /* the prepared packing only for the weights it was made from: a
     * fake-quant plan runs the same node with replacement weights */
    int packed = s && s->M == g->M && s->K == g->K && s->G == g->G && s->src == wt;
    j.apack_stride = ql_pack_a_floats(g->mg, g->K);
    conv_plan(&j, g, threads);
    /* outputs far larger than the caches are stored non-temporally: their
     * lines would be read only to be overwritten, then evicted anyway */
    j.stream = g->N * g->M * g->out_sz * (int64_t)sizeof(float) > QL_STREAM_BYTES &&
               g->out_sz % 4 == 0;

    /* scratch: [packed A][phase planes][koff], then the per-thread parts */
    int build = j.use_planes && !j.direct_x && !j.local && !j.imgplanes;
    size_t a_floats = packed ? 0 : align16(j.apack_stride * g->G);
    size_t p_floats = build ? align16(g->N * j.img_stride + j.ph.size + 64) : 0;
    size_t k_floats = j.use_planes ? align16(2 * g->K) : 0;
    size_t total = a_floats + p_floats + k_floats + (size_t)j.per_thread * (size_t)threads;
    float *sc = ql_ctx_scratch(ctx, total * sizeof(float));
    if (!sc)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for convolution scratch (%zu bytes)",
                       total * sizeof(float));
    if (packed) {
        j.apack = s->apack;
    } else {
        for (int64_t grp = 0; grp < g->G; grp++)
            ql_pack_a(wt + grp * g->mg * g->K, g->K, g->mg, g->K, sc + grp * j.apack_stride);
        j.apack = sc;
    }
    j.scratch = sc + a_floats + p_floats + k_floats;
    if (j.use_planes) {
        j.koff = (int64_t *)(sc + a_floats + p_floats);
        ql_phase lay = j.ph; /* local planes have lrows rows */
        if (j.local)
            lay.hq = j.lrows;
        for (int64_t r = 0; r < g->kvol; r++) /* tap offsets, then per channel */
            j.koff[r] = ql_phase_off(&lay, r / g->k[2] * g->d[1], r % g->k[2] * g->d[2]);
        for (int64_t c = 1; c < g->cg; c++)
            for (int64_t r = 0; r < g->kvol; r++)
                j.koff[c * g->kvol + r] = c * j.chan_stride + j.koff[r];
        if (j.direct_x) {
            j.planes = x;
        } else if (build) {
            float *pl = sc + a_floats;
            memset(pl + g->N * j.img_stride, 0, (size_t)(j.ph.size + 64) * sizeof *pl);
            j.planes = pl;
            ql_parallel_for(ctx, g->N * g->C, 1, build_planes, &j);
        }
    }
    int64_t units = (j.mode == MODE_PHASE ? g->N : 1) * g->G * j.n_jc;
    ql_parallel_for(ctx, units * j.msplit, 1, conv_tasks, &j);
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
    return conv_gemm(&g, n, x->data, wt->data, b ? b->data : NULL, ctx->post_add, out[0]->data,
                     &act, ctx, err);
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
