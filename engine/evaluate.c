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

ql_status ql_batcher_init(ql_batcher *b, const ql_graph *g, const ql_dataset *d, int64_t batch,
                          ql_error *err)
{
    memset(b, 0, sizeof *b);
    if (g->n_inputs != 1)
        return ql_fail(err, QL_ERR_UNSUPPORTED,
                       "a model with exactly one input is needed (it has %d)", g->n_inputs);
    if (d->n <= 0)
        return ql_fail(err, QL_ERR_DATA, "%s: no samples", d->source);
    const ql_value *in = &g->values[g->inputs[0]];
    b->d = d;
    b->fixed = in->ndim > 0 && in->dims[0] > 0 ? in->dims[0] : 0;
    b->batch = b->fixed ? b->fixed : (batch > 0 ? batch : 32);
    return QL_OK;
}

ql_status ql_batcher_get(ql_batcher *b, int64_t first, int64_t *count, const ql_tensor **feed,
                         ql_error *err)
{
    const ql_dataset *d = b->d;
    int64_t n = d->n - first < b->batch ? d->n - first : b->batch;
    ql_tensor view = ql_dataset_batch(d, first, n);
    *count = n;
    if (!b->fixed || n == b->fixed) {
        ql_tensor_free(b->padded);
        b->padded = ql_tensor_wrap(view.dtype, view.ndim, view.dims, view.data);
        if (!b->padded)
            return ql_fail(err, QL_ERR_NOMEM, "out of memory");
        *feed = b->padded;
        return QL_OK;
    }
    int64_t dims[QL_MAX_DIMS];
    memcpy(dims, view.dims, sizeof dims);
    dims[0] = b->fixed;
    ql_tensor_free(b->padded);
    b->padded = ql_tensor_new(view.dtype, view.ndim, dims);
    if (!b->padded)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory");
    memcpy(b->padded->data, view.data, ql_tensor_nbytes(&view));
    *feed = b->padded;
    return QL_OK;
}

void ql_batcher_clear(ql_batcher *b)
{
    ql_tensor_free(b->padded);
    memset(b, 0, sizeof *b);
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

    /* batch after batch of the same shapes: buffers are kept for the next;
     * the samples of a batch are shared out over the threads */
    ql_exec_opts xo = {.n_threads = o.n_threads, .cancel = o.cancel, .reuse_buffers = true,
                       .split_samples = true};
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
        /* predictions from the first float output (ql_score_output) */
        int k = ql_score_output(g, (const ql_tensor *const *)outs);
        ql_tensor *y = k >= 0 ? outs[k] : outs[0];
        int64_t per = y->ndim > 0 && y->dims[0] > 0 ? ql_tensor_numel(y) / y->dims[0] : 0;
        if (k < 0 || y->ndim < 1 || y->dims[0] != (fixed ? fixed : count) || per <= 0) {
            for (int j = 0; j < g->n_outputs; j++)
                ql_tensor_free(outs[j]);
            st = ql_fail(err, QL_ERR_SHAPE,
                         "%s: output '%s' is not a float batch of per-sample scores", m->path,
                         g->values[g->outputs[k >= 0 ? k : 0]].name);
            goto cleanup;
        }
        if (labels && !ql_class_scores(y)) {
            for (int j = 0; j < g->n_outputs; j++)
                ql_tensor_free(outs[j]);
            st = ql_fail(err, QL_ERR_DATA,
                         "%s: labels need class scores, but output '%s' is not one vector of "
                         "class scores per sample",
                         m->path, g->values[g->outputs[k]].name);
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

static void free_outputs(ql_tensor **outs, int n)
{
    for (int j = 0; j < n; j++) {
        ql_tensor_free(outs[j]);
        outs[j] = NULL;
    }
}

ql_status ql_eval_compare(ql_model *m, const ql_exec_quant *plan, const ql_dataset *d,
                          const int64_t *labels, int64_t n_labels, const ql_eval_opts *opts,
                          ql_metrics *out, double *seconds, ql_error *err)
{
    ql_graph *g = m->graph;
    ql_eval_opts o = {0};
    ql_exec *x = NULL;
    ql_batcher b = {0};
    ql_tensor *yf[64] = {0}, *yq[64] = {0};
    ql_status st;
    if (opts)
        o = *opts;
    memset(out, 0, sizeof *out);
    if (g->n_outputs > 64)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "%s: too many outputs", m->path);
    if (o.per_output)
        memset(o.per_output, 0, (size_t)g->n_outputs * sizeof *o.per_output);
    if (labels && n_labels < d->n)
        return ql_fail(err, QL_ERR_DATA, "%lld labels for %lld samples", (long long)n_labels,
                       (long long)d->n);
    if ((st = ql_batcher_init(&b, g, d, o.batch, err)) != QL_OK)
        return ql_fail_prefix(err, st, "%s", m->path);
    /* batch after batch of the same shapes: buffers are kept for the next;
     * the samples of a batch are shared out over the threads */
    ql_exec_opts xo = {.n_threads = o.n_threads, .cancel = o.cancel, .reuse_buffers = true,
                       .split_samples = true};
    if ((st = ql_exec_new(g, &xo, &x, err)) != QL_OK)
        goto cleanup;
    double t0 = now_seconds();
    for (int64_t first = 0; first < d->n; first += b.batch) {
        const ql_tensor *feed;
        int64_t count;
        if ((st = ql_batcher_get(&b, first, &count, &feed, err)) != QL_OK)
            goto cleanup;
        if ((st = ql_exec_set_quant(x, NULL, err)) != QL_OK ||
            (st = ql_exec_run(x, &feed, yf, err)) != QL_OK ||
            (st = ql_exec_set_quant(x, plan, err)) != QL_OK ||
            (st = ql_exec_run(x, &feed, yq, err)) != QL_OK) {
            ql_fail_prefix(err, st, "%s: samples %lld-%lld", d->source, (long long)first,
                           (long long)(first + count - 1));
            goto cleanup;
        }
        if ((st = ql_metrics_add_outputs(out, g, (const ql_tensor *const *)yf,
                                         (const ql_tensor *const *)yq, count,
                                         labels ? labels + first : NULL, err)) != QL_OK) {
            ql_fail_prefix(err, st, "%s", m->path);
            goto cleanup;
        }
        for (int j = 0; o.per_output && j < g->n_outputs; j++)
            if (yf[j]->dtype == QL_F32) /* checked by ql_metrics_add_outputs */
                ql_metrics_add(&o.per_output[j], yf[j]->data, yq[j]->data, count,
                               ql_tensor_numel(yf[j]) / yf[j]->dims[0],
                               labels ? labels + first : NULL);
        free_outputs(yf, g->n_outputs);
        free_outputs(yq, g->n_outputs);
        if (o.progress && !o.progress(o.progress_user, first + count, d->n)) {
            st = ql_fail(err, QL_ERR_CANCELLED, "evaluation cancelled");
            goto cleanup;
        }
    }
    if (seconds)
        *seconds = now_seconds() - t0;
cleanup:
    free_outputs(yf, g->n_outputs);
    free_outputs(yq, g->n_outputs);
    ql_batcher_clear(&b);
    ql_exec_free(x);
    return st;
}
