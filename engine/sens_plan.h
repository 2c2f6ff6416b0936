/* Internal to the sensitivity analysis: the fake-quant plan of one layer
 * under a mode, and the set of nodes that plan makes differ from the base
 * run (what an incremental run must re-execute and what it must be fed). */
#ifndef QL_SENS_PLAN_H
#define QL_SENS_PLAN_H

#include "qsim.h"
#include "sensitivity.h"

typedef struct sens_plans {
    const ql_qnet *q;
    const ql_qconfig *c;
    const ql_qsim *full;  /* the whole config's plan: every plan points into it */
    ql_prec *prec;        /* per layer, under c */
} sens_plans;

/* Fills act/cst (n_values entries each) with layer l's plan under mode,
 * every quantizer taken from the full plan. A layer's own quantizers are
 * its weight and bias and its output quantizer; single keeps only l's,
 * all-but all but l's. Quantizers no layer owns (graph inputs, outputs of
 * float layers) follow the placement rules of qnet.h for the config with
 * only l quantized / l float. Weights and activations keep only l's
 * weight and bias / only its output quantizer. */
ql_status sens_plan_build(const sens_plans *p, ql_sens_mode mode, int l, const ql_encoding **act,
                          const ql_tensor **cst, ql_error *err);

/* The nodes to re-run when going from the base plan to layer l's plan:
 * descendants of l's nodes and of the readers of every value whose
 * quantizer differs. run has n_nodes entries. */
void sens_rerun_set(const ql_qnet *q, int l, const ql_exec_quant *base, const ql_exec_quant *lp,
                    char *run);

/* Values the nodes in run read but none of them produces (constants and
 * graph inputs excepted): ids gets them, returns how many. */
int sens_feed_set(const ql_graph *g, const char *run, int *ids);

/* The nodes of rerun that out_value depends on (a layer's local runs). */
void sens_local_set(const ql_graph *g, const char *rerun, int out_value, char *run);

#endif
