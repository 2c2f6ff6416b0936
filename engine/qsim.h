/* Fake-quant simulation of a configured model: turns a quant config into
 * the executor's fake-quant plan (activation encodings per value,
 * fake-quantized weights and biases), following the placement of qnet.h. */
#ifndef QL_QSIM_H
#define QL_QSIM_H

#include "exec.h"
#include "qconfig.h"
#include "qnet.h"
#include "status.h"

typedef struct ql_qsim {
    int n_values;
    ql_encoding *enc;             /* owned, per value (used where act[v] != NULL) */
    const ql_encoding **act;      /* per value */
    const ql_tensor **constants;  /* per value: owned replacement constants */
    ql_exec_quant plan;           /* points at the arrays above */
} ql_qsim;

/* Builds the plan. Every encoding the settings call for must be in c (else
 * "recalibrate"); their bits must match the layer precisions. */
ql_status ql_qsim_build(const ql_qnet *q, const ql_qconfig *c, ql_qsim **out, ql_error *err);
void ql_qsim_free(ql_qsim *s);

#endif
