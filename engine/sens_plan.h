/* Internal to the sensitivity analysis: the fake-quant plan of one layer
 * under a mode, and the set of nodes that plan makes differ from the base
 * run (what an incremental run must re-execute and what it must be fed). */
#ifndef QL_SENS_PLAN_H
#define QL_SENS_PLAN_H

#include "qsim.h"
#include "sensitivity.h"

typedef struct sens_plans {
    ql_model *m;
    const ql_qnet *q;
    const ql_qconfig *c;
    const ql_qsim *full;  /* the whole config's plan: plans point into it */
    ql_prec *prec;        /* per layer, under c */
    int *bits;            /* per value: activation bits under c (ql_qnet_act_bits) */
    bool raise_int16;     /* all-but: int8 layers go to int16, not float */
    const ql_calib_stats *stats; /* all-but: for encodings of other bits (may be NULL) */
    const ql_plugins *ps;
    const ql_qconfig *enc_from;  /* all-but with stats: where encodings start from (c) */
} sens_plans;

/* The precision all-but sets layer l to. */
ql_prec sens_raised_prec(const sens_plans *p, int l);

/* Fills act/cst (n_values entries each) with layer l's plan under mode
 * single, weights or activations, every quantizer taken from the full
 * plan. A layer's own quantizers are its weight and bias and its output
 * quantizer; single keeps only l's, and quantizers no layer owns (graph
 * inputs, outputs of float layers) where the placement rules of qnet.h put
 * them for the config with only l quantized. Weights and activations keep
 * only l's weight and bias / only its output quantizer. */
ql_status sens_plan_build(const sens_plans *p, ql_sens_mode mode, int l, const ql_encoding **act,
                          const ql_tensor **cst, ql_error *err);

/* All-but: fills act/cst with the plan ql_qsim_build makes of the config
 * with layer l set to sens_raised_prec (its encodings brought in line from
 * p->enc_from's as ql_calib_update does, with p->stats; without statistics
 * a tensor whose bits change takes the config's range at the new bits,
 * from p->c). Entries equal to
 * the full plan's point into it; the others are owned by *own (NULL when
 * there are none; free with ql_qsim_free). */
ql_status sens_plan_raise(const sens_plans *p, int l, const ql_encoding **act,
                          const ql_tensor **cst, ql_qsim **own, ql_error *err);

/* Whether two plans quantize some value or constant differently. */
bool sens_plans_differ(const ql_graph *g, const ql_exec_quant *a, const ql_exec_quant *b);

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
