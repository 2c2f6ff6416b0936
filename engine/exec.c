/* The float executor. Nodes run in topological order; each output is sized
 * by its op's infer function from the actual inputs (so a dynamic batch
 * just works), and every intermediate buffer is released as soon as its last
 * consumer has run, which keeps peak memory near the widest cut of the graph. */
#include "exec.h"
#include "exec_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "memplan.h"
#include "op.h"
#include "pool.h"
#include "quant.h"

#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
#include <cblas.h>
#endif
#include <pthread.h>
#ifdef HAVE_BLAS_THREAD_SHUTDOWN_
void blas_thread_shutdown_(void); /* OpenBLAS's own, not in cblas.h */
#endif


/* The engine splits work itself; BLAS threads would oversubscribe and make
 * results depend on the thread count. A threaded OpenBLAS also starts its
 * workers when it loads, and they spin on the CPU for their first tenth of
 * a second or so: on two cores that took one from our own threads at the
 * start of every run. Once BLAS runs single-threaded its calls stay in the
 * caller's thread, so the idle workers are stopped for good. */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#ifdef HAVE_BLAS_THREAD_SHUTDOWN_
    blas_thread_shutdown_();
#endif
#endif
}


/* Clamp range of a Relu or Clip node with constant bounds; false otherwise. */
static bool clamp_range(const ql_graph *g, const ql_node *a, float *lo, float *hi)
{
    *lo = -INFINITY;
    *hi = INFINITY;
    if (a->op == QL_OP_RELU) {
        *lo = 0.0f;
        return true;
    }
    if (a->op != QL_OP_CLIP)
        return false;
    if (ql_node_attr(a, "min") || ql_node_attr(a, "max")) {
        *lo = ql_attr_float(a, "min", -INFINITY);
        *hi = ql_attr_float(a, "max", INFINITY);
    }
    for (int k = 1; k < a->n_in && k < 3; k++) {
        if (a->in[k] < 0)
            continue;
        const ql_tensor *t = g->values[a->in[k]].constant;
        if (!t || t->dtype != QL_F32 || ql_tensor_numel(t) != 1)
            return false;
        *(k == 1 ? lo : hi) = *(const float *)t->data;
    }
    return true;
}

static void plan_fusion(ql_exec *x)
{
    const ql_graph *g = x->g;
    for (int i = 0; i < g->n_nodes; i++)
        x->fused_act[i] = x->fused_into[i] = x->fused_add[i] = x->add_other[i] = -1;
    const char *want = x->opts.observe;
    if (x->opts.observer && !want)
        return;
    for (int j = 0; j < g->n_nodes; j++) {
        const ql_node *a = &g->nodes[j];
        if ((a->op != QL_OP_RELU && a->op != QL_OP_CLIP) || a->n_in < 1 || a->in[0] < 0)
            continue;
        const ql_value *v = &g->values[a->in[0]];
        if (v->producer < 0 || v->is_output || v->n_consumers != 1 || v->dtype != QL_F32)
            continue;
        const ql_node *p = &g->nodes[v->producer];
        if (!ql_op_get(p->op)->fuses_clamp || p->out[0] != a->in[0] || x->fused_act[v->producer] >= 0)
            continue;
        /* the intermediate must not be needed by the observer or quantized */
        if ((x->opts.observer && want[a->in[0]]) || (x->quant.act && x->quant.act[a->in[0]]))
            continue;
        float lo, hi;
        if (!clamp_range(g, a, &lo, &hi))
            continue;
        x->fused_act[v->producer] = j;
        x->fused_into[j] = v->producer;
        x->fuse_lo[v->producer] = lo;
        x->fuse_hi[v->producer] = hi;
    }
    /* Conv -> Add: the conv adds the other operand as it stores (then the
     * Add's own fused Relu/Clip, if any), which saves a pass over both */
    for (int j = 0; j < g->n_nodes; j++) {
        const ql_node *a = &g->nodes[j];
        if (a->op != QL_OP_ADD || a->n_in != 2 || a->n_out != 1 || a->out[0] < 0)
            continue;
        for (int k = 0; k < 2; k++) {
            int vi = a->in[k], o = a->in[1 - k];
            if (vi < 0 || o < 0 || vi == o)
                continue;
            const ql_value *v = &g->values[vi];
            int p = v->producer;
            if (p < 0 || g->nodes[p].op != QL_OP_CONV || g->nodes[p].out[0] != vi ||
                v->is_output || v->n_consumers != 1 || v->dtype != QL_F32 ||
                g->values[o].dtype != QL_F32 || x->fused_act[p] >= 0 || x->fused_add[p] >= 0)
                continue;
            /* the other operand must exist when the conv runs */
            if (g->values[o].producer >= p)
                continue;
            if ((x->opts.observer && want[vi]) || (x->quant.act && x->quant.act[vi]))
                continue;
            x->fused_add[p] = j;
            x->add_other[p] = o;
            break;
        }
    }
}

static const char *label(const ql_node *n) { return n->name[0] ? n->name : n->op_type; }

ql_status ql_exec_new(ql_graph *g, const ql_exec_opts *opts, ql_exec **out, ql_error *err)
{
    ql_exec *x = calloc(1, sizeof *x);
    if (!x)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory creating an executor");
    x->g = g;
    if (opts)
        x->opts = *opts;
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        if (n->op < 0 || n->n_in > QL_MAX_IO || n->n_out > QL_MAX_IO) {
            ql_exec_free(x);
            return ql_fail(err, QL_ERR_UNSUPPORTED, "node '%s': op %s cannot be executed",
                           label(n), n->op_type);
        }
    }
    pthread_once(&blas_once, blas_single);
    x->pool = ql_pool_new(x->opts.n_threads);
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    x->slots = calloc(nv, sizeof *x->slots);
    x->have = calloc(nv, 1);
    x->refs = calloc(nv, sizeof *x->refs);
    size_t nn = (size_t)(g->n_nodes ? g->n_nodes : 1);
    x->fused_act = malloc(nn * sizeof *x->fused_act);
    x->fused_into = malloc(nn * sizeof *x->fused_into);
    x->fuse_lo = malloc(nn * sizeof *x->fuse_lo);
    x->fuse_hi = malloc(nn * sizeof *x->fuse_hi);
    x->fused_add = malloc(nn * sizeof *x->fused_add);
    x->add_other = malloc(nn * sizeof *x->add_other);
    x->add_done = calloc(nn, 1);
    if (x->opts.reuse_buffers)
        x->mp = ql_memplan_new();
    if (!x->pool || !x->slots || !x->have || !x->refs || !x->fused_act || !x->fused_into ||
        !x->fuse_lo || !x->fuse_hi || !x->fused_add || !x->add_other || !x->add_done ||
        (x->opts.reuse_buffers && !x->mp)) {
        ql_exec_free(x);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory creating an executor");
    }
    plan_fusion(x);
    ql_ctx_init(&x->ctx, x->pool);
    x->split_ok = x->opts.split_samples && !x->opts.observer && ql_graph_samples_apart(g);
    *out = x;
    return QL_OK;
}

void ql_exec_free(ql_exec *x)
{
    if (!x)
        return;
    for (int t = 0; t < x->n_sub; t++)
        ql_exec_free(x->sub[t]);
    free(x->sub);
    if (x->slots)
        for (int v = 0; v < x->g->n_values; v++) {
            if (x->mp && ql_memplan_in_arena(x->mp, x->slots[v].data))
                continue; /* the arena's (none is held between runs) */
            ql_tensor_release(&x->slots[v]);
        }
    for (int k = 0; k < x->n_spare; k++)
        ql_aligned_free(x->spare[k]);
    ql_memplan_free(x->mp);
    ql_ctx_destroy(&x->ctx);
    ql_pool_free(x->pool);
    free(x->slots);
    free(x->have);
    free(x->refs);
    free(x->fused_act);
    free(x->fused_into);
    free(x->fuse_lo);
    free(x->fuse_hi);
    free(x->fused_add);
    free(x->add_other);
    free(x->add_done);
    free(x);
}

int ql_exec_threads(const ql_exec *x) { return ql_pool_threads(x->pool); }

ql_exec_ctx *ql_exec_context(ql_exec *x) { return &x->ctx; }

ql_status ql_exec_set_quant(ql_exec *x, const ql_exec_quant *q, ql_error *err)
{
    (void)err;
    memset(&x->quant, 0, sizeof x->quant);
    if (q)
        x->quant = *q;
    plan_fusion(x);
    return QL_OK;
}

/* ---- value buffers (opts.reuse_buffers) ---- */

static size_t buf_bytes(const ql_tensor *t) { return (ql_tensor_nbytes(t) + 63) & ~(size_t)63; }

/* Releases a value's buffer, keeping it for reuse while the executor stays
 * within its peak (evicting the smallest spare when the list is full). */
static void slot_release(ql_exec *x, ql_tensor *t)
{
    if (!x->opts.reuse_buffers || !t->owns || !t->data) {
        ql_tensor_release(t);
        return;
    }
    if (ql_memplan_release(x->mp, t->data)) {
        t->data = NULL;
        t->owns = false;
        return;
    }
    size_t b = buf_bytes(t), held = 0;
    x->live -= b < x->live ? b : x->live;
    for (int k = 0; k < x->n_spare; k++)
        held += x->spare_bytes[k];
    if (x->n_spare == QL_SPARE_MAX) {
        int s = 0;
        for (int k = 1; k < x->n_spare; k++)
            s = x->spare_bytes[k] < x->spare_bytes[s] ? k : s;
        held -= x->spare_bytes[s];
        ql_aligned_free(x->spare[s]);
        x->spare[s] = x->spare[--x->n_spare];
        x->spare_bytes[s] = x->spare_bytes[x->n_spare];
    }
    if (x->live + held + b <= x->peak) {
        x->spare[x->n_spare] = t->data;
        x->spare_bytes[x->n_spare++] = b;
    } else {
        ql_aligned_free(t->data);
    }
    t->data = NULL;
    t->owns = false;
}

/* Allocates a value's buffer for its current shape: a spare of that exact
 * size, or a new one. Contents are undefined, as with ql_tensor_alloc. */
static ql_status slot_alloc(ql_exec *x, ql_tensor *t)
{
    if (!x->opts.reuse_buffers)
        return ql_tensor_alloc(t);
    slot_release(x, t);
    for (int i = 0; i < t->ndim; i++)
        if (t->dims[i] < 0)
            return QL_ERR_SHAPE;
    size_t b = buf_bytes(t);
    if ((t->data = ql_memplan_alloc(x->mp, b))) {
        t->owns = true;
        return QL_OK;
    }
    int k = 0;
    while (k < x->n_spare && x->spare_bytes[k] != b)
        k++;
    if (k < x->n_spare) {
        t->data = x->spare[k];
        x->spare[k] = x->spare[--x->n_spare];
        x->spare_bytes[k] = x->spare_bytes[x->n_spare];
    } else if (!(t->data = ql_aligned_alloc(b))) {
        return QL_ERR_NOMEM;
    }
    ql_memplan_note(x->mp, t->data);
    t->owns = true;
    x->live += b;
    x->peak = x->live > x->peak ? x->live : x->peak;
    return QL_OK;
}

/* Fake-quantizes value v in place if the plan says so; a slot that only
 * views someone else's memory (a feed) is copied first. */
static ql_status quantize_slot(ql_exec *x, int v, ql_error *err)
{
    const ql_encoding *e = x->quant.act ? x->quant.act[v] : NULL;
    ql_tensor *s = &x->slots[v];
    if (!e || s->dtype != QL_F32)
        return QL_OK;
    if (!s->owns) {
        ql_tensor c = *s;
        c.data = NULL;
        c.owns = false;
        if (slot_alloc(x, &c) != QL_OK)
            return ql_fail(err, QL_ERR_NOMEM, "out of memory quantizing '%s'",
                           x->g->values[v].name);
        memcpy(c.data, s->data, ql_tensor_nbytes(s));
        *s = c;
    }
    ql_status st = ql_fake_quant(s, e, err);
    if (st != QL_OK)
        return ql_fail_prefix(err, st, "quantizing '%s'", x->g->values[v].name);
    return QL_OK;
}

static void reset_slots(ql_exec *x)
{
    for (int v = 0; v < x->g->n_values; v++) {
        slot_release(x, &x->slots[v]);
        x->have[v] = 0;
    }
}

static ql_status check_input(const ql_value *val, const ql_tensor *t, ql_error *err)
{
    char a[96], b[96];
    if (t->dtype != val->dtype)
        return ql_fail(err, QL_ERR_DATA, "input '%s' expects %s data, got %s", val->name,
                       ql_dtype_info(val->dtype)->name, ql_dtype_info(t->dtype)->name);
    if (val->ndim < 0)
        return QL_OK;
    int ok = t->ndim == val->ndim;
    for (int i = 0; ok && i < val->ndim; i++)
        if (val->dims[i] >= 0 && val->dims[i] != t->dims[i])
            ok = 0;
    if (!ok)
        return ql_fail(err, QL_ERR_SHAPE, "input '%s' expects shape %s, got %s", val->name,
                       ql_shape_str(val->ndim, val->dims, a, sizeof a),
                       ql_shape_str(t->ndim, t->dims, b, sizeof b));
    return QL_OK;
}

/* Hands a value's runtime tensor to the caller as a new owned tensor. */
static ql_tensor *take_output(ql_exec *x, int v)
{
    ql_tensor *s = &x->slots[v];
    if (!s->owns)
        return ql_tensor_clone(s);
    if (x->mp && ql_memplan_in_arena(x->mp, s->data)) {
        /* arena memory stays: a copy goes out (and the next plan leaves
         * this buffer out of the arena) */
        ql_memplan_taken(x->mp, s->data);
        return ql_tensor_clone(s);
    }
    ql_tensor *t = ql_tensor_wrap(s->dtype, s->ndim, s->dims, s->data);
    if (!t)
        return NULL;
    if (x->mp)
        ql_memplan_taken(x->mp, s->data);
    if (x->opts.reuse_buffers) /* the caller owns it now */
        x->live -= buf_bytes(s) < x->live ? buf_bytes(s) : x->live;
    t->owns = true;
    s->owns = false;
    s->data = NULL;
    x->have[v] = 0;
    return t;
}

/* Hands value from's runtime tensor over to value to (a fused node's
 * result becomes the output of the last node it stands for). */
static void move_slot(ql_exec *x, int from, int to)
{
    slot_release(x, &x->slots[to]);
    x->slots[to] = x->slots[from];
    x->have[to] = 1;
    memset(&x->slots[from], 0, sizeof x->slots[from]);
    x->have[from] = 0;
}

static void drop_ref(ql_exec *x, int v)
{
    if (v < 0 || --x->refs[v] > 0 || x->g->values[v].is_output)
        return;
    slot_release(x, &x->slots[v]); /* a no-op for fed and constant views */
    x->have[v] = 0;
}

static ql_status run_node(ql_exec *x, int i, ql_error *err)
{
    ql_graph *g = x->g;
    ql_node *n = &g->nodes[i];
    const ql_op_def *def = ql_op_get(n->op);
    const ql_tensor *in[QL_MAX_IO];
    ql_tensor *out[QL_MAX_IO];
    ql_status st;

    for (int j = 0; j < n->n_in; j++) {
        int v = n->in[j];
        if (v < 0) {
            in[j] = NULL;
            continue;
        }
        if (!x->have[v])
            return ql_fail(err, QL_ERR_ARG, "node '%s' (%s) needs '%s', which was not supplied",
                           label(n), n->op_type, g->values[v].name);
        in[j] = &x->slots[v];
    }
    for (int j = 0; j < n->n_out; j++) {
        int v = n->out[j];
        if (v < 0) {
            /* an unused optional output still needs a header to write into */
            out[j] = NULL;
            continue;
        }
        slot_release(x, &x->slots[v]);
        memset(&x->slots[v], 0, sizeof x->slots[v]);
        out[j] = &x->slots[v];
    }
    ql_tensor unused[QL_MAX_IO];
    for (int j = 0; j < n->n_out; j++)
        if (!out[j]) {
            memset(&unused[j], 0, sizeof unused[j]);
            out[j] = &unused[j];
        }
    st = def->infer(n, in, out, err);
    if (st == QL_OK)
        for (int j = 0; j < n->n_out && st == QL_OK; j++)
            if (out[j]->ndim < 0 ||
                (n->out[j] >= 0 ? slot_alloc(x, out[j]) : ql_tensor_alloc(out[j])) != QL_OK)
                st = ql_fail(err, out[j]->ndim < 0 ? QL_ERR_SHAPE : QL_ERR_NOMEM,
                             "cannot size output %d", j);
    if (st == QL_OK && x->pend_add) {
        /* a residual add is fused only onto an output of exactly its shape
         * (no broadcast); otherwise the Add node runs by itself */
        const ql_tensor *ad = x->pend_add;
        bool same = ad->dtype == QL_F32 && out[0]->dtype == QL_F32 && ad->ndim == out[0]->ndim;
        for (int d = 0; same && d < ad->ndim; d++)
            same = ad->dims[d] == out[0]->dims[d];
        if (same) {
            x->ctx.post_add = ad->data;
        } else {
            x->pend_add = NULL;
            x->ctx.post_clamp = 0;
        }
    }
    if (st == QL_OK)
        st = def->run_f32(n, in, out, &x->ctx, err);
    x->ctx.post_add = NULL;
    for (int j = 0; j < n->n_out; j++)
        if (n->out[j] < 0)
            ql_tensor_release(&unused[j]);
    if (st != QL_OK)
        return ql_fail_prefix(err, st, "node '%s' (%s)", label(n), n->op_type);
    for (int j = 0; j < n->n_out; j++)
        if (n->out[j] >= 0)
            x->have[n->out[j]] = 1;
    return QL_OK;
}

/* What a run's allocations depend on: the nodes run, the feeds' places and
 * shapes, the fake-quant plan and the fusions (a plan made for one
 * signature is checked allocation by allocation anyway, see memplan.h). */
static uint64_t run_signature(const ql_exec *x, const char *run, int n_feeds, const int *ids,
                              const ql_tensor *const *feeds)
{
    size_t nn = (size_t)x->g->n_nodes;
    uint64_t h = ql_fnv1a(QL_FNV_INIT, run, nn);
    h = ql_fnv1a(h, &n_feeds, sizeof n_feeds);
    for (int k = 0; k < n_feeds; k++) {
        h = ql_fnv1a(h, &ids[k], sizeof ids[k]);
        h = ql_fnv1a(h, &feeds[k]->dtype, sizeof feeds[k]->dtype);
        h = ql_fnv1a(h, &feeds[k]->ndim, sizeof feeds[k]->ndim);
        h = ql_fnv1a(h, feeds[k]->dims, (size_t)feeds[k]->ndim * sizeof *feeds[k]->dims);
    }
    h = ql_fnv1a(h, &x->quant.act, sizeof x->quant.act);
    h = ql_fnv1a(h, &x->quant.constants, sizeof x->quant.constants);
    h = ql_fnv1a(h, x->fused_act, nn * sizeof *x->fused_act);
    return ql_fnv1a(h, x->fused_add, nn * sizeof *x->fused_add);
}

ql_status ql_exec_run_nodes(ql_exec *x, const char *run, int n_feeds, const int *feed_ids,
                            const ql_tensor *const *feeds, ql_tensor **outputs, ql_error *err)
{
    ql_graph *g = x->g;
    ql_status st = QL_OK;

    reset_slots(x);
    if (x->mp)
        ql_memplan_begin(x->mp, run_signature(x, run, n_feeds, feed_ids, feeds));
    memset(x->add_done, 0, (size_t)g->n_nodes);
    for (int v = 0; v < g->n_values; v++) {
        x->refs[v] = 0;
        if (g->values[v].constant) {
            const ql_tensor *c = x->quant.constants && x->quant.constants[v]
                                     ? x->quant.constants[v]
                                     : g->values[v].constant;
            x->slots[v] = *c;
            x->slots[v].owns = false;
            x->have[v] = 1;
        }
    }
    for (int k = 0; k < n_feeds; k++) {
        int v = feed_ids[k];
        if (v < 0 || v >= g->n_values) {
            st = ql_fail(err, QL_ERR_ARG, "feed %d names no value", k);
            goto cleanup;
        }
        x->slots[v] = *feeds[k];
        x->slots[v].owns = false;
        x->have[v] = 1;
        /* a fed value gets the quantizer the plan gives it (idempotent when
         * it was quantized already) */
        if ((st = quantize_slot(x, v, err)) != QL_OK)
            goto cleanup;
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (run[i])
            for (int j = 0; j < g->nodes[i].n_in; j++)
                if (g->nodes[i].in[j] >= 0)
                    x->refs[g->nodes[i].in[j]]++;

    for (int i = 0; i < g->n_nodes; i++) {
        if (!run[i])
            continue;
        if (x->opts.cancel && *x->opts.cancel) {
            st = ql_fail(err, QL_ERR_CANCELLED, "run cancelled");
            goto cleanup;
        }
        const ql_node *n = &g->nodes[i];
        int producer = x->fused_into[i];
        if (x->add_done[i] || (producer >= 0 && run[producer])) {
            /* the producer's kernel already applied this Add or activation */
            for (int j = 0; j < n->n_in; j++)
                drop_ref(x, n->in[j]);
            continue;
        }
        int add = x->fused_add[i];
        if (add >= 0 && (!run[add] || !x->have[x->add_other[i]]))
            add = -1; /* the Add does not run, or its operand is not there: unfused */
        /* the clamp that ends the fused chain: this node's, or the Add's */
        int cl = add >= 0 ? add : i, act = x->fused_act[cl];
        if (act >= 0 && !run[act])
            act = -1; /* cannot happen for closed node sets; run unfused */
        x->ctx.post_clamp = act >= 0;
        x->ctx.post_lo = act >= 0 ? x->fuse_lo[cl] : 0.0f;
        x->ctx.post_hi = act >= 0 ? x->fuse_hi[cl] : 0.0f;
        x->pend_add = add >= 0 ? &x->slots[x->add_other[i]] : NULL;
        st = run_node(x, i, err);
        if (add >= 0 && !x->pend_add)
            add = act = -1; /* shapes differ: run_node ran the conv plain */
        x->pend_add = NULL;
        x->ctx.post_clamp = 0;
        if (st != QL_OK)
            goto cleanup;
        /* the result is the value at the end of the fused chain */
        int last = -1;
        if (add >= 0) {
            last = g->nodes[add].out[0];
            move_slot(x, n->out[0], last);
            x->add_done[add] = 1;
        }
        if (act >= 0) {
            int to = g->nodes[act].out[0];
            move_slot(x, last >= 0 ? last : n->out[0], to);
            last = to;
        }
        for (int j = 0; j < n->n_out; j++) {
            int v = j == 0 && last >= 0 ? last : n->out[j];
            if (v < 0)
                continue;
            bool watch = x->opts.observer && (!x->opts.observe || x->opts.observe[v]);
            if (watch && x->opts.observe_raw &&
                !x->opts.observer(x->opts.observer_user, g, i, v, &x->slots[v])) {
                st = ql_fail(err, QL_ERR_CANCELLED, "run cancelled by observer");
                goto cleanup;
            }
            if ((st = quantize_slot(x, v, err)) != QL_OK)
                goto cleanup;
            if (watch && !x->opts.observe_raw &&
                !x->opts.observer(x->opts.observer_user, g, i, v, &x->slots[v])) {
                st = ql_fail(err, QL_ERR_CANCELLED, "run cancelled by observer");
                goto cleanup;
            }
            if (x->refs[v] == 0 && !g->values[v].is_output) {
                slot_release(x, &x->slots[v]);
                x->have[v] = 0;
            }
        }
        for (int j = 0; j < n->n_in; j++)
            drop_ref(x, n->in[j]);
    }
    for (int j = 0; j < g->n_outputs; j++) {
        int v = g->outputs[j];
        if (!x->have[v]) {
            st = ql_fail(err, QL_ERR_ARG, "output '%s' was neither computed nor supplied",
                         g->values[v].name);
            goto cleanup;
        }
    }
    for (int j = 0; j < g->n_outputs; j++) {
        outputs[j] = take_output(x, g->outputs[j]);
        if (!outputs[j]) {
            for (int k = 0; k < j; k++) {
                ql_tensor_free(outputs[k]);
                outputs[k] = NULL;
            }
            st = ql_fail(err, QL_ERR_NOMEM, "out of memory returning outputs");
            goto cleanup;
        }
    }
cleanup:
    reset_slots(x);
    if (x->mp && ql_memplan_end(x->mp, st == QL_OK)) {
        /* the arena now holds what the spares held for this kind of run */
        for (int k = 0; k < x->n_spare; k++)
            ql_aligned_free(x->spare[k]);
        x->n_spare = 0;
    }
    return st;
}

ql_status ql_exec_run_from(ql_exec *x, int start_node, int n_feeds, const int *feed_ids,
                           const ql_tensor *const *feeds, ql_tensor **outputs, ql_error *err)
{
    ql_graph *g = x->g;
    if (start_node < 0 || start_node > g->n_nodes)
        return ql_fail(err, QL_ERR_ARG, "start node %d out of range", start_node);
    char *run = malloc((size_t)g->n_nodes + 1);
    if (!run)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes; i++)
        run[i] = i >= start_node;
    ql_status st = ql_exec_run_nodes(x, run, n_feeds, feed_ids, feeds, outputs, err);
    free(run);
    return st;
}

ql_status ql_exec_run(ql_exec *x, const ql_tensor *const *inputs, ql_tensor **outputs,
                      ql_error *err)
{
    ql_graph *g = x->g;
    int ids[QL_MAX_IO * 4];
    if (g->n_inputs > (int)(sizeof ids / sizeof ids[0]))
        return ql_fail(err, QL_ERR_UNSUPPORTED, "too many graph inputs (%d)", g->n_inputs);
    for (int i = 0; i < g->n_inputs; i++) {
        ql_status st = check_input(&g->values[g->inputs[i]], inputs[i], err);
        if (st != QL_OK)
            return st;
        ids[i] = g->inputs[i];
    }
    int64_t n = g->n_inputs > 0 && inputs[0]->ndim >= 1 ? inputs[0]->dims[0] : 0;
    bool split = x->split_ok && n >= 2;
    for (int i = 1; i < g->n_inputs && split; i++)
        split = inputs[i]->ndim >= 1 && inputs[i]->dims[0] == n;
    if (split)
        return ql_exec_run_split(x, inputs, n, outputs, err);
    return ql_exec_run_from(x, 0, g->n_inputs, ids, inputs, outputs, err);
}
