/* Batched float evaluation over a dataset. */
#include "evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t ql_argmax_f32(const float *x, int64_t n)
{
    int64_t best = 0;
    float bv = -INFINITY;
    int found = 0;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && (!found || x[i] > bv)) {
            bv = x[i];
            best = i;
            found = 1;
        }
    return best;
}

void ql_eval_result_clear(ql_eval_result *res)
{
    free(res->pred);
    memset(res, 0, sizeof *res);
}

ql_status ql_eval_float(ql_model *m, const ql_dataset *d, const int64_t *labels,
                        int64_t n_labels, const ql_eval_opts *opts, ql_eval_result *res,
                        ql_error *err)
{
    ql_graph *g = m->graph;
    ql_exec *x = NULL;
    ql_tensor *padded = NULL;
    ql_status st = QL_OK;
    ql_eval_opts o = {0};
    if (opts)
        o = *opts;
    memset(res, 0, sizeof *res);
    res->correct = -1;

    if (g->n_inputs != 1)
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "%s: evaluation needs a model with exactly one input (it has %d)",
                       m->path, g->n_inputs);
    if (g->n_outputs < 1)
        return ql_fail(err, QL_ERR_FORMAT, "%s: the model has no outputs", m->path);
    if (labels && n_labels < d->n)
        return ql_fail(err, QL_ERR_DATA, "%lld labels for %lld samples", (long long)n_labels,
                       (long long)d->n);
    if (d->n <= 0)
        return ql_fail(err, QL_ERR_DATA, "%s: no samples", d->source);
    const ql_value *in = &g->values[g->inputs[0]];
    int64_t fixed = in->ndim > 0 && in->dims[0] > 0 ? in->dims[0] : 0;
    int64_t batch = fixed ? fixed : (o.batch > 0 ? o.batch : 32);
    res->batch = batch;

    ql_exec_opts xo = {.n_threads = o.n_threads, .cancel = o.cancel};
    st = ql_exec_new(g, &xo, &x, err);
    if (st != QL_OK)
        return st;
    res->threads = ql_exec_threads(x);
    res->pred = malloc((size_t)d->n * sizeof *res->pred);
    if (!res->pred) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    double t0 = now_seconds();
    for (int64_t first = 0; first < d->n; first += batch) {
        int64_t count = d->n - first < batch ? d->n - first : batch;
        ql_tensor view = ql_dataset_batch(d, first, count);
        const ql_tensor *feed = &view;
        if (fixed && count < fixed) { /* pad the last batch of a fixed-batch model */
            int64_t dims[QL_MAX_DIMS];
            memcpy(dims, view.dims, sizeof dims);
            dims[0] = fixed;
            ql_tensor_free(padded);
            padded = ql_tensor_new(view.dtype, view.ndim, dims);
            if (!padded) {
                st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
                goto cleanup;
            }
            memcpy(padded->data, view.data, ql_tensor_nbytes(&view));
            feed = padded;
        }
        ql_tensor *outs[64] = {0};
        if (g->n_outputs > 64) {
            st = ql_fail(err, QL_ERR_UNSUPPORTED, "too many outputs");
            goto cleanup;
        }
        st = ql_exec_run(x, &feed, outs, err);
        if (st != QL_OK) {
            ql_fail_prefix(err, st, "%s: samples %lld-%lld", d->source, (long long)first,
                           (long long)(first + count - 1));
            goto cleanup;
        }
        ql_tensor *y = outs[0];
        int64_t per = y->ndim > 0 && y->dims[0] > 0 ? ql_tensor_numel(y) / y->dims[0] : 0;
        if (y->dtype != QL_F32 || y->ndim < 1 || y->dims[0] != (fixed ? fixed : count) ||
            per <= 0) {
            for (int j = 0; j < g->n_outputs; j++)
                ql_tensor_free(outs[j]);
            st = ql_fail(err, QL_ERR_SHAPE,
                         "%s: output '%s' is not a float batch of per-sample scores", m->path,
                         g->values[g->outputs[0]].name);
            goto cleanup;
        }
        res->n_classes = per;
        for (int64_t s = 0; s < count; s++)
            res->pred[first + s] = ql_argmax_f32((const float *)y->data + s * per, per);
        for (int j = 0; j < g->n_outputs; j++)
            ql_tensor_free(outs[j]);
        if (o.progress && !o.progress(o.progress_user, first + count, d->n)) {
            st = ql_fail(err, QL_ERR_CANCELLED, "evaluation cancelled");
            goto cleanup;
        }
    }
    res->seconds = now_seconds() - t0;
    res->n = d->n;
    if (labels) {
        res->correct = 0;
        for (int64_t i = 0; i < d->n; i++)
            res->correct += res->pred[i] == labels[i];
    }
cleanup:
    ql_tensor_free(padded);
    ql_exec_free(x);
    if (st != QL_OK)
        ql_eval_result_clear(res);
    return st;
}
