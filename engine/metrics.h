/* Output metrics of a quantized model against its float reference on the
 * same inputs: top-1 agreement and accuracy, mean per-sample cosine
 * similarity, MSE, SQNR and maximum absolute error. Accumulated batch by
 * batch in a fixed order, so results never depend on the thread count. */
#ifndef QL_METRICS_H
#define QL_METRICS_H

#include <stdint.h>

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
} ql_metrics;

/* Adds n samples of `per` scores each; labels may be NULL. */
void ql_metrics_add(ql_metrics *m, const float *ref, const float *q, int64_t n, int64_t per,
                    const int64_t *labels);
double ql_metrics_cosine(const ql_metrics *m);
double ql_metrics_mse(const ql_metrics *m);
/* 10*log10(sum ref^2 / sum (ref-q)^2); +INFINITY when the outputs are identical. */
double ql_metrics_sqnr_db(const ql_metrics *m);
double ql_metrics_agree(const ql_metrics *m);

#endif
