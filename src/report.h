/* Text reports of a session for the show commands, eval, sensitivity and
 * autoprec (fixed layouts, no timings: the same session prints the same
 * bytes), and the layer table as CSV. */
#ifndef QL_REPORT_H
#define QL_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "session.h"

/* stale: the config changed since the metrics were measured. g is the
 * model's graph (output names). */
void report_eval(FILE *f, const ql_graph *g, const ses_eval *e, bool stale);
void report_sensitivity(FILE *f, const ses_sens *t);
void report_curve(FILE *f, const ses_curve *c);
void report_autoprec(FILE *f, const ql_qnet *q, const ql_target *target,
                     const ql_autoprec_result *r, bool labels);
/* What autoprec did: every raise tried, pass by pass, with its measured and
 * predicted metric and outcome; the raises lowered again at the end; the
 * kept steps. ends: also the before and after lines (the command line's
 * layout; the session's report has its own). */
void report_autoprec_detail(FILE *f, const ql_qnet *q, const ql_target *target,
                            const ql_autoprec_result *r, bool ends);
/* CSV with columns layer,op,precision,act_algo,weight_algo,weight_bits,
 * per_channel,overrides,macs,act_bits,act_scale,act_lo,act_hi, written
 * atomically. */
ql_status report_layers_csv(const session *s, const char *path, ql_error *err);

#endif
