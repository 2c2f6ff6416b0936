/* The sensitivity analysis's preparation and cache: per-layer plans and
 * sets, what the reference runs must keep, and the reference runs of a
 * chunk of samples with their cached tensors. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sens_priv.h"

#define ARENA_ALIGN ((size_t)2 << 20) /* a huge page, where the system has them */

/* Copies t into *dst: as rows [u0, u0 + t->dims[0]) of a tensor of count
 * rows when count > 0, else whole. *dst is made at the first copy, in the
 * batch's arena while it has room, else with its own buffer. */
static bool store_rows(sens_batch *B, ql_tensor **dst, const ql_tensor *t, int64_t u0,
                       int64_t count)
{
    size_t n = ql_tensor_nbytes(t), row = count > 0 ? n / (size_t)t->dims[0] : 0;
    if (!*dst) {
        int64_t dims[QL_MAX_DIMS];
        memcpy(dims, t->dims, sizeof dims);
        if (count > 0)
            dims[0] = count;
        size_t need = ((count > 0 ? row * (size_t)count : n) + 63) & ~(size_t)63;
        if (B->mem && need <= B->mem_size - B->mem_used) {
            if ((*dst = ql_tensor_wrap(t->dtype, t->ndim, dims, B->mem + B->mem_used)))
                B->mem_used += need;
        } else if ((*dst = ql_tensor_wrap(t->dtype, t->ndim, dims, NULL)) &&
                   ql_tensor_alloc(*dst) != QL_OK) {
            ql_tensor_free(*dst);
            *dst = NULL;
        }
        if (!*dst)
            return false;
    }
    memcpy((char *)(*dst)->data + (size_t)u0 * row, t->data, n);
    return true;
}

/* Whether t is a unit's slice of a batch value (batch axis first, one row
 * a sample: ql_graph_samples_apart), rather than a whole batch or a value
 * without the batch. */
static bool is_slice(const cache_obs *c, const ql_tensor *t)
{
    return c->un < c->batch->count && t->ndim >= 1 && t->dims[0] == c->un;
}

bool sens_cache_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t)
{
    (void)g;
    (void)node;
    cache_obs *c = user;
    if (!c->mask[value] || c->seen[value] == c->run)
        return true;
    c->seen[value] = c->run;
    bool slice = is_slice(c, t);
    if (c->dst[value] && !slice)
        return true; /* stored once */
    if (!store_rows(c->batch, &c->dst[value], t, slice ? c->u0 : 0,
                    slice ? c->batch->count : 0))
        c->failed = true;
    return !c->failed;
}

/* Stores output t of a unit run into *dst, the batch's tensor; takes t. */
static ql_status join_unit(const cache_obs *co, ql_tensor **dst, ql_tensor *t, ql_error *err)
{
    if (!t || !is_slice(co, t)) {
        ql_tensor_free(*dst);
        *dst = t;
        return QL_OK;
    }
    bool ok = store_rows(co->batch, dst, t, co->u0, co->batch->count);
    ql_tensor_free(t);
    return ok ? QL_OK : ql_fail(err, QL_ERR_NOMEM, "out of memory caching activations");
}

/* ---- set-up ---------------------------------------------------------------- */

void sens_free_batches(sens_ctx *s)
{
    for (int b = 0; b < s->n_batches; b++) {
        sens_batch *B = &s->batches[b];
        for (int v = 0; v < s->g->n_values; v++) {
            if (B->flt && B->flt != B->base)
                ql_tensor_free(B->flt[v]);
            if (B->base)
                ql_tensor_free(B->base[v]);
        }
        if (B->flt != B->base)
            free(B->flt);
        free(B->base);
        for (int j = 0; B->ref_out && j < s->g->n_outputs; j++)
            ql_tensor_free(B->ref_out[j]);
        free(B->ref_out);
        ql_tensor_free(B->input);
    }
    free(s->batches);
    free(s->arena);
    s->arena = NULL;
    s->batches = NULL;
    s->n_batches = 0;
}

void sens_free_work(sens_ctx *s)
{
    for (int r = 0; r < s->n_work; r++) {
        layer_work *w = &s->work[r];
        free(w->act);
        free(w->cst);
        ql_qsim_free(w->own);
        free(w->run);
        free(w->feeds);
        free(w->lrun);
        free(w->lfeeds);
    }
    free(s->work);
    free(s->order);
}

/* One analysed layer's plan, re-run set, local set and feed lists; tmp_*
 * are scratch of n_values / n_nodes entries. */
static ql_status prepare_layer(sens_ctx *s, layer_work *w, const ql_encoding **tmp_act,
                               const ql_tensor **tmp_cst, char *tmp_run, ql_error *err)
{
    const ql_graph *g = s->g;
    const ql_qlayer *L = &s->q->layers[w->layer];
    size_t nv = (size_t)(g->n_values ? g->n_values : 1), nn = (size_t)(g->n_nodes ? g->n_nodes : 1);
    w->act = calloc(nv, sizeof *w->act);
    w->cst = calloc(nv, sizeof *w->cst);
    w->run = calloc(nn, 1);
    w->lrun = calloc(nn, 1);
    w->feeds = malloc((nv + (size_t)g->n_outputs) * sizeof *w->feeds);
    w->lfeeds = malloc((nv + (size_t)g->n_outputs) * sizeof *w->lfeeds);
    if (!w->act || !w->cst || !w->run || !w->lrun || !w->feeds || !w->lfeeds)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_status st = s->o->mode == QL_SENS_ALL_BUT
                       ? sens_plan_raise(&s->plans, w->layer, w->act, w->cst, &w->own, err)
                       : sens_plan_build(&s->plans, s->o->mode, w->layer, w->act, w->cst, err);
    if (st != QL_OK)
        return ql_fail_prefix(err, st, "layer '%s'", L->name);
    w->plan.act = (const struct ql_encoding *const *)w->act;
    w->plan.constants = w->cst;
    w->unchanged = !sens_plans_differ(g, &s->base_plan, &w->plan);
    sens_rerun_set(s->q, w->layer, &s->base_plan, &w->plan, w->run);
    /* local runs: the nodes the layer's output depends on among those its
     * single plan changes, so that they reproduce a full run exactly */
    if (s->o->mode == QL_SENS_SINGLE) {
        sens_local_set(g, w->run, L->out_value, w->lrun);
    } else {
        ql_exec_quant sp = {(const struct ql_encoding *const *)tmp_act, tmp_cst}, none = {0};
        if ((st = sens_plan_build(&s->plans, QL_SENS_SINGLE, w->layer, tmp_act, tmp_cst, err)) !=
            QL_OK)
            return ql_fail_prefix(err, st, "layer '%s'", L->name);
        sens_rerun_set(s->q, w->layer, &none, &sp, tmp_run);
        sens_local_set(g, tmp_run, L->out_value, w->lrun);
    }
    w->n_feeds = sens_feed_set(g, w->run, w->feeds);
    w->n_lfeeds = sens_feed_set(g, w->lrun, w->lfeeds);
    if (w->n_feeds < 0 || w->n_lfeeds < 0)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (int k = 0; k < w->n_feeds; k++)
        s->base_obs[w->feeds[k]] |= !g->values[w->feeds[k]].is_input;
    for (int k = 0; k < w->n_lfeeds; k++)
        s->flt_obs[w->lfeeds[k]] |= !g->values[w->lfeeds[k]].is_input;
    s->flt_obs[L->out_value] = 1;
    return QL_OK;
}

/* Every analysed layer's work, and the masks of what the base run must
 * cache. */
ql_status sens_prepare(sens_ctx *s, const int *rows, int n_rows, ql_error *err)
{
    const ql_graph *g = s->g;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1), nn = (size_t)(g->n_nodes ? g->n_nodes : 1);
    const ql_encoding **tmp_act = calloc(nv, sizeof *tmp_act);
    const ql_tensor **tmp_cst = calloc(nv, sizeof *tmp_cst);
    char *tmp_run = calloc(nn, 1);
    ql_status st = QL_OK;
    s->work = calloc((size_t)(n_rows ? n_rows : 1), sizeof *s->work);
    s->base_obs = calloc(nv, 1);
    s->flt_obs = calloc(nv, 1);
    if (!s->work || !s->base_obs || !s->flt_obs || !tmp_act || !tmp_cst || !tmp_run)
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (int r = 0; st == QL_OK && r < n_rows; r++) {
        s->work[r].layer = rows[r];
        s->n_work = r + 1;
        st = prepare_layer(s, &s->work[r], tmp_act, tmp_cst, tmp_run, err);
    }
    free(tmp_act);
    free(tmp_cst);
    free(tmp_run);
    if (st != QL_OK)
        return st;
    /* workers take the longest layers first, so that the last ones to
     * finish are short (the order changes no result) */
    int64_t *cost = calloc((size_t)(n_rows ? n_rows : 1), sizeof *cost);
    s->order = malloc((size_t)(n_rows ? n_rows : 1) * sizeof *s->order);
    if (!cost || !s->order) {
        free(cost);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    }
    for (int r = 0; r < n_rows; r++) {
        for (int i = 0; i < g->n_nodes; i++) {
            int64_t c = ql_node_macs(g, &g->nodes[i]) + 1;
            cost[r] += (s->work[r].run[i] ? c : 0) + (s->work[r].lrun[i] ? 3 * c : 0);
        }
        int j = r;
        for (; j > 0 && cost[s->order[j - 1]] < cost[r]; j--)
            s->order[j] = s->order[j - 1];
        s->order[j] = r;
    }
    free(cost);
    for (int j = 0; j < g->n_outputs; j++)
        s->base_obs[g->outputs[j]] = s->flt_obs[g->outputs[j]] = 0; /* kept as outputs */
    if (s->float_base)
        for (size_t v = 0; v < nv; v++) {
            s->base_obs[v] |= s->flt_obs[v];
            s->flt_obs[v] = s->base_obs[v];
        }
    return QL_OK;
}

/* Bytes per sample the cache holds: static shapes, the batch axis first
 * (an unknown extent counts as 1). */
int64_t sens_bytes_per_sample(const sens_ctx *s)
{
    const ql_graph *g = s->g;
    int64_t total = 0;
    for (int v = 0; v < g->n_values; v++) {
        int copies = (s->base_obs[v] ? 1 : 0) + (!s->float_base && s->flt_obs[v] ? 1 : 0);
        bool io = g->values[v].is_input || g->values[v].is_output;
        if (!copies && !io)
            continue;
        if (io)
            copies++;
        int64_t e = (int64_t)ql_dtype_info(g->values[v].dtype)->size;
        for (int d = 1; d < g->values[v].ndim; d++)
            e *= g->values[v].dims[d] > 0 ? g->values[v].dims[d] : 1;
        total += e * copies;
    }
    return total > 0 ? total : 1;
}

/* ---- base runs --------------------------------------------------------------- */

ql_status sens_chunk_inputs(sens_ctx *s, ql_batcher *bt, int64_t c0, int64_t c1, ql_error *err)
{
    size_t nv = (size_t)(s->g->n_values ? s->g->n_values : 1), no = (size_t)s->g->n_outputs;
    int64_t nb = (c1 - c0 + bt->batch - 1) / bt->batch;
    s->batches = calloc((size_t)(nb ? nb : 1), sizeof *s->batches);
    if (!s->batches)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    s->n_batches = (int)nb;
    /* one block for the chunk's cache: a few large pages rather than page
     * faults all over the heap; each batch its share, in rows of the batch */
    size_t share = ((size_t)sens_bytes_per_sample(s) * (size_t)bt->batch + 64 * nv + 63) &
                   ~(size_t)63;
    size_t total = (share * (size_t)nb + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    s->arena = aligned_alloc(ARENA_ALIGN, total); /* NULL: every tensor its own buffer */
#ifdef MADV_HUGEPAGE
    if (s->arena)
        madvise(s->arena, total, MADV_HUGEPAGE);
#endif
    for (int b = 0; b < nb; b++) {
        sens_batch *B = &s->batches[b];
        const ql_tensor *feed;
        B->first = c0 + b * bt->batch;
        B->mem_size = s->arena ? share : 0;
        B->mem = s->arena ? (char *)s->arena + (size_t)b * share : NULL;
        ql_status st = ql_batcher_get(bt, B->first, &B->count, &feed, err);
        if (st != QL_OK)
            return ql_fail_prefix(err, st, "reference run");
        B->input = ql_tensor_clone(feed);
        B->base = calloc(nv, sizeof *B->base);
        B->flt = s->float_base ? B->base : calloc(nv, sizeof *B->flt);
        B->ref_out = calloc(no ? no : 1, sizeof *B->ref_out);
        if (!B->input || !B->base || !B->flt || !B->ref_out)
            return ql_fail(err, QL_ERR_NOMEM, "out of memory caching activations");
    }
    return QL_OK;
}

ql_status sens_base_batch(sens_ctx *s, ql_exec *x, cache_obs *co, int b, ql_tensor **outs,
                          ql_error *err)
{
    const ql_graph *g = s->g;
    sens_batch *B = &s->batches[b];
    ql_status st = QL_OK;
    /* in the units the layers' runs take (sensitivity.c), so that a value
     * is computed with the same shapes whichever side computes it */
    int64_t unit = s->unit > 0 ? s->unit : B->count;
    co->failed = false;
    co->batch = B;
    for (int pass = 0; pass < (s->float_base ? 1 : 2) && st == QL_OK; pass++) {
        co->mask = pass ? s->base_obs : s->flt_obs;
        co->dst = pass ? B->base : B->flt;
        if ((st = ql_exec_set_quant(x, pass ? &s->base_plan : NULL, err)) != QL_OK)
            break;
        for (co->u0 = 0; co->u0 < B->count && st == QL_OK; co->u0 += unit) {
            co->un = B->count - co->u0 < unit ? B->count - co->u0 : unit;
            co->run++;
            ql_tensor view = ql_tensor_rows(B->input, co->u0, co->un);
            const ql_tensor *in[1] = {&view};
            if ((st = ql_exec_run(x, in, outs, err)) != QL_OK)
                break;
            /* float outputs are the reference; the base's are fed */
            for (int j = 0; j < g->n_outputs && st == QL_OK; j++) {
                ql_tensor **dst = pass ? &B->base[g->outputs[j]] : &B->ref_out[j];
                st = join_unit(co, dst, outs[j], err);
                outs[j] = NULL;
            }
            for (int j = 0; j < g->n_outputs; j++) {
                ql_tensor_free(outs[j]);
                outs[j] = NULL;
            }
        }
    }
    if (st == QL_OK && co->failed)
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory caching activations");
    if (st != QL_OK && st != QL_ERR_CANCELLED)
        ql_fail_prefix(err, st, "reference run");
    return st;
}
