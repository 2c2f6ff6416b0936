/* Output metrics. */
#include "metrics.h"

#include <math.h>

#include "evaluate.h"
#include "tensor.h"

/* One sample's sums, over one or more stretches of its outputs. */
typedef struct sample_sums {
    double dot, na, nb, noise;
} sample_sums;

static void sums_add(sample_sums *s, ql_metrics *m, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double x = a[i], y = b[i], d = x - y;
        s->dot += x * y;
        s->na += x * x;
        s->nb += y * y;
        s->noise += d * d;
        if (fabs(d) > m->max_abs)
            m->max_abs = fabs(d);
    }
    m->elems += n;
}

/* Ends a sample: its cosine and sums, and top-1 on its scores a and b. */
static void sample_end(ql_metrics *m, const sample_sums *s, const float *a, const float *b,
                       int64_t per, const int64_t *label)
{
    if (s->na == 0 && s->nb == 0)
        m->cos_sum += 1.0;
    else if (s->na > 0 && s->nb > 0)
        m->cos_sum += s->dot / (sqrt(s->na) * sqrt(s->nb));
    m->sig += s->na;
    m->noise += s->noise;
    int64_t pa = ql_argmax_f32(a, per), pb = ql_argmax_f32(b, per);
    m->agree += pa == pb;
    if (label) {
        m->labelled++;
        m->correct_ref += pa == *label;
        m->correct_q += pb == *label;
    }
    m->n++;
}

void ql_metrics_add(ql_metrics *m, const float *ref, const float *q, int64_t n, int64_t per,
                    const int64_t *labels)
{
    for (int64_t s = 0; s < n; s++) {
        const float *a = ref + s * per, *b = q + s * per;
        sample_sums sums = {0};
        sums_add(&sums, m, a, b, per);
        sample_end(m, &sums, a, b, per, labels ? labels + s : NULL);
    }
}

int ql_score_output(const ql_graph *g, const ql_tensor *const *outs)
{
    for (int j = 0; j < g->n_outputs; j++)
        if (outs[j] && outs[j]->dtype == QL_F32)
            return j;
    return -1;
}

bool ql_class_scores(const ql_tensor *t)
{
    int big = 0;
    for (int i = 1; i < t->ndim; i++)
        big += t->dims[i] > 1;
    return t->ndim >= 2 && big == 1;
}

/* Values per sample of output tensor t, checked to be a batch of at least n
 * rows (0 when it is not). */
static int64_t per_sample(const ql_tensor *t, int64_t n)
{
    if (!t || t->ndim < 1 || t->dims[0] < n || t->dims[0] <= 0)
        return 0;
    return ql_tensor_numel(t) / t->dims[0];
}

ql_status ql_metrics_add_outputs(ql_metrics *m, const ql_graph *g, const ql_tensor *const *ref,
                                 const ql_tensor *const *q, int64_t n, const int64_t *labels,
                                 ql_error *err)
{
    int first = ql_score_output(g, ref);
    if (first < 0)
        return ql_fail(err, QL_ERR_SHAPE, "the model has no float output to compare");
    if (!ql_class_scores(ref[first])) {
        if (labels)
            return ql_fail(err, QL_ERR_DATA,
                           "labels need class scores, but output '%s' is not one vector of "
                           "class scores per sample",
                           g->values[g->outputs[first]].name);
        m->no_classes = 1;
    }
    int64_t per[64];
    if (g->n_outputs > 64)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "too many outputs");
    for (int j = 0; j < g->n_outputs; j++) {
        per[j] = 0;
        if (!ref[j] || ref[j]->dtype != QL_F32)
            continue;
        per[j] = per_sample(ref[j], n);
        if (per[j] <= 0 || !q[j] || q[j]->dtype != QL_F32 || per_sample(q[j], n) != per[j])
            return ql_fail(err, QL_ERR_SHAPE,
                           "output '%s' is not a float batch of per-sample values",
                           g->values[g->outputs[j]].name);
    }
    for (int64_t s = 0; s < n; s++) {
        sample_sums sums = {0};
        for (int j = 0; j < g->n_outputs; j++)
            if (per[j])
                sums_add(&sums, m, (const float *)ref[j]->data + s * per[j],
                         (const float *)q[j]->data + s * per[j], per[j]);
        sample_end(m, &sums, (const float *)ref[first]->data + s * per[first],
                   (const float *)q[first]->data + s * per[first], per[first],
                   labels ? labels + s : NULL);
    }
    return QL_OK;
}

double ql_metrics_cosine(const ql_metrics *m) { return m->n ? m->cos_sum / (double)m->n : 0.0; }
double ql_metrics_mse(const ql_metrics *m) { return m->elems ? m->noise / (double)m->elems : 0.0; }
double ql_metrics_agree(const ql_metrics *m)
{
    if (m->no_classes)
        return NAN;
    return m->n ? (double)m->agree / (double)m->n : 0.0;
}

double ql_metrics_sqnr_db(const ql_metrics *m)
{
    if (m->noise == 0)
        return INFINITY;
    if (m->sig == 0)
        return -INFINITY;
    return 10.0 * log10(m->sig / m->noise);
}
