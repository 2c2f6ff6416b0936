/* Calibration: the statistics pass (an executor observer feeding one
 * histogram per quantizer site) and the encoding step (activation, weight
 * and bias encodings through the algorithm plugins). Rounding algorithms
 * (AdaRound) are served layer inputs from calib_cache.c. */
#include "calibrate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calib_cache.h"
#include "evaluate.h"
#include "exec.h"
#include "op.h"
#include "pool.h"

/* ---- statistics pass ------------------------------------------------------ */

#define MAX_PARTS 64

typedef struct collect_ctx {
    ql_calib_stats *s;
    int *hist_of;      /* per value: histogram index or -1 */
    int64_t count;     /* real samples in the current batch */
    int64_t batch;     /* rows fed (count plus padding) */
    ql_exec_ctx *ctx;  /* the executor's threads, for splitting large tensors */
    int parts;
    ql_hist part[MAX_PARTS];
    const float *x;
    int64_t n;
    double range;      /* R of the tensor's histogram before this batch */
    ql_status st;
} collect_ctx;

static void hist_part(void *arg, int64_t b, int64_t e, int tid)
{
    (void)tid;
    collect_ctx *c = arg;
    for (int64_t p = b; p < e; p++) {
        int64_t lo = c->n * p / c->parts, hi = c->n * (p + 1) / c->parts;
        /* a part starts at the tensor's range so far: it seldom re-bins */
        ql_hist_reset(&c->part[p], c->range);
        ql_hist_add(&c->part[p], c->x + lo, hi - lo);
    }
}

/* Histogram counts are integers and bins depend only on the value and the
 * final power-of-two range, so per-thread partial histograms merged in any
 * order give exactly the single-threaded result. */
static void add_batch(collect_ctx *c, int h, const ql_tensor *t)
{
    int64_t n = ql_tensor_numel(t);
    /* a padded last batch of a fixed-batch model: only the real samples */
    if (c->count < c->batch && t->ndim > 0 && t->dims[0] == c->batch)
        n = n / c->batch * c->count;
    if (c->parts < 2 || n < (1 << 16)) {
        ql_hist_add(&c->s->hists[h], (const float *)t->data, n);
        return;
    }
    c->x = t->data;
    c->n = n;
    c->range = c->s->hists[h].range;
    ql_parallel_for(c->ctx, c->parts, 1, hist_part, c);
    for (int p = 0; p < c->parts; p++)
        if (ql_hist_merge(&c->s->hists[h], &c->part[p], NULL) != QL_OK)
            c->st = QL_ERR_NOMEM;
}

static bool collect_observer(void *user, const ql_graph *g, int node, int value,
                             const ql_tensor *t)
{
    (void)g;
    (void)node;
    collect_ctx *c = user;
    int h = c->hist_of[value];
    if (h >= 0 && t->dtype == QL_F32)
        add_batch(c, h, t);
    return true;
}

/* ---- the pass a few samples at a time per thread --------------------------
 *
 * When the graph keeps samples apart, each thread runs units of a few
 * samples of every batch on a one-thread executor of its own, into
 * statistics of its own, merged at the end: the threads never wait for
 * each other between nodes, and a unit's activations stay in cache from
 * one node to the next, as in evaluation (exec.h, split_samples). The
 * histograms are exact whatever the split (see add_batch).
 *
 * A unit is as many samples (a power of two, at most SPLIT_UNIT_MAX) as
 * keep a unit of the largest value within SPLIT_UNIT_BYTES: the binning
 * has a cost per call, which more samples share, but a node's input and
 * output must stay in a core's L2 (on the example, 4 samples gave two
 * threads a ratio to the float pass of 1.28-1.39 against 1.39-1.49 for 8;
 * one thread was the same). */
#define SPLIT_UNIT_MAX 8
#define SPLIT_UNIT_BYTES ((int64_t)256 << 10)
#define SPLIT_CHUNK 64 /* samples a thread between meetings, at least */

static int64_t split_unit(const ql_graph *g)
{
    int64_t big = ql_graph_max_sample_bytes(g), u = 1;
    while (u < SPLIT_UNIT_MAX && 2 * u * big <= SPLIT_UNIT_BYTES)
        u *= 2;
    return u;
}

typedef struct split_ctx {
    const ql_tensor *feed; /* the current batch */
    int64_t count;         /* its samples */
    int64_t unit;          /* samples a thread takes at a time */
    int in;                /* the input value */
    collect_ctx *cc;       /* per thread */
    ql_exec **x;           /* per thread */
    ql_first_error fe;
} split_ctx;

static void split_units(void *arg, int64_t b, int64_t e, int tid)
{
    split_ctx *sc = arg;
    collect_ctx *c = &sc->cc[tid];
    for (int64_t u = b; u < e && !sc->fe.stop; u++) {
        int64_t lo = u * sc->unit, n = sc->count - lo < sc->unit ? sc->count - lo : sc->unit;
        ql_tensor view = ql_tensor_rows(sc->feed, lo, n);
        c->count = c->batch = n;
        if (c->hist_of[sc->in] >= 0)
            add_batch(c, c->hist_of[sc->in], &view);
        const ql_tensor *f = &view;
        ql_tensor *outs[64] = {0};
        ql_error er = {{0}};
        ql_status st = ql_exec_run(sc->x[tid], &f, outs, &er);
        for (int j = 0; j < 64; j++)
            ql_tensor_free(outs[j]);
        if (st == QL_OK && c->st != QL_OK)
            st = ql_fail(&er, c->st, "out of memory for calibration statistics");
        if (st != QL_OK)
            ql_first_error_set(&sc->fe, st, &er);
    }
}

static ql_status collect_split(ql_model *m, const ql_dataset *d, const ql_calib_opts *opts,
                               ql_calib_stats *s, const int *hist_of, const char *observe,
                               ql_error *err)
{
    ql_graph *g = m->graph;
    int threads = opts->n_threads > 0 ? opts->n_threads : ql_default_threads();
    ql_pool *pool = ql_pool_new(threads);
    ql_exec_ctx pctx;
    ql_batcher b = {0};
    split_ctx sc = {.in = g->inputs[0]};
    ql_calib_stats **part = calloc((size_t)threads, sizeof *part);
    sc.cc = calloc((size_t)threads, sizeof *sc.cc);
    sc.x = calloc((size_t)threads, sizeof *sc.x);
    ql_first_error_init(&sc.fe);
    ql_status st = QL_OK;
    if (g->n_outputs > 64) {
        ql_pool_free(pool);
        pool = NULL;
        st = ql_fail(err, QL_ERR_UNSUPPORTED, "too many outputs");
    } else if (!pool || !part || !sc.cc || !sc.x) {
        ql_pool_free(pool);
        pool = NULL;
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory for calibration statistics");
    }
    if (pool)
        ql_ctx_init(&pctx, pool);
    for (int t = 0; t < threads && st == QL_OK; t++) {
        if (!(part[t] = ql_calib_stats_new())) {
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory for calibration statistics");
            break;
        }
        /* many small calls into each: deferred counting (settled by the
         * merge below) */
        for (int h = 0; h < s->n && st == QL_OK; h++)
            if (ql_calib_stats_add(part[t], s->names[h]) != h ||
                ql_hist_defer(&part[t]->hists[h], NULL) != QL_OK)
                st = ql_fail(err, QL_ERR_NOMEM, "out of memory for calibration statistics");
        sc.cc[t].s = part[t];
        sc.cc[t].hist_of = (int *)hist_of;
        ql_exec_opts xo = {.n_threads = 1, .observer = collect_observer,
                           .observer_user = &sc.cc[t], .observe = observe,
                           .cancel = opts->cancel, .reuse_buffers = true};
        if (st == QL_OK)
            st = ql_exec_new(g, &xo, &sc.x[t], err);
    }
    /* The threads wait for each other at the end of every batch, the last
     * unit's thread alone: batches of at least SPLIT_CHUNK samples a thread
     * keep that tail small (the data is in memory, a batch is a view). */
    sc.unit = split_unit(g);
    int64_t want = opts->batch > 0 ? opts->batch : 32;
    if (want < (int64_t)SPLIT_CHUNK * threads)
        want = (int64_t)SPLIT_CHUNK * threads;
    if (st == QL_OK)
        st = ql_batcher_init(&b, g, d, want, err);
    for (int64_t first = 0; st == QL_OK && first < d->n; first += b.batch) {
        int64_t count;
        if ((st = ql_batcher_get(&b, first, &count, &sc.feed, err)) != QL_OK)
            break;
        sc.count = count;
        ql_parallel_for_dynamic(&pctx, (count + sc.unit - 1) / sc.unit, 1, split_units, &sc);
        if (sc.fe.st != QL_OK) {
            *err = sc.fe.err;
            st = ql_fail_prefix(err, sc.fe.st, "%s: samples %lld-%lld", d->source,
                                (long long)first, (long long)(first + count - 1));
            break;
        }
        if (opts->progress &&
            !opts->progress(opts->progress_user, "statistics", first + count, d->n))
            st = ql_fail(err, QL_ERR_CANCELLED, "calibration cancelled");
    }
    /* the threads' statistics, merged (exact, in any order) */
    for (int t = 0; t < threads && st == QL_OK; t++)
        for (int h = 0; h < s->n && st == QL_OK; h++)
            st = ql_hist_merge(&s->hists[h], &part[t]->hists[h], err);
    ql_batcher_clear(&b);
    for (int t = 0; t < threads; t++) {
        if (sc.x)
            ql_exec_free(sc.x[t]);
        if (part)
            ql_calib_stats_free(part[t]);
    }
    if (pool) {
        ql_ctx_destroy(&pctx);
        ql_pool_free(pool);
    }
    free(part);
    free(sc.cc);
    free(sc.x);
    ql_first_error_destroy(&sc.fe);
    return st;
}

ql_status ql_calib_collect(ql_model *m, const ql_qnet *q, const ql_dataset *d,
                           const ql_calib_opts *o, ql_calib_stats **out, ql_error *err)
{
    ql_graph *g = m->graph;
    ql_calib_opts opts = {0};
    ql_calib_stats *s = NULL;
    ql_exec *x = NULL;
    ql_batcher b = {0};
    char *observe = NULL;
    collect_ctx cc;
    ql_status st = QL_OK;
    memset(&cc, 0, sizeof cc);
    if (o)
        opts = *o;
    if (g->n_inputs != 1)
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "%s: calibration needs a model with exactly one input (it has %d)",
                       m->path, g->n_inputs);
    s = ql_calib_stats_new();
    observe = calloc((size_t)g->n_values + 1, 1);
    cc.hist_of = malloc(((size_t)g->n_values + 1) * sizeof *cc.hist_of);
    if (!s || !observe || !cc.hist_of) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory for calibration statistics");
        goto cleanup;
    }
    s->model_fingerprint = m->fingerprint;
    for (int v = 0; v < g->n_values; v++) {
        cc.hist_of[v] = -1;
        if (!q->value_site[v])
            continue;
        int h = ql_calib_stats_add(s, g->values[v].name); /* histogram ready */
        if (h < 0) {
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory for calibration statistics");
            goto cleanup;
        }
        cc.hist_of[v] = h;
        observe[v] = 1;
    }
    cc.s = s;
    if (ql_graph_samples_apart(g)) {
        if ((st = collect_split(m, d, &opts, s, cc.hist_of, observe, err)) != QL_OK)
            goto cleanup;
        goto done;
    }
    ql_exec_opts xo = {.n_threads = opts.n_threads, .observer = collect_observer,
                       .observer_user = &cc, .observe = observe, .cancel = opts.cancel,
                       .reuse_buffers = true};
    if ((st = ql_exec_new(g, &xo, &x, err)) != QL_OK)
        goto cleanup;
    /* the observer runs between nodes, when the executor's threads are idle */
    cc.ctx = ql_exec_context(x);
    cc.parts = ql_exec_threads(x) < MAX_PARTS ? ql_exec_threads(x) : MAX_PARTS;
    for (int p = 0; p < cc.parts && cc.parts > 1; p++)
        if ((st = ql_hist_init(&cc.part[p], err)) != QL_OK)
            goto cleanup;
    if ((st = ql_batcher_init(&b, g, d, opts.batch, err)) != QL_OK)
        goto cleanup;
    int in = g->inputs[0];
    for (int64_t first = 0; first < d->n; first += b.batch) {
        const ql_tensor *feed;
        int64_t count;
        if ((st = ql_batcher_get(&b, first, &count, &feed, err)) != QL_OK)
            goto cleanup;
        cc.count = count;
        cc.batch = feed->dims[0];
        if (cc.hist_of[in] >= 0)
            add_batch(&cc, cc.hist_of[in], feed);
        ql_tensor *outs[64] = {0};
        if (g->n_outputs > 64) {
            st = ql_fail(err, QL_ERR_UNSUPPORTED, "too many outputs");
            goto cleanup;
        }
        st = ql_exec_run(x, &feed, outs, err);
        for (int j = 0; j < g->n_outputs; j++)
            ql_tensor_free(outs[j]);
        if (st == QL_OK && cc.st != QL_OK)
            st = ql_fail(err, cc.st, "out of memory for calibration statistics");
        if (st != QL_OK) {
            ql_fail_prefix(err, st, "%s: samples %lld-%lld", d->source, (long long)first,
                           (long long)(first + count - 1));
            goto cleanup;
        }
        if (opts.progress &&
            !opts.progress(opts.progress_user, "statistics", first + count, d->n)) {
            st = ql_fail(err, QL_ERR_CANCELLED, "calibration cancelled");
            goto cleanup;
        }
    }
done:
    for (int h = 0; h < s->n; h++)
        if (s->hists[h].nan) {
            st = ql_fail(err, QL_ERR_DATA,
                         "%s: tensor '%s' has %llu NaN values on the calibration data",
                         m->path, s->names[h], (unsigned long long)s->hists[h].nan);
            goto cleanup;
        }
    s->samples = d->n;
    *out = s;
    s = NULL;
cleanup:
    ql_batcher_clear(&b);
    ql_exec_free(x);
    ql_calib_stats_free(s);
    free(observe);
    free(cc.hist_of);
    for (int p = 0; p < MAX_PARTS; p++)
        ql_hist_clear(&cc.part[p]);
    return st;
}

/* ---- encodings ------------------------------------------------------------ */

static void fill_format(const ql_qspec *spec, qlp_format *f)
{
    f->bits = spec->bits;
    f->is_signed = spec->is_signed;
    f->symmetric = spec->symmetric;
    ql_qspec_range(spec, &f->qmin, &f->qmax);
}

static ql_status act_encoding(const ql_qnet *q, const ql_qconfig *c, const ql_calib_stats *s,
                              const ql_plugins *ps, int v, int bits, ql_encoding *e,
                              ql_error *err)
{
    const ql_graph *g = q->g;
    const char *name = g->values[v].name;
    int h = ql_calib_stats_find(s, name);
    if (h < 0)
        return ql_fail(err, QL_ERR_ARG, "no statistics for tensor '%s' (recalibrate)", name);
    int l = q->value_layer[v];
    ql_qsettings set = ql_qconfig_layer_settings(c, l >= 0 ? q->layers[l].name : "");
    ql_algo a;
    ql_status st = ql_algo_parse(ps, set.act_algo, QLP_KIND_ACTIVATION, &a, err);
    if (st != QL_OK)
        return ql_fail_prefix(err, st, "tensor '%s'", name);
    const ql_hist *hs = &s->hists[h];
    qlp_hist ph = {.min = hs->min, .max = hs->max, .count = hs->count, .nbins = QL_HIST_BINS,
                   .lo = -hs->range, .hi = hs->range, .counts = hs->counts};
    ql_qspec spec = {.bits = bits, .is_signed = true, .symmetric = true, .axis = -1};
    qlp_format f;
    fill_format(&spec, &f);
    double lo = 0, hi = 0;
    char msg[256] = "";
    qlp_params p = {.n = a.n, .v = a.v};
    if (hs->count == 0) {
        lo = hi = 0; /* never observed (e.g. zero-size): a valid, degenerate encoding */
    } else if (a.p->act_range(&p, &ph, &f, &lo, &hi, msg, sizeof msg) != QLP_OK) {
        return ql_fail(err, QL_ERR_ARG, "tensor '%s': %s: %s", name, a.p->name,
                       msg[0] ? msg : "failed");
    }
    if (!isfinite(lo) || !isfinite(hi) || lo > hi)
        return ql_fail(err, QL_ERR_INTERNAL, "tensor '%s': %s returned the range [%g, %g]",
                       name, a.p->name, lo, hi);
    if ((st = ql_encoding_init(e, &spec, 1, err)) != QL_OK)
        return st;
    ql_encoding_set_range(e, 0, lo, hi);
    return QL_OK;
}

ql_status ql_calib_encode_act(const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *s,
                              const ql_plugins *ps, int value, int bits, ql_error *err)
{
    ql_encoding e = {0};
    ql_status st = act_encoding(q, c, s, ps, value, bits, &e, err);
    if (st != QL_OK)
        return st;
    ql_qtensor_cfg *t = ql_qconfig_tensor(c, q->g->values[value].name);
    if (!t) {
        ql_encoding_clear(&e);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    ql_encoding_clear(&t->enc);
    free(t->q);
    t->q = NULL;
    t->n_q = 0;
    t->enc = e;
    return QL_OK;
}

static ql_status weight_encoding(ql_model *m, const ql_qnet *q, const ql_qlayer *L,
                                 const ql_qsettings *set, const ql_plugins *ps,
                                 const ql_dataset *calib, const ql_calib_opts *o,
                                 ql_qtensor_cfg *t, ql_error *err)
{
    const ql_tensor *w = q->g->values[L->weight_value].constant;
    int axis = set->per_channel ? L->weight_axis : -1;
    ql_algo a;
    float *mat = NULL;
    double *lo = NULL, *hi = NULL;
    ql_status st = ql_algo_parse(ps, set->weight_algo, QLP_KIND_WEIGHT, &a, err);
    if (st != QL_OK)
        return ql_fail_prefix(err, st, "layer '%s'", L->name);
    int64_t ch = axis >= 0 ? w->dims[axis] : 1, k = ql_tensor_numel(w) / ch;
    ql_qspec spec = {.bits = set->weight_bits, .is_signed = true, .symmetric = true,
                     .axis = axis};
    qlp_format f;
    fill_format(&spec, &f);
    mat = malloc((size_t)ql_tensor_numel(w) * sizeof *mat);
    if (mat)
        ql_weight_rows(w, axis, mat);
    lo = malloc((size_t)ch * sizeof *lo);
    hi = malloc((size_t)ch * sizeof *hi);
    if (!mat || !lo || !hi) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    char msg[256] = "";
    qlp_params p = {.n = a.n, .v = a.v};
    if (a.p->weight_range(&p, mat, ch, k, &f, lo, hi, msg, sizeof msg) != QLP_OK) {
        st = ql_fail(err, QL_ERR_ARG, "layer '%s': %s: %s", L->name, a.p->name,
                     msg[0] ? msg : "failed");
        goto cleanup;
    }
    if ((st = ql_encoding_init(&t->enc, &spec, ch, err)) != QL_OK)
        goto cleanup;
    for (int64_t c = 0; c < ch; c++) {
        if (!isfinite(lo[c]) || !isfinite(hi[c]) || lo[c] > hi[c]) {
            st = ql_fail(err, QL_ERR_INTERNAL, "layer '%s': %s returned the range [%g, %g]",
                         L->name, a.p->name, lo[c], hi[c]);
            goto cleanup;
        }
        ql_encoding_set_range(&t->enc, c, lo[c], hi[c]);
    }
    if (a.p->weight_round) {
        st = ql_calib_round_layer(m, q, L, &a, &t->enc, calib, o, t, err);
        if (st != QL_OK)
            goto cleanup;
    }
cleanup:
    free(mat);
    free(lo);
    free(hi);
    return st;
}

static ql_status bias_encoding(const ql_qnet *q, const ql_qlayer *L, const ql_qconfig *tmp,
                               ql_qtensor_cfg *t, ql_error *err)
{
    const ql_graph *g = q->g;
    int src = L->in_value >= 0 ? q->value_src[L->in_value] : -1;
    const ql_qtensor_cfg *in = src >= 0 ? ql_qconfig_find_tensor(tmp, g->values[src].name) : NULL;
    const ql_qtensor_cfg *w = ql_qconfig_find_tensor(tmp, g->values[L->weight_value].name);
    if (!in || !w || in->enc.n != 1)
        return ql_fail(err, QL_ERR_INTERNAL, "layer '%s': bias needs input and weight encodings",
                       L->name);
    int64_t n = w->enc.n;
    ql_qspec spec = {.bits = 32, .is_signed = true, .symmetric = true,
                     .axis = n > 1 ? 0 : -1};
    ql_status st = ql_encoding_init(&t->enc, &spec, n, err);
    if (st != QL_OK)
        return st;
    int64_t qmin, qmax;
    ql_qspec_range(&spec, &qmin, &qmax);
    for (int64_t c = 0; c < n; c++) {
        t->enc.scale[c] = in->enc.scale[0] * w->enc.scale[c];
        t->enc.zero_point[c] = 0;
        t->enc.lo[c] = (float)((double)t->enc.scale[c] * (double)qmin);
        t->enc.hi[c] = (float)((double)t->enc.scale[c] * (double)qmax);
    }
    return QL_OK;
}

/* A weight encoding of `old` still valid under the layer's settings. */
static const ql_qtensor_cfg *reusable_weight(const ql_qconfig *old, const char *name,
                                             const ql_qsettings *set, int axis)
{
    const ql_qtensor_cfg *t = old ? ql_qconfig_find_tensor(old, name) : NULL;
    if (!t || t->enc.spec.bits != set->weight_bits ||
        t->enc.spec.axis != (set->per_channel ? axis : -1))
        return NULL;
    return t;
}

static ql_status copy_tensor(ql_qtensor_cfg *dst, const ql_qtensor_cfg *src, ql_error *err)
{
    ql_status st = ql_encoding_copy(&dst->enc, &src->enc, err);
    if (st != QL_OK || !src->q)
        return st;
    dst->q = malloc((size_t)src->n_q * sizeof *dst->q);
    if (!dst->q)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    memcpy(dst->q, src->q, (size_t)src->n_q * sizeof *dst->q);
    dst->n_q = src->n_q;
    return QL_OK;
}

/* Tells the user when an algorithm kept less than a quarter of a tensor's
 * observed range: often right (long tails), sometimes the sign of data an
 * algorithm handles badly (kl on discrete or spiky histograms), and worth a
 * look with sensitivity analysis either way. */
static void note_heavy_clip(const ql_qnet *q, const ql_qconfig *c, const ql_calib_stats *s,
                            int v, const ql_calib_opts *o)
{
    const char *name = q->g->values[v].name;
    const ql_qtensor_cfg *t = ql_qconfig_find_tensor(c, name);
    int h = ql_calib_stats_find(s, name);
    if (!o->log || !t || h < 0 || s->hists[h].count == 0)
        return;
    double amax = fmax(fabs(s->hists[h].min), fabs(s->hists[h].max));
    double kept = fmax(fabs((double)t->enc.lo[0]), fabs((double)t->enc.hi[0]));
    if (!(amax > 0) || kept >= 0.25 * amax)
        return;
    int l = q->value_layer[v];
    ql_qsettings set = ql_qconfig_layer_settings(c, l >= 0 ? q->layers[l].name : "");
    char msg[800];
    snprintf(msg, sizeof msg, "note: %.256s keeps %.0f%% of the range of '%.200s' (|x| up to %.4g)",
             set.act_algo, 100.0 * kept / amax, name, amax);
    o->log(o->log_user, msg);
}

static bool same_act_algo(const ql_qnet *q, const ql_qconfig *a, const ql_qconfig *b, int v)
{
    int l = q->value_layer[v];
    const char *name = l >= 0 ? q->layers[l].name : "";
    ql_qsettings sa = ql_qconfig_layer_settings(a, name), sb = ql_qconfig_layer_settings(b, name);
    return strcmp(sa.act_algo, sb.act_algo) == 0;
}

/* Computes every encoding c's settings call for into a fresh tensor list
 * and swaps it into c on success. Weight encodings of `keep` that still fit
 * the settings are copied instead of recomputed, except for layer `force`. */
static ql_status encode_all(ql_model *m, const ql_qnet *q, ql_qconfig *c,
                            const ql_calib_stats *s, const ql_plugins *ps,
                            const ql_dataset *calib, const ql_calib_opts *o,
                            const ql_qconfig *keep, const ql_qconfig *before, int force,
                            ql_error *err)
{
    const ql_graph *g = q->g;
    ql_calib_opts opts = {0};
    ql_status st = QL_OK;
    if (o)
        opts = *o;
    if (s->model_fingerprint && s->model_fingerprint != m->fingerprint)
        return ql_fail(err, QL_ERR_ARG, "the statistics were collected on another model");
    ql_qconfig *tmp = ql_qconfig_clone(c);
    int *bits = malloc(((size_t)g->n_values + 1) * sizeof *bits);
    if (!tmp || !bits) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    ql_qconfig_clear_tensors(tmp);
    ql_qnet_act_bits(q, tmp, bits);
    for (int v = 0; v < g->n_values; v++) {
        if (!bits[v])
            continue;
        /* an activation encoding whose bits and algorithm did not change
         * since `before` is kept as it is */
        const ql_qtensor_cfg *old = before ? ql_qconfig_find_tensor(keep, g->values[v].name) : NULL;
        if (old && old->enc.spec.bits == bits[v] && same_act_algo(q, before, tmp, v)) {
            ql_qtensor_cfg *t = ql_qconfig_tensor(tmp, g->values[v].name);
            st = t ? copy_tensor(t, old, err) : ql_fail(err, QL_ERR_NOMEM, "out of memory");
        } else {
            st = ql_calib_encode_act(q, tmp, s, ps, v, bits[v], err);
            if (st == QL_OK)
                note_heavy_clip(q, tmp, s, v, &opts);
        }
        if (st != QL_OK)
            goto cleanup;
    }
    for (int i = 0; i < q->n_layers; i++) {
        const ql_qlayer *L = &q->layers[i];
        ql_qsettings set = ql_qconfig_layer_settings(tmp, L->name);
        if (L->weight_value < 0 || set.precision == QL_PREC_FLOAT)
            continue;
        const char *wname = g->values[L->weight_value].name;
        ql_qtensor_cfg *t = ql_qconfig_tensor(tmp, wname);
        if (!t) {
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
            goto cleanup;
        }
        const ql_qtensor_cfg *old = i == force ? NULL
                                               : reusable_weight(keep, wname, &set, L->weight_axis);
        st = old ? copy_tensor(t, old, err)
                 : weight_encoding(m, q, L, &set, ps, calib, &opts, t, err);
        if (st != QL_OK)
            goto cleanup;
        if (L->bias_value >= 0) {
            ql_qtensor_cfg *b = ql_qconfig_tensor(tmp, g->values[L->bias_value].name);
            if (!b) {
                st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
                goto cleanup;
            }
            if ((st = bias_encoding(q, L, tmp, b, err)) != QL_OK)
                goto cleanup;
        }
        if (opts.progress && !opts.progress(opts.progress_user, "weights", i + 1, q->n_layers)) {
            st = ql_fail(err, QL_ERR_CANCELLED, "calibration cancelled");
            goto cleanup;
        }
    }
    /* success: move the new encodings into c */
    ql_qconfig_clear_tensors(c);
    free(c->tensors);
    c->tensors = tmp->tensors;
    c->n_tensors = tmp->n_tensors;
    tmp->tensors = NULL;
    tmp->n_tensors = 0;
    c->calib_samples = s->samples;
    c->fingerprint = m->fingerprint;
    const char *base = strrchr(m->path, '/');
    char *file = strdup(base ? base + 1 : m->path);
    if (file) {
        free(c->model_file);
        c->model_file = file;
    }
cleanup:
    ql_qconfig_free(tmp);
    free(bits);
    return st;
}

ql_status ql_calib_encode(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *s,
                          const ql_plugins *ps, const ql_dataset *calib,
                          const ql_calib_opts *o, ql_error *err)
{
    return encode_all(m, q, c, s, ps, calib, o, NULL, NULL, -1, err);
}

ql_status ql_calib_update(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *s,
                          const ql_plugins *ps, const ql_dataset *calib,
                          const ql_calib_opts *o, const ql_qconfig *before, int force_layer,
                          ql_error *err)
{
    ql_qconfig *keep = ql_qconfig_clone(c);
    if (!keep)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = encode_all(m, q, c, s, ps, calib, o, keep, before, force_layer, err);
    ql_qconfig_free(keep);
    return st;
}
