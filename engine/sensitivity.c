/* Per-layer sensitivity, incremental and parallel. The samples go through
 * in chunks that fit the cache budget: for each chunk the workers first run
 * its batches' base runs (one batch each at a time), caching the raw values
 * every layer's re-run set reads (and the float values its local runs
 * need); then they take (batch, layer) items, batch by batch and the
 * longest layers first, and re-run only the layers' sets, fed from the
 * cache: both workers read one batch's cache while it is in the CPU's
 * cache, where layer by layer over the whole chunk they read all of it
 * per layer, from memory. Each worker has one-thread executors that keep their
 * buffers between runs. When the graph keeps samples apart, a layer's runs
 * take a batch a few samples (a unit) at a time, fed views of the cache, so
 * that their activations stay in cache from one node to the next. Each
 * layer's sums accumulate unit by unit in sample order, so the results do
 * not depend on which thread ran it, nor on the thread count. */
#include "sensitivity.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "exec.h"
#include "pool.h"
#include "qsim.h"
#include "sens_priv.h"

#define SENS_UNIT 8 /* samples a layer's runs take at a time (graphs keeping them apart) */
#define SENS_UNIT_BYTES ((int64_t)1 << 20) /* ... when a unit of the largest value fits */

/* Units of SENS_UNIT samples where the graph keeps samples apart and a
 * unit of its largest value fits in a core's cache (larger activations
 * would gain nothing from the units but smaller multiplications); else 0,
 * whole batches. */
static int64_t unit_for(const ql_graph *g)
{
    if (!ql_graph_samples_apart(g))
        return 0;
    int64_t big = ql_graph_max_sample_bytes(g);
    return big > 0 && big * SENS_UNIT <= SENS_UNIT_BYTES ? SENS_UNIT : 0;
}

typedef struct sens_worker {
    sens_ctx *s;
    ql_tensor *views;        /* unit views of the fed values and references */
    int64_t u0, un;          /* the current unit: samples [u0, u0 + un) of the batch */
    ql_exec *x;              /* layer runs */
    ql_exec *bx;             /* base runs of the current chunk */
    cache_obs co;
    float *scratch;          /* output_noise: a few samples of one value */
    int64_t scratch_n;
    char *obs;               /* x's observe mask: the current layer's output only */
    const ql_encoding **act[3];
    const ql_tensor **cst[3];
    const ql_tensor **feeds;
    ql_tensor **outs;
    int want;                /* value whose local noise the observer sums, or -1 */
    const ql_tensor *want_ref;
    int64_t want_count;
    double sig, noise;
} sens_worker;

static bool local_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    (void)g;
    (void)node;
    sens_worker *w = user;
    if (value != w->want || !w->want_ref || t->dtype != QL_F32 || t->ndim < 1)
        return true;
    int64_t n = ql_tensor_numel(t), per = t->dims[0] > 0 ? n / t->dims[0] : 0;
    if (ql_tensor_numel(w->want_ref) != n)
        return true;
    const float *a = w->want_ref->data, *b = t->data;
    for (int64_t i = 0; i < w->want_count * per; i++) {
        double d = (double)a[i] - (double)b[i];
        w->sig += (double)a[i] * (double)a[i];
        w->noise += d * d;
    }
    return true;
}

/* ---- per-layer work ------------------------------------------------------------ */

/* Workers take the chunk's batches for their base runs. */
static void *base_main(sens_worker *w)
{
    sens_ctx *s = w->s;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int b = s->stop ? s->n_batches : s->next++;
        pthread_mutex_unlock(&s->lock);
        if (b >= s->n_batches)
            break;
        ql_error err = {{0}};
        ql_status st = sens_base_batch(s, w->bx, &w->co, b, w->outs, &err);
        if (st != QL_OK) {
            pthread_mutex_lock(&s->lock);
            if (st != QL_ERR_CANCELLED && s->st == QL_OK) {
                s->st = st;
                s->err = err;
            }
            s->stop = 1;
            pthread_mutex_unlock(&s->lock);
        }
    }
    return NULL;
}

static const ql_tensor *cached(const sens_ctx *s, const sens_batch *B, ql_tensor **arr, int v)
{
    if (s->g->values[v].is_input)
        return B->input;
    if (s->g->values[v].is_output && arr == B->flt)
        for (int j = 0; j < s->g->n_outputs; j++)
            if (s->g->outputs[j] == v)
                return B->ref_out[j];
    return arr[v];
}

/* Samples [w->u0, w->u0 + w->un) of a cached batch tensor t (batch axis
 * first), as view k of the worker; t itself when the unit is the batch. */
static const ql_tensor *unit_of(sens_worker *w, const sens_batch *B, const ql_tensor *t, int k)
{
    if (!t || (w->u0 == 0 && w->un == B->count) || t->ndim < 1 || t->dims[0] != B->count)
        return t;
    w->views[k] = ql_tensor_rows(t, w->u0, w->un);
    return &w->views[k];
}

static ql_status run_fed(sens_worker *w, const sens_batch *B, const char *run, int n, const int *ids,
                         ql_tensor **arr, ql_error *err)
{
    for (int k = 0; k < n; k++) {
        w->feeds[k] = unit_of(w, B, cached(w->s, B, arr, ids[k]), k);
        if (!w->feeds[k])
            return ql_fail(err, QL_ERR_ARG, "internal: '%s' was not cached",
                           w->s->g->values[ids[k]].name);
    }
    ql_status st = ql_exec_run_nodes(w->x, run, n, ids, w->feeds, w->outs, err);
    for (int j = 0; st == QL_OK && j < w->s->g->n_outputs; j++) {
        ql_tensor_free(w->outs[j]);
        w->outs[j] = NULL;
    }
    return st;
}

static ql_status local_run(sens_worker *w, layer_work *lw, const sens_batch *B, int k,
                           double *sig, double *noise, ql_error *err)
{
    sens_ctx *s = w->s;
    ql_exec_quant p = {(const struct ql_encoding *const *)w->act[k], w->cst[k]};
    int ov = s->q->layers[lw->layer].out_value;
    ql_status st = ql_exec_set_quant(w->x, &p, err);
    if (st != QL_OK)
        return st;
    w->want = ov;
    w->want_ref = unit_of(w, B, cached(s, B, B->flt, ov), s->g->n_values);
    w->want_count = w->un;
    w->sig = w->noise = 0;
    st = run_fed(w, B, lw->lrun, lw->n_lfeeds, lw->lfeeds, B->flt, err);
    w->want = -1;
    if (sig)
        *sig += w->sig;
    *noise += w->noise;
    return st;
}

/* Output-quantizer noise of the layer alone: its float output quantized,
 * as a run with only that quantizer would compute it. Quantization is
 * element-wise, so unless the channel axis is the batch axis it goes a few
 * samples at a time through a small buffer, summed in the same order. */
static ql_status output_noise(sens_worker *w, const layer_work *lw, const sens_batch *B,
                              double *noise, ql_error *err)
{
    int ov = w->s->q->layers[lw->layer].out_value;
    const ql_encoding *e = w->act[2][ov];
    const ql_tensor *f = cached(w->s, B, B->flt, ov);
    if (!e || !f || f->dtype != QL_F32 || f->ndim < 1)
        return QL_OK;
    int64_t per = f->dims[0] > 0 ? ql_tensor_numel(f) / f->dims[0] : 0;
    if (e->spec.axis != 0 && per > 0) {
        int64_t step = (int64_t)(16384 / per) > 1 ? (int64_t)(16384 / per) : 1;
        if (step * per > w->scratch_n) {
            free(w->scratch);
            w->scratch_n = 0;
            if (!(w->scratch = malloc((size_t)(step * per) * sizeof *w->scratch)))
                return ql_fail(err, QL_ERR_NOMEM, "out of memory");
            w->scratch_n = step * per;
        }
        double nz = 0;
        for (int64_t s0 = 0; s0 < B->count; s0 += step) {
            ql_tensor t = *f;
            t.dims[0] = B->count - s0 < step ? B->count - s0 : step;
            t.data = w->scratch;
            t.owns = false;
            const float *a = (const float *)f->data + s0 * per, *q = w->scratch;
            int64_t n = t.dims[0] * per;
            memcpy(w->scratch, a, (size_t)n * sizeof *a);
            ql_status st = ql_fake_quant(&t, e, err);
            if (st != QL_OK)
                return st;
            for (int64_t i = 0; i < n; i++) {
                double d = (double)a[i] - (double)q[i];
                nz += d * d;
            }
        }
        *noise += nz;
        return QL_OK;
    }
    ql_tensor *t = ql_tensor_clone(f);
    if (!t)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = ql_fake_quant(t, e, err);
    if (st == QL_OK) {
        w->want = ov;
        w->want_ref = f;
        w->want_count = B->count;
        w->sig = w->noise = 0;
        local_observer(w, w->s->g, -1, ov, t);
        *noise += w->noise;
        w->want = -1;
    }
    ql_tensor_free(t);
    return st;
}

/* The runs of one unit of batch B (samples [w->u0, w->u0 + w->un)): the
 * mode's run, which also gives the layer's own output under the mode, and
 * the local runs it did not give (only the layer quantized, weights only). */
static ql_status unit_runs(sens_worker *w, layer_work *lw, const sens_batch *B, ql_error *err)
{
    sens_ctx *s = w->s;
    const ql_graph *g = s->g;
    const ql_qlayer *L = &s->q->layers[lw->layer];
    ql_sens_mode mode = s->o->mode;
    ql_status st = ql_exec_set_quant(w->x, &lw->plan, err);
    if (st != QL_OK)
        return st;
    w->want = L->out_value;
    w->want_ref = unit_of(w, B, cached(s, B, B->flt, L->out_value), g->n_values);
    w->want_count = w->un;
    w->sig = w->noise = 0;
    if (s->o->brute_force) {
        const ql_tensor *in[1] = {unit_of(w, B, B->input, 0)};
        st = ql_exec_run(w->x, in, w->outs, err);
    } else {
        for (int k = 0; k < lw->n_feeds; k++)
            if (!(w->feeds[k] = unit_of(w, B, cached(s, B, B->base, lw->feeds[k]), k)))
                return ql_fail(err, QL_ERR_ARG, "internal: '%s' was not cached",
                               g->values[lw->feeds[k]].name);
        st = ql_exec_run_nodes(w->x, lw->run, lw->n_feeds, lw->feeds, w->feeds, w->outs, err);
    }
    w->want = -1;
    if (st != QL_OK)
        return st;
    if (mode == QL_SENS_SINGLE) {
        lw->loc_sig += w->sig;
        lw->loc_noise += w->noise;
    } else if (mode == QL_SENS_WEIGHTS) {
        lw->w_noise += w->noise;
    } else if (mode == QL_SENS_ACTIVATIONS) {
        lw->a_noise += w->noise;
    }
    const ql_tensor *yf[64];
    for (int j = 0; j < g->n_outputs; j++)
        yf[j] = unit_of(w, B, B->ref_out[j], g->n_values + 1 + j);
    st = ql_metrics_add_outputs(&lw->m, g, yf, (const ql_tensor *const *)w->outs, w->un,
                                s->labels ? s->labels + B->first + w->u0 : NULL, err);
    for (int j = 0; j < g->n_outputs; j++) {
        ql_tensor_free(w->outs[j]);
        w->outs[j] = NULL;
    }
    if (st != QL_OK)
        return st;
    if (mode != QL_SENS_SINGLE &&
        (st = local_run(w, lw, B, 0, &lw->loc_sig, &lw->loc_noise, err)) != QL_OK)
        return st;
    if (mode != QL_SENS_WEIGHTS && L->weight_value >= 0 &&
        (st = local_run(w, lw, B, 1, NULL, &lw->w_noise, err)) != QL_OK)
        return st;
    return QL_OK;
}

/* Batch b of layer lw. */
static ql_status do_layer_batch(sens_worker *w, layer_work *lw, int b, ql_error *err)
{
    sens_ctx *s = w->s;
    const ql_graph *g = s->g;
    const ql_qlayer *L = &s->q->layers[lw->layer];
    ql_sens_mode mode = s->o->mode;
    static const ql_sens_mode local_modes[3] = {QL_SENS_SINGLE, QL_SENS_WEIGHTS,
                                                QL_SENS_ACTIVATIONS};
    ql_status st = QL_OK;
    if ((s->o->cancel && *s->o->cancel) || s->stop)
        return QL_ERR_CANCELLED;
    for (int k = 0; k < 3; k++)
        if ((st = sens_plan_build(&s->plans, local_modes[k], lw->layer, w->act[k], w->cst[k],
                                  err)) != QL_OK)
            return st;
    /* only this layer's output is watched, so that fusions elsewhere stay
     * (the mask is read when a plan is set) */
    memset(w->obs, 0, (size_t)g->n_values);
    w->obs[L->out_value] = 1;
    const sens_batch *B = &s->batches[b];
    int64_t unit = s->unit > 0 ? s->unit : B->count;
    for (w->u0 = 0; w->u0 < B->count; w->u0 += unit) {
        w->un = B->count - w->u0 < unit ? B->count - w->u0 : unit;
        if ((st = unit_runs(w, lw, B, err)) != QL_OK)
            return st;
    }
    w->u0 = 0;
    w->un = B->count;
    if (mode != QL_SENS_ACTIVATIONS && (st = output_noise(w, lw, B, &lw->a_noise, err)) != QL_OK)
        return st;
    return QL_OK;
}

/* Layer phase: the items are (batch, layer) pairs, batch-major and the
 * layers most expensive first within a batch, so that the workers share
 * one batch's cached activations while they are in cache. A layer's
 * batches run one at a time and in order (its sums then add up in sample
 * order whoever runs them): a worker takes the first item not taken whose
 * layer is free, or waits for one to be freed. Under s->lock. */
static int take_item(sens_ctx *s)
{
    int n_items = s->n_work * s->n_batches;
    for (;;) {
        while (s->next < n_items) {
            const layer_work *lw = &s->work[s->order[s->next % s->n_work]];
            if (lw->next_batch > s->next / s->n_work ||
                (lw->next_batch == s->next / s->n_work && lw->busy))
                s->next++; /* taken */
            else
                break;
        }
        if (s->next >= n_items || s->stop)
            return -1;
        for (int i = s->next; i < n_items; i++) {
            layer_work *lw = &s->work[s->order[i % s->n_work]];
            if (!lw->busy && lw->next_batch == i / s->n_work) {
                lw->busy = true;
                return i;
            }
        }
        pthread_cond_wait(&s->freed, &s->lock);
    }
}

static void *worker_main(void *arg)
{
    sens_worker *w = arg;
    sens_ctx *s = w->s;
    if (s->base_phase)
        return base_main(w);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        int i = take_item(s);
        if (i < 0)
            break;
        int r = s->order[i % s->n_work], b = i / s->n_work;
        pthread_mutex_unlock(&s->lock);
        ql_error err = {{0}};
        ql_status st = do_layer_batch(w, &s->work[r], b, &err);
        pthread_mutex_lock(&s->lock);
        layer_work *lw = &s->work[r];
        lw->busy = false;
        lw->next_batch++;
        if (st == QL_ERR_CANCELLED) {
            s->stop = 1;
        } else if (st != QL_OK) {
            if (s->st == QL_OK) {
                s->st = st;
                ql_fail(&s->err, st, "layer '%s': %s", s->q->layers[lw->layer].name, err.msg);
            }
            s->stop = 1;
        } else if (lw->next_batch == s->n_batches) {
            lw->chunks_done++;
            s->done++;
            if (s->o->progress && !s->o->progress(s->o->progress_user, s->done, s->total))
                s->stop = 1;
        }
        pthread_cond_broadcast(&s->freed);
    }
    pthread_cond_broadcast(&s->freed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void worker_clear(sens_worker *w)
{
    ql_exec_free(w->x);
    ql_exec_free(w->bx);
    free(w->scratch);
    for (int k = 0; k < 3; k++) {
        free(w->act[k]);
        free(w->cst[k]);
    }
    free(w->feeds);
    free(w->outs);
    free(w->obs);
    free(w->views);
    free(w->co.seen);
}

static ql_status worker_init(sens_ctx *s, sens_worker *w, ql_error *err)
{
    size_t nv = (size_t)(s->g->n_values ? s->g->n_values : 1);
    memset(w, 0, sizeof *w);
    w->s = s;
    w->want = -1;
    for (int k = 0; k < 3; k++) {
        w->act[k] = calloc(nv, sizeof *w->act[k]);
        w->cst[k] = calloc(nv, sizeof *w->cst[k]);
        if (!w->act[k] || !w->cst[k])
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    w->feeds = calloc(nv + (size_t)s->g->n_outputs, sizeof *w->feeds);
    w->outs = calloc((size_t)s->g->n_outputs + 1, sizeof *w->outs);
    w->obs = calloc(nv, 1);
    w->views = calloc(nv + 1 + (size_t)s->g->n_outputs, sizeof *w->views);
    w->co.seen = calloc(nv, sizeof *w->co.seen);
    if (!w->feeds || !w->outs || !w->obs || !w->views || !w->co.seen)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    return QL_OK;
}

/* Runs the current phase (base runs or layers) of the chunk on n_threads
 * workers. The phases make their executors and free them after, so that a
 * worker holds one batch of live activations at a time. */
static ql_status run_phase(sens_ctx *s, sens_worker *ws, int n_threads, ql_error *err)
{
    pthread_t tid[256];
    int started = 0;
    s->next = 0;
    for (int t = 1; t < n_threads; t++) {
        if (pthread_create(&tid[t], NULL, worker_main, &ws[t]) != 0)
            break;
        started = t;
    }
    worker_main(&ws[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(tid[t], NULL);
    if (s->st != QL_OK) {
        *err = s->err;
        return s->st;
    }
    return QL_OK;
}

/* The chunk's base runs: as many workers as batches (up to n_threads),
 * each with an executor of its share of the threads, made for the chunk
 * so that its buffers go when it is done. */
static ql_status run_base(sens_ctx *s, sens_worker *ws, int n_threads, const char *observe,
                          ql_error *err)
{
    int nw = s->n_batches < n_threads ? s->n_batches : n_threads;
    ql_status st = QL_OK;
    for (int k = 0; k < nw && st == QL_OK; k++) {
        ql_exec_opts bo = {.n_threads = n_threads / (nw > 0 ? nw : 1),
                           .observer = sens_cache_observer, .observer_user = &ws[k].co,
                           .observe = observe, .observe_raw = true, .cancel = s->o->cancel,
                           .reuse_buffers = true};
        st = ql_exec_new(s->g, &bo, &ws[k].bx, err);
    }
    if (st == QL_OK && nw > 0) {
        s->base_phase = true;
        st = run_phase(s, ws, nw, err);
        s->base_phase = false;
    }
    for (int k = 0; k < nw; k++) {
        ql_exec_free(ws[k].bx);
        ws[k].bx = NULL;
    }
    return st;
}

/* The chunk's layers, on n_threads workers with one-thread executors. */
static ql_status run_layers(sens_ctx *s, sens_worker *ws, int n_threads, ql_error *err)
{
    ql_status st = QL_OK;
    for (int k = 0; k < n_threads && st == QL_OK; k++) {
        ql_exec_opts xo = {.n_threads = 1, .observer = local_observer, .observer_user = &ws[k],
                           .observe = ws[k].obs, .cancel = s->o->cancel, .reuse_buffers = true};
        st = ql_exec_new(s->g, &xo, &ws[k].x, err);
    }
    for (int r = 0; r < s->n_work; r++) {
        s->work[r].next_batch = 0;
        s->work[r].busy = false;
    }
    if (st == QL_OK)
        st = run_phase(s, ws, n_threads, err);
    for (int k = 0; k < n_threads; k++) {
        ql_exec_free(ws[k].x);
        ws[k].x = NULL;
    }
    return st;
}

/* ---- entry point ------------------------------------------------------------------ */

/* The finished rows first, in layer order, then the others with no
 * metrics: a row cut short holds sums over part of the samples, which are
 * no result. */
static void fill_rows(const sens_ctx *s, ql_sens_table *t, int n_chunks)
{
    int n_done = 0;
    for (int r = 0; r < s->n_work; r++)
        n_done += s->work[r].chunks_done == n_chunks;
    t->n = n_done;
    t->n_pending = s->n_work - n_done;
    t->partial = t->n_pending > 0;
    for (int r = 0, k_done = 0, k_rest = n_done; r < s->n_work; r++) {
        const layer_work *w = &s->work[r];
        const ql_qlayer *L = &s->q->layers[w->layer];
        bool done = w->chunks_done == n_chunks;
        ql_sens_row *row = &t->rows[done ? k_done++ : k_rest++];
        row->layer = w->layer;
        row->name = L->name;
        row->op = s->g->nodes[L->node].op_type;
        row->precision = s->plans.prec[w->layer];
        row->raised_to = s->o->mode == QL_SENS_ALL_BUT ? sens_raised_prec(&s->plans, w->layer)
                                                       : row->precision;
        row->unchanged = w->unchanged;
        row->done = done;
        if (!done) {
            row->local_sqnr_db = row->weight_share = NAN;
            continue;
        }
        row->m = w->m;
        row->local_sqnr_db = w->loc_noise == 0 ? INFINITY
                             : w->loc_sig == 0 ? -INFINITY
                                               : 10.0 * log10(w->loc_sig / w->loc_noise);
        double tot = w->w_noise + w->a_noise;
        row->weight_share = L->weight_value < 0 || tot == 0 ? NAN : w->w_noise / tot;
    }
}

/* All-but: adds the chunk's base outputs to the base metrics, batch by
 * batch in sample order as the layers add theirs. */
static ql_status add_base_metrics(sens_ctx *s, ql_error *err)
{
    const ql_graph *g = s->g;
    for (int b = 0; b < s->n_batches; b++) {
        const sens_batch *B = &s->batches[b];
        const ql_tensor *yq[64];
        for (int j = 0; j < g->n_outputs; j++)
            yq[j] = B->base[g->outputs[j]];
        ql_status st = ql_metrics_add_outputs(&s->base_m, g, (const ql_tensor *const *)B->ref_out,
                                              yq, B->count,
                                              s->labels ? s->labels + B->first : NULL, err);
        if (st != QL_OK)
            return st;
    }
    return QL_OK;
}

ql_status ql_sensitivity(ql_model *m, const ql_qnet *q, const ql_qconfig *c,
                         const ql_dataset *d, const int64_t *labels, const ql_sens_opts *o,
                         ql_sens_table **out, ql_error *err)
{
    ql_graph *g = m->graph;
    sens_ctx s;
    ql_qsim *full = NULL;
    ql_batcher bt = {0};
    sens_worker *ws = NULL;
    int n_ws = 0;
    char *union_obs = NULL;
    int *rows = NULL, n_rows = 0, n_threads = o->n_threads > 0 ? o->n_threads : ql_default_threads();
    ql_sens_table *t = NULL;
    ql_status st;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.freed, NULL);
    *out = NULL;
    if (n_threads > 256)
        n_threads = 256;
    if (g->n_inputs != 1 || g->n_outputs < 1) {
        st = ql_fail(err, QL_ERR_UNSUPPORTED, "%s: a model with one input is needed", m->path);
        goto cleanup;
    }
    if (g->n_outputs > 64) {
        st = ql_fail(err, QL_ERR_UNSUPPORTED, "%s: too many outputs (%d, at most 64)", m->path,
                     g->n_outputs);
        goto cleanup;
    }
    s.g = g;
    s.q = q;
    s.o = o;
    s.labels = labels;
    s.float_base = o->mode != QL_SENS_ALL_BUT;
    s.unit = unit_for(g);
    if ((st = ql_qsim_build(q, c, &full, err)) != QL_OK)
        goto cleanup;
    s.plans.m = m;
    s.plans.q = q;
    s.plans.c = c;
    s.plans.full = full;
    s.plans.raise_int16 = o->raise_int16;
    s.plans.stats = o->stats;
    s.plans.ps = o->plugins;
    s.plans.enc_from = o->enc_from;
    s.plans.prec = malloc((size_t)(q->n_layers ? q->n_layers : 1) * sizeof *s.plans.prec);
    s.plans.bits = malloc((size_t)(g->n_values ? g->n_values : 1) * sizeof *s.plans.bits);
    rows = malloc((size_t)(q->n_layers ? q->n_layers : 1) * sizeof *rows);
    if (!s.plans.prec || !s.plans.bits || !rows) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < q->n_layers; i++) {
        s.plans.prec[i] = ql_qnet_layer_prec(q, c, i);
        if (o->only_layer && strcmp(o->only_layer, q->layers[i].name) != 0)
            continue;
        if (o->mode == QL_SENS_ALL_BUT || s.plans.prec[i] != QL_PREC_FLOAT)
            rows[n_rows++] = i;
    }
    ql_qnet_act_bits(q, c, s.plans.bits);
    if (o->only_layer && n_rows == 0) {
        st = ql_fail(err, QL_ERR_ARG, "layer '%s': %s", o->only_layer,
                     ql_qnet_find_layer(q, o->only_layer) < 0 ? "no such layer"
                                                               : "not quantized in the config");
        goto cleanup;
    }
    if (!s.float_base)
        s.base_plan = full->plan;
    if ((st = sens_prepare(&s, rows, n_rows, err)) != QL_OK)
        goto cleanup;

    /* chunks that fit the budget; the batch shrinks if one does not */
    int64_t budget = o->cache_bytes > 0 ? o->cache_bytes : (int64_t)1 << 30;
    int64_t per = sens_bytes_per_sample(&s), fit = budget / per > 0 ? budget / per : 1;
    int64_t batch = o->batch > 0 ? o->batch : 32;
    if (batch > fit)
        batch = fit;
    if ((st = ql_batcher_init(&bt, g, d, batch, err)) != QL_OK)
        goto cleanup;
    int64_t chunk = fit / bt.batch * bt.batch;
    if (chunk < bt.batch)
        chunk = bt.batch;
    int n_chunks = d->n > 0 ? (int)((d->n + chunk - 1) / chunk) : 0;
    s.total = (int64_t)n_rows * n_chunks;

    union_obs = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (!union_obs) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    for (int v = 0; v < g->n_values; v++)
        union_obs[v] = s.base_obs[v] | s.flt_obs[v];
    ws = calloc((size_t)n_threads, sizeof *ws);
    if (!ws)
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (; st == QL_OK && n_ws < n_threads; n_ws++)
        st = worker_init(&s, &ws[n_ws], err);
    bool cancelled = false;
    for (int ci = 0; st == QL_OK && ci < n_chunks && !cancelled; ci++) {
        int64_t c0 = ci * chunk, c1 = c0 + chunk < d->n ? c0 + chunk : d->n;
        st = sens_chunk_inputs(&s, &bt, c0, c1, err);
        if (st == QL_OK)
            st = run_base(&s, ws, n_threads, union_obs, err);
        if (st == QL_OK && !s.stop && !s.float_base)
            st = add_base_metrics(&s, err);
        if (st == QL_OK && !s.stop)
            st = run_layers(&s, ws, n_threads, err);
        cancelled = st == QL_ERR_CANCELLED || s.stop;
        sens_free_batches(&s);
    }
    if (st == QL_ERR_CANCELLED)
        st = QL_OK;
    if (st != QL_OK)
        goto cleanup;
    t = calloc(1, sizeof *t);
    if (t)
        t->rows = calloc((size_t)(n_rows ? n_rows : 1), sizeof *t->rows);
    if (!t || !t->rows) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    t->mode = o->mode;
    t->samples = d->n;
    t->has_labels = labels != NULL;
    t->base = s.base_m;
    fill_rows(&s, t, n_chunks);
    *out = t;
    t = NULL;
cleanup:
    ql_sens_table_free(t);
    for (int k = 0; ws && k < n_ws; k++)
        worker_clear(&ws[k]);
    free(ws);
    free(union_obs);
    ql_batcher_clear(&bt);
    sens_free_batches(&s);
    sens_free_work(&s);
    free(s.base_obs);
    free(s.flt_obs);
    free(s.plans.prec);
    free(s.plans.bits);
    free(rows);
    ql_qsim_free(full);
    pthread_cond_destroy(&s.freed);
    pthread_mutex_destroy(&s.lock);
    return st;
}
