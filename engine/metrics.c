/* Output metrics. */
#include "metrics.h"

#include <math.h>

#include "evaluate.h"
#include "tensor.h"

void ql_metrics_add(ql_metrics *m, const float *ref, const float *q, int64_t n, int64_t per,
                    const int64_t *labels)
{
    for (int64_t s = 0; s < n; s++) {
        const float *a = ref + s * per, *b = q + s * per;
        double dot = 0, na = 0, nb = 0, noise = 0;
        for (int64_t i = 0; i < per; i++) {
            double x = a[i], y = b[i], d = x - y;
            dot += x * y;
            na += x * x;
            nb += y * y;
            noise += d * d;
            if (fabs(d) > m->max_abs)
                m->max_abs = fabs(d);
        }
        if (na == 0 && nb == 0)
            m->cos_sum += 1.0;
        else if (na > 0 && nb > 0)
            m->cos_sum += dot / (sqrt(na) * sqrt(nb));
        m->sig += na;
        m->noise += noise;
        m->elems += per;
        int64_t pa = ql_argmax_f32(a, per), pb = ql_argmax_f32(b, per);
        m->agree += pa == pb;
        if (labels) {
            m->labelled++;
            m->correct_ref += pa == labels[s];
            m->correct_q += pb == labels[s];
        }
        m->n++;
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
    if (g->n_outputs == 1 || first == g->n_outputs - 1) { /* one float output */
        int64_t per = per_sample(ref[first], n);
        if (per <= 0 || !q[first] || q[first]->dtype != QL_F32 || per_sample(q[first], n) != per)
            return ql_fail(err, QL_ERR_SHAPE,
                           "output '%s' is not a float batch of per-sample values",
                           g->values[g->outputs[first]].name);
        ql_metrics_add(m, ref[first]->data, q[first]->data, n, per, labels);
        return QL_OK;
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
        double dot = 0, na = 0, nb = 0, noise = 0;
        for (int j = 0; j < g->n_outputs; j++) {
            if (!per[j])
                continue;
            const float *a = (const float *)ref[j]->data + s * per[j];
            const float *b = (const float *)q[j]->data + s * per[j];
            for (int64_t i = 0; i < per[j]; i++) {
                double x = a[i], y = b[i], d = x - y;
                dot += x * y;
                na += x * x;
                nb += y * y;
                noise += d * d;
                if (fabs(d) > m->max_abs)
                    m->max_abs = fabs(d);
            }
            m->elems += per[j];
        }
        if (na == 0 && nb == 0)
            m->cos_sum += 1.0;
        else if (na > 0 && nb > 0)
            m->cos_sum += dot / (sqrt(na) * sqrt(nb));
        m->sig += na;
        m->noise += noise;
        const float *a = (const float *)ref[first]->data + s * per[first];
        const float *b = (const float *)q[first]->data + s * per[first];
        int64_t pa = ql_argmax_f32(a, per[first]), pb = ql_argmax_f32(b, per[first]);
        m->agree += pa == pb;
        if (labels) {
            m->labelled++;
            m->correct_ref += pa == labels[s];
            m->correct_q += pb == labels[s];
        }
        m->n++;
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
