/* Graph construction, attribute look-ups, ordering and the shape-inference
 * driver. Values are addressed by index; a hash map finds them by name. */
#include "graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op.h"
#include "pool.h"

/* ---------------------------------------------------------------------------
 * name map: open addressing, FNV-1a, value indices
 * ------------------------------------------------------------------------- */
struct ql_name_map {
    int *slots; /* -1 empty, else value index */
    size_t cap; /* power of two */
    size_t used;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int map_grow(ql_graph *g);

static int map_lookup(const ql_graph *g, const char *name)
{
    const struct ql_name_map *m = g->names;
    if (!m || !m->cap)
        return -1;
    for (size_t i = hash_str(name) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int v = m->slots[i];
        if (v < 0)
            return -1;
        if (strcmp(g->values[v].name, name) == 0)
            return v;
    }
}

static void map_put_nogrow(struct ql_name_map *m, const char *name, int v)
{
    size_t i = hash_str(name) & (m->cap - 1);
    while (m->slots[i] >= 0)
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = v;
    m->used++;
}

static int map_rebuild(ql_graph *g, size_t cap)
{
    struct ql_name_map *m = g->names;
    int *slots = malloc(cap * sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < cap; i++)
        slots[i] = -1;
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = 0;
    for (int v = 0; v < g->n_values; v++)
        map_put_nogrow(m, g->values[v].name, v);
    return 0;
}

static int map_grow(ql_graph *g)
{
    struct ql_name_map *m = g->names;
    if ((m->used + 1) * 2 <= m->cap)
        return 0;
    return map_rebuild(g, m->cap ? m->cap * 2 : 64);
}

/* ---------------------------------------------------------------------------
 * construction
 * ------------------------------------------------------------------------- */
ql_graph *ql_graph_new(void)
{
    ql_graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->names = calloc(1, sizeof *g->names);
    if (!g->names) {
        free(g);
        return NULL;
    }
    g->name = strdup("");
    g->source = strdup("");
    return g;
}

void ql_attr_clear(ql_attr *a)
{
    free(a->name);
    free(a->s);
    free(a->floats);
    free(a->ints);
    if (a->strings)
        for (int i = 0; i < a->n; i++)
            free(a->strings[i]);
    free(a->strings);
    ql_tensor_free(a->t);
    memset(a, 0, sizeof *a);
}

static void node_clear(ql_node *n)
{
    if (n->state && n->op >= 0 && n->op < QL_OP_COUNT && ql_op_get(n->op)->release)
        ql_op_get(n->op)->release(n);
    free(n->name);
    free(n->op_type);
    free(n->domain);
    free(n->in);
    free(n->out);
    for (int i = 0; i < n->n_attr; i++)
        ql_attr_clear(&n->attr[i]);
    free(n->attr);
    memset(n, 0, sizeof *n);
}

void ql_graph_free(ql_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_nodes; i++)
        node_clear(&g->nodes[i]);
    for (int i = 0; i < g->n_values; i++) {
        free(g->values[i].name);
        ql_tensor_free(g->values[i].constant);
    }
    free(g->nodes);
    free(g->values);
    free(g->inputs);
    free(g->outputs);
    if (g->names)
        free(g->names->slots);
    free(g->names);
    free(g->name);
    free(g->source);
    free(g);
}

int ql_graph_find_value(const ql_graph *g, const char *name) { return map_lookup(g, name); }

int ql_graph_value(ql_graph *g, const char *name)
{
    int v = map_lookup(g, name);
    if (v >= 0)
        return v;
    if (g->n_values == g->cap_values) {
        int cap = g->cap_values ? g->cap_values * 2 : 64;
        ql_value *nv = realloc(g->values, (size_t)cap * sizeof *nv);
        if (!nv)
            return -1;
        g->values = nv;
        g->cap_values = cap;
    }
    ql_value *val = &g->values[g->n_values];
    memset(val, 0, sizeof *val);
    val->name = strdup(name);
    if (!val->name)
        return -1;
    val->ndim = -1;
    val->producer = -1;
    val->dtype = QL_F32;
    v = g->n_values++;
    if (map_grow(g) != 0) {
        free(val->name);
        g->n_values--;
        return -1;
    }
    map_put_nogrow(g->names, name, v);
    return v;
}

static int *dup_ints(const int *src, int n)
{
    int *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    if (d && n)
        memcpy(d, src, (size_t)n * sizeof *d);
    return d;
}

int ql_graph_add_node(ql_graph *g, const char *name, const char *op_type, const char *domain,
                      int n_in, const int *in, int n_out, const int *out)
{
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
        ql_node *nn = realloc(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn)
            return -1;
        g->nodes = nn;
        g->cap_nodes = cap;
    }
    ql_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = strdup(name ? name : "");
    n->op_type = strdup(op_type);
    n->domain = strdup(domain ? domain : "");
    n->in = dup_ints(in, n_in);
    n->out = dup_ints(out, n_out);
    n->n_in = n_in;
    n->n_out = n_out;
    n->op = -1;
    if (!n->name || !n->op_type || !n->domain || !n->in || !n->out) {
        node_clear(n);
        return -1;
    }
    return g->n_nodes++;
}

ql_attr *ql_node_add_attr(ql_graph *g, int node, const char *name, ql_attr_type type)
{
    ql_node *n = &g->nodes[node];
    ql_attr *na = realloc(n->attr, (size_t)(n->n_attr + 1) * sizeof *na);
    if (!na)
        return NULL;
    n->attr = na;
    ql_attr *a = &na[n->n_attr];
    memset(a, 0, sizeof *a);
    a->name = strdup(name);
    if (!a->name)
        return NULL;
    a->type = type;
    n->n_attr++;
    return a;
}

/* ---------------------------------------------------------------------------
 * attributes
 * ------------------------------------------------------------------------- */
const ql_attr *ql_node_attr(const ql_node *n, const char *name)
{
    for (int i = 0; i < n->n_attr; i++)
        if (strcmp(n->attr[i].name, name) == 0)
            return &n->attr[i];
    return NULL;
}

int64_t ql_attr_int(const ql_node *n, const char *name, int64_t dflt)
{
    const ql_attr *a = ql_node_attr(n, name);
    return a && a->type == QL_ATTR_INT ? a->i : dflt;
}

float ql_attr_float(const ql_node *n, const char *name, float dflt)
{
    const ql_attr *a = ql_node_attr(n, name);
    if (!a)
        return dflt;
    if (a->type == QL_ATTR_FLOAT)
        return a->f;
    if (a->type == QL_ATTR_INT)
        return (float)a->i;
    return dflt;
}

const char *ql_attr_string(const ql_node *n, const char *name, const char *dflt)
{
    const ql_attr *a = ql_node_attr(n, name);
    return a && a->type == QL_ATTR_STRING ? a->s : dflt;
}

const int64_t *ql_attr_ints(const ql_node *n, const char *name, int *count)
{
    const ql_attr *a = ql_node_attr(n, name);
    if (!a || a->type != QL_ATTR_INTS) {
        *count = 0;
        return NULL;
    }
    *count = a->n;
    return a->ints;
}

const float *ql_attr_floats(const ql_node *n, const char *name, int *count)
{
    const ql_attr *a = ql_node_attr(n, name);
    if (!a || a->type != QL_ATTR_FLOATS) {
        *count = 0;
        return NULL;
    }
    *count = a->n;
    return a->floats;
}

/* ---------------------------------------------------------------------------
 * structure: producers, order, compaction
 * ------------------------------------------------------------------------- */
void ql_graph_link(ql_graph *g)
{
    for (int v = 0; v < g->n_values; v++) {
        g->values[v].producer = -1;
        g->values[v].n_consumers = 0;
        g->values[v].is_output = false;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0)
                g->values[n->out[j]].producer = i;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0)
                g->values[n->in[j]].n_consumers++;
    }
    for (int j = 0; j < g->n_outputs; j++)
        g->values[g->outputs[j]].is_output = true;
}

static const char *node_label(const ql_node *n) { return n->name[0] ? n->name : n->op_type; }

ql_status ql_graph_toposort(ql_graph *g, ql_error *err)
{
    ql_status st = QL_OK;
    int nn = g->n_nodes;
    int *order = NULL, *pending = NULL;
    char *ready = NULL;
    ql_node *sorted = NULL;

    ql_graph_link(g);
    /* a value must be an input, a constant or produced by a node */
    for (int i = 0; i < nn; i++) {
        const ql_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            if (v < 0)
                continue;
            const ql_value *val = &g->values[v];
            if (!val->is_input && !val->constant && val->producer < 0)
                return ql_fail(err, QL_ERR_FORMAT,
                               "node '%s' (%s) reads '%s', which no node produces and is "
                               "neither a graph input nor an initializer",
                               node_label(n), n->op_type, val->name);
        }
    }
    for (int j = 0; j < g->n_outputs; j++) {
        const ql_value *val = &g->values[g->outputs[j]];
        if (!val->is_input && !val->constant && val->producer < 0)
            return ql_fail(err, QL_ERR_FORMAT, "graph output '%s' is never produced", val->name);
    }
    order = malloc((size_t)(nn ? nn : 1) * sizeof *order);
    pending = calloc((size_t)(nn ? nn : 1), sizeof *pending);
    ready = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    sorted = malloc((size_t)(nn ? nn : 1) * sizeof *sorted);
    if (!order || !pending || !ready || !sorted) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory sorting the graph");
        goto cleanup;
    }
    for (int v = 0; v < g->n_values; v++)
        ready[v] = g->values[v].producer < 0;
    /* repeated scans keep file order among independent nodes (stable) */
    int done = 0;
    char *placed = calloc((size_t)(nn ? nn : 1), 1);
    if (!placed) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory sorting the graph");
        goto cleanup;
    }
    while (done < nn) {
        int progressed = 0;
        for (int i = 0; i < nn; i++) {
            if (placed[i])
                continue;
            const ql_node *n = &g->nodes[i];
            int ok = 1;
            for (int j = 0; j < n->n_in && ok; j++)
                if (n->in[j] >= 0 && !ready[n->in[j]])
                    ok = 0;
            if (!ok)
                continue;
            placed[i] = 1;
            order[done++] = i;
            progressed = 1;
            for (int j = 0; j < n->n_out; j++)
                if (n->out[j] >= 0)
                    ready[n->out[j]] = 1;
        }
        if (!progressed) {
            int i = 0;
            while (placed[i])
                i++;
            free(placed);
            st = ql_fail(err, QL_ERR_FORMAT, "the graph has a cycle through node '%s' (%s)",
                         node_label(&g->nodes[i]), g->nodes[i].op_type);
            goto cleanup;
        }
    }
    free(placed);
    for (int i = 0; i < nn; i++)
        sorted[i] = g->nodes[order[i]];
    if (nn > 0) /* g->nodes may be NULL in a graph without nodes */
        memcpy(g->nodes, sorted, (size_t)nn * sizeof *sorted);
    ql_graph_link(g);
cleanup:
    free(order);
    free(pending);
    free(ready);
    free(sorted);
    return st;
}

void ql_graph_compact(ql_graph *g)
{
    int w = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].dead) {
            node_clear(&g->nodes[i]);
            continue;
        }
        if (w != i)
            g->nodes[w] = g->nodes[i];
        w++;
    }
    g->n_nodes = w;

    /* keep values that are referenced; renumber */
    char *used = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    int *remap = malloc((size_t)(g->n_values ? g->n_values : 1) * sizeof *remap);
    if (!used || !remap) { /* compaction is an optimisation: skip it on OOM */
        free(used);
        free(remap);
        ql_graph_link(g);
        return;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0)
                used[n->in[j]] = 1;
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0)
                used[n->out[j]] = 1;
    }
    for (int j = 0; j < g->n_inputs; j++)
        used[g->inputs[j]] = 1;
    for (int j = 0; j < g->n_outputs; j++)
        used[g->outputs[j]] = 1;
    int nv = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (!used[v]) {
            free(g->values[v].name);
            ql_tensor_free(g->values[v].constant);
            remap[v] = -1;
            continue;
        }
        remap[v] = nv;
        if (nv != v)
            g->values[nv] = g->values[v];
        nv++;
    }
    g->n_values = nv;
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0)
                n->in[j] = remap[n->in[j]];
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0)
                n->out[j] = remap[n->out[j]];
    }
    for (int j = 0; j < g->n_inputs; j++)
        g->inputs[j] = remap[g->inputs[j]];
    for (int j = 0; j < g->n_outputs; j++)
        g->outputs[j] = remap[g->outputs[j]];
    free(used);
    free(remap);
    map_rebuild(g, g->names->cap ? g->names->cap : 64);
    ql_graph_link(g);
}

/* ---------------------------------------------------------------------------
 * ops: binding, shapes, preparation
 * ------------------------------------------------------------------------- */
/* Checks a bound node's input and output counts against its op's row, so
 * that no op ever reads a required slot that is absent. */
static ql_status check_arity(const ql_node *n, ql_error *err)
{
    const ql_op_def *def = ql_op_get(n->op);
    const char *what[2] = {"input", "output"};
    const int cnt[2] = {n->n_in, n->n_out}, lo[2] = {def->min_in, def->min_out},
              hi[2] = {def->max_in, def->max_out};
    const int *ids[2] = {n->in, n->out};
    for (int k = 0; k < 2; k++) {
        if (cnt[k] < lo[k] || (hi[k] != QL_IO_ANY && cnt[k] > hi[k])) {
            char range[48];
            if (hi[k] == QL_IO_ANY)
                snprintf(range, sizeof range, "at least %d", lo[k]);
            else if (lo[k] == hi[k])
                snprintf(range, sizeof range, "%d", lo[k]);
            else
                snprintf(range, sizeof range, "%d to %d", lo[k], hi[k]);
            return ql_fail(err, QL_ERR_FORMAT, "node '%s' (%s) has %d %s%s; the op takes %s",
                           node_label(n), n->op_type, cnt[k], what[k], cnt[k] == 1 ? "" : "s",
                           range);
        }
        for (int j = 0; j < lo[k]; j++)
            if (ids[k][j] < 0)
                return ql_fail(err, QL_ERR_FORMAT, "node '%s' (%s): required %s %d is empty",
                               node_label(n), n->op_type, what[k], j);
    }
    return QL_OK;
}

ql_status ql_graph_bind_ops(ql_graph *g, ql_error *err)
{
    /* collect unsupported op types, each with its node names */
    char msg[sizeof err->msg];
    size_t len = 0;
    int n_bad = 0, n_types = 0;
    msg[0] = '\0';
    char *seen = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), 1);
    if (!seen)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        n->op = ql_op_find(n->op_type, n->domain);
        if (n->op >= 0) {
            const ql_op_def *def = ql_op_get(n->op);
            if (!def->infer || !def->run_f32 || g->opset < def->since_version)
                n->op = -1;
        }
        if (n->op < 0)
            n_bad++;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ql_node *n = &g->nodes[i];
        if (n->op >= 0 || seen[i])
            continue;
        n_types++;
        if (len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s%s%s (", n_types > 1 ? ", " : "",
                                    n->domain[0] ? n->domain : "", n->domain[0] ? "." : "",
                                    n->op_type);
        int first = 1;
        for (int k = i; k < g->n_nodes; k++) {
            const ql_node *m = &g->nodes[k];
            if (m->op >= 0 || seen[k] || strcmp(m->op_type, n->op_type) != 0 ||
                strcmp(m->domain, n->domain) != 0)
                continue;
            seen[k] = 1;
            if (len < sizeof msg)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", first ? "" : ", ",
                                        m->name[0] ? m->name : "<unnamed>");
            first = 0;
        }
        if (len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len, ")");
    }
    free(seen);
    if (n_bad)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%d unsupported op%s (opset %lld): %s", n_bad,
                       n_bad == 1 ? "" : "s", (long long)g->opset, msg);
    for (int i = 0; i < g->n_nodes; i++) {
        ql_status st = check_arity(&g->nodes[i], err);
        if (st != QL_OK)
            return st;
    }
    return QL_OK;
}

/* Builds a tensor header describing value v for inference: shape as known,
 * data only for constants. */
static void value_header(const ql_graph *g, int v, ql_tensor *t)
{
    const ql_value *val = &g->values[v];
    memset(t, 0, sizeof *t);
    if (val->constant) {
        *t = *val->constant;
        t->owns = false;
        return;
    }
    t->dtype = val->dtype;
    t->ndim = val->ndim;
    if (val->ndim > 0)
        memcpy(t->dims, val->dims, (size_t)val->ndim * sizeof *val->dims);
}

ql_status ql_graph_infer_shapes(ql_graph *g, ql_error *err)
{
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        if (n->op < 0)
            return ql_fail(err, QL_ERR_UNSUPPORTED, "node '%s': unsupported op %s",
                           node_label(n), n->op_type);
        ql_tensor inbuf[16], outbuf[16];
        const ql_tensor *in[16];
        ql_tensor *out[16];
        if (n->n_in > 16 || n->n_out > 16)
            return ql_fail(err, QL_ERR_UNSUPPORTED, "node '%s' (%s): more than 16 inputs or outputs",
                           node_label(n), n->op_type);
        for (int j = 0; j < n->n_in; j++) {
            if (n->in[j] < 0) {
                in[j] = NULL;
                continue;
            }
            value_header(g, n->in[j], &inbuf[j]);
            in[j] = &inbuf[j];
        }
        for (int j = 0; j < n->n_out; j++) {
            memset(&outbuf[j], 0, sizeof outbuf[j]);
            outbuf[j].ndim = -1;
            out[j] = &outbuf[j];
        }
        const ql_op_def *def = ql_op_get(n->op);
        unsigned mask = def->in_dtypes ? def->in_dtypes : QL_DT_BIT(QL_F32);
        ql_status st = QL_OK;
        if (n->n_in > 0 && in[0] && !(mask & QL_DT_BIT(in[0]->dtype)))
            st = ql_fail(err, QL_ERR_UNSUPPORTED, "%s input is not supported",
                         ql_dtype_info(in[0]->dtype)->name);
        if (st == QL_OK)
            st = def->infer(n, in, out, err);
        if (st != QL_OK)
            return ql_fail_prefix(err, st, "node '%s' (%s)", node_label(n), n->op_type);
        for (int j = 0; j < n->n_out; j++) {
            if (n->out[j] < 0)
                continue;
            ql_value *val = &g->values[n->out[j]];
            val->dtype = outbuf[j].dtype;
            /* keep a declared (value_info) shape when inference cannot tell */
            if (outbuf[j].ndim >= 0 || val->ndim < 0) {
                val->ndim = outbuf[j].ndim;
                if (outbuf[j].ndim > 0)
                    memcpy(val->dims, outbuf[j].dims, (size_t)outbuf[j].ndim * sizeof *val->dims);
            }
        }
    }
    return QL_OK;
}

ql_status ql_graph_prepare(ql_graph *g, ql_error *err)
{
    for (int i = 0; i < g->n_nodes; i++) {
        ql_node *n = &g->nodes[i];
        const ql_op_def *def = ql_op_get(n->op);
        if (!def->prepare)
            continue;
        if (n->state && def->release)
            def->release(n);
        n->state = NULL;
        ql_status st = def->prepare(g, n, err);
        if (st != QL_OK)
            return ql_fail_prefix(err, st, "node '%s' (%s)", node_label(n), n->op_type);
    }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * cost figures for `info`
 * ------------------------------------------------------------------------- */
static int64_t known_numel(const ql_value *v)
{
    if (v->ndim < 0)
        return 0;
    int64_t n = 1;
    for (int i = 0; i < v->ndim; i++)
        n *= v->dims[i] < 0 ? 1 : v->dims[i]; /* batch 1 for dynamic dims */
    return n;
}

int64_t ql_node_macs(const ql_graph *g, const ql_node *n)
{
    if (n->n_in < 2 || n->n_out < 1 || n->in[1] < 0 || n->out[0] < 0)
        return 0;
    const ql_value *w = &g->values[n->in[1]], *y = &g->values[n->out[0]];
    switch (n->op) {
    case QL_OP_CONV: {
        /* each output element: C_in/group * prod(kernel) MACs */
        if (w->ndim < 3)
            return 0;
        int64_t k = 1;
        for (int i = 1; i < w->ndim; i++)
            k *= w->dims[i];
        return known_numel(y) * k;
    }
    case QL_OP_CONV_TRANSPOSE: {
        const ql_value *x = &g->values[n->in[0]];
        if (w->ndim < 3)
            return 0;
        int64_t k = 1;
        for (int i = 1; i < w->ndim; i++)
            k *= w->dims[i];
        return known_numel(x) * k;
    }
    case QL_OP_GEMM:
    case QL_OP_MATMUL: {
        const ql_value *a = &g->values[n->in[0]];
        if (a->ndim < 1)
            return 0;
        int64_t kdim = a->dims[a->ndim - 1];
        if (n->op == QL_OP_GEMM && ql_attr_int(n, "transA", 0) && a->ndim == 2)
            kdim = a->dims[0];
        return kdim < 0 ? 0 : known_numel(y) * kdim;
    }
    default:
        return 0;
    }
}

/* The inputs of each op that hold learned tensors when they are constant
 * (bit j: input j): weights and biases, BatchNormalization's scale and
 * shift (not its running statistics), PRelu's slopes, embedding tables.
 * Any other constant input is an argument (Clip's bounds, Pad's value,
 * Resize's scales, shapes, axes) and no parameter. Add and Mul take learned
 * operands (a bias after MatMul, LayerNorm's scale and shift, position
 * embeddings) but also constants such as x * 0.5 or x + 3: only a constant
 * of more than one element counts there. */
static const struct {
    unsigned inputs;
    bool not_scalars;
} param_inputs[QL_OP_COUNT] = {
    [QL_OP_CONV] = {0x6, false},           [QL_OP_CONV_TRANSPOSE] = {0x6, false},
    [QL_OP_GEMM] = {0x7, false},           [QL_OP_MATMUL] = {0x3, false},
    [QL_OP_BATCHNORM] = {0x6, false},      [QL_OP_PRELU] = {0x2, false},
    [QL_OP_GATHER] = {0x1, false},         [QL_OP_ADD] = {0x3, true},
    [QL_OP_MUL] = {0x3, true},
};

int64_t ql_node_params(const ql_graph *g, const ql_node *n)
{
    int64_t p = 0;
    if (n->op < 0 || n->op >= QL_OP_COUNT)
        return 0;
    for (int j = 0; j < n->n_in && j < 32; j++) {
        const ql_tensor *t = n->in[j] >= 0 ? g->values[n->in[j]].constant : NULL;
        if (!t || t->dtype != QL_F32 || !(param_inputs[n->op].inputs & (1u << j)))
            continue;
        int64_t k = ql_tensor_numel(t);
        if (k > 1 || !param_inputs[n->op].not_scalars)
            p += k;
    }
    return p;
}
