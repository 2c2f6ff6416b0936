/* Whole samples per thread (opts.split_samples): each thread runs the
 * samples it takes on a one-thread executor of its own, so the threads
 * never wait for each other between nodes and a sample's activations stay
 * in its core's caches from one node to the next. The outputs are joined
 * along axis 0; they are the bits a whole-batch run gives. */
#include <stdlib.h>
#include <string.h>

#include "exec_priv.h"

typedef struct split_job {
    ql_exec *x;
    const ql_tensor *const *inputs;
    int64_t n;        /* samples */
    ql_tensor **res;  /* per sample, its outputs: res[i * n_outputs + j] */
    ql_first_error fe;
} split_job;

static void split_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    split_job *j = arg;
    const ql_graph *g = j->x->g;
    ql_tensor view[QL_MAX_IO * 4];
    const ql_tensor *in[QL_MAX_IO * 4];
    for (int64_t i = begin; i < end && !j->fe.stop; i++) {
        for (int k = 0; k < g->n_inputs; k++) {
            view[k] = ql_tensor_rows(j->inputs[k], i, 1);
            in[k] = &view[k];
        }
        ql_error e = {{0}};
        ql_status st = ql_exec_run(j->x->sub[tid], in, j->res + i * g->n_outputs, &e);
        if (st != QL_OK)
            ql_first_error_set(&j->fe, st, &e);
    }
}

/* Output j of the batch: the samples' outputs joined along axis 0. */
static ql_status split_join(const split_job *j, int o, ql_tensor **out, ql_error *err)
{
    int no = j->x->g->n_outputs;
    const ql_tensor *f = j->res[o];
    ql_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    *t = (ql_tensor){.dtype = f->dtype, .ndim = f->ndim};
    memcpy(t->dims, f->dims, sizeof t->dims);
    t->dims[0] = 0;
    for (int64_t i = 0; i < j->n; i++) {
        const ql_tensor *r = j->res[i * no + o];
        if (r->dtype != f->dtype || r->ndim != f->ndim || r->ndim < 1 ||
            memcmp(r->dims + 1, f->dims + 1, (size_t)(f->ndim - 1) * sizeof *f->dims)) {
            free(t);
            return ql_fail(err, QL_ERR_SHAPE, "output '%s': samples of different shapes",
                           j->x->g->values[j->x->g->outputs[o]].name);
        }
        t->dims[0] += r->dims[0];
    }
    ql_status st = ql_tensor_alloc(t);
    if (st != QL_OK) {
        free(t);
        return ql_fail(err, st, "out of memory");
    }
    char *p = t->data;
    for (int64_t i = 0; i < j->n; i++) {
        const ql_tensor *r = j->res[i * no + o];
        size_t b = ql_tensor_nbytes(r);
        if (b)
            memcpy(p, r->data, b);
        p += b;
    }
    *out = t;
    return QL_OK;
}

ql_status ql_exec_run_split(ql_exec *x, const ql_tensor *const *inputs, int64_t n,
                            ql_tensor **outputs, ql_error *err)
{
    ql_graph *g = x->g;
    int threads = ql_pool_threads(x->pool);
    if (!x->sub && !(x->sub = calloc((size_t)threads, sizeof *x->sub)))
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    /* made at the first split run, and again after one that failed part way */
    ql_exec_opts so = x->opts;
    so.n_threads = 1;
    so.split_samples = false;
    so.reuse_buffers = true; /* the same shapes, sample after sample */
    for (; x->n_sub < threads; x->n_sub++) {
        ql_status st = ql_exec_new(g, &so, &x->sub[x->n_sub], err);
        if (st != QL_OK)
            return st;
    }
    bool fq = x->quant.act || x->quant.constants;
    for (int t = 0; t < x->n_sub; t++) {
        ql_status st = ql_exec_set_quant(x->sub[t], fq ? &x->quant : NULL, err);
        if (st != QL_OK)
            return st;
    }
    split_job j = {.x = x, .inputs = inputs, .n = n};
    j.res = calloc((size_t)n * (size_t)g->n_outputs, sizeof *j.res);
    if (!j.res)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    ql_first_error_init(&j.fe);
    ql_parallel_for_dynamic(&x->ctx, n, 1, split_tasks, &j);
    ql_status st = j.fe.st;
    if (st != QL_OK)
        *err = j.fe.err;
    int joined = 0;
    while (st == QL_OK && joined < g->n_outputs)
        if ((st = split_join(&j, joined, &outputs[joined], err)) == QL_OK)
            joined++;
    if (st != QL_OK)
        for (int o = 0; o < joined; o++) {
            ql_tensor_free(outputs[o]);
            outputs[o] = NULL;
        }
    for (int64_t i = 0; i < n * g->n_outputs; i++)
        ql_tensor_free(j.res[i]);
    free(j.res);
    ql_first_error_destroy(&j.fe);
    return st;
}
