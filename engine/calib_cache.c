/* Layer-input cache for rounding algorithms: one float pass per layer,
 * stopped right after the layer's input is produced, keeps the input of the
 * first samples that fit the budget; columns are then cut from it on demand
 * (im2col of single columns for convolutions, rows for Gemm/MatMul). */
#include "calib_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "exec.h"
#include "op.h"
#include "ops/kernels.h"

static void weight_split(const ql_tensor *w, int axis, int64_t *outer, int64_t *ch,
                         int64_t *inner)
{
    *outer = *inner = 1;
    *ch = axis >= 0 ? w->dims[axis] : 1;
    for (int i = 0; i < w->ndim; i++) {
        if (axis < 0 || i < axis)
            *outer *= w->dims[i];
        else if (i > axis)
            *inner *= w->dims[i];
    }
}

void ql_weight_rows(const ql_tensor *w, int axis, float *rows)
{
    int64_t outer, ch, inner;
    weight_split(w, axis, &outer, &ch, &inner);
    const float *src = w->data;
    int64_t k = outer * inner;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++)
            for (int64_t i = 0; i < inner; i++)
                rows[c * k + o * inner + i] = src[(o * ch + c) * inner + i];
}

void ql_weight_unrows_i32(const ql_tensor *w, int axis, const int32_t *rows, int32_t *q)
{
    int64_t outer, ch, inner;
    weight_split(w, axis, &outer, &ch, &inner);
    int64_t k = outer * inner;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++)
            for (int64_t i = 0; i < inner; i++)
                q[(o * ch + c) * inner + i] = rows[c * k + o * inner + i];
}

typedef enum { COLS_CONV, COLS_ROWS } cols_kind;

typedef struct layer_cache {
    cols_kind kind;
    float *x;             /* cached input, samples concatenated */
    int64_t samples;      /* cached samples */
    int64_t per_sample;   /* floats per sample */
    int64_t max_samples;
    int64_t dims[QL_MAX_DIMS]; /* per-sample input dims (without batch) */
    int ndim;
    /* conv geometry (2-D; 1-D as H = 1) */
    int64_t C, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT, PL, G, cg;
    /* rows */
    int64_t K, rows_per_sample;
    int64_t k_per_group;
    int groups;
} layer_cache;

typedef struct capture_ctx {
    layer_cache *c;
    int value;
    int64_t count, batch;
    bool done;
    ql_status st;
} capture_ctx;

static bool capture_observer(void *user, const ql_graph *g, int node, int value,
                             const ql_tensor *t)
{
    (void)g;
    (void)node;
    capture_ctx *cc = user;
    if (value != cc->value)
        return true;
    layer_cache *c = cc->c;
    int64_t n = cc->count;
    if (t->ndim < 1 || t->dims[0] != cc->batch || t->dtype != QL_F32) {
        cc->st = QL_ERR_SHAPE;
        cc->done = true;
        return false;
    }
    int64_t per = ql_tensor_numel(t) / t->dims[0];
    if (!c->x) {
        c->per_sample = per;
        c->ndim = t->ndim - 1;
        memcpy(c->dims, t->dims + 1, (size_t)c->ndim * sizeof *c->dims);
        c->x = malloc((size_t)(c->max_samples * per) * sizeof *c->x);
        if (!c->x) {
            cc->st = QL_ERR_NOMEM;
            cc->done = true;
            return false;
        }
    }
    if (c->samples + n > c->max_samples)
        n = c->max_samples - c->samples;
    memcpy(c->x + c->samples * per, t->data, (size_t)(n * per) * sizeof *c->x);
    c->samples += n;
    cc->done = true;
    return false; /* nothing after this layer's input is needed */
}

static ql_status fill_cache(ql_model *m, int value, const ql_dataset *d, const ql_calib_opts *o,
                            layer_cache *c, ql_error *err)
{
    ql_graph *g = m->graph;
    ql_exec *x = NULL;
    ql_batcher b = {0};
    char *observe = calloc((size_t)g->n_values + 1, 1);
    capture_ctx cc = {.c = c, .value = value};
    ql_status st = QL_OK;
    if (!observe)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    observe[value] = 1;
    ql_exec_opts xo = {.n_threads = o->n_threads, .observer = capture_observer,
                       .observer_user = &cc, .observe = observe, .cancel = o->cancel,
                       .reuse_buffers = true};
    if ((st = ql_exec_new(g, &xo, &x, err)) != QL_OK)
        goto cleanup;
    if ((st = ql_batcher_init(&b, g, d, o->batch, err)) != QL_OK)
        goto cleanup;
    for (int64_t first = 0; first < d->n && c->samples < c->max_samples; first += b.batch) {
        const ql_tensor *feed;
        if ((st = ql_batcher_get(&b, first, &cc.count, &feed, err)) != QL_OK)
            goto cleanup;
        cc.batch = feed->dims[0];
        cc.done = false;
        cc.st = QL_OK;
        if (g->values[value].is_input) {
            capture_observer(&cc, g, -1, value, feed);
        } else {
            ql_tensor *outs[64] = {0};
            if (g->n_outputs > 64) {
                st = ql_fail(err, QL_ERR_UNSUPPORTED, "too many outputs");
                goto cleanup;
            }
            st = ql_exec_run(x, &feed, outs, err);
            for (int j = 0; j < g->n_outputs; j++)
                ql_tensor_free(outs[j]);
            if (st == QL_ERR_CANCELLED && cc.done)
                st = QL_OK; /* stopped by the observer on purpose */
            if (st != QL_OK)
                goto cleanup;
        }
        if (cc.st != QL_OK) {
            st = ql_fail(err, cc.st, "cannot cache '%s' (not a float batch, or out of memory)",
                         g->values[value].name);
            goto cleanup;
        }
    }
cleanup:
    ql_batcher_clear(&b);
    ql_exec_free(x);
    free(observe);
    return st;
}

/* out[g][k][count] */
static int get_columns(void *user, const int64_t *idx, int64_t count, float *out)
{
    const layer_cache *c = user;
    if (c->kind == COLS_ROWS) {
        for (int64_t j = 0; j < count; j++) {
            int64_t m = idx[j];
            if (m < 0 || m >= c->samples * c->rows_per_sample)
                return -1;
            const float *row = c->x + m * c->K;
            for (int64_t r = 0; r < c->K; r++)
                out[r * count + j] = row[r];
        }
        return 0;
    }
    int64_t per_img = c->OH * c->OW, kg = c->cg * c->KH * c->KW;
    for (int64_t j = 0; j < count; j++) {
        int64_t m = idx[j];
        if (m < 0 || m >= c->samples * per_img)
            return -1;
        int64_t s = m / per_img, p = m % per_img, oy = p / c->OW, ox = p % c->OW;
        const float *img = c->x + s * c->per_sample;
        for (int64_t gi = 0; gi < c->G; gi++)
            for (int64_t ci = 0; ci < c->cg; ci++) {
                const float *plane = img + (gi * c->cg + ci) * c->H * c->W;
                for (int64_t ky = 0; ky < c->KH; ky++) {
                    int64_t iy = oy * c->SH - c->PT + ky * c->DH;
                    for (int64_t kx = 0; kx < c->KW; kx++) {
                        int64_t ix = ox * c->SW - c->PL + kx * c->DW;
                        int64_t r = (ci * c->KH + ky) * c->KW + kx;
                        float v = (iy >= 0 && iy < c->H && ix >= 0 && ix < c->W)
                                      ? plane[iy * c->W + ix]
                                      : 0.0f;
                        out[(gi * kg + r) * count + j] = v;
                    }
                }
            }
    }
    return 0;
}

/* Sets up the column view; false (with a reason) when the layer has none. */
static bool plan_columns(const ql_graph *g, const ql_qlayer *L, layer_cache *c, char *why,
                         size_t n)
{
    const ql_node *nd = &g->nodes[L->node];
    const ql_tensor *w = g->values[L->weight_value].constant;
    const ql_value *xin = &g->values[nd->in[0]];
    ql_error e;
    if (nd->op == QL_OP_CONV) {
        if (w->ndim != 4 && w->ndim != 3) {
            snprintf(why, n, "%d-D convolution", w->ndim - 2);
            return false;
        }
        if (xin->ndim != w->ndim) {
            snprintf(why, n, "input rank unknown");
            return false;
        }
        int nsp = w->ndim - 2;
        ql_window win;
        if (ql_window_init(nd, nsp, w->dims + 2, xin->dims + 2, 0, &win, &e) != QL_OK) {
            snprintf(why, n, "%.200s", e.msg);
            return false;
        }
        c->kind = COLS_CONV;
        c->G = ql_attr_int(nd, "group", 1);
        c->cg = w->dims[1];
        c->C = c->G * c->cg;
        c->H = nsp == 2 ? win.in[0] : 1;
        c->W = win.in[nsp - 1];
        c->OH = nsp == 2 ? win.out[0] : 1;
        c->OW = win.out[nsp - 1];
        c->KH = nsp == 2 ? win.kernel[0] : 1;
        c->KW = win.kernel[nsp - 1];
        c->SH = nsp == 2 ? win.stride[0] : 1;
        c->SW = win.stride[nsp - 1];
        c->DH = nsp == 2 ? win.dilation[0] : 1;
        c->DW = win.dilation[nsp - 1];
        c->PT = nsp == 2 ? win.pad_begin[0] : 0;
        c->PL = win.pad_begin[nsp - 1];
        if (c->H < 1 || c->W < 1 || c->OH < 1 || c->OW < 1) {
            snprintf(why, n, "spatial extents unknown");
            return false;
        }
        c->groups = (int)c->G;
        c->k_per_group = c->cg * c->KH * c->KW;
        return true;
    }
    if (nd->op == QL_OP_GEMM || nd->op == QL_OP_MATMUL) {
        if (w->ndim != 2 || (nd->op == QL_OP_GEMM && ql_attr_int(nd, "transA", 0))) {
            snprintf(why, n, nd->op == QL_OP_GEMM ? "transposed input" : "batched weight");
            return false;
        }
        c->kind = COLS_ROWS;
        c->K = ql_attr_int(nd, "transB", 0) && nd->op == QL_OP_GEMM ? w->dims[1] : w->dims[0];
        c->groups = 1;
        c->k_per_group = c->K;
        return true;
    }
    snprintf(why, n, "%s layer", nd->op_type);
    return false;
}

typedef struct host_ctx {
    const ql_calib_opts *o;
    char phase[160];
} host_ctx;

static int host_progress(void *user, int64_t done, int64_t total)
{
    host_ctx *h = user;
    if (h->o->cancel && *h->o->cancel)
        return 1;
    if (h->o->progress && !h->o->progress(h->o->progress_user, h->phase, done, total))
        return 1;
    return 0;
}

static uint64_t name_seed(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void logf_(const ql_calib_opts *o, const char *fmt, const char *a, const char *b)
{
    if (!o->log)
        return;
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a, b);
    o->log(o->log_user, msg);
}

ql_status ql_calib_round_layer(ql_model *m, const ql_qnet *q, const ql_qlayer *L,
                               const ql_algo *a, const ql_encoding *enc,
                               const ql_dataset *calib, const ql_calib_opts *o,
                               ql_qtensor_cfg *t, ql_error *err)
{
    const ql_graph *g = q->g;
    const ql_tensor *w = g->values[L->weight_value].constant;
    const ql_node *nd = &g->nodes[L->node];
    layer_cache c = {0};
    char why[256];
    float *wm = NULL, *scale = NULL;
    int32_t *zp = NULL, *qm = NULL, *qw = NULL;
    ql_status st = QL_OK;
    if (!plan_columns(g, L, &c, why, sizeof why)) {
        logf_(o, "%s: %s keeps nearest rounding here", L->name, why);
        return QL_OK;
    }
    if (!calib)
        return ql_fail(err, QL_ERR_ARG, "layer '%s': %s needs calibration data", L->name,
                       a->p->name);
    /* budget: whole samples of the layer input */
    const ql_value *xin = &g->values[nd->in[0]];
    int64_t per = 1;
    for (int i = 1; i < xin->ndim; i++)
        per *= xin->dims[i] > 0 ? xin->dims[i] : 1;
    int64_t budget = o->cache_bytes > 0 ? o->cache_bytes : (int64_t)512 << 20;
    c.max_samples = budget / (per * (int64_t)sizeof(float));
    if (c.max_samples < 1)
        c.max_samples = 1;
    if (c.max_samples > calib->n)
        c.max_samples = calib->n;
    if (c.max_samples < calib->n) {
        char a1[32], a2[32];
        snprintf(a1, sizeof a1, "%lld", (long long)c.max_samples);
        snprintf(a2, sizeof a2, "%lld", (long long)calib->n);
        char msg[300];
        snprintf(msg, sizeof msg, "%s: input cache holds %s of %s samples", L->name, a1, a2);
        if (o->log)
            o->log(o->log_user, msg);
    }
    if ((st = fill_cache(m, nd->in[0], calib, o, &c, err)) != QL_OK)
        goto cleanup;
    if (c.kind == COLS_ROWS)
        c.rows_per_sample = c.per_sample / c.K;
    if (c.kind == COLS_ROWS && c.per_sample % c.K) {
        st = ql_fail(err, QL_ERR_SHAPE, "layer '%s': input rows do not match the weight",
                     L->name);
        goto cleanup;
    }
    /* weights as [channels x k] with channels the output channels */
    int axis = L->weight_axis;
    int64_t channels = w->dims[axis], k = ql_tensor_numel(w) / channels;
    wm = malloc((size_t)ql_tensor_numel(w) * sizeof *wm);
    qm = malloc((size_t)ql_tensor_numel(w) * sizeof *qm);
    qw = malloc((size_t)ql_tensor_numel(w) * sizeof *qw);
    scale = malloc((size_t)channels * sizeof *scale);
    zp = malloc((size_t)channels * sizeof *zp);
    if (!wm || !qm || !qw || !scale || !zp) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    ql_weight_rows(w, axis, wm);
    for (int64_t ch = 0; ch < channels; ch++) {
        int64_t e = enc->n == 1 ? 0 : ch;
        scale[ch] = enc->scale[e];
        zp[ch] = enc->zero_point[e];
    }
    const float *bias = L->bias_value >= 0 ? g->values[L->bias_value].constant->data : NULL;
    float lo = -INFINITY, hi = INFINITY;
    if (L->act_node >= 0) {
        const ql_node *an = &g->nodes[L->act_node];
        if (an->op == QL_OP_RELU) {
            lo = 0;
        } else {
            lo = ql_attr_float(an, "min", -INFINITY);
            hi = ql_attr_float(an, "max", INFINITY);
            for (int j = 1; j < an->n_in && j < 3; j++) {
                const ql_tensor *b = an->in[j] >= 0 ? g->values[an->in[j]].constant : NULL;
                if (b && b->dtype == QL_F32 && ql_tensor_numel(b) == 1)
                    *(j == 1 ? &lo : &hi) = *(const float *)b->data;
            }
        }
    }
    int64_t columns = c.kind == COLS_CONV ? c.samples * c.OH * c.OW
                                          : c.samples * c.rows_per_sample;
    qlp_layer pl = {.name = L->name, .channels = channels, .k = k, .groups = c.groups,
                    .w = wm, .bias = bias, .act_lo = lo, .act_hi = hi, .columns = columns,
                    .get_columns = get_columns, .user = &c, .seed = name_seed(L->name)};
    if (pl.k * pl.groups != c.k_per_group * c.groups || k != c.k_per_group) {
        st = ql_fail(err, QL_ERR_SHAPE, "layer '%s': weight and input do not match", L->name);
        goto cleanup;
    }
    host_ctx hc = {.o = o};
    snprintf(hc.phase, sizeof hc.phase, "%s %s", a->p->name, L->name);
    int threads = o->n_threads > 0 ? o->n_threads : 2;
    qlp_host host = {.progress = host_progress, .user = &hc, .n_threads = threads};
    qlp_format f = {.bits = enc->spec.bits, .is_signed = enc->spec.is_signed,
                    .symmetric = enc->spec.symmetric};
    ql_qspec_range(&enc->spec, &f.qmin, &f.qmax);
    qlp_params p = {.n = a->n, .v = a->v};
    char msg[256] = "";
    qlp_result r = a->p->weight_round(&p, &pl, &f, scale, zp, qm, &host, msg, sizeof msg);
    if (r == QLP_CANCELLED) {
        st = ql_fail(err, QL_ERR_CANCELLED, "calibration cancelled (%s)", hc.phase);
        goto cleanup;
    }
    if (r != QLP_OK) {
        st = ql_fail(err, QL_ERR_ARG, "layer '%s': %s: %s", L->name, a->p->name,
                     msg[0] ? msg : "failed");
        goto cleanup;
    }
    for (int64_t i = 0; i < channels * k; i++)
        if (qm[i] < f.qmin || qm[i] > f.qmax) {
            st = ql_fail(err, QL_ERR_INTERNAL, "layer '%s': %s returned %d outside [%lld, %lld]",
                         L->name, a->p->name, qm[i], (long long)f.qmin, (long long)f.qmax);
            goto cleanup;
        }
    ql_weight_unrows_i32(w, axis, qm, qw);
    free(t->q);
    t->q = qw;
    t->n_q = channels * k;
    qw = NULL;
cleanup:
    free(c.x);
    free(wm);
    free(qm);
    free(qw);
    free(scale);
    free(zp);
    return st;
}
