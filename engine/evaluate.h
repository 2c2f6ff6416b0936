/* Running a model over a dataset in batches: predictions, top-1 accuracy and
 * throughput. Front ends report progress and may cancel through callbacks. */
#ifndef QL_EVALUATE_H
#define QL_EVALUATE_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "metrics.h"
#include "exec.h"
#include "onnx.h"

/* Called after each batch with samples done so far; return false to cancel. */
typedef bool (*ql_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct ql_eval_opts {
    int64_t batch;           /* <= 0: 32 (or the model's fixed batch) */
    int n_threads;           /* <= 0: online cores */
    ql_progress_fn progress; /* optional */
    void *progress_user;
    const volatile int *cancel;
    /* ql_eval_compare, optional: g->n_outputs entries, each float output's
     * metrics on its own (the entries of other outputs stay zero) */
    ql_metrics *per_output;
} ql_eval_opts;

typedef struct ql_eval_result {
    int64_t n;           /* samples run */
    int64_t batch;       /* batch size used */
    int threads;
    int64_t *pred;       /* owned: top-1 class per sample (argmax of output 0) */
    int64_t n_classes;   /* elements of output 0 per sample */
    int64_t correct;     /* with labels; -1 without */
    double seconds;      /* wall time of inference (excluding loading) */
} ql_eval_result;

/* Runs the model's single input over all samples of d (already conformed
 * with ql_dataset_conform). labels may be NULL; n_labels must then be 0,
 * else at least d->n. A model with a fixed batch runs in batches of that size,
 * the last one padded with zeros. */
ql_status ql_eval_float(ql_model *m, const ql_dataset *d, const int64_t *labels,
                        int64_t n_labels, const ql_eval_opts *opts, ql_eval_result *res,
                        ql_error *err);
void ql_eval_result_clear(ql_eval_result *res);

/* Runs the float model and its fake-quant plan on every sample of d and
 * compares output 0 (metrics.h). labels as in ql_eval_float. */
ql_status ql_eval_compare(ql_model *m, const ql_exec_quant *plan, const ql_dataset *d,
                          const int64_t *labels, int64_t n_labels, const ql_eval_opts *opts,
                          ql_metrics *out, double *seconds, ql_error *err);

/* Feeds a dataset to a single-input model in batches. A model with a fixed
 * batch gets batches of that size, the last one padded with zeros. */
typedef struct ql_batcher {
    const ql_dataset *d;
    int64_t batch;      /* samples per batch */
    int64_t fixed;      /* the model's fixed batch, or 0 */
    ql_tensor *padded;  /* owned: the padded last batch */
} ql_batcher;
ql_status ql_batcher_init(ql_batcher *b, const ql_graph *g, const ql_dataset *d, int64_t batch,
                          ql_error *err);
/* The batch starting at sample `first`: *count real samples; *feed is valid
 * until the next call. */
ql_status ql_batcher_get(ql_batcher *b, int64_t first, int64_t *count, const ql_tensor **feed,
                         ql_error *err);
void ql_batcher_clear(ql_batcher *b);

/* Index of the largest element (first on ties; NaN never wins). */
int64_t ql_argmax_f32(const float *x, int64_t n);

#endif
