/* Output metrics. */
#include "metrics.h"

#include <math.h>

#include "evaluate.h"

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

double ql_metrics_cosine(const ql_metrics *m) { return m->n ? m->cos_sum / (double)m->n : 0.0; }
double ql_metrics_mse(const ql_metrics *m) { return m->elems ? m->noise / (double)m->elems : 0.0; }
double ql_metrics_agree(const ql_metrics *m) { return m->n ? (double)m->agree / (double)m->n : 0.0; }

double ql_metrics_sqnr_db(const ql_metrics *m)
{
    if (m->noise == 0)
        return INFINITY;
    if (m->sig == 0)
        return -INFINITY;
    return 10.0 * log10(m->sig / m->noise);
}
