/* Output metrics of a quantized model against its float reference on the
 * same inputs: top-1 agreement and accuracy, mean per-sample cosine
 * similarity, MSE, SQNR and maximum absolute error. Accumulated batch by
 * batch in a fixed order, so results never depend on the thread count. */
#ifndef QL_METRICS_H
#define QL_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "graph.h"
#include "status.h"

typedef struct ql_metrics {
    int64_t n;            /* samples */
    int64_t agree;        /* samples whose top-1 matches the reference's */
    int64_t labelled;     /* samples with labels */
    int64_t correct_ref;  /* top-1 correct, reference */
    int64_t correct_q;    /* top-1 correct, quantized */
    double cos_sum;       /* sum of per-sample cosine similarities */
    double sig, noise;    /* sums of ref^2 and (ref - q)^2 */
    int64_t elems;        /* elements compared */
    double max_abs;
    int64_t no_classes;   /* non-zero when the output top-1 is taken on is not one vector
                           * of class scores per sample ([N, C] with C > 1, trailing 1s
                           * allowed): top-1 does not apply, agreement is NaN */
} ql_metrics;

/* Adds n samples of `per` scores each; labels may be NULL. */
void ql_metrics_add(ql_metrics *m, const float *ref, const float *q, int64_t n, int64_t per,
                    const int64_t *labels);
/* Adds samples [0, n) of one batch of model outputs: ref[j] and q[j] hold
 * g->outputs[j], batch axis first, at least n rows each. Every float output
 * counts: a sample's cosine, and the sums behind MSE, SQNR and the maximum
 * error, run over its outputs flattened and joined in output order; top-1
 * is taken on the first float output. Outputs of other types are left out;
 * a model without a float output, or outputs without a batch axis, are an
 * error naming the output. */
ql_status ql_metrics_add_outputs(ql_metrics *m, const ql_graph *g, const ql_tensor *const *ref,
                                 const ql_tensor *const *q, int64_t n, const int64_t *labels,
                                 ql_error *err);
/* The first float output of a batch of outputs (the one top-1 is taken
 * on), or -1. */
int ql_score_output(const ql_graph *g, const ql_tensor *const *outs);
/* Whether a tensor of per-sample outputs (batch axis first) holds one
 * vector of class scores per sample: exactly one axis after the batch with
 * an extent above 1. Top-1 metrics apply only then. */
bool ql_class_scores(const ql_tensor *t);
double ql_metrics_cosine(const ql_metrics *m);
double ql_metrics_mse(const ql_metrics *m);
/* 10*log10(sum ref^2 / sum (ref-q)^2); +INFINITY when the outputs are identical. */
double ql_metrics_sqnr_db(const ql_metrics *m);
double ql_metrics_agree(const ql_metrics *m);

#endif
