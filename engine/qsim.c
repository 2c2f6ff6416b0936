/* Building the fake-quant plan from a config. */
#include "qsim.h"

#include <stdlib.h>
#include <string.h>

void ql_qsim_free(ql_qsim *s)
{
    if (!s)
        return;
    for (int v = 0; v < s->n_values; v++) {
        if (s->enc)
            ql_encoding_clear(&s->enc[v]);
        if (s->constants)
            ql_tensor_free((ql_tensor *)s->constants[v]);
    }
    free(s->enc);
    free(s->act);
    free(s->constants);
    free(s);
}

static const ql_qtensor_cfg *need_tensor(const ql_qconfig *c, const char *name, int bits,
                                         ql_error *err)
{
    const ql_qtensor_cfg *t = ql_qconfig_find_tensor(c, name);
    if (!t) {
        ql_fail(err, QL_ERR_ARG, "tensors.\"%s\": no encoding in the config (recalibrate)", name);
        return NULL;
    }
    if (bits && t->enc.spec.bits != bits) {
        ql_fail(err, QL_ERR_ARG,
                "tensors.\"%s\": the encoding has %d bits but the settings call for %d "
                "(recalibrate)",
                name, t->enc.spec.bits, bits);
        return NULL;
    }
    return t;
}

/* A fake-quantized copy of constant w: the stored integers when the config
 * has them (rounding algorithms), else quantize-dequantize. */
static ql_tensor *fq_constant(const ql_tensor *w, const ql_qtensor_cfg *t, ql_error *err)
{
    ql_tensor *c = ql_tensor_clone(w);
    if (!c) {
        ql_fail(err, QL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (t->q) {
        const ql_encoding *e = &t->enc;
        int64_t n = ql_tensor_numel(c), inner = 1, ch = e->n;
        if (t->n_q != n) {
            ql_tensor_free(c);
            ql_fail(err, QL_ERR_ARG, "tensors.\"%s\".q: %lld values for %lld weights", t->name,
                    (long long)t->n_q, (long long)n);
            return NULL;
        }
        if (e->spec.axis >= 0)
            for (int i = e->spec.axis + 1; i < c->ndim; i++)
                inner *= c->dims[i];
        float *d = c->data;
        for (int64_t i = 0; i < n; i++) {
            int64_t k = e->spec.axis >= 0 ? (i / inner) % ch : 0;
            d[i] = ql_dequantize1(t->q[i], e->scale[k], e->zero_point[k]);
        }
        return c;
    }
    if (ql_fake_quant(c, &t->enc, err) != QL_OK) {
        ql_tensor_free(c);
        return NULL;
    }
    return c;
}

ql_status ql_qsim_build(const ql_qnet *q, const ql_qconfig *c, ql_qsim **out, ql_error *err)
{
    const ql_graph *g = q->g;
    ql_status st = QL_OK;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    ql_qsim *s = calloc(1, sizeof *s);
    int *bits = malloc(nv * sizeof *bits);
    if (s) {
        s->n_values = g->n_values;
        s->enc = calloc(nv, sizeof *s->enc);
        s->act = calloc(nv, sizeof *s->act);
        s->constants = calloc(nv, sizeof *s->constants);
    }
    if (!s || !bits || !s->enc || !s->act || !s->constants) {
        st = ql_fail(err, QL_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    ql_qnet_act_bits(q, c, bits);
    for (int v = 0; v < g->n_values; v++) {
        if (!bits[v])
            continue;
        const ql_qtensor_cfg *t = need_tensor(c, g->values[v].name, bits[v], err);
        if (!t) {
            st = QL_ERR_ARG;
            goto cleanup;
        }
        if ((st = ql_encoding_copy(&s->enc[v], &t->enc, err)) != QL_OK)
            goto cleanup;
        s->act[v] = &s->enc[v];
    }
    for (int i = 0; i < q->n_layers; i++) {
        const ql_qlayer *L = &q->layers[i];
        if (L->weight_value < 0 || ql_qnet_layer_prec(q, c, i) == QL_PREC_FLOAT)
            continue;
        int ids[2] = {L->weight_value, L->bias_value};
        for (int j = 0; j < 2; j++) {
            int v = ids[j];
            if (v < 0 || s->constants[v])
                continue;
            const ql_qtensor_cfg *t = need_tensor(c, g->values[v].name, 0, err);
            ql_tensor *fq = t ? fq_constant(g->values[v].constant, t, err) : NULL;
            if (!fq) {
                st = QL_ERR_ARG;
                goto cleanup;
            }
            s->constants[v] = fq;
        }
    }
    s->plan.act = (const struct ql_encoding *const *)s->act;
    s->plan.constants = s->constants;
    *out = s;
    s = NULL;
cleanup:
    free(bits);
    ql_qsim_free(s);
    return st;
}
