/* Running a model over a dataset in batches: predictions, top-1 accuracy and
 * throughput. Front ends report progress and may cancel through callbacks. */
#ifndef QL_EVALUATE_H
#define QL_EVALUATE_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
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

/* Index of the largest element (first on ties; NaN never wins). */
int64_t ql_argmax_f32(const float *x, int64_t n);

#endif
